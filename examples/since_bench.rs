//! Benchmark of the `since` strategies against the hand-written SQL they generalise,
//! on the seeded moves schema (a table, not a timed test).
//!
//! For each window (1 day, 30 days, 1 year) it times `count` and the first
//! page (50 moves by id) of every strategy *and* of its hand-written
//! equivalent (`IN (… UNION …)` for UnionIn and SemiJoin, `LEFT JOIN`s with
//! `OR` for OrJoins, `HAVING MAX(GREATEST(…))` for GreatestGroupBy, `OR EXISTS`
//! for Exists), interleaved,
//! `--reps` times, and prints medians in milliseconds as a Markdown table.
//! Each pair's results are compared for equality first.
//!
//! ```text
//! cargo run --release --example since_bench --features testdb,seed -- --moves 1000000
//! ```

use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pgpatterns::seed::moves::MovesSeed;
use pgpatterns::testdb::TestDb;
use pgpatterns::{BuiltQuery, Executor, IndexOptions, PageRequest, SinceStrategy, SqlType};

#[derive(Parser, Debug)]
#[command(
    about = "since strategies vs the equivalent hand-written SQL, on moves and everything related"
)]
struct Args {
    /// How many moves to generate.
    #[arg(long, default_value_t = 1_000_000)]
    moves: i64,
    /// Timed repetitions of each query (the median is printed).
    #[arg(long, default_value_t = 3)]
    reps: usize,
    /// The session's `work_mem`. At the server default (4MB) the hand-written
    /// IN-UNION query (and UnionIn) cannot hash its subquery from the 30-day
    /// window on at 1 M moves and takes minutes; pass `default` to keep it.
    #[arg(long, default_value = "64MB")]
    work_mem: String,
    /// Only these strategies (comma-separated, e.g. `SemiJoin,Exists`).
    #[arg(long, value_delimiter = ',')]
    strategies: Vec<String>,
    /// Skip the hand-written queries (e.g. where they take minutes).
    #[arg(long)]
    no_hand: bool,
}

// The hand-written queries with `since` bound: $1 as timestamp (UTC), $2 as
// timestamptz, matching each column's type. Macros,
// so counts and pages are built with `concat!` as static text.
macro_rules! option_4 {
    () => {
        "SELECT moves.* FROM moves
WHERE moves.available_to_prime_at IS NOT NULL AND moves.show = TRUE
  AND (moves.updated_at >= $1 OR
       (moves.id IN (
          SELECT mto_shipments.move_id FROM mto_shipments WHERE mto_shipments.updated_at >= $2
          UNION
          SELECT mto_service_items.move_id FROM mto_service_items WHERE mto_service_items.updated_at >= $2
          UNION
          SELECT payment_requests.move_id FROM payment_requests WHERE payment_requests.updated_at >= $1)) OR
       (moves.orders_id IN (SELECT orders.id FROM move_orders AS orders WHERE orders.updated_at >= $1)))"
    };
}

macro_rules! option_2 {
    () => {
        "SELECT moves.* FROM moves
  LEFT JOIN move_orders AS orders ON moves.orders_id = orders.id
  LEFT JOIN mto_shipments ON moves.id = mto_shipments.move_id
  LEFT JOIN mto_service_items ON mto_service_items.move_id = moves.id
  LEFT JOIN payment_requests ON payment_requests.move_id = moves.id
WHERE moves.available_to_prime_at IS NOT NULL AND moves.show = TRUE
  AND (moves.updated_at >= $1 OR orders.updated_at >= $1 OR mto_shipments.updated_at >= $2
       OR mto_service_items.updated_at >= $2 OR payment_requests.updated_at >= $1)
GROUP BY 1"
    };
}

// GREATEST mixes timestamp and timestamptz (implicit casts at the
// session's TimeZone, set to UTC below); $1 is unused but typed.
macro_rules! option_1 {
    () => {
        "SELECT moves.* FROM moves
  LEFT JOIN move_orders AS orders ON moves.orders_id = orders.id
  LEFT JOIN mto_shipments ON moves.id = mto_shipments.move_id
  LEFT JOIN mto_service_items ON mto_service_items.move_id = moves.id
  LEFT JOIN payment_requests ON payment_requests.move_id = moves.id
WHERE moves.available_to_prime_at IS NOT NULL AND moves.show = TRUE AND $1::timestamp IS NOT NULL
GROUP BY 1
HAVING MAX(GREATEST(moves.updated_at, orders.updated_at, mto_shipments.updated_at,
                    mto_service_items.updated_at, payment_requests.updated_at)) >= $2"
    };
}

