//! The domain without HTTP: launches, terminations, dispatch, failover, joins and expiry on
//! `xi_testkit::FakeWorker`s. Test code only: `mod.rs` declares it under `#[cfg(test)]`.

use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntCounterVec, Opts};
use serde_json::json;
use tempfile::TempDir;
use xi_api::cluster::{JoinRequest, RunningReplica, WorkerResources};
use xi_api::models::{LaunchStatus, ModelType};
use xi_api::worker::{EmbedInput, EmbedRequest, ReplicaInfo, Worker, WorkerErrorKind};
use xi_auth::ClusterSecret;
use xi_testkit::FakeWorker;

use super::Cluster;
use crate::error::{ModelLookup, SupervisorError};
use crate::registry::Registry;

const A: &str = "10.0.0.1:7001";
const B: &str = "10.0.0.2:7001";
const REMOTE: &str = "10.0.0.9:7001";
const EMBEDDING: &str = "all-MiniLM-L6-v2";

/// A cluster over fake in-process workers, with a home for its registry and a model folder
/// to launch from.
struct Fixture {
    cluster: Arc<Cluster>,
    workers: Vec<Arc<FakeWorker>>,
    events: IntCounterVec,
    _home: TempDir,
    files: TempDir,
}

impl Fixture {
    fn new(addresses: &[&str], heartbeat: Duration) -> Fixture {
        let home = TempDir::new().unwrap();
        let workers: Vec<Arc<FakeWorker>> = addresses.iter().map(|a| FakeWorker::new(a)).collect();
        let local = workers
            .iter()
            .map(|w| w.clone() as Arc<dyn Worker>)
            .collect();
        let events = IntCounterVec::new(Opts::new("events", "cluster events"), &["event"]).unwrap();
        let cluster = Arc::new(Cluster::new(
            Registry::load(home.path()).unwrap(),
            local,
            heartbeat,
            reqwest::Client::new(),
            ClusterSecret::new(&"s".repeat(64)).unwrap(),
            events.clone(),
        ));
        Fixture {
            cluster,
            workers,
            events,
            _home: home,
            files: TempDir::new().unwrap(),
        }
    }

    fn worker(&self, address: &str) -> &FakeWorker {
        self.workers
            .iter()
            .find(|w| w.address() == address)
            .unwrap()
    }

    /// Plans and runs a launch of the embedding model as `uid`.
    async fn launch(&self, uid: &str, replica: u32, wait: bool) -> Result<String, SupervisorError> {
        let request = serde_json::from_value(json!({
            "model_uid": uid, "model_name": EMBEDDING, "model_type": "embedding",
            "replica": replica, "model_path": self.files.path().to_str().unwrap(),
        }))
        .unwrap();
        let plan = self.cluster.plan(request)?;
        self.cluster.launch(plan, wait).await
    }

    fn event(&self, name: &str) -> u64 {
        self.events.with_label_values(&[name]).get()
    }
}

fn resources() -> WorkerResources {
    FakeWorker::new(REMOTE).resources()
}

async fn embed(cluster: &Cluster, uid: &str) -> Result<String, SupervisorError> {
    let entry = cluster.serving(uid, ModelType::Embedding, "embeddings")?;
    let request = EmbedRequest {
        inputs: vec![EmbedInput::Text("hello world".into())],
        truncate: true,
    };
    let (replica, _) = cluster
        .dispatch(&entry, |replica, worker| {
            let request = request.clone();
            async move { worker.embed(replica, request).await }
        })
        .await?;
    Ok(replica)
}

#[tokio::test]
async fn launch_places_replicas_and_dispatch_goes_round_robin() {
    let f = Fixture::new(&[A, B], Duration::from_secs(5));
    assert_eq!(f.launch("emb", 2, true).await.unwrap(), "emb");
    let entry = f.cluster.model("emb").unwrap();
    assert_eq!(entry.status(), LaunchStatus::Ready);
    assert_eq!(f.cluster.progress(&entry).await, 1.0);
    let mut on: Vec<String> = entry.replicas().iter().map(|(_, w)| w.address()).collect();
    on.sort();
    assert_eq!(on, [A, B], "one replica per worker");
    let first = embed(&f.cluster, "emb").await.unwrap();
    let second = embed(&f.cluster, "emb").await.unwrap();
    assert_ne!(first, second, "round-robin over the replicas");
    assert_eq!(f.worker(A).count("embed") + f.worker(B).count("embed"), 2);
}

