//! Tokenizers and chat templates, from GGUF metadata or Hugging Face files.
//!
//! A GGUF `gpt2`-type vocabulary becomes a byte-level BPE
//! `tokenizers::Tokenizer` the way transformers' `gguf_tokenizer_mapping.py`
//! builds it: tokens and merges as stored, tokens typed CONTROL (3) added as
//! special tokens, USER_DEFINED (4) as plain added tokens. The pre-tokenizer
//! follows `tokenizer.ggml.pre` (llama.cpp's `llama-vocab.cpp` table). A
//! Gemma GGUF's SentencePiece vocabulary (`llama` type) is rebuilt as
//! transformers rebuilds it ([`gemma`]).
//! Chat templates are rendered with minijinja, as transformers'
//! `apply_chat_template` renders them with jinja2.

use minijinja::{Environment, ErrorKind, context};
use serde::{Deserialize, Serialize};
use tokenizers::SplitDelimiterBehavior;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::template::TemplateProcessing;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{Error, Result};
use crate::io::gguf::Gguf;

pub mod gemma;

/// The chat template for models that ship none: ChatML, as TRL's
/// `setup_chat_format` adds. Turns end with the text `<|im_end|>`; the
/// model's EOS token follows the last assistant turn in training.
pub const DEFAULT_CHAT_TEMPLATE: &str = "{% for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// The chat template for a model that ships none but whose vocabulary has
/// Gemma's turn tokens (Gemma 3's base models): the Gemma 3 instruction
/// models' template for text, a system message prefixed to the first user
/// turn, `assistant` written `model`. Turns end with `<end_of_turn>`,
/// where training and generation stop.
pub const GEMMA_CHAT_TEMPLATE: &str = "{{ bos_token }}{% if messages[0]['role'] == 'system' %}{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}{% for message in loop_messages %}{% if message['role'] == 'assistant' %}{% set role = 'model' %}{% else %}{% set role = message['role'] %}{% endif %}{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}";

/// Which template conversations are rendered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChatFormat {
    /// The model's own template.
    Own,
    /// [`GEMMA_CHAT_TEMPLATE`]: no template, Gemma's turn tokens.
    Gemma,
    /// [`DEFAULT_CHAT_TEMPLATE`]: no template otherwise.
    ChatMl,
}

