//! `Auto` decides from the catalog as it is now: a denormalized column
//! counts only while its triggers maintain it, and a cached decision is made
//! again once the indexes or triggers it depended on change — without
//! clearing the cache.

use std::time::{Duration, Instant};

use pgpatterns::seed::moves::{MovesSeed, MovesTables};
use pgpatterns::seed::orders::{OrdersSeed, OrdersTables};
use pgpatterns::{
    Agg, Choice, IndexOptions, LatestStatus, LatestStrategy, Rollup, RollupStrategy, Shape,
    SinceStrategy, StrategyCache, Table,
};

use crate::support::{client, schema, with_sync_client};

fn fresh() -> StrategyCache {
    StrategyCache::new(Duration::from_secs(60))
}

/// The names of the indexes on `table`.
async fn indexes(client: &tokio_postgres::Client, table: &str) -> Vec<String> {
    client
        .query(
            "SELECT indexrelid::regclass::text FROM pg_index
             WHERE indrelid = to_regclass($1) ORDER BY 1",
            &[&table],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

/// Drops the indexes on `tables` that are not in `before`.
async fn drop_new_indexes(client: &tokio_postgres::Client, tables: &[&str], before: &[String]) {
    for t in tables {
        for index in indexes(client, t).await {
            if !before.contains(&index) {
                // a regclass text is already quoted as needed
                client
                    .batch_execute(&format!("DROP INDEX {index}"))
                    .await
                    .unwrap();
            }
        }
    }
}

/// The trigger names that execute the denormalized column's function.
async fn triggers_of(client: &tokio_postgres::Client, function: &str) -> Vec<String> {
    client
        .query(
            "SELECT tgname::text FROM pg_trigger
             WHERE tgfoid = to_regprocedure(quote_ident($1) || '()') ORDER BY 1",
            &[&function],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The entity ids of the first page of 40, fetched as a caller would.
async fn page_ids(spec: &LatestStatus<String>, client: &tokio_postgres::Client) -> Vec<i64> {
    spec.fetch_page::<(), i64>(client, &pgpatterns::PageRequest::new(40))
        .await
        .unwrap()
        .keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_auto_uses_the_denormalized_column_only_while_maintained() {
    let schema = schema().await;
    let mut client = client(&schema).await;
    OrdersSeed::new(2000).run(&client, |_| {}).await.unwrap();
    let shop = OrdersTables::default();
    let column = shop.orders.column::<String>("status").unwrap();
    let spec = shop
        .latest()
        .denormalized(&column)
        .status_eq("Shelved")
        .strategy(LatestStrategy::Auto);
    let d = spec.denormalize().unwrap();
    d.install(&mut client).await.unwrap();
    d.backfill::<i64, _>(&mut client, 1000, |_| {})
        .await
        .unwrap();
    let cache = fresh();
    macro_rules! decide {
        ($shape:expr) => {
            spec.explain_choice_with(&cache, &client, $shape)
                .await
                .unwrap()
        };
    }

    // Installed, backfilled: the column answers.
    let c = decide!(Shape::Count);
    assert_eq!(c.strategy, LatestStrategy::Denormalized, "{c}");
    assert!(!c.cached);
    let c = decide!(Shape::Count);
    assert_eq!(c.strategy, LatestStrategy::Denormalized, "{c}");
    assert!(c.cached, "{c}");
    let global = spec.explain_choice(&client, Shape::Count).await.unwrap();
    assert_eq!(global.strategy, LatestStrategy::Denormalized, "{global}");

    // Uninstalled (the column stays): writes no longer reach it, so Auto
    // must read the history.
    d.uninstall(&mut client).await.unwrap();
    client
        .batch_execute(
            "INSERT INTO order_status (id, order_id, status, created_at)
             SELECT 10000000 + o, o, 'Shelved', now() + interval '1 day'
             FROM generate_series(1, 50) o",
        )
        .await
        .unwrap();
    let distinct_on = spec.clone().strategy(LatestStrategy::DistinctOn);
    let denormalized = spec.clone().strategy(LatestStrategy::Denormalized);
    let want = distinct_on.count(&client).await.unwrap();
    assert_eq!(want, 50);
    assert_eq!(denormalized.count(&client).await.unwrap(), 0, "drifted");
    for shape in [Shape::Count, Shape::Page { limit: 40 }] {
        let c = decide!(shape);
        assert_ne!(c.strategy, LatestStrategy::Denormalized, "{c}");
        assert!(!c.cached, "{c}");
        assert!(
            c.reason
                .contains("denormalized column not maintained: triggers missing or disabled"),
            "{c}"
        );
        let rejected = c
            .candidates
            .iter()
            .find(|e| e.strategy == LatestStrategy::Denormalized)
            .and_then(|e| e.rejected.clone());
        assert!(
            rejected.is_some_and(|r| r.contains("not maintained")),
            "{c}"
        );
    }
    // The global path (count, fetch_page, resolve) agrees with DistinctOn.
    let global = spec.explain_choice(&client, Shape::Count).await.unwrap();
    assert_ne!(global.strategy, LatestStrategy::Denormalized, "{global}");
    assert_eq!(spec.count(&client).await.unwrap(), want);
    let page = page_ids(&spec, &client).await;
    assert_eq!(page, page_ids(&distinct_on, &client).await);
    assert_eq!(page.len(), 40);
    let resolved = spec.resolve(&client, Shape::Count).await.unwrap();
    assert_ne!(resolved.chosen_strategy(), LatestStrategy::Denormalized);

    // Installed again and backfilled: the column answers again.
    d.install(&mut client).await.unwrap();
    d.backfill::<i64, _>(&mut client, 1000, |_| {})
        .await
        .unwrap();
    let c = decide!(Shape::Count);
    assert_eq!(c.strategy, LatestStrategy::Denormalized, "{c}");
    assert_eq!(spec.count(&client).await.unwrap(), want);

    // One trigger disabled: the column is not maintained.
    let triggers = triggers_of(&client, d.function_name().as_str()).await;
    assert_eq!(triggers.len(), 4, "{triggers:?}");
    for t in &triggers {
        let alter = |verb: &str| format!("ALTER TABLE order_status {verb} TRIGGER {}", quote(t));
        client.batch_execute(&alter("DISABLE")).await.unwrap();
        let c = decide!(Shape::Count);
        assert_ne!(
            c.strategy,
            LatestStrategy::Denormalized,
            "{t} disabled: {c}"
        );
        assert!(c.reason.contains("not maintained"), "{c}");
        let global = spec.explain_choice(&client, Shape::Count).await.unwrap();
        assert_ne!(global.strategy, LatestStrategy::Denormalized, "{global}");
        client.batch_execute(&alter("ENABLE")).await.unwrap();
        let c = decide!(Shape::Count);
        assert_eq!(c.strategy, LatestStrategy::Denormalized, "{t} enabled: {c}");
    }

    // The column dropped: not maintained either (and Auto still answers).
    d.uninstall(&mut client).await.unwrap();
    client
        .batch_execute("ALTER TABLE orders DROP COLUMN status")
        .await
        .unwrap();
    let c = decide!(Shape::Count);
    assert_ne!(c.strategy, LatestStrategy::Denormalized, "{c}");
    assert!(c.reason.contains("denormalized column missing"), "{c}");
    assert_eq!(spec.count(&client).await.unwrap(), want);
}

/// The decision's strategy, whether it was cached, and the fk_index
/// statistic.
fn fk_index(c: &Choice<LatestStrategy>) -> f64 {
    c.statistics
        .iter()
        .find(|s| s.name == "fk_index")
        .map_or(f64::NAN, |s| s.value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_auto_sees_the_advised_index_come_and_go() {
    let schema = schema().await;
    let client = client(&schema).await;
    OrdersSeed::new(1000)
        .with_index(false)
        .run(&client, |_| {})
        .await
        .unwrap();
    let spec = OrdersTables::default()
        .latest()
        .status_eq("Complete")
        .strategy(LatestStrategy::Auto);
    let before = indexes(&client, "order_status").await;
    let cache = fresh();
    let count = Shape::Count;
    let page = Shape::Page { limit: 50 };

    // Without the index: every strategy reads the whole history.
    let d1 = spec
        .explain_choice_with(&cache, &client, count)
        .await
        .unwrap();
    assert_eq!(d1.strategy, LatestStrategy::NotExists, "{d1}");
    assert_eq!(fk_index(&d1), 0.0);
    let p1 = spec
        .explain_choice_with(&cache, &client, page)
        .await
        .unwrap();
    assert_eq!(p1.strategy, LatestStrategy::Window, "{p1}");
    assert!(
        spec.explain_choice_with(&cache, &client, count)
            .await
            .unwrap()
            .cached
    );
    let g1 = spec.explain_choice(&client, count).await.unwrap();
    assert_eq!(g1.strategy, LatestStrategy::NotExists, "{g1}");

    // The advised index: the very next call decides with it.
    for q in spec.index_advice(false) {
        q.execute(&client).await.unwrap();
    }
    let d2 = spec
        .explain_choice_with(&cache, &client, count)
        .await
        .unwrap();
    assert!(!d2.cached, "{d2}");
    assert_eq!(fk_index(&d2), 1.0, "{d2}");
    assert_eq!(d2.strategy, LatestStrategy::DistinctOn, "{d2}");
    let p2 = spec
        .explain_choice_with(&cache, &client, page)
        .await
        .unwrap();
    assert_eq!(p2.strategy, LatestStrategy::Lateral, "{p2}");
    let g2 = spec.explain_choice(&client, count).await.unwrap();
    assert_eq!(g2.strategy, LatestStrategy::DistinctOn, "{g2}");
    assert_eq!(
        spec.resolve(&client, page).await.unwrap().chosen_strategy(),
        LatestStrategy::Lateral
    );

    // A cache hit costs one small catalog query: measure it.
    let runs = 200;
    let started = Instant::now();
    for _ in 0..runs {
        let hit = spec
            .explain_choice_with(&cache, &client, count)
            .await
            .unwrap();
        assert!(hit.cached);
    }
    let per_hit = started.elapsed() / runs;
    let started = Instant::now();
    for _ in 0..runs {
        client.simple_query("SELECT 1").await.unwrap();
    }
    let per_trip = started.elapsed() / runs;
    eprintln!("latest Auto cache hit: {per_hit:?} (a bare SELECT 1 round trip: {per_trip:?})");

    // Dropped: back to the first decision (the catalog is as it was).
    drop_new_indexes(&client, &["order_status"], &before).await;
    let d3 = spec
        .explain_choice_with(&cache, &client, count)
        .await
        .unwrap();
    assert_eq!(d3.strategy, d1.strategy, "{d3}");
    assert_eq!(fk_index(&d3), 0.0, "{d3}");
    let p3 = spec
        .explain_choice_with(&cache, &client, page)
        .await
        .unwrap();
    assert_eq!(p3.strategy, LatestStrategy::Window, "{p3}");
    let g3 = spec.explain_choice(&client, count).await.unwrap();
    assert_eq!(g3.strategy, LatestStrategy::NotExists, "{g3}");
    assert_eq!(spec.count(&client).await.unwrap(), {
        let explicit = spec.clone().strategy(LatestStrategy::DistinctOn);
        explicit.count(&client).await.unwrap()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_auto_sees_the_advised_indexes_come_and_go() {
    let schema = schema().await;
    let client = client(&schema).await;
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let now = MovesSeed::new(5_000)
        .run(&client, |_| {})
        .await
        .unwrap()
        .now;
    client.batch_execute("ANALYZE").await.unwrap();
    let graph = MovesTables::default().seed_graph();
    let tables = [
        "moves",
        "orders",
        "mto_shipments",
        "mto_service_items",
        "payment_requests",
    ];
    let mut before = Vec::new();
    for t in tables {
        before.extend(indexes(&client, t).await);
    }
    let q = graph
        .since(now - chrono::Duration::days(365))
        .strategy(SinceStrategy::Auto);
    let cache = fresh();
    let shape = Shape::Page { limit: 50 };
    let plans = |c: &Choice<SinceStrategy>| -> Vec<Option<String>> {
        c.candidates.iter().map(|e| e.plan.clone()).collect()
    };

    let d1 = q.explain_choice_with(&cache, &client, shape).await.unwrap();
    assert!(!d1.cached);
    assert!(
        q.explain_choice_with(&cache, &client, shape)
            .await
            .unwrap()
            .cached
    );
    let g1 = q.explain_choice(&client, shape).await.unwrap();
    assert_eq!(g1.strategy, d1.strategy);
    // The session's hash memory is part of the state: decided again under
    // another `work_mem`, and the first decision found again after RESET.
    client.batch_execute("SET work_mem = '64kB'").await.unwrap();
    let small = q.explain_choice_with(&cache, &client, shape).await.unwrap();
    assert!(!small.cached, "{small}");
    client.batch_execute("RESET work_mem").await.unwrap();
    let again = q.explain_choice_with(&cache, &client, shape).await.unwrap();
    assert!(again.cached && again.strategy == d1.strategy, "{again}");

    let advice = graph.index_advice(IndexOptions::new(SinceStrategy::Auto));
    assert!(!advice.is_empty());
    for i in &advice {
        i.execute(&client).await.unwrap();
    }
    // Decided again, from plans that use the new indexes.
    let d2 = q.explain_choice_with(&cache, &client, shape).await.unwrap();
    assert!(!d2.cached, "{d2}");
    assert_ne!(plans(&d2), plans(&d1), "{d1}\n{d2}");
    let g2 = q.explain_choice(&client, shape).await.unwrap();
    assert!(!g2.cached, "{g2}");
    assert_eq!(g2.strategy, d2.strategy);
    assert!(
        q.explain_choice_with(&cache, &client, shape)
            .await
            .unwrap()
            .cached
    );
    eprintln!("since Auto without the advised indexes: {d1}\nwith them: {d2}");

    // Dropped: the first decision again.
    drop_new_indexes(&client, &tables, &before).await;
    let d3 = q.explain_choice_with(&cache, &client, shape).await.unwrap();
    assert_eq!(d3.strategy, d1.strategy, "{d3}");
    assert_eq!(plans(&d3), plans(&d1), "{d1}\n{d3}");
    let count = q
        .explain_choice_with(&cache, &client, Shape::Count)
        .await
        .unwrap();
    assert!(!count.cached);
    // Auto's rows are still every strategy's rows.
    let want = q
        .clone()
        .strategy(SinceStrategy::UnionIn)
        .count(&client)
        .await
        .unwrap();
    assert_eq!(q.count(&client).await.unwrap(), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_auto_decides_again_when_an_index_changes() {
    let schema = schema().await;
    let client = client(&schema).await;
    client
        .batch_execute(
            "CREATE TABLE facts (id int, a text, b text, n int);
             INSERT INTO facts SELECT g, 'a' || (g % 10), 'b' || (g % 5), g % 7
             FROM generate_series(1, 5000) g;
             ANALYZE facts;",
        )
        .await
        .unwrap();
    let t = Table::new("facts").unwrap();
    let r = Rollup::new(&t)
        .dimension(&pgpatterns::Dim::new(&t.column::<String>("a").unwrap()))
        .dimension(&pgpatterns::Dim::new(&t.column::<String>("b").unwrap()))
        .metric(&pgpatterns::Metric::new("total", Agg::count_all()))
        .with_total()
        .strategy(RollupStrategy::Auto);
    let cache = fresh();
    let d1 = r.explain_choice_with(&cache, &client).await.unwrap();
    assert!(!d1.cached);
    assert!(r.explain_choice_with(&cache, &client).await.unwrap().cached);

    client
        .batch_execute("CREATE INDEX facts_a_b ON facts (a, b)")
        .await
        .unwrap();
    let d2 = r.explain_choice_with(&cache, &client).await.unwrap();
    assert!(!d2.cached, "{d2}");
    let g2 = r.explain_choice(&client).await.unwrap();
    assert!(!g2.cached, "{g2}");
    assert!(r.explain_choice_with(&cache, &client).await.unwrap().cached);
    // The blocking path reads the same catalog state.
    let blocking_cache = std::sync::Arc::new(fresh());
    let (r2, bc) = (r.clone(), blocking_cache.clone());
    let b1 = with_sync_client(&schema, move |c| {
        let first = r2.explain_choice_with_blocking(&bc, c).unwrap();
        c.batch_execute("DROP INDEX facts_a_b").unwrap();
        let second = r2.explain_choice_with_blocking(&bc, c).unwrap();
        (first.cached, second.cached)
    })
    .await;
    assert_eq!(b1, (false, false));

    // Dropped: the catalog is as it was first, and so is the decision.
    let d3 = r.explain_choice_with(&cache, &client).await.unwrap();
    assert!(d3.cached, "{d3}");
    assert_eq!(d3.strategy, d1.strategy);
}
