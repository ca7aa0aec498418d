//! The relation graph: a root table and labelled paths to related tables.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Arc;

use chrono::{DateTime, FixedOffset, Offset, Utc};
use sea_query::Expr;

use super::change::{ChangeColumn, IntoChangeColumn};
use super::{SinceQuery, SINCE_DEFAULT_MAX_LIMIT};
use crate::schema::{AnyColumn, Column, Ident, Relation, Table};
use crate::spec::Problems;
use crate::types::SqlType;
use crate::{Error, Result};

/// A path from the root to a related table whose changes count as changes of
/// the root: one or more foreign-key hops and the far table's change column.
#[derive(Debug, Clone)]
pub(crate) struct SincePath {
    pub(crate) label: Arc<str>,
    /// Each hop oriented root-side → far side (`from_table` is the nearer
    /// table), with the original FK-holding side remembered.
    pub(crate) hops: Vec<Hop>,
    pub(crate) change: ChangeColumn,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct Hop {
    /// `near → far` (`pairs` are `(near column, far column)`).
    pub(crate) rel: Relation,
    /// `true` when the far table holds the foreign key (a child), `false`
    /// when the near table does (a parent).
    pub(crate) fk_on_far: bool,
}

/// A path resolved against aliases: each hop's relation between the aliased
/// near and far tables, and the change column on the last alias.
#[derive(Debug, Clone)]
pub(crate) struct Resolved {
    pub(crate) hops: Vec<Relation>,
    pub(crate) change: ChangeColumn,
}

/// A root table and the relations whose changes count as changes of a root
/// row: children pointing at it, parents it points at, and multi-hop paths
/// with the foreign key pointing either way at each hop.
///
/// The graph is built once and validated as it is built; then
/// [`since`](Self::since) makes a [`SinceQuery`] for one point in time.
///
/// ```
/// use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
/// use pgpatterns::{Relation, SinceGraph, SinceStrategy, Table};
///
/// let moves = Table::new("moves")?;
/// let orders = Table::new("orders")?;
/// let shipments = Table::new("mto_shipments")?;
/// let move_id = moves.column::<i64>("id")?;
///
/// let graph = SinceGraph::new(&move_id, &moves.column::<NaiveDateTime>("updated_at")?)
///     .filter(moves.column::<bool>("show")?.eq(true))
///     .related(
///         "orders", // a parent: moves.orders_id → orders.id
///         Relation::new(&moves.column::<i64>("orders_id")?, &orders.column::<i64>("id")?),
///         &orders.column::<NaiveDateTime>("updated_at")?,
///     )
///     .related(
///         "shipments", // a child: mto_shipments.move_id → moves.id
///         Relation::new(&shipments.column::<i64>("move_id")?, &move_id),
///         &shipments.column::<DateTime<Utc>>("updated_at")?,
///     );
///
/// let since = Utc.with_ymd_and_hms(2021, 7, 16, 0, 0, 0).unwrap();
/// let q = graph.since(since).strategy(SinceStrategy::UnionIn);
/// assert_eq!(
///     q.build()?.sql(),
///     r#"SELECT "moves".* FROM "moves" WHERE "moves"."show" = CAST($1 AS bool) AND ("moves"."updated_at" >= CAST($2 AS timestamp) OR "moves"."orders_id" IN (SELECT "t1"."id" FROM "orders" AS "t1" WHERE "t1"."updated_at" >= CAST($3 AS timestamp)) OR "moves"."id" IN (SELECT "t2"."move_id" FROM "mto_shipments" AS "t2" WHERE "t2"."updated_at" >= CAST($4 AS timestamptz)))"#
/// );
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Debug)]
#[must_use = "a graph does nothing until a query is built from it"]
pub struct SinceGraph<K> {
    pub(crate) root: Table,
    pub(crate) key: AnyColumn,
    pub(crate) root_change: ChangeColumn,
    pub(crate) root_label: Arc<str>,
    pub(crate) filters: Vec<Expr>,
    pub(crate) paths: Vec<SincePath>,
    pub(crate) offset: FixedOffset,
    pub(crate) max_limit: i64,
    /// The root's trigger-maintained "last changed" column
    /// ([`tracked_by`](SinceGraph::tracked_by)).
    pub(crate) tracked: Option<Column<DateTime<Utc>>>,
    pub(crate) problems: Problems,
    /// [`resolve`](Self::resolve)'s answer, made when a path is added:
    /// building a query only reads it.
    resolved: Arc<ResolvedGraph>,
    _key: PhantomData<fn() -> K>,
}

