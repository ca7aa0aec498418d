//! [`Executor`] and [`Transactional`] for `sqlx::PgPool`, and for a
//! `sqlx::PgConnection` or `sqlx::Transaction` wrapped in [`SqlxConn`].
//!
//! Values are bound the way every other client of this crate binds them:
//! [`BuiltQuery::typed_params`] decides each parameter's PostgreSQL type,
//! postgres-types writes it in PostgreSQL's binary format, and those bytes go
//! to sqlx as they are, declared with that type. Rows are read back with
//! postgres-types as well (sqlx receives every column of an extended-protocol
//! query in binary), so a value reads the same through sqlx as through
//! tokio-postgres, and none of sqlx's own type features are needed.
//!
//! sqlx parses a statement (and waits for the server's answer) before it
//! binds and executes it: two round trips per statement. pgpatterns asks for
//! an unnamed statement each time (sqlx's `persistent(false)`), so the types
//! it declares are the ones the server uses for every execution and no named
//! statement is left on the server.
//!
//! Not behind a transaction-mode pooler (PgBouncer `pool_mode =
//! transaction`): the pooler may hand the connection to another client
//! between the parse and the execution, and the unnamed statement with it
//! (the execution then fails with SQLSTATE 26000, "unnamed prepared
//! statement does not exist", or binds another client's statement).
//! Use the tokio-postgres or deadpool executors there, which send each
//! statement in one message sequence.

use std::fmt;
use std::ops::DerefMut;

use bytes::BytesMut;
use postgres_types::{FromSqlOwned, IsNull as PgIsNull, Kind, Type, WrongType};
use sqlx::encode::{Encode, IsNull};
use sqlx::error::BoxDynError;
use sqlx::postgres::types::Oid;
use sqlx::postgres::{
    PgArgumentBuffer, PgArguments, PgConnection, PgDatabaseError, PgPool, PgRow, PgTypeInfo,
    PgTypeKind, PgValueFormat, Postgres,
};
use sqlx::{Arguments, Column, Connection, Executor as _, Row, TypeInfo, ValueRef};
use tokio::sync::Mutex;

use super::common::{chain_text, decode_error, locate, server_message};
use super::{ColumnIndex, Executor, RowRead, Transactional};
use crate::{BuiltQuery, Error, Result};

/// A sqlx connection as an [`Executor`]: a `&mut PgConnection`, a
/// `sqlx::Transaction<'_, Postgres>` or a pooled `PoolConnection<Postgres>`
/// (anything that dereferences to a mutable `PgConnection`).
///
/// sqlx runs a statement on a connection through `&mut`, while
/// [`Executor`]'s methods take `&self` (so one client can serve queries from
/// several tasks, as a tokio-postgres `Client` or a pool does). The wrapper
/// holds the connection behind an async mutex: statements sent through one
/// `SqlxConn` at the same time run one after the other, as they would on
/// the connection anyway. [`Transactional`] takes `&mut self` and reaches
/// the connection without locking.
///
/// A `sqlx::PgPool` needs no wrapper: it is an [`Executor`] itself.
///
/// ```no_run
/// # async fn demo(pool: sqlx::PgPool) -> Result<(), Box<dyn std::error::Error>> {
/// use pgpatterns::{BuiltQuery, Executor, SqlType, SqlxConn};
/// let q = BuiltQuery::fixed_with("SELECT $1::int8 * 2", [21i64.into_value()]);
/// // A pool runs each statement on a connection it lends.
/// let (n,): (i64,) = q.fetch_one(&pool).await?;
/// assert_eq!(n, 42);
///
/// // A transaction: wrap it, run statements, take it back to commit.
/// let tx = SqlxConn::new(pool.begin().await?);
/// assert!(tx.is_transaction());
/// assert_eq!(q.fetch_one::<(i64,)>(&tx).await?, (42,));
/// tx.into_inner().commit().await?;
/// # Ok(()) }
/// ```
pub struct SqlxConn<C> {
    conn: Mutex<C>,
    in_transaction: bool,
}

