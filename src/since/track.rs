//! The tracked "last changed" column: a `timestamptz` column on the root
//! kept equal to the newest change time over the root and every path of the
//! graph by statement-level triggers on every table of the graph.

use postgres_types::FromSqlOwned;
use sea_query::{
    Alias, ColumnDef, Expr, Func, JoinType, Order, PostgresQueryBuilder, Query,
    QueryStatementWriter, SelectStatement, Table as Ddl,
};

use super::change::ChangeColumn;
use super::graph::{same_table, SinceGraph};
use super::on_expr;
use crate::ddl::{
    derived_name, dollar_quote, fnv1a, free_name, quote, quote_beside, quote_table, string_literal,
    FNV_OFFSET, TRIGGER_SUFFIXES,
};
use crate::exec::{run_blocking, run_blocking_mut, BlockingExecutor};
use crate::latest::backfill_column;
use crate::query::{count_of, is_distinct_from};
use crate::schema::{AnyColumn, Ident, Table};
use crate::types::SqlType;
use crate::{
    BackfillReport, BuiltQuery, Error, Executor, Progress, Result, RowRead, Transactional,
};

/// Output column of [`Track::drift_statement`]: the value stored on the root.
pub const TRACK_STORED: &str = "stored_at";
/// Output column of [`Track::drift_statement`]: the value recomputed from
/// the graph.
pub const TRACK_FRESH: &str = "fresh_at";

/// Slots of the stamp table per hop depth (a power of two): join points
/// hash into them.
const STAMP_SLOTS: i64 = 8192;

/// A table position in the graph: the root (node 0) or the far end of a
/// distinct prefix of hops.
#[derive(Debug, Clone)]
struct Node {
    table: Table,
    /// The node nearer the root (`usize::MAX` for the root).
    parent: usize,
    /// Join columns of the hop from the parent: on the parent's table …
    near: Vec<AnyColumn>,
    /// … and on this node's table.
    far: Vec<AnyColumn>,
    /// Change columns of the paths ending here.
    changes: Vec<ChangeColumn>,
}

/// The trigger function's own names, each chosen to differ from every
/// identifier of the graph.
#[derive(Debug, Clone)]
struct InternalNames {
    new_rows: Ident,
    old_rows: Ident,
    changed: Ident,
    locked: Ident,
    slot: Ident,
    /// Walk aliases, one per depth (index 0 unused: the changed rows).
    walk: Vec<Ident>,
    /// Subtree aliases, one per depth (a changed row's own descendants).
    sub: Vec<Ident>,
    /// The per-root aggregate of the changed rows, its columns (key, the
    /// newest time of the new versions, of the old versions) and the
    /// union's columns (key, time, old version?).
    agg: Ident,
    k: Ident,
    nv: Ident,
    ov: Ident,
    v: Ident,
    o: Ident,
    /// The stored value read under the lock.
    old: Ident,
    /// Aliases: the union, a root row, the UPDATE target, the raise CTE.
    x: Ident,
    r: Ident,
    t: Ident,
    upd: Ident,
    /// PL/pgSQL variables: roots left to recompute; READ COMMITTED?
    left: Ident,
    rc: Ident,
}

/// The tracked column of a [`SinceGraph`] ([`SinceGraph::tracked_by`]): its
/// DDL, the triggers that keep it current, a batched backfill and a drift
/// check. Made by [`SinceGraph::track`].
///
/// The column holds, for each root row, the newest change time over the
/// root's own change column and the change column of every row reachable
/// along every path (existing rows only; `timestamp` columns read at the
/// graph's offset), or NULL when there is none. So `column >= T` selects
/// exactly the roots every other strategy selects for `since = T` (the
/// graph's root filters still apply at query time), as an index range scan
/// on the root: see [`SinceStrategy::Tracked`](super::SinceStrategy::Tracked).
///
/// # Triggers
///
/// Statement-level `AFTER INSERT / UPDATE / DELETE / TRUNCATE` triggers with
/// transition tables on every table of the graph run one function. For the
/// rows a statement changed (for `UPDATE`, only rows whose join or change
/// columns changed, old and new versions both), it walks back along every
/// path the table is on to the affected roots — a parent's change reaches
/// every root below it, a re-parented child both its old and new roots, a
/// deleted child the roots it left. For a table on one node of the graph
/// the update is incremental and set-based: one statement aggregates the
/// changed rows per root — the newest time the new versions bring (a row's
/// own change columns and, for a row with paths below it, its
/// descendants') and the newest the old versions brought — locks those
/// roots in key order and raises each to `GREATEST(stored, new)` where
/// that is exact: no old version counted, the new ones bring at least as
/// much, or the old ones were below the stored value (read under the lock,
/// so the latest committed one). Only the roots left — where a deleted,
/// re-parented or lowered row may have held the value — are recomputed
/// from the tables, by a second statement run only then. So inserts and
/// growing times never read the other paths, and deleting old rows only
/// locks. The root table's own rows, and tables on several nodes, lock
/// their roots in key order and recompute them. At `READ COMMITTED` a root
/// whose value does not change is locked but not rewritten (no dead tuple,
/// no WAL); at the stricter levels every affected root is written (see
/// below). The trigger's own write of the root is marked with a
/// transaction-local setting, so the root's `UPDATE` trigger skips it
/// without comparing transition tables (unless a `BEFORE` row trigger on
/// the root could have changed more than the column).
/// `TRUNCATE` recomputes every root. For a write of at most 100 rows
/// ([`small_statements`](Self::small_statements)) the trigger's statements
/// run as static SQL, planned once per session; for larger ones through
/// `EXECUTE`, planned for the transition table at hand (a kept plan made
/// for a few rows would serve a bulk write badly, and the other way
/// round). The function runs with `jit = off`.
///
/// # Concurrency
///
/// Locking the affected roots is not enough across several hops: one
/// transaction inserting a shipment that points at an address, and another
/// updating that address, reach disjoint roots through views that miss each
/// other's uncommitted row. So each trigger first **stamps** every join
/// point it passes — the hop and the joined values, hashed into one of
/// 8192 rows per hop depth of a small stamp table that is installed with the triggers
/// (unlogged: its rows are only lock objects, upserted, so it costs no WAL
/// and an empty table after a crash works the same) —
/// level by level from the changed rows towards the roots, each level in a
/// statement of its own, then locks the roots in key order and recomputes
/// them. Two writers whose changes meet at a join point update the same
/// stamp row, so the second waits for the first to commit:
///
/// - `READ COMMITTED` (the default): the waiting writer's next statements
///   take fresh snapshots, so its walk and recompute see the first writer's
///   rows. Always right.
/// - `REPEATABLE READ` and `SERIALIZABLE`: the waiting writer cannot see
///   rows committed after its snapshot, and fails with a serialization
///   error (SQLSTATE `40001`) at the stamp or the root instead of storing a
///   stale value: at these levels every affected root is **written**, even
///   when its value stays, and every stamp is a write. Retry the
///   transaction, as these levels require anyway.
///
/// Stamps are taken deepest join points first and roots last, in key
/// order, so single statements do not deadlock on each other. A
/// transaction of several statements on tables of the graph takes each
/// statement's locks in turn and can deadlock with another such
/// transaction (`40P01`, as any application locking rows in more than one
/// order): retry it. A statement on a table of the graph updates the roots
/// whose value changes (at the stricter levels, every root it reaches) in
/// one or two `UPDATE` statements, so the root table's `UPDATE` triggers
/// fire for them. Unrelated writers that hash to the same
/// stamp row wait for each other (rarely: 8192 rows per depth).
///
/// Not covered: a row inserted into a referenced table *after* another
/// transaction inserted a row referencing it that is not yet committed
/// (foreign keys rule that out).
///
/// # Names
///
/// The function's name is derived from the root table (with its schema)
/// and the column ([`function_name`](Self::function_name); override with
/// [`named`](Self::named)); the triggers' and the stamp table's from it.
/// Installing and uninstalling refuse with [`Error::ObjectConflict`] when
/// an object of those names exists that pgpatterns did not create for this
/// graph (recognised by comments, [`marker`](Self::marker)): nothing is ever
/// replaced or dropped that is not this column's own. A graph changed after
/// installing (a path added) is another graph: uninstall with the old one
/// first.
#[derive(Debug, Clone)]
pub struct Track {
    root: Table,
    key: AnyColumn,
    column: AnyColumn,
    offset: chrono::FixedOffset,
    nodes: Vec<Node>,
    /// Distinct tables of the graph, the root first; the index is the
    /// trigger's argument.
    tables: Vec<Table>,
    /// `GREATEST(root change, (SELECT max(..) FROM path ..), ..)` over the
    /// unaliased root.
    fresh: Expr,
    name: Ident,
    names: InternalNames,
    /// Statements of at most this many changed rows run static SQL.
    small: i64,
}

