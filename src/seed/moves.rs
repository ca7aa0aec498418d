//! The seed-001 schema (moves and everything related to them) with realistic
//! fan-out and change times spread over two years, for the `since` family.
//!
//! | table | rows per move | change column |
//! |---|---|---|
//! | `moves` (root; `show`, `available_to_prime_at`) | 1 | `updated_at timestamp` |
//! | `orders` (moves → orders) | 1 | `updated_at timestamp` |
//! | `service_members` (orders → service_members) | 1 | `updated_at timestamp` |
//! | `mto_shipments` (→ moves) | 1–3, ~2 | `updated_at timestamptz` |
//! | `addresses` (mto_shipments → addresses) | one per shipment | `updated_at timestamptz` |
//! | `mto_service_items` (→ moves) | 1–9, ~5 | `updated_at timestamptz` |
//! | `payment_requests` (→ moves) | 0–2, ~1 | `updated_at timestamp` |
//!
//! The column types mix `timestamp` and `timestamptz` as in the seed's query
//! plans; `timestamp` values are UTC wall-clock times. Every change time is
//! uniform over the two years before `now`; 95 % of moves have
//! `show = TRUE` and 70 % are available to the prime. Rows are generated
//! server-side (`generate_series`, `hashint8` for deterministic randomness)
//! in batches of moves; primary keys are added after the load. No foreign
//! keys are declared and no other index is built: use
//! [`SinceGraph::index_advice`](crate::SinceGraph::index_advice).

use chrono::{DateTime, NaiveDateTime, Utc};

use crate::exec::{run_blocking, BlockingExecutor};
use crate::schema::{Column, Relation, Table};
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Executor, Progress, Result, SinceGraph};

const CREATE: &str = "
CREATE TABLE service_members (id bigint NOT NULL, updated_at timestamp NOT NULL);
CREATE TABLE orders (id bigint NOT NULL, service_member_id bigint NOT NULL, updated_at timestamp NOT NULL);
CREATE TABLE moves (id bigint NOT NULL, orders_id bigint NOT NULL, locator text NOT NULL,
    show boolean NOT NULL, available_to_prime_at timestamptz, updated_at timestamp NOT NULL);
CREATE TABLE addresses (id bigint NOT NULL, street text NOT NULL, updated_at timestamptz NOT NULL);
CREATE TABLE mto_shipments (id bigint NOT NULL, move_id bigint NOT NULL,
    pickup_address_id bigint, updated_at timestamptz NOT NULL);
CREATE TABLE mto_service_items (id bigint NOT NULL, move_id bigint NOT NULL,
    mto_shipment_id bigint, updated_at timestamptz NOT NULL);
CREATE TABLE payment_requests (id bigint NOT NULL, move_id bigint NOT NULL, updated_at timestamp NOT NULL);";

const UNLOGGED: &str = "
ALTER TABLE service_members SET UNLOGGED; ALTER TABLE orders SET UNLOGGED;
ALTER TABLE moves SET UNLOGGED; ALTER TABLE addresses SET UNLOGGED;
ALTER TABLE mto_shipments SET UNLOGGED; ALTER TABLE mto_service_items SET UNLOGGED;
ALTER TABLE payment_requests SET UNLOGGED;";

const PRIMARY_KEYS: &str = "
ALTER TABLE service_members ADD PRIMARY KEY (id);
ALTER TABLE orders ADD PRIMARY KEY (id);
ALTER TABLE moves ADD PRIMARY KEY (id);
ALTER TABLE addresses ADD PRIMARY KEY (id);
ALTER TABLE mto_shipments ADD PRIMARY KEY (id);
ALTER TABLE mto_service_items ADD PRIMARY KEY (id);
ALTER TABLE payment_requests ADD PRIMARY KEY (id);";

const ANALYZE: &str = "ANALYZE service_members, orders, moves, addresses, mto_shipments, \
                       mto_service_items, payment_requests;";

// $1, $2: the batch's move id range; $3: now (timestamptz).
// `ago(x)`: a uniform fraction of two years from a hash of x.
const SEED_PEOPLE: &str = "
WITH g AS (SELECT g AS id FROM generate_series($1::int8, $2::int8) AS g)
, sm AS (INSERT INTO service_members (id, updated_at)
    SELECT id, ($3::timestamptz AT TIME ZONE 'UTC')
        - ((hashint8(id * 7 + 1) & 2147483647)::float8 / 2147483648.0) * interval '730 days'
    FROM g)
INSERT INTO orders (id, service_member_id, updated_at)
SELECT id, id, ($3::timestamptz AT TIME ZONE 'UTC')
    - ((hashint8(id * 7 + 2) & 2147483647)::float8 / 2147483648.0) * interval '730 days'
FROM g";

