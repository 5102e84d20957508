//! The lead's item browser: what items are searched and filtered by. Each field is parsed from
//! the query string here, once; a field that does not parse is an error naming it. New filters
//! (gold, review state, agreement…) are a field here, a line in [`ItemFilter::parse`] and a
//! condition in `db::item_list`.

use chrono::{NaiveDate, TimeZone, Utc};

use super::review::ReviewState;
use super::Email;

/// Where an item's judgements stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemStatus {
    /// No labeller has judged it.
    Unlabelled,
    /// Judged, but still short of the project's overlap.
    InProgress,
    /// As many judgements as the overlap asks for.
    Complete,
    /// Set aside by a lead: leased no more, in no export.
    Excluded,
}

/// Where an item came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemSource {
    Imported,
    /// Sampled by a `generate` run.
    Generated,
}

/// A flag filter: items with any flag, or with this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagFilter {
    Any,
    Named(String),
}

/// The filters of the item browser; `None` everywhere lists every item, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ItemFilter {
    /// Words the prompt must contain, matched as word prefixes (an index finds them)…
    pub words: Vec<String>,
    /// …or, when asked, that one response contains (anywhere; without an index, so slower).
    pub in_responses: bool,
    pub status: Option<ItemStatus>,
    pub model: Option<String>,
    pub labeller: Option<Email>,
    pub flag: Option<FlagFilter>,
    pub source: Option<ItemSource>,
    /// Imported on or after this day (UTC).
    pub from: Option<NaiveDate>,
    /// Imported on or before this day (UTC).
    pub to: Option<NaiveDate>,
    /// Gold items and honeypots only (`Some(true)`), or none of them (`Some(false)`).
    pub gold: Option<bool>,
    /// Items with a judgement in this review state (`Adjudicated`: the item has a final judgement).
    pub review: Option<ReviewState>,
    /// Items whose agreement (Kendall's W of their labellers) is at least this…
    pub min_agreement: Option<f64>,
    /// …and at most this (items judged by one labeller have none, and match neither).
    pub max_agreement: Option<f64>,
}

/// The query string's fields, as text.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ItemQuery {
    #[serde(default)]
    pub q: String,
    /// `1` to search the responses too.
    #[serde(default)]
    pub responses: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub model: String,
    #[serde(default)]
    pub labeller: String,
    #[serde(default)]
    pub flag: String,
    #[serde(default)]
    pub source: String,
    #[serde(default)]
    pub from: String,
    #[serde(default)]
    pub to: String,
    /// `yes` or `no`.
    #[serde(default)]
    pub gold: String,
    #[serde(default)]
    pub review: String,
    #[serde(default)]
    pub min_agreement: String,
    #[serde(default)]
    pub max_agreement: String,
    /// The keyset cursor: items older than this position.
    #[serde(default)]
    pub before: String,
}

/// Most words searched for at once.
const MAX_WORDS: usize = 8;
/// Longest word searched for; longer ones are cut.
const MAX_WORD: usize = 64;

fn blank(s: &str) -> Option<&str> {
    Some(s.trim()).filter(|s| !s.is_empty())
}

fn date(field: &str, text: &str) -> Result<Option<NaiveDate>, String> {
    blank(text).map(|t| NaiveDate::parse_from_str(t, "%Y-%m-%d").map_err(|_| format!("{field}: expected a date as YYYY-MM-DD, got {t:?}"))).transpose()
}

fn agreement(field: &str, text: &str) -> Result<Option<f64>, String> {
    blank(text)
        .map(|t| {
            t.parse::<f64>()
                .ok()
                .filter(|w| (0.0..=1.0).contains(w))
                .ok_or_else(|| format!("{field}: expected an agreement (Kendall's W) from 0 to 1, got {t:?}"))
        })
        .transpose()
}

impl ItemFilter {
    /// Whether the filter asks for an agreement range (the caller computes the items in it).
    pub fn filters_agreement(&self) -> bool {
        self.min_agreement.is_some() || self.max_agreement.is_some()
    }

    /// Whether an item's agreement `w` is in the asked range.
    pub fn agreement_matches(&self, w: Option<f64>) -> bool {
        w.is_some_and(|w| self.min_agreement.is_none_or(|m| w >= m) && self.max_agreement.is_none_or(|m| w <= m))
    }

