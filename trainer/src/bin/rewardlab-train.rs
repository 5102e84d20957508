//! `rewardlab-train`: reward models (`rm`), supervised fine-tuning (`sft`), DPO (`dpo`), PPO
//! (`ppo`), sampling (`generate`), scoring (`score`)
//! and the training benchmark (`bench`).

use clap::{Parser, Subcommand};
use rewardlab_trainer::{bench, dpo, generate, ppo, rm, sft};

/// Training allocates and frees many large tensors a step; glibc's malloc hands each back to
/// the kernel and faults it in again (15% of a step's time), mimalloc keeps them.
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
    /// Time reward-model training steps (optionally beside PyTorch).
    Bench(bench::BenchArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    rewardlab_trainer::ensure_best_kernels();
    if !matches!(cli.command, Command::Score(_) | Command::Generate(_)) {
        eprintln!("rewardlab-train: matrix products on {}", rewardlab_trainer::matmul_path());
    }
    let result = match &cli.command {
        Command::Rm(a) => rm::run(a),
        Command::Sft(a) => sft::run(a),
        Command::Dpo(a) => dpo::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Ppo(a) => ppo::run(a),
        Command::Score(a) => rm::score(a),
        Command::Bench(a) => bench::run(a),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
