//! Automatic strategy choice: the evidence behind an `Auto` strategy, and
//! the cache that keeps the decision.
//!
//! Every family has an `Auto` strategy ([`LatestStrategy::Auto`],
//! [`SinceStrategy::Auto`], [`RollupStrategy::Auto`]). With a database at
//! hand (`count`, `fetch_page`, `fetch`, `resolve`, `explain_choice`) it
//! picks a concrete strategy for the query's [`Shape`] from the live
//! database, without running the candidates:
//!
//! - **table statistics** (`pg_class.reltuples`, `pg_stats`): how long the
//!   histories are, how selective a time window or a status is, whether an
//!   index leads with the column a strategy probes;
//! - **planner estimates**: a plain `EXPLAIN` (nothing runs) of each
//!   candidate, whose costs are reported as evidence (they rank the
//!   strategies wrongly too often to decide alone), and for rollups the
//!   planner's estimates of the input rows and of each dimension's distinct
//!   values.
//!
//! The decision is cached per spec, shape and **selectivity bucket** (the
//! estimated fraction of matching rows, rounded to a power of two) for a
//! time to live, so the `EXPLAIN`s are paid once per bucket: a cached
//! decision costs one small catalog query (the bucket) and a map lookup.
//! [`Choice`] is the decision with its evidence, and prints as a short
//! report.
//!
//! Without a database (`build`, `count_query`, `page_query`), `Auto` uses a
//! fixed rule of thumb per shape, documented on each family's `Auto`.
//!
//! [`LatestStrategy::Auto`]: crate::LatestStrategy::Auto
//! [`SinceStrategy::Auto`]: crate::SinceStrategy::Auto
//! [`RollupStrategy::Auto`]: crate::RollupStrategy::Auto

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sea_query::Value;

use crate::ddl::quote_table;
use crate::explain::{Plan, PlanNode};
use crate::schema::{AnyColumn, Table};
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Executor, Result, RowRead};

/// The shape of query a strategy is chosen for: the best strategy for a
/// count is often not the best for a first page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Shape {
    /// `SELECT COUNT(*)` of the matching rows.
    Count,
    /// One keyset page of at most `limit` rows, in key order.
    Page {
        /// The page size.
        limit: i64,
    },
    /// Every matching row.
    All,
}

impl Shape {
    /// The cache's view of the shape: page sizes share a decision within a
    /// power of two.
    fn key(&self) -> String {
        match self {
            Shape::Count => "count".into(),
            Shape::All => "all".into(),
            Shape::Page { limit } => format!("page~2^{}", log2_bucket(*limit as f64)),
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Shape::Count => f.write_str("count"),
            Shape::All => f.write_str("all rows"),
            Shape::Page { limit } => write!(f, "page of {limit}"),
        }
    }
}

/// `floor(log2(x))`, clamped to `-64..=64` (`0` for non-positive or non-finite `x`).
fn log2_bucket(x: f64) -> i32 {
    if x > 0.0 && x.is_finite() {
        x.log2().floor().clamp(-64.0, 64.0) as i32
    } else {
        0
    }
}

/// What the planner said about one candidate strategy, or why it was not
/// considered.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Estimate<S> {
    /// The candidate.
    pub strategy: S,
    /// The planner's total cost (`None` when not explained).
    pub cost: Option<f64>,
    /// The planner's estimated rows of the top node.
    pub rows: Option<f64>,
    /// What the plan does: the first node below any `Aggregate`, `Limit`,
    /// `Gather` or `Sort` at the top (`Hash Join`, `Index Scan on …`).
    pub plan: Option<String>,
    /// Why the candidate was ruled out without comparing costs, when it was.
    pub rejected: Option<String>,
}

impl<S> Estimate<S> {
    pub(crate) fn rejected(strategy: S, why: impl Into<String>) -> Estimate<S> {
        Estimate {
            strategy,
            cost: None,
            rows: None,
            plan: None,
            rejected: Some(why.into()),
        }
    }

    pub(crate) fn chosen(strategy: S) -> Estimate<S> {
        Estimate {
            strategy,
            cost: None,
            rows: None,
            plan: None,
            rejected: None,
        }
    }

