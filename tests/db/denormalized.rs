//! The denormalized status column: trigger under concurrent writers, batched
//! backfill, drift check, idempotent DDL, hostile names, index advice.

use chrono::{DateTime, Duration, TimeZone, Utc};
use pgpatterns::sea_query::{Alias, Order, Query};
use pgpatterns::{BuiltQuery, Executor, LatestStatus, LatestStrategy, Progress, Table};

use crate::support::{client, schema, Rng};
use pgpatterns::seed::orders::OrdersTables;

const SETUP: &str = "
CREATE TABLE orders (id bigint PRIMARY KEY, note text);
CREATE TABLE order_status (
    id bigserial PRIMARY KEY,
    order_id bigint NOT NULL REFERENCES orders(id) ON DELETE CASCADE,
    status text,
    created_at timestamptz NOT NULL);";

fn spec() -> LatestStatus<String> {
    let shop = OrdersTables::default();
    let column = shop.orders.column::<String>("status").unwrap();
    shop.latest().denormalized(&column)
}

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap()
}

const STATUSES: [Option<&str>; 4] = [Some("Pending"), Some("Complete"), Some("Cancelled"), None];

/// Entity ids and statuses from the Denormalized strategy and from a
/// history strategy, for the same predicate.
async fn both_ways(
    client: &tokio_postgres::Client,
    s: LatestStatus<String>,
) -> (Vec<(i64, Option<String>)>, Vec<(i64, Option<String>)>) {
    let mut out = Vec::new();
    for strategy in [LatestStrategy::Denormalized, LatestStrategy::DistinctOn] {
        let q = Query::select()
            .column(Alias::new("id"))
            .column(Alias::new(pgpatterns::LATEST_STATUS))
            .from_subquery(
                s.clone().strategy(strategy).to_statement().unwrap(),
                Alias::new("m"),
            )
            .order_by(Alias::new("id"), Order::Asc)
            .to_owned();
        out.push(client.rows_as(&BuiltQuery::from(&q)).await.unwrap());
    }
    let b = out.pop().unwrap();
    (out.pop().unwrap(), b)
}

