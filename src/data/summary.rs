//! A data file made ready to train, with what a person should see first:
//! how many examples and tokens it holds, every bad line with its reason,
//! and an example as the model will see it, trained tokens marked.

use serde::Serialize;

use std::cell::Cell;
use std::io::{BufRead, Read};

use crate::data::read::{ReadOptions, read_stream};
use crate::data::record::{NumberedRecord, Record};
use crate::data::render::{Example, render_examples};
use crate::error::{Error, Result};
use crate::tokenizer::TextTokenizer;

/// One bad line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong with it.
    pub reason: String,
}

/// A run of consecutive tokens that are all trained or all context.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Segment {
    /// The tokens' text (special tokens written out).
    pub text: String,
    /// Whether the loss is taken on these tokens.
    pub trained: bool,
}

/// Counts over the usable examples.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Summary {
    /// The data file's name.
    pub file: String,
    /// The format it was read as (`jsonl`, `json`, `csv`, `tsv`, `text`).
    pub format: String,
    /// The records' schema, e.g. `messages` or `prompt/completion`.
    pub schema: String,
    /// Good records in the file.
    pub records: usize,
    /// Conversation turns in them (0 for non-chat records).
    pub turns: usize,
    /// Usable examples (a long plain-text document gives several).
    pub examples: usize,
    /// Tokens in them, before any cut.
    pub tokens: usize,
    /// Trained tokens in them, before any cut.
    pub trained_tokens: usize,
    /// Examples longer than the sequence length (cut to it when training).
    pub longer_than_seq_len: usize,
    /// The sequence length the counts were taken for.
    pub seq_len: usize,
    /// The first bad lines (up to 1,000, by line), with their reasons.
    pub problems: Vec<Problem>,
    /// Bad lines past those, counted.
    pub more_problems: usize,
    /// Good lines worth a word (the first 1,000): examples longer than the
    /// sequence length and what happens to them, repeated examples.
    pub notes: Vec<Problem>,
    /// The first example, as the model sees it.
    pub preview: Vec<Segment>,
}

/// The examples of a data file and what was found in it.
pub struct Prepared {
    /// Tokenized examples, in file order.
    pub examples: Vec<Example>,
    /// What to show before training.
    pub summary: Summary,
}

/// Reads and tokenizes a data file for training on `seq_len` tokens,
/// keeping every good record and listing every bad one. Fails only when no
/// record is usable.
pub fn prepare(
    file: &str,
    bytes: &[u8],
    options: &ReadOptions,
    tok: &TextTokenizer,
    seq_len: usize,
) -> Result<Prepared> {
    prepare_stream(file, bytes, options, tok, seq_len)
}

/// As [`prepare`], reading from `reader`: each record is tokenized as it
/// is read (the file is never held whole; see [`read_stream`]).
pub fn prepare_stream(
    file: &str,
    reader: impl BufRead,
    options: &ReadOptions,
    tok: &TextTokenizer,
    seq_len: usize,
) -> Result<Prepared> {
    prepare_within(file, reader, options, tok, seq_len, usize::MAX)
}