    pub(crate) fn from_plan(strategy: S, plan: &Plan) -> Estimate<S> {
        Estimate {
            strategy,
            cost: Some(plan.root.total_cost),
            rows: Some(plan.root.plan_rows),
            plan: Some(describe(working_node(&plan.root))),
            rejected: None,
        }
    }
}

/// The first node under wrappers that do not say how rows are found.
pub(crate) fn working_node(root: &PlanNode) -> &PlanNode {
    let mut node = root;
    while matches!(
        node.node_type.as_str(),
        "Aggregate" | "Limit" | "Gather" | "Gather Merge" | "Sort" | "Incremental Sort" | "Result"
    ) {
        match node.children.first() {
            Some(child) => node = child,
            None => break,
        }
    }
    node
}

/// `Index Only Scan on order_status using order_status_latest`, or the node type.
pub(crate) fn describe(node: &PlanNode) -> String {
    let mut s = node.node_type.clone();
    if let Some(rel) = &node.relation {
        s.push_str(" on ");
        s.push_str(rel);
    }
    if let Some(index) = &node.index {
        s.push_str(" using ");
        s.push_str(index);
    }
    s
}

/// One number the decision looked at (`history_rows`, `window_fraction`, …).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Statistic {
    /// What it is.
    pub name: &'static str,
    /// Its value (`NaN` when the statistic is missing: a table never
    /// analysed).
    pub value: f64,
}

impl Statistic {
    pub(crate) fn new(name: &'static str, value: f64) -> Statistic {
        Statistic { name, value }
    }
}

/// An `Auto` decision and its evidence. Made by each family's
/// `explain_choice`.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Choice<S> {
    /// The chosen concrete strategy.
    pub strategy: S,
    /// The shape it was chosen for.
    pub shape: Shape,
    /// The selectivity bucket: `floor(log2(estimated fraction of matching
    /// rows))` (`0` = most rows, `-8` ≈ 1/256), or `None` when the family
    /// has no selectivity input or statistics are missing.
    pub bucket: Option<i32>,
    /// Why, in one sentence.
    pub reason: String,
    /// Every candidate, with its estimate or why it was skipped.
    pub candidates: Vec<Estimate<S>>,
    /// The table statistics the decision used.
    pub statistics: Vec<Statistic>,
    /// Whether the decision came from the cache.
    pub cached: bool,
    /// How long the decision took when it was made (the cost of a cache miss).
    pub decided_in: Duration,
}

impl<S: fmt::Debug> fmt::Display for Choice<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let article = if self.shape == Shape::All { "" } else { "a " };
        write!(
            f,
            "Auto chose {:?} for {article}{}",
            self.strategy, self.shape
        )?;
        if let Some(b) = self.bucket {
            write!(f, " (selectivity ~2^{b})")?;
        }
        writeln!(f, ": {}", self.reason)?;
        for s in &self.statistics {
            writeln!(f, "  {} = {}", s.name, s.value)?;
        }
        for c in &self.candidates {
            match (&c.rejected, c.cost) {
                (Some(why), _) => writeln!(f, "  {:?}: ruled out, {why}", c.strategy)?,
                (None, Some(cost)) => writeln!(
                    f,
                    "  {:?}: cost {cost:.0}, rows {:.0}, {}",
                    c.strategy,
                    c.rows.unwrap_or(f64::NAN),
                    c.plan.as_deref().unwrap_or("?")
                )?,
                (None, None) => writeln!(f, "  {:?}: chosen", c.strategy)?,
            }
        }
        write!(
            f,
            "  decided in {:.2} ms{}",
            self.decided_in.as_secs_f64() * 1e3,
            if self.cached { " (cached)" } else { "" }
        )
    }
}

/// Locks a cache map. A panic while holding the lock leaves only a
/// half-written map of decisions, which are all recomputable: keep going.
fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decisions by key, with when they were made (type-erased `Choice<S>`).
type Decisions = HashMap<String, (Instant, Arc<dyn Any + Send + Sync>)>;

