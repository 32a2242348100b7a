//! Running a [`LaunchPlan`] on workers, and stopping models: the model side of [`Cluster`].

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::Map;
use xi_api::models::LaunchStatus;
use xi_api::worker::{HubDownload, ReplicaInfo, ReplicaSpec, Worker, WorkerErrorKind};

use super::Cluster;
use crate::cluster::placement;
use crate::error::SupervisorError;
use crate::lifecycle::spec::{complete_description, description, model_files};
use crate::lifecycle::{LaunchPlan, ModelEntry, ModelTable};

impl Cluster {
    /// Starts a launch. With `wait_ready` it returns once every replica is ready (or the
    /// launch failed); otherwise at once, the launch going on in the background. Returns the
    /// model's uid.
    pub async fn launch(
        self: &Arc<Self>,
        plan: LaunchPlan,
        wait_ready: bool,
    ) -> Result<String, SupervisorError> {
        // Local mode (no worker ever joined): the workers see this host's files, and
        // `worker_ip` has nothing to choose from (upstream ignores it there too).
        let local_only = self.workers.remotes().is_empty();
        let alive = self.workers.alive();
        if alive.is_empty() {
            return Err(SupervisorError::Unavailable {
                detail: "No available worker found".into(),
                retry_after: None,
            });
        }
        let files = model_files(&plan, local_only)?;
        let pin = match plan.worker_ip.as_deref() {
            Some(ip) if local_only => {
                tracing::warn!(worker_ip = %ip, "worker_ip is ignored in local mode");
                None
            }
            other => other,
        };
        let local_path =
            (!files.0.as_os_str().is_empty() && local_only).then_some(files.0.as_path());
        let need = placement::estimate_bytes(local_path, &plan.spec);
        let workers = placement::place(
            alive,
            &self.models.load_by_worker(),
            pin,
            need,
            plan.replica,
            &plan.family.name,
            // In local mode the one worker answers GPU requests itself (with what it has).
            if local_only {
                0
            } else {
                plan.options.gpus_per_replica()
            },
        )?;
        let uid = plan.uid.clone();
        let replicas: Vec<(String, Arc<dyn Worker>)> = workers
            .into_iter()
            .enumerate()
            .map(|(i, worker)| (format!("{uid}-{i}"), worker))
            .collect();
        let entry = Arc::new(ModelEntry::new(
            uid.clone(),
            plan.family.name.clone(),
            plan.model_type,
            replicas,
            Map::new(),
        ));
        self.models.reserve(entry.clone())?;
        let cluster = self.clone();
        let task = tokio::spawn(async move {
            run_launch(&cluster.models, &entry, &plan, files, wait_ready).await
        });
        if wait_ready {
            task.await.map_err(SupervisorError::internal)??;
        }
        Ok(uid)
    }

    /// Terminates a model (cancelling it if it is still loading) and frees its replicas.
    pub async fn terminate(&self, entry: &Arc<ModelEntry>) {
        entry.cancelled.store(true, Ordering::SeqCst);
        entry.update(|s| s.status = LaunchStatus::Terminating);
        self.models.remove_entry(entry);
        stop_replicas(&entry.replicas()).await;
        tracing::info!(uid = %entry.uid, "model terminated");
    }

    /// Cancels a launch in progress; refused when the model is not being launched.
    pub async fn cancel(&self, entry: &Arc<ModelEntry>) -> Result<(), SupervisorError> {
        if !matches!(
            entry.status(),
            LaunchStatus::Creating | LaunchStatus::Loading
        ) {
            return Err(SupervisorError::BadRequest(format!(
                "Model {} is not being launched",
                entry.uid
            )));
        }
        self.terminate(entry).await;
        Ok(())
    }

    /// Average loading progress of the model's replicas, 1.0 when ready.
    pub async fn progress(&self, entry: &ModelEntry) -> f32 {
        if entry.status() == LaunchStatus::Ready {
            return 1.0;
        }
        let replicas = entry.replicas();
        let mut sum = 0.0;
        for (uid, worker) in &replicas {
            sum += worker.progress(uid.clone()).await.unwrap_or(0.0);
        }
        sum / replicas.len().max(1) as f32
    }
}

async fn run_launch(
    models: &ModelTable,
    entry: &Arc<ModelEntry>,
    plan: &LaunchPlan,
    (path, download): (PathBuf, Option<HubDownload>),
    wait_ready: bool,
) -> Result<(), SupervisorError> {
    entry.update(|s| s.status = LaunchStatus::Loading);
    let mut info = ReplicaInfo::default();
    let mut started: Vec<(String, Arc<dyn Worker>)> = Vec::new();
    let base = description(plan);
    for (replica_index, (replica_uid, worker)) in entry.replicas().into_iter().enumerate() {
        if entry.is_cancelled() {
            break;
        }
        let spec = ReplicaSpec {
            replica_uid: replica_uid.clone(),
            model_uid: entry.uid.clone(),
            replica_index,
            model_type: plan.model_type,
            model_name: plan.family.name.clone(),
            model_path: path.clone(),
            options: plan.options.clone(),
            download: download.clone(),
            description: complete_description(base.clone(), &worker.address(), &info),
        };
        match worker.launch(spec).await {
            Ok(got) => {
                info = got;
                started.push((replica_uid.clone(), worker.clone()));
            }
            Err(e) => {
                stop_replicas(&started).await;
                let err = if entry.is_cancelled() {
                    cancelled(entry)
                } else {
                    SupervisorError::from(e)
                };
                fail(models, entry, &err, wait_ready);
                return Err(err);
            }
        }
    }
    if entry.is_cancelled() {
        stop_replicas(&started).await;
        let err = cancelled(entry);
        fail(models, entry, &err, wait_ready);
        return Err(err);
    }
    let address = entry
        .replicas()
        .first()
        .map(|(_, w)| w.address())
        .unwrap_or_default();
    let description = complete_description(base, &address, &info);
    entry.update(|s| {
        s.status = LaunchStatus::Ready;
        s.description = description;
    });
    tracing::info!(uid = %entry.uid, replicas = entry.replica_count(), "model ready");
    Ok(())
}

fn cancelled(entry: &ModelEntry) -> SupervisorError {
    SupervisorError::Cancelled(format!("Launch of model {} was cancelled", entry.uid))
}

/// A failed launch: gone when the client waited for it (it got the error), otherwise kept as
/// ERROR so `/v1/models/instances` and progress can show why.
fn fail(models: &ModelTable, entry: &Arc<ModelEntry>, err: &SupervisorError, wait_ready: bool) {
    tracing::warn!(uid = %entry.uid, error = ?err, "launch failed");
    if wait_ready || entry.is_cancelled() {
        models.remove_entry(entry);
    } else {
        entry.update(|s| {
            s.status = LaunchStatus::Error;
            s.error = Some(err.to_string());
        });
    }
}

async fn stop_replicas(replicas: &[(String, Arc<dyn Worker>)]) {
    for (uid, worker) in replicas {
        if let Err(e) = worker.terminate(uid.clone()).await {
            if e.kind != WorkerErrorKind::NotFound {
                tracing::warn!(replica = %uid, error = %e, "cannot stop replica");
            }
        }
    }
}
