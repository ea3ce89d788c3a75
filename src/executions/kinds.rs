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
use crate::executions::document;
use crate::shared::error::{FieldError, LocSegment};

/// The queue kinds run on unless they name another.
pub const DEFAULT_QUEUE: &str = "default";

/// The most bytes a kind's input may take as compact JSON unless the kind
/// says otherwise: plenty for parameters, too little to make a stored row
/// (and every read of it) a burden.
pub const DEFAULT_MAX_INPUT_BYTES: usize = 64 * 1024;

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
    /// The most bytes the input may take as compact JSON. Checked before the
    /// input is parsed, so an oversized one costs no per-element work and is
    /// never stored.
    const MAX_INPUT_BYTES: usize = DEFAULT_MAX_INPUT_BYTES;

    /// Rules beyond the input's shape; each error's `loc` is relative to `input`.
    /// (Every kind's strings are refused if they hold U+0000, which cannot be stored.)
    fn validate(&self, input: &Self::Input) -> Vec<FieldError>;

    /// The units of metered work this input asks for (`embed_texts`: one per
    /// text), spent from its owner's daily allowance for the kind when the
    /// deployment sets one; 0 for work nobody meters.
    fn cost(&self, _input: &Self::Input) -> u64 {
        0
    }

    /// What in this input only admins may ask for (a `sleep` over a minute),
    /// located relative to `input`; empty when anyone may submit it. Kept
    /// apart from [`validate`](Self::validate): the same input is valid for an
    /// admin.
    fn reserved_for_admins(&self, _input: &Self::Input) -> Vec<FieldError> {
        Vec::new()
    }

    /// A short description of this input, for generated names (`"Sleep 1.5 s"`).
    fn describe(&self, input: &Self::Input) -> String;

    /// The input's schema as this deployment checks it, for the OpenAPI
    /// document: the type's own schema unless the kind's bounds are
    /// configured (how many texts, which model), which a kind states here so
    /// that a generated client knows them too.
    fn input_schema(&self) -> RefOr<Schema> {
        Self::Input::schema()
    }

    /// Does the work.
    fn run(
        &self,
        input: Self::Input,
        context: JobContext,
    ) -> impl Future<Output = Result<Self::Output, JobError>> + Send;
}

/// An input that passed its kind's checks, with what the quotas need to know of it.
#[derive(Debug, Clone)]
pub struct CheckedInput {
    /// The input normalised (defaults filled in), as it is stored.
    pub value: Value,
    /// Its units of metered work ([`ExecutionKind::cost`]).
    pub cost: u64,
    /// What in it only admins may ask for, located from the request body.
    pub reserved_for_admins: Vec<FieldError>,
}

/// What the OpenAPI document says of one kind: its name, and its input's and
/// output's component names and schemas.
#[derive(Clone)]
pub struct KindSchemas {
    /// The name clients submit.
    pub name: &'static str,
    /// The input's component name and schema (as [`ExecutionKind::input_schema`] states it).
    pub input: (String, RefOr<Schema>),
    /// The output's component name and schema.
    pub output: (String, RefOr<Schema>),
    /// Whether only the service enqueues it ([`KindRegistry::register_internal`]):
    /// it is in the responses' union, not in the submissions'.
    pub internal: bool,
}

/// A kind with its types erased, as the registry holds it.
trait ErasedKind: Send + Sync {
    fn queue(&self) -> &'static str;
    fn check(&self, input: &Value) -> Result<CheckedInput, Vec<FieldError>>;
    fn cost(&self, input: &Value) -> u64;
    fn describe(&self, input: &Value) -> String;
    fn run(&self, input: Value, context: JobContext)
    -> BoxFuture<'static, Result<Value, JobError>>;
    fn schemas(&self) -> KindSchemas;
}

struct Erased<K>(Arc<K>);

