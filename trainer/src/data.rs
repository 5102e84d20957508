//! Training data: the platform's export files (`comparisons`, `preferences`, `sft`), TRL-shaped
//! preference files with an explicit or implicit prompt, HH-RLHF dialogues and the platform's
//! item files, gzipped or not. Each line's shape is recognised by its fields; a malformed line
//! is an error that names the file, the line and the field.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{Map, Value};

use crate::rng::fnv1a;

/// Where a record came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// One human judgement over K ≥ 2 responses to a prompt: `ranks[i]` is response i's rank
/// (1 = best, equal ranks a tie). A preference pair is a ranking of two.
#[derive(Debug, Clone, PartialEq)]
pub struct Ranking {
    pub prompt: String,
    pub responses: Vec<String>,
    pub ranks: Vec<i16>,
    /// TRL's per-pair margin (`preferences` rows exported with `--margin`); 0 otherwise.
    pub margin: f64,
}

impl Ranking {
    /// The number of ordered (non-tied) pairs it implies.
    pub fn pairs(&self) -> usize {
        let r = &self.ranks;
        (0..r.len()).flat_map(|i| (0..r.len()).map(move |j| (i, j))).filter(|&(i, j)| r[i] < r[j]).count()
    }
}

/// A prompt and the response a labeller wrote for it (`sft` export, TRL prompt–completion).
#[derive(Debug, Clone, PartialEq)]
pub struct Demonstration {
    pub prompt: String,
    pub completion: String,
}

/// One line of a file to score.
#[derive(Debug, Clone, PartialEq)]
pub enum ScoreRow {
    /// A preference row: score `prompt + chosen` and `prompt + rejected`.
    Pair { prompt: String, chosen: String, rejected: String },
    /// A platform item (`{"id", "prompt", "responses": [{"text"}]}`): score each response.
    Item { id: Value, prompt: String, responses: Vec<String> },
}

/// Joins a prompt and a response into the text a model reads. A space is inserted only where
/// neither side has whitespace at the joint, as where the platform split `…Assistant:` from
/// its response, so an HH dialogue comes back exactly as it was written.
pub fn join(prompt: &str, response: &str) -> String {
    let gap = !prompt.is_empty() && !response.is_empty() && !prompt.ends_with(char::is_whitespace) && !response.starts_with(char::is_whitespace);
    let mut text = String::with_capacity(prompt.len() + response.len() + 1);
    text.push_str(prompt);
    if gap {
        text.push(' ');
    }
    text.push_str(response);
    text
}

/// The lines of a JSON Lines file, gunzipped when it starts with gzip's magic bytes; blank
/// lines are skipped. Yields `(line number, text)`.
pub fn lines(path: &Path) -> Result<impl Iterator<Item = Result<(usize, String)>>> {
    let mut file = BufReader::new(File::open(path).with_context(|| format!("cannot open {}", path.display()))?);
    let gzip = file.fill_buf().with_context(|| format!("cannot read {}", path.display()))?.starts_with(&[0x1f, 0x8b]);
    let reader: Box<dyn Read> = if gzip { Box::new(flate2::read::MultiGzDecoder::new(file)) } else { Box::new(file) };
    let path = path.to_path_buf();
    Ok(BufReader::new(reader).lines().enumerate().filter_map(move |(i, line)| match line {
        Ok(l) if l.trim().is_empty() => None,
        Ok(l) => Some(Ok((i + 1, l))),
        Err(e) => Some(Err(anyhow!("{}:{}: cannot read: {e}", path.display(), i + 1))),
    }))
}

fn object(text: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => bail!("expected a JSON object"),
        Err(e) => bail!("not valid JSON: {e}"),
    }
}

/// A text field: a string, or a conversation (`[{"role", "content"}]`) rendered as an HH
/// transcript (`\n\nHuman: …\n\nAssistant: …`).
fn text(obj: &Map<String, Value>, field: &str) -> Result<String> {
    match obj.get(field) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(turns)) => render_turns(turns).with_context(|| format!("field \"{field}\"")),
        Some(_) => bail!("field \"{field}\": expected a string or a list of {{\"role\", \"content\"}} turns"),
        None => bail!("field \"{field}\" is missing"),
    }
}

fn render_turns(turns: &[Value]) -> Result<String> {
    let mut out = String::new();
    for (i, turn) in turns.iter().enumerate() {
        let role = turn.get("role").and_then(Value::as_str);
        let content = turn.get("content").and_then(Value::as_str);
        let (Some(role), Some(content)) = (role, content) else { bail!("turn {i}: expected {{\"role\": string, \"content\": string}}") };
        let speaker = if role == "assistant" { "Assistant" } else { "Human" };
        out.push_str(&format!("\n\n{speaker}: {content}"));
    }
    Ok(out)
}

