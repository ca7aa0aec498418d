//! Read replicas: send reads to hot standbys, writes to the primary, and keep
//! read-your-writes where it is asked for.
//!
//! A [`ReplicaRouter`] holds one primary and any number of replicas, each any
//! [`Executor`] (a `tokio_postgres::Client`, a `deadpool_postgres::Pool`, a
//! wrapper of your own), and is an [`Executor`] itself: pass `&router` to any
//! run verb.
//!
//! # Where statements go
//!
//! - **Writes go to the primary, always.** Everything sent through
//!   [`Executor::run`], [`Executor::run_script`],
//!   [`Transactional::run_in_transaction`] and
//!   [`Transactional::rows_rolled_back`] (statements, DDL, maintenance
//!   operations) runs on the primary, whatever its text.
//! - **Reads may go to a replica.** A statement run for its rows
//!   ([`Executor::rows`], and so `fetch_all`, `fetch_one`, counts and pages)
//!   goes to a replica only when [`is_read_only`] says its text only reads;
//!   `INSERT … RETURNING`, data-modifying `WITH`, `SELECT … FOR UPDATE`,
//!   `nextval(…)` and anything the check cannot read go to the primary. A
//!   function of your own that writes cannot be seen in the text: run such a
//!   statement on [`ReplicaRouter::primary`].
//! - **Only fresh replicas serve.** A replica serves a read only while its
//!   data is at most [`RouterOptions::max_lag`] old (see *Lag* below);
//!   otherwise, or when no replica is up, the primary serves. With several
//!   replicas, reads take turns.
//! - **A failing replica is skipped.** When a replica fails a read (down,
//!   connection closed, too many connections, canceled by a recovery
//!   conflict), the read runs on the primary and the replica is left out for
//!   [`RouterOptions::retry_after`], then checked and used again once it
//!   answers. When the error is the statement's own (a syntax error, a
//!   missing table the replica has not replayed yet, a write the replica
//!   refused), the read is retried on the primary and the replica kept.
//! - **Inside a transaction, the primary.** When the primary executor is a
//!   transaction ([`Executor::is_transaction`]), everything runs on it, so a
//!   read sees the transaction's own writes.
//!
//! # Lag
//!
//! Every [`RouterOptions::check_every`] (on the first read after it; nothing
//! runs in the background) the router asks the primary for its WAL position
//! (`pg_current_wal_insert_lsn()`) and each replica for the position it has
//! replayed (`pg_last_wal_replay_lsn()`). A replica that has replayed a
//! position the primary reported at instant *t* has every transaction that
//! committed before *t*; its lag is the time since the newest such *t*, on
//! this process's monotonic clock. So an idle primary does not make its
//! replicas look stale (the position does not move, the replicas stay
//! caught up), and no clocks of two servers are compared. Between checks the
//! lag grows with the time since the last one, so a replica is never thought
//! fresher than it is. (The other common measure, `now() -
//! pg_last_xact_replay_timestamp()` on the replica, is the age of the last
//! replayed commit: it grows without bound while the primary is idle, and
//! mixes two servers' clocks.)
//!
//! # Read-your-writes
//!
//! A [`Session`] (from [`ReplicaRouter::session`]) remembers the primary's
//! WAL position after each write it runs (a [`WriteToken`]; one extra round
//! trip per write). Its reads go to a replica only once the replica has
//! replayed that position: to one known to have replayed it, else to a fresh
//! replica after waiting for it to catch up (at most
//! [`RouterOptions::replay_wait`], polling with short server-side sleeps),
//! else to the primary. So a session always reads its own writes, and
//! mostly from replicas.
//!
//! The token can travel: give [`Session::token`] to the next request (a
//! cookie, a header; it prints as a PostgreSQL LSN such as `0/16B3748` and
//! parses back), and start that request's session with
//! [`ReplicaRouter::session_after`]. For writes made elsewhere (another
//! client, a transaction on [`ReplicaRouter::primary`]), take a token with
//! [`ReplicaRouter::write_token`] after they committed.
//!
//! ```no_run
//! # #[cfg(feature = "tokio-postgres")]
//! # async fn demo(
//! #     primary: tokio_postgres::Client,
//! #     replica: tokio_postgres::Client,
//! #     insert_order: pgpatterns::BuiltQuery,
//! #     order_count: pgpatterns::BuiltQuery,
//! # ) -> pgpatterns::Result<()> {
//! use std::time::Duration;
//! use pgpatterns::replica::{ReplicaRouter, RouterOptions};
//!
//! let router = ReplicaRouter::with_options(
//!     primary,
//!     [replica],
//!     RouterOptions::new()
//!         .max_lag(Duration::from_secs(2))
//!         .replay_wait(Duration::from_millis(200)),
//! )?;
//!
//! // Reads go to the replica when it is at most 2 s behind.
//! let (n,): (i64,) = order_count.fetch_one(&router).await?;
//!
//! // A session reads its own writes.
//! let session = router.session();
//! insert_order.execute(&session).await?;
//! let (m,): (i64,) = order_count.fetch_one(&session).await?; // counts the new order
//! assert!(m >= 1);
//!
//! // The next request continues where this one left off.
//! let token = session.token().map(|t| t.to_string());
//! # let _ = (n, token);
//! # Ok(()) }
//! ```
//!
//! With no replica (an empty list), everything runs on the primary.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sea_query::Value;

