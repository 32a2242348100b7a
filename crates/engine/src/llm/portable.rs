//! The decoder's forward pass built only from candle tensor ops, so it runs on any candle
//! device: CUDA GPUs, and the CPU (where the tests compare it with [`super::transformer`], the
//! CPU's own faster pass). Same packing as there: the new tokens of every sequence in a step go
//! through each matrix multiplication together (weights read once per step however many
//! sequences decode); attention then runs per sequence, one after another, against the
//! sequence's own KV cache, kept as tensors on the device.
//!
//! Precision: quantized GGUF matrices stay quantized on the device (candle's quantized kernels,
//! f32 activations); dense matrices are stored in the placement's dtype (bf16 on GPUs). The
//! residual stream is f32 for quantized models, the placement's dtype otherwise; attention
//! scores and softmax are f32 always.

use candle_core::quantized::QMatMul;
use candle_core::{DType, Device, Module, Tensor};
use candle_nn::kv_cache::KvCache as TensorKv;

use super::attention::Rope;
use super::config::{LlmConfig, RopeStyle};
use super::transformer::{finish_qkv, rope_inv_freq};
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

impl PortableCache {
    /// Tokens whose keys and values are cached.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

/// A matrix for `x @ Wᵀ` that takes and returns activations of any dtype (quantized
/// matrices compute in f32, dense ones in their own dtype).
struct DeviceMatrix(QMatMul);

impl DeviceMatrix {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let wants = match &self.0 {
            QMatMul::QTensor(_) => DType::F32,
            QMatMul::Tensor(w) | QMatMul::TensorF16(w) => w.dtype(),
        };
        self.0.forward(&x.to_dtype(wants)?)?.to_dtype(x.dtype())
    }
}

/// Matrices applied to one input (q/k/v, gate/up), stacked into one where their formats allow.
enum DeviceFused {
    Joined {
        matrix: DeviceMatrix,
        widths: Vec<usize>,
    },
    Apart(Vec<DeviceMatrix>),
}

impl DeviceFused {
    fn load(
        w: &mut dyn WeightSource,
        names: &[String],
        device: &Device,
        dtype: DType,
    ) -> Result<DeviceFused, EngineError> {
        let parts = names
            .iter()
            .map(|n| w.raw_matrix(n))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(joined) = RawMatrix::concat(&parts)? {
            let widths = parts
                .iter()
                .map(RawMatrix::rows)
                .collect::<Result<_, _>>()?;
            return Ok(DeviceFused::Joined {
                matrix: DeviceMatrix(joined.place(device, dtype)?),
                widths,
            });
        }
        let apart = parts
            .into_iter()
            .map(|p| p.place(device, dtype).map(DeviceMatrix))
            .collect::<Result<_, _>>()?;
        Ok(DeviceFused::Apart(apart))
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Vec<Tensor>> {
        match self {
            DeviceFused::Joined { matrix, widths } => {
                let all = matrix.forward(x)?;
                let mut start = 0;
                let mut outs = Vec::with_capacity(widths.len());
                for &w in widths {
                    outs.push(all.narrow(1, start, w)?.contiguous()?);
                    start += w;
                }
                Ok(outs)
            }
            DeviceFused::Apart(parts) => parts.iter().map(|m| m.forward(x)).collect(),
        }
    }
}

struct Layer {
    attn_norm: Tensor,
    qkv: DeviceFused,
    qkv_bias: [Option<Tensor>; 3],
    o: DeviceMatrix,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    ffn_norm: Tensor,
    gate_up: DeviceFused,
    down: DeviceMatrix,
}

pub struct PortableTransformer {
    pub config: LlmConfig,
    /// The token embedding table (quantized ones stay quantized: rows are dequantized on use).
    embed: QMatMul,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: DeviceMatrix,
    rope: Rope,
    device: Device,
    /// The residual stream's dtype.
    dtype: DType,
}

impl PortableTransformer {
    /// Loads every tensor from `w` onto `placement`'s device. `on_layer` is told each finished
    /// layer (progress).
    pub fn load(
        config: LlmConfig,
        w: &mut dyn WeightSource,
        placement: &Placement,
        on_layer: &mut dyn FnMut(usize, usize),
    ) -> Result<PortableTransformer, EngineError> {
        let device = placement.device.clone();
        let weights = placement.dtype;
        let dtype = if w.quantized() {
            DType::F32
        } else {
            placement.dtype
        };
        let vector = |w: &mut dyn WeightSource, name: &str| -> Result<Tensor, EngineError> {
            Ok(w.dense(name)?.to_dtype(dtype)?.to_device(&device)?)
        };
        let optional = |w: &mut dyn WeightSource, name: String| -> Result<_, EngineError> {
            if config.arch.qkv_bias() && w.has(&name) {
                Ok(Some(vector(w, &name)?))
            } else {
                Ok(None)
            }
        };
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let p = format!("blk.{i}");
            let names = |parts: &[&str]| -> Vec<String> {
                parts.iter().map(|n| format!("{p}.{n}.weight")).collect()
            };
            let qk_norm = |w: &mut dyn WeightSource, n: &str| {
                config
                    .arch
                    .qk_norm()
                    .then(|| vector(w, &format!("{p}.{n}.weight")))
                    .transpose()
            };
            layers.push(Layer {
                attn_norm: vector(w, &format!("{p}.attn_norm.weight"))?,
                qkv: DeviceFused::load(
                    w,
                    &names(&["attn_q", "attn_k", "attn_v"]),
                    &device,
                    weights,
                )?,
                qkv_bias: [
                    optional(w, format!("{p}.attn_q.bias"))?,
                    optional(w, format!("{p}.attn_k.bias"))?,
                    optional(w, format!("{p}.attn_v.bias"))?,
                ],
                o: DeviceMatrix(
                    w.raw_matrix(&format!("{p}.attn_output.weight"))?
                        .place(&device, weights)?,
                ),
                q_norm: qk_norm(w, "attn_q_norm")?,
                k_norm: qk_norm(w, "attn_k_norm")?,
                ffn_norm: vector(w, &format!("{p}.ffn_norm.weight"))?,
                gate_up: DeviceFused::load(w, &names(&["ffn_gate", "ffn_up"]), &device, weights)?,
                down: DeviceMatrix(
                    w.raw_matrix(&format!("{p}.ffn_down.weight"))?
                        .place(&device, weights)?,
                ),
            });
            on_layer(i + 1, config.layers);
        }
        let embed = w.raw_matrix("token_embd.weight")?.place(&device, weights)?;
        let lm_head = if w.has("output.weight") {
            DeviceMatrix(w.raw_matrix("output.weight")?.place(&device, weights)?)
        } else {
            DeviceMatrix(embed.clone())
        };
        let rope = Rope::new(&config, &rope_inv_freq(&config, w)?);
        Ok(PortableTransformer {
            norm: vector(w, "output_norm.weight")?,
            config,
            embed,
            layers,
            lm_head,
            rope,
            device,
            dtype,
        })
    }