/// Splits two whole dialogues into their shared prompt and the two responses, at the last
/// `\n\nAssistant:` of their common prefix (TRL's implicit prompt; HH-RLHF's shape). The
/// responses keep their leading space, so [`join`] restores the dialogues exactly.
pub fn split_dialogues(chosen: &str, rejected: &str) -> Option<(String, String, String)> {
    const MARK: &str = "\n\nAssistant:";
    let common = chosen.bytes().zip(rejected.bytes()).take_while(|(a, b)| a == b).count();
    let mut end = common;
    while !chosen.is_char_boundary(end) {
        end -= 1;
    }
    let at = chosen[..end].rfind(MARK)? + MARK.len();
    Some((chosen[..at].to_string(), chosen[at..].to_string(), rejected[at..].to_string()))
}

/// `prompt`, `chosen`, `rejected` of a preference line, the prompt explicit or implicit.
fn preference(obj: &Map<String, Value>) -> Result<(String, String, String)> {
    let chosen = text(obj, "chosen")?;
    let rejected = text(obj, "rejected")?;
    if obj.contains_key("prompt") {
        return Ok((text(obj, "prompt")?, chosen, rejected));
    }
    split_dialogues(&chosen, &rejected)
        .ok_or_else(|| anyhow!("no \"prompt\" field, and \"chosen\"/\"rejected\" share no \"\\n\\nAssistant:\" turn to split the prompt at"))
}

