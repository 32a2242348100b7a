//! The portable forward passes (candle tensor ops only: what CUDA GPUs run) on the CPU, checked
//! against the CPU kernels and the PyTorch references. This keeps the GPU path honest on
//! machines without a GPU; `bench/gpu/` runs the same comparison on a GPU.

use candle_core::quantized::GgmlDType;
use candle_core::DType;
use xi_engine::embedding::EmbedInput;
use xi_engine::llm::{GenerationParams, LlmModel, LoadOptions};
use xi_engine::{CrossEncoder, Embed, EmbeddingModel, Placement, Rerank};
use xi_testkit::{build_cross_encoder, smollm2_gguf};

use crate::support::{fixture, logit_range, max_abs_diff, max_logit_diff, minilm, run_batched};

fn options(placement: Placement, requantize: Option<GgmlDType>) -> LoadOptions {
    LoadOptions {
        requantize,
        placement,
        ..Default::default()
    }
}

fn chat_ids(model: &LlmModel, text: &str) -> Vec<u32> {
    let messages = vec![xi_engine::llm::ChatMessage::new("user", text)];
    model
        .encode(&model.chat_prompt(&messages).unwrap())
        .unwrap()
}

fn greedy(max_tokens: usize) -> GenerationParams {
    GenerationParams {
        max_tokens,
        ..GenerationParams::GREEDY
    }
}

#[test]
fn smollm2_gguf_gives_the_same_greedy_tokens_on_both_paths() {
    // Dequantized to f32, both paths multiply the same dense matrices; only attention, RoPE and
    // the KV caches are computed differently (rounding differences around 1e-5).
    let load = |placement, requantize| {
        LlmModel::load(
            &smollm2_gguf(),
            &options(placement, requantize),
            &mut |_| {},
        )
        .unwrap()
    };
    let fast = load(Placement::cpu(), Some(GgmlDType::F32));
    let portable = load(Placement::cpu_portable(DType::F32), Some(GgmlDType::F32));
    assert_eq!(portable.placement().describe(), "cpu (portable, f32)");
    for prompt in [
        "What is the capital of France?",
        "Write a haiku about the sea.",
        "Count from 1 to 20, separated by commas.",
    ] {
        let ids = chat_ids(&fast, prompt);
        let want = fast.generate(&ids, &greedy(32), &mut |_| true).unwrap();
        let got = portable.generate(&ids, &greedy(32), &mut |_| true).unwrap();
        assert!(want.completion_tokens >= 5, "{prompt}: a real answer");
        assert_eq!(got.token_ids, want.token_ids, "{prompt}");
        assert_eq!(got.text, want.text);
        let a = fast.next_token_logits(&ids).unwrap();
        let b = portable.next_token_logits(&ids).unwrap();
        let diff = max_logit_diff(&a, &b);
        assert!(diff < 2e-4, "{prompt}: logits differ by {diff}");
    }
    // The file's own Q4_1 weights: each path has its own 8-bit activation kernels (ours on
    // AVX-512 VNNI CPUs, candle's elsewhere and on GPUs), so both land near the f32 logits
    // rather than on each other.
    let ids = chat_ids(&fast, "Write a haiku about the sea.");
    let want = fast.next_token_logits(&ids).unwrap();
    let range = logit_range(&want);
    for placement in [Placement::cpu(), Placement::cpu_portable(DType::F32)] {
        let q4 = load(placement, None);
        let got = q4.next_token_logits(&ids).unwrap();
        let diff = max_logit_diff(&got, &want);
        assert!(
            diff < 0.05 * range,
            "{}: Q4_1 logits differ from f32 by {diff} (range {range})",
            q4.placement().describe()
        );
    }
}

#[test]
fn smollm2_in_f32_on_the_portable_path_generates_the_transformers_tokens() {
    // bench/make_llm_fixture.py: transformers on the same GGUF dequantized to f32, greedy.
    let f = fixture("smollm2_greedy.json");
    let model = LlmModel::load(
        &smollm2_gguf(),
        &options(Placement::cpu_portable(DType::F32), Some(GgmlDType::F32)),
        &mut |_| {},
    )
    .unwrap();
    for case in f["cases"].as_array().unwrap() {
        let prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        let want: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
        let got = model
            .generate(&prompt, &greedy(want.len()), &mut |_| true)
            .unwrap();
        assert_eq!(got.token_ids, want);
    }
}

