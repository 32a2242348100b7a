//! Logins, sessions and authentication: `POST /token`, `/v1/auth/refresh`, `/v1/auth/logout`,
//! and what every request's `Authorization` header becomes.

use std::sync::Arc;

use xi_api::identity::{SOURCE_CONFIG, SOURCE_LOCAL};
use xi_api::{Permission, PermissionSet};
use xi_auth::jwt::Claims;
use xi_auth::password::PasswordHash;
use xi_auth::service::{bearer_token, is_api_key};
use xi_auth::{AuthError, Credential, KeyScope, Principal};

use super::{Identity, SessionState};
use crate::audit::Event;
use crate::error::{IdentityError, Result};
use crate::limits::{KeyState, Permit, Refusal};
use crate::{keys, sessions, users};

/// Tokens of a login or a refresh. `Debug` hides them.
#[derive(Clone)]
pub struct Issued {
    pub access_token: String,
    pub expires_in: u64,
    pub refresh_token: String,
    pub must_change_password: bool,
}

impl std::fmt::Debug for Issued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued")
            .field("expires_in", &self.expires_in)
            .field("must_change_password", &self.must_change_password)
            .finish_non_exhaustive()
    }
}

/// Whose password a login checks.
enum Account {
    Config(PermissionSet),
    Local(users::UserRow),
    Unknown,
}

impl Identity {
    /// Checks a username and password (config users first, then the store's) and opens a
    /// session. Unknown users cost what a wrong password costs; throttled per user and address.
    pub async fn login(&self, username: &str, password: &str, address: &str) -> Result<Issued> {
        let now = self.now();
        if let Some(retry_after_secs) = self.throttle.retry_after(username, address, now as u64) {
            return Err(AuthError::Throttled { retry_after_secs }.into());
        }
        let config_user = self.config.as_ref().and_then(|c| c.user(username));
        let (account, hash) = match config_user {
            Some(user) => (Account::Config(user.permissions), user.password),
            None => match users::by_name(self.store.pool(), username).await? {
                Some(row) => match row.password_hash.as_deref().map(PasswordHash::parse_stored) {
                    Some(Ok(Some(hash))) => (Account::Local(row), hash),
                    _ => (Account::Unknown, self.dummy.clone()),
                },
                None => (Account::Unknown, self.dummy.clone()),
            },
        };
        let candidate = password.to_string();
        let verified = self.hash(move || hash.verify(&candidate)).await?;
        // Who logs in, or why not: one match, so no refused account can reach a session.
        let granted = match account {
            _ if !verified => Err("bad_password"),
            Account::Unknown => Err("bad_password"),
            Account::Local(row) if !row.enabled => Err("disabled"),
            Account::Config(permissions) => Ok((None, SOURCE_CONFIG, permissions, false)),
            Account::Local(row) => Ok((
                Some(row.id),
                SOURCE_LOCAL,
                row.permissions,
                row.must_change_password,
            )),
        };
        let (user_id, source, permissions, must_change) = match granted {
            Ok(granted) => granted,
            Err(outcome) => {
                self.throttle.record_failure(username, address, now as u64);
                self.record(Event {
                    action: "login",
                    outcome,
                    username: Some(username),
                    address: Some(address),
                    ..Event::default()
                })
                .await;
                return Err(AuthError::BadLogin.into());
            }
        };
        self.throttle.record_success(username);
        let session = sessions::SessionRow {
            id: sessions::random_hex(16),
            user_id,
            username: username.to_string(),
            source: source.to_string(),
            expires_at: now + self.refresh_secs(),
            revoked_at: None,
        };
        let mut tx = self.store.pool().begin().await?;
        sessions::insert(&mut *tx, &session, now).await?;
        let refresh_token =
            sessions::new_refresh_token(&mut *tx, &session.id, now, session.expires_at).await?;
        crate::audit::record(
            &mut *tx,
            now,
            &Event {
                action: "login",
                outcome: "ok",
                username: Some(username),
                address: Some(address),
                ..Event::default()
            },
        )
        .await?;
        tx.commit().await?;
        let (access_token, expires_in) = self.access_token(username, permissions, &session.id)?;
        Ok(Issued {
            access_token,
            expires_in,
            refresh_token,
            must_change_password: must_change,
        })
    }

