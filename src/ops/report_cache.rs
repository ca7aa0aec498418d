//! Cached report rows: a slow report (a dashboard, a top-10) read from
//! memory for a few minutes instead of the database on every request.
//!
//! [`ReportCache`] keeps each report's rows under its statement **and bound
//! values** (a report for another merchant or another window is another
//! entry), for a time to live, within a byte bound (oldest entries go
//! first). Only one caller at a time refreshes a report:
//!
//! - a fresh entry is returned at once;
//! - an **expired** entry is refreshed by the first caller; callers that
//!   come while it runs get the **previous rows** at once (stale while
//!   revalidating) — a dashboard never waits for its own refresh twice;
//! - a report with **no rows yet** is fetched by the first caller; the
//!   others **wait** for that fetch instead of running the same query, and
//!   if it fails (or its caller gives up), the next waiter runs it.
//!
//! Errors are never cached. The cache lives in this process: give each
//! process its own, and use [`invalidate`](ReportCache::invalidate) after a
//! write that must show at once.
//!
//! A general-purpose cache crate (`moka`) would bring its own eviction and
//! loaders, but not "the previous rows while one caller refreshes", which is
//! what a report wants; this is a small map with a waker list instead, and
//! it needs no async runtime.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use postgres_types::FromSqlOwned;
use sea_query::Value;

use super::top_n::{TopN, TopRow};
use crate::exec::Executor;
use crate::page::hash128;
use crate::rollup::{Rollup, RollupRow, Summable};
use crate::types::SqlType;
use crate::{BuiltQuery, Result};

/// How many bytes a cached row takes, by the cache's own estimate (its
/// size plus what it owns on the heap).
pub trait Weigh {
    /// The estimate in bytes.
    fn weigh(&self) -> usize;
}

fn value_bytes(v: &Value) -> usize {
    std::mem::size_of::<Value>()
        + match v {
            Value::String(Some(s)) => s.capacity(),
            Value::Bytes(Some(b)) => b.capacity(),
            _ => 0,
        }
}

impl Weigh for RollupRow {
    fn weigh(&self) -> usize {
        std::mem::size_of::<RollupRow>()
            + self
                .dims
                .iter()
                .chain(&self.metrics)
                .map(value_bytes)
                .sum::<usize>()
    }
}

impl<K, S> Weigh for TopRow<K, S> {
    fn weigh(&self) -> usize {
        std::mem::size_of::<TopRow<K, S>>()
            + self
                .extras
                .iter()
                .map(|(n, v)| n.as_str().len() + value_bytes(v))
                .sum::<usize>()
    }
}

/// A 128-bit digest of a statement and its values, the same in every run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Key(u64, u64);

impl Key {
    fn of(q: &BuiltQuery) -> Key {
        let (a, b) = hash128(format!("{}\u{1f}{:?}", q.sql(), q.values()).as_bytes());
        Key(a, b)
    }
}

struct Slot<T> {
    rows: Option<(Arc<Vec<T>>, Instant, usize)>,
    refreshing: bool,
    waiters: Vec<Waker>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot {
            rows: None,
            refreshing: false,
            waiters: Vec::new(),
        }
    }
}

struct Inner<T> {
    slots: HashMap<Key, Slot<T>>,
    bytes: usize,
}

/// Report rows cached in memory, per statement and bound values, with a
/// time to live, a byte bound and one refresh at a time per report (see the
/// [module docs](self)).
///
/// ```no_run
/// # async fn demo(client: tokio_postgres::Client, dashboard: pgpatterns::Rollup) -> pgpatterns::Result<()> {
/// use std::time::Duration;
/// use pgpatterns::ops::report_cache::ReportCache;
/// use pgpatterns::RollupRow;
///
/// // Built once, shared by every request handler (e.g. in an `Arc`).
/// let cache: ReportCache<RollupRow> = ReportCache::new(Duration::from_secs(300));
/// let rows = cache.rollup(&dashboard, &client).await?; // the database once per 5 minutes
/// println!("{} rows", rows.len());
/// # Ok(()) }
/// ```
pub struct ReportCache<T> {
    ttl: Duration,
    max_bytes: usize,
    inner: Mutex<Inner<T>>,
}

