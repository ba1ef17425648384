//! A JSON array of records. Each element is reported with the line it
//! starts on; a syntax error with its line and column.

use serde_json::Value;
use serde_json::value::RawValue;

use crate::data::read::Collector;
use crate::data::record::parse_record;

pub(crate) fn read(bytes: &[u8], c: &mut Collector) {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    let Ok(text) = std::str::from_utf8(bytes) else {
        let at = std::str::from_utf8(bytes)
            .err()
            .map_or(0, |e| e.valid_up_to());
        return c.problem(line_of(bytes, at), "the file is not valid UTF-8");
    };
    let items: Vec<&RawValue> = match serde_json::from_str(text) {
        Ok(items) => items,
        Err(e) => {
            return c.problem(
                e.line().max(1),
                format!("invalid JSON at column {}: {e}", e.column()),
            );
        }
    };
    if items.is_empty() {
        return c.problem(1, "the JSON array is empty");
    }
    let (mut line, mut counted) = (1, 0);
    for item in items {
        // The element's text is a slice of `text`: its offset gives its line
        // (elements come in order, so lines are counted once overall).
        let at = item.get().as_ptr() as usize - text.as_ptr() as usize;
        line += bytes[counted..at].iter().filter(|&&b| b == b'\n').count();
        counted = at;
        match serde_json::from_str::<Value>(item.get())
            .map_err(|e| e.to_string())
            .and_then(|v| parse_record(&v))
        {
            Ok((schema, record)) => c.record(line, schema, record),
            Err(reason) => c.problem(line, reason),
        }
    }
}

/// 1-based line of byte offset `at`.
fn line_of(bytes: &[u8], at: usize) -> usize {
    1 + bytes[..at.min(bytes.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}
