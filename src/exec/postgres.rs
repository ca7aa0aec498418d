//! [`BlockingExecutor`] for `postgres::Client` and `postgres::Transaction`.
//!
//! Statements are sent with their parameter types (`query_typed`): one round
//! trip, no named prepared statement (see the tokio-postgres executor).

use postgres::fallible_iterator::FallibleIterator;
use postgres::{Client, Row, RowIter, Transaction};

use super::row::db_error;
use super::BlockingExecutor;
use crate::{BuiltQuery, Result};

/// Reads a statement's rows to the end and returns the affected-row count
/// from its `CommandComplete` (0 for statements that report none).
fn drain(mut rows: RowIter<'_>) -> std::result::Result<u64, postgres::Error> {
    while rows.next()?.is_some() {}
    Ok(rows.rows_affected().unwrap_or(0))
}

fn run_and_commit(mut tx: Transaction<'_>, queries: &[BuiltQuery]) -> Result<Vec<u64>> {
    let mut counts = Vec::with_capacity(queries.len());
    for q in queries {
        counts.push(tx.run(q)?);
    }
    tx.commit().map_err(|e| db_error("COMMIT", e))?;
    Ok(counts)
}

fn run_and_roll_back(mut tx: Transaction<'_>, q: &BuiltQuery) -> Result<Vec<Row>> {
    let rows = tx.rows(q);
    tx.rollback().map_err(|e| db_error("ROLLBACK", e))?;
    rows
}

macro_rules! pg_blocking_executor {
    ($ty:ty, $in_tx:expr, $begin:literal) => {
        impl BlockingExecutor for $ty {
            type Row = Row;

            fn rows(&mut self, q: &BuiltQuery) -> Result<Vec<Row>> {
                q.check()?;
                let typed = q.typed_params()?;
                let rows = if typed.needs_server_types() {
                    <$ty>::query(self, q.sql(), &typed.as_params())
                } else {
                    <$ty>::query_typed(self, q.sql(), &typed.as_typed())
                };
                rows.map_err(|e| db_error(q.sql(), e))
            }

            fn run(&mut self, q: &BuiltQuery) -> Result<u64> {
                q.check()?;
                let typed = q.typed_params()?;
                let count = if typed.needs_server_types() {
                    <$ty>::execute(self, q.sql(), &typed.as_params())
                } else {
                    <$ty>::query_typed_raw(self, q.sql(), typed.pairs()).and_then(drain)
                };
                count.map_err(|e| db_error(q.sql(), e))
            }

            fn run_script(&mut self, sql: &str) -> Result<()> {
                <$ty>::batch_execute(self, sql).map_err(|e| db_error(sql, e))
            }

            fn run_in_transaction(&mut self, queries: &[BuiltQuery]) -> Result<Vec<u64>> {
                let tx = self.transaction().map_err(|e| db_error($begin, e))?;
                run_and_commit(tx, queries)
            }

            fn rows_rolled_back(&mut self, q: &BuiltQuery) -> Result<Vec<Row>> {
                let tx = self.transaction().map_err(|e| db_error($begin, e))?;
                run_and_roll_back(tx, q)
            }

            fn is_transaction(&self) -> bool {
                $in_tx
            }
        }
    };
}

pg_blocking_executor!(Client, false, "BEGIN");
pg_blocking_executor!(Transaction<'_>, true, "SAVEPOINT");
