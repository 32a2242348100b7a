//! Continuous batching for one LLM replica: every running sequence advances by one forward pass
//! per step, new requests join between steps (their prompts read in chunks so that running
//! streams keep flowing), finished or abandoned sequences leave at once.
//!
//! The model thread only tokenizes and generates: chats arrive rendered (the worker renders
//! them in its request path, see `template_sandbox`), so a hostile chat template never runs
//! here and terminating a replica never waits on one. The replica hands the model's template
//! to the worker when it reports ready.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;

use tokio::sync::mpsc::UnboundedSender;
use xi_api::worker::{
    GenerateEvent, GenerateRequest, GenerateSummary, Prompt, TokenLogprob, TopLogprob, WorkerError,
    WorkerErrorKind,
};
use xi_engine::llm::{
    Backend, CompiledGrammar, GenerationParams, GrammarCompiler, Llm, LlmModel, Sequence,
    TokenLogprobs,
};

use crate::replica::{refuse, terminated, Job, ReplicaOptions, ReplicaShared};

struct Running<B: Backend> {
    seq: Sequence<B>,
    events: UnboundedSender<GenerateEvent>,
    /// Which choice of its request the sequence is (`n` > 1), and whether its events say so.
    choice: usize,
    tagged: bool,
    /// Choices still to fork off this sequence once it has read its prompt.
    forks: usize,
}

pub(crate) fn serve(
    model: &LlmModel,
    options: ReplicaOptions,
    shared: &ReplicaShared,
    receiver: &Receiver<Job>,
) {
    xi_engine::with_llm!(model, m => serve_on(m, options, shared, receiver))
}

/// The batching loop on the model's own backend (its sequences are of that kind).
fn serve_on<B: Backend>(
    model: &Llm<B>,
    options: ReplicaOptions,
    shared: &ReplicaShared,
    receiver: &Receiver<Job>,
) {
    let mut running: Vec<Running<B>> = Vec::new();
    let tokens = model.grammar_compiler();
    loop {
        if running.is_empty() {
            match receiver.recv() {
                Ok(job) => admit(model, job, &mut running),
                Err(_) => return,
            }
        }
        while running.len() < options.max_seqs {
            match receiver.try_recv() {
                Ok(job) => admit(model, job, &mut running),
                Err(_) => break,
            }
        }
        if shared.stop.load(Ordering::SeqCst) {
            for r in running.drain(..) {
                let _ = r.events.send(GenerateEvent::Error(terminated()));
            }
            continue;
        }
        // A closed channel is a client that went away: its sequence stops here.
        running.retain(|r| !r.events.is_closed());
        if running.is_empty() {
            continue;
        }
        let mut seqs: Vec<&mut Sequence<B>> = running.iter_mut().map(|r| &mut r.seq).collect();
        match model.step(&mut seqs, options.batch_tokens) {
            Ok(updates) => {
                for (r, update) in running.iter().zip(updates) {
                    let said = !update.logprobs.is_empty()
                        || !update.text.is_empty()
                        || update.finished.is_some();
                    if r.tagged && said {
                        let _ = r.events.send(GenerateEvent::Choice(r.choice));
                    }
                    if !update.logprobs.is_empty() {
                        let _ = r
                            .events
                            .send(GenerateEvent::Logprobs(logprobs(&tokens, &update.logprobs)));
                    }
                    if !update.text.is_empty() {
                        let _ = r.events.send(GenerateEvent::Text(update.text));
                    }
                    if let Some(reason) = update.finished {
                        let _ = r.events.send(GenerateEvent::Done(GenerateSummary {
                            prompt_tokens: r.seq.prompt_tokens(),
                            completion_tokens: r.seq.completion_tokens(),
                            finish_reason: reason.as_str().to_string(),
                        }));
                    }
                }
                running.retain(|r| r.seq.finished().is_none());
                fork_ready(&mut running);
            }
            Err(e) => {
                tracing::error!(error = %e, sequences = running.len(), "LLM step failed");
                let err = WorkerError::from(e);
                for r in running.drain(..) {
                    let _ = r.events.send(GenerateEvent::Error(err.clone()));
                }
            }
        }
    }
}