#[tokio::test]
async fn a_taken_uid_is_refused_at_planning() {
    let f = Fixture::new(&[A], Duration::from_secs(5));
    f.launch("emb", 1, true).await.unwrap();
    let err = f.launch("emb", 1, true).await.unwrap_err();
    assert!(
        matches!(&err, SupervisorError::BadRequest(m) if m.contains("already in the model list")),
        "{err:?}"
    );
}

#[tokio::test]
async fn terminate_stops_every_replica_and_frees_the_uid() {
    let f = Fixture::new(&[A, B], Duration::from_secs(5));
    f.launch("emb", 2, true).await.unwrap();
    let entry = f.cluster.model("emb").unwrap();
    f.cluster.terminate(&entry).await;
    assert!(f.cluster.model("emb").is_none());
    assert_eq!(
        f.worker(A).count("terminate") + f.worker(B).count("terminate"),
        2
    );
    assert!(f.worker(A).replicas().is_empty() && f.worker(B).replicas().is_empty());
    let err = embed(&f.cluster, "emb").await.unwrap_err();
    assert!(matches!(
        err,
        SupervisorError::ModelNotFound {
            lookup: ModelLookup::Inference,
            ..
        }
    ));
    f.launch("emb", 1, true).await.unwrap();
}

#[tokio::test]
async fn cancel_is_refused_once_the_model_is_ready() {
    let f = Fixture::new(&[A], Duration::from_secs(5));
    f.launch("emb", 1, true).await.unwrap();
    let entry = f.cluster.model("emb").unwrap();
    let err = f.cluster.cancel(&entry).await.unwrap_err();
    assert!(
        matches!(&err, SupervisorError::BadRequest(m) if m == "Model emb is not being launched"),
        "{err:?}"
    );
    assert_eq!(entry.status(), LaunchStatus::Ready);
}

