//! The archive mover: move old orders to `orders_archive` without downtime.
//!
//! Loads an orders table (progress bar), builds the mover's supporting index
//! `CONCURRENTLY`, measures the latency of single-row inserts into the live
//! table on their own, then runs the mover (progress bar) while one task
//! keeps inserting new orders and another keeps reading the original rows
//! through "live + archive". Prints the mover's throughput, the insert p99
//! with and without the mover, and checks that the totals match.
//!
//! ```text
//! cargo run --release --example archive --features testdb -- --rows 2000000
//! ```

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pgpatterns::ops::archive::Archiver;
use pgpatterns::ops::index::ConcurrentIndex;
use pgpatterns::sea_query::{Alias, Expr, ExprTrait, Query};
use pgpatterns::testdb::{TestDb, TestSchema};
use pgpatterns::{BuiltQuery, Executor, SqlType, Table};

#[derive(Parser, Debug)]
#[command(about = "Archive old orders in batches while the shop keeps writing")]
struct Args {
    /// Orders to load.
    #[arg(long, default_value_t = 500_000)]
    rows: i64,
    /// Rows per batch (one statement each).
    #[arg(long, default_value_t = 10_000)]
    batch: i64,
    /// Share of the orders older than the cutoff, in percent.
    #[arg(long, default_value_t = 75)]
    old_percent: i64,
    /// Seconds of inserts measured without the mover.
    #[arg(long, default_value_t = 5)]
    baseline_seconds: u64,
    /// Leave out the reader that counts the original rows during the move
    /// (each of its reads scans the whole union).
    #[arg(long)]
    no_reader: bool,
}

const SETUP: &str = "
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL,
    amount numeric(12, 2) NOT NULL,
    status text NOT NULL,
    created_at timestamptz NOT NULL);";

/// Orders `[$1, $2]`, spread evenly over the 1000 days before now.
const ORDERS: &str = "INSERT INTO orders (id, user_id, amount, status, created_at)
    SELECT g, 1 + g % 50000, (g % 10000) / 100.0,
           (ARRAY['completed', 'pending', 'cancelled'])[1 + g % 3],
           now() - interval '1000 days' + (g::float8 / $3::int8) * interval '1000 days'
    FROM generate_series($1::int8, $2::int8) g";

const INSERT: &str = "INSERT INTO orders (user_id, amount, status, created_at)
    VALUES ($1::int8, 9.99, 'pending', now())";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Inserts new orders one at a time until `stop`; returns each latency.