fn item(obj: &Map<String, Value>) -> Result<(String, Vec<String>)> {
    let prompt = text(obj, "prompt")?;
    let Some(Value::Array(list)) = obj.get("responses") else { bail!("field \"responses\": expected a list") };
    let responses = list
        .iter()
        .enumerate()
        .map(|(i, r)| match r {
            Value::String(s) => Ok(s.clone()),
            _ => r
                .get("text")
                .and_then(Value::as_str)
                .map(str::to_string)
                .ok_or_else(|| anyhow!("field \"responses\", entry {i}: expected a string or {{\"text\": string}}")),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((prompt, responses))
}

/// Reads rankings for a reward model from any number of files: `comparisons` exports (rows of
/// one judgement regrouped into one ranking; ties kept as equal ranks), `preferences` / TRL /
/// HH-RLHF pair files, and item files with a `ranks` list. Rankings whose responses are all
/// tied carry no preference and are left out.
pub fn read_rankings(paths: &[PathBuf]) -> Result<Vec<Ranking>> {
    let mut out = Vec::new();
    for path in paths {
        // judgement id → index into `out`, and that ranking's response ids.
        let mut groups: HashMap<String, (usize, Vec<String>)> = HashMap::new();
        for line in lines(path)? {
            let (n, line) = line?;
            let at = |e: anyhow::Error| anyhow!("{}:{n}: {e:#}", path.display());
            let obj = object(&line).map_err(at)?;
            if obj.contains_key("judgement_id") {
                comparison_row(&obj, &mut groups, &mut out).map_err(at)?;
            } else if obj.contains_key("chosen") || obj.contains_key("rejected") {
                let (prompt, chosen, rejected) = preference(&obj).map_err(at)?;
                let margin = match obj.get("margin") {
                    None | Some(Value::Null) => 0.0,
                    Some(v) => v.as_f64().ok_or_else(|| at(anyhow!("field \"margin\": expected a number")))?,
                };
                out.push(Ranking { prompt, responses: vec![chosen, rejected], ranks: vec![1, 2], margin });
            } else if obj.contains_key("responses") && obj.contains_key("ranks") {
                let (prompt, responses) = item(&obj).map_err(at)?;
                let ranks: Vec<i16> =
                    serde_json::from_value(obj["ranks"].clone()).map_err(|_| at(anyhow!("field \"ranks\": expected a list of small integers")))?;
                if ranks.len() != responses.len() {
                    return Err(at(anyhow!("field \"ranks\": {} ranks for {} responses", ranks.len(), responses.len())));
                }
                out.push(Ranking { prompt, responses, ranks, margin: 0.0 });
            } else {
                return Err(at(anyhow!(
                    "not a comparison (\"judgement_id\"), a preference (\"chosen\", \"rejected\") or a ranked item (\"responses\", \"ranks\")"
                )));
            }
        }
    }
    out.retain(|r| r.responses.len() >= 2 && r.pairs() > 0);
    Ok(out)
}

fn comparison_row(obj: &Map<String, Value>, groups: &mut HashMap<String, (usize, Vec<String>)>, out: &mut Vec<Ranking>) -> Result<()> {
    let str_field = |f: &str| obj.get(f).and_then(Value::as_str).ok_or_else(|| anyhow!("field \"{f}\": expected a string"));
    let rank_field = |f: &str| obj.get(f).and_then(Value::as_i64).ok_or_else(|| anyhow!("field \"{f}\": expected an integer"));
    let judgement = str_field("judgement_id")?;
    let prompt = text(obj, "prompt")?;
    let (index, ids) = groups.entry(judgement.to_string()).or_insert_with(|| {
        out.push(Ranking { prompt: prompt.clone(), responses: Vec::new(), ranks: Vec::new(), margin: 0.0 });
        (out.len() - 1, Vec::new())
    });
    let ranking = &mut out[*index];
    if ranking.prompt != prompt {
        bail!("field \"prompt\": differs from an earlier row of judgement {judgement}")
    }
    for side in ["chosen", "rejected"] {
        let id = str_field(&format!("{side}_response_id"))?;
        let rank = rank_field(&format!("{side}_rank"))?;
        let rank = i16::try_from(rank).map_err(|_| anyhow!("field \"{side}_rank\": {rank} is out of range"))?;
        match ids.iter().position(|x| x == id) {
            Some(i) if ranking.ranks[i] != rank => {
                bail!("field \"{side}_rank\": response {id} has rank {rank} here but {} in an earlier row", ranking.ranks[i])
            }
            Some(_) => {}
            None => {
                ids.push(id.to_string());
                ranking.responses.push(text(obj, side)?);
                ranking.ranks.push(rank);
            }
        }
    }
    Ok(())
}

/// Reads demonstrations: `{"prompt", "completion"}` rows (the `sft` export, TRL's
/// prompt–completion shape), or preference rows, whose chosen response is the demonstration.
pub fn read_demonstrations(paths: &[PathBuf]) -> Result<Vec<Demonstration>> {
    let mut out = Vec::new();
    for path in paths {
        for line in lines(path)? {
            let (n, line) = line?;
            let at = |e: anyhow::Error| anyhow!("{}:{n}: {e:#}", path.display());
            let obj = object(&line).map_err(at)?;
            let (prompt, completion) = if obj.contains_key("completion") {
                (text(&obj, "prompt").map_err(at)?, text(&obj, "completion").map_err(at)?)
            } else if obj.contains_key("chosen") {
                let (p, c, _) = preference(&obj).map_err(at)?;
                (p, c)
            } else {
                return Err(at(anyhow!("expected \"prompt\" and \"completion\" (or a preference row's \"chosen\")")));
            };
            out.push(Demonstration { prompt, completion });
        }
    }
    Ok(out)
}

/// Reads a file to score: preference rows and item rows, in file order.
pub fn read_score_rows(path: &Path) -> Result<Vec<ScoreRow>> {
    let mut out = Vec::new();
    for line in lines(path)? {
        let (n, line) = line?;
        let at = |e: anyhow::Error| anyhow!("{}:{n}: {e:#}", path.display());
        let obj = object(&line).map_err(at)?;
        if obj.contains_key("chosen") || obj.contains_key("rejected") {
            let (prompt, chosen, rejected) = preference(&obj).map_err(at)?;
            out.push(ScoreRow::Pair { prompt, chosen, rejected });
        } else if obj.contains_key("responses") {
            let (prompt, responses) = item(&obj).map_err(at)?;
            out.push(ScoreRow::Item { id: obj.get("id").cloned().unwrap_or(Value::Null), prompt, responses });
        } else {
            return Err(at(anyhow!("expected a preference row (\"chosen\", \"rejected\") or an item (\"prompt\", \"responses\")")));
        }
    }
    Ok(out)
}

/// Reads prompts to sample from: any rows with a `prompt` (string or turns) — the platform's
/// `prompts` export, item files, preference rows (prompt explicit or implicit). Each comes
/// with its `id` (or `item_id`, else its line number).
pub fn read_prompts(path: &Path) -> Result<Vec<(Value, String)>> {
    let mut out = Vec::new();
    for line in lines(path)? {
        let (n, line) = line?;
        let at = |e: anyhow::Error| anyhow!("{}:{n}: {e:#}", path.display());
        let obj = object(&line).map_err(at)?;
        let prompt = if obj.contains_key("prompt") {
            text(&obj, "prompt").map_err(at)?
        } else if obj.contains_key("chosen") {
            preference(&obj).map_err(at)?.0
        } else {
            return Err(at(anyhow!("field \"prompt\" is missing")));
        };
        let id = obj.get("id").or_else(|| obj.get("item_id")).cloned().unwrap_or_else(|| Value::from(n));
        out.push((id, prompt));
    }
    Ok(out)
}

/// Splits records into (train, validation) by prompt: every record of a prompt lands on the
/// same side, decided by a stable hash of the seed and the prompt, so the split is the same on
/// every run and machine for the same seed. `fraction` is the validation share of prompts.
pub fn split_by_prompt<T>(records: Vec<T>, prompt: impl Fn(&T) -> &str, fraction: f64, seed: u64) -> (Vec<T>, Vec<T>) {
    let threshold = (fraction.clamp(0.0, 1.0) * u64::MAX as f64) as u64;
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for r in records {
        let mut h = crate::rng::Rng::new(fnv1a(prompt(&r).as_bytes()) ^ seed);
        if h.next_u64() < threshold {
            val.push(r)
        } else {
            train.push(r)
        }
    }
    (train, val)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn file(name: &str, body: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rl-data-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        path
    }

    #[test]
    fn comparisons_are_regrouped_into_rankings_with_ties() {
        let row = |j: &str, c: (&str, &str, i64), r: (&str, &str, i64)| {
            serde_json::json!({"judgement_id": j, "prompt": "P", "chosen": c.1, "chosen_response_id": c.0,
                "chosen_rank": c.2, "rejected": r.1, "rejected_response_id": r.0, "rejected_rank": r.2})
            .to_string()
        };
        let body = [
            row("j1", ("a", "A", 1), ("b", "B", 2)),
            row("j1", ("a", "A", 1), ("c", "C", 2)),
            row("j1", ("b", "B", 2), ("c", "C", 2)),
            row("j2", ("x", "X", 1), ("y", "Y", 1)),
        ]
        .join("\n");
        let rankings = read_rankings(&[file("c.jsonl", &body)]).unwrap();
        assert_eq!(rankings.len(), 1, "the all-tied judgement carries no preference");
        assert_eq!(rankings[0].responses, ["A", "B", "C"]);
        assert_eq!(rankings[0].ranks, [1, 2, 2]);
        assert_eq!(rankings[0].pairs(), 2);
    }

    #[test]
    fn gzipped_hh_dialogues_split_at_the_last_shared_assistant_turn() {
        let line = serde_json::json!({
            "chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: like this",
            "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: no"});
        let path = file("hh.jsonl.gz", "");
        let mut gz = flate2::write::GzEncoder::new(File::create(&path).unwrap(), flate2::Compression::fast());
        writeln!(gz, "{line}").unwrap();
        gz.finish().unwrap();
        let r = &read_rankings(&[path]).unwrap()[0];
        assert_eq!(r.prompt, "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant:");
        assert_eq!(r.responses, [" like this", " no"]);
        assert_eq!(join(&r.prompt, &r.responses[0]), line["chosen"].as_str().unwrap());
        assert_eq!(join("Q:", "A"), "Q: A");
    }

    #[test]
    fn a_malformed_line_names_file_line_and_field() {
        let path =
            file("bad.jsonl", "{\"prompt\": \"p\", \"chosen\": \"a\", \"rejected\": \"b\"}\n\n{\"prompt\": \"p\", \"chosen\": 3, \"rejected\": \"b\"}\n");
        let e = format!("{:#}", read_rankings(std::slice::from_ref(&path)).unwrap_err());
        assert!(e.contains("bad.jsonl:3") && e.contains("\"chosen\""), "{e}");
        let e = format!("{:#}", read_demonstrations(&[file("d.jsonl", "{\"prompt\": \"p\"}\nnot json")]).unwrap_err());
        assert!(e.contains("d.jsonl:1") && e.contains("completion"), "{e}");
    }

    #[test]
    fn split_is_by_prompt_and_deterministic() {
        let records: Vec<(String, usize)> = (0..2000).map(|i| (format!("prompt {}", i % 500), i)).collect();
        let (train, val) = split_by_prompt(records.clone(), |r| &r.0, 0.2, 42);
        let (train2, val2) = split_by_prompt(records.clone(), |r| &r.0, 0.2, 42);
        assert_eq!((train.len(), val.len()), (train2.len(), val2.len()));
        assert!(val.iter().all(|v| !train.iter().any(|t| t.0 == v.0)), "a prompt on both sides");
        let share = val.len() as f64 / records.len() as f64;
        assert!((0.14..0.26).contains(&share), "validation share {share}");
        let (_, val3) = split_by_prompt(records, |r| &r.0, 0.2, 43);
        assert_ne!(val.iter().map(|v| v.1).collect::<Vec<_>>(), val3.iter().map(|v| v.1).collect::<Vec<_>>());
    }
}