/// The table without its alias (DDL and UPDATE targets use real names).
fn plain(table: &Table) -> Table {
    match table.schema() {
        Some(schema) => Table::in_schema(schema.as_str(), table.name().as_str()),
        None => Table::new(table.name().as_str()),
    }
    .unwrap_or_else(|_| table.clone())
}

/// `"alias"."column"`.
fn qcol(alias: &Ident, col: &AnyColumn) -> String {
    format!("{}.{}", quote(alias), quote(col.name()))
}

/// How the trigger function runs a statement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// Through `EXECUTE`: planned on each call, for the transition table
    /// at hand (statements of more than [`SMALL`] rows). A static statement
    /// keeps the plan of its first call for the session: one made for a
    /// 5000-row bulk insert then served every one-row insert with hash
    /// joins over whole tables.
    PerCall,
    /// As static SQL: planned once per session and kept (statements of at
    /// most [`SMALL`] rows, whose plans are all alike), which saves most of
    /// a one-row statement's cost.
    Kept,
}

/// Whether the transaction runs at READ COMMITTED.
const READ_COMMITTED: &str =
    "(pg_catalog.current_setting('transaction_isolation') = 'read committed')";
/// Transition tables of at most this many rows run the [`Plan::Kept`]
/// statements, by default ([`Track::small_statements`]).
const SMALL: i64 = 100;
/// Placeholder in statement text for "is the transaction READ COMMITTED?"
/// (NUL never occurs in identifiers nor in our text).
const RC: &str = "\u{0}rc\u{0}";
/// Placeholder for the `INTO` of a statement's count of roots left.
const INTO: &str = "\u{0}into\u{0}";

/// An expression's text with values inlined (this crate's own constants).
fn expr_text(e: Expr) -> String {
    text(&Query::select().expr(e).to_owned())
        .trim_start_matches("SELECT ")
        .to_owned()
}

/// Statement text with values inlined; only for statements whose values
/// are this crate's own constants (an offset in seconds).
fn text(statement: &impl QueryStatementWriter) -> String {
    statement.to_string(PostgresQueryBuilder)
}

