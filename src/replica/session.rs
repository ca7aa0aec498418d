//! Read-your-writes: [`Session`] and the [`WriteToken`] it carries.

use std::fmt;
use std::future::Future;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::{is_read_only, ReplicaRouter};
use crate::{BuiltQuery, Error, Executor, Result};

/// A position in the primary's write-ahead log: reads that carry it see
/// everything committed on the primary before it was taken.
///
/// It prints as PostgreSQL prints an LSN (`16/B374D848`) and parses back
/// from that text, so it can travel between requests or processes (a
/// cookie, a header, a queue message).
///
/// ```
/// use pgpatterns::replica::WriteToken;
/// let t: WriteToken = "16/B374D848".parse()?;
/// assert_eq!(t.lsn(), 0x16_B374_D848);
/// assert_eq!(t.to_string(), "16/B374D848");
/// assert!("16-B374D848".parse::<WriteToken>().is_err());
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct WriteToken(u64);

impl WriteToken {
    /// The token for a WAL position given as a number (a `pg_lsn` minus
    /// `'0/0'`).
    #[must_use]
    pub fn from_lsn(lsn: u64) -> WriteToken {
        WriteToken(lsn)
    }

    /// The WAL position as a number.
    #[must_use]
    pub fn lsn(self) -> u64 {
        self.0
    }
}

impl fmt::Display for WriteToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

impl FromStr for WriteToken {
    type Err = Error;

    /// Parses `X/Y`, two hexadecimal numbers of at most 8 digits each.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for any other text.
    fn from_str(s: &str) -> Result<WriteToken> {
        let bad = || {
            Error::spec(
                "write token",
                format!("expected a WAL position such as 0/16B3748, got {s:?}"),
            )
        };
        let (hi, lo) = s.split_once('/').ok_or_else(bad)?;
        let half = |part: &str| {
            if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            u32::from_str_radix(part, 16).map_err(|_| bad())
        };
        Ok(WriteToken(
            (u64::from(half(hi)?) << 32) | u64::from(half(lo)?),
        ))
    }
}

/// A read-your-writes view of a [`ReplicaRouter`]
/// ([`ReplicaRouter::session`]): an [`Executor`] whose reads see every write
/// it ran, and every write whose [`WriteToken`] it was given.
///
/// Writes run on the primary, then the session takes the primary's WAL
/// position. Reads go to a replica that has replayed that position (waiting
/// up to [`RouterOptions::replay_wait`](super::RouterOptions::replay_wait)
/// for one to), else to the primary; the router's other rules (read-only
/// text, lag, failing replicas) apply as well.
///
/// Transactions run on the router (or its primary); tell the session about
/// them afterwards with
/// `session.observe(router.write_token().await?)`.
///
/// Should the primary fail to report its position right after a write, the
/// write's own result is still returned, and the session's reads go to the
/// primary from then on.
pub struct Session<'r, P, R> {
    router: &'r ReplicaRouter<P, R>,
    /// The newest position to read after; 0 for none.
    token: AtomicU64,
    /// Set when a write's position could not be read.
    primary_only: AtomicBool,
}

impl<P, R> fmt::Debug for Session<'_, P, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Session")
            .field("token", &self.current())
            .field("primary_only", &self.primary_only.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl<'r, P, R> Session<'r, P, R> {
    pub(super) fn new(router: &'r ReplicaRouter<P, R>, token: Option<WriteToken>) -> Self {
        Session {
            router,
            token: AtomicU64::new(token.map_or(0, WriteToken::lsn)),
            primary_only: AtomicBool::new(false),
        }
    }

    fn current(&self) -> Option<WriteToken> {
        match self.token.load(Ordering::Acquire) {
            0 => None,
            lsn => Some(WriteToken(lsn)),
        }
    }

    /// The position this session reads after: its last write's, or the
    /// newest one it was given; `None` before any.
    #[must_use]
    pub fn token(&self) -> Option<WriteToken> {
        self.current()
    }

    /// Makes the session's reads see everything committed before `token`
    /// (a token from another session or request, or from
    /// [`ReplicaRouter::write_token`]). An older token than the session's
    /// own changes nothing.
    pub fn observe(&self, token: WriteToken) {
        self.token.fetch_max(token.lsn(), Ordering::AcqRel);
    }

    /// The router.
    #[must_use]
    pub fn router(&self) -> &'r ReplicaRouter<P, R> {
        self.router
    }
}

impl<P, R> Session<'_, P, R>
where
    P: Executor,
    R: Executor<Row = P::Row>,
{
    /// Takes the primary's position after a write. Also after a write that
    /// failed (unless it was refused before anything was sent): a write
    /// whose connection broke may still have committed.
    async fn after_write<T>(&self, result: Result<T>) -> Result<T> {
        if !matches!(&result, Err(e) if e.is_invalid_input()) {
            self.wrote().await;
        }
        result
    }

    async fn wrote(&self) {
        match self.router.write_token().await {
            Ok(token) => self.observe(token),
            Err(_) => self.primary_only.store(true, Ordering::Release),
        }
    }

    async fn rows_after(&self, q: &BuiltQuery) -> Result<Vec<P::Row>> {
        if is_read_only(q) {
            if self.primary_only.load(Ordering::Acquire) {
                // No replica can be shown to have the session's writes.
                return self.router.route_rows(q, false, None).await;
            }
            let token = self.current().map(WriteToken::lsn);
            return self.router.route_rows(q, true, token).await;
        }
        let rows = self.router.route_rows(q, false, None).await;
        self.after_write(rows).await
    }

    async fn run_then_mark(&self, q: &BuiltQuery) -> Result<u64> {
        let n = self.router.run(q).await;
        self.after_write(n).await
    }

    async fn script_then_mark(&self, sql: &str) -> Result<()> {
        let done = self.router.run_script(sql).await;
        self.after_write(done).await
    }
}

impl<P, R> Executor for Session<'_, P, R>
where
    P: Executor,
    R: Executor<Row = P::Row>,
{
    type Row = P::Row;

    /// A read as the router routes it, after the session's writes; a write
    /// on the primary, then its position is taken.
    fn rows(&self, q: &BuiltQuery) -> impl Future<Output = Result<Vec<Self::Row>>> + Send {
        self.rows_after(q)
    }

    /// On the primary; then its position is taken.
    fn run(&self, q: &BuiltQuery) -> impl Future<Output = Result<u64>> + Send {
        self.run_then_mark(q)
    }

    /// On the primary; then its position is taken.
    fn run_script(&self, sql: &str) -> impl Future<Output = Result<()>> + Send {
        self.script_then_mark(sql)
    }

    fn is_transaction(&self) -> bool {
        self.router.primary().is_transaction()
    }
}
