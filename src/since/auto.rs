//! [`SinceStrategy::Auto`]: the strategy chosen per shape and window from
//! the live database.

use std::future::Future;

use sea_query::Value;

use super::{ChangeColumn, SinceQuery, SinceStrategy};
use crate::calibrate::{calibrate, Calibration, Target};
use crate::choice::{
    catalog_state, check_shape, fraction_bucket, speculate, tables_text, Catalog, Choice, Estimate,
    Shape, Statistic, StrategyCache,
};
use crate::ddl::quote_table;
use crate::exec::{run_blocking, run_blocking_mut, BlockingExecutor, Transactional};
use crate::explain::{explain, Plan};
use crate::types::SqlType;
use crate::{BuiltQuery, CursorKey, Executor, PageRequest, Result, RowRead};

/// The bytes the planner counts per row of a subquery it would hash for
/// an `IN`, besides the row's data: `MAXALIGN(SizeofHeapTupleHeader)`.
/// PostgreSQL hashes an `IN (subquery)` only when
/// `rows × (MAXALIGN(width) + 24)` fits `work_mem × hash_mem_multiplier`
/// (`subplan_is_hashable`);
/// past that it re-runs the subquery per root row. `Auto` applies the same
/// formula to the changed keys' width, so the cliff moves with the key type
/// and the session's memory, not with one measured dataset (for an `int8`
/// key: 32 bytes, about 260 k keys in the default 4 MB × 2).
const HASHED_ROW_OVERHEAD: f64 = 24.0;

/// The width PostgreSQL gives a value of `sql_type` in a tuple (fixed-width
/// types), or 32 bytes for a variable-width one (text, numeric, …), an
/// assumption about typical keys.
pub(crate) fn type_width(sql_type: &str) -> f64 {
    match sql_type {
        "bool" | "char" => 1.0,
        "int2" => 2.0,
        "int4" | "float4" | "date" | "oid" => 4.0,
        "int8" | "float8" | "timestamp" | "timestamptz" | "time" | "money" => 8.0,
        "uuid" | "interval" => 16.0,
        _ => 32.0,
    }
}

/// `MAXALIGN` (8 bytes) of a width.
fn maxalign(bytes: f64) -> f64 {
    (bytes / 8.0).ceil() * 8.0
}

/// Changed rows per root below which a count looks up just the changed
/// roots by key (`SemiJoin`): a hashed `IN` (`UnionIn`) scans every root
/// once, which costs more than probing a few percent of them (measured at
/// 1 M roots: 0.013 changed rows per root, `SemiJoin` 179 ms against
/// `UnionIn` 380 ms; about even at 0.04; at 0.1, `UnionIn` 696 ms against
/// 1144 ms).
const SEMI_JOIN_BELOW: f64 = 0.04;

/// Changed rows per root from which a first page is found faster by
/// walking the roots in key order than by collecting every changed row.
const STREAM_PAGE: f64 = 0.2;

/// Roots `Exists` walks (in key order, probing each one's paths) to fill a
/// page, per changed row, above which a page looks up just the changed
/// roots (`SemiJoin`, one index probe per changed row, then a sort of
/// that few). Measured on the moves graph (7 paths) at a 1-day window:
/// ~27 roots walked per changed row at 10 k moves, `SemiJoin` 1.64 ms
/// against `Exists` 2.14; ~2.6 at 100 k, even (3.30 against 3.30); ~1.0 at
/// 300 k, `Exists` 6.44 against 7.85; ~0.28 at 1 M, `Exists` 16.4 against
/// 23.8.
const PAGE_WALK_PER_CHANGED: f64 = 3.0;

impl Window {
    /// How many changed keys `UnionIn`'s hashed subplan holds in memory.
    fn hashable_rows(&self) -> f64 {
        self.hash_bytes / (maxalign(self.key_width) + HASHED_ROW_OVERHEAD)
    }

    /// Changed rows (summed over the change columns) per root row.
    fn density(&self) -> f64 {
        self.changed_rows / self.root_rows.max(1.0)
    }

    /// The roots `Exists` walks to fill a page of `limit`: until `limit`
    /// of them matched, at about one match per `root_rows / changed_rows`
    /// roots; every root when the window holds fewer.
    fn roots_walked(&self, limit: i64) -> f64 {
        let per_match = self.root_rows / self.changed_rows.max(1.0);
        (limit.max(1) as f64 * per_match).min(self.root_rows)
    }
}

