//! The base model with the adapter merged into it: `W' = W + s·B·A` for
//! every adapted projection, every other weight as the model holds it,
//! written as a Hugging Face directory ([`hf`]) or a GGUF ([`gguf`]) that
//! runs with no adapter at all.
//!
//! The weights come from the live model, one tensor at a time (the token
//! embedding and an untied head a band of rows at a time), so the merged
//! model never exists whole in memory: each piece is encoded and handed to
//! the writer before the next is made. They are the weights the adapter was
//! trained on: a GGUF's own blocks on the CPU (and for a GGUF on a GPU, its
//! k-quants as the Q8_0 they were requantized to), or the Q8_0/Q4_0 made at
//! load when the base was quantized so.
//!
//! [`plan`] lists the tensors under their Hugging Face names, PyTorch
//! shapes and q/k row order; [`values`] makes one's values.

pub mod gguf;
pub mod gguf_meta;
pub mod hf;

use std::ops::Range;

use burn::tensor::{Int, Tensor, TensorData, Transaction};

use crate::error::{Error, Result};
use crate::lora::{LoraAdapters, Target};
use crate::model::Llama;
use crate::model::config::LlamaConfig;
use crate::model::embedding::Embedding;
use crate::model::frozen::Frozen;
use crate::readback::Readback;

/// Elements of one piece [`values`] makes at most when a tensor is made a
/// band of rows at a time (64 MiB of f32).
pub const PIECE: usize = 1 << 24;

/// Which weight of the model a planned tensor is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The token embedding `[vocab, d]`.
    Embed,
    /// The untied LM head `[vocab, d]`.
    Head,
    /// The final RMSNorm `[d]`.
    FinalNorm,
    /// A layer's norm: 0 before attention, 1 before the MLP, 2 and 3
    /// after attention and after the MLP (Gemma 3), 4 and 5 over q's and
    /// k's heads (Qwen3, Gemma 3).
    Norm(usize, usize),
    /// A layer's q, k or v bias (Qwen2).
    Bias(usize, Target),
    /// A layer's projection, with its adapter merged in.
    Proj(usize, Target),
}

/// One tensor of the merged model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    /// Its Hugging Face name, e.g. `model.layers.0.self_attn.q_proj.weight`.
    pub name: String,
    /// Its PyTorch shape: `[out, in]` for a matrix.
    pub shape: Vec<usize>,
    /// Where it comes from.
    pub part: Part,
}

impl Planned {
    /// Elements.
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    /// Whether it has no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether it is a norm weight (Gemma's are stored differently in HF
    /// and GGUF files).
    pub fn is_norm(&self) -> bool {
        matches!(self.part, Part::FinalNorm | Part::Norm(..))
    }

    /// The row bands it is made in: the whole tensor, except the embedding
    /// and the head, which are made [`PIECE`] elements at a time.
    pub fn pieces(&self) -> Vec<Range<usize>> {
        let rows = self.shape[0];
        if !matches!(self.part, Part::Embed | Part::Head) {
            return std::iter::once(0..rows).collect();
        }
        let cols: usize = self.shape[1..].iter().product();
        let step = (PIECE / cols.max(1)).max(1);
        (0..rows)
            .step_by(step)
            .map(|r| r..(r + step).min(rows))
            .collect()
    }
}

/// The tensors of `config`'s model, in the order a Hugging Face checkpoint
/// lists them.
pub fn plan(config: &LlamaConfig) -> Vec<Planned> {
    let (v, d, hd) = (config.vocab_size, config.hidden_size, config.head_dim);
    let arch = config.arch;
    let mut out = vec![Planned {
        name: "model.embed_tokens.weight".into(),
        shape: vec![v, d],
        part: Part::Embed,
    }];
    for i in 0..config.num_layers {
        let mut add = |module: &str, kind: &str, shape: Vec<usize>, part| {
            out.push(Planned {
                name: format!("model.layers.{i}.{module}.{kind}"),
                shape,
                part,
            })
        };
        add("input_layernorm", "weight", vec![d], Part::Norm(i, 0));
        for t in Target::ALL {
            let (d_in, d_out) = t.dims(config);
            add(t.hf_path(), "weight", vec![d_out, d_in], Part::Proj(i, t));
            if arch.qkv_bias() && matches!(t, Target::Q | Target::K | Target::V) {
                add(t.hf_path(), "bias", vec![d_out], Part::Bias(i, t));
            }
        }
        if arch.qk_norm() {
            add("self_attn.q_norm", "weight", vec![hd], Part::Norm(i, 4));
            add("self_attn.k_norm", "weight", vec![hd], Part::Norm(i, 5));
        }
        if arch.sandwich_norms() {
            add(
                "post_attention_layernorm",
                "weight",
                vec![d],
                Part::Norm(i, 2),
            );
            add(
                "pre_feedforward_layernorm",
                "weight",
                vec![d],
                Part::Norm(i, 1),
            );
            add(
                "post_feedforward_layernorm",
                "weight",
                vec![d],
                Part::Norm(i, 3),
            );
        } else {
            add(
                "post_attention_layernorm",
                "weight",
                vec![d],
                Part::Norm(i, 1),
            );
        }
    }
    out.push(Planned {
        name: "model.norm.weight".into(),
        shape: vec![d],
        part: Part::FinalNorm,
    });
    if !config.tie_word_embeddings {
        out.push(Planned {
            name: "lm_head.weight".into(),
            shape: vec![v, d],
            part: Part::Head,
        });
    }
    out
}