impl<T> std::fmt::Debug for ReportCache<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let inner = self.lock();
        f.debug_struct("ReportCache")
            .field("ttl", &self.ttl)
            .field("max_bytes", &self.max_bytes)
            .field("reports", &inner.slots.len())
            .field("bytes", &inner.bytes)
            .finish()
    }
}

impl<T> ReportCache<T> {
    fn lock(&self) -> MutexGuard<'_, Inner<T>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The default byte bound: 64 MiB.
pub const DEFAULT_REPORT_CACHE_BYTES: usize = 64 << 20;

impl<T: Weigh + Send + Sync> ReportCache<T> {
    /// An empty cache whose rows are fresh for `ttl`, holding at most
    /// [`DEFAULT_REPORT_CACHE_BYTES`].
    #[must_use]
    pub fn new(ttl: Duration) -> ReportCache<T> {
        ReportCache {
            ttl,
            max_bytes: DEFAULT_REPORT_CACHE_BYTES,
            inner: Mutex::new(Inner {
                slots: HashMap::new(),
                bytes: 0,
            }),
        }
    }

    /// This cache holding at most `max_bytes` of rows (by [`Weigh`]); the
    /// oldest reports are dropped first. A report larger than the bound is
    /// returned but not kept.
    #[must_use]
    pub fn with_max_bytes(mut self, max_bytes: usize) -> ReportCache<T> {
        self.max_bytes = max_bytes;
        self
    }

    /// The rows of `query`: cached, or from `fetch` (run by one caller at a
    /// time per query, see the [module docs](self)).
    ///
    /// # Errors
    /// `fetch`'s error, for the caller that ran it (never cached).
    pub async fn get_or_fetch<F, Fut>(&self, query: &BuiltQuery, fetch: F) -> Result<Arc<Vec<T>>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<T>>>,
    {
        let key = Key::of(query);
        loop {
            let wait = {
                let mut inner = self.lock();
                let slot = inner.slots.entry(key).or_default();
                match &slot.rows {
                    Some((rows, at, _)) if at.elapsed() <= self.ttl => return Ok(rows.clone()),
                    Some((rows, _, _)) if slot.refreshing => return Ok(rows.clone()),
                    None if slot.refreshing => true,
                    _ => {
                        slot.refreshing = true;
                        false
                    }
                }
            };
            if wait {
                Waiting { cache: self, key }.await;
                continue;
            }
            // This caller refreshes; the guard hands the turn on if it fails
            // or is dropped.
            let guard = Refresh {
                cache: self,
                key,
                done: false,
            };
            let rows = fetch().await;
            return guard.finish(rows);
        }
    }

    /// Forgets `query`'s rows: the next call fetches them.
    pub fn invalidate(&self, query: &BuiltQuery) {
        let key = Key::of(query);
        let mut inner = self.lock();
        if let Some(slot) = inner.slots.get_mut(&key) {
            if let Some((_, _, bytes)) = slot.rows.take() {
                inner.bytes -= bytes;
            }
        }
    }

    /// Forgets every report.
    pub fn clear(&self) {
        let mut inner = self.lock();
        for slot in inner.slots.values_mut() {
            slot.rows = None;
        }
        inner.bytes = 0;
    }

    /// The bytes the kept rows take, by [`Weigh`].
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// How many reports have rows kept.
    #[must_use]
    pub fn len(&self) -> usize {
        self.lock()
            .slots
            .values()
            .filter(|s| s.rows.is_some())
            .count()
    }

    /// Whether no report has rows kept.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl ReportCache<RollupRow> {
    /// A [`Rollup`]'s rows ([`Rollup::fetch_all`]), cached under the
    /// report's statement and values.
    ///
    /// # Errors
    /// As [`Rollup::fetch_all`].
    pub async fn rollup<E: Executor>(
        &self,
        report: &Rollup,
        db: &E,
    ) -> Result<Arc<Vec<RollupRow>>> {
        let key = report.build()?;
        self.get_or_fetch(&key, || report.fetch_all(db)).await
    }
}

impl<K, S> ReportCache<TopRow<K, S>>
where
    K: SqlType + FromSqlOwned + Send + Sync,
    S: SqlType + FromSqlOwned + Send + Sync,
{
    /// A [`TopN`] report's rows ([`TopN::fetch_all`]), cached under its
    /// statement and values.
    ///
    /// # Errors
    /// As [`TopN::fetch_all`].
    pub async fn top_n<A, E>(&self, report: &TopN<K, A>, db: &E) -> Result<Arc<Vec<TopRow<K, S>>>>
    where
        A: Summable<Sum = S>,
        E: Executor,
    {
        let key = report.build()?;
        self.get_or_fetch(&key, || report.fetch_all(db)).await
    }
}

/// The refreshing caller's turn: stores the rows, or hands the turn on.
struct Refresh<'a, T: Weigh + Send + Sync> {
    cache: &'a ReportCache<T>,
    key: Key,
    done: bool,
}

