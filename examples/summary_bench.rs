//! A maintained summary against the base table: the 30-day top-10 report
//! ("top 10 users by total spent, completed orders") from the orders table
//! with the advised index vs from a daily summary by user and status, and
//! what the summary's triggers cost a bulk insert.
//!
//! Generates the shop (`--orders`, default 2 M), installs and backfills
//! the summary, then times the report both ways in interleaved rounds
//! (same rows asserted) and a bulk insert of `--insert` orders with and
//! without the summary's triggers (interleaved; each insert is deleted
//! again the same way, so the summary stays exact). Prints medians.
//!
//! ```text
//! cargo run --release --example summary_bench --features testdb,seed -- --orders 2000000
//! ```

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pgpatterns::ops::summary::{Bucket, Measure, Summary};
use pgpatterns::ops::TopN;
use pgpatterns::seed::shop::ShopSeed;
use pgpatterns::testdb::TestDb;
use pgpatterns::{BuiltQuery, Executor, SqlType};
use rust_decimal::Decimal;

#[derive(Parser, Debug)]
#[command(
    about = "A 30-day top-10 report from the orders table vs from a maintained daily summary, and the summary's write overhead, on a throwaway PostgreSQL"
)]
struct Args {
    /// Orders to generate.
    #[arg(long, default_value_t = 2_000_000)]
    orders: i64,
    /// Users to generate.
    #[arg(long, default_value_t = 100_000)]
    users: i64,
    /// Rows of the timed bulk insert.
    #[arg(long, default_value_t = 200_000)]
    insert: i64,
    /// Interleaved rounds of each variant (the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
}

/// New orders in the last 30 days, drawn like the generated ones.
const INSERT: &str = "
INSERT INTO shop_orders (id, user_id, status, total_amount, created_at)
SELECT g,
       1 + floor($3::int8 * power((abs(hashint8(g * 3)) % 1000000) / 1000000.0, 2))::int8,
       CASE WHEN h < 60 THEN 'completed' WHEN h < 75 THEN 'pending'
            WHEN h < 90 THEN 'cancelled' ELSE 'refunded' END,
       ((1 + abs(hashint8(g * 7)) % 50000) / 100.0)::numeric(12, 2),
       $4::timestamptz - (abs(hashint8(g * 11)) % (30 * 86400)) * interval '1 second'
FROM generate_series($1::int8, $2::int8) AS g,
     LATERAL (SELECT abs(hashint8(g * 5)) % 100 AS h) AS s";

const DELETE: &str = "DELETE FROM shop_orders WHERE id BETWEEN $1::int8 AND $2::int8";

