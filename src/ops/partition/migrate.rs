//! The online migration: prepare (twin + mirror), copy, cutover, rollback,
//! finish — each resumable from the state table.

use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use postgres_types::FromSqlOwned;

use super::catalog::{self, Source};
use super::plan::{self, Names, PartitionPlan, STATE_MARKER};
use super::{backoff, is_lock_error, sleep, PartitionTime, Partitioner};
use crate::ddl::quote_table;
use crate::exec::{run_blocking, run_blocking_mut, BlockingExecutor};
use crate::ops::BatchReport;
use crate::schema::{Ident, Table};
use crate::types::SqlType;
use crate::{BuiltQuery, ColumnIndex, Error, Executor, Progress, Result, RowRead, Transactional};

/// Where a migration is, as recorded in the state table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// The partitioned twin exists; the mirror trigger does not yet.
    Created,
    /// The mirror runs; rows are being copied.
    Copying,
    /// Every row is copied and the mirror keeps the twin current: ready
    /// for the cutover (also the phase after a rollback).
    Copied,
    /// The partitioned table carries the table's name; the old table is
    /// kept current by the reverse mirror until [`Partitioner::finish`].
    CutOver,
}

impl Phase {
    fn parse(text: &str) -> Result<Phase> {
        Ok(match text {
            "created" => Phase::Created,
            "copying" => Phase::Copying,
            "copied" => Phase::Copied,
            "cut_over" => Phase::CutOver,
            other => {
                return Err(Error::spec(
                    "state",
                    format!("unknown migration phase {other:?} in the state table"),
                ))
            }
        })
    }
}

/// A migration's recorded state ([`Partitioner::status`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationStatus {
    /// The phase.
    pub phase: Phase,
    /// Rows copied by the batches so far (the mirror's rows not included).
    pub copied: u64,
    /// The partitioned twin (its name before the cutover).
    pub twin: Table,
    /// The name the old table has after the cutover.
    pub retired: Table,
}

/// What a cutover (or a swap back) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct CutoverReport {
    /// Transactions tried (1 when the locks were had at once).
    pub attempts: u32,
    /// Wall time of the transaction that succeeded, from `BEGIN` to
    /// `COMMIT`: an upper bound of how long its exclusive locks were held
    /// (it includes the wait for them, at most the `lock_timeout`).
    pub transaction: Duration,
    /// Wall time of the whole step, retries and backoff included.
    pub elapsed: Duration,
}

/// What [`Partitioner::migrate`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MigrationReport {
    /// The copy batches (this run's; an interrupted run's are not counted).
    pub copy: BatchReport,
    /// The cutover.
    pub cutover: CutoverReport,
}

const SCHEMA_SQL: &str = "SELECT n.nspname::text FROM pg_catalog.pg_class c \
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass($1::text)";
const DESCRIPTION_SQL: &str = "SELECT to_regclass($1::text) IS NOT NULL, \
    coalesce(obj_description(to_regclass($1::text), 'pg_class'), '')";
const ESTIMATE_SQL: &str = "SELECT greatest(c.reltuples, 0)::int8 FROM pg_catalog.pg_class c \
    WHERE c.oid = to_regclass($1::text)";
const NOW_SQL: &str = "SELECT CAST(now() AT TIME ZONE 'UTC' AS timestamp)";

impl<K: SqlType + FromSqlOwned, T: PartitionTime> Partitioner<K, T> {
    /// The names of every object, with the schema read from the catalog
    /// when the table is not qualified.
    pub(crate) async fn names<E: Executor>(&self, db: &E) -> Result<Names> {
        let schema = match self.table.schema() {
            Some(s) => s.clone(),
            None => {
                let q = BuiltQuery::fixed_with(SCHEMA_SQL, [quote_table(&self.table).into_value()]);
                let row = db.optional_row(&q).await?.ok_or_else(|| {
                    Error::spec(
                        "table",
                        format!("table {} does not exist", self.table.display_name()),
                    )
                })?;
                Ident::new(row.try_get::<String>(0usize.into())?)?
            }
        };
        Ok(Names::new(&schema, self.table.name()))
    }

