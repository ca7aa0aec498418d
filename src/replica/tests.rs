//! Routing decisions with fake servers (no database): where each statement
//! goes, lag, failures, and read-your-writes waits.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use postgres_types::{FromSqlOwned, Type};

use super::*;
use crate::exec::block_on;

/// A value of a fake row, with its PostgreSQL type.
#[derive(Debug, Clone)]
enum V {
    Bool(bool),
    Int(Option<i64>),
    Text(String),
}

#[derive(Debug)]
struct FakeRow(Vec<V>);

impl RowRead for FakeRow {
    fn try_get<T: FromSqlOwned>(&self, idx: ColumnIndex<'_>) -> Result<T> {
        let ColumnIndex::Position(i) = idx else {
            panic!("fake rows are read by position");
        };
        let (ty, raw) = match &self.0[i] {
            V::Bool(b) => (Type::BOOL, Some(vec![u8::from(*b)])),
            V::Int(n) => (Type::INT8, n.map(|n| n.to_be_bytes().to_vec())),
            V::Text(s) => (Type::TEXT, Some(s.as_bytes().to_vec())),
        };
        assert!(T::accepts(&ty), "fake column {i} is {ty}");
        T::from_sql_nullable(&ty, raw.as_deref()).map_err(|source| Error::Decode {
            column: format!("#{i}"),
            expected: std::any::type_name::<T>(),
            source,
        })
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn column_name(&self, _: usize) -> Option<&str> {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Rows,
    Run,
    Script,
    Transaction,
}

/// A fake server: a primary (its WAL position moves by 1000 per write) or a
/// standby (its replay position is set by the test, or moves on when it
/// sleeps). User reads return one row: the server's name.
#[derive(Debug)]
struct Fake {
    name: &'static str,
    standby: bool,
    /// Insert position (primary) or replay position (standby).
    lsn: AtomicU64,
    /// Replay advance per server-side sleep (standby).
    per_sleep: AtomicU64,
    /// Every call fails as a lost connection.
    down: AtomicBool,
    /// User reads fail with this SQLSTATE.
    fail_reads: Mutex<Option<&'static str>>,
    /// The WAL position cannot be read (primary).
    no_position: AtomicBool,
    calls: Mutex<Vec<(Call, String)>>,
}

impl Fake {
    fn new(name: &'static str, standby: bool, lsn: u64) -> Fake {
        Fake {
            name,
            standby,
            lsn: AtomicU64::new(lsn),
            per_sleep: AtomicU64::new(0),
            down: AtomicBool::new(false),
            fail_reads: Mutex::new(None),
            no_position: AtomicBool::new(false),
            calls: Mutex::new(Vec::new()),
        }
    }

    fn calls(&self) -> Vec<(Call, String)> {
        self.calls.lock().unwrap().clone()
    }

    /// Calls other than the router's own position checks.
    fn user_calls(&self) -> Vec<(Call, String)> {
        self.calls()
            .into_iter()
            .filter(|(_, sql)| !sql.contains("_lsn()"))
            .collect()
    }

    fn record(&self, call: Call, sql: &str) -> Result<()> {
        self.calls.lock().unwrap().push((call, sql.to_owned()));
        if self.down.load(Ordering::SeqCst) {
            return Err(Error::Database {
                sql: sql.to_owned(),
                code: None,
                message: "connection closed".into(),
                client: "connection closed".into(),
            });
        }
        Ok(())
    }

    fn db_error(sql: &str, code: &str) -> Error {
        Error::Database {
            sql: sql.to_owned(),
            code: Some(code.to_owned()),
            message: format!("failed with {code}"),
            client: "failed".into(),
        }
    }

    fn answer(&self, q: &BuiltQuery) -> Result<Vec<FakeRow>> {
        self.record(Call::Rows, q.sql())?;
        let lsn = |v: u64| V::Int(Some(i64::try_from(v).unwrap()));
        if q.sql() == PRIMARY_POSITION {
            if self.standby {
                return Err(Self::db_error(q.sql(), "55000"));
            }
            if self.no_position.load(Ordering::SeqCst) {
                return Err(Self::db_error(q.sql(), "57P01"));
            }
            return Ok(vec![FakeRow(vec![lsn(self.lsn.load(Ordering::SeqCst))])]);
        }
        if q.sql() == REPLICA_POSITION || q.sql() == REPLICA_POSITION_AFTER_SLEEP {
            if q.sql() == REPLICA_POSITION_AFTER_SLEEP {
                let step = self.per_sleep.load(Ordering::SeqCst);
                self.lsn.fetch_add(step, Ordering::SeqCst);
            }
            let replayed = if self.standby {
                lsn(self.lsn.load(Ordering::SeqCst))
            } else {
                V::Int(None)
            };
            return Ok(vec![FakeRow(vec![V::Bool(self.standby), replayed])]);
        }
        if let Some(code) = *self.fail_reads.lock().unwrap() {
            return Err(Self::db_error(q.sql(), code));
        }
        if !is_read_only(q) {
            assert!(!self.standby, "a write reached the standby: {}", q.sql());
            self.lsn.fetch_add(1000, Ordering::SeqCst);
        }
        Ok(vec![FakeRow(vec![V::Text(self.name.to_owned())])])
    }

    fn write(&self, call: Call, sql: &str) -> Result<()> {
        self.record(call, sql)?;
        assert!(!self.standby, "a write reached the standby: {sql}");
        self.lsn.fetch_add(1000, Ordering::SeqCst);
        Ok(())
    }
}

impl Executor for Fake {
    type Row = FakeRow;

    fn rows(&self, q: &BuiltQuery) -> impl Future<Output = Result<Vec<FakeRow>>> + Send {
        std::future::ready(self.answer(q))
    }

    fn run(&self, q: &BuiltQuery) -> impl Future<Output = Result<u64>> + Send {
        std::future::ready(self.write(Call::Run, q.sql()).map(|()| 1))
    }

    fn run_script(&self, sql: &str) -> impl Future<Output = Result<()>> + Send {
        std::future::ready(self.write(Call::Script, sql))
    }
}

impl Transactional for Fake {
    fn run_in_transaction(
        &mut self,
        queries: &[BuiltQuery],
    ) -> impl Future<Output = Result<Vec<u64>>> + Send {
        let out = queries
            .iter()
            .map(|q| self.write(Call::Transaction, q.sql()).map(|()| 1))
            .collect();
        std::future::ready(out)
    }

    fn rows_rolled_back(
        &mut self,
        q: &BuiltQuery,
    ) -> impl Future<Output = Result<Vec<FakeRow>>> + Send {
        std::future::ready(self.answer(q))
    }
}

const READ: &str = r#"SELECT "name" FROM "servers""#;

fn read() -> BuiltQuery {
    BuiltQuery::fixed(READ)
}

/// Which server answered a read.
fn served_by<E: Executor<Row = FakeRow>>(db: &E, q: &BuiltQuery) -> String {
    let rows = block_on(db.rows(q)).expect("read");
    rows[0].try_get::<String>(ColumnIndex::Position(0)).unwrap()
}

fn options() -> RouterOptions {
    RouterOptions::new()
        .max_lag(Duration::from_secs(60))
        .check_every(Duration::from_secs(30))
        .replay_wait(Duration::from_millis(50))
        .retry_after(Duration::from_secs(60))
}

/// A primary at position 5000 and a replica that replayed all of it.
fn router() -> ReplicaRouter<Fake, Fake> {
    ReplicaRouter::with_options(
        Fake::new("primary", false, 5000),
        [Fake::new("replica", true, 5000)],
        options(),
    )
    .unwrap()
}

#[test]
fn reads_go_to_the_replica_and_everything_else_to_the_primary() {
    let mut router = router();
    assert_eq!(served_by(&router, &read()), "replica");
    for write in [
        "INSERT INTO servers VALUES ('x') RETURNING name",
        "WITH d AS (DELETE FROM servers RETURNING name) SELECT name FROM d",
        "SELECT name FROM servers FOR UPDATE",
        "SELECT nextval('s')",
    ] {
        assert_eq!(
            served_by(&router, &BuiltQuery::fixed(write)),
            "primary",
            "{write}"
        );
    }
    block_on(router.run(&BuiltQuery::fixed("SELECT 1"))).unwrap();
    block_on(router.run_script("CREATE TABLE t (); SELECT 1")).unwrap();
    block_on(router.run_in_transaction(&[BuiltQuery::fixed("UPDATE t SET a = 1")])).unwrap();
    block_on(router.rows_rolled_back(&read())).unwrap();

    let replica = router.replicas()[0].user_calls();
    assert_eq!(replica, [(Call::Rows, READ.to_owned())]);
    let primary: Vec<Call> = router.primary().user_calls().iter().map(|c| c.0).collect();
    assert_eq!(
        primary,
        [
            Call::Rows,
            Call::Rows,
            Call::Rows,
            Call::Rows,
            Call::Run,
            Call::Script,
            Call::Transaction,
            Call::Rows
        ]
    );
    let stats = router.stats();
    assert_eq!(stats.replica_reads, 1);
    assert_eq!(stats.primary_rows, 4);
    assert_eq!(stats.primary_writes, 4);
}

#[test]
fn a_replica_behind_the_primary_is_skipped_until_it_catches_up() {
    let router = router();
    router.replicas()[0].lsn.store(1000, Ordering::SeqCst);
    assert_eq!(served_by(&router, &read()), "primary");
    let status = &router.status()[0];
    assert!(status.up);
    assert_eq!(status.lag, None, "never seen at the primary's position");
    assert_eq!(status.replayed, Some(WriteToken::from_lsn(1000)));

    router.replicas()[0].lsn.store(5000, Ordering::SeqCst);
    let status = &block_on(router.check_now())[0];
    assert!(status.lag.is_some_and(|lag| lag < Duration::from_secs(60)));
    assert_eq!(served_by(&router, &read()), "replica");
}

#[test]
fn several_replicas_take_turns() {
    let router = ReplicaRouter::with_options(
        Fake::new("primary", false, 5000),
        [
            Fake::new("replica", true, 5000),
            Fake::new("other replica", true, 5000),
        ],
        options(),
    )
    .unwrap();
    let mut served: Vec<String> = (0..4).map(|_| served_by(&router, &read())).collect();
    served.sort();
    assert_eq!(
        served,
        ["other replica", "other replica", "replica", "replica"]
    );
}

#[test]
fn a_failing_replica_is_skipped_and_retried_later() {
    let router = router();
    assert_eq!(served_by(&router, &read()), "replica");
    router.replicas()[0].down.store(true, Ordering::SeqCst);
    assert_eq!(served_by(&router, &read()), "primary");
    let status = &router.status()[0];
    assert!(!status.up);
    assert!(status
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("connection closed")));
    // Left out: the next read does not even try it.
    let calls = router.replicas()[0].calls().len();
    assert_eq!(served_by(&router, &read()), "primary");
    assert_eq!(router.replicas()[0].calls().len(), calls);
    assert_eq!(router.stats().replica_errors, 1);

    // Back: the next check finds it (here forced; reads check every
    // `check_every`, retrying it once `retry_after` has passed).
    router.replicas()[0].down.store(false, Ordering::SeqCst);
    assert!(block_on(router.check_now())[0].up);
    assert_eq!(served_by(&router, &read()), "replica");
}

#[test]
fn a_replica_that_is_not_a_standby_is_left_out() {
    let router = ReplicaRouter::with_options(
        Fake::new("primary", false, 5000),
        [Fake::new("promoted", false, 5000)],
        options(),
    )
    .unwrap();
    assert_eq!(served_by(&router, &read()), "primary");
    let status = &router.status()[0];
    assert!(!status.up);
    assert!(status
        .last_error
        .as_deref()
        .is_some_and(|e| e.contains("not in recovery")));
}

#[test]
fn a_statement_error_is_retried_on_the_primary_and_the_replica_kept() {
    let router = router();
    // A table created a moment ago that the replica has not replayed yet.
    *router.replicas()[0].fail_reads.lock().unwrap() = Some("42P01");
    assert_eq!(served_by(&router, &read()), "primary");
    assert!(router.status()[0].up);
    *router.replicas()[0].fail_reads.lock().unwrap() = None;
    assert_eq!(served_by(&router, &read()), "replica");
    // The primary's own error is the one returned.
    *router.primary().fail_reads.lock().unwrap() = Some("42601");
    *router.replicas()[0].fail_reads.lock().unwrap() = Some("42601");
    let e = block_on(router.rows(&read())).unwrap_err();
    assert_eq!(e.code(), Some("42601"));
}

#[test]
fn a_session_reads_its_write_on_a_replica_once_replayed() {
    let router = router();
    let session = router.session();
    assert_eq!(session.token(), None);
    assert_eq!(served_by(&session, &read()), "replica");

    block_on(session.run(&BuiltQuery::fixed("INSERT INTO servers VALUES ('x')"))).unwrap();
    assert_eq!(session.token(), Some(WriteToken::from_lsn(6000)));
    // The replica replays 250 per poll: it gets there on the 4th sleep.
    router.replicas()[0].per_sleep.store(250, Ordering::SeqCst);
    assert_eq!(served_by(&session, &read()), "replica");
    assert_eq!(router.replicas()[0].lsn.load(Ordering::SeqCst), 6000);
    let stats = router.stats();
    assert_eq!((stats.replay_waits, stats.replay_timeouts), (1, 0));

    // Known to have replayed it: no wait.
    assert_eq!(served_by(&session, &read()), "replica");
    assert_eq!(router.stats().replay_waits, 1);
    // The router itself does not wait for anything.
    block_on(router.run(&BuiltQuery::fixed("INSERT INTO servers VALUES ('y')"))).unwrap();
    assert_eq!(served_by(&router, &read()), "replica");
}

#[test]
fn a_session_read_goes_to_the_primary_when_replay_takes_too_long() {
    let router = router();
    let session = router.session();
    assert_eq!(served_by(&session, &read()), "replica");
    block_on(session.rows(&BuiltQuery::fixed(
        "INSERT INTO servers VALUES ('x') RETURNING name",
    )))
    .unwrap();
    assert_eq!(served_by(&session, &read()), "primary");
    let stats = router.stats();
    assert_eq!((stats.replay_waits, stats.replay_timeouts), (0, 1));
    // A session given a token from elsewhere waits for it too.
    let later = router.session_after(WriteToken::from_lsn(1_000_000));
    assert_eq!(served_by(&later, &read()), "primary");
    // One that does not wait goes to the primary at once.
    let no_wait = ReplicaRouter::with_options(
        Fake::new("primary", false, 5000),
        [Fake::new("replica", true, 5000)],
        options().replay_wait(Duration::ZERO),
    )
    .unwrap();
    let s = no_wait.session_after(WriteToken::from_lsn(6000));
    assert_eq!(served_by(&s, &read()), "primary");
    assert_eq!(no_wait.stats().replay_timeouts, 0);
}

#[test]
fn a_session_that_lost_its_position_reads_from_the_primary() {
    let router = router();
    let session = router.session();
    router.primary().no_position.store(true, Ordering::SeqCst);
    // The write itself succeeded.
    assert_eq!(
        block_on(session.run(&BuiltQuery::fixed("UPDATE servers SET name = 'x'"))).unwrap(),
        1
    );
    router.primary().no_position.store(false, Ordering::SeqCst);
    assert_eq!(served_by(&session, &read()), "primary");
    assert!(format!("{session:?}").contains("primary_only: true"));
}

#[test]
fn tokens_only_move_forward() {
    let router = router();
    let session = router.session_after(WriteToken::from_lsn(7000));
    session.observe(WriteToken::from_lsn(100));
    assert_eq!(session.token(), Some(WriteToken::from_lsn(7000)));
    session.observe(WriteToken::from_lsn(9000));
    assert_eq!(session.token(), Some(WriteToken::from_lsn(9000)));
    assert_eq!(
        block_on(router.write_token()).unwrap(),
        WriteToken::from_lsn(5000)
    );
}

#[test]
fn inside_a_transaction_everything_runs_on_the_primary() {
    #[derive(Debug)]
    struct InTransaction(Fake);
    impl Executor for InTransaction {
        type Row = FakeRow;
        fn rows(&self, q: &BuiltQuery) -> impl Future<Output = Result<Vec<FakeRow>>> + Send {
            self.0.rows(q)
        }
        fn run(&self, q: &BuiltQuery) -> impl Future<Output = Result<u64>> + Send {
            self.0.run(q)
        }
        fn run_script(&self, sql: &str) -> impl Future<Output = Result<()>> + Send {
            self.0.run_script(sql)
        }
        fn is_transaction(&self) -> bool {
            true
        }
    }
    let router = ReplicaRouter::new(
        InTransaction(Fake::new("primary", false, 5000)),
        [Fake::new("replica", true, 5000)],
    );
    assert!(router.is_transaction());
    assert_eq!(served_by(&router, &read()), "primary");
    assert!(router.replicas()[0].calls().is_empty());
}

#[test]
fn no_replicas_means_the_primary() {
    let router = ReplicaRouter::<Fake, Fake>::new(Fake::new("primary", false, 5000), []);
    assert_eq!(served_by(&router, &read()), "primary");
    assert_eq!(served_by(&router.session(), &read()), "primary");
}

#[test]
fn bad_options_and_tokens_are_refused() {
    let make = |o: RouterOptions| {
        ReplicaRouter::with_options(
            Fake::new("primary", false, 0),
            [Fake::new("replica", true, 0)],
            o,
        )
        .map(|_| ())
    };
    let e = make(RouterOptions::new().max_lag(Duration::ZERO)).unwrap_err();
    assert_eq!(e.to_string(), "invalid max_lag: must be more than zero");
    let e = make(RouterOptions::new().check_every(Duration::ZERO)).unwrap_err();
    assert!(e.is_invalid_input());
    assert!(make(RouterOptions::new().replay_wait(Duration::ZERO)).is_ok());

    for bad in [
        "",
        "0",
        "/1",
        "1/",
        "x/1",
        "123456789/0",
        "1/2/3",
        " 1/2",
        "-1/2",
    ] {
        let e = bad.parse::<WriteToken>().unwrap_err();
        assert!(e.is_invalid_input(), "{bad}");
    }
    for (text, lsn) in [
        ("0/0", 0),
        ("0/16B3748", 0x16B_3748),
        ("FFFFFFFF/FFFFFFFF", u64::MAX),
    ] {
        let t: WriteToken = text.parse().unwrap();
        assert_eq!(t.lsn(), lsn);
        assert_eq!(t.to_string(), text);
    }
    assert_eq!("a/b".parse::<WriteToken>().unwrap().to_string(), "A/B");
}

#[test]
fn router_futures_are_send() {
    fn send<T: Send>(_: &T) {}
    let router = router();
    let q = read();
    send(&router.rows(&q));
    let session = router.session();
    send(&session.rows(&q));
    send(&session.run(&q));
    send(&router.check_now());
    send(&router.write_token());
}

#[test]
fn sea_query_statements_are_told_apart_by_what_they_do() {
    use sea_query::{Alias, Expr, ExprTrait, LockType, Query};
    let t = Alias::new("update");
    let id = Alias::new("id");
    let select = Query::select()
        .column(id.clone())
        .from(t.clone())
        .and_where(Expr::col(id.clone()).eq(1i64))
        .to_owned();
    assert!(is_read_only(&BuiltQuery::new(&select)));
    let locked = select.clone().lock(LockType::Update).to_owned();
    assert!(!is_read_only(&BuiltQuery::new(&locked)));
    let shared = select.clone().lock(LockType::Share).to_owned();
    assert!(!is_read_only(&BuiltQuery::new(&shared)));
    let insert = Query::insert()
        .into_table(t.clone())
        .columns([id.clone()])
        .values_panic([1i64.into()])
        .returning_col(id.clone())
        .to_owned();
    assert!(!is_read_only(&BuiltQuery::new(&insert)));
    let update = Query::update()
        .table(t.clone())
        .value(id.clone(), 2i64)
        .to_owned();
    assert!(!is_read_only(&BuiltQuery::new(&update)));
    let delete = Query::delete().from_table(t.clone()).to_owned();
    assert!(!is_read_only(&BuiltQuery::new(&delete)));
}
