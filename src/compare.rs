//! Side-by-side strategy comparison: run equivalent queries interleaved,
//! check that they return the same rows, and report their times.
//!
//! Every family builds the same answer several ways (its strategies), and
//! which way is fastest depends on the data and the query shape. [`Compare`]
//! takes labelled queries of any family ([`Contender`]s) and, on a real
//! server:
//!
//! 1. checks the input before any SQL is sent (at least one round, at least
//!    one contender, distinct non-empty labels, no empty statement, valid
//!    compare columns);
//! 2. runs, untimed, `SELECT count(*), COALESCE(sum(hashtextextended(m::text,
//!    0)), 0)::text FROM (<query>) AS m` for each contender — an
//!    order-insensitive hash of its rows — and fails with
//!    [`Error::StrategiesDisagree`] when any contender returns other rows than
//!    the first one; with [`Compare::compare_columns`] only those columns are
//!    hashed (`ROW(m."id", m."latest_status")::text`);
//! 3. asks the planner for each contender's plan ([`explain`]), untimed;
//! 4. runs the [warm-up](Compare::warmup) rounds, then the timed rounds,
//!    **interleaved**: each round runs every contender once, in an order
//!    shuffled afresh each round (deterministically: the same rounds give
//!    the same orders), so none always runs first or always right after the
//!    same other one — a query that follows a slow one can be slower by
//!    itself — and every contender sees the same cache states. A timing is the client's wall time of
//!    [`Executor::rows`]: sending the query and receiving every row.
//!
//! The [`Comparison`] has each contender's timings, median, minimum, ratio to
//! the best median, rows, hash and the top of its plan, and prints as an
//! aligned table.
//!
//! ```no_run
//! # #[cfg(all(feature = "tokio-postgres", feature = "seed"))]
//! # async fn demo(client: tokio_postgres::Client) -> pgpatterns::Result<()> {
//! use pgpatterns::compare::{Compare, Contender};
//! use pgpatterns::seed::orders::OrdersTables;
//! use pgpatterns::LatestStrategy;
//!
//! let spec = OrdersTables::default().latest().status_eq("Complete");
//! let contenders = LatestStrategy::FROM_HISTORY
//!     .into_iter()
//!     .map(|s| Ok(Contender::new(format!("{s:?}"), spec.clone().strategy(s).count_query()?)))
//!     .collect::<pgpatterns::Result<Vec<_>>>()?;
//! let comparison = Compare::new(5).warmup(1).run(&client, &contenders).await?;
//! println!("{comparison}");
//! // strategy    rows  median ms  min ms  × best  plan
//! // DistinctOn  …
//! println!("fastest: {}", comparison.best().label);
//! # Ok(()) }
//! ```
//!
//! Values stay bind parameters: the hashing statement wraps each query's SQL
//! as a subquery and sends the query's own values with it; compare columns
//! are identifiers, quoted like every other name.

use std::collections::HashSet;
use std::fmt;
use std::time::{Duration, Instant};

use serde_json::Value as Json;

use crate::ddl::quote;
use crate::exec::{run_blocking, BlockingExecutor};
use crate::explain::{explain, Plan};
use crate::schema::Ident;
use crate::{BuiltQuery, Error, Executor, Result, RowRead};

/// Alias of the compared query in the hashing statement.
const ALIAS: &str = "pgp_compared";

/// One labelled query to compare: a strategy of a family, a hand-written
/// alternative, anything that returns rows.
///
/// ```
/// use pgpatterns::compare::Contender;
/// use pgpatterns::BuiltQuery;
/// let c = Contender::new("by hand", BuiltQuery::fixed("SELECT 1"));
/// assert_eq!(c.label(), "by hand");
/// assert_eq!(c.query().sql(), "SELECT 1");
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Contender {
    label: String,
    query: BuiltQuery,
}

impl Contender {
    /// A query under a label (unique within one comparison).
    #[must_use]
    pub fn new(label: impl Into<String>, query: BuiltQuery) -> Contender {
        Contender {
            label: label.into(),
            query,
        }
    }

    /// The label.
    #[must_use]
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The query.
    #[must_use]
    pub fn query(&self) -> &BuiltQuery {
        &self.query
    }
}

