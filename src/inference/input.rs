//! What a client may send as `input`, parsed once into token sequences, every
//! bad element located: OpenAI's four shapes of `input` are read here, texts
//! are tokenized off the async runtime, and the length rule is applied, so the
//! service only ever hands checked token ids to the batcher.

use std::sync::Arc;

use serde_json::Value;

use crate::inference::LoadedEngine;
use crate::inference::engine::{EmbeddingEngine, EngineError};
use crate::shared::error::{AppError, FieldError, LocSegment};

/// One input as the client sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Text, to be tokenized.
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
}

/// Names input `index` in an error message; each caller knows where its
/// inputs sit (`body.input.3`, `body.targets.0`, `texts.250`).
pub type Locate<'a> = &'a (dyn Fn(usize) -> Vec<LocSegment> + Sync);

/// Token ids of one input and whether they were cut to the model's length.
type Sequence = (Vec<u32>, bool);

/// Reads OpenAI's `input`: a string, an array of strings, an array of token ids,
/// or an array of arrays of token ids, naming every element that is wrong.
pub fn parse_input(
    value: &Value,
    max_inputs: usize,
    vocab: usize,
) -> Result<Vec<Input>, Vec<FieldError>> {
    match value {
        Value::String(text) if text.is_empty() => Err(vec![whole_input_empty()]),
        Value::String(text) => Ok(vec![Input::Text(text.clone())]),
        Value::Array(items) => parse_array(items, max_inputs, vocab),
        _ => Err(vec![FieldError::body("input").because(
            "must be a string, an array of strings, an array of token ids or an array of \
             arrays of token ids",
        )]),
    }
}

/// Locates input `index` of an embeddings request (`input` itself when it was
/// one string), for errors found after parsing (an input that is too long).
pub fn input_loc(single: bool) -> impl Fn(usize) -> Vec<LocSegment> + Sync {
    move |index| {
        let mut loc = vec![LocSegment::from("body"), LocSegment::from("input")];
        if !single {
            loc.push(LocSegment::Index(index));
        }
        loc
    }
}

/// Token ids of every input, cut to the model's length or refused (422 naming
/// each input that is too long, unless `truncate` allows cutting it).
pub async fn tokenize(
    runtime: &Arc<LoadedEngine>,
    inputs: Vec<Input>,
    truncate: bool,
    locate: Locate<'_>,
) -> Result<Vec<Vec<u32>>, AppError> {
    let engine = runtime.engine.clone();
    let max_tokens = engine.config().max_seq_length;
    let tokenized = tokio::task::spawn_blocking(move || tokenize_blocking(&engine, inputs))
        .await
        .map_err(AppError::internal)?
        .map_err(|error: EngineError| AppError::internal(error))?;
    if !truncate {
        let errors = too_long(&tokenized, max_tokens, locate);
        if !errors.is_empty() {
            return Err(AppError::Validation(errors));
        }
    }
    Ok(tokenized.into_iter().map(|(ids, _)| ids).collect())
}

/// An array `input`: one token sequence, or a list of texts or token sequences.
fn parse_array(
    items: &[Value],
    max_inputs: usize,
    vocab: usize,
) -> Result<Vec<Input>, Vec<FieldError>> {
    if items.is_empty() {
        return Err(vec![whole_input_empty()]);
    }
    if items.iter().all(Value::is_number) {
        let at = |index: usize| FieldError::body("input").at(index);
        return token_ids(items, vocab, at).map(|ids| vec![Input::Tokens(ids)]);
    }
    if items.len() > max_inputs {
        return Err(vec![FieldError::body("input").because(format!(
            "holds {} inputs; at most {max_inputs} are allowed",
            items.len()
        ))]);
    }
    let mut inputs = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match parse_item(index, item, vocab) {
            Ok(input) => inputs.push(input),
            Err(bad) => errors.extend(bad),
        }
    }
    if kinds_mixed(&inputs) {
        errors.push(
            FieldError::body("input")
                .because("must hold only strings or only token arrays, not both"),
        );
    }
    if errors.is_empty() {
        Ok(inputs)
    } else {
        Err(errors)
    }
}

/// Element `index` of a list `input`: a text or a token sequence, not empty.
fn parse_item(index: usize, item: &Value, vocab: usize) -> Result<Input, Vec<FieldError>> {
    let here = || FieldError::body("input").at(index);
    match item {
        Value::String(text) if text.is_empty() => Err(vec![here().because("must not be empty")]),
        Value::String(text) => Ok(Input::Text(text.clone())),
        Value::Array(ids) if ids.is_empty() => Err(vec![here().because("must not be empty")]),
        Value::Array(ids) => token_ids(ids, vocab, |id| here().at(id)).map(Input::Tokens),
        _ => Err(vec![
            here().because("must be a string or an array of token ids"),
        ]),
    }
}

/// Whether a list `input` holds both texts and token sequences.
fn kinds_mixed(inputs: &[Input]) -> bool {
    inputs.windows(2).any(|pair| {
        matches!(
            pair,
            [Input::Text(_), Input::Tokens(_)] | [Input::Tokens(_), Input::Text(_)]
        )
    })
}

/// The 422 entry for an empty `input` (`""` or `[]`).
fn whole_input_empty() -> FieldError {
    FieldError::body("input").because("must not be empty")
}

/// Token ids from JSON numbers, each an integer inside the vocabulary; `at`
/// locates the number at an index.
fn token_ids(
    items: &[Value],
    vocab: usize,
    at: impl Fn(usize) -> FieldError,
) -> Result<Vec<u32>, Vec<FieldError>> {
    let mut ids = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match item.as_u64().and_then(|id| u32::try_from(id).ok()) {
            Some(id) if (id as usize) < vocab => ids.push(id),
            _ => errors.push(at(index).because(format!(
                "must be a token id from 0 to {}",
                vocab.saturating_sub(1)
            ))),
        }
    }
    if errors.is_empty() {
        Ok(ids)
    } else {
        Err(errors)
    }
}

/// Tokenizes the texts among `inputs` in one engine call and cuts token inputs
/// to the model's length, marking each input that was cut. Blocks: run it off
/// the async runtime.
fn tokenize_blocking(
    engine: &EmbeddingEngine,
    inputs: Vec<Input>,
) -> Result<Vec<Sequence>, EngineError> {
    let max_tokens = engine.config().max_seq_length;
    let texts: Vec<&str> = inputs
        .iter()
        .filter_map(|input| match input {
            Input::Text(text) => Some(text.as_str()),
            Input::Tokens(_) => None,
        })
        .collect();
    let mut texts = engine.tokenize_marking_truncation(&texts)?.into_iter();
    Ok(inputs
        .into_iter()
        .map(|input| match input {
            Input::Text(_) => texts.next().map_or((Vec::new(), false), |tokenized| {
                (tokenized.ids, tokenized.truncated)
            }),
            Input::Tokens(mut ids) => {
                let too_long = ids.len() > max_tokens;
                ids.truncate(max_tokens);
                (ids, too_long)
            }
        })
        .collect())
}

/// A 422 entry for every input that was longer than the model reads.
fn too_long(tokenized: &[Sequence], max_tokens: usize, locate: Locate<'_>) -> Vec<FieldError> {
    tokenized
        .iter()
        .enumerate()
        .filter(|(_, (_, cut))| *cut)
        .map(|(index, _)| {
            FieldError::new(
                locate(index),
                format!(
                    "is longer than the {max_tokens} tokens this model reads; shorten it or \
                     send \"truncate\": true to cut it"
                ),
                "too_long",
            )
        })
        .collect()
}
