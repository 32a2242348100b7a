//! The Whisper network (encoder and decoder) in candle tensor ops, as transformers'
//! `WhisperForConditionalGeneration` computes it.
//!
//! Why our own and not candle-transformers' `whisper::model`: that one recomputes the
//! encoder's sinusoidal positions instead of reading the stored `embed_positions` (fine for
//! OpenAI's checkpoints, wrong for any fine-tune that trained them), has no self-attention KV
//! cache in the decoder (each step reruns the whole prefix) and keeps the cross-attention
//! weights to itself (word timestamps need them).
//!
//! Shapes: mel `[batch, n_mels, frames]` → encoder states `[batch, frames / 2, d_model]`. The
//! decoder runs on token ids `[batch, tokens]` with the encoder's cross-attention keys and
//! values computed once per window ([`CrossKv`]) and a growing self-attention cache
//! ([`SelfCache`]); it returns hidden states, and [`Whisper::logits`] projects only the rows
//! a caller needs onto the vocabulary (the tied token embedding).

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{
    conv1d, layer_norm, linear, linear_no_bias, Conv1d, Conv1dConfig, LayerNorm, Linear, VarBuilder,
};

use crate::error::EngineError;
use crate::whisper::config::WhisperConfig;

type Result<T> = std::result::Result<T, EngineError>;

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    fn load(vb: VarBuilder, d: usize, heads: usize) -> candle_core::Result<Attention> {
        Ok(Attention {
            q: linear(d, d, vb.pp("q_proj"))?,
            k: linear_no_bias(d, d, vb.pp("k_proj"))?,
            v: linear(d, d, vb.pp("v_proj"))?,
            out: linear(d, d, vb.pp("out_proj"))?,
            heads,
            scale: ((d / heads) as f64).powf(-0.5),
        })
    }

    /// `[b, t, d]` → `[b, heads, t, head_dim]`.
    fn split(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        x.reshape((b, t, self.heads, d / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    fn keys_values(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.split(&self.k.forward(x)?)?,
            self.split(&self.v.forward(x)?)?,
        ))
    }

    /// Attention of `x`'s queries over `k`/`v`; `mask` is added to the scores. With `keep`,
    /// the attention weights `[b, heads, t, keys]` come back too.
    fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
        keep: bool,
    ) -> candle_core::Result<(Tensor, Option<Tensor>)> {
        let (b, t, d) = x.dims3()?;
        let q = self.split(&(self.q.forward(x)? * self.scale)?)?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let mixed = weights.matmul(v)?.transpose(1, 2)?.reshape((b, t, d))?;
        Ok((self.out.forward(&mixed)?, keep.then_some(weights)))
    }
}

struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn load(vb: &VarBuilder, d: usize, ffn: usize) -> candle_core::Result<Mlp> {
        Ok(Mlp {
            fc1: linear(d, ffn, vb.pp("fc1"))?,
            fc2: linear(ffn, d, vb.pp("fc2"))?,
        })
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.fc2.forward(&self.fc1.forward(x)?.gelu_erf()?)
    }
}

fn norm(vb: VarBuilder, d: usize) -> candle_core::Result<LayerNorm> {
    layer_norm(d, 1e-5, vb)
}

struct EncoderLayer {
    attn_norm: LayerNorm,
    attn: Attention,
    mlp_norm: LayerNorm,
    mlp: Mlp,
}

struct DecoderLayer {
    attn_norm: LayerNorm,
    attn: Attention,
    cross_norm: LayerNorm,
    cross: Attention,
    mlp_norm: LayerNorm,
    mlp: Mlp,
}

/// The cross-attention keys and values of one encoder output, per decoder layer.
pub struct CrossKv {
    layers: Vec<(Tensor, Tensor)>,
}

impl CrossKv {
    /// The keys and values of batch row `row` alone.
    pub fn row(&self, row: usize) -> Result<CrossKv> {
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| Ok((k.narrow(0, row, 1)?, v.narrow(0, row, 1)?)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(CrossKv { layers })
    }

    /// Each row's keys and values `n` times over (row 0 becomes rows 0..n): the candidates of
    /// one window sampled as a batch.
    pub fn repeat(&self, n: usize) -> Result<CrossKv> {
        let layers = self
            .layers
            .iter()
            .map(|(k, v)| Ok((repeat_batch(k, n)?, repeat_batch(v, n)?)))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(CrossKv { layers })
    }

    /// How many batch rows these keys and values hold.
    pub fn batch_rows(&self) -> usize {
        self.layers
            .first()
            .and_then(|(k, _)| k.dim(0).ok())
            .unwrap_or(0)
    }
}

/// `[b, ...]` → `[b * n, ...]`, each row repeated `n` times in a row.
fn repeat_batch(x: &Tensor, n: usize) -> candle_core::Result<Tensor> {
    let mut dims = x.dims().to_vec();
    let b = dims[0];
    let mut expanded = vec![b, n];
    expanded.extend_from_slice(&dims[1..]);
    dims[0] = b * n;
    x.unsqueeze(1)?
        .broadcast_as(expanded)?
        .contiguous()?
        .reshape(dims)
}

/// The decoder's self-attention keys and values so far (one entry per layer).
pub struct SelfCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    len: usize,
}

