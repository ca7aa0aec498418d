//! The batched backfill and the drift check of a summary.

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};
use sea_query::{Alias, Expr, ExprTrait, Func, Query, SelectStatement, UnionType};

use super::{Bucket, Kept, Kind, Summary};
use crate::ddl::quote_table;
use crate::exec::{run_blocking, run_blocking_mut, BlockingExecutor};
use crate::query::{count_of, read_committed};
use crate::schema::Ident;
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Executor, Progress, Result, RowRead, Transactional};

/// A bucket bound read back from the server, of the time column's type.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
enum Bound {
    Zoned(DateTime<Utc>),
    Naive(NaiveDateTime),
}

impl Bound {
    fn param(self) -> Expr {
        match self {
            Bound::Zoned(t) => t.param(),
            Bound::Naive(t) => t.param(),
        }
    }

    fn seconds_to(self, other: Bound) -> i64 {
        match (self, other) {
            (Bound::Zoned(a), Bound::Zoned(b)) => (b - a).num_seconds(),
            (Bound::Naive(a), Bound::Naive(b)) => (b - a).num_seconds(),
            _ => 0,
        }
    }
}

/// What a [`Summary::backfill`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SummaryBackfill {
    /// Summary rows written.
    pub rows: u64,
    /// Batches (one transaction each), including the one that removes rows
    /// outside the base table's time range.
    pub batches: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl Summary {
    /// A bucket start about `n` buckets after the bucket start `t` (batch
    /// bounds of the backfill: any later bucket start will do).
    fn advance(&self, t: Expr, n: i64) -> Expr {
        let n = n.param();
        match (self.bucket, self.zoned) {
            (Bucket::Hour, true) => Expr::cust_with_exprs(
                "date_trunc('hour', $1 + $2 * interval '1 hour' + interval '30 minutes', $3)",
                [t, n, self.zone_param()],
            ),
            (Bucket::Day, true) => Expr::cust_with_exprs(
                "date_trunc('day', $1 + $2 * interval '1 day' + interval '12 hours', $3)",
                [t, n, self.zone_param()],
            ),
            (Bucket::Hour, false) => Expr::cust_with_exprs("$1 + $2 * interval '1 hour'", [t, n]),
            (Bucket::Day, false) => Expr::cust_with_exprs("$1 + $2 * interval '1 day'", [t, n]),
        }
    }

    fn bucket_seconds(&self) -> i64 {
        match self.bucket {
            Bucket::Hour => 3600,
            Bucket::Day => 86_400,
        }
    }

    /// The summary rows re-aggregated from the base table, optionally for
    /// the buckets in `[lo, hi)` only: the keys, the bucket, the count and
    /// every stored measure, in the summary table's column order.
    fn fresh(&self, kept: &[Kept], range: Option<(Expr, Expr)>) -> SelectStatement {
        let x = Alias::new("pgp_rows");
        let bucket = Alias::new(self.bucket_name().as_str());
        let mut inner = Query::select();
        inner.from(self.base.table_ref());
        for c in self.read_columns(kept) {
            inner.column(c.col_ref());
        }
        inner
            .expr_as(self.bucket_of(self.time.expr()), bucket.clone())
            .and_where(self.time.expr().is_not_null());
        if let Some((lo, hi)) = range {
            inner
                .and_where(self.time.expr().gte(lo))
                .and_where(self.time.expr().lt(hi));
        }
        let col = |c: &Ident| Expr::col((x.clone(), Alias::new(c.as_str())));
        let mut q = Query::select();
        for k in &self.keys {
            q.expr_as(col(k.name()), Alias::new(k.name().as_str()));
        }
        q.expr_as(Expr::col((x.clone(), bucket.clone())), bucket.clone())
            .expr_as(
                Expr::cust("COUNT(*)"),
                Alias::new(self.count_name().as_str()),
            );
        for k in kept {
            let c = col(k.column.name());
            match k.kind {
                Kind::Count => {
                    q.expr_as(Func::count(c.clone()), Alias::new(k.name.as_str()));
                }
                Kind::Sum(_) => {
                    q.expr_as(Func::sum(c.clone()), Alias::new(k.name.as_str()));
                }
            }
            if let Some(n) = &k.nonnull {
                q.expr_as(Func::count(c), Alias::new(n.as_str()));
            }
        }
        q.from_subquery(inner, x.clone());
        for k in &self.keys {
            q.add_group_by([col(k.name())]);
        }
        q.add_group_by([Expr::col((x, bucket))]);
        q
    }

    /// The summary table's rows as stored (every column).
    fn stored(&self, kept: &[Kept]) -> SelectStatement {
        let table = self.table();
        let mut q = Query::select();
        for c in self.all_columns(kept) {
            q.column(table.col::<i64>(c).col_ref());
        }
        q.from(table.table_ref());
        q
    }

    /// Groups (keys and bucket) where the summary differs from
    /// re-aggregating the base table: rows that differ, are missing, or
    /// should not be there. Empty when the triggers have done their job.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn drift_statement(&self) -> Result<SelectStatement> {
        let kept = self.kept()?;
        let (stored, fresh) = (self.stored(&kept), self.fresh(&kept, None));
        let mut extra = stored.clone();
        extra.union(UnionType::Except, fresh.clone());
        let mut missing = fresh;
        missing.union(UnionType::Except, stored);
        let group = |from: SelectStatement, alias: &'static str| {
            let a = Alias::new(alias);
            let mut q = Query::select();
            for k in &self.keys {
                q.expr(Expr::col((a.clone(), Alias::new(k.name().as_str()))));
            }
            q.expr(Expr::col((
                a.clone(),
                Alias::new(self.bucket_name().as_str()),
            )));
            q.from_subquery(from, a);
            q
        };
        let mut both = group(extra, "pgp_extra");
        both.union(UnionType::All, group(missing, "pgp_missing"));
        Ok(Query::select()
            .distinct()
            .expr(Expr::cust("*"))
            .from_subquery(both, Alias::new("pgp_drift"))
            .to_owned())
    }

    /// How many groups (keys and bucket) differ from re-aggregating the
    /// base table: 0 when the summary is right.
    ///
    /// # Errors
    /// As [`check`](Self::check); the database's error.
    pub async fn drift_count<E: Executor>(&self, db: &E) -> Result<i64> {
        db.one_row(&count_of(self.drift_statement()?))
            .await?
            .try_get(0usize.into())
    }

    /// [`drift_count`](Self::drift_count) on a blocking client, from the
    /// same code.
    ///
    /// # Errors
    /// As [`drift_count`](Self::drift_count).
    pub fn drift_count_blocking<C>(&self, db: &mut C) -> Result<i64>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.drift_count(db).await)
    }

    async fn bound<E: Executor>(&self, db: &E, q: &BuiltQuery) -> Result<Vec<Option<Bound>>> {
        let row = db.one_row(q).await?;
        (0..row.len())
            .map(|i| {
                Ok(if self.zoned {
                    row.try_get::<Option<DateTime<Utc>>>(i.into())?
                        .map(Bound::Zoned)
                } else {
                    row.try_get::<Option<NaiveDateTime>>(i.into())?
                        .map(Bound::Naive)
                })
            })
            .collect()
    }

    /// Rebuilds the summary from the base table, `buckets` buckets per
    /// transaction in time order, reporting progress (stage `"summary"`,
    /// in batches) after each. Each batch locks the base table against
    /// writes (`SHARE` mode, so it waits for the writers in flight and
    /// holds new ones back until it commits: keep batches short on a busy
    /// table), deletes the summary rows of its buckets and inserts them
    /// re-aggregated, so every batch is exact on its own: safe while
    /// writers run (before and after, the triggers keep the rows), and
    /// resumable — run it again after an interruption. A first batch
    /// removes rows outside the base table's time range. Run `ANALYZE` on
    /// the summary afterwards.
    ///
    /// # Errors
    /// As [`check`](Self::check); [`Error::InvalidSpec`] for `buckets <
    /// 1`; the database's error otherwise (finished batches stay
    /// committed).
    pub async fn backfill<E: Transactional>(
        &self,
        db: &mut E,
        buckets: i64,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<SummaryBackfill> {
        let kept = self.kept()?;
        Error::at_least("buckets", buckets, 1)?;
        let started = Instant::now();
        let lock = BuiltQuery::generated(format!(
            "LOCK TABLE {} IN SHARE MODE",
            quote_table(&self.base)
        ));
        let table = self.table();
        let bucket = table.col::<i64>(self.bucket_name().clone());
        let range = Query::select()
            .expr(self.bucket_of(Func::min(self.time.expr()).into()))
            .expr(Func::max(self.time.expr()))
            .from(self.base.table_ref())
            .to_owned();
        let range = self.bound(&*db, &BuiltQuery::new(&range)).await?;
        let mut report = SummaryBackfill {
            rows: 0,
            batches: 0,
            elapsed: Duration::ZERO,
        };
        let (Some(first), Some(last)) = (range[0], range[1]) else {
            let clear = Query::delete().from_table(table.table_name()).to_owned();
            db.run_in_transaction(&[read_committed(), lock, BuiltQuery::new(&clear)])
                .await?;
            report.batches = 1;
            progress(Progress::new("summary", 1, Some(1)));
            report.elapsed = started.elapsed();
            return Ok(report);
        };
        let span = Ord::max(self.bucket_seconds().saturating_mul(buckets), 1);
        let total = 2 + u64::try_from(first.seconds_to(last) / span).unwrap_or(0);
        progress(Progress::new("summary", 0, Some(total)));
        let outside = Query::delete()
            .from_table(table.table_name())
            .cond_where(
                bucket
                    .expr()
                    .lt(first.param())
                    .or(bucket.expr().gt(last.param())),
            )
            .to_owned();
        db.run_in_transaction(&[read_committed(), lock.clone(), BuiltQuery::new(&outside)])
            .await?;
        report.batches += 1;
        progress(Progress::new("summary", 1, Some(total)));
        let mut lo = first;
        loop {
            let next = Query::select()
                .expr(self.advance(lo.param(), buckets))
                .to_owned();
            let Some(hi) = self.bound(&*db, &BuiltQuery::new(&next)).await?[0] else {
                break;
            };
            let clear = Query::delete()
                .from_table(table.table_name())
                .and_where(bucket.expr().gte(lo.param()))
                .and_where(bucket.expr().lt(hi.param()))
                .to_owned();
            let fill = Query::insert()
                .into_table(table.table_name())
                .columns(self.all_columns(&kept))
                .select_from(self.fresh(&kept, Some((lo.param(), hi.param()))))
                .map_err(|e| Error::spec("summary", e.to_string()))?
                .to_owned();
            let done = db
                .run_in_transaction(&[
                    read_committed(),
                    lock.clone(),
                    BuiltQuery::new(&clear),
                    BuiltQuery::new(&fill),
                ])
                .await?;
            report.rows += done.get(3).copied().unwrap_or(0);
            report.batches += 1;
            progress(Progress::new("summary", report.batches, Some(total)));
            if hi > last {
                break;
            }
            lo = hi;
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// [`backfill`](Self::backfill) on a blocking client, from the same
    /// code.
    ///
    /// # Errors
    /// As [`backfill`](Self::backfill).
    pub fn backfill_blocking<C>(
        &self,
        db: &mut C,
        buckets: i64,
        progress: impl FnMut(Progress) + Send,
    ) -> Result<SummaryBackfill>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.backfill(db, buckets, progress).await)
    }
}
