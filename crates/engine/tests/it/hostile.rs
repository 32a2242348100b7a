//! Hostile model files: one header field or config value set to kill the process (a giant
//! allocation, a division by zero) or to make a model load that cannot serve. Each must be
//! refused quickly with a client error that names the field, and no error may echo file
//! content or carry a backtrace. The files are built here from tiny models, no download.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};
use serde_json::json;
use xi_engine::embedding::EmbedInput;
use xi_engine::llm::convert::gguf_to_safetensors;
use xi_engine::llm::{LlmModel, LoadOptions};
use xi_engine::{CrossEncoder, Embed, EmbeddingModel, EngineError};

use crate::support::{copy_model, fixture};

/// Loads of hostile files must fail fast: no giant allocation, no reading beyond the file.
const QUICK: Duration = Duration::from_secs(5);

/// Asserts a quick client error holding every needle; returns its text.
fn refused<T>(
    what: &str,
    load: impl FnOnce() -> Result<T, EngineError>,
    needles: &[&str],
) -> String {
    let started = Instant::now();
    let result = load();
    let took = started.elapsed();
    let err = match result {
        Ok(_) => panic!("{what}: loaded"),
        Err(e) => e,
    };
    let text = err.to_string();
    eprintln!("{what}: {text}");
    assert!(err.is_client_error(), "{what}: not a client error: {text}");
    assert!(took < QUICK, "{what}: took {took:?}");
    for needle in needles {
        assert!(
            text.contains(needle),
            "{what}: {text:?} does not say {needle:?}"
        );
    }
    assert!(!text.contains("stack backtrace"), "{what}: {text}");
    text
}

// --- GGUF -------------------------------------------------------------------------------

const HIDDEN: usize = 32;
const HEADS: usize = 4;
const KV_HEADS: usize = 2;
const HEAD_DIM: usize = 8;
const FFN: usize = 64;
const LAYERS: usize = 2;

/// The tokenizer of the tiny GGUF (29 tokens): a few byte-level tokens, one merge, one control
/// token.
fn vocabulary() -> Vec<String> {
    let mut tokens: Vec<String> = ["a", "b", "ab", "Ġ", "<|im_end|>"]
        .iter()
        .map(|t| t.to_string())
        .collect();
    tokens.extend(('c'..='z').map(|c| c.to_string()));
    tokens
}

type Metadata = Vec<(String, Value)>;
type Tensors = Vec<(String, QTensor)>;

