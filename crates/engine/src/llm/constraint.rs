//! Grammar-constrained decoding (structured outputs) with llguidance.
//!
//! A request's [`Guide`] (a JSON schema, any JSON object, a regex, a fixed choice of strings or
//! a Lark grammar) is compiled for one model by [`Llm::compile_grammar`](super::Llm::compile_grammar)
//! into a [`CompiledGrammar`], off the model's thread; [`Sequence::constrain`] attaches it to a
//! sequence. Each step then computes the sequence's token mask (on a thread of its own, while
//! the forward pass runs), sets every token the grammar forbids to minus infinity before
//! sampling, and feeds the sampled token back to the grammar.
//!
//! The model's token environment (every token's bytes, in a trie) and llguidance's parser
//! factory are built once per model, on the first grammar: a model that is never constrained
//! never pays for them. [`ParserLimits`] bound the work a hostile grammar can ask for.
//!
//! [`Sequence::constrain`]: super::Sequence::constrain

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use llguidance::api::{ParserLimits, TopLevelGrammar};
use llguidance::{Matcher, ParserFactory};
use tokenizers::Tokenizer;
use toktrie::{SimpleVob, TokEnv, TokRxInfo, TokTrie, TokenId, TokenizerEnv};

use xi_api::guide::Guide;

use crate::error::EngineError;

/// A grammar compiled for one model, ready to constrain one sequence of that model
/// ([`Sequence::constrain`](super::Sequence::constrain)). Clone it to constrain several.
#[derive(Clone)]
pub struct CompiledGrammar {
    /// Boxed: a matcher is about 1.7 kB, and compiled grammars travel in queue messages.
    matcher: Box<Matcher>,
}

impl std::fmt::Debug for CompiledGrammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompiledGrammar")
    }
}

/// Mask computation of one constrained sequence so far (all zero when unconstrained).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaskStats {
    /// Token masks computed (one per sampled token).
    pub masks: u64,
    /// Time spent computing them.
    pub time: Duration,
}

/// Longest compile error handed back to a client: llguidance's messages can quote the grammar.
const MAX_ERROR_CHARS: usize = 1000;

/// Deepest JSON schema compiled: serde_json's own parsing limit, so no request body can get
/// past it. llguidance's schema compiler recurses, and a few hundred levels overflow a 2 MiB
/// thread stack (an abort, not an error).
const MAX_SCHEMA_DEPTH: usize = 128;

/// Bounds on llguidance's work per grammar. Its defaults, except lexer states: each costs
/// 1-2 kB, and 250k of them (the default) is too much memory for one request on a server.
fn limits() -> ParserLimits {
    ParserLimits {
        max_items_in_row: 2000,
        initial_lexer_fuel: 1_000_000,
        step_lexer_fuel: 200_000,
        step_max_items: 50_000,
        max_lexer_states: 50_000,
        max_grammar_size: 500_000,
        precompute_large_lexemes: true,
        verbose_errors: false,
    }
}

/// A model's grammar compiler: cheap to clone and usable from any thread, so the worker
/// compiles a request's grammar before it queues the request (a bad grammar is refused before
/// any token is generated, and compiling never stalls the model's batch). The token trie and
/// llguidance's parser factory are built on the first grammar and kept for the model's life
/// (a failure too: a tokenizer llguidance cannot read stays unreadable).
#[derive(Clone)]
pub struct GrammarCompiler(Arc<CompilerParts>);

struct CompilerParts {
    factory: OnceLock<Result<ParserFactory, String>>,
    tokenizer: Arc<Tokenizer>,
    vocab_size: usize,
    end_ids: Vec<u32>,
}

impl GrammarCompiler {
    /// The compiler of a model with this tokenizer, vocabulary size and end tokens (nothing is
    /// built until the first grammar).
    pub(super) fn new(tokenizer: Arc<Tokenizer>, vocab_size: usize, end_ids: Vec<u32>) -> Self {
        GrammarCompiler(Arc::new(CompilerParts {
            factory: OnceLock::new(),
            tokenizer,
            vocab_size,
            end_ids,
        }))
    }

