//! What a statement costs on the client path: sent with its parameter types
//! in one round trip (what every executor does), prepared and then run (two
//! round trips: what `Client::query` with SQL text does), or prepared once
//! and reused (`Prepared`); each directly and through PgBouncer in
//! transaction pooling mode. The server is a throwaway cluster on a unix
//! socket (or `DATABASE_URL`), so the numbers are mostly client, protocol and
//! server overhead: the difference a network's latency would multiply.
//!
//! `cargo bench --bench client_path --all-features`

use criterion::{criterion_group, criterion_main, Criterion};
use pgpatterns::testdb::{TestDb, TestSchema};
use pgpatterns::{BuiltQuery, Prepared, SqlType};
use tokio::runtime::Runtime;

/// A primary-key lookup in a 1000-row table: small, so the client path is
/// most of the cost.
fn lookup(id: i64) -> BuiltQuery {
    BuiltQuery::fixed_with(
        "SELECT id, name, amount FROM bench_items WHERE id = $1::int8",
        [id.into_value()],
    )
}

type Item = (i64, String, i64);

fn bench_through(c: &mut Criterion, rt: &Runtime, label: &str, schema: &TestSchema) {
    let client = rt.block_on(schema.connect()).expect("connect");
    let prepared = Prepared::new(rt.block_on(schema.connect()).expect("connect"));
    let q = lookup(500);
    let mut group = c.benchmark_group(label);
    group.bench_function("typed, one round trip", |b| {
        b.iter(|| rt.block_on(q.fetch_all::<Item>(&client)).expect("typed"));
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
    if label == "direct" {
        group.bench_function("prepared once, reused", |b| {
            b.iter(|| {
                rt.block_on(q.fetch_all::<Item>(&prepared))
                    .expect("prepared")
            });
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
    let setup = rt.block_on(direct.connect()).expect("connect");
    rt.block_on(setup.batch_execute(
        "CREATE TABLE bench_items (id int8 PRIMARY KEY, name text, amount int8);
         INSERT INTO bench_items SELECT g, 'item ' || g, g * 7 FROM generate_series(1, 1000) g;
         ANALYZE bench_items",
    ))
    .expect("setup");
    bench_through(c, &rt, "direct", &direct);
    let pooled = rt
        .block_on(db.pooled_schema())
        .expect("schema through PgBouncer");
    let setup = rt.block_on(direct.connect()).expect("connect");
    let copy = format!(
        "CREATE TABLE {0}.bench_items AS SELECT * FROM bench_items; ALTER TABLE {0}.bench_items ADD PRIMARY KEY (id); ANALYZE {0}.bench_items",
        pooled.name()
    );
    rt.block_on(setup.batch_execute(&copy)).expect("setup");
    bench_through(c, &rt, "pgbouncer", &pooled);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(50).warm_up_time(std::time::Duration::from_secs(1)).measurement_time(std::time::Duration::from_secs(3));
    targets = client_path
}
criterion_main!(benches);
