//! [`Engine`]: the page's handle on one [`Session`], owned by the worker.
//! It converts JS values to and from Session calls and holds no run logic.
//! Methods that read from the device return promises that hold the
//! session's borrow while they await: the worker runs engine calls one at a
//! time, and every borrow here is a `try_borrow`, so a call that came in
//! while another awaits is refused as busy rather than panicking (hence the
//! `await_holding_refcell_ref` allowances).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::{BufWriter, Write};
use std::rc::Rc;

use burn::tensor::Device;
use js_sys::{Array, Function, Promise, Uint8Array};
use serde::{Deserialize, Serialize};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;
use web_sys::Blob;

use crate::data::{BadLines, ReadOptions, read_stream};
use crate::error::Error;
use crate::io::self_check::MergedWritten;
use crate::merge::gguf::FileType;
use crate::merge::hf::Dtype;
use crate::model::files::{HF_OPTIONAL, HF_REQUIRED, ModelFiles, load_files_with};
use crate::model::quantized::BaseWeights;
use crate::train::memory::HeapLimit;
use crate::train::setting::{check_form, preset_views, views};
use crate::train::{RunSettings, Session};
use crate::web::alloc;
use crate::web::blob::{BlobReader, CHUNK};
use crate::web::sink::JsWrite;

/// The most tokens a data file may bring into the engine: 500 MB of ids and
/// flags (shared by the runs on it, not copied), next to a model of about 1 GB in
/// wasm32's 4 GiB. At a few thousand tokens a second on a GPU that is many
/// hours of training; a larger file is refused with its line, not left to
/// run the engine out of memory.
const MAX_DATA_TOKENS: usize = 100_000_000;

/// The most text a data file may hold for the page's TRL download, which
/// holds the records, their tokens as JSON and the zip in the module's
/// memory at once.
const MAX_RECIPE_TEXT: usize = 64 << 20;

/// The page's settings form: each setting's name and the text in its field.
type FormValues = BTreeMap<String, String>;

/// How the page asks for a data file to be read.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct DataRequest {
    /// `auto` or empty to detect, else `jsonl`, `json`, `csv`, `tsv`, `text`.
    #[serde(default)]
    format: String,
    /// Table columns, `prompt=Q,response=A`.
    #[serde(default)]
    columns: String,
    /// Train on every token.
    #[serde(default)]
    all_tokens: bool,
    /// Leave out records that repeat an earlier one.
    #[serde(default)]
    drop_duplicates: bool,
    /// The Sequence length field's text.
    seq_len: String,
}

/// The form's values as `(name, text)` pairs.
fn pairs(values: &FormValues) -> impl Iterator<Item = (&str, &str)> + Clone {
    values.iter().map(|(n, v)| (n.as_str(), v.as_str()))
}

/// The training engine of one page.
#[wasm_bindgen]
pub struct Engine {
    session: Rc<RefCell<Session>>,
    /// `cpu` or `webgpu`, readable while a promise holds the session.
    backend: &'static str,
}

fn js(e: Error) -> JsValue {
    JsError::new(&e.to_string()).into()
}

fn to_js(v: &impl Serialize) -> Result<JsValue, JsValue> {
    v.serialize(&serde_wasm_bindgen::Serializer::json_compatible())
        .map_err(|e| JsError::new(&e.to_string()).into())
}

fn from_js<T: for<'de> Deserialize<'de>>(what: &str, v: JsValue) -> Result<T, JsValue> {
    serde_wasm_bindgen::from_value(v).map_err(|e| js(Error::setting(what, e)))
}

fn busy() -> JsValue {
    JsError::new("the engine is busy with another request").into()
}

#[wasm_bindgen]
impl Engine {
    /// An engine on the pure-Rust CPU backend (runs everywhere). Its
    /// memory is this module's: models and runs that would not fit in what
    /// is left of wasm32's 4 GiB are refused before they start.
    pub fn cpu() -> Engine {
        let engine = Engine::on(Device::flex(), "cpu");
        engine.session.borrow_mut().limit_memory(HeapLimit {
            total: alloc::WASM32_BYTES,
            live: alloc::live,
        });
        engine
    }

