//! [`RollupStrategy::PreAggregate`](super::RollupStrategy::PreAggregate):
//! a plain `GROUP BY` of every dimension first (PostgreSQL runs it as a
//! parallel hash aggregate), producing partial aggregates per metric, then
//! the grouping sets over those few rows.
//!
//! ```sql
//! SELECT "rollup_pre"."d0" AS "merchant", …,
//!        CAST(COALESCE(SUM("rollup_pre"."m0"), 0) AS int8) AS "total",
//!        CAST(SUM("rollup_pre"."m1") AS numeric)
//!          / CAST(NULLIF(SUM("rollup_pre"."m1_n"), 0) AS numeric) AS "avg",
//!        GROUPING("rollup_pre"."d0", …) AS "rollup_grouping"
//! FROM (SELECT "sale"."merchant" AS "d0", …, COUNT("sale"."id") AS "m0",
//!              SUM("sale"."amount") AS "m1", COUNT("sale"."amount") AS "m1_n"
//!       FROM "sale" WHERE … GROUP BY "sale"."merchant", …) AS "rollup_pre"
//! GROUP BY GROUPING SETS ((…), ()) HAVING …
//! ```
//!
//! Every result equals the one-query form's, type included: counts are
//! summed back to `int8`; sums are re-summed and cast back to the type
//! PostgreSQL gives the original `SUM` (`SUM(int4)` is `int8`, `SUM(int8)`
//! `numeric`); averages are `numeric_div(sum, count)`, which is how
//! PostgreSQL's own `avg(int2/int4/int8/numeric)` final functions compute
//! them (`int8_avg`, `numeric_poly_avg`, `numeric_avg`), so the digits and
//! the scale are the same. `min`/`max` of partial minima/maxima are the
//! minima/maxima. `COUNT(DISTINCT …)` has no such decomposition.

use sea_query::{Alias, BinOper, Expr, ExprTrait, Func, FunctionCall, Query, SelectStatement};

use super::metric::AggKind;
use super::{grouping, Base, MetricSpec, Rollup, GROUPING_ALIAS};
use crate::schema::Ident;

/// The derived table of partial aggregates.
pub(super) const PRE: &str = "rollup_pre";

/// The inner column name of dimension `i`.
pub(super) fn dim_name(i: usize) -> String {
    format!("d{i}")
}

/// The inner column name of metric `i`'s partial (`m3`), or its count
/// (`m3_n`) for an average.
pub(super) fn partial_name(i: usize, count: bool) -> String {
    if count {
        format!("m{i}_n")
    } else {
        format!("m{i}")
    }
}

/// The inner column of dimension `i`.
fn dim_column(i: usize) -> Alias {
    Alias::new(dim_name(i))
}

/// The inner column of metric `i`'s partial, or its count.
fn partial_column(i: usize, count: bool) -> Alias {
    Alias::new(partial_name(i, count))
}

fn pre_col(c: Alias) -> Expr {
    Expr::col((Alias::new(PRE), c))
}

/// `AGG(arg) [FILTER (WHERE …)]`.
fn aggregate(call: FunctionCall, filter: &Option<Expr>) -> Expr {
    match filter {
        Some(c) => call.filter(c.clone()).into(),
        None => call.into(),
    }
}

/// Functions that are not aggregates, whose arguments may be metrics.
fn is_scalar(call: &FunctionCall) -> bool {
    matches!(
        call.get_func(),
        Func::Abs
            | Func::IfNull
            | Func::Greatest
            | Func::Least
            | Func::CharLength
            | Func::Coalesce
            | Func::Lower
            | Func::Upper
            | Func::Round
    )
}

