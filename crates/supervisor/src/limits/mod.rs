//! Limits that keep slow or greedy clients from holding the server's connections (and file
//! descriptors): body deadlines ([`body`]), open connections per client address for
//! unauthenticated requests ([`ConnectionBook`], [`refuse_crowded`]), and the process's
//! open-file limit ([`raise_open_file_limit`], called by the launchers at startup).
//!
//! Together with actix's own timers (request head: 5 s; idle keep-alive: `--keep-alive`;
//! lingering after a close: 1 s) every connection that has not authenticated is bounded in
//! time, and one address can hold at most `--max-connections-per-address` of them.

/// Body deadlines and connection timing (one implementation with the worker's internal API).
pub use xi_http as body;

use std::any::Any;
use std::cell::Cell;
use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard};

use actix_web::body::MessageBody;
use actix_web::dev::{Extensions, ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::ConnectionType;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpResponse};

use crate::authz::Caller;
use crate::state::AppState;

pub use crate::config::DEFAULT_MAX_CONNECTIONS_PER_ADDRESS;

/// File descriptors kept back from `--max-connections` for everything else the process opens
/// (model files, sockets to workers and hubs, logs).
pub const RESERVED_FILES: u64 = 256;

/// Seconds a client refused for crowding is told to wait.
const CROWDED_RETRY_AFTER: &str = "5";

/// Open, not-yet-authenticated connections per client address (IPv6 by /64: one host gets a
/// whole prefix). Shared by every HTTP worker thread.
#[derive(Debug)]
pub struct ConnectionBook {
    limit: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
}

impl ConnectionBook {
    pub fn new(limit: usize) -> Arc<Self> {
        Arc::new(Self {
            limit,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, usize>> {
        // A panic while holding the lock leaves only counters behind: keep using them.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn open(&self, address: IpAddr) {
        *self.lock().entry(address).or_insert(0) += 1;
    }

    fn close(&self, address: IpAddr) {
        let mut open = self.lock();
        if let Some(n) = open.get_mut(&address) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&address);
            }
        }
    }

    fn count(&self, address: IpAddr) -> usize {
        self.lock().get(&address).copied().unwrap_or(0)
    }

    /// The `HttpServer::on_connect` hook: counts the new connection under its client address;
    /// the [`ConnectionGuard`] stored with the connection uncounts it when it closes.
    pub fn on_connect(book: &Arc<Self>, connection: &dyn Any, data: &mut Extensions) {
        let Some(stream) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() else {
            return;
        };
        let Ok(peer) = stream.peer_addr() else {
            return;
        };
        let address = bucket(peer.ip());
        book.open(address);
        data.insert(ConnectionGuard {
            book: book.clone(),
            address,
            counted: Cell::new(true),
        });
    }
}

/// The address a connection is counted under: IPv4 (also IPv4-mapped IPv6) as is, IPv6 by
/// its /64 prefix.
fn bucket(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// Lives as long as its connection; a connection stops counting once it has carried an
/// authenticated request.
pub struct ConnectionGuard {
    book: Arc<ConnectionBook>,
    address: IpAddr,
    counted: Cell<bool>,
}

impl ConnectionGuard {
    fn authenticated(&self) {
        if self.counted.replace(false) {
            self.book.close(self.address);
        }
    }

    fn crowded(&self) -> bool {
        self.counted.get() && self.book.count(self.address) > self.book.limit
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.counted.get() {
            self.book.close(self.address);
        }
    }
}

/// A user the authentication middleware let in, or a worker with the cluster secret.
fn authenticated(req: &ServiceRequest) -> bool {
    if req.extensions().get::<Caller>().is_some() {
        return true;
    }
    let presented = req
        .headers()
        .get(xi_api::cluster::CLUSTER_SECRET_HEADER)
        .and_then(|v| v.to_str().ok());
    match (req.app_data::<web::Data<AppState>>(), presented) {
        (Some(state), Some(secret)) => state.cluster.secret().matches(secret),
        _ => false,
    }
}

/// Middleware, inside the authentication one: a request that did not authenticate (a public
/// route such as `/token` while auth is on) is refused with 429 and `Connection: close` when
/// its address holds more unauthenticated connections than the limit. Authenticated requests
/// (users, and workers with the cluster secret) always pass, and their connection stops
/// counting; with auth off nothing is counted.
pub async fn refuse_crowded(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let crowded = match req.conn_data::<ConnectionGuard>() {
        None => false,
        // A connection that has authenticated once no longer counts: nothing to decide.
        Some(guard) if !guard.counted.get() => false,
        Some(guard) if authenticated(&req) => {
            guard.authenticated();
            false
        }
        Some(guard) => guard.crowded(),
    };
    if !crowded {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let limit = req
        .conn_data::<ConnectionGuard>()
        .map_or(0, |g| g.book.limit);
    let peer = req
        .peer_addr()
        .map_or_else(|| "?".to_string(), |a| a.ip().to_string());
    tracing::debug!(%peer, path = %req.path(), limit, "too many connections from one address");
    let mut response = HttpResponse::TooManyRequests()
        .insert_header((
            header::RETRY_AFTER,
            HeaderValue::from_static(CROWDED_RETRY_AFTER),
        ))
        .insert_header((header::CONNECTION, HeaderValue::from_static("close")))
        .json(serde_json::json!({
            "detail": format!(
                "Too many open connections from your address (limit: {limit}); close some and retry"
            )
        }));
    response
        .head_mut()
        .set_connection_type(ConnectionType::Close);
    Ok(req.into_response(response).map_into_right_body())
}

/// The process's soft and hard open-file limits.
#[cfg(unix)]
fn file_limits() -> Option<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct it is given.
    let status = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) };
    (status == 0).then_some(limit)
}

