//! Bounded recent history: "the last N products each user viewed" kept in
//! SQL.
//!
//! One row per `(owner, item)`; recording a view upserts that row and trims
//! the owner's rows beyond the newest N, in one transaction. Concurrent
//! recorders for the same owner are serialized by a transaction-scoped
//! advisory lock on `(table, owner)`, taken by the upsert itself; the trim
//! is the next statement, so under `READ COMMITTED` it sees every row
//! committed by the owner's previous recorders. Without that lock two
//! recorders each trim their own snapshot and the owner keeps N + 1 rows (or
//! loses a row that was just refreshed).

use std::time::Instant;

use postgres_types::FromSqlOwned;
use sea_query::{
    Alias, Expr, ExprTrait, Func, Index, IndexOrder, JoinType, OnConflict, Order, Query,
    SelectStatement, WindowStatement,
};

use super::BatchReport;
use crate::ddl::derived_name;
use crate::exec::{run_blocking, run_blocking_mut, BlockingExecutor};
use crate::query::read_committed;
use crate::schema::{Column, Table};
use crate::spec::Problems;
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Executor, Progress, Result, RowRead, Transactional};

const RN: &str = "pgp_rn";
const LOCK: &str = "pgp_lock";
const BATCH: &str = "pgp_batch";

/// A bounded per-owner history: `table (owner, item, at)` with a unique
/// `(owner, item)`, keeping only each owner's newest `keep` rows (newest =
/// greatest `(at, item)`).
///
/// ```
/// use chrono::{DateTime, Utc};
/// use pgpatterns::ops::recent::RecentHistory;
/// use pgpatterns::Table;
/// use uuid::Uuid;
///
/// let views = Table::new("user_product_views")?;
/// let recent = RecentHistory::new(
///     &views.column::<Uuid>("user_id")?,
///     &views.column::<Uuid>("product_id")?,
///     &views.column::<DateTime<Utc>>("viewed_at")?,
///     50,
/// );
/// let [upsert, trim] = recent.record_statements(Uuid::nil(), Uuid::nil(), Utc::now())?;
/// assert!(upsert.sql().contains("pg_advisory_xact_lock"));
/// assert!(upsert.sql().contains("ON CONFLICT"));
/// assert_eq!(
///     trim.sql(),
///     r#"DELETE FROM "user_product_views" WHERE "user_product_views"."user_id" = CAST($1 AS uuid) AND "user_product_views"."product_id" IN (SELECT "user_product_views"."product_id" FROM "user_product_views" WHERE "user_product_views"."user_id" = CAST($2 AS uuid) ORDER BY "user_product_views"."viewed_at" DESC, "user_product_views"."product_id" DESC OFFSET $3)"#
/// );
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a recent history does nothing until it is used"]
pub struct RecentHistory<O: SqlType, I: SqlType, T: SqlType> {
    table: Table,
    owner: Column<O>,
    item: Column<I>,
    at: Column<T>,
    keep: i64,
    items: Option<(Table, Column<I>)>,
    problems: Problems,
}

impl<O: SqlType, I: SqlType, T: SqlType> RecentHistory<O, I, T> {
    /// A history of `item`s per `owner`, ordered by `at`, keeping the newest
    /// `keep` rows per owner. The three columns must belong to one table
    /// (not aliased), which needs a unique constraint on `(owner, item)`.
    ///
    /// Like every step, this never fails: [`check`](Self::check) and every
    /// method that makes SQL or runs refuse `keep < 1`, columns of
    /// different tables, an aliased table, or the same column twice.
    pub fn new(owner: &Column<O>, item: &Column<I>, at: &Column<T>, keep: i64) -> Self {
        let table = owner.table().clone();
        let mut problems = Problems::default();
        if item.table() != &table || at.table() != &table {
            problems.note::<()>(Err(Error::spec(
                "columns",
                format!(
                    "owner, item and time must be columns of one table, got {}, {} and {}",
                    table.display_name(),
                    item.table().display_name(),
                    at.table().display_name()
                ),
            )));
        }
        if table.alias().is_some() {
            problems.note::<()>(Err(Error::spec(
                "table",
                "use the table itself, not an alias: rows are upserted and deleted",
            )));
        }
        let names = [owner.name(), item.name(), at.name()];
        if names[0] == names[1] || names[0] == names[2] || names[1] == names[2] {
            problems.note::<()>(Err(Error::spec(
                "columns",
                "owner, item and time must be three different columns",
            )));
        }
        problems.note(check_keep(keep));
        Self {
            table,
            owner: owner.clone(),
            item: item.clone(),
            at: at.clone(),
            keep,
            items: None,
            problems,
        }
    }

