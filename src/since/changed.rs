//! "What changed": for the roots of a page, which relations changed since
//! `since` and the newest change time of each.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sea_query::extension::postgres::PgFunc;
use sea_query::{Alias, Expr, ExprTrait, Func, JoinType, Query, SelectStatement, UnionType};

use super::{on_expr, SinceQuery};
use crate::exec::{run_blocking, BlockingExecutor};
use crate::exec::{ColumnIndex, Executor, RowRead};
use crate::types::SqlType;
use crate::CursorKey;
use crate::{BuiltQuery, Error, Result};

/// One relation of one root that changed since `since`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change<K> {
    /// The root key.
    pub key: K,
    /// The label of the path (the root table's name for the root row
    /// itself).
    pub relation: Arc<str>,
    /// The newest change time on that path (`timestamp` columns read at the
    /// graph's offset).
    pub newest: DateTime<Utc>,
}

const KEY: &str = "key";
const REL: &str = "rel";
const NEWEST: &str = "newest";

impl<K: SqlType> SinceQuery<K> {
    /// One query listing, for the given root keys (a page's
    /// [`keys`](crate::Page::keys)), each relation that changed at or
    /// after `since` and its newest change time: columns `key`, `rel` (0 for
    /// the root row itself, then 1, 2, … for the paths in the order they
    /// were added) and `newest` (`timestamptz`).
    ///
    /// It is a `UNION ALL` of one branch per path, each starting from the
    /// root rows `WHERE key = ANY($keys)`, so the work is bounded by the
    /// page, not by the size of the tables (with indexes on the foreign
    /// keys, see [`index_advice`](crate::SinceGraph::index_advice)).
    ///
    /// # Errors
    /// As [`check`](Self::check), and [`Error::InvalidSpec`] for more keys
    /// than the graph's
    /// [`max_limit`](crate::SinceGraph::max_limit).
    pub fn changes_query(&self, keys: &[K]) -> Result<BuiltQuery> {
        self.check()?;
        let g = self.graph();
        if keys.len() as i64 > g.max_limit {
            return Err(Error::spec(
                "keys",
                format!(
                    "at most {} keys (the page limit cap), got {}",
                    g.max_limit,
                    keys.len()
                ),
            ));
        }
        let in_keys = || g.key.expr().eq(PgFunc::any(K::array_param(keys.to_vec())));
        let mut q = Query::select();
        q.expr_as(g.key.expr(), Alias::new(KEY))
            .expr_as(0i32.param(), Alias::new(REL))
            .expr_as(
                g.root_change.instant_of(g.root_change.expr(), &g.offset),
                Alias::new(NEWEST),
            )
            .from(g.root.table_ref())
            .and_where(in_keys())
            .and_where(g.root_change.changed_since(&self.since));
        let (paths, _) = g.resolve();
        for (i, p) in paths.iter().enumerate() {
            let rel = i32::try_from(i + 1).unwrap_or(i32::MAX);
            let mut branch: SelectStatement = Query::select();
            branch
                .expr_as(g.key.expr(), Alias::new(KEY))
                .expr_as(rel.param(), Alias::new(REL))
                .expr_as(
                    p.change
                        .instant_of(Expr::from(Func::max(p.change.expr())), &g.offset),
                    Alias::new(NEWEST),
                )
                .from(g.root.table_ref());
            for h in &p.hops {
                branch.join(JoinType::InnerJoin, h.to_table().table_ref(), on_expr(h));
            }
            branch
                .and_where(in_keys())
                .and_where(p.change.changed_since(&self.since))
                .group_by_col(g.key.col_ref());
            q.union(UnionType::All, branch);
        }
        Ok(BuiltQuery::new(&q))
    }

    /// Runs [`changes_query`](Self::changes_query): every relation of the
    /// given roots that changed, in key order as given, then in the order the
    /// relations were added (the root itself first). Sends nothing for an
    /// empty list.
    ///
    /// # Errors
    /// As for [`changes_query`](Self::changes_query); [`Error::Database`] or
    /// [`Error::Decode`] from the executor.
    pub async fn fetch_changes<E: Executor>(&self, e: &E, keys: &[K]) -> Result<Vec<Change<K>>>
    where
        K: CursorKey + PartialEq,
    {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let q = self.changes_query(keys)?;
        let labels = self.graph().labels();
        let mut out: Vec<(usize, usize, Change<K>)> = Vec::new();
        for row in e.rows(&q).await? {
            let key: K = row.try_get(ColumnIndex::Name(KEY))?;
            let rel: i32 = row.try_get(ColumnIndex::Name(REL))?;
            let newest: DateTime<Utc> = row.try_get(ColumnIndex::Name(NEWEST))?;
            let rel = usize::try_from(rel)
                .ok()
                .filter(|r| *r < labels.len())
                .ok_or_else(|| Error::spec("rel", format!("unknown relation index {rel}")))?;
            let pos = keys.iter().position(|k| *k == key).unwrap_or(keys.len());
            out.push((
                pos,
                rel,
                Change {
                    key,
                    relation: Arc::from(labels[rel]),
                    newest,
                },
            ));
        }
        out.sort_by_key(|(pos, rel, _)| (*pos, *rel));
        Ok(out.into_iter().map(|(_, _, c)| c).collect())
    }

    /// [`fetch_changes`](Self::fetch_changes) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`fetch_changes`](Self::fetch_changes).
    pub fn fetch_changes_blocking<C>(&self, e: &mut C, keys: &[K]) -> Result<Vec<Change<K>>>
    where
        K: CursorKey + PartialEq,
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(e, async |e| self.fetch_changes(e, keys).await)
    }
}