    pub(super) fn refresh_secs(&self) -> i64 {
        i64::try_from(self.options.refresh_token_secs).unwrap_or(i64::MAX)
    }

    pub(super) fn access_token(
        &self,
        username: &str,
        permissions: PermissionSet,
        session: &str,
    ) -> Result<(String, u64)> {
        let now = self.clock.now_unix();
        let expires_in = self.access_token_secs();
        let claims = Claims {
            sub: username.to_string(),
            scopes: permissions.names().into_iter().map(String::from).collect(),
            iat: now,
            exp: now.saturating_add(expires_in),
            nbf: None,
            sid: Some(session.to_string()),
        };
        Ok((self.issue(&claims)?, expires_in))
    }

    /// Rotates a refresh token: the old one stops working, a new pair is returned. A token used
    /// before (a copy raced its owner) ends the whole session.
    pub async fn refresh(&self, refresh_token: &str, address: &str) -> Result<Issued> {
        let invalid = || IdentityError::Unauthorized("Invalid or expired refresh token".into());
        if refresh_token.is_empty() {
            return Err(IdentityError::BadRequest("refresh_token required".into()));
        }
        let now = self.now();
        let row = sessions::refresh_token(self.store.pool(), refresh_token)
            .await?
            .ok_or_else(invalid)?;
        let session = &row.session;
        let event = |outcome| Event {
            action: "refresh",
            outcome,
            username: Some(&session.username),
            address: Some(address),
            ..Event::default()
        };
        if row.used_at.is_some() {
            self.end_reused(&session.id, event("reuse")).await?;
            return Err(IdentityError::Unauthorized(
                "This refresh token was already used; the session has been ended".into(),
            ));
        }
        if row.token_expires_at <= now || session.expires_at <= now || session.revoked_at.is_some()
        {
            return Err(invalid());
        }
        let state = self.session_state(&session.id).await?.ok_or_else(invalid)?;
        if state.ended {
            return Err(invalid());
        }
        let mut tx = self.store.pool().begin().await?;
        if !sessions::mark_used(&mut *tx, refresh_token, now).await? {
            drop(tx);
            self.end_reused(&session.id, event("reuse")).await?;
            return Err(invalid());
        }
        let new_token =
            sessions::new_refresh_token(&mut *tx, &session.id, now, session.expires_at).await?;
        crate::audit::record(&mut *tx, now, &event("ok")).await?;
        tx.commit().await?;
        let (access_token, expires_in) =
            self.access_token(&state.username, state.permissions, &session.id)?;
        Ok(Issued {
            access_token,
            expires_in,
            refresh_token: new_token,
            must_change_password: state.must_change_password,
        })
    }

    async fn end_reused(&self, session: &str, event: Event<'_>) -> Result<()> {
        let now = self.now();
        let mut w = self.store.write().await?;
        sessions::revoke(&mut *w.tx, session, now).await?;
        self.commit(w, now, &event).await?;
        tracing::warn!(
            session,
            "a used refresh token was presented again: session ended"
        );
        Ok(())
    }

    /// Ends the session of `refresh_token`, or else of the calling token (`caller`).
    pub async fn logout(
        &self,
        refresh_token: &str,
        caller: Option<&Principal>,
        address: &str,
    ) -> Result<()> {
        // The session and whose it is (the audit event names its user even when only the
        // refresh token is presented).
        let session = if refresh_token.is_empty() {
            caller.and_then(|c| Some((c.session.clone()?, c.username.clone())))
        } else {
            sessions::refresh_token(self.store.pool(), refresh_token)
                .await?
                .map(|r| (r.session.id, r.session.username))
        };
        let Some((session, username)) = session else {
            return Ok(());
        };
        let now = self.now();
        let mut w = self.store.write().await?;
        sessions::revoke(&mut *w.tx, &session, now).await?;
        let event = Event {
            action: "logout",
            outcome: "ok",
            username: Some(&username),
            address: Some(address),
            ..Event::default()
        };
        self.commit(w, now, &event).await?;
        Ok(())
    }

