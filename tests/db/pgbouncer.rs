//! Everything through PgBouncer in transaction pooling mode: the executor
//! suite, every family's run verbs (answers equal to a direct connection's),
//! Auto's catalog reads, explain, DDL and the maintenance operations.
//!
//! In transaction mode a client's statements run on whichever server
//! connection is free, so nothing may rely on session state: no session
//! `SET`, no session advisory lock, no named prepared statement. pgpatterns
//! sends every statement unnamed with its parameter types, locks with
//! `pg_advisory_xact_lock`, sets isolation with `SET TRANSACTION`, and runs
//! `CREATE INDEX CONCURRENTLY` as a statement of its own (a pooler runs it
//! outside any transaction block, as it must). The opt-in `Prepared`
//! executor does keep named statements: the test shows how that fails.

use chrono::{DateTime, Duration, TimeZone, Utc};
use pgpatterns::explain::{explain, explain_analyze};
use pgpatterns::ops::archive::Archiver;
use pgpatterns::ops::index::{ConcurrentIndex, IndexState};
use pgpatterns::ops::recent::RecentHistory;
use pgpatterns::ops::{TopN, TopRow};
use pgpatterns::seed::moves::MovesSeed;
use pgpatterns::seed::orders::{OrdersSeed, OrdersTables};
use pgpatterns::seed::sales::SalesSeed;
use pgpatterns::seed::shop::{ShopSeed, ShopTables};
use pgpatterns::testdb::{TestDb, TestSchema};
use pgpatterns::{BuiltQuery, Executor, LatestStrategy, Prepared, Shape, SqlType, Table};
use rust_decimal::Decimal;

use crate::executors;
use crate::support::{client, fetch, latest_and_rollup, pool, since_answers, with_sync_client};

/// A fresh schema reached through the pooler.
///
/// Panics, failing the test, when no server or no PgBouncer can be had.
async fn pooled() -> TestSchema {
    TestDb::shared()
        .expect(
            "the database tests need PostgreSQL: install its server binaries \
             (initdb, postgres) or set DATABASE_URL",
        )
        .pooled_schema()
        .await
        .expect("a schema through PgBouncer (install it: apt-get install -y pgbouncer)")
}

/// A tokio-postgres client to the same schema, not through the pooler.
async fn direct(schema: &TestSchema) -> tokio_postgres::Client {
    let (client, connection) = schema
        .direct_config()
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect directly");
    tokio::spawn(connection);
    client
}

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap()
}

