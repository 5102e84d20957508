//! One line of an import file, parsed. Two shapes are accepted: an item
//! (`{"id"?, "prompt", "responses": [{"model", "text", "metadata"?}], "metadata"?}`) and a
//! preference pair in the TRL / HH-RLHF shape (`{"prompt"?, "chosen", "rejected"}`), whose
//! human choice is kept as an imported judgement.

use serde::Serialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::TaskKind;

/// One turn of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Turn {
    pub role: String,
    pub content: String,
}

/// One model output to be judged.
#[derive(Debug, Clone, Serialize)]
pub struct ResponseIn {
    pub model: String,
    pub text: String,
    pub metadata: Option<Value>,
}

/// A parsed line.
#[derive(Debug, Clone)]
pub struct ImportItem {
    pub external_id: String,
    pub prompt: Vec<Turn>,
    /// The prompt exactly as the file gave it, when it was a string (exports reproduce it verbatim).
    pub prompt_raw: Option<String>,
    pub responses: Vec<ResponseIn>,
    pub metadata: Option<Value>,
    /// Markdown shown to labellers above the prompt (the line's `"instructions"`).
    pub instructions: Option<String>,
    /// For a preference pair: response 0 was chosen over response 1.
    pub imported_choice: bool,
    /// A gold reference (`"gold"`): the item is a quality check, never in the ordinary queue.
    pub gold: Option<GoldRef>,
}

/// A gold item's reference judgement: ranks by response position (1 = best) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoldRef {
    pub ranks: Vec<i16>,
    pub explanation: String,
}

const MAX_TEXT: usize = 1 << 20;
/// Reference responses a demonstration item may carry (as many as a ranking has responses).
const MAX_REFERENCES: usize = 9;

/// Parses one JSON line for a project of `kind`. Errors name the field.
pub fn parse_line(line: &str, kind: TaskKind) -> Result<ImportItem, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("not valid JSON ({e})"))?;
    if let Some(path) = super::text::nul_path(&value) {
        return Err(format!("field \"{path}\": text may not contain the NUL character (\\u0000)"));
    }
    let Value::Object(mut obj) = value else {
        return Err("expected a JSON object".into());
    };
    let item = if obj.contains_key("chosen") || obj.contains_key("rejected") { parse_pair(&mut obj)? } else { parse_item(&mut obj)? };
    check_kind(&item, kind)?;
    Ok(item)
}

fn parse_item(obj: &mut Map<String, Value>) -> Result<ImportItem, String> {
    let (prompt, raw) = parse_prompt(obj.remove("prompt").ok_or("field \"prompt\": missing")?)?;
    let responses = match obj.remove("responses") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(rs)) => rs.into_iter().enumerate().map(|(i, r)| parse_response(i, r)).collect::<Result<_, _>>()?,
        Some(_) => return Err("field \"responses\": expected an array of {\"model\", \"text\"}".into()),
    };
    let id = take_id(obj)?;
    let instructions = take_instructions(obj)?;
    let gold = take_gold(obj, responses.len(), false)?;
    let metadata = take_metadata(obj)?;
    finish(id, (prompt, raw), responses, metadata, false).map(|item| ImportItem { instructions, gold, ..item })
}

fn parse_pair(obj: &mut Map<String, Value>) -> Result<ImportItem, String> {
    let chosen = take_string(obj, "chosen")?;
    let rejected = take_string(obj, "rejected")?;
    let (prompt, chosen, rejected) = match obj.remove("prompt") {
        Some(Value::Null) | None => {
            let (prompt, c, r) = split_pair(&chosen, &rejected)
                .ok_or("fields \"chosen\"/\"rejected\": no prompt given, and the two dialogues share no \"\\n\\nAssistant:\" turn to split at")?;
            ((hh_turns(prompt), Some(prompt.to_string())), c.to_string(), r.to_string())
        }
        Some(p) => (parse_prompt(p)?, chosen, rejected),
    };
    let id = take_id(obj)?;
    let instructions = take_instructions(obj)?;
    let gold = take_gold(obj, 2, true)?;
    let metadata = take_metadata(obj)?;
    let responses =
        vec![ResponseIn { model: "imported".into(), text: chosen, metadata: None }, ResponseIn { model: "imported".into(), text: rejected, metadata: None }];
    // A gold pair's choice is its reference, never an ordinary (exported) judgement.
    finish(id, prompt, responses, metadata, gold.is_none()).map(|item| ImportItem { instructions, gold, ..item })
}

