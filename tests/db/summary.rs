//! Maintained summary tables: the summary equals re-aggregating the base
//! after random writes (groups and buckets changed, NULL keys, times and
//! amounts, deletes, TRUNCATE) and under concurrent writers; window queries
//! and top-N reports from the summary equal the same queries on the base;
//! hostile names, idempotent install, uninstall, refusal to replace objects
//! pgpatterns did not create; buckets independent of the session time zone.

use chrono::{DateTime, Duration, NaiveDate, NaiveDateTime, TimeZone, Utc};
use pgpatterns::ops::summary::{Bucket, Measure, Summary};
use pgpatterns::ops::TopN;
use pgpatterns::{BuiltQuery, Column, Error, Executor, Table};
use rust_decimal::Decimal;

use crate::support::{client, schema, with_sync_client, Rng};

/// Midnight UTC, the middle of the generated times.
fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 10, 0, 0, 0).unwrap()
}

const STATUSES: [&str; 3] = ["completed", "pending", "refunded"];
const TOTALS: [&str; 4] = ["5.00", "10.00", "12.50", "20.00"];

const CREATE_ORDERS: &str = "
CREATE TABLE orders (id bigint PRIMARY KEY, user_id bigint, status text, total numeric(12,2),
                     qty int4, created_at timestamptz);
CREATE INDEX ON orders (created_at);
CREATE TABLE users (id bigint PRIMARY KEY, name text NOT NULL);
INSERT INTO users SELECT g, 'user' || g FROM generate_series(1, 12) g;";

/// Handles of the `orders` table.
struct Orders {
    users: Table,
    user_pk: Column<i64>,
    user_id: Column<i64>,
    status: Column<String>,
    total: Column<Decimal>,
    qty: Column<i32>,
    created_at: Column<DateTime<Utc>>,
}

fn orders() -> Orders {
    let t = Table::new("orders").unwrap();
    let users = Table::new("users").unwrap();
    Orders {
        user_pk: users.column("id").unwrap(),
        users,
        user_id: t.column("user_id").unwrap(),
        status: t.column("status").unwrap(),
        total: t.column("total").unwrap(),
        qty: t.column("qty").unwrap(),
        created_at: t.column("created_at").unwrap(),
    }
}

fn summary_of(o: &Orders) -> Summary {
    Summary::new(&o.created_at, Bucket::Day)
        .key(&o.user_id)
        .key(&o.status)
        .measure(Measure::sum(&o.total, "total"))
        .measure(Measure::sum(&o.qty, "qty"))
        .measure(Measure::count(&o.total, "priced"))
        .named("orders_daily")
}

/// A schema with the orders table, and [`summary_of`] it installed.
async fn installed() -> (
    pgpatterns::testdb::TestSchema,
    tokio_postgres::Client,
    Orders,
    Summary,
) {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute(CREATE_ORDERS).await.unwrap();
    let o = orders();
    let s = summary_of(&o);
    s.install(&mut c).await.unwrap();
    (schema, c, o, s)
}

/// One random `orders` row as an SQL tuple: NULL keys, amounts and times
/// now and then, amounts from a small set (ties), times within 40 days
/// before and 5 days after [`t0`], some exactly on a bucket boundary.
fn random_row(rng: &mut Rng, id: i64) -> String {
    let user = if rng.chance(10) {
        "NULL".to_owned()
    } else {
        (1 + rng.below(12)).to_string()
    };
    let status = if rng.chance(10) {
        "NULL".to_owned()
    } else {
        format!("'{}'", STATUSES[rng.below(3) as usize])
    };
    let total = if rng.chance(8) {
        "NULL"
    } else {
        TOTALS[rng.below(4) as usize]
    };
    let qty = if rng.chance(8) {
        "NULL".to_owned()
    } else {
        (1 + rng.below(5)).to_string()
    };
    let at = if rng.chance(15) {
        "NULL".to_owned()
    } else {
        let day = rng.below(45) as i64 - 40;
        let secs = if rng.chance(6) {
            0
        } else {
            rng.below(86_400) as i64
        };
        let t = t0() + Duration::days(day) + Duration::seconds(secs);
        format!("'{}'::timestamptz", t.to_rfc3339())
    };
    format!("({id}, {user}, {status}, {total}, {qty}, {at})")
}

async fn insert_random(c: &tokio_postgres::Client, rng: &mut Rng, first: i64, n: i64) {
    let rows: Vec<String> = (first..first + n).map(|id| random_row(rng, id)).collect();
    c.batch_execute(&format!("INSERT INTO orders VALUES {}", rows.join(", ")))
        .await
        .unwrap();
}

/// A random set-based write: moves between groups and buckets, amounts and
/// times to and from NULL, deletes, an update that changes nothing.
fn random_write(rng: &mut Rng, next_id: &mut i64) -> String {
    let k = rng.below(7);
    match rng.below(9) {
        0 => {
            let n = 1 + rng.below(20) as i64;
            let rows: Vec<String> = (*next_id..*next_id + n)
                .map(|id| random_row(rng, id))
                .collect();
            *next_id += n;
            format!("INSERT INTO orders VALUES {}", rows.join(", "))
        }
        1 => format!(
            "UPDATE orders SET user_id = {} WHERE id % 7 = {k}",
            if rng.chance(4) {
                "NULL".to_owned()
            } else {
                (1 + rng.below(12)).to_string()
            }
        ),
        2 => format!(
            "UPDATE orders SET created_at = created_at + interval '{} hours' WHERE id % 5 = {}",
            rng.below(30) as i64 - 15,
            k % 5
        ),
        3 => format!("UPDATE orders SET total = NULL WHERE id % 6 = {}", k % 6),
        4 => format!(
            "UPDATE orders SET total = {}, created_at = coalesce(created_at, '{}'::timestamptz) \
             WHERE (total IS NULL OR created_at IS NULL) AND id % 3 = {}",
            TOTALS[rng.below(4) as usize],
            (t0() - Duration::hours(rng.below(100) as i64)).to_rfc3339(),
            k % 3
        ),
        5 => format!("UPDATE orders SET created_at = NULL WHERE id % 11 = {k}"),
        6 => format!(
            "UPDATE orders SET status = {}, qty = NULL WHERE id % 4 = {}",
            if rng.chance(3) {
                "NULL".to_owned()
            } else {
                format!("'{}'", STATUSES[rng.below(3) as usize])
            },
            k % 4
        ),
        7 => format!("DELETE FROM orders WHERE id % 9 = {k}"),
        _ => "UPDATE orders SET qty = qty, total = total".to_owned(),
    }
}

