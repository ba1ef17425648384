//! Rendering records into token ids and a loss mask.
//!
//! * text: all tokens trained, EOS appended (as TRL's SFT does);
//! * prompt/completion: prompt then completion, completion + EOS trained;
//! * messages: the chat template renders the conversation; tokens inside
//!   each assistant turn (from the end of the generation prompt through the
//!   end-of-turn token) are trained, found by rendering each prefix and
//!   mapping byte spans through the tokenizer's offsets.

use crate::data::record::Record;
use crate::error::{Error, Result};
use crate::tokenizer::{Message, TextTokenizer};

/// One tokenized example.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    /// Token ids.
    pub ids: Vec<u32>,
    /// `trained[t]`: whether the loss predicts `ids[t]` from `ids[..t]`.
    pub trained: Vec<bool>,
}

impl Example {
    /// Tokens whose prediction is trained (position 0 can never be).
    pub fn trained_tokens(&self) -> usize {
        self.trained.iter().skip(1).filter(|&&m| m).count()
    }

    /// Trained tokens within the first `len` tokens (what is left to train
    /// once the example is cut to `len`).
    pub fn trained_within(&self, len: usize) -> usize {
        self.trained
            .iter()
            .take(len)
            .skip(1)
            .filter(|&&m| m)
            .count()
    }

    /// Cuts the example to at most `len` tokens.
    pub fn truncate(&mut self, len: usize) {
        self.ids.truncate(len);
        self.trained.truncate(len);
    }

    /// The example cut to at most `len` tokens.
    pub fn cut(mut self, len: usize) -> Self {
        self.truncate(len);
        self
    }
}

/// Byte spans `[start, end)` of `text` to train, tokenized with offsets;
/// `add_special` adds the model's BOS (not for chat-template output).
fn tokenize_spans(
    tok: &TextTokenizer,
    text: &str,
    spans: &[(usize, usize)],
    add_special: bool,
) -> Result<Example> {
    let (ids, offsets) = tok.encode_with_offsets(text, add_special)?;
    let trained = offsets
        .iter()
        .map(|&(s, e)| e > s && spans.iter().any(|&(a, b)| s >= a && s < b))
        .collect();
    Ok(Example { ids, trained })
}

/// Renders a conversation and marks its assistant turns.
fn render_messages(tok: &TextTokenizer, messages: &[Message]) -> Result<Example> {
    let full = tok.apply_chat_template(messages, false)?;
    let eos = tok.turn_end();
    let mut spans = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        if m.role != "assistant" {
            continue;
        }
        let prompt = tok.apply_chat_template(&messages[..i], true)?;
        let through = tok.apply_chat_template(&messages[..=i], false)?;
        if !full.starts_with(&through) || !through.starts_with(&prompt) {
            return Err(Error::setting(
                "chat template",
                "the template does not render conversations prefix by prefix, so assistant \
                 turns cannot be located",
            ));
        }
        // Train through the end-of-turn token; whitespace after it is context.
        let turn = &through[prompt.len()..];
        let end = match turn.rfind(&eos) {
            Some(p) if !eos.is_empty() => prompt.len() + p + eos.len(),
            _ => through.len(),
        };
        spans.push((prompt.len(), end));
    }
    let mut ex = tokenize_spans(tok, &full, &spans, false)?;
    if !full[spans.last().map_or(0, |s| s.0)..].contains(&eos) || eos.is_empty() {
        ex.ids.push(tok.eos_id);
        ex.trained.push(true);
    }
    Ok(ex)
}

/// Renders one record into an [`Example`] (a document as one example).
pub fn render_record(tok: &TextTokenizer, record: &Record) -> Result<Example> {
    match record {
        Record::Text(text) | Record::Document(text) => {
            let mut ex = tokenize_spans(tok, text, &[(0, text.len())], true)?;
            ex.ids.push(tok.eos_id);
            ex.trained.push(true);
            Ok(ex)
        }
        Record::PromptCompletion { prompt, completion } => {
            let text = format!("{prompt}{completion}");
            let mut ex = tokenize_spans(tok, &text, &[(prompt.len(), text.len())], true)?;
            ex.ids.push(tok.eos_id);
            ex.trained.push(true);
            Ok(ex)
        }
        Record::Messages(messages) => render_messages(tok, messages),
    }
}

/// Renders one record into the examples it trains: one, or for a plain-text
/// document longer than `seq_len` tokens, consecutive windows of `seq_len`
/// tokens (each window predicts from its own first token on). With
/// `all_tokens`, every token is trained, prompts and system turns too.
pub fn render_examples(
    tok: &TextTokenizer,
    record: &Record,
    seq_len: usize,
    all_tokens: bool,
) -> Result<Vec<Example>> {
    if seq_len < 2 {
        return Err(Error::setting(
            "seq-len",
            format!("{seq_len} is too short: an example needs at least 2 tokens"),
        ));
    }
    let mut ex = render_record(tok, record)?;
    if all_tokens {
        ex.trained.iter_mut().for_each(|t| *t = true);
    }
    if !matches!(record, Record::Document(_)) || ex.ids.len() <= seq_len {
        // Appending EOS may have doubled the capacity; a large data set keeps
        // millions of these.
        ex.ids.shrink_to_fit();
        ex.trained.shrink_to_fit();
        return Ok(vec![ex]);
    }
    Ok(ex
        .ids
        .chunks(seq_len)
        .zip(ex.trained.chunks(seq_len))
        .filter(|(ids, _)| ids.len() > 1)
        .map(|(ids, trained)| Example {
            ids: ids.to_vec(),
            trained: trained.to_vec(),
        })
        .collect())
}
