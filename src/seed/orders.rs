//! Orders and their status history: `orders` and `order_status`, each order
//! following one of three paths — Pending → Complete, Pending → Cancelled,
//! Pending → Complete → Cancelled — with realistic times (orders spread over
//! the year before `now`, each next status 1 s to 2 h after the one before).
//! The data behind "orders whose *latest* status is X".
//!
//! Rows are generated server-side with `generate_series`, one statement per
//! batch and table, into tables without indexes or constraints; primary
//! keys, the foreign key and the advised index are added afterwards, which
//! is several times faster than inserting into indexed, constrained tables.
//! Values are a pure function of the order id and the seed, so a run is
//! reproducible.
//!
//! ```no_run
//! # #[cfg(feature = "tokio-postgres")]
//! # async fn demo(client: tokio_postgres::Client) -> pgpatterns::Result<()> {
//! use pgpatterns::seed::orders::OrdersSeed;
//! let seed = OrdersSeed::new(100_000);
//! let report = seed
//!     .run(&client, |p| eprintln!("{} {}/{:?}", p.stage, p.done, p.total))
//!     .await?;
//! let shop = seed.tables();
//! let complete = shop.latest().status_eq("Complete").count(&client).await?;
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

use super::Names;
use crate::exec::{run_blocking, BlockingExecutor};
use crate::schema::{Column, Table};
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Executor, LatestStatus, Progress, Result};

/// The statuses of the three paths.
pub const STATUSES: [&str; 3] = ["Pending", "Complete", "Cancelled"];

/// Default names: the tables, then the advised index.
const NAMES: &[&str] = &["orders", "order_status", "order_status_latest"];
const ORDERS: usize = 0;
const ORDER_STATUS: usize = 1;

