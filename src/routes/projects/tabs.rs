//! The lead's project in tabs, each its own URL. The list of tabs lives in [`TABS`], once; every
//! lead page carries a [`TabBar`] and includes `projects/tabs.html`.

/// The tabs in order: id (the link's `#tab-<id>`), label, and path after `/projects/{slug}`.
pub const TABS: &[(&str, &str, &str)] = &[
    ("overview", "Overview", ""),
    ("labellers", "Labellers", "/labellers"),
    ("models", "Models and leaderboard", "/models"),
    ("quality", "Label quality", "/quality"),
    ("items", "Items", "/items"),
    ("exports", "Exports", "/exports"),
    ("runs", "Runs", "/runs"),
    ("webhooks", "Webhooks", "/webhooks"),
    ("settings", "Settings", "/settings"),
];

/// The heading and tab bar of a lead's project page, with the tab shown.
pub struct TabBar {
    pub slug: String,
    pub name: String,
    /// One line under the name: kind and overlap.
    pub summary: String,
    pub active: &'static str,
}

/// One link of the bar.
pub struct TabLink {
    pub id: &'static str,
    pub label: &'static str,
    pub href: String,
    pub active: bool,
}

impl TabBar {
    pub fn new(p: &crate::db::projects::Project, active: &'static str) -> Self {
        debug_assert!(TABS.iter().any(|t| t.0 == active), "{active} is a tab");
        let summary = format!("{} · overlap {}", p.kind.as_str(), p.overlap);
        Self { slug: p.slug.as_str().to_string(), name: p.name.clone(), summary, active }
    }

    pub fn links(&self) -> Vec<TabLink> {
        TABS.iter().map(|&(id, label, path)| TabLink { id, label, href: format!("/projects/{}{path}", self.slug), active: id == self.active }).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tab_has_its_own_url() {
        let mut paths: Vec<&str> = TABS.iter().map(|t| t.2).collect();
        paths.sort();
        paths.dedup();
        assert_eq!(paths.len(), TABS.len());
    }
}
