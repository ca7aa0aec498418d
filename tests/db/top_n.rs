//! The top-N report against a plain-Rust reference on the seeded shop,
//! and its advised index.

use std::collections::BTreeMap;

use chrono::{Duration, TimeZone, Utc};
use pgpatterns::ops::TopN;
use pgpatterns::seed::shop::ShopSeed;
use pgpatterns::{Error, Executor, Table};
use rust_decimal::Decimal;

use crate::support::{client, schema};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn top_spenders_match_the_reference_and_use_the_index() {
    let schema = schema().await;
    let client = client(&schema).await;
    let now = Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap();
    let seed = ShopSeed::new(20_000)
        .users(300)
        .days(90)
        .batch_size(7_000)
        .now(now);
    let mut stages = Vec::new();
    let seeded = seed
        .run(&client, |p| stages.push((p.stage, p.done)))
        .await
        .unwrap();
    assert_eq!(
        (seeded.users, seeded.orders, seeded.now),
        (300, 20_000, now)
    );
    assert!(stages.contains(&("orders", 20_000)));
    assert_eq!(stages.last(), Some(&("finish", 3)));

    let rows: Vec<(i64, i64, String, Decimal, chrono::DateTime<Utc>)> = client
        .rows_as(&pgpatterns::BuiltQuery::fixed(
            "SELECT id, user_id, status, total_amount, created_at FROM shop_orders",
        ))
        .await
        .unwrap();
    let tables = seed.tables();
    let (users, orders) = (tables.users, tables.orders);
    let since = now - Duration::days(30);
    for (n, status) in [(10i64, "completed"), (3, "refunded"), (1000, "completed")] {
        let report = TopN::<i64, Decimal>::new(
            &users.column("id").unwrap(),
            &orders.column("user_id").unwrap(),
            &orders.column("total_amount").unwrap(),
            n,
        )
        .extra(&users.column::<String>("username").unwrap())
        .extra(&users.column::<String>("email").unwrap())
        .window_since(&orders.column("created_at").unwrap(), since)
        .where_eq(&orders.column::<String>("status").unwrap(), status);
        let got = report.fetch_all(&client).await.unwrap();

        let mut per_user: BTreeMap<i64, (i64, Decimal)> = BTreeMap::new();
        for (_, user, st, amount, at) in &rows {
            if st == status && *at >= since {
                let e = per_user.entry(*user).or_default();
                e.0 += 1;
                e.1 += *amount;
            }
        }
        let mut want: Vec<(i64, i64, Decimal)> =
            per_user.into_iter().map(|(u, (c, s))| (u, c, s)).collect();
        want.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        want.truncate(n as usize);
        assert!(!want.is_empty());
        let got_keys: Vec<(i64, i64, Decimal)> = got
            .iter()
            .map(|r| (r.key, r.count, r.total.unwrap()))
            .collect();
        assert_eq!(got_keys, want, "top {n} {status}");
        let username = users.column::<String>("username").unwrap();
        let email = users.column::<String>("email").unwrap();
        for r in &got {
            assert_eq!(r.get(&username), Some(format!("user{}", r.key)));
            assert_eq!(r.get(&email), Some(format!("user{}@example.com", r.key)));
        }
    }

    // The advised index builds outside a transaction and serves the query.
    let report = TopN::<i64, Decimal>::new(
        &users.column("id").unwrap(),
        &orders.column("user_id").unwrap(),
        &orders.column("total_amount").unwrap(),
        10,
    )
    .window_since(&orders.column("created_at").unwrap(), since)
    .where_eq(&orders.column::<String>("status").unwrap(), "completed");
    let ddl = report.index("orders_top_n").unwrap();
    ddl.execute_outside_transaction(&client).await.unwrap();
    client
        .batch_execute("ANALYZE shop_orders; SET enable_seqscan = off")
        .await
        .unwrap();
    let q = report.build().unwrap();
    let plan = client
        .query(&format!("EXPLAIN {}", q.sql()), &q.params().as_params())
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(plan.contains("orders_top_n"), "{plan}");
}

/// The field of the `InvalidSpec` a report refuses to build with (and
/// `check`, `to_statement` agree).
fn refused<K: pgpatterns::SqlType, A: pgpatterns::Summable>(t: &TopN<K, A>) -> &'static str {
    let field = match t.check() {
        Err(Error::InvalidSpec { field, .. }) => field,
        other => panic!("expected InvalidSpec, got {other:?}"),
    };
    assert!(
        matches!(t.build(), Err(Error::InvalidSpec { field: f, .. }) if f == field),
        "{:?}",
        t.build()
    );
    assert!(t.to_statement().is_err());
    field
}

#[test]
fn bad_top_n_specs_are_refused() {
    let users = Table::new("users").unwrap();
    let orders = Table::new("orders").unwrap();
    let key = users.column::<i64>("id").unwrap();
    let fk = orders.column::<i64>("user_id").unwrap();
    let amount = orders.column::<Decimal>("total_amount").unwrap();
    assert_eq!(refused(&TopN::new(&key, &fk, &amount, 0)), "n");
    assert_eq!(
        refused(&TopN::new(
            &key,
            &key,
            &users.column::<Decimal>("x").unwrap(),
            3
        )),
        "fk"
    );
    assert_eq!(
        refused(&TopN::new(
            &key,
            &fk,
            &users.column::<Decimal>("x").unwrap(),
            3
        )),
        "amount"
    );
    let ok = TopN::new(&key, &fk, &amount, 3);
    ok.check().unwrap();
    ok.build().unwrap();
    assert_eq!(
        refused(
            &ok.clone()
                .extra(&orders.column::<String>("status").unwrap())
        ),
        "extra"
    );
    assert_eq!(refused(&ok.clone().extra(&key)), "extra");
    let name = users.column::<String>("name").unwrap();
    assert_eq!(refused(&ok.clone().extra(&name).extra(&name)), "extra");
    assert_eq!(
        refused(
            &ok.clone()
                .where_eq(&users.column::<String>("status").unwrap(), "x")
        ),
        "where_eq"
    );
    // The window's column is on the facts table, and one column only.
    let created = orders.column::<i64>("created_at").unwrap();
    assert_eq!(
        refused(
            &ok.clone()
                .window_since(&users.column::<i64>("t").unwrap(), 1)
        ),
        "window"
    );
    assert_eq!(
        refused(
            &ok.clone()
                .window_since(&created, 1)
                .window_until(&orders.column::<i64>("other").unwrap(), 2)
        ),
        "window"
    );
    ok.clone()
        .window_since(&created, 1)
        .window_until(&created, 2)
        .check()
        .unwrap();
    // Steps never fail, so the first problem is reported whatever comes
    // after it, and in either order.
    let a = ok
        .clone()
        .extra(&key)
        .where_eq(&users.column::<String>("status").unwrap(), "x");
    let b = ok
        .clone()
        .where_eq(&users.column::<String>("status").unwrap(), "x")
        .extra(&key);
    assert_eq!((refused(&a), refused(&b)), ("extra", "where_eq"));
    assert!(ok.index(&"x".repeat(64)).is_err());
}
