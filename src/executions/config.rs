//! The executions domain's settings: worker concurrency per queue, leases and
//! heartbeats, claiming, retry backoff, shutdown grace and retention; and the
//! quotas that keep one user from filling the queues.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::core::config::{ConfigError, Vars};

/// Background execution workers.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Jobs run at once per queue (`WORKER_CONCURRENCY`); 0 in `serve` means no in-process workers.
    pub default_concurrency: usize,
    /// Per-queue overrides (`WORKER_QUEUE_CONCURRENCY=default=8,inference=1`).
    pub queue_concurrency: BTreeMap<String, usize>,
    /// How long a claim holds without a heartbeat.
    pub lease: Duration,
    /// How often a running job renews its lease.
    pub heartbeat: Duration,
    /// How often idle workers look for work when no notification arrives.
    pub poll_interval: Duration,
    /// Most executions claimed in one statement.
    pub claim_batch: usize,
    /// How long shutdown lets running jobs finish before handing them back.
    pub shutdown_grace: Duration,
    /// First retry delay; doubles each attempt.
    pub retry_base: Duration,
    /// Longest retry delay.
    pub retry_max: Duration,
    /// How long finished executions are kept.
    pub retention: Duration,
}

impl WorkerConfig {
    /// Reads the worker variables. `http_shutdown_grace` (`SHUTDOWN_GRACE_MS`,
    /// read by the platform) is the default of `WORKER_SHUTDOWN_GRACE_MS`, so one
    /// setting can govern both drains.
    pub fn from_vars(vars: &Vars<'_>, http_shutdown_grace: Duration) -> Result<Self, ConfigError> {
        let lease = vars.millis("EXECUTION_LEASE_MS", 30_000)?;
        let default_heartbeat = u64::try_from((lease / 3).as_millis())
            .unwrap_or(10_000)
            .max(1);
        let heartbeat = vars.millis("EXECUTION_HEARTBEAT_MS", default_heartbeat)?;
        if heartbeat >= lease {
            return Err(ConfigError {
                variable: "EXECUTION_HEARTBEAT_MS",
                problem: "must be shorter than EXECUTION_LEASE_MS, or every lease would lapse"
                    .to_owned(),
            });
        }
        let default_grace = u64::try_from(http_shutdown_grace.as_millis()).unwrap_or(u64::MAX);
        Ok(Self {
            default_concurrency: vars.parse("WORKER_CONCURRENCY", 4)?,
            queue_concurrency: queue_concurrency(vars)?,
            lease,
            heartbeat,
            poll_interval: vars.millis("WORKER_POLL_INTERVAL_MS", 1_000)?,
            claim_batch: vars.positive("WORKER_CLAIM_BATCH", 32)?,
            shutdown_grace: vars.millis("WORKER_SHUTDOWN_GRACE_MS", default_grace)?,
            retry_base: vars.millis("EXECUTION_RETRY_BASE_MS", 1_000)?,
            retry_max: vars.millis("EXECUTION_RETRY_MAX_MS", 300_000)?,
            retention: Duration::from_secs(
                3_600 * vars.positive("EXECUTION_RETENTION_HOURS", 168)?,
            ),
        })
    }

    /// Jobs run at once on `queue`.
    pub fn concurrency_of(&self, queue: &str) -> usize {
        self.queue_concurrency
            .get(queue)
            .copied()
            .unwrap_or(self.default_concurrency)
    }

    /// Whether any queue has workers, i.e. whether this process should run a runner.
    pub fn has_workers(&self) -> bool {
        self.default_concurrency > 0 || self.queue_concurrency.values().any(|n| *n > 0)
    }
}

/// `WORKER_QUEUE_CONCURRENCY=queue=N,other=M`.
fn queue_concurrency(vars: &Vars<'_>) -> Result<BTreeMap<String, usize>, ConfigError> {
    let Some(raw) = vars.optional("WORKER_QUEUE_CONCURRENCY") else {
        return Ok(BTreeMap::new());
    };
    raw.split(',')
        .map(str::trim)
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .and_then(|(queue, count)| {
                    Some((queue.trim().to_owned(), count.trim().parse().ok()?))
                })
                .filter(|(queue, _)| !queue.is_empty())
                .ok_or(ConfigError {
                    variable: "WORKER_QUEUE_CONCURRENCY",
                    problem: format!("{pair:?} is not queue=count"),
                })
        })
        .collect()
}