/// Cached `Auto` decisions, keyed by spec, shape and selectivity bucket,
/// each kept for a time to live. [`StrategyCache::global`] is the one the
/// families use unless given another (`explain_choice_with`).
///
/// Table statistics change as data does; a decision older than the time to
/// live is made again. Call [`clear`](Self::clear) after a bulk load,
/// `ANALYZE` or index changes.
///
/// A query repeated with the same SQL text and values reuses its decision
/// without reading statistics. If the same spec runs against several
/// databases or schemas (`search_path`) whose data differ, give each its
/// own cache (`explain_choice_with`), or their decisions mix — which costs
/// speed, never correctness: every strategy returns the same rows.
pub struct StrategyCache {
    ttl: Duration,
    entries: Mutex<Decisions>,
    /// Exact query (SQL and values) → the decision's key: a repeated query
    /// finds its decision without reading any statistics.
    exact: Mutex<HashMap<String, (Instant, String)>>,
}

impl fmt::Debug for StrategyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StrategyCache")
            .field("ttl", &self.ttl)
            .field("entries", &self.len())
            .finish()
    }
}

/// The global cache's time to live.
pub const DEFAULT_CHOICE_TTL: Duration = Duration::from_secs(300);

static GLOBAL: LazyLock<StrategyCache> = LazyLock::new(|| StrategyCache::new(DEFAULT_CHOICE_TTL));

impl StrategyCache {
    /// An empty cache whose decisions expire after `ttl`.
    pub fn new(ttl: Duration) -> StrategyCache {
        StrategyCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
            exact: Mutex::new(HashMap::new()),
        }
    }

    /// The process-wide cache ([`DEFAULT_CHOICE_TTL`]).
    pub fn global() -> &'static StrategyCache {
        &GLOBAL
    }

    /// The time to live.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Forgets every decision.
    pub fn clear(&self) {
        self.lock().clear();
        relock(&self.exact).clear();
    }

    /// How many decisions are kept (expired ones included until replaced).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no decision is kept.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Decisions> {
        relock(&self.entries)
    }

    fn lookup<S: Clone + Send + Sync + 'static>(&self, key: &str) -> Option<Choice<S>> {
        let entries = self.lock();
        let (at, value) = entries.get(key)?;
        if at.elapsed() > self.ttl {
            return None;
        }
        value.downcast_ref::<Choice<S>>().cloned()
    }

    fn store<S: Clone + Send + Sync + 'static>(&self, key: String, choice: &Choice<S>) {
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| at.elapsed() <= ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), Arc::new(choice.clone())));
    }

    /// The decision already made for exactly this query (SQL text and
    /// values, in `family` and `shape`), if it has not expired: no
    /// statistics are read. Otherwise what keys a new decision, once the
    /// caller has read the table's OID and the selectivity bucket
    /// ([`key_for`](Self::key_for)).
    pub(crate) fn seen<S: Clone + Send + Sync + 'static>(
        &self,
        family: &'static str,
        shape: Shape,
        reference: &BuiltQuery,
    ) -> std::result::Result<Choice<S>, Unseen> {
        let exact = format!("{family}\u{1f}{}\u{1f}{reference:?}", shape.key());
        let key = {
            let map = relock(&self.exact);
            match map.get(&exact) {
                Some((at, key)) if at.elapsed() <= self.ttl => Some(key.clone()),
                _ => None,
            }
        };
        match key.and_then(|key| self.lookup::<S>(&key)) {
            Some(mut hit) => {
                hit.cached = true;
                Ok(hit)
            }
            None => Err(Unseen {
                exact,
                family,
                shape,
                fingerprint: reference.sql().to_owned(),
            }),
        }
    }

    /// The decision key of an [`Unseen`] query on the table `table_oid`
    /// (the same SQL text names other tables under another `search_path`)
    /// in selectivity `bucket`, remembered for the next time exactly this
    /// query comes.
    pub(crate) fn key_for(&self, unseen: Unseen, table_oid: i64, bucket: Option<i32>) -> String {
        let key = cache_key(
            unseen.family,
            table_oid,
            &unseen.fingerprint,
            unseen.shape,
            bucket,
        );
        let mut map = relock(&self.exact);
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(unseen.exact, (Instant::now(), key.clone()));
        key
    }

    /// The cached choice for `key`, or `decide()`'s, stored.
    pub(crate) async fn get_or_decide<S, F>(&self, key: String, decide: F) -> Result<Choice<S>>
    where
        S: Clone + Send + Sync + 'static,
        F: std::future::Future<Output = Result<Choice<S>>>,
    {
        if let Some(mut hit) = self.lookup::<S>(&key) {
            hit.cached = true;
            return Ok(hit);
        }
        let started = Instant::now();
        let mut choice = decide.await?;
        choice.decided_in = started.elapsed();
        choice.cached = false;
        self.store(key, &choice);
        Ok(choice)
    }

    /// [`get_or_decide`](Self::get_or_decide) for blocking clients.
    pub(crate) fn get_or_decide_blocking<S, F>(&self, key: String, decide: F) -> Result<Choice<S>>
    where
        S: Clone + Send + Sync + 'static,
        F: FnOnce() -> Result<Choice<S>>,
    {
        if let Some(mut hit) = self.lookup::<S>(&key) {
            hit.cached = true;
            return Ok(hit);
        }
        let started = Instant::now();
        let mut choice = decide()?;
        choice.decided_in = started.elapsed();
        choice.cached = false;
        self.store(key, &choice);
        Ok(choice)
    }
}

