//! A top-N report: top N entities (users) by the sum
//! of an amount over their facts (orders) in a time window, with equality
//! filters (`status = 'completed'`), returning the entity key, extra entity
//! columns, the fact count and the sum; plus the index that serves it.
//!
//! The facts are aggregated first — a one-level [`Rollup`] ranked by the sum
//! with a limit, so PostgreSQL runs a top-N sort over per-user groups — and
//! only the N winners are joined to the entity table. Ties on the sum are
//! broken by the key, so the result is deterministic.

use std::fmt;

use postgres_types::FromSqlOwned;
use sea_query::{
    Alias, Expr, ExprTrait, Index, IndexCreateStatement, JoinType, NullOrdering, Order, Query,
    SelectStatement, Value, ValueType,
};

use crate::exec::{run_blocking, BlockingExecutor};
use crate::exec::{ColumnIndex, Executor, RowRead};
use crate::ops::summary::window::{Part, WindowParts};
use crate::ops::summary::{Kept, Kind, Summary};
use crate::rollup::{decode_value, Agg, Dim, Metric, Rollup, Summable};
use crate::schema::{AnyColumn, Column, Ident, Table};
use crate::spec::Problems;
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Result};

/// Alias of the aggregated facts in the generated SQL.
pub const TOP_ALIAS: &str = "top";
/// Output column: the number of matching facts per entity.
pub const COUNT_ALIAS: &str = "fact_count";
/// Output column: the sum of the amount per entity.
pub const SUM_ALIAS: &str = "fact_sum";

/// Top N entities by the sum of an amount over their facts.
///
/// ```
/// use chrono::{DateTime, TimeZone, Utc};
/// use pgpatterns::ops::TopN;
/// use pgpatterns::{column, table, Decimal};
/// let (users, orders) = (table!("users"), table!("orders"));
/// let since = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
/// let report = TopN::new(
///     &column!(users, "id": i64),
///     &column!(orders, "user_id": i64),
///     &column!(orders, "total_amount": Decimal),
///     10,
/// )
/// .extra(&column!(users, "username": String))
/// .window_since(&column!(orders, "created_at": DateTime<Utc>), since)
/// .where_eq(&column!(orders, "status": String), "completed");
/// assert_eq!(
///     report.build()?.sql(),
///     r#"SELECT "users"."id", "users"."username", "top"."fact_count", "top"."fact_sum" FROM (SELECT "orders"."user_id" AS "user_id", COUNT(*) AS "fact_count", SUM("orders"."total_amount") AS "fact_sum", GROUPING("orders"."user_id") AS "rollup_grouping" FROM "orders" WHERE "orders"."status" = CAST($1 AS text) AND "orders"."created_at" >= CAST($2 AS timestamptz) GROUP BY "orders"."user_id" ORDER BY "rollup_grouping" ASC, "fact_sum" DESC NULLS LAST, "user_id" ASC NULLS LAST LIMIT $3) AS "top" INNER JOIN "users" ON "users"."id" = "top"."user_id" ORDER BY "top"."fact_sum" DESC NULLS LAST, "users"."id" ASC"#
/// );
/// assert_eq!(
///     report.index("orders_top_n")?.sql(),
///     r#"CREATE INDEX CONCURRENTLY IF NOT EXISTS "orders_top_n" ON "orders" ("status", "created_at") INCLUDE ("user_id", "total_amount")"#
/// );
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[must_use = "a report does nothing until it is built or run"]
pub struct TopN<K, A: Summable> {
    key: Column<K>,
    fk: Column<K>,
    amount: Column<A>,
    n: i64,
    extras: Vec<AnyColumn>,
    time: Option<AnyColumn>,
    since: Option<Expr>,
    until: Option<Expr>,
    eq: Vec<(AnyColumn, Expr, Expr)>,
    filters: Vec<Expr>,
    /// The bound values of the window, for a summary source.
    bounds: (Option<Expr>, Option<Expr>),
    summary: Option<Summary>,
    problems: Problems,
    /// The per-entity aggregate, remade by every step so that building
    /// the report only renders it.
    aggregate: Rollup,
}

impl<K: SqlType, A: Summable> Clone for TopN<K, A> {
    fn clone(&self) -> Self {
        TopN {
            key: self.key.clone(),
            fk: self.fk.clone(),
            amount: self.amount.clone(),
            n: self.n,
            extras: self.extras.clone(),
            time: self.time.clone(),
            since: self.since.clone(),
            until: self.until.clone(),
            eq: self.eq.clone(),
            filters: self.filters.clone(),
            bounds: self.bounds.clone(),
            summary: self.summary.clone(),
            problems: self.problems.clone(),
            aggregate: self.aggregate.clone(),
        }
    }
}

