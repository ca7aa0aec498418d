//! Since filters: root rows changed at or after a point in time, in
//! themselves *or* in any related table.
//!
//! Take moves changed across related tables: a move must be returned when
//! the move, its orders, shipments, service items or payment requests
//! changed since `T` — and deeper relations too (service members behind
//! orders, addresses behind shipments). A [`SinceGraph`] declares the root,
//! its base predicates and labelled relation paths of any depth;
//! [`SinceGraph::since`] makes a [`SinceQuery`] that builds the root rows in
//! one of five equivalent strategies ([`SinceStrategy`]), counts them, pages
//! through them with an opaque keyset cursor ([`PageRequest`](crate::PageRequest), [`Page`](crate::Page))
//! and tells, for one page, what changed ([`Change`]).
//!
//! A root row matches when its own change column, or the change column of
//! any row reachable along a path, is `>= since`. NULL change times never
//! match. `timestamp` columns are read at the graph's
//! [offset](SinceGraph::timestamp_offset) (UTC by default); `since` is bound
//! in each column's own type, so every comparison is exact and sargable.

mod auto;
mod change;
mod changed;
mod graph;
mod index;
mod page;
mod track;

use sea_query::{Expr, ExprTrait, Func, JoinType, Query, SelectStatement, UnionType};

use crate::schema::{AnyColumn, Ident, Relation};
use crate::spec::Problems;
use crate::types::SqlType;
use crate::{BuiltQuery, Result};

pub(crate) use change::in_pg_range;
pub use change::{ChangeColumn, IntoChangeColumn};
pub use changed::Change;
pub use graph::SinceGraph;
pub use index::IndexOptions;
pub use track::{Track, TRACK_FRESH, TRACK_STORED};

use change::Since;

/// The default largest page ([`SinceGraph::max_limit`]).
pub const SINCE_DEFAULT_MAX_LIMIT: i64 = 1000;
/// Alias of the root table inside `SemiJoin`'s union.
const ROOT_ALIAS: &str = "r0";
/// Output column of [`SinceQuery::page_query`] holding the root key (for the
/// next cursor).
pub const SINCE_KEY: &str = "since_key";
/// Output column of [`SinceQuery::page_query`] holding the root's own change
/// time (for the next cursor).
pub const SINCE_AT: &str = "since_at";

/// How the matching root rows are found. Every strategy returns the same rows.
///
/// Measured on moves and their related tables (see the README): `UnionIn`
/// and `SemiJoin` win counts of selective windows (a few changed rows),
/// `Exists` wins pages and wide windows; the join strategies are the usual
/// hand-written queries, slower, kept for comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SinceStrategy {
    /// `root.change >= $s OR root.col IN (SELECT … UNION SELECT …)`: one
    /// `IN` per distinct root-side column set, each a `UNION` of the paths
    /// that start there (the fastest hand-written form, generalised to paths).
    UnionIn,
    /// `root.change >= $s OR EXISTS (…) OR …`: one correlated `EXISTS` per
    /// path.
    Exists,
    /// `root.key IN (SELECT key FROM root WHERE change >= $s UNION ALL
    /// SELECT fk FROM child … UNION ALL SELECT r.key FROM root r JOIN parent
    /// …)`: the root's own change is one more branch, so there is no `OR`
    /// and PostgreSQL plans a (hash or nested-loop) **semi-join**. `UnionIn`
    /// under `OR` becomes a *SubPlan*, hashed only while the changed set fits
    /// in `work_mem`; past that (≈ 300 k changed rows at the 4 MB default)
    /// it rescans the set for every root and takes minutes. `SemiJoin` has
    /// no such cliff. It runs without parallel workers (its statement is
    /// marked parallel-unsafe): for the narrow windows it serves, starting
    /// them costs more than the lookup.
    SemiJoin,
    /// `SELECT root.* FROM root LEFT JOIN …` every path (shared prefixes
    /// joined once) `WHERE root.change >= $s OR t1.change >= $s …`, made
    /// distinct with `GROUP BY root.key`. Grouping by the primary key rather
    /// than `SELECT DISTINCT root.*` keeps it as fast as the hand-written
    /// query (a first page streams in key order; `DISTINCT`
    /// over every column sorted all matches, up to 70× slower) and works with
    /// columns that have no equality (`json`); the key must be the root's
    /// primary key.
    OrJoins,
    /// `LEFT JOIN` every path, `GROUP BY root.key HAVING
    /// MAX(GREATEST(change, …)) >= $s`; the key must
    /// be the root's primary key.
    GreatestGroupBy,
    /// `root.tracked >= $s`: the root's own column kept by triggers equal to
    /// the newest change time over the root and every path
    /// ([`SinceGraph::tracked_by`], [`SinceGraph::track`]), so the window is
    /// an index range scan on the root and a page walks one index. Right
    /// only while the triggers are installed and the column backfilled;
    /// `Auto` uses it exactly then. Not in [`SinceStrategy::ALL`]: it needs
    /// that column.
    Tracked,
    /// Chosen per query shape and window from the live database
    /// ([`SinceQuery::explain_choice`]) by the rule of the `since::auto`
    /// module: counts by changed rows per root and hash memory (`SemiJoin`,
    /// `UnionIn`, `Exists`), pages by the window's width and how the planner
    /// runs `Exists` (`Exists`, `OrJoins`); cached per window selectivity
    /// and catalog state of every table the query reads (creating or
    /// dropping an index there changes the next decision without clearing
    /// the cache; see [`StrategyCache`](crate::StrategyCache)). Without a database —
    /// [`build`](SinceQuery::build), [`count_query`](SinceQuery::count_query),
    /// [`page_query`](SinceQuery::page_query) — it is `SemiJoin` for counts
    /// and full lists (best for the usual narrow windows, and no memory
    /// cliff) and `Exists` for pages;
    /// [`count`](SinceQuery::count), [`fetch_page`](SinceQuery::fetch_page)
    /// and [`resolve`](SinceQuery::resolve) decide from the database.
    Auto,
}

