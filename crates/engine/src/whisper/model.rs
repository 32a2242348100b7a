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
use candle_nn::{conv1d, layer_norm, Conv1d, Conv1dConfig, LayerNorm, VarBuilder};

use crate::gemv::Dense;
use crate::ops;
use crate::step_attention;

use crate::error::EngineError;
use crate::whisper::config::WhisperConfig;

type Result<T> = std::result::Result<T, EngineError>;

struct Attention {
    q: Dense,
    k: Dense,
    v: Dense,
    out: Dense,
    heads: usize,
    scale: f64,
}

/// A linear layer `d_in → d_out` whose weight is read as `weights` (the checkpoint's own f16
/// for the decoder on the CPU, see [`Whisper::from_var_builder`]) and whose bias, if any, as
/// the model's dtype.
fn dense(
    vb: &VarBuilder,
    weights: DType,
    d_in: usize,
    d_out: usize,
    bias: bool,
) -> candle_core::Result<Dense> {
    let weight = vb.to_dtype(weights).get((d_out, d_in), "weight")?;
    let bias = if bias {
        Some(vb.get(d_out, "bias")?)
    } else {
        None
    };
    Ok(Dense::new(weight, bias))
}

impl Attention {
    fn load(
        vb: VarBuilder,
        d: usize,
        heads: usize,
        weights: DType,
    ) -> candle_core::Result<Attention> {
        Ok(Attention {
            q: dense(&vb.pp("q_proj"), weights, d, d, true)?,
            k: dense(&vb.pp("k_proj"), weights, d, d, false)?,
            v: dense(&vb.pp("v_proj"), weights, d, d, true)?,
            out: dense(&vb.pp("out_proj"), weights, d, d, true)?,
            heads,
            scale: ((d / heads) as f64).powf(-0.5),
        })
    }

    /// Q, K and V as one matrix `[3 d, d]` with one bias (zeros for K).
    fn stacked(&self) -> candle_core::Result<Dense> {
        let weight = Tensor::cat(&[self.q.weight(), self.k.weight(), self.v.weight()], 0)?;
        let bias = |m: &Dense| -> candle_core::Result<Tensor> {
            match m.bias() {
                Some(b) => Ok(b.clone()),
                None => Tensor::zeros(m.weight().dim(0)?, m.weight().dtype(), m.weight().device()),
            }
        };
        let bias = Tensor::cat(&[bias(&self.q)?, bias(&self.k)?, bias(&self.v)?], 0)?;
        Ok(Dense::new(weight, Some(bias)))
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
        if t == 1 && mask.is_none() && !keep {
            let q = self.split(&self.q.forward(x)?)?;
            let mixed = self.attend_step(&q, k, v)?;
            let mixed = mixed.transpose(1, 2)?.reshape((b, t, d))?;
            return Ok((self.out.forward(&mixed)?, None));
        }
        let q = self.split(&(self.q.forward(x)? * self.scale)?)?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let mixed = weights.matmul(v)?.transpose(1, 2)?.reshape((b, t, d))?;
        Ok((self.out.forward(&mixed)?, keep.then_some(weights)))
    }

    /// One query row per head (`q [b, heads, 1, head_dim]`, not yet scaled) over `k`/`v`:
    /// the mixed values `[b, heads, 1, head_dim]`, before the output projection.
    fn attend_step(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
        if let Some(mixed) = step_attention::attend_one(q, k, v, self.scale as f32)? {
            return Ok(mixed);
        }
        let scores = (q * self.scale)?.matmul(&k.t()?)?;
        candle_nn::ops::softmax_last_dim(&scores)?.matmul(v)
    }
}

struct Mlp {
    fc1: Dense,
    fc2: Dense,
}