/// Whether a plan walks its rows in order and tests each one's subplans
/// row by row — no `hashed SubPlan` (which reads every changed row before
/// the first result) and no `Sort` — so a `LIMIT` stops it early.
fn probes_row_by_row(plan: &Plan) -> bool {
    plan.nodes().iter().all(|n| {
        n.node_type != "Sort"
            && !n
                .filter
                .as_deref()
                .is_some_and(|f| f.contains("hashed SubPlan"))
    })
}

/// `Auto`'s rule for the since family, from the window's statistics and,
/// for pages, one fact of the `Exists` plan. The planner's costs are
/// reported as evidence but do not decide: on the measured grid they picked
/// a strategy 3–50× slower than the best in half the cells (the `OR` of
/// `EXISTS` subplans and the hashed `IN` are costed far from what they do).
///
/// - a **count** (or every row) of a window with few changed rows per root
///   ([`SEMI_JOIN_BELOW`]) looks up just those roots by key (`SemiJoin`);
///   with more, one pass over the roots: a hashed `IN` of the changed keys
///   (`UnionIn`) while they fit in `work_mem × hash_mem_multiplier`, else an
///   index probe per path (`Exists`), which has no memory cliff (a hashed
///   `IN` that overflows becomes a subplan re-run per root);
/// - a **first page** of a narrow window: `Exists` (probes roots in key
///   order and stops after the page), unless it would walk more than
///   [`PAGE_WALK_PER_CHANGED`] roots per changed row to fill the page — a
///   window that holds few rows for the page's size, or none — where
///   `SemiJoin` looks up just the changed roots; of a wider
///   window ([`STREAM_PAGE`]): `Exists` still when the planner probes its
///   subplans row by row (it stops after about a page of roots), else
///   `OrJoins`, whose merge joins stream the roots in key order and stop
///   after the page (when the key is the root's primary key).
fn decide(w: &Window, shape: Shape, exists_streams: bool) -> (SinceStrategy, String) {
    if w.tracked {
        return (
            SinceStrategy::Tracked,
            "the tracked column is maintained (its triggers are installed and enabled on every table of the graph): one index range scan on the root".to_owned(),
        );
    }
    let density = w.density();
    let known = w.fraction.is_some() && density.is_finite();
    let stats = format!(
        "~{:.0} changed rows for {:.0} roots",
        w.changed_rows, w.root_rows
    );
    if !known {
        return match shape {
            Shape::Page { .. } => (
                SinceStrategy::Exists,
                "no statistics (run ANALYZE): Exists, which probes roots in key order and stops after the page".to_owned(),
            ),
            _ => (
                SinceStrategy::SemiJoin,
                "no statistics (run ANALYZE): SemiJoin, which has no memory cliff".to_owned(),
            ),
        };
    }
    match shape {
        Shape::Page { .. } if density >= STREAM_PAGE && exists_streams => (
            SinceStrategy::Exists,
            format!("a wide window ({stats}) and the planner probes each root's paths row by row: walking the roots in key order stops after about a page of them"),
        ),
        Shape::Page { .. } if density >= STREAM_PAGE && w.key_is_pk => (
            SinceStrategy::OrJoins,
            format!("a wide window ({stats}): merge joins stream the roots in key order and stop after the page"),
        ),
        Shape::Page { limit }
            if w.roots_walked(limit) > PAGE_WALK_PER_CHANGED * w.changed_rows =>
        {
            (
                SinceStrategy::SemiJoin,
                format!(
                    "a page ({stats}) that walking the roots in key order fills only after ~{:.0} of them, more than {PAGE_WALK_PER_CHANGED} per changed row: look up just the changed roots by key",
                    w.roots_walked(limit)
                ),
            )
        }
        Shape::Page { .. } => (
            SinceStrategy::Exists,
            format!("a page ({stats}): probe the roots in key order and stop after the page"),
        ),
        _ if density < SEMI_JOIN_BELOW => (
            SinceStrategy::SemiJoin,
            format!("a narrow window ({stats}): look up just the changed roots by key"),
        ),
        _ if w.changed_rows <= w.hashable_rows() => (
            SinceStrategy::UnionIn,
            format!(
                "a wider window ({stats}) whose changed keys fit one hashed IN (~{:.0}): one pass over the roots",
                w.hashable_rows()
            ),
        ),
        _ => (
            SinceStrategy::Exists,
            format!(
                "a wide window ({stats}), more changed keys than a hashed IN holds in memory (~{:.0}): one pass over the roots with an index probe per path",
                w.hashable_rows()
            ),
        ),
    }
}

