//! Where a launch's replicas go: the pinned worker (`worker_ip`), else the live workers with
//! enough free memory for the model, fewest loaded replicas first; the replicas of one launch
//! spread over the workers.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use serde_json::{Map, Value};
use xi_api::worker::Worker;

use crate::error::SupervisorError;

/// Memory a model needs beyond its weights (activations, KV cache, tokenizer), as a fraction.
const OVERHEAD: f64 = 0.2;

const MIB: f64 = 1024.0 * 1024.0;

/// Bytes of memory a model is expected to take: its files when the supervisor can see them,
/// else its size in billions of parameters times the bytes per parameter of its format.
/// `0` when nothing is known (it then fits anywhere).
pub fn estimate_bytes(model_path: Option<&Path>, spec: &Map<String, Value>) -> u64 {
    let weights = match model_path.filter(|p| p.exists()) {
        Some(path) => weight_file_bytes(path),
        None => spec_bytes(spec),
    };
    (weights as f64 * (1.0 + OVERHEAD)) as u64
}

fn weight_file_bytes(path: &Path) -> u64 {
    if path.is_file() {
        return path.metadata().map_or(0, |m| m.len());
    }
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            [".safetensors", ".gguf", ".bin"]
                .iter()
                .any(|ext| name.ends_with(ext))
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

fn spec_bytes(spec: &Map<String, Value>) -> u64 {
    let billions = match spec.get("model_size_in_billions") {
        Some(Value::Number(n)) => n.as_f64().unwrap_or(0.0),
        // Upstream writes fractional sizes as strings: "0_5" or "1_5".
        Some(Value::String(s)) => s.replace('_', ".").parse().unwrap_or(0.0),
        _ => 0.0,
    };
    let quantization = spec
        .get("quantization")
        .and_then(Value::as_str)
        .unwrap_or("none")
        .to_ascii_lowercase();
    let per_param = match quantization.as_str() {
        q if q.starts_with("q2") || q.starts_with("q3") => 0.45,
        q if q.starts_with("q4") => 0.6,
        q if q.starts_with("q5") => 0.7,
        q if q.starts_with("q6") => 0.82,
        q if q.starts_with("q8") => 1.07,
        "f16" | "bf16" | "fp16" => 2.0,
        // Unquantized folders load as f32 on the CPU.
        _ => 4.0,
    };
    (billions * 1e9 * per_param) as u64
}

/// One worker per replica. `pin` is `worker_ip` (an IP, or `host:port`); `load` counts the
/// replicas each worker address already runs. With `gpus > 0` only workers with that many
/// GPUs qualify, and the memory that counts is their freest GPU's.
pub fn place(
    workers: Vec<Arc<dyn Worker>>,
    load: &BTreeMap<String, usize>,
    pin: Option<&str>,
    need: u64,
    replicas: u32,
    model: &str,
    gpus: usize,
) -> Result<Vec<Arc<dyn Worker>>, SupervisorError> {
    if workers.is_empty() {
        return Err(SupervisorError::Unavailable {
            detail: "No available worker found".into(),
            retry_after: None,
        });
    }
    let workers: Vec<Arc<dyn Worker>> = match pin {
        None => workers,
        Some(ip) => {
            let pinned: Vec<_> = workers
                .into_iter()
                .filter(|w| {
                    let address = w.address();
                    address == ip || address.rsplit_once(':').is_some_and(|(host, _)| host == ip)
                })
                .collect();
            if pinned.is_empty() {
                return Err(SupervisorError::BadRequest(format!(
                    "Worker ip address {ip} is not in the cluster."
                )));
            }
            pinned
        }
    };
    struct Slot {
        worker: Arc<dyn Worker>,
        free: u64,
        load: usize,
    }
    let mut slots: Vec<Slot> = Vec::new();
    let mut gpu_counts = Vec::new();
    for worker in workers {
        let resources = worker.resources();
        let free = if gpus == 0 {
            resources.memory_available
        } else if resources.gpus.len() >= gpus {
            resources
                .gpus
                .iter()
                .map(|g| g.memory_total.saturating_sub(g.memory_used))
                .max()
                .unwrap_or(0)
        } else {
            gpu_counts.push(format!("{}: {}", worker.address(), resources.gpus.len()));
            continue;
        };
        slots.push(Slot {
            free,
            load: load.get(&worker.address()).copied().unwrap_or(0),
            worker,
        });
    }
    if slots.is_empty() {
        return Err(SupervisorError::Unavailable {
            detail: format!(
                "No worker has {gpus} GPU(s) for model {model} (GPUs per worker: {})",
                gpu_counts.join(", ")
            ),
            retry_after: None,
        });
    }
    let kind = if gpus == 0 { "memory" } else { "GPU memory" };
    let mut chosen = Vec::new();
    for _ in 0..replicas {
        let best = slots
            .iter_mut()
            .filter(|s| s.free >= need)
            .min_by(|a, b| a.load.cmp(&b.load).then(b.free.cmp(&a.free)));
        let Some(slot) = best else {
            let most = slots.iter().max_by_key(|s| s.free);
            let (free, address) = most.map_or((0, String::new()), |s| (s.free, s.worker.address()));
            return Err(SupervisorError::Unavailable {
                detail: format!(
                    "No worker has enough free {kind} for model {model}: it needs about \
                     {:.0} MiB, the most free is {:.0} MiB (worker {address})",
                    need as f64 / MIB,
                    free as f64 / MIB
                ),
                retry_after: None,
            });
        };
        slot.free -= need;
        slot.load += 1;
        chosen.push(slot.worker.clone());
    }
    Ok(chosen)
}

#[cfg(test)]
mod tests {
    use super::*;
    use xi_api::cluster::WorkerResources;
    use xi_api::launch::{LaunchOptions, RawLaunchOptions};
    use xi_api::worker::{
        BoxFuture, EmbedRequest, EmbedResponse, EventStream, GenerateRequest, GpuInfo, ReplicaInfo,
        ReplicaSpec, RerankRequest, RerankResponse, WorkerError,
    };

    /// A worker that only has an address and free memory: placement reads nothing else.
    struct Node(&'static str, u64, Vec<GpuInfo>);

    impl Worker for Node {
        fn address(&self) -> String {
            self.0.to_string()
        }
        fn resources(&self) -> WorkerResources {
            WorkerResources {
                memory_available: self.1,
                gpus: self.2.clone(),
                ..WorkerResources::default()
            }
        }
        fn launch(&self, _: ReplicaSpec) -> BoxFuture<'_, Result<ReplicaInfo, WorkerError>> {
            unreachable!("placement never launches")
        }
        fn terminate(&self, _: String) -> BoxFuture<'_, Result<(), WorkerError>> {
            unreachable!()
        }
        fn progress(&self, _: String) -> BoxFuture<'_, Option<f32>> {
            unreachable!()
        }
        fn embed(
            &self,
            _: String,
            _: EmbedRequest,
        ) -> BoxFuture<'_, Result<EmbedResponse, WorkerError>> {
            unreachable!()
        }
        fn rerank(
            &self,
            _: String,
            _: RerankRequest,
        ) -> BoxFuture<'_, Result<RerankResponse, WorkerError>> {
            unreachable!()
        }
        fn generate(
            &self,
            _: String,
            _: GenerateRequest,
        ) -> BoxFuture<'_, Result<EventStream, WorkerError>> {
            unreachable!()
        }
        fn transcribe(
            &self,
            _: String,
            _: xi_api::audio::TranscribeRequest,
        ) -> BoxFuture<'_, Result<xi_api::audio::TranscribeStream, WorkerError>> {
            unreachable!()
        }
    }

    const GIB: u64 = 1 << 30;

    fn nodes() -> Vec<Arc<dyn Worker>> {
        let gpu = |index, used| GpuInfo {
            index,
            name: "NVIDIA H200".into(),
            memory_total: 140 * GIB,
            memory_used: used,
        };
        vec![
            Arc::new(Node("10.0.0.2:4000", 8 * GIB, vec![gpu(0, 100 * GIB)])),
            Arc::new(Node("10.0.0.3:4000", 2 * GIB, Vec::new())),
            Arc::new(Node("10.0.0.4:4000", 16 * GIB, vec![gpu(0, 0), gpu(1, 0)])),
        ]
    }

    /// GPUs per replica of a one-replica launch with these `n_gpu` / `gpu_idx` fields.
    fn gpus_wanted(fields: Value) -> usize {
        let fields = fields.as_object().cloned().unwrap_or_default();
        let options = LaunchOptions::parse(RawLaunchOptions {
            n_gpu: fields.get("n_gpu"),
            gpu_idx: fields.get("gpu_idx"),
            extra: &Map::new(),
            replica: 1,
        })
        .unwrap();
        options.gpus_per_replica()
    }

    fn refusal(result: Result<Vec<Arc<dyn Worker>>, SupervisorError>) -> String {
        match result {
            Ok(_) => panic!("placed, expected a refusal"),
            Err(e) => e.to_string(),
        }
    }

    fn addresses(chosen: &[Arc<dyn Worker>]) -> Vec<String> {
        chosen.iter().map(|w| w.address()).collect()
    }

    #[test]
    fn least_loaded_first_then_most_free_and_replicas_spread() {
        let load = BTreeMap::from([("10.0.0.4:4000".to_string(), 2)]);
        let chosen = place(nodes(), &load, None, GIB, 3, "m", 0).unwrap();
        assert_eq!(
            addresses(&chosen),
            ["10.0.0.2:4000", "10.0.0.3:4000", "10.0.0.2:4000"]
        );
        // Too big for the small worker: it is skipped.
        let chosen = place(nodes(), &BTreeMap::new(), None, 4 * GIB, 2, "m", 0).unwrap();
        assert_eq!(addresses(&chosen), ["10.0.0.4:4000", "10.0.0.2:4000"]);
    }

    #[test]
    fn pins_and_refusals_say_why() {
        let chosen = place(nodes(), &BTreeMap::new(), Some("10.0.0.3"), GIB, 1, "m", 0).unwrap();
        assert_eq!(addresses(&chosen), ["10.0.0.3:4000"]);
        let err = refusal(place(
            nodes(),
            &BTreeMap::new(),
            Some("10.9.9.9"),
            GIB,
            1,
            "m",
            0,
        ));
        assert_eq!(err, "Worker ip address 10.9.9.9 is not in the cluster.");
        let err = refusal(place(
            nodes(),
            &BTreeMap::new(),
            None,
            20 * GIB,
            1,
            "big",
            0,
        ));
        assert!(
            err.starts_with("No worker has enough free memory for model big: it needs about 20480 MiB, the most free is 16384 MiB (worker 10.0.0.4:4000)"),
            "{err}"
        );
        let err = refusal(place(Vec::new(), &BTreeMap::new(), None, 0, 1, "m", 0));
        assert_eq!(err, "No available worker found");
    }

    #[test]
    fn gpu_launches_go_by_free_gpu_memory() {
        assert_eq!(gpus_wanted(serde_json::json!({ "n_gpu": 1 })), 1);
        // A numeric string is the same integer, as the worker reads it.
        assert_eq!(gpus_wanted(serde_json::json!({ "n_gpu": "1" })), 1);
        assert_eq!(
            gpus_wanted(serde_json::json!({ "n_gpu": "auto", "gpu_idx": [0, 1] })),
            2
        );
        assert_eq!(gpus_wanted(serde_json::json!({ "n_gpu": null })), 0);
        assert_eq!(gpus_wanted(serde_json::json!({})), 0);
        // 10.0.0.2 has 40 GiB free on its GPU, 10.0.0.4 140 GiB on each; 10.0.0.3 has none.
        let chosen = place(nodes(), &BTreeMap::new(), None, 60 * GIB, 2, "m", 1).unwrap();
        assert_eq!(addresses(&chosen), ["10.0.0.4:4000", "10.0.0.4:4000"]);
        let chosen = place(nodes(), &BTreeMap::new(), None, GIB, 2, "m", 1).unwrap();
        assert_eq!(addresses(&chosen), ["10.0.0.4:4000", "10.0.0.2:4000"]);
        let err = refusal(place(nodes(), &BTreeMap::new(), None, GIB, 1, "m", 3));
        assert_eq!(
            err,
            "No worker has 3 GPU(s) for model m (GPUs per worker: 10.0.0.2:4000: 1, 10.0.0.3:4000: 0, 10.0.0.4:4000: 2)"
        );
        let err = refusal(place(nodes(), &BTreeMap::new(), None, 200 * GIB, 1, "m", 1));
        assert!(
            err.starts_with("No worker has enough free GPU memory"),
            "{err}"
        );
    }

    #[test]
    fn estimates_follow_the_files_or_the_spec() {
        let spec: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "model_size_in_billions": "1_5", "quantization": "Q4_1"
        }))
        .unwrap();
        assert_eq!(estimate_bytes(None, &spec), (1.5e9 * 0.6 * 1.2) as u64);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.safetensors"), vec![0u8; 1000]).unwrap();
        std::fs::write(dir.path().join("README.md"), vec![0u8; 5000]).unwrap();
        assert_eq!(estimate_bytes(Some(dir.path()), &spec), 1200);
    }
}
