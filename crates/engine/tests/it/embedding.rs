use xi_engine::embedding::EmbedInput;
use xi_engine::{Embed, EmbeddingModel, EngineError};

use crate::support::{fixture, max_abs_diff, minilm};

fn reference() -> (Vec<String>, Vec<Vec<f64>>) {
    let f = fixture("minilm_embeddings.json");
    let sentences = f["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect();
    let vectors = f["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            v.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect();
    (sentences, vectors)
}

#[test]
fn minilm_matches_sentence_transformers_in_one_batch_and_one_by_one() {
    let model = EmbeddingModel::load(&minilm()).unwrap();
    assert_eq!(model.dimensions(), 384);
    assert_eq!(
        model.max_tokens(),
        256,
        "sentence_bert_config max_seq_length, not the tokenizer's 128"
    );
    let (sentences, expected) = reference();
    let encoded: Vec<_> = sentences
        .iter()
        .map(|s| model.tokenize(&EmbedInput::Text(s.clone()), true).unwrap())
        .collect();
    assert_eq!(
        encoded[6].len(),
        256,
        "the long sentence is truncated at 256"
    );
    assert!(
        encoded[0].len() < 10,
        "short inputs are not padded to 128: {}",
        encoded[0].len()
    );
    let batch: Vec<_> = encoded.iter().collect();
    let together = model.embed(&batch).unwrap();
    for (i, (got, want)) in together.iter().zip(&expected).enumerate() {
        let diff = max_abs_diff(got, want);
        assert!(diff <= 1e-5, "sentence {i} differs by {diff}");
    }
    for (i, seq) in encoded.iter().enumerate() {
        let alone = model.embed(&[seq]).unwrap();
        let diff = max_abs_diff(&alone[0], &expected[i]);
        assert!(diff <= 1e-5, "sentence {i} alone differs by {diff}");
    }
    let norm: f32 = together[1].iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-5, "normalized: {norm}");
}

#[test]
fn token_ids_embed_like_the_text_they_came_from_and_are_checked() {
    let model = EmbeddingModel::load(&minilm()).unwrap();
    let text = model
        .tokenize(&EmbedInput::Text("Hello world".into()), true)
        .unwrap();
    let ids = model
        .tokenize(&EmbedInput::Tokens(text.ids.clone()), true)
        .unwrap();
    let a = model.embed(&[&text]).unwrap();
    let b = model.embed(&[&ids]).unwrap();
    assert_eq!(a, b);
    match model.tokenize(&EmbedInput::Tokens(vec![101, 999_999, 102]), true) {
        Err(EngineError::InvalidInput(m)) => {
            assert!(m.contains("999999") && m.contains("30522"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn too_long_input_without_truncation_names_the_numbers() {
    let model = EmbeddingModel::load(&minilm()).unwrap();
    let long = "word ".repeat(400);
    match model.tokenize(&EmbedInput::Text(long), false) {
        Err(EngineError::InvalidInput(m)) => {
            assert!(m.contains("402 tokens") && m.contains("at most 256"), "{m}")
        }
        other => panic!("{other:?}"),
    }
}
