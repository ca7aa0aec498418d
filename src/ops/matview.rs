//! Materialized views of reports: a [`Rollup`], a [`TopN`] or any
//! `SELECT` ([`ViewQuery`]) stored as a `MATERIALIZED VIEW`, refreshed
//! without blocking readers, with its freshness at hand, and read back as
//! the same typed rows the report returns — so a caller switches a
//! dashboard from the live report to its stored copy without changing its
//! row code.
//!
//! ```no_run
//! # #[cfg(feature = "tokio-postgres")]
//! # async fn demo(mut client: tokio_postgres::Client) -> pgpatterns::Result<()> {
//! use std::time::Duration;
//! use pgpatterns::ops::matview::MatView;
//! use pgpatterns::ops::TopN;
//! use pgpatterns::{column, table, Decimal};
//!
//! let (users, orders) = (table!("users"), table!("orders"));
//! let report = TopN::<i64, Decimal>::new(
//!     &column!(users, "id": i64),
//!     &column!(orders, "user_id": i64),
//!     &column!(orders, "total_amount": Decimal),
//!     10,
//! )
//! // Relative to now() at each refresh, not fixed when the view is made.
//! .window_last(&column!(orders, "created_at": chrono::DateTime<chrono::Utc>), chrono::Duration::days(30))
//! .where_eq(&column!(orders, "status": String), "completed");
//!
//! let view = MatView::new(&table!("top_spenders_30d"), report);
//! view.create(&mut client).await?; // idempotent; populated at once
//! let rows = view.fetch_all(&client).await?; // Vec<TopRow<i64, Decimal>>
//! if !view.freshness(&client).await?.is_fresh(Duration::from_secs(600)) {
//!     view.refresh(&mut client).await?; // CONCURRENTLY: readers never wait
//! }
//! # let _ = rows;
//! # Ok(()) }
//! ```
//!
//! # Values in the definition
//!
//! A materialized view's definition is stored SQL and cannot hold bind
//! parameters, so this is the one place where pgpatterns writes values into
//! SQL text: they are rendered by sea-query's own PostgreSQL literal
//! writer (`E'…'` strings with `\` and `'` escaped, numbers, timestamps
//! with microseconds), and every value of the crate's builders sits inside
//! a `CAST(… AS type)`, so it keeps its exact type. Values that cannot be
//! written as literals are refused before anything is sent: text with a
//! NUL character and non-finite floats. Tests compare a view's rows with
//! the parameterized report's rows for values full of quotes, backslashes,
//! `$$` and newlines.
//!
//! # Windows
//!
//! A window given as a value (`TopN::window_since(col, t)`, `col.gte(t)`)
//! is **fixed when the view is created**: refreshing never moves it. A
//! window given relative to the statement's time
//! ([`TopN::window_last`], [`Column::within_last`](crate::Column::within_last) in
//! a [`Rollup::filter`]) is evaluated by the server at each refresh, so
//! "the last 30 days" always means the 30 days before the last refresh.
//!
//! # The unique key
//!
//! `REFRESH MATERIALIZED VIEW CONCURRENTLY` needs a unique index on plain
//! columns. pgpatterns derives it from the report: for a [`Rollup`], its
//! dimensions **and** its level column ([`GROUPING_ALIAS`], the
//! `GROUPING()` bitmask) with `NULLS NOT DISTINCT` (PostgreSQL 15): a
//! subtotal row and a detail row with a real NULL differ by their level,
//! and two NULL groups of one level cannot both exist. For a [`TopN`], the
//! entity key. For a [`ViewQuery`], the columns you name.
//!
//! # Bookkeeping
//!
//! Each refresh is recorded in a small table pgpatterns creates and owns
//! next to the view ([`DEFAULT_BOOKKEEPING_TABLE`], one row per view, keyed
//! by the view's OID), written in the refresh's own transaction: when it
//! started, how long it took, whether it ran concurrently, and a snapshot
//! of the cumulative write counters of every table the view reads. A table
//! rather than a `COMMENT` on the view: it is written with bound values in
//! the refresh's transaction (never more DDL on the view readers use), it
//! can be read with a plain `SELECT` (also on a standby), and the comment
//! stays free for the ownership mark.
//!
//! # Freshness
//!
//! [`MatView::freshness`] reports the age of the last refresh, and whether
//! the tables the view reads (found in the catalog: `pg_depend` of the
//! view's rule, partitioned tables expanded to their partitions) have
//! changed since, by comparing `n_tup_ins + n_tup_upd + n_tup_del` of
//! `pg_stat_all_tables` and each table's file node (which `TRUNCATE`
//! changes) with the snapshot taken when the refresh started. One catalog
//! query, no scan of the tables. Its limits:
//!
//! - the statistics are **asynchronous**: a session publishes its counts
//!   when it goes idle, at most once a second (PostgreSQL 15). So a change
//!   committed a moment ago may not be seen yet (fresh is said for up to
//!   about a second too long), and a write committed just before a refresh
//!   may be counted after it (stale is said, and the next refresh clears
//!   it);
//! - counts include writes of **rolled-back** transactions and updates that
//!   changed nothing, so "changed" may be said when the view's rows are the
//!   same (never the other way round, except for the delay above);
//! - after the statistics are **reset** (`pg_stat_reset()`, a crash) the
//!   counts go backwards: the answer is [`BaseChanges::Unknown`];
//! - on a **standby** the counters are the standby's own: the answer is
//!   `Unknown` (the age is still right);
//! - relations without counters (a view the view reads) make it `Unknown`.
//!
//! # Ownership
//!
//! The view carries a mark in its `COMMENT` (its name and a digest of its
//! definition), its index and the bookkeeping table carry theirs.
//! [`create`](MatView::create) never replaces or drops anything: it
//! refuses ([`Error::ObjectConflict`]) when the name is taken by a relation
//! pgpatterns did not create as this view, or by this view with another
//! definition (drop it first), and when the index or bookkeeping name is
//! taken by another object. [`drop`](MatView::drop) drops only a view
//! pgpatterns created under this name. A guard repeats these checks inside
//! the DDL's transaction, under an advisory lock, so a concurrent change
//! cannot slip in between.

use std::fmt;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use postgres_types::FromSqlOwned;
use sea_query::{
    Expr, Index, NullOrdering, Order, PostgresQueryBuilder, Query, SelectStatement, Value,
};

