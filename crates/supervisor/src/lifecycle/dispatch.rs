//! Sending a request to one of a model's replicas: round-robin, and on to the next replica
//! when a worker cannot be reached (it died, or is being declared dead), so a request fails
//! only when every replica is gone.

use std::future::Future;
use std::sync::Arc;

use xi_api::worker::{Worker, WorkerError, WorkerErrorKind};

use super::table::ModelEntry;
use crate::error::SupervisorError;

/// The answer, with the uid of the replica that gave it.
pub async fn on_replica<T, F, Fut>(
    entry: &ModelEntry,
    call: F,
) -> Result<(String, T), SupervisorError>
where
    F: Fn(String, Arc<dyn Worker>) -> Fut,
    Fut: Future<Output = Result<T, WorkerError>>,
{
    let attempts = entry.replica_count().max(1);
    let mut last = None;
    for _ in 0..attempts {
        let Some((replica, worker)) = entry.pick_replica() else {
            break;
        };
        match call(replica.clone(), worker.clone()).await {
            Err(e) if e.kind == WorkerErrorKind::Unreachable => {
                tracing::warn!(replica = %replica, worker = %worker.address(), error = %e, "replica unreachable; trying another");
                last = Some(e);
            }
            other => return other.map(|t| (replica, t)).map_err(SupervisorError::from),
        }
    }
    Err(match last {
        Some(e) => SupervisorError::from(e),
        None => SupervisorError::Unavailable {
            detail: format!(
                "Model {} has no live replica: its workers are gone",
                entry.uid
            ),
            retry_after: None,
        },
    })
}