impl<K: SqlType, A: Summable> fmt::Debug for TopN<K, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopN")
            .field("key", &self.key)
            .field("fk", &self.fk)
            .field("amount", &self.amount)
            .field("n", &self.n)
            .field("extras", &self.extras)
            .field("time", &self.time)
            .field("eq", &self.eq.iter().map(|(c, ..)| c).collect::<Vec<_>>())
            .field("filters", &self.filters.len())
            .field("summary", &self.summary.as_ref().map(Summary::table_name))
            .finish()
    }
}

fn on_table(col: &AnyColumn, table: &Table, field: &'static str, what: &str) -> Result<()> {
    col.check_on(table, field, what)
}

impl<K: SqlType, A: Summable> TopN<K, A> {
    /// The top `n` entities (`key`) by `SUM(amount)` over their facts
    /// (`fk → key`). Like every step, this never fails; the report is
    /// checked when built or run ([`check`](Self::check)), which refuses
    /// an `amount` not on the facts table, a facts table that is the entity
    /// table, `n < 1`, or a foreign key named like the report's own columns.
    pub fn new(key: &Column<K>, fk: &Column<K>, amount: &Column<A>, n: i64) -> TopN<K, A> {
        let mut problems = Problems::default();
        problems.note(on_table(&amount.erase(), fk.table(), "amount", "facts"));
        if key.table() == fk.table() {
            problems.note::<()>(Err(Error::spec(
                "fk",
                "the facts table must differ from the entity table",
            )));
        }
        problems.note(Error::at_least("n", n, 1));
        if [COUNT_ALIAS, SUM_ALIAS, crate::GROUPING_ALIAS].contains(&fk.name().as_str()) {
            problems.note::<()>(Err(Error::spec(
                "fk",
                format!(
                    "the column name {} is used by the report's own columns",
                    fk.name()
                ),
            )));
        }
        let mut top = TopN {
            key: key.clone(),
            fk: fk.clone(),
            amount: amount.clone(),
            n,
            extras: Vec::new(),
            time: None,
            since: None,
            until: None,
            eq: Vec::new(),
            filters: Vec::new(),
            bounds: (None, None),
            summary: None,
            problems,
            aggregate: Rollup::new(fk.table()),
        };
        top.aggregate = top.aggregate();
        top
    }

    /// Runs one step, recording its error for [`check`](Self::check).
    fn step(mut self, f: impl FnOnce(&mut Self) -> Result<()>) -> Self {
        let result = f(&mut self);
        if result.is_ok() {
            self.aggregate = self.aggregate();
        }
        self.problems.note(result);
        self
    }

    /// Returns an entity column too (`username`, `email`); read it from a
    /// row with [`TopRow::get`]. A column not on the entity table, or
    /// already returned, is refused when the report is checked.
    pub fn extra<T: SqlType>(self, col: &Column<T>) -> TopN<K, A> {
        let col = col.erase();
        self.step(|t| {
            on_table(&col, t.key.table(), "extra", "entity")?;
            if t.extras.contains(&col) || col == t.key.erase() {
                return Err(Error::spec(
                    "extra",
                    format!("column {} is already returned", col.name()),
                ));
            }
            t.extras.push(col);
            Ok(())
        })
    }

    fn time_column<T: SqlType>(&mut self, time: &Column<T>) -> Result<()> {
        let col = time.erase();
        on_table(&col, self.fk.table(), "window", "facts")?;
        match &self.time {
            Some(t) if t != &col => Err(Error::spec(
                "window",
                format!("the window is already on column {}", t.name()),
            )),
            _ => {
                self.time = Some(col);
                Ok(())
            }
        }
    }

    /// Only facts with `time >= since` (e.g. now minus 30 days). A `time`
    /// column not on the facts table, or other than an earlier window
    /// column, is refused when the report is checked.
    pub fn window_since<T: SqlType>(self, time: &Column<T>, since: T) -> TopN<K, A> {
        self.step(|t| {
            t.time_column(time)?;
            t.since = Some(time.gte(since.clone()));
            t.bounds.0 = Some(since.param());
            Ok(())
        })
    }

