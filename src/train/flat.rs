//! AdamW and global-norm clipping over every adapter factor at once.
//!
//! The factors of a run live in one flat parameter vector `[P]`; each factor
//! is a slice of it (a view where the backend allows: always on the CPU; on
//! WebGPU when both ends fall on its 256-byte buffer alignment, as every
//! factor of the default model does, else a copy kernel per factor). A step
//! joins the gradients into one `[P]` vector, takes its L2 norm, clips, and
//! updates the parameters and both moments with a dozen whole-vector ops.
//! Per factor that would be ~15 ops each for ~420 factors (the default model,
//! seven targets): on WebGPU every op is a kernel launch, so the flat form
//! turns ~6,000 launches into a few dozen, plus one launch per six factors
//! for the join on a GPU (`train::join`).
//!
//! The arithmetic is burn's `AdamW` op for op (decoupled weight decay,
//! bias-corrected moments, `ε` outside the square root, as PyTorch's
//! `torch.optim.AdamW`), so each element gets exactly the value burn's
//! per-tensor optimizer gives it from the same clipped gradient.

use burn::tensor::Tensor;

use crate::lora::LoraAdapters;

/// Where each factor lies in the flat vector.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Each factor's shape, in order.
    shapes: Vec<[usize; 2]>,
    /// Each factor's first element in the flat vector.
    offsets: Vec<usize>,
    /// Elements in all.
    len: usize,
}

impl Layout {
    /// The layout of `shapes`, packed back to back.
    pub fn new(shapes: Vec<[usize; 2]>) -> Self {
        let mut offsets = Vec::with_capacity(shapes.len());
        let mut len = 0;
        for [r, c] in &shapes {
            offsets.push(len);
            len += r * c;
        }
        Self {
            shapes,
            offsets,
            len,
        }
    }

    /// Elements in all.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there is no factor.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// `tensors` (with this layout's shapes) joined into one `[P]` vector.
    pub fn join(&self, tensors: Vec<Tensor<2>>) -> Tensor<1> {
        assert_eq!(tensors.len(), self.shapes.len(), "one tensor per factor");
        for (t, shape) in tensors.iter().zip(&self.shapes) {
            assert_eq!(&t.dims(), shape, "each factor in its shape");
        }
        let device = tensors.first().expect("at least one factor").device();
        let flat: Vec<Tensor<1>> = tensors.into_iter().map(|t| t.reshape([-1])).collect();
        super::join::join(flat, self.len, &device) // [P]
    }

    /// The factors of `flat` `[P]`, each a slice of it.
    pub fn split(&self, flat: &Tensor<1>) -> Vec<Tensor<2>> {
        self.shapes
            .iter()
            .zip(&self.offsets)
            .map(|(&[r, c], &o)| flat.clone().slice(o..o + r * c).reshape([r, c]))
            .collect()
    }

    /// `adapters` with each factor replaced by its slice of `flat` `[P]`.
    pub fn views(&self, adapters: &LoraAdapters, flat: &Tensor<1>) -> LoraAdapters {
        let mut views = self.split(flat).into_iter();
        adapters.map(|_| views.next().expect("one view per factor"))
    }
}

/// AdamW's hyper-parameters (see [`crate::train::TrainConfig`] for defaults).
#[derive(Clone, Copy, Debug)]
pub struct AdamWConfig {
    /// β1.
    pub beta1: f32,
    /// β2.
    pub beta2: f32,
    /// ε, added to `sqrt(v̂)`.
    pub eps: f32,
    /// Decoupled weight decay.
    pub weight_decay: f32,
    /// Clip the global gradient norm to this (0: no clipping).
    pub max_grad_norm: f64,
}

/// The moments of every factor, flat.
#[derive(Clone, Debug)]
struct Moments {
    m: Tensor<1>, // [P]
    v: Tensor<1>, // [P]
    time: i32,
}

/// AdamW over one flat parameter vector, with global-norm clipping.
#[derive(Clone, Debug)]
pub struct FlatAdamW {
    config: AdamWConfig,
    moments: Option<Moments>,
}

impl FlatAdamW {
    /// A fresh optimizer (no moments yet).
    pub fn new(config: AdamWConfig) -> Self {
        Self {
            config,
            moments: None,
        }
    }

    /// The global L2 norm `[1]` of `grad` `[P]`, still on the device.
    pub fn norm(grad: &Tensor<1>) -> Tensor<1> {
        grad.clone().square().sum().sqrt()
    }

    /// One step with the gradient `grad` `[P]` whose global norm, read from
    /// the device, is `norm`: returns the updated parameters `[P]`.
    pub fn step(&mut self, lr: f64, params: Tensor<1>, grad: Tensor<1>, norm: f32) -> Tensor<1> {
        let c = self.config;
        // clip_grad_norm_: coef = min(1, max / (norm + 1e-6)), in f32 as the
        // device would take it (the reciprocal, then the product).
        let grad = if c.max_grad_norm > 0.0 {
            let coef = ((1.0f32 / (norm + 1e-6f32)) * c.max_grad_norm as f32).min(1.0);
            grad.mul_scalar(coef)
        } else {
            grad
        };
        let (f1, f2) = (1.0 - c.beta1, 1.0 - c.beta2);
        let moments = match self.moments.take() {
            Some(s) => Moments {
                m: s.m.mul_scalar(c.beta1).add(grad.clone().mul_scalar(f1)),
                v: s.v.mul_scalar(c.beta2).add(grad.square().mul_scalar(f2)),
                time: s.time + 1,
            },
            None => Moments {
                m: grad.clone().mul_scalar(f1),
                v: grad.square().mul_scalar(f2),
                time: 1,
            },
        };
        let m_hat = moments
            .m
            .clone()
            .div_scalar(1f32 - c.beta1.powi(moments.time));
        let v_hat = moments
            .v
            .clone()
            .div_scalar(1f32 - c.beta2.powi(moments.time));
        let delta = m_hat.div(v_hat.sqrt().add_scalar(c.eps));
        self.moments = Some(moments);
        let decay = lr * c.weight_decay as f64;
        let decayed = if decay == 0.0 {
            params
        } else {
            params.mul_scalar(1.0 - decay)
        };
        decayed - delta.mul_scalar(lr)
    }

    /// AdamW's state: the moments `m`, `v` `[P]` and its step count, or
    /// `None` before the first step.
    pub fn moments(&self) -> Option<(Tensor<1>, Tensor<1>, i32)> {
        self.moments
            .as_ref()
            .map(|s| (s.m.clone(), s.v.clone(), s.time))
    }

    /// Sets AdamW's state (a checkpoint's, [`FlatAdamW::moments`]).
    pub fn set_moments(&mut self, moments: Option<(Tensor<1>, Tensor<1>, i32)>) {
        self.moments = moments.map(|(m, v, time)| Moments { m, v, time });
    }
}