    pub fn new_cache(&self) -> PortableCache {
        let rows = CACHE_CHUNK.min(self.config.context_length.max(1));
        PortableCache {
            layers: (0..self.config.layers)
                .map(|_| TensorKv::new(2, rows))
                .collect(),
            len: 0,
        }
    }

    /// One forward pass over packed sequences, as [`super::transformer::Transformer::forward`].
    pub fn forward(
        &self,
        tokens: &[u32],
        spans: &[usize],
        caches: &mut [&mut PortableCache],
        wanted: &[u32],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let c = &self.config;
        let n = tokens.len();
        let eps = c.rms_eps as f32;
        let ids = Tensor::new(tokens, &self.device)?;
        let mut x = self.embed.embedding(&ids)?.to_dtype(self.dtype)?;
        let positions = caches
            .iter()
            .zip(spans)
            .flat_map(|(cache, &k)| cache.len..cache.len + k);
        let rows = self.rope.rows(positions);
        let table = |values: &[f32]| -> candle_core::Result<Tensor> {
            Tensor::from_slice(values, (n, rows.pairs()), &self.device)?.to_dtype(self.dtype)
        };
        let (cos, sin) = (table(rows.cos())?, table(rows.sin())?);
        for (index, layer) in self.layers.iter().enumerate() {
            let h = candle_nn::ops::rms_norm(&x, &layer.attn_norm, eps)?;
            let (q, k, v) = finish_qkv(
                layer.qkv.forward(&h)?,
                &layer.qkv_bias,
                layer.q_norm.as_ref(),
                layer.k_norm.as_ref(),
                c,
                n,
            )?;
            let mixed = self.attend(index, &q, &k, &v, spans, caches, (&cos, &sin))?;
            x = (x + layer.o.forward(&mixed)?)?;
            let h = candle_nn::ops::rms_norm(&x, &layer.ffn_norm, eps)?;
            let [gate, up]: [Tensor; 2] = layer
                .gate_up
                .forward(&h)?
                .try_into()
                .map_err(|_| EngineError::internal("gate/up split"))?;
            let gated = (candle_nn::ops::silu(&gate)? * up)?;
            x = (x + layer.down.forward(&gated)?)?;
        }
        for (cache, &k) in caches.iter_mut().zip(spans) {
            cache.len += k;
        }
        let rows = Tensor::new(wanted, &self.device)?;
        let last = x.index_select(&rows, 0)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, eps)?;
        let logits = self.lm_head.forward(&last)?.to_dtype(DType::F32)?;
        Ok(logits.to_vec2::<f32>()?)
    }

    /// One layer's attention for every sequence of the pass: RoPE at the sequence's own
    /// positions, keys and values appended to its cache, causal softmax over the cache.
    /// `q` is `[tokens, heads * head_dim]`, `k` and `v` `[tokens, kv_heads * head_dim]`.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        spans: &[usize],
        caches: &mut [&mut PortableCache],
        (cos, sin): (&Tensor, &Tensor),
    ) -> Result<Tensor, EngineError> {
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
