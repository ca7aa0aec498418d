//! Every strategy of every family, side by side: same rows checked, medians
//! of interleaved rounds, ratios to the best, each plan's top node — printed
//! as tables and drawn as one SVG chart.
//!
//! Uses `DATABASE_URL` (a private schema, dropped on exit) or a throwaway
//! PostgreSQL, seeds the three datasets server-side and compares:
//!
//! - **latest** (orders and their status history): orders whose latest status is `Complete`,
//!   count and first page, every history strategy plus `Denormalized` (the
//!   column is installed and backfilled first; `--no-denormalized` skips it);
//! - **since** (moves and everything related): moves changed in the last `--days` days in
//!   themselves or anything related, count and first page, every strategy;
//! - **rollup** (sales): the dashboard (detail rows + summary line)
//!   with every [`RollupStrategy`] that applies, versus the same rows as a
//!   `UNION ALL` of one `GROUP BY` per grouping set, with and without
//!   `COUNT(DISTINCT ..)`.
//!
//! Every case ends with `Auto → X`: what `Auto` picked from the statistics
//! (its decision, with the evidence, is printed first), timed as that
//! strategy. The decision itself is not timed here; see the
//! `strategy_grid` example for its cost.
//!
//! ```text
//! cargo run --release --example compare --features testdb,seed -- --svg compare.svg
//! ```

use std::error::Error;
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Parser;
use pgpatterns::compare::{Compare, Comparison, Contender};
use pgpatterns::sea_query::{Expr, Func, Query, SelectStatement, UnionType};
use pgpatterns::seed::moves::MovesSeed;
use pgpatterns::seed::orders::OrdersSeed;
use pgpatterns::seed::sales::{SalesSeed, SalesTables};
use pgpatterns::testdb::TestDb;
use pgpatterns::{
    BuiltQuery, Executor, IndexOptions, LatestStrategy, PageRequest, RollupStrategy, Shape,
    SinceStrategy, SqlType, LATEST_STATUS,
};
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

#[derive(Parser, Debug)]
#[command(about = "Every strategy of every family, side by side, on a throwaway PostgreSQL")]
struct Args {
    /// Timed rounds per comparison (the median is reported).
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Untimed warm-up rounds before them.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Orders of the latest-status shop (about 2.33 status rows each).
    #[arg(long, default_value_t = 50_000)]
    orders: i64,
    /// Moves of the since dataset.
    #[arg(long, default_value_t = 20_000)]
    moves: i64,
    /// The since window, in days before the generated data's "now".
    #[arg(long, default_value_t = 30)]
    days: i64,
    /// Rows of the generated sales table.
    #[arg(long, default_value_t = 300_000)]
    sales: i64,
    /// Leave out the Denormalized latest strategy (no column, trigger or backfill).
    #[arg(long)]
    no_denormalized: bool,
    /// Where to write the SVG chart.
    #[arg(long, default_value = "target/compare.svg")]
    svg: PathBuf,
}

/// One comparison to run: a title, options, and the contenders.
struct Case {
    title: String,
    compare: Compare,
    contenders: Vec<Contender>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let args = Args::parse();
    if args.rounds < 1 || args.orders < 1 || args.moves < 1 || args.sales < 1 || args.days < 1 {
        return Err("--rounds, --orders, --moves, --sales and --days must be at least 1".into());
    }
    let db = TestDb::start()?;
    println!(
        "== PostgreSQL: {}",
        if db.is_throwaway() {
            "a throwaway cluster (removed on exit)"
        } else {
            "DATABASE_URL (private schemas, dropped on exit)"
        }
    );
    let compare = Compare::new(args.rounds).warmup(args.warmup);
    let mut done: Vec<(String, Comparison)> = Vec::new();

