//! The hand-off to a GPU cluster (`tabtune export --recipe DIR`, the page's
//! "Download for TRL"): the run's adapter, the training data in TRL's
//! formats and as tabtune tokenized it (ids and the answers-only mask), the
//! settings, a TRL `SFTTrainer` script (`recipe_train.py`) that continues
//! from the adapter with them, and `accelerate` configs for one GPU and for
//! several. [`files`] makes the folder's files; the CLI writes them, the
//! page zips them.

use serde_json::{Value, json};

use crate::data::Example;
use crate::data::record::Record;
use crate::error::{Error, Result};
use crate::train::TrainConfig;

/// The script the folder runs with.
pub const TRAIN_PY: &str = include_str!("recipe_train.py");

/// One machine, one GPU.
const ONE_GPU: &str = "# accelerate launch --config_file accelerate/one_gpu.yaml train.py
compute_environment: LOCAL_MACHINE
distributed_type: 'NO'
num_processes: 1
num_machines: 1
machine_rank: 0
gpu_ids: all
mixed_precision: 'no'
use_cpu: false
";

/// One machine, several GPUs (data parallel): set `num_processes` to their
/// number; each takes the batch, so the step holds that many times the
/// examples (lower `batch` in recipe.json to keep tabtune's step).
const MULTI_GPU: &str = "# accelerate launch --config_file accelerate/multi_gpu.yaml train.py
# Each process takes recipe.json's batch: divide it by num_processes to keep the step's size.
compute_environment: LOCAL_MACHINE
distributed_type: MULTI_GPU
num_processes: 2
num_machines: 1
machine_rank: 0
gpu_ids: all
mixed_precision: 'no'
rdzv_backend: static
same_network: true
use_cpu: false
";

/// A record in the TRL dataset format that holds it.
fn trl_record(r: &Record) -> Value {
    match r {
        Record::Messages(m) => json!({ "messages": m }),
        Record::PromptCompletion { prompt, completion } => {
            json!({ "prompt": prompt, "completion": completion })
        }
        Record::Text(t) | Record::Document(t) => json!({ "text": t }),
    }
}

/// What the hand-off is made of.
pub struct Recipe<'a> {
    /// The data file's records, in file order.
    pub records: &'a [Record],
    /// The same data as tabtune tokenized it, cut to the run's length.
    pub examples: &'a [Example],
    /// The run's settings.
    pub train: &'a TrainConfig,
    /// The base model's name for the script: a Hugging Face repository, a
    /// folder or a `.gguf` file.
    pub base_model: &'a str,
    /// The data file's name.
    pub data_file: &'a str,
    /// The adapter's files (`adapter_model.safetensors`,
    /// `adapter_config.json`, `README.md`), by name.
    pub adapter: Vec<(&'a str, &'a [u8])>,
}

/// The folder's files, by path (`adapter/…`, `train.jsonl`,
/// `train.tokens.jsonl`, `recipe.json`, `train.py`, `accelerate/…`).
pub fn files(r: &Recipe) -> Result<Vec<(String, Vec<u8>)>> {
    let lines = |rows: Vec<Value>| {
        rows.iter()
            .map(|v| format!("{v}\n"))
            .collect::<String>()
            .into_bytes()
    };
    let mut out: Vec<(String, Vec<u8>)> = r
        .adapter
        .iter()
        .map(|(name, bytes)| (format!("adapter/{name}"), bytes.to_vec()))
        .collect();
    let trl: Vec<Value> = r.records.iter().map(trl_record).collect();
    out.push(("train.jsonl".into(), lines(trl)));
    let tokens: Vec<Value> = r
        .examples
        .iter()
        .map(|e| json!({ "input_ids": e.ids, "trained": e.trained }))
        .collect();
    out.push(("train.tokens.jsonl".into(), lines(tokens)));
    let t = r.train;
    let recipe = json!({
        "base_model": r.base_model,
        "data_file": r.data_file,
        "examples": r.examples.len(),
        "train": {
            "lr": t.lr, "steps": t.steps, "warmup_steps": t.warmup_steps,
            "schedule": t.schedule.name(), "batch": t.batch_size, "grad_accum": t.grad_accum,
            "seq_len": t.seq_len, "max_grad_norm": t.max_grad_norm,
            "weight_decay": t.weight_decay, "beta1": t.beta1, "beta2": t.beta2,
            "eps": t.eps, "seed": t.seed,
        },
    });
    let pretty = serde_json::to_string_pretty(&recipe)
        .map_err(|e| Error::format("recipe.json", e.to_string()))?;
    out.push(("recipe.json".into(), (pretty + "\n").into_bytes()));
    out.push(("train.py".into(), TRAIN_PY.as_bytes().to_vec()));
    out.push((
        "accelerate/one_gpu.yaml".into(),
        ONE_GPU.as_bytes().to_vec(),
    ));
    out.push((
        "accelerate/multi_gpu.yaml".into(),
        MULTI_GPU.as_bytes().to_vec(),
    ));
    Ok(out)
}