impl<C: DerefMut<Target = PgConnection>> SqlxConn<C> {
    /// Wraps a connection (or a transaction). Whether it is a transaction
    /// ([`Executor::is_transaction`]) is read now, from the connection.
    #[must_use]
    pub fn new(conn: C) -> Self {
        let in_transaction = conn.is_in_transaction();
        SqlxConn {
            conn: Mutex::new(conn),
            in_transaction,
        }
    }

    /// The connection (or transaction) back, e.g. to commit it.
    #[must_use]
    pub fn into_inner(self) -> C {
        self.conn.into_inner()
    }

    /// The connection, without locking (the `&mut` proves no statement is
    /// running on it).
    pub fn get_mut(&mut self) -> &mut C {
        self.conn.get_mut()
    }
}

impl<C> fmt::Debug for SqlxConn<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlxConn")
            .field("in_transaction", &self.in_transaction)
            .finish_non_exhaustive()
    }
}

impl Executor for PgPool {
    type Row = PgRow;

    async fn rows(&self, q: &BuiltQuery) -> Result<Vec<PgRow>> {
        fetch_rows(self, q).await
    }

    async fn run(&self, q: &BuiltQuery) -> Result<u64> {
        execute(self, q).await
    }

    async fn run_script(&self, sql: &str) -> Result<()> {
        script(self, sql).await
    }
}

impl Transactional for PgPool {
    async fn run_in_transaction(&mut self, queries: &[BuiltQuery]) -> Result<Vec<u64>> {
        let tx = self.begin().await.map_err(|e| db_error("BEGIN", e))?;
        run_and_commit(tx, queries).await
    }

    async fn rows_rolled_back(&mut self, q: &BuiltQuery) -> Result<Vec<PgRow>> {
        let tx = self.begin().await.map_err(|e| db_error("BEGIN", e))?;
        run_and_roll_back(tx, q).await
    }
}

impl<C: DerefMut<Target = PgConnection> + Send> Executor for SqlxConn<C> {
    type Row = PgRow;

    async fn rows(&self, q: &BuiltQuery) -> Result<Vec<PgRow>> {
        // Checked before waiting for the connection.
        let args = arguments(q)?;
        let mut conn = self.conn.lock().await;
        fetch_rows_with(&mut **conn, q, args).await
    }

    async fn run(&self, q: &BuiltQuery) -> Result<u64> {
        let args = arguments(q)?;
        let mut conn = self.conn.lock().await;
        execute_with(&mut **conn, q, args).await
    }

    async fn run_script(&self, sql: &str) -> Result<()> {
        let mut conn = self.conn.lock().await;
        let conn: &mut PgConnection = &mut conn;
        conn.execute(sqlx::raw_sql(sql))
            .await
            .map(drop)
            .map_err(|err| db_error(sql, err))
    }

    fn is_transaction(&self) -> bool {
        self.in_transaction
    }
}

impl<C: DerefMut<Target = PgConnection> + Send> Transactional for SqlxConn<C> {
    /// In a transaction, sqlx makes the inner transaction a savepoint.
    async fn run_in_transaction(&mut self, queries: &[BuiltQuery]) -> Result<Vec<u64>> {
        let label = begin_label(self.in_transaction);
        let conn: &mut PgConnection = self.conn.get_mut();
        let tx = conn.begin().await.map_err(|e| db_error(label, e))?;
        run_and_commit(tx, queries).await
    }

    async fn rows_rolled_back(&mut self, q: &BuiltQuery) -> Result<Vec<PgRow>> {
        let label = begin_label(self.in_transaction);
        let conn: &mut PgConnection = self.conn.get_mut();
        let tx = conn.begin().await.map_err(|e| db_error(label, e))?;
        run_and_roll_back(tx, q).await
    }
}

fn begin_label(in_transaction: bool) -> &'static str {
    if in_transaction {
        "SAVEPOINT"
    } else {
        "BEGIN"
    }
}