use super::top_n::{TopN, TopRow};
use crate::ddl::{derived_name, dollar_quote, quote, quote_beside, quote_table, string_literal};
use crate::exec::{run_blocking, run_blocking_mut, BlockingExecutor, ColumnIndex};
use crate::rollup::{Rollup, RollupRow, Summable, GROUPING_ALIAS};
use crate::schema::{Ident, Table};
use crate::spec::Problems;
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Executor, FromRow, Result, RowRead, Transactional};

/// The bookkeeping table's default name, created in the view's schema.
pub const DEFAULT_BOOKKEEPING_TABLE: &str = "pgpatterns_matview_refresh";

/// A report that can be stored as a materialized view and read back as its
/// own rows: implemented by [`Rollup`], [`TopN`] and [`ViewQuery`].
pub trait Materialize {
    /// The rows the report returns, and the view returns too.
    type Row;

    /// The report's statement (checked: the report's first problem).
    ///
    /// # Errors
    /// The report's [`check`](Rollup::check) error.
    fn view_statement(&self) -> Result<SelectStatement>;

    /// The statement's output column names, in order; the view's columns
    /// get these names.
    fn view_columns(&self) -> Vec<Ident>;

    /// The columns of the unique index `REFRESH … CONCURRENTLY` needs
    /// (created `NULLS NOT DISTINCT`): one row per distinct combination.
    fn view_key(&self) -> Vec<Ident>;

    /// Appends the report's `ORDER BY`, over output column names, to a
    /// statement reading the view.
    fn view_order(&self, q: &mut SelectStatement);

    /// Decodes a row read from the view (columns in
    /// [`view_columns`](Self::view_columns) order).
    ///
    /// # Errors
    /// [`Error::Decode`] when the row does not have the report's columns.
    fn decode_view_row<R: RowRead>(&self, row: &R) -> Result<Self::Row>;
}

impl Materialize for Rollup {
    type Row = RollupRow;

    fn view_statement(&self) -> Result<SelectStatement> {
        self.to_statement()
    }

    fn view_columns(&self) -> Vec<Ident> {
        let mut names: Vec<Ident> = self.names().iter().cloned().collect();
        names.push(Ident::fixed(GROUPING_ALIAS));
        names
    }

    /// The dimensions and the level column: a subtotal's NULL is told from
    /// a real NULL by its level.
    fn view_key(&self) -> Vec<Ident> {
        let mut key = self.dim_names();
        key.push(Ident::fixed(GROUPING_ALIAS));
        key
    }

    fn view_order(&self, q: &mut SelectStatement) {
        self.order(q);
    }

    fn decode_view_row<R: RowRead>(&self, row: &R) -> Result<RollupRow> {
        self.decode(row)
    }
}

impl<K, A> Materialize for TopN<K, A>
where
    K: SqlType + FromSqlOwned,
    A: Summable,
    A::Sum: FromSqlOwned,
{
    type Row = TopRow<K, A::Sum>;

    fn view_statement(&self) -> Result<SelectStatement> {
        self.to_statement()
    }

    fn view_columns(&self) -> Vec<Ident> {
        self.output_names()
    }

    /// The entity key (one row per entity).
    fn view_key(&self) -> Vec<Ident> {
        self.output_names().into_iter().take(1).collect()
    }

    fn view_order(&self, q: &mut SelectStatement) {
        self.order_output(q);
    }

    fn decode_view_row<R: RowRead>(&self, row: &R) -> Result<TopRow<K, A::Sum>> {
        self.decode(row)
    }
}

/// Any `SELECT` as a materialized view source: its output column names,
/// the columns that make a row unique, an order to read it back in, and
/// rows decoded as `T` ([`FromRow`]: a tuple of the columns' types).
///
/// ```
/// use pgpatterns::ops::matview::{MatView, ViewQuery};
/// use pgpatterns::sea_query::{Expr, Order, Query};
/// use pgpatterns::{column, table};
/// let orders = table!("orders");
/// let status = column!(orders, "status": String);
/// let statement = Query::select()
///     .column(status.col_ref())
///     .expr(Expr::cust("COUNT(*)"))
///     .from(orders.table_ref())
///     .group_by_col(status.col_ref())
///     .to_owned();
/// let per_status = ViewQuery::<(String, i64)>::new(statement, ["status", "orders"])
///     .key(["status"])
///     .order_by("status", Order::Asc);
/// let view = MatView::new(&table!("orders_per_status"), per_status);
/// assert!(view.definition()?.starts_with(r#"SELECT "orders"."status", COUNT(*)"#));
/// # Ok::<(), pgpatterns::Error>(())
/// ```
pub struct ViewQuery<T> {
    statement: SelectStatement,
    columns: Vec<Ident>,
    key: Vec<Ident>,
    order: Vec<(Ident, Order)>,
    problems: Problems,
    row: PhantomData<fn() -> T>,
}

impl<T> Clone for ViewQuery<T> {
    fn clone(&self) -> Self {
        ViewQuery {
            statement: self.statement.clone(),
            columns: self.columns.clone(),
            key: self.key.clone(),
            order: self.order.clone(),
            problems: self.problems.clone(),
            row: PhantomData,
        }
    }
}

impl<T> fmt::Debug for ViewQuery<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ViewQuery")
            .field("columns", &self.columns)
            .field("key", &self.key)
            .field("order", &self.order)
            .finish_non_exhaustive()
    }
}

impl<T: FromRow> ViewQuery<T> {
    /// `statement`, whose output columns are named `columns` in the view
    /// (as many as it returns). Invalid names are refused when the view is
    /// checked.
    pub fn new<I, S>(statement: SelectStatement, columns: I) -> ViewQuery<T>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut problems = Problems::default();
        let columns = columns
            .into_iter()
            .filter_map(|c| problems.note(Ident::new(c)))
            .collect();
        ViewQuery {
            statement,
            columns,
            key: Vec::new(),
            order: Vec::new(),
            problems,
            row: PhantomData,
        }
    }

    /// The columns whose values make a row unique (the unique index of
    /// concurrent refreshes). Without a key, or with a name that is not a
    /// column, the view is refused when checked.
    pub fn key<I, S>(mut self, columns: I) -> ViewQuery<T>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for c in columns {
            if let Some(c) = self.problems.note(Ident::new(c)) {
                self.key.push(c);
            }
        }
        self
    }

    /// Reads rows back ordered by `column` (NULLs last); repeat for more
    /// columns.
    pub fn order_by(mut self, column: impl AsRef<str>, order: Order) -> ViewQuery<T> {
        if let Some(c) = self.problems.note(Ident::new(column)) {
            self.order.push((c, order));
        }
        self
    }
}

