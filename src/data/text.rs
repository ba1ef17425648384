//! Plain text and Markdown: documents are separated by blank lines, and
//! every token is trained. Each document becomes windows of the sequence
//! length when rendered (see `render`), so nothing is cut away.

use crate::data::read::Collector;
use crate::data::record::{Record, Schema};

pub(crate) fn read(bytes: &[u8], c: &mut Collector) {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let mut doc = String::new();
    let mut start = 0;
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let line = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let Ok(text) = std::str::from_utf8(raw) else {
            c.problem(line, "line is not valid UTF-8 (the line is left out)");
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
    }
    flush(&mut doc, start, c);
}

fn flush(doc: &mut String, line: usize, c: &mut Collector) {
    if !doc.is_empty() {
        c.record(line, Schema::Text, Record::Document(std::mem::take(doc)));
    }
}
