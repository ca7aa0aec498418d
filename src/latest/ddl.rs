//! DDL for the `latest` family: the supporting indexes of each strategy and
//! the denormalized status column (column, trigger function, triggers,
//! backfill, drift check).

use std::time::{Duration, Instant};

use postgres_types::FromSqlOwned;
use sea_query::{
    Alias, ColumnDef, Expr, ExprTrait, Index, IndexCreateStatement, IndexOrder, IntoIden, JoinType,
    LockType, Order, PostgresQueryBuilder, Query, QueryStatementWriter, SelectStatement,
    Table as Ddl, TableRef, UnionType, UpdateStatement,
};

use super::{LatestStatus, LatestStrategy};
use crate::ddl::{
    derived_name, dollar_quote, free_name, quote, quote_beside, quote_table, string_literal,
    TRIGGER_SUFFIXES,
};
use crate::exec::{run_blocking, run_blocking_mut, BlockingExecutor};
use crate::query::{batch_bounds, count_of, is_distinct_from, read_committed};
use crate::schema::{AnyColumn, Ident, Table};
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Executor, Progress, Result, RowRead, Transactional};

// Internal names of the trigger function; each is made unique against the
// spec's own identifiers (see `InternalNames`).
const NEW_ROWS: &str = "pgp_new_rows";
const OLD_ROWS: &str = "pgp_old_rows";
const FRESH: &str = "pgp_fresh";
const FRESH_KEY: &str = "pgp_key";
const FRESH_STATUS: &str = "pgp_status";
const CHANGED: &str = "pgp_changed";
const LOCKED: &str = "pgp_locked";
/// Output column of the drift check: the status stored on the entity.
pub const DRIFT_STORED: &str = "stored_status";

impl<S: SqlType> LatestStatus<S> {
    /// The `CREATE INDEX IF NOT EXISTS` statements the chosen strategy needs
    /// (optionally `CONCURRENTLY`, which must run outside a transaction; see
    /// [`BuiltQuery::execute_outside_transaction`]).
    ///
    /// - history strategies: `history (fk, time DESC, id DESC) INCLUDE
    ///   (status)`, which serves `DISTINCT ON`, the `LATERAL … LIMIT 1`
    ///   probe, the window's sort, `NOT EXISTS` and the skip scan's jumps
    ///   alike, as index-only scans;
    /// - `Denormalized`: `entity (column, key)`, which serves the filter and
    ///   keyset pages in key order, then the history index above, which the
    ///   trigger's recompute and the "has history" probe of NULL-matching
    ///   predicates use.
    ///
    /// Index names are derived from the schema, table and every column (see
    /// the crate's naming rule on [`Denormalize`]), so two different indexes
    /// never share a name and `IF NOT EXISTS` never skips one for another.
    ///
    /// ```
    /// # use pgpatterns::{LatestStatus, Table};
    /// # let orders = Table::new("orders")?;
    /// # let h = Table::new("order_status")?;
    /// let spec = LatestStatus::<String>::new(
    ///     &orders.column::<i64>("id")?,
    ///     &h.column::<i64>("order_id")?,
    ///     &h.column::<String>("status")?,
    ///     &h.column::<chrono::DateTime<chrono::Utc>>("created_at")?,
    /// )
    /// .then_by(&h.column::<i64>("id")?);
    /// assert_eq!(
    ///     spec.index_advice(true)[0].sql(),
    ///     r#"CREATE INDEX CONCURRENTLY IF NOT EXISTS "order_status_order_id_created_at_id_status_latest_1d0c21f2482a" ON "order_status" ("order_id", "created_at" DESC, "id" DESC) INCLUDE ("status")"#
    /// );
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    #[must_use]
    pub fn index_advice(&self, concurrently: bool) -> Vec<BuiltQuery> {
        let mut indexes = vec![self.history_index()];
        if let (LatestStrategy::Denormalized, Some(col)) = (self.strategy, &self.denormalized) {
            let entity = plain(&self.entity);
            let mut idx = Index::create();
            idx.name(
                derived_name(&[
                    entity.schema().map_or("", |s| s.as_str()),
                    entity.name().as_str(),
                    col.name().as_str(),
                    self.key.name().as_str(),
                    "latest",
                ])
                .as_str()
                .to_owned(),
            )
            .table(entity.table_name())
            .col(col.iden())
            .col(self.key.iden());
            indexes.insert(0, idx);
        }
        indexes
            .iter_mut()
            .map(|index| {
                index.if_not_exists();
                if concurrently {
                    index.concurrently();
                }
                BuiltQuery::schema(index)
            })
            .collect()
    }