impl<T: Weigh + Send + Sync> Refresh<'_, T> {
    fn finish(mut self, rows: Result<Vec<T>>) -> Result<Arc<Vec<T>>> {
        self.done = true;
        let cache = self.cache;
        let mut inner = cache.lock();
        let inner = &mut *inner;
        let result = rows.map(Arc::new);
        let slot = inner.slots.entry(self.key).or_default();
        slot.refreshing = false;
        let waiters = std::mem::take(&mut slot.waiters);
        if let Ok(rows) = &result {
            let bytes =
                rows.iter().map(Weigh::weigh).sum::<usize>() + std::mem::size_of::<Slot<T>>();
            if let Some((_, _, old)) = slot.rows.take() {
                inner.bytes -= old;
            }
            if bytes <= cache.max_bytes {
                slot.rows = Some((rows.clone(), Instant::now(), bytes));
                inner.bytes += bytes;
                evict(inner, cache.max_bytes, self.key);
            }
        }
        for w in waiters {
            w.wake();
        }
        result
    }
}

impl<T: Weigh + Send + Sync> Drop for Refresh<'_, T> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        // The caller gave up (its future was dropped): the next waiter
        // takes the turn.
        let mut inner = self.cache.lock();
        if let Some(slot) = inner.slots.get_mut(&self.key) {
            slot.refreshing = false;
            for w in std::mem::take(&mut slot.waiters) {
                w.wake();
            }
        }
    }
}

/// Drops the oldest reports (other than `keep`) until `max` bytes are kept.
fn evict<T>(inner: &mut Inner<T>, max: usize, keep: Key) {
    while inner.bytes > max {
        let oldest = inner
            .slots
            .iter()
            .filter(|(k, s)| **k != keep && s.rows.is_some())
            .min_by_key(|(_, s)| s.rows.as_ref().map(|(_, at, _)| *at))
            .map(|(k, _)| *k);
        let Some(k) = oldest else { break };
        if let Some((_, _, bytes)) = inner.slots.get_mut(&k).and_then(|s| s.rows.take()) {
            inner.bytes -= bytes;
        }
    }
    inner
        .slots
        .retain(|_, s| s.rows.is_some() || s.refreshing || !s.waiters.is_empty());
}

/// Waits until the report's first fetch ends (with rows, or handing the
/// turn on).
struct Waiting<'a, T> {
    cache: &'a ReportCache<T>,
    key: Key,
}

