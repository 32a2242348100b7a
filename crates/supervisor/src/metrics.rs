//! Prometheus metrics and the request log, both fed by one middleware.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::web;
use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use xi_auth::Principal;

/// Counters per thread in [`USAGE_COUNTERS`] before it is emptied.
const USAGE_COUNTERS_LIMIT: usize = 10_000;

thread_local! {
    /// This thread's `usage_requests` counters of identity-store keys' principals (a key's
    /// principal is one `Arc` per thread for as long as the key is cached), by registry and
    /// principal address: a key's request is counted without hashing its labels or locking the metric.
    /// The principal is held, so its address cannot be reused while its entry lives.
    static USAGE_COUNTERS: RefCell<UsageCounters> = RefCell::new(UsageCounters::default());
}

/// This thread's counters for one registry.
#[derive(Default)]
struct UsageCounters {
    /// The registry's uid.
    owner: u64,
    /// The last principal counted (its address) and its counter: a thread serving one hot key
    /// counts it without hashing. Always an entry of `by_principal`, which holds the principal.
    last: Option<(usize, IntCounter)>,
    /// A principal's address, the principal (held), and its counter (addresses are ours, not
    /// the caller's: a fast hasher is safe here).
    by_principal: foldhash::HashMap<usize, (Arc<Principal>, IntCounter)>,
}

pub struct Metrics {
    /// Tells this registry's entries in [`USAGE_COUNTERS`] from another's.
    uid: u64,
    registry: Registry,
    requests: IntCounterVec,
    latency: HistogramVec,
    pub logins: IntCounterVec,
    pub auth_reloads: IntCounterVec,
    pub running_models: IntGauge,
    /// Workers joining, leaving and declared dead.
    pub cluster_events: IntCounterVec,
    pub live_workers: IntGauge,
    /// Requests and tokens by api key (display prefix; `-` for token logins) and user.
    usage_requests: IntCounterVec,
    pub usage_tokens: IntCounterVec,
    /// Requests refused by a key's limit, by limit.
    pub limited: IntCounterVec,
}

impl Metrics {
    pub fn new() -> Result<Self, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "xinference_http_requests_total",
                "HTTP requests by route and status",
            ),
            &["method", "route", "status"],
        )?;
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "xinference_http_request_duration_seconds",
                "HTTP request latency",
            ),
            &["method", "route"],
        )?;
        let logins = IntCounterVec::new(
            Opts::new("xinference_login_attempts_total", "POST /token outcomes"),
            &["result"],
        )?;
        let auth_reloads = IntCounterVec::new(
            Opts::new(
                "xinference_auth_reloads_total",
                "SIGHUP reloads of the auth config",
            ),
            &["result"],
        )?;
        let running_models = IntGauge::new(
            "xinference_running_models",
            "Models launched and not terminated",
        )?;
        let cluster_events = IntCounterVec::new(
            Opts::new(
                "xinference_worker_events_total",
                "Workers joining, leaving and declared dead",
            ),
            &["event"],
        )?;
        let live_workers = IntGauge::new("xinference_live_workers", "Workers alive now")?;
        let usage_requests = IntCounterVec::new(
            Opts::new(
                "xinference_usage_requests_total",
                "Authenticated requests by api key prefix (- for token logins) and user",
            ),
            &["key", "user"],
        )?;
        let usage_tokens = IntCounterVec::new(
            Opts::new(
                "xinference_usage_tokens_total",
                "Prompt and completion tokens by api key prefix (- for token logins) and user",
            ),
            &["key", "user", "kind"],
        )?;
        let limited = IntCounterVec::new(
            Opts::new(
                "xinference_key_limited_total",
                "Requests refused (429) by an api key's limit",
            ),
            &["limit"],
        )?;
        registry.register(Box::new(usage_requests.clone()))?;
        registry.register(Box::new(usage_tokens.clone()))?;
        registry.register(Box::new(limited.clone()))?;
        registry.register(Box::new(cluster_events.clone()))?;
        registry.register(Box::new(live_workers.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(latency.clone()))?;
        registry.register(Box::new(logins.clone()))?;
        registry.register(Box::new(auth_reloads.clone()))?;
        registry.register(Box::new(running_models.clone()))?;
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Ok(Self {
            uid: NEXT.fetch_add(1, Ordering::Relaxed),
            registry,
            requests,
            latency,
            logins,
            auth_reloads,
            running_models,
            cluster_events,
            live_workers,
            usage_requests,
            usage_tokens,
            limited,
        })
    }

    /// Counts one authenticated request by `p` (key prefix, `-` for a token login, and user).
    /// `shared`: `p` is an identity-store key's cached principal, whose counter this thread
    /// keeps.
    pub fn usage_request(&self, p: &Arc<Principal>, shared: bool) {
        let key = crate::usage::key_label(p);
        if !shared {
            self.usage_requests
                .with_label_values(&[key, &p.username])
                .inc();
            return;
        }
        let address = Arc::as_ptr(p) as usize;
        USAGE_COUNTERS.with(|cell| {
            let mut local = cell.borrow_mut();
            if local.owner == self.uid {
                if let Some((last, counter)) = &local.last {
                    if *last == address {
                        counter.inc();
                        return;
                    }
                }
            }
            if local.owner != self.uid || local.by_principal.len() >= USAGE_COUNTERS_LIMIT {
                *local = UsageCounters {
                    owner: self.uid,
                    ..UsageCounters::default()
                };
            }
            let counter = match local.by_principal.get(&address) {
                Some((_, counter)) => counter.clone(),
                None => {
                    let counter = self.usage_requests.with_label_values(&[key, &p.username]);
                    local
                        .by_principal
                        .insert(address, (p.clone(), counter.clone()));
                    counter
                }
            };
            counter.inc();
            local.last = Some((address, counter));
        });
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        let encoder = TextEncoder::new();
        if let Err(e) = encoder.encode(&self.registry.gather(), &mut buffer) {
            tracing::warn!(error = %e, "cannot encode metrics");
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

/// Counts and times every request by its route pattern (never the raw path, which would let
/// clients create unbounded label values), and logs it.
pub async fn observe(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let start = Instant::now();
    let method = req.method().to_string();
    let path = req.path().to_string();
    let res = next.call(req).await?;
    let metrics = res.request().app_data::<web::Data<Metrics>>();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".into());
    let status = res.status().as_u16();
    let elapsed = start.elapsed();
    if let Some(metrics) = metrics {
        metrics
            .requests
            .with_label_values(&[method.as_str(), route.as_str(), &status.to_string()])
            .inc();
        metrics
            .latency
            .with_label_values(&[method.as_str(), route.as_str()])
            .observe(elapsed.as_secs_f64());
    }
    let ms = elapsed.as_secs_f64() * 1000.0;
    match status {
        500.. => tracing::warn!(%method, %path, status, ms, "request failed"),
        400..=499 => tracing::info!(%method, %path, status, ms, "request refused"),
        _ => tracing::debug!(%method, %path, status, ms, "request"),
    }
    Ok(res)
}
