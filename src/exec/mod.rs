//! The executor traits: how a [`BuiltQuery`] reaches a PostgreSQL client.
//!
//! pgpatterns builds SQL; it does not own connections. Queries and specs
//! carry the run verbs (`q.fetch_all(&client)`, `spec.count(&client)`, and
//! `_blocking` forms); they call these traits. Any client plugs in by
//! implementing [`Executor`] (async) or [`BlockingExecutor`] (sync): two
//! required query methods and one for plain SQL scripts; everything else has a
//! default body. Implementations ship behind cargo features:
//!
//! | Feature | Implemented for |
//! |---|---|
//! | `tokio-postgres` | `tokio_postgres::Client`, `tokio_postgres::Transaction` ([`Executor`], [`Transactional`]) |
//! | `deadpool-postgres` | `deadpool_postgres::Pool`, `deadpool_postgres::Client` ([`Executor`], [`Transactional`]) |
//! | `sqlx` | `sqlx::PgPool` ([`Executor`], [`Transactional`]); a `sqlx::PgConnection`, `Transaction` or `PoolConnection` wrapped in [`SqlxConn`] ([`Executor`], [`Transactional`]) |
//! | `postgres` | `postgres::Client`, `postgres::Transaction` ([`BlockingExecutor`]) |
//! | `tokio-postgres`, `deadpool-postgres` | [`Prepared`] over `tokio_postgres::Client`, `deadpool_postgres::Pool` or `Client` ([`Executor`], [`Transactional`]) |
//!
//! The traits are also implemented for `&E`, `&mut E`, `Box<E>` and `Arc<E>`
//! (async), so a shared client or pool can be passed as it is.
//!
//! ## One round trip per statement
//!
//! Every value's PostgreSQL type is known ([`BuiltQuery::typed_params`]), so
//! the clients send each statement with its parameter types
//! (`query_typed`): Parse, Bind, Describe, Execute and Sync go out together
//! and the answer comes back in one round trip, with no named prepared
//! statement left on the server. (`Client::query` with SQL text prepares
//! first and waits for the parameter types: two round trips.) This is also
//! what a connection pooler in transaction mode (PgBouncer
//! `pool_mode = transaction`) needs, since the next statement may run on
//! another server connection.
//!
//! [`Prepared`] (opt-in) prepares each distinct statement once per
//! connection and reuses it, for programs that run a few statements very
//! often on long-lived direct connections; not behind a transaction-mode
//! pooler.
//!
//! Behind a transaction-mode pooler, also keep in mind: a query returning a
//! column of a user-defined type (enum, domain, composite) makes the client
//! look the type up with a named statement it keeps per connection, which a
//! pooler may lose; cast such columns to `text` or a built-in type. Session
//! state (`SET` without `LOCAL`, session advisory locks, temporary tables)
//! does not follow a client from one transaction to the next; pgpatterns
//! itself uses none of it (`SET TRANSACTION`, `pg_advisory_xact_lock`).

use std::future::Future;
use std::sync::Arc;

use postgres_types::FromSqlOwned;

#[cfg(feature = "sqlx")]
pub use self::sqlx::SqlxConn;
#[cfg(test)]
pub(crate) use blocking::block_on;
pub(crate) use blocking::{run_blocking, run_blocking_mut};
#[cfg(feature = "tokio-postgres")]
pub use prepared::Prepared;

use crate::{BuiltQuery, Error, Result};

mod blocking;
#[cfg(any(feature = "tokio-postgres", feature = "postgres", feature = "sqlx"))]
mod common;
#[cfg(feature = "deadpool-postgres")]
mod deadpool;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "tokio-postgres")]
mod prepared;
#[cfg(any(feature = "tokio-postgres", feature = "postgres"))]
mod row;
#[cfg(feature = "sqlx")]
mod sqlx;
#[cfg(feature = "tokio-postgres")]
mod tokio_postgres;

