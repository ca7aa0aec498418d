//! What a statement costs on the client path: sent with its parameter types
//! in one round trip (what every executor does), prepared and then run (two
//! round trips: what `Client::query` with SQL text does), or prepared once
//! and reused (`Prepared`, one round trip after the first); each directly,
//! and the point lookup also through PgBouncer in transaction pooling mode.
//! Three queries: a primary-key lookup (the client path is most of its
//! cost), the first page of orders whose latest status is "Complete"
//! (`Lateral`, `PGP_BENCH_ORDERS` orders, default 1 M, with the advised
//! index) and the first page of moves changed in the last year
//! (`Exists`, `PGP_BENCH_MOVES` moves, default 100 k, advised indexes).
//! Before timing, each query's server time — planning plus execution, the
//! median of 21 `EXPLAIN (ANALYZE)` runs — is printed, so the wall times
//! criterion reports can be read against it: wall minus server time is the
//! client path.
//!
//! The server is a throwaway cluster on a unix socket (or `DATABASE_URL`).
//!
//! `cargo bench --bench client_path --all-features`

use chrono::Duration;
use criterion::{criterion_group, criterion_main, Criterion};
use pgpatterns::explain::explain_analyze;
use pgpatterns::seed::moves::MovesSeed;
use pgpatterns::seed::orders::{OrdersSeed, OrdersTables};
use pgpatterns::testdb::{TestDb, TestSchema};
use pgpatterns::{
    BuiltQuery, Executor, IndexOptions, LatestStrategy, PageRequest, Prepared, SinceStrategy,
    SqlType,
};
use tokio::runtime::Runtime;

/// A primary-key lookup in a 1000-row table: small, so the client path is
/// most of the cost.
fn lookup(id: i64) -> BuiltQuery {
    BuiltQuery::fixed_with(
        "SELECT id, name, amount FROM bench_items WHERE id = $1::int8",
        [id.into_value()],
    )
}

fn env_size(name: &str, default: i64) -> i64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The median of 21 `EXPLAIN (ANALYZE)` runs of `q`: planning + execution
/// ms, planning ms.
fn server_ms(rt: &Runtime, client: &mut tokio_postgres::Client, q: &BuiltQuery) -> (f64, f64) {
    let mut runs: Vec<(f64, f64)> = (0..21)
        .map(|_| {
            let plan = rt
                .block_on(explain_analyze(client, q, false))
                .expect("explain");
            let planning = plan.planning_ms.unwrap_or(0.0);
            (planning + plan.execution_ms.unwrap_or(0.0), planning)
        })
        .collect();
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    runs[runs.len() / 2]
}

/// The three client modes for `q` (the first two only through a pooler).
fn bench_query(
    c: &mut Criterion,
    rt: &Runtime,
    label: &str,
    schema: &TestSchema,
    q: &BuiltQuery,
    pooled: bool,
) {
    let client = rt.block_on(schema.connect()).expect("connect");
    let prepared = Prepared::new(rt.block_on(schema.connect()).expect("connect"));
    let mut group = c.benchmark_group(label);
    group.bench_function("typed, one round trip", |b| {
        b.iter(|| rt.block_on(client.rows(q)).expect("typed"));
    });
    group.bench_function("prepare, then run", |b| {
        let params = q.params();
        b.iter(|| {
            rt.block_on(client.query(q.sql(), &params.as_params()))
                .expect("query")
        });
    });
    // A transaction-mode pooler loses prepared statements between
    // transactions: measured directly only.
    if !pooled {
        group.bench_function("prepared once, reused", |b| {
            b.iter(|| rt.block_on(prepared.rows(q)).expect("prepared"));
        });
    }
    group.finish();
}

fn client_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let db = TestDb::start().expect("a database (PostgreSQL binaries or DATABASE_URL)");
    let direct = rt.block_on(db.schema()).expect("schema");
    let mut setup = rt.block_on(direct.connect()).expect("connect");
    rt.block_on(setup.batch_execute(
        "CREATE TABLE bench_items (id int8 PRIMARY KEY, name text, amount int8);
         INSERT INTO bench_items SELECT g, 'item ' || g, g * 7 FROM generate_series(1, 1000) g;
         ANALYZE bench_items",
    ))
    .expect("setup");

    let orders = env_size("PGP_BENCH_ORDERS", 1_000_000);
    rt.block_on(OrdersSeed::new(orders).run(&setup, |_| {}))
        .expect("seed orders");
    let latest = OrdersTables::default()
        .latest()
        .status_eq("Complete")
        .strategy(LatestStrategy::Lateral)
        .page_query::<i64>(&PageRequest::new(50))
        .expect("latest page");

    let moves = env_size("PGP_BENCH_MOVES", 100_000);
    let seed = MovesSeed::new(moves);
    let now = rt
        .block_on(seed.run(&setup, |_| {}))
        .expect("seed moves")
        .now;
    let graph = seed.tables().seed_graph();
    for q in graph.index_advice(IndexOptions::new(SinceStrategy::Exists)) {
        rt.block_on(q.execute(&setup)).expect("advised index");
    }
    rt.block_on(setup.batch_execute("VACUUM ANALYZE"))
        .expect("analyze");
    let since = graph
        .since(now - Duration::days(365))
        .strategy(SinceStrategy::Exists)
        .page_query(&PageRequest::new(50))
        .expect("since page");

    let queries = [
        ("point lookup".to_owned(), lookup(500)),
        (
            format!("latest first page (Lateral, {orders} orders)"),
            latest,
        ),
        (
            format!("since first page (Exists, 365 d, {moves} moves)"),
            since,
        ),
    ];
    eprintln!("server time, median of 21 EXPLAIN (ANALYZE): planning + execution (planning)");
    for (label, q) in &queries {
        let (total, planning) = server_ms(&rt, &mut setup, q);
        eprintln!("  {label}: {total:.3} ms ({planning:.3} ms)");
    }
    for (label, q) in &queries {
        bench_query(c, &rt, &format!("direct: {label}"), &direct, q, false);
    }

    let pooled = rt
        .block_on(db.pooled_schema())
        .expect("schema through PgBouncer");
    let copy = format!(
        "CREATE TABLE {0}.bench_items AS SELECT * FROM bench_items; ALTER TABLE {0}.bench_items ADD PRIMARY KEY (id); ANALYZE {0}.bench_items",
        pooled.name()
    );
    rt.block_on(setup.batch_execute(&copy)).expect("setup");
    bench_query(
        c,
        &rt,
        "pgbouncer: point lookup",
        &pooled,
        &queries[0].1,
        true,
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).warm_up_time(std::time::Duration::from_secs(1)).measurement_time(std::time::Duration::from_secs(3));
    targets = client_path
}
criterion_main!(benches);
