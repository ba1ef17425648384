//! JSONL records: `{"text"}`, `{"prompt","completion"}` or `{"messages"}`.
//! Every problem is reported as `file:line: reason`.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::tokenizer::Message;

/// One training record, as the user wrote it.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Plain text; every token is trained.
    Text(String),
    /// A prompt and its completion; only the completion is trained.
    PromptCompletion {
        /// Context, not trained.
        prompt: String,
        /// Target, trained.
        completion: String,
    },
    /// A conversation rendered with the chat template; assistant turns trained.
    Messages(Vec<Message>),
}

/// A record with the line it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// 1-based line number in the file.
    pub line: usize,
    /// The record.
    pub record: Record,
}

fn data_err(file: &str, line: usize, reason: impl Into<String>) -> Error {
    Error::Data {
        file: file.to_string(),
        line,
        reason: reason.into(),
    }
}

fn string_field(
    obj: &serde_json::Map<String, Value>,
    key: &str,
) -> std::result::Result<String, String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("field `{key}` is empty")),
        Some(other) => Err(format!(
            "field `{key}` should be a string, is {}",
            kind(other)
        )),
        None => Err(format!("field `{key}` is missing")),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn messages(v: &Value) -> std::result::Result<Vec<Message>, String> {
    let list = v
        .as_array()
        .ok_or_else(|| format!("field `messages` should be an array, is {}", kind(v)))?;
    if list.is_empty() {
        return Err("field `messages` is empty".into());
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let obj = m
            .as_object()
            .ok_or_else(|| format!("messages[{i}] should be an object, is {}", kind(m)))?;
        let role = string_field(obj, "role").map_err(|e| format!("messages[{i}]: {e}"))?;
        if !matches!(role.as_str(), "system" | "user" | "assistant") {
            return Err(format!(
                "messages[{i}]: role `{role}` is not one of system, user, assistant"
            ));
        }
        let content = string_field(obj, "content").map_err(|e| format!("messages[{i}]: {e}"))?;
        out.push(Message { role, content });
    }
    if !out.iter().any(|m| m.role == "assistant") {
        return Err("no assistant message, so nothing would be trained".into());
    }
    Ok(out)
}

/// Parses one JSON object into a record.
pub fn parse_record(v: &Value) -> std::result::Result<Record, String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, found {}", kind(v)))?;
    if let Some(m) = obj.get("messages") {
        return messages(m).map(Record::Messages);
    }
    if obj.contains_key("prompt") || obj.contains_key("completion") {
        return Ok(Record::PromptCompletion {
            prompt: string_field(obj, "prompt")?,
            completion: string_field(obj, "completion")?,
        });
    }
    if obj.contains_key("text") {
        return string_field(obj, "text").map(Record::Text);
    }
    let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    Err(format!(
        "unknown record: expected `text`, `prompt`+`completion` or `messages`, found keys {keys:?}"
    ))
}

/// Reads every line of JSONL bytes: the good records and, separately, every
/// bad line with its reason. Blank lines are skipped; a UTF-8 BOM and CRLF
/// line ends are accepted.
pub fn scan_jsonl(file: &str, bytes: &[u8]) -> (Vec<Line>, Vec<Error>) {
    let mut out = Vec::new();
    let mut errors: Vec<Error> = Vec::new();
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let raw = if line == 1 {
            raw.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(raw)
        } else {
            raw
        };
        let Ok(text) = std::str::from_utf8(raw) else {
            errors.push(data_err(file, line, "line is not valid UTF-8"));
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        let parsed = serde_json::from_str::<Value>(text)
            .map_err(|e| format!("invalid JSON at column {}: {e}", e.column()))
            .and_then(|v| parse_record(&v));
        match parsed {
            Ok(record) => out.push(Line { line, record }),
            Err(reason) => errors.push(data_err(file, line, reason)),
        }
    }
    (out, errors)
}

/// Parses JSONL bytes, failing on any bad line. All bad lines are reported
/// together (up to 20) so a user can fix a file in one go.
pub fn parse_jsonl(file: &str, bytes: &[u8]) -> Result<Vec<Line>> {
    let (out, mut errors) = scan_jsonl(file, bytes);
    match errors.len() {
        0 if out.is_empty() => Err(data_err(file, 1, "the file has no records")),
        0 => Ok(out),
        1 => Err(errors.remove(0)),
        n => {
            let shown: Vec<String> = errors.iter().take(20).map(|e| e.to_string()).collect();
            let more = if n > 20 {
                format!("\n... and {} more", n - 20)
            } else {
                String::new()
            };
            Err(Error::Data {
                file: file.to_string(),
                line: match &errors[0] {
                    Error::Data { line, .. } => *line,
                    _ => 1,
                },
                reason: format!("{n} bad lines:\n{}{more}", shown.join("\n")),
            })
        }
    }
}