/// How to compare: timed rounds, warm-up rounds, which columns must agree.
/// See the [module docs](self).
///
/// ```
/// use pgpatterns::compare::Compare;
/// let options = Compare::new(5).warmup(2).compare_columns(["id", "latest_status"]);
/// assert_eq!(options.rounds(), 5);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Compare {
    rounds: usize,
    warmup: usize,
    columns: Vec<String>,
}

impl Compare {
    /// Warm-up rounds unless set otherwise ([`warmup`](Self::warmup)).
    pub const DEFAULT_WARMUP: usize = 1;

    /// The most timed rounds [`run`](Self::run) accepts (each round keeps
    /// one timing per contender).
    pub const MAX_ROUNDS: usize = 100_000;

    /// The most warm-up rounds [`run`](Self::run) accepts.
    pub const MAX_WARMUP: usize = 100_000;

    /// `rounds` timed rounds (checked by [`run`](Self::run): at least one, at
    /// most [`MAX_ROUNDS`](Self::MAX_ROUNDS)),
    /// after [`DEFAULT_WARMUP`](Self::DEFAULT_WARMUP) untimed ones; whole
    /// rows must agree.
    #[must_use]
    pub fn new(rounds: usize) -> Compare {
        Compare {
            rounds,
            warmup: Compare::DEFAULT_WARMUP,
            columns: Vec::new(),
        }
    }

    /// Untimed rounds before the timed ones (interleaved the same way), so
    /// the first timed round does not pay for a cold cache; `0` for none.
    #[must_use]
    pub fn warmup(mut self, rounds: usize) -> Compare {
        self.warmup = rounds;
        self
    }

