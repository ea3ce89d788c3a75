//! `embed_texts`: embedding a large list of texts as a durable execution. It runs
//! in chunks through the same batcher as the API (so interactive requests keep
//! getting turns), spends its owner's token budget like the API does (waiting
//! for it to refill rather than failing, so submitting executions is no way
//! around the limit), stores each chunk's vectors in one statement, reports
//! progress, stops between chunks when cancelled, and a retried attempt resumes
//! after the last stored chunk. Clients read the vectors page by page from
//! `GET /api/v1/inference/batches/{id}/embeddings`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;

use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ArrayItems, Schema};
use utoipa::{PartialSchema, ToSchema};
use uuid::Uuid;

use crate::core::platform::Platform;
use crate::executions::context::{JobContext, JobError};
use crate::executions::kinds::ExecutionKind;
use crate::executions::service as executions;
use crate::inference::input::{Input, InputLimits, text_input, token_bound};
use crate::inference::rate_limit::{Refusal, Reservation};
use crate::inference::repository::{self, StoredEmbedding};
use crate::inference::schemas::{BatchResultsPage, BatchResultsQuery};
use crate::inference::service::{self, Work, embedding_data};
use crate::inference::{EngineStatus, InferenceState, LoadedEngine};
use crate::shared::error::{AppError, FieldError, LocSegment};
use crate::shared::pagination::{fetch_limit, split_page};
use crate::users::models::User;

/// Texts per chunk: one engine batch's worth, and one insert.
const CHUNK: usize = 256;

/// How long a chunk waits before asking a full queue again.
const QUEUE_FULL_PAUSE: Duration = Duration::from_millis(100);

/// Longest a chunk sleeps before asking its owner's token budget again (tokens
/// given back by failed requests may come sooner than the refill).
const MAX_BUDGET_PAUSE: Duration = Duration::from_secs(5);

/// Most invalid texts listed in one 422 (the rest are summarised).
const MAX_LISTED_ERRORS: usize = 20;

/// Most vectors on one result page.
const MAX_PAGE: u32 = 1000;

/// The `embed_texts` kind; it embeds with the process's engine.
pub struct EmbedTexts {
    inference: InferenceState,
}

impl EmbedTexts {
    /// The kind, embedding with `inference`'s engine.
    pub fn new(inference: InferenceState) -> Self {
        Self { inference }
    }
}

/// Input of `embed_texts`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedTextsInput {
    /// The texts (1 to `INFERENCE_BATCH_JOB_MAX_TEXTS`, none empty).
    #[schema(min_items = 1, example = json!(["A man is eating food.", "A man rides a horse."]))]
    pub texts: Vec<String>,
    /// The model (`GET /api/v1/inference/models`; `<organisation>/<model>` is accepted too).
    #[schema(example = "all-MiniLM-L6-v2")]
    pub model: String,
    /// Cut over-long texts instead of failing (default `INFERENCE_TRUNCATE`).
    #[serde(default)]
    pub truncate: Option<bool>,
}

/// Output of `embed_texts`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EmbedTextsOutput {
    /// The model that produced the vectors.
    pub model: String,
    /// Vectors stored (one per text).
    pub count: usize,
    /// Length of every vector.
    pub dimensions: usize,
    /// Tokens the model read in all.
    pub prompt_tokens: i64,
    /// Where to read the vectors, page by page.
    #[schema(
        example = "/api/v1/inference/batches/0193a4c2-6f1e-7d6a-9c1b-2f0e8a7d5b31/embeddings"
    )]
    pub results: String,
}

impl ExecutionKind for EmbedTexts {
    const NAME: &'static str = "embed_texts";
    const QUEUE: &'static str = "inference";
    type Input = EmbedTextsInput;
    type Output = EmbedTextsOutput;
    /// Room for the largest job (`INFERENCE_BATCH_JOB_MAX_TEXTS` short texts);
    /// past `REQUEST_BODY_LIMIT_BYTES` (1 MiB by default) the body limit answers first.
    const MAX_INPUT_BYTES: usize = 8 * 1024 * 1024;

    fn validate(&self, input: &EmbedTextsInput) -> Vec<FieldError> {
        let max = self.inference.config.batch_job_max_texts;
        let mut errors = Vec::new();
        if input.texts.is_empty() || input.texts.len() > max {
            errors.push(FieldError::field("texts").because(format!(
                "must hold 1 to {max} texts (got {})",
                input.texts.len()
            )));
        }
        let empty: Vec<usize> = input
            .texts
            .iter()
            .enumerate()
            .filter(|(_, text)| text.is_empty())
            .map(|(index, _)| index)
            .collect();
        errors.extend(empty.iter().take(MAX_LISTED_ERRORS).map(|&index| {
            FieldError::field("texts")
                .at(index)
                .because("must not be empty")
        }));
        if empty.len() > MAX_LISTED_ERRORS {
            errors.push(
                FieldError::field("texts")
                    .because(format!("{} texts are empty in all", empty.len())),
            );
        }
        let model = self.inference.model_name();
        if !names_model(&input.model, &model) {
            errors.push(FieldError::field("model").because(format!(
                "is not a model of this server (it serves {model:?})"
            )));
        }
        errors
    }

