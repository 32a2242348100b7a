//! LLM engine throughput, in-process (no HTTP): prefill tokens/s, decode tokens/s for one stream
//! and for `--streams` concurrent streams decoding together, time to first token.
//!
//! `cargo run --release -p xi-engine --example llm_bench -- MODEL [--requantize q8_0|f32]
//!  [--prompt-tokens 128] [--gen-tokens 128] [--streams 8] [--repeat 3]`
//!
//! Prints one JSON object (the shape of `bench/llm_llamacpp.py`'s).

use std::time::Instant;

use xi_engine::candle_quantized::GgmlDType;
use xi_engine::llm::{Backend, GenerationParams, Llm, LlmModel, LoadOptions, Sequence};

const PARAGRAPH: &str = "The history of computing is a story of people who wanted to calculate \
faster than they could by hand. Early machines used gears and levers; later ones used relays, \
vacuum tubes and finally transistors, each generation smaller and quicker than the last. ";

struct Args {
    model: String,
    requantize: Option<GgmlDType>,
    prompt_tokens: usize,
    gen_tokens: usize,
    streams: usize,
    repeat: usize,
}

fn parse() -> Args {
    let mut args = Args {
        model: String::new(),
        requantize: None,
        prompt_tokens: 128,
        gen_tokens: 128,
        streams: 8,
        repeat: 3,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = || it.next().expect("a value after the flag");
        match a.as_str() {
            "--requantize" => {
                args.requantize = match value().to_ascii_lowercase().as_str() {
                    "q8_0" => Some(GgmlDType::Q8_0),
                    "f32" => Some(GgmlDType::F32),
                    _ => None,
                }
            }
            "--prompt-tokens" => args.prompt_tokens = value().parse().expect("a number"),
            "--gen-tokens" => args.gen_tokens = value().parse().expect("a number"),
            "--streams" => args.streams = value().parse().expect("a number"),
            "--repeat" => args.repeat = value().parse().expect("a number"),
            _ => args.model = a,
        }
    }
    assert!(!args.model.is_empty(), "usage: llm_bench MODEL [flags]");
    args
}

/// Never stops early: no end tokens matter when `max_tokens` is what we measure.
fn params(gen: usize) -> GenerationParams {
    GenerationParams {
        max_tokens: gen,
        ignore_eos: true,
        ..GenerationParams::GREEDY
    }
}

/// Runs `streams` sequences to the end together; returns (prefill secs, decode secs, ttft secs,
/// decoded tokens).
fn run(model: &LlmModel, prompt: &[u32], gen: usize, streams: usize) -> (f64, f64, f64, usize) {
    xi_engine::with_llm!(model, m => run_on(m, prompt, gen, streams))
}

fn run_on<B: Backend>(
    model: &Llm<B>,
    prompt: &[u32],
    gen: usize,
    streams: usize,
) -> (f64, f64, f64, usize) {
    let mut seqs: Vec<Sequence<B>> = (0..streams)
        .map(|_| model.start(prompt.to_vec(), params(gen)).expect("start"))
        .collect();
    let started = Instant::now();
    // Prefill: every prompt in one pass, which also samples each first token.
    let mut refs: Vec<&mut Sequence<B>> = seqs.iter_mut().collect();
    model.step(&mut refs, usize::MAX).expect("prefill");
    let prefill = started.elapsed().as_secs_f64();
    let ttft = prefill;
    let decode_start = Instant::now();
    loop {
        let mut live: Vec<&mut Sequence<B>> =
            seqs.iter_mut().filter(|s| s.finished().is_none()).collect();
        if live.is_empty() {
            break;
        }
        model.step(&mut live, usize::MAX).expect("decode");
    }
    let decode = decode_start.elapsed().as_secs_f64();
    let decoded = seqs
        .iter()
        .map(|s| s.completion_tokens().saturating_sub(1))
        .sum();
    (prefill, decode, ttft, decoded)
}

fn main() {
    let args = parse();
    let options = LoadOptions {
        requantize: args.requantize,
        fallback_template: None,
        ..Default::default()
    };
    let model = LlmModel::load(std::path::Path::new(&args.model), &options, &mut |_| {})
        .expect("load the model");
    let text = PARAGRAPH.repeat(1 + args.prompt_tokens / 20);
    let mut prompt = model.encode(&text).expect("encode");
    prompt.truncate(args.prompt_tokens);
    let mut best = (0f64, 0f64, f64::MAX, 0f64);
    run(&model, &prompt, 8, 1); // warm-up
    for _ in 0..args.repeat {
        let (prefill, decode, ttft, decoded) = run(&model, &prompt, args.gen_tokens, 1);
        best.0 = best.0.max(prompt.len() as f64 / prefill);
        best.1 = best.1.max(decoded as f64 / decode);
        best.2 = best.2.min(ttft);
        let (_, decode, _, decoded) = run(&model, &prompt, args.gen_tokens, args.streams);
        best.3 = best.3.max(decoded as f64 / decode);
    }
    let json = serde_json::json!({
        "engine": "xinference-rs",
        "model": args.model,
        "requantize": args.requantize.map(|d| format!("{d:?}")),
        "threads": rayon::current_num_threads(),
        "prompt_tokens": prompt.len(),
        "gen_tokens": args.gen_tokens,
        "prefill_tok_s": best.0,
        "decode_tok_s": best.1,
        "ttft_ms": best.2 * 1000.0,
        "streams": args.streams,
        "decode_tok_s_streams": best.3,
        "streams_speedup": best.3 / best.1,
    });
    println!("{json}");
}
