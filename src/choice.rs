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
//! - **catalog state**: whether an index leads with a probed column,
//!   whether a denormalized column exists and its triggers are installed
//!   and enabled.
//!
//! The decision is cached per spec, shape, **selectivity bucket** (the
//! estimated fraction of matching rows, rounded to a power of two) and
//! **catalog state** (a digest of the involved tables' indexes, triggers and
//! columns) for a time to live, so the `EXPLAIN`s are paid once per bucket
//! and state: a cached decision costs one small catalog query (the catalog
//! state, and the bucket when the exact query is new) and a map lookup.
//! Creating or dropping an index, or installing, uninstalling or disabling
//! triggers, is seen by the next decision; see [`StrategyCache`].
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
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use sea_query::{Expr, Value};

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
    /// The median wall time measured on the database, for a
    /// [calibrated](DecidedBy::Calibrated) decision.
    pub median: Option<Duration>,
}

impl<S> Estimate<S> {
    pub(crate) fn rejected(strategy: S, why: impl Into<String>) -> Estimate<S> {
        Estimate {
            strategy,
            cost: None,
            rows: None,
            plan: None,
            rejected: Some(why.into()),
            median: None,
        }
    }

    pub(crate) fn chosen(strategy: S) -> Estimate<S> {
        Estimate {
            strategy,
            cost: None,
            rows: None,
            plan: None,
            rejected: None,
            median: None,
        }
    }

    pub(crate) fn from_plan(strategy: S, plan: &Plan) -> Estimate<S> {
        Estimate {
            strategy,
            cost: Some(plan.root.total_cost),
            rows: Some(plan.root.plan_rows),
            plan: Some(describe(working_node(&plan.root))),
            rejected: None,
            median: None,
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

/// What kind of number a [`Statistic`] is, which says how it prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatKind {
    /// A count of rows, groups or values: printed as a whole number.
    Count,
    /// A ratio (rows per entity, …): three significant digits.
    Ratio,
    /// A fraction of rows (`0.04`): printed as a percentage (`4 %`).
    Fraction,
    /// Yes or no, stored as `1.0` or `0.0`.
    Flag,
    /// A number of bytes: printed as `8 MiB`.
    Bytes,
}

/// One number the decision looked at (`history_rows`, `window_fraction`, …).
///
/// `Display` prints it as `name = value` with its [`StatKind`]'s rounding:
///
/// ```
/// # use pgpatterns::{Statistic, StatKind};
/// let s = Statistic::new("entities_with_history", 19738.000143170357, StatKind::Count);
/// assert_eq!(s.to_string(), "entities_with_history = 19738");
/// assert_eq!(Statistic::new("fk_index", 1.0, StatKind::Flag).to_string(), "fk_index = yes");
/// ```
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Statistic {
    /// What it is.
    pub name: &'static str,
    /// Its value (`NaN` when the statistic is missing: a table never
    /// analysed); flags are `1.0` (yes) or `0.0` (no).
    pub value: f64,
    /// What kind of number it is.
    pub kind: StatKind,
}

impl Statistic {
    /// A statistic of `kind`.
    #[must_use]
    pub fn new(name: &'static str, value: f64, kind: StatKind) -> Statistic {
        Statistic { name, value, kind }
    }

    /// A [`StatKind::Count`].
    pub(crate) fn count(name: &'static str, value: f64) -> Statistic {
        Statistic::new(name, value, StatKind::Count)
    }

    /// A [`StatKind::Ratio`].
    pub(crate) fn ratio(name: &'static str, value: f64) -> Statistic {
        Statistic::new(name, value, StatKind::Ratio)
    }

    /// A [`StatKind::Fraction`].
    pub(crate) fn fraction(name: &'static str, value: f64) -> Statistic {
        Statistic::new(name, value, StatKind::Fraction)
    }

    /// A [`StatKind::Flag`].
    pub(crate) fn flag(name: &'static str, value: bool) -> Statistic {
        Statistic::new(name, if value { 1.0 } else { 0.0 }, StatKind::Flag)
    }

    /// A [`StatKind::Bytes`].
    pub(crate) fn bytes(name: &'static str, value: f64) -> Statistic {
        Statistic::new(name, value, StatKind::Bytes)
    }
}

impl fmt::Display for Statistic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} = ", self.name)?;
        let v = self.value;
        if !v.is_finite() {
            return f.write_str(if v.is_nan() {
                "unknown (no statistics)"
            } else {
                "unbounded"
            });
        }
        match self.kind {
            StatKind::Count => write!(f, "{v:.0}"),
            StatKind::Ratio => f.write_str(&significant(v, 3)),
            StatKind::Fraction => write!(f, "{} %", significant(v * 100.0, 3)),
            StatKind::Flag => f.write_str(if v != 0.0 { "yes" } else { "no" }),
            StatKind::Bytes => f.write_str(&human_bytes(v)),
        }
    }
}

/// `v` to `digits` significant digits, without trailing zeros (whole
/// numbers of more digits are not rounded: `19738`, `2.33`, `0.0413`).
fn significant(v: f64, digits: i32) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor() as i32;
    let decimals = (digits - 1 - magnitude).clamp(0, 17);
    // Halves round away from zero (6.25 → 6.3), as people round.
    let scale = 10f64.powi(decimals);
    let v = (v * scale).round() / scale;
    let decimals = decimals as usize;
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.truncate(s.trim_end_matches('0').trim_end_matches('.').len());
    }
    s
}

/// `8 MiB`, `1.5 GiB`, `512 bytes`.
fn human_bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if v.abs() < 1024.0 {
        return format!("{v:.0} bytes");
    }
    let mut x = v / 1024.0;
    let mut unit = 0;
    while x.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        x /= 1024.0;
        unit += 1;
    }
    format!("{} {}", significant(x, 3), UNITS[unit])
}

/// A percentage for people: `6.3`, `25`, `0.39` (two significant digits).
fn percent(p: f64) -> String {
    significant(p, 2)
}

/// The selectivity bucket in words: `3.1–6.3 % of rows match`.
fn bucket_words(b: i32) -> String {
    if b >= 0 {
        return "all rows match".to_owned();
    }
    if b <= -27 {
        return "almost no rows match".to_owned();
    }
    let low = 2f64.powi(b) * 100.0;
    let high = 2f64.powi(b + 1) * 100.0;
    format!("{}–{} % of rows match", percent(low), percent(high))
}

/// `0.0234 ms`, `12.3 ms`, `1.5 s` (three significant digits).
fn human_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 1000.0 {
        format!("{} ms", significant(ms, 3))
    } else {
        format!("{} s", significant(ms / 1e3, 3))
    }
}

/// How long ago: `41 s`, `3 min`, `2 h`.
fn human_age(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        1..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

/// How a [`Choice`] was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecidedBy {
    /// The family's rule, from catalog statistics (and, for some
    /// families, the planner's estimates): no candidate ran.
    Rule,
    /// Measured on this database by a family's `calibrate`: every
    /// candidate ran under a time bound, the answers were checked equal and
    /// the fastest median over interleaved rounds won. Kept in the cache
    /// past its time to live, until the catalog state it was measured under
    /// changes.
    Calibrated {
        /// The rounds the winner was timed in: the configured rounds, plus
        /// any a close call added ([`Calibration::close_calls`](crate::Calibration::close_calls)).
        rounds: usize,
    },
}

