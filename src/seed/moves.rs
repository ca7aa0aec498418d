//! Moves and everything related to them, with realistic fan-out and change
//! times spread over two years: the data behind "moves changed since T,
//! in themselves or in anything related", for the `since` family.
//!
//! | table (default name) | rows per move | change column |
//! |---|---|---|
//! | `moves` (root; `show`, `available_to_prime_at`) | 1 | `updated_at timestamp` |
//! | `move_orders` (moves → orders) | 1 | `updated_at timestamp` |
//! | `service_members` (orders → service_members) | 1 | `updated_at timestamp` |
//! | `mto_shipments` (→ moves) | 1–3, ~2 | `updated_at timestamptz` |
//! | `addresses` (mto_shipments → addresses) | one per shipment | `updated_at timestamptz` |
//! | `mto_service_items` (→ moves) | 1–9, ~5 | `updated_at timestamptz` |
//! | `payment_requests` (→ moves) | 0–2, ~1 | `updated_at timestamp` |
//!
//! The column types mix `timestamp` and `timestamptz` as real schemas do;
//! `timestamp` values are UTC wall-clock times. Every change time is
//! uniform over the two years before `now`; 95 % of moves have
//! `show = TRUE` and 70 % are available to the prime. Rows are generated
//! server-side (`generate_series`, `hashint8` for deterministic randomness)
//! in batches of moves; primary keys are added after the load. No foreign
//! keys are declared and no other index is built: use
//! [`SinceGraph::index_advice`](crate::SinceGraph::index_advice).
//!
//! ```no_run
//! # #[cfg(feature = "tokio-postgres")]
//! # async fn demo(client: tokio_postgres::Client) -> pgpatterns::Result<()> {
//! use pgpatterns::seed::moves::MovesSeed;
//! let seed = MovesSeed::new(10_000);
//! let report = seed.run(&client, |_| {}).await?;
//! let graph = seed.tables().full_graph();
//! let recent = graph
//!     .since(report.now - chrono::Duration::days(30))
//!     .count(&client)
//!     .await?;
//! # Ok(()) }
//! ```

use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDateTime, Utc};

use super::Names;
use crate::exec::{run_blocking, BlockingExecutor};
use crate::schema::{Column, Relation, Table};
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Executor, Progress, Result, SinceGraph};

/// Default names of the tables.
const NAMES: &[&str] = &[
    "moves",
    "move_orders",
    "service_members",
    "mto_shipments",
    "addresses",
    "mto_service_items",
    "payment_requests",
];
const MOVES: usize = 0;
const ORDERS: usize = 1;
const SERVICE_MEMBERS: usize = 2;
const SHIPMENTS: usize = 3;
const ADDRESSES: usize = 4;
const SERVICE_ITEMS: usize = 5;
const PAYMENT_REQUESTS: usize = 6;

const CREATE: &str = "
CREATE TABLE {service_members} (id bigint NOT NULL, updated_at timestamp NOT NULL);
CREATE TABLE {move_orders} (id bigint NOT NULL, service_member_id bigint NOT NULL, updated_at timestamp NOT NULL);
CREATE TABLE {moves} (id bigint NOT NULL, orders_id bigint NOT NULL, locator text NOT NULL,
    show boolean NOT NULL, available_to_prime_at timestamptz, updated_at timestamp NOT NULL);
CREATE TABLE {addresses} (id bigint NOT NULL, street text NOT NULL, updated_at timestamptz NOT NULL);
CREATE TABLE {mto_shipments} (id bigint NOT NULL, move_id bigint NOT NULL,
    pickup_address_id bigint, updated_at timestamptz NOT NULL);
CREATE TABLE {mto_service_items} (id bigint NOT NULL, move_id bigint NOT NULL,
    mto_shipment_id bigint, updated_at timestamptz NOT NULL);
CREATE TABLE {payment_requests} (id bigint NOT NULL, move_id bigint NOT NULL, updated_at timestamp NOT NULL);";

const PRIMARY_KEYS: &str = "
ALTER TABLE {service_members} ADD PRIMARY KEY (id);
ALTER TABLE {move_orders} ADD PRIMARY KEY (id);
ALTER TABLE {moves} ADD PRIMARY KEY (id);
ALTER TABLE {addresses} ADD PRIMARY KEY (id);
ALTER TABLE {mto_shipments} ADD PRIMARY KEY (id);
ALTER TABLE {mto_service_items} ADD PRIMARY KEY (id);
ALTER TABLE {payment_requests} ADD PRIMARY KEY (id);";

