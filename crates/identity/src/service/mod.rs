//! [`Identity`]: the identity store as the supervisor sees it: logins and sessions
//! ([`sessions`](self)), authentication with its cache, and the admin operations on users and
//! keys with their rules (nobody grants what they do not hold, the last admin stays, config
//! principals are read-only). No HTTP here: the routes call these methods with the caller.

mod federated;
mod import;
mod keys;
mod login;
mod users;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use xi_api::PermissionSet;
use xi_auth::jwt::{Claims, JwtCodec};
use xi_auth::password::PasswordHash;
use xi_auth::throttle::LoginThrottle;
use xi_auth::{AuthError, AuthService, Clock, HashPool, JwtAlgorithm, Secret, ThrottlePolicy};

use crate::audit::{self, AuditEvent, Event, Filter};
use crate::cache::Cache;
use crate::error::{IdentityError, Result};
use crate::limits::{periods, Limiter};
use crate::store::{Store, Write};

pub use federated::FederatedLogin;
pub use import::ImportReport;

pub use login::{Authenticated, Issued, MUST_CHANGE_PASSWORD};
pub use users::Bootstrap;

/// How the identity store behaves; every default is here.
#[derive(Debug, Clone)]
pub struct IdentityOptions {
    /// Access-token lifetime when no auth config file sets one (upstream: 30 minutes).
    pub access_token_secs: u64,
    /// Refresh-token (and session) lifetime (upstream: 7 days).
    pub refresh_token_secs: u64,
    /// How often the store's revision is read, so that changes made through another
    /// supervisor reach this one's cache: the bound on how stale a cached credential can be.
    pub poll_interval: Duration,
    /// How long a verified key or session is trusted without the database confirming it: how
    /// long credentials keep working through a database outage.
    pub cache_ttl: Duration,
    pub throttle: ThrottlePolicy,
    pub min_password_len: usize,
    /// Audit events and ended sessions older than this are deleted.
    pub retention_secs: u64,
}

impl Default for IdentityOptions {
    fn default() -> Self {
        IdentityOptions {
            access_token_secs: 30 * 60,
            refresh_token_secs: 7 * 24 * 3600,
            poll_interval: Duration::from_secs(1),
            cache_ttl: Duration::from_secs(300),
            throttle: ThrottlePolicy::default(),
            min_password_len: 8,
            retention_secs: 90 * 24 * 3600,
        }
    }
}

/// Who signs tokens: the auth config file's secret when there is one, else a secret kept in
/// the database (so supervisors sharing it accept each other's tokens).
enum Signer {
    Config(Arc<AuthService>),
    Own(Box<JwtCodec>),
}

/// What a session is now, as authentication needs it.
#[derive(Debug, Clone)]
pub(crate) struct SessionState {
    user_id: Option<i64>,
    username: String,
    /// The user's permissions now (a token's grant is cut down to them).
    permissions: PermissionSet,
    must_change_password: bool,
    /// Unix time the session ends.
    expires_at: i64,
    /// Revoked, or its user disabled or gone.
    ended: bool,
}

pub struct Identity {
    store: Store,
    config: Option<Arc<AuthService>>,
    signer: Signer,
    clock: Arc<dyn Clock>,
    throttle: LoginThrottle,
    options: IdentityOptions,
    /// Verified for unknown usernames, so they cost what a wrong password costs.
    dummy: PasswordHash,
    keys: Cache<Option<Arc<login::CachedKey>>>,
    sessions: Cache<SessionState>,
    limiter: Limiter,
    /// Password checks and hashing: bounded, low-priority threads (a login storm cannot
    /// starve the request threads).
    hashing: Arc<HashPool>,
    /// Denied requests being written to the audit log.
    denials: Arc<tokio::sync::Semaphore>,
    denials_dropped: AtomicU64,
    signer_generation: AtomicU64,
    /// Tells this `Identity`'s per-thread caches from another's in the same process.
    uid: u64,
}

/// Generations of signers handed out so far (each `Identity` starts at a fresh one, far apart,
/// so two in one process never share a per-thread cache entry).
static SIGNERS: AtomicU64 = AtomicU64::new(0);

/// Denied-request events written at once, at most.
pub const DENIAL_WRITES: usize = 64;

