//! Sales: the 13-row sample `sale` table of the classic `GROUPING SETS`
//! dashboard example, and a large generated table of the same shape,
//! `sale_large`, for timing the dashboard.
//!
//! ```no_run
//! # #[cfg(feature = "tokio-postgres")]
//! # async fn demo(client: tokio_postgres::Client) -> pgpatterns::Result<()> {
//! use pgpatterns::seed::sales::SalesSeed;
//! let sample = SalesSeed::sample();
//! sample.run(&client, |_| {}).await?;
//! let rows = sample.tables().dashboard(true).fetch_all(&client).await?;
//! let large = SalesSeed::new(1_000_000);
//! large.run(&client, |p| eprintln!("{} {}", p.stage, p.done)).await?;
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};

use super::Names;
use crate::exec::{run_blocking, BlockingExecutor};
use crate::rollup::{Agg, Dim, Metric, Rollup};
use crate::Decimal;
use crate::{BuiltQuery, Column, Error, Executor, Progress, Result, SqlType, Table};

/// The sample table's default name.
pub const SAMPLE_TABLE: &str = "sale";
/// The generated table's default name.
pub const LARGE_TABLE: &str = "sale_large";
/// Merchants in the generated table.
pub const MERCHANTS: i64 = 50;
/// Devices per merchant in the generated table.
pub const DEVICES: i64 = 20;
/// Distinct users in the generated table.
pub const USERS: i64 = 100_000;
/// Rows in the sample table.
pub const SAMPLE_ROWS: u64 = 13;

const SAMPLE_NAMES: &[&str] = &[SAMPLE_TABLE];
const LARGE_NAMES: &[&str] = &[LARGE_TABLE];

const SAMPLE: &str = "
CREATE TABLE {sale} (
    id integer,
    merchant varchar,
    device varchar,
    user_id integer,
    charged_amount integer,
    sold_at timestamp
);
INSERT INTO {sale} (id, merchant, device, user_id, charged_amount, sold_at) VALUES
    (1, 'Walmart', 'D1', 1, 54, NOW() + INTERVAL '1 days'),
    (2, 'Walmart', 'D1', 1, 100, NOW() + INTERVAL '2 days'),
    (3, 'Walmart', 'D2', 1, 22, NOW() + INTERVAL '1 days'),
    (4, 'Walmart', 'D2', 3, 14, NOW() + INTERVAL '3 days'),
    (5, 'Walmart', 'D2', 4, 15, NOW() + INTERVAL '4 days'),
    (6, 'Walmart', 'D3', 2, 29, NOW() + INTERVAL '1 days'),
    (7, 'Walmart', 'D3', 2, 45, NOW() + INTERVAL '3 days'),
    (8, 'Costco', 'D1', 1, 47, NOW() + INTERVAL '5 days'),
    (9, 'Costco', 'D1', 4, 223, NOW() + INTERVAL '1 days'),
    (10, 'Costco', 'D1', 5, 67, NOW() + INTERVAL '2 days'),
    (11, 'Costco', 'D4', 1, 25, NOW() + INTERVAL '5 days'),
    (12, 'Costco', 'D5', 3, 125, NOW() + INTERVAL '4 days'),
    (13, 'Costco', 'D5', 4, 150, NOW() + INTERVAL '1 days');";

const LARGE: &str = "
CREATE TABLE {sale_large} (
    id integer NOT NULL,
    merchant varchar NOT NULL,
    device varchar NOT NULL,
    user_id integer NOT NULL,
    charged_amount integer NOT NULL,
    sold_at timestamp NOT NULL
)";

/// One batch: merchants, devices and users spread by hashes of the id, so
/// the data is the same for the same `rows` whatever the batch size.
const LARGE_BATCH: &str = "
INSERT INTO {sale_large} (id, merchant, device, user_id, charged_amount, sold_at)
SELECT g::int4,
       'merchant ' || lpad((abs(hashint8(g)) % $3::int8)::text, 2, '0'),
       'D' || (1 + abs(hashint8(g * 7)) % $4::int8)::text,
       (1 + abs(hashint8(g * 13)) % $5::int8)::int4,
       (1 + abs(hashint8(g * 31)) % 500)::int4,
       ($6::timestamptz AT TIME ZONE 'UTC') - (abs(hashint8(g * 17)) % 31536000) * interval '1 second'
FROM generate_series($1::int8, $2::int8) AS g";

/// Generator of a sale table: the 13-row [`sample`](Self::sample) (table
/// `sale`) or [`new(rows)`](Self::new) generated rows (table `sale_large`).
/// See the [module docs](self) and, for what all seeders share, the
/// [`seed`](super) module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SalesSeed {
    /// `None`: the sample.
    rows: Option<i64>,
    batch: i64,
    now: Option<DateTime<Utc>>,
    logged: bool,
    replace: bool,
    names: Names,
}

