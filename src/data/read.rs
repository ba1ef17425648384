//! Reading a data file in any supported format into records, keeping every
//! good one and every problem with its line: the format is detected from
//! the file's name and first bytes unless the person names it.
//!
//! Each format's reader (`jsonl`, `json`, `table`, `text`) hands what it
//! reads to a `sink::RecordSink`; the checks that span records live here,
//! in `FileChecks`, whatever the format: a file keeps to one schema, and a
//! record that repeats an earlier one is left out.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, Read};

use crate::data::record::{NumberedRecord, Record, Schema, data_err};
use crate::data::sink::RecordSink;
use crate::data::{json, jsonl, table, text};
use crate::error::{Error, Result};

/// The UTF-8 byte order mark some editors write first; skipped once, in
/// [`read_stream`], for every format.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// A data file's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON object per line (`.jsonl`, `.ndjson`).
    Jsonl,
    /// A JSON array of objects (`.json` starting with `[`).
    JsonArray,
    /// Comma-separated values with a header row.
    Csv,
    /// Tab-separated values with a header row.
    Tsv,
    /// Plain text or Markdown: documents split at blank lines.
    Text,
}

impl Format {
    /// Parses a format's name as the CLI and the page write it.
    pub fn parse(name: &str) -> Result<Format> {
        Ok(match name {
            "jsonl" => Format::Jsonl,
            "json" => Format::JsonArray,
            "csv" => Format::Csv,
            "tsv" => Format::Tsv,
            "text" | "txt" | "md" => Format::Text,
            other => {
                return Err(Error::setting(
                    "format",
                    format!("`{other}` is not one of jsonl, json, csv, tsv, text"),
                ));
            }
        })
    }

    /// The format's name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Jsonl => "jsonl",
            Format::JsonArray => "json",
            Format::Csv => "csv",
            Format::Tsv => "tsv",
            Format::Text => "text",
        }
    }

    /// The format of `file` from its extension, or else from its first
    /// non-blank byte (`[` a JSON array, `{` JSONL, anything else text).
    pub fn detect(file: &str, bytes: &[u8]) -> Format {
        let lower = file.to_ascii_lowercase();
        let ext = lower.rsplit('.').next().unwrap_or("");
        let first = bytes
            .strip_prefix(BOM)
            .unwrap_or(bytes)
            .iter()
            .find(|b| !b.is_ascii_whitespace());
        match (ext, first) {
            ("jsonl" | "ndjson", _) => Format::Jsonl,
            ("csv", _) => Format::Csv,
            ("tsv" | "tab", _) => Format::Tsv,
            ("txt" | "md" | "markdown", _) => Format::Text,
            (_, Some(b'[')) => Format::JsonArray,
            (_, Some(b'{')) => Format::Jsonl,
            _ => Format::Text,
        }
    }
}

/// How to read a file: the format (detected when `None`) and, for tables,
/// which columns hold what (found by common names when not given).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReadOptions {
    /// The format; detected from the name and content when `None`.
    pub format: Option<Format>,
    /// Table columns: `prompt`, `response`, `system`, `text` → header name.
    pub columns: table::Columns,
    /// Train on every token, prompts and system turns too, instead of only
    /// the answers (assistant turns, completions). Default false.
    pub all_tokens: bool,
    /// Leave out a record that repeats an earlier one. By default repeats
    /// are kept (people repeat examples on purpose: they weigh more) and
    /// each gets a note. Default false.
    pub drop_duplicates: bool,
}

impl ReadOptions {
    /// The options as a person gives them: a format name (`auto` or empty to
    /// detect), a column mapping (`prompt=Q,response=A`, empty to find them
    /// by name), and whether to train every token.
    pub fn from_text(format: &str, columns: &str, all_tokens: bool) -> Result<Self> {
        Ok(Self {
            format: match format.trim() {
                "" | "auto" => None,
                f => Some(Format::parse(f)?),
            },
            columns: table::Columns::parse(columns)?,
            all_tokens,
            drop_duplicates: false,
        })
    }
}

/// What reading a file found.
#[derive(Debug)]
pub struct Scan {
    /// The format read.
    pub format: Format,
    /// The schema of the records (of the first good one).
    pub schema: Option<Schema>,
    /// Good records, in file order.
    pub records: Vec<NumberedRecord>,
    /// The first [`MAX_PROBLEMS`] problems, as [`Error::Data`] with their
    /// lines.
    pub problems: Vec<Error>,
    /// Problems past those, counted.
    pub more_problems: usize,
    /// Good records worth a word (repeats), by line.
    pub notes: Vec<(usize, String)>,
}

