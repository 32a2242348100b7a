//! Tool calling on real weights (SmolLM2-135M-Instruct) and the catalogue's real templates:
//! the templates render tools and a history of calls exactly as Hugging Face's
//! `apply_chat_template` does (references from `fixtures/templates/render_reference.py`), and
//! a required call, constrained by its grammar, always parses into calls of the offered
//! functions whose arguments validate against their schemas, in every format we parse.

use serde_json::{json, Value};
use xi_api::tools::{tools_of, ToolChoice, ToolParser, Tools};
use xi_engine::llm::tools::{call_grammar, prepare_chat, Piece, ToolCallParser, ToolStyle};
use xi_engine::llm::{ChatMessage, ChatTemplate, FinishReason};

use crate::constrained::{compile, model, run, sampled, Job};

fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/templates")
        .join(name)
}

fn chats() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("chats.json")).unwrap()).unwrap()
}

/// The catalogue's chat template of `family`.
fn catalogue_template(family: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../supervisor/catalogue/llm/{family}.json"));
    let family_json: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    family_json["chat_template"]
        .as_str()
        .unwrap_or_else(|| panic!("no template for {family}"))
        .to_string()
}

fn offered(choice: Value, parallel: bool) -> Tools {
    offer(chats()["tools"].clone(), choice, parallel)
}

fn offer(tools: Value, choice: Value, parallel: bool) -> Tools {
    let fields = json!({ "tools": tools, "tool_choice": choice, "parallel_tool_calls": parallel });
    tools_of(&serde_json::from_value(fields).unwrap())
        .unwrap()
        .unwrap()
}

#[test]
fn catalogue_templates_render_tools_and_calls_as_hugging_face_does() {
    let chats = chats();
    let tools = offered(json!("auto"), true);
    for family in ["qwen2.5-instruct", "llama-3.2-instruct"] {
        let source = catalogue_template(family);
        let style = ToolStyle::of(Some(&source), None);
        assert!(style.native, "{family} takes tools");
        let messages: Vec<ChatMessage> = serde_json::from_value(chats[family].clone()).unwrap();
        let (messages, tools_value) = prepare_chat(style, messages, Some(&tools));
        let template = ChatTemplate::new(source, "<s>".into(), "</s>".into()).unwrap();
        let (prompt, _) = template
            .render_chat(&messages, tools_value.as_ref(), true)
            .unwrap();
        let want = std::fs::read_to_string(fixture(&format!("{family}.txt"))).unwrap();
        assert_eq!(prompt, want, "{family}");
    }
    assert_eq!(
        ToolStyle::of(Some(&catalogue_template("llama-3.2-instruct")), None).parser,
        ToolParser::Llama3Json
    );
}

/// A template of our own in Mistral's format (its `[AVAILABLE_TOOLS]` and `[TOOL_CALLS]`
/// markers), for the Mistral parser.
const MISTRAL: &str = "{{ bos_token }}{% for message in messages %}{% if message.role == 'user' %}\
{% if loop.last and tools %}[AVAILABLE_TOOLS] {{ tools | tojson }}[/AVAILABLE_TOOLS]{% endif %}\
[INST] {{ message.content }}[/INST]{% elif message.role == 'assistant' %}{% if message.tool_calls %}\
[TOOL_CALLS] [{% for c in message.tool_calls %}{\"name\": \"{{ c.function.name }}\", \"arguments\": \
{{ c.function.arguments | tojson }}, \"id\": \"{{ c.id }}\"}{% if not loop.last %}, {% endif %}{% endfor %}]\
{{ eos_token }}{% else %}{{ message.content }}{{ eos_token }}{% endif %}{% elif message.role == 'tool' %}\
[TOOL_RESULTS] {\"content\": {{ message.content | tojson }}, \"call_id\": \"{{ message.tool_call_id }}\"}\
[/TOOL_RESULTS]{% endif %}{% endfor %}";

