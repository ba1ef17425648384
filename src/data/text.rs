//! Plain text and Markdown: documents are separated by blank lines, and
//! every token is trained. Each document becomes windows of the sequence
//! length when rendered (see `render`), so nothing is cut away. A document
//! longer than [`PART_BYTES`] is read in parts that end at a line end, so
//! a huge file with no blank line is never held (or tokenized) whole.

use crate::data::record::{Record, Schema};
use crate::data::sink::RecordSink;

/// The size at which a document is passed on as a part and the next line
/// starts a new one (the windows of one part do not span into the next).
pub const PART_BYTES: usize = 256 * 1024;

/// Reads text from its lines (without `\n`), as they come.
pub(crate) fn read(lines: impl Iterator<Item = std::io::Result<Vec<u8>>>, c: &mut dyn RecordSink) {
    let mut doc = String::new();
    let mut start = 0;
    for (i, raw) in lines.enumerate() {
        let line = i + 1;
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                c.problem(line, format!("{e} (the line is left out)"));
                continue;
            }
            Err(e) => {
                c.problem(line, format!("cannot read: {e}"));
                break;
            }
        };
        let raw = raw.strip_suffix(b"\r").unwrap_or(&raw);
        let Ok(text) = std::str::from_utf8(raw) else {
            c.problem(
                line,
                "line is not valid UTF-8 (the line is left out)".into(),
            );
            continue;
        };
        if text.trim().is_empty() {
            flush(&mut doc, start, c);
            continue;
        }
        if doc.is_empty() {
            start = line;
        } else {
            doc.push('\n');
        }
        doc.push_str(text);
        if doc.len() >= PART_BYTES {
            flush(&mut doc, start, c);
        }
    }
    flush(&mut doc, start, c);
}

fn flush(doc: &mut String, line: usize, c: &mut dyn RecordSink) {
    if !doc.is_empty() {
        c.record(line, Schema::Text, Record::Document(std::mem::take(doc)));
    }
}