/// Settled tables: `VACUUM` sets the visibility map (index-only scans skip
/// the heap from the first query on, and autovacuum has nothing left to do
/// on the fresh tables, so a benchmark does not measure it); `ANALYZE`
/// gives the planner statistics. One statement per call: `VACUUM` cannot
/// run in a multi-statement batch.
const VACUUM: [&str; 7] = [
    "VACUUM ANALYZE {service_members}",
    "VACUUM ANALYZE {move_orders}",
    "VACUUM ANALYZE {moves}",
    "VACUUM ANALYZE {addresses}",
    "VACUUM ANALYZE {mto_shipments}",
    "VACUUM ANALYZE {mto_service_items}",
    "VACUUM ANALYZE {payment_requests}",
];

// $1, $2: the batch's move id range; $3: now (timestamptz).
// `ago(x)`: a uniform fraction of two years from a hash of x.
const SEED_PEOPLE: &str = "
WITH g AS (SELECT g AS id FROM generate_series($1::int8, $2::int8) AS g)
, sm AS (INSERT INTO {service_members} (id, updated_at)
    SELECT id, ($3::timestamptz AT TIME ZONE 'UTC')
        - ((hashint8(id * 7 + 1) & 2147483647)::float8 / 2147483648.0) * interval '730 days'
    FROM g)
INSERT INTO {move_orders} (id, service_member_id, updated_at)
SELECT id, id, ($3::timestamptz AT TIME ZONE 'UTC')
    - ((hashint8(id * 7 + 2) & 2147483647)::float8 / 2147483648.0) * interval '730 days'
FROM g";

const SEED_MOVES: &str = "
INSERT INTO {moves} (id, orders_id, locator, show, available_to_prime_at, updated_at)
SELECT g, g, 'M' || to_hex(g),
    (hashint8(g * 7 + 3) & 1023) % 20 <> 0,
    CASE WHEN (hashint8(g * 7 + 4) & 1023) % 10 < 7
         THEN $3::timestamptz - interval '800 days' END,
    ($3::timestamptz AT TIME ZONE 'UTC')
        - ((hashint8(g * 7 + 5) & 2147483647)::float8 / 2147483648.0) * interval '730 days'
FROM generate_series($1::int8, $2::int8) AS g";

// 1–3 shipments per move (ids move * 4 + k), one pickup address each.
const SEED_SHIPMENTS: &str = "
WITH s AS (
    SELECT g * 4 + k AS id, g AS move_id
    FROM generate_series($1::int8, $2::int8) AS g
    CROSS JOIN LATERAL generate_series(1, 1 + ((hashint8(g * 7 + 6) & 1023) % 3)::int) AS k)
, a AS (INSERT INTO {addresses} (id, street, updated_at)
    SELECT id, id || ' Main St', $3::timestamptz
        - ((hashint8(id * 11 + 1) & 2147483647)::float8 / 2147483648.0) * interval '730 days'
    FROM s)
INSERT INTO {mto_shipments} (id, move_id, pickup_address_id, updated_at)
SELECT id, move_id, id, $3::timestamptz
    - ((hashint8(id * 11 + 2) & 2147483647)::float8 / 2147483648.0) * interval '730 days'
FROM s";

// 1–9 service items per move (ids move * 10 + k), on the first shipment.
const SEED_SERVICE_ITEMS: &str = "
INSERT INTO {mto_service_items} (id, move_id, mto_shipment_id, updated_at)
SELECT g * 10 + k, g, g * 4 + 1, $3::timestamptz
    - ((hashint8((g * 10 + k) * 13 + 1) & 2147483647)::float8 / 2147483648.0) * interval '730 days'
FROM generate_series($1::int8, $2::int8) AS g
CROSS JOIN LATERAL generate_series(1, 1 + ((hashint8(g * 7 + 7) & 1023) % 9)::int) AS k";

// 0–2 payment requests per move (ids move * 3 + k).
const SEED_PAYMENT_REQUESTS: &str = "
INSERT INTO {payment_requests} (id, move_id, updated_at)
SELECT g * 3 + k, g, ($3::timestamptz AT TIME ZONE 'UTC')
    - ((hashint8((g * 3 + k) * 17 + 1) & 2147483647)::float8 / 2147483648.0) * interval '730 days'