/// A column position or name, for [`RowRead::try_get`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnIndex<'a> {
    /// Zero-based position.
    Position(usize),
    /// Column name (as the server returned it).
    Name(&'a str),
}

impl From<usize> for ColumnIndex<'_> {
    fn from(i: usize) -> Self {
        ColumnIndex::Position(i)
    }
}

impl<'a> From<&'a str> for ColumnIndex<'a> {
    fn from(name: &'a str) -> Self {
        ColumnIndex::Name(name)
    }
}

impl std::fmt::Display for ColumnIndex<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ColumnIndex::Position(i) => write!(f, "#{i}"),
            ColumnIndex::Name(n) => write!(f, "{n:?}"),
        }
    }
}

/// A row returned by a client, read into typed values.
///
/// Implemented for `tokio_postgres::Row` (which is also `postgres::Row`) and
/// `sqlx::postgres::PgRow`.
pub trait RowRead {
    /// The value of one column as `T`.
    ///
    /// # Errors
    /// [`Error::Decode`] when the column does not exist or its type (or a
    /// NULL) cannot be read as `T`.
    fn try_get<T: FromSqlOwned>(&self, idx: ColumnIndex<'_>) -> Result<T>;

    /// Number of columns.
    fn len(&self) -> usize;

    /// `true` when the row has no columns.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The name of the column at `idx`.
    fn column_name(&self, idx: usize) -> Option<&str>;
}

/// A Rust value built from a whole row.
///
/// Implemented for tuples of up to 12 [`FromSqlOwned`] values (read by
/// position), and by each family's typed result rows.
///
/// ```
/// use pgpatterns::FromRow;
/// fn assert_from_row<T: FromRow>() {}
/// assert_from_row::<(i64, String, Option<f64>)>();
/// ```
pub trait FromRow: Sized {
    /// Reads the row.
    ///
    /// # Errors
    /// [`Error::Decode`] when a column is missing or of another type.
    fn from_row<R: RowRead>(row: &R) -> Result<Self>;
}

macro_rules! tuple_from_row {
    ($($t:ident $i:tt),+) => {
        impl<$($t: FromSqlOwned),+> FromRow for ($($t,)+) {
            fn from_row<R: RowRead>(row: &R) -> Result<Self> {
                Ok(($(row.try_get::<$t>(ColumnIndex::Position($i))?,)+))
            }
        }
    };
}

/// Nothing: for pages of keys only (`fetch_page::<(), K>`).
impl FromRow for () {
    fn from_row<R: RowRead>(_row: &R) -> Result<Self> {
        Ok(())
    }
}

tuple_from_row!(A 0);
tuple_from_row!(A 0, B 1);
tuple_from_row!(A 0, B 1, C 2);
tuple_from_row!(A 0, B 1, C 2, D 3);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10);
tuple_from_row!(A 0, B 1, C 2, D 3, E 4, F 5, G 6, H 7, I 8, J 9, K 10, L 11);

fn exactly_one<R>(mut rows: Vec<R>) -> Result<R> {
    match rows.len() {
        1 => Ok(rows.remove(0)),
        n => Err(Error::RowCount {
            expected: "exactly one",
            got: n.min(2),
        }),
    }
}

fn at_most_one<R>(mut rows: Vec<R>) -> Result<Option<R>> {
    match rows.len() {
        0 => Ok(None),
        1 => Ok(Some(rows.remove(0))),
        _ => Err(Error::RowCount {
            expected: "at most one",
            got: 2,
        }),
    }
}

fn decode_all<T: FromRow, R: RowRead>(rows: &[R]) -> Result<Vec<T>> {
    rows.iter().map(T::from_row).collect()
}

fn outside_transaction_check(in_tx: bool, q: &BuiltQuery) -> Result<()> {
    if in_tx {
        Err(Error::InTransaction {
            sql: q.sql().to_owned(),
        })
    } else {
        Ok(())
    }
}

