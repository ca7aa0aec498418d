//! `ReplicaRouter` against a real streaming hot standby of the test database
//! (`TestDb::standby`): read-your-writes, lag, a standby that is down, and
//! that writes only ever reach the primary.
//!
//! The tests of this file share the standby and pause or stop it, so they
//! take turns (`one_at_a_time`); other test files never use the standby.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use pgpatterns::replica::{ReplicaRouter, RouterOptions};
use pgpatterns::testdb::{Standby, TestDb, TestSchema};
use pgpatterns::{BuiltQuery, Executor, SqlType, Transactional};

use crate::support;

/// Held by each test of this file for its whole run.
static STANDBY_TURN: LazyLock<tokio::sync::Mutex<()>> =
    LazyLock::new(|| tokio::sync::Mutex::new(()));

async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    STANDBY_TURN.lock().await
}

/// The shared standby; fails the test, saying how to get one, when there is
/// none.
fn standby() -> &'static Standby {
    TestDb::shared()
        .expect(
            "the database tests need PostgreSQL: install its server binaries \
             (initdb, postgres, pg_basebackup) or set DATABASE_URL",
        )
        .standby()
        .expect(
            "the replica tests need a streaming standby: with a private cluster one is made \
             with pg_basebackup; with DATABASE_URL, set PGPATTERNS_STANDBY_URL to a hot \
             standby of that server",
        )
}

