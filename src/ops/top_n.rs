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
use crate::rollup::{decode_value, Agg, Rollup, Summable};
use crate::schema::{AnyColumn, Column, Ident, Table};
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
/// use chrono::{TimeZone, Utc};
/// use pgpatterns::ops::TopN;
/// use pgpatterns::Table;
/// use rust_decimal::Decimal;
/// let users = Table::new("users")?;
/// let orders = Table::new("orders")?;
/// let since = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
/// let report = TopN::<i64, Decimal>::new(
///     &users.column::<i64>("id")?,
///     &orders.column::<i64>("user_id")?,
///     &orders.column::<Decimal>("total_amount")?,
///     10,
/// )?
/// .extra(&users.column::<String>("username")?)?
/// .window_since(&orders.column("created_at")?, since)?
/// .where_eq(&orders.column::<String>("status")?, "completed")?;
/// assert_eq!(
///     report.build().sql(),
///     r#"SELECT "users"."id", "users"."username", "top"."fact_count", "top"."fact_sum" FROM (SELECT "orders"."user_id" AS "user_id", COUNT(*) AS "fact_count", SUM("orders"."total_amount") AS "fact_sum", GROUPING("orders"."user_id") AS "rollup_grouping" FROM "orders" WHERE "orders"."status" = CAST($1 AS text) AND "orders"."created_at" >= CAST($2 AS timestamptz) GROUP BY "orders"."user_id" ORDER BY "rollup_grouping" ASC, "fact_sum" DESC NULLS LAST, "user_id" ASC NULLS LAST LIMIT $3) AS "top" INNER JOIN "users" ON "users"."id" = "top"."user_id" ORDER BY "top"."fact_sum" DESC NULLS LAST, "users"."id" ASC"#
/// );
/// assert_eq!(
///     report.index("orders_top_n")?.sql(),
///     r#"CREATE INDEX CONCURRENTLY IF NOT EXISTS "orders_top_n" ON "orders" ("status", "created_at") INCLUDE ("user_id", "total_amount")"#
/// );
/// # Ok::<(), pgpatterns::Error>(())
/// ```
pub struct TopN<K, A: Summable> {
    key: Column<K>,
    fk: Column<K>,
    amount: Column<A>,
    n: i64,
    extras: Vec<AnyColumn>,
    time: Option<AnyColumn>,
    since: Option<Expr>,
    until: Option<Expr>,
    eq: Vec<(AnyColumn, Expr)>,
    filters: Vec<Expr>,
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
            .field("eq", &self.eq.iter().map(|(c, _)| c).collect::<Vec<_>>())
            .field("filters", &self.filters.len())
            .finish()
    }
}

fn on_table(col: &AnyColumn, table: &Table, field: &'static str, what: &str) -> Result<()> {
    col.check_on(table, field, what)
}

impl<K: SqlType, A: Summable> TopN<K, A> {
    /// The top `n` entities (`key`) by `SUM(amount)` over their facts
    /// (`fk → key`).
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] when `amount` is not on the facts table, the
    /// facts table is the entity table, or `n < 1`.
    pub fn new(key: &Column<K>, fk: &Column<K>, amount: &Column<A>, n: i64) -> Result<TopN<K, A>> {
        on_table(&amount.erase(), fk.table(), "amount", "facts")?;
        if key.table() == fk.table() {
            return Err(Error::spec(
                "fk",
                "the facts table must differ from the entity table",
            ));
        }
        Error::at_least("n", n, 1)?;
        if [COUNT_ALIAS, SUM_ALIAS, crate::GROUPING_ALIAS].contains(&fk.name().as_str()) {
            return Err(Error::spec(
                "fk",
                format!(
                    "the column name {} is used by the report's own columns",
                    fk.name()
                ),
            ));
        }
        Ok(TopN {
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
        })
    }

    /// Returns an entity column too (`username`, `email`); read it from a
    /// row with [`TopRow::get`].
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] when the column is not on the entity table or
    /// is already returned.
    pub fn extra<T: SqlType>(mut self, col: &Column<T>) -> Result<TopN<K, A>> {
        let col = col.erase();
        on_table(&col, self.key.table(), "extra", "entity")?;
        if self.extras.contains(&col) || col == self.key.erase() {
            return Err(Error::spec(
                "extra",
                format!("column {} is already returned", col.name()),
            ));
        }
        self.extras.push(col);
        Ok(self)
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

    /// Only facts with `time >= since` (e.g. now minus 30 days).
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] when `time` is not on the facts table or
    /// differs from an earlier window column.
    pub fn window_since<T: SqlType>(mut self, time: &Column<T>, since: T) -> Result<TopN<K, A>> {
        self.time_column(time)?;
        self.since = Some(time.gte(since));
        Ok(self)
    }

    /// Only facts with `time < until`.
    ///
    /// # Errors
    /// As [`window_since`](Self::window_since).
    pub fn window_until<T: SqlType>(mut self, time: &Column<T>, until: T) -> Result<TopN<K, A>> {
        self.time_column(time)?;
        self.until = Some(time.lt(until));
        Ok(self)
    }

    /// Only facts with `col = value` (`status = 'completed'`); equality
    /// columns lead the advised index.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] when the column is not on the facts table.
    pub fn where_eq<T: SqlType>(
        mut self,
        col: &Column<T>,
        value: impl Into<T>,
    ) -> Result<TopN<K, A>> {
        on_table(&col.erase(), self.fk.table(), "where_eq", "facts")?;
        self.eq.push((col.erase(), col.eq(value)));
        Ok(self)
    }

    /// Any other condition on the facts (not covered by the advised index).
    #[must_use]
    pub fn filter(mut self, condition: Expr) -> TopN<K, A> {
        self.filters.push(condition);
        self
    }

    /// The per-entity aggregate: a one-level [`Rollup`] ranked by the sum.
    fn aggregate(&self) -> Result<Rollup> {
        let mut r = Rollup::new(self.fk.table());
        r.dimension(&self.fk)?;
        r.metric(COUNT_ALIAS, Agg::count_all())?;
        let sum = r.metric(SUM_ALIAS, Agg::<A::Sum>::sum(&self.amount))?;
        for (_, c) in &self.eq {
            r.filter(c.clone());
        }
        for c in self.since.iter().chain(&self.until).chain(&self.filters) {
            r.filter(c.clone());
        }
        r.rank_by(&sum, Order::Desc)?.limit_per_level(self.n)?;
        Ok(r)
    }

    /// The report: key, extra columns, count, sum; best first, ties by key.
    #[must_use]
    pub fn to_statement(&self) -> SelectStatement {
        // `new` refused the only names that could clash, so this is Ok.
        let inner = self
            .aggregate()
            .map_or_else(|_| Query::select(), |r| r.to_statement());
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
    #[must_use]
    pub fn build(&self) -> BuiltQuery {
        BuiltQuery::new(&self.to_statement())
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
        for (c, _) in &self.eq {
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
    /// The executor's errors and [`Error::Decode`].
    pub async fn fetch<E: Executor>(&self, e: &E) -> Result<Vec<TopRow<K, A::Sum>>>
    where
        K: FromSqlOwned,
        A::Sum: FromSqlOwned,
    {
        let rows = e.rows(&self.build()).await?;
        rows.iter().map(|r| self.decode(r)).collect()
    }

    /// [`fetch`](Self::fetch) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`fetch`](Self::fetch).
    pub fn fetch_blocking<C>(&self, e: &mut C) -> Result<Vec<TopRow<K, A::Sum>>>
    where
        K: FromSqlOwned,
        A::Sum: FromSqlOwned,
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(e, async |e| self.fetch(e).await)
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
