//! Window queries over a summary: whole buckets from the summary table, the
//! partial buckets at the window's edges from the base table, combined and
//! grouped — the same rows as the query on the base table.

use std::fmt;

use sea_query::{
    Alias, Expr, ExprTrait, Func, NullOrdering, Order, Query, SelectStatement, UnionType,
};

use super::{BucketTime, Kept, Kind, Summary};
use crate::schema::{AnyColumn, Column, Ident};
use crate::spec::Problems;
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Result};

/// Alias of the combined parts in the generated SQL.
const WINDOW_ALIAS: &str = "pgp_window";

/// One aggregate column of a window query.
#[derive(Clone, Copy)]
pub(crate) enum Part<'a> {
    /// The row count, `COUNT(*)`.
    Rows,
    /// A kept measure: `COUNT(column)` or `SUM(column)`.
    Kept(&'a Kept),
    /// The count of non-NULL values a sum keeps beside it (the sum and
    /// its [`Kept::nonnull`] column): `COUNT(column)` of the sum's column.
    NonNull(&'a Kept, &'a Ident),
}

impl Part<'_> {
    /// The summary column holding this part.
    fn summary_column(&self, summary: &Summary) -> Ident {
        match self {
            Part::Rows => summary.count_name().clone(),
            Part::Kept(k) => k.name.clone(),
            Part::NonNull(_, n) => (*n).clone(),
        }
    }

    /// The aggregate over base rows.
    fn over_rows(&self) -> Expr {
        match self {
            Part::Rows => Expr::cust("COUNT(*)"),
            Part::Kept(k) => match k.kind {
                Kind::Count => Func::count(k.column.expr()).into(),
                Kind::Sum(_) => Func::sum(k.column.expr()).into(),
            },
            Part::NonNull(k, _) => Func::count(k.column.expr()).into(),
        }
    }

    /// The total over the window's parts, typed as over base rows.
    fn combined(&self, part: Expr) -> Expr {
        match self {
            Part::Kept(Kept {
                kind: Kind::Sum(t), ..
            }) => Func::sum(part).cast_as(*t),
            _ => Func::coalesce([Func::sum(part).into(), Expr::val(0i64)]).cast_as("int8"),
        }
    }
}

/// The parts of a window query, checked against a summary.
pub(crate) struct WindowParts<'a> {
    /// Output group columns (keys of the summary) and their output names.
    pub(crate) by: Vec<(AnyColumn, String)>,
    /// `key = value` filters (keys of the summary, values bound).
    pub(crate) eq: &'a [(AnyColumn, Expr)],
    /// `time >= since`.
    pub(crate) since: Option<Expr>,
    /// `time < until`.
    pub(crate) until: Option<Expr>,
    /// The aggregates and their output names.
    pub(crate) measures: Vec<(Part<'a>, String)>,
}

impl Summary {
    /// Checks that `col` is a group key of this summary.
    pub(crate) fn check_key(&self, col: &AnyColumn, field: &'static str) -> Result<()> {
        if col.table().name() == self.base.name()
            && col.table().schema() == self.base.schema()
            && self.keys.iter().any(|k| k.name() == col.name())
        {
            return Ok(());
        }
        Err(Error::spec(
            field,
            format!(
                "column {} of {} is not a group key of the summary {}",
                col.name(),
                col.table().display_name(),
                self.table_name()
            ),
        ))
    }

    /// Checks that `col` is this summary's time column.
    pub(crate) fn check_time(&self, col: &AnyColumn, field: &'static str) -> Result<()> {
        if col.table().name() == self.base.name()
            && col.table().schema() == self.base.schema()
            && col.name() == self.time.name()
            && col.sql_type() == self.time.sql_type()
        {
            return Ok(());
        }
        Err(Error::spec(
            field,
            format!(
                "the window is on {}, the summary {} buckets {} ({})",
                col.name(),
                self.table_name(),
                self.time.name(),
                self.time.sql_type()
            ),
        ))
    }

