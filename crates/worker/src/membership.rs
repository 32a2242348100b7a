//! Staying in the cluster: join the supervisor (reporting the replicas this worker runs),
//! send heartbeats, join again when the supervisor no longer knows us (it restarted, or
//! declared us dead), and leave on exit.

use std::sync::Arc;
use std::time::Duration;

use xi_api::cluster::{Heartbeat, JoinRequest, JoinResponse, LeaveRequest, CLUSTER_SECRET_HEADER};
use xi_api::worker::Worker;
use xi_auth::ClusterSecret;

use crate::error::NodeError;
use crate::local::LocalWorker;

/// Wait between attempts while the supervisor cannot be reached.
const RETRY: Duration = Duration::from_secs(1);

pub struct Membership {
    pub worker: Arc<LocalWorker>,
    /// The supervisor's base URL, e.g. `http://10.0.0.1:9997`.
    pub supervisor: String,
    pub secret: ClusterSecret,
    pub http: reqwest::Client,
}

enum Beat {
    Ok,
    /// The supervisor does not know us: join again.
    Rejoin,
    Unreachable(String),
}

impl Membership {
    fn url(&self, path: &str) -> String {
        format!(
            "{}/internal/v1/workers/{path}",
            self.supervisor.trim_end_matches('/')
        )
    }

    fn post<B: serde::Serialize>(&self, path: &str, body: &B) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .header(CLUSTER_SECRET_HEADER, self.secret.expose())
            .json(body)
            .timeout(Duration::from_secs(10))
    }

    /// Joins, then beats until a fatal error (the supervisor refused our secret). Never
    /// returns otherwise: an unreachable supervisor is retried forever.
    pub async fn run(&self) -> Result<(), NodeError> {
        let mut warned = false;
        loop {
            let interval = match self.join().await {
                Ok(response) => {
                    warned = false;
                    for uid in response.stop_replicas {
                        tracing::warn!(replica = %uid, "the supervisor gave this replica's uid to another model; stopping it");
                        let _ = self.worker.terminate(uid).await;
                    }
                    Duration::from_millis(response.heartbeat_interval_ms.max(50))
                }
                Err(NodeError::Unreachable(why)) => {
                    if !warned {
                        tracing::warn!(supervisor = %self.supervisor, error = %why, "cannot reach the supervisor; retrying every second");
                        warned = true;
                    }
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
                Err(fatal) => return Err(fatal),
            };
            tracing::info!(supervisor = %self.supervisor, address = %self.worker.address(), "joined the cluster");
            self.beat(interval).await?;
        }
    }

    async fn join(&self) -> Result<JoinResponse, NodeError> {
        let request = JoinRequest {
            address: self.worker.address(),
            resources: self.worker.resources(),
            replicas: self.worker.running(),
        };
        let response = self
            .post("join", &request)
            .send()
            .await
            .map_err(|e| NodeError::Unreachable(root_cause(&e)))?;
        match response.status() {
            s if s.is_success() => response
                .json()
                .await
                .map_err(|e| NodeError::Unreachable(root_cause(&e))),
            reqwest::StatusCode::UNAUTHORIZED => Err(NodeError::Refused(format!(
                "the supervisor at {} refused this worker's cluster secret: give the worker \
                 the supervisor's secret (--cluster-secret-file or XINFERENCE_CLUSTER_SECRET)",
                self.supervisor
            ))),
            s => {
                let body = response.text().await.unwrap_or_default();
                Err(NodeError::Unreachable(format!(
                    "join answered HTTP {s}: {body}"
                )))
            }
        }
    }

    /// Heartbeats every `interval` until the supervisor asks us to join again.
    async fn beat(&self, interval: Duration) -> Result<(), NodeError> {
        let mut timer = tokio::time::interval(interval);
        timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        timer.tick().await;
        let mut warned = false;
        loop {
            timer.tick().await;
            match self.heartbeat().await? {
                Beat::Ok => warned = false,
                Beat::Rejoin => {
                    tracing::info!(
                        "the supervisor does not know this worker (restarted?); joining again"
                    );
                    return Ok(());
                }
                Beat::Unreachable(why) => {
                    if !warned {
                        tracing::warn!(supervisor = %self.supervisor, error = %why, "heartbeat failed; the models keep running");
                        warned = true;
                    }
                }
            }
        }
    }

    async fn heartbeat(&self) -> Result<Beat, NodeError> {
        let beat = Heartbeat {
            address: self.worker.address(),
            resources: self.worker.resources(),
        };
        let response = match self.post("heartbeat", &beat).send().await {
            Ok(r) => r,
            Err(e) => return Ok(Beat::Unreachable(root_cause(&e))),
        };
        Ok(match response.status() {
            s if s.is_success() => Beat::Ok,
            reqwest::StatusCode::NOT_FOUND => Beat::Rejoin,
            reqwest::StatusCode::UNAUTHORIZED => {
                return Err(NodeError::Refused(format!(
                    "the supervisor at {} no longer accepts this worker's cluster secret",
                    self.supervisor
                )))
            }
            s => Beat::Unreachable(format!("heartbeat answered HTTP {s}")),
        })
    }

    /// Tells the supervisor we are going (best effort, a few seconds at most).
    pub async fn leave(&self) {
        let request = LeaveRequest {
            address: self.worker.address(),
        };
        match self
            .post("leave", &request)
            .timeout(Duration::from_secs(3))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => tracing::info!("left the cluster"),
            Ok(r) => tracing::warn!(status = %r.status(), "the supervisor refused our leave"),
            Err(e) => {
                tracing::warn!(error = %root_cause(&e), "cannot tell the supervisor we leave")
            }
        }
    }
}

fn root_cause(e: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
