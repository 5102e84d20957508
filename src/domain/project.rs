//! The validated values a project, a token and a skip are made of. The API, the forms and the
//! CLI all parse through these, so each rule is written once; each error names its field.

use serde::Serialize;

/// Distinct labellers each item needs: 1 to 100.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct Overlap(i32);

impl Overlap {
    /// A new project's overlap when none is given.
    pub const DEFAULT: Self = Self(3);

    pub fn parse(n: i32) -> Result<Self, String> {
        if (1..=100).contains(&n) {
            Ok(Self(n))
        } else {
            Err(format!("overlap: expected 1 to 100, got {n}"))
        }
    }

    /// A form field: blank is `None`; anything else must be a whole number from 1 to 100.
    pub fn parse_field(text: Option<&str>) -> Result<Option<Self>, String> {
        match text.map(str::trim).filter(|t| !t.is_empty()) {
            None => Ok(None),
            Some(t) => Self::parse(t.parse().map_err(|_| format!("overlap: expected a whole number, got {t:?}"))?).map(Some),
        }
    }

    pub fn get(self) -> i32 {
        self.0
    }
}

impl std::fmt::Display for Overlap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// Trimmed text of `min..=max` bytes, or an error naming `field`.
fn bounded(text: &str, max: usize, field: &str) -> Result<String, String> {
    let t = text.trim();
    if t.is_empty() || t.len() > max {
        return Err(format!("{field}: 1-{max} characters"));
    }
    Ok(t.to_string())
}

/// Declares a `String` newtype shown and compared as its text.
macro_rules! text_type {
    ($($(#[$doc:meta])* $name:ident),*) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}

text_type!(
    /// A project's display name: 1 to 200 bytes, trimmed.
    ProjectName,
    /// A project's guidelines, in Markdown; any text.
    Guidelines,
    /// Why a labeller skips a task: 1 to 1000 bytes, trimmed.
    SkipReason,
    /// The label of an API token: 1 to 100 bytes, trimmed.
    TokenName
);

impl ProjectName {
    pub fn parse(s: &str) -> Result<Self, String> {
        bounded(s, 200, "name").map(Self)
    }
}

impl Guidelines {
    pub fn new(markdown: impl Into<String>) -> Self {
        Self(markdown.into())
    }
}

impl SkipReason {
    pub fn parse(s: &str) -> Result<Self, String> {
        bounded(s, 1000, "reason").map(Self).map_err(|_| "reason: say in 1-1000 characters why you skip this task".into())
    }
}

impl TokenName {
    pub fn parse(s: &str) -> Result<Self, String> {
        bounded(s, 100, "name").map(Self)
    }
}

/// The per-response flags a labeller may tick, in order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(transparent)]
pub struct Flags(Vec<String>);

impl Flags {
    /// A list as given (the API's `flags`).
    pub fn new(flags: Vec<String>) -> Self {
        Self(flags)
    }

    /// A form's text area: one flag a line, trimmed, blank lines left out.
    pub fn from_lines(text: &str) -> Self {
        Self(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
    }

    /// InstructGPT's flags, a new project's default.
    pub fn instructgpt() -> Self {
        Self(super::DEFAULT_FLAGS.iter().map(|s| s.to_string()).collect())
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }
}

/// What a new project is made of, every field checked.
#[derive(Debug, Clone)]
pub struct NewProject {
    pub slug: super::Slug,
    pub name: ProjectName,
    pub kind: super::TaskKind,
    pub overlap: Overlap,
    pub flags: Flags,
    pub allow_ties: bool,
    pub rating_enabled: bool,
    pub guidelines: Guidelines,
}

impl NewProject {
    /// The required fields; the rest take their defaults (overlap 3, InstructGPT's flags, ties
    /// allowed, no rating, no guidelines).
    pub fn parse(slug: &str, name: &str, kind: &str) -> Result<Self, String> {
        Ok(Self {
            slug: super::Slug::parse(slug.trim())?,
            kind: kind.parse()?,
            name: ProjectName::parse(name)?,
            overlap: Overlap::DEFAULT,
            flags: Flags::instructgpt(),
            allow_ties: true,
            rating_enabled: false,
            guidelines: Guidelines::new(""),
        })
    }
}

/// The settings a lead may change.
#[derive(Debug, Clone)]
pub struct ProjectSettings {
    pub name: ProjectName,
    pub guidelines: Guidelines,
    pub flags: Flags,
    pub overlap: Overlap,
    pub allow_ties: bool,
    pub rating_enabled: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_is_one_to_a_hundred_and_a_blank_field_is_none() {
        assert_eq!(Overlap::parse(1).unwrap().get(), 1);
        assert!(Overlap::parse(100).is_ok());
        assert_eq!(Overlap::parse(0).unwrap_err(), "overlap: expected 1 to 100, got 0");
        assert!(Overlap::parse(101).is_err());
        assert_eq!(Overlap::parse_field(Some("  ")).unwrap(), None);
        assert_eq!(Overlap::parse_field(None).unwrap(), None);
        assert_eq!(Overlap::parse_field(Some(" 5 ")).unwrap(), Some(Overlap::parse(5).unwrap()));
        assert_eq!(Overlap::parse_field(Some("three")).unwrap_err(), "overlap: expected a whole number, got \"three\"");
        assert!(Overlap::parse_field(Some("0")).unwrap_err().contains("1 to 100"));
    }

    #[test]
    fn names_and_reasons_are_trimmed_and_bounded_naming_the_field() {
        assert_eq!(ProjectName::parse("  HH pairs ").unwrap().as_str(), "HH pairs");
        assert_eq!(ProjectName::parse(" ").unwrap_err(), "name: 1-200 characters");
        assert!(ProjectName::parse(&"x".repeat(201)).is_err());
        assert!(ProjectName::parse(&"x".repeat(200)).is_ok());
        assert_eq!(TokenName::parse("ci ").unwrap().as_str(), "ci");
        assert_eq!(TokenName::parse(&"t".repeat(101)).unwrap_err(), "name: 1-100 characters");
        assert_eq!(SkipReason::parse(" unclear ").unwrap().as_str(), "unclear");
        assert!(SkipReason::parse("").unwrap_err().starts_with("reason:"));
        assert!(SkipReason::parse(&"r".repeat(1001)).is_err());
    }

    #[test]
    fn flags_from_a_text_area_skip_blank_lines() {
        assert_eq!(Flags::from_lines(" harmful \n\n  \nrude\n").as_slice(), ["harmful", "rude"]);
        assert_eq!(Flags::instructgpt().as_slice().len(), crate::domain::DEFAULT_FLAGS.len());
        assert_eq!(serde_json::to_value(Flags::new(vec!["a".into()])).unwrap(), serde_json::json!(["a"]));
    }

    #[test]
    fn a_new_project_names_the_first_bad_field_and_defaults_the_rest() {
        let p = NewProject::parse(" hh ", " HH ", "pairwise").unwrap();
        assert_eq!((p.slug.as_str(), p.name.as_str(), p.overlap.get()), ("hh", "HH", 3));
        assert!(p.allow_ties && !p.rating_enabled && !p.flags.as_slice().is_empty());
        assert!(NewProject::parse("Bad Slug", "x", "ranking").unwrap_err().starts_with("slug"));
        assert!(NewProject::parse("ok", "x", "essay").unwrap_err().starts_with("kind"));
        assert_eq!(NewProject::parse("ok", "", "ranking").unwrap_err(), "name: 1-200 characters");
    }
}
