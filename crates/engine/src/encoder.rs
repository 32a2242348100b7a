//! Transformer bodies from candle-transformers, chosen by `config.json` `model_type`.

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use candle_transformers::models::xlm_roberta::{Config as XlmConfig, XLMRobertaModel};
use serde_json::Value;

use crate::bert::{BertConfig as FastBertConfig, FastBert};
use crate::checks::schema_problem;
use crate::error::{candle_message, candle_root, EngineError};
use crate::files::ModelFiles;
use crate::placement::Placement;

/// Facts about a loaded encoder that the heads and tokenizer need.
#[derive(Debug, Clone, Copy)]
pub struct EncoderInfo {
    pub hidden_size: usize,
    pub vocab_size: usize,
    /// Token type (segment) ids the embeddings know; RoBERTa-style models have one.
    pub type_vocab_size: usize,
    pub pad_id: u32,
    /// Longest input the position embeddings allow.
    pub max_positions: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    Bert,
    XlmRoberta,
}

impl Architecture {
    pub fn of(files: &ModelFiles) -> Result<Architecture, EngineError> {
        match files.model_type() {
            "bert" => Ok(Architecture::Bert),
            "xlm-roberta" | "roberta" => Ok(Architecture::XlmRoberta),
            "" => Err(EngineError::bad_file(files.folder.join("config.json"), "has no model_type")),
            other => Err(EngineError::Unsupported(format!(
                "model_type {:?} is not supported for embedding/rerank models; supported: bert, xlm-roberta",
                other.chars().take(64).collect::<String>()
            ))),
        }
    }

    pub fn info(self, files: &ModelFiles) -> Result<EncoderInfo, EngineError> {
        let path = files.folder.join("config.json");
        let field = |name: &str| {
            files
                .config
                .get(name)
                .and_then(Value::as_u64)
                .map(|n| n as usize)
                .ok_or_else(|| EngineError::bad_file(&path, format!("has no numeric {name}")))
        };
        let pad_id = files
            .config
            .get("pad_token_id")
            .and_then(Value::as_u64)
            .unwrap_or(0) as u32;
        let positions = field("max_position_embeddings")?;
        // RoBERTa positions start after the padding index.
        let max_positions = match self {
            Architecture::Bert => positions,
            Architecture::XlmRoberta => positions.saturating_sub(pad_id as usize + 1),
        };
        Ok(EncoderInfo {
            hidden_size: field("hidden_size")?,
            vocab_size: field("vocab_size")?,
            type_vocab_size: files
                .config
                .get("type_vocab_size")
                .and_then(Value::as_u64)
                .unwrap_or(2) as usize,
            pad_id,
            max_positions,
        })
    }
}

pub enum Encoder {
    /// Our encoder (standard BERT): the fast path.
    FastBert(FastBert),
    /// candle-transformers' BERT, for configurations ours does not cover.
    Bert(BertModel),
    XlmRoberta(XLMRobertaModel),
}

/// Memory-maps the safetensors weights onto `device` as `dtype`.
pub fn var_builder(
    files: &ModelFiles,
    device: &Device,
    dtype: DType,
) -> Result<VarBuilder<'static>, EngineError> {
    var_builder_for(&files.weights, device, dtype)
}

/// Memory-maps safetensors files onto `device` as `dtype`.
pub(crate) fn var_builder_for(
    weights: &[std::path::PathBuf],
    device: &Device,
    dtype: DType,
) -> Result<VarBuilder<'static>, EngineError> {
    // SAFETY: the weight files are memory-mapped read-only; like every mmap-based loader we
    // rely on nobody truncating them while the model is loaded.
    unsafe { VarBuilder::from_mmaped_safetensors(weights, dtype, device) }.map_err(|e| {
        let first = weights.first().cloned().unwrap_or_default();
        tracing::debug!(error = %candle_message(&e), "cannot map the weights");
        match candle_root(&e) {
            candle_core::Error::Io(io) => {
                EngineError::bad_file(first, format!("cannot load the weights: {io}"))
            }
            _ => EngineError::bad_file(first, "is not a valid safetensors file"),
        }
    })
}

pub(crate) fn parse_config<T: serde::de::DeserializeOwned>(
    files: &ModelFiles,
) -> Result<T, EngineError> {
    serde_json::from_value(files.config.clone()).map_err(|e| {
        EngineError::bad_file(
            files.folder.join("config.json"),
            format!("unsupported configuration: {}", schema_problem(&e)),
        )
    })
}

pub fn missing_weights(files: &ModelFiles, e: candle_core::Error) -> EngineError {
    EngineError::bad_file(
        files.folder.clone(),
        format!(
            "the weights do not match config.json ({})",
            candle_message(&e)
        ),
    )
}

impl Encoder {
    /// Loads the encoder onto `placement`'s device. Our BERT multiplies in the placement's
    /// dtype (activations stay f32); candle-transformers' models run in f32 (their attention masks multiply by the dtype's
    /// minimum, which is NaN in bf16 and unsupported in XLM-RoBERTa).
    pub fn load(
        arch: Architecture,
        files: &ModelFiles,
        placement: &Placement,
    ) -> Result<Encoder, EngineError> {
        let f32_weights = || var_builder(files, &placement.device, DType::F32);
        match arch {
            Architecture::Bert => {
                let fast: FastBertConfig = parse_config(files)?;
                if fast.supported() {
                    let cpu_kernels = placement.cpu_kernels();
                    return FastBert::load(f32_weights()?, &fast, cpu_kernels, placement.dtype)
                        .map(Encoder::FastBert)
                        .map_err(|e| missing_weights(files, e));
                }
                let config: BertConfig = parse_config(files)?;
                BertModel::load(f32_weights()?, &config)
                    .map(Encoder::Bert)
                    .map_err(|e| missing_weights(files, e))
            }
            Architecture::XlmRoberta => {
                let config: XlmConfig = parse_config(files)?;
                let vb = f32_weights()?;
                let vb = if vb.contains_tensor("roberta.embeddings.word_embeddings.weight") {
                    vb.pp("roberta")
                } else {
                    vb
                };
                XLMRobertaModel::new(&config, vb)
                    .map(Encoder::XlmRoberta)
                    .map_err(|e| missing_weights(files, e))
            }
        }
    }

    /// Our packed encoder, if this is one (then use [`FastBert::forward_packed`]).
    pub fn packed(&self) -> Option<&FastBert> {
        match self {
            Encoder::FastBert(m) => Some(m),
            _ => None,
        }
    }

    /// Hidden states `[batch, len, hidden]` of a right-padded batch.
    pub fn forward(
        &self,
        ids: &Tensor,
        type_ids: &Tensor,
        mask: &Tensor,
    ) -> Result<Tensor, EngineError> {
        let out = match self {
            Encoder::FastBert(_) => {
                return Err(EngineError::Unsupported(
                    "the packed BERT encoder takes packed input".into(),
                ))
            }
            Encoder::Bert(m) => m.forward(ids, type_ids, Some(mask))?,
            Encoder::XlmRoberta(m) => m.forward(ids, mask, type_ids, None, None, None)?,
        };
        Ok(out)
    }
}

/// The truncation length: sentence-transformers' `max_seq_length`, else the tokenizer's
/// `model_max_length`, never beyond what the position embeddings allow.
pub fn max_tokens(files: &ModelFiles, info: &EncoderInfo) -> usize {
    files
        .max_seq_length
        .or(files.model_max_length)
        .unwrap_or(info.max_positions)
        .min(info.max_positions)
}
