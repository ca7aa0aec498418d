//! A sales dashboard: metrics per (merchant, device) plus a summary line,
//! in one `GROUPING SETS` query instead of two.
//!
//! Loads a 13-row sample `sale` table and prints its tables — the
//! dashboard (detail + summary), `ROLLUP` both ways, `CUBE`, `GROUPING SETS`
//! — each row with its level from `GROUPING()`. Then generates a large sale
//! table (`--rows`, default 2 M) and times, interleaved, the two queries the
//! dashboard ran, every [`RollupStrategy`] and `Auto` (its time includes its
//! decision; the first run decides, the later ones find it cached), with and
//! without `COUNT(DISTINCT)`, and — unless `--no-wide` — the same report by
//! (user, device), where there are about as many detail groups as rows.
//! Without `COUNT(DISTINCT)` it also times the detail `GROUP BY` alone
//! (count, sum and count per (merchant, device)): what a rollup computed in
//! Rust from the detail rows would have to fetch, a lower bound for it.
//!
//! ```text
//! cargo run --release --example dashboard --features testdb,seed -- --rows 2000000
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use pgpatterns::sea_query::Value;
use pgpatterns::seed::sales::{SalesSeed, SalesTables};
use pgpatterns::testdb::TestDb;
use pgpatterns::{
    Agg, Dim, Level, Metric, Rollup, RollupRow, RollupStrategy, Split, StrategyCache,
};

#[derive(Parser, Debug)]
#[command(
    about = "A sales dashboard with a summary line (GROUPING SETS) on a throwaway PostgreSQL"
)]
struct Args {
    /// Rows of the generated sale table (0 skips the timing).
    #[arg(long, default_value_t = 2_000_000)]
    rows: i64,
    /// Timed runs of each variant (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the (user, device) report (many detail groups; slow).
    #[arg(long)]
    no_wide: bool,
}

/// The dashboard's variants on a seeded sale table.
struct Sale(SalesTables);

impl std::ops::Deref for Sale {
    type Target = SalesTables;
    fn deref(&self) -> &SalesTables {
        &self.0
    }
}

impl Sale {
    /// The dashboard's metrics; `distinct` adds `unique_users`. With
    /// `dims == false` the report has no dimension: the summary query.
    fn dashboard(&self, dims: bool, distinct: bool) -> Rollup {
        let r = Rollup::new(&self.table);
        let r = if dims {
            r.dimension(&self.by_merchant).dimension(&self.by_device)
        } else {
            r
        };
        self.metrics(r, distinct)
    }

    /// The dashboard's metrics by (user, device): about one detail group
    /// per row.
    fn wide(&self, dims: bool) -> Rollup {
        let r = Rollup::new(&self.table);
        let r = if dims {
            r.dimension(&Dim::new(&self.user_id))
                .dimension(&self.by_device)
        } else {
            r
        };
        self.metrics(r, false)
    }

    /// The partial aggregates per (merchant, device) — what a rollup in
    /// Rust would fetch.
    fn detail_partials(&self) -> Rollup {
        Rollup::new(&self.table)
            .dimension(&self.by_merchant)
            .dimension(&self.by_device)
            .metric(&self.total)
            .metric(&Metric::new(
                "sum_charged_amount",
                Agg::sum(&self.charged_amount),
            ))
            .metric(&Metric::new(
                "n_charged_amount",
                Agg::count(&self.charged_amount),
            ))
    }

    fn metrics(&self, r: Rollup, distinct: bool) -> Rollup {
        let r = r.metric(&self.total).metric(&self.avg_charged_amount);
        if distinct {
            r.metric(&self.unique_users)
        } else {
            r
        }
    }
}

/// Adds a grouping to a `(device, merchant)` report.
type Shape = fn(Rollup, &Dim<String>, &Dim<String>) -> Rollup;

