//! The rows of each export format, built from one judgement (or item) at a time.

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{Aggregate, Format, Options, SCHEMA_VERSION};
use crate::db::exports::{JudgementRow, PromptRow};
use crate::domain::import::{prompt_text, Turn};
use crate::domain::provenance::Provenance;
use crate::domain::ranking::pairs;
use crate::domain::{ItemId, UserId};

impl PromptRow {
    pub fn write(&self, out: &mut Vec<u8>) -> u64 {
        let prompt = prompt_string(&self.prompt, &self.prompt_raw);
        js(out, &json!({"schema_version": SCHEMA_VERSION, "item_id": self.id, "id": self.external_id, "prompt": prompt, "messages": self.prompt}));
        out.push(b'\n');
        1
    }
}

/// The prompt as one string: verbatim when it was imported as a string, else rendered from its turns.
pub fn prompt_string(prompt: &Value, raw: &Option<String>) -> String {
    raw.clone().unwrap_or_else(|| prompt_text(&serde_json::from_value::<Vec<Turn>>(prompt.clone()).unwrap_or_default()))
}

/// The review state of an aggregated row: `adjudicated` for an item a reviewer settled,
/// `accepted` when every judgement behind it was accepted, `rejected` when any was rejected
/// (never, as aggregated exports drop rejected work), else `unreviewed`.
fn group_review(group: &[JudgementRow]) -> &'static str {
    if group.iter().any(|j| j.review == "adjudicated") {
        "adjudicated"
    } else if group.iter().any(|j| j.review == "rejected") {
        "rejected"
    } else if group.iter().all(|j| j.review == "accepted") {
        "accepted"
    } else {
        "unreviewed"
    }
}

/// Whether a prompt belongs to the test split: a stable hash of its text, so no prompt is in both.
pub fn in_test_split(prompt: &str, percent: u8) -> bool {
    let h = Sha256::digest(prompt.as_bytes());
    (u16::from_be_bytes([h[0], h[1]]) % 100) < u16::from(percent)
}

/// Appends `value` as JSON (strings escaped).
fn js<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    serde_json::to_writer(&mut *out, value).expect("JSON of plain values cannot fail");
}

/// Appends `,"key":` then the JSON fragment `raw`.
fn field(out: &mut Vec<u8>, key: &str, raw: &[u8]) {
    out.extend_from_slice(b",\"");
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
    out.extend_from_slice(raw);
}

fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut v = Vec::new();
    js(&mut v, value);
    v
}

/// A string as JSON, in a buffer sized for it up front (long texts otherwise grow it many times).
fn str_json(s: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(s.len() + s.len() / 16 + 8);
    js(&mut v, s);
    v
}

/// The keys of one side of a comparison row.
struct SideKeys {
    text: &'static str,
    model: &'static str,
    response_id: &'static str,
    rank: &'static str,
    flags: &'static str,
    provenance: &'static str,
}

const CHOSEN: SideKeys = SideKeys {
    text: "chosen",
    model: "chosen_model",
    response_id: "chosen_response_id",
    rank: "chosen_rank",
    flags: "chosen_flags",
    provenance: "chosen_provenance",
};
const REJECTED: SideKeys = SideKeys {
    text: "rejected",
    model: "rejected_model",
    response_id: "rejected_response_id",
    rank: "rejected_rank",
    flags: "rejected_flags",
    provenance: "rejected_provenance",
};

impl JudgementRow {
    pub fn item_id(&self) -> ItemId {
        self.item_id
    }

    /// Whether the row is a reviewer's adjudication of its item.
    pub fn is_adjudication(&self) -> bool {
        self.review == "adjudicated"
    }

    /// Gives this row the responses `other` (a row of the same item) carries.
    pub fn take_responses(&mut self, other: JudgementRow) {
        (self.ids, self.models, self.texts, self.metas) = (other.ids, other.models, other.texts, other.metas);
    }

    /// The labeller (none for an imported choice).
    pub fn user_id(&self) -> Option<UserId> {
        self.user_id
    }