/// Values computed on the host, or still on the device.
pub enum Values {
    /// Ready.
    Host(Vec<f32>),
    /// To read.
    Device(Readback<Vec<f32>>),
}

impl Values {
    /// The values, read if they are on the device.
    pub async fn get(self) -> Result<Vec<f32>> {
        match self {
            Values::Host(v) => Ok(v),
            Values::Device(r) => r.read().await,
        }
    }

    fn tensor<const D: usize>(t: Tensor<D>) -> Self {
        Values::Device(Readback::new(
            Transaction::default().register(t),
            |data: Vec<TensorData>| {
                crate::readback::one(&data)?;
                let d = data.into_iter().next().expect("one tensor");
                d.try_into_vec::<f32>()
                    .map_err(|e| Error::Backend(format!("merged weight: {e:?}")))
            },
        ))
    }
}

/// Rows `rows` of `p` (row-major, PyTorch layout, HF row order) as the
/// merged model has them: a projection's `W + s·B·A` with `adapters`'
/// factors for it, anything else as `model` holds it. Norms are the
/// engine's: Gemma's are `1 + w` (its GGUF's form; [`hf`] subtracts the 1).
pub fn values(
    model: &Llama,
    adapters: Option<&LoraAdapters>,
    p: &Planned,
    rows: Range<usize>,
) -> Values {
    let w = &model.weights;
    let device = &model.device;
    match p.part {
        Part::Embed => match &w.embed {
            Embedding::Packed(e) => Values::Host(e.rows_f32(&rows.collect::<Vec<_>>())),
            Embedding::Dense(e) => Values::tensor(e.clone().slice([rows, 0..p.shape[1]])),
            Embedding::Blocks(e) => {
                let ids: Vec<i64> = rows.map(|r| r as i64).collect();
                let n = ids.len();
                let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [n]), device);
                Values::tensor(e.rows(ids))
            }
        },
        Part::Head => {
            let head = w.lm_head.as_ref().expect("planned only when untied");
            // [d, vocab] → the band's columns, [rows, d].
            Values::tensor(head.clone().slice([0..p.shape[1], rows]).transpose())
        }
        Part::FinalNorm => Values::tensor(w.norm.clone()),
        Part::Norm(i, which) => {
            let l = &w.layers[i];
            let t = match which {
                0 => &l.attn_norm,
                1 => &l.ffn_norm,
                2 | 3 => &l.post_norms.as_ref().expect("planned for Gemma")[which - 2],
                _ => &l.qk_norm.as_ref().expect("planned with q/k norms")[which - 4],
            };
            Values::tensor(t.clone())
        }
        Part::Bias(i, t) => {
            let b = w.layers[i].qkv_bias.as_ref().expect("planned for Qwen2");
            Values::tensor(b[t.index()].clone())
        }
        Part::Proj(i, t) => {
            let base = &w.layers[i].proj[t.index()];
            let pair = adapters.and_then(|a| a.get(i, t));
            match (base, pair) {
                (Frozen::Packed(packed), None) => Values::Host(packed.to_f32()),
                (base, None) => Values::tensor(base.to_dense(device).transpose()),
                (base, Some(pair)) => {
                    let s = adapters.map_or(1.0, |a| a.config.scale()) as f32;
                    // [in, r]·[r, out] → [in, out], added to W [in, out].
                    let delta = pair.a.clone().matmul(pair.b.clone()).mul_scalar(s);
                    Values::tensor((base.to_dense(device) + delta).transpose())
                }
            }
        }
    }
}

/// Every piece of `p` made, in order (for small models and tests).
pub async fn whole(
    model: &Llama,
    adapters: Option<&LoraAdapters>,
    p: &Planned,
) -> Result<Vec<f32>> {
    let mut out = Vec::with_capacity(p.len());
    for rows in p.pieces() {
        out.extend(values(model, adapters, p, rows).get().await?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedding_is_made_in_bands_of_whole_rows_that_cover_it_once() {
        let p = Planned {
            name: "model.embed_tokens.weight".into(),
            shape: vec![262_144, 640],
            part: Part::Embed,
        };
        let bands = p.pieces();
        assert!(bands.len() > 1);
        assert!(bands.iter().all(|r| r.len() * 640 <= PIECE));
        assert_eq!(bands.first().map(|r| r.start), Some(0));
        assert_eq!(bands.last().map(|r| r.end), Some(262_144));
        assert!(bands.windows(2).all(|w| w[0].end == w[1].start));
        let q = Planned {
            part: Part::Proj(0, Target::Q),
            ..p
        };
        assert_eq!(q.pieces().len(), 1, "a projection is made whole");
        assert_eq!(q.pieces()[0], 0..262_144);
    }
}
