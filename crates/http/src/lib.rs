//! Request-body deadlines and connection timing shared by both HTTP servers (the REST API and
//! the worker's internal API).
//!
//! actix cuts a slow request head (`client_request_timeout`) but waits for a body forever: a
//! client that sends `Content-Length: 100000` and then one byte every few seconds holds a
//! connection, and a file descriptor, indefinitely. [`deadline`] replaces every request's
//! payload with a stream that gives up when the body is too slow, so every extractor (`Json`,
//! `Bytes`, multipart) gets the limit, and answers 408 with `Connection: close`.
//!
//! It also keeps the connection from being *drained*: when a handler answers without reading
//! the whole body (a 401, a 413, the 408 itself), actix would read and discard the rest of a
//! chunked body with no time limit. Holding the unread payload until the response is written
//! makes actix close the connection instead.
//!
//! Both `xi-supervisor` (the REST API, with the flags of `docs/auth.md`) and `xi-worker` (its
//! internal API, with the defaults) use it.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{BodySize, BoxBody, EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::web::Bytes;
use actix_web::{HttpMessage, HttpResponse};
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

/// Default `--body-timeout`: seconds allowed for a whole request body. A 16 MiB body (the
/// default size limit) needs about 2.2 Mbit/s to make it.
pub const DEFAULT_BODY_TIMEOUT_SECS: f64 = 60.0;
/// Default `--body-min-rate`: after the grace period a body must have averaged this many
/// bytes per second since it started (Apache's `mod_reqtimeout` uses 500).
pub const DEFAULT_BODY_MIN_BYTES_PER_SEC: u64 = 1024;
/// Default `--body-min-rate-grace`: seconds before the minimum rate applies (covers slow
/// starts such as `Expect: 100-continue` round trips).
pub const DEFAULT_BODY_MIN_RATE_GRACE_SECS: f64 = 10.0;
/// Default `--keep-alive`: seconds an idle keep-alive connection stays open (uvicorn's, and
/// actix's, default).
pub const DEFAULT_KEEP_ALIVE_SECS: f64 = 5.0;
/// Seconds allowed for a request head (actix's default, set explicitly so it is documented).
pub const REQUEST_HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `--max-connections`: open connections the server accepts at once, all clients
/// together; beyond it new connections wait in the kernel's backlog instead of failing with
/// "Too many open files".
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;

/// How slow a request body may be. Installed with `App::app_data`, read by [`deadline`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BodyLimits {
    /// The whole body must arrive within this time of its first read; `None`: no total limit.
    pub total: Option<Duration>,
    /// After `grace`, fewer than this many bytes per second on average is cut; 0: no rate.
    pub min_bytes_per_sec: u64,
    /// Time before `min_bytes_per_sec` applies.
    pub grace: Duration,
}

impl Default for BodyLimits {
    fn default() -> Self {
        Self {
            total: Some(Duration::from_secs_f64(DEFAULT_BODY_TIMEOUT_SECS)),
            min_bytes_per_sec: DEFAULT_BODY_MIN_BYTES_PER_SEC,
            grace: Duration::from_secs_f64(DEFAULT_BODY_MIN_RATE_GRACE_SECS),
        }
    }
}