impl SelfCache {
    /// Tokens already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// What one decoder pass returns.
pub struct DecoderOutput {
    /// Final hidden states `[b, tokens, d_model]` (after the last layer norm).
    pub hidden: Tensor,
    /// Cross-attention weights of each layer `[b, heads, tokens, source positions]`, when asked.
    pub cross_attention: Vec<Tensor>,
}

/// A loaded Whisper network.
pub struct Whisper {
    cfg: WhisperConfig,
    conv1: Conv1d,
    conv2: Conv1d,
    encoder_positions: Tensor,
    encoder_layers: Vec<EncoderLayer>,
    encoder_norm: LayerNorm,
    embed_tokens: Tensor,
    decoder_positions: Tensor,
    decoder_layers: Vec<DecoderLayer>,
    decoder_norm: LayerNorm,
    device: Device,
    dtype: DType,
}

impl Whisper {
    /// Builds the network from checked weights (`config::check_files` ran first).
    pub(crate) fn from_var_builder(cfg: WhisperConfig, vb: VarBuilder) -> Result<Whisper> {
        let device = vb.device().clone();
        let dtype = vb.dtype();
        let d = cfg.d_model;
        let e = vb.pp("model.encoder");
        let conv = |stride| Conv1dConfig {
            padding: 1,
            stride,
            ..Default::default()
        };
        let conv1 = conv1d(cfg.num_mel_bins, d, 3, conv(1), e.pp("conv1"))?;
        let conv2 = conv1d(d, d, 3, conv(2), e.pp("conv2"))?;
        let encoder_positions = e.get((cfg.max_source_positions, d), "embed_positions.weight")?;
        let mut encoder_layers = Vec::with_capacity(cfg.encoder_layers);
        for i in 0..cfg.encoder_layers {
            let l = e.pp(format!("layers.{i}"));
            encoder_layers.push(EncoderLayer {
                attn_norm: norm(l.pp("self_attn_layer_norm"), d)?,
                attn: Attention::load(l.pp("self_attn"), d, cfg.encoder_heads)?,
                mlp_norm: norm(l.pp("final_layer_norm"), d)?,
                mlp: Mlp::load(&l, d, cfg.encoder_ffn_dim)?,
            });
        }
        let encoder_norm = norm(e.pp("layer_norm"), d)?;
        let dd = vb.pp("model.decoder");
        let embed_tokens = dd.get((cfg.vocab_size, d), "embed_tokens.weight")?;
        let decoder_positions = dd.get((cfg.max_target_positions, d), "embed_positions.weight")?;
        let mut decoder_layers = Vec::with_capacity(cfg.decoder_layers);
        for i in 0..cfg.decoder_layers {
            let l = dd.pp(format!("layers.{i}"));
            decoder_layers.push(DecoderLayer {
                attn_norm: norm(l.pp("self_attn_layer_norm"), d)?,
                attn: Attention::load(l.pp("self_attn"), d, cfg.decoder_heads)?,
                cross_norm: norm(l.pp("encoder_attn_layer_norm"), d)?,
                cross: Attention::load(l.pp("encoder_attn"), d, cfg.decoder_heads)?,
                mlp_norm: norm(l.pp("final_layer_norm"), d)?,
                mlp: Mlp::load(&l, d, cfg.decoder_ffn_dim)?,
            });
        }
        let decoder_norm = norm(dd.pp("layer_norm"), d)?;
        Ok(Whisper {
            cfg,
            conv1,
            conv2,
            encoder_positions,
            encoder_layers,
            encoder_norm,
            embed_tokens,
            decoder_positions,
            decoder_layers,
            decoder_norm,
            device,
            dtype,
        })
    }

