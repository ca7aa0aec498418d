//! The strategy grid: every strategy and `Auto`, side by side,
//! in one run — a benchmark table, not a timed test.
//!
//! - **latest** (count, first page) × (with and without the advised index)
//!   × (short histories: `--orders` orders, ~2.3 rows each; long
//!   histories: `--long-orders` orders with `--drafts` more rows each);
//! - **since** (count, first page) × (1 d, 30 d, 365 d) at `--moves` moves;
//! - **rollup** (with and without `COUNT(DISTINCT …)`) at `--sales` rows.
//!
//! Each cell checks that every strategy returns the same answer, then times
//! them interleaved for `--rounds` rounds (25 for a query under 100 ms),
//! each round in a shuffled order (medians; a query past
//! `--timeout-ms` is cancelled and shown as `>timeout`, and not run again).
//! `Auto` is timed the way a caller runs it — decision (cached after the
//! first call) plus query — and its ratio to the cell's best strategy is
//! printed, with the decision's cost on a cache miss and once cached, and
//! next to it the median of the strategy it chose over the best (the
//! decision's quality, apart from the noise of timing `Auto` on its own
//! samples). So is
//! calibrated `Auto`: before the cell is timed, `calibrate` measures the
//! candidates on a second connection (`--calibration-rounds` rounds) and
//! pins the winner in a cache of its own (the rule-based `Auto` keeps
//! deciding by its rules in the global one); a calibrated `Auto` runs the
//! SQL of the strategy it pinned, after the same cached decision, so its
//! time is that strategy's median in the same interleaved rounds.
//! `--work-mem` sets the session's `work_mem` for every connection, since
//! several winners depend on what fits in memory.
//!
//! ```text
//! cargo run --release --example strategy_grid --features testdb,seed
//! ```
//!
//! Uses `DATABASE_URL` when set (each dataset in its own throwaway schema),
//! else starts a throwaway PostgreSQL cluster.

use std::future::Future;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pgpatterns::compare::round_order;
use pgpatterns::seed::moves::MovesSeed;
use pgpatterns::seed::orders::{OrdersSeed, OrdersTables};
use pgpatterns::seed::sales::SalesSeed;
use pgpatterns::testdb::{TestDb, TestSchema};
use pgpatterns::{
    BuiltQuery, Calibration, Choice, Error, Executor, IndexOptions, LatestStrategy, PageRequest,
    RollupRow, RollupStrategy, Shape, SinceStrategy, SqlType, StrategyCache,
};

#[derive(Parser, Debug)]
#[command(about = "Every strategy and Auto, per family, shape and dataset")]
struct Args {
    /// Orders of the short-history dataset (~2.3 status rows each).
    #[arg(long, default_value_t = 1_000_000)]
    orders: i64,
    /// Orders of the long-history dataset.
    #[arg(long, default_value_t = 50_000)]
    long_orders: i64,
    /// Extra history rows per order in the long-history dataset.
    #[arg(long, default_value_t = 40)]
    drafts: i64,
    /// Moves of the since dataset.
    #[arg(long, default_value_t = 1_000_000)]
    moves: i64,
    /// Sales rows of the rollup dataset.
    #[arg(long, default_value_t = 2_000_000)]
    sales: i64,
    /// Timed rounds per query (the median is shown).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// A query running longer is cancelled and shown as `>timeout`.
    #[arg(long, default_value_t = 20_000)]
    timeout_ms: u64,
    /// Only these families (comma-separated: latest, since, rollup).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The sessions' `work_mem` (e.g. `4MB`, `64MB`); the server's default
    /// when absent.
    #[arg(long)]
    work_mem: Option<String>,
    /// Timed rounds of each cell's calibration (0: no calibrated Auto).
    #[arg(long, default_value_t = 3)]
    calibration_rounds: usize,
}

/// One contender of a cell: a name and how to run it (returning a
/// comparable answer: a count, or the keys of a page).
type Run<'a> =
    Box<dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<Vec<i64>, Error>> + 'a>> + 'a>;