    /// `history (fk, order… DESC) INCLUDE (status)`.
    fn history_index(&self) -> IndexCreateStatement {
        let history = plain(&self.history);
        let mut parts = vec![
            history.schema().map_or("", |s| s.as_str()),
            history.name().as_str(),
            self.fk.name().as_str(),
        ];
        parts.extend(self.order.iter().map(|c| c.name().as_str()));
        parts.push(self.status.name().as_str());
        parts.push("latest");
        let mut idx = Index::create();
        idx.name(derived_name(&parts).as_str())
            .table(history.table_name())
            .col(self.fk.iden());
        for c in &self.order {
            idx.col((c.iden(), IndexOrder::Desc));
        }
        if self.order.iter().all(|c| c.name() != self.status.name()) {
            idx.include(self.status.iden());
        }
        idx
    }

    /// DDL and maintenance for the denormalized status column set with
    /// [`denormalized`](Self::denormalized): a trigger keeps it equal to the
    /// status of the latest history row.
    ///
    /// # Errors
    /// A problem recorded by a step (see [`check`](Self::check));
    /// [`Error::InvalidSpec`] without a denormalized column, or with a
    /// [`history_filter`](Self::history_filter) (the trigger follows every
    /// history row).
    pub fn denormalize(&self) -> Result<Denormalize> {
        self.problems.check()?;
        let column = self.denormalized.clone().ok_or_else(|| {
            Error::spec(
                "denormalized",
                "name the entity's status column first: .denormalized(&col)",
            )
        })?;
        if !self.history_filters.is_empty() {
            return Err(Error::spec(
                "history_filter",
                "the denormalized column follows every history row; remove the history filter",
            ));
        }
        let entity = plain(&self.entity);
        let history = plain(&self.history);
        let schema_of = |t: &Table| t.schema().map_or("", |s| s.as_str()).to_owned();
        let (es, hs) = (schema_of(&entity), schema_of(&history));
        // Every part that tells this column's trigger from another's: both
        // tables (with their schemas), the column and the foreign key.
        let name = derived_name(&[
            "pgp_latest",
            &es,
            entity.name().as_str(),
            column.name().as_str(),
            &hs,
            history.name().as_str(),
            self.fk.name().as_str(),
        ]);
        let mut taken: Vec<String> = vec![
            entity.name().as_str().to_owned(),
            history.name().as_str().to_owned(),
            es,
            hs,
        ];
        taken.extend(
            [&self.key, &column, &self.fk, &self.status]
                .into_iter()
                .chain(&self.order)
                .map(|c| c.name().as_str().to_owned()),
        );
        let names = InternalNames::avoiding(&taken);
        Ok(Denormalize {
            key: self.key.of(&entity),
            column: column.of(&entity),
            entity,
            history,
            fk: self.fk.clone(),
            status: self.status.clone(),
            order: self.order.clone(),
            name,
            names,
        })
    }
}

