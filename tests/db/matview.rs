//! Reports stored as materialized views: the view's rows equal the
//! report's (NULL dimensions, ties, hostile values), before and after base
//! changes; concurrent refreshes never show readers a partial view;
//! freshness; windows relative to the refresh; hostile names; objects
//! pgpatterns did not create are never replaced or dropped.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use pgpatterns::ops::matview::{BaseChanges, MatView, Materialize, RefreshMode, ViewQuery};
use pgpatterns::ops::TopN;
use pgpatterns::sea_query::{Expr, Order, Query};
use pgpatterns::{
    Agg, BuiltQuery, Column, Dim, Metric, Rollup, RollupRow, SqlType, Table, Transactional,
};
use rust_decimal::Decimal;

use crate::support::{client, exec, fetch, schema, Rng};

/// Values that break hand-formatted SQL.
const HOSTILE: [&str; 8] = [
    "it's",
    r"back\slash\",
    "$$ dollar $$",
    "$pgp$ tag",
    "quote \" and ' both ''",
    "new\nline\ttab",
    r"E'\x41'",
    "'); DROP TABLE sale; --",
];

struct Sale {
    table: Table,
    merchant: Column<String>,
    device: Column<String>,
    note: Column<String>,
    amount: Column<i32>,
}

fn sale(name: &str) -> Sale {
    let table = Table::new(name).unwrap();
    Sale {
        merchant: table.column("merchant").unwrap(),
        device: table.column("device").unwrap(),
        note: table.column("note").unwrap(),
        amount: table.column("amount").unwrap(),
        table,
    }
}

impl Sale {
    fn create(&self) -> BuiltQuery {
        BuiltQuery::schema(&crate::support::create_table(
            &self.table,
            &[
                self.merchant.erase(),
                self.device.erase(),
                self.note.erase(),
                self.amount.erase(),
            ],
        ))
    }

    fn insert(&self, rows: &[(Option<String>, Option<String>, String, i32)]) -> BuiltQuery {
        crate::support::insert(
            &self.table,
            &[
                self.merchant.erase(),
                self.device.erase(),
                self.note.erase(),
                self.amount.erase(),
            ],
            rows.iter().map(|(m, d, n, a)| {
                vec![
                    String::param_opt(m.clone()),
                    String::param_opt(d.clone()),
                    n.clone().param(),
                    a.param(),
                ]
            }),
        )
    }

    /// Merchant × device with subtotals and total: count, sum, distinct
    /// notes; filtered by hostile values (an array and a single value).
    fn report(&self) -> (Rollup, Dim<String>, Dim<String>, Metric<i64>) {
        let merchant = Dim::new(&self.merchant);
        let device = Dim::new(&self.device);
        let sum = Metric::new("amount_sum", Agg::sum(&self.amount));
        let r = Rollup::new(&self.table)
            .rollup([&merchant, &device])
            .metric(&Metric::new("rows", Agg::count_all()))
            .metric(&sum)
            .metric(&Metric::new("notes", Agg::count_distinct(&self.note)))
            .filter(self.note.is_in(HOSTILE.iter().map(|s| s.to_string())))
            .filter(self.note.ne(HOSTILE[7]));
        (r, merchant, device, sum)
    }
}

/// Rows with NULL dimensions, hostile dimension values, and ties.
fn sale_rows(rng: &mut Rng, n: usize) -> Vec<(Option<String>, Option<String>, String, i32)> {
    let merchants = [Some("Costco"), Some(HOSTILE[0]), Some(HOSTILE[2]), None];
    let devices = [Some("ios"), Some(HOSTILE[1]), Some(HOSTILE[5]), None];
    (0..n)
        .map(|_| {
            (
                merchants[rng.below(4) as usize].map(str::to_owned),
                devices[rng.below(4) as usize].map(str::to_owned),
                HOSTILE[rng.below(8) as usize].to_owned(),
                (rng.below(5) as i32) * 10,
            )
        })
        .collect()
}

