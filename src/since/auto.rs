//! [`SinceStrategy::Auto`]: the strategy chosen per shape and window from
//! the live database.

use std::future::Future;

use sea_query::Value;

use super::{ChangeColumn, SinceQuery, SinceStrategy};
use crate::choice::{
    cache_key, check_shape, estimate_all, exact_key, fraction_bucket, Choice, Shape, Statistic,
    StrategyCache,
};
use crate::ddl::quote_table;
use crate::types::SqlType;
use crate::{BuiltQuery, CursorKey, Executor, PageRequest, Result, RowRead};

/// Bytes per changed key in the hashed `IN` subplan of `UnionIn`
/// (measured: about 300 k keys fit the default 4 MB × 2 hash memory).
const HASH_BYTES_PER_KEY: f64 = 28.0;

/// Changed rows per root from which a window counts as wide: about every
/// root matches, so one pass over the roots beats collecting the changed
/// rows (measured: at 0.42 changed rows per root `UnionIn` still counts 3×
/// faster than `Exists`; at 5, `Exists` is the fastest).
const WIDE: f64 = 1.0;

/// Changed rows per root from which a first page is found faster by
/// walking the roots in key order than by collecting every changed row.
const STREAM_PAGE: f64 = 0.2;

impl Window {
    /// How many changed keys `UnionIn`'s hashed subplan holds in memory.
    fn hashable_rows(&self) -> f64 {
        self.hash_bytes / HASH_BYTES_PER_KEY
    }

    /// Changed rows (summed over the change columns) per root row.
    fn density(&self) -> f64 {
        self.changed_rows / self.root_rows.max(1.0)
    }
}

/// `Auto`'s rule for the since family. The planner's costs are reported as
/// evidence but do not decide: on the measured grid they picked a strategy
/// 3–50× slower than the best in half the cells (the `OR` of `EXISTS`
/// subplans and the hashed `IN` are costed far from what they do).
///
/// - a count (or every row) of a **narrow** window collects the few changed
///   rows through the change-column indexes: `UnionIn` while they fit its
///   hashed subplan in `work_mem × hash_mem_multiplier`, `SemiJoin` (no such
///   cliff) past that;
/// - a count of a **wide** window (as many changed rows as roots): one
///   pass over the roots with an index probe per path (`Exists`);
/// - a first page of a narrow window: `Exists` (probes roots in key order
///   and the few changed rows are found as fast either way); of a wider
///   window: `OrJoins`, whose merge joins stream roots in key order and stop
///   after the page (when the key is the root's primary key; `Exists`
///   otherwise).
fn decide(w: &Window, shape: Shape) -> (SinceStrategy, String) {
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
        Shape::Page { .. } if density >= STREAM_PAGE && w.key_is_pk => (
            SinceStrategy::OrJoins,
            format!("a wide window ({stats}): merge joins stream the roots in key order and stop after the page"),
        ),
        Shape::Page { .. } => (
            SinceStrategy::Exists,
            format!("a page ({stats}): probe the roots in key order and stop after the page"),
        ),
        _ if density >= WIDE => (
            SinceStrategy::Exists,
            format!("a wide window ({stats}): one pass over the roots with an index probe per path"),
        ),
        _ if w.changed_rows < w.hashable_rows() => (
            SinceStrategy::UnionIn,
            format!("a narrow window ({stats}): collect the changed rows through their indexes into one hashed IN"),
        ),
        _ => (
            SinceStrategy::SemiJoin,
            format!(
                "a narrow window ({stats}), but more changed rows than the hashed IN holds in memory (~{:.0}): a semi-join has no such cliff",
                w.hashable_rows()
            ),
        ),
    }
}

/// Per change column (`$1` quoted tables, `$2` columns, `$3` naive flags,
/// `$4` the window start as epoch seconds in each column's own clock): the
/// table's OID, whether `$5` is its one-column primary key, the session's
/// hash memory in bytes, the table's rows and the fraction of them at or
/// after the start, from `pg_stats` (most common values, then the histogram
/// for the rest).
const WINDOW_STATS: &str = "
SELECT col.ord::int8,
       coalesce(c.oid::int8, 0),
       EXISTS (SELECT 1 FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
               WHERE i.indrelid = c.oid AND i.indisprimary AND i.indnkeyatts = 1 AND a.attname = $5),
       (SELECT setting::float8 * 1024 FROM pg_settings WHERE name = 'work_mem')
         * current_setting('hash_mem_multiplier')::float8,
       CASE WHEN c.reltuples < 0 THEN 'NaN'::float8 ELSE c.reltuples::float8 END,
       CASE WHEN s.attname IS NULL THEN 'NaN'::float8 ELSE
         (SELECT coalesce(sum(m.f), 0) FROM unnest(s.most_common_vals::text::text[], s.most_common_freqs) AS m(v, f)
           WHERE CASE WHEN col.naive THEN extract(epoch FROM m.v::timestamp)
                      ELSE extract(epoch FROM m.v::timestamptz) END >= col.at)
         + (1 - s.null_frac - coalesce((SELECT sum(f) FROM unnest(s.most_common_freqs) AS f), 0))
           * coalesce((SELECT count(*) FILTER (WHERE CASE WHEN col.naive THEN extract(epoch FROM h.v::timestamp)
                                                            ELSE extract(epoch FROM h.v::timestamptz) END >= col.at)::float8
                              / nullif(count(*), 0)
                       FROM unnest(s.histogram_bounds::text::text[]) AS h(v)), 0)
       END::float8