impl Mlp {
    fn load(vb: &VarBuilder, d: usize, ffn: usize, weights: DType) -> candle_core::Result<Mlp> {
        Ok(Mlp {
            fc1: dense(&vb.pp("fc1"), weights, d, ffn, true)?,
            fc2: dense(&vb.pp("fc2"), weights, ffn, d, true)?,
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
    /// Q, K and V stacked (`[3 d, d]`, K's bias zero) for the fused attention kernel.
    qkv: Dense,
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
    /// The tied token embedding as the vocabulary projection.
    vocab: Dense,
    decoder_positions: Tensor,
    decoder_layers: Vec<DecoderLayer>,
    decoder_norm: LayerNorm,
    device: Device,
    dtype: DType,
}

impl Whisper {
    /// Builds the network from checked weights (`config::check_files` ran first). The
    /// decoder's matrices (its linear layers and the token embedding, which is also the
    /// vocabulary projection) are read as `decoder_weights`: the model's dtype, or f16 where
    /// the checkpoint stores f16 and the model computes in f32 on the CPU. Each decoder step
    /// reads all of them once, so half the bytes is close to half the time; the values are
    /// the checkpoint's, widened as the kernel loads them, so the arithmetic is f32's.
    pub(crate) fn from_var_builder(
        cfg: WhisperConfig,
        vb: VarBuilder,
        decoder_weights: DType,
    ) -> Result<Whisper> {
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
            let attn = Attention::load(l.pp("self_attn"), d, cfg.encoder_heads, dtype)?;
            encoder_layers.push(EncoderLayer {
                attn_norm: norm(l.pp("self_attn_layer_norm"), d)?,
                qkv: attn.stacked()?,
                attn,
                mlp_norm: norm(l.pp("final_layer_norm"), d)?,
                mlp: Mlp::load(&l, d, cfg.encoder_ffn_dim, dtype)?,
            });
        }
        let encoder_norm = norm(e.pp("layer_norm"), d)?;
        let dd = vb.pp("model.decoder");
        let embed_tokens = dd
            .to_dtype(decoder_weights)
            .get((cfg.vocab_size, d), "embed_tokens.weight")?;
        let decoder_positions = dd.get((cfg.max_target_positions, d), "embed_positions.weight")?;
        let mut decoder_layers = Vec::with_capacity(cfg.decoder_layers);
        for i in 0..cfg.decoder_layers {
            let l = dd.pp(format!("layers.{i}"));
            decoder_layers.push(DecoderLayer {
                attn_norm: norm(l.pp("self_attn_layer_norm"), d)?,
                attn: Attention::load(l.pp("self_attn"), d, cfg.decoder_heads, decoder_weights)?,
                cross_norm: norm(l.pp("encoder_attn_layer_norm"), d)?,
                cross: Attention::load(
                    l.pp("encoder_attn"),
                    d,
                    cfg.decoder_heads,
                    decoder_weights,
                )?,
                mlp_norm: norm(l.pp("final_layer_norm"), d)?,
                mlp: Mlp::load(&l, d, cfg.decoder_ffn_dim, decoder_weights)?,
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
            vocab: Dense::new(embed_tokens.clone(), None),
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
        let x = x.broadcast_add(&self.encoder_positions.narrow(0, 0, positions)?)?;
        let (b, t, d) = x.dims3()?;
        let mut x = x.reshape((b * t, d))?;
        // The CPU kernels of `ops` (one task per window and head; a vectorised GELU) where
        // they apply, the same arithmetic in candle ops elsewhere.
        let cpu_kernels = self.device.is_cpu() && self.dtype == DType::F32;
        let segments: Vec<(usize, usize)> = (0..b).map(|i| (i * t, t)).collect();
        for layer in &self.encoder_layers {
            let qkv = layer.qkv.forward(&layer.attn_norm.forward(&x)?)?;
            let context = if cpu_kernels {
                ops::attention(&qkv, layer.attn.heads, segments.clone())?
            } else {
                ops::attention_tensors(&qkv, layer.attn.heads, &segments)?
            };
            x = (x + layer.attn.out.forward(&context)?)?;
            let inner = layer.mlp.fc1.forward(&layer.mlp_norm.forward(&x)?)?;
            let inner = if cpu_kernels {
                ops::gelu_erf(&inner)?
            } else {
                ops::gelu_erf_any(&inner)?
            };
            x = (x + layer.mlp.fc2.forward(&inner)?)?;
        }
        Ok(self.encoder_norm.forward(&x)?.reshape((b, t, d))?)
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
        let embedded = self
            .embed_tokens
            .embedding(&tokens.flatten_all()?)?
            .to_dtype(self.dtype)?;
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

    /// One decoder step of several independent sequences: row `i` is `tokens[i]` after what
    /// `caches[i]` holds, attending to `crosses[i]` (one batch row each), and its keys and
    /// values are appended to `caches[i]`. The linear layers (and, in [`Whisper::logits`],
    /// the vocabulary projection) run once over all the rows, so each weight is read once
    /// per step whatever the row count; attention runs row by row over each row's own cache
    /// and audio. Each row's result is exactly what [`Whisper::decode`] gives it alone.
    /// Returns hidden states `[rows, 1, d_model]`.
    pub fn decode_rows(
        &self,
        tokens: &[u32],
        crosses: &[&CrossKv],
        caches: &mut [&mut SelfCache],
    ) -> Result<Tensor> {
        let b = tokens.len();
        if b == 0 || crosses.len() != b || caches.len() != b {
            return Err(EngineError::internal(format!(
                "decode_rows: {b} tokens, {} audio rows, {} caches",
                crosses.len(),
                caches.len()
            )));
        }
        let positions = self.cfg.max_target_positions;
        if let Some(full) = caches.iter().find(|c| c.len + 1 > positions) {
            return Err(EngineError::InvalidInput(format!(
                "the decoder holds {positions} tokens per window; {} were asked",
                full.len + 1
            )));
        }
        if crosses.iter().any(|c| c.batch_rows() != 1) {
            return Err(EngineError::internal(
                "decode_rows takes one audio row per sequence",
            ));
        }
        let d = self.cfg.d_model;
        let ids = Tensor::from_vec(tokens.to_vec(), b, &self.device)?;
        let embedded = self.embed_tokens.embedding(&ids)?.to_dtype(self.dtype)?;
        let embedded = if self.cfg.scale_embedding {
            (embedded * (d as f64).sqrt())?
        } else {
            embedded
        };
        let offsets: Vec<u32> = caches.iter().map(|c| c.len as u32).collect();
        let offsets = Tensor::from_vec(offsets, b, &self.device)?;
        let placed = self.decoder_positions.index_select(&offsets, 0)?;
        let mut x = (embedded + placed)?.reshape((b, 1, d))?;
        for (l, layer) in self.decoder_layers.iter().enumerate() {
            let h = layer.attn_norm.forward(&x)?;
            let (k, v) = layer.attn.keys_values(&h)?;
            let q = layer.attn.split(&layer.attn.q.forward(&h)?)?;
            let mut mixed = Vec::with_capacity(b);
            for (i, cache) in caches.iter_mut().enumerate() {
                let (k, v) = (k.narrow(0, i, 1)?, v.narrow(0, i, 1)?);
                let slot = &mut cache.layers[l];
                let (k, v) = match slot.take() {
                    Some((pk, pv)) => (Tensor::cat(&[&pk, &k], 2)?, Tensor::cat(&[&pv, &v], 2)?),
                    None => (k, v),
                };
                mixed.push(layer.attn.attend_step(&q.narrow(0, i, 1)?, &k, &v)?);
                *slot = Some((k, v));
            }
            let mixed = Tensor::cat(&mixed, 0)?
                .transpose(1, 2)?
                .reshape((b, 1, d))?;
            x = (x + layer.attn.out.forward(&mixed)?)?;
            let h = layer.cross_norm.forward(&x)?;
            let q = layer.cross.split(&layer.cross.q.forward(&h)?)?;
            let mut mixed = Vec::with_capacity(b);
            for (i, cross) in crosses.iter().enumerate() {
                let (ck, cv) = &cross.layers[l];
                mixed.push(layer.cross.attend_step(&q.narrow(0, i, 1)?, ck, cv)?);
            }
            let mixed = Tensor::cat(&mixed, 0)?
                .transpose(1, 2)?
                .reshape((b, 1, d))?;
            x = (x + layer.cross.out.forward(&mixed)?)?;
            let m = layer.mlp.forward(&layer.mlp_norm.forward(&x)?)?;
            x = (x + m)?;
        }
        for cache in caches.iter_mut() {
            cache.len += 1;
        }
        Ok(self.decoder_norm.forward(&x)?)
    }

    /// Vocabulary logits (f32) of hidden states `[.., d_model]`.
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        Ok(self.vocab.forward(hidden)?.to_dtype(DType::F32)?)
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

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor};

    use super::Whisper;
    use crate::whisper::config::{check_files, WhisperConfig};

    /// Decoder matrices kept as the f16 checkpoint stores them give exactly the hidden states
    /// and logits of the same values widened to f32 at load: for a prompt (the widened-matmul
    /// path) and for single steps (the half-precision kernel).
    #[test]
    fn half_decoder_weights_equal_widened_ones() {
        let folder = xi_testkit::whisper_tiny_en();
        let config_path = folder.join("config.json");
        let config = serde_json::from_slice(&std::fs::read(&config_path).unwrap()).unwrap();
        let cfg = WhisperConfig::from_json(&config, &config_path).unwrap();
        let weights = crate::files::find_weights(&folder).unwrap();
        let stored = check_files(&cfg, &weights, &folder).unwrap();
        assert_eq!(
            stored,
            Some(DType::F16),
            "the test model is an f16 checkpoint"
        );
        let vb = crate::encoder::var_builder_for(&weights, &Device::Cpu, DType::F32).unwrap();
        let half = Whisper::from_var_builder(cfg.clone(), vb.clone(), DType::F16).unwrap();
        let full = Whisper::from_var_builder(cfg, vb, DType::F32).unwrap();
        assert_eq!(half.vocab.weight().dtype(), DType::F16);
        assert_eq!(full.vocab.weight().dtype(), DType::F32);

        let frames = 400;
        let noise = crate::test_rng::uniform(80 * frames, 7, -1.0, 1.0);
        let mel = Tensor::from_vec(noise, (1, 80, frames), &Device::Cpu).unwrap();
        let encoded = full.encode(&mel).unwrap();
        let (cross_half, cross_full) = (
            half.cross_kv(&encoded).unwrap(),
            full.cross_kv(&encoded).unwrap(),
        );
        let (mut cache_half, mut cache_full) = (half.new_cache(), full.new_cache());
        let prompt: Vec<u32> = (0..20u32).map(|i| 50257 + (i % 3) * 100 + i).collect();
        let mut steps = vec![prompt];
        steps.extend([[50256u32], [400], [13]].map(|t| t.to_vec()));
        for tokens in steps {
            let n = tokens.len();
            let tokens = Tensor::from_vec(tokens, (1, n), &Device::Cpu).unwrap();
            let a = half
                .decode(&tokens, &cross_half, &mut cache_half, false)
                .unwrap();
            let b = full
                .decode(&tokens, &cross_full, &mut cache_full, false)
                .unwrap();
            let logits = |net: &Whisper, hidden: &Tensor| -> Vec<f32> {
                net.logits(hidden)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap()
            };
            let (la, lb) = (logits(&half, &a.hidden), logits(&full, &b.hidden));
            assert_eq!(la.len(), n * 51864);
            assert!(la == lb, "the logits of {n} tokens differ");
        }
    }
}