const SEED_MOVES: &str = "
INSERT INTO moves (id, orders_id, locator, show, available_to_prime_at, updated_at)
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
, a AS (INSERT INTO addresses (id, street, updated_at)
    SELECT id, id || ' Main St', $3::timestamptz
        - ((hashint8(id * 11 + 1) & 2147483647)::float8 / 2147483648.0) * interval '730 days'
    FROM s)
INSERT INTO mto_shipments (id, move_id, pickup_address_id, updated_at)
SELECT id, move_id, id, $3::timestamptz
    - ((hashint8(id * 11 + 2) & 2147483647)::float8 / 2147483648.0) * interval '730 days'
FROM s";

// 1–9 service items per move (ids move * 10 + k), on the first shipment.
const SEED_SERVICE_ITEMS: &str = "
INSERT INTO mto_service_items (id, move_id, mto_shipment_id, updated_at)
SELECT g * 10 + k, g, g * 4 + 1, $3::timestamptz
    - ((hashint8((g * 10 + k) * 13 + 1) & 2147483647)::float8 / 2147483648.0) * interval '730 days'
FROM generate_series($1::int8, $2::int8) AS g
CROSS JOIN LATERAL generate_series(1, 1 + ((hashint8(g * 7 + 7) & 1023) % 9)::int) AS k";

// 0–2 payment requests per move (ids move * 3 + k).
const SEED_PAYMENT_REQUESTS: &str = "
INSERT INTO payment_requests (id, move_id, updated_at)
SELECT g * 3 + k, g, ($3::timestamptz AT TIME ZONE 'UTC')
    - ((hashint8((g * 3 + k) * 17 + 1) & 2147483647)::float8 / 2147483648.0) * interval '730 days'
FROM generate_series($1::int8, $2::int8) AS g
CROSS JOIN LATERAL generate_series(1, ((hashint8(g * 7 + 8) & 1023) % 3)::int) AS k";

/// How much seed-001 data to generate. `MovesSeed::from(10_000)` is the short
/// form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MovesSeed {
    moves: i64,
    batch: i64,
    now: Option<DateTime<Utc>>,
    unlogged: bool,
}

impl MovesSeed {
    /// `moves` moves (and their related rows), 50 000 per batch, change
    /// times ending at the current time, logged tables.
    pub fn new(moves: i64) -> MovesSeed {
        MovesSeed {
            moves,
            batch: 50_000,
            now: None,
            unlogged: false,
        }
    }

    /// Moves per batch (one progress report per batch).
    pub fn batch(mut self, batch: i64) -> MovesSeed {
        self.batch = batch;
        self
    }

    /// The newest possible change time (default: now).
    pub fn now(mut self, now: DateTime<Utc>) -> MovesSeed {
        self.now = Some(now);
        self
    }

    /// `UNLOGGED` tables: faster to fill, emptied after a crash (demo data).
    pub fn unlogged(mut self, yes: bool) -> MovesSeed {
        self.unlogged = yes;
        self
    }
}

impl From<i64> for MovesSeed {
    fn from(moves: i64) -> Self {
        MovesSeed::new(moves)
    }
}

/// Creates the seed-001 tables in the current schema and fills them, calling
/// `progress` after each batch (stage `"moves"`, counting moves) and after
/// the primary keys (`"keys"`) and `ANALYZE` (`"analyze"`). Returns the
/// `now` the change times end at.
///
/// # Errors
/// [`Error::InvalidSpec`] for `moves < 1`, `moves` above
/// [`MAX_SEED_ROWS`](super::MAX_SEED_ROWS) or `batch < 1`; database errors
/// (e.g. when the tables exist already).
pub async fn seed<E: Executor>(
    e: &E,
    seed: impl Into<MovesSeed>,
    mut progress: impl FnMut(Progress) + Send,
) -> Result<DateTime<Utc>> {
    let cfg = seed.into();
    super::check_rows("moves", cfg.moves, 1)?;
    if cfg.batch < 1 {
        return Err(Error::spec(
            "batch",
            format!("must be at least 1, got {}", cfg.batch),
        ));
    }
    let now = cfg.now.unwrap_or_else(Utc::now);
    e.run_script(CREATE).await?;
    if cfg.unlogged {
        e.run_script(UNLOGGED).await?;
    }
    let total = Some(cfg.moves as u64);
    progress(Progress::new("moves", 0, total));
    for (first, last) in super::ranges(cfg.moves, cfg.batch) {
        for sql in [
            SEED_PEOPLE,
            SEED_MOVES,
            SEED_SHIPMENTS,
            SEED_SERVICE_ITEMS,
            SEED_PAYMENT_REQUESTS,
        ] {
            let q = BuiltQuery::fixed_with(
                sql,
                [first.into_value(), last.into_value(), now.into_value()],
            );
            e.run(&q).await?;
        }
        progress(Progress::new("moves", last as u64, total));
    }
    e.run_script(PRIMARY_KEYS).await?;
    progress(Progress::new("keys", 1, Some(1)));
    e.run_script(ANALYZE).await?;
    progress(Progress::new("analyze", 1, Some(1)));
    Ok(now)
}

