//! Seed 002's shop: `users` and their `orders` (status, amount, time), for
//! the top-N report ("top 10 users by total spent in the last 30 days,
//! completed orders").

use chrono::{DateTime, Utc};

use crate::exec::{run_blocking, BlockingExecutor};
use crate::{BuiltQuery, Error, Executor, Progress, Result, SqlType};

/// Order statuses, with their share of orders: completed 60 %, pending 15 %,
/// cancelled 15 %, refunded 10 %.
pub const STATUSES: [&str; 4] = ["completed", "pending", "cancelled", "refunded"];

const TABLES: &str = "
CREATE TABLE users (
    id bigint NOT NULL,
    username text NOT NULL,
    email text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE orders (
    id bigint NOT NULL,
    user_id bigint NOT NULL,
    status text NOT NULL,
    total_amount numeric(12, 2) NOT NULL,
    created_at timestamptz NOT NULL
)";

const USERS: &str = "
INSERT INTO users (id, username, email, created_at)
SELECT g, 'user' || g, 'user' || g || '@example.com',
       $3::timestamptz - (abs(hashint8(g)) % 63072000) * interval '1 second'
FROM generate_series($1::int8, $2::int8) AS g";

/// Orders spread over `days` before `now`; a few heavy buyers (the square
/// of a uniform number skews user ids towards 1).
const ORDERS: &str = "
INSERT INTO orders (id, user_id, status, total_amount, created_at)
SELECT g,
       1 + floor($4::int8 * power((abs(hashint8(g * 3)) % 1000000) / 1000000.0, 2))::int8,
       CASE WHEN h < 60 THEN 'completed' WHEN h < 75 THEN 'pending'
            WHEN h < 90 THEN 'cancelled' ELSE 'refunded' END,
       ((1 + abs(hashint8(g * 7)) % 50000) / 100.0)::numeric(12, 2),
       $3::timestamptz - (abs(hashint8(g * 11)) % ($5::int8 * 86400)) * interval '1 second'
FROM generate_series($1::int8, $2::int8) AS g,
     LATERAL (SELECT abs(hashint8(g * 5)) % 100 AS h) AS s";

const KEYS: &str = "
ALTER TABLE users ADD PRIMARY KEY (id);
ALTER TABLE orders ADD PRIMARY KEY (id);
ALTER TABLE orders ADD FOREIGN KEY (user_id) REFERENCES users (id)";

/// How much shop to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShopSize {
    /// Users.
    pub users: i64,
    /// Orders.
    pub orders: i64,
    /// Orders are spread over this many days before `now`.
    pub days: i64,
    /// Rows per INSERT.
    pub batch: i64,
}

impl Default for ShopSize {
    fn default() -> Self {
        ShopSize {
            users: 100_000,
            orders: 1_000_000,
            days: 365,
            batch: 200_000,
        }
    }
}

/// Creates `users` and `orders` in the current schema and fills them
/// server-side in batches, then adds the keys (after the load, which is
/// faster) and runs `VACUUM ANALYZE`. No index serves the top-N report yet: see
/// [`TopN::index`](crate::ops::top_n::TopN::index). `progress` is called
/// after each batch (stages `"users"` and `"orders"`).
///
/// # Errors
/// The executor's errors; [`Error::InvalidSpec`] for a size below 1 or
/// users or orders above [`MAX_SEED_ROWS`](super::MAX_SEED_ROWS).
pub async fn generate<E: Executor>(
    e: &E,
    size: ShopSize,
    now: DateTime<Utc>,
    mut progress: impl FnMut(Progress),
) -> Result<()> {
    if size.users < 1 || size.orders < 0 || size.days < 1 || size.batch < 1 {
        return Err(Error::spec(
            "size",
            format!("users, days and batch must be at least 1, orders at least 0: {size:?}"),
        ));
    }
    super::check_rows("users", size.users, 1)?;
    super::check_rows("orders", size.orders, 0)?;
    e.run_script(TABLES).await?;
    for (stage, total, sql) in [
        ("users", size.users, USERS),
        ("orders", size.orders, ORDERS),
    ] {
        progress(Progress::new(stage, 0, Some(total as u64)));
        for (first, last) in super::ranges(total, size.batch) {
            let mut values = vec![first.into_value(), last.into_value(), now.into_value()];
            if stage == "orders" {
                values.push(size.users.into_value());
                values.push(size.days.into_value());
            }
            e.run(&BuiltQuery::fixed_with(sql, values)).await?;
            progress(Progress::new(stage, last as u64, Some(total as u64)));
        }
    }
    e.run_script(KEYS).await?;
    // VACUUM (one statement per call: it cannot run in the implicit
    // transaction of a multi-statement batch) sets the visibility map, so
    // index-only scans can skip the heap; ANALYZE gives the planner stats.
    e.run_script("VACUUM ANALYZE users").await?;
    e.run_script("VACUUM ANALYZE orders").await
}

/// [`generate`] on a blocking client (`postgres::Client`,
/// `postgres::Transaction`), from the same code.
///
/// # Errors
/// As [`generate`].
pub fn generate_blocking<C>(
    e: &mut C,
    size: ShopSize,
    now: DateTime<Utc>,
    progress: impl FnMut(Progress),
) -> Result<()>
where
    C: BlockingExecutor + Send,
    C::Row: Send,
{
    run_blocking(e, async |e| generate(e, size, now, progress).await)
}
