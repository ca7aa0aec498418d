//! The router's options, and what it reports: [`RouterOptions`],
//! [`ReplicaStatus`], [`RouterStats`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::WriteToken;
use crate::{Error, Result};

/// How reads are routed ([`ReplicaRouter::with_options`](super::ReplicaRouter::with_options)).
///
/// ```
/// use std::time::Duration;
/// use pgpatterns::replica::RouterOptions;
/// let o = RouterOptions::new().max_lag(Duration::from_millis(500));
/// assert_eq!(o.max_lag, Duration::from_millis(500));
/// assert_eq!(o.check_every, RouterOptions::default().check_every);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RouterOptions {
    /// The oldest a replica's data may be for it to serve a read (default
    /// 1 s). Must be more than zero.
    pub max_lag: Duration,
    /// How often the replicas' positions are checked, at most (default
    /// 100 ms; at least twice per `max_lag` in any case). Must be more than
    /// zero.
    pub check_every: Duration,
    /// How long a session's read waits for a replica to replay the
    /// session's last write before it goes to the primary (default 500 ms;
    /// zero: never wait).
    pub replay_wait: Duration,
    /// How long a replica that failed is left out before it is checked
    /// again (default 2 s).
    pub retry_after: Duration,
}

impl Default for RouterOptions {
    fn default() -> Self {
        RouterOptions {
            max_lag: Duration::from_secs(1),
            check_every: Duration::from_millis(100),
            replay_wait: Duration::from_millis(500),
            retry_after: Duration::from_secs(2),
        }
    }
}

impl RouterOptions {
    /// The defaults.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets [`max_lag`](Self::max_lag).
    #[must_use]
    pub fn max_lag(mut self, max_lag: Duration) -> Self {
        self.max_lag = max_lag;
        self
    }

    /// Sets [`check_every`](Self::check_every).
    #[must_use]
    pub fn check_every(mut self, check_every: Duration) -> Self {
        self.check_every = check_every;
        self
    }

    /// Sets [`replay_wait`](Self::replay_wait).
    #[must_use]
    pub fn replay_wait(mut self, replay_wait: Duration) -> Self {
        self.replay_wait = replay_wait;
        self
    }

    /// Sets [`retry_after`](Self::retry_after).
    #[must_use]
    pub fn retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = retry_after;
        self
    }

    pub(super) fn check(&self) -> Result<()> {
        if self.max_lag.is_zero() {
            return Err(Error::spec("max_lag", "must be more than zero"));
        }
        if self.check_every.is_zero() {
            return Err(Error::spec("check_every", "must be more than zero"));
        }
        Ok(())
    }

    /// The interval between checks: `check_every`, but at least two checks
    /// per `max_lag`, so that a caught-up replica stays usable.
    pub(super) fn check_interval(&self) -> Duration {
        self.check_every.min(self.max_lag / 2)
    }
}

/// One replica as the router last saw it ([`ReplicaRouter::status`](super::ReplicaRouter::status)).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReplicaStatus {
    /// Its position in the list given to the router.
    pub index: usize,
    /// `false` while it is left out after an error.
    pub up: bool,
    /// How old its data may be; `None` when not known (not checked yet, or
    /// down).
    pub lag: Option<Duration>,
    /// The last WAL position it was seen to have replayed.
    pub replayed: Option<WriteToken>,
    /// Its last error, if it ever failed.
    pub last_error: Option<String>,
}

/// What the router did so far ([`ReplicaRouter::stats`](super::ReplicaRouter::stats)); counters since it
/// was made, shared by its clones and sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RouterStats {
    /// Reads served by a replica.
    pub replica_reads: u64,
    /// Statements run for their rows on the primary: writes, and reads no
    /// replica could serve.
    pub primary_rows: u64,
    /// Statements run through `run`, `run_script` and transactions (all on
    /// the primary).
    pub primary_writes: u64,
    /// Errors from replicas: reads they failed (then served by the
    /// primary) and checks they did not answer.
    pub replica_errors: u64,
    /// Session reads that waited for a replica to replay their write and got
    /// it.
    pub replay_waits: u64,
    /// Session reads that waited in vain and went to the primary.
    pub replay_timeouts: u64,
    /// Time spent waiting for replay, in total.
    pub replay_wait_time: Duration,
}

#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) replica_reads: AtomicU64,
    pub(super) primary_rows: AtomicU64,
    pub(super) primary_writes: AtomicU64,
    pub(super) replica_errors: AtomicU64,
    pub(super) replay_waits: AtomicU64,
    pub(super) replay_timeouts: AtomicU64,
    pub(super) replay_wait_nanos: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}
