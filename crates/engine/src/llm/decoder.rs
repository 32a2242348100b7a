//! The decoder-only transformer (llama family, Qwen2, Qwen3), written once over two seams:
//! a [`Backend`] says how weights are placed and multiplied ([`Linear`]) and how tokens are
//! embedded; its [`AttentionBackend`] says how attention runs and what a sequence's KV cache is
//! (an associated type, so a decoder only ever sees caches of its own kind). Two backends:
//! [`super::cpu`] (our integer kernels and `f32` row caches) and [`super::portable`] (candle
//! tensor ops on any device, the GPU path).
//!
//! A forward pass runs over packed batches: the new tokens of several sequences go through
//! every matrix multiplication together, so the weights are read once per step however many
//! sequences decode; attention runs per sequence against its own KV cache.

use candle_core::{DType, Tensor};

use super::config::LlmConfig;
use super::linear::{Fused, Linear};
use super::weights::WeightSource;
use crate::error::EngineError;

/// A sequence's KV cache: how many tokens it holds.
pub trait KvLen {
    /// Tokens whose keys and values are cached.
    fn len(&self) -> usize;
    /// Marks `n` more tokens as cached (after every layer has appended them).
    fn advance(&mut self, n: usize);
    /// A copy holding the first `keep` cached tokens (at most [`len`](KvLen::len)): another
    /// sequence that shares this one's prompt starts from it instead of reading the prompt
    /// again.
    fn fork(&self, keep: usize) -> Result<Self, EngineError>
    where
        Self: Sized;
}

/// How attention runs: RoPE, the KV caches, the causal softmax.
pub trait AttentionBackend {
    /// One sequence's KV cache, every layer.
    type Cache: KvLen;
    /// What a forward pass computes once for all its layers (RoPE rows of its positions).
    type Pass;

    fn new_cache(&self) -> Self::Cache;

    /// Prepares a pass of `spans[i]` new tokens for `caches[i]`, at each one's next positions.
    fn begin(
        &self,
        spans: &[usize],
        caches: &[&mut Self::Cache],
    ) -> Result<Self::Pass, EngineError>;

    /// One layer of attention for a packed batch. `q` is `[tokens, heads * head_dim]`, `k` and
    /// `v` `[tokens, kv_heads * head_dim]`. Applies RoPE, appends keys and values to the caches,
    /// and returns `[tokens, heads * head_dim]`.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        layer: usize,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        spans: &[usize],
        pass: &Self::Pass,
        caches: &mut [&mut Self::Cache],
    ) -> Result<Tensor, EngineError>;
}

/// Where and how a decoder's weights live and multiply: [`super::CpuBackend`] or
/// [`super::TensorBackend`]. Its parts are private to the engine (no other crate can write a
/// backend); other crates name it to write code generic over both.
pub trait Backend: Send + 'static {
    type Linear: Linear;
    type Attention: AttentionBackend;

    /// A vector (norm weights, biases) in the residual stream's dtype, on the device.
    fn vector(&self, w: &mut dyn WeightSource, name: &str) -> Result<Tensor, EngineError>;
    /// One weight matrix.
    fn matrix(&self, w: &mut dyn WeightSource, name: &str) -> Result<Self::Linear, EngineError>;
    /// Matrices applied to one input, joined where the backend can.
    fn fused(
        &self,
        w: &mut dyn WeightSource,
        names: &[String],
    ) -> Result<Fused<Self::Linear>, EngineError>;
    /// The output projection: `output.weight`, else the (tied) embedding table.
    fn lm_head(&self, w: &mut dyn WeightSource) -> Result<Self::Linear, EngineError>;
    /// The rows of `tokens` in the embedding table, in the residual stream's dtype.
    fn embed(&self, tokens: &[u32]) -> Result<Tensor, EngineError>;
    fn attention(&self) -> &Self::Attention;
}

/// The KV cache of a decoder on backend `B`.
pub type CacheOf<B> = <<B as Backend>::Attention as AttentionBackend>::Cache;

struct Layer<L> {
    attn_norm: Tensor,
    /// q, k, v projections.
    qkv: Fused<L>,
    /// Qwen2's q, k, v biases.
    qkv_bias: [Option<Tensor>; 3],
    o: L,
    /// Qwen3's per-head q and k norms.
    q_norm: Option<Tensor>,
    k_norm: Option<Tensor>,
    ffn_norm: Tensor,
    /// gate and up projections.
    gate_up: Fused<L>,
    down: L,
}

