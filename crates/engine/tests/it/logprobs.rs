//! Log probabilities on SmolLM2-135M-Instruct (Q8_0): each generated token's entry is the
//! log-softmax of the model's own logits at its position (checked against a separate forward
//! pass of the prompt and of the prompt plus what was generated so far), greedy tokens are
//! their position's most likely, the alternatives are sorted, and the tokens' bytes spell the
//! generated text.

use xi_engine::llm::{GenerationParams, TokenLogprobs};

use crate::constrained::model;

fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let total: f64 = logits.iter().map(|&v| f64::from((v - max).exp())).sum();
    let log_total = max + total.ln() as f32;
    logits.iter().map(|&v| v - log_total).collect()
}

/// Every step's log probabilities of one sequence, and its text.
fn generate(prompt: &[u32], params: GenerationParams) -> (Vec<TokenLogprobs>, String, Vec<u32>) {
    xi_engine::with_llm!(model(), m => {
        let mut seq = m.start(prompt.to_vec(), params).unwrap();
        let mut entries = Vec::new();
        while seq.finished().is_none() {
            let updates = m.step(&mut [&mut seq], 512).unwrap();
            entries.extend(updates.into_iter().flat_map(|u| u.logprobs));
        }
        (entries, seq.text().to_string(), seq.generated().to_vec())
    })
}

#[test]
fn each_token_gets_its_log_probability_and_the_most_likely_alternatives() {
    let m = model();
    let prompt = m.encode("The capital of France is").unwrap();
    let params = GenerationParams {
        max_tokens: 12,
        ignore_eos: true,
        logprobs: Some(5),
        ..GenerationParams::GREEDY
    };
    let (entries, text, generated) = generate(&prompt, params);
    assert_eq!(entries.len(), generated.len());
    let compiler = m.grammar_compiler();
    let mut spelled = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.token, generated[i]);
        assert_eq!(e.top.len(), 5);
        assert_eq!(e.top[0].0, e.token, "greedy picks the most likely token");
        assert!(e.top.windows(2).all(|w| w[0].1 >= w[1].1), "{:?}", e.top);
        let mass: f32 = e.top.iter().map(|&(_, lp)| lp.exp()).sum();
        assert!(e.logprob <= 0.0 && mass <= 1.0 + 1e-4, "{e:?}");
        spelled.extend(compiler.token_bytes(e.token).unwrap());
    }
    assert_eq!(
        String::from_utf8(spelled).unwrap(),
        text,
        "the tokens spell the text"
    );
    // The first and the fourth positions, against the logits of a forward pass of their own.
    for at in [0, 3] {
        let mut context = prompt.clone();
        context.extend_from_slice(&generated[..at]);
        let reference = log_softmax(&m.next_token_logits(&context).unwrap());
        let e = &entries[at];
        assert!(
            (reference[e.token as usize] - e.logprob).abs() < 1e-3,
            "{at}: {e:?}"
        );
        for &(token, logprob) in &e.top {
            assert!(
                (reference[token as usize] - logprob).abs() < 1e-3,
                "{at}: {token}"
            );
        }
    }
}

#[test]
fn sampled_tokens_report_the_models_probability_and_the_end_token_none() {
    let m = model();
    let prompt = m.encode("Once upon a time").unwrap();
    let params = GenerationParams {
        max_tokens: 40,
        temperature: 1.2,
        seed: 9,
        logprobs: Some(0),
        ..GenerationParams::GREEDY
    };
    let (entries, _, generated) = generate(&prompt, params.clone());
    assert_eq!(entries.len(), generated.len(), "an end token has no entry");
    assert!(entries.iter().all(|e| e.top.is_empty() && e.logprob <= 0.0));
    // Without logprobs the same seed samples the same tokens: asking changes nothing else.
    let (none, _, again) = generate(
        &prompt,
        GenerationParams {
            logprobs: None,
            ..params
        },
    );
    assert!(none.is_empty());
    assert_eq!(again, generated);
}
