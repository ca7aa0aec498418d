//! Range partitioning on a real server: no row lost or duplicated while
//! writers insert, update (the time column too) and delete during the whole
//! migration, with the mover killed mid-batch and mid-cutover; rollback
//! keeps every write; pruning and the top-N report; upkeep (premake,
//! detach with FINALIZE, archive, COPY round trip); refusals and hostile
//! names.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration as StdDuration;

use chrono::{DateTime, Duration, Utc};
use pgpatterns::ops::partition::copy::{checksum, export_csv, import_csv};
use pgpatterns::ops::partition::{Interval, Partitioner, Phase};
use pgpatterns::ops::TopN;
use pgpatterns::seed::shop::ShopSeed;
use pgpatterns::testdb::TestSchema;
use pgpatterns::{explain, table, Error, Table};
use tokio_postgres::Client;

use crate::support::{client, schema, Rng};

async fn named(schema: &TestSchema, name: &str) -> Client {
    let mut cfg = schema.config();
    cfg.application_name(name);
    let (c, conn) = cfg.connect(tokio_postgres::NoTls).await.expect("connect");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    c
}

async fn one_i64(c: &Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

async fn one_text(c: &Client, sql: &str) -> String {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

/// Waits until the backend named `app` waits on a lock, then kills it.
async fn kill_when_waiting(c: &Client, app: &str) {
    for _ in 0..500 {
        let n: i64 = c
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'",
                &[&app],
            )
            .await
            .unwrap()
            .get(0);
        if n > 0 {
            c.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
                &[&app],
            )
            .await
            .unwrap();
            return;
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    panic!("{app} never waited on a lock");
}

fn t0() -> DateTime<Utc> {
    Utc::now() - Duration::days(730)
}

const ORDERS: &str = "
CREATE TABLE users (id bigint PRIMARY KEY);
INSERT INTO users SELECT g FROM generate_series(1, 50) g;
CREATE TABLE orders (
    id bigserial PRIMARY KEY,
    user_id bigint NOT NULL REFERENCES users (id),
    amount numeric(12, 2) NOT NULL CHECK (amount >= 0),
    status text NOT NULL DEFAULT 'pending',
    created_at timestamptz NOT NULL,
    note text);
CREATE INDEX orders_created ON orders (created_at);
CREATE INDEX orders_user_created ON orders (user_id, created_at DESC) WHERE status <> 'cancelled';
CREATE TABLE expected (LIKE orders);";

async fn seed_orders(c: &Client, n: i64) {
    c.batch_execute(ORDERS).await.unwrap();
    c.execute(
        "INSERT INTO orders (user_id, amount, status, created_at, note)
         SELECT 1 + g % 50, (g % 1000) / 10.0, (ARRAY['completed','pending','cancelled'])[1 + g % 3],
                $2::timestamptz + (g * 727.0 / $1::int8) * interval '1 day',
                CASE WHEN g % 7 = 0 THEN NULL ELSE 'n' || g END
         FROM generate_series(1, $1::int8) g",
        &[&n, &t0()],
    )
    .await
    .unwrap();
    c.batch_execute("INSERT INTO expected SELECT * FROM orders; ANALYZE orders")
        .await
        .unwrap();
}

/// Random writes, each applied to `orders` and to `expected` in one
/// transaction: `expected` is the reference the partitioned table must
/// equal. Lock and connection errors (the cutover, a killed mover) are
/// retried by simply going on.
fn writer(mut c: Client, stop: Arc<AtomicBool>, seed: u64) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut rng = Rng(seed);
        let mut done = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let id = 1 + rng.below(3_000) as i64;
            let days = rng.below(60) as i64 - 30;
            let op = rng.below(10);
            let tx = match c.transaction().await {
                Ok(tx) => tx,
                Err(_) => break,
            };
            let r = async {
                match op {
                    0..=3 => {
                        let row = tx
                            .query_one(
                                "INSERT INTO orders (user_id, amount, created_at, note)
                                 VALUES (1 + $1::int8 % 50, 1.5, now() - $2::int8 * interval '1 day', 'w')
                                 RETURNING id",
                                &[&id, &(days.abs() * 10)],
                            )
                            .await?;
                        let new_id: i64 = row.get(0);
                        tx.execute(
                            "INSERT INTO expected SELECT * FROM orders WHERE id = $1",
                            &[&new_id],
                        )
                        .await?;
                    }
                    4..=5 => {
                        for t in ["orders", "expected"] {
                            tx.execute(
                                &format!("UPDATE {t} SET amount = amount + 1, note = 'u' WHERE id = $1"),
                                &[&id],
                            )
                            .await?;
                        }
                    }
                    6..=7 => {
                        // Moves the row to another partition.
                        for t in ["orders", "expected"] {
                            tx.execute(
                                &format!(
                                    "UPDATE {t} SET created_at = created_at + $2::int8 * interval '1 day' WHERE id = $1"
                                ),
                                &[&id, &days],
                            )
                            .await?;
                        }
                    }
                    _ => {
                        for t in ["orders", "expected"] {
                            tx.execute(&format!("DELETE FROM {t} WHERE id = $1"), &[&id])
                                .await?;
                        }
                    }
                }
                Ok::<_, tokio_postgres::Error>(())
            }
            .await;
            if r.is_ok() && tx.commit().await.is_ok() {
                done += 1;
            }
            tokio::time::sleep(StdDuration::from_millis(1)).await;
        }
        done
    })
}