/// Whether the graph's tracked column is maintained: the column exists on
/// the root (`$root` quoted table, `$col` column name), the stamp table
/// (`$stamps`) exists, and every table of the graph (`$tables`) has the
/// function's (`$sig`) statement-level INSERT, UPDATE, DELETE and TRUNCATE
/// triggers, enabled. False for a graph without a tracked column (NULL
/// names).
macro_rules! tracked_state {
    ($tables:literal, $sig:literal, $root:literal, $col:literal, $stamps:literal) => {
        concat!(
            "(coalesce((SELECT bool_and(coalesce((SELECT bit_or(g.tgtype::int4) & 61 = 60 FROM pg_trigger g
      WHERE g.tgrelid = to_regclass(x.rel) AND NOT g.tgisinternal AND g.tgenabled <> 'D'
        AND g.tgfoid = to_regprocedure(", $sig, "::text)), false))
    FROM unnest(", $tables, "::text[]) AS x(rel)), false)
  AND to_regclass(", $stamps, "::text) IS NOT NULL
  AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = to_regclass(", $root, "::text)
              AND a.attname = ", $col, "::text AND NOT a.attisdropped AND a.attnum > 0))"
        )
    };
}

/// Per change column (`$1` quoted tables, `$2` columns, `$3` naive flags,
/// `$4` the window start as epoch seconds in each column's own clock): the
/// table's OID, whether `$5` is its one-column primary key, the session's
/// hash memory in bytes, the table's rows and the fraction of them at or
/// after the start, from `pg_stats` (most common values, then the histogram
/// for the rest, interpolated linearly inside the bucket the start falls
/// in, as the planner does), and the catalog state of the tables `$6`
/// (the same on every row).
const WINDOW_STATS: &str = concat!(
    "
SELECT col.ord::int8,
       coalesce(c.oid::int8, 0),
       EXISTS (SELECT 1 FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
               WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnkeyatts = 1 AND a.attname = $5),
       pg_size_bytes(current_setting('work_mem'))::float8
         * current_setting('hash_mem_multiplier')::float8,
       CASE WHEN c.reltuples < 0 THEN 'NaN'::float8 ELSE c.reltuples::float8 END,
       CASE WHEN s.attname IS NULL THEN 'NaN'::float8 ELSE
         (SELECT coalesce(sum(m.f), 0) FROM unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS m(v, f)
           WHERE CASE WHEN col.naive THEN extract(epoch FROM m.v::timestamp)
                      ELSE extract(epoch FROM m.v::timestamptz) END >= col.at)
         + (1 - s.null_frac - coalesce((SELECT sum(f) FROM unnest(s.most_common_freqs) AS f), 0))
           * coalesce((SELECT sum(CASE WHEN b.hi <= b.lo THEN (b.lo >= col.at)::int::float8
                                       ELSE greatest(0, least(1, (b.hi - greatest(col.at, b.lo)) / (b.hi - b.lo))) END)
                              / nullif(count(*), 0)
                       FROM (SELECT x.e AS lo, lead(x.e) OVER (ORDER BY x.o) AS hi
                             FROM (SELECT CASE WHEN col.naive THEN extract(epoch FROM h.v::timestamp)
                                               ELSE extract(epoch FROM h.v::timestamptz) END::float8 AS e, h.o
                                   FROM unnest(s.histogram_bounds::text::text[]) WITH ORDINALITY AS h(v, o)) AS x) AS b
                       WHERE b.hi IS NOT NULL), 0)
       END::float8,
       ",
    catalog_state!("$6"),
    ",
       ",
    tracked_state!("$7", "$8", "$9", "$10", "$11"),
    "
FROM unnest($1::text[], $2::text[], $3::bool[], $4::float8[]) WITH ORDINALITY AS col(rel, att, naive, at, ord)
LEFT JOIN pg_class c ON c.oid = to_regclass(col.rel)
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = col.att
ORDER BY col.ord"
);

/// The catalog state alone (`$1` the tables): what a query seen before
/// checks.
const CATALOG_STATE: &str = concat!(
    "SELECT ",
    catalog_state!("$1"),
    ",
       pg_size_bytes(current_setting('work_mem'))::float8
         * current_setting('hash_mem_multiplier')::float8,
       ",
    tracked_state!("$2", "$3", "$4", "$5", "$6")
);