type WindowRow = (Option<i64>, i64, Option<Decimal>, Option<i64>, i64);

/// The window by user (top 5 by total when `top`), from the summary and
/// from the base, for `[since, until)`.
async fn window_both(
    c: &tokio_postgres::Client,
    s: &Summary,
    o: &Orders,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    top: bool,
) -> (Vec<WindowRow>, Vec<WindowRow>) {
    let mut w = s.window().by(&o.user_id).where_eq(&o.status, "completed");
    if let Some(since) = since {
        w = w.since(since);
    }
    if let Some(until) = until {
        w = w.until(until);
    }
    if top {
        w = w.top("total", 5);
    }
    let from_summary: Vec<WindowRow> = c.rows_as(&w.build().unwrap()).await.unwrap();
    let from_base: Vec<WindowRow> = c.rows_as(&w.build_base().unwrap()).await.unwrap();
    (from_summary, from_base)
}

/// Window ends on a bucket boundary, mid-bucket, a microsecond after a
/// boundary, and a second before one.
fn window_ends() -> [DateTime<Utc>; 5] {
    [
        t0(),
        t0() + Duration::hours(13) + Duration::minutes(37),
        t0() - Duration::days(3),
        t0() + Duration::microseconds(1),
        t0() - Duration::days(10) + Duration::hours(23) + Duration::seconds(59),
    ]
}

/// Window lengths: 30 days, 36 hours, 3 hours (inside one bucket), one day.
fn window_lengths() -> [Duration; 4] {
    [
        Duration::days(30),
        Duration::hours(36),
        Duration::hours(3),
        Duration::days(1),
    ]
}

/// Windows ending on a bucket boundary, mid-bucket and a microsecond
/// after a boundary; 30 days, 36 hours, 3 hours (inside one bucket), one
/// day; and half-open windows.
async fn check_windows(c: &tokio_postgres::Client, s: &Summary, o: &Orders) -> usize {
    let (ends, lengths) = (window_ends(), window_lengths());
    let mut nonempty = 0;
    for end in ends {
        for len in lengths {
            for top in [false, true] {
                let (a, b) = window_both(c, s, o, Some(end - len), Some(end), top).await;
                assert_eq!(a, b, "window [{} , {}) top {top}", end - len, end);
                nonempty += usize::from(!a.is_empty());
            }
        }
        let (a, b) = window_both(c, s, o, Some(end - Duration::days(7)), None, true).await;
        assert_eq!(a, b, "since {}", end - Duration::days(7));
        let (a, b) = window_both(c, s, o, None, Some(end), false).await;
        assert_eq!(a, b, "until {end}");

        // The top-N report: the same rows from the base and the summary.
        let report = TopN::<i64, Decimal>::new(&o.user_pk, &o.user_id, &o.total, 4)
            .extra(&o.users.column::<String>("name").unwrap())
            .window_since(&o.created_at, end - Duration::days(30))
            .window_until(&o.created_at, end)
            .where_eq(&o.status, "completed");
        let base = report.fetch_all(c).await.unwrap();
        let summed = report.clone().from_summary(s).fetch_all(c).await.unwrap();
        assert_eq!(base, summed, "top-N ending {end}");
    }
    nonempty
}

async fn drift(c: &tokio_postgres::Client, s: &Summary) -> i64 {
    s.drift_count(c).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn summary_equals_the_base_after_random_writes() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    // Not UTC: buckets and windows must not depend on it.
    c.batch_execute(&format!(
        "{CREATE_ORDERS}; SET TIME ZONE 'America/New_York'"
    ))
    .await
    .unwrap();
    let o = orders();
    let s = summary_of(&o);
    let mut rng = Rng(0x5EED_0F05);
    // Rows before the summary exists: the backfill brings them in.
    insert_random(&c, &mut rng, 1, 300).await;
    s.install(&mut c).await.unwrap();
    assert!(drift(&c, &s).await > 0, "installed, not yet backfilled");
    let mut seen = Vec::new();
    let report = s
        .backfill(&mut c, 4, |p| seen.push((p.done, p.total)))
        .await
        .unwrap();
    assert_eq!(drift(&c, &s).await, 0);
    assert!(report.rows > 0 && report.batches > 2, "{report:?}");
    assert!(seen.windows(2).all(|w| w[0].0 <= w[1].0), "{seen:?}");
    assert_eq!(seen.last().map(|p| p.0), Some(report.batches));
    // A damaged row is found, and a second backfill repairs it.
    c.batch_execute("UPDATE orders_daily SET total = total + 1 WHERE ctid = (SELECT min(ctid) FROM orders_daily)")
        .await
        .unwrap();
    assert_eq!(drift(&c, &s).await, 1);
    s.backfill(&mut c, 1000, |_| {}).await.unwrap();
    assert_eq!(drift(&c, &s).await, 0);

    // Whole buckets are read from the summary: damaged summary rows show
    // in a window that holds them (and are rolled back).
    c.batch_execute("BEGIN; UPDATE orders_daily SET total = total + 1000")
        .await
        .unwrap();
    let (a, b) = window_both(
        &c,
        &s,
        &o,
        Some(t0() - Duration::days(30)),
        Some(t0()),
        false,
    )
    .await;
    assert_ne!(a, b, "the summary was read");
    c.batch_execute("ROLLBACK").await.unwrap();

    let mut next_id = 1000;
    let mut nonempty = check_windows(&c, &s, &o).await;
    for round in 0..120 {
        let sql = random_write(&mut rng, &mut next_id);
        c.batch_execute(&sql).await.unwrap();
        assert_eq!(drift(&c, &s).await, 0, "after round {round}: {sql}");
        if round == 60 {
            c.batch_execute("TRUNCATE orders").await.unwrap();
            assert_eq!(count(&c, "SELECT count(*) FROM orders_daily").await, 0);
            insert_random(&c, &mut rng, next_id, 300).await;
            next_id += 300;
            assert_eq!(drift(&c, &s).await, 0, "after TRUNCATE and insert");
        }
        if round % 30 == 29 {
            nonempty += check_windows(&c, &s, &o).await;
        }
    }
    assert!(nonempty > 50, "the windows saw rows ({nonempty})");
    // Emptied groups are gone, not kept with a count of 0.
    assert_eq!(
        count(&c, "SELECT count(*) FROM orders_daily WHERE row_count <= 0").await,
        0
    );
    // NULL keys are groups of their own, as in GROUP BY.
    assert!(
        count(
            &c,
            "SELECT count(*) FROM orders_daily WHERE user_id IS NULL"
        )
        .await
            > 0
    );
    c.batch_execute("DELETE FROM orders").await.unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM orders_daily").await, 0);
}

