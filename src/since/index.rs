//! Index advice: the indexes each strategy needs, as DDL.

use sea_query::Index;

use super::graph::SinceGraph;
use super::SinceStrategy;
use crate::schema::{AnyColumn, Ident, Table, MAX_IDENT_BYTES};
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
    pub fn new(strategy: SinceStrategy) -> IndexOptions {
        IndexOptions {
            strategy,
            concurrently: false,
        }
    }

    /// `CREATE INDEX CONCURRENTLY`: builds without blocking writes, but
    /// cannot run inside a transaction (run each statement with
    /// [`Executor::execute_outside_transaction`](crate::Executor::execute_outside_transaction)).
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

/// `<table>_<col>_…_since_idx`, cut to PostgreSQL's 63 bytes with a hash of
/// the full name when too long, so different indexes keep different names.
///
/// sea-query writes an index name between quotes **without escaping** embedded
/// quotes, so every `"` of a table or column name becomes `_` here.
fn index_name(table: &Table, cols: &[AnyColumn]) -> Ident {
    let mut name = table.name().as_str().to_owned();
    for c in cols {
        name.push('_');
        name.push_str(c.name().as_str());
    }
    name.push_str("_since_idx");
    let name = name.replace('"', "_");
    let mut name = name;
    if name.len() > MAX_IDENT_BYTES {
        // FNV-1a of the full name, so truncation cannot merge two names.
        let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        let suffix = format!("_{:012x}", hash & 0xffff_ffff_ffff);
        let mut cut = MAX_IDENT_BYTES - suffix.len();
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
        name.push_str(&suffix);
    }
    // Non-empty, at most 63 bytes; a NUL cannot come from validated parts.
    Ident::new(&name).unwrap_or_else(|_| Ident::fixed("since_idx"))
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
    /// - [`SinceStrategy::Auto`]: both of the above, since it may choose
    ///   either.
    ///
    /// ```
    /// use chrono::{DateTime, Utc};
    /// use pgpatterns::{IndexOptions, Relation, SinceGraph, SinceStrategy, Table};
    /// let moves = Table::new("moves")?;
    /// let shipments = Table::new("mto_shipments")?;
    /// let id = moves.column::<i64>("id")?;
    /// let graph = SinceGraph::new(&id, &moves.column::<DateTime<Utc>>("updated_at")?)?.related(
    ///     "shipments",
    ///     Relation::new(&shipments.column::<i64>("move_id")?, &id),
    ///     &shipments.column::<DateTime<Utc>>("updated_at")?,
    /// )?;
    /// let ddl = graph.index_advice(IndexOptions::new(SinceStrategy::UnionIn).concurrently(true));
    /// let sql: Vec<&str> = ddl.iter().map(|q| q.sql()).collect();
    /// assert_eq!(sql, [
    ///     r#"CREATE INDEX CONCURRENTLY IF NOT EXISTS "moves_updated_at_id_since_idx" ON "moves" ("updated_at", "id")"#,
    ///     r#"CREATE INDEX CONCURRENTLY IF NOT EXISTS "mto_shipments_move_id_since_idx" ON "mto_shipments" ("move_id")"#,
    ///     r#"CREATE INDEX CONCURRENTLY IF NOT EXISTS "mto_shipments_updated_at_since_idx" ON "mto_shipments" ("updated_at")"#,
    /// ]);
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
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
