//! Hugging Face PEFT LoRA adapters: `adapter_model.safetensors` +
//! `adapter_config.json`, byte-compatible with `PeftModel.save_pretrained`.
//!
//! Keys: `base_model.model.model.layers.{i}.{self_attn|mlp}.{x}_proj.lora_A.weight`
//! `[r, in]` and `...lora_B.weight` `[out, r]`, metadata `{"format": "pt"}`.
//! The engine keeps q/k rows in HF order whatever file it loaded, so
//! `lora_B` of q/k needs no permutation here.

use std::collections::HashMap;

use burn::tensor::{Device, Tensor, TensorData, Transaction};
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::io::safetensors::SafetensorsFile;
use crate::lora::{LoraAdapters, LoraConfig, LoraPair, Target};
use crate::model::config::LlamaConfig;
use crate::readback::Readback;

/// `adapter_config.json`: the fields PEFT's `LoraConfig` reads.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AdapterConfig {
    /// Always `"LORA"`.
    pub peft_type: String,
    /// `"CAUSAL_LM"` for language models.
    pub task_type: Option<String>,
    /// The base model the adapter was trained on.
    pub base_model_name_or_path: Option<String>,
    /// Rank.
    pub r: usize,
    /// Scale numerator.
    pub lora_alpha: f64,
    /// Dropout used in training.
    #[serde(default)]
    pub lora_dropout: f64,
    /// Adapted module names.
    pub target_modules: serde_json::Value,
    /// `"none"`: no bias is trained.
    #[serde(default = "none")]
    pub bias: String,
    /// Weights stored `[in, out]` (GPT-2 Conv1D); always false here.
    #[serde(default)]
    pub fan_in_fan_out: bool,
    /// Extra fully-trained modules; none for causal LMs here.
    #[serde(default)]
    pub modules_to_save: Option<Vec<String>>,
    /// Scale `alpha/sqrt(r)`.
    #[serde(default)]
    pub use_rslora: bool,
    /// DoRA; not supported.
    #[serde(default)]
    pub use_dora: bool,
    /// How the factors were initialised.
    #[serde(default = "yes")]
    pub init_lora_weights: serde_json::Value,
    /// Always true for a saved adapter.
    #[serde(default = "yes_bool")]
    pub inference_mode: bool,
    /// Per-layer subset; must be absent.
    #[serde(default)]
    pub layers_to_transform: Option<serde_json::Value>,
    /// Per-module ranks; must be empty.
    #[serde(default)]
    pub rank_pattern: HashMap<String, serde_json::Value>,
    /// Per-module alphas; must be empty.
    #[serde(default)]
    pub alpha_pattern: HashMap<String, serde_json::Value>,
}

fn none() -> String {
    "none".into()
}
fn yes() -> serde_json::Value {
    serde_json::Value::Bool(true)
}
fn yes_bool() -> bool {
    true
}

/// The two files of an adapter, in memory.
pub struct PeftFiles {
    /// `adapter_model.safetensors`.
    pub safetensors: Vec<u8>,
    /// `adapter_config.json`.
    pub config_json: String,
}

/// The factors in PEFT layout (`[r, in]` / `[out, r]`), batched into one read.
fn transaction(adapters: &LoraAdapters) -> Transaction {
    adapters
        .named_tensors()
        .into_iter()
        // engine [in, r] / [r, out] -> PEFT [r, in] / [out, r]
        .fold(Transaction::default(), |tx, (_, t)| {
            tx.register(t.clone().transpose())
        })
}

/// Serialises `adapters` as PEFT does, once the factors are read (all in
/// one transaction). `base_model` goes into `base_model_name_or_path`.
pub fn export(adapters: &LoraAdapters, base_model: &str) -> Readback<PeftFiles> {
    let owned = adapters.clone();
    let base_model = base_model.to_string();
    Readback::new(transaction(adapters), move |data| {
        serialize(&owned, &data, &base_model)
    })
}

/// Writes the two files from the factors' values, in `named_tensors` order.
fn serialize(adapters: &LoraAdapters, data: &[TensorData], base_model: &str) -> Result<PeftFiles> {
    let named = adapters.named_tensors();
    if named.len() != data.len() {
        return Err(Error::Backend(format!(
            "read {} tensors for {} factors",
            data.len(),
            named.len()
        )));
    }
    let mut buffers: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(named.len());
    for ((name, t), d) in named.into_iter().zip(data) {
        let [rows, cols] = t.dims();
        let bytes = d.iter::<f32>().flat_map(|v| v.to_le_bytes()).collect();
        buffers.push((name, vec![cols, rows], bytes));
    }
    let views = buffers
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|v| (name.clone(), v))
                .map_err(Error::backend)
        })
        .collect::<Result<Vec<_>>>()?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let safetensors = safetensors::serialize(views, Some(metadata)).map_err(Error::backend)?;
    let c = &adapters.config;
    let config = AdapterConfig {
        peft_type: "LORA".into(),
        task_type: Some("CAUSAL_LM".into()),
        base_model_name_or_path: Some(base_model.to_string()),
        r: c.rank,
        lora_alpha: c.alpha,
        lora_dropout: c.dropout,
        target_modules: c
            .targets
            .iter()
            .map(|t| t.peft_name())
            .collect::<Vec<_>>()
            .into(),
        bias: "none".into(),
        fan_in_fan_out: false,
        modules_to_save: None,
        use_rslora: c.use_rslora,
        use_dora: false,
        init_lora_weights: yes(),
        inference_mode: true,
        layers_to_transform: None,
        rank_pattern: HashMap::new(),
        alpha_pattern: HashMap::new(),
    };
    let config_json = serde_json::to_string_pretty(&config).map_err(Error::backend)?;
    Ok(PeftFiles {
        safetensors,
        config_json,
    })
}