async fn count(c: &tokio_postgres::Client, sql: &'static str) -> i64 {
    c.rows_as::<(i64,)>(&BuiltQuery::fixed(sql)).await.unwrap()[0].0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_leave_no_drift() {
    let (schema, c, o, s) = installed().await;
    let mut rng = Rng(42);
    insert_random(&c, &mut rng, 1, 200).await;
    assert_eq!(drift(&c, &s).await, 0);

    let mut tasks = Vec::new();
    for w in 0..8i64 {
        let conn = client(&schema).await;
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((w as u64 + 1) * 0x1234_5678_9ABC));
            let mut next_id = 100_000 * (w + 1);
            let mut retries = 0u32;
            for _ in 0..40 {
                let sql = random_write(&mut rng, &mut next_id);
                loop {
                    match conn.batch_execute(&sql).await {
                        Ok(()) => break,
                        // Two statements updating the same base rows in
                        // another order can deadlock on the base table.
                        Err(e) if e.code().map(|c| c.code()) == Some("40P01") => retries += 1,
                        Err(e) => panic!("writer {w}: {e:?}\n{sql}"),
                    }
                }
            }
            retries
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert!(count(&c, "SELECT count(*) FROM orders").await > 0);
    assert_eq!(drift(&c, &s).await, 0);
    check_windows(&c, &s, &o).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buckets_do_not_depend_on_the_session_time_zone() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute(&format!("{CREATE_ORDERS}; SET TIME ZONE 'Pacific/Chatham'"))
        .await
        .unwrap();
    let o = orders();
    let utc = summary_of(&o);
    let kolkata = summary_of(&o)
        .zone("Asia/Kolkata")
        .named("orders_daily_ist");
    utc.install(&mut c).await.unwrap();
    kolkata.install(&mut c).await.unwrap();
    c.batch_execute(
        "INSERT INTO orders VALUES (1, 1, 'completed', 5, 1, '2025-03-10 23:30:00+00'), \
                                   (2, 1, 'completed', 7, 1, '2025-03-10 00:00:00+00'), \
                                   (3, 1, 'completed', 9, 1, '2025-03-10 18:29:59+00')",
    )
    .await
    .unwrap();
    let buckets = |table: &'static str| {
        let c = &c;
        async move {
            let q = BuiltQuery::fixed(table);
            c.rows_as::<(DateTime<Utc>, i64)>(&q).await.unwrap()
        }
    };
    let at = |d, h, m| Utc.with_ymd_and_hms(2025, 3, d, h, m, 0).unwrap();
    assert_eq!(
        buckets("SELECT bucket, row_count FROM orders_daily ORDER BY 1").await,
        vec![(at(10, 0, 0), 3)]
    );
    assert_eq!(
        buckets("SELECT bucket, row_count FROM orders_daily_ist ORDER BY 1").await,
        vec![(at(9, 18, 30), 2), (at(10, 18, 30), 1)]
    );
    // Another session, in UTC, sees no drift and the same windows.
    let mut d = client(&schema).await;
    d.batch_execute("SET TIME ZONE 'UTC'").await.unwrap();
    insert_random(&d, &mut Rng(7), 10, 200).await;
    for s in [&utc, &kolkata] {
        assert_eq!(drift(&c, s).await, 0);
        assert_eq!(drift(&d, s).await, 0);
        let a = check_windows(&c, s, &o).await;
        let b = check_windows(&d, s, &o).await;
        assert_eq!(a, b);
    }
    utc.backfill(&mut d, 2, |_| {}).await.unwrap();
    assert_eq!(drift(&c, &utc).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_install_twice_and_uninstall_cleanly() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute(
        r#"CREATE TABLE "Odd ""new"" $t" ("new" timestamp, "old" text, "found" int4, "Mixed Case" int8, "pgp_sign" int4);"#,
    )
    .await
    .unwrap();
    let t = Table::new("Odd \"new\" $t").unwrap();
    let at = t.column::<NaiveDateTime>("new").unwrap();
    let old = t.column::<String>("old").unwrap();
    let found = t.column::<i32>("found").unwrap();
    let mixed = t.column::<i64>("Mixed Case").unwrap();
    let s = Summary::new(&at, Bucket::Hour)
        .key(&old)
        .key(&mixed)
        .measure(Measure::sum(&found, "select"))
        .measure(Measure::count(&found, "$1"))
        .named("Sum'mary \"$$\"");
    s.install(&mut c).await.unwrap();
    s.install(&mut c).await.unwrap(); // idempotent
    let base = NaiveDate::from_ymd_opt(2025, 3, 10)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap();
    let mut rng = Rng(99);
    for round in 0..40 {
        let mut rows = Vec::new();
        for _ in 0..10 {
            let when = if rng.chance(10) {
                "NULL".to_owned()
            } else {
                format!(
                    "'{}'",
                    base + chrono::Duration::minutes(rng.below(60 * 30) as i64)
                )
            };
            let old = if rng.chance(5) {
                "NULL".to_owned()
            } else {
                format!("'o''{}$'", rng.below(3))
            };
            let found = if rng.chance(5) {
                "NULL".to_owned()
            } else {
                rng.below(100).to_string()
            };
            rows.push(format!("({when}, {old}, {found}, {}, 1)", rng.below(3)));
        }
        let sql = match round % 4 {
            0 | 1 => format!(r#"INSERT INTO "Odd ""new"" $t" VALUES {}"#, rows.join(", ")),
            2 => format!(
                r#"UPDATE "Odd ""new"" $t" SET "new" = "new" + interval '{} minutes', "Mixed Case" = {} WHERE "found" % 3 = {}"#,
                rng.below(120),
                rng.below(3),
                rng.below(3)
            ),
            _ => format!(
                r#"DELETE FROM "Odd ""new"" $t" WHERE "found" % 5 = {}"#,
                rng.below(5)
            ),
        };
        c.batch_execute(&sql).await.unwrap();
        assert_eq!(s.drift_count(&c).await.unwrap(), 0, "{sql}");
    }
    // Windows on a `timestamp` column: edges mid-hour and on the hour.
    for (from, to) in [
        (3 * 60 + 17, 20 * 60 + 1),
        (60, 120),
        (61, 62),
        (0, 30 * 60),
    ] {
        let w = s
            .window()
            .by(&old)
            .since(base + chrono::Duration::minutes(from))
            .until(base + chrono::Duration::minutes(to))
            .top("select", 2);
        type Row = (Option<String>, i64, Option<i64>, i64);
        let a: Vec<Row> = c.rows_as(&w.build().unwrap()).await.unwrap();
        let b: Vec<Row> = c.rows_as(&w.build_base().unwrap()).await.unwrap();
        assert_eq!(a, b, "[{from}, {to}) minutes");
    }
    let before = count(&c, r#"SELECT count(*) FROM "Odd ""new"" $t""#).await;
    s.uninstall(&mut c).await.unwrap();
    assert_eq!(
        count(&c, r#"SELECT count(*) FROM "Odd ""new"" $t""#).await,
        before
    );
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM pg_class WHERE relname = 'Sum''mary \"$$\"'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &c,
            r#"SELECT count(*) FROM pg_trigger WHERE tgrelid = '"Odd ""new"" $t"'::regclass"#
        )
        .await,
        0
    );
    s.uninstall(&mut c).await.unwrap(); // nothing left to drop
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_it_did_not_create_are_never_replaced() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute(&format!(
        "{CREATE_ORDERS}; CREATE TABLE orders_daily (mine int); INSERT INTO orders_daily VALUES (1)"
    ))
    .await
    .unwrap();
    let o = orders();
    let s = summary_of(&o);
    let e = s.install(&mut c).await.unwrap_err();
    assert!(
        matches!(&e, Error::ObjectConflict { kind: "table", .. }),
        "{e}"
    );
    let e = s.uninstall(&mut c).await.unwrap_err();
    assert!(e.is_object_conflict(), "{e}");
    // The guard stops the DDL even when sent without the check.
    let e = c
        .run_in_transaction_for_test(&s.install_statements().unwrap())
        .await;
    assert_eq!(e.as_deref(), Some("42710"));
    assert_eq!(
        count(&c, "SELECT count(*) FROM orders_daily WHERE mine = 1").await,
        1
    );
    assert_eq!(
        count(&c, "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND NOT tgisinternal").await,
        0
    );

    // A function of the trigger function's name.
    let other = summary_of(&o).named("orders_daily_2");
    c.batch_execute(&format!(
        "CREATE FUNCTION \"{}\"() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$",
        other.function_name()
    ))
    .await
    .unwrap();
    let e = other.install(&mut c).await.unwrap_err();
    assert!(
        matches!(
            &e,
            Error::ObjectConflict {
                kind: "function",
                ..
            }
        ),
        "{e}"
    );

    // A summary whose definition changed is another summary.
    let third = summary_of(&o).named("orders_daily_3");
    third.install(&mut c).await.unwrap();
    let changed = third.clone().measure(Measure::count(&o.user_id, "users"));
    let e = changed.install(&mut c).await.unwrap_err();
    assert!(e.is_object_conflict(), "{e}");
    third.uninstall(&mut c).await.unwrap();

    // A zone the server does not know: refused before any DDL.
    let mars = summary_of(&o)
        .zone("Mars/Olympus_Mons")
        .named("orders_mars");
    let e = mars.install(&mut c).await.unwrap_err();
    assert!(matches!(e, Error::InvalidSpec { field: "zone", .. }), "{e}");
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM pg_class WHERE relname = 'orders_mars'"
        )
        .await,
        0
    );

    // Bad specs fail before anything is sent.
    let e = Summary::new(&o.created_at, Bucket::Day)
        .measure(Measure::sum(
            &Table::new("orders")
                .unwrap()
                .column::<f64>("total")
                .unwrap(),
            "t",
        ))
        .install(&mut c)
        .await
        .unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    let report = TopN::<i64, Decimal>::new(&o.user_pk, &o.user_id, &o.total, 3)
        .window_since(&o.created_at, t0())
        .where_eq(&o.qty, 3)
        .from_summary(&summary_of(&o));
    assert!(matches!(
        report.fetch_all(&c).await,
        Err(Error::InvalidSpec {
            field: "where_eq",
            ..
        })
    ));
    let report = TopN::<i64, Decimal>::new(&o.user_pk, &o.user_id, &o.total, 3)
        .from_summary(&summary_of(&o));
    assert!(matches!(
        report.check(),
        Err(Error::InvalidSpec {
            field: "window",
            ..
        })
    ));
}

