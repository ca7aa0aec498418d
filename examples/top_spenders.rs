//! A top-N report: the top 10 users by total spent in the last 30 days
//! among completed orders, and the index that serves the report.
//!
//! Generates the shop (`--orders`, default 2 M) with a progress bar, runs
//! the report without and with the advised index
//! (`(status, created_at) INCLUDE (user_id, total_amount)`), and prints the
//! rows and timings.
//!
//! ```text
//! cargo run --release --example top_spenders --features testdb,seed -- --orders 2000000
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pgpatterns::ops::TopN;
use pgpatterns::seed::shop::ShopSeed;
use pgpatterns::testdb::TestDb;
use rust_decimal::Decimal;

#[derive(Parser, Debug)]
#[command(
    about = "The top 10 spenders of the last 30 days, with and without the advised index, on a throwaway PostgreSQL"
)]
struct Args {
    /// Orders to generate.
    #[arg(long, default_value_t = 2_000_000)]
    orders: i64,
    /// Users to generate.
    #[arg(long, default_value_t = 100_000)]
    users: i64,
    /// How many users to report.
    #[arg(long, default_value_t = 10)]
    top: i64,
    /// Timed runs of each variant (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let db = TestDb::start()?;
    let schema = db.schema().await?;
    let client = schema.connect().await?;

    let seed = ShopSeed::new(args.orders).users(args.users);
    println!(
        "== generating {} users and {} orders over a year",
        args.users, args.orders
    );
    let bar = ProgressBar::new((args.users + args.orders) as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {msg}  {elapsed_precise}")?,
    );
    let t0 = Instant::now();
    let now = seed
        .run(&client, |p| {
            bar.set_message(p.stage);
            match p.stage {
                "users" => bar.set_position(p.done),
                "orders" => bar.set_position(args.users as u64 + p.done),
                _ => {}
            }
        })
        .await?
        .now;
    bar.finish();
    println!("generated, keyed and analyzed in {:.2?}", t0.elapsed());

    let shop = seed.tables();
    let (username, email) = (shop.username.clone(), shop.email.clone());
    let report = TopN::<i64, Decimal>::new(
        &shop.user_id,
        &shop.order_user_id,
        &shop.total_amount,
        args.top,
    )
    .extra(&username)
    .extra(&email)
    .window_since(&shop.order_created_at, now - chrono::Duration::days(30))
    .where_eq(&shop.status, "completed");
    println!("\n{}", report.build()?);

    let without = time(&report, &client, args.runs).await?;
    let ddl = report.index("orders_status_created_at_top_n")?;
    println!("\n{ddl}");
    let t = Instant::now();
    ddl.execute_outside_transaction(&client).await?;
    client.batch_execute("ANALYZE shop_orders").await?;
    println!("index built in {:.2?}", t.elapsed());
    let with = time(&report, &client, args.runs).await?;

    println!(
        "\n{:>8}  {:<12} {:<24} {:>7} {:>12}",
        "id", "username", "email", "orders", "spent"
    );
    for r in report.fetch_all(&client).await? {
        println!(
            "{:>8}  {:<12} {:<24} {:>7} {:>12}",
            r.key,
            r.get(&username).unwrap_or_default(),
            r.get(&email).unwrap_or_default(),
            r.count,
            r.total.map(|d| d.to_string()).unwrap_or_default()
        );
    }
    println!(
        "\ntop {} over {} orders: without the index {without:.1?}, with it {with:.1?} ({:.2}×); median of {} runs",
        args.top,
        args.orders,
        with.as_secs_f64() / without.as_secs_f64(),
        args.runs
    );
    Ok(())
}

async fn time(
    report: &TopN<i64, Decimal>,
    client: &tokio_postgres::Client,
    runs: usize,
) -> pgpatterns::Result<Duration> {
    let mut v = Vec::new();
    for _ in 0..runs.max(1) {
        let t = Instant::now();
        report.fetch_all(client).await?;
        v.push(t.elapsed());
    }
    v.sort();
    Ok(v[v.len() / 2])
}