fn tiny_gguf_parts() -> (Metadata, Tensors) {
    let tokens = vocabulary();
    let vocab = tokens.len();
    let mut types = vec![Value::I32(1); vocab];
    types[4] = Value::I32(3);
    let u32v = |v: usize| Value::U32(v as u32);
    let metadata: Metadata = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        ("llama.embedding_length".into(), u32v(HIDDEN)),
        ("llama.feed_forward_length".into(), u32v(FFN)),
        ("llama.block_count".into(), u32v(LAYERS)),
        ("llama.attention.head_count".into(), u32v(HEADS)),
        ("llama.attention.head_count_kv".into(), u32v(KV_HEADS)),
        ("llama.context_length".into(), u32v(256)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(1e-5),
        ),
        ("llama.rope.freq_base".into(), Value::F32(10_000.0)),
        ("tokenizer.ggml.model".into(), Value::String("gpt2".into())),
        ("tokenizer.ggml.pre".into(), Value::String("default".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(vec![Value::String("a b".into())]),
        ),
        ("tokenizer.ggml.token_type".into(), Value::Array(types)),
        ("tokenizer.ggml.eos_token_id".into(), Value::U32(4)),
    ];
    let random = |shape: &[usize]| {
        let t = (Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap() * 0.05).unwrap();
        QTensor::quantize(&t, GgmlDType::F32).unwrap()
    };
    let ones = |n: usize| {
        QTensor::quantize(
            &Tensor::ones(n, DType::F32, &Device::Cpu).unwrap(),
            GgmlDType::F32,
        )
        .unwrap()
    };
    let mut tensors: Tensors = vec![
        ("token_embd.weight".into(), random(&[vocab, HIDDEN])),
        ("output_norm.weight".into(), ones(HIDDEN)),
    ];
    for i in 0..LAYERS {
        let p = format!("blk.{i}");
        tensors.push((format!("{p}.attn_norm.weight"), ones(HIDDEN)));
        tensors.push((format!("{p}.ffn_norm.weight"), ones(HIDDEN)));
        let (q, kv) = (HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
        tensors.push((format!("{p}.attn_q.weight"), random(&[q, HIDDEN])));
        tensors.push((format!("{p}.attn_k.weight"), random(&[kv, HIDDEN])));
        tensors.push((format!("{p}.attn_v.weight"), random(&[kv, HIDDEN])));
        tensors.push((format!("{p}.attn_output.weight"), random(&[HIDDEN, q])));
        tensors.push((format!("{p}.ffn_gate.weight"), random(&[FFN, HIDDEN])));
        tensors.push((format!("{p}.ffn_up.weight"), random(&[FFN, HIDDEN])));
        tensors.push((format!("{p}.ffn_down.weight"), random(&[HIDDEN, FFN])));
    }
    (metadata, tensors)
}

/// Writes the tiny GGUF after `edit`, into a new folder; returns the folder and the file.
fn gguf_with(edit: impl FnOnce(&mut Metadata, &mut Tensors)) -> (tempfile::TempDir, PathBuf) {
    let (mut metadata, mut tensors) = tiny_gguf_parts();
    edit(&mut metadata, &mut tensors);
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("model.gguf");
    let meta: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut file = std::fs::File::create(&path).unwrap();
    gguf_file::write(&mut file, &meta, &refs).unwrap();
    (dir, path)
}

/// Sets (or adds) one metadata key.
fn set(key: &str, value: Value) -> impl FnOnce(&mut Metadata, &mut Tensors) {
    let key = key.to_string();
    move |metadata, _| {
        metadata.retain(|(k, _)| *k != key);
        metadata.push((key, value));
    }
}

fn load_gguf(path: &Path) -> Result<LlmModel, EngineError> {
    LlmModel::load(path, &LoadOptions::default(), &mut |_| {})
}

/// Rewrites the dimensions a GGUF file declares for tensor `name` (in the file's order:
/// columns first), leaving everything else as it was.
fn patch_dims(path: &Path, name: &str, dims: &[u64]) {
    let mut bytes = std::fs::read(path).unwrap();
    let mut key = (name.len() as u64).to_le_bytes().to_vec();
    key.extend_from_slice(name.as_bytes());
    let at = bytes
        .windows(key.len())
        .position(|w| w == key.as_slice())
        .expect("tensor info");
    let n_dims_at = at + key.len();
    let n_dims = u32::from_le_bytes(bytes[n_dims_at..n_dims_at + 4].try_into().unwrap());
    assert_eq!(n_dims as usize, dims.len());
    for (i, d) in dims.iter().enumerate() {
        let o = n_dims_at + 4 + 8 * i;
        bytes[o..o + 8].copy_from_slice(&d.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn the_tiny_gguf_loads_and_computes() {
    let (_dir, path) = gguf_with(|_, _| {});
    let model = load_gguf(&path).unwrap();
    let logits = model.next_token_logits(&[0, 1, 2]).unwrap();
    assert_eq!(logits.len(), vocabulary().len());
    assert!(logits.iter().all(|x| x.is_finite()));
}

#[test]
fn hostile_gguf_header_fields_are_refused_naming_the_field() {
    let u32max = Value::U32(u32::MAX);
    type Edit = Box<dyn FnOnce(&mut Metadata, &mut Tensors)>;
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            "block_count = 0xFFFFFFFF",
            Box::new(set("llama.block_count", u32max.clone())),
            vec![
                "llama.block_count is 4294967295",
                "the file holds tensors for 2 layers",
            ],
        ),
        (
            "block_count = 0",
            Box::new(set("llama.block_count", Value::U32(0))),
            vec!["llama.block_count must be > 0"],
        ),
        (
            "head_count = 0",
            Box::new(set("llama.attention.head_count", Value::U32(0))),
            vec!["llama.attention.head_count must be > 0"],
        ),
        (
            "head_count_kv = 0",
            Box::new(set("llama.attention.head_count_kv", Value::U32(0))),
            vec!["llama.attention.head_count_kv must be > 0"],
        ),
        (
            "head_count not a multiple of head_count_kv",
            Box::new(set("llama.attention.head_count_kv", Value::U32(3))),
            vec!["must be a multiple of llama.attention.head_count_kv (3)"],
        ),
        (
            "embedding_length = 0xFFFFFFFF",
            Box::new(set("llama.embedding_length", u32max.clone())),
            vec!["llama.embedding_length (4294967295) must be a multiple of"],
        ),
        (
            "embedding_length mismatching the tensors",
            Box::new(set("llama.embedding_length", Value::U32(64))),
            vec!["llama.embedding_length is 64", "token_embd.weight"],
        ),
        (
            "feed_forward_length mismatching the tensors",
            Box::new(set("llama.feed_forward_length", Value::U32(65))),
            vec!["llama.feed_forward_length is 65", "blk.0.ffn_gate.weight"],
        ),
        (
            "key_length odd",
            Box::new(set("llama.attention.key_length", Value::U32(7))),
            vec!["llama.attention.key_length is 7", "even"],
        ),
        (
            "key_length mismatching the tensors",
            Box::new(set("llama.attention.key_length", Value::U32(16))),
            vec!["llama.attention.head_count × llama.attention.key_length is 64"],
        ),
        (
            "context_length = 0xFFFFFFFF",
            Box::new(set("llama.context_length", u32max)),
            vec!["llama.context_length is 4294967295", "at most 1048576"],
        ),
        (
            "block_count negative",
            Box::new(set("llama.block_count", Value::I32(-1))),
            vec!["llama.block_count must be a non-negative integer"],
        ),
        (
            "block_count a string",
            Box::new(set("llama.block_count", Value::String("30".into()))),
            vec!["llama.block_count must be a non-negative integer"],
        ),
        (
            "rope.freq_base = 0",
            Box::new(set("llama.rope.freq_base", Value::F32(0.0))),
            vec!["llama.rope.freq_base must be a positive number"],
        ),
        (
            "a layer's tensor missing",
            Box::new(|_: &mut Metadata, t: &mut Tensors| {
                t.retain(|(n, _)| n != "blk.1.attn_v.weight")
            }),
            vec!["the weights have no blk.1.attn_v.weight"],
        ),
        (
            "more tokens than embedding rows",
            Box::new(set(
                "tokenizer.ggml.tokens",
                Value::Array((0..40).map(|i| Value::String(format!("t{i}"))).collect()),
            )),
            vec!["tokenizer.ggml.tokens holds 40 tokens but token_embd.weight has 29 rows"],
        ),
        (
            "general.alignment = 0",
            Box::new(set("general.alignment", Value::U32(0))),
            vec!["general.alignment must be > 0"],
        ),
        (
            "general.alignment = 0 as a u8",
            Box::new(set("general.alignment", Value::U8(0))),
            vec!["general.alignment must be > 0"],
        ),
        (
            "tokens not strings",
            Box::new(set(
                "tokenizer.ggml.tokens",
                Value::Array(vec![Value::U32(7)]),
            )),
            vec!["tokenizer.ggml.tokens must be a list of strings"],
        ),
    ];
    for (what, edit, needles) in cases {
        let (_dir, path) = gguf_with(edit);
        refused(what, || load_gguf(&path), &needles);
    }
}

#[test]
fn gguf_to_safetensors_refuses_the_same_files() {
    let (dir, path) = gguf_with(set("llama.block_count", Value::U32(u32::MAX)));
    let out = dir.path().join("converted");
    refused(
        "convert",
        || gguf_to_safetensors(&path, &out),
        &["llama.block_count is 4294967295"],
    );
}

#[test]
fn a_tensor_declared_beyond_the_file_is_refused_before_it_is_read() {
    // 2^40 columns of f32: 4 TiB from a file of a few hundred KiB.
    let (_dir, path) = gguf_with(|_, _| {});
    patch_dims(&path, "blk.1.ffn_down.weight", &[1 << 40, HIDDEN as u64]);
    refused(
        "shape beyond the file",
        || load_gguf(&path),
        &["blk.1.ffn_down.weight", "runs past the end of the file"],
    );
    // A shape whose element count does not even fit in 64 bits.
    let (_dir, path) = gguf_with(|_, _| {});
    patch_dims(&path, "blk.0.ffn_up.weight", &[1 << 40, 1 << 40]);
    refused(
        "shape overflowing",
        || load_gguf(&path),
        &["blk.0.ffn_up.weight", "too many elements"],
    );
}

#[test]
fn a_file_that_is_not_gguf_is_named_without_echoing_its_bytes() {
    let dir = tempfile::TempDir::new().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(
        &path,
        "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQC7 secret@host\n",
    )
    .unwrap();
    let text = refused(
        "not GGUF",
        || load_gguf(&path),
        &["is not a GGUF file (bad magic number)"],
    );
    for leak in ["2d687373", "ssh", "secret", "AAAA"] {
        assert!(!text.contains(leak), "{text}");
    }
    std::fs::write(&path, "GG").unwrap();
    refused("two bytes", || load_gguf(&path), &["is not a GGUF file"]);
}

// --- safetensors + config.json: the LLM loader ---------------------------------------------

/// The tiny llama fixture folder, copied, with `config.json` edited.
fn llm_folder(edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::TempDir::new().unwrap();
    copy_model(&xi_testkit::fixture_path("tiny_llm/llama"), dir.path());
    let mut config = fixture("tiny_llm/llama/config.json");
    edit(&mut config);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

fn load_folder(dir: &Path) -> Result<LlmModel, EngineError> {
    LlmModel::load(dir, &LoadOptions::default(), &mut |_| {})
}

#[test]
fn hostile_llm_configs_are_refused_naming_the_field() {
    type Edit = Box<dyn FnOnce(&mut serde_json::Value)>;
    let put = |key: &'static str, value: serde_json::Value| -> Edit {
        Box::new(move |c: &mut serde_json::Value| c[key] = value)
    };
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            "num_hidden_layers huge",
            put("num_hidden_layers", json!(1_000_000_000_000u64)),
            vec![
                "num_hidden_layers is 1000000000000",
                "the file holds tensors for 2 layers",
            ],
        ),
        (
            "hidden_size mismatching the tensors",
            put("hidden_size", json!(64)),
            vec!["hidden_size is 64", "model.embed_tokens.weight"],
        ),
        (
            "num_attention_heads = 0",
            put("num_attention_heads", json!(0)),
            vec!["config.json: num_attention_heads must be > 0"],
        ),
        (
            "num_key_value_heads = 0",
            put("num_key_value_heads", json!(0)),
            vec!["num_key_value_heads must be > 0"],
        ),
        (
            "vocab_size mismatching the tensors",
            put("vocab_size", json!(300)),
            vec!["vocab_size is 300", "model.embed_tokens.weight"],
        ),
        (
            "intermediate_size mismatching the tensors",
            put("intermediate_size", json!(65)),
            vec!["intermediate_size is 65", "mlp.gate_proj.weight"],
        ),
        (
            "max_position_embeddings huge",
            put("max_position_embeddings", json!(1u64 << 40)),
            vec![
                "max_position_embeddings is 1099511627776",
                "at most 1048576",
            ],
        ),
        (
            "hidden_size a string",
            put("hidden_size", json!("secret-value-0123")),
            vec!["hidden_size must be a positive integer"],
        ),
        (
            "rope_scaling factor 0",
            Box::new(|c: &mut serde_json::Value| c["rope_scaling"]["factor"] = json!(0)),
            vec!["rope_scaling.factor must be a positive number"],
        ),
    ];
    for (what, edit, needles) in cases {
        let dir = llm_folder(edit);
        let text = refused(what, || load_folder(dir.path()), &needles);
        assert!(!text.contains("secret"), "{what}: {text}");
    }
}

