//! A report over a maintained summary ([`Rollup::from_summary`]): the
//! inner stage of [`PreAggregate`](super::RollupStrategy::PreAggregate) is
//! the summary's window grouped by every dimension, each metric's partial
//! aggregates read from what the summary keeps.
//!
//! ```sql
//! SELECT "rollup_pre"."d0" AS "user_id", …, GROUPING(…) AS "rollup_grouping"
//! FROM (SELECT "pgp_window"."d0" AS "d0",
//!              CAST(COALESCE(SUM("pgp_window"."m0"), $1) AS int8) AS "m0", …
//!       FROM (SELECT "orders_daily"."user_id" AS "d0", "orders_daily"."row_count" AS "m0", …
//!             FROM "orders_daily" WHERE <whole buckets of the window> AND <where_eq>
//!             UNION ALL
//!             (SELECT "orders"."user_id" AS "d0", COUNT(*) AS "m0", …
//!              FROM "orders" WHERE <the partial buckets at the edges> AND <where_eq>
//!              GROUP BY "orders"."user_id")) AS "pgp_window"
//!       GROUP BY "pgp_window"."d0") AS "rollup_pre"
//! GROUP BY GROUPING SETS (…) HAVING … ORDER BY …
//! ```

use sea_query::SelectStatement;

use super::metric::AggKind;
use super::pre::{dim_name, partial_name};
use super::Rollup;
use crate::ops::summary::window::Part;
use crate::ops::summary::{Kept, Kind, Summary, SummaryWindow};
use crate::schema::AnyColumn;
use crate::{Error, Result};

/// The dimensions' columns and the metrics' partial aggregates, with the
/// inner column names of [`PreAggregate`](super::RollupStrategy::PreAggregate).
type Plan<'k> = (Vec<(AnyColumn, String)>, Vec<(Part<'k>, String)>);

/// The summary's `COUNT(col)`: a count of it, else the non-NULL count a sum
/// of it keeps.
fn count_of<'k>(kept: &'k [Kept], col: &AnyColumn) -> Option<Part<'k>> {
    let same = |k: &&Kept| k.column.name() == col.name();
    kept.iter()
        .filter(same)
        .find(|k| k.kind == Kind::Count)
        .map(Part::Kept)
        .or_else(|| {
            kept.iter()
                .filter(same)
                .find_map(|k| k.nonnull.as_ref().map(|n| Part::NonNull(k, n)))
        })
}

/// The summary's `SUM(col)` (of a column of the same type).
fn sum_of<'k>(kept: &'k [Kept], col: &AnyColumn) -> Option<Part<'k>> {
    kept.iter()
        .find(|k| {
            matches!(k.kind, Kind::Sum(_))
                && k.column.name() == col.name()
                && k.column.sql_type() == col.sql_type()
        })
        .map(Part::Kept)
}

fn keys(summary: &Summary) -> String {
    let keys: Vec<&str> = summary.keys().iter().map(|k| k.name().as_str()).collect();
    if keys.is_empty() {
        "none".to_owned()
    } else {
        keys.join(", ")
    }
}

impl Rollup {
    /// Whether the report reads a maintained summary.
    pub(super) fn reads_summary(&self) -> bool {
        matches!(self.base, super::Base::Summary(_))
    }

    /// Checks that the summary `w` reads can answer this report (the
    /// report's own checks passed).
    pub(super) fn check_summary(&self, w: &SummaryWindow) -> Result<()> {
        w.check()?;
        if let Some(step) = w.own_grouping() {
            return Err(Error::spec(
                "window",
                format!(
                    "the window has its own {step}(..): the report's dimensions choose the \
                     groups (and rank_by / limit_per_level the rows), so give the window only \
                     since, until and where_eq"
                ),
            ));
        }
        if !self.filters.is_empty() {
            return Err(Error::spec(
                "filter",
                format!(
                    "a report over the summary {} cannot apply a free condition: use the \
                     window's where_eq on its keys ({})",
                    w.summary().table_name(),
                    keys(w.summary())
                ),
            ));
        }
        let kept = w.summary().kept()?;
        self.summary_plan(w.summary(), &kept)?;
        if let Some(why) = self.pre_aggregate_blocker() {
            return Err(Error::spec(
                "having",
                format!("the report over the summary cannot be computed: {why}"),
            ));
        }
        Ok(())
    }