/// `e` with every metric and dimension expression replaced by its
/// expression over the partial aggregates; `None` when `e` holds anything
/// else that depends on the base rows (another column, another aggregate,
/// custom SQL, a subquery), which the partials cannot answer.
pub(super) fn rewrite(e: &Expr, subst: &[(Expr, Expr)]) -> Option<Expr> {
    if let Some((_, to)) = subst.iter().find(|(from, _)| from == e) {
        return Some(to.clone());
    }
    Some(match e {
        Expr::Value(_)
        | Expr::Values(_)
        | Expr::Constant(_)
        | Expr::TypeName(_)
        | Expr::Keyword(
            sea_query::Keyword::Null
            | sea_query::Keyword::CurrentDate
            | sea_query::Keyword::CurrentTime
            | sea_query::Keyword::CurrentTimestamp,
        ) => e.clone(),
        Expr::Tuple(items) => Expr::Tuple(
            items
                .iter()
                .map(|x| rewrite(x, subst))
                .collect::<Option<_>>()?,
        ),
        Expr::Unary(op, x) => Expr::Unary(*op, Box::new(rewrite(x, subst)?)),
        Expr::Binary(a, op, b) => Expr::Binary(
            Box::new(rewrite(a, subst)?),
            *op,
            Box::new(rewrite(b, subst)?),
        ),
        Expr::FunctionCall(call) => match (call.get_func(), call.get_args()) {
            // CAST(x AS type): the type name is SQL text; keep it.
            (Func::Cast, [Expr::Binary(x, BinOper::As, ty)]) => {
                Expr::FunctionCall(call.clone().args([Expr::Binary(
                    Box::new(rewrite(x, subst)?),
                    BinOper::As,
                    ty.clone(),
                )]))
            }
            _ if is_scalar(call) => Expr::FunctionCall(
                call.clone().args(
                    call.get_args()
                        .iter()
                        .map(|x| rewrite(x, subst))
                        .collect::<Option<Vec<_>>>()?,
                ),
            ),
            _ => return None,
        },
        _ => return None,
    })
}

impl MetricSpec {
    /// The partial aggregates of this metric, as (inner column, expression).
    /// `None` for an aggregate that has none (`COUNT(DISTINCT …)`).
    fn partials(&self, i: usize) -> Option<Vec<(Alias, Expr)>> {
        let arg = || self.arg.clone().unwrap_or_else(|| Expr::cust("*"));
        let one = |call: FunctionCall| {
            Some(vec![(
                partial_column(i, false),
                aggregate(call, &self.filter),
            )])
        };
        match self.kind {
            AggKind::CountAll => one(Func::count(Expr::cust("*"))),
            AggKind::Count => one(Func::count(arg())),
            AggKind::Sum => one(Func::sum(arg())),
            AggKind::Min => one(Func::min(arg())),
            AggKind::Max => one(Func::max(arg())),
            AggKind::Avg => {
                // avg(float4) adds in float8 (float4_accum), sum(float4) in
                // float4: sum the float8 values.
                let x = if self.sql_type == "float8" {
                    arg().cast_as("float8")
                } else {
                    arg()
                };
                Some(vec![
                    (
                        partial_column(i, false),
                        aggregate(Func::sum(x), &self.filter),
                    ),
                    (
                        partial_column(i, true),
                        aggregate(Func::count(arg()), &self.filter),
                    ),
                ])
            }
            AggKind::CountDistinct => None,
        }
    }

    /// The metric over the partial aggregates, typed as the original.
    fn combined(&self, i: usize) -> Option<Expr> {
        let p = || pre_col(partial_column(i, false));
        let ty = self.sql_type;
        Some(match self.kind {
            AggKind::CountAll | AggKind::Count => {
                Expr::from(Func::coalesce([Func::sum(p()).into(), Expr::cust("0")])).cast_as("int8")
            }
            AggKind::Sum => Expr::from(Func::sum(p())).cast_as(ty),
            AggKind::Min => Func::min(p()).into(),
            AggKind::Max => Func::max(p()).into(),
            AggKind::Avg => {
                let n = Func::cust("NULLIF").args([
                    Func::sum(pre_col(partial_column(i, true))).into(),
                    Expr::cust("0"),
                ]);
                Expr::from(Func::sum(p()))
                    .cast_as(ty)
                    .div(Expr::from(n).cast_as(ty))
            }
            AggKind::CountDistinct => return None,
        })
    }
}

impl Rollup {
    /// Metric and dimension expressions, each with its expression over the
    /// partial aggregates.
    fn substitutions(&self) -> Option<Vec<(Expr, Expr)>> {
        let mut out = Vec::new();
        for (i, m) in self.metrics.iter().enumerate() {
            out.push((m.expr.clone(), m.combined(i)?));
        }
        for (i, d) in self.dims.iter().enumerate() {
            out.push((d.expr.clone(), pre_col(dim_column(i))));
        }
        Some(out)
    }