const CREATE: &str = "
CREATE TABLE {orders} (
    id          bigint NOT NULL,
    customer    text NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE TABLE {order_status} (
    id          bigint NOT NULL,
    order_id    bigint NOT NULL,
    status      text NOT NULL,
    created_at  timestamptz NOT NULL
)";

/// Orders `$1..=$2`; `$3` seed, `$4` now. `#` is bigint XOR: each column
/// hashes the id with its own salt.
const INSERT_ORDERS: &str = "
INSERT INTO {orders} (id, customer, created_at)
SELECT g,
       'customer ' || (abs(hashint8(g # $3::int8 # 1)) % 5000),
       $4::timestamptz - (abs(hashint8(g # $3::int8 # 3)) % 31536000) * interval '1 second'
FROM generate_series($1::int8, $2::int8) AS g";

/// The statuses of orders `$1..=$2`, recomputed from the id (no join), one
/// statement per step of the paths: three plain `INSERT … SELECT`s are
/// about twice as fast as one with a `LATERAL (VALUES …)` per order.
/// `$3` seed, `$4` now. Path: `hash % 3` = 0 → Complete, 1 → Cancelled,
/// 2 → Complete → Cancelled; each next status 1 s to 2 h after the last.
const INSERT_STATUSES: [&str; 3] = [
    "
INSERT INTO {order_status} (id, order_id, status, created_at)
SELECT (g - 1) * 3 + 1, g, 'Pending',
       $4::timestamptz - (abs(hashint8(g # $3::int8 # 3)) % 31536000) * interval '1 second'
FROM generate_series($1::int8, $2::int8) AS g",
    "
INSERT INTO {order_status} (id, order_id, status, created_at)
SELECT (g - 1) * 3 + 2, g,
       CASE WHEN abs(hashint8(g # $3::int8 # 2)) % 3 = 1 THEN 'Cancelled' ELSE 'Complete' END,
       $4::timestamptz - (abs(hashint8(g # $3::int8 # 3)) % 31536000) * interval '1 second'
           + (1 + abs(hashint8(g # $3::int8 # 4)) % 7200) * interval '1 second'
FROM generate_series($1::int8, $2::int8) AS g",
    "
INSERT INTO {order_status} (id, order_id, status, created_at)
SELECT (g - 1) * 3 + 3, g, 'Cancelled',
       $4::timestamptz - (abs(hashint8(g # $3::int8 # 3)) % 31536000) * interval '1 second'
           + 2 * (1 + abs(hashint8(g # $3::int8 # 4)) % 7200) * interval '1 second'
FROM generate_series($1::int8, $2::int8) AS g
WHERE abs(hashint8(g # $3::int8 # 2)) % 3 = 2",
];

/// `$6` drafts per order `$1..=$2`, ids after the `3 * $5` of the paths
/// (`$5` the total orders); `$3` seed, `$4` now.
const INSERT_DRAFTS: &str = "
INSERT INTO {order_status} (id, order_id, status, created_at)
SELECT 3 * $5::int8 + (g - 1) * $6::int8 + k, g, 'Draft',
       $4::timestamptz - (abs(hashint8(g # $3::int8 # 3)) % 31536000) * interval '1 second'
           - k * interval '1 minute'
FROM generate_series($1::int8, $2::int8) AS g, generate_series(1, $6::int8) AS k";

const CONSTRAINTS: &str = "
ALTER TABLE {orders} ADD PRIMARY KEY (id);
ALTER TABLE {order_status} ADD PRIMARY KEY (id);
ALTER TABLE {order_status} ADD FOREIGN KEY (order_id) REFERENCES {orders} (id) ON DELETE CASCADE";

const ADVISED_INDEX: &str = "CREATE INDEX {@order_status_latest} \
    ON {order_status} (order_id, created_at DESC, id DESC) INCLUDE (status)";

const SET_MEMORY: &str = "SET LOCAL maintenance_work_mem = '512MB'";

// VACUUM (one statement per call: it cannot run in the implicit
// transaction of a multi-statement batch) sets the visibility map, so
// index-only scans skip the heap from the first query on, and autovacuum
// has nothing left to do on the fresh tables (a benchmark run while it
// works on them measures it too); ANALYZE gives the planner statistics.
const VACUUM: [&str; 2] = ["VACUUM ANALYZE {orders}", "VACUUM ANALYZE {order_status}"];

/// Generator of orders and their status history. See the [module
/// docs](self) and, for what all seeders share, the [`seed`](super)
/// module.
///
/// Tables (default names): `orders`, `order_status`, and the advised index
/// `order_status_latest`.
#[derive(Debug, Clone)]
pub struct OrdersSeed {
    orders: i64,
    batch: i64,
    seed: i64,
    now: Option<DateTime<Utc>>,
    index: bool,
    logged: bool,
    replace: bool,
    drafts: i64,
    names: Names,
}

super::common_options!(OrdersSeed);

/// What [`OrdersSeed::run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OrdersReport {
    /// Orders inserted.
    pub orders: u64,
    /// Status rows inserted.
    pub statuses: u64,
    /// The newest possible order time (the one given to
    /// [`OrdersSeed::now`], or the client's clock at the start of the run).
    pub now: DateTime<Utc>,
    /// Time spent inserting rows.
    pub load: Duration,
    /// Time spent on keys, the foreign key, the index and `VACUUM ANALYZE`.
    pub finish: Duration,
}

impl OrdersSeed {
    /// `orders` orders (about 2.33 status rows each), in batches of 100 000,
    /// with the advised index, into new unlogged tables `orders` and
    /// `order_status` of the current schema.
    #[must_use]
    pub fn new(orders: i64) -> OrdersSeed {
        OrdersSeed {
            orders,
            batch: 100_000,
            seed: 0,
            now: None,
            index: true,
            logged: false,
            replace: false,
            drafts: 0,
            names: Names::new(NAMES),
        }
    }

    /// Long histories: `n` more `Draft` rows per order, one minute apart,
    /// before its `Pending` (default `0`). Latest statuses do not change,
    /// so every count is the same as without them; only the history grows
    /// (about `n + 2.33` rows per order), which is what the history
    /// strategies' speed depends on.
    #[must_use]
    pub fn drafts(mut self, n: i64) -> OrdersSeed {
        self.drafts = n;
        self
    }

    /// Orders per `INSERT` (and per progress report); default 100 000.
    #[must_use]
    pub fn batch_size(mut self, orders: i64) -> OrdersSeed {
        self.batch = orders;
        self
    }

    /// Another seed gives other (equally reproducible) data.
    #[must_use]
    pub fn seed(mut self, seed: i64) -> OrdersSeed {
        self.seed = seed;
        self
    }

    /// The newest possible order time (default: the client's clock at
    /// [`run`](Self::run); the server's `now()` is not used).
    #[must_use]
    pub fn now(mut self, now: DateTime<Utc>) -> OrdersSeed {
        self.now = Some(now);
        self
    }

    /// Whether to create the advised index
    /// `order_status (order_id, created_at DESC, id DESC) INCLUDE (status)`
    /// (default `true`).
    #[must_use]
    pub fn with_index(mut self, index: bool) -> OrdersSeed {
        self.index = index;
        self
    }

    /// Prepends `prefix` to every table and index name (`"a_"`:
    /// `a_orders`, `a_order_status`, `a_order_status_latest`), replacing an
    /// earlier prefix, so several orders datasets can share a schema.
    ///
    /// ```
    /// use pgpatterns::seed::orders::OrdersSeed;
    /// let seed = OrdersSeed::new(1000).prefix("a_")?;
    /// assert_eq!(seed.tables().order_status.display_name(), "a_order_status");
    /// assert!(OrdersSeed::new(1000).prefix("x".repeat(50)).is_err());
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] when a name with the prefix is longer
    /// than 63 bytes or the prefix contains a NUL character.
    pub fn prefix(mut self, prefix: impl AsRef<str>) -> Result<OrdersSeed> {
        self.names = self.names.with_prefix(prefix.as_ref())?;
        Ok(self)
    }

    /// Typed handles on the tables this seed creates (with its prefix and
    /// schema).
    #[must_use]
    pub fn tables(&self) -> OrdersTables {
        OrdersTables::new(&self.names)
    }

    /// Creates the tables and fills them, reporting progress per batch
    /// (stage `"orders"`, in orders) and per finishing step (stage
    /// `"finish"`, in steps).
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for `orders < 0`, a batch size below 1, or
    /// more than [`MAX_SEED_ROWS`](super::MAX_SEED_ROWS) orders (or orders
    /// times drafts),
    /// before anything is sent; the database's error otherwise (e.g. a
    /// table exists and [`replace`](Self::replace) is off).
    pub async fn run<E: Executor>(
        &self,
        db: &E,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<OrdersReport> {
        Error::at_least("orders", self.orders, 0)?;
        Error::at_least("batch_size", self.batch, 1)?;
        Error::at_least("drafts", self.drafts, 0)?;
        super::check_rows("orders", self.orders, 0)?;
        super::check_rows("drafts", self.orders.saturating_mul(self.drafts), 0)?;
        let names = &self.names;
        let now = self.now.unwrap_or_else(Utc::now);
        let started = Instant::now();
        if let Some(sql) = names.create_schema() {
            db.run_script(&sql).await?;
        }
        if self.replace {
            db.run_script(&names.drop_tables(&[ORDER_STATUS, ORDERS]))
                .await?;
        }
        db.run_script(&names.create(CREATE, self.logged)).await?;
        let insert_orders = names.render(INSERT_ORDERS);
        let insert_statuses = INSERT_STATUSES.map(|sql| names.render(sql));
        let insert_drafts = names.render(INSERT_DRAFTS);
        let total = self.orders as u64;
        progress(Progress::new("orders", 0, Some(total)));
        let mut statuses = 0;
        for (first, last) in super::ranges(self.orders, self.batch) {
            let values = || {
                [
                    first.into_value(),
                    last.into_value(),
                    self.seed.into_value(),
                    now.into_value(),
                ]
            };
            db.run(&BuiltQuery::generated_with(insert_orders.clone(), values()))
                .await?;
            for step in &insert_statuses {
                statuses += db
                    .run(&BuiltQuery::generated_with(step.clone(), values()))
                    .await?;
            }
            if self.drafts > 0 {
                let mut v = values().to_vec();
                v.push(self.orders.into_value());
                v.push(self.drafts.into_value());
                statuses += db
                    .run(&BuiltQuery::generated_with(insert_drafts.clone(), v))
                    .await?;
            }
            progress(Progress::new("orders", last as u64, Some(total)));
        }
        let load = started.elapsed();
        let finishing = Instant::now();
        // Sorts for keys and the index fit in memory: several times faster
        // than the 64 MB default's external merges. `SET LOCAL` in the same
        // script (one implicit transaction): nothing outlives the step, so
        // a pooled server connection keeps its settings.
        let mut steps: Vec<&'static str> = vec![CONSTRAINTS];
        if self.index {
            steps.push(ADVISED_INDEX);
        }
        let n = (steps.len() + VACUUM.len()) as u64;
        progress(Progress::new("finish", 0, Some(n)));
        for (i, step) in steps.iter().enumerate() {
            let script = format!("{SET_MEMORY}; {}", names.render(step));
            db.run_script(&script).await?;
            progress(Progress::new("finish", i as u64 + 1, Some(n)));
        }
        for (i, step) in VACUUM.iter().enumerate() {
            db.run_script(&names.render(step)).await?;
            progress(Progress::new(
                "finish",
                (steps.len() + i) as u64 + 1,
                Some(n),
            ));
        }
        Ok(OrdersReport {
            orders: total,
            statuses,
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
    ) -> Result<OrdersReport>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.run(db, progress).await)
    }
}

/// Typed handles on the tables of an [`OrdersSeed`] (`orders` and
/// `order_status` by default; [`Default`] gives those).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct OrdersTables {
    /// `orders`
    pub orders: Table,
    /// `orders.id`
    pub order_id: Column<i64>,
    /// `orders.customer`
    pub customer: Column<String>,
    /// `orders.created_at`
    pub order_created_at: Column<DateTime<Utc>>,
    /// `order_status`
    pub order_status: Table,
    /// `order_status.id`
    pub status_id: Column<i64>,
    /// `order_status.order_id`
    pub status_order_id: Column<i64>,
    /// `order_status.status`
    pub status: Column<String>,
    /// `order_status.created_at`
    pub status_created_at: Column<DateTime<Utc>>,
}

impl Default for OrdersTables {
    /// The handles of [`OrdersSeed::new`]'s default names.
    fn default() -> OrdersTables {
        OrdersTables::new(&Names::new(NAMES))
    }
}

impl OrdersTables {
    fn new(names: &Names) -> OrdersTables {
        let orders = names.table(ORDERS);
        let order_status = names.table(ORDER_STATUS);
        OrdersTables {
            order_id: orders.fixed_column("id"),
            customer: orders.fixed_column("customer"),
            order_created_at: orders.fixed_column("created_at"),
            status_id: order_status.fixed_column("id"),
            status_order_id: order_status.fixed_column("order_id"),
            status: order_status.fixed_column("status"),
            status_created_at: order_status.fixed_column("created_at"),
            orders,
            order_status,
        }
    }

    /// The latest-status spec of these tables: latest by `(created_at, id)`.
    pub fn latest(&self) -> LatestStatus<String> {
        LatestStatus::new(
            &self.order_id,
            &self.status_order_id,
            &self.status,
            &self.status_created_at,
        )
        .then_by(&self.status_id)
    }
}