    /// An engine on the browser's WebGPU adapter. The caller checks first
    /// that the adapter offers `timestamp-query` (burn's wgpu runtime needs
    /// it) and falls back to [`Engine::cpu`] when this fails. Only in the
    /// `webgpu` build: wgpu's handles cannot cross threads, so the threaded
    /// CPU build has no WebGPU. Models and runs that would need a buffer
    /// larger than the device allows are refused (`gpu::max_buffer`).
    #[cfg(feature = "webgpu")]
    pub async fn webgpu() -> Result<Engine, JsValue> {
        let device = Device::wgpu_options()
            .init_async()
            .await
            .map_err(|e| JsError::new(&format!("WebGPU initialisation failed: {e}")))?;
        Ok(Engine::on(device, "webgpu"))
    }

    fn on(device: Device, backend: &'static str) -> Engine {
        Engine {
            session: Rc::new(RefCell::new(Session::new(device, backend))),
            backend,
        }
    }

    /// Panics on purpose. The page's tests use it to check that a panic is
    /// shown in the page and the engine restarts.
    #[wasm_bindgen(js_name = selfTestPanic)]
    pub fn self_test_panic(&self) {
        panic!("self-test panic requested by the page");
    }

    /// Allocates 256 MiB blocks, and keeps them, until the memory refuses
    /// one: the engine then traps as it does when a model or a run does not
    /// fit. The page's tests use it to check that running out of memory is
    /// reported as such, the engine restarts and the last checkpoint is
    /// offered.
    #[wasm_bindgen(js_name = selfTestExhaustMemory)]
    pub fn self_test_exhaust_memory(&self) {
        let mut held: Vec<Vec<u8>> = Vec::new();
        loop {
            let mut block = Vec::with_capacity(256 << 20);
            block.push(1u8);
            held.push(std::hint::black_box(block));
        }
    }

    /// Runs our GPU kernels on this engine's device against their Rust
    /// twins (`gpu::check`) and gives the report as JSON: a list of `{case,
    /// values, differing, max_relative}`. The browser suite asks for it on
    /// WebGPU, where `cargo test` cannot go.
    #[wasm_bindgen(js_name = selfTestKernels)]
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn self_test_kernels(&self) -> Promise {
        let session = self.session.clone();
        future_to_promise(async move {
            let s = session.try_borrow().map_err(|_| busy())?;
            let checks = crate::gpu::check::check_kernels(s.device())
                .await
                .map_err(js)?;
            let json = serde_json::to_string(&checks).map_err(|e| js(Error::backend(e)))?;
            Ok(JsValue::from_str(&json))
        })
    }

    /// The most bytes one buffer can hold on this engine's GPU (what its
    /// guard refuses models and runs by), `undefined` on the CPU.
    #[wasm_bindgen(js_name = maxBuffer)]
    pub fn max_buffer(&self) -> Option<f64> {
        let s = self.session.try_borrow().ok()?;
        crate::gpu::max_buffer(s.device()).map(|b| b as f64)
    }

    /// `cpu` or `webgpu`.
    pub fn backend(&self) -> String {
        self.backend.to_string()
    }

    /// Every run setting (name, label, kind and range, default, help), in
    /// the order of the page's form.
    pub fn settings() -> Result<JsValue, JsValue> {
        to_js(&views())
    }

    /// The presets (`{name, label, help, values, settings}`: `settings`
    /// holds every setting's text under the preset), for the page's
    /// Preset choice.
    pub fn presets() -> Result<JsValue, JsValue> {
        to_js(&preset_views().map_err(js)?)
    }

    /// Checks the form's values (`{name: text}`) one field at a time, then
    /// together; returns the wrong ones as `[{name, message}]`.
    #[wasm_bindgen(js_name = checkSettings)]
    pub fn check_settings(values: JsValue) -> Result<JsValue, JsValue> {
        let values: FormValues = from_js("settings", values)?;
        to_js(&check_form(pairs(&values)))
    }

