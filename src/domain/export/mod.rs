//! What an export is: its formats, options and record, and the columns of each format
//! ([`schema`]). Writing the rows is `crate::export`'s; storing the record is `db::exports`'.

pub mod schema;

use std::fmt;

use crate::domain::{ExportId, ProjectId, UserId};

/// Bumped whenever a field changes meaning or disappears.
pub const SCHEMA_VERSION: u32 = 1;

/// The export formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Comparisons,
    Preferences,
    Sft,
    Prompts,
}

impl std::str::FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "comparisons" => Ok(Self::Comparisons),
            "preferences" => Ok(Self::Preferences),
            "sft" => Ok(Self::Sft),
            "prompts" => Ok(Self::Prompts),
            _ => Err(format!("format must be comparisons, preferences, sft or prompts, not {s:?}")),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Comparisons => "comparisons",
            Self::Preferences => "preferences",
            Self::Sft => "sft",
            Self::Prompts => "prompts",
        })
    }
}

impl Format {
    /// The files one export of this format consists of.
    pub fn parts(self) -> &'static [&'static str] {
        match self {
            Self::Preferences => &["train", "test"],
            _ => &["all"],
        }
    }
}

/// Options of an export; stored with it so a download replays it exactly.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct Options {
    /// Add `margin` (the pairwise strength, or the rank difference) to preference rows.
    #[serde(default)]
    pub margin: bool,
    /// Keep ties in preference rows, marked by a `tie` column (TRL cannot use them; dropped by default).
    #[serde(default)]
    pub include_ties: bool,
    /// Keep pairs a labeller marked "both bad" in preference rows, marked by a `both_bad`
    /// column (dropped by default: neither response is one to prefer).
    #[serde(default)]
    pub include_both_bad: bool,
    /// Percentage of prompts that go to the test split of `preferences` (0 to 90; default 10,
    /// recorded as 10 when the export is taken).
    #[serde(default)]
    #[schema(maximum = 90)]
    pub test_percent: Option<u8>,
    /// The revision of the row writer that took the export (set when it is taken); a download
    /// replays with the same one, so an export taken before an upgrade keeps its bytes. 1:
    /// before provenance columns, tie/both_bad markers and best-ranked SFT targets; 2: now.
    #[serde(default = "first_revision")]
    pub revision: u32,
    /// Leave out the work of labellers who were paused when the export was taken (their ids
    /// are recorded in `excluded_labellers`, so a replay leaves out the same).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub exclude_paused: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excluded_labellers: Vec<UserId>,
    /// Keep only items whose agreement (Kendall's W of their labellers, 0 to 1) is at least this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_agreement: Option<f64>,
    /// One preference per item and response pair, from all of the item's judgements, instead
    /// of one per judgement (comparisons and preferences).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregate: Option<Aggregate>,
    /// Leave out judgements a reviewer rejected (default; `false` keeps them in a
    /// non-aggregated `comparisons` export, marked `review: "rejected"`).
    #[serde(default = "yes")]
    pub drop_rejected: bool,
}

fn yes() -> bool {
    true
}

impl Default for Options {
    fn default() -> Self {
        Self {
            margin: false,
            include_ties: false,
            include_both_bad: false,
            test_percent: None,
            revision: 0,
            exclude_paused: false,
            excluded_labellers: Vec::new(),
            min_agreement: None,
            aggregate: None,
            drop_rejected: true,
        }
    }
}

/// How an item's overlapping judgements become one preference per response pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Aggregate {
    /// The response more judgements put above the other; a tie when as many say each.
    Majority,
    /// The order of Bradley–Terry strengths fitted to the item's comparisons (ties as half wins).
    BradleyTerry,
}

impl<'de> serde::Deserialize<'de> for Aggregate {
    /// By name; anything else is an error naming the field (a flattened body loses the path).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match String::deserialize(d)?.as_str() {
            "majority" => Ok(Self::Majority),
            "bradley_terry" => Ok(Self::BradleyTerry),
            other => Err(serde::de::Error::custom(format!("aggregate: expected \"majority\" or \"bradley_terry\", got {other:?}"))),
        }
    }
}