fn cell(v: &Value) -> String {
    match v {
        Value::String(Some(s)) => s.clone(),
        Value::Int(Some(i)) => i.to_string(),
        Value::BigInt(Some(i)) => i.to_string(),
        Value::Decimal(Some(d)) => d.to_string(),
        Value::Double(Some(f)) => f.to_string(),
        Value::String(None)
        | Value::Int(None)
        | Value::BigInt(None)
        | Value::Decimal(None)
        | Value::Double(None) => String::new(),
        other => format!("{other:?}"),
    }
}

fn level(l: &Level) -> String {
    match l {
        Level::Detail => "detail".into(),
        Level::Total => "total".into(),
        Level::Subtotal { grouped_by } => format!(
            "by {}",
            grouped_by
                .iter()
                .map(|i| i.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        other => format!("{other:?}"),
    }
}

/// psql-style table: names, then one line per row, then the row count.
fn print_table(title: &str, rows: &[RollupRow]) {
    println!("\n{title}");
    let Some(first) = rows.first() else {
        println!("(0 rows)");
        return;
    };
    let mut header: Vec<String> = first.names().iter().map(|n| n.to_string()).collect();
    header.push("level".into());
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            r.dimension_values()
                .iter()
                .chain(r.metric_values())
                .map(cell)
                .chain([level(r.level())])
                .collect()
        })
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            body.iter()
                .map(|r| r[i].chars().count())
                .chain([header[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!(" {c:<w$} "))
            .collect::<Vec<_>>()
            .join("|")
    };
    println!("{}", line(&header));
    println!(
        "{}",
        widths
            .iter()
            .map(|w| "-".repeat(w + 2))
            .collect::<Vec<_>>()
            .join("+")
    );
    for r in &body {
        println!("{}", line(r));
    }
    println!("({} rows)", rows.len());
}

/// Runs a variant (its queries one after the other) once: (time, rows).
async fn run(
    client: &tokio_postgres::Client,
    specs: &[Rollup],
) -> pgpatterns::Result<(Duration, usize)> {
    let t = Instant::now();
    let mut rows = 0;
    for r in specs {
        rows += r.fetch_all(client).await?.len();
    }
    Ok((t.elapsed(), rows))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let db = TestDb::start()?;
    let schema = db.schema().await?;
    let client = schema.connect().await?;

    println!("== a 13-row sample sale table");
    let sample = SalesSeed::sample();
    sample.run(&client, |_| {}).await?;
    let s = Sale(sample.tables());

    let dash = s.dashboard(true, true).with_total();
    println!("\n{}", dash.build()?);
    let rows = dash.fetch_all(&client).await?;
    print_table(
        "-- the dashboard: GROUPING SETS ((merchant, device), ())",
        &rows,
    );
    let split = Split::new(rows);
    println!(
        "split: {} detail rows, summary line total = {:?}",
        split.detail.len(),
        split.total.as_ref().map(|t| cell(&t.metric_values()[0]))
    );

    // SELECT device, merchant, count(*) …: the dashboard's detail query.
    let shapes: [(&str, Shape); 4] = [
        ("GROUP BY ROLLUP(device, merchant)", |r, d, m| {
            r.rollup((d, m))
        }),
        ("GROUP BY ROLLUP(merchant, device)", |r, d, m| {
            r.rollup((m, d))
        }),
        ("GROUP BY CUBE(merchant, device)", |r, d, m| r.cube((m, d))),
        (
            "GROUP BY GROUPING SETS ((merchant), (merchant, device), ())",
            |r, d, m| r.grouping_sets(((m,), (m, d), ())),
        ),
    ];
    let count = Metric::new("count", Agg::count_all());
    for (title, apply) in shapes {
        // Device first, so the columns read (device, merchant) in every shape.
        let r = Rollup::new(&s.table)
            .dimension(&s.by_device)
            .dimension(&s.by_merchant)
            .metric(&count);
        let r = apply(r, &s.by_device, &s.by_merchant).total_first();
        print_table(
            &format!("-- {title}, total first"),
            &r.fetch_all(&client).await?,
        );
    }

    if args.rows < 1 {
        return Ok(());
    }
    println!(
        "\n== {} generated sales (50 merchants × 20 devices, 100 000 users)",
        args.rows
    );
    let bar = ProgressBar::new(args.rows as u64).with_style(ProgressStyle::with_template(
        "{bar:40} {pos}/{len} rows  {elapsed_precise}  eta {eta}",
    )?);
    let t0 = Instant::now();
    let large = SalesSeed::new(args.rows);
    large
        .run(&client, |p| {
            if p.stage == "sales" {
                bar.set_position(p.done)
            }
        })
        .await?;
    bar.finish();
    println!("generated and analyzed in {:.2?}", t0.elapsed());

    let big = Sale(large.tables());
    let mut reports: Vec<(&str, Rollup, Rollup)> = vec![
        (
            "count, avg, count(distinct user)",
            big.dashboard(true, true),
            big.dashboard(false, true),
        ),
        (
            "count, avg",
            big.dashboard(true, false),
            big.dashboard(false, false),
        ),
    ];
    if !args.no_wide {
        reports.push((
            "count, avg by (user, device)",
            big.wide(true),
            big.wide(false),
        ));
    }
    let mut summary = Vec::new();
    for (title, detail, total) in reports {
        let one = detail.clone().with_total();
        // Each variant: its label and the queries it runs.
        let mut variants: Vec<(String, Vec<Rollup>)> =
            vec![("two queries".into(), vec![detail, total])];
        for s in RollupStrategy::ALL {
            let r = one.clone().strategy(s);
            if r.check().is_ok() {
                variants.push((format!("{s:?}"), vec![r]));
            }
        }
        let auto = one.clone().strategy(RollupStrategy::Auto);
        // Auto decides on its first run (cache miss), then finds it cached.
        StrategyCache::global().clear();
        variants.push(("Auto".into(), vec![auto.clone()]));
        if title == "count, avg" {
            variants.push(("detail partials only".into(), vec![big.detail_partials()]));
        }
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); variants.len()];
        let mut rows = vec![0; variants.len()];
        for round in 0..args.runs {
            // Interleaved, each round in its own shuffled order, so all see
            // the same cache states and none always follows the same one.
            for i in pgpatterns::compare::round_order(round, variants.len()) {
                let (t, n) = run(&client, &variants[i].1).await?;
                times[i].push(t);
                rows[i] = n;
            }
        }
        for ((label, _), n) in variants.iter().zip(&rows) {
            if label != "detail partials only" {
                assert_eq!(
                    *n, rows[0],
                    "{label} returns as many rows as the two queries"
                );
            }
        }
        let choice = auto.explain_choice(&client).await?;
        let mut cached = Vec::new();
        for _ in 0..20 {
            let t = Instant::now();
            auto.explain_choice(&client).await?;
            cached.push(t.elapsed());
        }
        let medians: Vec<Duration> = times.into_iter().map(median).collect();
        let best = variants
            .iter()
            .zip(&medians)
            .filter(|((label, _), _)| label != "detail partials only")
            .map(|(_, m)| *m)
            .min()
            .unwrap_or_default();
        println!("\n-- {title}, {} sales", args.rows);
        println!(
            "{:<24} {:>10} {:>8} {:>8}",
            "variant", "median", "× best", "rows"
        );
        for (((label, _), m), n) in variants.iter().zip(&medians).zip(&rows) {
            println!(
                "{:<24} {:>7} ms {:>7.2}× {:>8}",
                label,
                m.as_millis(),
                m.as_secs_f64() / best.as_secs_f64(),
                n
            );
            summary.push((title, label.clone(), *m, best));
        }
        println!("{choice}");
        println!(
            "Auto's decision once cached: {:.3} ms (median of 20)",
            median(cached).as_secs_f64() * 1e3
        );
    }
    println!(
        "\n(median of {} interleaved runs; × best is against the fastest of two queries \
         and the strategies)",
        args.runs
    );
    println!("\n| report | variant | median ms | × best |\n|---|---|---|---|");
    for (title, label, m, best) in summary {
        println!(
            "| {title} | {label} | {} | {:.2}× |",
            m.as_millis(),
            m.as_secs_f64() / best.as_secs_f64()
        );
    }
    Ok(())
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}
