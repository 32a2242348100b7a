//! The built-in catalogue: families our candle engine runs, embedded as JSON in upstream's
//! on-disk shape and flattened at load into the registration shape clients see.

use serde_json::{Map, Value};
use xi_api::models::ModelType;

use super::Family;

const LLM: &str = include_str!("../../catalogue/llm.json");
const EMBEDDING: &str = include_str!("../../catalogue/embedding.json");
const RERANK: &str = include_str!("../../catalogue/rerank.json");

/// Parses the embedded catalogue. An error here is a build defect, reported at startup.
pub fn load() -> Result<Vec<Family>, String> {
    let mut families = Vec::new();
    for (model_type, text) in [
        (ModelType::Llm, LLM),
        (ModelType::Embedding, EMBEDDING),
        (ModelType::Rerank, RERANK),
    ] {
        let list: Vec<Map<String, Value>> = serde_json::from_str(text)
            .map_err(|e| format!("built-in {model_type} catalogue is not valid: {e}"))?;
        for raw in list {
            let name = raw
                .get("model_name")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("a built-in {model_type} family has no model_name"))?
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
        ] {
            assert!(families.iter().any(|f| f.name == name), "{name} missing");
        }
    }
}
