//! Latest-status filters: entities whose *newest* history row matches.
//!
//! Take orders and their status history. "Orders whose status is Pending"
//! means orders whose **latest** status row says Pending; the naive
//! `JOIN order_status WHERE status = 'Pending'` returns every order that was
//! *ever* Pending. [`LatestStatus`] builds the right query in several
//! equivalent strategies ([`LatestStrategy`]). "Latest" is the history row
//! with the greatest ordering columns (e.g. `(created_at, id)`), so with a
//! unique tie-breaker it is always exactly one row.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use sea_query::extension::postgres::PgFunc;
use sea_query::{
    Alias, Asterisk, ColumnRef, CommonTableExpression, Expr, ExprTrait, JoinType, Order, Query,
    SelectStatement, UnionType, WindowStatement, WithClause,
};

use crate::query::{count_of, is_distinct_from};
use crate::schema::{AnyColumn, Column, Ident, Table};
use crate::spec::Problems;
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Result, Shape};

/// Alias of the derived "latest history row" relation in generated SQL
/// (`latest`, or `latest1`, `latest2`, … when a table, schema or column of
/// the spec already has that name).
pub const LATEST_ALIAS: &str = "latest";
/// Output column holding the latest status.
pub const LATEST_STATUS: &str = "latest_status";
/// Output column holding the latest row's first ordering column (its time).
pub const LATEST_AT: &str = "latest_at";

const RN: &str = "latest_rn";
const NEWER: &str = "newer";
const SKIP_CTE: &str = "latest_skip";
const SKIP_FIRST: &str = "latest_first";
const SKIP_PREV: &str = "latest_prev";
const SKIP_NEXT: &str = "latest_next";

/// How the latest history row is found. Every strategy returns the same rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LatestStrategy {
    /// `SELECT DISTINCT ON (fk) … ORDER BY fk, time DESC, id DESC`, joined to
    /// the entities. Best with few history rows per entity.
    DistinctOn,
    /// `JOIN LATERAL (… WHERE fk = e.key ORDER BY time DESC, id DESC LIMIT 1)`:
    /// one index probe per entity; best for pages and long histories.
    Lateral,
    /// `ROW_NUMBER() OVER (PARTITION BY fk ORDER BY time DESC, id DESC) = 1`.
    Window,
    /// The history row for which `NOT EXISTS` a newer one.
    NotExists,
    /// A loose index scan: a recursive CTE that jumps from one entity's
    /// newest history row to the next entity's with one index probe each
    /// (`WHERE fk > prev.fk ORDER BY fk, time DESC, id DESC LIMIT 1`), so it
    /// never reads the older rows of long histories. Needs the index of
    /// [`LatestStatus::index_advice`].
    SkipScan,
    /// A status column on the entity table kept current by a trigger
    /// (see [`LatestStatus::denormalized`]). `status_eq` and `status_in`
    /// read only the column; predicates that a NULL status can satisfy
    /// (`status_ne`, `status_not_in`, `status_is_null`, none) also probe the
    /// history by foreign key for entities whose column is NULL, because
    /// NULL means either "latest status NULL" or "no history", and entities
    /// without history never match.
    Denormalized,
    /// Chosen per query shape from the live database
    /// ([`LatestStatus::explain_choice`]): `Denormalized` when the spec has
    /// a denormalized column it can use and the catalog says it is
    /// maintained — the column exists, and enabled triggers on the history
    /// table run [`Denormalize::function_name`] for `INSERT`, `UPDATE`,
    /// `DELETE` and `TRUNCATE` (after
    /// [`Denormalize::uninstall`] or `DISABLE TRIGGER` the column may be
    /// stale, so it is not used); otherwise a history strategy chosen
    /// from the history's statistics (rows per entity, entities with
    /// history, an index leading with the foreign key — the rule is on
    /// `latest::auto::decide`): with the index `Lateral` for pages and
    /// long-history counts, `DistinctOn` for short-history counts,
    /// `SkipScan` for long histories most entities lack; without it
    /// `NotExists` for counts and long-history pages, `Window` for
    /// short-history pages.
    /// Cached per spec, status selectivity and catalog state: creating or
    /// dropping the advised index, or installing, uninstalling or
    /// disabling the triggers, changes the next decision without clearing
    /// the cache (see [`StrategyCache`](crate::StrategyCache)). Without a database
    /// ([`build`](LatestStatus::build), [`count_query`](LatestStatus::count_query),
    /// [`page_query`](LatestStatus::page_query)) it is `Denormalized` when
    /// possible, else `Lateral` for pages and `DistinctOn` otherwise;
    /// [`count`](LatestStatus::count), [`fetch_page`](LatestStatus::fetch_page)
    /// and [`resolve`](LatestStatus::resolve) decide from the database.
    Auto,
}