    // ---- latest -----------------------------------------------------------------
    let shop_schema = db.schema().await?;
    let mut shop = shop_schema.connect().await?;
    let t = Instant::now();
    let seed = OrdersSeed::new(args.orders);
    seed.run(&shop, |_| {}).await?;
    let tables = seed.tables();
    let mut spec = tables.latest().status_eq("Complete");
    let mut strategies = LatestStrategy::FROM_HISTORY.to_vec();
    if !args.no_denormalized {
        spec = spec.denormalized(&tables.orders.column::<String>("status")?);
        let denorm = spec.denormalize()?;
        denorm.install(&mut shop).await?;
        denorm.backfill::<i64, _>(&mut shop, 50_000, |_| {}).await?;
        for q in spec
            .clone()
            .strategy(LatestStrategy::Denormalized)
            .index_advice(false)
        {
            q.execute(&shop).await?;
        }
        shop.batch_execute("ANALYZE orders").await?;
        strategies.push(LatestStrategy::Denormalized);
    }
    println!(
        "seeded {} orders{} in {:.1?}",
        args.orders,
        if args.no_denormalized {
            ""
        } else {
            " and the denormalized status column"
        },
        t.elapsed()
    );
    let mut counts = Vec::new();
    let mut pages = Vec::new();
    for &s in &strategies {
        let q = spec.clone().strategy(s);
        counts.push(Contender::new(format!("{s:?}"), q.count_query()?));
        pages.push(Contender::new(
            format!("{s:?}"),
            q.page_query::<i64>(&PageRequest::new(50))?,
        ));
    }
    // Auto: decided from statistics (untimed here), then timed as the
    // strategy it picked — which must return the same rows.
    let auto = spec.clone().strategy(LatestStrategy::Auto);
    let count = auto.explain_choice(&shop, Shape::Count).await?;
    let page = auto
        .explain_choice(&shop, Shape::Page { limit: 50 })
        .await?;
    println!(
        "
latest, Auto for the count: {count}
latest, Auto for a page: {page}"
    );
    counts.push(Contender::new(
        format!("Auto → {:?}", count.strategy),
        spec.clone().strategy(count.strategy).count_query()?,
    ));
    pages.push(Contender::new(
        format!("Auto → {:?}", page.strategy),
        spec.clone()
            .strategy(page.strategy)
            .page_query::<i64>(&PageRequest::new(50))?,
    ));
    let cases = vec![
        Case {
            title: format!(
                "latest: count of {} orders whose latest status is Complete",
                args.orders
            ),
            compare: compare.clone(),
            contenders: counts,
        },
        Case {
            title: "latest: first page (50 by id) whose latest status is Complete".to_owned(),
            // Denormalized has `latest_status` but no `latest_at`: compare
            // what every strategy returns.
            compare: compare.clone().compare_columns(["id", LATEST_STATUS]),
            contenders: pages,
        },
    ];
    run_all(&shop, cases, &mut done).await?;

    // ---- since ------------------------------------------------------------------
    // The moves dataset has an `orders` table of its own: a schema of its own.
    let moves_schema = db.schema().await?;
    let client = moves_schema.connect().await?;
    let t = Instant::now();
    let seed = MovesSeed::new(args.moves);
    let now = seed.run(&client, |_| {}).await?.now;
    let graph = seed.tables().full_graph();
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
    println!(
        "\nseeded {} moves and {} advised indexes in {:.1?}",
        args.moves,
        ddl.len(),
        t.elapsed()
    );
    let since = now - chrono::Duration::days(args.days);
    let mut counts = Vec::new();
    let mut pages = Vec::new();
    for s in SinceStrategy::ALL {
        let q = graph.since(since).strategy(s);
        counts.push(Contender::new(format!("{s:?}"), q.count_query()?));
        pages.push(Contender::new(
            format!("{s:?}"),
            q.page_query(&PageRequest::new(50))?,
        ));
    }
    let auto = graph.since(since).strategy(SinceStrategy::Auto);
    let count = auto.explain_choice(&client, Shape::Count).await?;
    let page = auto
        .explain_choice(&client, Shape::Page { limit: 50 })
        .await?;
    println!(
        "
since, Auto for the count: {count}
since, Auto for a page: {page}"
    );
    counts.push(Contender::new(
        format!("Auto → {:?}", count.strategy),
        graph.since(since).strategy(count.strategy).count_query()?,
    ));
    pages.push(Contender::new(
        format!("Auto → {:?}", page.strategy),
        graph
            .since(since)
            .strategy(page.strategy)
            .page_query(&PageRequest::new(50))?,
    ));
    let cases = vec![
        Case {
            title: format!(
                "since: count of moves changed in the last {} days",
                args.days
            ),
            compare: compare.clone(),
            contenders: counts,
        },
        Case {
            title: format!(
                "since: first page (50) of moves changed in the last {} days",
                args.days
            ),
            compare: compare.clone(),
            contenders: pages,
        },
    ];
    run_all(&client, cases, &mut done).await?;

