//! Sentence embeddings: encoder + pooling (mean / cls / last token) + optional L2 norm.

use std::path::Path;

use candle_core::{DType, Device, Tensor, D};

use crate::placement::Placement;
use serde_json::Value;

use crate::bert::FastBert;
use crate::checks::check_encoder;
use crate::encoder::{max_tokens, Architecture, Encoder};
use crate::error::EngineError;
use crate::files::ModelFiles;
use crate::text::{in_batches, pad_batch, Encoded, TextEncoder};
use crate::DEFAULT_BATCH_TOKENS;

/// One input of an embedding request.
#[derive(Debug, Clone)]
pub enum EmbedInput {
    Text(String),
    Tokens(Vec<u32>),
}

/// The embedding ability.
pub trait Embed: Send {
    /// Tokenizes one input; with `truncate` false an over-long input is an error.
    fn tokenize(&self, input: &EmbedInput, truncate: bool) -> Result<Encoded, EngineError>;
    /// Embeds tokenized inputs, in order. Batches internally within the token budget.
    fn embed(&self, inputs: &[&Encoded]) -> Result<Vec<Vec<f32>>, EngineError>;
    fn dimensions(&self) -> usize;
    fn max_tokens(&self) -> usize;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    Cls,
    LastToken,
}

impl Pooling {
    /// From sentence-transformers' pooling config; mean when there is none (its default).
    fn from_config(config: Option<&Value>, path: &Path) -> Result<Pooling, EngineError> {
        let Some(config) = config else {
            return Ok(Pooling::Mean);
        };
        let on = |key: &str| config.get(key).and_then(Value::as_bool).unwrap_or(false);
        if on("pooling_mode_mean_tokens") {
            return Ok(Pooling::Mean);
        }
        if on("pooling_mode_cls_token") {
            return Ok(Pooling::Cls);
        }
        if on("pooling_mode_lasttoken") {
            return Ok(Pooling::LastToken);
        }
        Err(EngineError::bad_file(
            path,
            "names a pooling mode we do not support (supported: mean, cls, lasttoken)",
        ))
    }
}

pub struct EmbeddingModel {
    encoder: Encoder,
    text: TextEncoder,
    pooling: Pooling,
    normalize: bool,
    dimensions: usize,
    pad_id: u32,
    device: Device,
    batch_tokens: usize,
}

impl EmbeddingModel {
    /// Loads a model folder on the CPU.
    pub fn load(folder: &Path) -> Result<EmbeddingModel, EngineError> {
        Self::load_on(folder, &Placement::cpu())
    }

    /// Loads a model folder onto `placement`'s device, weights in its dtype.
    pub fn load_on(folder: &Path, placement: &Placement) -> Result<EmbeddingModel, EngineError> {
        let files = ModelFiles::resolve(folder)?;
        let arch = Architecture::of(&files)?;
        let info = arch.info(&files)?;
        check_encoder(&files, arch, placement)?;
        let pooling = Pooling::from_config(
            files.pooling.as_ref(),
            &folder.join("1_Pooling/config.json"),
        )?;
        let max_len = max_tokens(&files, &info);
        let text = TextEncoder::load(
            &files.tokenizer,
            max_len,
            info.vocab_size,
            info.type_vocab_size,
        )?;
        let device = placement.device.clone();
        let encoder = Encoder::load(arch, &files, placement)?;
        tracing::info!(folder = %folder.display(), ?arch, ?pooling, normalize = files.normalize, max_len, dims = info.hidden_size, on = %placement.describe(), "embedding model loaded");
        Ok(EmbeddingModel {
            encoder,
            text,
            pooling,
            normalize: files.normalize,
            dimensions: info.hidden_size,
            pad_id: info.pad_id,
            device,
            batch_tokens: DEFAULT_BATCH_TOKENS,
        })
    }

    /// Padded tokens per forward pass (sequences are sorted by length and cut into batches of
    /// at most this many padded tokens).
    pub fn with_batch_tokens(mut self, tokens: usize) -> Self {
        self.batch_tokens = tokens.max(1);
        self
    }

