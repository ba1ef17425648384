//! CSV and TSV with a header row (RFC 4180 quoting, embedded newlines, a
//! UTF-8 BOM). Columns map to a prompt and a response (trained through the
//! chat template, like Alpaca), optionally a system message, or to plain
//! text: by common header names, or as the person maps them.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::Read;
use std::rc::Rc;

use crate::data::read::MAX_LINE;
use crate::data::record::{Record, Schema, check_turns, instruction_turns};
use crate::data::sink::RecordSink;
use crate::error::{Error, Result};

/// Which header holds each part of a record; `None` = find it by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Columns {
    /// The user's turn.
    pub prompt: Option<String>,
    /// The answer to train.
    pub response: Option<String>,
    /// An optional system message.
    pub system: Option<String>,
    /// Plain text to train on whole (instead of prompt/response).
    pub text: Option<String>,
}

impl Columns {
    /// Parses `prompt=Question,response=Answer[,system=...][,text=...]`.
    pub fn parse(spec: &str) -> Result<Columns> {
        let mut c = Columns::default();
        for part in spec.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, header) = part.split_once('=').ok_or_else(|| {
                Error::setting("columns", format!("`{part}` should be ROLE=HEADER"))
            })?;
            let slot = match key.trim() {
                "prompt" => &mut c.prompt,
                "response" => &mut c.response,
                "system" => &mut c.system,
                "text" => &mut c.text,
                other => {
                    return Err(Error::setting(
                        "columns",
                        format!("`{other}` is not one of prompt, response, system, text"),
                    ));
                }
            };
            *slot = Some(header.trim().to_string());
        }
        Ok(c)
    }
}

const PROMPT: [&str; 7] = [
    "prompt",
    "question",
    "instruction",
    "input",
    "query",
    "user",
    "human",
];
const RESPONSE: [&str; 7] = [
    "response",
    "completion",
    "answer",
    "output",
    "target",
    "assistant",
    "gpt",
];
const SYSTEM: [&str; 2] = ["system", "system_prompt"];
const TEXT: [&str; 3] = ["text", "content", "document"];

/// The index of the header named `given`, or else of the first header (case
/// and spaces ignored) among `names`.
fn find(
    headers: &[String],
    given: &Option<String>,
    names: &[&str],
) -> std::result::Result<Option<usize>, String> {
    if let Some(h) = given {
        return headers
            .iter()
            .position(|x| x == h)
            .map(Some)
            .ok_or_else(|| format!("no column `{h}` in the header {headers:?}"));
    }
    let norm = |s: &str| s.trim().to_ascii_lowercase().replace([' ', '-'], "_");
    Ok(names
        .iter()
        .find_map(|n| headers.iter().position(|h| norm(h) == *n)))
}

struct Layout {
    prompt: Option<usize>,
    response: Option<usize>,
    system: Option<usize>,
    text: Option<usize>,
}

fn layout(headers: &[String], c: &Columns) -> std::result::Result<Layout, String> {
    let l = Layout {
        prompt: find(headers, &c.prompt, &PROMPT)?,
        response: find(headers, &c.response, &RESPONSE)?,
        system: find(headers, &c.system, &SYSTEM)?,
        text: find(headers, &c.text, &TEXT)?,
    };
    match (l.prompt, l.response, l.text) {
        (Some(p), Some(r), _) if p != r => Ok(l),
        (_, _, Some(_)) if c.prompt.is_none() && c.response.is_none() => Ok(Layout {
            prompt: None,
            response: None,
            system: None,
            ..l
        }),
        _ => Err(format!(
            "the header {headers:?} has no prompt and response columns (e.g. `prompt`, `question`, \
             `instruction` and `response`, `answer`, `output`) and no `text` column; \
             name them with --columns prompt=HEADER,response=HEADER"
        )),
    }
}

/// Where the line ends are, recorded as the bytes stream past (the csv
/// crate's own line count does not follow CRLF files): each `\n`'s offset
/// and whether a `\r` came just before it. Rows are asked for in file
/// order, so the ends before the last row asked for are only counted, and
/// the list stays as long as the csv reader's look-ahead.
#[derive(Default)]
struct LineEnds {
    ends: VecDeque<(u64, bool)>,
    passed: usize,
    seen: u64,
    last: u8,
}

impl LineEnds {
    fn note(&mut self, chunk: &[u8]) {
        for (i, &b) in chunk.iter().enumerate() {
            if b == b'\n' {
                self.ends
                    .push_back((self.seen + i as u64, self.last == b'\r'));
            }
            self.last = b;
        }
        self.seen += chunk.len() as u64;
    }

