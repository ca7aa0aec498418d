//! Benchmark of the trigger-maintained "last changed" column of a `since`
//! graph (a table, not a timed test), on the seeded moves schema:
//!
//! - reads: count and first page (50 moves by id) at 1 day, 30 days and
//!   1 year for `Tracked`, for every other strategy (the best one shown),
//!   and for a plain indexed column holding the same values without
//!   triggers (the floor); medians of `--reps`, interleaved (`Tracked` and
//!   the plain column each timed right after an untimed run of itself,
//!   so both read from a warm cache);
//! - writes, with the triggers enabled and disabled in turn (medians of
//!   `--write-reps`, each statement in a transaction rolled back, then
//!   `VACUUM`): a bulk `INSERT … SELECT` of `--bulk` shipments (each on an
//!   existing pickup address) and of `--bulk` service items, all at the
//!   current time, and an `UPDATE` of `--updates` addresses to the current
//!   time; and the latency of one-row updates of service items
//!   (`--singles` per connection over `--connections` connections, p50
//!   and p99);
//! - the install and the batched backfill of the column;
//! - with `--side-table-probe`, instead of the above after the backfill: the
//!   same values kept in a narrow side table `(root key PRIMARY KEY,
//!   changed_at)` indexed on `(changed_at, key)`, in plain SQL without
//!   triggers (`session_replication_role = replica`, each write rolled
//!   back, then `VACUUM`): the root writes the bulk writes need (the moves
//!   they reach, all set to the current time) as an `UPDATE` of the
//!   column, the trigger's lock-then-update of the column, an upsert and an
//!   `UPDATE … FROM` of the side table, locks on the roots plus the upsert,
//!   and the locks alone; then the reads `Tracked` needs, from the column
//!   and from the side table (count with and without the root filters,
//!   first page by key and by change time). Medians and ranges of
//!   `--write-reps` and `--reps` interleaved rounds.
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
    /// Compare the column with a side table in plain SQL (see the module
    /// docs) instead of the writes with triggers and the strategy reads.
    #[arg(long)]
    side_table_probe: bool,
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

    if args.side_table_probe {
        return side_table_probe(&mut client, &args, now).await;
    }

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
            for round in 0..args.reps {
                // `Tracked` and the plain column read the same rows: each is
                // run once untimed right before it is timed, in turn first,
                // so neither pays for pages the other strategies' scans
                // pushed out of the cache (run in a fixed order, `Tracked`
                // came right after them and read 7 500 pages from disk
                // that the plain column then found in memory: 4x apart).
                let pair = if round % 2 == 0 { [0, 1] } else { [1, 0] };
                for i in pair.into_iter().chain(2..candidates.len()) {
                    let q = &candidates[i].1;
                    // a strategy that timed out once is not run again
                    let t = if times[i].iter().any(|t: &f64| t.is_infinite()) {
                        f64::INFINITY
                    } else {
                        if i < 2 {
                            time(&client, q).await?;
                        }
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

/// The side table of the probe (the schema is the bench's own).
const SIDE: &str = "since_probe_side";
/// The root filters of the moves graph, as the `Tracked` query has them.
const ROOT_FILTER: &str = "moves.show = TRUE AND moves.available_to_prime_at IS NOT NULL";

/// Timings as `median (min–max)` with `decimals` decimals.
fn spread(v: &[f64], decimals: usize) -> String {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let (m, lo, hi) = (s[s.len() / 2], s[0], s[s.len() - 1]);
    format!("{m:.decimals$} ({lo:.decimals$}–{hi:.decimals$})")
}

/// The tracked column against a narrow side table holding the same values,
/// in plain SQL: the root writes of the bulk writes, then the reads.
async fn side_table_probe(
    client: &mut tokio_postgres::Client,
    args: &Args,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), Box<dyn std::error::Error>> {
    client
        .batch_execute(&format!(
            "CREATE TABLE {SIDE} (root_id int8 PRIMARY KEY, changed_at timestamptz NOT NULL);
             INSERT INTO {SIDE} SELECT id, changed_at FROM moves WHERE changed_at IS NOT NULL ORDER BY id;
             CREATE INDEX ON {SIDE} (changed_at, root_id)"
        ))
        .await?;
    client
        .batch_execute(&format!("VACUUM ANALYZE {SIDE}, moves"))
        .await?;
    // The moves each bulk write reaches (as in BULK_ITEMS / BULK_SHIPMENTS
    // and BULK_ADDRESSES), with the value they get.
    client
        .execute(
            "CREATE TABLE since_probe_bulk AS SELECT DISTINCT 1 + (hashint8(g) & 2147483647) % $1::int8 AS k, \
             $2::timestamptz AS v FROM generate_series(1, $3::int8) AS g",
            &[&args.moves, &now, &args.bulk],
        )
        .await?;
    client
        .execute(
            "CREATE TABLE since_probe_addresses AS SELECT DISTINCT 1 + (g * 7919) % $1::int8 AS k, \
             $2::timestamptz AS v FROM generate_series(1, $3::int8) AS g",
            &[&args.moves, &now, &args.updates],
        )
        .await?;
    client
        .batch_execute("ANALYZE since_probe_bulk, since_probe_addresses")
        .await?;
    let lock = "SELECT count(*) FROM (SELECT id FROM moves WHERE id IN (SELECT k FROM {a}) \
                ORDER BY id FOR NO KEY UPDATE) AS l";
    let upsert = format!(
        "INSERT INTO {SIDE} AS s (root_id, changed_at) SELECT k, v FROM {{a}} ORDER BY k \
         ON CONFLICT (root_id) DO UPDATE SET changed_at = EXCLUDED.changed_at \
         WHERE s.changed_at IS DISTINCT FROM EXCLUDED.changed_at"
    );
    let writes: Vec<(&str, Vec<String>)> = vec![
        (
            "`UPDATE moves SET changed_at`",
            vec!["UPDATE moves AS m SET changed_at = a.v FROM {a} AS a \
                  WHERE m.id = a.k AND m.changed_at IS DISTINCT FROM a.v"
                .to_owned()],
        ),
        (
            "lock the moves in key order, then update the column (the trigger's shape)",
            vec![
                "WITH l AS MATERIALIZED (SELECT m.id, m.changed_at AS old, a.v FROM {a} AS a \
                  JOIN moves AS m ON m.id = a.k ORDER BY m.id FOR NO KEY UPDATE OF m) \
                  UPDATE moves AS t SET changed_at = l.v FROM l \
                  WHERE t.id = l.id AND l.old IS DISTINCT FROM l.v"
                    .to_owned(),
            ],
        ),
        ("upsert into the side table", vec![upsert.clone()]),
        (
            "`UPDATE side … FROM`",
            vec![format!(
                "UPDATE {SIDE} AS s SET changed_at = a.v FROM {{a}} AS a \
                 WHERE s.root_id = a.k AND s.changed_at IS DISTINCT FROM a.v"
            )],
        ),
        (
            "lock the moves in key order, then upsert into the side table",
            vec![lock.to_owned(), upsert],
        ),
        ("lock the moves alone", vec![lock.to_owned()]),
    ];
    let sets = [
        (
            "since_probe_bulk",
            "bulk insert (shipments or service items)",
        ),
        ("since_probe_addresses", "address update"),
    ];
    let mut times = vec![vec![Vec::new(); writes.len()]; sets.len()];
    for rep in 0..args.write_reps {
        for (si, (set, _)) in sets.iter().enumerate() {
            let mut order: Vec<usize> = (0..writes.len()).collect();
            if rep % 2 == 1 {
                order.reverse();
            }
            for wi in order {
                let tx = client.transaction().await?;
                tx.batch_execute("SET LOCAL session_replication_role = replica")
                    .await?;
                let t = Instant::now();
                for sql in &writes[wi].1 {
                    tx.batch_execute(&sql.replace("{a}", set)).await?;
                }
                times[si][wi].push(ms(t.elapsed()));
                tx.rollback().await?;
                client
                    .batch_execute(&format!("VACUUM moves, {SIDE}"))
                    .await?;
            }
        }
    }
    let rows: Vec<i64> = {
        let mut out = Vec::new();
        for (set, _) in &sets {
            let r = client
                .query_one(&format!("SELECT count(*) FROM {set}"), &[])
                .await?;
            out.push(r.get(0));
        }
        out
    };
    println!(
        "\n| root write ({} moves; ms, median (range) of {}) | {} | {} |",
        args.moves, args.write_reps, sets[0].1, sets[1].1
    );
    println!("|---|---|---|");
    println!("| moves reached | {} | {} |", rows[0], rows[1]);
    for (wi, (name, _)) in writes.iter().enumerate() {
        println!(
            "| {name} | {} | {} |",
            spread(&times[0][wi], 0),
            spread(&times[1][wi], 0)
        );
    }

    // Reads: the same window from the column and from the side table.
    client
        .execute(
            "SELECT set_config('work_mem', $1, false)",
            &[&args.work_mem],
        )
        .await?;
    let side_in = format!("moves.id IN (SELECT root_id FROM {SIDE} WHERE changed_at >= $1)");
    let page = |cond: &str, order: &str| {
        format!(
            "SELECT moves.*, moves.id, moves.updated_at FROM moves WHERE {ROOT_FILTER} AND {cond} \
             ORDER BY {order} LIMIT 51"
        )
    };
    let reads: Vec<(&str, String, String)> = vec![
        (
            "count, no root filter",
            "SELECT count(*) FROM moves WHERE changed_at >= $1".to_owned(),
            format!("SELECT count(*) FROM {SIDE} WHERE changed_at >= $1"),
        ),
        (
            "count",
            format!("SELECT count(*) FROM moves WHERE {ROOT_FILTER} AND moves.changed_at >= $1"),
            format!("SELECT count(*) FROM moves WHERE {ROOT_FILTER} AND {side_in}"),
        ),
        (
            "first page of 50 by key",
            page("moves.changed_at >= $1", "moves.id"),
            page(&side_in, "moves.id"),
        ),
        (
            "first page of 50 by change time",
            page("moves.changed_at >= $1", "moves.updated_at, moves.id"),
            page(&side_in, "moves.updated_at, moves.id"),
        ),
    ];
    println!(
        "\n| read ({} moves; ms, median (range) of {}) | since | column | side table | side / column |",
        args.moves, args.reps
    );
    println!("|---|---|---|---|---|");
    for (name, column, side) in &reads {
        for days in [1, 30, 365] {
            let at = now - chrono::Duration::days(days);
            let (mut c, mut s) = (Vec::new(), Vec::new());
            for rep in 0..args.reps {
                for first_column in [rep % 2 == 0, rep % 2 == 1] {
                    let (sql, out) = if first_column {
                        (column, &mut c)
                    } else {
                        (side, &mut s)
                    };
                    let t = Instant::now();
                    client.query(sql.as_str(), &[&at]).await?;
                    out.push(ms(t.elapsed()));
                }
            }
            println!(
                "| {name} | {days} d | {} | {} | {:.2} |",
                spread(&c, 2),
                spread(&s, 2),
                median(s.clone()) / median(c.clone())
            );
        }
    }
    Ok(())
}
