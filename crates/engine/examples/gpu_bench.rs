//! The GPU check of `bench/gpu/run.sh`: the portable (GPU) path against the CPU kernels, and its
//! speed against the memory-bandwidth and compute rooflines. One JSON object per line.
//!
//! ```text
//! gpu_bench embed  MODEL_DIR [--device cuda:0] [--sentences FIXTURE.json] [--batch 256] [--seq 128]
//! gpu_bench llm    MODEL_DIR [--device cuda:0] [--dtype bf16] [--requantize q8_0] [--prompt 128]
//!                  [--gen 128] [--streams 8] [--check-tokens 32]
//! gpu_bench tiny   FIXTURE_DIR [--device cuda:0]    (tests/fixtures/tiny_llm/<name>: transformers' logits)
//! gpu_bench pack-minilm SRC DST                     (a model folder with f16 weights, to carry)
//! ```
//! Common flags: `--bandwidth-gbs` (4300, an H200's copy bandwidth) and `--tflops` (737, an
//! H200's measured bf16 matmul) for the rooflines. Built by `scripts/build-cuda.sh --bench`;
//! runs on a CPU build too (`--device cpu`, the portable path on the CPU).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::quantized::GgmlDType;
use candle_core::{DType, Device, Tensor};
use serde_json::{json, Value};
use xi_engine::embedding::EmbedInput;
use xi_engine::llm::{Backend, GenerationParams, Llm, LlmModel, LoadOptions, Sequence};
use xi_engine::{Embed, EmbeddingModel, Encoded, Placement};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

struct Flags {
    positional: Vec<String>,
    named: HashMap<String, String>,
}

impl Flags {
    fn parse() -> Flags {
        let mut positional = Vec::new();
        let mut named = HashMap::new();
        let mut args = std::env::args().skip(1);
        while let Some(a) = args.next() {
            match a.strip_prefix("--") {
                Some(name) => {
                    named.insert(name.to_string(), args.next().unwrap_or_default());
                }
                None => positional.push(a),
            }
        }
        Flags { positional, named }
    }

    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> T {
        self.named
            .get(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    fn text(&self, name: &str, default: &str) -> String {
        self.named
            .get(name)
            .cloned()
            .unwrap_or_else(|| default.into())
    }
}

fn dtype(name: &str) -> Result<DType> {
    xi_api::launch::Dtype::parse(name)
        .map(xi_engine::placement::dtype_of)
        .ok_or_else(|| format!("unknown dtype {name}").into())
}

/// `cpu` (the portable path on the CPU) or `cuda:N`, in `dtype`.
fn placement(device: &str, dtype: DType) -> Result<Placement> {
    match device.strip_prefix("cuda:") {
        Some(n) => Ok(Placement::cuda(n.parse()?, dtype)?),
        None if device == "cuda" => Ok(Placement::cuda(0, dtype)?),
        None => Ok(Placement::cpu_portable(dtype)),
    }
}

/// Deterministic token ids in `1..vocab`.
fn tokens(count: usize, vocab: usize, seed: u64) -> Vec<u32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..count)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            1 + (state % (vocab as u64 - 1)) as u32
        })
        .collect()
}

fn config(dir: &Path) -> Result<Value> {
    Ok(serde_json::from_str(&std::fs::read_to_string(
        dir.join("config.json"),
    )?)?)
}

fn usize_of(config: &Value, key: &str) -> usize {
    config[key].as_u64().unwrap_or(0) as usize
}

fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    a.iter()
        .flatten()
        .zip(b.iter().flatten())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn embed(flags: &Flags) -> Result<()> {
    let dir = PathBuf::from(&flags.positional[1]);
    let device = flags.text("device", "cuda:0");
    let c = config(&dir)?;
    let (hidden, layers, inter) = (
        usize_of(&c, "hidden_size"),
        usize_of(&c, "num_hidden_layers"),
        usize_of(&c, "intermediate_size"),
    );
    let vocab = usize_of(&c, "vocab_size");
    let cpu = EmbeddingModel::load(&dir)?;
    // Correctness: the fixture's sentences if given, else random token sequences.
    let inputs: Vec<EmbedInput> = match flags.named.get("sentences") {
        Some(path) => {
            let f: Value = serde_json::from_str(&std::fs::read_to_string(path)?)?;
            f["sentences"]
                .as_array()
                .ok_or("the fixture has no sentences")?
                .iter()
                .filter_map(|s| s.as_str().map(|s| EmbedInput::Text(s.into())))
                .collect()
        }
        None => (0..16)
            .map(|i| EmbedInput::Tokens(tokens(8 + 8 * i, vocab, i as u64)))
            .collect(),
    };
    let encode = |m: &EmbeddingModel, inputs: &[EmbedInput]| -> Result<Vec<Encoded>> {
        Ok(inputs
            .iter()
            .map(|i| m.tokenize(i, true))
            .collect::<std::result::Result<_, _>>()?)
    };
    let check = encode(&cpu, &inputs)?;
    let want = cpu.embed(&check.iter().collect::<Vec<_>>())?;
    let (batch, seq) = (flags.get("batch", 256usize), flags.get("seq", 128usize));
    let load: Vec<EmbedInput> = (0..batch)
        .map(|i| EmbedInput::Tokens(tokens(seq, vocab, 1000 + i as u64)))
        .collect();
    // Multiply-adds per token: the four attention projections, the two FFN matrices, and the
    // attention products over `seq` positions.
    let flops_per_token = 2.0
        * layers as f64
        * (4.0 * (hidden * hidden) as f64
            + 2.0 * (hidden * inter) as f64
            + 2.0 * (seq * hidden) as f64);
    let tflops_peak = flags.get("tflops", 737.0f64);
    for name in flags.text("dtypes", "f16,bf16,f32").split(',') {
        let dt = dtype(name)?;
        let gpu = EmbeddingModel::load_on(&dir, &placement(&device, dt)?)?
            .with_batch_tokens(flags.get("batch-tokens", 32_768usize));
        let got = gpu.embed(&encode(&gpu, &inputs)?.iter().collect::<Vec<_>>())?;
        let diff = max_diff(&got, &want);
        let encoded = encode(&gpu, &load)?;
        let refs: Vec<&Encoded> = encoded.iter().collect();
        gpu.embed(&refs)?; // warm-up: the first use of each kernel JIT-compiles
        let mut best = f64::MAX;
        for _ in 0..flags.get("repeat", 5usize) {
            let started = Instant::now();
            gpu.embed(&refs)?;
            best = best.min(started.elapsed().as_secs_f64());
        }
        let tflops = flops_per_token * (batch * seq) as f64 / best / 1e12;
        println!(
            "{}",
            json!({
                "check": "embed", "model": dir.file_name().map(|n| n.to_string_lossy()),
                "device": device, "dtype": name, "inputs": inputs.len(),
                "max_abs_diff_vs_cpu_f32": diff,
                "batch": batch, "seq": seq,
                "embeddings_per_s": batch as f64 / best,
                "tokens_per_s": (batch * seq) as f64 / best,
                "tflops": tflops, "tflops_roofline": tflops_peak,
                "of_compute_roofline": tflops / tflops_peak,
            })
        );
    }
    Ok(())
}

/// Never stops early: what is measured is `max_tokens`.
fn params(max_tokens: usize) -> GenerationParams {
    GenerationParams {
        max_tokens,
        ignore_eos: true,
        ..GenerationParams::GREEDY
    }
}

fn requantize(flags: &Flags) -> Result<Option<GgmlDType>> {
    Ok(
        match flags
            .text("requantize", "none")
            .to_ascii_lowercase()
            .as_str()
        {
            "none" => None,
            "q8_0" => Some(GgmlDType::Q8_0),
            "q4_0" => Some(GgmlDType::Q4_0),
            "q4k" | "q4_k" => Some(GgmlDType::Q4K),
            other => return Err(format!("unknown requantize {other}").into()),
        },
    )
}

/// Bytes of weights one decode step reads: every matrix once (the embedding table only for the
/// rows it looks up, negligible), at `bytes_per_weight`.
fn decode_bytes(c: &Value, bytes_per_weight: f64) -> f64 {
    let hidden = usize_of(c, "hidden_size") as f64;
    let heads = usize_of(c, "num_attention_heads") as f64;
    let kv = c["num_key_value_heads"]
        .as_u64()
        .map_or(heads, |v| v as f64);
    let head_dim = c["head_dim"].as_u64().map_or(hidden / heads, |v| v as f64);
    let inter = usize_of(c, "intermediate_size") as f64;
    let layer = hidden * head_dim * (2.0 * heads + 2.0 * kv) + 3.0 * hidden * inter;
    let lm_head = usize_of(c, "vocab_size") as f64 * hidden;
    (usize_of(c, "num_hidden_layers") as f64 * layer + lm_head) * bytes_per_weight
}

