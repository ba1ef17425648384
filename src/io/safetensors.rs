//! Reading Hugging Face `.safetensors` files (f32, f16, bf16) into f32.

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// A parsed safetensors file that borrows its bytes.
pub struct SafetensorsFile<'a> {
    file: String,
    inner: SafeTensors<'a>,
}

impl<'a> SafetensorsFile<'a> {
    /// Parses the header of `bytes`; `file` names it in errors. The crate
    /// checks every offset against the buffer, so a truncated file is an error.
    pub fn parse(file: &str, bytes: &'a [u8]) -> Result<Self> {
        let inner = SafeTensors::deserialize(bytes)
            .map_err(|e| Error::format(file, format!("not a valid safetensors file: {e}")))?;
        Ok(Self {
            file: file.to_string(),
            inner,
        })
    }

    /// The file's name as given to [`SafetensorsFile::parse`].
    pub fn file(&self) -> &str {
        &self.file
    }

    /// Names of all tensors, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.inner.names().into_iter().map(str::to_string).collect();
        names.sort();
        names
    }

    /// Reads tensor `name` as f32 with its shape, or `None` if absent.
    pub fn get_f32(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        let view = match self.inner.tensor(name) {
            Ok(v) => v,
            Err(safetensors::SafeTensorError::TensorNotFound(_)) => return Ok(None),
            Err(e) => return Err(Error::format(&self.file, format!("tensor {name}: {e}"))),
        };
        let data = view.data();
        let values = match view.dtype() {
            Dtype::F32 => data
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => data
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => data
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(Error::format(
                    &self.file,
                    format!("tensor {name} has dtype {other:?}; tabtune reads F32, F16 and BF16"),
                ));
            }
        };
        Ok(Some((view.shape().to_vec(), values)))
    }

    /// Reads tensor `name` as i64 values (for integer fixtures and ids).
    pub fn get_i64(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<i64>)>> {
        let view = match self.inner.tensor(name) {
            Ok(v) => v,
            Err(_) => return Ok(None),
        };
        let values = match view.dtype() {
            Dtype::I64 => view
                .data()
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().expect("chunk of 8")))
                .collect(),
            Dtype::U8 => view.data().iter().map(|&b| b as i64).collect(),
            other => {
                return Err(Error::format(
                    &self.file,
                    format!("tensor {name} has dtype {other:?}, expected I64 or U8"),
                ));
            }
        };
        Ok(Some((view.shape().to_vec(), values)))
    }
}
