//! A ranking of one task's responses, and the submission a labeller sends. `Submission::parse`
//! is the one place that knows what a valid judgement is for each task kind.

use std::collections::{BTreeMap, HashSet};

use serde::Deserialize;

use super::{ResponseId, TaskKind};

/// Ranks aligned with response positions: 1 is best; equal ranks are a tie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ranking(Vec<i16>);

impl Ranking {
    /// Parses tiers of response ids (best first) against the task's responses in position order.
    /// The tiers must name every response exactly once; a tier of several is a tie.
    pub fn parse(tiers: &[Vec<ResponseId>], responses: &[ResponseId], allow_ties: bool) -> Result<Self, String> {
        let mut ranks = vec![0i16; responses.len()];
        let mut seen = HashSet::new();
        for (t, tier) in tiers.iter().enumerate() {
            if tier.is_empty() {
                return Err(format!("ranking tier {} is empty", t + 1));
            }
            if tier.len() > 1 && !allow_ties {
                return Err("this project does not allow ties".into());
            }
            for id in tier {
                let pos = responses.iter().position(|r| r == id).ok_or_else(|| format!("response {id} is not one of this task's responses"))?;
                if !seen.insert(*id) {
                    return Err(format!("response {id} appears more than once in the ranking"));
                }
                ranks[pos] = t as i16 + 1;
            }
        }
        if seen.len() != responses.len() {
            return Err(format!("the ranking must order all {} responses; it names {}", responses.len(), seen.len()));
        }
        Ok(Self(ranks))
    }

    pub fn ranks(&self) -> &[i16] {
        &self.0
    }

    pub fn is_tie(&self) -> bool {
        self.0.windows(2).all(|w| w[0] == w[1])
    }
}

/// What the labeller's page (or a script) sends for one task.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
pub struct SubmissionInput {
    pub idempotency_key: String,
    #[serde(default)]
    pub ranking: Option<Vec<Vec<ResponseId>>>,
    /// Pairwise only: how much better the first-ranked answer is, 1 (slightly) to 3 (much).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 3)]
    pub strength: Option<i16>,
    #[serde(default)]
    pub both_bad: bool,
    #[serde(default)]
    pub demonstration: Option<String>,
    #[serde(default)]
    pub flags: BTreeMap<ResponseId, Vec<String>>,
    #[serde(default)]
    pub rating: Option<i16>,
    #[serde(default)]
    pub comment: String,
}

/// The project rules a submission is checked against.
pub struct Rules<'a> {
    pub kind: TaskKind,
    pub allow_ties: bool,
    pub rating_enabled: bool,
    pub flags: &'a [String],
}

/// A checked submission, ready to store.
#[derive(Debug)]
pub struct Submission {
    pub idempotency_key: String,
    pub ranking: Option<Ranking>,
    pub strength: Option<i16>,
    pub both_bad: bool,
    pub demonstration: Option<String>,
    /// Flags by response position.
    pub flags: BTreeMap<usize, Vec<String>>,
    pub rating: Option<i16>,
    pub comment: String,
}

impl Submission {
    pub fn parse(input: SubmissionInput, responses: &[ResponseId], rules: &Rules) -> Result<Self, String> {
        let key = input.idempotency_key.trim().to_string();
        if key.is_empty() || key.len() > 128 {
            return Err("idempotency_key must be 1-128 characters".into());
        }
        let (ranking, strength, demonstration) = match rules.kind {
            TaskKind::Demonstration => {
                let text = input.demonstration.unwrap_or_default();
                if text.trim().is_empty() {
                    return Err("demonstration: write the ideal response".into());
                }
                (None, None, Some(text))
            }
            TaskKind::Ranking | TaskKind::Pairwise => {
                let tiers = input.ranking.ok_or("ranking: missing; expected a list of tiers of response ids, best first")?;
                let ranking = Ranking::parse(&tiers, responses, rules.allow_ties || rules.kind == TaskKind::Pairwise).map_err(|e| format!("ranking: {e}"))?;
                let strength = parse_strength(rules.kind, &ranking, input.strength)?;
                (Some(ranking), strength, None)
            }
        };
        let mut flags = BTreeMap::new();
        for (id, names) in input.flags {
            let pos = responses.iter().position(|r| *r == id).ok_or(format!("flags: {id} is not one of this task's responses"))?;
            if let Some(bad) = names.iter().find(|n| !rules.flags.contains(n)) {
                let known = if rules.flags.is_empty() { "it has none".to_string() } else { format!("expected one of {:?}", rules.flags) };
                return Err(format!("flags: {bad:?} is not one of this project's flags ({known})"));
            }
            if !names.is_empty() {
                flags.insert(pos, names);
            }
        }
        let rating = match input.rating {
            Some(r) if !rules.rating_enabled => return Err(format!("rating: this project has no rating (got {r})")),
            Some(r) if !(1..=7).contains(&r) => return Err(format!("rating: expected 1 to 7, got {r}")),
            r => r,
        };
        if input.comment.len() > 10_000 {
            return Err("comment: at most 10000 bytes".into());
        }
        if input.both_bad && rules.kind != TaskKind::Pairwise {
            return Err("both_bad: only pairwise projects have it".into());
        }
        Ok(Self { idempotency_key: key, ranking, strength, both_bad: input.both_bad, demonstration, flags, rating, comment: input.comment })
    }
}