/// Runs statements in one transaction; the SQLSTATE of the failure.
trait RunForTest {
    async fn run_in_transaction_for_test(&mut self, q: &[BuiltQuery]) -> Option<String>;
}

impl RunForTest for tokio_postgres::Client {
    async fn run_in_transaction_for_test(&mut self, q: &[BuiltQuery]) -> Option<String> {
        use pgpatterns::Transactional;
        self.run_in_transaction(q)
            .await
            .err()
            .and_then(|e| e.code().map(str::to_owned))
    }
}

/// A `Rollup` reads a summary as it reads any table: the summary's keys as
/// dimensions, sums of its kept counts and sums as metrics. Over whole
/// buckets (here: every row) it gives the report on the base table, every
/// level and the total included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollup_reads_the_summary_as_a_table() {
    use pgpatterns::{Agg, Dim, Metric, Rollup};

    let (_schema, c, o, s) = installed().await;
    let mut rng = Rng(0x0011_D0C5);
    insert_random(&c, &mut rng, 1, 400).await;
    // Rows without a time belong to no bucket: compare the timed ones.
    c.batch_execute("DELETE FROM orders WHERE created_at IS NULL")
        .await
        .unwrap();
    assert_eq!(drift(&c, &s).await, 0);

    let base = Table::new("orders").unwrap();
    let (user, status) = (Dim::new(&o.user_id), Dim::new(&o.status));
    let orders_n = Metric::new("orders", Agg::count_all());
    let total = Metric::new("total", Agg::sum(&o.total));
    let on_base = Rollup::new(&base)
        .rollup((&user, &status))
        .metric(&orders_n)
        .metric(&total)
        .fetch_all(&c)
        .await
        .unwrap();

    let kept = s.table();
    let s_user = Dim::new(&kept.column::<i64>("user_id").unwrap());
    let s_status = Dim::new(&kept.column::<String>("status").unwrap());
    let s_orders = Metric::new(
        "orders",
        Agg::sum(&kept.column::<i64>(s.count_name().as_str()).unwrap()),
    );
    let s_total = Metric::new("total", Agg::sum(&kept.column::<Decimal>("total").unwrap()));
    let on_summary = Rollup::new(&kept)
        .rollup((&s_user, &s_status))
        .metric(&s_orders)
        .metric(&s_total)
        .fetch_all(&c)
        .await
        .unwrap();

    let mut a: Vec<_> = on_base
        .iter()
        .map(|r| {
            let n = r.get(&orders_n).map(Decimal::from);
            (
                r.grouping_mask(),
                r.get(&user),
                r.get(&status),
                n,
                r.get(&total),
            )
        })
        .collect();
    let mut b: Vec<_> = on_summary
        .iter()
        .map(|r| {
            (
                r.grouping_mask(),
                r.get(&s_user),
                r.get(&s_status),
                r.get(&s_orders),
                r.get(&s_total),
            )
        })
        .collect();
    a.sort();
    b.sort();
    assert!(a.len() > 10, "{a:?}");
    assert_eq!(a, b);
}