impl crate::choice::StrategyName for SinceStrategy {
    const NAMED: &'static [Self] = &[
        SinceStrategy::UnionIn,
        SinceStrategy::SemiJoin,
        SinceStrategy::Exists,
        SinceStrategy::OrJoins,
        SinceStrategy::GreatestGroupBy,
        SinceStrategy::Tracked,
    ];
}

impl SinceStrategy {
    /// Every concrete strategy (all but [`Auto`](Self::Auto)).
    pub const ALL: [SinceStrategy; 5] = [
        SinceStrategy::UnionIn,
        SinceStrategy::SemiJoin,
        SinceStrategy::Exists,
        SinceStrategy::OrJoins,
        SinceStrategy::GreatestGroupBy,
    ];
}

/// Roots of a [`SinceGraph`] changed at or after one point in time, in one
/// strategy. Made by [`SinceGraph::since`].
#[derive(Debug)]
#[must_use = "a query does nothing until it is built or run"]
pub struct SinceQuery<K> {
    graph: SinceGraph<K>,
    since: Since,
    strategy: SinceStrategy,
    problems: Problems,
}

impl<K> Clone for SinceQuery<K> {
    fn clone(&self) -> Self {
        SinceQuery {
            graph: self.graph.clone(),
            since: self.since,
            strategy: self.strategy,
            problems: self.problems.clone(),
        }
    }
}

/// `near.a = far.a AND …` as one expression.
fn on_expr(rel: &Relation) -> Expr {
    let mut pairs = rel.pairs().iter();
    let mut e = match pairs.next() {
        Some((a, b)) => a.expr().eq(b.expr()),
        None => Expr::cust("TRUE"),
    };
    for (a, b) in pairs {
        e = e.and(a.expr().eq(b.expr()));
    }
    e
}

/// One column as itself, several as a row value.
fn row_of(cols: &[AnyColumn]) -> Expr {
    match cols {
        [one] => one.expr(),
        _ => Expr::tuple(cols.iter().map(AnyColumn::expr)),
    }
}

impl<K: SqlType> SinceQuery<K> {
    fn new(graph: SinceGraph<K>, since: chrono::DateTime<chrono::Utc>) -> SinceQuery<K> {
        let mut problems = Problems::default();
        // A refused instant leaves the Unix epoch as a stand-in the check
        // never lets through to SQL.
        let since = problems
            .note(Since::new(since, &graph.offset))
            .unwrap_or(Since {
                utc: chrono::DateTime::UNIX_EPOCH,
                naive: chrono::DateTime::UNIX_EPOCH.naive_utc(),
            });
        SinceQuery {
            graph,
            since,
            strategy: SinceStrategy::UnionIn,
            problems,
        }
    }