    /// Which of the chosen files make a model: `{kind: "gguf", file}` or
    /// `{kind: "hf", files}`; throws saying what is missing.
    #[wasm_bindgen(js_name = modelFiles)]
    pub fn model_files(names: Vec<String>) -> Result<JsValue, JsValue> {
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        to_js(&ModelFiles::choose(&names).map_err(js)?)
    }

    /// The choices for a data file's bad lines, the default first (labels
    /// for the page's select; each data summary says what each means).
    #[wasm_bindgen(js_name = badLinesChoices)]
    pub fn bad_lines_choices() -> Result<JsValue, JsValue> {
        to_js(&BadLines::choices(0))
    }

    /// The files a Hugging Face repository must have, and those it may.
    #[wasm_bindgen(js_name = hubFiles)]
    pub fn hub_files() -> Result<JsValue, JsValue> {
        to_js(&serde_json::json!({"required": HF_REQUIRED, "optional": HF_OPTIONAL}))
    }

    /// Loads a model from its files (`names[i]` holds `bytes[i]`): one
    /// `.gguf`, or a Hugging Face model's files. `name` names the model
    /// (repository id or folder) in messages and the adapter config;
    /// `base_weights` (`stored`, `q8_0`, `q4_0`) says whether its f32/f16/bf16
    /// matrices are quantized as they load.
    #[wasm_bindgen(js_name = loadModel)]
    pub fn load_model(
        &self,
        name: &str,
        names: Vec<String>,
        bytes: Array,
        base_weights: &str,
    ) -> Result<JsValue, JsValue> {
        let base = BaseWeights::parse(base_weights).map_err(js)?;
        let size: u64 = bytes
            .iter()
            .map(|b| u64::from(b.unchecked_into::<Uint8Array>().length()))
            .sum();
        let gguf = names.iter().any(|n| n.ends_with(".gguf"));
        self.session
            .try_borrow()
            .map_err(|_| busy())?
            .check_load(name, size, gguf, base)
            .map_err(js)?;
        let bytes: Vec<Vec<u8>> = bytes
            .iter()
            .map(|b| b.unchecked_into::<Uint8Array>().to_vec())
            .collect();
        let files: Vec<(&str, &[u8])> = names
            .iter()
            .map(String::as_str)
            .zip(bytes.iter().map(Vec::as_slice))
            .collect();
        let mut s = self.session.try_borrow_mut().map_err(|_| busy())?;
        let loaded = load_files_with(name, &files, base, s.device()).map_err(js)?;
        to_js(&s.load(loaded).map_err(js)?)
    }

    /// Reads and tokenizes the data file `blob` (named `file`) a slice at a
    /// time, so only its tokens stay in memory; `request` is `{format,
    /// columns, allTokens, seqLen}`; `on_progress(read, size)` is called
    /// after each slice. Returns the summary and the bad-lines choices.
    /// Worker only (it reads with `FileReaderSync`).
    #[wasm_bindgen(js_name = prepareData)]
    pub fn prepare_data(
        &self,
        file: &str,
        blob: Blob,
        request: JsValue,
        on_progress: Option<Function>,
    ) -> Result<JsValue, JsValue> {
        let r: DataRequest = from_js("data", request)?;
        let seq_len = RunSettings::from_text([("seq-len", r.seq_len.as_str())])
            .map_err(js)?
            .seq_len;
        let options = ReadOptions {
            drop_duplicates: r.drop_duplicates,
            ..ReadOptions::from_text(&r.format, &r.columns, r.all_tokens).map_err(js)?
        };
        let reader = std::io::BufReader::with_capacity(CHUNK, BlobReader::new(blob, on_progress)?);
        let mut s = self.session.try_borrow_mut().map_err(|_| busy())?;
        let report = s
            .prepare_data(file, reader, &options, seq_len, MAX_DATA_TOKENS)
            .map_err(js)?;
        to_js(&report)
    }

