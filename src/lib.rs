//! # pgpatterns
//!
//! Parameterized PostgreSQL for the query shapes ORMs get wrong, built from
//! typed inputs on [sea-query](sea_query) and run through a thin executor trait
//! so any Postgres client plugs in:
//!
//! - **latest** — filter entities on their *latest* status (an order whose
//!   newest status row is `Complete`), not on any status they ever had;
//! - **since** — roots changed since `T` in themselves *or* in any related
//!   table, across multi-hop relation paths;
//! - **rollup** — `GROUPING SETS` / `ROLLUP` / `CUBE` reports whose rows know
//!   their grouping level ([`Rollup`]), computed as one `GROUPING SETS`
//!   query or pre-aggregated in parallel first ([`RollupStrategy`]); the
//!   top-N report ("top 10 users by total spent") is built on it
//!   ([`ops::top_n`]).
//!
//! Around them: [`ops`] (a top-N report, bounded recent history, archiving
//! in batches, concurrent index builds, batched deletes, range partitioning
//! of a live table without downtime in [`ops::partition`]), [`explain`] and
//! [`compare`] to read and measure plans, an `Auto` strategy per family that
//! chooses from the live database by rule ([`choice`]) or by measuring on
//! it ([`Calibration`]), and a router over read replicas ([`replica`]).
//!
//! ## How the API is shaped
//!
//! Every family goes the same way, **spec → statement → built query → run**:
//!
//! 1. A **spec** ([`LatestStatus`], [`SinceGraph`] and its [`SinceQuery`],
//!    [`Rollup`], [`ops::TopN`]) is made from typed table and column handles
//!    (and, for reports, [`Dim`] and [`Metric`] handles), **passed as they
//!    are**. Literal names are checked at compile time with [`table!`] and
//!    [`column!`]; names known only at run time go through [`Table::new`] and
//!    [`Table::column`], which return a [`Result`].
//! 2. **Every builder step takes `self`, returns the spec and never
//!    fails.** Options can be set in any order with the same result, and
//!    `strategy(s)` is the same plain step in every family. A step given
//!    something wrong (a column of another table, an empty status set, a
//!    strategy that cannot compute the spec) records the problem.
//! 3. **Errors surface in one place**: the spec is checked as a whole by
//!    `check()`, `to_statement()`, `build()` and every run verb, which return
//!    the first problem as a typed [`Error`] (mostly [`Error::InvalidSpec`]
//!    naming the step, or [`Error::InvalidIdentifier`]) **before any SQL is
//!    sent**. So a spec has `?` only where it is built or run, and where a
//!    runtime name is parsed. (`http::request::Builder` and `reqwest` work the
//!    same way.)
//! 4. `to_statement()` gives the spec as a sea-query
//!    [`SelectStatement`](sea_query::SelectStatement): add your own joins,
//!    filters, ordering or limit, or use it as a subquery. `build()` renders
//!    it as a [`BuiltQuery`]: SQL text with `$1, $2, …` placeholders plus the
//!    values bound to them. Every value is a bind parameter cast to its exact
//!    type; none is ever formatted into the SQL text.
//! 5. **Run verbs** live on the specs and queries and take the client as an
//!    argument, with the same names in every family: `count`, `fetch_page`
//!    (a [`PageRequest`] in, a [`Page`] with typed rows and an opaque,
//!    tamper-evident cursor out), `fetch_all`, and on a [`BuiltQuery`]
//!    `fetch_one`, `fetch_optional`, `execute`. Each has a `_blocking` twin
//!    for synchronous clients (`spec.count_blocking(&mut client)`) that
//!    drives the same async code, so the two cannot disagree.
//!
//! ```
//! use chrono::{DateTime, Utc};
//! use pgpatterns::{column, table, BuiltQuery, LatestStatus};
//!
//! let orders = table!("orders");                      // checked at compile time
//! let history = table!("order_status");
//! let pending = LatestStatus::<String>::new(          // 1. a spec from handles
//!     &column!(orders, "id": i64),
//!     &column!(history, "order_id": i64),
//!     &column!(history, "status": String),
//!     &column!(history, "created_at": DateTime<Utc>),
//! )
//! .status_eq("Pending");                              // 2. steps never fail
//!
//! let mut stmt = pending.to_statement()?;             // 3. checked here, 4. composed
//! stmt.and_where(column!(orders, "customer": String).eq("O'Brien"));
//! let q = BuiltQuery::from(&stmt);                    //    SQL + bound values
//! assert!(!q.sql().contains("O'Brien") && !q.sql().contains("Pending"));
//! assert_eq!(q.values().0.len(), 2);                  //    both values are bound
//! assert_eq!(pending.build()?.values().0.len(), 1);   //    or the spec as it is
//! // 5. `pending.count(&client).await?`, `q.fetch_all::<(i64,)>(&client).await?`
//! # Ok::<(), pgpatterns::Error>(())
//! ```
//!
//! ## latest: filter on the newest history row
//!
//! ```
//! use chrono::{DateTime, Utc};
//! use pgpatterns::{column, table, LatestStatus, LatestStrategy, PageRequest};
//!
//! let orders = table!("orders");
//! let history = table!("order_status");
//! let pending = LatestStatus::<String>::new(
//!     &column!(orders, "id": i64),                // entity key
//!     &column!(history, "order_id": i64),         // history → entity
//!     &column!(history, "status": String),        // what is tested
//!     &column!(history, "created_at": DateTime<Utc>), // newest wins …
//! )
//! .then_by(&column!(history, "id": i64))          // … ties broken by id
//! .status_eq("Pending")
//! .strategy(LatestStrategy::DistinctOn);
//!
//! let count = pending.count_query()?;                // SELECT COUNT(*) FROM (…)
//! let page = pending.page_query::<i64>(&PageRequest::new(50))?; // the first page
//! assert!(count.sql().contains("DISTINCT ON"));
//! assert_eq!(page.values().0.len(), 2); // status, limit: both bound
//! // `pending.fetch_page::<T, i64>(&client, &req)` runs it and hands out the
//! // next page's cursor.
//! # Ok::<(), pgpatterns::Error>(())
//! ```
//!
//! ## since: roots changed in themselves or in anything related
//!
//! ```
//! use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
//! use pgpatterns::{column, table, PageOrder, PageRequest, Relation, SinceGraph, SinceStrategy};
//!
//! let (moves, orders) = (table!("moves"), table!("orders"));
//! let (members, shipments) = (table!("service_members"), table!("mto_shipments"));
//! let move_id = column!(moves, "id": i64);
//! let to_orders = Relation::new(&column!(moves, "orders_id": i64), &column!(orders, "id": i64));
//! let to_members =
//!     Relation::new(&column!(orders, "service_member_id": i64), &column!(members, "id": i64));
//!
//! let graph = SinceGraph::new(&move_id, column!(moves, "updated_at": NaiveDateTime)) // read as UTC
//!     .filter(column!(moves, "show": bool).eq(true))
//!     .related("orders", to_orders.clone(), column!(orders, "updated_at": NaiveDateTime))
//!     .path(                                          // two hops: moves → orders → service_members
//!         "service_members",
//!         [to_orders, to_members],
//!         column!(members, "updated_at": NaiveDateTime),
//!     )
//!     .related(                                       // a child: mto_shipments.move_id → moves.id
//!         "shipments",
//!         Relation::new(&column!(shipments, "move_id": i64), &move_id),
//!         column!(shipments, "updated_at": DateTime<Utc>), // timestamptz
//!     );
//!
//! let since = Utc.with_ymd_and_hms(2021, 7, 16, 0, 0, 0).unwrap();
//! let q = graph.since(since).strategy(SinceStrategy::UnionIn);
//! let count = q.count_query()?;                                 // SELECT COUNT(*) FROM (…)
//! let page = q.page_query(&PageRequest::new(50).order(PageOrder::ChangeTime))?;
//! let changed = q.changes_query(&[1, 2, 3])?;                   // what changed, for a page's keys
//! assert!(count.sql().contains(r#""moves"."orders_id" IN (SELECT"#));
//! assert!(page.sql().ends_with(r#"ORDER BY "moves"."updated_at" ASC, "moves"."id" ASC LIMIT $6"#));
//! assert!(changed.sql().contains("UNION ALL"));
//! # Ok::<(), pgpatterns::Error>(())
//! ```
//!
//! With an [`Executor`], [`SinceQuery::fetch_page`] returns typed rows and an
//! opaque cursor for the next page, and [`SinceQuery::fetch_changes`] lists
//! which relations of those rows changed and when.
//!
//! ## rollup: detail rows and a summary line in one query
//!
//! ```
//! use pgpatterns::{column, table, Agg, Dim, Level, Metric, Rollup};
//!
//! let sale = table!("sale");
//! let merchant = Dim::new(&column!(sale, "merchant": String)); // handles, made on their own
//! let device = Dim::new(&column!(sale, "device": String));
//! let users = Metric::new(
//!     "unique_users",                      // COUNT DISTINCT: not summable in memory
//!     Agg::count_distinct(&column!(sale, "user_id": i32)),
//! );
//! let dashboard = Rollup::new(&sale)
//!     .dimension(&merchant)
//!     .dimension(&device)
//!     .metric(&users)
//!     .with_total();                       // GROUPING SETS ((merchant, device), ())
//! let q = dashboard.build()?;
//! assert!(q.sql().contains("GROUPING SETS((\"sale\".\"merchant\", \"sale\".\"device\"), ())"));
//! // Rows (`dashboard.fetch_all(&client).await?`) carry a `Level` from
//! // GROUPING(): Detail, Subtotal { grouped_by }, Total — never guessed from
//! // NULLs; `row.get(&users)` reads a value by its handle. `.rollup((&merchant,
//! // &device))`, `.cube(..)` and `.grouping_sets(((&merchant,), ()))` take
//! // the handles as they are, of any types.
//! # let _ = Level::Total;
//! # Ok::<(), pgpatterns::Error>(())
//! ```
//!
//! ## How SQL is built and bound
//!
//! Tables and columns are declared in Rust and checked when made ([`Table`],
//! [`Column`]); identifiers are always quoted by sea-query. Every value is a
//! bind parameter, cast to the exact PostgreSQL type of its Rust type
//! ([`SqlType`]), because values are sent in binary and the server must agree
//! on their type:
//!
//! ```
//! use pgpatterns::{BuiltQuery, Table};
//! use pgpatterns::sea_query::{Order, Query};
//!
//! let orders = Table::new("orders")?;
//! let id = orders.column::<i64>("id")?;
//! let customer = orders.column::<String>("customer")?;
//!
//! let q = BuiltQuery::from(
//!     &Query::select()
//!         .column(id.col_ref())
//!         .from(orders.table_ref())
//!         .and_where(customer.eq("O'Brien"))
//!         .and_where(id.gt(100))
//!         .order_by(id.col_ref(), Order::Asc)
//!         .to_owned(),
//! );
//! assert_eq!(
//!     q.sql(),
//!     r#"SELECT "orders"."id" FROM "orders" WHERE "orders"."customer" = CAST($1 AS text) AND "orders"."id" > CAST($2 AS int8) ORDER BY "orders"."id" ASC"#
//! );
//! assert_eq!(q.values().0.len(), 2);
//! # Ok::<(), pgpatterns::Error>(())
//! ```
//!
//! Bad input is a typed [`Error`] before any SQL is sent:
//!
//! ```
//! use pgpatterns::{Error, Table};
//! let err = Table::new("x".repeat(64)).unwrap_err();
//! assert!(matches!(err, Error::InvalidIdentifier { .. }));
//! ```
//!
//! ## Running queries
//!
//! The run verbs live on the queries and specs and take the client as an
//! argument, so importing pgpatterns never changes what a client's own
//! `query` or `execute` means: `q.fetch_all(&client)`, `q.fetch_one`,
//! `q.fetch_optional`, `q.execute`; `spec.count(&client)`,
//! `spec.fetch_page(..)`, `report.fetch_all(&client)`. Rows decode into tuples or
//! typed structs ([`FromRow`]). Every verb has a `_blocking` form for the
//! synchronous `postgres` client, built from the same code
//! (`q.fetch_all_blocking(&mut client)`, `spec.count_blocking(&mut client)`).
//!
//! ```no_run
//! # #[cfg(feature = "tokio-postgres")]
//! # async fn demo(client: tokio_postgres::Client, q: pgpatterns::BuiltQuery) -> pgpatterns::Result<()> {
//! let rows: Vec<(i64,)> = q.fetch_all(&client).await?;
//! let affected = q.execute(&client).await?;
//! # Ok(()) }
//! ```
//!
//! Any other client plugs in by implementing [`Executor`] (async) or
//! [`BlockingExecutor`] (sync).
//!
//! A [`ReplicaRouter`](replica::ReplicaRouter) is an executor over a primary
//! and read replicas: reads go to replicas that are recent enough, writes to
//! the primary, and its sessions read their own writes ([`replica`]).
//!
//! ## Features
//!
//! | Feature | Description | Extra dependencies | Default |
//! |---|---|---|---|
//! | `tokio-postgres` | [`Executor`] for `tokio_postgres::Client` and `Transaction` | `tokio-postgres` | no |
//! | `postgres` | [`BlockingExecutor`] for `postgres::Client` and `Transaction` | `postgres` | no |
//! | `deadpool-postgres` | [`Executor`] for `deadpool_postgres::Pool` and `Client` | `deadpool-postgres`, `tokio-postgres` | no |
//! | `sqlx` | [`Executor`] for `sqlx::PgPool`, and for a `sqlx::PgConnection` or `Transaction` wrapped in [`SqlxConn`] | `sqlx`, `tokio` | no |
//! | `seed` | [`seed`]: server-side generators of realistic demo data (the examples' datasets) | none | no |
//! | `testdb` | [`testdb::TestDb`]: a throwaway PostgreSQL cluster for tests and examples (Unix only) | `tokio-postgres`, `tokio` | no |
//!
//! With no feature the crate still builds every query; you run the SQL and
//! values ([`BuiltQuery::sql`], [`BuiltQuery::params`]) with your own client.
//!
//! ## Re-exports
//!
//! Types of these crates appear in pgpatterns' public API, so the versions it
//! builds on are re-exported; use them to avoid a version mismatch:
//!
//! - [`sea_query`]: statements ([`SelectStatement`](sea_query::SelectStatement)),
//!   expressions ([`Expr`](sea_query::Expr)) and values
//!   ([`Values`](sea_query::Values)) that specs produce and accept;
//! - [`sea_query_postgres`]: the [`PostgresValues`](sea_query_postgres::PostgresValues)
//!   returned by [`BuiltQuery::params`];
//! - [`postgres_types`]: the `FromSql`/`ToSql` traits rows are decoded and
//!   values encoded with ([`RowRead::try_get`]), for implementations of
//!   your own;
//! - [`Decimal`] (from `rust_decimal`): what `numeric` values, such as sums
//!   in [`Rollup`] rows and [`ops::TopN`] totals, decode to.
//!
//! [`SqlType`] is also implemented for `chrono` 0.4 (`DateTime<Utc>`,
//! `NaiveDateTime`, `NaiveDate`, `NaiveTime`) and `uuid` 1 (`Uuid`); those
//! crates are not re-exported: depend on the same major versions.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod calibrate;
pub mod choice;
pub mod compare;
mod ddl;
mod error;
mod exec;
pub mod explain;
mod latest;
pub mod ops;
mod page;
mod params;
mod progress;
mod query;
pub mod replica;
mod rollup;
mod schema;
#[cfg(feature = "seed")]
#[cfg_attr(docsrs, doc(cfg(feature = "seed")))]
pub mod seed;
mod since;
mod spec;
#[cfg(all(feature = "testdb", unix))]
#[cfg_attr(docsrs, doc(cfg(all(feature = "testdb", unix))))]
pub mod testdb;
#[cfg(all(feature = "testdb", not(unix)))]
compile_error!(
    "the `testdb` feature is Unix-only: it starts PostgreSQL on a unix socket and, as root, \
     runs it as the `postgres` user; on other platforms set DATABASE_URL and connect directly"
);
mod types;

