//! Training runs: the kinds of run and their statuses (this module), the parameters each kind
//! takes and their ranges (`params`), where in the model store a run may read (`store`), and
//! what a run starts from (`input`). A run from outside becomes a [`RunSpec`] once, at the
//! boundary; nothing downstream re-checks its shape.

pub mod form;
pub mod input;
pub mod launch;
pub mod mixture;
pub mod params;
pub mod progress;
pub mod store;
pub mod throughput;

pub use form::config_from_fields;
pub use input::ChainStep;
pub use input::{ModelSource, RunInput, RunSpec};
pub use params::{check_for_project, config_int, resolve_config, trainer_flags, Config, Param, ParamType};
pub use store::{store_area, store_relative, StoreArea};

/// Declares an enum stored as a PostgreSQL enum type `$pg` (array type `$pg_array`) with the
/// same words: `as_str`, `FromStr`, `Display`, serde and sqlx all use them.
macro_rules! text_enum {
    ($(#[$m:meta])* $name:ident, $what:literal, $pg:literal, $pg_array:literal { $($variant:ident = $word:literal),* $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),* }

        impl $name {
            pub const ALL: &'static [Self] = &[$(Self::$variant),*];
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $word),* }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($word => Ok(Self::$variant),)*
                    _ => Err(format!(concat!($what, " must be {}, not {:?}"), crate::domain::runs::or_list(&[$($word),*]), s)),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl sqlx::Type<sqlx::Postgres> for $name {
            fn type_info() -> sqlx::postgres::PgTypeInfo {
                sqlx::postgres::PgTypeInfo::with_name($pg)
            }
            fn compatible(ty: &sqlx::postgres::PgTypeInfo) -> bool {
                *ty == Self::type_info() || <&str as sqlx::Type<sqlx::Postgres>>::compatible(ty)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $name {
            fn array_type_info() -> sqlx::postgres::PgTypeInfo {
                sqlx::postgres::PgTypeInfo::with_name($pg_array)
            }
        }

        impl sqlx::Encode<'_, sqlx::Postgres> for $name {
            fn encode_by_ref(&self, buf: &mut sqlx::postgres::PgArgumentBuffer) -> Result<sqlx::encode::IsNull, sqlx::error::BoxDynError> {
                <&str as sqlx::Encode<sqlx::Postgres>>::encode(self.as_str(), buf)
            }
        }

        impl sqlx::Decode<'_, sqlx::Postgres> for $name {
            fn decode(value: sqlx::postgres::PgValueRef<'_>) -> Result<Self, sqlx::error::BoxDynError> {
                Ok(<&str as sqlx::Decode<sqlx::Postgres>>::decode(value)?.parse()?)
            }
        }
    };
}

/// "a, b or c".
fn or_list(words: &[&str]) -> String {
    match words.split_last() {
        Some((last, [])) => last.to_string(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
        None => String::new(),
    }
}

text_enum!(
    /// The kinds of run, one per trainer subcommand (a spot check samples with `generate`).
    RunKind, "kind", "run_kind", "_run_kind" { Rm = "rm", Sft = "sft", Ppo = "ppo", Dpo = "dpo", Generate = "generate", Spotcheck = "spotcheck" }
);

text_enum!(
    /// Where a run is: queued, running (claimed by a worker), or finished one of three ways.
    RunStatus, "status", "run_status", "_run_status" { Queued = "queued", Running = "running", Succeeded = "succeeded", Failed = "failed", Cancelled = "cancelled" }
);

/// Every kind of run, in the order the runs page offers them.
pub const RUN_KINDS: [RunKind; 6] = [RunKind::Rm, RunKind::Sft, RunKind::Ppo, RunKind::Dpo, RunKind::Generate, RunKind::Spotcheck];

impl RunKind {
    /// Whether the run starts from a policy (an earlier run's model or a directory).
    pub fn needs_policy(self) -> bool {
        matches!(self, Self::Ppo | Self::Dpo | Self::Generate)
    }

    /// Whether the run's model is a policy (a language model) rather than a reward model.
    pub fn makes_policy(self) -> bool {
        matches!(self, Self::Sft | Self::Ppo | Self::Dpo)
    }

    /// The models a run of this kind starts from.
    pub fn needs(self) -> &'static [ModelRole] {
        match self {
            Self::Ppo => &[ModelRole::Policy, ModelRole::RewardModel],
            Self::Dpo | Self::Generate => &[ModelRole::Policy],
            Self::Rm | Self::Sft | Self::Spotcheck => &[],
        }
    }

    /// The `rewardlab-train` subcommand runs of this kind call (whose flags and defaults its
    /// trainer parameters are): a spot check samples with `generate`.
    pub fn trainer_command(self) -> &'static str {
        match self {
            Self::Spotcheck => "generate",
            k => k.as_str(),
        }
    }

    /// Whether runs of this kind import items (labelling work) rather than make a model.
    pub fn imports_items(self) -> bool {
        matches!(self, Self::Generate | Self::Spotcheck)
    }
}

impl RunStatus {
    /// Queued or running: not finished yet.
    pub fn is_active(self) -> bool {
        matches!(self, Self::Queued | Self::Running)
    }
}

/// A model a run starts from: the policy it trains or samples, or the reward model of PPO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelRole {
    Policy,
    RewardModel,
}

impl ModelRole {
    /// The prefix of its input fields (`policy_run`, `reward_model_path`).
    pub fn key(self) -> &'static str {
        match self {
            Self::Policy => "policy",
            Self::RewardModel => "reward_model",
        }
    }

    /// The kinds of run that make such a model; the first is the one to train first.
    pub fn kinds(self) -> &'static [RunKind] {
        match self {
            Self::Policy => &[RunKind::Sft, RunKind::Ppo, RunKind::Dpo],
            Self::RewardModel => &[RunKind::Rm],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_statuses_read_and_print_the_stored_words() {
        for k in RunKind::ALL {
            assert_eq!(k.as_str().parse::<RunKind>().unwrap(), *k);
            assert_eq!(serde_json::to_value(k).unwrap(), k.as_str());
        }
        assert_eq!("rn".parse::<RunKind>().unwrap_err(), "kind must be rm, sft, ppo, dpo, generate or spotcheck, not \"rn\"");
        assert_eq!(RunStatus::Cancelled.to_string(), "cancelled");
        assert!(RunStatus::Queued.is_active() && !RunStatus::Failed.is_active());
        assert_eq!(RunKind::Ppo.needs(), [ModelRole::Policy, ModelRole::RewardModel]);
        assert!(ModelRole::Policy.kinds().iter().all(|k| k.makes_policy()));
    }
}
