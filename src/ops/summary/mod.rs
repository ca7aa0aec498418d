//! Maintained, bucketed summary tables: one row per group keys and time
//! bucket (an hour or a day) of a base table, with `COUNT(*)`,
//! `COUNT(column)` and `SUM(column)` kept exactly up to date by
//! statement-level triggers, and window queries that read whole buckets
//! from the summary and only the partial edge buckets from the base.
//!
//! "Top 10 users by total spent over the last 30 days" reads 30 days of
//! orders; over a summary by `(user_id, status)` per day it reads one row per
//! user, status and day, plus the orders of the two partial days at the
//! window's edges — and returns exactly the rows the query on the base
//! table returns.
//!
//! ```no_run
//! # #[cfg(feature = "tokio-postgres")]
//! # async fn demo(mut client: tokio_postgres::Client) -> pgpatterns::Result<()> {
//! use chrono::{DateTime, Duration, Utc};
//! use pgpatterns::ops::summary::{Bucket, Measure, Summary};
//! use pgpatterns::ops::TopN;
//! use pgpatterns::{column, table, Decimal};
//!
//! let (users, orders) = (table!("users"), table!("orders"));
//! let user_id = column!(orders, "user_id": i64);
//! let status = column!(orders, "status": String);
//! let total = column!(orders, "total": Decimal);
//! let created_at = column!(orders, "created_at": DateTime<Utc>);
//! let summary = Summary::new(&created_at, Bucket::Day)
//!     .key(&user_id)
//!     .key(&status)
//!     .measure(Measure::sum(&total, "total"))
//!     .named("orders_by_user_day");
//! summary.install(&mut client).await?; // the table and its triggers, in one transaction
//! summary.backfill(&mut client, 30, |_| {}).await?; // 30 days per batch
//! assert_eq!(summary.drift_count(&client).await?, 0);
//!
//! // The same report as on the base table, from the summary.
//! let since = Utc::now() - Duration::days(30);
//! let top = TopN::new(&column!(users, "id": i64), &user_id, &total, 10)
//!     .window_since(&created_at, since)
//!     .where_eq(&status, "completed")
//!     .from_summary(&summary)
//!     .fetch_all(&client)
//!     .await?;
//! # Ok(()) }
//! ```
//!
//! # Reports that read it
//!
//! [`TopN`](crate::ops::TopN) ([`from_summary`](crate::ops::TopN::from_summary))
//! and [`Rollup`](crate::Rollup) ([`Rollup::from_summary`](crate::Rollup::from_summary))
//! read from it, and so does a [`SummaryWindow`] of your own. Each is
//! written as on the base table — its columns, its keys as dimensions,
//! `COUNT(*)`, `COUNT`, `SUM` and `AVG` of the measured columns — with the
//! window (since, until, `where_eq` on keys) taking the place of the
//! filters, and returns the rows, order and types of the same report on
//! the base table. What the summary cannot answer (another column, `MIN`,
//! `COUNT(DISTINCT …)`, a free filter) is refused before any SQL is sent.
//!
//! # What is kept, and how
//!
//! The summary table has the group keys, the bucket start
//! ([`bucket_column`](Summary::bucket_column), default `bucket`), the row
//! count ([`count_column`](Summary::count_column), default `row_count`) and
//! one column per [`Measure`]; a `SUM` also keeps a hidden count of its
//! non-NULL values, so the sum turns NULL again when the last non-NULL value
//! goes. Its key is `UNIQUE NULLS NOT DISTINCT (bucket, keys…)` (PostgreSQL
//! 15 or newer): group keys may be NULL, and a NULL key is one group, as in
//! `GROUP BY`. Rows whose time is NULL belong to no bucket and are not
//! counted.
//!
//! Statement-level `AFTER INSERT / UPDATE / DELETE / TRUNCATE` triggers with
//! transition tables aggregate what a statement changed — new rows count
//! `+1`, old rows `-1`, so an update that moves a row to another group or
//! bucket leaves one and enters the other — and apply the non-zero deltas
//! with one `INSERT … ON CONFLICT … DO UPDATE`, in key order (so concurrent
//! writers lock summary rows in one order and queue instead of
//! deadlocking), then delete the rows whose count dropped to 0. Deltas
//! commute, so concurrent writers at `READ COMMITTED` always add up right.
//! `TRUNCATE` empties the summary.
//!
//! # What is not kept
//!
//! `MIN` and `MAX` are not offered: a delete can remove the extreme value,
//! and the new one can only be found by reading the group's rows again
//! (under concurrent writers, with the same locking care as the sums);
//! run a [`Rollup`](crate::Rollup) on the base for them. Sums of `real`
//! and `double precision` columns are refused ([`Error::InvalidSpec`]):
//! floating-point addition is not associative, so a sum kept by deltas
//! would drift from a fresh sum by rounding.
//!
//! # Buckets and time zones
//!
//! A `timestamptz` time column is bucketed with `date_trunc(unit, time,
//! zone)`, which does not depend on the session's `TimeZone`; the zone is
//! [`zone`](Summary::zone), default `UTC`. A `timestamp` column is bucketed
//! with `date_trunc(unit, time)`. Window queries rely on each bucket's
//! start being its first instant: true for UTC, for every zone with a fixed
//! offset, and for day buckets in zones whose clocks change away from
//! midnight; not for hour buckets in a zone with daylight-saving time (the
//! repeated hour of the autumn change has one local start for two hours).
//!
//! # Names
//!
//! The summary table's name is [`named`](Summary::named), or derived from
//! the base table, the keys, the time column and the unit; the trigger
//! function's and triggers' names are derived from it. Installing and
//! uninstalling refuse with [`Error::ObjectConflict`] when an object of
//! those names exists that pgpatterns did not create for this summary
//! (recognised by comments, [`marker`](Summary::marker), which carry a
//! digest of the definition): nothing is ever replaced or dropped that is
//! not this summary's own. A summary whose definition changed (a measure
//! added) is another summary: uninstall with the old definition first.

