//! Index operations that keep a table writable: `CREATE INDEX CONCURRENTLY`
//! and `DROP INDEX CONCURRENTLY`, run outside any transaction block through
//! [`BuiltQuery::execute_outside_transaction`].
//!
//! A concurrent build that fails (a unique index over duplicate rows, a
//! deadlock, a cancelled statement) leaves the index behind marked
//! **INVALID** (`pg_index.indisvalid = false`): it is maintained on every
//! write but never used by queries, and `CREATE INDEX … IF NOT EXISTS`
//! then silently does nothing. [`ConcurrentIndex::ensure`] detects that
//! state and rebuilds the index by `DROP INDEX CONCURRENTLY` + `CREATE INDEX
//! CONCURRENTLY`, PostgreSQL's recommended recovery. (`REINDEX INDEX
//! CONCURRENTLY` is not used: when it fails too, e.g. while the duplicates
//! are still there, it leaves a second INVALID index, `<name>_ccnew`,
//! behind.)

use sea_query::{Index, IndexOrder};

use crate::ddl::{quote, quote_beside, quote_table};
use crate::exec::{run_blocking, BlockingExecutor};
use crate::schema::{AnyColumn, Ident, Table};
use crate::spec::Problems;
use crate::types::SqlType;
use crate::{BuiltQuery, ColumnIndex, Error, Executor, Result, RowRead};

/// The state of an index in the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum IndexState {
    /// No index of that name.
    Missing,
    /// Built and used by queries.
    Valid,
    /// Left by a failed concurrent build: maintained, never used.
    Invalid,
}

/// What [`ConcurrentIndex::ensure`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Ensured {
    /// The state before.
    pub before: IndexState,
    /// The state after (always [`IndexState::Valid`] when `ensure` returns
    /// `Ok`).
    pub after: IndexState,
}

/// An index built and dropped `CONCURRENTLY`.
///
/// ```
/// use pgpatterns::ops::index::ConcurrentIndex;
/// use pgpatterns::Table;
///
/// let orders = Table::in_schema("shop", "orders")?;
/// let idx = ConcurrentIndex::new(
///     "orders_user_created",
///     &[orders.column::<i64>("user_id")?.erase(), orders.column::<i64>("created_at")?.erase()],
/// );
/// assert_eq!(
///     idx.create_statement()?.sql(),
///     r#"CREATE INDEX CONCURRENTLY IF NOT EXISTS "orders_user_created" ON "shop"."orders" ("user_id", "created_at")"#
/// );
/// assert_eq!(
///     idx.drop_statement()?.sql(),
///     r#"DROP INDEX CONCURRENTLY IF EXISTS "shop"."orders_user_created""#
/// );
/// // sea-query writes index names unescaped: a `"` is refused.
/// assert!(ConcurrentIndex::new("x\" ON y", &[orders.column::<i64>("id")?.erase()]).check().is_err());
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use = "an index does nothing until it is created"]
pub struct ConcurrentIndex {
    table: Table,
    name: Ident,
    columns: Vec<(AnyColumn, Option<IndexOrder>)>,
    unique: bool,
    problems: Problems,
}

