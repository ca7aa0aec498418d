//! Keyset pages of matching roots with an opaque, strictly parsed cursor.

use chrono::{DateTime, NaiveDateTime, Utc};
use sea_query::{Alias, Expr, ExprTrait, Order, PostgresQueryBuilder};

use super::change::{in_pg_range, ChangeColumn};
use super::{SinceQuery, SinceStrategy, SINCE_AT, SINCE_KEY};
use crate::exec::{run_blocking, BlockingExecutor};
use crate::exec::{ColumnIndex, Executor, FromRow, RowRead};
use crate::page::{corrupted, decode_cursor, encode_cursor, Cursor, Hash64, FINGERPRINT_SEED};
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Result};
use crate::{CursorKey, Page, PageOrder, PageRequest, Shape};

impl<K: SqlType> SinceQuery<K> {
    /// The page statement without cursor or limit: the query in `strategy`,
    /// with the key and change time, ordered.
    fn page_statement(&self, order: PageOrder) -> sea_query::SelectStatement {
        let g = self.graph();
        let mut q = self.statement();
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
    pub(crate) fn encode_cursor(&self, order: PageOrder, at: Option<i64>, key: &K) -> Result<String>
    where
        K: CursorKey,
    {
        encode_cursor(self.fingerprint(order), order, at, key)
    }

    fn decode_cursor(&self, order: PageOrder, cursor: &str) -> Result<Cursor<K>>
    where
        K: CursorKey,
    {
        decode_cursor(
            self.fingerprint(order),
            order,
            cursor,
            "query: the graph, its filters or their values, `since`, the `timestamp` \
             offset or the key type differ",
        )
    }

    /// One page of matching roots: `root.*`, then [`SINCE_KEY`] and
    /// [`SINCE_AT`] (the key and the root's change time, for the next
    /// cursor), ordered as asked, after the request's cursor.
    ///
    /// ## Cursors
    ///
    /// A cursor ([`Page::next`]) is opaque base64url text of at most
    /// [`MAX_CURSOR_LEN`](crate::MAX_CURSOR_LEN) characters. It carries the last row's key and
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
    /// );
    /// let q = graph.since(Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap());
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
        self.check()?;
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
    pub async fn fetch_page<T>(&self, e: &impl Executor, req: &PageRequest) -> Result<Page<T, K>>
    where
        K: CursorKey,
        T: FromRow + Send,
    {
        // Checks the request before `Auto` reads any statistics.
        self.page_query(req)?;
        let page_rows = |q: SinceQuery<K>| async move { e.rows(&q.page_query(req)?).await };
        let shape = Shape::Page { limit: req.limit() };
        let reference = || {
            self.clone()
                .strategy(SinceStrategy::UnionIn)
                .page_query(req)
        };
        let rows = match self.run_remembered(e, shape, reference, page_rows).await {
            Some(rows) => rows?,
            None => page_rows(self.resolve_page(e, req).await?).await?,
        };
        let mut page = Page {
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
    pub fn fetch_page_blocking<T, C>(&self, e: &mut C, req: &PageRequest) -> Result<Page<T, K>>
    where
        K: CursorKey,
        T: FromRow + Send,
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(e, async |e| self.fetch_page::<T>(e, req).await)
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
pub(crate) mod tests_support {
    use super::*;
    use crate::page::{payload, CHECKSUM_SEED};
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;

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
