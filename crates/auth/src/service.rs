//! [`AuthService`]: login, request authentication and config reload.

use std::cell::RefCell;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use sha2::{Digest, Sha256};
use xi_api::identity::{KeyLimits, ModelPermission};
use xi_api::PermissionSet;

use crate::clock::Clock;
use crate::config::AuthSettings;
use crate::error::AuthError;
use crate::jwt::{Claims, JwtCodec};
use crate::password::PasswordHash;
use crate::throttle::{LoginThrottle, ThrottlePolicy};

/// How a request proved who it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    Token,
    ApiKey,
    /// An identity provider's own access token (single sign-on for services).
    ProviderToken,
}

/// An authenticated caller with the permissions it holds *now*.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub username: String,
    pub permissions: PermissionSet,
    pub credential: Credential,
    /// The identity store's user id; `None` for a user of the config file.
    pub user_id: Option<i64>,
    /// The identity store's session of a token login.
    pub session: Option<String>,
    /// The account must change its password before doing anything else.
    pub must_change_password: bool,
    /// What an identity-store api key restricts (its models and limits).
    pub key: Option<Arc<KeyScope>>,
}

impl Principal {
    /// A user of the config file.
    pub fn config_user(username: &str, permissions: PermissionSet, credential: Credential) -> Self {
        Principal {
            username: username.to_string(),
            permissions,
            credential,
            user_id: None,
            session: None,
            must_change_password: false,
            key: None,
        }
    }

    /// Whether this caller may see and use the model `uid` of type `model_type` (an api key
    /// with a model list sees only those; everyone else sees every model).
    pub fn may_use_model(&self, uid: &str, model_type: &str) -> bool {
        self.key
            .as_ref()
            .is_none_or(|k| k.allows_model(uid, model_type))
    }
}

/// The restrictions of one identity-store api key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyScope {
    pub id: i64,
    /// The key's display prefix (`xf-AbCd`), for logs and metrics.
    pub prefix: String,
    pub models: Vec<ModelPermission>,
    pub limits: KeyLimits,
}

impl KeyScope {
    /// Upstream's rule: `all`, or a `model_id` equal to the uid, or a `model_type` equal to the
    /// model's type.
    pub fn allows_model(&self, uid: &str, model_type: &str) -> bool {
        self.models.iter().any(|m| {
            let value = m.permission_value.as_deref().unwrap_or_default();
            match m.permission_type.as_str() {
                "all" => true,
                "model_id" => value == uid,
                "model_type" => value.eq_ignore_ascii_case(model_type),
                _ => false,
            }
        })
    }
}

/// A user of the config file, as the identity store sees it (for logins and token checks).
#[derive(Debug, Clone)]
pub struct ConfigUser {
    pub password: PasswordHash,
    pub permissions: PermissionSet,
}

/// A freshly issued access token. `Debug` hides the token.
#[derive(Clone)]
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: u64,
}

impl std::fmt::Debug for IssuedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedToken")
            .field("access_token", &"***")
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// One loaded config, swapped whole on reload.
struct State {
    settings: AuthSettings,
    codec: JwtCodec,
    by_name: HashMap<String, usize>,
    by_key_hash: HashMap<[u8; 32], usize>,
    /// Verified against when the username is unknown, so that costs what a wrong password costs.
    dummy: PasswordHash,
    /// Identifies this config for the per-thread caches of verified tokens.
    generation: u64,
}

/// Configs built so far; each gets the next number as its generation.
static GENERATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Tokens whose signature was checked on this thread, with the config generation they were
    /// checked under. A signature's validity depends only on the token and the secret, so an
    /// entry is good for as long as that config is in force; expiry and the user's current
    /// permissions are still checked on every request. Per thread, so the hot path shares no
    /// lock between request threads.
    static VERIFIED: RefCell<(u64, HashMap<String, VerifiedToken>)> = RefCell::new((u64::MAX, HashMap::new()));
}

#[derive(Clone)]
struct VerifiedToken {
    sub: String,
    granted: PermissionSet,
    exp: u64,
    nbf: Option<u64>,
}

/// Verified tokens kept per thread; the cache is emptied when it reaches this size.
const VERIFIED_CACHE_LIMIT: usize = 10_000;