#[test]
fn llama3_qwen2_and_qwen3_on_the_portable_path_compute_what_transformers_computes() {
    // The tiny reference models (bench/make_tiny_llm_fixtures.py): llama3 RoPE scaling, Qwen2
    // biases and tied embeddings, Qwen3 q/k norms; dense safetensors weights.
    for name in ["llama", "qwen2", "qwen3"] {
        let folder = xi_testkit::fixture_path(&format!("tiny_llm/{name}"));
        let model = LlmModel::load(
            &folder,
            &options(Placement::cpu_portable(DType::F32), None),
            &mut |_| {},
        )
        .unwrap();
        let expected: serde_json::Value =
            serde_json::from_slice(&std::fs::read(folder.join("expected.json")).unwrap()).unwrap();
        for case in expected["cases"].as_array().unwrap() {
            let prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
            let want: Vec<f32> = serde_json::from_value(case["last_logits"].clone()).unwrap();
            let got = model.next_token_logits(&prompt).unwrap();
            let diff = max_logit_diff(&got, &want);
            assert!(diff < 1e-4, "{name}: logits differ by {diff}");
            let ids: Vec<u32> = serde_json::from_value(case["greedy_ids"].clone()).unwrap();
            let out = model
                .generate(&prompt, &greedy(ids.len()), &mut |_| true)
                .unwrap();
            assert_eq!(out.token_ids, ids, "{name}: greedy tokens");
        }
        // bf16 weights and activations (what a GPU runs by default) stay near the reference.
        let half = LlmModel::load(
            &folder,
            &options(Placement::cpu_portable(DType::BF16), None),
            &mut |_| {},
        )
        .unwrap();
        let case = &expected["cases"][0];
        let prompt: Vec<u32> = serde_json::from_value(case["prompt_ids"].clone()).unwrap();
        let want: Vec<f32> = serde_json::from_value(case["last_logits"].clone()).unwrap();
        let got = half.next_token_logits(&prompt).unwrap();
        let diff = max_logit_diff(&got, &want);
        let range = logit_range(&want);
        assert!(
            diff < 0.05 * range,
            "{name}: bf16 logits differ by {diff} (range {range})"
        );
    }
}

#[test]
fn portable_sequences_batched_together_generate_what_each_generates_alone() {
    // f32: a prompt read in chunks, or decoded beside other sequences, differs from the lone run
    // only by float rounding (about 1e-5). With 8-bit activations (Q8_0) such differences can
    // cross a rounding step and grow, so exact agreement is a property of f32 here.
    let model = LlmModel::load(
        &smollm2_gguf(),
        &options(Placement::cpu_portable(DType::F32), Some(GgmlDType::F32)),
        &mut |_| {},
    )
    .unwrap();
    let prompts = [
        "What is the capital of France?",
        "Write a haiku about the sea.",
        &"Summarise this: the quick brown fox jumps over the lazy dog. ".repeat(8),
    ];
    let ids: Vec<Vec<u32>> = prompts.iter().map(|p| chat_ids(&model, p)).collect();
    let alone: Vec<Vec<u32>> = ids
        .iter()
        .map(|p| {
            model
                .generate(p, &greedy(16), &mut |_| true)
                .unwrap()
                .token_ids
        })
        .collect();
    assert!(matches!(model, LlmModel::Portable(_)), "the tensor backend");
    // The long prompt is read 32 tokens at a time while the others decode.
    let (runs, _) = xi_engine::with_llm!(&model, m => run_batched(m, &ids, |_| greedy(16), 32));
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run.generated, alone[i], "sequence {i}");
    }
}

fn minilm_vectors(model: &EmbeddingModel) -> Vec<Vec<f32>> {
    let f = fixture("minilm_embeddings.json");
    let encoded: Vec<_> = f["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            model
                .tokenize(&EmbedInput::Text(s.as_str().unwrap().into()), true)
                .unwrap()
        })
        .collect();
    let refs: Vec<_> = encoded.iter().collect();
    model.embed(&refs).unwrap()
}

#[test]
fn minilm_embeddings_on_the_portable_path_match_the_cpu_kernels() {
    let fast = minilm_vectors(&EmbeddingModel::load(&minilm()).unwrap());
    let portable = minilm_vectors(
        &EmbeddingModel::load_on(&minilm(), &Placement::cpu_portable(DType::F32)).unwrap(),
    );
    let widen = |v: &[f32]| v.iter().map(|x| f64::from(*x)).collect::<Vec<_>>();
    for (i, want) in fast.iter().enumerate() {
        let diff = max_abs_diff(&portable[i], &widen(want));
        assert!(diff < 1e-5, "sentence {i}: f32 differs by {diff}");
    }
    // Half-precision products on f32 activations (a GPU's default): f16 keeps 11 significant
    // bits, bf16 8, and it shows on these unit vectors (measured here: 1.7e-4 and 1.3e-3).
    for (dtype, bound) in [(DType::F16, 5e-4), (DType::BF16, 3e-3)] {
        let placement = Placement::cpu_portable(dtype);
        let got = minilm_vectors(&EmbeddingModel::load_on(&minilm(), &placement).unwrap());
        let worst = fast
            .iter()
            .zip(&got)
            .map(|(want, got)| max_abs_diff(got, &widen(want)))
            .fold(0.0, f64::max);
        assert!(worst < bound, "{dtype:?} differs by {worst}");
    }
}

#[test]
fn cross_encoders_compute_in_f32_whatever_dtype_is_asked() {
    // candle-transformers' BERT masks attention with f32::MIN, which is -inf in bf16 (then
    // 0 * -inf = NaN): its models are always loaded in f32.
    let dir = tempfile::TempDir::new().unwrap();
    build_cross_encoder(dir.path());
    let f = fixture("minilm_cross_encoder.json");
    let score = |model: &CrossEncoder| {
        let pairs: Vec<_> = f["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                model
                    .tokenize_pair(p[0].as_str().unwrap(), p[1].as_str().unwrap(), true)
                    .unwrap()
            })
            .collect();
        model.score(&pairs.iter().collect::<Vec<_>>()).unwrap()
    };
    let want = score(&CrossEncoder::load(dir.path()).unwrap());
    let got =
        score(&CrossEncoder::load_on(dir.path(), &Placement::cpu_portable(DType::BF16)).unwrap());
    for (i, (a, b)) in got.iter().zip(&want).enumerate() {
        assert!((a - b).abs() < 1e-6, "pair {i}: {a} vs {b}");
    }
}