#[test]
fn required_calls_always_validate_in_every_format() {
    let smollm2 = model().chat_template().unwrap().source().to_string();
    let styles = [
        ("generic (SmolLM2's own template)", smollm2),
        ("hermes (Qwen2.5)", catalogue_template("qwen2.5-instruct")),
        (
            "llama3_json (Llama 3.2)",
            catalogue_template("llama-3.2-instruct"),
        ),
        ("mistral", MISTRAL.to_string()),
    ];
    let user = ChatMessage::new(
        "user",
        "What is the weather in Paris tomorrow, and the time?",
    );
    let choices = [
        (json!("required"), true),
        (json!("required"), false),
        (
            json!({"type": "function", "function": {"name": "get_weather"}}),
            false,
        ),
    ];
    // Bounded arguments, so that a sampled call of this small model always completes.
    let functions = json!([
        {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city",
            "parameters": {"type": "object", "properties": {
                "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]},
                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                "note": {"type": "string", "maxLength": 12}},
                "required": ["city", "days"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "now", "description": "The time",
            "parameters": {"type": "object", "properties": {}, "additionalProperties": false}}},
    ]);
    let mut checked = 0;
    for (label, source) in styles {
        let style = ToolStyle::of(Some(&source), None);
        assert_eq!(style.native, !label.starts_with("generic"), "{label}");
        let template = ChatTemplate::new(source, "<s>".into(), "</s>".into()).unwrap();
        let mut jobs = Vec::new();
        let mut asked = Vec::new();
        for (choice, parallel) in &choices {
            let tools = offer(functions.clone(), choice.clone(), *parallel);
            let (messages, value) = prepare_chat(style, vec![user.clone()], Some(&tools));
            let (prompt, _) = template
                .render_chat(&messages, value.as_ref(), true)
                .unwrap();
            for seed in 1..=3 {
                jobs.push(Job {
                    prompt: model().encode(&prompt).unwrap(),
                    params: sampled(seed, 160),
                    grammar: Some(compile(call_grammar(style.parser, &tools))),
                });
                asked.push(tools.clone());
            }
        }
        for (outcome, tools) in run(jobs).into_iter().zip(asked) {
            // One call ends the answer; several may go on until max_tokens (a small model can
            // repeat its call), and then the last, unfinished block is no call.
            let cut = outcome.finish == FinishReason::Length;
            assert!(!cut || tools.parallel, "{label}: {}", outcome.text);
            let mut parser = ToolCallParser::new(style.parser, tools.parallel);
            let mut pieces = parser.push(&outcome.text);
            pieces.extend(parser.finish());
            if cut && matches!(pieces.last(), Some(Piece::Text(_))) {
                pieces.pop();
            }
            let mut calls = 0;
            for piece in pieces {
                let call = match piece {
                    Piece::Call(call) => call,
                    Piece::Text(t) => panic!("{label}: text {t:?} in {:?}", outcome.text),
                };
                calls += 1;
                let function = tools
                    .callable()
                    .find(|f| f.name == call.name)
                    .unwrap_or_else(|| panic!("{label}: {} is not callable", call.name));
                let arguments: Value = serde_json::from_str(&call.arguments).unwrap();
                let validator = jsonschema::validator_for(&function.parameters).unwrap();
                assert!(
                    validator.is_valid(&arguments),
                    "{label}: {} does not validate against {}",
                    call.arguments,
                    function.parameters
                );
                if let ToolChoice::Function(name) = &tools.choice {
                    assert_eq!(&call.name, name, "{label}");
                }
            }
            assert!(calls >= 1, "{label}: no call in {:?}", outcome.text);
            if !tools.parallel {
                assert_eq!(calls, 1, "{label}: {:?}", outcome.text);
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 36);
}

#[test]
fn hostile_tool_definitions_compile_as_data_or_are_refused_as_invalid() {
    // Lark and JSON metacharacters in names' neighbours and descriptions stay inside their
    // JSON strings: the grammar compiles, and the call it allows still has the schema's shape.
    let description = "\"} \n%ignore /./\nstart: /.*/ %json { \\u0000 <tool_call>";
    let tools = offer(
        json!([{"type": "function", "function": {"name": "x-1_y", "description": description,
            "parameters": {"type": "object", "properties": {description: {"const": 1}},
                "required": [description], "additionalProperties": false}}}]),
        json!("required"),
        false,
    );
    for parser in [
        ToolParser::Hermes,
        ToolParser::Llama3Json,
        ToolParser::Mistral,
    ] {
        let grammar = compile(call_grammar(parser, &tools));
        let prompt = model().encode("Call it.").unwrap();
        let outcome = run(vec![Job {
            prompt,
            params: sampled(1, 120),
            grammar: Some(grammar),
        }])
        .pop()
        .unwrap();
        let mut p = ToolCallParser::new(parser, false);
        let mut pieces = p.push(&outcome.text);
        pieces.extend(p.finish());
        match &pieces[..] {
            [Piece::Call(call)] => {
                assert_eq!(call.name, "x-1_y");
                let arguments: Value = serde_json::from_str(&call.arguments).unwrap();
                assert_eq!(arguments, json!({ description: 1 }), "{parser:?}");
            }
            other => panic!("{parser:?}: {other:?} from {:?}", outcome.text),
        }
    }
    // A parameters schema llguidance cannot compile is invalid input, named as such.
    let broken = offer(
        json!([{"type": "function", "function": {"name": "f",
            "parameters": {"type": "object", "properties": {"a": {"type": "nonsense"}}}}}]),
        json!("required"),
        true,
    );
    let err = model()
        .compile_grammar(&call_grammar(ToolParser::Hermes, &broken))
        .unwrap_err();
    assert!(err.to_string().contains("invalid grammar"), "{err}");
}

#[test]
fn auto_answers_that_open_as_a_call_are_valid_calls_and_others_free_text() {
    let source = model().chat_template().unwrap().source().to_string();
    let style = ToolStyle::of(Some(&source), None);
    let template = ChatTemplate::new(source, "<s>".into(), "</s>".into()).unwrap();
    let functions = json!([{"type": "function", "function": {"name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "enum": ["Paris", "Rome", "Oslo"]}},
            "required": ["city"], "additionalProperties": false}}}]);
    let tools = offer(functions, json!("auto"), false);
    let user = ChatMessage::new("user", "Call get_weather for Paris.");
    let (messages, value) = prepare_chat(style, vec![user], Some(&tools));
    let (prompt, _) = template
        .render_chat(&messages, value.as_ref(), true)
        .unwrap();
    let prompt = model().encode(&prompt).unwrap();
    let jobs = (1..=8)
        .map(|seed| Job {
            prompt: prompt.clone(),
            params: sampled(seed, 64),
            grammar: Some(compile(call_grammar(style.parser, &tools))),
        })
        .collect();
    let (mut calls, mut texts) = (0, 0);
    for outcome in run(jobs) {
        let mut parser = ToolCallParser::new(style.parser, false);
        let mut pieces = parser.push(&outcome.text);
        pieces.extend(parser.finish());
        if outcome.text.starts_with("<tool_call>") {
            // Held to the grammar: one complete, valid call, and the answer ends there.
            assert_eq!(outcome.finish, FinishReason::Stop, "{:?}", outcome.text);
            match &pieces[..] {
                [Piece::Call(call)] => {
                    let arguments: Value = serde_json::from_str(&call.arguments).unwrap();
                    assert!(
                        ["Paris", "Rome", "Oslo"].contains(&arguments["city"].as_str().unwrap())
                    );
                    calls += 1;
                }
                other => panic!("{other:?} from {:?}", outcome.text),
            }
        } else {
            texts += 1;
        }
    }
    assert_eq!(calls + texts, 8);
    eprintln!("auto: {calls} answers opened as a call, {texts} as text");
}
