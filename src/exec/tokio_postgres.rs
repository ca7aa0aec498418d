//! [`Executor`] for `tokio_postgres::Client` and `tokio_postgres::Transaction`.
//!
//! Statements are sent with their parameter types (`query_typed`): Parse,
//! Bind, Describe, Execute and Sync go out together, in one round trip, with
//! no named prepared statement left on the server. (`Client::query` with SQL
//! text prepares first: a round trip to learn the parameter types, then
//! another to run it.)

use std::pin::pin;

use futures_core::Stream;
use tokio_postgres::{Client, Row, RowStream, Transaction};

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
                let typed = q.typed_params()?;
                let rows = if typed.needs_server_types() {
                    <$ty>::query(self, q.sql(), &typed.as_params()).await
                } else {
                    <$ty>::query_typed(self, q.sql(), &typed.as_typed()).await
                };
                rows.map_err(|e| db_error(q.sql(), e))
            }

            async fn run(&self, q: &BuiltQuery) -> Result<u64> {
                q.check()?;
                let typed = q.typed_params()?;
                let count = if typed.needs_server_types() {
                    <$ty>::execute(self, q.sql(), &typed.as_params()).await
                } else {
                    match <$ty>::query_typed_raw(self, q.sql(), typed.pairs()).await {
                        Ok(stream) => drain(stream).await,
                        Err(e) => Err(e),
                    }
                };
                count.map_err(|e| db_error(q.sql(), e))
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

/// Reads a statement's rows to the end and returns the affected-row count
/// from its `CommandComplete` (0 for statements that report none).
pub(crate) async fn drain(stream: RowStream) -> std::result::Result<u64, tokio_postgres::Error> {
    let mut stream = pin!(stream);
    while let Some(row) = std::future::poll_fn(|cx| stream.as_mut().poll_next(cx)).await {
        row?;
    }
    Ok(stream.rows_affected().unwrap_or(0))
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
