//! Keyset pages of matching roots with an opaque, strictly parsed cursor.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use chrono::{DateTime, NaiveDateTime, Utc};
use postgres_types::FromSqlOwned;
use sea_query::{Alias, Expr, ExprTrait, Order, PostgresQueryBuilder};
use uuid::Uuid;

use super::change::{in_pg_range, ChangeColumn};
use super::{SinceQuery, SinceStrategy, SINCE_AT, SINCE_KEY};
use crate::exec::{run_blocking, BlockingExecutor};
use crate::exec::{ColumnIndex, Executor, FromRow, RowRead};
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Result};

/// The order pages walk the matching roots in.
///
/// ## What a walk guarantees when rows change between pages
///
/// Pages are keyset pages (each continues strictly after the last row of the
/// previous one), not snapshots, so no state is kept on the server:
///
/// - [`PageOrder::Key`]: the key never changes, so a walk returns **every
///   root that matches throughout the walk exactly once**, in key order, even
///   when the roots or their related rows are updated between pages. A root
///   that starts matching during the walk is returned if its key is still
///   ahead of the cursor.
/// - [`PageOrder::ChangeTime`]: ordered by the root's own change column
///   (ascending, NULLs last, so an index on `(change, key)` serves it), then
///   the key. Changes in related tables do not move a root, so they behave
///   as above. An update of the **root row itself** moves it towards the
///   end: a root updated before the walk reached it is returned once, at its
///   new place; one updated after it was returned is returned **again**,
///   with its new state. So no root that matches throughout the walk is
///   skipped (at-least-once, with a repeat only for a root changed after it
///   was returned) — provided change times only move forward and a root's
///   change time does not go from NULL to a value while the walk is already
///   among the NULL-time roots (such a root is picked up by the next walk;
///   declare change columns `NOT NULL`, as ORMs do, and this cannot happen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum PageOrder {
    /// By the root key.
    #[default]
    Key,
    /// By the root's own change time, then the key.
    ChangeTime,
}

impl PageOrder {
    fn tag(self) -> u8 {
        match self {
            PageOrder::Key => b'k',
            PageOrder::ChangeTime => b't',
        }
    }
}

/// Which page to fetch: a limit, an order and, after the first page, the
/// cursor of the previous one. `PageRequest::from(50)` is the first page of
/// 50 in key order.
///
/// ```
/// use pgpatterns::{PageOrder, PageRequest};
/// let first = PageRequest::new(50).order(PageOrder::ChangeTime);
/// let same: PageRequest = 50.into();
/// assert_eq!(same.limit(), 50);
/// # let _ = first;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    limit: i64,
    order: PageOrder,
    after: Option<String>,
}

impl PageRequest {
    /// The first page of `limit` rows in key order.
    pub fn new(limit: i64) -> PageRequest {
        PageRequest {
            limit,
            order: PageOrder::Key,
            after: None,
        }
    }

    /// Sets the order.
    pub fn order(mut self, order: PageOrder) -> PageRequest {
        self.order = order;
        self
    }

    /// Continues after a page: its [`SincePage::next`] cursor.
    pub fn after(mut self, cursor: impl Into<String>) -> PageRequest {
        self.after = Some(cursor.into());
        self
    }

    /// The limit.
    pub fn limit(&self) -> i64 {
        self.limit
    }
}

impl From<i64> for PageRequest {
    fn from(limit: i64) -> Self {
        PageRequest::new(limit)
    }
}

/// One page of matching roots.
#[derive(Debug, Clone, PartialEq)]
pub struct SincePage<T, K> {
    /// The rows, decoded as `T`.
    pub rows: Vec<T>,
    /// The root key of each row (for [`SinceQuery::fetch_changes`]).
    pub keys: Vec<K>,
    /// The cursor for the next page; `None` when this page was not full, so
    /// there is nothing after it. Opaque URL-safe text (base64url, at most
    /// [`SINCE_MAX_CURSOR_LEN`] characters), valid only for the same query:
    /// see [`SinceQuery::page_query`].
    pub next: Option<String>,
}