/// One random write; retried by the caller on deadlock or serialization
/// failure (what a real application does).
async fn random_write(
    c: &mut tokio_postgres::Client,
    rng: &mut Rng,
    orders: u64,
) -> Result<(), tokio_postgres::Error> {
    let order = 1 + rng.below(orders) as i64;
    let status = STATUSES[rng.below(4) as usize];
    // few distinct times, often older than rows already there
    let at = base() + Duration::minutes(rng.below(12) as i64 * 5);
    if rng.below(4) == 0 {
        // several statements for one order in one slow transaction, so
        // other writers' triggers overlap with it
        let tx = c.transaction().await?;
        tx.execute(
            "INSERT INTO order_status (order_id, status, created_at) VALUES ($1, $2, $3)",
            &[&order, &status, &at],
        )
        .await?;
        tx.execute(
            "INSERT INTO order_status (order_id, status, created_at) VALUES ($1, 'Pending', $2)",
            &[&order, &(at - Duration::minutes(30))],
        )
        .await?;
        tx.execute(
            "DELETE FROM order_status
             WHERE id = (SELECT min(id) FROM order_status WHERE order_id = $1)",
            &[&order],
        )
        .await?;
        tx.batch_execute("SELECT pg_sleep(0.002)").await?;
        return tx.commit().await;
    }
    // The client's own `execute(sql, params)`, not `Executor::execute`.
    let c: &tokio_postgres::Client = c;
    match rng.below(19) {
        0..=7 => {
            c.execute(
                "INSERT INTO order_status (order_id, status, created_at) VALUES ($1, $2, $3)",
                &[&order, &status, &at],
            )
            .await?;
        }
        8..=10 => {
            let ids: Vec<i64> = (0..4).map(|_| 1 + rng.below(orders) as i64).collect();
            c.execute(
                "INSERT INTO order_status (order_id, status, created_at)
                 SELECT o, $2::text, $3::timestamptz + (o % 3) * interval '1 minute' FROM unnest($1::int8[]) AS o",
                &[&ids, &status, &at],
            )
            .await?;
        }
        11..=13 => {
            c.execute(
                "UPDATE order_status SET status = $2, created_at = $3
                 WHERE id = (SELECT min(id) FROM order_status WHERE order_id = $1)",
                &[&order, &status, &at],
            )
            .await?;
        }
        14 => {
            let to = 1 + rng.below(orders) as i64;
            c.execute(
                "UPDATE order_status SET order_id = $2
                 WHERE id = (SELECT max(id) FROM order_status WHERE order_id = $1)",
                &[&order, &to],
            )
            .await?;
        }
        15..=17 => {
            c.execute(
                "DELETE FROM order_status
                 WHERE id = (SELECT max(id) FROM order_status WHERE order_id = $1)",
                &[&order],
            )
            .await?;
        }
        _ => {
            c.execute("DELETE FROM order_status WHERE order_id = $1", &[&order])
                .await?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trigger_survives_concurrent_out_of_order_writers() {
    concurrent_writers("READ COMMITTED").await;
}

/// Writers whose snapshots are older than other writers' commits: each
/// either stores the right status or fails with `40001` and retries; the
/// column never drifts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trigger_survives_concurrent_repeatable_read_writers() {
    concurrent_writers("REPEATABLE READ").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn trigger_survives_concurrent_serializable_writers() {
    concurrent_writers("SERIALIZABLE").await;
}

/// 8 writers × 100 random history writes (inserts in and out of order,
/// bulk inserts, updates, re-parenting, deletes) at `isolation`, retried on
/// deadlock or serialization failure; then no drift, and the Denormalized
/// strategy returns exactly the history strategies' rows.
async fn concurrent_writers(isolation: &'static str) {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute(SETUP).await.unwrap();
    // orders 13 and 14 never get history: the column must not make them match
    c.batch_execute("INSERT INTO orders (id) SELECT g FROM generate_series(1, 14) g")
        .await
        .unwrap();
    let spec = spec();
    let d = spec.denormalize().unwrap();
    d.install(&mut c).await.unwrap();
    d.install(&mut c).await.unwrap(); // idempotent

    let writers = 8;
    let ops = 100;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let mut conn = client(&schema).await;
        conn.batch_execute(&format!(
            "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL {isolation}"
        ))
        .await
        .unwrap();
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((w as u64 + 1) * 0x1234_5678_9ABC));
            let mut retries = 0;
            for _ in 0..ops {
                loop {
                    match random_write(&mut conn, &mut rng, 12).await {
                        Ok(()) => break,
                        Err(e)
                            if matches!(
                                e.code().map(|c| c.code()),
                                Some("40P01") | Some("40001")
                            ) =>
                        {
                            retries += 1
                        }
                        Err(e) => panic!("writer {w}: {e:?}"),
                    }
                }
            }
            retries
        }));
    }
    let mut retries = 0;
    for t in tasks {
        retries += t.await.unwrap();
    }
    let rows: Vec<(i64,)> = c
        .rows_as(&BuiltQuery::fixed("SELECT count(*) FROM order_status"))
        .await
        .unwrap();
    assert!(rows[0].0 > 0, "the writers left some history");
    let drift: Vec<(i64, Option<String>, Option<String>)> =
        c.rows_as(&d.drift_query()).await.unwrap();
    assert_eq!(
        drift,
        vec![],
        "drift after concurrent {isolation} writers ({retries} retries)"
    );
    assert_eq!(d.drift_count(&c).await.unwrap(), 0);

    // The Denormalized strategy agrees with a history strategy.
    for s in [
        spec.clone(),
        spec.clone().status_eq("Complete"),
        spec.clone().status_ne("Complete"),
        spec.clone().status_in(["Pending", "Cancelled"]),
        spec.clone().status_not_in(["Pending"]),
        spec.clone().status_is_null(),
    ] {
        // Entities without history (their column is NULL too) included:
        // the same rows, unfiltered.
        let (denormalized, history) = both_ways(&c, s).await;
        assert_eq!(denormalized, history, "{isolation}");
    }

    // TRUNCATE clears the column; deleting an entity's history sets NULL.
    c.batch_execute("TRUNCATE order_status").await.unwrap();
    assert_eq!(d.drift_count(&c).await.unwrap(), 0);
    let set: Vec<(i64,)> = c
        .rows_as(&BuiltQuery::fixed(
            "SELECT count(*) FROM orders WHERE status IS NOT NULL",
        ))
        .await
        .unwrap();
    assert_eq!(set[0].0, 0);
}