    /// Appends the lines this judgement contributes to `part` of `format`; returns how many.
    /// Each text is escaped once per judgement, however many pairs it appears in. `quality` is
    /// (the labeller's gold score, the item's agreement), written from revision 3 on.
    pub fn write(&self, format: Format, options: &Options, part: &str, quality: (Option<f64>, Option<f64>), out: &mut Vec<u8>) -> u64 {
        let prompt = prompt_string(&self.prompt, &self.prompt_raw);
        match format {
            Format::Comparisons => self.comparisons(&prompt, options, quality, out),
            Format::Preferences => {
                let test = in_test_split(&prompt, options.test_percent.unwrap_or(crate::domain::export::DEFAULT_TEST_PERCENT));
                if test != (part == "test") {
                    return 0;
                }
                self.preferences(&prompt, options, out)
            }
            Format::Sft => match self.sft_target(options) {
                Some(completion) => {
                    out.extend_from_slice(b"{\"prompt\":");
                    js(out, &prompt);
                    field(out, "completion", &to_json(completion));
                    out.extend_from_slice(b"}\n");
                    1
                }
                None => 0,
            },
            Format::Prompts => 0,
        }
    }

    /// The SFT target of this judgement: the demonstration a labeller wrote, else (from
    /// revision 2 on) the response ranked first alone, unless the labeller marked both bad.
    fn sft_target(&self, options: &Options) -> Option<&str> {
        if let Some(d) = &self.demonstration {
            return Some(d);
        }
        let ranks = self.ranks.as_ref().filter(|_| options.revision >= 2 && !self.both_bad)?;
        let best = *ranks.iter().min()?;
        let mut firsts = ranks.iter().enumerate().filter(|(_, r)| **r == best);
        match (firsts.next(), firsts.next()) {
            (Some((p, _)), None) => self.texts.get(p).map(String::as_str),
            _ => None,
        }
    }

    fn comparisons(&self, prompt: &str, options: &Options, quality: (Option<f64>, Option<f64>), out: &mut Vec<u8>) -> u64 {
        let Some(ranks) = &self.ranks else { return 0 };
        let k = ranks.len();
        // Every value a pair repeats is written as JSON once per judgement; pairs only copy.
        let texts: Vec<Vec<u8>> = self.texts.iter().map(|t| str_json(t)).collect();
        let models: Vec<Vec<u8>> = self.models.iter().map(|m| str_json(m)).collect();
        let flags: Vec<Vec<u8>> = (0..k).map(|p| self.flags.get(p.to_string()).map_or_else(|| b"[]".to_vec(), to_json)).collect();
        let ids: Vec<String> = self.ids.iter().map(|id| format!("\"{id}\"")).collect();
        let rank_text: Vec<String> = ranks.iter().map(|r| r.to_string()).collect();
        let provenance: Vec<Vec<u8>> = (0..k).map(|p| to_json(&self.metas.get(p).and_then(Provenance::from_metadata))).collect();
        let mut head = Vec::with_capacity(prompt.len() * 2 + 256);
        head.extend_from_slice(format!("{{\"schema_version\":{SCHEMA_VERSION},\"judgement_id\":\"{}\",\"item_id\":\"{}\"", self.id, self.item_id).as_bytes());
        field(&mut head, "external_id", &to_json(&self.external_id));
        field(&mut head, "prompt", &str_json(prompt));
        field(&mut head, "messages", &to_json(&self.prompt));
        let mut tail = Vec::with_capacity(256);
        field(&mut tail, "k", k.to_string().as_bytes());
        field(&mut tail, "strength", &to_json(&self.strength));
        field(&mut tail, "both_bad", &to_json(&self.both_bad));
        field(&mut tail, "weight", &to_json(&(2.0 / (k * (k - 1)).max(1) as f64)));
        field(&mut tail, "labeller", &to_json(&self.labeller));
        field(&mut tail, "source", &to_json(&self.source));
        field(&mut tail, "time_on_task_ms", &to_json(&self.time_on_task_ms));
        field(&mut tail, "display_order", &to_json(&self.display_order));
        field(&mut tail, "rating", &to_json(&self.rating));
        field(&mut tail, "comment", &to_json(&self.comment));
        field(&mut tail, "created_at", &to_json(&self.created_at));
        if options.revision >= 3 {
            field(&mut tail, "labeller_gold_score", &to_json(&quality.0));
            field(&mut tail, "item_agreement", &to_json(&quality.1));
        }
        if options.revision >= 4 {
            field(&mut tail, "review", &to_json(&self.review));
        }
        tail.extend_from_slice(b"}\n");
        let pairs = pairs(ranks);
        for &(w, l, tie) in &pairs {
            out.extend_from_slice(&head);
            for (keys, p) in [(&CHOSEN, w), (&REJECTED, l)] {
                field(out, keys.text, &texts[p]);
                field(out, keys.model, &models[p]);
                field(out, keys.response_id, ids[p].as_bytes());
                field(out, keys.rank, rank_text[p].as_bytes());
                field(out, keys.flags, &flags[p]);
                if options.revision >= 2 {
                    field(out, keys.provenance, &provenance[p]);
                }
            }
            field(out, "tie", if tie { b"true" } else { b"false" });
            out.extend_from_slice(&tail);
        }
        pairs.len() as u64
    }

