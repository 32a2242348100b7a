//! The xinference-rs worker: loads engine models and serves them to the supervisor.
//!
//! Parts:
//! - [`LocalWorker`]: the in-process implementation of [`xi_api::worker::Worker`] used by
//!   `xinference-local` (no network hop).
//! - `replica`: one loaded model on its own thread, fed by a bounded queue; each request
//!   carries a oneshot for its reply. Requests that queue up while a batch runs are merged
//!   into the next forward pass (dynamic batching, capped by a token budget).
//! - `download`: model files from a hub (Hugging Face's URL layout) into the cache, resumable,
//!   checksummed, retried.
//! - [`run_node`]: a cluster worker (`xinference-worker`): `server` (the internal HTTP API
//!   the supervisor calls, guarded by the cluster secret) and `membership` (join, heartbeats,
//!   re-join, leave).
//! - `system`: CPU and memory figures reported to the supervisor.
//! - [`gpu`]: the worker's GPUs ([`gpus`]: name, memory total/used) and the device a launch's
//!   `n_gpu` / `gpu_idx` / `dtype` options give a replica (CPU, or one CUDA GPU).
//! - `batcher`: continuous batching for LLM replicas: all running sequences advance together,
//!   one forward pass per step; new requests join between steps.
//! - `template_sandbox`: chat templates rendered in the request path, before a chat is queued:
//!   in sandbox child processes with a memory and time limit ([`TemplateSandbox`], served by
//!   [`serve_template_sandbox`]) or, without one, in-process with fuel and an output limit.
//!
//! Invariants: model compute never runs on the async runtime; a full queue is refused at once
//! (never an unbounded wait); terminating a replica joins its thread, so its memory is freed
//! when `terminate` returns; chat templates never run on a model thread, so terminating never
//! waits on one.

mod batcher;
mod download;
mod error;
pub mod gpu;
mod local;
mod membership;
mod node;
mod replica;
mod server;
mod system;
mod template_sandbox;

pub use error::NodeError;
pub use gpu::{gpus, GpuInfo};
pub use local::{LocalWorker, WorkerConfig};
pub use node::{run_node, NodeConfig};
pub use template_sandbox::{serve_template_sandbox, TemplateSandbox, TEMPLATE_SANDBOX_ENV};
