//! [`LatestStrategy::Auto`]: the strategy chosen per shape from the live
//! database.

use sea_query::{Expr, ExprTrait, Query};

use super::{LatestStatus, LatestStrategy, Predicate};
use crate::choice::{
    cache_key, cheapest, check_shape, estimate_all, fraction_bucket, Choice, Estimate, Shape,
    Statistic, StrategyCache, TableStats,
};
use crate::ddl::quote_table;
use crate::types::SqlType;
use crate::{BuiltQuery, Executor, Result, RowRead};

/// Average history rows per entity from which the skip scan is a
/// candidate: below it, reading every history row in one pass
/// (`DISTINCT ON`, the window) beats one index probe per entity, and the
/// planner's estimate for a recursive CTE (it assumes ten iterations) is
/// too far off to be weighed.
pub(crate) const LONG_HISTORY: f64 = 16.0;

/// The fraction of history rows whose status is `$3` (cast to text), from
/// `pg_stats` (`$1` quoted table, `$2` column): the most common values'
/// frequency, or an even share of the rest.
const STATUS_FREQUENCY: &str = "(SELECT CASE WHEN s.attname IS NULL THEN 'NaN'::float8 ELSE coalesce(
    (SELECT sum(m.f) FROM unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS m(v, f) WHERE m.v = $3),
    (1 - s.null_frac - coalesce((SELECT sum(f) FROM unnest(s.most_common_freqs) AS f), 0))
      / greatest(CASE WHEN s.n_distinct < 0 THEN -s.n_distinct * greatest(c.reltuples, 0) ELSE s.n_distinct END
                 - coalesce(cardinality(s.most_common_freqs), 0), 1))::float8 END
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = $2
  WHERE c.oid = to_regclass($1))";

/// `null_frac` of `$2` in `$1`.
const STATUS_NULLS: &str = "(SELECT coalesce(s.null_frac::float8, 'NaN'::float8)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = $2
  WHERE c.oid = to_regclass($1))";

impl<S: SqlType> LatestStatus<S> {
    /// Whether the `Denormalized` strategy can answer this spec.
    fn denormalizable(&self) -> bool {
        self.denormalized.is_some()
            && self.as_of.is_none()
            && self.missing.is_none()
            && self.history_filters.is_empty()
    }

    /// `Auto`'s choice without a database: the maintained column when it
    /// can answer, else `Lateral` for pages and `DistinctOn` otherwise.
    pub(super) fn static_choice(&self, shape: Shape) -> LatestStrategy {
        match shape {
            _ if self.denormalizable() => LatestStrategy::Denormalized,
            Shape::Page { .. } => LatestStrategy::Lateral,
            Shape::Count | Shape::All => LatestStrategy::DistinctOn,
        }
    }

    /// This spec in `strategy`, without `strategy()`'s checks (callers pass
    /// only strategies valid for the spec).
    pub(super) fn with_strategy(&self, strategy: LatestStrategy) -> LatestStatus<S> {
        let mut s = self.clone();
        s.strategy = strategy;
        s
    }

    /// The query of `shape` in `strategy`.
    fn shape_query(&self, strategy: LatestStrategy, shape: Shape) -> BuiltQuery {
        let s = self.with_strategy(strategy);
        match shape {
            Shape::Count => s.count_query(),
            Shape::Page { limit } => s.page_built(limit, None),
            Shape::All => s.build(),
        }
    }

    /// The estimated fraction of history rows the status predicate keeps
    /// (a proxy for its selectivity, for the cache bucket).
    async fn predicate_fraction<E: Executor>(&self, db: &E) -> Result<Option<f64>> {
        let (template, value, negate) = match &self.predicate {
            Predicate::Any => return Ok(Some(1.0)),
            Predicate::IsNull => (STATUS_NULLS, None, false),
            Predicate::Eq(v) => (STATUS_FREQUENCY, Some(v.clone().cast_as("text")), false),
            Predicate::Ne(v) => (STATUS_FREQUENCY, Some(v.clone().cast_as("text")), true),
            Predicate::In(v) => (STATUS_FREQUENCY, Some(any_text(v.clone())), false),
            Predicate::NotIn(v) => (STATUS_FREQUENCY, Some(any_text(v.clone())), true),
        };
        let mut args = vec![
            Expr::val(quote_table(&self.history).into_value()).cast_as("text"),
            Expr::val(self.status.name().as_str().to_owned().into_value()).cast_as("text"),
        ];
        args.extend(value);
        let q = BuiltQuery::new(
            &Query::select()
                .expr(Expr::cust_with_exprs(template, args))
                .to_owned(),
        );
        let f: Option<f64> = match db.query_opt(&q).await? {
            Some(row) => row.try_get(0usize.into())?,
            None => None,
        };
        Ok(f.filter(|f| !f.is_nan())
            .map(|f| if negate { 1.0 - f } else { f }))
    }