/// A denied request, for the audit log.
#[derive(Debug, Clone)]
pub struct Denial {
    /// `invalid_credentials`, `forbidden`, `limited`, `must_change_password`, ...
    pub outcome: &'static str,
    pub username: Option<String>,
    pub key_prefix: Option<String>,
    /// `METHOD /path`.
    pub target: String,
    pub address: String,
    pub detail: Option<String>,
}

impl Identity {
    /// The identity store on `store`, beside the config file's principals (`config`), if any.
    /// Starts the revision poller; it stops when the `Identity` is dropped.
    pub async fn open(
        store: Store,
        config: Option<Arc<AuthService>>,
        options: IdentityOptions,
        clock: Arc<dyn Clock>,
        hashing: Arc<HashPool>,
    ) -> Result<Arc<Identity>> {
        let signer = match &config {
            Some(config) => Signer::Config(config.clone()),
            None => {
                let secret = store
                    .meta_or_init("jwt_secret", || crate::sessions::random_hex(32))
                    .await?;
                let codec = JwtCodec::new(JwtAlgorithm::HS256, &Secret::new(secret))?;
                Signer::Own(Box::new(codec))
            }
        };
        let dummy = match &config {
            Some(config) => config.dummy_hash(),
            None => PasswordHash::hash_plain(&crate::sessions::random_hex(16))?,
        };
        let identity = Arc::new(Identity {
            throttle: LoginThrottle::new(options.throttle),
            keys: Cache::new(options.cache_ttl),
            sessions: Cache::new(options.cache_ttl),
            limiter: Limiter::default(),
            hashing,
            denials: Arc::new(tokio::sync::Semaphore::new(DENIAL_WRITES)),
            denials_dropped: AtomicU64::new(0),
            signer_generation: AtomicU64::new(SIGNERS.fetch_add(1 << 32, Ordering::Relaxed)),
            uid: SIGNERS.fetch_add(1 << 32, Ordering::Relaxed),
            store,
            config,
            signer,
            clock,
            options,
            dummy,
        });
        let revision = identity.store.revision().await?;
        identity.observe(revision);
        tokio::spawn(poll(Arc::downgrade(&identity)));
        Ok(identity)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether users come from an auth config file too.
    pub fn has_config(&self) -> bool {
        self.config.is_some()
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.now_unix()).unwrap_or(i64::MAX)
    }

    /// The store has reached `revision`: caches read before it are emptied.
    fn observe(&self, revision: i64) {
        self.keys.observe(revision);
        self.sessions.observe(revision);
    }

    /// The auth config file was reloaded: sessions of its users are checked against it again,
    /// and tokens against its (maybe new) secret.
    pub fn config_reloaded(&self) {
        self.keys.clear();
        self.sessions.clear();
        self.signer_generation.fetch_add(1, Ordering::SeqCst);
    }

    /// Identifies the signing key in force, for the per-thread caches of verified tokens: one
    /// number per `Identity` and config load.
    fn signer_generation(&self) -> u64 {
        self.signer_generation.load(Ordering::Relaxed)
    }

    fn access_token_secs(&self) -> u64 {
        match &self.signer {
            Signer::Config(config) => config.token_lifetime_secs(),
            Signer::Own(_) => self.options.access_token_secs,
        }
    }

    fn issue(&self, claims: &Claims) -> Result<String> {
        Ok(match &self.signer {
            Signer::Config(config) => config.issue(claims)?,
            Signer::Own(codec) => codec.issue(claims)?,
        })
    }

    fn verify(&self, token: &str) -> std::result::Result<Claims, AuthError> {
        match &self.signer {
            Signer::Config(config) => config.verify(token),
            Signer::Own(codec) => codec.verify(token, self.clock.as_ref()),
        }
    }

    /// Ends a write: its audit event in the same transaction, the commit, and this process's
    /// caches told of the new revision (other supervisors see it at their next poll).
    async fn commit(&self, mut w: Write, now: i64, event: &Event<'_>) -> Result<()> {
        audit::record(&mut *w.tx, now, event).await?;
        w.tx.commit().await?;
        self.observe(w.revision);
        Ok(())
    }

