//! The domain layer under HTTP: [`Cluster`], the one handle the routes call (as
//! text-embeddings-inference's router calls its `Infer`, or mini-redis's handlers its `Db`).
//!
//! A [`Cluster`] owns the models ([`ModelTable`]), the workers ([`WorkerSet`]), the registry,
//! the HTTP client and cluster secret that remote workers are reached with, and the cluster
//! event counter. Its methods are the supervisor's operations:
//! - models (`launch.rs`): [`Cluster::plan`], [`Cluster::launch`],
//!   [`Cluster::terminate`], [`Cluster::cancel`], [`Cluster::progress`];
//! - requests: [`Cluster::serving`] (the model a request names, ready and of the right type)
//!   and [`Cluster::dispatch`] (round-robin over its replicas, failing over past dead workers);
//! - workers (`membership.rs`): [`Cluster::join`], [`Cluster::heartbeat`],
//!   [`Cluster::leave`], [`Cluster::expire`] (and [`Cluster::spawn_monitor`], which calls it);
//! - [`Cluster::shutdown`], when the server has stopped.
//!
//! Invariant: nothing here sees actix; errors are [`SupervisorError`]s, which the HTTP layer
//! maps to statuses in one table.

mod launch;
mod membership;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus::IntCounterVec;
use xi_api::models::{LaunchModelRequest, LaunchStatus, ModelType};
use xi_api::worker::{Worker, WorkerError};
use xi_auth::ClusterSecret;

use crate::cluster::WorkerSet;
use crate::error::{ModelLookup, SupervisorError};
use crate::lifecycle::{dispatch, plan_launch, LaunchPlan, ModelEntry, ModelTable};
use crate::registry::Registry;

/// The models, the workers that run them, and the registry they are launched from.
pub struct Cluster {
    models: ModelTable,
    workers: WorkerSet,
    registry: Registry,
    /// Pooled connections to the workers, shared by every remote worker.
    http: reqwest::Client,
    /// Shared with the workers; every internal call carries it.
    secret: ClusterSecret,
    /// Workers joining, leaving and declared dead, by event (`join`, `leave`, `dead`).
    events: IntCounterVec,
}

impl Cluster {
    /// A cluster whose permanent members are `local` (the in-process worker of
    /// `xinference-local`); remote workers join later, sending heartbeats every
    /// `heartbeat_interval`.
    pub fn new(
        registry: Registry,
        local: Vec<Arc<dyn Worker>>,
        heartbeat_interval: Duration,
        http: reqwest::Client,
        secret: ClusterSecret,
        events: IntCounterVec,
    ) -> Cluster {
        Cluster {
            models: ModelTable::default(),
            workers: WorkerSet::new(local, heartbeat_interval),
            registry,
            http,
            secret,
            events,
        }
    }

    /// The models, for the routes that list and describe them.
    pub fn models(&self) -> &ModelTable {
        &self.models
    }

    /// The workers, for the routes that show them.
    pub fn workers(&self) -> &WorkerSet {
        &self.workers
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The secret workers present on internal calls.
    pub fn secret(&self) -> &ClusterSecret {
        &self.secret
    }

    /// The model under `uid`, whatever its status.
    pub fn model(&self, uid: &str) -> Option<Arc<ModelEntry>> {
        self.models.get(uid)
    }

    /// Checks a launch request against the registry and the running models.
    pub fn plan(&self, request: LaunchModelRequest) -> Result<LaunchPlan, SupervisorError> {
        plan_launch(request, &self.registry, &self.models)
    }

    /// The model a request names, ready to serve and of the `wanted` type: unknown uids are
    /// 404, failed models and models still loading 503 (the latter with `Retry-After`).
    pub fn serving(
        &self,
        uid: &str,
        wanted: ModelType,
        ability: &str,
    ) -> Result<Arc<ModelEntry>, SupervisorError> {
        let entry = self
            .models
            .get(uid)
            .ok_or_else(|| SupervisorError::model_not_found(uid, ModelLookup::Inference))?;
        if entry.status() == LaunchStatus::Error {
            let why = entry.snapshot().error.unwrap_or_default();
            return Err(SupervisorError::Unavailable {
                detail: format!("Model {uid} is not available: {why}"),
                retry_after: None,
            });
        }
        if entry.status() != LaunchStatus::Ready {
            return Err(SupervisorError::Unavailable {
                detail: format!("Model is loading, please retry later: {uid}"),
                retry_after: Some(5),
            });
        }
        if entry.model_type != wanted {
            return Err(SupervisorError::BadRequest(format!(
                "Model {uid} is a {} model; it does not support {ability}",
                entry.model_type
            )));
        }
        Ok(entry)
    }

    /// Runs `call` on one of the model's replicas, round-robin, moving on to the next when a
    /// worker cannot be reached. The answer comes with the uid of the replica that gave it.
    pub async fn dispatch<T, F, Fut>(
        &self,
        entry: &ModelEntry,
        call: F,
    ) -> Result<(String, T), SupervisorError>
    where
        F: Fn(String, Arc<dyn Worker>) -> Fut,
        Fut: Future<Output = Result<T, WorkerError>>,
    {
        dispatch::on_replica(entry, call).await
    }

    /// The server has stopped: terminates the models of the in-process worker. Remote workers
    /// keep theirs and join the next supervisor, unless `whole_cluster` (`DELETE
    /// /v1/clusters`), which stops every model and tells the remote workers to exit too.
    pub async fn shutdown(&self, whole_cluster: bool) {
        let remote: Vec<String> = self.workers.remotes().iter().map(|w| w.address()).collect();
        for entry in self.models.all() {
            let on_remote = entry
                .replicas()
                .iter()
                .any(|(_, w)| remote.contains(&w.address()));
            if whole_cluster || !on_remote {
                self.terminate(&entry).await;
            }
        }
        if whole_cluster {
            for worker in self.workers.remotes() {
                if let Err(e) = worker.shutdown().await {
                    tracing::warn!(worker = %worker.address(), error = %e, "cannot stop worker");
                }
            }
        }
    }
}
