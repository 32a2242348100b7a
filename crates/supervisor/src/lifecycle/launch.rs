//! Running a [`LaunchPlan`] on workers, and stopping models.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::{json, Map, Value};
use xi_api::models::{LaunchStatus, ModelType};
use xi_api::worker::{HubDownload, ReplicaInfo, ReplicaSpec, Worker, WorkerErrorKind};

use super::plan::LaunchPlan;
use super::table::{ModelEntry, ModelTable};
use crate::cluster::placement;
use crate::error::SupervisorError;
use crate::state::AppState;

/// Where the model's files come from: the launch's `model_path`, else the registration's
/// `model_uri`, else a download of the spec's hub files into the worker's cache. Paths are
/// checked here when the workers share this host's files (local mode); remote workers check
/// their own.
fn model_files(
    plan: &LaunchPlan,
    check_exists: bool,
) -> Result<(PathBuf, Option<HubDownload>), SupervisorError> {
    let bad = |m: String| SupervisorError::BadRequest(m);
    if let Some(path) = &plan.model_path {
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err(bad(format!(
                "model_path {} must be an absolute path",
                path.display()
            )));
        }
        if check_exists && !path.exists() {
            return Err(bad(format!("model_path {} does not exist", path.display())));
        }
        return Ok((path, None));
    }
    if let Some(uri) = plan.spec.get("model_uri").and_then(Value::as_str) {
        let path = PathBuf::from(uri.strip_prefix("file://").unwrap_or(uri));
        if check_exists && !path.exists() {
            return Err(bad(format!(
                "model_uri {uri} of model {} does not exist",
                plan.family.name
            )));
        }
        return Ok((path, None));
    }
    Ok((PathBuf::new(), Some(hub_download(plan)?)))
}

/// The hub files of the launched spec: GGUF specs name one file (`model_file_name_template`
/// with the quantization), other formats take the repository's model folder.
fn hub_download(plan: &LaunchPlan) -> Result<HubDownload, SupervisorError> {
    let bad = |m: String| SupervisorError::BadRequest(m);
    let hub = plan
        .download_hub
        .clone()
        .or_else(|| std::env::var("XINFERENCE_MODEL_SRC").ok())
        .unwrap_or_else(|| "huggingface".into());
    if hub != "huggingface" {
        return Err(bad(format!(
            "download_hub {hub:?} is not supported (huggingface is; set HF_ENDPOINT for a mirror)"
        )));
    }
    let field = |k: &str| plan.spec.get(k).and_then(Value::as_str);
    let repo = field("model_id").ok_or_else(|| {
        bad(format!(
            "Model {} has no local files and no hub id: pass `model_path` when launching, or \
             register it with a `model_uri`",
            plan.family.name
        ))
    })?;
    let format = field("model_format").unwrap_or("pytorch");
    let quantization = field("quantization").unwrap_or("none");
    let file = match field("model_file_name_template") {
        Some(template) if format == "ggufv2" => {
            Some(template.replace("{quantization}", quantization))
        }
        _ => None,
    };
    let cache_name = if plan.model_type == ModelType::Llm {
        let size = plan
            .spec
            .get("model_size_in_billions")
            .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
            .unwrap_or_default()
            .replace('.', "_");
        format!(
            "{}-{format}-{size}b-{quantization}",
            plan.family.name.replace('.', "_")
        )
    } else {
        plan.family.name.clone()
    };
    Ok(HubDownload {
        repo: repo.to_string(),
        revision: field("model_revision").unwrap_or("main").to_string(),
        file,
        cache_name,
    })
}

/// Completes a plan's description with the worker's address and what loading found.
pub fn complete_description(
    mut d: Map<String, Value>,
    address: &str,
    info: &ReplicaInfo,
) -> Map<String, Value> {
    d.insert("address".into(), json!(address));
    if let Some(n) = info.dimensions.filter(|_| d.contains_key("dimensions")) {
        d.insert("dimensions".into(), json!(n));
    }
    if let Some(n) = info.max_tokens.filter(|_| d.contains_key("max_tokens")) {
        d.insert("max_tokens".into(), json!(n));
    }
    d
}

