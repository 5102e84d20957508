//! The parameters each kind of run takes: their ranges, their defaults, and how a resolved
//! configuration maps onto `rewardlab-train`'s flags.

use serde_json::{Map, Value};

use super::launch::{Hosts, Launch};
use super::{store_area, RunKind};

/// A run's full configuration: every parameter of its kind, given or defaulted.
pub type Config = Map<String, Value>;

impl RunKind {
    /// The parameters a run of this kind accepts, with their defaults.
    pub fn params(self) -> Vec<&'static Param> {
        static TABLES: std::sync::OnceLock<Vec<(RunKind, Vec<Param>)>> = std::sync::OnceLock::new();
        let tables = TABLES.get_or_init(|| RunKind::ALL.iter().map(|k| (*k, k.specs().into_iter().map(|s| s.param(*k)).collect())).collect());
        tables.iter().find(|(k, _)| *k == self).map(|(_, ps)| ps.iter().collect()).unwrap_or_default()
    }

    /// The rows of the tables a run of this kind takes.
    fn specs(self) -> Vec<&'static Spec> {
        let pick = |names: &[&str]| -> Vec<&'static Spec> { PARAMS.iter().filter(|p| names.contains(&p.name)).collect() };
        const TRAIN: [&str; 14] = [
            "epochs",
            "lr",
            "batch_size",
            "grad_accum",
            "max_tokens",
            "schedule",
            "warmup_ratio",
            "max_grad_norm",
            "weight_decay",
            "seed",
            "val_fraction",
            "save_every",
            "keep_checkpoints",
            "eval_every",
        ];
        const MODEL: [&str; 6] = ["init", "vocab_size", "n_embd", "n_layer", "n_head", "max_len"];
        let launch = || LAUNCH.iter().collect::<Vec<_>>();
        let merge = || FORGETTING.iter().collect::<Vec<_>>();
        match self {
            Self::Rm => [pick(&MODEL), pick(&TRAIN), pick(&["margin_scale", "center_rewards", "ensemble"]), merge(), launch()].concat(),
            Self::Sft => [pick(&MODEL), pick(&TRAIN), merge(), launch()].concat(),
            Self::Dpo => [pick(&["beta", "max_len"]), pick(&TRAIN), merge(), launch()].concat(),
            Self::Ppo => [PPO.iter().collect(), merge(), launch()].concat(),
            Self::Generate => GENERATE.iter().collect(),
            Self::Spotcheck => SPOTCHECK.iter().collect(),
        }
    }
}

/// What a parameter accepts: its type and its range.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ParamType {
    /// A whole number in `min..=max`.
    Int(i64, i64),
    /// A number in `[min, max]`.
    Float(f64, f64),
    /// A number in `(0, max]`: a rate or scale that must be positive.
    Positive(f64),
    /// One of these words.
    Word(&'static [&'static str]),
    /// A model directory in the model store: `shared/…` (curated by an admin) or
    /// `runs/<id>/…` of a run of the same project (see [`store_area`]).
    StorePath,
    /// A host list for mpirun's `--host` (see [`super::launch::Hosts`]).
    Hosts,
    /// A merge sweep's α: 2 to 11 distinct numbers from 0 to 1, comma-separated (see [`alphas`]).
    Alphas,
}

/// The α of a merge sweep: 2 to 11 distinct numbers from 0 to 1, given as comma-separated text
/// or a JSON list; answered as canonical text (`0,0.25,0.5`).
pub fn alphas(v: &Value) -> Option<String> {
    let values: Vec<f64> = match v {
        Value::String(s) => s.split(',').map(|a| a.trim().parse::<f64>().ok()).collect::<Option<_>>()?,
        Value::Array(xs) => xs.iter().map(Value::as_f64).collect::<Option<_>>()?,
        _ => return None,
    };
    let ok =
        (2..=11).contains(&values.len()) && values.iter().all(|a| (0.0..=1.0).contains(a)) && values.iter().enumerate().all(|(i, a)| !values[..i].contains(a));
    ok.then(|| values.iter().map(f64::to_string).collect::<Vec<_>>().join(","))
}

