//! `Auto` on fixtures where one strategy is clearly best: it picks that one,
//! `explain_choice` says why, and its rows equal the explicit strategies'.

use std::time::Duration;

use chrono::Utc;
use pgpatterns::seed::moves::{MovesSeed, MovesTables};
use pgpatterns::seed::orders::{OrdersSeed, OrdersTables};
use pgpatterns::{
    Agg, BuiltQuery, Choice, Error, Executor, IndexOptions, LatestStatus, LatestStrategy,
    PageRequest, Rollup, RollupStrategy, Shape, SinceStrategy, StrategyCache, Table,
};

use crate::support::{client, schema, with_sync_client};

fn fresh() -> StrategyCache {
    StrategyCache::new(Duration::from_secs(60))
}

/// The ids of the first page of 40, fetched as a caller would (`Auto`
/// resolved against the database).
async fn first_page_ids(spec: &LatestStatus<String>, client: &tokio_postgres::Client) -> Vec<i64> {
    spec.fetch_page::<(), i64>(client, &pgpatterns::PageRequest::new(40))
        .await
        .unwrap()
        .keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_auto_follows_history_length_and_the_index() {
    let schema = schema().await;
    let client = client(&schema).await;
    let shop = OrdersTables::default();
    // (drafts, index) → expected count and page strategies
    let cases = [
        (0, true, LatestStrategy::DistinctOn, LatestStrategy::Lateral),
        (30, true, LatestStrategy::Lateral, LatestStrategy::Lateral),
        (0, false, LatestStrategy::NotExists, LatestStrategy::Window),
        (
            30,
            false,
            LatestStrategy::NotExists,
            LatestStrategy::NotExists,
        ),
    ];
    for (drafts, index, count_pick, page_pick) in cases {
        // Small: without the index, Lateral and SkipScan scan the history per
        // entity.
        OrdersSeed::new(1000)
            .replace(true)
            .drafts(drafts)
            .with_index(index)
            .run(&client, |_| {})
            .await
            .unwrap();
        let spec = shop
            .latest()
            .status_eq("Complete")
            .strategy(LatestStrategy::Auto);
        let cache = fresh();
        let ctx = format!("drafts {drafts}, index {index}");
        let count = spec
            .explain_choice_with(&cache, &client, Shape::Count)
            .await
            .unwrap();
        assert_eq!(count.strategy, count_pick, "{ctx}:\n{count}");
        assert!(!count.cached);
        let per = count
            .statistics
            .iter()
            .find(|s| s.name == "history_per_entity")
            .unwrap()
            .value;
        assert!(
            (per - (drafts as f64 + 2.33)).abs() < 1.0,
            "{ctx}: {per}\n{count}"
        );
        let shown = count.to_string();
        assert!(
            shown.contains("Auto chose") && shown.contains("history_per_entity"),
            "{shown}"
        );
        if index {
            assert!(count.reason.contains("per entity"), "{}", count.reason);
        } else {
            assert!(count.reason.contains("no index"), "{}", count.reason);
            let lateral = count
                .candidates
                .iter()
                .find(|c| c.strategy == LatestStrategy::Lateral)
                .unwrap();
            assert!(lateral.rejected.as_deref().unwrap().contains("index"));
        }
        let page = spec
            .explain_choice_with(&cache, &client, Shape::Page { limit: 50 })
            .await
            .unwrap();
        assert_eq!(page.strategy, page_pick, "{ctx}:\n{page}");
        // the second call comes from the cache
        let again = spec
            .explain_choice_with(&cache, &client, Shape::Count)
            .await
            .unwrap();
        assert!(again.cached);
        assert_eq!(again.strategy, count.strategy);

        // Auto's answers are every strategy's answers.
        let want = spec.count(&client).await.unwrap();
        let first = first_page_ids(&spec, &client).await;
        assert!(want > 0 && first.len() == 40, "{ctx}");
        for s in LatestStrategy::FROM_HISTORY {
            let explicit = spec.clone().strategy(s);
            assert_eq!(explicit.count(&client).await.unwrap(), want, "{ctx} {s:?}");
            assert_eq!(
                first_page_ids(&explicit, &client).await,
                first,
                "{ctx} {s:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_auto_follows_the_window() {
    let schema = schema().await;
    let client = client(&schema).await;
    client.batch_execute("SET TimeZone = 'UTC'").await.unwrap();
    let now = MovesSeed::new(40_000)
        .run(&client, |_| {})
        .await
        .unwrap()
        .now;
    let graph = MovesTables::default().seed_graph();
    for q in graph.index_advice(IndexOptions::new(SinceStrategy::Auto)) {
        q.execute(&client).await.unwrap();
    }
    client.batch_execute("ANALYZE").await.unwrap();

    // Nothing changed since tomorrow: a selective count looks up just the
    // changed roots.
    let narrow = graph
        .since(now + chrono::Duration::days(1))
        .strategy(SinceStrategy::Auto);
    let c = narrow
        .explain_choice_with(&fresh(), &client, Shape::Count)
        .await
        .unwrap();
    assert_eq!(c.strategy, SinceStrategy::SemiJoin, "{c}");
    assert!(c.reason.contains("narrow window"), "{c}");
    assert_eq!(
        c.candidates.len(),
        SinceStrategy::ALL.len(),
        "every plan is evidence"
    );
    assert!(c.candidates.iter().all(|e| e.cost.is_some()));

    let stat = |c: &pgpatterns::Choice<SinceStrategy>, n: &str| {
        c.statistics.iter().find(|s| s.name == n).unwrap().value
    };
    // A wider window whose changed keys fit in memory: one hashed IN.
    let mut hashed = 0;
    for days in [30, 60, 120, 240] {
        let q = graph
            .since(now - chrono::Duration::days(days))
            .strategy(SinceStrategy::Auto);
        let c = q
            .explain_choice_with(&fresh(), &client, Shape::Count)
            .await
            .unwrap();
        let density = stat(&c, "changed_rows") / stat(&c, "root_rows");
        if density >= 0.04 && stat(&c, "changed_rows") <= stat(&c, "hashable_rows") {
            assert_eq!(c.strategy, SinceStrategy::UnionIn, "{c}");
            assert!(c.reason.contains("hashed IN"), "{c}");
            hashed += 1;
        }
    }
    assert!(hashed > 0, "no window between narrow and the hash limit");

    // Everything changed in ten years, and a tiny work_mem: too many
    // changed keys to hash, one pass over the roots with index probes; a
    // page streams the roots in key order.
    client
        .batch_execute("SET work_mem = '64kB'; SET hash_mem_multiplier = 1")
        .await
        .unwrap();
    let wide = graph
        .since(now - chrono::Duration::days(3650))
        .strategy(SinceStrategy::Auto);
    let c = wide
        .explain_choice_with(&fresh(), &client, Shape::Count)
        .await
        .unwrap();
    assert_eq!(c.strategy, SinceStrategy::Exists, "{c}");
    assert!(c.reason.contains("wide window"), "{c}");
    let p = wide
        .explain_choice_with(&fresh(), &client, Shape::Page { limit: 50 })
        .await
        .unwrap();
    // Exists when the planner probes its subplans row by row (it stops
    // after about a page of roots), else the streaming merge joins.
    if stat(&p, "exists_probes_row_by_row") == 1.0 {
        assert_eq!(p.strategy, SinceStrategy::Exists, "{p}");
        assert!(p.reason.contains("row by row"), "{p}");
    } else {
        assert_eq!(p.strategy, SinceStrategy::OrJoins, "{p}");
        assert!(p.reason.contains("stream"), "{p}");
    }
    client
        .batch_execute("RESET work_mem; RESET hash_mem_multiplier")
        .await
        .unwrap();

    // Auto's rows are every strategy's rows, for counts and pages.
    for at in [
        now - chrono::Duration::days(1),
        now - chrono::Duration::days(365),
    ] {
        let auto = graph.since(at).strategy(SinceStrategy::Auto);
        let want = auto.count(&client).await.unwrap();
        let page = auto
            .fetch_page::<(i64,)>(&client, &PageRequest::new(30))
            .await
            .unwrap()
            .keys;
        for s in SinceStrategy::ALL {
            let q = graph.since(at).strategy(s);
            assert_eq!(q.count(&client).await.unwrap(), want, "{s:?}");
            let p = q
                .fetch_page::<(i64,)>(&client, &PageRequest::new(30))
                .await
                .unwrap()
                .keys;
            assert_eq!(p, page, "{s:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_refuses_bad_shapes_before_sending() {
    let shop = OrdersTables::default();
    let spec = shop.latest().strategy(LatestStrategy::Auto);
    let schema = schema().await;
    let client = client(&schema).await;
    // No tables exist: an error here would be the database's, not ours.
    let err = spec
        .explain_choice(&client, Shape::Page { limit: 0 })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidSpec { field: "limit", .. }),
        "{err}"
    );
    let graph = MovesTables::default().seed_graph();
    let q = graph.since(Utc::now()).strategy(SinceStrategy::Auto);
    let err = q
        .explain_choice(&client, Shape::Page { limit: -1 })
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidSpec { field: "limit", .. }),
        "{err}"
    );
    // Without a database, Auto builds its static choice.
    assert_eq!(
        spec.build().unwrap(),
        spec.clone()
            .strategy(LatestStrategy::DistinctOn)
            .build()
            .unwrap()
    );
    assert_eq!(
        spec.page_query::<i64>(&pgpatterns::PageRequest::new(10))
            .unwrap(),
        spec.clone()
            .strategy(LatestStrategy::Lateral)
            .page_query::<i64>(&pgpatterns::PageRequest::new(10))
            .unwrap()
    );
    // A value with quotes is a bound parameter in the statistics query too.
    let hostile = shop
        .latest()
        .status_eq("x'); DROP TABLE orders; --")
        .strategy(LatestStrategy::Auto);
    OrdersSeed::new(100).run(&client, |_| {}).await.unwrap();
    assert_eq!(hostile.count(&client).await.unwrap(), 0);
    let n: Vec<(i64,)> = client
        .rows_as(&BuiltQuery::fixed("SELECT count(*) FROM orders"))
        .await
        .unwrap();
    assert_eq!(n[0].0, 100);
}

/// A never-analyzed table: the rollup's `Auto` says its estimates are the
/// planner's defaults and to run ANALYZE, as the other families do; after
/// ANALYZE it does not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_auto_says_run_analyze_on_a_never_analyzed_table() {
    let schema = schema().await;
    let client = client(&schema).await;
    // No autovacuum: it must not analyze the table behind the test's back.
    client
        .batch_execute(
            "CREATE TABLE raw_facts (id int, a text, b text) WITH (autovacuum_enabled = false);
             INSERT INTO raw_facts SELECT g, 'a' || (g % 10), 'b' || (g % 5)
             FROM generate_series(1, 5000) g;",
        )
        .await
        .unwrap();
    let t = Table::new("raw_facts").unwrap();
    let r = Rollup::new(&t)
        .dimension(&pgpatterns::Dim::new(&t.column::<String>("a").unwrap()))
        .dimension(&pgpatterns::Dim::new(&t.column::<String>("b").unwrap()))
        .metric(&pgpatterns::Metric::new("total", Agg::count_all()))
        .with_total()
        .strategy(RollupStrategy::Auto);
    let analyzed = |c: &Choice<RollupStrategy>| {
        c.statistics
            .iter()
            .find(|s| s.name == "table_analyzed")
            .map(|s| s.value)
    };

    let raw = r.explain_choice_with(&fresh(), &client).await.unwrap();
    assert!(
        raw.reason.starts_with("no statistics (run ANALYZE)"),
        "{raw}"
    );
    assert_eq!(analyzed(&raw), Some(0.0), "{raw}");
    assert!(raw.to_string().contains("table_analyzed = no"), "{raw}");
    // The blocking path says the same.
    let r2 = r.clone();
    let blocking = with_sync_client(&schema, move |c| {
        r2.explain_choice_with_blocking(&fresh(), c).unwrap()
    })
    .await;
    assert!(blocking.reason.contains("run ANALYZE"), "{blocking}");

    client.batch_execute("ANALYZE raw_facts").await.unwrap();
    let done = r.explain_choice_with(&fresh(), &client).await.unwrap();
    assert!(!done.reason.contains("ANALYZE"), "{done}");
    assert_eq!(analyzed(&done), Some(1.0), "{done}");
    assert!(done.to_string().contains("table_analyzed = yes"), "{done}");
}

/// What `explain_choice` prints: whole numbers, yes/no, percentages, and a
/// cached decision's own lookup time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_reports_read_plainly() {
    let schema = schema().await;
    let client = client(&schema).await;
    OrdersSeed::new(1000)
        .drafts(3)
        .with_index(true)
        .run(&client, |_| {})
        .await
        .unwrap();
    let spec = OrdersTables::default()
        .latest()
        .status_eq("Complete")
        .strategy(LatestStrategy::Auto);
    let cache = fresh();
    let first = spec
        .explain_choice_with(&cache, &client, Shape::Count)
        .await
        .unwrap();
    let text = first.to_string();
    assert!(text.contains("\n  fk_index = yes\n"), "{text}");
    assert!(!text.contains("~2^"), "{text}");
    assert!(
        text.contains("% of rows match") || first.bucket.is_none(),
        "{text}"
    );
    for line in text.lines().filter(|l| l.contains("_rows = ")) {
        let value = line.rsplit(" = ").next().unwrap();
        assert!(value.bytes().all(|b| b.is_ascii_digit()), "{line}");
    }
    assert!(text.ends_with(" ms"), "{text}");
    assert!(text.contains("\n  decided in "), "{text}");

    let hit = spec
        .explain_choice_with(&cache, &client, Shape::Count)
        .await
        .unwrap();
    assert!(hit.cached);
    assert_eq!(hit.decided_in, first.decided_in);
    assert!(hit.looked_up_in > Duration::ZERO, "{hit}");
    let text = hit.to_string();
    assert!(text.contains("\n  cached (looked up in "), "{text}");
    assert!(text.contains(" ago in "), "{text}");
}
