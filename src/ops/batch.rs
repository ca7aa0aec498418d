//! Batched delete: remove the rows matching a condition a bounded batch at a
//! time (a retention job), so no statement holds locks for long and
//! live writers are never blocked (`FOR UPDATE SKIP LOCKED`).

use std::time::Instant;

use sea_query::{Condition, ExprTrait, IntoCondition, LockBehavior, LockType, Order, Query};

use super::BatchReport;
use crate::exec::{run_blocking, BlockingExecutor};
use crate::schema::{Column, Table};
use crate::spec::Problems;
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Executor, Progress, Result};

/// Deletes the rows of a table matching a condition, `batch_size` rows per
/// statement, in key order.
///
/// ```
/// use chrono::{TimeZone, Utc};
/// use pgpatterns::ops::batch::BatchDelete;
/// use pgpatterns::Table;
///
/// let events = Table::new("events")?;
/// let id = events.column::<i64>("id")?;
/// let at = events.column::<chrono::DateTime<Utc>>("at")?;
/// let purge = BatchDelete::new(&id, at.lt(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()), 1000);
/// assert_eq!(
///     purge.batch_statement()?.sql(),
///     r#"DELETE FROM "events" WHERE "events"."id" IN (SELECT "events"."id" FROM "events" WHERE "events"."at" < CAST($1 AS timestamptz) ORDER BY "events"."id" ASC LIMIT $2 FOR UPDATE SKIP LOCKED)"#
/// );
/// assert!(BatchDelete::new(&id, at.is_null(), 0).check().is_err());
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "a batched delete does nothing until it is run"]
pub struct BatchDelete<K: SqlType> {
    table: Table,
    key: Column<K>,
    condition: Condition,
    batch_size: i64,
    problems: Problems,
}

impl<K: SqlType> BatchDelete<K> {
    /// Deletes rows of `key`'s table matching `condition` (built from the
    /// table's typed columns, so its values are bound), `batch_size` rows
    /// per statement. `key` must be unique (the primary key). Never fails:
    /// `batch_size < 1` or an aliased table is refused by
    /// [`check`](Self::check), [`batch_statement`](Self::batch_statement)
    /// and [`run`](Self::run).
    pub fn new(key: &Column<K>, condition: impl IntoCondition, batch_size: i64) -> Self {
        let mut problems = Problems::default();
        problems.note(check_batch_size(batch_size));
        if key.table().alias().is_some() {
            problems.note::<()>(Err(Error::spec(
                "table",
                "use the table itself, not an alias: rows are deleted",
            )));
        }
        Self {
            table: key.table().clone(),
            key: key.clone(),
            condition: condition.into_condition(),
            batch_size,
            problems,
        }
    }

    /// Checks the delete: the first problem recorded when it was made.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`]: see [`new`](Self::new).
    pub fn check(&self) -> Result<()> {
        self.problems.check()
    }

    /// One batch: `DELETE FROM t WHERE key IN (SELECT key FROM t WHERE
    /// <condition> ORDER BY key LIMIT $n FOR UPDATE SKIP LOCKED)`.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn batch_statement(&self) -> Result<BuiltQuery> {
        self.check()?;
        let pick = Query::select()
            .column(self.key.col_ref())
            .from(self.table.table_ref())
            .cond_where(self.condition.clone())
            .order_by(self.key.col_ref(), Order::Asc)
            .limit(self.batch_size as u64)
            .lock_with_behavior(LockType::Update, LockBehavior::SkipLocked)
            .to_owned();
        Ok(BuiltQuery::new(
            &Query::delete()
                .from_table(self.table.table_name())
                .and_where(self.key.expr().in_subquery(pick))
                .to_owned(),
        ))
    }

    /// Runs batches until one deletes nothing, reporting the rows deleted so
    /// far after each. Each batch is one statement (atomic on its own);
    /// stopping between batches leaves a consistent table, and a rerun
    /// carries on. Rows locked by other transactions are skipped by a batch
    /// and picked up by a later one.
    ///
    /// # Errors
    /// As [`check`](Self::check), before anything is sent; the database's
    /// error (finished batches stay committed).
    pub async fn run<E: Executor>(
        &self,
        db: &E,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<BatchReport> {
        let started = Instant::now();
        let q = self.batch_statement()?;
        let mut report = BatchReport::default();
        progress(Progress::new("delete", 0, None));
        loop {
            let n = db.run(&q).await?;
            report.batches += 1;
            report.rows += n;
            progress(Progress::new("delete", report.rows, None));
            if n == 0 {
                break;
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
        progress: impl FnMut(Progress) + Send,
    ) -> Result<BatchReport>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.run(db, progress).await)
    }
}

pub(crate) fn check_batch_size(batch_size: i64) -> Result<()> {
    if batch_size < 1 {
        return Err(Error::spec(
            "batch_size",
            format!("must be at least 1, got {batch_size}"),
        ));
    }
    Ok(())
}
