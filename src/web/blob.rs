//! Reading a `Blob` (the person's `File`) as a `std::io::Read`, one slice at
//! a time, with `FileReaderSync` (a worker-only API): a data file of any
//! size streams into the parsers without ever being copied into wasm
//! memory whole.

use js_sys::{Function, Uint8Array};
use wasm_bindgen::JsValue;
use web_sys::{Blob, FileReaderSync};

/// How much of the file one read takes (and the most held at once).
pub const CHUNK: usize = 1 << 20;

/// A `Read` over a `Blob`, reporting progress as `(bytes read, size)`.
pub struct BlobReader {
    blob: Blob,
    reader: FileReaderSync,
    offset: f64,
    size: f64,
    on_progress: Option<Function>,
}

impl BlobReader {
    /// Reads `blob` from its start; fails outside a worker.
    pub fn new(blob: Blob, on_progress: Option<Function>) -> Result<Self, JsValue> {
        Ok(Self {
            size: blob.size(),
            reader: FileReaderSync::new()?,
            blob,
            offset: 0.0,
            on_progress,
        })
    }
}

impl std::io::Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let end = (self.offset + buf.len().min(CHUNK) as f64).min(self.size);
        if end <= self.offset {
            return Ok(0);
        }
        let slice = self
            .blob
            .slice_with_f64_and_f64(self.offset, end)
            .map_err(io_err)?;
        let buffer = self.reader.read_as_array_buffer(&slice).map_err(io_err)?;
        let bytes = Uint8Array::new(&buffer);
        let n = bytes.length() as usize;
        bytes.copy_to(&mut buf[..n]);
        self.offset += n as f64;
        if let Some(f) = &self.on_progress {
            let _ = f.call2(
                &JsValue::NULL,
                &JsValue::from_f64(self.offset),
                &JsValue::from_f64(self.size),
            );
        }
        Ok(n)
    }
}

/// A JS exception (e.g. the file changed on disk after it was chosen) as
/// an I/O error, which the data reader reports on the line it reached.
fn io_err(e: JsValue) -> std::io::Error {
    let text = js_sys::Reflect::get(&e, &JsValue::from_str("message"))
        .ok()
        .and_then(|m| m.as_string())
        .unwrap_or_else(|| format!("{e:?}"));
    std::io::Error::other(format!("the browser could not read the file ({text})"))
}
