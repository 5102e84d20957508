//! The training loop every trainer shares: epochs of shuffled batches (order a function of the
//! seed and the epoch alone), micro-batches cut by a token budget with their gradients
//! accumulated, clipping by global norm, AdamW with warmup + cosine/linear decay, a JSON-lines
//! metrics stream, a progress bar on a terminal, validation, and atomic checkpoints that a
//! resumed run continues from bit for bit.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use candle_core::{Device, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::checkpoint::{commit_checkpoint, write_atomic};
use crate::optim::{learning_rate, AdamW, AdamWConfig, Grads};
use crate::rng::Rng;
pub use rewardlab_protocol::{Done, Eval, MetricEvent, Report, Step};

pub use rewardlab_protocol::DeviceArg;

pub use rewardlab_protocol::TrainOpts;

/// The device `--device` names, or the default: CUDA when built with it and present, else CPU.
pub fn device(arg: Option<DeviceArg>) -> Result<Device> {
    match arg {
        Some(DeviceArg::Cpu) => Ok(Device::Cpu),
        Some(DeviceArg::Cuda) => Device::new_cuda(0).map_err(|e| anyhow!("--device cuda: {e}")),
        None => Ok(crate::gpt2::default_device()),
    }
}

/// What a micro-batch's forward pass reports besides its loss.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// The loss's normaliser: rankings for a reward model, response tokens for SFT.
    pub units: f64,
    pub loss_sum: f64,
    /// Correct predictions (pairs ordered right, tokens predicted) and how many were counted.
    pub correct: f64,
    pub counted: f64,
    /// Sum of r_w − r_l over pairs (reward models).
    pub margin_sum: f64,
    /// Real (unpadded) tokens read.
    pub tokens: usize,
}

impl Stats {
    fn add(&mut self, o: &Stats) {
        self.units += o.units;
        self.loss_sum += o.loss_sum;
        self.correct += o.correct;
        self.counted += o.counted;
        self.margin_sum += o.margin_sum;
        self.tokens += o.tokens;
    }

    pub fn loss(&self) -> f64 {
        self.loss_sum / self.units.max(1e-12)
    }

    pub fn accuracy(&self) -> f64 {
        self.correct / self.counted.max(1e-12)
    }

    /// Sums the statistics over the ranks (one small all-reduce; nothing with one rank).
    pub fn all_reduce(&mut self) {
        if crate::dist::world().size == 1 {
            return;
        }
        let mut v = [self.units, self.loss_sum, self.correct, self.counted, self.margin_sum, self.tokens as f64];
        crate::dist::all_reduce_f64(&mut v);
        [self.units, self.loss_sum, self.correct, self.counted, self.margin_sum] = [v[0], v[1], v[2], v[3], v[4]];
        self.tokens = v[5] as usize;
    }
}

/// One kind of training (reward model, SFT, …) as the loop sees it.
pub trait Task {
    type Example: Sync;
    /// (sequences, longest sequence) of an example, for the token budget.
    fn shape(&self, ex: &Self::Example) -> (usize, usize);
    /// The example's share of the loss's normaliser (1 per ranking; response tokens for SFT).
    fn units(&self, ex: &Self::Example) -> f64;
    /// The summed loss of a micro-batch (a scalar with a graph) and its statistics.
    fn loss(&self, batch: &[&Self::Example]) -> Result<(Tensor, Stats)>;
    /// Validation metrics from summed statistics.
    fn report(&self, stats: &Stats) -> Report;
}

/// The progress of a run, saved in every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub step: u64,
    pub epoch: usize,
    pub step_in_epoch: usize,
    pub total_steps: u64,
    pub seed: u64,
    pub train_examples: usize,
    pub peak_lr: f64,
}

/// Where metrics go.
pub struct Metrics {
    out: Option<Box<dyn Write>>,
}

impl Metrics {
    /// Only rank 0 writes metrics (the others' are dropped): one stream for the whole job.
    pub fn open(target: Option<&str>) -> Result<Self> {
        let out: Option<Box<dyn Write>> = match target {
            _ if !crate::dist::is_root() => None,
            None => None,
            Some("-") => Some(Box::new(std::io::stdout())),
            Some(path) => {
                Some(Box::new(std::fs::OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("cannot open --metrics {path}"))?))
            }
        };
        Ok(Self { out })
    }

    pub fn emit(&mut self, event: &MetricEvent) -> Result<()> {
        if let Some(out) = &mut self.out {
            writeln!(out, "{}", event.to_line())?;
            out.flush()?;
        }
        Ok(())
    }
}

/// Splits one batch into micro-batches of at most `max_tokens` padded tokens (at least one
/// example each), shortest first so similar lengths share padding.
pub fn micro_batches<'a, T: Task>(task: &T, batch: &[&'a T::Example], max_tokens: usize) -> Vec<Vec<&'a T::Example>> {
    let mut sorted: Vec<&T::Example> = batch.to_vec();
    sorted.sort_by_key(|e| task.shape(e).1);
    let mut out: Vec<Vec<&T::Example>> = Vec::new();
    let (mut seqs, mut longest) = (0, 0);
    for ex in sorted {
        let (s, l) = task.shape(ex);
        if out.is_empty() || (seqs + s) * longest.max(l) > max_tokens {
            out.push(Vec::new());
            (seqs, longest) = (0, 0);
        }
        out.last_mut().expect("pushed above").push(ex);
        seqs += s;
        longest = longest.max(l);
    }
    out
}