use crate::{BuiltQuery, ColumnIndex, Error, Executor, Result, RowRead, Transactional};

mod classify;
mod options;
mod session;
mod state;
#[cfg(test)]
mod tests;

pub use classify::is_read_only;
pub use options::{ReplicaStatus, RouterOptions, RouterStats};
pub use session::{Session, WriteToken};

use options::{bump, Counters};

use state::{has_replayed, pick, Pick, State};

/// State shared by a router's clones and sessions.
#[derive(Debug)]
struct Shared {
    options: RouterOptions,
    state: Mutex<State>,
    /// Set while one read checks the replicas; the others go on with what is
    /// known.
    checking: AtomicBool,
    /// Round-robin position.
    turn: AtomicUsize,
    counters: Counters,
}

/// Clears [`Shared::checking`] when the check ends, also when its future is
/// dropped half-way.
struct CheckGuard<'a>(&'a AtomicBool);

impl Drop for CheckGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Routes reads to replicas and writes to the primary (see the
/// [module docs](self)).
///
/// `P` is the primary's executor, `R` the replicas'; both yield the same row
/// type (a `tokio_postgres::Client` and `deadpool_postgres::Pool`s mix).
/// Cloning (when `P` is `Clone`) shares the replicas, what is known about
/// them and the counters.
pub struct ReplicaRouter<P, R = P> {
    primary: P,
    replicas: Arc<[R]>,
    shared: Arc<Shared>,
}

impl<P: Clone, R> Clone for ReplicaRouter<P, R> {
    fn clone(&self) -> Self {
        ReplicaRouter {
            primary: self.primary.clone(),
            replicas: Arc::clone(&self.replicas),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<P, R> std::fmt::Debug for ReplicaRouter<P, R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaRouter")
            .field("replicas", &self.replicas.len())
            .field("options", &self.shared.options)
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while it was held cannot leave the state inconsistent in a
    // harmful way: at worst a replica is checked again.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The primary's WAL insert position, as a number.
const PRIMARY_POSITION: &str = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::int8";
/// A replica's recovery state and replay position.
const REPLICA_POSITION: &str =
    "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8";
/// The same, after sleeping `$1` seconds on the server (waiting for replay
/// without a timer on the client, whatever its async runtime).
const REPLICA_POSITION_AFTER_SLEEP: &str = "SELECT pg_is_in_recovery(), \
     (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::int8 FROM pg_sleep($1::float8)";

/// Longest single server-side sleep while waiting for replay.
const MAX_POLL_SLEEP: Duration = Duration::from_millis(16);

/// `true` for errors of the statement itself, which the primary would raise
/// too (or, for a replica lagging behind DDL, would not): the replica is not
/// at fault and stays in use.
fn is_statement_error(e: &Error) -> bool {
    let Some(code) = e.code() else {
        return false;
    };
    // 25006: a write the replica refused (read-only transaction).
    code == "25006"
        || [
            "21", "22", "23", "27", "2B", "2F", "38", "39", "3F", "42", "44", "0A", "P0",
        ]
        .iter()
        .any(|class| code.starts_with(class))
}

fn as_lsn(value: i64) -> Result<u64> {
    u64::try_from(value).map_err(|_| Error::spec("WAL position", format!("negative: {value}")))
}

impl<P, R> ReplicaRouter<P, R>
where
    P: Executor,
    R: Executor<Row = P::Row>,
{
    /// A router with the default [`RouterOptions`].
    #[must_use]
    pub fn new(primary: P, replicas: impl IntoIterator<Item = R>) -> Self {
        Self::build(primary, replicas, RouterOptions::default())
    }

    /// A router with these options.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] when `max_lag` or `check_every` is zero.
    pub fn with_options(
        primary: P,
        replicas: impl IntoIterator<Item = R>,
        options: RouterOptions,
    ) -> Result<Self> {
        options.check()?;
        Ok(Self::build(primary, replicas, options))
    }

    fn build(primary: P, replicas: impl IntoIterator<Item = R>, options: RouterOptions) -> Self {
        let replicas: Arc<[R]> = replicas.into_iter().collect();
        ReplicaRouter {
            primary,
            shared: Arc::new(Shared {
                options,
                state: Mutex::new(State::new(replicas.len())),
                checking: AtomicBool::new(false),
                turn: AtomicUsize::new(0),
                counters: Counters::default(),
            }),
            replicas,
        }
    }

    /// The primary's WAL position now: a session started with it
    /// ([`session_after`](Self::session_after)) or told of it
    /// ([`Session::observe`]) reads everything committed before this call.
    ///
    /// # Errors
    /// [`Error::Database`] when the primary fails (or is itself a standby,
    /// which has no WAL position of its own).
    pub async fn write_token(&self) -> Result<WriteToken> {
        let rows = self
            .primary
            .rows(&BuiltQuery::fixed(PRIMARY_POSITION))
            .await?;
        let row = rows.first().ok_or(Error::RowCount {
            expected: "exactly one",
            got: 0,
        })?;
        Ok(WriteToken::from_lsn(as_lsn(
            row.try_get::<i64>(ColumnIndex::Position(0))?,
        )?))
    }

    /// Checks the replicas now (as reads do every
    /// [`check_every`](RouterOptions::check_every)), including those left out
    /// after an error, and returns what it found. Use it to warm a new
    /// router up, or to see a replica's state at once.
    pub async fn check_now(&self) -> Vec<ReplicaStatus> {
        if self
            .shared
            .checking
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let _guard = CheckGuard(&self.shared.checking);
            self.check(true).await;
        }
        self.status()
    }

    /// Checks the replicas when the last check is older than the interval;
    /// one read at a time does it, the others go on with what is known.
    async fn check_if_due(&self) {
        let now = Instant::now();
        let due = lock(&self.shared.state)
            .last_check
            .is_none_or(|t| now.saturating_duration_since(t) >= self.options().check_interval());
        if !due
            || self
                .shared
                .checking
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return;
        }
        let _guard = CheckGuard(&self.shared.checking);
        self.check(false).await;
    }

    /// Reads the primary's position, then each replica's (the replicas left
    /// out after an error only once their time is up, or when `all`).
    async fn check(&self, all: bool) {
        let asked = Instant::now();
        let primary = self.write_token().await.ok();
        let retry_due: Vec<bool> = {
            let state = lock(&self.shared.state);
            state
                .replicas
                .iter()
                .map(|r| all || r.down_until.is_none_or(|until| asked >= until))
                .collect()
        };
        let mut seen = Vec::with_capacity(self.replicas.len());
        for (replica, due) in self.replicas.iter().zip(retry_due) {
            seen.push(if due {
                Some(replica_position(replica, None).await)
            } else {
                None
            });
        }
        let options = self.options();
        let mut state = lock(&self.shared.state);
        state.last_check = Some(asked);
        if let Some(token) = primary {
            state.add_sample(asked, token.lsn(), options.max_lag);
        }
        let State {
            samples, replicas, ..
        } = &mut *state;
        let now = Instant::now();
        for (r, seen) in replicas.iter_mut().zip(seen) {
            match seen {
                None => {}
                Some(Ok(replayed)) => {
                    r.down_until = None;
                    r.saw_replayed(replayed, samples);
                }
                Some(Err(e)) => {
                    bump(&self.shared.counters.replica_errors);
                    r.mark_down(now + options.retry_after, e.to_string());
                }
            }
        }
    }

    /// Leaves replica `i` out for a while after `e`.
    fn replica_failed(&self, i: usize, e: &Error) {
        bump(&self.shared.counters.replica_errors);
        if is_statement_error(e) {
            return;
        }
        let until = Instant::now() + self.options().retry_after;
        if let Some(r) = lock(&self.shared.state).replicas.get_mut(i) {
            r.mark_down(until, e.to_string());
        }
    }

    /// Waits until replica `i` has replayed `token` (polling with
    /// server-side sleeps); `false` when it has not within `replay_wait`.
    async fn wait_for_replay(&self, i: usize, token: u64) -> bool {
        let started = Instant::now();
        let deadline = started + self.options().replay_wait;
        let replica = &self.replicas[i];
        let mut sleep = None;
        loop {
            match replica_position(replica, sleep).await {
                Ok(replayed) => {
                    let mut state = lock(&self.shared.state);
                    let State {
                        samples, replicas, ..
                    } = &mut *state;
                    if let Some(r) = replicas.get_mut(i) {
                        r.saw_replayed(replayed, samples);
                    }
                    if has_replayed(replayed, token) {
                        let c = &self.shared.counters;
                        bump(&c.replay_waits);
                        let waited =
                            u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                        c.replay_wait_nanos.fetch_add(waited, Ordering::Relaxed);
                        return true;
                    }
                }
                Err(e) => {
                    self.replica_failed(i, &e);
                    return false;
                }
            }
            let now = Instant::now();
            if now >= deadline {
                bump(&self.shared.counters.replay_timeouts);
                return false;
            }
            let next = sleep.map_or(Duration::from_millis(1), |s: Duration| {
                (s * 2).min(MAX_POLL_SLEEP)
            });
            sleep = Some(next.min(deadline - now));
        }
    }

    /// Runs a statement for its rows: on a replica when it only reads
    /// (`read_only`, from [`is_read_only`]) and one may serve (having
    /// replayed `token`, if given), else on the primary.
    async fn route_rows(
        &self,
        q: &BuiltQuery,
        read_only: bool,
        token: Option<u64>,
    ) -> Result<Vec<P::Row>> {
        q.check()?;
        if read_only && !self.replicas.is_empty() && !self.primary.is_transaction() {
            self.check_if_due().await;
            let start = self.shared.turn.fetch_add(1, Ordering::Relaxed);
            // Each pass either returns, leaves a replica out, or learns that
            // one replayed the token: a bounded number of passes.
            for _ in 0..=2 * self.replicas.len() {
                let choice = {
                    let state = lock(&self.shared.state);
                    pick(
                        &state.replicas,
                        Instant::now(),
                        self.options(),
                        token,
                        start,
                    )
                };
                match (choice, token) {
                    (Pick::Replica(i), _) => match self.replicas[i].rows(q).await {
                        Ok(rows) => {
                            bump(&self.shared.counters.replica_reads);
                            return Ok(rows);
                        }
                        Err(e) => {
                            self.replica_failed(i, &e);
                            if is_statement_error(&e) {
                                break;
                            }
                        }
                    },
                    (Pick::WaitFor(i), Some(token)) => {
                        if !self.wait_for_replay(i, token).await {
                            break;
                        }
                    }
                    _ => break,
                }
            }
        }
        bump(&self.shared.counters.primary_rows);
        self.primary.rows(q).await
    }

    fn count_write(&self) {
        bump(&self.shared.counters.primary_writes);
    }
}

impl<P, R> ReplicaRouter<P, R> {
    /// The primary: for statements that must run there whatever their text
    /// (a function that writes), and for transactions of your own.
    #[must_use]
    pub fn primary(&self) -> &P {
        &self.primary
    }

    /// The primary, mutably (e.g. to open a transaction on a client).
    #[must_use]
    pub fn primary_mut(&mut self) -> &mut P {
        &mut self.primary
    }

    /// The replicas, in the order given.
    #[must_use]
    pub fn replicas(&self) -> &[R] {
        &self.replicas
    }

    /// The options.
    #[must_use]
    pub fn options(&self) -> &RouterOptions {
        &self.shared.options
    }

    /// A read-your-writes session with no write yet.
    #[must_use]
    pub fn session(&self) -> Session<'_, P, R> {
        Session::new(self, None)
    }

    /// A read-your-writes session whose reads see everything committed
    /// before `token` was taken (in this process or another).
    #[must_use]
    pub fn session_after(&self, token: WriteToken) -> Session<'_, P, R> {
        Session::new(self, Some(token))
    }

    /// What the router did so far.
    #[must_use]
    pub fn stats(&self) -> RouterStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RouterStats {
            replica_reads: get(&c.replica_reads),
            primary_rows: get(&c.primary_rows),
            primary_writes: get(&c.primary_writes),
            replica_errors: get(&c.replica_errors),
            replay_waits: get(&c.replay_waits),
            replay_timeouts: get(&c.replay_timeouts),
            replay_wait_time: Duration::from_nanos(get(&c.replay_wait_nanos)),
        }
    }

    /// Each replica as last seen.
    #[must_use]
    pub fn status(&self) -> Vec<ReplicaStatus> {
        let now = Instant::now();
        let state = lock(&self.shared.state);
        state
            .replicas
            .iter()
            .enumerate()
            .map(|(index, r)| ReplicaStatus {
                index,
                up: r.is_up(),
                lag: r.lag(now),
                replayed: r.replayed.map(WriteToken::from_lsn),
                last_error: r.last_error.clone(),
            })
            .collect()
    }
}