/// [`seed`] on a blocking client (`postgres::Client`,
/// `postgres::Transaction`), from the same code.
///
/// # Errors
/// As [`seed`].
pub fn seed_blocking<C>(
    e: &mut C,
    seed: impl Into<MovesSeed>,
    progress: impl FnMut(Progress) + Send,
) -> Result<DateTime<Utc>>
where
    C: BlockingExecutor + Send,
    C::Row: Send,
{
    run_blocking(e, async |e| self::seed(e, seed, progress).await)
}

/// Typed handles of the seed-001 tables (unqualified names, resolved through
/// `search_path`) and the `since` graphs over them.
#[derive(Debug, Clone)]
#[allow(missing_docs)] // the fields are the tables and columns they are named after
pub struct MovesSchema {
    pub moves: Table,
    pub move_id: Column<i64>,
    pub move_orders_id: Column<i64>,
    pub move_show: Column<bool>,
    pub move_available_to_prime_at: Column<DateTime<Utc>>,
    pub move_updated_at: Column<NaiveDateTime>,
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

impl MovesSchema {
    /// The handles.
    ///
    /// # Errors
    /// None in practice (the names are valid); typed for uniformity.
    pub fn new() -> Result<MovesSchema> {
        let moves = Table::new("moves")?;
        let orders = Table::new("orders")?;
        let service_members = Table::new("service_members")?;
        let shipments = Table::new("mto_shipments")?;
        let addresses = Table::new("addresses")?;
        let service_items = Table::new("mto_service_items")?;
        let payment_requests = Table::new("payment_requests")?;
        Ok(MovesSchema {
            move_id: moves.column("id")?,
            move_orders_id: moves.column("orders_id")?,
            move_show: moves.column("show")?,
            move_available_to_prime_at: moves.column("available_to_prime_at")?,
            move_updated_at: moves.column("updated_at")?,
            order_id: orders.column("id")?,
            order_service_member_id: orders.column("service_member_id")?,
            order_updated_at: orders.column("updated_at")?,
            service_member_id: service_members.column("id")?,
            service_member_updated_at: service_members.column("updated_at")?,
            shipment_id: shipments.column("id")?,
            shipment_move_id: shipments.column("move_id")?,
            shipment_pickup_address_id: shipments.column("pickup_address_id")?,
            shipment_updated_at: shipments.column("updated_at")?,
            address_id: addresses.column("id")?,
            address_updated_at: addresses.column("updated_at")?,
            service_item_move_id: service_items.column("move_id")?,
            service_item_updated_at: service_items.column("updated_at")?,
            payment_request_move_id: payment_requests.column("move_id")?,
            payment_request_updated_at: payment_requests.column("updated_at")?,
            moves,
            orders,
            service_members,
            shipments,
            addresses,
            service_items,
            payment_requests,
        })
    }

    fn to_orders(&self) -> Relation {
        Relation::new(&self.move_orders_id, &self.order_id)
    }

    fn to_shipments(&self) -> Relation {
        Relation::new(&self.shipment_move_id, &self.move_id)
    }

    /// The graph of seed 001's own query: moves with `show = TRUE AND
    /// available_to_prime_at IS NOT NULL`, and their orders, shipments,
    /// service items and payment requests (labels `orders`, `shipments`,
    /// `service_items`, `payment_requests`).
    ///
    /// # Errors
    /// None in practice; typed for uniformity.
    pub fn seed_graph(&self) -> Result<SinceGraph<i64>> {
        SinceGraph::new(&self.move_id, &self.move_updated_at)?
            .filter(self.move_show.eq(true))
            .filter(self.move_available_to_prime_at.is_not_null())
            .related("orders", self.to_orders(), &self.order_updated_at)?
            .related("shipments", self.to_shipments(), &self.shipment_updated_at)?
            .related(
                "service_items",
                Relation::new(&self.service_item_move_id, &self.move_id),
                &self.service_item_updated_at,
            )?
            .related(
                "payment_requests",
                Relation::new(&self.payment_request_move_id, &self.move_id),
                &self.payment_request_updated_at,
            )
    }

    /// [`seed_graph`](Self::seed_graph) plus what the seed had to skip:
    /// service members behind orders (`service_members`) and the pickup
    /// addresses behind shipments (`pickup_addresses`).
    ///
    /// # Errors
    /// None in practice; typed for uniformity.
    pub fn full_graph(&self) -> Result<SinceGraph<i64>> {
        self.seed_graph()?
            .path(
                "service_members",
                [
                    self.to_orders(),
                    Relation::new(&self.order_service_member_id, &self.service_member_id),
                ],
                &self.service_member_updated_at,
            )?
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