/// Upstream's description fields for a model of this plan, before loading (the address and
/// the loaded figures come in [`complete_description`]).
fn description(plan: &LaunchPlan) -> Map<String, Value> {
    let family = &plan.family.body;
    let spec = &plan.spec;
    let from = |map: &Map<String, Value>, key: &str| map.get(key).cloned().unwrap_or(Value::Null);
    let mut d = Map::new();
    d.insert("model_type".into(), json!(plan.model_type.as_str()));
    d.insert("address".into(), Value::Null);
    d.insert("accelerators".into(), json!([]));
    d.insert("model_name".into(), json!(plan.family.name));
    d.insert("model_engine".into(), json!("candle"));
    d.insert("model_format".into(), from(spec, "model_format"));
    d.insert("quantization".into(), from(spec, "quantization"));
    d.insert("model_hub".into(), from(spec, "model_hub"));
    d.insert("model_revision".into(), from(spec, "model_revision"));
    match plan.model_type {
        ModelType::Embedding => {
            d.insert("dimensions".into(), from(family, "dimensions"));
            d.insert("max_tokens".into(), from(family, "max_tokens"));
            d.insert("language".into(), from(family, "language"));
            d.insert("model_ability".into(), json!(["embed"]));
        }
        ModelType::Rerank => {
            d.insert("type".into(), from(family, "type"));
            d.insert("max_tokens".into(), from(family, "max_tokens"));
            d.insert("language".into(), from(family, "language"));
            d.insert("model_ability".into(), json!(["rerank"]));
        }
        ModelType::Llm => {
            for key in [
                "model_lang",
                "model_ability",
                "model_description",
                "context_length",
            ] {
                d.insert(key.into(), from(family, key));
            }
            d.insert(
                "model_family".into(),
                family
                    .get("model_family")
                    .cloned()
                    .unwrap_or(json!(plan.family.name)),
            );
            d.insert(
                "model_size_in_billions".into(),
                from(spec, "model_size_in_billions"),
            );
        }
    }
    d
}

/// Starts a launch. With `wait_ready` it returns once every replica is ready (or the launch
/// failed); otherwise at once, the launch going on in the background.
pub async fn start(
    state: &Arc<AppState>,
    plan: LaunchPlan,
    wait_ready: bool,
) -> Result<String, SupervisorError> {
    // Local mode (no worker ever joined): the workers see this host's files, and `worker_ip`
    // has nothing to choose from (upstream ignores it there too).
    let local_only = state.workers.remotes().is_empty();
    let alive = state.workers.alive();
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
    let local_path = (!files.0.as_os_str().is_empty() && local_only).then_some(files.0.as_path());
    let need = placement::estimate_bytes(local_path, &plan.spec);
    let workers = placement::place(
        alive,
        &state.models.load_by_worker(),
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
    state.models.reserve(entry.clone())?;
    let task_state = state.clone();
    let task =
        tokio::spawn(
            async move { run_launch(&task_state, &entry, &plan, files, wait_ready).await },
        );
    if wait_ready {
        task.await.map_err(SupervisorError::internal)??;
    }
    Ok(uid)
}

async fn run_launch(
    state: &AppState,
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
                    SupervisorError::Cancelled(format!(
                        "Launch of model {} was cancelled",
                        entry.uid
                    ))
                } else {
                    SupervisorError::from(e)
                };
                fail(&state.models, entry, &err, wait_ready);
                return Err(err);
            }
        }
    }
    if entry.is_cancelled() {
        stop_replicas(&started).await;
        let err =
            SupervisorError::Cancelled(format!("Launch of model {} was cancelled", entry.uid));
        fail(&state.models, entry, &err, wait_ready);
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

/// Terminates a model (cancelling it if it is still loading) and frees its replicas.
pub async fn stop(models: &ModelTable, entry: &Arc<ModelEntry>) {
    entry.cancelled.store(true, Ordering::SeqCst);
    entry.update(|s| s.status = LaunchStatus::Terminating);
    models.remove_entry(entry);
    stop_replicas(&entry.replicas()).await;
    tracing::info!(uid = %entry.uid, "model terminated");
}

/// Average loading progress of the replicas, 1.0 when ready.
pub async fn progress(entry: &ModelEntry) -> f32 {
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
