//! The rows of each export format, built from one judgement (or item) at a time.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{Format, Options};
use crate::domain::import::{prompt_text, Turn};
use crate::domain::ranking::pairs;
use crate::domain::{ItemId, JudgementId, ResponseId};

/// Bumped whenever a field changes meaning or disappears.
pub const SCHEMA_VERSION: u32 = 1;

pub const JUDGEMENTS_SQL: &str = "
    SELECT j.id, j.item_id, i.external_id, i.prompt, i.prompt_raw, j.source, COALESCE(u.pseudonym, 'import') AS labeller,
           j.ranks, j.display_order, j.strength, j.both_bad, j.demonstration, j.flags, j.rating, j.comment,
           j.time_on_task_ms, j.created_at, rs.ids, rs.models, rs.texts
    FROM judgements j
    JOIN items i ON i.id = j.item_id
    LEFT JOIN users u ON u.id = j.user_id
    CROSS JOIN LATERAL (SELECT COALESCE(array_agg(r.id ORDER BY r.position), '{}') AS ids,
                               COALESCE(array_agg(r.model ORDER BY r.position), '{}') AS models,
                               COALESCE(array_agg(r.text ORDER BY r.position), '{}') AS texts
                        FROM responses r WHERE r.item_id = j.item_id) rs
    WHERE j.project_id = $1 AND pg_visible_in_snapshot(j.txid, $2::pg_snapshot)
    ORDER BY j.seq";

pub const PROMPTS_SQL: &str = "
    SELECT i.id, i.external_id, i.prompt, i.prompt_raw FROM items i
    WHERE i.project_id = $1 AND pg_visible_in_snapshot(i.txid, $2::pg_snapshot) ORDER BY i.seq";

#[derive(sqlx::FromRow)]
pub struct PromptRow {
    id: ItemId,
    external_id: String,
    prompt: Value,
    prompt_raw: Option<String>,
}

impl PromptRow {
    pub fn to_json(&self) -> Value {
        let prompt = prompt_string(&self.prompt, &self.prompt_raw);
        json!({"schema_version": SCHEMA_VERSION, "item_id": self.id, "id": self.external_id, "prompt": prompt, "messages": self.prompt})
    }
}

#[derive(sqlx::FromRow)]
pub struct JudgementRow {
    id: JudgementId,
    item_id: ItemId,
    external_id: String,
    prompt: Value,
    prompt_raw: Option<String>,
    source: String,
    labeller: String,
    ranks: Option<Vec<i16>>,
    display_order: Option<Vec<i32>>,
    strength: Option<i16>,
    both_bad: bool,
    demonstration: Option<String>,
    flags: Value,
    rating: Option<i16>,
    comment: String,
    time_on_task_ms: Option<i64>,
    created_at: DateTime<Utc>,
    ids: Vec<ResponseId>,
    models: Vec<String>,
    texts: Vec<String>,
}

/// The prompt as one string: verbatim when it was imported as a string, else rendered from its turns.
fn prompt_string(prompt: &Value, raw: &Option<String>) -> String {
    raw.clone().unwrap_or_else(|| prompt_text(&serde_json::from_value::<Vec<Turn>>(prompt.clone()).unwrap_or_default()))
}

/// Whether a prompt belongs to the test split: a stable hash of its text, so no prompt is in both.
pub fn in_test_split(prompt: &str, percent: u8) -> bool {
    let h = Sha256::digest(prompt.as_bytes());
    (u16::from_be_bytes([h[0], h[1]]) % 100) < u16::from(percent)
}

impl JudgementRow {
    /// The lines this judgement contributes to `part` of `format`.
    pub fn lines(&self, format: Format, options: &Options, part: &str) -> Vec<Value> {
        let prompt = prompt_string(&self.prompt, &self.prompt_raw);
        match format {
            Format::Comparisons => self.comparisons(&prompt),
            Format::Preferences => {
                let test = in_test_split(&prompt, options.test_percent.unwrap_or(10));
                if test != (part == "test") {
                    return Vec::new();
                }
                self.preferences(&prompt, options)
            }
            Format::Sft => self.demonstration.iter().map(|d| json!({"prompt": prompt, "completion": d})).collect(),
            Format::Prompts => Vec::new(),
        }
    }

    fn flags_of(&self, pos: usize) -> Value {
        self.flags.get(pos.to_string()).cloned().unwrap_or_else(|| json!([]))
    }

    fn comparisons(&self, prompt: &str) -> Vec<Value> {
        let Some(ranks) = &self.ranks else { return Vec::new() };
        let k = ranks.len();
        let weight = 2.0 / (k * (k - 1)).max(1) as f64;
        pairs(ranks)
            .into_iter()
            .map(|(w, l, tie)| {
                json!({
                    "schema_version": SCHEMA_VERSION,
                    "judgement_id": self.id, "item_id": self.item_id, "external_id": self.external_id,
                    "prompt": prompt, "messages": self.prompt,
                    "chosen": self.texts[w], "chosen_model": self.models[w], "chosen_response_id": self.ids[w], "chosen_rank": ranks[w], "chosen_flags": self.flags_of(w),
                    "rejected": self.texts[l], "rejected_model": self.models[l], "rejected_response_id": self.ids[l], "rejected_rank": ranks[l], "rejected_flags": self.flags_of(l),
                    "k": k, "tie": tie, "strength": self.strength, "both_bad": self.both_bad, "weight": weight,
                    "labeller": self.labeller, "source": self.source, "time_on_task_ms": self.time_on_task_ms,
                    "display_order": self.display_order, "rating": self.rating, "comment": self.comment,
                    "created_at": self.created_at,
                })
            })
            .collect()
    }

    fn preferences(&self, prompt: &str, options: &Options) -> Vec<Value> {
        let Some(ranks) = &self.ranks else { return Vec::new() };
        pairs(ranks)
            .into_iter()
            .filter(|(_, _, tie)| !tie || options.include_ties)
            .map(|(w, l, _)| {
                let mut row = json!({"prompt": prompt, "chosen": self.texts[w], "rejected": self.texts[l]});
                if options.margin {
                    let m = self.strength.map(f64::from).unwrap_or(f64::from(ranks[l] - ranks[w]));
                    row["margin"] = json!(m);
                }
                row
            })
            .collect()
    }
}