    /// Only these output columns must agree, not whole rows: for contenders
    /// that return different column sets for the same answer (the
    /// `Denormalized` latest strategy returns `latest_status` but no
    /// `latest_at`). The names are checked by [`run`](Self::run); an empty
    /// list means whole rows.
    #[must_use]
    pub fn compare_columns<I>(mut self, columns: I) -> Compare
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        self.columns = columns.into_iter().map(|c| c.as_ref().to_owned()).collect();
        self
    }

    /// The number of timed rounds.
    #[must_use]
    pub fn rounds(&self) -> usize {
        self.rounds
    }

    /// The statement that counts and hashes the rows of `q` (the untimed
    /// equality check), with `q`'s values.
    ///
    /// ```
    /// use pgpatterns::compare::Compare;
    /// use pgpatterns::{BuiltQuery, SqlType};
    /// let q = BuiltQuery::fixed_with(
    ///     "SELECT id, status FROM orders WHERE status = $1;",
    ///     ["it's".to_owned().into_value()],
    /// );
    /// let whole = Compare::new(3).check_query(&q)?;
    /// assert_eq!(
    ///     whole.sql(),
    ///     "SELECT count(*), COALESCE(sum(hashtextextended(\"pgp_compared\"::text, 0)), 0)::text \
    ///      FROM (SELECT id, status FROM orders WHERE status = $1\n) AS \"pgp_compared\""
    /// );
    /// assert_eq!(whole.values(), q.values());
    /// let some = Compare::new(3).compare_columns(["id", "odd\"name"]).check_query(&q)?;
    /// assert!(some.sql().starts_with(
    ///     "SELECT count(*), COALESCE(sum(hashtextextended(\
    ///      ROW(\"pgp_compared\".\"id\", \"pgp_compared\".\"odd\"\"name\")::text, 0)), 0)::text FROM ("
    /// ));
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for an empty statement or a NUL in a text
    /// value; [`Error::InvalidIdentifier`] for an invalid compare column.
    pub fn check_query(&self, q: &BuiltQuery) -> Result<BuiltQuery> {
        let columns = self.column_idents()?;
        check_statement(q)?;
        Ok(hash_statement(q, &columns))
    }

    fn column_idents(&self) -> Result<Vec<Ident>> {
        self.columns.iter().map(Ident::new).collect()
    }

    /// Every check that needs no server; returns the hashing statements.
    fn validate(&self, contenders: &[Contender]) -> Result<Vec<BuiltQuery>> {
        if self.rounds == 0 {
            return Err(Error::spec(
                "rounds",
                "must be at least 1: with no timed round there is nothing to compare",
            ));
        }
        if self.rounds > Compare::MAX_ROUNDS {
            return Err(Error::spec(
                "rounds",
                format!(
                    "at most {} timed rounds, got {}",
                    Compare::MAX_ROUNDS,
                    self.rounds
                ),
            ));
        }
        if self.warmup > Compare::MAX_WARMUP {
            return Err(Error::spec(
                "warmup",
                format!(
                    "at most {} warm-up rounds, got {}",
                    Compare::MAX_WARMUP,
                    self.warmup
                ),
            ));
        }
        if contenders.is_empty() {
            return Err(Error::spec("contenders", "none given: nothing to compare"));
        }
        let columns = self.column_idents()?;
        let mut seen = HashSet::with_capacity(contenders.len());
        for c in contenders {
            if c.label.trim().is_empty() {
                return Err(Error::spec("label", "a contender's label is empty"));
            }
            if !seen.insert(c.label.as_str()) {
                return Err(Error::spec(
                    "label",
                    format!("{:?} labels two contenders: labels must be unique", c.label),
                ));
            }
            check_statement(&c.query).map_err(|e| match e {
                Error::InvalidSpec { field, reason } => Error::InvalidSpec {
                    field,
                    reason: format!("contender {:?}: {reason}", c.label),
                },
                other => other,
            })?;
        }
        Ok(contenders
            .iter()
            .map(|c| hash_statement(&c.query, &columns))
            .collect())
    }

    /// Checks the contenders return the same rows, then times them (see the
    /// [module docs](self)).
    ///
    /// # Errors
    /// Before any SQL is sent: [`Error::InvalidSpec`] for zero rounds, more
    /// than [`MAX_ROUNDS`](Self::MAX_ROUNDS) rounds or
    /// [`MAX_WARMUP`](Self::MAX_WARMUP) warm-up rounds, no
    /// contenders, an empty or repeated label, an empty statement or a NUL in
    /// a text value; [`Error::InvalidIdentifier`] for an invalid compare
    /// column. Then [`Error::StrategiesDisagree`] when a contender returns
    /// other rows than the first, and the executor's errors (a query the
    /// server rejects, a compare column the query does not have).
    pub async fn run<E: Executor>(&self, db: &E, contenders: &[Contender]) -> Result<Comparison> {
        let checks = self.validate(contenders)?;

        // Same rows, untimed.
        let mut digests: Vec<(i64, String)> = Vec::with_capacity(contenders.len());
        for (c, check) in contenders.iter().zip(&checks) {
            let row = db.one_row(check).await?;
            let rows: i64 = row.try_get(0usize.into())?;
            let hash: String = row.try_get(1usize.into())?;
            if let Some((first_rows, first_hash)) = digests.first() {
                if let Some(detail) = disagreement(*first_rows, first_hash, rows, &hash) {
                    return Err(Error::StrategiesDisagree {
                        first: contenders[0].label.clone(),
                        other: c.label.clone(),
                        detail,
                    });
                }
            }
            digests.push((rows, hash));
        }

        // Plans, untimed.
        let mut plans = Vec::with_capacity(contenders.len());
        for c in contenders {
            plans.push(explain(db, &c.query).await?);
        }

        // Interleaved rounds, each in its own shuffled order.
        let n = contenders.len();
        let mut timings = vec![Vec::with_capacity(self.rounds); n];
        for round in 0..self.warmup + self.rounds {
            for i in round_order(round, n) {
                let took = time_query(db, &contenders[i].query).await?;
                if round >= self.warmup {
                    timings[i].push(took);
                }
            }
        }

        Ok(Comparison::new(
            self.rounds,
            self.warmup,
            contenders
                .iter()
                .zip(digests)
                .zip(plans)
                .zip(timings)
                .map(|(((c, (rows, hash)), plan), timings)| Measured {
                    label: c.label.clone(),
                    rows,
                    hash,
                    timings,
                    plan,
                })
                .collect(),
        ))
    }

    /// [`run`](Self::run) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_blocking<C>(&self, db: &mut C, contenders: &[Contender]) -> Result<Comparison>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.run(db, contenders).await)
    }
}

/// A contender's figures before the ratios are known.
struct Measured {
    label: String,
    rows: i64,
    hash: String,
    timings: Vec<Duration>,
    plan: Plan,
}

fn check_statement(q: &BuiltQuery) -> Result<()> {
    if q.body().trim().is_empty() {
        return Err(Error::spec(
            "statement",
            "is empty: there is nothing to compare",
        ));
    }
    q.check()
}

