//! The cost of grammar-constrained decoding, in-process: decode tokens/s of the same chat
//! prompt free and held to a JSON schema, 1 stream and `--streams` together, alternating
//! round by round; and the token-mask time per token.
//!
//! `cargo run --release -p xi-engine --example constrained_bench -- MODEL [--gen-tokens 64]
//!  [--streams 8] [--rounds 5]`
//!
//! Prints one JSON object: per mode, the min / median / max decode tokens/s over the rounds,
//! and the mask time per token. Sampling is greedy in both modes; a constrained sequence may end
//! before `--gen-tokens` when its JSON is complete, so rates are per decoded token.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use xi_engine::llm::{
    Backend, ChatMessage, CompiledGrammar, GenerationParams, Guide, Llm, LlmModel, LoadOptions,
    Sequence,
};

struct Args {
    model: String,
    gen_tokens: usize,
    streams: usize,
    rounds: usize,
}

fn parse() -> Args {
    let mut args = Args {
        model: String::new(),
        gen_tokens: 64,
        streams: 8,
        rounds: 5,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().expect("a value after the flag");
        match a.as_str() {
            "--gen-tokens" => args.gen_tokens = value().parse().expect("a number"),
            "--streams" => args.streams = value().parse().expect("a number"),
            "--rounds" => args.rounds = value().parse().expect("a number"),
            _ => args.model = a,
        }
    }
    assert!(
        !args.model.is_empty(),
        "usage: constrained_bench MODEL [flags]"
    );
    args
}

/// A schema whose answers run long (a list of forty short strings), so both modes decode about
/// the same number of tokens.
fn schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "cities": {
                "type": "array", "minItems": 40, "maxItems": 40,
                "items": { "type": "string", "maxLength": 16 },
            },
        },
        "required": ["cities"],
        "additionalProperties": false,
    })
}

/// One round: decode tokens/s of `streams` sequences together, and the masks' (count, time).
fn run(
    model: &LlmModel,
    prompt: &[u32],
    gen: usize,
    streams: usize,
    grammar: Option<&CompiledGrammar>,
) -> (f64, u64, Duration) {
    xi_engine::with_llm!(model, m => run_on(m, prompt, gen, streams, grammar))
}

fn run_on<B: Backend>(
    model: &Llm<B>,
    prompt: &[u32],
    gen: usize,
    streams: usize,
    grammar: Option<&CompiledGrammar>,
) -> (f64, u64, Duration) {
    let params = GenerationParams {
        max_tokens: gen,
        ignore_eos: true,
        ..GenerationParams::GREEDY
    };
    let mut seqs: Vec<Sequence<B>> = (0..streams)
        .map(|_| {
            let mut seq = model.start(prompt.to_vec(), params.clone()).expect("start");
            if let Some(g) = grammar {
                seq.constrain(g.clone());
            }
            seq
        })
        .collect();
    // Prefill (which samples each first token) is the same in both modes: not timed.
    let mut refs: Vec<&mut Sequence<B>> = seqs.iter_mut().collect();
    model.step(&mut refs, usize::MAX).expect("prefill");
    let started = Instant::now();
    loop {
        let mut live: Vec<&mut Sequence<B>> =
            seqs.iter_mut().filter(|s| s.finished().is_none()).collect();
        if live.is_empty() {
            break;
        }
        model.step(&mut live, usize::MAX).expect("decode");
    }
    let secs = started.elapsed().as_secs_f64();
    let decoded: usize = seqs
        .iter()
        .map(|s| s.completion_tokens().saturating_sub(1))
        .sum();
    let masks = seqs
        .iter()
        .map(|s| s.mask_stats())
        .fold((0, Duration::ZERO), |(n, t), m| (n + m.masks, t + m.time));
    (decoded as f64 / secs, masks.0, masks.1)
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
    let chat = [ChatMessage::new(
        "user",
        "List forty cities of the world as JSON.",
    )];
    let prompt = model
        .encode(&model.chat_prompt(&chat).expect("chat template"))
        .expect("encode");
    let started = Instant::now();
    let grammar = model
        .compile_grammar(&Guide::JsonSchema { schema: schema() })
        .expect("compile");
    let first_compile = started.elapsed();
    let started = Instant::now();
    model
        .compile_grammar(&Guide::JsonSchema { schema: schema() })
        .expect("compile");
    let compile = started.elapsed();
    run(&model, &prompt, 8, 1, Some(&grammar)); // warm-up
    let mut rates: [Vec<f64>; 4] = Default::default();
    let mut ratios: [Vec<f64>; 2] = Default::default();
    let (mut masks, mut mask_time) = (0u64, Duration::ZERO);
    for _ in 0..args.rounds {
        for (i, streams) in [1, args.streams].into_iter().enumerate() {
            let (free, _, _) = run(&model, &prompt, args.gen_tokens, streams, None);
            let (held, n, t) = run(&model, &prompt, args.gen_tokens, streams, Some(&grammar));
            masks += n;
            mask_time += t;
            rates[2 * i].push(free);
            rates[2 * i + 1].push(held);
            ratios[i].push(held / free);
        }
    }
    let [free1, held1, free_n, held_n] = &mut rates;
    let [ratio1, ratio_n] = &mut ratios;
    let out = json!({
        "model": args.model,
        "threads": rayon::current_num_threads(),
        "prompt_tokens": prompt.len(),
        "gen_tokens": args.gen_tokens,
        "rounds": args.rounds,
        "streams": args.streams,
        "first_compile_ms": first_compile.as_secs_f64() * 1e3,
        "compile_ms": compile.as_secs_f64() * 1e3,
        "decode_tok_s_free_1": summary(free1),
        "decode_tok_s_json_1": summary(held1),
        "json_over_free_1": summary(ratio1),
        "decode_tok_s_free_streams": summary(free_n),
        "decode_tok_s_json_streams": summary(held_n),
        "json_over_free_streams": summary(ratio_n),
        "mask_us_per_token": mask_time.as_secs_f64() * 1e6 / masks.max(1) as f64,
    });
    println!("{out}");
}