    pub fn config(&self) -> &WhisperConfig {
        &self.cfg
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Encodes log-mel features `[b, n_mels, frames]` (any float dtype; frames even and at most
    /// twice `max_source_positions`) into `[b, frames / 2, d_model]`.
    pub fn encode(&self, mel: &Tensor) -> Result<Tensor> {
        let (_, mels, frames) = mel.dims3()?;
        if mels != self.cfg.num_mel_bins || frames == 0 || frames > self.cfg.input_frames() {
            return Err(EngineError::internal(format!(
                "encoder input of {mels} mel bins x {frames} frames (the model takes {} x at most {})",
                self.cfg.num_mel_bins,
                self.cfg.input_frames()
            )));
        }
        let mel = mel.to_device(&self.device)?.to_dtype(self.dtype)?;
        let x = self.conv1.forward(&mel)?.gelu_erf()?;
        let x = self.conv2.forward(&x)?.gelu_erf()?.transpose(1, 2)?;
        let positions = x.dim(1)?;
        let mut x = x.broadcast_add(&self.encoder_positions.narrow(0, 0, positions)?)?;
        for layer in &self.encoder_layers {
            let h = layer.attn_norm.forward(&x)?;
            let (k, v) = layer.attn.keys_values(&h)?;
            let (a, _) = layer.attn.attend(&h, &k, &v, None, false)?;
            x = (x + a)?;
            let m = layer.mlp.forward(&layer.mlp_norm.forward(&x)?)?;
            x = (x + m)?;
        }
        Ok(self.encoder_norm.forward(&x)?)
    }

    /// The cross-attention keys and values of encoder states `[b, positions, d_model]`.
    pub fn cross_kv(&self, encoded: &Tensor) -> Result<CrossKv> {
        let layers = self
            .decoder_layers
            .iter()
            .map(|l| l.cross.keys_values(encoded))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(CrossKv { layers })
    }

    /// An empty self-attention cache.
    pub fn new_cache(&self) -> SelfCache {
        SelfCache {
            layers: (0..self.decoder_layers.len()).map(|_| None).collect(),
            len: 0,
        }
    }

    /// Runs the decoder on `tokens` (`[b, t]` u32 ids) after what `cache` holds, appending
    /// their keys and values to it. With `keep_cross`, every layer's cross-attention weights
    /// come back (for word timestamps).
    pub fn decode(
        &self,
        tokens: &Tensor,
        cross: &CrossKv,
        cache: &mut SelfCache,
        keep_cross: bool,
    ) -> Result<DecoderOutput> {
        let (_, t) = tokens.dims2()?;
        let offset = cache.len;
        if t == 0 || offset + t > self.cfg.max_target_positions {
            return Err(EngineError::InvalidInput(format!(
                "the decoder holds {} tokens per window; {} were asked",
                self.cfg.max_target_positions,
                offset + t
            )));
        }
        let embedded = self.embed_tokens.embedding(&tokens.flatten_all()?)?;
        let (b, _) = tokens.dims2()?;
        let embedded = embedded.reshape((b, t, self.cfg.d_model))?;
        let embedded = if self.cfg.scale_embedding {
            (embedded * (self.cfg.d_model as f64).sqrt())?
        } else {
            embedded
        };
        let mut x = embedded.broadcast_add(&self.decoder_positions.narrow(0, offset, t)?)?;
        let mask = causal_mask(t, offset, &self.device, self.dtype)?;
        let mut cross_attention = Vec::new();
        let layers = self
            .decoder_layers
            .iter()
            .zip(&mut cache.layers)
            .zip(&cross.layers);
        for ((layer, slot), (ck, cv)) in layers {
            let h = layer.attn_norm.forward(&x)?;
            let (k, v) = layer.attn.keys_values(&h)?;
            let (k, v) = match slot.take() {
                Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                None => (k, v),
            };
            let (a, _) = layer.attn.attend(&h, &k, &v, mask.as_ref(), false)?;
            *slot = Some((k, v));
            x = (x + a)?;
            let h = layer.cross_norm.forward(&x)?;
            let (a, w) = layer.cross.attend(&h, ck, cv, None, keep_cross)?;
            if let Some(w) = w {
                cross_attention.push(w);
            }
            x = (x + a)?;
            let m = layer.mlp.forward(&layer.mlp_norm.forward(&x)?)?;
            x = (x + m)?;
        }
        cache.len = offset + t;
        Ok(DecoderOutput {
            hidden: self.decoder_norm.forward(&x)?,
            cross_attention,
        })
    }

    /// Vocabulary logits (f32) of hidden states `[.., d_model]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let logits = hidden.broadcast_matmul(&self.embed_tokens.t()?)?;
        Ok(logits.to_dtype(DType::F32)?)
    }
}

/// The additive causal mask `[t, offset + t]` of `t` new tokens after `offset` cached ones
/// (`None` for a single token, which may see everything).
fn causal_mask(t: usize, offset: usize, device: &Device, dtype: DType) -> Result<Option<Tensor>> {
    if t == 1 {
        return Ok(None);
    }
    let keys = offset + t;
    let values: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..keys).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    let mask = Tensor::from_vec(values, (t, keys), device)?.to_dtype(dtype)?;
    Ok(Some(mask))
}
