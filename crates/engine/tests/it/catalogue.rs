//! The built-in catalogue (`crates/supervisor/catalogue/<type>/<family>.json`, one file per
//! family), checked against what this engine runs. Each file must be upstream's on-disk shape,
//! with:
//! - unique names;
//! - specs this engine loads (`pytorch` or `ggufv2`, a hub id for each, a file name template
//!   with `{quantization}` for GGUF);
//! - architectures it has a decoder for;
//! - a chat template that renders, when the family carries one;
//! - reasoning tags for a `reasoning` family, and a tool format we parse for a `tools` one.

use std::collections::HashSet;
use std::path::PathBuf;

use serde_json::Value;
use xi_api::tools::ToolParser;
use xi_engine::llm::config::Arch;
use xi_engine::llm::{ChatMessage, ChatTemplate};

fn folder(kind: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../supervisor/catalogue")
        .join(kind)
}

/// Every family file of one model type, parsed (a file that is not JSON fails here, naming it).
pub fn families(kind: &str) -> Vec<Value> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(folder(kind))
        .unwrap_or_else(|e| panic!("catalogue/{kind}: {e}"))
        .map(|entry| entry.unwrap().path())
        .collect();
    paths.sort();
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path).unwrap();
            let family: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            let stem = path.file_stem().unwrap().to_string_lossy();
            assert_eq!(
                family["model_name"],
                *stem,
                "{}: the file is named after its family",
                path.display()
            );
            family
        })
        .collect()
}

/// The problems of one family's specs (empty: none). LLM specs also name their size.
fn spec_problems(name: &str, family: &Value, llm: bool) -> Vec<String> {
    let mut problems = Vec::new();
    let specs = family["model_specs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if specs.is_empty() {
        problems.push(format!("{name}: no model_specs"));
    }
    for (i, spec) in specs.iter().enumerate() {
        let format = spec["model_format"].as_str().unwrap_or("");
        if !matches!(format, "pytorch" | "ggufv2") {
            problems.push(format!(
                "{name}: spec {i}: model_format {format:?} is not run here"
            ));
        }
        if llm && spec["model_size_in_billions"].is_null() {
            problems.push(format!("{name}: spec {i}: no model_size_in_billions"));
        }
        let Some(sources) = spec["model_src"].as_object() else {
            problems.push(format!("{name}: spec {i}: no model_src"));
            continue;
        };
        for (hub, source) in sources {
            let id = source["model_id"].as_str().unwrap_or("");
            if !xi_api::names::is_hub_repo_id(id) {
                problems.push(format!("{name}: spec {i}: {hub}: model_id {id:?}"));
            }
            let quantizations = source["quantizations"].as_array().map_or(0, Vec::len);
            if quantizations == 0 {
                problems.push(format!("{name}: spec {i}: {hub}: no quantizations"));
            }
            let template = source["model_file_name_template"].as_str().unwrap_or("");
            if format == "ggufv2" && !template.contains("{quantization}") {
                problems.push(format!(
                    "{name}: spec {i}: {hub}: a GGUF spec needs a file name template with {{quantization}}"
                ));
            }
        }
    }
    problems
}

