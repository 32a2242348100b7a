//! Tokenization with the model's real maximum length.
//!
//! The tokenizer's own padding is switched off (some `tokenizer.json` files pad every input to
//! a fixed 128): sequences stay unpadded until a batch is formed, then padded to the longest
//! sequence in that batch.

use std::path::Path;

use candle_core::{Device, Tensor};
use tokenizers::{Tokenizer, TruncationParams, TruncationStrategy};

use crate::checks::tokenizer_from_json;
use crate::error::EngineError;

/// One tokenized input, unpadded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<u32>,
    pub type_ids: Vec<u32>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

pub struct TextEncoder {
    truncating: Tokenizer,
    whole: Tokenizer,
    max_len: usize,
    vocab_size: usize,
    /// The model knows a single segment id: pairs get type id 0 throughout (RoBERTa style),
    /// whatever the tokenizer says.
    single_segment: bool,
}

impl TextEncoder {
    pub fn load(
        path: &Path,
        max_len: usize,
        vocab_size: usize,
        type_vocab_size: usize,
    ) -> Result<TextEncoder, EngineError> {
        let json = std::fs::read(path)
            .map_err(|e| EngineError::bad_file(path, format!("cannot read: {e}")))?;
        Self::from_json(&json, path, max_len, vocab_size, type_vocab_size)
    }

    /// [`TextEncoder::load`] of a `tokenizer.json` already read; `path` names it in errors.
    pub fn from_json(
        json: &[u8],
        path: &Path,
        max_len: usize,
        vocab_size: usize,
        type_vocab_size: usize,
    ) -> Result<TextEncoder, EngineError> {
        let mut whole = tokenizer_from_json(json, path)?;
        whole.with_padding(None);
        whole
            .with_truncation(None)
            .map_err(|e| EngineError::bad_file(path, e))?;
        let mut truncating = whole.clone();
        truncating
            .with_truncation(Some(TruncationParams {
                max_length: max_len,
                strategy: TruncationStrategy::LongestFirst,
                ..Default::default()
            }))
            .map_err(|e| EngineError::bad_file(path, e))?;
        Ok(TextEncoder {
            truncating,
            whole,
            max_len,
            vocab_size,
            single_segment: type_vocab_size <= 1,
        })
    }

    pub fn max_len(&self) -> usize {
        self.max_len
    }

    fn finish(
        &self,
        encoding: tokenizers::Encoding,
        truncate: bool,
    ) -> Result<Encoded, EngineError> {
        if !truncate && encoding.len() > self.max_len {
            return Err(EngineError::InvalidInput(format!(
                "input has {} tokens but the model accepts at most {}; shorten it or allow truncation",
                encoding.len(),
                self.max_len
            )));
        }
        let type_ids = if self.single_segment {
            vec![0; encoding.len()]
        } else {
            encoding.get_type_ids().to_vec()
        };
        Ok(Encoded {
            ids: encoding.get_ids().to_vec(),
            type_ids,
        })
    }

    fn tokenizer(&self, truncate: bool) -> &Tokenizer {
        if truncate {
            &self.truncating
        } else {
            &self.whole
        }
    }

    pub fn encode(&self, text: &str, truncate: bool) -> Result<Encoded, EngineError> {
        let encoding = self
            .tokenizer(truncate)
            .encode(text, true)
            .map_err(|e| EngineError::InvalidInput(format!("cannot tokenize the input: {e}")))?;
        self.finish(encoding, truncate)
    }

    pub fn encode_pair(
        &self,
        first: &str,
        second: &str,
        truncate: bool,
    ) -> Result<Encoded, EngineError> {
        let encoding = self
            .tokenizer(truncate)
            .encode((first, second), true)
            .map_err(|e| EngineError::InvalidInput(format!("cannot tokenize the input: {e}")))?;
        self.finish(encoding, truncate)
    }