/// Rows of the large statements below: bulk writes making and changing
/// hundreds of groups at once.
const LARGE: i64 = 1000;

/// `n` orders from `first` on, all on the day `day` after [`t0`]: user
/// `1 + i % 13` (13: NULL), a status by `i % 4` (3: NULL), so two
/// statements with the same `day` and `n ≥ 52` make the same groups.
fn same_groups(first: i64, n: i64, day: i64) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| {
            let user = match i % 13 {
                12 => "NULL".to_owned(),
                u => (u + 1).to_string(),
            };
            let status = match i % 4 {
                3 => "NULL".to_owned(),
                s => format!("'{}'", STATUSES[s as usize]),
            };
            let at = t0() + Duration::days(day) + Duration::seconds((i * 977) % 86_400);
            format!(
                "({}, {user}, {status}, {}, {}, '{}'::timestamptz)",
                first + i,
                TOTALS[(i % 4) as usize],
                1 + i % 5,
                at.to_rfc3339()
            )
        })
        .collect();
    format!("INSERT INTO orders VALUES {}", rows.join(", "))
}

/// Statements of a thousand rows and more (inserts of new and existing
/// groups, moves between groups and buckets, NULL keys, amounts and times)
/// keep the summary exact, as the small ones do, with a summary without
/// group keys beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_statements_keep_the_summary_exact() {
    let (_schema, mut c, o, s) = installed().await;
    // And a summary without group keys: the bucket is its whole key.
    let hourly = Summary::new(&o.created_at, Bucket::Hour)
        .measure(Measure::sum(&o.total, "total"))
        .named("orders_hourly");
    hourly.install(&mut c).await.unwrap();
    let mut rng = Rng(0x0B16_B00C);
    let mut next_id = 1;
    let mut large_updates = 0;
    for round in 0..20 {
        let n = LARGE + rng.below(600) as i64;
        insert_random(&c, &mut rng, next_id, n).await;
        next_id += n;
        assert_eq!(drift(&c, &s).await, 0, "after the insert of round {round}");
        assert_eq!(
            drift(&c, &hourly).await,
            0,
            "after the insert of round {round}"
        );
        for _ in 0..2 {
            let sql = random_write(&mut rng, &mut next_id);
            let changed = c.execute(sql.as_str(), &[]).await.unwrap();
            large_updates += u32::from(sql.starts_with("UPDATE") && changed >= 1000);
            assert_eq!(drift(&c, &s).await, 0, "after round {round}: {sql}");
            assert_eq!(drift(&c, &hourly).await, 0, "after round {round}: {sql}");
        }
    }
    assert!(large_updates > 5, "{large_updates} large updates");
    // A large insert into a fresh day: only new groups, NULL keys among them.
    c.batch_execute(&same_groups(next_id, 2 * LARGE, 20))
        .await
        .unwrap();
    assert_eq!(drift(&c, &s).await, 0);
    assert!(
        count(
            &c,
            "SELECT count(*) FROM orders_daily WHERE user_id IS NULL AND status IS NULL"
        )
        .await
            > 0
    );
    check_windows(&c, &s, &o).await;
    c.batch_execute("DELETE FROM orders").await.unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM orders_daily").await, 0);
}