impl BodyLimits {
    /// When the body must be complete, given when it started and how much has arrived: the
    /// earlier of the total limit and the point where the average rate drops below the minimum.
    fn deadline(&self, start: Instant, received: u64) -> Option<Instant> {
        let by_rate = (self.min_bytes_per_sec > 0).then(|| {
            let earned = Duration::from_secs_f64(received as f64 / self.min_bytes_per_sec as f64);
            start + earned.max(self.grace)
        });
        let by_total = self.total.map(|t| start + t);
        match (by_rate, by_total) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

/// The request's payload, shared by the wrapping stream and the middleware (which may have
/// to keep it alive after the handler is done with it).
struct Shared {
    payload: RefCell<Payload>,
    finished: Cell<bool>,
    timed_out: Cell<bool>,
}

/// The payload as handlers see it: the original one, with a deadline.
struct DeadlineStream {
    shared: Rc<Shared>,
    limits: BodyLimits,
    start: Option<Instant>,
    received: u64,
    timer: Option<Pin<Box<Sleep>>>,
}

/// Marks the body as timed out (the middleware then answers 408) and fails the read.
fn time_out(shared: &Shared) -> PayloadError {
    shared.timed_out.set(true);
    PayloadError::Io(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "request body not received in time",
    ))
}

impl Stream for DeadlineStream {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.shared.finished.get() {
            return Poll::Ready(None);
        }
        if this.shared.timed_out.get() {
            return Poll::Ready(Some(Err(time_out(&this.shared))));
        }
        // The clock starts at the first read, so time a request waits before its handler
        // reads the body (the server's doing, not the client's) is not charged to the client.
        let start = *this.start.get_or_insert_with(Instant::now);
        let deadline = this.limits.deadline(start, this.received);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Poll::Ready(Some(Err(time_out(&this.shared))));
        }
        let polled = Pin::new(&mut *this.shared.payload.borrow_mut()).poll_next(cx);
        match polled {
            Poll::Ready(Some(Ok(chunk))) => {
                this.received = this.received.saturating_add(chunk.len() as u64);
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(None) => {
                this.shared.finished.set(true);
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Pending => {
                let Some(deadline) = deadline else {
                    return Poll::Pending;
                };
                // One timer per body. The deadline only moves later (as bytes arrive), so the
                // timer is moved only when it fires early: no timer work per chunk.
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                loop {
                    if timer.as_mut().poll(cx).is_pending() {
                        return Poll::Pending;
                    }
                    if Instant::now() >= deadline {
                        return Poll::Ready(Some(Err(time_out(&this.shared))));
                    }
                    timer.as_mut().reset(deadline);
                }
            }
        }
    }
}

/// A response body that keeps the unread request payload alive until it has been written, so
/// actix closes the connection rather than draining the rest of the body without a deadline.
pub struct Held {
    body: BoxBody,
    _payload: Rc<Shared>,
}

impl MessageBody for Held {
    type Error = <BoxBody as MessageBody>::Error;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

/// Middleware: every request body gets the [`BodyLimits`] found in the app data (the
/// defaults without one). A body too slow is answered 408 `{"detail": ...}` and the
/// connection is closed.
pub async fn deadline<B: MessageBody + 'static>(
    mut req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B, Held>>, actix_web::Error> {
    let limits = req.app_data::<BodyLimits>().copied().unwrap_or_default();
    let payload = req.take_payload();
    // No body, nothing to limit. Bodies are wrapped even with both limits off: holding an
    // unread one until the response is written still matters (see the module docs).
    if matches!(payload, Payload::None) {
        req.set_payload(payload);
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let shared = Rc::new(Shared {
        payload: RefCell::new(payload),
        finished: Cell::new(false),
        timed_out: Cell::new(false),
    });
    let stream = DeadlineStream {
        shared: shared.clone(),
        limits,
        start: None,
        received: 0,
        timer: None,
    };
    let boxed: Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>> = Box::pin(stream);
    req.set_payload(Payload::from(boxed));
    let res = next.call(req).await?;
    if shared.timed_out.get() {
        let peer = res
            .request()
            .peer_addr()
            .map_or_else(|| "?".to_string(), |a| a.ip().to_string());
        tracing::info!(
            %peer,
            path = %res.request().path(),
            "request body too slow; closing the connection"
        );
        let mut limit = Vec::new();
        if let Some(total) = limits.total {
            limit.push(format!("{}s in total", total.as_secs_f64()));
        }
        if limits.min_bytes_per_sec > 0 {
            limit.push(format!(
                "at least {} bytes/s after {}s",
                limits.min_bytes_per_sec,
                limits.grace.as_secs_f64()
            ));
        }
        let detail = format!(
            "Request body not received in time (limit: {})",
            limit.join(", ")
        );
        let mut response = HttpResponse::RequestTimeout()
            .insert_header((header::CONNECTION, HeaderValue::from_static("close")))
            .json(serde_json::json!({ "detail": detail }));
        response
            .head_mut()
            .set_connection_type(ConnectionType::Close);
        let (request, _) = res.into_parts();
        return Ok(ServiceResponse::new(request, response).map_body(|_, body| {
            EitherBody::right(Held {
                body,
                _payload: shared,
            })
        }));
    }
    if shared.finished.get() {
        return Ok(res.map_into_left_body());
    }
    Ok(res.map_body(|_, body| {
        EitherBody::right(Held {
            body: BoxBody::new(body),
            _payload: shared,
        })
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: Option<u64>, rate: u64, grace: u64) -> BodyLimits {
        BodyLimits {
            total: total.map(Duration::from_secs),
            min_bytes_per_sec: rate,
            grace: Duration::from_secs(grace),
        }
    }

    #[test]
    fn the_deadline_is_the_earlier_of_total_and_rate() {
        let start = Instant::now();
        let s = Duration::from_secs;
        let cases = [
            // (total, rate, grace, received) -> seconds after start
            ((Some(60), 1000, 10, 0), Some(10)),
            ((Some(60), 1000, 10, 20_000), Some(20)),
            ((Some(60), 1000, 10, 1_000_000), Some(60)),
            ((None, 1000, 10, 30_000), Some(30)),
            ((Some(60), 0, 10, 0), Some(60)),
            ((None, 0, 10, 0), None),
        ];
        for ((total, rate, grace, received), want) in cases {
            let got = limits(total, rate, grace).deadline(start, received);
            assert_eq!(
                got,
                want.map(|w| start + s(w)),
                "{total:?} {rate} {grace} {received}"
            );
        }
    }
}
