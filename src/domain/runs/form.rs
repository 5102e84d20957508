//! A run's configuration typed into a form: one text field per parameter, blank for the
//! default. Each text becomes the JSON value of its parameter's type here; the range is then
//! checked by `resolve_config`, as for the API, so a page and the API refuse the same values
//! with the same messages.

use serde_json::{Map, Value};

use super::{Param, ParamType, RunKind};

impl ParamType {
    /// Text typed into this parameter's field as a JSON value of its type (not yet range-checked).
    pub fn parse_text(self, text: &str) -> Result<Value, String> {
        let t = text.trim();
        let number = || t.parse::<f64>().ok().filter(|f| f.is_finite()).map(Value::from);
        let parsed = match self {
            Self::Int(..) => t.parse::<i64>().ok().map(Value::from),
            Self::Float(..) | Self::Positive(_) => number(),
            Self::Word(_) | Self::StorePath | Self::Hosts | Self::Alphas => Some(Value::from(t)),
        };
        parsed.ok_or_else(|| format!("expected {}, got {t:?}", self.describe()))
    }

    /// The HTML input a field of this type is: `number` or `text` (words are a select).
    pub fn input_type(self) -> &'static str {
        match self {
            Self::Int(..) | Self::Float(..) | Self::Positive(_) => "number",
            Self::Word(_) | Self::StorePath | Self::Hosts | Self::Alphas => "text",
        }
    }

    /// The `step` of a number field: 1 for whole numbers, `any` otherwise.
    pub fn step(self) -> &'static str {
        match self {
            Self::Int(..) => "1",
            _ => "any",
        }
    }

    /// The bounds of a number field (`min`, `max`), as text; empty where there is none.
    pub fn bounds(self) -> (String, String) {
        match self {
            Self::Int(a, b) => (a.to_string(), b.to_string()),
            Self::Float(a, b) => (a.to_string(), b.to_string()),
            Self::Positive(b) => (String::new(), b.to_string()),
            _ => (String::new(), String::new()),
        }
    }

    /// The choices of a word parameter.
    pub fn words(self) -> &'static [&'static str] {
        match self {
            Self::Word(w) => w,
            _ => &[],
        }
    }
}

impl Param {
    /// The default as a form shows it: blank for "unset".
    pub fn default_text(&self) -> String {
        match &self.default {
            Value::Null => String::new(),
            Value::String(s) => s.clone(),
            v => v.to_string(),
        }
    }
}

/// The configuration of a run of `kind` from its form's fields (`name` → text; blank takes the
/// default). A name that is not a parameter of `kind`, or text not of its type, is an error
/// naming `config.<name>`.
pub fn config_from_fields<'a>(kind: RunKind, fields: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Map<String, Value>, String> {
    let params = kind.params();
    let mut out = Map::new();
    for (name, text) in fields {
        let p = params.iter().find(|p| p.name == name).ok_or_else(|| format!("config.{name}: not a parameter of {kind} runs"))?;
        if text.trim().is_empty() {
            continue;
        }
        out.insert(name.to_string(), p.ty.parse_text(text).map_err(|e| format!("config.{name}: {e}"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::runs::resolve_config;
    use serde_json::json;

    #[test]
    fn typed_fields_become_a_configuration_blank_ones_the_defaults() {
        let c = config_from_fields(RunKind::Rm, [("epochs", " 3 "), ("lr", "2e-4"), ("schedule", "linear"), ("seed", "")]).unwrap();
        assert_eq!(Value::Object(c.clone()), json!({"epochs": 3, "lr": 2e-4, "schedule": "linear"}));
        let full = resolve_config(RunKind::Rm, &Value::Object(c)).unwrap();
        assert_eq!((full["epochs"].as_i64(), full["seed"].as_i64()), (Some(3), Some(42)));
    }

    #[test]
    fn a_field_of_the_wrong_type_or_name_is_named() {
        assert_eq!(config_from_fields(RunKind::Rm, [("epochs", "two")]).unwrap_err(), "config.epochs: expected a whole number from 1 to 10000, got \"two\"");
        assert_eq!(config_from_fields(RunKind::Rm, [("epochs", "1.5")]).unwrap_err(), "config.epochs: expected a whole number from 1 to 10000, got \"1.5\"");
        assert!(config_from_fields(RunKind::Ppo, [("kl_coef", "NaN")]).unwrap_err().starts_with("config.kl_coef: expected a number"));
        assert_eq!(config_from_fields(RunKind::Generate, [("epochs", "1")]).unwrap_err(), "config.epochs: not a parameter of generate runs");
        // In type but out of range: refused by resolve_config with the API's message.
        let c = config_from_fields(RunKind::Rm, [("epochs", "0")]).unwrap();
        assert!(resolve_config(RunKind::Rm, &Value::Object(c)).unwrap_err().starts_with("config.epochs: expected a whole number from 1"));
    }

    #[test]
    fn fields_show_their_type_bounds_and_default() {
        let p = RunKind::Rm.params().into_iter().find(|p| p.name == "warmup_ratio").unwrap();
        assert_eq!((p.ty.input_type(), p.ty.step(), p.ty.bounds(), p.default_text()), ("number", "any", ("0".into(), "1".into()), "0.05".into()));
        let s = RunKind::Rm.params().into_iter().find(|p| p.name == "schedule").unwrap();
        assert_eq!(s.ty.words(), ["cosine", "linear", "constant"]);
        assert_eq!(RunKind::Rm.params().into_iter().find(|p| p.name == "lr").unwrap().default_text(), "");
    }
}
