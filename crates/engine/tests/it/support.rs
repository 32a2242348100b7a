//! Test models and fixtures (from `xi-testkit`), and folder copying for damage tests.

use std::path::Path;

pub use xi_testkit::{fixture, fixture_path, minilm};

/// Copies a model folder (files only, one level of sub-folders) so a test can damage it.
pub fn copy_model(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_model(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Largest |a - b| over two logit vectors.
pub fn max_logit_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}

/// Max minus min of a logit vector: the scale tolerances of quantized paths are relative to.
pub fn logit_range(v: &[f32]) -> f32 {
    v.iter().fold(f32::MIN, |a, b| a.max(*b)) - v.iter().fold(f32::MAX, |a, b| a.min(*b))
}

pub fn max_abs_diff(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (f64::from(*x) - y).abs())
        .fold(0.0, f64::max)
}

/// One sequence's outcome in [`run_batched`].
pub struct BatchedRun {
    pub generated: Vec<u32>,
    pub text: String,
    /// The pieces each step let out, joined.
    pub streamed: String,
}

/// Runs a sequence per prompt (with `params(i)`), all stepped together with `budget` tokens a
/// step until every one finishes; returns each one's outcome and the number of steps.
pub fn run_batched<B: xi_engine::llm::Backend>(
    model: &xi_engine::llm::Llm<B>,
    prompts: &[Vec<u32>],
    params: impl Fn(usize) -> xi_engine::llm::GenerationParams,
    budget: usize,
) -> (Vec<BatchedRun>, usize) {
    use xi_engine::llm::Sequence;
    let mut seqs: Vec<Sequence<B>> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| model.start(p.clone(), params(i)).unwrap())
        .collect();
    let mut streamed = vec![String::new(); seqs.len()];
    let mut steps = 0;
    while seqs.iter().any(|s| s.finished().is_none()) {
        let mut refs: Vec<&mut Sequence<B>> = seqs.iter_mut().collect();
        let updates = model.step(&mut refs, budget).unwrap();
        for (text, update) in streamed.iter_mut().zip(updates) {
            text.push_str(&update.text);
        }
        steps += 1;
    }
    let runs = seqs
        .iter()
        .zip(streamed)
        .map(|(s, streamed)| BatchedRun {
            generated: s.generated().to_vec(),
            text: s.text().to_string(),
            streamed,
        })
        .collect();
    (runs, steps)
}