/// The summary's writes in this transaction so far: `(inserted, updated)`
/// rows.
async fn summary_writes(c: &tokio_postgres::Client) -> (i64, i64) {
    let row = c
        .query_one(
            "SELECT n_tup_ins, n_tup_upd FROM pg_stat_xact_user_tables \
             WHERE relid = 'orders_daily'::regclass",
            &[],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// Waits until the backend `pid` waits for a lock.
async fn until_waiting(c: &tokio_postgres::Client, pid: i32) {
    for _ in 0..600 {
        let row = c
            .query_one(
                "SELECT coalesce(wait_event_type = 'Lock', false) FROM pg_stat_activity WHERE pid = $1",
                &[&pid],
            )
            .await
            .unwrap();
        if row.get::<_, bool>(0) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("backend {pid} never waited for a lock");
}

/// A new group another transaction inserted and has not committed yet: a
/// large statement making the same group waits for it, then adds to the
/// row it made, and both writers are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_inserted_meanwhile_is_added_to() {
    let (schema, a, _, s) = installed().await;
    let b = client(&schema).await;
    let pid: i32 = b
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let at = |user: i64| (t0() + Duration::hours(user)).to_rfc3339();
    // `a` makes the group (user 2, day 0) and keeps it uncommitted.
    a.batch_execute(&format!(
        "BEGIN; INSERT INTO orders SELECT g, 2, 'completed', 5, 1, '{}' FROM generate_series(1, {LARGE}) g",
        at(2)
    ))
    .await
    .unwrap();
    // `b` makes (user 1, day 0), which sorts first, and (user 2, day 0).
    let insert = format!(
        "INSERT INTO orders SELECT g, 1 + g % 2, 'completed', 10, 1, \
         CASE g % 2 WHEN 0 THEN '{}'::timestamptz ELSE '{}'::timestamptz END \
         FROM generate_series(10001, 10000 + {LARGE}) g",
        at(1),
        at(2)
    );
    let blocked = tokio::spawn(async move {
        b.batch_execute(&format!("BEGIN; {insert}")).await.unwrap();
        let writes = summary_writes(&b).await;
        b.batch_execute("COMMIT").await.unwrap();
        writes
    });
    until_waiting(&a, pid).await;
    a.batch_execute("COMMIT").await.unwrap();
    let (inserted, updated) = blocked.await.unwrap();
    // (user 1) made, (user 2) added to.
    assert_eq!((inserted, updated), (1, 1));
    assert_eq!(drift(&a, &s).await, 0);
    let rows: Vec<(i64, i64, Decimal)> = a
        .rows_as(&BuiltQuery::fixed(
            "SELECT user_id, row_count, total FROM orders_daily ORDER BY 1",
        ))
        .await
        .unwrap();
    let half = LARGE / 2;
    assert_eq!(
        rows,
        vec![
            (1, half, Decimal::from(10 * half)),
            (2, LARGE + half, Decimal::from(5 * LARGE + 10 * half)),
        ]
    );
}

/// At `REPEATABLE READ`, a large statement meeting a group another
/// transaction inserted or changed after its snapshot fails with a
/// serialization error or counts right: never a silent drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeatable_read_fails_or_counts_right() {
    let (schema, a, _, s) = installed().await;
    let b = client(&schema).await;
    // Day 3 exists before `b`'s snapshot; day 0 does not.
    a.batch_execute(&same_groups(1, LARGE, 3)).await.unwrap();
    let mut next_id = 100_000;
    let mut failed = 0;
    for (day, other) in [(0, 0), (3, 3), (5, 6)] {
        b.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM orders")
            .await
            .unwrap();
        // After `b`'s snapshot: new groups of `day`, or more rows in them.
        a.batch_execute(&same_groups(next_id, LARGE, other))
            .await
            .unwrap();
        next_id += LARGE;
        let outcome = b
            .batch_execute(&same_groups(next_id, LARGE + 200, day))
            .await;
        next_id += LARGE + 200;
        match outcome {
            Ok(()) => b.batch_execute("COMMIT").await.unwrap(),
            Err(e) => {
                assert_eq!(e.code().map(|c| c.code()), Some("40001"), "{e:?}");
                failed += 1;
                b.batch_execute("ROLLBACK").await.unwrap();
            }
        }
        assert_eq!(drift(&a, &s).await, 0, "day {day}");
    }
    // The same groups, made or changed after the snapshot: both conflict;
    // disjoint days do not.
    assert_eq!(failed, 2);
    // A large update at REPEATABLE READ moving rows into groups another
    // transaction changed after its snapshot.
    b.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM orders")
        .await
        .unwrap();
    a.batch_execute(&same_groups(next_id, LARGE, 9))
        .await
        .unwrap();
    let outcome = b
        .batch_execute("UPDATE orders SET created_at = created_at + interval '6 days' WHERE created_at < $t$2025-03-14$t$")
        .await;
    match outcome {
        Ok(()) => b.batch_execute("COMMIT").await.unwrap(),
        Err(e) => {
            assert_eq!(e.code().map(|c| c.code()), Some("40001"), "{e:?}");
            b.batch_execute("ROLLBACK").await.unwrap();
        }
    }
    assert_eq!(drift(&a, &s).await, 0);
}

/// Eight writers insert large statements making the same new groups at the
/// same moment (most of them meet another's uncommitted insert and wait
/// for it), then move their rows into other new groups and delete some: at
/// `READ COMMITTED` the summary ends exact, and no writer fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_making_the_same_new_groups_leave_no_drift() {
    use std::sync::Arc;
    let (schema, c, o, s) = installed().await;
    const WRITERS: i64 = 8;
    let barrier = Arc::new(tokio::sync::Barrier::new(WRITERS as usize));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let conn = client(&schema).await;
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            // Errors are collected, not raised here: a writer that stopped
            // would leave the others waiting at the barrier.
            let mut errors = Vec::new();
            for round in 0..4 {
                let first = 1_000_000 * (w + 1) + 10_000 * round;
                // Every writer moves its rows into the same other day.
                let statements = [
                    same_groups(first, LARGE, -round),
                    format!(
                        "UPDATE orders SET created_at = created_at - interval '10 days', \
                         status = CASE WHEN id % 3 = 0 THEN NULL ELSE status END \
                         WHERE id BETWEEN {first} AND {}",
                        first + LARGE
                    ),
                    format!(
                        "DELETE FROM orders WHERE id BETWEEN {first} AND {}",
                        first + 100 * (w + round)
                    ),
                ];
                for sql in statements {
                    barrier.wait().await;
                    if let Err(e) = conn.batch_execute(&sql).await {
                        errors.push(format!("writer {w}, round {round}: {e:?}"));
                    }
                }
            }
            errors
        }));
    }
    let mut errors = Vec::new();
    for t in tasks {
        errors.extend(t.await.unwrap());
    }
    assert!(errors.is_empty(), "{errors:#?}");
    assert!(count(&c, "SELECT count(*) FROM orders").await > 10_000);
    assert_eq!(drift(&c, &s).await, 0);
    assert_eq!(
        count(&c, "SELECT sum(row_count)::int8 FROM orders_daily").await,
        count(
            &c,
            "SELECT count(*) FROM orders WHERE created_at IS NOT NULL"
        )
        .await
    );
    check_windows(&c, &s, &o).await;
}

