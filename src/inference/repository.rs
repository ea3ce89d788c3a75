//! Queries on `inference_embeddings`, the stored vectors of `embed_texts` runs,
//! and the one fact about an execution those runs need: whose it is.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::shared::schema::{executions, inference_embeddings};

/// One stored vector.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = inference_embeddings)]
pub struct StoredEmbedding {
    /// The execution that produced it.
    pub execution_id: Uuid,
    /// The text's index in the execution's input.
    pub position: i32,
    /// Tokens the model read for it.
    pub tokens: i32,
    /// The unit-length vector.
    pub embedding: Vec<f32>,
}

/// Stores a chunk of vectors. A retried attempt may store a chunk again: the rows
/// are the same (the engine is deterministic), so conflicts are skipped.
pub async fn insert_chunk(
    conn: &mut AsyncPgConnection,
    rows: &[StoredEmbedding],
) -> QueryResult<usize> {
    diesel::insert_into(inference_embeddings::table)
        .values(rows)
        .on_conflict_do_nothing()
        .execute(conn)
        .await
}

/// How many vectors of `execution_id` are stored, and their token total: where a
/// retried attempt resumes, and what it has used so far.
pub async fn progress(conn: &mut AsyncPgConnection, execution_id: Uuid) -> QueryResult<(i64, i64)> {
    use diesel::dsl::{count_star, sum};
    let (count, tokens): (i64, Option<i64>) = inference_embeddings::table
        .filter(inference_embeddings::execution_id.eq(execution_id))
        .select((count_star(), sum(inference_embeddings::tokens)))
        .first(conn)
        .await?;
    Ok((count, tokens.unwrap_or(0)))
}

/// Up to `limit` vectors of `execution_id` after index `after`, in index order.
pub async fn page(
    conn: &mut AsyncPgConnection,
    execution_id: Uuid,
    after: Option<i32>,
    limit: i64,
) -> QueryResult<Vec<StoredEmbedding>> {
    let mut query = inference_embeddings::table
        .filter(inference_embeddings::execution_id.eq(execution_id))
        .order(inference_embeddings::position.asc())
        .limit(limit)
        .select(StoredEmbedding::as_select())
        .into_boxed();
    if let Some(after) = after {
        query = query.filter(inference_embeddings::position.gt(after));
    }
    query.load(conn).await
}

/// Who submitted `execution_id`: the user whose token budget its
/// `embed_texts` run spends. One column, read here rather than through the
/// executions service, whose reads carry the execution's whole input.
pub async fn owner_of(
    conn: &mut AsyncPgConnection,
    execution_id: Uuid,
) -> QueryResult<Option<Uuid>> {
    executions::table
        .find(execution_id)
        .select(executions::owner_id)
        .first(conn)
        .await
        .optional()
}