impl crate::choice::StrategyName for LatestStrategy {
    const NAMED: &'static [Self] = &[
        LatestStrategy::DistinctOn,
        LatestStrategy::Lateral,
        LatestStrategy::Window,
        LatestStrategy::NotExists,
        LatestStrategy::SkipScan,
        LatestStrategy::Denormalized,
    ];
}

impl LatestStrategy {
    /// Every strategy that reads the history table.
    pub const FROM_HISTORY: [LatestStrategy; 5] = [
        LatestStrategy::DistinctOn,
        LatestStrategy::Lateral,
        LatestStrategy::Window,
        LatestStrategy::NotExists,
        LatestStrategy::SkipScan,
    ];
}

/// What to test the latest status against.
#[derive(Debug, Clone)]
enum Predicate {
    /// No filter: every entity, with its latest status attached.
    Any,
    /// `= v`
    Eq(Expr),
    /// `= ANY(array)`
    In(Expr),
    /// `IS DISTINCT FROM v`: a NULL latest status counts as "not v".
    Ne(Expr),
    /// `NOT (= ANY(array))`, NULL counting as "not in".
    NotIn(Expr),
    /// the latest status is NULL.
    IsNull,
}

/// A latest-status filter over an entity table and its history table.
///
/// ```
/// use chrono::{DateTime, Utc};
/// use pgpatterns::{column, table, LatestStatus, LatestStrategy};
/// let (orders, history) = (table!("orders"), table!("order_status"));
/// let spec = LatestStatus::new(
///     &column!(orders, "id": i64),
///     &column!(history, "order_id": i64),
///     &column!(history, "status": String),
///     &column!(history, "created_at": DateTime<Utc>),
/// )
/// .then_by(&column!(history, "id": i64))
/// .status_eq("Complete")
/// .strategy(LatestStrategy::Lateral);
/// assert_eq!(
///     spec.build()?.sql(),
///     r#"SELECT "orders".*, "latest"."status" AS "latest_status", "latest"."created_at" AS "latest_at" FROM "orders" INNER JOIN LATERAL (SELECT "order_status"."status", "order_status"."created_at" FROM "order_status" WHERE "order_status"."order_id" = "orders"."id" ORDER BY "order_status"."created_at" DESC, "order_status"."id" DESC LIMIT $1) AS "latest" ON TRUE WHERE "latest"."status" = CAST($2 AS text)"#
/// );
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "a spec does nothing until it is built or run"]
pub struct LatestStatus<S> {
    entity: Table,
    key: AnyColumn,
    history: Table,
    fk: AnyColumn,
    status: AnyColumn,
    order: Vec<AnyColumn>,
    predicate: Predicate,
    missing: Option<Expr>,
    as_of: Option<Expr>,
    history_filters: Vec<HistoryFilter>,
    denormalized: Option<AnyColumn>,
    strategy: LatestStrategy,
    problems: Problems,
    _status: PhantomData<fn() -> S>,
}

impl<S> Clone for LatestStatus<S> {
    fn clone(&self) -> Self {
        LatestStatus {
            entity: self.entity.clone(),
            key: self.key.clone(),
            history: self.history.clone(),
            fk: self.fk.clone(),
            status: self.status.clone(),
            order: self.order.clone(),
            predicate: self.predicate.clone(),
            missing: self.missing.clone(),
            as_of: self.as_of.clone(),
            history_filters: self.history_filters.clone(),
            denormalized: self.denormalized.clone(),
            strategy: self.strategy,
            problems: self.problems.clone(),
            _status: PhantomData,
        }
    }
}