impl State {
    fn build(settings: AuthSettings) -> Result<State, AuthError> {
        let codec = JwtCodec::new(settings.algorithm, &settings.secret_key)?;
        let mut by_name = HashMap::new();
        let mut by_key_hash = HashMap::new();
        for (index, user) in settings.users.iter().enumerate() {
            by_name.insert(user.username.clone(), index);
            for key in &user.api_keys {
                by_key_hash.insert(key_hash(key.expose()), index);
            }
        }
        // Mirror the first user's hash kind and cost; with no users any hash will do.
        let dummy = match settings.users.first() {
            Some(user) => user.password.dummy_like()?,
            None => PasswordHash::hash_plain(&format!("{:x}", rand::random::<u128>()))?,
        };
        Ok(State {
            settings,
            codec,
            by_name,
            by_key_hash,
            dummy,
            generation: GENERATIONS.fetch_add(1, Ordering::Relaxed),
        })
    }
}

/// The auth system as the REST layer sees it. Cheap to share behind an `Arc`.
pub struct AuthService {
    source: Option<PathBuf>,
    state: RwLock<Arc<State>>,
    throttle: LoginThrottle,
    clock: Arc<dyn Clock>,
}

impl AuthService {
    /// Loads the config file; `reload` re-reads the same path.
    pub fn from_file(
        path: &Path,
        policy: ThrottlePolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<AuthService, AuthError> {
        let settings = AuthSettings::load(path)?;
        let mut service = AuthService::from_settings(settings, policy, clock)?;
        service.source = Some(path.to_path_buf());
        Ok(service)
    }

    pub fn from_settings(
        settings: AuthSettings,
        policy: ThrottlePolicy,
        clock: Arc<dyn Clock>,
    ) -> Result<AuthService, AuthError> {
        Ok(AuthService {
            source: None,
            state: RwLock::new(Arc::new(State::build(settings)?)),
            throttle: LoginThrottle::new(policy),
            clock,
        })
    }

    fn current(&self) -> Arc<State> {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Warnings of the loaded config, for the startup log.
    pub fn warnings(&self) -> Vec<String> {
        self.current().settings.warnings.clone()
    }

    /// Re-reads the config file. On any error the old config stays in force and the error is
    /// returned for the caller to log. Blocking: hashes plain-text passwords.
    pub fn reload(&self) -> Result<Vec<String>, AuthError> {
        let Some(path) = &self.source else {
            return Err(AuthError::Internal(
                "this auth config was not loaded from a file".into(),
            ));
        };
        let state = State::build(AuthSettings::load(path)?)?;
        let warnings = state.settings.warnings.clone();
        *self.state.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(state);
        Ok(warnings)
    }

    /// Seconds to wait before this username or address may try again, if throttled.
    pub fn throttled(&self, username: &str, address: &str) -> Option<u64> {
        self.throttle
            .retry_after(username, address, self.clock.now_unix())
    }

    /// Checks a username and password and issues a token. Blocking (password hashing): run it
    /// off the async runtime. An unknown user costs the same as a wrong password.
    pub fn login(
        &self,
        username: &str,
        password: &str,
        address: &str,
    ) -> Result<IssuedToken, AuthError> {
        if let Some(retry_after_secs) = self.throttled(username, address) {
            return Err(AuthError::Throttled { retry_after_secs });
        }
        let state = self.current();
        let user = state
            .by_name
            .get(username)
            .map(|i| &state.settings.users[*i]);
        let verified = match user {
            Some(user) => user.password.verify(password),
            None => {
                state.dummy.verify(password);
                false
            }
        };
        let Some(user) = user.filter(|_| verified) else {
            self.throttle
                .record_failure(username, address, self.clock.now_unix());
            return Err(AuthError::BadLogin);
        };
        self.throttle.record_success(username);

        let now = self.clock.now_unix();
        let expires_in = state.settings.token_expire_in_minutes.saturating_mul(60);
        let claims = Claims {
            sub: user.username.clone(),
            scopes: user
                .permissions
                .names()
                .into_iter()
                .map(String::from)
                .collect(),
            iat: now,
            exp: now.saturating_add(expires_in),
            nbf: None,
            sid: None,
        };
        Ok(IssuedToken {
            access_token: state.codec.issue(&claims)?,
            expires_in,
        })
    }

    /// Authenticates an `Authorization` header value. `None` or anything but `Bearer <token>` is
    /// [`AuthError::NotAuthenticated`]; a bad token or key is [`AuthError::InvalidCredentials`].
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, AuthError> {
        let token = bearer_token(authorization).ok_or(AuthError::NotAuthenticated)?;
        // A read guard, not an Arc clone: the hot path touches one shared counter, not two.
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        if is_api_key(token) {
            let index = state
                .by_key_hash
                .get(&key_hash(token))
                .ok_or(AuthError::InvalidCredentials)?;
            let user = &state.settings.users[*index];
            return Ok(Principal::config_user(
                &user.username,
                user.permissions,
                Credential::ApiKey,
            ));
        }
        let now = self.clock.now_unix();
        let (sub_index, granted) = VERIFIED.with(|cell| {
            let mut cache = cell.borrow_mut();
            if cache.0 != state.generation {
                *cache = (state.generation, HashMap::new());
            }
            let hit = cache
                .1
                .get(token)
                .filter(|v| v.exp > now && v.nbf.is_none_or(|nbf| nbf <= now));
            if let Some(v) = hit {
                return Ok((state.by_name.get(&v.sub).copied(), v.granted));
            }
            let verified = verify(&state, token, self.clock.as_ref())?;
            let result = (state.by_name.get(&verified.sub).copied(), verified.granted);
            if cache.1.len() >= VERIFIED_CACHE_LIMIT {
                cache.1.clear();
            }
            cache.1.insert(token.to_string(), verified);
            Ok::<_, AuthError>(result)
        })?;
        let user = &state.settings.users[sub_index.ok_or(AuthError::InvalidCredentials)?];
        Ok(Principal::config_user(
            &user.username,
            granted.intersect(user.permissions),
            Credential::Token,
        ))
    }

    /// The config file's user `username`, if there is one.
    pub fn user(&self, username: &str) -> Option<ConfigUser> {
        let state = self.current();
        let user = &state.settings.users[*state.by_name.get(username)?];
        Some(ConfigUser {
            password: user.password.clone(),
            permissions: user.permissions,
        })
    }

    /// Every user of the config file: name and permissions.
    pub fn users(&self) -> Vec<(String, PermissionSet)> {
        let state = self.current();
        let users = state.settings.users.iter();
        users.map(|u| (u.username.clone(), u.permissions)).collect()
    }

    /// A hash that costs what verifying a config user's password costs (for unknown names).
    pub fn dummy_hash(&self) -> PasswordHash {
        self.current().dummy.clone()
    }

    /// Signs `claims` with the config's algorithm and secret.
    pub fn issue(&self, claims: &Claims) -> Result<String, AuthError> {
        self.current().codec.issue(claims)
    }

    /// Checks a token's signature, algorithm and times against the config's secret.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.current().codec.verify(token, self.clock.as_ref())
    }

    /// Access-token lifetime from the config (`token_expire_in_minutes`), in seconds.
    pub fn token_lifetime_secs(&self) -> u64 {
        self.current()
            .settings
            .token_expire_in_minutes
            .saturating_mul(60)
    }
}

/// Checks a token's signature, algorithm and times, and reads its grant.
fn verify(state: &State, token: &str, clock: &dyn Clock) -> Result<VerifiedToken, AuthError> {
    let claims = state.codec.verify(token, clock)?;
    let granted = claims
        .scopes
        .iter()
        .filter_map(|s| PermissionSet::parse_name(s))
        .fold(PermissionSet::EMPTY, PermissionSet::union);
    Ok(VerifiedToken {
        sub: claims.sub,
        granted,
        exp: claims.exp,
        nbf: claims.nbf,
    })
}

/// The token of a `Bearer` header (scheme case-insensitive, as upstream's FastAPI dependency).
pub fn bearer_token(header: Option<&str>) -> Option<&str> {
    // Byte by byte (every authenticated request asks): the scheme, then at least one space.
    let (scheme, token) = header?.trim_ascii().split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case("bearer") || !token.starts_with(' ') {
        return None;
    }
    let token = token.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// Upstream's key format: `sk-` and 13 ASCII letters or digits.
pub fn is_api_key(token: &str) -> bool {
    token.len() == 16
        && token.starts_with("sk-")
        && token[3..].bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Keys are looked up by their SHA-256, so the lookup never compares the key itself byte by byte.
fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::bearer_token;

    #[test]
    fn bearer_token_takes_the_scheme_in_any_case_and_trims_spaces() {
        for (header, token) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER   abc  ", Some("abc")),
            ("  Bearer abc", Some("abc")),
            ("Bearer a b", Some("a b")),
            ("Bearer", None),
            ("Bearer ", None),
            ("Bearerabc", None),
            ("Bearer\tabc", None),
            ("Basic abc", None),
            ("Bearér abc", None),
            ("", None),
        ] {
            assert_eq!(bearer_token(Some(header)), token, "{header:?}");
        }
        assert_eq!(bearer_token(None), None);
    }
}