    /// The parser factory (with the model's token trie), built on the first call.
    fn factory(&self) -> Result<&ParserFactory, EngineError> {
        let parts = &*self.0;
        parts
            .factory
            .get_or_init(|| build_factory(&parts.tokenizer, parts.vocab_size, &parts.end_ids))
            .as_ref()
            .map_err(|e| {
                EngineError::Unsupported(format!(
                    "grammar-constrained decoding is not available for this model's tokenizer: {e}"
                ))
            })
    }

    /// Builds the model's token trie now, if it is not built yet (off the model's thread, before
    /// a request that needs token bytes is queued).
    pub fn prepare(&self) -> Result<(), EngineError> {
        self.factory().map(|_| ())
    }

    /// The bytes of token `id` as the model writes them (a special token: its name), for
    /// log probabilities; builds the token trie on the first call (see [`prepare`](Self::prepare)).
    /// A tokenizer llguidance cannot read gives its own decoding of the token instead.
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>, EngineError> {
        let Ok(factory) = self.factory() else {
            return self
                .0
                .tokenizer
                .decode(&[id], false)
                .map(String::into_bytes)
                .map_err(|e| EngineError::InvalidInput(format!("cannot decode token {id}: {e}")));
        };
        let trie = factory.tok_env().tok_trie();
        if id as usize >= trie.vocab_size() {
            return Ok(Vec::new());
        }
        let bytes = trie.token(id);
        Ok(match bytes.split_first() {
            Some((&TokTrie::SPECIAL_TOKEN_MARKER, name)) => name.to_vec(),
            _ => bytes.to_vec(),
        })
    }

    /// Compiles `grammar` for the model. The first call builds the model's token trie (about
    /// a second for a 50k-token vocabulary). A grammar llguidance cannot compile is
    /// `InvalidInput` ("invalid grammar: ...").
    pub fn compile(&self, grammar: &Guide) -> Result<CompiledGrammar, EngineError> {
        let factory = self.factory()?;
        let invalid = |reason: String| {
            EngineError::InvalidInput(format!("invalid grammar: {}", clip(reason)))
        };
        let top = top_level(grammar).map_err(invalid)?;
        let matcher = Matcher::new(factory.create_parser(top));
        if let Some(e) = matcher.get_error() {
            return Err(invalid(e));
        }
        Ok(CompiledGrammar {
            matcher: Box::new(matcher),
        })
    }
}

fn clip(mut s: String) -> String {
    if let Some((at, _)) = s.char_indices().nth(MAX_ERROR_CHARS) {
        s.truncate(at);
        s.push_str("...");
    }
    s
}

/// The llguidance grammar for one of ours.
fn top_level(grammar: &Guide) -> Result<TopLevelGrammar, String> {
    match grammar {
        Guide::JsonObject => Ok(TopLevelGrammar::from_json_schema(compact(
            serde_json::json!({ "type": "object" }),
        ))),
        Guide::JsonSchema { schema } => {
            if depth(schema) > MAX_SCHEMA_DEPTH {
                return Err(format!(
                    "the schema nests deeper than {MAX_SCHEMA_DEPTH} levels"
                ));
            }
            Ok(TopLevelGrammar::from_json_schema(compact(schema.clone())))
        }
        Guide::Regex { pattern: rx } => Ok(TopLevelGrammar::from_lark(format!(
            "start: /{}/",
            llguidance::regex_to_lark(rx, "dw")
        ))),
        Guide::Choice { choices } => {
            if choices.is_empty() {
                return Err("a choice needs at least one option".into());
            }
            let options: Vec<String> = choices.iter().map(|c| lark_literal(c)).collect();
            Ok(TopLevelGrammar::from_lark(format!(
                "start: {}",
                options.join(" | ")
            )))
        }
        Guide::Grammar { lark: source } => Ok(TopLevelGrammar::from_lark(source.clone())),
    }
}