    /// The review state as the query's word.
    pub fn review_word(&self) -> Option<&'static str> {
        self.review.map(ReviewState::as_str)
    }

    pub fn parse(q: &ItemQuery) -> Result<Self, String> {
        let words: Vec<String> =
            q.q.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(|w| w.to_lowercase().chars().take(MAX_WORD).collect())
                .take(MAX_WORDS)
                .collect();
        let status = match blank(&q.status) {
            None => None,
            Some("unlabelled") => Some(ItemStatus::Unlabelled),
            Some("in_progress") => Some(ItemStatus::InProgress),
            Some("complete") => Some(ItemStatus::Complete),
            Some("excluded") => Some(ItemStatus::Excluded),
            Some(s) => return Err(format!("status: expected unlabelled, in_progress, complete or excluded, got {s:?}")),
        };
        let source = match blank(&q.source) {
            None => None,
            Some("imported") => Some(ItemSource::Imported),
            Some("generated") => Some(ItemSource::Generated),
            Some(s) => return Err(format!("source: expected imported or generated, got {s:?}")),
        };
        let labeller = blank(&q.labeller).map(|e| Email::parse(e).map_err(|m| format!("labeller: {m}"))).transpose()?;
        let flag = blank(&q.flag).map(|f| if f == "*" { FlagFilter::Any } else { FlagFilter::Named(f.to_string()) });
        let (from, to) = (date("from", &q.from)?, date("to", &q.to)?);
        if let (Some(a), Some(b)) = (from, to) {
            if a > b {
                return Err(format!("to: {b} is before from ({a})"));
            }
        }
        let in_responses = blank(&q.responses).is_some();
        let gold = match blank(&q.gold) {
            None => None,
            Some("yes") => Some(true),
            Some("no") => Some(false),
            Some(g) => return Err(format!("gold: expected yes or no, got {g:?}")),
        };
        let review = blank(&q.review).map(str::parse).transpose()?;
        let (min_agreement, max_agreement) = (agreement("min_agreement", &q.min_agreement)?, agreement("max_agreement", &q.max_agreement)?);
        if let (Some(a), Some(b)) = (min_agreement, max_agreement) {
            if a > b {
                return Err(format!("max_agreement: {b} is below min_agreement ({a})"));
            }
        }
        Ok(Self {
            words,
            in_responses,
            status,
            model: blank(&q.model).map(str::to_string),
            labeller,
            flag,
            source,
            from,
            to,
            gold,
            review,
            min_agreement,
            max_agreement,
        })
    }

    /// The words as a PostgreSQL `tsquery` of prefixes (`foo:* & bar:*`); they hold only
    /// letters and digits, so nothing in them is `tsquery` syntax.
    pub fn tsquery(&self) -> Option<String> {
        (!self.words.is_empty()).then(|| self.words.iter().map(|w| format!("{w}:*")).collect::<Vec<_>>().join(" & "))
    }

    /// `ILIKE` patterns a response must all match (`%word%`), when responses are searched; words
    /// hold only letters and digits, so none is a `LIKE` wildcard.
    pub fn response_patterns(&self) -> Option<Vec<String>> {
        (self.in_responses && !self.words.is_empty()).then(|| self.words.iter().map(|w| format!("%{w}%")).collect())
    }

    /// The status as the query's word.
    pub fn status_word(&self) -> Option<&'static str> {
        self.status.map(|s| match s {
            ItemStatus::Unlabelled => "unlabelled",
            ItemStatus::InProgress => "in_progress",
            ItemStatus::Complete => "complete",
            ItemStatus::Excluded => "excluded",
        })
    }

    /// The flag as the query binds it: `*` for any.
    pub fn flag_word(&self) -> Option<&str> {
        self.flag.as_ref().map(|f| match f {
            FlagFilter::Any => "*",
            FlagFilter::Named(n) => n.as_str(),
        })
    }

    /// Whether the item must be generated (`Some(true)`) or imported (`Some(false)`).
    pub fn generated(&self) -> Option<bool> {
        self.source.map(|s| s == ItemSource::Generated)
    }

    /// The range of creation times, `[from 00:00, to + 1 day 00:00)` in UTC.
    pub fn created_range(&self) -> (Option<chrono::DateTime<Utc>>, Option<chrono::DateTime<Utc>>) {
        let at = |d: NaiveDate| Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight exists"));
        (self.from.map(at), self.to.and_then(|d| d.succ_opt()).map(at))
    }
}