pub(super) struct Decoder<B: Backend> {
    pub(super) config: LlmConfig,
    backend: B,
    layers: Vec<Layer<B::Linear>>,
    norm: Tensor,
    lm_head: B::Linear,
}

impl<B: Backend> Decoder<B> {
    /// Loads every layer from `w` onto `backend`. `on_layer` is told each finished layer.
    pub(super) fn load(
        config: LlmConfig,
        backend: B,
        w: &mut dyn WeightSource,
        on_layer: &mut dyn FnMut(usize, usize),
    ) -> Result<Decoder<B>, EngineError> {
        let mut layers = Vec::with_capacity(config.layers);
        for i in 0..config.layers {
            layers.push(Self::load_layer(&config, &backend, w, i)?);
            on_layer(i + 1, config.layers);
        }
        Ok(Decoder {
            norm: backend.vector(w, "output_norm.weight")?,
            lm_head: backend.lm_head(w)?,
            config,
            backend,
            layers,
        })
    }

    fn load_layer(
        config: &LlmConfig,
        b: &B,
        w: &mut dyn WeightSource,
        i: usize,
    ) -> Result<Layer<B::Linear>, EngineError> {
        let p = format!("blk.{i}");
        let name = |n: &str| format!("{p}.{n}.weight");
        let names = |parts: &[&str]| -> Vec<String> { parts.iter().map(|n| name(n)).collect() };
        let bias = |w: &mut dyn WeightSource, n: &str| {
            let n = format!("{p}.{n}.bias");
            if config.arch.qkv_bias() && w.has(&n) {
                b.vector(w, &n).map(Some)
            } else {
                Ok(None)
            }
        };
        let qkv_bias = [bias(w, "attn_q")?, bias(w, "attn_k")?, bias(w, "attn_v")?];
        let qk_norm = |w: &mut dyn WeightSource, n: &str| {
            config
                .arch
                .qk_norm()
                .then(|| b.vector(w, &name(n)))
                .transpose()
        };
        Ok(Layer {
            attn_norm: b.vector(w, &name("attn_norm"))?,
            qkv: b.fused(w, &names(&["attn_q", "attn_k", "attn_v"]))?,
            qkv_bias,
            o: b.matrix(w, &name("attn_output"))?,
            q_norm: qk_norm(w, "attn_q_norm")?,
            k_norm: qk_norm(w, "attn_k_norm")?,
            ffn_norm: b.vector(w, &name("ffn_norm"))?,
            gate_up: b.fused(w, &names(&["ffn_gate", "ffn_up"]))?,
            down: b.matrix(w, &name("ffn_down"))?,
        })
    }

    pub(super) fn new_cache(&self) -> CacheOf<B> {
        self.backend.attention().new_cache()
    }

    /// One forward pass over packed sequences. `tokens` holds each sequence's new tokens one
    /// after another, `spans[i]` of them for `caches[i]`. Returns the logits of the packed rows
    /// listed in `wanted` (usually each sequence's last token), one vector per row.
    pub(super) fn forward(
        &self,
        tokens: &[u32],
        spans: &[usize],
        caches: &mut [&mut CacheOf<B>],
        wanted: &[u32],
    ) -> Result<Vec<Vec<f32>>, EngineError> {
        let c = &self.config;
        let n = tokens.len();
        let eps = c.rms_eps as f32;
        let attention = self.backend.attention();
        let mut x = self.backend.embed(tokens)?;
        let pass = attention.begin(spans, caches)?;
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
            let mixed = attention.attend(index, q, k, v, spans, &pass, caches)?;
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
            cache.advance(k);
        }
        let rows = Tensor::new(wanted, x.device())?;
        let last = x.index_select(&rows, 0)?;
        let last = candle_nn::ops::rms_norm(&last, &self.norm, eps)?;
        let logits = self.lm_head.forward(&last)?.to_dtype(DType::F32)?;
        Ok(logits.to_vec2::<f32>()?)
    }
}

fn add_bias(y: Tensor, bias: &Option<Tensor>) -> candle_core::Result<Tensor> {
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// q, k and v of `n` tokens from a fused projection's three outputs, with the model's q/k/v
/// biases added (Qwen2) and per-head RMS norms on q and k (Qwen3). Shapes: `[n, heads·head_dim]`,
/// then `[n, kv_heads·head_dim]` twice.
fn finish_qkv(
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