/// Runs `queries` on an open transaction (or savepoint), then commits it;
/// rolls it back on the first error.
async fn run_and_commit(
    mut tx: sqlx::Transaction<'_, Postgres>,
    queries: &[BuiltQuery],
) -> Result<Vec<u64>> {
    let mut counts = Vec::with_capacity(queries.len());
    for q in queries {
        match execute(&mut *tx, q).await {
            Ok(n) => counts.push(n),
            Err(e) => {
                // The statement's error is the one to report; a failed
                // rollback leaves the connection broken, which sqlx notices.
                let _ = tx.rollback().await;
                return Err(e);
            }
        }
    }
    tx.commit().await.map_err(|e| db_error("COMMIT", e))?;
    Ok(counts)
}

/// Runs `q` on an open transaction (or savepoint), then rolls it back.
async fn run_and_roll_back(
    mut tx: sqlx::Transaction<'_, Postgres>,
    q: &BuiltQuery,
) -> Result<Vec<PgRow>> {
    let rows = fetch_rows(&mut *tx, q).await;
    tx.rollback().await.map_err(|e| db_error("ROLLBACK", e))?;
    rows
}

async fn fetch_rows<'c, E>(e: E, q: &BuiltQuery) -> Result<Vec<PgRow>>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let args = arguments(q)?;
    fetch_rows_with(e, q, args).await
}

async fn fetch_rows_with<'c, E>(e: E, q: &BuiltQuery, args: PgArguments) -> Result<Vec<PgRow>>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    sqlx::query_with(q.sql(), args)
        .persistent(false)
        .fetch_all(e)
        .await
        .map_err(|err| db_error(q.sql(), err))
}

async fn execute<'c, E>(e: E, q: &BuiltQuery) -> Result<u64>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let args = arguments(q)?;
    execute_with(e, q, args).await
}

async fn execute_with<'c, E>(e: E, q: &BuiltQuery, args: PgArguments) -> Result<u64>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    sqlx::query_with(q.sql(), args)
        .persistent(false)
        .execute(e)
        .await
        .map(|done| done.rows_affected())
        .map_err(|err| db_error(q.sql(), err))
}

/// Parameterless SQL text through the simple-query protocol.
async fn script<'c, E>(e: E, sql: &'c str) -> Result<()>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    sqlx::raw_sql(sql)
        .execute(e)
        .await
        .map(drop)
        .map_err(|err| db_error(sql, err))
}

/// The query's values as sqlx arguments: each written by postgres-types in
/// binary and declared with the type [`BuiltQuery::typed_params`] gives it.
fn arguments(q: &BuiltQuery) -> Result<PgArguments> {
    q.check()?;
    let typed = q.typed_params()?;
    if typed.needs_server_types() {
        return Err(Error::spec(
            "value",
            "a value needs its PostgreSQL type from the server (an array of a \
             PostgreSQL enum, or a value kind pgpatterns does not know), which \
             the sqlx executor does not ask for; send the array as text[] and \
             cast it in SQL, or use the tokio-postgres executor",
        ));
    }
    let mut args = PgArguments::default();
    args.reserve(typed.len(), 0);
    let mut scratch = BytesMut::new();
    for (i, (value, ty)) in typed.pairs().enumerate() {
        let cannot = |e: &dyn fmt::Display| {
            Error::spec(
                "value",
                format!("parameter ${}: cannot be sent as {ty}: {e}", i + 1),
            )
        };
        scratch.clear();
        let bytes = match value.to_sql_checked(&ty, &mut scratch) {
            Ok(PgIsNull::No) => Some(&scratch[..]),
            Ok(PgIsNull::Yes) => None,
            Err(e) => return Err(cannot(&e)),
        };
        args.add(Encoded {
            bytes,
            oid: ty.oid(),
        })
        .map_err(|e| cannot(&e))?;
    }
    Ok(args)
}