mod ddl;
mod maintain;
pub(crate) mod window;

use std::fmt;

use chrono::{DateTime, NaiveDateTime, Utc};
use postgres_types::FromSqlOwned;
use sea_query::Expr;

use crate::ddl::derived_name;
use crate::rollup::{sum_type, Summable};
use crate::schema::{AnyColumn, Column, Ident, Table};
use crate::spec::Problems;
use crate::types::SqlType;
use crate::{Error, Result};

pub use maintain::SummaryBackfill;
pub use window::SummaryWindow;

/// Default name of the bucket-start column.
pub const BUCKET_COLUMN: &str = "bucket";
/// Default name of the row-count column.
pub const COUNT_COLUMN: &str = "row_count";

/// The width of a summary's time buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Bucket {
    /// One bucket per hour.
    Hour,
    /// One bucket per day.
    Day,
}

impl Bucket {
    fn unit(self) -> &'static str {
        match self {
            Bucket::Hour => "hour",
            Bucket::Day => "day",
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for chrono::DateTime<chrono::Utc> {}
    impl Sealed for chrono::NaiveDateTime {}
}

/// A time type a summary can bucket: `DateTime<Utc>` (`timestamptz`) or
/// `NaiveDateTime` (`timestamp`).
pub trait BucketTime: SqlType + FromSqlOwned + sealed::Sealed {
    /// `true` for `timestamptz`, bucketed in the summary's zone.
    const ZONED: bool;
    /// Whole seconds from `a` to `b` (for progress estimates).
    fn seconds_between(a: &Self, b: &Self) -> i64;
}

impl BucketTime for DateTime<Utc> {
    const ZONED: bool = true;
    fn seconds_between(a: &Self, b: &Self) -> i64 {
        (*b - *a).num_seconds()
    }
}

impl BucketTime for NaiveDateTime {
    const ZONED: bool = false;
    fn seconds_between(a: &Self, b: &Self) -> i64 {
        (*b - *a).num_seconds()
    }
}

/// What a measure aggregates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `COUNT(column)`.
    Count,
    /// `SUM(column)`, with the sum's SQL type.
    Sum(&'static str),
}

/// One aggregate a summary keeps: `COUNT(column)` or `SUM(column)` (the
/// row count, `COUNT(*)`, is always kept). Made with [`Measure::count`] or
/// [`Measure::sum`]; an invalid name is reported when the summary is
/// checked.
#[derive(Debug, Clone)]
pub struct Measure {
    name: Option<Ident>,
    column: AnyColumn,
    kind: Kind,
    problems: Problems,
}

impl Measure {
    fn make(column: AnyColumn, name: &str, kind: Kind, mut problems: Problems) -> Measure {
        let name = problems.note(Ident::new(name));
        Measure {
            name,
            column,
            kind,
            problems,
        }
    }

