//! Judging a run while it runs, beside its validation loss: which
//! validation was the best (its adapter is kept), when patience runs out
//! (early stopping), and replies to a few prompts, during training (to see
//! the model change) and after it (the stop check: does the tuned model end
//! its answers with the end-of-turn token, within the length the data's
//! answers had).

use serde::{Deserialize, Serialize};

use crate::data::Example;
use crate::error::{Error, Result};
use crate::generate::Reply;
use crate::tokenizer::TextTokenizer;
use crate::train::session::{Validation, When};

/// Held-out prompts that samples during training are drawn from (when the
/// person entered none).
pub const SAMPLE_PROMPTS: usize = 3;
/// Held-out prompts the stop check asks.
pub const CHECK_PROMPTS: usize = 5;
/// Most new tokens of a sample during training.
pub const SAMPLE_TOKENS: usize = 64;
/// Most new tokens the stop check allows, however long the answers are.
pub const CHECK_TOKENS: usize = 256;
/// Most prompts a person may enter.
pub const MAX_PROMPTS: usize = 8;
/// Longest prompt a person may enter, in characters.
pub const MAX_PROMPT_CHARS: usize = 4000;

/// Whose prompts the samples reply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// Those the person entered.
    Yours,
    /// Held-out examples' (not trained on).
    HeldOut,
    /// Training examples' (for samples only, when there are no others).
    Training,
}

impl Source {
    /// In words, before "prompts".
    pub fn words(self) -> &'static str {
        match self {
            Self::Yours => "your",
            Self::HeldOut => "held-out",
            Self::Training => "training",
        }
    }
}

/// A prompt to sample from: what is shown, and its tokens (the rendered
/// conversation up to the answer).
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    /// The person's text.
    pub text: String,
    /// Its tokens.
    pub ids: Vec<u32>,
}

/// The tokens of `example` before its first trained one: its prompt, when
/// there are at least two and an answer follows (text trained throughout
/// has none).
pub fn prompt_ids(example: &Example) -> Option<&[u32]> {
    let first = example.trained.iter().skip(1).position(|&t| t)? + 1;
    (first >= 2).then(|| &example.ids[..first])
}

/// The length of `example`'s first answer within `seq_len` tokens: the
/// trained tokens from the first one to the end of that run (its
/// end-of-turn token included).
pub fn answer_len(example: &Example, seq_len: usize) -> usize {
    let trained = &example.trained[..example.trained.len().min(seq_len)];
    trained
        .iter()
        .skip(1)
        .skip_while(|&&t| !t)
        .take_while(|&&t| t)
        .count()
}

/// The longest first answer among `examples`, each cut to `seq_len`.
pub fn longest_answer(examples: &[Example], seq_len: usize) -> usize {
    examples
        .iter()
        .filter(|e| prompt_ids(e).is_some())
        .map(|e| answer_len(e, seq_len))
        .max()
        .unwrap_or(0)
}

/// Up to `most` prompts of `examples` (those with one, each cut to
/// `seq_len` first), shown as the person's text.
pub fn example_prompts(
    examples: &[Example],
    tok: &TextTokenizer,
    most: usize,
    seq_len: usize,
) -> Result<Vec<Prompt>> {
    let mut prompts = Vec::new();
    for e in examples {
        if prompts.len() == most {
            break;
        }
        // As training sees it: cut to the sequence length.
        let cut = e.clone().cut(seq_len);
        if let Some(ids) = prompt_ids(&cut) {
            prompts.push(Prompt {
                text: tok.prompt_text(ids)?,
                ids: ids.to_vec(),
            });
        }
    }
    Ok(prompts)
}

fn refuse<T>(why: String) -> Result<T> {
    Err(Error::setting("sample prompts", why))
}

