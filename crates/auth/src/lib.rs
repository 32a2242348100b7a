//! The auth system of xinference-rs, without any HTTP.
//!
//! Parts:
//! - [`config`]: parses and validates the `--auth-config` JSON file (every rule of SPEC section 2),
//!   hashing plain-text passwords at load so they are never kept.
//! - [`password`]: argon2id / bcrypt hashes and the equal-cost check for unknown users.
//! - [`jwt`]: issues and verifies tokens with the algorithm pinned to the configured one.
//! - [`throttle`]: failed-login throttling per username and per client address.
//! - [`service`]: [`AuthService`], the one object the REST layer talks to: `login`,
//!   `authenticate`, `reload`.
//! - [`cluster_secret`]: [`ClusterSecret`], shared by the supervisor and its workers.
//! - [`secret`]: [`Secret`], a string whose `Debug`/`Display` never show it.
//!
//! Invariants: no plain password outlives config loading; every secret is a [`Secret`]; token
//! permissions are always intersected with the user's *current* permissions; time comes from a
//! [`Clock`] so expiry is testable.

pub mod clock;
pub mod cluster_secret;
pub mod config;
pub mod error;
pub mod hash_pool;
pub mod jwt;
pub mod password;
pub mod secret;
pub mod service;
pub mod throttle;

pub use clock::{Clock, ManualClock, SystemClock};
pub use cluster_secret::{ClusterSecret, SecretSource};
pub use config::{AuthSettings, JwtAlgorithm, UserEntry};
pub use error::AuthError;
pub use hash_pool::HashPool;
pub use secret::Secret;
pub use service::{AuthService, ConfigUser, Credential, IssuedToken, KeyScope, Principal};
pub use throttle::ThrottlePolicy;
