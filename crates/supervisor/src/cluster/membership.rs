//! Workers joining, leaving and dying, and what that does to the models table.
//!
//! A joining worker reports the replicas it runs: the supervisor keeps serving them (so a
//! restarted supervisor lists the same models under the same uids) and forgets replicas the
//! worker no longer has. A worker that leaves or dies takes its replicas out of routing at
//! once; a model without replicas left is gone.

use std::sync::Arc;
use std::time::Duration;

use xi_api::cluster::{JoinRequest, JoinResponse, RunningReplica};
use xi_api::models::LaunchStatus;
use xi_api::worker::Worker;

use super::remote::RemoteWorker;
use crate::lifecycle::{launch, ModelEntry};
use crate::state::AppState;

pub fn join(state: &AppState, request: JoinRequest) -> JoinResponse {
    let address = request.address.clone();
    let remote = state.workers.join(RemoteWorker::new(
        address.clone(),
        state.http.clone(),
        state.cluster_secret.clone(),
        request.resources,
    ));
    let worker: Arc<dyn Worker> = remote;
    let reported: Vec<&str> = request
        .replicas
        .iter()
        .map(|r| r.spec.replica_uid.as_str())
        .collect();
    // Replicas the worker no longer runs (it restarted) leave.
    for entry in state.models.all() {
        if entry.status() == LaunchStatus::Ready && entry.reconcile_worker(&address, &reported) == 0
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
        if adopt(state, &worker, replica.clone()) {
            adopted += 1;
        } else {
            stop_replicas.push(replica.spec.replica_uid);
        }
    }
    tracing::info!(worker = %address, replicas = adopted, "worker joined");
    state
        .metrics
        .cluster_events
        .with_label_values(&["join"])
        .inc();
    JoinResponse {
        heartbeat_interval_ms: state.workers.heartbeat_interval.as_millis() as u64,
        stop_replicas,
    }
}

/// Serves a replica a worker reported; `false` when its uid belongs to another model.
fn adopt(state: &AppState, worker: &Arc<dyn Worker>, replica: RunningReplica) -> bool {
    let spec = replica.spec;
    let model_uid = spec.model_uid.clone();
    match state.models.get(&model_uid) {
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
                launch::complete_description(spec.description, &worker.address(), &replica.info);
            let entry = Arc::new(ModelEntry::new(
                model_uid.clone(),
                spec.model_name,
                spec.model_type,
                vec![(spec.replica_uid, worker.clone())],
                description,
            ));
            entry.update(|s| s.status = LaunchStatus::Ready);
            let taken = state.models.reserve(entry).is_ok();
            if taken {
                tracing::info!(uid = %model_uid, worker = %worker.address(), "model served again after a supervisor restart");
            }
            taken
        }
    }
}

/// A worker left on purpose: its replicas leave routing.
pub fn leave(state: &AppState, address: &str) {
    if state.workers.leave(address) {
        let lost = state.models.drop_worker(address, "left the cluster");
        tracing::info!(worker = %address, models_removed = ?lost, "worker left the cluster");
        state
            .metrics
            .cluster_events
            .with_label_values(&["leave"])
            .inc();
    }
}

/// Checks heartbeats several times per interval and declares silent workers dead.
pub fn spawn_monitor(state: actix_web::web::Data<AppState>) {
    let tick = (state.workers.heartbeat_interval / 4).max(Duration::from_millis(50));
    tokio::spawn(async move {
        let mut timer = tokio::time::interval(tick);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            timer.tick().await;
            for (address, silent) in state.workers.expire() {
                let lost = state
                    .models
                    .drop_worker(&address, "stopped sending heartbeats");
                state
                    .metrics
                    .cluster_events
                    .with_label_values(&["dead"])
                    .inc();
                tracing::warn!(
                    worker = %address,
                    silent_s = silent.as_secs_f64(),
                    models_removed = ?lost,
                    "worker missed {} heartbeats: declared dead, its replicas left routing",
                    super::MISSED_HEARTBEATS
                );
            }
        }
    });
}
