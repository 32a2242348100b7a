//! The identity store of xinference-rs: users, api keys, sessions and audit events managed at
//! run time, in SQLite (the default, under `$XINFERENCE_HOME`) or PostgreSQL (shared by
//! several supervisors), beside the read-only principals of the `--auth-config` file.
//!
//! Parts: [`store`] (the database behind one sqlx `Any` pool, versioned migrations in
//! `migrations/`, serialized writes), the tables ([`users`], [`keys`], [`sessions`],
//! [`audit`]), [`cache`] (what authentication remembers, so it never waits on the database),
//! [`perms`] (permission lists in and out) and [`service`]: [`Identity`], what the supervisor
//! calls (login, refresh, logout, authenticate, and the admin operations with their rules).
//!
//! Invariants: no secret is stored (keys and refresh tokens as SHA-256, passwords as argon2id);
//! every write is one transaction that first bumps the store's revision (serializing writers
//! and invalidating caches); nobody grants a permission they do not hold.

pub mod audit;
pub mod cache;
pub mod error;
pub mod keys;
pub mod limits;
pub mod perms;
pub mod service;
pub mod sessions;
pub mod store;
pub mod usage;
pub mod users;

pub use error::IdentityError;
pub use service::{
    Authenticated, Bootstrap, Denial, FederatedLogin, Identity, IdentityOptions, ImportReport,
    Issued, MUST_CHANGE_PASSWORD,
};
pub use store::Store;
