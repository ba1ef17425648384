//! [`JsWrite`]: a `Write` that hands each piece to a JavaScript function,
//! for downloads the worker streams to disk (the merged model) instead of
//! holding them in the module's memory. Pieces are what the writer is given
//! (behind a `BufWriter`, at least its buffer's size, and a tensor's band
//! whole: up to 64 MB).

use std::io;

use js_sys::{Function, Uint8Array};
use wasm_bindgen::JsValue;

/// Calls `write(piece)` with a copy of each piece written, a `Uint8Array`
/// the function may keep; a throw becomes the write's error.
pub struct JsWrite(pub Function);

impl io::Write for JsWrite {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let piece = Uint8Array::from(buf);
        self.0
            .call1(&JsValue::NULL, &piece)
            .map_err(|e| io::Error::other(format!("the page could not store the piece: {e:?}")))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
