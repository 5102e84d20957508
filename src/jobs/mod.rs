//! Training runs: what a run is and how its configuration maps onto `rewardlab-train`'s flags
//! (this module), when schedules fire (`schedule`), how workers execute runs (`worker`), and the
//! model leaderboard (`leaderboard`).

pub mod leaderboard;
pub mod schedule;
pub mod worker;

use serde_json::{Map, Value};

/// The kinds of run, one per trainer subcommand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunKind {
    Rm,
    Sft,
    Ppo,
    Dpo,
    Generate,
}

pub const RUN_KINDS: [RunKind; 5] = [RunKind::Rm, RunKind::Sft, RunKind::Ppo, RunKind::Dpo, RunKind::Generate];

impl std::str::FromStr for RunKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "rm" => Ok(Self::Rm),
            "sft" => Ok(Self::Sft),
            "ppo" => Ok(Self::Ppo),
            "dpo" => Ok(Self::Dpo),
            "generate" => Ok(Self::Generate),
            _ => Err(format!("kind must be rm, sft, ppo, dpo or generate, not {s:?}")),
        }
    }
}

impl RunKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rm => "rm",
            Self::Sft => "sft",
            Self::Ppo => "ppo",
            Self::Dpo => "dpo",
            Self::Generate => "generate",
        }
    }

    /// Whether the run starts from a policy (an earlier run's model or a directory).
    pub fn needs_policy(self) -> bool {
        matches!(self, Self::Ppo | Self::Dpo | Self::Generate)
    }

    /// Whether the run's model is a policy (a language model) rather than a reward model.
    pub fn makes_policy(self) -> bool {
        matches!(self, Self::Sft | Self::Ppo | Self::Dpo)
    }

    /// The parameters a run of this kind accepts, with their defaults.
    pub fn params(self) -> Vec<&'static Param> {
        let pick = |names: &[&str]| -> Vec<&'static Param> { PARAMS.iter().filter(|p| names.contains(&p.name)).collect() };
        const TRAIN: [&str; 14] = [
            "epochs", "lr", "batch_size", "grad_accum", "max_tokens", "schedule", "warmup_ratio", "max_grad_norm", "weight_decay", "seed", "val_fraction",
            "save_every", "keep_checkpoints", "eval_every",
        ];
        const MODEL: [&str; 6] = ["init", "vocab_size", "n_embd", "n_layer", "n_head", "max_len"];
        match self {
            Self::Rm => {
                let mut v = pick(&MODEL);
                v.extend(pick(&TRAIN));
                v.extend(pick(&["margin_scale", "center_rewards"]));
                v
            }
            Self::Sft => {
                let mut v = pick(&MODEL);
                v.extend(pick(&TRAIN));
                v
            }
            Self::Dpo => {
                let mut v = pick(&["beta", "max_len"]);
                v.extend(pick(&TRAIN));
                v
            }
            Self::Ppo => PPO.iter().collect(),
            Self::Generate => GENERATE.iter().collect(),
        }
    }
}

