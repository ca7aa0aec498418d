//! The denormalized column's integrity edges: entities without history,
//! derived names that must not collide, PL/pgSQL's own names as table and
//! column names, stale snapshots under REPEATABLE READ, and installers that
//! refuse to replace what they did not create.

use chrono::{DateTime, Duration, TimeZone, Utc};
use pgpatterns::sea_query::{Alias, Order, Query};
use pgpatterns::{
    BuiltQuery, Denormalize, Error, Executor, LatestStatus, LatestStrategy, Table, Transactional,
};

use crate::support::{client, schema};

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 0, 0, 0).unwrap()
}

/// `LatestStatus` over `entity(key)` and `history(fk, status, at, id)`,
/// maintaining `entity.column`.
fn spec_for(
    entity: &Table,
    key: &str,
    column: &str,
    history: &Table,
    fk: &str,
    status: &str,
) -> LatestStatus<String> {
    LatestStatus::new(
        &entity.column::<i64>(key).unwrap(),
        &history.column::<i64>(fk).unwrap(),
        &history.column::<String>(status).unwrap(),
        &history.column::<DateTime<Utc>>("at").unwrap(),
    )
    .then_by(&history.column::<i64>("id").unwrap())
    .denormalized(&entity.column::<String>(column).unwrap())
}

/// Every predicate, for comparing strategies.
fn predicates(s: &LatestStatus<String>) -> Vec<(&'static str, LatestStatus<String>)> {
    vec![
        ("any", s.clone()),
        ("eq", s.clone().status_eq("a")),
        ("ne", s.clone().status_ne("a")),
        ("in", s.clone().status_in(["a", "c"])),
        ("not_in", s.clone().status_not_in(["a"])),
        ("is_null", s.clone().status_is_null()),
    ]
}

/// The keys and statuses a strategy returns, in key order.
async fn rows(
    c: &tokio_postgres::Client,
    s: &LatestStatus<String>,
    key: &str,
    strategy: LatestStrategy,
) -> Vec<(i64, Option<String>)> {
    let q = Query::select()
        .column(Alias::new(key))
        .column(Alias::new(pgpatterns::LATEST_STATUS))
        .from_subquery(
            s.clone().strategy(strategy).to_statement().unwrap(),
            Alias::new("m"),
        )
        .order_by(Alias::new(key), Order::Asc)
        .to_owned();
    c.rows_as(&BuiltQuery::from(&q))
        .await
        .unwrap_or_else(|e| panic!("{strategy:?}: {e}"))
}

/// Denormalized (and Auto, which picks it) returns exactly what every
/// history strategy returns, for every predicate.
async fn assert_same_rows(c: &tokio_postgres::Client, spec: &LatestStatus<String>, key: &str) {
    for (name, s) in predicates(spec) {
        let want = rows(c, &s, key, LatestStrategy::DistinctOn).await;
        for strategy in [
            LatestStrategy::Denormalized,
            LatestStrategy::Lateral,
            LatestStrategy::NotExists,
        ] {
            assert_eq!(
                rows(c, &s, key, strategy).await,
                want,
                "{name} {strategy:?}"
            );
        }
        let (n,): (i64,) = c
            .rows_as(
                &s.clone()
                    .strategy(LatestStrategy::Auto)
                    .count_query()
                    .unwrap(),
            )
            .await
            .unwrap()[0];
        assert_eq!(n as usize, want.len(), "{name} Auto count");
        let (n,): (i64,) = c
            .rows_as(
                &s.clone()
                    .strategy(LatestStrategy::Denormalized)
                    .count_query()
                    .unwrap(),
            )
            .await
            .unwrap()[0];
        assert_eq!(n as usize, want.len(), "{name} Denormalized count");
    }
}