impl ParamType {
    /// The range as a sentence: "a whole number from 1 to 10000".
    pub fn describe(self) -> String {
        match self {
            Self::Int(min, max) => format!("a whole number from {min} to {max}"),
            Self::Float(min, max) => format!("a number from {min} to {max}"),
            Self::Positive(max) => format!("a number above 0, at most {max}"),
            Self::Word(words) => format!("one of {}", words.join(", ")),
            Self::StorePath => "a model directory in the store: shared/… or runs/<id of one of this project's runs>/…".into(),
            Self::Hosts => "a host list such as node1:2,node2:2 (host names, each with its slots)".into(),
            Self::Alphas => "2 to 11 distinct comma-separated α from 0 to 1, such as 0,0.25,0.5,0.75,1".into(),
        }
    }

    /// A default as clap shows it, as the JSON value of this type.
    fn parse_default(self, text: &str) -> Value {
        let parsed = match self {
            Self::Int(..) => text.parse::<i64>().ok().map(Value::from),
            Self::Float(..) | Self::Positive(_) => text.parse::<f64>().ok().map(Value::from),
            Self::Word(_) | Self::StorePath | Self::Hosts | Self::Alphas => Some(Value::from(text)),
        };
        parsed.unwrap_or_else(|| panic!("the trainer's default {text:?} is not {}", self.describe()))
    }

    /// The value if it is in range.
    fn accept(self, v: &Value) -> Option<Value> {
        match self {
            Self::Int(min, max) => v.as_i64().filter(|i| (min..=max).contains(i)).map(Value::from),
            Self::Float(min, max) => v.as_f64().filter(|f| (min..=max).contains(f)).map(Value::from),
            Self::Positive(max) => v.as_f64().filter(|f| *f > 0.0 && *f <= max).map(Value::from),
            Self::Word(words) => v.as_str().filter(|s| words.contains(s)).map(Value::from),
            Self::StorePath => v.as_str().filter(|s| store_area(s).is_some()).map(Value::from),
            Self::Hosts => v.as_str().and_then(|s| Hosts::parse(s).ok()).map(|h| Value::from(h.as_arg())),
            Self::Alphas => alphas(v).map(Value::from),
        }
    }
}

/// One hyperparameter: its name in the run's configuration (the trainer's flag with `_` for
/// `-`), its default (`null`: unset), and whether it goes to the trainer.
#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub ty: ParamType,
    /// The trainer's own default for a flag (read from `rewardlab-protocol`), the worker's for
    /// a worker setting.
    pub default: Value,
    pub help: &'static str,
    /// False for settings the worker itself uses (they are not trainer flags).
    pub flag: bool,
}

/// A row of the tables below: the platform's side of a parameter (its range and help); the
/// default of a flag is the trainer's, a worker setting's is given here.
struct Spec {
    name: &'static str,
    ty: ParamType,
    help: &'static str,
    source: Source,
}

/// Who reads a parameter: the trainer (a flag, with the trainer's default), or the worker
/// (with this default; none: unset).
enum Source {
    Trainer,
    Worker(Option<i64>),
}

macro_rules! p {
    ($name:literal, $ty:ident $(($($r:expr),*))?, $help:literal) => {
        Spec { name: $name, ty: ParamType::$ty $(($($r),*))?, help: $help, source: Source::Trainer }
    };
    ($name:literal, $ty:ident $(($($r:expr),*))?, $help:literal, worker($d:expr)) => {
        Spec { name: $name, ty: ParamType::$ty $(($($r),*))?, help: $help, source: Source::Worker($d) }
    };
}

impl Spec {
    /// The parameter for runs of `kind`, with the default of `rewardlab-train <kind>`'s flag.
    fn param(&self, kind: RunKind) -> Param {
        let default = match self.source {
            Source::Worker(d) => d.map_or(Value::Null, Value::from),
            Source::Trainer => rewardlab_protocol::default_of(kind.trainer_command(), &self.flag()).map_or(Value::Null, |text| self.ty.parse_default(&text)),
        };
        Param { name: self.name, ty: self.ty, default, help: self.help, flag: matches!(self.source, Source::Trainer) }
    }

