//! Range-partition a live orders table by month without downtime.
//!
//! Seeds two years of orders (progress bar), builds the top-N report's
//! index, measures single-row writes alone, then migrates `shop_orders` to
//! a partitioned table (progress bar) while a writer keeps inserting,
//! updating and moving orders in time; cuts over; checks that the
//! partitioned table and the old one (kept current by the reverse mirror)
//! hold the same rows; compares the 30-day top-10 report before and after
//! (same rows; `EXPLAIN` shows the partitions pruned); finally detaches the
//! oldest quarter, exports it as CSV through the client and imports it
//! back (checksums match), and attaches it to an archive table.
//!
//! ```text
//! cargo run --release --example partition --features testdb,seed -- --rows 1000000
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Months, Utc};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pgpatterns::explain::explain;
use pgpatterns::ops::partition::copy::{checksum, export_csv, import_csv};
use pgpatterns::ops::partition::{Interval, Partitioner};
use pgpatterns::ops::TopN;
use pgpatterns::seed::shop::ShopSeed;
use pgpatterns::testdb::{TestDb, TestSchema};
use pgpatterns::{BuiltQuery, Decimal, Table};

#[derive(Parser, Debug)]
#[command(about = "Partition a live orders table by month while the shop keeps writing")]
struct Args {
    /// Orders to load (spread over two years).
    #[arg(long, default_value_t = 1_000_000)]
    rows: i64,
    /// Users placing them.
    #[arg(long, default_value_t = 50_000)]
    users: i64,
    /// Rows per copy batch.
    #[arg(long, default_value_t = 10_000)]
    batch: i64,
    /// Seconds of writes measured before the migration.
    #[arg(long, default_value_t = 5)]
    baseline_seconds: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

type Latencies = tokio::task::JoinHandle<Result<Vec<Duration>, tokio_postgres::Error>>;

/// One write every 2 ms until `stop`: an insert, an update, or an update
/// that moves an order 40 days back (to another partition). It never
/// touches completed orders, so the top-N report must not change.
async fn writer(
    schema: &TestSchema,
    stop: Arc<AtomicBool>,
    first_id: i64,
) -> Result<Latencies, pgpatterns::Error> {
    let c = schema.connect().await?;
    Ok(tokio::spawn(async move {
        let mut lat = Vec::new();
        let mut id = first_id;
        let mut n = 0i64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            let t = Instant::now();
            let r = match n % 4 {
                0 | 1 => {
                    id += 1;
                    c.execute(
                        "INSERT INTO shop_orders (id, user_id, status, total_amount, created_at)
                         VALUES ($1::int8, 1 + $1::int8 % 1000, 'pending', 12.50, now())",
                        &[&id],
                    )
                    .await
                }
                2 => {
                    c.execute(
                        "UPDATE shop_orders SET total_amount = total_amount + 1 WHERE id = 1 + ($1::int8 * 7919) % $2::int8 AND status <> 'completed'",
                        &[&n, &first_id],
                    )
                    .await
                }
                _ => {
                    c.execute(
                        "UPDATE shop_orders SET created_at = created_at - interval '40 days' WHERE id = 1 + ($1::int8 * 104729) % $2::int8 AND status <> 'completed'",
                        &[&n, &first_id],
                    )
                    .await
                }
            };
            r?;
            lat.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lat.sort();
        Ok(lat)
    }))
}

fn bar(len: u64, what: &str) -> Result<ProgressBar, Box<dyn std::error::Error>> {
    Ok(
        ProgressBar::new(len).with_style(ProgressStyle::with_template(&format!(
            "{what:>8} {{bar:40}} {{pos}}/{{len}}  {{elapsed_precise}}  {{per_sec}}"
        ))?),
    )
}

/// Median of 5 runs of the report, in ms.
async fn median_ms(
    report: &TopN<i64, Decimal>,
    c: &tokio_postgres::Client,
) -> Result<f64, pgpatterns::Error> {
    let mut t = Vec::new();
    for _ in 0..5 {
        let s = Instant::now();
        report.fetch_all(c).await?;
        t.push(s.elapsed().as_secs_f64() * 1000.0);
    }
    t.sort_by(f64::total_cmp);
    Ok(t[2])
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.rows < 1000 || args.users < 10 || args.batch < 1 {
        return Err("--rows must be >= 1000, --users >= 10, --batch >= 1".into());
    }
    let db = TestDb::start()?;
    let schema = db.schema().await?;
    let mut client = schema.connect().await?;

    // ---- seed two years of orders ---------------------------------------------
    let seed = ShopSeed::new(args.rows)
        .users(args.users)
        .days(730)
        .logged(true);
    let load = bar(args.rows as u64, "orders")?;
    let shop = seed
        .run(&client, |p| {
            if p.stage == "orders" {
                load.set_position(p.done);
            }
        })
        .await?;
    load.finish();
    println!(
        "seeded {} orders in {:.2?}",
        shop.orders,
        shop.load + shop.finish
    );
    let t = seed.tables();
    let since = shop.now - chrono::Duration::days(30);
    let report = TopN::new(&t.user_id, &t.order_user_id, &t.total_amount, 10)
        .extra(&t.username)
        .extra(&t.email)
        .window_since(&t.order_created_at, since)
        .where_eq(&t.status, "completed");
    let index = report.index("shop_orders_top_n")?;
    index.execute_outside_transaction(&client).await?;
    client.batch_execute("VACUUM ANALYZE shop_orders").await?;
    let before_rows = report.fetch_all(&client).await?;
    let before_ms = median_ms(&report, &client).await?;

    // ---- writes alone -------------------------------------------------------
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(&schema, stop.clone(), args.rows).await?;
    tokio::time::sleep(Duration::from_secs(args.baseline_seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let idle = w.await??;

    // ---- migrate under the writer ------------------------------------------------
    let parts = Partitioner::new(&t.order_id, &t.order_created_at, Interval::MONTH)
        .premake(3)
        .batch_size(args.batch);
    let plan = parts.plan(&client).await?;
    println!(
        "plan: {} monthly partitions + default, {} statements; notes:",
        plan.partitions().len(),
        plan.statements().len()
    );
    for n in plan.notes() {
        println!("  - {n}");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let w = writer(&schema, stop.clone(), args.rows + 10_000_000).await?;
    let started = Instant::now();
    parts.prepare(&mut client).await?;
    let prepared = started.elapsed();
    let copy_bar = bar(0, "copy")?;
    let copied = parts
        .copy(&client, |p| {
            copy_bar.set_length(p.total.unwrap_or(0));
            copy_bar.set_position(p.done);
        })
        .await?;
    copy_bar.finish();
    let cut = parts.cutover(&mut client).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let during = w.await??;
    let total = started.elapsed();
    println!(
        "prepare {prepared:.2?}; copy {} rows in {} batches in {:.2?}: {:.0} rows/s; \
         cutover: {} attempt(s), transaction {:.1} ms",
        copied.rows,
        copied.batches,
        copied.elapsed,
        copied.rows as f64 / copied.elapsed.as_secs_f64(),
        cut.attempts,
        cut.transaction.as_secs_f64() * 1000.0
    );
    println!(
        "writes (insert / update / move): alone p50 {:.2?} p99 {:.2?} ({}), during the migration p50 {:.2?} p99 {:.2?} max {:.2?} ({})",
        percentile(&idle, 0.5),
        percentile(&idle, 0.99),
        idle.len(),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        during.last().copied().unwrap_or_default(),
        during.len()
    );
    let new = checksum(&client, &t.orders).await?;
    let old = checksum(&client, plan.retired()).await?;
    println!(
        "partitioned {} rows, old table {} rows, checksums {}",
        new.0,
        old.0,
        if new == old { "equal" } else { "DIFFER" }
    );
    if new != old {
        return Err("the partitioned table differs from the old one".into());
    }
    parts.finish(&mut client, true).await?;
    println!("migration done in {total:.2?}; old table dropped");

    // ---- the report after ------------------------------------------------------
    client.batch_execute("ANALYZE shop_orders").await?;
    let after_rows = report.fetch_all(&client).await?;
    let after_ms = median_ms(&report, &client).await?;
    let same = before_rows == after_rows;
    let plan_after = explain(&client, &report.build()?).await?;
    let all = parts.partitions(&client).await?;
    let mut scanned: Vec<String> = plan_after
        .nodes()
        .iter()
        .filter_map(|n| n.relation.clone())
        .filter(|r| r.starts_with("shop_orders_"))
        .collect();
    scanned.sort();
    scanned.dedup();
    println!(
        "30-day top-10: {before_ms:.1} ms before, {after_ms:.1} ms after (median of 5); same rows: {same}"
    );
    if !same {
        return Err("the report changed".into());
    }
    println!(
        "EXPLAIN: {} of {} partitions scanned: {}",
        scanned.len(),
        all.len(),
        scanned.join(", ")
    );

    // ---- retention: detach the oldest quarter, export, archive --------------------
    let oldest = all
        .iter()
        .filter_map(|p| p.from)
        .min()
        .ok_or("no partitions")?;
    let cutoff: DateTime<Utc> = oldest
        .checked_add_months(Months::new(3))
        .ok_or("date out of range")?;
    let t0 = Instant::now();
    let detached = parts.detach_older_than(&mut client, cutoff).await?;
    println!(
        "detached {} partitions before {cutoff} in {:.2?} (a default partition exists: plain DETACH under lock_timeout)",
        detached.len(),
        t0.elapsed()
    );
    let dir = std::env::temp_dir();
    let archive = Table::new("shop_orders_archive")?;
    for d in &detached {
        let path = dir.join(format!("{}.csv", d.table.name().as_str()));
        let t1 = Instant::now();
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path)?);
        let out = export_csv(&client, &d.table, &mut file).await?;
        drop(file);
        let restored = Table::new(format!("{}_restored", d.table.name().as_str()))?;
        client
            .batch_execute(&format!(
                "CREATE TABLE \"{}\" (LIKE \"{}\")",
                restored.name().as_str(),
                d.table.name().as_str()
            ))
            .await?;
        let mut input = std::io::BufReader::new(std::fs::File::open(&path)?);
        let back = import_csv(&client, &restored, &mut input).await?;
        std::fs::remove_file(&path)?;
        println!(
            "  {}: {} rows, {} KiB CSV, exported + imported in {:.2?}, checksums {}",
            d.table.name(),
            out.rows,
            out.bytes / 1024,
            t1.elapsed(),
            if out.checksum == back.checksum && out.rows == back.rows {
                "equal"
            } else {
                "DIFFER"
            }
        );
        if out.checksum != back.checksum {
            return Err("export round trip differs".into());
        }
        parts.archive_partition(&mut client, d, &archive).await?;
    }
    let union = BuiltQuery::from(&parts.union_all(&archive)?);
    let n: i64 = client
        .query_one(&format!("SELECT count(*) FROM ({}) AS u", union.sql()), &[])
        .await?
        .get(0);
    let live: i64 = client
        .query_one("SELECT count(*) FROM shop_orders", &[])
        .await?
        .get(0);
    println!("live {live} + archive = {n} rows through one UNION ALL");
    Ok(())
}