/// The longest line a JSONL or text file may have: a longer one is a bad
/// line, skipped as it is read, never held whole.
pub const MAX_LINE: usize = 32 << 20;

/// The lines of `reader` without their `\n`, as `BufRead::split` gives
/// them, except that a line longer than `max` bytes comes as an
/// `InvalidData` error (and reading goes on with the next line).
pub(crate) struct Lines<R> {
    reader: R,
    max: usize,
    done: bool,
}

impl<R: BufRead> Lines<R> {
    pub(crate) fn new(reader: R, max: usize) -> Self {
        Self {
            reader,
            max,
            done: false,
        }
    }
}

impl<R: BufRead> Iterator for Lines<R> {
    type Item = std::io::Result<Vec<u8>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let (mut line, mut over, mut any) = (Vec::new(), false, false);
        loop {
            let buf = match self.reader.fill_buf() {
                Ok(buf) => buf,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            if buf.is_empty() {
                self.done = true;
                break;
            }
            any = true;
            let end = buf.iter().position(|&b| b == b'\n');
            let piece = &buf[..end.unwrap_or(buf.len())];
            if !over && line.len() + piece.len() > self.max {
                over = true;
                line = Vec::new();
            }
            if !over {
                line.extend_from_slice(piece);
            }
            let used = end.map_or(buf.len(), |i| i + 1);
            self.reader.consume(used);
            if end.is_some() {
                break;
            }
        }
        match (any, over) {
            (false, _) => None,
            (true, true) => Some(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the line is longer than {} MiB", self.max >> 20),
            ))),
            (true, false) => Some(Ok(line)),
        }
    }
}

/// The most bad lines kept with their reasons; past them, only counted (a
/// file of a million bad lines would otherwise hold a million messages).
pub const MAX_PROBLEMS: usize = 1000;

/// The checks that span a file's records (one schema, no duplicates),
/// applied to what a format's reader hands on; good records go on to the
/// sink as they come, problems are kept with their lines.
struct FileChecks<'a> {
    file: &'a str,
    drop_duplicates: bool,
    /// Good records worth a word (repeats), by line.
    notes: Vec<(usize, String)>,
    schema: Option<(Schema, usize)>,
    seen: HashMap<u64, usize>,
    sink: &'a mut dyn FnMut(NumberedRecord),
    records: usize,
    problems: Vec<Error>,
    /// Problems past [`MAX_PROBLEMS`], counted.
    more: usize,
}

impl<'a> FileChecks<'a> {
    fn new(file: &'a str, drop_duplicates: bool, sink: &'a mut dyn FnMut(NumberedRecord)) -> Self {
        Self {
            file,
            drop_duplicates,
            notes: Vec::new(),
            schema: None,
            seen: HashMap::new(),
            sink,
            records: 0,
            problems: Vec::new(),
            more: 0,
        }
    }

    fn finish(mut self, format: Format) -> StreamScan {
        self.problems.sort_by_key(|e| match e {
            Error::Data { line, .. } => *line,
            _ => 0,
        });
        StreamScan {
            format,
            schema: self.schema.map(|(s, _)| s),
            records: self.records,
            problems: self.problems,
            more_problems: self.more,
            notes: self.notes,
        }
    }
}

impl RecordSink for FileChecks<'_> {
    /// A good record of `schema` on `line`, unless it breaks a file-wide rule.
    fn record(&mut self, line: usize, schema: Schema, record: Record) {
        match self.schema {
            None => self.schema = Some((schema, line)),
            Some((first, at)) if first != schema => {
                return self.problem(
                    line,
                    format!(
                        "this record is {} but the file's first record (line {at}) is {}; \
                         a file keeps to one schema",
                        schema.name(),
                        first.name()
                    ),
                );
            }
            Some(_) => {}
        }
        let mut h = DefaultHasher::new();
        record.hash(&mut h);
        let key = h.finish();
        if let Some(&first) = self.seen.get(&key) {
            if self.notes.len() < MAX_PROBLEMS {
                self.notes.push((
                    line,
                    match self.drop_duplicates {
                        true => format!("repeats line {first}: left out"),
                        false => format!(
                            "repeats line {first}: kept, so it weighs twice (the option to leave out repeats drops it)"
                        ),
                    },
                ));
            }
            if self.drop_duplicates {
                return;
            }
        } else {
            self.seen.insert(key, line);
        }
        self.records += 1;
        (self.sink)(NumberedRecord { line, record });
    }

    /// A problem on `line`.
    fn problem(&mut self, line: usize, reason: String) {
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(data_err(self.file, line, reason));
        } else {
            self.more += 1;
        }
    }
}