    fn flag(&self) -> String {
        self.name.replace('_', "-")
    }
}

/// Seeds: what fits the trainer's `u64` and every JSON reader.
const SEED: i64 = u32::MAX as i64;

/// rm / sft / dpo: the shared training loop and the small model built from scratch (a test
/// checks every name is a flag of each trainer command it is offered for).
static PARAMS: &[Spec] = &[
    p!("init", StorePath, "start from a Hugging Face GPT-2 directory in the model store"),
    p!("vocab_size", Int(260, 262_144), "tokens in the BPE trained on the data (without init)"),
    p!("n_embd", Int(1, 8192), "width of the model built from scratch"),
    p!("n_layer", Int(1, 128), "layers of the model built from scratch"),
    p!("n_head", Int(1, 128), "attention heads"),
    p!("max_len", Int(2, 32_768), "longest sequence in tokens"),
    p!("epochs", Int(1, 10_000), "passes over the training split"),
    p!("lr", Positive(1.0), "peak learning rate (1e-3 for a model trained from scratch here, 1e-5 for a pretrained one)"),
    p!("batch_size", Int(1, 4096), "examples per batch"),
    p!("grad_accum", Int(1, 1024), "batches per optimizer step"),
    p!("max_tokens", Int(1, 16_777_216), "most padded tokens in one forward pass"),
    p!("schedule", Word(&["cosine", "linear", "constant"]), "learning-rate schedule: cosine, linear or constant"),
    p!("warmup_ratio", Float(0.0, 1.0), "share of steps warming up"),
    p!("max_grad_norm", Float(0.0, 1000.0), "global gradient-norm clip (0: none)"),
    p!("weight_decay", Float(0.0, 1.0), "AdamW weight decay"),
    p!("seed", Int(0, SEED), "seeds weights, split and order"),
    p!("val_fraction", Float(0.0, 0.9), "share of prompts held out for validation"),
    p!("save_every", Int(0, 1_000_000), "checkpoint every N steps (0: each epoch)"),
    p!("keep_checkpoints", Int(1, 100), "checkpoints kept"),
    p!("eval_every", Int(0, 1_000_000), "validate every N steps (0: each epoch)"),
    p!("margin_scale", Float(0.0, 100.0), "weight of the preference margin in the loss"),
    p!("center_rewards", Float(0.0, 100.0), "coefficient pulling rewards towards zero"),
    p!("beta", Positive(100.0), "the DPO temperature"),
    p!("ensemble", Int(1, 32), "reward models trained on bootstrap resamples; scores are their mean"),
];

static PPO: &[Spec] = &[
    p!("iterations", Int(1, 100_000), "rollout batches"),
    p!("batch_size", Int(1, 4096), "prompts per iteration"),
    p!("mini_batch_size", Int(1, 4096), "rollouts per optimizer step"),
    p!("ppo_epochs", Int(1, 100), "optimisation epochs per rollout batch"),
    p!("kl_coef", Float(0.0, 100.0), "β of the per-token KL penalty"),
    p!("target_kl", Positive(1000.0), "adapt β towards this KL per sequence"),
    p!("kl_horizon", Positive(1e9), "horizon of the adaptive β"),
    p!("max_new_tokens", Int(1, 4096), "longest response"),
    p!("temperature", Positive(10.0), "sampling temperature of rollouts"),
    p!("missing_eos_penalty", Float(0.0, 1000.0), "subtracted when a response never ends"),
    p!("cliprange", Positive(10.0), "policy ratio clip"),
    p!("cliprange_value", Positive(1000.0), "value clip"),
    p!("vf_coef", Float(0.0, 100.0), "value loss weight"),
    p!("gamma", Float(0.0, 1.0), "discount"),
    p!("lam", Float(0.0, 1.0), "GAE λ"),
    p!("lr", Positive(1.0), "learning rate (5e-4 for a policy trained from scratch here, 3e-6 for a pretrained one)"),
    p!("max_grad_norm", Float(0.0, 1000.0), "global gradient-norm clip"),
    p!("seed", Int(0, SEED), "seeds sampling and order"),
    p!("save_every", Int(0, 1_000_000), "checkpoint every N iterations"),
    p!("kl_grid", Positive(100.0), "keep the policy each time √KL to the start first passes a multiple of this (kl-grid/ in the run's output)"),
    p!("reward_ensemble", Word(&["mean", "min", "mean-minus-std"]), "how an ensemble reward model's members combine: mean, min or mean-minus-std"),
];

