//! Grammar-constrained decoding on SmolLM2-135M-Instruct (Q8_0): sampled outputs that always
//! follow their JSON schema, regex, choice or Lark grammar; grammars llguidance cannot compile
//! refused as invalid input; constrained and free sequences batched together.

use std::sync::OnceLock;
use std::time::Duration;

use candle_core::quantized::GgmlDType;
use serde_json::{json, Value};
use xi_engine::llm::{
    Backend, ChatMessage, CompiledGrammar, FinishReason, GenerationParams, Guide, Llm, LlmModel,
    MaskStats, Sequence,
};
use xi_engine::EngineError;
use xi_testkit::smollm2_gguf;

/// One model for every test here (Q8_0: batched rows compute what lone rows compute).
pub(crate) fn model() -> &'static LlmModel {
    static MODEL: OnceLock<LlmModel> = OnceLock::new();
    MODEL.get_or_init(|| LlmModel::load_gguf(&smollm2_gguf(), None, Some(GgmlDType::Q8_0)).unwrap())
}

fn chat(model: &LlmModel, text: &str) -> Vec<u32> {
    let messages = [ChatMessage::new("user", text)];
    model
        .encode(&model.chat_prompt(&messages).unwrap())
        .unwrap()
}

pub(crate) fn sampled(seed: u64, max_tokens: usize) -> GenerationParams {
    GenerationParams {
        max_tokens,
        temperature: 0.8,
        seed,
        ..GenerationParams::GREEDY
    }
}

/// One sequence to run: its prompt, how to sample, and its grammar if any.
pub(crate) struct Job {
    pub prompt: Vec<u32>,
    pub params: GenerationParams,
    pub grammar: Option<CompiledGrammar>,
}

pub(crate) struct Outcome {
    pub text: String,
    pub tokens: Vec<u32>,
    pub finish: FinishReason,
    pub masks: MaskStats,
}

/// Runs every job in one batch, stepped together until all finish.
fn run_together<B: Backend>(m: &Llm<B>, jobs: Vec<Job>) -> Vec<Outcome> {
    let mut seqs: Vec<Sequence<B>> = jobs
        .into_iter()
        .map(|job| {
            let mut seq = m.start(job.prompt, job.params).unwrap();
            if let Some(grammar) = job.grammar {
                seq.constrain(grammar);
            }
            seq
        })
        .collect();
    while seqs.iter().any(|s| s.finished().is_none()) {
        let mut refs: Vec<&mut Sequence<B>> = seqs.iter_mut().collect();
        m.step(&mut refs, 512).unwrap();
    }
    seqs.iter()
        .map(|s| Outcome {
            text: s.text().to_string(),
            tokens: s.generated().to_vec(),
            finish: s.finished().unwrap(),
            masks: s.mask_stats(),
        })
        .collect()
}

pub(crate) fn run(jobs: Vec<Job>) -> Vec<Outcome> {
    xi_engine::with_llm!(model(), m => run_together(m, jobs))
}

pub(crate) fn compile(grammar: Guide) -> CompiledGrammar {
    model().compile_grammar(&grammar).unwrap()
}