/// 30 orders: 1–10 without history, 11–20 whose latest status is NULL
/// (after an older non-NULL one), 21–30 with statuses `a`/`b`/`c`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denormalized_returns_no_entity_without_history() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, status text);
         CREATE TABLE order_status (id bigserial PRIMARY KEY, order_id bigint NOT NULL,
                                    status text, at timestamptz NOT NULL);
         INSERT INTO orders (id) SELECT g FROM generate_series(1, 30) g;",
    )
    .await
    .unwrap();
    let orders = Table::new("orders").unwrap();
    let history = Table::new("order_status").unwrap();
    let spec = spec_for(&orders, "id", "status", &history, "order_id", "status");
    let d = spec.denormalize().unwrap();
    d.install(&mut c).await.unwrap();
    c.batch_execute(
        "INSERT INTO order_status (order_id, status, at)
           SELECT g, 'a', timestamptz '2024-01-01' FROM generate_series(11, 20) g;
         INSERT INTO order_status (order_id, status, at)
           SELECT g, NULL, timestamptz '2024-01-02' FROM generate_series(11, 20) g;
         INSERT INTO order_status (order_id, status, at)
           SELECT g, (ARRAY['a','b','c'])[g % 3 + 1], timestamptz '2024-01-03'
           FROM generate_series(21, 30) g;",
    )
    .await
    .unwrap();
    assert_eq!(d.drift_count(&c).await.unwrap(), 0);
    assert_same_rows(&c, &spec, "id").await;
    // `is_null` is the ten orders whose latest status is NULL, not the
    // twenty with a NULL column.
    let (n,): (i64,) = c
        .rows_as(
            &spec
                .clone()
                .status_is_null()
                .strategy(LatestStrategy::Denormalized)
                .count_query()
                .unwrap(),
        )
        .await
        .unwrap()[0];
    assert_eq!(n, 10);
}

/// `orders.shipment_status` and `orders_shipment.status` read alike when
/// their parts are joined with `_`; each must get its own function,
/// triggers and index, and both stay maintained. Same for the index of
/// `h_x (y)` and `h (x_y)`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn colliding_looking_names_get_their_own_objects() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, shipment_status text);
         CREATE TABLE orders_shipment (id bigint PRIMARY KEY, status text);
         CREATE TABLE h_x (id bigserial PRIMARY KEY, y bigint NOT NULL, s text, at timestamptz NOT NULL);
         CREATE TABLE h (id bigserial PRIMARY KEY, x_y bigint NOT NULL, s text, at timestamptz NOT NULL);
         INSERT INTO orders (id) SELECT g FROM generate_series(1, 5) g;
         INSERT INTO orders_shipment (id) SELECT g FROM generate_series(1, 5) g;",
    )
    .await
    .unwrap();
    let a = spec_for(
        &Table::new("orders").unwrap(),
        "id",
        "shipment_status",
        &Table::new("h_x").unwrap(),
        "y",
        "s",
    );
    let b = spec_for(
        &Table::new("orders_shipment").unwrap(),
        "id",
        "status",
        &Table::new("h").unwrap(),
        "x_y",
        "s",
    );
    let (da, db) = (a.denormalize().unwrap(), b.denormalize().unwrap());
    assert_ne!(da.function_name(), db.function_name());
    da.install(&mut c).await.unwrap();
    db.install(&mut c).await.unwrap();
    let mut index_names = Vec::new();
    for s in [&a, &b] {
        for q in s.index_advice(false) {
            q.execute(&c).await.unwrap();
            index_names.push(q.sql().split('"').nth(1).unwrap().to_owned());
        }
    }
    let (n,): (i64,) = c
        .rows_as(&BuiltQuery::fixed(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema() AND indexname LIKE '%latest%'",
        ))
        .await
        .unwrap()[0];
    assert_eq!(n, 2, "two distinct indexes: {index_names:?}");
    c.batch_execute(
        "INSERT INTO h_x (y, s, at) VALUES (1, 'x1', '2024-01-01'), (2, 'x2', '2024-01-01');
         INSERT INTO h (x_y, s, at) VALUES (1, 'h1', '2024-01-01'), (3, 'h3', '2024-01-01');",
    )
    .await
    .unwrap();
    assert_eq!(da.drift_count(&c).await.unwrap(), 0);
    assert_eq!(db.drift_count(&c).await.unwrap(), 0);
    // Uninstall A: B is still maintained.
    da.uninstall(&mut c).await.unwrap();
    c.batch_execute("INSERT INTO h (x_y, s, at) VALUES (1, 'h1b', '2024-01-02')")
        .await
        .unwrap();
    assert_eq!(db.drift_count(&c).await.unwrap(), 0);
    assert_same_rows(&c, &b, "id").await;
    // Re-install A, idempotently, and backfill what it missed.
    c.batch_execute("INSERT INTO h_x (y, s, at) VALUES (3, 'x3', '2024-01-01')")
        .await
        .unwrap();
    assert_eq!(da.drift_count(&c).await.unwrap(), 1);
    da.install(&mut c).await.unwrap();
    da.install(&mut c).await.unwrap();
    da.backfill::<i64, _>(&mut c, 2, |_| {}).await.unwrap();
    assert_eq!(da.drift_count(&c).await.unwrap(), 0);
    assert_same_rows(&c, &a, "id").await;
}

