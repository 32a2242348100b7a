//! Dynamic batching for embedding and rerank replicas: the requests that queued up while a
//! round ran are tokenized and computed together in the next forward pass; each request gets
//! its share of the outputs, and one that failed to tokenize fails alone.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;

use tokio::sync::oneshot;
use xi_api::worker::{EmbedInput, EmbedResponse, RerankResponse, WorkerError};
use xi_engine::embedding::EmbedInput as EngineInput;
use xi_engine::{Embed, Encoded, EngineError, Rerank};

use super::load::Encoder;
use super::{refuse, Job, ReplicaOptions, ReplicaShared};

/// Serves an embedding or rerank model until its queue closes: everything that queued up while
/// a round ran joins the next one, up to the token budget.
pub(super) fn serve(
    model: &mut Encoder,
    options: ReplicaOptions,
    shared: &ReplicaShared,
    receiver: &Receiver<Job>,
) {
    while let Ok(first) = receiver.recv() {
        let mut jobs = vec![first];
        if options.batching {
            // Everything that queued up while the last round ran joins this one, up to the budget.
            let mut tokens = 0usize;
            while tokens < options.batch_tokens {
                match receiver.try_recv() {
                    Ok(job) => {
                        tokens += estimate_tokens(&job);
                        jobs.push(job);
                    }
                    Err(_) => break,
                }
            }
        }
        if shared.stop.load(Ordering::SeqCst) {
            refuse(jobs);
            continue;
        }
        match model {
            Encoder::Embedding(m) => embed_round(m.as_ref(), jobs),
            Encoder::Rerank(m) => rerank_round(m.as_ref(), jobs),
        }
    }
}

/// A cheap upper bound (one token per 3 bytes, plus specials) used only to size a round.
fn estimate_tokens(job: &Job) -> usize {
    match job {
        Job::Embed(r, _) => r
            .inputs
            .iter()
            .map(|i| match i {
                EmbedInput::Text(t) => t.len() / 3 + 2,
                EmbedInput::Tokens(ids) => ids.len(),
            })
            .sum(),
        Job::Rerank(r, _) => r
            .documents
            .iter()
            .map(|d| (d.len() + r.query.len()) / 3 + 3)
            .sum(),
        Job::Generate(..) | Job::Transcribe(..) => 0,
    }
}

type Reply<T> = oneshot::Sender<Result<T, WorkerError>>;
/// A request's tokenized sequences (or why it could not be tokenized) and its reply channel.
type Tokenized<T> = (Result<Vec<Encoded>, EngineError>, Reply<T>);

/// The jobs `take` accepts, tokenized; any other kind of job is refused.
fn tokenized<Resp>(
    jobs: Vec<Job>,
    take: impl Fn(Job) -> Result<Tokenized<Resp>, Box<Job>>,
) -> Vec<Tokenized<Resp>> {
    let mut accepted = Vec::with_capacity(jobs.len());
    for job in jobs {
        match take(job) {
            Ok(request) => accepted.push(request),
            Err(other) => refuse(vec![*other]),
        }
    }
    accepted
}

fn embed_round(model: &dyn Embed, jobs: Vec<Job>) {
    let requests = tokenized(jobs, |job| match job {
        Job::Embed(request, reply) => {
            let encoded = request
                .inputs
                .iter()
                .map(|input| {
                    let input = match input {
                        EmbedInput::Text(t) => EngineInput::Text(t.clone()),
                        EmbedInput::Tokens(ids) => EngineInput::Tokens(ids.clone()),
                    };
                    model.tokenize(&input, request.truncate)
                })
                .collect();
            Ok((encoded, reply))
        }
        other => Err(Box::new(other)),
    });
    round(
        "embedding",
        requests,
        |all| model.embed(all),
        |embeddings, prompt_tokens| EmbedResponse {
            embeddings,
            prompt_tokens,
        },
    );
}

fn rerank_round(model: &dyn Rerank, jobs: Vec<Job>) {
    let requests = tokenized(jobs, |job| match job {
        Job::Rerank(request, reply) => {
            let encoded = request
                .documents
                .iter()
                .map(|doc| model.tokenize_pair(&request.query, doc, request.truncate))
                .collect();
            Ok((encoded, reply))
        }
        other => Err(Box::new(other)),
    });
    round(
        "rerank",
        requests,
        |all| model.score(all),
        |scores, input_tokens| RerankResponse {
            scores,
            input_tokens,
        },
    );
}

/// One round of the model: every request's sequences go through `compute` together, then
/// each request gets its share of the outputs (and its own token count). A request that failed
/// to tokenize fails alone.
fn round<Out, Resp>(
    kind: &str,
    requests: Vec<Tokenized<Resp>>,
    compute: impl FnOnce(&[&Encoded]) -> Result<Vec<Out>, EngineError>,
    respond: impl Fn(Vec<Out>, usize) -> Resp,
) {
    let mut accepted = Vec::with_capacity(requests.len());
    for (encoded, reply) in requests {
        match encoded {
            Ok(encoded) => accepted.push((encoded, reply)),
            Err(e) => drop(reply.send(Err(e.into()))),
        }
    }
    if accepted.is_empty() {
        return;
    }
    let all: Vec<&Encoded> = accepted.iter().flat_map(|(enc, _)| enc.iter()).collect();
    tracing::debug!(
        kind,
        requests = accepted.len(),
        sequences = all.len(),
        "{kind} round"
    );
    match compute(&all) {
        Ok(outputs) => {
            let mut outputs = outputs.into_iter();
            for (encoded, reply) in accepted {
                let tokens = encoded.iter().map(Encoded::len).sum();
                let mine = outputs.by_ref().take(encoded.len()).collect();
                let _ = reply.send(Ok(respond(mine, tokens)));
            }
        }
        Err(e) => {
            tracing::error!(kind, error = %e, "round failed");
            let err = WorkerError::from(e);
            for (_, reply) in accepted {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}
