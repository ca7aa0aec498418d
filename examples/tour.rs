//! The pgpatterns tour: starts a throwaway PostgreSQL (or uses `DATABASE_URL`),
//! seeds the seed-000 shop (orders and their status history) with a progress
//! bar, and runs parameterized queries through the executor, printing the SQL,
//! the bound values, the rows and the time each took.
//!
//! ```text
//! cargo run --release --example tour --features testdb -- --orders 200000
//! ```
//!
//! It grows with each query family; today: the foundation and `latest`.

use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pgpatterns::sea_query::{Alias, Expr, ExprTrait, Func, Order, Query};
use pgpatterns::testdb::TestDb;
use pgpatterns::{BuiltQuery, Executor, LatestStatus, LatestStrategy, SqlType, Table};

#[derive(Parser, Debug)]
#[command(about = "A tour of pgpatterns on a throwaway PostgreSQL")]
struct Args {
    /// How many orders to generate.
    #[arg(long, default_value_t = 200_000)]
    orders: i64,
    /// Orders per INSERT batch.
    #[arg(long, default_value_t = 25_000)]
    batch: i64,
}

const SCHEMA: &str = "
CREATE TABLE orders (
    id          bigint PRIMARY KEY,
    customer    text NOT NULL,
    created_at  timestamptz NOT NULL
);
CREATE TABLE order_status (
    id          bigserial PRIMARY KEY,
    order_id    bigint NOT NULL,
    status      text NOT NULL,
    created_at  timestamptz NOT NULL
);";

/// One batch of orders, each with one of the seed's three status paths:
/// Pending → Complete, Pending → Cancelled, Pending → Complete → Cancelled.
const SEED_ORDERS: &str = "
INSERT INTO orders (id, customer, created_at)
SELECT g, 'customer ' || (g % 5000), $3::timestamptz - (g % 86400) * interval '1 minute'
FROM generate_series($1::int8, $2::int8) AS g";

