//! Several choices from one prompt (`n` > 1) on SmolLM2-135M-Instruct (Q8_0): the first
//! sequence reads the prompt, the others are forked from its keys and values without reading
//! it again, and each choice generates exactly what a sequence of its own seed generates alone.

use xi_engine::llm::{Backend, GenerationParams, Llm, Sequence};

use crate::constrained::{model, sampled};

/// `params` run alone, to the end: the tokens.
fn alone<B: Backend>(m: &Llm<B>, prompt: &[u32], params: GenerationParams) -> Vec<u32> {
    let mut seq = m.start(prompt.to_vec(), params).unwrap();
    while seq.finished().is_none() {
        m.step(&mut [&mut seq], 512).unwrap();
    }
    seq.generated().to_vec()
}

fn forked<B: Backend>(
    m: &Llm<B>,
    prompt: &[u32],
    params: GenerationParams,
    n: u64,
) -> Vec<Vec<u32>> {
    let mut first: Sequence<B> = m.start(prompt.to_vec(), params).unwrap();
    first.hold_for_forks();
    // Read in chunks of 8: the held sequence never samples, and stops one token short.
    let mut passes = 0;
    while !first.ready_to_fork() {
        let updates = m.step(&mut [&mut first], 8).unwrap();
        assert!(updates[0].text.is_empty() && updates[0].finished.is_none());
        passes += 1;
    }
    assert_eq!(passes, (prompt.len() - 1).div_ceil(8));
    assert_eq!(first.cached_tokens(), prompt.len() - 1);
    let mut all = vec![first];
    for i in 1..n {
        let child = all[0].fork(all[0].seed() + i).unwrap();
        assert_eq!(
            child.cached_tokens(),
            prompt.len() - 1,
            "the prompt is not read again"
        );
        all.push(child);
    }
    all[0].release();
    while all.iter().any(|s| s.finished().is_none()) {
        let mut refs: Vec<&mut Sequence<B>> = all.iter_mut().collect();
        m.step(&mut refs, 512).unwrap();
    }
    all.iter().map(|s| s.generated().to_vec()).collect()
}

#[test]
fn forked_choices_generate_what_their_seeds_generate_alone() {
    let m = model();
    let prompt = m
        .encode(
            &m.chat_prompt(&[xi_engine::llm::ChatMessage::new(
                "user",
                "Tell me a story about a fox.",
            )])
            .unwrap(),
        )
        .unwrap();
    xi_engine::with_llm!(m, llm => {
        let params = sampled(40, 24);
        let choices = forked(llm, &prompt, params.clone(), 3);
        for (i, tokens) in choices.iter().enumerate() {
            let own = GenerationParams { seed: 40 + i as u64, ..params.clone() };
            assert_eq!(tokens, &alone(llm, &prompt, own), "choice {i}");
        }
        assert_ne!(choices[0], choices[1], "different seeds, different choices");
        // A one-token prompt forks at once.
        let short = forked(llm, &prompt[..1], sampled(5, 6), 2);
        assert_eq!(short[1], alone(llm, &prompt[..1], sampled(6, 6)));
    });
}
