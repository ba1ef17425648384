//! Argument parsing and the commands: `train` drives a
//! [`Session`] as the page's engine does; `eval`, `generate`, `bench` and
//! `data inspect` call the core directly.

pub mod alloc;
mod bench;
mod checkpoints;
mod export;
mod files;
mod inspect;
mod judging;
mod merged;
mod recipe;
mod settings;

use std::io::Write;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use burn::tensor::Device;
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use tabtune::data::summary::Problem;
use tabtune::data::{BadLines, Example, ReadOptions, prepare_stream};
use tabtune::generate::{GenerateConfig, generate_text};
use tabtune::lora::LoraAdapters;
use tabtune::model::load::Loaded;
use tabtune::model::quantized::BaseWeights;
use tabtune::readback::block_on;
use tabtune::train::checkpoint::{self, RunRecord};
use tabtune::train::session::When;
use tabtune::train::setting::preset;
use tabtune::train::{Progress, RunStatus, Session, evaluate};
use tabtune::{Error, Result};

use settings::SettingsArgs;

/// Fine-tune small language models with LoRA.
#[derive(Parser, Debug)]
#[command(name = "tabtune", version, about)]
pub struct Cli {
    /// Where to compute: `cpu` (burn's flex backend on every core) or `gpu`
    /// (burn's wgpu backend: Vulkan, Metal or DX12; needs a build with
    /// `--features gpu`).
    #[arg(long, global = true, value_enum, default_value_t = Backend::Cpu)]
    device: Backend,
    /// How the base model's embedding and projections are kept once
    /// loaded: `stored` (as the file has them: a GGUF's blocks, a
    /// safetensors model in f32), `q8_0` or `q4_0` (f32/f16/bf16 matrices
    /// quantized at load, ggml's blocks of 32; already quantized GGUF
    /// tensors stay as they are).
    #[arg(long, global = true, default_value = "stored", value_parser = parse_base_weights)]
    base_weights: BaseWeights,
    #[command(subcommand)]
    command: Command,
}

/// The `--device` choices.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// burn's flex backend.
    Cpu,
    /// burn's wgpu backend on the machine's default GPU adapter.
    Gpu,
}

impl Backend {
    /// The name the session's reports carry.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Cpu => "cpu",
            Backend::Gpu => "gpu",
        }
    }
}

/// The device chosen by `--device`, set once by [`run`].
static DEVICE: OnceLock<(Device, Backend)> = OnceLock::new();

/// `--base-weights`, set once by [`run`].
static BASE_WEIGHTS: OnceLock<BaseWeights> = OnceLock::new();

fn parse_base_weights(text: &str) -> Result<BaseWeights> {
    BaseWeights::parse(text)
}