    /// Records an event outside any transaction (logins, denials); a database fault is logged,
    /// never the caller's problem.
    pub async fn record(&self, event: Event<'_>) {
        if let Err(e) = audit::record(self.store.pool(), self.now(), &event).await {
            tracing::warn!(error = %e, action = event.action, "audit event not recorded");
        }
    }

    /// Records a denied request (401, 403, 429) in the background: the request is answered
    /// at once, and a flood of denials cannot pile up database writes (beyond
    /// [`DENIAL_WRITES`] in flight, further ones are counted in the log, not recorded).
    pub fn note_denied(self: &Arc<Self>, denial: Denial) {
        let Ok(permit) = self.denials.clone().try_acquire_owned() else {
            let dropped = self.denials_dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if dropped.is_power_of_two() {
                tracing::warn!(dropped, "denied requests not audited: too many at once");
            }
            return;
        };
        let identity = self.clone();
        tokio::spawn(async move {
            let _permit = permit;
            identity
                .record(Event {
                    action: "denied",
                    outcome: denial.outcome,
                    username: denial.username.as_deref(),
                    key_prefix: denial.key_prefix.as_deref(),
                    target: Some(denial.target),
                    address: Some(&denial.address),
                    detail: denial.detail,
                })
                .await;
        });
    }

    /// Audit events, newest first (`admin` only: the route requires it).
    pub async fn audit(&self, filter: &Filter) -> Result<Vec<AuditEvent>> {
        let mut filter = filter.clone();
        filter.limit = filter.limit.clamp(1, 1000);
        audit::list(self.store.pool(), &filter).await
    }

    /// Counts the tokens of a request made with key `key`.
    pub fn record_tokens(&self, key: i64, prompt: u64, completion: u64) {
        self.limiter
            .record_tokens(key, prompt, completion, self.clock.now_unix());
    }

    /// Writes the keys' use to the store and reads back the budgets' shared counts.
    pub async fn flush_usage(&self) {
        let now = self.clock.now_unix();
        let (day, month) = periods(now);
        for (key, pending) in self.limiter.take_pending() {
            if let Err(e) = crate::usage::write(&self.store, key, &pending, (day, month)).await {
                match e {
                    IdentityError::Unavailable(_) => self.limiter.restore_pending(key, pending),
                    other => tracing::warn!(key, error = %other, "key usage not written"),
                }
            }
        }
        for key in self.limiter.budgeted_keys() {
            if let Ok((d, m)) = crate::usage::read(&self.store, key, (day, month)).await {
                self.limiter.set_budget_base(key, (day, d), (month, m));
            }
        }
    }

    /// Ends sessions and deletes audit events past the retention time.
    async fn prune(&self) -> Result<()> {
        let before = self.now() - i64::try_from(self.options.retention_secs).unwrap_or(i64::MAX);
        let sessions = crate::sessions::prune(self.store.pool(), before).await?;
        let events = audit::prune(self.store.pool(), before).await?;
        if sessions + events > 0 {
            tracing::info!(sessions, events, "pruned the identity store");
        }
        Ok(())
    }
}

/// Follows the store's revision (changes through other supervisors) until `identity` is gone;
/// prunes old rows once an hour.
async fn poll(identity: Weak<Identity>) {
    let mut last_prune = std::time::Instant::now() - Duration::from_secs(3600);
    let mut failing = false;
    loop {
        let Some(id) = identity.upgrade() else { return };
        let interval = id.options.poll_interval;
        match id.store.revision().await {
            Ok(revision) => {
                if failing {
                    tracing::info!("the identity store is reachable again");
                    failing = false;
                }
                id.observe(revision);
            }
            Err(e) if !failing => {
                tracing::warn!(error = %e, "cannot read the identity store; cached credentials \
                    keep working for at most their cache lifetime");
                failing = true;
            }
            Err(_) => {}
        }
        id.flush_usage().await;
        if last_prune.elapsed() >= Duration::from_secs(3600) {
            last_prune = std::time::Instant::now();
            if let Err(e) = id.prune().await {
                tracing::warn!(error = %e, "cannot prune the identity store");
            }
        }
        drop(id);
        tokio::time::sleep(interval).await;
    }
}

impl Identity {
    /// Runs password work on the hashing threads (503 when too many wait).
    async fn hash<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
        Ok(self.hashing.run(f).await?)
    }
}
