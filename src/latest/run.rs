//! Running a [`LatestStatus`] through an [`Executor`]: counts and keyset
//! pages.

use postgres_types::FromSqlOwned;

use super::LatestStatus;
use crate::exec::{run_blocking, BlockingExecutor};
use crate::types::SqlType;
use crate::{Executor, Result, RowRead, Shape};

/// One keyset page of matching entities, in key order.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct LatestPage<R, K> {
    /// The rows: the entity's columns plus
    /// [`LATEST_STATUS`](super::LATEST_STATUS) and
    /// [`LATEST_AT`](super::LATEST_AT).
    pub rows: Vec<R>,
    /// The cursor for the next page (the last row's key), or `None` when
    /// this was the last page.
    pub next: Option<K>,
}

impl<S: SqlType> LatestStatus<S> {
    /// Counts the matching entities (with
    /// [`Auto`](super::LatestStrategy::Auto), in the strategy it chooses
    /// for a count).
    ///
    /// # Errors
    /// The database's error.
    pub async fn count<E: Executor>(&self, db: &E) -> Result<i64> {
        let spec = self.resolve(db, Shape::Count).await?;
        db.one_row(&spec.count_query())
            .await?
            .try_get(0usize.into())
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

    /// Fetches up to `limit` matching entities with keys greater than
    /// `after` (keyset pagination on the entity key: pass the previous
    /// page's [`next`](LatestPage::next)). Reads one row more than asked to
    /// know whether another page follows, so `next` is `None` exactly on the
    /// last page.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`](crate::Error::InvalidSpec) for `limit < 1` or
    /// a `K` that is not the key's type, before anything is sent; the
    /// database's error otherwise.
    pub async fn fetch_page<K, E>(
        &self,
        db: &E,
        limit: i64,
        after: Option<K>,
    ) -> Result<LatestPage<E::Row, K>>
    where
        K: SqlType + FromSqlOwned + Send,
        E: Executor,
    {
        self.check_page::<K>(limit)?;
        let spec = self.resolve(db, Shape::Page { limit }).await?;
        let probe = spec.page_query::<K>(limit.saturating_add(1), after)?;
        let mut rows = db.rows(&probe).await?;
        let limit = usize::try_from(limit).unwrap_or(usize::MAX);
        let next = if rows.len() > limit {
            rows.truncate(limit);
            match rows.last() {
                Some(row) => Some(row.try_get::<K>(self.key.name().as_str().into())?),
                None => None,
            }
        } else {
            None
        };
        Ok(LatestPage { rows, next })
    }

    /// [`fetch_page`](Self::fetch_page) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`fetch_page`](Self::fetch_page).
    pub fn fetch_page_blocking<K, C>(
        &self,
        db: &mut C,
        limit: i64,
        after: Option<K>,
    ) -> Result<LatestPage<C::Row, K>>
    where
        K: SqlType + FromSqlOwned + Send,
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| {
            self.fetch_page::<K, _>(db, limit, after).await
        })
    }
}
