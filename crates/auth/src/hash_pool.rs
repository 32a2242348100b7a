//! [`HashPool`]: password checks and hashing on a few dedicated, low-priority threads (the
//! config file's logins and the identity store's alike).
//!
//! Argon2/bcrypt are built to be slow; run on the request threads (as upstream does) a login
//! storm stalls every other request. Here they run on their own threads at a lower CPU
//! priority, so request threads preempt them, and a bounded queue answers 503 when a storm
//! outgrows it instead of queueing without end.

use std::sync::mpsc::{self, SyncSender, TrySendError};

use tokio::sync::oneshot;

use crate::error::AuthError;

type Job = Box<dyn FnOnce() + Send>;

/// Logins that may wait for a hashing thread.
const QUEUE: usize = 256;
/// `nice` value of the hashing threads (0 is normal, 19 the lowest).
const NICENESS: i32 = 10;

pub struct HashPool {
    sender: SyncSender<Job>,
}

impl HashPool {
    pub fn new(threads: usize) -> Result<HashPool, AuthError> {
        let (sender, receiver) = mpsc::sync_channel::<Job>(QUEUE);
        let receiver = std::sync::Arc::new(std::sync::Mutex::new(receiver));
        for i in 0..threads.max(1) {
            let receiver = receiver.clone();
            std::thread::Builder::new()
                .name(format!("login-hash-{i}"))
                .spawn(move || {
                    lower_priority();
                    loop {
                        let job = match receiver.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| AuthError::Internal(format!("cannot start a login thread: {e}")))?;
        }
        Ok(HashPool { sender })
    }

    /// Runs `work` on a hashing thread and waits for its result.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, AuthError> {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = tx.send(work());
        });
        match self.sender.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => return Err(AuthError::Busy),
            Err(TrySendError::Disconnected(_)) => {
                return Err(AuthError::Internal("login threads stopped".into()))
            }
        }
        rx.await
            .map_err(|_| AuthError::Internal("a login thread failed".into()))
    }
}

#[cfg(target_os = "linux")]
fn lower_priority() {
    // On Linux, PRIO_PROCESS with a thread id sets that thread's nice value alone.
    // SAFETY: plain syscalls on the calling thread's own id; no memory is shared.
    let result = unsafe {
        let tid = libc::gettid();
        libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICENESS)
    };
    if result != 0 {
        tracing::debug!("cannot lower the login threads' priority; they run at normal priority");
    }
}

#[cfg(not(target_os = "linux"))]
fn lower_priority() {}