impl<K: SqlType> SinceGraph<K> {
    /// DDL and maintenance for the tracking column set with
    /// [`tracked_by`](Self::tracked_by): triggers on every table of the
    /// graph keep it equal to the newest change time of each root.
    ///
    /// ```
    /// use chrono::{DateTime, NaiveDateTime, Utc};
    /// use pgpatterns::{Relation, SinceGraph, Table};
    /// let moves = Table::new("moves")?;
    /// let ships = Table::new("shipments")?;
    /// let id = moves.column::<i64>("id")?;
    /// let graph = SinceGraph::new(&id, &moves.column::<NaiveDateTime>("updated_at")?)
    ///     .related("shipments", Relation::new(&ships.column::<i64>("move_id")?, &id),
    ///              &ships.column::<DateTime<Utc>>("updated_at")?)
    ///     .tracked_by(&moves.column::<DateTime<Utc>>("changed_at")?);
    /// let track = graph.track()?;
    /// assert_eq!(track.function_name().as_str(), "pgp_track_moves_changed_at_9aabaeb3f226");
    /// assert_eq!(
    ///     track.add_column().sql(),
    ///     r#"ALTER TABLE "moves" ADD COLUMN IF NOT EXISTS "changed_at" timestamptz"#
    /// );
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    ///
    /// # Errors
    /// A problem recorded by a step (see
    /// [`SinceQuery::check`](super::SinceQuery::check));
    /// [`Error::InvalidSpec`] without a tracking column.
    pub fn track(&self) -> Result<Track> {
        self.problems.check()?;
        self.tracking_problem()?;
        let column = self.tracked.clone().ok_or_else(|| {
            Error::spec(
                "tracked_by",
                "name the root's tracking column first: .tracked_by(&col)",
            )
        })?;
        let root = plain(&self.root);
        // Nodes: the root, then one per distinct prefix of hops.
        let mut nodes = vec![Node {
            table: root.clone(),
            parent: usize::MAX,
            near: Vec::new(),
            far: Vec::new(),
            changes: vec![self.root_change.of(&root)],
        }];
        let mut prefixes: Vec<Vec<crate::Relation>> = vec![Vec::new()];
        for p in &self.paths {
            let mut prefix = Vec::new();
            let mut at = 0;
            for hop in &p.hops {
                prefix.push(hop.rel.clone());
                at = match prefixes.iter().position(|q| *q == prefix) {
                    Some(i) => i,
                    None => {
                        let near_t = nodes[at].table.clone();
                        let far_t = plain(hop.rel.to_table());
                        nodes.push(Node {
                            near: hop.rel.pairs().iter().map(|(n, _)| n.of(&near_t)).collect(),
                            far: hop.rel.pairs().iter().map(|(_, f)| f.of(&far_t)).collect(),
                            table: far_t,
                            parent: at,
                            changes: Vec::new(),
                        });
                        prefixes.push(prefix.clone());
                        nodes.len() - 1
                    }
                };
            }
            let t = nodes[at].table.clone();
            nodes[at].changes.push(p.change.of(&t));
        }
        let mut tables: Vec<Table> = Vec::new();
        for n in &nodes {
            if !tables.iter().any(|t| same_table(t, &n.table)) {
                tables.push(n.table.clone());
            }
        }
        // The value: the root's own change and one MAX per path.
        let (paths, _) = self.resolve();
        let terms: Vec<Expr> = std::iter::once(
            self.root_change
                .instant_of(self.root_change.of(&root).expr(), &self.offset),
        )
        .chain(paths.iter().map(|p| {
            let first = &p.hops[0];
            let mut sub = Query::select();
            sub.expr(Func::max(
                p.change.instant_of(p.change.expr(), &self.offset),
            ))
            .from(first.to_table().table_ref());
            for h in &p.hops[1..] {
                sub.join(JoinType::InnerJoin, h.to_table().table_ref(), on_expr(h));
            }
            sub.and_where(on_expr(first));
            Expr::SubQuery(None, Box::new(sub.into()))
        }))
        .collect();
        let fresh = Expr::from(Func::greatest(terms));
        let schema = root.schema().map_or("", |s| s.as_str()).to_owned();
        let name = derived_name(&[
            "pgp_track",
            &schema,
            root.name().as_str(),
            column.name().as_str(),
        ]);
        let mut taken: Vec<String> = vec![schema];
        for n in &nodes {
            taken.push(n.table.name().as_str().to_owned());
            if let Some(s) = n.table.schema() {
                taken.push(s.as_str().to_owned());
            }
            for c in n.near.iter().chain(&n.far) {
                taken.push(c.name().as_str().to_owned());
            }
            for c in &n.changes {
                taken.push(c.erase().name().as_str().to_owned());
            }
        }
        taken.push(self.key.name().as_str().to_owned());
        taken.push(column.name().as_str().to_owned());
        // the value's own aliases (t1, …)
        taken.extend((1..=nodes.len()).flat_map(|i| [format!("t{i}"), format!("j{i}")]));
        let pick = |base: &str, taken: &[String]| {
            let n = free_name(base, taken.iter().map(String::as_str));
            Ident::new(&n).unwrap_or_else(|_| Ident::fixed("pgp_internal"))
        };
        let depth = nodes.len();
        let names = InternalNames {
            new_rows: pick("pgp_new_rows", &taken),
            old_rows: pick("pgp_old_rows", &taken),
            changed: pick("pgp_changed", &taken),
            locked: pick("pgp_locked", &taken),
            slot: pick("pgp_slot", &taken),
            walk: (0..=depth)
                .map(|i| pick(&format!("pgp_w{i}_"), &taken))
                .collect(),
            sub: (0..=depth)
                .map(|i| pick(&format!("pgp_s{i}_"), &taken))
                .collect(),
            agg: pick("pgp_agg", &taken),
            k: pick("pgp_k", &taken),
            nv: pick("pgp_nv", &taken),
            ov: pick("pgp_ov", &taken),
            v: pick("pgp_v", &taken),
            o: pick("pgp_o", &taken),
            old: pick("pgp_old", &taken),
            x: pick("pgp_x", &taken),
            r: pick("pgp_r", &taken),
            t: pick("pgp_t", &taken),
            upd: pick("pgp_upd", &taken),
            left: pick("pgp_left", &taken),
            rc: pick("pgp_rc", &taken),
        };
        Ok(Track {
            key: self.key.of(&root),
            column: column.erase().of(&root),
            offset: self.offset,
            root,
            nodes,
            tables,
            fresh,
            name,
            names,
            small: SMALL,
        })
    }
}