async fn same_content(c: &Client, a: &str, b: &str) {
    let hash = |t: &str| {
        format!("SELECT coalesce(md5(string_agg(x::text, ',' ORDER BY id)), '') || ':' || count(*) FROM {t} AS x")
    };
    let ha = one_text(c, &hash(a)).await;
    let hb = one_text(c, &hash(b)).await;
    assert_eq!(ha, hb, "{a} and {b} differ");
}

fn orders_partitioner(batch: i64) -> Partitioner<i64, DateTime<Utc>> {
    let orders = table!("orders");
    Partitioner::new(
        &orders.column::<i64>("id").unwrap(),
        &orders.column::<DateTime<Utc>>("created_at").unwrap(),
        Interval::MONTH,
    )
    .batch_size(batch)
}

async fn relkind(c: &Client, name: &str) -> String {
    c.query_one(
        "SELECT coalesce((SELECT relkind::text FROM pg_class WHERE oid = to_regclass(quote_ident($1))), '')",
        &[&name],
    )
    .await
    .unwrap()
    .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_loss_under_writers_with_kills_cutover_and_rollback() {
    let schema = schema().await;
    let c = client(&schema).await;
    seed_orders(&c, 3_000).await;
    let app = format!("mover_{}", schema.name());
    let parts = orders_partitioner(150).lock_timeout(StdDuration::from_secs(20));

    let plan = parts.plan(&c).await.unwrap();
    assert!(plan.partitions().len() >= 25, "{}", plan.partitions().len());
    assert!(
        plan.notes().iter().any(|n| n.contains("primary key")),
        "{:?}",
        plan.notes()
    );
    let sql = plan.to_sql();
    assert!(sql.contains("PARTITION BY RANGE (\"created_at\")"), "{sql}");
    assert!(sql.contains("FOR SHARE"), "{sql}");

    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for seed in 1..=2 {
        writers.push(writer(client(&schema).await, stop.clone(), seed * 7919));
    }

    // Prepare, then a copy killed while its batch waits on a locked row.
    let mut mover = named(&schema, &app).await;
    parts.prepare(&mut mover).await.unwrap();
    assert_eq!(
        parts.status(&c).await.unwrap().unwrap().phase,
        Phase::Copying
    );
    let mut blocker = client(&schema).await;
    let tx = blocker.transaction().await.unwrap();
    tx.execute("SELECT 1 FROM orders WHERE id = 1500 FOR UPDATE", &[])
        .await
        .unwrap();
    let copying = {
        let parts = parts.clone();
        tokio::spawn(async move { parts.copy(&mover, |_| {}).await })
    };
    kill_when_waiting(&c, &app).await;
    assert!(copying.await.unwrap().is_err(), "the killed copy must fail");
    tx.rollback().await.unwrap();
    let status = parts.status(&c).await.unwrap().unwrap();
    assert_eq!(status.phase, Phase::Copying);
    assert!(
        status.copied >= 150,
        "batches before the lock stay copied: {status:?}"
    );

    // Resume the copy; then a cutover killed while it holds the old table
    // and waits for the twin.
    let mover = named(&schema, &app).await;
    let report = parts.copy(&mover, |_| {}).await.unwrap();
    assert!(report.rows > 0);
    assert_eq!(
        parts.status(&c).await.unwrap().unwrap().phase,
        Phase::Copied
    );
    let mut blocker = client(&schema).await;
    let tx = blocker.transaction().await.unwrap();
    tx.batch_execute(&format!(
        "LOCK TABLE {} IN ACCESS SHARE MODE",
        plan.twin().name().as_str()
    ))
    .await
    .unwrap();
    let cutting = {
        let parts = parts.clone();
        let mut mover = mover;
        tokio::spawn(async move { parts.cutover(&mut mover).await })
    };
    kill_when_waiting(&c, &app).await;
    assert!(cutting.await.unwrap().is_err());
    tx.rollback().await.unwrap();
    assert_eq!(
        parts.status(&c).await.unwrap().unwrap().phase,
        Phase::Copied
    );
    assert_eq!(relkind(&c, "orders").await, "r");

    // Resume: the whole migration carries on and cuts over.
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    let mut mover = named(&schema, &app).await;
    let done = parts.migrate(&mut mover, |_| {}).await.unwrap();
    assert_eq!(done.cutover.attempts, 1);
    assert_eq!(relkind(&c, "orders").await, "p");
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let mut writes = 0;
    for w in writers.drain(..) {
        writes += w.await.unwrap();
    }
    assert!(writes > 50, "writers made {writes} writes");
    same_content(&c, "orders", "expected").await;
    // The reverse mirror kept the old table current.
    same_content(&c, plan.retired().name().as_str(), "expected").await;
    // The serial sequence moved with the column: new rows get fresh ids.
    let owner = one_text(
        &c,
        "SELECT coalesce(pg_get_serial_sequence('orders', 'id'), '')",
    )
    .await;
    assert!(owner.ends_with("orders_id_seq"), "{owner}");
    c.execute(
        "INSERT INTO orders (user_id, amount, created_at) VALUES (1, 1, now())",
        &[],
    )
    .await
    .unwrap();
    c.execute(
        "INSERT INTO expected SELECT * FROM orders WHERE id = (SELECT max(id) FROM orders)",
        &[],
    )
    .await
    .unwrap();

    // Rollback with writers running: every write after the cutover is kept.
    stop.store(false, Ordering::Relaxed);
    for seed in 3..=4 {
        writers.push(writer(client(&schema).await, stop.clone(), seed * 104_729));
    }
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    assert_eq!(
        parts.rollback(&mut mover).await.unwrap(),
        Some(Phase::Copied)
    );
    tokio::time::sleep(StdDuration::from_millis(300)).await;
    assert_eq!(relkind(&c, "orders").await, "r");
    // Cut over again while they write, then stop them.
    parts.cutover(&mut mover).await.unwrap();
    tokio::time::sleep(StdDuration::from_millis(200)).await;
    stop.store(true, Ordering::Relaxed);
    for w in writers {
        w.await.unwrap();
    }
    same_content(&c, "orders", "expected").await;
    same_content(&c, plan.retired().name().as_str(), "expected").await;
    assert_eq!(relkind(&c, "orders").await, "p");

    parts.finish(&mut mover, true).await.unwrap();
    assert_eq!(relkind(&c, plan.retired().name().as_str()).await, "");
    assert!(parts.status(&c).await.unwrap().is_none());
    same_content(&c, "orders", "expected").await;
}

#[tokio::test]
async fn rollback_before_the_cutover_drops_only_the_twin() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    seed_orders(&c, 200).await;
    let parts = orders_partitioner(50);
    let plan = parts.prepare(&mut c).await.unwrap();
    assert_eq!(relkind(&c, plan.twin().name().as_str()).await, "p");
    assert_eq!(parts.rollback(&mut c).await.unwrap(), None);
    assert_eq!(relkind(&c, plan.twin().name().as_str()).await, "");
    assert!(parts.status(&c).await.unwrap().is_none());
    same_content(&c, "orders", "expected").await;
    // No trigger left behind: writes work and are not mirrored anywhere.
    c.execute("DELETE FROM orders WHERE id = 1", &[])
        .await
        .unwrap();
    let err = parts.cutover(&mut c).await.unwrap_err();
    assert!(matches!(err, Error::InvalidSpec { .. }), "{err}");
}