impl<T: FromRow> Materialize for ViewQuery<T> {
    type Row = T;

    fn view_statement(&self) -> Result<SelectStatement> {
        self.problems.check()?;
        if self.key.is_empty() {
            return Err(Error::spec(
                "key",
                "name the columns that make a row unique: .key([\"id\"])",
            ));
        }
        for c in self.key.iter().chain(self.order.iter().map(|(c, _)| c)) {
            if !self.columns.contains(c) {
                return Err(Error::spec(
                    "key",
                    format!("{c:?} is not one of the view's columns"),
                ));
            }
        }
        Ok(self.statement.clone())
    }

    fn view_columns(&self) -> Vec<Ident> {
        self.columns.clone()
    }

    fn view_key(&self) -> Vec<Ident> {
        self.key.clone()
    }

    fn view_order(&self, q: &mut SelectStatement) {
        for (c, o) in &self.order {
            q.order_by_expr_with_nulls(Expr::col(c.clone()), o.clone(), NullOrdering::Last);
        }
    }

    fn decode_view_row<R: RowRead>(&self, row: &R) -> Result<T> {
        T::from_row(row)
    }
}

/// How [`MatView::refresh_with`] refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RefreshMode {
    /// `CONCURRENTLY` when the view is populated (readers keep reading the
    /// previous rows), a plain refresh when it never was (`CONCURRENTLY`
    /// cannot fill an empty view).
    #[default]
    Auto,
    /// `REFRESH MATERIALIZED VIEW CONCURRENTLY`: computes the new rows, then
    /// applies the difference; readers are never blocked. Fails on a view
    /// that was never populated.
    Concurrently,
    /// `REFRESH MATERIALIZED VIEW`: rewrites the view under an exclusive
    /// lock; readers wait until it commits. Faster when most rows change.
    Plain,
}

/// What a refresh did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefreshReport {
    /// `true` when it ran `CONCURRENTLY`.
    pub concurrently: bool,
    /// Wall time of the refresh's transaction, as this process measured it.
    pub elapsed: Duration,
}

/// The last recorded refresh of a view.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefreshRecord {
    /// When the refresh started (server clock): the view holds every change
    /// committed before this instant.
    pub started_at: DateTime<Utc>,
    /// How long it took (server clock).
    pub duration: Duration,
    /// `true` when it ran `CONCURRENTLY`.
    pub concurrently: bool,
    /// Refreshes recorded for this view (the one at creation included).
    pub refreshes: i64,
}

/// Whether the tables a view reads changed since its last refresh (see the
/// [module docs](self) for how this is known, and its limits).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum BaseChanges {
    /// No write counted on any table the view reads.
    Unchanged,
    /// Writes were counted on these tables (or they were truncated,
    /// rewritten or dropped).
    Changed {
        /// The tables, as PostgreSQL prints their names.
        tables: Vec<String>,
    },
    /// Cannot be told: why.
    Unknown {
        /// Why (never refreshed by pgpatterns, statistics reset, read on a
        /// standby, counting disabled, a relation without counters).
        reason: String,
    },
}

/// How fresh a materialized view is: [`MatView::freshness`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Freshness {
    /// `false` for a view created without data and never refreshed (reading
    /// it fails).
    pub populated: bool,
    /// The last refresh pgpatterns recorded, if any.
    pub last_refresh: Option<RefreshRecord>,
    /// Time since the last refresh started, by the server's clock.
    pub age: Option<Duration>,
    /// Whether the tables it reads changed since.
    pub base: BaseChanges,
}

impl Freshness {
    /// `Some(true)` when the tables the view reads are known to have
    /// changed since the last refresh, `Some(false)` when they are known
    /// not to have, `None` when it cannot be told.
    #[must_use]
    pub fn base_changed(&self) -> Option<bool> {
        match self.base {
            BaseChanges::Unchanged => Some(false),
            BaseChanges::Changed { .. } => Some(true),
            BaseChanges::Unknown { .. } => None,
        }
    }

    /// Populated, refreshed at most `max_age` ago, and no change of its
    /// tables known since (an unknown answer does not make it stale: the
    /// age decides then).
    #[must_use]
    pub fn is_fresh(&self, max_age: Duration) -> bool {
        self.populated
            && self.age.is_some_and(|a| a <= max_age)
            && self.base_changed() != Some(true)
    }
}

/// A report stored as a materialized view: created and dropped safely,
/// refreshed concurrently with a record of each refresh, checked for
/// freshness, read back as the report's own rows. See the [module
/// docs](self).
///
/// Built like every spec: steps take `self` and never fail; problems
/// surface from [`check`](Self::check) and every verb, before any SQL is
/// sent.
#[must_use = "a materialized view does nothing until it is created or read"]
pub struct MatView<S> {
    source: S,
    view: Table,
    book: Table,
    populate: bool,
    problems: Problems,
}

impl<S: Clone> Clone for MatView<S> {
    fn clone(&self) -> Self {
        MatView {
            source: self.source.clone(),
            view: self.view.clone(),
            book: self.book.clone(),
            populate: self.populate,
            problems: self.problems.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for MatView<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MatView")
            .field("view", &self.view)
            .field("bookkeeping", &self.book)
            .field("populate", &self.populate)
            .field("source", &self.source)
            .finish()
    }
}

/// The catalog state of the view's name, the index's and the bookkeeping
/// table's.
struct Catalog {
    /// `relkind` and comment of the relation named like the view.
    view: Option<(String, Option<String>, bool)>,
    /// The index of that name: the relation it is on (as text), its comment.
    index: Option<(Option<String>, Option<String>)>,
    /// The comment of the relation named like the bookkeeping table.
    book: Option<Option<String>>,
}

/// The one SQL text of the catalog check: bound names, no values in text.
const CATALOG_SQL: &str = "\
SELECT v.relkind::text, obj_description(v.oid, 'pg_class'), v.relispopulated, \
       i.oid IS NOT NULL, \
       (SELECT x.indrelid::regclass::text FROM pg_catalog.pg_index x WHERE x.indexrelid = i.oid), \
       obj_description(i.oid, 'pg_class'), \
       b.oid IS NOT NULL, obj_description(b.oid, 'pg_class'), \
       v.oid = (SELECT x.indrelid FROM pg_catalog.pg_index x WHERE x.indexrelid = i.oid) \
FROM (SELECT 1) AS one \
LEFT JOIN pg_catalog.pg_class v ON v.oid = to_regclass($1::text) \
LEFT JOIN pg_catalog.pg_class i ON i.oid = to_regclass($2::text) \
LEFT JOIN pg_catalog.pg_class b ON b.oid = to_regclass($3::text)";

/// Records a refresh's start: the view, the time, the mode, and the
/// tables it reads with their write counters and file nodes. `$1` the
/// view's name, `$2` concurrently. `{book}` is the quoted bookkeeping table.
const RECORD_START: &str = "\
WITH pgp_dep AS (
  SELECT DISTINCT d.refobjid AS relid
  FROM pg_catalog.pg_depend d
  JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid
  WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass
    AND d.refclassid = 'pg_catalog.pg_class'::regclass
    AND r.ev_class = to_regclass($1::text)
    AND d.refobjid <> r.ev_class
), pgp_base AS (
  SELECT DISTINCT COALESCE(p.relid, d.relid) AS relid
  FROM pgp_dep d
  LEFT JOIN LATERAL pg_catalog.pg_partition_tree(d.relid) p ON p.isleaf
)
INSERT INTO {book} AS b (view_oid, view_name, started_at, finished_at, ran_concurrently, refreshes,
                         base_relids, base_tuples, base_filenodes)
