//! A shop: users and their orders (status, amount, time), for the top-N
//! report ("top 10 users by total spent in the last 30 days, completed
//! orders"). Tables (default names): `shop_users`, `shop_orders`.
//!
//! ```no_run
//! # #[cfg(feature = "tokio-postgres")]
//! # async fn demo(client: tokio_postgres::Client) -> pgpatterns::Result<()> {
//! use pgpatterns::ops::TopN;
//! use pgpatterns::seed::shop::ShopSeed;
//! let seed = ShopSeed::new(1_000_000).users(50_000);
//! let report = seed.run(&client, |_| {}).await?;
//! let t = seed.tables();
//! let top = TopN::new(&t.user_id, &t.order_user_id, &t.total_amount, 10)
//!     .window_since(&t.order_created_at, report.now - chrono::Duration::days(30))
//!     .where_eq(&t.status, "completed")
//!     .fetch_all(&client)
//!     .await?;
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use super::Names;
use crate::exec::{run_blocking, BlockingExecutor};
use crate::schema::{Column, Table};
use crate::{BuiltQuery, Error, Executor, Progress, Result, SqlType};

/// Order statuses, with their share of orders: completed 60 %, pending 15 %,
/// cancelled 15 %, refunded 10 %.
pub const STATUSES: [&str; 4] = ["completed", "pending", "cancelled", "refunded"];

/// Default names of the tables.
const NAMES: &[&str] = &["shop_users", "shop_orders"];
const USERS_TABLE: usize = 0;
const ORDERS_TABLE: usize = 1;

const TABLES: &str = "
CREATE TABLE {shop_users} (
    id bigint NOT NULL,
    username text NOT NULL,
    email text NOT NULL,
    created_at timestamptz NOT NULL
);
CREATE TABLE {shop_orders} (
    id bigint NOT NULL,
    user_id bigint NOT NULL,
    status text NOT NULL,
    total_amount numeric(12, 2) NOT NULL,
    created_at timestamptz NOT NULL
)";

const USERS: &str = "
INSERT INTO {shop_users} (id, username, email, created_at)
SELECT g, 'user' || g, 'user' || g || '@example.com',
       $3::timestamptz - (abs(hashint8(g)) % 63072000) * interval '1 second'
FROM generate_series($1::int8, $2::int8) AS g";

/// Orders spread over `days` before `now`; a few heavy buyers (the square
/// of a uniform number skews user ids towards 1).
const ORDERS: &str = "
INSERT INTO {shop_orders} (id, user_id, status, total_amount, created_at)
SELECT g,
       1 + floor($4::int8 * power((abs(hashint8(g * 3)) % 1000000) / 1000000.0, 2))::int8,
       CASE WHEN h < 60 THEN 'completed' WHEN h < 75 THEN 'pending'
            WHEN h < 90 THEN 'cancelled' ELSE 'refunded' END,
       ((1 + abs(hashint8(g * 7)) % 50000) / 100.0)::numeric(12, 2),
       $3::timestamptz - (abs(hashint8(g * 11)) % ($5::int8 * 86400)) * interval '1 second'
FROM generate_series($1::int8, $2::int8) AS g,
     LATERAL (SELECT abs(hashint8(g * 5)) % 100 AS h) AS s";

const KEYS: &str = "
ALTER TABLE {shop_users} ADD PRIMARY KEY (id);
ALTER TABLE {shop_orders} ADD PRIMARY KEY (id);
ALTER TABLE {shop_orders} ADD FOREIGN KEY (user_id) REFERENCES {shop_users} (id)";

// VACUUM (one statement per call: it cannot run in the implicit
// transaction of a multi-statement batch) sets the visibility map, so
// index-only scans can skip the heap; ANALYZE gives the planner stats.
const VACUUM_USERS: &str = "VACUUM ANALYZE {shop_users}";
const VACUUM_ORDERS: &str = "VACUUM ANALYZE {shop_orders}";

/// Generator of a shop's users and orders. See the [module docs](self)
/// and, for what all seeders share, the [`seed`](super) module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShopSeed {
    users: i64,
    orders: i64,
    days: i64,
    batch: i64,
    now: Option<DateTime<Utc>>,
    logged: bool,
    replace: bool,
    names: Names,
}

super::common_options!(ShopSeed);

/// What [`ShopSeed::run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShopReport {
    /// Users inserted.
    pub users: u64,
    /// Orders inserted.
    pub orders: u64,
    /// The newest possible order time: the one given to [`ShopSeed::now`],
    /// or the client's clock at the start of the run.
    pub now: DateTime<Utc>,
    /// Time spent inserting rows.
    pub load: Duration,
    /// Time spent on the keys and `VACUUM ANALYZE`.
    pub finish: Duration,
}

impl ShopSeed {
    /// `orders` orders of 100 000 users, spread over the 365 days before
    /// `now`, 200 000 rows per batch, into new unlogged tables `shop_users`
    /// and `shop_orders` of the current schema. No index serves the top-N
    /// report yet: see [`TopN::index`](crate::ops::top_n::TopN::index).
    #[must_use]
    pub fn new(orders: i64) -> ShopSeed {
        ShopSeed {
            users: 100_000,
            orders,
            days: 365,
            batch: 200_000,
            now: None,
            logged: false,
            replace: false,
            names: Names::new(NAMES),
        }
    }

    /// How many users place the orders (default 100 000).
    #[must_use]
    pub fn users(mut self, users: i64) -> ShopSeed {
        self.users = users;
        self
    }

    /// Orders are spread over this many days before `now` (default 365).
    #[must_use]
    pub fn days(mut self, days: i64) -> ShopSeed {
        self.days = days;
        self
    }

