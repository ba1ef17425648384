//! JSONL: one JSON record per line. CRLF line ends and blank lines are
//! accepted (a BOM is skipped before, in `read_stream`).

use serde_json::Value;

use crate::data::record::parse_record;
use crate::data::sink::RecordSink;

/// Reads JSONL from its lines (without `\n`), as they come.
pub(crate) fn read(lines: impl Iterator<Item = std::io::Result<Vec<u8>>>, c: &mut dyn RecordSink) {
    for (i, raw) in lines.enumerate() {
        let line = i + 1;
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
                c.problem(line, format!("{e} (the line is left out)"));
                continue;
            }
            Err(e) => return c.problem(line, format!("cannot read: {e}")),
        };
        let raw = raw.strip_suffix(b"\r").unwrap_or(&raw);
        let Ok(text) = std::str::from_utf8(raw) else {
            c.problem(line, "line is not valid UTF-8".into());
            continue;
        };
        if text.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(text)
            .map_err(|e| format!("invalid JSON at column {}: {e}", e.column()))
            .and_then(|v| parse_record(&v))
        {
            Ok((schema, record)) => c.record(line, schema, record),
            Err(reason) => c.problem(line, reason),
        }
    }
}