    fn embed_batch(&self, batch: &[&Encoded]) -> Result<Vec<Vec<f32>>, EngineError> {
        let pooled = match self.encoder.packed() {
            Some(bert) => self.pool_packed(bert, batch)?,
            None => self.pool_padded(batch)?,
        };
        // Pooling sums and the norm in f32 whatever the model computed in.
        let pooled = pooled.to_dtype(DType::F32)?;
        let pooled = if self.normalize {
            let norms = pooled
                .sqr()?
                .sum_keepdim(D::Minus1)?
                .sqrt()?
                .clamp(1e-12, f64::MAX)?;
            pooled.broadcast_div(&norms)?
        } else {
            pooled
        };
        Ok(pooled.to_vec2::<f32>()?)
    }

    /// Runs our BERT on the sequences packed back to back and pools each one's rows.
    fn pool_packed(&self, bert: &FastBert, batch: &[&Encoded]) -> Result<Tensor, EngineError> {
        if batch.iter().any(|s| s.is_empty()) {
            return Err(EngineError::InvalidInput("an input has no tokens".into()));
        }
        let total: usize = batch.iter().map(|s| s.len()).sum();
        let mut ids = Vec::with_capacity(total);
        let mut types = Vec::with_capacity(total);
        let mut positions = Vec::with_capacity(total);
        for seq in batch {
            ids.extend_from_slice(&seq.ids);
            types.extend_from_slice(&seq.type_ids);
            positions.extend(0..seq.len() as u32);
        }
        let lengths: Vec<usize> = batch.iter().map(|s| s.len()).collect();
        let hidden = bert
            .forward_packed(
                &Tensor::from_vec(ids, total, &self.device)?,
                &Tensor::from_vec(types, total, &self.device)?,
                &Tensor::from_vec(positions, total, &self.device)?,
                &lengths,
            )?
            .to_dtype(DType::F32)?;
        let mut rows = Vec::with_capacity(batch.len());
        let mut start = 0;
        for len in lengths {
            let row = match self.pooling {
                Pooling::Mean => hidden.narrow(0, start, len)?.mean_keepdim(0)?,
                Pooling::Cls => hidden.narrow(0, start, 1)?,
                Pooling::LastToken => hidden.narrow(0, start + len - 1, 1)?,
            };
            rows.push(row);
            start += len;
        }
        Ok(Tensor::cat(&rows, 0)?)
    }

    /// Runs a padded batch through a candle-transformers encoder and pools with the mask.
    fn pool_padded(&self, batch: &[&Encoded]) -> Result<Tensor, EngineError> {
        let (ids, types, mask) = pad_batch(batch, self.pad_id, &self.device)?;
        let hidden = self
            .encoder
            .forward(&ids, &types, &mask)?
            .to_dtype(DType::F32)?;
        let pooled = match self.pooling {
            Pooling::Mean => {
                let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
                let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
                let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
                summed.broadcast_div(&counts)?
            }
            Pooling::Cls => hidden.narrow(1, 0, 1)?.squeeze(1)?,
            Pooling::LastToken => {
                let rows = batch
                    .iter()
                    .enumerate()
                    .map(|(i, seq)| hidden.get(i)?.get(seq.len().saturating_sub(1)))
                    .collect::<Result<Vec<_>, _>>()?;
                Tensor::stack(&rows, 0)?
            }
        };
        Ok(pooled)
    }
}

impl Embed for EmbeddingModel {
    fn tokenize(&self, input: &EmbedInput, truncate: bool) -> Result<Encoded, EngineError> {
        match input {
            EmbedInput::Text(text) => self.text.encode(text, truncate),
            EmbedInput::Tokens(ids) => self.text.from_ids(ids, truncate),
        }
    }

    fn embed(&self, inputs: &[&Encoded]) -> Result<Vec<Vec<f32>>, EngineError> {
        in_batches(inputs, self.batch_tokens, |batch| self.embed_batch(batch))
    }

    fn dimensions(&self) -> usize {
        self.dimensions
    }

    fn max_tokens(&self) -> usize {
        self.text.max_len()
    }
}