/// The paths with their join aliases, and the joins in the order they must
/// be written ([`SinceGraph::resolve`]).
pub(crate) type ResolvedGraph = (Vec<Resolved>, Vec<(Table, Relation)>);

impl<K> Clone for SinceGraph<K> {
    fn clone(&self) -> Self {
        SinceGraph {
            root: self.root.clone(),
            key: self.key.clone(),
            root_change: self.root_change.clone(),
            root_label: self.root_label.clone(),
            filters: self.filters.clone(),
            paths: self.paths.clone(),
            resolved: self.resolved.clone(),
            offset: self.offset,
            max_limit: self.max_limit,
            tracked: self.tracked.clone(),
            problems: self.problems.clone(),
            _key: PhantomData,
        }
    }
}

/// Same table, ignoring aliases.
pub(crate) fn same_table(a: &Table, b: &Table) -> bool {
    a.name() == b.name() && a.schema() == b.schema()
}

impl<K: SqlType> SinceGraph<K> {
    /// A graph rooted at the table of `key` (the root's primary key), whose
    /// own rows change in `change`. The root's label in
    /// [what changed](SinceQuery::changes_query) is the table name.
    ///
    /// Like every step, this never fails: the graph is checked when a query
    /// made from it is built or run ([`SinceQuery::check`]), which reports
    /// [`Error::InvalidSpec`] when `change` is not a
    /// `timestamp`/`timestamptz` column of the root table.
    pub fn new(key: &Column<K>, change: impl IntoChangeColumn) -> SinceGraph<K> {
        let mut problems = Problems::default();
        let root = key.table().clone();
        let change = problems.note(change.into_change_column());
        if root.alias().is_some() {
            problems.note::<()>(Err(Error::spec(
                "root",
                "use the root table without an alias",
            )));
        }
        if let Some(change) = &change {
            if !same_table(change.table(), &root) {
                problems.note::<()>(Err(Error::spec(
                    "change column",
                    format!(
                        "the root's change column must be on {}, not on {}",
                        root.display_name(),
                        change.table().display_name()
                    ),
                )));
            }
        }
        // A refused change column leaves a stand-in the check never lets
        // through to SQL.
        let change =
            change.unwrap_or_else(|| ChangeColumn::Timestamptz(root.col(key.name().clone())));
        SinceGraph {
            root_label: Arc::from(root.name().as_str()),
            root: root.clone(),
            key: key.erase(),
            root_change: change.of(&root),
            filters: Vec::new(),
            paths: Vec::new(),
            offset: Utc.fix(),
            max_limit: SINCE_DEFAULT_MAX_LIMIT,
            tracked: None,
            problems,
            resolved: Arc::default(),
            _key: PhantomData,
        }
    }

    /// A base predicate on the root rows (`show = TRUE`), built from typed
    /// columns of the root table; every value in it is bound. Predicates are
    /// ANDed. Roots failing them never match, whatever changed.
    pub fn filter(mut self, condition: Expr) -> SinceGraph<K> {
        self.filters.push(condition);
        self
    }

    /// A one-hop relation: a child table whose foreign key points at the root
    /// (`Relation::new(&child.move_id, &moves.id)`) or a parent the root
    /// points at (`Relation::new(&moves.orders_id, &orders.id)`). Same as
    /// [`path`](Self::path) with one hop.
    pub fn related(
        self,
        label: impl AsRef<str>,
        relation: Relation,
        change: impl IntoChangeColumn,
    ) -> SinceGraph<K> {
        self.path(label, [relation], change)
    }

    /// A path of foreign-key hops from the root to a related table, whose
    /// `change` column counts as a change of the root rows it reaches.
    ///
    /// Each [`Relation`] is written as declared (`from` holds the foreign key,
    /// `to` is the referenced key); the hop may be walked either way: the
    /// first must touch the root table, each next one the table the previous
    /// hop reached. `label` names the path in
    /// [what changed](SinceQuery::changes_query).
    ///
    /// The graph is refused (when a query of it is checked) for an empty or
    /// duplicate label, no hops, a hop that does not connect to the table
    /// reached so far, or a change column that is not on the last table (or
    /// not a time type).
    pub fn path(
        mut self,
        label: impl AsRef<str>,
        hops: impl IntoIterator<Item = Relation>,
        change: impl IntoChangeColumn,
    ) -> SinceGraph<K> {
        if let Some(path) = self
            .problems
            .note(self.checked_path(label.as_ref(), hops, change))
        {
            self.paths.push(path);
            self.resolved = Arc::new(self.resolve_paths());
        }
        self
    }

