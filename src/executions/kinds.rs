//! Kinds of execution: what a job is, and the registry of those the service runs.
//!
//! A kind is a Rust type with a name, a typed input and output (serde and
//! OpenAPI schemas) and an async `run` that gets a [`JobContext`] for
//! reporting progress and observing cancellation. The registry erases the
//! types so the API and the workers can handle any kind by name:
//! `KindRegistry::new().register(Sleep)`.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use crate::core::http::extract::parse_nested_json;
use crate::executions::context::{JobContext, JobError};
use crate::shared::error::{FieldError, LocSegment};

/// The queue kinds run on unless they name another.
pub const DEFAULT_QUEUE: &str = "default";

/// One kind of background work.
pub trait ExecutionKind: Send + Sync + 'static {
    /// The name clients submit (`"sleep"`).
    const NAME: &'static str;
    /// The worker queue that runs it (queues have their own concurrency).
    const QUEUE: &'static str = DEFAULT_QUEUE;
    /// What a client submits.
    type Input: DeserializeOwned + Serialize + ToSchema + Send + 'static;
    /// What a successful run returns.
    type Output: Serialize + ToSchema + Send + 'static;

    /// Rules beyond the input's shape; each error's `loc` is relative to `input`.
    fn validate(&self, input: &Self::Input) -> Vec<FieldError>;

    /// A short description of this input, for generated names (`"Sleep 1.5 s"`).
    fn describe(&self, input: &Self::Input) -> String;

    /// Does the work.
    fn run(
        &self,
        input: Self::Input,
        context: JobContext,
    ) -> impl Future<Output = Result<Self::Output, JobError>> + Send;
}

/// A kind with its types erased, as the registry holds it.
trait ErasedKind: Send + Sync {
    fn queue(&self) -> &'static str;
    fn parse(&self, input: &Value) -> Result<Value, Vec<FieldError>>;
    fn describe(&self, input: &Value) -> String;
    fn run(&self, input: Value, context: JobContext)
    -> BoxFuture<'static, Result<Value, JobError>>;
    fn schemas(&self) -> [(String, RefOr<Schema>); 2];
}

struct Erased<K>(Arc<K>);

impl<K: ExecutionKind> ErasedKind for Erased<K> {
    fn queue(&self) -> &'static str {
        K::QUEUE
    }

    fn parse(&self, input: &Value) -> Result<Value, Vec<FieldError>> {
        let typed: K::Input = parse_nested_json(input, &["body", "input"])?;
        let mut errors = self.0.validate(&typed);
        if !errors.is_empty() {
            for error in &mut errors {
                error
                    .loc
                    .splice(0..0, [LocSegment::from("body"), LocSegment::from("input")]);
            }
            return Err(errors);
        }
        // Stored normalised (defaults filled in), so a worker reads exactly what was checked.
        serde_json::to_value(&typed)
            .map_err(|error| vec![FieldError::body("input").because(error.to_string())])
    }

    fn describe(&self, input: &Value) -> String {
        match serde_json::from_value::<K::Input>(input.clone()) {
            Ok(typed) => self.0.describe(&typed),
            Err(_) => K::NAME.to_owned(),
        }
    }

    fn run(
        &self,
        input: Value,
        context: JobContext,
    ) -> BoxFuture<'static, Result<Value, JobError>> {
        let kind = self.0.clone();
        async move {
            let typed: K::Input = serde_json::from_value(input).map_err(|error| {
                JobError::Failed(format!("stored input no longer parses: {error}"))
            })?;
            let output = kind.run(typed, context).await?;
            serde_json::to_value(output)
                .map_err(|error| JobError::Failed(format!("output does not serialise: {error}")))
        }
        .boxed()
    }

    fn schemas(&self) -> [(String, RefOr<Schema>); 2] {
        [
            (K::Input::name().into_owned(), K::Input::schema()),
            (K::Output::name().into_owned(), K::Output::schema()),
        ]
    }
}

/// The kinds this deployment runs, by name.
#[derive(Clone, Default)]
pub struct KindRegistry {
    kinds: BTreeMap<&'static str, Arc<dyn ErasedKind>>,
}