#[test]
fn a_config_that_is_not_json_is_described_without_its_content() {
    let dir = llm_folder(|_| {});
    std::fs::write(
        dir.path().join("config.json"),
        "{\n  \"hidden_size\": 32,\n  \"password\": hunter2-secret\n}",
    )
    .unwrap();
    let text = refused(
        "config not JSON",
        || load_folder(dir.path()),
        &["config.json: is not valid JSON (line 3, column"],
    );
    assert!(!text.contains("hunter2"), "{text}");
}

// --- safetensors + config.json: the embedding and rerank loaders ----------------------------

const BERT_VOCAB: usize = 256;

fn bert_config() -> serde_json::Value {
    json!({
        "architectures": ["BertModel"], "model_type": "bert", "vocab_size": BERT_VOCAB,
        "hidden_size": HIDDEN, "num_hidden_layers": LAYERS, "num_attention_heads": HEADS,
        "intermediate_size": FFN, "max_position_embeddings": 64, "type_vocab_size": 2,
        "layer_norm_eps": 1e-12, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
        "initializer_range": 0.02, "pad_token_id": 0, "position_embedding_type": "absolute",
    })
}

/// A tiny random BERT (the tiny llama fixture's tokenizer), config edited by `edit`.
fn bert_folder(edit: impl FnOnce(&mut serde_json::Value)) -> tempfile::TempDir {
    let dir = tempfile::TempDir::new().unwrap();
    let mut tensors = std::collections::HashMap::new();
    let mut put = |name: String, shape: &[usize]| {
        let t = (Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap() * 0.05).unwrap();
        tensors.insert(name, t);
    };
    put(
        "embeddings.word_embeddings.weight".into(),
        &[BERT_VOCAB, HIDDEN],
    );
    put(
        "embeddings.position_embeddings.weight".into(),
        &[64, HIDDEN],
    );
    put(
        "embeddings.token_type_embeddings.weight".into(),
        &[2, HIDDEN],
    );
    put("embeddings.LayerNorm.weight".into(), &[HIDDEN]);
    put("embeddings.LayerNorm.bias".into(), &[HIDDEN]);
    for i in 0..LAYERS {
        let l = format!("encoder.layer.{i}");
        for part in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ] {
            put(format!("{l}.{part}.weight"), &[HIDDEN, HIDDEN]);
            put(format!("{l}.{part}.bias"), &[HIDDEN]);
        }
        put(format!("{l}.intermediate.dense.weight"), &[FFN, HIDDEN]);
        put(format!("{l}.intermediate.dense.bias"), &[FFN]);
        put(format!("{l}.output.dense.weight"), &[HIDDEN, FFN]);
        put(format!("{l}.output.dense.bias"), &[HIDDEN]);
        for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
            put(format!("{l}.{norm}.weight"), &[HIDDEN]);
            put(format!("{l}.{norm}.bias"), &[HIDDEN]);
        }
    }
    candle_core::safetensors::save(&tensors, dir.path().join("model.safetensors")).unwrap();
    std::fs::copy(
        xi_testkit::fixture_path("tiny_llm/llama/tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    let mut config = bert_config();
    edit(&mut config);
    std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
    dir
}

#[test]
fn the_tiny_bert_loads_and_embeds() {
    let dir = bert_folder(|_| {});
    let model = EmbeddingModel::load(dir.path()).unwrap();
    let encoded = model
        .tokenize(&EmbedInput::Tokens(vec![1, 2, 3]), true)
        .unwrap();
    let vectors = model.embed(&[&encoded]).unwrap();
    assert_eq!(vectors[0].len(), HIDDEN);
    assert!(vectors[0].iter().all(|x| x.is_finite()));
}

#[test]
fn hostile_encoder_configs_are_refused_naming_the_field() {
    type Edit = Box<dyn Fn(&mut serde_json::Value)>;
    let put = |key: &'static str, value: serde_json::Value| -> Edit {
        Box::new(move |c: &mut serde_json::Value| c[key] = value.clone())
    };
    let cases: Vec<(&str, Edit, Vec<&str>)> = vec![
        (
            "num_hidden_layers huge",
            put("num_hidden_layers", json!(1u64 << 40)),
            vec![
                "config.json: num_hidden_layers is 1099511627776",
                "the weights hold 2 layers",
            ],
        ),
        (
            "hidden_size mismatching the tensors",
            put("hidden_size", json!(64)),
            vec!["hidden_size is 64", "embeddings.word_embeddings.weight"],
        ),
        (
            "num_attention_heads = 0",
            put("num_attention_heads", json!(0)),
            vec!["config.json: num_attention_heads must be > 0"],
        ),
        (
            "hidden_size not a multiple of the heads",
            put("num_attention_heads", json!(5)),
            vec!["hidden_size (32) must be a multiple of num_attention_heads (5)"],
        ),
        (
            "intermediate_size mismatching the tensors",
            put("intermediate_size", json!(1 << 30)),
            vec![
                "intermediate_size is 1073741824",
                "intermediate.dense.weight",
            ],
        ),
        (
            "max_position_embeddings mismatching the tensors",
            put("max_position_embeddings", json!(1u64 << 40)),
            vec!["max_position_embeddings is 1099511627776"],
        ),
        (
            "pad_token_id outside the vocabulary",
            put("pad_token_id", json!(1u64 << 40)),
            vec!["pad_token_id (1099511627776) must be below vocab_size (256)"],
        ),
        (
            "hidden_size a string",
            put("hidden_size", json!("secret-value-0123")),
            vec!["hidden_size"],
        ),
        (
            "hidden_act unknown",
            put("hidden_act", json!("secret-activation")),
            vec!["unsupported configuration", "expected one of"],
        ),
        (
            "layer_norm_eps a string",
            put("layer_norm_eps", json!("secret-eps")),
            vec!["layer_norm_eps must be a number"],
        ),
    ];
    for (what, edit, needles) in cases {
        let dir = bert_folder(&*edit);
        let text = refused(what, || EmbeddingModel::load(dir.path()), &needles);
        assert!(!text.contains("secret"), "{what}: {text}");
        let text = refused(
            &format!("{what} (rerank)"),
            || CrossEncoder::load(dir.path()),
            &needles,
        );
        assert!(!text.contains("secret"), "{what} (rerank): {text}");
    }
}

