//! Where in the model store a run may read: `shared/…` (curated by an admin) or
//! `runs/<id>/…` of a run of the same project.

/// A path inside the model store, or None when it could leave it.
pub fn store_relative(s: &str) -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(s);
    let ok = !s.is_empty() && path.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    ok.then(|| path.to_path_buf())
}

/// Where in the model store a path a run names lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreArea {
    /// `shared/…`: checkpoints an admin put there for every project.
    Shared,
    /// `runs/<id>/…`: what that run wrote; only its own project may start from it.
    Run(crate::domain::RunId),
}

/// The area of a store path: relative, no `..`, and under `shared/` or `runs/<id>/`.
pub fn store_area(s: &str) -> Option<StoreArea> {
    let path = store_relative(s)?;
    let mut parts = path.iter().map(|c| c.to_str());
    match (parts.next()?, parts.next()) {
        (Some("shared"), Some(Some(_))) => Some(StoreArea::Shared),
        (Some("runs"), Some(Some(id))) => id.parse().ok().map(StoreArea::Run),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_paths_lie_under_shared_or_a_run_s_directory() {
        let id = crate::domain::RunId::new();
        assert_eq!(store_area("shared/gpt2"), Some(StoreArea::Shared));
        assert_eq!(store_area(&format!("runs/{id}/attempt-1/model")), Some(StoreArea::Run(id)));
        for bad in ["shared", "runs", "runs/x/attempt-1/model", "gpt2", "/etc", "../x", "shared/../runs", &format!("runs/{id}/../../x"), &format!("/runs/{id}")]
        {
            assert_eq!(store_area(bad), None, "{bad}");
        }
    }
}
