//! The seeders: the orders generator's shape, reproducibility and
//! progress; bad input refused by all four; all four in one schema;
//! prefixed datasets side by side.

use chrono::{TimeZone, Utc};
use pgpatterns::seed::moves::MovesSeed;
use pgpatterns::seed::orders::{OrdersSeed, OrdersTables};
use pgpatterns::seed::sales::SalesSeed;
use pgpatterns::seed::shop::ShopSeed;
use pgpatterns::seed::MAX_SEED_ROWS;
use pgpatterns::{BuiltQuery, Executor, Progress};

use crate::support::{client, schema};

async fn one(c: &tokio_postgres::Client, sql: &'static str) -> i64 {
    let rows: Vec<(i64,)> = c.rows_as(&BuiltQuery::fixed(sql)).await.unwrap();
    rows[0].0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_the_three_paths_reproducibly() {
    let schema = schema().await;
    let c = client(&schema).await;
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut seen: Vec<Progress> = Vec::new();
    let report = OrdersSeed::new(3000)
        .batch_size(700)
        .now(now)
        .run(&c, |p| seen.push(p))
        .await
        .unwrap();
    assert_eq!(report.orders, 3000);
    assert_eq!(one(&c, "SELECT count(*) FROM orders").await, 3000);
    assert_eq!(
        one(&c, "SELECT count(*) FROM order_status").await,
        report.statuses as i64
    );
    // Progress: 0, 700, …, 3000 orders, then the finishing steps.
    let orders: Vec<u64> = seen
        .iter()
        .filter(|p| p.stage == "orders")
        .map(|p| p.done)
        .collect();
    assert_eq!(orders, vec![0, 700, 1400, 2100, 2800, 3000]);
    assert_eq!(seen.last().map(|p| p.stage), Some("finish"));

    // Every order starts Pending; the paths are the seed's three, about a
    // third each; later statuses are later in time.
    let paths: Vec<(String, i64)> = c
        .rows_as(&BuiltQuery::fixed(
            "SELECT path, count(*) FROM (
                 SELECT string_agg(status, '>' ORDER BY created_at, id) AS path
                 FROM order_status GROUP BY order_id) p
             GROUP BY path ORDER BY path",
        ))
        .await
        .unwrap();
    let names: Vec<&str> = paths.iter().map(|p| p.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "Pending>Cancelled",
            "Pending>Complete",
            "Pending>Complete>Cancelled"
        ]
    );
    for (path, n) in &paths {
        assert!((800..1200).contains(n), "{path}: {n} of 3000");
    }
    assert_eq!(
        one(
            &c,
            "SELECT count(*) FROM orders o JOIN order_status s ON s.order_id = o.id
                 WHERE s.status = 'Pending' AND s.created_at <> o.created_at"
        )
        .await,
        0
    );
    assert_eq!(
        one(&c, "SELECT count(*) FROM orders WHERE created_at > '2026-01-01' OR created_at < '2025-01-01'").await,
        0
    );
    // Keys, the foreign key and the advised index exist.
    assert_eq!(
        one(&c, "SELECT count(*) FROM pg_constraint WHERE conrelid = 'order_status'::regclass AND contype IN ('p', 'f')").await,
        2
    );
    assert_eq!(
        one(&c, "SELECT count(*) FROM pg_indexes WHERE indexname = 'order_status_latest' AND schemaname = current_schema()").await,
        1
    );
    // The latest-status spec of the seeded tables answers.
    let shop = OrdersTables::default();
    let cancelled = shop
        .latest()
        .status_eq("Cancelled")
        .count(&c)
        .await
        .unwrap();
    let complete = shop.latest().status_eq("Complete").count(&c).await.unwrap();
    assert_eq!(cancelled + complete, 3000);
    assert_eq!(
        shop.latest().status_eq("Pending").count(&c).await.unwrap(),
        0
    );

    // Same seed and clock, same data.
    let digest = "SELECT hashtext(string_agg(order_id || status || created_at::text, ',' ORDER BY id))::int8 FROM order_status";
    let before = one(&c, digest).await;
    OrdersSeed::new(3000)
        .replace(true)
        .batch_size(1000)
        .now(now)
        .run(&c, |_| {})
        .await
        .unwrap();
    assert_eq!(one(&c, digest).await, before);
    OrdersSeed::new(3000)
        .replace(true)
        .seed(7)
        .now(now)
        .run(&c, |_| {})
        .await
        .unwrap();
    assert_ne!(one(&c, digest).await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sizes_are_refused_before_anything_is_sent() {
    let schema = schema().await;
    let c = client(&schema).await;
    let e = OrdersSeed::new(-1).run(&c, |_| {}).await.unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    let e = OrdersSeed::new(10)
        .batch_size(0)
        .run(&c, |_| {})
        .await
        .unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    // Absurd sizes: refused (no overflow, no endless load).
    for seed in [
        OrdersSeed::new(i64::MAX).batch_size(i64::MAX),
        OrdersSeed::new(MAX_SEED_ROWS + 1),
        OrdersSeed::new(1_000_000).drafts(i64::MAX),
    ] {
        let e = seed.run(&c, |_| {}).await.unwrap_err();
        assert!(e.is_invalid_input(), "{e}");
    }
    for (rows, batch) in [(i64::MAX, i64::MAX), (10, 0)] {
        let e = SalesSeed::new(rows)
            .batch_size(batch)
            .run(&c, |_| {})
            .await
            .unwrap_err();
        assert!(e.is_invalid_input(), "{e}");
    }
    for seed in [
        MovesSeed::new(0),
        MovesSeed::new(MAX_SEED_ROWS + 1),
        MovesSeed::new(10).batch_size(0),
    ] {
        let e = seed.run(&c, |_| {}).await.unwrap_err();
        assert!(e.is_invalid_input(), "{e}");
    }
    for seed in [
        ShopSeed::new(-1),
        ShopSeed::new(MAX_SEED_ROWS + 1),
        ShopSeed::new(10).users(0),
        ShopSeed::new(10).users(MAX_SEED_ROWS + 1),
        ShopSeed::new(10).days(0),
        ShopSeed::new(10).days(i64::MAX),
        ShopSeed::new(10).batch_size(0),
    ] {
        let e = seed.run(&c, |_| {}).await.unwrap_err();
        assert!(e.is_invalid_input(), "{e}");
    }
    let tables: Vec<(i64,)> = c
        .rows_as(&BuiltQuery::fixed(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()",
        ))
        .await
        .unwrap();
    assert_eq!(tables, vec![(0,)]);
    // Without `replace`, existing tables are an error, not a silent append.
    OrdersSeed::new(5).run(&c, |_| {}).await.unwrap();
    let e = OrdersSeed::new(5).run(&c, |_| {}).await.unwrap_err();
    assert_eq!(e.code(), Some("42P07"), "{e}");
    OrdersSeed::new(5)
        .replace(true)
        .run(&c, |_| {})
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_four_seeders_share_one_schema_with_their_default_names() {
    let schema = schema().await;
    let c = client(&schema).await;
    let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let orders = OrdersSeed::new(600).now(now);
    let moves = MovesSeed::new(400).now(now);
    let sample = SalesSeed::sample();
    let sales = SalesSeed::new(3000).batch_size(1000).now(now);
    let shop = ShopSeed::new(3000).users(200).days(60).now(now);
    assert_eq!(orders.run(&c, |_| {}).await.unwrap().orders, 600);
    assert_eq!(moves.run(&c, |_| {}).await.unwrap().now, now);
    assert_eq!(sample.run(&c, |_| {}).await.unwrap().rows, 13);
    assert_eq!(sales.run(&c, |_| {}).await.unwrap().rows, 3000);
    let seeded = shop.run(&c, |_| {}).await.unwrap();
    assert_eq!((seeded.users, seeded.orders), (200, 3000));
    // 2 + 7 + 1 + 1 + 2 tables, side by side.
    assert_eq!(
        one(
            &c,
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()"
        )
        .await,
        13
    );

    // One query of each family, on the handles of the seeds.
    let latest = orders.tables().latest();
    let complete = latest
        .clone()
        .status_eq("Complete")
        .count(&c)
        .await
        .unwrap();
    let cancelled = latest.status_eq("Cancelled").count(&c).await.unwrap();
    assert_eq!(complete + cancelled, 600);

    let since = moves
        .tables()
        .full_graph()
        .since(now - chrono::Duration::days(30))
        .count(&c)
        .await
        .unwrap();
    assert!((1..=400).contains(&since), "{since}");

    let detail_and_total = sample.tables().dashboard(true).fetch_all(&c).await;
    assert_eq!(detail_and_total.unwrap().len(), 6 + 1);
    let big = sales.tables().dashboard(false).fetch_all(&c).await;
    let big = big.unwrap().len();
    assert!((2..=1001).contains(&big), "{big}");

    let t = shop.tables();
    let top = pgpatterns::ops::TopN::<i64, rust_decimal::Decimal>::new(
        &t.user_id,
        &t.order_user_id,
        &t.total_amount,
        5,
    )
    .window_since(&t.order_created_at, now - chrono::Duration::days(30))
    .where_eq(&t.status, "completed")
    .fetch_all(&c)
    .await
    .unwrap();
    assert_eq!(top.len(), 5);
    assert!(top.windows(2).all(|w| w[0].total >= w[1].total));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefixed_and_schema_qualified_orders_datasets_coexist() {
    let schema = schema().await;
    let c = client(&schema).await;
    let plain = OrdersSeed::new(100);
    let a = OrdersSeed::new(300).prefix("a_").unwrap();
    // Any text is a name: quoted, never spliced.
    let b = OrdersSeed::new(700).seed(3).prefix("B \"x\"; --").unwrap();
    for seed in [&plain, &a, &b] {
        seed.run(&c, |_| {}).await.unwrap();
    }
    assert_eq!(one(&c, "SELECT count(*) FROM a_orders").await, 300);
    assert_eq!(
        one(&c, r#"SELECT count(*) FROM "B ""x""; --orders""#).await,
        700
    );
    assert_eq!(
        one(&c, "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname LIKE '%order_status_latest'").await,
        3
    );
    for (seed, n) in [(&plain, 100), (&a, 300), (&b, 700)] {
        let latest = seed.tables().latest();
        let done = latest
            .clone()
            .status_eq("Complete")
            .count(&c)
            .await
            .unwrap();
        let cancelled = latest.status_eq("Cancelled").count(&c).await.unwrap();
        assert_eq!(done + cancelled, n);
    }
    // `replace` drops this dataset's tables only.
    a.clone().replace(true).run(&c, |_| {}).await.unwrap();
    assert_eq!(one(&c, "SELECT count(*) FROM orders").await, 100);

    // Another schema, created on demand; the handles are qualified.
    let current: Vec<(String,)> = c
        .rows_as(&BuiltQuery::fixed("SELECT current_schema()::text"))
        .await
        .unwrap();
    let other = format!("{}_other", current[0].0);
    let elsewhere = OrdersSeed::new(50).in_schema(&other).unwrap();
    elsewhere.run(&c, |_| {}).await.unwrap();
    let t = elsewhere.tables();
    assert_eq!(t.orders.display_name(), format!("{other}.orders"));
    let n = t.latest().status_eq("Complete").count(&c).await;
    let m = t.latest().status_eq("Cancelled").count(&c).await;
    c.run_script(&format!("DROP SCHEMA \"{other}\" CASCADE"))
        .await
        .unwrap();
    assert_eq!(n.unwrap() + m.unwrap(), 50);

    // Bad names are refused when set, before any SQL.
    let e = OrdersSeed::new(1).prefix("x".repeat(50)).unwrap_err();
    assert!(
        matches!(e, pgpatterns::Error::InvalidIdentifier { .. }),
        "{e}"
    );
    assert!(ShopSeed::new(1)
        .prefix("a\0")
        .unwrap_err()
        .is_invalid_input());
    assert!(MovesSeed::new(1)
        .in_schema("")
        .unwrap_err()
        .is_invalid_input());
    assert!(SalesSeed::sample()
        .in_schema("s".repeat(64))
        .unwrap_err()
        .is_invalid_input());
}
