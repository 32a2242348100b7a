//! The supervisor <-> worker protocol of a cluster: what a worker sends to join and to stay
//! alive, and what it reports about itself. Every internal call carries the cluster secret in
//! [`CLUSTER_SECRET_HEADER`].
//!
//! Supervisor routes (on its public port, secret-guarded): `POST /internal/v1/workers/join`
//! ([`JoinRequest`] -> [`JoinResponse`]), `POST /internal/v1/workers/heartbeat` ([`Heartbeat`];
//! 404 = "unknown worker, join again"), `POST /internal/v1/workers/leave` ([`LeaveRequest`]).
//! Worker routes: `/internal/v1/replicas...` (see the worker crate's `server` module).

use serde::{Deserialize, Serialize};

use crate::worker::{GpuInfo, ReplicaInfo, ReplicaSpec};

/// The header that carries the cluster secret on every internal call.
pub const CLUSTER_SECRET_HEADER: &str = "x-xinference-cluster-secret";

/// What a worker has: reported at join and with every heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WorkerResources {
    pub cpu_count: usize,
    /// Fraction of all cores busy since the previous report, 0..=1.
    pub cpu_usage: f64,
    /// Bytes.
    pub memory_total: u64,
    pub memory_available: u64,
    pub memory_used: u64,
    #[serde(default)]
    pub gpus: Vec<GpuInfo>,
}

/// A replica a worker runs, with what the supervisor needs to serve it again after a restart.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RunningReplica {
    pub spec: ReplicaSpec,
    pub info: ReplicaInfo,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JoinRequest {
    /// `host:port` the supervisor calls the worker at.
    pub address: String,
    pub resources: WorkerResources,
    /// Ready replicas the worker already runs (after a supervisor restart, or a re-join).
    pub replicas: Vec<RunningReplica>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct JoinResponse {
    /// How often the worker must send heartbeats.
    pub heartbeat_interval_ms: u64,
    /// Replicas the supervisor did not take back (their uid is held by another model): the
    /// worker stops them.
    #[serde(default)]
    pub stop_replicas: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Heartbeat {
    pub address: String,
    pub resources: WorkerResources,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LeaveRequest {
    pub address: String,
}
