//! What a client may send as `input`, parsed once into bounded inputs, every
//! bad element located: OpenAI's four shapes of `input` are read here, the
//! cheap bounds (how many inputs, how long each) are checked before anything
//! per element, texts are tokenized off the async runtime under bounded
//! concurrency, and the length rule is applied, so the service only ever hands
//! checked token ids to the batcher.

use std::sync::Arc;

use serde_json::Value;

use crate::inference::LoadedEngine;
use crate::inference::engine::{EmbeddingEngine, EngineError};
use crate::inference::slots::{BlockingSlots, SlotError};
use crate::shared::error::{AppError, FieldError, LocSegment};

/// Most bytes of text allowed per token the model reads. Ordinary text is 3 to
/// 6 bytes a token (a CJK character is 3 bytes and a token of its own); 32 is
/// far past any real text, so a text longer than `max_seq_length * 32` bytes
/// certainly holds more tokens than the model reads and is refused (or cut to
/// that many bytes) without tokenizing it: a 1 MB string never reaches the
/// tokenizer whole.
pub const MAX_BYTES_PER_TOKEN: usize = 32;

/// One input as the client sent it (a text already cut to its byte bound when
/// truncation is on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Text, to be tokenized.
    Text(String),
    /// Token ids, used as they are.
    Tokens(Vec<u32>),
}

/// The bounds inputs are checked against, from the settings and the model.
#[derive(Debug, Clone, Copy)]
pub struct InputLimits {
    /// Most inputs in one request.
    pub max_inputs: usize,
    /// Most tokens the model reads per input (`max_seq_length`).
    pub max_tokens: usize,
    /// Token ids must be below this (the vocabulary's size).
    pub vocab: usize,
    /// Cut over-long inputs instead of refusing them.
    pub truncate: bool,
}

impl InputLimits {
    /// Most bytes of one text that are ever tokenized (see [`MAX_BYTES_PER_TOKEN`]).
    pub fn max_text_bytes(&self) -> usize {
        self.max_tokens.saturating_mul(MAX_BYTES_PER_TOKEN)
    }
}

/// Names input `index` in an error message; each caller knows where its
/// inputs sit (`body.input.3`, `body.targets.0`, `texts.250`).
pub type Locate<'a> = &'a (dyn Fn(usize) -> Vec<LocSegment> + Sync);

/// Token ids of one input, and whether they were cut to the model's length.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    /// The ids the model will read.
    pub ids: Vec<u32>,
    /// Whether the input held more than the model reads.
    pub cut: bool,
}

/// A text's token ids as the model reads them, and how many tokens the whole
/// text holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counted {
    /// What the model reads.
    pub sequence: Sequence,
    /// Tokens of the whole text, special tokens included.
    pub whole_len: usize,
}

/// A text to tokenize for `POST /inference/tokenize`, cut to the byte bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BoundedText {
    /// The text (its first [`InputLimits::max_text_bytes`] bytes at most).
    pub text: String,
    /// Whether it is the whole text the client sent.
    pub whole: bool,
}

/// Reads OpenAI's `input`: a string, an array of strings, an array of token ids,
/// or an array of arrays of token ids, naming every element that is wrong.
pub fn parse_input(value: &Value, limits: &InputLimits) -> Result<Vec<Input>, Vec<FieldError>> {
    match value {
        Value::String(text) if text.is_empty() => Err(vec![whole_input_empty()]),
        Value::String(text) => text_input(text, limits, FieldError::body("input"))
            .map(|input| vec![input])
            .map_err(|error| vec![error]),
        Value::Array(items) => parse_array(items, limits),
        _ => Err(vec![FieldError::body("input").because(
            "must be a string, an array of strings, an array of token ids or an array of \
             arrays of token ids",
        )]),
    }
}

/// One text, bounded in bytes before it is ever tokenized: over
/// [`InputLimits::max_text_bytes`] it is cut there (on a character boundary)
/// when truncating, else refused with an error at `here`.
pub fn text_input(text: &str, limits: &InputLimits, here: FieldError) -> Result<Input, FieldError> {
    let max_bytes = limits.max_text_bytes();
    if text.len() <= max_bytes || limits.truncate {
        return Ok(Input::Text(cut_to(text, max_bytes).to_owned()));
    }
    Err(here.kind("too_long").because(format!(
        "is {} bytes, far more than the {} tokens this model reads (texts over {max_bytes} \
         bytes are refused without reading them); shorten it or send \"truncate\": true to cut it",
        text.len(),
        limits.max_tokens
    )))
}