SELECT to_regclass($1::text)::oid, $1::text, clock_timestamp(), clock_timestamp(), $2::bool, 1,
       ARRAY(SELECT relid FROM pgp_base ORDER BY relid),
       ARRAY(SELECT (SELECT t.n_tup_ins + t.n_tup_upd + t.n_tup_del
                     FROM pg_catalog.pg_stat_all_tables t WHERE t.relid = pgp_base.relid)
             FROM pgp_base ORDER BY relid),
       ARRAY(SELECT pg_catalog.pg_relation_filenode(relid) FROM pgp_base ORDER BY relid)
ON CONFLICT (view_oid) DO UPDATE SET
  view_name = EXCLUDED.view_name, started_at = EXCLUDED.started_at,
  finished_at = EXCLUDED.finished_at, ran_concurrently = EXCLUDED.ran_concurrently,
  refreshes = b.refreshes + 1, base_relids = EXCLUDED.base_relids,
  base_tuples = EXCLUDED.base_tuples, base_filenodes = EXCLUDED.base_filenodes";

/// The freshness query: `$1` the view's name. `{book}` as above.
const FRESHNESS: &str = "\
SELECT v.relispopulated, b.started_at, b.finished_at, b.ran_concurrently, b.refreshes,
       EXTRACT(EPOCH FROM clock_timestamp() - b.started_at)::float8,
       pg_catalog.pg_is_in_recovery(), current_setting('track_counts')::bool,
       ARRAY(SELECT s.relid::regclass::text
             FROM unnest(b.base_relids, b.base_tuples, b.base_filenodes) AS s(relid, n, node)
             LEFT JOIN pg_catalog.pg_stat_all_tables t ON t.relid = s.relid
             WHERE s.n IS NOT NULL
               AND (t.relid IS NULL OR t.n_tup_ins + t.n_tup_upd + t.n_tup_del > s.n
                    OR pg_catalog.pg_relation_filenode(s.relid) IS DISTINCT FROM s.node)
             ORDER BY 1),
       ARRAY(SELECT s.relid::regclass::text
             FROM unnest(b.base_relids, b.base_tuples) AS s(relid, n)
             JOIN pg_catalog.pg_stat_all_tables t ON t.relid = s.relid
             WHERE t.n_tup_ins + t.n_tup_upd + t.n_tup_del < s.n
             ORDER BY 1),
       ARRAY(SELECT s.relid::regclass::text
             FROM unnest(b.base_relids, b.base_tuples) AS s(relid, n)
             WHERE s.n IS NULL ORDER BY 1)
FROM pg_catalog.pg_class v
LEFT JOIN {book} b ON b.view_oid = v.oid
WHERE v.oid = to_regclass($1::text)";

impl<S: Materialize> MatView<S> {
    /// The report `source` stored as the materialized view `view` (a name,
    /// optionally schema-qualified; an aliased table is refused when the
    /// view is checked). Refreshes are recorded in
    /// [`DEFAULT_BOOKKEEPING_TABLE`] in the view's schema.
    pub fn new(view: &Table, source: S) -> MatView<S> {
        let mut problems = Problems::default();
        if view.alias().is_some() {
            problems.note::<()>(Err(Error::spec(
                "view",
                "name the view without an alias (table!(\"name\"))",
            )));
        }
        let book = match view.schema() {
            Some(s) => Table::in_schema(s.as_str(), DEFAULT_BOOKKEEPING_TABLE),
            None => Table::new(DEFAULT_BOOKKEEPING_TABLE),
        };
        let book = problems
            .note(book)
            .unwrap_or_else(|| Table::from_static(DEFAULT_BOOKKEEPING_TABLE));
        MatView {
            source,
            view: view.clone(),
            book,
            populate: true,
            problems,
        }
    }

    /// Records refreshes in `table` instead (created if missing, with
    /// pgpatterns' mark; an existing table without it is refused). Several
    /// views may share one.
    pub fn bookkeeping(mut self, table: &Table) -> MatView<S> {
        if table.alias().is_some() {
            self.problems.note::<()>(Err(Error::spec(
                "bookkeeping",
                "name the table without an alias",
            )));
        }
        self.book = table.clone();
        self
    }

    /// Creates the view without computing its rows (`WITH NO DATA`); the
    /// first [`refresh`](Self::refresh) fills it, and reading fails until
    /// then.
    pub fn with_no_data(mut self) -> MatView<S> {
        self.populate = false;
        self
    }

    /// The report this view stores.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The view's name.
    #[must_use]
    pub fn view(&self) -> &Table {
        &self.view
    }

    /// The unique index's name: derived from the view's schema and name
    /// (see the crate's naming rule), in the view's schema.
    #[must_use]
    pub fn index_name(&self) -> Ident {
        derived_name(&[
            self.view.schema().map_or("", |s| s.as_str()),
            self.view.name().as_str(),
            "matview_key",
        ])
    }

    /// Checks the view as a whole: the first problem a step recorded, the
    /// report's own check, distinct column names, a key made of columns,
    /// and values that can be written into a definition.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] or [`Error::InvalidIdentifier`].
    pub fn check(&self) -> Result<()> {
        self.definition().map(|_| ())
    }