/// The handles of the reports of [`check_rollups`]: every metric a summary
/// can answer, over the summary's keys.
struct Report {
    user: pgpatterns::Dim<i64>,
    status: pgpatterns::Dim<String>,
    n: pgpatterns::Metric<i64>,
    priced: pgpatterns::Metric<i64>,
    with_qty: pgpatterns::Metric<i64>,
    spent: pgpatterns::Metric<Decimal>,
    units: pgpatterns::Metric<i64>,
    avg_total: pgpatterns::Metric<Decimal>,
    avg_qty: pgpatterns::Metric<Decimal>,
}

impl Report {
    fn new(o: &Orders) -> Report {
        use pgpatterns::{Agg, Dim, Metric};
        Report {
            user: Dim::new(&o.user_id),
            status: Dim::new(&o.status),
            n: Metric::new("n", Agg::count_all()),
            // A Measure::count of it.
            priced: Metric::new("priced", Agg::count(&o.total)),
            // No Measure::count: the sum's non-NULL count.
            with_qty: Metric::new("with_qty", Agg::count(&o.qty)),
            spent: Metric::new("spent", Agg::sum(&o.total)),
            units: Metric::new("units", Agg::sum(&o.qty)),
            avg_total: Metric::new("avg_total", Agg::avg(&o.total)),
            avg_qty: Metric::new("avg_qty", Agg::avg(&o.qty)),
        }
    }

    /// The grouping and ordering steps of report `shape` over `r`, with
    /// every metric.
    fn shaped(&self, r: pgpatterns::Rollup, shape: usize) -> pgpatterns::Rollup {
        use pgpatterns::sea_query::Order;
        let r = r
            .metric(&self.n)
            .metric(&self.priced)
            .metric(&self.with_qty)
            .metric(&self.spent)
            .metric(&self.units)
            .metric(&self.avg_total)
            .metric(&self.avg_qty);
        match shape {
            0 => r.rollup((&self.user, &self.status)),
            1 => r.cube((&self.user, &self.status)).total_first(),
            2 => r.dimension(&self.user).with_total(),
            3 => r.grouping_sets(((&self.user,), (&self.status,), ())),
            4 => r
                .rollup((&self.status, &self.user))
                .rank_by(&self.spent, Order::Desc)
                .limit_per_level(3),
            5 => r
                .rollup((&self.user, &self.status))
                .having(self.n.gt(1i64))
                .having(self.avg_qty.lt(Decimal::new(35, 1))),
            // No dimension: one row, the whole window.
            _ => r,
        }
    }
}

const SHAPES: usize = 7;

/// Each row's level and typed values, `Decimal`s with their scale.
fn lines(rows: &[pgpatterns::RollupRow]) -> Vec<String> {
    rows.iter()
        .map(|r| {
            format!(
                "{} {:?} {:?}",
                r.grouping_mask(),
                r.dimension_values(),
                r.metric_values()
            )
        })
        .collect()
}

/// The output column types of a built query, as the server describes them.
async fn column_types(c: &tokio_postgres::Client, q: &BuiltQuery) -> Vec<String> {
    c.prepare(q.sql())
        .await
        .unwrap()
        .columns()
        .iter()
        .map(|col| col.type_().name().to_owned())
        .collect()
}

/// The report of `shape` from the summary and on the base table with the
/// window as filters (and `status = 'completed'` when `completed`):
/// the same rows, order and types. Whether it had rows.
async fn rollup_both(
    c: &tokio_postgres::Client,
    s: &Summary,
    o: &Orders,
    (since, until): (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
    shape: usize,
    completed: bool,
) -> bool {
    use pgpatterns::Rollup;
    let rep = Report::new(o);
    let mut w = s.window();
    let mut base = Rollup::new(&Table::new("orders").unwrap());
    if let Some(since) = since {
        w = w.since(since);
        base = base.filter(o.created_at.gte(since));
    }
    if let Some(until) = until {
        w = w.until(until);
        base = base.filter(o.created_at.lt(until));
    }
    if completed {
        w = w.where_eq(&o.status, "completed");
        base = base.filter(o.status.eq("completed"));
    }
    let summed = rep.shaped(Rollup::from_summary(&w), shape);
    let base = rep.shaped(base, shape);
    let what = format!("shape {shape}, [{since:?}, {until:?}), completed {completed}");
    let want = base.fetch_all(c).await.unwrap();
    let got = summed.fetch_all(c).await.unwrap();
    assert_eq!(lines(&got), lines(&want), "{what}");
    assert_eq!(got, want, "{what}");
    !got.is_empty()
}

/// [`rollup_both`] for every shape over the windows of [`check_windows`]:
/// ending on a bucket boundary, mid-bucket, a microsecond after a
/// boundary; 30 days, 36 hours, 3 hours (inside one bucket) and one day
/// long; and half-open. The count of non-empty results.
async fn check_rollups(c: &tokio_postgres::Client, s: &Summary, o: &Orders) -> usize {
    let (ends, lengths) = (window_ends(), window_lengths());
    let mut nonempty = 0;
    let mut i = 0;
    for end in ends {
        let mut windows: Vec<_> = lengths
            .iter()
            .map(|&len| (Some(end - len), Some(end)))
            .collect();
        windows.push((Some(end - Duration::days(7)), None));
        windows.push((None, Some(end)));
        for window in windows {
            for shape in 0..SHAPES {
                i += 1;
                let completed = i % 2 == 0;
                nonempty += usize::from(rollup_both(c, s, o, window, shape, completed).await);
            }
        }
    }
    nonempty
}

/// A `Rollup` from the summary equals the same report on the base table
/// with the window as filters — rows, order, levels, types and the scale
/// of every number — for rollup, cube, totals, grouping sets, ranking with
/// a limit per level, HAVING and no dimension, over windows of every kind,
/// after random inserts, updates and deletes (NULL keys and amounts among
/// them).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollup_from_the_summary_equals_the_report_on_the_base() {
    let (_schema, c, o, s) = installed().await;
    let mut rng = Rng(0x0F0D_5C0F);
    insert_random(&c, &mut rng, 1, 400).await;
    let mut nonempty = check_rollups(&c, &s, &o).await;
    let mut next_id = 1000;
    for round in 0..40 {
        let sql = random_write(&mut rng, &mut next_id);
        c.batch_execute(&sql).await.unwrap();
        if round % 20 == 19 {
            assert_eq!(drift(&c, &s).await, 0, "after round {round}");
            nonempty += check_rollups(&c, &s, &o).await;
        }
    }
    assert!(nonempty > 200, "the reports saw rows ({nonempty})");

    // The types the server sends are the base report's, column by column.
    let rep = Report::new(&o);
    let w = s.window().since(t0() - Duration::days(30));
    let base = Table::new("orders").unwrap();
    for shape in 0..SHAPES {
        let summed = rep.shaped(pgpatterns::Rollup::from_summary(&w), shape);
        let on_base = rep.shaped(
            pgpatterns::Rollup::new(&base).filter(o.created_at.gte(t0() - Duration::days(30))),
            shape,
        );
        let a = column_types(&c, &summed.build().unwrap()).await;
        let b = column_types(&c, &on_base.build().unwrap()).await;
        assert_eq!(a, b, "shape {shape}");
        assert!(a.contains(&"numeric".to_owned()) && a.contains(&"int8".to_owned()));
    }
}