#[tokio::test]
async fn refusals_are_typed_and_name_the_culprit() {
    // Bad input: errors before any SQL (no database needed).
    let orders = table!("orders");
    let id = orders.column::<i64>("id").unwrap();
    let at = orders.column::<DateTime<Utc>>("created_at").unwrap();
    for bad in [Interval::Days(0), Interval::Months(-1)] {
        let e = Partitioner::new(&id, &at, bad).check().unwrap_err();
        assert!(
            matches!(
                e,
                Error::InvalidSpec {
                    field: "interval",
                    ..
                }
            ),
            "{e}"
        );
    }
    assert!(Partitioner::new(&id, &at, Interval::DAY)
        .batch_size(0)
        .check()
        .is_err());
    let other = table!("other").column::<DateTime<Utc>>("at").unwrap();
    assert!(Partitioner::new(&id, &other, Interval::DAY)
        .check()
        .is_err());

    let schema = schema().await;
    let mut c = client(&schema).await;
    // A cutoff in the future is refused before any SQL: the table does not
    // even exist.
    let e = Partitioner::new(&id, &at, Interval::MONTH)
        .detach_older_than(&mut c, Utc::now() + Duration::days(1))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::InvalidSpec {
                field: "cutoff",
                ..
            }
        ),
        "{e}"
    );

    c.batch_execute(
        "CREATE TABLE nopk (id bigint NOT NULL, created_at timestamptz NOT NULL);
         CREATE TABLE nulltime (id bigint PRIMARY KEY, created_at timestamptz);
         CREATE TABLE inttime (id bigint PRIMARY KEY, created_at int8 NOT NULL);
         CREATE TABLE parent (id bigint PRIMARY KEY, created_at timestamptz NOT NULL);
         CREATE TABLE child (id bigint PRIMARY KEY, parent_id bigint CONSTRAINT child_parent_fk REFERENCES parent (id));
         CREATE TABLE viewed (id bigint PRIMARY KEY, created_at timestamptz NOT NULL);
         CREATE VIEW recent_viewed AS SELECT * FROM viewed;",
    )
    .await
    .unwrap();
    let refuse = |name: &'static str| {
        let t = Table::new(name).unwrap();
        Partitioner::new(
            &t.column::<i64>("id").unwrap(),
            &t.column::<DateTime<Utc>>("created_at").unwrap(),
            Interval::MONTH,
        )
    };
    let msg = |e: Error| {
        assert!(matches!(e, Error::InvalidSpec { .. }), "{e}");
        e.to_string()
    };
    let e = msg(refuse("nopk").plan(&c).await.unwrap_err());
    assert!(e.contains("no primary key"), "{e}");
    let e = msg(refuse("nulltime").plan(&c).await.unwrap_err());
    assert!(e.contains("allows NULL"), "{e}");
    let e = msg(refuse("inttime").plan(&c).await.unwrap_err());
    assert!(e.contains("bigint, not timestamp with time zone"), "{e}");
    let e = msg(refuse("parent").plan(&c).await.unwrap_err());
    assert!(e.contains("child_parent_fk") && e.contains("child"), "{e}");
    let e = msg(refuse("viewed").plan(&c).await.unwrap_err());
    assert!(e.contains("recent_viewed"), "{e}");
    let e = msg(refuse("missing").plan(&c).await.unwrap_err());
    assert!(e.contains("does not exist"), "{e}");
    // Refused migrations leave nothing behind.
    assert!(refuse("parent").prepare(&mut c).await.is_err());
    assert_eq!(relkind(&c, "pgpatterns_partition_state").await, "");
    // Already partitioned.
    c.batch_execute("CREATE TABLE done (id bigint, created_at timestamptz NOT NULL, PRIMARY KEY (id, created_at)) PARTITION BY RANGE (created_at)")
        .await
        .unwrap();
    let e = msg(refuse("done").plan(&c).await.unwrap_err());
    assert!(e.contains("already partitioned"), "{e}");
}

