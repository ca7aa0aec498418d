//! Benchmark of the trigger-maintained "last changed" column of a `since`
//! graph (a table, not a timed test), on the seeded moves schema:
//!
//! - reads: count and first page (50 moves by id) at 1 day, 30 days and
//!   1 year for `Tracked`, for every other strategy (the best one shown),
//!   and for a plain indexed column holding the same values without
//!   triggers (the floor); medians of `--reps`, interleaved;
//! - writes: a bulk `INSERT … SELECT` of `--bulk` service items and
//!   `--singles` one-row inserts, without and with the triggers.
//!
//! ```text
//! cargo run --release --example since_tracked_bench --features testdb,seed -- --moves 200000
//! ```
//!
//! Measured on PostgreSQL 15, 2 shared cores, 200 k moves (logged tables,
//! the full graph: 7 tables), medians of 3, milliseconds:
//!
//! | query | since | Tracked | plain indexed column | best other strategy |
//! |---|---|---|---|---|
//! | count | 1 d | 6.6 | 5.2 | 57 (UnionIn) |
//! | count | 30 d | 117 | 115 | 482 (UnionIn) |
//! | count | 365 d | 91 | 91 | 1261 (UnionIn) |
//! | first page of 50 | 1 d | 1.7 | 1.5 | 14 (UnionIn) |
//! | first page of 50 | 30 d | 0.67 | 0.41 | 6.4 (OrJoins) |
//! | first page of 50 | 365 d | 0.56 | 0.44 | 4.7 (OrJoins) |
//!
//! Writes into `mto_service_items`: a bulk insert of 100 k rows 1345 →
//! 5118 ms with tracking (3.8×: ~78 k moves rewritten, each non-HOT since
//! the column is indexed); one-row inserts 0.47 → 1.84 ms.

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
    /// Rows of the bulk insert into the service items.
    #[arg(long, default_value_t = 100_000)]
    bulk: i64,
    /// One-row inserts into the service items.
    #[arg(long, default_value_t = 500)]
    singles: i64,
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

const BULK: &str = "INSERT INTO mto_service_items (id, move_id, mto_shipment_id, updated_at)
SELECT 9000000000 + g, 1 + (hashint8(g) & 2147483647) % $1::int8, NULL, $2::timestamptz
FROM generate_series(1, $3::int8) AS g";
const SINGLE: &str = "INSERT INTO mto_service_items (id, move_id, mto_shipment_id, updated_at)
VALUES (9500000000 + $1::int8, 1 + (hashint8($1::int8) & 2147483647) % $2::int8, NULL, $3::timestamptz)";
const CLEAN: &str = "DELETE FROM mto_service_items WHERE id >= 9000000000";

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn time<E: Executor>(db: &E, q: &BuiltQuery) -> pgpatterns::Result<f64> {
    let t = Instant::now();
    db.rows(q).await?;
    Ok(ms(t.elapsed()))
}

/// Bulk insert and one-row inserts (ms), then removes the rows again.
async fn writes<E: Executor>(
    db: &E,
    args: &Args,
    now: chrono::DateTime<chrono::Utc>,
) -> pgpatterns::Result<(f64, f64)> {
    let t = Instant::now();
    db.run(&BuiltQuery::fixed_with(
        BULK,
        [
            args.moves.into_value(),
            now.into_value(),
            args.bulk.into_value(),
        ],
    ))
    .await?;
    let bulk = ms(t.elapsed());
    let t = Instant::now();
    for i in 0..args.singles {
        db.run(&BuiltQuery::fixed_with(
            SINGLE,
            [i.into_value(), args.moves.into_value(), now.into_value()],
        ))
        .await?;
    }
    let single = ms(t.elapsed()) / args.singles.max(1) as f64;
    db.run(&BuiltQuery::fixed(CLEAN)).await?;
    db.run(&BuiltQuery::fixed("VACUUM ANALYZE mto_service_items"))
        .await?;
    Ok((bulk, single))
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

    // Writes without the triggers, then with them (each after one warm-up
    // write, so plans are cached as in a long-lived session).
    writes(
        &client,
        &Args {
            bulk: 10,
            singles: 5,
            ..args.clone()
        },
        now,
    )
    .await?;
    let (bulk_plain, single_plain) = writes(&client, &args, now).await?;
    let t = Instant::now();
    track.install(&mut client).await?;
    let install = t.elapsed();
    let report = track
        .backfill::<i64, _>(&mut client, 20_000, |_| {})
        .await?;
    client.batch_execute("ANALYZE").await?;
    println!(
        "install {:.1?}; backfill of {} moves in {} batches {:.1?}; drift {}",
        install,
        report.entities,
        report.batches,
        report.elapsed,
        track.drift_count(&client).await?
    );
    writes(
        &client,
        &Args {
            bulk: 10,
            singles: 5,
            ..args.clone()
        },
        now,
    )
    .await?;
    let (bulk_tracked, single_tracked) = writes(&client, &args, now).await?;
    println!("\n| write into mto_service_items | without triggers | with tracking | × |");
    println!("|---|---|---|---|");
    println!(
        "| bulk INSERT … SELECT of {} rows (ms) | {bulk_plain:.0} | {bulk_tracked:.0} | {:.2} |",
        args.bulk,
        bulk_tracked / bulk_plain
    );
    println!(
        "| one-row INSERT, mean of {} (ms) | {single_plain:.3} | {single_tracked:.3} | {:.2} |",
        args.singles,
        single_tracked / single_plain
    );
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
    client.batch_execute("VACUUM ANALYZE moves").await?;
    client
        .run(&BuiltQuery::fixed_with(
            "SELECT set_config('work_mem', $1, false)",
            [args.work_mem.clone().into_value()],
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
                    times[i].push(time(&client, q).await?);
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
            println!(
                "| {shape} | {name} | {:.2} | {:.2} | {:.2} ({}) | {matching} |",
                medians[0], medians[1], best, candidates[best_i].0
            );
        }
    }
    Ok(())
}
