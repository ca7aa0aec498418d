//! One report, several sources: the top 10 spenders of the last 30 days
//! (completed orders) read from
//!
//! 1. the orders table, with the index advised for the report;
//! 2. a materialized view of the report (created, refreshed concurrently,
//!    its freshness checked);
//! 3. the in-process `ReportCache`;
//! 4. a streaming standby, through a `ReplicaRouter` session that wrote an
//!    order just before and still reads its own writes;
//! 5. a maintained summary table (per user, status and day, with the sum
//!    of the amounts), installed and backfilled here.
//!
//! Generates the shop on a throwaway PostgreSQL with a standby, checks that
//! every source returns the same rows, prints them once, and prints each
//! source's latency (medians of interleaved rounds, so every source sees
//! the same machine load).
//!
//! ```text
//! cargo run --release --example reports --features testdb,seed -- --orders 1000000 --rounds 15
//! ```

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pgpatterns::ops::matview::{Freshness, MatView};
use pgpatterns::ops::summary::{Bucket, Measure, Summary};
use pgpatterns::ops::{ReportCache, TopN, TopRow};
use pgpatterns::replica::{ReplicaRouter, RouterOptions};
use pgpatterns::sea_query::Query;
use pgpatterns::seed::shop::ShopSeed;
use pgpatterns::testdb::TestDb;
use pgpatterns::{table, BuiltQuery, SqlType};
use rust_decimal::Decimal;

#[derive(Parser, Debug)]
#[command(
    about = "The top 10 spenders of the last 30 days from the base table, a materialized view, an in-process cache and a standby, on a throwaway PostgreSQL"
)]
struct Args {
    /// Orders to generate.
    #[arg(long, default_value_t = 1_000_000)]
    orders: i64,
    /// Users to generate.
    #[arg(long, default_value_t = 100_000)]
    users: i64,
    /// Timed rounds; each round reads once from every source, in turn.
    #[arg(long, default_value_t = 15)]
    rounds: usize,
}

type Rows = Vec<TopRow<i64, Decimal>>;
type Report = TopN<i64, Decimal>;
type BoxFut<'a> = Pin<Box<dyn Future<Output = pgpatterns::Result<Rows>> + 'a>>;

/// One way to get the report's rows.
struct Source<'a> {
    name: &'static str,
    read: Box<dyn Fn(usize) -> BoxFut<'a> + 'a>,
    times: Vec<Duration>,
}

/// Source 5, a maintained summary table: one row per (user, status, day)
/// with the order count and the sum of the amounts, kept exact on every
/// write by statement-level triggers. The report reads whole days from it
/// and the two partial days at the window's edges from the orders.
fn summary_table_source<'a>(report: &'a Report, client: &'a tokio_postgres::Client) -> Source<'a> {
    Source {
        name: "summary table (user, status, day)",
        read: Box::new(move |_| Box::pin(report.fetch_all(client))),
        times: Vec::new(),
    }
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times.get(times.len() / 2).copied().unwrap_or_default()
}