    /// One unit per text, against `MAX_EMBED_TEXTS_PER_DAY`.
    fn cost(&self, input: &EmbedTextsInput) -> u64 {
        u64::try_from(input.texts.len()).unwrap_or(u64::MAX)
    }

    fn describe(&self, input: &EmbedTextsInput) -> String {
        format!("Embed {} texts with {}", input.texts.len(), input.model)
    }

    /// The type's schema with this deployment's bounds: at most
    /// `INFERENCE_BATCH_JOB_MAX_TEXTS` texts, none empty or holding U+0000, and
    /// the served model's names.
    fn input_schema(&self) -> RefOr<Schema> {
        let mut schema = EmbedTextsInput::schema();
        if let RefOr::T(Schema::Object(input)) = &mut schema {
            if let Some(RefOr::T(Schema::Array(texts))) = input.properties.get_mut("texts") {
                texts.max_items = Some(self.inference.config.batch_job_max_texts);
                if let ArrayItems::RefOrSchema(text) = &mut texts.items
                    && let RefOr::T(Schema::Object(text)) = text.as_mut()
                {
                    text.min_length = Some(1);
                    // PostgreSQL cannot store U+0000, so no kind's input may hold it.
                    text.pattern = Some(r"^[^\x00]*$".to_owned());
                }
            }
            if let Some(RefOr::T(Schema::Object(model))) = input.properties.get_mut("model") {
                model.pattern = Some(model_pattern(&self.inference.model_name()));
            }
        }
        schema
    }

    async fn run(
        &self,
        input: EmbedTextsInput,
        context: JobContext,
    ) -> Result<EmbedTextsOutput, JobError> {
        let runtime = ready_runtime(&self.inference)?;
        let truncate = input.truncate.unwrap_or(self.inference.config.truncate);
        let owner = owner_of(&context).await?;
        let run = ChunkRun {
            inference: &self.inference,
            runtime: &runtime,
            context: &context,
            owner,
            limits: service::input_limits(&self.inference, &runtime, truncate),
        };
        let tokens = embed_remaining(&run, &input.texts).await?;
        let execution_id = context.execution_id();
        Ok(EmbedTextsOutput {
            model: runtime.engine.model_name(),
            count: input.texts.len(),
            dimensions: runtime.engine.dimension(),
            prompt_tokens: tokens,
            results: format!("/api/v1/inference/batches/{execution_id}/embeddings"),
        })
    }
}

/// The names [`names_model`] accepts for `model`, as a pattern: the name
/// itself or anything ending in `/` and the name (a Hugging Face id), never
/// U+0000. A pattern rather than an enum, so that a client may pass the
/// `id` that `GET /inference/models` lists (a string) without a cast.
fn model_pattern(model: &str) -> String {
    let escaped: String = model
        .chars()
        .flat_map(|character| {
            let special = "\\^$.|?*+()[]{}".contains(character);
            special.then_some('\\').into_iter().chain([character])
        })
        .collect();
    format!(r"^([^\x00]*/)?{escaped}$")
}

/// The loaded engine, or a failed attempt saying why this worker has none.
fn ready_runtime(inference: &InferenceState) -> Result<Arc<LoadedEngine>, JobError> {
    match inference.status() {
        EngineStatus::Ready(runtime) => Ok(runtime),
        EngineStatus::Downloading | EngineStatus::Loading => Err(JobError::Failed(
            "the embedding model is still loading on this worker".into(),
        )),
        EngineStatus::Unavailable(reason) => Err(JobError::internal(
            "Inference is unavailable on this worker.",
            reason,
        )),
    }
}

/// What every chunk of one run shares: the engine, the attempt, whose budget
/// it spends and the bounds its texts are held to.
struct ChunkRun<'a> {
    inference: &'a InferenceState,
    runtime: &'a Arc<LoadedEngine>,
    context: &'a JobContext,
    owner: Uuid,
    limits: InputLimits,
}

