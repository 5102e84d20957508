//! The contract between the platform (`rewardlab`) and the trainer (`rewardlab-train`): the
//! trainer's command-line flags (`args`) and the metric events it writes as JSON lines
//! (`metrics`). Both crates depend on this one; neither writes the contract by hand.

pub mod args;
pub mod metrics;

pub use args::*;
pub use metrics::{Done, Eval, Generated, Iteration, MetricEvent, MetricLine, Report, Step, Timings};

use clap::Args;

/// The trainer's subcommands whose flags the platform sets.
pub const SUBCOMMANDS: [&str; 6] = ["rm", "sft", "dpo", "ppo", "generate", "score"];

/// The clap command of one subcommand (`rm`, `sft`, `dpo`, `ppo`, `generate`, `score`), for
/// reading its flags and defaults; None for another name.
pub fn command(name: &str) -> Option<clap::Command> {
    let name = SUBCOMMANDS.into_iter().find(|n| *n == name)?;
    let cmd = clap::Command::new(name);
    Some(match name {
        "rm" => RmArgs::augment_args(cmd),
        "sft" => SftArgs::augment_args(cmd),
        "dpo" => DpoArgs::augment_args(cmd),
        "ppo" => PpoArgs::augment_args(cmd),
        "generate" => GenerateArgs::augment_args(cmd),
        "score" => ScoreArgs::augment_args(cmd),
        _ => return None,
    })
}

/// The default of `--<flag>` of a subcommand as clap shows it; None when it has none (or the
/// flag does not exist: see [`has_flag`]).
pub fn default_of(subcommand: &str, flag: &str) -> Option<String> {
    let cmd = command(subcommand)?;
    let arg = cmd.get_arguments().find(|a| a.get_long() == Some(flag))?;
    arg.get_default_values().first().map(|v| v.to_string_lossy().into_owned())
}

/// Whether a subcommand has `--<flag>`.
pub fn has_flag(subcommand: &str, flag: &str) -> bool {
    command(subcommand).is_some_and(|cmd| cmd.get_arguments().any(|a| a.get_long() == Some(flag)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_read_from_the_flags_themselves() {
        assert_eq!(default_of("rm", "vocab-size").as_deref(), Some("4096"));
        assert_eq!(default_of("ppo", "seed").as_deref(), Some("0"));
        assert_eq!(default_of("rm", "seed").as_deref(), Some("42"));
        assert_eq!(default_of("sft", "schedule").as_deref(), Some("cosine"));
        assert_eq!(default_of("generate", "samples").as_deref(), Some("1"));
        assert_eq!(default_of("rm", "lr"), None);
        assert!(has_flag("dpo", "beta") && !has_flag("dpo", "n-embd"));
        for name in SUBCOMMANDS {
            command(name).unwrap().debug_assert();
        }
    }
}
