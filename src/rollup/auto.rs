//! [`RollupStrategy::Auto`]: `GroupingSets` or `PreAggregate`, chosen from
//! the live database.
//!
//! Pre-aggregation pays off when the plain `GROUP BY` of every dimension
//! shrinks the input a lot: its parallel hash aggregate reads the rows once
//! and the grouping sets then run over few rows. When there are about as
//! many detail groups as rows, it is one more aggregation stage for
//! nothing (measured 1.35–1.6× slower at 2 M rows and 1.26 M groups).
//!
//! The planner's costs do not tell the two apart reliably: PostgreSQL
//! clamps its estimate of the groups of a multi-column `GROUP BY` to a
//! tenth of the rows, so it costs `PreAggregate` cheaper even when every
//! row is its own group. `Auto` therefore estimates the detail groups
//! itself, from the planner's per-dimension estimates (plain `EXPLAIN` of
//! `SELECT dim … GROUP BY dim`, which use `pg_stats` and the report's
//! filters) and its estimate of the input rows: `n` rows drawn from `p`
//! equally likely combinations give `p · (1 − e^(−n/p))` distinct groups.
//! The candidates' `EXPLAIN` costs are kept as evidence.

use sea_query::{Alias, Expr, Query};

use super::{Base, Rollup, RollupStrategy};
use crate::calibrate::{calibrate, Calibration, Target};
use crate::choice::{
    catalog_state, speculate, Catalog, Choice, Estimate, Shape, Statistic, StrategyCache,
};
use crate::ddl::quote_table;
use crate::exec::{
    run_blocking, run_blocking_mut, BlockingExecutor, Executor, RowRead, Transactional,
};
use crate::explain::{explain, Plan};
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Result};

/// `$1`'s OID (0 when it does not exist) and its catalog state.
const TABLE_STATE: &str = concat!(
    "SELECT coalesce(to_regclass($1)::oid::int8, 0), ",
    catalog_state!("ARRAY[$1]")
);

/// Whether the table `$1` was never analyzed: no row count yet
/// (`reltuples < 0`) or no column statistics (`pg_stats`). The planner then
/// estimates from its defaults. `false` for a table the catalog does not know.
const NEVER_ANALYZED: &str = "SELECT coalesce((
  SELECT c.reltuples < 0 OR NOT EXISTS (
           SELECT 1 FROM pg_stats s WHERE s.schemaname = n.nspname AND s.tablename = c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.oid = to_regclass($1)), false)";

/// `Auto` picks [`PreAggregate`](RollupStrategy::PreAggregate) when the
/// estimated detail groups are at most this fraction of the input rows.
/// Measured at 2 M rows (PostgreSQL 15, 2 cores): `PreAggregate` took
/// 0.3× of `GroupingSets`' time at 0.5 % groups per row, 0.5× at 5 %,
/// 0.75× at 25 %, about 1.1× at 43 % and 1.6× at 60 %.
pub const PRE_AGGREGATE_MAX_GROUPS_PER_ROW: f64 = 0.25;

/// Estimated distinct combinations when `rows` rows are drawn from
/// `combinations` equally likely ones: `p · (1 − e^(−n/p))`.
pub(super) fn expected_groups(combinations: f64, rows: f64) -> f64 {
    if !(combinations > 0.0 && rows > 0.0) {
        return 0.0;
    }
    if combinations.is_infinite() {
        return rows;
    }
    (combinations * -(-rows / combinations).exp_m1()).min(rows)
}

/// What the EXPLAINs said, in the order of [`Rollup::probes`].
struct Evidence {
    candidates: Vec<Estimate<RollupStrategy>>,
    input_rows: f64,
    distinct: Vec<f64>,
}

impl Rollup {
    /// This report in `strategy` (callers pass only strategies valid for
    /// the report).
    pub(super) fn with_strategy(&self, strategy: RollupStrategy) -> Rollup {
        let mut r = self.clone();
        r.strategy = strategy;
        r
    }