/// A root key type that can travel in a cursor: `i16`, `i32`, `i64`,
/// `String` and `Uuid`.
pub trait CursorKey: SqlType + FromSqlOwned {
    /// The key as cursor text.
    fn to_cursor(&self) -> String;
    /// Parses cursor text; `None` when it is not a valid key (or not one
    /// PostgreSQL accepts, such as text with a NUL character). Must accept
    /// whatever [`to_cursor`](Self::to_cursor) makes of a key read from the
    /// database.
    fn from_cursor(text: &str) -> Option<Self>;
}

macro_rules! int_cursor_key {
    ($($t:ty),*) => {$(
        impl CursorKey for $t {
            fn to_cursor(&self) -> String {
                self.to_string()
            }
            fn from_cursor(text: &str) -> Option<Self> {
                // Strict: no sign for non-negatives, no leading zeros, no spaces.
                let v: $t = text.parse().ok()?;
                (v.to_string() == text).then_some(v)
            }
        }
    )*};
}

int_cursor_key!(i16, i32, i64);

impl CursorKey for String {
    fn to_cursor(&self) -> String {
        self.clone()
    }
    fn from_cursor(text: &str) -> Option<Self> {
        // PostgreSQL text cannot hold NUL: such a key cannot come from the
        // database, and binding it would fail on the server.
        (!text.contains('\0')).then(|| text.to_owned())
    }
}

impl CursorKey for Uuid {
    fn to_cursor(&self) -> String {
        self.hyphenated().to_string()
    }
    fn from_cursor(text: &str) -> Option<Self> {
        let v = Uuid::parse_str(text).ok()?;
        (v.hyphenated().to_string() == text).then_some(v)
    }
}

/// The longest cursor, in characters (cursors are ASCII), that
/// [`SinceQuery::fetch_page`] hands out and [`SinceQuery::page_query`]
/// accepts. A page whose last key is too long for it (a text key of about
/// 49 000 bytes) is an error when the page is built, never a cursor the next
/// request would refuse.
pub const SINCE_MAX_CURSOR_LEN: usize = 65_536;

/// The format version, the first byte of a cursor.
const CURSOR_VERSION: u8 = 2;
/// The largest cursor payload: base64url turns 3 bytes into 4 characters.
const MAX_PAYLOAD: usize = SINCE_MAX_CURSOR_LEN / 4 * 3;
/// Version, order and time flag.
const HEADER: usize = 3;
/// The fingerprint and the checksum.
const HASH: usize = 8;
/// Hash seeds, so a fingerprint is never mistaken for a checksum.
const FINGERPRINT_SEED: u64 = 0x7067_7061_7474_6673; // "pgpattfs"
const CHECKSUM_SEED: u64 = 0x7067_7061_7474_6373; // "pgpattcs"

/// A decoded cursor: the last row's change time (micros, if any) and key.
#[derive(Debug, Clone, PartialEq)]
struct Cursor<K> {
    at: Option<i64>,
    key: K,
}

/// A 64-bit hash: FNV-1a with a final avalanche (MurmurHash3's `fmix64`),
/// fixed across platforms and releases. A checksum, not a MAC: it catches
/// damage and cursors reused for another query, not a forger.
#[derive(Debug, Clone, Copy)]
struct Hash64(u64);

impl Hash64 {
    fn new(seed: u64) -> Hash64 {
        Hash64(0xcbf2_9ce4_8422_2325 ^ seed)
    }

    fn bytes(mut self, bytes: &[u8]) -> Hash64 {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        self
    }

    /// A length-prefixed part, so parts never run into each other.
    fn part(self, bytes: &[u8]) -> Hash64 {
        self.bytes(&(bytes.len() as u64).to_be_bytes()).bytes(bytes)
    }

