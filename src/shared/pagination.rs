//! Cursor pagination: `?limit=&cursor=` in, `{"items": [...], "next_cursor": ...}` out.
//!
//! Keyset cursors (the last item's id) stay correct while rows are inserted:
//! a page never repeats or skips a row the way `OFFSET` does.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

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
