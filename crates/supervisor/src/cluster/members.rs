//! [`WorkerSet`]: the workers of this supervisor. The in-process worker of `xinference-local`
//! is a permanent member; remote workers join, send heartbeats, leave, or die (silent for
//! [`MISSED_HEARTBEATS`] intervals).

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use xi_api::cluster::WorkerResources;
use xi_api::worker::Worker;

use super::remote::RemoteWorker;

/// Heartbeat intervals a worker may miss before it is declared dead.
pub const MISSED_HEARTBEATS: u32 = 3;

struct Member {
    worker: Arc<dyn Worker>,
    /// `None` for the in-process worker (always alive).
    remote: Option<Arc<RemoteWorker>>,
    last_seen: Instant,
    last_seen_unix: f64,
    alive: bool,
}

/// What `/status`, `/v1/workers` and `/v1/cluster/info` show of a worker.
#[derive(Debug, Clone)]
pub struct MemberView {
    pub address: String,
    pub alive: bool,
    /// Unix time of the last heartbeat (now, for the in-process worker).
    pub last_seen_unix: f64,
    /// Heartbeats it may still miss before it is declared dead.
    pub failure_remaining: u32,
    pub resources: WorkerResources,
}

pub struct WorkerSet {
    members: RwLock<BTreeMap<String, Member>>,
    pub heartbeat_interval: Duration,
}

impl WorkerSet {
    pub fn new(local: Vec<Arc<dyn Worker>>, heartbeat_interval: Duration) -> Self {
        let now = Instant::now();
        let members = local
            .into_iter()
            .map(|worker| {
                let member = Member {
                    worker: worker.clone(),
                    remote: None,
                    last_seen: now,
                    last_seen_unix: crate::clock::unix_now(),
                    alive: true,
                };
                (worker.address(), member)
            })
            .collect();
        Self {
            members: RwLock::new(members),
            heartbeat_interval,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Member>> {
        self.members.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, Member>> {
        self.members.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Live workers, in address order.
    pub fn alive(&self) -> Vec<Arc<dyn Worker>> {
        self.read()
            .values()
            .filter(|m| m.alive)
            .map(|m| m.worker.clone())
            .collect()
    }

    /// Every remote worker (live or dead), for `DELETE /v1/clusters`.
    pub fn remotes(&self) -> Vec<Arc<RemoteWorker>> {
        self.read()
            .values()
            .filter_map(|m| m.remote.clone())
            .collect()
    }

    pub fn views(&self) -> Vec<MemberView> {
        let now = Instant::now();
        let interval = self.heartbeat_interval.as_secs_f64().max(1e-3);
        self.read()
            .iter()
            .map(|(address, m)| {
                let local = m.remote.is_none();
                let missed = (now.duration_since(m.last_seen).as_secs_f64() / interval) as u32;
                MemberView {
                    address: address.clone(),
                    alive: m.alive,
                    last_seen_unix: if local {
                        crate::clock::unix_now()
                    } else {
                        m.last_seen_unix
                    },
                    failure_remaining: if !m.alive {
                        0
                    } else if local {
                        MISSED_HEARTBEATS
                    } else {
                        MISSED_HEARTBEATS.saturating_sub(missed)
                    },
                    resources: m.worker.resources(),
                }
            })
            .collect()
    }

    /// A worker joins (or joins again, after a restart of either side). Returns its handle;
    /// an earlier handle for the same address is reused, so the models table keeps one
    /// worker object per address.
    pub fn join(&self, fresh: RemoteWorker) -> Arc<RemoteWorker> {
        let mut members = self.write();
        let address = fresh.address();
        let remote = match members.get(&address).and_then(|m| m.remote.clone()) {
            Some(existing) => {
                existing.set_resources(fresh.resources());
                existing.mark_alive();
                existing
            }
            None => Arc::new(fresh),
        };
        members.insert(
            address,
            Member {
                worker: remote.clone(),
                remote: Some(remote.clone()),
                last_seen: Instant::now(),
                last_seen_unix: crate::clock::unix_now(),
                alive: true,
            },
        );
        remote
    }

    /// Records a heartbeat; `false` when the worker is unknown or was declared dead (it must
    /// join again, reporting its replicas).
    pub fn heartbeat(&self, address: &str, resources: WorkerResources) -> bool {
        let mut members = self.write();
        match members.get_mut(address) {
            Some(m) if m.alive => {
                m.last_seen = Instant::now();
                m.last_seen_unix = crate::clock::unix_now();
                if let Some(remote) = &m.remote {
                    remote.set_resources(resources);
                }
                true
            }
            _ => false,
        }
    }

    /// A worker leaves for good (graceful exit). Returns whether it was known.
    pub fn leave(&self, address: &str) -> bool {
        let removed = self.write().remove(address);
        if let Some(remote) = removed.as_ref().and_then(|m| m.remote.as_ref()) {
            remote.mark_lost();
        }
        removed.is_some()
    }

    /// Declares dead the remote workers silent for [`MISSED_HEARTBEATS`] intervals; returns
    /// their addresses and how long they had been silent.
    pub fn expire(&self) -> Vec<(String, Duration)> {
        let limit = self.heartbeat_interval * MISSED_HEARTBEATS;
        let now = Instant::now();
        let mut dead = Vec::new();
        for (address, m) in self.write().iter_mut() {
            let Some(remote) = &m.remote else { continue };
            let silent = now.duration_since(m.last_seen);
            if m.alive && silent > limit {
                m.alive = false;
                remote.mark_lost();
                dead.push((address.clone(), silent));
            }
        }
        dead
    }
}
