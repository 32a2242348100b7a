//! What every scenario shares: an [`Env`] (an [`Identity`] on a database URL with a
//! [`ManualClock`]), acting principals, and error assertions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use xi_api::identity::CreateUserRequest;
use xi_api::PermissionSet;
use xi_auth::{
    AuthService, AuthSettings, Clock, Credential, ManualClock, Principal, ThrottlePolicy,
};
use xi_identity::{Identity, IdentityOptions, Issued, Store};
use xi_testkit::postgres::TempPostgres;

/// The clock's start (2030-03-17): every scenario runs on a [`ManualClock`].
pub const T0: u64 = 1_900_000_000;
/// An address for requests.
pub const ADDR: &str = "192.0.2.1";
/// Failed logins per user before the throttle answers.
pub const THROTTLE_PER_USER: usize = 3;
pub const ACCESS_SECS: u64 = 60;
pub const REFRESH_SECS: u64 = 3600;

/// Expects `Err` matching the pattern (and guard); panics with what came instead.
macro_rules! assert_err {
    ($result:expr, $pattern:pat $(if $guard:expr)? $(,)?) => {
        match $result {
            Err($pattern) $(if $guard)? => {}
            other => panic!(
                "expected Err({}), got {:?}",
                stringify!($pattern $(if $guard)?),
                other
            ),
        }
    };
}
pub(crate) use assert_err;

/// The options of every scenario: a fast poll, a small throttle, short token lifetimes.
pub fn options() -> IdentityOptions {
    IdentityOptions {
        access_token_secs: ACCESS_SECS,
        refresh_token_secs: REFRESH_SECS,
        poll_interval: Duration::from_millis(100),
        throttle: ThrottlePolicy {
            per_user: THROTTLE_PER_USER,
            per_address: 1000,
            window_secs: 60,
        },
        ..IdentityOptions::default()
    }
}

/// One identity store on one database, with its clock.
pub struct Env {
    pub url: String,
    pub identity: Arc<Identity>,
    pub clock: Arc<ManualClock>,
}

impl Env {
    pub async fn new(url: &str) -> Env {
        Env::with_config(url, None).await
    }

    pub async fn with_config(url: &str, config: Option<Arc<AuthService>>) -> Env {
        let clock = Arc::new(ManualClock::new(T0));
        let identity = open(url, config, clock.clone()).await;
        Env {
            url: url.to_string(),
            identity,
            clock,
        }
    }

    /// Another supervisor on the same database (same clock).
    pub async fn another(&self) -> Arc<Identity> {
        open(&self.url, None, self.clock.clone()).await
    }

    /// Creates a store user (acting as a config admin); its id.
    pub async fn user(&self, username: &str, password: &str, permissions: &[&str]) -> i64 {
        let request = CreateUserRequest {
            username: username.into(),
            password: password.into(),
            permissions: permissions.iter().map(|p| p.to_string()).collect(),
            must_change_password: false,
        };
        self.identity
            .create_user(&root(), request, ADDR)
            .await
            .unwrap_or_else(|e| panic!("create user {username}: {e:?}"))
            .id
    }

    /// Logs in and authenticates the access token.
    pub async fn sign_in(&self, username: &str, password: &str) -> (Issued, Principal) {
        sign_in(&self.identity, username, password).await
    }
}

pub async fn open(
    url: &str,
    config: Option<Arc<AuthService>>,
    clock: Arc<dyn Clock>,
) -> Arc<Identity> {
    let store = Store::open(url).await.expect("open the store");
    Identity::open(store, config, options(), clock, hashing())
        .await
        .expect("open the identity store")
}

pub async fn sign_in(identity: &Identity, username: &str, password: &str) -> (Issued, Principal) {
    let issued = identity
        .login(username, password, ADDR)
        .await
        .unwrap_or_else(|e| panic!("login {username}: {e:?}"));
    let principal = identity
        .authenticate(Some(&bearer(&issued.access_token)))
        .await
        .unwrap_or_else(|e| panic!("authenticate {username}: {e:?}"));
    (issued, (*principal).clone())
}

/// A config-file admin (no store id), the actor of set-up writes.
pub fn root() -> Principal {
    Principal::config_user("root", PermissionSet::ALL, Credential::Token)
}

pub fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

pub fn perms(names: &[&str]) -> PermissionSet {
    names
        .iter()
        .map(|n| PermissionSet::parse_name(n).unwrap_or_else(|| panic!("permission {n}")))
        .fold(PermissionSet::EMPTY, PermissionSet::union)
}

pub fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| n.to_string()).collect()
}

/// An auth config with `cfgadmin` (admin) and `cfguser` (models:list).
pub fn config_service(clock: Arc<dyn Clock>) -> Arc<AuthService> {
    let json = r#"{
        "auth_config": {
            "algorithm": "HS256",
            "secret_key": "09d25e094faa6ca2556c818166b7a9563b93f7099f6f0f4caa6cf63b88e8d3e7",
            "token_expire_in_minutes": 30
        },
        "user_config": [
            {"username": "cfgadmin", "password": "cfg-admin-pw-1", "permissions": ["admin"],
             "api_keys": ["sk-72tkvudyGLPMi"]},
            {"username": "cfguser", "password": "cfg-user-pw-1", "permissions": ["models:list"]}
        ]
    }"#;
    let settings = AuthSettings::parse("test config", json).expect("config parses");
    Arc::new(
        AuthService::from_settings(settings, ThrottlePolicy::default(), clock).expect("config"),
    )
}

/// Polls `check` every 20 ms until it is true or `limit` passes; whether it became true.
pub async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A PostgreSQL server of this test's own (started off the runtime: it blocks ~1 s).
pub async fn postgres() -> TempPostgres {
    tokio::task::spawn_blocking(TempPostgres::start)
        .await
        .expect("start postgres")
}

/// A fresh SQLite file's URL; the dir lives as long as the guard.
pub fn sqlite() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = Store::sqlite_url(&dir.path().join("identity.db"));
    (dir, url)
}

/// Two hashing threads, as a small supervisor has.
pub fn hashing() -> Arc<xi_auth::HashPool> {
    Arc::new(xi_auth::HashPool::new(2).expect("hashing threads start"))
}