    /// `COUNT(column)`: the rows whose `column` is not NULL, stored as
    /// `int8` in the summary column `name`.
    #[must_use]
    pub fn count<T: SqlType>(column: &Column<T>, name: &str) -> Measure {
        Measure::make(column.erase(), name, Kind::Count, Problems::default())
    }

    /// `SUM(column)`, stored in the summary column `name` with the type
    /// PostgreSQL's `SUM` returns (`int8` for `int2`/`int4`, `numeric` for
    /// `int8`/`numeric`); NULL when every value of the group is NULL.
    /// Floating-point columns are refused when the summary is checked.
    #[must_use]
    pub fn sum<A: Summable>(column: &Column<A>, name: &str) -> Measure {
        let mut problems = Problems::default();
        let sql = match A::SQL_TYPE {
            "float4" | "float8" => {
                problems.note::<()>(Err(Error::spec(
                    "measure",
                    format!(
                        "the sum of {} ({}) cannot be kept exact: floating-point addition \
                         depends on the order of the values",
                        column.name(),
                        A::SQL_TYPE
                    ),
                )));
                "float8"
            }
            t => sum_type(t).unwrap_or("numeric"),
        };
        Measure::make(column.erase(), name, Kind::Sum(sql), problems)
    }

    /// The summary column's name (`None` when the name given was invalid).
    #[must_use]
    pub fn name(&self) -> Option<&Ident> {
        self.name.as_ref()
    }

    /// The base column aggregated.
    #[must_use]
    pub fn column(&self) -> &AnyColumn {
        &self.column
    }
}

/// A checked measure with its companion count (sums).
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    pub(crate) name: Ident,
    pub(crate) column: AnyColumn,
    pub(crate) kind: Kind,
    /// Non-NULL values of a sum's column.
    pub(crate) nonnull: Option<Ident>,
}

/// A maintained summary of a base table by group keys and time bucket (see
/// the [module docs](self)).
///
/// Steps take `self` and never fail; problems are reported by
/// [`check`](Self::check), which every statement and run verb calls first.
#[derive(Clone)]
#[must_use = "a summary does nothing until it is installed or queried"]
pub struct Summary {
    pub(crate) base: Table,
    pub(crate) time: AnyColumn,
    pub(crate) zoned: bool,
    pub(crate) bucket: Bucket,
    pub(crate) keys: Vec<AnyColumn>,
    pub(crate) measures: Vec<Measure>,
    zone: String,
    name: Option<Ident>,
    bucket_col: Ident,
    count_col: Ident,
    problems: Problems,
}

impl fmt::Debug for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Summary")
            .field("base", &self.base)
            .field("time", &self.time)
            .field("bucket", &self.bucket)
            .field("zone", &self.zone)
            .field("keys", &self.keys)
            .field("measures", &self.measures)
            .field("name", &self.table_name())
            .finish()
    }
}

/// The table without its alias (DDL targets use real names).
fn plain(table: &Table) -> Table {
    match table.schema() {
        Some(schema) => Table::in_schema(schema.as_str(), table.name().as_str()),
        None => Table::new(table.name().as_str()),
    }
    .unwrap_or_else(|_| table.clone())
}

impl Summary {
    /// A summary of `time`'s table, bucketed by `bucket` on `time`
    /// (`timestamptz` or `timestamp`). With no [`key`](Self::key) it keeps
    /// one row per bucket.
    pub fn new<T: BucketTime>(time: &Column<T>, bucket: Bucket) -> Summary {
        Summary {
            base: plain(time.table()),
            time: time.erase().of(&plain(time.table())),
            zoned: T::ZONED,
            bucket,
            keys: Vec::new(),
            measures: Vec::new(),
            zone: "UTC".to_owned(),
            name: None,
            bucket_col: Ident::fixed(BUCKET_COLUMN),
            count_col: Ident::fixed(COUNT_COLUMN),
            problems: Problems::default(),
        }
    }