/// How models load, as `--base-weights` says.
pub fn base_weights() -> BaseWeights {
    BASE_WEIGHTS.get().copied().unwrap_or_default()
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
    /// Write a trained adapter in the files other tools load (llama.cpp, Ollama).
    Export(export::ExportArgs),
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
    #[command(flatten)]
    settings: SettingsArgs<settings::All>,
    /// Start from a named set of settings (the flags given beside it win):
    /// `lesson`, a short run on a small data set that visibly changes the
    /// model, with samples every 6 steps; `careful`, for real data: a lower
    /// rate, warm-up, cosine decay, validation every 10 steps, early
    /// stopping, the best adapter kept.
    #[arg(long)]
    preset: Option<String>,
    /// Name written as base_model_name_or_path in adapter_config.json, e.g.
    /// HuggingFaceTB/SmolLM2-135M-Instruct (default: the GGUF's general.name
    /// or the model directory).
    #[arg(long)]
    base_model: Option<String>,
    /// Also write every step's report and validation loss, one JSON object
    /// a line, to this file, each with `elapsed_ms`: the time spent stepping
    /// so far (validation excluded).
    #[arg(long)]
    log: Option<String>,
    /// Go on with the run a checkpoint holds: a `checkpoint-N` directory,
    /// its `state.safetensors`, or a directory of checkpoints (its latest).
    /// The settings are the run's; --model and --data must be the run's
    /// (checked by their fingerprints). Stopped and resumed, a run on the
    /// CPU takes the very steps it would have taken.
    #[arg(long)]
    resume: Option<String>,
    /// How many of the latest checkpoints to keep (`--save-every` writes
    /// one every N steps into --out, or OUT.checkpoints/ for an --out
    /// OUT.zip; Ctrl-C writes one and ends the run).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..))]
    keep_checkpoints: u64,
    /// A prompt for the samples `--sample-every` takes, and for the stop
    /// check after training when no examples are held out; give it up to 8
    /// times (default: the held-out examples' prompts).
    #[arg(long = "sample-prompt")]
    sample_prompts: Vec<String>,
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
    #[command(flatten)]
    settings: SettingsArgs<settings::Batching>,
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

/// The device the CLI computes on: the one `--device` chose, else the
/// pure-Rust CPU backend.
pub fn device() -> Device {
    DEVICE
        .get()
        .map(|(d, _)| d.clone())
        .unwrap_or_else(Device::flex)
}

/// The name of the backend [`device`] computes on.
pub fn backend() -> Backend {
    DEVICE.get().map(|(_, b)| *b).unwrap_or(Backend::Cpu)
}

/// Starts the backend `--device` names.
fn open_device(backend: Backend) -> Result<Device> {
    match backend {
        Backend::Cpu => Ok(Device::flex()),
        #[cfg(feature = "gpu")]
        Backend::Gpu => Device::wgpu_options()
            .init()
            .map_err(|e| Error::setting("device", format!("no GPU could be started: {e}"))),
        #[cfg(not(feature = "gpu"))]
        Backend::Gpu => Err(Error::setting(
            "device",
            "`gpu`: this tabtune was built without the GPU backend: build it with `cargo build --features gpu --bin tabtune`",
        )),
    }
}

/// Runs one parsed command.
pub fn run(cli: Cli) -> Result<()> {
    let device = open_device(cli.device)?;
    let _ = DEVICE.set((device, cli.device));
    let _ = BASE_WEIGHTS.set(cli.base_weights);
    match cli.command {
        Command::Train(a) => train(a),
        Command::Eval(a) => eval(a),
        Command::Generate(a) => generate_cmd(a),
        Command::Bench(a) => bench::run(a),
        Command::Data(c) => inspect::run(c),
        Command::Export(a) => export::run(a),
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
    /// Leave out records that repeat an earlier one (by default they are
    /// kept, each with a note: a repeated example weighs more).
    #[arg(long)]
    drop_duplicates: bool,
}

impl DataArgs {
    fn options(&self) -> Result<ReadOptions> {
        Ok(ReadOptions {
            drop_duplicates: self.drop_duplicates,
            ..ReadOptions::from_text(
                self.format.as_deref().unwrap_or(""),
                self.columns.as_deref().unwrap_or(""),
                self.all_tokens,
            )?
        })
    }

    fn bad_lines(&self) -> BadLines {
        if self.skip_bad {
            BadLines::Skip
        } else {
            BadLines::Stop
        }
    }

    /// The file, opened for streaming.
    fn open(&self) -> Result<std::io::BufReader<std::fs::File>> {
        std::fs::File::open(&self.data)
            .map(std::io::BufReader::new)
            .map_err(|e| Error::format(&self.data, format!("cannot read: {e}")))
    }
}

/// Lists the bad lines on stderr when they are to be left out (a stop
/// refuses the run with them listed instead).
fn report_left_out(data: &DataArgs, problems: &[Problem], more: usize) {
    if data.skip_bad && !problems.is_empty() {
        eprintln!("{} bad records left out:", problems.len() + more);
        for p in problems {
            eprintln!("  {}:{}: {}", data.data, p.line, p.reason);
        }
        if more > 0 {
            eprintln!("  ... and {more} more");
        }
    }
}

fn train(a: TrainArgs) -> Result<()> {
    // Every setting, the checkpoint and --out are checked before the (slow)
    // model load.
    let resume = match &a.resume {
        Some(path) => Some(read_checkpoint(path, &a)?),
        None => None,
    };
    let settings = match &resume {
        Some((_, _, record)) => record.settings.clone(),
        None => {
            let preset = a.preset.as_deref().map(preset).transpose()?;
            a.settings.settings_with(preset)?
        }
    };
    let options = a.data.options()?;
    checkpoints::prepare_out(&a.out)?;
    let saves = checkpoints::dir_for(&a.out);
    checkpoints::claim(&saves, resume.as_ref().map(|(_, _, record)| record.step))?;
    if resume.is_none() {
        judging::forget_best(&saves)?;
    }
    // A resumed run's log goes on where it stopped.
    let mut log = a
        .log
        .as_deref()
        .map(|path| Log::create(path, resume.is_some()))
        .transpose()?;
    let loaded = files::load_model(&a.model.model, &device())?;
    let name = loaded.name.clone();
    let mut session = Session::new(device(), backend().name());
    let model = session.load(loaded)?;
    let data = session.prepare_data(
        &a.data.data,
        a.data.open()?,
        &options,
        settings.seq_len,
        usize::MAX,
    )?;
    session.set_prompts(a.sample_prompts.clone())?;
    let run = match &resume {
        Some((file, bytes, _)) => session.resume_from(file, bytes)?,
        None => session.start(&settings, a.data.bad_lines())?,
    };
    report_left_out(&a.data, &data.summary.problems, data.summary.more_problems);
    eprintln!(
        "model {} ({} layers), {} examples, {} trainable parameters, {} steps",
        model.name,
        model.layers,
        run.examples + run.skipped,
        run.trainable_parameters,
        run.steps
    );
    if let Some((file, _, _)) = &resume {
        eprintln!("resumed from {file} after step {}", run.resumed_at);
    }
    if run.truncated + run.skipped > 0 {
        eprintln!(
            "{} examples longer than --seq-len {} were cut; {} left out with nothing to train after the cut",
            run.truncated, settings.seq_len, run.skipped
        );
    }
    let bar = ProgressBar::new(run.steps as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {pos}/{len} [{elapsed_precise}<{eta_precise}] {msg}",
        )
        .expect("valid template"),
    );
    bar.set_position(run.resumed_at as u64);
    let base = a.base_model.as_deref().unwrap_or(&name);
    let save = |session: &Session| -> Result<std::path::PathBuf> {
        let adapter = block_on(session.export(base))?;
        block_on(checkpoints::save(
            session,
            &adapter,
            &saves,
            a.keep_checkpoints as usize,
        ))
    };
    checkpoints::catch_interrupt();
    // Stepping time only (validation excluded), as the page counts it.
    let mut stepping = Duration::ZERO;
    let (mut tokens, mut last) = (0usize, None);
    let halted = loop {
        let t0 = Instant::now();
        let progress = block_on(session.advance())?;
        if let Progress::Step { .. } = progress {
            stepping += t0.elapsed();
        }
        if let Some(log) = &mut log {
            log.write(&progress, stepping)?;
        }
        match progress {
            Progress::Validation(v) => match v.when {
                When::Before => eprintln!(
                    "{} examples held out for validation ({} tokens), loss before training {:.4}",
                    v.examples, v.tokens, v.loss
                ),
                When::During => say(
                    &bar,
                    format!("validation loss {:.6} at step {}", v.loss, v.step),
                ),
                When::After => {
                    let before = session.validations().first().map_or(f64::NAN, |b| b.loss);
                    println!("validation loss {before:.6} -> {:.6}", v.loss);
                }
            },
            Progress::Samples(samples) => say(&bar, judging::samples_text(&samples)),
            Progress::Step { report: r, steps } => {
                tokens += r.tokens;
                let rate = tokens as f64 / stepping.as_secs_f64();
                bar.set_message(format!(
                    "loss {:.4}  lr {:.2e}  {:.0} tok/s",
                    r.loss, r.lr, rate
                ));
                bar.inc(1);
                if r.skipped {
                    say(
                        &bar,
                        format!(
                            "step {}: loss {} and gradient norm {}: not finite, update skipped",
                            r.step, r.loss, r.grad_norm
                        ),
                    );
                }
                let every = settings.save_every;
                if every > 0 && r.step % every == 0 && r.step < steps && !checkpoints::interrupted()
                {
                    // The run goes on when a checkpoint cannot be written.
                    match save(&session) {
                        Ok(dir) => say(&bar, format!("checkpoint written to {}", dir.display())),
                        Err(e) => say(
                            &bar,
                            format!("warning: no checkpoint at step {}: {e}", r.step),
                        ),
                    }
                }
                last = Some(r);
            }
            Progress::Paused { .. } => unreachable!("the CLI never pauses"),
            Progress::Finished { reason, early, .. } => {
                if let Some(early) = early {
                    say(&bar, early.message());
                }
                break reason;
            }
        }
        if checkpoints::interrupted() && session.status() == RunStatus::Running {
            bar.abandon();
            let dir = save(&session)?;
            eprintln!(
                "interrupted after step {}: checkpoint written to {}; go on with the same command and --resume {}",
                session.history().len(),
                dir.display(),
                dir.display()
            );
            std::process::exit(130);
        }
    };
    bar.finish();
    let adapter = block_on(session.export(base))?;
    files::write_adapter(&a.out, &adapter)?;
    if let Some(best) = session.best() {
        let dir = saves.join(judging::BEST);
        let files = block_on(session.export_best(base))?;
        files::write_adapter(&dir.display().to_string(), &files)?;
        eprintln!(
            "the best adapter (validation loss {:.4} at step {}) is written to {}",
            best.loss,
            best.step,
            dir.display()
        );
    }
    if let Some(reason) = halted {
        let dir = save(&session)?;
        eprintln!(
            "the adapter as it was before those steps is written to {}, and a checkpoint to {}",
            a.out,
            dir.display()
        );
        return Err(Error::Order(reason));
    }
    // The written files, read back from disk as PEFT reads them.
    let check = files::read_back(&a.out, |written| block_on(session.check_written(written)))?;
    if let Some(r) = last {
        println!("final loss {:.6}", r.loss);
        println!(
            "{tokens} tokens in {:.2} s of stepping: {:.1} tokens/s",
            stepping.as_secs_f64(),
            tokens as f64 / stepping.as_secs_f64()
        );
    }
    eprintln!("adapter written to {}", a.out);
    println!("{}", check.message());
    Ok(())
}

/// A line above the progress bar, or on stderr when the bar is hidden
/// (not a terminal), where `println` would drop it.
fn say(bar: &ProgressBar, line: impl AsRef<str>) {
    match bar.is_hidden() {
        true => eprintln!("{}", line.as_ref()),
        false => bar.println(line),
    }
}

/// `--resume`'s checkpoint: its file's name, bytes and record. Settings
/// given beside it are refused: the run's are the checkpoint's.
fn read_checkpoint(path: &str, a: &TrainArgs) -> Result<(String, Vec<u8>, RunRecord)> {
    let mut given = a.settings.given();
    if a.preset.is_some() {
        given.insert(0, "preset");
    }
    if !given.is_empty() {
        return Err(Error::setting(
            given[0],
            "--resume goes on with the settings of the run it resumes: leave the settings out",
        ));
    }
    let file = checkpoints::resolve(path)?;
    let shown = file.display().to_string();
    let bytes =
        std::fs::read(&file).map_err(|e| Error::format(&shown, format!("cannot read: {e}")))?;
    let (record, _) = checkpoint::read(&shown, &bytes)?;
    Ok((shown, bytes, record))
}

/// `--log`: one JSON object a line for each step and validation loss,
/// with the stepping time so far (`elapsed_ms`).
struct Log {
    path: String,
    file: std::fs::File,
}

impl Log {
    /// The log at `path`, emptied first unless `append`.
    fn create(path: &str, append: bool) -> Result<Log> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(path)
            .map_err(|e| Error::format(path, format!("cannot write: {e}")))?;
        Ok(Log {
            path: path.to_string(),
            file,
        })
    }

    /// One line: the progress, with `elapsed_ms`, the stepping time so far.
    fn write(&mut self, progress: &Progress, stepping: Duration) -> Result<()> {
        let mut value = serde_json::to_value(progress).map_err(Error::backend)?;
        if let Some(fields) = value.as_object_mut() {
            fields.insert(
                "elapsed_ms".into(),
                serde_json::json!(stepping.as_secs_f64() * 1000.0),
            );
        }
        let line = value.to_string();
        writeln!(self.file, "{line}")
            .map_err(|e| Error::format(&self.path, format!("cannot write: {e}")))
    }
}