/// Evaluates `examples` (no optimizer step): summed statistics over every micro-batch; with
/// several ranks each evaluates its shard and the sums are all-reduced.
pub fn evaluate<T: Task>(task: &T, examples: &[T::Example], opts: &TrainOpts) -> Result<Stats> {
    let mut total = Stats::default();
    let refs: Vec<&T::Example> = crate::dist::shard(examples).iter().collect();
    for batch in refs.chunks(opts.batch_size.max(1)) {
        for mb in micro_batches(task, batch, opts.max_tokens) {
            let (loss, stats) = task.loss(&mb)?;
            drop(loss);
            total.add(&stats);
        }
    }
    total.all_reduce();
    Ok(total)
}

pub fn read_state(checkpoint: &Path) -> Result<State> {
    let path = checkpoint.join("state.json");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a training state", path.display()))
}

/// Everything the loop needs besides the task and the data.
pub struct Run<'a> {
    pub params: Vec<(String, Var)>,
    pub opts: &'a TrainOpts,
    pub lr: f64,
    pub out: &'a Path,
    /// Writes the model files (config, weights, tokenizer) into a directory.
    pub save_model: &'a dyn Fn(&Path) -> Result<()>,
    /// The checkpoint to continue from.
    pub resume: Option<PathBuf>,
    pub metrics: &'a mut Metrics,
}

/// How a run ended.
pub struct Outcome {
    pub state: State,
    /// Validation metrics of the last evaluation.
    pub validation: Option<Eval>,
    /// False when `--stop-after` ended it early.
    pub finished: bool,
}

/// Runs the loop for one command (`rm`, `sft`, `dpo`): checkpoints hold the model (`kind`) and
/// its tokenizer; a checkpoint `source` is resumed from. `None` when `--stop-after` ended the
/// run, after saying how to continue.
#[allow(clippy::too_many_arguments)]
pub fn run_command<T: Task>(
    task: &T,
    train_x: &[T::Example],
    val_x: &[T::Example],
    model: (&[(String, Var)], &crate::gpt2::Config, crate::checkpoint::ModelKind),
    tok: &crate::tokenizer::Tok,
    source: &crate::setup::Source,
    opts: &TrainOpts,
    lr: f64,
    out: &Path,
    metrics: &mut Metrics,
) -> Result<Option<Outcome>> {
    let (params, cfg, kind) = model;
    let save = |dir: &Path| -> Result<()> {
        crate::checkpoint::save_model(dir, cfg, kind, params, tok.eos(), None)?;
        tok.save(dir)
    };
    let resume = match source {
        crate::setup::Source::Resume(d) => Some(d.clone()),
        _ => None,
    };
    let outcome = train(task, train_x, val_x, Run { params: params.to_vec(), opts, lr, out, save_model: &save, resume, metrics })?;
    if !outcome.finished {
        eprintln!("stopped after step {}; continue with --resume {}", outcome.state.step, out.display());
        return Ok(None);
    }
    Ok(Some(outcome))
}

