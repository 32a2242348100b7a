//! Architectures and poolings without a real model in a package registry: small random models
//! built here (all-MiniLM-L6-v2's tokenizer, random weights). No reference numbers exist for
//! them, so these check what must hold for any weights: shapes, finiteness, normalisation, and
//! that a sequence embeds the same alone as inside a batch of other lengths.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde_json::json;
use xi_engine::embedding::EmbedInput;
use xi_engine::{CrossEncoder, Embed, EmbeddingModel, Rerank};

use crate::support::minilm;

const HIDDEN: usize = 32;
const LAYERS: usize = 2;
const VOCAB: usize = 30522;

fn random(shape: &[usize]) -> Tensor {
    (Tensor::randn(0f32, 1.0, shape, &Device::Cpu).unwrap() * 0.05).unwrap()
}

fn encoder_weights(prefix: &str, positions: usize, types: usize) -> HashMap<String, Tensor> {
    let mut t = HashMap::new();
    let mut put = |name: String, shape: &[usize]| {
        t.insert(format!("{prefix}{name}"), random(shape));
    };
    put("embeddings.word_embeddings.weight".into(), &[VOCAB, HIDDEN]);
    put(
        "embeddings.position_embeddings.weight".into(),
        &[positions, HIDDEN],
    );
    put(
        "embeddings.token_type_embeddings.weight".into(),
        &[types, HIDDEN],
    );
    for i in 0..LAYERS {
        let l = format!("encoder.layer.{i}.");
        for name in [
            "attention.self.query",
            "attention.self.key",
            "attention.self.value",
            "attention.output.dense",
        ] {
            put(format!("{l}{name}.weight"), &[HIDDEN, HIDDEN]);
            put(format!("{l}{name}.bias"), &[HIDDEN]);
        }
        put(format!("{l}intermediate.dense.weight"), &[64, HIDDEN]);
        put(format!("{l}intermediate.dense.bias"), &[64]);
        put(format!("{l}output.dense.weight"), &[HIDDEN, 64]);
        put(format!("{l}output.dense.bias"), &[HIDDEN]);
    }
    let norms: Vec<String> = std::iter::once("embeddings.LayerNorm".to_string())
        .chain((0..LAYERS).flat_map(|i| {
            [
                format!("encoder.layer.{i}.attention.output.LayerNorm"),
                format!("encoder.layer.{i}.output.LayerNorm"),
            ]
        }))
        .collect();
    for norm in norms {
        t.insert(
            format!("{prefix}{norm}.weight"),
            Tensor::ones(HIDDEN, DType::F32, &Device::Cpu).unwrap(),
        );
        t.insert(
            format!("{prefix}{norm}.bias"),
            Tensor::zeros(HIDDEN, DType::F32, &Device::Cpu).unwrap(),
        );
    }
    t
}

fn write_model(
    dir: &Path,
    config: serde_json::Value,
    tensors: HashMap<String, Tensor>,
    pooling: Option<&str>,
) {
    for name in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(minilm().join(name), dir.join(name)).unwrap();
    }
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    if let Some(mode) = pooling {
        std::fs::create_dir_all(dir.join("1_Pooling")).unwrap();
        let key = format!("pooling_mode_{mode}");
        std::fs::write(
            dir.join("1_Pooling/config.json"),
            json!({ key: true }).to_string(),
        )
        .unwrap();
        let modules = json!([
            { "idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer" },
            { "idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling" },
            { "idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize" },
        ]);
        std::fs::write(dir.join("modules.json"), modules.to_string()).unwrap();
    }
}

fn xlm_config(extra: serde_json::Value) -> serde_json::Value {
    let mut c = json!({
        "model_type": "xlm-roberta", "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
        "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": VOCAB,
        "max_position_embeddings": 130, "type_vocab_size": 1, "pad_token_id": 0,
        "layer_norm_eps": 1e-5, "hidden_act": "gelu", "position_embedding_type": "absolute",
        "attention_probs_dropout_prob": 0.1, "hidden_dropout_prob": 0.1,
    });
    c.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    c
}