/// Qwen2's pre-tokenizer regex (`tokenization_qwen2.PRETOKENIZE_REGEX`;
/// llama.cpp's `qwen2`): numbers one digit at a time.
pub(crate) const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Llama 3's (llama.cpp's `llama-bpe`): numbers up to three digits at a time.
pub(crate) const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Message {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

/// Token ids and each token's byte range `[start, end)` in the text.
pub type Encoded = (Vec<u32>, Vec<(usize, usize)>);

/// A tokenizer plus what the data pipeline needs around it.
pub struct TextTokenizer {
    inner: Tokenizer,
    /// End-of-sequence id (for chat models, the end-of-turn token).
    pub eos_id: u32,
    /// Beginning-of-sequence id, if the vocabulary has one.
    pub bos_id: Option<u32>,
    /// Whether encoding prepends BOS.
    pub add_bos: bool,
    /// The Jinja chat template, if the model has one.
    pub chat_template: Option<String>,
}

/// The template instructions a chat's render may take: a base, and more
/// for each message (the longest real templates take a few hundred a
/// message).
const TEMPLATE_FUEL: u64 = 200_000;
const TEMPLATE_FUEL_PER_MESSAGE: u64 = 20_000;
/// The most a chat's render may write besides 4 times its messages' text.
const TEMPLATE_OUTPUT: usize = 1 << 20;

/// A writer that refuses to grow past `cap` bytes (the template's render
/// stops at the refusal).
struct Capped {
    bytes: Vec<u8>,
    cap: usize,
}

impl std::io::Write for Capped {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.bytes.len() + buf.len() > self.cap {
            self.bytes.extend_from_slice(
                &buf[..(self.cap + 1)
                    .saturating_sub(self.bytes.len())
                    .min(buf.len())],
            );
            return Err(std::io::Error::other("the template's output is too long"));
        }
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn tok_err(file: &str, e: impl std::fmt::Display) -> Error {
    Error::format(file, format!("tokenizer: {e}"))
}

/// A GGUF `gpt2`-type vocabulary as a byte-level BPE (see the module docs).
fn byte_level(g: &Gguf, tokens: &[&str], types: &[u64]) -> Result<Tokenizer> {
    let file = g.file();
    let merges = g.meta_strings("tokenizer.ggml.merges")?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let merges = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| tok_err(file, format!("merge `{m}` is not two tokens")))
        })
        .collect::<Result<Vec<_>>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| tok_err(file, e))?;
    let mut inner = Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, true, true);
    match g
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.as_str())
    {
        // SmolLM's tokenizer.json: individual digits, then GPT-2 byte-level.
        Some("smollm") => {
            inner.with_pre_tokenizer(Some(Sequence::new(vec![
                Digits::new(true).into(),
                byte_level.into(),
            ])));
        }
        // transformers' set_split_regex: the regex, then bytes without GPT-2's.
        Some(pre @ ("qwen2" | "deepseek-r1-qwen" | "llama3" | "llama-v3" | "llama-bpe")) => {
            let regex = if pre.starts_with("llama") {
                LLAMA3_SPLIT
            } else {
                QWEN2_SPLIT
            };
            let split = Split::new(
                SplitPattern::Regex(regex.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(|e| tok_err(file, e))?;
            inner.with_pre_tokenizer(Some(Sequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])));
        }
        Some("gpt2") | Some("gpt-2") | Some("default") | None => {
            inner.with_pre_tokenizer(Some(byte_level));
        }
        Some(other) => {
            return Err(Error::format(
                file,
                format!(
                    "pre-tokenizer `{other}` is not supported yet (gpt2, smollm, qwen2, llama-bpe are)"
                ),
            ));
        }
    }
    inner.with_decoder(Some(ByteLevel::default()));
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, ty)| **ty == 3)
        .map(|(t, _)| AddedToken::from(t.to_string(), true).normalized(false))
        .collect();
    inner
        .add_special_tokens(special)
        .map_err(|e| tok_err(file, e))?;
    let user: Vec<AddedToken> = tokens
        .iter()
        .zip(types)
        .filter(|(_, ty)| **ty == 4)
        .map(|(t, _)| AddedToken::from(t.to_string(), false).normalized(false))
        .collect();
    inner.add_tokens(user).map_err(|e| tok_err(file, e))?;
    Ok(inner)
}

