//! What to do with a data file's bad lines: leave them out and train on the
//! rest, or stop until the file has none. The CLI stops unless given
//! `--skip-bad`; the page's "Bad lines" choice leaves them out by default.

use serde::{Deserialize, Serialize};

use crate::data::read::problems_error_of;
use crate::data::summary::Problem;
use crate::error::{Error, Result};

/// The choice for bad lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BadLines {
    /// Report them and train on the good records.
    Skip,
    /// Train only once the file has none.
    Stop,
}

/// One choice as the page offers it, for a file with some bad lines.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadLinesChoice {
    /// `skip` or `stop`.
    pub policy: BadLines,
    /// What the choice does, in words.
    pub label: &'static str,
    /// Whether a run may not start with this choice.
    pub blocked: bool,
    /// The sentence shown before the list of bad lines.
    pub note: String,
}

impl BadLines {
    /// Both choices, the page's default first.
    pub const ALL: [BadLines; 2] = [BadLines::Skip, BadLines::Stop];

    /// Parses `skip` or `stop`.
    pub fn parse(name: &str) -> Result<BadLines> {
        match name {
            "skip" => Ok(BadLines::Skip),
            "stop" => Ok(BadLines::Stop),
            other => Err(Error::setting(
                "bad-lines",
                format!("`{other}` is not skip or stop"),
            )),
        }
    }

    /// What the choice does, in words.
    pub fn label(self) -> &'static str {
        match self {
            BadLines::Skip => "leave them out and train on the rest",
            BadLines::Stop => "stop: train only once the file has none",
        }
    }

    /// Refuses a run on `file` with these `problems` (and `more` past
    /// them, counted) when the choice is to stop, listing them (up to 20).
    pub fn check(self, file: &str, problems: &[Problem], more: usize) -> Result<()> {
        if self == BadLines::Skip || problems.is_empty() {
            return Ok(());
        }
        let errors = problems
            .iter()
            .map(|p| Error::Data {
                file: file.to_string(),
                line: p.line,
                reason: p.reason.clone(),
            })
            .collect();
        Err(problems_error_of(file, errors, more))
    }

    /// Each choice for a file with `bad` bad lines: whether a run is
    /// blocked, and the sentence that goes before the list.
    pub fn choices(bad: usize) -> Vec<BadLinesChoice> {
        Self::ALL
            .into_iter()
            .map(|policy| BadLinesChoice {
                policy,
                label: policy.label(),
                blocked: policy == BadLines::Stop && bad > 0,
                note: match (policy, bad) {
                    (_, 0) => String::new(),
                    (BadLines::Skip, _) => " Bad lines are left out:".into(),
                    (BadLines::Stop, 1) => " Training waits until this line is fixed \
                        (or bad lines are set to be left out):"
                        .into(),
                    (BadLines::Stop, n) => format!(
                        " Training waits until these {n} lines are fixed \
                         (or bad lines are set to be left out):"
                    ),
                },
            })
            .collect()
    }
}
