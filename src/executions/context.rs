//! What a running job sees: its identity, progress reporting, cancellation,
//! and writes fenced on its claim.

use std::fmt::Display;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use diesel_async::{AsyncConnection, AsyncPgConnection};
use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::core::db::DbPool;
use crate::executions::repository::{self, Claim};

/// What a client sees of an attempt that failed because the database did.
pub const DATABASE_UNAVAILABLE: &str = "The database was unavailable.";

/// How a job ended other than by returning its output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// The work failed, with a message meant for the client (stored in the
    /// execution's errors); the attempt may be retried.
    #[error("{0}")]
    Failed(String),
    /// The work failed for an internal reason: the client sees only the stable
    /// `message`; the `cause` (a database error, panic text, a path) goes to the
    /// log with the execution's id. The attempt may be retried.
    #[error("{message}")]
    Internal {
        /// The stable message stored for clients.
        message: &'static str,
        /// What actually went wrong, for the log only.
        cause: String,
    },
    /// The work failed in a way no later attempt can change (an SMTP server
    /// refusing a recipient with a 5xx), with a message meant for the client:
    /// the execution fails at once, whatever attempts remain.
    #[error("{0}")]
    Permanent(String),
    /// The job stopped because it was asked to (cancellation or shutdown).
    #[error("stopped on request")]
    Cancelled,
    /// Another worker owns the execution now; nothing this one writes counts.
    #[error("the lease was lost")]
    LeaseLost,
}

impl JobError {
    /// An internal failure: clients see `message`, the log sees `cause`.
    pub fn internal(message: &'static str, cause: impl Display) -> Self {
        Self::Internal {
            message,
            cause: cause.to_string(),
        }
    }

    /// A failure of the database (no connection, a query refused): clients
    /// see [`DATABASE_UNAVAILABLE`].
    pub fn database(cause: impl Display) -> Self {
        Self::internal(DATABASE_UNAVAILABLE, cause)
    }
}

/// Why a fenced transaction did not commit.
enum Unfenced {
    /// The claim no longer holds.
    Lost,
    /// A query failed.
    Query(diesel::result::Error),
}

impl From<diesel::result::Error> for Unfenced {
    fn from(error: diesel::result::Error) -> Self {
        Self::Query(error)
    }
}

/// Why a running job was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StopReason {
    /// Not asked.
    None = 0,
    /// Its owner or an admin cancelled it: it ends `cancelled`.
    Cancelled = 1,
    /// The worker is shutting down: it goes back to the queue.
    Shutdown = 2,
    /// The lease was lost: another worker may run it now.
    LeaseLost = 3,
}

/// The stop signal of one running job, shared by the worker and the job.
#[derive(Debug, Clone, Default)]
pub struct StopSignal {
    token: CancellationToken,
    reason: Arc<AtomicU8>,
}

impl StopSignal {
    /// Asks the job to stop; the first reason given wins.
    pub fn stop(&self, reason: StopReason) {
        let _ = self.reason.compare_exchange(
            StopReason::None as u8,
            reason as u8,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
        self.token.cancel();
    }

    /// Why the job was asked to stop.
    pub fn reason(&self) -> StopReason {
        match self.reason.load(Ordering::SeqCst) {
            1 => StopReason::Cancelled,
            2 => StopReason::Shutdown,
            3 => StopReason::LeaseLost,
            _ => StopReason::None,
        }
    }

    /// Resolves once the job is asked to stop.
    pub async fn stopped(&self) {
        self.token.cancelled().await;
    }
}

/// Handed to a kind's `run`.
#[derive(Clone)]
pub struct JobContext {
    claim: Claim,
    pool: DbPool,
    stop: StopSignal,
}

impl JobContext {
    /// A context for the claimed attempt.
    pub fn new(claim: Claim, pool: DbPool, stop: StopSignal) -> Self {
        Self { claim, pool, stop }
    }

    /// The execution's id.
    pub fn execution_id(&self) -> Uuid {
        self.claim.execution_id
    }

    /// The database pool, for kinds whose work writes to the database.
    pub fn pool(&self) -> DbPool {
        self.pool.clone()
    }

    /// This attempt's number, from 1.
    pub fn attempt(&self) -> i32 {
        self.claim.attempt
    }

    /// Whether the job has been asked to stop; long work checks this (or awaits
    /// [`JobContext::cancelled`]) between steps.
    pub fn is_cancelled(&self) -> bool {
        self.stop.reason() != StopReason::None
    }

    /// Resolves once the job is asked to stop.
    pub async fn cancelled(&self) {
        self.stop.stopped().await;
    }

    /// Records progress (0–100) and a message, visible over the API and the
    /// event stream. Fails with `LeaseLost` if this worker no longer owns the
    /// attempt, and with `Cancelled` once the job is asked to stop.
    pub async fn report_progress(&self, percent: u8, message: &str) -> Result<(), JobError> {
        if self.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        let mut conn = self.pool.get().await.map_err(JobError::database)?;
        let owned = repository::report_progress(&mut conn, &self.claim, percent.min(100), message)
            .await
            .map_err(JobError::database)?;
        if owned {
            Ok(())
        } else {
            Err(JobError::LeaseLost)
        }
    }

    /// Runs `work` in a transaction that commits only while this attempt
    /// still holds its claim: the claim is checked first and stays locked
    /// until the commit, so a worker whose lease was lost (and whose execution
    /// another worker may run now) writes nothing. Fails with `LeaseLost` then;
    /// database failures are [`JobError::database`].
    pub async fn fenced_transaction<T, F>(&self, work: F) -> Result<T, JobError>
    where
        T: Send,
        F: for<'c> FnOnce(&'c mut AsyncPgConnection) -> BoxFuture<'c, diesel::QueryResult<T>>
            + Send,
    {
        let mut conn = self.pool.get().await.map_err(JobError::database)?;
        let claim = self.claim;
        let written = conn
            .transaction(async move |conn| {
                if !repository::hold_claim(conn, &claim).await? {
                    return Err(Unfenced::Lost);
                }
                Ok(work(conn).await?)
            })
            .await;
        written.map_err(|unfenced| match unfenced {
            Unfenced::Lost => JobError::LeaseLost,
            Unfenced::Query(error) => JobError::database(error),
        })
    }
}
