//! A JSON array of records, streamed: serde_json reads the array from the
//! reader one element at a time, so only the element being read is held,
//! never the whole file. Each element is reported with the line it starts
//! on; a syntax error with its line and column. JSON cannot be resynced
//! after a syntax error, so the records after one are not read.

use std::cell::Cell;
use std::fmt;
use std::io::Read;

use serde::Deserialize;
use serde::de::{DeserializeSeed, Deserializer, SeqAccess, Visitor};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::data::read::MAX_LINE;
use crate::data::record::parse_record;
use crate::data::sink::RecordSink;

/// Reads a JSON array from `input` as it streams.
pub(crate) fn read(input: impl Read, c: &mut dyn RecordSink) {
    let newlines = Cell::new(0);
    let since = Cell::new(0);
    let reader = Lines {
        inner: input,
        newlines: &newlines,
        since: &since,
    };
    let mut de = serde_json::Deserializer::from_reader(reader);
    let elements = Elements {
        c,
        newlines: &newlines,
        since: &since,
    };
    let done = de
        .deserialize_seq(elements)
        .and_then(|read| de.end().map(|()| read));
    match done {
        Ok(0) => c.problem(1, "the JSON array is empty".into()),
        Ok(_) => {}
        Err(e) if e.is_io() => c.problem(e.line().max(1), format!("cannot read: {e}")),
        Err(e) if e.is_eof() => c.problem(
            e.line().max(1),
            "the file ends inside the JSON array: a closing `]` or `}` is missing \
             (or the file was cut short)"
                .into(),
        ),
        Err(e) if e.to_string().starts_with("invalid unicode code point") => {
            c.problem(e.line().max(1), "the file is not valid UTF-8".into())
        }
        Err(e) => c.problem(
            e.line().max(1),
            format!("invalid JSON at column {}: {e}", e.column()),
        ),
    }
}

/// A reader that counts the newlines it has handed on. serde_json reads a
/// byte at a time, and has read just the first byte of an element when it
/// starts to deserialize it, so the count then is the line it starts on.
/// It also counts the bytes `since` the element began, and refuses to read
/// on past [`MAX_LINE`] of them: an element is held whole while it is read.
struct Lines<'a, R> {
    inner: R,
    newlines: &'a Cell<usize>,
    since: &'a Cell<usize>,
}

impl<R: Read> Read for Lines<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.since.get() > MAX_LINE {
            return Err(std::io::Error::other(format!(
                "the record is longer than {} MiB (the most one record may hold), so the rest of the file is not read",
                MAX_LINE >> 20
            )));
        }
        let n = self.inner.read(buf)?;
        let seen = buf[..n].iter().filter(|&&b| b == b'\n').count();
        self.newlines.set(self.newlines.get() + seen);
        self.since.set(self.since.get() + n);
        Ok(n)
    }
}

/// Visits the array's elements, handing each to the sink; the value is
/// how many elements there were.
struct Elements<'a, 's> {
    c: &'a mut dyn RecordSink,
    newlines: &'s Cell<usize>,
    since: &'s Cell<usize>,
}

impl<'de> Visitor<'de> for Elements<'_, '_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON array of records")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<usize, A::Error> {
        let mut count = 0;
        while let Some((line, item)) =
            seq.next_element_seed(StartLine(self.newlines, self.since))?
        {
            count += 1;
            match serde_json::from_str::<Value>(item.get())
                .map_err(|e| e.to_string())
                .and_then(|v| parse_record(&v))
            {
                Ok((schema, record)) => self.c.record(line, schema, record),
                Err(reason) => self.c.problem(line, reason),
            }
        }
        Ok(count)
    }
}

/// One element, as raw JSON, with the line it starts on; its bytes are
/// counted from here.
struct StartLine<'s>(&'s Cell<usize>, &'s Cell<usize>);

impl<'de> DeserializeSeed<'de> for StartLine<'_> {
    type Value = (usize, Box<RawValue>);

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        self.1.set(0);
        let line = 1 + self.0.get();
        Ok((line, Box::<RawValue>::deserialize(d)?))
    }
}
