//! Times the embedding engine alone (no HTTP) on 64 sentences, to profile it.
//!
//!     cargo run --release -p xi-engine --example embed_timing -- <model folder> [rounds]

use std::time::Instant;

use xi_engine::embedding::EmbedInput;
use xi_engine::{Embed, EmbeddingModel};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let folder = args
        .next()
        .ok_or("usage: embed_timing <model folder> [rounds]")?;
    let rounds: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(5);
    let mut model = EmbeddingModel::load(std::path::Path::new(&folder))?;
    if let Ok(tokens) = std::env::var("BATCH_TOKENS") {
        model = model.with_batch_tokens(tokens.parse()?);
    }
    let topics = [
        "the weather",
        "a new database engine",
        "tokenizers",
        "mountain hiking",
    ];
    let sentences: Vec<String> = (0..64)
        .map(|i| {
            format!(
                "Sentence {i} talks about {}{}.",
                topics[i % 4],
                ", with more detail".repeat(i % 7)
            )
        })
        .collect();
    for round in 0..rounds {
        let start = Instant::now();
        let encoded: Vec<_> = sentences
            .iter()
            .map(|s| model.tokenize(&EmbedInput::Text(s.clone()), true))
            .collect::<Result<_, _>>()?;
        let tokenized = start.elapsed();
        let refs: Vec<_> = encoded.iter().collect();
        let vectors = model.embed(&refs)?;
        println!(
            "round {round}: tokenize {:.1} ms, total {:.1} ms, {} vectors",
            tokenized.as_secs_f64() * 1e3,
            start.elapsed().as_secs_f64() * 1e3,
            vectors.len()
        );
    }
    Ok(())
}
