//! A Hugging Face tokenizer rebuilt from a GGUF file's metadata (vocabulary, merges, token
//! types), so a GGUF model needs no `tokenizer.json`. Byte-level BPE (`tokenizer.ggml.model` =
//! `gpt2`) with the pre-tokenizer its `tokenizer.ggml.pre` names, no prefix space (candle's own
//! helper adds one, which changes every token id), control tokens kept whole.

use candle_core::quantized::gguf_file::{Content, Value};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::unicode::NFC;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::EngineError;

/// Llama 3's split (`tokenizer.ggml.pre` = `llama-bpe`): numbers in groups of up to three.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split (`qwen2`): like Llama 3's, but every digit on its own.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// A regex split then byte-level mapping (without GPT-2's own regex), as the Hugging Face
/// `tokenizer.json` of these models has it.
fn split_then_bytes(pattern: &str) -> Result<PreTokenizerWrapper, EngineError> {
    let split = Split::new(
        SplitPattern::Regex(pattern.to_string()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| EngineError::Unsupported(format!("cannot build the pre-tokenizer: {e}")))?;
    Ok(Sequence::new(vec![
        split.into(),
        ByteLevel::new(false, true, false).into(),
    ])
    .into())
}

/// GGUF token types that must never be split: control (3) and user-defined (4).
const KEEP_WHOLE: [i32; 2] = [3, 4];

fn field<'a>(ct: &'a Content, key: &str) -> Result<&'a Value, EngineError> {
    ct.metadata.get(key).ok_or_else(|| {
        EngineError::Unsupported(format!(
            "the GGUF file has no {key} (no tokenizer in its metadata)"
        ))
    })
}

fn strings(ct: &Content, key: &str) -> Result<Vec<String>, EngineError> {
    let not_strings = || EngineError::Unsupported(format!("GGUF {key} must be a list of strings"));
    let Value::Array(items) = field(ct, key)? else {
        return Err(not_strings());
    };
    items
        .iter()
        .map(|v| match v {
            Value::String(s) => Ok(s.clone()),
            _ => Err(not_strings()),
        })
        .collect()
}

/// Builds the tokenizer; also returns the special token ids `(bos, eos)` if the file names them.
pub fn from_gguf(ct: &Content) -> Result<(Tokenizer, Option<u32>, Option<u32>), EngineError> {
    let kind = match field(ct, "tokenizer.ggml.model")? {
        Value::String(s) => s.chars().take(64).collect::<String>(),
        _ => String::new(),
    };
    if kind != "gpt2" {
        return Err(EngineError::Unsupported(format!(
            "GGUF tokenizer model {kind:?} is not supported yet (byte-level BPE, \"gpt2\", is)"
        )));
    }
    let pre = ct
        .metadata
        .get("tokenizer.ggml.pre")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_else(|| "default".into());
    let tokens = strings(ct, "tokenizer.ggml.tokens")?;
    let merges: Vec<(String, String)> = strings(ct, "tokenizer.ggml.merges")?
        .into_iter()
        .enumerate()
        .map(|(i, m)| match m.split_once(' ') {
            Some((a, b)) => Ok((a.to_string(), b.to_string())),
            None => Err(EngineError::Unsupported(format!(
                "GGUF tokenizer.ggml.merges entry {i} has no space"
            ))),
        })
        .collect::<Result<_, _>>()?;
    let types: Vec<i32> = match ct.metadata.get("tokenizer.ggml.token_type") {
        Some(Value::Array(v)) => v.iter().map(|t| t.to_i32().unwrap_or(1)).collect(),
        Some(_) => {
            return Err(EngineError::Unsupported(
                "GGUF tokenizer.ggml.token_type must be a list".into(),
            ))
        }
        None => vec![1; tokens.len()],
    };
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(|e| EngineError::Unsupported(format!("cannot build the BPE model: {e}")))?;
    let mut tokenizer = Tokenizer::new(bpe);
    let byte_level = ByteLevel::new(false, true, true);
    let pre_tokenizer: PreTokenizerWrapper = match pre.as_str() {
        // SmolLM: every digit on its own, then GPT-2's regex.
        "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
        "gpt2" | "gpt-2" | "default" => byte_level.into(),
        "llama-bpe" | "llama3" => split_then_bytes(LLAMA3_SPLIT)?,
        "qwen2" => {
            let _ = tokenizer.with_normalizer(Some(NFC));
            split_then_bytes(QWEN2_SPLIT)?
        }
        other => {
            let other: String = other.chars().take(64).collect();
            return Err(EngineError::Unsupported(format!(
                "GGUF pre-tokenizer {other:?} is not supported yet \
                 (supported: smollm, gpt2, llama-bpe, qwen2)"
            )));
        }
    };
    tokenizer.with_pre_tokenizer(Some(pre_tokenizer));
    tokenizer.with_decoder(Some(ByteLevelDecoder::default()));
    let special: Vec<AddedToken> = tokens
        .iter()
        .zip(&types)
        .filter(|(_, t)| KEEP_WHOLE.contains(t))
        .map(|(tok, _)| AddedToken::from(tok.clone(), true))
        .collect();
    tokenizer
        .add_special_tokens(special)
        .map_err(|e| EngineError::Unsupported(format!("cannot add the special tokens: {e}")))?;
    let id = |key: &str| ct.metadata.get(key).and_then(|v| v.to_u32().ok());
    Ok((
        tokenizer,
        id("tokenizer.ggml.bos_token_id"),
        id("tokenizer.ggml.eos_token_id"),
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::quantized::gguf_file::{Content, Value, VersionedMagic};

    use super::from_gguf;

    /// A GGUF tokenizer section: single characters plus merges that join digits and letters.
    fn content(pre: &str) -> Content {
        let tokens = ["1", "2", "3", "4", "12", "123", "a", "b", "ab", "Ġ", "Ġab"];
        let merges = ["1 2", "12 3", "a b", "Ġ ab"];
        let strings = |items: &[&str]| {
            Value::Array(items.iter().map(|t| Value::String(t.to_string())).collect())
        };
        let metadata = HashMap::from([
            (
                "tokenizer.ggml.model".to_string(),
                Value::String("gpt2".into()),
            ),
            ("tokenizer.ggml.pre".to_string(), Value::String(pre.into())),
            ("tokenizer.ggml.tokens".to_string(), strings(&tokens)),
            ("tokenizer.ggml.merges".to_string(), strings(&merges)),
        ]);
        Content {
            magic: VersionedMagic::GgufV3,
            metadata,
            tensor_infos: HashMap::new(),
            tensor_data_offset: 0,
        }
    }

    fn encode(pre: &str, text: &str) -> Vec<String> {
        let (tokenizer, _, _) = from_gguf(&content(pre)).unwrap();
        let encoding = tokenizer.encode(text, false).unwrap();
        encoding.get_tokens().to_vec()
    }

    #[test]
    fn llama3_groups_digits_by_three_and_qwen2_splits_every_digit() {
        assert_eq!(encode("llama-bpe", "1234 ab"), ["123", "4", "Ġab"]);
        assert_eq!(encode("qwen2", "1234 ab"), ["1", "2", "3", "4", "Ġab"]);
        assert_eq!(encode("smollm", "1234 ab"), ["1", "2", "3", "4", "Ġab"]);
        let err = from_gguf(&content("falcon")).err().unwrap();
        assert!(
            err.to_string().contains("\"falcon\" is not supported"),
            "{err}"
        );
    }
}
