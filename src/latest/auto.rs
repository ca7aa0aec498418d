//! [`LatestStrategy::Auto`]: the strategy chosen per shape from the live
//! database.

use sea_query::{Expr, ExprTrait, Query, Value};

use super::{LatestStatus, LatestStrategy, Predicate};
use crate::calibrate::{calibrate, Calibration, Target};
use crate::choice::{
    catalog_expr, check_shape, fraction_bucket, speculate, Catalog, Choice, Estimate, Shape,
    Statistic, StrategyCache, TableStats,
};
use crate::ddl::quote_table;
use crate::exec::{run_blocking, run_blocking_mut, BlockingExecutor, Transactional};
use crate::types::SqlType;
use crate::{BuiltQuery, Executor, Result, RowRead};

/// Average history rows per entity from which histories count as long: the
/// skip scan becomes a candidate, and without an index the anti-join
/// (`NotExists`) beats sorting the history.
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

/// Whether the denormalized column is maintained: `(column exists,
/// triggers installed)`. The column: `$1` the quoted entity table, `$2` the
/// column. The triggers: `$1` the quoted history table, `$2` the trigger
/// function's signature as [`Denormalize`](super::Denormalize) writes it
/// (schema-qualified, or found on `search_path`). They count when enabled
/// (`tgenabled <> 'D'`), on the history table, executing the function, and
/// together cover INSERT (`tgtype` bit 4), DELETE (8), UPDATE (16) and
/// TRUNCATE (32).
const DENORMALIZED_COLUMN: &str = "EXISTS (SELECT 1 FROM pg_attribute a
  WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND a.attnum > 0 AND NOT a.attisdropped)";
const DENORMALIZED_TRIGGERS: &str =
    "coalesce((SELECT bit_or(g.tgtype::int4) & 60 = 60 FROM pg_trigger g
  WHERE g.tgrelid = to_regclass($1) AND NOT g.tgisinternal AND g.tgenabled <> 'D'
    AND g.tgfoid = to_regprocedure($2)), false)";

/// What the catalog says about a spec's tables (one round trip with the
/// bucket's statistics, or alone for a query seen before).
struct LatestCatalog {
    state: Catalog,
    /// `None` when the spec cannot use a denormalized column; else
    /// whether the column exists and whether its triggers are installed
    /// and enabled.
    denormalized: Option<(bool, bool)>,
}