    /// How each dimension and metric is read from `summary`.
    fn summary_plan<'k>(&self, summary: &Summary, kept: &'k [Kept]) -> Result<Plan<'k>> {
        let name = summary.table_name();
        let mut by = Vec::with_capacity(self.dims.len());
        for (i, d) in self.dims.iter().enumerate() {
            let Some(col) = &d.column else {
                return Err(Error::spec(
                    "dimension",
                    format!(
                        "dimension {:?} is an expression; over the summary {name} a dimension \
                         is one of its keys ({})",
                        d.alias.as_str(),
                        keys(summary)
                    ),
                ));
            };
            summary.check_key(col, "dimension")?;
            by.push((col.of(summary.base()), dim_name(i)));
        }
        let mut measures = Vec::new();
        for (i, m) in self.metrics.iter().enumerate() {
            let alias = m.alias.as_str();
            if m.filter.is_some() {
                return Err(Error::spec(
                    "metric",
                    format!(
                        "metric {alias:?} has a FILTER, which the summary {name} cannot apply \
                         (it keeps whole groups): filter the window with where_eq on its keys"
                    ),
                ));
            }
            let col = || -> Result<&AnyColumn> {
                m.arg_column.as_ref().ok_or_else(|| {
                    Error::spec(
                        "metric",
                        format!(
                            "metric {alias:?} aggregates an expression; the summary {name} \
                             keeps counts and sums of columns"
                        ),
                    )
                })
            };
            let missing = |what: &str, col: &AnyColumn| {
                Error::spec(
                    "metric",
                    format!(
                        "metric {alias:?} needs {what} of {} ({}), which the summary {name} does \
                         not keep: add a Measure of it to the summary",
                        col.name(),
                        col.sql_type()
                    ),
                )
            };
            let count = |col: &AnyColumn| {
                count_of(kept, col).ok_or_else(|| missing("a count or a sum", col))
            };
            let sum = |col: &AnyColumn| sum_of(kept, col).ok_or_else(|| missing("the sum", col));
            let parts = match m.kind {
                AggKind::CountAll => vec![Part::Rows],
                AggKind::Count => vec![count(col()?)?],
                AggKind::Sum => vec![sum(col()?)?],
                AggKind::Avg => {
                    let c = col()?;
                    vec![sum(c)?, count(c)?]
                }
                AggKind::Min | AggKind::Max => {
                    return Err(Error::spec(
                        "metric",
                        format!(
                            "metric {alias:?} is MIN or MAX, which a summary does not keep (a \
                             delete can remove the extreme value): run the report on the base \
                             table"
                        ),
                    ))
                }
                AggKind::CountDistinct => {
                    return Err(Error::spec(
                        "metric",
                        format!(
                            "metric {alias:?} is COUNT(DISTINCT …), which cannot be added up \
                             from the summary's groups: run the report on the base table"
                        ),
                    ))
                }
            };
            for (j, p) in parts.into_iter().enumerate() {
                measures.push((p, partial_name(i, j > 0)));
            }
        }
        Ok((by, measures))
    }

    /// The inner stage over the summary: the window grouped by every
    /// dimension, with each metric's partial aggregates. `None` for a
    /// report [`check_summary`](Self::check_summary) refuses.
    pub(super) fn summary_partials(&self, w: &SummaryWindow) -> Option<SelectStatement> {
        let kept = w.summary().kept().ok()?;
        let (by, measures) = self.summary_plan(w.summary(), &kept).ok()?;
        Some(w.statement_with(by, measures))
    }

    /// Why `Auto` has nothing to decide over a summary.
    pub(super) fn summary_reason(w: &SummaryWindow) -> String {
        format!(
            "the report reads the maintained summary {} (whole buckets from it, the partial \
             buckets at the window's edges from {}), which has one form: the grouping sets \
             over the window grouped by every dimension",
            w.summary().table_name(),
            w.summary().base().display_name()
        )
    }
}

#[cfg(test)]
mod tests;