FROM generate_series($1::int8, $2::int8) AS g
CROSS JOIN LATERAL generate_series(1, ((hashint8(g * 7 + 8) & 1023) % 3)::int) AS k";

/// Generator of moves and their related rows. See the [module docs](self)
/// and, for what all seeders share, the [`seed`](super) module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovesSeed {
    moves: i64,
    batch: i64,
    now: Option<DateTime<Utc>>,
    logged: bool,
    replace: bool,
    tracked: bool,
    names: Names,
}

super::common_options!(MovesSeed);

/// What [`MovesSeed::run`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct MovesReport {
    /// Moves inserted.
    pub moves: u64,
    /// The newest possible change time: the one given to
    /// [`MovesSeed::now`], or the client's clock at the start of the run.
    pub now: DateTime<Utc>,
    /// Time spent inserting rows.
    pub load: Duration,
    /// Time spent on the primary keys and `VACUUM ANALYZE`.
    pub finish: Duration,
}

impl MovesSeed {
    /// `moves` moves (and their related rows), 50 000 per batch, change
    /// times ending at the current time, into new unlogged tables of the
    /// current schema.
    #[must_use]
    pub fn new(moves: i64) -> MovesSeed {
        MovesSeed {
            moves,
            batch: 50_000,
            now: None,
            logged: false,
            replace: false,
            tracked: false,
            names: Names::new(NAMES),
        }
    }

    /// Also keeps `moves.changed_at` (`timestamptz`) equal to the newest
    /// change time over [`full_graph`](MovesTables::full_graph), with
    /// triggers on every table ([`SinceGraph::track`]), installed after the
    /// load, filled in one statement (after the indexes
    /// [`SinceStrategy::Exists`](crate::SinceStrategy::Exists) advises, on
    /// the join columns the fill looks rows up by) and indexed
    /// `(changed_at, id)`; then
    /// [`SinceStrategy::Tracked`](crate::SinceStrategy::Tracked) can answer
    /// and `Auto` chooses it. Default `false`.
    #[must_use]
    pub fn tracked(mut self, tracked: bool) -> MovesSeed {
        self.tracked = tracked;
        self
    }

    /// Moves per batch (one progress report per batch); default 50 000.
    #[must_use]
    pub fn batch_size(mut self, moves: i64) -> MovesSeed {
        self.batch = moves;
        self
    }

    /// The newest possible change time (default: the client's clock at
    /// [`run`](Self::run)).
    #[must_use]
    pub fn now(mut self, now: DateTime<Utc>) -> MovesSeed {
        self.now = Some(now);
        self
    }