/// Connects with `config`, spawning the connection task.
async fn connect(config: tokio_postgres::Config) -> tokio_postgres::Client {
    let (client, connection) = config
        .connect(tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// The primary side of the test's schema, committing synchronously: the
/// test database runs with `synchronous_commit = off`, whose commits reach
/// the standby only when the WAL writer flushes them (every 200 ms).
async fn primary(schema: &TestSchema) -> tokio_postgres::Client {
    let mut config = schema.config();
    let options = config.get_options().unwrap_or_default().to_owned();
    config.options(format!("{options} -c synchronous_commit=on"));
    connect(config).await
}

/// Calls per method, and the SQL of each `rows` call.
#[derive(Debug, Default)]
struct Calls {
    rows: AtomicU64,
    run: AtomicU64,
    script: AtomicU64,
    transactions: AtomicU64,
    rows_sql: Mutex<Vec<String>>,
}

/// An executor that counts what reaches it.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    calls: Arc<Calls>,
}

impl<E> Counted<E> {
    fn new(inner: E) -> (Counted<E>, Arc<Calls>) {
        let calls = Arc::new(Calls::default());
        (
            Counted {
                inner,
                calls: Arc::clone(&calls),
            },
            calls,
        )
    }
}

impl<E: Executor> Executor for Counted<E> {
    type Row = E::Row;

    async fn rows(&self, q: &BuiltQuery) -> pgpatterns::Result<Vec<E::Row>> {
        self.calls.rows.fetch_add(1, Ordering::SeqCst);
        self.calls.rows_sql.lock().unwrap().push(q.sql().to_owned());
        self.inner.rows(q).await
    }

    async fn run(&self, q: &BuiltQuery) -> pgpatterns::Result<u64> {
        self.calls.run.fetch_add(1, Ordering::SeqCst);
        self.inner.run(q).await
    }

    async fn run_script(&self, sql: &str) -> pgpatterns::Result<()> {
        self.calls.script.fetch_add(1, Ordering::SeqCst);
        self.inner.run_script(sql).await
    }

    fn is_transaction(&self) -> bool {
        self.inner.is_transaction()
    }
}

impl<E: Transactional> Transactional for Counted<E> {
    async fn run_in_transaction(&mut self, queries: &[BuiltQuery]) -> pgpatterns::Result<Vec<u64>> {
        self.calls.transactions.fetch_add(1, Ordering::SeqCst);
        self.inner.run_in_transaction(queries).await
    }

    async fn rows_rolled_back(&mut self, q: &BuiltQuery) -> pgpatterns::Result<Vec<E::Row>> {
        self.calls.transactions.fetch_add(1, Ordering::SeqCst);
        self.inner.rows_rolled_back(q).await
    }
}

/// `true` when the server that answered is the standby.
async fn served_by_standby(db: &impl Executor) -> bool {
    let (in_recovery,): (bool,) = BuiltQuery::fixed("SELECT pg_is_in_recovery()")
        .fetch_one(db)
        .await
        .expect("SELECT pg_is_in_recovery()");
    in_recovery
}

/// Reads until the standby (or the primary) answers; fails the test after
/// 20 s.
async fn wait_for_server(db: &impl Executor, want_standby: bool, why: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while served_by_standby(db).await != want_standby {
        assert!(
            Instant::now() < deadline,
            "reads were not served by the {} within 20 s: {why}",
            if want_standby { "standby" } else { "primary" }
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn count_rows() -> BuiltQuery {
    BuiltQuery::fixed("SELECT count(*) FROM items")
}

fn insert_item(id: i64) -> BuiltQuery {
    BuiltQuery::fixed_with(
        "INSERT INTO items (id, label) VALUES ($1, $2)",
        [id.into_value(), format!("item {id}").into_value()],
    )
}

const CREATE_ITEMS: &str = "CREATE TABLE items (id int8 PRIMARY KEY, label text NOT NULL)";

#[tokio::test]
async fn read_your_writes_holds_for_1000_write_then_read_cycles() {
    let _turn = one_at_a_time().await;
    let standby = standby();
    let schema = support::schema().await;
    let primary = primary(&schema).await;
    primary.batch_execute(CREATE_ITEMS).await.expect("create");
    let (replica, replica_calls) = Counted::new(
        standby
            .connect_for(&schema)
            .await
            .expect("connect to the standby"),
    );
    let router = ReplicaRouter::with_options(
        primary,
        [replica],
        RouterOptions::new()
            .max_lag(Duration::from_secs(30))
            .check_every(Duration::from_millis(50))
            .replay_wait(Duration::from_secs(10)),
    )
    .expect("router");
    // The table must be there before the first read on the standby.
    let session = router.session_after(router.write_token().await.expect("token"));
    let select = |id: i64| {
        BuiltQuery::fixed_with("SELECT label FROM items WHERE id = $1", [id.into_value()])
    };

    let started = Instant::now();
    for id in 0..1000 {
        insert_item(id).execute(&session).await.expect("insert");
        let label: Option<(String,)> = select(id).fetch_optional(&session).await.expect("read");
        assert_eq!(
            label,
            Some((format!("item {id}"),)),
            "cycle {id}: the read did not see the session's own write"
        );
    }
    let stats = router.stats();
    println!(
        "1000 write-then-read cycles in {:?}: {} reads on the standby ({} after waiting for \
         replay, {:?} in all), {} on the primary ({} waits gave up)",
        started.elapsed(),
        stats.replica_reads,
        stats.replay_waits,
        stats.replay_wait_time,
        stats.primary_rows,
        stats.replay_timeouts,
    );
    // Most reads were served by the standby (the first few, before a check
    // has shown it caught up, by the primary): read-your-writes held on the
    // standby itself, not by falling back.
    assert!(
        stats.replica_reads >= 500,
        "most reads should be served by the standby: {stats:?}"
    );
    assert_eq!(replica_calls.run.load(Ordering::SeqCst), 0);
    assert_eq!(replica_calls.script.load(Ordering::SeqCst), 0);
    let reads = replica_calls.rows_sql.lock().unwrap();
    assert!(reads.iter().all(|sql| !sql.starts_with("INSERT")));
}

#[tokio::test]
async fn reads_leave_a_paused_standby_past_the_lag_bound_and_come_back_after_resume() {
    let _turn = one_at_a_time().await;
    let standby = standby();
    let schema = support::schema().await;
    let primary = primary(&schema).await;
    primary.batch_execute(CREATE_ITEMS).await.expect("create");
    let replica = standby.connect_for(&schema).await.expect("connect");
    let router = ReplicaRouter::with_options(
        primary,
        [replica],
        RouterOptions::new()
            .max_lag(Duration::from_millis(300))
            .check_every(Duration::from_millis(50)),
    )
    .expect("router");
    insert_item(1).execute(&router).await.expect("insert");
    wait_for_server(&router, true, "the standby is streaming and caught up").await;

    /// Resumes replay even when the test fails half-way.
    struct ResumeOnDrop(&'static Standby);
    impl Drop for ResumeOnDrop {
        fn drop(&mut self) {
            let standby = self.0;
            let _ = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(standby.resume_replay())
            })
            .join();
        }
    }
    let resume = ResumeOnDrop(standby);
    standby.pause_replay().await.expect("pause replay");
    // The primary moves on; the paused standby cannot follow.
    insert_item(2).execute(&router).await.expect("insert");
    wait_for_server(&router, false, "the paused standby is older than max_lag").await;
    let (n,): (i64,) = count_rows().fetch_one(&router).await.expect("count");
    assert_eq!(n, 2, "the primary serves, with the newest row");
    assert!(router.status()[0].up, "a paused standby is stale, not down");

    standby.resume_replay().await.expect("resume replay");
    drop(resume);
    wait_for_server(&router, true, "the standby caught up after resume").await;
    let (n,): (i64,) = count_rows().fetch_one(&router).await.expect("count");
    assert_eq!(
        n, 2,
        "the standby has replayed the row written while it was paused"
    );
}

#[tokio::test]
async fn reads_succeed_on_the_primary_while_the_standby_is_stopped() {
    let _turn = one_at_a_time().await;
    let standby = standby();
    assert!(
        standby.is_throwaway(),
        "this test stops the standby: it needs the private one (unset DATABASE_URL)"
    );
    let schema = support::schema().await;
    let primary = primary(&schema).await;
    primary.batch_execute(CREATE_ITEMS).await.expect("create");
    // A pool: its broken connections are replaced once the standby is back.
    let manager =
        deadpool_postgres::Manager::new(standby.config_for(&schema), tokio_postgres::NoTls);
    let replica = deadpool_postgres::Pool::builder(manager)
        .max_size(2)
        .build()
        .expect("pool");
    let router = ReplicaRouter::with_options(
        primary,
        [replica],
        RouterOptions::new()
            .max_lag(Duration::from_secs(5))
            .check_every(Duration::from_millis(50))
            .retry_after(Duration::from_millis(200)),
    )
    .expect("router");
    insert_item(1).execute(&router).await.expect("insert");
    wait_for_server(&router, true, "the standby is streaming and caught up").await;

    /// Starts the standby again even when the test fails half-way.
    struct StartOnDrop(&'static Standby);
    impl Drop for StartOnDrop {
        fn drop(&mut self) {
            if let Err(e) = self.0.start() {
                eprintln!("could not start the standby again: {e}");
            }
        }
    }
    let restart = StartOnDrop(standby);
    standby.stop().expect("stop the standby");
    assert!(!standby.is_running());
    for _ in 0..20 {
        assert!(!served_by_standby(&router).await);
        let (n,): (i64,) = count_rows().fetch_one(&router).await.expect("count");
        assert_eq!(n, 1);
    }
    let status = &router.status()[0];
    assert!(!status.up, "the stopped standby is left out: {status:?}");
    assert!(router.stats().replica_errors >= 1);

    standby.start().expect("start the standby");
    drop(restart);
    wait_for_server(&router, true, "the standby is back and retried").await;
    assert!(router.status()[0].up);
}

#[tokio::test]
async fn writes_never_reach_the_standby() {
    let _turn = one_at_a_time().await;
    let standby = standby();
    let schema = support::schema().await;
    let (primary, primary_calls) = Counted::new(primary(&schema).await);
    let (replica, replica_calls) =
        Counted::new(standby.connect_for(&schema).await.expect("connect"));
    let mut router = ReplicaRouter::with_options(
        primary,
        [replica],
        RouterOptions::new()
            .max_lag(Duration::from_secs(30))
            .check_every(Duration::from_millis(50))
            .replay_wait(Duration::from_secs(10)),
    )
    .expect("router");

    router
        .run_script(&format!(
            "{CREATE_ITEMS}; CREATE SEQUENCE item_ids START 100"
        ))
        .await
        .expect("DDL");
    insert_item(1).execute(&router).await.expect("insert");
    router
        .run_in_transaction(&[insert_item(2), insert_item(3)])
        .await
        .expect("transaction");
    BuiltQuery::fixed("UPDATE items SET label = label || '!'")
        .execute(&router)
        .await
        .expect("update");

    // Statements run for their rows that write, lock or need the primary:
    // each reports the server that ran it.
    let session = router.session();
    for sql in [
        "INSERT INTO items (id, label) VALUES (nextval('item_ids'), 'new') \
         RETURNING pg_is_in_recovery()",
        "UPDATE items SET label = 'one' WHERE id = 1 RETURNING pg_is_in_recovery()",
        "WITH d AS (DELETE FROM items WHERE id = (SELECT max(id) FROM items) RETURNING id) \
         SELECT pg_is_in_recovery() FROM d",
        "SELECT pg_is_in_recovery() FROM items WHERE id = 1 FOR UPDATE",
        "SELECT pg_is_in_recovery() FROM items WHERE id = 1 FOR KEY SHARE",
        "SELECT pg_is_in_recovery() FROM nextval('item_ids')",
    ] {
        assert!(!answered_by_standby(&router, sql).await, "router: {sql}");
        assert!(!answered_by_standby(&session, sql).await, "session: {sql}");
    }
    // Reads do reach the standby, once it is known to be caught up; the
    // session reads its writes there.
    wait_for_server(&router, true, "the standby is streaming and caught up").await;
    let (n,): (i64,) = count_rows().fetch_one(&session).await.expect("count");
    let (on_standby,): (bool,) = BuiltQuery::fixed("SELECT pg_is_in_recovery() FROM items LIMIT 1")
        .fetch_one(&session)
        .await
        .expect("read");
    assert!(on_standby, "{:?}", router.stats());
    assert_eq!(n, 3);

    assert_eq!(replica_calls.run.load(Ordering::SeqCst), 0);
    assert_eq!(replica_calls.script.load(Ordering::SeqCst), 0);
    assert_eq!(replica_calls.transactions.load(Ordering::SeqCst), 0);
    let reads = replica_calls.rows_sql.lock().unwrap().clone();
    assert!(reads.len() >= 2, "{reads:?}");
    for sql in &reads {
        for word in ["INSERT", "UPDATE", "DELETE", "nextval"] {
            assert!(!sql.contains(word), "the standby was sent {sql}");
        }
    }
    assert_eq!(primary_calls.run.load(Ordering::SeqCst), 2);
    assert_eq!(primary_calls.script.load(Ordering::SeqCst), 1);
    assert_eq!(primary_calls.transactions.load(Ordering::SeqCst), 1);
}

/// Runs `sql` for its one boolean: where it ran.
async fn answered_by_standby(db: &impl Executor, sql: &'static str) -> bool {
    let (in_recovery,): (bool,) = BuiltQuery::fixed(sql)
        .fetch_one(db)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    in_recovery
}