/// Recomputes `column` of `table` as `fresh` (an expression over the row),
/// `batch_size` rows per transaction in `key` order, reporting progress
/// after each batch: the batched backfill of every trigger-maintained
/// column. Each batch locks its rows in key order (as the triggers do) and
/// writes only the rows that differ, under READ COMMITTED whatever the
/// session's default, so it is safe while writers run and resumable.
pub(crate) async fn backfill_column<K, E>(
    db: &mut E,
    (table, key, column): (&Table, &AnyColumn, &AnyColumn),
    fresh: Expr,
    batch_size: i64,
    progress: &mut (impl FnMut(Progress) + Send),
) -> Result<BackfillReport>
where
    K: SqlType + FromSqlOwned + Send + Sync,
    E: Transactional,
{
    Error::at_least("batch_size", batch_size, 1)?;
    key.check_type::<K>("backfill", "key type K")?;
    let started = Instant::now();
    let total: i64 = db
        .one_row(&BuiltQuery::new(
            &Query::select()
                .expr(Expr::cust("COUNT(*)"))
                .from(table.table_ref())
                .to_owned(),
        ))
        .await?
        .try_get(0usize.into())?;
    let total = u64::try_from(total).unwrap_or(0);
    let mut report = BackfillReport {
        entities: 0,
        updated: 0,
        batches: 0,
        elapsed: Duration::ZERO,
    };
    progress(Progress::new("backfill", 0, Some(total)));
    let mut after: Option<K> = None;
    loop {
        // The batch's last key, or the table's last one.
        let mut bound = Query::select();
        bound
            .column(key.col_ref())
            .from(table.table_ref())
            .order_by(key.col_ref(), Order::Asc)
            .limit(batch_size as u64);
        if let Some(a) = &after {
            bound.and_where(key.expr().gt(a.clone().param()));
        }
        let row = db.one_row(&batch_bounds(bound, key.iden())).await?;
        let n: i64 = row.try_get(0usize.into())?;
        let upto: Option<K> = row.try_get(1usize.into())?;
        let Some(upto) = upto else { break };
        // The key range itself (not `IN (subquery)`), so both statements
        // are index range scans instead of hash joins over the table.
        let mut range = key.expr().lte(upto.clone().param());
        if let Some(a) = &after {
            range = range.and(key.expr().gt(a.clone().param()));
        }
        let lock = Query::select()
            .column(key.col_ref())
            .from(table.table_ref())
            .and_where(range.clone())
            .order_by(key.col_ref(), Order::Asc)
            .lock(LockType::NoKeyUpdate)
            .to_owned();
        let refresh = Query::update()
            .table(table.table_name())
            .value(column.iden(), fresh.clone())
            .and_where(range)
            .and_where(is_distinct_from(column.expr(), fresh.clone()))
            .to_owned();
        // READ COMMITTED whatever the session's default, so the refresh
        // sees what writers committed while the batch waited for locks.
        let done = db
            .run_in_transaction(&[
                read_committed(),
                BuiltQuery::new(&lock),
                BuiltQuery::new(&refresh),
            ])
            .await?;
        report.batches += 1;
        report.entities += u64::try_from(n).unwrap_or(0);
        report.updated += done.get(2).copied().unwrap_or(0);
        progress(Progress::new("backfill", report.entities, Some(total)));
        after = Some(upto);
        if n < batch_size {
            break;
        }
    }
    report.elapsed = started.elapsed();
    Ok(report)
}

/// The table without its alias (DDL and UPDATE targets use real names).
fn plain(table: &Table) -> Table {
    match table.schema() {
        Some(schema) => Table::in_schema(schema.as_str(), table.name().as_str()),
        None => Table::new(table.name().as_str()),
    }
    .unwrap_or_else(|_| table.clone())
}

