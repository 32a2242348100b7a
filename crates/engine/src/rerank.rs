//! Cross-encoder reranking: BERT (pooler + classifier) or XLM-RoBERTa sequence classification.
//! Scores are the sigmoid of the single logit, as sentence-transformers' `CrossEncoder`
//! reports them (and so upstream Xinference).

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::{linear, Linear, Module, VarBuilder};
use candle_transformers::models::bert::{BertModel, Config as BertConfig};
use candle_transformers::models::xlm_roberta::{
    Config as XlmConfig, XLMRobertaForSequenceClassification,
};
use serde_json::Value;

use crate::checks::check_encoder;
use crate::encoder::{max_tokens, missing_weights, parse_config, var_builder, Architecture};
use crate::error::EngineError;
use crate::files::ModelFiles;
use crate::placement::Placement;
use crate::text::{in_batches, pad_batch, Encoded, TextEncoder};
use crate::DEFAULT_BATCH_TOKENS;

/// The rerank ability.
pub trait Rerank: Send {
    /// Tokenizes a (query, document) pair; truncation cuts the longer side first.
    fn tokenize_pair(
        &self,
        query: &str,
        document: &str,
        truncate: bool,
    ) -> Result<Encoded, EngineError>;
    /// Relevance scores in [0, 1], in input order.
    fn score(&self, pairs: &[&Encoded]) -> Result<Vec<f32>, EngineError>;
    fn max_tokens(&self) -> usize;
}

enum Head {
    Bert {
        bert: BertModel,
        pooler: Linear,
        classifier: Linear,
    },
    XlmRoberta(XLMRobertaForSequenceClassification),
}

pub struct CrossEncoder {
    head: Head,
    text: TextEncoder,
    pad_id: u32,
    device: Device,
    batch_tokens: usize,
}

fn num_labels(config: &Value) -> usize {
    if let Some(n) = config.get("num_labels").and_then(Value::as_u64) {
        return n as usize;
    }
    config
        .get("id2label")
        .and_then(Value::as_object)
        .map_or(1, |m| m.len().max(1))
}

fn prefixed(vb: &VarBuilder<'static>, prefix: &str, probe: &str) -> VarBuilder<'static> {
    if vb.contains_tensor(&format!("{prefix}.{probe}")) {
        vb.pp(prefix)
    } else {
        vb.clone()
    }
}

impl CrossEncoder {
    /// Loads a model folder on the CPU.
    pub fn load(folder: &Path) -> Result<CrossEncoder, EngineError> {
        Self::load_on(folder, &Placement::cpu())
    }

    /// Loads a model folder onto `placement`'s device, in f32 whatever its dtype (see
    /// `Encoder::load`: candle-transformers' heads need f32).
    pub fn load_on(folder: &Path, placement: &Placement) -> Result<CrossEncoder, EngineError> {
        let placement = &Placement {
            dtype: DType::F32,
            ..placement.clone()
        };
        let files = ModelFiles::resolve(folder)?;
        let arch = Architecture::of(&files)?;
        let info = arch.info(&files)?;
        let labels = num_labels(&files.config);
        if labels != 1 {
            return Err(EngineError::Unsupported(format!(
                "a rerank model needs one output label; this one has {labels}"
            )));
        }
        check_encoder(&files, arch, placement)?;
        let device = placement.device.clone();
        // candle-transformers' heads run in f32 on any device (see `Encoder::load`).
        let vb = var_builder(&files, &device, DType::F32)?;
        let head = match arch {
            Architecture::Bert => {
                let config: BertConfig = parse_config(&files)?;
                let body = prefixed(&vb, "bert", "embeddings.word_embeddings.weight");
                let bert = BertModel::load(body.clone(), &config)
                    .map_err(|e| missing_weights(&files, e))?;
                let pooler = linear(info.hidden_size, info.hidden_size, body.pp("pooler.dense"))
                    .map_err(|e| missing_weights(&files, e))?;
                let classifier = linear(info.hidden_size, 1, vb.pp("classifier"))
                    .map_err(|e| missing_weights(&files, e))?;
                Head::Bert {
                    bert,
                    pooler,
                    classifier,
                }
            }
            Architecture::XlmRoberta => {
                let config: XlmConfig = parse_config(&files)?;
                XLMRobertaForSequenceClassification::new(1, &config, vb)
                    .map(Head::XlmRoberta)
                    .map_err(|e| missing_weights(&files, e))?
            }
        };
        let max_len = max_tokens(&files, &info);
        let text = TextEncoder::load(
            &files.tokenizer,
            max_len,
            info.vocab_size,
            info.type_vocab_size,
        )?;
        tracing::info!(folder = %folder.display(), ?arch, max_len, on = %placement.describe(), "rerank model loaded");
        Ok(CrossEncoder {
            head,
            text,
            pad_id: info.pad_id,
            device,
            batch_tokens: DEFAULT_BATCH_TOKENS,
        })
    }

    fn logits(&self, batch: &[&Encoded]) -> Result<Vec<f32>, EngineError> {
        let (ids, types, mask) = pad_batch(batch, self.pad_id, &self.device)?;
        let logits = match &self.head {
            Head::Bert {
                bert,
                pooler,
                classifier,
            } => {
                let hidden = bert.forward(&ids, &types, Some(&mask))?;
                let cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
                let pooled = pooler.forward(&cls)?.tanh()?;
                classifier.forward(&pooled)?
            }
            Head::XlmRoberta(model) => model.forward(&ids, &mask, &types)?,
        };
        let logits = logits.squeeze(1)?.to_dtype(DType::F32)?;
        let scores: Tensor = candle_nn::ops::sigmoid(&logits)?;
        Ok(scores.to_vec1::<f32>()?)
    }
}

impl Rerank for CrossEncoder {
    fn tokenize_pair(
        &self,
        query: &str,
        document: &str,
        truncate: bool,
    ) -> Result<Encoded, EngineError> {
        self.text.encode_pair(query, document, truncate)
    }

    fn score(&self, pairs: &[&Encoded]) -> Result<Vec<f32>, EngineError> {
        in_batches(pairs, self.batch_tokens, |batch| self.logits(batch))
    }

    fn max_tokens(&self) -> usize {
        self.text.max_len()
    }
}