/// An async PostgreSQL client that runs [`BuiltQuery`]s.
///
/// You rarely call it yourself: the run verbs live on the queries and specs
/// and take the client as an argument (`q.fetch_all(&client)`,
/// `spec.count(&client)`), as in sqlx. The trait's own method names (`rows`,
/// `run`, `run_script`, …) are ones no PostgreSQL client uses, so importing
/// pgpatterns never changes what `client.query(..)` or `client.execute(..)`
/// mean. Implement it (two query methods and one for scripts) to plug in
/// another client.
///
/// Futures are `Send`, so queries can be spawned on a multi-threaded runtime.
/// Every method checks the query's values ([`BuiltQuery::check`]) before
/// anything is sent.
pub trait Executor: Send + Sync {
    /// The client's row type.
    type Row: RowRead + Send;

    /// Runs a statement and returns its rows. Like
    /// `tokio_postgres::Client::query_typed`: the clients of this crate send
    /// the statement with its parameter types, in one round trip.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] when a value cannot be sent
    /// ([`BuiltQuery::check`]); [`Error::Database`] for the server's or the
    /// connection's error.
    fn rows(&self, q: &BuiltQuery) -> impl Future<Output = Result<Vec<Self::Row>>> + Send;

    /// Runs a statement and returns the number of rows it affected. Like
    /// `tokio_postgres::Client::execute_typed` (one round trip).
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] when a value cannot be sent
    /// ([`BuiltQuery::check`]); [`Error::Database`] for the server's or the
    /// connection's error.
    fn run(&self, q: &BuiltQuery) -> impl Future<Output = Result<u64>> + Send;

    /// Runs SQL text with no parameters through the simple-query protocol:
    /// several `;`-separated statements (DDL scripts, function bodies) in one
    /// round trip. Like `tokio_postgres::Client::batch_execute`. The text must
    /// come from this crate's builders or your own code, never from user data.
    ///
    /// # Errors
    /// [`Error::Database`] for the first statement that fails, or the
    /// connection's error.
    fn run_script(&self, sql: &str) -> impl Future<Output = Result<()>> + Send;

    /// `true` when this executor is a transaction (statements such as
    /// `CREATE INDEX CONCURRENTLY` are then refused by
    /// [`BuiltQuery::execute_outside_transaction`]).
    fn is_transaction(&self) -> bool {
        false
    }

    /// Runs a statement that returns exactly one row. Like
    /// `tokio_postgres::Client::query_one`.
    ///
    /// # Errors
    /// [`Error::RowCount`] for zero rows or more than one; as
    /// [`rows`](Self::rows).
    fn one_row(&self, q: &BuiltQuery) -> impl Future<Output = Result<Self::Row>> + Send {
        async move { exactly_one(self.rows(q).await?) }
    }

    /// Runs a statement that returns at most one row. Like
    /// `tokio_postgres::Client::query_opt`.
    ///
    /// # Errors
    /// [`Error::RowCount`] for more than one row; as [`rows`](Self::rows).
    fn optional_row(
        &self,
        q: &BuiltQuery,
    ) -> impl Future<Output = Result<Option<Self::Row>>> + Send {
        async move { at_most_one(self.rows(q).await?) }
    }

    /// Runs a statement and decodes each row as `T` (a tuple or a family's
    /// row type).
    ///
    /// # Errors
    /// [`Error::Decode`] when a row is not a `T`; as [`rows`](Self::rows).
    fn rows_as<T: FromRow + Send>(
        &self,
        q: &BuiltQuery,
    ) -> impl Future<Output = Result<Vec<T>>> + Send {
        async move { decode_all(&self.rows(q).await?) }
    }

    /// Runs a statement that must not run inside a transaction block (e.g.
    /// `CREATE INDEX CONCURRENTLY`). On a plain connection or pool every
    /// statement already runs in its own implicit transaction, which is what
    /// these statements need.
    ///
    /// # Errors
    /// [`Error::InTransaction`] when this executor is a transaction; as
    /// [`run`](Self::run).
    fn run_outside_transaction(&self, q: &BuiltQuery) -> impl Future<Output = Result<u64>> + Send {
        async move {
            outside_transaction_check(self.is_transaction(), q)?;
            self.run(q).await
        }
    }
}

