//! [`Prepared`]: the opt-in executor that prepares each distinct statement
//! once per connection and reuses it.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Mutex, PoisonError};

use postgres_types::Type;
use tokio_postgres::{Client, Row, Statement};

use super::row::db_error;
use super::tokio_postgres::drain;
use super::{Executor, Transactional};
use crate::{BuiltQuery, Error, Result, TypedParams};

/// SQLSTATE `26000` (`invalid_sql_statement_name`): "prepared statement …
/// does not exist".
const STATEMENT_MISSING: &str = "26000";

/// An executor that **prepares** each distinct statement (SQL text and
/// parameter types) once per connection and reuses the prepared statement,
/// so the server parses and plans repeated SQL only once per connection.
///
/// This is opt-in. The plain clients send every statement with its
/// parameter types in one round trip and leave nothing prepared on the
/// server, which is what most programs want. `Prepared` helps when the same
/// few statements run many times on long-lived connections and planning is a
/// noticeable part of their cost (large statements, many joins): after the
/// first run, a statement costs one round trip and no parse or plan. The first
/// run of each statement costs two round trips (prepare, then execute).
///
/// Implemented for:
/// - `tokio_postgres::Client` (feature `tokio-postgres`): the cache lives in
///   this wrapper, keyed by SQL text and parameter types, unbounded (see
///   [`clear_statements`](Self::clear_statements));
/// - `deadpool_postgres::Pool` and `deadpool_postgres::Client` (feature
///   `deadpool-postgres`): deadpool's per-connection statement cache
///   (`prepare_typed_cached`), so each pooled connection prepares once.
///
/// [`Transactional`] statements (`run_in_transaction`, `rows_rolled_back`)
/// are sent unprepared, as by the plain client.
///
/// **Not behind a transaction-mode pooler** (PgBouncer `pool_mode =
/// transaction` before 1.21, or with `max_prepared_statements = 0`): a
/// prepared statement lives on one server connection, and the pooler may run
/// the next statement on another, where the name is unknown (an error with
/// SQLSTATE `26000`, after which the statement is dropped from the cache) or,
/// worse, names another client's statement. Use the plain client there.
///
/// ```no_run
/// # async fn demo(client: tokio_postgres::Client) -> pgpatterns::Result<()> {
/// use pgpatterns::{BuiltQuery, Prepared, SqlType};
/// let db = Prepared::new(client);
/// let q = BuiltQuery::fixed_with("SELECT $1::int8 * 2", [21i64.into_value()]);
/// for _ in 0..3 {
///     let (n,): (i64,) = q.fetch_one(&db).await?; // prepared on the first run only
///     assert_eq!(n, 42);
/// }
/// assert_eq!(db.cached_statements(), 1);
/// # Ok(()) }
/// ```
pub struct Prepared<C> {
    inner: C,
    /// Used for `tokio_postgres::Client` only: deadpool has its own cache.
    cache: Mutex<HashMap<(String, Vec<Type>), Statement>>,
}

