//! The flags of `rewardlab-train`'s subcommands. The trainer parses them; the platform reads
//! their names and defaults (through clap's introspection, see [`crate::command`]) to build its
//! parameter tables, so the two cannot drift apart.

use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    Cosine,
    Linear,
    Constant,
}

/// The size of a model built from scratch (ignored with --init or --resume, whose config.json
/// decides).
#[derive(Debug, Clone, clap::Args)]
pub struct ModelOpts {
    /// Tokens in the byte-level BPE trained on the training texts.
    #[arg(long, default_value_t = 4096)]
    pub vocab_size: usize,
    #[arg(long, default_value_t = 128)]
    pub n_embd: usize,
    #[arg(long, default_value_t = 2)]
    pub n_layer: usize,
    #[arg(long, default_value_t = 4)]
    pub n_head: usize,
    /// Longest sequence in tokens; longer texts lose their beginning (the prompt's start).
    #[arg(long, default_value_t = 256)]
    pub max_len: usize,
    /// Use this model directory's tokenizer.json instead of training a new BPE (without --init),
    /// so a project's models share one tokenizer and a PPO value network can start from its
    /// reward model.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
}

/// Flags of the training loop, the same on every trainer.
#[derive(Debug, Clone, clap::Args)]
pub struct TrainOpts {
    /// Passes over the training split.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Peak learning rate [default: 1e-3 for a model trained from scratch here, 1e-5 from a
    /// pretrained one (--init, or dpo's --policy, whose config.json says which)].
    #[arg(long)]
    pub lr: Option<f64>,
    /// Examples (rankings, pairs or demonstrations) per batch.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Batches whose gradients are summed into one optimizer step.
    #[arg(long, default_value_t = 1)]
    pub grad_accum: usize,
    /// Most padded tokens in one forward pass; a larger batch is split into micro-batches and
    /// their gradients accumulated.
    #[arg(long, default_value_t = 8192)]
    pub max_tokens: usize,
    #[arg(long, value_enum, default_value = "cosine")]
    pub schedule: Schedule,
    /// Share of the optimizer steps spent warming the learning rate up.
    #[arg(long, default_value_t = 0.05)]
    pub warmup_ratio: f64,
    /// Clip gradients to this global L2 norm (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Seeds the initial weights, the train/validation split and the data order.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Share of prompts held out for validation.
    #[arg(long, default_value_t = 0.2)]
    pub val_fraction: f64,
    /// Write a checkpoint every N optimizer steps (0: only at the end of each epoch).
    #[arg(long, default_value_t = 0)]
    pub save_every: u64,
    /// Checkpoints kept (the oldest are removed).
    #[arg(long, default_value_t = 2)]
    pub keep_checkpoints: usize,
    /// Evaluate on the validation split every N steps (0: at the end of each epoch).
    #[arg(long, default_value_t = 0)]
    pub eval_every: u64,
    /// Metrics as JSON lines: a file (appended to), or `-` for stdout.
    #[arg(long)]
    pub metrics: Option<String>,
    /// Continue from a checkpoint directory, or the latest complete checkpoint of a run's --out.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Stop after this many optimizer steps without finishing (as if the run were killed).
    #[arg(long)]
    pub stop_after: Option<u64>,
    /// Where to train [default: cuda when built with it and present, else cpu].
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
}

/// Weight interpolation after training (Lin et al. 2024, averaging pre- and post-RLHF weights
/// against forgetting): the saved model becomes θ = (1 − A)·θ_new + A·θ_old.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct MergeOpts {
    /// After training, interpolate the new weights with this earlier model directory's (same
    /// architecture and tokenizer); the unmerged weights stay in OUT/unmerged.safetensors.
    #[arg(long, requires = "merge_alpha")]
    pub merge_with: Option<PathBuf>,
    /// The old model's share A in θ = (1 − A)·θ_new + A·θ_old (0: the new model, 1: the old).
    #[arg(long, requires = "merge_with", value_parser = parse_alpha)]
    pub merge_alpha: Option<f64>,
}

