//! Archive mover: move rows older than a cutoff from a live table to its
//! archive twin in batches (built for a 10 M-row orders table).
//!
//! Each batch is **one statement**,
//!
//! ```sql
//! WITH moved AS (
//!     DELETE FROM live WHERE key IN (
//!         SELECT key FROM live WHERE time < $1
//!         ORDER BY time, key LIMIT $2 FOR UPDATE SKIP LOCKED)
//!     RETURNING c1, c2, …)
//! INSERT INTO archive (c1, c2, …) SELECT c1, c2, … FROM moved
//! ```
//!
//! so a batch either moves its rows (deleted from live *and* inserted into
//! the archive) or does nothing: killing the process, the task or the
//! connection between or during batches loses and duplicates nothing, and
//! running the mover again carries on. `SKIP LOCKED` leaves rows that live
//! writers hold locked for a later batch instead of waiting for them.

use std::time::Instant;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use postgres_types::FromSqlOwned;
use sea_query::{
    Alias, CommonTableExpression, Expr, ExprTrait, Index, LockBehavior, LockType, Order, Query,
    SelectStatement, UnionType, WindowStatement, WithClause,
};

use super::batch::check_batch_size;
use super::BatchReport;
use crate::ddl::{derived_name, quote_table};
use crate::exec::{run_blocking, BlockingExecutor};
use crate::schema::{qualified, Column, Ident, Table};
use crate::spec::Problems;
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Executor, Progress, Result, RowRead};

const MOVED: &str = "pgp_moved";
const COPIED: &str = "pgp_copied";
const MOVED_COUNT: &str = "pgp_count";

/// A time type a cutoff can be given in, and compared with the present.
///
/// [`Archiver::run`] does not use the client's clock: it asks the server
/// (see [`Archiver::future_check_statement`]).
pub trait CutoffTime: SqlType {
    /// `true` when the value lies after the client's current time (a
    /// `NaiveDateTime`/`NaiveDate` is read as UTC).
    fn is_future(&self) -> bool;
}

impl CutoffTime for DateTime<Utc> {
    fn is_future(&self) -> bool {
        *self > Utc::now()
    }
}

impl CutoffTime for NaiveDateTime {
    fn is_future(&self) -> bool {
        *self > Utc::now().naive_utc()
    }
}

impl CutoffTime for NaiveDate {
    fn is_future(&self) -> bool {
        *self > Utc::now().date_naive()
    }
}

/// Moves rows of a live table whose time column is before a cutoff into an
/// archive table with the same columns.
///
/// ```
/// use chrono::{DateTime, TimeZone, Utc};
/// use pgpatterns::ops::archive::Archiver;
/// use pgpatterns::{Ident, Table};
///
/// let orders = Table::new("orders")?;
/// let mover = Archiver::new(
///     &orders.column::<i64>("id")?,
///     &orders.column::<DateTime<Utc>>("created_at")?,
///     &Table::new("orders_archive")?,
/// )
/// .batch_size(10_000);
/// assert_eq!(
///     mover.create_statement()?.sql(),
///     r#"CREATE TABLE IF NOT EXISTS "orders_archive" (LIKE "orders" INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)"#
/// );
/// let columns = [Ident::new("id")?, Ident::new("created_at")?];
/// let cutoff = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
/// let batch = mover.move_statement(&columns, cutoff, Some((cutoff, 42)))?;
/// assert_eq!(
///     batch.sql(),
///     r#"WITH "pgp_moved" AS (DELETE FROM "orders" WHERE "orders"."id" IN (SELECT "orders"."id" FROM "orders" WHERE "orders"."created_at" < CAST($1 AS timestamptz) AND ("orders"."created_at", "orders"."id") > (CAST($2 AS timestamptz), CAST($3 AS int8)) ORDER BY "orders"."created_at" ASC, "orders"."id" ASC LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING "id", "created_at") , "pgp_copied" AS (INSERT INTO "orders_archive" ("id", "created_at") SELECT "id", "created_at" FROM "pgp_moved") SELECT "pgp_moved"."created_at", "pgp_moved"."id", COUNT(*) OVER (  ) AS "pgp_count" FROM "pgp_moved" ORDER BY "pgp_moved"."created_at" DESC, "pgp_moved"."id" DESC LIMIT $5"#
/// );
/// assert_eq!(batch.values().0.len(), 5);
/// // A batch size of zero is refused before anything is sent.
/// assert!(mover.clone().batch_size(0).check().is_err());
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "an archiver does nothing until it is run"]
pub struct Archiver<K: SqlType, T: SqlType> {
    live: Table,
    archive: Table,
    key: Column<K>,
    time: Column<T>,
    batch_size: i64,
    allow_future: bool,
    create_missing: bool,
    problems: Problems,
}