const SEED_STATUSES: &str = "
INSERT INTO order_status (order_id, status, created_at)
SELECT o.id, s.status, o.created_at + s.step * interval '37 minutes'
FROM orders o
CROSS JOIN LATERAL (SELECT (hashint8(o.id) & 1023) % 3 AS path) p
CROSS JOIN LATERAL (VALUES
    (0, 'Pending'),
    (1, CASE WHEN p.path = 1 THEN 'Cancelled' ELSE 'Complete' END),
    (2, CASE WHEN p.path = 2 THEN 'Cancelled' END)
) AS s(step, status)
WHERE o.id BETWEEN $1::int8 AND $2::int8 AND s.status IS NOT NULL";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.orders < 1 || args.batch < 1 {
        return Err("--orders and --batch must be at least 1".into());
    }

    println!("== pgpatterns tour");
    let db = TestDb::start()?;
    if db.is_throwaway() {
        println!(
            "started a throwaway PostgreSQL in {:.2?} (removed on exit): {}",
            db.startup_time(),
            db.connection_string()
        );
    } else {
        println!("using DATABASE_URL (a private schema, dropped on exit)");
    }
    let schema = db.schema().await?;
    let client = schema.connect().await?;
    client.batch_execute(SCHEMA).await?;

    // ---- seed -----------------------------------------------------------
    println!(
        "\n== seeding {} orders (seed 000's three status paths)",
        args.orders
    );
    let bar = ProgressBar::new(args.orders as u64).with_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} orders  {elapsed_precise}  eta {eta}",
    )?);
    let now = chrono::Utc::now();
    let t0 = Instant::now();
    let mut first = 1i64;
    while first <= args.orders {
        let last = std::cmp::min(first + args.batch - 1, args.orders);
        let range = [first.into_value(), last.into_value()];
        // `Executor::execute`, not the client's inherent `execute(sql, params)`.
        let seed_orders = BuiltQuery::fixed_with(
            SEED_ORDERS,
            [range[0].clone(), range[1].clone(), now.into_value()],
        );
        Executor::execute(&client, &seed_orders).await?;
        Executor::execute(&client, &BuiltQuery::fixed_with(SEED_STATUSES, range)).await?;
        bar.set_position(last as u64);
        first = last + 1;
    }
    bar.finish();
    client
        .batch_execute(
            "CREATE INDEX ON order_status (order_id, created_at DESC, id DESC) INCLUDE (status);
             ANALYZE orders; ANALYZE order_status;",
        )
        .await?;
    println!("seeded and indexed in {:.2?}", t0.elapsed());

    // ---- typed handles, bound values -------------------------------------
    let orders = Table::new("orders")?;
    let statuses = Table::new("order_status")?;
    let order_id = orders.column::<i64>("id")?;
    let customer = orders.column::<String>("customer")?;
    let st_status = statuses.column::<String>("status")?;

    println!("\n== status rows per status (GROUP BY through the executor)");
    let by_status = BuiltQuery::from(
        &Query::select()
            .column(st_status.col_ref())
            .expr_as(Func::count(Expr::col(st_status.col_ref())), Alias::new("n"))
            .from(statuses.table_ref())
            .group_by_col(st_status.col_ref())
            .order_by(st_status.col_ref(), Order::Asc)
            .to_owned(),
    );
    let (rows, took) = timed(client.query_as::<(String, i64)>(&by_status)).await?;
    println!("{by_status}");
    for (status, n) in &rows {
        println!("  {status:<10} {n:>10}");
    }
    println!("  ({} rows in {:.2?})", rows.len(), took);

    println!("\n== a customer's first orders: every value is a bind parameter");
    for who in ["customer 42", "customer 42' OR '1'='1"] {
        let page = BuiltQuery::from(
            &Query::select()
                .column(order_id.col_ref())
                .column(customer.col_ref())
                .from(orders.table_ref())
                .and_where(customer.eq(who))
                .order_by(order_id.col_ref(), Order::Asc)
                .limit(3)
                .to_owned(),
        );
        let (rows, took) = timed(client.query_as::<(i64, String)>(&page)).await?;
        println!("{page}");
        for (id, c) in &rows {
            println!("  order {id:>8}  {c}");
        }
        println!("  ({} rows in {:.2?})\n", rows.len(), took);
    }

    println!("== the naive join of seed 000 (counts every order that was EVER Pending)");
    let naive = BuiltQuery::from(
        &Query::select()
            .expr(Func::count_distinct(Expr::col(order_id.col_ref())))
            .from(orders.table_ref())
            .inner_join(
                statuses.table_ref(),
                statuses
                    .column::<i64>("order_id")?
                    .expr()
                    .equals(order_id.col_ref()),
            )
            .and_where(st_status.eq("Pending"))
            .to_owned(),
    );
    let (rows, took) = timed(client.query_as::<(i64,)>(&naive)).await?;
    println!("{naive}");
    println!(
        "  {} orders in {:.2?}: every order, though none is still Pending\n",
        rows[0].0, took
    );

    println!("== latest: orders by their LATEST status, every strategy");
    let latest = LatestStatus::<String>::new(
        &order_id,
        &statuses.column::<i64>("order_id")?,
        &st_status,
        &statuses.column::<chrono::DateTime<chrono::Utc>>("created_at")?,
    )?
    .then_by(&statuses.column::<i64>("id")?)?;
    println!(
        "{:<12} {:>10} {:>10} {:>10}   {:>12}",
        "strategy", "Pending", "Complete", "Cancelled", "first page"
    );
    for strategy in LatestStrategy::FROM_HISTORY {
        let mut line = format!("{:<12}", format!("{strategy:?}"));
        let mut total = Duration::ZERO;
        for status in ["Pending", "Complete", "Cancelled"] {
            let spec = latest.clone().status_eq(status).strategy(strategy)?;
            let (n, took) = timed(client.query_as::<(i64,)>(&spec.count_query())).await?;
            total += took;
            line += &format!(" {:>10}", n[0].0);
        }
        let spec = latest.clone().status_eq("Complete").strategy(strategy)?;
        let page = spec.page_query::<i64>(50, None)?;
        let (rows, page_took) = timed(Executor::query(&client, &page)).await?;
        println!(
            "{line}   {:>3} rows in {page_took:>8.2?}   (counts took {total:.2?})",
            rows.len()
        );
    }
    let example = latest
        .clone()
        .status_eq("Complete")
        .strategy(LatestStrategy::Lateral)?
        .page_query::<i64>(50, Some(1000))?;
    println!("\nthe Lateral first page after order 1000:\n{example}");
    Ok(())
}

async fn timed<T, F>(fut: F) -> pgpatterns::Result<(T, Duration)>
where
    F: std::future::Future<Output = pgpatterns::Result<T>>,
{
    let t = Instant::now();
    let out = fut.await?;
    Ok((out, t.elapsed()))
}