FROM unnest($1::text[], $2::text[], $3::bool[], $4::float8[]) WITH ORDINALITY AS col(rel, att, naive, at, ord)
LEFT JOIN pg_class c ON c.oid = to_regclass(col.rel)
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
LEFT JOIN pg_stats s ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = col.att
ORDER BY col.ord";

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
}

fn text_array(items: Vec<String>) -> Value {
    Value::Array(
        String::ARRAY_TYPE,
        Some(Box::new(
            items.into_iter().map(String::into_value).collect(),
        )),
    )
}

impl<K: SqlType> SinceQuery<K> {
    /// Every change column the query compares with `since`: the root's,
    /// then each path's.
    fn change_columns(&self) -> Vec<&ChangeColumn> {
        std::iter::once(&self.graph.root_change)
            .chain(self.graph.paths.iter().map(|p| &p.change))
            .collect()
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
            naive.push(Value::Bool(Some(is_naive)));
            let t = if is_naive {
                self.since.naive.and_utc().timestamp_micros()
            } else {
                self.since.utc.timestamp_micros()
            };
            at.push(Value::Double(Some(t as f64 / 1e6)));
        }
        let q = BuiltQuery::fixed_with(
            WINDOW_STATS,
            [
                text_array(rels),
                text_array(atts),
                Value::Array(bool::ARRAY_TYPE, Some(Box::new(naive))),
                Value::Array(f64::ARRAY_TYPE, Some(Box::new(at))),
                self.graph.key.name().as_str().to_owned().into_value(),
            ],
        );
        let rows = db.query(&q).await?;
        let mut w = Window {
            fraction: Some(0.0),
            changed_rows: 0.0,
            root_rows: f64::NAN,
            root_oid: 0,
            key_is_pk: false,
            hash_bytes: f64::NAN,
        };
        for row in &rows {
            let ord: i64 = row.try_get(0usize.into())?;
            let oid: i64 = row.try_get(1usize.into())?;
            let key_is_pk: bool = row.try_get(2usize.into())?;
            w.hash_bytes = row.try_get(3usize.into())?;
            let rows: f64 = row.try_get(4usize.into())?;
            let fraction: f64 = row.try_get(5usize.into())?;
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
            Shape::Count => q.count_query(),
            Shape::Page { limit } => q.page_query(&PageRequest::new(limit))?,
            Shape::All => q.build(),
        })
    }

    /// What [`SinceStrategy::Auto`] chooses for `shape`, and why, using the
    /// [global cache](StrategyCache::global). Explains the candidates
    /// (nothing runs) on a cache miss; reads the window's statistics
    /// (one catalog query) every time, to find the selectivity bucket.
    ///
    /// # Errors
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
        check_shape(shape)?;
        let reference = self.shape_query(SinceStrategy::UnionIn, shape)?;
        self.choose(cache, db, shape, &reference, |s| self.shape_query(s, shape))
            .await
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
            let exact = exact_key("since", shape, reference);
            if let Some(hit) = cache.lookup_exact(&exact) {
                return Ok(hit);
            }
            let window = self.window(db).await?;
            let bucket = fraction_bucket(window.fraction);
            let key = cache_key("since", window.root_oid, reference.sql(), shape, bucket);
            cache.remember_exact(exact, key.clone());
            cache
                .get_or_decide(key, async {
                    let mut queries = Vec::new();
                    for s in SinceStrategy::ALL {
                        queries.push((s, build(s)?));
                    }
                    let candidates = estimate_all(db, queries).await?;
                    let (strategy, reason) = decide(&window, shape);
                    Ok(Choice {
                        strategy,
                        shape,
                        bucket,
                        reason,
                        candidates,
                        statistics: vec![
                            Statistic::new("root_rows", window.root_rows),
                            Statistic::new("window_fraction", window.fraction.unwrap_or(f64::NAN)),
                            Statistic::new("changed_rows", window.changed_rows),
                            Statistic::new("hashable_rows", window.hashable_rows()),
                            Statistic::new(
                                "key_is_primary_key",
                                f64::from(u8::from(window.key_is_pk)),
                            ),
                        ],
                        cached: false,
                        decided_in: Default::default(),
                    })
                })
                .await
        }
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
        if self.strategy != SinceStrategy::Auto {
            return Ok(self.clone());
        }
        let choice = self.explain_choice(db, shape).await?;
        Ok(self.clone().strategy(choice.strategy))
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
    /// The database's error.
    pub async fn count<E: Executor>(&self, db: &E) -> Result<i64>
    where
        K: CursorKey,
    {
        let q = self.resolve(db, Shape::Count).await?;
        db.query_one(&q.count_query()).await?.try_get(0usize.into())
    }
}