/// An `Auto` decision and its evidence. Made by each family's
/// `explain_choice` (or `calibrate`).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Choice<S> {
    /// The chosen concrete strategy.
    pub strategy: S,
    /// The shape it was chosen for.
    pub shape: Shape,
    /// The selectivity bucket: `floor(log2(estimated fraction of matching
    /// rows))` (`0` = most rows, `-8` ≈ 1/256), or `None` when the family
    /// has no selectivity input or statistics are missing. `Display` says
    /// it in percent ("3.1–6.3 % of rows match").
    pub bucket: Option<i32>,
    /// Why, in one sentence.
    pub reason: String,
    /// Every candidate, with its estimate or why it was skipped.
    pub candidates: Vec<Estimate<S>>,
    /// The table statistics the decision used.
    pub statistics: Vec<Statistic>,
    /// Whether a rule decided, or a measurement.
    pub decided_by: DecidedBy,
    /// Whether the decision came from the cache.
    pub cached: bool,
    /// How long the decision took when it was made (the cost of a cache miss).
    pub decided_in: Duration,
    /// For a cached decision, how long this call took to find it: the
    /// catalog query that checks the decision still holds, and the lookup.
    /// Zero when the decision was made by this call.
    pub looked_up_in: Duration,
    /// For a cached decision, how old it was when this call found it. Zero
    /// when the decision was made by this call.
    pub age: Duration,
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
            write!(f, " ({})", bucket_words(b))?;
        }
        writeln!(f, ": {}", self.reason)?;
        match self.decided_by {
            DecidedBy::Rule => writeln!(f, "  decided by: rule")?,
            DecidedBy::Calibrated { rounds } => writeln!(
                f,
                "  decided by: calibration (measured here, the winner timed in {rounds} rounds)"
            )?,
        }
        for s in &self.statistics {
            writeln!(f, "  {s}")?;
        }
        for c in &self.candidates {
            match (&c.rejected, c.median, c.cost) {
                (Some(why), _, _) => writeln!(f, "  {:?}: ruled out, {why}", c.strategy)?,
                (None, Some(m), _) => writeln!(
                    f,
                    "  {:?}: median {}{}",
                    c.strategy,
                    human_duration(m),
                    c.plan
                        .as_deref()
                        .map(|p| format!(", {p}"))
                        .unwrap_or_default()
                )?,
                (None, None, Some(cost)) => writeln!(
                    f,
                    "  {:?}: cost {cost:.0}, rows {:.0}, {}",
                    c.strategy,
                    c.rows.unwrap_or(f64::NAN),
                    c.plan.as_deref().unwrap_or("?")
                )?,
                (None, None, None) => writeln!(f, "  {:?}: chosen", c.strategy)?,
            }
        }
        if self.cached {
            write!(
                f,
                "  cached (looked up in {}; decided {} ago in {})",
                human_duration(self.looked_up_in),
                human_age(self.age),
                human_duration(self.decided_in)
            )
        } else {
            write!(f, "  decided in {}", human_duration(self.decided_in))
        }
    }
}

/// Locks the cache. A panic while holding the lock leaves only a
/// half-written map of decisions, which are all recomputable: keep going.
fn relock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A 128-bit digest of some text (two SipHash-1-3 under keys drawn at
/// random for each cache) and its length: what the cache keys by, so a
/// query's values are never kept, however large.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Digest {
    a: u64,
    b: u64,
    len: u64,
}

/// Streams formatted text into both hashers, so a large `Debug` of bound
/// values is digested without being stored.
struct Digester {
    a: std::hash::DefaultHasher,
    b: std::hash::DefaultHasher,
    len: u64,
}

impl fmt::Write for Digester {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.a.write(s.as_bytes());
        self.b.write(s.as_bytes());
        self.len += s.len() as u64;
        Ok(())
    }
}

/// What the catalog said, when a decision was made, about the tables it
/// depends on: their OIDs, relfilenodes and attribute counts, their
/// indexes (with `indisvalid`/`indisready`) and triggers (with
/// `tgenabled` and the function they run), digested by the server
/// ([`catalog_state!`]), plus any family state (whether a denormalized
/// column is maintained). A cached decision is used only while the catalog
/// still says the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Catalog(String);

impl Catalog {
    /// The state of `md5` (the server's digest of the tables, `None` when
    /// no table is involved) and `extra` (family state).
    pub(crate) fn new(md5: Option<&str>, extra: impl fmt::Display) -> Catalog {
        Catalog(format!("{}|{extra}", md5.unwrap_or("-")))
    }
}

/// The server's digest of the catalog state of the tables whose quoted
/// names are the `text[]` placeholder `$p` ([`Catalog`]): one scalar
/// subquery over `pg_class`, `pg_index` and `pg_trigger`, all probed by
/// their OID indexes.
macro_rules! catalog_state {
    ($p:literal) => {
        concat!(
            "(SELECT md5(string_agg(format('%s/%s/%s/[%s]/[%s]', c.oid, c.relfilenode, c.relnatts,
        (SELECT string_agg(format('%s:%s:%s', i.indexrelid, i.indisvalid, i.indisready), ',' ORDER BY i.indexrelid)
           FROM pg_index i WHERE i.indrelid = c.oid),
        (SELECT string_agg(format('%s:%s:%s', g.oid, g.tgenabled, g.tgfoid), ',' ORDER BY g.oid)
           FROM pg_trigger g WHERE g.tgrelid = c.oid)), ';' ORDER BY t.ord))
  FROM unnest(",
            $p,
            "::text[]) WITH ORDINALITY AS t(name, ord)
  LEFT JOIN pg_class c ON c.oid = to_regclass(t.name))"
        )
    };
}
pub(crate) use catalog_state;

/// [`catalog_state!`] as an expression over `tables`.
pub(crate) fn catalog_expr(tables: &[&Table]) -> Expr {
    Expr::cust_with_exprs(
        catalog_state!("$1"),
        [Expr::val(String::array_value(tables_text(tables)))],
    )
}

/// The quoted names of `tables`, each once, in order.
pub(crate) fn tables_text(tables: &[&Table]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(tables.len());
    for t in tables {
        let q = quote_table(t);
        if !out.contains(&q) {
            out.push(q);
        }
    }
    out
}

/// A decision, type-erased (`Choice<S>`), with when it was made.
struct Decision {
    at: Instant,
    seq: u64,
    bytes: usize,
    /// A measured decision, kept past the time to live, and what exporting
    /// it writes.
    pinned: Option<Pinned>,
    choice: Arc<dyn Any + Send + Sync>,
}

/// What an exported calibrated decision says: enough to use it again in
/// another process, for the query whose identity it carries.
#[derive(Debug, Clone)]
struct Pinned {
    identity: Arc<str>,
    strategy: String,
    shape: Shape,
    bucket: Option<i32>,
    rounds: usize,
    reason: String,
}