/// Install refuses with `ObjectConflict` naming `kind`, and uninstall
/// refuses too.
async fn assert_refused(d: &Denormalize, c: &mut tokio_postgres::Client, kind: &str) {
    let err = d.install(c).await.unwrap_err();
    assert!(
        matches!(&err, Error::ObjectConflict { kind: k, .. } if *k == kind),
        "{err}"
    );
    let err = d.uninstall(c).await.unwrap_err();
    assert!(matches!(err, Error::ObjectConflict { .. }), "{err}");
}

/// An object of a derived name that pgpatterns did not create for this
/// column is never replaced or dropped: install and uninstall refuse with
/// `ObjectConflict`, and the other object is intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn installers_refuse_objects_they_did_not_create() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, status text);
         CREATE TABLE order_status (id bigserial PRIMARY KEY, order_id bigint NOT NULL,
                                    status text, at timestamptz NOT NULL);",
    )
    .await
    .unwrap();
    let orders = Table::new("orders").unwrap();
    let history = Table::new("order_status").unwrap();
    let spec = spec_for(&orders, "id", "status", &history, "order_id", "status");
    let d = spec.denormalize().unwrap();
    let function = d.function_name().as_str().replace('"', "\"\"");

    // A function of the same name that is someone else's.
    c.batch_execute(&format!(
        "CREATE FUNCTION \"{function}\"() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$"
    ))
    .await
    .unwrap();
    assert_refused(&d, &mut c, "function").await;
    // The guard in the statements refuses too (for callers who run them
    // themselves), and nothing was replaced.
    let err = c
        .run_in_transaction(&d.install_statements())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("42710"), "{err}");
    let src: Vec<(String,)> = c
        .rows_as(&BuiltQuery::fixed(
            "SELECT prosrc FROM pg_proc WHERE proname LIKE 'pgp_latest%' AND pronamespace = current_schema()::regnamespace",
        ))
        .await
        .unwrap();
    assert_eq!(src, vec![("BEGIN RETURN NULL; END".to_owned(),)]);
    c.batch_execute(&format!("DROP FUNCTION \"{function}\"()"))
        .await
        .unwrap();

    // A trigger of one of the derived names that runs another function.
    let trigger = d.trigger_names()[0].as_str().replace('"', "\"\"");
    c.batch_execute(&format!(
        "CREATE FUNCTION mine() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN RETURN NULL; END$$;
         CREATE TRIGGER \"{trigger}\" AFTER INSERT ON order_status FOR EACH STATEMENT EXECUTE FUNCTION mine();"
    ))
    .await
    .unwrap();
    assert_refused(&d, &mut c, "trigger").await;
    let (n,): (i64,) = c
        .rows_as(&BuiltQuery::fixed(
            "SELECT count(*) FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid WHERE p.proname = 'mine'",
        ))
        .await
        .unwrap()[0];
    assert_eq!(n, 1, "the other trigger is intact");
    c.batch_execute(&format!("DROP TRIGGER \"{trigger}\" ON order_status"))
        .await
        .unwrap();

    // Free names: install, and installing again, work.
    d.install(&mut c).await.unwrap();
    d.install(&mut c).await.unwrap();
    d.uninstall(&mut c).await.unwrap();
}