/// A replica's replay position (after a server-side sleep, if given).
///
/// # Errors
/// The replica's error; [`Error::InvalidSpec`] when it is not in recovery
/// (a primary, or a standby that was promoted): its data is not the
/// primary's.
async fn replica_position<R: Executor>(replica: &R, sleep: Option<Duration>) -> Result<u64> {
    let q = match sleep {
        None => BuiltQuery::fixed(REPLICA_POSITION),
        Some(s) => BuiltQuery::fixed_with(
            REPLICA_POSITION_AFTER_SLEEP,
            [Value::Double(Some(s.as_secs_f64()))],
        ),
    };
    let rows = replica.rows(&q).await?;
    let row = rows.first().ok_or(Error::RowCount {
        expected: "exactly one",
        got: 0,
    })?;
    let in_recovery = row.try_get::<bool>(ColumnIndex::Position(0))?;
    let replayed = row.try_get::<Option<i64>>(ColumnIndex::Position(1))?;
    match (in_recovery, replayed) {
        (true, Some(lsn)) => as_lsn(lsn),
        (true, None) => Err(Error::spec(
            "replica",
            "the standby has not replayed any WAL yet",
        )),
        (false, _) => Err(Error::spec(
            "replica",
            "the server is not in recovery: it is not a standby (was it promoted?)",
        )),
    }
}