/// `SELECT count(*), COALESCE(sum(hashtextextended(<row>::text, 0)), 0)::text
/// FROM (<q>) AS "pgp_compared"`, where `<row>` is the whole row or
/// `ROW("pgp_compared"."c1", …)`. `sum` of `int8` is `numeric`: no overflow,
/// and the sum of per-row hashes ignores the order of the rows but not their
/// multiplicity.
fn hash_statement(q: &BuiltQuery, columns: &[Ident]) -> BuiltQuery {
    let alias = quote(&Ident::fixed(ALIAS));
    let row = if columns.is_empty() {
        alias.clone()
    } else {
        let cols: Vec<String> = columns
            .iter()
            .map(|c| format!("{alias}.{}", quote(c)))
            .collect();
        format!("ROW({})", cols.join(", "))
    };
    q.wrapped(
        &format!(
            "SELECT count(*), COALESCE(sum(hashtextextended({row}::text, 0)), 0)::text FROM ("
        ),
        &format!("\n) AS {alias}"),
    )
}

/// `None` when both agree, else what differs.
fn disagreement(rows: i64, hash: &str, other_rows: i64, other_hash: &str) -> Option<String> {
    if rows != other_rows {
        Some(format!("{other_rows} rows where the first returns {rows}"))
    } else if hash != other_hash {
        Some(format!(
            "{rows} rows each, but other values (row hash {other_hash} vs {hash})"
        ))
    } else {
        None
    }
}

/// One contender's result in a [`Comparison`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Outcome {
    /// The contender's label.
    pub label: String,
    /// Rows it returns (equal for every contender).
    pub rows: i64,
    /// The order-insensitive hash of its rows (or of its compare columns),
    /// as PostgreSQL printed the `numeric` sum; equal for every contender.
    pub hash: String,
    /// Each timed round's client wall time, in round order.
    pub timings: Vec<Duration>,
    /// The median of [`timings`](Self::timings) (the mean of the two middle
    /// ones for an even number of rounds).
    pub median: Duration,
    /// The fastest round.
    pub min: Duration,
    /// [`median`](Self::median) divided by the best contender's median:
    /// `1.0` for the best, `3.0` for three times slower.
    pub ratio: f64,
    /// What the plan does, in a few words: the root node, then — when the
    /// root only passes rows on — ` → ` and the first node below it that does
    /// the work, skipping `Limit`, `Sort`, `Incremental Sort`, `Gather`,
    /// `Gather Merge`, `Materialize`, `Result`, `Subquery Scan` and plain
    /// (ungrouped, e.g. `count(*)`) aggregates. Names are those of `EXPLAIN`'s
    /// text output (`HashAggregate`, `MixedAggregate`, `Hash Semi Join`,
    /// `Parallel Seq Scan on t`): e.g. `Aggregate → Hash Semi Join`,
    /// `Limit → Nested Loop`, `Sort → MixedAggregate`.
    pub top_node: String,
    /// The planner's whole plan (estimates, nothing executed).
    pub plan: Plan,
}

/// The result of [`Compare::run`]: one [`Outcome`] per contender, in the
/// order given. `Display` prints an aligned table.
#[derive(Debug, Clone)]
pub struct Comparison {
    rounds: usize,
    warmup: usize,
    outcomes: Vec<Outcome>,
    best: usize,
}

impl Comparison {
    /// Medians, ratios and plan summaries from the raw figures; `measured`
    /// is not empty (checked by [`Compare::run`]).
    fn new(rounds: usize, warmup: usize, measured: Vec<Measured>) -> Comparison {
        let medians: Vec<Duration> = measured.iter().map(|m| median(&m.timings)).collect();
        let best = medians
            .iter()
            .enumerate()
            .min_by_key(|(_, m)| **m)
            .map_or(0, |(i, _)| i);
        let best_median = medians.get(best).copied().unwrap_or_default();
        let outcomes = measured
            .into_iter()
            .zip(medians)
            .map(|(m, median)| Outcome {
                min: m.timings.iter().min().copied().unwrap_or_default(),
                ratio: ratio(median, best_median),
                top_node: top_node(&m.plan),
                label: m.label,
                rows: m.rows,
                hash: m.hash,
                timings: m.timings,
                median,
                plan: m.plan,
            })
            .collect();
        Comparison {
            rounds,
            warmup,
            outcomes,
            best,
        }
    }