/// Loads `--model` and, when given, the `--adapter` directory for it.
fn model_and_adapter(model: &str, adapter: Option<&str>) -> Result<(Loaded, Option<LoraAdapters>)> {
    let device = device();
    let loaded = files::load_model(model, &device)?;
    let adapters = adapter
        .map(|dir| files::read_adapter(dir, &loaded.model.config, &device))
        .transpose()?;
    Ok((loaded, adapters))
}

fn eval(a: EvalArgs) -> Result<()> {
    let options = a.data.options()?;
    let settings = a.settings.settings()?;
    let (batch, seq_len) = (settings.batch, settings.seq_len);
    let (loaded, adapters) = model_and_adapter(&a.model.model, a.adapter.as_deref())?;
    let p = prepare_stream(
        &a.data.data,
        a.data.open()?,
        &options,
        files::tokenizer(&loaded)?,
        seq_len,
    )?;
    a.data
        .bad_lines()
        .check(&a.data.data, &p.summary.problems, p.summary.more_problems)?;
    report_left_out(&a.data, &p.summary.problems, p.summary.more_problems);
    let data: Vec<Example> = p.examples.into_iter().map(|e| e.cut(seq_len)).collect();
    if let Some(path) = &a.dump_tokens {
        let examples: Vec<_> = data
            .iter()
            .map(|e| serde_json::json!({"ids": e.ids, "trained": e.trained}))
            .collect();
        let json = serde_json::json!({"batch": batch, "examples": examples});
        std::fs::write(path, json.to_string())
            .map_err(|e| Error::format(path, format!("cannot write: {e}")))?;
    }
    let (loss, tokens) =
        block_on(evaluate(&loaded.model, adapters.as_ref(), &data, batch, seq_len)?.read())?;
    println!(
        "{}",
        serde_json::json!({"loss": loss, "perplexity": loss.exp(), "tokens": tokens})
    );
    Ok(())
}

fn generate_cmd(a: GenerateArgs) -> Result<()> {
    let (loaded, adapters) = model_and_adapter(&a.model.model, a.adapter.as_deref())?;
    let tok = files::tokenizer(&loaded)?;
    let prompt = tok.encode_prompt(&a.prompt, a.raw)?;
    let config = GenerateConfig {
        max_tokens: a.max_tokens,
        temperature: a.temperature,
        ..GenerateConfig::default()
    };
    let mut shown = 0;
    let full = block_on(generate_text(
        &loaded.model,
        adapters.as_ref(),
        tok,
        &prompt,
        &config,
        |text| {
            shown += text.len();
            print!("{text}");
            let _ = std::io::stdout().flush();
            Ok(())
        },
    ))?;
    print!("{}", full.get(shown..).unwrap_or_default());
    println!();
    Ok(())
}