/// Retraining without forgetting (rm, sft, dpo, ppo): weight interpolation with an earlier model
/// (Lin et al. 2024).
static FORGETTING: &[Spec] = &[
    p!("merge_with", StorePath, "after training, interpolate the weights with this earlier model (same architecture and tokenizer)"),
    p!("merge_alpha", Float(0.0, 1.0), "the earlier model's share A: θ = (1 − A)·θ_new + A·θ_old (needs merge_with)"),
    p!(
        "replay_share",
        Float(0.0, 0.9),
        "train on the rows new since the project's earlier snapshots plus this share of old rows drawn from them (unset: the whole export)",
        worker(None)
    ),
    p!(
        "merge_sweep",
        Alphas,
        "after training, measure the merge with merge_with at each α on the active regression set and keep the best (highest accuracy; ties: the smallest α)",
        worker(None)
    ),
];

static GENERATE: &[Spec] = &[
    p!("samples", Int(1, 8), "new responses per prompt"),
    p!("temperature", Float(0.0, 10.0), "softmax temperature (0: greedy)"),
    p!("top_p", Positive(1.0), "nucleus sampling mass"),
    p!("max_new_tokens", Int(1, 4096), "longest response"),
    p!("seed", Int(0, SEED), "seeds sampling"),
    p!("batch_size", Int(1, 4096), "sequences generated together"),
    p!("max_prompts", Int(1, 100_000), "distinct prompts sampled (the earliest items first)", worker(Some(100))),
    p!("compare_with", Int(0, 8), "earlier responses on the same prompt shown beside the new ones", worker(Some(1))),
];

/// A spot check of a PPO run (issue 15): each √KL-grid checkpoint and the starting policy
/// sampled on the same held-out prompts with `generate`'s flags, and the gate a schedule's next
/// step waits on.
static SPOTCHECK: &[Spec] = &[
    p!("prompts", Int(1, 10_000), "held-out prompts sampled: the project's prompts the PPO run did not train on, earliest first", worker(Some(20))),
    p!("samples", Int(1, 8), "samples per prompt from each checkpoint and from the start: one blind pair each"),
    p!("temperature", Float(0.0, 10.0), "softmax temperature (0: greedy)"),
    p!("top_p", Positive(1.0), "nucleus sampling mass"),
    p!("max_new_tokens", Int(1, 4096), "longest response"),
    p!("seed", Int(0, SEED), "seeds sampling (the same for every checkpoint and the start)"),
    p!("batch_size", Int(1, 4096), "sequences generated together"),
    p!(
        "gate_win_rate",
        Float(0.0, 1.0),
        "hold the runs chained after this one until people prefer the last checkpoint to the start at least this often (unset: no gate)",
        worker(None)
    ),
    p!("gate_min_judgements", Int(1, 1_000_000), "judgements of the last checkpoint's pairs the gate waits for (with gate_win_rate)", worker(None)),
];

/// Data-parallel training under mpirun (rm, sft, dpo, ppo): a worker whose trainer was built
/// with `mpi` and that finds mpirun takes such runs.
static LAUNCH: &[Spec] = &[
    p!("processes", Int(1, 4096), "training processes (ranks) under mpirun; 1: no mpirun", worker(Some(1))),
    p!("hosts", Hosts, "mpirun's host list, e.g. node1:2,node2:2 (blank: the worker's machine)", worker(None)),
];

