//! CPU and memory figures of this host, reported to the supervisor (`/status`,
//! `/v1/cluster/info`, placement).

use std::sync::Mutex;

use sysinfo::System;
use xi_api::cluster::WorkerResources;

pub struct SystemProbe {
    system: Mutex<System>,
}

impl Default for SystemProbe {
    fn default() -> Self {
        let mut system = System::new();
        system.refresh_cpu_usage();
        system.refresh_memory();
        Self {
            system: Mutex::new(system),
        }
    }
}

impl SystemProbe {
    /// Cores, CPU usage since the previous call (0-1 over all cores) and memory in bytes.
    pub fn resources(&self) -> WorkerResources {
        let mut system = self.system.lock().unwrap_or_else(|p| p.into_inner());
        system.refresh_cpu_usage();
        system.refresh_memory();
        WorkerResources {
            cpu_count: system.cpus().len().max(1),
            cpu_usage: f64::from(system.global_cpu_usage()) / 100.0,
            memory_total: system.total_memory(),
            memory_available: system.available_memory(),
            memory_used: system.used_memory(),
            gpus: Vec::new(),
        }
    }
}