    /// Checks the graph and the query: the first problem any step
    /// recorded. [`build`](Self::build), [`to_statement`](Self::to_statement)
    /// and every run verb check first, so calling this is only needed to
    /// fail early.
    ///
    /// ```
    /// use chrono::{DateTime, Utc};
    /// use pgpatterns::{column, table, Relation, SinceGraph};
    /// let (moves, items) = (table!("moves"), table!("items"));
    /// let id = column!(moves, "id": i64);
    /// let graph = SinceGraph::new(&id, column!(moves, "updated_at": DateTime<Utc>))
    ///     // The change column is on another table than the path reaches:
    ///     .related("items", Relation::new(&column!(items, "move_id"), &id), column!(moves, "x": DateTime<Utc>));
    /// let err = graph.since(Utc::now()).check().unwrap_err();
    /// assert!(err.to_string().contains("the path ends at items"));
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidSpec`](crate::Error::InvalidSpec) (or
    /// [`Error::InvalidIdentifier`](crate::Error::InvalidIdentifier)) for the
    /// first problem: see each step of [`SinceGraph`] and
    /// [`SinceGraph::since`].
    pub fn check(&self) -> Result<()> {
        self.graph.problems.check()?;
        self.problems.check()?;
        self.graph.tracking_problem()?;
        if self.strategy == SinceStrategy::Tracked && self.graph.tracked.is_none() {
            return Err(crate::Error::spec(
                "strategy",
                "Tracked needs the graph's tracking column: SinceGraph::tracked_by",
            ));
        }
        Ok(())
    }

    /// Chooses the strategy (default [`SinceStrategy::UnionIn`]).
    pub fn strategy(mut self, strategy: SinceStrategy) -> SinceQuery<K> {
        self.strategy = strategy;
        self
    }

    /// The chosen strategy.
    #[must_use]
    pub fn chosen_strategy(&self) -> SinceStrategy {
        self.strategy
    }

    /// The graph.
    pub fn graph(&self) -> &SinceGraph<K> {
        &self.graph
    }

    /// The point in time (inclusive).
    #[must_use]
    pub fn since(&self) -> chrono::DateTime<chrono::Utc> {
        self.since.utc
    }

    /// The matching root rows: `SELECT root.* FROM root …`. Add your own
    /// filters, joins, ordering or limit, or use it as a subquery.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn to_statement(&self) -> Result<SelectStatement> {
        self.check()?;
        Ok(self.statement())
    }

    /// [`to_statement`](Self::to_statement) of a checked query.
    pub(crate) fn statement(&self) -> SelectStatement {
        let g = &self.graph;
        let since = &self.since;
        let (paths, joins) = g.resolve();
        let mut q = Query::select();
        q.column(g.root.all_columns()).from(g.root.table_ref());
        for f in &g.filters {
            q.and_where(f.clone());
        }
        let mut any = g.root_change.changed_since(since);
        match self.strategy {
            SinceStrategy::Auto => {
                return self.clone().strategy(SinceStrategy::SemiJoin).statement();
            }
            SinceStrategy::Tracked => {
                if let Some(col) = &g.tracked {
                    q.and_where(col.expr().gte(since.utc.param()));
                }
                return q;
            }
            SinceStrategy::UnionIn => {
                let mut groups: Vec<(Vec<AnyColumn>, SelectStatement)> = Vec::new();
                for p in paths {
                    let first = &p.hops[0];
                    let root_cols: Vec<AnyColumn> =
                        first.pairs().iter().map(|(a, _)| a.clone()).collect();
                    let mut sub = Query::select();
                    for (_, far) in first.pairs() {
                        sub.column(far.col_ref());
                    }
                    sub.from(first.to_table().table_ref());
                    for h in &p.hops[1..] {
                        sub.join(JoinType::InnerJoin, h.to_table().table_ref(), on_expr(h));
                    }
                    sub.and_where(p.change.changed_since(since));
                    match groups.iter_mut().find(|(cols, _)| *cols == root_cols) {
                        Some((_, union)) => {
                            union.union(UnionType::Distinct, sub);
                        }
                        None => groups.push((root_cols, sub)),
                    }
                }
                for (cols, union) in groups {
                    any = any.or(row_of(&cols).in_subquery(union));
                }
            }
            SinceStrategy::SemiJoin => {
                // `r0`, or `r01`, … when a table of the graph is named so.
                let taken: Vec<&str> = std::iter::once(g.root.name().as_str())
                    .chain(g.paths.iter().flat_map(|p| {
                        p.hops.iter().flat_map(|h| {
                            [h.rel.from_table().name(), h.rel.to_table().name()].map(Ident::as_str)
                        })
                    }))
                    .collect();
                let alias = crate::ddl::free_name(ROOT_ALIAS, taken.iter().copied());
                let r = g
                    .root
                    .with_alias(Ident::new(&alias).unwrap_or_else(|_| Ident::fixed(ROOT_ALIAS)));
                let mut union = Query::select();
                // Serial: the union finds the changed keys through their
                // indexes, a few thousand rows where `Auto` picks it; two
                // workers took twice as long to start as the whole lookup
                // (100 k moves, 1 day: 31–47 ms in parallel, 13–23 ms not).
                union
                    .column(g.key.of(&r).col_ref())
                    .from(r.table_ref())
                    .and_where(g.root_change.of(&r).changed_since(since))
                    .and_where(crate::query::serial_only());
                for p in paths {
                    let first = &p.hops[0];
                    let mut sub = Query::select();
                    let from_key = matches!(first.pairs(), [(near, _)] if *near == g.key);
                    if from_key {
                        // a child of the root key: its foreign key is the key
                        sub.column(first.pairs()[0].1.col_ref())
                            .from(first.to_table().table_ref());
                    } else {
                        // any other first hop: join back to (an alias of) the root
                        sub.column(g.key.of(&r).col_ref()).from(r.table_ref()).join(
                            JoinType::InnerJoin,
                            first.to_table().table_ref(),
                            on_expr(&first.between(&r, first.to_table())),
                        );
                    }
                    for h in &p.hops[1..] {
                        sub.join(JoinType::InnerJoin, h.to_table().table_ref(), on_expr(h));
                    }
                    sub.and_where(p.change.changed_since(since));
                    union.union(UnionType::All, sub);
                }
                q.and_where(g.key.expr().in_subquery(union));
                return q;
            }
            SinceStrategy::Exists => {
                for p in paths {
                    let first = &p.hops[0];
                    let mut sub = Query::select();
                    sub.expr(Expr::cust("1")).from(first.to_table().table_ref());
                    for h in &p.hops[1..] {
                        sub.join(JoinType::InnerJoin, h.to_table().table_ref(), on_expr(h));
                    }
                    sub.and_where(on_expr(first))
                        .and_where(p.change.changed_since(since));
                    any = any.or(Expr::exists(sub));
                }
            }
            SinceStrategy::OrJoins => {
                q.group_by_col(g.key.col_ref());
                for (t, rel) in joins {
                    q.join(JoinType::LeftJoin, t.table_ref(), on_expr(rel));
                }
                for p in paths {
                    any = any.or(p.change.changed_since(since));
                }
            }
            SinceStrategy::GreatestGroupBy => {
                for (t, rel) in joins {
                    q.join(JoinType::LeftJoin, t.table_ref(), on_expr(rel));
                }
                let offset = &g.offset;
                let terms = std::iter::once(g.root_change.instant_of(g.root_change.expr(), offset))
                    .chain(
                        paths
                            .iter()
                            .map(|p| p.change.instant_of(p.change.expr(), offset)),
                    );
                q.group_by_col(g.key.col_ref());
                q.and_having(Expr::from(Func::max(Func::greatest(terms))).gte(since.utc.param()));
                return q;
            }
        }
        q.and_where(any);
        q
    }

    /// The statement rendered with its values.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn build(&self) -> Result<BuiltQuery> {
        self.check()?;
        Ok(self.built())
    }

    /// [`build`](Self::build) of a checked query.
    pub(crate) fn built(&self) -> BuiltQuery {
        BuiltQuery::new(&self.statement())
    }

    /// `SELECT COUNT(*)` of the matching roots.
    ///
    /// ```
    /// use chrono::{DateTime, TimeZone, Utc};
    /// use pgpatterns::{Relation, SinceGraph, SinceStrategy, Table};
    /// let moves = Table::new("moves")?;
    /// let items = Table::new("items")?;
    /// let id = moves.column::<i64>("id")?;
    /// let graph = SinceGraph::new(&id, &moves.column::<DateTime<Utc>>("updated_at")?)
    ///     .related("items", Relation::new(&items.column::<i64>("move_id")?, &id),
    ///              &items.column::<DateTime<Utc>>("updated_at")?);
    /// let q = graph
    ///     .since(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap())
    ///     .strategy(SinceStrategy::Exists);
    /// assert_eq!(
    ///     q.count_query()?.sql(),
    ///     r#"SELECT COUNT(*) FROM (SELECT "moves".* FROM "moves" WHERE "moves"."updated_at" >= CAST($1 AS timestamptz) OR EXISTS(SELECT 1 FROM "items" AS "t1" WHERE "moves"."id" = "t1"."move_id" AND "t1"."updated_at" >= CAST($2 AS timestamptz))) AS "matching""#
    /// );
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn count_query(&self) -> Result<BuiltQuery> {
        self.check()?;
        Ok(self.count_built())
    }

    /// [`count_query`](Self::count_query) of a checked query.
    pub(crate) fn count_built(&self) -> BuiltQuery {
        crate::query::count_of(self.statement())
    }
}

#[cfg(test)]
mod tests;
