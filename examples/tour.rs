//! The pgpatterns tour: starts a throwaway PostgreSQL (or uses `DATABASE_URL`),
//! seeds demo data server-side with progress bars, and runs parameterized
//! queries, printing the SQL, the bound values, the rows and the time each took.
//!
//! ```text
//! cargo run --release --example tour --features testdb,seed -- --orders 200000
//! ```
//!
//! Every family, every strategy: latest status (orders and their status
//! history), changed since (moves changed in themselves or in their orders,
//! shipments, addresses, …; then with a last-changed column kept by
//! triggers) and a rollup report (a sales dashboard with a
//! summary line), each with what `Auto` chose and why, and a calibration
//! that measures `Auto`'s candidates on this database.

use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pgpatterns::sea_query::{Alias, Expr, ExprTrait, Func, Order, Query};
use pgpatterns::seed::moves::MovesSeed;
use pgpatterns::seed::orders::{OrdersSeed, OrdersTables};
use pgpatterns::seed::sales::SalesSeed;
use pgpatterns::testdb::TestDb;
use pgpatterns::{
    column, Agg, BuiltQuery, Calibration, Dim, IndexOptions, LatestStrategy, Metric, PageRequest,
    Rollup, RollupStrategy, RollupTable, Shape, SinceStrategy, Table,
};

#[derive(Parser, Debug)]
#[command(about = "A tour of pgpatterns on a throwaway PostgreSQL")]
struct Args {
    /// How many orders to generate.
    #[arg(long, default_value_t = 200_000)]
    orders: i64,
    /// How many moves (with their orders, shipments, addresses, …) to generate for the since section.
    #[arg(long, default_value_t = 20_000)]
    moves: i64,
    /// Orders per INSERT batch.
    #[arg(long, default_value_t = 25_000)]
    batch: i64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.orders < 1 || args.batch < 1 || args.moves < 1 {
        return Err("--orders, --moves and --batch must be at least 1".into());
    }

    println!("== pgpatterns tour");
    let db = TestDb::start()?;
    if db.is_throwaway() {
        println!(
            "started a throwaway PostgreSQL in {:.2?} (removed on exit): {}",
            db.startup_time(),
            db.connection_string()
        );
    } else {
        println!("using DATABASE_URL (a private schema, dropped on exit)");
    }
    let schema = db.schema().await?;
    let mut client = schema.connect().await?;