    /// Why `Auto` uses `GroupingSets` whatever the data, or `None`.
    pub(super) fn fixed_reason(&self) -> Option<String> {
        if let Base::Summary(w) = &self.base {
            return Some(Rollup::summary_reason(w));
        }
        if let Some(why) = self.pre_aggregate_blocker() {
            return Some(why);
        }
        if let Some(m) = self.inexact_metric() {
            return Some(format!(
                "metric {:?} adds floating-point values: re-added from partial sums in another \
                 order it could differ in the last bits",
                m.as_str()
            ));
        }
        if self.dims.is_empty() {
            return Some("no dimensions: one ungrouped aggregate, nothing to pre-aggregate".into());
        }
        if self.sets().len() == 1 {
            return Some(
                "one grouping set: GroupingSets is a plain GROUP BY, which PostgreSQL already \
                 runs in parallel"
                    .into(),
            );
        }
        None
    }

    /// `Auto`'s choice without a database: `PreAggregate` whenever
    /// possible (a report usually groups many rows into few groups), and
    /// always over a summary.
    pub(super) fn static_choice(&self) -> RollupStrategy {
        if self.reads_summary() {
            RollupStrategy::PreAggregate
        } else if self.fixed_reason().is_some() {
            RollupStrategy::GroupingSets
        } else {
            RollupStrategy::PreAggregate
        }
    }

    /// The decision when it does not depend on the data: `GroupingSets`,
    /// or `PreAggregate` over a summary.
    pub(super) fn fixed_choice(&self, why: String) -> Choice<RollupStrategy> {
        let (chosen, other) = if self.reads_summary() {
            (RollupStrategy::PreAggregate, RollupStrategy::GroupingSets)
        } else {
            (RollupStrategy::GroupingSets, RollupStrategy::PreAggregate)
        };
        Choice {
            strategy: chosen,
            shape: Shape::All,
            bucket: None,
            reason: why.clone(),
            candidates: vec![Estimate::chosen(chosen), Estimate::rejected(other, why)],
            statistics: Vec::new(),
            decided_by: crate::choice::DecidedBy::Rule,
            cached: false,
            decided_in: Default::default(),
            looked_up_in: Default::default(),
            age: Default::default(),
        }
    }

    /// The statements to `EXPLAIN`: each candidate, the filtered input,
    /// and one `GROUP BY` per dimension.
    fn probes(&self) -> Vec<BuiltQuery> {
        let mut out: Vec<BuiltQuery> = RollupStrategy::ALL
            .iter()
            .map(|&s| self.with_strategy(s).built())
            .collect();
        let base = || {
            let mut q = Query::select();
            self.select_base(&mut q);
            for f in &self.filters {
                q.and_where(f.clone());
            }
            q
        };
        let mut input = base();
        input.expr(Expr::cust("1"));
        out.push(BuiltQuery::new(&input));
        for d in &self.dims {
            let mut q = base();
            q.expr_as(d.expr.clone(), Alias::new("d"))
                .add_group_by([d.expr.clone()]);
            out.push(BuiltQuery::new(&q));
        }
        out
    }

    fn evidence(&self, plans: &[Plan]) -> Result<Evidence> {
        let n = RollupStrategy::ALL.len();
        if plans.len() != n + 1 + self.dims.len() {
            return Err(Error::RowCount {
                expected: "one plan per probe",
                got: plans.len(),
            });
        }
        Ok(Evidence {
            candidates: RollupStrategy::ALL
                .iter()
                .zip(plans)
                .map(|(&s, p)| Estimate::from_plan(s, p))
                .collect(),
            input_rows: plans[n].root.plan_rows,
            distinct: plans[n + 1..]
                .iter()
                .map(|p| p.root.plan_rows.max(1.0))
                .collect(),
        })
    }

    /// The query for whether the base table was never analyzed; `None`
    /// over a caller's query, whose tables are not known.
    fn analyzed_query(&self) -> Option<BuiltQuery> {
        match &self.base {
            Base::Table(t) => Some(BuiltQuery::fixed_with(
                NEVER_ANALYZED,
                [quote_table(t).into_value()],
            )),
            // Never asked: decided without SQL.
            Base::Query { .. } | Base::Summary(_) => None,
        }
    }

