//! Latest status, end to end: "orders whose **latest** status is X".
//!
//! Seeds the shop (server-side, progress bar), shows the naive join
//! and its wrong count next to the right one, installs the denormalized
//! status column (trigger + batched backfill), then times every strategy —
//! count and first page, medians of interleaved rounds — next to the same
//! `DISTINCT ON` written by hand and a plain indexed column (the floor).
//!
//! ```text
//! cargo run --release --example latest_status --features testdb,seed -- --orders 1000000
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pgpatterns::seed::orders::{OrdersSeed, OrdersTables};
use pgpatterns::testdb::TestDb;
use pgpatterns::{BuiltQuery, Executor, LatestStrategy, PageRequest, SqlType};

#[derive(Parser, Debug)]
#[command(
    about = "Orders whose latest status is X: every strategy, timed, on a throwaway PostgreSQL"
)]
struct Args {
    /// How many orders to generate (about 2.33 status rows each).
    #[arg(long, default_value_t = 200_000)]
    orders: i64,
    /// Timed rounds per query (the median is shown).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// The status to filter on.
    #[arg(long, default_value = "Complete")]
    status: String,
    /// Leave out the advised history index (to see what it buys).
    #[arg(long)]
    no_index: bool,
}

/// The naive ORM query: every order that EVER had the status.
const NAIVE: &str = "SELECT count(*) FROM orders
    INNER JOIN order_status ON orders.id = order_status.order_id
    WHERE order_status.status = $1";

/// The same shape as the generated DistinctOn count, written by hand.
const HAND_DISTINCT_ON: &str = "SELECT count(*) FROM (
    SELECT o.*, l.status AS latest_status, l.created_at AS latest_at
    FROM orders o
    JOIN (SELECT DISTINCT ON (order_id) order_id, status, created_at
          FROM order_status ORDER BY order_id, created_at DESC, id DESC) l
      ON o.id = l.order_id
    WHERE l.status = $1) m";

/// The physical floor: a plain indexed status column on the orders.
const PLAIN_COLUMN: &str = "SELECT count(*) FROM orders WHERE status = $1";
const PLAIN_PAGE: &str = "SELECT * FROM orders WHERE status = $1 ORDER BY id LIMIT 50";

struct Line {
    name: String,
    count: Option<i64>,
    count_times: Vec<Duration>,
    page_rows: Option<usize>,
    page_times: Vec<Duration>,
    count_q: BuiltQuery,
    page_q: Option<BuiltQuery>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.orders < 1 || args.rounds < 1 {
        return Err("--orders and --rounds must be at least 1".into());
    }
    let db = TestDb::start()?;
    let schema = db.schema().await?;
    let mut client = schema.connect().await?;
    println!(
        "== PostgreSQL: {}",
        if db.is_throwaway() {
            "a throwaway cluster (removed on exit)"
        } else {
            "DATABASE_URL (a private schema, dropped on exit)"
        }
    );

    // ---- seed ---------------------------------------------------------------
    let bar = ProgressBar::new(args.orders as u64).with_style(ProgressStyle::with_template(
        "{msg:>9} {bar:40} {pos}/{len}  {elapsed_precise}",
    )?);
    bar.set_message("orders");
    let report = OrdersSeed::new(args.orders)
        .with_index(!args.no_index)
        .run(&client, |p| {
            if p.stage != "orders" {
                bar.set_message(p.stage);
                bar.set_length(p.total.unwrap_or(0));
            }
            bar.set_position(p.done);
        })
        .await?;
    bar.finish();
    println!(
        "seeded {} orders, {} statuses: rows in {:.2?}, keys/index/ANALYZE in {:.2?}{}",
        report.orders,
        report.statuses,
        report.load,
        report.finish,
        if args.no_index {
            " (no history index)"
        } else {
            ""
        }
    );

    // ---- the denormalized column: trigger + backfill ---------------------------
    let shop = OrdersTables::default();
    let status_col = shop.orders.column::<String>("status")?;
    let spec = shop.latest().denormalized(&status_col);
    let denorm = spec.denormalize()?;
    denorm.install(&mut client).await?;
    let bar = ProgressBar::new(args.orders as u64).with_style(ProgressStyle::with_template(
        " backfill {bar:40} {pos}/{len}  {elapsed_precise}",
    )?);
    let filled = denorm
        .backfill::<i64, _>(&mut client, 50_000, |p| bar.set_position(p.done))
        .await?;
    bar.finish();
    for q in spec
        .clone()
        .strategy(LatestStrategy::Denormalized)
        .index_advice(false)
    {
        q.execute(&client).await?;
    }
    client.batch_execute("ANALYZE orders").await?;
    println!(
        "denormalized column: trigger installed, {} orders backfilled in {} batches, {:.2?}; drift: {}",
        filled.entities,
        filled.batches,
        filled.elapsed,
        denorm.drift_count(&client).await?
    );