/// Two writers race on one order: the first inserts the newer row in an open
/// transaction, the second an older one meanwhile. Whether or not the first
/// trigger changed the column, the second must wait for the first to commit
/// and then see its row; otherwise its older status wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trigger_waits_for_an_open_transaction_on_the_same_entity() {
    let schema = schema().await;
    let mut c1 = client(&schema).await;
    c1.batch_execute(SETUP).await.unwrap();
    let d = spec().denormalize().unwrap();
    d.install(&mut c1).await.unwrap();
    // (existing status, first writer's newer status, second writer's older one)
    for (i, (existing, newer, older)) in [
        ("Pending", "Complete", "Cancelled"), // the first trigger changes the column
        ("Complete", "Complete", "Pending"),  // the first trigger changes nothing
    ]
    .into_iter()
    .enumerate()
    {
        let order = i as i64 + 1;
        let c1_ref: &tokio_postgres::Client = &c1;
        c1_ref
            .execute("INSERT INTO orders (id) VALUES ($1)", &[&order])
            .await
            .unwrap();
        c1_ref
            .execute(
                "INSERT INTO order_status (order_id, status, created_at) VALUES ($1, $2, $3)",
                &[&order, &existing, &base()],
            )
            .await
            .unwrap();
        let tx = c1.transaction().await.unwrap();
        tx.execute(
            "INSERT INTO order_status (order_id, status, created_at) VALUES ($1, $2, $3)",
            &[&order, &newer, &(base() + Duration::minutes(10))],
        )
        .await
        .unwrap();
        let c2 = client(&schema).await;
        let second = tokio::spawn(async move {
            c2.execute(
                "INSERT INTO order_status (order_id, status, created_at) VALUES ($1, $2, $3)",
                &[&order, &older, &(base() + Duration::minutes(5))],
            )
            .await
            .unwrap();
        });
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        tx.commit().await.unwrap();
        second.await.unwrap();
        let stored: Vec<(Option<String>,)> = c1
            .rows_as(&BuiltQuery::fixed_with(
                "SELECT status FROM orders WHERE id = $1",
                [pgpatterns::SqlType::into_value(order)],
            ))
            .await
            .unwrap();
        assert_eq!(stored, vec![(Some(newer.to_owned()),)], "case {i}");
    }
    assert_eq!(d.drift_count(&c1).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backfill_fixes_every_entity_in_batches_and_reports_progress() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute(SETUP).await.unwrap();
    c.batch_execute(
        "INSERT INTO orders (id) SELECT g FROM generate_series(1, 1000) g;
         INSERT INTO order_status (order_id, status, created_at)
           SELECT g % 900 + 1, (ARRAY['Pending','Complete','Cancelled'])[g % 3 + 1],
                  timestamptz '2024-01-01' + (g % 7) * interval '1 hour'
           FROM generate_series(1, 2500) g;",
    )
    .await
    .unwrap();
    let d = spec().denormalize().unwrap();
    // The column exists before the trigger: history written earlier drifts.
    d.add_column().execute(&c).await.unwrap();
    d.add_column().execute(&c).await.unwrap();
    assert_eq!(d.drift_count(&c).await.unwrap(), 900);
    // A stale value on an entity without history is drift too.
    c.batch_execute("UPDATE orders SET status = 'stale' WHERE id = 1000")
        .await
        .unwrap();
    assert_eq!(d.drift_count(&c).await.unwrap(), 901);

    let mut seen: Vec<Progress> = Vec::new();
    let report = d
        .backfill::<i64, _>(&mut c, 64, |p| seen.push(p))
        .await
        .unwrap();
    assert_eq!(report.entities, 1000);
    assert_eq!(report.updated, 901);
    assert_eq!(report.batches, 16); // 15 full batches of 64 and one of 40
    assert_eq!(seen.first().map(|p| p.done), Some(0));
    assert_eq!(
        seen.last().map(|p| (p.done, p.total)),
        Some((1000, Some(1000)))
    );
    assert!(seen.windows(2).all(|w| w[0].done <= w[1].done));
    assert_eq!(d.drift_count(&c).await.unwrap(), 0);

    // Resumable / idempotent: a second run changes nothing.
    let again = d.backfill::<i64, _>(&mut c, 1000, |_| {}).await.unwrap();
    assert_eq!((again.entities, again.updated, again.batches), (1000, 0, 1));

    // Bad input, refused before anything is sent.
    assert!(d
        .backfill::<i64, _>(&mut c, 0, |_| {})
        .await
        .unwrap_err()
        .is_invalid_input());
    assert!(d
        .backfill::<i32, _>(&mut c, 10, |_| {})
        .await
        .unwrap_err()
        .is_invalid_input());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_is_idempotent_and_safe_with_hostile_names() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    let entity = Table::new("Ord\"ers; DROP TABLE x; --").unwrap();
    let history = Table::new("hist $pgp$ ory").unwrap();
    let key = entity.column::<i64>("i\"d").unwrap();
    let fk = history.column::<i64>("ent'ity").unwrap();
    let status = history.column::<String>("st$pgp$atus").unwrap();
    let at = history.column::<DateTime<Utc>>("at").unwrap();
    let col = entity.column::<String>("la\"test").unwrap();
    for q in [
        "CREATE TABLE \"Ord\"\"ers; DROP TABLE x; --\" (\"i\"\"d\" bigint PRIMARY KEY)",
        "CREATE TABLE \"hist $pgp$ ory\" (id bigserial PRIMARY KEY, \"ent'ity\" bigint NOT NULL, \"st$pgp$atus\" text, at timestamptz NOT NULL)",
        "INSERT INTO \"Ord\"\"ers; DROP TABLE x; --\" SELECT g FROM generate_series(1, 5) g",
    ] {
        c.batch_execute(q).await.unwrap();
    }
    let spec = LatestStatus::new(&key, &fk, &status, &at)
        .then_by(&history.column::<i64>("id").unwrap())
        .denormalized(&col);
    let d = spec.denormalize().unwrap();
    for _ in 0..2 {
        d.install(&mut c).await.unwrap();
    }
    for q in spec.index_advice(false) {
        q.execute(&c).await.unwrap();
        q.execute(&c).await.unwrap(); // IF NOT EXISTS
    }
    let d_spec = spec.clone().strategy(LatestStrategy::Denormalized);
    for q in d_spec.index_advice(true) {
        c.run_outside_transaction(&q).await.unwrap();
    }
    c.batch_execute(
        "INSERT INTO \"hist $pgp$ ory\" (\"ent'ity\", \"st$pgp$atus\", at)
         VALUES (1, 'a', '2024-01-02'), (1, 'b', '2024-01-01'), (2, 'c', '2024-01-01')",
    )
    .await
    .unwrap();
    assert_eq!(d.drift_count(&c).await.unwrap(), 0);
    let got: Vec<(i64,)> = c
        .rows_as(&d_spec.clone().status_eq("a").count_query().unwrap())
        .await
        .unwrap();
    assert_eq!(got, vec![(1,)]);
    // Uninstall, twice; writes no longer maintain the column.
    d.uninstall(&mut c).await.unwrap();
    d.uninstall(&mut c).await.unwrap();
    c.batch_execute(
        "INSERT INTO \"hist $pgp$ ory\" (\"ent'ity\", \"st$pgp$atus\", at) VALUES (3, 'z', '2024-01-01')",
    )
    .await
    .unwrap();
    assert_eq!(d.drift_count(&c).await.unwrap(), 1);
    // The tables the names mimic were never touched.
    let tables: Vec<(i64,)> = c
        .rows_as(&BuiltQuery::fixed(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema()",
        ))
        .await
        .unwrap();
    assert_eq!(tables, vec![(2,)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denormalize_refuses_what_it_cannot_maintain() {
    let orders = Table::new("orders").unwrap();
    let without = LatestStatus::<String>::new(
        &orders.column::<i64>("id").unwrap(),
        &Table::new("h").unwrap().column::<i64>("o").unwrap(),
        &Table::new("h").unwrap().column::<String>("s").unwrap(),
        &Table::new("h")
            .unwrap()
            .column::<DateTime<Utc>>("t")
            .unwrap(),
    );
    assert!(without.denormalize().unwrap_err().is_invalid_input());
    let not_import = |h: &Table| h.column::<String>("status").expect("valid name").ne("x");
    let filtered = spec().history_filter(not_import);
    assert!(filtered.denormalize().unwrap_err().is_invalid_input());
    // Denormalized does not read the history: a history filter added after
    // choosing it is refused, not silently ignored.
    let denormalized = spec().strategy(LatestStrategy::Denormalized);
    let err = denormalized.history_filter(not_import).check().unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    // a transaction is refused by execute_outside_transaction (CONCURRENTLY)
    let schema = schema().await;
    let mut c = client(&schema).await;
    let tx = c.transaction().await.unwrap();
    let q = &spec().index_advice(true)[0];
    assert!(matches!(
        q.execute_outside_transaction(&tx).await,
        Err(pgpatterns::Error::InTransaction { .. })
    ));
}