    // ---- rollup -----------------------------------------------------------------
    let t = Instant::now();
    let seed = SalesSeed::new(args.sales);
    seed.run(&client, |_| {}).await?;
    println!("\ngenerated {} sales in {:.1?}", args.sales, t.elapsed());
    let sale = Sale(seed.tables());
    let mut cases = Vec::new();
    for distinct in [true, false] {
        let dashboard = sale.0.dashboard(distinct);
        let mut contenders = Vec::new();
        for s in RollupStrategy::ALL {
            // PreAggregate refuses COUNT(DISTINCT ..): not a contender then.
            if let Ok(q) = dashboard.clone().strategy(s).build() {
                contenders.push(Contender::new(format!("{s:?}"), q));
            }
        }
        contenders.push(Contender::new(
            "UNION ALL of GROUP BYs",
            sale.union_all(distinct),
        ));
        let auto = dashboard.clone().strategy(RollupStrategy::Auto);
        let choice = auto.explain_choice(&client).await?;
        println!(
            "
rollup, Auto: {choice}"
        );
        contenders.push(Contender::new(
            format!("Auto → {:?}", choice.strategy),
            dashboard.clone().strategy(choice.strategy).build()?,
        ));
        cases.push(Case {
            title: format!(
                "rollup: dashboard + summary line, {} ({} sales)",
                if distinct {
                    "count, avg, count(distinct user)"
                } else {
                    "count, avg"
                },
                args.sales
            ),
            compare: compare.clone(),
            contenders,
        });
    }
    run_all(&client, cases, &mut done).await?;

    // ---- the chart --------------------------------------------------------------
    draw(&args.svg, &done, args.rounds)?;
    println!(
        "\nwrote the chart of median times to {}",
        args.svg.display()
    );
    Ok(())
}

/// Runs each case, printing its table as soon as it is done.
async fn run_all<E: Executor>(
    db: &E,
    cases: Vec<Case>,
    done: &mut Vec<(String, Comparison)>,
) -> Result<(), Box<dyn Error>> {
    for case in cases {
        let t = Instant::now();
        let cmp = case.compare.run(db, &case.contenders).await?;
        let worst = cmp.outcomes().iter().map(|o| o.ratio).fold(1.0, f64::max);
        println!(
            "\n== {}\n   every strategy returns the same {} row{}; medians of {} interleaved \
             rounds after {} warm-up ({:.1?})\n\n{cmp}\n\nbest: {}; the slowest is {worst:.1}× slower",
            case.title,
            cmp.rows(),
            if cmp.rows() == 1 { "" } else { "s" },
            cmp.rounds(),
            cmp.warmup(),
            t.elapsed(),
            cmp.best().label
        );
        done.push((case.title, cmp));
    }
    Ok(())
}

/// The dashboard's rows by hand, on the generated sale table.
struct Sale(SalesTables);

impl Sale {
    /// The same rows, by hand: one `GROUP BY` per grouping set, `UNION ALL`,
    /// with NULL for the dimensions a set does not group by and the
    /// `GROUPING()` bitmask as a bound `int4` (the rollup's last column).
    fn union_all(&self, distinct: bool) -> BuiltQuery {
        let branch = |detail: bool| -> SelectStatement {
            let mut q = Query::select();
            for dim in [&self.0.merchant, &self.0.device] {
                if detail {
                    q.expr(dim.expr());
                } else {
                    q.expr(Expr::cust("NULL"));
                }
            }
            q.expr(Func::count(self.0.id.expr()))
                .expr(Func::avg(self.0.charged_amount.expr()));
            if distinct {
                q.expr(Func::count_distinct(self.0.user_id.expr()));
            }
            q.expr(if detail { 0i32 } else { 3i32 }.param())
                .from(self.0.table.table_ref());
            if detail {
                q.add_group_by([self.0.merchant.expr(), self.0.device.expr()]);
            }
            q
        };
        BuiltQuery::from(&branch(true).union(UnionType::All, branch(false)).to_owned())
    }
}

