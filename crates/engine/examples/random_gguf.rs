//! Writes a llama-architecture GGUF with random weights in the shape of a real model, for speed
//! measurements only (its output is noise). The tokenizer and chat template are copied from
//! another GGUF file (e.g. SmolLM2's), so the vocabulary is that file's.
//!
//! `cargo run --release -p xi-engine --example random_gguf -- TOKENIZER.gguf SHAPE DTYPE OUT.gguf`
//! with SHAPE one of `qwen2.5-0.5b`, `llama-3.2-1b`, `smollm2-1.7b` and DTYPE `q4_1` or `q8_0`.

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};

/// hidden, intermediate, layers, heads, kv heads.
fn shape(name: &str) -> (usize, usize, usize, usize, usize) {
    match name {
        "qwen2.5-0.5b" => (896, 4864, 24, 14, 2),
        "llama-3.2-1b" => (2048, 8192, 16, 32, 8),
        "smollm2-1.7b" => (2048, 8192, 24, 32, 32),
        other => panic!("unknown shape {other}"),
    }
}

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tokenizer, shape_name, dtype, out] = args.as_slice() else {
        panic!("usage: random_gguf TOKENIZER.gguf SHAPE DTYPE OUT.gguf");
    };
    let dtype = match dtype.as_str() {
        "q4_1" => GgmlDType::Q4_1,
        "q8_0" => GgmlDType::Q8_0,
        other => panic!("dtype {other}: q4_1 or q8_0"),
    };
    let (hidden, inter, layers, heads, kv_heads) = shape(shape_name);
    let mut file = std::fs::File::open(tokenizer)?;
    let source = gguf_file::Content::read(&mut file)?;
    let vocab = source
        .metadata
        .get("tokenizer.ggml.tokens")
        .map(|v| v.to_vec().map(|t| t.len()).unwrap_or(0))
        .unwrap_or(0);
    let mut metadata: Vec<(String, gguf_file::Value)> = source
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let u32v = |v: usize| gguf_file::Value::U32(v as u32);
    for (k, v) in [
        (
            "general.architecture",
            gguf_file::Value::String("llama".into()),
        ),
        ("llama.embedding_length", u32v(hidden)),
        ("llama.feed_forward_length", u32v(inter)),
        ("llama.block_count", u32v(layers)),
        ("llama.attention.head_count", u32v(heads)),
        ("llama.attention.head_count_kv", u32v(kv_heads)),
        ("llama.context_length", u32v(4096)),
        (
            "llama.attention.layer_norm_rms_epsilon",
            gguf_file::Value::F32(1e-5),
        ),
        ("llama.rope.freq_base", gguf_file::Value::F32(10_000.0)),
    ] {
        metadata.push((k.to_string(), v));
    }
    let head_dim = hidden / heads;
    let random = |rows: usize, cols: usize| -> candle_core::Result<QTensor> {
        let t = Tensor::randn(0f32, 0.02, (rows, cols), &Device::Cpu)?;
        QTensor::quantize(&t, dtype)
    };
    let ones = |n: usize| {
        QTensor::quantize(
            &Tensor::ones(n, candle_core::DType::F32, &Device::Cpu)?,
            GgmlDType::F32,
        )
    };
    let mut tensors: Vec<(String, QTensor)> = vec![
        ("token_embd.weight".into(), random(vocab, hidden)?),
        ("output_norm.weight".into(), ones(hidden)?),
    ];
    for i in 0..layers {
        let p = format!("blk.{i}");
        tensors.push((format!("{p}.attn_norm.weight"), ones(hidden)?));
        tensors.push((format!("{p}.ffn_norm.weight"), ones(hidden)?));
        tensors.push((
            format!("{p}.attn_q.weight"),
            random(heads * head_dim, hidden)?,
        ));
        tensors.push((
            format!("{p}.attn_k.weight"),
            random(kv_heads * head_dim, hidden)?,
        ));
        tensors.push((
            format!("{p}.attn_v.weight"),
            random(kv_heads * head_dim, hidden)?,
        ));
        tensors.push((
            format!("{p}.attn_output.weight"),
            random(hidden, heads * head_dim)?,
        ));
        tensors.push((format!("{p}.ffn_gate.weight"), random(inter, hidden)?));
        tensors.push((format!("{p}.ffn_up.weight"), random(inter, hidden)?));
        tensors.push((format!("{p}.ffn_down.weight"), random(hidden, inter)?));
        eprint!("\rlayer {}/{layers}", i + 1);
    }
    eprintln!();
    let meta: Vec<(&str, &gguf_file::Value)> =
        metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut writer = std::io::BufWriter::new(std::fs::File::create(out)?);
    gguf_file::write(&mut writer, &meta, &refs)?;
    eprintln!("wrote {out}");
    Ok(())
}
