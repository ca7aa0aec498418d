//! Upkeep of a partitioned table: partitions made ahead, the partition
//! list, retention by detaching, an archive partitioned table.

use chrono::NaiveDateTime;
use postgres_types::FromSqlOwned;
use sea_query::{Query, SelectStatement, UnionType};

use super::plan::{self, Names};
use super::{PartitionTime, Partitioner};
use crate::ddl::{derived_name, quote, quote_table, string_literal};
use crate::exec::{run_blocking, run_blocking_mut, BlockingExecutor};
use crate::schema::{Ident, Table};
use crate::types::SqlType;
use crate::{BuiltQuery, ColumnIndex, Error, Executor, Result, RowRead, Transactional};

/// One partition of a partitioned table ([`Partitioner::partitions`]).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Partition<T> {
    /// The partition, schema-qualified.
    pub table: Table,
    /// Inclusive lower bound; `None` for `MINVALUE` or the default partition.
    pub from: Option<T>,
    /// Exclusive upper bound; `None` for `MAXVALUE` or the default partition.
    pub to: Option<T>,
    /// The default partition.
    pub is_default: bool,
    /// The planner's row estimate (`reltuples`); `None` before the first
    /// `ANALYZE` or autovacuum.
    pub rows_estimate: Option<u64>,
    /// A `DETACH … CONCURRENTLY` was interrupted: it waits for `FINALIZE`
    /// ([`Partitioner::detach_older_than`] finishes it).
    pub detach_pending: bool,
}

/// A partition [`Partitioner::detach_older_than`] detached: a table of its
/// own now, with the bounds it had.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Detached<T> {
    /// The detached table.
    pub table: Table,
    /// Its former lower bound (`None`: `MINVALUE`).
    pub from: Option<T>,
    /// Its former upper bound.
    pub to: Option<T>,
}

const ADVISORY_SQL: &str = "SELECT pg_advisory_xact_lock(hashtextextended($1::text, 0))";