    fn finish(self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// The payload of a cursor:
///
/// ```text
/// version (1) | order (1) | has time (1) | time (8, if any)
///   | query fingerprint (8) | key text | checksum (8) of all before it
/// ```
fn payload(fingerprint: u64, order: PageOrder, at: Option<i64>, key: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(HEADER + 8 + HASH + key.len() + HASH);
    p.extend_from_slice(&[CURSOR_VERSION, order.tag(), u8::from(at.is_some())]);
    if let Some(micros) = at {
        p.extend_from_slice(&micros.to_be_bytes());
    }
    p.extend_from_slice(&fingerprint.to_be_bytes());
    p.extend_from_slice(key.as_bytes());
    let sum = Hash64::new(CHECKSUM_SEED).bytes(&p).finish();
    p.extend_from_slice(&sum.to_be_bytes());
    p
}

/// A damaged cursor: `invalid cursor: {detail}; pass …`.
fn corrupted(detail: &str) -> Error {
    Error::spec(
        "cursor",
        format!(
            "{detail}; pass a page's `next` unchanged, or start again from the \
             first page"
        ),
    )
}

/// A cursor of another walk: `invalid cursor: made for another {what}; …`.
fn foreign(what: &str) -> Error {
    Error::spec(
        "cursor",
        format!("made for another {what}; it continues only the walk it came from"),
    )
}

/// Splits `n` bytes off the front of `p`.
fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    let (head, tail) = p.split_at_checked(n)?;
    *p = tail;
    Some(head)
}

fn take_u64(p: &mut &[u8]) -> Option<[u8; 8]> {
    take(p, 8)?.try_into().ok()
}

impl<K: SqlType> SinceQuery<K> {
    /// The page statement without cursor or limit: the query in `strategy`,
    /// with the key and change time, ordered.
    fn page_statement(&self, order: PageOrder) -> sea_query::SelectStatement {
        let g = self.graph();
        let mut q = self.to_statement();
        let key = g.key.expr();
        let change = g.root_change.expr();
        q.expr_as(key.clone(), Alias::new(SINCE_KEY))
            .expr_as(change.clone(), Alias::new(SINCE_AT));
        match order {
            PageOrder::Key => {
                q.order_by_expr(key, Order::Asc);
            }
            PageOrder::ChangeTime => {
                q.order_by_expr(change, Order::Asc)
                    .order_by_expr(key, Order::Asc);
            }
        }
        q
    }

    /// What a cursor is bound to: the statement shape and its values (root,
    /// paths, filters, `since`, order, key), the key type and the
    /// `timestamp` offset, but not the strategy (every strategy returns the
    /// same rows, and `Auto` may switch between pages) nor the limit.
    fn fingerprint(&self, order: PageOrder) -> u64 {
        let shape = self
            .clone()
            .strategy(SinceStrategy::Exists)
            .page_statement(order)
            .to_string(PostgresQueryBuilder);
        Hash64::new(FINGERPRINT_SEED)
            .part(K::SQL_TYPE.as_bytes())
            .part(&[order.tag()])
            .part(&self.since.utc.timestamp_micros().to_be_bytes())
            .part(&self.graph().offset.local_minus_utc().to_be_bytes())
            .part(shape.as_bytes())
            .finish()
    }

    /// The cursor continuing after a row with change time `at` (micros, for
    /// [`PageOrder::ChangeTime`]) and key `key`.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] (field `"cursor"`) when the key is too long
    /// for a cursor of [`SINCE_MAX_CURSOR_LEN`] characters, or a cursor of it
    /// would not be accepted back (a key type whose text does not parse back,
    /// a time out of PostgreSQL's range).
    pub(crate) fn encode_cursor(&self, order: PageOrder, at: Option<i64>, key: &K) -> Result<String>
    where
        K: CursorKey,
    {
        let text = key.to_cursor();
        let time = if at.is_some() { 8 } else { 0 };
        let len = HEADER + time + HASH + text.len() + HASH;
        if len > MAX_PAYLOAD {
            return Err(Error::spec(
                "cursor",
                format!(
                    "the last row's key is too long ({} bytes as text; at most {} fit in \
                     {SINCE_MAX_CURSOR_LEN} characters): page by a shorter key",
                    text.len(),
                    MAX_PAYLOAD - (len - text.len()),
                ),
            ));
        }
        if K::from_cursor(&text).is_none() {
            return Err(Error::spec(
                "cursor",
                format!("the last row's key {text:?} does not read back from its text"),
            ));
        }
        if at.is_some_and(|m| !in_pg_range(m)) {
            return Err(Error::spec(
                "cursor",
                "the last row's change time is out of PostgreSQL's range",
            ));
        }
        let p = payload(self.fingerprint(order), order, at, &text);
        Ok(URL_SAFE_NO_PAD.encode(p))
    }

