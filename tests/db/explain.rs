//! EXPLAIN capture: typed plans with bound values; ANALYZE of data-changing
//! statements leaves the data unchanged.

use pgpatterns::explain::{explain, explain_analyze};
use pgpatterns::seed::orders::{OrdersSeed, OrdersTables};
use pgpatterns::{BuiltQuery, Executor, LatestStrategy, SqlType};

use crate::support::{client, pool, schema};

async fn count(c: &impl Executor, sql: &'static str) -> i64 {
    let rows: Vec<(i64,)> = c.rows_as(&BuiltQuery::fixed(sql)).await.unwrap();
    rows[0].0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_are_typed_and_analyze_changes_nothing() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    OrdersSeed::new(3000).run(&c, |_| {}).await.unwrap();

    // Estimates only, with bound values: the latest-status count.
    let spec = OrdersTables::default()
        .latest()
        .status_eq("Complete")
        .strategy(LatestStrategy::Lateral);
    let plan = explain(&c, &spec.count_query().unwrap()).await.unwrap();
    assert_eq!(plan.root.node_type, "Aggregate");
    assert!(plan.execution_ms.is_none());
    assert!(plan.nodes().iter().all(|n| n.actual_rows.is_none()));
    assert!(plan.to_string().starts_with("Aggregate"), "{plan}");

    // A point lookup uses the primary key.
    let lookup = BuiltQuery::fixed_with("SELECT * FROM orders WHERE id = $1", [42i64.into_value()]);
    let plan = explain(&c, &lookup).await.unwrap();
    assert!(plan.uses_index("orders_pkey"), "{plan}");

    // ANALYZE + BUFFERS of a DELETE: actual figures, and the rows are still there.
    let before = count(&c, "SELECT count(*) FROM order_status").await;
    let delete = BuiltQuery::fixed_with(
        "DELETE FROM order_status WHERE order_id <= $1",
        [1000i64.into_value()],
    );
    let plan = explain_analyze(&mut c, &delete, true).await.unwrap();
    assert_eq!(plan.root.node_type, "ModifyTable");
    assert!(plan.execution_ms.is_some());
    assert!(plan.root.shared_hit_blocks.is_some());
    let deleted: f64 = plan
        .nodes()
        .iter()
        .filter(|n| n.relation.as_deref() == Some("order_status"))
        .filter_map(|n| n.actual_rows)
        .sum();
    assert!(deleted > 0.0, "{plan}");
    assert_eq!(count(&c, "SELECT count(*) FROM order_status").await, before);

    // Inside the caller's transaction: a savepoint is rolled back, the
    // transaction itself goes on and can commit.
    {
        let mut tx = c.transaction().await.unwrap();
        let update = BuiltQuery::fixed_with(
            "UPDATE orders SET customer = $1",
            [String::from("changed").into_value()],
        );
        explain_analyze(&mut tx, &update, false).await.unwrap();
        assert_eq!(
            count(
                &tx,
                "SELECT count(*) FROM orders WHERE customer = 'changed'"
            )
            .await,
            0
        );
        tx.commit().await.unwrap();
    }
    assert_eq!(
        count(&c, "SELECT count(*) FROM orders WHERE customer = 'changed'").await,
        0
    );

    // Through a pool: the rollback happens on the connection that ran it.
    let mut p = pool(&schema);
    explain_analyze(&mut p, &delete, false).await.unwrap();
    assert_eq!(count(&c, "SELECT count(*) FROM order_status").await, before);

    // Bad input: refused before anything is sent.
    let e = explain(&c, &BuiltQuery::fixed("   ")).await.unwrap_err();
    assert!(e.is_invalid_input(), "{e}");
    // A statement PostgreSQL cannot explain is the server's error.
    let e = explain(&c, &BuiltQuery::fixed("VACUUM orders"))
        .await
        .unwrap_err();
    assert!(e.is_database(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_rolled_back_returns_rows_and_undoes_them_on_the_sync_client() {
    let schema = schema().await;
    let c = client(&schema).await;
    c.batch_execute("CREATE TABLE t (id int8 PRIMARY KEY); INSERT INTO t VALUES (1), (2)")
        .await
        .unwrap();
    let returned = crate::support::with_sync_client(&schema, |s| {
        use pgpatterns::BlockingExecutor;
        let q = BuiltQuery::fixed("DELETE FROM t RETURNING id");
        let rows = s.rows_rolled_back(&q).unwrap();
        let mut tx = s.transaction().unwrap();
        let inner = tx.rows_rolled_back(&q).unwrap().len();
        tx.commit().unwrap();
        (rows.len(), inner)
    })
    .await;
    assert_eq!(returned, (2, 2));
    assert_eq!(count(&c, "SELECT count(*) FROM t").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_of_writes_is_rolled_back_on_the_sync_client_and_a_pooled_connection() {
    let schema = schema().await;
    let c = client(&schema).await;
    c.batch_execute(
        "CREATE TABLE t (id int8 PRIMARY KEY, v text);
         INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 50) g;
         CREATE TABLE log (n int8);
         CREATE FUNCTION bump() RETURNS int8 LANGUAGE sql VOLATILE
           AS 'INSERT INTO log VALUES (1) RETURNING n';",
    )
    .await
    .unwrap();
    // A DELETE, a data-modifying CTE inside a SELECT, and writes hidden in
    // a volatile function: ANALYZE runs them all.
    let statements = [
        BuiltQuery::fixed_with("DELETE FROM t WHERE id <= $1", [25i64.into_value()]),
        BuiltQuery::fixed(
            "WITH d AS (UPDATE t SET v = 'changed' RETURNING id) SELECT count(*) FROM d",
        ),
        BuiltQuery::fixed("SELECT bump() FROM generate_series(1, 3)"),
    ];
    let snapshot = "SELECT count(*) FROM t WHERE v <> 'changed'";
    let logged = "SELECT count(*) FROM log";

    // The sync client: a transaction, and a savepoint inside the caller's.
    let sent = statements.clone();
    let plans = crate::support::with_sync_client(&schema, move |s| {
        use pgpatterns::BlockingExecutor;
        let mut out = Vec::new();
        for q in &sent {
            let e = pgpatterns::explain::explain_statement(q, true, false).unwrap();
            let rows = s.rows_rolled_back(&e).unwrap();
            let json: serde_json::Value = rows[0].get(0);
            let plan = pgpatterns::explain::Plan::from_json(&json.to_string()).unwrap();
            out.push(plan.root.node_type);
            let mut tx = s.transaction().unwrap();
            tx.rows_rolled_back(&e).unwrap();
            tx.commit().unwrap();
        }
        out
    })
    .await;
    assert_eq!(plans[0], "ModifyTable");
    assert_eq!(count(&c, snapshot).await, 50);
    assert_eq!(count(&c, logged).await, 0);

    // A pooled connection (deadpool's client), then the pool itself.
    let p = pool(&schema);
    let mut pooled = p.get().await.unwrap();
    for q in &statements {
        let plan = explain_analyze(&mut pooled, q, false).await.unwrap();
        assert!(plan.execution_ms.is_some());
    }
    drop(pooled);
    let mut p2 = p.clone();
    for q in &statements {
        explain_analyze(&mut p2, q, true).await.unwrap();
    }
    assert_eq!(count(&c, snapshot).await, 50);
    assert_eq!(count(&c, logged).await, 0);
    // The pooled connections are left clean: no transaction holding the
    // writes' transaction id is still open on them.
    for _ in 0..4 {
        let open: Vec<(bool,)> = p
            .get()
            .await
            .unwrap()
            .rows_as(&BuiltQuery::fixed(
                "SELECT txid_current_if_assigned() IS NOT NULL",
            ))
            .await
            .unwrap();
        assert_eq!(open, vec![(false,)]);
    }
}