/// Runs `streams` sequences of `prompt` to `gen` tokens together: (prefill s, decode s, tokens).
fn run(model: &LlmModel, prompt: &[u32], gen: usize, streams: usize) -> Result<(f64, f64, usize)> {
    xi_engine::with_llm!(model, m => run_on(m, prompt, gen, streams))
}

fn run_on<B: Backend>(
    model: &Llm<B>,
    prompt: &[u32],
    gen: usize,
    streams: usize,
) -> Result<(f64, f64, usize)> {
    let mut seqs: Vec<Sequence<B>> = (0..streams)
        .map(|_| model.start(prompt.to_vec(), params(gen)))
        .collect::<std::result::Result<_, _>>()?;
    let started = Instant::now();
    model.step(&mut seqs.iter_mut().collect::<Vec<_>>(), usize::MAX)?;
    let prefill = started.elapsed().as_secs_f64();
    let started = Instant::now();
    loop {
        let mut live: Vec<&mut Sequence<B>> =
            seqs.iter_mut().filter(|s| s.finished().is_none()).collect();
        if live.is_empty() {
            break;
        }
        model.step(&mut live, usize::MAX)?;
    }
    let decoded = seqs
        .iter()
        .map(|s| s.completion_tokens().saturating_sub(1))
        .sum();
    Ok((prefill, started.elapsed().as_secs_f64(), decoded))
}

fn llm(flags: &Flags) -> Result<()> {
    let dir = PathBuf::from(&flags.positional[1]);
    let device = flags.text("device", "cuda:0");
    let c = config(&dir)?;
    let vocab = usize_of(&c, "vocab_size");
    let prompt = tokens(flags.get("prompt", 128usize), vocab, 7);
    let load = |placement: Placement, requantize| -> Result<LlmModel> {
        let options = LoadOptions {
            requantize,
            placement,
            ..Default::default()
        };
        Ok(LlmModel::load(&dir, &options, &mut |_| {})?)
    };
    // Greedy tokens in f32: the CPU kernels against the GPU.
    let check = flags.get("check-tokens", 32usize);
    if check > 0 {
        let short = &prompt[..prompt.len().min(32)];
        let greedy = GenerationParams {
            max_tokens: check,
            ignore_eos: true,
            ..GenerationParams::GREEDY
        };
        let cpu = load(Placement::cpu(), None)?;
        let want = cpu.generate(short, &greedy, &mut |_| true)?.token_ids;
        let want_logits = cpu.next_token_logits(short)?;
        drop(cpu);
        let gpu = load(placement(&device, DType::F32)?, None)?;
        let got = gpu.generate(short, &greedy, &mut |_| true)?.token_ids;
        let got_logits = gpu.next_token_logits(short)?;
        let same = want.iter().zip(&got).take_while(|(a, b)| a == b).count();
        println!(
            "{}",
            json!({
                "check": "llm-greedy-f32", "model": dir.file_name().map(|n| n.to_string_lossy()),
                "device": device, "tokens": want.len(), "equal_prefix": same,
                "equal": want == got,
                "max_abs_logit_diff": max_diff(&[want_logits], &[got_logits]),
            })
        );
    }
    let dt = dtype(&flags.text("dtype", "bf16"))?;
    let requantize = requantize(flags)?;
    let bytes_per_weight = match requantize {
        Some(GgmlDType::Q8_0) => 34.0 / 32.0,
        Some(GgmlDType::Q4_0) => 18.0 / 32.0,
        Some(GgmlDType::Q4K) => 144.0 / 256.0,
        _ => dt.size_in_bytes() as f64,
    };
    let model = load(placement(&device, dt)?, requantize)?;
    let (gen, streams) = (flags.get("gen", 128usize), flags.get("streams", 8usize));
    run(&model, &prompt, 8, 1)?; // warm-up: the first use of each kernel JIT-compiles
    let mut best = (0f64, 0f64, 0f64);
    for _ in 0..flags.get("repeat", 3usize) {
        let (prefill, decode, decoded) = run(&model, &prompt, gen, 1)?;
        best.0 = best.0.max(prompt.len() as f64 / prefill);
        best.1 = best.1.max(decoded as f64 / decode);
        let (_, decode, decoded) = run(&model, &prompt, gen, streams)?;
        best.2 = best.2.max(decoded as f64 / decode);
    }
    let bandwidth = flags.get("bandwidth-gbs", 4300.0f64) * 1e9;
    let bytes = decode_bytes(&c, bytes_per_weight);
    let roofline = bandwidth / bytes;
    println!(
        "{}",
        json!({
            "check": "llm-speed", "model": dir.file_name().map(|n| n.to_string_lossy()),
            "device": device, "dtype": dt.as_str(),
            "requantize": requantize.map(|d| format!("{d:?}")),
            "prompt_tokens": prompt.len(), "gen_tokens": gen,
            "prefill_tok_s": best.0,
            "decode_tok_s": best.1,
            "weight_gb_per_token": bytes / 1e9,
            "decode_roofline_tok_s": roofline,
            "of_bandwidth_roofline": best.1 / roofline,
            "streams": streams, "decode_tok_s_streams": best.2,
            "streams_roofline_tok_s": roofline * streams as f64,
        })
    );
    Ok(())
}