/// Twenty small schemas: nested objects, bounded arrays, enums and consts, required and
/// optional fields, ranged integers and numbers, patterns, formats, booleans, nullables,
/// anyOf, $ref. Strings are bounded so that a sampled output always completes.
fn schemas() -> Vec<Value> {
    vec![
        json!({"type": "object", "properties": {
            "name": {"type": "string", "maxLength": 20},
            "age": {"type": "integer", "minimum": 0, "maximum": 120}},
            "required": ["name", "age"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"user": {"type": "object", "properties": {
            "id": {"type": "integer", "minimum": 1, "maximum": 9999},
            "email": {"type": "string", "pattern": "^[a-z]{1,10}@[a-z]{1,10}\\.com$"}},
            "required": ["id", "email"], "additionalProperties": false}},
            "required": ["user"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"tags": {"type": "array",
            "items": {"type": "string", "maxLength": 12}, "minItems": 1, "maxItems": 3}},
            "required": ["tags"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
            "color": {"enum": ["red", "green", "blue"]},
            "size": {"type": "string", "enum": ["S", "M", "L"]}},
            "required": ["color", "size"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
            "done": {"type": "boolean"},
            "title": {"type": "string", "maxLength": 30}},
            "required": ["done", "title"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
            "middle_name": {"type": ["string", "null"], "maxLength": 15},
            "score": {"type": ["integer", "null"], "minimum": 0, "maximum": 10}},
            "required": ["middle_name", "score"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"value": {"anyOf": [
            {"type": "integer", "minimum": 0, "maximum": 100},
            {"type": "string", "maxLength": 10}]}},
            "required": ["value"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"points": {"type": "array", "items": {
            "type": "object", "properties": {
                "x": {"type": "integer", "minimum": -10, "maximum": 10},
                "y": {"type": "integer", "minimum": -10, "maximum": 10}},
            "required": ["x", "y"], "additionalProperties": false},
            "minItems": 2, "maxItems": 3}},
            "required": ["points"], "additionalProperties": false}),
        json!({"type": "array", "items": {"type": "integer", "minimum": 1, "maximum": 50},
            "minItems": 3, "maxItems": 5}),
        json!({"type": "object", "properties": {
            "zip": {"type": "string", "pattern": "^[0-9]{5}$"},
            "phone": {"type": "string", "pattern": "^\\d{3}-\\d{4}$"}},
            "required": ["zip", "phone"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
            "version": {"const": 2}, "kind": {"const": "config"}},
            "required": ["version", "kind"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
            "a": {"type": "integer", "minimum": 0, "maximum": 9}, "b": {"type": "boolean"}},
            "required": ["a"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
            "temperature": {"type": "number", "minimum": -50, "maximum": 50},
            "unit": {"enum": ["C", "F"]}},
            "required": ["temperature", "unit"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"a": {"type": "object", "properties": {
            "b": {"type": "object", "properties": {
                "c": {"type": "integer", "minimum": 0, "maximum": 5}},
                "required": ["c"], "additionalProperties": false}},
            "required": ["b"], "additionalProperties": false}},
            "required": ["a"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"answer": {"enum": ["yes", "no", null, 42]}},
            "required": ["answer"], "additionalProperties": false}),
        json!({"type": "object", "properties": {"days": {"type": "array",
            "items": {"enum": ["mon", "tue", "wed", "thu", "fri"]},
            "minItems": 1, "maxItems": 4}},
            "required": ["days"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
            "code": {"type": "string", "minLength": 3, "maxLength": 6}},
            "required": ["code"], "additionalProperties": false}),
        json!({"anyOf": [
            {"type": "object", "properties": {"cat": {"type": "string", "maxLength": 10}},
                "required": ["cat"], "additionalProperties": false},
            {"type": "object", "properties": {
                "dog": {"type": "integer", "minimum": 0, "maximum": 20}},
                "required": ["dog"], "additionalProperties": false}]}),
        json!({"type": "object", "$defs": {"item": {"type": "object", "properties": {
            "sku": {"type": "string", "pattern": "^[A-Z]{3}[0-9]{2}$"},
            "qty": {"type": "integer", "minimum": 1, "maximum": 99}},
            "required": ["sku", "qty"], "additionalProperties": false}},
            "properties": {"order": {"type": "array", "items": {"$ref": "#/$defs/item"},
                "minItems": 1, "maxItems": 2}},
            "required": ["order"], "additionalProperties": false}),
        json!({"type": "object", "properties": {
            "date": {"type": "string", "format": "date"}, "ok": {"type": "boolean"}},
            "required": ["date", "ok"], "additionalProperties": false}),
    ]
}

#[test]
fn compiled_grammars_can_cross_threads() {
    fn send<T: Send>() {}
    send::<CompiledGrammar>();
}

#[test]
fn sampled_json_always_validates_against_its_schema() {
    let model = model();
    let schemas = schemas();
    assert_eq!(schemas.len(), 20);
    let mut jobs = Vec::new();
    for seed in 0..3 {
        for schema in &schemas {
            let prompt = chat(
                model,
                &format!("Reply with one JSON value that follows this JSON schema: {schema}"),
            );
            jobs.push(Job {
                prompt,
                params: sampled(seed, 256),
                grammar: Some(compile(Guide::JsonSchema {
                    schema: schema.clone(),
                })),
            });
        }
    }
    let outcomes = run(jobs);
    let mut masks = MaskStats::default();
    for (i, out) in outcomes.iter().enumerate() {
        let schema = &schemas[i % schemas.len()];
        let what = format!("schema {} seed {}: {:?}", i % 20, i / 20, out.text);
        assert_eq!(out.finish, FinishReason::Stop, "{what}");
        let value: Value =
            serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{what}: {e}"));
        let validator = jsonschema::options()
            .should_validate_formats(true)
            .build(schema)
            .unwrap();
        if let Err(e) = validator.validate(&value) {
            panic!("{what}: {e}");
        }
        assert!(out.masks.masks >= out.tokens.len() as u64, "{what}");
        masks.masks += out.masks.masks;
        masks.time += out.masks.time;
    }
    let per_mask = masks.time / masks.masks.max(1) as u32;
    eprintln!("{} masks, {per_mask:?} a mask", masks.masks);
    assert!(per_mask < Duration::from_millis(50), "{per_mask:?} a mask");
}