impl LatestCatalog {
    fn maintained(&self) -> bool {
        self.denormalized == Some((true, true))
    }
}

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
            Shape::Count => s.count_built(),
            Shape::Page { limit } => s.page_built(limit, None),
            Shape::All => s.built(),
        }
    }

    /// The catalog state a decision depends on (the history's and
    /// entity's indexes, triggers and columns; whether the denormalized
    /// column is maintained), as expressions: the state digest, then, when
    /// the spec could use a denormalized column, whether the column exists
    /// and whether its triggers are installed.
    fn catalog_exprs(&self) -> Vec<Expr> {
        let mut out = vec![catalog_expr(&[&self.history, &self.entity])];
        if let Some((column, d)) = self.maintained_column() {
            let text = |v: Value| Expr::val(v).cast_as("text");
            out.push(Expr::cust_with_exprs(
                DENORMALIZED_COLUMN,
                [
                    text(quote_table(&self.entity).into_value()),
                    text(column.name().as_str().to_owned().into_value()),
                ],
            ));
            out.push(Expr::cust_with_exprs(
                DENORMALIZED_TRIGGERS,
                [
                    text(quote_table(&self.history).into_value()),
                    text(d.signature().into_value()),
                ],
            ));
        }
        out
    }

    /// The denormalized column this spec could answer from, and its DDL:
    /// `None` when the spec has none or cannot use it.
    fn maintained_column(&self) -> Option<(&crate::AnyColumn, crate::Denormalize)> {
        self.denormalized
            .as_ref()
            .filter(|_| self.denormalizable())
            .zip(self.denormalize().ok())
    }

    /// Reads [`catalog_exprs`](Self::catalog_exprs) from `row` at `at`.
    fn read_catalog<R: RowRead>(&self, row: &R, at: usize) -> Result<LatestCatalog> {
        let md5: Option<String> = row.try_get(at.into())?;
        let denormalized = if self.denormalized.is_some() && self.denormalizable() {
            Some((row.try_get((at + 1).into())?, row.try_get((at + 2).into())?))
        } else {
            None
        };
        Ok(LatestCatalog {
            state: Catalog::new(md5.as_deref(), format_args!("{denormalized:?}")),
            denormalized,
        })
    }

    /// The catalog state alone: what a query seen before checks.
    async fn catalog<E: Executor>(&self, db: &E) -> Result<LatestCatalog> {
        let mut q = Query::select();
        q.exprs(self.catalog_exprs());
        let row = db.one_row(&BuiltQuery::new(&q)).await?;
        self.read_catalog(&row, 0)
    }

    /// The history table's OID (part of the cache key: the same SQL can
    /// name other tables under another `search_path`), the estimated
    /// fraction of history rows the status predicate keeps (a proxy for its
    /// selectivity, for the cache bucket) and the catalog state. One
    /// catalog query.
    async fn predicate_fraction<E: Executor>(
        &self,
        db: &E,
    ) -> Result<(i64, Option<f64>, LatestCatalog)> {
        let (template, value, negate) = match &self.predicate {
            Predicate::Any => ("1::float8", None, false),
            Predicate::IsNull => (STATUS_NULLS, None, false),
            Predicate::Eq(v) => (STATUS_FREQUENCY, Some(v.clone().cast_as("text")), false),
            Predicate::Ne(v) => (STATUS_FREQUENCY, Some(v.clone().cast_as("text")), true),
            Predicate::In(v) => (STATUS_FREQUENCY, Some(any_text(v.clone())), false),
            Predicate::NotIn(v) => (STATUS_FREQUENCY, Some(any_text(v.clone())), true),
        };
        let table = Expr::val(quote_table(&self.history).into_value()).cast_as("text");
        let mut args = vec![
            table.clone(),
            Expr::val(self.status.name().as_str().to_owned().into_value()).cast_as("text"),
        ];
        args.extend(value);
        let q = BuiltQuery::new(
            &Query::select()
                .expr(Expr::cust_with_exprs(
                    "coalesce(to_regclass($1)::oid::int8, 0)",
                    [table],
                ))
                .expr(Expr::cust_with_exprs(template, args))
                .exprs(self.catalog_exprs())
                .to_owned(),
        );
        let row = db.one_row(&q).await?;
        let oid: i64 = row.try_get(0usize.into())?;
        let f: Option<f64> = row.try_get(1usize.into())?;
        let catalog = self.read_catalog(&row, 2)?;
        Ok((
            oid,
            f.filter(|f| !f.is_nan())
                .map(|f| if negate { 1.0 - f } else { f }),
            catalog,
        ))
    }

    /// What [`LatestStrategy::Auto`] chooses for `shape`, and why, using
    /// the [global cache](StrategyCache::global). Every call reads the
    /// catalog state of the history and entity tables (their indexes,
    /// triggers and columns; whether the denormalized column exists and its
    /// triggers are installed and enabled) in one small catalog query; a
    /// query not seen before also reads the status's frequency in it, to
    /// find the selectivity bucket. On a cache miss it reads the history's
    /// statistics. `Denormalized` is chosen only when the column is
    /// maintained; otherwise the reason says why not.
    ///
    /// # Errors
    /// As [`check`](Self::check), and
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

    /// [`explain_choice`](Self::explain_choice) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`explain_choice`](Self::explain_choice).
    pub fn explain_choice_blocking<C>(
        &self,
        db: &mut C,
        shape: Shape,
    ) -> Result<Choice<LatestStrategy>>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.explain_choice(db, shape).await)
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
        self.check()?;
        check_shape(shape)?;
        let reference = self.shape_query(LatestStrategy::DistinctOn, shape);
        let recall = cache.recall("latest", shape, &reference);
        if recall.is_remembered() {
            let catalog = self.catalog(db).await?;
            if let Some(hit) = cache.remembered(&recall, &catalog.state) {
                return Ok(hit);
            }
        }
        let (oid, fraction, catalog) = self.predicate_fraction(db).await?;
        let bucket = fraction_bucket(fraction);
        let maintained = catalog.maintained();
        let denormalized = catalog.denormalized;
        let started = recall.started();
        let key = cache.key_for(recall, oid, bucket, catalog.state);
        cache
            .get_or_decide(key, started, async {
                if maintained {
                    return Ok(self.denormalized_choice(shape));
                }
                let history = TableStats::load(db, &self.history, &[&self.fk]).await?;
                let entity = TableStats::load(db, &self.entity, &[&self.key]).await?;
                let fk = history.columns.first().cloned().unwrap_or_default();
                let stats = HistoryStats {
                    entity_rows: entity.rows,
                    history_rows: history.rows,
                    with_history: fk.distinct,
                    fk_index: fk.leading_index,
                };
                let (strategy, mut reason, mut candidates) = decide(&stats, shape);
                let mut statistics = vec![
                    Statistic::count("entity_rows", stats.entity_rows),
                    Statistic::count("history_rows", stats.history_rows),
                    Statistic::count("entities_with_history", stats.with_history),
                    Statistic::ratio("history_per_entity", stats.per_entity()),
                    Statistic::flag("fk_index", stats.fk_index),
                ];
                if let Some((column, triggers)) = denormalized {
                    let why = if column {
                        "denormalized column not maintained: triggers missing or disabled"
                    } else {
                        "denormalized column missing"
                    };
                    debug_assert!(!(column && triggers));
                    reason = format!("{why}; {reason}");
                    candidates.push(Estimate::rejected(LatestStrategy::Denormalized, why));
                    statistics.push(Statistic::flag("denormalized_maintained", false));
                }
                Ok(Choice {
                    strategy,
                    shape,
                    bucket,
                    reason,
                    candidates,
                    statistics,
                    decided_by: crate::choice::DecidedBy::Rule,
                    cached: false,
                    decided_in: Default::default(),
                    looked_up_in: Default::default(),
                    age: Default::default(),
                })
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
        shape: Shape,
    ) -> Result<Choice<LatestStrategy>>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| {
            self.explain_choice_with(cache, db, shape).await
        })
    }

    /// The decision when the maintained column answers.
    fn denormalized_choice(&self, shape: Shape) -> Choice<LatestStrategy> {
        let mut candidates = vec![Estimate::chosen(LatestStrategy::Denormalized)];
        candidates.extend(
            LatestStrategy::FROM_HISTORY
                .map(|s| Estimate::rejected(s, "the maintained status column is always cheaper")),
        );
        Choice {
            strategy: LatestStrategy::Denormalized,
            shape,
            bucket: None,
            reason: "a trigger-maintained status column answers the filter without reading the \
                     history (the column exists and its triggers are installed and enabled)"
                .into(),
            candidates,
            statistics: vec![Statistic::flag("denormalized_maintained", true)],
            decided_by: crate::choice::DecidedBy::Rule,
            cached: false,
            decided_in: Default::default(),
            looked_up_in: Default::default(),
            age: Default::default(),
        }
    }

    /// Measures every strategy that can answer this spec for `shape` on
    /// this database, and keeps the fastest as `Auto`'s decision for it
    /// (see [`Calibration`](crate::Calibration) for how, and how long it
    /// holds): the history strategies, and `Denormalized` when its column
    /// is maintained. Runs the candidates for real, each bounded by a
    /// `statement_timeout` in its own transaction: call it from a
    /// maintenance task or at start-up, not in a request path.
    ///
    /// ```no_run
    /// # async fn demo(mut client: tokio_postgres::Client, spec: pgpatterns::LatestStatus<String>) -> pgpatterns::Result<()> {
    /// use pgpatterns::{Calibration, LatestStrategy, Shape};
    /// let spec = spec.strategy(LatestStrategy::Auto);
    /// let measured = spec.calibrate(&mut client, Shape::Count, &Calibration::new()).await?;
    /// println!("{measured}"); // medians per strategy, and what the rule would have chosen
    /// let n = spec.count(&client).await?; // uses the measured choice, without measuring
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`explain_choice`](Self::explain_choice); the calibration's
    /// refusal ([`Calibration::check`](crate::Calibration::check)), or
    /// [`Error::InvalidSpec`](crate::Error::InvalidSpec) (field
    /// `"calibration"`) when no candidate finishes within its bound;
    /// [`Error::StrategiesDisagree`](crate::Error::StrategiesDisagree) if
    /// two strategies return different rows; the database's error.
    pub async fn calibrate<E: Transactional>(
        &self,
        db: &mut E,
        shape: Shape,
        calibration: &Calibration,
    ) -> Result<Choice<LatestStrategy>> {
        self.calibrate_with(StrategyCache::global(), db, shape, calibration)
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
        shape: Shape,
        calibration: &Calibration,
    ) -> Result<Choice<LatestStrategy>> {
        calibration.check()?;
        let rule = self.explain_choice_with(cache, &*db, shape).await?;
        let mut strategies = LatestStrategy::FROM_HISTORY.to_vec();
        if self.maintained_column().is_some() && self.catalog(&*db).await?.maintained() {
            strategies.push(LatestStrategy::Denormalized);
        }
        let candidates = strategies
            .into_iter()
            .map(|s| (s, self.shape_query(s, shape)))
            .collect();
        let reference = self.shape_query(LatestStrategy::DistinctOn, shape);
        let target = Target {
            cache,
            family: "latest",
            shape,
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
        shape: Shape,
        calibration: &Calibration,
    ) -> Result<Choice<LatestStrategy>>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.calibrate(db, shape, calibration).await)
    }

    /// Runs `run` on this spec in the strategy it runs in: `Auto` resolved
    /// for `shape` with the [global cache](StrategyCache::global). A query
    /// decided before runs its remembered strategy in the same round trip
    /// as the catalog check that confirms it (see
    /// [`speculate`](crate::choice::speculate)); `Denormalized` runs only
    /// after the check says its column is maintained.
    pub(super) async fn run_resolved<E, T, R>(
        &self,
        db: &E,
        shape: Shape,
        run: impl Fn(LatestStatus<S>) -> R,
    ) -> Result<T>
    where
        E: Executor,
        R: std::future::Future<Output = Result<T>>,
    {
        if self.strategy == LatestStrategy::Auto {
            self.check()?;
            check_shape(shape)?;
            let cache = StrategyCache::global();
            let reference = self.shape_query(LatestStrategy::DistinctOn, shape);
            let recall = cache.recall("latest", shape, &reference);
            let checked = async { Ok(self.catalog(db).await?.state) };
            let trusted = |s| s != LatestStrategy::Denormalized;
            let remembered = |s| run(self.with_strategy(s));
            if let Some(out) = speculate(cache, &recall, trusted, checked, remembered).await {
                return out;
            }
        }
        run(self.resolve(db, shape).await?).await
    }

    /// This spec with `Auto` replaced by the strategy it chooses for
    /// `shape` (other strategies are kept), so you can build it yourself.
    ///
    /// # Errors
    /// As [`explain_choice`](Self::explain_choice).
    pub async fn resolve<E: Executor>(&self, db: &E, shape: Shape) -> Result<LatestStatus<S>> {
        self.check()?;
        if self.strategy != LatestStrategy::Auto {
            return Ok(self.clone());
        }
        let choice = self.explain_choice(db, shape).await?;
        Ok(self.with_strategy(choice.strategy))
    }

    /// [`resolve`](Self::resolve) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`resolve`](Self::resolve).
    pub fn resolve_blocking<C>(&self, db: &mut C, shape: Shape) -> Result<LatestStatus<S>>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.resolve(db, shape).await)
    }
}