/// What exactly one query (SQL text and values) was decided under.
struct Memo {
    at: Instant,
    /// When the catalog last confirmed the decision (a run verb trusts it
    /// without a catalog read for [`StrategyCache::recheck`] after).
    checked: Instant,
    seq: u64,
    bytes: usize,
    key: Digest,
    /// The text the key digests: stable across processes, so a calibrated
    /// decision can be exported and imported under it.
    identity: Arc<str>,
    catalog: Catalog,
}

/// An entry of the insertion order, oldest first.
#[derive(Debug, Clone, Copy)]
enum Slot {
    Decision(Digest),
    Memo(Digest),
}

/// The cache's maps, their insertion order and byte accounting.
#[derive(Default)]
struct Inner {
    decisions: HashMap<Digest, Decision>,
    exact: HashMap<Digest, Memo>,
    order: BTreeMap<u64, Slot>,
    next: u64,
    bytes: usize,
}

/// What an entry costs besides its own contents: its key, bookkeeping and
/// a share of the maps' slack.
const ENTRY_OVERHEAD: usize = 2 * std::mem::size_of::<Digest>()
    + std::mem::size_of::<(u64, Slot)>()
    + std::mem::size_of::<Decision>()
    + 48;

impl Inner {
    fn remove(&mut self, slot: Slot) {
        let removed = match slot {
            Slot::Decision(k) => self.decisions.remove(&k).map(|d| (d.seq, d.bytes)),
            Slot::Memo(k) => self.exact.remove(&k).map(|m| (m.seq, m.bytes)),
        };
        if let Some((seq, bytes)) = removed {
            self.order.remove(&seq);
            self.bytes -= bytes;
        }
    }

    fn seq(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Evicts the oldest entries until at most `max` bytes are kept.
    fn shrink(&mut self, max: usize) {
        while self.bytes > max {
            let Some((_, slot)) = self.order.pop_first() else {
                break;
            };
            let bytes = match slot {
                Slot::Decision(k) => self.decisions.remove(&k).map(|d| d.bytes),
                Slot::Memo(k) => self.exact.remove(&k).map(|m| m.bytes),
            };
            self.bytes -= bytes.unwrap_or(0);
        }
    }

    fn insert_decision(
        &mut self,
        key: Digest,
        at: Instant,
        bytes: usize,
        pinned: Option<Pinned>,
        choice: Arc<dyn Any + Send + Sync>,
    ) {
        self.remove(Slot::Decision(key));
        let seq = self.seq();
        self.order.insert(seq, Slot::Decision(key));
        self.bytes += bytes;
        self.decisions.insert(
            key,
            Decision {
                at,
                seq,
                bytes,
                pinned,
                choice,
            },
        );
    }

    fn insert_memo(
        &mut self,
        exact: Digest,
        at: Instant,
        key: Digest,
        identity: Arc<str>,
        catalog: Catalog,
    ) {
        self.remove(Slot::Memo(exact));
        let seq = self.seq();
        let bytes =
            ENTRY_OVERHEAD + std::mem::size_of::<Memo>() + catalog.0.capacity() + identity.len();
        self.order.insert(seq, Slot::Memo(exact));
        self.bytes += bytes;
        self.exact.insert(
            exact,
            Memo {
                at,
                checked: at,
                seq,
                bytes,
                key,
                identity,
                catalog,
            },
        );
    }
}

/// Cached `Auto` decisions, keyed by spec, shape, selectivity bucket and
/// the catalog state they depend on, each kept for a time to live.
/// [`StrategyCache::global`] is the one the families use unless given
/// another (`explain_choice_with`).
///
/// **Catalog changes take effect at once for `explain_choice`, and within
/// a second for run verbs.** `Auto` reads a cheap digest of the catalog
/// state of the tables its decision depends on:
/// their indexes (created, dropped, or made valid by `CREATE INDEX
/// CONCURRENTLY`), their triggers (installed, dropped, enabled, disabled),
/// their columns and relfilenodes. A decision made under another state is
/// not used: creating the advised index, or uninstalling a denormalized
/// column's triggers, changes the very next `explain_choice`.
///
/// **A remembered decision costs no extra round trip.** Checking the
/// catalog costs about 0.4 ms of server time — as much as a first page
/// itself. So when a run verb (`count`, `fetch_page`) of the latest or
/// since family meets a query decided before, it runs the remembered
/// strategy without any catalog read if the catalog confirmed that
/// decision less than [`recheck`](Self::recheck) ago (1 s by default);
/// otherwise it sends the statement together with the catalog check
/// (pipelined on one connection) and returns the answer once the check
/// confirms the decision. If the check shows a change, that answer is
/// dropped (every strategy only reads) and the query is decided again. A
/// new index therefore changes run verbs' decisions within `recheck`.
/// Strategies that read a trigger-maintained column (`Denormalized`,
/// `Tracked`) are never trusted so: they run only after the check, in the
/// same call, says the column's triggers are installed and enabled, at one
/// round trip more. Rollup reports check first, then run.
///
/// **Statistics are trusted for the time to live.** Table statistics change
/// as data does; a decision older than the time to live is made again.
/// Call [`clear`](Self::clear) after a bulk load or `ANALYZE` that should
/// change decisions sooner.
///
/// **Bounded by size.** Keys are 128-bit digests of the SQL text and
/// values (the values themselves are never kept), and the cache keeps at
/// most [`max_bytes`](Self::max_bytes) bytes by its own accounting
/// ([`bytes`](Self::bytes); [`DEFAULT_CACHE_BYTES`] unless set with
/// [`with_max_bytes`](Self::with_max_bytes)), evicting the oldest entries
/// first.
///
/// If the same spec runs against several databases or schemas
/// (`search_path`) whose data differ, give each its own cache
/// (`explain_choice_with`), or their decisions mix — which costs speed,
/// never correctness: every strategy returns the same rows (the
/// `Denormalized` strategy is chosen only when the catalog says its column
/// is maintained, whatever the cache holds).
pub struct StrategyCache {
    ttl: Duration,
    /// [`recheck`](Self::recheck) in nanoseconds (settable on the global
    /// cache).
    recheck: AtomicU64,
    max_bytes: usize,
    hash_keys: (RandomState, RandomState),
    inner: Mutex<Inner>,
}

impl fmt::Debug for StrategyCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.lock();
        f.debug_struct("StrategyCache")
            .field("ttl", &self.ttl)
            .field("recheck", &self.recheck())
            .field("max_bytes", &self.max_bytes)
            .field("decisions", &inner.decisions.len())
            .field("queries", &inner.exact.len())
            .field("bytes", &inner.bytes)
            .finish()
    }
}

/// The global cache's time to live.
pub const DEFAULT_CHOICE_TTL: Duration = Duration::from_secs(300);

/// How long a run verb trusts a decision the catalog confirmed, without
/// reading the catalog again: 1 second ([`StrategyCache::with_recheck`]).
pub const DEFAULT_RECHECK: Duration = Duration::from_secs(1);