/// The session's hash memory is part of the state a decision depends on
/// (whether the changed keys fit one hashed `IN`): a `SET work_mem` decides
/// again; so is whether the tracked column is maintained (installing or
/// uninstalling its triggers decides again).
fn since_catalog(md5: Option<&str>, hash_bytes: f64, tracked: bool) -> Catalog {
    Catalog::new(
        md5,
        format_args!("hash_memory={hash_bytes:.0};tracked={tracked}"),
    )
}

/// The window's statistics: per change column, its table's rows and the
/// fraction inside the window.
#[derive(Debug, Clone, Default)]
struct Window {
    /// The largest fraction of any change column's table inside the window
    /// (`None` without statistics).
    fraction: Option<f64>,
    /// Estimated changed rows, summed over the change columns.
    changed_rows: f64,
    /// The root table's rows.
    root_rows: f64,
    /// The root table's OID (part of the cache key: the same SQL can name
    /// other tables under another `search_path`).
    root_oid: i64,
    /// The key is the root's one-column primary key (`OrJoins` and
    /// `GreatestGroupBy` group by it).
    key_is_pk: bool,
    /// `work_mem × hash_mem_multiplier`, in bytes.
    hash_bytes: f64,
    /// The widest row of changed keys a hashed `IN` holds (the key
    /// columns' widths summed), in bytes.
    key_width: f64,
    /// The catalog state of every table the query reads.
    catalog: Option<Catalog>,
    /// The graph's tracked column is maintained by its triggers.
    tracked: bool,
}

impl<K: SqlType> SinceQuery<K> {
    /// The widest row a hashed `IN` of `UnionIn` holds: per path, the
    /// widths of the columns its first hop selects, summed.
    fn key_width(&self) -> f64 {
        self.graph
            .resolve()
            .0
            .iter()
            .map(|p| {
                p.hops[0]
                    .pairs()
                    .iter()
                    .map(|(_, far)| type_width(far.sql_type()))
                    .sum::<f64>()
            })
            .fold(0.0, f64::max)
    }

    /// Every change column the query compares with `since`: the root's,
    /// then each path's.
    fn change_columns(&self) -> Vec<&ChangeColumn> {
        std::iter::once(&self.graph.root_change)
            .chain(self.graph.paths.iter().map(|p| &p.change))
            .collect()
    }

    /// Every table the query reads: the root, each path's hops and change
    /// columns' tables, each once.
    fn tables(&self) -> Value {
        let mut tables = vec![&self.graph.root];
        for p in &self.graph.paths {
            for h in &p.hops {
                tables.push(h.rel.from_table());
                tables.push(h.rel.to_table());
            }
            tables.push(p.change.table());
        }
        String::array_value(tables_text(&tables))
    }

    /// The parameters of [`tracked_state!`]: the tables of the graph, the
    /// trigger function's signature, the root, the column and the stamp
    /// table; NULL names for a graph without a tracked column.
    fn tracking_values(&self) -> [Value; 5] {
        match self.graph.track() {
            Ok(t) => [
                String::array_value(t.tables().iter().map(quote_table)),
                t.signature().into_value(),
                quote_table(self.graph.root()).into_value(),
                t.column().name().as_str().to_owned().into_value(),
                crate::ddl::quote_beside(self.graph.root(), &t.stamp_table_name()).into_value(),
            ],
            Err(_) => [
                String::array_value(Vec::<String>::new()),
                Value::String(None),
                Value::String(None),
                Value::String(None),
                Value::String(None),
            ],
        }
    }

    /// The catalog state of [`tables`](Self::tables).
    async fn catalog<E: Executor>(&self, db: &E) -> Result<(Catalog, bool)> {
        let [a, b, c, d, e] = self.tracking_values();
        let q = BuiltQuery::fixed_with(CATALOG_STATE, [self.tables(), a, b, c, d, e]);
        let row = db.one_row(&q).await?;
        let md5: Option<String> = row.try_get(0usize.into())?;
        let hash_bytes: f64 = row.try_get(1usize.into())?;
        let tracked: bool = row.try_get(2usize.into())?;
        Ok((since_catalog(md5.as_deref(), hash_bytes, tracked), tracked))
    }

