//! [`Db`]: the session with its prepared statements, and the few ways the
//! store runs them (rows, first row, LWT `[applied]`, batches), each mapping
//! driver errors onto [`BackendError`]s that name what was being done.

use scylla::client::session::Session;
use scylla::deserialize::row::DeserializeRow;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use scylla::statement::Consistency;
use scylla::value::{CqlValue, Row};
use tern_store::BackendError;

use crate::error;
use crate::statements::Statements;

/// Rows asked for per page of a read that walks a whole partition whose
/// size tern does not bound (a user's conversations, a device's cursors, a
/// group's members), so that no request is an unpaged read of the whole
/// partition (ScyllaDB warns past `max_memory_for_unlimited_query_soft_limit`,
/// 1 MB, and fails past the hard limit, 100 MB).
pub(crate) const READ_PAGE: i32 = 5000;

/// The start of the next page after a page of `got` rows whose last
/// clustering key is `last`: `None` when the page was short (the partition
/// is done) or `last` is the largest key.
pub(crate) fn next_page(got: usize, last: Option<i64>) -> Option<i64> {
    let full = usize::try_from(READ_PAGE).is_ok_and(|page| got >= page);
    if full {
        last.and_then(|l| l.checked_add(1))
    } else {
        None
    }
}

/// The values of one statement of a batch.
pub(crate) type Values = Box<dyn SerializeRow + Send + Sync>;

/// A batch under construction: statements with their values.
#[derive(Default)]
pub(crate) struct BatchBuilder {
    statements: Vec<PreparedStatement>,
    values: Vec<Values>,
}

impl BatchBuilder {
    pub(crate) fn push(
        &mut self,
        statement: &PreparedStatement,
        values: impl SerializeRow + Send + Sync + 'static,
    ) {
        self.statements.push(statement.clone());
        self.values.push(Box::new(values));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.statements.is_empty()
    }
}

/// The session and its prepared statements.
pub(crate) struct Db {
    pub(crate) session: Session,
    pub(crate) st: Statements,
}

impl std::fmt::Debug for Db {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl Db {
    /// Prepares the statements on `session`, reads at `read`.
    pub(crate) async fn new(session: Session, read: Consistency) -> Result<Self, BackendError> {
        let st = Statements::prepare(&session, read).await?;
        Ok(Db { session, st })
    }

    /// Runs `statement`, for its effect.
    pub(crate) async fn run(
        &self,
        what: &str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<QueryResult, BackendError> {
        self.session
            .execute_unpaged(statement, values)
            .await
            .map_err(|e| error::execution(what, &e))
    }

    /// Every row `statement` returns (unpaged: for partitions this store
    /// bounds, or reads with a `LIMIT`).
    pub(crate) async fn rows<R>(
        &self,
        what: &str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Vec<R>, BackendError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let result = self.run(what, statement, values).await?;
        let rows = result
            .into_rows_result()
            .map_err(|e| error::decode(what, e))?;
        let typed = rows.rows::<R>().map_err(|e| error::decode(what, e))?;
        typed
            .collect::<Result<Vec<R>, _>>()
            .map_err(|e| error::decode(what, e))
    }

    /// The first row `statement` returns, if any.
    pub(crate) async fn first<R>(
        &self,
        what: &str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<Option<R>, BackendError>
    where
        R: for<'f, 'm> DeserializeRow<'f, 'm>,
    {
        let result = self.run(what, statement, values).await?;
        let rows = result
            .into_rows_result()
            .map_err(|e| error::decode(what, e))?;
        rows.maybe_first_row::<R>()
            .map_err(|e| error::decode(what, e))
    }

    /// Runs a conditional statement (LWT): whether it was applied.
    pub(crate) async fn applied(
        &self,
        what: &str,
        statement: &PreparedStatement,
        values: impl SerializeRow,
    ) -> Result<bool, BackendError> {
        let result = self.run(what, statement, values).await?;
        applied(what, result)
    }

    /// Runs `batch` as one logged batch (all of it applies, eventually, or
    /// none), or, when it holds a condition, as one LWT on its single
    /// partition: whether it was applied (always true unconditioned).
    pub(crate) async fn batch(
        &self,
        what: &str,
        batch: BatchBuilder,
    ) -> Result<bool, BackendError> {
        if batch.is_empty() {
            return Ok(true);
        }
        let mut cql = Batch::new(BatchType::Logged);
        for statement in batch.statements {
            cql.append_statement(statement);
        }
        let result = self
            .session
            .batch(&cql, batch.values)
            .await
            .map_err(|e| error::execution(what, &e))?;
        if result.is_rows() {
            applied(what, result)
        } else {
            Ok(true)
        }
    }
}

/// The `[applied]` column of an LWT's result.
fn applied(what: &str, result: QueryResult) -> Result<bool, BackendError> {
    let rows = result
        .into_rows_result()
        .map_err(|e| error::decode(what, e))?;
    let row = rows
        .maybe_first_row::<Row>()
        .map_err(|e| error::decode(what, e))?;
    match row.as_ref().and_then(|r| r.columns.first()) {
        Some(Some(CqlValue::Boolean(applied))) => Ok(*applied),
        _ => Err(error::decode(
            what,
            "no [applied] column in a conditional write's result",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_continue_after_the_last_key_of_a_full_page() {
        let page = usize::try_from(READ_PAGE).unwrap_or(usize::MAX);
        assert_eq!(next_page(page, Some(41)), Some(42));
        assert_eq!(next_page(page - 1, Some(41)), None, "short page: done");
        assert_eq!(next_page(0, None), None);
        assert_eq!(next_page(page, Some(i64::MAX)), None, "largest key: done");
        assert_eq!(next_page(page, Some(i64::MIN)), Some(i64::MIN + 1));
    }
}
