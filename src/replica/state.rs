//! What the router knows about its replicas, and the routing decision made
//! from it (a pure function, tested without servers).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::RouterOptions;

/// How far `pg_current_wal_insert_lsn()` may be ahead of a standby's
/// `pg_last_wal_replay_lsn()` when the standby has replayed every record
/// before it.
///
/// The insert position is given *after* a page header when it stands at the
/// start of a WAL page (24 bytes), while replay positions are record ends
/// (the page boundary itself). Every WAL record that carries a commit is
/// longer than 24 bytes, so a standby within 24 bytes of a position has
/// replayed every commit that ended at or before it. (At the start of a WAL
/// segment the header is 40 bytes: that rare case waits for the next
/// record, or falls back to the primary.)
pub(crate) const REPLAY_SLACK: u64 = 24;

/// `true` when a standby that replayed up to `replayed` has every commit
/// that ended at or before `target` (a primary's insert position).
pub(crate) fn has_replayed(replayed: u64, target: u64) -> bool {
    replayed >= target.saturating_sub(REPLAY_SLACK)
}

/// Most primary positions kept to date replicas ([`State::samples`]).
const MAX_SAMPLES: usize = 256;

/// One replica as last seen.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReplicaState {
    /// Skipped until then after an error; probed again by the first check
    /// after it.
    pub(crate) down_until: Option<Instant>,
    /// The last error (kept after it came back, for [`super::ReplicaStatus`]).
    pub(crate) last_error: Option<String>,
    /// Its last known replay position.
    pub(crate) replayed: Option<u64>,
    /// It has replayed every transaction that committed on the primary
    /// before this instant: its data is at most `now - fresh_as_of` old.
    pub(crate) fresh_as_of: Option<Instant>,
}

impl ReplicaState {
    pub(crate) fn is_up(&self) -> bool {
        self.down_until.is_none()
    }

    /// How old its data may be at `now`: `None` when unknown.
    pub(crate) fn lag(&self, now: Instant) -> Option<Duration> {
        self.fresh_as_of
            .map(|fresh| now.saturating_duration_since(fresh))
    }

    pub(crate) fn is_fresh(&self, now: Instant, max_lag: Duration) -> bool {
        self.lag(now).is_some_and(|lag| lag <= max_lag)
    }

    /// Records a replay position read from the replica at `now` (`samples`:
    /// the primary's positions with the instants they were read).
    pub(crate) fn saw_replayed(&mut self, replayed: u64, samples: &VecDeque<(Instant, u64)>) {
        self.replayed = Some(self.replayed.map_or(replayed, |r| r.max(replayed)));
        let replayed = self.replayed.unwrap_or(replayed);
        // The newest primary position it has reached: everything that
        // committed before that position was read is on the replica.
        if let Some(&(at, _)) = samples
            .iter()
            .rev()
            .find(|&&(_, lsn)| has_replayed(replayed, lsn))
        {
            if self.fresh_as_of.is_none_or(|fresh| fresh < at) {
                self.fresh_as_of = Some(at);
            }
        }
    }

    pub(crate) fn mark_down(&mut self, until: Instant, error: String) {
        self.down_until = Some(until);
        self.last_error = Some(error);
        // Whatever it replayed before may be gone (a standby rebuilt from a
        // new base backup): learn it again.
        self.replayed = None;
        self.fresh_as_of = None;
    }
}

/// Everything the router has learned.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// When the replicas were last checked.
    pub(crate) last_check: Option<Instant>,
    /// The primary's positions (`pg_current_wal_insert_lsn()`) and when they
    /// were asked for, oldest first.
    pub(crate) samples: VecDeque<(Instant, u64)>,
    pub(crate) replicas: Vec<ReplicaState>,
}

impl State {
    pub(crate) fn new(replicas: usize) -> State {
        State {
            replicas: vec![ReplicaState::default(); replicas],
            ..State::default()
        }
    }

    /// Keeps a primary position read at `at`; drops those too old to make
    /// any replica fresh.
    pub(crate) fn add_sample(&mut self, at: Instant, lsn: u64, max_lag: Duration) {
        self.samples.push_back((at, lsn));
        while self.samples.len() > MAX_SAMPLES
            || (self.samples.len() > 1
                && self
                    .samples
                    .front()
                    .is_some_and(|&(t, _)| at.saturating_duration_since(t) > max_lag))
        {
            self.samples.pop_front();
        }
    }
}

/// Where a read goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// This replica, now.
    Replica(usize),
    /// This replica once it has replayed the session's write (a bounded
    /// wait), else the primary.
    WaitFor(usize),
    /// The primary.
    Primary,
}

