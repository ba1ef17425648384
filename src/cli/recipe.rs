//! `tabtune export --recipe DIR`: the hand-off to a GPU cluster. The folder
//! holds the run's adapter, the training data in TRL's formats and as
//! tabtune tokenized it (ids and the answers-only mask), the settings, a TRL
//! `SFTTrainer` script (`recipe_train.py`) that continues from the adapter
//! with them, and `accelerate` configs for one GPU and for several.

use std::path::Path;

use serde_json::{Value, json};

use tabtune::data::record::Record;
use tabtune::data::summary::prepare_stream;
use tabtune::data::{ReadOptions, read_strict};
use tabtune::io::bundle::ENTRIES;
use tabtune::model::load::Loaded;
use tabtune::train::RunSettings;
use tabtune::{Error, Result};

/// The script the folder runs with.
const TRAIN_PY: &str = include_str!("recipe_train.py");

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

/// Writes the hand-off for the adapter in `adapter_dir` and the data file
/// `data` (its format found as `train` finds it) into `dir`.
pub fn write(
    dir: &str,
    loaded: &Loaded,
    adapter_dir: &str,
    data: &str,
    settings: &RunSettings,
    base_model: &str,
) -> Result<()> {
    let tok = loaded.tokenizer.as_ref().ok_or_else(|| {
        Error::format(
            &loaded.name,
            "the model has no tokenizer, so text cannot be tokenized",
        )
    })?;
    let read = |p: &Path| {
        std::fs::read(p)
            .map_err(|e| Error::format(p.display().to_string(), format!("cannot read: {e}")))
    };
    let bytes = read(Path::new(data))?;
    let options = ReadOptions::default();
    let records = read_strict(data, &bytes, &options)?;
    let seq_len = settings.seq_len;
    let prepared = prepare_stream(data, &bytes[..], &options, tok, seq_len)?;
    let examples: Vec<_> = prepared
        .examples
        .into_iter()
        .map(|mut e| {
            e.truncate(seq_len);
            e
        })
        .collect();
    let train = settings.train(examples.len())?;
    let d = Path::new(dir);
    let io = |e: std::io::Error| Error::format(dir, format!("cannot write: {e}"));
    std::fs::create_dir_all(d.join("adapter")).map_err(io)?;
    std::fs::create_dir_all(d.join("accelerate")).map_err(io)?;
    for name in ENTRIES {
        let from = Path::new(adapter_dir).join(name);
        if from.exists() {
            std::fs::write(d.join("adapter").join(name), read(&from)?).map_err(io)?;
        }
    }
    let lines = |rows: Vec<Value>| rows.iter().map(|v| format!("{v}\n")).collect::<String>();
    let trl: Vec<Value> = records.iter().map(|r| trl_record(&r.record)).collect();
    std::fs::write(d.join("train.jsonl"), lines(trl)).map_err(io)?;
    let tokens: Vec<Value> = examples
        .iter()
        .map(|e| json!({ "input_ids": e.ids, "trained": e.trained }))
        .collect();
    std::fs::write(d.join("train.tokens.jsonl"), lines(tokens)).map_err(io)?;
    let recipe = json!({
        "base_model": base_model,
        "data_file": data,
        "examples": examples.len(),
        "train": {
            "lr": train.lr, "steps": train.steps, "warmup_steps": train.warmup_steps,
            "schedule": settings.schedule, "batch": train.batch_size, "grad_accum": train.grad_accum,
            "seq_len": train.seq_len, "max_grad_norm": train.max_grad_norm,
            "weight_decay": train.weight_decay, "beta1": train.beta1, "beta2": train.beta2,
            "eps": train.eps, "seed": train.seed,
        },
    });
    let pretty =
        serde_json::to_string_pretty(&recipe).map_err(|e| Error::format(dir, e.to_string()))?;
    std::fs::write(d.join("recipe.json"), pretty + "\n").map_err(io)?;
    std::fs::write(d.join("train.py"), TRAIN_PY).map_err(io)?;
    std::fs::write(d.join("accelerate").join("one_gpu.yaml"), ONE_GPU).map_err(io)?;
    std::fs::write(d.join("accelerate").join("multi_gpu.yaml"), MULTI_GPU).map_err(io)?;
    Ok(())
}