    /// The statistics rule over the planner's estimates. `never_analyzed`:
    /// the base table has no statistics (`None`: not known, over a caller's
    /// query), so the estimates are the planner's defaults.
    fn decide(&self, e: Evidence, never_analyzed: Option<bool>) -> Choice<RollupStrategy> {
        let combinations: f64 = e.distinct.iter().product();
        let groups = expected_groups(combinations, e.input_rows);
        let per_row = groups / e.input_rows.max(1.0);
        let cost = |s: RollupStrategy| {
            e.candidates
                .iter()
                .find(|c| c.strategy == s)
                .and_then(|c| c.cost)
                .unwrap_or(f64::NAN)
        };
        let (gs, pre) = (
            cost(RollupStrategy::GroupingSets),
            cost(RollupStrategy::PreAggregate),
        );
        let (strategy, why) = if per_row <= PRE_AGGREGATE_MAX_GROUPS_PER_ROW {
            (
                RollupStrategy::PreAggregate,
                "a parallel GROUP BY of every dimension shrinks the input before the grouping sets",
            )
        } else {
            (
                RollupStrategy::GroupingSets,
                "pre-aggregating would barely shrink the input, so its extra stage costs more \
                 than its parallel scan saves",
            )
        };
        let note = if never_analyzed == Some(true) {
            "no statistics (run ANALYZE): the estimates below are the planner's defaults; "
        } else {
            ""
        };
        let reason = format!(
            "{note}~{groups:.0} detail groups from ~{:.0} input rows ({:.2}% per row, {} {:.0}%): {why} \
             (planner costs, not used to decide: GroupingSets {gs:.0}, PreAggregate {pre:.0})",
            e.input_rows,
            per_row * 100.0,
            if strategy == RollupStrategy::PreAggregate {
                "≤"
            } else {
                ">"
            },
            PRE_AGGREGATE_MAX_GROUPS_PER_ROW * 100.0,
        );
        let mut statistics = vec![
            Statistic::count("input_rows", e.input_rows),
            Statistic::count("detail_groups", groups),
            Statistic::fraction("groups_per_row", per_row),
            Statistic::count("grouping_sets", self.sets().len() as f64),
        ];
        statistics.extend(
            e.distinct
                .iter()
                .map(|&d| Statistic::count("dimension_distinct", d)),
        );
        if let Some(never) = never_analyzed {
            statistics.push(Statistic::flag("table_analyzed", !never));
        }
        Choice {
            strategy,
            shape: Shape::All,
            bucket: None,
            reason,
            candidates: e.candidates,
            statistics,
            decided_by: crate::choice::DecidedBy::Rule,
            cached: false,
            decided_in: Default::default(),
            looked_up_in: Default::default(),
            age: Default::default(),
        }
    }

    /// The reference query the decision is cached under: the spec's
    /// `GroupingSets` form.
    fn reference(&self) -> BuiltQuery {
        self.with_strategy(RollupStrategy::GroupingSets).built()
    }

    /// The catalog query for the base table's OID (part of the cache key:
    /// the same SQL names other tables under another `search_path`) and
    /// catalog state; `None` for a caller's query as the base, whose
    /// decisions are keyed by its SQL alone.
    fn state_query(&self) -> Option<BuiltQuery> {
        match &self.base {
            Base::Table(t) => Some(BuiltQuery::fixed_with(
                TABLE_STATE,
                [quote_table(t).into_value()],
            )),
            // Never asked over a summary: decided without SQL.
            Base::Query { .. } | Base::Summary(_) => None,
        }
    }

    /// The base table's OID and catalog state, read with
    /// [`state_query`](Self::state_query) (nothing is sent for a caller's
    /// query as the base: OID 0, an empty state).
    async fn state<E: Executor>(&self, db: &E) -> Result<(i64, Catalog)> {
        Ok(match self.state_query() {
            Some(q) => {
                let row = db.one_row(&q).await?;
                let md5: Option<String> = row.try_get(1usize.into())?;
                (
                    row.try_get(0usize.into())?,
                    Catalog::new(md5.as_deref(), ""),
                )
            }
            None => (0, Catalog::new(None, "")),
        })
    }