/// The routing decision for a read at `now`.
///
/// A replica qualifies when it is up and its data is at most `max_lag` old.
/// Without a `token`, the first qualifying replica in round-robin order from
/// `start` serves. With one, the first qualifying replica known to have
/// replayed it serves; else, when waiting is allowed, the first qualifying
/// one is waited for; else the primary serves.
pub(crate) fn pick(
    replicas: &[ReplicaState],
    now: Instant,
    options: &RouterOptions,
    token: Option<u64>,
    start: usize,
) -> Pick {
    let n = replicas.len();
    let mut wait_for = None;
    for k in 0..n {
        let i = (start + k) % n;
        let r = &replicas[i];
        if !r.is_up() || !r.is_fresh(now, options.max_lag) {
            continue;
        }
        match token {
            None => return Pick::Replica(i),
            Some(token) if r.replayed.is_some_and(|lsn| has_replayed(lsn, token)) => {
                return Pick::Replica(i)
            }
            Some(_) => {
                wait_for.get_or_insert(i);
            }
        }
    }
    match wait_for {
        Some(i) if !options.replay_wait.is_zero() => Pick::WaitFor(i),
        _ => Pick::Primary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> RouterOptions {
        RouterOptions::new()
            .max_lag(Duration::from_millis(500))
            .replay_wait(Duration::from_millis(100))
    }

    fn fresh(now: Instant, replayed: u64) -> ReplicaState {
        ReplicaState {
            replayed: Some(replayed),
            fresh_as_of: Some(now),
            ..ReplicaState::default()
        }
    }

    #[test]
    fn reads_go_round_robin_over_fresh_replicas() {
        let now = Instant::now();
        let rs = [fresh(now, 100), fresh(now, 100)];
        assert_eq!(pick(&rs, now, &opts(), None, 0), Pick::Replica(0));
        assert_eq!(pick(&rs, now, &opts(), None, 1), Pick::Replica(1));
        assert_eq!(pick(&rs, now, &opts(), None, 2), Pick::Replica(0));
    }

    #[test]
    fn stale_down_and_unknown_replicas_are_skipped() {
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(1);
        let stale = fresh(t0, 100); // 1 s old, max 500 ms
        let mut down = fresh(now, 100);
        down.mark_down(now + Duration::from_secs(1), "connection closed".into());
        let unknown = ReplicaState::default();
        let ok = fresh(now, 100);
        let rs = [stale.clone(), down.clone(), unknown.clone(), ok];
        assert_eq!(pick(&rs, now, &opts(), None, 0), Pick::Replica(3));
        assert_eq!(
            pick(&[stale, down, unknown], now, &opts(), None, 0),
            Pick::Primary
        );
        assert_eq!(pick(&[], now, &opts(), None, 0), Pick::Primary);
    }

    #[test]
    fn a_token_needs_a_replica_that_replayed_it() {
        let now = Instant::now();
        let behind = fresh(now, 100);
        let ahead = fresh(now, 300);
        let o = opts();
        assert_eq!(
            pick(&[behind.clone(), ahead], now, &o, Some(200), 0),
            Pick::Replica(1)
        );
        assert_eq!(
            pick(std::slice::from_ref(&behind), now, &o, Some(200), 0),
            Pick::WaitFor(0)
        );
        let no_wait = o.replay_wait(Duration::ZERO);
        assert_eq!(pick(&[behind], now, &no_wait, Some(200), 0), Pick::Primary);
        // Within the page-header slack counts as replayed.
        assert_eq!(
            pick(&[fresh(now, 176)], now, &o, Some(200), 0),
            Pick::Replica(0)
        );
        assert_eq!(
            pick(&[fresh(now, 175)], now, &o, Some(200), 0),
            Pick::WaitFor(0)
        );
    }

    #[test]
    fn freshness_comes_from_the_newest_primary_position_reached() {
        let t0 = Instant::now();
        let mut state = State::new(1);
        let max_lag = Duration::from_secs(10);
        state.add_sample(t0, 1000, max_lag);
        state.add_sample(t0 + Duration::from_millis(100), 2000, max_lag);
        state.add_sample(t0 + Duration::from_millis(200), 3000, max_lag);
        let samples = state.samples.clone();
        let r = &mut state.replicas[0];
        r.saw_replayed(2500, &samples);
        assert_eq!(r.fresh_as_of, Some(t0 + Duration::from_millis(100)));
        // Replay positions never go back; freshness never goes back.
        r.saw_replayed(900, &samples);
        assert_eq!(r.replayed, Some(2500));
        assert_eq!(r.fresh_as_of, Some(t0 + Duration::from_millis(100)));
        r.saw_replayed(3000, &samples);
        assert_eq!(r.fresh_as_of, Some(t0 + Duration::from_millis(200)));
        assert_eq!(
            r.lag(t0 + Duration::from_millis(700)),
            Some(Duration::from_millis(500))
        );
    }

    #[test]
    fn an_idle_primary_keeps_a_caught_up_replica_fresh() {
        let t0 = Instant::now();
        let mut state = State::new(1);
        let max_lag = Duration::from_millis(500);
        // No writes: the primary's position stays put while time passes.
        for k in 0..50 {
            state.add_sample(t0 + Duration::from_millis(100 * k), 4242, max_lag);
        }
        let now = t0 + Duration::from_millis(4900);
        let samples = state.samples.clone();
        state.replicas[0].saw_replayed(4242, &samples);
        assert_eq!(state.replicas[0].lag(now), Some(Duration::ZERO));
        assert!(state.samples.len() <= 7, "{}", state.samples.len());
    }

    #[test]
    fn a_replica_that_comes_back_must_be_dated_again() {
        let now = Instant::now();
        let mut r = fresh(now, 100);
        r.mark_down(now, "gone".into());
        assert!(!r.is_up());
        assert_eq!(r.replayed, None);
        assert_eq!(r.lag(now), None);
        assert_eq!(r.last_error.as_deref(), Some("gone"));
    }
}
