//! Cursor pagination: `?limit=&cursor=` in, `{"items": [...], "next_cursor": ...}` out.
//!
//! Keyset cursors (the last item's id) stay correct while rows are inserted:
//! a page never repeats or skips a row the way `OFFSET` does.

use serde::{Deserialize, Serialize};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{IntoParams, PartialSchema, ToSchema};
use uuid::Uuid;

use crate::shared::validation::Invalid;

/// Items per page when the client does not say.
pub const DEFAULT_LIMIT: u32 = 20;

/// Most items per page.
pub const MAX_LIMIT: u32 = 100;

/// One page of a list.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

impl<T> Page<T> {
    /// Builds a page from up to `limit + 1` rows: the extra row, if any, only
    /// proves there is a next page, whose cursor is the last kept row's key.
    pub fn from_rows<R>(
        rows: Vec<R>,
        limit: u32,
        key: impl Fn(&R) -> String,
        map: impl Fn(R) -> T,
    ) -> Self {
        let (rows, has_more) = split_page(rows, limit);
        let next_cursor = if has_more {
            rows.last().map(&key)
        } else {
            None
        };
        Self {
            items: rows.into_iter().map(map).collect(),
            next_cursor,
        }
    }
}

/// How many rows to fetch for a page of `limit` items: one more, so that
/// [`split_page`] can tell whether a next page exists without a count query.
pub fn fetch_limit(limit: u32) -> i64 {
    i64::from(limit) + 1
}

/// Splits rows fetched with [`fetch_limit`] into the page's rows (at most
/// `limit`) and whether there is a next page: the extra row, if any, only
/// proves that. Shared by every keyset-paginated listing, whatever its shape.
pub fn split_page<R>(mut rows: Vec<R>, limit: u32) -> (Vec<R>, bool) {
    let has_more = rows.len() > limit as usize;
    rows.truncate(limit as usize);
    (rows, has_more)
}

/// The `limit` query parameter, checked.
#[derive(Debug, Clone, Copy, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Limit {
    /// Items per page, 1 to 100 (default 20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub limit: Option<u32>,
}

/// Validates a requested page size.
pub fn checked_limit(limit: Option<u32>) -> Result<u32, Invalid> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(limit) if (1..=MAX_LIMIT).contains(&limit) => Ok(limit),
        Some(_) => Err(Invalid::new(format!("must be between 1 and {MAX_LIMIT}"))),
    }
}

/// The shape of every cursor the API hands out: a UUID in its hyphenated form.
/// The document states it, so a client (or a fuzzer) knows which strings are
/// cursors without trying them.
pub const CURSOR_PATTERN: &str =
    "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";

/// The length of a hyphenated UUID, the only form [`CURSOR_PATTERN`] admits.
const CURSOR_CHARS: usize = 36;

/// A `cursor` query parameter: the `next_cursor` of a previous page, the key
/// of the last row it held. Documented as a string matching [`CURSOR_PATTERN`]
/// (list a parameter with `#[param(inline, value_type = Option<Cursor>)]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor(Uuid);

impl Cursor {
    /// Parses a cursor exactly as the document describes it: the braced, URN
    /// and undashed forms `Uuid::parse_str` would also take are refused, so
    /// the server accepts no string the schema rejects.
    pub fn parse(raw: &str) -> Result<Self, Invalid> {
        let refused = || Invalid::new("is not a cursor this API returned");
        if raw.len() != CURSOR_CHARS {
            return Err(refused());
        }
        Uuid::parse_str(raw).map(Self).map_err(|_| refused())
    }

    /// The key of the last row of the previous page.
    pub fn key(self) -> Uuid {
        self.0
    }
}

impl PartialSchema for Cursor {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
            .pattern(Some(CURSOR_PATTERN))
            .into()
    }
}

impl ToSchema for Cursor {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_is_a_hyphenated_uuid_and_nothing_else() {
        let id = Uuid::now_v7();
        let hyphenated = id.to_string();
        assert_eq!(Cursor::parse(&hyphenated).map(Cursor::key), Ok(id));
        assert_eq!(
            Cursor::parse(&hyphenated.to_uppercase()).map(Cursor::key),
            Ok(id)
        );
        for other_form in [
            id.simple().to_string(),
            id.braced().to_string(),
            id.urn().to_string(),
            String::new(),
            format!(" {hyphenated}"),
            hyphenated.replacen('-', "g", 1),
        ] {
            assert!(Cursor::parse(&other_form).is_err(), "{other_form:?}");
        }
    }

    #[test]
    fn limits_outside_one_to_the_maximum_are_refused() {
        assert_eq!(checked_limit(None), Ok(DEFAULT_LIMIT));
        assert_eq!(checked_limit(Some(1)), Ok(1));
        assert_eq!(checked_limit(Some(MAX_LIMIT)), Ok(MAX_LIMIT));
        assert!(checked_limit(Some(0)).is_err());
        assert!(checked_limit(Some(MAX_LIMIT + 1)).is_err());
    }
}