super::common_options!(SalesSeed);

/// What [`SalesSeed::run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct SalesReport {
    /// Sales inserted.
    pub rows: u64,
    /// The newest possible sale time of generated rows: the one given to
    /// [`SalesSeed::now`], or the client's clock at the start of the run.
    /// (The sample's times are the server's `NOW()` plus 1 to 5 days.)
    pub now: DateTime<Utc>,
    /// Time spent inserting rows.
    pub load: Duration,
    /// Time spent on `VACUUM ANALYZE`.
    pub finish: Duration,
}

impl SalesSeed {
    /// `rows` generated sales (50 merchants × 20 devices, 100 000 users,
    /// amounts 1–500, a year of timestamps before `now`), 250 000 per batch,
    /// into a new unlogged table `sale_large` of the current schema.
    #[must_use]
    pub fn new(rows: i64) -> SalesSeed {
        SalesSeed {
            rows: Some(rows),
            batch: 250_000,
            now: None,
            logged: false,
            replace: false,
            names: Names::new(LARGE_NAMES),
        }
    }

    /// The classic 13-row sample, verbatim, into a new unlogged table `sale`
    /// of the current schema (the batch size and `now` do not apply).
    #[must_use]
    pub fn sample() -> SalesSeed {
        SalesSeed {
            rows: None,
            names: Names::new(SAMPLE_NAMES),
            ..SalesSeed::new(0)
        }
    }

    /// Generated rows per `INSERT` (and per progress report); default
    /// 250 000.
    #[must_use]
    pub fn batch_size(mut self, rows: i64) -> SalesSeed {
        self.batch = rows;
        self
    }

    /// The newest possible sale time of generated rows (default: the
    /// client's clock at [`run`](Self::run)).
    #[must_use]
    pub fn now(mut self, now: DateTime<Utc>) -> SalesSeed {
        self.now = Some(now);
        self
    }

    /// Prepends `prefix` to the table name (`"a_"`: `a_sale` or
    /// `a_sale_large`), replacing an earlier prefix.
    ///
    /// ```
    /// use pgpatterns::seed::sales::SalesSeed;
    /// let seed = SalesSeed::sample().prefix("a_")?;
    /// assert_eq!(seed.tables().table.display_name(), "a_sale");
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] when the name with the prefix is longer
    /// than 63 bytes or the prefix contains a NUL character.
    pub fn prefix(mut self, prefix: impl AsRef<str>) -> Result<SalesSeed> {
        self.names = self.names.with_prefix(prefix.as_ref())?;
        Ok(self)
    }

    /// Typed handles on the table this seed creates (with its prefix and
    /// schema), and the dashboard over it.
    #[must_use]
    pub fn tables(&self) -> SalesTables {
        SalesTables::new(self.names.table(0))
    }

    /// Creates the table and fills it, reporting progress after each batch
    /// (stage `"sales"`, counting rows) and after `VACUUM ANALYZE` (stage
    /// `"finish"`).
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for generated `rows < 1`, `rows` above
    /// [`MAX_SEED_ROWS`](super::MAX_SEED_ROWS) or a batch size below 1,
    /// before anything is sent; database errors otherwise (e.g. the table
    /// exists and [`replace`](Self::replace) is off).
    pub async fn run<E: Executor>(
        &self,
        db: &E,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<SalesReport> {
        if let Some(rows) = self.rows {
            super::check_rows("rows", rows, 1)?;
        }
        Error::at_least("batch_size", self.batch, 1)?;
        let names = &self.names;
        let now = self.now.unwrap_or_else(Utc::now);
        let started = Instant::now();
        if let Some(sql) = names.create_schema() {
            db.run_script(&sql).await?;
        }
        if self.replace {
            db.run_script(&names.drop_tables(&[0])).await?;
        }
        let rows = match self.rows {
            None => {
                progress(Progress::new("sales", 0, Some(SAMPLE_ROWS)));
                db.run_script(&names.create(SAMPLE, self.logged)).await?;
                progress(Progress::new("sales", SAMPLE_ROWS, Some(SAMPLE_ROWS)));
                SAMPLE_ROWS
            }
            Some(rows) => {
                db.run_script(&names.create(LARGE, self.logged)).await?;
                let insert = names.render(LARGE_BATCH);
                progress(Progress::new("sales", 0, Some(rows as u64)));
                for (first, last) in super::ranges(rows, self.batch) {
                    let q = BuiltQuery::generated_with(
                        insert.clone(),
                        [
                            first.into_value(),
                            last.into_value(),
                            MERCHANTS.into_value(),
                            DEVICES.into_value(),
                            USERS.into_value(),
                            now.into_value(),
                        ],
                    );
                    db.run(&q).await?;
                    progress(Progress::new("sales", last as u64, Some(rows as u64)));
                }
                rows as u64
            }
        };
        let load = started.elapsed();
        let finishing = Instant::now();
        progress(Progress::new("finish", 0, Some(1)));
        db.run_script(&names.render(match self.rows {
            // VACUUM too (alone in its call): the visibility map set, and
            // nothing left for autovacuum to do while a benchmark runs.
            None => "VACUUM ANALYZE {sale}",
            Some(_) => "VACUUM ANALYZE {sale_large}",
        }))
        .await?;
        progress(Progress::new("finish", 1, Some(1)));
        Ok(SalesReport {
            rows,
            now,
            load,
            finish: finishing.elapsed(),
        })
    }

    /// [`run`](Self::run) on a blocking client (`postgres::Client`,
    /// `postgres::Transaction`), from the same code.
    ///
    /// # Errors
    /// As [`run`](Self::run).
    pub fn run_blocking<C>(
        &self,
        db: &mut C,
        progress: impl FnMut(Progress) + Send,
    ) -> Result<SalesReport>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.run(db, progress).await)
    }
}

