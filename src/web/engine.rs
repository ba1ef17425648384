//! [`Engine`]: one model, one data set and one training run, owned by the
//! worker. Methods that read from the device return promises; the rest run
//! to completion on the worker's thread.

use std::cell::RefCell;
use std::rc::Rc;

use burn::tensor::Device;
use js_sys::{Function, Promise, Uint8Array};
use serde::Serialize;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;
use web_sys::Blob;

use crate::data::table::Columns;
use crate::data::{Example, Format, ReadOptions, prepare_within};
use crate::error::Error;
use crate::generate::{Decoder, GenerateConfig, TextStream};
use crate::io::bundle::adapter_zip;
use crate::io::card::{CardInfo, model_card};
use crate::io::peft::export_async;
use crate::model::load::{HfFiles, Loaded, load_gguf, load_hf};
use crate::train::{Run, RunSettings, StepReport, Trainer, evaluate_async};
use crate::web::blob::{BlobReader, CHUNK};

/// The most tokens a data file may bring into the engine: 500 MB of ids and
/// flags (twice that while a run starts), next to a model of about 1 GB in
/// wasm32's 4 GiB. At a few thousand tokens a second on a GPU that is many
/// hours of training; a larger file is refused with its line, not left to
/// run the engine out of memory.
const MAX_DATA_TOKENS: usize = 100_000_000;

/// What the page shows about a loaded model.
#[derive(Serialize)]
struct ModelInfo {
    name: String,
    layers: usize,
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    vocab: usize,
    context: usize,
    parameters: usize,
    chat_template: bool,
}

/// What the page shows when a run starts.
#[derive(Serialize)]
struct RunInfo {
    steps: usize,
    examples: usize,
    truncated: usize,
    skipped: usize,
    trainable_parameters: usize,
    tokens_per_step_max: usize,
    validation_examples: usize,
}

/// The loss on the held-out examples.
#[derive(Serialize)]
struct ValidationInfo {
    loss: f64,
    tokens: usize,
    examples: usize,
}

/// The page's view of one optimizer step.
#[derive(Serialize)]
struct StepInfo {
    step: usize,
    steps: usize,
    loss: f32,
    grad_norm: f32,
    lr: f64,
    tokens: usize,
    trained_tokens: usize,
    epoch: f64,
}

struct Data {
    file: String,
    examples: Vec<Example>,
}

struct State {
    device: Device,
    backend: &'static str,
    model: Option<Rc<Loaded>>,
    data: Option<Data>,
    trainer: Option<Trainer>,
    last: Option<StepReport>,
    /// Held-out examples of the current run, and their loss before/after.
    validation: Vec<Example>,
    val_before: Option<f64>,
    val_after: Option<f64>,
}

/// The training engine of one page.
#[wasm_bindgen]
pub struct Engine {
    state: Rc<RefCell<State>>,
}

fn js(e: Error) -> JsValue {
    JsError::new(&e.to_string()).into()
}

fn to_js(v: &impl Serialize) -> std::result::Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| JsError::new(&e.to_string()).into())
}

fn busy() -> JsValue {
    JsError::new("the engine is busy with another request").into()
}

#[wasm_bindgen]
impl Engine {
    /// An engine on the pure-Rust CPU backend (runs everywhere).
    pub fn cpu() -> Engine {
        Engine::on(Device::flex(), "cpu")
    }

    /// An engine on the browser's WebGPU adapter. The caller checks first
    /// that the adapter offers `timestamp-query` (burn's wgpu runtime needs
    /// it) and falls back to [`Engine::cpu`] when this fails.
    pub async fn webgpu() -> std::result::Result<Engine, JsValue> {
        let device = Device::wgpu_options()
            .init_async()
            .await
            .map_err(|e| JsError::new(&format!("WebGPU initialisation failed: {e}")))?;
        Ok(Engine::on(device, "webgpu"))
    }

    fn on(device: Device, backend: &'static str) -> Engine {
        Engine {
            state: Rc::new(RefCell::new(State {
                device,
                backend,
                model: None,
                data: None,
                trainer: None,
                last: None,
                validation: Vec::new(),
                val_before: None,
                val_after: None,
            })),
        }
    }

    /// Panics on purpose. The page's tests use it to check that a panic is
    /// shown in the page and the engine restarts.
    #[wasm_bindgen(js_name = selfTestPanic)]
    pub fn self_test_panic(&self) {
        panic!("self-test panic requested by the page");
    }

    /// `cpu` or `webgpu`.
    pub fn backend(&self) -> String {
        self.state.borrow().backend.to_string()
    }

    /// Loads a GGUF model from its bytes; `name` is the file's name.
    #[wasm_bindgen(js_name = loadGguf)]
    pub fn load_gguf(&self, name: &str, bytes: &[u8]) -> std::result::Result<JsValue, JsValue> {
        let device = self.state.borrow().device.clone();
        let loaded = load_gguf(name, bytes, &device).map_err(js)?;
        self.set_model(loaded)
    }

