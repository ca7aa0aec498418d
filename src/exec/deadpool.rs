//! [`Executor`] for `deadpool_postgres::Pool` (a connection per call) and
//! `deadpool_postgres::Client` (a pooled connection).

use deadpool_postgres::{Client, Pool, PoolError};
use tokio_postgres::Row;

use super::{Executor, Transactional};
use crate::{BuiltQuery, Error, Result};

pub(crate) fn pool_error(sql: &str, e: PoolError) -> Error {
    match e {
        PoolError::Backend(e) => super::row::db_error(sql, e),
        other => Error::Database {
            sql: sql.to_owned(),
            code: None,
            message: format!(
                "could not get a pooled connection: {}",
                super::common::chain_text(&other)
            ),
            client: Box::new(other),
        },
    }
}

impl Executor for Client {
    type Row = Row;

    async fn rows(&self, q: &BuiltQuery) -> Result<Vec<Row>> {
        (***self).rows(q).await
    }

    async fn run(&self, q: &BuiltQuery) -> Result<u64> {
        (***self).run(q).await
    }

    async fn run_script(&self, sql: &str) -> Result<()> {
        (***self).run_script(sql).await
    }
}

impl Transactional for Client {
    async fn run_in_transaction(&mut self, queries: &[BuiltQuery]) -> Result<Vec<u64>> {
        let client: &mut tokio_postgres::Client = &mut *self;
        client.run_in_transaction(queries).await
    }

    async fn rows_rolled_back(&mut self, q: &BuiltQuery) -> Result<Vec<Row>> {
        let client: &mut tokio_postgres::Client = &mut *self;
        client.rows_rolled_back(q).await
    }
}

impl Executor for Pool {
    type Row = Row;

    async fn rows(&self, q: &BuiltQuery) -> Result<Vec<Row>> {
        q.check()?;
        let client = self.get().await.map_err(|e| pool_error(q.sql(), e))?;
        client.rows(q).await
    }

    async fn run(&self, q: &BuiltQuery) -> Result<u64> {
        q.check()?;
        let client = self.get().await.map_err(|e| pool_error(q.sql(), e))?;
        client.run(q).await
    }

    async fn run_script(&self, sql: &str) -> Result<()> {
        let client = self.get().await.map_err(|e| pool_error(sql, e))?;
        client.run_script(sql).await
    }
}

impl Transactional for Pool {
    async fn run_in_transaction(&mut self, queries: &[BuiltQuery]) -> Result<Vec<u64>> {
        let mut client = self.get().await.map_err(|e| pool_error("BEGIN", e))?;
        client.run_in_transaction(queries).await
    }

    async fn rows_rolled_back(&mut self, q: &BuiltQuery) -> Result<Vec<Row>> {
        let mut client = self.get().await.map_err(|e| pool_error("BEGIN", e))?;
        client.rows_rolled_back(q).await
    }
}