/// Parses `adapter_config.json` into tabtune's LoRA settings, rejecting the
/// PEFT options tabtune does not implement.
pub fn parse_config(file: &str, bytes: &[u8]) -> Result<(AdapterConfig, LoraConfig)> {
    let cfg: AdapterConfig = serde_json::from_slice(bytes).map_err(|e| {
        Error::format(
            file,
            format!("line {} column {}: {e}", e.line(), e.column()),
        )
    })?;
    let fail = |why: &str| Err(Error::format(file, why));
    if cfg.peft_type != "LORA" {
        return fail(&format!("peft_type `{}` is not LORA", cfg.peft_type));
    }
    if cfg.use_dora {
        return fail("DoRA adapters (use_dora) are not supported");
    }
    if cfg.fan_in_fan_out {
        return fail("fan_in_fan_out adapters are not supported");
    }
    if cfg.bias != "none" {
        return fail("adapters that train biases are not supported (bias must be \"none\")");
    }
    if cfg.modules_to_save.as_ref().is_some_and(|m| !m.is_empty()) {
        return fail("modules_to_save is not supported for causal LMs");
    }
    if cfg
        .layers_to_transform
        .as_ref()
        .is_some_and(|v| !v.is_null())
    {
        return fail("layers_to_transform is not supported");
    }
    if !cfg.rank_pattern.is_empty() || !cfg.alpha_pattern.is_empty() {
        return fail("rank_pattern / alpha_pattern are not supported");
    }
    let names: Vec<String> = match &cfg.target_modules {
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        serde_json::Value::String(s) => {
            return Err(Error::format(
                file,
                format!("target_modules is a regex (`{s}`); list the module names instead"),
            ));
        }
        _ => return fail("target_modules must be a list of module names"),
    };
    let mut targets = Vec::new();
    for n in &names {
        match Target::ALL.iter().find(|t| t.peft_name() == n) {
            Some(t) => targets.push(*t),
            None => return fail(&format!("target module `{n}` is not a Llama projection")),
        }
    }
    targets.sort();
    let lora = LoraConfig {
        rank: cfg.r,
        alpha: cfg.lora_alpha,
        dropout: cfg.lora_dropout,
        targets,
        use_rslora: cfg.use_rslora,
    };
    lora.validate().map_err(|e| Error::format(file, e))?;
    Ok((cfg, lora))
}

/// Loads an adapter saved by PEFT or by [`export`] for a model of `model`'s
/// shape. Every tensor's shape is checked, and unknown keys are an error.
pub fn import(
    config_file: &str,
    config_bytes: &[u8],
    weights_file: &str,
    weights: &[u8],
    model: &LlamaConfig,
    device: &Device,
) -> Result<LoraAdapters> {
    let (_, lora) = parse_config(config_file, config_bytes)?;
    let st = SafetensorsFile::parse(weights_file, weights)?;
    let mut expected = Vec::new();
    let r = lora.rank;
    let mut layers = Vec::with_capacity(model.num_layers);
    for i in 0..model.num_layers {
        let mut layer: [Option<LoraPair>; 7] = Default::default();
        for &t in &lora.targets {
            let (d_in, d_out) = t.dims(model);
            let stem = format!("base_model.model.model.layers.{i}.{}", t.hf_path());
            let mut get = |suffix: &str, shape: [usize; 2]| -> Result<Tensor<2>> {
                let key = format!("{stem}.{suffix}");
                let (got, values) = st.get_f32(&key)?.ok_or_else(|| {
                    Error::format(weights_file, format!("tensor `{key}` is missing"))
                })?;
                if got != shape {
                    return Err(Error::format(
                        weights_file,
                        format!("tensor `{key}` has shape {got:?}, expected {shape:?}"),
                    ));
                }
                expected.push(key);
                // PEFT [r, in] / [out, r] -> engine [in, r] / [r, out]
                Ok(Tensor::<2>::from_data(TensorData::new(values, shape), device).transpose())
            };
            let a = get("lora_A.weight", [r, d_in])?;
            let b = get("lora_B.weight", [d_out, r])?;
            layer[t.index()] = Some(LoraPair { a, b });
        }
        layers.push(layer);
    }
    if let Some(extra) = st.names().into_iter().find(|n| !expected.contains(n)) {
        return Err(Error::format(
            weights_file,
            format!("tensor `{extra}` does not belong to a LoRA adapter of this model"),
        ));
    }
    Ok(LoraAdapters {
        config: lora,
        layers,
    })
}