    /// Starts a run with the form's `settings` (`{name: text}`; settings
    /// not given keep their defaults) and the bad-lines choice (`skip` or
    /// `stop`); returns what the page shows about it.
    pub fn start(&self, settings: JsValue, bad_lines: &str) -> Result<JsValue, JsValue> {
        let values: FormValues = from_js("settings", settings)?;
        let settings = RunSettings::from_text(pairs(&values)).map_err(js)?;
        let bad_lines = BadLines::parse(bad_lines).map_err(js)?;
        let mut s = self.session.try_borrow_mut().map_err(|_| busy())?;
        to_js(&s.start(&settings, bad_lines).map_err(js)?)
    }

    /// The run's state as one checkpoint file (`train::checkpoint`):
    /// resolves to `{step, bytes}`, which the worker keeps in the browser's
    /// private storage.
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn checkpoint(&self) -> Promise {
        let session = self.session.clone();
        future_to_promise(async move {
            let s = session.try_borrow().map_err(|_| busy())?;
            let c = s.checkpoint().await.map_err(js)?;
            let out = js_sys::Object::new();
            js_sys::Reflect::set(&out, &"step".into(), &(c.step as f64).into())?;
            js_sys::Reflect::set(&out, &"bytes".into(), &Uint8Array::from(c.bytes.as_slice()))?;
            Ok(out.into())
        })
    }

    /// Starts the run a checkpoint file holds (`file` names it in messages)
    /// on the model and data loaded now, where it stopped; refused when the
    /// model or data differ. Returns `{info, history, validations}`: what
    /// `start` returns, and the steps and validation losses before the
    /// checkpoint, for the chart.
    #[wasm_bindgen(js_name = resumeFrom)]
    pub fn resume_from(&self, file: &str, bytes: Vec<u8>) -> Result<JsValue, JsValue> {
        let mut s = self.session.try_borrow_mut().map_err(|_| busy())?;
        let info = s.resume_from(file, &bytes).map_err(js)?;
        to_js(&serde_json::json!({
            "info": info,
            "history": s.history(),
            "validations": s.validations(),
            "best": s.best(),
        }))
    }

    /// The prompts the run's samples reply to (one user turn each; at most
    /// 8), for runs started or resumed after; empty: held-out examples'.
    #[wasm_bindgen(js_name = setPrompts)]
    pub fn set_prompts(&self, prompts: Vec<String>) -> Result<(), JsValue> {
        self.session
            .try_borrow_mut()
            .map_err(|_| busy())?
            .set_prompts(prompts)
            .map_err(js)
    }

    /// The best validation loss of the run so far, `{step, loss}`, or
    /// `null` before one.
    pub fn best(&self) -> Result<JsValue, JsValue> {
        to_js(&self.session.try_borrow().map_err(|_| busy())?.best())
    }

    /// The adapter of the best validation loss as a `.zip`, as `exportZip`
    /// writes the last one.
    #[wasm_bindgen(js_name = exportBestZip)]
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn export_best_zip(&self, base_model: String) -> Promise {
        let session = self.session.clone();
        future_to_promise(async move {
            let s = session.try_borrow().map_err(|_| busy())?;
            let zip = s
                .export_best(&base_model)
                .await
                .and_then(|a| a.zip())
                .map_err(js)?;
            Ok(Uint8Array::from(zip.as_slice()).into())
        })
    }

    /// Moves the run on: resolves to `{kind: "validation" | "samples" |
    /// "step" | "paused" | "finished", ...}`.
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn advance(&self) -> Promise {
        let session = self.session.clone();
        future_to_promise(async move {
            let mut s = session.try_borrow_mut().map_err(|_| busy())?;
            to_js(&s.advance().await.map_err(js)?)
        })
    }

