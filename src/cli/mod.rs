//! Argument parsing and the four commands.

pub mod alloc;
mod bench;
mod files;
mod inspect;

use std::time::Instant;

use burn::tensor::Device;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use tabtune::data::read::problems_error;
use tabtune::data::table::Columns;
use tabtune::data::{Example, Format, ReadOptions};
use tabtune::generate::{GenerateConfig, TextStream, generate};
use tabtune::io::card::{CardInfo, model_card};
use tabtune::lora::LoraAdapters;
use tabtune::train::{Run, RunSettings, evaluate};
use tabtune::{Error, Result};

/// Fine-tune small language models with LoRA.
#[derive(Parser, Debug)]
#[command(name = "tabtune", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a LoRA adapter and write it (PEFT format) into --out.
    Train(TrainArgs),
    /// Print the mean token loss of a model (+ adapter) on a data file as JSON.
    Eval(EvalArgs),
    /// Continue a prompt (chat template applied for chat models).
    Generate(GenerateArgs),
    /// Measure LoRA training throughput and peak memory.
    Bench(bench::BenchArgs),
    /// Look at training data before training.
    #[command(subcommand)]
    Data(inspect::DataCommand),
}

#[derive(Args, Debug)]
struct ModelArg {
    /// A .gguf file, or a directory with config.json, model.safetensors, tokenizer.json.
    #[arg(long)]
    model: String,
}

#[derive(Args, Debug)]
struct TrainArgs {
    #[command(flatten)]
    model: ModelArg,
    #[command(flatten)]
    data: DataArgs,
    /// Directory to write adapter_model.safetensors, adapter_config.json and
    /// README.md into, or a `.zip` to hold them (as the page's download).
    #[arg(long)]
    out: String,
    /// Optimizer steps (overrides --epochs).
    #[arg(long)]
    steps: Option<usize>,
    /// Passes over the data when --steps is not given.
    #[arg(long, default_value_t = 3.0)]
    epochs: f64,
    /// LoRA rank r.
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// LoRA alpha (scale alpha/r).
    #[arg(long, default_value_t = 16.0)]
    alpha: f64,
    /// Dropout on the adapter input.
    #[arg(long, default_value_t = 0.05)]
    dropout: f64,
    /// Use rsLoRA scaling alpha/sqrt(r).
    #[arg(long)]
    rslora: bool,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// Warm-up steps.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// constant, linear or cosine decay after warm-up.
    #[arg(long, default_value = "cosine")]
    schedule: String,
    /// Examples per micro-batch.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Longest example in tokens (longer ones are cut).
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Clip the global gradient norm (0 = off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// AdamW weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// Seed for init, data order and dropout.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Projections to adapt: q,k,v,o,gate,up,down or `all`.
    #[arg(long, default_value = "all")]
    targets: String,
    /// Share of the examples held out to measure the validation loss (0 = none;
    /// no split when it would be under 5 examples).
    #[arg(long, default_value_t = 0.1)]
    validation: f64,
    /// Name written as base_model_name_or_path in adapter_config.json, e.g.
    /// HuggingFaceTB/SmolLM2-135M-Instruct (default: the GGUF's general.name
    /// or the model directory).
    #[arg(long)]
    base_model: Option<String>,
}

#[derive(Args, Debug)]
struct EvalArgs {
    #[command(flatten)]
    model: ModelArg,
    /// A PEFT adapter directory.
    #[arg(long)]
    adapter: Option<String>,
    #[command(flatten)]
    data: DataArgs,
    /// Longest example in tokens (as in training).
    #[arg(long, default_value_t = 256)]
    seq_len: usize,
    /// Examples per forward pass.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Also write the evaluated token ids and loss masks to this JSON file.
    #[arg(long)]
    dump_tokens: Option<String>,
}

#[derive(Args, Debug)]
struct GenerateArgs {
    #[command(flatten)]
    model: ModelArg,
    /// A PEFT adapter directory.
    #[arg(long)]
    adapter: Option<String>,
    /// The prompt (a user message for chat models).
    #[arg(long)]
    prompt: String,
    /// Most new tokens.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// 0 = greedy; otherwise sampling temperature.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Send the prompt as raw text, without the chat template.
    #[arg(long)]
    raw: bool,
}

/// The device the CLI computes on: the pure-Rust CPU backend.
pub fn device() -> Device {
    Device::flex()
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(a) => train(a),
        Command::Eval(a) => eval(a),
        Command::Generate(a) => generate_cmd(a),
        Command::Bench(a) => bench::run(a),
        Command::Data(c) => inspect::run(c),
    }
}

