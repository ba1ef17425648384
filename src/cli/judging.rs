//! How `tabtune train` shows what judges a run besides its losses: the
//! samples during training, the stop check after it, and where the best
//! adapter goes.

use std::path::Path;

use tabtune::train::judge::Samples;
use tabtune::train::session::When;

/// The directory, in the run's checkpoint directory, of the adapter of the
/// best validation loss.
pub const BEST: &str = "best";

/// Removes the best adapter an earlier run left in `dir` (a new run's
/// `best/` must be its own).
pub fn forget_best(dir: &Path) -> tabtune::Result<()> {
    let best = dir.join(BEST);
    match best.is_dir() {
        true => std::fs::remove_dir_all(&best).map_err(|e| {
            tabtune::Error::format(
                best.display(),
                format!("cannot remove an earlier run's best adapter: {e}"),
            )
        }),
        false => Ok(()),
    }
}

/// Replies longer than this many characters are cut when shown.
const SHOWN: usize = 300;

fn one_line(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match flat.char_indices().nth(SHOWN) {
        Some((at, _)) => format!("{}…", &flat[..at]),
        None => flat,
    }
}

/// Samples as the terminal shows them: a heading, then each prompt and its
/// reply on a line; the stop check says how many ended.
pub fn samples_text(s: &Samples) -> String {
    let whose = s.source.words();
    let mut out = match s.when {
        When::Before => format!("samples before training ({whose} prompts):"),
        When::During => format!("samples at step {} ({whose} prompts):", s.step),
        When::After => format!(
            "stop check: {} of {} {whose} prompts ended with the end-of-turn token within {} tokens (the longest answer in the data)",
            s.ended,
            s.samples.len(),
            s.max_tokens
        ),
    };
    for sample in &s.samples {
        let mark = match (s.when, sample.reply.ended) {
            (When::After, false) => " [did not end]",
            _ => "",
        };
        out.push_str(&format!(
            "\n  > {}\n    {}{mark}",
            one_line(&sample.prompt),
            one_line(&sample.reply.text)
        ));
    }
    out
}
