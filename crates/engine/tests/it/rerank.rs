use candle_core::{Device, Tensor};
use xi_engine::{CrossEncoder, Rerank};

use crate::support::{copy_model, fixture, minilm};

/// Builds the fixture's cross-encoder: all-MiniLM-L6-v2's body and pooler under `bert.`, plus
/// the seeded classifier head the reference was computed with.
fn build_cross_encoder(dir: &std::path::Path, f: &serde_json::Value) {
    copy_model(&minilm(), dir);
    let body =
        candle_core::safetensors::load(minilm().join("model.safetensors"), &Device::Cpu).unwrap();
    let mut tensors: std::collections::HashMap<String, Tensor> = body
        .into_iter()
        .map(|(k, v)| (format!("bert.{k}"), v))
        .collect();
    let weight: Vec<f32> = f["classifier_weight"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    let bias = f["classifier_bias"].as_f64().unwrap() as f32;
    tensors.insert(
        "classifier.weight".into(),
        Tensor::from_vec(weight, (1, 384), &Device::Cpu).unwrap(),
    );
    tensors.insert(
        "classifier.bias".into(),
        Tensor::from_vec(vec![bias], 1, &Device::Cpu).unwrap(),
    );
    candle_core::safetensors::save(&tensors, dir.join("model.safetensors")).unwrap();
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
    config["architectures"] = serde_json::json!(["BertForSequenceClassification"]);
    config["num_labels"] = serde_json::json!(1);
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    // A cross-encoder has no sentence-transformers modules.
    for extra in ["modules.json", "sentence_bert_config.json"] {
        std::fs::remove_file(dir.join(extra)).unwrap();
    }
    std::fs::remove_dir_all(dir.join("1_Pooling")).unwrap();
}

#[test]
fn cross_encoder_scores_match_pytorch() {
    let f = fixture("minilm_cross_encoder.json");
    let dir = tempfile::TempDir::new().unwrap();
    build_cross_encoder(dir.path(), &f);
    let model = CrossEncoder::load(dir.path()).unwrap();
    let pairs: Vec<_> = f["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            model
                .tokenize_pair(p[0].as_str().unwrap(), p[1].as_str().unwrap(), true)
                .unwrap()
        })
        .collect();
    assert!(pairs.iter().all(|p| p.len() <= 512));
    assert_eq!(
        pairs[4].len(),
        512,
        "the over-long pair is truncated at the tokenizer's 512"
    );
    assert!(
        pairs[0].type_ids.contains(&1),
        "the document half has token type 1"
    );
    let refs: Vec<_> = pairs.iter().collect();
    let scores = model.score(&refs).unwrap();
    for (i, (got, want)) in scores
        .iter()
        .zip(f["scores"].as_array().unwrap())
        .enumerate()
    {
        let diff = (f64::from(*got) - want.as_f64().unwrap()).abs();
        assert!(diff <= 1e-5, "pair {i}: {got} vs {want}");
    }
}