/// `"gold"`: `{"ranking": [[0], [2, 1], ...], "explanation"?}` with tiers of response indices
/// (0-based, best first; a tier of several is a tie); for a preference pair `true` or
/// `{"explanation"?}` (the chosen response wins).
fn take_gold(obj: &mut Map<String, Value>, n: usize, pair: bool) -> Result<Option<GoldRef>, String> {
    let explanation = |o: &Map<String, Value>| match o.get("explanation") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) if s.len() <= 10_000 => Ok(s.clone()),
        _ => Err("field \"gold.explanation\": expected a string of at most 10000 bytes".to_string()),
    };
    match obj.remove("gold") {
        None | Some(Value::Null) | Some(Value::Bool(false)) => Ok(None),
        Some(Value::Bool(true)) if pair => Ok(Some(GoldRef { ranks: vec![1, 2], explanation: String::new() })),
        Some(Value::Object(o)) if pair && !o.contains_key("ranking") => Ok(Some(GoldRef { ranks: vec![1, 2], explanation: explanation(&o)? })),
        Some(Value::Object(o)) => {
            let tiers: Vec<Vec<usize>> = o
                .get("ranking")
                .cloned()
                .and_then(|r| serde_json::from_value(r).ok())
                .ok_or("field \"gold.ranking\": expected tiers of response indices, best first, e.g. [[0], [2, 1]]")?;
            Ok(Some(GoldRef { ranks: gold_ranks(&tiers, n)?, explanation: explanation(&o)? }))
        }
        Some(_) => Err("field \"gold\": expected {\"ranking\": [[...], ...], \"explanation\": \"...\"}".into()),
    }
}

/// Ranks by position from tiers of 0-based response indices; every response exactly once,
/// and not all tied.
fn gold_ranks(tiers: &[Vec<usize>], n: usize) -> Result<Vec<i16>, String> {
    let mut ranks = vec![0i16; n];
    for (t, tier) in tiers.iter().enumerate() {
        if tier.is_empty() {
            return Err(format!("field \"gold.ranking\": tier {} is empty", t + 1));
        }
        for &i in tier {
            match ranks.get_mut(i) {
                None => return Err(format!("field \"gold.ranking\": {i} is not a response index (0 to {})", n.saturating_sub(1))),
                Some(r) if *r != 0 => return Err(format!("field \"gold.ranking\": response {i} appears more than once")),
                Some(r) => *r = t as i16 + 1,
            }
        }
    }
    if ranks.contains(&0) {
        return Err(format!("field \"gold.ranking\": must rank all {n} responses"));
    }
    if tiers.len() < 2 {
        return Err("field \"gold.ranking\": a reference must prefer at least one response to another".into());
    }
    Ok(ranks)
}

fn finish(
    id: Option<String>,
    (prompt, prompt_raw): (Vec<Turn>, Option<String>),
    responses: Vec<ResponseIn>,
    metadata: Option<Value>,
    choice: bool,
) -> Result<ImportItem, String> {
    let external_id = id.unwrap_or_else(|| content_id(&prompt, &responses));
    Ok(ImportItem { external_id, prompt, prompt_raw, responses, metadata, instructions: None, imported_choice: choice, gold: None })
}

/// `sha256:` and the hex digest of the prompt and responses, for lines without an id.
fn content_id(prompt: &[Turn], responses: &[ResponseIn]) -> String {
    let texts: Vec<(&str, &str)> = responses.iter().map(|r| (r.model.as_str(), r.text.as_str())).collect();
    let canon = serde_json::to_vec(&(prompt, texts)).unwrap_or_default();
    format!("sha256:{}", hex::encode(Sha256::digest(canon)))
}

pub fn check_kind(item: &ImportItem, kind: TaskKind) -> Result<(), String> {
    let n = item.responses.len();
    match kind {
        TaskKind::Ranking if !(2..=9).contains(&n) => Err(format!("field \"responses\": a ranking project needs 2 to 9 responses, got {n}")),
        TaskKind::Pairwise if n != 2 => Err(format!("field \"responses\": a pairwise project needs exactly 2 responses, got {n}")),
        TaskKind::Demonstration if n > MAX_REFERENCES => {
            Err(format!("field \"responses\": a demonstration item takes at most {MAX_REFERENCES} reference responses, got {n}"))
        }
        _ => Ok(()),
    }
}

