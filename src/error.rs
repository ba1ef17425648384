//! The crate's one error type. Every variant says which input was wrong and
//! how, so the CLI and the page can show it to a person as it is.

use std::fmt;

/// Everything that can go wrong while loading a model, reading data,
/// training or exporting.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A model or adapter file is malformed: truncated, inconsistent, or of a
    /// kind tabtune does not read. `file` names it as the user gave it.
    #[error("{file}: {reason}")]
    Format {
        /// The file, as the user named it.
        file: String,
        /// What is wrong, in words a person understands.
        reason: String,
    },
    /// A data file has a bad record.
    #[error("{file}:{line}: {reason}")]
    Data {
        /// The data file, as the user named it.
        file: String,
        /// 1-based line number.
        line: usize,
        /// What is wrong with that line.
        reason: String,
    },
    /// A setting is out of range or inconsistent.
    #[error("setting `{name}`: {reason}")]
    Setting {
        /// The setting's name, as the CLI flag or the page field calls it.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A call came before what it needs (no model, data or run yet) or
    /// after its run ended.
    #[error("{0}")]
    Order(String),
    /// The tensor backend failed.
    #[error("tensor backend: {0}")]
    Backend(String),
}

impl Error {
    /// A [`Error::Format`] for `file`.
    pub fn format(file: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Error::Format {
            file: file.to_string(),
            reason: reason.to_string(),
        }
    }

    /// A [`Error::Backend`] from a backend or serialisation failure.
    pub fn backend(e: impl fmt::Debug) -> Self {
        Error::Backend(format!("{e:?}"))
    }

    /// A [`Error::Setting`] for the setting `name`.
    pub fn setting(name: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Error::Setting {
            name: name.to_string(),
            reason: reason.to_string(),
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