/// The problems of one LLM family beyond its specs.
fn llm_problems(name: &str, family: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if family["context_length"].as_u64().unwrap_or(0) == 0 {
        problems.push(format!("{name}: no context_length"));
    }
    let architectures = family["architectures"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let runnable = architectures
        .iter()
        .filter_map(Value::as_str)
        .any(|a| Arch::from_hf(a).is_some());
    if !runnable {
        problems.push(format!(
            "{name}: architectures {architectures:?}: none has a decoder here"
        ));
    }
    let abilities: Vec<&str> = family["model_ability"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let known = ["chat", "generate", "tools", "reasoning"];
    if abilities.is_empty() || abilities.iter().any(|a| !known.contains(a)) {
        problems.push(format!(
            "{name}: model_ability {abilities:?} (known: {known:?})"
        ));
    }
    if abilities.contains(&"reasoning") {
        for key in ["reasoning_start_tag", "reasoning_end_tag"] {
            if family[key].as_str().is_none_or(str::is_empty) {
                problems.push(format!("{name}: a reasoning family needs {key}"));
            }
        }
    }
    let template = family["chat_template"].as_str();
    if abilities.contains(&"tools") {
        let parser = family["tool_parser"]
            .as_str()
            .and_then(ToolParser::from_name);
        let from_template = template.and_then(ToolParser::detect);
        if parser.is_none() && from_template.is_none() {
            problems.push(format!(
                "{name}: a tools family needs a tool_parser we parse"
            ));
        }
    }
    if let Some(source) = template {
        let chat = [
            ChatMessage::new("system", "You are a helpful assistant."),
            ChatMessage::new("user", "Hello!"),
        ];
        let rendered = ChatTemplate::new(source.to_string(), "<s>".into(), "</s>".into())
            .and_then(|t| t.render(&chat, true));
        match rendered {
            Ok(prompt) if prompt.contains("Hello!") => {}
            Ok(prompt) => problems.push(format!("{name}: the template drops the chat: {prompt:?}")),
            Err(e) => problems.push(format!("{name}: the template does not render: {e}")),
        }
    }
    if family["stop"].as_array().is_none_or(Vec::is_empty) {
        problems.push(format!("{name}: no stop strings"));
    }
    problems
}

/// An audio family is a Whisper (the speech-to-text architecture we run) whose `.en` suffix
/// and `multilingual` flag agree.
fn audio_problems(name: &str, family: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    if family["model_family"] != "whisper" {
        problems.push(format!("{name}: model_family is not whisper"));
    }
    if family["model_ability"] != serde_json::json!(["audio2text"]) {
        problems.push(format!("{name}: model_ability must be [\"audio2text\"]"));
    }
    if family["multilingual"].as_bool() != Some(!name.ends_with(".en")) {
        problems.push(format!("{name}: multilingual disagrees with the name"));
    }
    problems
}

#[test]
fn every_built_in_family_is_one_this_engine_runs() {
    let mut problems = Vec::new();
    let mut names = HashSet::new();
    let mut count = 0;
    for kind in ["llm", "embedding", "rerank", "audio"] {
        for family in families(kind) {
            count += 1;
            let name = family["model_name"].as_str().unwrap_or("").to_string();
            if !names.insert(name.clone()) {
                problems.push(format!("{name}: the name is used twice"));
            }
            if family["version"] != 2 {
                problems.push(format!("{name}: version must be 2 (upstream's shape)"));
            }
            problems.extend(spec_problems(&name, &family, kind == "llm"));
            match kind {
                "llm" => problems.extend(llm_problems(&name, &family)),
                "embedding" if family["dimensions"].as_u64().unwrap_or(0) == 0 => {
                    problems.push(format!("{name}: no dimensions"))
                }
                "audio" => problems.extend(audio_problems(&name, &family)),
                _ => {}
            }
            if (kind == "embedding" || kind == "rerank")
                && family["max_tokens"].as_u64().unwrap_or(0) == 0
            {
                problems.push(format!("{name}: no max_tokens"));
            }
        }
    }
    assert!(count >= 21, "{count} families");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_checks_catch_a_family_we_cannot_run() {
    let bad: Value = serde_json::json!({
        "version": 2, "model_name": "mixtral", "context_length": 32768,
        "model_ability": ["chat", "reasoning", "tools", "vision"],
        "architectures": ["MixtralForCausalLM"], "stop": [],
        "chat_template": "{{ messages[0].content | nonexistent_filter }}",
        "model_specs": [{"model_format": "awq", "model_size_in_billions": 47,
            "model_src": {"huggingface": {"model_id": "not a repo", "quantizations": []}}},
            {"model_format": "ggufv2", "model_size_in_billions": 47,
            "model_src": {"huggingface": {"model_id": "a/b", "quantizations": ["Q4_0"],
                "model_file_name_template": "x.gguf"}}}],
    });
    let mut problems = spec_problems("mixtral", &bad, true);
    problems.extend(llm_problems("mixtral", &bad));
    let text = problems.join("\n");
    for expected in [
        "model_format \"awq\"",
        "model_id \"not a repo\"",
        "no quantizations",
        "{quantization}",
        "none has a decoder here",
        "model_ability",
        "needs reasoning_start_tag",
        "needs a tool_parser",
        "does not render",
        "no stop strings",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
}