    /// Every contender's outcome, in the order the contenders were given.
    #[must_use]
    pub fn outcomes(&self) -> &[Outcome] {
        &self.outcomes
    }

    /// The contender with the lowest median (the first of equals).
    #[must_use]
    pub fn best(&self) -> &Outcome {
        &self.outcomes[self.best]
    }

    /// The outcome of the contender labelled `label`.
    #[must_use]
    pub fn get(&self, label: &str) -> Option<&Outcome> {
        self.outcomes.iter().find(|o| o.label == label)
    }

    /// The rows every contender returns.
    #[must_use]
    pub fn rows(&self) -> i64 {
        self.best().rows
    }

    /// Timed rounds.
    #[must_use]
    pub fn rounds(&self) -> usize {
        self.rounds
    }

    /// Untimed warm-up rounds that preceded them.
    #[must_use]
    pub fn warmup(&self) -> usize {
        self.warmup
    }
}

impl fmt::Display for Comparison {
    /// `strategy | rows | median ms | min ms | × best | plan`, one line per
    /// contender, columns aligned (labels and plans left, numbers right).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let header = ["strategy", "rows", "median ms", "min ms", "× best", "plan"];
        let right = [false, true, true, true, true, false];
        let body: Vec<[String; 6]> = self
            .outcomes
            .iter()
            .map(|o| {
                [
                    o.label.clone(),
                    o.rows.to_string(),
                    format!("{:.3}", ms(o.median)),
                    format!("{:.3}", ms(o.min)),
                    format!("{:.2}", o.ratio),
                    o.top_node.clone(),
                ]
            })
            .collect();
        let mut widths = header.map(|h| h.chars().count());
        for line in &body {
            for (w, cell) in widths.iter_mut().zip(line) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: [&str; 6]| {
            let mut out = String::new();
            for (i, cell) in cells.iter().enumerate() {
                if i > 0 {
                    out.push_str("  ");
                }
                let pad = " ".repeat(widths[i] - cell.chars().count());
                if right[i] {
                    out.push_str(&pad);
                    out.push_str(cell);
                } else {
                    out.push_str(cell);
                    out.push_str(&pad);
                }
            }
            out.trim_end().to_owned()
        };
        f.write_str(&line(header))?;
        for cells in &body {
            write!(f, "\n{}", line(cells.each_ref().map(String::as_str)))?;
        }
        Ok(())
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The median; the mean of the two middle values for an even count; zero
/// for none.
fn median(times: &[Duration]) -> Duration {
    let mut t = times.to_vec();
    t.sort_unstable();
    let n = t.len();
    match n {
        0 => Duration::ZERO,
        _ if n % 2 == 1 => t[n / 2],
        _ => (t[n / 2 - 1] + t[n / 2]) / 2,
    }
}

fn ratio(median: Duration, best: Duration) -> f64 {
    if best.is_zero() {
        if median.is_zero() {
            1.0
        } else {
            f64::INFINITY
        }
    } else {
        median.as_secs_f64() / best.as_secs_f64()
    }
}

/// See [`Outcome::top_node`].
fn top_node(plan: &Plan) -> String {
    let top = plan.raw.get(0).unwrap_or(&plan.raw);
    let Some(root) = top.get("Plan") else {
        return plan.root.node_type.clone();
    };
    let mut node = root;
    while passes_rows_on(node) {
        match node
            .get("Plans")
            .and_then(Json::as_array)
            .and_then(|c| c.first())
        {
            Some(child) => node = child,
            None => break,
        }
    }
    if std::ptr::eq(node, root) {
        node_label(root)
    } else {
        format!("{} → {}", node_label(root), node_label(node))
    }
}

fn text<'a>(node: &'a Json, key: &str) -> Option<&'a str> {
    node.get(key).and_then(Json::as_str)
}

fn passes_rows_on(node: &Json) -> bool {
    match text(node, "Node Type").unwrap_or_default() {
        "Limit" | "Sort" | "Incremental Sort" | "Gather" | "Gather Merge" | "Materialize"
        | "Result" | "Subquery Scan" => true,
        "Aggregate" => text(node, "Strategy") == Some("Plain"),
        _ => false,
    }
}