    // ---- every way to ask ------------------------------------------------------
    let status = args.status.clone();
    let bound = || [status.clone().into_value()];
    let mut lines = vec![Line::new(
        "naive join (wrong)",
        BuiltQuery::fixed_with(NAIVE, bound()),
        None,
    )];
    for strategy in LatestStrategy::FROM_HISTORY
        .into_iter()
        .chain([LatestStrategy::Denormalized])
    {
        let s = spec.clone().status_eq(status.clone()).strategy(strategy);
        lines.push(Line::new(
            &format!("{strategy:?}"),
            s.count_query()?,
            Some(s.page_query::<i64>(&PageRequest::new(50))?),
        ));
    }
    lines.push(Line::new(
        "DISTINCT ON by hand",
        BuiltQuery::fixed_with(HAND_DISTINCT_ON, bound()),
        None,
    ));
    lines.push(Line::new(
        "plain column (floor)",
        BuiltQuery::fixed_with(PLAIN_COLUMN, bound()),
        Some(BuiltQuery::fixed_with(PLAIN_PAGE, bound())),
    ));

    // One untimed warm-up, then interleaved rounds.
    for round in 0..=args.rounds {
        for line in &mut lines {
            let t = Instant::now();
            let rows: Vec<(i64,)> = line.count_q.fetch_all(&client).await?;
            let took = t.elapsed();
            line.count = Some(rows[0].0);
            if let Some(page) = &line.page_q {
                let t = Instant::now();
                let rows = client.rows(page).await?;
                let page_took = t.elapsed();
                line.page_rows = Some(rows.len());
                if round > 0 {
                    line.page_times.push(page_took);
                }
            }
            if round > 0 {
                line.count_times.push(took);
            }
        }
    }

    println!(
        "\n== orders whose latest status is {status:?}: {} orders, medians of {} rounds",
        args.orders, args.rounds
    );
    let best = lines[1..]
        .iter()
        .map(|l| median(&l.count_times))
        .min()
        .unwrap_or_default();
    println!(
        "{:<22} {:>9} {:>11} {:>8} {:>11}",
        "query", "count", "count ms", "× best", "page ms"
    );
    for line in &lines {
        let c = median(&line.count_times);
        let page = if line.page_times.is_empty() {
            "-".to_owned()
        } else {
            format!("{:.3}", ms(median(&line.page_times)))
        };
        println!(
            "{:<22} {:>9} {:>11.1} {:>8.2} {:>11}",
            line.name,
            line.count.unwrap_or_default(),
            ms(c),
            ms(c) / ms(best).max(1e-9),
            page
        );
    }
    let by = |name: &str| {
        lines
            .iter()
            .find(|l| l.name == name)
            .map(|l| ms(median(&l.count_times)))
            .unwrap_or(f64::NAN)
    };
    println!(
        "\ngenerated DistinctOn / hand-written: {:.3}×   Denormalized / plain column: {:.3}×",
        by("DistinctOn") / by("DISTINCT ON by hand"),
        by("Denormalized") / by("plain column (floor)"),
    );
    let right = lines[1].count;
    let agree = lines[1..].iter().all(|l| l.count == right);
    println!(
        "every strategy agrees: {agree}; the naive join counts {} orders (it counts every order that ever had the status)",
        lines[0].count.unwrap_or_default()
    );
    if !agree {
        return Err("strategies disagree".into());
    }
    Ok(())
}

impl Line {
    fn new(name: &str, count_q: BuiltQuery, page_q: Option<BuiltQuery>) -> Line {
        Line {
            name: name.to_owned(),
            count: None,
            count_times: Vec::new(),
            page_rows: None,
            page_times: Vec::new(),
            count_q,
            page_q,
        }
    }
}

fn median(times: &[Duration]) -> Duration {
    let mut t = times.to_vec();
    t.sort();
    t.get(t.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