impl<K: SqlType + FromSqlOwned, T: PartitionTime> Partitioner<K, T> {
    /// The query [`partitions`](Self::partitions) runs: the partitions of
    /// the table with their bounds read back in the time column's type.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn partitions_query(&self) -> Result<BuiltQuery> {
        self.check()?;
        Ok(BuiltQuery::generated_with(
            format!(
                "SELECT n.nspname::text, c.relname::text, \
                        pg_catalog.pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT', \
                        CAST(b.m[1] AS {ty}), CAST(b.m[2] AS {ty}), c.reltuples::int8, i.inhdetachpending \
                 FROM pg_catalog.pg_inherits i \
                 JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid \
                 JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                 CROSS JOIN LATERAL (SELECT regexp_match(pg_catalog.pg_get_expr(c.relpartbound, c.oid), \
                     '^FOR VALUES FROM \\((?:''([^'']*)''|MINVALUE)\\) TO \\((?:''([^'']*)''|MAXVALUE)\\)$') AS m) AS b \
                 WHERE i.inhparent = to_regclass($1::text) \
                 ORDER BY 3, 4 NULLS FIRST, 2",
                ty = T::SQL_TYPE
            ),
            [quote_table(&self.table).into_value()],
        ))
    }

    /// The table's partitions, oldest first, the default partition last.
    /// Empty when the table is not partitioned (or does not exist).
    ///
    /// # Errors
    /// As [`check`](Self::check); the database's error.
    pub async fn partitions<E: Executor>(&self, db: &E) -> Result<Vec<Partition<T>>> {
        let rows = db.rows(&self.partitions_query()?).await?;
        let at = |i: usize| -> ColumnIndex<'static> { i.into() };
        rows.iter()
            .map(|row| {
                let estimate: i64 = row.try_get(at(5))?;
                Ok(Partition {
                    table: Table::in_schema(
                        row.try_get::<String>(at(0))?,
                        row.try_get::<String>(at(1))?,
                    )?,
                    is_default: row.try_get(at(2))?,
                    from: row.try_get(at(3))?,
                    to: row.try_get(at(4))?,
                    rows_estimate: u64::try_from(estimate).ok(),
                    detach_pending: row.try_get(at(6))?,
                })
            })
            .collect()
    }

    /// [`partitions`](Self::partitions) on a blocking client, from the
    /// same code.
    ///
    /// # Errors
    /// As [`partitions`](Self::partitions).
    pub fn partitions_blocking<C>(&self, db: &mut C) -> Result<Vec<Partition<T>>>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.partitions(db).await)
    }

    async fn partitioned_names<E: Executor>(&self, db: &E) -> Result<(Names, Vec<Partition<T>>)> {
        let names = self.names(db).await?;
        let parts = self.partitions(db).await?;
        let kind = db
            .optional_row(&BuiltQuery::fixed_with(
                "SELECT c.relkind::text FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1::text)",
                [quote_table(&names.original).into_value()],
            ))
            .await?;
        let kind: Option<String> = kind.map(|r| r.try_get(0usize.into())).transpose()?;
        if kind.as_deref() != Some("p") {
            return Err(Error::spec(
                "table",
                format!(
                    "{} is not a partitioned table",
                    names.original.display_name()
                ),
            ));
        }
        Ok((names, parts))
    }

    /// Makes sure the current partition and the next
    /// [`premake`](Self::premake) ones exist (by the server's clock):
    /// creates the missing ones in one transaction serialised by a
    /// transaction-level advisory lock on the table's name, so concurrent
    /// runs (two cron jobs) create each partition once. Ranges already
    /// covered by any partition are skipped. Returns the partitions that
    /// were missing when the run began (made by this run, or by a
    /// concurrent one it waited for). Safe to run as often as you like.
    ///
    /// # Errors
    /// As [`check`](Self::check); [`Error::InvalidSpec`] when the table is
    /// not partitioned; [`Error::ObjectConflict`] when a partition's name
    /// is taken by a table that is not that partition (it is left alone);
    /// the database's error (e.g. a default partition already holding rows
    /// of a new range).
    pub async fn premake_partitions<E: Transactional>(&self, db: &mut E) -> Result<Vec<Table>> {
        self.check()?;
        let (names, parts) = self.partitioned_names(&*db).await?;
        let now = Self::server_now(&*db).await?;
        let mut from = self.interval.floor(now);
        let mut wanted: Vec<(Ident, NaiveDateTime, NaiveDateTime)> = Vec::new();
        for _ in 0..=self.premake {
            let to = self
                .interval
                .next(from)
                .ok_or_else(|| Error::spec("premake", "partition bound out of range"))?;
            if !covered(&parts, from, to) {
                wanted.push((names.partition(&self.interval.suffix(from)), from, to));
            }
            from = to;
        }
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let mut statements = vec![
            BuiltQuery::fixed_with(ADVISORY_SQL, [quote_table(&names.original).into_value()]),
            plan::set_lock_timeout(self.lock_timeout_text()),
        ];
        for (name, from, to) in &wanted {
            statements.push(plan::partition_ddl::<T>(
                &names.original,
                &names.beside(name),
                *from,
                *to,
                true,
            ));
        }
        self.retrying(db, &statements).await?;
        let after = self.partitions(&*db).await?;
        let mut made = Vec::new();
        for (name, from, to) in wanted {
            if !covered(&after, from, to) {
                return Err(Error::ObjectConflict {
                    kind: "table",
                    name: names.beside(&name).display_name(),
                    reason: format!(
                        "the name is taken by a table that is not the partition [{from}, {to}) of {}",
                        names.original.display_name()
                    ),
                });
            }
            made.push(names.beside(&name));
        }
        Ok(made)
    }

    /// [`premake_partitions`](Self::premake_partitions) on a blocking
    /// client, from the same code.
    ///
    /// # Errors
    /// As [`premake_partitions`](Self::premake_partitions).
    pub fn premake_partitions_blocking<C>(&self, db: &mut C) -> Result<Vec<Table>>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.premake_partitions(db).await)
    }

    /// Detaches every partition whose upper bound is at or before
    /// `cutoff`, after finishing (`FINALIZE`) any detach a killed session
    /// left half done (whatever its bounds); returns both kinds. Without a default partition each detach is `DETACH
    /// PARTITION … CONCURRENTLY` (no exclusive lock; it cannot run in a
    /// transaction block, so `db` must not be a transaction); with one,
    /// PostgreSQL refuses `CONCURRENTLY`, and a plain `DETACH` runs under
    /// `lock_timeout` with retries (it holds an exclusive lock for a
    /// catalog change only, no scan). The detached tables keep their data
    /// (see [`archive_partition`](Self::archive_partition)).
    ///
    /// # Errors
    /// As [`check`](Self::check); [`Error::InvalidSpec`] for a cutoff in
    /// the future (by the client's clock, before any SQL is sent, then by
    /// the server's) or a table that is not partitioned;
    /// [`Error::InTransaction`] when `db` is a transaction and a concurrent
    /// detach is needed; the database's error (detaches done stay done).
    pub async fn detach_older_than<E: Transactional>(
        &self,
        db: &mut E,
        cutoff: T,
    ) -> Result<Vec<Detached<T>>> {
        self.check()?;
        let future = || {
            Error::spec(
                "cutoff",
                format!("{cutoff:?} is in the future: that would detach current data"),
            )
        };
        if cutoff.is_future() {
            return Err(future());
        }
        let server_future: bool = db
            .one_row(&BuiltQuery::new(
                &Query::select()
                    .expr(sea_query::ExprTrait::gt(
                        cutoff.clone().param(),
                        sea_query::Expr::cust("clock_timestamp()"),
                    ))
                    .to_owned(),
            ))
            .await?
            .try_get(0usize.into())?;
        if server_future {
            return Err(future());
        }
        let (names, parts) = self.partitioned_names(&*db).await?;
        let parent = quote_table(&names.original);
        let mut out = Vec::new();
        for p in parts.iter().filter(|p| p.detach_pending) {
            db.run_outside_transaction(&BuiltQuery::generated(format!(
                "ALTER TABLE {parent} DETACH PARTITION {} FINALIZE",
                quote_table(&p.table)
            )))
            .await?;
            out.push(Detached {
                table: p.table.clone(),
                from: p.from.clone(),
                to: p.to.clone(),
            });
        }
        let has_default = parts.iter().any(|p| p.is_default);
        let limit = cutoff.to_utc_naive();
        for p in parts.into_iter().filter(|p| {
            !p.is_default
                && !p.detach_pending
                && p.to.as_ref().is_some_and(|to| to.to_utc_naive() <= limit)
        }) {
            let detach = format!(
                "ALTER TABLE {parent} DETACH PARTITION {}",
                quote_table(&p.table)
            );
            if has_default {
                self.retrying(
                    db,
                    &[
                        plan::set_lock_timeout(self.lock_timeout_text()),
                        BuiltQuery::generated(detach),
                    ],
                )
                .await?;
            } else {
                db.run_outside_transaction(&BuiltQuery::generated(format!(
                    "{detach} CONCURRENTLY"
                )))
                .await?;
            }
            out.push(Detached {
                table: p.table,
                from: p.from,
                to: p.to,
            });
        }
        Ok(out)
    }

    /// [`detach_older_than`](Self::detach_older_than) on a blocking client,
    /// from the same code.
    ///
    /// # Errors
    /// As [`detach_older_than`](Self::detach_older_than).
    pub fn detach_older_than_blocking<C>(&self, db: &mut C, cutoff: T) -> Result<Vec<Detached<T>>>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.detach_older_than(db, cutoff).await)
    }

    /// Makes a detached partition a partition of `archive`, a partitioned
    /// table like this one (`CREATE TABLE … (LIKE table INCLUDING ALL)
    /// PARTITION BY RANGE (time)` when missing): first a `CHECK` of its
    /// bounds added `NOT VALID` and validated (a scan of the detached table
    /// only, under a lock that blocks no reader), so that `ATTACH
    /// PARTITION` finds the constraint proven and does not scan.
    ///
    /// # Errors
    /// As [`check`](Self::check); [`Error::InvalidSpec`] when `archive`
    /// exists but is not a partitioned table; the database's error.
    pub async fn archive_partition<E: Transactional>(
        &self,
        db: &mut E,
        detached: &Detached<T>,
        archive: &Table,
    ) -> Result<()> {
        self.check()?;
        let names = self.names(&*db).await?;
        let archive = match archive.schema() {
            Some(_) => archive.clone(),
            None => names.beside(archive.name()),
        };
        let time = quote(self.time.name());
        db.run(&BuiltQuery::generated(format!(
            "CREATE TABLE IF NOT EXISTS {} (LIKE {} INCLUDING ALL) PARTITION BY RANGE ({time})",
            quote_table(&archive),
            quote_table(&names.original)
        )))
        .await?;
        let kind: String = db
            .one_row(&BuiltQuery::fixed_with(
                "SELECT c.relkind::text FROM pg_catalog.pg_class c WHERE c.oid = to_regclass($1::text)",
                [quote_table(&archive).into_value()],
            ))
            .await?
            .try_get(0usize.into())?;
        if kind != "p" {
            return Err(Error::spec(
                "archive",
                format!(
                    "{} exists and is not a partitioned table",
                    archive.display_name()
                ),
            ));
        }
        let bound = |t: &Option<T>| {
            t.as_ref()
                .map(|t| string_literal(&T::bound_text(t.to_utc_naive())))
        };
        let (lo, hi) = (bound(&detached.from), bound(&detached.to));
        let ty = T::SQL_TYPE;
        let mut check = vec![format!("{time} IS NOT NULL")];
        if let Some(lo) = &lo {
            check.push(format!("{time} >= CAST({lo} AS {ty})"));
        }
        if let Some(hi) = &hi {
            check.push(format!("{time} < CAST({hi} AS {ty})"));
        }
        let part = quote_table(&detached.table);
        let con = quote(&derived_name(&[detached.table.name().as_str(), "bounds"]));
        let exists: bool = db
            .one_row(&BuiltQuery::fixed_with(
                "SELECT EXISTS (SELECT FROM pg_catalog.pg_constraint WHERE conrelid = to_regclass($1::text) AND conname = $2::text)",
                [
                    part.clone().into_value(),
                    derived_name(&[detached.table.name().as_str(), "bounds"])
                        .as_str()
                        .to_owned()
                        .into_value(),
                ],
            ))
            .await?
            .try_get(0usize.into())?;
        if !exists {
            db.run(&BuiltQuery::generated(format!(
                "ALTER TABLE {part} ADD CONSTRAINT {con} CHECK ({}) NOT VALID",
                check.join(" AND ")
            )))
            .await?;
        }
        db.run(&BuiltQuery::generated(format!(
            "ALTER TABLE {part} VALIDATE CONSTRAINT {con}"
        )))
        .await?;
        let attach = format!(
            "ALTER TABLE {} ATTACH PARTITION {part} FOR VALUES FROM ({}) TO ({})",
            quote_table(&archive),
            lo.unwrap_or_else(|| "MINVALUE".to_owned()),
            hi.unwrap_or_else(|| "MAXVALUE".to_owned()),
        );
        self.retrying(
            db,
            &[
                plan::set_lock_timeout(self.lock_timeout_text()),
                BuiltQuery::generated(attach),
            ],
        )
        .await?;
        Ok(())
    }

    /// [`archive_partition`](Self::archive_partition) on a blocking client,
    /// from the same code.
    ///
    /// # Errors
    /// As [`archive_partition`](Self::archive_partition).
    pub fn archive_partition_blocking<C>(
        &self,
        db: &mut C,
        detached: &Detached<T>,
        archive: &Table,
    ) -> Result<()>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| {
            self.archive_partition(db, detached, archive).await
        })
    }

    /// "Live + archive" as one relation: `SELECT live.* FROM live UNION ALL
    /// SELECT archive.* FROM archive` (the two have the same columns in the
    /// same order). Filter it on the time column and PostgreSQL prunes the
    /// partitions of both.
    ///
    /// ```
    /// # use chrono::{DateTime, Utc};
    /// # use pgpatterns::ops::partition::{Interval, Partitioner};
    /// # use pgpatterns::{column, table, BuiltQuery};
    /// let orders = table!("orders");
    /// let parts = Partitioner::new(
    ///     &column!(orders, "id": i64),
    ///     &column!(orders, "created_at": DateTime<Utc>),
    ///     Interval::MONTH,
    /// );
    /// let all = parts.union_all(&table!("orders_archive"))?;
    /// assert_eq!(
    ///     BuiltQuery::from(&all).sql(),
    ///     r#"SELECT "orders".* FROM "orders" UNION ALL (SELECT "orders_archive".* FROM "orders_archive")"#
    /// );
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn union_all(&self, archive: &Table) -> Result<SelectStatement> {
        self.check()?;
        let part = |t: &Table| {
            Query::select()
                .column(t.all_columns())
                .from(t.table_ref())
                .to_owned()
        };
        Ok(part(&self.table)
            .union(UnionType::All, part(archive))
            .to_owned())
    }
}

/// Whether some partition's range overlaps `[from, to)`.
fn covered<T: PartitionTime>(
    parts: &[Partition<T>],
    from: NaiveDateTime,
    to: NaiveDateTime,
) -> bool {
    parts.iter().filter(|p| !p.is_default).any(|p| {
        let lo_ok = p.from.as_ref().is_none_or(|lo| lo.to_utc_naive() < to);
        let hi_ok = p.to.as_ref().is_none_or(|hi| hi.to_utc_naive() > from);
        lo_ok && hi_ok
    })
}