/// The statistics `Auto` decides from.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HistoryStats {
    pub(crate) entity_rows: f64,
    pub(crate) history_rows: f64,
    /// Distinct foreign keys in the history (`pg_stats.n_distinct`).
    pub(crate) with_history: f64,
    /// A valid index leads with the history's foreign key.
    pub(crate) fk_index: bool,
}

impl HistoryStats {
    pub(crate) fn per_entity(&self) -> f64 {
        self.history_rows / self.with_history
    }
}

/// History rows per entity from which one index probe per entity
/// (`Lateral`) beats one ordered pass over the whole history (`DistinctOn`)
/// for a count: a probe costs about four rows read in order (measured: at
/// 2.4 rows per entity `DistinctOn` is 1.6× faster, at 42 `Lateral` is 4.5×
/// faster).
pub(crate) const LATERAL_FROM: f64 = 4.0;

/// `Auto`'s rule for the latest family, from the history's statistics.
///
/// The planner's costs are not used: measured on the grid (README, "Which
/// strategy?") they rank the strategies wrongly in half the cells — the
/// anti-join's row estimate makes `NotExists` look 2–20× cheaper than it
/// is, and a recursive CTE is costed as ten iterations, so the skip scan
/// always looks cheapest. The rule follows what each strategy reads:
///
/// - with an index leading with the foreign key: a page is a probe per
///   entity until it is full (`Lateral`); a count is a probe per entity
///   (`Lateral`) once histories average [`LATERAL_FROM`] rows, or one
///   ordered pass (`DistinctOn`) below; the skip scan probes only entities
///   that *have* history, so it wins only for long histories when most
///   entities have none;
/// - without one, probing means scanning, so every strategy reads the
///   whole history: a count is the hashed anti-join of the history with
///   itself (`NotExists`), which sorts nothing (measured 1.1–1.6× faster
///   than `DistinctOn`'s sort at 20 k–1 M entities, short and long
///   histories). A page of short histories is the sort numbered by a
///   window function (`Window`): the anti-join keeps about half of the
///   rows and still has to sort them for the page, so it was 1.1–2.3×
///   slower. A page of long histories (from [`LONG_HISTORY`] rows per
///   entity) is the anti-join (`NotExists`): it keeps one row in
///   `per_entity` before anything is sorted, where `Window` sorts every
///   history row. Measured on 210 k–2.1 M history rows of ~42 per entity,
///   at `work_mem` 4 MB and 64 MB, `NotExists` was 0.75–1.09× of
///   `Window` (it lost by 7 % and 9 % where the sort fit in memory and the
///   hash did not), and `Window` up to 1.33× of `NotExists`.
pub(crate) fn decide(
    stats: &HistoryStats,
    shape: Shape,
) -> (LatestStrategy, String, Vec<Estimate<LatestStrategy>>) {
    let per = stats.per_entity();
    let known = per.is_finite();
    let long = known && per >= LONG_HISTORY;
    let sparse = stats.entity_rows > 2.0 * stats.with_history;
    let page = matches!(shape, Shape::Page { .. });
    let (chosen, reason) = if stats.fk_index {
        match shape {
            Shape::Page { .. } => (
                LatestStrategy::Lateral,
                "a page needs one index probe per entity until it is full, in key order".to_owned(),
            ),
            _ if long && sparse => (
                LatestStrategy::SkipScan,
                format!("long histories (~{per:.1} rows per entity) and most entities have none: one index jump per entity with history"),
            ),
            _ if known && per >= LATERAL_FROM => (
                LatestStrategy::Lateral,
                format!("~{per:.1} history rows per entity: one index probe per entity reads far less than a pass over the history"),
            ),
            _ => (
                LatestStrategy::DistinctOn,
                if known {
                    format!("short histories (~{per:.1} rows per entity): one ordered pass over the history beats a probe per entity")
                } else {
                    "no statistics (run ANALYZE): one ordered pass over the history is the safe choice".to_owned()
                },
            ),
        }
    } else if page && long {
        (
            LatestStrategy::NotExists,
            format!("no index on the foreign key, so every strategy reads the whole history; long histories (~{per:.1} rows per entity): for a page, the hashed anti-join keeps one row per entity before the page is sorted, where a window function sorts every row"),
        )
    } else if page {
        (
            LatestStrategy::Window,
            if known {
                format!("no index on the foreign key, so every strategy reads the whole history; short histories (~{per:.1} rows per entity): for a page, one sort numbered by a window function")
            } else {
                "no index on the foreign key, so every strategy reads the whole history; no statistics (run ANALYZE): for a page, one sort numbered by a window function".to_owned()
            },
        )
    } else {
        (
            LatestStrategy::NotExists,
            "no index on the foreign key, so every strategy reads the whole history: a hashed anti-join of the history with itself sorts nothing".to_owned(),
        )
    };
    let candidates = LatestStrategy::FROM_HISTORY
        .into_iter()
        .map(|s| {
            let why = match s {
                _ if s == chosen => return Estimate::chosen(s),
                LatestStrategy::Lateral | LatestStrategy::SkipScan if !stats.fk_index => {
                    "needs an index leading with the foreign key; without it every probe scans the history"
                }
                LatestStrategy::SkipScan if !long => {
                    "only for long histories: on short ones a probe per entity costs more than reading every row"
                }
                LatestStrategy::SkipScan => {
                    "probes as often as Lateral when most entities have history, plus the recursion's overhead"
                }
                LatestStrategy::Window if stats.fk_index => {
                    "sorts like DistinctOn, then numbers every row: never cheaper with the index"
                }
                LatestStrategy::Window if page => {
                    "sorts every history row; the anti-join sorts one row per entity"
                }
                LatestStrategy::Window => "sorts the whole history; the anti-join sorts nothing",
                LatestStrategy::NotExists if stats.fk_index => {
                    "an anti-join over every history row; the index makes DistinctOn or Lateral cheaper"
                }
                LatestStrategy::NotExists => {
                    "on short histories the anti-join keeps most rows, and still sorts them for the page"
                }
                LatestStrategy::DistinctOn if !stats.fk_index && page => {
                    "the same sort as Window, measured up to 1.35× slower for a page"
                }
                LatestStrategy::DistinctOn if !stats.fk_index => {
                    "sorts the whole history; the anti-join sorts nothing"
                }
                LatestStrategy::DistinctOn => "reads every history row",
                _ => "not the cheapest for this shape and these statistics",
            };
            Estimate::rejected(s, why)
        })
        .collect();
    (chosen, reason, candidates)
}