impl<K: SqlType, T: CutoffTime> Archiver<K, T> {
    /// Moves rows of `key`'s table (its primary key) ordered by `time` into
    /// `archive`. Defaults: 5 000 rows per batch, the archive created when
    /// missing, cutoffs in the future refused (see
    /// [`allow_future_cutoff`](Self::allow_future_cutoff)).
    ///
    /// Like every step, this never fails: the archiver is checked by
    /// [`check`](Self::check) and by every method that makes SQL or runs,
    /// which refuse `key` and `time` that are not columns of one table, an
    /// aliased table, or an `archive` that is the live table itself.
    pub fn new(key: &Column<K>, time: &Column<T>, archive: &Table) -> Self {
        let live = key.table().clone();
        let mut problems = Problems::default();
        if time.table() != &live {
            problems.note::<()>(Err(Error::spec(
                "columns",
                format!(
                    "key and time must be columns of one table, got {} and {}",
                    live.display_name(),
                    time.table().display_name()
                ),
            )));
        }
        if live.alias().is_some() || archive.alias().is_some() {
            problems.note::<()>(Err(Error::spec(
                "table",
                "use the tables themselves, not aliases: rows are deleted and inserted",
            )));
        }
        if live.name() == archive.name() && live.schema() == archive.schema() {
            problems.note::<()>(Err(Error::spec(
                "archive",
                format!(
                    "the archive must be another table than {}",
                    live.display_name()
                ),
            )));
        }
        Self {
            live,
            archive: archive.clone(),
            key: key.clone(),
            time: time.clone(),
            batch_size: 5_000,
            allow_future: false,
            create_missing: true,
            problems,
        }
    }

    /// Rows per batch (one statement each); below 1 is refused when the
    /// archiver is checked.
    pub fn batch_size(mut self, rows: i64) -> Self {
        if self.problems.note(check_batch_size(rows)).is_some() {
            self.batch_size = rows;
        }
        self
    }

    /// Checks the archiver: the first problem a step recorded. Every method
    /// that makes SQL or runs checks first.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for the first problem: see
    /// [`new`](Self::new) and [`batch_size`](Self::batch_size).
    pub fn check(&self) -> Result<()> {
        self.problems.check()
    }

    /// Refuse a cutoff in the future (which would archive rows written just
    /// now): [`run`](Self::run) then fails with [`Error::InvalidSpec`]
    /// before any row is moved. This is the default.
    pub fn forbid_future_cutoff(mut self) -> Self {
        self.allow_future = false;
        self
    }

    /// Accept a cutoff in the future: rows written up to the start of the
    /// run are archived too. A run still ends: it only moves rows up to the
    /// last `(time, key)` before the cutoff that existed when it started.
    pub fn allow_future_cutoff(mut self) -> Self {
        self.allow_future = true;
        self
    }

    /// Whether [`prepare`](Self::prepare) creates a missing archive table
    /// (default `true`); with `false` a missing archive is an error.
    pub fn create_missing(mut self, create: bool) -> Self {
        self.create_missing = create;
        self
    }

    /// The live table.
    #[must_use]
    pub fn live(&self) -> &Table {
        &self.live
    }

    /// The archive table.
    #[must_use]
    pub fn archive(&self) -> &Table {
        &self.archive
    }