    /// Loads a Hugging Face model from its files' bytes; `name` names the
    /// model (repository id or folder) in messages and the adapter config.
    #[wasm_bindgen(js_name = loadHf)]
    pub fn load_hf(
        &self,
        name: &str,
        config: &[u8],
        weights: &[u8],
        tokenizer: Option<Vec<u8>>,
        tokenizer_config: Option<Vec<u8>>,
        chat_template: Option<Vec<u8>>,
    ) -> std::result::Result<JsValue, JsValue> {
        let device = self.state.borrow().device.clone();
        let files = HfFiles {
            config,
            weights,
            tokenizer: tokenizer.as_deref(),
            tokenizer_config: tokenizer_config.as_deref(),
            chat_template: chat_template.as_deref(),
        };
        let loaded = load_hf(name, &files, &device).map_err(js)?;
        self.set_model(loaded)
    }

    fn set_model(&self, loaded: Loaded) -> std::result::Result<JsValue, JsValue> {
        if loaded.tokenizer.is_none() {
            return Err(js(Error::format(
                &loaded.name,
                "the model has no tokenizer (tokenizer.json), so text cannot be tokenized",
            )));
        }
        let c = &loaded.model.config;
        let info = ModelInfo {
            name: loaded.name.clone(),
            layers: c.num_layers,
            hidden: c.hidden_size,
            heads: c.num_heads,
            kv_heads: c.num_kv_heads,
            vocab: c.vocab_size,
            context: c.max_position_embeddings,
            parameters: c.num_parameters(),
            chat_template: loaded
                .tokenizer
                .as_ref()
                .is_some_and(|t| t.chat_template.is_some()),
        };
        let mut s = self.state.try_borrow_mut().map_err(|_| busy())?;
        s.model = Some(Rc::new(loaded));
        s.data = None;
        s.trainer = None;
        s.last = None;
        to_js(&info)
    }

    /// Reads and tokenizes the data file `blob` (named `file`) for the
    /// loaded model, streaming it a slice at a time, so only its tokens stay
    /// in memory; returns the summary the page shows (counts, bad lines, a
    /// preview). `format` overrides detection (`jsonl`, `json`, `csv`,
    /// `tsv`, `text`); `columns` maps table columns (`prompt=Q,response=A`);
    /// `all_tokens` trains prompts too; `on_progress(read, size)` is called
    /// after each slice. Worker only (it reads with `FileReaderSync`).
    #[wasm_bindgen(js_name = prepareData)]
    #[allow(clippy::too_many_arguments)]
    pub fn prepare_data(
        &self,
        file: &str,
        blob: Blob,
        seq_len: usize,
        format: Option<String>,
        columns: Option<String>,
        all_tokens: bool,
        on_progress: Option<Function>,
    ) -> std::result::Result<JsValue, JsValue> {
        let options = ReadOptions {
            format: format
                .filter(|f| !f.is_empty() && f != "auto")
                .map(|f| Format::parse(&f))
                .transpose()
                .map_err(js)?,
            columns: Columns::parse(columns.as_deref().unwrap_or("")).map_err(js)?,
            all_tokens,
        };
        let mut s = self.state.try_borrow_mut().map_err(|_| busy())?;
        let model = s.model.clone().ok_or_else(|| no("model"))?;
        let tok = model.tokenizer.as_ref().expect("checked on load");
        let reader = BlobReader::new(blob, on_progress)?;
        let reader = std::io::BufReader::with_capacity(CHUNK, reader);
        let prepared =
            prepare_within(file, reader, &options, tok, seq_len, MAX_DATA_TOKENS).map_err(js)?;
        s.data = Some(Data {
            file: file.to_string(),
            examples: prepared.examples,
        });
        to_js(&prepared.summary)
    }

    /// Starts a run with `settings` (a [`RunSettings`] object; missing
    /// fields take their defaults): fresh adapters, optimizer and data order.
    pub fn start(&self, settings: JsValue) -> std::result::Result<JsValue, JsValue> {
        let settings: RunSettings = serde_wasm_bindgen::from_value(settings)
            .map_err(|e| js(Error::setting("settings", e)))?;
        let mut s = self.state.try_borrow_mut().map_err(|_| busy())?;
        let model = s.model.clone().ok_or_else(|| no("model"))?;
        let data = s.data.as_ref().ok_or_else(|| no("data"))?;
        let Run {
            trainer,
            validation,
            trainable,
        } = settings
            .begin(model.model.clone(), data.examples.clone(), &s.device)
            .map_err(js)?;
        let c = &trainer.config;
        let info = RunInfo {
            steps: c.steps,
            examples: trainer.num_examples(),
            truncated: trainer.truncated,
            skipped: trainer.skipped,
            trainable_parameters: trainable,
            tokens_per_step_max: c.batch_size * c.grad_accum * c.seq_len,
            validation_examples: validation.len(),
        };
        s.trainer = Some(trainer);
        s.last = None;
        s.validation = validation;
        s.val_before = None;
        s.val_after = None;
        to_js(&info)
    }