    /// The path of [`path`](Self::path), or why it is refused.
    fn checked_path(
        &self,
        label: &str,
        hops: impl IntoIterator<Item = Relation>,
        change: impl IntoChangeColumn,
    ) -> Result<SincePath> {
        if label.is_empty() {
            return Err(Error::spec("label", "must not be empty"));
        }
        if &*self.root_label == label || self.paths.iter().any(|p| &*p.label == label) {
            return Err(Error::spec("label", format!("{label:?} is already used")));
        }
        let change = change.into_change_column()?;
        let mut current = self.root.clone();
        let mut oriented = Vec::new();
        for (i, rel) in hops.into_iter().enumerate() {
            let hop = if same_table(rel.from_table(), &current) {
                Hop {
                    rel,
                    fk_on_far: false,
                }
            } else if same_table(rel.to_table(), &current) {
                Hop {
                    rel: rel.reversed(),
                    fk_on_far: true,
                }
            } else {
                return Err(Error::spec(
                    "path",
                    format!(
                        "{label}: hop {} ({rel:?}) does not connect to {}, the table reached so far",
                        i + 1,
                        current.display_name()
                    ),
                ));
            };
            current = hop.rel.to_table().clone();
            oriented.push(hop);
        }
        if oriented.is_empty() {
            return Err(Error::spec(
                "path",
                format!("{label}: needs at least one hop"),
            ));
        }
        if !same_table(change.table(), &current) {
            return Err(Error::spec(
                "change column",
                format!(
                    "{label}: the change column {} is on {}, but the path ends at {}",
                    change.erase().name(),
                    change.table().display_name(),
                    current.display_name()
                ),
            ));
        }
        Ok(SincePath {
            label: Arc::from(label),
            hops: oriented,
            change,
        })
    }

    /// How `timestamp` (without time zone) columns are read: as wall-clock
    /// times at this fixed offset from UTC. The default is UTC. (PostgreSQL
    /// stores no zone in a `timestamp`; pick the offset your application
    /// writes them in. Zones with daylight saving time cannot be expressed as
    /// one offset: store `timestamptz` for those.)
    pub fn timestamp_offset(mut self, offset: FixedOffset) -> SinceGraph<K> {
        self.offset = offset;
        self
    }

    /// The largest page [`SinceQuery::page_query`] accepts (default
    /// [`SINCE_DEFAULT_MAX_LIMIT`](crate::SINCE_DEFAULT_MAX_LIMIT)); also bounds the
    /// keys of one [what changed](SinceQuery::changes_query) query. A
    /// maximum below 1 is refused when a query of the graph is checked.
    pub fn max_limit(mut self, max: i64) -> SinceGraph<K> {
        if self
            .problems
            .note(Error::at_least("max_limit", max, 1))
            .is_some()
        {
            self.max_limit = max;
        }
        self
    }

    /// The root's `timestamptz` column that triggers keep equal to the
    /// newest change time over the root and every path of the graph
    /// ([`track`](Self::track) installs them): what
    /// [`SinceStrategy::Tracked`](super::SinceStrategy::Tracked) filters on,
    /// and what [`SinceStrategy::Auto`](super::SinceStrategy::Auto) uses once
    /// the triggers are installed and enabled.
    ///
    /// Refused when a query of the graph is checked (field `"tracked_by"`)
    /// when the column is not on the root table, or is the key, the root's
    /// change column or a column a path joins on (the trigger writes it).
    ///
    /// ```
    /// use chrono::{DateTime, TimeZone, Utc};
    /// use pgpatterns::{Relation, SinceGraph, SinceStrategy, Table};
    /// let moves = Table::new("moves")?;
    /// let items = Table::new("items")?;
    /// let id = moves.column::<i64>("id")?;
    /// let graph = SinceGraph::new(&id, &moves.column::<DateTime<Utc>>("updated_at")?)
    ///     .filter(moves.column::<bool>("show")?.eq(true))
    ///     .related("items", Relation::new(&items.column::<i64>("move_id")?, &id),
    ///              &items.column::<DateTime<Utc>>("updated_at")?)
    ///     .tracked_by(&moves.column::<DateTime<Utc>>("changed_at")?);
    /// let q = graph
    ///     .since(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap())
    ///     .strategy(SinceStrategy::Tracked);
    /// assert_eq!(
    ///     q.build()?.sql(),
    ///     r#"SELECT "moves".* FROM "moves" WHERE "moves"."show" = CAST($1 AS bool) AND "moves"."changed_at" >= CAST($2 AS timestamptz)"#
    /// );
    /// // the key, the change column or a join column cannot be tracked into
    /// let bad = graph.clone().tracked_by(&moves.column::<DateTime<Utc>>("updated_at")?);
    /// assert!(bad.since(Utc::now()).check().is_err());
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    pub fn tracked_by(mut self, column: &Column<DateTime<Utc>>) -> SinceGraph<K> {
        self.tracked = Some(column.clone());
        self
    }

