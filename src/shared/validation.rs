//! Collecting every invalid field of a request, so a 422 lists them all at once.

use crate::shared::error::{AppError, FieldError, LocSegment};

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

    /// Records `result`'s error at `loc` (e.g. `["body", "email"]`) and returns its value.
    pub fn check<T>(&mut self, loc: &[&str], result: Result<T, String>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(message) => {
                self.errors.push(FieldError::new(
                    loc.iter().map(|key| LocSegment::from(*key)).collect(),
                    message,
                    "value_error",
                ));
                None
            }
        }
    }

    /// Like [`Validator::check`] for an optional field: `None` stays `None`.
    pub fn check_optional<T, U>(
        &mut self,
        loc: &[&str],
        value: Option<T>,
        parse: impl FnOnce(T) -> Result<U, String>,
    ) -> Option<U> {
        value.and_then(|value| self.check(loc, parse(value)))
    }

    /// `Ok(())` when nothing was wrong, else a 422 listing every field.
    pub fn finish(self) -> Result<(), AppError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(AppError::Validation(self.errors))
        }
    }
}