    /// What [`RollupStrategy::Auto`] chooses for this report, and why,
    /// using the [global cache](StrategyCache::global). Without a
    /// decomposable report (`COUNT(DISTINCT …)`, …) it is `GroupingSets`
    /// and no SQL runs; over a summary ([`Rollup::from_summary`]) it is
    /// `PreAggregate`, the one form such a report has, and no SQL runs
    /// either. Otherwise it reads the base table's OID and catalog
    /// state (indexes, triggers, columns; one small catalog query), so an
    /// index created or dropped is seen at once, and, on a cache miss,
    /// `EXPLAIN`s
    /// (nothing runs) both candidates, the filtered input and each
    /// dimension's `GROUP BY`, and applies the rule of
    /// [`PRE_AGGREGATE_MAX_GROUPS_PER_ROW`]. Decisions are kept per spec
    /// and table: the report's bound values (filters, `HAVING`) do not
    /// change them. Over a caller's query ([`Rollup::from_query`]) the tables are
    /// not known: a query seen before reuses its decision without any SQL,
    /// and catalog changes wait for the time to live.
    ///
    /// # Errors
    /// As [`check`](Self::check), before anything is sent; the database's
    /// error (e.g. a missing table).
    pub async fn explain_choice<E: Executor>(&self, db: &E) -> Result<Choice<RollupStrategy>> {
        self.explain_choice_with(StrategyCache::global(), db).await
    }