/// `array_expr::text[]` compared with `= ANY`: `m.v = ANY(…)`.
fn any_text(array: Expr) -> Expr {
    Expr::cust_with_exprs("ANY($1)", [array.cast_as("text[]")])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(per_entity: f64, fk_index: bool) -> HistoryStats {
        HistoryStats {
            entity_rows: 10_000.0,
            history_rows: 10_000.0 * per_entity,
            with_history: 10_000.0,
            fk_index,
        }
    }

    fn pick(per_entity: f64, fk_index: bool, shape: Shape) -> LatestStrategy {
        decide(&stats(per_entity, fk_index), shape).0
    }

    #[test]
    fn without_the_index_a_page_follows_the_history_length() {
        let page = Shape::Page { limit: 50 };
        assert_eq!(pick(2.3, false, page), LatestStrategy::Window);
        assert_eq!(pick(LONG_HISTORY, false, page), LatestStrategy::NotExists);
        assert_eq!(pick(42.0, false, page), LatestStrategy::NotExists);
        // Counts are the anti-join at every length.
        for per in [1.0, 2.3, 42.0] {
            assert_eq!(pick(per, false, Shape::Count), LatestStrategy::NotExists);
        }
        // No statistics: the sort, which never keeps a hash of the history.
        assert_eq!(pick(f64::NAN, false, page), LatestStrategy::Window);
        let (_, reason, candidates) = decide(&stats(42.0, false), page);
        assert!(reason.contains("long histories"), "{reason}");
        let window = candidates
            .iter()
            .find(|c| c.strategy == LatestStrategy::Window)
            .and_then(|c| c.rejected.as_deref());
        assert!(window.is_some_and(|w| w.contains("every history row")));
    }

    #[test]
    fn with_the_index_a_page_is_a_probe_per_entity() {
        let page = Shape::Page { limit: 50 };
        for per in [1.0, 2.3, 42.0] {
            assert_eq!(pick(per, true, page), LatestStrategy::Lateral);
        }
        assert_eq!(pick(2.3, true, Shape::Count), LatestStrategy::DistinctOn);
        assert_eq!(pick(42.0, true, Shape::Count), LatestStrategy::Lateral);
    }
}
