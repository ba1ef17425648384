//! One training record, whatever file it came from, and the JSON schemas
//! people write records in: `{"messages"}` (OpenAI/TRL), ShareGPT
//! `{"conversations"}`, Alpaca `{"instruction","input","output"}`,
//! `{"prompt","completion"}` and `{"text"}`.

use serde_json::{Map, Value};

use crate::error::Error;
use crate::tokenizer::Message;

/// One training record, as the user wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Record {
    /// Plain text; every token is trained, cut to the sequence length.
    Text(String),
    /// A document from a plain-text file: every token trained, split into
    /// windows of the sequence length rather than cut.
    Document(String),
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

impl Record {
    /// Bytes of text it holds.
    pub fn text_len(&self) -> usize {
        match self {
            Record::Text(t) | Record::Document(t) => t.len(),
            Record::PromptCompletion { prompt, completion } => prompt.len() + completion.len(),
            Record::Messages(m) => m.iter().map(|m| m.content.len()).sum(),
        }
    }
}

/// Which schema a JSON record (or a table's columns) used; a file keeps to one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schema {
    /// `{"messages": [{"role", "content"}, ...]}`
    Messages,
    /// `{"conversations": [{"from", "value"}, ...]}`
    ShareGpt,
    /// `{"instruction", "input", "output"}`
    Alpaca,
    /// `{"prompt", "completion"}`
    PromptCompletion,
    /// `{"text"}`, a table's text column, or plain-text documents.
    Text,
    /// A table's prompt and response (and system) columns.
    Columns,
}

impl Schema {
    /// How the schema is named in messages.
    pub fn name(self) -> &'static str {
        match self {
            Schema::Messages => "messages",
            Schema::ShareGpt => "ShareGPT conversations",
            Schema::Alpaca => "Alpaca instruction/input/output",
            Schema::PromptCompletion => "prompt/completion",
            Schema::Text => "text",
            Schema::Columns => "prompt/response columns",
        }
    }
}

/// A record with the line it starts on.
#[derive(Debug, Clone, PartialEq)]
pub struct NumberedRecord {
    /// 1-based line number in the file.
    pub line: usize,
    /// The record.
    pub record: Record,
}

pub(crate) fn data_err(file: &str, line: usize, reason: impl Into<String>) -> Error {
    Error::Data {
        file: file.to_string(),
        line,
        reason: reason.into(),
    }
}