struct Cell {
    family: &'static str,
    what: String,
    /// (strategy, median ms or None when it timed out)
    medians: Vec<(String, Option<f64>)>,
    auto_ms: Option<f64>,
    auto_choice: String,
    /// Calibrated Auto: median and choice (`None` without calibration).
    calibrated: Option<(Option<f64>, String)>,
}

impl Cell {
    fn best(&self) -> Option<(&str, f64)> {
        self.medians
            .iter()
            .filter_map(|(n, m)| m.map(|m| (n.as_str(), m)))
            .min_by(|a, b| a.1.total_cmp(&b.1))
    }
}

fn is_timeout(e: &Error) -> bool {
    matches!(e, Error::Database { code: Some(c), .. } if c == "57014")
}

/// A contender whose untimed first run took less than this many ms is
/// timed in [`FAST_ROUNDS`] rounds (at least): a few milliseconds of noise
/// would otherwise decide its ratio.
const FAST_MS: f64 = 100.0;
const FAST_ROUNDS: usize = 25;

/// Runs every contender once (checking answers agree, untimed: a warm-up),
/// then interleaved timed rounds: `rounds` for every contender, and up to
/// [`FAST_ROUNDS`] for the fast ones. Returns per-contender medians
/// (`None` = timed out) and Auto's median, in that order (Auto last).
async fn time_cell(
    rounds: usize,
    runs: &[(String, Run<'_>)],
) -> Result<Vec<Option<f64>>, Box<dyn std::error::Error>> {
    let mut answers: Vec<Option<Vec<i64>>> = Vec::new();
    let mut budget: Vec<usize> = Vec::new();
    for (name, run) in runs {
        let t = Instant::now();
        match run().await {
            Ok(a) => answers.push(Some(a)),
            Err(e) if is_timeout(&e) => answers.push(None),
            Err(e) => return Err(format!("{name}: {e}").into()),
        }
        budget.push(if t.elapsed().as_secs_f64() * 1e3 < FAST_MS {
            rounds.max(FAST_ROUNDS)
        } else {
            rounds
        });
    }
    let reference = answers.iter().flatten().next().cloned();
    for ((name, _), a) in runs.iter().zip(&answers) {
        if let (Some(a), Some(r)) = (a, &reference) {
            if a != r {
                return Err(format!(
                    "{name} returned another answer ({} values vs {})",
                    a.len(),
                    r.len()
                )
                .into());
            }
        }
    }
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); runs.len()];
    let mut alive: Vec<bool> = answers.iter().map(Option::is_some).collect();
    let total = budget.iter().copied().max().unwrap_or(rounds);
    for round in 0..total {
        // A shuffled order per round: none always runs first, or always
        // right after the same (maybe slow) other one.
        for i in round_order(round, runs.len()) {
            if !alive[i] || times[i].len() >= budget[i] {
                continue;
            }
            let t = Instant::now();
            match (runs[i].1)().await {
                Ok(_) => times[i].push(t.elapsed().as_secs_f64() * 1e3),
                Err(e) if is_timeout(&e) => alive[i] = false,
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(times
        .into_iter()
        .zip(alive)
        .map(|(mut t, ok)| {
            if ok && !t.is_empty() {
                Some(median(&mut t))
            } else {
                None
            }
        })
        .collect())
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

fn bar(len: u64, what: &str) -> Result<ProgressBar, Box<dyn std::error::Error>> {
    Ok(
        ProgressBar::new(len).with_style(ProgressStyle::with_template(&format!(
            "{{bar:40}} {{pos}}/{{len}} {what} {{msg}} {{elapsed_precise}}"
        ))?),
    )
}

async fn connect(
    schema: &TestSchema,
    args: &Args,
) -> Result<tokio_postgres::Client, Box<dyn std::error::Error>> {
    let client = schema.connect().await?;
    client
        .rows(&BuiltQuery::fixed_with(
            "SELECT set_config('statement_timeout', $1, false)",
            [format!("{}ms", args.timeout_ms).into_value()],
        ))
        .await?;
    if let Some(w) = &args.work_mem {
        client
            .rows(&BuiltQuery::fixed_with(
                "SELECT set_config('work_mem', $1, false)",
                [w.clone().into_value()],
            ))
            .await?;
    }
    Ok(client)
}

/// The calibration each cell runs, or `None` without calibrated Auto.
fn calibration(args: &Args) -> Option<Calibration> {
    (args.calibration_rounds > 0).then(|| Calibration::new().rounds(args.calibration_rounds))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.rounds < 1 {
        return Err("--rounds must be at least 1".into());
    }
    let want = |f: &str| args.only.is_empty() || args.only.iter().any(|o| o == f);
    let calib = calibration(&args);
    if let Some(c) = &calib {
        c.check()?;
    }
    // Calibrated decisions live here, apart from the rule-based ones.
    let cal_cache = StrategyCache::new(Duration::from_secs(3600));
    let db = TestDb::start()?;
    let mut grid = Grid::default();
    if want("latest") {
        for (label, orders, drafts) in [
            ("short histories", args.orders, 0),
            ("long histories", args.long_orders, args.drafts),
        ] {
            let schema = db.schema().await?;
            let client = connect(&schema, &args).await?;
            let mut cal_client = connect(&schema, &args).await?;
            // Same SQL, another schema: decisions must not carry over.
            StrategyCache::global().clear();
            cal_cache.clear();
            let b = bar(orders as u64, "orders")?;
            let report = OrdersSeed::new(orders)
                .drafts(drafts)
                .run(&client, |p| match p.stage {
                    "orders" => b.set_position(p.done),
                    s => b.set_message(s),
                })
                .await?;
            b.finish_and_clear();
            eprintln!(
                "latest, {label}: {} orders, {} status rows ({:.1} per order)",
                report.orders,
                report.statuses,
                report.statuses as f64 / report.orders.max(1) as f64
            );
            for index in [true, false] {
                if !index {
                    client
                        .batch_execute("DROP INDEX order_status_latest; ANALYZE order_status")
                        .await?;
                    // Decisions are cached per table; after DDL, forget them.
                    StrategyCache::global().clear();
                    cal_cache.clear();
                }
                let shop = OrdersTables::default();
                let spec = shop.latest().status_eq("Complete");
                for shape in [Shape::Count, Shape::Page { limit: 50 }] {
                    let what = format!(
                        "{} · {label} · {}",
                        if matches!(shape, Shape::Count) {
                            "count"
                        } else {
                            "first page (50)"
                        },
                        if index { "advised index" } else { "no index" }
                    );
                    let strategies: Vec<LatestStrategy> = LatestStrategy::FROM_HISTORY
                        .into_iter()
                        .chain([LatestStrategy::Auto])
                        .collect();
                    let mut runs: Vec<(String, Run<'_>)> = Vec::new();
                    for s in strategies {
                        let spec = spec.clone().strategy(s);
                        let client = &client;
                        runs.push((
                            format!("{s:?}"),
                            Box::new(move || {
                                let spec = spec.clone();
                                Box::pin(async move {
                                    match shape {
                                        Shape::Page { limit } => Ok(spec
                                            .fetch_page::<(), i64>(client, &PageRequest::new(limit))
                                            .await?
                                            .keys),
                                        _ => Ok(vec![spec.count(client).await?]),
                                    }
                                })
                            }),
                        ));
                    }
                    let auto = spec.clone().strategy(LatestStrategy::Auto);
                    let calibrate = calib.as_ref().map(|c| {
                        let (auto, cal_client, cal_cache) = (&auto, &mut cal_client, &cal_cache);
                        async move { auto.calibrate_with(cal_cache, cal_client, shape, c).await }
                    });
                    measure(
                        &mut grid,
                        args.rounds,
                        "latest",
                        what,
                        &runs,
                        calibrate,
                        || auto.explain_choice(&client, shape),
                    )
                    .await?;
                }
            }
        }
    }
    if want("since") {
        let schema = db.schema().await?;
        let client = connect(&schema, &args).await?;
        client.batch_execute("SET TimeZone = 'UTC'").await?;
        let mut cal_client = connect(&schema, &args).await?;
        cal_client.batch_execute("SET TimeZone = 'UTC'").await?;
        let b = bar(args.moves as u64, "moves")?;
        let seed = MovesSeed::new(args.moves);
        let now = seed
            .run(&client, |p| match p.stage {
                "moves" => b.set_position(p.done),
                s => b.set_message(s),
            })
            .await?
            .now;
        b.finish_and_clear();
        let graph = seed.tables().seed_graph();
        let mut ddl: Vec<BuiltQuery> = Vec::new();
        for s in SinceStrategy::ALL {
            for q in graph.index_advice(IndexOptions::new(s)) {
                if !ddl.contains(&q) {
                    ddl.push(q);
                }
            }
        }
        for q in &ddl {
            q.execute(&client).await?;
        }
        client.batch_execute("VACUUM ANALYZE").await?;
        eprintln!("since: {} moves, {} advised indexes", args.moves, ddl.len());
        for days in [1i64, 30, 365] {
            let at: DateTime<Utc> = now - chrono::Duration::days(days);
            for shape in [Shape::Count, Shape::Page { limit: 50 }] {
                let what = format!(
                    "{} · {days} d",
                    if matches!(shape, Shape::Count) {
                        "count"
                    } else {
                        "first page (50)"
                    }
                );
                let mut runs: Vec<(String, Run<'_>)> = Vec::new();
                for s in SinceStrategy::ALL.into_iter().chain([SinceStrategy::Auto]) {
                    let q = graph.since(at).strategy(s);
                    let client = &client;
                    runs.push((
                        format!("{s:?}"),
                        Box::new(move || {
                            let q = q.clone();
                            Box::pin(async move {
                                match shape {
                                    Shape::Page { limit } => Ok(q
                                        .fetch_page::<(i64,)>(client, &PageRequest::new(limit))
                                        .await?
                                        .keys),
                                    _ => Ok(vec![q.count(client).await?]),
                                }
                            })
                        }),
                    ));
                }
                let auto = graph.since(at).strategy(SinceStrategy::Auto);
                let calibrate = calib.as_ref().map(|c| {
                    let (auto, cal_client, cal_cache) = (&auto, &mut cal_client, &cal_cache);
                    async move { auto.calibrate_with(cal_cache, cal_client, shape, c).await }
                });
                measure(
                    &mut grid,
                    args.rounds,
                    "since",
                    what,
                    &runs,
                    calibrate,
                    || auto.explain_choice(&client, shape),
                )
                .await?;
            }
        }
    }
    if want("rollup") {
        let schema = db.schema().await?;
        let client = connect(&schema, &args).await?;
        let mut cal_client = connect(&schema, &args).await?;
        StrategyCache::global().clear();
        cal_cache.clear();
        let b = bar(args.sales as u64, "sales")?;
        let seed = SalesSeed::new(args.sales);
        seed.run(&client, |p| {
            if p.stage == "sales" {
                b.set_position(p.done)
            }
        })
        .await?;
        b.finish_and_clear();
        eprintln!("rollup: {} sales", args.sales);
        let sale = seed.tables();
        for distinct in [true, false] {
            let what = format!(
                "dashboard + total · {}",
                if distinct {
                    "count, avg, count(distinct)"
                } else {
                    "count, avg"
                }
            );
            let dashboard = sale.dashboard(distinct);
            let mut runs: Vec<(String, Run<'_>)> = Vec::new();
            for s in RollupStrategy::ALL
                .into_iter()
                .chain([RollupStrategy::Auto])
            {
                let r = dashboard.clone().strategy(s);
                if r.check().is_err() {
                    // PreAggregate refuses COUNT(DISTINCT ..).
                    continue;
                }
                let client = &client;
                runs.push((
                    format!("{s:?}"),
                    Box::new(move || {
                        let r = r.clone();
                        Box::pin(async move { Ok(row_hashes(&r.fetch_all(client).await?)) })
                    }),
                ));
            }
            let auto = dashboard.clone().strategy(RollupStrategy::Auto);
            let calibrate = calib.as_ref().map(|c| {
                let (auto, cal_client, cal_cache) = (&auto, &mut cal_client, &cal_cache);
                async move { auto.calibrate_with(cal_cache, cal_client, c).await }
            });
            measure(
                &mut grid,
                args.rounds,
                "rollup",
                what,
                &runs,
                calibrate,
                || auto.explain_choice(&client),
            )
            .await?;
        }
    }
    print_grid(&args, &grid.cells, &grid.overhead);
    Ok(())
}

/// An order-insensitive fingerprint of rollup rows: one hash per row (of
/// its values, level included), sorted.
fn row_hashes(rows: &[RollupRow]) -> Vec<i64> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let mut v: Vec<i64> = rows
        .iter()
        .map(|r| {
            let mut h = DefaultHasher::new();
            format!(
                "{:?} {:?} {:?}",
                r.dimension_values(),
                r.metric_values(),
                r.level()
            )
            .hash(&mut h);
            h.finish() as i64
        })
        .collect();
    v.sort_unstable();
    v
}

/// The measured cells, and Auto's decision overhead per cell: (cell, on a
/// cache miss, median once cached in ms).
#[derive(Default)]
struct Grid {
    cells: Vec<Cell>,
    overhead: Vec<(String, Duration, f64)>,
}

/// Measures one cell: Auto's decision on a cache miss, then every
/// contender (Auto last) in interleaved rounds, then the median of 20
/// cached decisions; with `calibrate`, first calibrates `Auto` into a cache
/// of its own and reads the calibrated time off the pinned strategy's
/// median; records the cell and the overhead.
async fn measure<S, F, Fut, C>(
    grid: &mut Grid,
    rounds: usize,
    family: &'static str,
    what: String,
    runs: &[(String, Run<'_>)],
    calibrate: Option<C>,
    decide: F,
) -> Result<(), Box<dyn std::error::Error>>
where
    S: std::fmt::Debug,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<Choice<S>, Error>>,
    C: Future<Output = Result<Choice<S>, Error>>,
{
    // Calibrate first, into its own cache: the timed rounds below then
    // run on the same warm data for every contender.
    let chose = match calibrate {
        Some(c) => Some(format!("{:?}", c.await?.strategy)),
        None => None,
    };
    let miss = decide().await?;
    let medians = time_cell(rounds, runs).await?;
    let mut cached = Vec::new();
    for _ in 0..20 {
        let s = Instant::now();
        decide().await?;
        cached.push(s.elapsed().as_secs_f64() * 1e3);
    }
    eprintln!("{what}: {miss}");
    grid.overhead
        .push((what.clone(), miss.decided_in, median(&mut cached)));
    let n = runs.len() - 1;
    let calibrated = chose.map(|chose| {
        let ms = runs[..n]
            .iter()
            .zip(&medians)
            .find(|((name, _), _)| *name == chose)
            .and_then(|(_, m)| *m);
        (ms, chose)
    });
    grid.cells.push(Cell {
        family,
        what,
        medians: runs[..n]
            .iter()
            .map(|(name, _)| name.clone())
            .zip(medians[..n].iter().copied())
            .collect(),
        auto_ms: medians[n],
        auto_choice: format!("{:?}", miss.strategy),
        calibrated,
    });
    Ok(())
}

fn fmt_ms(m: Option<f64>) -> String {
    match m {
        Some(m) if m >= 100.0 => format!("{m:.0}"),
        Some(m) => format!("{m:.2}"),
        None => ">timeout".into(),
    }
}

fn print_grid(args: &Args, cells: &[Cell], overhead: &[(String, Duration, f64)]) {
    println!(
        "\nmedians of {} interleaved rounds ({} for queries under {} ms), ms, client wall \
         time (timeout {} ms)",
        args.rounds,
        args.rounds.max(FAST_ROUNDS),
        FAST_MS,
        args.timeout_ms
    );
    let mut worst: f64 = 0.0;
    let mut worst_calibrated: f64 = 0.0;
    let mut worst_pick: f64 = 0.0;
    if let Some(w) = &args.work_mem {
        println!("work_mem {w}");
    }
    for family in ["latest", "since", "rollup"] {
        let rows: Vec<&Cell> = cells.iter().filter(|c| c.family == family).collect();
        if rows.is_empty() {
            continue;
        }
        println!("\n### {family}\n");
        // Every strategy of the family, in first-seen order (a cell may
        // lack one: PreAggregate refuses COUNT(DISTINCT ..)).
        let mut names: Vec<&str> = Vec::new();
        for (n, _) in rows.iter().flat_map(|c| &c.medians) {
            if !names.contains(&n.as_str()) {
                names.push(n);
            }
        }
        let with_cal = rows.iter().any(|c| c.calibrated.is_some());
        println!(
            "| cell | {} | Auto (chose) | Auto / best | its strategy / best |{}",
            names.join(" | "),
            if with_cal {
                " calibrated (chose) | calibrated / best |"
            } else {
                ""
            }
        );
        println!(
            "|---|{}---|---|---|{}",
            "---|".repeat(names.len()),
            if with_cal { "---|---|" } else { "" }
        );
        for c in rows {
            let best = c.best();
            let ratio = match (c.auto_ms, best) {
                (Some(a), Some((_, b))) => a / b,
                _ => f64::NAN,
            };
            if ratio.is_finite() {
                worst = worst.max(ratio);
            }
            // The rule's pick by that strategy's own median: the decision's
            // quality apart from the noise of timing Auto separately.
            let pick = c
                .medians
                .iter()
                .find(|(n, _)| *n == c.auto_choice)
                .and_then(|(_, m)| *m)
                .zip(best)
                .map_or(f64::NAN, |(m, (_, b))| m / b);
            if pick.is_finite() {
                worst_pick = worst_pick.max(pick);
            }
            let cols: Vec<String> = names
                .iter()
                .map(|n| match c.medians.iter().find(|(m, _)| m == n) {
                    None => "n/a".to_owned(),
                    Some((_, m)) if best.is_some_and(|(b, _)| b == *n) => {
                        format!("**{}**", fmt_ms(*m))
                    }
                    Some((_, m)) => fmt_ms(*m),
                })
                .collect();
            let cal = match (&c.calibrated, best) {
                (Some((m, chose)), best) => {
                    let r = match (m, best) {
                        (Some(m), Some((_, b))) => m / b,
                        _ => f64::NAN,
                    };
                    if r.is_finite() {
                        worst_calibrated = worst_calibrated.max(r);
                    }
                    format!(" {} ({chose}) | {r:.2}× |", fmt_ms(*m))
                }
                (None, _) => String::new(),
            };
            println!(
                "| {} | {} | {} ({}) | {:.2}× | {:.2}× |{cal}",
                c.what,
                cols.join(" | "),
                fmt_ms(c.auto_ms),
                c.auto_choice,
                ratio,
                pick
            );
        }
    }
    println!("\nworst Auto / best: {worst:.2}×");
    println!("worst rule-picked strategy / best: {worst_pick:.2}×");
    if worst_calibrated > 0.0 {
        println!("worst calibrated Auto / best: {worst_calibrated:.2}×");
    }
    println!("\n| cell | decision on a cache miss, ms | once cached, ms |\n|---|---|---|");
    for (what, miss, hit) in overhead {
        println!("| {what} | {:.2} | {:.3} |", miss.as_secs_f64() * 1e3, hit);
    }
}