impl ConcurrentIndex {
    /// An index named `name` on `columns` (in order, all of one table).
    ///
    /// Like every step, this never fails: [`check`](Self::check) and every
    /// method that makes SQL or runs refuse an invalid name
    /// ([`Error::InvalidIdentifier`]), a name containing `"` (sea-query
    /// writes index names between quotes without escaping), no columns,
    /// columns of several tables, or an aliased table.
    pub fn new(name: impl AsRef<str>, columns: &[AnyColumn]) -> Self {
        let mut problems = Problems::default();
        let name = problems
            .note(Ident::new(name))
            .unwrap_or(Ident::fixed("invalid_index_name"));
        if name.as_str().contains('"') {
            problems.note::<()>(Err(Error::spec(
                "index name",
                format!("{name:?} contains a double quote, which cannot be written safely"),
            )));
        }
        let table = match columns.first() {
            Some(first) => first.table().clone(),
            None => {
                problems.note::<()>(Err(Error::spec(
                    "columns",
                    "an index needs at least one column",
                )));
                Table::fixed("invalid_index_table")
            }
        };
        if let Some(other) = columns.iter().find(|c| c.table() != &table) {
            problems.note::<()>(Err(Error::spec(
                "columns",
                format!(
                    "all columns must belong to {}, {} does not",
                    table.display_name(),
                    other.name()
                ),
            )));
        }
        if table.alias().is_some() {
            problems.note::<()>(Err(Error::spec(
                "table",
                "use the table itself, not an alias",
            )));
        }
        Self {
            table,
            name,
            columns: columns.iter().map(|c| (c.clone(), None)).collect(),
            unique: false,
            problems,
        }
    }

    /// Makes it a `UNIQUE` index.
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    /// Sorts the column named `column` descending; a name that is not a
    /// column of the index is refused when checked.
    pub fn desc(mut self, column: &str) -> Self {
        match self
            .columns
            .iter_mut()
            .find(|(c, _)| c.name().as_str() == column)
        {
            Some(entry) => entry.1 = Some(IndexOrder::Desc),
            None => {
                self.problems.note::<()>(Err(Error::spec(
                    "desc",
                    format!("the index has no column {column:?}"),
                )));
            }
        }
        self
    }