/// The revision new exports are written with. 3: comparison rows carry the labeller's gold
/// score and the item's agreement; the quality options. 4: comparison rows (aggregated ones
/// too) carry their `review` state.
pub const REVISION: u32 = 4;
pub const DEFAULT_TEST_PERCENT: u8 = 10;
pub const MAX_TEST_PERCENT: u8 = 90;

fn first_revision() -> u32 {
    1
}

impl Options {
    /// The options an export of `format` is taken with: checked, with the effective defaults
    /// filled in (so the record and manifest say what was used). Errors name the field.
    pub fn checked(mut self, format: Format) -> Result<Self, String> {
        if let Some(t) = self.test_percent.filter(|t| *t > MAX_TEST_PERCENT) {
            return Err(format!("test_percent: expected 0 to {MAX_TEST_PERCENT} (the share of prompts held out for testing), got {t}"));
        }
        if format == Format::Preferences {
            self.test_percent.get_or_insert(DEFAULT_TEST_PERCENT);
        }
        if let Some(m) = self.min_agreement.filter(|m| !(0.0..=1.0).contains(m)) {
            return Err(format!("min_agreement: expected an agreement (Kendall's W) from 0 to 1, got {m}"));
        }
        if self.aggregate.is_some() && !matches!(format, Format::Comparisons | Format::Preferences) {
            return Err(format!("aggregate: only comparisons and preferences exports aggregate judgements, not {format}"));
        }
        if !self.drop_rejected && (format != Format::Comparisons || self.aggregate.is_some()) {
            return Err("drop_rejected: only a comparisons export without aggregate may keep rejected judgements (its rows say their review state)".into());
        }
        // Filled from the database when the export is taken, never from the caller.
        self.excluded_labellers.clear();
        self.revision = REVISION;
        Ok(self)
    }
}

/// One file of an export.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct PartSummary {
    pub part: String,
    pub rows: u64,
    pub sha256: String,
}

/// An export as stored; serialized with its `schema_version` and `features` (see [`schema`]).
#[derive(Debug, Clone)]
pub struct Export {
    pub id: ExportId,
    pub project_id: ProjectId,
    pub format: String,
    pub options: Options,
    pub snapshot: String,
    pub files: Vec<PartSummary>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

impl Export {
    pub fn format(&self) -> Format {
        self.format.parse().unwrap_or(Format::Comparisons)
    }
    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows).sum()
    }

    /// The `manifest.json` written beside the files: what the export is, its options, its
    /// files with their rows and sha256, and the columns' features.
    pub fn manifest(&self) -> serde_json::Value {
        serde_json::json!({"export_id": self.id, "format": self.format, "schema_version": SCHEMA_VERSION, "created_at": self.created_at,
            "options": self.options, "files": self.files, "features": schema::features(self.format(), &self.options)})
    }
}

/// How an [`Export`] is serialized, for the API's description (a test checks the two agree).
#[derive(utoipa::ToSchema)]
#[schema(as = Export)]
#[allow(dead_code)]
pub struct ExportDoc {
    #[schema(value_type = String, format = Uuid)]
    id: ExportId,
    #[schema(value_type = String, format = Uuid)]
    project_id: ProjectId,
    /// `comparisons`, `preferences`, `sft` or `prompts`.
    format: String,
    schema_version: u32,
    options: Options,
    /// When the snapshot was taken, as PostgreSQL's transaction snapshot.
    snapshot: String,
    files: Vec<PartSummary>,
    created_at: chrono::DateTime<chrono::Utc>,
    /// The columns of each file (Hugging Face `datasets` features).
    #[schema(value_type = Object)]
    features: serde_json::Value,
}

impl serde::Serialize for Export {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut m = s.serialize_struct("Export", 10)?;
        m.serialize_field("id", &self.id)?;
        m.serialize_field("project_id", &self.project_id)?;
        m.serialize_field("format", &self.format)?;
        m.serialize_field("schema_version", &SCHEMA_VERSION)?;
        m.serialize_field("options", &self.options)?;
        m.serialize_field("snapshot", &self.snapshot)?;
        m.serialize_field("files", &self.files)?;
        m.serialize_field("created_at", &self.created_at)?;
        m.serialize_field("features", &schema::features(self.format(), &self.options))?;
        m.end()
    }
}