    // ---- seed -----------------------------------------------------------
    println!(
        "\n== seeding {} orders and their status history, server-side\n   \
         (each starts Pending, then turns Complete, Cancelled, or Complete and later Cancelled)",
        args.orders
    );
    let bar = ProgressBar::new(args.orders as u64).with_style(ProgressStyle::with_template(
        "{msg:>8} {bar:40} {pos}/{len}  {elapsed_precise}  eta {eta}",
    )?);
    bar.set_message("orders");
    let t0 = Instant::now();
    let report = OrdersSeed::new(args.orders)
        .batch_size(args.batch)
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
        "{} orders, {} statuses, keys and the advised index in {:.2?}",
        report.orders,
        report.statuses,
        t0.elapsed()
    );

    // ---- typed handles, bound values -------------------------------------
    let orders = Table::new("orders")?;
    let statuses = Table::new("order_status")?;
    let order_id = orders.column::<i64>("id")?;
    let customer = orders.column::<String>("customer")?;
    let st_status = statuses.column::<String>("status")?;

    println!("\n== status rows per status (GROUP BY through the executor)");
    let by_status = BuiltQuery::from(
        &Query::select()
            .column(st_status.col_ref())
            .expr_as(Func::count(Expr::col(st_status.col_ref())), Alias::new("n"))
            .from(statuses.table_ref())
            .group_by_col(st_status.col_ref())
            .order_by(st_status.col_ref(), Order::Asc)
            .to_owned(),
    );
    let (rows, took) = timed(by_status.fetch_all::<(String, i64)>(&client)).await?;
    println!("{by_status}");
    for (status, n) in &rows {
        println!("  {status:<10} {n:>10}");
    }
    println!("  ({} in {:.2?})", rows_text(rows.len()), took);

    println!("\n== a customer's first orders: every value is a bind parameter");
    for who in ["customer 42", "customer 42' OR '1'='1"] {
        let page = BuiltQuery::from(
            &Query::select()
                .column(order_id.col_ref())
                .column(customer.col_ref())
                .from(orders.table_ref())
                .and_where(customer.eq(who))
                .order_by(order_id.col_ref(), Order::Asc)
                .limit(3)
                .to_owned(),
        );
        let (rows, took) = timed(page.fetch_all::<(i64, String)>(&client)).await?;
        println!("{page}");
        for (id, c) in &rows {
            println!("  order {id:>8}  {c}");
        }
        println!("  ({} in {:.2?})\n", rows_text(rows.len()), took);
    }

    println!("== the naive join: counts every order that was EVER Pending");
    let naive = BuiltQuery::from(
        &Query::select()
            .expr(Func::count_distinct(Expr::col(order_id.col_ref())))
            .from(orders.table_ref())
            .inner_join(
                statuses.table_ref(),
                statuses
                    .column::<i64>("order_id")?
                    .expr()
                    .equals(order_id.col_ref()),
            )
            .and_where(st_status.eq("Pending"))
            .to_owned(),
    );
    let (rows, took) = timed(naive.fetch_all::<(i64,)>(&client)).await?;
    println!("{naive}");
    println!(
        "  {} orders in {:.2?}: every order, though none is still Pending\n",
        rows[0].0, took
    );

    println!("== latest: a denormalized status column kept by a trigger");
    let latest = OrdersTables::default()
        .latest()
        .denormalized(&orders.column::<String>("status")?);
    let denorm = latest.denormalize()?;
    denorm.install(&mut client).await?;
    let filled = denorm
        .backfill::<i64, _>(&mut client, 50_000, |_| {})
        .await?;
    for q in latest
        .clone()
        .strategy(LatestStrategy::Denormalized)
        .index_advice(false)
    {
        q.execute(&client).await?;
    }
    client.batch_execute("ANALYZE orders").await?;
    println!(
        "  trigger installed, {} orders backfilled in {:.2?}, drift {}",
        filled.entities,
        filled.elapsed,
        denorm.drift_count(&client).await?
    );

    println!("\n== latest: orders by their LATEST status, every strategy");
    println!(
        "{:<12} {:>10} {:>10} {:>10}   {:>12}",
        "strategy", "Pending", "Complete", "Cancelled", "first page"
    );
    for strategy in LatestStrategy::FROM_HISTORY
        .into_iter()
        .chain([LatestStrategy::Denormalized])
    {
        let mut line = format!("{:<12}", format!("{strategy:?}"));
        let mut total = Duration::ZERO;
        for status in ["Pending", "Complete", "Cancelled"] {
            let spec = latest.clone().status_eq(status).strategy(strategy);
            let (n, took) = timed(spec.count_query()?.fetch_all::<(i64,)>(&client)).await?;
            total += took;
            line += &format!(" {:>10}", n[0].0);
        }
        let spec = latest.clone().status_eq("Complete").strategy(strategy);
        let page = spec.page_query::<i64>(&PageRequest::new(50))?;
        let (rows, page_took) = timed(page.fetch_rows(&client)).await?;
        println!(
            "{line}   {:>3} rows in {page_took:>8.2?}   (counts took {total:.2?})",
            rows.len()
        );
    }
    // Auto: chosen per query shape from the live database, and says why.
    let auto = latest
        .clone()
        .status_eq("Complete")
        .strategy(LatestStrategy::Auto);
    let (n, count_took) = timed(auto.count(&client)).await?;
    let (page, page_took) =
        timed(auto.fetch_page::<(), i64>(&client, &PageRequest::new(50))).await?;
    let count_choice = auto.explain_choice(&client, Shape::Count).await?;
    let page_choice = auto
        .explain_choice(&client, Shape::Page { limit: 50 })
        .await?;
    println!(
        "{:<12} {:>21} {:>10}   {:>3} rows in {page_took:>8.2?}   (count took {count_took:.2?})",
        "Auto",
        "Complete:",
        n,
        page.rows.len()
    );
    println!("  (Auto's times include deciding, once; later calls find it cached)");
    println!(
        "  Auto chose {:?} for the count: {}",
        count_choice.strategy, count_choice.reason
    );
    println!(
        "  Auto chose {:?} for a page: {}",
        page_choice.strategy, page_choice.reason
    );
    let example = latest
        .clone()
        .status_eq("Complete")
        .strategy(LatestStrategy::Lateral)
        .page_query::<i64>(&PageRequest::new(50))?;
    println!("\nthe Lateral first page:\n{example}");

    // ---- since --------------------------------------------------------------
    println!(
        "\n== since: moves changed in the last 30 days, in themselves or anything related ({} moves)",
        args.moves
    );
    let moves_bar = ProgressBar::new(args.moves as u64).with_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} moves  {msg}  {elapsed_precise}",
    )?);
    // The moves dataset has an `orders` table of its own: a second schema keeps them apart.
    let moves_schema = db.schema().await?;
    let mut client = moves_schema.connect().await?;
    let moves = MovesSeed::new(args.moves);
    let now = moves
        .run(&client, |p| match p.stage {
            "moves" => moves_bar.set_position(p.done),
            stage => moves_bar.set_message(stage),
        })
        .await?
        .now;
    moves_bar.finish();
    let graph = moves.tables().full_graph();
    for strategy in SinceStrategy::ALL {
        for q in graph.index_advice(IndexOptions::new(strategy)) {
            q.execute(&client).await?;
        }
    }
    client.batch_execute("ANALYZE").await?;
    println!("  relations: {}", graph.labels().join(", "));
    println!(
        "  {:<16} {:>8} {:>10} {:>11}",
        "strategy", "count", "count ms", "page ms"
    );
    let since = now - chrono::Duration::days(30);
    for strategy in SinceStrategy::ALL.into_iter().chain([SinceStrategy::Auto]) {
        // `count` and `fetch_page` resolve Auto from the database.
        since_row(&client, &graph, since, strategy).await?;
    }
    println!("  (Auto's times include deciding, once; later calls find it cached)");
    let auto = graph.since(since).strategy(SinceStrategy::Auto);
    // The whole report once: the decision, the statistics it read, why each
    // other strategy lost, and where the decision came from.
    let choice = auto.explain_choice(&client, Shape::Count).await?;
    println!("\n  explain_choice for the count:");
    for line in choice.to_string().lines() {
        println!("    {line}");
    }
    let choice = auto
        .explain_choice(&client, Shape::Page { limit: 5 })
        .await?;
    println!(
        "  Auto chose {:?} for a page: {}",
        choice.strategy, choice.reason
    );
    // Where the rule may be wrong for this data, measure instead: every
    // candidate once under a short statement_timeout, answers checked
    // equal, interleaved rounds (close calls get more); the winner is kept
    // as Auto's decision until an index or trigger on these tables changes.
    let t = Instant::now();
    let measured = auto
        .calibrate(&mut client, Shape::Page { limit: 5 }, &Calibration::new())
        .await?;
    println!(
        "\n  calibrate for a page, measured here in {:.2?}:",
        t.elapsed()
    );
    for line in measured.to_string().lines() {
        println!("    {line}");
    }
    println!();
    // A last-changed column on moves, kept by statement-level triggers on
    // every table of the graph: a window is then one index range scan.
    let track = graph.track()?;
    track.install(&mut client).await?; // column, function, triggers: one transaction
    let fill_bar = ProgressBar::new(args.moves as u64).with_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} moves  backfill  {elapsed_precise}",
    )?);
    let filled = track
        .backfill::<i64, _>(&mut client, 5_000, |p| fill_bar.set_position(p.done))
        .await?;
    fill_bar.finish();
    for q in graph.index_advice(IndexOptions::new(SinceStrategy::Tracked)) {
        q.execute(&client).await?;
    }
    client.batch_execute("ANALYZE moves").await?;
    println!(
        "  tracked column {} kept by triggers on {} tables: {} moves filled in {:.1?}, drift {}",
        track.column().name().as_str(),
        track.tables().len(),
        filled.updated,
        filled.elapsed,
        track.drift_count(&client).await?
    );
    for strategy in [SinceStrategy::Tracked, SinceStrategy::Auto] {
        since_row(&client, &graph, since, strategy).await?;
    }
    let choice = auto.explain_choice(&client, Shape::Count).await?;
    println!(
        "  with the triggers installed, Auto chose {:?}: {}\n",
        choice.strategy, choice.reason
    );

    let q = graph.since(since).strategy(SinceStrategy::Exists);
    let page = q
        .fetch_page::<(i64,)>(&client, &PageRequest::new(3))
        .await?;
    for change in q.fetch_changes(&client, &page.keys).await? {
        println!(
            "  move {:>6} changed in {:<18} at {}",
            change.key,
            change.relation,
            change.newest.format("%Y-%m-%d %H:%M:%S")
        );
    }

    // ---- rollup -------------------------------------------------------------
    println!("\n== rollup: a sales dashboard — detail rows and a summary line in one query");
    let sales = SalesSeed::sample();
    sales.run(&client, |_| {}).await?;
    let sale = sales.tables().table;
    let merchant = Dim::new(&column!(sale, "merchant": String));
    let device = Dim::new(&column!(sale, "device": String));
    let total = Metric::new("total", Agg::count(column!(sale, "id": i32)));
    let users = Metric::new(
        "unique_users",
        Agg::count_distinct(column!(sale, "user_id": i32)),
    );
    let dashboard = Rollup::new(&sale)
        .dimension(&merchant)
        .dimension(&device)
        .metric(&total)
        .metric(&users)
        .with_total();
    println!("{}", dashboard.build()?);
    let (rows, took) = timed(dashboard.fetch_all(&client)).await?;
    // `(all)` marks the summary line's rolled-up dimensions.
    println!("{}", RollupTable::new(&rows));
    println!("  ({} in {:.2?})", rows_text(rows.len()), took);
    let dashboard = dashboard.strategy(RollupStrategy::Auto);
    let choice = dashboard.explain_choice(&client).await?;
    println!("  Auto chose {:?}: {}", choice.strategy, choice.reason);
    Ok(())
}

