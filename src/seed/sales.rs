//! Seed 003's `sale` table: the article's 13-row sample, and a large
//! generated table of the same shape for timing the dashboard.

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::exec::{run_blocking, BlockingExecutor};
use crate::rollup::{Agg, Rollup};
use crate::{BuiltQuery, Column, Executor, Progress, Result, SqlType, Table};

/// The sample table's name.
pub const SAMPLE_TABLE: &str = "sale";
/// The generated table's name.
pub const LARGE_TABLE: &str = "sale_large";
/// Merchants in the generated table.
pub const MERCHANTS: i64 = 50;
/// Devices per merchant in the generated table.
pub const DEVICES: i64 = 20;
/// Distinct users in the generated table.
pub const USERS: i64 = 100_000;

const SAMPLE: &str = "
CREATE TABLE sale (
    id integer,
    merchant varchar,
    device varchar,
    user_id integer,
    charged_amount integer,
    sold_at timestamp
);
INSERT INTO sale (id, merchant, device, user_id, charged_amount, sold_at) VALUES
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

/// Creates `sale` with the article's 13 rows (seed 003, verbatim), in the
/// current schema.
///
/// # Errors
/// The executor's errors (e.g. the table exists).
pub async fn sample<E: Executor>(e: &E) -> Result<()> {
    e.run_script(SAMPLE).await
}

/// [`sample`] on a blocking client (`postgres::Client`,
/// `postgres::Transaction`), from the same code.
///
/// # Errors
/// As [`sample`].
pub fn sample_blocking<C>(e: &mut C) -> Result<()>
where
    C: BlockingExecutor + Send,
    C::Row: Send,
{
    run_blocking(e, async |e| sample(e).await)
}

const LARGE: &str = "
CREATE TABLE sale_large (
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
INSERT INTO sale_large (id, merchant, device, user_id, charged_amount, sold_at)
SELECT g::int4,
       'merchant ' || lpad((abs(hashint8(g)) % $3::int8)::text, 2, '0'),
       'D' || (1 + abs(hashint8(g * 7)) % $4::int8)::text,
       (1 + abs(hashint8(g * 13)) % $5::int8)::int4,
       (1 + abs(hashint8(g * 31)) % 500)::int4,
       ($6::timestamptz AT TIME ZONE 'UTC') - (abs(hashint8(g * 17)) % 31536000) * interval '1 second'
FROM generate_series($1::int8, $2::int8) AS g";

/// Creates `sale_large` with `rows` generated sales (50 merchants × 20
/// devices, 100 000 users, amounts 1–500, a year of timestamps before
/// `now`), loaded server-side in batches of `batch` rows, then analyzed.
/// `progress` is called after each batch (stage `"sales"`).
///
/// # Errors
/// The executor's errors; [`Error::InvalidSpec`](crate::Error::InvalidSpec)
/// for `rows < 1`, `rows` above [`MAX_SEED_ROWS`](super::MAX_SEED_ROWS) or
/// `batch < 1`.
pub async fn generate<E: Executor>(
    e: &E,
    rows: i64,
    batch: i64,
    now: DateTime<Utc>,
    mut progress: impl FnMut(Progress),
) -> Result<()> {
    super::check_rows("rows", rows, 1)?;
    crate::Error::at_least("batch", batch, 1)?;
    e.run_script(LARGE).await?;
    progress(Progress::new("sales", 0, Some(rows as u64)));
    for (first, last) in super::ranges(rows, batch) {
        let q = BuiltQuery::fixed_with(
            LARGE_BATCH,
            [
                first.into_value(),
                last.into_value(),
                MERCHANTS.into_value(),
                DEVICES.into_value(),
                USERS.into_value(),
                now.into_value(),
            ],
        );
        e.run(&q).await?;
        progress(Progress::new("sales", last as u64, Some(rows as u64)));
    }
    e.run_script("ANALYZE sale_large").await
}

/// [`generate`] on a blocking client (`postgres::Client`,
/// `postgres::Transaction`), from the same code.
///
/// # Errors
/// As [`generate`].
pub fn generate_blocking<C>(
    e: &mut C,
    rows: i64,
    batch: i64,
    now: DateTime<Utc>,
    progress: impl FnMut(Progress),
) -> Result<()>
where
    C: BlockingExecutor + Send,
    C::Row: Send,
{
    run_blocking(e, async |e| generate(e, rows, batch, now, progress).await)
}

/// Typed handles on a seeded sale table ([`SAMPLE_TABLE`] or
/// [`LARGE_TABLE`]; both have the same columns), and the article's
/// dashboard as a [`Rollup`].
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
}

impl SalesTables {
    /// The article's 13-row [`SAMPLE_TABLE`].
    pub fn sample() -> SalesTables {
        SalesTables::new(Table::fixed(SAMPLE_TABLE))
    }

    /// The generated [`LARGE_TABLE`].
    pub fn large() -> SalesTables {
        SalesTables::new(Table::fixed(LARGE_TABLE))
    }

    fn new(table: Table) -> SalesTables {
        SalesTables {
            id: table.fixed_column("id"),
            merchant: table.fixed_column("merchant"),
            device: table.fixed_column("device"),
            user_id: table.fixed_column("user_id"),
            charged_amount: table.fixed_column("charged_amount"),
            sold_at: table.fixed_column("sold_at"),
            table,
        }
    }

    /// Seed 003's dashboard, in one query: `total` (`count(id)`) and
    /// `avg_charged_amount` per (merchant, device), plus the summary line
    /// (`GROUPING SETS ((merchant, device), ())`). `distinct` adds
    /// `unique_users`, a `count(DISTINCT user_id)`.
    ///
    /// # Errors
    /// None in practice (the names are fixed); the [`Rollup`] builders'
    /// errors are passed on.
    pub fn dashboard(&self, distinct: bool) -> Result<Rollup> {
        let mut r = Rollup::new(&self.table);
        r.dimension(&self.merchant)?;
        r.dimension(&self.device)?;
        r.metric("total", Agg::count(&self.id))?;
        r.metric("avg_charged_amount", Agg::avg(&self.charged_amount))?;
        if distinct {
            r.metric("unique_users", Agg::count_distinct(&self.user_id))?;
        }
        r.with_total()?;
        Ok(r)
    }
}