impl<K: ExecutionKind> ErasedKind for Erased<K> {
    fn queue(&self) -> &'static str {
        K::QUEUE
    }

    fn check(&self, input: &Value) -> Result<CheckedInput, Vec<FieldError>> {
        if !fits_in(input, K::MAX_INPUT_BYTES) {
            return Err(vec![
                FieldError::body("input")
                    .because(format!(
                        "is larger than the {} bytes (as compact JSON) a {} input may take",
                        K::MAX_INPUT_BYTES,
                        K::NAME
                    ))
                    .kind("too_large"),
            ]);
        }
        let unstorable = strings_holding_nul(input);
        if !unstorable.is_empty() {
            return Err(located_in_input(unstorable));
        }
        let typed: K::Input = parse_nested_json(input, &["body", "input"])?;
        let errors = self.0.validate(&typed);
        if !errors.is_empty() {
            return Err(located_in_input(errors));
        }
        // Stored normalised (defaults filled in), so a worker reads exactly what was checked.
        let value = serde_json::to_value(&typed)
            .map_err(|error| vec![FieldError::body("input").because(error.to_string())])?;
        Ok(CheckedInput {
            value,
            cost: self.0.cost(&typed),
            reserved_for_admins: located_in_input(self.0.reserved_for_admins(&typed)),
        })
    }

    fn cost(&self, input: &Value) -> u64 {
        // A stored input was checked when it was submitted; one that no longer
        // parses fails its run without doing any metered work.
        serde_json::from_value::<K::Input>(input.clone()).map_or(0, |typed| self.0.cost(&typed))
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

    fn schemas(&self) -> KindSchemas {
        KindSchemas {
            name: K::NAME,
            input: (K::Input::name().into_owned(), self.0.input_schema()),
            output: (K::Output::name().into_owned(), K::Output::schema()),
            internal: false,
        }
    }
}

/// Prefixes errors located relative to an input with where the input sits.
fn located_in_input(mut errors: Vec<FieldError>) -> Vec<FieldError> {
    for error in &mut errors {
        error
            .loc
            .splice(0..0, [LocSegment::from("body"), LocSegment::from("input")]);
    }
    errors
}

/// The most strings holding U+0000 that one refusal lists.
const MAX_LISTED_NUL_STRINGS: usize = 20;

/// An error for each string in `value` that holds U+0000 (the first
/// [`MAX_LISTED_NUL_STRINGS`]), located relative to it: PostgreSQL's `jsonb`
/// cannot store that character, so such an input could never be enqueued.
fn strings_holding_nul(value: &Value) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut pending = vec![(value, Vec::<LocSegment>::new())];
    while let Some((value, loc)) = pending.pop() {
        if errors.len() == MAX_LISTED_NUL_STRINGS {
            break;
        }
        match value {
            Value::String(text) if text.contains('\0') => errors.push(FieldError::new(
                loc,
                "must not contain U+0000 (a NUL character)",
                "value_error",
            )),
            Value::Array(items) => {
                pending.extend(items.iter().enumerate().rev().map(|(index, item)| {
                    (item, [loc.as_slice(), &[LocSegment::Index(index)]].concat())
                }))
            }
            Value::Object(fields) => pending.extend(fields.iter().rev().map(|(key, item)| {
                (
                    item,
                    [loc.as_slice(), &[LocSegment::from(key.as_str())]].concat(),
                )
            })),
            _ => {}
        }
    }
    errors
}

/// Whether `value` takes at most `max_bytes` as compact JSON. Serialises into
/// a counter that gives up at the limit, so nothing is copied and an oversized
/// value is not even serialised whole.
fn fits_in(value: &Value, max_bytes: usize) -> bool {
    serde_json::to_writer(ByteBudget { left: max_bytes }, value).is_ok()
}

/// A writer that only counts, and fails once more than its budget was written.
struct ByteBudget {
    left: usize,
}