fn same_table(col: &AnyColumn, table: &Table, field: &'static str, what: &str) -> Result<()> {
    col.check_on(table, field, what)
}

/// A non-empty set of statuses as one array parameter.
fn status_set<S: SqlType, V: Into<S>>(
    field: &'static str,
    statuses: impl IntoIterator<Item = V>,
) -> Result<Expr> {
    let values: Vec<S> = statuses.into_iter().map(Into::into).collect();
    if values.is_empty() {
        return Err(Error::spec(field, "needs at least one status"));
    }
    Ok(S::array_param(values))
}

impl<S: SqlType> LatestStatus<S> {
    /// A filter on the history rows `fk → key` of each entity, testing the
    /// latest row's `status` column; the latest row is the one with the
    /// greatest `time` (add a unique tie-breaker with
    /// [`then_by`](Self::then_by)). Ordering columns must be `NOT NULL`.
    ///
    /// Like every step, this never fails: the spec is checked as a whole by
    /// [`check`](Self::check), [`build`](Self::build) and every run verb,
    /// which report [`Error::InvalidSpec`] when `fk`, `status` and `time`
    /// are not columns of one table, or that table is the entity table.
    pub fn new<K: SqlType, T: SqlType>(
        key: &Column<K>,
        fk: &Column<K>,
        status: &Column<S>,
        time: &Column<T>,
    ) -> LatestStatus<S> {
        let history = fk.table().clone();
        let mut problems = Problems::default();
        problems.note(same_table(&status.erase(), &history, "status", "history"));
        problems.note(same_table(&time.erase(), &history, "time", "history"));
        if key.table().name() == history.name() && key.table().schema() == history.schema() {
            problems.note::<()>(Err(Error::spec(
                "history",
                "the history table must differ from the entity table",
            )));
        }
        LatestStatus {
            entity: key.table().clone(),
            key: key.erase(),
            history,
            fk: fk.erase(),
            status: status.erase(),
            order: vec![time.erase()],
            predicate: Predicate::Any,
            missing: None,
            as_of: None,
            history_filters: Vec::new(),
            denormalized: None,
            strategy: LatestStrategy::DistinctOn,
            problems,
            _status: PhantomData,
        }
    }

    /// Adds a tie-breaking ordering column of the history table (compared
    /// after the ones before it). End with a unique column, such as the
    /// history id, so "latest" is one row even when times tie.
    ///
    /// The spec is refused (when checked) if the column is not on the
    /// history table or is already an ordering column.
    pub fn then_by<T: SqlType>(mut self, col: &Column<T>) -> LatestStatus<S> {
        let col = col.erase();
        let ok = self
            .problems
            .note(same_table(&col, &self.history, "then_by", "history"));
        if ok.is_some() && self.order.contains(&col) {
            self.problems.note::<()>(Err(Error::spec(
                "then_by",
                format!("column {} is already an ordering column", col.name()),
            )));
        } else if ok.is_some() {
            self.order.push(col);
        }
        self
    }

    /// Keeps entities whose latest status equals `status`.
    pub fn status_eq(mut self, status: impl Into<S>) -> LatestStatus<S> {
        self.predicate = Predicate::Eq(status.into().param());
        self
    }

    /// Keeps entities whose latest status is one of `statuses` (one array
    /// parameter). An empty set (which would match nothing) is refused
    /// when the spec is checked.
    pub fn status_in<V: Into<S>>(
        mut self,
        statuses: impl IntoIterator<Item = V>,
    ) -> LatestStatus<S> {
        if let Some(set) = self.problems.note(status_set("status_in", statuses)) {
            self.predicate = Predicate::In(set);
        }
        self
    }

    /// Keeps entities whose latest status is not `status` (a NULL status
    /// counts as "not `status`": `IS DISTINCT FROM`).
    pub fn status_ne(mut self, status: impl Into<S>) -> LatestStatus<S> {
        self.predicate = Predicate::Ne(status.into().param());
        self
    }