/// The full configuration of a run: every parameter of its kind, the given value or the
/// default. Unknown names and values of the wrong type are errors naming the field.
pub fn resolve_config(kind: RunKind, given: &Value) -> Result<Config, String> {
    let given = match given {
        Value::Null => Map::new(),
        Value::Object(m) => m.clone(),
        _ => return Err("config: expected an object of hyperparameters".into()),
    };
    let params = kind.params();
    for key in given.keys() {
        if !params.iter().any(|p| p.name == key) {
            let names: Vec<&str> = params.iter().map(|p| p.name).collect();
            return Err(format!("config.{key}: not a parameter of {} runs (they take {})", kind.as_str(), names.join(", ")));
        }
    }
    let mut out = Map::new();
    for p in params {
        let v = given.get(p.name).cloned().unwrap_or(Value::Null);
        let v = if v.is_null() { p.default.clone() } else { check(p, v)? };
        out.insert(p.name.to_string(), v);
    }
    Launch::of(&out)?;
    let set = |name: &str| out.get(name).is_some_and(|v| !v.is_null());
    match (set("merge_with"), set("merge_alpha"), set("merge_sweep")) {
        (_, true, true) => return Err("config.merge_sweep: not with merge_alpha (the sweep chooses α; leave merge_alpha unset)".into()),
        (false, _, true) => return Err("config.merge_with: expected the earlier model to sweep against (merge_sweep is set)".into()),
        (true, false, false) => {
            return Err("config.merge_alpha: expected a number from 0 to 1 with merge_with (the earlier model's share), or merge_sweep".into())
        }
        (false, true, false) => return Err("config.merge_with: expected the model to merge with (merge_alpha is set)".into()),
        _ => {}
    }
    if set("merge_with") && out.get("ensemble").and_then(Value::as_i64).is_some_and(|n| n > 1) {
        return Err("config.merge_with: not with ensemble above 1 (only the first member would be merged); merge a single reward model".into());
    }
    match (set("gate_win_rate"), set("gate_min_judgements")) {
        (true, false) => return Err("config.gate_min_judgements: expected a whole number from 1 with gate_win_rate (the judgements the gate waits for)".into()),
        (false, true) => return Err("config.gate_win_rate: expected a number from 0 to 1 with gate_min_judgements (the win rate the gate needs)".into()),
        _ => {}
    }
    Ok(out)
}

fn check(p: &Param, v: Value) -> Result<Value, String> {
    if let (ParamType::Hosts, Value::String(s)) = (p.ty, &v) {
        return Hosts::parse(s).map(|h| Value::from(h.as_arg())).map_err(|e| format!("config.{}: expected {e}", p.name));
    }
    p.ty.accept(&v).ok_or_else(|| format!("config.{}: expected {}, got {v}", p.name, p.ty.describe()))
}

/// The trainer flags of a resolved configuration (unset values and worker settings left out).
pub fn trainer_flags(kind: RunKind, config: &Config, store: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for p in kind.params() {
        let Some(v) = config.get(p.name).filter(|v| !v.is_null()) else { continue };
        if !p.flag {
            continue;
        }
        out.push(format!("--{}", p.name.replace('_', "-")));
        out.push(match (p.ty, v) {
            (ParamType::StorePath, Value::String(s)) => store.join(s).display().to_string(),
            (_, Value::String(s)) => s.clone(),
            (_, other) => other.to_string(),
        });
    }
    out
}

/// Checks that a run of `kind` suits a project of `project` kind: generated items must have as
/// many responses as the project's tasks show.
pub fn check_for_project(kind: RunKind, config: &Config, project: crate::domain::TaskKind) -> Result<(), String> {
    use crate::domain::TaskKind;
    if kind == RunKind::Spotcheck && project == TaskKind::Demonstration {
        return Err("kind: spotcheck runs import pairs to compare, for ranking and pairwise projects".into());
    }
    if kind != RunKind::Generate {
        return Ok(());
    }
    let int = |name: &str| config.get(name).and_then(Value::as_i64).unwrap_or(1);
    let shown = int("samples") + int("compare_with");
    match project {
        TaskKind::Demonstration => {
            Err("kind: generate runs feed ranking and pairwise projects (a demonstration project's labellers write the responses)".into())
        }
        TaskKind::Pairwise if shown != 2 => {
            Err(format!("config: a pairwise project shows exactly 2 responses, so samples + compare_with must be 2, not {shown}"))
        }
        TaskKind::Ranking if !(2..=9).contains(&shown) => {
            Err(format!("config: a ranking project shows 2 to 9 responses, so samples + compare_with must be 2 to 9, not {shown}"))
        }
        _ => Ok(()),
    }
}

