//! What a run is asked to do, parsed once at the boundary (API body, page form, schedule
//! step): its kind, its full configuration, and the typed inputs it starts from.

use serde_json::{Map, Value};

use super::params::ParamType;
use super::{check_for_project, resolve_config, store_area, Config, ModelRole, RunKind};
use crate::domain::{ExportId, RunId, TaskKind};

/// Where a model a run starts from comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// `<role>_run`: the model an earlier run of the project made.
    Run(RunId),
    /// `<role>_path`: a directory in the model store (`shared/…` or `runs/<id>/…`).
    Path(String),
}

/// A run's `input`: the export it trains on, and the models it starts from (ppo, dpo,
/// generate: a policy; ppo: a reward model; spotcheck: the PPO run it checks). Unset ones the
/// worker finds itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunInput {
    pub export: Option<ExportId>,
    pub policy: Option<ModelSource>,
    pub reward_model: Option<ModelSource>,
    /// spotcheck: the PPO run whose √KL-grid checkpoints it samples (unset: the nearest PPO run
    /// up its chain).
    pub ppo_run: Option<RunId>,
}

impl RunInput {
    /// Parses the `input` object of a run of `kind`; messages name the field.
    pub fn parse(kind: RunKind, input: &Value) -> Result<Self, String> {
        let obj = match input {
            Value::Null => return Ok(Self::default()),
            Value::Object(o) => o,
            _ => return Err("input: expected an object".into()),
        };
        let mut out = Self::default();
        for (k, v) in obj {
            if k == "ppo_run" && kind == RunKind::Spotcheck {
                let s = v.as_str().ok_or_else(|| format!("input.{k}: expected a string"))?;
                out.ppo_run = Some(RunId(s.parse().map_err(|_| format!("input.{k}: expected the id of a PPO run, got {s:?}"))?));
                continue;
            }
            let role = match k.as_str() {
                "export_id" => None,
                "policy_run" | "policy_path" if kind.needs_policy() => Some(ModelRole::Policy),
                "reward_model_run" | "reward_model_path" if kind == RunKind::Ppo => Some(ModelRole::RewardModel),
                _ => return Err(format!("input.{k}: not an input of {kind} runs")),
            };
            let s = v.as_str().ok_or_else(|| format!("input.{k}: expected a string"))?;
            let id = || s.parse::<uuid::Uuid>().map_err(|_| format!("input.{k}: expected an id, got {s:?}"));
            let Some(role) = role else {
                out.export = Some(ExportId(id()?));
                continue;
            };
            let source = if k.ends_with("_path") {
                store_area(s).ok_or_else(|| format!("input.{k}: expected {}, got {s:?}", ParamType::StorePath.describe()))?;
                ModelSource::Path(s.to_string())
            } else {
                ModelSource::Run(RunId(id()?))
            };
            let slot = out.slot(role);
            if slot.is_some() {
                let key = role.key();
                return Err(format!("input.{k}: give {key}_run or {key}_path, not both"));
            }
            *slot = Some(source);
        }
        Ok(out)
    }

    /// The input as stored with the run: what [`Self::parse`] read, without what the worker
    /// added (`resolved`: the models it found).
    pub fn from_stored(kind: RunKind, stored: &Value) -> Result<Self, String> {
        let mut given = stored.clone();
        if let Value::Object(m) = &mut given {
            m.remove("resolved");
        }
        Self::parse(kind, &given)
    }

    /// The source of the model in `role`, if the input names one.
    pub fn model(&self, role: ModelRole) -> Option<&ModelSource> {
        match role {
            ModelRole::Policy => self.policy.as_ref(),
            ModelRole::RewardModel => self.reward_model.as_ref(),
        }
    }

    fn slot(&mut self, role: ModelRole) -> &mut Option<ModelSource> {
        match role {
            ModelRole::Policy => &mut self.policy,
            ModelRole::RewardModel => &mut self.reward_model,
        }
    }

    /// The input as JSON, with the field names [`Self::parse`] reads.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        if let Some(e) = self.export {
            m.insert("export_id".into(), e.to_string().into());
        }
        for role in [ModelRole::Policy, ModelRole::RewardModel] {
            match self.model(role) {
                Some(ModelSource::Run(id)) => m.insert(format!("{}_run", role.key()), id.to_string().into()),
                Some(ModelSource::Path(p)) => m.insert(format!("{}_path", role.key()), p.clone().into()),
                None => None,
            };
        }
        if let Some(id) = self.ppo_run {
            m.insert("ppo_run".into(), id.to_string().into());
        }
        Value::Object(m)
    }
}

/// A run as a lead asks for it, checked: its kind, its full configuration, its inputs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub kind: RunKind,
    pub config: Config,
    pub input: RunInput,
}

/// One step of a schedule's chain, as a lead gives it and as it is stored.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct ChainStep {
    pub kind: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub config: Value,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub input: Value,
}

impl RunSpec {
    /// Parses a run for a project of `project` kind; messages name the field.
    pub fn parse(kind: &str, config: &Value, input: &Value, project: TaskKind) -> Result<Self, String> {
        let kind: RunKind = kind.parse().map_err(|e| format!("kind: {e}"))?;
        let config = resolve_config(kind, config)?;
        check_for_project(kind, &config, project)?;
        let input = RunInput::parse(kind, input)?;
        Ok(Self { kind, config, input })
    }