    /// Only facts of the last `period` before the statement runs: `time >=
    /// now() - period` (see [`Column::within_last`]). Unlike
    /// [`window_since`](Self::window_since), the window moves: each run —
    /// and each refresh of a [materialized view](super::matview) of the
    /// report — covers the `period` before it. A `period` of zero or less,
    /// or a `time` column refused as by `window_since`, is refused when the
    /// report is checked.
    pub fn window_last<T: SqlType>(self, time: &Column<T>, period: chrono::Duration) -> TopN<K, A> {
        self.step(|t| {
            if period <= chrono::Duration::zero() {
                return Err(Error::spec(
                    "window_last",
                    format!("the period must be positive, got {period}"),
                ));
            }
            t.time_column(time)?;
            t.since = Some(time.within_last(period));
            Ok(())
        })
    }

    /// Only facts with `time < until` (refused as
    /// [`window_since`](Self::window_since)).
    pub fn window_until<T: SqlType>(self, time: &Column<T>, until: T) -> TopN<K, A> {
        self.step(|t| {
            t.time_column(time)?;
            t.until = Some(time.lt(until.clone()));
            t.bounds.1 = Some(until.param());
            Ok(())
        })
    }

    /// Only facts with `col = value` (`status = 'completed'`); equality
    /// columns lead the advised index. A column not on the facts table is
    /// refused when the report is checked.
    pub fn where_eq<T: SqlType>(self, col: &Column<T>, value: impl Into<T>) -> TopN<K, A> {
        let value = value.into();
        self.step(|t| {
            on_table(&col.erase(), t.fk.table(), "where_eq", "facts")?;
            t.eq.push((col.erase(), col.eq(value.clone()), value.param()));
            Ok(())
        })
    }

    /// Any other condition on the facts (not covered by the advised index).
    pub fn filter(self, condition: Expr) -> TopN<K, A> {
        self.step(|t| {
            t.filters.push(condition);
            Ok(())
        })
    }

    /// Checks the report as a whole: the first problem a step recorded.
    /// [`build`](Self::build), [`to_statement`](Self::to_statement) and the
    /// run verbs check first.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for the first problem: see each step.
    pub fn check(&self) -> Result<()> {
        self.problems.check()?;
        match &self.summary {
            Some(summary) => self.check_summary(summary).map(|_| ()),
            None => self.aggregate.check(),
        }
    }

    /// Reads the facts from `summary` (see [`Summary`]) instead of the
    /// facts table: whole buckets of the window from the summary, the
    /// partial buckets at its edges from the facts table, with the same
    /// rows as the report on the facts table. The report is refused when
    /// checked unless the foreign key and every [`where_eq`](Self::where_eq)
    /// column are keys of the summary, the amount is one of its sums, the
    /// window is on its time column (with at least one bound), and there is
    /// no [`filter`](Self::filter).
    pub fn from_summary(mut self, summary: &Summary) -> TopN<K, A> {
        self.summary = Some(summary.clone());
        self
    }

    /// The summary's sum of the amount, after checking that `summary`
    /// can answer this report.
    fn check_summary(&self, summary: &Summary) -> Result<Vec<Kept>> {
        let kept = summary.kept()?;
        summary.check_key(&self.fk.erase(), "from_summary")?;
        for (c, ..) in &self.eq {
            summary.check_key(c, "where_eq")?;
        }
        let amount = self.amount.erase();
        if !kept.iter().any(|k| is_sum_of(k, &amount)) {
            return Err(Error::spec(
                "from_summary",
                format!(
                    "the summary {} keeps no sum of {} ({})",
                    summary.table_name(),
                    amount.name(),
                    amount.sql_type()
                ),
            ));
        }
        match &self.time {
            Some(t) if self.bounds.0.is_some() || self.bounds.1.is_some() => {
                summary.check_time(t, "window")?;
            }
            _ => {
                return Err(Error::spec(
                    "window",
                    "a report over a summary needs a window on its time column \
                     (rows without a time are in no bucket)",
                ))
            }
        }
        if !self.filters.is_empty() {
            return Err(Error::spec(
                "filter",
                "a summary cannot apply a free condition; use where_eq on its keys",
            ));
        }
        Ok(kept)
    }

