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
    /// `(replica uid, worker holding it)`, replica uids being `<uid>-<i>`.
    pub replicas: Vec<(String, Arc<dyn Worker>)>,
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
            replicas,
            created_ts: crate::state::unix_now() as u64,
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

    /// The next replica, round-robin.
    pub fn pick_replica(&self) -> (String, Arc<dyn Worker>) {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.replicas.len().max(1);
        let (uid, worker) = &self.replicas[i];
        (uid.clone(), worker.clone())
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

    /// `{replica_uid: description}` of ready models, for `/v1/workers`.
    pub fn replica_descriptions(&self) -> Map<String, Value> {
        let mut out = Map::new();
        for entry in self.ready() {
            let description = entry.snapshot().description;
            for (replica, _) in &entry.replicas {
                out.insert(replica.clone(), Value::Object(description.clone()));
            }
        }
        out
    }
}