/// Checks prompts a person entered: at most [`MAX_PROMPTS`], none empty or
/// over [`MAX_PROMPT_CHARS`] characters.
pub fn check_prompts(texts: &[String]) -> Result<()> {
    if texts.len() > MAX_PROMPTS {
        return refuse(format!(
            "{} prompts given; at most {MAX_PROMPTS}",
            texts.len()
        ));
    }
    for (i, text) in texts.iter().enumerate() {
        let chars = text.trim().chars().count();
        if chars == 0 {
            return refuse(format!("prompt {} is empty", i + 1));
        }
        if chars > MAX_PROMPT_CHARS {
            return refuse(format!(
                "prompt {} is {chars} characters long; at most {MAX_PROMPT_CHARS}",
                i + 1
            ));
        }
    }
    Ok(())
}

/// Prompts a person entered, checked ([`check_prompts`]) and tokenized as
/// the data was: a user turn of the chat template for conversations, as
/// they are (`raw`) for prompt/completion and text data; each must leave
/// room for an answer within `seq_len` tokens.
pub fn entered_prompts(
    texts: &[String],
    tok: &TextTokenizer,
    raw: bool,
    seq_len: usize,
) -> Result<Vec<Prompt>> {
    check_prompts(texts)?;
    let mut prompts = Vec::with_capacity(texts.len());
    for (i, text) in texts.iter().enumerate() {
        let text = text.trim();
        let ids = tok.encode_prompt(text, raw)?;
        if ids.len() >= seq_len {
            return refuse(format!(
                "prompt {} is {} tokens long, and the sequence length is {seq_len}: shorten it",
                i + 1,
                ids.len()
            ));
        }
        prompts.push(Prompt {
            text: text.to_string(),
            ids,
        });
    }
    Ok(prompts)
}

/// One prompt's reply.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// The prompt as the person wrote it.
    pub prompt: String,
    /// The reply.
    #[serde(flatten)]
    pub reply: Reply,
}

/// Replies to the run's prompts at one point of the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Samples {
    /// `before` (the base model), `during` (every `sample-every` steps) or
    /// `after`: the stop check.
    pub when: When,
    /// Optimizer steps taken.
    pub step: usize,
    /// Most new tokens each reply could have: for the stop check, the
    /// longest answer in the data (at most [`CHECK_TOKENS`]).
    pub max_tokens: usize,
    /// Whose prompts they are.
    pub source: Source,
    /// Replies that ended with a stop token within `max_tokens`.
    pub ended: usize,
    /// Each prompt and its reply.
    pub samples: Vec<Sample>,
}

/// Why a run stopped early: its validation loss had not improved on the
/// best for `patience` validations in a row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EarlyStop {
    /// Steps taken when it stopped.
    pub step: usize,
    /// The validations allowed without improvement.
    pub patience: usize,
    /// The step of the best validation loss.
    pub best_step: usize,
    /// The best validation loss.
    pub best_loss: f64,
}

impl EarlyStop {
    /// In words.
    pub fn message(&self) -> String {
        format!(
            "stopped early at step {}: the validation loss has not improved for {} validations; the best, {:.4}, was at step {} (its adapter is kept as the best)",
            self.step, self.patience, self.best_loss, self.best_step
        )
    }
}

/// The best validation of a run so far, and the validations during
/// training since it that did not improve on it. Only the adapter's own
/// validations count (not the base model's, before training); a loss must
/// be finite and lower than the best's to improve on it, and none counts
/// against patience before there is a best (as Hugging Face's
/// `EarlyStoppingCallback`, with a threshold of 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Standing {
    /// The index in the validations of the best, if any.
    pub best: Option<usize>,
    /// Validations during training since the best that did not improve.
    pub since_best: usize,
}

/// The standing after `validations`, replayed in order.
pub fn standing(validations: &[Validation]) -> Standing {
    let mut s = Standing {
        best: None,
        since_best: 0,
    };
    for (i, v) in validations.iter().enumerate() {
        if v.when == When::Before {
            continue;
        }
        let better =
            v.loss.is_finite() && s.best.is_none_or(|b: usize| v.loss < validations[b].loss);
        if better {
            s.best = Some(i);
            s.since_best = 0;
        } else if v.when == When::During && s.best.is_some() {
            s.since_best += 1;
        }
    }
    s
}