    /// The per-entity aggregate over `summary`, ranked and limited like
    /// [`aggregate`](Self::aggregate).
    fn summary_aggregate(&self, summary: &Summary) -> Result<SelectStatement> {
        let kept = self.check_summary(summary)?;
        let amount = self.amount.erase();
        let sum = kept
            .iter()
            .find(|k| is_sum_of(k, &amount))
            .ok_or_else(|| Error::spec("from_summary", "no sum of the amount"))?;
        let eq: Vec<(AnyColumn, Expr)> = self
            .eq
            .iter()
            .map(|(c, _, v)| (c.clone(), v.clone()))
            .collect();
        let fk = self.fk.erase().of(summary.base());
        let parts = WindowParts {
            by: vec![(fk.clone(), fk.name().to_string())],
            eq: &eq,
            since: self.bounds.0.clone(),
            until: self.bounds.1.clone(),
            measures: vec![
                (Part::Rows, COUNT_ALIAS.to_owned()),
                (Part::Kept(sum), SUM_ALIAS.to_owned()),
            ],
        };
        let mut q = summary.window_statement(&parts);
        q.order_by_expr_with_nulls(
            Expr::col(Alias::new(SUM_ALIAS)),
            Order::Desc,
            NullOrdering::Last,
        )
        .order_by_expr_with_nulls(Expr::col(self.fk.iden()), Order::Asc, NullOrdering::Last)
        .limit(Ord::max(self.n, 1).unsigned_abs());
        Ok(q)
    }

    /// The per-entity aggregate: a one-level [`Rollup`] ranked by the sum
    /// (made by every step; read it from `self.aggregate`).
    fn aggregate(&self) -> Rollup {
        let sum = Metric::new(SUM_ALIAS, Agg::<A::Sum>::sum(&self.amount));
        let mut r = Rollup::new(self.fk.table())
            .dimension(&Dim::new(&self.fk))
            .metric(&Metric::new(COUNT_ALIAS, Agg::count_all()))
            .metric(&sum);
        for (_, c, _) in &self.eq {
            r = r.filter(c.clone());
        }
        for c in self.since.iter().chain(&self.until).chain(&self.filters) {
            r = r.filter(c.clone());
        }
        r.rank_by(&sum, Order::Desc)
            .limit_per_level(Ord::max(self.n, 1))
    }