    /// Why [`PreAggregate`](super::RollupStrategy::PreAggregate) cannot
    /// compute this spec, or `None` when it can.
    pub(super) fn pre_aggregate_blocker(&self) -> Option<String> {
        if let Some(m) = self
            .metrics
            .iter()
            .find(|m| m.kind == AggKind::CountDistinct)
        {
            return Some(format!(
                "metric {:?} is COUNT(DISTINCT …), which cannot be added up from the counts of \
                 finer groups (a user in two groups would be counted twice)",
                m.alias.as_str()
            ));
        }
        let subst = self.substitutions()?;
        for (i, h) in self.having.iter().enumerate() {
            if rewrite(h, &subst).is_none() {
                return Some(format!(
                    "HAVING condition {} is not made of the report's metrics, dimensions and \
                     values (it has custom SQL, a subquery, another column or an aggregate that \
                     is not a metric), so it cannot be evaluated on partial aggregates",
                    i + 1
                ));
            }
        }
        None
    }

    /// A `SUM` or `AVG` over floating-point values: re-added from partial
    /// sums in another order, it can differ from the one-query form in the
    /// last bits.
    pub(super) fn inexact_metric(&self) -> Option<&Ident> {
        self.metrics
            .iter()
            .find(|m| {
                matches!(m.kind, AggKind::Sum | AggKind::Avg)
                    && matches!(m.sql_type, "float4" | "float8")
            })
            .map(|m| &m.alias)
    }

    /// The plain `GROUP BY` of every dimension with each metric's partial
    /// aggregates: the inner query of `PreAggregate`.
    pub(super) fn partial_statement(&self) -> Option<SelectStatement> {
        if let Base::Summary(w) = &self.base {
            return self.summary_partials(w);
        }
        let mut q = Query::select();
        self.select_base(&mut q);
        for (i, d) in self.dims.iter().enumerate() {
            q.expr_as(d.expr.clone(), dim_column(i));
        }
        for (i, m) in self.metrics.iter().enumerate() {
            for (alias, e) in m.partials(i)? {
                q.expr_as(e, alias);
            }
        }
        for f in &self.filters {
            q.and_where(f.clone());
        }
        q.add_group_by(self.dims.iter().map(|d| d.expr.clone()));
        Some(q)
    }

    /// The aggregate query of `PreAggregate`, without ordering or limits:
    /// the same columns and rows as [`grouped`](Self::grouped). `None` when
    /// the spec has a [blocker](Self::pre_aggregate_blocker).
    pub(super) fn pre_grouped(&self) -> Option<SelectStatement> {
        if self.pre_aggregate_blocker().is_some() {
            return None;
        }
        let subst = self.substitutions()?;
        let inner = self.partial_statement()?;
        let mut q = Query::select();
        q.from_subquery(inner, Alias::new(PRE));
        let dims: Vec<Expr> = (0..self.dims.len())
            .map(|i| pre_col(dim_column(i)))
            .collect();
        for (d, e) in self.dims.iter().zip(&dims) {
            q.expr_as(e.clone(), d.alias.clone());
        }
        for (i, m) in self.metrics.iter().enumerate() {
            q.expr_as(m.combined(i)?, m.alias.clone());
        }
        if dims.is_empty() {
            q.expr_as(Expr::cust("0"), Alias::new(GROUPING_ALIAS));
        } else {
            q.expr_as(grouping::grouping(&dims), Alias::new(GROUPING_ALIAS));
            q.add_group_by(self.group_by_over(&dims));
        }
        for h in &self.having {
            q.and_having(rewrite(h, &subst)?);
        }
        Some(q)
    }

    /// `FROM` the base table or the caller's query (for a report over a
    /// summary, its base table: only the one-query form and `Auto`'s
    /// probes read the base so, and such a report uses neither).
    pub(super) fn select_base(&self, q: &mut SelectStatement) {
        match &self.base {
            Base::Table(t) => q.from(t.table_ref()),
            Base::Summary(w) => q.from(w.summary().base().table_ref()),
            Base::Query { statement, alias } => {
                q.from_subquery((**statement).clone(), alias.name().clone())
            }
        };
    }
}