/// One panel per comparison: a horizontal bar per contender, its median in
/// milliseconds and ratio to the best after it, the best in green; a log
/// scale when the slowest is more than 20× the fastest. (Plans are in the
/// printed tables.)
fn draw(path: &Path, done: &[(String, Comparison)], rounds: usize) -> Result<(), Box<dyn Error>> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    const WIDTH: u32 = 1000;
    const TITLE: u32 = 40;
    let heights: Vec<u32> = done
        .iter()
        .map(|(_, c)| 80 + 30 * c.outcomes().len() as u32)
        .collect();
    let root =
        SVGBackend::new(path, (WIDTH, TITLE + heights.iter().sum::<u32>())).into_drawing_area();
    root.fill(&WHITE)?;
    // One label width for every panel, so their axes line up.
    let label_width = done
        .iter()
        .flat_map(|(_, c)| c.outcomes().iter().map(|o| o.label.chars().count() as u32))
        .max()
        .unwrap_or(0)
        * 7
        + 16;
    let (head, mut rest) = root.split_vertically(TITLE);
    head.draw(&Text::new(
        format!("pgpatterns: median time per strategy ({rounds} interleaved rounds)"),
        (12, 12),
        ("sans-serif", 20).into_font(),
    ))?;
    for ((title, cmp), h) in done.iter().zip(heights) {
        let (area, below) = rest.split_vertically(h);
        let medians: Vec<f64> = cmp.outcomes().iter().map(|o| ms(o.median)).collect();
        let lo = medians
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
            .max(1e-3);
        let hi = medians.iter().copied().fold(0.0, f64::max).max(lo);
        if hi / lo > 20.0 {
            // headroom on the right for the figures after the longest bar
            let axis = (lo / 2.0..hi * 6.0).log_scale();
            let x = (axis, lo / 2.0, "median ms (log scale)");
            panel(&area, title, cmp, x, label_width)?;
        } else {
            let x = (0.0..hi * 1.25, 0.0, "median ms");
            panel(&area, title, cmp, x, label_width)?;
        }
        rest = below;
    }
    root.present()?;
    Ok(())
}

fn panel<X>(
    area: &DrawingArea<SVGBackend, plotters::coord::Shift>,
    title: &str,
    cmp: &Comparison,
    (x, x0, x_desc): (X, f64, &str),
    label_width: u32,
) -> Result<(), Box<dyn Error>>
where
    X: AsRangedCoord<Value = f64>,
    X::CoordDescType: ValueFormatter<f64>,
{
    let outcomes = cmp.outcomes();
    let n = outcomes.len();
    let labels: Vec<String> = outcomes.iter().map(|o| o.label.clone()).collect();
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(36)
        .y_label_area_size(label_width)
        // `0..n - 1` is inclusive: n segments, one per contender.
        .build_cartesian_2d(x, (0..n - 1).into_segmented())?;
    // Bar i from the top: segment n - 1 - i.
    let row = |i: usize| n - 1 - i;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .label_style(("sans-serif", 12))
        .axis_desc_style(("sans-serif", 12))
        .y_labels(n)
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(s) if *s < n => labels[n - 1 - s].clone(),
            _ => String::new(),
        })
        .x_desc(x_desc)
        .draw()?;
    let best = RGBColor(46, 139, 87);
    let other = RGBColor(70, 110, 180);
    chart.draw_series(outcomes.iter().enumerate().map(|(i, o)| {
        let color = if o.ratio == 1.0 { best } else { other };
        let mut bar = Rectangle::new(
            [
                (x0, SegmentValue::Exact(row(i))),
                (ms(o.median), SegmentValue::Exact(row(i) + 1)),
            ],
            color.filled(),
        );
        bar.set_margin(5, 5, 0, 0);
        bar
    }))?;
    chart.draw_series(outcomes.iter().enumerate().map(|(i, o)| {
        Text::new(
            format!(" {:.1} ms  ×{:.2}", ms(o.median), o.ratio),
            (ms(o.median), SegmentValue::CenterOf(row(i))),
            TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
        )
    }))?;
    Ok(())
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
