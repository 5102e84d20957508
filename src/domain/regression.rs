//! Frozen regression sets: held-out preference pairs of an export snapshot's test split, copied
//! when a lead freezes them and never changed afterwards, that every rm, dpo and ppo run is
//! measured on (see `rewardlab-train eval-regression`), so a retrained model that forgets what
//! an earlier round taught shows it. Here: the set's name, the figures a run of each kind
//! reports, and the rule that flags a drop between consecutive runs.

use serde::Serialize;

use super::runs::RunKind;

/// Pairs a set keeps at most (the first of the test split, in the export's order): enough for an
/// accuracy within ±2.2 points (95%), small enough to measure after every run on a CPU.
pub const MAX_PAIRS: usize = 2000;

/// Distinct prompts a PPO policy answers (the first of the set's).
pub const PPO_PROMPTS: usize = 64;

/// A drop from one run to the next (same set and figure) larger than this is flagged, unless
/// the caller asks for another threshold.
pub const DEFAULT_THRESHOLD: f64 = 0.05;

/// A regression set's name: 1 to 80 characters, trimmed, no control characters; unique in its
/// project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct SetName(String);

impl SetName {
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        if t.is_empty() || t.chars().count() > 80 || t.chars().any(char::is_control) {
            return Err(format!("name: expected 1 to 80 characters without control characters, got {:?}", first_chars(t)));
        }
        Ok(Self(t.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn first_chars(t: &str) -> String {
    t.chars().take(100).collect()
}

/// The threshold of a drop flag: a share from 0 to 1 (none given: [`DEFAULT_THRESHOLD`]).
pub fn threshold(given: Option<f64>) -> Result<f64, String> {
    match given {
        None => Ok(DEFAULT_THRESHOLD),
        Some(t) if (0.0..=1.0).contains(&t) => Ok(t),
        Some(t) => Err(format!("threshold: expected a number from 0 to 1 (the largest drop not flagged), got {t}")),
    }
}

/// A figure a run reports on a regression set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: RunKind,
    /// What it measures, for the page.
    pub help: &'static str,
    /// A share from 0 to 1 comparable from run to run, so a drop is flagged; a reward's scale is
    /// its reward model's, which changes between runs, so it is plotted, never flagged.
    pub flagged: bool,
}

/// Every figure, in the order pages show them.
pub const METRICS: [Metric; 4] = [
    Metric { name: "rm_accuracy", kind: RunKind::Rm, help: "share of pairs whose chosen response the reward model scores higher", flagged: true },
    Metric {
        name: "dpo_reward_accuracy",
        kind: RunKind::Dpo,
        help: "share of pairs whose chosen response has the higher implicit reward β·(log π − log π_ref) against the run's starting policy",
        flagged: true,
    },
    Metric {
        name: "ppo_win_rate",
        kind: RunKind::Ppo,
        help: "share of the set's prompts where the run's reward model scores the policy's greedy answer above the starting policy's (ties count half)",
        flagged: true,
    },
    Metric {
        name: "ppo_mean_reward",
        kind: RunKind::Ppo,
        help:
            "mean reward of the policy's greedy answers to the set's prompts, by the run's reward model (its scale changes with the reward model: not flagged)",
        flagged: false,
    },
];

/// The figure named `name`, if this build knows it.
pub fn metric(name: &str) -> Option<&'static Metric> {
    METRICS.iter().find(|m| m.name == name)
}

/// Whether runs of `kind` are measured on the active regression set.
pub fn measures(kind: RunKind) -> bool {
    METRICS.iter().any(|m| m.kind == kind)
}

/// Per value (runs in creation order): the change from the previous value (`None` for the
/// first) and whether it is a drop larger than `threshold`.
pub fn drops(values: &[f64], threshold: f64, flagged: bool) -> Vec<(Option<f64>, bool)> {
    let mut out = Vec::with_capacity(values.len());
    for (i, v) in values.iter().enumerate() {
        let change = i.checked_sub(1).map(|p| v - values[p]);
        out.push((change, flagged && change.is_some_and(|c| -c > threshold + 1e-12)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_trimmed_and_bounded() {
        assert_eq!(SetName::parse("  round 3 held-out ").unwrap().as_str(), "round 3 held-out");
        assert!(SetName::parse(" ").unwrap_err().starts_with("name: expected 1 to 80 characters"));
        assert!(SetName::parse(&"é".repeat(80)).is_ok(), "80 characters, 160 bytes");
        assert!(SetName::parse(&"x".repeat(81)).is_err());
        assert!(SetName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn the_threshold_is_a_share() {
        assert_eq!(threshold(None), Ok(DEFAULT_THRESHOLD));
        assert_eq!(threshold(Some(0.1)), Ok(0.1));
        assert!(threshold(Some(1.5)).unwrap_err().starts_with("threshold: expected a number from 0 to 1"));
        assert!(threshold(Some(f64::NAN)).is_err());
        assert!(threshold(Some(-0.01)).is_err());
    }

    #[test]
    fn a_drop_beyond_the_threshold_from_the_previous_run_is_flagged() {
        let d = drops(&[0.80, 0.78, 0.70, 0.75, 0.69], 0.05, true);
        let flags: Vec<bool> = d.iter().map(|x| x.1).collect();
        assert_eq!(flags, [false, false, true, false, true]);
        assert_eq!(d[0].0, None);
        assert!((d[2].0.unwrap() + 0.08).abs() < 1e-12);
        // Exactly the threshold is not beyond it.
        assert!(!drops(&[0.8, 0.75], 0.05, true)[1].1);
        assert!(drops(&[5.0, -3.0], 0.05, false).iter().all(|x| !x.1), "a reward is never flagged");
    }

    #[test]
    fn each_measured_kind_has_a_flagged_figure() {
        for kind in [RunKind::Rm, RunKind::Dpo, RunKind::Ppo] {
            assert!(measures(kind) && METRICS.iter().any(|m| m.kind == kind && m.flagged), "{kind}");
        }
        assert!(!measures(RunKind::Sft) && !measures(RunKind::Generate));
        assert_eq!(metric("ppo_win_rate").unwrap().kind, RunKind::Ppo);
    }
}