/// An async executor that can run several statements in one transaction.
pub trait Transactional: Executor {
    /// Runs `queries` in order inside one transaction (a savepoint when
    /// `self` is already a transaction) and commits; on the first error
    /// everything is rolled back and the error returned. Returns the
    /// affected-row count of each statement.
    ///
    /// # Errors
    /// As [`Executor::rows`], for the first statement that fails (or for
    /// `BEGIN`/`COMMIT`); nothing is committed then.
    fn run_in_transaction(
        &mut self,
        queries: &[BuiltQuery],
    ) -> impl Future<Output = Result<Vec<u64>>> + Send;

    /// Runs `q` inside a transaction (a savepoint when `self` is already a
    /// transaction) that is then **rolled back**, and returns its rows:
    /// whatever the statement changed is undone (`EXPLAIN ANALYZE` of an
    /// `UPDATE`, a dry run).
    ///
    /// # Errors
    /// As [`Executor::rows`]; the transaction is rolled back either way.
    fn rows_rolled_back(
        &mut self,
        q: &BuiltQuery,
    ) -> impl Future<Output = Result<Vec<Self::Row>>> + Send;
}

macro_rules! forward_executor {
    ($($wrapper:ty),+) => {$(
        impl<E: Executor + ?Sized> Executor for $wrapper {
            type Row = E::Row;
            fn rows(&self, q: &BuiltQuery) -> impl Future<Output = Result<Vec<Self::Row>>> + Send {
                (**self).rows(q)
            }
            fn run(&self, q: &BuiltQuery) -> impl Future<Output = Result<u64>> + Send {
                (**self).run(q)
            }
            fn run_script(&self, sql: &str) -> impl Future<Output = Result<()>> + Send {
                (**self).run_script(sql)
            }
            fn is_transaction(&self) -> bool {
                (**self).is_transaction()
            }
        }
    )+};
}

forward_executor!(&E, &mut E, Box<E>, Arc<E>);

impl<E: Transactional + ?Sized> Transactional for &mut E {
    fn run_in_transaction(
        &mut self,
        queries: &[BuiltQuery],
    ) -> impl Future<Output = Result<Vec<u64>>> + Send {
        (**self).run_in_transaction(queries)
    }

    fn rows_rolled_back(
        &mut self,
        q: &BuiltQuery,
    ) -> impl Future<Output = Result<Vec<Self::Row>>> + Send {
        (**self).rows_rolled_back(q)
    }
}

/// A blocking PostgreSQL client that runs [`BuiltQuery`]s: the sync twin of
/// [`Executor`] (methods take `&mut self`, like `postgres::Client`). Every
/// async run verb of the crate has a `_blocking` form that takes one; it runs
/// the async verb's own code over this client (the futures are complete at
/// once), so the two can never disagree.
pub trait BlockingExecutor {
    /// The client's row type.
    type Row: RowRead;

    /// Runs a statement and returns its rows. Like `postgres::Client::query`.
    ///
    /// # Errors
    /// As [`Executor::rows`].
    fn rows(&mut self, q: &BuiltQuery) -> Result<Vec<Self::Row>>;

    /// Runs a statement and returns the number of rows it affected.
    ///
    /// # Errors
    /// As [`Executor::run`].
    fn run(&mut self, q: &BuiltQuery) -> Result<u64>;

    /// Runs parameterless SQL text through the simple-query protocol (see
    /// [`Executor::run_script`]).
    ///
    /// # Errors
    /// As [`Executor::run_script`].
    fn run_script(&mut self, sql: &str) -> Result<()>;