    fn decode_cursor(&self, order: PageOrder, cursor: &str) -> Result<Cursor<K>>
    where
        K: CursorKey,
    {
        if cursor.len() > SINCE_MAX_CURSOR_LEN {
            return Err(corrupted(&format!(
                "too long ({} characters, at most {SINCE_MAX_CURSOR_LEN})",
                cursor.len()
            )));
        }
        if cursor.starts_with("736331") && cursor.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::spec(
                "cursor",
                "made by an older version of pgpatterns; start again from the first page",
            ));
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| corrupted("not base64url"))?;
        let Some((body, sum)) = bytes.split_last_chunk::<HASH>() else {
            return Err(corrupted("cut short"));
        };
        if Hash64::new(CHECKSUM_SEED).bytes(body).finish() != u64::from_be_bytes(*sum) {
            return Err(corrupted("damaged or cut short (checksum mismatch)"));
        }
        let mut p = body;
        let Some(&[version, tag, has_time]) = take(&mut p, HEADER) else {
            return Err(corrupted("cut short"));
        };
        if version != CURSOR_VERSION {
            return Err(corrupted(&format!("unknown version {version}")));
        }
        let made_for = match tag {
            b'k' => PageOrder::Key,
            b't' => PageOrder::ChangeTime,
            _ => return Err(corrupted("unknown page order")),
        };
        if made_for != order {
            return Err(foreign(&format!(
                "page order ({made_for:?}, not {order:?})"
            )));
        }
        let at = match (has_time, order) {
            (0, _) => None,
            (1, PageOrder::ChangeTime) => {
                let micros =
                    i64::from_be_bytes(take_u64(&mut p).ok_or_else(|| corrupted("cut short"))?);
                if !in_pg_range(micros) {
                    return Err(corrupted("its change time is out of PostgreSQL's range"));
                }
                Some(micros)
            }
            _ => return Err(corrupted("bad time flag")),
        };
        let fingerprint =
            u64::from_be_bytes(take_u64(&mut p).ok_or_else(|| corrupted("cut short"))?);
        if fingerprint != self.fingerprint(order) {
            return Err(foreign(
                "query: the graph, its filters or their values, `since`, the `timestamp` \
                 offset or the key type differ",
            ));
        }
        let text = std::str::from_utf8(p).map_err(|_| corrupted("its key is not UTF-8"))?;
        let key = K::from_cursor(text).ok_or_else(|| corrupted("not a valid key"))?;
        Ok(Cursor { at, key })
    }

    /// One page of matching roots: `root.*`, then [`SINCE_KEY`] and
    /// [`SINCE_AT`] (the key and the root's change time, for the next
    /// cursor), ordered as asked, after the request's cursor.
    ///
    /// ## Cursors
    ///
    /// A cursor ([`SincePage::next`]) is opaque base64url text of at most
    /// [`SINCE_MAX_CURSOR_LEN`] characters. It carries the last row's key and
    /// change time, a fingerprint of the query it was made for (root, paths,
    /// filters and their values, `since`, the `timestamp` offset, the order
    /// and the key type; not the strategy or the limit, which may change
    /// between pages) and a 64-bit checksum. It is **tamper-evident, not
    /// tamper-proof**: damage, truncation and reuse with another query are
    /// refused, but the checksum is not keyed, so a client able to compute it
    /// could forge a cursor; even a forged one decodes only to a key of the
    /// right type and a time PostgreSQL can hold, both bound as parameters.
    /// Sign or keep cursors on the server if they must not be forged. A
    /// cursor is valid for the same version of pgpatterns.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for a limit below 1 or above the graph's
    /// [`max_limit`](crate::SinceGraph::max_limit) (field `"limit"`), or a
    /// cursor that is damaged, cut short, too long, made for another query or
    /// order, or names a time PostgreSQL cannot hold (field `"cursor"`).
    ///
    /// ```
    /// use chrono::{DateTime, TimeZone, Utc};
    /// use pgpatterns::{Error, PageOrder, PageRequest, SinceGraph, Table};
    /// let moves = Table::new("moves")?;
    /// let graph = SinceGraph::new(
    ///     &moves.column::<i64>("id")?,
    ///     &moves.column::<DateTime<Utc>>("updated_at")?,
    /// )?;
    /// let q = graph.since(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap())?;
    /// let page = q.page_query(&PageRequest::new(50).order(PageOrder::ChangeTime))?;
    /// assert_eq!(
    ///     page.sql(),
    ///     r#"SELECT "moves".*, "moves"."id" AS "since_key", "moves"."updated_at" AS "since_at" FROM "moves" WHERE "moves"."updated_at" >= CAST($1 AS timestamptz) ORDER BY "moves"."updated_at" ASC, "moves"."id" ASC LIMIT $2"#
    /// );
    /// let bad = q.page_query(&PageRequest::new(50).after("not a cursor"));
    /// assert!(matches!(bad, Err(Error::InvalidSpec { field: "cursor", .. })));
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    pub fn page_query(&self, req: &PageRequest) -> Result<BuiltQuery>
    where
        K: CursorKey,
    {
        if self.strategy == SinceStrategy::Auto {
            return self.clone().strategy(SinceStrategy::Exists).page_query(req);
        }
        let g = self.graph();
        if req.limit < 1 || req.limit > g.max_limit {
            return Err(Error::spec(
                "limit",
                format!("must be between 1 and {}, got {}", g.max_limit, req.limit),
            ));
        }
        let after = match &req.after {
            Some(c) => Some(self.decode_cursor(req.order, c)?),
            None => None,
        };
        let mut q = self.page_statement(req.order);
        let key = g.key.expr();
        let change = g.root_change.expr();
        if let Some(c) = after {
            let cond = match (req.order, c.at) {
                (PageOrder::Key, _) => key.gt(c.key.param()),
                (PageOrder::ChangeTime, Some(micros)) => {
                    let at = micros_param(&g.root_change, micros)?;
                    Expr::tuple([change.clone(), key.clone()])
                        .gt(Expr::tuple([at, c.key.param()]))
                        .or(change.is_null())
                }
                (PageOrder::ChangeTime, None) => change.is_null().and(key.gt(c.key.param())),
            };
            q.and_where(cond);
        }
        q.limit(req.limit as u64);
        Ok(BuiltQuery::new(&q))
    }

    /// Runs [`page_query`](Self::page_query) and decodes the rows as `T`
    /// (read by position from `root.*`, so a tuple of the root's leading
    /// columns works, or by name), with the cursor of the next page.
    ///
    /// # Errors
    /// As for [`page_query`](Self::page_query); [`Error::Database`] or
    /// [`Error::Decode`] from the executor.
    pub async fn fetch_page<T, E>(&self, e: &E, req: &PageRequest) -> Result<SincePage<T, K>>
    where
        K: CursorKey,
        T: FromRow + Send,
        E: Executor,
    {
        // Checks the request before `Auto` reads any statistics.
        self.page_query(req)?;
        let q = self.resolve_page(e, req).await?.page_query(req)?;
        let rows = e.rows(&q).await?;
        let mut page = SincePage {
            rows: Vec::with_capacity(rows.len()),
            keys: Vec::with_capacity(rows.len()),
            next: None,
        };
        let mut last_at = None;
        for row in &rows {
            page.rows.push(T::from_row(row)?);
            // The page query ends with `since_key, since_at`: read them by
            // position, since a root column may carry the same name.
            let (key_at, at_at) = match row.len() {
                n if n >= 2 => (n - 2, n - 1),
                n => {
                    return Err(Error::RowCount {
                        expected: "at least two columns (since_key, since_at)",
                        got: n,
                    })
                }
            };
            page.keys
                .push(row.try_get::<K>(ColumnIndex::Position(key_at))?);
            last_at = match self.graph().root_change {
                ChangeColumn::Timestamptz(_) => row
                    .try_get::<Option<DateTime<Utc>>>(ColumnIndex::Position(at_at))?
                    .map(|t| t.timestamp_micros()),
                ChangeColumn::Timestamp(_) => row
                    .try_get::<Option<NaiveDateTime>>(ColumnIndex::Position(at_at))?
                    .map(|t| t.and_utc().timestamp_micros()),
            };
        }
        if rows.len() as i64 == req.limit {
            if let Some(key) = page.keys.last() {
                let at = match req.order {
                    PageOrder::Key => None,
                    PageOrder::ChangeTime => last_at,
                };
                page.next = Some(self.encode_cursor(req.order, at, key)?);
            }
        }
        Ok(page)
    }

    /// [`fetch_page`](Self::fetch_page) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`fetch_page`](Self::fetch_page).
    pub fn fetch_page_blocking<T, C>(&self, e: &mut C, req: &PageRequest) -> Result<SincePage<T, K>>
    where
        K: CursorKey,
        T: FromRow + Send,
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(e, async |e| self.fetch_page::<T, _>(e, req).await)
    }
}

