//! The portable backend of the [decoder](super::decoder), built only from candle tensor ops, so
//! it runs on any candle device: CUDA GPUs, and the CPU (where the tests compare it with
//! [`super::cpu`], the CPU's own faster backend). The decoder's layer loop is the same for
//! both; here attention runs per sequence, one after another, against the sequence's own KV
//! cache, kept as tensors on the device.
//!
//! Precision: quantized GGUF matrices stay quantized on the device (candle's quantized kernels,
//! f32 activations); dense matrices are stored in the placement's dtype (bf16 on GPUs). The
//! residual stream is f32 for quantized models, the placement's dtype otherwise; attention
//! scores and softmax are f32 always.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Tensor};
use candle_nn::kv_cache::KvCache as TensorKv;

use super::attention::Rope;
use super::config::{LlmConfig, RopeStyle};
use super::decoder::{rope_inv_freq, AttentionBackend, Backend, KvLen};
use super::linear::{DeviceMatrix, Fused};
use super::weights::{RawMatrix, WeightSource};
use crate::error::EngineError;
use crate::placement::Placement;

/// Cache rows allocated at a sequence's first token and added each time it fills up.
const CACHE_CHUNK: usize = 256;

/// The KV cache of one sequence: per layer, keys and values `[1, kv_heads, tokens, head_dim]`.
pub struct PortableCache {
    layers: Vec<TensorKv>,
    len: usize,
}

impl KvLen for PortableCache {
    fn len(&self) -> usize {
        self.len
    }

    fn advance(&mut self, n: usize) {
        self.len += n;
    }

    fn fork(&self, keep: usize) -> Result<PortableCache, EngineError> {
        let keep = keep.min(self.len);
        let mut layers = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            let mut copy = TensorKv::new(2, layer.k_cache().max_seq_len().max(1));
            if let (Some(k), Some(v), true) = (layer.k()?, layer.v()?, keep > 0) {
                copy.append(
                    &k.narrow(2, 0, keep)?.contiguous()?,
                    &v.narrow(2, 0, keep)?.contiguous()?,
                )?;
            }
            layers.push(copy);
        }
        Ok(PortableCache { layers, len: keep })
    }
}

pub struct TensorBackend {
    /// The token embedding table (quantized ones stay quantized: rows are dequantized on use).
    embed: QMatMul,
    attention: TensorAttention,
    /// The dtype dense matrices are stored in.
    weights: DType,
}

/// Attention from tensor ops on the backend's device.
pub struct TensorAttention {
    config: LlmConfig,
    rope: Rope,
    device: Device,
    /// The residual stream's dtype.
    dtype: DType,
}

impl TensorBackend {
    /// Reads the embedding table and the RoPE frequencies onto `placement`'s device.
    pub(super) fn load(
        config: &LlmConfig,
        w: &mut dyn WeightSource,
        placement: &Placement,
    ) -> Result<TensorBackend, EngineError> {
        let device = placement.device.clone();
        let weights = placement.dtype;
        let dtype = if w.quantized() {
            DType::F32
        } else {
            placement.dtype
        };
        let embed = w.raw_matrix("token_embd.weight")?.place(&device, weights)?;
        let rope = Rope::new(config, &rope_inv_freq(config, w)?);
        Ok(TensorBackend {
            embed,
            attention: TensorAttention {
                config: config.clone(),
                rope,
                device,
                dtype,
            },
            weights,
        })
    }

    fn place(&self, raw: RawMatrix) -> Result<DeviceMatrix, EngineError> {
        Ok(DeviceMatrix(
            raw.place(&self.attention.device, self.weights)?,
        ))
    }
}

impl Backend for TensorBackend {
    type Linear = DeviceMatrix;
    type Attention = TensorAttention;

    fn vector(&self, w: &mut dyn WeightSource, name: &str) -> Result<Tensor, EngineError> {
        let a = &self.attention;
        Ok(w.dense(name)?.to_dtype(a.dtype)?.to_device(&a.device)?)
    }

    fn matrix(&self, w: &mut dyn WeightSource, name: &str) -> Result<DeviceMatrix, EngineError> {
        self.place(w.raw_matrix(name)?)
    }

    fn fused(
        &self,
        w: &mut dyn WeightSource,
        names: &[String],
    ) -> Result<Fused<DeviceMatrix>, EngineError> {
        let parts = names
            .iter()
            .map(|n| w.raw_matrix(n))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(joined) = RawMatrix::concat(&parts)? {
            let widths = parts
                .iter()
                .map(RawMatrix::rows)
                .collect::<Result<_, _>>()?;
            let matrix = self.place(joined)?;
            return Ok(Fused::Joined { matrix, widths });
        }
        let apart = parts
            .into_iter()
            .map(|p| self.place(p))
            .collect::<Result<_, _>>()?;
        Ok(Fused::Apart(apart))
    }