/// A node's name as `EXPLAIN`'s text output writes it.
fn node_label(node: &Json) -> String {
    let kind = text(node, "Node Type").unwrap_or("?");
    let mut label = match kind {
        "Aggregate" => match text(node, "Strategy") {
            Some("Sorted") => "GroupAggregate".to_owned(),
            Some("Hashed") => "HashAggregate".to_owned(),
            Some("Mixed") => "MixedAggregate".to_owned(),
            _ => "Aggregate".to_owned(),
        },
        "SetOp" if text(node, "Strategy") == Some("Hashed") => "HashSetOp".to_owned(),
        _ => kind.to_owned(),
    };
    match text(node, "Join Type") {
        Some(join) if join != "Inner" => {
            label = match label.strip_suffix(" Join") {
                Some(head) => format!("{head} {join} Join"),
                None => format!("{label} {join} Join"),
            };
        }
        _ => {}
    }
    match text(node, "Partial Mode") {
        Some(mode) if mode != "Simple" => label = format!("{mode} {label}"),
        _ => {}
    }
    if node.get("Parallel Aware").and_then(Json::as_bool) == Some(true) {
        label = format!("Parallel {label}");
    }
    if let Some(index) = text(node, "Index Name") {
        label = format!("{label} using {index}");
    }
    if let Some(relation) = text(node, "Relation Name") {
        label = format!("{label} on {relation}");
    }
    label
}

/// The client wall time of running `q` once, every row fetched (and then
/// dropped): what an interleaved round measures per contender.
pub(crate) async fn time_query<E: Executor>(db: &E, q: &BuiltQuery) -> Result<Duration> {
    let start = Instant::now();
    let rows = db.rows(q).await?;
    let took = start.elapsed();
    drop(rows);
    Ok(took)
}

