//! Index operations that keep a table writable: `CREATE INDEX CONCURRENTLY`
//! and `DROP INDEX CONCURRENTLY`, run outside any transaction block through
//! [`Executor::execute_outside_transaction`].
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

use crate::ddl::quote_beside;
use crate::schema::{AnyColumn, Ident, Table};
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Executor, Result, RowRead};

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
/// )?;
/// assert_eq!(
///     idx.create_statement().sql(),
///     r#"CREATE INDEX CONCURRENTLY IF NOT EXISTS "orders_user_created" ON "shop"."orders" ("user_id", "created_at")"#
/// );
/// assert_eq!(
///     idx.drop_statement().sql(),
///     r#"DROP INDEX CONCURRENTLY IF EXISTS "shop"."orders_user_created""#
/// );
/// // sea-query writes index names unescaped: a `"` is refused.
/// assert!(ConcurrentIndex::new("x\" ON y", &[orders.column::<i64>("id")?.erase()]).is_err());
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConcurrentIndex {
    table: Table,
    name: Ident,
    columns: Vec<(AnyColumn, Option<IndexOrder>)>,
    unique: bool,
}

impl ConcurrentIndex {
    /// An index named `name` on `columns` (in order, all of one table).
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] for an invalid name;
    /// [`Error::InvalidSpec`] for a name containing `"` (sea-query writes
    /// index names between quotes without escaping), no columns, columns of
    /// several tables, or an aliased table.
    pub fn new(name: impl AsRef<str>, columns: &[AnyColumn]) -> Result<Self> {
        let name = Ident::new(name)?;
        if name.as_str().contains('"') {
            return Err(Error::spec(
                "index name",
                format!("{name:?} contains a double quote, which cannot be written safely"),
            ));
        }
        let Some(first) = columns.first() else {
            return Err(Error::spec("columns", "an index needs at least one column"));
        };
        let table = first.table().clone();
        if let Some(other) = columns.iter().find(|c| c.table() != &table) {
            return Err(Error::spec(
                "columns",
                format!(
                    "all columns must belong to {}, {} does not",
                    table.display_name(),
                    other.name()
                ),
            ));
        }
        if table.alias().is_some() {
            return Err(Error::spec("table", "use the table itself, not an alias"));
        }
        Ok(Self {
            table,
            name,
            columns: columns.iter().map(|c| (c.clone(), None)).collect(),
            unique: false,
        })
    }

    /// Makes it a `UNIQUE` index.
    pub fn unique(mut self) -> Self {
        self.unique = true;
        self
    }

    /// Sorts the column named `column` descending.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] when the index has no such column.
    pub fn desc(mut self, column: &str) -> Result<Self> {
        let entry = self
            .columns
            .iter_mut()
            .find(|(c, _)| c.name().as_str() == column)
            .ok_or_else(|| Error::spec("desc", format!("the index has no column {column:?}")))?;
        entry.1 = Some(IndexOrder::Desc);
        Ok(self)
    }

    /// The index name.
    pub fn name(&self) -> &Ident {
        &self.name
    }

    /// `CREATE [UNIQUE] INDEX CONCURRENTLY IF NOT EXISTS name ON table (…)`.
    pub fn create_statement(&self) -> BuiltQuery {
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
    pub fn drop_statement(&self) -> BuiltQuery {
        BuiltQuery::generated(format!(
            "DROP INDEX CONCURRENTLY IF EXISTS {}",
            quote_beside(&self.table, &self.name)
        ))
    }

    /// `SELECT indisvalid FROM pg_index WHERE indexrelid =
    /// to_regclass($1)`, with the quoted index name bound as `$1`.
    pub fn state_query(&self) -> BuiltQuery {
        BuiltQuery::fixed_with(
            "SELECT i.indisvalid FROM pg_catalog.pg_index i WHERE i.indexrelid = to_regclass($1::text)",
            [quote_beside(&self.table, &self.name).into_value()],
        )
    }

    /// The index's state in the catalog.
    ///
    /// # Errors
    /// The database's error.
    pub async fn state<E: Executor>(&self, db: &E) -> Result<IndexState> {
        Ok(match db.query_opt(&self.state_query()).await? {
            None => IndexState::Missing,
            Some(row) if row.try_get::<bool>(0usize.into())? => IndexState::Valid,
            Some(_) => IndexState::Invalid,
        })
    }

    /// Runs [`create_statement`](Self::create_statement) and returns the
    /// state afterwards: [`IndexState::Invalid`] when an INVALID index of
    /// that name already existed (`IF NOT EXISTS` skipped it; use
    /// [`ensure`](Self::ensure)).
    ///
    /// # Errors
    /// [`Error::InTransaction`] on a transaction; the database's error (a
    /// failed build leaves an INVALID index behind).
    pub async fn create<E: Executor>(&self, db: &E) -> Result<IndexState> {
        db.execute_outside_transaction(&self.create_statement())
            .await?;
        self.state(db).await
    }

    /// Runs [`drop_statement`](Self::drop_statement).
    ///
    /// # Errors
    /// [`Error::InTransaction`] on a transaction; the database's error.
    pub async fn drop<E: Executor>(&self, db: &E) -> Result<()> {
        db.execute_outside_transaction(&self.drop_statement())
            .await
            .map(|_| ())
    }

    /// Makes sure the index exists and is valid: creates it when missing,
    /// drops and re-creates it (both `CONCURRENTLY`) when INVALID, leaves a
    /// valid one alone.
    ///
    /// # Errors
    /// [`Error::InTransaction`] on a transaction; the database's error when
    /// a build fails (e.g. `23505` for a unique index over duplicates: fix
    /// the data and call `ensure` again).
    pub async fn ensure<E: Executor>(&self, db: &E) -> Result<Ensured> {
        let before = self.state(db).await?;
        match before {
            IndexState::Valid => {}
            IndexState::Missing => {
                db.execute_outside_transaction(&self.create_statement())
                    .await?;
            }
            IndexState::Invalid => {
                db.execute_outside_transaction(&self.drop_statement())
                    .await?;
                db.execute_outside_transaction(&self.create_statement())
                    .await?;
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
}