/// Typed handles on the table of a [`SalesSeed`] (the sample and the
/// generated table have the same columns), and the classic dashboard as a
/// [`Rollup`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SalesTables {
    /// The table.
    pub table: Table,
    /// `id`
    pub id: Column<i32>,
    /// `merchant`
    pub merchant: Column<String>,
    /// `device`
    pub device: Column<String>,
    /// `user_id`
    pub user_id: Column<i32>,
    /// `charged_amount`
    pub charged_amount: Column<i32>,
    /// `sold_at`
    pub sold_at: Column<NaiveDateTime>,
    /// The dashboard's `merchant` dimension (read rows of
    /// [`dashboard`](Self::dashboard) with it).
    pub by_merchant: Dim<String>,
    /// The dashboard's `device` dimension.
    pub by_device: Dim<String>,
    /// The dashboard's `total` metric: `count(id)`.
    pub total: Metric<i64>,
    /// The dashboard's `avg_charged_amount` metric.
    pub avg_charged_amount: Metric<Decimal>,
    /// The dashboard's `unique_users` metric: `count(DISTINCT user_id)`.
    pub unique_users: Metric<i64>,
}

impl SalesTables {
    /// The handles of [`SalesSeed::sample`]'s default name, `sale`: the
    /// same as `SalesSeed::sample().tables()`.
    #[must_use]
    pub fn sample() -> SalesTables {
        SalesTables::new(Table::fixed(SAMPLE_TABLE))
    }

    /// The handles of [`SalesSeed::new`]'s default name, `sale_large`: the
    /// same as `SalesSeed::new(rows).tables()`.
    #[must_use]
    pub fn large() -> SalesTables {
        SalesTables::new(Table::fixed(LARGE_TABLE))
    }

    fn new(table: Table) -> SalesTables {
        let id = table.fixed_column("id");
        let merchant = table.fixed_column("merchant");
        let device = table.fixed_column("device");
        let user_id = table.fixed_column("user_id");
        let charged_amount = table.fixed_column("charged_amount");
        SalesTables {
            by_merchant: Dim::new(&merchant),
            by_device: Dim::new(&device),
            total: Metric::new("total", Agg::count(&id)),
            avg_charged_amount: Metric::new("avg_charged_amount", Agg::avg(&charged_amount)),
            unique_users: Metric::new("unique_users", Agg::count_distinct(&user_id)),
            id,
            merchant,
            device,
            user_id,
            charged_amount,
            sold_at: table.fixed_column("sold_at"),
            table,
        }
    }

    /// The classic dashboard, in one query: `total` (`count(id)`) and
    /// `avg_charged_amount` per (merchant, device), plus the summary line
    /// (`GROUPING SETS ((merchant, device), ())`). `distinct` adds
    /// `unique_users`, a `count(DISTINCT user_id)`. Read its rows with this
    /// value's handles ([`by_merchant`](Self::by_merchant),
    /// [`total`](Self::total), …).
    pub fn dashboard(&self, distinct: bool) -> Rollup {
        let r = Rollup::new(&self.table)
            .dimension(&self.by_merchant)
            .dimension(&self.by_device)
            .metric(&self.total)
            .metric(&self.avg_charged_amount);
        let r = if distinct {
            r.metric(&self.unique_users)
        } else {
            r
        };
        r.with_total()
    }
}