impl<P, R> Executor for ReplicaRouter<P, R>
where
    P: Executor,
    R: Executor<Row = P::Row>,
{
    type Row = P::Row;

    /// On a replica when the statement only reads ([`is_read_only`]) and a
    /// fresh replica is up; else on the primary.
    fn rows(&self, q: &BuiltQuery) -> impl Future<Output = Result<Vec<Self::Row>>> + Send {
        self.route_rows(q, is_read_only(q), None)
    }

    /// On the primary.
    fn run(&self, q: &BuiltQuery) -> impl Future<Output = Result<u64>> + Send {
        self.count_write();
        self.primary.run(q)
    }

    /// On the primary.
    fn run_script(&self, sql: &str) -> impl Future<Output = Result<()>> + Send {
        self.count_write();
        self.primary.run_script(sql)
    }

    fn is_transaction(&self) -> bool {
        self.primary.is_transaction()
    }
}

impl<P, R> Transactional for ReplicaRouter<P, R>
where
    P: Transactional,
    R: Executor<Row = P::Row>,
{
    /// On the primary.
    fn run_in_transaction(
        &mut self,
        queries: &[BuiltQuery],
    ) -> impl Future<Output = Result<Vec<u64>>> + Send {
        self.count_write();
        self.primary.run_in_transaction(queries)
    }

    /// On the primary (the statement may write before it is rolled back).
    fn rows_rolled_back(
        &mut self,
        q: &BuiltQuery,
    ) -> impl Future<Output = Result<Vec<Self::Row>>> + Send {
        self.count_write();
        self.primary.rows_rolled_back(q)
    }
}