/// `rlim_t` is `u64` on the 64-bit targets we build for, narrower on some others.
#[cfg(unix)]
#[allow(clippy::unnecessary_cast)]
fn files(n: libc::rlim_t) -> u64 {
    n as u64
}

/// The soft open-file limit in force (each connection is a file descriptor); `None` when it
/// cannot be read or is unlimited.
#[cfg(unix)]
pub fn open_file_limit() -> Option<u64> {
    let limit = file_limits()?;
    (limit.rlim_cur != libc::RLIM_INFINITY).then_some(files(limit.rlim_cur))
}

#[cfg(not(unix))]
pub fn open_file_limit() -> Option<u64> {
    None
}

/// Raises the soft open-file limit to the hard one, once at startup. Returns the soft limit
/// before and after, or why it stayed.
#[cfg(unix)]
pub fn raise_open_file_limit() -> Result<(u64, u64), String> {
    let Some(limit) = file_limits() else {
        return Err(format!(
            "cannot read the open-file limit: {}",
            std::io::Error::last_os_error()
        ));
    };
    let before = files(limit.rlim_cur);
    // macOS refuses more than OPEN_MAX even under an unlimited hard limit.
    let target = if cfg!(target_os = "macos") {
        limit.rlim_max.min(10_240)
    } else {
        limit.rlim_max
    };
    if limit.rlim_cur >= target {
        return Ok((before, before));
    }
    let raised = libc::rlimit {
        rlim_cur: target,
        rlim_max: limit.rlim_max,
    };
    // SAFETY: setrlimit only reads the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(format!(
            "cannot raise the open-file limit from {before} to {target}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok((before, files(target)))
}

#[cfg(not(unix))]
pub fn raise_open_file_limit() -> Result<(u64, u64), String> {
    Err("open-file limits are not managed on this platform".to_string())
}

/// The connections the server may accept at once: `wanted`, lowered (with a warning) to what
/// the open-file limit allows.
pub fn usable_connections(wanted: usize, open_file_limit: Option<u64>) -> usize {
    let Some(files) = open_file_limit else {
        return wanted;
    };
    let allowed = files.saturating_sub(RESERVED_FILES).max(1);
    if wanted as u64 <= allowed {
        return wanted;
    }
    tracing::warn!(
        max_connections = wanted,
        open_file_limit = files,
        using = allowed,
        "--max-connections is above what the open-file limit allows; lowered"
    );
    usize::try_from(allowed).unwrap_or(wanted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_counted_by_prefix_and_mapped_ipv4_as_ipv4() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(bucket(a), bucket(b));
        assert_ne!(bucket(a), bucket(c));
        let mapped: IpAddr = "::ffff:10.0.0.7".parse().unwrap();
        assert_eq!(bucket(mapped), "10.0.0.7".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn the_book_forgets_an_address_when_its_last_connection_closes() {
        let book = ConnectionBook::new(2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        book.open(ip);
        book.open(ip);
        book.open(ip);
        assert_eq!(book.count(ip), 3);
        book.close(ip);
        book.close(ip);
        book.close(ip);
        book.close(ip);
        assert_eq!(book.count(ip), 0);
        assert!(book.lock().is_empty());
    }

    #[test]
    fn max_connections_stays_under_the_open_file_limit() {
        assert_eq!(usable_connections(10_000, None), 10_000);
        assert_eq!(usable_connections(10_000, Some(1_048_576)), 10_000);
        assert_eq!(usable_connections(10_000, Some(1024)), 768);
        assert_eq!(usable_connections(10_000, Some(100)), 1);
    }
}
