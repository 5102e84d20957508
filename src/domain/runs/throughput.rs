//! How fast a run trains, from its metric lines: tokens per second (the trainer's figure for
//! the last step, summed over the ranks), examples per second over the recent steps, and the
//! share of one rank; for PPO the seconds an iteration takes.

use serde_json::Value;

/// Steps the examples-per-second figure looks back over.
const WINDOW: usize = 20;

/// A run's recent speed.
#[derive(Debug, Clone, PartialEq)]
pub enum Throughput {
    Steps { tokens_per_s: f64, examples_per_s: Option<f64>, processes: u32 },
    Iterations { seconds: f64 },
}

impl Throughput {
    /// From the data of a run's `step` lines (or PPO's `iteration` lines), in step order; none
    /// before the first.
    pub fn from_metrics<'a>(steps: impl IntoIterator<Item = &'a Value>, processes: u32) -> Option<Self> {
        let rows: Vec<&Value> = steps.into_iter().collect();
        let last = rows.last()?;
        if let Some(t) = last.get("time") {
            let seconds = ["generate_s", "score_s", "optimise_s"].iter().filter_map(|k| t.get(*k).and_then(Value::as_f64)).sum();
            return Some(Self::Iterations { seconds });
        }
        let tokens_per_s = last.get("tokens_per_s")?.as_f64()?;
        let recent = &rows[rows.len().saturating_sub(WINDOW + 1)..];
        let f = |v: &Value, k: &str| v.get(k).and_then(Value::as_f64);
        let examples_per_s = match recent {
            [first, rest @ ..] if !rest.is_empty() => {
                let secs = f(last, "elapsed_s")? - f(first, "elapsed_s")?;
                let examples: f64 = rest.iter().filter_map(|v| f(v, "examples")).sum();
                (secs > 0.0).then(|| examples / secs)
            }
            _ => None,
        };
        Some(Self::Steps { tokens_per_s, examples_per_s, processes: processes.max(1) })
    }

    /// "1234 tokens/s · 56.0 examples/s (617 tokens/s a rank)", "4.2 s an iteration".
    pub fn summary(&self) -> String {
        match *self {
            Self::Iterations { seconds } => format!("{seconds:.1} s an iteration"),
            Self::Steps { tokens_per_s, examples_per_s, processes } => {
                let mut s = format!("{tokens_per_s:.0} tokens/s");
                if let Some(e) = examples_per_s {
                    s.push_str(&format!(" · {e:.1} examples/s"));
                }
                if processes > 1 {
                    s.push_str(&format!(" ({:.0} tokens/s a rank)", tokens_per_s / f64::from(processes)));
                }
                s
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn speed_comes_from_the_last_step_and_the_recent_examples() {
        let steps: Vec<Value> = (1..=3).map(|i| json!({"step": i, "tokens_per_s": 1000.0 * i as f64, "examples": 8, "elapsed_s": 2.0 * i as f64})).collect();
        let t = Throughput::from_metrics(&steps, 2).unwrap();
        assert_eq!(t, Throughput::Steps { tokens_per_s: 3000.0, examples_per_s: Some(4.0), processes: 2 });
        assert_eq!(t.summary(), "3000 tokens/s · 4.0 examples/s (1500 tokens/s a rank)");
        assert_eq!(Throughput::from_metrics(&steps[..1], 1).unwrap().summary(), "1000 tokens/s");
        assert_eq!(Throughput::from_metrics(&[], 1), None);
    }

    #[test]
    fn ppo_shows_the_time_of_an_iteration() {
        let it = json!({"iteration": 1, "time": {"generate_s": 1.0, "score_s": 0.5, "optimise_s": 2.7}});
        assert_eq!(Throughput::from_metrics([&it], 1).unwrap().summary(), "4.2 s an iteration");
    }
}
