//! Every family's run verbs through all three clients: tokio-postgres and a
//! deadpool pool (async), and the synchronous `postgres` client (the
//! `_blocking` verbs). The answers must be identical.

use chrono::{DateTime, TimeZone, Utc};
use pgpatterns::seed::moves::{MovesSeed, MovesTables};
use pgpatterns::seed::orders::{OrdersSeed, OrdersTables};
use pgpatterns::seed::sales::{SalesSeed, SalesTables};
use pgpatterns::{
    BuiltQuery, Compare, Contender, LatestStrategy, PageRequest, RollupRow, SinceStrategy, SqlType,
};

use crate::support::{client, pool, schema, with_sync_client};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap()
}

/// What one client sees: latest count and first page keys, the rollup
/// rows, plain queries; or since count, first page keys and what changed.
#[derive(Debug, PartialEq)]
enum Answers {
    Latest {
        count: i64,
        page: Vec<i64>,
        auto: i64,
        /// Each row's debug text without its spec id (which differs
        /// between two `Rollup` values).
        rollup: Vec<String>,
        plain: Vec<(i64,)>,
        one: (i64,),
        optional: Option<(i64,)>,
    },
    Since {
        count: i64,
        page: Vec<i64>,
        changes: usize,
    },
}

fn plain() -> BuiltQuery {
    BuiltQuery::fixed_with(
        "SELECT g FROM generate_series(1, $1::int8) AS g",
        [3i64.into_value()],
    )
}

fn one() -> BuiltQuery {
    BuiltQuery::fixed("SELECT 7::int8")
}

fn none() -> BuiltQuery {
    BuiltQuery::fixed("SELECT 1::int8 WHERE false")
}

fn rows_text(rows: Vec<RollupRow>) -> Vec<String> {
    rows.iter()
        .map(|r| {
            let text = format!("{r:?}");
            let at = text.find("names:").unwrap_or(0);
            text[at..].to_owned()
        })
        .collect()
}

/// `$a` awaited (async clients) or `$b` (the blocking client).
macro_rules! v {
    (async; $a:expr; $b:expr) => {
        $a.await.unwrap()
    };
    (blocking; $a:expr; $b:expr) => {
        $b.unwrap()
    };
}

/// The same verbs on `$db`: `&client` or `&pool` (`async`), or
/// `&mut postgres::Client` (`blocking`).
macro_rules! latest_answers {
    ($db:expr, $m:tt) => {{
        let latest = OrdersTables::default().latest().status_eq("Complete");
        let auto = latest.clone().strategy(LatestStrategy::Auto);
        let rollup = SalesTables::sample().dashboard(false);
        let req = PageRequest::new(10);
        let page = v!($m; latest.fetch_page::<(), i64>($db, &req);
                          latest.fetch_page_blocking::<(), i64, _>($db, &req));
        Answers::Latest {
            count: v!($m; latest.count($db); latest.count_blocking($db)),
            page: page.keys,
            auto: v!($m; auto.count($db); auto.count_blocking($db)),
            rollup: rows_text(v!($m; rollup.fetch_all($db); rollup.fetch_all_blocking($db))),
            plain: v!($m; plain().fetch_all($db); plain().fetch_all_blocking($db)),
            one: v!($m; one().fetch_one($db); one().fetch_one_blocking($db)),
            optional: v!($m; none().fetch_optional($db); none().fetch_optional_blocking($db)),
        }
    }};
}