/// The name of the kind `MAX_EMBED_TEXTS_PER_DAY` meters. The kind lives in
/// the inference domain; its name is the API's contract, so it can be named here.
const EMBED_TEXTS: &str = "embed_texts";

/// What one user may ask of the queues. Admins are exempt from the unfinished
/// cap and the daily allowances; the re-run bound holds for everyone.
#[derive(Debug, Clone)]
pub struct QuotaConfig {
    /// Queued or running executions one user may have at once
    /// (`MAX_UNFINISHED_EXECUTIONS_PER_USER`).
    pub max_unfinished_per_user: u32,
    /// The metered kinds' allowances, by kind name.
    pub daily_allowances: BTreeMap<String, DailyAllowance>,
    /// How often one execution may be re-run with `POST /executions/{id}/retry`
    /// (`MAX_EXECUTION_RERUNS`; 0 refuses every re-run).
    pub max_reruns: u32,
}

impl QuotaConfig {
    /// Reads the quota variables.
    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            max_unfinished_per_user: vars.positive("MAX_UNFINISHED_EXECUTIONS_PER_USER", 100)?,
            daily_allowances: BTreeMap::from([(
                EMBED_TEXTS.to_owned(),
                DailyAllowance {
                    units: vars.positive("MAX_EMBED_TEXTS_PER_DAY", 100_000)?,
                    unit: "texts",
                },
            )]),
            max_reruns: vars.parse("MAX_EXECUTION_RERUNS", 10)?,
        })
    }

    /// What of `kind` one user may spend in 24 hours; `None` when the kind is not metered.
    pub fn daily_allowance(&self, kind: &str) -> Option<DailyAllowance> {
        self.daily_allowances.get(kind).copied()
    }
}

/// How much metered work of one kind a user may ask for in any 24 hours.
#[derive(Debug, Clone, Copy)]
pub struct DailyAllowance {
    /// Units of [`ExecutionKind::cost`](crate::executions::kinds::ExecutionKind::cost).
    pub units: u64,
    /// What a unit is, for messages (`texts`).
    pub unit: &'static str,
}

/// Bounds on the event streams (`GET /executions/{id}/events`) of one process:
/// a stream holds a connection, a task and a slot of the load shedder for as
/// long as it is open, so neither one user nor everyone together may hold
/// unboundedly many, nor one forever.
#[derive(Debug, Clone)]
pub struct EventStreamConfig {
    /// Streams one user may have open at once (`MAX_EVENT_STREAMS_PER_USER`); past it, 429.
    pub max_per_user: usize,
    /// Streams open at once in this process (`MAX_EVENT_STREAMS`); past it, 503.
    pub max_total: usize,
    /// Longest a stream stays open (`EVENT_STREAM_MAX_SECONDS`); the client
    /// then reconnects with `Last-Event-ID` and carries on.
    pub max_lifetime: Duration,
    /// How often an open stream re-checks its caller's access token and right
    /// to see the execution (`EVENT_STREAM_ACCESS_RECHECK_SECONDS`), in case a
    /// revocation's notification was missed.
    pub access_recheck: Duration,
}

impl EventStreamConfig {
    /// Reads the event stream variables.
    pub fn from_vars(vars: &Vars<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            max_per_user: vars.positive("MAX_EVENT_STREAMS_PER_USER", 8)?,
            max_total: vars.positive("MAX_EVENT_STREAMS", 1_000)?,
            max_lifetime: Duration::from_secs(vars.positive("EVENT_STREAM_MAX_SECONDS", 3_600)?),
            access_recheck: Duration::from_secs(
                vars.positive("EVENT_STREAM_ACCESS_RECHECK_SECONDS", 60)?,
            ),
        })
    }
}
