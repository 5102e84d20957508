//! Where a generated response came from: the runs, the checkpoint and its sha256, and the
//! sampling settings, as a `generate` run stored them in the response's metadata. One fixed
//! shape with typed fields, so an export column of provenances has the same type in every
//! snapshot.

use serde::Serialize;
use serde_json::Value;

/// The provenance of one generated response; every field may be unknown (`null`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Provenance {
    /// The run that trained the policy (absent when the policy came from the model store).
    pub policy_run: Option<String>,
    /// The `generate` run that sampled the response.
    pub generate_run: Option<String>,
    /// The policy's model directory.
    pub checkpoint: Option<String>,
    /// Hex sha256 of the checkpoint's `model.safetensors`.
    pub checkpoint_sha256: Option<String>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub max_new_tokens: Option<i64>,
    pub seed: Option<i64>,
    /// Which of the samples for its prompt this is (0-based).
    pub sample: Option<i64>,
    /// Tokens generated.
    pub tokens: Option<i64>,
    /// `eos` or `length`.
    pub finish_reason: Option<String>,
}

impl Provenance {
    /// The provenance in a response's metadata; `None` for a response no `generate` run made.
    pub fn from_metadata(meta: &Value) -> Option<Self> {
        meta.get("generate_run")?;
        let s = |k: &str| meta.get(k).and_then(Value::as_str).map(str::to_string);
        let f = |k: &str| meta.get(k).and_then(Value::as_f64);
        let i = |k: &str| meta.get(k).and_then(Value::as_i64);
        Some(Self {
            policy_run: s("run_id"),
            generate_run: s("generate_run"),
            checkpoint: s("checkpoint").or_else(|| s("model_dir")),
            checkpoint_sha256: s("checksum").map(|c| c.strip_prefix("sha256:").map(str::to_string).unwrap_or(c)),
            temperature: f("temperature"),
            top_p: f("top_p"),
            max_new_tokens: i("max_new_tokens"),
            seed: i("seed"),
            sample: i("sample"),
            tokens: i("tokens"),
            finish_reason: s("finish_reason"),
        })
    }

    /// The sampling settings in one line, for a page.
    pub fn sampling(&self) -> String {
        let show = |v: Option<String>| v.unwrap_or_else(|| "?".into());
        format!(
            "temperature {} · top_p {} · max_new_tokens {} · seed {} · sample {}",
            show(self.temperature.map(|v| v.to_string())),
            show(self.top_p.map(|v| v.to_string())),
            show(self.max_new_tokens.map(|v| v.to_string())),
            show(self.seed.map(|v| v.to_string())),
            show(self.sample.map(|v| v.to_string())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_generated_responses_metadata_gives_its_provenance() {
        let meta = json!({"generate_run": "g", "run_id": "r", "checkpoint": "/m/ppo", "checksum": "sha256:abc", "temperature": 0.7, "top_p": 1, "max_new_tokens": 64, "seed": 3, "sample": 1});
        let p = Provenance::from_metadata(&meta).unwrap();
        assert_eq!(p.checkpoint_sha256.as_deref(), Some("abc"));
        assert_eq!(p.top_p, Some(1.0));
        assert_eq!(p.policy_run.as_deref(), Some("r"));
        assert_eq!(Provenance::from_metadata(&json!({"source": "imported"})), None);
    }
}
