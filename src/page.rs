//! One paging model for every family: a [`PageRequest`] in, a [`Page`] of
//! typed rows, their keys and an opaque, query-bound, tamper-evident cursor
//! out. Pages are keyset pages (each continues strictly after the last row
//! of the previous one): no state is kept on the server, and a deep page
//! costs what the first one does.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use postgres_types::FromSqlOwned;
use uuid::Uuid;

use crate::ddl::{fnv1a, FNV_OFFSET};
use crate::since::in_pg_range;
use crate::types::SqlType;
use crate::{Error, Result};

/// The order pages walk the matching rows in.
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
    pub(crate) fn tag(self) -> u8 {
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
    pub(crate) limit: i64,
    pub(crate) order: PageOrder,
    pub(crate) after: Option<String>,
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

    /// Continues after a page: its [`Page::next`] cursor.
    ///
    /// A cursor carries the last row's key (and change time, for
    /// [`PageOrder::ChangeTime`]), a fingerprint of the query it was made
    /// for (tables, filters and their values, the order and the key type;
    /// not the strategy or the limit, which may change between pages) and a
    /// 64-bit checksum. It is **tamper-evident, not tamper-proof**: damage,
    /// truncation and reuse with another query are refused with
    /// [`Error::InvalidSpec`](crate::Error::InvalidSpec) (field `"cursor"`)
    /// before any SQL is sent, but the checksum is not keyed, so a client
    /// able to compute it could forge one; even a forged cursor decodes only
    /// to a key of the right type (and a time PostgreSQL can hold), bound as
    /// parameters. Sign cursors or keep them on the server if they must not
    /// be forged. A cursor is valid for the same version of pgpatterns.
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

/// One page of rows, in every family that pages
/// ([`LatestStatus::fetch_page`](crate::LatestStatus::fetch_page),
/// [`SinceQuery::fetch_page`](crate::SinceQuery::fetch_page)).
///
/// Rows decode as `T` (a tuple, a type implementing
/// [`FromRow`](crate::FromRow), or `()` when only the keys are wanted); the
/// key of each row is read from the key column by name, whatever `T` is.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Page<T, K> {
    /// The rows, decoded as `T`.
    pub rows: Vec<T>,
    /// The key of each row (for
    /// [`SinceQuery::fetch_changes`](crate::SinceQuery::fetch_changes), or
    /// to look rows up).
    pub keys: Vec<K>,
    /// The cursor for the next page ([`PageRequest::after`]); `None` on the
    /// last page. Opaque URL-safe text (base64url, at most
    /// [`MAX_CURSOR_LEN`] characters), bound to the query it was made for
    /// and tamper-evident (see [`PageRequest::after`]).
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

/// The longest cursor, in characters (cursors are ASCII), that a page hands
/// out and a request accepts. A page whose last key is too long for it (a
/// text key of about 49 000 bytes) is an error when the page is built, never
/// a cursor the next request would refuse.
pub const MAX_CURSOR_LEN: usize = 65_536;

/// The format version, the first byte of a cursor.
const CURSOR_VERSION: u8 = 2;
/// The largest cursor payload: base64url turns 3 bytes into 4 characters.
const MAX_PAYLOAD: usize = MAX_CURSOR_LEN / 4 * 3;
/// Version, order and time flag.
const HEADER: usize = 3;
/// The fingerprint and the checksum.
const HASH: usize = 8;
/// Hash seeds, so a fingerprint is never mistaken for a checksum.
pub(crate) const FINGERPRINT_SEED: u64 = 0x7067_7061_7474_6673; // "pgpattfs"
pub(crate) const CHECKSUM_SEED: u64 = 0x7067_7061_7474_6373; // "pgpattcs"

/// A decoded cursor: the last row's change time (micros, if any) and key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Cursor<K> {
    pub(crate) at: Option<i64>,
    pub(crate) key: K,
}

/// A 64-bit hash: FNV-1a with a final avalanche (MurmurHash3's `fmix64`),
/// fixed across platforms and releases. A checksum, not a MAC: it catches
/// damage and cursors reused for another query, not a forger.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hash64(u64);

impl Hash64 {
    pub(crate) fn new(seed: u64) -> Hash64 {
        Hash64(FNV_OFFSET ^ seed)
    }

    pub(crate) fn bytes(self, bytes: &[u8]) -> Hash64 {
        Hash64(fnv1a(self.0, bytes))
    }

    /// A length-prefixed part, so parts never run into each other.
    pub(crate) fn part(self, bytes: &[u8]) -> Hash64 {
        self.bytes(&(bytes.len() as u64).to_be_bytes()).bytes(bytes)
    }

    pub(crate) fn finish(self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// A 128-bit digest of `bytes` that every process computes alike (two
/// [`Hash64`]s under fixed seeds): keys of in-process caches, and the query
/// identities calibrations are exported under.
pub(crate) fn hash128(bytes: &[u8]) -> (u64, u64) {
    (
        Hash64::new(0x7067_7061_7474_6331).bytes(bytes).finish(),
        Hash64::new(0x7067_7061_7474_6332).bytes(bytes).finish(),
    )
}

/// The payload of a cursor:
///
/// ```text
/// version (1) | order (1) | has time (1) | time (8, if any)
///   | query fingerprint (8) | key text | checksum (8) of all before it
/// ```
pub(crate) fn payload(fingerprint: u64, order: PageOrder, at: Option<i64>, key: &str) -> Vec<u8> {
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
pub(crate) fn corrupted(detail: &str) -> Error {
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

/// The cursor continuing after a row with change time `at` (micros, for
/// [`PageOrder::ChangeTime`]) and key `key`.
///
/// # Errors
/// [`Error::InvalidSpec`] (field `"cursor"`) when the key is too long
/// for a cursor of [`MAX_CURSOR_LEN`] characters, or a cursor of it
/// would not be accepted back (a key type whose text does not parse back,
/// a time out of PostgreSQL's range).
pub(crate) fn encode_cursor<K: CursorKey>(
    fingerprint: u64,
    order: PageOrder,
    at: Option<i64>,
    key: &K,
) -> Result<String> {
    let text = key.to_cursor();
    let time = if at.is_some() { 8 } else { 0 };
    let len = HEADER + time + HASH + text.len() + HASH;
    if len > MAX_PAYLOAD {
        return Err(Error::spec(
            "cursor",
            format!(
                "the last row's key is too long ({} bytes as text; at most {} fit in \
                 {MAX_CURSOR_LEN} characters): page by a shorter key",
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
    let p = payload(fingerprint, order, at, &text);
    Ok(URL_SAFE_NO_PAD.encode(p))
}

pub(crate) fn decode_cursor<K: CursorKey>(
    fingerprint: u64,
    order: PageOrder,
    cursor: &str,
    differs: &str,
) -> Result<Cursor<K>> {
    if cursor.len() > MAX_CURSOR_LEN {
        return Err(corrupted(&format!(
            "too long ({} characters, at most {MAX_CURSOR_LEN})",
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
    let made_for = u64::from_be_bytes(take_u64(&mut p).ok_or_else(|| corrupted("cut short"))?);
    if made_for != fingerprint {
        return Err(foreign(differs));
    }
    let text = std::str::from_utf8(p).map_err(|_| corrupted("its key is not UTF-8"))?;
    let key = K::from_cursor(text).ok_or_else(|| corrupted("not a valid key"))?;
    Ok(Cursor { at, key })
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