#[test]
fn json_object_mode_yields_an_object() {
    let model = model();
    let prompt = chat(
        model,
        "Describe a cat as a JSON object with its name and age.",
    );
    let jobs = (0..2)
        .map(|seed| Job {
            prompt: prompt.clone(),
            params: sampled(seed, 256),
            grammar: Some(compile(Guide::JsonObject)),
        })
        .collect();
    for out in run(jobs) {
        assert_eq!(out.finish, FinishReason::Stop, "{:?}", out.text);
        let value: Value = serde_json::from_str(&out.text).unwrap();
        assert!(value.is_object(), "{value}");
    }
}

#[test]
fn regexes_choices_and_lark_grammars_are_followed_exactly() {
    let model = model();
    // Quotes, a backslash, a newline, DEL and Lark syntax: literals, never grammar.
    let tricky = "say \"hi\" \\ \n\u{7f} | start: /x/".to_string();
    let choices = vec![
        "yes".to_string(),
        "no".to_string(),
        "maybe so".to_string(),
        tricky.clone(),
    ];
    let lark = r#"
        start: greeting " " name "!"
        greeting: "Hello" | "Hi"
        name: /[A-Z][a-z]{1,8}/
    "#;
    type Check<'a> = Box<dyn Fn(&str) -> bool + 'a>;
    // `\d` is ASCII: the model must not answer in another script's digits.
    let cases: Vec<(&str, Guide, Check)> = vec![
        (
            "What is your phone number?",
            Guide::Regex {
                pattern: r"\d{3}-\d{4}".into(),
            },
            Box::new(|t| full(r"[0-9]{3}-[0-9]{4}", t)),
        ),
        (
            "When were you born? Answer with a date.",
            Guide::Regex {
                pattern: r"(19|20)\d{2}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])".into(),
            },
            Box::new(|t| {
                full(
                    r"(19|20)[0-9]{2}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])",
                    t,
                )
            }),
        ),
        (
            "Is the sea blue?",
            Guide::Choice {
                choices: choices.clone(),
            },
            Box::new(|t| choices.iter().any(|c| c == t)),
        ),
        (
            "Say something.",
            Guide::Choice {
                choices: vec![tricky.clone()],
            },
            Box::new(|t| t == tricky),
        ),
        (
            "Greet someone by name.",
            Guide::Grammar { lark: lark.into() },
            Box::new(|t| full(r"(Hello|Hi) [A-Z][a-z]{1,8}!", t)),
        ),
    ];
    let mut jobs = Vec::new();
    for seed in 0..3 {
        for (prompt, grammar, _) in &cases {
            jobs.push(Job {
                prompt: chat(model, prompt),
                params: sampled(seed, 64),
                grammar: Some(compile(grammar.clone())),
            });
        }
    }
    for (i, out) in run(jobs).iter().enumerate() {
        let (_, grammar, ok) = &cases[i % cases.len()];
        assert_eq!(
            out.finish,
            FinishReason::Stop,
            "{grammar:?}: {:?}",
            out.text
        );
        assert!(ok(&out.text), "{grammar:?}: {:?}", out.text);
    }
}

fn full(pattern: &str, text: &str) -> bool {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .unwrap()
        .is_match(text)
}

#[test]
fn grammars_llguidance_cannot_compile_are_invalid_input() {
    let cases = [
        (
            Guide::JsonSchema {
                schema: json!({"type": "string", "pattern": "(unclosed"}),
            },
            "unclosed",
        ),
        (
            Guide::JsonSchema {
                schema: json!({"type": "strnig"}),
            },
            "strnig",
        ),
        (
            Guide::Regex {
                pattern: "a(b".into(),
            },
            "invalid grammar",
        ),
        (
            Guide::Grammar {
                lark: "start: ( \"a\"".into(),
            },
            "invalid grammar",
        ),
        (
            Guide::Grammar {
                lark: "start: missing_rule".into(),
            },
            "missing_rule",
        ),
        (Guide::Choice { choices: vec![] }, "at least one option"),
    ];
    for (grammar, needle) in cases {
        match model().compile_grammar(&grammar) {
            Err(EngineError::InvalidInput(msg)) => {
                assert!(msg.starts_with("invalid grammar: "), "{msg}");
                assert!(msg.contains(needle), "{grammar:?}: {msg}");
                assert!(msg.len() < 1200, "{msg}");
            }
            other => panic!("{grammar:?}: {other:?}"),
        }
    }
}