#[tokio::test]
async fn hostile_names_identity_columns_and_foreign_keys_out() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute(
        r#"CREATE TABLE "we""ird $users" (id int8 PRIMARY KEY);
           INSERT INTO "we""ird $users" VALUES (1), (2);
           CREATE TABLE "new ""order""$" (
               "old" int8 GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
               "new" text NOT NULL DEFAULT 'n',
               "found" int8 REFERENCES "we""ird $users" (id),
               "select" timestamptz NOT NULL,
               "a""b" int4 CHECK ("a""b" >= 0),
               twice int8 GENERATED ALWAYS AS ("old" * 2) STORED);
           CREATE INDEX "idx ""x""" ON "new ""order""$" (lower("new"), "select" DESC);
           INSERT INTO "new ""order""$" ("new", "found", "select", "a""b")
           SELECT 'v' || g, 1 + g % 2, now() - g * interval '5 days', g FROM generate_series(1, 60) g;"#,
    )
    .await
    .unwrap();
    let t = Table::new("new \"order\"$").unwrap();
    let parts = Partitioner::new(
        &t.column::<i64>("old").unwrap(),
        &t.column::<DateTime<Utc>>("select").unwrap(),
        Interval::QUARTER,
    )
    .batch_size(7);
    let before = one_text(
        &c,
        r#"SELECT md5(string_agg(x::text, ',' ORDER BY "old")) FROM "new ""order""$" x"#,
    )
    .await;
    let plan = parts.plan(&c).await.unwrap();
    assert!(plan.columns().iter().all(|c| c.as_str() != "twice"));
    parts.migrate(&mut c, |_| {}).await.unwrap();
    assert_eq!(relkind(&c, "new \"order\"$").await, "p");
    let after = one_text(
        &c,
        r#"SELECT md5(string_agg(x::text, ',' ORDER BY "old")) FROM "new ""order""$" x"#,
    )
    .await;
    assert_eq!(before, after);
    // The identity continues after the copied ids; the reverse mirror
    // copies the new row (identity ALWAYS) into the old table.
    let id: i64 = c
        .query_one(
            r#"INSERT INTO "new ""order""$" ("found", "select") VALUES (2, now()) RETURNING "old""#,
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, 61);
    c.execute(r#"UPDATE "new ""order""$" SET "select" = "select" - interval '1 year', "new" = 'moved' WHERE "old" = 3"#, &[])
        .await
        .unwrap();
    // The foreign key came along.
    let fk = c
        .execute(
            r#"INSERT INTO "new ""order""$" ("found", "select") VALUES (99, now())"#,
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(fk.code().unwrap().code(), "23503");
    // Roll back: the old table has the writes, and its identity continues too.
    assert_eq!(parts.rollback(&mut c).await.unwrap(), Some(Phase::Copied));
    assert_eq!(relkind(&c, "new \"order\"$").await, "r");
    let moved = one_text(&c, r#"SELECT "new" FROM "new ""order""$" WHERE "old" = 3"#).await;
    assert_eq!(moved, "moved");
    let id: i64 = c
        .query_one(
            r#"INSERT INTO "new ""order""$" ("found", "select") VALUES (2, now()) RETURNING "old""#,
            &[],
        )
        .await
        .unwrap()
        .get(0);
    // 62 went to the insert the foreign key refused.
    assert_eq!(id, 63);
    // And drop the twin: nothing of the migration is left.
    assert_eq!(parts.rollback(&mut c).await.unwrap(), None);
    assert_eq!(relkind(&c, plan.twin().name().as_str()).await, "");
    let triggers = one_i64(&c, "SELECT count(*) FROM pg_trigger WHERE NOT tgisinternal").await;
    assert_eq!(triggers, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruning_and_the_top_n_report() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    let now = Utc::now();
    let seed = ShopSeed::new(6_000)
        .users(300)
        .days(400)
        .now(now)
        .logged(true);
    seed.run(&c, |_| {}).await.unwrap();
    let t = seed.tables();
    let since = now - Duration::days(30);
    let report = TopN::new(&t.user_id, &t.order_user_id, &t.total_amount, 10)
        .extra(&t.username)
        .window_since(&t.order_created_at, since)
        .where_eq(&t.status, "completed");
    let before = report.fetch_all(&c).await.unwrap();
    assert_eq!(before.len(), 10);
    let parts = Partitioner::new(&t.order_id, &t.order_created_at, Interval::MONTH);
    parts.migrate(&mut c, |_| {}).await.unwrap();
    c.batch_execute("ANALYZE shop_orders").await.unwrap();
    let after = report.fetch_all(&c).await.unwrap();
    assert_eq!(format!("{before:?}"), format!("{after:?}"));

    let all = parts.partitions(&c).await.unwrap();
    assert!(all.len() >= 15);
    let live: Vec<String> = all
        .iter()
        .filter(|p| p.is_default || p.to.is_some_and(|to| to > since))
        .map(|p| p.table.name().as_str().to_owned())
        .collect();
    let plan = explain::explain(&c, &report.build().unwrap())
        .await
        .unwrap();
    let scanned: Vec<String> = plan
        .nodes()
        .iter()
        .filter_map(|n| n.relation.clone())
        .filter(|r| r.starts_with("shop_orders_p") || r == "shop_orders_default")
        .collect();
    assert!(!scanned.is_empty(), "{plan}");
    for r in &scanned {
        assert!(live.contains(r), "{r} is older than the window:\n{plan}");
    }
    assert!(scanned.len() < all.len() / 2, "{plan}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn premake_detach_finalize_archive_and_export() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute(
        "CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz NOT NULL, payload text);
         INSERT INTO events SELECT g, now() - (g % 200) * interval '1 day', 'p' || g FROM generate_series(1, 2000) g;",
    )
    .await
    .unwrap();
    let events = table!("events");
    let parts = Partitioner::new(
        &events.column::<i64>("id").unwrap(),
        &events.column::<DateTime<Utc>>("at").unwrap(),
        Interval::MONTH,
    )
    .default_partition(false)
    .premake(1);
    parts.migrate(&mut c, |_| {}).await.unwrap();
    parts.finish(&mut c, true).await.unwrap();
    let before = parts.partitions(&c).await.unwrap();
    assert!(before
        .iter()
        .all(|p| !p.is_default && p.from.is_some() && p.to.is_some()));

    // Two cron jobs at once: every partition is made once.
    let more = parts.clone().premake(4);
    let (mut a, mut b) = (client(&schema).await, client(&schema).await);
    let (ra, rb) = tokio::join!(
        more.premake_partitions(&mut a),
        more.premake_partitions(&mut b)
    );
    let mut made: Vec<Table> = ra.unwrap().into_iter().chain(rb.unwrap()).collect();
    made.sort_by(|x, y| x.name().cmp(y.name()));
    made.dedup();
    assert_eq!(
        made.len(),
        3,
        "premake(1) made one ahead already, premake(4) adds three"
    );
    assert!(more.premake_partitions(&mut a).await.unwrap().is_empty());
    let all = parts.partitions(&c).await.unwrap();
    assert_eq!(all.len(), before.len() + 3);
    for w in all.windows(2) {
        assert_eq!(w[0].to, w[1].from, "contiguous bounds");
    }

    // A detach killed while it waits for an old snapshot stays pending;
    // the next run finalizes it.
    let cutoff = Utc::now() - Duration::days(100);
    let app = format!("detacher_{}", schema.name());
    let mut reader = client(&schema).await;
    let snap = reader.transaction().await.unwrap();
    snap.batch_execute(
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM events",
    )
    .await
    .unwrap();
    let detaching = {
        let parts = parts.clone();
        let mut d = named(&schema, &app).await;
        tokio::spawn(async move { parts.detach_older_than(&mut d, cutoff).await })
    };
    for _ in 0..500 {
        let n = one_i64(&c, &format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app}' AND wait_event_type IS NOT NULL AND state = 'active'"
        ))
        .await;
        if n > 0 {
            break;
        }
        tokio::time::sleep(StdDuration::from_millis(10)).await;
    }
    c.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
        &[&app],
    )
    .await
    .unwrap();
    assert!(detaching.await.unwrap().is_err());
    snap.rollback().await.unwrap();
    let pending: Vec<_> = parts
        .partitions(&c)
        .await
        .unwrap()
        .into_iter()
        .filter(|p| p.detach_pending)
        .collect();
    assert_eq!(pending.len(), 1, "one detach left half done");
    let total = one_i64(&c, "SELECT count(*) FROM events").await;
    let detached = parts.detach_older_than(&mut c, cutoff).await.unwrap();
    assert!(!detached.is_empty());
    let left = parts.partitions(&c).await.unwrap();
    assert!(left.iter().all(|p| !p.detach_pending));
    assert!(left.iter().all(|p| p.to.unwrap() > cutoff));
    assert!(!left.iter().any(|p| p.table == pending[0].table));

    // Archive them, and read live + archive as one.
    let archive = table!("events_archive");
    assert!(
        detached.iter().any(|d| d.table == pending[0].table),
        "the finalized one is reported"
    );
    let detached_all = detached.clone();
    for d in &detached_all {
        parts.archive_partition(&mut c, d, &archive).await.unwrap();
    }
    let union = pgpatterns::BuiltQuery::from(&parts.union_all(&archive).unwrap());
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM ({}) u", union.sql()), &[])
        .await
        .unwrap()
        .get(0);
    let live = one_i64(&c, "SELECT count(*) FROM events").await;
    assert_eq!(n, 2000);
    assert!(live < total);

    // Cold export of one archived partition and back.
    let part = &detached_all[0].table;
    let mut csv = Vec::new();
    let out = export_csv(&c, part, &mut csv).await.unwrap();
    assert!(out.rows > 0 && out.bytes == csv.len() as u64);
    c.batch_execute(&format!(
        "CREATE TABLE restored (LIKE {} INCLUDING ALL)",
        part.name().as_str()
    ))
    .await
    .unwrap();
    let back = import_csv(&c, &table!("restored"), &mut csv.as_slice())
        .await
        .unwrap();
    assert_eq!(
        (back.rows, back.checksum.clone()),
        (out.rows, out.checksum.clone())
    );
    assert_eq!(checksum(&c, part).await.unwrap(), (out.rows, out.checksum));
}