    fn step(mut self, f: impl FnOnce(&mut Self) -> Result<()>) -> Self {
        let r = f(&mut self);
        self.problems.note(r);
        self
    }

    /// Groups by `col` too (a column of the base table; NULL is a group of
    /// its own). Keys come first in the summary, in the order given.
    pub fn key<T: SqlType>(self, col: &Column<T>) -> Summary {
        let col = col.erase();
        self.step(|s| {
            col.check_on(&s.base, "key", "base")?;
            let col = col.of(&s.base);
            if s.keys.iter().any(|k| k.name() == col.name()) {
                return Err(Error::spec(
                    "key",
                    format!("{} is already a key", col.name()),
                ));
            }
            s.keys.push(col);
            Ok(())
        })
    }

    /// Keeps `measure` too.
    pub fn measure(self, measure: Measure) -> Summary {
        self.step(|s| {
            measure.problems.check()?;
            measure.column.check_on(&s.base, "measure", "base")?;
            let column = measure.column.of(&s.base);
            s.measures.push(Measure { column, ..measure });
            Ok(())
        })
    }

    /// The zone `timestamptz` times are bucketed in (an IANA name such as
    /// `Europe/Paris`, or `UTC`, the default). Names are letters, digits
    /// and `/ _ + -` only; one the server does not know fails when the
    /// summary is installed. Ignored for a `timestamp` time column.
    pub fn zone(self, zone: &str) -> Summary {
        self.step(|s| {
            let ok = !zone.is_empty()
                && zone.len() <= 64
                && zone
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_+-".contains(c));
            if !ok {
                return Err(Error::spec(
                    "zone",
                    format!("{zone:?} is not a time zone name (letters, digits and / _ + - only)"),
                ));
            }
            zone.clone_into(&mut s.zone);
            Ok(())
        })
    }

    /// Names the summary table (in the base table's schema) instead of the
    /// derived `pgp_summary_<base>_…_<hash>`.
    pub fn named(self, name: &str) -> Summary {
        self.step(|s| {
            s.name = Some(Ident::new(name)?);
            Ok(())
        })
    }

    /// Names the bucket-start column (default [`BUCKET_COLUMN`]).
    pub fn bucket_column(self, name: &str) -> Summary {
        self.step(|s| {
            s.bucket_col = Ident::new(name)?;
            Ok(())
        })
    }

    /// Names the row-count column (default [`COUNT_COLUMN`]).
    pub fn count_column(self, name: &str) -> Summary {
        self.step(|s| {
            s.count_col = Ident::new(name)?;
            Ok(())
        })
    }

    /// The summary table (in the base table's schema).
    #[must_use]
    pub fn table(&self) -> Table {
        let name = self.table_name();
        match self.base.schema() {
            Some(schema) => Table::in_schema(schema.as_str(), name.as_str()),
            None => Table::new(name.as_str()),
        }
        .unwrap_or_else(|_| self.base.clone())
    }

    /// The summary table's name.
    #[must_use]
    pub fn table_name(&self) -> Ident {
        self.name.clone().unwrap_or_else(|| {
            let mut parts = vec![
                "pgp_summary",
                self.base.schema().map_or("", |s| s.as_str()),
                self.base.name().as_str(),
            ];
            parts.extend(self.keys.iter().map(|k| k.name().as_str()));
            parts.push(self.time.name().as_str());
            parts.push(self.bucket.unit());
            derived_name(&parts)
        })
    }

    /// The base table.
    #[must_use]
    pub fn base(&self) -> &Table {
        &self.base
    }

    /// The group keys, in order.
    #[must_use]
    pub fn keys(&self) -> &[AnyColumn] {
        &self.keys
    }

    /// The bucket-start column's name.
    #[must_use]
    pub fn bucket_name(&self) -> &Ident {
        &self.bucket_col
    }

    /// The row-count column's name.
    #[must_use]
    pub fn count_name(&self) -> &Ident {
        &self.count_col
    }