    /// Whether `table` exists, and its comment.
    async fn described<E: Executor>(db: &E, table: &Table) -> Result<(bool, String)> {
        let row = db
            .one_row(&BuiltQuery::fixed_with(
                DESCRIPTION_SQL,
                [quote_table(table).into_value()],
            ))
            .await?;
        Ok((row.try_get(0usize.into())?, row.try_get(1usize.into())?))
    }

    pub(crate) async fn server_now<E: Executor>(db: &E) -> Result<NaiveDateTime> {
        db.one_row(&BuiltQuery::fixed(NOW_SQL))
            .await?
            .try_get(0usize.into())
    }

    async fn source<E: Executor>(&self, db: &E, table: &Table) -> Result<Source> {
        catalog::read_existing(db, table, K::SQL_TYPE, T::SQL_TYPE).await
    }

    /// Reads the catalog and the data's time range, and returns the plan:
    /// every statement of the migration, nothing run. See the [module
    /// docs](super) for what is carried over and what is refused.
    ///
    /// # Errors
    /// As [`check`](Self::check); [`Error::InvalidSpec`] naming what stands
    /// in the way (no primary key, a nullable or non-time column, incoming
    /// foreign keys, dependent views, triggers, an INVALID index, an
    /// already partitioned table); the database's error.
    pub async fn plan<E: Executor>(&self, db: &E) -> Result<PartitionPlan> {
        self.check()?;
        let names = self.names(db).await?;
        let source = self.source(db, &names.original).await?;
        let t = crate::ddl::quote(self.time.name());
        let range_q = BuiltQuery::generated(format!(
            "SELECT min({t}), max({t}) FROM {}",
            quote_table(&names.original)
        ));
        let plan_check = self.build_plan(&source, None, NaiveDateTime::default());
        // Refuse before scanning the table for its range.
        plan_check?;
        let row = db.one_row(&range_q).await?;
        let lo: Option<T> = row.try_get(0usize.into())?;
        let hi: Option<T> = row.try_get(1usize.into())?;
        let range = lo
            .zip(hi)
            .map(|(a, b)| (a.to_utc_naive(), b.to_utc_naive()));
        let now = Self::server_now(db).await?;
        self.build_plan(&source, range, now)
    }