#[tokio::test]
async fn a_failed_launch_is_gone_when_waited_for_and_kept_as_error_otherwise() {
    let f = Fixture::new(&[A], Duration::from_secs(5));
    f.worker(A)
        .fail_launches(Some((WorkerErrorKind::InvalidModel, "bad weights")));
    assert!(f.launch("waited", 1, true).await.is_err());
    assert!(f.cluster.model("waited").is_none());

    f.launch("background", 1, false).await.unwrap();
    let entry = f.cluster.model("background").unwrap();
    for _ in 0..100 {
        if entry.status() == LaunchStatus::Error {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(entry.status(), LaunchStatus::Error);
    assert!(entry.snapshot().error.unwrap().contains("bad weights"));
}

#[tokio::test]
async fn dispatch_fails_over_past_an_unreachable_worker() {
    let f = Fixture::new(&[A, B], Duration::from_secs(5));
    f.launch("emb", 2, true).await.unwrap();
    f.worker(A).set_unreachable(true);
    for _ in 0..4 {
        let replica = embed(&f.cluster, "emb").await.unwrap();
        let entry = f.cluster.model("emb").unwrap();
        let (_, worker) = entry
            .replicas()
            .into_iter()
            .find(|(uid, _)| *uid == replica)
            .unwrap();
        assert_eq!(worker.address(), B);
    }
    f.worker(B).set_unreachable(true);
    let err = embed(&f.cluster, "emb").await.unwrap_err();
    assert!(
        matches!(err, SupervisorError::Unavailable { .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn no_live_worker_means_no_launch() {
    let f = Fixture::new(&[], Duration::from_secs(5));
    let err = f.launch("emb", 1, true).await.unwrap_err();
    assert!(
        matches!(&err, SupervisorError::Unavailable { detail, .. } if detail == "No available worker found"),
        "{err:?}"
    );
}

/// A replica running on a fake worker, as a worker reports it when it joins.
async fn running_replica() -> RunningReplica {
    let f = Fixture::new(&[A], Duration::from_secs(5));
    f.launch("emb", 1, true).await.unwrap();
    RunningReplica {
        spec: f.worker(A).spec("emb-0").unwrap(),
        info: ReplicaInfo::default(),
    }
}

fn join_request(replicas: Vec<RunningReplica>) -> JoinRequest {
    JoinRequest {
        address: REMOTE.into(),
        resources: resources(),
        replicas,
    }
}

#[tokio::test]
async fn a_joining_worker_brings_its_replicas_back_and_expiry_takes_them_out() {
    let f = Fixture::new(&[], Duration::from_millis(50));
    let answer = f
        .cluster
        .join(join_request(vec![running_replica().await]))
        .unwrap();
    assert_eq!(answer.heartbeat_interval_ms, 50);
    assert!(answer.stop_replicas.is_empty());
    assert_eq!(f.event("join"), 1);
    let entry = f
        .cluster
        .serving("emb", ModelType::Embedding, "embeddings")
        .unwrap();
    assert_eq!(entry.replicas()[0].1.address(), REMOTE);

    f.cluster.heartbeat(REMOTE, resources()).unwrap();
    assert!(
        f.cluster.expire().is_empty(),
        "a fresh heartbeat keeps it alive"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(f.cluster.expire(), [REMOTE]);
    assert_eq!(f.event("dead"), 1);
    let err = f
        .cluster
        .serving("emb", ModelType::Embedding, "embeddings")
        .err()
        .unwrap();
    assert!(
        matches!(&err, SupervisorError::Unavailable { detail, retry_after: None } if detail.contains("stopped sending heartbeats")),
        "{err:?}"
    );
    let err = f.cluster.heartbeat(REMOTE, resources()).unwrap_err();
    assert!(matches!(err, SupervisorError::NotFound(_)), "{err:?}");

    f.cluster
        .join(join_request(vec![running_replica().await]))
        .unwrap();
    let entry = f.cluster.model("emb").unwrap();
    assert_eq!(entry.status(), LaunchStatus::Ready);
    assert_eq!(entry.replica_count(), 1);
}

#[tokio::test]
async fn a_worker_restarted_without_its_replicas_loses_them_and_leaving_is_counted() {
    let f = Fixture::new(&[], Duration::from_secs(5));
    f.cluster
        .join(join_request(vec![running_replica().await]))
        .unwrap();
    f.cluster.join(join_request(Vec::new())).unwrap();
    let entry = f.cluster.model("emb").unwrap();
    assert_eq!(entry.status(), LaunchStatus::Error);
    assert!(entry
        .snapshot()
        .error
        .unwrap()
        .contains("restarted without it"));

    f.cluster.leave(REMOTE);
    assert_eq!(f.event("leave"), 1);
    assert!(f.cluster.workers().views().is_empty());
    f.cluster.leave(REMOTE);
    assert_eq!(f.event("leave"), 1, "an unknown worker leaving is no event");
}

#[tokio::test]
async fn a_reported_replica_of_another_model_is_to_be_stopped() {
    let f = Fixture::new(&[A], Duration::from_secs(5));
    let mut replica = running_replica().await;
    f.launch("emb", 1, true).await.unwrap();
    replica.spec.model_name = "another-model".into();
    let answer = f.cluster.join(join_request(vec![replica])).unwrap();
    assert_eq!(answer.stop_replicas, ["emb-0"]);
}

#[test]
fn a_join_without_host_and_port_is_refused() {
    let f = Fixture::new(&[], Duration::from_secs(5));
    let mut request = join_request(Vec::new());
    request.address = "no-port".into();
    let err = f.cluster.join(request).unwrap_err();
    assert!(matches!(err, SupervisorError::BadRequest(_)), "{err:?}");
    assert_eq!(f.event("join"), 0);
}

#[tokio::test]
async fn shutdown_terminates_the_local_models() {
    let f = Fixture::new(&[A], Duration::from_secs(5));
    f.launch("emb", 1, true).await.unwrap();
    f.cluster.shutdown(false).await;
    assert!(f.cluster.models().all().is_empty());
    assert_eq!(f.worker(A).count("terminate"), 1);
}