/// Which triggers a timed insert runs.
#[derive(Debug, Clone, Copy)]
enum Mode {
    Bare,
    ForeignKey,
    Summary,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// `min–max` in ms.
fn range(v: &[Duration]) -> String {
    let min = v.iter().min().copied().unwrap_or_default();
    let max = v.iter().max().copied().unwrap_or_default();
    format!("{:.0}–{:.0} ms", ms(min), ms(max))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let db = TestDb::start()?;
    let schema = db.schema().await?;
    let mut client = schema.connect().await?;

    // Mid-day, so the window has partial buckets at both edges.
    let now = Utc.with_ymd_and_hms(2025, 6, 1, 13, 37, 0).unwrap();
    let seed = ShopSeed::new(args.orders).users(args.users).now(now);
    println!(
        "== generating {} users and {} orders over a year",
        args.users, args.orders
    );
    let bar = ProgressBar::new((args.users + args.orders) as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {msg}  {elapsed_precise}")?,
    );
    let t = Instant::now();
    seed.run(&client, |p| {
        bar.set_message(p.stage);
        match p.stage {
            "users" => bar.set_position(p.done),
            "orders" => bar.set_position(args.users as u64 + p.done),
            _ => {}
        }
    })
    .await?;
    bar.finish();
    println!("generated in {:.1?}", t.elapsed());

    let shop = seed.tables();
    let report =
        TopN::<i64, Decimal>::new(&shop.user_id, &shop.order_user_id, &shop.total_amount, 10)
            .window_since(&shop.order_created_at, now - chrono::Duration::days(30))
            .window_until(&shop.order_created_at, now)
            .where_eq(&shop.status, "completed");
    let index = report.index("shop_orders_top_n")?;
    let t = Instant::now();
    index.execute_outside_transaction(&client).await?;
    client.batch_execute("VACUUM ANALYZE shop_orders").await?;
    println!("advised index built in {:.1?}:\n  {index}", t.elapsed());

    let summary = Summary::new(&shop.order_created_at, Bucket::Day)
        .key(&shop.order_user_id)
        .key(&shop.status)
        .measure(Measure::sum(&shop.total_amount, "total"))
        .named("shop_orders_daily");
    let t = Instant::now();
    summary.install(&mut client).await?;
    let filled = summary.backfill(&mut client, 400, |_| {}).await?;
    client
        .batch_execute("VACUUM ANALYZE shop_orders_daily")
        .await?;
    let rows: Vec<(i64,)> = client
        .rows_as(&BuiltQuery::fixed("SELECT count(*) FROM shop_orders_daily"))
        .await?;
    println!(
        "summary installed and backfilled in {:.1?} ({} rows in {} batches)",
        t.elapsed(),
        rows[0].0,
        filled.batches
    );
    let from_summary = report.clone().from_summary(&summary);
    println!("\n{}", from_summary.build()?);

    // The report, both ways, interleaved.
    let (mut base_t, mut sum_t) = (Vec::new(), Vec::new());
    for _ in 0..args.rounds.max(1) {
        let t = Instant::now();
        let a = report.fetch_all(&client).await?;
        base_t.push(t.elapsed());
        let t = Instant::now();
        let b = from_summary.fetch_all(&client).await?;
        sum_t.push(t.elapsed());
        assert_eq!(a, b, "the summary gives the base table's rows");
        assert_eq!(a.len(), 10);
    }
    let (base_m, sum_m) = (median(base_t), median(sum_t));

    // The write overhead: a bulk insert with and without the triggers,
    // interleaved; each batch is deleted again in the same mode.
    let first_id = args.orders + 1;
    let last_id = args.orders + args.insert;
    let ids = [first_id.into_value(), last_id.into_value()];
    let insert = BuiltQuery::fixed_with(
        INSERT,
        [
            first_id.into_value(),
            last_id.into_value(),
            args.users.into_value(),
            now.into_value(),
        ],
    );
    let delete = BuiltQuery::fixed_with(DELETE, ids);
    // Three modes: no triggers at all (`session_replication_role =
    // replica`, which also skips the foreign key's checks), the foreign key
    // checked but the summary's triggers disabled (`DISABLE TRIGGER USER`
    // leaves the foreign key's internal triggers on), and everything on.
    let (mut bare_t, mut plain_t, mut kept_t) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..args.rounds.max(1) {
        for mode in [Mode::Bare, Mode::ForeignKey, Mode::Summary] {
            let (before, after) = match mode {
                Mode::Bare => (
                    "SET session_replication_role = replica",
                    "SET session_replication_role = origin",
                ),
                Mode::ForeignKey => (
                    "ALTER TABLE shop_orders DISABLE TRIGGER USER",
                    "ALTER TABLE shop_orders ENABLE TRIGGER USER",
                ),
                Mode::Summary => ("SELECT 1", "SELECT 1"),
            };
            client.batch_execute(before).await?;
            let t = Instant::now();
            client.run(&insert).await?;
            let took = t.elapsed();
            client.run(&delete).await?;
            client.batch_execute(after).await?;
            client.batch_execute("VACUUM shop_orders").await?;
            client.batch_execute("VACUUM shop_orders_daily").await?;
            match mode {
                Mode::Bare => bare_t.push(took),
                Mode::ForeignKey => plain_t.push(took),
                Mode::Summary => kept_t.push(took),
            }
        }
    }
    let ranges = [range(&bare_t), range(&plain_t), range(&kept_t)];
    let ratios: Vec<f64> = plain_t
        .iter()
        .zip(&kept_t)
        .map(|(p, k)| k.as_secs_f64() / p.as_secs_f64())
        .collect();
    let (bare_m, plain_m, kept_m) = (median(bare_t), median(plain_t), median(kept_t));
    assert_eq!(summary.drift_count(&client).await?, 0);

    println!(
        "\n{} orders, {} users, {} rounds (medians):",
        args.orders, args.users, args.rounds
    );
    println!("| what | base table | summary | ratio |");
    println!("|---|---|---|---|");
    println!(
        "| 30-day top-10 report | {:.1} ms | {:.1} ms | {:.2}× |",
        ms(base_m),
        ms(sum_m),
        sum_m.as_secs_f64() / base_m.as_secs_f64()
    );
    println!(
        "| bulk insert of {} orders, foreign key checked | {:.0} ms (no summary triggers) | {:.0} ms (summary triggers) | {:.2}× |",
        args.insert,
        ms(plain_m),
        ms(kept_m),
        kept_m.as_secs_f64() / plain_m.as_secs_f64()
    );
    println!(
        "| bulk insert of {} orders vs no triggers at all (replica role: no foreign key checks either) | {:.0} ms | {:.0} ms | {:.2}× |",
        args.insert,
        ms(bare_m),
        ms(kept_m),
        kept_m.as_secs_f64() / bare_m.as_secs_f64()
    );
    let mut sorted = ratios.clone();
    sorted.sort_by(f64::total_cmp);
    println!(
        "\nbulk insert ranges: no triggers {}, foreign key checked {}, summary triggers {}",
        ranges[0], ranges[1], ranges[2]
    );
    println!(
        "summary / foreign key checked, per round: {} (median {:.2}×)",
        ratios
            .iter()
            .map(|r| format!("{r:.2}×"))
            .collect::<Vec<_>>()
            .join(", "),
        sorted[sorted.len() / 2]
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
