//! The models this supervisor knows: launching, ready or failed, with their replicas.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};
use xi_api::models::{LaunchStatus, ModelType};
use xi_api::worker::Worker;

use crate::error::SupervisorError;

/// Mutable part of a model entry.
#[derive(Debug, Clone)]
pub struct EntryState {
    pub status: LaunchStatus,
    /// Upstream's description fields, filled when the model is ready.
    pub description: Map<String, Value>,
    pub error: Option<String>,
}

pub struct ModelEntry {
    pub uid: String,
    pub model_name: String,
    pub model_type: ModelType,
    /// `(replica uid, worker holding it)`, replica uids being `<uid>-<i>`. Replicas on a
    /// worker that dies leave; replicas reported by a re-joining worker come back.
    replicas: RwLock<Vec<(String, Arc<dyn Worker>)>>,
    pub created_ts: u64,
    pub state: RwLock<EntryState>,
    /// Set by terminate/cancel so a launch in progress stops starting replicas.
    pub cancelled: AtomicBool,
    next: AtomicUsize,
}

impl ModelEntry {
    pub fn new(
        uid: String,
        model_name: String,
        model_type: ModelType,
        replicas: Vec<(String, Arc<dyn Worker>)>,
        description: Map<String, Value>,
    ) -> ModelEntry {
        ModelEntry {
            uid,
            model_name,
            model_type,
            replicas: RwLock::new(replicas),
            created_ts: crate::clock::unix_now() as u64,
            state: RwLock::new(EntryState {
                status: LaunchStatus::Creating,
                description,
                error: None,
            }),
            cancelled: AtomicBool::new(false),
            next: AtomicUsize::new(0),
        }
    }

    pub fn snapshot(&self) -> EntryState {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn status(&self) -> LaunchStatus {
        self.state.read().unwrap_or_else(|p| p.into_inner()).status
    }

    pub fn update(&self, change: impl FnOnce(&mut EntryState)) {
        change(&mut self.state.write().unwrap_or_else(|p| p.into_inner()));
    }

    /// The replicas now, in order.
    pub fn replicas(&self) -> Vec<(String, Arc<dyn Worker>)> {
        self.replicas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn replica_count(&self) -> usize {
        self.replicas
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// The next replica, round-robin; `None` when none is left.
    pub fn pick_replica(&self) -> Option<(String, Arc<dyn Worker>)> {
        let replicas = self.replicas.read().unwrap_or_else(|p| p.into_inner());
        if replicas.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed) % replicas.len();
        let (uid, worker) = &replicas[i];
        Some((uid.clone(), worker.clone()))
    }

    /// Drops the replicas held by the worker at `address`; returns how many are left.
    pub fn drop_worker(&self, address: &str) -> usize {
        let mut replicas = self.replicas.write().unwrap_or_else(|p| p.into_inner());
        replicas.retain(|(_, w)| w.address() != address);
        replicas.len()
    }

    /// Adds a replica a worker reported, unless it is known already.
    pub fn adopt_replica(&self, uid: String, worker: Arc<dyn Worker>) {
        let mut replicas = self.replicas.write().unwrap_or_else(|p| p.into_inner());
        if !replicas.iter().any(|(u, _)| *u == uid) {
            replicas.push((uid, worker));
            replicas.sort_by(|a, b| a.0.cmp(&b.0));
        }
    }

    /// Keeps, of the replicas on `address`, only those in `kept`; returns how many are left.
    pub fn reconcile_worker(&self, address: &str, kept: &[&str]) -> usize {
        let mut replicas = self.replicas.write().unwrap_or_else(|p| p.into_inner());
        replicas.retain(|(uid, w)| w.address() != address || kept.contains(&uid.as_str()));
        replicas.len()
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst)
    }
}

#[derive(Default)]
pub struct ModelTable {
    models: RwLock<BTreeMap<String, Arc<ModelEntry>>>,
}

impl ModelTable {
    pub fn get(&self, uid: &str) -> Option<Arc<ModelEntry>> {
        self.models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(uid)
            .cloned()
    }

    /// Whether `uid` is taken (a failed launch does not hold its uid).
    pub fn contains(&self, uid: &str) -> bool {
        self.get(uid)
            .is_some_and(|e| e.status() != LaunchStatus::Error)
    }

    pub fn all(&self) -> Vec<Arc<ModelEntry>> {
        self.models
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Models that are ready to serve.
    pub fn ready(&self) -> Vec<Arc<ModelEntry>> {
        self.all()
            .into_iter()
            .filter(|e| e.status() == LaunchStatus::Ready)
            .collect()
    }

    /// Claims the entry's uid; refused when a live model holds it.
    pub fn reserve(&self, entry: Arc<ModelEntry>) -> Result<(), SupervisorError> {
        let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = models.get(&entry.uid) {
            if existing.status() != LaunchStatus::Error {
                return Err(SupervisorError::BadRequest(format!(
                    "Model is already in the model list, uid: {}",
                    entry.uid
                )));
            }
        }
        models.insert(entry.uid.clone(), entry);
        Ok(())
    }

    /// Removes `entry` if it is still the one under its uid.
    pub fn remove_entry(&self, entry: &Arc<ModelEntry>) {
        let mut models = self.models.write().unwrap_or_else(|p| p.into_inner());
        if models
            .get(&entry.uid)
            .is_some_and(|e| Arc::ptr_eq(e, entry))
        {
            models.remove(&entry.uid);
        }
    }

    /// `{replica_uid: description}` of the ready models' replicas on the worker at `address`,
    /// for `/v1/workers`.
    pub fn replica_descriptions(&self, address: &str) -> Map<String, Value> {
        let mut out = Map::new();
        for entry in self.ready() {
            let description = entry.snapshot().description;
            for (replica, worker) in entry.replicas() {
                if worker.address() != address {
                    continue;
                }
                out.insert(replica, Value::Object(description.clone()));
            }
        }
        out
    }
}

impl ModelTable {
    /// Replicas per worker address, over every model (placement's load figure).
    pub fn load_by_worker(&self) -> BTreeMap<String, usize> {
        let mut load = BTreeMap::new();
        for entry in self.all() {
            for (_, worker) in entry.replicas() {
                *load.entry(worker.address()).or_insert(0) += 1;
            }
        }
        load
    }

    /// A worker left or died: its replicas leave routing. A ready model left without any
    /// replica turns ERROR with the reason (requests get 503 saying why; the uid is free to
    /// launch again; the worker joining again with the replica brings it back). Returns the
    /// uids of those models.
    pub fn drop_worker(&self, address: &str, why: &str) -> Vec<String> {
        let mut lost = Vec::new();
        for entry in self.all() {
            let had = entry.replicas().iter().any(|(_, w)| w.address() == address);
            if had && entry.drop_worker(address) == 0 && entry.status() == LaunchStatus::Ready {
                entry.update(|s| {
                    s.status = LaunchStatus::Error;
                    s.error = Some(format!(
                        "its last replica was on worker {address}, which {why}"
                    ));
                });
                lost.push(entry.uid.clone());
            }
        }
        lost
    }
}
