//! Review of judgements: the decisions a reviewer takes (accept, or reject with a reason), the
//! review state every export row carries, which judgements the stream samples at the project's
//! rate (a fixed function of the judgement's id, so the sample is stable and the database
//! computes the same one), and why a judgement comes first.

use serde::Serialize;
use uuid::Uuid;

/// A reviewer's decision on a judgement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Accept,
    Reject,
}

impl std::str::FromStr for Decision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "accept" | "accepted" => Ok(Self::Accept),
            "reject" | "rejected" => Ok(Self::Reject),
            other => Err(format!("decision: expected \"accept\" or \"reject\", got {other:?}")),
        }
    }
}

/// The longest reason or note a reviewer may give, in characters.
pub const MAX_REASON: usize = 2000;

/// Why a judgement was rejected: 1 to [`MAX_REASON`] characters, trimmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason(String);

impl Reason {
    /// The reason, trimmed; empty or too long is refused naming `reason`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        match t.chars().count() {
            0 => Err("reason: say why the judgement is rejected (1 to 2000 characters); the labeller is shown it".into()),
            n if n > MAX_REASON => Err(format!("reason: at most {MAX_REASON} characters, got {n}")),
            _ => Ok(Self(t.to_string())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A note beside an adjudication: optional, at most [`MAX_REASON`] characters, trimmed.
pub fn parse_note(text: &str) -> Result<String, String> {
    let t = text.trim();
    let n = t.chars().count();
    if n > MAX_REASON {
        return Err(format!("note: at most {MAX_REASON} characters, got {n}"));
    }
    Ok(t.to_string())
}

/// A judgement's review state as exports and the item browser name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReviewState {
    Unreviewed,
    Accepted,
    Rejected,
    /// A reviewer's final judgement of its item (exports use it instead of the labellers').
    Adjudicated,
}

impl ReviewState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unreviewed => "unreviewed",
            Self::Accepted => "accepted",
            Self::Rejected => "rejected",
            Self::Adjudicated => "adjudicated",
        }
    }

    /// From the database's text (`judgement_reviews.decision`, or the export query's state).
    pub fn from_db(s: &str) -> Self {
        match s {
            "accepted" => Self::Accepted,
            "rejected" => Self::Rejected,
            "adjudicated" => Self::Adjudicated,
            _ => Self::Unreviewed,
        }
    }
}

impl std::str::FromStr for ReviewState {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "unreviewed" => Ok(Self::Unreviewed),
            "accepted" => Ok(Self::Accepted),
            "rejected" => Ok(Self::Rejected),
            "adjudicated" => Ok(Self::Adjudicated),
            other => Err(format!("review: expected unreviewed, accepted, rejected or adjudicated, got {other:?}")),
        }
    }
}

/// Where a judgement falls in `[0, 1)` for sampling: its id's last 32 bits over 2³² (random
/// in a v4 or v7 UUID). The database computes the same as
/// `('x' || right(id::text, 8))::bit(32)::bigint / 4294967296.0` (and `db::review` compares
/// that integer with `⌈rate · 2³²⌉`, which samples the same judgements, through an index).
pub fn sample_point(id: Uuid) -> f64 {
    let b = id.as_bytes();
    f64::from(u32::from_be_bytes([b[12], b[13], b[14], b[15]])) / 4_294_967_296.0
}

/// Whether the stream samples the judgement at `rate` (0 to 1).
pub fn sampled(id: Uuid, rate: f64) -> bool {
    sample_point(id) < rate
}

/// Checks a review rate: a share from 0 to 1.
pub fn check_rate(rate: f64) -> Result<f64, String> {
    if rate.is_finite() && (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("review_rate: expected a share of judgements from 0 to 1, got {rate}"))
    }
}

/// Why a judgement is in the review stream, most urgent first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Its item's labellers disagree (Kendall's W below the project's threshold).
    LowAgreement,
    /// Its labeller is flagged, paused or has a low gold score.
    FlaggedLabeller,
    /// Drawn at the project's review rate.
    Sampled,
}

impl Priority {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::LowAgreement => "low agreement",
            Self::FlaggedLabeller => "flagged labeller",
            Self::Sampled => "sampled",
        }
    }
}

/// A gold score below this (when the project sets no pause threshold) puts a labeller's work
/// first in the review stream.
pub const LOW_GOLD: f64 = 0.5;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_point_is_the_ids_last_32_bits() {
        let id: Uuid = "00000000-0000-4000-8000-000080000000".parse().unwrap();
        assert_eq!(sample_point(id), 0.5);
        let id: Uuid = "00000000-0000-4000-8000-0000ffffffff".parse().unwrap();
        assert!(sample_point(id) < 1.0 && sample_point(id) > 0.999);
        assert!(!sampled(id, 0.0));
        assert!(sampled(id, 1.0));
    }

    #[test]
    fn a_sample_of_random_ids_is_near_the_rate() {
        let n = 20_000;
        let hits = (0..n).filter(|_| sampled(Uuid::new_v4(), 0.25)).count();
        assert!((4000..6000).contains(&hits), "{hits}");
    }

    #[test]
    fn a_reason_is_required_and_bounded() {
        assert!(Reason::parse("  ").unwrap_err().starts_with("reason:"));
        assert!(Reason::parse(&"x".repeat(2001)).unwrap_err().starts_with("reason:"));
        assert_eq!(Reason::parse(" wrong order ").unwrap().as_str(), "wrong order");
        assert!(parse_note(&"x".repeat(2001)).unwrap_err().starts_with("note:"));
    }

    #[test]
    fn decisions_and_states_parse() {
        assert_eq!("accept".parse::<Decision>(), Ok(Decision::Accept));
        assert!("maybe".parse::<Decision>().unwrap_err().starts_with("decision:"));
        assert_eq!("adjudicated".parse::<ReviewState>(), Ok(ReviewState::Adjudicated));
        assert!(check_rate(1.5).unwrap_err().starts_with("review_rate:"));
        assert!(check_rate(f64::NAN).is_err());
    }
}