    /// Token ids given by the client: checked against the vocabulary and the length limit.
    pub fn from_ids(&self, ids: &[u32], truncate: bool) -> Result<Encoded, EngineError> {
        if ids.is_empty() {
            return Err(EngineError::InvalidInput(
                "a list of token ids is empty".into(),
            ));
        }
        if let Some(bad) = ids.iter().find(|id| **id as usize >= self.vocab_size) {
            return Err(EngineError::InvalidInput(format!(
                "token id {bad} is outside the vocabulary (size {})",
                self.vocab_size
            )));
        }
        if ids.len() > self.max_len && !truncate {
            return Err(EngineError::InvalidInput(format!(
                "input has {} tokens but the model accepts at most {}",
                ids.len(),
                self.max_len
            )));
        }
        let ids: Vec<u32> = ids.iter().take(self.max_len).copied().collect();
        Ok(Encoded {
            type_ids: vec![0; ids.len()],
            ids,
        })
    }
}

/// A batch padded to its longest member: `(ids, type_ids, mask)`, each `[batch, len]` u32.
pub fn pad_batch(
    batch: &[&Encoded],
    pad_id: u32,
    device: &Device,
) -> Result<(Tensor, Tensor, Tensor), EngineError> {
    let len = batch.iter().map(|e| e.len()).max().unwrap_or(0).max(1);
    let mut ids = Vec::with_capacity(batch.len() * len);
    let mut types = Vec::with_capacity(batch.len() * len);
    let mut mask = Vec::with_capacity(batch.len() * len);
    for seq in batch {
        let pad = len - seq.len();
        ids.extend_from_slice(&seq.ids);
        ids.extend(std::iter::repeat_n(pad_id, pad));
        types.extend_from_slice(&seq.type_ids);
        types.extend(std::iter::repeat_n(0, pad));
        mask.extend(std::iter::repeat_n(1u32, seq.len()));
        mask.extend(std::iter::repeat_n(0u32, pad));
    }
    let shape = (batch.len(), len);
    Ok((
        Tensor::from_vec(ids, shape, device)?,
        Tensor::from_vec(types, shape, device)?,
        Tensor::from_vec(mask, shape, device)?,
    ))
}

/// Splits sequence indices, sorted by length, into batches whose padded size stays within
/// `budget` tokens (a single longer sequence still gets a batch of its own).
pub fn plan_batches(lengths: &[usize], budget: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|i| lengths[*i]);
    let mut batches: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    for index in order {
        // Sorted ascending, so this sequence is the longest of the batch once added.
        let padded = (current.len() + 1) * lengths[index].max(1);
        if !current.is_empty() && padded > budget {
            batches.push(std::mem::take(&mut current));
        }
        current.push(index);
    }
    if !current.is_empty() {
        batches.push(current);
    }
    batches
}

/// Runs `compute` over `inputs` in the batches of [`plan_batches`] and returns its outputs in
/// input order.
pub fn in_batches<T: Default + Clone>(
    inputs: &[&Encoded],
    budget: usize,
    mut compute: impl FnMut(&[&Encoded]) -> Result<Vec<T>, EngineError>,
) -> Result<Vec<T>, EngineError> {
    let lengths: Vec<usize> = inputs.iter().map(|e| e.len()).collect();
    let mut out = vec![T::default(); inputs.len()];
    for batch in plan_batches(&lengths, budget) {
        let seqs: Vec<&Encoded> = batch.iter().map(|i| inputs[*i]).collect();
        for (index, value) in batch.iter().zip(compute(&seqs)?) {
            out[*index] = value;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::plan_batches;

    #[test]
    fn batches_respect_the_budget_and_cover_every_sequence() {
        let lengths = [5, 100, 7, 3, 50, 8];
        let batches = plan_batches(&lengths, 120);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3, 4, 5]);
        for batch in &batches {
            let longest = batch.iter().map(|i| lengths[*i]).max().unwrap();
            assert!(
                batch.len() == 1 || batch.len() * longest <= 120,
                "{batch:?}"
            );
        }
    }
}