/// The data file and how to read it (shared by `train` and `eval`).
#[derive(Args, Debug)]
struct DataArgs {
    /// Training data: JSONL or a JSON array of `messages`, ShareGPT
    /// `conversations`, Alpaca, `prompt`/`completion` or `text` records; CSV
    /// or TSV with a header; or plain text / Markdown.
    #[arg(long)]
    data: String,
    /// jsonl, json, csv, tsv or text (default: from the file's name and content).
    #[arg(long)]
    format: Option<String>,
    /// CSV/TSV columns, e.g. `prompt=Question,response=Answer` (default: by
    /// common names such as prompt/question/instruction and response/answer/output).
    #[arg(long)]
    columns: Option<String>,
    /// Train on every token (prompts and system turns too), not only the answers.
    #[arg(long)]
    all_tokens: bool,
    /// Leave out bad records (each is reported) instead of stopping at them.
    #[arg(long)]
    skip_bad: bool,
}

impl DataArgs {
    fn options(&self) -> Result<ReadOptions> {
        Ok(ReadOptions {
            format: self.format.as_deref().map(Format::parse).transpose()?,
            columns: Columns::parse(self.columns.as_deref().unwrap_or(""))?,
            all_tokens: self.all_tokens,
        })
    }
}

/// The examples of the data file, read and rendered as the page and `data
/// inspect` do. Bad lines stop it, all listed (up to 20), unless
/// `--skip-bad`: then each is reported on stderr and left out.
fn examples(loaded: &files::Model, data: &DataArgs, seq_len: usize) -> Result<Vec<Example>> {
    let p = files::prepare_data(&data.data, &data.options()?, loaded.tokenizer()?, seq_len)?;
    let bad: Vec<Error> = p
        .summary
        .problems
        .into_iter()
        .map(|p| Error::Data {
            file: data.data.clone(),
            line: p.line,
            reason: p.reason,
        })
        .collect();
    if !bad.is_empty() {
        if !data.skip_bad {
            return Err(problems_error(&data.data, bad));
        }
        eprintln!("{} bad records left out:", bad.len());
        for e in &bad {
            eprintln!("  {e}");
        }
    }
    Ok(p.examples)
}

impl TrainArgs {
    fn settings(&self) -> RunSettings {
        RunSettings {
            rank: self.rank,
            alpha: self.alpha,
            dropout: self.dropout,
            rslora: self.rslora,
            lr: self.lr,
            steps: self.steps,
            epochs: self.epochs,
            batch: self.batch,
            grad_accum: self.grad_accum,
            seq_len: self.seq_len,
            warmup: self.warmup,
            schedule: self.schedule.clone(),
            max_grad_norm: self.max_grad_norm,
            weight_decay: self.weight_decay,
            seed: self.seed,
            targets: self.targets.clone(),
            validation: self.validation,
        }
    }
}

