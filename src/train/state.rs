//! A trainer's state between two steps, read from the device and put back:
//! what a checkpoint holds so that a run stopped and resumed takes exactly
//! the steps the uninterrupted run takes (on the CPU, bit for bit).
//!
//! The state is the factors and AdamW's moments (flat `[P]`, as
//! [`crate::train::flat`] keeps them), AdamW's step count, the optimizer
//! steps taken, and the data order with its cursor. The order's generator is
//! not stored: it is the run's seeded `StdRng` after `shuffles` shuffles, so
//! [`Trainer::restore`] replays them and checks the order it gets. Dropout's
//! seed comes from the run's seed and the step number, so it needs nothing.

use burn::tensor::{Tensor, TensorData, Transaction};
use rand::seq::SliceRandom;

use crate::error::{Error, Result};
use crate::lora::LoraAdapters;
use crate::readback::Readback;
use crate::train::Trainer;

/// What [`Trainer::restore`] needs to go on from a step.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub step: usize,
    /// Every factor, flat `[P]`, in the trainer's layout.
    pub params: Vec<f32>,
    /// AdamW's first and second moments `[P]` and its step count (updates
    /// taken: skipped steps are not counted); `None` before the first update.
    pub moments: Option<(Vec<f32>, Vec<f32>, i32)>,
    /// The training examples' order (indices into the data set).
    pub order: Vec<usize>,
    /// The next position in `order`.
    pub cursor: usize,
    /// Shuffles of `order` so far, the first included.
    pub shuffles: u64,
}

fn floats(d: &TensorData) -> Result<Vec<f32>> {
    d.try_to_vec::<f32>()
        .map_err(|e| Error::Backend(format!("reading the trainer's state: {e:?}")))
}

/// The values of a flat tensor `[P]`, read when the readback is.
pub fn read_flat(t: &Tensor<1>) -> Readback<Vec<f32>> {
    Readback::new(
        Transaction::default().register(t.clone()),
        |data| match data.as_slice() {
            [d] => floats(d),
            _ => Err(Error::Backend(format!(
                "expected 1 readback, got {}",
                data.len()
            ))),
        },
    )
}

impl Trainer {
    /// Every factor as it is now, flat `[P]`: a handle that keeps these
    /// values while later steps make new ones.
    pub fn params(&self) -> Tensor<1> {
        self.params.clone()
    }

    /// The adapters whose factors are the slices of `params` `[P]` (from
    /// [`Trainer::params`] or [`Trainer::flat_params`]).
    pub fn adapters_of(&self, params: &Tensor<1>) -> LoraAdapters {
        self.layout.views(&self.adapters, params)
    }

    /// `values` as this trainer's flat factors `[P]` on its device, refused
    /// when their count is not its adapters'.
    pub fn flat_params(&self, values: Vec<f32>) -> Result<Tensor<1>> {
        let p = self.layout.len();
        if values.len() != p {
            return Err(Error::setting(
                "resume",
                format!(
                    "the checkpoint holds {} adapter values and this run's adapters have {p}",
                    values.len()
                ),
            ));
        }
        Ok(Tensor::from_data(
            TensorData::new(values, [p]),
            &self.params.device(),
        ))
    }

    /// The state as it is now, read when the readback is.
    pub fn state(&self) -> Readback<TrainerState> {
        let moments = self.optim.moments();
        let mut read = Transaction::default().register(self.params.clone());
        let time = match moments {
            Some((m, v, time)) => {
                read = read.register(m).register(v);
                Some(time)
            }
            None => None,
        };
        let (step, order, cursor, shuffles) =
            (self.step, self.order.clone(), self.cursor, self.shuffles);
        Readback::new(read, move |data| {
            let moments = match (time, data.as_slice()) {
                (None, [_]) => None,
                (Some(time), [_, m, v]) => Some((floats(m)?, floats(v)?, time)),
                _ => {
                    return Err(Error::Backend(format!(
                        "expected {} readbacks of the trainer's state, got {}",
                        if time.is_some() { 3 } else { 1 },
                        data.len()
                    )));
                }
            };
            Ok(TrainerState {
                step,
                params: floats(&data[0])?,
                moments,
                order,
                cursor,
                shuffles,
            })
        })
    }

    /// Puts `state` into this trainer, which must be fresh (no step taken)
    /// and made with the same settings, model and data as the one `state`
    /// was read from. Refused, naming what differs, when the sizes, the
    /// examples or the replayed data order do not match.
    pub fn restore(&mut self, state: TrainerState) -> Result<()> {
        let bad = |why: String| Err(Error::setting("resume", why));
        if self.step != 0 || self.shuffles != 1 {
            return bad("the trainer has already stepped".into());
        }
        let p = self.layout.len();
        if state.params.len() != p {
            return bad(format!(
                "the checkpoint holds {} adapter values and this run's adapters have {p}",
                state.params.len()
            ));
        }
        if let Some((m, v, _)) = &state.moments
            && (m.len() != p || v.len() != p)
        {
            return bad(format!(
                "the checkpoint's optimizer moments hold {} and {} values, not {p}",
                m.len(),
                v.len()
            ));
        }
        // One shuffle at the start and one an epoch: a run of `step` steps
        // has taken at most this many.
        let drawn = state.step * self.config.grad_accum * self.config.batch_size;
        let most = 2 + drawn / self.order.len().max(1);
        if state.shuffles == 0 || state.shuffles as usize > most || state.cursor > state.order.len()
        {
            return bad("the checkpoint's data position is not one a run reaches".into());
        }
        // The generator after the same shuffles gives the same order.
        for _ in 1..state.shuffles {
            self.order.shuffle(&mut self.rng);
        }
        if self.order != state.order {
            return bad(
                "the checkpoint's data order is not this data's: the examples differ".into(),
            );
        }
        let device = self.params.device();
        let flat = |v: Vec<f32>| Tensor::<1>::from_data(TensorData::new(v, [p]), &device);
        self.params = flat(state.params);
        self.adapters = self.layout.views(&self.adapters, &self.params);
        self.optim
            .set_moments(state.moments.map(|(m, v, time)| (flat(m), flat(v), time)));
        self.step = state.step;
        self.cursor = state.cursor;
        self.shuffles = state.shuffles;
        Ok(())
    }
}