/// A tiny reference model of `crates/engine/tests/fixtures/tiny_llm`: our logits and greedy
/// tokens against transformers'.
fn tiny(flags: &Flags) -> Result<()> {
    let dir = PathBuf::from(&flags.positional[1]);
    let device = flags.text("device", "cuda:0");
    let options = LoadOptions {
        placement: placement(&device, DType::F32)?,
        ..Default::default()
    };
    let model = LlmModel::load(&dir, &options, &mut |_| {})?;
    let expected: Value = serde_json::from_slice(&std::fs::read(dir.join("expected.json"))?)?;
    for case in expected["cases"].as_array().ok_or("no cases")? {
        let prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone())?;
        let want: Vec<f32> = serde_json::from_value(case["last_logits"].clone())?;
        let ids: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone())?;
        let got = model.next_token_logits(&prompt)?;
        let greedy = GenerationParams {
            max_tokens: ids.len(),
            ..GenerationParams::GREEDY
        };
        let out = model.generate(&prompt, &greedy, &mut |_| true)?;
        println!(
            "{}",
            json!({
                "check": "tiny-vs-transformers", "model": dir.file_name().map(|n| n.to_string_lossy()),
                "device": device, "max_abs_logit_diff": max_diff(&[got], &[want]),
                "greedy_equal": out.token_ids == ids,
            })
        );
    }
    Ok(())
}

/// Copies a sentence-transformers folder with its weights converted to f16 (half the bytes, so
/// a real model fits the GPU host's carry limit).
fn pack_minilm(flags: &Flags) -> Result<()> {
    let (src, dst) = (
        PathBuf::from(&flags.positional[1]),
        PathBuf::from(&flags.positional[2]),
    );
    std::fs::create_dir_all(dst.join("1_Pooling"))?;
    for name in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "modules.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
    ] {
        if src.join(name).is_file() {
            std::fs::copy(src.join(name), dst.join(name))?;
        }
    }
    let weights = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu)?;
    let half: HashMap<String, Tensor> = weights
        .into_iter()
        .map(|(k, v)| {
            let v = if v.dtype() == DType::F32 {
                v.to_dtype(DType::F16)?
            } else {
                v
            };
            Ok((k, v))
        })
        .collect::<candle_core::Result<_>>()?;
    candle_core::safetensors::save(&half, dst.join("model.safetensors"))?;
    Ok(())
}

fn main() -> Result<()> {
    let flags = Flags::parse();
    let enough = |n: usize| flags.positional.len() > n;
    match flags.positional.first().map(String::as_str) {
        Some("embed") if enough(1) => embed(&flags),
        Some("llm") if enough(1) => llm(&flags),
        Some("tiny") if enough(1) => tiny(&flags),
        Some("pack-minilm") if enough(2) => pack_minilm(&flags),
        _ => Err(
            "usage: gpu_bench embed|llm|tiny DIR [flags], or pack-minilm SRC DST (see the source)"
                .into(),
        ),
    }
}