    /// Parses a schedule's chain of 1 to 8 runs; messages are prefixed with `chain[i].`.
    pub fn parse_chain(chain: &[ChainStep], project: TaskKind) -> Result<Vec<Self>, String> {
        if chain.is_empty() || chain.len() > 8 {
            return Err("chain: expected 1 to 8 runs".into());
        }
        let steps = resolve_kinds(chain)?.into_iter().zip(chain).enumerate().map(|(i, ((kind, config), s))| {
            check_for_project(kind, &config, project).map_err(|e| format!("chain[{i}].{e}"))?;
            Ok(Self { kind, config, input: RunInput::parse(kind, &s.input).map_err(|e| format!("chain[{i}].{e}"))? })
        });
        steps.collect()
    }

    /// A stored chain's runs (checked when the schedule was made; a check added since may
    /// refuse it now).
    pub fn from_stored_chain(chain: &[ChainStep]) -> Result<Vec<Self>, String> {
        let steps = resolve_kinds(chain)?
            .into_iter()
            .zip(chain)
            .enumerate()
            .map(|(i, ((kind, config), s))| Ok(Self { kind, config, input: RunInput::parse(kind, &s.input).map_err(|e| format!("chain[{i}].{e}"))? }));
        steps.collect()
    }
}

/// Each step's kind and full configuration.
fn resolve_kinds(chain: &[ChainStep]) -> Result<Vec<(RunKind, Config)>, String> {
    let step = |(i, s): (usize, &ChainStep)| {
        let kind: RunKind = s.kind.parse().map_err(|e| format!("chain[{i}].kind: {e}"))?;
        Ok((kind, resolve_config(kind, &s.config).map_err(|e| format!("chain[{i}].{e}"))?))
    };
    chain.iter().enumerate().map(step).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn an_input_names_only_what_its_kind_starts_from() {
        let id = RunId::new();
        let i = RunInput::parse(RunKind::Ppo, &json!({"policy_run": id.to_string(), "reward_model_path": "shared/rm"})).unwrap();
        assert_eq!(i.policy, Some(ModelSource::Run(id)));
        assert_eq!(i.reward_model, Some(ModelSource::Path("shared/rm".into())));
        assert_eq!(i.to_json(), json!({"policy_run": id.to_string(), "reward_model_path": "shared/rm"}));
        assert_eq!(RunInput::parse(RunKind::Rm, &Value::Null).unwrap(), RunInput::default());
        assert_eq!(RunInput::parse(RunKind::Rm, &json!({"policy_run": id.to_string()})).unwrap_err(), "input.policy_run: not an input of rm runs");
        assert_eq!(RunInput::parse(RunKind::Dpo, &json!({"policy_run": "x"})).unwrap_err(), "input.policy_run: expected an id, got \"x\"");
        assert_eq!(RunInput::parse(RunKind::Dpo, &json!({"policy_run": 3})).unwrap_err(), "input.policy_run: expected a string");
        assert!(RunInput::parse(RunKind::Dpo, &json!({"policy_path": "../x"})).unwrap_err().starts_with("input.policy_path: expected a model directory"));
        assert!(RunInput::parse(RunKind::Dpo, &json!([])).is_err());
        let s = RunInput::parse(RunKind::Spotcheck, &json!({"ppo_run": id.to_string()})).unwrap();
        assert_eq!((s.ppo_run, s.to_json()), (Some(id), json!({"ppo_run": id.to_string()})));
        assert_eq!(RunInput::parse(RunKind::Spotcheck, &json!({"ppo_run": "x"})).unwrap_err(), "input.ppo_run: expected the id of a PPO run, got \"x\"");
        assert_eq!(RunInput::parse(RunKind::Generate, &json!({"ppo_run": id.to_string()})).unwrap_err(), "input.ppo_run: not an input of generate runs");
        assert_eq!(
            RunInput::parse(RunKind::Spotcheck, &json!({"policy_run": id.to_string()})).unwrap_err(),
            "input.policy_run: not an input of spotcheck runs"
        );
        let stored = json!({"export_id": id.to_string(), "resolved": {"policy": {}}});
        assert_eq!(RunInput::from_stored(RunKind::Rm, &stored).unwrap().export, Some(ExportId(id.0)));
    }

    #[test]
    fn a_spec_checks_kind_config_project_then_input() {
        let s = RunSpec::parse("generate", &json!({"samples": 1}), &Value::Null, TaskKind::Pairwise).unwrap();
        assert_eq!((s.kind, s.config["samples"].as_i64()), (RunKind::Generate, Some(1)));
        assert_eq!(
            RunSpec::parse("rn", &Value::Null, &Value::Null, TaskKind::Ranking).unwrap_err(),
            "kind: kind must be rm, sft, ppo, dpo, generate or spotcheck, not \"rn\""
        );
        assert!(RunSpec::parse("generate", &Value::Null, &Value::Null, TaskKind::Demonstration).unwrap_err().starts_with("kind: generate runs feed"));
        let chain: Vec<ChainStep> = serde_json::from_value(json!([{"kind": "rm"}, {"kind": "sft", "config": {"epoch": 1}}])).unwrap();
        assert!(RunSpec::parse_chain(&chain, TaskKind::Ranking).unwrap_err().starts_with("chain[1].config.epoch: not a parameter"));
        assert_eq!(RunSpec::parse_chain(&[], TaskKind::Ranking).unwrap_err(), "chain: expected 1 to 8 runs");
    }
}
