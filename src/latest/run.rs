//! Running a [`LatestStatus`] through an [`Executor`]: counts and keyset
//! pages.

use sea_query::PostgresQueryBuilder;

use super::LatestStatus;
use crate::exec::{run_blocking, BlockingExecutor};
use crate::page::{decode_cursor, encode_cursor, Hash64, FINGERPRINT_SEED};
use crate::types::SqlType;
use crate::{CursorKey, Error, FromRow, Page, PageOrder, PageRequest};
use crate::{Executor, Result, RowRead, Shape};

impl<S: SqlType> LatestStatus<S> {
    /// Counts the matching entities (with
    /// [`Auto`](super::LatestStrategy::Auto), in the strategy it chooses
    /// for a count).
    ///
    /// # Errors
    /// As [`check`](Self::check), before anything is sent; the database's
    /// error.
    pub async fn count<E: Executor>(&self, db: &E) -> Result<i64> {
        self.run_resolved(db, Shape::Count, |spec| async move {
            db.one_row(&spec.count_built())
                .await?
                .try_get(0usize.into())
        })
        .await
    }

    /// [`count`](Self::count) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`count`](Self::count).
    pub fn count_blocking<C>(&self, db: &mut C) -> Result<i64>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.count(db).await)
    }

    /// One keyset page of matching entities, in key order: rows decoded as
    /// `T` (the entity's columns, then
    /// [`LATEST_STATUS`](super::LATEST_STATUS) and
    /// [`LATEST_AT`](super::LATEST_AT); `()` for keys only), each row's key
    /// (read from the key column by name) and the cursor of the next page
    /// ([`PageRequest::after`]: opaque, bound to this spec, tamper-evident).
    /// Reads one row more than asked to know whether another page follows,
    /// so `next` is `None` exactly on the last page. Pages are in key order
    /// ([`PageOrder::Key`]).
    ///
    /// ```no_run
    /// # async fn demo(client: &tokio_postgres::Client, spec: pgpatterns::LatestStatus<String>) -> pgpatterns::Result<()> {
    /// use pgpatterns::PageRequest;
    /// let mut req = PageRequest::new(50);
    /// loop {
    ///     let page = spec.fetch_page::<(), i64>(client, &req).await?; // keys only
    ///     println!("{:?}", page.keys);
    ///     match page.next {
    ///         Some(cursor) => req = req.after(cursor),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// As [`check`](Self::check), and
    /// [`Error::InvalidSpec`](crate::Error::InvalidSpec) before anything is
    /// sent for a limit below 1, [`PageOrder::ChangeTime`], a `K` that is not
    /// the key's type, or a cursor that is damaged or was made for another
    /// query; the database's error; [`Error::Decode`](crate::Error::Decode)
    /// when a row is not a `T`.
    pub async fn fetch_page<T, K>(
        &self,
        db: &impl Executor,
        req: &PageRequest,
    ) -> Result<Page<T, K>>
    where
        T: FromRow + Send,
        K: CursorKey + Send,
    {
        let after = self.decode_after::<K>(req)?;
        let probe_limit = req.limit.saturating_add(1);
        let shape = Shape::Page { limit: req.limit };
        let mut rows = self
            .run_resolved(db, shape, |spec| {
                let probe = spec.page_built(probe_limit, after.clone().map(SqlType::param));
                async move { db.rows(&probe).await }
            })
            .await?;
        let limit = usize::try_from(req.limit).unwrap_or(usize::MAX);
        let more = rows.len() > limit;
        rows.truncate(limit);
        let key = self.key.name().as_str();
        let mut page = Page {
            rows: Vec::with_capacity(rows.len()),
            keys: Vec::with_capacity(rows.len()),
            next: None,
        };
        for row in &rows {
            page.rows.push(T::from_row(row)?);
            page.keys.push(row.try_get::<K>(key.into())?);
        }
        if more {
            if let Some(last) = page.keys.last() {
                page.next = Some(encode_cursor(
                    self.fingerprint::<K>(),
                    PageOrder::Key,
                    None,
                    last,
                )?);
            }
        }
        Ok(page)
    }

    /// [`fetch_page`](Self::fetch_page) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`fetch_page`](Self::fetch_page).
    pub fn fetch_page_blocking<T, K, C>(&self, db: &mut C, req: &PageRequest) -> Result<Page<T, K>>
    where
        T: FromRow + Send,
        K: CursorKey + Send,
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.fetch_page::<T, K>(db, req).await)
    }

    /// The request's checks (limit, order, key type) and its cursor's key.
    pub(crate) fn decode_after<K: CursorKey>(&self, req: &PageRequest) -> Result<Option<K>> {
        self.check()?;
        Error::at_least("limit", req.limit, 1)?;
        if req.order != PageOrder::Key {
            return Err(Error::spec(
                "order",
                "latest-status pages are in key order (PageOrder::Key)",
            ));
        }
        self.key.check_type::<K>("page", "key type K")?;
        req.after
            .as_deref()
            .map(|c| {
                decode_cursor::<K>(
                    self.fingerprint::<K>(),
                    PageOrder::Key,
                    c,
                    "query: the tables, the predicate or its values, `as_of`, \
                     `missing_as`, the history filters or the key type differ",
                )
                .map(|c| c.key)
            })
            .transpose()
    }

    /// What a cursor is bound to: the spec's statement in one fixed history
    /// strategy (so `Auto` and every explicit strategy share cursors), with
    /// its values, and the key type.
    fn fingerprint<K: SqlType>(&self) -> u64 {
        let shape = self
            .with_strategy(super::LatestStrategy::DistinctOn)
            .statement()
            .to_string(PostgresQueryBuilder);
        Hash64::new(FINGERPRINT_SEED)
            .part(b"latest")
            .part(K::SQL_TYPE.as_bytes())
            .part(shape.as_bytes())
            .finish()
    }
}