impl TextTokenizer {
    /// Builds the tokenizer described by a GGUF file's `tokenizer.ggml.*` keys.
    pub fn from_gguf(g: &Gguf) -> Result<Self> {
        let file = g.file();
        let model = g.meta_str("tokenizer.ggml.model")?;
        let arch = g.meta_str("general.architecture").unwrap_or("");
        let tokens = g.meta_strings("tokenizer.ggml.tokens")?;
        let types: Vec<u64> = match g.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .as_array()
                .map(|a| a.iter().map(|x| x.as_u64().unwrap_or(1)).collect())
                .unwrap_or_default(),
            None => Vec::new(),
        };
        let inner = match model {
            "gpt2" => byte_level(g, &tokens, &types)?,
            "llama" if arch.starts_with("gemma") => {
                gemma::tokenizer(&tokens, &types).map_err(|e| tok_err(file, e))?
            }
            other => {
                return Err(Error::format(
                    file,
                    format!(
                        "tokenizer type `{other}` is not supported yet (byte-level BPE `gpt2`, and Gemma's SentencePiece `llama`, are)"
                    ),
                ));
            }
        };
        let id = |k: &str| g.metadata.get(k).and_then(|v| v.as_u64()).map(|v| v as u32);
        let eos_id = id("tokenizer.ggml.eos_token_id")
            .ok_or_else(|| tok_err(file, "tokenizer.ggml.eos_token_id is missing"))?;
        if eos_id as usize >= tokens.len() {
            return Err(tok_err(
                file,
                format!("eos id {eos_id} is outside the vocabulary"),
            ));
        }
        Ok(Self {
            inner,
            eos_id,
            bos_id: id("tokenizer.ggml.bos_token_id"),
            add_bos: g
                .metadata
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            chat_template: g
                .metadata
                .get("tokenizer.chat_template")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        })
    }

    /// Loads `tokenizer.json` (+ `tokenizer_config.json` for special tokens
    /// and the chat template, which `chat_template.jinja` overrides when
    /// present). `dir` names the directory in messages.
    pub fn from_hf(
        dir: &str,
        tokenizer_json: &[u8],
        tokenizer_config: Option<&[u8]>,
        chat_template_jinja: Option<&[u8]>,
    ) -> Result<Self> {
        let file = format!("{dir}/tokenizer.json");
        // The tokenizers crate panics on some malformed JSON inside its
        // decoder (bytes that are not UTF-8 in a key); checked first, it is
        // an error.
        let text = std::str::from_utf8(tokenizer_json)
            .map_err(|e| tok_err(&file, format!("not UTF-8 text: {e}")))?;
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|e| tok_err(&file, format!("not valid JSON: {e}")))?;
        let mut inner = Tokenizer::from_bytes(tokenizer_json).map_err(|e| tok_err(&file, e))?;
        // tokenizer.json may pad or truncate by its own config: never for training text.
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| tok_err(&file, e))?;
        #[derive(Deserialize, Default)]
        struct TokConfig {
            chat_template: Option<serde_json::Value>,
            eos_token: Option<serde_json::Value>,
            bos_token: Option<serde_json::Value>,
            add_bos_token: Option<bool>,
        }
        let cfg_file = format!("{dir}/tokenizer_config.json");
        let cfg: TokConfig = match tokenizer_config {
            Some(b) => serde_json::from_slice(b).map_err(|e| {
                Error::format(
                    &cfg_file,
                    format!("line {} column {}: {e}", e.line(), e.column()),
                )
            })?,
            None => TokConfig::default(),
        };
        let token_str = |v: &Option<serde_json::Value>| -> Option<String> {
            match v.as_ref()? {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
                _ => None,
            }
        };
        let find = |s: Option<String>| s.and_then(|s| inner.token_to_id(&s));
        let eos_id = find(token_str(&cfg.eos_token))
            .or_else(|| {
                ["<|im_end|>", "<|endoftext|>", "</s>", "<|end_of_text|>"]
                    .iter()
                    .find_map(|t| inner.token_to_id(t))
            })
            .ok_or_else(|| tok_err(&cfg_file, "no eos_token found"))?;
        let bos_id = find(token_str(&cfg.bos_token));
        let jinja = match chat_template_jinja {
            Some(b) => Some(String::from_utf8(b.to_vec()).map_err(|_| {
                Error::format(format!("{dir}/chat_template.jinja"), "is not UTF-8")
            })?),
            None => None,
        };
        let chat_template = jinja.or(match cfg.chat_template {
            Some(serde_json::Value::String(s)) => Some(s),
            // A list of named templates: take "default".
            Some(serde_json::Value::Array(list)) => list.iter().find_map(|t| {
                (t.get("name")?.as_str()? == "default")
                    .then(|| t.get("template")?.as_str().map(str::to_string))
                    .flatten()
            }),
            _ => None,
        });
        Ok(Self {
            inner,
            eos_id,
            bos_id,
            add_bos: cfg.add_bos_token.unwrap_or(false),
            chat_template,
        })
    }

    /// The template conversations get (see [`ChatFormat`]).
    pub fn chat_format(&self) -> ChatFormat {
        if self.chat_template.is_some() {
            ChatFormat::Own
        } else if self.gemma_end_of_turn().is_some() {
            ChatFormat::Gemma
        } else {
            ChatFormat::ChatMl
        }
    }

    /// `<end_of_turn>`'s id where the vocabulary has Gemma's turn tokens.
    fn gemma_end_of_turn(&self) -> Option<u32> {
        self.inner.token_to_id("<start_of_turn>")?;
        self.inner.token_to_id("<end_of_turn>")
    }

    /// `<end_of_turn>`'s id where conversations end their turns with it:
    /// in Gemma's format, or with a template of the model's own that writes
    /// it (Gemma's instruction models, whose EOS is `<eos>`).
    fn end_of_turn_in_use(&self) -> Option<u32> {
        let id = self.gemma_end_of_turn()?;
        match self.chat_format() {
            ChatFormat::Gemma => Some(id),
            ChatFormat::Own => self
                .chat_template
                .as_deref()
                .filter(|t| t.contains("<end_of_turn>"))
                .map(|_| id),
            ChatFormat::ChatMl => None,
        }
    }

    /// The text that ends an assistant turn in rendered conversations:
    /// `<end_of_turn>` where turns end with it, else the EOS token's text.
    pub fn turn_end(&self) -> String {
        match self.end_of_turn_in_use() {
            Some(_) => "<end_of_turn>".into(),
            None => self.id_to_token(self.eos_id).unwrap_or_default(),
        }
    }

    /// Ids that end generation: EOS, and `<end_of_turn>` where turns end
    /// with it.
    pub fn stop_ids(&self) -> Vec<u32> {
        let turn = self.end_of_turn_in_use().filter(|&id| id != self.eos_id);
        std::iter::once(self.eos_id).chain(turn).collect()
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The largest id it can give: of its vocabulary (added tokens
    /// included, whose ids may leave gaps) and of its BOS and EOS tokens.
    pub fn largest_id(&self) -> u32 {
        let vocab = self.inner.get_vocab(true).into_values().max().unwrap_or(0);
        vocab.max(self.eos_id).max(self.bos_id.unwrap_or(0))
    }

    /// Token ids of `text`; special tokens written in the text are
    /// recognised. With `add_special`, the model's own additions (BOS) come
    /// too, as transformers' `tokenizer(text)`; chat-template output already
    /// holds them, so it is encoded without.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        Ok(self.encode_with_offsets(text, add_special)?.0)
    }

    /// Ids plus each token's byte range in `text` (added tokens get `(0, 0)`).
    pub fn encode_with_offsets(&self, text: &str, add_special: bool) -> Result<Encoded> {
        // tokenizer.json may carry a post-processor that adds BOS; GGUF
        // vocabularies say so with `add_bos_token` instead.
        let post = add_special && self.inner.get_post_processor().is_some();
        let enc = self
            .inner
            .encode(text, post)
            .map_err(|e| Error::format("tokenizer", e))?;
        let mut ids = enc.get_ids().to_vec();
        let mut offsets = enc.get_offsets().to_vec();
        if let Some(bos) = self.bos_id.filter(|_| add_special && !post && self.add_bos) {
            ids.insert(0, bos);
            offsets.insert(0, (0, 0));
        }
        Ok((ids, offsets))
    }

    /// The ids to generate from for a user's `prompt`: one user turn through
    /// the chat template (the default one for models without their own, as
    /// in training), or the raw text with BOS when `raw`.
    pub fn encode_prompt(&self, prompt: &str, raw: bool) -> Result<Vec<u32>> {
        if raw {
            return self.encode(prompt, true);
        }
        let msgs = [Message {
            role: "user".into(),
            content: prompt.to_string(),
        }];
        self.encode(&self.apply_chat_template(&msgs, true)?, false)
    }

    /// What a person wrote in a prompt of `ids` (a conversation rendered
    /// up to the generation prompt): the last user turn's text when the
    /// template's user header and closing are found in it, else the text
    /// without special tokens. For showing a held-out prompt.
    pub fn prompt_text(&self, ids: &[u32]) -> Result<String> {
        let plain = || Ok(self.decode(ids, true)?.trim().to_string());
        // The template around a marker: what comes before a user's text
        // and what closes it up to the answer.
        const MARK: &str = "\u{1}";
        let probe = [Message {
            role: "user".into(),
            content: MARK.into(),
        }];
        let Ok(rendered) = self.apply_chat_template(&probe, true) else {
            return plain();
        };
        let Some((head, tail)) = rendered.split_once(MARK) else {
            return plain();
        };
        let Some(at) = head.rfind("user") else {
            return plain();
        };
        // The user header with the marker that opens it (`<|im_start|>user\n`,
        // `<start_of_turn>user\n`), which a person's text does not hold.
        let opens = head[..at]
            .rfind('<')
            .filter(|&i| at - i <= 32 && !head[i..at].contains('\n'))
            .unwrap_or(at);
        let header = &head[opens..];
        let text = self.decode(ids, false)?;
        let body = match text
            .strip_suffix(tail)
            .or_else(|| text.strip_suffix(tail.trim_end()))
        {
            Some(body) => body,
            None => return plain(),
        };
        match body.rfind(header) {
            Some(i) => Ok(body[i + header.len()..].trim().to_string()),
            None => plain(),
        }
    }

    /// Text of `ids`; special tokens are kept unless `skip_special`.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner
            .decode(ids, skip_special)
            .map_err(|e| Error::format("tokenizer", e))
    }

    /// The pipeline as a `tokenizer.json` that transformers loads. A GGUF
    /// vocabulary's `add_bos_token` becomes a post-processor that prepends
    /// BOS, as transformers' own conversions write it.
    pub fn to_json(&self) -> Result<String> {
        let mut inner = self.inner.clone();
        if let Some(bos) = self.bos_id.filter(|_| self.add_bos)
            && inner.get_post_processor().is_none()
        {
            let token = self.id_to_token(bos).unwrap_or_default();
            let post = TemplateProcessing::builder()
                .try_single(format!("{token}:0 $A:0"))
                .and_then(|b| b.try_pair(format!("{token}:0 $A:0 {token}:1 $B:1")))
                .map_err(|e| Error::format("tokenizer", e))?
                .special_tokens(vec![(token, bos)])
                .build()
                .map_err(|e| Error::format("tokenizer", e))?;
            inner.with_post_processor(Some(post));
        }
        inner
            .to_string(false)
            .map_err(|e| Error::format("tokenizer", e))
    }

    /// The chat template conversations are rendered with: the model's own,
    /// or the one [`ChatFormat`] picks for a model without one.
    pub fn template_in_use(&self) -> &str {
        match self.chat_format() {
            ChatFormat::Own => self.chat_template.as_deref().unwrap_or_default(),
            ChatFormat::Gemma => GEMMA_CHAT_TEMPLATE,
            ChatFormat::ChatMl => DEFAULT_CHAT_TEMPLATE,
        }
    }

    /// The token string of `id`.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// Renders `messages` with the model's chat template (transformers'
    /// `apply_chat_template(..., tokenize=False)`), or when the model has
    /// none with [`GEMMA_CHAT_TEMPLATE`] or [`DEFAULT_CHAT_TEMPLATE`] (see
    /// [`ChatFormat`]).
    pub fn apply_chat_template(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let template = self.template_in_use();
        let mut env = Environment::new();
        // A template's work and output are bounded by what it renders: a
        // template that loops without end, or writes without end, is
        // stopped with a message rather than hanging the engine or filling
        // its memory.
        let content: usize = messages.iter().map(|m| m.content.len()).sum();
        env.set_fuel(Some(
            TEMPLATE_FUEL + TEMPLATE_FUEL_PER_MESSAGE * messages.len() as u64,
        ));
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template("chat", template)
            .map_err(|e| Error::format("chat template", e))?;
        let tmpl = env
            .get_template("chat")
            .map_err(|e| Error::format("chat template", e))?;
        let tok = |id: Option<u32>| id.and_then(|i| self.id_to_token(i)).unwrap_or_default();
        let mut out = Capped {
            bytes: Vec::new(),
            cap: TEMPLATE_OUTPUT + 4 * content,
        };
        let rendered = tmpl.render_captured_to(
            context! {
                messages => messages,
                add_generation_prompt => add_generation_prompt,
                bos_token => tok(self.bos_id),
                eos_token => tok(Some(self.eos_id)),
            },
            &mut out,
        );
        match rendered {
            Ok(_) => String::from_utf8(out.bytes)
                .map_err(|_| Error::format("chat template", "its output is not UTF-8")),
            Err(_) if out.bytes.len() > out.cap => Err(Error::format(
                "chat template",
                format!(
                    "it wrote more than {} bytes for {} bytes of messages, so it was stopped",
                    out.cap, content
                ),
            )),
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(Error::format(
                "chat template",
                format!(
                    "it ran more than {} steps for {} messages without finishing, so it was stopped",
                    TEMPLATE_FUEL + TEMPLATE_FUEL_PER_MESSAGE * messages.len() as u64,
                    messages.len()
                ),
            )),
            Err(e) => Err(Error::format("chat template", e)),
        }
    }
}