/// The families read a partitioned history exactly as the plain one: every
/// latest strategy, a rollup and every since strategy give the same answers
/// before and after `order_status` is partitioned by month.
#[tokio::test]
async fn every_family_reads_the_partitioned_table_alike() {
    use pgpatterns::seed::orders::{OrdersSeed, OrdersTables};
    use pgpatterns::{
        Agg, Dim, LatestStrategy, Metric, PageRequest, Relation, Rollup, SinceGraph, SinceStrategy,
    };
    let schema = schema().await;
    let mut c = client(&schema).await;
    let now = Utc::now();
    // An UNLOGGED table (the seeders' default) is refused before any SQL
    // changes anything: PostgreSQL cannot partition it.
    OrdersSeed::new(100).run(&c, |_| {}).await.unwrap();
    let t = OrdersTables::default();
    let parts = Partitioner::new(&t.status_id, &t.status_created_at, Interval::MONTH);
    match parts.plan(&c).await {
        Err(Error::InvalidSpec {
            field: "table",
            reason,
        }) => {
            assert!(reason.contains("UNLOGGED"), "{reason}")
        }
        other => panic!("expected the UNLOGGED refusal, got {other:?}"),
    }
    let seed = OrdersSeed::new(3_000).now(now).logged(true).replace(true);
    seed.run(&c, |_| {}).await.unwrap();
    let latest = t.latest().status_eq("Complete");
    let status = Dim::new(&t.status);
    let report = Rollup::new(&t.order_status)
        .rollup(&status)
        .metric(&Metric::new("rows", Agg::count_all()));
    let graph = SinceGraph::new(&t.order_id, &t.order_created_at).related(
        "statuses",
        Relation::new(&t.status_order_id, &t.order_id),
        &t.status_created_at,
    );
    let since = graph.since(now - Duration::days(60));

    async fn answers(
        c: &Client,
        latest: &pgpatterns::LatestStatus<String>,
        report: &Rollup,
        since: &pgpatterns::SinceQuery<i64>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for s in LatestStrategy::FROM_HISTORY {
            let spec = latest.clone().strategy(s);
            let n = spec.count(c).await.unwrap();
            let page = spec
                .fetch_page::<(), i64>(c, &PageRequest::new(50))
                .await
                .unwrap();
            out.push(format!("latest {s:?}: {n} {:?}", page.keys));
        }
        let rows = report.fetch_all(c).await.unwrap();
        out.push(format!("rollup: {}", pgpatterns::RollupTable::new(&rows)));
        for s in SinceStrategy::ALL {
            let n = since.clone().strategy(s).count(c).await.unwrap();
            out.push(format!("since {s:?}: {n}"));
        }
        out
    }

    let before = answers(&c, &latest, &report, &since).await;
    assert!(before[0].starts_with("latest DistinctOn: ") && !before[0].contains(": 0 "));
    let parts = Partitioner::new(&t.status_id, &t.status_created_at, Interval::MONTH);
    parts.migrate(&mut c, |_| {}).await.unwrap();
    c.batch_execute("ANALYZE order_status").await.unwrap();
    assert_eq!(relkind(&c, "order_status").await, "p");
    let after = answers(&c, &latest, &report, &since).await;
    assert_eq!(before, after);
}

