//! The queue engine: claims executions, runs them under a lease, records how
//! they end, and keeps the table healthy.
//!
//! How the pieces fit: [`Runner`] (`runner.rs`) starts one claim loop per queue
//! (`claim.rs`), which claims as many executions as it has free slots and hands
//! each to the executor (`executor.rs`). The executor runs one attempt under its
//! timeout, catching panics, while `heartbeat.rs` renews the lease; the result
//! becomes an outcome, and failed attempts are rescheduled by the pure policy in
//! `retry.rs`. Outcomes are written by `completions.rs`, which batches successes
//! into one statement. Stop requests reach running jobs through
//! `cancellation.rs`; `notifications.rs` is the one `LISTEN` connection that
//! wakes claim loops, cancellations and event streams. Beside all this,
//! `maintenance.rs` rescues executions whose worker died, prunes old finished
//! ones and samples the status gauge.
//!
//! On shutdown the runner stops claiming, lets running jobs finish within the
//! grace period, then hands the rest back to the queue without counting the
//! attempt.

mod cancellation;
mod claim;
mod completions;
mod error;
mod executor;
mod heartbeat;
mod maintenance;
mod notifications;
mod retry;
mod runner;

use error::QueueError;
pub use notifications::{ACCESS_CHANNEL, Change, NotificationHub};
pub use runner::Runner;