/// `Auto` decides without statistics over a summary and says it reads the
/// summary; the blocking client, `resolve` and `calibrate` agree, and a
/// materialized view of the report holds its rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollup_from_the_summary_says_it_reads_the_summary() {
    use pgpatterns::ops::matview::MatView;
    use pgpatterns::{Calibration, DecidedBy, Rollup, RollupStrategy};

    let (schema, mut c, o, s) = installed().await;
    insert_random(&c, &mut Rng(0x00AB_CDEF), 1, 300).await;
    let rep = Report::new(&o);
    let w = s
        .window()
        .since(t0() - Duration::days(20) + Duration::hours(5))
        .until(t0());
    let report = rep
        .shaped(Rollup::from_summary(&w), 0)
        .strategy(RollupStrategy::Auto);
    let rows = report.fetch_all(&c).await.unwrap();
    assert!(rows.len() > 10, "{}", rows.len());

    let choice = report.explain_choice(&c).await.unwrap();
    assert_eq!(choice.strategy, RollupStrategy::PreAggregate);
    assert_eq!(choice.decided_by, DecidedBy::Rule);
    assert!(
        choice.reason.contains("maintained summary orders_daily"),
        "{choice}"
    );
    assert!(choice.statistics.is_empty(), "{choice}");
    assert_eq!(
        report.resolve(&c).await.unwrap().chosen_strategy(),
        RollupStrategy::PreAggregate
    );
    let calibrated = report.calibrate(&mut c, &Calibration::new()).await.unwrap();
    assert_eq!(calibrated.strategy, RollupStrategy::PreAggregate);
    assert_eq!(calibrated.reason, choice.reason);

    let blocking = report.clone();
    let (blocking_choice, blocking_rows) = with_sync_client(&schema, move |c| {
        (
            blocking.explain_choice_blocking(c).unwrap(),
            blocking.fetch_all_blocking(c).unwrap(),
        )
    })
    .await;
    assert_eq!(blocking_choice.reason, choice.reason);
    assert_eq!(blocking_rows, rows);

    // A materialized view of it: the same rows.
    let view = MatView::new(&Table::new("orders_report").unwrap(), report.clone());
    assert!(view.create(&mut c).await.unwrap());
    assert_eq!(lines(&view.fetch_all(&c).await.unwrap()), lines(&rows));
}

/// What the summary cannot answer is refused before any SQL is sent, with
/// a typed error, by every run verb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollup_the_summary_cannot_answer_is_refused() {
    use pgpatterns::{Agg, Metric, Rollup, RollupStrategy};

    let (_schema, c, o, s) = installed().await;
    let rep = Report::new(&o);
    let w = s.window().since(t0());
    let ok = rep.shaped(Rollup::from_summary(&w), 2);
    ok.fetch_all(&c).await.unwrap();
    let refused = [
        (
            ok.clone().metric(&Metric::new("top", Agg::max(&o.total))),
            "metric",
        ),
        (ok.clone().filter(o.qty.gt(2)), "filter"),
        (
            ok.clone().dimension(&pgpatterns::Dim::new(&o.created_at)),
            "dimension",
        ),
        (
            rep.shaped(
                Rollup::from_summary(&s.window().since(t0()).top("total", 3)),
                2,
            ),
            "window",
        ),
        (
            ok.clone().having(pgpatterns::sea_query::Expr::cust("true")),
            "having",
        ),
    ];
    for (r, field) in refused {
        for r in [r.clone(), r.strategy(RollupStrategy::Auto)] {
            let is = |e: Error| matches!(e, Error::InvalidSpec { field: f, .. } if f == field);
            assert!(is(r.fetch_all(&c).await.unwrap_err()), "{field}");
            assert!(is(r.explain_choice(&c).await.unwrap_err()), "{field}");
            assert!(is(r.resolve(&c).await.unwrap_err()), "{field}");
        }
    }
}

/// The edge index: created once (again is a no-op), on the time column
/// with the keys and measured columns included, and windows read through
/// it still equal the base.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_edge_index_covers_the_edges_and_is_idempotent() {
    let (_schema, c, o, s) = installed().await;
    let mut rng = Rng(0x000E_D6E5);
    insert_random(&c, &mut rng, 1, 300).await;
    let index = s.edge_index("orders_edges").unwrap();
    for _ in 0..2 {
        index.execute_outside_transaction(&c).await.unwrap();
    }
    let defs: Vec<String> = c
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() \
             AND indexname = 'orders_edges'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(defs.len(), 1, "{defs:?}");
    assert!(
        defs[0].ends_with("USING btree (created_at) INCLUDE (user_id, status, total, qty)"),
        "{defs:?}"
    );
    assert!(check_windows(&c, &s, &o).await > 0);
    assert!(matches!(
        s.edge_index(""),
        Err(Error::InvalidIdentifier { .. })
    ));
}
