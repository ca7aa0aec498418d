//! The archive mover and the batched delete on a real server: totals stay
//! constant while rows move (with readers and writers running), a mover
//! killed mid-batch or dropped mid-run resumes with every row exactly once,
//! bad input is a typed error, hostile names stay names.

use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, TimeZone, Utc};
use pgpatterns::ops::archive::Archiver;
use pgpatterns::ops::batch::BatchDelete;
use pgpatterns::sea_query::{Alias, Expr, ExprTrait, Order, Query};
use pgpatterns::{BuiltQuery, Error, Executor, Progress, SqlType, Table};
use tokio::sync::mpsc;

use crate::support::{client, fetch, schema};

type Row = (i64, i64, i64, DateTime<Utc>, Option<String>);

const SETUP: &str = "
CREATE TABLE orders (
    id bigint PRIMARY KEY,
    user_id bigint NOT NULL,
    amount bigint NOT NULL CHECK (amount >= 0),
    created_at timestamptz NOT NULL,
    note text);
CREATE INDEX ON orders (created_at, id);";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap()
}

/// `n` orders, one per hour from `t0`, ids `1..=n`.
async fn seed(c: &tokio_postgres::Client, n: i64) {
    c.batch_execute(SETUP).await.unwrap();
    c.execute(
        "INSERT INTO orders SELECT g, g % 97, g * 3, $2::timestamptz + g * interval '1 hour',
                CASE WHEN g % 5 = 0 THEN NULL ELSE 'note ' || g END
         FROM generate_series(1, $1::int8) g",
        &[&n, &t0()],
    )
    .await
    .unwrap();
}

fn mover(batch: i64) -> Archiver<i64, DateTime<Utc>> {
    let orders = Table::new("orders").unwrap();
    Archiver::new(
        &orders.column::<i64>("id").unwrap(),
        &orders.column::<DateTime<Utc>>("created_at").unwrap(),
        &Table::new("orders_archive").unwrap(),
    )
    .batch_size(batch)
}