    /// Prepends `prefix` to every table name (`"a_"`: `a_moves`,
    /// `a_move_orders`, …), replacing an earlier prefix.
    ///
    /// ```
    /// use pgpatterns::seed::moves::MovesSeed;
    /// let seed = MovesSeed::new(1000).prefix("a_")?;
    /// assert_eq!(seed.tables().orders.display_name(), "a_move_orders");
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] when a name with the prefix is longer
    /// than 63 bytes or the prefix contains a NUL character.
    pub fn prefix(mut self, prefix: impl AsRef<str>) -> Result<MovesSeed> {
        self.names = self.names.with_prefix(prefix.as_ref())?;
        Ok(self)
    }

    /// Typed handles on the tables this seed creates (with its prefix and
    /// schema), and the `since` graphs over them.
    #[must_use]
    pub fn tables(&self) -> MovesTables {
        MovesTables::new(&self.names)
    }

    /// Creates the tables and fills them, reporting progress after each
    /// batch (stage `"moves"`, counting moves) and after each finishing
    /// step (stage `"finish"`: the primary keys, `VACUUM ANALYZE`).
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] for `moves < 1`, `moves` above
    /// [`MAX_SEED_ROWS`](super::MAX_SEED_ROWS) or a batch size below 1,
    /// before anything is sent; database errors otherwise (e.g. a table
    /// exists and [`replace`](Self::replace) is off).
    pub async fn run<E: Executor>(
        &self,
        db: &E,
        mut progress: impl FnMut(Progress) + Send,
    ) -> Result<MovesReport> {
        super::check_rows("moves", self.moves, 1)?;
        Error::at_least("batch_size", self.batch, 1)?;
        let names = &self.names;
        let now = self.now.unwrap_or_else(Utc::now);
        let started = Instant::now();
        if let Some(sql) = names.create_schema() {
            db.run_script(&sql).await?;
        }
        if self.replace {
            db.run_script(&names.drop_tables(&[
                MOVES,
                ORDERS,
                SERVICE_MEMBERS,
                SHIPMENTS,
                ADDRESSES,
                SERVICE_ITEMS,
                PAYMENT_REQUESTS,
            ]))
            .await?;
        }
        db.run_script(&names.create(CREATE, self.logged)).await?;
        let steps = [
            SEED_PEOPLE,
            SEED_MOVES,
            SEED_SHIPMENTS,
            SEED_SERVICE_ITEMS,
            SEED_PAYMENT_REQUESTS,
        ]
        .map(|sql| names.render(sql));
        let total = Some(self.moves as u64);
        progress(Progress::new("moves", 0, total));
        for (first, last) in super::ranges(self.moves, self.batch) {
            for sql in &steps {
                let q = BuiltQuery::generated_with(
                    sql.clone(),
                    [first.into_value(), last.into_value(), now.into_value()],
                );
                db.run(&q).await?;
            }
            progress(Progress::new("moves", last as u64, total));
        }
        let load = started.elapsed();
        let finishing = Instant::now();
        let steps = if self.tracked { 3 } else { 2 };
        progress(Progress::new("finish", 0, Some(steps)));
        db.run_script(&names.render(PRIMARY_KEYS)).await?;
        progress(Progress::new("finish", 1, Some(steps)));
        if self.tracked {
            let tables = self.tables();
            let graph = tables.full_graph();
            let track = graph.track()?;
            // The guard runs first: nothing foreign is replaced.
            for q in track.install_statements() {
                db.run(&q).await?;
            }
            // The fill looks up each move's related rows by their join
            // columns: index them first (else every lookup scans a table,
            // and a million moves take hours).
            for q in graph.index_advice(crate::SinceStrategy::Exists) {
                db.run(&q).await?;
            }
            db.run(&track.fill_statement()).await?;
            for q in graph.index_advice(crate::SinceStrategy::Tracked) {
                db.run(&q).await?;
            }
            progress(Progress::new("finish", 2, Some(steps)));
        }
        for step in VACUUM {
            db.run_script(&names.render(step)).await?;
        }
        progress(Progress::new("finish", steps, Some(steps)));
        Ok(MovesReport {
            moves: self.moves as u64,
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
    ) -> Result<MovesReport>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking(db, async |db| self.run(db, progress).await)
    }
}

/// Typed handles on the tables of a [`MovesSeed`] (its default names:
/// [`Default`]) and the `since` graphs over them.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[allow(missing_docs)] // the fields are the tables and columns they are named after
pub struct MovesTables {
    pub moves: Table,
    pub move_id: Column<i64>,
    pub move_orders_id: Column<i64>,
    pub move_show: Column<bool>,
    pub move_available_to_prime_at: Column<DateTime<Utc>>,
    pub move_updated_at: Column<NaiveDateTime>,
    /// The tracked column (exists when seeded with [`MovesSeed::tracked`]).
    pub move_changed_at: Column<DateTime<Utc>>,
    pub orders: Table,
    pub order_id: Column<i64>,
    pub order_service_member_id: Column<i64>,
    pub order_updated_at: Column<NaiveDateTime>,
    pub service_members: Table,
    pub service_member_id: Column<i64>,
    pub service_member_updated_at: Column<NaiveDateTime>,
    pub shipments: Table,
    pub shipment_id: Column<i64>,
    pub shipment_move_id: Column<i64>,
    pub shipment_pickup_address_id: Column<i64>,
    pub shipment_updated_at: Column<DateTime<Utc>>,
    pub addresses: Table,
    pub address_id: Column<i64>,
    pub address_updated_at: Column<DateTime<Utc>>,
    pub service_items: Table,
    pub service_item_move_id: Column<i64>,
    pub service_item_updated_at: Column<DateTime<Utc>>,
    pub payment_requests: Table,
    pub payment_request_move_id: Column<i64>,
    pub payment_request_updated_at: Column<NaiveDateTime>,
}