/// Reads the `input` of a tokenize request: a text or an array of texts (the
/// count checked before any element), none empty. A text over the byte bound
/// is cut there, never refused: tokenizing reports a text's length rather than
/// enforcing it, and what lies past the bound is surely more than the model reads.
pub fn parse_texts(
    value: &Value,
    limits: &InputLimits,
) -> Result<Vec<BoundedText>, Vec<FieldError>> {
    let max_bytes = limits.max_text_bytes();
    let bounded = |text: &str| BoundedText {
        text: cut_to(text, max_bytes).to_owned(),
        whole: text.len() <= max_bytes,
    };
    let items = match value {
        Value::String(text) if text.is_empty() => return Err(vec![whole_input_empty()]),
        Value::String(text) => return Ok(vec![bounded(text)]),
        Value::Array(items) if items.is_empty() => return Err(vec![whole_input_empty()]),
        Value::Array(items) if items.len() > limits.max_inputs => {
            return Err(vec![too_many_inputs(items.len(), limits.max_inputs)]);
        }
        Value::Array(items) => items,
        _ => {
            return Err(vec![
                FieldError::body("input").because("must be a string or an array of strings"),
            ]);
        }
    };
    let mut texts = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let here = || FieldError::body("input").at(index);
        match item {
            Value::String(text) if text.is_empty() => {
                errors.push(here().because("must not be empty"));
            }
            Value::String(text) => texts.push(bounded(text)),
            _ => errors.push(here().because("must be a string")),
        }
    }
    if errors.is_empty() {
        Ok(texts)
    } else {
        Err(errors)
    }
}

/// Most tokens a text of `bytes` bytes can yield when tokenized whole: one a
/// byte plus the two special tokens.
pub fn whole_text_token_bound(bytes: usize) -> usize {
    bytes.saturating_add(2)
}