    /// The index on the base table that window queries read the partial
    /// edge buckets with: the time column, `INCLUDE` the keys and the
    /// measured columns, so the edges are an index-only range scan.
    /// Without an index leading with the time column, every window query
    /// (and every report read from the summary) scans the whole base table
    /// for its edges. Built `CONCURRENTLY IF NOT EXISTS`: run it with
    /// [`BuiltQuery::execute_outside_transaction`](crate::BuiltQuery::execute_outside_transaction).
    /// Not needed when another index already leads with the time column
    /// (or with the window's `where_eq` keys, then the time column, as
    /// [`TopN::index`](crate::ops::TopN::index) advises).
    ///
    /// ```
    /// use chrono::{DateTime, Utc};
    /// use pgpatterns::ops::summary::{Bucket, Measure, Summary};
    /// use pgpatterns::{column, table, Decimal};
    /// let orders = table!("orders");
    /// let summary = Summary::new(&column!(orders, "created_at": DateTime<Utc>), Bucket::Day)
    ///     .key(&column!(orders, "user_id": i64))
    ///     .measure(Measure::sum(&column!(orders, "total": Decimal), "total"));
    /// assert_eq!(
    ///     summary.edge_index("orders_edges")?.sql(),
    ///     r#"CREATE INDEX CONCURRENTLY IF NOT EXISTS "orders_edges" ON "orders" ("created_at") INCLUDE ("user_id", "total")"#
    /// );
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    ///
    /// # Errors
    /// As [`check`](Self::check), and [`Error::InvalidIdentifier`] for an
    /// invalid index name.
    pub fn edge_index(&self, name: &str) -> Result<crate::BuiltQuery> {
        Ok(crate::BuiltQuery::schema(&self.edge_index_statement(name)?))
    }

    /// [`edge_index`](Self::edge_index) as a sea-query statement.
    ///
    /// # Errors
    /// As [`edge_index`](Self::edge_index).
    pub fn edge_index_statement(&self, name: &str) -> Result<sea_query::IndexCreateStatement> {
        self.check()?;
        let name = Ident::new(name)?;
        let mut idx = sea_query::Index::create();
        idx.name(crate::ddl::index_name(&name))
            .table(self.base.table_name())
            .col(self.time.iden())
            .concurrently()
            .if_not_exists();
        let mut included: Vec<&Ident> = vec![self.time.name()];
        for c in self
            .keys
            .iter()
            .chain(self.measures.iter().map(|m| &m.column))
        {
            if !included.contains(&c.name()) {
                included.push(c.name());
                idx.include(c.iden());
            }
        }
        Ok(idx)
    }

    /// Checks the summary as a whole: the first problem a step recorded,
    /// then names used twice among the keys, the bucket and count columns
    /// and the measures.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] or [`Error::InvalidIdentifier`]: see each
    /// step.
    pub fn check(&self) -> Result<()> {
        self.kept().map(|_| ())
    }

    /// The checked measures, with the names of sums' companion counts.
    pub(crate) fn kept(&self) -> Result<Vec<Kept>> {
        self.problems.check()?;
        let mut names: Vec<&str> = self.keys.iter().map(|k| k.name().as_str()).collect();
        names.push(self.bucket_col.as_str());
        names.push(self.count_col.as_str());
        let mut kept = Vec::with_capacity(self.measures.len());
        for m in &self.measures {
            let name = m
                .name
                .clone()
                .ok_or_else(|| Error::spec("measure", "a measure has no valid name"))?;
            let nonnull = match m.kind {
                Kind::Sum(_) => Some(derived_name(&["pgp_n", name.as_str()])),
                Kind::Count => None,
            };
            kept.push(Kept {
                name,
                column: m.column.clone(),
                kind: m.kind,
                nonnull,
            });
        }
        for k in &kept {
            names.push(k.name.as_str());
            if let Some(n) = &k.nonnull {
                names.push(n.as_str());
            }
        }
        let mut sorted = names.clone();
        sorted.sort_unstable();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::spec(
                "measure",
                format!(
                    "the summary column name {:?} is used twice (keys, bucket and count columns \
                     and measures need distinct names)",
                    w[0]
                ),
            ));
        }
        Ok(kept)
    }

    /// The zone as a bound parameter.
    pub(crate) fn zone_param(&self) -> Expr {
        self.zone.clone().param()
    }

    /// The zone as text.
    pub(crate) fn zone_name(&self) -> &str {
        &self.zone
    }
}

#[cfg(test)]
mod tests;