    /// Runs `queries` in one transaction (a savepoint inside a transaction)
    /// and commits; rolls back on the first error.
    ///
    /// # Errors
    /// As [`Transactional::run_in_transaction`].
    fn run_in_transaction(&mut self, queries: &[BuiltQuery]) -> Result<Vec<u64>>;

    /// Runs `q` in a transaction (a savepoint inside a transaction) that is
    /// then rolled back, and returns its rows (see
    /// [`Transactional::rows_rolled_back`]).
    ///
    /// # Errors
    /// As [`Transactional::rows_rolled_back`].
    fn rows_rolled_back(&mut self, q: &BuiltQuery) -> Result<Vec<Self::Row>>;

    /// `true` when this executor is a transaction.
    fn is_transaction(&self) -> bool {
        false
    }

    /// Runs a statement that returns exactly one row.
    ///
    /// # Errors
    /// [`Error::RowCount`] for zero rows or more than one; as
    /// [`rows`](Self::rows).
    fn one_row(&mut self, q: &BuiltQuery) -> Result<Self::Row> {
        exactly_one(self.rows(q)?)
    }

    /// Runs a statement that returns at most one row.
    ///
    /// # Errors
    /// [`Error::RowCount`] for more than one row; as [`rows`](Self::rows).
    fn optional_row(&mut self, q: &BuiltQuery) -> Result<Option<Self::Row>> {
        at_most_one(self.rows(q)?)
    }

    /// Runs a statement and decodes each row as `T`.
    ///
    /// # Errors
    /// [`Error::Decode`] when a row is not a `T`; as [`rows`](Self::rows).
    fn rows_as<T: FromRow>(&mut self, q: &BuiltQuery) -> Result<Vec<T>> {
        decode_all(&self.rows(q)?)
    }

    /// Runs a statement that must not run inside a transaction block.
    ///
    /// # Errors
    /// [`Error::InTransaction`] when this executor is a transaction; as
    /// [`run`](Self::run).
    fn run_outside_transaction(&mut self, q: &BuiltQuery) -> Result<u64> {
        outside_transaction_check(self.is_transaction(), q)?;
        self.run(q)
    }
}

impl<E: BlockingExecutor + ?Sized> BlockingExecutor for &mut E {
    type Row = E::Row;
    fn rows(&mut self, q: &BuiltQuery) -> Result<Vec<Self::Row>> {
        (**self).rows(q)
    }
    fn run(&mut self, q: &BuiltQuery) -> Result<u64> {
        (**self).run(q)
    }
    fn run_script(&mut self, sql: &str) -> Result<()> {
        (**self).run_script(sql)
    }
    fn run_in_transaction(&mut self, queries: &[BuiltQuery]) -> Result<Vec<u64>> {
        (**self).run_in_transaction(queries)
    }
    fn rows_rolled_back(&mut self, q: &BuiltQuery) -> Result<Vec<Self::Row>> {
        (**self).rows_rolled_back(q)
    }
    fn is_transaction(&self) -> bool {
        (**self).is_transaction()
    }
}

/// Run verbs on a built query. They take the client as an argument, so
/// importing pgpatterns never changes what a client's own `query` or
/// `execute` means (the same shape as sqlx's `query(..).fetch_all(&pool)`).
/// Each has a `_blocking` form for [`BlockingExecutor`]s.
///
/// ```no_run
/// # async fn demo(client: &tokio_postgres::Client) -> pgpatterns::Result<()> {
/// use pgpatterns::{BuiltQuery, SqlType};
/// let q = BuiltQuery::fixed_with("SELECT g FROM generate_series(1, $1::int8) AS g", [3i64.into_value()]);
/// let rows: Vec<(i64,)> = q.fetch_all(client).await?;
/// assert_eq!(rows.len(), 3);
/// # Ok(()) }
/// ```
impl BuiltQuery {
    /// Runs the query and decodes every row as `T` (a tuple, or a type
    /// implementing [`FromRow`]).
    ///
    /// # Errors
    /// The database's error, or [`Error::Decode`] when a row is not a `T`.
    pub async fn fetch_all<T: FromRow + Send>(&self, db: &impl Executor) -> Result<Vec<T>> {
        db.rows_as(self).await
    }