/// PL/pgSQL's own names (`new`, `old`, `found`, `tg_op`, …) and the
/// trigger's internal names as table and column names: install, write,
/// no drift, the same rows as the history strategies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plpgsql_names_as_tables_and_columns() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    let cases: [(&str, &str, &str, &str, &str, &str); 5] = [
        // entity, key, column, history, fk, status
        ("new", "id", "status", "old", "new", "old"),
        ("old", "found", "tg_op", "new", "id2", "tg_table_name"),
        (
            "pgp_new_rows",
            "pgp_key",
            "pgp_status",
            "pgp_old_rows",
            "pgp_fresh",
            "pgp_changed",
        ),
        (
            "latest",
            "tg_name",
            "result",
            "pgp_locked",
            "latest",
            "tg_argv",
        ),
        (
            "found", "tg_when", "tg_level", "tg_relid", "tg_nargs", "new",
        ),
    ];
    for (i, (entity, key, column, history, fk, status)) in cases.into_iter().enumerate() {
        let q = |s: &str| s.replace('"', "\"\"");
        c.batch_execute(&format!(
            "CREATE SCHEMA case{i};
             SET search_path = case{i};
             CREATE TABLE \"{e}\" (\"{k}\" bigint PRIMARY KEY, \"{col}\" text);
             CREATE TABLE \"{h}\" (id bigserial PRIMARY KEY, \"{fk}\" bigint NOT NULL,
                                  \"{st}\" text, at timestamptz NOT NULL);
             INSERT INTO \"{e}\" SELECT g FROM generate_series(1, 6) g;",
            e = q(entity),
            k = q(key),
            col = q(column),
            h = q(history),
            fk = q(fk),
            st = q(status),
        ))
        .await
        .unwrap();
        // unqualified (resolved through search_path) and qualified names
        let (e, h) = if i % 2 == 0 {
            (Table::new(entity).unwrap(), Table::new(history).unwrap())
        } else {
            (
                Table::in_schema(format!("case{i}"), entity).unwrap(),
                Table::in_schema(format!("case{i}"), history).unwrap(),
            )
        };
        let spec = spec_for(&e, key, column, &h, fk, status);
        let d = spec.denormalize().unwrap();
        d.install(&mut c)
            .await
            .unwrap_or_else(|e| panic!("case {i} install: {e}"));
        // inserts (one in the past), an update, a delete, a bulk insert
        c.batch_execute(&format!(
            "INSERT INTO \"{h}\" (\"{fk}\", \"{st}\", at) VALUES (1, 'a', '2024-01-02'), (1, 'b', '2024-01-01'), (2, NULL, '2024-01-01');
             INSERT INTO \"{h}\" (\"{fk}\", \"{st}\", at) VALUES (3, 'c', '2024-01-01');
             UPDATE \"{h}\" SET \"{st}\" = 'a' WHERE \"{fk}\" = 3;
             INSERT INTO \"{h}\" (\"{fk}\", \"{st}\", at) SELECT g, 'b', '2024-01-05' FROM generate_series(4, 5) g;
             DELETE FROM \"{h}\" WHERE \"{fk}\" = 5;",
            h = q(history),
            fk = q(fk),
            st = q(status),
        ))
        .await
        .unwrap_or_else(|e| panic!("case {i} writes: {e}"));
        assert_eq!(d.drift_count(&c).await.unwrap(), 0, "case {i}");
        assert_same_rows(&c, &spec, key).await;
        d.uninstall(&mut c).await.unwrap();
    }
    c.batch_execute("RESET search_path").await.unwrap();
}

/// A REPEATABLE READ writer whose snapshot predates another writer's
/// committed, *newer* history row for the same entity — a row that changed
/// nothing in the column — then inserts an *older* row. Its trigger cannot
/// see the newer row; it must fail with a serialization error (and the
/// column stay right), never store the older status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_snapshot_writer_gets_a_serialization_error() {
    let schema = schema().await;
    let mut c1 = client(&schema).await;
    c1.batch_execute(
        "CREATE TABLE orders (id bigint PRIMARY KEY, status text);
         CREATE TABLE order_status (id bigserial PRIMARY KEY, order_id bigint NOT NULL,
                                    status text, at timestamptz NOT NULL);
         INSERT INTO orders VALUES (1);",
    )
    .await
    .unwrap();
    let orders = Table::new("orders").unwrap();
    let history = Table::new("order_status").unwrap();
    let spec = spec_for(&orders, "id", "status", &history, "order_id", "status");
    let d = spec.denormalize().unwrap();
    d.install(&mut c1).await.unwrap();
    let insert = "INSERT INTO order_status (order_id, status, at) VALUES (1, $1, $2)";
    c1.execute(insert, &[&"Complete", &base()]).await.unwrap();
    for isolation in ["REPEATABLE READ", "SERIALIZABLE"] {
        let c2 = client(&schema).await;
        let tx = c1
            .build_transaction()
            .isolation_level(if isolation == "SERIALIZABLE" {
                tokio_postgres::IsolationLevel::Serializable
            } else {
                tokio_postgres::IsolationLevel::RepeatableRead
            })
            .start()
            .await
            .unwrap();
        // the snapshot is taken here
        tx.batch_execute("SELECT count(*) FROM order_status")
            .await
            .unwrap();
        // another writer commits a newer row with the same status
        c2.execute(insert, &[&"Complete", &(base() + Duration::hours(2))])
            .await
            .unwrap();
        // the stale writer inserts an older row with another status
        let res = tx
            .execute(insert, &[&"Pending", &(base() + Duration::hours(1))])
            .await;
        let res = match res {
            Ok(_) => tx.commit().await,
            Err(e) => {
                drop(tx);
                Err(e)
            }
        };
        let err = res.expect_err("the stale writer must not commit");
        assert_eq!(
            err.code().map(|c| c.code()),
            Some("40001"),
            "{isolation}: {err}"
        );
        assert_eq!(d.drift_count(&c1).await.unwrap(), 0, "{isolation}");
        let stored: Vec<(Option<String>,)> = c1
            .rows_as(&BuiltQuery::fixed("SELECT status FROM orders WHERE id = 1"))
            .await
            .unwrap();
        assert_eq!(stored, vec![(Some("Complete".to_owned()),)], "{isolation}");
    }
}