/// A bound on the cache's size: decisions are per spec *shape*, so a
/// program has a few dozen; this only stops a runaway generator of specs.
const MAX_ENTRIES: usize = 4096;

/// The cache key: family, the OID of the spec's main table (the same SQL
/// text names other tables under another `search_path`), spec fingerprint
/// (SQL text without values), shape and bucket.
fn cache_key(
    family: &str,
    table_oid: i64,
    fingerprint: &str,
    shape: Shape,
    bucket: Option<i32>,
) -> String {
    let bucket = bucket.map_or_else(|| "-".to_owned(), |b| b.to_string());
    format!(
        "{family}\u{1f}{table_oid}\u{1f}{}\u{1f}{bucket}\u{1f}{fingerprint}",
        shape.key()
    )
}

/// A query whose exact text and values have no decision yet
/// ([`StrategyCache::seen`]).
pub(crate) struct Unseen {
    /// family, shape, SQL text and bound values
    exact: String,
    family: &'static str,
    shape: Shape,
    /// the SQL text without values
    fingerprint: String,
}

/// Rejects page sizes below 1 before any SQL runs.
pub(crate) fn check_shape(shape: Shape) -> Result<()> {
    if let Shape::Page { limit } = shape {
        Error::at_least("limit", limit, 1)?;
    }
    Ok(())
}

/// The selectivity bucket of an estimated fraction of matching rows.
pub(crate) fn fraction_bucket(fraction: Option<f64>) -> Option<i32> {
    fraction
        .filter(|f| f.is_finite())
        .map(|f| log2_bucket(f.clamp(1e-12, 1.0)))
}

/// Catalog statistics of one table and some of its columns.
#[derive(Debug, Clone, Default)]
pub(crate) struct TableStats {
    /// `pg_class.reltuples` (`NaN` when never analysed or vacuumed).
    pub rows: f64,
    /// Per asked column, in order.
    pub columns: Vec<ColumnStats>,
}

/// `pg_stats` of one column, and whether an index leads with it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ColumnStats {
    /// Distinct values: `pg_stats.n_distinct` resolved against the row
    /// count (`NaN` without statistics).
    pub distinct: f64,
    /// A valid index has this column as its first key.
    pub leading_index: bool,
}

/// One row per asked column: reltuples, name, null_frac, n_distinct, whether an
/// index leads with it. `$1` the quoted table name, `$2` the column names.
const TABLE_STATS: &str = "
SELECT CASE WHEN c.reltuples < 0 THEN 'NaN'::float8 ELSE c.reltuples::float8 END,
       col.name,
       coalesce(s.null_frac::float8, 'NaN'::float8),
       coalesce(s.n_distinct::float8, 'NaN'::float8),
       EXISTS (SELECT 1 FROM pg_index i
               JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
               WHERE i.indrelid = c.oid AND i.indisvalid AND a.attname = col.name)
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN unnest($2::text[]) WITH ORDINALITY AS col(name, ord)
LEFT JOIN pg_stats s
       ON s.schemaname = n.nspname AND s.tablename = c.relname AND s.attname = col.name
WHERE c.oid = to_regclass($1)
ORDER BY col.ord";