/// `d` in nanoseconds, saturating.
fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The default bound on a cache's size, by its own accounting: 4 MiB, some
/// ten thousand decisions.
pub const DEFAULT_CACHE_BYTES: usize = 4 << 20;

static GLOBAL: LazyLock<StrategyCache> = LazyLock::new(|| StrategyCache::new(DEFAULT_CHOICE_TTL));

impl StrategyCache {
    /// An empty cache whose decisions expire after `ttl`, holding at most
    /// [`DEFAULT_CACHE_BYTES`].
    #[must_use]
    pub fn new(ttl: Duration) -> StrategyCache {
        StrategyCache {
            ttl,
            recheck: AtomicU64::new(nanos(DEFAULT_RECHECK)),
            max_bytes: DEFAULT_CACHE_BYTES,
            hash_keys: (RandomState::new(), RandomState::new()),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// This cache holding at most `max_bytes` bytes (by its own accounting
    /// of its entries), evicting the oldest entries first.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pgpatterns::StrategyCache;
    ///
    /// let cache = StrategyCache::new(Duration::from_secs(60)).with_max_bytes(256 << 10);
    /// assert_eq!(cache.max_bytes(), 256 << 10);
    /// assert_eq!(cache.bytes(), 0);
    /// ```
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: usize) -> StrategyCache {
        self.max_bytes = max_bytes;
        self
    }

    /// This cache with run verbs trusting a decision for `recheck` after
    /// the catalog last confirmed it, without reading the catalog
    /// ([`DEFAULT_RECHECK`] unless set). `Duration::ZERO` reads the catalog
    /// on every call. Only decisions about speed are trusted so:
    /// `Denormalized` and `Tracked` read a trigger-maintained column and
    /// run only after the catalog says, in the same call, that its triggers
    /// are installed and enabled. `explain_choice` always reads the
    /// catalog.
    ///
    /// ```
    /// use std::time::Duration;
    /// use pgpatterns::StrategyCache;
    ///
    /// let cache = StrategyCache::new(Duration::from_secs(300)).with_recheck(Duration::ZERO);
    /// assert_eq!(cache.recheck(), Duration::ZERO);
    /// ```
    #[must_use]
    pub fn with_recheck(self, recheck: Duration) -> StrategyCache {
        self.set_recheck(recheck);
        self
    }

    /// Sets [`recheck`](Self::recheck) on a cache in use, e.g.
    /// `StrategyCache::global().set_recheck(Duration::ZERO)` for run verbs
    /// that read the catalog on every call.
    pub fn set_recheck(&self, recheck: Duration) {
        self.recheck.store(nanos(recheck), Ordering::Relaxed);
    }

    /// How long a run verb trusts a confirmed decision without reading the
    /// catalog ([`with_recheck`](Self::with_recheck)).
    #[must_use]
    pub fn recheck(&self) -> Duration {
        Duration::from_nanos(self.recheck.load(Ordering::Relaxed))
    }

    /// The process-wide cache ([`DEFAULT_CHOICE_TTL`], [`DEFAULT_RECHECK`],
    /// [`DEFAULT_CACHE_BYTES`]).
    #[must_use]
    pub fn global() -> &'static StrategyCache {
        &GLOBAL
    }

    /// The time to live.
    #[must_use]
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The bound on [`bytes`](Self::bytes).
    #[must_use]
    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    /// The bytes the entries take, by the cache's own accounting (keys,
    /// bookkeeping, and each decision's reason, candidates and statistics).
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Forgets every decision.
    pub fn clear(&self) {
        let mut inner = self.lock();
        *inner = Inner {
            next: inner.next,
            ..Inner::default()
        };
    }

    /// How many entries are kept: decisions, and the queries remembered to
    /// point at them (expired ones included until replaced or evicted).
    #[must_use]
    pub fn len(&self) -> usize {
        let inner = self.lock();
        inner.decisions.len() + inner.exact.len()
    }