    /// The window query: groups `by`, the count and the measures over
    /// `[since, until)`, whole buckets from the summary and the edges from
    /// the base table. The caller checked every column.
    pub(crate) fn window_statement(&self, parts: &WindowParts<'_>) -> SelectStatement {
        let table = self.table();
        let bucket = table.col::<i64>(self.bucket_name().clone()).expr();
        // Each bound once per query (an InitPlan), not once per row.
        let once =
            |e: Expr| Expr::SubQuery(None, Box::new(Query::select().expr(e).to_owned().into()));
        let lo = parts.since.clone().map(|s| once(self.ceil_of(s)));
        let hi = parts.until.clone().map(|u| once(self.bucket_of(u)));

        // Whole buckets, from the summary.
        let mut whole = Query::select();
        for (c, alias) in &parts.by {
            whole.expr_as(c.of(&table).expr(), Alias::new(alias));
        }
        for (part, alias) in &parts.measures {
            let name = part.summary_column(self);
            whole.expr_as(table.col::<i64>(name).expr(), Alias::new(alias));
        }
        whole.from(table.table_ref());
        if let Some(lo) = &lo {
            whole.and_where(bucket.clone().gte(lo.clone()));
        }
        if let Some(hi) = &hi {
            whole.and_where(bucket.clone().lt(hi.clone()));
        }
        for (c, v) in parts.eq {
            whole.and_where(c.of(&table).expr().eq(v.clone()));
        }

        // The partial buckets at the edges, from the base table: two time
        // ranges (index range scans on the time column), which are the
        // window minus its whole buckets, or the whole window when it
        // holds no whole bucket.
        let t = self.time.expr();
        let edges = match (&parts.since, &parts.until, &lo, &hi) {
            (Some(since), Some(until), Some(lo), Some(hi)) => {
                let first = t
                    .clone()
                    .gte(since.clone())
                    .and(t.clone().lt(Func::least([lo.clone(), until.clone()])));
                let last = t
                    .clone()
                    .gte(Func::greatest([hi.clone(), lo.clone()]))
                    .and(t.clone().lt(until.clone()));
                first.or(last)
            }
            (Some(since), None, Some(lo), None) => {
                t.clone().gte(since.clone()).and(t.clone().lt(lo.clone()))
            }
            (None, Some(until), None, Some(hi)) => {
                t.clone().gte(hi.clone()).and(t.clone().lt(until.clone()))
            }
            // No window: every row with a time, all of them in the summary.
            _ => Expr::cust("FALSE"),
        };
        let mut edge = Query::select();
        for (c, alias) in &parts.by {
            edge.expr_as(c.expr(), Alias::new(alias));
        }
        for (part, alias) in &parts.measures {
            edge.expr_as(part.over_rows(), Alias::new(alias));
        }
        edge.from(self.base.table_ref()).and_where(edges);
        for (c, v) in parts.eq {
            edge.and_where(c.expr().eq(v.clone()));
        }
        for (c, _) in &parts.by {
            edge.add_group_by([c.expr()]);
        }
        whole.union(UnionType::All, edge);

        // Combined.
        let w = Alias::new(WINDOW_ALIAS);
        let col = |name: &str| Expr::col((w.clone(), Alias::new(name)));
        let mut q = Query::select();
        for (_, alias) in &parts.by {
            q.expr_as(col(alias), Alias::new(alias));
        }
        for (part, alias) in &parts.measures {
            q.expr_as(part.combined(col(alias)), Alias::new(alias));
        }
        q.from_subquery(whole, w.clone());
        for (_, alias) in &parts.by {
            q.add_group_by([col(alias)]);
        }
        q
    }

    /// A window query over this summary (see [`SummaryWindow`]).
    pub fn window(&self) -> SummaryWindow {
        SummaryWindow {
            summary: self.clone(),
            by: None,
            eq: Vec::new(),
            since: None,
            until: None,
            top: None,
            problems: Problems::default(),
        }
    }
}