    /// Keeps entities whose latest status is none of `statuses` (NULL
    /// counts as "none of them"). An empty set is refused when the spec is
    /// checked.
    pub fn status_not_in<V: Into<S>>(
        mut self,
        statuses: impl IntoIterator<Item = V>,
    ) -> LatestStatus<S> {
        if let Some(set) = self.problems.note(status_set("status_not_in", statuses)) {
            self.predicate = Predicate::NotIn(set);
        }
        self
    }

    /// Keeps entities whose latest history row has a NULL status.
    pub fn status_is_null(mut self) -> LatestStatus<S> {
        self.predicate = Predicate::IsNull;
        self
    }

    /// Entities with no history row count as having `status` (by default
    /// they are excluded). With [`as_of`](Self::as_of), "no history" means
    /// no row at or before that time. Not with the `Denormalized`
    /// strategy, whose NULL column cannot tell "no history" from a NULL
    /// latest status.
    pub fn missing_as(mut self, status: impl Into<S>) -> LatestStatus<S> {
        self.missing = Some(status.into().param());
        self
    }

    /// Time travel: the status each entity had at `at` — only history rows
    /// whose first ordering column is `<= at` count. `at` has that column's
    /// type (`DateTime<Utc>` for `timestamptz`, `NaiveDateTime` for
    /// `timestamp`), inferred from the value: `spec.as_of(t)`. A value of
    /// another type, or the `Denormalized` strategy, is refused when the
    /// spec is checked.
    pub fn as_of<T: SqlType>(mut self, at: T) -> LatestStatus<S> {
        if self
            .problems
            .note(self.order[0].check_type::<T>("as_of", "value"))
            .is_some()
        {
            self.as_of = Some(at.param());
        }
        self
    }

    /// Only history rows matching a condition count; the latest row is
    /// chosen among them. The closure gets the handle the history table has
    /// in the generated SQL (some strategies alias it) and builds the
    /// condition from columns re-targeted with [`Column::of`]:
    ///
    /// ```
    /// # use pgpatterns::{column, table, LatestStatus};
    /// # use chrono::{DateTime, Utc};
    /// # let orders = table!("orders");
    /// # let history = table!("order_status");
    /// let source = column!(history, "source": String);
    /// let spec = LatestStatus::new(
    ///     &column!(orders, "id": i64),
    ///     &column!(history, "order_id": i64),
    ///     &column!(history, "status": String),
    ///     &column!(history, "created_at": DateTime<Utc>),
    /// )
    /// .history_filter(move |h| source.of(h).ne("import"));
    /// assert!(spec.build()?.sql().contains(r#""order_status"."source" <> CAST($1 AS text)"#));
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    ///
    /// Not with the `Denormalized` strategy, which does not read the
    /// history (the spec is refused rather than the condition ignored).
    pub fn history_filter(
        mut self,
        condition: impl Fn(&Table) -> Expr + Send + Sync + 'static,
    ) -> LatestStatus<S> {
        self.history_filters
            .push(HistoryFilter(Arc::new(condition)));
        self
    }

    /// The entity table's status column kept equal to the latest history
    /// status (by the trigger from this module's DDL helpers), used by
    /// [`LatestStrategy::Denormalized`] and considered by `Auto`. A column
    /// not on the entity table is refused when the spec is checked.
    pub fn denormalized(mut self, col: &Column<S>) -> LatestStatus<S> {
        let col = col.erase();
        if self
            .problems
            .note(same_table(&col, &self.entity, "denormalized", "entity"))
            .is_some()
        {
            self.denormalized = Some(col);
        }
        self
    }

    /// Chooses the strategy (default [`LatestStrategy::DistinctOn`]). The
    /// same rows whichever it is; `Denormalized` needs a
    /// [`denormalized`](Self::denormalized) column and no `as_of`,
    /// `missing_as` or history filter, which [`check`](Self::check) tells.
    pub fn strategy(mut self, strategy: LatestStrategy) -> LatestStatus<S> {
        self.strategy = strategy;
        self
    }