fn parse_strength(kind: TaskKind, ranking: &Ranking, strength: Option<i16>) -> Result<Option<i16>, String> {
    match (kind, strength) {
        (TaskKind::Pairwise, Some(s)) if (1..=3).contains(&s) => Ok(Some(if ranking.is_tie() { 1 } else { s })),
        (TaskKind::Pairwise, Some(s)) => Err(format!("strength: expected 1 to 3, got {s}")),
        (TaskKind::Pairwise, None) => Ok(Some(if ranking.is_tie() { 1 } else { 2 })),
        (_, Some(_)) => Err("strength: only pairwise projects have it".into()),
        (_, None) => Ok(None),
    }
}

/// The pairs a ranking implies: (better position, worse position, tie), each unordered pair once.
pub fn pairs(ranks: &[i16]) -> Vec<(usize, usize, bool)> {
    let mut out = Vec::new();
    for i in 0..ranks.len() {
        for j in i + 1..ranks.len() {
            if ranks[i] <= ranks[j] {
                out.push((i, j, ranks[i] == ranks[j]));
            } else {
                out.push((j, i, false));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(n: usize) -> Vec<ResponseId> {
        (0..n).map(|_| ResponseId::new()).collect()
    }

    #[test]
    fn a_ranking_orders_exactly_the_tasks_responses() {
        let r = ids(3);
        let ok = Ranking::parse(&[vec![r[2]], vec![r[0]], vec![r[1]]], &r, false).unwrap();
        assert_eq!(ok.ranks(), &[2, 3, 1]);
        assert!(Ranking::parse(&[vec![r[2]], vec![r[0]]], &r, false).unwrap_err().contains("all 3"));
        assert!(Ranking::parse(&[vec![r[0]], vec![r[0]], vec![r[1]]], &r, false).unwrap_err().contains("more than once"));
        assert!(Ranking::parse(&[vec![r[0], r[1]], vec![r[2]]], &r, false).unwrap_err().contains("ties"));
        assert_eq!(Ranking::parse(&[vec![r[0], r[1]], vec![r[2]]], &r, true).unwrap().ranks(), &[1, 1, 2]);
        let stranger = ResponseId::new();
        assert!(Ranking::parse(&[vec![stranger], vec![r[0]], vec![r[1]]], &r, false).is_err());
    }

    #[test]
    fn an_unknown_flag_is_refused_naming_the_projects_flags() {
        let r = ids(2);
        let input = |flag: &str| SubmissionInput {
            idempotency_key: "k".into(),
            ranking: Some(vec![vec![r[0]], vec![r[1]]]),
            flags: BTreeMap::from([(r[0], vec![flag.to_string()])]),
            ..Default::default()
        };
        let flags = vec!["unsafe".to_string(), "off-topic".to_string()];
        let rules = Rules { kind: TaskKind::Ranking, allow_ties: false, rating_enabled: false, flags: &flags };
        let e = Submission::parse(input("rude"), &r, &rules).unwrap_err();
        assert_eq!(e, r#"flags: "rude" is not one of this project's flags (expected one of ["unsafe", "off-topic"])"#);
        assert_eq!(Submission::parse(input("unsafe"), &r, &rules).unwrap().flags[&0], vec!["unsafe"]);
        let none = Rules { flags: &[], ..rules };
        assert!(Submission::parse(input("unsafe"), &r, &none).unwrap_err().ends_with("(it has none)"));
    }

    #[test]
    fn pairs_put_the_better_response_first() {
        assert_eq!(pairs(&[2, 1, 2]), vec![(1, 0, false), (0, 2, true), (1, 2, false)]);
        assert_eq!(pairs(&[1, 2, 3, 4]).len(), 6);
    }
}