/// `TRUNCATE` of the old table during the copy empties the twin too, and a
/// `TRUNCATE` of the partitioned table after the cutover reaches the kept
/// old table, so a rollback cannot bring rows back.
#[tokio::test]
async fn truncate_is_mirrored_both_ways() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    seed_orders(&c, 500).await;
    let parts = orders_partitioner(100);
    let plan = parts.prepare(&mut c).await.unwrap();
    parts.copy(&c, |_| {}).await.unwrap();
    assert_eq!(
        one_i64(&c, &format!("SELECT count(*) FROM {}", plan.twin().name())).await,
        500
    );
    c.batch_execute(
        "TRUNCATE orders;
         INSERT INTO orders (user_id, amount, status, created_at, note)
         VALUES (7, 1.5, 'pending', '2024-03-01', 'after truncate')",
    )
    .await
    .unwrap();
    assert_eq!(
        one_i64(&c, &format!("SELECT count(*) FROM {}", plan.twin().name())).await,
        1
    );
    parts.cutover(&mut c).await.unwrap();
    assert_eq!(relkind(&c, "orders").await, "p");
    assert_eq!(one_i64(&c, "SELECT count(*) FROM orders").await, 1);
    same_content(&c, "orders", plan.retired().name().as_str()).await;
    // After the cutover the reverse mirror carries a TRUNCATE back.
    c.batch_execute("TRUNCATE orders").await.unwrap();
    assert_eq!(
        one_i64(
            &c,
            &format!("SELECT count(*) FROM {}", plan.retired().name())
        )
        .await,
        0
    );
    parts.rollback(&mut c).await.unwrap();
    assert_eq!(relkind(&c, "orders").await, "r");
    assert_eq!(one_i64(&c, "SELECT count(*) FROM orders").await, 0);
}