fn texts() -> Vec<&'static str> {
    vec![
        "short",
        "a somewhat longer sentence with more words in it",
        "x y z",
        "the end of the list of inputs here",
    ]
}

/// Embeds each text alone and all together, checks both agree and are unit vectors.
fn check_embedder(model: &EmbeddingModel, dims: usize) {
    let encoded: Vec<_> = texts()
        .iter()
        .map(|t| {
            model
                .tokenize(&EmbedInput::Text(t.to_string()), true)
                .unwrap()
        })
        .collect();
    let together = model.embed(&encoded.iter().collect::<Vec<_>>()).unwrap();
    for (i, seq) in encoded.iter().enumerate() {
        let alone = model.embed(&[seq]).unwrap().remove(0);
        assert_eq!(alone.len(), dims);
        let diff = alone
            .iter()
            .zip(&together[i])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(diff < 1e-5, "input {i}: alone vs batched differ by {diff}");
        let norm: f32 = alone.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-4 && alone.iter().all(|x| x.is_finite()),
            "norm {norm}"
        );
    }
    assert!(
        together[0] != together[1],
        "different inputs, different embeddings"
    );
}

#[test]
fn xlm_roberta_embeddings_with_cls_pooling() {
    let dir = tempfile::TempDir::new().unwrap();
    write_model(
        dir.path(),
        xlm_config(json!({})),
        encoder_weights("", 130, 1),
        Some("cls_token"),
    );
    let model = EmbeddingModel::load(dir.path()).unwrap();
    assert_eq!(
        model.max_tokens(),
        129,
        "130 positions, the first used up by the padding index"
    );
    check_embedder(&model, HIDDEN);
}

#[test]
fn bert_embeddings_with_each_pooling_on_both_encoders() {
    // gelu runs on our packed encoder; relu falls back to candle-transformers' padded BertModel.
    for (mode, act) in [
        ("cls_token", "gelu"),
        ("lasttoken", "gelu"),
        ("mean_tokens", "relu"),
        ("lasttoken", "relu"),
    ] {
        let dir = tempfile::TempDir::new().unwrap();
        let config = json!({
            "model_type": "bert", "hidden_size": HIDDEN, "num_hidden_layers": LAYERS,
            "num_attention_heads": 4, "intermediate_size": 64, "vocab_size": VOCAB,
            "max_position_embeddings": 64, "type_vocab_size": 2, "pad_token_id": 0,
            "layer_norm_eps": 1e-12, "hidden_act": act, "hidden_dropout_prob": 0.1, "initializer_range": 0.02,
        });
        write_model(dir.path(), config, encoder_weights("", 64, 2), Some(mode));
        let model = EmbeddingModel::load(dir.path()).unwrap();
        assert_eq!(model.max_tokens(), 64);
        check_embedder(&model, HIDDEN);
    }
}

#[test]
fn xlm_roberta_cross_encoder_scores_are_probabilities_and_batch_independent() {
    let dir = tempfile::TempDir::new().unwrap();
    let mut tensors = encoder_weights("roberta.", 130, 1);
    tensors.insert("classifier.dense.weight".into(), random(&[HIDDEN, HIDDEN]));
    tensors.insert("classifier.dense.bias".into(), random(&[HIDDEN]));
    tensors.insert("classifier.out_proj.weight".into(), random(&[1, HIDDEN]));
    tensors.insert("classifier.out_proj.bias".into(), random(&[1]));
    write_model(
        dir.path(),
        xlm_config(json!({ "num_labels": 1 })),
        tensors,
        None,
    );
    let model = CrossEncoder::load(dir.path()).unwrap();
    let pairs: Vec<_> = texts()
        .iter()
        .map(|d| model.tokenize_pair("a query", d, true).unwrap())
        .collect();
    let together = model.score(&pairs.iter().collect::<Vec<_>>()).unwrap();
    for (i, pair) in pairs.iter().enumerate() {
        let alone = model.score(&[pair]).unwrap()[0];
        assert!(
            (alone - together[i]).abs() < 1e-5,
            "pair {i}: {alone} vs {}",
            together[i]
        );
        assert!((0.0..=1.0).contains(&alone));
    }
}
