//! The executor traits on every client (tokio-postgres, deadpool, postgres,
//! sqlx): `Send` futures, forwarding through references and smart pointers,
//! transactions that commit or roll back as a whole, statements that must run
//! outside a transaction, scripts, `query_opt`.

use std::sync::Arc;

use chrono::{TimeZone, Utc};

use pgpatterns::sea_query::{ExprTrait, Index, Query};
use pgpatterns::{
    BlockingExecutor, BuiltQuery, Error, Executor, RowRead, SqlType, SqlxConn, Table, Transactional,
};
use sqlx::Connection;
use tokio_postgres::Row;

use pgpatterns::seed::moves::MovesSeed;
use pgpatterns::seed::orders::OrdersSeed;
use pgpatterns::seed::sales::SalesSeed;
use pgpatterns::testdb::TestSchema;

use crate::support::{
    client, exec, fetch, latest_and_rollup, pool, schema, since_answers, sqlx_conn, sqlx_pool,
    with_sync_client, Ledger,
};

/// `SELECT $1::int8 * 2`.
fn doubled(n: i64) -> BuiltQuery {
    BuiltQuery::from(&Query::select().expr(n.param().mul(2i64.param())).to_owned())
}

/// Runs [`doubled`] through any executor, taken by value.
async fn double_through<E: Executor>(e: E, n: i64) -> i64 {
    fetch::<(i64,), _>(&e, &doubled(n)).await[0].0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn futures_are_send_and_run_on_spawned_tasks() {
    futures_are_send_and_run_on_spawned_tasks_on(&schema().await).await;
}

/// [`futures_are_send_and_run_on_spawned_tasks`] on `schema` (a direct or a pooled one).
pub async fn futures_are_send_and_run_on_spawned_tasks_on(schema: &TestSchema) {
    let shared = Arc::new(client(schema).await);
    let pool = pool(schema);

    // `tokio::spawn` requires `Send + 'static` futures: this compiling is the
    // first half of the test, the answers the second.
    let mut tasks = Vec::new();
    for n in 0..8 {
        let (client, q) = (Arc::clone(&shared), doubled(n));
        tasks.push(tokio::spawn(
            async move { client.rows_as::<(i64,)>(&q).await },
        ));
        let (pool, q) = (pool.clone(), doubled(n));
        tasks.push(tokio::spawn(
            async move { pool.rows_as::<(i64,)>(&q).await },
        ));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task finished").expect("query")[0].0);
    }
    let expected: Vec<i64> = (0..8).flat_map(|n| [2 * n, 2 * n]).collect();
    assert_eq!(answers, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn references_and_smart_pointers_forward() {
    references_and_smart_pointers_forward_on(&schema().await).await;
}

/// [`references_and_smart_pointers_forward`] on `schema` (a direct or a pooled one).
pub async fn references_and_smart_pointers_forward_on(schema: &TestSchema) {
    let mut client = client(schema).await;
    let pool = pool(schema);

    assert_eq!(double_through(&client, 1).await, 2);
    assert_eq!(double_through(&&client, 2).await, 4);
    assert_eq!(double_through(&mut client, 3).await, 6);
    assert_eq!(double_through(Box::new(&client), 4).await, 8);
    assert_eq!(double_through(&pool, 5).await, 10);
    assert_eq!(double_through(Arc::new(pool.clone()), 6).await, 12);
    assert_eq!(double_through(Box::new(pool.clone()), 7).await, 14);
    let pooled = pool.get().await.expect("pooled connection");
    assert_eq!(double_through(&pooled, 8).await, 16);
    assert!(!(Arc::new(pool.clone())).is_transaction());

    let tx = client.transaction().await.expect("begin");
    assert_eq!(double_through(&tx, 9).await, 18);
    // Whether it is a transaction survives forwarding.
    assert!(tx.is_transaction());
    assert!(tx.is_transaction());
    assert!((Box::new(&tx)).is_transaction());
    assert!((Arc::new(&tx)).is_transaction());
}

/// Three statements in one transaction, then checks through `observer` (another
/// connection, so only committed rows are seen).
async fn commits_all<T: Transactional, O: Executor>(mut e: T, ledger: &Ledger, observer: &O) {
    exec(observer, &ledger.create()).await;
    let counts = e
        .run_in_transaction(&[
            ledger.insert(&[(1, 10)]),
            ledger.insert(&[(2, 20), (3, 30)]),
            ledger.add(5),
        ])
        .await
        .expect("transaction");
    assert_eq!(counts, [1, 2, 3]);
    assert_eq!(ledger.rows(observer).await, [(1, 15), (2, 25), (3, 35)]);
}

/// A failing statement (server error, then invalid input) rolls back every
/// statement before it, and leaves `e` usable.
async fn rolls_back_all<T: Transactional, O: Executor>(mut e: T, ledger: &Ledger, observer: &O) {
    exec(observer, &ledger.create()).await;
    exec(observer, &ledger.insert(&[(1, 10)])).await;
    let nul = BuiltQuery::from(&Query::select().expr("a\0b".to_owned().param()).to_owned());
    let failing = [ledger.insert(&[(1, 99)]), nul];
    for last in failing {
        let err = e
            .run_in_transaction(&[ledger.insert(&[(2, 20)]), ledger.add(5), last])
            .await
            .unwrap_err();
        assert!(
            err.is_unique_violation() || err.is_invalid_input(),
            "{err:?}"
        );
        assert_eq!(ledger.rows(observer).await, [(1, 10)]);
    }
    let counts = e.run_in_transaction(&[ledger.add(1)]).await;
    assert_eq!(counts.expect("usable after a rollback"), [1]);
    assert_eq!(ledger.rows(observer).await, [(1, 11)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_in_transaction_commits_every_statement() {
    execute_in_transaction_commits_every_statement_on(&schema().await).await;
}

/// [`execute_in_transaction_commits_every_statement`] on `schema` (a direct or a pooled one).
pub async fn execute_in_transaction_commits_every_statement_on(schema: &TestSchema) {
    let mut client = client(schema).await;
    let pool = pool(schema);
    let observer = pool.clone();

    commits_all(&mut client, &Ledger::new("by_client"), &observer).await;
    commits_all(pool.clone(), &Ledger::new("by_pool"), &observer).await;
    let pooled = pool.get().await.expect("pooled connection");
    commits_all(pooled, &Ledger::new("by_pooled_client"), &observer).await;

    // Inside a transaction: a savepoint, released into the outer transaction.
    let ledger = Ledger::new("by_savepoint");
    exec(&client, &ledger.create()).await;
    let mut tx = client.transaction().await.expect("begin");
    let counts = tx
        .run_in_transaction(&[ledger.insert(&[(1, 10), (2, 20)]), ledger.add(1)])
        .await;
    assert_eq!(counts.expect("savepoint"), [2, 2]);
    assert_eq!(ledger.rows(&tx).await, [(1, 11), (2, 21)]);
    assert!(ledger.rows(&observer).await.is_empty(), "not committed yet");
    tx.commit().await.expect("commit");
    assert_eq!(ledger.rows(&observer).await, [(1, 11), (2, 21)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn execute_in_transaction_rolls_back_every_statement() {
    execute_in_transaction_rolls_back_every_statement_on(&schema().await).await;
}

/// [`execute_in_transaction_rolls_back_every_statement`] on `schema` (a direct or a pooled one).
pub async fn execute_in_transaction_rolls_back_every_statement_on(schema: &TestSchema) {
    let mut client = client(schema).await;
    let pool = pool(schema);
    let observer = pool.clone();

    rolls_back_all(&mut client, &Ledger::new("by_client"), &observer).await;
    rolls_back_all(pool.clone(), &Ledger::new("by_pool"), &observer).await;
    let pooled = pool.get().await.expect("pooled connection");
    rolls_back_all(pooled, &Ledger::new("by_pooled_client"), &observer).await;

    // Inside a transaction: back to the savepoint; the outer transaction goes on.
    let ledger = Ledger::new("by_savepoint");
    exec(&client, &ledger.create()).await;
    let mut tx = client.transaction().await.expect("begin");
    exec(&tx, &ledger.insert(&[(1, 10)])).await;
    let err = tx
        .run_in_transaction(&[ledger.insert(&[(2, 20)]), ledger.insert(&[(1, 99)])])
        .await
        .unwrap_err();
    assert!(err.is_unique_violation(), "{err:?}");
    exec(&tx, &ledger.insert(&[(3, 30)])).await;
    tx.commit().await.expect("commit");
    assert_eq!(ledger.rows(&observer).await, [(1, 10), (3, 30)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocking_execute_in_transaction_commits_or_rolls_back() {
    blocking_execute_in_transaction_commits_or_rolls_back_on(&schema().await).await;
}

/// [`blocking_execute_in_transaction_commits_or_rolls_back`] on `schema` (a direct or a pooled one).
pub async fn blocking_execute_in_transaction_commits_or_rolls_back_on(schema: &TestSchema) {
    with_sync_client(schema, |client| {
        let ledger = Ledger::new("ledger");
        let rows = |c: &mut postgres::Client| {
            ledger
                .select()
                .fetch_all_blocking::<(i32, i64)>(c)
                .expect("select")
        };
        ledger.create().execute_blocking(client).expect("create");

        let all = [ledger.insert(&[(1, 10), (2, 20)]), ledger.add(1)];
        let counts = client.run_in_transaction(&all).expect("commit");
        assert_eq!(counts, [2, 2]);

        let failing = [
            ledger.insert(&[(3, 30)]),
            ledger.add(1),
            ledger.insert(&[(1, 0)]),
        ];
        let err = client.run_in_transaction(&failing).unwrap_err();
        assert!(err.is_unique_violation(), "{err:?}");
        assert_eq!(rows(client), [(1, 11), (2, 21)]);

        // Inside a transaction: back to the savepoint; the outer transaction goes on.
        let mut tx = client.transaction().expect("begin");
        let err = tx.run_in_transaction(&failing).unwrap_err();
        assert!(err.is_unique_violation(), "{err:?}");
        let counts = tx.run_in_transaction(&[ledger.add(100)]);
        assert_eq!(counts.expect("savepoint"), [2]);
        tx.commit().expect("commit");
        assert_eq!(rows(client), [(1, 111), (2, 121)]);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_index_builds_run_only_outside_transactions() {
    concurrent_index_builds_run_only_outside_transactions_on(&schema().await).await;
}

/// [`concurrent_index_builds_run_only_outside_transactions`] on `schema` (a direct or a pooled one).
pub async fn concurrent_index_builds_run_only_outside_transactions_on(schema: &TestSchema) {
    let mut client = client(schema).await;
    let pool = pool(schema);
    let ledger = Ledger::new("ledger");
    exec(&client, &ledger.create()).await;
    let index = |name: &str| {
        BuiltQuery::schema(
            Index::create()
                .name(name)
                .table(ledger.table.table_name())
                .col(ledger.amount.iden())
                .concurrently(),
        )
    };
    assert!(index("x").sql().starts_with("CREATE INDEX CONCURRENTLY "));

    // On a plain connection, a pool and a sync client: built.
    index("by_client")
        .execute_outside_transaction(&client)
        .await
        .expect("CREATE INDEX CONCURRENTLY on a client");
    pool.run_outside_transaction(&index("by_pool"))
        .await
        .expect("CREATE INDEX CONCURRENTLY on a pool");
    let (sync_index, refused) = (index("by_sync"), index("refused_sync"));
    let err = with_sync_client(schema, move |c| {
        sync_index
            .execute_outside_transaction_blocking(c)
            .expect("CREATE INDEX CONCURRENTLY on a sync client");
        let mut tx = c.transaction().expect("begin");
        refused
            .execute_outside_transaction_blocking(&mut tx)
            .unwrap_err()
    })
    .await;
    assert!(
        matches!(&err, Error::InTransaction { sql } if sql == index("refused_sync").sql()),
        "{err:?}"
    );

    // In a tokio-postgres transaction: refused before sending, so the
    // transaction is not aborted.
    let tx = client.transaction().await.expect("begin");
    let refused = index("refused_tx");
    for err in [
        refused.execute_outside_transaction(&tx).await.unwrap_err(),
        refused.execute_outside_transaction(&&tx).await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::InTransaction { sql } if sql == refused.sql()),
            "{err:?}"
        );
        assert_eq!(err.sql(), Some(refused.sql()));
    }
    assert!(ledger.rows(&tx).await.is_empty());
    // What the check prevents: the server refuses it inside a transaction block.
    let err = refused.execute(&tx).await.unwrap_err();
    assert_eq!(err.code(), Some("25001"), "{err}");
    drop(tx);

    let pg_indexes = Table::in_schema("pg_catalog", "pg_indexes").expect("valid name");
    let col = |name| pg_indexes.column::<String>(name).expect("valid name");
    let (in_schema, name) = (col("schemaname"), col("indexname"));
    let q = BuiltQuery::from(
        &Query::select()
            .column(name.col_ref())
            .from(pg_indexes.table_ref())
            .and_where(in_schema.eq(schema.name()))
            .order_by(name.col_ref(), pgpatterns::sea_query::Order::Asc)
            .to_owned(),
    );
    let names: Vec<String> = fetch::<(String,), _>(&client, &q)
        .await
        .into_iter()
        .map(|(n,)| n)
        .collect();
    assert_eq!(names, ["by_client", "by_pool", "by_sync", "ledger_pkey"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_execute_runs_a_script_as_one_unit() {
    batch_execute_runs_a_script_as_one_unit_on(&schema().await).await;
}

/// [`batch_execute_runs_a_script_as_one_unit`] on `schema` (a direct or a pooled one).
pub async fn batch_execute_runs_a_script_as_one_unit_on(schema: &TestSchema) {
    let client = client(schema).await;
    let pool = pool(schema);
    let ledger = Ledger::new("scripted");

    let script = "CREATE TABLE scripted (id int4 PRIMARY KEY, amount int8);\n\
                  INSERT INTO scripted VALUES (1, 10);\n\
                  INSERT INTO scripted VALUES (2, 20), (3, 30);\n\
                  UPDATE scripted SET amount = amount * 2 WHERE id > 1;";
    client.run_script(script).await.expect("script");
    assert_eq!(ledger.rows(&pool).await, [(1, 10), (2, 40), (3, 60)]);

    // The statements of a script share one implicit transaction: a failure
    // late in it undoes the earlier ones.
    let failing = "INSERT INTO scripted VALUES (4, 40); INSERT INTO scripted VALUES (1, 0);";
    let err = pool.run_script(failing).await.unwrap_err();
    assert!(err.is_unique_violation(), "{err:?}");
    assert_eq!(err.sql(), Some(failing));
    assert_eq!(ledger.rows(&client).await, [(1, 10), (2, 40), (3, 60)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_opt_returns_none_or_the_row() {
    query_opt_returns_none_or_the_row_on(&schema().await).await;
}

/// [`query_opt_returns_none_or_the_row`] on `schema` (a direct or a pooled one).
pub async fn query_opt_returns_none_or_the_row_on(schema: &TestSchema) {
    async fn check<E: Executor<Row = Row>>(e: &E, ledger: &Ledger) {
        let absent = e.optional_row(&ledger.select_where(ledger.id.eq(2))).await;
        assert!(absent.expect("query_opt").is_none());
        let present = e.optional_row(&ledger.select_where(ledger.id.eq(1))).await;
        let row = present.expect("query_opt").expect("a row");
        assert_eq!(
            RowRead::try_get::<i64>(&row, "amount".into()).expect("amount"),
            10
        );
    }
    let client = client(schema).await;
    let ledger = Ledger::new("ledger");
    exec(&client, &ledger.create()).await;
    exec(&client, &ledger.insert(&[(1, 10)])).await;

    check(&client, &ledger).await;
    check(&pool(schema), &ledger).await;
    let got = with_sync_client(schema, move |c| {
        let absent = c.optional_row(&ledger.select_where(ledger.id.eq(2)));
        let present = c.optional_row(&ledger.select_where(ledger.id.eq(1)));
        let amount = |row: Row| RowRead::try_get::<i64>(&row, "amount".into()).expect("amount");
        (
            absent.expect("query_opt").map(amount),
            present.expect("query_opt").map(amount),
        )
    })
    .await;
    assert_eq!(got, (None, Some(10)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_executors_run_send_futures_and_forward() {
    sqlx_executors_run_send_futures_and_forward_on(&schema().await).await;
}

/// The sqlx executors — `PgPool`, and `SqlxConn` over a connection, a pooled
/// connection and a transaction — on spawned tasks and through references and
/// smart pointers, as [`futures_are_send_and_run_on_spawned_tasks_on`] and
/// [`references_and_smart_pointers_forward_on`] check the other clients.
pub async fn sqlx_executors_run_send_futures_and_forward_on(schema: &TestSchema) {
    let pool = sqlx_pool(schema);
    let shared = Arc::new(SqlxConn::new(pool.acquire().await.expect("acquire")));
    let mut tasks = Vec::new();
    for n in 0..8 {
        let (pool, q) = (pool.clone(), doubled(n));
        tasks.push(tokio::spawn(
            async move { pool.rows_as::<(i64,)>(&q).await },
        ));
        // Statements on one connection from several tasks take turns.
        let (conn, q) = (Arc::clone(&shared), doubled(n));
        tasks.push(tokio::spawn(
            async move { conn.rows_as::<(i64,)>(&q).await },
        ));
    }
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.expect("task finished").expect("query")[0].0);
    }
    let expected: Vec<i64> = (0..8).flat_map(|n| [2 * n, 2 * n]).collect();
    assert_eq!(answers, expected);

    let mut conn = sqlx_conn(schema).await;
    assert_eq!(double_through(&pool, 1).await, 2);
    assert_eq!(double_through(Arc::new(pool.clone()), 2).await, 4);
    assert_eq!(double_through(Box::new(pool.clone()), 3).await, 6);
    assert_eq!(double_through(SqlxConn::new(&mut conn), 4).await, 8);
    assert_eq!(double_through(&*shared, 5).await, 10);
    assert!(!pool.is_transaction() && !SqlxConn::new(&mut conn).is_transaction());

    let tx = SqlxConn::new(conn.begin().await.expect("begin"));
    assert_eq!(double_through(&tx, 6).await, 12);
    assert!(tx.is_transaction());
    assert!((Box::new(&tx)).is_transaction());
    assert!((Arc::new(&tx)).is_transaction());
    // A connection borrowed from a transaction is one too.
    let mut tx = tx.into_inner();
    assert!(SqlxConn::new(&mut *tx).is_transaction());
    tx.rollback().await.expect("rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_transactions_commit_or_roll_back_every_statement() {
    sqlx_transactions_commit_or_roll_back_every_statement_on(&schema().await).await;
}

/// [`Transactional`] on sqlx: a pool, a connection and a pooled connection
/// commit or roll back a batch as a whole; in a transaction the batch is a
/// savepoint; `rows_rolled_back` undoes what it ran. Observed through
/// another client (deadpool), so only committed rows are seen.
pub async fn sqlx_transactions_commit_or_roll_back_every_statement_on(schema: &TestSchema) {
    let pool = sqlx_pool(schema);
    let mut conn = sqlx_conn(schema).await;
    let observer = crate::support::pool(schema);

    commits_all(pool.clone(), &Ledger::new("by_sqlx_pool"), &observer).await;
    commits_all(
        SqlxConn::new(&mut conn),
        &Ledger::new("by_sqlx_conn"),
        &observer,
    )
    .await;
    let pooled = pool.acquire().await.expect("acquire");
    commits_all(
        SqlxConn::new(pooled),
        &Ledger::new("by_sqlx_pooled"),
        &observer,
    )
    .await;

    rolls_back_all(pool.clone(), &Ledger::new("rb_sqlx_pool"), &observer).await;
    rolls_back_all(
        SqlxConn::new(&mut conn),
        &Ledger::new("rb_sqlx_conn"),
        &observer,
    )
    .await;
    let pooled = pool.acquire().await.expect("acquire");
    rolls_back_all(
        SqlxConn::new(pooled),
        &Ledger::new("rb_sqlx_pooled"),
        &observer,
    )
    .await;

    // Inside a transaction: a savepoint, released into the outer transaction,
    // or rolled back to while the outer transaction goes on.
    let ledger = Ledger::new("by_sqlx_savepoint");
    exec(&observer, &ledger.create()).await;
    let mut tx = SqlxConn::new(conn.begin().await.expect("begin"));
    let counts = tx
        .run_in_transaction(&[ledger.insert(&[(1, 10), (2, 20)]), ledger.add(1)])
        .await;
    assert_eq!(counts.expect("savepoint"), [2, 2]);
    let err = tx
        .run_in_transaction(&[ledger.insert(&[(3, 30)]), ledger.insert(&[(1, 99)])])
        .await
        .unwrap_err();
    assert!(err.is_unique_violation(), "{err:?}");
    assert_eq!(ledger.rows(&tx).await, [(1, 11), (2, 21)]);
    assert!(ledger.rows(&observer).await.is_empty(), "not committed yet");
    // A dry run inside the transaction: rows returned, nothing kept.
    let delete = BuiltQuery::fixed("DELETE FROM by_sqlx_savepoint RETURNING id");
    assert_eq!(
        tx.rows_rolled_back(&delete).await.expect("dry run").len(),
        2
    );
    tx.into_inner().commit().await.expect("commit");
    assert_eq!(ledger.rows(&observer).await, [(1, 11), (2, 21)]);

    // On the pool: a transaction of its own, rolled back.
    let mut on_pool = pool.clone();
    let rows = on_pool.rows_rolled_back(&delete).await.expect("dry run");
    assert_eq!(rows.len(), 2);
    assert_eq!(ledger.rows(&observer).await, [(1, 11), (2, 21)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlx_scripts_concurrent_indexes_and_optional_rows() {
    sqlx_scripts_concurrent_indexes_and_optional_rows_on(&schema().await).await;
}

/// On sqlx: scripts run as one unit, `CREATE INDEX CONCURRENTLY` runs on a
/// pool or connection and is refused in a transaction before it is sent, and
/// `optional_row` returns none or the row, read by name.
pub async fn sqlx_scripts_concurrent_indexes_and_optional_rows_on(schema: &TestSchema) {
    let pool = sqlx_pool(schema);
    let mut conn = sqlx_conn(schema).await;
    let ledger = Ledger::new("scripted");
    let script = "CREATE TABLE scripted (id int4 PRIMARY KEY, amount int8);\n\
                  INSERT INTO scripted VALUES (1, 10), (2, 20);";
    pool.run_script(script).await.expect("script");
    let failing = "INSERT INTO scripted VALUES (3, 30); INSERT INTO scripted VALUES (1, 0);";
    let err = SqlxConn::new(&mut conn)
        .run_script(failing)
        .await
        .unwrap_err();
    assert!(err.is_unique_violation(), "{err:?}");
    assert_eq!(err.sql(), Some(failing));
    assert_eq!(ledger.rows(&pool).await, [(1, 10), (2, 20)]);

    let absent = pool
        .optional_row(&ledger.select_where(ledger.id.eq(3)))
        .await;
    assert!(absent.expect("query_opt").is_none());
    let present = SqlxConn::new(&mut conn)
        .optional_row(&ledger.select_where(ledger.id.eq(2)))
        .await;
    let row = present.expect("query_opt").expect("a row");
    assert_eq!(
        RowRead::try_get::<i64>(&row, "amount".into()).expect("amount"),
        20
    );
    assert_eq!(RowRead::column_name(&row, 1), Some("amount"));

    let index = |name: &str| {
        BuiltQuery::schema(
            Index::create()
                .name(name)
                .table(ledger.table.table_name())
                .col(ledger.amount.iden())
                .concurrently(),
        )
    };
    index("by_sqlx_pool")
        .execute_outside_transaction(&pool)
        .await
        .expect("CREATE INDEX CONCURRENTLY on a pool");
    index("by_sqlx_conn")
        .execute_outside_transaction(&SqlxConn::new(&mut conn))
        .await
        .expect("CREATE INDEX CONCURRENTLY on a connection");
    let mut tx = conn.begin().await.expect("begin");
    let refused = index("refused");
    let in_tx = SqlxConn::new(&mut *tx);
    let err = refused
        .execute_outside_transaction(&in_tx)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::InTransaction { sql } if sql == refused.sql()),
        "{err:?}"
    );
    // Refused before sending: the transaction is not aborted.
    assert_eq!(ledger.rows(&in_tx).await, [(1, 10), (2, 20)]);
    let err = refused.execute(&in_tx).await.unwrap_err();
    assert_eq!(err.code(), Some("25001"), "{err}");
    tx.rollback().await.expect("rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_family_answers_the_same_through_sqlx() {
    let (a, b) = (schema().await, schema().await);
    let now = Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap();
    let (ca, cb) = (client(&a).await, client(&b).await);
    OrdersSeed::new(400).run(&ca, |_| {}).await.expect("orders");
    SalesSeed::sample().run(&ca, |_| {}).await.expect("sales");
    MovesSeed::new(300)
        .now(now)
        .run(&cb, |_| {})
        .await
        .expect("moves");
    for e in [&ca, &cb] {
        e.run_script("ANALYZE").await.expect("analyze");
    }

    // Latest (count, page, Auto) and the rollup's rows.
    let expected = latest_and_rollup(&ca).await;
    assert!(expected.0 > 0 && expected.1.len() == 10 && !expected.3.is_empty());
    assert_eq!(latest_and_rollup(&sqlx_pool(&a)).await, expected);
    let mut conn = sqlx_conn(&a).await;
    assert_eq!(latest_and_rollup(&SqlxConn::new(&mut conn)).await, expected);

    // Since (count, page, the page's changes, Auto).
    let expected = since_answers(&cb, now).await;
    assert!(expected.0 > 0 && !expected.1.is_empty() && expected.2 > 0);
    assert_eq!(since_answers(&sqlx_pool(&b), now).await, expected);
    let mut conn = sqlx_conn(&b).await;
    let mut tx = sqlx::Connection::begin(&mut conn).await.expect("begin");
    assert_eq!(since_answers(&SqlxConn::new(&mut *tx), now).await, expected);
    tx.rollback().await.expect("rollback");
}

/// Every check above but sqlx's, each on a fresh schema from `make` (the
/// pooler test runs them through PgBouncer).
pub async fn every_check<F: std::future::Future<Output = TestSchema>>(make: impl Fn() -> F) {
    futures_are_send_and_run_on_spawned_tasks_on(&make().await).await;
    references_and_smart_pointers_forward_on(&make().await).await;
    execute_in_transaction_commits_every_statement_on(&make().await).await;
    execute_in_transaction_rolls_back_every_statement_on(&make().await).await;
    blocking_execute_in_transaction_commits_or_rolls_back_on(&make().await).await;
    concurrent_index_builds_run_only_outside_transactions_on(&make().await).await;
    batch_execute_runs_a_script_as_one_unit_on(&make().await).await;
    query_opt_returns_none_or_the_row_on(&make().await).await;
    // Not the sqlx checks: sqlx parses a statement and waits for the answer
    // before it binds and runs it, and a transaction-mode pooler may hand
    // the server connection (with the unnamed statement) to another client
    // in between: "unnamed prepared statement does not exist" (26000), seen
    // here under concurrent statements.
}