    /// What [`LatestStrategy::Auto`] chooses for `shape`, and why, using
    /// the [global cache](StrategyCache::global). On a cache miss it reads
    /// the history's statistics and explains each candidate (nothing
    /// runs); every call reads the status's frequency (one catalog query)
    /// to find the selectivity bucket.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`](crate::Error::InvalidSpec) for a page limit
    /// below 1; the database's error.
    pub async fn explain_choice<E: Executor>(
        &self,
        db: &E,
        shape: Shape,
    ) -> Result<Choice<LatestStrategy>> {
        self.explain_choice_with(StrategyCache::global(), db, shape)
            .await
    }

    /// [`explain_choice`](Self::explain_choice) with your own cache.
    ///
    /// # Errors
    /// As [`explain_choice`](Self::explain_choice).
    pub async fn explain_choice_with<E: Executor>(
        &self,
        cache: &StrategyCache,
        db: &E,
        shape: Shape,
    ) -> Result<Choice<LatestStrategy>> {
        check_shape(shape)?;
        if self.denormalizable() {
            let mut candidates = vec![Estimate::skipped(
                LatestStrategy::Denormalized,
                "chosen: reads no history",
            )];
            candidates.extend(
                LatestStrategy::FROM_HISTORY.map(|s| {
                    Estimate::skipped(s, "the maintained status column is always cheaper")
                }),
            );
            candidates[0].skipped = None;
            return Ok(Choice {
                strategy: LatestStrategy::Denormalized,
                shape,
                bucket: None,
                reason: "a trigger-maintained status column answers the filter without reading the history".into(),
                candidates,
                statistics: Vec::new(),
                cached: false,
                decided_in: Default::default(),
            });
        }
        let bucket = fraction_bucket(self.predicate_fraction(db).await?);
        let reference = self.shape_query(LatestStrategy::DistinctOn, shape);
        let key = cache_key("latest", reference.sql(), shape, bucket);
        cache
            .get_or_decide(key, async {
                let history = TableStats::load(db, &self.history, &[&self.fk]).await?;
                let entity = TableStats::load(db, &self.entity, &[&self.key]).await?;
                let fk = history.columns.first().cloned().unwrap_or_default();
                let per_entity = history.rows / fk.distinct;
                let mut queries = Vec::new();
                let mut candidates = Vec::new();
                for s in LatestStrategy::FROM_HISTORY {
                    if s == LatestStrategy::SkipScan {
                        if !fk.leading_index {
                            candidates.push(Estimate::skipped(
                                s,
                                "no index leads with the history's foreign key, so each jump would scan the table",
                            ));
                            continue;
                        }
                        if !(per_entity >= LONG_HISTORY) {
                            candidates.push(Estimate::skipped(
                                s,
                                format!(
                                    "histories are short (~{per_entity:.1} rows per entity, < {LONG_HISTORY}): one pass over the history is cheaper"
                                ),
                            ));
                            continue;
                        }
                    }
                    queries.push((s, self.shape_query(s, shape)));
                }
                let mut explained = estimate_all(db, queries).await?;
                explained.append(&mut candidates);
                let (strategy, cost) =
                    cheapest(&explained).unwrap_or((LatestStrategy::DistinctOn, f64::NAN));
                let reason = format!(
                    "lowest planner cost ({cost:.0}) for a {shape}; ~{per_entity:.1} history rows per entity, {} index on the foreign key",
                    if fk.leading_index { "an" } else { "no" },
                );
                Ok(Choice {
                    strategy,
                    shape,
                    bucket,
                    reason,
                    candidates: explained,
                    statistics: vec![
                        Statistic::new("entity_rows", entity.rows),
                        Statistic::new("history_rows", history.rows),
                        Statistic::new("entities_with_history", fk.distinct),
                        Statistic::new("history_per_entity", per_entity),
                        Statistic::new("fk_index", f64::from(u8::from(fk.leading_index))),
                    ],
                    cached: false,
                    decided_in: Default::default(),
                })
            })
            .await
    }

    /// This spec with `Auto` replaced by the strategy it chooses for
    /// `shape` (other strategies are kept), so you can build it yourself.
    ///
    /// # Errors
    /// As [`explain_choice`](Self::explain_choice).
    pub async fn resolve<E: Executor>(&self, db: &E, shape: Shape) -> Result<LatestStatus<S>> {
        if self.strategy != LatestStrategy::Auto {
            return Ok(self.clone());
        }
        let choice = self.explain_choice(db, shape).await?;
        Ok(self.with_strategy(choice.strategy))
    }
}

/// `array_expr::text[]` compared with `= ANY`: `m.v = ANY(…)`.
fn any_text(array: Expr) -> Expr {
    Expr::cust_with_exprs("ANY($1)", [array.cast_as("text[]")])
}
