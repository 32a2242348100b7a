//! Chat templates are untrusted code: every render is bounded by an instruction budget (fuel),
//! a recursion limit and an output limit, and the error names the limit. The catalogue's real
//! templates stay far inside the limits even with long chats.

use std::time::{Duration, Instant};

use xi_engine::llm::template::{ChatMessage, ChatTemplate, TemplateLimits, DEFAULT_FUEL};

fn template(source: &str) -> ChatTemplate {
    ChatTemplate::new(source.to_string(), "<s>".into(), "</s>".into()).unwrap()
}

fn hello() -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", "hello")]
}

/// Renders and returns the error message (the render must fail), and how long it took.
fn failure(t: &ChatTemplate) -> (String, Duration) {
    let started = Instant::now();
    let err = t.render(&hello(), true).unwrap_err();
    (err.to_string(), started.elapsed())
}

#[test]
fn nested_loops_run_out_of_fuel_quickly() {
    // A billion iterations without a budget: minutes to hours of CPU.
    let t = template(
        "{% for a in range(1000) %}{% for b in range(1000) %}{% for c in range(1000) %}\
         {% endfor %}{% endfor %}{% endfor %}",
    );
    let (message, took) = failure(&t);
    assert_eq!(
        message,
        format!("the chat template exceeded its instruction budget (fuel {DEFAULT_FUEL})")
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn a_smaller_budget_is_the_one_named() {
    let limits = TemplateLimits {
        fuel: 5_000,
        ..TemplateLimits::default()
    };
    let source = "{% for a in range(100000) %}{{ a }}{% endfor %}".to_string();
    let t = ChatTemplate::with_limits(source, String::new(), String::new(), limits).unwrap();
    let (message, _) = failure(&t);
    assert_eq!(
        message,
        "the chat template exceeded its instruction budget (fuel 5000)"
    );
}

#[test]
fn recursive_macros_hit_the_recursion_limit() {
    let t = template("{% macro down(n) %}{{ down(n + 1) }}{% endmacro %}{{ down(0) }}");
    let (message, _) = failure(&t);
    assert_eq!(
        message,
        "the chat template exceeded its recursion limit (200)"
    );
    // Called through a filter, the limit is still the one named.
    let t = template(
        "{% macro down(n) %}{{ [n] | map('string') | join }}{{ down(n + 1) }}{% endmacro %}\
         {{ down(0) }}",
    );
    assert_eq!(
        failure(&t).0,
        "the chat template exceeded its recursion limit (200)"
    );
}

#[test]
fn output_past_the_limit_is_refused() {
    // 100 MB of output from 100k cheap iterations (well inside the fuel).
    let t = template("{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}");
    let (message, _) = failure(&t);
    assert_eq!(
        message,
        "the chat template exceeded its output limit of 33554432 bytes"
    );

    let limits = TemplateLimits {
        output_bytes: 10,
        ..TemplateLimits::default()
    };
    let t = ChatTemplate::with_limits(
        "{{ 'x' * 11 }}".into(),
        String::new(),
        String::new(),
        limits,
    )
    .unwrap();
    assert_eq!(
        failure(&t).0,
        "the chat template exceeded its output limit of 10 bytes"
    );
    let exact = ChatTemplate::with_limits(
        "{{ 'x' * 10 }}".into(),
        String::new(),
        String::new(),
        limits,
    )
    .unwrap();
    assert_eq!(exact.render(&hello(), true).unwrap(), "x".repeat(10));
}

#[test]
fn template_errors_and_parse_errors_are_still_reported() {
    let t = template("{{ raise_exception('no system messages, please') }}");
    assert!(
        failure(&t).0.contains("no system messages, please"),
        "{}",
        failure(&t).0
    );
    let err = ChatTemplate::new("{% for %}".into(), String::new(), String::new())
        .err()
        .unwrap();
    assert!(
        err.to_string().contains("the chat template does not parse"),
        "{err}"
    );
}

/// `n` alternating user/assistant messages after a system message.
fn long_chat(n: usize) -> Vec<ChatMessage> {
    let mut messages = vec![ChatMessage::new("system", "You are a helpful assistant.")];
    for i in 0..n {
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(ChatMessage::new(
            role,
            format!("message number {i}, with a few words in it"),
        ));
    }
    messages
}

#[test]
fn catalogue_templates_use_a_small_share_of_the_budget() {
    let families = crate::catalogue::families("llm");
    let with_templates = families
        .iter()
        .filter(|f| f["chat_template"].is_string())
        .count();
    assert!(with_templates >= 3);
    for family in &families {
        let name = family["model_name"].as_str().unwrap();
        // A family without one uses the template its model files carry.
        let Some(source) = family["chat_template"].as_str().map(String::from) else {
            continue;
        };
        let t = ChatTemplate::new(source, "<s>".into(), "</s>".into()).unwrap();
        let (_, fuel_1) = t.render_metered(&long_chat(1), true).unwrap();
        let (prompt, fuel_120) = t.render_metered(&long_chat(120), true).unwrap();
        assert!(prompt.contains("message number 119"), "{name}");
        let per_message = (fuel_120 - fuel_1) / 119;
        eprintln!(
            "{name}: fuel {fuel_1} for 1 message, {fuel_120} for 120 ({per_message}/message)"
        );
        // 120 messages take under 1% of the budget: tens of thousands of messages fit.
        assert!(fuel_120 < DEFAULT_FUEL / 100, "{name}: {fuel_120}");
        assert!(per_message * 20_000 < DEFAULT_FUEL, "{name}: {per_message}");
    }
}