fn describe(f: &Freshness) -> String {
    format!(
        "populated {}, last refresh {} ago ({}, took {}), base tables changed since: {}",
        f.populated,
        f.age.map(|a| format!("{a:.1?}")).unwrap_or("-".into()),
        match &f.last_refresh {
            Some(r) if r.concurrently => "concurrently",
            Some(_) => "plain",
            None => "never",
        },
        f.last_refresh
            .as_ref()
            .map(|r| format!("{:.1?}", r.duration))
            .unwrap_or("-".into()),
        match f.base_changed() {
            Some(true) => format!("yes ({:?})", f.base),
            Some(false) => "no".into(),
            None => format!("unknown ({:?})", f.base),
        }
    )
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.orders < 1 || args.users < 1 || args.rounds < 1 {
        return Err("need orders, users and rounds >= 1".into());
    }
    let db = TestDb::start()?;
    let standby = db.standby()?;
    let schema = db.schema().await?;
    let mut client = schema.connect().await?;
    println!(
        "primary ready in {:.1?}, standby in {:.1?}",
        db.startup_time(),
        standby.startup_time()
    );

    // Logged tables: unlogged ones are not replicated to the standby.
    let seed = ShopSeed::new(args.orders).users(args.users).logged(true);
    println!(
        "== generating {} users and {} orders over a year",
        args.users, args.orders
    );
    let bar = ProgressBar::new((args.users + args.orders) as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} rows  {msg}  {elapsed_precise}")?,
    );
    let t0 = Instant::now();
    seed.run(&client, |p| {
        bar.set_message(p.stage);
        match p.stage {
            "users" => bar.set_position(p.done),
            "orders" => bar.set_position(args.users as u64 + p.done),
            _ => {}
        }
    })
    .await?;
    bar.finish();
    println!("generated, keyed and analyzed in {:.2?}", t0.elapsed());
    // This session's write counts reach the shared statistics when it goes
    // idle, at most once a second; publish them now, so the view's
    // freshness check does not count the generated rows as later changes.
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await?;

    let shop = seed.tables();
    let username = shop.username.clone();
    let since = chrono::Utc::now() - chrono::Duration::days(30);
    let report: Report = TopN::new(&shop.user_id, &shop.order_user_id, &shop.total_amount, 10)
        .extra(&username)
        // The 30 days before the run started, fixed, so that every source
        // answers the same question for the whole run. (`window_last` is
        // relative to `now()`: a view of it moves its window at each
        // refresh, and between refreshes differs from the base by the
        // orders that left the window meanwhile.)
        .window_since(&shop.order_created_at, since)
        .where_eq(&shop.status, "completed");
    println!("\n{}", report.build()?);

    // ---- 1. the base table, with the advised index --------------------------
    let t = Instant::now();
    report
        .index("shop_orders_top_n")?
        .execute_outside_transaction(&client)
        .await?;
    client.batch_execute("ANALYZE shop_orders").await?;
    println!("\nadvised index built in {:.1?}", t.elapsed());

    // ---- 2. a materialized view ---------------------------------------------
    let view = MatView::new(&table!("top_spenders_30d"), report.clone());
    let t = Instant::now();
    let created = view.create(&mut client).await?;
    println!(
        "materialized view {} in {:.1?}",
        if created {
            "created and filled"
        } else {
            "already there"
        },
        t.elapsed()
    );
    let refresh = view.refresh(&mut client).await?;
    println!(
        "refreshed ({}) in {:.1?}",
        if refresh.concurrently {
            "concurrently"
        } else {
            "plain"
        },
        refresh.elapsed
    );
    println!("freshness: {}", describe(&view.freshness(&client).await?));

    // ---- 5. a maintained summary table ---------------------------------------
    // Keyed by the user and the status (the report filters on it), per UTC
    // day, with the sum of the amounts; installed, then backfilled.
    let summary = Summary::new(&shop.order_created_at, Bucket::Day)
        .key(&shop.order_user_id)
        .key(&shop.status)
        .measure(Measure::sum(&shop.total_amount, "total"))
        .named("shop_orders_daily");
    let t = Instant::now();
    summary.install(&mut client).await?;
    let filled = summary.backfill(&mut client, 400, |_| {}).await?;
    client.batch_execute("ANALYZE shop_orders_daily").await?;
    println!(
        "summary table installed and backfilled in {:.1?} ({} rows, {} batches)",
        t.elapsed(),
        filled.rows,
        filled.batches
    );
    // The partial edge days are read from the orders by time: the advised
    // index above serves reports filtered on the status; this one serves
    // the others (the dashboard below).
    let t = Instant::now();
    summary
        .edge_index("shop_orders_edges")?
        .execute_outside_transaction(&client)
        .await?;
    client.batch_execute("ANALYZE shop_orders").await?;
    println!("summary's edge index built in {:.1?}", t.elapsed());
    // The same report, read from the summary.
    let for_summary: Report = report.clone().from_summary(&summary);

    // ---- 3. the in-process cache ---------------------------------------------
    let cache: ReportCache<TopRow<i64, Decimal>> = ReportCache::new(Duration::from_secs(300));

    // ---- 4. the standby, through a router, reading its own writes ------------
    let standby_client = standby.connect_for(&schema).await?;
    let router = ReplicaRouter::with_options(
        schema.connect().await?,
        [standby_client],
        RouterOptions::new()
            .max_lag(Duration::from_secs(5))
            .replay_wait(Duration::from_secs(2)),
    )?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while router.check_now().await[0].lag.is_none() {
        if Instant::now() > deadline {
            return Err("the standby did not catch up in 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let session = router.session();
    // A write the report does not see (a pending order), so every source
    // must still return the same rows; the session's next read waits until
    // the standby has replayed it.
    let write = |i: usize| {
        BuiltQuery::new(
            Query::insert()
                .into_table(shop.orders.table_name())
                .columns([
                    shop.order_id.iden(),
                    shop.order_user_id.iden(),
                    shop.status.iden(),
                    shop.total_amount.iden(),
                    shop.order_created_at.iden(),
                ])
                .values_panic([
                    (args.orders + 1 + i as i64).param(),
                    1i64.param(),
                    "pending".to_owned().param(),
                    Decimal::new(100, 2).param(),
                    chrono::Utc::now().param(),
                ]),
        )
    };

    let mut sources = vec![
        Source {
            name: "base table + advised index",
            read: Box::new(|_| Box::pin(report.fetch_all(&client))),
            times: Vec::new(),
        },
        Source {
            name: "materialized view",
            read: Box::new(|_| Box::pin(view.fetch_all(&client))),
            times: Vec::new(),
        },
        Source {
            name: "ReportCache (in process)",
            read: Box::new(|_| {
                Box::pin(async { Ok(cache.top_n(&report, &client).await?.as_ref().clone()) })
            }),
            times: Vec::new(),
        },
        Source {
            name: "standby via router",
            read: Box::new(|_| Box::pin(report.fetch_all(&router))),
            times: Vec::new(),
        },
        Source {
            name: "standby via router, after a write",
            read: Box::new(|i| {
                let (session, report, write) = (&session, &report, write(i));
                Box::pin(async move {
                    write.execute(session).await?;
                    report.fetch_all(session).await
                })
            }),
            times: Vec::new(),
        },
    ];
    sources.push(summary_table_source(&for_summary, &client));

    // One untimed round: every source returns the same rows.
    let reference = (sources[0].read)(0).await?;
    for s in &sources[1..] {
        let rows = (s.read)(0).await?;
        assert_eq!(rows, reference, "{} returns other rows", s.name);
    }
    println!(
        "\n{:>8}  {:<12} {:>7} {:>12}",
        "id", "username", "orders", "spent"
    );
    for r in &reference {
        println!(
            "{:>8}  {:<12} {:>7} {:>12}",
            r.key,
            r.get(&username).unwrap_or_default(),
            r.count,
            r.total.map(|d| d.to_string()).unwrap_or_default()
        );
    }

    // Interleaved timed rounds; the write of the standby source is not timed.
    let before = router.stats();
    let bar = ProgressBar::new(args.rounds as u64);
    for round in 1..=args.rounds {
        for s in &mut sources {
            let started = Instant::now();
            let rows = (s.read)(round).await?;
            s.times.push(started.elapsed());
            assert_eq!(rows, reference, "{} returns other rows", s.name);
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    let stats = router.stats();

    let base = median(&mut sources[0].times.clone());
    println!(
        "\n{:<36} {:>12} {:>12} {:>10}",
        "source", "median", "fastest", "vs base"
    );
    for s in &mut sources {
        let m = median(&mut s.times);
        println!(
            "{:<36} {:>12.1?} {:>12.1?} {:>9.4}×",
            s.name,
            m,
            s.times[0],
            m.as_secs_f64() / base.as_secs_f64()
        );
    }
    println!(
        "\n{} orders, median of {} interleaved rounds; the standby served {} of {} routed reads \
         (half of them right after the session's own write, waiting {:.1?} in all for replay)",
        args.orders,
        args.rounds,
        stats.replica_reads - before.replica_reads,
        2 * args.rounds,
        stats.replay_wait_time - before.replay_wait_time
    );
    println!(
        "freshness after the writes: {}",
        describe(&view.freshness(&client).await?)
    );

    // ---- a dashboard with subtotals, from the same summary --------------------
    dashboard_from_summary(&client, &shop, &summary, since, args.rounds).await?;
    Ok(())
}

/// Orders and spend per status and in total over the same 30 days, as a
/// `Rollup` on the orders table and as the same `Rollup` read from the
/// summary (whole days from it, the partial first day from the orders):
/// the same rows, timed side by side.
async fn dashboard_from_summary(
    client: &tokio_postgres::Client,
    shop: &pgpatterns::seed::shop::ShopTables,
    summary: &Summary,
    since: chrono::DateTime<chrono::Utc>,
    rounds: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    use pgpatterns::sea_query::ExprTrait;
    use pgpatterns::{Agg, Dim, Metric, Rollup, RollupRow};

    let status = Dim::new(&shop.status);
    let orders = Metric::new("orders", Agg::count_all());
    let spent = Metric::new("spent", Agg::sum(&shop.total_amount));
    let average = Metric::new("average", Agg::avg(&shop.total_amount));
    let on_base = Rollup::new(&shop.orders)
        .filter(shop.order_created_at.expr().gte(since))
        .strategy(pgpatterns::RollupStrategy::Auto);
    let on_summary = Rollup::from_summary(&summary.window().since(since));
    let [on_base, on_summary] = [on_base, on_summary].map(|r| {
        r.dimension(&status)
            .metric(&orders)
            .metric(&spent)
            .metric(&average)
            .with_total()
    });
    let base_rows = on_base.fetch_all(client).await?;
    let summary_rows = on_summary.fetch_all(client).await?;
    assert_eq!(
        base_rows, summary_rows,
        "the dashboard from the summary differs"
    );
    println!(
        "
== per status over the same 30 days, with the total (a Rollup)"
    );
    println!(
        "{:<12} {:>9} {:>16} {:>10}",
        "status", "orders", "spent", "average"
    );
    let show = |r: &RollupRow| {
        let avg = r.get(&average).map(|a| a.round_dp(2).to_string());
        println!(
            "{:<12} {:>9} {:>16} {:>10}",
            if r.is_total() {
                "(all)".to_owned()
            } else {
                r.get(&status).unwrap_or_default()
            },
            r.get(&orders).unwrap_or_default(),
            r.get(&spent).map(|d| d.to_string()).unwrap_or_default(),
            avg.unwrap_or_default()
        );
    };
    base_rows.iter().for_each(show);

    let (mut base_times, mut summary_times) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        for (report, times) in [
            (&on_base, &mut base_times),
            (&on_summary, &mut summary_times),
        ] {
            let started = Instant::now();
            let rows = report.fetch_all(client).await?;
            times.push(started.elapsed());
            assert_eq!(rows, base_rows);
        }
    }
    let (b, s) = (median(&mut base_times), median(&mut summary_times));
    println!(
        "orders table {b:.1?}, summary {s:.1?} ({:.3}×), medians of {rounds} interleaved rounds",
        s.as_secs_f64() / b.as_secs_f64()
    );
    Ok(())
}