/// The order in which [`Compare::run`] runs `n` contenders in round
/// `round` (warm-up rounds included): a Fisher–Yates shuffle driven by
/// SplitMix64 seeded with the round, so it is the same on every run and,
/// over many rounds, each contender runs first, and right after each other
/// one, about equally often. Public for timing loops of your own.
///
/// ```
/// let order = pgpatterns::compare::round_order(7, 4);
/// let mut sorted = order.clone();
/// sorted.sort();
/// assert_eq!(sorted, [0, 1, 2, 3]);
/// ```
#[must_use]
pub fn round_order(round: usize, n: usize) -> Vec<usize> {
    let mut state = (round as u64).wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::explain::parse;

    #[test]
    fn each_round_is_a_permutation_and_predecessors_vary() {
        let n = 6;
        // follows[a][b]: how often a ran right after b
        let mut follows = vec![vec![0; n]; n];
        let mut first = vec![0; n];
        for round in 0..600 {
            let order = round_order(round, n);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n).collect::<Vec<_>>(), "round {round}");
            assert_eq!(order, round_order(round, n), "deterministic");
            first[order[0]] += 1;
            for w in order.windows(2) {
                follows[w[1]][w[0]] += 1;
            }
        }
        // 600 rounds: each starts ~100 times and follows each other ~100.
        assert!(first.iter().all(|&f| f > 50), "{first:?}");
        for (a, row) in follows.iter().enumerate() {
            for (b, &k) in row.iter().enumerate() {
                if a != b {
                    assert!(k > 50, "{a} after {b}: {k} of 600 rounds");
                }
            }
        }
        assert!(round_order(0, 0).is_empty());
        assert_eq!(round_order(3, 1), vec![0]);
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn plan(json: &str) -> Plan {
        parse(serde_json::from_str(json).unwrap()).unwrap()
    }

    fn measured(label: &str, times: &[u64], plan_json: &str) -> Measured {
        Measured {
            label: label.to_owned(),
            rows: 1200,
            hash: "-42".to_owned(),
            timings: times.iter().map(|&t| ms(t)).collect(),
            plan: plan(plan_json),
        }
    }

    #[test]
    fn median_of_odd_even_and_none() {
        assert_eq!(median(&[ms(5), ms(1), ms(3)]), ms(3));
        assert_eq!(median(&[ms(4), ms(1), ms(2), ms(10)]), ms(3));
        assert_eq!(median(&[ms(7)]), ms(7));
        assert_eq!(median(&[]), Duration::ZERO);
        assert_eq!(ratio(Duration::ZERO, Duration::ZERO), 1.0);
        assert!(ratio(ms(1), Duration::ZERO).is_infinite());
    }

    #[test]
    fn display_is_an_aligned_table() {
        let count = r#"[{"Plan": {"Node Type": "Aggregate", "Strategy": "Plain",
            "Plans": [{"Node Type": "Hash Join", "Join Type": "Semi",
              "Plans": [{"Node Type": "Seq Scan", "Relation Name": "orders",
                         "Parallel Aware": true}]}]}}]"#;
        let page = r#"[{"Plan": {"Node Type": "Limit",
            "Plans": [{"Node Type": "Index Scan", "Relation Name": "orders",
                       "Index Name": "orders_pkey"}]}}]"#;
        let c = Comparison::new(
            3,
            1,
            vec![
                measured("UnionIn", &[30, 10, 20], count),
                measured("Exists", &[5, 6, 4], page),
            ],
        );
        assert_eq!(c.best().label, "Exists");
        assert_eq!(c.best().ratio, 1.0);
        assert_eq!(c.get("UnionIn").unwrap().ratio, 4.0);
        assert_eq!(c.get("UnionIn").unwrap().min, ms(10));
        assert_eq!(c.rows(), 1200);
        assert_eq!(
            c.to_string(),
            "strategy  rows  median ms  min ms  × best  plan\n\
             UnionIn   1200     20.000  10.000    4.00  Aggregate → Hash Semi Join\n\
             Exists    1200      5.000   4.000    1.00  Limit → Index Scan using orders_pkey on orders"
        );
    }

    #[test]
    fn top_node_names_the_working_node() {
        let p = plan(
            r#"[{"Plan": {"Node Type": "Aggregate", "Strategy": "Plain", "Partial Mode": "Finalize",
                "Plans": [{"Node Type": "Gather", "Plans": [{"Node Type": "Aggregate",
                  "Strategy": "Plain", "Partial Mode": "Partial",
                  "Plans": [{"Node Type": "Seq Scan", "Relation Name": "t", "Parallel Aware": true}]}]}]}}]"#,
        );
        assert_eq!(top_node(&p), "Finalize Aggregate → Parallel Seq Scan on t");
        let p = plan(
            r#"[{"Plan": {"Node Type": "Sort", "Plans": [{"Node Type": "Aggregate",
                "Strategy": "Mixed", "Plans": [{"Node Type": "Seq Scan", "Relation Name": "sale"}]}]}}]"#,
        );
        assert_eq!(top_node(&p), "Sort → MixedAggregate");
        let p = plan(r#"[{"Plan": {"Node Type": "Append"}}]"#);
        assert_eq!(top_node(&p), "Append");
        let p =
            plan(r#"[{"Plan": {"Node Type": "Nested Loop", "Join Type": "Anti", "Plans": []}}]"#);
        assert_eq!(top_node(&p), "Nested Loop Anti Join");
        // A plain aggregate with nothing below it is its own summary.
        let p = plan(r#"[{"Plan": {"Node Type": "Aggregate", "Strategy": "Plain"}}]"#);
        assert_eq!(top_node(&p), "Aggregate");
    }

    #[test]
    fn bad_input_is_refused_before_any_sql() {
        let q = BuiltQuery::fixed("SELECT 1");
        let one = [Contender::new("a", q.clone())];
        let err = |c: &Compare, cs: &[Contender]| c.validate(cs).unwrap_err();
        let e = err(&Compare::new(0), &one);
        assert!(
            e.is_invalid_input() && e.to_string().contains("rounds"),
            "{e}"
        );
        let e = err(&Compare::new(1), &[]);
        assert!(e.to_string().contains("contenders"), "{e}");
        let twice = [
            Contender::new("a", q.clone()),
            Contender::new("a", q.clone()),
        ];
        let e = err(&Compare::new(1), &twice);
        assert!(e.to_string().contains("\"a\" labels two contenders"), "{e}");
        let e = err(&Compare::new(1), &[Contender::new(" ", q.clone())]);
        assert!(e.to_string().contains("label"), "{e}");
        let empty = [
            Contender::new("a", q.clone()),
            Contender::new("b", BuiltQuery::fixed(" ; ")),
        ];
        let e = err(&Compare::new(1), &empty);
        assert!(e.to_string().contains("contender \"b\": is empty"), "{e}");
        let e = err(&Compare::new(1).compare_columns([""]), &one);
        assert!(matches!(e, Error::InvalidIdentifier { .. }), "{e}");
        assert_eq!(Compare::new(2).validate(&one).unwrap().len(), 1);
    }
}