/// The user who submitted the running execution.
async fn owner_of(context: &JobContext) -> Result<Uuid, JobError> {
    let mut conn = context.pool().get().await.map_err(failed)?;
    repository::owner_of(&mut conn, context.execution_id())
        .await
        .map_err(failed)?
        .ok_or_else(|| JobError::Failed("the execution no longer exists".into()))
}

/// Embeds and stores `texts` chunk by chunk, starting after the chunks an
/// earlier attempt stored, reporting progress and stopping between chunks when
/// cancelled. Returns the tokens read over all attempts.
async fn embed_remaining(run: &ChunkRun<'_>, texts: &[String]) -> Result<i64, JobError> {
    let context = run.context;
    let (mut done, mut tokens) = resume_point(context).await?;
    let total = texts.len();
    while done < total {
        if context.is_cancelled() {
            return Err(JobError::Cancelled);
        }
        let end = (done + CHUNK).min(total);
        tokens += store_chunk(run, &texts[done..end], done).await?;
        done = end;
        let percent = u8::try_from(done * 100 / total).unwrap_or(100);
        context
            .report_progress(percent, &format!("{done} of {total} texts embedded"))
            .await?;
    }
    Ok(tokens)
}

/// Texts already stored by earlier attempts and the tokens they read: where a
/// retried attempt resumes.
async fn resume_point(context: &JobContext) -> Result<(usize, i64), JobError> {
    let mut conn = context.pool().get().await.map_err(JobError::database)?;
    let (stored, tokens) = repository::progress(&mut conn, context.execution_id())
        .await
        .map_err(JobError::database)?;
    Ok((usize::try_from(stored).unwrap_or(0), tokens))
}

/// Embeds one chunk (`texts`, starting at index `first`) and stores its
/// vectors in one statement, only while this attempt holds its claim;
/// returns the tokens it read.
async fn store_chunk(run: &ChunkRun<'_>, texts: &[String], first: usize) -> Result<i64, JobError> {
    let context = run.context;
    let rows = embed_chunk(run, context.execution_id(), texts, first).await?;
    let tokens = rows.iter().map(|row| i64::from(row.tokens)).sum();
    // Fenced: a worker that lost its claim stores nothing beside the new attempt.
    context
        .fenced_transaction(move |conn| {
            async move { repository::insert_chunk(conn, &rows).await }.boxed()
        })
        .await?;
    Ok(tokens)
}

/// Embeds `texts` (which start at index `first`) on the owner's budget,
/// waiting while the budget is spent or the queue is full.
async fn embed_chunk(
    run: &ChunkRun<'_>,
    execution_id: Uuid,
    texts: &[String],
    first: usize,
) -> Result<Vec<StoredEmbedding>, JobError> {
    let locate =
        move |index: usize| vec![LocSegment::from("texts"), LocSegment::Index(first + index)];
    let inputs = chunk_inputs(texts, first, &run.limits)?;
    let embedded = loop {
        let reservation = reserve_waiting(run, &inputs).await?;
        let work = Work {
            inputs: inputs.clone(),
            truncate: run.limits.truncate,
            locate: &locate,
            max_total_tokens: None,
        };
        match service::embed(run.inference, run.runtime, reservation, work).await {
            Err(AppError::Unavailable {
                code: "inference_overloaded",
                ..
            }) => pause(run.context, QUEUE_FULL_PAUSE).await?,
            Err(AppError::Validation(errors)) => return Err(JobError::Failed(describe(&errors))),
            other => break other.map_err(failed)?,
        }
    };
    let rows = embedded
        .vectors
        .into_iter()
        .zip(embedded.token_counts)
        .enumerate()
        .map(|(offset, (embedding, tokens))| StoredEmbedding {
            execution_id,
            position: i32::try_from(first + offset).unwrap_or(i32::MAX),
            tokens: i32::try_from(tokens).unwrap_or(i32::MAX),
            embedding,
        })
        .collect();
    Ok(rows)
}

/// A chunk's texts as bounded inputs (a text past the byte bound fails the
/// run unless truncating, as the API refuses it).
fn chunk_inputs(
    texts: &[String],
    first: usize,
    limits: &InputLimits,
) -> Result<Vec<Input>, JobError> {
    let mut errors = Vec::new();
    let mut inputs = Vec::with_capacity(texts.len());
    for (offset, text) in texts.iter().enumerate() {
        match text_input(text, limits, FieldError::field("texts").at(first + offset)) {
            Ok(input) => inputs.push(input),
            Err(error) => errors.push(error),
        }
    }
    if errors.is_empty() {
        Ok(inputs)
    } else {
        Err(JobError::Failed(describe(&errors)))
    }
}