    /// Checks the index: the first problem a step recorded. Every method
    /// that makes SQL or runs checks first.
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] or [`Error::InvalidSpec`]: see
    /// [`new`](Self::new) and [`desc`](Self::desc).
    pub fn check(&self) -> Result<()> {
        self.problems.check()
    }

    /// The index name.
    #[must_use]
    pub fn name(&self) -> &Ident {
        &self.name
    }

    /// `CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS name ON table (…)`.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn create_statement(&self) -> Result<BuiltQuery> {
        self.check()?;
        Ok(self.created())
    }

    /// [`create_statement`](Self::create_statement) of a checked index.
    fn created(&self) -> BuiltQuery {
        let mut idx = Index::create();
        idx.name(self.name.as_str())
            .table(self.table.table_name())
            .if_not_exists()
            .concurrently();
        for (c, order) in &self.columns {
            match order {
                Some(o) => idx.col((c.iden(), o.clone())),
                None => idx.col(c.iden()),
            };
        }
        if self.unique {
            idx.unique();
        }
        BuiltQuery::schema(&idx)
    }

    /// `DROP INDEX CONCURRENTLY IF EXISTS "schema"."name"`.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn drop_statement(&self) -> Result<BuiltQuery> {
        self.check()?;
        Ok(BuiltQuery::generated(format!(
            "DROP INDEX CONCURRENTLY IF EXISTS {}",
            quote_beside(&self.table, &self.name)
        )))
    }

    /// The catalog query [`state`](Self::state) and
    /// [`ensure`](Self::ensure) read: the relation named like the index in
    /// the **table's** schema (the table resolved by `to_regclass`, so an
    /// unqualified table follows `search_path` exactly as `CREATE INDEX`
    /// does), with what defines it. The quoted table name is bound as `$1`,
    /// the index name as `$2`. No row when the table or the relation does
    /// not exist; otherwise one row: relkind, schema, whether it is an
    /// index on the table, the table it is on, `indisvalid`, `indisunique`,
    /// the key columns (empty string for an expression), their
    /// `indoption`s, the INCLUDE column count, whether it has expressions,
    /// whether it has a predicate, the access method, whether every key
    /// uses its type's default operator class and the column's collation,
    /// `NULLS NOT DISTINCT`, and `pg_get_indexdef`.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn state_query(&self) -> Result<BuiltQuery> {
        self.check()?;
        Ok(BuiltQuery::fixed_with(
            CATALOG_SQL,
            [
                quote_table(&self.table).into_value(),
                self.name.as_str().to_owned().into_value(),
            ],
        ))
    }

    /// Reads the catalog ([`state_query`](Self::state_query)).
    async fn inspect<E: Executor>(&self, db: &E) -> Result<Option<Found>> {
        let Some(row) = db.optional_row(&self.state_query()?).await? else {
            return Ok(None);
        };
        let at = |i: usize| -> ColumnIndex<'static> { i.into() };
        Ok(Some(Found {
            relkind: row.try_get(at(0))?,
            schema: row.try_get(at(1))?,
            on_table: row.try_get(at(2))?,
            on: row.try_get(at(3))?,
            valid: row.try_get(at(4))?,
            unique: row.try_get(at(5))?,
            keys: row.try_get(at(6))?,
            options: row.try_get(at(7))?,
            include: row.try_get(at(8))?,
            expressions: row.try_get(at(9))?,
            predicate: row.try_get(at(10))?,
            method: row.try_get(at(11))?,
            default_classes: row.try_get(at(12))?,
            nulls_not_distinct: row.try_get(at(13))?,
            definition: row.try_get(at(14))?,
        }))
    }

    /// Why `found` is not the index [`create_statement`](Self::create_statement)
    /// would build on this table, if it is not.
    fn difference(&self, found: &Found) -> Option<String> {
        if found.relkind != "i" {
            let what = match found.relkind.as_str() {
                "r" => "a table",
                "p" => "a partitioned table",
                "I" => "a partitioned index",
                "v" => "a view",
                "m" => "a materialized view",
                "S" => "a sequence",
                "f" => "a foreign table",
                "c" => "a composite type",
                _ => "another kind of relation",
            };
            return Some(format!("it is {what}, not an index"));
        }
        if !found.on_table {
            return Some(format!(
                "it is an index on {}, not on {}",
                found.on,
                self.table.display_name()
            ));
        }
        let expected: Vec<(&str, i16)> = self
            .columns
            .iter()
            .map(|(c, order)| {
                let option = match order {
                    // DESC implies NULLS FIRST: INDOPTION_DESC | INDOPTION_NULLS_FIRST.
                    Some(IndexOrder::Desc) => 3,
                    _ => 0,
                };
                (c.name().as_str(), option)
            })
            .collect();
        let keys: Vec<(&str, i16)> = found
            .keys
            .iter()
            .map(String::as_str)
            .zip(found.options.iter().copied())
            .collect();
        let mut reasons = Vec::new();
        if found.method != "btree" {
            reasons.push(format!("access method {} instead of btree", found.method));
        }
        if keys != expected || found.keys.len() != found.options.len() || found.expressions {
            reasons.push("other key columns, order or sort directions".to_owned());
        }
        if found.unique != self.unique {
            reasons.push(if self.unique { "not unique" } else { "unique" }.to_owned());
        }
        if found.nulls_not_distinct {
            reasons.push("NULLS NOT DISTINCT".to_owned());
        }
        if found.include != 0 {
            reasons.push(format!("{} INCLUDE column(s)", found.include));
        }
        if found.predicate {
            reasons.push("a WHERE predicate (partial index)".to_owned());
        }
        if !found.default_classes {
            reasons.push("a non-default operator class or collation".to_owned());
        }
        if reasons.is_empty() {
            None
        } else {
            Some(format!(
                "{} ({}); expected {}",
                reasons.join(", "),
                found.definition,
                self.created().sql()
            ))
        }
    }

    /// The state of this index, or [`Error::ObjectConflict`] when the name
    /// is taken by something else.
    async fn checked_state<E: Executor>(&self, db: &E) -> Result<(IndexState, Option<Found>)> {
        let Some(found) = self.inspect(db).await? else {
            return Ok((IndexState::Missing, None));
        };
        if let Some(reason) = self.difference(&found) {
            return Err(Error::ObjectConflict {
                kind: "index",
                name: format!("{}.{}", found.schema, self.name),
                reason,
            });
        }
        let state = if found.valid {
            IndexState::Valid
        } else {
            IndexState::Invalid
        };
        Ok((state, Some(found)))
    }

    /// `DROP INDEX CONCURRENTLY IF EXISTS` of the index found in the catalog,
    /// qualified by the schema it is actually in.
    fn drop_found(&self, found: &Found) -> Result<BuiltQuery> {
        let schema = Ident::new(&found.schema)?;
        Ok(BuiltQuery::generated(format!(
            "DROP INDEX CONCURRENTLY IF EXISTS {}.{}",
            quote(&schema),
            quote(&self.name)
        )))
    }

    /// The index's state in the catalog: [`IndexState::Missing`] when no
    /// relation of that name exists in the table's schema.
    ///
    /// # Errors
    /// [`Error::ObjectConflict`] when a relation of that name exists there
    /// but is not this index (an index on another table, or with other key
    /// columns, directions, uniqueness, INCLUDE columns or predicate; or
    /// not an index); the database's error.
    pub async fn state<E: Executor>(&self, db: &E) -> Result<IndexState> {
        Ok(self.checked_state(db).await?.0)
    }

    /// [`state`](Self::state) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`state`](Self::state).
    pub fn state_blocking<C>(&self, db: &mut C) -> Result<IndexState>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.state(db).await)
    }

    /// Runs [`create_statement`](Self::create_statement) and returns the
    /// state afterwards: [`IndexState::Invalid`] when an INVALID index of
    /// that name already existed (`IF NOT EXISTS` skipped it; use
    /// [`ensure`](Self::ensure)).
    ///
    /// # Errors
    /// [`Error::InTransaction`] on a transaction; [`Error::ObjectConflict`]
    /// when the name is taken by another object (see [`state`](Self::state));
    /// the database's error (a failed build leaves an INVALID index behind).
    pub async fn create<E: Executor>(&self, db: &E) -> Result<IndexState> {
        if db.is_transaction() {
            return Err(Error::InTransaction {
                sql: self.created().sql().to_owned(),
            });
        }
        self.checked_state(db).await?;
        db.run_outside_transaction(&self.created()).await?;
        self.state(db).await
    }

    /// [`create`](Self::create) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`create`](Self::create).
    pub fn create_blocking<C>(&self, db: &mut C) -> Result<IndexState>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.create(db).await)
    }

    /// Drops the index, `CONCURRENTLY`; nothing when it does not exist.
    ///
    /// # Errors
    /// [`Error::InTransaction`] on a transaction; [`Error::ObjectConflict`]
    /// (nothing is dropped) when the relation of that name in the table's
    /// schema is not this index (see [`state`](Self::state)); the
    /// database's error.
    pub async fn drop<E: Executor>(&self, db: &E) -> Result<()> {
        if db.is_transaction() {
            return Err(Error::InTransaction {
                sql: self.drop_statement()?.sql().to_owned(),
            });
        }
        if let (_, Some(found)) = self.checked_state(db).await? {
            db.run_outside_transaction(&self.drop_found(&found)?)
                .await?;
        }
        Ok(())
    }

    /// [`drop`](Self::drop) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`drop`](Self::drop).
    pub fn drop_blocking<C>(&self, db: &mut C) -> Result<()>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.drop(db).await)
    }

    /// Makes sure the index exists and is valid: creates it when missing,
    /// drops and re-creates it (both `CONCURRENTLY`) when INVALID, leaves a
    /// valid one alone. Only this index is ever dropped: the relation of
    /// that name in the table's schema must be an index on this table with
    /// the same definition (key columns in order, directions, uniqueness, no
    /// INCLUDE columns, no predicate, btree, default operator classes).
    ///
    /// # Errors
    /// [`Error::InTransaction`] on a transaction; [`Error::ObjectConflict`]
    /// when the name is taken by anything else, which is left untouched;
    /// the database's error when a build fails (e.g. `23505` for a unique
    /// index over duplicates: fix the data and call `ensure` again).
    pub async fn ensure<E: Executor>(&self, db: &E) -> Result<Ensured> {
        if db.is_transaction() {
            return Err(Error::InTransaction {
                sql: self.created().sql().to_owned(),
            });
        }
        let (before, found) = self.checked_state(db).await?;
        match (before, found) {
            (IndexState::Invalid, Some(found)) => {
                db.run_outside_transaction(&self.drop_found(&found)?)
                    .await?;
                db.run_outside_transaction(&self.created()).await?;
            }
            (IndexState::Valid, _) => {}
            _ => {
                db.run_outside_transaction(&self.created()).await?;
            }
        }
        let after = self.state(db).await?;
        if after != IndexState::Valid {
            return Err(Error::spec(
                "index",
                format!(
                    "{} is {after:?} after the build; another session may be building it",
                    self.name
                ),
            ));
        }
        Ok(Ensured { before, after })
    }

    /// [`ensure`](Self::ensure) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`ensure`](Self::ensure).
    pub fn ensure_blocking<C>(&self, db: &mut C) -> Result<Ensured>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.ensure(db).await)
    }
}