macro_rules! hand_exists {
    () => {
        "SELECT moves.* FROM moves
WHERE moves.available_to_prime_at IS NOT NULL AND moves.show = TRUE
  AND (moves.updated_at >= $1
       OR EXISTS (SELECT 1 FROM move_orders AS orders WHERE orders.id = moves.orders_id AND orders.updated_at >= $1)
       OR EXISTS (SELECT 1 FROM mto_shipments s WHERE s.move_id = moves.id AND s.updated_at >= $2)
       OR EXISTS (SELECT 1 FROM mto_service_items i WHERE i.move_id = moves.id AND i.updated_at >= $2)
       OR EXISTS (SELECT 1 FROM payment_requests p WHERE p.move_id = moves.id AND p.updated_at >= $1))"
    };
}

macro_rules! count_and_page {
    ($q:ident) => {
        (
            concat!("SELECT count(*) FROM (", $q!(), ") AS m"),
            concat!($q!(), " ORDER BY moves.id LIMIT 50"),
        )
    };
}

/// The hand-written equivalent of each strategy: (name, count, first page).
fn hand(which: SinceStrategy) -> (&'static str, &'static str, &'static str) {
    let (name, (count, page)) = match which {
        SinceStrategy::UnionIn | SinceStrategy::SemiJoin => {
            ("hand IN-UNION", count_and_page!(option_4))
        }
        SinceStrategy::Exists => ("hand EXISTS", count_and_page!(hand_exists)),
        SinceStrategy::OrJoins => ("hand OR joins", count_and_page!(option_2)),
        _ => ("hand GREATEST", count_and_page!(option_1)),
    };
    (name, count, page)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.moves < 1 || args.reps < 1 {
        return Err("--moves and --reps must be at least 1".into());
    }
    let db = TestDb::start()?;
    let schema = db.schema().await?;
    let client = schema.connect().await?;
    client.batch_execute("SET TimeZone = 'UTC'").await?;
    if args.work_mem != "default" {
        // a setting, bound as a value
        let set = BuiltQuery::fixed_with(
            "SELECT set_config('work_mem', $1, false)",
            [args.work_mem.clone().into_value()],
        );
        set.fetch_rows(&client).await?;
    }

    let bar = ProgressBar::new(args.moves as u64).with_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} moves  {msg}  {elapsed_precise}  eta {eta}",
    )?);
    let t0 = Instant::now();
    let seed = MovesSeed::new(args.moves);
    let now = seed
        .run(&client, |p| match p.stage {
            "moves" => bar.set_position(p.done),
            stage => bar.set_message(stage),
        })
        .await?
        .now;
    bar.finish();
    let seeded = t0.elapsed();
    let s = seed.tables();
    let graph = s.seed_graph();
    let t1 = Instant::now();
    let mut ddl: Vec<BuiltQuery> = Vec::new();
    for strategy in SinceStrategy::ALL {
        for q in graph.index_advice(IndexOptions::new(strategy)) {
            if !ddl.contains(&q) {
                ddl.push(q);
            }
        }
    }
    for q in &ddl {
        q.execute(&client).await?;
    }
    client.batch_execute("VACUUM ANALYZE").await?;
    eprintln!(
        "seeded {} moves in {:.1?}; {} indexes + VACUUM ANALYZE in {:.1?}",
        args.moves,
        seeded,
        ddl.len(),
        t1.elapsed()
    );

    let chosen: Vec<SinceStrategy> = SinceStrategy::ALL
        .into_iter()
        .filter(|s| {
            args.strategies.is_empty() || args.strategies.iter().any(|n| *n == format!("{s:?}"))
        })
        .collect();
    if chosen.is_empty() {
        return Err(format!("no strategy matches {:?}", args.strategies).into());
    }
    let windows = [("1 d", 1i64), ("30 d", 30), ("365 d", 365)];
    // (query kind, window, strategy, ours?) -> times in ms
    let mut rows = Vec::new();
    for (wname, days) in windows {
        let at = now - chrono::Duration::days(days);
        let hand_params = || [at.naive_utc().into_value(), at.into_value()];
        let eligible: Vec<(i64,)> = client
            .rows_as(&BuiltQuery::fixed(
                "SELECT count(*) FROM moves WHERE show AND available_to_prime_at IS NOT NULL",
            ))
            .await?;
        let mut cells = Vec::new();
        for &strategy in &chosen {
            let q = graph.since(at).strategy(strategy);
            let (_, hand_count, hand_page) = hand(strategy);
            let ours_count = q.count_query()?;
            let ours_page = q.page_query(&PageRequest::new(50))?;
            let hand_count = BuiltQuery::fixed_with(hand_count, hand_params());
            let hand_page = BuiltQuery::fixed_with(hand_page, hand_params());
            // same answers first
            let a: Vec<(i64,)> = ours_count.fetch_all(&client).await?;
            let b: Vec<(i64,)> = if args.no_hand {
                a.clone()
            } else {
                hand_count.fetch_all(&client).await?
            };
            if a != b {
                return Err(format!("{strategy:?} {wname}: count {a:?} vs hand {b:?}").into());
            }
            let pa: Vec<(i64,)> = ours_page.fetch_all(&client).await?;
            let pb: Vec<(i64,)> = if args.no_hand {
                pa.clone()
            } else {
                hand_page.fetch_all(&client).await?
            };
            if pa != pb {
                return Err(format!("{strategy:?} {wname}: first pages differ").into());
            }
            if strategy == chosen[0] {
                eprintln!(
                    "{wname}: {} of {} eligible moves match ({:.1} %)",
                    a[0].0,
                    eligible[0].0,
                    100.0 * a[0].0 as f64 / eligible[0].0.max(1) as f64
                );
            }
            cells.push((strategy, [ours_count, hand_count, ours_page, hand_page]));
        }
        // interleaved repetitions
        let mut times: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); 4]; cells.len()];
        for rep in 0..args.reps {
            for (i, (_, queries)) in cells.iter().enumerate() {
                // Ours first on even repetitions, the hand-written query first
                // on odd ones: whichever runs second finds the first one's
                // pages in cache, a bias that must not always favour one side.
                let order: [usize; 4] = if rep % 2 == 0 {
                    [0, 1, 2, 3]
                } else {
                    [1, 0, 3, 2]
                };
                for j in order {
                    let q = &queries[j];
                    if args.no_hand && j % 2 == 1 {
                        times[i][j].push(f64::NAN);
                        continue;
                    }
                    let t = Instant::now();
                    client.rows(q).await?;
                    times[i][j].push(t.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        for (i, (strategy, _)) in cells.iter().enumerate() {
            let med: Vec<f64> = times[i].iter_mut().map(|v| median(v)).collect();
            rows.push((wname, *strategy, med));
        }
        eprintln!("{wname} done at {:.1?}", t0.elapsed());
    }

    println!(
        "\n{} moves, work_mem {}, medians of {} interleaved runs, ms (ours / hand-written = ratio)\n",
        args.moves, args.work_mem, args.reps
    );
    let mut header = "| query | since |".to_owned();
    for &strategy in &chosen {
        header += &format!(" {strategy:?} / {} |", hand(strategy).0);
    }
    println!("{header}");
    println!("|---|---|{}", "---|".repeat(chosen.len()));
    for (kind, a, b) in [("count", 0, 1), ("first page (50 by id)", 2, 3)] {
        for (wname, _) in windows {
            let mut line = format!("| {kind} | {wname} |");
            for &strategy in &chosen {
                if let Some((_, _, m)) = rows.iter().find(|r| r.0 == wname && r.1 == strategy) {
                    line += &if m[b].is_nan() {
                        format!(" {:.1} |", m[a])
                    } else {
                        format!(" {:.1} / {:.1} = {:.2} |", m[a], m[b], m[a] / m[b])
                    };
                }
            }
            println!("{line}");
        }
    }
    let both = [SinceStrategy::OrJoins, SinceStrategy::UnionIn];
    for (wname, _) in windows
        .iter()
        .filter(|_| both.iter().all(|s| chosen.contains(s)))
    {
        let get = |s: SinceStrategy| {
            rows.iter()
                .find(|r| r.0 == *wname && r.1 == s)
                .map_or(f64::NAN, |r| r.2[0])
        };
        println!(
            "\ncount {wname}: OrJoins / UnionIn = {:.1}x",
            get(SinceStrategy::OrJoins) / get(SinceStrategy::UnionIn)
        );
    }
    Ok(())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}