    /// The report: key, extra columns, count, sum; best first, ties by key.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn to_statement(&self) -> Result<SelectStatement> {
        self.problems.check()?;
        if let Some(summary) = &self.summary {
            return Ok(self.statement(self.summary_aggregate(summary)?));
        }
        // The aggregate was made by the last step: check it, then use it.
        self.aggregate.check()?;
        Ok(self.statement(self.aggregate.statement()))
    }

    /// The report over `inner`, the checked per-entity aggregate.
    fn statement(&self, inner: SelectStatement) -> SelectStatement {
        let top = Alias::new(TOP_ALIAS);
        let mut q = Query::select();
        q.column(self.key.col_ref());
        for c in &self.extras {
            q.column(c.col_ref());
        }
        q.expr(Expr::col((top.clone(), Alias::new(COUNT_ALIAS))))
            .expr(Expr::col((top.clone(), Alias::new(SUM_ALIAS))))
            .from_subquery(inner, top.clone())
            .join(
                JoinType::InnerJoin,
                self.key.table().table_ref(),
                self.key.expr().eq(Expr::col((top.clone(), self.fk.iden()))),
            )
            .order_by_expr_with_nulls(
                Expr::col((top, Alias::new(SUM_ALIAS))),
                Order::Desc,
                NullOrdering::Last,
            )
            .order_by(self.key.col_ref(), Order::Asc);
        q
    }

    /// The statement rendered with its values.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn build(&self) -> Result<BuiltQuery> {
        Ok(BuiltQuery::new(&self.to_statement()?))
    }

    /// The index that serves the report: equality columns, then the time
    /// column, `INCLUDE (fk, amount)` so the aggregate reads only the index
    /// (`(status, created_at) INCLUDE (user_id, total_amount)` for "top
    /// users by completed orders' total in a window"). Built `CONCURRENTLY IF NOT EXISTS`: run it with
    /// [`BuiltQuery::execute_outside_transaction`].
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] for an invalid index name.
    pub fn index(&self, name: &str) -> Result<BuiltQuery> {
        Ok(BuiltQuery::schema(&self.index_statement(name)?))
    }

    /// [`index`](Self::index) as a sea-query statement.
    ///
    /// # Errors
    /// As [`index`](Self::index).
    pub fn index_statement(&self, name: &str) -> Result<IndexCreateStatement> {
        let name = Ident::new(name)?;
        let mut idx = Index::create();
        idx.name(crate::ddl::index_name(&name))
            .table(self.fk.table().table_name())
            .concurrently()
            .if_not_exists();
        let mut keyed: Vec<&AnyColumn> = Vec::new();
        for (c, ..) in &self.eq {
            if !keyed.contains(&c) {
                keyed.push(c);
            }
        }
        if let Some(t) = &self.time {
            keyed.push(t);
        }
        for c in &keyed {
            idx.col(c.iden());
        }
        for c in [self.fk.erase(), self.amount.erase()] {
            if !keyed.contains(&&c) {
                idx.include(c.iden());
            }
        }
        Ok(idx)
    }

    /// The output column names, in order: key, extras, count, sum.
    pub(crate) fn output_names(&self) -> Vec<Ident> {
        let mut names = vec![self.key.name().clone()];
        names.extend(self.extras.iter().map(|c| c.name().clone()));
        names.push(Ident::fixed(COUNT_ALIAS));
        names.push(Ident::fixed(SUM_ALIAS));
        names
    }

    /// The report's order over its output names: sum descending (NULLs
    /// last), then the key.
    pub(crate) fn order_output(&self, q: &mut SelectStatement) {
        q.order_by_expr_with_nulls(
            Expr::col(Alias::new(SUM_ALIAS)),
            Order::Desc,
            NullOrdering::Last,
        )
        .order_by_expr(Expr::col(self.key.name().clone()), Order::Asc);
    }

    /// Decodes one returned row.
    ///
    /// # Errors
    /// [`Error::Decode`] when the row does not have this report's columns.
    pub fn decode<R: RowRead>(&self, row: &R) -> Result<TopRow<K, A::Sum>>
    where
        K: FromSqlOwned,
        A::Sum: FromSqlOwned,
    {
        let key = row.try_get::<K>(ColumnIndex::Position(0))?;
        let mut extras = Vec::with_capacity(self.extras.len());
        for (i, c) in self.extras.iter().enumerate() {
            extras.push((c.name().clone(), decode_value(row, 1 + i, c.sql_type())?));
        }
        let n = 1 + self.extras.len();
        Ok(TopRow {
            key,
            extras,
            count: row.try_get(ColumnIndex::Position(n))?,
            total: row.try_get(ColumnIndex::Position(n + 1))?,
        })
    }

    /// Runs the report.
    ///
    /// # Errors
    /// As [`check`](Self::check), before anything is sent; the executor's
    /// errors and [`Error::Decode`].
    pub async fn fetch_all<E: Executor>(&self, e: &E) -> Result<Vec<TopRow<K, A::Sum>>>
    where
        K: FromSqlOwned,
        A::Sum: FromSqlOwned,
    {
        let rows = e.rows(&self.build()?).await?;
        rows.iter().map(|r| self.decode(r)).collect()
    }

    /// [`fetch_all`](Self::fetch_all) on a blocking client
    /// (`postgres::Client`, `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`fetch_all`](Self::fetch_all).
    pub fn fetch_all_blocking<C>(&self, e: &mut C) -> Result<Vec<TopRow<K, A::Sum>>>
    where
        K: FromSqlOwned,
        A::Sum: FromSqlOwned,
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(e, async |e| self.fetch_all(e).await)
    }
}

/// One entity of a top-N report.
#[derive(Debug, Clone, PartialEq)]
pub struct TopRow<K, S> {
    /// The entity key.
    pub key: K,
    /// The extra entity columns, by name.
    pub extras: Vec<(Ident, Value)>,
    /// Matching facts.
    pub count: i64,
    /// The sum of their amounts (`None` only when every amount is NULL).
    pub total: Option<S>,
}

impl<K, S> TopRow<K, S> {
    /// An extra column's value (`None` for NULL or a column not requested).
    #[must_use]
    pub fn get<T: SqlType + ValueType>(&self, col: &Column<T>) -> Option<T> {
        let (_, v) = self.extras.iter().find(|(n, _)| n == col.name())?;
        if *v == T::null_value() {
            return None;
        }
        T::try_from(v.clone()).ok()
    }
}

/// `true` when `k` is a sum of `amount` (same column, same type).
fn is_sum_of(k: &Kept, amount: &AnyColumn) -> bool {
    matches!(k.kind, Kind::Sum(_))
        && k.column.name() == amount.name()
        && k.column.sql_type() == amount.sql_type()
}
