//! How many round trips a statement costs, counted on the wire: every
//! executor sends a statement with its parameter types in one round trip
//! (Parse, Bind, Describe, Execute, Sync together) and leaves no prepared
//! statement on the server; `Prepared` prepares once per connection, then
//! runs in one round trip without parsing again.

use pgpatterns::{BlockingExecutor, BuiltQuery, Prepared, SqlType};

use crate::support::{exec, fetch, schema, Ledger};
use crate::wire::{Proxy, Traffic};

/// One round trip through the unnamed statement: what every executor sends.
fn one_unnamed_round_trip() -> Traffic {
    Traffic {
        sent: "PBDES".into(),
        parsed: vec![String::new()],
        round_trips: 1,
    }
}

/// `SELECT count(*) FROM pg_prepared_statements`: named statements of this
/// session.
fn prepared_statements() -> BuiltQuery {
    BuiltQuery::fixed("SELECT count(*) FROM pg_prepared_statements")
}

/// A statement with one value of every kind pgpatterns binds.
fn every_kind() -> BuiltQuery {
    BuiltQuery::fixed_with(
        "SELECT $1::int8 + $2::int4 + $3::int2, $4::text || $5::text, $6::int8[], $7::timestamptz IS NULL",
        [
            40i64.into_value(),
            1i32.into_value(),
            1i16.into_value(),
            "a".to_owned().into_value(),
            "b".to_owned().into_value(),
            i64::array_value([1, 2]),
            <chrono::DateTime<chrono::Utc> as SqlType>::null_value(),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_executor_sends_a_statement_in_one_round_trip() {
    let schema = schema().await;
    let proxy = Proxy::start(&schema.config()).await;
    let client = proxy.connect().await;
    let ledger = Ledger::new("ledger");
    proxy.take();

    // DDL, writes (with their affected-row counts) and reads alike.
    exec(&client, &ledger.create()).await;
    assert_eq!(proxy.take(), one_unnamed_round_trip());
    assert_eq!(exec(&client, &ledger.insert(&[(1, 10), (2, 20)])).await, 2);
    assert_eq!(proxy.take(), one_unnamed_round_trip());
    assert_eq!(exec(&client, &ledger.add(1)).await, 2);
    assert_eq!(proxy.take(), one_unnamed_round_trip());
    assert_eq!(ledger.rows(&client).await, [(1, 11), (2, 21)]);
    assert_eq!(proxy.take(), one_unnamed_round_trip());
    let row: Vec<(i64, String, Vec<i64>, bool)> = fetch(&client, &every_kind()).await;
    assert_eq!(row, [(42, "ab".to_owned(), vec![1, 2], true)]);
    assert_eq!(proxy.take(), one_unnamed_round_trip());
    // Nothing was left prepared in the session.
    assert_eq!(
        fetch::<(i64,), _>(&client, &prepared_statements()).await,
        [(0,)]
    );
    proxy.take();

    // What the executors used to do, for contrast: `query` with SQL text
    // prepares a named statement first, then runs it: two round trips.
    let q = ledger.select();
    let params = q.params();
    let rows = client
        .query(q.sql(), &params.as_params())
        .await
        .expect("query");
    assert_eq!(rows.len(), 2);
    let prepared_first = proxy.take();
    // Parse + Describe, Sync: wait for the types; Bind + Execute, Sync: wait
    // for the rows.
    assert_eq!(prepared_first.sent, "PDSBES");
    assert_eq!(prepared_first.round_trips, 2);
    assert!(
        prepared_first.parsed[0].starts_with('s'),
        "{prepared_first:?}"
    );
    // The client closes that statement when its last row is dropped.
    drop(rows);
    let closed = fetch::<(i64,), _>(&client, &prepared_statements()).await;
    assert_eq!(closed, [(0,)]);
    assert_eq!(proxy.take().sent, "CSPBDES");

    // A deadpool pool: the same.
    let manager = deadpool_postgres::Manager::new(proxy.config(), tokio_postgres::NoTls);
    let pool = deadpool_postgres::Pool::builder(manager)
        .max_size(1)
        .build()
        .expect("pool");
    drop(pool.get().await.expect("connect"));
    proxy.take();
    assert_eq!(ledger.rows(&pool).await, [(1, 11), (2, 21)]);
    assert_eq!(proxy.take(), one_unnamed_round_trip());

    // The blocking client: the same.
    let config = postgres::Config::from(proxy.config());
    let ledger_rows = ledger.select();
    let (rows, count) = tokio::task::spawn_blocking(move || {
        let mut c = config.connect(postgres::NoTls).expect("connect (sync)");
        let before = c
            .rows(&BuiltQuery::fixed("SELECT 1"))
            .expect("warm up")
            .len();
        let rows = ledger_rows
            .fetch_all_blocking::<(i32, i64)>(&mut c)
            .expect("rows");
        (rows, before)
    })
    .await
    .expect("blocking task");
    assert_eq!((rows, count), (vec![(1, 11), (2, 21)], 1));
    let sync = proxy.take();
    // Startup, then two statements of one round trip each.
    // (`X`: the client's Terminate, when it has arrived.)
    assert!(
        sync.sent.trim_end_matches('X').ends_with("PBDESPBDES"),
        "{sync:?}"
    );
    assert_eq!(sync.parsed, ["", ""]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_mode_parses_once_per_connection() {
    let schema = schema().await;
    let proxy = Proxy::start(&schema.config()).await;
    let ledger = Ledger::new("ledger");
    let db = Prepared::new(proxy.connect().await);
    exec(db.get_ref(), &ledger.create()).await;
    exec(db.get_ref(), &ledger.insert(&[(1, 10)])).await;
    proxy.take();

    // First run: prepared (a named statement; one round trip), then run.
    assert_eq!(ledger.rows(&db).await, [(1, 10)]);
    let first = proxy.take();
    assert_eq!((first.sent.as_str(), first.round_trips), ("PDSBES", 2));
    assert!(first.parsed[0].starts_with('s'), "{first:?}");
    // Then: Bind, Execute, Sync; no Parse.
    for _ in 0..3 {
        assert_eq!(ledger.rows(&db).await, [(1, 10)]);
        let again = proxy.take();
        assert_eq!((again.sent.as_str(), again.round_trips), ("BES", 1));
    }
    // Statements with affected-row counts, and every value kind.
    assert_eq!(exec(&db, &ledger.add(1)).await, 1);
    assert_eq!(exec(&db, &ledger.add(1)).await, 1);
    let row: Vec<(i64, String, Vec<i64>, bool)> = fetch(&db, &every_kind()).await;
    assert_eq!(row, [(42, "ab".to_owned(), vec![1, 2], true)]);
    assert_eq!(db.cached_statements(), 3);
    let named = fetch::<(i64,), _>(db.get_ref(), &prepared_statements()).await;
    assert_eq!(named, [(3,)]);
    db.clear_statements();
    assert_eq!(db.cached_statements(), 0);
    // Cleared statements are closed on the server.
    let named = fetch::<(i64,), _>(db.get_ref(), &prepared_statements()).await;
    assert_eq!(named, [(0,)]);
    assert_eq!(ledger.rows(&db).await, [(1, 12)]);

    // deadpool: each pooled connection prepares once (its own cache).
    let manager = deadpool_postgres::Manager::new(proxy.config(), tokio_postgres::NoTls);
    let pool = Prepared::new(
        deadpool_postgres::Pool::builder(manager)
            .max_size(1)
            .build()
            .expect("pool"),
    );
    drop(pool.get_ref().get().await.expect("connect"));
    proxy.take();
    assert_eq!(ledger.rows(&pool).await, [(1, 12)]);
    assert_eq!(proxy.take().round_trips, 2);
    assert_eq!(ledger.rows(&pool).await, [(1, 12)]);
    assert_eq!(proxy.take().sent, "BES");
    let pooled = Prepared::new(pool.into_inner().get().await.expect("connection"));
    assert_eq!(pooled.cached_statements(), 1);
    assert_eq!(ledger.rows(&pooled).await, [(1, 12)]);
    assert_eq!(proxy.take().sent, "BES");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sea_query_value_kind_is_sent_with_a_type_the_server_accepts() {
    use pgpatterns::sea_query::{ArrayType, Enum, OptionEnum, Value};
    let schema = schema().await;
    let client = crate::support::client(&schema).await;
    client
        .batch_execute("CREATE TYPE mood AS ENUM ('sad', 'happy')")
        .await
        .expect("create type");
    let happy = || {
        Value::Enum(OptionEnum::Some(Box::new(Enum {
            type_name: "mood".into(),
            value: "happy".into(),
        })))
    };
    // Widened integers and chars, without casts in the SQL: the declared
    // types carry them.
    let q = BuiltQuery::fixed_with(
        "SELECT $1 + $2 + $3 + $4 + $5, $6 || 'b', $7::mood::text, $8 IS NULL",
        [
            Value::TinyInt(Some(-1)),
            Value::TinyUnsigned(Some(200)),
            Value::SmallUnsigned(Some(60_000)),
            Value::Unsigned(Some(4_000_000_000)),
            Value::BigUnsigned(Some(1)),
            Value::Char(Some('a')),
            happy(),
            Value::BigUnsigned(None),
        ],
    );
    let typed = q.typed_params().expect("typed");
    assert!(!typed.needs_server_types());
    let row: Vec<(i64, String, String, bool)> = fetch(&client, &q).await;
    assert_eq!(row, [(4_000_060_200, "ab".into(), "happy".into(), true)]);

    // An array of enum values needs the server's type: prepared first, and
    // still right.
    let q = BuiltQuery::fixed_with(
        "SELECT array_length(m, 1), m[2]::text FROM (SELECT $1::mood[] AS m) t",
        [Value::Array(
            ArrayType::Enum(Box::new("mood".into())),
            Some(Box::new(vec![happy(), happy()])),
        )],
    );
    assert!(q.typed_params().expect("typed").needs_server_types());
    let row: Vec<(i32, String)> = fetch(&client, &q).await;
    assert_eq!(row, [(2, "happy".into())]);

    // A u64 PostgreSQL cannot hold is refused before anything is sent.
    let q = BuiltQuery::fixed_with("SELECT $1", [Value::BigUnsigned(Some(u64::MAX))]);
    let err = q.fetch_all::<(i64,)>(&client).await.unwrap_err();
    assert!(err.is_invalid_input(), "{err:?}");
}

/// A run verb of `Auto` meeting a query decided before: while the catalog
/// confirmed the decision less than `recheck` ago, only the query is sent;
/// after that, the catalog check goes with the query (the two statements
/// pipelined), and the answer is the same every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_runs_a_remembered_decision_without_an_extra_round_trip() {
    use pgpatterns::seed::orders::OrdersSeed;
    use pgpatterns::{LatestStrategy, StrategyCache};

    let schema = schema().await;
    let setup = schema.connect().await.expect("connect");
    let seed = OrdersSeed::new(500)
        .prefix("remembered_rt_")
        .expect("prefix");
    seed.run(&setup, |_| {}).await.expect("seed");
    let spec = seed
        .tables()
        .latest()
        .status_eq("Complete")
        .strategy(LatestStrategy::Auto);
    let proxy = Proxy::start(&schema.config()).await;
    let client = proxy.connect().await;
    let expected = spec
        .clone()
        .strategy(LatestStrategy::DistinctOn)
        .count(&client)
        .await
        .expect("count");
    assert!(expected > 0);

    // Decided here: catalog, statistics, then the count.
    assert_eq!(spec.count(&client).await.expect("count"), expected);
    let deciding = proxy.take();
    assert!(deciding.round_trips >= 2, "{deciding:?}");

    // Just confirmed: the count alone.
    assert_eq!(spec.count(&client).await.expect("count"), expected);
    assert_eq!(proxy.take(), one_unnamed_round_trip());

    // Past the recheck interval: the catalog check and the count together.
    let recheck = StrategyCache::global().recheck();
    tokio::time::sleep(recheck + std::time::Duration::from_millis(50)).await;
    assert_eq!(spec.count(&client).await.expect("count"), expected);
    let checked = proxy.take();
    assert_eq!(checked.sent, "PBDESPBDES", "{checked:?}");
    assert_eq!(checked.round_trips, 2, "{checked:?}");

    // Confirmed again by that check: the count alone.
    assert_eq!(spec.count(&client).await.expect("count"), expected);
    assert_eq!(proxy.take(), one_unnamed_round_trip());
}

/// The same for a report: a rollup decided before runs in one round trip
/// while the decision is fresh, and with its catalog check pipelined after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_runs_a_remembered_report_without_an_extra_round_trip() {
    use pgpatterns::seed::sales::SalesSeed;
    use pgpatterns::{RollupStrategy, StrategyCache};

    let schema = schema().await;
    let setup = schema.connect().await.expect("connect");
    let seed = SalesSeed::new(2000)
        .prefix("remembered_rt_")
        .expect("prefix");
    seed.run(&setup, |_| {}).await.expect("seed");
    // decomposable metrics: decided from the database, not fixed
    let report = seed
        .tables()
        .dashboard(false)
        .strategy(RollupStrategy::Auto);
    let proxy = Proxy::start(&schema.config()).await;
    let client = proxy.connect().await;
    let expected = report
        .clone()
        .strategy(RollupStrategy::GroupingSets)
        .fetch_all(&client)
        .await
        .expect("rows");
    assert!(!expected.is_empty());

    assert_eq!(report.fetch_all(&client).await.expect("rows"), expected);
    let deciding = proxy.take();
    assert!(deciding.round_trips >= 2, "{deciding:?}");

    assert_eq!(report.fetch_all(&client).await.expect("rows"), expected);
    assert_eq!(proxy.take(), one_unnamed_round_trip());

    let recheck = StrategyCache::global().recheck();
    tokio::time::sleep(recheck + std::time::Duration::from_millis(50)).await;
    assert_eq!(report.fetch_all(&client).await.expect("rows"), expected);
    let checked = proxy.take();
    assert_eq!(checked.sent, "PBDESPBDES", "{checked:?}");

    assert_eq!(report.fetch_all(&client).await.expect("rows"), expected);
    assert_eq!(proxy.take(), one_unnamed_round_trip());
}
