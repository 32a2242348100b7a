//! [`RemoteWorker`]: a worker process reached over HTTP (the worker crate's internal API),
//! with pooled connections and the cluster secret on every call.
//!
//! A worker declared dead ([`RemoteWorker::mark_lost`]) fails every call in flight at once with
//! [`WorkerErrorKind::Unreachable`], so no request waits on a silent host.

use std::sync::RwLock;
use std::time::Duration;

use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::watch;
use xi_api::audio::{TranscribeEvent, TranscribeRequest, TranscribeStream};
use xi_api::cluster::{WorkerResources, CLUSTER_SECRET_HEADER};
use xi_api::framing::LineFramer;
use xi_api::worker::{
    BoxFuture, EmbedRequest, EmbedResponse, EventStream, GenerateEvent, GenerateRequest,
    ReplicaInfo, ReplicaSpec, RerankRequest, RerankResponse, Worker, WorkerError, WorkerErrorKind,
};
use xi_auth::ClusterSecret;

/// Quick calls (progress, terminate, shutdown) give up after this.
const SHORT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct RemoteWorker {
    address: String,
    base: String,
    http: reqwest::Client,
    secret: ClusterSecret,
    resources: RwLock<WorkerResources>,
    lost: watch::Sender<bool>,
}

impl RemoteWorker {
    pub fn new(
        address: String,
        http: reqwest::Client,
        secret: ClusterSecret,
        resources: WorkerResources,
    ) -> Self {
        Self {
            base: format!("http://{address}/internal/v1"),
            address,
            http,
            secret,
            resources: RwLock::new(resources),
            lost: watch::channel(false).0,
        }
    }

    pub fn set_resources(&self, resources: WorkerResources) {
        *self.resources.write().unwrap_or_else(|p| p.into_inner()) = resources;
    }

    /// The worker stopped answering: fail what waits on it.
    pub fn mark_lost(&self) {
        self.lost.send_replace(true);
    }

    /// The worker joined again.
    pub fn mark_alive(&self) {
        self.lost.send_replace(false);
    }

    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when the worker is declared lost.
    fn lost(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.lost.subscribe();
        async move {
            let _ = rx.wait_for(|lost| *lost).await;
        }
    }

    fn unreachable(&self, why: impl std::fmt::Display) -> WorkerError {
        WorkerError::new(
            WorkerErrorKind::Unreachable,
            format!("Worker {} is unreachable: {why}", self.address),
        )
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
    }

    /// Sends a request and reads the JSON answer; a failed call becomes the worker's own error
    /// (its body is a [`WorkerError`]) or `Unreachable`.
    async fn call<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, WorkerError> {
        let lost = self.lost();
        if self.is_lost() {
            return Err(self.unreachable("it stopped sending heartbeats"));
        }
        let exchange = async {
            let response = request.send().await.map_err(|e| self.transport(e))?;
            let response = self.check(response).await?;
            response.json::<T>().await.map_err(|e| self.transport(e))
        };
        tokio::select! {
            result = exchange => result,
            () = lost => Err(self.unreachable("it stopped sending heartbeats")),
        }
    }

    fn transport(&self, e: reqwest::Error) -> WorkerError {
        // The root cause says more than reqwest's "error sending request".
        let mut cause: &dyn std::error::Error = &e;
        while let Some(next) = cause.source() {
            cause = next;
        }
        self.unreachable(cause)
    }

    async fn check(&self, response: reqwest::Response) -> Result<reqwest::Response, WorkerError> {
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        if status == reqwest::StatusCode::UNAUTHORIZED {
            tracing::error!(worker = %self.address, "the worker refused our cluster secret");
        }
        Err(decode_failure(&self.address, status, &body))
    }

    fn post<B: Serialize>(&self, path: &str, body: &B) -> reqwest::RequestBuilder {
        self.request(reqwest::Method::POST, path).json(body)
    }

    /// Asks the worker process to exit (`DELETE /v1/clusters`).
    pub async fn shutdown(&self) -> Result<(), WorkerError> {
        self.call::<serde_json::Value>(
            self.request(reqwest::Method::POST, "/shutdown")
                .timeout(SHORT_TIMEOUT),
        )
        .await
        .map(|_| ())
    }
}

/// A worker's failed answer as the [`WorkerError`] it carries, or, for a body that is not one,
/// the kind of its status ([`WorkerErrorKind::from_status`], the reverse of the worker's table).
fn decode_failure(address: &str, status: reqwest::StatusCode, body: &[u8]) -> WorkerError {
    serde_json::from_slice::<WorkerError>(body).unwrap_or_else(|_| {
        WorkerError::new(
            WorkerErrorKind::from_status(status.as_u16()),
            format!("worker {address} answered HTTP {status}"),
        )
    })
}

/// Counts a generation's ends: it is over at its first `Error`, or once each of its `choices`
/// has had its `Done`.
struct Ends {
    left: usize,
}

impl Ends {
    fn new(choices: usize) -> Self {
        Self {
            left: choices.max(1),
        }
    }