/// The keyset cursor: a position (`items.seq`) from the query string.
pub fn parse_cursor(text: &str) -> Result<Option<i64>, String> {
    blank(text).map(|t| t.parse::<i64>().map_err(|_| format!("before: expected a whole number, got {t:?}"))).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(f: impl FnOnce(&mut ItemQuery)) -> Result<ItemFilter, String> {
        let mut q = ItemQuery::default();
        f(&mut q);
        ItemFilter::parse(&q)
    }

    #[test]
    fn gold_review_and_agreement_filters_parse_and_bad_ones_name_their_field() {
        let f = parse(|q| {
            q.gold = "yes".into();
            q.review = "rejected".into();
            q.min_agreement = "0.2".into();
            q.max_agreement = "0.6".into();
        })
        .unwrap();
        assert_eq!((f.gold, f.review_word()), (Some(true), Some("rejected")));
        assert!(f.filters_agreement() && f.agreement_matches(Some(0.4)) && !f.agreement_matches(Some(0.7)) && !f.agreement_matches(None));
        assert!(parse(|q| q.gold = "maybe".into()).unwrap_err().starts_with("gold:"));
        assert!(parse(|q| q.review = "done".into()).unwrap_err().starts_with("review:"));
        assert!(parse(|q| q.min_agreement = "2".into()).unwrap_err().starts_with("min_agreement:"));
        assert!(parse(|q| {
            q.min_agreement = "0.5".into();
            q.max_agreement = "0.1".into();
        })
        .unwrap_err()
        .starts_with("max_agreement:"));
    }

    #[test]
    fn an_empty_query_filters_nothing() {
        assert_eq!(parse(|_| {}).unwrap(), ItemFilter::default());
        assert_eq!(ItemFilter::default().tsquery(), None);
    }

    #[test]
    fn words_become_prefixes_and_carry_no_tsquery_syntax() {
        let f = parse(|q| q.q = "Fn main() & !x:* | 'ö'".into()).unwrap();
        assert_eq!(f.tsquery().unwrap(), "fn:* & main:* & x:* & ö:*");
        let many = parse(|q| q.q = "a b c d e f g h i j".into()).unwrap();
        assert_eq!(many.words.len(), MAX_WORDS);
        assert_eq!(f.response_patterns(), None, "responses only when asked");
        let r = parse(|q| {
            q.q = "50% off_".into();
            q.responses = "1".into();
        })
        .unwrap();
        assert_eq!(r.response_patterns().unwrap(), ["%50%", "%off%"], "no wildcard gets through");
    }

    #[test]
    fn each_field_that_does_not_parse_is_named() {
        assert!(parse(|q| q.status = "done".into()).unwrap_err().starts_with("status:"));
        assert!(parse(|q| q.source = "web".into()).unwrap_err().starts_with("source:"));
        assert!(parse(|q| q.labeller = "nobody".into()).unwrap_err().starts_with("labeller:"));
        assert!(parse(|q| q.from = "1 May".into()).unwrap_err().starts_with("from:"));
        assert!(parse(|q| {
            q.from = "2026-05-02".into();
            q.to = "2026-05-01".into();
        })
        .unwrap_err()
        .starts_with("to:"));
        assert!(parse_cursor("x").unwrap_err().starts_with("before:"));
        assert_eq!(parse_cursor(" 12 ").unwrap(), Some(12));
    }

    #[test]
    fn the_date_range_includes_the_whole_last_day() {
        let f = parse(|q| {
            q.from = "2026-05-01".into();
            q.to = "2026-05-01".into();
            q.flag = "*".into();
            q.status = "in_progress".into();
        })
        .unwrap();
        let (a, b) = f.created_range();
        assert_eq!((b.unwrap() - a.unwrap()).num_hours(), 24);
        assert_eq!((f.flag_word(), f.status_word()), (Some("*"), Some("in_progress")));
    }
}
