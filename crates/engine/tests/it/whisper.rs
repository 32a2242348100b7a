//! Our Whisper network against PyTorch (a tiny random-weight model saved by transformers,
//! `bench/make_tiny_whisper_fixture.py`): encoder states, decoder logits and greedy tokens,
//! with and without the KV cache; and hostile folders refused before loading.

use candle_core::{Device, Tensor};
use serde_json::Value;
use xi_engine::whisper::WhisperModel;
use xi_engine::{EngineError, Placement};

use crate::support::{copy_model, fixture, fixture_path};

fn matrix(v: &Value) -> Vec<Vec<f32>> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        })
        .collect()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn encoder_decoder_and_greedy_tokens_match_pytorch() {
    let expected = fixture("tiny_whisper/expected.json");
    let net = WhisperModel::load_network(&fixture_path("tiny_whisper"), &Placement::cpu()).unwrap();
    let features = matrix(&expected["input_features"]);
    let (mels, frames) = (features.len(), features[0].len());
    let flat: Vec<f32> = features.concat();
    let mel = Tensor::from_vec(flat, (1, mels, frames), &Device::Cpu).unwrap();
    let encoded = net.encode(&mel).unwrap();
    let want = matrix(&expected["encoder_output"]).concat();
    let got: Vec<f32> = encoded.flatten_all().unwrap().to_vec1().unwrap();
    let diff = max_diff(&got, &want);
    assert!(diff < 1e-4, "encoder differs from PyTorch by {diff}");

    // The whole prompt in one pass: logits at every position.
    let cross = net.cross_kv(&encoded).unwrap();
    let prompt = ids(&expected["prompt_ids"]);
    let input = Tensor::new(prompt.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let mut cache = net.new_cache();
    let out = net.decode(&input, &cross, &mut cache, true).unwrap();
    let logits: Vec<f32> = net
        .logits(&out.hidden)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let want = matrix(&expected["logits"]).concat();
    let diff = max_diff(&logits, &want);
    assert!(diff < 1e-4, "decoder logits differ from PyTorch by {diff}");
    assert_eq!(out.cross_attention.len(), 2, "one weight tensor per layer");
    assert_eq!(
        out.cross_attention[0].dims(),
        &[1, 4, prompt.len(), frames / 2]
    );

    // Greedy continuation one token at a time through the KV cache.
    let vocab = want.len() / prompt.len();
    let mut last: Vec<f32> = logits[(prompt.len() - 1) * vocab..].to_vec();
    let mut greedy = Vec::new();
    for _ in 0..ids(&expected["greedy_ids"]).len() {
        let next = last
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0 as u32;
        greedy.push(next);
        let input = Tensor::new(&[[next]], &Device::Cpu).unwrap();
        let out = net.decode(&input, &cross, &mut cache, false).unwrap();
        last = net
            .logits(&out.hidden)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
    }
    assert_eq!(greedy, ids(&expected["greedy_ids"]));
}

#[test]
fn the_decoder_refuses_to_run_past_its_positions() {
    let net = WhisperModel::load_network(&fixture_path("tiny_whisper"), &Placement::cpu()).unwrap();
    let mel = Tensor::zeros((1, 8, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    let cross = net.cross_kv(&net.encode(&mel).unwrap()).unwrap();
    let mut cache = net.new_cache();
    let too_many = Tensor::zeros((1, 25), candle_core::DType::U32, &Device::Cpu).unwrap();
    let err = net
        .decode(&too_many, &cross, &mut cache, false)
        .err()
        .unwrap();
    assert!(err.to_string().contains("24 tokens per window"), "{err}");
}

fn load_with_config(edit: impl Fn(&mut Value)) -> EngineError {
    let dir = tempfile::tempdir().unwrap();
    copy_model(&fixture_path("tiny_whisper"), dir.path());
    let path = dir.path().join("config.json");
    let mut config: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, config.to_string()).unwrap();
    WhisperModel::load_network(dir.path(), &Placement::cpu())
        .err()
        .unwrap()
}

#[test]
fn hostile_configs_are_refused_naming_the_field() {
    let cases: &[(&str, Value, &str)] = &[
        ("d_model", Value::from(1u64 << 40), "d_model is"),
        ("encoder_layers", Value::from(100_000), "above the limit"),
        (
            "decoder_attention_heads",
            Value::from(3),
            "not a multiple of decoder_attention_heads",
        ),
        ("vocab_size", Value::from(0), "vocab_size must be > 0"),
        (
            "num_mel_bins",
            Value::from("eighty"),
            "num_mel_bins must be a positive integer",
        ),
        ("model_type", Value::from("bert"), "not \"whisper\""),
        (
            "activation_function",
            Value::from("relu"),
            "activation_function",
        ),
        // Consistent with the config but not with the weights: the tensor is named.
        (
            "vocab_size",
            Value::from(65),
            "model.decoder.embed_tokens.weight",
        ),
        ("encoder_layers", Value::from(3), "model.encoder.layers.2"),
    ];
    for (field, value, needle) in cases {
        let err = load_with_config(|c| c[*field] = value.clone());
        assert!(
            matches!(err, EngineError::BadFile { .. }),
            "{field}: {err:?}"
        );
        assert!(err.to_string().contains(needle), "{field}: {err}");
    }
}

#[test]
fn a_truncated_weights_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    copy_model(&fixture_path("tiny_whisper"), dir.path());
    let weights = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    std::fs::write(&weights, &bytes[..bytes.len() / 2]).unwrap();
    let err = WhisperModel::load_network(dir.path(), &Placement::cpu())
        .err()
        .unwrap();
    assert!(err.to_string().contains("safetensors"), "{err}");
}
