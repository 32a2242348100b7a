//! Workers joining, leaving and dying, and what that does to the models: the worker side of
//! [`Cluster`].
//!
//! A joining worker reports the replicas it runs: the supervisor keeps serving them (so a
//! restarted supervisor lists the same models under the same uids) and forgets replicas the
//! worker no longer has. A worker that leaves or dies takes its replicas out of routing at
//! once; a model without replicas left is gone.

use std::sync::Arc;
use std::time::Duration;

use xi_api::cluster::{JoinRequest, JoinResponse, RunningReplica, WorkerResources};
use xi_api::models::LaunchStatus;
use xi_api::worker::Worker;

use super::Cluster;
use crate::cluster::{RemoteWorker, MISSED_HEARTBEATS};
use crate::error::SupervisorError;
use crate::lifecycle::spec::complete_description;
use crate::lifecycle::ModelEntry;

impl Cluster {
    /// A worker joins (or joins again): it becomes a member, the replicas it reports are
    /// served, and those it no longer runs leave. The answer names the replicas it must stop
    /// (their uids belong to other models now).
    pub fn join(&self, request: JoinRequest) -> Result<JoinResponse, SupervisorError> {
        if request.address.trim().is_empty() || !request.address.contains(':') {
            return Err(SupervisorError::BadRequest(format!(
                "worker address must be host:port, got {:?}",
                request.address
            )));
        }
        let address = request.address.clone();
        let remote = self.workers.join(RemoteWorker::new(
            address.clone(),
            self.http.clone(),
            self.secret.clone(),
            request.resources,
        ));
        let worker: Arc<dyn Worker> = remote;
        let reported: Vec<&str> = request
            .replicas
            .iter()
            .map(|r| r.spec.replica_uid.as_str())
            .collect();
        // Replicas the worker no longer runs (it restarted) leave.
        for entry in self.models.all() {
            if entry.status() == LaunchStatus::Ready
                && entry.reconcile_worker(&address, &reported) == 0
            {
                entry.update(|s| {
                    s.status = LaunchStatus::Error;
                    s.error = Some(format!(
                        "its last replica was on worker {address}, which restarted without it"
                    ));
                });
                tracing::warn!(uid = %entry.uid, worker = %address, "model lost: its worker restarted without it");
            }
        }
        let mut stop_replicas = Vec::new();
        let mut adopted = 0;
        for replica in request.replicas {
            if self.adopt(&worker, replica.clone()) {
                adopted += 1;
            } else {
                stop_replicas.push(replica.spec.replica_uid);
            }
        }
        tracing::info!(worker = %address, replicas = adopted, "worker joined");
        self.events.with_label_values(&["join"]).inc();
        Ok(JoinResponse {
            heartbeat_interval_ms: self.workers.heartbeat_interval.as_millis() as u64,
            stop_replicas,
        })
    }

    /// Serves a replica a worker reported; `false` when its uid belongs to another model.
    fn adopt(&self, worker: &Arc<dyn Worker>, replica: RunningReplica) -> bool {
        let spec = replica.spec;
        let model_uid = spec.model_uid.clone();
        match self.models.get(&model_uid) {
            Some(entry) if entry.model_name == spec.model_name => {
                let status = entry.status();
                if status == LaunchStatus::Ready || status == LaunchStatus::Error {
                    // Ready, or lost when this worker was declared dead: it serves again.
                    entry.adopt_replica(spec.replica_uid, worker.clone());
                    entry.update(|s| {
                        s.status = LaunchStatus::Ready;
                        s.error = None;
                    });
                    true
                } else {
                    // A launch of this uid is in progress: only its own replicas belong to it.
                    entry
                        .replicas()
                        .iter()
                        .any(|(uid, w)| *uid == spec.replica_uid && w.address() == worker.address())
                }
            }
            Some(_) => false,
            None => {
                let description =
                    complete_description(spec.description, &worker.address(), &replica.info);
                let entry = Arc::new(ModelEntry::new(
                    model_uid.clone(),
                    spec.model_name,
                    spec.model_type,
                    vec![(spec.replica_uid, worker.clone())],
                    description,
                ));
                entry.update(|s| s.status = LaunchStatus::Ready);
                let taken = self.models.reserve(entry).is_ok();
                if taken {
                    tracing::info!(uid = %model_uid, worker = %worker.address(), "model served again after a supervisor restart");
                }
                taken
            }
        }
    }

    /// Records a heartbeat. Refused (404) when the worker is unknown (the supervisor
    /// restarted) or was declared dead: it must join again, reporting its replicas.
    pub fn heartbeat(
        &self,
        address: &str,
        resources: WorkerResources,
    ) -> Result<(), SupervisorError> {
        if self.workers.heartbeat(address, resources) {
            Ok(())
        } else {
            Err(SupervisorError::NotFound(format!(
                "Worker {address} is not in the cluster; join again"
            )))
        }
    }

    /// A worker left on purpose: its replicas leave routing.
    pub fn leave(&self, address: &str) {
        if self.workers.leave(address) {
            let lost = self.models.drop_worker(address, "left the cluster");
            tracing::info!(worker = %address, models_removed = ?lost, "worker left the cluster");
            self.events.with_label_values(&["leave"]).inc();
        }
    }

    /// Declares dead the workers silent for [`MISSED_HEARTBEATS`] intervals; their replicas
    /// leave routing. Returns their addresses.
    pub fn expire(&self) -> Vec<String> {
        let mut dead = Vec::new();
        for (address, silent) in self.workers.expire() {
            let lost = self
                .models
                .drop_worker(&address, "stopped sending heartbeats");
            self.events.with_label_values(&["dead"]).inc();
            tracing::warn!(
                worker = %address,
                silent_s = silent.as_secs_f64(),
                models_removed = ?lost,
                "worker missed {MISSED_HEARTBEATS} heartbeats: declared dead, its replicas left routing"
            );
            dead.push(address);
        }
        dead
    }

    /// Checks heartbeats several times per interval ([`Cluster::expire`]).
    pub fn spawn_monitor(self: &Arc<Self>) {
        let tick = (self.workers.heartbeat_interval / 4).max(Duration::from_millis(50));
        let cluster = self.clone();
        tokio::spawn(async move {
            let mut timer = tokio::time::interval(tick);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                timer.tick().await;
                cluster.expire();
            }
        });
    }
}