macro_rules! since_answers {
    ($db:expr, $m:tt) => {{
        let since = MovesTables::default()
            .seed_graph()
            .since(now() - chrono::Duration::days(2))
            .strategy(SinceStrategy::Exists);
        let req = PageRequest::new(10);
        let page = v!($m; since.fetch_page::<(i64,)>($db, &req);
                          since.fetch_page_blocking::<(i64,), _>($db, &req));
        Answers::Since {
            count: v!($m; since.count($db); since.count_blocking($db)),
            changes: v!($m; since.fetch_changes($db, &page.keys);
                            since.fetch_changes_blocking($db, &page.keys)).len(),
            page: page.keys,
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_answers_the_same_through_all_three_clients() {
    // One schema per client side: the orders and sales data in one, the
    // moves in the other.
    let (a, b) = (schema().await, schema().await);
    // Seeded with the blocking verbs: the sync client writes, the async
    // clients read what it wrote.
    with_sync_client(&a, |sc| {
        OrdersSeed::new(400).run_blocking(sc, |_| {}).unwrap();
        SalesSeed::sample().run_blocking(sc, |_| {}).unwrap();
        BuiltQuery::fixed("ANALYZE").execute_blocking(sc).unwrap();
    })
    .await;
    with_sync_client(&b, |sc| {
        MovesSeed::new(300)
            .now(now())
            .run_blocking(sc, |_| {})
            .unwrap();
        BuiltQuery::fixed("ANALYZE").execute_blocking(sc).unwrap();
    })
    .await;
    for schema in [&a, &b] {
        let is_a = std::ptr::eq(schema, &a);
        let c = client(schema).await;
        let p = pool(schema);
        let (by_tokio, by_pool) = if is_a {
            (latest_answers!(&c, async), latest_answers!(&p, async))
        } else {
            (since_answers!(&c, async), since_answers!(&p, async))
        };
        let by_sync = with_sync_client(schema, move |sc| {
            if is_a {
                latest_answers!(sc, blocking)
            } else {
                since_answers!(sc, blocking)
            }
        })
        .await;
        match &by_tokio {
            Answers::Latest {
                count,
                page,
                rollup,
                plain,
                one,
                optional,
                ..
            } => {
                assert!(*count > 0);
                assert_eq!(page.len(), 10);
                assert!(!rollup.is_empty());
                assert_eq!(plain, &vec![(1,), (2,), (3,)]);
                assert_eq!(one, &(7,));
                assert_eq!(optional, &None);
            }
            Answers::Since {
                count,
                page,
                changes,
            } => {
                assert!(*count > 0);
                assert!(!page.is_empty() && *changes > 0);
            }
        }
        assert_eq!(by_pool, by_tokio, "deadpool vs tokio-postgres");
        assert_eq!(by_sync, by_tokio, "postgres (blocking) vs tokio-postgres");
    }
}

/// Writes through the blocking verbs: the denormalized column's install,
/// backfill and drift check, and a comparison of two strategies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_writes_and_maintenance() {
    let schema = schema().await;
    let c = client(&schema).await;
    OrdersSeed::new(200).run(&c, |_| {}).await.unwrap();
    c.batch_execute("ALTER TABLE orders ADD COLUMN status text")
        .await
        .unwrap();
    let shop = OrdersTables::default();
    let spec = shop
        .latest()
        .denormalized(&shop.orders.column::<String>("status").unwrap());
    let d = spec.denormalize().unwrap();
    let (drift_before, drift_after, winner) = with_sync_client(&schema, move |sc| {
        d.install_blocking(sc).unwrap();
        let before = d.drift_count_blocking(sc).unwrap();
        let report = d.backfill_blocking::<i64, _>(sc, 50, |_| {}).unwrap();
        assert_eq!(report.entities, 200);
        let after = d.drift_count_blocking(sc).unwrap();
        let count = |s: LatestStrategy| spec.clone().strategy(s).count_query().unwrap();
        let cmp = Compare::new(2)
            .run_blocking(
                sc,
                &[
                    Contender::new("distinct on", count(LatestStrategy::DistinctOn)),
                    Contender::new("denormalized", count(LatestStrategy::Denormalized)),
                ],
            )
            .unwrap();
        d.uninstall_blocking(sc).unwrap();
        (before, after, cmp.best().label.clone())
    })
    .await;
    assert!(drift_before > 0, "the column starts empty");
    assert_eq!(drift_after, 0);
    assert!(["distinct on", "denormalized"].contains(&winner.as_str()));
}