/// How deeply `value` nests (a scalar is 1), counted without recursion.
fn depth(value: &serde_json::Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(value, 1)];
    while let Some((v, d)) = stack.pop() {
        deepest = deepest.max(d);
        match v {
            serde_json::Value::Array(items) => stack.extend(items.iter().map(|i| (i, d + 1))),
            serde_json::Value::Object(map) => stack.extend(map.values().map(|i| (i, d + 1))),
            _ => {}
        }
    }
    deepest
}

/// JSON on one line with a space after `,` and `:`, unless the schema chose otherwise
/// (llguidance's `x-guidance` options). llguidance's default lets any whitespace in between,
/// and a small model can then spend its whole budget on newlines.
fn compact(mut schema: serde_json::Value) -> serde_json::Value {
    if let Some(object) = schema.as_object_mut() {
        object.entry("x-guidance").or_insert_with(|| {
            serde_json::json!({
                "whitespace_flexible": false,
                "item_separator": ", ",
                "key_separator": ": ",
            })
        });
    }
    schema
}

/// `s` as a Lark string literal. Lark literals are JSON strings, except that DEL must be
/// escaped too; nothing in `s` can end the literal early.
fn lark_literal(s: &str) -> String {
    let quoted = serde_json::Value::String(s.to_string()).to_string();
    quoted.replace('\u{7f}', "\\u007f")
}

/// The model's tokens for llguidance: each token's bytes in a trie (padded to the model's
/// vocabulary with placeholders that no grammar can produce), plus our tokenizer.
struct TokenEnv {
    trie: TokTrie,
    tokenizer: Arc<Tokenizer>,
}

impl TokenizerEnv for TokenEnv {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<TokenId> {
        self.trie.tokenize_with_greedy_fallback(s, |text| {
            match self.tokenizer.encode(text, false) {
                Ok(encoding) => encoding.get_ids().to_vec(),
                Err(_) => self.trie.greedy_tokenize(text.as_bytes()),
            }
        })
    }
}

fn build_factory(
    tokenizer: &Arc<Tokenizer>,
    vocab_size: usize,
    end_ids: &[u32],
) -> Result<ParserFactory, String> {
    let started = Instant::now();
    let env = token_env(tokenizer, vocab_size, end_ids)?;
    let mut factory = catch(|| ParserFactory::new_simple(&env).map_err(|e| e.to_string()))?;
    factory.set_stderr_log_level(0).set_buffer_log_level(0);
    *factory.limits_mut() = limits();
    tracing::debug!(elapsed = ?started.elapsed(), vocab_size, "grammar compiler built");
    Ok(factory)
}

fn token_env(
    tokenizer: &Arc<Tokenizer>,
    vocab_size: usize,
    end_ids: &[u32],
) -> Result<TokEnv, String> {
    let json: serde_json::Value = tokenizer
        .to_string(false)
        .map_err(|e| e.to_string())
        .and_then(|s| serde_json::from_str(&s).map_err(|e| e.to_string()))?;
    let mut bytes =
        catch(|| llguidance::token_bytes_from_tokenizer_json(&json).map_err(|e| e.to_string()))?;
    // Tokens past the model's vocabulary can never be sampled.
    bytes.truncate(vocab_size);
    while bytes.len() < vocab_size {
        let mut placeholder = format!(".<[{}]>", bytes.len()).into_bytes();
        placeholder[0] = TokTrie::SPECIAL_TOKEN_MARKER;
        bytes.push(placeholder);
    }
    let ends: Vec<u32> = end_ids
        .iter()
        .copied()
        .filter(|&t| (t as usize) < vocab_size)
        .collect();
    // An end token is never text, even where the tokenizer does not call it special: a
    // grammar must not be able to spell it inside a string.
    for &t in &ends {
        let token = &mut bytes[t as usize];
        if token.first() != Some(&TokTrie::SPECIAL_TOKEN_MARKER) {
            token.insert(0, TokTrie::SPECIAL_TOKEN_MARKER);
        }
    }
    let info = TokRxInfo::new(
        vocab_size as u32,
        ends.first().copied().unwrap_or(toktrie::INVALID_TOKEN),
    );
    let tokenizer = tokenizer.clone();
    catch(move || {
        let mut trie = TokTrie::from(&info, &bytes);
        if ends.len() > 1 {
            trie = trie.with_eos_tokens(&ends);
        }
        let env: TokEnv = Arc::new(TokenEnv { trie, tokenizer });
        Ok(env)
    })
}

