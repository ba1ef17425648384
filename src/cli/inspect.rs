//! `tabtune data inspect`: what a data file holds for a model, before any
//! training: counts, every bad line, and examples as the model sees them
//! with the trained tokens marked.

use std::io::IsTerminal;

use clap::{Args, Subcommand};

use tabtune::Result;
use tabtune::data::prepare_stream;
use tabtune::data::summary::{Segment, preview};

use super::settings::{Batching, SettingsArgs};
use super::{DataArgs, ModelArg, device, files};

/// Data commands.
#[derive(Subcommand, Debug)]
pub enum DataCommand {
    /// Show what a data file holds for a model: counts, bad lines, examples.
    Inspect(InspectArgs),
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    model: ModelArg,
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    settings: SettingsArgs<Batching>,
    /// How many examples to show.
    #[arg(long, default_value_t = 1)]
    examples: usize,
    /// Print the summary as one JSON object instead.
    #[arg(long)]
    json: bool,
}

/// Runs a data command.
pub fn run(command: DataCommand) -> Result<()> {
    match command {
        DataCommand::Inspect(a) => inspect(a),
    }
}

fn inspect(a: InspectArgs) -> Result<()> {
    let options = a.data.options()?;
    let seq_len = a.settings.settings()?.seq_len;
    let loaded = files::load_model(&a.model.model, &device())?;
    let tok = files::tokenizer(&loaded)?;
    let p = prepare_stream(&a.data.data, a.data.open()?, &options, tok, seq_len)?;
    let s = &p.summary;
    if a.json {
        println!(
            "{}",
            serde_json::to_string(s).map_err(tabtune::Error::backend)?
        );
        return Ok(());
    }
    println!("{} ({}, {})", s.file, s.format, s.schema);
    println!(
        "  {}, {}{}, {} tokens ({} trained)",
        plural(s.records, "record"),
        plural(s.examples, "example"),
        if s.turns > 0 {
            format!(" with {} turns", s.turns)
        } else {
            String::new()
        },
        s.tokens,
        s.trained_tokens
    );
    if s.longer_than_seq_len > 0 {
        println!(
            "  {} examples are longer than --seq-len {} and will be cut",
            s.longer_than_seq_len, s.seq_len
        );
    }
    println!(
        "  {} (`tabtune train` stops on them; `--skip-bad`, or the page's Bad lines choice, leaves them out)",
        plural(s.problems.len() + s.more_problems, "bad line")
    );
    for problem in &s.problems {
        println!("    line {}: {}", problem.line, problem.reason);
    }
    if s.more_problems > 0 {
        println!("    ... and {} more", s.more_problems);
    }
    for note in &s.notes {
        println!("  note, line {}: {}", note.line, note.reason);
    }
    let color = std::io::stdout().is_terminal();
    for (i, ex) in p.examples.iter().take(a.examples).enumerate() {
        println!(
            "\nexample {} ({} tokens, {} trained; trained text {}):",
            i + 1,
            ex.ids.len(),
            ex.trained_tokens(),
            if color {
                "highlighted"
            } else {
                "between [[ and ]]"
            }
        );
        println!("{}", marked(&preview(tok, ex)?, color));
    }
    Ok(())
}

/// The segments with the trained ones highlighted (a terminal) or bracketed.
fn marked(segments: &[Segment], color: bool) -> String {
    segments
        .iter()
        .map(|s| match (s.trained, color) {
            (false, _) => s.text.clone(),
            (true, true) => format!("\x1b[30;43m{}\x1b[0m", s.text),
            (true, false) => format!("[[{}]]", s.text),
        })
        .collect()
}

fn plural(n: usize, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}