/// Found by the `tokenizer` fuzz target: tokenizers 0.23 panics on a JSON syntax error inside
/// `decoder` (`expect("Helper")`). Every loader of `tokenizer.json` refuses it as a bad file.
#[test]
fn a_tokenizer_with_a_syntax_error_in_its_decoder_is_refused_not_a_panic() {
    let original =
        std::fs::read_to_string(xi_testkit::fixture_path("tiny_llm/llama/tokenizer.json")).unwrap();
    let broken = original.replacen("\"decoder\": null", "\"decoder\":'null", 1);
    assert_ne!(broken, original, "the fixture has a decoder field");
    let llm = tempfile::TempDir::new().unwrap();
    copy_model(&xi_testkit::fixture_path("tiny_llm/llama"), llm.path());
    std::fs::write(llm.path().join("tokenizer.json"), &broken).unwrap();
    refused(
        "LLM",
        || load_folder(llm.path()),
        &["tokenizer.json", "tokenizer"],
    );
    let bert = bert_folder(|_| {});
    std::fs::write(bert.path().join("tokenizer.json"), &broken).unwrap();
    refused(
        "embedding",
        || EmbeddingModel::load(bert.path()),
        &["tokenizer.json", "tokenizer"],
    );
}

#[test]
fn weights_that_are_not_safetensors_are_described_without_their_content() {
    let dir = bert_folder(|_| {});
    let mut bytes = 40u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{\"secret-tensor\": \"password=hunter2\"}   ");
    std::fs::write(dir.path().join("model.safetensors"), bytes).unwrap();
    let text = refused(
        "not safetensors",
        || EmbeddingModel::load(dir.path()),
        &["model.safetensors"],
    );
    assert!(
        !text.contains("hunter2") && !text.contains("secret"),
        "{text}"
    );
}

