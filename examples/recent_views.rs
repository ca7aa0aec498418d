//! Recent history: "the last 50 products each user viewed", kept in SQL.
//!
//! Loads products and an *unbounded* view history (as an application that
//! never trimmed would have left it, progress bar), runs the batched trim
//! job, then measures `record` (upsert + trim under the per-owner lock)
//! from several connections at once, checks that no user holds more than
//! the bound, and reads one user's recent products joined to the product
//! table.
//!
//! ```text
//! cargo run --release --example recent_views --features testdb -- --connections 8 --seconds 10
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pgpatterns::ops::recent::RecentHistory;
use pgpatterns::testdb::TestDb;
use pgpatterns::{BuiltQuery, SqlType, Table};

#[derive(Parser, Debug)]
#[command(about = "Bounded recent history: record throughput and the trim job")]
struct Args {
    /// Users with a view history.
    #[arg(long, default_value_t = 20_000)]
    users: i64,
    /// Products.
    #[arg(long, default_value_t = 5_000)]
    products: i64,
    /// Views per user in the untrimmed history.
    #[arg(long, default_value_t = 80)]
    views: i64,
    /// Rows kept per user.
    #[arg(long, default_value_t = 50)]
    keep: i64,
    /// Concurrent connections recording views.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// How long to record, in seconds.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Users the recorders pick from (few users = heavy contention per user).
    #[arg(long, default_value_t = 1_000)]
    hot_users: i64,
}

const SETUP: &str = "
CREATE TABLE products (id bigint PRIMARY KEY, name text NOT NULL, price numeric(10, 2) NOT NULL);
CREATE TABLE user_product_views (
    user_id bigint NOT NULL,
    product_id bigint NOT NULL REFERENCES products (id) ON DELETE CASCADE,
    viewed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, product_id));";

const PRODUCTS: &str = "INSERT INTO products
    SELECT g, 'product ' || g, (g % 9000) / 100.0 + 1 FROM generate_series(1, $1::int8) g";

/// `views` distinct products per user for users `[$1, $2]`, spread over 90 days.
const VIEWS: &str = "INSERT INTO user_product_views
    SELECT u, 1 + (u * 7919 + v * 104729) % $4::int8,
           now() - (v * 97 % 1440) * interval '90 minutes'
    FROM generate_series($1::int8, $2::int8) u, generate_series(1, $3::int8) v
    ON CONFLICT DO NOTHING";

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.users < 1
        || args.products < args.views
        || args.keep < 1
        || args.connections < 1
        || args.hot_users < 1
    {
        return Err("need users, keep, connections, hot-users >= 1 and products >= views".into());
    }
    let db = TestDb::start()?;
    let schema = db.schema().await?;
    let mut client = schema.connect().await?;
    client.batch_execute(SETUP).await?;

    let views = Table::new("user_product_views")?;
    let spec = RecentHistory::new(
        &views.column::<i64>("user_id")?,
        &views.column::<i64>("product_id")?,
        &views.column::<DateTime<Utc>>("viewed_at")?,
        args.keep,
    );
    spec.index_advice(false)?.execute(&client).await?;

    // ---- load an untrimmed history ------------------------------------------
    BuiltQuery::fixed_with(PRODUCTS, [args.products.into_value()])
        .execute(&client)
        .await?;
    let bar = ProgressBar::new(args.users as u64).with_style(ProgressStyle::with_template(
        "   views {bar:40} {pos}/{len} users  {elapsed_precise}",
    )?);
    let started = Instant::now();
    let chunk = 2_000;
    let mut from = 1;
    while from <= args.users {
        let to = (from + chunk - 1).min(args.users);
        let q = BuiltQuery::fixed_with(
            VIEWS,
            [
                from.into_value(),
                to.into_value(),
                args.views.into_value(),
                args.products.into_value(),
            ],
        );
        q.execute(&client).await?;
        bar.set_position(to as u64);
        from = to + 1;
    }
    bar.finish();
    client.batch_execute("ANALYZE").await?;
    let rows: i64 = client
        .query_one("SELECT count(*) FROM user_product_views", &[])
        .await?
        .get(0);
    println!(
        "loaded {} products and {rows} views of {} users in {:.2?}",
        args.products,
        args.users,
        started.elapsed()
    );

    // ---- the scheduled trim job -----------------------------------------------
    let bar = ProgressBar::new(args.users as u64).with_style(ProgressStyle::with_template(
        "    trim {bar:40} {pos}/{len} users  {elapsed_precise}",
    )?);
    let trimmed = spec
        .trim_all(&mut client, 1_000, |p| bar.set_position(p.done))
        .await?;
    bar.finish();
    println!(
        "trim_all: {} rows deleted in {} batches, {:.2?} ({:.0} users/s)",
        trimmed.rows,
        trimmed.batches,
        trimmed.elapsed,
        args.users as f64 / trimmed.elapsed.as_secs_f64()
    );

    // ---- record() from several connections -----------------------------------
    let spec = Arc::new(spec);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    for w in 0..args.connections {
        let mut c = schema.connect().await?;
        let spec = spec.clone();
        let (hot, products) = (args.hot_users, args.products);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut x = 0x9E37_79B9_7F4A_7C15u64 ^ (w as u64 + 1);
            while Instant::now() < deadline {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let user = 1 + (x % hot as u64) as i64;
                let product = 1 + ((x >> 20) % products as u64) as i64;
                let t = Instant::now();
                spec.record(&mut c, user, product, Utc::now()).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, pgpatterns::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    lat.sort();
    println!(
        "record: {} calls on {} connections in {}s: {:.0} ops/s, p50 {:.2?}, p99 {:.2?} ({} hot users)",
        lat.len(),
        args.connections,
        args.seconds,
        lat.len() as f64 / args.seconds as f64,
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        args.hot_users
    );
    let worst: Option<i64> = client
        .query_one(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM user_product_views GROUP BY user_id) s",
            &[],
        )
        .await?
        .get(0);
    println!(
        "largest history: {} rows (bound {})",
        worst.unwrap_or(0),
        args.keep
    );
    if worst.unwrap_or(0) > args.keep {
        return Err("a user holds more rows than the bound".into());
    }

    // ---- the homepage query ---------------------------------------------------
    let products = Table::new("products")?;
    let joined = (*spec).clone().with_items(&products.column::<i64>("id")?);
    let q = BuiltQuery::from(&joined.recent_query(1, 5)?);
    let t = Instant::now();
    let rows = q.fetch_rows(&client).await?;
    let took = t.elapsed();
    println!("user 1's 5 most recent products ({took:.2?}):");
    for r in rows {
        let at: DateTime<Utc> = r.get(1);
        let name: String = r.get("name");
        println!("  {at}  {name}");
    }
    Ok(())
}