/// A value already in PostgreSQL's binary format, with its type's OID.
struct Encoded<'a> {
    /// `None` for NULL.
    bytes: Option<&'a [u8]>,
    oid: u32,
}

impl sqlx::Type<Postgres> for Encoded<'_> {
    /// Never used: [`Encode::produces`] gives each value's own type.
    fn type_info() -> PgTypeInfo {
        PgTypeInfo::with_oid(Oid(Type::UNKNOWN.oid()))
    }
}

impl Encode<'_, Postgres> for Encoded<'_> {
    fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
        Ok(match self.bytes {
            Some(bytes) => {
                buf.extend_from_slice(bytes);
                IsNull::No
            }
            None => IsNull::Yes,
        })
    }

    fn produces(&self) -> Option<PgTypeInfo> {
        Some(PgTypeInfo::with_oid(Oid(self.oid)))
    }

    fn size_hint(&self) -> usize {
        self.bytes.map_or(0, <[u8]>::len)
    }
}

/// Read with postgres-types from the binary value sqlx received, so every
/// type reads as it does through tokio-postgres.
impl RowRead for PgRow {
    fn try_get<T: FromSqlOwned>(&self, idx: ColumnIndex<'_>) -> Result<T> {
        let columns = Row::columns(self);
        let (i, column) = locate(idx, columns.len(), |i| columns[i].name())
            .map_err(|(column, why)| decode_error::<T>(column, why))?;
        let value = match self.try_get_raw(i) {
            Ok(value) => value,
            Err(e) => return Err(decode_error::<T>(column, Box::new(e))),
        };
        let ty = postgres_type(&value.type_info());
        if !T::accepts(&ty) {
            return Err(decode_error::<T>(column, Box::new(WrongType::new::<T>(ty))));
        }
        let raw = if value.is_null() {
            None
        } else if matches!(value.format(), PgValueFormat::Text) {
            let why = format!("the {ty} value came in text format, not binary");
            return Err(decode_error::<T>(column, why.into()));
        } else {
            Some(
                value
                    .as_bytes()
                    .map_err(|e| decode_error::<T>(column.clone(), e))?,
            )
        };
        T::from_sql_nullable(&ty, raw).map_err(|e| decode_error::<T>(column, e))
    }

    fn len(&self) -> usize {
        Row::len(self)
    }

    fn column_name(&self, idx: usize) -> Option<&str> {
        Row::columns(self).get(idx).map(Column::name)
    }
}

/// The postgres-types `Type` of a column sqlx describes: a built-in type by
/// its OID; otherwise (a user-defined type) its name and OID, with its
/// labels when it is an enum.
fn postgres_type(info: &PgTypeInfo) -> Type {
    let oid = info.oid().map_or(0, |oid| oid.0);
    Type::from_oid(oid).unwrap_or_else(|| {
        let kind = match info.kind() {
            PgTypeKind::Enum(labels) => Kind::Enum(labels.to_vec()),
            _ => Kind::Simple,
        };
        Type::new(info.name().to_owned(), oid, kind, String::new())
    })
}

/// Maps a sqlx error for `sql` to [`Error::Database`], as the other clients'
/// errors are: the SQLSTATE and the server's message, detail and hint; or,
/// without a server error, what went wrong (with its causes).
pub(crate) fn db_error(sql: &str, e: sqlx::Error) -> Error {
    let (code, message) = match &e {
        sqlx::Error::Database(db) => match db.try_downcast_ref::<PgDatabaseError>() {
            Some(pg) => (
                Some(pg.code().to_owned()),
                server_message(pg.message(), pg.detail(), pg.hint()),
            ),
            None => (db.code().map(|c| c.into_owned()), db.message().to_owned()),
        },
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => (
            None,
            format!("could not get a pooled connection: {}", chain_text(&e)),
        ),
        _ => (None, chain_text(&e)),
    };
    Error::Database {
        sql: sql.to_owned(),
        code,
        message,
        client: Box::new(e),
    }
}
