//! [`Executor`] for `tokio_postgres::Client` and `tokio_postgres::Transaction`.

use tokio_postgres::{Client, Row, Transaction};

use super::row::db_error;
use super::{Executor, Transactional};
use crate::{BuiltQuery, Result};

/// `query` on anything with tokio-postgres's `GenericClient` methods.
macro_rules! tokio_pg_executor {
    ($ty:ty, $in_tx:expr) => {
        impl Executor for $ty {
            type Row = Row;

            async fn rows(&self, q: &BuiltQuery) -> Result<Vec<Row>> {
                q.check()?;
                let params = q.params();
                <$ty>::query(self, q.sql(), &params.as_params())
                    .await
                    .map_err(|e| db_error(q.sql(), e))
            }

            async fn run(&self, q: &BuiltQuery) -> Result<u64> {
                q.check()?;
                let params = q.params();
                <$ty>::execute(self, q.sql(), &params.as_params())
                    .await
                    .map_err(|e| db_error(q.sql(), e))
            }

            async fn run_script(&self, sql: &str) -> Result<()> {
                <$ty>::batch_execute(self, sql)
                    .await
                    .map_err(|e| db_error(sql, e))
            }

            fn is_transaction(&self) -> bool {
                $in_tx
            }
        }
    };
}

tokio_pg_executor!(Client, false);
tokio_pg_executor!(Transaction<'_>, true);

/// Runs `queries` on an open transaction, then commits it.
pub(crate) async fn run_and_commit(
    tx: Transaction<'_>,
    queries: &[BuiltQuery],
) -> Result<Vec<u64>> {
    let mut counts = Vec::with_capacity(queries.len());
    for q in queries {
        counts.push(tx.run(q).await?);
    }
    tx.commit().await.map_err(|e| db_error("COMMIT", e))?;
    Ok(counts)
}

/// Runs `q` on an open transaction, then rolls it back.
pub(crate) async fn run_and_roll_back(tx: Transaction<'_>, q: &BuiltQuery) -> Result<Vec<Row>> {
    let rows = tx.rows(q).await;
    tx.rollback().await.map_err(|e| db_error("ROLLBACK", e))?;
    rows
}

impl Transactional for Client {
    async fn run_in_transaction(&mut self, queries: &[BuiltQuery]) -> Result<Vec<u64>> {
        let tx = self.transaction().await.map_err(|e| db_error("BEGIN", e))?;
        run_and_commit(tx, queries).await
    }

    async fn rows_rolled_back(&mut self, q: &BuiltQuery) -> Result<Vec<Row>> {
        let tx = self.transaction().await.map_err(|e| db_error("BEGIN", e))?;
        run_and_roll_back(tx, q).await
    }
}

impl Transactional for Transaction<'_> {
    async fn run_in_transaction(&mut self, queries: &[BuiltQuery]) -> Result<Vec<u64>> {
        let sp = self
            .transaction()
            .await
            .map_err(|e| db_error("SAVEPOINT", e))?;
        run_and_commit(sp, queries).await
    }

    async fn rows_rolled_back(&mut self, q: &BuiltQuery) -> Result<Vec<Row>> {
        let sp = self
            .transaction()
            .await
            .map_err(|e| db_error("SAVEPOINT", e))?;
        run_and_roll_back(sp, q).await
    }
}