    /// Holds the run between steps.
    pub fn pause(&self) -> Result<(), JsValue> {
        self.session
            .try_borrow_mut()
            .map_err(|_| busy())?
            .pause()
            .map_err(js)
    }

    /// Lets a paused run go on.
    pub fn resume(&self) -> Result<(), JsValue> {
        self.session
            .try_borrow_mut()
            .map_err(|_| busy())?
            .resume()
            .map_err(js)
    }

    /// Ends the run after the step under way.
    pub fn stop(&self) -> Result<(), JsValue> {
        self.session
            .try_borrow_mut()
            .map_err(|_| busy())?
            .stop()
            .map_err(js)
    }

    /// Continues `prompt` (a user turn for chat models) greedily for at most
    /// `max_tokens`, with the trained adapter when `tuned`. `on_text` gets
    /// each new piece of text; resolves to the whole reply.
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn generate(
        &self,
        prompt: String,
        max_tokens: usize,
        tuned: bool,
        on_text: Function,
    ) -> Promise {
        let session = self.session.clone();
        future_to_promise(async move {
            let s = session.try_borrow().map_err(|_| busy())?;
            let reply = s
                .generate(&prompt, max_tokens, tuned, |text| {
                    on_text
                        .call1(&JsValue::NULL, &JsValue::from_str(text))
                        .map(|_| ())
                        .map_err(|e| {
                            Error::Order(format!("the page's text callback failed: {e:?}"))
                        })
                })
                .await
                .map_err(js)?;
            Ok(JsValue::from_str(&reply))
        })
    }

    /// The adapter as a `.zip` (adapter_model.safetensors,
    /// adapter_config.json, README.md). `base_model` goes into the config.
    #[wasm_bindgen(js_name = exportZip)]
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn export_zip(&self, base_model: String) -> Promise {
        let session = self.session.clone();
        future_to_promise(async move {
            let s = session.try_borrow().map_err(|_| busy())?;
            let zip = s
                .export(&base_model)
                .await
                .and_then(|a| a.zip())
                .map_err(js)?;
            Ok(Uint8Array::from(zip.as_slice()).into())
        })
    }

    /// Reads a download (`zip`, from `exportZip` or `exportGgufZip`) back as
    /// PEFT or llama.cpp would and compares the logits with the run's live
    /// adapter's: `{ passed, message }`.
    #[wasm_bindgen(js_name = checkDownload)]
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn check_download(&self, zip: Vec<u8>) -> Promise {
        let session = self.session.clone();
        future_to_promise(async move {
            let s = session.try_borrow().map_err(|_| busy())?;
            let check = s.check_download(&zip).await.map_err(js)?;
            let out = js_sys::Object::new();
            js_sys::Reflect::set(&out, &"passed".into(), &check.passed.into())?;
            js_sys::Reflect::set(&out, &"message".into(), &check.message().into())?;
            Ok(out.into())
        })
    }

    /// The base with the run's adapter merged in, streamed to `write` a
    /// piece at a time as it is made (each a `Uint8Array`: 4 MiB gathered,
    /// or one band of a tensor, up to 64 MB),
    /// so the module never holds the file: `kind` `gguf` is one GGUF of
    /// type `ty` (`q8_0`, `f16` or `f32`; a GGUF base only), `hf` a `.zip`
    /// of the Hugging Face directory in `ty` (`bf16`, `f16` or `f32`).
    #[wasm_bindgen(js_name = exportMerged)]
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn export_merged(&self, kind: String, ty: String, write: Function) -> Promise {
        let session = self.session.clone();
        future_to_promise(async move {
            let s = session.try_borrow().map_err(|_| busy())?;
            let mut out = BufWriter::with_capacity(4 << 20, JsWrite(write));
            match kind.as_str() {
                "gguf" => {
                    let ty = FileType::parse("merged GGUF type", &ty).map_err(js)?;
                    s.export_merged_gguf(ty, &mut out).await.map_err(js)?;
                }
                _ => {
                    let dtype = Dtype::parse("merged weight type", &ty).map_err(js)?;
                    s.export_merged_zip(dtype, &mut out).await.map_err(js)?;
                }
            }
            out.flush()
                .map_err(|e| js(Error::format("the merged model", e)))?;
            Ok(JsValue::UNDEFINED)
        })
    }