    fn preferences(&self, prompt: &str, options: &Options, out: &mut Vec<u8>) -> u64 {
        let Some(ranks) = &self.ranks else { return 0 };
        let prompt = str_json(prompt);
        let texts: Vec<Vec<u8>> = self.texts.iter().map(|t| str_json(t)).collect();
        let mut n = 0;
        let v2 = options.revision >= 2;
        if v2 && self.both_bad && !options.include_both_bad {
            return 0;
        }
        for (w, l, tie) in pairs(ranks) {
            if tie && !options.include_ties {
                continue;
            }
            out.extend_from_slice(b"{\"prompt\":");
            out.extend_from_slice(&prompt);
            field(out, "chosen", &texts[w]);
            field(out, "rejected", &texts[l]);
            if options.margin {
                let m = self.strength.map(f64::from).unwrap_or(f64::from(ranks[l] - ranks[w]));
                field(out, "margin", &to_json(&m));
            }
            if v2 && options.include_ties {
                field(out, "tie", if tie { b"true" } else { b"false" });
            }
            if v2 && options.include_both_bad {
                field(out, "both_bad", if self.both_bad { b"true" } else { b"false" });
            }
            out.extend_from_slice(b"}\n");
            n += 1;
        }
        n
    }
}

/// The wins of each response over each other across an item's judgements (ties half each
/// way), how many judgements, and how many marked both bad. Judgements of another length
/// than the first are left out.
fn tally(group: &[JudgementRow]) -> (Vec<Vec<f64>>, u64, u64) {
    let k = group.iter().find_map(|j| j.ranks.as_ref()).map_or(0, Vec::len);
    let mut wins = vec![vec![0.0; k]; k];
    let (mut votes, mut both_bad) = (0, 0);
    for ranks in group.iter().filter_map(|j| j.ranks.as_ref().filter(|r| r.len() == k).map(|r| (r, j.both_bad))) {
        votes += 1;
        both_bad += u64::from(ranks.1);
        for (w, l, tie) in pairs(ranks.0) {
            if tie {
                wins[w][l] += 0.5;
                wins[l][w] += 0.5;
            } else {
                wins[w][l] += 1.0;
            }
        }
    }
    (wins, votes, both_bad)
}

/// The item's aggregated pairs: (preferred position, other, tie).
fn aggregate_pairs(wins: &[Vec<f64>], method: Aggregate) -> Vec<(usize, usize, bool)> {
    let k = wins.len();
    let strengths = match method {
        Aggregate::Majority => None,
        // A small symmetric prior (as the leaderboard's) keeps an unbeaten response finite.
        Aggregate::BradleyTerry => Some(crate::domain::leaderboard::fit(k, &wins.iter().map(|r| r.iter().map(|w| w + 0.1).collect()).collect::<Vec<_>>())),
    };
    let mut out = Vec::new();
    for a in 0..k {
        for b in a + 1..k {
            let d = match &strengths {
                None => wins[a][b] - wins[b][a],
                Some(s) => s[a] - s[b],
            };
            out.push(if d.abs() < 1e-9 {
                (a, b, true)
            } else if d > 0.0 {
                (a, b, false)
            } else {
                (b, a, false)
            });
        }
    }
    out
}