/// A cursor time as a parameter of the root change column's type.
fn micros_param(col: &ChangeColumn, micros: i64) -> Result<Expr> {
    let t = DateTime::<Utc>::from_timestamp_micros(micros)
        .filter(|_| in_pg_range(micros))
        .ok_or_else(|| corrupted("its change time is out of PostgreSQL's range"))?;
    Ok(match col {
        ChangeColumn::Timestamptz(_) => t.param(),
        ChangeColumn::Timestamp(_) => t.naive_utc().param(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_fixed_and_sees_every_byte() {
        // fixed across platforms and releases: cursors outlive a process
        assert_eq!(Hash64::new(0).finish(), Hash64::new(0).bytes(b"").finish());
        let a = Hash64::new(CHECKSUM_SEED).bytes(b"sc|k|42").finish();
        assert_eq!(a, Hash64::new(CHECKSUM_SEED).bytes(b"sc|k|42").finish());
        assert_ne!(a, Hash64::new(FINGERPRINT_SEED).bytes(b"sc|k|42").finish());
        assert_ne!(a, Hash64::new(CHECKSUM_SEED).bytes(b"sc|k|4").finish());
        // parts are length-prefixed: "ab" + "c" differs from "a" + "bc"
        let h = |x: &[u8], y: &[u8]| Hash64::new(0).part(x).part(y).finish();
        assert_ne!(h(b"ab", b"c"), h(b"a", b"bc"));
    }

    #[test]
    fn payload_layout() {
        let p = payload(7, PageOrder::ChangeTime, Some(-1), "42");
        assert_eq!(p.len(), HEADER + 8 + HASH + 2 + HASH);
        assert_eq!(&p[..HEADER], &[CURSOR_VERSION, b't', 1]);
        assert_eq!(&p[HEADER..HEADER + 8], &(-1i64).to_be_bytes());
        let p = payload(7, PageOrder::Key, None, "42");
        assert_eq!(p.len(), HEADER + HASH + 2 + HASH);
        assert_eq!(&p[HEADER..HEADER + 8], &7u64.to_be_bytes());
        assert_eq!(&p[HEADER + 8..HEADER + 10], b"42");
    }

    #[test]
    fn keys_parse_strictly() {
        assert_eq!(i64::from_cursor("42"), Some(42));
        assert_eq!(i64::from_cursor("042"), None);
        assert_eq!(i64::from_cursor("+42"), None);
        assert_eq!(i32::from_cursor("99999999999"), None);
        let u = Uuid::from_u128(7);
        assert_eq!(Uuid::from_cursor(&u.to_cursor()), Some(u));
        assert_eq!(Uuid::from_cursor(&u.simple().to_string()), None);
        assert_eq!(String::from_cursor("a|b"), Some("a|b".to_owned()));
        assert_eq!(String::from_cursor("a\0b"), None);
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    /// A well-formed cursor for `q` (right fingerprint and checksum) with any
    /// time and key text: what only a forger could make, to test that the
    /// decoder checks what it decodes.
    pub(crate) fn forge<K: CursorKey>(
        q: &SinceQuery<K>,
        order: PageOrder,
        at: Option<i64>,
        key: &str,
    ) -> String {
        URL_SAFE_NO_PAD.encode(payload(q.fingerprint(order), order, at, key))
    }

    /// `body` with its checksum appended, as a cursor.
    pub(crate) fn checksummed(body: &[u8]) -> String {
        let mut p = body.to_vec();
        let sum = Hash64::new(CHECKSUM_SEED).bytes(&p).finish();
        p.extend_from_slice(&sum.to_be_bytes());
        URL_SAFE_NO_PAD.encode(p)
    }

    /// The query's fingerprint for `order`.
    pub(crate) fn fingerprint<K: CursorKey>(q: &SinceQuery<K>, order: PageOrder) -> u64 {
        q.fingerprint(order)
    }
}
