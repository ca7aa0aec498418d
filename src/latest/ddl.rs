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
use crate::ddl::{derived_name, dollar_quote, quote, quote_beside, quote_table};
use crate::query::{batch_bounds, count_of, is_distinct_from};
use crate::schema::{AnyColumn, Ident, Table};
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Executor, Progress, Result, RowRead, Transactional};

/// Name of the transition table of new history rows inside the trigger.
const NEW_ROWS: &str = "pgp_new_rows";
/// Name of the transition table of old history rows inside the trigger.
const OLD_ROWS: &str = "pgp_old_rows";
const FRESH: &str = "pgp_fresh";
const FRESH_KEY: &str = "pgp_key";
const FRESH_STATUS: &str = "pgp_status";
const CHANGED: &str = "pgp_changed";
/// Output column of the drift check: the status stored on the entity.
pub const DRIFT_STORED: &str = "stored_status";

impl<S: SqlType> LatestStatus<S> {
    /// The `CREATE INDEX IF NOT EXISTS` statements the chosen strategy needs
    /// (optionally `CONCURRENTLY`, which must run outside a transaction; see
    /// [`Executor::execute_outside_transaction`]).
    ///
    /// - history strategies: `history (fk, time DESC, id DESC) INCLUDE
    ///   (status)`, which serves `DISTINCT ON`, the `LATERAL … LIMIT 1`
    ///   probe, the window's sort, `NOT EXISTS` and the skip scan's jumps
    ///   alike, as index-only scans;
    /// - `Denormalized`: `entity (column, key)`, which serves the filter and
    ///   keyset pages in key order.
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
    /// )?
    /// .then_by(&h.column::<i64>("id")?)?;
    /// assert_eq!(
    ///     spec.index_advice(true)[0].sql(),
    ///     r#"CREATE INDEX CONCURRENTLY IF NOT EXISTS "order_status_order_id_created_at_id_latest" ON "order_status" ("order_id", "created_at" DESC, "id" DESC) INCLUDE ("status")"#
    /// );
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    pub fn index_advice(&self, concurrently: bool) -> Vec<BuiltQuery> {
        let mut index = match (self.strategy, &self.denormalized) {
            (LatestStrategy::Denormalized, Some(col)) => {
                let entity = plain(&self.entity);
                let mut idx = Index::create();
                idx.name(
                    derived_name(&[
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
                idx
            }
            _ => self.history_index(),
        };
        index.if_not_exists();
        if concurrently {
            index.concurrently();
        }
        vec![BuiltQuery::schema(&index)]
    }

    /// `history (fk, order… DESC) INCLUDE (status)`.
    fn history_index(&self) -> IndexCreateStatement {
        let history = plain(&self.history);
        let mut parts = vec![history.name().as_str(), self.fk.name().as_str()];
        parts.extend(self.order.iter().map(|c| c.name().as_str()));
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
    /// [`Error::InvalidSpec`] without a denormalized column, or with a
    /// [`history_filter`](Self::history_filter) (the trigger follows every
    /// history row).
    pub fn denormalize(&self) -> Result<Denormalize> {
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
        let name = derived_name(&["pgp_latest", entity.name().as_str(), column.name().as_str()]);
        Ok(Denormalize {
            key: self.key.of(&entity),
            column: column.of(&entity),
            entity,
            history: plain(&self.history),
            fk: self.fk.clone(),
            status: self.status.clone(),
            order: self.order.clone(),
            name,
        })
    }
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
/// deadlocking), then — with a fresh snapshot that sees every committed
/// history row — stores the status of the latest row, or NULL when none is
/// left. Out-of-order inserts (an older `created_at` arriving later) leave
/// the column alone because the latest row is recomputed, never assumed to
/// be the new one. Under `REPEATABLE READ` or `SERIALIZABLE`, concurrent
/// writers to one entity get a serialization failure (SQLSTATE `40001`) to
/// retry instead.
///
/// All DDL is idempotent (`ADD COLUMN IF NOT EXISTS`, `CREATE OR REPLACE
/// FUNCTION`, `CREATE OR REPLACE TRIGGER`; PostgreSQL 14 or newer). The
/// function is created with `SET search_path FROM CURRENT`, so unqualified
/// table names resolve as they did when it was installed.
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
    /// Names the trigger function and triggers after `base` instead of
    /// `pgp_latest_<entity>_<column>` (each trigger adds a suffix).
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] for an invalid name.
    pub fn named(mut self, base: impl AsRef<str>) -> Result<Denormalize> {
        self.name = Ident::new(base)?;
        Ok(self)
    }

    /// The trigger function's name (in the entity table's schema, or the
    /// first schema of `search_path`).
    pub fn function_name(&self) -> &Ident {
        &self.name
    }

    /// `ALTER TABLE entity ADD COLUMN IF NOT EXISTS column <type>`.
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

    /// `CREATE OR REPLACE FUNCTION` of the trigger function.
    pub fn function(&self) -> BuiltQuery {
        let truncate = Query::update()
            .table(self.entity.table_name())
            .value(self.column.iden(), Expr::cust("NULL"))
            .and_where(self.column.expr().is_not_null())
            .to_owned();
        let refresh = |changed: SelectStatement| {
            format!(
                "PERFORM 1 FROM ({}) AS pgp_locked;\n    {};",
                text(&self.lock(changed.clone())),
                text(&self.refresh(changed)),
            )
        };
        let body = format!(
            "\nBEGIN
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
            insert = refresh(self.changed(&[NEW_ROWS])),
            delete = refresh(self.changed(&[OLD_ROWS])),
            update = refresh(self.changed(&[NEW_ROWS, OLD_ROWS])),
        );
        BuiltQuery::generated(format!(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql \
             SET search_path FROM CURRENT AS {}",
            quote_beside(&self.entity, &self.name),
            dollar_quote(&body)
        ))
    }

    /// The four `CREATE OR REPLACE TRIGGER` statements on the history table.
    pub fn triggers(&self) -> Vec<BuiltQuery> {
        let events: [(&str, &str, &str); 4] = [
            ("ins", "INSERT", " REFERENCING NEW TABLE AS pgp_new_rows"),
            (
                "upd",
                "UPDATE",
                " REFERENCING OLD TABLE AS pgp_old_rows NEW TABLE AS pgp_new_rows",
            ),
            ("del", "DELETE", " REFERENCING OLD TABLE AS pgp_old_rows"),
            ("trunc", "TRUNCATE", ""),
        ];
        events
            .iter()
            .map(|(suffix, event, referencing)| {
                BuiltQuery::generated(format!(
                    "CREATE OR REPLACE TRIGGER {} AFTER {event} ON {}{referencing} \
                     FOR EACH STATEMENT EXECUTE FUNCTION {}()",
                    quote(&self.trigger_name(suffix)),
                    quote_table(&self.history),
                    quote_beside(&self.entity, &self.name),
                ))
            })
            .collect()
    }

    fn trigger_name(&self, suffix: &str) -> Ident {
        derived_name(&[self.name.as_str(), suffix])
    }

    /// Column, function and triggers, in order: run them in one transaction
    /// (see [`install`](Self::install)), then [`backfill`](Self::backfill).
    pub fn install_statements(&self) -> Vec<BuiltQuery> {
        let mut all = vec![self.add_column(), self.function()];
        all.extend(self.triggers());
        all
    }

    /// Drops the triggers and the function (`IF EXISTS`); the column stays.
    pub fn uninstall_statements(&self) -> Vec<BuiltQuery> {
        let mut all: Vec<BuiltQuery> = ["ins", "upd", "del", "trunc"]
            .iter()
            .map(|suffix| {
                BuiltQuery::generated(format!(
                    "DROP TRIGGER IF EXISTS {} ON {}",
                    quote(&self.trigger_name(suffix)),
                    quote_table(&self.history)
                ))
            })
            .collect();
        all.push(BuiltQuery::generated(format!(
            "DROP FUNCTION IF EXISTS {}()",
            quote_beside(&self.entity, &self.name)
        )));
        all
    }

    /// Runs [`install_statements`](Self::install_statements) in one
    /// transaction. Idempotent.
    ///
    /// # Errors
    /// The database's error; nothing is installed then.
    pub async fn install<E: Transactional>(&self, db: &mut E) -> Result<()> {
        db.execute_in_transaction(&self.install_statements())
            .await?;
        Ok(())
    }

    /// Runs [`uninstall_statements`](Self::uninstall_statements) in one
    /// transaction.
    ///
    /// # Errors
    /// The database's error.
    pub async fn uninstall<E: Transactional>(&self, db: &mut E) -> Result<()> {
        db.execute_in_transaction(&self.uninstall_statements())
            .await?;
        Ok(())
    }

    /// Entities whose column disagrees with their history (including those
    /// with a status but no history left): the entity key, the stored value
    /// ([`DRIFT_STORED`]) and the latest history status
    /// ([`LATEST_STATUS`](super::LATEST_STATUS)). Empty when the trigger has
    /// done its job. Compose it (order, limit, count) as you like.
    pub fn drift_statement(&self) -> SelectStatement {
        let latest = Alias::new(super::LATEST_ALIAS);
        let latest_status = Expr::col((latest.clone(), Alias::new(super::LATEST_STATUS)));
        Query::select()
            .column(self.key.col_ref())
            .expr_as(self.column.expr(), Alias::new(DRIFT_STORED))
            .expr_as(latest_status.clone(), Alias::new(super::LATEST_STATUS))
            .from(self.entity.table_ref())
            .join_lateral(
                JoinType::LeftJoin,
                self.newest_status(self.key.expr(), super::LATEST_STATUS),
                latest,
                Expr::cust("TRUE"),
            )
            .and_where(is_distinct_from(self.column.expr(), latest_status))
            .to_owned()
    }

    /// [`drift_statement`](Self::drift_statement) in key order.
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
        db.query_one(&count_of(self.drift_statement()))
            .await?
            .try_get(0usize.into())
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
        Error::at_least("batch_size", batch_size, 1)?;
        self.key.check_type::<K>("backfill", "key type K")?;
        let started = Instant::now();
        let total: i64 = db
            .query_one(&BuiltQuery::new(
                &Query::select()
                    .expr(Expr::cust("COUNT(*)"))
                    .from(self.entity.table_ref())
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
                .column(self.key.col_ref())
                .from(self.entity.table_ref())
                .order_by(self.key.col_ref(), Order::Asc)
                .limit(batch_size as u64);
            if let Some(a) = &after {
                bound.and_where(self.key.expr().gt(a.clone().param()));
            }
            let row = db.query_one(&batch_bounds(bound, self.key.iden())).await?;
            let n: i64 = row.try_get(0usize.into())?;
            let upto: Option<K> = row.try_get(1usize.into())?;
            let Some(upto) = upto else { break };
            // The key range itself (not `IN (subquery)`), so both statements
            // are index range scans instead of hash joins over the table.
            let mut range = self.key.expr().lte(upto.clone().param());
            if let Some(a) = &after {
                range = range.and(self.key.expr().gt(a.clone().param()));
            }
            let lock = Query::select()
                .column(self.key.col_ref())
                .from(self.entity.table_ref())
                .and_where(range.clone())
                .order_by(self.key.col_ref(), Order::Asc)
                .lock(LockType::NoKeyUpdate)
                .to_owned();
            let newest = || {
                Expr::SubQuery(
                    None,
                    Box::new(self.newest_status(self.key.expr(), FRESH_STATUS).into()),
                )
            };
            let refresh = Query::update()
                .table(self.entity.table_name())
                .value(self.column.iden(), newest())
                .and_where(range)
                .and_where(is_distinct_from(self.column.expr(), newest()))
                .to_owned();
            let done = db
                .execute_in_transaction(&[BuiltQuery::new(&lock), BuiltQuery::new(&refresh)])
                .await?;
            report.batches += 1;
            report.entities += u64::try_from(n).unwrap_or(0);
            report.updated += done.get(1).copied().unwrap_or(0);
            progress(Progress::new("backfill", report.entities, Some(total)));
            after = Some(upto);
            if n < batch_size {
                break;
            }
        }
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// `SELECT DISTINCT fk FROM <transition tables>`.
    fn changed(&self, tables: &[&'static str]) -> SelectStatement {
        let mut parts = tables.iter().map(|t| {
            Query::select()
                .expr_as(
                    Expr::col((Alias::new(*t), self.fk.iden())),
                    Alias::new(FRESH_KEY),
                )
                .from(Alias::new(*t))
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

    /// Sets the column of the entities in `keys` (a query of one column
    /// named `pgp_key`) to their latest status where it differs (NULL when
    /// no history is left).
    fn refresh(&self, keys: SelectStatement) -> UpdateStatement {
        let fresh = Alias::new(FRESH);
        let changed_key = Expr::col((Alias::new(CHANGED), Alias::new(FRESH_KEY)));
        let newest = self.newest_status(changed_key.clone(), FRESH_STATUS);
        let fresh_rows = Query::select()
            .expr_as(changed_key, Alias::new(FRESH_KEY))
            .expr_as(
                Expr::SubQuery(None, Box::new(newest.into())),
                Alias::new(FRESH_STATUS),
            )
            .from_subquery(keys, Alias::new(CHANGED))
            .to_owned();
        let fresh_status = Expr::col((fresh.clone(), Alias::new(FRESH_STATUS)));
        Query::update()
            .table(self.entity.table_name())
            .value(self.column.iden(), fresh_status.clone())
            .from(TableRef::SubQuery(
                Box::new(fresh_rows),
                fresh.clone().into_iden(),
            ))
            .and_where(
                self.key
                    .expr()
                    .eq(Expr::col((fresh, Alias::new(FRESH_KEY)))),
            )
            .and_where(is_distinct_from(self.column.expr(), fresh_status))
            .to_owned()
    }

    /// `SELECT status FROM history WHERE fk = <of> ORDER BY … DESC LIMIT 1`,
    /// with the status named `alias`.
    fn newest_status(&self, of: Expr, alias: &'static str) -> SelectStatement {
        let mut q = Query::select();
        q.expr_as(self.status.expr(), Alias::new(alias))
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
