//! GGUF → Hugging Face folder: `config.json`, `tokenizer.json`, `tokenizer_config.json`,
//! `generation_config.json` and `model.safetensors` with every tensor dequantized to f32, so
//! transformers (and our safetensors path) load what the GGUF file holds.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Tensor};

use super::config::{Arch, LlmConfig, RopeStyle};
use super::gguf_tokenizer;
use super::validate::{check_tensors, read_gguf, Catalogue};
use super::weights::hf_name;
use crate::checks::{elem_count, ensure_memory};
use crate::error::{candle_message, EngineError};

/// What a conversion wrote.
#[derive(Debug)]
pub struct Converted {
    pub config: LlmConfig,
    pub tensors: usize,
    pub bytes: u64,
}

/// Converts `gguf` into the folder `out`, which must not exist or be empty.
pub fn gguf_to_safetensors(gguf: &Path, out: &Path) -> Result<Converted, EngineError> {
    let bad = |e: &dyn std::fmt::Display| EngineError::bad_file(gguf, e);
    let bad_reason = |reason: String| EngineError::bad_file(gguf, reason);
    if out.exists()
        && std::fs::read_dir(out)
            .map(|mut d| d.next().is_some())
            .unwrap_or(true)
    {
        return Err(EngineError::bad_file(out, "exists and is not empty"));
    }
    let mut file = std::fs::File::open(gguf).map_err(|e| bad(&format!("cannot open: {e}")))?;
    let size = file
        .metadata()
        .map_err(|e| bad(&format!("cannot open: {e}")))?
        .len();
    let content = read_gguf(&mut file, gguf)?;
    let (mut config, names) = LlmConfig::parse_gguf(&content, gguf)?;
    let catalogue = Catalogue::gguf(&content, size, gguf)?;
    check_tensors(&config, &names, &catalogue, None).map_err(bad_reason)?;
    // Every tensor is held as f32 until the safetensors file is written.
    let f32_bytes = content
        .tensor_infos
        .values()
        .filter_map(|t| elem_count(t.shape.dims()))
        .fold(0u64, |sum, n| sum.saturating_add(n.saturating_mul(4)));
    ensure_memory(f32_bytes, "the converted tensors")?;
    if content.tensor_infos.contains_key("rope_freqs.weight") {
        return Err(EngineError::Unsupported(
            "GGUF files with rope_freqs (Llama 3.1 RoPE scaling) cannot be converted yet".into(),
        ));
    }
    let (tokenizer, bos, eos) = gguf_tokenizer::from_gguf(&content)?;
    std::fs::create_dir_all(out).map_err(|e| EngineError::bad_file(out, e))?;
    let write = |name: &str, bytes: &[u8]| {
        std::fs::write(out.join(name), bytes).map_err(|e| EngineError::bad_file(out.join(name), e))
    };

    let mut tensors = HashMap::new();
    for name in content.tensor_infos.keys() {
        let tensor = content
            .tensor(&mut file, name, &Device::Cpu)
            .map_err(|e| bad(&format!("tensor {name}: {}", candle_message(&e))))?
            .dequantize(&Device::Cpu)?;
        let tensor = match (config.arch, name.rsplit('.').nth(1)) {
            (Arch::Llama, Some("attn_q")) => unpermute(&tensor, config.heads)?,
            (Arch::Llama, Some("attn_k")) => unpermute(&tensor, config.kv_heads)?,
            _ => tensor,
        };
        tensors.insert(hf_name(name), tensor);
    }
    let count = tensors.len();
    let weights = out.join("model.safetensors");
    candle_core::safetensors::save(&tensors, &weights)?;
    drop(tensors);

    // The converted q/k rows are in Hugging Face order again.
    config.rope_style = RopeStyle::Half;
    let json = |v: &serde_json::Value| serde_json::to_vec_pretty(v).unwrap_or_default();
    write("config.json", &json(&config.to_hf(bos, eos)))?;
    tokenizer
        .save(out.join("tokenizer.json"), false)
        .map_err(|e| EngineError::bad_file(out.join("tokenizer.json"), e))?;
    let token = |id: Option<u32>| id.and_then(|i| tokenizer.id_to_token(i));
    let template = content
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .cloned();
    write(
        "tokenizer_config.json",
        &json(&serde_json::json!({
            "tokenizer_class": "PreTrainedTokenizerFast",
            "bos_token": token(bos),
            "eos_token": token(eos),
            "add_bos_token": false,
            "add_prefix_space": false,
            "model_max_length": config.context_length,
            "chat_template": template,
        })),
    )?;
    write(
        "generation_config.json",
        &json(&serde_json::json!({"bos_token_id": bos, "eos_token_id": eos})),
    )?;
    let bytes = weights.metadata().map(|m| m.len()).unwrap_or(0);
    Ok(Converted {
        config,
        tensors: count,
        bytes,
    })
}

/// Undoes llama.cpp's q/k row permutation (`[heads, d/2, 2]` → `[heads, 2, d/2]`).
fn unpermute(w: &Tensor, heads: usize) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    w.reshape((heads, rows / heads / 2, 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))
}
