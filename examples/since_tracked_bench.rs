//! Benchmark of the trigger-maintained "last changed" column of a `since`
//! graph (a table, not a timed test), on the seeded moves schema:
//!
//! - reads: count and first page (50 moves by id) at 1 day, 30 days and
//!   1 year for `Tracked`, for every other strategy (the best one shown),
//!   and for a plain indexed column holding the same values without
//!   triggers (the floor); medians of `--reps`, interleaved;
//! - writes, with the triggers enabled and disabled in turn (medians of
//!   `--write-reps`, each statement in a transaction rolled back, then
//!   `VACUUM`): a bulk `INSERT … SELECT` of `--bulk` shipments (each on an
//!   existing pickup address) and of `--bulk` service items, all at the
//!   current time, and an `UPDATE` of `--updates` addresses to the current
//!   time; and the latency of one-row updates of service items
//!   (`--singles` per connection over `--connections` connections, p50
//!   and p99);
//! - the install and the batched backfill of the column.
//!
//! ```text
//! cargo run --release --example since_tracked_bench --features testdb,seed -- --moves 1000000
//! ```
//!
//! See BENCHMARKS.md for the figures.

use std::time::{Duration, Instant};

use clap::Parser;
use pgpatterns::seed::moves::MovesSeed;
use pgpatterns::testdb::TestDb;
use pgpatterns::{BuiltQuery, Executor, IndexOptions, PageRequest, SinceStrategy, SqlType};

#[derive(Parser, Debug, Clone)]
#[command(about = "the tracked last-changed column vs the since strategies, on moves")]
struct Args {
    /// How many moves to generate.
    #[arg(long, default_value_t = 200_000)]
    moves: i64,
    /// Timed repetitions of each query (the median is printed).
    #[arg(long, default_value_t = 5)]
    reps: usize,
    /// Rows of each bulk insert (shipments, service items).
    #[arg(long, default_value_t = 200_000)]
    bulk: i64,
    /// Addresses of the bulk update.
    #[arg(long, default_value_t = 10_000)]
    updates: i64,
    /// Repetitions of each bulk write, with and without tracking in turn.
    #[arg(long, default_value_t = 3)]
    write_reps: usize,
    /// One-row updates per connection.
    #[arg(long, default_value_t = 200)]
    singles: usize,
    /// Connections running the one-row updates at once.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Only the reads (after the install and the backfill).
    #[arg(long)]
    skip_writes: bool,
    /// Reads taking longer are stopped (`statement_timeout`) and shown as
    /// timed out: on a year-wide window some strategies take minutes.
    #[arg(long, default_value_t = 60)]
    timeout_secs: u64,
    /// The session's `work_mem` (as in `since_bench`: at the 4MB default,
    /// UnionIn's hashed IN overflows on the year-wide window and takes
    /// minutes).
    #[arg(long, default_value = "64MB")]
    work_mem: String,
    /// Unlogged tables (the seeder's default; faster to load, but a commit
    /// then writes no WAL, which hides what a logged table pays anyway).
    #[arg(long)]
    unlogged: bool,
}

// $1: moves, $2: now, $3: rows. New shipments on existing moves, each on
// the pickup address of the move's first shipment.
const BULK_SHIPMENTS: &str = "INSERT INTO mto_shipments (id, move_id, pickup_address_id, updated_at)
SELECT 9000000000 + g, m, m * 4 + 1, $2::timestamptz
FROM (SELECT g, 1 + (hashint8(g) & 2147483647) % $1::int8 AS m FROM generate_series(1, $3::int8) AS g) AS s";
const BULK_ITEMS: &str = "INSERT INTO mto_service_items (id, move_id, mto_shipment_id, updated_at)
SELECT 9000000000 + g, 1 + (hashint8(g) & 2147483647) % $1::int8, NULL, $2::timestamptz
FROM generate_series(1, $3::int8) AS g";
// The pickup addresses of the first shipments of $3 moves spread over all.
const BULK_ADDRESSES: &str = "UPDATE addresses SET updated_at = $2::timestamptz
WHERE id IN (SELECT (1 + (g * 7919) % $1::int8) * 4 + 1 FROM generate_series(1, $3::int8) AS g)";
// $1: service item id (move * 10 + 1 exists for every move), $2: time.
const SINGLE: &str =
    "UPDATE mto_service_items SET updated_at = $2::timestamptz WHERE id = $1::int8";