/// The denormalized status column of [`LatestStrategy::Denormalized`]: its
/// DDL, the trigger that keeps it current, a batched backfill and a drift
/// check. Made by [`LatestStatus::denormalize`].
///
/// The triggers are statement-level `AFTER INSERT / UPDATE / DELETE /
/// TRUNCATE` triggers on the history table with transition tables, so a bulk
/// insert recomputes each touched entity once. For every entity whose
/// history changed, the trigger first locks the entity row (`FOR NO KEY
/// UPDATE`, in key order, so concurrent writers queue instead of
/// deadlocking), then stores the status of the latest history row, or NULL
/// when none is left. Out-of-order inserts (an older `created_at` arriving
/// later) leave the column alone because the latest row is recomputed, never
/// assumed to be the new one.
///
/// # Isolation levels
///
/// - `READ COMMITTED` (PostgreSQL's default): a writer waits for a
///   concurrent writer of the same entity to commit, then recomputes with a
///   fresh snapshot that sees that writer's rows. Always right.
/// - `REPEATABLE READ` and `SERIALIZABLE`: a writer's snapshot cannot see
///   rows committed after it started, so its trigger could compute a stale
///   status. It never stores one: every recompute **writes** the entity row
///   (even when the status is unchanged), so a writer whose snapshot
///   predates another writer's change to the same entity fails with a
///   serialization error (SQLSTATE `40001`) — retry the transaction, as
///   these levels require anyway. Side effect: each history write updates
///   its entity's row once per statement, so `UPDATE` triggers on the entity
///   table fire for it.
///
/// Tested with random concurrent writers at all three levels (drift 0) and
/// with the deterministic stale-snapshot interleaving.
///
/// # Names
///
/// The function's name is derived from both tables (with their schemas),
/// the column and the foreign key (see [`function_name`](Self::function_name);
/// override with [`named`](Self::named)); the triggers' from the function's.
/// Installing and uninstalling refuse with [`Error::ObjectConflict`] when an
/// object of those names exists that pgpatterns did not create for this
/// column (recognised by the function's comment, [`marker`](Self::marker)):
/// nothing is ever replaced or dropped that is not this column's own.
///
/// All DDL is idempotent (`ADD COLUMN IF NOT EXISTS`, `CREATE OR REPLACE
/// FUNCTION`, `CREATE OR REPLACE TRIGGER`; PostgreSQL 14 or newer). The
/// function is created with `SET search_path FROM CURRENT`, so unqualified
/// table names resolve as they did when it was installed, and with
/// `#variable_conflict use_column`, so tables and columns named `new`,
/// `old`, `found` or `tg_op` work like any other.
#[derive(Debug, Clone)]
pub struct Denormalize {
    entity: Table,
    key: AnyColumn,
    column: AnyColumn,
    history: Table,
    fk: AnyColumn,
    status: AnyColumn,
    order: Vec<AnyColumn>,
    name: Ident,
    names: InternalNames,
}

/// The trigger function's own names (transition tables, aliases), each
/// chosen to differ from every identifier of the spec, so a table or column
/// called `pgp_new_rows` cannot be captured by them.
#[derive(Debug, Clone)]
struct InternalNames {
    new_rows: Ident,
    old_rows: Ident,
    fresh: Ident,
    fresh_key: Ident,
    fresh_status: Ident,
    changed: Ident,
    locked: Ident,
}

impl InternalNames {
    fn avoiding(taken: &[String]) -> InternalNames {
        let pick = |base: &str| {
            let name = free_name(base, taken.iter().map(String::as_str));
            Ident::new(&name).unwrap_or_else(|_| Ident::fixed("pgp_internal"))
        };
        InternalNames {
            new_rows: pick(NEW_ROWS),
            old_rows: pick(OLD_ROWS),
            fresh: pick(FRESH),
            fresh_key: pick(FRESH_KEY),
            fresh_status: pick(FRESH_STATUS),
            changed: pick(CHANGED),
            locked: pick(LOCKED),
        }
    }
}

/// What a [`Denormalize::backfill`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BackfillReport {
    /// Entities visited.
    pub entities: u64,
    /// Entities whose column changed.
    pub updated: u64,
    /// Batches (one transaction each).
    pub batches: u64,
    /// Wall time.
    pub elapsed: Duration,
}