    /// Whether `event` is the generation's last.
    fn last(&mut self, event: &GenerateEvent) -> bool {
        match event {
            GenerateEvent::Error(_) => true,
            GenerateEvent::Done(_) => {
                self.left = self.left.saturating_sub(1);
                self.left == 0
            }
            _ => false,
        }
    }
}

/// `events` up to and including the first one `last` says is final.
fn until_final<T: Send + 'static>(
    events: impl futures_util::Stream<Item = T> + Send + 'static,
    last: impl FnMut(&T) -> bool + Send + 'static,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    let state = (Box::pin(events), last, false);
    futures_util::stream::unfold(state, |(mut events, mut last, done)| async move {
        if done {
            return None;
        }
        let event = events.next().await?;
        let fin = last(&event);
        Some((event, (events, last, fin)))
    })
}

/// Splits a byte stream into lines and parses each as an event `T`, ending after the event
/// `last` says is the last one; a bad line or a cut stream becomes the error event `error`
/// makes (and ends the stream).
fn ndjson_lines<T: DeserializeOwned + Send + 'static>(
    bytes: impl futures_util::Stream<Item = reqwest::Result<actix_web::web::Bytes>> + Send + 'static,
    address: String,
    last: impl FnMut(&T) -> bool + Send + 'static,
    error: fn(WorkerError) -> T,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::unfold(
        (Box::pin(bytes), LineFramer::default(), last, false),
        move |(mut bytes, mut framer, mut last, done)| {
            let address = address.clone();
            async move {
                if done {
                    return None;
                }
                loop {
                    match framer.next_line() {
                        Some(Ok(line)) => {
                            let event = serde_json::from_slice::<T>(&line).unwrap_or_else(|e| {
                                error(WorkerError::new(
                                    WorkerErrorKind::Internal,
                                    format!("bad event from worker {address}: {e}"),
                                ))
                            });
                            let is_last = last(&event);
                            return Some((event, (bytes, framer, last, is_last)));
                        }
                        Some(Err(e)) => {
                            let event = error(WorkerError::new(
                                WorkerErrorKind::Internal,
                                format!("bad event from worker {address}: {e}"),
                            ));
                            return Some((event, (bytes, framer, last, true)));
                        }
                        None => {}
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => framer.push(chunk.as_ref()),
                        Some(Err(e)) => {
                            let event = error(WorkerError::new(
                                WorkerErrorKind::Unreachable,
                                format!("Worker {address} is unreachable: {e}"),
                            ));
                            return Some((event, (bytes, framer, last, true)));
                        }
                        None => {
                            let event = error(WorkerError::new(
                                WorkerErrorKind::Unreachable,
                                format!("Worker {address} closed the stream before the end"),
                            ));
                            return Some((event, (bytes, framer, last, true)));
                        }
                    }
                }
            }
        },
    )
}

impl Worker for RemoteWorker {
    fn address(&self) -> String {
        self.address.clone()
    }

    fn resources(&self) -> WorkerResources {
        self.resources
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn launch(&self, spec: ReplicaSpec) -> BoxFuture<'_, Result<ReplicaInfo, WorkerError>> {
        // No timeout: loading (a hub download) may take long; a dead worker fails it.
        Box::pin(async move { self.call(self.post("/replicas", &spec)).await })
    }

    fn terminate(&self, replica_uid: String) -> BoxFuture<'_, Result<(), WorkerError>> {
        Box::pin(async move {
            let path = format!("/replicas/{replica_uid}");
            self.call::<serde_json::Value>(
                self.request(reqwest::Method::DELETE, &path)
                    .timeout(SHORT_TIMEOUT),
            )
            .await
            .map(|_| ())
        })
    }

    fn progress(&self, replica_uid: String) -> BoxFuture<'_, Option<f32>> {
        Box::pin(async move {
            let path = format!("/replicas/{replica_uid}/progress");
            self.call::<f32>(
                self.request(reqwest::Method::GET, &path)
                    .timeout(SHORT_TIMEOUT),
            )
            .await
            .ok()
        })
    }

    fn embed(
        &self,
        replica_uid: String,
        request: EmbedRequest,
    ) -> BoxFuture<'_, Result<EmbedResponse, WorkerError>> {
        Box::pin(async move {
            let path = format!("/replicas/{replica_uid}/embed");
            self.call(self.post(&path, &request)).await
        })
    }

    fn rerank(
        &self,
        replica_uid: String,
        request: RerankRequest,
    ) -> BoxFuture<'_, Result<RerankResponse, WorkerError>> {
        Box::pin(async move {
            let path = format!("/replicas/{replica_uid}/rerank");
            self.call(self.post(&path, &request)).await
        })
    }

    fn transcribe(
        &self,
        replica_uid: String,
        request: TranscribeRequest,
    ) -> BoxFuture<'_, Result<TranscribeStream, WorkerError>> {
        Box::pin(async move {
            let path = format!("/replicas/{replica_uid}/transcribe");
            let last = || {
                |e: &TranscribeEvent| {
                    matches!(e, TranscribeEvent::Done(_) | TranscribeEvent::Error(_))
                }
            };
            let events = self
                .stream_post(&path, &request, last, TranscribeEvent::Error)
                .await?;
            Ok(Box::pin(events) as TranscribeStream)
        })
    }

    fn generate(
        &self,
        replica_uid: String,
        request: GenerateRequest,
    ) -> BoxFuture<'_, Result<EventStream, WorkerError>> {
        Box::pin(async move {
            let path = format!("/replicas/{replica_uid}/generate");
            let choices = request.sampling.choices();
            let last = move || {
                let mut ends = Ends::new(choices);
                move |e: &GenerateEvent| ends.last(e)
            };
            let events = self
                .stream_post(&path, &request, last, GenerateEvent::Error)
                .await?;
            Ok(Box::pin(events) as EventStream)
        })
    }
}