    /// [`explain_choice`](Self::explain_choice) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`explain_choice`](Self::explain_choice).
    pub fn explain_choice_blocking<C>(&self, db: &mut C) -> Result<Choice<RollupStrategy>>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.explain_choice(db).await)
    }

    /// [`explain_choice`](Self::explain_choice) with your own cache.
    ///
    /// # Errors
    /// As [`explain_choice`](Self::explain_choice).
    pub async fn explain_choice_with<E: Executor>(
        &self,
        cache: &StrategyCache,
        db: &E,
    ) -> Result<Choice<RollupStrategy>> {
        self.check()?;
        if let Some(why) = self.fixed_reason() {
            return Ok(self.fixed_choice(why));
        }
        let recall = cache.recall("rollup", Shape::All, &self.reference());
        let (oid, catalog) = self.state(db).await?;
        if let Some(hit) = cache.remembered(&recall, &catalog) {
            return Ok(hit);
        }
        let started = recall.started();
        let key = cache.key_for(recall, oid, None, catalog);
        cache
            .get_or_decide(key, started, async {
                let mut plans = Vec::new();
                for q in self.probes() {
                    plans.push(explain(db, &q).await?);
                }
                let never_analyzed = match self.analyzed_query() {
                    Some(q) => Some(db.one_row(&q).await?.try_get(0usize.into())?),
                    None => None,
                };
                Ok(self.decide(self.evidence(&plans)?, never_analyzed))
            })
            .await
    }

    /// [`explain_choice_with`](Self::explain_choice_with) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`explain_choice_with`](Self::explain_choice_with).
    pub fn explain_choice_with_blocking<C>(
        &self,
        cache: &StrategyCache,
        db: &mut C,
    ) -> Result<Choice<RollupStrategy>>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.explain_choice_with(cache, db).await)
    }

    /// Measures every strategy that can compute this report on this
    /// database and keeps the fastest as `Auto`'s decision for it (see
    /// [`Calibration`](crate::Calibration)). Runs the candidates for real,
    /// each bounded by a `statement_timeout` in its own transaction: call
    /// it from a maintenance task, not in a request path. A report over a
    /// summary ([`Rollup::from_summary`]) has one form: its decision is
    /// returned and nothing runs.
    ///
    /// # Errors
    /// As [`explain_choice`](Self::explain_choice); the calibration's
    /// refusal, or [`Error::InvalidSpec`] (field `"calibration"`) when no
    /// candidate finishes within its bound; [`Error::StrategiesDisagree`];
    /// the database's error.
    pub async fn calibrate<E: Transactional>(
        &self,
        db: &mut E,
        calibration: &Calibration,
    ) -> Result<Choice<RollupStrategy>> {
        self.calibrate_with(StrategyCache::global(), db, calibration)
            .await
    }

    /// [`calibrate`](Self::calibrate) with your own cache.
    ///
    /// # Errors
    /// As [`calibrate`](Self::calibrate).
    pub async fn calibrate_with<E: Transactional>(
        &self,
        cache: &StrategyCache,
        db: &mut E,
        calibration: &Calibration,
    ) -> Result<Choice<RollupStrategy>> {
        calibration.check()?;
        let rule = self.explain_choice_with(cache, &*db).await?;
        if self.reads_summary() {
            // One form: nothing to measure.
            return Ok(rule);
        }
        let candidates = RollupStrategy::ALL
            .into_iter()
            .filter(|&s| {
                s != RollupStrategy::PreAggregate || self.pre_aggregate_blocker().is_none()
            })
            .map(|s| (s, self.with_strategy(s).built()))
            .collect();
        let reference = self.reference();
        let target = Target {
            cache,
            family: "rollup",
            shape: Shape::All,
            reference: &reference,
        };
        calibrate(calibration, target, db, rule, candidates).await
    }

    /// [`calibrate`](Self::calibrate) on a blocking client
    /// (`postgres::Client`, `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`calibrate`](Self::calibrate).
    pub fn calibrate_blocking<C>(
        &self,
        db: &mut C,
        calibration: &Calibration,
    ) -> Result<Choice<RollupStrategy>>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.calibrate(db, calibration).await)
    }

    /// `Auto` for a report decided before, in one round trip: `run` on the
    /// remembered strategy, pipelined with the catalog check that confirms
    /// it (see [`speculate`](crate::choice::speculate)). `None` for a
    /// strategy other than `Auto`, a report whose strategy is fixed by its
    /// metrics (decided without SQL), a report not decided before, or a
    /// changed catalog: resolve then.
    pub(super) async fn run_remembered<E, T, R>(
        &self,
        db: &E,
        run: impl FnOnce(Rollup) -> R,
    ) -> Option<Result<T>>
    where
        E: Executor,
        R: std::future::Future<Output = Result<T>>,
    {
        if self.strategy != RollupStrategy::Auto {
            return None;
        }
        if let Err(e) = self.check() {
            return Some(Err(e));
        }
        if self.fixed_reason().is_some() {
            return None;
        }
        let cache = StrategyCache::global();
        let recall = cache.recall("rollup", Shape::All, &self.reference());
        let checked = async { Ok(self.state(db).await?.1) };
        speculate(
            cache,
            &recall,
            |_| true,
            checked,
            |s| run(self.with_strategy(s)),
        )
        .await
    }

    /// This report with `Auto` replaced by the strategy it chooses (other
    /// strategies are kept), so you can [`build`](Self::build) it yourself.
    ///
    /// # Errors
    /// As [`explain_choice`](Self::explain_choice).
    pub async fn resolve<E: Executor>(&self, db: &E) -> Result<Rollup> {
        self.check()?;
        if self.strategy != RollupStrategy::Auto {
            return Ok(self.clone());
        }
        let choice = self.explain_choice(db).await?;
        Ok(self.with_strategy(choice.strategy))
    }

    /// [`resolve`](Self::resolve) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`resolve`](Self::resolve).
    pub fn resolve_blocking<C>(&self, db: &mut C) -> Result<Rollup>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.resolve(db).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expected_groups_saturate() {
        assert_eq!(expected_groups(1000.0, 2e6), 1000.0);
        let g = expected_groups(2e6, 2e6);
        assert!((g / 2e6 - (1.0 - (-1.0f64).exp())).abs() < 1e-9, "{g}");
        assert_eq!(expected_groups(f64::INFINITY, 10.0), 10.0);
        assert_eq!(expected_groups(0.0, 10.0), 0.0);
        assert!(expected_groups(1e300, 5.0) <= 5.0);
    }
}
