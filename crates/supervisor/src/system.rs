//! CPU and memory figures of this host for `/status` and `/v1/cluster/info`.

use std::sync::Mutex;

use serde_json::{json, Value};
use sysinfo::System;

pub struct SystemProbe {
    system: Mutex<System>,
}

impl SystemProbe {
    pub fn new() -> Self {
        let mut system = System::new();
        system.refresh_cpu_usage();
        system.refresh_memory();
        Self {
            system: Mutex::new(system),
        }
    }

    /// Upstream's `cpu` block: usage (0-1 fraction of all cores since the last call), core
    /// count and memory in bytes.
    pub fn cpu_status(&self) -> Value {
        let mut system = self.system.lock().unwrap_or_else(|p| p.into_inner());
        system.refresh_cpu_usage();
        system.refresh_memory();
        let cores = system.cpus().len().max(1);
        json!({
            "usage": f64::from(system.global_cpu_usage()) / 100.0,
            "total": cores,
            "memory_used": system.used_memory(),
            "memory_available": system.available_memory(),
            "memory_total": system.total_memory(),
        })
    }
}