    /// Whether no entry is kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        relock(&self.inner)
    }

    /// The digest of `text`.
    fn digest(&self, text: fmt::Arguments<'_>) -> Digest {
        let mut d = Digester {
            a: self.hash_keys.0.build_hasher(),
            b: self.hash_keys.1.build_hasher(),
            len: 0,
        };
        // Writing into a hasher cannot fail; formatting user values could
        // only by a broken `Debug`, which then digests what was written.
        let _ = fmt::Write::write_fmt(&mut d, text);
        Digest {
            a: d.a.finish(),
            b: d.b.finish(),
            len: d.len,
        }
    }

    /// Reads the decision kept under `key` while it holds (within the time
    /// to live, or pinned): `read` gets it and its age.
    fn with_decision<T>(
        &self,
        key: &Digest,
        read: impl FnOnce(&Decision, Duration) -> Option<T>,
    ) -> Option<T> {
        let inner = self.lock();
        let d = inner.decisions.get(key)?;
        let age = d.at.elapsed();
        if age > self.ttl && d.pinned.is_none() {
            return None;
        }
        read(d, age)
    }

    fn lookup<S: StrategyName>(&self, key: &Digest) -> Option<Choice<S>> {
        self.with_decision(key, |d, age| {
            let mut hit = match d.choice.downcast_ref::<Choice<S>>() {
                Some(c) => c.clone(),
                // Imported: made of the exported text.
                None => d.pinned.as_ref()?.to_choice::<S>()?,
            };
            hit.cached = true;
            hit.age = age;
            Some(hit)
        })
    }

    fn store<S: StrategyName>(&self, key: Digest, choice: &Choice<S>, pinned: Option<Pinned>) {
        let bytes = ENTRY_OVERHEAD
            + choice.heap_bytes()
            + pinned
                .as_ref()
                .map_or(0, |p| p.identity.len() + p.reason.len() + p.strategy.len());
        let mut inner = self.lock();
        inner.insert_decision(key, Instant::now(), bytes, pinned, Arc::new(choice.clone()));
        inner.shrink(self.max_bytes);
    }

    /// Keeps a measured decision for exactly the query `recall` stands for,
    /// under the key its last decision used, past the time to live, in
    /// place of whatever was decided. `false` when the cache no longer
    /// remembers that query (then nothing is kept).
    pub(crate) fn pin<S: StrategyName>(&self, recall: &Recall, choice: &Choice<S>) -> bool {
        let found = self
            .lock()
            .exact
            .get(&recall.exact)
            .map(|m| (m.key, m.identity.clone()));
        let Some((key, identity)) = found else {
            return false;
        };
        let rounds = match choice.decided_by {
            DecidedBy::Calibrated { rounds } => rounds,
            DecidedBy::Rule => 0,
        };
        let pinned = Pinned {
            identity,
            strategy: format!("{:?}", choice.strategy),
            shape: choice.shape,
            bucket: choice.bucket,
            rounds,
            reason: choice.reason.clone(),
        };
        self.store(key, choice, Some(pinned));
        true
    }

    /// How many kept decisions were [calibrated](DecidedBy::Calibrated)
    /// (measured here or imported).
    #[must_use]
    pub fn calibrated(&self) -> usize {
        self.lock()
            .decisions
            .values()
            .filter(|d| d.pinned.is_some())
            .count()
    }

    /// The calibrated decisions as text, to keep across restarts and load
    /// with [`import_calibrations`](Self::import_calibrations): one line per
    /// decision, naming the query (a stable digest of its SQL text, its
    /// table, shape and selectivity bucket), the catalog state it was
    /// measured under, and the winning strategy. No bound value is written.
    ///
    /// ```
    /// use pgpatterns::StrategyCache;
    /// let cache = StrategyCache::global();
    /// let text = cache.export_calibrations();
    /// assert!(text.starts_with("pgpatterns calibrations 1\n"));
    /// let restored = StrategyCache::new(cache.ttl());
    /// assert_eq!(restored.import_calibrations(&text)?, cache.calibrated());
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    #[must_use]
    pub fn export_calibrations(&self) -> String {
        let inner = self.lock();
        let mut out = String::from(CALIBRATIONS_HEADER);
        out.push('\n');
        for slot in inner.order.values() {
            let Slot::Decision(k) = slot else { continue };
            let Some(p) = inner.decisions.get(k).and_then(|d| d.pinned.as_ref()) else {
                continue;
            };
            out.push_str(&p.to_line());
            out.push('\n');
        }
        out
    }

    /// Loads decisions written by
    /// [`export_calibrations`](Self::export_calibrations) (of this or
    /// another process) and returns how many. Each applies to the query it
    /// names only while the catalog state it was measured under still
    /// holds; afterwards that query is decided by rule again.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] (field `"calibrations"`) for text that is not
    /// such an export, naming the line; nothing is loaded then.
    pub fn import_calibrations(&self, text: &str) -> Result<usize> {
        let mut lines = text.lines();
        if lines.next() != Some(CALIBRATIONS_HEADER) {
            return Err(Error::spec(
                "calibrations",
                format!("the text does not start with {CALIBRATIONS_HEADER:?}"),
            ));
        }
        let pins = lines
            .enumerate()
            .filter(|(_, l)| !l.is_empty())
            .map(|(i, l)| {
                Pinned::from_line(l).ok_or_else(|| {
                    Error::spec("calibrations", format!("line {} is malformed", i + 2))
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let n = pins.len();
        for p in pins {
            let key = self.digest(format_args!("{}", p.identity));
            let bytes = ENTRY_OVERHEAD + p.identity.len() + p.reason.len() + p.strategy.len();
            let mut inner = self.lock();
            inner.insert_decision(key, Instant::now(), bytes, Some(p), Arc::new(()));
            inner.shrink(self.max_bytes);
        }
        Ok(n)
    }

    /// Where exactly this query (SQL text and values, in `family` and
    /// `shape`) stands: whether a decision was made for it before, and
    /// under which catalog state. No SQL runs.
    pub(crate) fn recall(
        &self,
        family: &'static str,
        shape: Shape,
        reference: &BuiltQuery,
    ) -> Recall {
        let exact = self.digest(format_args!(
            "{family}\u{1f}{}\u{1f}{reference:?}",
            shape.key()
        ));
        let (remembered, confirmed) = {
            let inner = self.lock();
            match inner.exact.get(&exact) {
                Some(m) if m.at.elapsed() <= self.ttl => (
                    Some((m.key, m.catalog.clone())),
                    m.checked.elapsed() <= self.recheck(),
                ),
                _ => (None, false),
            }
        };
        Recall {
            started: Instant::now(),
            exact,
            family,
            shape,
            sql: stable_digest(reference.sql()),
            remembered,
            confirmed,
        }
    }

    /// The decision made before for exactly this query, if the catalog
    /// still says `now` what it said then, and the decision is kept.
    pub(crate) fn remembered<S: StrategyName>(
        &self,
        recall: &Recall,
        now: &Catalog,
    ) -> Option<Choice<S>> {
        let (key, then) = recall.remembered.as_ref()?;
        if then != now {
            return None;
        }
        let mut hit = self.lookup::<S>(key)?;
        if let Some(m) = self.lock().exact.get_mut(&recall.exact) {
            m.checked = Instant::now();
        }
        hit.looked_up_in = recall.started.elapsed();
        Some(hit)
    }

    /// The strategy decided before for exactly the query `recall` stands
    /// for, whatever the catalog says now: what [`speculate`] runs while it
    /// checks the catalog.
    pub(crate) fn peek<S: StrategyName>(&self, recall: &Recall) -> Option<S> {
        let (key, _) = recall.remembered.as_ref()?;
        // The strategy alone: a run verb's hot path clones no `Choice`.
        self.with_decision(key, |d, _| match d.choice.downcast_ref::<Choice<S>>() {
            Some(c) => Some(c.strategy),
            None => S::from_name(&d.pinned.as_ref()?.strategy),
        })
    }

    /// The decision key of a query on the table `table_oid` (the same SQL
    /// text names other tables under another `search_path`) in selectivity
    /// `bucket` under `catalog`, remembered for the next time exactly this
    /// query comes.
    pub(crate) fn key_for(
        &self,
        recall: Recall,
        table_oid: i64,
        bucket: Option<i32>,
        catalog: Catalog,
    ) -> Digest {
        let bucket = bucket.map_or_else(|| "-".to_owned(), |b| b.to_string());
        let identity: Arc<str> = Arc::from(format!(
            "{}\u{1f}{table_oid}\u{1f}{}\u{1f}{bucket}\u{1f}{}\u{1f}{}",
            recall.family,
            recall.shape.key(),
            recall.sql,
            catalog.0
        ));
        let key = self.digest(format_args!("{identity}"));
        let mut inner = self.lock();
        inner.insert_memo(recall.exact, Instant::now(), key, identity, catalog);
        inner.shrink(self.max_bytes);
        key
    }

    /// The cached choice for `key`, or `decide()`'s, stored. `started` is
    /// when the call began ([`Recall::started`]): a cached choice reports
    /// the time since as its lookup time.
    pub(crate) async fn get_or_decide<S, F>(
        &self,
        key: Digest,
        started: Instant,
        decide: F,
    ) -> Result<Choice<S>>
    where
        S: StrategyName,
        F: std::future::Future<Output = Result<Choice<S>>>,
    {
        if let Some(mut hit) = self.lookup::<S>(&key) {
            hit.looked_up_in = started.elapsed();
            return Ok(hit);
        }
        let deciding = Instant::now();
        let mut choice = decide.await?;
        choice.decided_in = deciding.elapsed();
        choice.cached = false;
        choice.looked_up_in = Duration::ZERO;
        choice.age = Duration::ZERO;
        self.store(key, &choice, None);
        Ok(choice)
    }
}

/// The first line of [`StrategyCache::export_calibrations`].
const CALIBRATIONS_HEADER: &str = "pgpatterns calibrations 1";

/// A 128-bit digest of `text` that every process computes alike (two
/// FNV-1a hashes with the crate's fixed seeds), in hex.
fn stable_digest(text: &str) -> String {
    let (a, b) = crate::page::hash128(text.as_bytes());
    format!("{a:016x}{b:016x}")
}

/// The strategy enums, named as `Debug` prints them (how calibrated
/// decisions are exported).
pub(crate) trait StrategyName:
    fmt::Debug + Copy + PartialEq + Send + Sync + 'static
{
    /// Every strategy a decision can name.
    const NAMED: &'static [Self];

    /// The strategy `Debug` prints as `name`.
    fn from_name(name: &str) -> Option<Self> {
        Self::NAMED
            .iter()
            .copied()
            .find(|s| format!("{s:?}") == name)
    }
}

impl Pinned {
    fn to_line(&self) -> String {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let shape = match self.shape {
            Shape::Count => "count".to_owned(),
            Shape::All => "all".to_owned(),
            Shape::Page { limit } => format!("page:{limit}"),
        };
        let bucket = self
            .bucket
            .map_or_else(|| "-".to_owned(), |b| b.to_string());
        format!(
            "{}\t{shape}\t{bucket}\t{}\t{}\t{}",
            b64.encode(self.identity.as_bytes()),
            self.strategy,
            self.rounds,
            b64.encode(self.reason.as_bytes())
        )
    }

    fn from_line(line: &str) -> Option<Pinned> {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let text = |s: &str| String::from_utf8(b64.decode(s).ok()?).ok();
        let mut f = line.split('\t');
        let identity = text(f.next()?)?;
        let shape = match f.next()? {
            "count" => Shape::Count,
            "all" => Shape::All,
            s => Shape::Page {
                limit: s.strip_prefix("page:")?.parse().ok().filter(|l| *l >= 1)?,
            },
        };
        let bucket = match f.next()? {
            "-" => None,
            b => Some(b.parse().ok()?),
        };
        let strategy = f.next()?.to_owned();
        let rounds = f.next()?.parse().ok()?;
        let reason = text(f.next()?)?;
        if f.next().is_some() || strategy.is_empty() {
            return None;
        }
        Some(Pinned {
            identity: Arc::from(identity),
            strategy,
            shape,
            bucket,
            rounds,
            reason,
        })
    }

    /// The decision as a `Choice` of the family asking (`None` when the
    /// name is not one of its strategies).
    fn to_choice<S: StrategyName>(&self) -> Option<Choice<S>> {
        Some(Choice {
            strategy: S::from_name(&self.strategy)?,
            shape: self.shape,
            bucket: self.bucket,
            reason: format!("{} (calibration loaded from an export)", self.reason),
            candidates: Vec::new(),
            statistics: Vec::new(),
            decided_by: DecidedBy::Calibrated {
                rounds: self.rounds,
            },
            cached: true,
            decided_in: Duration::ZERO,
            looked_up_in: Duration::ZERO,
            age: Duration::ZERO,
        })
    }
}

impl<S> Choice<S> {
    /// The bytes this choice takes, with what it owns on the heap.
    fn heap_bytes(&self) -> usize {
        let strings: usize = self
            .candidates
            .iter()
            .map(|c| {
                c.plan.as_ref().map_or(0, String::capacity)
                    + c.rejected.as_ref().map_or(0, String::capacity)
            })
            .sum();
        std::mem::size_of::<Self>()
            + self.reason.capacity()
            + self.candidates.capacity() * std::mem::size_of::<Estimate<S>>()
            + strings
            + self.statistics.capacity() * std::mem::size_of::<Statistic>()
    }
}

/// A query's standing in the cache ([`StrategyCache::recall`]).
pub(crate) struct Recall {
    /// When the call began (the lookup time of a cached decision counts
    /// from here).
    started: Instant,
    /// family, shape, SQL text and bound values
    exact: Digest,
    family: &'static str,
    shape: Shape,
    /// the SQL text without values, digested the same in every process
    sql: String,
    /// The decision key and catalog state this exact query was decided
    /// under, if it was.
    remembered: Option<(Digest, Catalog)>,
    /// The catalog confirmed that decision less than
    /// [`StrategyCache::recheck`] ago.
    confirmed: bool,
}

impl Recall {
    /// When the call began: [`StrategyCache::recall`] is its first step.
    pub(crate) fn started(&self) -> Instant {
        self.started
    }

    /// Whether exactly this query was decided before (read the catalog
    /// state and try [`StrategyCache::remembered`]).
    pub(crate) fn is_remembered(&self) -> bool {
        self.remembered.is_some()
    }
}

/// Runs both futures at once and returns both outputs: on one
/// tokio-postgres connection their statements are pipelined, so two
/// statements cost one round trip.
pub(crate) async fn join2<A: Future, B: Future>(a: A, b: B) -> (A::Output, B::Output) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    let mut out_a = None;
    let mut out_b = None;
    std::future::poll_fn(|cx| {
        if out_a.is_none() {
            if let Poll::Ready(v) = a.as_mut().poll(cx) {
                out_a = Some(v);
            }
        }
        if out_b.is_none() {
            if let Poll::Ready(v) = b.as_mut().poll(cx) {
                out_b = Some(v);
            }
        }
        if out_a.is_some() && out_b.is_some() {
            if let (Some(a), Some(b)) = (out_a.take(), out_b.take()) {
                return Poll::Ready((a, b));
            }
        }
        Poll::Pending
    })
    .await
}

/// `Auto` for a query decided before, in one round trip: the remembered
/// strategy runs (`run`) at the same time as the catalog check (`catalog`),
/// and its answer is returned when the check confirms the decision — the
/// catalog state is the one it was made under. Within
/// [`StrategyCache::recheck`] of the last confirmation the remembered
/// strategy runs alone, without the check. `None` when the query was
/// not decided before, its decision is one `trusted` refuses to run
/// unchecked (a strategy that reads a trigger-maintained column runs only
/// after the check says the column is maintained), or the check does not
/// confirm it (the answer is dropped; decide again).
///
/// Reads only: every strategy is a `SELECT`, so running one whose decision
/// turns out stale has no effect but its cost.
pub(crate) async fn speculate<S, T, C, R>(
    cache: &StrategyCache,
    recall: &Recall,
    trusted: impl Fn(S) -> bool,
    catalog: C,
    run: impl FnOnce(S) -> R,
) -> Option<Result<T>>
where
    S: StrategyName,
    C: Future<Output = Result<Catalog>>,
    R: Future<Output = Result<T>>,
{
    let strategy = cache.peek::<S>(recall).filter(|&s| trusted(s))?;
    if recall.confirmed {
        return Some(run(strategy).await);
    }
    let (state, out) = join2(catalog, run(strategy)).await;
    match state {
        Err(e) => Some(Err(e)),
        Ok(state) => cache
            .remembered::<S>(recall, &state)
            .filter(|hit| hit.strategy == strategy)
            .map(|_| out),
    }
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
        let rows = db.rows(&q).await?;
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

    /// A statement in flight: started on its first poll, answered on a
    /// later one (as a reply arrives), logging both.
    struct InFlight<'a> {
        name: &'static str,
        log: &'a Mutex<Vec<String>>,
        polls: u8,
    }

    impl Future for InFlight<'_> {
        type Output = &'static str;
        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> Poll<&'static str> {
            self.polls += 1;
            let name = self.name;
            if self.polls == 1 {
                self.log.lock().unwrap().push(format!("send {name}"));
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            self.log.lock().unwrap().push(format!("answer {name}"));
            Poll::Ready(name)
        }
    }

    #[test]
    fn join2_has_both_statements_in_flight_at_once() {
        let log = Mutex::new(Vec::new());
        let a = InFlight {
            name: "catalog",
            log: &log,
            polls: 0,
        };
        let b = InFlight {
            name: "query",
            log: &log,
            polls: 0,
        };
        let out = crate::exec::block_on(join2(a, b));
        assert_eq!(out, ("catalog", "query"));
        assert_eq!(
            *log.lock().unwrap(),
            [
                "send catalog",
                "send query",
                "answer catalog",
                "answer query"
            ],
            "the query is sent before the catalog check is answered"
        );
    }

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

    fn choice(strategy: u8) -> Choice<u8> {
        Choice {
            strategy,
            shape: Shape::Count,
            bucket: None,
            reason: "test".into(),
            candidates: vec![],
            statistics: vec![],
            decided_by: crate::choice::DecidedBy::Rule,
            cached: false,
            decided_in: Duration::ZERO,
            looked_up_in: Duration::ZERO,
            age: Duration::ZERO,
        }
    }

    #[test]
    fn statistics_print_by_kind() {
        let shown = |s: Statistic| s.to_string();
        assert_eq!(
            shown(Statistic::count(
                "entities_with_history",
                19738.000143170357
            )),
            "entities_with_history = 19738"
        );
        assert_eq!(
            shown(Statistic::ratio("history_per_entity", 2.333_333)),
            "history_per_entity = 2.33"
        );
        assert_eq!(shown(Statistic::ratio("r", 42.0)), "r = 42");
        assert_eq!(shown(Statistic::ratio("r", 0.5)), "r = 0.5");
        assert_eq!(shown(Statistic::ratio("r", 1234.56)), "r = 1235");
        assert_eq!(
            shown(Statistic::fraction("window_fraction", 0.041345499628460215)),
            "window_fraction = 4.13 %"
        );
        assert_eq!(
            shown(Statistic::fraction("groups_per_row", 0.0005)),
            "groups_per_row = 0.05 %"
        );
        assert_eq!(shown(Statistic::flag("fk_index", true)), "fk_index = yes");
        assert_eq!(
            shown(Statistic::flag("key_is_primary_key", false)),
            "key_is_primary_key = no"
        );
        assert_eq!(
            shown(Statistic::bytes("hash_memory", 8.0 * 1024.0 * 1024.0)),
            "hash_memory = 8 MiB"
        );
        assert_eq!(shown(Statistic::bytes("b", 1536.0)), "b = 1.5 KiB");
        assert_eq!(shown(Statistic::bytes("b", 100.0)), "b = 100 bytes");
        assert_eq!(
            shown(Statistic::count("history_rows", f64::NAN)),
            "history_rows = unknown (no statistics)"
        );
    }

    /// The tests name strategies by small numbers.
    impl StrategyName for u8 {
        const NAMED: &'static [u8] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    }

    impl StrategyName for u16 {
        const NAMED: &'static [u16] = &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9];
    }

    #[test]
    fn exported_lines_read_back() {
        let p = Pinned {
            identity: Arc::from("latest\u{1f}123\u{1f}count\u{1f}-5\u{1f}ab\u{1f}x|y"),
            strategy: "Lateral".into(),
            shape: Shape::Page { limit: 50 },
            bucket: Some(-5),
            rounds: 5,
            reason: "tabs\tand\nnewlines".into(),
        };
        let line = p.to_line();
        assert!(!line.contains('\n'));
        let q = Pinned::from_line(&line).unwrap();
        assert_eq!(
            (
                &*q.identity,
                q.strategy.as_str(),
                q.shape,
                q.bucket,
                q.rounds,
                q.reason.as_str()
            ),
            (
                &*p.identity,
                "Lateral",
                p.shape,
                p.bucket,
                5,
                p.reason.as_str()
            )
        );
        for bad in [
            "",
            "a\tb",
            &format!("{line}\textra"),
            &line.replace("page:50", "page:0"),
        ] {
            assert!(Pinned::from_line(bad).is_none(), "{bad}");
        }
        let c: Choice<crate::LatestStrategy> = q.to_choice().unwrap();
        assert_eq!(c.strategy, crate::LatestStrategy::Lateral);
        assert_eq!(c.decided_by, DecidedBy::Calibrated { rounds: 5 });
        assert!(
            q.to_choice::<crate::SinceStrategy>().is_none(),
            "not a since strategy"
        );
        assert_eq!(stable_digest("SELECT 1"), stable_digest("SELECT 1"));
        assert_ne!(stable_digest("SELECT 1"), stable_digest("SELECT 2"));
    }

    #[test]
    fn selectivity_reads_as_a_percentage() {
        assert_eq!(bucket_words(0), "all rows match");
        assert_eq!(bucket_words(-1), "50–100 % of rows match");
        assert_eq!(bucket_words(-5), "3.1–6.3 % of rows match");
        assert_eq!(bucket_words(-9), "0.2–0.39 % of rows match");
        assert_eq!(bucket_words(-40), "almost no rows match");
    }

    #[test]
    fn choice_report_reads_plainly() {
        let mut c = choice(3);
        c.shape = Shape::Page { limit: 50 };
        c.bucket = Some(-5);
        c.statistics = vec![
            Statistic::count("history_rows", 59214.99),
            Statistic::flag("fk_index", true),
        ];
        c.candidates = vec![Estimate::chosen(3), Estimate::rejected(4, "slower")];
        c.decided_in = Duration::from_micros(12_340);
        assert_eq!(
            c.to_string(),
            "Auto chose 3 for a page of 50 (3.1–6.3 % of rows match): test\n  \
             decided by: rule\n  \
             history_rows = 59215\n  fk_index = yes\n  3: chosen\n  4: ruled out, slower\n  \
             decided in 12.3 ms"
        );
        let mut measured = c.clone();
        measured.decided_by = DecidedBy::Calibrated { rounds: 5 };
        measured.candidates[0].median = Some(Duration::from_micros(1_500));
        let text = measured.to_string();
        assert!(
            text.contains("decided by: calibration (measured here, the winner timed in 5 rounds)")
                && text.contains("3: median 1.5 ms"),
            "{text}"
        );
        c.cached = true;
        c.looked_up_in = Duration::from_micros(23);
        c.age = Duration::from_secs(41);
        assert!(
            c.to_string()
                .ends_with("\n  cached (looked up in 0.023 ms; decided 41 s ago in 12.3 ms)"),
            "{c}"
        );
        assert!(!c.to_string().contains("~2^"));
    }

    /// A cached decision carries this lookup's time and its age, not the
    /// time it took to decide.
    #[test]
    fn cached_choices_report_their_lookup() {
        use crate::exec::block_on;
        let cache = StrategyCache::new(Duration::from_secs(60));
        let q = BuiltQuery::fixed("SELECT 1");
        let recall = cache.recall("f", Shape::Count, &q);
        let started = recall.started();
        let key = cache.key_for(recall, 1, None, state("a"));
        let decide = || {
            std::thread::sleep(Duration::from_millis(20));
            Ok(choice(1))
        };
        let first = block_on(cache.get_or_decide(key, started, async { decide() })).unwrap();
        assert!(!first.cached);
        assert!(first.decided_in >= Duration::from_millis(20));
        assert_eq!(
            (first.looked_up_in, first.age),
            (Duration::ZERO, Duration::ZERO)
        );
        std::thread::sleep(Duration::from_millis(5));

        let recall = cache.recall("f", Shape::Count, &q);
        let hit = cache.remembered::<u8>(&recall, &state("a")).expect("seen");
        assert!(hit.cached);
        assert_eq!(hit.decided_in, first.decided_in);
        assert!(hit.looked_up_in < Duration::from_millis(20), "{hit:?}");
        assert!(hit.age >= Duration::from_millis(5), "{hit:?}");
        let again =
            block_on(cache.get_or_decide::<u8, _>(key, Instant::now(), async { unreachable!() }))
                .unwrap();
        assert!(again.cached && again.looked_up_in < Duration::from_millis(20));
        assert!(
            again.to_string().contains("cached (looked up in "),
            "{again}"
        );
    }

    fn state(s: &str) -> Catalog {
        Catalog::new(Some(s), false)
    }

    #[test]
    fn exact_queries_find_their_decision_under_the_same_catalog_only() {
        let cache = StrategyCache::new(Duration::from_secs(60));
        let q = |v: i64| BuiltQuery::fixed_with("SELECT $1", [v.into_value()]);
        let recall = cache.recall("f", Shape::Count, &q(1));
        assert!(!recall.is_remembered(), "an empty cache has seen nothing");
        let key = cache.key_for(recall, 42, Some(-2), state("a"));
        cache.store(key, &choice(3), None);
        let recall = cache.recall("f", Shape::Count, &q(1));
        assert!(recall.is_remembered());
        let hit = cache.remembered::<u8>(&recall, &state("a")).expect("seen");
        assert_eq!((hit.strategy, hit.cached), (3, true));
        // The catalog changed: not this decision.
        assert!(cache.remembered::<u8>(&recall, &state("b")).is_none());
        // Other values, shape or family: not the same query.
        assert!(!cache.recall("f", Shape::Count, &q(2)).is_remembered());
        assert!(!cache.recall("f", Shape::All, &q(1)).is_remembered());
        assert!(!cache.recall("g", Shape::Count, &q(1)).is_remembered());
        // Other values, same SQL, table, bucket and catalog: the same key;
        // another catalog state, table or bucket: another key.
        let same = cache.key_for(
            cache.recall("f", Shape::Count, &q(2)),
            42,
            Some(-2),
            state("a"),
        );
        assert_eq!(same, key);
        for (oid, bucket, cat) in [
            (42, Some(-2), "b"),
            (43, Some(-2), "a"),
            (42, Some(-3), "a"),
        ] {
            let other = cache.key_for(
                cache.recall("f", Shape::Count, &q(2)),
                oid,
                bucket,
                state(cat),
            );
            assert_ne!(other, key, "{oid} {bucket:?} {cat}");
        }
        assert_eq!(cache.len(), 1 + 2, "one decision, two queries remembered");
    }

    #[test]
    fn cache_expires_and_keys_separate() {
        let cache = StrategyCache::new(Duration::from_millis(30));
        let key = cache.digest(format_args!("one"));
        cache.store(key, &choice(7), None);
        assert_eq!(cache.lookup::<u8>(&key).map(|c| c.strategy), Some(7));
        // Another type under the same key is a miss, not a panic.
        assert!(cache.lookup::<u16>(&key).is_none());
        assert!(cache
            .lookup::<u8>(&cache.digest(format_args!("two")))
            .is_none());
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.lookup::<u8>(&key).is_none());
        assert_eq!(cache.len(), 1);
        cache.clear();
        assert!(cache.is_empty());
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn digests_cover_the_whole_text() {
        let cache = StrategyCache::new(Duration::from_secs(60));
        let big = "x".repeat(200_000);
        let a = cache.digest(format_args!("{big}a"));
        let b = cache.digest(format_args!("{big}b"));
        assert_ne!(a, b);
        assert_eq!(a, cache.digest(format_args!("{big}a")));
        assert_eq!(a.len, 200_001);
    }

    /// Many specs with large values: the cache holds digests, never the
    /// values, and evicts the oldest entries to stay under its bound.
    #[test]
    fn large_values_stay_under_the_byte_bound() {
        let max = 64 << 10;
        let cache = StrategyCache::new(Duration::from_secs(60)).with_max_bytes(max);
        assert_eq!(
            StrategyCache::new(Duration::ZERO).max_bytes(),
            DEFAULT_CACHE_BYTES
        );
        let value = "v".repeat(200_000);
        let mut first = None;
        for i in 0..400 {
            // as distinct specs: other SQL text each time, 200 kB values
            let sql: &'static str = Box::leak(format!("SELECT $1, {i}").into_boxed_str());
            let q = BuiltQuery::fixed_with(sql, [format!("{value}{i}").into_value()]);
            let recall = cache.recall("f", Shape::Count, &q);
            let key = cache.key_for(recall, 1, None, state("a"));
            let mut c = choice((i % 250) as u8);
            c.reason = format!("reason {i} {}", "r".repeat(100));
            cache.store(key, &c, None);
            assert!(cache.bytes() <= max, "{} > {max} after {i}", cache.bytes());
            first.get_or_insert(q);
        }
        // len() counts what is held, and the accounting adds up.
        let inner = cache.lock();
        assert_eq!(cache_len(&inner), inner.order.len());
        let accounted: usize = inner.decisions.values().map(|d| d.bytes).sum::<usize>()
            + inner.exact.values().map(|m| m.bytes).sum::<usize>();
        assert_eq!(accounted, inner.bytes);
        assert!(inner.decisions.len() > 50, "{}", inner.decisions.len());
        assert!(inner.decisions.len() < 400, "{}", inner.decisions.len());
        drop(inner);
        assert_eq!(cache.len(), cache_len(&cache.lock()));
        // The oldest were evicted, the newest kept.
        let first = first.unwrap();
        assert!(!cache.recall("f", Shape::Count, &first).is_remembered());
        // One entry larger than the bound is not kept at all.
        let tiny = StrategyCache::new(Duration::from_secs(60)).with_max_bytes(100);
        let key = tiny.digest(format_args!("k"));
        tiny.store(key, &choice(1), None);
        assert!(tiny.is_empty() && tiny.bytes() == 0);
    }

    fn cache_len(inner: &Inner) -> usize {
        inner.decisions.len() + inner.exact.len()
    }
}