fn parse_prompt(v: Value) -> Result<(Vec<Turn>, Option<String>), String> {
    match v {
        Value::String(s) if s.trim().is_empty() => Err("field \"prompt\": empty".into()),
        Value::String(s) if s.len() > MAX_TEXT => Err("field \"prompt\": longer than 1 MiB".into()),
        Value::String(s) if s.trim_start().starts_with("Human:") => Ok((hh_turns(&s), Some(s))),
        Value::String(s) => Ok((vec![Turn { role: "user".into(), content: s.clone() }], Some(s))),
        Value::Array(turns) if !turns.is_empty() => turns
            .into_iter()
            .enumerate()
            .map(|(i, t)| serde_json::from_value::<Turn>(t).map_err(|e| format!("field \"prompt[{i}]\": expected {{\"role\", \"content\"}} ({e})")))
            .collect::<Result<_, _>>()
            .map(|t| (t, None)),
        _ => Err("field \"prompt\": expected a string or a non-empty array of {\"role\", \"content\"}".into()),
    }
}

fn parse_response(i: usize, v: Value) -> Result<ResponseIn, String> {
    let Value::Object(mut o) = v else {
        return Err(format!("field \"responses[{i}]\": expected an object {{\"model\", \"text\"}}"));
    };
    let text = match o.remove("text") {
        Some(Value::String(s)) if s.len() <= MAX_TEXT => s,
        Some(Value::String(_)) => return Err(format!("field \"responses[{i}].text\": longer than 1 MiB")),
        _ => return Err(format!("field \"responses[{i}].text\": missing or not a string")),
    };
    let model = match o.remove("model") {
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 200 => s,
        None | Some(Value::Null) => "unknown".into(),
        _ => return Err(format!("field \"responses[{i}].model\": expected a string of 1-200 characters")),
    };
    let metadata = o.remove("metadata").filter(|m| !m.is_null());
    Ok(ResponseIn { model, text, metadata })
}

fn take_string(obj: &mut Map<String, Value>, field: &str) -> Result<String, String> {
    match obj.remove(field) {
        Some(Value::String(s)) if s.len() <= MAX_TEXT => Ok(s),
        Some(Value::String(_)) => Err(format!("field {field:?}: longer than 1 MiB")),
        None => Err(format!("field {field:?}: missing")),
        Some(_) => Err(format!("field {field:?}: expected a string")),
    }
}

/// `instructions`: absent, null or blank for none, else a string of at most 1 MiB.
fn take_instructions(obj: &mut Map<String, Value>) -> Result<Option<String>, String> {
    match obj.remove("instructions") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.len() > MAX_TEXT => Err("field \"instructions\": longer than 1 MiB".into()),
        Some(Value::String(s)) => Ok((!s.trim().is_empty()).then_some(s)),
        Some(_) => Err("field \"instructions\": expected a string (Markdown shown above the prompt)".into()),
    }
}

fn take_id(obj: &mut Map<String, Value>) -> Result<Option<String>, String> {
    match obj.remove("id") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 200 => Ok(Some(s)),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => Err("field \"id\": expected a string of 1-200 characters or a number".into()),
    }
}

/// `metadata`, with any other unknown top-level fields kept inside it so nothing is lost.
fn take_metadata(obj: &mut Map<String, Value>) -> Result<Option<Value>, String> {
    let mut meta = match obj.remove("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => return Err("field \"metadata\": expected an object".into()),
    };
    for (k, v) in std::mem::take(obj) {
        meta.insert(k, v);
    }
    Ok((!meta.is_empty()).then_some(Value::Object(meta)))
}

/// Splits two HH dialogues into their shared prompt and the two responses: at the last
/// `\n\nAssistant:` of their common prefix (for well-formed pairs, the last turn of each;
/// where the dialogues diverge earlier, as a few HH-RLHF rows do, at that turn, as TRL does).
/// Nothing is trimmed: prompt + chosen == chosen and prompt + rejected == rejected, byte for
/// byte, so each response keeps the space that follows `Assistant:` (as TRL's split does).
pub fn split_pair<'a>(chosen: &'a str, rejected: &'a str) -> Option<(&'a str, &'a str, &'a str)> {
    const MARK: &str = "\n\nAssistant:";
    let common = chosen.bytes().zip(rejected.bytes()).take_while(|(a, b)| a == b).count();
    let mut end = common.min(chosen.len());
    while !chosen.is_char_boundary(end) {
        end -= 1;
    }
    let at = chosen[..end].rfind(MARK)? + MARK.len();
    Some((&chosen[..at], &chosen[at..], &rejected[at..]))
}