impl<T> Future for Waiting<'_, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut inner = self.cache.lock();
        match inner.slots.get_mut(&self.key) {
            Some(slot) if slot.refreshing && slot.rows.is_none() => {
                slot.waiters.push(cx.waker().clone());
                Poll::Pending
            }
            _ => Poll::Ready(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::block_on;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[derive(Debug, Clone, PartialEq)]
    struct Row(String);

    impl Weigh for Row {
        fn weigh(&self) -> usize {
            self.0.len()
        }
    }

    fn q(n: i64) -> BuiltQuery {
        BuiltQuery::fixed_with("SELECT $1", [n.into()])
    }

    #[test]
    fn fresh_rows_are_kept_and_values_tell_reports_apart() {
        let cache = ReportCache::<Row>::new(Duration::from_secs(60));
        let runs = AtomicUsize::new(0);
        let fetch = |s: &'static str| {
            runs.fetch_add(1, Ordering::SeqCst);
            async move { Ok(vec![Row(s.into())]) }
        };
        let a = block_on(cache.get_or_fetch(&q(1), || fetch("a"))).unwrap();
        let again = block_on(cache.get_or_fetch(&q(1), || fetch("x"))).unwrap();
        let b = block_on(cache.get_or_fetch(&q(2), || fetch("b"))).unwrap();
        assert_eq!(
            (a[0].0.as_str(), again[0].0.as_str(), b[0].0.as_str()),
            ("a", "a", "b")
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        assert_eq!(cache.len(), 2);
        cache.invalidate(&q(1));
        let fetched = block_on(cache.get_or_fetch(&q(1), || fetch("c"))).unwrap();
        assert_eq!(fetched[0].0, "c");
    }

    #[test]
    fn errors_are_not_cached_and_expired_rows_are_refetched() {
        let cache = ReportCache::<Row>::new(Duration::ZERO);
        let err = block_on(cache.get_or_fetch(&q(1), || async {
            Err(crate::Error::spec("test", "failed"))
        }))
        .unwrap_err();
        assert!(err.to_string().contains("failed"));
        assert!(cache.is_empty());
        block_on(cache.get_or_fetch(&q(1), || async { Ok(vec![Row("a".into())]) })).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let b =
            block_on(cache.get_or_fetch(&q(1), || async { Ok(vec![Row("b".into())]) })).unwrap();
        assert_eq!(b[0].0, "b", "expired rows are fetched again");
    }

    /// 16 callers at once: one fetch for a report with no rows yet (the
    /// others wait for it), then, once expired, one refresh while the
    /// others get the previous rows at once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_fetch_at_a_time_per_report() {
        let cache = Arc::new(ReportCache::<Row>::new(Duration::from_millis(500)));
        let runs = Arc::new(AtomicUsize::new(0));
        let call = |label: &'static str| {
            let (cache, runs) = (cache.clone(), runs.clone());
            tokio::spawn(async move {
                cache
                    .get_or_fetch(&q(1), || async move {
                        runs.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        Ok(vec![Row(label.into())])
                    })
                    .await
                    .unwrap()[0]
                    .0
                    .clone()
            })
        };
        let first: Vec<_> = (0..16).map(|_| call("first")).collect();
        for t in first {
            assert_eq!(t.await.unwrap(), "first");
        }
        assert_eq!(runs.load(Ordering::SeqCst), 1, "the others waited");
        tokio::time::sleep(Duration::from_millis(550)).await;
        let second: Vec<_> = (0..16).map(|_| call("second")).collect();
        let mut seen = Vec::new();
        for t in second {
            seen.push(t.await.unwrap());
        }
        assert_eq!(runs.load(Ordering::SeqCst), 2, "one refresh");
        assert!(seen.iter().any(|s| s == "second"), "{seen:?}");
        assert!(
            seen.iter().filter(|s| *s == "first").count() >= 1,
            "callers during the refresh got the previous rows: {seen:?}"
        );
    }

    #[test]
    fn a_dropped_refresh_hands_the_turn_on() {
        let cache = ReportCache::<Row>::new(Duration::from_secs(60));
        // Start a fetch and drop it before it finishes.
        let key = q(1);
        {
            let mut fut = std::pin::pin!(cache.get_or_fetch(&key, std::future::pending));
            let waker = std::task::Waker::noop();
            let mut cx = Context::from_waker(waker);
            assert!(fut.as_mut().poll(&mut cx).is_pending());
        }
        // The next caller is not stuck waiting for it.
        let rows =
            block_on(cache.get_or_fetch(&q(1), || async { Ok(vec![Row("b".into())]) })).unwrap();
        assert_eq!(rows[0].0, "b");
    }

    #[test]
    fn the_byte_bound_drops_the_oldest_reports() {
        let cache = ReportCache::<Row>::new(Duration::from_secs(60))
            .with_max_bytes(2 * (100 + std::mem::size_of::<Slot<Row>>()));
        let big = || async { Ok(vec![Row("x".repeat(100))]) };
        for n in 0..5 {
            block_on(cache.get_or_fetch(&q(n), big)).unwrap();
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.bytes() <= 2 * (100 + std::mem::size_of::<Slot<Row>>()));
        // The newest two are kept.
        let runs = AtomicUsize::new(0);
        block_on(cache.get_or_fetch(&q(4), || {
            runs.fetch_add(1, Ordering::SeqCst);
            big()
        }))
        .unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        // Larger than the bound: returned, not kept.
        let huge =
            block_on(cache.get_or_fetch(&q(9), || async { Ok(vec![Row("y".repeat(10_000))]) }))
                .unwrap();
        assert_eq!(huge[0].0.len(), 10_000);
        assert_eq!(cache.len(), 2);
    }
}