/// A worker setting from a resolved configuration.
pub fn config_int(config: &Config, name: &str, default: i64) -> i64 {
    config.get(name).and_then(Value::as_i64).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::runs::RUN_KINDS;
    use serde_json::json;

    #[test]
    fn a_config_gets_every_default_and_refuses_unknown_or_mistyped_fields() {
        let c = resolve_config(RunKind::Rm, &json!({"epochs": 3})).unwrap();
        assert_eq!(c["epochs"], 3);
        assert_eq!(c["n_embd"], 128);
        assert!(c["lr"].is_null());
        let e = resolve_config(RunKind::Rm, &json!({"epoch": 3})).unwrap_err();
        assert!(e.starts_with("config.epoch: not a parameter of rm runs"), "{e}");
        let e = resolve_config(RunKind::Ppo, &json!({"kl_coef": "a lot"})).unwrap_err();
        assert!(e.contains("config.kl_coef: expected a number"), "{e}");
        assert!(resolve_config(RunKind::Sft, &json!({"init": "../../etc"})).is_err());
        assert!(resolve_config(RunKind::Sft, &json!({"init": "/etc"})).is_err());
        assert!(resolve_config(RunKind::Sft, &json!({"init": "shared/gpt2"})).is_ok());
        assert!(resolve_config(RunKind::Sft, &json!({"init": "hub/gpt2"})).is_err(), "only shared/ and runs/<id>/");
        assert!(resolve_config(RunKind::Sft, &json!({"schedule": "x; rm -rf /"})).is_err());
        let e = resolve_config(RunKind::Dpo, &json!({"merge_with": "shared/gpt2"})).unwrap_err();
        assert!(e.starts_with("config.merge_alpha: expected a number from 0 to 1"), "{e}");
        let e = resolve_config(RunKind::Ppo, &json!({"merge_alpha": 0.5})).unwrap_err();
        assert!(e.starts_with("config.merge_with:"), "{e}");
        assert!(resolve_config(RunKind::Rm, &json!({"merge_with": "shared/gpt2", "merge_alpha": 1.5})).is_err());
        let c = resolve_config(RunKind::Ppo, &json!({"merge_with": "shared/sft", "merge_alpha": 0.3})).unwrap();
        let flags = trainer_flags(RunKind::Ppo, &c, std::path::Path::new("/s"));
        assert!(flags.windows(2).any(|w| w == ["--merge-with", "/s/shared/sft"]) && flags.windows(2).any(|w| w == ["--merge-alpha", "0.3"]), "{flags:?}");
        // A merge sweep: its α canonical, checked, and no trainer flag of its own.
        let c = resolve_config(RunKind::Dpo, &json!({"merge_with": "shared/sft", "merge_sweep": " 0, 0.25,1 "})).unwrap();
        assert_eq!(c["merge_sweep"], "0,0.25,1");
        assert!(!trainer_flags(RunKind::Dpo, &c, std::path::Path::new("/s")).iter().any(|f| f.contains("sweep")));
        assert_eq!(resolve_config(RunKind::Rm, &json!({"merge_with": "shared/x", "merge_sweep": [1, 0.5]})).unwrap()["merge_sweep"], "1,0.5");
        for bad in [json!("0.5"), json!("0,0"), json!("0,-0.1"), json!("0,x"), json!([]), json!(3), json!(vec![0.1; 12])] {
            let e = resolve_config(RunKind::Rm, &json!({"merge_with": "shared/x", "merge_sweep": bad})).unwrap_err();
            assert!(e.starts_with("config.merge_sweep: expected 2 to 11 distinct"), "{bad}: {e}");
        }
        let e = resolve_config(RunKind::Rm, &json!({"merge_with": "shared/x", "merge_alpha": 0.5, "merge_sweep": "0,1"})).unwrap_err();
        assert!(e.starts_with("config.merge_sweep: not with merge_alpha"), "{e}");
        assert!(resolve_config(RunKind::Ppo, &json!({"merge_sweep": "0,1"}))
            .unwrap_err()
            .starts_with("config.merge_with: expected the earlier model to sweep"));
        // A merge would reach an ensemble's first member only.
        for merge in [json!({"merge_alpha": 0.5}), json!({"merge_sweep": "0,1"})] {
            let mut given = json!({"merge_with": "shared/x", "ensemble": 3});
            given.as_object_mut().unwrap().extend(merge.as_object().unwrap().clone());
            let e = resolve_config(RunKind::Rm, &given).unwrap_err();
            assert!(e.starts_with("config.merge_with: not with ensemble above 1"), "{e}");
            given["ensemble"] = json!(1);
            assert!(resolve_config(RunKind::Rm, &given).is_ok());
        }
    }

    #[test]
    fn every_flag_is_one_of_its_trainer_command_s_and_takes_the_trainer_s_default() {
        for kind in RUN_KINDS {
            for p in kind.params().into_iter().filter(|p| p.flag) {
                assert!(rewardlab_protocol::has_flag(kind.trainer_command(), &p.name.replace('_', "-")), "{kind} has no --{}", p.name);
            }
        }
        let default = |kind: RunKind, name: &str| kind.params().into_iter().find(|p| p.name == name).unwrap().default.clone();
        assert_eq!(default(RunKind::Rm, "seed"), json!(42));
        assert_eq!(default(RunKind::Ppo, "seed"), json!(0));
        assert_eq!(default(RunKind::Sft, "warmup_ratio"), json!(0.05));
        assert_eq!(default(RunKind::Sft, "schedule"), json!("cosine"));
        assert_eq!(default(RunKind::Generate, "max_new_tokens"), json!(64));
        assert_eq!(default(RunKind::Generate, "max_prompts"), json!(100), "a worker setting");
        assert!(default(RunKind::Dpo, "replay_share").is_null(), "a worker setting, unset");
        let c = resolve_config(RunKind::Rm, &json!({"replay_share": 0.3})).unwrap();
        assert!(!trainer_flags(RunKind::Rm, &c, std::path::Path::new("/s")).contains(&"--replay-share".to_string()));
        assert!(resolve_config(RunKind::Rm, &json!({"replay_share": 0.95})).unwrap_err().starts_with("config.replay_share: expected a number from 0 to 0.9"));
        // The trainer picks these from the model it starts from.
        assert!(default(RunKind::Rm, "lr").is_null() && default(RunKind::Ppo, "lr").is_null() && default(RunKind::Ppo, "target_kl").is_null());
    }

    #[test]
    fn flags_leave_out_unset_values_and_worker_settings() {
        let c = resolve_config(RunKind::Generate, &json!({"samples": 2})).unwrap();
        let flags = trainer_flags(RunKind::Generate, &c, std::path::Path::new("/s"));
        assert!(flags.windows(2).any(|w| w == ["--samples", "2"]), "{flags:?}");
        assert!(!flags.iter().any(|f| f == "--max-prompts" || f == "--compare-with"));
        let c = resolve_config(RunKind::Sft, &json!({"init": "shared/gpt2"})).unwrap();
        let flags = trainer_flags(RunKind::Sft, &c, std::path::Path::new("/s"));
        assert!(flags.windows(2).any(|w| w == ["--init", "/s/shared/gpt2"]));
        assert!(!flags.iter().any(|f| f == "--lr"));
    }

    #[test]
    fn every_default_is_in_its_range_and_absurd_settings_are_refused_naming_the_range() {
        for kind in RUN_KINDS {
            for p in kind.params() {
                let d = p.default.clone();
                assert!(d.is_null() || p.ty.accept(&d).is_some(), "{} {}: default {d} outside {}", kind.as_str(), p.name, p.ty.describe());
            }
        }
        let refused = |kind: RunKind, config: Value| resolve_config(kind, &config).unwrap_err();
        assert_eq!(refused(RunKind::Rm, json!({"epochs": 1_000_000_000_000i64})), "config.epochs: expected a whole number from 1 to 10000, got 1000000000000");
        assert_eq!(refused(RunKind::Sft, json!({"lr": -1})), "config.lr: expected a number above 0, at most 1, got -1");
        assert!(refused(RunKind::Rm, json!({"batch_size": 0})).starts_with("config.batch_size: expected a whole number from 1 to"));
        assert!(refused(RunKind::Rm, json!({"n_head": 0})).starts_with("config.n_head: expected a whole number from 1 to"));
        assert_eq!(refused(RunKind::Dpo, json!({"val_fraction": 5})), "config.val_fraction: expected a number from 0 to 0.9, got 5");
        assert_eq!(refused(RunKind::Sft, json!({"warmup_ratio": -3})), "config.warmup_ratio: expected a number from 0 to 1, got -3");
        assert_eq!(refused(RunKind::Sft, json!({"schedule": "cosinus"})), "config.schedule: expected one of cosine, linear, constant, got \"cosinus\"");
        assert!(refused(RunKind::Ppo, json!({"temperature": 0})).starts_with("config.temperature: expected a number above 0"));
        assert!(refused(RunKind::Generate, json!({"top_p": 1.5})).starts_with("config.top_p"));
        assert!(resolve_config(RunKind::Generate, &json!({"temperature": 0})).is_ok(), "greedy sampling");
        assert_eq!(
            refused(RunKind::Ppo, json!({"reward_ensemble": "median"})),
            "config.reward_ensemble: expected one of mean, min, mean-minus-std, got \"median\""
        );
        assert!(refused(RunKind::Ppo, json!({"kl_grid": 0})).starts_with("config.kl_grid: expected a number above 0"));
        let c = resolve_config(RunKind::Ppo, &json!({"kl_grid": 0.5, "reward_ensemble": "mean-minus-std"})).unwrap();
        let flags = trainer_flags(RunKind::Ppo, &c, std::path::Path::new("/s"));
        assert!(flags.windows(2).any(|w| w == ["--kl-grid", "0.5"]) && flags.windows(2).any(|w| w == ["--reward-ensemble", "mean-minus-std"]), "{flags:?}");
        assert_eq!(resolve_config(RunKind::Ppo, &json!({})).unwrap()["reward_ensemble"], "mean", "the trainer's default");
        assert!(resolve_config(RunKind::Rm, &json!({"epochs": 10_000, "lr": 1, "val_fraction": 0, "warmup_ratio": 1})).is_ok(), "the bounds themselves");
    }

    #[test]
    fn a_spot_check_samples_with_generate_s_flags_and_its_gate_needs_both_settings() {
        let c = resolve_config(RunKind::Spotcheck, &json!({"prompts": 5, "samples": 2, "seed": 7})).unwrap();
        assert_eq!((c["prompts"].as_i64(), c["max_new_tokens"].as_i64()), (Some(5), Some(64)), "generate's default");
        let flags = trainer_flags(RunKind::Spotcheck, &c, std::path::Path::new("/s"));
        assert!(flags.windows(2).any(|w| w == ["--samples", "2"]) && !flags.iter().any(|f| f == "--prompts" || f.starts_with("--gate")), "{flags:?}");
        let e = resolve_config(RunKind::Spotcheck, &json!({"gate_win_rate": 0.5})).unwrap_err();
        assert!(e.starts_with("config.gate_min_judgements: expected"), "{e}");
        assert!(resolve_config(RunKind::Spotcheck, &json!({"gate_min_judgements": 5})).unwrap_err().starts_with("config.gate_win_rate:"));
        assert!(resolve_config(RunKind::Spotcheck, &json!({"gate_win_rate": 1.5, "gate_min_judgements": 5}))
            .unwrap_err()
            .starts_with("config.gate_win_rate: expected a number from 0 to 1"));
        assert!(resolve_config(RunKind::Spotcheck, &json!({"gate_win_rate": 0.5, "gate_min_judgements": 5})).is_ok());
        let c = resolve_config(RunKind::Spotcheck, &Value::Null).unwrap();
        assert!(check_for_project(RunKind::Spotcheck, &c, crate::domain::TaskKind::Demonstration).unwrap_err().starts_with("kind: spotcheck runs"));
        assert!(check_for_project(RunKind::Spotcheck, &c, crate::domain::TaskKind::Pairwise).is_ok());
    }
}