fn train(a: TrainArgs) -> Result<()> {
    // Every setting is checked before the (slow) model load.
    let settings = a.settings();
    settings.validate()?;
    settings.lora()?;
    a.data.options()?;
    let device = device();
    let loaded = files::load_model(&a.model.model, &device)?;
    let data = examples(&loaded, &a.data, a.seq_len)?;
    let Run {
        mut trainer,
        validation,
        trainable,
    } = settings.begin(loaded.loaded.model.clone(), data, &device)?;
    let steps = trainer.config.steps;
    eprintln!(
        "model {} ({} layers), {} examples, {} trainable parameters, {} steps",
        loaded.loaded.name,
        loaded.loaded.model.config.num_layers,
        trainer.num_examples() + trainer.skipped,
        trainable,
        steps
    );
    let val_before = (!validation.is_empty())
        .then(|| evaluate(&loaded.loaded.model, None, &validation, a.batch, a.seq_len))
        .transpose()?;
    if let Some((loss, tokens)) = val_before {
        eprintln!(
            "{} examples held out for validation ({tokens} tokens), loss before training {loss:.4}",
            validation.len()
        );
    }
    if trainer.truncated + trainer.skipped > 0 {
        eprintln!(
            "{} examples longer than --seq-len {} were cut; {} left out with nothing to train after the cut",
            trainer.truncated, a.seq_len, trainer.skipped
        );
    }
    let bar = ProgressBar::new(steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    let start = Instant::now();
    let (mut tokens, mut last) = (0usize, None);
    for _ in 0..steps {
        let r = trainer.step()?;
        tokens += r.tokens;
        let rate = tokens as f64 / start.elapsed().as_secs_f64();
        bar.set_message(format!(
            "loss {:.4}  lr {:.2e}  {:.0} tok/s",
            r.loss, r.lr, rate
        ));
        bar.inc(1);
        last = Some(r);
    }
    bar.finish();
    let val = match val_before {
        Some((before, _)) => {
            let (after, _) = evaluate(
                &loaded.loaded.model,
                Some(&trainer.adapters),
                &validation,
                a.batch,
                a.seq_len,
            )?;
            println!("validation loss {before:.6} -> {after:.6}");
            Some((before, after, validation.len()))
        }
        None => None,
    };
    let base = a.base_model.as_deref().unwrap_or(&loaded.loaded.name);
    let card = model_card(&CardInfo {
        base_model: base,
        data_file: &a.data.data,
        examples: trainer.num_examples(),
        steps_done: trainer.steps_done(),
        final_loss: last.as_ref().map(|r| r.loss),
        lora: &trainer.adapters.config,
        train: &trainer.config,
        backend: "cpu",
        validation: val,
    });
    files::write_adapter(&a.out, &trainer.adapters, base, &card)?;
    if let Some(r) = last {
        println!("final loss {:.6}", r.loss);
    }
    eprintln!("adapter written to {}", a.out);
    Ok(())
}

/// Loads `--model` and, when given, the `--adapter` directory for it.
fn model_and_adapter(
    model: &str,
    adapter: Option<&str>,
) -> Result<(files::Model, Option<LoraAdapters>)> {
    let device = device();
    let loaded = files::load_model(model, &device)?;
    let adapters = adapter
        .map(|dir| files::read_adapter(dir, &loaded.loaded.model.config, &device))
        .transpose()?;
    Ok((loaded, adapters))
}

fn eval(a: EvalArgs) -> Result<()> {
    a.data.options()?;
    let (loaded, adapters) = model_and_adapter(&a.model.model, a.adapter.as_deref())?;
    let data = examples(&loaded, &a.data, a.seq_len)?;
    let data: Vec<Example> = data
        .into_iter()
        .map(|mut e| {
            e.truncate(a.seq_len);
            e
        })
        .collect();
    if let Some(path) = &a.dump_tokens {
        let examples: Vec<_> = data
            .iter()
            .map(|e| serde_json::json!({"ids": e.ids, "trained": e.trained}))
            .collect();
        let json = serde_json::json!({"batch": a.batch, "examples": examples});
        std::fs::write(path, json.to_string())
            .map_err(|e| Error::format(path, format!("cannot write: {e}")))?;
    }
    let (loss, tokens) = evaluate(
        &loaded.loaded.model,
        adapters.as_ref(),
        &data,
        a.batch,
        a.seq_len,
    )?;
    println!(
        "{}",
        serde_json::json!({"loss": loss, "perplexity": loss.exp(), "tokens": tokens})
    );
    Ok(())
}

fn generate_cmd(a: GenerateArgs) -> Result<()> {
    let (loaded, adapters) = model_and_adapter(&a.model.model, a.adapter.as_deref())?;
    let tok = loaded.tokenizer()?;
    let prompt = tok.encode_prompt(&a.prompt, a.raw)?;
    let config = GenerateConfig {
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        ..GenerateConfig::default()
    };
    let mut stream = TextStream::new(tok);
    let mut shown = 0;
    generate(
        &loaded.loaded.model,
        adapters.as_ref(),
        &prompt,
        &[tok.eos_id],
        &config,
        |id| {
            if let Some(text) = stream.push(id) {
                shown += text.len();
                print!("{text}");
                let _ = std::io::Write::flush(&mut std::io::stdout());
            }
            true
        },
    )?;
    let full = stream.finish()?;
    print!("{}", full.get(shown..).unwrap_or_default());
    println!();
    Ok(())
}