/// A weight in [0, 1].
pub fn parse_alpha(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(a) if (0.0..=1.0).contains(&a) => Ok(a),
        _ => Err(format!("expected a number from 0 to 1, got {text:?}")),
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct MergeSweepArgs {
    /// The newly trained model directory (θ_new; a reward model or a policy).
    #[arg(long)]
    pub new: PathBuf,
    /// The earlier model directory (θ_old): same architecture and tokenizer.
    #[arg(long)]
    pub old: PathBuf,
    /// Preference pairs or rankings to evaluate each merge on (a frozen regression set, or a
    /// validation split): a reward model's pairwise accuracy, a policy's share of pairs whose
    /// chosen response it gives the higher mean log-probability per token.
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// The α to try, comma-separated, each in [0, 1].
    #[arg(long, value_delimiter = ',', num_args = 1.., default_values_t = [0.0, 0.25, 0.5, 0.75, 1.0], value_parser = parse_alpha)]
    pub alphas: Vec<f64>,
    /// Write the best α's merged model here (a model directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Where to write the report (JSON; `-` for stdout).
    #[arg(long)]
    pub report: Option<String>,
    /// Most padded tokens in one forward pass.
    #[arg(long, default_value_t = 8192)]
    pub max_tokens: usize,
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct RmArgs {
    /// Training data: comparisons or preferences exports, TRL or HH-RLHF pair files (.jsonl,
    /// .jsonl.gz).
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// The output model directory (Hugging Face layout; checkpoints under checkpoints/).
    #[arg(long)]
    pub out: PathBuf,
    /// Start from a Hugging Face GPT-2 directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    pub init: Option<PathBuf>,
    /// TRL's per-pair margin from the data's `margin` field, times this (0: no margin).
    #[arg(long, default_value_t = 1.0)]
    pub margin_scale: f64,
    /// TRL's reward centring coefficient (TRL suggests 0.01).
    #[arg(long, default_value_t = 0.0)]
    pub center_rewards: f64,
    /// Texts whose mean reward is shifted to 0 after training (a file to score); default: the
    /// training split's responses.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Train an ensemble of this many members: member 0 on the training split into --out, member
    /// i on a bootstrap resample of its prompts with seed + i into OUT/ensemble/member-<i>, all
    /// with member 0's tokenizer and validation split. `score` then writes each response's mean
    /// and standard deviation over the members; the validation report adds the ensemble's
    /// accuracy and calibration (expected calibration error of P(chosen ≻ rejected)).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=32))]
    pub ensemble: u32,
    #[command(flatten)]
    pub merge: MergeOpts,
    #[command(flatten)]
    pub model: ModelOpts,
    #[command(flatten)]
    pub train: TrainOpts,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ScoreArgs {
    /// A reward model directory (ours or a Hugging Face GPT2ForSequenceClassification).
    #[arg(long)]
    pub model: PathBuf,
    /// Preference rows or item rows (.jsonl, .jsonl.gz).
    #[arg(long)]
    pub data: PathBuf,
    /// Where to write one JSON line per input line (`-` for stdout).
    #[arg(long)]
    pub out: String,
    /// Most padded tokens in one forward pass.
    #[arg(long, default_value_t = 8192)]
    pub max_tokens: usize,
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
}

#[derive(Debug, Clone, clap::Args)]
pub struct SftArgs {
    /// Demonstrations: `sft` exports / TRL prompt–completion rows, or preference rows (the
    /// chosen response is the demonstration).
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// The output model directory (a Hugging Face GPT2LMHeadModel).
    #[arg(long)]
    pub out: PathBuf,
    /// Start from a Hugging Face GPT-2 directory.
    #[arg(long)]
    pub init: Option<PathBuf>,
    #[command(flatten)]
    pub merge: MergeOpts,
    #[command(flatten)]
    pub model: ModelOpts,
    #[command(flatten)]
    pub train: TrainOpts,
}

#[derive(Debug, Clone, clap::Args)]
pub struct DpoArgs {
    /// The policy to optimise (a GPT2LMHeadModel directory, e.g. from `sft`); its initial
    /// weights are the frozen reference.
    #[arg(long)]
    pub policy: PathBuf,
    /// Preference data, as for `rm`.
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    #[arg(long)]
    pub out: PathBuf,
    /// The DPO temperature β.
    #[arg(long, default_value_t = 0.1)]
    pub beta: f64,
    /// Longest sequence in tokens (prompt start cut first).
    #[arg(long, default_value_t = 256)]
    pub max_len: usize,
    #[command(flatten)]
    pub merge: MergeOpts,
    #[command(flatten)]
    pub train: TrainOpts,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PpoArgs {
    /// The policy to start from (an SFT GPT2LMHeadModel directory); also the frozen reference.
    #[arg(long)]
    pub policy: PathBuf,
    /// The frozen reward model (it reads the text, re-tokenized with its own tokenizer).
    #[arg(long)]
    pub reward_model: PathBuf,
    /// What the value network starts from: the reward model (as TRL does; only when it shares
    /// the policy's tokenizer and covers its context), the policy's transformer with a new head,
    /// or `auto`: the reward model when it can, else the policy.
    #[arg(long, value_enum, default_value_t = ValueInit::Auto)]
    pub value_init: ValueInit,
    /// Prompts (the platform's `prompts` export, items or preference rows).
    #[arg(long)]
    pub prompts: PathBuf,
    #[arg(long)]
    pub out: PathBuf,
    #[command(flatten)]
    pub merge: MergeOpts,
    /// Rollout batches, each followed by its optimisation epochs.
    #[arg(long, default_value_t = 20)]
    pub iterations: u64,
    /// Prompts (rollouts) per iteration.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Rollouts per optimizer step.
    #[arg(long, default_value_t = 4)]
    pub mini_batch_size: usize,
    #[arg(long, default_value_t = 4)]
    pub ppo_epochs: usize,
    /// β of the per-token KL penalty (its start, with --target-kl).
    #[arg(long, default_value_t = 0.05)]
    pub kl_coef: f64,
    /// Adapt β towards this KL per sequence (Ziegler et al.); fixed β when absent.
    #[arg(long)]
    pub target_kl: Option<f64>,
    #[arg(long, default_value_t = 10_000.0)]
    pub kl_horizon: f64,
    #[arg(long, default_value_t = 53)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    /// Subtracted from the score of a response that ran out of tokens before end-of-text.
    #[arg(long)]
    pub missing_eos_penalty: Option<f64>,
    #[arg(long, default_value_t = 0.2)]
    pub cliprange: f64,
    #[arg(long, default_value_t = 0.2)]
    pub cliprange_value: f64,
    #[arg(long, default_value_t = 0.1)]
    pub vf_coef: f64,
    #[arg(long, default_value_t = 1.0)]
    pub gamma: f64,
    #[arg(long, default_value_t = 0.95)]
    pub lam: f64,
    /// Learning rate [default: 5e-4 for a policy trained from scratch here (its config.json says
    /// so), 3e-6 for a pretrained one].
    #[arg(long)]
    pub lr: Option<f64>,
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Checkpoint every N iterations (and at the end).
    #[arg(long, default_value_t = 5)]
    pub save_every: u64,
    #[arg(long)]
    pub metrics: Option<String>,
    /// Continue from a checkpoint, or the latest complete one under a run's --out.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Stop after this many iterations without finishing (as if the run were killed).
    #[arg(long)]
    pub stop_after: Option<u64>,
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
    /// Keep the policy (Hugging Face layout, in `kl-grid/sqrt-kl-<point>`) each time √KL to the
    /// starting policy first passes a multiple of this, listed in `kl-grid/manifest.json` with
    /// the iteration, √KL and mean reward-model score.
    #[arg(long, value_parser = positive_f64)]
    pub kl_grid: Option<f64>,
    /// How an ensemble reward model's (`rm --ensemble`) members' rewards make the score PPO
    /// optimises (Coste et al. 2024): their mean, their minimum (worst case), or mean − std
    /// (uncertainty-weighted). A single reward model takes only `mean`.
    #[arg(long, value_enum, default_value_t = RewardEnsemble::Mean)]
    pub reward_ensemble: RewardEnsemble,
}

/// A number above 0 (and finite).
fn positive_f64(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!("expected a number above 0, got {s:?}")),
    }
}

/// How PPO combines an ensemble's rewards of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RewardEnsemble {
    Mean,
    Min,
    MeanMinusStd,
}

impl RewardEnsemble {
    /// The flag's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mean => "mean",
            Self::Min => "min",
            Self::MeanMinusStd => "mean-minus-std",
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct SamplingOpts {
    /// Softmax temperature (0: greedy).
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    /// Nucleus sampling: the smallest set of tokens whose probability reaches this.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    #[arg(long, default_value_t = 64)]
    pub max_new_tokens: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    /// A policy directory (GPT2LMHeadModel: ours or Hugging Face's).
    #[arg(long)]
    pub model: PathBuf,
    /// Prompts: the platform's `prompts` export, items or preference rows.
    #[arg(long)]
    pub prompts: PathBuf,
    /// Where to write items (`-` for stdout).
    #[arg(long)]
    pub out: String,
    /// Samples per prompt.
    #[arg(short = 'n', long = "samples", default_value_t = 1)]
    pub n: usize,
    #[command(flatten)]
    pub sampling: SamplingOpts,
    /// Sequences generated together.
    #[arg(long, default_value_t = 16)]
    pub batch_size: usize,
    /// Recompute every position at every step instead of caching keys and values (slower;
    /// for comparison).
    #[arg(long)]
    pub no_cache: bool,
    #[arg(long, value_enum)]
    pub device: Option<DeviceArg>,
}

impl TrainOpts {
    /// The peak learning rate: `--lr`, else 1e-3 for a model trained from scratch here and 1e-5
    /// for a pretrained one.
    pub fn lr_or(&self, from_scratch: bool) -> f64 {
        self.lr.unwrap_or(if from_scratch { 1e-3 } else { 1e-5 })
    }
}

/// What PPO's value network starts from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ValueInit {
    Auto,
    RewardModel,
    Policy,
}