    /// One optimizer step; resolves to its report (loss, norm, lr, tokens).
    pub fn step(&self) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let (pending, steps) = {
                let mut s = state.try_borrow_mut().map_err(|_| busy())?;
                let t = s.trainer.as_mut().ok_or_else(|| no("run"))?;
                if t.steps_done() >= t.config.steps {
                    return Err(js(Error::setting("steps", "the run is complete")));
                }
                (t.step_pending().map_err(js)?, t.config.steps)
            };
            let r = pending.read_async().await.map_err(js)?;
            let info = StepInfo {
                step: r.step,
                steps,
                loss: r.loss,
                grad_norm: r.grad_norm,
                lr: r.lr,
                tokens: r.tokens,
                trained_tokens: r.trained_tokens,
                epoch: r.epoch,
            };
            state.borrow_mut().last = Some(r);
            to_js(&info)
        })
    }

    /// The loss on the run's held-out examples, with the adapter as trained
    /// so far when `tuned` (else the base model); resolves to
    /// `{loss, tokens, examples}`. The page asks before and after training.
    pub fn validate(&self, tuned: bool) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let (model, adapters, examples, batch, seq_len) = {
                let s = state.try_borrow().map_err(|_| busy())?;
                let t = s.trainer.as_ref().ok_or_else(|| no("run"))?;
                if s.validation.is_empty() {
                    return Err(no("validation set (the data is too small to split)"));
                }
                (
                    s.model.clone().ok_or_else(|| no("model"))?,
                    tuned.then(|| t.adapters.clone()),
                    s.validation.clone(),
                    t.config.batch_size,
                    t.config.seq_len,
                )
            };
            let (loss, tokens) =
                evaluate_async(&model.model, adapters.as_ref(), &examples, batch, seq_len)
                    .await
                    .map_err(js)?;
            {
                let mut s = state.borrow_mut();
                if tuned {
                    s.val_after = Some(loss);
                } else {
                    s.val_before = Some(loss);
                }
            }
            to_js(&ValidationInfo {
                loss,
                tokens,
                examples: examples.len(),
            })
        })
    }

    /// Continues `prompt` (a user turn for chat models) greedily for at most
    /// `max_tokens`, with the trained adapter when `tuned`. `on_text` gets
    /// each new piece of text; resolves to the whole reply.
    pub fn generate(
        &self,
        prompt: String,
        max_tokens: usize,
        tuned: bool,
        on_text: Function,
    ) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let (model, adapters) = {
                let s = state.try_borrow().map_err(|_| busy())?;
                let model = s.model.clone().ok_or_else(|| no("model"))?;
                let adapters = match (tuned, &s.trainer) {
                    (false, _) => None,
                    (true, Some(t)) => Some(t.adapters.clone()),
                    (true, None) => return Err(no("trained adapter")),
                };
                (model, adapters)
            };
            let tok = model.tokenizer.as_ref().expect("checked on load");
            let prompt = tok.encode_prompt(&prompt, false).map_err(js)?;
            let config = GenerateConfig {
                max_tokens,
                ..GenerateConfig::default()
            };
            let mut decoder = Decoder::new(
                &model.model,
                adapters.as_ref(),
                &prompt,
                &[tok.eos_id],
                config,
            );
            let mut stream = TextStream::new(tok);
            while let Some(pending) = decoder.step() {
                let id = pending.read_async().await.map_err(js)?;
                if !decoder.accept(id) {
                    break;
                }
                if let Some(text) = stream.push(id) {
                    on_text.call1(&JsValue::NULL, &JsValue::from_str(&text))?;
                }
            }
            Ok(JsValue::from_str(&stream.finish().map_err(js)?))
        })
    }

    /// The adapter as a `.zip` (adapter_model.safetensors,
    /// adapter_config.json, README.md). `base_model` goes into the config.
    #[wasm_bindgen(js_name = exportZip)]
    pub fn export_zip(&self, base_model: String) -> Promise {
        let state = self.state.clone();
        future_to_promise(async move {
            let (adapters, config, examples, done, file, backend, loss, validation) = {
                let s = state.try_borrow().map_err(|_| busy())?;
                let t = s.trainer.as_ref().ok_or_else(|| no("run"))?;
                let file = s.data.as_ref().map(|d| d.file.clone()).unwrap_or_default();
                (
                    t.adapters.clone(),
                    t.config.clone(),
                    t.num_examples(),
                    t.steps_done(),
                    file,
                    s.backend,
                    s.last.as_ref().map(|r| r.loss),
                    match (s.val_before, s.val_after) {
                        (Some(b), Some(a)) => Some((b, a, s.validation.len())),
                        _ => None,
                    },
                )
            };
            let files = export_async(&adapters, &base_model).await.map_err(js)?;
            let card = model_card(&CardInfo {
                base_model: &base_model,
                data_file: &file,
                examples,
                steps_done: done,
                final_loss: loss,
                lora: &adapters.config,
                train: &config,
                backend,
                validation,
            });
            let zip = adapter_zip(&files, &card).map_err(js)?;
            Ok(Uint8Array::from(zip.as_slice()).into())
        })
    }
}

fn no(what: &str) -> JsValue {
    JsError::new(&format!("no {what} yet")).into()
}