/// Runs `f`, turning a panic into an error: llguidance asserts on malformed vocabularies, and
/// a model's tokenizer must not be able to take the worker down.
fn catch<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    std::panic::catch_unwind(AssertUnwindSafe(f))
        .unwrap_or_else(|_| Err("llguidance failed on this tokenizer".into()))
}

/// A sequence's grammar state: the matcher, the mask for its next token once computed, and
/// what computing masks has cost.
pub(super) struct Constraint {
    matcher: Box<Matcher>,
    mask: Option<Result<SimpleVob, String>>,
    stats: MaskStats,
}

impl Constraint {
    pub(super) fn new(grammar: CompiledGrammar) -> Constraint {
        Constraint {
            matcher: grammar.matcher,
            mask: None,
            stats: MaskStats::default(),
        }
    }

    /// The same grammar in its initial state, for a forked sequence (the original must not
    /// have consumed a token yet).
    pub(super) fn fresh(&self) -> Constraint {
        Constraint {
            matcher: self.matcher.clone(),
            mask: None,
            stats: MaskStats::default(),
        }
    }

    /// Whether the grammar is complete (nothing more can follow) or has failed.
    pub(super) fn is_stopped(&self) -> bool {
        self.matcher.is_stopped()
    }

    pub(super) fn stats(&self) -> MaskStats {
        self.stats
    }

    /// Computes the mask for the next token, unless it is already there (called from the
    /// step's mask thread, while the forward pass runs).
    pub(super) fn prepare_mask(&mut self) {
        if self.mask.is_some() || self.matcher.is_stopped() {
            return;
        }
        let started = Instant::now();
        let mask = self.matcher.compute_mask().map_err(|e| e.to_string());
        self.stats.time += started.elapsed();
        self.stats.masks += 1;
        self.mask = Some(mask);
    }

    /// Sets every logit the grammar forbids (and any past the mask) to minus infinity. An
    /// error when the grammar failed or allows none of the tokens in `logits`.
    pub(super) fn mask_logits(&mut self, logits: &mut [f32]) -> Result<(), String> {
        self.prepare_mask();
        let mask = match self.mask.take() {
            Some(mask) => mask?,
            None => return Err("the grammar has stopped".into()),
        };
        let words = mask.as_slice();
        let mut any = false;
        for (chunk, values) in logits.chunks_mut(32).enumerate() {
            let bits = words.get(chunk).copied().unwrap_or(0);
            for (bit, v) in values.iter_mut().enumerate() {
                if bits & (1 << bit) == 0 {
                    *v = f32::NEG_INFINITY;
                } else {
                    any |= *v > f32::NEG_INFINITY;
                }
            }
        }
        if !any {
            return Err("the grammar allows no token the model can produce".into());
        }
        Ok(())
    }

    /// Feeds the sampled token to the grammar.
    pub(super) fn consume(&mut self, token: u32) -> Result<(), String> {
        self.mask = None;
        self.matcher.consume_token(token).map_err(|e| e.to_string())
    }

    /// Feeds tokens generated before the grammar was attached.
    pub(super) fn consume_all(&mut self, tokens: &[u32]) -> Result<(), String> {
        self.mask = None;
        self.matcher
            .consume_tokens(tokens)
            .map_err(|e| e.to_string())
    }
}