/// "1 row", "3 rows".
fn rows_text(n: usize) -> String {
    if n == 1 {
        "1 row".to_owned()
    } else {
        format!("{n} rows")
    }
}

/// One line of the since table: the strategy, its count and first page,
/// and how long each took.
async fn since_row(
    client: &tokio_postgres::Client,
    graph: &pgpatterns::SinceGraph<i64>,
    since: chrono::DateTime<chrono::Utc>,
    strategy: SinceStrategy,
) -> pgpatterns::Result<()> {
    let q = graph.since(since).strategy(strategy);
    let (n, count_took) = timed(q.count(client)).await?;
    let (page, page_took) = timed(q.fetch_page::<(i64,)>(client, &PageRequest::new(5))).await?;
    println!(
        "  {:<16} {:>8} {:>10.1} {:>11.2}   first page: {:?}",
        format!("{strategy:?}"),
        n,
        count_took.as_secs_f64() * 1000.0,
        page_took.as_secs_f64() * 1000.0,
        page.keys
    );
    Ok(())
}

async fn timed<T, F>(fut: F) -> pgpatterns::Result<(T, Duration)>
where
    F: std::future::Future<Output = pgpatterns::Result<T>>,
{
    let t = Instant::now();
    let out = fut.await?;
    Ok((out, t.elapsed()))
}