/// Counts and measures per group over a time window, from a [`Summary`]:
/// the summary's whole buckets inside the window plus the base table's rows
/// in the partial buckets at its edges, so the result equals the same
/// aggregate on the base table ([`base_statement`](Self::base_statement)).
///
/// The output columns are the group columns ([`by`](Self::by), default
/// every key of the summary), the row count (named like the summary's
/// count column) and every measure (named like its summary column).
/// Ordered by the group columns, or with [`top`](Self::top) by a measure,
/// best first, ties by the group columns (NULLs last), limited.
///
/// ```
/// use chrono::{DateTime, TimeZone, Utc};
/// use pgpatterns::ops::summary::{Bucket, Measure, Summary};
/// use pgpatterns::{column, table, Decimal};
/// let orders = table!("orders");
/// let user_id = column!(orders, "user_id": i64);
/// let summary = Summary::new(&column!(orders, "created_at": DateTime<Utc>), Bucket::Day)
///     .key(&user_id)
///     .measure(Measure::sum(&column!(orders, "total": Decimal), "total"))
///     .named("orders_daily");
/// let now = Utc.with_ymd_and_hms(2025, 6, 1, 12, 30, 0).unwrap();
/// let top = summary
///     .window()
///     .since(now - chrono::Duration::days(30))
///     .until(now)
///     .top("total", 10);
/// let q = top.build()?;
/// assert!(q.sql().starts_with(r#"SELECT "pgp_window"."user_id" AS "user_id""#));
/// // Every value is bound, the limit last.
/// let n = q.values().0.len();
/// assert!(q.sql().ends_with(&format!(
///     r#"ORDER BY "total" DESC NULLS LAST, "user_id" ASC NULLS LAST LIMIT ${n}"#
/// )));
/// assert!(!q.sql().contains("2025") && !q.sql().contains("'UTC'"));
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Clone)]
#[must_use = "a window query does nothing until it is built or run"]
pub struct SummaryWindow {
    summary: Summary,
    by: Option<Vec<AnyColumn>>,
    eq: Vec<(AnyColumn, Expr, Expr)>,
    since: Option<Expr>,
    until: Option<Expr>,
    top: Option<(Ident, i64)>,
    problems: Problems,
}

impl fmt::Debug for SummaryWindow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SummaryWindow")
            .field("summary", &self.summary.table_name())
            .field("by", &self.by)
            .field("eq", &self.eq.iter().map(|(c, ..)| c).collect::<Vec<_>>())
            .field("since", &self.since.is_some())
            .field("until", &self.until.is_some())
            .field("top", &self.top)
            .finish()
    }
}

impl SummaryWindow {
    fn step(mut self, f: impl FnOnce(&mut Self) -> Result<()>) -> Self {
        let r = f(&mut self);
        self.problems.note(r);
        self
    }

    fn check_time<T: BucketTime>(&self) -> Result<()> {
        self.summary.time.check_type::<T>("window", "window bound")
    }

    /// Only rows with `time >= since`. A `T` other than the time column's
    /// type is refused when the query is checked.
    pub fn since<T: BucketTime>(self, since: T) -> SummaryWindow {
        self.step(|w| {
            w.check_time::<T>()?;
            w.since = Some(since.param());
            Ok(())
        })
    }

    /// Only rows with `time < until` (refused as [`since`](Self::since)).
    pub fn until<T: BucketTime>(self, until: T) -> SummaryWindow {
        self.step(|w| {
            w.check_time::<T>()?;
            w.until = Some(until.param());
            Ok(())
        })
    }

    /// Groups by `col` (a key of the summary); the first call replaces the
    /// default (every key). A column that is not a key is refused when the
    /// query is checked.
    pub fn by<T: SqlType>(self, col: &Column<T>) -> SummaryWindow {
        let col = col.erase();
        self.step(|w| {
            w.summary.check_key(&col, "by")?;
            let col = col.of(&w.summary.base);
            let by = w.by.get_or_insert_with(Vec::new);
            if !by.contains(&col) {
                by.push(col);
            }
            Ok(())
        })
    }

    /// Only rows with `col = value` (a key of the summary).
    pub fn where_eq<T: SqlType>(self, col: &Column<T>, value: impl Into<T>) -> SummaryWindow {
        let value = value.into();
        let col = col.erase();
        self.step(|w| {
            w.summary.check_key(&col, "where_eq")?;
            let col = col.of(&w.summary.base);
            let cond = col.expr().eq(value.clone().param());
            w.eq.push((col, value.param(), cond));
            Ok(())
        })
    }

    /// The `n` best groups by `measure` (a measure's name, or the count
    /// column's), largest first, ties by the group columns.
    pub fn top(self, measure: &str, n: i64) -> SummaryWindow {
        self.step(|w| {
            Error::at_least("n", n, 1)?;
            w.top = Some((Ident::new(measure)?, n));
            Ok(())
        })
    }

    fn by_columns(&self) -> &[AnyColumn] {
        self.by.as_deref().unwrap_or(&self.summary.keys)
    }

    /// Checks the query: the first problem a step recorded, the summary's
    /// own ([`Summary::check`]), a window with neither bound, or a
    /// [`top`](Self::top) measure the summary does not keep.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] or [`Error::InvalidIdentifier`].
    pub fn check(&self) -> Result<()> {
        self.kept().map(|_| ())
    }

