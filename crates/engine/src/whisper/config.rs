//! A Whisper folder's `config.json`, checked field by field and against the weights' shapes
//! before anything is allocated.
//!
//! The bounds are generous (large-v3 is d_model 1280, 32+32 layers, 128 mel bins, 51866
//! tokens) but finite, so a hostile config cannot make the loader allocate without limit.

use std::path::Path;

use candle_core::DType;

use serde_json::Value;

use crate::checks::{expect_shape, positive, safetensors_shapes, Shapes};
use crate::error::EngineError;

/// Largest accepted value of each dimension (well above every released Whisper).
const MAX_D_MODEL: usize = 8192;
const MAX_LAYERS: usize = 128;
const MAX_MELS: usize = 512;
const MAX_VOCAB: usize = 1 << 20;
const MAX_POSITIONS: usize = 1 << 16;
const MAX_FFN: usize = 1 << 16;

/// The dimensions of a Whisper model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WhisperConfig {
    pub vocab_size: usize,
    pub num_mel_bins: usize,
    pub d_model: usize,
    pub encoder_layers: usize,
    pub decoder_layers: usize,
    pub encoder_heads: usize,
    pub decoder_heads: usize,
    pub encoder_ffn_dim: usize,
    pub decoder_ffn_dim: usize,
    /// Encoder positions (1500 for every released model: 3000 mel frames, stride 2).
    pub max_source_positions: usize,
    /// Decoder positions (448): the prompt plus the generated tokens of one window.
    pub max_target_positions: usize,
    /// Multiply token embeddings by sqrt(d_model) (false for every released model).
    pub scale_embedding: bool,
}

impl WhisperConfig {
    /// Parses and bounds `config.json` (at `path`, for messages).
    pub fn from_json(config: &Value, path: &Path) -> Result<WhisperConfig, EngineError> {
        let model_type = config.get("model_type").and_then(Value::as_str);
        if model_type != Some("whisper") {
            return Err(EngineError::bad_file(
                path,
                "model_type is not \"whisper\" (this loader reads Whisper models only)",
            ));
        }
        let act = config
            .get("activation_function")
            .and_then(Value::as_str)
            .unwrap_or("gelu");
        if act != "gelu" {
            return Err(EngineError::bad_file(
                path,
                "activation_function must be \"gelu\" (the only one Whisper uses)",
            ));
        }
        let field = |key: &str, max: usize| -> Result<usize, EngineError> {
            let v = positive(config, key, path)?;
            if v > max {
                return Err(EngineError::bad_file(
                    path,
                    format!("{key} is {v}, above the limit of {max}"),
                ));
            }
            Ok(v)
        };
        let cfg = WhisperConfig {
            vocab_size: field("vocab_size", MAX_VOCAB)?,
            num_mel_bins: field("num_mel_bins", MAX_MELS)?,
            d_model: field("d_model", MAX_D_MODEL)?,
            encoder_layers: field("encoder_layers", MAX_LAYERS)?,
            decoder_layers: field("decoder_layers", MAX_LAYERS)?,
            encoder_heads: field("encoder_attention_heads", MAX_D_MODEL)?,
            decoder_heads: field("decoder_attention_heads", MAX_D_MODEL)?,
            encoder_ffn_dim: field("encoder_ffn_dim", MAX_FFN)?,
            decoder_ffn_dim: field("decoder_ffn_dim", MAX_FFN)?,
            max_source_positions: field("max_source_positions", MAX_POSITIONS)?,
            max_target_positions: field("max_target_positions", MAX_POSITIONS)?,
            scale_embedding: config
                .get("scale_embedding")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        };
        for (heads, key) in [
            (cfg.encoder_heads, "encoder_attention_heads"),
            (cfg.decoder_heads, "decoder_attention_heads"),
        ] {
            if !cfg.d_model.is_multiple_of(heads) {
                return Err(EngineError::bad_file(
                    path,
                    format!(
                        "d_model ({}) is not a multiple of {key} ({heads})",
                        cfg.d_model
                    ),
                ));
            }
        }
        Ok(cfg)
    }

    /// Mel frames one encoder pass takes (twice the positions: the second convolution has
    /// stride 2).
    pub fn input_frames(&self) -> usize {
        self.max_source_positions * 2
    }

    /// Whether the vocabulary has language and task tokens (the `.en` models have 51864
    /// tokens, the multilingual ones 51865 or more): the rule transformers uses.
    pub fn is_multilingual(&self) -> bool {
        self.vocab_size >= 51865
    }