impl Denormalize {
    /// Names the trigger function and triggers after `base` instead of the
    /// derived `pgp_latest_<entity>_<column>_…_<hash>` (each trigger's name
    /// is derived from it).
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] for an invalid name.
    pub fn named(mut self, base: impl AsRef<str>) -> Result<Denormalize> {
        self.name = Ident::new(base)?;
        Ok(self)
    }

    /// The trigger function's name (in the entity table's schema, or the
    /// first schema of `search_path`).
    #[must_use]
    pub fn function_name(&self) -> &Ident {
        &self.name
    }

    /// `ALTER TABLE entity ADD COLUMN IF NOT EXISTS column <type>`.
    #[must_use]
    pub fn add_column(&self) -> BuiltQuery {
        BuiltQuery::schema(
            Ddl::alter()
                .table(self.entity.table_name())
                .add_column_if_not_exists(
                    ColumnDef::new(self.column.iden())
                        .custom(Alias::new(self.column.sql_type()))
                        .to_owned(),
                ),
        )
    }

    /// `CREATE OR REPLACE FUNCTION` of the trigger function (see
    /// [`install_statements`](Self::install_statements) for the guard that
    /// keeps it from replacing a function pgpatterns did not make).
    ///
    /// The body starts with `#variable_conflict use_column`, so tables and
    /// columns named like PL/pgSQL's own variables (`new`, `old`, `found`,
    /// `tg_op`, …) are read as columns, and every internal name (transition
    /// tables, aliases) is chosen to differ from the spec's identifiers.
    #[must_use]
    pub fn function(&self) -> BuiltQuery {
        let truncate = Query::update()
            .table(self.entity.table_name())
            .value(self.column.iden(), Expr::cust("NULL"))
            .and_where(self.column.expr().is_not_null())
            .to_owned();
        let refresh = |changed: SelectStatement| {
            format!(
                "PERFORM 1 FROM ({}) AS {};\n    {};",
                text(&self.lock(changed.clone())),
                quote(&self.names.locked),
                text(&self.refresh(changed)),
            )
        };
        let n = &self.names;
        let body = format!(
            "\n#variable_conflict use_column
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    {truncate};
  ELSIF TG_OP = 'INSERT' THEN
    {insert}
  ELSIF TG_OP = 'DELETE' THEN
    {delete}
  ELSE
    {update}
  END IF;
  RETURN NULL;
END\n",
            truncate = text(&truncate),
            insert = refresh(self.changed(&[&n.new_rows])),
            delete = refresh(self.changed(&[&n.old_rows])),
            update = refresh(self.changed(&[&n.new_rows, &n.old_rows])),
        );
        BuiltQuery::generated(format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql \
             SET search_path FROM CURRENT AS {}",
            quote_beside(&self.entity, &self.name),
            dollar_quote(&body)
        ))
    }

    /// `COMMENT ON FUNCTION`: the mark by which pgpatterns recognises its
    /// own function for this column (see [`marker`](Self::marker)).
    fn comment(&self) -> BuiltQuery {
        BuiltQuery::generated(format!(
            "COMMENT ON FUNCTION {}() IS {}",
            quote_beside(&self.entity, &self.name),
            string_literal(&self.marker())
        ))
    }

    /// The comment pgpatterns puts on its trigger function: which column it
    /// keeps, from which history. An existing function of the same name is
    /// replaced (or dropped) only when it carries exactly this comment.
    #[must_use]
    pub fn marker(&self) -> String {
        format!(
            "pgpatterns: keeps {}.{} equal to the latest {} of {} by {}",
            quote_table(&self.entity),
            quote(self.column.name()),
            quote(self.status.name()),
            quote_table(&self.history),
            quote(self.fk.name()),
        )
    }

    /// The function's signature as text for `to_regprocedure`.
    pub(crate) fn signature(&self) -> String {
        format!("{}()", quote_beside(&self.entity, &self.name))
    }

    /// A `DO` block that stops the transaction (SQLSTATE `42710`,
    /// `duplicate_object`) when the function's name is taken by a function
    /// without this column's [`marker`](Self::marker), or a trigger name by
    /// a trigger on the history table that runs another function. It runs
    /// first in the same transaction as the DDL, so nothing is replaced or
    /// dropped that pgpatterns did not create.
    #[must_use]
    pub fn guard(&self) -> BuiltQuery {
        self.owned().guard()
    }

    /// The function, its triggers on the history table, and their markers.
    fn owned(&self) -> crate::ddl::Owned {
        crate::ddl::Owned {
            purpose: "this column",
            function: self.signature(),
            function_marker: self.marker(),
            rename: "Denormalize::named",
            trigger_tables: vec![quote_table(&self.history)],
            triggers: self.trigger_names(),
            relations: Vec::new(),
            index_on: None,
        }
    }

    /// The four `CREATE OR REPLACE TRIGGER` statements on the history table.
    #[must_use]
    pub fn triggers(&self) -> Vec<BuiltQuery> {
        let n = &self.names;
        crate::ddl::statement_triggers(
            &quote_table(&self.history),
            &n.new_rows,
            &n.old_rows,
            |suffix| self.trigger_name(suffix),
            &format!("{}()", quote_beside(&self.entity, &self.name)),
        )
        .into()
    }

    /// The trigger names, one per event (`INSERT`, `UPDATE`, `DELETE`,
    /// `TRUNCATE`), derived from the function's name.
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

    /// The guard, column, function (with its comment) and triggers, in
    /// order: run them in one transaction (see [`install`](Self::install)),
    /// then [`backfill`](Self::backfill). Because the [`guard`](Self::guard)
    /// runs first, the `CREATE OR REPLACE` statements only ever replace
    /// pgpatterns' own function and triggers for this column.
    #[must_use]
    pub fn install_statements(&self) -> Vec<BuiltQuery> {
        let mut all = vec![
            self.guard(),
            self.add_column(),
            self.function(),
            self.comment(),
        ];
        all.extend(self.triggers());
        all
    }

    /// The guard, then drops the triggers and the function (`IF EXISTS`);
    /// the column stays.
    #[must_use]
    pub fn uninstall_statements(&self) -> Vec<BuiltQuery> {
        let mut all = vec![self.guard()];
        all.extend(TRIGGER_SUFFIXES.iter().map(|suffix| {
            BuiltQuery::generated(format!(
                "DROP TRIGGER IF EXISTS {} ON {}",
                quote(&self.trigger_name(suffix)),
                quote_table(&self.history)
            ))
        }));
        all.push(BuiltQuery::generated(format!(
            "DROP FUNCTION IF EXISTS {}()",
            quote_beside(&self.entity, &self.name)
        )));
        all
    }

    /// Checks the names (see [`Error::ObjectConflict`]), then runs
    /// [`install_statements`](Self::install_statements) in one transaction.
    /// Idempotent: installing again replaces pgpatterns' own objects with
    /// the same definitions.
    ///
    /// # Errors
    /// [`Error::ObjectConflict`] when a function or trigger of the derived
    /// names exists and is not this column's; the database's error
    /// otherwise. Nothing is installed then.
    pub async fn install<E: Transactional>(&self, db: &mut E) -> Result<()> {
        self.owned().run(db, &self.install_statements()).await
    }

    /// [`install`](Self::install) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
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
    /// this column's (nothing is dropped then); the database's error.
    pub async fn uninstall<E: Transactional>(&self, db: &mut E) -> Result<()> {
        self.owned().run(db, &self.uninstall_statements()).await
    }

    /// [`uninstall`](Self::uninstall) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
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

    /// Entities whose column disagrees with their history (including those
    /// with a status but no history left): the entity key, the stored value
    /// ([`DRIFT_STORED`]) and the latest history status
    /// ([`LATEST_STATUS`](super::LATEST_STATUS)). Empty when the trigger has
    /// done its job. Compose it (order, limit, count) as you like.
    #[must_use]
    pub fn drift_statement(&self) -> SelectStatement {
        // The lateral's alias avoids the spec's own names (a table called
        // `latest` must not be shadowed).
        let latest = self.names.fresh.clone();
        let latest_status = Expr::col((latest.clone(), Alias::new(super::LATEST_STATUS)));
        Query::select()
            .column(self.key.col_ref())
            .expr_as(self.column.expr(), Alias::new(DRIFT_STORED))
            .expr_as(latest_status.clone(), Alias::new(super::LATEST_STATUS))
            .from(self.entity.table_ref())
            .join_lateral(
                JoinType::LeftJoin,
                self.newest_status(self.key.expr(), Ident::fixed(super::LATEST_STATUS)),
                latest,
                Expr::cust("TRUE"),
            )
            .and_where(is_distinct_from(self.column.expr(), latest_status))
            .to_owned()
    }

    /// [`drift_statement`](Self::drift_statement) in key order.
    #[must_use]
    pub fn drift_query(&self) -> BuiltQuery {
        let mut q = self.drift_statement();
        q.order_by(self.key.col_ref(), Order::Asc);
        BuiltQuery::new(&q)
    }

    /// How many entities have drifted.
    ///
    /// # Errors
    /// The database's error.
    pub async fn drift_count<E: Executor>(&self, db: &E) -> Result<i64> {
        db.one_row(&count_of(self.drift_statement()))
            .await?
            .try_get(0usize.into())
    }

    /// [`drift_count`](Self::drift_count) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
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

    /// Recomputes the column for every entity, `batch_size` entities per
    /// transaction in key order, reporting progress after each batch. Safe
    /// while writers run (each batch locks its entities like the trigger
    /// does) and resumable: it only writes rows that differ. `K` is the
    /// entity key's type. Run `ANALYZE` on both tables after bulk loads.
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
        let newest = Expr::SubQuery(
            None,
            Box::new(
                self.newest_status(self.key.expr(), self.names.fresh_status.clone())
                    .into(),
            ),
        );
        backfill_column::<K, E>(
            db,
            (&self.entity, &self.key, &self.column),
            newest,
            batch_size,
            &mut progress,
        )
        .await
    }

    /// [`backfill`](Self::backfill) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
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

    /// `SELECT DISTINCT fk FROM <transition tables>`.
    fn changed(&self, tables: &[&Ident]) -> SelectStatement {
        let mut parts = tables.iter().map(|t| {
            Query::select()
                .expr_as(
                    Expr::col(((*t).clone(), self.fk.iden())),
                    self.names.fresh_key.clone(),
                )
                .from((*t).clone())
                .to_owned()
        });
        let mut q = parts.next().unwrap_or_else(Query::select);
        for more in parts {
            q.union(UnionType::Distinct, more);
        }
        if tables.len() == 1 {
            q.distinct();
        }
        q
    }

    /// Locks the entities whose key is in `keys` (first column), in key
    /// order.
    fn lock(&self, keys: SelectStatement) -> SelectStatement {
        Query::select()
            .column(self.key.col_ref())
            .from(self.entity.table_ref())
            .and_where(self.key.expr().in_subquery(keys))
            .order_by(self.key.col_ref(), Order::Asc)
            .lock(LockType::NoKeyUpdate)
            .to_owned()
    }

    /// Sets the column of **every** entity in `keys` (a query of one
    /// column, the key) to its latest status (NULL when no history is left),
    /// even when the value stays the same: that write is what makes a
    /// concurrent `REPEATABLE READ` or `SERIALIZABLE` writer of the same
    /// entity, whose snapshot predates this change, fail with a
    /// serialization error (`40001`) instead of storing a status computed
    /// from a stale snapshot. A lock alone leaves no trace once committed.
    fn refresh(&self, keys: SelectStatement) -> UpdateStatement {
        let n = &self.names;
        let fresh = n.fresh.clone();
        let changed_key = Expr::col((n.changed.clone(), n.fresh_key.clone()));
        let newest = self.newest_status(changed_key.clone(), n.fresh_status.clone());
        let fresh_rows = Query::select()
            .expr_as(changed_key, n.fresh_key.clone())
            .expr_as(
                Expr::SubQuery(None, Box::new(newest.into())),
                n.fresh_status.clone(),
            )
            .from_subquery(keys, n.changed.clone())
            .to_owned();
        let fresh_status = Expr::col((fresh.clone(), n.fresh_status.clone()));
        Query::update()
            .table(self.entity.table_name())
            .value(self.column.iden(), fresh_status)
            .from(TableRef::SubQuery(
                Box::new(fresh_rows),
                fresh.clone().into_iden(),
            ))
            .and_where(self.key.expr().eq(Expr::col((fresh, n.fresh_key.clone()))))
            .to_owned()
    }

    /// `SELECT status FROM history WHERE fk = <of> ORDER BY … DESC LIMIT 1`,
    /// with the status named `alias`.
    fn newest_status(&self, of: Expr, alias: Ident) -> SelectStatement {
        let mut q = Query::select();
        q.expr_as(self.status.expr(), alias)
            .from(self.history.table_ref())
            .and_where(self.fk.expr().eq(of));
        for c in &self.order {
            q.order_by(c.col_ref(), Order::Desc);
        }
        q.limit(1);
        q
    }
}

/// Statement text with values inlined; only for statements whose values
/// are this crate's own constants (`LIMIT 1`).
fn text(statement: &impl QueryStatementWriter) -> String {
    statement.to_string(PostgresQueryBuilder)
}