/// What the catalog says about the relation named like the index.
#[derive(Debug)]
struct Found {
    relkind: String,
    schema: String,
    on_table: bool,
    on: String,
    valid: bool,
    unique: bool,
    keys: Vec<String>,
    options: Vec<i16>,
    include: i64,
    expressions: bool,
    predicate: bool,
    method: String,
    default_classes: bool,
    nulls_not_distinct: bool,
    definition: String,
}

/// See [`ConcurrentIndex::state_query`]. `indkey`, `indoption`, `indclass`
/// and `indcollation` are vectors; cast to arrays they unnest in order.
const CATALOG_SQL: &str = "\
SELECT c.relkind::text, \
       n.nspname::text, \
       coalesce(i.indrelid = t.oid, false), \
       coalesce(i.indrelid::regclass::text, ''), \
       coalesce(i.indisvalid, false), \
       coalesce(i.indisunique, false), \
       coalesce((SELECT array_agg(coalesce(a.attname::text, '') ORDER BY k.n) \
                 FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n) \
                 LEFT JOIN pg_catalog.pg_attribute a \
                   ON a.attrelid = i.indrelid AND a.attnum = k.attnum AND k.attnum <> 0 \
                 WHERE k.n <= i.indnkeyatts), '{}'::text[]), \
       coalesce(i.indoption::int2[], '{}'::int2[]), \
       coalesce(i.indnatts - i.indnkeyatts, 0)::int8, \
       i.indexprs IS NOT NULL, \
       i.indpred IS NOT NULL, \
       coalesce(am.amname::text, ''), \
       coalesce((SELECT bool_and(oc.opcdefault AND k.coll = coalesce(a.attcollation, 0)) \
                 FROM unnest(i.indclass::oid[], i.indcollation::oid[], i.indkey::int2[]) AS k(cls, coll, attnum) \
                 JOIN pg_catalog.pg_opclass oc ON oc.oid = k.cls \
                 LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum \
                 WHERE k.cls IS NOT NULL), true), \
       coalesce((to_jsonb(i) ->> 'indnullsnotdistinct')::bool, false), \
       coalesce(pg_catalog.pg_get_indexdef(c.oid), '') \
FROM (SELECT to_regclass($1::text) AS oid) t \
JOIN pg_catalog.pg_class tc ON tc.oid = t.oid \
JOIN pg_catalog.pg_class c ON c.relnamespace = tc.relnamespace AND c.relname = $2::text \
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
LEFT JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid \
LEFT JOIN pg_catalog.pg_am am ON am.oid = c.relam";
