//! Index advice: the indexes each strategy needs, as DDL.

use sea_query::Index;

use super::graph::SinceGraph;
use super::SinceStrategy;
use crate::ddl::derived_name;
use crate::schema::{AnyColumn, Ident, Table};
use crate::types::SqlType;
use crate::BuiltQuery;

/// Options for [`SinceGraph::index_advice`]. `IndexOptions::from(strategy)`
/// is the short form (no `CONCURRENTLY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexOptions {
    strategy: SinceStrategy,
    concurrently: bool,
}

impl IndexOptions {
    /// Advice for `strategy`, built without `CONCURRENTLY`.
    #[must_use]
    pub fn new(strategy: SinceStrategy) -> IndexOptions {
        IndexOptions {
            strategy,
            concurrently: false,
        }
    }

    /// `CREATE INDEX CONCURRENTLY`: builds without blocking writes, but
    /// cannot run inside a transaction (run each statement with
    /// [`BuiltQuery::execute_outside_transaction`](crate::BuiltQuery::execute_outside_transaction)).
    #[must_use]
    pub fn concurrently(mut self, yes: bool) -> IndexOptions {
        self.concurrently = yes;
        self
    }
}

impl From<SinceStrategy> for IndexOptions {
    fn from(strategy: SinceStrategy) -> Self {
        IndexOptions::new(strategy)
    }
}

/// `<table>_<col>_…_since_<hash>`: derived from the schema, the table and
/// every column (see [`derived_name`]), so two different indexes never share
/// a name — not even `h_x (y)` and `h (x_y)` — and PostgreSQL's 63-byte cut
/// cannot merge two.
fn index_name(table: &Table, cols: &[AnyColumn]) -> Ident {
    let mut parts = vec![
        table.schema().map_or("", |s| s.as_str()),
        table.name().as_str(),
    ];
    parts.extend(cols.iter().map(|c| c.name().as_str()));
    parts.push("since");
    derived_name(&parts)
}

impl<K: SqlType> SinceGraph<K> {
    /// `CREATE INDEX [CONCURRENTLY] IF NOT EXISTS` statements for the
    /// indexes `strategy` relies on, without duplicates:
    ///
    /// - every strategy: the foreign-key columns of each hop (on the table
    ///   holding the key; referenced keys are unique, so already indexed),
    ///   and `(change, key)` on the root for [`PageOrder::ChangeTime`](crate::PageOrder::ChangeTime)
    ///   pages;
    /// - [`SinceStrategy::UnionIn`] and [`SinceStrategy::SemiJoin`]: the
    ///   change column of every path's last table (each `UNION` branch starts
    ///   from the changed rows);
    /// - [`SinceStrategy::Exists`]: on a last hop whose far table holds the
    ///   key, `(foreign key, change)`, so each probe is answered by the index;
    /// - [`SinceStrategy::Tracked`]: `(tracked column, key)` on the root (the
    ///   window is a range scan of it), and the foreign keys above, which
    ///   the triggers' walks and recomputes probe;
    /// - [`SinceStrategy::Auto`]: all of the above (the tracked column's
    ///   index only for a graph with [`tracked_by`](SinceGraph::tracked_by)),
    ///   since it may choose any.
    ///
    /// ```
    /// use chrono::{DateTime, Utc};
    /// use pgpatterns::{IndexOptions, Relation, SinceGraph, SinceStrategy, Table};
    /// let moves = Table::new("moves")?;
    /// let shipments = Table::new("mto_shipments")?;
    /// let id = moves.column::<i64>("id")?;
    /// let graph = SinceGraph::new(&id, &moves.column::<DateTime<Utc>>("updated_at")?).related(
    ///     "shipments",
    ///     Relation::new(&shipments.column::<i64>("move_id")?, &id),
    ///     &shipments.column::<DateTime<Utc>>("updated_at")?,
    /// );
    /// let ddl = graph.index_advice(IndexOptions::new(SinceStrategy::UnionIn).concurrently(true));
    /// let sql: Vec<&str> = ddl.iter().map(|q| q.sql()).collect();
    /// assert_eq!(sql, [
    ///     r#"CREATE INDEX CONCURRENTLY IF NOT EXISTS "moves_updated_at_id_since_5f09f3a31ec7" ON "moves" ("updated_at", "id")"#,
    ///     r#"CREATE INDEX CONCURRENTLY IF NOT EXISTS "mto_shipments_move_id_since_d0c16e0bfe39" ON "mto_shipments" ("move_id")"#,
    ///     r#"CREATE INDEX CONCURRENTLY IF NOT EXISTS "mto_shipments_updated_at_since_49664e8d43ca" ON "mto_shipments" ("updated_at")"#,
    /// ]);
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    #[must_use]
    pub fn index_advice(&self, options: impl Into<IndexOptions>) -> Vec<BuiltQuery> {
        let options = options.into();
        let mut wanted: Vec<(Table, Vec<AnyColumn>)> = Vec::new();
        let mut want = |table: &Table, cols: Vec<AnyColumn>| {
            let plain = Table::clone(table);
            if !wanted.iter().any(|(t, c)| {
                t.name() == plain.name() && t.schema() == plain.schema() && c == &cols
            }) {
                wanted.push((plain, cols));
            }
        };
        let unaliased = |t: &Table| match t.schema() {
            Some(s) => Table::in_schema(s.as_str(), t.name().as_str()),
            None => Table::new(t.name().as_str()),
        };
        want(&self.root, vec![self.root_change.erase(), self.key.clone()]);
        if let (SinceStrategy::Tracked | SinceStrategy::Auto, Some(col)) =
            (options.strategy, &self.tracked)
        {
            want(&self.root, vec![col.erase(), self.key.clone()]);
        }
        for p in &self.paths {
            for (i, hop) in p.hops.iter().enumerate() {
                let last = i + 1 == p.hops.len();
                let (table, cols): (&Table, Vec<AnyColumn>) = if hop.fk_on_far {
                    (
                        hop.rel.to_table(),
                        hop.rel.pairs().iter().map(|(_, f)| f.clone()).collect(),
                    )
                } else {
                    (
                        hop.rel.from_table(),
                        hop.rel.pairs().iter().map(|(n, _)| n.clone()).collect(),
                    )
                };
                let Ok(table) = unaliased(table) else {
                    continue;
                };
                let cols: Vec<AnyColumn> = cols.iter().map(|c| c.of(&table)).collect();
                if last
                    && hop.fk_on_far
                    && matches!(
                        options.strategy,
                        SinceStrategy::Exists | SinceStrategy::Auto
                    )
                {
                    let mut with_change = cols.clone();
                    with_change.push(p.change.erase().of(&table));
                    want(&table, with_change);
                } else {
                    want(&table, cols);
                }
            }
            if matches!(
                options.strategy,
                SinceStrategy::UnionIn | SinceStrategy::SemiJoin | SinceStrategy::Auto
            ) {
                if let Ok(table) = unaliased(p.change.table()) {
                    want(&table, vec![p.change.erase().of(&table)]);
                }
            }
        }
        wanted
            .into_iter()
            .map(|(table, cols)| {
                let mut idx = Index::create();
                idx.name(index_name(&table, &cols).as_str())
                    .table(table.table_name())
                    .if_not_exists();
                for c in &cols {
                    idx.col(c.iden());
                }
                if options.concurrently {
                    idx.concurrently();
                }
                BuiltQuery::schema(&idx)
            })
            .collect()
    }
}