/// Most tokens `input` can cost: token ids are counted; a text yields at most
/// one token per byte plus the two special tokens, and never more than the
/// model reads (a longer one is cut, or refused).
pub fn token_bound(input: &Input, max_tokens: usize) -> usize {
    match input {
        Input::Tokens(ids) => ids.len(),
        Input::Text(text) => whole_text_token_bound(text.len()).min(max_tokens),
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

/// Text bytes up to which a request is tokenized on the async runtime itself
/// rather than in a slot: one sentence takes the tokenizer ~30 µs, about what
/// the trip to a blocking thread and back costs, and 256 bytes stay under
/// ~100 µs, as short as the other steps of a request. Under load this saves
/// two thread wake-ups per request, CPU the engine's threads then have.
const INLINE_TEXT_BYTES: usize = 256;

/// Token ids of every input, each marked when it was cut to the model's
/// length; tokenizing runs on a blocking thread once one of `slots` is free
/// (503 `inference_overloaded` when too many requests are waiting already),
/// or at once for a few short texts (`INLINE_TEXT_BYTES`).
pub async fn tokenize(
    slots: &BlockingSlots,
    runtime: &Arc<LoadedEngine>,
    inputs: Vec<Input>,
) -> Result<Vec<Sequence>, AppError> {
    let engine = runtime.engine.clone();
    let text_bytes = inputs
        .iter()
        .map(|input| match input {
            Input::Text(text) => text.len(),
            Input::Tokens(_) => 0,
        })
        .sum();
    in_slot(slots, text_bytes, move || {
        tokenize_blocking(&engine, inputs)
    })
    .await
}

/// Each text's token ids as the model reads them and its whole token count,
/// tokenized in one of `slots` like [`tokenize`].
pub async fn tokenize_counting(
    slots: &BlockingSlots,
    runtime: &Arc<LoadedEngine>,
    texts: Vec<String>,
) -> Result<Vec<Counted>, AppError> {
    let engine = runtime.engine.clone();
    // Each text is tokenized twice (whole, then as the model reads it).
    let text_bytes = 2 * texts.iter().map(String::len).sum::<usize>();
    in_slot(slots, text_bytes, move || {
        let whole_lens = engine.count_tokens(&texts)?;
        let inputs = texts.into_iter().map(Input::Text).collect();
        let sequences = tokenize_blocking(&engine, inputs)?;
        Ok(sequences
            .into_iter()
            .zip(whole_lens)
            .map(|(sequence, whole_len)| Counted {
                sequence,
                whole_len,
            })
            .collect())
    })
    .await
}

/// Runs tokenizing `job`, over `text_bytes` bytes of text, in one of `slots`
/// (503 `inference_overloaded` when too many requests are waiting already),
/// or here when the text is short enough (`INLINE_TEXT_BYTES`).
async fn in_slot<T: Send + 'static>(
    slots: &BlockingSlots,
    text_bytes: usize,
    job: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
) -> Result<T, AppError> {
    let outcome = if text_bytes <= INLINE_TEXT_BYTES {
        Ok(job())
    } else {
        slots.run(job).await
    };
    match outcome {
        Ok(tokenized) => tokenized.map_err(AppError::internal),
        Err(SlotError::Full(_)) => {
            metrics::counter!("inference_rejections_total", "reason" => "tokenizer_busy")
                .increment(1);
            Err(AppError::Unavailable {
                code: "inference_overloaded",
                detail: "Too many requests are being tokenized; try again shortly.".to_owned(),
                retry_after: Some(std::time::Duration::from_secs(1)),
            })
        }
        Err(error @ SlotError::Failed(_)) => Err(AppError::internal(error)),
    }
}

/// A 422 entry for every input that was longer than the model reads.
pub fn too_long(sequences: &[Sequence], max_tokens: usize, locate: Locate<'_>) -> Vec<FieldError> {
    sequences
        .iter()
        .enumerate()
        .filter(|(_, sequence)| sequence.cut)
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

/// An array `input`: one token sequence, or a list of texts or token sequences.
/// The count is checked before any element is read.
fn parse_array(items: &[Value], limits: &InputLimits) -> Result<Vec<Input>, Vec<FieldError>> {
    if items.is_empty() {
        return Err(vec![whole_input_empty()]);
    }
    if items.iter().all(Value::is_number) {
        return token_sequence(items, limits, FieldError::body("input"))
            .map(|ids| vec![Input::Tokens(ids)]);
    }
    if items.len() > limits.max_inputs {
        return Err(vec![too_many_inputs(items.len(), limits.max_inputs)]);
    }
    let mut inputs = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, item) in items.iter().enumerate() {
        match parse_item(index, item, limits) {
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
fn parse_item(index: usize, item: &Value, limits: &InputLimits) -> Result<Input, Vec<FieldError>> {
    let here = || FieldError::body("input").at(index);
    match item {
        Value::String(text) if text.is_empty() => Err(vec![here().because("must not be empty")]),
        Value::String(text) => text_input(text, limits, here()).map_err(|error| vec![error]),
        Value::Array(ids) if ids.is_empty() => Err(vec![here().because("must not be empty")]),
        Value::Array(ids) => token_sequence(ids, limits, here()).map(Input::Tokens),
        _ => Err(vec![
            here().because("must be a string or an array of token ids"),
        ]),
    }
}

/// One sequence of token ids, its length checked before its ids: longer than
/// the model reads, it is refused whole (one error at `here`) or, when
/// truncating, cut before the rest is read.
fn token_sequence(
    items: &[Value],
    limits: &InputLimits,
    here: FieldError,
) -> Result<Vec<u32>, Vec<FieldError>> {
    if items.len() > limits.max_tokens && !limits.truncate {
        return Err(vec![here.kind("too_long").because(format!(
            "holds {} token ids, more than the {} this model reads; shorten it or send \
             \"truncate\": true to cut it",
            items.len(),
            limits.max_tokens
        ))]);
    }
    let kept = &items[..items.len().min(limits.max_tokens)];
    token_ids(kept, limits.vocab, |index| here.clone().at(index))
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

/// The 422 entry for an `input` holding more than `max` inputs.
fn too_many_inputs(count: usize, max: usize) -> FieldError {
    FieldError::body("input").because(format!("holds {count} inputs; at most {max} are allowed"))
}

/// The longest prefix of `text` within `max_bytes` that ends on a character boundary.
fn cut_to(text: &str, max_bytes: usize) -> &str {
    &text[..text.floor_char_boundary(max_bytes)]
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
        match token_id(item) {
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

/// A JSON number as a token id, if it is a whole number that fits one: JSON
/// (and JSON Schema's `integer`) count `6771.0` as the integer 6771, so it is
/// accepted like `6771`.
fn token_id(item: &Value) -> Option<u32> {
    if let Some(id) = item.as_u64() {
        return u32::try_from(id).ok();
    }
    let number = item.as_f64()?;
    let whole = number.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(&number);
    // Checked just above: a whole number within u32's range converts exactly.
    whole.then_some(number as u32)
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
            Input::Text(_) => texts.next().map_or(
                Sequence {
                    ids: Vec::new(),
                    cut: false,
                },
                |tokenized| Sequence {
                    ids: tokenized.ids,
                    cut: tokenized.truncated,
                },
            ),
            Input::Tokens(mut ids) => {
                let cut = ids.len() > max_tokens;
                ids.truncate(max_tokens);
                Sequence { ids, cut }
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const LIMITS: InputLimits = InputLimits {
        max_inputs: 3,
        max_tokens: 4,
        vocab: 10,
        truncate: false,
    };

    fn errors_of(value: Value, limits: &InputLimits) -> Vec<FieldError> {
        parse_input(&value, limits).expect_err("the input is refused")
    }

    #[test]
    fn an_over_long_token_array_is_refused_whole_before_its_ids_are_read() {
        let ids = vec![json!(-1); 250_000];
        let errors = errors_of(Value::Array(ids.clone()), &LIMITS);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert_eq!(errors[0].kind, "too_long");
        let nested = errors_of(json!([[1, 2], ids]), &LIMITS);
        assert_eq!(nested.len(), 1, "{nested:?}");
        assert_eq!(nested[0].loc, vec!["body".into(), "input".into(), 1.into()]);
    }

    #[test]
    fn truncation_cuts_token_arrays_before_reading_the_rest() {
        let limits = InputLimits {
            truncate: true,
            ..LIMITS
        };
        // Only the ids the model reads are read: the bad ones past them are never seen.
        let parsed = parse_input(&json!([1, 2, 3, 4, -1, 99]), &limits).unwrap();
        assert_eq!(parsed, vec![Input::Tokens(vec![1, 2, 3, 4])]);
    }

    #[test]
    fn the_input_count_is_checked_before_any_element() {
        let items = vec![json!(""); 1000];
        let errors = errors_of(Value::Array(items), &LIMITS);
        assert_eq!(errors.len(), 1, "one error for the count: {errors:?}");
        assert!(errors[0].msg.contains("at most 3"), "{errors:?}");
    }

    #[test]
    fn texts_past_the_byte_bound_are_refused_or_cut_on_a_char_boundary() {
        let bound = LIMITS.max_text_bytes();
        assert_eq!(bound, 4 * MAX_BYTES_PER_TOKEN);
        let fits = "a".repeat(bound);
        assert_eq!(
            parse_input(&json!(fits), &LIMITS).unwrap(),
            vec![Input::Text(fits.clone())]
        );
        // "é" is two bytes: a bound that falls inside one cuts before it.
        let long = format!("a{}", "é".repeat(bound));
        let errors = errors_of(json!([long]), &LIMITS);
        assert_eq!(errors[0].kind, "too_long");
        assert_eq!(errors[0].loc, vec!["body".into(), "input".into(), 0.into()]);
        let limits = InputLimits {
            truncate: true,
            ..LIMITS
        };
        let Input::Text(cut) = parse_input(&json!(long), &limits).unwrap().remove(0) else {
            panic!("a text stays a text");
        };
        assert_eq!(
            cut.len(),
            bound - 1,
            "the last whole character before the bound"
        );
        assert!(long.starts_with(&cut));
    }

    #[test]
    fn texts_to_tokenize_are_cut_to_the_byte_bound_never_refused_for_length() {
        let bound = LIMITS.max_text_bytes();
        let long = format!("a{}", "é".repeat(bound));
        let texts = parse_texts(&json!(["short", long]), &LIMITS).unwrap();
        assert_eq!(
            texts[0],
            BoundedText {
                text: "short".into(),
                whole: true
            }
        );
        assert!(!texts[1].whole);
        assert_eq!(
            texts[1].text.len(),
            bound - 1,
            "cut on a character boundary"
        );
        assert!(long.starts_with(&texts[1].text));
        let errors = parse_texts(&Value::Array(vec![json!(5); 1000]), &LIMITS).unwrap_err();
        assert_eq!(errors.len(), 1, "the count before any element: {errors:?}");
        let errors = parse_texts(&json!(["", 5, [1]]), &LIMITS).unwrap_err();
        let places: Vec<_> = errors.iter().map(|error| error.loc.clone()).collect();
        assert_eq!(
            places,
            (0..3)
                .map(|index| vec!["body".into(), "input".into(), LocSegment::Index(index)])
                .collect::<Vec<Vec<LocSegment>>>()
        );
    }

    #[test]
    fn whole_numbers_are_token_ids_whatever_their_json_spelling() {
        assert_eq!(token_id(&json!(7)), Some(7));
        assert_eq!(token_id(&json!(7.0)), Some(7));
        assert_eq!(token_id(&json!(-0.0)), Some(0));
        for bad in [
            json!(7.5),
            json!(-1),
            json!(-1.0),
            json!(1e12),
            json!("7"),
            json!(null),
        ] {
            assert_eq!(token_id(&bad), None, "{bad}");
        }
    }

    #[test]
    fn token_bounds_never_undercount() {
        assert_eq!(token_bound(&Input::Tokens(vec![1, 2, 3]), 4), 3);
        assert_eq!(token_bound(&Input::Text("ab".into()), 100), 4);
        assert_eq!(token_bound(&Input::Text("a".repeat(500)), 100), 100);
    }
}