    fn lm_head(&self, w: &mut dyn WeightSource) -> Result<DeviceMatrix, EngineError> {
        if w.has("output.weight") {
            self.matrix(w, "output.weight")
        } else {
            Ok(DeviceMatrix(self.embed.clone()))
        }
    }

    fn embed(&self, tokens: &[u32]) -> Result<Tensor, EngineError> {
        let a = &self.attention;
        let ids = Tensor::new(tokens, &a.device)?;
        Ok(self.embed.embedding(&ids)?.to_dtype(a.dtype)?)
    }

    fn attention(&self) -> &TensorAttention {
        &self.attention
    }
}

/// cos and sin `[tokens, pairs]` of every packed token's position, in the residual dtype.
pub struct RopeTables {
    cos: Tensor,
    sin: Tensor,
}

impl AttentionBackend for TensorAttention {
    type Cache = PortableCache;
    type Pass = RopeTables;

    fn new_cache(&self) -> PortableCache {
        let rows = CACHE_CHUNK.min(self.config.context_length.max(1));
        PortableCache {
            layers: (0..self.config.layers)
                .map(|_| TensorKv::new(2, rows))
                .collect(),
            len: 0,
        }
    }

    fn begin(
        &self,
        spans: &[usize],
        caches: &[&mut PortableCache],
    ) -> Result<RopeTables, EngineError> {
        let n: usize = spans.iter().sum();
        let positions = caches
            .iter()
            .zip(spans)
            .flat_map(|(cache, &k)| cache.len..cache.len + k);
        let rows = self.rope.rows(positions);
        let table = |values: &[f32]| -> candle_core::Result<Tensor> {
            Tensor::from_slice(values, (n, rows.pairs()), &self.device)?.to_dtype(self.dtype)
        };
        Ok(RopeTables {
            cos: table(rows.cos())?,
            sin: table(rows.sin())?,
        })
    }

    /// One layer's attention for every sequence of the pass: RoPE at the sequence's own
    /// positions, keys and values appended to its cache, causal softmax over the cache.
    /// `q` is `[tokens, heads * head_dim]`, `k` and `v` `[tokens, kv_heads * head_dim]`.
    fn attend(
        &self,
        layer: usize,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        spans: &[usize],
        tables: &RopeTables,
        caches: &mut [&mut PortableCache],
    ) -> Result<Tensor, EngineError> {
        let (q, k, v) = (&q, &k, &v);
        let (cos, sin) = (&tables.cos, &tables.sin);
        let c = &self.config;
        let (heads, kv_heads, d) = (c.heads, c.kv_heads, c.head_dim);
        let group = heads / kv_heads;
        let scale = 1.0 / (d as f64).sqrt();
        let rope = |x: Tensor, cos: &Tensor, sin: &Tensor| match c.rope_style {
            RopeStyle::Half => candle_nn::rotary_emb::rope(&x, cos, sin),
            RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, cos, sin),
        };
        let mut outs = Vec::with_capacity(spans.len());
        let mut start = 0;
        for (cache, &n) in caches.iter_mut().zip(spans) {
            // [tokens, heads * d] rows of this sequence → [1, heads, n, d].
            let split = |t: &Tensor, h: usize| -> candle_core::Result<Tensor> {
                t.narrow(0, start, n)?
                    .reshape((1, n, h, d))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (cos, sin) = (cos.narrow(0, start, n)?, sin.narrow(0, start, n)?);
            let q = rope(split(q, heads)?, &cos, &sin)?;
            let k = rope(split(k, kv_heads)?, &cos, &sin)?;
            let v = split(v, kv_heads)?;
            let past = cache.len;
            let (keys, values) = cache.layers[layer].append(&k, &v)?;
            let seen = past + n;
            let keys = keys.squeeze(0)?.contiguous()?;
            let values = values.squeeze(0)?.contiguous()?;
            // The `group` query heads that share a KV head are rows of one matrix product.
            let q = (q.squeeze(0)?.reshape((kv_heads, group * n, d))? * scale)?;
            let scores = q.matmul(&keys.t()?)?.to_dtype(DType::F32)?;
            let scores = if n > 1 {
                let mask: Vec<f32> = (0..n)
                    .flat_map(|j| {
                        (0..seen).map(move |p| {
                            if p <= past + j {
                                0.0
                            } else {
                                f32::NEG_INFINITY
                            }
                        })
                    })
                    .collect();
                let mask = Tensor::from_vec(mask, (n, seen), &self.device)?;
                scores
                    .reshape((kv_heads, group, n, seen))?
                    .broadcast_add(&mask)?
                    .reshape((kv_heads, group * n, seen))?
            } else {
                scores
            };
            let probs = candle_nn::ops::softmax_last_dim(&scores)?.to_dtype(values.dtype())?;
            let out = probs
                .matmul(&values)?
                .reshape((heads, n, d))?
                .transpose(0, 1)?
                .reshape((n, heads * d))?;
            outs.push(out);
            start += n;
        }
        Ok(Tensor::cat(&outs, 0)?)
    }
}