/// The old name of [`MovesTables`].
#[deprecated(note = "renamed `MovesTables`; get one from `MovesSeed::tables()`")]
pub type MovesSchema = MovesTables;

impl Default for MovesTables {
    /// The handles of [`MovesSeed::new`]'s default names.
    fn default() -> MovesTables {
        MovesTables::new(&Names::new(NAMES))
    }
}

impl MovesTables {
    fn new(names: &Names) -> MovesTables {
        let moves = names.table(MOVES);
        let orders = names.table(ORDERS);
        let service_members = names.table(SERVICE_MEMBERS);
        let shipments = names.table(SHIPMENTS);
        let addresses = names.table(ADDRESSES);
        let service_items = names.table(SERVICE_ITEMS);
        let payment_requests = names.table(PAYMENT_REQUESTS);
        MovesTables {
            move_id: moves.fixed_column("id"),
            move_orders_id: moves.fixed_column("orders_id"),
            move_show: moves.fixed_column("show"),
            move_available_to_prime_at: moves.fixed_column("available_to_prime_at"),
            move_updated_at: moves.fixed_column("updated_at"),
            move_changed_at: moves.fixed_column("changed_at"),
            order_id: orders.fixed_column("id"),
            order_service_member_id: orders.fixed_column("service_member_id"),
            order_updated_at: orders.fixed_column("updated_at"),
            service_member_id: service_members.fixed_column("id"),
            service_member_updated_at: service_members.fixed_column("updated_at"),
            shipment_id: shipments.fixed_column("id"),
            shipment_move_id: shipments.fixed_column("move_id"),
            shipment_pickup_address_id: shipments.fixed_column("pickup_address_id"),
            shipment_updated_at: shipments.fixed_column("updated_at"),
            address_id: addresses.fixed_column("id"),
            address_updated_at: addresses.fixed_column("updated_at"),
            service_item_move_id: service_items.fixed_column("move_id"),
            service_item_updated_at: service_items.fixed_column("updated_at"),
            payment_request_move_id: payment_requests.fixed_column("move_id"),
            payment_request_updated_at: payment_requests.fixed_column("updated_at"),
            moves,
            orders,
            service_members,
            shipments,
            addresses,
            service_items,
            payment_requests,
        }
    }

    fn to_orders(&self) -> Relation {
        Relation::new(&self.move_orders_id, &self.order_id)
    }

    fn to_shipments(&self) -> Relation {
        Relation::new(&self.shipment_move_id, &self.move_id)
    }

    /// The graph of the classic hand-written query: moves with `show = TRUE AND
    /// available_to_prime_at IS NOT NULL`, and their orders, shipments,
    /// service items and payment requests (labels `orders`, `shipments`,
    /// `service_items`, `payment_requests`).
    pub fn seed_graph(&self) -> SinceGraph<i64> {
        SinceGraph::new(&self.move_id, &self.move_updated_at)
            .filter(self.move_show.eq(true))
            .filter(self.move_available_to_prime_at.is_not_null())
            .related("orders", self.to_orders(), &self.order_updated_at)
            .related("shipments", self.to_shipments(), &self.shipment_updated_at)
            .related(
                "service_items",
                Relation::new(&self.service_item_move_id, &self.move_id),
                &self.service_item_updated_at,
            )
            .related(
                "payment_requests",
                Relation::new(&self.payment_request_move_id, &self.move_id),
                &self.payment_request_updated_at,
            )
    }

    /// [`seed_graph`](Self::seed_graph) plus what that query had to skip:
    /// service members behind orders (`service_members`) and the pickup
    /// addresses behind shipments (`pickup_addresses`); tracked by
    /// `moves.changed_at` ([`SinceGraph::tracked_by`]; the column exists
    /// when seeded with [`MovesSeed::tracked`], and `Auto` uses it only
    /// then).
    pub fn full_graph(&self) -> SinceGraph<i64> {
        self.seed_graph()
            .tracked_by(&self.move_changed_at)
            .path(
                "service_members",
                [
                    self.to_orders(),
                    Relation::new(&self.order_service_member_id, &self.service_member_id),
                ],
                &self.service_member_updated_at,
            )
            .path(
                "pickup_addresses",
                [
                    self.to_shipments(),
                    Relation::new(&self.shipment_pickup_address_id, &self.address_id),
                ],
                &self.address_updated_at,
            )
    }
}