    /// Rows per `INSERT` (and per progress report); default 200 000.
    #[must_use]
    pub fn batch_size(mut self, rows: i64) -> ShopSeed {
        self.batch = rows;
        self
    }

    /// The newest possible order time (default: the client's clock at
    /// [`run`](Self::run)).
    #[must_use]
    pub fn now(mut self, now: DateTime<Utc>) -> ShopSeed {
        self.now = Some(now);
        self
    }

    /// Prepends `prefix` to every table name (`"a_"`: `a_shop_users`,
    /// `a_shop_orders`), replacing an earlier prefix.
    ///
    /// ```
    /// use pgpatterns::seed::shop::ShopSeed;
    /// let seed = ShopSeed::new(1000).prefix("a_")?;
    /// assert_eq!(seed.tables().orders.display_name(), "a_shop_orders");
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] when a name with the prefix is longer
    /// than 63 bytes or the prefix contains a NUL character.
    pub fn prefix(mut self, prefix: impl AsRef<str>) -> Result<ShopSeed> {
        self.names = self.names.with_prefix(prefix.as_ref())?;
        Ok(self)
    }

    /// Typed handles on the tables this seed creates (with its prefix and
    /// schema).
    #[must_use]
    pub fn tables(&self) -> ShopTables {
        ShopTables::new(&self.names)
    }

    /// Creates the tables and fills them server-side in batches (stages
    /// `"users"` and `"orders"`, counting rows), then adds the keys (after
    /// the load, which is faster) and runs `VACUUM ANALYZE` (stage
    /// `"finish"`, counting steps).
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for users, days or batch size below 1, orders
    /// below 0, or users or orders above
    /// [`MAX_SEED_ROWS`](super::MAX_SEED_ROWS), before anything is sent;
    /// database errors otherwise (e.g. a table exists and
    /// [`replace`](Self::replace) is off).
    pub async fn run<E: Executor>(
        &self,
        db: &E,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<ShopReport> {
        super::check_rows("users", self.users, 1)?;
        super::check_rows("orders", self.orders, 0)?;
        Error::at_least("days", self.days, 1)?;
        // Keeps `days * 86400` seconds within an int8.
        if self.days > 1_000_000 {
            return Err(Error::spec(
                "days",
                format!("at most 1000000, got {}", self.days),
            ));
        }
        Error::at_least("batch_size", self.batch, 1)?;
        let names = &self.names;
        let now = self.now.unwrap_or_else(Utc::now);
        let started = Instant::now();
        if let Some(sql) = names.create_schema() {
            db.run_script(&sql).await?;
        }
        if self.replace {
            db.run_script(&names.drop_tables(&[ORDERS_TABLE, USERS_TABLE]))
                .await?;
        }
        db.run_script(&names.create(TABLES, self.logged)).await?;
        for (stage, total, sql) in [
            ("users", self.users, USERS),
            ("orders", self.orders, ORDERS),
        ] {
            let sql = names.render(sql);
            progress(Progress::new(stage, 0, Some(total as u64)));
            for (first, last) in super::ranges(total, self.batch) {
                let mut values = vec![first.into_value(), last.into_value(), now.into_value()];
                if stage == "orders" {
                    values.push(self.users.into_value());
                    values.push(self.days.into_value());
                }
                db.run(&BuiltQuery::generated_with(sql.clone(), values))
                    .await?;
                progress(Progress::new(stage, last as u64, Some(total as u64)));
            }
        }
        let load = started.elapsed();
        let finishing = Instant::now();
        let steps = [KEYS, VACUUM_USERS, VACUUM_ORDERS];
        let n = steps.len() as u64;
        progress(Progress::new("finish", 0, Some(n)));
        for (i, step) in steps.into_iter().enumerate() {
            db.run_script(&names.render(step)).await?;
            progress(Progress::new("finish", i as u64 + 1, Some(n)));
        }
        Ok(ShopReport {
            users: self.users as u64,
            orders: self.orders as u64,
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
    ) -> Result<ShopReport>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.run(db, progress).await)
    }
}

/// Typed handles on the tables of a [`ShopSeed`] (`shop_users` and
/// `shop_orders` by default; [`Default`] gives those).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ShopTables {
    /// `shop_users`
    pub users: Table,
    /// `shop_users.id`
    pub user_id: Column<i64>,
    /// `shop_users.username`
    pub username: Column<String>,
    /// `shop_users.email`
    pub email: Column<String>,
    /// `shop_users.created_at`
    pub user_created_at: Column<DateTime<Utc>>,
    /// `shop_orders`
    pub orders: Table,
    /// `shop_orders.id`
    pub order_id: Column<i64>,
    /// `shop_orders.user_id`
    pub order_user_id: Column<i64>,
    /// `shop_orders.status`, one of [`STATUSES`]
    pub status: Column<String>,
    /// `shop_orders.total_amount`
    pub total_amount: Column<Decimal>,
    /// `shop_orders.created_at`
    pub order_created_at: Column<DateTime<Utc>>,
}

impl Default for ShopTables {
    /// The handles of [`ShopSeed::new`]'s default names.
    fn default() -> ShopTables {
        ShopTables::new(&Names::new(NAMES))
    }
}

impl ShopTables {
    fn new(names: &Names) -> ShopTables {
        let users = names.table(USERS_TABLE);
        let orders = names.table(ORDERS_TABLE);
        ShopTables {
            user_id: users.fixed_column("id"),
            username: users.fixed_column("username"),
            email: users.fixed_column("email"),
            user_created_at: users.fixed_column("created_at"),
            order_id: orders.fixed_column("id"),
            order_user_id: orders.fixed_column("user_id"),
            status: orders.fixed_column("status"),
            total_amount: orders.fixed_column("total_amount"),
            order_created_at: orders.fixed_column("created_at"),
            users,
            orders,
        }
    }
}