/// Rows without their spec ids: comparable across two reports' handles.
fn rollup_lines(rows: &[RollupRow]) -> Vec<String> {
    rows.iter()
        .map(|r| format!("{r} {:?}", r.level()))
        .collect()
}

async fn refreshes_recorded(client: &tokio_postgres::Client, view: &str) -> i64 {
    fetch::<(i64,), _>(
        client,
        &BuiltQuery::fixed_with(
            "SELECT COALESCE((SELECT refreshes FROM pgpatterns_matview_refresh \
             WHERE view_oid = to_regclass($1::text)), 0)",
            [view.to_owned().into_value()],
        ),
    )
    .await[0]
        .0
}

/// Publishes this session's pending write counts before its next command.
async fn flush_stats(client: &tokio_postgres::Client) {
    client
        .batch_execute("SELECT pg_stat_force_next_flush()")
        .await
        .unwrap();
}

/// Waits (the statistics are asynchronous) until freshness says `want`.
async fn wait_base_changed<S: Materialize>(
    view: &MatView<S>,
    client: &tokio_postgres::Client,
    want: bool,
) -> BaseChanges {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let f = view.freshness(client).await.unwrap();
        if f.base_changed() == Some(want) || Instant::now() > until {
            return f.base;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_view_rows_equal_the_report_with_null_dims_ties_and_hostile_values() {
    let schema = schema().await;
    let mut client = client(&schema).await;
    let s = sale("sale");
    exec(&client, &s.create()).await;
    let mut rng = Rng(0x5eed_0001);
    exec(&client, &s.insert(&sale_rows(&mut rng, 400))).await;
    // A real NULL group in every dimension.
    exec(&client, &s.insert(&[(None, None, HOSTILE[3].into(), 7)])).await;

    let (report, merchant, _, _) = s.report();
    let view = MatView::new(&Table::new("sale_rollup").unwrap(), report.clone());
    let definition = view.definition().unwrap();
    assert!(definition.contains(r"E'it\'s'"), "{definition}");
    assert!(definition.contains("$$ dollar $$"), "{definition}");
    assert!(view.create(&mut client).await.unwrap());

    let want = report.fetch_all(&client).await.unwrap();
    let got = view.fetch_all(&client).await.unwrap();
    assert!(want.len() > 20, "{}", want.len());
    assert_eq!(rollup_lines(&got), rollup_lines(&want));
    // Same handles: rows are equal as values too, and read by the same dims.
    assert_eq!(got, want);
    assert!(got
        .iter()
        .any(|r| r.is_detail() && r.dim(&merchant).is_null()));
    assert!(got.iter().any(|r| r.is_total()));

    // The key holds on NULL keys: the index is NULLS NOT DISTINCT, several
    // rows have a NULL merchant (real NULLs and rolled-up ones), and no
    // (dims, level) repeats even when NULLs are compared as equal.
    let (nulls_not_distinct, is_unique): (bool, bool) = fetch(
        &client,
        &BuiltQuery::fixed_with(
            "SELECT indnullsnotdistinct, indisunique FROM pg_index WHERE indexrelid = to_regclass($1::text)",
            [view.index_name().as_str().to_owned().into_value()],
        ),
    )
    .await[0];
    assert!(nulls_not_distinct && is_unique);
    let (null_merchants, repeats): (i64, i64) = fetch(
        &client,
        &BuiltQuery::fixed(
            "SELECT (SELECT count(*) FROM sale_rollup WHERE merchant IS NULL), \
                    (SELECT count(*) FROM (SELECT 1 FROM sale_rollup \
                     GROUP BY merchant, device, rollup_grouping HAVING count(*) > 1) d)",
        ),
    )
    .await[0];
    assert!(null_merchants >= 3, "{null_merchants}");
    assert_eq!(repeats, 0);

    // Base changes, then a concurrent refresh: equal again.
    exec(&client, &s.insert(&sale_rows(&mut rng, 200))).await;
    exec(
        &client,
        &BuiltQuery::fixed("UPDATE sale SET merchant = NULL WHERE amount = 40"),
    )
    .await;
    exec(
        &client,
        &BuiltQuery::fixed("DELETE FROM sale WHERE device = 'ios' AND amount = 0"),
    )
    .await;
    let stale = view.fetch_all(&client).await.unwrap();
    let want = report.fetch_all(&client).await.unwrap();
    assert_ne!(stale, want);
    let r = view.refresh(&mut client).await.unwrap();
    assert!(r.concurrently);
    assert_eq!(view.fetch_all(&client).await.unwrap(), want);
    // A plain refresh gives the same rows.
    let r = view
        .refresh_with(&mut client, RefreshMode::Plain)
        .await
        .unwrap();
    assert!(!r.concurrently);
    assert_eq!(view.fetch_all(&client).await.unwrap(), want);
    assert_eq!(refreshes_recorded(&client, "sale_rollup").await, 3);
}

struct Shop {
    users: Table,
    orders: Table,
    user_id: Column<i64>,
    username: Column<String>,
    order_user: Column<i64>,
    amount: Column<Decimal>,
    status: Column<String>,
    created_at: Column<chrono::DateTime<Utc>>,
}

async fn shop(client: &tokio_postgres::Client, users: &str, orders: &str) -> Shop {
    let (u, o) = (Table::new(users).unwrap(), Table::new(orders).unwrap());
    let shop = Shop {
        user_id: u.column("id").unwrap(),
        username: u.column("username").unwrap(),
        order_user: o.column("user_id").unwrap(),
        amount: o.column("total_amount").unwrap(),
        status: o.column("status").unwrap(),
        created_at: o.column("created_at").unwrap(),
        users: u,
        orders: o,
    };
    exec(
        client,
        &BuiltQuery::schema(&crate::support::create_table(
            &shop.users,
            &[shop.user_id.erase(), shop.username.erase()],
        )),
    )
    .await;
    exec(
        client,
        &BuiltQuery::schema(&crate::support::create_table(
            &shop.orders,
            &[
                shop.order_user.erase(),
                shop.amount.erase(),
                shop.status.erase(),
                shop.created_at.erase(),
            ],
        )),
    )
    .await;
    exec(
        client,
        &crate::support::insert(
            &shop.users,
            &[shop.user_id.erase(), shop.username.erase()],
            (1..=40i64).map(|i| {
                vec![
                    i.param(),
                    format!("{} {i}", HOSTILE[i as usize % 8]).param(),
                ]
            }),
        ),
    )
    .await;
    shop
}

impl Shop {
    /// Orders of `users` (ties: equal amounts), `days_ago` before now.
    fn orders(&self, rows: &[(i64, i64, &str, i64)]) -> BuiltQuery {
        let now = Utc::now();
        crate::support::insert(
            &self.orders,
            &[
                self.order_user.erase(),
                self.amount.erase(),
                self.status.erase(),
                self.created_at.erase(),
            ],
            rows.iter().map(|(u, amount, status, days)| {
                vec![
                    u.param(),
                    Decimal::new(*amount, 2).param(),
                    status.to_string().param(),
                    (now - chrono::Duration::days(*days)).param(),
                ]
            }),
        )
    }

    fn top(&self, n: i64) -> TopN<i64, Decimal> {
        TopN::new(&self.user_id, &self.order_user, &self.amount, n)
            .extra(&self.username)
            .where_eq(&self.status, HOSTILE[0])
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_n_view_equals_the_report_and_freshness_follows_base_changes() {
    let schema = schema().await;
    let mut client = client(&schema).await;
    let shop = shop(&client, "users", "orders").await;
    let mut rng = Rng(0x5eed_0002);
    let rows: Vec<(i64, i64, &str, i64)> = (0..600)
        .map(|_| {
            (
                1 + rng.below(40) as i64,
                // Few distinct amounts: ties on the sum.
                100 * (1 + rng.below(3) as i64),
                if rng.chance(4) { "other" } else { HOSTILE[0] },
                rng.below(60) as i64,
            )
        })
        .collect();
    exec(&client, &shop.orders(&rows)).await;
    // The counts of this session's writes reach the shared statistics when
    // it goes idle, at most once a second: publish them now, so they are
    // not counted as changes made after the view's first refresh.
    flush_stats(&client).await;

    let report = shop
        .top(10)
        .window_last(&shop.created_at, chrono::Duration::days(30));
    let view = MatView::new(&Table::new("top_spenders").unwrap(), report.clone());
    assert!(view.create(&mut client).await.unwrap());
    let want = report.fetch_all(&client).await.unwrap();
    assert_eq!(want.len(), 10);
    let got = view.fetch_all(&client).await.unwrap();
    assert_eq!(got, want);
    assert!(got[0].get(&shop.username).unwrap().contains(' '));

    let f = view.freshness(&client).await.unwrap();
    assert!(f.populated);
    let last = f.last_refresh.clone().unwrap();
    assert!(!last.concurrently && last.refreshes == 1, "{last:?}");
    assert!(f.age.unwrap() < Duration::from_secs(60));
    assert_eq!(f.base, BaseChanges::Unchanged, "{f:?}");
    assert!(f.is_fresh(Duration::from_secs(60)));

    // A new top spender: the view is stale until refreshed.
    exec(&client, &shop.orders(&[(40, 99_999_999, HOSTILE[0], 1)])).await;
    let base = wait_base_changed(&view, &client, true).await;
    assert!(
        matches!(&base, BaseChanges::Changed { tables } if tables == &["orders".to_owned()]),
        "{base:?}"
    );
    assert!(!view
        .freshness(&client)
        .await
        .unwrap()
        .is_fresh(Duration::from_secs(60)));
    let want = report.fetch_all(&client).await.unwrap();
    assert_eq!(want[0].key, 40);
    assert_ne!(view.fetch_all(&client).await.unwrap(), want);
    let r = view.refresh(&mut client).await.unwrap();
    assert!(r.concurrently);
    assert_eq!(view.fetch_all(&client).await.unwrap(), want);
    let f = view.freshness(&client).await.unwrap();
    assert_eq!(f.base, BaseChanges::Unchanged, "{f:?}");
    assert_eq!(f.last_refresh.unwrap().refreshes, 2);

    // TRUNCATE is not counted as deleted rows; the file node tells.
    exec(&client, &BuiltQuery::fixed("TRUNCATE orders")).await;
    let base = wait_base_changed(&view, &client, true).await;
    assert!(matches!(base, BaseChanges::Changed { .. }), "{base:?}");
    view.refresh(&mut client).await.unwrap();
    assert!(view.fetch_all(&client).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_relative_to_now_moves_at_refresh_and_a_fixed_one_stays() {
    let schema = schema().await;
    let mut client = client(&schema).await;
    let shop = shop(&client, "users", "orders").await;
    exec(
        &client,
        &shop.orders(&[(1, 500, HOSTILE[0], 0), (2, 700, HOSTILE[0], 0)]),
    )
    .await;
    let since = Utc::now() - chrono::Duration::hours(1);
    let rolling = MatView::new(
        &Table::new("top_rolling").unwrap(),
        shop.top(5)
            .window_last(&shop.created_at, chrono::Duration::seconds(2)),
    );
    let fixed = MatView::new(
        &Table::new("top_fixed").unwrap(),
        shop.top(5).window_since(&shop.created_at, since),
    );
    rolling.create(&mut client).await.unwrap();
    fixed.create(&mut client).await.unwrap();
    assert_eq!(rolling.fetch_all(&client).await.unwrap().len(), 2);
    assert_eq!(fixed.fetch_all(&client).await.unwrap().len(), 2);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    rolling.refresh(&mut client).await.unwrap();
    fixed.refresh(&mut client).await.unwrap();
    // The rolling window now starts after the orders; the fixed one does not move.
    assert!(rolling.fetch_all(&client).await.unwrap().is_empty());
    assert_eq!(fixed.fetch_all(&client).await.unwrap().len(), 2);
    assert!(
        rolling
            .definition()
            .unwrap()
            .contains("now() - CAST(2000000 AS int8) * interval '1 microsecond'"),
        "{}",
        rolling.definition().unwrap()
    );
}

/// `ledger(region, account, amount)`: amounts always sum to `TOTAL` over
/// `ROWS` rows; writers move amounts and regroup rows in transactions.
const TOTAL: i64 = 1_000_000;
const ROWS: i64 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_see_a_complete_view_during_many_concurrent_refreshes() {
    let schema = schema().await;
    let mut writer = client(&schema).await;
    writer
        .batch_execute(&format!(
            "CREATE TABLE ledger (id int8 PRIMARY KEY, region text, account text, amount int4 NOT NULL);
             INSERT INTO ledger SELECT g, CASE WHEN g % 7 = 0 THEN NULL ELSE 'r' || (g % 5) END,
                                       CASE WHEN g % 11 = 0 THEN NULL ELSE 'a' || (g % 13) END, {}
             FROM generate_series(1, {ROWS}) g",
            TOTAL / ROWS
        ))
        .await
        .unwrap();
    let ledger = Table::new("ledger").unwrap();
    let region = Dim::new(&ledger.column::<String>("region").unwrap());
    let account = Dim::new(&ledger.column::<String>("account").unwrap());
    let rows = Metric::new("rows", Agg::count_all());
    let sum = Metric::new("total", Agg::sum(&ledger.column::<i32>("amount").unwrap()));
    let report = Rollup::new(&ledger)
        .rollup([&region, &account])
        .metric(&rows)
        .metric(&sum);
    let view = Arc::new(MatView::new(&Table::new("ledger_rollup").unwrap(), report));
    view.create(&mut writer).await.unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for _ in 0..3 {
        let (view, stop, reads) = (view.clone(), stop.clone(), reads.clone());
        let (sum, rows) = (sum.clone(), rows.clone());
        let client = client(&schema).await;
        readers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let got = view.fetch_all(&client).await.unwrap();
                let total = got.iter().find(|r| r.is_total()).expect("a total row");
                assert_eq!(total.get(&sum), Some(TOTAL), "total row");
                assert_eq!(total.get(&rows), Some(ROWS), "total count");
                for level in [
                    |r: &RollupRow| r.is_detail(),
                    |r: &RollupRow| r.is_subtotal(),
                ] {
                    let part: Vec<&RollupRow> = got.iter().filter(|r| level(r)).collect();
                    let s: i64 = part.iter().map(|r| r.get(&sum).unwrap()).sum();
                    let n: i64 = part.iter().map(|r| r.get(&rows).unwrap()).sum();
                    assert_eq!((s, n), (TOTAL, ROWS), "a level of {} rows", part.len());
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }

    let mut rng = Rng(0x5eed_0003);
    let refreshes = 40;
    for i in 0..refreshes {
        // Move amounts and regroup rows (groups appear and vanish, NULLs
        // included), several changes per transaction.
        let mut script = String::from("BEGIN;");
        for _ in 0..5 {
            let (a, b, x) = (
                1 + rng.below(ROWS as u64),
                1 + rng.below(ROWS as u64),
                rng.below(500),
            );
            script.push_str(&format!(
                "UPDATE ledger SET amount = amount - {x} WHERE id = {a};
                 UPDATE ledger SET amount = amount + {x} WHERE id = {b};"
            ));
            let r = match rng.below(6) {
                0 => "NULL".to_owned(),
                k => format!("'r{k}'"),
            };
            script.push_str(&format!(
                "UPDATE ledger SET region = {r}, account = CASE WHEN account IS NULL THEN 'a{i}' ELSE NULL END WHERE id = {};",
                1 + rng.below(ROWS as u64)
            ));
        }
        script.push_str("COMMIT;");
        writer.batch_execute(&script).await.unwrap();
        let r = view.refresh(&mut writer).await.unwrap();
        assert!(r.concurrently);
    }
    let before_stop = reads.load(Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.await.unwrap();
    }
    assert!(before_stop > refreshes as u64, "only {before_stop} reads");
    let report_rows = view.source().fetch_all(&writer).await.unwrap();
    assert_eq!(view.fetch_all(&writer).await.unwrap(), report_rows);
    assert_eq!(
        refreshes_recorded(&writer, "ledger_rollup").await,
        refreshes + 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_view_without_data_is_filled_by_a_plain_refresh_first() {
    let schema = schema().await;
    let mut client = client(&schema).await;
    let s = sale("sale");
    exec(&client, &s.create()).await;
    exec(&client, &s.insert(&sale_rows(&mut Rng(9), 50))).await;
    let (report, ..) = s.report();
    let view = MatView::new(&Table::new("later").unwrap(), report.clone()).with_no_data();
    assert!(view.create(&mut client).await.unwrap());
    let f = view.freshness(&client).await.unwrap();
    assert!(!f.populated && f.last_refresh.is_none(), "{f:?}");
    assert!(matches!(f.base, BaseChanges::Unknown { .. }));
    assert!(!f.is_fresh(Duration::from_secs(3600)));
    let e = view.fetch_all(&client).await.unwrap_err();
    assert_eq!(e.code(), Some("55000"), "{e}");
    let e = view
        .refresh_with(&mut client, RefreshMode::Concurrently)
        .await
        .unwrap_err();
    assert!(e.is_database(), "{e}");
    assert!(!view.refresh(&mut client).await.unwrap().concurrently);
    assert!(view.refresh(&mut client).await.unwrap().concurrently);
    assert_eq!(
        view.fetch_all(&client).await.unwrap(),
        report.fetch_all(&client).await.unwrap()
    );
    // Refreshing or reading a view that was never created.
    let missing = MatView::new(&Table::new("missing").unwrap(), report);
    assert!(missing
        .refresh(&mut client)
        .await
        .unwrap_err()
        .is_object_missing());
    assert!(missing
        .freshness(&client)
        .await
        .unwrap_err()
        .is_object_missing());
    assert!(!missing.drop(&mut client).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_work_everywhere() {
    let schema = schema().await;
    let mut client = client(&schema).await;
    let s = sale("found \"sale\" $1");
    exec(&client, &s.create()).await;
    exec(&client, &s.insert(&sale_rows(&mut Rng(11), 80))).await;
    let (report, ..) = s.report();
    let want = report.fetch_all(&client).await.unwrap();
    for name in [
        "new",
        "old",
        "found",
        "a\"b$c",
        "$$x$$",
        "x'); DROP TABLE y; --",
    ] {
        let view = MatView::new(&Table::new(name).unwrap(), report.clone());
        assert!(view.create(&mut client).await.unwrap(), "{name}");
        assert!(!view.create(&mut client).await.unwrap(), "{name}");
        assert_eq!(view.fetch_all(&client).await.unwrap(), want, "{name}");
        view.refresh(&mut client).await.unwrap();
        assert_eq!(view.fetch_all(&client).await.unwrap(), want, "{name}");
        assert!(view.freshness(&client).await.unwrap().populated);
        assert!(view.drop(&mut client).await.unwrap(), "{name}");
    }
    // Schema-qualified, with a hostile bookkeeping table.
    let view = MatView::new(
        &Table::in_schema(schema.name(), "old").unwrap(),
        report.clone(),
    )
    .bookkeeping(&Table::in_schema(schema.name(), "new \"book\"").unwrap());
    view.create(&mut client).await.unwrap();
    view.refresh(&mut client).await.unwrap();
    assert_eq!(view.fetch_all(&client).await.unwrap(), want);
    assert_eq!(
        view.freshness(&client)
            .await
            .unwrap()
            .last_refresh
            .unwrap()
            .refreshes,
        2
    );
    view.drop(&mut client).await.unwrap();
    assert_eq!(crate::support::count_rows(&client, &s.table).await, 80);
}

async fn relkind(client: &tokio_postgres::Client, name: &str) -> Option<String> {
    fetch::<(Option<String>,), _>(
        client,
        &BuiltQuery::fixed_with(
            "SELECT (SELECT relkind::text FROM pg_class WHERE oid = to_regclass($1::text))",
            [name.to_owned().into_value()],
        ),
    )
    .await[0]
        .0
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_pgpatterns_did_not_create_are_never_replaced_or_dropped() {
    let schema = schema().await;
    let mut client = client(&schema).await;
    let s = sale("sale");
    exec(&client, &s.create()).await;
    exec(&client, &s.insert(&sale_rows(&mut Rng(12), 30))).await;
    let (report, ..) = s.report();

    // A table of the view's name.
    client
        .batch_execute("CREATE TABLE taken (x int); INSERT INTO taken VALUES (1)")
        .await
        .unwrap();
    let view = MatView::new(&Table::new("taken").unwrap(), report.clone());
    assert!(view
        .create(&mut client)
        .await
        .unwrap_err()
        .is_object_conflict());
    assert!(view
        .drop(&mut client)
        .await
        .unwrap_err()
        .is_object_conflict());
    assert!(view
        .refresh(&mut client)
        .await
        .unwrap_err()
        .is_object_conflict());
    // The guard inside the transaction refuses too (a race past the check).
    let e = client
        .run_in_transaction(&view.create_statements().unwrap())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("42710"), "{e}");
    let e = client
        .run_in_transaction(&view.drop_statements())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("42710"), "{e}");
    assert_eq!(relkind(&client, "taken").await.as_deref(), Some("r"));

    // A materialized view of the name made by hand.
    client
        .batch_execute("CREATE MATERIALIZED VIEW hand AS SELECT 1 AS one")
        .await
        .unwrap();
    let view = MatView::new(&Table::new("hand").unwrap(), report.clone());
    assert!(view
        .create(&mut client)
        .await
        .unwrap_err()
        .is_object_conflict());
    assert!(view
        .drop(&mut client)
        .await
        .unwrap_err()
        .is_object_conflict());
    assert!(view
        .refresh(&mut client)
        .await
        .unwrap_err()
        .is_object_conflict());
    assert_eq!(relkind(&client, "hand").await.as_deref(), Some("m"));

    // The index's name taken by an index on another table: nothing created.
    let view = MatView::new(&Table::new("indexed").unwrap(), report.clone());
    client
        .batch_execute(&format!(
            "CREATE INDEX \"{}\" ON taken (x)",
            view.index_name().as_str()
        ))
        .await
        .unwrap();
    let e = view.create(&mut client).await.unwrap_err();
    assert!(e.is_object_conflict(), "{e}");
    assert_eq!(relkind(&client, "indexed").await, None);

    // The bookkeeping table's name taken by a user table.
    client
        .batch_execute("CREATE TABLE my_book (x int)")
        .await
        .unwrap();
    let view = MatView::new(&Table::new("booked").unwrap(), report.clone())
        .bookkeeping(&Table::new("my_book").unwrap());
    assert!(view
        .create(&mut client)
        .await
        .unwrap_err()
        .is_object_conflict());
    assert_eq!(relkind(&client, "booked").await, None);

    // pgpatterns' own view with another definition: not replaced; dropped
    // on request, then created anew.
    let first = MatView::new(&Table::new("mine").unwrap(), report.clone());
    first.create(&mut client).await.unwrap();
    let other = MatView::new(&Table::new("mine").unwrap(), report.clone().total_first());
    let e = other.create(&mut client).await.unwrap_err();
    assert!(e.to_string().contains("another definition"), "{e}");
    assert!(other
        .refresh(&mut client)
        .await
        .unwrap_err()
        .is_object_conflict());
    assert!(other.drop(&mut client).await.unwrap());
    assert!(other.create(&mut client).await.unwrap());
    assert_eq!(
        other.fetch_all(&client).await.unwrap(),
        report
            .clone()
            .total_first()
            .fetch_all(&client)
            .await
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_twice_is_idempotent_and_drop_leaves_the_base() {
    let schema = schema().await;
    let mut client = client(&schema).await;
    let s = sale("sale");
    exec(&client, &s.create()).await;
    exec(&client, &s.insert(&sale_rows(&mut Rng(13), 60))).await;
    let (report, ..) = s.report();
    let view = MatView::new(&Table::new("twice").unwrap(), report.clone());
    assert!(view.create(&mut client).await.unwrap());
    let rows = view.fetch_all(&client).await.unwrap();
    assert!(!view.create(&mut client).await.unwrap());
    assert_eq!(
        refreshes_recorded(&client, "twice").await,
        1,
        "not refreshed again"
    );
    assert_eq!(view.fetch_all(&client).await.unwrap(), rows);
    // A dropped index is made again by the next create.
    client
        .batch_execute(&format!("DROP INDEX \"{}\"", view.index_name().as_str()))
        .await
        .unwrap();
    assert!(!view.create(&mut client).await.unwrap());
    view.refresh(&mut client).await.unwrap();

    // The blocking twins, from the same code.
    let (config, report2) = (schema.config(), report.clone());
    let blocking_rows = tokio::task::spawn_blocking(move || {
        let mut c = postgres::Config::from(config)
            .connect(postgres::NoTls)
            .unwrap();
        let v = MatView::new(&Table::new("twice").unwrap(), report2);
        assert!(!v.create_blocking(&mut c).unwrap());
        v.refresh_blocking(&mut c).unwrap();
        assert!(v.freshness_blocking(&mut c).unwrap().populated);
        v.fetch_all_blocking(&mut c).unwrap()
    })
    .await
    .unwrap();
    assert_eq!(blocking_rows, rows);

    let before = crate::support::count_rows(&client, &s.table).await;
    assert!(view.drop(&mut client).await.unwrap());
    assert!(!view.drop(&mut client).await.unwrap());
    assert_eq!(crate::support::count_rows(&client, &s.table).await, before);
    assert_eq!(relkind(&client, "twice").await, None);
    assert_eq!(relkind(&client, view.index_name().as_str()).await, None);
    assert_eq!(refreshes_recorded(&client, "twice").await, 0);
    assert_eq!(
        report.fetch_all(&client).await.unwrap(),
        rows,
        "the base is untouched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_select_can_be_a_view() {
    let schema = schema().await;
    let mut client = client(&schema).await;
    let s = sale("sale");
    exec(&client, &s.create()).await;
    exec(&client, &s.insert(&sale_rows(&mut Rng(14), 60))).await;
    let statement = Query::select()
        .column(s.note.col_ref())
        .expr(Expr::cust("COUNT(*)"))
        .from(s.table.table_ref())
        .and_where(s.note.ne(HOSTILE[1]))
        .group_by_col(s.note.col_ref())
        .to_owned();
    let source = ViewQuery::<(String, i64)>::new(statement.clone(), ["note", "n"])
        .key(["note"])
        .order_by("note", Order::Asc);
    let view = MatView::new(&Table::new("per_note").unwrap(), source);
    view.create(&mut client).await.unwrap();
    let mut ordered = statement;
    ordered.order_by(s.note.col_ref(), Order::Asc);
    let want: Vec<(String, i64)> = fetch(&client, &BuiltQuery::new(&ordered)).await;
    assert_eq!(view.fetch_all(&client).await.unwrap(), want);
    assert!(!want.iter().any(|(n, _)| n == HOSTILE[1]));
}