pub use calibrate::Calibration;
pub use choice::{Choice, DecidedBy, Estimate, Shape, StatKind, Statistic, StrategyCache};
pub use compare::{Compare, Comparison, Contender};
pub use error::{BoxError, Error, Result};
#[cfg(feature = "tokio-postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio-postgres")))]
pub use exec::Prepared;
#[cfg(feature = "sqlx")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlx")))]
pub use exec::SqlxConn;
pub use exec::{BlockingExecutor, ColumnIndex, Executor, FromRow, RowRead, Transactional};
pub use latest::{
    BackfillReport, Denormalize, LatestStatus, LatestStrategy, DRIFT_STORED, LATEST_ALIAS,
    LATEST_AT, LATEST_STATUS,
};
pub use page::{CursorKey, Page, PageOrder, PageRequest, MAX_CURSOR_LEN};
pub use params::TypedParams;
pub use progress::Progress;
pub use query::BuiltQuery;
pub use rollup::{
    Agg, AnyDim, Dim, DimValue, Dims, Field, GroupingSets, Level, Metric, Ordered, Rollup,
    RollupRow, RollupRowBuilder, RollupStrategy, RollupTable, Split, Summable, TotalPosition,
    TypedExpr, GROUPING_ALIAS, MAX_CUBE_DIMENSIONS, MAX_DIMENSIONS, MAX_GROUPING_SETS,
    PRE_AGGREGATE_MAX_GROUPS_PER_ROW, ROLLUP_RESERVED_ALIASES,
};
pub use schema::{AnyColumn, Column, Ident, Relation, Table, MAX_IDENT_BYTES};
pub use since::{
    Change, ChangeColumn, IndexOptions, IntoChangeColumn, SinceGraph, SinceQuery, SinceStrategy,
    Track, SINCE_AT, SINCE_DEFAULT_MAX_LIMIT, SINCE_KEY, TRACK_FRESH, TRACK_STORED,
};
pub use types::SqlType;

// The README's Rust examples compile as doctests.
#[cfg(all(doctest, feature = "tokio-postgres"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// Re-export of the sea-query version pgpatterns builds on, so callers can
/// compose statements without a version mismatch.
pub use sea_query;

/// Re-export of the sea-query-postgres version behind
/// [`BuiltQuery::params`] (its [`PostgresValues`](sea_query_postgres::PostgresValues)).
pub use sea_query_postgres;

/// Re-export of the postgres-types version rows are decoded with
/// ([`RowRead::try_get`] takes any [`FromSqlOwned`](postgres_types::FromSqlOwned)
/// type), for `FromSql`/`ToSql` implementations of your own.
pub use postgres_types;

/// Re-export of the decimal type that `numeric` values decode to (sums and
/// averages in [`Rollup`] rows, [`ops::top_n`] totals).
pub use rust_decimal::Decimal;