impl<C> Prepared<C> {
    /// Wraps a client or pool.
    #[must_use]
    pub fn new(inner: C) -> Self {
        Prepared {
            inner,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The wrapped client or pool.
    #[must_use]
    pub fn get_ref(&self) -> &C {
        &self.inner
    }

    /// The wrapped client or pool; its prepared statements stay on the
    /// server until they are dropped from the cache (or the connection
    /// closes).
    #[must_use]
    pub fn into_inner(self) -> C {
        self.inner
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Vec<Type>), Statement>> {
        // The map stays consistent whatever panicked while it was locked.
        self.cache.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Prepared<Client> {
    /// How many statements this wrapper holds prepared.
    #[must_use]
    pub fn cached_statements(&self) -> usize {
        self.cache().len()
    }

    /// Forgets every prepared statement (the client then closes them on the
    /// server).
    pub fn clear_statements(&self) {
        self.cache().clear();
    }
}

impl<C: fmt::Debug> fmt::Debug for Prepared<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prepared")
            .field("inner", &self.inner)
            .field("cached_statements", &self.cache().len())
            .finish()
    }
}

/// Where prepared statements come from: a connection and its cache.
trait StatementCache: Sync {
    fn client(&self) -> &Client;
    fn statement(
        &self,
        sql: &str,
        types: &[Type],
    ) -> impl Future<Output = Result<Statement, tokio_postgres::Error>> + Send;
    fn forget(&self, sql: &str, types: &[Type]);
}

impl StatementCache for Prepared<Client> {
    fn client(&self) -> &Client {
        &self.inner
    }

    async fn statement(
        &self,
        sql: &str,
        types: &[Type],
    ) -> Result<Statement, tokio_postgres::Error> {
        let key = (sql.to_owned(), types.to_vec());
        if let Some(statement) = self.cache().get(&key) {
            return Ok(statement.clone());
        }
        let statement = self.inner.prepare_typed(sql, types).await?;
        self.cache().insert(key, statement.clone());
        Ok(statement)
    }

    fn forget(&self, sql: &str, types: &[Type]) {
        self.cache().remove(&(sql.to_owned(), types.to_vec()));
    }
}

/// The statement for `q`, prepared with the types pgpatterns knows (the
/// server infers the rest, so every value kind works).
async fn prepare(db: &impl StatementCache, q: &BuiltQuery) -> Result<(Statement, TypedParams)> {
    q.check()?;
    let typed = q.typed_params()?;
    let statement = db
        .statement(q.sql(), typed.types())
        .await
        .map_err(|e| db_error(q.sql(), e))?;
    Ok((statement, typed))
}

/// Maps an error of a prepared statement's execution; a statement the server
/// no longer knows is dropped from the cache, so the next call prepares again.
fn failed(
    db: &impl StatementCache,
    q: &BuiltQuery,
    typed: &TypedParams,
    e: tokio_postgres::Error,
) -> Error {
    let err = db_error(q.sql(), e);
    if err.code() == Some(STATEMENT_MISSING) {
        db.forget(q.sql(), typed.types());
    }
    err
}

async fn prepared_rows(db: &impl StatementCache, q: &BuiltQuery) -> Result<Vec<Row>> {
    let (statement, typed) = prepare(db, q).await?;
    db.client()
        .query(&statement, &typed.as_params())
        .await
        .map_err(|e| failed(db, q, &typed, e))
}

async fn prepared_run(db: &impl StatementCache, q: &BuiltQuery) -> Result<u64> {
    let (statement, typed) = prepare(db, q).await?;
    let count = match db.client().query_raw(&statement, typed.as_params()).await {
        Ok(stream) => drain(stream).await,
        Err(e) => Err(e),
    };
    count.map_err(|e| failed(db, q, &typed, e))
}

impl Executor for Prepared<Client> {
    type Row = Row;

    async fn rows(&self, q: &BuiltQuery) -> Result<Vec<Row>> {
        prepared_rows(self, q).await
    }

    async fn run(&self, q: &BuiltQuery) -> Result<u64> {
        prepared_run(self, q).await
    }

    async fn run_script(&self, sql: &str) -> Result<()> {
        self.inner.run_script(sql).await
    }
}

impl Transactional for Prepared<Client> {
    async fn run_in_transaction(&mut self, queries: &[BuiltQuery]) -> Result<Vec<u64>> {
        self.inner.run_in_transaction(queries).await
    }

    async fn rows_rolled_back(&mut self, q: &BuiltQuery) -> Result<Vec<Row>> {
        self.inner.rows_rolled_back(q).await
    }
}

#[cfg(feature = "deadpool-postgres")]
mod deadpool {
    use deadpool_postgres::{Client as Pooled, Pool};

    use super::*;
    use crate::exec::deadpool::pool_error;

    /// deadpool's own per-connection cache.
    struct Cached<'a>(&'a Pooled);

    impl StatementCache for Cached<'_> {
        fn client(&self) -> &Client {
            self.0
        }

        fn statement(
            &self,
            sql: &str,
            types: &[Type],
        ) -> impl Future<Output = Result<Statement, tokio_postgres::Error>> + Send {
            self.0.prepare_typed_cached(sql, types)
        }

        fn forget(&self, sql: &str, types: &[Type]) {
            self.0.statement_cache.remove(sql, types);
        }
    }

    impl Prepared<Pooled> {
        /// How many statements the pooled connection holds prepared.
        #[must_use]
        pub fn cached_statements(&self) -> usize {
            self.inner.statement_cache.size()
        }

        /// Forgets every prepared statement of the pooled connection.
        pub fn clear_statements(&self) {
            self.inner.statement_cache.clear();
        }
    }

    impl Prepared<Pool> {
        /// Forgets the prepared statements of every idle pooled connection.
        pub fn clear_statements(&self) {
            self.inner.manager().statement_caches.clear();
        }
    }

    impl Executor for Prepared<Pooled> {
        type Row = Row;

        async fn rows(&self, q: &BuiltQuery) -> Result<Vec<Row>> {
            prepared_rows(&Cached(&self.inner), q).await
        }

        async fn run(&self, q: &BuiltQuery) -> Result<u64> {
            prepared_run(&Cached(&self.inner), q).await
        }

        async fn run_script(&self, sql: &str) -> Result<()> {
            self.inner.run_script(sql).await
        }
    }

    impl Transactional for Prepared<Pooled> {
        async fn run_in_transaction(&mut self, queries: &[BuiltQuery]) -> Result<Vec<u64>> {
            self.inner.run_in_transaction(queries).await
        }

        async fn rows_rolled_back(&mut self, q: &BuiltQuery) -> Result<Vec<Row>> {
            self.inner.rows_rolled_back(q).await
        }
    }

    impl Executor for Prepared<Pool> {
        type Row = Row;

        async fn rows(&self, q: &BuiltQuery) -> Result<Vec<Row>> {
            q.check()?;
            let client = self.inner.get().await.map_err(|e| pool_error(q.sql(), e))?;
            prepared_rows(&Cached(&client), q).await
        }

        async fn run(&self, q: &BuiltQuery) -> Result<u64> {
            q.check()?;
            let client = self.inner.get().await.map_err(|e| pool_error(q.sql(), e))?;
            prepared_run(&Cached(&client), q).await
        }

        async fn run_script(&self, sql: &str) -> Result<()> {
            self.inner.run_script(sql).await
        }
    }

    impl Transactional for Prepared<Pool> {
        async fn run_in_transaction(&mut self, queries: &[BuiltQuery]) -> Result<Vec<u64>> {
            self.inner.run_in_transaction(queries).await
        }

        async fn rows_rolled_back(&mut self, q: &BuiltQuery) -> Result<Vec<Row>> {
            self.inner.rows_rolled_back(q).await
        }
    }
}
