//! The tracked "last changed" column of a since graph: after install and
//! backfill, and after random writes on every table (inserts, updates,
//! re-parenting, deletes, TRUNCATE), `Tracked` returns exactly what every
//! other strategy and the plain-Rust reference return, and nothing drifts;
//! concurrent writers at READ COMMITTED leave no drift, a stale REPEATABLE
//! READ writer fails instead of drifting; hostile names; installers that
//! never replace what they did not create; `Auto` follows the catalog.

use chrono::{DateTime, Duration, FixedOffset, TimeZone, Utc};
use pgpatterns::{
    BuiltQuery, Column, Executor, PageOrder, Shape, SinceGraph, SinceStrategy, StrategyCache, Track,
};

use crate::since::{dataset, ids, load, reference, since, walk, Shop};
use crate::support::{client, schema, Rng};

/// A drifted root: key, stored value, value recomputed now.
type DriftRow = (i64, Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// The shop's graph, tracked into `moves.<prefix>changed_at`.
fn tracked_graph(shop: &Shop, offset: FixedOffset) -> SinceGraph<i64> {
    let col: Column<DateTime<Utc>> = shop
        .moves
        .column(format!("{}changed_at", prefix_of(shop)))
        .unwrap();
    shop.graph(offset).tracked_by(&col)
}

fn prefix_of(shop: &Shop) -> String {
    let name = shop.moves.name().as_str();
    name[..name.len() - "moves".len()].to_owned()
}

/// Every strategy (and Tracked) returns the same ids, counts and pages in
/// both orders at `at`; returns how many matched.
async fn all_agree(
    c: &tokio_postgres::Client,
    graph: &SinceGraph<i64>,
    key: &str,
    at: DateTime<Utc>,
    want: Option<&[i64]>,
    ctx: &str,
) -> usize {
    let tracked = graph.since(at).strategy(SinceStrategy::Tracked);
    let got = ids(c, &tracked, key).await;
    if let Some(want) = want {
        assert_eq!(got, want, "Tracked vs the reference at {at}: {ctx}");
    }
    for s in SinceStrategy::ALL {
        let q = graph.since(at).strategy(s);
        assert_eq!(
            ids(c, &q, key).await,
            got,
            "Tracked vs {s:?} at {at}: {ctx}"
        );
    }
    assert_eq!(tracked.count(c).await.unwrap(), got.len() as i64, "{ctx}");
    let (keys, changes) = walk(c, &tracked, PageOrder::Key, 7).await;
    assert_eq!(keys, got, "key pages: {ctx}");
    // what changed comes from the graph: something changed for every key
    for k in &keys {
        assert!(
            changes.iter().any(|ch| ch.key == *k && ch.newest >= at),
            "{k}: {ctx}"
        );
    }
    let (by_time, _) = walk(c, &tracked, PageOrder::ChangeTime, 9).await;
    let reference_q = graph.since(at).strategy(SinceStrategy::Exists);
    let (want_by_time, _) = walk(c, &reference_q, PageOrder::ChangeTime, 1000).await;
    assert_eq!(by_time, want_by_time, "time pages: {ctx}");
    got.len()
}

/// One random write on a random table of the shop (names unprefixed).
fn random_write(rng: &mut Rng, shift: i64) -> String {
    let id = 1 + rng.below(12) as i64;
    let other = 1 + rng.below(12) as i64;
    let days = 1 + rng.below(3) as i64 + shift;
    let tables = [
        "moves",
        "orders",
        "service_members",
        "shipments",
        "addresses",
        "notes",
        "items",
    ];
    let t = tables[rng.below(tables.len() as u64) as usize];
    let touch = |t: &str, cond: String| {
        format!("UPDATE {t} SET updated_at = updated_at + interval '{days} days' WHERE {cond}")
    };
    match rng.below(16) {
        0..=3 => touch(t, format!("id % 13 = {id}")),
        4 => touch(t, "true".into()),
        5 => format!("UPDATE {t} SET updated_at = NULL WHERE id % 11 = {id}"),
        6 => format!("UPDATE shipments SET move_id = (SELECT id FROM moves ORDER BY id OFFSET {other} LIMIT 1) WHERE id % 7 = {}", id % 7),
        7 => format!("UPDATE shipments SET address_id = {other} WHERE id % 5 = {}", id % 5),
        8 => format!("UPDATE orders SET service_member_id = {other} WHERE id = {id}"),
        9 => format!("UPDATE moves SET orders_id = {other} WHERE id % 3 = {}", id % 3),
        10 => format!("UPDATE notes SET address_id = {other} WHERE id % 4 = {}", id % 4),
        11 => format!("DELETE FROM {t} WHERE id % 5 = {}", id % 5),
        12 => format!(
            "INSERT INTO items (id, shipment_id, updated_at) SELECT 1000 + {id} * 100 + g, {other}, \
             TIMESTAMP '2024-06-01 12:00:00' + g * interval '1 hour' FROM generate_series(1, 3) g \
             ON CONFLICT DO NOTHING"
        ),
        13 => format!(
            "INSERT INTO shipments (id, move_id, address_id, updated_at) \
             SELECT 2000 + {id}, id, {other}, TIMESTAMPTZ '2024-06-03 00:00:00+00' FROM moves \
             ORDER BY id LIMIT 1 ON CONFLICT DO NOTHING"
        ),
        14 => format!(
            "INSERT INTO addresses (id, updated_at) VALUES ({other} + 3000, TIMESTAMP '2024-06-04 00:00:00') ON CONFLICT DO NOTHING; \
             UPDATE shipments SET address_id = {other} + 3000 WHERE id % 6 = {}",
            id % 6
        ),
        _ => format!("TRUNCATE {t}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tracked_equals_every_strategy_after_backfill_and_random_writes() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    // tiny unanalyzed tables: JIT would compile the drift query every time
    c.batch_execute("SET jit = off").await.unwrap();
    let shop = Shop::new("");
    shop.create(&c).await;
    let offsets = [
        FixedOffset::east_opt(0).unwrap(),
        FixedOffset::west_opt(5 * 3600 + 30 * 60).unwrap(),
    ];
    let sinces = [
        since(),
        since() + Duration::microseconds(1),
        since() - Duration::days(365),
        since() + Duration::days(4),
    ];
    let mut rng = Rng(7);
    let mut matched = 0;
    for seed in 1..10u64 {
        let offset = offsets[(seed % 2) as usize];
        let graph = tracked_graph(&shop, offset);
        // odd seeds plan every trigger statement per call, even ones run
        // these small statements as static SQL
        let small = if seed % 2 == 1 { 0 } else { 100 };
        let track = graph.track().unwrap().small_statements(small).unwrap();
        let d = dataset(seed);
        if seed % 3 == 0 {
            // installed before the rows arrive: the triggers fill it
            track.install(&mut c).await.unwrap();
            load(&c, &shop, &d, offset).await;
        } else {
            // installed on existing rows: the backfill fills it
            load(&c, &shop, &d, offset).await;
            track.install(&mut c).await.unwrap();
            let report = track.backfill::<i64, _>(&mut c, 7, |_| {}).await.unwrap();
            assert_eq!(report.entities, d.moves.len() as u64);
        }
        assert_eq!(track.drift_count(&c).await.unwrap(), 0, "seed {seed}");
        for &at in &sinces {
            let want: Vec<i64> = reference(&d, at).keys().copied().collect();
            let ctx = format!("seed {seed} offset {offset}, after loading");
            matched += all_agree(&c, &graph, "id", at, Some(&want), &ctx).await;
        }
        for step in 0..16 {
            let sql = random_write(&mut rng, step / 6);
            c.batch_execute(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let drift: Vec<DriftRow> = c.rows_as(&track.drift_query()).await.unwrap();
            assert_eq!(drift, vec![], "seed {seed} step {step} after {sql}");
            if step % 4 == 3 {
                for &at in &sinces {
                    let ctx = format!("seed {seed} step {step} after {sql}");
                    all_agree(&c, &graph, "id", at, None, &ctx).await;
                }
            }
        }
        // another offset is another graph: uninstall this one first
        track.uninstall(&mut c).await.unwrap();
    }
    assert!(matched > 30, "{matched}");
    // idempotent: twice, then uninstall twice
    let track = tracked_graph(&shop, offsets[0]).track().unwrap();
    track.install(&mut c).await.unwrap();
    track.install(&mut c).await.unwrap();
    track.uninstall(&mut c).await.unwrap();
    track.uninstall(&mut c).await.unwrap();
}

/// Writes that must not need a root's own column to be set in any order:
/// a parent's update reaches every root below it, a re-parented child
/// recomputes both roots, a deleted child lowers the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parents_children_and_deletes_move_the_value() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    let shop = Shop::new("");
    shop.create(&c).await;
    let offset = FixedOffset::east_opt(0).unwrap();
    let graph = tracked_graph(&shop, offset);
    let track = graph.track().unwrap();
    track.install(&mut c).await.unwrap();
    c.batch_execute(
        "INSERT INTO service_members VALUES (1, '2024-01-01 00:00+00');
         INSERT INTO orders VALUES (1, 1, '2024-01-02 00:00');
         INSERT INTO moves VALUES (1, 1, true, now(), '2024-01-03 00:00'),
                                  (2, 1, true, now(), '2024-01-01 00:00'),
                                  (3, NULL, true, now(), NULL);
         INSERT INTO addresses VALUES (1, '2024-01-04 00:00');
         INSERT INTO shipments VALUES (1, 1, 1, '2024-01-05 00:00+00'), (2, 1, NULL, '2024-01-06 00:00+00');",
    )
    .await
    .unwrap();
    let value = |id: i64| {
        let c = &c;
        async move {
            changed_at(c, id)
                .await
                .map(|t| t.format("%m-%d").to_string())
        }
    };
    assert_eq!(value(1).await.as_deref(), Some("01-06"));
    assert_eq!(value(2).await.as_deref(), Some("01-02"));
    assert_eq!(value(3).await, None, "no change time anywhere: NULL");
    // a grand-parent's change reaches both roots below it
    c.batch_execute("UPDATE service_members SET updated_at = '2024-02-01 00:00+00'")
        .await
        .unwrap();
    assert_eq!(value(1).await.as_deref(), Some("02-01"));
    assert_eq!(value(2).await.as_deref(), Some("02-01"));
    c.batch_execute("UPDATE service_members SET updated_at = '2023-01-01 00:00+00'")
        .await
        .unwrap();
    // re-parenting the newest shipment: both roots recomputed
    c.batch_execute("UPDATE shipments SET move_id = 2 WHERE id = 2")
        .await
        .unwrap();
    assert_eq!(value(1).await.as_deref(), Some("01-05"));
    assert_eq!(value(2).await.as_deref(), Some("01-06"));
    // an address two hops away
    c.batch_execute("UPDATE addresses SET updated_at = '2024-03-01 00:00'")
        .await
        .unwrap();
    assert_eq!(value(1).await.as_deref(), Some("03-01"));
    // deleting lowers it to what remains
    c.batch_execute("DELETE FROM shipments WHERE id = 1")
        .await
        .unwrap();
    assert_eq!(value(1).await.as_deref(), Some("01-03"));
    c.batch_execute("TRUNCATE shipments").await.unwrap();
    assert_eq!(value(2).await.as_deref(), Some("01-02"));
    assert_eq!(track.drift_count(&c).await.unwrap(), 0);
}

/// The incremental path (a root raised from its stored value where that
/// is exact, recomputed where an old version may have held it), statement
/// by statement, with `timestamp` columns read at an offset: an older
/// child does not lower the value, a deleted or lowered maximum does, a
/// re-parented child moves both roots, NULL times count for nothing, a new
/// row brings its descendants' times, TRUNCATE recomputes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_writes_keep_the_exact_value() {
    incremental_writes(100).await;
}

/// [`incremental_writes_keep_the_exact_value`] with every trigger
/// statement planned per call (the path of large statements).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incremental_writes_planned_per_call_keep_the_exact_value() {
    incremental_writes(0).await;
}

async fn incremental_writes(small: i64) {
    let schema = schema().await;
    let mut c = client(&schema).await;
    let shop = Shop::new("");
    shop.create(&c).await;
    // timestamp columns are wall-clock times 5:30 behind UTC
    let offset = FixedOffset::west_opt(5 * 3600 + 30 * 60).unwrap();
    let graph = tracked_graph(&shop, offset);
    let track = graph.track().unwrap().small_statements(small).unwrap();
    track.install(&mut c).await.unwrap();
    c.batch_execute(
        "INSERT INTO moves VALUES (1, NULL, true, now(), '2024-01-03 00:00'),
                                  (2, NULL, true, now(), '2024-01-01 00:00'),
                                  (3, NULL, true, now(), NULL);
         INSERT INTO addresses VALUES (1, '2024-01-02 00:00'), (2, '2024-03-01 00:00');
         INSERT INTO shipments VALUES (1, 1, 1, '2024-01-05 00:00+00'), (2, 1, NULL, '2024-01-06 00:00+00');",
    )
    .await
    .unwrap();
    let value = |id: i64| {
        let c = &c;
        async move {
            changed_at(c, id)
                .await
                .map(|t| t.format("%m-%d %H:%M").to_string())
        }
    };
    let step = |sql: &'static str, want: [Option<&'static str>; 3]| {
        let (c, track, value) = (&c, &track, &value);
        async move {
            c.batch_execute(sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            let got = [value(1).await, value(2).await, value(3).await];
            assert_eq!(got, want.map(|v| v.map(str::to_owned)), "after {sql}");
            let drift: Vec<DriftRow> = c.rows_as(&track.drift_query()).await.unwrap();
            assert_eq!(drift, vec![], "after {sql}");
        }
    };
    step("SELECT 1", [Some("01-06 00:00"), Some("01-01 05:30"), None]).await;
    // an older child does not lower the value
    step(
        "INSERT INTO shipments VALUES (3, 1, NULL, '2023-06-01 00:00+00')",
        [Some("01-06 00:00"), Some("01-01 05:30"), None],
    )
    .await;
    // a newer one raises it; a NULL time counts for nothing
    step(
        "INSERT INTO shipments VALUES (4, 2, NULL, '2024-02-01 00:00+00'), (5, 3, NULL, NULL)",
        [Some("01-06 00:00"), Some("02-01 00:00"), None],
    )
    .await;
    // a new row brings its descendants (the address of shipment 6)
    step(
        "INSERT INTO shipments VALUES (6, 3, 2, NULL)",
        [
            Some("01-06 00:00"),
            Some("02-01 00:00"),
            Some("03-01 05:30"),
        ],
    )
    .await;
    // deleting a row below the value changes nothing; deleting the
    // maximum lowers it to what remains
    step(
        "DELETE FROM shipments WHERE id = 3",
        [
            Some("01-06 00:00"),
            Some("02-01 00:00"),
            Some("03-01 05:30"),
        ],
    )
    .await;
    step(
        "DELETE FROM shipments WHERE id = 2",
        [
            Some("01-05 00:00"),
            Some("02-01 00:00"),
            Some("03-01 05:30"),
        ],
    )
    .await;
    // a time growing raises, one shrinking below the rest lowers
    step(
        "UPDATE shipments SET updated_at = '2024-04-01 00:00+00' WHERE id = 1",
        [
            Some("04-01 00:00"),
            Some("02-01 00:00"),
            Some("03-01 05:30"),
        ],
    )
    .await;
    step(
        "UPDATE shipments SET updated_at = '2023-01-01 00:00+00' WHERE id = 1",
        [
            Some("01-03 05:30"),
            Some("02-01 00:00"),
            Some("03-01 05:30"),
        ],
    )
    .await;
    // the maximum set to NULL; then a NULL set to a time
    step(
        "UPDATE shipments SET updated_at = NULL WHERE id = 4",
        [
            Some("01-03 05:30"),
            Some("01-01 05:30"),
            Some("03-01 05:30"),
        ],
    )
    .await;
    step(
        "UPDATE shipments SET updated_at = '2024-02-02 00:00+00' WHERE id = 5",
        [
            Some("01-03 05:30"),
            Some("01-01 05:30"),
            Some("03-01 05:30"),
        ],
    )
    .await;
    // re-parenting moves the value from one root to the other, in one
    // statement with a raise and a lowering
    step(
        "UPDATE shipments SET move_id = CASE id WHEN 6 THEN 2 ELSE 3 END WHERE id IN (1, 6)",
        [
            Some("01-03 05:30"),
            Some("03-01 05:30"),
            Some("02-02 00:00"),
        ],
    )
    .await;
    // a timestamp two hops away, both ways; a child of the address
    step(
        "UPDATE addresses SET updated_at = updated_at + CASE id WHEN 1 THEN interval '200 days' ELSE interval '-100 days' END",
        [Some("01-03 05:30"), Some("01-01 05:30"), Some("07-20 05:30")],
    )
    .await;
    step(
        "INSERT INTO notes VALUES (1, 2, '2025-01-01 00:00+00')",
        [
            Some("01-03 05:30"),
            Some("01-01 00:00"),
            Some("07-20 05:30"),
        ],
    )
    .await;
    step(
        "TRUNCATE notes",
        [
            Some("01-03 05:30"),
            Some("01-01 05:30"),
            Some("07-20 05:30"),
        ],
    )
    .await;
    step(
        "TRUNCATE shipments",
        [Some("01-03 05:30"), Some("01-01 05:30"), None],
    )
    .await;
    track.uninstall(&mut c).await.unwrap();
}

/// Creates the shop's tables and fills them with a few related rows per
/// move, server-side.
/// The tracked column of move `id`.
async fn changed_at(c: &tokio_postgres::Client, id: i64) -> Option<DateTime<Utc>> {
    let rows: Vec<(Option<DateTime<Utc>>,)> = c
        .rows_as(&BuiltQuery::fixed_with(
            "SELECT changed_at FROM moves WHERE id = $1",
            [pgpatterns::SqlType::into_value(id)],
        ))
        .await
        .unwrap();
    rows[0].0
}

async fn fill(c: &tokio_postgres::Client) {
    c.batch_execute(
        "INSERT INTO service_members SELECT g, TIMESTAMPTZ '2024-05-01 00:00+00' + g * interval '1 hour' FROM generate_series(1, 8) g;
         INSERT INTO orders SELECT g, 1 + g % 8, TIMESTAMP '2024-05-02 00:00' + g * interval '1 hour' FROM generate_series(1, 12) g;
         INSERT INTO moves SELECT g, 1 + g % 12, g % 5 <> 0, now(), TIMESTAMP '2024-05-03 00:00' + g * interval '1 hour' FROM generate_series(1, 20) g;
         INSERT INTO addresses SELECT g, TIMESTAMP '2024-05-04 00:00' + g * interval '1 hour' FROM generate_series(1, 15) g;
         INSERT INTO shipments SELECT g, 1 + g % 20, 1 + g % 15, TIMESTAMPTZ '2024-05-05 00:00+00' + g * interval '1 hour' FROM generate_series(1, 40) g;
         INSERT INTO notes SELECT g, 1 + g % 15, TIMESTAMPTZ '2024-05-06 00:00+00' + g * interval '1 hour' FROM generate_series(1, 30) g;
         INSERT INTO items SELECT g, 1 + g % 40, TIMESTAMP '2024-05-07 00:00' + g * interval '1 hour' FROM generate_series(1, 60) g;
         ANALYZE",
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_uses_the_tracked_column_exactly_while_it_is_maintained() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    let shop = Shop::new("");
    shop.create(&c).await;
    fill(&c).await;
    let graph = tracked_graph(&shop, FixedOffset::east_opt(0).unwrap());
    let track = graph.track().unwrap();
    let cache = StrategyCache::new(std::time::Duration::from_secs(3600));
    let reader = client(&schema).await;
    let choose = |shape: Shape| {
        let (c, graph, cache) = (&reader, &graph, &cache);
        async move {
            graph
                .since(since() - Duration::days(60))
                .strategy(SinceStrategy::Auto)
                .explain_choice_with(cache, c, shape)
                .await
                .unwrap()
                .strategy
        }
    };
    let page = Shape::Page { limit: 10 };
    assert_ne!(choose(Shape::Count).await, SinceStrategy::Tracked);
    // the column alone is not enough
    c.batch_execute("ALTER TABLE moves ADD COLUMN changed_at timestamptz")
        .await
        .unwrap();
    assert_ne!(choose(Shape::Count).await, SinceStrategy::Tracked);
    track.install(&mut c).await.unwrap();
    track.backfill::<i64, _>(&mut c, 100, |_| {}).await.unwrap();
    assert_eq!(choose(Shape::Count).await, SinceStrategy::Tracked);
    assert_eq!(choose(page).await, SinceStrategy::Tracked);
    let q = graph
        .since(since() - Duration::days(60))
        .strategy(SinceStrategy::Auto);
    let want = graph
        .since(since() - Duration::days(60))
        .strategy(SinceStrategy::UnionIn)
        .count(&c)
        .await
        .unwrap();
    assert!(want > 5, "{want}");
    assert_eq!(q.count(&c).await.unwrap(), want);
    // one table's trigger disabled: not maintained
    let name = track.trigger_names()[0].as_str().to_owned();
    c.batch_execute(&format!("ALTER TABLE notes DISABLE TRIGGER \"{name}\""))
        .await
        .unwrap();
    assert_ne!(choose(Shape::Count).await, SinceStrategy::Tracked);
    c.batch_execute(&format!("ALTER TABLE notes ENABLE TRIGGER \"{name}\""))
        .await
        .unwrap();
    assert_eq!(choose(page).await, SinceStrategy::Tracked);
    track.uninstall(&mut c).await.unwrap();
    assert_ne!(choose(Shape::Count).await, SinceStrategy::Tracked);
    assert_ne!(choose(page).await, SinceStrategy::Tracked);
    // Tracked without a tracking column is refused before anything is sent
    let err = shop
        .graph(FixedOffset::east_opt(0).unwrap())
        .since(since())
        .strategy(SinceStrategy::Tracked)
        .count_query()
        .unwrap_err();
    assert!(err.to_string().contains("tracked_by"), "{err}");
    let _: Option<Track> = None;
}

/// `writers` connections at `isolation`, each running `ops` random writes
/// over every table (some as two-write transactions held open a moment, so
/// triggers overlap), retried on serialization failure or deadlock; then
/// no drift and Tracked agrees with every strategy.
async fn concurrent_writers(isolation: &'static str, writers: u64, ops: usize, small: i64) -> u64 {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute("SET jit = off").await.unwrap();
    let shop = Shop::new("");
    shop.create(&c).await;
    fill(&c).await;
    let graph = tracked_graph(&shop, FixedOffset::east_opt(0).unwrap());
    let track = graph.track().unwrap().small_statements(small).unwrap();
    track.install(&mut c).await.unwrap();
    track.backfill::<i64, _>(&mut c, 8, |_| {}).await.unwrap();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut conn = client(&schema).await;
        conn.batch_execute(&format!(
            "SET jit = off; SET deadlock_timeout = '20ms'; \
             SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL {isolation}"
        ))
        .await
        .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((w + 1) * 0x1234_5678_9ABC));
            let mut retries = 0u64;
            for op in 0..ops {
                let first = random_write(&mut rng, (op / 10) as i64);
                let second = rng.chance(3).then(|| random_write(&mut rng, 0));
                loop {
                    let res = async {
                        let tx = conn.transaction().await?;
                        tx.batch_execute(&first).await?;
                        if let Some(second) = &second {
                            tx.batch_execute("SELECT pg_sleep(0.002)").await?;
                            tx.batch_execute(second).await?;
                        }
                        tx.commit().await
                    }
                    .await;
                    match res {
                        Ok(()) => break,
                        Err(e)
                            if matches!(
                                e.code().map(|c| c.code()),
                                Some("40P01") | Some("40001")
                            ) =>
                        {
                            retries += 1
                        }
                        Err(e) => panic!("writer {w}: {first} / {second:?}: {e:?}"),
                    }
                }
            }
            retries
        }));
    }
    let started = std::time::Instant::now();
    let mut retries = 0;
    for t in tasks {
        retries += t.await.unwrap();
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(60));
    let drift: Vec<DriftRow> = c.rows_as(&track.drift_query()).await.unwrap();
    assert_eq!(
        drift,
        vec![],
        "drift after {isolation} writers ({retries} retries)"
    );
    for at in [
        since() - Duration::days(40),
        since(),
        since() + Duration::days(3),
    ] {
        all_agree(&c, &graph, "id", at, None, isolation).await;
    }
    retries
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_read_committed_writers_leave_no_drift() {
    concurrent_writers("READ COMMITTED", 8, 40, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_read_committed_writers_planned_per_call_leave_no_drift() {
    concurrent_writers("READ COMMITTED", 8, 40, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_repeatable_read_writers_retry_instead_of_drifting() {
    concurrent_writers("REPEATABLE READ", 6, 25, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_repeatable_read_writers_planned_per_call_retry_instead_of_drifting() {
    concurrent_writers("REPEATABLE READ", 6, 25, 0).await;
}

/// Single statements on the graph's tables other than the root, from many
/// connections at once, over overlapping roots and join points (each
/// writer on rows of its own, so the statements themselves never wait for
/// each other's rows): stamps are taken deepest first and roots in key
/// order, so none deadlocks, and nothing drifts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn single_statements_on_different_tables_do_not_deadlock() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute("SET jit = off").await.unwrap();
    let shop = Shop::new("");
    shop.create(&c).await;
    fill(&c).await;
    let graph = tracked_graph(&shop, FixedOffset::east_opt(0).unwrap());
    let track = graph.track().unwrap();
    track.install(&mut c).await.unwrap();
    track.backfill::<i64, _>(&mut c, 8, |_| {}).await.unwrap();
    const WRITERS: u64 = 6;
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let conn = client(&schema).await;
        conn.batch_execute("SET jit = off; SET deadlock_timeout = '20ms'")
            .await
            .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x5851_F42D_4C95_7F2D ^ ((w + 1) * 0x2545_F491_4F6C_DD1D));
            for op in 0..40 {
                let mine = format!("id % {WRITERS} = {w}");
                let other = 1 + rng.below(15);
                let days = rng.below(5) as i64 - 2;
                let t = ["orders", "service_members", "shipments", "addresses", "notes", "items"]
                    [rng.below(6) as usize];
                let sql = match rng.below(8) {
                    0..=2 => format!(
                        "UPDATE {t} SET updated_at = updated_at + interval '{days} days' WHERE {mine}"
                    ),
                    3 => format!("UPDATE {t} SET updated_at = NULL WHERE {mine} AND id % 5 = {}", op % 5),
                    4 => format!("UPDATE shipments SET move_id = 1 + (id + {other}) % 20, address_id = {other} WHERE {mine}"),
                    5 => format!("UPDATE notes SET address_id = {other} WHERE {mine}"),
                    6 => format!("UPDATE orders SET service_member_id = 1 + {other} % 8 WHERE {mine}"),
                    _ => format!(
                        "INSERT INTO items SELECT 10000 + {w} * 1000 + {op} * 10 + g, 1 + g * {other} % 40, \
                         TIMESTAMP '2024-06-01 00:00' + g * interval '1 day' FROM generate_series(1, 5) g"
                    ),
                };
                if let Err(e) = conn.batch_execute(&sql).await {
                    panic!("writer {w}: {sql}: {e:?}");
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let drift: Vec<DriftRow> = c.rows_as(&track.drift_query()).await.unwrap();
    assert_eq!(drift, vec![]);
}

/// The race that locking roots alone misses: a shipment newly pointing at
/// an address (root 3) and an update of that address (whose other
/// shipments lead to other roots) reach disjoint roots. At READ COMMITTED
/// the second writer waits at the join point and then sees the first; at
/// REPEATABLE READ it fails with 40001.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_connection_and_a_far_update_meet_at_the_join_point() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute("SET jit = off").await.unwrap();
    let shop = Shop::new("");
    shop.create(&c).await;
    fill(&c).await;
    let graph = tracked_graph(&shop, FixedOffset::east_opt(0).unwrap());
    let track = graph.track().unwrap();
    track.install(&mut c).await.unwrap();
    track.backfill::<i64, _>(&mut c, 100, |_| {}).await.unwrap();
    for (round, isolation) in ["READ COMMITTED", "REPEATABLE READ"]
        .into_iter()
        .enumerate()
    {
        let address = 7 + round as i64;
        let ship = 900 + round as i64;
        let mut far = client(&schema).await;
        far.batch_execute(&format!(
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL {isolation}"
        ))
        .await
        .unwrap();
        // the far writer's snapshot is taken before the new shipment commits
        let tx = far.transaction().await.unwrap();
        tx.batch_execute("SELECT count(*) FROM moves")
            .await
            .unwrap();
        // a new shipment of move 3 pointing at the address, committed
        c.batch_execute(&format!(
            "INSERT INTO shipments VALUES ({ship}, 3, {address}, TIMESTAMPTZ '2024-01-01 00:00+00')"
        ))
        .await
        .unwrap();
        // the far writer updates the address
        let res = tx
            .batch_execute(&format!(
                "UPDATE addresses SET updated_at = TIMESTAMP '2030-01-0{} 00:00' WHERE id = {address}",
                round + 1
            ))
            .await;
        match (isolation, res) {
            ("READ COMMITTED", Ok(())) => tx.commit().await.unwrap(),
            ("REPEATABLE READ", Err(e)) => {
                assert_eq!(e.code().map(|c| c.code()), Some("40001"), "{e:?}");
                drop(tx);
            }
            (_, res) => panic!("{isolation}: {res:?}"),
        }
        assert_eq!(track.drift_count(&c).await.unwrap(), 0, "{isolation}");
    }
    let at = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap();
    let tracked: Vec<i64> = ids(&c, &graph.since(at).strategy(SinceStrategy::Tracked), "id").await;
    assert!(tracked.contains(&3), "{tracked:?}");
}

fn q(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Tables and columns named like PL/pgSQL's variables, the function's own
/// internal names and the stamp table's columns, with quotes and `$`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_install_twice_uninstall_and_refuse_foreign_objects() {
    use pgpatterns::{Error, Relation, Table};
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute(
        r#"SET jit = off;
        CREATE TABLE "$x""y" ("pgp_w1_" int8 PRIMARY KEY, "found" timestamptz);
        CREATE TABLE "new" ("old" int8 PRIMARY KEY, "found" timestamp, "pgp_changed" int8);
        CREATE TABLE "old" ("id" int8 PRIMARY KEY, "new" int8, "tg_op" timestamptz);
        CREATE TABLE "pgp_new_rows" ("slot" int8 PRIMARY KEY, "old" int8, "n" timestamp);
        INSERT INTO "$x""y" SELECT g, TIMESTAMPTZ '2024-06-01 00:00+00' + g * interval '1 day' FROM generate_series(1, 4) g;
        INSERT INTO "new" SELECT g, TIMESTAMP '2024-05-01 00:00' + g * interval '1 day', 1 + g % 4 FROM generate_series(1, 10) g;
        INSERT INTO "old" SELECT g, 1 + g % 10, TIMESTAMPTZ '2024-05-20 00:00+00' + g * interval '1 day' FROM generate_series(1, 15) g;
        INSERT INTO "pgp_new_rows" SELECT g, 1 + g % 15, TIMESTAMP '2024-06-10 00:00' + g * interval '1 day' FROM generate_series(1, 20) g;"#,
    )
    .await
    .unwrap();
    let parent = Table::new("$x\"y").unwrap();
    let root = Table::new("new").unwrap();
    let child = Table::new("old").unwrap();
    let grand = Table::new("pgp_new_rows").unwrap();
    let key = root.column::<i64>("old").unwrap();
    let to_child = Relation::new(&child.column::<i64>("new").unwrap(), &key);
    let graph = SinceGraph::new(&key, root.column::<chrono::NaiveDateTime>("found").unwrap())
        .related(
            "parent",
            Relation::new(
                &root.column::<i64>("pgp_changed").unwrap(),
                &parent.column::<i64>("pgp_w1_").unwrap(),
            ),
            parent.column::<DateTime<Utc>>("found").unwrap(),
        )
        .related(
            "child",
            to_child.clone(),
            child.column::<DateTime<Utc>>("tg_op").unwrap(),
        )
        .path(
            "grand",
            [
                to_child,
                Relation::new(
                    &grand.column::<i64>("old").unwrap(),
                    &child.column::<i64>("id").unwrap(),
                ),
            ],
            grand.column::<chrono::NaiveDateTime>("n").unwrap(),
        )
        .tracked_by(&root.column::<DateTime<Utc>>("pgp_slot").unwrap());
    let track = graph.track().unwrap();
    track.install(&mut c).await.unwrap();
    track.install(&mut c).await.unwrap();
    track.backfill::<i64, _>(&mut c, 3, |_| {}).await.unwrap();
    assert_eq!(track.drift_count(&c).await.unwrap(), 0);
    c.batch_execute(
        r#"UPDATE "$x""y" SET "found" = "found" + interval '30 days' WHERE "pgp_w1_" = 2;
        UPDATE "old" SET "new" = 3 WHERE "id" % 4 = 0;
        DELETE FROM "pgp_new_rows" WHERE "slot" % 3 = 0;
        INSERT INTO "pgp_new_rows" VALUES (100, 5, TIMESTAMP '2024-09-01 00:00');
        UPDATE "new" SET "pgp_changed" = 1 WHERE "old" = 4;
        TRUNCATE "old";
        INSERT INTO "old" VALUES (1, 2, NULL), (5, 9, TIMESTAMPTZ '2024-08-01 00:00+00');"#,
    )
    .await
    .unwrap();
    assert_eq!(track.drift_count(&c).await.unwrap(), 0);
    for at in [
        since() - Duration::days(40),
        since(),
        since() + Duration::days(20),
    ] {
        all_agree(&c, &graph, "old", at, None, "hostile").await;
    }
    track.uninstall(&mut c).await.unwrap();
    track.uninstall(&mut c).await.unwrap();

    // Foreign objects of the derived names are refused, and left alone.
    let conflict = |r: pgpatterns::Result<()>| match r {
        Err(Error::ObjectConflict { kind, .. }) => kind,
        other => panic!("expected a conflict, got {other:?}"),
    };
    let f = q(track.function_name().as_str());
    c.batch_execute(&format!(
        "CREATE FUNCTION {f}() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$"
    ))
    .await
    .unwrap();
    assert_eq!(conflict(track.install(&mut c).await), "function");
    assert_eq!(conflict(track.uninstall(&mut c).await), "function");
    for stmt in track.install_statements().iter().take(1) {
        // the guard alone refuses too (SQLSTATE 42710)
        let err = c.run(stmt).await.unwrap_err();
        assert!(
            err.to_string().contains("not created by pgpatterns"),
            "{err}"
        );
    }
    c.batch_execute(&format!(
        "CREATE FUNCTION mine() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
         DROP FUNCTION {f}();
         CREATE TRIGGER {} AFTER INSERT ON \"old\" FOR EACH STATEMENT EXECUTE FUNCTION mine()",
        q(track.trigger_names()[0].as_str())
    ))
    .await
    .unwrap();
    assert_eq!(conflict(track.install(&mut c).await), "trigger");
    c.batch_execute(&format!(
        "DROP TRIGGER {} ON \"old\"; CREATE TABLE {} (x int)",
        q(track.trigger_names()[0].as_str()),
        q(track.stamp_table_name().as_str())
    ))
    .await
    .unwrap();
    assert_eq!(conflict(track.install(&mut c).await), "table");
    assert_eq!(conflict(track.uninstall(&mut c).await), "table");
    // still there, untouched
    let n: Vec<(i64,)> = c
        .rows_as(&BuiltQuery::fixed(
            "SELECT count(*) FROM pg_class WHERE relname LIKE 'pgp_track_new_pgp_slot_%_stamps%'",
        ))
        .await
        .unwrap();
    assert_eq!(n, vec![(1,)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_moves_seeder_installs_tracking() {
    use pgpatterns::seed::moves::MovesSeed;
    let schema = schema().await;
    let mut c = client(&schema).await;
    let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let seed = MovesSeed::new(1500).batch_size(600).now(now).tracked(true);
    let mut last = None;
    seed.run(&c, |p| last = Some((p.stage, p.done)))
        .await
        .unwrap();
    assert_eq!(last, Some(("finish", 3)));
    let graph = seed.tables().full_graph();
    let track = graph.track().unwrap();
    assert_eq!(track.drift_count(&c).await.unwrap(), 0);
    for days in [1, 30, 365] {
        let at = now - Duration::days(days);
        let want = graph
            .since(at)
            .strategy(SinceStrategy::SemiJoin)
            .count(&c)
            .await
            .unwrap();
        let q = graph.since(at).strategy(SinceStrategy::Auto);
        assert_eq!(
            q.resolve(&c, Shape::Count).await.unwrap().chosen_strategy(),
            SinceStrategy::Tracked
        );
        assert_eq!(q.count(&c).await.unwrap(), want, "{days} d");
    }
    // a write into a child table moves its root
    c.batch_execute(
        "UPDATE mto_service_items SET updated_at = TIMESTAMPTZ '2025-06-01 00:00+00' WHERE id = 10 * 77 + 1",
    )
    .await
    .unwrap();
    let at = Utc.with_ymd_and_hms(2025, 5, 1, 0, 0, 0).unwrap();
    let tracked = ids(&c, &graph.since(at).strategy(SinceStrategy::Tracked), "id").await;
    assert_eq!(
        tracked,
        ids(&c, &graph.since(at).strategy(SinceStrategy::Exists), "id").await
    );
    assert!(tracked.contains(&77) || tracked.is_empty(), "{tracked:?}");
    track.uninstall(&mut c).await.unwrap();
}
