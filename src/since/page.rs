//! Keyset pages of matching roots with an opaque, strictly parsed cursor.

use chrono::{DateTime, NaiveDateTime, Utc};
use postgres_types::FromSqlOwned;
use sea_query::{Alias, Expr, ExprTrait, Order};
use uuid::Uuid;

use super::change::ChangeColumn;
use super::{SinceQuery, SinceStrategy, SINCE_AT, SINCE_KEY};
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
    fn tag(self) -> &'static str {
        match self {
            PageOrder::Key => "k",
            PageOrder::ChangeTime => "t",
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
    /// there is nothing after it.
    pub next: Option<String>,
}

/// A root key type that can travel in a cursor: `i16`, `i32`, `i64`,
/// `String` and `Uuid`.
pub trait CursorKey: SqlType + FromSqlOwned {
    /// The key as cursor text.
    fn to_cursor(&self) -> String;
    /// Parses cursor text; `None` when it is not a valid key.
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
        Some(text.to_owned())
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

const CURSOR_VERSION: &str = "sc1";
const MAX_CURSOR_LEN: usize = 4096;

/// A decoded cursor: the last row's change time (micros, if any) and key.
#[derive(Debug, Clone, PartialEq)]
struct Cursor<K> {
    at: Option<i64>,
    key: K,
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let b = s.as_bytes();
    if b.is_empty() || !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| Some(digit(p[0])? << 4 | digit(p[1])?))
        .collect()
}

fn bad_cursor(reason: &str) -> Error {
    Error::spec("cursor", format!("malformed cursor: {reason}"))
}

impl<K: SqlType> SinceQuery<K> {
    pub(crate) fn encode_cursor(&self, order: PageOrder, at: Option<i64>, key: &K) -> String
    where
        K: CursorKey,
    {
        let at = at.map_or_else(|| "-".to_owned(), |m| m.to_string());
        let text = format!(
            "{CURSOR_VERSION}|{}|{}|{}|{at}|{}",
            order.tag(),
            K::SQL_TYPE,
            self.since.utc.timestamp_micros(),
            key.to_cursor()
        );
        hex(text.as_bytes())
    }

    fn decode_cursor(&self, order: PageOrder, cursor: &str) -> Result<Cursor<K>>
    where
        K: CursorKey,
    {
        if cursor.len() > MAX_CURSOR_LEN {
            return Err(bad_cursor("too long"));
        }
        let bytes = unhex(cursor).ok_or_else(|| bad_cursor("not lowercase hex"))?;
        let text = String::from_utf8(bytes).map_err(|_| bad_cursor("not UTF-8"))?;
        let parts: Vec<&str> = text.splitn(6, '|').collect();
        let [version, tag, key_type, since, at, key] = parts[..] else {
            return Err(bad_cursor("wrong number of fields"));
        };
        if version != CURSOR_VERSION {
            return Err(bad_cursor("unknown version"));
        }
        if tag != order.tag() {
            return Err(bad_cursor("made for another page order"));
        }
        if key_type != K::SQL_TYPE {
            return Err(bad_cursor("made for another key type"));
        }
        if since != self.since.utc.timestamp_micros().to_string() {
            return Err(bad_cursor("made for another `since`"));
        }
        let at = match (at, order) {
            ("-", _) => None,
            (_, PageOrder::Key) => return Err(bad_cursor("a key cursor carries no time")),
            (m, PageOrder::ChangeTime) => {
                let v: i64 = m.parse().map_err(|_| bad_cursor("bad time"))?;
                if v.to_string() != m || DateTime::<Utc>::from_timestamp_micros(v).is_none() {
                    return Err(bad_cursor("bad time"));
                }
                Some(v)
            }
        };
        let key = K::from_cursor(key).ok_or_else(|| bad_cursor("bad key"))?;
        Ok(Cursor { at, key })
    }

    /// One page of matching roots: `root.*`, then [`SINCE_KEY`] and
    /// [`SINCE_AT`] (the key and the root's change time, for the next
    /// cursor), ordered as asked, after the request's cursor.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for a limit below 1 or above the graph's
    /// [`max_limit`](crate::SinceGraph::max_limit), or a cursor that is
    /// malformed or was made for another order, key type or `since`
    /// (field `"cursor"`).
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
        let mut q = self.to_statement();
        let key = g.key.expr();
        let change = g.root_change.expr();
        q.expr_as(key.clone(), Alias::new(SINCE_KEY))
            .expr_as(change.clone(), Alias::new(SINCE_AT));
        match req.order {
            PageOrder::Key => {
                if let Some(c) = after {
                    q.and_where(key.clone().gt(c.key.param()));
                }
                q.order_by_expr(key, Order::Asc);
            }
            PageOrder::ChangeTime => {
                if let Some(c) = after {
                    let cond = match c.at {
                        Some(micros) => {
                            let at = micros_param(&g.root_change, micros)?;
                            Expr::tuple([change.clone(), key.clone()])
                                .gt(Expr::tuple([at, c.key.param()]))
                                .or(change.clone().is_null())
                        }
                        None => change.clone().is_null().and(key.clone().gt(c.key.param())),
                    };
                    q.and_where(cond);
                }
                q.order_by_expr(change, Order::Asc)
                    .order_by_expr(key, Order::Asc);
            }
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
        let rows = e.query(&q).await?;
        let mut page = SincePage {
            rows: Vec::with_capacity(rows.len()),
            keys: Vec::with_capacity(rows.len()),
            next: None,
        };
        let mut last_at = None;
        for row in &rows {
            page.rows.push(T::from_row(row)?);
            page.keys
                .push(row.try_get::<K>(ColumnIndex::Name(SINCE_KEY))?);
            last_at = match self.graph().root_change {
                ChangeColumn::Timestamptz(_) => row
                    .try_get::<Option<DateTime<Utc>>>(ColumnIndex::Name(SINCE_AT))?
                    .map(|t| t.timestamp_micros()),
                ChangeColumn::Timestamp(_) => row
                    .try_get::<Option<NaiveDateTime>>(ColumnIndex::Name(SINCE_AT))?
                    .map(|t| t.and_utc().timestamp_micros()),
            };
        }
        if rows.len() as i64 == req.limit {
            if let Some(key) = page.keys.last() {
                let at = match req.order {
                    PageOrder::Key => None,
                    PageOrder::ChangeTime => last_at,
                };
                page.next = Some(self.encode_cursor(req.order, at, key));
            }
        }
        Ok(page)
    }
}

/// A cursor time as a parameter of the root change column's type.
fn micros_param(col: &ChangeColumn, micros: i64) -> Result<Expr> {
    let t = DateTime::<Utc>::from_timestamp_micros(micros).ok_or_else(|| bad_cursor("bad time"))?;
    Ok(match col {
        ChangeColumn::Timestamptz(_) => t.param(),
        ChangeColumn::Timestamp(_) => t.naive_utc().param(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip_and_strictness() {
        let s = "sc1|k|int8|0|-|42";
        assert_eq!(unhex(&hex(s.as_bytes())).unwrap(), s.as_bytes());
        assert!(unhex("").is_none());
        assert!(unhex("abc").is_none());
        assert!(unhex("AB").is_none());
        assert!(unhex("zz").is_none());
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
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    /// Hex-encodes hand-made cursor text, to test the parser's checks.
    pub(crate) fn hex_of(text: &str) -> String {
        super::hex(text.as_bytes())
    }
}