    /// [`plan`](Self::plan) on a blocking client, from the same code.
    ///
    /// # Errors
    /// As [`plan`](Self::plan).
    pub fn plan_blocking<C>(&self, db: &mut C) -> Result<PartitionPlan>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.plan(db).await)
    }

    /// The migration's state, or `None` when none is under way.
    ///
    /// # Errors
    /// As [`check`](Self::check); [`Error::ObjectConflict`] when a table
    /// named like the state table exists but is not this crate's; the
    /// database's error.
    pub async fn status<E: Executor>(&self, db: &E) -> Result<Option<MigrationStatus>> {
        self.check()?;
        let names = self.names(db).await?;
        Ok(self.read_state(db, &names).await?.map(|(s, _)| s))
    }

    /// [`status`](Self::status) on a blocking client, from the same code.
    ///
    /// # Errors
    /// As [`status`](Self::status).
    pub fn status_blocking<C>(&self, db: &mut C) -> Result<Option<MigrationStatus>>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.status(db).await)
    }

    /// The state row and the copy cursor.
    async fn read_state<E: Executor>(
        &self,
        db: &E,
        names: &Names,
    ) -> Result<Option<(MigrationStatus, Option<K>)>> {
        let (exists, comment) = Self::described(db, &names.state).await?;
        if !exists {
            return Ok(None);
        }
        if comment != STATE_MARKER {
            return Err(Error::ObjectConflict {
                kind: "table",
                name: names.state.display_name(),
                reason: "it exists but was not created by pgpatterns".to_owned(),
            });
        }
        let q = BuiltQuery::generated_with(
            format!(
                "SELECT phase, copied, twin, retired, CAST(cursor AS {}) FROM {} WHERE relation = $1::text",
                K::SQL_TYPE,
                quote_table(&names.state)
            ),
            [names.original.name().as_str().to_owned().into_value()],
        );
        let Some(row) = db.optional_row(&q).await? else {
            return Ok(None);
        };
        let at = |i: usize| -> ColumnIndex<'static> { i.into() };
        let phase = Phase::parse(&row.try_get::<String>(at(0))?)?;
        let copied: i64 = row.try_get(at(1))?;
        let twin = names.beside(&Ident::new(row.try_get::<String>(at(2))?)?);
        let retired = names.beside(&Ident::new(row.try_get::<String>(at(3))?)?);
        let cursor: Option<K> = row.try_get(at(4))?;
        Ok(Some((
            MigrationStatus {
                phase,
                copied: u64::try_from(copied).unwrap_or(0),
                twin,
                retired,
            },
            cursor,
        )))
    }

    /// Runs `queries` in one transaction, retrying with backoff when a lock
    /// is not had within the `lock_timeout` or a deadlock is detected.
    pub(crate) async fn retrying<E: Transactional>(
        &self,
        db: &mut E,
        queries: &[BuiltQuery],
    ) -> Result<CutoverReport> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let t = Instant::now();
            match db.run_in_transaction(queries).await {
                Ok(_) => {
                    return Ok(CutoverReport {
                        attempts: attempt + 1,
                        transaction: t.elapsed(),
                        elapsed: started.elapsed(),
                    })
                }
                Err(e) if is_lock_error(&e) && attempt < self.retries => {
                    sleep(backoff(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Creates the partitioned twin and its partitions (one transaction,
    /// with the state row), then the mirror trigger (a second, short
    /// transaction under `lock_timeout`, retried). Carries on where a
    /// previous run stopped; does nothing once the mirror runs. Returns the
    /// plan that was (or would have been) run.
    ///
    /// # Errors
    /// As [`plan`](Self::plan); [`Error::ObjectConflict`] for a foreign
    /// state table; the database's error (a name already taken by another
    /// object fails the transaction: nothing is replaced).
    pub async fn prepare<E: Transactional>(&self, db: &mut E) -> Result<PartitionPlan> {
        self.check()?;
        let names = self.names(&*db).await?;
        let state = self.read_state(&*db, &names).await?;
        if let Some((s, _)) = &state {
            if s.phase == Phase::CutOver {
                return Err(Error::spec(
                    "phase",
                    "the table is already cut over; finish or roll back the migration",
                ));
            }
        }
        let plan = self.plan(&*db).await?;
        if state.is_none() {
            db.run_in_transaction(&plan.setup).await?;
        }
        if matches!(state.map(|(s, _)| s.phase), None | Some(Phase::Created)) {
            self.retrying(db, &plan.mirror).await?;
        }
        Ok(plan)
    }

    /// [`prepare`](Self::prepare) on a blocking client, from the same code.
    ///
    /// # Errors
    /// As [`prepare`](Self::prepare).
    pub fn prepare_blocking<C>(&self, db: &mut C) -> Result<PartitionPlan>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.prepare(db).await)
    }

    /// Copies the rows in keyset batches from the saved cursor (see the
    /// [module docs](super)), reporting after each batch (the total is the
    /// planner's row estimate), then `ANALYZE`s the twin and records the
    /// phase `Copied`. Nothing to do once copied.
    ///
    /// # Errors
    /// As [`check`](Self::check); [`Error::InvalidSpec`] when no migration
    /// is prepared; the database's error (finished batches stay committed,
    /// and the next call carries on).
    pub async fn copy<E: Executor>(
        &self,
        db: &E,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<BatchReport> {
        self.check()?;
        let started = Instant::now();
        let names = self.names(db).await?;
        let Some((status, mut cursor)) = self.read_state(db, &names).await? else {
            return Err(Error::spec(
                "phase",
                "no migration is prepared: run prepare first",
            ));
        };
        let mut report = BatchReport::default();
        match status.phase {
            Phase::Copying => {}
            Phase::Created => {
                return Err(Error::spec(
                    "phase",
                    "the mirror is not installed: run prepare again",
                ))
            }
            Phase::Copied | Phase::CutOver => return Ok(report),
        }
        let source = self.source(db, &names.original).await?;
        let columns = source.insertable();
        let estimate: i64 = db
            .one_row(&BuiltQuery::fixed_with(
                ESTIMATE_SQL,
                [quote_table(&names.original).into_value()],
            ))
            .await?
            .try_get(0usize.into())?;
        let total = Some(u64::try_from(estimate).unwrap_or(0));
        let mut done = status.copied;
        progress(Progress::new("copy", done, total));
        loop {
            let q = plan::copy_batch::<K>(
                &names,
                &columns,
                self.key.name(),
                cursor.clone(),
                self.batch_size,
            );
            let row = db.one_row(&q).await?;
            report.batches += 1;
            let n: i64 = row.try_get(0usize.into())?;
            let last: Option<K> = row.try_get(1usize.into())?;
            let n = u64::try_from(n).unwrap_or(0);
            if n == 0 {
                break;
            }
            report.rows += n;
            done += n;
            progress(Progress::new("copy", done, total.map(|t| t.max(done))));
            cursor = last;
        }
        db.run(&BuiltQuery::generated(format!(
            "ANALYZE {}",
            quote_table(&names.twin)
        )))
        .await?;
        db.run(&plan::set_phase(&names, "copied")).await?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// [`copy`](Self::copy) on a blocking client, from the same code.
    ///
    /// # Errors
    /// As [`copy`](Self::copy).
    pub fn copy_blocking<C>(
        &self,
        db: &mut C,
        progress: impl FnMut(Progress) + Send,
    ) -> Result<BatchReport>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.copy(db, progress).await)
    }

    /// Swaps the tables in one short transaction (see the [module
    /// docs](super)): `lock_timeout`, both tables locked, mirror dropped,
    /// renames both ways, sequences handed over, reverse mirror installed.
    /// Retried with backoff on a lock timeout or deadlock.
    ///
    /// # Errors
    /// As [`check`](Self::check); [`Error::InvalidSpec`] unless the phase is
    /// `Copied`; the database's error (a lock timeout after the last retry
    /// leaves everything as it was).
    pub async fn cutover<E: Transactional>(&self, db: &mut E) -> Result<CutoverReport> {
        self.check()?;
        let names = self.names(&*db).await?;
        match self.read_state(&*db, &names).await? {
            Some((s, _)) if s.phase == Phase::Copied => {}
            Some((s, _)) => {
                return Err(Error::spec(
                    "phase",
                    format!(
                        "the cutover needs every row copied; the migration is {:?}",
                        s.phase
                    ),
                ))
            }
            None => return Err(Error::spec("phase", "no migration is prepared")),
        }
        let source = self.source(&*db, &names.original).await?;
        let statements = plan::cutover_statements(
            &names,
            &source,
            &source.insertable(),
            self.key.name(),
            self.time.name(),
            self.lock_timeout_text(),
        );
        self.retrying(db, &statements).await
    }

    /// [`cutover`](Self::cutover) on a blocking client, from the same code.
    ///
    /// # Errors
    /// As [`cutover`](Self::cutover).
    pub fn cutover_blocking<C>(&self, db: &mut C) -> Result<CutoverReport>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.cutover(db).await)
    }

    /// The whole migration, from wherever it stands: [`prepare`](Self::prepare),
    /// [`copy`](Self::copy), [`cutover`](Self::cutover). Run it again after
    /// any interruption (a killed backend, a crash, a lock timeout): it
    /// resumes from the state table.
    ///
    /// # Errors
    /// As the three steps.
    pub async fn migrate<E: Transactional>(
        &self,
        db: &mut E,
        progress: impl FnMut(Progress) + Send,
    ) -> Result<MigrationReport> {
        self.check()?;
        let names = self.names(&*db).await?;
        if let Some((s, _)) = self.read_state(&*db, &names).await? {
            if s.phase == Phase::CutOver {
                return Err(Error::spec(
                    "phase",
                    "the table is already cut over; finish or roll back the migration",
                ));
            }
        }
        self.prepare(db).await?;
        let copy = self.copy(&*db, progress).await?;
        let cutover = self.cutover(db).await?;
        Ok(MigrationReport { copy, cutover })
    }

    /// [`migrate`](Self::migrate) on a blocking client, from the same code.
    ///
    /// # Errors
    /// As [`migrate`](Self::migrate).
    pub fn migrate_blocking<C>(
        &self,
        db: &mut C,
        progress: impl FnMut(Progress) + Send,
    ) -> Result<MigrationReport>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.migrate(db, progress).await)
    }

    /// Undoes the migration. After the cutover: swaps the tables back in
    /// one transaction (the old table already holds every write made since
    /// the cutover, through the reverse mirror) and re-installs the forward
    /// mirror, leaving the phase `Copied` — call again to drop the twin, or
    /// [`cutover`](Self::cutover) to try again. Before the cutover: drops
    /// the mirror and the twin (only if it carries this crate's marker) and
    /// forgets the migration. Returns the phase left, `None` when nothing
    /// is left.
    ///
    /// # Errors
    /// As [`check`](Self::check); [`Error::InvalidSpec`] when no migration
    /// is under way; [`Error::ObjectConflict`] when the twin is not this
    /// crate's; the database's error (nothing is changed then).
    pub async fn rollback<E: Transactional>(&self, db: &mut E) -> Result<Option<Phase>> {
        self.check()?;
        let names = self.names(&*db).await?;
        let Some((status, _)) = self.read_state(&*db, &names).await? else {
            return Err(Error::spec("phase", "no migration to roll back"));
        };
        if status.phase == Phase::CutOver {
            let source = self.source(&*db, &names.original).await?;
            let statements = plan::swap_back_statements(
                &names,
                &source,
                &source.insertable(),
                self.key.name(),
                self.time.name(),
                self.lock_timeout_text(),
            );
            self.retrying(db, &statements).await?;
            return Ok(Some(Phase::Copied));
        }
        let (exists, comment) = Self::described(&*db, &names.twin).await?;
        let mut statements = vec![plan::set_lock_timeout(self.lock_timeout_text())];
        statements.extend(plan::drop_trigger(
            &names.forward_trigger,
            &names.original,
            true,
        ));
        statements.push(plan::drop_function(&names.forward_fn, true));
        if exists {
            if comment != names.twin_marker() {
                return Err(Error::ObjectConflict {
                    kind: "table",
                    name: names.twin.display_name(),
                    reason: "it does not carry the marker of a twin made by pgpatterns".to_owned(),
                });
            }
            statements.push(BuiltQuery::generated(format!(
                "DROP TABLE {}",
                quote_table(&names.twin)
            )));
        }
        statements.push(forget(&names));
        self.retrying(db, &statements).await?;
        Ok(None)
    }

    /// [`rollback`](Self::rollback) on a blocking client, from the same code.
    ///
    /// # Errors
    /// As [`rollback`](Self::rollback).
    pub fn rollback_blocking<C>(&self, db: &mut C) -> Result<Option<Phase>>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.rollback(db).await)
    }

    /// Ends a cut-over migration: drops the reverse mirror, and the old
    /// table too when `drop_old` (otherwise it stays, no longer kept
    /// current, under [`MigrationStatus::retired`]'s name); forgets the
    /// migration.
    ///
    /// # Errors
    /// As [`check`](Self::check); [`Error::InvalidSpec`] unless the phase is
    /// `CutOver`; the database's error (e.g. when something now depends on
    /// the old table; nothing is changed then).
    pub async fn finish<E: Transactional>(&self, db: &mut E, drop_old: bool) -> Result<()> {
        self.check()?;
        let names = self.names(&*db).await?;
        match self.read_state(&*db, &names).await? {
            Some((s, _)) if s.phase == Phase::CutOver => {}
            Some((s, _)) => {
                return Err(Error::spec(
                    "phase",
                    format!(
                        "only a cut-over migration can be finished; this one is {:?}",
                        s.phase
                    ),
                ))
            }
            None => return Err(Error::spec("phase", "no migration to finish")),
        }
        let mut statements = vec![plan::set_lock_timeout(self.lock_timeout_text())];
        statements.extend(plan::drop_trigger(
            &names.reverse_trigger,
            &names.original,
            false,
        ));
        statements.push(plan::drop_function(&names.reverse_fn, false));
        if drop_old {
            statements.push(BuiltQuery::generated(format!(
                "DROP TABLE {}",
                quote_table(&names.retired)
            )));
        }
        statements.push(forget(&names));
        self.retrying(db, &statements).await?;
        Ok(())
    }

    /// [`finish`](Self::finish) on a blocking client, from the same code.
    ///
    /// # Errors
    /// As [`finish`](Self::finish).
    pub fn finish_blocking<C>(&self, db: &mut C, drop_old: bool) -> Result<()>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.finish(db, drop_old).await)
    }
}

fn forget(names: &Names) -> BuiltQuery {
    BuiltQuery::generated_with(
        format!(
            "DELETE FROM {} WHERE relation = $1::text",
            quote_table(&names.state)
        ),
        [names.original.name().as_str().to_owned().into_value()],
    )
}