    /// The view's `SELECT` with its values written as literals (see
    /// [Values in the definition](self#values-in-the-definition)).
    ///
    /// # Errors
    /// As [`check`](Self::check): also [`Error::InvalidSpec`] (field
    /// `"value"`) for text with a NUL character or a non-finite float.
    pub fn definition(&self) -> Result<String> {
        self.problems.check()?;
        let statement = self.source.view_statement()?;
        let columns = self.source.view_columns();
        for (i, c) in columns.iter().enumerate() {
            if columns[..i].contains(c) {
                return Err(Error::spec(
                    "view",
                    format!(
                        "the output column name {c:?} is used twice; a view needs distinct names"
                    ),
                ));
            }
        }
        let key = self.source.view_key();
        if key.is_empty() || key.iter().any(|k| !columns.contains(k)) {
            return Err(Error::spec(
                "key",
                "the unique key must be one or more of the view's columns",
            ));
        }
        let built = BuiltQuery::new(&statement);
        built.check()?;
        for (i, v) in built.values().0.iter().enumerate() {
            if !finite(v) {
                return Err(Error::spec(
                    "value",
                    format!(
                        "parameter ${} is a non-finite float, which cannot be written into a view's definition",
                        i + 1
                    ),
                ));
            }
        }
        Ok(statement.to_string(PostgresQueryBuilder))
    }

    /// The mark in the view's comment: its name and a digest of its
    /// definition and columns.
    fn marker(&self, definition: &str) -> String {
        let columns: Vec<String> = self.source.view_columns().iter().map(quote).collect();
        let (a, b) =
            crate::page::hash128(format!("{}\u{1f}{definition}", columns.join(",")).as_bytes());
        format!("{}definition {a:016x}{b:016x}", self.marker_prefix())
    }

    /// What every mark of a pgpatterns view of this name starts with.
    fn marker_prefix(&self) -> String {
        format!(
            "pgpatterns: materialized view {}; ",
            quote_table(&self.view)
        )
    }

    fn index_marker(&self) -> String {
        let key: Vec<String> = self.source.view_key().iter().map(quote).collect();
        format!(
            "pgpatterns: unique key ({}) of materialized view {}",
            key.join(", "),
            quote_table(&self.view)
        )
    }

    fn book_marker(&self) -> String {
        format!(
            "pgpatterns: refreshes of materialized views ({})",
            quote_table(&self.book)
        )
    }

    fn quoted_index(&self) -> String {
        quote_beside(&self.view, &self.index_name())
    }

    /// The view's name as text for `to_regclass` (bound as a value).
    fn regclass_name(&self) -> String {
        quote_table(&self.view)
    }

    /// The statements [`create`](Self::create) runs in one transaction, in
    /// order: the guard, the bookkeeping table and its mark, the view
    /// (`IF NOT EXISTS … WITH NO DATA`) and its mark, the unique index and
    /// its mark, then — unless [`with_no_data`](Self::with_no_data) — the
    /// first (plain) refresh with its record.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn create_statements(&self) -> Result<Vec<BuiltQuery>> {
        let definition = self.definition()?;
        let marker = self.marker(&definition);
        let columns: Vec<String> = self.source.view_columns().iter().map(quote).collect();
        let view = quote_table(&self.view);
        let mut index = Index::create();
        index
            .name(crate::ddl::index_name(&self.index_name()))
            .table(self.view.table_name())
            .unique()
            .nulls_not_distinct()
            .if_not_exists();
        for k in self.source.view_key() {
            index.col(k);
        }
        let mut all = vec![
            self.guard(Some(&marker)),
            BuiltQuery::generated(format!(
                "CREATE TABLE IF NOT EXISTS {} (
  view_oid oid PRIMARY KEY,
  view_name text NOT NULL,
  started_at timestamptz NOT NULL,
  finished_at timestamptz NOT NULL,
  ran_concurrently boolean NOT NULL,
  refreshes int8 NOT NULL,
  base_relids oid[] NOT NULL,
  base_tuples int8[] NOT NULL,
  base_filenodes oid[] NOT NULL
)",
                quote_table(&self.book)
            )),
            BuiltQuery::generated(format!(
                "COMMENT ON TABLE {} IS {}",
                quote_table(&self.book),
                string_literal(&self.book_marker())
            )),
            // The definition's values are literals rendered by sea-query
            // (the documented exception to "every value is bound"); a
            // newline before WITH NO DATA so no trailing comment can hide it.
            BuiltQuery::generated(format!(
                "CREATE MATERIALIZED VIEW IF NOT EXISTS {view} ({}) AS\n{definition}\nWITH NO DATA",
                columns.join(", ")
            )),
            BuiltQuery::generated(format!(
                "COMMENT ON MATERIALIZED VIEW {view} IS {}",
                string_literal(&marker)
            )),
            BuiltQuery::schema(&index),
            BuiltQuery::generated(format!(
                "COMMENT ON INDEX {} IS {}",
                self.quoted_index(),
                string_literal(&self.index_marker())
            )),
        ];
        if self.populate {
            all.extend(self.refresh_statements(false));
        }
        Ok(all)
    }

    /// The refresh and its record, in one transaction: the record of the
    /// start (with the write counters of the tables read), the refresh,
    /// the finish time.
    fn refresh_statements(&self, concurrently: bool) -> Vec<BuiltQuery> {
        let book = quote_table(&self.book);
        let name = self.regclass_name();
        vec![
            BuiltQuery::generated_with(
                RECORD_START.replace("{book}", &book),
                [name.clone().into_value(), concurrently.into_value()],
            ),
            BuiltQuery::generated(format!(
                "REFRESH MATERIALIZED VIEW {}{}",
                if concurrently { "CONCURRENTLY " } else { "" },
                quote_table(&self.view)
            )),
            BuiltQuery::generated_with(
                format!(
                    "UPDATE {book} SET finished_at = clock_timestamp() \
                     WHERE view_oid = to_regclass($1::text)"
                ),
                [name.into_value()],
            ),
        ]
    }

    /// A `DO` block that takes an advisory lock for this schema's views and
    /// stops the transaction (SQLSTATE `42710`) when a name is taken by an
    /// object that is not pgpatterns': the view's (checked against
    /// `marker`, or only against this view's mark prefix when `None`), the
    /// index's, the bookkeeping table's.
    fn guard(&self, marker: Option<&str>) -> BuiltQuery {
        let view_ok = match marker {
            Some(m) => format!(
                "obj_description(pgp_view, 'pg_class') IS NOT DISTINCT FROM {}",
                string_literal(m)
            ),
            None => format!(
                "starts_with(COALESCE(obj_description(pgp_view, 'pg_class'), ''), {})",
                string_literal(&self.marker_prefix())
            ),
        };
        let body = format!(
            "
DECLARE
  pgp_view regclass;
  pgp_index regclass;
  pgp_book regclass;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtext({lock}));
  pgp_view := to_regclass({view});
  pgp_index := to_regclass({index});
  pgp_book := to_regclass({book});
  IF pgp_view IS NOT NULL AND NOT (
       (SELECT c.relkind FROM pg_catalog.pg_class c WHERE c.oid = pgp_view) = 'm' AND {view_ok}) THEN
    RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
      MESSAGE = format('relation %s already exists and was not created by pgpatterns as this materialized view', pgp_view);
  END IF;
  IF pgp_index IS NOT NULL AND (
       pgp_view IS NULL
       OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_index x WHERE x.indexrelid = pgp_index AND x.indrelid = pgp_view)
       OR obj_description(pgp_index, 'pg_class') IS DISTINCT FROM {index_marker}) THEN
    RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
      MESSAGE = format('relation %s already exists and is not the unique index pgpatterns makes for this view', pgp_index);
  END IF;
  IF pgp_book IS NOT NULL AND obj_description(pgp_book, 'pg_class') IS DISTINCT FROM {book_marker} THEN
    RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
      MESSAGE = format('relation %s already exists and is not a bookkeeping table of pgpatterns', pgp_book);
  END IF;
