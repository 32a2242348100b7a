//! The built-in catalogue: families our candle engine runs, one JSON file per family under
//! `catalogue/<type>/` in upstream's on-disk shape, embedded in the binary and flattened at
//! load into the registration shape clients see. The files are checked by the engine's
//! catalogue test (schema, unique names, architectures it loads, templates that render).

use serde_json::{Map, Value};
use xi_api::models::ModelType;

use super::Family;

/// Declares the embedded files; a test checks the list against the folders, so a file added
/// there and forgotten here fails.
macro_rules! catalogue {
    ($($kind:ident / $file:literal),* $(,)?) => {
        /// Every built-in family file: its model type, its path under `catalogue/`, its text.
        pub const FILES: &[(ModelType, &str, &str)] = &[
            $((
                catalogue!(@type $kind),
                concat!(stringify!($kind), "/", $file),
                include_str!(concat!("../../catalogue/", stringify!($kind), "/", $file)),
            )),*
        ];
    };
    (@type llm) => { ModelType::Llm };
    (@type embedding) => { ModelType::Embedding };
    (@type rerank) => { ModelType::Rerank };
    (@type audio) => { ModelType::Audio };
}

catalogue! {
    llm / "deepseek-r1-distill-qwen.json",
    llm / "llama-3.2-instruct.json",
    llm / "qwen2.5-coder-instruct.json",
    llm / "qwen2.5-instruct.json",
    llm / "qwen3.json",
    llm / "smollm2-instruct.json",
    embedding / "all-MiniLM-L6-v2.json",
    embedding / "bge-base-en-v1.5.json",
    embedding / "bge-small-en-v1.5.json",
    rerank / "bge-reranker-base.json",
    rerank / "ms-marco-MiniLM-L-6-v2.json",
    audio / "whisper-base.json",
    audio / "whisper-base.en.json",
    audio / "whisper-large-v3.json",
    audio / "whisper-large-v3-turbo.json",
    audio / "whisper-medium.json",
    audio / "whisper-medium.en.json",
    audio / "whisper-small.json",
    audio / "whisper-small.en.json",
    audio / "whisper-tiny.json",
    audio / "whisper-tiny.en.json",
}

/// Parses the embedded catalogue. An error here is a build defect, reported at startup.
pub fn load() -> Result<Vec<Family>, String> {
    let mut families = Vec::new();
    for &(model_type, path, text) in FILES {
        let raw: Map<String, Value> = serde_json::from_str(text)
            .map_err(|e| format!("built-in catalogue file {path} is not valid: {e}"))?;
        let name = raw
            .get("model_name")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("built-in catalogue file {path} has no model_name"))?
            .to_string();
        let mut body = raw;
        let specs = body
            .remove("model_specs")
            .unwrap_or(Value::Array(Vec::new()));
        body.insert("model_specs".into(), Value::Array(flatten_specs(&specs)));
        body.insert("is_builtin".into(), Value::Bool(true));
        families.push(Family {
            model_type,
            name,
            body,
            builtin: true,
        });
    }
    Ok(families)
}

/// Expands every (hub, quantization) of a `model_src` spec into a flat spec, as upstream's
/// `flatten_quantizations` does: `{model_format, model_size_in_billions, quantization,
/// model_hub, model_id, model_revision, model_file_name_template, ...}`.
fn flatten_specs(specs: &Value) -> Vec<Value> {
    let mut flat = Vec::new();
    for spec in specs.as_array().into_iter().flatten() {
        let Some(spec) = spec.as_object() else {
            continue;
        };
        let mut base = spec.clone();
        let sources = base.remove("model_src");
        let Some(sources) = sources.as_ref().and_then(Value::as_object) else {
            flat.push(Value::Object(base));
            continue;
        };
        for (hub, source) in sources {
            let Some(source) = source.as_object() else {
                continue;
            };
            let quantizations = source
                .get("quantizations")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_else(|| vec![Value::String("none".into())]);
            for quantization in quantizations {
                let mut entry = base.clone();
                for (key, value) in source.iter().filter(|(k, _)| k.as_str() != "quantizations") {
                    entry.insert(key.clone(), value.clone());
                }
                entry.insert("quantization".into(), quantization);
                entry.insert("model_hub".into(), Value::String(hub.clone()));
                flat.push(Value::Object(entry));
            }
        }
    }
    flat
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_in_the_catalogue_folders_is_embedded() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("catalogue");
        let mut on_disk = Vec::new();
        for kind in ["llm", "embedding", "rerank", "audio"] {
            for entry in std::fs::read_dir(root.join(kind)).unwrap() {
                let name = entry.unwrap().file_name().into_string().unwrap();
                on_disk.push(format!("{kind}/{name}"));
            }
        }
        on_disk.sort();
        let mut embedded: Vec<String> = FILES.iter().map(|(_, p, _)| p.to_string()).collect();
        embedded.sort();
        assert_eq!(
            on_disk, embedded,
            "catalogue! in builtin.rs lists the files"
        );
    }

    #[test]
    fn catalogue_parses_and_flattens() {
        let families = load().unwrap();
        let smol = families
            .iter()
            .find(|f| f.name == "smollm2-instruct")
            .expect("smollm2-instruct is built in");
        let specs = smol.body["model_specs"].as_array().unwrap();
        assert!(specs
            .iter()
            .any(|s| s["model_format"] == "ggufv2" && s["quantization"] == "Q4_1"));
        assert!(specs
            .iter()
            .all(|s| s.get("model_src").is_none() && s["model_hub"] == "huggingface"));
        for name in [
            "all-MiniLM-L6-v2",
            "bge-small-en-v1.5",
            "bge-base-en-v1.5",
            "bge-reranker-base",
            "ms-marco-MiniLM-L-6-v2",
            "qwen2.5-instruct",
            "llama-3.2-instruct",
            "whisper-tiny.en",
            "whisper-large-v3",
        ] {
            assert!(families.iter().any(|f| f.name == name), "{name} missing");
        }
    }
}
