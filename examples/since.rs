//! The `since` family on moves and everything related to them (orders,
//! shipments, service items, payment requests, service members, addresses):
//! starts a throwaway PostgreSQL (or
//! uses `DATABASE_URL`), seeds moves and everything related to them with a
//! progress bar (with the trigger-maintained `moves.changed_at` column of
//! `SinceStrategy::Tracked`), builds the indexes the strategies need, then
//! runs every strategy — `Tracked` and `Auto` too — at three windows (1 day,
//! 30 days, 1 year) and prints the counts, a first page, what changed on it,
//! and the time each strategy took.
//!
//! ```text
//! cargo run --release --example since --features testdb,seed -- --moves 100000
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pgpatterns::seed::moves::MovesSeed;
use pgpatterns::testdb::TestDb;
use pgpatterns::{IndexOptions, PageOrder, PageRequest, SinceStrategy};

#[derive(Parser, Debug)]
#[command(
    about = "Moves changed since T in themselves or anything related: every strategy, on a throwaway PostgreSQL"
)]
struct Args {
    /// How many moves to generate (with ~2 shipments, ~5 service items and
    /// ~1 payment request each).
    #[arg(long, default_value_t = 100_000)]
    moves: i64,
    /// Moves per INSERT batch.
    #[arg(long, default_value_t = 50_000)]
    batch: i64,
    /// Rows per page.
    #[arg(long, default_value_t = 10)]
    page: i64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.moves < 1 || args.batch < 1 {
        return Err("--moves and --batch must be at least 1".into());
    }
    println!("== pgpatterns: moves changed since T, in themselves or anything related");
    let db = TestDb::start()?;
    if db.is_throwaway() {
        println!(
            "started a throwaway PostgreSQL in {:.2?} (removed on exit)",
            db.startup_time()
        );
    } else {
        println!("using DATABASE_URL (a private schema, dropped on exit)");
    }
    let schema = db.schema().await?;
    let client = schema.connect().await?;

    println!("\n== seeding {} moves", args.moves);
    let bar = ProgressBar::new(args.moves as u64).with_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} moves  {msg}  {elapsed_precise}  eta {eta}",
    )?);
    let t0 = Instant::now();
    let seed = MovesSeed::new(args.moves)
        .batch_size(args.batch)
        .tracked(true);
    let now = seed
        .run(&client, |p| match p.stage {
            "moves" => bar.set_position(p.done),
            stage => bar.set_message(stage),
        })
        .await?
        .now;
    bar.finish();
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
    for q in &ddl {
        q.execute(&client).await?;
    }
    client.batch_execute("ANALYZE").await?;
    println!(
        "seeded, {} indexes built, analyzed in {:.2?}",
        ddl.len(),
        t0.elapsed()
    );
    println!("labels: {}", graph.labels().join(", "));

    let windows = [("1 day", 1), ("30 days", 30), ("1 year", 365)];
    println!(
        "\n== counts and first pages ({} rows, by key) per strategy",
        args.page
    );
    println!(
        "{:<16} {:>8} {:>10} {:>10} {:>11}",
        "strategy", "since", "count", "count ms", "page ms"
    );
    let shown = SinceStrategy::ALL
        .into_iter()
        .chain([SinceStrategy::Tracked, SinceStrategy::Auto]);
    for strategy in shown {
        for (name, days) in windows {
            let q = graph
                .since(now - chrono::Duration::days(days))
                .strategy(strategy);
            let (n, count_took) = timed(q.count(&client)).await?;
            let (page, page_took) =
                timed(q.fetch_page::<(i64,)>(&client, &PageRequest::new(args.page))).await?;
            assert!(page.rows.len() as i64 <= args.page);
            println!(
                "{:<16} {:>8} {:>10} {:>10.1} {:>11.2}",
                format!("{strategy:?}"),
                name,
                n,
                ms(count_took),
                ms(page_took)
            );
        }
    }

    let auto = graph
        .since(now - chrono::Duration::days(30))
        .strategy(SinceStrategy::Auto)
        .explain_choice(&client, pgpatterns::Shape::Count)
        .await?;
    println!(
        "\nAuto (a count since 30 days): {:?} — {}",
        auto.strategy, auto.reason
    );
    let track = graph.track()?;
    println!(
        "tracked column {} kept by {} on {} tables; drift {}",
        track.column().name().as_str(),
        track.function_name().as_str(),
        track.tables().len(),
        track.drift_count(&client).await?
    );

    println!("\n== a page by change time (Tracked, since 30 days) and what changed on it");
    let q = graph
        .since(now - chrono::Duration::days(30))
        .strategy(SinceStrategy::Tracked);
    let req = PageRequest::new(args.page).order(PageOrder::ChangeTime);
    let (page, took) = timed(q.fetch_page::<(i64, i64, String)>(&client, &req)).await?;
    println!(
        "{} rows in {:.2?}; next cursor {:?}",
        page.rows.len(),
        took,
        page.next
    );
    let (changes, took) = timed(q.fetch_changes(&client, &page.keys)).await?;
    for (id, orders_id, locator) in &page.rows {
        let what: Vec<String> = changes
            .iter()
            .filter(|c| c.key == *id)
            .map(|c| format!("{} @ {}", c.relation, c.newest.format("%Y-%m-%d %H:%M:%S")))
            .collect();
        println!(
            "  move {id:>8} {locator:<10} orders {orders_id:>8}: {}",
            what.join(", ")
        );
    }
    println!("(what changed: one query, {:.2?})", took);
    if let Some(next) = page.next {
        let second = q
            .fetch_page::<(i64,)>(&client, &req.clone().after(next))
            .await?;
        println!(
            "second page: {:?}",
            second.rows.iter().map(|r| r.0).collect::<Vec<_>>()
        );
    }
    println!(
        "\nthe UnionIn count query:\n{}",
        graph.since(now - chrono::Duration::days(1)).count_query()?
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn timed<T, F>(fut: F) -> pgpatterns::Result<(T, Duration)>
where
    F: std::future::Future<Output = pgpatterns::Result<T>>,
{
    let t = Instant::now();
    let out = fut.await?;
    Ok((out, t.elapsed()))
}
