//! The columns of each export format and their types, as a Hugging Face `datasets` features
//! dictionary (`Features.to_dict()` form). Every row of an export carries every column of its
//! format, `null` where a value is unknown; loading with these features gives the same schema
//! for every snapshot, even one where a column is all `null` or all empty lists.

use serde_json::{json, Map, Value};

use super::{Format, Options};

/// A column's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Col {
    Str,
    Int,
    Float,
    Bool,
    ListStr,
    ListInt,
    /// `[{"role", "content"}]`
    Messages,
    /// A [`crate::domain::provenance::Provenance`] or `null`.
    Provenance,
}

const COMPARISONS: &[(&str, Col)] = &[
    ("schema_version", Col::Int),
    ("judgement_id", Col::Str),
    ("item_id", Col::Str),
    ("external_id", Col::Str),
    ("prompt", Col::Str),
    ("messages", Col::Messages),
    ("chosen", Col::Str),
    ("chosen_model", Col::Str),
    ("chosen_response_id", Col::Str),
    ("chosen_rank", Col::Int),
    ("chosen_flags", Col::ListStr),
    ("chosen_provenance", Col::Provenance),
    ("rejected", Col::Str),
    ("rejected_model", Col::Str),
    ("rejected_response_id", Col::Str),
    ("rejected_rank", Col::Int),
    ("rejected_flags", Col::ListStr),
    ("rejected_provenance", Col::Provenance),
    ("tie", Col::Bool),
    ("k", Col::Int),
    ("strength", Col::Int),
    ("both_bad", Col::Bool),
    ("weight", Col::Float),
    ("labeller", Col::Str),
    ("source", Col::Str),
    ("time_on_task_ms", Col::Int),
    ("display_order", Col::ListInt),
    ("rating", Col::Int),
    ("comment", Col::Str),
    ("created_at", Col::Str),
];

/// An aggregated comparison: one per item and response pair.
const AGGREGATED: &[(&str, Col)] = &[
    ("schema_version", Col::Int),
    ("item_id", Col::Str),
    ("external_id", Col::Str),
    ("prompt", Col::Str),
    ("messages", Col::Messages),
    ("chosen", Col::Str),
    ("chosen_model", Col::Str),
    ("chosen_response_id", Col::Str),
    ("rejected", Col::Str),
    ("rejected_model", Col::Str),
    ("rejected_response_id", Col::Str),
    ("tie", Col::Bool),
    ("both_bad", Col::Bool),
    ("votes", Col::Int),
    ("chosen_votes", Col::Float),
    ("rejected_votes", Col::Float),
    ("item_agreement", Col::Float),
    ("method", Col::Str),
];

const PROMPTS: &[(&str, Col)] = &[("schema_version", Col::Int), ("item_id", Col::Str), ("id", Col::Str), ("prompt", Col::Str), ("messages", Col::Messages)];

/// The columns of `format` with `options`, in the order rows write them.
pub fn columns(format: Format, options: &Options) -> Vec<(&'static str, Col)> {
    match format {
        Format::Comparisons if options.aggregate.is_some() => {
            let mut c = AGGREGATED.to_vec();
            if options.revision >= 4 {
                c.push(("review", Col::Str));
            }
            c
        }
        Format::Comparisons => {
            let mut c: Vec<_> = COMPARISONS.iter().copied().filter(|(_, c)| *c != Col::Provenance || options.revision >= 2).collect();
            if options.revision >= 3 {
                c.extend([("labeller_gold_score", Col::Float), ("item_agreement", Col::Float)]);
            }
            if options.revision >= 4 {
                c.push(("review", Col::Str));
            }
            c
        }
        Format::Prompts => PROMPTS.to_vec(),
        Format::Sft => vec![("prompt", Col::Str), ("completion", Col::Str)],
        Format::Preferences => {
            let mut c = vec![("prompt", Col::Str), ("chosen", Col::Str), ("rejected", Col::Str)];
            if options.margin {
                c.push(("margin", Col::Float));
            }
            if options.include_ties && options.revision >= 2 {
                c.push(("tie", Col::Bool));
            }
            if options.include_both_bad && options.revision >= 2 {
                c.push(("both_bad", Col::Bool));
            }
            c
        }
    }
}

/// The features dictionary: `datasets.Features.from_dict(features)`.
pub fn features(format: Format, options: &Options) -> Value {
    Value::Object(columns(format, options).into_iter().map(|(name, col)| (name.to_string(), col.feature())).collect())
}

fn value(dtype: &str) -> Value {
    json!({"dtype": dtype, "_type": "Value"})
}

impl Col {
    /// This type in `datasets`' serialized form (a one-element list is a list of that feature).
    pub fn feature(self) -> Value {
        match self {
            Self::Str => value("string"),
            Self::Int => value("int64"),
            Self::Float => value("float64"),
            Self::Bool => value("bool"),
            Self::ListStr => json!([value("string")]),
            Self::ListInt => json!([value("int64")]),
            Self::Messages => json!([{"role": value("string"), "content": value("string")}]),
            Self::Provenance => {
                let mut m = Map::new();
                for (k, t) in PROVENANCE {
                    m.insert(k.to_string(), value(t));
                }
                Value::Object(m)
            }
        }
    }

    /// Whether `v` is a value of this type (or `null`).
    pub fn admits(self, v: &Value) -> bool {
        let list = |f: fn(&Value) -> bool| v.as_array().is_some_and(|a| a.iter().all(f));
        v.is_null()
            || match self {
                Self::Str => v.is_string(),
                Self::Int => v.is_i64() || v.is_u64(),
                Self::Float => v.is_f64(),
                Self::Bool => v.is_boolean(),
                Self::ListStr => list(Value::is_string),
                Self::ListInt => list(|x| x.is_i64()),
                Self::Messages => list(|t| t["role"].is_string() && t["content"].is_string() && t.as_object().is_some_and(|o| o.len() == 2)),
                Self::Provenance => v.as_object().is_some_and(|o| {
                    let typed = |t: &str, x: &Value| {
                        x.is_null()
                            || if t == "string" {
                                x.is_string()
                            } else if t == "int64" {
                                x.is_i64() || x.is_u64()
                            } else {
                                x.is_f64()
                            }
                    };
                    o.len() == PROVENANCE.len() && PROVENANCE.iter().all(|(k, t)| o.get(*k).is_some_and(|x| typed(t, x)))
                }),
            }
    }
}

/// The fields of a provenance and their dtypes, as `domain::provenance::Provenance` writes them.
const PROVENANCE: &[(&str, &str)] = &[
    ("policy_run", "string"),
    ("generate_run", "string"),
    ("checkpoint", "string"),
    ("checkpoint_sha256", "string"),
    ("temperature", "float64"),
    ("top_p", "float64"),
    ("max_new_tokens", "int64"),
    ("seed", "int64"),
    ("sample", "int64"),
    ("tokens", "int64"),
    ("finish_reason", "string"),
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::provenance::Provenance;

    #[test]
    fn a_provenance_serializes_as_the_declared_struct() {
        let p = serde_json::to_value(Provenance { temperature: Some(1.0), seed: Some(3), ..Provenance::default() }).unwrap();
        assert!(Col::Provenance.admits(&p), "{p}");
        assert_eq!(p.as_object().unwrap().len(), PROVENANCE.len());
    }
}