    /// Checks every tensor the model reads against these dimensions.
    pub(crate) fn check_weights(&self, shapes: &Shapes) -> Result<(), String> {
        let d = (self.d_model, "d_model");
        let attention = |prefix: &str| -> Result<(), String> {
            for p in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                expect_shape(shapes, &format!("{prefix}.{p}.weight"), &[d, d])?;
                if p != "k_proj" {
                    expect_shape(shapes, &format!("{prefix}.{p}.bias"), &[d])?;
                }
            }
            Ok(())
        };
        let norm = |name: &str| -> Result<(), String> {
            expect_shape(shapes, &format!("{name}.weight"), &[d])?;
            expect_shape(shapes, &format!("{name}.bias"), &[d])
        };
        let ffn = |prefix: &str, ffn: (usize, &str)| -> Result<(), String> {
            expect_shape(shapes, &format!("{prefix}.fc1.weight"), &[ffn, d])?;
            expect_shape(shapes, &format!("{prefix}.fc1.bias"), &[ffn])?;
            expect_shape(shapes, &format!("{prefix}.fc2.weight"), &[d, ffn])?;
            expect_shape(shapes, &format!("{prefix}.fc2.bias"), &[d])
        };
        let e = "model.encoder";
        let mels = (self.num_mel_bins, "num_mel_bins");
        expect_shape(
            shapes,
            &format!("{e}.conv1.weight"),
            &[d, mels, (3, "kernel")],
        )?;
        expect_shape(shapes, &format!("{e}.conv1.bias"), &[d])?;
        expect_shape(shapes, &format!("{e}.conv2.weight"), &[d, d, (3, "kernel")])?;
        expect_shape(shapes, &format!("{e}.conv2.bias"), &[d])?;
        let src = (self.max_source_positions, "max_source_positions");
        expect_shape(shapes, &format!("{e}.embed_positions.weight"), &[src, d])?;
        norm(&format!("{e}.layer_norm"))?;
        for i in 0..self.encoder_layers {
            let l = format!("{e}.layers.{i}");
            attention(&format!("{l}.self_attn"))?;
            norm(&format!("{l}.self_attn_layer_norm"))?;
            norm(&format!("{l}.final_layer_norm"))?;
            ffn(&l, (self.encoder_ffn_dim, "encoder_ffn_dim"))?;
        }
        let dd = "model.decoder";
        let vocab = (self.vocab_size, "vocab_size");
        expect_shape(shapes, &format!("{dd}.embed_tokens.weight"), &[vocab, d])?;
        let tgt = (self.max_target_positions, "max_target_positions");
        expect_shape(shapes, &format!("{dd}.embed_positions.weight"), &[tgt, d])?;
        norm(&format!("{dd}.layer_norm"))?;
        for i in 0..self.decoder_layers {
            let l = format!("{dd}.layers.{i}");
            attention(&format!("{l}.self_attn"))?;
            attention(&format!("{l}.encoder_attn"))?;
            norm(&format!("{l}.self_attn_layer_norm"))?;
            norm(&format!("{l}.encoder_attn_layer_norm"))?;
            norm(&format!("{l}.final_layer_norm"))?;
            ffn(&l, (self.decoder_ffn_dim, "decoder_ffn_dim"))?;
        }
        Ok(())
    }
}

/// Opens the safetensors files and checks them against `cfg`; the error names the tensor.
/// Checks the weights' shapes against the configuration; returns the dtype every matrix of
/// the decoder is stored in, when they share one.
pub(crate) fn check_files(
    cfg: &WhisperConfig,
    weights: &[std::path::PathBuf],
    folder: &Path,
) -> Result<Option<DType>, EngineError> {
    let tensors = crate::checks::open_safetensors(weights)?;
    let origin = weights.first().map(|p| p.as_path()).unwrap_or(folder);
    let shapes = safetensors_shapes(&tensors, origin)?;
    cfg.check_weights(&shapes)
        .map_err(|reason| EngineError::bad_file(folder, reason))?;
    let mut stored = None;
    for (name, view) in tensors.tensors() {
        if !name.starts_with("model.decoder.") || view.shape().len() != 2 {
            continue;
        }
        let dtype = DType::try_from(view.dtype()).ok();
        match stored {
            None => stored = Some(dtype),
            Some(seen) if seen != dtype => return Ok(None),
            Some(_) => {}
        }
    }
    Ok(stored.flatten())
}
