//! Collecting every invalid field of a request, so a 422 lists them all at once,
//! and the one error a value parser gives: [`Invalid`], the reason in words.

use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::{RefOr, Schema};

use crate::shared::error::{AppError, FieldError};

/// The documented form of a label (a person's or a key's name): no control
/// character anywhere, and at least one character that is neither a control
/// character nor whitespace (Unicode's `White_Space`, as Rust's
/// `char::is_whitespace` reads it).
const LABEL_PATTERN: &str = concat!(
    r"^[^\u0000-\u001F\u007F-\u009F]*",
    r"[^\u0000-\u0020\u007F-\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]",
    r"[^\u0000-\u001F\u007F-\u009F]*$",
);

/// Parses a label people read (a name): 1 to `max_chars` characters as sent
/// (the length counts surrounding whitespace, as the document's `maxLength`
/// does), no control characters, not only whitespace; returned trimmed.
pub fn parse_label(raw: &str, max_chars: usize) -> Result<String, Invalid> {
    if raw.trim().is_empty() {
        return Err(Invalid::new("must not be empty"));
    }
    if raw.chars().count() > max_chars {
        return Err(Invalid::new(format!(
            "must be at most {max_chars} characters"
        )));
    }
    if raw.chars().any(char::is_control) {
        return Err(Invalid::new("must not contain control characters"));
    }
    Ok(raw.trim().to_owned())
}

/// The document's schema of a label [`parse_label`] accepts.
pub fn label_schema(max_chars: usize, description: &str, example: &str) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max_chars))
        .pattern(Some(LABEL_PATTERN))
        .description(Some(description))
        .examples([example])
        .into()
}

/// Why a value was refused, in words for the client ("must be at most 254
/// characters"); the caller knows where the value was and adds the location.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Invalid {
    /// A refusal with this reason.
    pub fn new(reason: impl Into<String>) -> Self {
        Self(reason.into())
    }
}

/// Accumulates field errors while a request is checked.
#[derive(Debug, Default)]
pub struct Validator {
    errors: Vec<FieldError>,
}

impl Validator {
    /// An empty validator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `result`'s reason at `field` (e.g. `FieldError::body("email")`)
    /// and returns its value.
    pub fn check<T>(&mut self, field: FieldError, result: Result<T, Invalid>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(Invalid(reason)) => {
                self.errors.push(field.because(reason));
                None
            }
        }
    }

    /// Like [`Validator::check`] for an optional field: `None` stays `None`.
    pub fn check_optional<T, U>(
        &mut self,
        field: FieldError,
        value: Option<T>,
        parse: impl FnOnce(T) -> Result<U, Invalid>,
    ) -> Option<U> {
        value.and_then(|value| self.check(field, parse(value)))
    }

    /// Records an error found by other means.
    pub fn push(&mut self, error: FieldError) {
        self.errors.push(error);
    }

    /// `Ok(())` when nothing was wrong, else a 422 listing every field.
    pub fn into_result(self) -> Result<(), AppError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(AppError::Validation(self.errors))
        }
    }
}

/// A 422 for the fields whose check gave a reason; for parsers that match on
/// every field's result at once, so no "validated but missing" branch exists.
pub fn invalid_fields(checks: impl IntoIterator<Item = (FieldError, Option<Invalid>)>) -> AppError {
    AppError::Validation(
        checks
            .into_iter()
            .filter_map(|(field, invalid)| invalid.map(|Invalid(reason)| field.because(reason)))
            .collect(),
    )
}
