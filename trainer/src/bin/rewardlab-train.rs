//! `rewardlab-train`: reward models (`rm`), supervised fine-tuning (`sft`), DPO (`dpo`), PPO
//! (`ppo`), sampling (`generate`), scoring (`score`), weight interpolation (`merge-sweep`), a
//! model measured on a frozen regression set (`eval-regression`),
//! the training benchmark (`bench`) and the features it was built with (`capabilities`).

use clap::{Parser, Subcommand};
use rewardlab_trainer::{bench, dist, dpo, generate, merge, ppo, regression, rm, sft};

/// Training allocates and frees many large tensors a step; glibc's malloc hands each back to
/// the kernel and faults it in again (15% of a step's time), mimalloc keeps them (told so at
/// start: `alloc::keep_freed_memory`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "rewardlab-train", version, about = "Train reward models and policies on rewardlab's exports")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a reward model on rankings or preference pairs.
    Rm(Box<rm::RmArgs>),
    /// Supervised fine-tuning on demonstrations.
    Sft(Box<sft::SftArgs>),
    /// Direct preference optimisation of a policy against a frozen copy of itself.
    Dpo(Box<dpo::DpoArgs>),
    /// PPO of a policy against a reward model, with a KL penalty to the starting policy.
    Ppo(Box<ppo::PpoArgs>),
    /// Sample responses to prompts from a policy, as items to import for labelling.
    Generate(Box<generate::GenerateArgs>),
    /// Score preference rows or items with a reward model.
    Score(rm::ScoreArgs),
    /// Interpolate a new model with an earlier one at each α of a list and report each's
    /// accuracy on preference pairs, picking the best.
    MergeSweep(Box<merge::MergeSweepArgs>),
    /// Measure a reward model or policy on a frozen regression set (held-out preference pairs):
    /// pairwise accuracy, DPO's implicit-reward accuracy, or a PPO policy's reward and win rate.
    EvalRegression(Box<regression::EvalRegressionArgs>),
    /// Time reward-model training steps (optionally beside PyTorch).
    Bench(bench::BenchArgs),
    /// Print the optional features this binary was built with, one a line (`mpi`: it trains
    /// data-parallel under mpirun; `cuda`; `openblas`). Workers ask before taking mpirun runs.
    Capabilities,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Capabilities) {
        for (built, name) in [(cfg!(feature = "mpi"), "mpi"), (cfg!(feature = "cuda"), "cuda"), (cfg!(feature = "openblas"), "openblas")] {
            if built {
                println!("{name}");
            }
        }
        return std::process::ExitCode::SUCCESS;
    }
    rewardlab_trainer::ensure_best_kernels();
    let allocator = rewardlab_trainer::alloc::keep_freed_memory();
    // After the kernels' re-run (an exec), so MPI starts in the process that stays.
    let _mpi = match dist::init() {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("error: {e:#}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let world = dist::world();
    if world.size > 1 && !matches!(cli.command, Command::Rm(_) | Command::Sft(_) | Command::Dpo(_) | Command::Ppo(_) | Command::Bench(_)) {
        eprintln!("error: only rm, sft, dpo, ppo and bench run on several processes; run this command without mpirun");
        dist::abort_on_error();
    }
    if !matches!(cli.command, Command::Score(_) | Command::Generate(_)) && dist::is_root() {
        eprintln!("rewardlab-train: matrix products on {}", rewardlab_trainer::matmul_path());
        eprintln!("rewardlab-train: {allocator}");
        if world.size > 1 {
            eprintln!("rewardlab-train: data-parallel over {} processes (MPI)", world.size);
        }
    }
    let started = std::time::SystemTime::now();
    let result = match &cli.command {
        Command::Rm(a) => rm::run(a).and_then(|()| merge_after(&a.out, &a.merge, started)),
        Command::Sft(a) => sft::run(a).and_then(|()| merge_after(&a.out, &a.merge, started)),
        Command::Dpo(a) => dpo::run(a).and_then(|()| merge_after(&a.out, &a.merge, started)),
        Command::Generate(a) => generate::run(a),
        Command::Ppo(a) => ppo::run(a).and_then(|()| merge_after(&a.out, &a.merge, started)),
        Command::Score(a) => rm::score(a),
        Command::MergeSweep(a) => merge::sweep(a),
        Command::EvalRegression(a) => regression::run(a),
        Command::Bench(a) => bench::run(a),
        Command::Capabilities => Ok(()),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            match world.size {
                1 => eprintln!("error: {e:#}"),
                _ => eprintln!("error (rank {}): {e:#}", world.rank),
            }
            // The other ranks would wait for this one in their next collective: end them all.
            dist::abort_on_error();
            std::process::ExitCode::FAILURE
        }
    }
}

/// `--merge-with`: once training has saved its model (not when `--stop-after` ended it first),
/// rank 0 interpolates it with the earlier model.
fn merge_after(out: &std::path::Path, opts: &merge::MergeOpts, started: std::time::SystemTime) -> anyhow::Result<()> {
    if opts.merge_with.is_none() || !dist::is_root() {
        return Ok(());
    }
    let saved = std::fs::metadata(out.join("model.safetensors")).and_then(|m| m.modified());
    match saved {
        Ok(t) if t >= started => merge::apply(out, opts),
        _ => Ok(()),
    }
}