pub fn train<T: Task>(task: &T, train: &[T::Example], val: &[T::Example], run: Run) -> Result<Outcome> {
    let opts = run.opts;
    if train.is_empty() {
        bail!("no training examples (after the validation split)")
    }
    let per_step = opts.batch_size.max(1) * opts.grad_accum.max(1);
    let steps_per_epoch = train.len().div_ceil(per_step);
    let total_steps = (steps_per_epoch * opts.epochs) as u64;
    let warmup = (total_steps as f64 * opts.warmup_ratio).round() as u64;
    let mut optimizer = AdamW::new(run.params.clone(), AdamWConfig { weight_decay: opts.weight_decay, ..Default::default() })?;
    let mut state = State { step: 0, epoch: 0, step_in_epoch: 0, total_steps, seed: opts.seed, train_examples: train.len(), peak_lr: run.lr };
    if let Some(ckpt) = &run.resume {
        let saved = read_state(ckpt)?;
        let key = |s: &State| (s.seed, s.train_examples, s.total_steps, s.peak_lr.to_bits());
        if key(&saved) != key(&state) {
            bail!(
                "--resume {}: it was a run of {} training examples, {} steps, seed {}, lr {}; this one has {}, {}, {}, {}: \
                 resume with the same data and flags",
                ckpt.display(),
                saved.train_examples,
                saved.total_steps,
                saved.seed,
                saved.peak_lr,
                state.train_examples,
                state.total_steps,
                state.seed,
                state.peak_lr
            )
        }
        optimizer.load(&ckpt.join("optimizer.safetensors"), saved.step)?;
        state = saved;
    }
    // Every rank starts from rank 0's weights (they already agree when they read the same
    // files; this makes it so whatever happened before).
    crate::dist::broadcast_params(&run.params)?;
    let bar = match crate::dist::is_root() {
        true => indicatif::ProgressBar::new(total_steps).with_position(state.step),
        false => indicatif::ProgressBar::hidden(),
    };
    bar.set_style(indicatif::ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} steps ({eta}) {msg}").expect("a valid template"));
    let mut validation = None;
    let started = Instant::now();
    while state.epoch < opts.epochs {
        let mut order: Vec<usize> = (0..train.len()).collect();
        Rng::derived(opts.seed, "epoch", state.epoch as u64).shuffle(&mut order);
        let steps: Vec<&[usize]> = order.chunks(per_step).collect();
        while state.step_in_epoch < steps.len() {
            let t0 = Instant::now();
            let examples: Vec<&T::Example> = steps[state.step_in_epoch].iter().map(|&i| &train[i]).collect();
            // With several ranks each runs its shard of the step's examples (the same global
            // batch as one process) and the gradients are summed over the ranks.
            let mine = crate::dist::shard(&examples);
            let micro: Vec<Vec<&T::Example>> = mine.chunks(opts.batch_size.max(1)).flat_map(|b| micro_batches(task, b, opts.max_tokens)).collect();
            // The loss is averaged over the whole step: each micro-batch's summed loss is
            // divided by the step's total units (over every rank's shard) before its backward pass.
            let units: f64 = examples.iter().map(|e| task.units(e)).sum();
            let mut grads = Grads::new(optimizer.params().len());
            let mut stats = Stats::default();
            for mb in &micro {
                let (loss, st) = task.loss(mb)?;
                stats.add(&st);
                grads.add(optimizer.params(), &(loss / units.max(1e-12))?.backward()?)?;
            }
            grads.all_reduce(optimizer.params())?;
            stats.all_reduce();
            let grad_norm = grads.clip(opts.max_grad_norm)?;
            let lr = learning_rate(opts.schedule, run.lr, state.step, warmup, total_steps);
            optimizer.step(&grads, lr)?;
            state.step += 1;
            state.step_in_epoch += 1;
            let secs = t0.elapsed().as_secs_f64();
            let loss = stats.loss();
            if !loss.is_finite() {
                bail!("the loss became {loss} at step {}: lower --lr or check the data", state.step)
            }
            run.metrics.emit(&MetricEvent::Step(Step {
                step: state.step,
                epoch: state.epoch,
                loss,
                accuracy: stats.accuracy(),
                lr,
                grad_norm,
                tokens_per_s: stats.tokens as f64 / secs,
                examples: examples.len(),
                elapsed_s: started.elapsed().as_secs_f64(),
                rss_mb: rss_mb(),
                total_steps: Some(total_steps),
            }))?;
            bar.set_position(state.step);
            bar.set_message(format!("loss {loss:.4} acc {:.3}", stats.accuracy()));
            let epoch_done = state.step_in_epoch == steps.len();
            if epoch_done {
                state.epoch += 1;
                state.step_in_epoch = 0;
            }
            if (opts.eval_every > 0 && state.step.is_multiple_of(opts.eval_every)) || (epoch_done && !val.is_empty()) {
                let eval = Eval { step: state.step, epoch: state.epoch, report: task.report(&evaluate(task, val, opts)?) };
                let event = MetricEvent::Eval(eval.clone());
                run.metrics.emit(&event)?;
                bar.println(format!("step {}: validation {}", state.step, event.to_line()));
                validation = Some(eval);
            }
            if (opts.save_every > 0 && state.step.is_multiple_of(opts.save_every)) || epoch_done {
                save_checkpoint(&run, &optimizer, &state)?;
            }
            if opts.stop_after == Some(state.step) {
                bar.abandon_with_message(format!("stopped after step {} (--stop-after)", state.step));
                return Ok(Outcome { state, validation, finished: false });
            }
            if epoch_done {
                break;
            }
        }
    }
    bar.finish_with_message("done");
    Ok(Outcome { state, validation, finished: true })
}

/// The process's resident memory in MB (Linux; `None` elsewhere), reported with every step so
/// a run that leaks shows it.
pub fn rss_mb() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: f64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096.0 / 1e6)
}

/// Writes `out/checkpoints/step-N`: model files, optimizer moments and the state (rank 0;
/// every rank first checks that all hold the same weights).
fn save_checkpoint(run: &Run, optimizer: &AdamW, state: &State) -> Result<()> {
    crate::dist::check_params(&run.params)?;
    if !crate::dist::is_root() {
        return Ok(());
    }
    let name = format!("step-{:08}", state.step);
    commit_checkpoint(&run.out.join("checkpoints"), &name, run.opts.keep_checkpoints, |tmp| {
        (run.save_model)(tmp)?;
        optimizer.save(&tmp.join("optimizer.safetensors"))?;
        write_atomic(&tmp.join("state.json"), &serde_json::to_vec_pretty(state)?)
    })
}