/// Turns of an HH transcript (`\n\nHuman: …\n\nAssistant: …`); a trailing empty assistant turn is dropped.
pub fn hh_turns(text: &str) -> Vec<Turn> {
    let mut turns: Vec<Turn> = Vec::new();
    let mut rest = text.trim_start_matches('\n');
    loop {
        let (role, body) = if let Some(b) = rest.strip_prefix("Human:") {
            ("user", b)
        } else if let Some(b) = rest.strip_prefix("Assistant:") {
            ("assistant", b)
        } else {
            break;
        };
        let end = [body.find("\n\nHuman:"), body.find("\n\nAssistant:")].into_iter().flatten().min().unwrap_or(body.len());
        turns.push(Turn { role: role.into(), content: body[..end].trim().to_string() });
        rest = body[end..].trim_start_matches('\n');
    }
    if turns.last().is_some_and(|t| t.role == "assistant" && t.content.is_empty()) {
        turns.pop();
    }
    if turns.is_empty() {
        turns.push(Turn { role: "user".into(), content: text.trim().to_string() });
    }
    turns
}

/// The prompt as one string: the content of a lone user turn, else an HH-style transcript
/// ending in `\n\nAssistant:` (the shape TRL's reward trainer takes).
pub fn prompt_text(turns: &[Turn]) -> String {
    if let [t] = turns {
        if t.role == "user" {
            return t.content.clone();
        }
    }
    let mut s = String::new();
    for t in turns {
        let who = if t.role == "assistant" {
            "Assistant"
        } else if t.role == "system" {
            "System"
        } else {
            "Human"
        };
        s.push_str(&format!("\n\n{who}: {}", t.content));
    }
    s.push_str("\n\nAssistant:");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_are_a_text_of_their_own_not_metadata() {
        let item = parse_line(r#"{"prompt": "p", "responses": [], "instructions": "Judge **tone** only", "other": 1}"#, TaskKind::Demonstration).unwrap();
        assert_eq!(item.instructions.as_deref(), Some("Judge **tone** only"));
        assert_eq!(item.metadata, Some(serde_json::json!({"other": 1})));
        assert_eq!(parse_line(r#"{"prompt": "p", "instructions": "  "}"#, TaskKind::Demonstration).unwrap().instructions, None);
        let pair = parse_line(r#"{"prompt": "p", "chosen": "a", "rejected": "b", "instructions": "i"}"#, TaskKind::Pairwise).unwrap();
        assert_eq!(pair.instructions.as_deref(), Some("i"));
        for bad in [r#""instructions": 3"#, r#""instructions": ["x"]"#] {
            let err = parse_line(&format!(r#"{{"prompt": "p", {bad}}}"#), TaskKind::Demonstration).unwrap_err();
            assert!(err.starts_with("field \"instructions\": expected a string"), "{err}");
        }
        let long = format!(r#"{{"prompt": "p", "instructions": "{}"}}"#, "x".repeat((1 << 20) + 1));
        assert_eq!(parse_line(&long, TaskKind::Demonstration).unwrap_err(), "field \"instructions\": longer than 1 MiB");
    }

    #[test]
    fn an_hh_dialogue_splits_at_its_last_assistant_turn() {
        let line = r#"{"chosen": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: like this", "rejected": "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: no"}"#;
        let item = parse_line(line, TaskKind::Pairwise).unwrap();
        assert_eq!(item.prompt.len(), 3);
        assert_eq!(item.prompt[2].content, "how?");
        assert_eq!(item.responses[0].text, " like this");
        assert_eq!(item.responses[1].text, " no");
        assert!(item.imported_choice);
        assert_eq!(prompt_text(&item.prompt), "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant:");
    }

    #[test]
    fn errors_name_the_field() {
        let e = parse_line(r#"{"prompt": "p", "responses": [{"model": "a"}]}"#, TaskKind::Ranking).unwrap_err();
        assert!(e.contains("responses[0].text"), "{e}");
        let e = parse_line(r#"{"responses": []}"#, TaskKind::Ranking).unwrap_err();
        assert!(e.contains("\"prompt\""), "{e}");
        let e = parse_line(r#"{"prompt": "p", "responses": [{"text": "a"}]}"#, TaskKind::Ranking).unwrap_err();
        assert!(e.contains("2 to 9"), "{e}");
    }

    #[test]
    fn a_nul_character_anywhere_is_refused_with_its_field() {
        for (line, field) in [
            (r#"{"prompt": "a\u0000", "responses": [{"text": "a"}, {"text": "b"}]}"#, "prompt"),
            (r#"{"prompt": [{"role": "user", "content": "\u0000"}], "responses": [{"text": "a"}, {"text": "b"}]}"#, "prompt[0].content"),
            (r#"{"prompt": "p", "responses": [{"text": "a"}, {"text": "b\u0000"}]}"#, "responses[1].text"),
            (r#"{"prompt": "p", "responses": [{"text": "a"}, {"text": "b"}], "metadata": {"k\u0000": 1}}"#, "metadata.k\\u0000"),
            (r#"{"chosen": "\n\nHuman: a\n\nAssistant: b\u0000", "rejected": "\n\nHuman: a\n\nAssistant: c"}"#, "chosen"),
        ] {
            let e = parse_line(line, TaskKind::Pairwise).unwrap_err();
            assert!(e.starts_with(&format!("field \"{field}\": text may not contain the NUL")), "{line}: {e}");
        }
    }

    #[test]
    fn a_demonstration_item_takes_at_most_nine_references() {
        let many: Vec<String> = (0..10).map(|i| format!(r#"{{"text": "r{i}"}}"#)).collect();
        let e = parse_line(&format!(r#"{{"prompt": "p", "responses": [{}]}}"#, many.join(",")), TaskKind::Demonstration).unwrap_err();
        assert!(e.contains("at most 9"), "{e}");
        assert!(parse_line(r#"{"prompt": "p"}"#, TaskKind::Demonstration).is_ok());
    }

    #[test]
    fn lines_without_an_id_get_a_content_id_and_unknown_fields_are_kept() {
        let a = parse_line(r#"{"prompt": "p", "responses": [{"text": "a"}, {"text": "b"}], "reference": "r"}"#, TaskKind::Ranking).unwrap();
        let b = parse_line(r#"{"prompt": "p", "responses": [{"text": "a"}, {"text": "b"}]}"#, TaskKind::Ranking).unwrap();
        assert!(a.external_id.starts_with("sha256:"));
        assert_eq!(a.external_id, b.external_id);
        assert_eq!(a.metadata.unwrap()["reference"], "r");
    }

    #[test]
    fn a_gold_reference_is_read_from_tiers_of_indices_and_pairs_default_to_chosen() {
        let item = parse_line(
            r#"{"prompt": "p", "responses": [{"text": "a"}, {"text": "b"}, {"text": "c"}], "gold": {"ranking": [[2], [0, 1]], "explanation": "c is right"}}"#,
            TaskKind::Ranking,
        )
        .unwrap();
        assert_eq!(item.gold, Some(GoldRef { ranks: vec![2, 2, 1], explanation: "c is right".into() }));
        assert!(item.metadata.is_none());
        let pair =
            parse_line(r#"{"chosen": "\n\nHuman: hi\n\nAssistant: hello", "rejected": "\n\nHuman: hi\n\nAssistant: go", "gold": true}"#, TaskKind::Pairwise)
                .unwrap();
        assert_eq!(pair.gold.map(|g| g.ranks), Some(vec![1, 2]));
        assert!(!pair.imported_choice);
        let bad = |g: &str| {
            parse_line(&format!(r#"{{"prompt": "p", "responses": [{{"text": "a"}}, {{"text": "b"}}], "gold": {g}}}"#), TaskKind::Ranking).unwrap_err()
        };
        assert!(bad(r#"{"ranking": [[0], [5]]}"#).contains("not a response index"));
        assert!(bad(r#"{"ranking": [[0]]}"#).contains("must rank all 2"));
        assert!(bad(r#"{"ranking": [[0, 1]]}"#).contains("prefer at least one"));
        assert!(bad(r#"{"ranking": "a"}"#).starts_with("field \"gold.ranking\""));
        assert!(bad(r#"3"#).starts_with("field \"gold\""));
    }
}

#[cfg(test)]
mod split_tests {
    use super::split_pair;

    #[test]
    fn dialogues_that_diverge_before_their_last_turn_split_where_they_diverge() {
        let c = "\n\nHuman: a\n\nAssistant: b\n\nHuman: c\n\nAssistant: d";
        let r = "\n\nHuman: a\n\nAssistant: x";
        assert_eq!(split_pair(c, r), Some(("\n\nHuman: a\n\nAssistant:", " b\n\nHuman: c\n\nAssistant: d", " x")));
        assert_eq!(split_pair("no turns", "at all"), None);
    }

    #[test]
    fn prompt_and_response_join_back_to_the_original_dialogue() {
        let c = "\n\nHuman: hi\n\nAssistant: Sounds good";
        let r = "\n\nHuman: hi\n\nAssistant:  two spaces";
        let (p, chosen, rejected) = split_pair(c, r).unwrap();
        assert_eq!(format!("{p}{chosen}"), c);
        assert_eq!(format!("{p}{rejected}"), r);
    }
}