#[test]
fn model_files_cannot_point_the_loader_outside_the_model_folder() {
    for shard in ["../outside.safetensors", "/etc/passwd"] {
        let dir = bert_folder(|_| {});
        std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
        let index = json!({ "weight_map": { "embeddings.word_embeddings.weight": shard } });
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            index.to_string(),
        )
        .unwrap();
        refused(
            shard,
            || EmbeddingModel::load(dir.path()),
            &["names a weight shard outside the model folder"],
        );
    }
    let dir = bert_folder(|_| {});
    let modules = json!([
        { "idx": 1, "name": "1", "path": "../../elsewhere", "type": "sentence_transformers.models.Pooling" },
    ]);
    std::fs::write(dir.path().join("modules.json"), modules.to_string()).unwrap();
    refused(
        "pooling outside",
        || EmbeddingModel::load(dir.path()),
        &["names a Pooling folder outside the model folder"],
    );
}

// --- backtraces ---------------------------------------------------------------------------

#[test]
fn engine_errors_carry_no_backtrace_even_with_rust_backtrace_set() {
    std::env::set_var("RUST_BACKTRACE", "1");
    // `bt()` captures when the variable is set; `force_capture` captures in any case.
    let captured = candle_core::Error::Msg("tensor shapes disagree".into()).bt();
    let forced = candle_core::Error::WithBacktrace {
        inner: Box::new(candle_core::Error::Msg("tensor shapes disagree".into())),
        backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
    };
    assert!(forced.to_string().lines().count() > 2, "nothing to strip");
    for e in [captured, forced] {
        let text = EngineError::from(e).to_string();
        assert_eq!(text, "model computation failed: tensor shapes disagree");
    }
}