const TRIGGERS: &str = "mto_shipments, mto_service_items, addresses, moves";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

/// Milliseconds, or infinity when the statement timed out.
async fn time<E: Executor>(db: &E, q: &BuiltQuery) -> pgpatterns::Result<f64> {
    let t = Instant::now();
    match db.rows(q).await {
        Ok(_) => Ok(ms(t.elapsed())),
        Err(e) if e.code() == Some("57014") => Ok(f64::INFINITY),
        Err(e) => Err(e),
    }
}

fn shown(v: f64, timeout: u64) -> String {
    if v.is_finite() {
        format!("{v:.2}")
    } else {
        format!("> {timeout} s")
    }
}

/// Enables or disables the tracking triggers (and only them) on the tables
/// the writes touch.
async fn set_tracking(
    db: &tokio_postgres::Client,
    track: &pgpatterns::Track,
    on: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let verb = if on { "ENABLE" } else { "DISABLE" };
    for table in TRIGGERS.split(", ") {
        for name in track.trigger_names() {
            db.batch_execute(&format!(
                "ALTER TABLE {table} {verb} TRIGGER \"{}\"",
                name.as_str()
            ))
            .await?;
        }
    }
    Ok(())
}

/// One bulk write in a transaction that is rolled back (ms), then VACUUM;
/// with `track`, the drift is checked before the rollback.
async fn bulk(
    db: &mut tokio_postgres::Client,
    sql: &'static str,
    args: &Args,
    rows: i64,
    at: chrono::DateTime<chrono::Utc>,
    track: Option<&pgpatterns::Track>,
) -> Result<f64, Box<dyn std::error::Error>> {
    let tx = db.transaction().await?;
    let t = Instant::now();
    tx.run(&BuiltQuery::fixed_with(
        sql,
        [args.moves.into_value(), at.into_value(), rows.into_value()],
    ))
    .await?;
    let elapsed = ms(t.elapsed());
    if let Some(track) = track {
        let drift = track.drift_count(&tx).await?;
        if drift != 0 {
            return Err(format!("{drift} moves drifted after {sql}").into());
        }
    }
    tx.rollback().await?;
    db.batch_execute("VACUUM moves, mto_shipments, mto_service_items, addresses")
        .await?;
    Ok(elapsed)
}

