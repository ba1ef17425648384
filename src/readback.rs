//! Numbers leave the device in one place: a [`Readback<T>`] is work already
//! queued on the device plus what to make of its tensors once read. Reading
//! is one async transaction ([`Readback::read`]); there is no blocking twin.
//! The browser awaits it (a blocking GPU read panics on wasm); the CLI and
//! the tests block on the same future with [`block_on`], which the flex CPU
//! backend answers on the first poll.

use burn::tensor::{Tensor, TensorData, Transaction};

use crate::error::{Error, Result};

type Finish<T> = Box<dyn FnOnce(Vec<TensorData>) -> Result<T>>;

/// A value still on the device: the tensors to read, in one transaction,
/// and the function that turns their data into `T`.
#[must_use = "a readback does nothing until it is read"]
pub struct Readback<T> {
    transaction: Transaction,
    finish: Finish<T>,
}

impl<T: 'static> Readback<T> {
    /// Reads `transaction`'s tensors, in registration order, into `finish`.
    pub fn new(
        transaction: Transaction,
        finish: impl FnOnce(Vec<TensorData>) -> Result<T> + 'static,
    ) -> Self {
        Self {
            transaction,
            finish: Box::new(finish),
        }
    }

    /// The first value of one float tensor.
    pub fn scalar(tensor: Tensor<1>, finish: impl FnOnce(f32) -> T + 'static) -> Self {
        Self::new(Transaction::default().register(tensor), |data| {
            Ok(finish(first(one(&data)?)?))
        })
    }

    /// Reads the tensors without blocking and finishes the value.
    pub async fn read(self) -> Result<T> {
        let data = self
            .transaction
            .execute_async()
            .await
            .map_err(Error::backend)?;
        (self.finish)(data)
    }
}

/// The only element of a one-tensor readback.
pub(crate) fn one(data: &[TensorData]) -> Result<&TensorData> {
    match data {
        [d] => Ok(d),
        _ => Err(Error::Backend(format!(
            "expected 1 readback, got {}",
            data.len()
        ))),
    }
}

/// The first float of a readback.
pub fn first(d: &TensorData) -> Result<f32> {
    d.iter::<f32>()
        .next()
        .ok_or_else(|| Error::Backend("empty readback".into()))
}

/// Runs a future to completion on this thread (native only: the CLI and
/// the tests). The flex backend's reads are ready when first polled; a
/// backend that is not ready yet is polled again after a yield.
#[cfg(not(target_family = "wasm"))]
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    loop {
        if let std::task::Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::yield_now();
    }
}
