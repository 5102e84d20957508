//! The metrics stream: one JSON object a line, written by `rewardlab-train --metrics` and read
//! by the worker (which stores each line with its event and step), the run pages and charts.
//! Every line names its `event`; the keys of each event are the fields of its struct.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One line of the metrics stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum MetricEvent {
    Step(Step),
    Eval(Eval),
    Iteration(Iteration),
    Done(Done),
}

/// `step`: one optimizer step of the shared training loop (rm, sft, dpo).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "step")]
pub struct Step {
    pub step: u64,
    pub epoch: usize,
    pub loss: f64,
    pub accuracy: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens_per_s: f64,
    pub examples: usize,
    pub elapsed_s: f64,
    /// Resident memory (Linux only).
    pub rss_mb: Option<f64>,
    /// Optimizer steps the run plans in all (epochs × steps per epoch), for its progress and
    /// time left; absent from trainers before it was added.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub total_steps: Option<u64>,
}

/// What a validation pass measured; which fields a task reports depends on the task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub loss: f64,
    /// Pairs ordered right (rm, dpo).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub accuracy: Option<f64>,
    /// Mean reward margin of the pairs (rm, dpo).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub margin: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub rankings: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub pairs: Option<f64>,
    /// sft: e^loss, the share of response tokens predicted, and how many there were.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub perplexity: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub token_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub tokens: Option<f64>,
}

/// `eval`: a validation pass after optimizer step `step`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "eval")]
pub struct Eval {
    pub step: u64,
    pub epoch: usize,
    #[serde(flatten)]
    pub report: Report,
}

/// `iteration`: one PPO iteration (a rollout batch and its optimisation epochs).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "iteration")]
pub struct Iteration {
    pub iteration: u64,
    /// Iterations the run plans in all (`--iterations`); absent from trainers before it was added.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub total_iterations: Option<u64>,
    /// Mean reward-model score of the rollouts.
    pub score: f64,
    /// Mean KL to the reference policy per sequence.
    pub kl: f64,
    pub non_score_reward: f64,
    pub rlhf_reward: f64,
    /// The KL coefficient used this iteration.
    pub kl_coef: f64,
    pub entropy: f64,
    pub approxkl: f64,
    pub clipfrac: f64,
    pub ratio_mean: f64,
    pub ratio_var: f64,
    pub pg_loss: f64,
    pub vf_loss: f64,
    pub vf_clipfrac: f64,
    pub eos_rate: f64,
    pub response_length: f64,
    pub time: Timings,
    /// √ of the mean per-sequence KL to the starting policy, KL estimated with k3 (Schulman:
    /// Σ_t e^{r_t} − 1 − r_t, r_t = log π_start − log π; never negative); absent from trainers
    /// before it was added.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sqrt_kl: Option<f64>,
    /// An ensemble reward model's mean reward of the rollouts and its disagreement (the
    /// members' standard deviation, averaged over the rollouts); absent for a single model.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ensemble_mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ensemble_std: Option<f64>,
}

/// Seconds an iteration spent in each phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Timings {
    pub generate_s: f64,
    pub score_s: f64,
    pub optimise_s: f64,
}

/// `done`: the run's summary, its last line (the worker stores it as the run's summary). Each
/// kind of run fills its own fields.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename = "done")]
pub struct Done {
    /// rm, sft, dpo: optimizer steps taken.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub step: Option<u64>,
    /// ppo: iterations done, and the final KL coefficient.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub iteration: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kl_coef: Option<f64>,
    /// rm: the normalisation of its rewards.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reward_bias: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reward_std: Option<f64>,
    /// rm, sft, dpo: the last validation pass.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub validation: Option<Eval>,
    /// generate (written by the worker once it imported the samples).
    #[serde(flatten)]
    pub generated: Option<Generated>,
}

/// What a `generate` run added to its project.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generated {
    pub prompts: usize,
    pub items_added: u64,
    pub responses_added: u64,
    pub skipped: usize,
    /// The label its responses carry.
    pub policy: String,
}

impl MetricEvent {
    /// The line as written to the stream.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// A stored line as an event; `None` for a line this build does not know (a newer
    /// trainer's event, or a malformed one).
    pub fn from_value(data: &Value) -> Option<Self> {
        // Untagged: the line's `event` must be the one it parsed as (an unknown event with the
        // same keys as a known one is not that one).
        let event: Self = serde_json::from_value(data.clone()).ok()?;
        (data.get("event").and_then(Value::as_str) == Some(event.name())).then_some(event)
    }

