//! What a run of each kind needs, asks of the trainer, and publishes: one plan per kind
//! instead of a match on the kind at every step.

use std::path::{Path, PathBuf};

use crate::domain::runs::{ModelRole, RunKind};
use crate::domain::TaskKind;
use crate::export::Format;

/// What the trainer leaves in the attempt's directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// `model/`: a Hugging Face directory, with checkpoints an attempt can resume from, and a
    /// metrics stream on stdout.
    Model,
    /// `generated.jsonl`: new responses, imported as items when the run publishes.
    Generated,
}

/// One kind of run, for one kind of project.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    pub kind: RunKind,
    /// The export the run trains on (or samples prompts from).
    pub format: Format,
    pub output: Output,
    /// After training, the project's responses are scored with the new reward model.
    pub scores_responses: bool,
}

/// The files and models an attempt starts from.
pub struct Inputs<'a> {
    /// The export's files.
    pub data: &'a [PathBuf],
    /// The prompts a `generate` run samples (distinct ones, from the export).
    pub prompts: Option<&'a Path>,
    /// The directories of the models the run needs, in the order of [`RunKind::needs`].
    pub models: &'a [PathBuf],
}

impl Plan {
    pub fn new(kind: RunKind, project: TaskKind) -> Self {
        let format = match kind {
            RunKind::Rm => Format::Comparisons,
            RunKind::Sft if project == TaskKind::Demonstration => Format::Sft,
            RunKind::Sft | RunKind::Dpo => Format::Preferences,
            RunKind::Ppo | RunKind::Generate | RunKind::Spotcheck => Format::Prompts,
        };
        let output = if kind.imports_items() { Output::Generated } else { Output::Model };
        Self { kind, format, output, scores_responses: kind == RunKind::Rm }
    }

    /// The models the run starts from.
    pub fn needs(&self) -> &'static [ModelRole] {
        self.kind.needs()
    }

    /// Where the trainer writes in the attempt's directory `dir`.
    pub fn output_path(&self, dir: &Path) -> PathBuf {
        match self.output {
            Output::Model => dir.join("model"),
            Output::Generated => dir.join("generated.jsonl"),
        }
    }

    /// The trainer's subcommand and its input flags.
    pub fn input_args(&self, inputs: &Inputs) -> Vec<String> {
        let mut args = vec![self.kind.as_str().to_string()];
        let model = |i: usize| path_arg(&inputs.models[i]);
        let data = || std::iter::once("--data".to_string()).chain(inputs.data.iter().map(|p| path_arg(p)));
        match self.kind {
            RunKind::Rm | RunKind::Sft => args.extend(data()),
            RunKind::Dpo => {
                args.extend(["--policy".into(), model(0)]);
                args.extend(data());
            }
            RunKind::Ppo => args.extend(["--policy".into(), model(0), "--reward-model".into(), model(1), "--prompts".into(), path_arg(&inputs.data[0])]),
            RunKind::Generate | RunKind::Spotcheck => {
                args.extend(["--model".into(), model(0), "--prompts".into(), path_arg(inputs.prompts.expect("generate samples prompts"))])
            }
        }
        args
    }

    /// The output flags: where to write, and (for a model) the metrics stream and the
    /// checkpoint to resume from.
    pub fn output_args(&self, dir: &Path, resume: Option<&Path>) -> Vec<String> {
        let mut args = vec!["--out".to_string(), path_arg(&self.output_path(dir))];
        if self.output == Output::Model {
            args.extend(["--metrics".into(), "-".into()]);
            if let Some(prev) = resume {
                args.extend(["--resume".into(), path_arg(prev)]);
            }
        }
        args
    }
}

pub fn path_arg(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_reads_its_export_and_writes_its_output() {
        let (data, models) = ([PathBuf::from("/d/a.jsonl")], [PathBuf::from("/p"), PathBuf::from("/rm")]);
        let inputs = Inputs { data: &data, prompts: Some(Path::new("/x/prompts.jsonl")), models: &models };
        let ppo = Plan::new(RunKind::Ppo, TaskKind::Ranking);
        assert_eq!(ppo.format, Format::Prompts);
        assert_eq!(ppo.input_args(&inputs), ["ppo", "--policy", "/p", "--reward-model", "/rm", "--prompts", "/d/a.jsonl"]);
        assert_eq!(ppo.output_args(Path::new("/r"), Some(Path::new("/old"))), ["--out", "/r/model", "--metrics", "-", "--resume", "/old"]);
        let generate = Plan::new(RunKind::Generate, TaskKind::Pairwise);
        assert_eq!(generate.input_args(&inputs), ["generate", "--model", "/p", "--prompts", "/x/prompts.jsonl"]);
        assert_eq!(generate.output_args(Path::new("/r"), None), ["--out", "/r/generated.jsonl"]);
        assert_eq!(Plan::new(RunKind::Sft, TaskKind::Demonstration).format, Format::Sft);
        assert!(Plan::new(RunKind::Rm, TaskKind::Ranking).scores_responses);
    }
}