END
",
            lock = string_literal(&format!("pgpatterns matview {}", quote_table(&self.book))),
            view = string_literal(&self.regclass_name()),
            index = string_literal(&self.quoted_index()),
            book = string_literal(&quote_table(&self.book)),
            index_marker = string_literal(&self.index_marker()),
            book_marker = string_literal(&self.book_marker()),
        );
        BuiltQuery::generated(format!("DO {}", dollar_quote(&body)))
    }

    /// The state of the three names, one catalog query with bound names.
    async fn catalog<E: Executor>(&self, db: &E) -> Result<Catalog> {
        let q = BuiltQuery::fixed_with(
            CATALOG_SQL,
            [
                self.regclass_name().into_value(),
                self.quoted_index().into_value(),
                quote_table(&self.book).into_value(),
            ],
        );
        let row = db.one_row(&q).await?;
        let get_s = |i: usize| row.try_get::<Option<String>>(ColumnIndex::Position(i));
        let view = match get_s(0)? {
            Some(kind) => Some((
                kind,
                get_s(1)?,
                row.try_get::<Option<bool>>(ColumnIndex::Position(2))?
                    .unwrap_or(false),
            )),
            None => None,
        };
        let index = if row.try_get::<bool>(ColumnIndex::Position(3))? {
            let on_view = row
                .try_get::<Option<bool>>(ColumnIndex::Position(8))?
                .unwrap_or(false);
            Some((if on_view { None } else { get_s(4)? }, get_s(5)?))
        } else {
            None
        };
        let book = if row.try_get::<bool>(ColumnIndex::Position(6))? {
            Some(get_s(7)?)
        } else {
            None
        };
        Ok(Catalog { view, index, book })
    }

    /// The typed form of the guard: [`Error::ObjectConflict`] for a name
    /// taken by another object. `marker`: the exact mark the view must
    /// carry, or `None` for any mark of a pgpatterns view of this name.
    /// Returns whether the view exists (as pgpatterns') and is populated.
    fn conflicts(&self, c: &Catalog, marker: Option<&str>) -> Result<Option<bool>> {
        let name = quote_table(&self.view);
        let mut exists = None;
        if let Some((kind, comment, populated)) = &c.view {
            let ours = comment
                .as_deref()
                .is_some_and(|m| m.starts_with(&self.marker_prefix()));
            if kind != "m" || !ours {
                return Err(Error::ObjectConflict {
                    kind: "relation",
                    name,
                    reason: format!(
                        "it was not created by pgpatterns as this materialized view (its kind is \
                         {kind:?}, its comment {comment:?}); choose another name"
                    ),
                });
            }
            if let Some(m) = marker {
                if comment.as_deref() != Some(m) {
                    return Err(Error::ObjectConflict {
                        kind: "materialized view",
                        name,
                        reason: "pgpatterns created it with another definition; drop it first \
                                 (MatView::drop) or choose another name"
                            .into(),
                    });
                }
            }
            exists = Some(*populated);
        }
        if let Some((on_other, comment)) = &c.index {
            let ok = exists.is_some()
                && on_other.is_none()
                && comment.as_deref() == Some(self.index_marker().as_str());
            if !ok {
                return Err(Error::ObjectConflict {
                    kind: "index",
                    name: self.quoted_index(),
                    reason: format!(
                        "it is not the unique index pgpatterns makes for {} (it is on {}, its \
                         comment is {comment:?})",
                        quote_table(&self.view),
                        on_other.as_deref().unwrap_or("this view"),
                    ),
                });
            }
        }
        if let Some(comment) = &c.book {
            if comment.as_deref() != Some(self.book_marker().as_str()) {
                return Err(Error::ObjectConflict {
                    kind: "table",
                    name: quote_table(&self.book),
                    reason: format!(
                        "it is not a bookkeeping table of pgpatterns (its comment is {comment:?}); \
                         choose another with MatView::bookkeeping"
                    ),
                });
            }
        }
        Ok(exists)
    }

    /// Creates the view, its unique index and the bookkeeping table, and
    /// (unless [`with_no_data`](Self::with_no_data)) fills the view, all in
    /// one transaction. Idempotent: when pgpatterns already created this
    /// view with this definition, only a missing index is made again and
    /// nothing is refreshed. Returns `true` when the view was created.
    ///
    /// # Errors
    /// As [`check`](Self::check), before anything is sent;
    /// [`Error::ObjectConflict`] when a name is taken by an object
    /// pgpatterns did not create as this view (or this view with another
    /// definition) — nothing is changed then; the database's errors (a
    /// report whose key is not unique fails the index with SQLSTATE
    /// `23505`, and nothing is created).
    pub async fn create<E: Transactional>(&self, db: &mut E) -> Result<bool> {
        let statements = self.create_statements()?;
        let definition = self.definition()?;
        let catalog = self.catalog(&*db).await?;
        let existed = self
            .conflicts(&catalog, Some(&self.marker(&definition)))?
            .is_some();
        if existed {
            // The guard, the bookkeeping table, the view (skipped), the index.
            db.run_in_transaction(&statements[..7]).await?;
        } else {
            db.run_in_transaction(&statements).await?;
        }
        Ok(!existed)
    }

    /// [`create`](Self::create) on a blocking client.
    ///
    /// # Errors
    /// As [`create`](Self::create).
    pub fn create_blocking<C>(&self, db: &mut C) -> Result<bool>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.create(db).await)
    }

    /// Refreshes the view ([`RefreshMode::Auto`]: concurrently, or plainly
    /// when it was never populated) and records the refresh, in one
    /// transaction.
    ///
    /// # Errors
    /// As [`refresh_with`](Self::refresh_with).
    pub async fn refresh<E: Transactional>(&self, db: &mut E) -> Result<RefreshReport> {
        self.refresh_with(db, RefreshMode::Auto).await
    }

    /// Refreshes the view as `mode` says and records the refresh (start,
    /// duration, mode, the tables' write counters) in the same transaction:
    /// the record is visible exactly when the new rows are.
    ///
    /// # Errors
    /// As [`check`](Self::check), before anything is sent;
    /// [`Error::ObjectMissing`] when the view does not exist;
    /// [`Error::ObjectConflict`] when the name is taken by a relation that
    /// is not this view as pgpatterns created it; the database's errors
    /// ([`RefreshMode::Concurrently`] on a view never populated fails).
    pub async fn refresh_with<E: Transactional>(
        &self,
        db: &mut E,
        mode: RefreshMode,
    ) -> Result<RefreshReport> {
        let definition = self.definition()?;
        let catalog = self.catalog(&*db).await?;
        let populated = self
            .conflicts(&catalog, Some(&self.marker(&definition)))?
            .ok_or_else(|| self.missing())?;
        let concurrently = match mode {
            RefreshMode::Auto => populated,
            RefreshMode::Concurrently => true,
            RefreshMode::Plain => false,
        };
        let started = Instant::now();
        let mut statements = vec![self.guard(Some(&self.marker(&definition)))];
        statements.extend(self.refresh_statements(concurrently));
        db.run_in_transaction(&statements).await?;
        Ok(RefreshReport {
            concurrently,
            elapsed: started.elapsed(),
        })
    }

    /// [`refresh`](Self::refresh) on a blocking client.
    ///
    /// # Errors
    /// As [`refresh`](Self::refresh).
    pub fn refresh_blocking<C>(&self, db: &mut C) -> Result<RefreshReport>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.refresh(db).await)
    }

    fn missing(&self) -> Error {
        Error::ObjectMissing {
            kind: "materialized view",
            name: quote_table(&self.view),
            hint: "create it first (MatView::create)",
        }
    }

    /// How fresh the view is: populated or not, the last recorded refresh,
    /// its age, and whether the tables the view reads changed since (see
    /// the [module docs](self#freshness) for its limits). One catalog
    /// query; read it on the primary (on a standby the change check is
    /// [`BaseChanges::Unknown`]).
    ///
    /// # Errors
    /// [`Error::ObjectMissing`] when the view does not exist; the
    /// database's errors.
    pub async fn freshness<E: Executor>(&self, db: &E) -> Result<Freshness> {
        self.problems.check()?;
        let q = BuiltQuery::generated_with(
            FRESHNESS.replace("{book}", &quote_table(&self.book)),
            [self.regclass_name().into_value()],
        );
        let row = db.optional_row(&q).await?.ok_or_else(|| self.missing())?;
        let at = |i: usize| ColumnIndex::Position(i);
        let populated: bool = row.try_get(at(0))?;
        let started: Option<DateTime<Utc>> = row.try_get(at(1))?;
        let finished: Option<DateTime<Utc>> = row.try_get(at(2))?;
        let last_refresh = match (started, finished) {
            (Some(started_at), Some(finished)) => Some(RefreshRecord {
                started_at,
                duration: (finished - started_at).to_std().unwrap_or_default(),
                concurrently: row.try_get::<Option<bool>>(at(3))?.unwrap_or(false),
                refreshes: row.try_get::<Option<i64>>(at(4))?.unwrap_or(0),
            }),
            _ => None,
        };
        let age = row
            .try_get::<Option<f64>>(at(5))?
            .map(|s| Duration::from_secs_f64(s.max(0.0)));
        let standby: bool = row.try_get(at(6))?;
        let counting: bool = row.try_get(at(7))?;
        let changed: Option<Vec<String>> = row.try_get(at(8))?;
        let reset: Option<Vec<String>> = row.try_get(at(9))?;
        let untracked: Option<Vec<String>> = row.try_get(at(10))?;
        let unknown = |reason: String| BaseChanges::Unknown { reason };
        let base = if last_refresh.is_none() {
            unknown("no refresh of this view was recorded".into())
        } else if standby {
            unknown("read on a standby, whose write counters are its own".into())
        } else if !counting {
            unknown("track_counts is off: no writes are counted".into())
        } else if let Some(t) = reset.filter(|t| !t.is_empty()) {
            unknown(format!(
                "the write counters of {} went backwards (statistics were reset)",
                t.join(", ")
            ))
        } else if let Some(t) = changed.filter(|t| !t.is_empty()) {
            BaseChanges::Changed { tables: t }
        } else if let Some(t) = untracked.filter(|t| !t.is_empty()) {
            unknown(format!(
                "the view reads {}, whose changes are not counted",
                t.join(", ")
            ))
        } else {
            BaseChanges::Unchanged
        };
        Ok(Freshness {
            populated,
            last_refresh,
            age,
            base,
        })
    }

    /// [`freshness`](Self::freshness) on a blocking client.
    ///
    /// # Errors
    /// As [`freshness`](Self::freshness).
    pub fn freshness_blocking<C>(&self, db: &mut C) -> Result<Freshness>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.freshness(db).await)
    }

    /// The statements [`drop`](Self::drop) runs in one transaction: a
    /// guard (the view must carry a mark of a pgpatterns view of this
    /// name), the deletion of its bookkeeping row, `DROP MATERIALIZED VIEW
    /// IF EXISTS` (its index goes with it; never `CASCADE`).
    #[must_use]
    pub fn drop_statements(&self) -> Vec<BuiltQuery> {
        vec![
            self.guard(None),
            BuiltQuery::generated_with(
                format!(
                    "DELETE FROM {} WHERE view_oid = to_regclass($1::text)",
                    quote_table(&self.book)
                ),
                [self.regclass_name().into_value()],
            ),
            BuiltQuery::generated(format!(
                "DROP MATERIALIZED VIEW IF EXISTS {}",
                quote_table(&self.view)
            )),
        ]
    }

    /// Drops the view (with its index) and its bookkeeping row; the tables
    /// it reads and the bookkeeping table stay. Idempotent: returns `false`
    /// when there was no view. A view pgpatterns created under this name
    /// with another definition is dropped too (so it can be created anew).
    ///
    /// # Errors
    /// [`Error::ObjectConflict`] when the name is taken by a relation that
    /// pgpatterns did not create as this view (nothing is dropped); the
    /// database's errors (another view that reads this one makes the drop
    /// fail: it is never cascaded).
    pub async fn drop<E: Transactional>(&self, db: &mut E) -> Result<bool> {
        self.problems.check()?;
        let catalog = self.catalog(&*db).await?;
        if self.conflicts(&catalog, None)?.is_none() {
            return Ok(false);
        }
        let mut statements = self.drop_statements();
        if catalog.book.is_none() {
            statements.remove(1);
        }
        db.run_in_transaction(&statements).await?;
        Ok(true)
    }

    /// [`drop`](Self::drop) on a blocking client.
    ///
    /// # Errors
    /// As [`drop`](Self::drop).
    pub fn drop_blocking<C>(&self, db: &mut C) -> Result<bool>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.drop(db).await)
    }

    /// `SELECT <the report's columns> FROM view ORDER BY <the report's
    /// order>`: compose it (filters, limits) as you like; decode rows with
    /// [`decode`](Self::decode).
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn read_statement(&self) -> Result<SelectStatement> {
        self.check()?;
        let mut q = Query::select();
        for c in self.source.view_columns() {
            q.column(crate::schema::qualified(&self.view, &c));
        }
        q.from(self.view.table_ref());
        self.source.view_order(&mut q);
        Ok(q)
    }

    /// [`read_statement`](Self::read_statement) rendered (no values: it
    /// reads the whole view).
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn read(&self) -> Result<BuiltQuery> {
        Ok(BuiltQuery::new(&self.read_statement()?))
    }

    /// Decodes a row read from the view.
    ///
    /// # Errors
    /// [`Error::Decode`] when the row does not have the report's columns.
    pub fn decode<R: RowRead>(&self, row: &R) -> Result<S::Row> {
        self.source.decode_view_row(row)
    }

    /// Reads the view's rows as the report's own rows, in the report's
    /// order. A plain read: any [`Executor`] serves it, a
    /// [`ReplicaRouter`](crate::replica::ReplicaRouter) may send it to a
    /// standby.
    ///
    /// # Errors
    /// As [`check`](Self::check), before anything is sent; the database's
    /// errors (SQLSTATE `55000` for a view never populated, `42P01` for a
    /// missing one); [`Error::Decode`].
    pub async fn fetch_all<E: Executor>(&self, db: &E) -> Result<Vec<S::Row>> {
        let rows = db.rows(&self.read()?).await?;
        rows.iter().map(|r| self.decode(r)).collect()
    }

    /// [`fetch_all`](Self::fetch_all) on a blocking client.
    ///
    /// # Errors
    /// As [`fetch_all`](Self::fetch_all).
    pub fn fetch_all_blocking<C>(&self, db: &mut C) -> Result<Vec<S::Row>>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.fetch_all(db).await)
    }
}