    /// A session as it is now (cached). `None`: no such session.
    async fn session_state(&self, id: &str) -> Result<Option<SessionState>> {
        if let Some(state) = self.sessions.get(id) {
            return Ok(Some(state));
        }
        let revision = self.sessions.revision();
        let Some(row) = sessions::by_id(self.store.pool(), id).await? else {
            return Ok(None);
        };
        let (permissions, must_change, live) = match row.user_id {
            Some(user_id) => match users::by_id(self.store.pool(), user_id).await? {
                Some(user) => (user.permissions, user.must_change_password, user.enabled),
                None => (PermissionSet::EMPTY, false, false),
            },
            None => match self.config.as_ref().and_then(|c| c.user(&row.username)) {
                Some(user) => (user.permissions, false, true),
                None => (PermissionSet::EMPTY, false, false),
            },
        };
        let state = SessionState {
            user_id: row.user_id,
            username: row.username,
            permissions,
            must_change_password: must_change,
            expires_at: row.expires_at,
            ended: row.revoked_at.is_some() || !live,
        };
        self.sessions.put(id.to_string(), state.clone(), revision);
        Ok(Some(state))
    }

    /// Authenticates an `Authorization` header: an identity-store key (`xf-...`), a config
    /// key (`sk-...`), or a token (with a session: checked against it; without: a config
    /// token). Known credentials are answered from the cache.
    pub async fn authenticate(&self, authorization: Option<&str>) -> Result<Arc<Principal>> {
        Ok(match self.caller(authorization).await? {
            Caller::Key(key, _) => key.principal.clone(),
            Caller::Other(principal) => principal,
        })
    }

    /// [`Identity::authenticate`] for a request: an identity-store key is also admitted within
    /// its limits (one clock read and one cache lookup serve both).
    pub async fn authenticate_request(&self, authorization: Option<&str>) -> Result<Authenticated> {
        Ok(match self.caller(authorization).await? {
            Caller::Key(key, now) => {
                let admission = key
                    .principal
                    .key
                    .as_ref()
                    .map(|scope| self.limiter.admit_to(&key.limits, scope, now as u64));
                Authenticated {
                    principal: key.principal.clone(),
                    admission,
                }
            }
            Caller::Other(principal) => Authenticated {
                principal,
                admission: None,
            },
        })
    }

    async fn caller(&self, authorization: Option<&str>) -> Result<Caller> {
        let token = bearer_token(authorization).ok_or(AuthError::NotAuthenticated)?;
        if keys::looks_like_key(token) {
            return self
                .usable_key(token)
                .await
                .map(|(k, now)| Caller::Key(k, now));
        }
        if is_api_key(token) {
            // A config key, or one imported from a config file into the store.
            return match self.config_authenticate(authorization) {
                Ok(principal) => Ok(Caller::Other(principal)),
                Err(_) => self
                    .usable_key(token)
                    .await
                    .map(|(k, now)| Caller::Key(k, now)),
            };
        }
        self.token_principal(token, authorization)
            .await
            .map(Caller::Other)
    }

    async fn token_principal(
        &self,
        token: &str,
        authorization: Option<&str>,
    ) -> Result<Arc<Principal>> {
        let claims = self.verified(token)?;
        let Some(sid) = claims.sid.as_deref() else {
            return self.config_authenticate(authorization);
        };
        let state = self
            .session_state(sid)
            .await?
            .ok_or(AuthError::InvalidCredentials)?;
        if state.ended || state.expires_at <= self.now() || state.username != claims.sub {
            return Err(AuthError::InvalidCredentials.into());
        }
        let granted = claims.granted;
        Ok(Arc::new(Principal {
            username: state.username,
            permissions: granted.intersect(state.permissions),
            credential: Credential::Token,
            user_id: state.user_id,
            session: Some(sid.to_string()),
            must_change_password: state.must_change_password,
            key: None,
        }))
    }

    fn config_authenticate(&self, authorization: Option<&str>) -> Result<Arc<Principal>> {
        match &self.config {
            Some(config) => Ok(Arc::new(config.authenticate(authorization)?)),
            None => Err(AuthError::InvalidCredentials.into()),
        }
    }