fn admit<B: Backend>(model: &Llm<B>, job: Job, running: &mut Vec<Running<B>>) {
    let Job::Generate(request, grammar, events) = job else {
        refuse(vec![job]);
        return;
    };
    let choices = request.sampling.choices();
    match start(model, *request, grammar) {
        Ok(mut seq) => {
            if choices > 1 {
                seq.hold_for_forks();
            }
            running.push(Running {
                seq,
                events,
                choice: 0,
                tagged: choices > 1,
                forks: choices - 1,
            });
            // A one-token prompt has nothing to share: it forks at once.
            fork_ready(running);
        }
        Err(e) => {
            let _ = events.send(GenerateEvent::Error(e));
        }
    }
}

/// Forks the other choices of every request whose first sequence has read its prompt (all
/// but the last token): they start from its keys and values, so the prompt is read once for
/// all `n` choices. Choice `i` samples with the request's seed plus `i`.
fn fork_ready<B: Backend>(running: &mut Vec<Running<B>>) {
    let mut born = Vec::new();
    for r in running
        .iter_mut()
        .filter(|r| r.forks > 0 && r.seq.ready_to_fork())
    {
        for choice in 1..=r.forks {
            match r.seq.fork(r.seq.seed().wrapping_add(choice as u64)) {
                Ok(seq) => born.push(Running {
                    seq,
                    events: r.events.clone(),
                    choice,
                    tagged: true,
                    forks: 0,
                }),
                Err(e) => {
                    let _ = r.events.send(GenerateEvent::Error(WorkerError::from(e)));
                    r.seq.cancel();
                }
            }
        }
        r.forks = 0;
        r.seq.release();
    }
    running.retain(|r| r.seq.finished().is_none());
    running.extend(born);
}

fn start<B: Backend>(
    model: &Llm<B>,
    request: GenerateRequest,
    grammar: Option<CompiledGrammar>,
) -> Result<Sequence<B>, WorkerError> {
    let prompt = match &request.prompt {
        Prompt::Text(text) => text,
        // The worker renders chats before queueing them; templates never run on this thread.
        Prompt::Chat(_) => {
            return Err(WorkerError::new(
                WorkerErrorKind::Internal,
                "a chat reached the model thread unrendered",
            ))
        }
    };
    let ids = model.encode(prompt)?;
    let s = request.sampling;
    // The API's defaults for what the request left out (one place: `xi_api::generation`).
    let params = GenerationParams {
        max_tokens: s.max_tokens(),
        temperature: s.temperature(),
        top_p: s.top_p(),
        top_k: s.top_k(),
        repetition_penalty: s.repetition_penalty(),
        presence_penalty: s.presence_penalty(),
        frequency_penalty: s.frequency_penalty(),
        seed: s.seed.unwrap_or_else(rand_seed),
        stop: s.stop,
        stop_token_ids: s.stop_token_ids,
        ignore_eos: s.ignore_eos,
        logprobs: s.logprobs,
    };
    let mut seq = model.start(ids, params)?;
    if let Some(grammar) = grammar {
        seq.constrain(grammar);
    }
    Ok(seq)
}

/// The API's entries for a step's log probabilities: each token's bytes from the model's token
/// trie (built before such a request is queued: see `LocalWorker::generate`).
fn logprobs(tokens: &GrammarCompiler, entries: &[TokenLogprobs]) -> Vec<TokenLogprob> {
    let text = |id: u32| {
        let bytes = tokens.token_bytes(id).unwrap_or_default();
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    };
    entries
        .iter()
        .map(|e| {
            let (token, bytes) = text(e.token);
            TokenLogprob {
                token,
                bytes,
                logprob: e.logprob,
                top_logprobs: e
                    .top
                    .iter()
                    .map(|&(id, logprob)| {
                        let (token, bytes) = text(id);
                        TopLogprob {
                            token,
                            bytes,
                            logprob,
                        }
                    })
                    .collect(),
            }
        })
        .collect()
}

/// A seed for requests that give none, from the clock (sampling needs no cryptographic seed).
fn rand_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