impl RemoteWorker {
    /// POSTs `request` to a streaming route and yields its NDJSON events up to the one a
    /// predicate made by `last` says is final, or until the worker is declared dead (then an
    /// `error` event says so). Dropping the stream drops the connection: the worker sees it
    /// and stops.
    async fn stream_post<T, L>(
        &self,
        path: &str,
        request: &impl Serialize,
        last: impl Fn() -> L,
        error: fn(WorkerError) -> T,
    ) -> Result<impl futures_util::Stream<Item = T> + Send + 'static, WorkerError>
    where
        T: DeserializeOwned + Send + 'static,
        L: FnMut(&T) -> bool + Send + 'static,
    {
        if self.is_lost() {
            return Err(self.unreachable("it stopped sending heartbeats"));
        }
        let send = async {
            let response = self
                .post(path, request)
                .send()
                .await
                .map_err(|e| self.transport(e))?;
            self.check(response).await
        };
        let response = tokio::select! {
            result = send => result?,
            () = self.lost() => return Err(self.unreachable("it stopped sending heartbeats")),
        };
        let events = ndjson_lines(response.bytes_stream(), self.address.clone(), last(), error);
        let address = self.address.clone();
        let lost = self.lost();
        let cut = futures_util::stream::once(async move {
            lost.await;
            error(WorkerError::new(
                WorkerErrorKind::Unreachable,
                format!("Worker {address} is unreachable: it stopped sending heartbeats"),
            ))
        });
        // Whichever ends first: the worker's events, or the worker being declared dead (the
        // heartbeat watch never ends by itself, so the first final event ends the merge).
        let merged = futures_util::stream::select(events, cut);
        Ok(until_final(merged, last()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_ends_at_its_first_error_or_its_last_choices_done() {
        let done = || {
            GenerateEvent::Done(xi_api::worker::GenerateSummary {
                prompt_tokens: 1,
                completion_tokens: 1,
                finish_reason: "stop".into(),
            })
        };
        let mut ends = Ends::new(3);
        assert!(!ends.last(&GenerateEvent::Text("a".into())));
        assert!(!ends.last(&done()) && !ends.last(&GenerateEvent::Choice(2)));
        assert!(!ends.last(&done()));
        assert!(ends.last(&done()), "the third choice's end is the last");
        let mut ends = Ends::new(2);
        let error = GenerateEvent::Error(WorkerError::new(WorkerErrorKind::Internal, "x"));
        assert!(ends.last(&error), "an error ends it whatever is open");
        assert!(Ends::new(0).last(&done()), "no n is one choice");
    }

    #[test]
    fn a_worker_error_body_is_read_back_whatever_the_status() {
        for kind in [
            WorkerErrorKind::InvalidInput,
            WorkerErrorKind::Busy,
            WorkerErrorKind::Cancelled,
            WorkerErrorKind::Internal,
        ] {
            let sent = WorkerError::new(kind, "the replica said why");
            let body = serde_json::to_vec(&sent).unwrap_or_default();
            let status = reqwest::StatusCode::from_u16(kind.status()).unwrap_or_default();
            let got = decode_failure("w:1", status, &body);
            assert_eq!(
                (got.kind, got.message.as_str()),
                (kind, "the replica said why")
            );
        }
    }

    #[test]
    fn other_bodies_take_the_kind_of_their_status() {
        let cases = [
            (401, WorkerErrorKind::Unreachable),
            (404, WorkerErrorKind::Internal),
            (500, WorkerErrorKind::Internal),
            (502, WorkerErrorKind::Internal),
        ];
        for (code, kind) in cases {
            let status = reqwest::StatusCode::from_u16(code).unwrap_or_default();
            let got = decode_failure("w:1", status, br#"{"detail":"Not Found"}"#);
            assert_eq!(got.kind, kind, "{status}");
            assert_eq!(got.message, format!("worker w:1 answered HTTP {status}"));
        }
        let not_found = reqwest::StatusCode::NOT_FOUND;
        assert_eq!(
            decode_failure("w:1", not_found, b"").message,
            "worker w:1 answered HTTP 404 Not Found"
        );
    }
}
