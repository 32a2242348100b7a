//! What `n` > 1 saves: `--choices` answers to one long prompt, either forked from one read of
//! the prompt (how the worker serves `n`) or as that many sequences that each read it, stepped
//! together in one batch, alternating round by round. Reports the time until every choice has
//! its first token, the whole time, and the prompt tokens each way computes.
//!
//! `cargo run --release -p xi-engine --example choices_bench -- MODEL [--choices 4]
//!  [--prompt-tokens 512] [--gen-tokens 16] [--rounds 5]`
//!
//! Prints one JSON object with min / median / max over the rounds.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xi_engine::llm::{Backend, GenerationParams, Llm, LlmModel, LoadOptions, Sequence};

struct Args {
    model: String,
    choices: usize,
    prompt_tokens: usize,
    gen_tokens: usize,
    rounds: usize,
}

fn parse() -> Args {
    let mut args = Args {
        model: String::new(),
        choices: 4,
        prompt_tokens: 512,
        gen_tokens: 16,
        rounds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().expect("a value after the flag");
        let number = |v: String| v.parse().expect("a number");
        match a.as_str() {
            "--choices" => args.choices = number(value()),
            "--prompt-tokens" => args.prompt_tokens = number(value()),
            "--gen-tokens" => args.gen_tokens = number(value()),
            "--rounds" => args.rounds = number(value()),
            _ => args.model = a,
        }
    }
    assert!(!args.model.is_empty(), "usage: choices_bench MODEL [flags]");
    args
}

/// One round: (time until every choice has a token, whole time, prompt tokens computed).
fn round<B: Backend>(
    model: &Llm<B>,
    prompt: &[u32],
    args: &Args,
    shared: bool,
) -> (Duration, Duration, usize) {
    let params = |seed| GenerationParams {
        max_tokens: args.gen_tokens,
        temperature: 0.8,
        seed,
        ignore_eos: true,
        ..GenerationParams::GREEDY
    };
    let started = Instant::now();
    let mut seqs: Vec<Sequence<B>> = Vec::new();
    let mut prompt_computed = 0;
    if shared {
        let mut first = model.start(prompt.to_vec(), params(1)).expect("start");
        first.hold_for_forks();
        while !first.ready_to_fork() {
            model.step(&mut [&mut first], 512).expect("prefill");
        }
        prompt_computed += first.cached_tokens() + args.choices;
        for i in 1..args.choices {
            seqs.push(first.fork(1 + i as u64).expect("fork"));
        }
        first.release();
        seqs.insert(0, first);
    } else {
        for i in 0..args.choices {
            seqs.push(
                model
                    .start(prompt.to_vec(), params(1 + i as u64))
                    .expect("start"),
            );
        }
        prompt_computed += prompt.len() * args.choices;
    }
    let mut first_tokens = None;
    loop {
        let mut live: Vec<&mut Sequence<B>> =
            seqs.iter_mut().filter(|s| s.finished().is_none()).collect();
        if live.is_empty() {
            break;
        }
        model.step(&mut live, 512).expect("step");
        if first_tokens.is_none() && seqs.iter().all(|s| s.completion_tokens() > 0) {
            first_tokens = Some(started.elapsed());
        }
    }
    let total = started.elapsed();
    (first_tokens.unwrap_or(total), total, prompt_computed)
}

fn summary(values: &mut [f64]) -> Value {
    values.sort_by(f64::total_cmp);
    json!({
        "min": values[0],
        "median": values[values.len() / 2],
        "max": values[values.len() - 1],
    })
}

fn main() {
    let args = parse();
    let model = LlmModel::load(
        std::path::Path::new(&args.model),
        &LoadOptions::default(),
        &mut |_| {},
    )
    .expect("load the model");
    let passage = "The river runs past the old mill, where the miller keeps a cat, a dog and \
        a goose that wakes the village every morning before the bells. ";
    let mut prompt = Vec::new();
    while prompt.len() < args.prompt_tokens {
        prompt.extend(model.encode(passage).expect("encode"));
    }
    prompt.truncate(args.prompt_tokens);
    let mut ms: [Vec<f64>; 4] = Default::default();
    let mut computed = [0usize; 2];
    xi_engine::with_llm!(&model, m => {
        round(m, &prompt[..64], &args, true); // warm-up
        for _ in 0..args.rounds {
            for (i, shared) in [true, false].into_iter().enumerate() {
                let (first, total, tokens) = round(m, &prompt, &args, shared);
                ms[2 * i].push(first.as_secs_f64() * 1e3);
                ms[2 * i + 1].push(total.as_secs_f64() * 1e3);
                computed[i] = tokens;
            }
        }
    });
    let [first_shared, total_shared, first_apart, total_apart] = &mut ms;
    let out = json!({
        "model": args.model,
        "threads": rayon::current_num_threads(),
        "choices": args.choices,
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "rounds": args.rounds,
        "first_tokens_ms_shared": summary(first_shared),
        "first_tokens_ms_apart": summary(first_apart),
        "total_ms_shared": summary(total_shared),
        "total_ms_apart": summary(total_apart),
        "prompt_tokens_computed_shared": computed[0],
        "prompt_tokens_computed_apart": computed[1],
    });
    println!("{out}");
}