    /// A key's principal: this thread's copy of the cached one, the same `Arc` for every
    /// request by that key on this thread while it is cached (no copy on the hot path).
    pub async fn authenticate_key_shared(&self, token: &str) -> Result<Arc<Principal>> {
        Ok(self.usable_key(token).await?.0.principal.clone())
    }

    /// This thread's copy of a usable key, and the time (Unix seconds) it was checked at.
    async fn usable_key(&self, token: &str) -> Result<(Arc<CachedKey>, i64)> {
        let revision = self.keys.revision();
        // One clock read serves the cache's time to live and the key's expiry.
        let now = self.now();
        let cached = match self.local_key(token, revision, now) {
            Some(cached) => cached,
            None => self.shared_key(token, revision, now).await?,
        };
        let key = cached.ok_or(AuthError::InvalidCredentials)?;
        let row = &key.row;
        if !row.enabled {
            return Err(IdentityError::Unauthorized("API key is disabled".into()));
        }
        if row.expires_at.is_some_and(|at| at <= now) {
            return Err(IdentityError::Unauthorized("API key has expired".into()));
        }
        if !row.owner_enabled {
            return Err(AuthError::InvalidCredentials.into());
        }
        if row.owner_must_change_password {
            return Err(IdentityError::Forbidden(MUST_CHANGE_PASSWORD.into()));
        }
        Ok((key, now))
    }
}

/// Who a credential names: an identity-store key (this thread's copy, checked at a time), or
/// anyone else (a session, a config user or key).
enum Caller {
    Key(Arc<CachedKey>, i64),
    Other(Arc<Principal>),
}

/// A request's caller and, for an identity-store key, its admission within the key's limits
/// (the permit, when the key limits requests in flight, must live as long as the response).
pub struct Authenticated {
    pub principal: Arc<Principal>,
    pub admission: Option<std::result::Result<Permit, Refusal>>,
}

thread_local! {
    /// Keys this thread authenticated, for the store revision and `Identity` they were read
    /// under (a new revision empties it): the hot path neither hashes the key nor takes a lock.
    /// In memory only, like the request that brought the key.
    static KEYS: std::cell::RefCell<LocalKeys> = std::cell::RefCell::new(LocalKeys::default());
}

#[derive(Default)]
struct LocalKeys {
    owner: u64,
    revision: i64,
    /// Each key with the time (Unix seconds) it was read. Only keys the store knows get an
    /// entry, so callers cannot fill the map: a fast hasher is safe here.
    keys: foldhash::HashMap<String, (Arc<CachedKey>, i64)>,
}

impl Identity {
    /// A key from the store's shared cache, else the store itself, remembered by this thread
    /// (so the next request by this key on this thread neither hashes it nor takes a lock).
    async fn shared_key(
        &self,
        token: &str,
        revision: i64,
        now: i64,
    ) -> Result<Option<Arc<CachedKey>>> {
        let hash = keys::hash(token);
        let cached = match self.keys.get(&hash) {
            Some(cached) => cached,
            None => {
                let revision = self.keys.revision();
                let mut conn = self.store.pool().acquire().await?;
                let row = keys::by_hash(&mut conn, &hash).await?;
                let cached = row.map(|row| {
                    Arc::new(CachedKey {
                        principal: Arc::new(key_principal(&row)),
                        limits: self.limiter.state(row.id),
                        row,
                    })
                });
                self.keys.put(hash, cached.clone(), revision);
                cached
            }
        };
        if let Some(key) = &cached {
            self.remember_key(token, key, revision, now);
        }
        Ok(cached)
    }

    fn local_key(&self, token: &str, revision: i64, now: i64) -> Option<Option<Arc<CachedKey>>> {
        KEYS.with(|cell| {
            let mut local = cell.borrow_mut();
            if local.owner != self.uid || local.revision != revision {
                *local = LocalKeys {
                    owner: self.uid,
                    revision,
                    ..LocalKeys::default()
                };
                return None;
            }
            let (key, at) = local.keys.get(token)?;
            // Read at or before now (a clock set back refreshes it) and within the TTL.
            let age = u64::try_from(now - at).ok()?;
            (age < self.options.cache_ttl.as_secs()).then(|| Some(key.clone()))
        })
    }

