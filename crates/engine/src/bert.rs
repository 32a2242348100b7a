//! Our BERT encoder: the standard architecture (absolute positions, erf GELU) on packed
//! sequences (no padding anywhere: every matmul runs on real tokens only), with a fused QKV
//! projection. On the CPU in f32 attention and GELU are the kernels of [`crate::ops`]; on
//! other devices and dtypes (GPUs, bf16) their tensor-op versions, with the linear layers'
//! products in bf16/f16 and everything else in f32. Weights load under the
//! usual Hugging Face names, with or without a `bert.` prefix. Anything else falls back to
//! candle-transformers' `BertModel`.

use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{embedding, layer_norm, linear, Embedding, LayerNorm, Linear, VarBuilder};
use serde::Deserialize;

use crate::ops;

#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

impl BertConfig {
    /// Whether this encoder can run the model (else candle's implementation does).
    pub fn supported(&self) -> bool {
        self.hidden_act.as_deref().unwrap_or("gelu") == "gelu"
            && self
                .position_embedding_type
                .as_deref()
                .unwrap_or("absolute")
                == "absolute"
            && self.num_attention_heads > 0
            && self.hidden_size.is_multiple_of(self.num_attention_heads)
    }
}

/// A linear layer whose product runs in its weight's dtype (bf16 or f16 on GPUs) on f32
/// activations: the input is rounded to that dtype for the product; the output, the bias, the
/// residual stream and the norms stay f32, so rounding does not pile up layer after layer.
struct Dense {
    weight: Tensor,
    bias: Option<Tensor>,
}

impl Dense {
    fn new(linear: Linear, dtype: DType) -> Result<Dense> {
        Ok(Dense {
            weight: linear.weight().to_dtype(dtype)?,
            bias: linear.bias().cloned(),
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = x
            .to_dtype(self.weight.dtype())?
            .matmul(&self.weight.t()?)?
            .to_dtype(DType::F32)?;
        match &self.bias {
            Some(b) => y.broadcast_add(b),
            None => Ok(y),
        }
    }
}

struct Layer {
    qkv: Dense,
    attention_out: Dense,
    attention_norm: LayerNorm,
    intermediate: Dense,
    output: Dense,
    output_norm: LayerNorm,
}

pub struct FastBert {
    words: Embedding,
    positions: Embedding,
    types: Embedding,
    norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    /// The CPU kernels of `ops` (f32 on the CPU); else their tensor-op versions.
    cpu_kernels: bool,
}

impl FastBert {
    /// Loads f32 weights from `vb`; the linear layers' products then run in `matmul_dtype`.
    /// `cpu_kernels`: attention and GELU with the CPU kernels of `ops` (f32 on the CPU);
    /// otherwise with their tensor-op versions on the weights' device.
    pub fn load(
        vb: VarBuilder,
        config: &BertConfig,
        cpu_kernels: bool,
        matmul_dtype: DType,
    ) -> Result<FastBert> {
        let vb = if vb.contains_tensor("bert.embeddings.word_embeddings.weight") {
            vb.pp("bert")
        } else {
            vb
        };
        let h = config.hidden_size;
        let emb = vb.pp("embeddings");
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let lv = vb.pp(format!("encoder.layer.{i}"));
            let attn = lv.pp("attention.self");
            let part = |name: &str| linear(h, h, attn.pp(name));
            let (q, k, v) = (part("query")?, part("key")?, part("value")?);
            let weight = Tensor::cat(&[q.weight(), k.weight(), v.weight()], 0)?;
            let bias = match (q.bias(), k.bias(), v.bias()) {
                (Some(q), Some(k), Some(v)) => Some(Tensor::cat(&[q, k, v], 0)?),
                _ => None,
            };
            let dense = |l: Linear| Dense::new(l, matmul_dtype);
            layers.push(Layer {
                qkv: dense(Linear::new(weight, bias))?,
                attention_out: dense(linear(h, h, lv.pp("attention.output.dense"))?)?,
                attention_norm: layer_norm(
                    h,
                    config.layer_norm_eps,
                    lv.pp("attention.output.LayerNorm"),
                )?,
                intermediate: dense(linear(
                    h,
                    config.intermediate_size,
                    lv.pp("intermediate.dense"),
                )?)?,
                output: dense(linear(config.intermediate_size, h, lv.pp("output.dense"))?)?,
                output_norm: layer_norm(h, config.layer_norm_eps, lv.pp("output.LayerNorm"))?,
            });
        }
        Ok(FastBert {
            words: embedding(config.vocab_size, h, emb.pp("word_embeddings"))?,
            positions: embedding(
                config.max_position_embeddings,
                h,
                emb.pp("position_embeddings"),
            )?,
            types: embedding(config.type_vocab_size, h, emb.pp("token_type_embeddings"))?,
            norm: layer_norm(h, config.layer_norm_eps, emb.pp("LayerNorm"))?,
            layers,
            heads: config.num_attention_heads,
            cpu_kernels,
        })
    }

    /// Hidden states `[tokens, hidden]` of sequences packed back to back (no padding):
    /// `ids`, `type_ids` and `positions` are `[tokens]`, `lengths` the sequences' lengths.
    pub fn forward_packed(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        positions: &Tensor,
        lengths: &[usize],
    ) -> Result<Tensor> {
        let mut segments = Vec::with_capacity(lengths.len());
        let mut start = 0;
        for len in lengths {
            segments.push((start, *len));
            start += len;
        }
        let x = (self.words.forward(ids)? + self.positions.forward(positions)?)?
            .add(&self.types.forward(type_ids)?)?;
        let mut x = self.norm.forward(&x)?;
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?;
            let context = if self.cpu_kernels {
                ops::attention(&qkv, self.heads, segments.clone())?
            } else {
                ops::attention_tensors(&qkv, self.heads, &segments)?
            };
            let attended = layer
                .attention_norm
                .forward(&(layer.attention_out.forward(&context)? + &x)?)?;
            let inner = layer.intermediate.forward(&attended)?;
            let inner = if self.cpu_kernels {
                ops::gelu_erf(&inner)?
            } else {
                ops::gelu_erf_any(&inner)?
            };
            x = layer
                .output_norm
                .forward(&(layer.output.forward(&inner)? + &attended)?)?;
        }
        Ok(x)
    }
}