    /// Joins [`recent_query`](Self::recent_query) to the item table on
    /// `key = history.item`, adding the item's columns (`items.*`) after
    /// `item, at`: the homepage's "recently viewed products" with names and
    /// prices. A `key` of the history table itself is refused when checked.
    pub fn with_items(mut self, key: &Column<I>) -> Self {
        if key.table().name() == self.table.name() && key.table().schema() == self.table.schema() {
            self.problems.note::<()>(Err(Error::spec(
                "items",
                "the item key must be a column of the item table, not of the history",
            )));
        } else {
            self.items = Some((key.table().clone(), key.clone()));
        }
        self
    }

    /// Checks the history: the first problem a step recorded. Every method
    /// that makes SQL or runs checks first.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`]: see [`new`](Self::new) and
    /// [`with_items`](Self::with_items).
    pub fn check(&self) -> Result<()> {
        self.problems.check()
    }

    /// How many rows each owner keeps.
    #[must_use]
    pub fn keep(&self) -> i64 {
        self.keep
    }

    /// The history table.
    #[must_use]
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The two statements of [`record`](Self::record), to run in order in
    /// one `READ COMMITTED` transaction:
    ///
    /// 1. the upsert, `INSERT … SELECT $owner, $item, $at FROM (SELECT
    ///    pg_advisory_xact_lock(hashtext($table), hashtext($owner::text)))
    ///    ON CONFLICT (owner, item) DO UPDATE SET at = GREATEST(at,
    ///    EXCLUDED.at)` (a late, older view never moves a row back in time);
    /// 2. the trim, `DELETE … WHERE owner = $1 AND item IN (SELECT item …
    ///    ORDER BY at DESC, item DESC OFFSET $keep)`, which runs with a
    ///    snapshot taken after the lock was granted.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn record_statements(&self, owner: O, item: I, at: T) -> Result<[BuiltQuery; 2]> {
        self.check()?;
        let lock = Query::select()
            .expr(
                Func::cust("pg_advisory_xact_lock")
                    .arg(Func::cust("hashtext").arg(self.table.display_name().param()))
                    .arg(Func::cust("hashtext").arg(owner.clone().param().cast_as("text"))),
            )
            .to_owned();
        let source = Query::select()
            .expr(owner.clone().param())
            .expr(item.param())
            .expr(at.param())
            .from_subquery(lock, Alias::new(LOCK))
            .to_owned();
        let mut upsert = Query::insert();
        upsert.into_table(self.table.table_name()).columns([
            self.owner.iden(),
            self.item.iden(),
            self.at.iden(),
        ]);
        // Three columns, three expressions: cannot fail.
        let _ = upsert.select_from(source);
        upsert.on_conflict(
            OnConflict::columns([self.owner.iden(), self.item.iden()])
                .value(
                    self.at.iden(),
                    Expr::expr(Func::greatest([
                        self.at.expr(),
                        Expr::col((Alias::new("excluded"), self.at.iden())),
                    ])),
                )
                .to_owned(),
        );
        Ok([BuiltQuery::new(&upsert), self.trim_statement(owner)])
    }

    /// The trim of one owner: `DELETE … WHERE owner = $1 AND item IN
    /// (SELECT item … WHERE owner = $2 ORDER BY at DESC, item DESC OFFSET
    /// $keep)`. Safe only while holding the owner's lock (see
    /// [`record_statements`](Self::record_statements)).
    fn trim_statement(&self, owner: O) -> BuiltQuery {
        let beyond = Query::select()
            .column(self.item.col_ref())
            .from(self.table.table_ref())
            .and_where(self.owner.eq(owner.clone()))
            .order_by(self.at.col_ref(), Order::Desc)
            .order_by(self.item.col_ref(), Order::Desc)
            .offset(self.keep as u64)
            .to_owned();
        BuiltQuery::new(
            &Query::delete()
                .from_table(self.table.table_name())
                .and_where(self.owner.eq(owner))
                .and_where(self.item.expr().in_subquery(beyond))
                .to_owned(),
        )
    }

    /// Records that `owner` saw `item` at `at`: upserts the row and trims
    /// the owner's rows beyond the newest [`keep`](Self::keep), in one
    /// transaction (see [`record_statements`](Self::record_statements)).
    /// Returns how many rows the trim removed.
    ///
    /// The transaction is `READ COMMITTED` whatever the session's default
    /// (`default_transaction_isolation`): it starts with `SET TRANSACTION
    /// ISOLATION LEVEL READ COMMITTED`, because the trim must see rows
    /// committed while it waited for the owner's lock, which a `REPEATABLE
    /// READ` snapshot would hide (leaving more than `keep` rows). Called on
    /// your own `REPEATABLE READ` / `SERIALIZABLE` transaction (it then runs
    /// in a savepoint) it fails with the server's error instead of trimming
    /// from a stale snapshot.
    ///
    /// # Errors
    /// As [`check`](Self::check), before anything is sent; the database's
    /// error (then nothing was changed).
    pub async fn record<E: Transactional>(
        &self,
        db: &mut E,
        owner: O,
        item: I,
        at: T,
    ) -> Result<u64> {
        let [upsert, trim] = self.record_statements(owner, item, at)?;
        let counts = db
            .run_in_transaction(&[read_committed(), upsert, trim])
            .await?;
        Ok(counts.get(2).copied().unwrap_or(0))
    }

    /// [`record`](Self::record) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`record`](Self::record).
    pub fn record_blocking<C>(&self, db: &mut C, owner: O, item: I, at: T) -> Result<u64>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.record(db, owner, item, at).await)
    }

    /// The owner's newest rows, newest first: `item, at` (then the item
    /// table's columns with [`with_items`](Self::with_items)).
    ///
    /// # Errors
    /// As [`check`](Self::check), and [`Error::InvalidSpec`] for
    /// `limit < 1`.
    pub fn recent_query(&self, owner: O, limit: i64) -> Result<SelectStatement> {
        self.check()?;
        if limit < 1 {
            return Err(Error::spec(
                "limit",
                format!("must be at least 1, got {limit}"),
            ));
        }
        let mut q = Query::select();
        q.column(self.item.col_ref())
            .column(self.at.col_ref())
            .from(self.table.table_ref())
            .and_where(self.owner.eq(owner))
            .order_by(self.at.col_ref(), Order::Desc)
            .order_by(self.item.col_ref(), Order::Desc)
            .limit(limit as u64);
        if let Some((items, key)) = &self.items {
            q.column(items.all_columns()).join(
                JoinType::InnerJoin,
                items.table_ref(),
                key.equals(&self.item),
            );
        }
        Ok(q)
    }

    /// Runs [`recent_query`](Self::recent_query) (without the item table's
    /// columns) and returns `(item, at)` pairs, newest first.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for `limit < 1`; the database's error.
    pub async fn recent<E: Executor>(&self, db: &E, owner: O, limit: i64) -> Result<Vec<(I, T)>>
    where
        I: FromSqlOwned,
        T: FromSqlOwned,
    {
        let plain = Self {
            items: None,
            ..self.clone()
        };
        let q = BuiltQuery::new(&plain.recent_query(owner, limit)?);
        db.rows_as(&q).await
    }

    /// [`recent`](Self::recent) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`recent`](Self::recent).
    pub fn recent_blocking<C>(&self, db: &mut C, owner: O, limit: i64) -> Result<Vec<(I, T)>>
    where
        I: FromSqlOwned,
        T: FromSqlOwned,
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.recent(db, owner, limit).await)
    }

    /// The index that serves [`recent_query`](Self::recent_query) and the
    /// trim: `(owner, at DESC, item DESC)`, optionally `CONCURRENTLY` (run
    /// it with [`BuiltQuery::execute_outside_transaction`]).
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn index_advice(&self, concurrently: bool) -> Result<BuiltQuery> {
        self.check()?;
        let mut idx = Index::create();
        idx.name(
            derived_name(&[
                self.table.schema().map_or("", |s| s.as_str()),
                self.table.name().as_str(),
                self.owner.name().as_str(),
                self.at.name().as_str(),
                self.item.name().as_str(),
                "recent",
            ])
            .as_str(),
        )
        .table(self.table.table_name())
        .col(self.owner.iden())
        .col((self.at.iden(), IndexOrder::Desc))
        .col((self.item.iden(), IndexOrder::Desc))
        .if_not_exists();
        if concurrently {
            idx.concurrently();
        }
        Ok(BuiltQuery::schema(&idx))
    }

    /// Trims every owner to the newest [`keep`](Self::keep) rows (a
    /// scheduled cleanup job), `owners_per_batch` owners per transaction in
    /// owner order, reporting the owners done after each batch. Each batch
    /// takes the same per-owner locks as [`record`](Self::record) (in owner
    /// order), so it never races a recorder. Resumable: a rerun only
    /// deletes what is still beyond the bound.
    ///
    /// # Errors
    /// As [`check`](Self::check), and [`Error::InvalidSpec`] for
    /// `owners_per_batch < 1`; the database's
    /// error (finished batches stay committed).
    pub async fn trim_all<E: Transactional>(
        &self,
        db: &mut E,
        owners_per_batch: i64,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<BatchReport>
    where
        O: FromSqlOwned,
    {
        self.check()?;
        if owners_per_batch < 1 {
            return Err(Error::spec(
                "owners_per_batch",
                format!("must be at least 1, got {owners_per_batch}"),
            ));
        }
        let started = Instant::now();
        let mut report = BatchReport::default();
        let mut owners_done = 0u64;
        progress(Progress::new("trim", 0, None));
        let mut after: Option<O> = None;
        loop {
            // The next batch of owners: its size and its last owner.
            let mut next = Query::select();
            next.column(self.owner.col_ref())
                .distinct()
                .from(self.table.table_ref())
                .order_by(self.owner.col_ref(), Order::Asc)
                .limit(owners_per_batch as u64);
            if let Some(a) = &after {
                next.and_where(self.owner.expr().gt(a.clone().param()));
            }
            let row = db
                .one_row(&crate::query::batch_bounds(next, self.owner.iden()))
                .await?;
            let n: i64 = row.try_get(0usize.into())?;
            let upto: Option<O> = row.try_get(1usize.into())?;
            let Some(upto) = upto else { break };
            let in_range = |q: &mut SelectStatement| {
                q.and_where(self.owner.expr().lte(upto.clone().param()));
                if let Some(a) = &after {
                    q.and_where(self.owner.expr().gt(a.clone().param()));
                }
            };
            let mut owners = Query::select();
            owners
                .column(self.owner.col_ref())
                .distinct()
                .from(self.table.table_ref())
                .order_by(self.owner.col_ref(), Order::Asc);
            in_range(&mut owners);
            let lock =
                Query::select()
                    .expr(
                        Func::cust("pg_advisory_xact_lock")
                            .arg(Func::cust("hashtext").arg(self.table.display_name().param()))
                            .arg(Func::cust("hashtext").arg(
                                Expr::col((Alias::new(LOCK), self.owner.iden())).cast_as("text"),
                            )),
                    )
                    .from_subquery(owners, Alias::new(LOCK))
                    .to_owned();
            let mut ranked = Query::select();
            ranked
                .column(self.owner.col_ref())
                .column(self.item.col_ref())
                .expr_window_as(
                    Expr::cust("ROW_NUMBER()"),
                    WindowStatement::partition_by(self.owner.col_ref())
                        .order_by(self.at.col_ref(), Order::Desc)
                        .order_by(self.item.col_ref(), Order::Desc)
                        .to_owned(),
                    Alias::new(RN),
                )
                .from(self.table.table_ref());
            in_range(&mut ranked);
            let beyond = Query::select()
                .column((Alias::new(BATCH), self.owner.iden()))
                .column((Alias::new(BATCH), self.item.iden()))
                .from_subquery(ranked, Alias::new(BATCH))
                .and_where(Expr::col((Alias::new(BATCH), Alias::new(RN))).gt(self.keep.param()))
                .to_owned();
            let delete = Query::delete()
                .from_table(self.table.table_name())
                .and_where(Expr::tuple([self.owner.expr(), self.item.expr()]).in_subquery(beyond))
                .to_owned();
            let counts = db
                .run_in_transaction(&[BuiltQuery::new(&lock), BuiltQuery::new(&delete)])
                .await?;
            report.batches += 1;
            report.rows += counts.get(1).copied().unwrap_or(0);
            owners_done += u64::try_from(n).unwrap_or(0);
            progress(Progress::new("trim", owners_done, None));
            after = Some(upto);
            if n < owners_per_batch {
                break;
            }
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// [`trim_all`](Self::trim_all) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`trim_all`](Self::trim_all).
    pub fn trim_all_blocking<C>(
        &self,
        db: &mut C,
        owners_per_batch: i64,
        progress: impl FnMut(Progress) + Send,
    ) -> Result<BatchReport>
    where
        O: FromSqlOwned,
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| {
            self.trim_all(db, owners_per_batch, progress).await
        })
    }
}

fn check_keep(keep: i64) -> Result<()> {
    if keep < 1 {
        return Err(Error::spec(
            "keep",
            format!("must be at least 1, got {keep}"),
        ));
    }
    Ok(())
}