/// One-row updates over `args.connections` connections at once: every
/// latency (ms).
async fn singles(
    schema: &pgpatterns::testdb::TestSchema,
    args: &Args,
    at: chrono::DateTime<chrono::Utc>,
    round: u64,
) -> Result<Vec<f64>, Box<dyn std::error::Error>> {
    let mut tasks = Vec::new();
    for c in 0..args.connections as u64 {
        let client = schema.connect().await?;
        let (n, moves) = (args.singles as u64, args.moves as u64);
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for i in 0..n {
                // a spread of moves, different per connection and round
                let m = 1 + (i * 7919 + c * 104_729 + round * 15_485_863) % moves;
                let q = BuiltQuery::fixed_with(
                    SINGLE,
                    [
                        ((m * 10 + 1) as i64).into_value(),
                        (at + chrono::Duration::microseconds(i as i64)).into_value(),
                    ],
                );
                // rolled back: with the triggers disabled, a committed
                // write would leave the column behind
                client.run(&BuiltQuery::fixed("BEGIN")).await?;
                let t = Instant::now();
                client.run(&q).await?;
                out.push(ms(t.elapsed()));
                client.run(&BuiltQuery::fixed("ROLLBACK")).await?;
            }
            Ok::<_, pgpatterns::Error>(out)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    Ok(all)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.moves < 1 || args.reps < 1 {
        return Err("--moves and --reps must be at least 1".into());
    }
    let db = TestDb::start()?;
    let schema = db.schema().await?;
    let mut client = schema.connect().await?;
    let t0 = Instant::now();
    let seed = MovesSeed::new(args.moves).logged(!args.unlogged);
    let now = seed.run(&client, |_| {}).await?.now;
    let s = seed.tables();
    let graph = s.full_graph();
    let mut ddl = Vec::new();
    for strategy in SinceStrategy::ALL
        .into_iter()
        .chain([SinceStrategy::Tracked])
    {
        for q in graph.index_advice(IndexOptions::new(strategy)) {
            if !ddl.contains(&q) {
                ddl.push(q);
            }
        }
    }
    let track = graph.track()?;
    client.run(&track.add_column()).await?;
    for q in &ddl {
        client.run(q).await?;
    }
    client.batch_execute("ANALYZE").await?;
    println!(
        "{} moves seeded with {} indexes in {:.1?} (PostgreSQL {}, the machine's cores shared)",
        args.moves,
        ddl.len(),
        t0.elapsed(),
        client
            .rows_as::<(String,)>(&BuiltQuery::fixed("SHOW server_version"))
            .await?[0]
            .0
    );

    let t = Instant::now();
    track.install(&mut client).await?;
    let install = t.elapsed();
    let report = track
        .backfill::<i64, _>(&mut client, 20_000, |_| {})
        .await?;
    client.batch_execute("VACUUM ANALYZE").await?;
    println!(
        "install {:.1?}; batched backfill of {} moves ({} batches of 20 000) {:.1?}; drift {}",
        install,
        report.entities,
        report.batches,
        report.elapsed,
        track.drift_count(&client).await?
    );

    // Writes with the triggers disabled and enabled in turn, after one
    // small warm-up write each (plans cached as in a long-lived session).
    let writes: [(&str, &'static str, i64); 3] = [
        (
            "bulk INSERT … SELECT into mto_shipments",
            BULK_SHIPMENTS,
            args.bulk,
        ),
        (
            "bulk INSERT … SELECT into mto_service_items",
            BULK_ITEMS,
            args.bulk,
        ),
        ("UPDATE of addresses", BULK_ADDRESSES, args.updates),
    ];
    let mut times = vec![[Vec::new(), Vec::new()]; writes.len()];
    let mut latencies = [Vec::new(), Vec::new()];
    let write_reps = if args.skip_writes { 0 } else { args.write_reps };
    for rep in 0..write_reps {
        for (mode, on) in [(0, false), (1, true)] {
            set_tracking(&client, &track, on).await?;
            for (i, (_, sql, rows)) in writes.iter().enumerate() {
                if rep == 0 {
                    bulk(&mut client, sql, &args, 10, now, None).await?;
                }
                // the drift is checked once, outside the timing
                let check = (on && rep == 0).then_some(&track);
                times[i][mode].push(bulk(&mut client, sql, &args, *rows, now, check).await?);
            }
            let round = (rep * 2 + mode) as u64;
            latencies[mode].extend(singles(&schema, &args, now, round).await?);
        }
    }
    println!(
        "\n| write ({} moves) | without tracking (ms) | with tracking (ms) | × |",
        args.moves
    );
    println!("|---|---|---|---|");
    for (i, (name, _, rows)) in writes.iter().enumerate() {
        if times[i][0].is_empty() {
            continue;
        }
        let (off, on) = (median(times[i][0].clone()), median(times[i][1].clone()));
        println!(
            "| {name}, {rows} rows | {off:.0} | {on:.0} | {:.2} |",
            on / off
        );
    }
    let [mut off, mut on] = latencies;
    for (p, name) in [(0.5, "p50"), (0.99, "p99")] {
        if off.is_empty() {
            break;
        }
        let (a, b) = (percentile(&mut off, p), percentile(&mut on, p));
        println!(
            "| one-row UPDATE of a service item, {name} over {} connections ({} updates) | {a:.2} | {b:.2} | {:.2} |",
            args.connections,
            off.len(),
            b / a
        );
    }
    set_tracking(&client, &track, true).await?;
    println!(
        "drift after the writes: {}",
        track.drift_count(&client).await?
    );

    // The floor: the same values in a plain indexed column, no triggers.
    client
        .batch_execute(
            "ALTER TABLE moves ADD COLUMN plain_changed_at timestamptz;
             UPDATE moves SET plain_changed_at = changed_at;
             CREATE INDEX ON moves (plain_changed_at, id)",
        )
        .await?;
    // That UPDATE rewrote every move, so the tracked column's index holds
    // a dead entry per move: rebuild the table's indexes, so both columns'
    // indexes are as fresh.
    client.batch_execute("REINDEX TABLE moves").await?;
    client.batch_execute("VACUUM ANALYZE moves").await?;
    client
        .run(&BuiltQuery::fixed_with(
            "SELECT set_config('work_mem', $1, false), set_config('statement_timeout', $2, false)",
            [
                args.work_mem.clone().into_value(),
                format!("{}s", args.timeout_secs).into_value(),
            ],
        ))
        .await?;
    let plain_graph = graph
        .clone()
        .tracked_by(&s.moves.column("plain_changed_at")?);

    println!(
        "\n| query | since | Tracked | plain indexed column | best other strategy | matching |"
    );
    println!("|---|---|---|---|---|---|");
    for (shape, page) in [("count", false), ("first page of 50", true)] {
        for (name, days) in [("1 d", 1), ("30 d", 30), ("365 d", 365)] {
            let at = now - chrono::Duration::days(days);
            let build = |g: &pgpatterns::SinceGraph<i64>, s: SinceStrategy| {
                let q = g.since(at).strategy(s);
                if page {
                    q.page_query(&PageRequest::new(50))
                } else {
                    q.count_query()
                }
            };
            let mut candidates = vec![
                ("Tracked".to_owned(), build(&graph, SinceStrategy::Tracked)?),
                (
                    "plain".to_owned(),
                    build(&plain_graph, SinceStrategy::Tracked)?,
                ),
            ];
            for s in SinceStrategy::ALL {
                candidates.push((format!("{s:?}"), build(&graph, s)?));
            }
            let mut times: Vec<Vec<f64>> = vec![Vec::new(); candidates.len()];
            for _ in 0..args.reps {
                for (i, (_, q)) in candidates.iter().enumerate() {
                    // a strategy that timed out once is not run again
                    let t = if times[i].iter().any(|t: &f64| t.is_infinite()) {
                        f64::INFINITY
                    } else {
                        time(&client, q).await?
                    };
                    times[i].push(t);
                }
            }
            let medians: Vec<f64> = times.into_iter().map(median).collect();
            let (best_i, best) = medians[2..]
                .iter()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(b.1))
                .map(|(i, m)| (i + 2, *m))
                .unwrap_or((2, f64::NAN));
            let matching = graph
                .since(at)
                .strategy(SinceStrategy::Tracked)
                .count(&client)
                .await?;
            let timed_out: Vec<&str> = candidates
                .iter()
                .zip(&medians)
                .filter(|(_, m)| m.is_infinite())
                .map(|((n, _), _)| n.as_str())
                .collect();
            let timed_out = if timed_out.is_empty() {
                String::new()
            } else {
                format!(" (timed out: {})", timed_out.join(", "))
            };
            let t = args.timeout_secs;
            println!(
                "| {shape} | {name} | {} | {} | {} ({}) | {matching}{timed_out} |",
                shown(medians[0], t),
                shown(medians[1], t),
                shown(best, t),
                candidates[best_i].0
            );
        }
    }
    Ok(())
}