/// Reserves the most tokens `inputs` can cost from the owner's budget,
/// waiting (bounded by the execution's timeout, ended by cancellation) while it
/// is spent.
async fn reserve_waiting(run: &ChunkRun<'_>, inputs: &[Input]) -> Result<Reservation, JobError> {
    let tokens = inputs
        .iter()
        .map(|input| token_bound(input, run.limits.max_tokens))
        .sum();
    loop {
        match run.inference.limiter.reserve(run.owner, tokens) {
            Ok(reservation) => return Ok(reservation),
            Err(Refusal::Exhausted { wait }) => {
                pause(run.context, wait.min(MAX_BUDGET_PAUSE)).await?;
            }
            Err(Refusal::Crowded) => pause(run.context, QUEUE_FULL_PAUSE).await?,
        }
    }
}

/// Sleeps for `how_long`, or ends the run when it is asked to stop meanwhile.
async fn pause(context: &JobContext, how_long: Duration) -> Result<(), JobError> {
    tokio::select! {
        () = tokio::time::sleep(how_long) => Ok(()),
        () = context.cancelled() => Err(JobError::Cancelled),
    }
}

/// `GET /inference/batches/{id}/embeddings`: one page of an `embed_texts` run's vectors.
pub async fn results_page(
    platform: &Platform,
    user: &User,
    execution_id: Uuid,
    query: &BatchResultsQuery,
) -> Result<BatchResultsPage, AppError> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(AppError::Validation(vec![
            FieldError::query("limit").because(format!("must be between 1 and {MAX_PAGE}")),
        ]));
    }
    let execution = executions::get(platform, user, execution_id).await?;
    if execution.kind != EmbedTexts::NAME {
        return Err(AppError::NotFound(format!(
            "Execution {execution_id} is a {} execution, not embed_texts.",
            execution.kind
        )));
    }
    let model = execution.input["model"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut conn = platform.pool.get().await?;
    let rows = repository::page(&mut conn, execution_id, query.after, fetch_limit(limit)).await?;
    let (rows, has_more) = split_page(rows, limit);
    let format = query.encoding_format.unwrap_or_default();
    let next_after = has_more
        .then(|| rows.last().map(|row| row.position))
        .flatten();
    Ok(BatchResultsPage {
        object: "list",
        data: rows
            .into_iter()
            .map(|row| {
                embedding_data(
                    usize::try_from(row.position).unwrap_or(0),
                    row.embedding,
                    format,
                )
            })
            .collect(),
        model,
        next_after,
    })
}

/// Whether `requested` names `model` (by its name or its Hugging Face id).
pub fn names_model(requested: &str, model: &str) -> bool {
    requested == model
        || requested
            .rsplit_once('/')
            .is_some_and(|(_, name)| name == model)
}

/// The field errors of a refused chunk as one message: the first
/// [`MAX_LISTED_ERRORS`], then how many more, so a stored error stays small.
fn describe(errors: &[FieldError]) -> String {
    let mut message = errors
        .iter()
        .take(MAX_LISTED_ERRORS)
        .map(|error| {
            let place: Vec<String> = error
                .loc
                .iter()
                .map(|segment| match segment {
                    LocSegment::Key(key) => key.clone(),
                    LocSegment::Index(index) => index.to_string(),
                })
                .collect();
            format!("{}: {}", place.join("."), error.msg)
        })
        .collect::<Vec<_>>()
        .join("; ");
    if errors.len() > MAX_LISTED_ERRORS {
        message.push_str(&format!("; and {} more", errors.len() - MAX_LISTED_ERRORS));
    }
    message
}

/// An embedding failure: clients see a stable message, the log the cause.
fn failed(error: impl std::fmt::Display) -> JobError {
    JobError::internal("The texts could not be embedded.", error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_model_pattern_escapes_the_name() {
        assert_eq!(
            model_pattern("bge-small-en-v1.5"),
            r"^([^\x00]*/)?bge-small-en-v1\.5$"
        );
        assert_eq!(model_pattern("a+b(c)"), r"^([^\x00]*/)?a\+b\(c\)$");
    }

    #[test]
    fn a_refused_chunk_lists_twenty_errors_and_counts_the_rest() {
        let errors: Vec<FieldError> = (0..256)
            .map(|index| FieldError::field("texts").at(index).because("is too long"))
            .collect();
        let message = describe(&errors);
        assert!(
            message.starts_with("texts.0: is too long; texts.1: "),
            "{message}"
        );
        assert!(
            message.contains("texts.19: is too long; and 236 more"),
            "{message}"
        );
        assert!(!message.contains("texts.20:"), "{message}");
        assert_eq!(
            describe(&errors[..2]),
            "texts.0: is too long; texts.1: is too long"
        );
    }
}