    async fn window<E: Executor>(&self, db: &E) -> Result<Window> {
        let cols = self.change_columns();
        let mut rels = Vec::new();
        let mut atts = Vec::new();
        let mut naive = Vec::new();
        let mut at = Vec::new();
        for c in &cols {
            rels.push(quote_table(c.table()));
            atts.push(c.erase().name().as_str().to_owned());
            let is_naive = matches!(c, ChangeColumn::Timestamp(_));
            naive.push(is_naive);
            let t = if is_naive {
                self.since.naive.and_utc().timestamp_micros()
            } else {
                self.since.utc.timestamp_micros()
            };
            at.push(t as f64 / 1e6);
        }
        let [ta, tb, tc, td, te] = self.tracking_values();
        let q = BuiltQuery::fixed_with(
            WINDOW_STATS,
            [
                String::array_value(rels),
                String::array_value(atts),
                bool::array_value(naive),
                f64::array_value(at),
                self.graph.key.name().as_str().to_owned().into_value(),
                self.tables(),
                ta,
                tb,
                tc,
                td,
                te,
            ],
        );
        let rows = db.rows(&q).await?;
        let mut w = Window {
            fraction: Some(0.0),
            changed_rows: 0.0,
            root_rows: f64::NAN,
            root_oid: 0,
            key_is_pk: false,
            hash_bytes: f64::NAN,
            key_width: self.key_width(),
            catalog: None,
            tracked: false,
        };
        for row in &rows {
            let ord: i64 = row.try_get(0usize.into())?;
            let oid: i64 = row.try_get(1usize.into())?;
            let key_is_pk: bool = row.try_get(2usize.into())?;
            w.hash_bytes = row.try_get(3usize.into())?;
            let rows: f64 = row.try_get(4usize.into())?;
            let fraction: f64 = row.try_get(5usize.into())?;
            let md5: Option<String> = row.try_get(6usize.into())?;
            w.tracked = row.try_get(7usize.into())?;
            w.catalog = Some(since_catalog(md5.as_deref(), w.hash_bytes, w.tracked));
            if ord == 1 {
                w.root_rows = rows;
                w.root_oid = oid;
                w.key_is_pk = key_is_pk;
            }
            if fraction.is_nan() || rows.is_nan() {
                w.fraction = None;
            } else {
                w.fraction = w.fraction.map(|f| f.max(fraction));
                w.changed_rows += fraction * rows;
            }
        }
        Ok(w)
    }

    /// The query of `shape` in `strategy`.
    fn shape_query(&self, strategy: SinceStrategy, shape: Shape) -> Result<BuiltQuery>
    where
        K: CursorKey,
    {
        let q = self.clone().strategy(strategy);
        Ok(match shape {
            Shape::Count => q.count_built(),
            Shape::Page { limit } => q.page_query(&PageRequest::new(limit))?,
            Shape::All => q.built(),
        })
    }

