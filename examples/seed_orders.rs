//! Seeds a shop — `orders` and their status history — server-side,
//! with a progress bar, and prints how long each part took.
//!
//! ```text
//! cargo run --release --example seed_orders --features testdb,seed -- --orders 1000000
//! ```
//!
//! Uses a throwaway PostgreSQL, or `DATABASE_URL` (a private schema, dropped
//! on exit; with `--keep`, the tables stay in the connection's schema).

use std::time::Instant;

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pgpatterns::seed::orders::OrdersSeed;
use pgpatterns::testdb::TestDb;

#[derive(Parser, Debug)]
#[command(about = "Orders and their status history, generated server-side")]
struct Args {
    /// How many orders to generate (about 2.33 status rows each).
    #[arg(long, default_value_t = 1_000_000)]
    orders: i64,
    /// Orders per INSERT statement.
    #[arg(long, default_value_t = 100_000)]
    batch: i64,
    /// Skip the advised index on order_status.
    #[arg(long)]
    no_index: bool,
    /// Long histories: this many extra `Draft` rows per order.
    #[arg(long, default_value_t = 0)]
    drafts: i64,
    /// Logged (crash-safe) tables instead of unlogged ones.
    #[arg(long)]
    logged: bool,
    /// With DATABASE_URL: keep the tables in the connection's own schema.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let db = TestDb::start()?;
    if args.keep && db.is_throwaway() {
        return Err("--keep needs DATABASE_URL (a throwaway database is removed on exit)".into());
    }
    let schema;
    let client = if args.keep {
        db.connect().await?
    } else {
        schema = db.schema().await?;
        schema.connect().await?
    };

    let bar = ProgressBar::new(args.orders.max(0) as u64).with_style(ProgressStyle::with_template(
        "{msg:>8} {bar:40} {pos}/{len}  {elapsed_precise}  eta {eta}",
    )?);
    bar.set_message("orders");
    let t0 = Instant::now();
    let report = OrdersSeed::new(args.orders)
        .batch_size(args.batch)
        .with_index(!args.no_index)
        .drafts(args.drafts)
        .logged(args.logged)
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
        "{} orders and {} statuses in {:.2?}: rows {:.2?}, keys + foreign key{} + ANALYZE {:.2?}",
        report.orders,
        report.statuses,
        t0.elapsed(),
        report.load,
        if args.no_index { "" } else { " + index" },
        report.finish,
    );
    Ok(())
}