/// `false` for a NaN or infinite float (also inside arrays): sea-query
/// would write it as a bare word.
fn finite(v: &Value) -> bool {
    match v {
        Value::Float(Some(f)) => f.is_finite(),
        Value::Double(Some(f)) => f.is_finite(),
        Value::Array(_, Some(items)) => items.iter().all(finite),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollup::{Agg, Dim, Metric};
    use crate::{column, table};

    fn report(value: &str) -> Rollup {
        let sale = table!("sale");
        Rollup::new(&sale)
            .dimension(&Dim::new(&column!(sale, "merchant": String)))
            .metric(&Metric::new("total", Agg::count_all()))
            .filter(column!(sale, "device": String).eq(value))
            .with_total()
    }

    #[test]
    fn values_are_written_by_sea_query() {
        let v = MatView::new(&table!("mv"), report("it's a \\ $$ x"));
        let d = v.definition().unwrap();
        assert!(d.contains(r"CAST(E'it\'s a \\ $$ x' AS text)"), "{d}");
    }

    #[test]
    fn nul_and_non_finite_values_are_refused() {
        let v = MatView::new(&table!("mv"), report("a\0b"));
        assert!(matches!(
            v.check(),
            Err(Error::InvalidSpec { field: "value", .. })
        ));
        let sale = table!("sale");
        let r = report("x").filter(column!(sale, "rate": f64).gt(f64::NAN));
        let e = MatView::new(&table!("mv"), r).check().unwrap_err();
        assert!(e.to_string().contains("non-finite"), "{e}");
    }

    #[test]
    fn the_rollup_key_is_dimensions_and_level() {
        let r = report("x");
        assert_eq!(
            r.view_key(),
            vec![Ident::fixed("merchant"), Ident::fixed(GROUPING_ALIAS)]
        );
        let v = MatView::new(&table!("mv"), r);
        let all = v.create_statements().unwrap();
        let index = all
            .iter()
            .find(|q| q.sql().starts_with("CREATE UNIQUE"))
            .unwrap();
        assert!(
            index
                .sql()
                .ends_with(r#"("merchant", "rollup_grouping") NULLS NOT DISTINCT"#),
            "{}",
            index.sql()
        );
        assert_eq!(
            v.read().unwrap().sql(),
            r#"SELECT "mv"."merchant", "mv"."total", "mv"."rollup_grouping" FROM "mv" ORDER BY "rollup_grouping" ASC, "merchant" ASC NULLS LAST"#
        );
    }

    #[test]
    fn aliased_views_and_bad_keys_are_refused() {
        let t = table!("mv").aliased("m").unwrap();
        assert!(MatView::new(&t, report("x")).check().is_err());
        let q = ViewQuery::<(i64,)>::new(Query::select().expr(Expr::cust("1")).to_owned(), ["one"]);
        let e = MatView::new(&table!("mv"), q.clone()).check().unwrap_err();
        assert!(matches!(e, Error::InvalidSpec { field: "key", .. }), "{e}");
        let e = MatView::new(&table!("mv"), q.key(["two"]))
            .check()
            .unwrap_err();
        assert!(
            e.to_string().contains("not one of the view's columns"),
            "{e}"
        );
    }
}