    fn kept(&self) -> Result<Vec<Kept>> {
        self.problems.check()?;
        let kept = self.summary.kept()?;
        if self.since.is_none() && self.until.is_none() {
            return Err(Error::spec("window", "give a window: since, until or both"));
        }
        if let Some((m, _)) = &self.top {
            if m != self.summary.count_name() && !kept.iter().any(|k| &k.name == m) {
                return Err(Error::spec(
                    "top",
                    format!("the summary keeps no measure {m}"),
                ));
            }
        }
        Ok(kept)
    }

    fn finish(&self, mut q: SelectStatement) -> SelectStatement {
        if let Some((m, n)) = &self.top {
            q.order_by_expr_with_nulls(
                Expr::col(Alias::new(m.as_str())),
                Order::Desc,
                NullOrdering::Last,
            );
            for c in self.by_columns() {
                q.order_by_expr_with_nulls(
                    Expr::col(Alias::new(c.name().as_str())),
                    Order::Asc,
                    NullOrdering::Last,
                );
            }
            q.limit(u64::try_from(*n).unwrap_or(1));
        } else {
            for c in self.by_columns() {
                q.order_by_expr_with_nulls(
                    Expr::col(Alias::new(c.name().as_str())),
                    Order::Asc,
                    NullOrdering::Last,
                );
            }
        }
        q
    }

    /// The summary read.
    pub(crate) fn summary(&self) -> &Summary {
        &self.summary
    }

    /// The step that chose this window's own groups or ranking
    /// ([`by`](Self::by) or [`top`](Self::top)), if any.
    pub(crate) fn own_grouping(&self) -> Option<&'static str> {
        if self.by.is_some() {
            Some("by")
        } else if self.top.is_some() {
            Some("top")
        } else {
            None
        }
    }

    /// This window's bounds and `where_eq` filters with the caller's groups
    /// and aggregates, unordered (the caller checked them against the
    /// summary).
    pub(crate) fn statement_with(
        &self,
        by: Vec<(AnyColumn, String)>,
        measures: Vec<(Part<'_>, String)>,
    ) -> SelectStatement {
        let eq: Vec<(AnyColumn, Expr)> = self
            .eq
            .iter()
            .map(|(c, v, _)| (c.clone(), v.clone()))
            .collect();
        self.summary.window_statement(&WindowParts {
            by,
            eq: &eq,
            since: self.since.clone(),
            until: self.until.clone(),
            measures,
        })
    }

    /// The query over the summary.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn to_statement(&self) -> Result<SelectStatement> {
        let kept = self.kept()?;
        let by = self
            .by_columns()
            .iter()
            .map(|c| (c.clone(), c.name().to_string()))
            .collect();
        let mut measures = vec![(Part::Rows, self.summary.count_name().to_string())];
        measures.extend(kept.iter().map(|k| (Part::Kept(k), k.name.to_string())));
        Ok(self.finish(self.statement_with(by, measures)))
    }

    /// The same query on the base table alone (what the summary saves
    /// reading), with the same columns and order.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn base_statement(&self) -> Result<SelectStatement> {
        let kept = self.kept()?;
        let s = &self.summary;
        let mut q = Query::select();
        for c in self.by_columns() {
            q.expr_as(c.expr(), Alias::new(c.name().as_str()));
        }
        q.expr_as(Expr::cust("COUNT(*)"), Alias::new(s.count_name().as_str()));
        for k in &kept {
            let e = match k.kind {
                Kind::Count => Func::count(k.column.expr()),
                Kind::Sum(_) => Func::sum(k.column.expr()),
            };
            q.expr_as(e, Alias::new(k.name.as_str()));
        }
        q.from(s.base.table_ref());
        if let Some(since) = &self.since {
            q.and_where(s.time.expr().gte(since.clone()));
        }
        if let Some(until) = &self.until {
            q.and_where(s.time.expr().lt(until.clone()));
        }
        for (_, _, cond) in &self.eq {
            q.and_where(cond.clone());
        }
        for c in self.by_columns() {
            q.add_group_by([c.expr()]);
        }
        Ok(self.finish(q))
    }

    /// [`to_statement`](Self::to_statement) rendered with its values.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn build(&self) -> Result<BuiltQuery> {
        Ok(BuiltQuery::new(&self.to_statement()?))
    }

    /// [`base_statement`](Self::base_statement) rendered with its values.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn build_base(&self) -> Result<BuiltQuery> {
        Ok(BuiltQuery::new(&self.base_statement()?))
    }
}