/// As [`prepare_stream`], keeping at most `max_tokens` tokens: once the
/// examples read so far hold more, reading stops and the file is refused
/// with the line it got to (the browser's memory is bounded; 5 bytes a
/// token are kept: the id and whether it is trained).
pub fn prepare_within(
    file: &str,
    reader: impl BufRead,
    options: &ReadOptions,
    tok: &TextTokenizer,
    seq_len: usize,
    max_tokens: usize,
) -> Result<Prepared> {
    if seq_len < 2 {
        return Err(Error::setting(
            "seq-len",
            format!("{seq_len} is too short: an example needs at least 2 tokens"),
        ));
    }
    let over = Cell::new(None);
    let mut kept = 0usize;
    let reader = Budget {
        inner: reader,
        over: &over,
    };
    let mut examples = Vec::new();
    let mut notes = Vec::new();
    let mut rendered: Vec<Problem> = Vec::new();
    let mut turns = 0;
    let mut on_record =
        |l: NumberedRecord| match render_examples(tok, &l.record, seq_len, options.all_tokens) {
            Ok(exs) if exs.iter().all(|e| e.trained_tokens() == 0) => rendered.push(Problem {
                line: l.line,
                reason: "nothing to train: the example has no trained token".into(),
            }),
            Ok(exs) => {
                if let Record::Messages(m) = &l.record {
                    turns += m.len();
                }
                if let Some(reason) = exs.iter().find_map(|e| cut_note(e, seq_len)) {
                    notes.push(Problem {
                        line: l.line,
                        reason,
                    });
                }
                kept += exs.iter().map(|e| e.ids.len()).sum::<usize>();
                if kept > max_tokens && over.get().is_none() {
                    over.set(Some(l.line));
                }
                examples.extend(exs);
            }
            Err(e) => rendered.push(Problem {
                line: l.line,
                reason: e.to_string(),
            }),
        };
    let mut scan = read_stream(file, reader, options, &mut on_record);
    notes.extend(
        scan.notes
            .drain(..)
            .map(|(line, reason)| Problem { line, reason }),
    );
    notes.sort_by_key(|n| n.line);
    notes.truncate(crate::data::read::MAX_PROBLEMS);
    if let Some(line) = over.get() {
        return Err(Error::Data {
            file: file.to_string(),
            line,
            reason: format!(
                "the examples up to here hold more than {max_tokens} tokens, more than can be \
                 kept here ({} MB); train on a part of the file, or use the CLI",
                max_tokens * 5 / 1_000_000
            ),
        });
    }
    let mut problems: Vec<Problem> = scan
        .problems
        .into_iter()
        .map(|e| match e {
            Error::Data { line, reason, .. } => Problem { line, reason },
            other => Problem {
                line: 0,
                reason: other.to_string(),
            },
        })
        .chain(rendered)
        .collect();
    problems.sort_by_key(|p| p.line);
    let more_problems = scan.more_problems
        + problems
            .len()
            .saturating_sub(crate::data::read::MAX_PROBLEMS);
    problems.truncate(crate::data::read::MAX_PROBLEMS);
    if examples.is_empty() {
        let first = problems.first();
        return Err(Error::Data {
            file: file.to_string(),
            line: first.map_or(1, |p| p.line),
            reason: match first {
                Some(p) => format!(
                    "no usable example ({} bad lines; first: {})",
                    problems.len() + more_problems,
                    p.reason
                ),
                None => "the file has no records".into(),
            },
        });
    }
    let summary = Summary {
        file: file.to_string(),
        format: scan.format.name().into(),
        schema: scan.schema.map_or("", |s| s.name()).into(),
        records: scan.records,
        turns,
        examples: examples.len(),
        tokens: examples.iter().map(|e| e.ids.len()).sum(),
        trained_tokens: examples.iter().map(Example::trained_tokens).sum(),
        longer_than_seq_len: examples.iter().filter(|e| e.ids.len() > seq_len).count(),
        seq_len,
        problems,
        more_problems,
        notes,
        preview: preview(tok, &examples[0])?,
    };
    Ok(Prepared { examples, summary })
}

/// A reader that stops (with an error the caller replaces) once `over` is
/// set, so a file past the token budget is not read to its end.
struct Budget<'a, R> {
    inner: R,
    over: &'a Cell<Option<usize>>,
}

impl<R> Budget<'_, R> {
    fn check(&self) -> std::io::Result<()> {
        match self.over.get() {
            Some(_) => Err(std::io::Error::other("over the token budget")),
            None => Ok(()),
        }
    }
}

impl<R: Read> Read for Budget<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.check()?;
        self.inner.read(buf)
    }
}

impl<R: BufRead> BufRead for Budget<'_, R> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        self.check()?;
        self.inner.fill_buf()
    }
    fn consume(&mut self, n: usize) {
        self.inner.consume(n)
    }
}

/// What cutting `e` to `seq_len` tokens does to it, if it is longer.
fn cut_note(e: &Example, seq_len: usize) -> Option<String> {
    if e.ids.len() <= seq_len {
        return None;
    }
    let kept = e
        .trained
        .iter()
        .take(seq_len)
        .skip(1)
        .filter(|&&t| t)
        .count();
    let lost = e.trained_tokens() - kept;
    Some(if kept == 0 {
        format!(
            "{} tokens, longer than the sequence length {seq_len}: no trained token is left after the cut, so it is left out",
            e.ids.len()
        )
    } else {
        format!(
            "{} tokens, longer than the sequence length {seq_len}: cut to {seq_len}, so {lost} of its {} trained tokens are not learned",
            e.ids.len(),
            e.trained_tokens()
        )
    })
}

/// `example` split into runs of trained and untrained tokens, decoded.
pub fn preview(tok: &TextTokenizer, example: &Example) -> Result<Vec<Segment>> {
    let mut out: Vec<Segment> = Vec::new();
    let mut start = 0;
    for t in 1..=example.ids.len() {
        if t == example.ids.len() || example.trained[t] != example.trained[start] {
            out.push(Segment {
                text: tok.decode(&example.ids[start..t], false)?,
                trained: example.trained[start],
            });
            start = t;
        }
    }
    Ok(out)
}