    /// `CREATE TABLE IF NOT EXISTS archive (LIKE live INCLUDING DEFAULTS
    /// INCLUDING CONSTRAINTS INCLUDING INDEXES)`: the same columns, checks
    /// and keys (so a duplicate could never be inserted silently); identity
    /// and generated columns become plain columns holding the moved values.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn create_statement(&self) -> Result<BuiltQuery> {
        self.check()?;
        Ok(BuiltQuery::generated(format!(
            "CREATE TABLE IF NOT EXISTS {} (LIKE {} INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING INDEXES)",
            quote_table(&self.archive),
            quote_table(&self.live)
        )))
    }

    /// The index that lets each batch find its oldest rows without a scan:
    /// `live (time, key)`, optionally `CONCURRENTLY` (run it with
    /// [`BuiltQuery::execute_outside_transaction`]).
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn index_advice(&self, concurrently: bool) -> Result<BuiltQuery> {
        self.check()?;
        let mut idx = Index::create();
        idx.name(
            derived_name(&[
                self.live.schema().map_or("", |s| s.as_str()),
                self.live.name().as_str(),
                self.time.name().as_str(),
                self.key.name().as_str(),
                "archive",
            ])
            .as_str(),
        )
        .table(self.live.table_name())
        .col(self.time.iden())
        .col(self.key.iden())
        .if_not_exists();
        if concurrently {
            idx.concurrently();
        }
        Ok(BuiltQuery::schema(&idx))
    }

    /// Creates the archive when missing (if allowed) and checks that both
    /// tables have the same columns (names and types, in any order).
    /// Returns the column names, for [`move_statement`](Self::move_statement)
    /// and [`union_all`](Self::union_all).
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] when the live table does not exist, the
    /// archive is missing and may not be created, or the columns differ;
    /// the database's error otherwise.
    pub async fn prepare<E: Executor>(&self, db: &E) -> Result<Vec<Ident>> {
        self.check()?;
        let live = table_columns(db, &self.live).await?;
        if live.is_empty() {
            return Err(Error::spec(
                "live",
                format!("table {} does not exist", self.live.display_name()),
            ));
        }
        let mut archive = table_columns(db, &self.archive).await?;
        if archive.is_empty() {
            if !self.create_missing {
                return Err(Error::spec(
                    "archive",
                    format!("table {} does not exist", self.archive.display_name()),
                ));
            }
            db.run(&self.create_statement()?).await?;
            archive = table_columns(db, &self.archive).await?;
        }
        let mut a = live.clone();
        let mut b = archive;
        a.sort();
        b.sort();
        if a != b {
            let only = |x: &[(String, String)], y: &[(String, String)]| {
                x.iter()
                    .filter(|c| !y.contains(c))
                    .map(|(n, t)| format!("{n} {t}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            return Err(Error::spec(
                "archive",
                format!(
                    "{} and {} have different columns (only in live: [{}]; only in archive: [{}])",
                    self.live.display_name(),
                    self.archive.display_name(),
                    only(&a, &b),
                    only(&b, &a)
                ),
            ));
        }
        live.into_iter().map(|(name, _)| Ident::new(name)).collect()
    }

    /// [`prepare`](Self::prepare) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`prepare`](Self::prepare).
    pub fn prepare_blocking<C>(&self, db: &mut C) -> Result<Vec<Ident>>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.prepare(db).await)
    }

    /// One batch (see the [module docs](self)) moving up to the batch size
    /// of the oldest rows with `time < cutoff` — and, given `after`, with
    /// `(time, key) > after` — copying `columns`. It returns one row, the
    /// last moved `(time, key)` and the number of rows moved, or no row when
    /// nothing was moved:
    ///
    /// ```sql
    /// WITH moved AS (DELETE … RETURNING c…),
    ///      copied AS (INSERT INTO archive (c…) SELECT c… FROM moved)
    /// SELECT time, key, COUNT(*) OVER () FROM moved
    /// ORDER BY time DESC, key DESC LIMIT 1
    /// ```
    ///
    /// The cursor matters at scale: the entries of rows already moved stay
    /// in the `(time, key)` index until vacuum, and without it every batch
    /// would walk over all of them again.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn move_statement(
        &self,
        columns: &[Ident],
        cutoff: T,
        after: Option<(T, K)>,
    ) -> Result<BuiltQuery> {
        self.move_statement_upto(columns, cutoff, after, None)
    }

    /// [`move_statement`](Self::move_statement) that, given `upto`, only
    /// moves rows with `(time, key) <= upto` as well: [`run`](Self::run)
    /// passes the last row before the cutoff when it started, so rows
    /// written during the run are never chased.
    ///
    /// ```
    /// # use chrono::{DateTime, TimeZone, Utc};
    /// # use pgpatterns::ops::archive::Archiver;
    /// # use pgpatterns::{Ident, Table};
    /// # let orders = Table::new("orders")?;
    /// # let mover = Archiver::new(
    /// #     &orders.column::<i64>("id")?,
    /// #     &orders.column::<DateTime<Utc>>("created_at")?,
    /// #     &Table::new("orders_archive")?,
    /// # );
    /// let cutoff = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    /// let batch = mover.move_statement_upto(&[Ident::new("id")?], cutoff, None, Some((cutoff, 7)))?;
    /// assert!(batch.sql().contains(
    ///     r#"WHERE "orders"."created_at" < CAST($1 AS timestamptz) AND ("orders"."created_at", "orders"."id") <= (CAST($2 AS timestamptz), CAST($3 AS int8)) ORDER BY"#
    /// ));
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn move_statement_upto(
        &self,
        columns: &[Ident],
        cutoff: T,
        after: Option<(T, K)>,
        upto: Option<(T, K)>,
    ) -> Result<BuiltQuery> {
        self.check()?;
        let mut pick = Query::select();
        pick.column(self.key.col_ref())
            .from(self.live.table_ref())
            .and_where(self.time.lt(cutoff));
        if let Some((t, k)) = after {
            pick.and_where(
                Expr::tuple([self.time.expr(), self.key.expr()])
                    .gt(Expr::tuple([t.param(), k.param()])),
            );
        }
        if let Some((t, k)) = upto {
            pick.and_where(
                Expr::tuple([self.time.expr(), self.key.expr()])
                    .lte(Expr::tuple([t.param(), k.param()])),
            );
        }
        pick.order_by(self.time.col_ref(), Order::Asc)
            .order_by(self.key.col_ref(), Order::Asc)
            .limit(self.batch_size as u64)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked);
        let delete = Query::delete()
            .from_table(self.live.table_name())
            .and_where(self.key.expr().in_subquery(pick))
            .returning(Query::returning().columns(columns.iter().cloned()))
            .to_owned();
        let mut copy = Query::select();
        copy.columns(columns.iter().cloned())
            .from(Alias::new(MOVED));
        let mut insert = Query::insert();
        insert
            .into_table(self.archive.table_name())
            .columns(columns.iter().cloned());
        // As many columns as expressions: cannot fail.
        let _ = insert.select_from(copy);
        let moved_col = |c: &Ident| Expr::col((Alias::new(MOVED), c.clone()));
        let last = Query::select()
            .expr(moved_col(self.time.name()))
            .expr(moved_col(self.key.name()))
            .expr_window_as(
                Expr::cust("COUNT(*)"),
                WindowStatement::new(),
                Alias::new(MOVED_COUNT),
            )
            .from(Alias::new(MOVED))
            .order_by_expr(moved_col(self.time.name()), Order::Desc)
            .order_by_expr(moved_col(self.key.name()), Order::Desc)
            .limit(1)
            .to_owned();
        let with = WithClause::new()
            .cte(
                CommonTableExpression::new()
                    .table_name(Alias::new(MOVED))
                    .query(delete)
                    .to_owned(),
            )
            .cte(
                CommonTableExpression::new()
                    .table_name(Alias::new(COPIED))
                    .query(insert)
                    .to_owned(),
            )
            .to_owned();
        Ok(BuiltQuery::new(&with.query(last)))
    }

    /// "Live + archive" as one relation: `SELECT c… FROM live UNION ALL
    /// SELECT c… FROM archive`. Use it as a subquery to filter, count or
    /// page over the full history.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn union_all(&self, columns: &[Ident]) -> Result<SelectStatement> {
        self.check()?;
        let part = |t: &Table| {
            Query::select()
                .columns(columns.iter().map(|c| qualified(t, c)))
                .from(t.table_ref())
                .to_owned()
        };
        Ok(part(&self.live)
            .union(UnionType::All, part(&self.archive))
            .to_owned())
    }

    /// `SELECT CAST($1 AS type) > clock_timestamp()`: whether the cutoff
    /// lies in the future by the **server's** clock. The comparison runs in
    /// the cutoff's own type, as the batches compare it with the column: a
    /// `timestamp` (or `date`) cutoff is read in the session's `TimeZone`,
    /// like `now()` stored into a `timestamp` column by this session.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn future_check_statement(&self, cutoff: T) -> Result<BuiltQuery> {
        self.check()?;
        Ok(BuiltQuery::new(
            &Query::select()
                .expr(cutoff.param().gt(Expr::cust("clock_timestamp()")))
                .to_owned(),
        ))
    }

    /// The last `(time, key)` before the cutoff and how many rows lie
    /// before the cutoff, as the run starts: one row, or none when no row
    /// is older than the cutoff.
    ///
    /// ```sql
    /// SELECT time, key, COUNT(*) OVER () FROM live WHERE time < $1
    /// ORDER BY time DESC, key DESC LIMIT 1
    /// ```
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn bound_statement(&self, cutoff: T) -> Result<BuiltQuery> {
        self.check()?;
        Ok(BuiltQuery::new(
            &Query::select()
                .expr(self.time.expr())
                .expr(self.key.expr())
                .expr_window_as(
                    Expr::cust("COUNT(*)"),
                    WindowStatement::new(),
                    Alias::new(MOVED_COUNT),
                )
                .from(self.live.table_ref())
                .and_where(self.time.lt(cutoff))
                .order_by(self.time.col_ref(), Order::Desc)
                .order_by(self.key.col_ref(), Order::Desc)
                .limit(1)
                .to_owned(),
        ))
    }

    /// Moves every row with `time < cutoff` that existed when the run
    /// started, one batch at a time: first in `(time, key)` order with a
    /// cursor until a batch moves nothing, then sweeps from the start until
    /// a batch moves nothing (rows a batch skipped because a writer held
    /// them locked). Every batch is bounded by the last `(time, key)` before
    /// the cutoff at the start ([`bound_statement`](Self::bound_statement)),
    /// so a run ends even when writers keep adding rows before a future
    /// cutoff; rows added later *below* that bound (back-dated) may be
    /// moved too. Reports the rows moved after each batch (the total is the
    /// count of such rows when the run began). Prepares the archive first
    /// ([`prepare`](Self::prepare)). Resumable: run it again after an
    /// interruption.
    ///
    /// # Errors
    /// As [`check`](Self::check); [`Error::InvalidSpec`] for a cutoff in
    /// the future by the server's
    /// clock ([`future_check_statement`](Self::future_check_statement))
    /// unless [allowed](Self::allow_future_cutoff), before any row is moved
    /// or the archive created; [`Error::InvalidSpec`] from
    /// [`prepare`](Self::prepare); the database's error (finished batches
    /// stay committed).
    pub async fn run<E: Executor>(
        &self,
        db: &E,
        cutoff: T,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<BatchReport>
    where
        K: FromSqlOwned,
        T: FromSqlOwned,
    {
        self.check()?;
        let started = Instant::now();
        if !self.allow_future {
            let future: bool = db
                .one_row(&self.future_check_statement(cutoff.clone())?)
                .await?
                .try_get(0usize.into())?;
            if future {
                return Err(Error::spec(
                    "cutoff",
                    format!(
                        "{cutoff:?} is in the future by the server's clock; \
                         allow_future_cutoff() accepts it"
                    ),
                ));
            }
        }
        let columns = self.prepare(db).await?;
        let mut report = BatchReport::default();
        let Some(bound) = db
            .optional_row(&self.bound_statement(cutoff.clone())?)
            .await?
        else {
            progress(Progress::new("archive", 0, Some(0)));
            report.elapsed = started.elapsed();
            return Ok(report);
        };
        let upto: (T, K) = (bound.try_get(0usize.into())?, bound.try_get(1usize.into())?);
        let total: i64 = bound.try_get(2usize.into())?;
        let total = Some(u64::try_from(total).unwrap_or(0));
        progress(Progress::new("archive", 0, total));
        // A cursor pass in (time, key) order, then sweeps from the start
        // for rows a batch skipped because a writer held them locked.
        let mut after: Option<(T, K)> = None;
        let mut sweeping = false;
        loop {
            let q = self.move_statement_upto(
                &columns,
                cutoff.clone(),
                after.clone(),
                Some(upto.clone()),
            )?;
            let row = db.optional_row(&q).await?;
            report.batches += 1;
            match row {
                Some(row) => {
                    let n: i64 = row.try_get(2usize.into())?;
                    report.rows += u64::try_from(n).unwrap_or(0);
                    progress(Progress::new("archive", report.rows, total));
                    if !sweeping {
                        after = Some((row.try_get(0usize.into())?, row.try_get(1usize.into())?));
                    }
                }
                None if sweeping => break,
                None => {
                    sweeping = true;
                    after = None;
                }
            }
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// [`run`](Self::run) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_blocking<C>(
        &self,
        db: &mut C,
        cutoff: T,
        progress: impl FnMut(Progress) + Send,
    ) -> Result<BatchReport>
    where
        K: FromSqlOwned,
        T: FromSqlOwned,
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.run(db, cutoff, progress).await)
    }
}

/// `(name, type)` of a table's columns in order, or none when the table
/// does not exist. The table's name travels as a bound value.
async fn table_columns<E: Executor>(db: &E, table: &Table) -> Result<Vec<(String, String)>> {
    let q = BuiltQuery::fixed_with(
        "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod) \
         FROM pg_catalog.pg_attribute a \
         WHERE a.attrelid = to_regclass($1::text) AND a.attnum > 0 AND NOT a.attisdropped \
         ORDER BY a.attnum",
        [quote_table(table).into_value()],
    );
    db.rows_as::<(String, String)>(&q).await
}