    /// The hand-off to TRL as a `.zip` (`Session::export_recipe`): the data
    /// file `blob` (named `file`) is read again as `request` says, a slice
    /// at a time, for its records in TRL's formats (bad lines left out, as
    /// the run left them out); `base_model` goes into the adapter's config
    /// and the script.
    #[wasm_bindgen(js_name = exportRecipe)]
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn export_recipe(
        &self,
        base_model: String,
        file: String,
        blob: Blob,
        request: JsValue,
    ) -> Result<Promise, JsValue> {
        let r: DataRequest = from_js("data", request)?;
        let options = ReadOptions {
            drop_duplicates: r.drop_duplicates,
            ..ReadOptions::from_text(&r.format, &r.columns, r.all_tokens).map_err(js)?
        };
        let reader = std::io::BufReader::with_capacity(CHUNK, BlobReader::new(blob, None)?);
        let mut records = Vec::new();
        let mut bytes = 0usize;
        read_stream(&file, reader, &options, &mut |r| {
            bytes += r.record.text_len();
            records.push(r.record)
        });
        // The zip is made in this module's memory: the records, their
        // tokens as JSON (a few bytes an id) and the zip itself.
        if bytes > MAX_RECIPE_TEXT {
            return Err(js(Error::format(
                &file,
                format!(
                    "holds {} MB of text, more than the page zips for TRL ({} MB): use `tabtune export --recipe`",
                    bytes >> 20,
                    MAX_RECIPE_TEXT >> 20
                ),
            )));
        }
        let session = self.session.clone();
        Ok(future_to_promise(async move {
            let s = session.try_borrow().map_err(|_| busy())?;
            let zip = s.export_recipe(&base_model, &records).await.map_err(js)?;
            Ok(Uint8Array::from(zip.as_slice()).into())
        }))
    }

    /// Reads a merged download (`bytes`, from `exportMerged` with `kind`
    /// and `ty`) back as a model and compares its logits with the base's
    /// with the run's live adapter: `{ passed, message }`.
    #[wasm_bindgen(js_name = checkMerged)]
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn check_merged(&self, kind: String, ty: String, bytes: Vec<u8>) -> Promise {
        let session = self.session.clone();
        future_to_promise(async move {
            let s = session.try_borrow().map_err(|_| busy())?;
            let written = match kind.as_str() {
                "gguf" => {
                    let ty = FileType::parse("merged GGUF type", &ty).map_err(js)?;
                    MergedWritten::Gguf(&bytes, ty.into())
                }
                _ => {
                    let dtype = Dtype::parse("merged weight type", &ty).map_err(js)?;
                    MergedWritten::Zip(&bytes, dtype.into())
                }
            };
            let check = s.check_merged(written).await.map_err(js)?;
            let out = js_sys::Object::new();
            js_sys::Reflect::set(&out, &"passed".into(), &check.passed.into())?;
            js_sys::Reflect::set(&out, &"message".into(), &check.message().into())?;
            Ok(out.into())
        })
    }

    /// The adapter for llama.cpp and Ollama as a `.zip` (adapter.gguf, a
    /// Modelfile naming `base_gguf`, the base's GGUF file if it was one,
    /// README.md).
    #[wasm_bindgen(js_name = exportGgufZip)]
    #[allow(clippy::await_holding_refcell_ref)]
    pub fn export_gguf_zip(&self, base_gguf: Option<String>) -> Promise {
        let session = self.session.clone();
        future_to_promise(async move {
            let s = session.try_borrow().map_err(|_| busy())?;
            let zip = s.export_gguf_zip(base_gguf.as_deref()).await.map_err(js)?;
            Ok(Uint8Array::from(zip.as_slice()).into())
        })
    }
}