    /// What [`SinceStrategy::Auto`] chooses for `shape`, and why, using the
    /// [global cache](StrategyCache::global). Explains the candidates
    /// (nothing runs) on a cache miss. Every call reads the catalog state of
    /// the tables the query reads (indexes, triggers, columns; one small
    /// catalog query), so an index created or dropped is seen at once; a
    /// query not seen before reads the window's statistics in the same
    /// catalog query, to find the selectivity bucket.
    ///
    /// # Errors
    /// As [`check`](Self::check), and
    /// [`Error::InvalidSpec`](crate::Error::InvalidSpec) for a page limit
    /// outside `1..=max_limit`; the database's error.
    pub async fn explain_choice<E: Executor>(
        &self,
        db: &E,
        shape: Shape,
    ) -> Result<Choice<SinceStrategy>>
    where
        K: CursorKey,
    {
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
    ) -> Result<Choice<SinceStrategy>>
    where
        K: CursorKey,
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
    ) -> Result<Choice<SinceStrategy>>
    where
        K: CursorKey,
    {
        self.check()?;
        check_shape(shape)?;
        let reference = self.shape_query(SinceStrategy::UnionIn, shape)?;
        self.choose(cache, db, shape, &reference, |s| self.shape_query(s, shape))
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
    ) -> Result<Choice<SinceStrategy>>
    where
        K: CursorKey,
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| {
            self.explain_choice_with(cache, db, shape).await
        })
    }

    /// The decision for a query whose candidates `build` makes (spelled out
    /// to keep the future `Send` in the signature).
    #[allow(clippy::manual_async_fn)]
    fn choose<'a, E, F>(
        &'a self,
        cache: &'a StrategyCache,
        db: &'a E,
        shape: Shape,
        reference: &'a BuiltQuery,
        build: F,
    ) -> impl Future<Output = Result<Choice<SinceStrategy>>> + Send + 'a
    where
        E: Executor,
        F: Fn(SinceStrategy) -> Result<BuiltQuery> + Send + Sync + 'a,
    {
        async move {
            let recall = cache.recall("since", shape, reference);
            if recall.is_remembered() {
                let (catalog, _) = self.catalog(db).await?;
                if let Some(hit) = cache.remembered(&recall, &catalog) {
                    return Ok(hit);
                }
            }
            let window = self.window(db).await?;
            let bucket = fraction_bucket(window.fraction);
            let catalog = match &window.catalog {
                Some(c) => c.clone(),
                None => self.catalog(db).await?.0,
            };
            let started = recall.started();
            let key = cache.key_for(recall, window.root_oid, bucket, catalog);
            cache
                .get_or_decide(key, started, async {
                    let mut candidates = Vec::new();
                    let mut exists_streams = false;
                    let tracked = window.tracked.then_some(SinceStrategy::Tracked);
                    for s in SinceStrategy::ALL.into_iter().chain(tracked) {
                        let plan = explain(db, &build(s)?).await?;
                        if s == SinceStrategy::Exists {
                            exists_streams = probes_row_by_row(&plan);
                        }
                        candidates.push(Estimate::from_plan(s, &plan));
                    }
                    let (strategy, reason) = decide(&window, shape, exists_streams);
                    Ok(Choice {
                        strategy,
                        shape,
                        bucket,
                        reason,
                        candidates,
                        statistics: vec![
                            Statistic::count("root_rows", window.root_rows),
                            Statistic::fraction(
                                "window_fraction",
                                window.fraction.unwrap_or(f64::NAN),
                            ),
                            Statistic::count("changed_rows", window.changed_rows),
                            Statistic::bytes("hash_memory", window.hash_bytes),
                            Statistic::count("hashable_rows", window.hashable_rows()),
                            Statistic::bytes(
                                "hashed_row_bytes",
                                maxalign(window.key_width) + HASHED_ROW_OVERHEAD,
                            ),
                            Statistic::flag("key_is_primary_key", window.key_is_pk),
                            Statistic::flag("exists_probes_row_by_row", exists_streams),
                            Statistic::flag("tracked_column_maintained", window.tracked),
                        ],
                        decided_by: crate::choice::DecidedBy::Rule,
                        cached: false,
                        decided_in: Default::default(),
                        looked_up_in: Default::default(),
                        age: Default::default(),
                    })
                })
                .await
        }
    }

    /// Measures every strategy for `shape` on this database and keeps the
    /// fastest as `Auto`'s decision for this query (see
    /// [`Calibration`](crate::Calibration)). Runs the candidates for real,
    /// each bounded by a `statement_timeout` in its own transaction: call
    /// it from a maintenance task, not in a request path.
    ///
    /// # Errors
    /// As [`explain_choice`](Self::explain_choice); the calibration's
    /// refusal, or [`Error::InvalidSpec`](crate::Error::InvalidSpec) (field
    /// `"calibration"`) when no candidate finishes within its bound;
    /// [`Error::StrategiesDisagree`](crate::Error::StrategiesDisagree);
    /// the database's error.
    pub async fn calibrate<E: Transactional>(
        &self,
        db: &mut E,
        shape: Shape,
        calibration: &Calibration,
    ) -> Result<Choice<SinceStrategy>>
    where
        K: CursorKey,
    {
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
    ) -> Result<Choice<SinceStrategy>>
    where
        K: CursorKey,
    {
        calibration.check()?;
        let rule = self.explain_choice_with(cache, &*db, shape).await?;
        // The tracked column only while the rule found it maintained.
        let tracked = rule.strategy == SinceStrategy::Tracked
            || rule
                .candidates
                .iter()
                .any(|c| c.strategy == SinceStrategy::Tracked && c.rejected.is_none());
        let candidates = SinceStrategy::ALL
            .into_iter()
            .chain(tracked.then_some(SinceStrategy::Tracked))
            .map(|s| Ok((s, self.shape_query(s, shape)?)))
            .collect::<Result<Vec<_>>>()?;
        let reference = self.shape_query(SinceStrategy::UnionIn, shape)?;
        let target = Target {
            cache,
            family: "since",
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
    ) -> Result<Choice<SinceStrategy>>
    where
        K: CursorKey,
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.calibrate(db, shape, calibration).await)
    }

    /// This query with `Auto` replaced by the strategy it chooses for
    /// `shape` (other strategies are kept as they are), so you can
    /// [`build`](Self::build) it yourself.
    ///
    /// # Errors
    /// As [`explain_choice`](Self::explain_choice).
    pub async fn resolve<E: Executor>(&self, db: &E, shape: Shape) -> Result<SinceQuery<K>>
    where
        K: CursorKey,
    {
        self.check()?;
        if self.strategy != SinceStrategy::Auto {
            return Ok(self.clone());
        }
        let choice = self.explain_choice(db, shape).await?;
        Ok(self.clone().strategy(choice.strategy))
    }

    /// [`resolve`](Self::resolve) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`resolve`](Self::resolve).
    pub fn resolve_blocking<C>(&self, db: &mut C, shape: Shape) -> Result<SinceQuery<K>>
    where
        K: CursorKey,
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.resolve(db, shape).await)
    }

    /// `Auto` for a query decided before (the query `reference` builds, in
    /// `shape`), in one round trip: `run` on the remembered strategy,
    /// pipelined with the catalog check that confirms it (see
    /// [`speculate`](crate::choice::speculate)). `None` for a strategy other
    /// than `Auto`, a query not decided before, a `Tracked` decision (run
    /// only after the check says its column is maintained), or a changed
    /// catalog: resolve then.
    pub(crate) async fn run_remembered<E, T, R>(
        &self,
        db: &E,
        shape: Shape,
        reference: impl FnOnce() -> Result<BuiltQuery>,
        run: impl FnOnce(SinceQuery<K>) -> R,
    ) -> Option<Result<T>>
    where
        E: Executor,
        R: std::future::Future<Output = Result<T>>,
    {
        if self.strategy != SinceStrategy::Auto {
            return None;
        }
        let reference = match self.check().and_then(|()| reference()) {
            Ok(q) => q,
            Err(e) => return Some(Err(e)),
        };
        let cache = StrategyCache::global();
        let recall = cache.recall("since", shape, &reference);
        let checked = async { Ok(self.catalog(db).await?.0) };
        let trusted = |s| s != SinceStrategy::Tracked;
        let remembered = |s| run(self.clone().strategy(s));
        speculate(cache, &recall, trusted, checked, remembered).await
    }

    /// The concrete query for one page request: `Auto` resolved for this
    /// request's order and cursor.
    pub(crate) async fn resolve_page<E: Executor>(
        &self,
        db: &E,
        req: &PageRequest,
    ) -> Result<SinceQuery<K>>
    where
        K: CursorKey,
    {
        if self.strategy != SinceStrategy::Auto {
            return Ok(self.clone());
        }
        let shape = Shape::Page { limit: req.limit() };
        let reference = self
            .clone()
            .strategy(SinceStrategy::UnionIn)
            .page_query(req)?;
        let choice = self
            .choose(StrategyCache::global(), db, shape, &reference, |s| {
                self.clone().strategy(s).page_query(req)
            })
            .await?;
        Ok(self.clone().strategy(choice.strategy))
    }

    /// Counts the matching roots (with `Auto`, in the strategy it chooses
    /// for a count).
    ///
    /// # Errors
    /// As [`check`](Self::check), before anything is sent; the database's
    /// error.
    pub async fn count<E: Executor>(&self, db: &E) -> Result<i64>
    where
        K: CursorKey,
    {
        let count = |q: SinceQuery<K>| async move {
            db.one_row(&q.count_built()).await?.try_get(0usize.into())
        };
        let reference = || self.shape_query(SinceStrategy::UnionIn, Shape::Count);
        if let Some(out) = self
            .run_remembered(db, Shape::Count, reference, count)
            .await
        {
            return out;
        }
        count(self.resolve(db, Shape::Count).await?).await
    }

    /// [`count`](Self::count) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`count`](Self::count).
    pub fn count_blocking<C>(&self, db: &mut C) -> Result<i64>
    where
        K: CursorKey,
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.count(db).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(changed_rows: f64, root_rows: f64, key_is_pk: bool) -> Window {
        Window {
            fraction: Some(0.5),
            changed_rows,
            root_rows,
            root_oid: 1,
            key_is_pk,
            catalog: None,
            tracked: false,
            // ~260 k hashable int8 keys, the default 4 MB × 2
            hash_bytes: 8.0 * 1024.0 * 1024.0,
            key_width: 8.0,
        }
    }

    #[test]
    fn counts_follow_changed_rows_per_root_and_hash_memory() {
        let count = |c, r| decide(&window(c, r, true), Shape::Count, false).0;
        assert_eq!(count(13_000.0, 1e6), SinceStrategy::SemiJoin);
        assert_eq!(count(100_000.0, 1e6), SinceStrategy::UnionIn);
        assert_eq!(count(250_000.0, 1e6), SinceStrategy::UnionIn);
        assert_eq!(count(500_000.0, 1e6), SinceStrategy::Exists);
        assert_eq!(count(5e6, 1e6), SinceStrategy::Exists);
        // small tables: everything fits the hash, even a wide window
        assert_eq!(count(50_000.0, 20_000.0), SinceStrategy::UnionIn);
        // a huge root table: a narrow window stays a semi-join past the
        // hash memory (no cliff)
        assert_eq!(count(1e6, 1e8), SinceStrategy::SemiJoin);
        assert_eq!(
            decide(&window(1e6, 1e8, true), Shape::All, false).0,
            SinceStrategy::SemiJoin
        );
    }

    #[test]
    fn the_hash_cliff_moves_with_key_width_and_memory() {
        let count = |w: &Window| decide(w, Shape::Count, false).0;
        // 240 k changed int8 keys: 240 k × 32 bytes fits 8 MB
        let int8 = window(240_000.0, 1e6, true);
        assert_eq!(count(&int8), SinceStrategy::UnionIn);
        // the same keys as uuids (16 + 24 bytes each) do not
        let uuid = Window {
            key_width: 16.0,
            ..int8.clone()
        };
        assert_eq!(count(&uuid), SinceStrategy::Exists);
        // …until the session has more hash memory (64 MB × 2)
        let roomy = Window {
            hash_bytes: 128.0 * 1024.0 * 1024.0,
            ..uuid.clone()
        };
        assert_eq!(count(&roomy), SinceStrategy::UnionIn);
        assert_eq!(type_width("int4") + type_width("text"), 36.0);
        assert_eq!(maxalign(36.0) + HASHED_ROW_OVERHEAD, 64.0);
    }

    #[test]
    fn pages_stream_when_the_window_is_wide() {
        let page =
            |c, pk, streams| decide(&window(c, 1e6, pk), Shape::Page { limit: 50 }, streams).0;
        assert_eq!(page(13_000.0, true, false), SinceStrategy::Exists);
        assert_eq!(page(13_000.0, true, true), SinceStrategy::Exists);
        assert_eq!(page(500_000.0, true, false), SinceStrategy::OrJoins);
        assert_eq!(page(500_000.0, false, false), SinceStrategy::Exists);
        assert_eq!(page(5e6, true, true), SinceStrategy::Exists);
    }

    #[test]
    fn pages_of_windows_too_narrow_for_them_look_up_the_changed_roots() {
        let page = |c, r, limit| decide(&window(c, r, true), Shape::Page { limit }, false).0;
        // The 1-day window of the moves grid at 10 k, 100 k, 300 k and 1 M.
        assert_eq!(page(137.0, 1e4, 50), SinceStrategy::SemiJoin);
        assert_eq!(page(1_384.0, 1e5, 50), SinceStrategy::Exists);
        assert_eq!(page(3_849.0, 3e5, 50), SinceStrategy::Exists);
        assert_eq!(page(13_295.0, 1e6, 50), SinceStrategy::Exists);
        // An hour of it at 1 M; an empty window; a small page of the same.
        assert_eq!(page(550.0, 1e6, 50), SinceStrategy::SemiJoin);
        assert_eq!(page(0.0, 1e6, 50), SinceStrategy::SemiJoin);
        assert_eq!(page(1_384.0, 1e5, 5), SinceStrategy::Exists);
        let w = window(137.0, 1e4, true);
        assert_eq!(w.roots_walked(50), 50.0 * 1e4 / 137.0);
        assert_eq!(w.roots_walked(500), 1e4, "never more than every root");
        let (_, why) = decide(&w, Shape::Page { limit: 50 }, false);
        assert!(why.contains("per changed row"), "{why}");
    }

    #[test]
    fn a_maintained_tracked_column_wins_every_shape() {
        let mut w = window(13_000.0, 1e6, true);
        w.tracked = true;
        for shape in [Shape::Count, Shape::All, Shape::Page { limit: 50 }] {
            assert_eq!(decide(&w, shape, true).0, SinceStrategy::Tracked);
        }
        w.fraction = None;
        assert_eq!(decide(&w, Shape::Count, false).0, SinceStrategy::Tracked);
    }

    #[test]
    fn without_statistics_there_is_no_cliff() {
        let mut w = window(1.0, 1.0, true);
        w.fraction = None;
        assert_eq!(decide(&w, Shape::Count, false).0, SinceStrategy::SemiJoin);
        let (s, why) = decide(&w, Shape::Page { limit: 5 }, false);
        assert_eq!(s, SinceStrategy::Exists);
        assert!(why.contains("ANALYZE"), "{why}");
    }
}