#[test]
fn a_grammar_cut_short_by_max_tokens_ends_with_length() {
    let model = model();
    let schema = schemas().remove(0);
    let outcomes = run(vec![Job {
        prompt: chat(model, "Give me a person as JSON."),
        params: sampled(0, 3),
        grammar: Some(compile(Guide::JsonSchema { schema })),
    }]);
    assert_eq!(outcomes[0].finish, FinishReason::Length);
    assert_eq!(outcomes[0].tokens.len(), 3);
    assert!(outcomes[0].text.starts_with('{'), "{:?}", outcomes[0].text);
}

#[test]
fn a_complete_grammar_stops_even_with_ignore_eos() {
    let model = model();
    let params = GenerationParams {
        ignore_eos: true,
        ..sampled(1, 64)
    };
    let outcomes = run(vec![Job {
        prompt: chat(model, "Yes or no?"),
        params,
        grammar: Some(compile(Guide::Choice {
            choices: vec!["yes".into(), "no".into()],
        })),
    }]);
    assert_eq!(outcomes[0].finish, FinishReason::Stop);
    assert!(["yes", "no"].contains(&outcomes[0].text.as_str()));
}

#[test]
fn a_constrained_sequence_leaves_a_free_one_in_its_batch_unchanged() {
    let model = model();
    let free = || Job {
        prompt: chat(model, "Write a haiku about the sea."),
        params: GenerationParams {
            max_tokens: 32,
            ..GenerationParams::GREEDY
        },
        grammar: None,
    };
    let schema = schemas().remove(7);
    let constrained = Job {
        prompt: chat(model, "Give me two points as JSON."),
        params: sampled(3, 256),
        grammar: Some(compile(Guide::JsonSchema {
            schema: schema.clone(),
        })),
    };
    let alone = run(vec![free()]).remove(0);
    let together = run(vec![free(), constrained]);
    assert_eq!(together[0].tokens, alone.tokens);
    assert_eq!(together[0].masks, MaskStats::default());
    assert_eq!(
        together[1].finish,
        FinishReason::Stop,
        "{:?}",
        together[1].text
    );
    let value: Value = serde_json::from_str(&together[1].text).unwrap();
    assert!(jsonschema::is_valid(&schema, &value), "{value}");
}

#[test]
fn hostile_grammars_are_refused_quickly() {
    let mut deep = json!({"type": "integer"});
    for _ in 0..200 {
        deep = json!({"type": "array", "items": deep});
    }
    let huge_enum: Vec<String> = (0..100_000).map(|i| format!("value{i}")).collect();
    let cases = [
        // Deeper than a request body can parse to, and deep enough to overflow the stack of
        // llguidance's recursive schema compiler.
        (Guide::JsonSchema { schema: deep }, "nests deeper than 128"),
        (
            Guide::JsonSchema {
                schema: json!({ "enum": huge_enum }),
            },
            "too big",
        ),
        (
            Guide::Grammar {
                lark: format!("start: {}\"a\"{}", "(".repeat(5000), ")".repeat(5000)),
            },
            "too deeply nested",
        ),
    ];
    for (grammar, needle) in cases {
        let started = std::time::Instant::now();
        let result = model().compile_grammar(&grammar);
        // The first compile in this process also builds the model's grammar compiler.
        assert!(started.elapsed() < Duration::from_secs(10));
        match result {
            Err(EngineError::InvalidInput(msg)) => {
                assert!(msg.contains(needle), "{msg}");
                assert!(msg.len() < 1200, "{} bytes", msg.len());
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn constrained_decoding_works_on_the_portable_path_too() {
    // The GPU path (candle tensor ops), here on the CPU: same sampler, same masks.
    let options = xi_engine::llm::LoadOptions {
        placement: xi_engine::Placement::cpu_portable(candle_core::DType::F32),
        ..Default::default()
    };
    let model = LlmModel::load(&smollm2_gguf(), &options, &mut |_| {}).unwrap();
    assert!(matches!(model, LlmModel::Portable(_)));
    let schemas = schemas();
    let picked = [&schemas[1], &schemas[8]];
    let jobs = picked
        .iter()
        .map(|&schema| Job {
            prompt: chat(&model, &format!("Reply with JSON that follows: {schema}")),
            params: sampled(5, 128),
            grammar: Some(
                model
                    .compile_grammar(&Guide::JsonSchema {
                        schema: schema.clone(),
                    })
                    .unwrap(),
            ),
        })
        .collect();
    let outcomes = xi_engine::with_llm!(&model, m => run_together(m, jobs));
    for (schema, out) in picked.iter().zip(outcomes) {
        assert_eq!(out.finish, FinishReason::Stop, "{:?}", out.text);
        let value: Value = serde_json::from_str(&out.text).unwrap();
        assert!(jsonschema::is_valid(schema, &value), "{value}");
    }
}