    /// The event's name, as the stream writes it.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Step(_) => "step",
            Self::Eval(_) => "eval",
            Self::Iteration(_) => "iteration",
            Self::Done(_) => "done",
        }
    }

    /// Where the line sits in the run: its optimizer step or PPO iteration (`None` for the
    /// summary, which repeats earlier figures).
    pub fn position(&self) -> Option<u64> {
        match self {
            Self::Step(s) => Some(s.step),
            Self::Eval(e) => Some(e.step),
            Self::Iteration(i) => Some(i.iteration),
            Self::Done(_) => None,
        }
    }

    /// The figures of the line worth plotting, by name (positions, epochs, counts and totals
    /// left out; a figure a task does not report is absent).
    pub fn figures(&self) -> Vec<(&'static str, f64)> {
        let mut out = Vec::new();
        let mut some = |name: &'static str, v: Option<f64>| {
            if let Some(v) = v {
                out.push((name, v));
            }
        };
        match self {
            Self::Step(s) => {
                for (name, v) in [("loss", s.loss), ("accuracy", s.accuracy), ("lr", s.lr), ("grad_norm", s.grad_norm), ("tokens_per_s", s.tokens_per_s)] {
                    some(name, Some(v));
                }
                some("elapsed_s", Some(s.elapsed_s));
                some("rss_mb", s.rss_mb);
            }
            Self::Eval(e) => {
                let r = &e.report;
                some("loss", Some(r.loss));
                some("accuracy", r.accuracy);
                some("margin", r.margin);
                some("perplexity", r.perplexity);
                some("token_accuracy", r.token_accuracy);
            }
            Self::Iteration(i) => {
                for (name, v) in [
                    ("score", i.score),
                    ("kl", i.kl),
                    ("non_score_reward", i.non_score_reward),
                    ("rlhf_reward", i.rlhf_reward),
                    ("kl_coef", i.kl_coef),
                    ("entropy", i.entropy),
                    ("approxkl", i.approxkl),
                    ("clipfrac", i.clipfrac),
                    ("ratio_mean", i.ratio_mean),
                    ("ratio_var", i.ratio_var),
                    ("pg_loss", i.pg_loss),
                    ("vf_loss", i.vf_loss),
                    ("vf_clipfrac", i.vf_clipfrac),
                    ("eos_rate", i.eos_rate),
                    ("response_length", i.response_length),
                    ("generate_s", i.time.generate_s),
                    ("score_s", i.time.score_s),
                    ("optimise_s", i.time.optimise_s),
                ] {
                    some(name, Some(v));
                }
                some("sqrt_kl", i.sqrt_kl);
                some("ensemble_mean", i.ensemble_mean);
                some("ensemble_std", i.ensemble_std);
            }
            Self::Done(_) => {}
        }
        out.retain(|(_, v)| v.is_finite());
        out
    }
}

/// A metrics line as the platform stores it: any JSON object naming its `event` (a newer
/// trainer's events too), its position (`step`, or `iteration` for PPO), and the line.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricLine {
    pub event: String,
    pub step: Option<i64>,
    pub data: Value,
}

impl MetricLine {
    /// The line, if it is a metrics line (else it is a log line).
    pub fn parse(line: &str) -> Option<Self> {
        let data: Value = serde_json::from_str(line).ok()?;
        data.get("event").is_some().then(|| Self::from_value(data))
    }

    /// An object as a metrics line; `metric` is the event of one that names none.
    pub fn from_value(data: Value) -> Self {
        let event = data["event"].as_str().unwrap_or("metric").to_string();
        let step = data.get("step").or_else(|| data.get("iteration")).and_then(Value::as_i64);
        Self { event, step, data }
    }