async fn inserter(
    schema: &TestSchema,
    stop: Arc<AtomicBool>,
) -> Result<tokio::task::JoinHandle<Result<Vec<Duration>, pgpatterns::Error>>, pgpatterns::Error> {
    let c = schema.connect().await?;
    Ok(tokio::spawn(async move {
        let mut lat = Vec::new();
        let mut user = 0i64;
        while !stop.load(Ordering::Relaxed) {
            user += 1;
            let t = Instant::now();
            BuiltQuery::fixed_with(INSERT, [user.into_value()])
                .execute(&c)
                .await?;
            lat.push(t.elapsed());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        lat.sort();
        Ok(lat)
    }))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.rows < 1 || args.batch < 1 || !(1..=100).contains(&args.old_percent) {
        return Err("--rows and --batch must be >= 1, --old-percent in 1..=100".into());
    }
    let db = TestDb::start()?;
    let schema = db.schema().await?;
    let client = schema.connect().await?;
    client.batch_execute(SETUP).await?;

    // ---- load -----------------------------------------------------------------
    let bar = ProgressBar::new(args.rows as u64).with_style(ProgressStyle::with_template(
        "  orders {bar:40} {pos}/{len}  {elapsed_precise}",
    )?);
    let started = Instant::now();
    let chunk = 200_000;
    let mut from = 1;
    while from <= args.rows {
        let to = std::cmp::min(from + chunk - 1, args.rows);
        let q = BuiltQuery::fixed_with(
            ORDERS,
            [from.into_value(), to.into_value(), args.rows.into_value()],
        );
        q.execute(&client).await?;
        bar.set_position(to as u64);
        from = to + 1;
    }
    bar.finish();
    client
        .batch_execute(
            "SELECT setval('orders_id_seq', (SELECT max(id) FROM orders)); ANALYZE orders",
        )
        .await?;
    println!("loaded {} orders in {:.2?}", args.rows, started.elapsed());

    let orders = Table::new("orders")?;
    let id = orders.column::<i64>("id")?;
    let created = orders.column::<DateTime<Utc>>("created_at")?;
    let mover = Archiver::new(&id, &created, &Table::new("orders_archive")?)
        .batch_size(args.batch)
        .forbid_future_cutoff();

    // ---- the mover's index, built CONCURRENTLY --------------------------------
    let index = ConcurrentIndex::new("orders_created_at_id", &[created.erase(), id.erase()]);
    let t = Instant::now();
    let done = index.ensure(&client).await?;
    println!(
        "index {}: {:?} -> {:?} in {:.2?} (CREATE INDEX CONCURRENTLY)",
        index.name(),
        done.before,
        done.after,
        t.elapsed()
    );
    let cutoff: DateTime<Utc> = client
        .query_one(
            "SELECT now() - interval '1000 days' + ($1::int8 / 100.0) * interval '1000 days'",
            &[&args.old_percent],
        )
        .await?
        .get(0);

    // ---- baseline insert latency ----------------------------------------------
    let stop = Arc::new(AtomicBool::new(false));
    let task = inserter(&schema, stop.clone()).await?;
    tokio::time::sleep(Duration::from_secs(args.baseline_seconds)).await;
    stop.store(true, Ordering::Relaxed);
    let baseline = task.await??;

    // ---- move, while the shop keeps inserting and reading ---------------------
    let columns = mover.prepare(&client).await?;
    let originals = BuiltQuery::from(
        &Query::select()
            .expr(Expr::cust("count(*)"))
            .from_subquery(mover.union_all(&columns)?, Alias::new("u"))
            .and_where(Expr::col(Alias::new("id")).lte(args.rows.param()))
            .to_owned(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let writer = inserter(&schema, stop.clone()).await?;
    let reader = {
        let r = schema.connect().await?;
        let stop = stop.clone();
        let q = originals.clone();
        let no_reader = args.no_reader;
        tokio::spawn(async move {
            let (mut reads, mut wrong) = (0u64, 0u64);
            while !no_reader && !stop.load(Ordering::Relaxed) {
                let n: i64 = q.fetch_one::<(i64,)>(&r).await?.0;
                reads += 1;
                if n != args.rows {
                    wrong += 1;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<_, pgpatterns::Error>((reads, wrong))
        })
    };
    let bar = ProgressBar::new(0).with_style(ProgressStyle::with_template(
        " archive {bar:40} {pos}/{len}  {elapsed_precise}  {per_sec}",
    )?);
    let report = mover
        .run(&client, cutoff, |p| {
            bar.set_length(p.total.unwrap_or(0));
            bar.set_position(p.done);
        })
        .await?;
    bar.finish();
    stop.store(true, Ordering::Relaxed);
    let during = writer.await??;
    let (reads, wrong) = reader.await??;

    println!(
        "moved {} rows in {} batches of {} in {:.2?}: {:.0} rows/s",
        report.rows,
        report.batches,
        args.batch,
        report.elapsed,
        report.rows as f64 / report.elapsed.as_secs_f64()
    );
    println!(
        "single-row inserts into live: p50 {:.2?} / p99 {:.2?} alone ({} inserts), p50 {:.2?} / p99 {:.2?} while moving ({} inserts)",
        percentile(&baseline, 0.5),
        percentile(&baseline, 0.99),
        baseline.len(),
        percentile(&during, 0.5),
        percentile(&during, 0.99),
        during.len()
    );
    let count = |sql: &'static str| {
        let c = &client;
        async move {
            c.one_row(&BuiltQuery::fixed(sql))
                .await
                .map(|r| r.get::<_, i64>(0))
        }
    };
    let live = count("SELECT count(*) FROM orders").await?;
    let archived = count("SELECT count(*) FROM orders_archive").await?;
    let both = count("SELECT count(*) FROM orders JOIN orders_archive USING (id)").await?;
    let originals_now: i64 = originals.fetch_one::<(i64,)>(&client).await?.0;
    let inserted = (baseline.len() + during.len()) as i64;
    println!(
        "totals: live {live} + archive {archived} = {} (loaded {} + inserted {inserted} = {}); \
         rows in both tables: {both}; the reader saw the {} original rows {reads} times, {wrong} times wrong",
        live + archived,
        args.rows,
        args.rows + inserted,
        args.rows
    );
    if live + archived != args.rows + inserted
        || both != 0
        || wrong != 0
        || originals_now != args.rows
    {
        return Err("totals do not match".into());
    }
    println!("totals match");
    Ok(())
}