    fn remember_key(&self, token: &str, key: &Arc<CachedKey>, revision: i64, now: i64) {
        KEYS.with(|cell| {
            let mut local = cell.borrow_mut();
            if local.owner != self.uid || local.revision != revision {
                return;
            }
            // Overwrites an entry past its time to live, so it is fresh again.
            if local.keys.len() >= VERIFIED_LIMIT && !local.keys.contains_key(token) {
                local.keys.clear();
            }
            // This thread's own copy: its reference counts are then touched by this thread
            // alone, not fought over by every thread serving the same hot key.
            let own = Arc::new(CachedKey {
                row: key.row.clone(),
                principal: Arc::new(Principal::clone(&key.principal)),
                limits: key.limits.clone(),
            });
            local.keys.insert(token.to_string(), (own, now));
        });
    }
}

/// A token whose signature was checked: what authentication needs of its claims.
#[derive(Clone)]
pub(crate) struct Verified {
    sub: String,
    sid: Option<String>,
    granted: PermissionSet,
    exp: u64,
    nbf: Option<u64>,
}

/// Verified tokens kept per thread; emptied when full or when the signing key may have changed.
const VERIFIED_LIMIT: usize = 10_000;

thread_local! {
    /// Tokens whose signature this thread checked, with the signer generation they were checked
    /// under. A signature's validity depends only on the token and the key, so an entry holds
    /// until the key changes; expiry and the session are still checked on every request. Per
    /// thread, so the hot path shares no lock between request threads.
    static VERIFIED: std::cell::RefCell<(u64, std::collections::HashMap<String, Verified>)> =
        std::cell::RefCell::new((u64::MAX, std::collections::HashMap::new()));
}

impl Identity {
    /// The claims of `token`: its signature checked once per thread, its times every time.
    fn verified(&self, token: &str) -> std::result::Result<Verified, AuthError> {
        let now = self.clock.now_unix();
        let generation = self.signer_generation();
        let valid = |v: &Verified| v.exp > now && v.nbf.is_none_or(|nbf| nbf <= now);
        let hit = VERIFIED.with(|cell| {
            let mut cache = cell.borrow_mut();
            if cache.0 != generation {
                *cache = (generation, std::collections::HashMap::new());
            }
            cache.1.get(token).cloned()
        });
        if let Some(v) = hit {
            return match valid(&v) {
                true => Ok(v),
                false => Err(AuthError::InvalidCredentials),
            };
        }
        let claims = self.verify(token)?;
        let v = Verified {
            granted: claims
                .scopes
                .iter()
                .filter_map(|s| PermissionSet::parse_name(s))
                .fold(PermissionSet::EMPTY, PermissionSet::union),
            sub: claims.sub,
            sid: claims.sid,
            exp: claims.exp,
            nbf: claims.nbf,
        };
        VERIFIED.with(|cell| {
            let mut cache = cell.borrow_mut();
            if cache.1.len() >= VERIFIED_LIMIT {
                cache.1.clear();
            }
            cache.1.insert(token.to_string(), v.clone());
        });
        Ok(v)
    }
}

/// A key as authentication remembers it: its row (for the checks each request makes: enabled,
/// expiry, owner) and the principal it authenticates as.
pub(crate) struct CachedKey {
    row: keys::KeyRow,
    principal: Arc<Principal>,
    /// The key's state in the limiter (admission reads it without another lookup).
    limits: Arc<KeyState>,
}

/// What a usable key authenticates as: its own permissions (by default model use) within its
/// owner's current ones, restricted to its models.
fn key_principal(row: &keys::KeyRow) -> Principal {
    let default = PermissionSet::of(Permission::ModelsList).with(Permission::ModelsRead);
    Principal {
        username: row.owner_username.clone(),
        permissions: row
            .permissions
            .unwrap_or(default)
            .intersect(row.owner_permissions),
        credential: Credential::ApiKey,
        user_id: Some(row.user_id),
        session: None,
        must_change_password: false,
        key: Some(Arc::new(KeyScope {
            id: row.id,
            prefix: row.key_prefix.clone(),
            models: row.models.clone(),
            limits: row.limits,
        })),
    }
}

/// The answer to anything but a password change from an account that must change it.
pub const MUST_CHANGE_PASSWORD: &str = "Password change required before using this account.";
