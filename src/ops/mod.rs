//! Reports and maintenance for a busy orders database, built on the same
//! typed schema handles and executor as the query families.
//!
//! - [`top_n`]: top N entities by a metric over a time window with filters
//!   ("top 10 users by total spent in the last 30 days, completed orders"),
//!   and its index advice;
//! - [`recent`]: bounded per-owner history ("last 50 products viewed"),
//!   upsert + trim under a per-owner lock;
//! - [`archive`]: move old rows to an archive twin in atomic, resumable
//!   batches, and read both as one relation;
//! - [`index`]: `CREATE INDEX CONCURRENTLY`, with detection and rebuild of
//!   the INVALID index a failed concurrent build leaves behind;
//! - [`batch`]: delete rows matching a condition in batches;
//! - [`matview`]: a report stored as a materialized view — created and
//!   dropped safely, refreshed concurrently, its freshness checked, read
//!   back as the report's own rows;
//! - [`partition`]: range-partition a live table by time without downtime
//!   (plan, resumable copy + mirror, cutover, rollback), partitions made
//!   ahead, retention by detaching, cold export with `COPY`;
//! - [`summary`]: a bucketed summary table (counts and sums per group keys
//!   and hour or day) kept exact by statement-level triggers, with window
//!   queries and top-N reports that read it instead of the base table.

use std::time::Duration;

pub mod archive;
pub mod batch;
pub mod index;
pub mod matview;
pub mod partition;
pub mod recent;
pub mod report_cache;
pub mod summary;
pub mod top_n;

pub use matview::MatView;
pub use report_cache::ReportCache;
pub use summary::{Bucket, Measure, Summary, SummaryWindow};
pub use top_n::{TopN, TopRow};
/// What a batched operation did ([`archive::Archiver::run`],
/// [`batch::BatchDelete::run`], [`recent::RecentHistory::trim_all`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BatchReport {
    /// Rows moved or deleted.
    pub rows: u64,
    /// Batches (statements or transactions) run, including a final empty one.
    pub batches: u64,
    /// Wall time of the whole run.
    pub elapsed: Duration,
}