/// What reading a stream found; the records went to the sink.
#[derive(Debug)]
pub struct StreamScan {
    /// The format read.
    pub format: Format,
    /// The schema of the records (of the first good one).
    pub schema: Option<Schema>,
    /// Good records handed to the sink.
    pub records: usize,
    /// The first [`MAX_PROBLEMS`] problems, as [`Error::Data`] with their
    /// lines.
    pub problems: Vec<Error>,
    /// Problems past those, counted.
    pub more_problems: usize,
    /// Good records worth a word (repeats), by line (the first 1,000).
    pub notes: Vec<(usize, String)>,
}

/// Reads a data file from `reader`, handing each good record to `sink` as
/// soon as it is read: every format is streamed, so a file of any size is
/// never held whole.
/// An I/O error is a problem on the line it happened at.
pub fn read_stream(
    file: &str,
    mut reader: impl BufRead,
    options: &ReadOptions,
    sink: &mut dyn FnMut(NumberedRecord),
) -> StreamScan {
    // Up to 8 KiB to detect the format from (without a BOM), put back in
    // front of the rest.
    let mut head = Vec::with_capacity(8192);
    let _ = (&mut reader).take(8192).read_to_end(&mut head);
    if head.starts_with(BOM) {
        head.drain(..BOM.len());
    }
    let format = options
        .format
        .unwrap_or_else(|| Format::detect(file, &head));
    let reader = std::io::Cursor::new(head).chain(reader);
    let mut c = FileChecks::new(file, options.drop_duplicates, sink);
    match format {
        Format::Jsonl => jsonl::read(Lines::new(reader, MAX_LINE), &mut c),
        Format::Text => text::read(Lines::new(reader, MAX_LINE), &mut c),
        Format::Csv => table::read(reader, b',', &options.columns, &mut c),
        Format::Tsv => table::read(reader, b'\t', &options.columns, &mut c),
        Format::JsonArray => json::read(reader, &mut c),
    }
    c.finish(format)
}

/// Reads `bytes` (the file `file`) into records.
pub fn read(file: &str, bytes: &[u8], options: &ReadOptions) -> Scan {
    let mut records = Vec::new();
    let done = read_stream(file, bytes, options, &mut |r| records.push(r));
    Scan {
        format: done.format,
        schema: done.schema,
        records,
        problems: done.problems,
        more_problems: done.more_problems,
        notes: done.notes,
    }
}

/// One error for a file's problems (not empty): the problem itself when
/// there is one, else all of them listed (up to 20), so a person can fix
/// the file in one go.
pub fn problems_error(file: &str, problems: Vec<Error>) -> Error {
    problems_error_of(file, problems, 0)
}

/// [`problems_error`] for the first of `problems.len() + more` problems.
pub fn problems_error_of(file: &str, mut problems: Vec<Error>, more: usize) -> Error {
    let n = problems.len() + more;
    if n == 1 {
        return problems.remove(0);
    }
    let shown: Vec<String> = problems.iter().take(20).map(|e| e.to_string()).collect();
    let more = if n > 20 {
        format!("\n... and {} more", n - 20)
    } else {
        String::new()
    };
    Error::Data {
        file: file.to_string(),
        line: match problems.first() {
            Some(Error::Data { line, .. }) => *line,
            _ => 1,
        },
        reason: format!("{n} bad lines:\n{}{more}", shown.join("\n")),
    }
}

/// Reads `bytes` into records, failing on any problem (see [`problems_error`]).
pub fn read_strict(file: &str, bytes: &[u8], options: &ReadOptions) -> Result<Vec<NumberedRecord>> {
    let scan = read(file, bytes, options);
    match (scan.problems.is_empty(), scan.records.is_empty()) {
        (true, true) => Err(data_err(file, 1, "the file has no records")),
        (true, false) => Ok(scan.records),
        (false, _) => Err(problems_error_of(file, scan.problems, scan.more_problems)),
    }
}