/// `SELECT pg_backend_pid()`: which server connection ran the statement.
async fn backend<E: Executor>(e: &E) -> i32 {
    fetch::<(i32,), _>(e, &BuiltQuery::fixed("SELECT pg_backend_pid()")).await[0].0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_suite_passes_through_the_pooler() {
    executors::every_check(pooled).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_of_one_client_move_between_server_connections() {
    let schema = pooled().await;
    let (a, mut b) = (client(&schema).await, client(&schema).await);
    backend(&a).await;
    // `b` holds a server connection for its whole transaction (other tests
    // share the pooler, so which one is not known): `a`'s next statement
    // runs on another one, and still in the schema.
    let tx = b.transaction().await.expect("begin");
    let held = backend(&tx).await;
    assert_ne!(backend(&a).await, held);
    assert_eq!(
        backend(&tx).await,
        held,
        "a transaction keeps its server connection"
    );
    let path = BuiltQuery::fixed("SELECT current_setting('search_path')");
    assert_eq!(
        fetch::<(String,), _>(&a, &path).await,
        [(schema.name().to_owned(),)]
    );
    tx.commit().await.expect("commit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statements_break_behind_the_pooler_and_say_so() {
    let schema = pooled().await;
    let db = Prepared::new(client(&schema).await);
    let mut other = client(&schema).await;
    let q = BuiltQuery::fixed_with("SELECT $1::int8 * 2", [21i64.into_value()]);

    // `other` holds one server connection, so `db` prepares on another;
    // released last, the held one is the pooler's next choice, where the
    // prepared statement is not. Other tests share the pooler and may take
    // that connection first: try again until a run lands elsewhere.
    let mut failed = None;
    for _ in 0..20 {
        let tx = other.transaction().await.expect("begin");
        let held = q.fetch_one::<(i64,)>(&db).await;
        tx.commit().await.expect("commit");
        match held.and(q.fetch_one::<(i64,)>(&db).await) {
            Ok(row) => assert_eq!(row, (42,)),
            Err(e) => {
                failed = Some(e);
                break;
            }
        }
    }
    let err = failed.expect("a run on a server connection without the statement");
    assert_eq!(err.code(), Some("26000"), "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");
    // The statement is forgotten, so the next run prepares again.
    assert_eq!(db.cached_statements(), 0);
    assert_eq!(q.fetch_one::<(i64,)>(&db).await.expect("again"), (42,));
    // The default executors never depend on a prepared statement.
    assert_eq!(
        q.fetch_one::<(i64,)>(db.get_ref()).await.expect("typed"),
        (42,)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_answers_as_without_the_pooler() {
    let (a, b) = (pooled().await, pooled().await);
    // Seeded through the pooler.
    let c = client(&a).await;
    OrdersSeed::new(400).run(&c, |_| {}).await.unwrap();
    SalesSeed::sample().run(&c, |_| {}).await.unwrap();
    let cb = client(&b).await;
    MovesSeed::new(300)
        .now(now())
        .run(&cb, |_| {})
        .await
        .unwrap();
    for e in [&c, &cb] {
        e.run_script("ANALYZE").await.unwrap();
    }

    let through = latest_and_rollup(&c).await;
    assert!(through.0 > 0 && through.1.len() == 10 && !through.3.is_empty());
    assert_eq!(through.0, through.2, "Auto counts what DistinctOn counts");
    assert_eq!(latest_and_rollup(&pool(&a)).await, through);
    assert_eq!(latest_and_rollup(&direct(&a).await).await, through);

    let through = since_answers(&cb, now()).await;
    assert!(through.0 > 0 && !through.1.is_empty() && through.2 > 0);
    assert_eq!(since_answers(&pool(&b), now()).await, through);
    assert_eq!(since_answers(&direct(&b).await, now()).await, through);

    // Auto's decisions read the catalog through the pooler.
    let latest = OrdersTables::default().latest().status_eq("Complete");
    let choice = latest
        .strategy(LatestStrategy::Auto)
        .explain_choice(&c, Shape::Page { limit: 10 })
        .await
        .unwrap();
    assert!(!choice.reason.is_empty() && !choice.candidates.is_empty());

    // The blocking client through the pooler.
    let count = with_sync_client(&a, |sc| {
        let latest = OrdersTables::default().latest().status_eq("Complete");
        latest.count_blocking(sc).unwrap()
    })
    .await;
    assert_eq!(count, latest_and_rollup(&c).await.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_ddl_and_backfill_run_through_the_pooler() {
    let schema = pooled().await;
    let mut c = client(&schema).await;
    OrdersSeed::new(200).run(&c, |_| {}).await.unwrap();
    c.run_script("ALTER TABLE orders ADD COLUMN status text; ANALYZE")
        .await
        .unwrap();

    let shop = OrdersTables::default();
    let spec = shop.latest().status_eq("Complete");
    let plan = explain(&c, &spec.count_query().unwrap()).await.unwrap();
    assert!(!plan.nodes().is_empty());
    // EXPLAIN ANALYZE of a write, rolled back: the rows stay.
    let delete = BuiltQuery::fixed("DELETE FROM order_status");
    let plan = explain_analyze(&mut c, &delete, false).await.unwrap();
    assert!(!plan.nodes().is_empty());
    let left = BuiltQuery::fixed("SELECT count(*) FROM order_status");
    assert!(fetch::<(i64,), _>(&c, &left).await[0].0 > 0);

    // The denormalized column: trigger installed, backfilled, no drift, the
    // same count as from history; then removed.
    let denormalized = spec
        .clone()
        .denormalized(&shop.orders.column::<String>("status").unwrap());
    let d = denormalized.denormalize().unwrap();
    d.install(&mut c).await.unwrap();
    assert!(
        d.drift_count(&c).await.unwrap() > 0,
        "the column starts empty"
    );
    let report = d.backfill::<i64, _>(&mut c, 50, |_| {}).await.unwrap();
    assert_eq!(report.entities, 200);
    assert_eq!(d.drift_count(&c).await.unwrap(), 0);
    let by_column = denormalized
        .strategy(LatestStrategy::Denormalized)
        .count(&c)
        .await
        .unwrap();
    assert_eq!(by_column, spec.count(&direct(&schema).await).await.unwrap());
    d.uninstall(&mut c).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_operations_run_through_the_pooler() {
    let schema = pooled().await;
    let mut c = client(&schema).await;
    ShopSeed::new(2_000)
        .users(50)
        .days(60)
        .now(now())
        .run(&c, |_| {})
        .await
        .unwrap();
    let shop = ShopTables::default();

    // Top-N: the same rows through the pooler as directly.
    let top = TopN::<i64, Decimal>::new(&shop.user_id, &shop.order_user_id, &shop.total_amount, 5)
        .window_since(&shop.order_created_at, now() - Duration::days(30))
        .where_eq(&shop.status, "completed");
    let rows =
        |r: Vec<TopRow<i64, Decimal>>| r.iter().map(|r| format!("{r:?}")).collect::<Vec<_>>();
    let through = rows(top.fetch_all(&c).await.unwrap());
    assert_eq!(through.len(), 5);
    assert_eq!(
        rows(top.fetch_all(&direct(&schema).await).await.unwrap()),
        through
    );

    // CREATE INDEX CONCURRENTLY: a statement of its own, which the pooler
    // runs outside any transaction block.
    let index = ConcurrentIndex::new(
        "shop_orders_by_user",
        &[shop.order_user_id.erase(), shop.order_created_at.erase()],
    );
    let ensured = index.ensure(&c).await.unwrap();
    assert_eq!(
        (ensured.before, ensured.after),
        (IndexState::Missing, IndexState::Valid)
    );
    assert_eq!(
        index.ensure(&pool(&schema)).await.unwrap().before,
        IndexState::Valid
    );
    index.drop(&c).await.unwrap();

    // Archive: old orders moved in batches, none lost.
    let orders = BuiltQuery::fixed("SELECT count(*) FROM shop_orders");
    let total = fetch::<(i64,), _>(&c, &orders).await[0].0;
    let archiver = Archiver::new(
        &shop.order_id,
        &shop.order_created_at,
        &Table::new("shop_orders_archive").unwrap(),
    )
    .batch_size(300);
    let report = archiver
        .run(&c, now() - Duration::days(30), |_| {})
        .await
        .unwrap();
    assert!(report.rows > 0 && report.batches > 1, "{report:?}");
    let both = BuiltQuery::fixed(
        "SELECT (SELECT count(*) FROM shop_orders) + (SELECT count(*) FROM shop_orders_archive)",
    );
    assert_eq!(fetch::<(i64,), _>(&c, &both).await[0].0, total);

    // Recent history: the upsert and trim in one transaction, with a
    // transaction-scoped advisory lock.
    c.run_script(
        "CREATE TABLE views (owner int8, item int8, at timestamptz, PRIMARY KEY (owner, item))",
    )
    .await
    .unwrap();
    let views = Table::new("views").unwrap();
    let recent = RecentHistory::new(
        &views.column::<i64>("owner").unwrap(),
        &views.column::<i64>("item").unwrap(),
        &views.column::<DateTime<Utc>>("at").unwrap(),
        3,
    );
    for item in 0..6 {
        recent
            .record(&mut c, 1, item, now() + Duration::minutes(item))
            .await
            .unwrap();
    }
    let mut p = pool(&schema);
    recent
        .record(&mut p, 1, 9, now() + Duration::hours(1))
        .await
        .unwrap();
    let kept: Vec<i64> = recent
        .recent(&c, 1, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|(item, _)| item)
        .collect();
    assert_eq!(kept, [9, 5, 4]);
    assert!(!c.is_transaction());
}