    /// Checks the spec as a whole: the first problem any step recorded,
    /// then whether the strategy can compute it. [`build`](Self::build),
    /// [`to_statement`](Self::to_statement) and every run verb check first,
    /// so calling this is only needed to fail early (at start-up, say).
    ///
    /// ```
    /// use chrono::{DateTime, Utc};
    /// use pgpatterns::{column, table, LatestStatus, LatestStrategy};
    /// let (orders, history) = (table!("orders"), table!("order_status"));
    /// let spec = LatestStatus::new(
    ///     &column!(orders, "id": i64),
    ///     &column!(history, "order_id": i64),
    ///     &column!(history, "status": String),
    ///     &column!(history, "created_at": DateTime<Utc>),
    /// )
    /// .strategy(LatestStrategy::Denormalized) // no denormalized column yet
    /// .status_eq("Pending");
    /// let err = spec.check().unwrap_err();
    /// assert!(err.to_string().contains("Denormalized needs the entity's status column"));
    /// // The same in any order: the column completes the spec.
    /// spec.denormalized(&column!(orders, "status": String)).check()?;
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] (or [`Error::InvalidIdentifier`]) for the
    /// first problem: see each step.
    pub fn check(&self) -> Result<()> {
        self.problems.check()?;
        if self.strategy != LatestStrategy::Denormalized {
            return Ok(());
        }
        if self.denormalized.is_none() {
            return Err(Error::spec(
                "strategy",
                "Denormalized needs the entity's status column: add .denormalized(&col)",
            ));
        }
        if self.as_of.is_some() {
            return Err(Error::spec(
                "as_of",
                "the Denormalized strategy only knows the current status; use a history strategy for time travel",
            ));
        }
        if self.missing.is_some() {
            return Err(Error::spec(
                "missing_as",
                "the Denormalized strategy cannot tell an entity without history from a NULL latest status",
            ));
        }
        if !self.history_filters.is_empty() {
            return Err(Error::spec(
                "history_filter",
                "the Denormalized strategy does not read the history, so it cannot filter it",
            ));
        }
        Ok(())
    }

    /// The chosen strategy.
    #[must_use]
    pub fn chosen_strategy(&self) -> LatestStrategy {
        self.strategy
    }

    /// The entity table.
    #[must_use]
    pub fn entity(&self) -> &Table {
        &self.entity
    }

    /// The entity key column.
    #[must_use]
    pub fn key(&self) -> &AnyColumn {
        &self.key
    }

    /// The filtered entity query: `entity.*`, plus `latest_status` and
    /// `latest_at` (the latest row's status and first ordering column;
    /// NULL for entities counted through [`missing_as`](Self::missing_as)).
    /// Add your own joins, filters, ordering or limit, or use it as a
    /// subquery.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn to_statement(&self) -> Result<SelectStatement> {
        self.check()?;
        Ok(self.statement())
    }

    /// [`to_statement`](Self::to_statement) of a checked spec.
    pub(crate) fn statement(&self) -> SelectStatement {
        if self.strategy == LatestStrategy::Auto {
            return self
                .with_strategy(self.static_choice(Shape::All))
                .statement();
        }
        let order = &self.order;
        let mut q = Query::select();
        q.column(self.entity.all_columns())
            .from(self.entity.table_ref());
        let history = match (&self.denormalized, self.strategy) {
            (Some(col), LatestStrategy::Denormalized) => {
                q.expr_as(col.expr(), Alias::new(LATEST_STATUS));
                self.filter_denormalized(&mut q, col.expr());
                return q;
            }
            _ => &self.history,
        };
        let latest = self.internal(LATEST_ALIAS);
        let lcol = |c: &AnyColumn| Expr::col((latest.clone(), c.iden()));
        let join = if self.missing.is_some() {
            JoinType::LeftJoin
        } else {
            JoinType::InnerJoin
        };
        let first = &order[0];
        match self.strategy {
            // Denormalized without a column is refused by `strategy()`;
            // Auto was resolved above.
            LatestStrategy::DistinctOn
            | LatestStrategy::Window
            | LatestStrategy::Denormalized
            | LatestStrategy::Auto => {
                let mut sub = Query::select();
                sub.column(self.fk.col_ref())
                    .column(self.status.col_ref())
                    .column(first.col_ref())
                    .from(history.table_ref());
                self.history_conditions(&mut sub, history);
                let mut on = self.key.expr().eq(lcol(&self.fk));
                if self.strategy == LatestStrategy::DistinctOn {
                    sub.distinct_on([self.fk.col_ref()])
                        .order_by(self.fk.col_ref(), Order::Asc);
                    for c in order {
                        sub.order_by(c.col_ref(), Order::Desc);
                    }
                } else {
                    let mut w = WindowStatement::partition_by(self.fk.col_ref());
                    for c in order {
                        w.order_by(c.col_ref(), Order::Desc);
                    }
                    sub.expr_window_as(Expr::cust("ROW_NUMBER()"), w, self.internal(RN));
                    on = on.and(Expr::col((latest.clone(), self.internal(RN))).eq(Expr::cust("1")));
                }
                q.join_subquery(join, sub, latest.clone(), on);
            }
            LatestStrategy::Lateral => {
                let mut sub = Query::select();
                sub.column(self.status.col_ref())
                    .column(first.col_ref())
                    .from(history.table_ref())
                    .and_where(self.fk.expr().eq(self.key.expr()));
                self.history_conditions(&mut sub, history);
                for c in order {
                    sub.order_by(c.col_ref(), Order::Desc);
                }
                sub.limit(1);
                q.join_lateral(join, sub, latest.clone(), Expr::cust("TRUE"));
            }
            LatestStrategy::SkipScan => {
                let sub = self.skip_scan(history);
                q.join_subquery(
                    join,
                    sub,
                    latest.clone(),
                    self.key.expr().eq(lcol(&self.fk)),
                );
            }
            LatestStrategy::NotExists => {
                let h = history.with_alias(self.internal(LATEST_ALIAS));
                let newer = history.with_alias(self.internal(NEWER));
                let mut sub = Query::select();
                sub.expr(Expr::cust("1"))
                    .from(newer.table_ref())
                    .and_where(self.fk.of(&newer).expr().eq(self.fk.of(&h).expr()));
                let newer_cols: Vec<Expr> = order.iter().map(|c| c.of(&newer).expr()).collect();
                let mine: Vec<Expr> = order.iter().map(|c| c.of(&h).expr()).collect();
                sub.and_where(Expr::tuple(newer_cols).gt(Expr::tuple(mine)));
                self.history_conditions(&mut sub, &newer);
                let mut on = self.key.expr().eq(self.fk.of(&h).expr());
                for c in self.history_condition_list(&h) {
                    on = on.and(c);
                }
                on = on.and(Expr::exists(sub).not());
                q.join(join, h.table_ref(), on);
            }
        }
        q.expr_as(lcol(&self.status), Alias::new(LATEST_STATUS))
            .expr_as(lcol(first), Alias::new(LATEST_AT));
        // The time column is NOT NULL on every real history row, so a NULL
        // there means the LEFT JOIN found none.
        let has_row = self.missing.as_ref().map(|_| lcol(first).is_not_null());
        self.filter(&mut q, lcol(&self.status), has_row);
        q
    }

    /// An internal alias (`latest`, `newer`, `latest_skip`, …) that differs
    /// from every table, alias, schema and column name of the spec, so a
    /// user table called `latest` is never shadowed by the crate's own
    /// alias. `base` itself unless it is taken.
    fn internal(&self, base: &'static str) -> Ident {
        let tables = [&self.entity, &self.history];
        let mut taken: Vec<&str> = Vec::with_capacity(8 + self.order.len());
        for t in tables {
            taken.push(t.name().as_str());
            taken.extend(t.schema().map(Ident::as_str));
            taken.extend(t.alias().map(Ident::as_str));
        }
        taken.extend(
            [&self.key, &self.fk, &self.status]
                .into_iter()
                .chain(&self.order)
                .chain(&self.denormalized)
                .map(|c| c.name().as_str()),
        );
        if !taken.contains(&base) {
            return Ident::fixed(base);
        }
        let name = crate::ddl::free_name(base, taken.iter().copied());
        Ident::new(&name).unwrap_or_else(|_| Ident::fixed(base))
    }

    /// `WITH RECURSIVE latest_skip AS (first probe UNION ALL next probe)
    /// SELECT fk, status, time FROM latest_skip`: the latest row of each
    /// entity, one index probe per entity.
    fn skip_scan(&self, history: &Table) -> SelectStatement {
        let mut cols: Vec<&AnyColumn> = vec![&self.fk, &self.status];
        for c in &self.order {
            if cols.iter().all(|have| have.name() != c.name()) {
                cols.push(c);
            }
        }
        let prev = self.internal(SKIP_PREV);
        let probe = |after_prev: bool| {
            let mut p = Query::select();
            for c in &cols {
                p.column(c.col_ref());
            }
            p.from(history.table_ref());
            if after_prev {
                p.and_where(self.fk.expr().gt(Expr::col((prev.clone(), self.fk.iden()))));
            } else {
                p.and_where(self.fk.expr().is_not_null());
            }
            self.history_conditions(&mut p, history);
            p.order_by(self.fk.col_ref(), Order::Asc);
            for c in &self.order {
                p.order_by(c.col_ref(), Order::Desc);
            }
            p.limit(1);
            p
        };
        // The anchor is wrapped so its ORDER BY … LIMIT stays its own.
        let mut walk = Query::select();
        walk.column(Asterisk)
            .from_subquery(probe(false), self.internal(SKIP_FIRST));
        let step = Query::select()
            .column(ColumnRef::Asterisk(Some(self.internal(SKIP_NEXT).into())))
            .from_as(self.internal(SKIP_CTE), prev.clone())
            .join_lateral(
                JoinType::InnerJoin,
                probe(true),
                self.internal(SKIP_NEXT),
                Expr::cust("TRUE"),
            )
            .to_owned();
        walk.union(UnionType::All, step);
        let cte = CommonTableExpression::new()
            .query(walk)
            .columns(cols.iter().map(|c| c.iden()))
            .table_name(self.internal(SKIP_CTE))
            .to_owned();
        let skip = self.internal(SKIP_CTE);
        let mut sub = Query::select();
        sub.column((skip.clone(), self.fk.iden()))
            .column((skip.clone(), self.status.iden()))
            .column((skip.clone(), self.order[0].iden()))
            .from(skip)
            .with_cte(WithClause::new().recursive(true).cte(cte).to_owned());
        sub
    }

    /// Adds the status predicate. `has_row` is set when entities without
    /// history are kept (LEFT JOIN): their status is the `missing_as` value.
    fn filter(&self, q: &mut SelectStatement, status: Expr, has_row: Option<Expr>) {
        let status = match (has_row, &self.missing) {
            (Some(has_row), Some(missing)) => {
                Expr::case(has_row, status).finally(missing.clone()).into()
            }
            _ => status,
        };
        let cond = match &self.predicate {
            Predicate::Any => return,
            Predicate::Eq(v) => status.eq(v.clone()),
            Predicate::In(arr) => status.eq(PgFunc::any(arr.clone())),
            Predicate::Ne(v) => is_distinct_from(status, v.clone()),
            Predicate::NotIn(arr) => status
                .clone()
                .is_null()
                .or(status.eq(PgFunc::any(arr.clone())).not()),
            Predicate::IsNull => status.is_null(),
        };
        q.and_where(cond);
    }

    /// The status predicate on the maintained column. The column is NULL
    /// both for "the latest status is NULL" and for "no history at all", and
    /// the history strategies only return entities that have history. So
    /// wherever NULL can match (`status_ne`, `status_not_in`,
    /// `status_is_null`, no predicate), an entity whose column is NULL must
    /// also have a history row: `EXISTS (SELECT 1 FROM history WHERE fk =
    /// key)`, one index probe, and only for entities whose column is NULL.
    /// `status_eq` and `status_in` never match NULL and stay a plain filter
    /// on the column.
    fn filter_denormalized(&self, q: &mut SelectStatement, column: Expr) {
        let has_history = || {
            Expr::exists(
                Query::select()
                    .expr(Expr::cust("1"))
                    .from(self.history.table_ref())
                    .and_where(self.fk.expr().eq(self.key.expr()))
                    .to_owned(),
            )
        };
        let not_null_or_history = || column.clone().is_not_null().or(has_history());
        let cond = match &self.predicate {
            Predicate::Eq(v) => column.eq(v.clone()),
            Predicate::In(arr) => column.eq(PgFunc::any(arr.clone())),
            Predicate::Any => not_null_or_history(),
            Predicate::IsNull => column.is_null().and(has_history()),
            Predicate::Ne(v) => {
                is_distinct_from(column.clone(), v.clone()).and(not_null_or_history())
            }
            Predicate::NotIn(arr) => column
                .clone()
                .is_null()
                .or(column.clone().eq(PgFunc::any(arr.clone())).not())
                .and(not_null_or_history()),
        };
        q.and_where(cond);
    }

    /// The as-of bound and the caller's filters, for history rows named `h`.
    fn history_condition_list(&self, h: &Table) -> Vec<Expr> {
        let as_of = self
            .as_of
            .iter()
            .map(|at| self.order[0].of(h).expr().lte(at.clone()));
        as_of
            .chain(self.history_filters.iter().map(|f| (f.0)(h)))
            .collect()
    }

    fn history_conditions(&self, sub: &mut SelectStatement, h: &Table) {
        for c in self.history_condition_list(h) {
            sub.and_where(c);
        }
    }

    /// The statement rendered with its values.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn build(&self) -> Result<BuiltQuery> {
        self.check()?;
        Ok(self.built())
    }

    /// [`build`](Self::build) of a checked spec.
    pub(crate) fn built(&self) -> BuiltQuery {
        BuiltQuery::new(&self.statement())
    }

    /// `SELECT COUNT(*)` of the matching entities.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn count_query(&self) -> Result<BuiltQuery> {
        self.check()?;
        Ok(self.count_built())
    }

    /// [`count_query`](Self::count_query) of a checked spec.
    pub(crate) fn count_built(&self) -> BuiltQuery {
        if self.strategy == LatestStrategy::Auto {
            return self
                .with_strategy(self.static_choice(Shape::Count))
                .count_built();
        }
        count_of(self.statement())
    }

    /// The first page, or the page after the request's cursor, as one
    /// statement: [`to_statement`](Self::to_statement) in key order with a
    /// limit (see [`fetch_page`](Self::fetch_page), which also reads the
    /// next page's cursor).
    ///
    /// # Errors
    /// As [`fetch_page`](Self::fetch_page), before anything is sent.
    pub fn page_query<K: crate::CursorKey>(&self, req: &crate::PageRequest) -> Result<BuiltQuery> {
        self.check()?;
        let after = self.decode_after::<K>(req)?;
        Ok(self.page_built(req.limit, after.map(SqlType::param)))
    }

    /// The page query of a checked `limit`, after a key given as a typed
    /// parameter.
    pub(crate) fn page_built(&self, limit: i64, after: Option<Expr>) -> BuiltQuery {
        if self.strategy == LatestStrategy::Auto {
            return self
                .with_strategy(self.static_choice(Shape::Page { limit }))
                .page_built(limit, after);
        }
        let mut q = self.statement();
        if let Some(after) = after {
            q.and_where(self.key.expr().gt(after));
        }
        q.order_by(self.key.col_ref(), Order::Asc)
            .limit(u64::try_from(limit).unwrap_or(1));
        BuiltQuery::new(&q)
    }
}

/// A caller's condition on history rows, built for a given table handle.
#[derive(Clone)]
struct HistoryFilter(Arc<dyn Fn(&Table) -> Expr + Send + Sync>);

impl fmt::Debug for HistoryFilter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("HistoryFilter(..)")
    }
}

mod auto;
mod ddl;
mod run;

pub(crate) use ddl::backfill_column;
pub use ddl::{BackfillReport, Denormalize, DRIFT_STORED};

#[cfg(test)]
mod tests;
