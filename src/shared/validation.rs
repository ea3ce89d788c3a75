//! Collecting every invalid field of a request, so a 422 lists them all at once,
//! and the one error a value parser gives: [`Invalid`], the reason in words.

use crate::shared::error::{AppError, FieldError};

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