impl KindRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind.
    #[must_use]
    pub fn register<K: ExecutionKind>(mut self, kind: K) -> Self {
        self.kinds.insert(K::NAME, Arc::new(Erased(Arc::new(kind))));
        self
    }

    /// Every kind's name, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    /// Every queue some kind runs on.
    pub fn queues(&self) -> Vec<&'static str> {
        let mut queues: Vec<&'static str> = self.kinds.values().map(|kind| kind.queue()).collect();
        queues.sort_unstable();
        queues.dedup();
        queues
    }

    /// The kinds of one queue.
    pub fn kinds_of_queue(&self, queue: &str) -> Vec<&'static str> {
        self.kinds
            .iter()
            .filter(|(_, kind)| kind.queue() == queue)
            .map(|(name, _)| *name)
            .collect()
    }

    /// The queue of `kind`, if it is registered.
    pub fn queue_of(&self, kind: &str) -> Option<&'static str> {
        self.kinds.get(kind).map(|kind| kind.queue())
    }

    /// Checks `input` against `kind`'s schema and rules; returns it normalised.
    pub fn parse_input(&self, kind: &str, input: &Value) -> Result<Value, Vec<FieldError>> {
        match self.kinds.get(kind) {
            Some(erased) => erased.parse(input),
            None => Err(vec![
                FieldError::body("kind")
                    .because(format!(
                        "is not a known kind (known: {})",
                        self.names().join(", ")
                    ))
                    .kind("enum"),
            ]),
        }
    }

    /// A short description of `input` for `kind`.
    pub fn describe(&self, kind: &str, input: &Value) -> String {
        self.kinds
            .get(kind)
            .map_or_else(|| kind.to_owned(), |erased| erased.describe(input))
    }

    /// Runs `kind` on `input`; `None` if this process does not know the kind.
    pub fn run(
        &self,
        kind: &str,
        input: Value,
        context: JobContext,
    ) -> Option<BoxFuture<'static, Result<Value, JobError>>> {
        self.kinds
            .get(kind)
            .map(|erased| erased.run(input, context))
    }

    /// Every kind's input and output schema, for the OpenAPI document.
    pub fn schemas(&self) -> Vec<(String, RefOr<Schema>)> {
        self.kinds
            .values()
            .flat_map(|kind| kind.schemas())
            .collect()
    }
}

/// Waits, reporting progress; can fail its first attempts on purpose. For
/// tests, demos and benchmarks.
pub struct Sleep;

/// Input of `sleep`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepInput {
    /// How long to wait, in milliseconds (at most one day).
    #[schema(maximum = 86_400_000, example = 1500)]
    pub duration_ms: u64,
    /// How many progress reports to make along the way (1 to 100, default 10).
    #[serde(default = "default_steps")]
    #[schema(minimum = 1, maximum = 100, default = 10)]
    pub steps: u32,
    /// Fail this many first attempts on purpose, to show retries (default 0).
    #[serde(default)]
    pub fail_first_attempts: u32,
}

fn default_steps() -> u32 {
    10
}

/// Output of `sleep`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SleepOutput {
    /// How long it waited.
    pub slept_ms: u64,
    /// Which attempt succeeded.
    pub attempt: i32,
}

impl ExecutionKind for Sleep {
    const NAME: &'static str = "sleep";
    type Input = SleepInput;
    type Output = SleepOutput;

    fn validate(&self, input: &SleepInput) -> Vec<FieldError> {
        let mut errors = Vec::new();
        if input.duration_ms > 86_400_000 {
            errors.push(
                FieldError::field("duration_ms").because("must be at most 86400000 (one day)"),
            );
        }
        if !(1..=100).contains(&input.steps) {
            errors.push(FieldError::field("steps").because("must be between 1 and 100"));
        }
        errors
    }

    fn describe(&self, input: &SleepInput) -> String {
        format!("Sleep {:.1} s", input.duration_ms as f64 / 1000.0)
    }

    async fn run(&self, input: SleepInput, context: JobContext) -> Result<SleepOutput, JobError> {
        if input.duration_ms > 0 {
            let step = Duration::from_millis(input.duration_ms) / input.steps;
            for done in 1..=input.steps {
                tokio::select! {
                    () = tokio::time::sleep(step) => {}
                    () = context.cancelled() => return Err(JobError::Cancelled),
                }
                let percent = u8::try_from(done * 100 / input.steps).unwrap_or(100);
                context
                    .report_progress(percent, &format!("slept {} of {} steps", done, input.steps))
                    .await?;
            }
        }
        if u32::try_from(context.attempt()).unwrap_or(u32::MAX) <= input.fail_first_attempts {
            return Err(JobError::Failed(format!(
                "failing attempt {} on purpose (fail_first_attempts = {})",
                context.attempt(),
                input.fail_first_attempts
            )));
        }
        Ok(SleepOutput {
            slept_ms: input.duration_ms,
            attempt: context.attempt(),
        })
    }
}
