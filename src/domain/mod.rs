//! Types and rules of the labelling domain; no I/O. Everything from outside becomes one of
//! these through a `parse` that returns a `Result` naming what was wrong.

pub mod agreement;
pub mod dashboard;
pub mod export;
pub mod import;
pub mod item_filter;
pub mod leaderboard;
pub mod login;
pub mod markdown;
pub mod overoptimisation;
pub mod project;
pub mod provenance;
pub mod quality;
pub mod queue;
pub mod ranking;
pub mod regression;
pub mod review;
pub mod runs;
pub mod simulate;
pub mod text;
pub mod webhooks;

pub use project::{Flags, Guidelines, NewProject, Overlap, ProjectName, ProjectSettings, SkipReason, TokenName};

use serde::{Deserialize, Serialize};

/// Declares a `Uuid` newtype bindable by sqlx.
macro_rules! id_type {
    ($($name:ident),*) => {$(
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
        #[sqlx(transparent)]
        #[serde(transparent)]
        pub struct $name(pub uuid::Uuid);

        impl $name {
            /// A time-ordered (v7) id: rows created together land in the same index pages.
            pub fn new() -> Self {
                Self(uuid::Uuid::now_v7())
            }
        }

        impl Default for $name {
            /// A new id, as [`Self::new`].
            fn default() -> Self {
                Self::new()
            }
        }

        impl From<uuid::Uuid> for $name {
            /// For the compile-time checked queries, which read a `uuid` column as `Uuid`.
            fn from(id: uuid::Uuid) -> Self {
                Self(id)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl std::str::FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                uuid::Uuid::parse_str(s).map(Self)
            }
        }
    )*};
}

id_type!(UserId, ProjectId, ItemId, ResponseId, TaskId, JudgementId, ExportId, TokenId, RunId, ScheduleId, WebhookId, DeliveryId, RegressionSetId);

/// The kind of work a project asks of its labellers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "task_kind", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum TaskKind {
    Ranking,
    Pairwise,
    Demonstration,
}

impl std::str::FromStr for TaskKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "ranking" => Ok(Self::Ranking),
            "pairwise" => Ok(Self::Pairwise),
            "demonstration" => Ok(Self::Demonstration),
            _ => Err(format!("kind must be ranking, pairwise or demonstration, not {s:?}")),
        }
    }
}

impl TaskKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ranking => "ranking",
            Self::Pairwise => "pairwise",
            Self::Demonstration => "demonstration",
        }
    }
}

/// A member's role in one project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[sqlx(type_name = "member_role", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Lead,
    Labeller,
    /// Reviews judgements and adjudicates items (leads may too); labels like a labeller.
    Reviewer,
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "lead" => Ok(Self::Lead),
            "labeller" => Ok(Self::Labeller),
            "reviewer" => Ok(Self::Reviewer),
            _ => Err(format!("role must be lead, reviewer or labeller, not {s:?}")),
        }
    }
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lead => "lead",
            Self::Labeller => "labeller",
            Self::Reviewer => "reviewer",
        }
    }
}

/// A project slug: 2–64 of `a-z0-9-`, starting with a letter or digit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::Type)]
#[sqlx(transparent)]
#[serde(transparent)]
pub struct Slug(String);

impl Slug {
    pub fn parse(s: &str) -> Result<Self, String> {
        let ok_chars = s.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        if (2..=64).contains(&s.len()) && ok_chars && !s.starts_with('-') {
            Ok(Self(s.to_string()))
        } else {
            Err(format!("slug must be 2-64 characters of a-z, 0-9 and '-', not starting with '-' (got {s:?})"))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Slug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A lower-cased email address with one `@` and something on each side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    pub fn parse(s: &str) -> Result<Self, String> {
        let e = s.trim().to_lowercase();
        match e.split_once('@') {
            Some((a, b)) if !a.is_empty() && b.contains('.') && !b.contains('@') && e.len() <= 254 => Ok(Self(e)),
            _ => Err(format!("{s:?} is not an email address")),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// InstructGPT's per-response flags, the default for a new project.
pub const DEFAULT_FLAGS: &[&str] = &[
    "fails to follow the instruction",
    "hallucination",
    "harmful",
    "sexual content",
    "violent content",
    "encourages violence or abuse",
    "denigrates a protected class",
    "gives harmful advice",
    "expresses moral judgement",
    "inappropriate for a customer assistant",
];

/// A password acceptable for an account: 10 to 1024 characters, not on the common-password list.
pub fn check_password(p: &str) -> Result<(), String> {
    if p.chars().count() < 10 {
        return Err("password must be at least 10 characters".into());
    }
    if p.len() > 1024 {
        return Err("password must be at most 1024 bytes".into());
    }
    if login::is_common(p) {
        return Err("password is one of the most common passwords; choose another".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_emails_are_checked() {
        assert!(Slug::parse("hh-pairs").is_ok());
        assert!(Slug::parse("Bad Slug").is_err());
        assert!(Slug::parse("-x").is_err());
        assert_eq!(Email::parse(" Ann@Example.org ").unwrap().as_str(), "ann@example.org");
        assert!(Email::parse("no-at-sign").is_err());
        assert!(check_password("short").is_err());
        assert!(check_password("Charlie123").is_err_and(|e| e.contains("common")), "on the list, in another case");
        assert!(check_password("correct horse battery").is_ok());
    }
}