    /// The tracking column, if any ([`tracked_by`](Self::tracked_by)).
    #[must_use]
    pub fn tracked_column(&self) -> Option<&Column<DateTime<Utc>>> {
        self.tracked.as_ref()
    }

    /// Why the tracking column cannot be used (checked with the graph).
    pub(crate) fn tracking_problem(&self) -> Result<()> {
        let Some(col) = &self.tracked else {
            return Ok(());
        };
        let bad = |why: String| Err(Error::spec("tracked_by", why));
        if !same_table(col.table(), &self.root) {
            return bad(format!(
                "the tracking column must be on the root table {}, not on {}",
                self.root.display_name(),
                col.table().display_name()
            ));
        }
        let name = col.name();
        if name == self.key.name() || name == self.root_change.erase().name() {
            return bad(format!(
                "{} is the root's key or change column; track into a column of its own",
                name.as_str()
            ));
        }
        for p in &self.paths {
            for (near, _) in p.hops[0].rel.pairs() {
                if near.name() == name {
                    return bad(format!(
                        "{} is a column the path {} joins on",
                        name.as_str(),
                        p.label
                    ));
                }
            }
        }
        Ok(())
    }

    /// The root table.
    #[must_use]
    pub fn root(&self) -> &Table {
        &self.root
    }

    /// The root key column.
    #[must_use]
    pub fn key(&self) -> &AnyColumn {
        &self.key
    }

    /// The labels of the root (first) and of each path, in the order added.
    #[must_use]
    pub fn labels(&self) -> Vec<&str> {
        std::iter::once(&*self.root_label)
            .chain(self.paths.iter().map(|p| &*p.label))
            .collect()
    }

    /// The query for roots changed at or after `since` (inclusive `>=`),
    /// with the default strategy [`SinceStrategy::UnionIn`](super::SinceStrategy::UnionIn).
    ///
    /// The query is refused when checked ([`SinceQuery::check`]: field
    /// `"since"`) when `since` is before PostgreSQL's first timestamp
    /// (4714-11-24 BC), or cannot be expressed in the `timestamp` offset (at
    /// the edge of chrono's or PostgreSQL's range): the server would refuse
    /// it.
    pub fn since(&self, since: DateTime<Utc>) -> SinceQuery<K> {
        SinceQuery::new(self.clone(), since)
    }

    /// Every path resolved against table aliases `t1`, `t2`, … (`j1`, … for a
    /// root named like them); paths
    /// sharing a prefix of hops share its aliases (one join per prefix).
    /// Also returns the joins in the order they must be written.
    pub(crate) fn resolve(&self) -> &ResolvedGraph {
        &self.resolved
    }

    /// Computes [`resolve`](Self::resolve)'s answer.
    fn resolve_paths(&self) -> ResolvedGraph {
        let mut aliases: HashMap<Vec<Relation>, Table> = HashMap::new();
        // Aliases `t1`, `t2`, …, or `j1`, … when the (unaliased) root table
        // is itself called `t<digits>`, so they never shadow it.
        let root = self.root.name().as_str();
        let prefix_char = match root.strip_prefix('t') {
            Some(rest) if !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) => 'j',
            _ => 't',
        };
        let mut joins = Vec::new();
        let mut resolved = Vec::with_capacity(self.paths.len());
        for p in &self.paths {
            let mut prefix = Vec::new();
            let mut near = self.root.clone();
            let mut hops = Vec::new();
            for hop in &p.hops {
                prefix.push(hop.rel.clone());
                let far = match aliases.get(&prefix) {
                    Some(t) => t.clone(),
                    None => {
                        let alias = Ident::new(format!("{prefix_char}{}", aliases.len() + 1))
                            .expect("a letter and a number is a valid identifier");
                        let t = hop.rel.to_table().with_alias(alias);
                        aliases.insert(prefix.clone(), t.clone());
                        joins.push((t.clone(), hop.rel.between(&near, &t)));
                        t
                    }
                };
                hops.push(hop.rel.between(&near, &far));
                near = far;
            }
            resolved.push(Resolved {
                hops,
                change: p.change.of(&near),
            });
        }
        (resolved, joins)
    }
}