/// The run statuses.
pub const STATUSES: [&str; 5] = ["queued", "running", "succeeded", "failed", "cancelled"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamType {
    Int,
    Float,
    Text,
    /// A model directory inside the model store (relative, no `..`).
    StorePath,
}

/// One hyperparameter: its name in the run's configuration (the trainer's flag with `_` for
/// `-`), its default (`null`: unset), and whether it goes to the trainer.
#[derive(Debug)]
pub struct Param {
    pub name: &'static str,
    pub ty: ParamType,
    pub default: DefaultValue,
    pub help: &'static str,
    /// False for settings the worker itself uses (they are not trainer flags).
    pub flag: bool,
}

#[derive(Debug, Clone, Copy)]
pub enum DefaultValue {
    None,
    Int(i64),
    Float(f64),
    Text(&'static str),
}

impl DefaultValue {
    pub fn to_json(self) -> Value {
        match self {
            Self::None => Value::Null,
            Self::Int(i) => i.into(),
            Self::Float(f) => f.into(),
            Self::Text(t) => t.into(),
        }
    }
}

macro_rules! p {
    ($name:literal, $ty:ident, $d:expr, $help:literal) => {
        Param { name: $name, ty: ParamType::$ty, default: $d, help: $help, flag: true }
    };
    ($name:literal, $ty:ident, $d:expr, $help:literal, worker) => {
        Param { name: $name, ty: ParamType::$ty, default: $d, help: $help, flag: false }
    };
}

use DefaultValue::{Float as F, Int as I, None as N, Text as T};

/// rm / sft / dpo: the shared training loop and the small model built from scratch. The
/// defaults are `rewardlab-train`'s (a test checks every name is one of its flags).
static PARAMS: &[Param] = &[
    p!("init", StorePath, N, "start from a Hugging Face GPT-2 directory in the model store"),
    p!("vocab_size", Int, I(4096), "tokens in the BPE trained on the data (without init)"),
    p!("n_embd", Int, I(128), "width of the model built from scratch"),
    p!("n_layer", Int, I(2), "layers of the model built from scratch"),
    p!("n_head", Int, I(4), "attention heads"),
    p!("max_len", Int, I(256), "longest sequence in tokens"),
    p!("epochs", Int, I(1), "passes over the training split"),
    p!("lr", Float, N, "peak learning rate (1e-3 from scratch, 1e-5 with init)"),
    p!("batch_size", Int, I(16), "examples per batch"),
    p!("grad_accum", Int, I(1), "batches per optimizer step"),
    p!("max_tokens", Int, I(8192), "most padded tokens in one forward pass"),
    p!("schedule", Text, T("cosine"), "learning-rate schedule: cosine, linear or constant"),
    p!("warmup_ratio", Float, F(0.05), "share of steps warming up"),
    p!("max_grad_norm", Float, F(1.0), "global gradient-norm clip (0: none)"),
    p!("weight_decay", Float, F(0.0), "AdamW weight decay"),
    p!("seed", Int, I(42), "seeds weights, split and order"),
    p!("val_fraction", Float, F(0.2), "share of prompts held out for validation"),
    p!("save_every", Int, I(0), "checkpoint every N steps (0: each epoch)"),
    p!("keep_checkpoints", Int, I(2), "checkpoints kept"),
    p!("eval_every", Int, I(0), "validate every N steps (0: each epoch)"),
    p!("margin_scale", Float, F(1.0), "weight of the preference margin in the loss"),
    p!("center_rewards", Float, F(0.0), "coefficient pulling rewards towards zero"),
    p!("beta", Float, F(0.1), "the DPO temperature"),
];

static PPO: &[Param] = &[
    p!("iterations", Int, I(20), "rollout batches"),
    p!("batch_size", Int, I(16), "prompts per iteration"),
    p!("mini_batch_size", Int, I(4), "rollouts per optimizer step"),
    p!("ppo_epochs", Int, I(4), "optimisation epochs per rollout batch"),
    p!("kl_coef", Float, F(0.05), "β of the per-token KL penalty"),
    p!("target_kl", Float, N, "adapt β towards this KL per sequence"),
    p!("kl_horizon", Float, F(10000.0), "horizon of the adaptive β"),
    p!("max_new_tokens", Int, I(53), "longest response"),
    p!("temperature", Float, F(0.7), "sampling temperature of rollouts"),
    p!("missing_eos_penalty", Float, N, "subtracted when a response never ends"),
    p!("cliprange", Float, F(0.2), "policy ratio clip"),
    p!("cliprange_value", Float, F(0.2), "value clip"),
    p!("vf_coef", Float, F(0.1), "value loss weight"),
    p!("gamma", Float, F(1.0), "discount"),
    p!("lam", Float, F(0.95), "GAE λ"),
    p!("lr", Float, F(3e-6), "learning rate"),
    p!("max_grad_norm", Float, F(1.0), "global gradient-norm clip"),
    p!("seed", Int, I(0), "seeds sampling and order"),
    p!("save_every", Int, I(5), "checkpoint every N iterations"),
];

static GENERATE: &[Param] = &[
    p!("samples", Int, I(1), "new responses per prompt"),
    p!("temperature", Float, F(0.7), "softmax temperature (0: greedy)"),
    p!("top_p", Float, F(1.0), "nucleus sampling mass"),
    p!("max_new_tokens", Int, I(64), "longest response"),
    p!("seed", Int, I(0), "seeds sampling"),
    p!("batch_size", Int, I(16), "sequences generated together"),
    p!("max_prompts", Int, I(100), "distinct prompts sampled (the earliest items first)", worker),
    p!("compare_with", Int, I(1), "earlier responses on the same prompt shown beside the new ones", worker),
];

/// The full configuration of a run: every parameter of its kind, the given value or the
/// default. Unknown names and values of the wrong type are errors naming the field.
pub fn resolve_config(kind: RunKind, given: &Value) -> Result<Map<String, Value>, String> {
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
        let v = if v.is_null() { p.default.to_json() } else { check(p, v)? };
        out.insert(p.name.to_string(), v);
    }
    Ok(out)
}

fn check(p: &Param, v: Value) -> Result<Value, String> {
    let bad = |what: &str| Err(format!("config.{}: expected {what}, got {v}", p.name));
    match p.ty {
        ParamType::Int => match v.as_i64() {
            Some(i) if i >= 0 => Ok(i.into()),
            _ => bad("a whole number ≥ 0"),
        },
        ParamType::Float => match v.as_f64() {
            Some(f) if f.is_finite() => Ok(f.into()),
            _ => bad("a number"),
        },
        ParamType::Text => match v.as_str() {
            Some(s) if !s.is_empty() && s.len() < 100 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') => Ok(v),
            _ => bad("a word"),
        },
        ParamType::StorePath => match v.as_str() {
            Some(s) if store_relative(s).is_some() => Ok(v),
            _ => bad("a directory relative to the model store (no `..`, not absolute)"),
        },
    }
}

/// A path inside the model store, or None when it could leave it.
pub fn store_relative(s: &str) -> Option<std::path::PathBuf> {
    let path = std::path::Path::new(s);
    let ok = !s.is_empty() && path.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    ok.then(|| path.to_path_buf())
}

/// The trainer flags of a resolved configuration (unset values and worker settings left out).
pub fn trainer_flags(kind: RunKind, config: &Map<String, Value>, store: &std::path::Path) -> Vec<String> {
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
pub fn check_for_project(kind: RunKind, config: &Map<String, Value>, project: crate::domain::TaskKind) -> Result<(), String> {
    use crate::domain::TaskKind;
    if kind != RunKind::Generate {
        return Ok(());
    }
    let int = |name: &str| config.get(name).and_then(Value::as_i64).unwrap_or(1);
    let shown = int("samples") + int("compare_with");
    match project {
        TaskKind::Demonstration => Err("kind: generate runs feed ranking and pairwise projects (a demonstration project's labellers write the responses)".into()),
        TaskKind::Pairwise if shown != 2 => Err(format!("config: a pairwise project shows exactly 2 responses, so samples + compare_with must be 2, not {shown}")),
        TaskKind::Ranking if !(2..=9).contains(&shown) => Err(format!("config: a ranking project shows 2 to 9 responses, so samples + compare_with must be 2 to 9, not {shown}")),
        _ => Ok(()),
    }
}

/// A worker setting from a resolved configuration.
pub fn config_int(config: &Value, name: &str, default: i64) -> i64 {
    config.get(name).and_then(Value::as_i64).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;
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
        assert!(resolve_config(RunKind::Sft, &json!({"init": "hub/gpt2"})).is_ok());
        assert!(resolve_config(RunKind::Sft, &json!({"schedule": "x; rm -rf /"})).is_err());
    }

    #[test]
    fn flags_leave_out_unset_values_and_worker_settings() {
        let c = resolve_config(RunKind::Generate, &json!({"samples": 2})).unwrap();
        let flags = trainer_flags(RunKind::Generate, &c, std::path::Path::new("/s"));
        assert!(flags.windows(2).any(|w| w == ["--samples", "2"]), "{flags:?}");
        assert!(!flags.iter().any(|f| f == "--max-prompts" || f == "--compare-with"));
        let c = resolve_config(RunKind::Sft, &json!({"init": "hub/gpt2"})).unwrap();
        let flags = trainer_flags(RunKind::Sft, &c, std::path::Path::new("/s"));
        assert!(flags.windows(2).any(|w| w == ["--init", "/s/hub/gpt2"]));
        assert!(!flags.iter().any(|f| f == "--lr"));
    }
}
