//! Entry points for the fuzz targets (`fuzz/`, built with the `fuzzing` feature only). Each
//! runs what a model load runs on a hostile file, from memory, up to the point where the load
//! would start allocating weights: it returns the load's error or `Ok`, and must never panic,
//! hang or allocate beyond what the input's size justifies.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::checks::{open_safetensors, safetensors_shapes};
use crate::error::EngineError;
use crate::llm::config::LlmConfig;
use crate::llm::validate::{self, Catalogue};
use crate::llm::{gguf_tokenizer, ChatTemplate};
use crate::text::TextEncoder;

/// A GGUF file: the header read and checked, the config and tensors checked against each
/// other, the tokenizer built from its metadata and its chat template parsed.
pub fn gguf(bytes: &[u8]) -> Result<(), EngineError> {
    let path = Path::new("fuzz.gguf");
    let content = validate::read_gguf_from(&mut Cursor::new(bytes), bytes.len() as u64, path)?;
    let tokenizer = gguf_tokenizer::from_gguf(&content);
    let (config, names) = LlmConfig::parse_gguf(&content, path)?;
    let catalogue = Catalogue::gguf(&content, bytes.len() as u64, path)?;
    validate::check_model(&config, &names, &catalogue, None, true, path)?;
    let (tokenizer, _, _) = tokenizer?;
    tokenizer
        .encode("hello, fuzz", false)
        .map_err(|e| EngineError::bad_file(path, e))?;
    if let Some(source) = content
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
    {
        ChatTemplate::new(source.clone(), String::new(), String::new())?;
    }
    Ok(())
}

/// A safetensors file with the tiny Llama config below: opened as the loader opens it (a
/// memory map of a file, so the bytes are written to `scratch` first), every tensor's shape
/// read, then checked against the config.
pub fn safetensors(bytes: &[u8], scratch: &Path) -> Result<(), EngineError> {
    let file: PathBuf = scratch.join("model.safetensors");
    std::fs::write(&file, bytes).map_err(|e| EngineError::Internal(e.to_string()))?;
    let tensors = open_safetensors(std::slice::from_ref(&file))?;
    let shapes = safetensors_shapes(&tensors, &file)?;
    let config_path = Path::new("config.json");
    let (config, names) = LlmConfig::parse_hf(&tiny_llama_config(), config_path)?;
    validate::check_model(
        &config,
        &names,
        &Catalogue::safetensors(shapes),
        None,
        true,
        config_path,
    )
}

/// A `config.json` (any LLM architecture we run) parsed and checked.
pub fn llm_config(bytes: &[u8]) -> Result<(), EngineError> {
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| EngineError::bad_file("config.json", crate::checks::json_problem(&e)))?;
    LlmConfig::parse_hf(&value, Path::new("config.json")).map(|_| ())
}

/// A `tokenizer.json` loaded as an embedding model loads it, then used on `text`.
pub fn tokenizer(json: &[u8], text: &str) -> Result<(), EngineError> {
    let encoder = TextEncoder::from_json(json, Path::new("tokenizer.json"), 128, 1 << 20, 2)?;
    encoder.encode(text, true)?;
    encoder.encode_pair(text, "query", true)?;
    Ok(())
}

/// The config the safetensors target checks files against: 1 layer, hidden 8, 2 heads of 4
/// (1 KV head), FFN 16, 32 tokens (`fuzz/make_seeds.py` writes a file that matches it).
pub fn tiny_llama_config() -> Value {
    serde_json::json!({
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 8,
        "intermediate_size": 16,
        "num_attention_heads": 2,
        "num_key_value_heads": 1,
        "num_hidden_layers": 1,
        "vocab_size": 32,
        "max_position_embeddings": 64,
        "rms_norm_eps": 1e-5,
        "rope_theta": 10000.0,
        "tie_word_embeddings": true
    })
}