    /// Runs the query, which must return exactly one row, decoded as `T`.
    ///
    /// # Errors
    /// [`Error::RowCount`] for zero rows or more than one; the database's
    /// error; [`Error::Decode`].
    pub async fn fetch_one<T: FromRow>(&self, db: &impl Executor) -> Result<T> {
        T::from_row(&db.one_row(self).await?)
    }

    /// Runs the query, which must return at most one row, decoded as `T`.
    ///
    /// # Errors
    /// [`Error::RowCount`] for more than one row; the database's error;
    /// [`Error::Decode`].
    pub async fn fetch_optional<T: FromRow>(&self, db: &impl Executor) -> Result<Option<T>> {
        db.optional_row(self)
            .await?
            .map(|row| T::from_row(&row))
            .transpose()
    }

    /// Runs the query and returns the client's own rows.
    ///
    /// # Errors
    /// The database's error.
    pub async fn fetch_rows<E: Executor>(&self, db: &E) -> Result<Vec<E::Row>> {
        db.rows(self).await
    }

    /// Runs a statement and returns how many rows it affected.
    ///
    /// # Errors
    /// The database's error.
    pub async fn execute(&self, db: &impl Executor) -> Result<u64> {
        db.run(self).await
    }

    /// Runs a statement that must not run inside a transaction block
    /// (`CREATE INDEX CONCURRENTLY`).
    ///
    /// # Errors
    /// [`Error::InTransaction`] when `db` is a transaction; the database's
    /// error.
    pub async fn execute_outside_transaction(&self, db: &impl Executor) -> Result<u64> {
        db.run_outside_transaction(self).await
    }

    /// [`fetch_all`](Self::fetch_all) on a blocking client.
    ///
    /// # Errors
    /// As [`fetch_all`](Self::fetch_all).
    pub fn fetch_all_blocking<T: FromRow>(&self, db: &mut impl BlockingExecutor) -> Result<Vec<T>> {
        db.rows_as(self)
    }

    /// [`fetch_one`](Self::fetch_one) on a blocking client.
    ///
    /// # Errors
    /// As [`fetch_one`](Self::fetch_one).
    pub fn fetch_one_blocking<T: FromRow>(&self, db: &mut impl BlockingExecutor) -> Result<T> {
        T::from_row(&db.one_row(self)?)
    }

    /// [`fetch_optional`](Self::fetch_optional) on a blocking client.
    ///
    /// # Errors
    /// As [`fetch_optional`](Self::fetch_optional).
    pub fn fetch_optional_blocking<T: FromRow>(
        &self,
        db: &mut impl BlockingExecutor,
    ) -> Result<Option<T>> {
        db.optional_row(self)?
            .map(|row| T::from_row(&row))
            .transpose()
    }

    /// [`fetch_rows`](Self::fetch_rows) on a blocking client.
    ///
    /// # Errors
    /// The database's error.
    pub fn fetch_rows_blocking<C: BlockingExecutor>(&self, db: &mut C) -> Result<Vec<C::Row>> {
        db.rows(self)
    }

    /// [`execute`](Self::execute) on a blocking client.
    ///
    /// # Errors
    /// The database's error.
    pub fn execute_blocking(&self, db: &mut impl BlockingExecutor) -> Result<u64> {
        db.run(self)
    }

    /// [`execute_outside_transaction`](Self::execute_outside_transaction)
    /// on a blocking client.
    ///
    /// # Errors
    /// As [`execute_outside_transaction`](Self::execute_outside_transaction).
    pub fn execute_outside_transaction_blocking(
        &self,
        db: &mut impl BlockingExecutor,
    ) -> Result<u64> {
        db.run_outside_transaction(self)
    }
}