    fn lf_at(&self, at: u64) -> Option<bool> {
        self.ends
            .binary_search_by_key(&at, |e| e.0)
            .ok()
            .map(|i| self.ends[i].1)
    }

    /// The 1-based line of a row starting at byte `at` (which may point at
    /// the line end of the row before); `at` never goes back.
    fn line_of(&mut self, mut at: u64) -> usize {
        loop {
            if self.lf_at(at).is_some() {
                at += 1;
            } else if self.lf_at(at + 1) == Some(true) {
                at += 2;
            } else {
                break;
            }
        }
        while self.ends.front().is_some_and(|e| e.0 < at) {
            self.ends.pop_front();
            self.passed += 1;
        }
        1 + self.passed
    }
}

/// How far past [`MAX_LINE`] the csv reader's read-ahead may run before
/// a row is refused.
const READ_AHEAD: u64 = 64 << 10;

/// A reader that tells [`LineEnds`] about every byte it passes on, and
/// refuses to read on once the row being read (begun at byte `row`) is
/// longer than [`MAX_LINE`]: the csv reader holds a row whole.
struct Watched<R> {
    inner: R,
    ends: Rc<RefCell<LineEnds>>,
    passed: u64,
    row: Rc<Cell<u64>>,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.passed - self.row.get() > MAX_LINE as u64 + READ_AHEAD {
            return Err(std::io::Error::other(format!(
                "the row is longer than {} MiB (the most one row may hold), so the rest of the file is not read",
                MAX_LINE >> 20
            )));
        }
        let n = self.inner.read(buf)?;
        self.ends.borrow_mut().note(&buf[..n]);
        self.passed += n as u64;
        Ok(n)
    }
}

/// Reads a table from `input` as it streams.
pub(crate) fn read(input: impl Read, delimiter: u8, columns: &Columns, c: &mut dyn RecordSink) {
    let ends = Rc::new(RefCell::new(LineEnds::default()));
    let row_start = Rc::new(Cell::new(0));
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(true)
        .from_reader(Watched {
            inner: input,
            ends: ends.clone(),
            passed: 0,
            row: row_start.clone(),
        });
    let headers: Vec<String> = match reader.headers() {
        Ok(h) => h.iter().map(str::to_string).collect(),
        Err(e) => return c.problem(1, format!("cannot read the header row: {e}")),
    };
    if headers.iter().all(|h| h.trim().is_empty()) {
        return c.problem(1, "the header row is empty".into());
    }
    let l = match layout(&headers, columns) {
        Ok(l) => l,
        Err(reason) => return c.problem(1, reason),
    };
    let mut record = csv::ByteRecord::new();
    loop {
        let start = reader.position().byte();
        row_start.set(start);
        match reader.read_byte_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                let at = e.position().map_or(start, |p| p.byte());
                let line = ends.borrow_mut().line_of(at);
                c.problem(line, format!("cannot read this row: {e}"));
                if matches!(e.kind(), csv::ErrorKind::Io(_)) {
                    return;
                }
                continue;
            }
        }
        let line = ends
            .borrow_mut()
            .line_of(record.position().map_or(start, |p| p.byte()));
        if record.len() != headers.len() {
            c.problem(
                line,
                format!(
                    "{} fields where the header has {}",
                    record.len(),
                    headers.len()
                ),
            );
            continue;
        }
        match row(&record, &headers, &l) {
            Ok((schema, r)) => c.record(line, schema, r),
            Err(reason) => c.problem(line, reason),
        }
    }
}

fn row(
    record: &csv::ByteRecord,
    headers: &[String],
    l: &Layout,
) -> std::result::Result<(Schema, Record), String> {
    let cell = |i: usize| -> std::result::Result<String, String> {
        let s = std::str::from_utf8(&record[i])
            .map_err(|_| format!("column `{}` is not valid UTF-8", headers[i]))?;
        if s.trim().is_empty() {
            return Err(format!("column `{}` is empty", headers[i]));
        }
        Ok(s.to_string())
    };
    if let (Some(p), Some(r)) = (l.prompt, l.response) {
        let system = match l.system.map(cell) {
            Some(Ok(s)) => Some(s),
            _ => None,
        };
        let turns = instruction_turns(system, cell(p)?, cell(r)?);
        check_turns(&turns)?;
        return Ok((Schema::Columns, Record::Messages(turns)));
    }
    let t = l
        .text
        .expect("layout has text when it has no prompt/response");
    Ok((Schema::Text, Record::Text(cell(t)?)))
}
