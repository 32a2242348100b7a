//! Broken model folders give errors that name what is wrong, never a panic.

use xi_engine::{CrossEncoder, EmbeddingModel, EngineError};

use crate::support::{copy_model, minilm};

/// A way to break a copied model folder.
type Damage = Box<dyn FnOnce(&std::path::Path)>;

fn damaged(edit: impl FnOnce(&std::path::Path)) -> tempfile::TempDir {
    let dir = tempfile::TempDir::new().unwrap();
    copy_model(&minilm(), dir.path());
    edit(dir.path());
    dir
}

#[test]
fn each_broken_folder_is_refused_with_a_clear_error() {
    let cases: Vec<(&str, Damage, &str)> = vec![
        (
            "no weights",
            Box::new(|d| std::fs::remove_file(d.join("model.safetensors")).unwrap()),
            "has no model.safetensors",
        ),
        (
            "no tokenizer",
            Box::new(|d| std::fs::remove_file(d.join("tokenizer.json")).unwrap()),
            "has no tokenizer.json",
        ),
        (
            "no config",
            Box::new(|d| std::fs::remove_file(d.join("config.json")).unwrap()),
            "has no config.json",
        ),
        (
            "config not json",
            Box::new(|d| std::fs::write(d.join("config.json"), "{").unwrap()),
            "is not valid JSON",
        ),
        (
            "unknown architecture",
            Box::new(|d| {
                std::fs::write(d.join("config.json"), r#"{"model_type": "gpt2"}"#).unwrap()
            }),
            "model_type \"gpt2\" is not supported",
        ),
        (
            "truncated weights",
            Box::new(|d| {
                std::fs::write(
                    d.join("model.safetensors"),
                    b"\x08\x00\x00\x00\x00\x00\x00\x00{}",
                )
                .unwrap()
            }),
            "",
        ),
        (
            "tokenizer garbage",
            Box::new(|d| std::fs::write(d.join("tokenizer.json"), "[]").unwrap()),
            "tokenizer",
        ),
    ];
    for (name, edit, needle) in cases {
        let dir = damaged(edit);
        let err = match EmbeddingModel::load(dir.path()) {
            Ok(_) => panic!("{name}: loaded"),
            Err(e) => e,
        };
        assert!(err.is_client_error(), "{name}: {err}");
        assert!(err.to_string().contains(needle), "{name}: {err}");
    }
    match EmbeddingModel::load(std::path::Path::new("/no/such/folder")) {
        Err(EngineError::BadFile { .. }) => {}
        other => panic!("{:?}", other.err()),
    }
}

#[test]
fn an_embedding_model_is_not_a_cross_encoder() {
    // all-MiniLM-L6-v2 has no classifier head: the error says the weights do not match.
    match CrossEncoder::load(&minilm()) {
        Err(e) => assert!(e.to_string().contains("weights do not match"), "{e}"),
        Ok(_) => panic!("loaded a cross-encoder without a classifier"),
    }
}
