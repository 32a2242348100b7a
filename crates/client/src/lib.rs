//! The xinference-rs client: [`Client`] (async, over the REST API) and the `xinference`
//! command line built on it ([`cli`]).
//!
//! ```no_run
//! # async fn demo() -> Result<(), xi_client::ClientError> {
//! use xi_client::Client;
//! let anonymous = Client::new("http://127.0.0.1:9997", None);
//! let token = anonymous.login("user1", "secret1").await?;
//! let client = Client::new("http://127.0.0.1:9997", Some(token));
//! let uid = client
//!     .launch(&xi_api::models::LaunchModelRequest {
//!         model_name: Some("all-MiniLM-L6-v2".into()),
//!         model_type: Some("embedding".into()),
//!         model_path: Some("/models/all-MiniLM-L6-v2".into()),
//!         ..Default::default()
//!     })
//!     .await?;
//! let reply = client
//!     .post("/v1/embeddings", &serde_json::json!({ "model": uid, "input": "Hello" }))
//!     .await?;
//! println!("{}", reply["data"][0]["embedding"][0]);
//! # Ok(()) }
//! ```
//!
//! The identity store's routes (users, api keys, refresh and logout) are typed methods too:
//! [`Client::create_user`], [`Client::users`], [`Client::create_key`], [`Client::keys`],
//! [`Client::refresh`], [`Client::logout`], [`Client::me`], ...
//!
//! Errors are one [`ClientError`]: the server's `detail` with its status, a connection
//! problem, or a missing login.

pub mod cli;
mod client;
mod error;
mod identity;
pub mod token_store;

pub use client::Client;
pub use error::ClientError;
