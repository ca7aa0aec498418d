//! [`BlockingExecutor`] for `postgres::Client` and `postgres::Transaction`.

use postgres::{Client, Row, Transaction};

use super::row::db_error;
use super::BlockingExecutor;
use crate::{BuiltQuery, Result};

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
                let params = q.params();
                <$ty>::query(self, q.sql(), &params.as_params()).map_err(|e| db_error(q.sql(), e))
            }

            fn run(&mut self, q: &BuiltQuery) -> Result<u64> {
                q.check()?;
                let params = q.params();
                <$ty>::execute(self, q.sql(), &params.as_params()).map_err(|e| db_error(q.sql(), e))
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