/// Every row of live + archive (through the mover's union), by id.
async fn everything<E: Executor>(e: &E, m: &Archiver<i64, DateTime<Utc>>) -> Vec<Row> {
    let columns = m.prepare(e).await.unwrap();
    let q = Query::select()
        .column(Alias::new("id"))
        .column(Alias::new("user_id"))
        .column(Alias::new("amount"))
        .column(Alias::new("created_at"))
        .column(Alias::new("note"))
        .from_subquery(m.union_all(&columns).unwrap(), Alias::new("u"))
        .order_by(Alias::new("id"), Order::Asc)
        .to_owned();
    fetch(e, &BuiltQuery::from(&q)).await
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

/// No row in both tables, nothing old left in live, nothing new in the
/// archive, and the union equals `expected`.
async fn check_exactly_once(
    c: &tokio_postgres::Client,
    m: &Archiver<i64, DateTime<Utc>>,
    cutoff: DateTime<Utc>,
    expected: &[Row],
) {
    assert_eq!(
        count(
            c,
            "SELECT count(*) FROM orders JOIN orders_archive USING (id)"
        )
        .await,
        0,
        "a row is in both tables"
    );
    let old_live: i64 = c
        .query_one(
            "SELECT count(*) FROM orders WHERE created_at < $1",
            &[&cutoff],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(old_live, 0, "old rows left in live");
    let new_archived: i64 = c
        .query_one(
            "SELECT count(*) FROM orders_archive WHERE created_at >= $1",
            &[&cutoff],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(new_archived, 0, "new rows archived");
    assert_eq!(everything(c, m).await, expected, "live + archive changed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn totals_stay_constant_while_rows_move_under_readers_and_writers() {
    let schema = schema().await;
    let c = client(&schema).await;
    let n = 2000;
    seed(&c, n).await;
    let m = mover(97);
    let cutoff = t0() + Duration::hours(1500);
    let before = {
        // The archive does not exist yet: prepare (inside `everything`)
        // creates it from the live table.
        everything(&c, &m).await
    };
    assert_eq!(before.len(), n as usize);

    // A writer keeps inserting new orders; a reader keeps counting the
    // original rows through the union, which must never change.
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let writer = {
        let w = client(&schema).await;
        let mut stop = stop_tx.subscribe();
        tokio::spawn(async move {
            let mut id = n;
            while !*stop.borrow_and_update() {
                id += 1;
                w.execute(
                    "INSERT INTO orders VALUES ($1, 1, 1, now(), 'live')",
                    &[&id],
                )
                .await
                .unwrap();
            }
            id - n
        })
    };
    let reader = {
        let r = client(&schema).await;
        let m = m.clone();
        tokio::spawn(async move {
            let columns = m.prepare(&r).await.unwrap();
            let q = BuiltQuery::from(
                &Query::select()
                    .expr(Expr::cust("count(*)"))
                    .from_subquery(m.union_all(&columns).unwrap(), Alias::new("u"))
                    .and_where(Expr::col(Alias::new("id")).lte(n.param()))
                    .to_owned(),
            );
            let mut reads = Vec::new();
            while !*stop_rx.borrow_and_update() {
                reads.push(fetch::<(i64,), _>(&r, &q).await[0].0);
            }
            reads
        })
    };
    let mut progress: Vec<Progress> = Vec::new();
    let report = m.run(&c, cutoff, |p| progress.push(p)).await.unwrap();
    stop_tx.send(true).unwrap();
    let inserted = writer.await.unwrap();
    let reads = reader.await.unwrap();

    assert_eq!(report.rows, 1499);
    // full ones, a partial one, an empty one ending the cursor pass, an empty sweep
    assert_eq!(report.batches, 1499 / 97 + 3);
    assert_eq!(
        progress.first().map(|p| (p.done, p.total)),
        Some((0, Some(1499)))
    );
    assert_eq!(progress.last().map(|p| p.done), Some(1499));
    assert!(progress.windows(2).all(|w| w[0].done <= w[1].done));
    assert!(!reads.is_empty());
    assert!(
        reads.iter().all(|&r| r == n),
        "a reader saw a total other than {n}: {:?}",
        reads.iter().filter(|&&r| r != n).collect::<Vec<_>>()
    );
    assert_eq!(count(&c, "SELECT count(*) FROM orders_archive").await, 1499);
    assert_eq!(
        count(&c, "SELECT count(*) FROM orders").await,
        n - 1499 + inserted
    );
    let after: Vec<Row> = everything(&c, &m)
        .await
        .into_iter()
        .filter(|r| r.0 <= n)
        .collect();
    assert_eq!(after, before);
    check_exactly_once(&c, &m, cutoff, &everything(&c, &m).await).await;
    // Running again moves nothing, without a batch: no row lies before the
    // cutoff any more.
    let again = m.run(&c, cutoff, |_| {}).await.unwrap();
    assert_eq!((again.rows, again.batches), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_mover_killed_mid_batch_or_dropped_mid_run_resumes_exactly_once() {
    let schema = schema().await;
    let c = client(&schema).await;
    let n = 3000;
    seed(&c, n).await;
    let m = mover(50);
    c.batch_execute(m.create_statement().unwrap().sql())
        .await
        .unwrap();
    // Make every batch slow, so a kill lands inside one.
    c.batch_execute(
        "CREATE FUNCTION slow() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN PERFORM pg_sleep(0.03); RETURN NULL; END $$;
         CREATE TRIGGER slow AFTER INSERT ON orders_archive
           FOR EACH STATEMENT EXECUTE FUNCTION slow();",
    )
    .await
    .unwrap();
    let before = everything(&c, &m).await;
    let cutoff = t0() + Duration::hours(2000);

    // 1. Terminate the mover's backend while a batch statement is running.
    let victim = client(&schema).await;
    let pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = {
        let m = m.clone();
        tokio::spawn(async move {
            m.run(&victim, cutoff, |p| {
                let _ = tx.send(p.done);
            })
            .await
        })
    };
    while rx.recv().await.unwrap_or(u64::MAX) < 300 {}
    let mut in_batch = false;
    for _ in 0..200 {
        let row = c
            .query_one(
                "SELECT coalesce(state = 'active' AND query LIKE 'WITH%', false)
                 FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap();
        if row.get::<_, bool>(0) {
            in_batch = true;
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(1)).await;
    }
    assert!(in_batch, "never caught the mover inside a batch");
    c.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    let killed = task.await.unwrap();
    assert!(
        matches!(&killed, Err(e) if e.is_database()),
        "the killed mover must fail: {killed:?}"
    );
    let moved = count(&c, "SELECT count(*) FROM orders_archive").await;
    assert!(moved > 0 && moved < 1999, "moved {moved}");
    assert_eq!(moved % 50, 0, "a killed batch must move all or nothing");
    assert_eq!(everything(&c, &m).await, before);

    // 2. Drop the mover's future mid-run (task aborted), then its connection.
    let dropped = client(&schema).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let task = {
        let m = m.clone();
        tokio::spawn(async move {
            let r = m
                .run(&dropped, cutoff, |p| {
                    let _ = tx.send(p.done);
                })
                .await;
            drop(dropped);
            r
        })
    };
    while rx.recv().await.unwrap_or(u64::MAX) < 200 {}
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // The aborted statement (if one was in flight) ends one way or the other.
    tokio::time::sleep(StdDuration::from_millis(100)).await;
    assert_eq!(everything(&c, &m).await, before);

    // 3. Resume to the end.
    let resumed = m.run(&c, cutoff, |_| {}).await.unwrap();
    assert!(resumed.rows > 0);
    assert_eq!(count(&c, "SELECT count(*) FROM orders_archive").await, 1999);
    check_exactly_once(&c, &m, cutoff, &before).await;
}

#[tokio::test]
async fn bad_input_is_a_typed_error_and_moves_nothing() {
    let schema = schema().await;
    let c = client(&schema).await;
    seed(&c, 100).await;
    let orders = Table::new("orders").unwrap();
    let id = orders.column::<i64>("id").unwrap();
    let at = orders.column::<DateTime<Utc>>("created_at").unwrap();
    let spec_field = |r: Result<_, Error>| match r {
        Err(Error::InvalidSpec { field, reason }) => (field, reason),
        other => panic!("expected InvalidSpec, got {other:?}"),
    };
    let archive = Table::new("orders_archive").unwrap();
    // batch size 0, archive = live, columns of two tables
    assert_eq!(spec_field(mover(1).batch_size(0).check()).0, "batch_size");
    assert_eq!(
        spec_field(Archiver::new(&id, &at, &orders).check()).0,
        "archive"
    );
    let other = Table::new("other").unwrap();
    assert_eq!(
        spec_field(Archiver::new(&id, &at.of(&other), &archive).check()).0,
        "columns"
    );
    // A cutoff in the future, forbidden by the caller.
    let strict = mover(10).forbid_future_cutoff();
    let (field, _) = spec_field(
        strict
            .run(&c, Utc::now() + Duration::days(1), |_| {})
            .await
            .map(|_| ()),
    );
    assert_eq!(field, "cutoff");
    // A missing archive that may not be created.
    let (field, _) = spec_field(
        mover(10)
            .create_missing(false)
            .run(&c, t0() + Duration::hours(50), |_| {})
            .await
            .map(|_| ()),
    );
    assert_eq!(field, "archive");
    // An archive whose columns differ from live.
    c.batch_execute(
        "CREATE TABLE orders_archive (id bigint PRIMARY KEY, user_id bigint, amount numeric,
                                      created_at timestamptz, note text, extra int)",
    )
    .await
    .unwrap();
    let (field, reason) = spec_field(
        mover(10)
            .run(&c, t0() + Duration::hours(50), |_| {})
            .await
            .map(|_| ()),
    );
    assert_eq!(field, "archive");
    assert!(
        reason.contains("amount bigint")
            && reason.contains("amount numeric")
            && reason.contains("extra integer"),
        "{reason}"
    );
    // A missing live table.
    let ghost = Table::new("ghost").unwrap();
    let (field, _) = spec_field(
        Archiver::new(
            &ghost.column::<i64>("id").unwrap(),
            &ghost.column::<DateTime<Utc>>("at").unwrap(),
            &archive,
        )
        .run(&c, t0(), |_| {})
        .await
        .map(|_| ()),
    );
    assert_eq!(field, "live");
    // Nothing moved.
    assert_eq!(count(&c, "SELECT count(*) FROM orders").await, 100);
    assert_eq!(count(&c, "SELECT count(*) FROM orders_archive").await, 0);
    // A future cutoff is refused unless allowed; allowed, everything moves.
    c.batch_execute("DROP TABLE orders_archive").await.unwrap();
    let all = mover(30)
        .allow_future_cutoff()
        .run(&c, Utc::now() + Duration::days(1), |_| {})
        .await
        .unwrap();
    assert_eq!(all.rows, 100);
}

#[tokio::test]
async fn hostile_names_are_only_names() {
    let schema = schema().await;
    let c = client(&schema).await;
    c.batch_execute(
        r#"CREATE TABLE victims (id int);
           CREATE TABLE "li've""; DROP TABLE victims; --" ("i""d" bigint PRIMARY KEY, "at $1" timestamptz);
           INSERT INTO "li've""; DROP TABLE victims; --" SELECT g, now() - g * interval '1 day' FROM generate_series(1, 20) g;"#,
    )
    .await
    .unwrap();
    let live = Table::new("li've\"; DROP TABLE victims; --").unwrap();
    let m = Archiver::new(
        &live.column::<i64>("i\"d").unwrap(),
        &live.column::<DateTime<Utc>>("at $1").unwrap(),
        &Table::new("arch\") ; --").unwrap(),
    )
    .batch_size(3);
    let report = m
        .run(
            &c,
            Utc::now() - Duration::days(10) - Duration::hours(1),
            |_| {},
        )
        .await
        .unwrap();
    assert_eq!(report.rows, 10); // 11..=20 days old
    let columns = m.prepare(&c).await.unwrap();
    let total = BuiltQuery::from(
        &Query::select()
            .expr(Expr::cust("count(*)"))
            .from_subquery(m.union_all(&columns).unwrap(), Alias::new("u"))
            .to_owned(),
    );
    assert_eq!(fetch::<(i64,), _>(&c, &total).await, vec![(20,)]);
    assert_eq!(count(&c, "SELECT count(*) FROM victims").await, 0);
    // The batched delete on the same hostile table.
    let purge = BatchDelete::new(
        &live.column::<i64>("i\"d").unwrap(),
        live.column::<i64>("i\"d").unwrap().gt(5),
        2,
    );
    // live kept ids 1..=10
    assert_eq!(purge.run(&c, |_| {}).await.unwrap().rows, 5);
    assert_eq!(fetch::<(i64,), _>(&c, &total).await, vec![(15,)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_delete_skips_locked_rows_and_a_rerun_finishes() {
    let schema = schema().await;
    let c = client(&schema).await;
    seed(&c, 500).await;
    let orders = Table::new("orders").unwrap();
    let id = orders.column::<i64>("id").unwrap();
    let user = orders.column::<i64>("user_id").unwrap();
    let note = orders.column::<String>("note").unwrap();
    // Retention: drop orders of users 0..10 without a note.
    let cond = pgpatterns::sea_query::Condition::all()
        .add(user.lt(10))
        .add(note.is_null());
    let expected = count(
        &c,
        "SELECT count(*) FROM orders WHERE user_id < 10 AND note IS NULL",
    )
    .await;
    assert!(expected > 2);
    let purge = BatchDelete::new(&id, cond, 7);
    // A live writer holds one matching row locked.
    let held: i64 = c
        .query_one(
            "SELECT min(id) FROM orders WHERE user_id < 10 AND note IS NULL",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let other = client(&schema).await;
    let mut holder = client(&schema).await;
    let tx = holder.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM orders WHERE id = $1 FOR UPDATE", &[&held])
        .await
        .unwrap();
    let mut progress = Vec::new();
    let report = tokio::time::timeout(
        StdDuration::from_secs(20),
        purge.run(&other, |p| progress.push(p.done)),
    )
    .await
    .expect("the delete must not wait for the locked row")
    .unwrap();
    assert_eq!(report.rows, expected as u64 - 1);
    assert_eq!(report.batches, (expected as u64 - 1).div_ceil(7) + 1);
    assert_eq!(progress.last(), Some(&report.rows));
    tx.rollback().await.unwrap();
    let rest = purge.run(&c, |_| {}).await.unwrap();
    assert_eq!(rest.rows, 1);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM orders WHERE user_id < 10 AND note IS NULL"
        )
        .await,
        0
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM orders").await,
        500 - expected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mover_skips_a_locked_row_and_a_rerun_moves_it() {
    let schema = schema().await;
    let c = client(&schema).await;
    seed(&c, 300).await;
    let m = mover(40);
    let before = everything(&c, &m).await;
    let cutoff = t0() + Duration::hours(201);
    let mut holder = client(&schema).await;
    let tx = holder.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM orders WHERE id = 7 FOR UPDATE", &[])
        .await
        .unwrap();
    let first = tokio::time::timeout(StdDuration::from_secs(20), m.run(&c, cutoff, |_| {}))
        .await
        .expect("the mover must not wait for a locked row")
        .unwrap();
    assert_eq!(first.rows, 199);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM orders WHERE created_at < '2024-01-09 09:00+00'"
        )
        .await,
        1
    );
    tx.rollback().await.unwrap();
    let second = m.run(&c, cutoff, |_| {}).await.unwrap();
    assert_eq!(second.rows, 1);
    check_exactly_once(&c, &m, cutoff, &before).await;
}

#[tokio::test]
async fn a_future_cutoff_is_refused_by_default_by_the_servers_clock() {
    let schema = schema().await;
    let c = client(&schema).await;
    seed(&c, 50).await;
    let refused = |r: Result<pgpatterns::ops::BatchReport, Error>| match r {
        Err(Error::InvalidSpec {
            field: "cutoff", ..
        }) => {}
        other => panic!("expected a refused cutoff, got {other:?}"),
    };
    refused(
        mover(10)
            .run(&c, Utc::now() + Duration::days(1), |_| {})
            .await,
    );
    refused(
        mover(10)
            .allow_future_cutoff()
            .forbid_future_cutoff()
            .run(&c, Utc::now() + Duration::minutes(5), |_| {})
            .await,
    );
    // Nothing moved, no archive created.
    assert_eq!(count(&c, "SELECT count(*) FROM orders").await, 50);
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM pg_class WHERE relname = 'orders_archive'"
        )
        .await,
        0
    );
    // A past cutoff is fine.
    assert_eq!(
        mover(10)
            .run(
                &c,
                t0() + Duration::hours(10) + Duration::minutes(1),
                |_| {}
            )
            .await
            .unwrap()
            .rows,
        10
    );

    // A `timestamp` column is compared in the session's time zone, as
    // `now()` stored into it by this session would be.
    c.batch_execute(
        "CREATE TABLE local_events (id bigint PRIMARY KEY, at timestamp NOT NULL);
         INSERT INTO local_events VALUES (1, localtimestamp - interval '1 day');",
    )
    .await
    .unwrap();
    let ev = Table::new("local_events").unwrap();
    let local = Archiver::new(
        &ev.column::<i64>("id").unwrap(),
        &ev.column::<chrono::NaiveDateTime>("at").unwrap(),
        &Table::new("local_events_archive").unwrap(),
    );
    let utc_now = Utc::now().naive_utc();
    // 14 hours ahead of UTC: UTC now + 1 h is 13 hours ago locally.
    c.batch_execute("SET TimeZone = 'Pacific/Kiritimati'")
        .await
        .unwrap();
    assert_eq!(
        local
            .run(&c, utc_now + Duration::hours(1), |_| {})
            .await
            .unwrap()
            .rows,
        1
    );
    // 10 hours behind UTC: UTC now - 1 h is 9 hours ahead locally.
    c.batch_execute("SET TimeZone = 'Pacific/Honolulu'")
        .await
        .unwrap();
    refused(local.run(&c, utc_now - Duration::hours(1), |_| {}).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowed_future_cutoff_ends_under_a_steady_writer_losing_nothing() {
    let schema = schema().await;
    let c = client(&schema).await;
    let n = 300;
    seed(&c, n).await;
    // Rows written now, as the writer's will be.
    c.execute(
        "UPDATE orders SET created_at = now() - id * interval '1 second'",
        &[],
    )
    .await
    .unwrap();
    let m = mover(7).allow_future_cutoff();
    m.prepare(&c).await.unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let writer = {
        let w = client(&schema).await;
        tokio::spawn(async move {
            // 20 rows a statement: faster than the mover's batches of 7,
            // so a run chasing new rows would never catch up.
            let mut id = n;
            while !*stop_rx.borrow() {
                w.execute(
                    "INSERT INTO orders SELECT $1::int8 + g, 1, 1, now(), 'during'
                     FROM generate_series(1, 20) g",
                    &[&id],
                )
                .await
                .unwrap();
                id += 20;
            }
            id
        })
    };
    while count(&c, "SELECT count(*) FROM orders WHERE note = 'during'").await < 20 {
        tokio::task::yield_now().await;
    }
    let run = tokio::time::timeout(
        StdDuration::from_secs(30),
        m.run(&c, Utc::now() + Duration::days(1), |_| {}),
    )
    .await
    .expect("the run must end while the writer keeps inserting")
    .unwrap();
    // The writer kept going during the whole run.
    let during = count(&c, "SELECT count(*) FROM orders WHERE note = 'during'").await;
    while count(&c, "SELECT count(*) FROM orders WHERE note = 'during'").await <= during {
        tokio::task::yield_now().await;
    }
    stop_tx.send(true).unwrap();
    let last = writer.await.unwrap();
    assert!(run.rows >= n as u64, "{run:?}");
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM orders JOIN orders_archive USING (id)"
        )
        .await,
        0,
        "a row is in both tables"
    );
    let ids: Vec<i64> = everything(&c, &m).await.iter().map(|r| r.0).collect();
    assert_eq!(
        ids,
        (1..=last).collect::<Vec<_>>(),
        "live + archive lost or duplicated rows"
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM orders_archive").await as u64,
        run.rows
    );
}