/// Appends one row per response pair of an item, from all of its (kept) judgements; ties and
/// "both bad" (most of the judgements said so) stay marked. Returns how many rows.
pub fn write_aggregate(
    group: &[JudgementRow],
    method: Aggregate,
    format: Format,
    options: &Options,
    part: &str,
    agreement: Option<f64>,
    out: &mut Vec<u8>,
) -> u64 {
    let Some(first) = group.first() else { return 0 };
    let (wins, votes, both_bad) = tally(group);
    if votes == 0 {
        return 0;
    }
    let both_bad = both_bad * 2 > votes;
    let prompt = prompt_string(&first.prompt, &first.prompt_raw);
    if format == Format::Preferences && in_test_split(&prompt, options.test_percent.unwrap_or(super::DEFAULT_TEST_PERCENT)) != (part == "test") {
        return 0;
    }
    let method_name = match method {
        Aggregate::Majority => "majority",
        Aggregate::BradleyTerry => "bradley_terry",
    };
    // Written key by key in the order serde_json's maps keep (sorted), every repeated value
    // escaped once per item: the bytes of `json!({...})` rows, without building them.
    let texts: Vec<Vec<u8>> = first.texts.iter().map(|t| str_json(t)).collect();
    let prompt_json = str_json(&prompt);
    let (mut head, mut models, mut ids) = (Vec::new(), Vec::new(), Vec::new());
    let mut tail = Vec::new();
    if format != Format::Preferences {
        models = first.models.iter().map(|m| str_json(m)).collect();
        ids = first.ids.iter().map(to_json).collect();
        head = format!("{{\"both_bad\":{both_bad}").into_bytes();
        field(&mut tail, "external_id", &to_json(&first.external_id));
        field(&mut tail, "item_agreement", &to_json(&agreement));
        field(&mut tail, "item_id", &to_json(&first.item_id));
        field(&mut tail, "messages", &to_json(&first.prompt));
        field(&mut tail, "method", &to_json(method_name));
        field(&mut tail, "prompt", &prompt_json);
    }
    let review = (format == Format::Comparisons && options.revision >= 4).then(|| to_json(group_review(group)));
    let mut n = 0;
    for (w, l, tie) in aggregate_pairs(&wins, method) {
        match format {
            Format::Preferences => {
                if (tie && !options.include_ties) || (both_bad && !options.include_both_bad) {
                    continue;
                }
                out.push(b'{');
                if options.include_both_bad {
                    out.extend_from_slice(format!("\"both_bad\":{both_bad},").as_bytes());
                }
                out.extend_from_slice(b"\"chosen\":");
                out.extend_from_slice(&texts[w]);
                if options.margin {
                    field(out, "margin", &to_json(&((wins[w][l] - wins[l][w]) / votes as f64)));
                }
                field(out, "prompt", &prompt_json);
                field(out, "rejected", &texts[l]);
                if options.include_ties {
                    field(out, "tie", if tie { b"true" } else { b"false" });
                }
                out.push(b'}');
            }
            _ => {
                out.extend_from_slice(&head);
                for (p, text, model, id, votes_key, votes_of) in [
                    (w, "chosen", "chosen_model", "chosen_response_id", "chosen_votes", wins[w][l]),
                    (l, "rejected", "rejected_model", "rejected_response_id", "rejected_votes", wins[l][w]),
                ] {
                    if p == l {
                        out.extend_from_slice(&tail);
                    }
                    field(out, text, &texts[p]);
                    field(out, model, &models[p]);
                    field(out, id, &ids[p]);
                    field(out, votes_key, &to_json(&votes_of));
                }
                if let Some(review) = &review {
                    field(out, "review", review);
                }
                field(out, "schema_version", SCHEMA_VERSION.to_string().as_bytes());
                field(out, "tie", if tie { b"true" } else { b"false" });
                field(out, "votes", votes.to_string().as_bytes());
                out.push(b'}');
            }
        }
        out.push(b'\n');
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{JudgementId, ResponseId};

    /// `write_aggregate` as it was written with `json!` values (the bytes every recorded
    /// aggregated export was hashed with).
    fn reference(group: &[JudgementRow], method: Aggregate, format: Format, options: &Options, part: &str, agreement: Option<f64>, out: &mut Vec<u8>) -> u64 {
        let Some(first) = group.first() else { return 0 };
        let (wins, votes, both_bad) = tally(group);
        if votes == 0 {
            return 0;
        }
        let both_bad = both_bad * 2 > votes;
        let prompt = prompt_string(&first.prompt, &first.prompt_raw);
        if format == Format::Preferences && in_test_split(&prompt, options.test_percent.unwrap_or(crate::export::DEFAULT_TEST_PERCENT)) != (part == "test") {
            return 0;
        }
        let method_name = match method {
            Aggregate::Majority => "majority",
            Aggregate::BradleyTerry => "bradley_terry",
        };
        let mut n = 0;
        for (w, l, tie) in aggregate_pairs(&wins, method) {
            let row = match format {
                Format::Preferences => {
                    if (tie && !options.include_ties) || (both_bad && !options.include_both_bad) {
                        continue;
                    }
                    let mut row = json!({"prompt": prompt, "chosen": first.texts[w], "rejected": first.texts[l]});
                    if options.margin {
                        row["margin"] = json!((wins[w][l] - wins[l][w]) / votes as f64);
                    }
                    if options.include_ties {
                        row["tie"] = json!(tie);
                    }
                    if options.include_both_bad {
                        row["both_bad"] = json!(both_bad);
                    }
                    row
                }
                _ => json!({
                    "schema_version": SCHEMA_VERSION, "item_id": first.item_id, "external_id": first.external_id, "prompt": prompt, "messages": first.prompt,
                    "chosen": first.texts[w], "chosen_model": first.models[w], "chosen_response_id": first.ids[w],
                    "rejected": first.texts[l], "rejected_model": first.models[l], "rejected_response_id": first.ids[l],
                    "tie": tie, "both_bad": both_bad, "votes": votes, "chosen_votes": wins[w][l], "rejected_votes": wins[l][w],
                    "item_agreement": agreement, "method": method_name,
                }),
            };
            let mut row = row;
            if format == Format::Comparisons && options.revision >= 4 {
                row["review"] = json!(group_review(group));
            }
            js(out, &row);
            out.push(b'\n');
            n += 1;
        }
        n
    }

    fn row(item: ItemId, ranks: &[i16], both_bad: bool, review: &str) -> JudgementRow {
        let k = ranks.len();
        JudgementRow {
            id: JudgementId::new(),
            item_id: item,
            user_id: None,
            external_id: "ext \"1\" ü".into(),
            prompt: serde_json::json!([{"role": "user", "content": "Say \"hi\"\n\tnow ✓"}]),
            prompt_raw: None,
            source: "labeller".into(),
            labeller: "p1".into(),
            ranks: Some(ranks.to_vec()),
            display_order: None,
            strength: None,
            both_bad,
            demonstration: None,
            flags: serde_json::json!({}),
            rating: None,
            comment: String::new(),
            time_on_task_ms: None,
            created_at: chrono::Utc::now(),
            review: review.into(),
            first: true,
            ids: (0..k).map(|_| ResponseId::new()).collect(),
            models: (0..k).map(|p| format!("model \"{p}\"")).collect(),
            texts: (0..k).map(|p| format!("answer {p}: \u{1F600} \"quoted\" \\ back\nslash\u{7}")).collect(),
            metas: serde_json::json!([]),
        }
    }

    #[test]
    fn aggregated_rows_are_the_bytes_json_values_gave() {
        let item = ItemId::new();
        let mut groups = vec![
            vec![row(item, &[1, 2, 3, 4], false, "accepted"), row(item, &[2, 1, 3, 3], false, "unreviewed"), row(item, &[1, 2, 4, 3], true, "accepted")],
            vec![row(item, &[1, 1], true, "adjudicated"), row(item, &[1, 1], true, "accepted")],
            vec![row(item, &[2, 1, 3], false, "accepted")],
        ];
        // One item's rows share its responses.
        for g in &mut groups {
            let (ids, texts, models) = (g[0].ids.clone(), g[0].texts.clone(), g[0].models.clone());
            for r in g.iter_mut() {
                (r.ids, r.texts, r.models) = (ids.clone(), texts.clone(), models.clone());
            }
        }
        let mut cases = 0;
        for group in &groups {
            for method in [Aggregate::Majority, Aggregate::BradleyTerry] {
                for format in [Format::Comparisons, Format::Preferences] {
                    for (margin, ties, both_bad, revision) in [(false, false, false, 4), (true, true, true, 4), (true, false, true, 3), (false, true, false, 2)]
                    {
                        let options = Options { margin, include_ties: ties, include_both_bad: both_bad, revision, test_percent: Some(0), ..Options::default() };
                        for agreement in [None, Some(0.25), Some(1.0 / 3.0)] {
                            let (mut new, mut old) = (Vec::new(), Vec::new());
                            let n = write_aggregate(group, method, format, &options, "train", agreement, &mut new);
                            assert_eq!(n, reference(group, method, format, &options, "train", agreement, &mut old));
                            assert_eq!(String::from_utf8(new).unwrap(), String::from_utf8(old).unwrap());
                            cases += usize::from(n > 0);
                        }
                    }
                }
            }
        }
        assert!(cases > 50, "{cases} cases wrote rows");
    }
}