impl Track {
    /// Names the trigger function, triggers and stamp table after `base`
    /// instead of the derived `pgp_track_<root>_<column>_<hash>`.
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] for an invalid name.
    pub fn named(mut self, base: impl AsRef<str>) -> Result<Track> {
        self.name = Ident::new(base)?;
        Ok(self)
    }

    /// Statements that change at most `rows` rows of a table run the
    /// trigger's statements as static SQL, planned once per session and
    /// kept; larger ones run them through `EXECUTE`, planned for the
    /// transition table at hand. Default 100: one-row writes then pay no
    /// planning, and a plan made for a few rows never serves a bulk write.
    /// `0` plans every statement per call.
    ///
    /// ```
    /// # use chrono::{DateTime, NaiveDateTime, Utc};
    /// # use pgpatterns::{Relation, SinceGraph, Table};
    /// # let moves = Table::new("moves")?;
    /// # let id = moves.column::<i64>("id")?;
    /// let graph = SinceGraph::new(&id, &moves.column::<NaiveDateTime>("updated_at")?)
    ///     .tracked_by(&moves.column::<DateTime<Utc>>("changed_at")?);
    /// let track = graph.track()?.small_statements(0)?;
    /// assert!(track.function().sql().contains("<= 0 THEN"));
    /// assert!(graph.track()?.small_statements(-1).is_err());
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for a negative count.
    pub fn small_statements(mut self, rows: i64) -> Result<Track> {
        if rows < 0 {
            return Err(Error::spec(
                "small_statements",
                format!("the row count must be 0 or more, not {rows}"),
            ));
        }
        self.small = rows;
        Ok(self)
    }

    /// The trigger function's name (in the root table's schema, or the
    /// first schema of `search_path`).
    #[must_use]
    pub fn function_name(&self) -> &Ident {
        &self.name
    }

    /// The stamp table's name (beside the function).
    #[must_use]
    pub fn stamp_table_name(&self) -> Ident {
        derived_name(&[self.name.as_str(), "stamps"])
    }

    /// The tracked column on the root table.
    #[must_use]
    pub fn column(&self) -> &AnyColumn {
        &self.column
    }

    /// Every table of the graph, the root first: each gets the triggers.
    #[must_use]
    pub fn tables(&self) -> &[Table] {
        &self.tables
    }

    fn stamps(&self) -> String {
        quote_beside(&self.root, &self.stamp_table_name())
    }

    /// `ALTER TABLE root ADD COLUMN IF NOT EXISTS column timestamptz`.
    #[must_use]
    pub fn add_column(&self) -> BuiltQuery {
        BuiltQuery::schema(
            Ddl::alter()
                .table(self.root.table_name())
                .add_column_if_not_exists(
                    ColumnDef::new(self.column.iden())
                        .custom(Alias::new("timestamptz"))
                        .to_owned(),
                ),
        )
    }

    /// The relevant columns of table `ti` (by name, each once): the key and
    /// change columns, and every column a hop joins on.
    fn relevant(&self, ti: usize) -> Vec<AnyColumn> {
        let table = &self.tables[ti];
        let mut out: Vec<AnyColumn> = Vec::new();
        let mut add = |c: &AnyColumn| {
            if !out.iter().any(|o| o.name() == c.name()) {
                out.push(c.clone());
            }
        };
        for (i, n) in self.nodes.iter().enumerate() {
            if same_table(&n.table, table) {
                if i == 0 {
                    add(&self.key);
                }
                n.far.iter().for_each(&mut add);
                n.changes.iter().for_each(|c| add(&c.erase()));
                for ch in self.nodes.iter().filter(|ch| ch.parent == i) {
                    ch.near.iter().for_each(&mut add);
                }
            }
        }
        out
    }

    /// The changed rows of table `ti` for `op` (`INSERT`, `DELETE`,
    /// `UPDATE`) as a subquery over the transition tables: for `UPDATE`,
    /// old and new versions of rows whose relevant columns changed.
    fn changed_rows(&self, ti: usize, op: &str) -> String {
        let cols: Vec<String> = self.relevant(ti).iter().map(|c| quote(c.name())).collect();
        let cols = cols.join(", ");
        let (new, old) = (quote(&self.names.new_rows), quote(&self.names.old_rows));
        match op {
            "INSERT" => format!("SELECT {cols} FROM {new}"),
            "DELETE" => format!("SELECT {cols} FROM {old}"),
            _ => format!(
                "(SELECT {cols} FROM {new} EXCEPT SELECT {cols} FROM {old}) UNION \
                 (SELECT {cols} FROM {old} EXCEPT SELECT {cols} FROM {new})"
            ),
        }
    }

    /// The changed rows of table `ti` for `op` split by version, each with
    /// `true` for old versions: inserted rows (new), deleted rows (old),
    /// or for `UPDATE` new and old versions of rows whose relevant columns
    /// changed.
    fn changed_sides(&self, ti: usize, op: &str) -> Vec<(String, bool)> {
        let cols: Vec<String> = self.relevant(ti).iter().map(|c| quote(c.name())).collect();
        let cols = cols.join(", ");
        let (new, old) = (quote(&self.names.new_rows), quote(&self.names.old_rows));
        match op {
            "INSERT" => vec![(format!("SELECT {cols} FROM {new}"), false)],
            "DELETE" => vec![(format!("SELECT {cols} FROM {old}"), true)],
            _ => vec![
                (
                    format!("SELECT {cols} FROM {new} EXCEPT SELECT {cols} FROM {old}"),
                    false,
                ),
                (
                    format!("SELECT {cols} FROM {old} EXCEPT SELECT {cols} FROM {new}"),
                    true,
                ),
            ],
        }
    }

    /// The ancestors of node `n`, nearest first, ending with the root.
    fn ancestors(&self, n: usize) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = n;
        while at != 0 {
            at = self.nodes[at].parent;
            out.push(at);
        }
        out
    }

    /// `FROM (changed) AS c JOIN parent AS w1 ON … JOIN … AS w<levels>`:
    /// the changed rows of node `n` walked `levels` hops towards the root.
    /// Returns the text and the alias of the last node reached.
    fn walk(&self, n: usize, changed: &str, levels: usize) -> (String, Ident, usize) {
        let c = &self.names.changed;
        let mut from = format!("FROM ({changed}) AS {}", quote(c));
        let mut alias = c.clone();
        let mut node = n;
        for (i, anc) in self.ancestors(n).into_iter().take(levels).enumerate() {
            let w = self.names.walk[i + 1].clone();
            let hop = &self.nodes[node];
            let on: Vec<String> = hop
                .near
                .iter()
                .zip(&hop.far)
                .map(|(near, far)| format!("{} = {}", qcol(&w, near), qcol(&alias, far)))
                .collect();
            from.push_str(&format!(
                " JOIN {} AS {} ON {}",
                quote_table(&self.nodes[anc].table),
                quote(&w),
                on.join(" AND ")
            ));
            alias = w;
            node = anc;
        }
        (from, alias, node)
    }

    /// The stamp slot of hop `hop` (the node it reaches) joined on `values`:
    /// a hash into [`STAMP_SLOTS`] slots of the hop's depth, deeper hops in
    /// lower ranges. Every trigger stamps deeper join points before
    /// shallower ones (its own and forward points, then one level at a
    /// time towards the root), each statement in slot order, so all take
    /// stamps in one global order — by depth, then slot — and then roots
    /// in key order: single statements on different tables of the graph
    /// do not deadlock on each other's stamps.
    fn slot(&self, hop: usize, values: &[String]) -> String {
        let depth = self.ancestors(hop).len() as i64;
        let deepest = (0..self.nodes.len())
            .map(|n| self.ancestors(n).len() as i64)
            .max()
            .unwrap_or(0);
        format!(
            "({} + (hashtextextended(ROW({hop}, {})::text, 0) & {}))::int4",
            (deepest - depth) * STAMP_SLOTS,
            values.join(", "),
            STAMP_SLOTS - 1
        )
    }

    /// Stamps every slot `slots` (a query of one column) returns, in slot
    /// order.
    fn stamp(&self, slots: &[String], plan: Plan) -> String {
        let s = quote(&self.names.slot);
        self.run(&format!(
            "INSERT INTO {stamps} AS {t} (slot) SELECT DISTINCT {s} FROM ({u}) AS {x} ({s}) ORDER BY 1 \
             ON CONFLICT (slot) DO UPDATE SET n = {t}.n + 1",
            stamps = self.stamps(),
            t = quote(&self.names.locked),
            u = slots.join(" UNION ALL "),
            x = quote(&self.names.changed),
        ), plan)
    }

    /// `statement` as the function runs it under `plan`: [`RC`] becomes
    /// `$1` bound to the variable set at the start, or the same test inline;
    /// [`INTO`] stores the statement's one value into the count of roots
    /// left.
    fn run(&self, statement: &str, plan: Plan) -> String {
        let into = format!(" INTO {}", quote(&self.names.left));
        match plan {
            Plan::PerCall => {
                let using = if statement.contains(RC) {
                    format!(" USING {}", quote(&self.names.rc))
                } else {
                    String::new()
                };
                let into = if statement.contains(INTO) {
                    into.as_str()
                } else {
                    ""
                };
                let statement = statement.replace(RC, "$1").replace(INTO, "");
                format!("EXECUTE {}{into}{using};", string_literal(&statement))
            }
            Plan::Kept => {
                let statement = statement.replace(RC, READ_COMMITTED).replace(INTO, &into);
                match statement.strip_prefix("SELECT 1 FROM ") {
                    Some(rest) => format!("PERFORM 1 FROM {rest};"),
                    None => format!("{statement};"),
                }
            }
        }
    }

    /// The custom setting that marks the trigger's own write of the root
    /// (its value: the trigger depth at which that write's triggers run).
    fn flag(&self) -> String {
        format!(
            "pgpatterns.track_{:016x}",
            fnv1a(FNV_OFFSET, self.signature().as_bytes())
        )
    }

    /// `PERFORM set_config(flag, …, true);`: marks the root writes that
    /// follow as the trigger's own (`on`), or unmarks them.
    fn mark_own_write(&self, on: bool) -> String {
        let value = if on {
            "(pg_trigger_depth() + 1)::text"
        } else {
            "''"
        };
        format!(
            "PERFORM set_config({}, {value}, true);",
            string_literal(&self.flag())
        )
    }

    /// Whether the root table is on no other node: then the trigger's own
    /// write of the root (only the tracked column) needs no look from the
    /// root's `UPDATE` trigger, unless a `BEFORE` row trigger could have
    /// changed more.
    fn root_once(&self) -> bool {
        self.nodes
            .iter()
            .skip(1)
            .all(|n| !same_table(&n.table, &self.root))
    }

    /// Whether the changes of node `n` take the incremental path: not the
    /// root, and its table on no other node.
    fn incremental(&self, n: usize) -> bool {
        n != 0
            && self
                .nodes
                .iter()
                .filter(|m| same_table(&m.table, &self.nodes[n].table))
                .count()
                == 1
    }

    /// Locks the roots whose key `keys` returns, in key order.
    fn lock(&self, keys: &str, plan: Plan) -> String {
        let key = quote(self.key.name());
        let root = quote_table(&self.root);
        self.run(
            &format!(
                "SELECT 1 FROM (SELECT {key} FROM {root} WHERE {key} IN ({keys}) ORDER BY {key} FOR NO KEY UPDATE) AS {locked}",
                locked = quote(&self.names.locked),
            ),
            plan,
        )
    }

    /// Sets the column of the roots `keys` returns (locked already) to their
    /// value recomputed from the graph; at `READ COMMITTED` only where it
    /// differs.
    fn refresh(&self, keys: &str, plan: Plan) -> String {
        let n = &self.names;
        let key = quote(self.key.name());
        let root = quote_table(&self.root);
        let inner = Query::select()
            .expr_as(self.key.expr(), Alias::new(n.k.as_str()))
            .expr_as(self.fresh.clone(), Alias::new(n.v.as_str()))
            .from(self.root.table_ref())
            .and_where(Expr::cust(format!("{root}.{key} IN ({keys})")))
            .to_owned();
        let (t, x, k, v) = (quote(&n.t), quote(&n.x), quote(&n.k), quote(&n.v));
        let col = quote(self.column.name());
        self.run(
            &format!(
                "UPDATE {root} AS {t} SET {col} = {x}.{v} FROM ({inner}) AS {x} \
                 WHERE {t}.{key} = {x}.{k} AND (NOT {RC} OR {t}.{col} IS DISTINCT FROM {x}.{v})",
                inner = text(&inner),
            ),
            plan,
        )
    }

    /// Locks the roots whose key `keys` returns, in key order, then sets
    /// their column from the graph.
    fn lock_and_refresh(&self, keys: &str, plan: Plan) -> String {
        [
            self.lock(keys, plan),
            self.mark_own_write(true),
            self.refresh(keys, plan),
            self.mark_own_write(false),
        ]
        .join("\n      ")
    }

    /// The newest change time a row of node `n` (alias `a`) brings to its
    /// roots: its own change columns and, through correlated subqueries,
    /// its descendants' (aliases from `depth` on).
    fn contribution(&self, n: usize, a: &Ident, depth: usize) -> String {
        let mut terms: Vec<String> = self.nodes[n]
            .changes
            .iter()
            .map(|ch| expr_text(ch.instant_of(Expr::cust(qcol(a, &ch.erase())), &self.offset)))
            .collect();
        let s = &self.names.sub[depth];
        for (ci, child) in self.nodes.iter().enumerate().filter(|(_, c)| c.parent == n) {
            let on: Vec<String> = child
                .near
                .iter()
                .zip(&child.far)
                .map(|(near, far)| format!("{} = {}", qcol(s, far), qcol(a, near)))
                .collect();
            terms.push(format!(
                "(SELECT max({}) FROM {} AS {} WHERE {})",
                self.contribution(ci, s, depth + 1),
                quote_table(&child.table),
                quote(s),
                on.join(" AND ")
            ));
        }
        if terms.is_empty() {
            "NULL::timestamptz".to_owned()
        } else {
            format!("GREATEST({})", terms.join(", "))
        }
    }

    /// The rows `rows` of node `n` walked to their roots: the `FROM` text
    /// and the root key's expression. When the last hop joins on the root's
    /// key, the key is read from the node below the root, without joining
    /// the root.
    fn walk_key(&self, n: usize, rows: &str) -> (String, String) {
        let ancestors = self.ancestors(n);
        let depth = ancestors.len();
        let below = if depth >= 2 { ancestors[depth - 2] } else { n };
        let hop = &self.nodes[below];
        if hop.near.len() == 1 && hop.near[0].name() == self.key.name() {
            let (from, alias, _) = self.walk(n, rows, depth - 1);
            (from, qcol(&alias, &hop.far[0]))
        } else {
            let (from, alias, _) = self.walk(n, rows, depth);
            (from, qcol(&alias, &self.key))
        }
    }

    /// The incremental update of the roots of node `n`'s changed rows
    /// (`sides`: new and/or old versions), in two statements.
    ///
    /// The first aggregates the changed rows per root — the newest time the
    /// new versions bring (`nv`) and the old versions brought (`ov`) — locks
    /// those roots in key order, and raises each to `GREATEST(stored, nv)`
    /// where that is exact: no old version counted (`ov` NULL), the new
    /// ones bring at least as much (`nv >= ov`), or the old ones were below
    /// the stored value (`ov < stored`: the value came from elsewhere). At
    /// READ COMMITTED only roots whose value changes are written. It
    /// returns how many roots are left: those where an old version may
    /// have held the value; the second statement (only run then) recomputes
    /// them from the graph. The stored value is read under the lock, so it
    /// is the latest committed one.
    fn incremental_steps(&self, n: usize, sides: &[(String, bool)], plan: Plan) -> String {
        let nm = &self.names;
        let (agg, k, nv, ov, v, o, old) = (
            quote(&nm.agg),
            quote(&nm.k),
            quote(&nm.nv),
            quote(&nm.ov),
            quote(&nm.v),
            quote(&nm.o),
            quote(&nm.old),
        );
        let (x, r, t, lk, upd) = (
            quote(&nm.x),
            quote(&nm.r),
            quote(&nm.t),
            quote(&nm.locked),
            quote(&nm.upd),
        );
        let key = quote(self.key.name());
        let col = quote(self.column.name());
        let root = quote_table(&self.root);
        let contribution = self.contribution(n, &nm.changed, 0);
        let parts: Vec<String> = sides
            .iter()
            .map(|(rows, is_old)| {
                let (from, key_expr) = self.walk_key(n, rows);
                format!("SELECT {key_expr}, {contribution}, {is_old} {from}")
            })
            .collect();
        let aggregate = format!(
            "SELECT {k}, max({v}) FILTER (WHERE NOT {o}) AS {nv}, max({v}) FILTER (WHERE {o}) AS {ov} \
             FROM ({}) AS {x} ({k}, {v}, {o}) GROUP BY 1",
            parts.join(" UNION ALL ")
        );
        let exact = |ov: &str, nv: &str, old: &str| {
            format!(
                "({ov} IS NULL OR COALESCE({nv} >= {ov}, false) OR COALESCE({ov} < {old}, false))"
            )
        };
        let raised = exact(
            &format!("{lk}.{ov}"),
            &format!("{lk}.{nv}"),
            &format!("{lk}.{old}"),
        );
        let raise = format!(
            "WITH {agg} AS MATERIALIZED ({aggregate}), \
             {lk} AS MATERIALIZED (SELECT {r}.{key} AS {k}, {r}.{col} AS {old}, {agg}.{nv}, {agg}.{ov} \
               FROM {agg} JOIN {root} AS {r} ON {r}.{key} = {agg}.{k} ORDER BY {r}.{key} FOR NO KEY UPDATE OF {r}), \
             {upd} AS (UPDATE {root} AS {t} SET {col} = GREATEST({lk}.{old}, {lk}.{nv}) FROM {lk} \
               WHERE {t}.{key} = {lk}.{k} AND {raised} \
               AND (NOT {RC} OR GREATEST({lk}.{old}, {lk}.{nv}) IS DISTINCT FROM {lk}.{old})) \
             SELECT count(*){INTO} FROM {lk} WHERE NOT {raised}"
        );
        let left = format!(
            "SELECT {agg}.{k} FROM ({aggregate}) AS {agg} JOIN {root} AS {r} ON {r}.{key} = {agg}.{k} WHERE NOT {}",
            exact(
                &format!("{agg}.{ov}"),
                &format!("{agg}.{nv}"),
                &format!("{r}.{col}")
            )
        );
        [
            self.mark_own_write(true),
            self.run(&raise, plan),
            format!(
                "IF {} > 0 THEN\n        {}\n      END IF;",
                quote(&nm.left),
                self.refresh(&left, plan)
            ),
            self.mark_own_write(false),
        ]
        .join("\n      ")
    }

    /// The statements for the rows `changed` of node `n`: stamp its join
    /// points, walk level by level to the roots stamping each, then update
    /// the roots: incrementally ([`incremental_steps`]) when the node's
    /// table is on no other node, else lock them in key order and
    /// recompute them.
    ///
    /// [`incremental_steps`]: Self::incremental_steps
    fn node_steps(&self, n: usize, ti: usize, op: &str, plan: Plan) -> String {
        let changed = self.changed_rows(ti, op);
        let changed = changed.as_str();
        let c = &self.names.changed;
        let mut out = Vec::new();
        let node = &self.nodes[n];
        // Own and forward join points of the changed rows.
        let mut slots = Vec::new();
        let from = format!("FROM ({changed}) AS {}", quote(c));
        if n != 0 {
            let vals: Vec<String> = node.far.iter().map(|f| qcol(c, f)).collect();
            slots.push(format!("SELECT {} {from}", self.slot(n, &vals)));
        }
        for (ci, ch) in self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, ch)| ch.parent == n)
        {
            let vals: Vec<String> = ch.near.iter().map(|f| qcol(c, f)).collect();
            slots.push(format!("SELECT {} {from}", self.slot(ci, &vals)));
        }
        if !slots.is_empty() {
            out.push(self.stamp(&slots, plan));
        }
        // One level at a time towards the root, each in its own statement
        // (a fresh snapshot after waiting for a stamp).
        // Only the columns of the first hop matter there, each value once
        // (old and new versions of a row whose time changed are one).
        let depth = self.ancestors(n).len();
        let hop_values: Vec<String> = node.far.iter().map(|f| quote(f.name())).collect();
        let hop_values = format!(
            "SELECT DISTINCT {} FROM ({changed}) AS {}",
            hop_values.join(", "),
            quote(c)
        );
        for level in 1..depth {
            let (from, alias, at) = self.walk(n, &hop_values, level);
            let vals: Vec<String> = self.nodes[at].far.iter().map(|f| qcol(&alias, f)).collect();
            out.push(self.stamp(&[format!("SELECT {} {from}", self.slot(at, &vals))], plan));
        }
        if self.incremental(n) {
            out.push(self.incremental_steps(n, &self.changed_sides(ti, op), plan));
        } else {
            let (from, alias, _) = self.walk(n, changed, depth);
            let keys = format!("SELECT {} {from}", qcol(&alias, &self.key));
            out.push(self.lock_and_refresh(&keys, plan));
        }
        out.join("\n      ")
    }

    /// The body of one table's branch for `op`.
    fn table_steps(&self, ti: usize, op: &str) -> String {
        let mut out = Vec::new();
        if op == "UPDATE" {
            if ti == 0 && self.root_once() {
                // The trigger's own write of the root changes only the
                // tracked column, unless a BEFORE row trigger changes more.
                out.push(format!(
                    "IF current_setting({}, true) = pg_trigger_depth()::text \
                     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger \
                     WHERE tgrelid = TG_RELID AND tgenabled <> 'D' AND (tgtype::int4 & 19) = 19) \
                     THEN RETURN NULL; END IF;",
                    string_literal(&self.flag())
                ));
            }
            out.push(format!(
                "IF NOT EXISTS ({}) THEN RETURN NULL; END IF;",
                self.changed_rows(ti, op)
            ));
        }
        let steps = |plan: Plan| {
            let mut out = Vec::new();
            for (n, node) in self.nodes.iter().enumerate() {
                if same_table(&node.table, &self.tables[ti]) {
                    out.push(self.node_steps(n, ti, op, plan));
                }
            }
            out.join("\n      ")
        };
        // Small statements run static SQL (plans kept), large ones EXECUTE
        // (planned for the rows at hand).
        let rows = if op == "DELETE" {
            &self.names.old_rows
        } else {
            &self.names.new_rows
        };
        out.push(format!(
            "IF (SELECT count(*) FROM (SELECT FROM {} LIMIT {}) AS {}) <= {} THEN\n      {}\n    ELSE\n      {}\n    END IF;",
            quote(rows),
            self.small + 1,
            quote(&self.names.x),
            self.small,
            steps(Plan::Kept),
            steps(Plan::PerCall),
        ));
        out.join("\n      ")
    }

    /// `CREATE OR REPLACE FUNCTION` of the trigger function (see
    /// [`install_statements`](Self::install_statements) for the guard that
    /// keeps it from replacing a function pgpatterns did not make).
    #[must_use]
    pub fn function(&self) -> BuiltQuery {
        BuiltQuery::generated(format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql \
             SET search_path FROM CURRENT SET jit = off AS {}",
            self.signature_name(),
            dollar_quote(&self.body())
        ))
    }

    fn body(&self) -> String {
        let all = self.lock_and_refresh(
            &format!(
                "SELECT {} FROM {}",
                quote(self.key.name()),
                quote_table(&self.root)
            ),
            Plan::PerCall,
        );
        let mut branches = String::new();
        for ti in 0..self.tables.len() {
            branches.push_str(&format!(
                "
  {kw} TG_ARGV[0] = '{ti}' THEN
    IF TG_OP = 'INSERT' THEN
      {insert}
    ELSIF TG_OP = 'DELETE' THEN
      {delete}
    ELSE
      {update}
    END IF;",
                kw = if ti == 0 { "IF" } else { "ELSIF" },
                insert = self.table_steps(ti, "INSERT"),
                delete = self.table_steps(ti, "DELETE"),
                update = self.table_steps(ti, "UPDATE"),
            ));
        }
        format!(
            "\n#variable_conflict use_column
DECLARE
  {left} int8;
  {rc} bool := {READ_COMMITTED};
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    {all}
    RETURN NULL;
  END IF;{branches}
  END IF;
  RETURN NULL;
END\n",
            left = quote(&self.names.left),
            rc = quote(&self.names.rc),
        )
    }

    fn signature_name(&self) -> String {
        quote_beside(&self.root, &self.name)
    }

    /// The function's signature as text for `to_regprocedure`.
    pub(crate) fn signature(&self) -> String {
        format!("{}()", self.signature_name())
    }

    /// The comment pgpatterns puts on its trigger function: which column it
    /// keeps, for which graph (a digest of the function). An existing
    /// function of the same name is replaced (or dropped) only when it
    /// carries exactly this comment.
    #[must_use]
    pub fn marker(&self) -> String {
        format!(
            "pgpatterns: keeps {}.{} equal to the newest change time of a since graph (digest {:016x})",
            quote_table(&self.root),
            quote(self.column.name()),
            fnv1a(FNV_OFFSET, self.body().as_bytes())
        )
    }

    fn stamp_marker(&self) -> String {
        format!("pgpatterns: join-point stamps of {}", self.signature())
    }

    /// A `DO` block that stops the transaction (SQLSTATE `42710`,
    /// `duplicate_object`) when the function's name is taken by a function
    /// without this graph's [`marker`](Self::marker), a trigger name by a
    /// trigger on a table of the graph that runs another function, or the
    /// stamp table's name by a table pgpatterns did not make for it. It runs
    /// first in the same transaction as the DDL.
    #[must_use]
    pub fn guard(&self) -> BuiltQuery {
        self.owned().guard()
    }

    /// The function, its triggers on every table, the stamp table, and
    /// their markers.
    fn owned(&self) -> crate::ddl::Owned {
        crate::ddl::Owned {
            purpose: "this graph",
            function: self.signature(),
            function_marker: self.marker(),
            rename: "Track::named",
            trigger_tables: self.tables.iter().map(quote_table).collect(),
            triggers: self.trigger_names(),
            relations: vec![(self.stamps(), self.stamp_marker())],
            index_on: None,
        }
    }

    /// The `CREATE OR REPLACE TRIGGER` statements: four on every table of
    /// the graph.
    #[must_use]
    pub fn triggers(&self) -> Vec<BuiltQuery> {
        let n = &self.names;
        let mut out = Vec::new();
        for (ti, table) in self.tables.iter().enumerate() {
            out.extend(crate::ddl::statement_triggers(
                &quote_table(table),
                &n.new_rows,
                &n.old_rows,
                |suffix| self.trigger_name(suffix),
                &format!("{}('{ti}')", self.signature_name()),
            ));
        }
        out
    }

    /// The trigger names, one per event (`INSERT`, `UPDATE`, `DELETE`,
    /// `TRUNCATE`), the same on every table, derived from the function's.
    #[must_use]
    pub fn trigger_names(&self) -> Vec<Ident> {
        TRIGGER_SUFFIXES
            .iter()
            .map(|s| self.trigger_name(s))
            .collect()
    }

    fn trigger_name(&self, suffix: &str) -> Ident {
        derived_name(&[self.name.as_str(), suffix])
    }

    /// The guard, the column, the stamp table, the function (with their
    /// comments) and the triggers, in order: run them in one transaction
    /// (see [`install`](Self::install)), then [`backfill`](Self::backfill).
    #[must_use]
    pub fn install_statements(&self) -> Vec<BuiltQuery> {
        let mut all = vec![
            self.guard(),
            self.add_column(),
            BuiltQuery::generated(format!(
                "CREATE UNLOGGED TABLE IF NOT EXISTS {} (slot int4 PRIMARY KEY, n int8 NOT NULL DEFAULT 0)",
                self.stamps()
            )),
            BuiltQuery::generated(format!(
                "COMMENT ON TABLE {} IS {}",
                self.stamps(),
                string_literal(&self.stamp_marker())
            )),
            self.function(),
            BuiltQuery::generated(format!(
                "COMMENT ON FUNCTION {} IS {}",
                self.signature(),
                string_literal(&self.marker())
            )),
        ];
        all.extend(self.triggers());
        all
    }

    /// The guard, then drops the triggers, the function and the stamp table
    /// (`IF EXISTS`); the column stays.
    #[must_use]
    pub fn uninstall_statements(&self) -> Vec<BuiltQuery> {
        let mut all = vec![self.guard()];
        for table in &self.tables {
            all.extend(TRIGGER_SUFFIXES.iter().map(|suffix| {
                BuiltQuery::generated(format!(
                    "DROP TRIGGER IF EXISTS {} ON {}",
                    quote(&self.trigger_name(suffix)),
                    quote_table(table)
                ))
            }));
        }
        all.push(BuiltQuery::generated(format!(
            "DROP FUNCTION IF EXISTS {}",
            self.signature()
        )));
        all.push(BuiltQuery::generated(format!(
            "DROP TABLE IF EXISTS {}",
            self.stamps()
        )));
        all
    }

    /// Checks the names (see [`Error::ObjectConflict`]), then runs
    /// [`install_statements`](Self::install_statements) in one transaction.
    /// Idempotent. Run [`backfill`](Self::backfill) next.
    ///
    /// # Errors
    /// [`Error::ObjectConflict`] when a function, trigger or table of the
    /// derived names exists and is not this graph's; the database's error
    /// otherwise. Nothing is installed then.
    pub async fn install<E: Transactional>(&self, db: &mut E) -> Result<()> {
        self.owned().run(db, &self.install_statements()).await
    }

    /// [`install`](Self::install) on a blocking client, from the same code.
    ///
    /// # Errors
    /// As [`install`](Self::install).
    pub fn install_blocking<C>(&self, db: &mut C) -> Result<()>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.install(db).await)
    }

    /// Checks the names like [`install`](Self::install), then runs
    /// [`uninstall_statements`](Self::uninstall_statements) in one
    /// transaction.
    ///
    /// # Errors
    /// [`Error::ObjectConflict`] when the objects of these names are not
    /// this graph's (nothing is dropped then); the database's error.
    pub async fn uninstall<E: Transactional>(&self, db: &mut E) -> Result<()> {
        self.owned().run(db, &self.uninstall_statements()).await
    }

    /// [`uninstall`](Self::uninstall) on a blocking client, from the same
    /// code.
    ///
    /// # Errors
    /// As [`uninstall`](Self::uninstall).
    pub fn uninstall_blocking<C>(&self, db: &mut C) -> Result<()>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.uninstall(db).await)
    }

    /// Roots whose column disagrees with the graph: the key, the stored
    /// value ([`TRACK_STORED`]) and the value recomputed now
    /// ([`TRACK_FRESH`]). Empty when the triggers have done their job.
    #[must_use]
    pub fn drift_statement(&self) -> SelectStatement {
        Query::select()
            .column(self.key.col_ref())
            .expr_as(self.column.expr(), Alias::new(TRACK_STORED))
            .expr_as(self.fresh.clone(), Alias::new(TRACK_FRESH))
            .from(self.root.table_ref())
            .and_where(is_distinct_from(self.column.expr(), self.fresh.clone()))
            .to_owned()
    }

    /// [`drift_statement`](Self::drift_statement) in key order.
    #[must_use]
    pub fn drift_query(&self) -> BuiltQuery {
        let mut q = self.drift_statement();
        q.order_by(self.key.col_ref(), Order::Asc);
        BuiltQuery::new(&q)
    }

    /// How many roots have drifted.
    ///
    /// # Errors
    /// The database's error.
    pub async fn drift_count<E: Executor>(&self, db: &E) -> Result<i64> {
        db.one_row(&count_of(self.drift_statement()))
            .await?
            .try_get(0usize.into())
    }

    /// [`drift_count`](Self::drift_count) on a blocking client, from the
    /// same code.
    ///
    /// # Errors
    /// As [`drift_count`](Self::drift_count).
    pub fn drift_count_blocking<C>(&self, db: &mut C) -> Result<i64>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.drift_count(db).await)
    }

    /// Recomputes the column for every root, `batch_size` roots per
    /// transaction in key order, reporting progress after each batch. Safe
    /// while writers run (each batch locks its roots like the triggers do)
    /// and resumable: it only writes rows that differ. `K` is the root
    /// key's type. Run `ANALYZE` afterwards.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for `batch_size < 1` or a `K` that is not the
    /// key's type; the database's error otherwise (finished batches stay
    /// committed).
    pub async fn backfill<K, E>(
        &self,
        db: &mut E,
        batch_size: i64,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<BackfillReport>
    where
        K: SqlType + FromSqlOwned + Send + Sync,
        E: Transactional,
    {
        backfill_column::<K, E>(
            db,
            (&self.root, &self.key, &self.column),
            self.fresh.clone(),
            batch_size,
            &mut progress,
        )
        .await
    }

    /// `UPDATE root SET column = <newest change> WHERE column IS DISTINCT
    /// FROM it`: every root in one statement, without batches or locks
    /// (for a table no one writes yet, such as freshly loaded data; else
    /// use [`backfill`](Self::backfill)).
    #[must_use]
    pub fn fill_statement(&self) -> BuiltQuery {
        BuiltQuery::new(
            &Query::update()
                .table(self.root.table_name())
                .value(self.column.iden(), self.fresh.clone())
                .and_where(is_distinct_from(self.column.expr(), self.fresh.clone()))
                .to_owned(),
        )
    }

    /// [`backfill`](Self::backfill) on a blocking client, from the same
    /// code.
    ///
    /// # Errors
    /// As [`backfill`](Self::backfill).
    pub fn backfill_blocking<K, C>(
        &self,
        db: &mut C,
        batch_size: i64,
        progress: impl FnMut(Progress) + Send,
    ) -> Result<BackfillReport>
    where
        K: SqlType + FromSqlOwned + Send + Sync,
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| {
            self.backfill::<K, _>(db, batch_size, progress).await
        })
    }
}