impl TableStats {
    /// Reads the statistics of `table` and `columns`. A table the catalog
    /// does not know gives `NaN`s (the query itself will then fail with the
    /// database's error, which is the better message).
    pub(crate) async fn load<E: Executor>(
        db: &E,
        table: &Table,
        columns: &[&AnyColumn],
    ) -> Result<TableStats> {
        let names: Vec<String> = columns
            .iter()
            .map(|c| c.name().as_str().to_owned())
            .collect();
        let q = BuiltQuery::fixed_with(
            TABLE_STATS,
            [
                quote_table(table).into_value(),
                Value::Array(
                    String::ARRAY_TYPE,
                    Some(Box::new(
                        names.into_iter().map(String::into_value).collect(),
                    )),
                ),
            ],
        );
        let rows = db.query(&q).await?;
        let mut stats = TableStats {
            rows: f64::NAN,
            columns: vec![
                ColumnStats {
                    distinct: f64::NAN,
                    leading_index: false,
                };
                columns.len()
            ],
        };
        for (i, row) in rows.iter().enumerate().take(columns.len()) {
            stats.rows = row.try_get(0usize.into())?;
            let n_distinct: f64 = row.try_get(3usize.into())?;
            stats.columns[i] = ColumnStats {
                // Negative n_distinct is a fraction of the rows.
                distinct: if n_distinct < 0.0 {
                    -n_distinct * stats.rows
                } else {
                    n_distinct
                },
                leading_index: row.try_get(4usize.into())?,
            };
        }
        Ok(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two() {
        assert_eq!(fraction_bucket(Some(1.0)), Some(0));
        assert_eq!(fraction_bucket(Some(0.5)), Some(-1));
        assert_eq!(fraction_bucket(Some(0.3)), Some(-2));
        assert_eq!(fraction_bucket(Some(1.0 / 365.0)), Some(-9));
        assert_eq!(fraction_bucket(Some(0.0)), Some(-40));
        assert_eq!(fraction_bucket(Some(f64::NAN)), None);
        assert_eq!(fraction_bucket(None), None);
        assert_eq!(
            Shape::Page { limit: 50 }.key(),
            Shape::Page { limit: 40 }.key()
        );
        assert_ne!(
            Shape::Page { limit: 50 }.key(),
            Shape::Page { limit: 500 }.key()
        );
    }

    #[test]
    fn exact_queries_find_their_decision_without_statistics() {
        let cache = StrategyCache::new(Duration::from_secs(60));
        let q = |v: i64| BuiltQuery::fixed_with("SELECT $1", [v.into_value()]);
        let Err(unseen) = cache.seen::<u8>("f", Shape::Count, &q(1)) else {
            panic!("an empty cache has seen nothing");
        };
        let key = cache.key_for(unseen, 42, Some(-2));
        assert_eq!(key, cache_key("f", 42, "SELECT $1", Shape::Count, Some(-2)));
        let choice = Choice {
            strategy: 3u8,
            shape: Shape::Count,
            bucket: Some(-2),
            reason: "test".into(),
            candidates: vec![],
            statistics: vec![],
            cached: false,
            decided_in: Duration::ZERO,
        };
        cache.store(key, &choice);
        let hit = cache
            .seen::<u8>("f", Shape::Count, &q(1))
            .ok()
            .expect("seen");
        assert_eq!((hit.strategy, hit.cached), (3, true));
        // Other values, shape or family: not the same query.
        assert!(cache.seen::<u8>("f", Shape::Count, &q(2)).is_err());
        assert!(cache.seen::<u8>("f", Shape::All, &q(1)).is_err());
        assert!(cache.seen::<u8>("g", Shape::Count, &q(1)).is_err());
    }

    #[test]
    fn cache_expires_and_keys_separate() {
        let cache = StrategyCache::new(Duration::from_millis(30));
        let choice = Choice {
            strategy: 7u8,
            shape: Shape::Count,
            bucket: None,
            reason: "test".into(),
            candidates: vec![],
            statistics: vec![],
            cached: false,
            decided_in: Duration::ZERO,
        };
        let key = cache_key("f", 1, "SELECT 1", Shape::Count, None);
        cache.store(key.clone(), &choice);
        assert_eq!(cache.lookup::<u8>(&key).map(|c| c.strategy), Some(7));
        // Another type under the same key is a miss, not a panic.
        assert!(cache.lookup::<u16>(&key).is_none());
        assert!(cache
            .lookup::<u8>(&cache_key("f", 1, "SELECT 1", Shape::Count, Some(-3)))
            .is_none());
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.lookup::<u8>(&key).is_none());
        cache.clear();
        assert!(cache.is_empty());
    }
}
