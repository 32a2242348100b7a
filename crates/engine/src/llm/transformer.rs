//! Our decoder-only transformer (llama family, Qwen2, Qwen3) over packed batches: the new tokens
//! of several sequences go through every matrix multiplication together, so the weights are
//! read once per step however many sequences decode; attention runs per sequence against its
//! own KV cache ([`attention`](super::attention)).

use candle_core::Tensor;

use super::attention::{self, Attention, Heads, KvCache, Rope};
use super::config::LlmConfig;
use super::weights::{Fused, Matrix, WeightSource};
use crate::error::EngineError;

fn optional_bias(
    w: &mut dyn WeightSource,
    name: &str,
    bias: bool,
) -> Result<Option<Tensor>, EngineError> {
    let bias_name = format!("{name}.bias");
    Ok(if bias && w.has(&bias_name) {
        Some(w.dense(&bias_name)?)
    } else {
        None
    })
}

fn add_bias(y: Tensor, bias: &Option<Tensor>) -> candle_core::Result<Tensor> {
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// q, k and v of `n` tokens from a fused projection's three outputs, with the model's q/k/v
/// biases added (Qwen2) and per-head RMS norms on q and k (Qwen3). Shared by this pass and the
/// portable one, so the two cannot drift. Shapes: `[n, heads·head_dim]`, then
/// `[n, kv_heads·head_dim]` twice.
pub(super) fn finish_qkv(
    parts: Vec<Tensor>,
    bias: &[Option<Tensor>; 3],
    q_norm: Option<&Tensor>,
    k_norm: Option<&Tensor>,
    c: &LlmConfig,
    n: usize,
) -> Result<(Tensor, Tensor, Tensor), EngineError> {
    let [q, k, v]: [Tensor; 3] = parts
        .try_into()
        .map_err(|_| EngineError::internal("q/k/v split"))?;
    let [qb, kb, vb] = bias;
    let (mut q, mut k, v) = (add_bias(q, qb)?, add_bias(k, kb)?, add_bias(v, vb)?);
    if let (Some(qn), Some(kn)) = (q_norm, k_norm) {
        let eps = c.rms_eps as f32;
        q = candle_nn::ops::rms_norm(&q.reshape((n * c.heads, c.head_dim))?, qn, eps)?
            .reshape((n, c.heads * c.head_dim))?;
        k = candle_nn::ops::rms_norm(&k.reshape((n * c.kv_heads, c.head_dim))?, kn, eps)?
            .reshape((n, c.kv_heads * c.head_dim))?;
    }
    Ok((q, k, v))
}

/// RoPE's inverse frequencies: the config's, divided by GGUF Llama 3.1's per-pair
/// `rope_freqs` factors when the file has them.
pub(super) fn rope_inv_freq(
    config: &LlmConfig,
    w: &mut dyn WeightSource,
) -> Result<Vec<f64>, EngineError> {
    let mut inv_freq = config.inv_freq();
    if w.has("rope_freqs.weight") {
        let factors = w.dense("rope_freqs.weight")?.to_vec1::<f32>()?;
        for (f, d) in inv_freq.iter_mut().zip(factors) {
            *f /= f64::from(d);
        }
    }
    Ok(inv_freq)
}

struct Layer {
    attn_norm: Tensor,
    /// q, k, v projections.
    qkv: Fused,
    /// Qwen2's q, k, v biases.
    qkv_bias: [Option<Tensor>; 3],
    o: Matrix,
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    ffn_norm: Tensor,
    /// gate and up projections.
    gate_up: Fused,
    down: Matrix,
}

pub struct Transformer {
    pub config: LlmConfig,
    embed: Tensor,
    layers: Vec<Layer>,
    norm: Tensor,
    lm_head: Matrix,
    attention: Attention,
}

impl Transformer {
    /// Loads every tensor from `w`. `on_layer` is told each finished layer (progress).
    pub fn load(
        config: LlmConfig,
        w: &mut dyn WeightSource,
        on_layer: &mut dyn FnMut(usize, usize),
    ) -> Result<Transformer, EngineError> {
        let bias = config.arch.qkv_bias();
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            let p = format!("blk.{i}");
            let norm = |w: &mut dyn WeightSource, n: &str| w.dense(&format!("{p}.{n}.weight"));
            layers.push(Layer {
                attn_norm: norm(w, "attn_norm")?,
                qkv: Fused::new(vec![
                    w.matrix(&format!("{p}.attn_q.weight"))?,
                    w.matrix(&format!("{p}.attn_k.weight"))?,
                    w.matrix(&format!("{p}.attn_v.weight"))?,
                ]),
                qkv_bias: [
                    optional_bias(w, &format!("{p}.attn_q"), bias)?,
                    optional_bias(w, &format!("{p}.attn_k"), bias)?,
                    optional_bias(w, &format!("{p}.attn_v"), bias)?,
                ],
                o: w.matrix(&format!("{p}.attn_output.weight"))?,
                q_norm: config
                    .arch
                    .qk_norm()
                    .then(|| norm(w, "attn_q_norm"))
                    .transpose()?,
                k_norm: config
                    .arch
                    .qk_norm()
                    .then(|| norm(w, "attn_k_norm"))
                    .transpose()?,
                ffn_norm: norm(w, "ffn_norm")?,
                gate_up: Fused::new(vec![
                    w.matrix(&format!("{p}.ffn_gate.weight"))?,
                    w.matrix(&format!("{p}.ffn_up.weight"))?,
                ]),
                down: w.matrix(&format!("{p}.ffn_down.weight"))?,
            });
            on_layer(i + 1, config.layers);
        }
        let embed = w.dense("token_embd.weight")?;
        let lm_head = if w.has("output.weight") {
            w.matrix("output.weight")?
        } else {
            w.matrix("token_embd.weight")?
        };
        let inv_freq = rope_inv_freq(&config, w)?;
        let attention = Attention {
            shape: Heads {
                heads: config.heads,
                kv_heads: config.kv_heads,
                head_dim: config.head_dim,
            },
            rope: Rope::new(&config, &inv_freq),
        };
        Ok(Transformer {
            norm: w.dense("output_norm.weight")?,
            config,
            embed,
            layers,
            lm_head,
            attention,
        })
    }

    /// One forward pass over packed sequences. `tokens` holds each sequence's new tokens one
    /// after another, `spans[i]` of them for `caches[i]`. Returns the logits of the packed rows
    /// listed in `wanted` (usually each sequence's last token), one vector per row.
    pub fn forward(
        &self,
        tokens: &[u32],
        spans: &[usize],
        caches: &mut [&mut KvCache],
        wanted: &[u32],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let c = &self.config;
        let n = tokens.len();
        let eps = c.rms_eps as f32;
        let ids = Tensor::new(tokens, self.embed.device())?;
        let mut x = self.embed.index_select(&ids, 0)?;
        let packed = self.attention.pack(spans, caches);
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
            let mut q = q.flatten_all()?.to_vec1::<f32>()?;
            let mut k = k.flatten_all()?.to_vec1::<f32>()?;
            let v = v.flatten_all()?.to_vec1::<f32>()?;
            let mixed = self
                .attention
                .attend(index, &mut q, &mut k, &v, &packed, caches);
            let mixed = Tensor::from_vec(mixed, (n, c.heads * c.head_dim), x.device())?;
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
        attention::advance(caches, spans);
        let rows = Tensor::new(wanted, x.device())?;
        let last = x.index_select(&rows, 0)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, eps)?;
        Ok(self.lm_head.forward(&last)?.to_vec2::<f32>()?)
    }
}