impl std::io::Write for ByteBudget {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.left = self
            .left
            .checked_sub(buf.len())
            .ok_or_else(|| std::io::Error::other("over the byte budget"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The kinds this deployment runs, by name.
#[derive(Clone, Default)]
pub struct KindRegistry {
    kinds: BTreeMap<&'static str, Arc<dyn ErasedKind>>,
    /// The kinds only the service enqueues ([`Self::register_internal`]).
    internal: Vec<&'static str>,
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

    /// Adds a kind that only the service enqueues, from inside its own
    /// transactions (`send_email`): clients cannot submit it, and only admins
    /// see its executions, whose inputs may hold what the owner must not read
    /// back (a password-reset link).
    #[must_use]
    pub fn register_internal<K: ExecutionKind>(mut self, kind: K) -> Self {
        self.internal.push(K::NAME);
        self.register(kind)
    }

    /// Every kind's name, sorted.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.keys().copied().collect()
    }

    /// The names clients may submit, sorted.
    pub fn submittable_names(&self) -> Vec<&'static str> {
        self.kinds
            .keys()
            .copied()
            .filter(|name| !self.is_internal(name))
            .collect()
    }

    /// Whether `kind` is one only the service enqueues (and only admins see).
    pub fn is_internal(&self, kind: &str) -> bool {
        self.internal.contains(&kind)
    }

    /// The kinds only the service enqueues.
    pub fn internal_names(&self) -> &[&'static str] {
        &self.internal
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

    /// Checks a client's `input` against `kind`'s size limit, schema and
    /// rules; returns it normalised, with its cost and what in it is reserved
    /// for admins. An internal kind is as unknown as an unregistered one.
    pub fn check_input(&self, kind: &str, input: &Value) -> Result<CheckedInput, Vec<FieldError>> {
        match self.kinds.get(kind).filter(|_| !self.is_internal(kind)) {
            Some(erased) => erased.check(input),
            None => Err(vec![self.unknown_kind(FieldError::body("kind"))]),
        }
    }

    /// Checks an input the service itself enqueues, of any kind (internal
    /// ones included), as strictly as a client's.
    pub fn check_service_input(
        &self,
        kind: &str,
        input: &Value,
    ) -> Result<CheckedInput, Vec<FieldError>> {
        match self.kinds.get(kind) {
            Some(erased) => erased.check(input),
            None => Err(vec![self.unknown_kind(FieldError::body("kind"))]),
        }
    }

    /// Whether `kind` is registered.
    pub fn knows(&self, kind: &str) -> bool {
        self.kinds.contains_key(kind)
    }

    /// The error of a field that names no kind a client may submit, listing those it may.
    pub fn unknown_kind(&self, field: FieldError) -> FieldError {
        field
            .because(format!(
                "is not a known kind (known: {})",
                self.submittable_names().join(", ")
            ))
            .kind("enum")
    }

    /// The units of metered work a stored `input` of `kind` asks for (0 for
    /// an unknown kind, which never runs).
    pub fn cost(&self, kind: &str, input: &Value) -> u64 {
        self.kinds.get(kind).map_or(0, |erased| erased.cost(input))
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

    /// The executions components of the OpenAPI document: every kind's input
    /// and output, and the unions over the kinds that submissions, name
    /// previews and responses are ([`document::components`]).
    pub fn schemas(&self) -> Vec<(String, RefOr<Schema>)> {
        let kinds: Vec<KindSchemas> = self
            .kinds
            .values()
            .map(|kind| {
                let mut schemas = kind.schemas();
                schemas.internal = self.is_internal(schemas.name);
                schemas
            })
            .collect();
        document::components(&kinds)
    }
}

/// Waits, reporting progress; can fail its first attempts on purpose. For
/// tests, demos and benchmarks. It does no useful work but holds a worker for
/// as long as asked, so sleeps over [`SLEEP_ANYONE_MAY_ASK_MS`] are for admins.
pub struct Sleep;

/// The longest sleep a normal user may submit (a minute): enough to watch
/// progress and cancellation, too short to hold a queue.
pub const SLEEP_ANYONE_MAY_ASK_MS: u64 = 60_000;

/// Input of `sleep`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SleepInput {
    /// How long to wait, in milliseconds (at most one day; over a minute is for admins).
    #[schema(maximum = 86_400_000, example = 1500)]
    pub duration_ms: u64,
    /// How many progress reports to make along the way (1 to 100, default 10).
    /// The schema states no `default`: generated clients would take a
    /// property with one for required.
    #[serde(default = "default_steps")]
    #[schema(minimum = 1, maximum = 100)]
    pub steps: u32,
    /// Fail this many first attempts on purpose, to show retries (0 to 25, as
    /// many as `max_attempts` may allow; default 0).
    #[serde(default)]
    #[schema(maximum = 25)]
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
        if input.fail_first_attempts > 25 {
            errors.push(
                FieldError::field("fail_first_attempts")
                    .because("must be at most 25 (the most attempts an execution may have)"),
            );
        }
        errors
    }

    fn reserved_for_admins(&self, input: &SleepInput) -> Vec<FieldError> {
        if input.duration_ms > SLEEP_ANYONE_MAY_ASK_MS {
            vec![
                FieldError::field("duration_ms")
                    .because(format!("over {SLEEP_ANYONE_MAY_ASK_MS} ms (a minute)")),
            ]
        } else {
            Vec::new()
        }
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_size_check_counts_compact_json_bytes_exactly() {
        let value = json!({"texts": ["é", "a\"b"], "n": 12});
        let bytes = serde_json::to_vec(&value)
            .map(|json| json.len())
            .unwrap_or(0);
        assert!(bytes > 0);
        assert!(fits_in(&value, bytes));
        assert!(!fits_in(&value, bytes - 1));
        assert!(!fits_in(
            &json!("x".repeat(100_000)),
            DEFAULT_MAX_INPUT_BYTES
        ));
    }

    #[test]
    fn strings_holding_nul_are_located_wherever_they_are() {
        let input = json!({"a": ["ok", "x\u{0}"], "b": {"c": "\u{0}"}, "d": 0});
        let errors = strings_holding_nul(&input);
        let locs: Vec<Vec<LocSegment>> = errors.into_iter().map(|error| error.loc).collect();
        assert_eq!(
            locs,
            [
                vec![LocSegment::from("a"), LocSegment::Index(1)],
                vec![LocSegment::from("b"), LocSegment::from("c")],
            ]
        );
        let many = Value::Array(vec![Value::from("\u{0}"); 100]);
        assert_eq!(strings_holding_nul(&many).len(), MAX_LISTED_NUL_STRINGS);
        assert!(strings_holding_nul(&json!({"fine": ["text", 1, null]})).is_empty());
    }

    #[test]
    fn clients_cannot_submit_an_internal_kind_but_the_service_can() {
        let registry = KindRegistry::new().register_internal(Sleep);
        let input = json!({"duration_ms": 1});
        let refused = registry
            .check_input("sleep", &input)
            .err()
            .unwrap_or_default();
        assert_eq!(refused.len(), 1);
        assert_eq!(
            refused[0].loc,
            vec![LocSegment::from("body"), LocSegment::from("kind")]
        );
        assert!(registry.check_service_input("sleep", &input).is_ok());
        assert!(registry.is_internal("sleep") && registry.knows("sleep"));
        assert!(registry.submittable_names().is_empty());
        assert_eq!(registry.names(), ["sleep"]);
    }

    #[test]
    fn a_minute_of_sleep_is_anyones_and_more_is_for_admins() {
        let registry = KindRegistry::new().register(Sleep);
        let reserved = |duration_ms: u64| {
            registry
                .check_input("sleep", &json!({"duration_ms": duration_ms}))
                .map(|checked| checked.reserved_for_admins)
                .unwrap_or_default()
        };
        assert!(reserved(SLEEP_ANYONE_MAY_ASK_MS).is_empty());
        let over = reserved(SLEEP_ANYONE_MAY_ASK_MS + 1);
        assert_eq!(over.len(), 1);
        assert_eq!(
            over[0].loc,
            ["body", "input", "duration_ms"]
                .map(LocSegment::from)
                .to_vec()
        );
        assert_eq!(registry.cost("sleep", &json!({"duration_ms": 1})), 0);
    }
}
