//! Read replicas: what routing costs, and how long read-your-writes waits.
//!
//! Starts the throwaway database and a streaming hot standby of it, then
//! measures:
//!
//! - deciding whether a statement may go to a replica (reading its text);
//! - a small read on the standby directly and through a `ReplicaRouter`
//!   (the difference is the routing overhead, periodic lag checks included);
//! - write-then-read cycles through a session: how often the read had to
//!   wait for the standby to replay the write, and for how long, with
//!   synchronous commits and with `synchronous_commit = off` (whose commits
//!   reach the standby only when the WAL writer flushes them).
//!
//! ```text
//! cargo run --release --example replica --features testdb -- --reads 5000 --cycles 1000
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use pgpatterns::replica::{is_read_only, ReplicaRouter, RouterOptions};
use pgpatterns::sea_query::{Alias, Expr, ExprTrait, Order, Query};
use pgpatterns::testdb::{TestDb, TestSchema};
use pgpatterns::{BuiltQuery, Executor, SqlType};

#[derive(Parser, Debug)]
#[command(about = "Read replicas: routing overhead and read-your-writes waits")]
struct Args {
    /// Reads per round of the routing-overhead measurement.
    #[arg(long, default_value_t = 2_000)]
    reads: usize,
    /// Write-then-read cycles with synchronous commits.
    #[arg(long, default_value_t = 1_000)]
    cycles: i64,
    /// Write-then-read cycles with `synchronous_commit = off`.
    #[arg(long, default_value_t = 300)]
    async_cycles: i64,
    /// How often the router checks the standby's lag, in milliseconds.
    #[arg(long, default_value_t = 100)]
    check_every_ms: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(mut times: Vec<Duration>) -> String {
    times.sort();
    format!(
        "median {:>9.1?}  p95 {:>9.1?}  max {:>9.1?}",
        percentile(&times, 0.5),
        percentile(&times, 0.95),
        times.last().copied().unwrap_or_default()
    )
}

async fn connect(
    config: tokio_postgres::Config,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A connection to the schema on the primary with `synchronous_commit` as given.
async fn primary(
    schema: &TestSchema,
    synchronous_commit: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let mut config = schema.config();
    let options = config.get_options().unwrap_or_default().to_owned();
    config.options(format!(
        "{options} -c synchronous_commit={synchronous_commit}"
    ));
    connect(config).await
}

/// Write-then-read cycles through a session: the replay wait of each read.
async fn cycles<E: Executor>(
    router: &ReplicaRouter<E, E>,
    ids: std::ops::Range<i64>,
) -> Result<(Vec<Duration>, Duration), pgpatterns::Error> {
    let session = router.session_after(router.write_token().await?);
    let mut waits = Vec::new();
    let started = Instant::now();
    for id in ids {
        BuiltQuery::fixed_with(
            "INSERT INTO items (id, label) VALUES ($1, $2)",
            [id.into_value(), format!("item {id}").into_value()],
        )
        .execute(&session)
        .await?;
        let before = router.stats().replay_wait_time;
        let (label,): (String,) =
            BuiltQuery::fixed_with("SELECT label FROM items WHERE id = $1", [id.into_value()])
                .fetch_one(&session)
                .await?;
        assert_eq!(label, format!("item {id}"), "read-your-writes");
        waits.push(router.stats().replay_wait_time - before);
    }
    Ok((waits, started.elapsed()))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.reads == 0 || args.cycles < 1 || args.async_cycles < 0 || args.check_every_ms == 0 {
        return Err("need reads, cycles, check-every-ms >= 1 and async-cycles >= 0".into());
    }
    let db = TestDb::start()?;
    let standby = db.standby()?;
    println!(
        "primary ready in {:.1?}, standby (pg_basebackup + start + streaming) in {:.1?}",
        db.startup_time(),
        standby.startup_time()
    );
    let schema = db.schema().await?;
    let setup = primary(&schema, "on").await?;
    setup
        .batch_execute(
            "CREATE TABLE items (id int8 PRIMARY KEY, label text NOT NULL);
             INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1000000, 1009999) g",
        )
        .await?;

    // ---- deciding where a statement goes ----------------------------------
    // A report-sized SELECT: a join, an EXISTS subquery, filters, order, limit.
    let (items, other) = (Alias::new("items"), Alias::new("other"));
    let col = |t: &Alias, c: &str| Expr::col((t.clone(), Alias::new(c)));
    let report = BuiltQuery::new(
        &Query::select()
            .expr(col(&items, "id"))
            .expr(col(&items, "label"))
            .expr(col(&other, "label"))
            .from(items.clone())
            .inner_join(
                other.clone(),
                col(&other, "id").eq(col(&items, "id").add(1i64)),
            )
            .and_where(col(&items, "id").gte(1_000_000i64))
            .and_where(col(&items, "label").like("item 1%"))
            .and_where(Expr::exists(
                Query::select()
                    .expr(Expr::cust("1"))
                    .from(other.clone())
                    .and_where(col(&other, "label").eq(col(&items, "label")))
                    .to_owned(),
            ))
            .order_by((items.clone(), Alias::new("id")), Order::Desc)
            .limit(50)
            .to_owned(),
    );
    let n = 200_000;
    let started = Instant::now();
    let mut reads = 0;
    for _ in 0..n {
        reads += usize::from(is_read_only(std::hint::black_box(&report)));
    }
    assert_eq!(reads, n);
    println!(
        "is_read_only on a {}-byte SELECT: {:.0?} per call",
        report.sql().len(),
        started.elapsed() / n as u32
    );

    // ---- routing overhead: the same read, direct and routed ---------------
    let direct = connect(standby.config_for(&schema)).await?;
    let router = ReplicaRouter::with_options(
        primary(&schema, "on").await?,
        [connect(standby.config_for(&schema)).await?],
        RouterOptions::new()
            .max_lag(Duration::from_secs(5))
            .check_every(Duration::from_millis(args.check_every_ms)),
    )?;
    // Warm up: until a check has seen the standby caught up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while router.check_now().await[0].lag.is_none() {
        if Instant::now() > deadline {
            return Err("the standby did not catch up in 20 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let point = |i: usize| {
        BuiltQuery::fixed_with(
            "SELECT label FROM items WHERE id = $1",
            [(1_000_000 + (i % 10_000) as i64).into_value()],
        )
    };
    let (mut direct_times, mut routed_times) = (Vec::new(), Vec::new());
    let (mut direct_total, mut routed_total) = (Duration::ZERO, Duration::ZERO);
    for round in 0..6 {
        // Interleaved rounds, so that both see the same machine load.
        let routed = round % 2 == 1;
        let started = Instant::now();
        for i in 0..args.reads {
            let t = Instant::now();
            let q = point(i);
            if routed {
                q.fetch_one::<(String,)>(&router).await?;
                routed_times.push(t.elapsed());
            } else {
                q.fetch_one::<(String,)>(&direct).await?;
                direct_times.push(t.elapsed());
            }
        }
        if routed {
            routed_total += started.elapsed();
        } else {
            direct_total += started.elapsed();
        }
    }
    let stats = router.stats();
    let per = |total: Duration| total / (3 * args.reads) as u32;
    println!(
        "point read on the standby, {} reads each:\n  direct  {}  mean {:>9.1?}\n  routed  {}  mean {:>9.1?}\n  \
         routing overhead {:.1?} per read (mean; lag checks every {} ms included); \
         {} of {} routed reads on the standby",
        3 * args.reads,
        summary(direct_times),
        per(direct_total),
        summary(routed_times),
        per(routed_total),
        per(routed_total).saturating_sub(per(direct_total)),
        args.check_every_ms,
        stats.replica_reads,
        stats.replica_reads + stats.primary_rows,
    );

    // ---- read-your-writes ---------------------------------------------------
    for (label, commit, count, first) in [
        ("synchronous_commit = on ", "on", args.cycles, 0),
        (
            "synchronous_commit = off",
            "off",
            args.async_cycles,
            args.cycles,
        ),
    ] {
        if count == 0 {
            continue;
        }
        let router = ReplicaRouter::with_options(
            primary(&schema, commit).await?,
            [connect(standby.config_for(&schema)).await?],
            RouterOptions::new()
                .max_lag(Duration::from_secs(5))
                .check_every(Duration::from_millis(args.check_every_ms))
                .replay_wait(Duration::from_secs(2)),
        )?;
        let (waits, took) = cycles(&router, first..first + count).await?;
        let stats = router.stats();
        let waited: Vec<Duration> = waits.iter().copied().filter(|w| !w.is_zero()).collect();
        println!(
            "{count} write-then-read cycles, {label}: {:.1?} per cycle; reads on the standby \
             {} (waited for replay: {}), on the primary {} (gave up waiting: {})\n  \
             replay waits: {}",
            took / count as u32,
            stats.replica_reads,
            stats.replay_waits,
            stats.primary_rows,
            stats.replay_timeouts,
            summary(waited),
        );
    }
    Ok(())
}
