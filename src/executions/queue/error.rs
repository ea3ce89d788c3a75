//! What can go wrong inside the queue engine. None of it reaches a client: each
//! error is logged (with the execution's span) and the engine retries or lets
//! the lease lapse, so the variants only need to tell an operator what failed.

use std::sync::Arc;

use diesel_async::pooled_connection::deadpool::PoolError;

/// Why a step of the queue engine failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// No pooled connection could be had (the database is down or the pool exhausted).
    #[error("no database connection: {0}")]
    Pool(#[from] PoolError),
    /// A query failed.
    #[error("query failed: {0}")]
    Query(#[from] diesel::result::Error),
    /// The notification listener could not open its own connection.
    #[error("cannot connect the notification listener: {0}")]
    Connect(#[from] diesel::ConnectionError),
    /// The server ended the `LISTEN` connection's notification stream.
    #[error("the notification stream ended")]
    NotificationsEnded,
    /// The retention setting does not fit a timestamp difference.
    #[error("the retention period is out of range: {0}")]
    Retention(#[from] chrono::OutOfRangeError),
    /// The completion batcher is gone (only during a shutdown that went wrong).
    #[error("the completion batcher has stopped")]
    BatcherStopped,
    /// Writing the batch this success was part of failed; shared by every
    /// success in the batch, hence the `Arc`.
    #[error("recording a batch of successes failed: {0}")]
    Batch(Arc<QueueError>),
}