    /// The run's summary line.
    pub fn is_done(&self) -> bool {
        self.event == "done"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn keys(e: &MetricEvent) -> Vec<String> {
        let v = serde_json::to_value(e).unwrap();
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    }

    #[test]
    fn stored_lines_read_back_as_events_with_their_figures() {
        let line = json!({"event": "step", "step": 4, "epoch": 1, "loss": 0.5, "accuracy": 0.75, "lr": 0.001, "grad_norm": 1.5,
                          "tokens_per_s": 900.0, "examples": 16, "elapsed_s": 2.0, "rss_mb": null});
        let e = MetricEvent::from_value(&line).unwrap();
        assert_eq!((e.name(), e.position()), ("step", Some(4)));
        let names: Vec<&str> = e.figures().iter().map(|f| f.0).collect();
        assert_eq!(names, ["loss", "accuracy", "lr", "grad_norm", "tokens_per_s", "elapsed_s"], "counters and unknown figures left out");
        let eval = MetricEvent::from_value(&json!({"event": "eval", "step": 4, "epoch": 1, "loss": 0.7, "accuracy": 0.6})).unwrap();
        assert_eq!(eval.figures(), vec![("loss", 0.7), ("accuracy", 0.6)]);
        assert!(MetricEvent::from_value(&json!({"event": "done", "step": 4})).unwrap().position().is_none());
        assert!(MetricEvent::from_value(&json!({"event": "something-new", "x": 1})).is_none());
        assert!(MetricEvent::from_value(&json!({"event": "novel", "step": 4, "epoch": 1, "loss": 0.7})).is_none(), "an eval's keys, another event");
    }

    #[test]
    fn each_event_writes_the_keys_the_platform_reads() {
        let step = MetricEvent::Step(Step {
            step: 3,
            epoch: 0,
            loss: 0.5,
            accuracy: 0.75,
            lr: 1e-3,
            grad_norm: 1.0,
            tokens_per_s: 10.0,
            examples: 4,
            elapsed_s: 1.0,
            rss_mb: None,
            total_steps: Some(9),
        });
        assert_eq!(
            keys(&step),
            ["accuracy", "elapsed_s", "epoch", "event", "examples", "grad_norm", "loss", "lr", "rss_mb", "step", "tokens_per_s", "total_steps"]
        );
        let old = r#"{"event": "step", "step": 1, "epoch": 0, "loss": 1, "accuracy": 0, "lr": 1, "grad_norm": 1, "tokens_per_s": 1, "examples": 1, "elapsed_s": 1, "rss_mb": null}"#;
        assert!(matches!(serde_json::from_str::<MetricEvent>(old).unwrap(), MetricEvent::Step(Step { total_steps: None, .. })), "an older trainer's line");
        let report = Report { loss: 0.4, accuracy: Some(0.9), margin: Some(1.0), rankings: Some(2.0), pairs: Some(3.0), ..Report::default() };
        let eval = Eval { step: 3, epoch: 1, report };
        assert_eq!(keys(&MetricEvent::Eval(eval.clone())), ["accuracy", "epoch", "event", "loss", "margin", "pairs", "rankings", "step"]);
        let done = MetricEvent::Done(Done { step: Some(3), validation: Some(eval.clone()), ..Done::default() });
        let v = serde_json::to_value(&done).unwrap();
        assert_eq!((v["event"].as_str(), v["validation"]["event"].as_str(), v["validation"]["accuracy"].as_f64()), (Some("done"), Some("eval"), Some(0.9)));
        let line = MetricLine::parse(&done.to_line()).unwrap();
        assert!(line.is_done() && line.step == Some(3));
        assert_eq!(serde_json::from_value::<MetricEvent>(line.data).unwrap(), done);
        assert_eq!(serde_json::from_str::<MetricEvent>(&MetricEvent::Eval(eval.clone()).to_line()).unwrap(), MetricEvent::Eval(eval));
        let generated = Generated { prompts: 2, items_added: 2, responses_added: 4, skipped: 0, policy: "sft-1234abcd".into() };
        let done = MetricEvent::Done(Done { generated: Some(generated), ..Done::default() });
        assert_eq!(keys(&done), ["event", "items_added", "policy", "prompts", "responses_added", "skipped"]);
    }

    #[test]
    fn a_line_without_an_event_is_a_log_line_and_ppo_counts_iterations() {
        assert_eq!(MetricLine::parse("loading the model"), None);
        assert_eq!(MetricLine::parse(r#"{"loss": 1}"#), None);
        let l = MetricLine::parse(r#"{"event": "iteration", "iteration": 4, "kl": 0.1}"#).unwrap();
        assert_eq!((l.event.as_str(), l.step), ("iteration", Some(4)));
        assert_eq!(MetricLine::from_value(json!({"event": 3})).event, "metric");
    }
}
