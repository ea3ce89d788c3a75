//! How a stop request reaches a running job: the jobs this process runs, by
//! execution id, and the task that relays cancellation notifications to them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::executions::context::{StopReason, StopSignal};
use crate::executions::queue::NotificationHub;

/// The stop signals of the jobs this process runs now, by execution id.
#[derive(Clone, Default)]
pub(super) struct RunningJobs(Arc<Mutex<HashMap<Uuid, StopSignal>>>);

impl RunningJobs {
    /// Makes the job reachable by stop requests while it runs.
    pub(super) fn track(&self, id: Uuid, stop: StopSignal) {
        if let Ok(mut running) = self.0.lock() {
            running.insert(id, stop);
        }
    }

    /// Forgets a job that ended.
    pub(super) fn untrack(&self, id: Uuid) {
        if let Ok(mut running) = self.0.lock() {
            running.remove(&id);
        }
    }

    /// Asks the job `id` to stop, if it runs here.
    pub(super) fn stop(&self, id: Uuid, reason: StopReason) {
        if let Some(stop) = self
            .0
            .lock()
            .ok()
            .and_then(|running| running.get(&id).cloned())
        {
            stop.stop(reason);
        }
    }

    /// Asks every running job to stop (the shutdown's grace period is over).
    pub(super) fn stop_all(&self, reason: StopReason) {
        if let Ok(running) = self.0.lock() {
            for stop in running.values() {
                stop.stop(reason);
            }
        }
    }
}

/// Delivers cancellation requests (NOTIFY) to the jobs they name, within
/// moments, even when the request came through another process.
pub(super) async fn deliver_cancellations(
    running: RunningJobs,
    hub: Arc<NotificationHub>,
    shutdown: CancellationToken,
) {
    let mut requests = hub.cancel_requests();
    loop {
        tokio::select! {
            request = requests.recv() => match request {
                Ok(id) => running.stop(id, StopReason::Cancelled),
                // Lagged: the heartbeat still delivers the flag from the database.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            },
            () = shutdown.cancelled() => return,
        }
    }
}