fn string_field(obj: &Map<String, Value>, key: &str) -> std::result::Result<String, String> {
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

/// Checks a conversation's turns: an optional system message first, then
/// user and assistant alternating from a user turn, with an assistant turn
/// somewhere (or nothing would be trained).
pub fn check_turns(messages: &[Message]) -> std::result::Result<(), String> {
    let mut expect_user = true;
    for (i, m) in messages.iter().enumerate() {
        match m.role.as_str() {
            "system" if i == 0 => {}
            "system" => {
                return Err(format!("turn {i}: a system message may only come first"));
            }
            "user" if expect_user => expect_user = false,
            "assistant" if !expect_user => expect_user = true,
            role => {
                let want = if expect_user { "user" } else { "assistant" };
                return Err(format!(
                    "turn {i}: `{role}` where a `{want}` turn should be (turns alternate user, assistant)"
                ));
            }
        }
    }
    if !messages.iter().any(|m| m.role == "assistant") {
        return Err("no assistant turn, so nothing would be trained".into());
    }
    Ok(())
}

/// The turns of a `messages` (`role`/`content`) or ShareGPT
/// (`from`/`value`, human/gpt/system) list.
fn turns(v: &Value, field: &str, share_gpt: bool) -> std::result::Result<Vec<Message>, String> {
    let list = v
        .as_array()
        .ok_or_else(|| format!("field `{field}` should be an array, is {}", kind(v)))?;
    if list.is_empty() {
        return Err(format!("field `{field}` is empty"));
    }
    let (role_key, content_key) = if share_gpt {
        ("from", "value")
    } else {
        ("role", "content")
    };
    let mut out = Vec::with_capacity(list.len());
    for (i, m) in list.iter().enumerate() {
        let obj = m
            .as_object()
            .ok_or_else(|| format!("{field}[{i}] should be an object, is {}", kind(m)))?;
        let role = string_field(obj, role_key).map_err(|e| format!("{field}[{i}]: {e}"))?;
        let role = match (share_gpt, role.as_str()) {
            (false, "system" | "user" | "assistant") => role,
            (true, "system") => role,
            (true, "human" | "user") => "user".into(),
            (true, "gpt" | "assistant") => "assistant".into(),
            (false, _) => {
                return Err(format!(
                    "{field}[{i}]: role `{role}` is not one of system, user, assistant"
                ));
            }
            (true, _) => {
                return Err(format!(
                    "{field}[{i}]: `from` is `{role}`, not one of system, human, gpt"
                ));
            }
        };
        let content = string_field(obj, content_key).map_err(|e| format!("{field}[{i}]: {e}"))?;
        out.push(Message { role, content });
    }
    check_turns(&out).map_err(|e| format!("{field}: {e}"))?;
    Ok(out)
}

/// Which schema an object follows, from its keys.
pub fn schema_of(obj: &Map<String, Value>) -> Option<Schema> {
    if obj.contains_key("messages") {
        Some(Schema::Messages)
    } else if obj.contains_key("conversations") {
        Some(Schema::ShareGpt)
    } else if obj.contains_key("instruction") || obj.contains_key("output") {
        Some(Schema::Alpaca)
    } else if obj.contains_key("prompt") || obj.contains_key("completion") {
        Some(Schema::PromptCompletion)
    } else if obj.contains_key("text") {
        Some(Schema::Text)
    } else {
        None
    }
}

/// An instruction (and its optional input) as one user turn, the output as
/// the assistant's: Alpaca data trains through the model's chat template.
pub fn instruction_turns(system: Option<String>, prompt: String, response: String) -> Vec<Message> {
    let mut out = Vec::with_capacity(3);
    if let Some(content) = system {
        out.push(Message {
            role: "system".into(),
            content,
        });
    }
    out.push(Message {
        role: "user".into(),
        content: prompt,
    });
    out.push(Message {
        role: "assistant".into(),
        content: response,
    });
    out
}

/// Parses one JSON object into a record and says which schema it used.
pub fn parse_record(v: &Value) -> std::result::Result<(Schema, Record), String> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("expected a JSON object, found {}", kind(v)))?;
    let Some(schema) = schema_of(obj) else {
        let keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        return Err(format!(
            "unknown record: expected `messages`, `conversations`, `instruction`+`output`, \
             `prompt`+`completion` or `text`, found keys {keys:?}"
        ));
    };
    let record = match schema {
        Schema::Messages => Record::Messages(turns(&obj["messages"], "messages", false)?),
        Schema::ShareGpt => Record::Messages(turns(&obj["conversations"], "conversations", true)?),
        Schema::Alpaca => {
            let instruction = string_field(obj, "instruction")?;
            let output = string_field(obj, "output")?;
            let prompt = match obj.get("input") {
                None | Some(Value::Null) => instruction,
                Some(Value::String(s)) if s.trim().is_empty() => instruction,
                Some(Value::String(s)) => format!("{instruction}\n\n{s}"),
                Some(other) => {
                    return Err(format!(
                        "field `input` should be a string, is {}",
                        kind(other)
                    ));
                }
            };
            let system = match obj.get("system") {
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
                _ => None,
            };
            Record::Messages(instruction_turns(system, prompt, output))
        }
        Schema::PromptCompletion => Record::PromptCompletion {
            prompt: string_field(obj, "prompt")?,
            completion: string_field(obj, "completion")?,
        },
        Schema::Text => Record::Text(string_field(obj, "text")?),
        Schema::Columns => return Err("table columns are not a JSON schema".into()),
    };
    Ok((schema, record))
}
