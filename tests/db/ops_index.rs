//! Concurrent index operations on a real server: built while inserts
//! continue; a failed unique build leaves an INVALID index that `ensure`
//! detects and rebuilds; refused inside a transaction; hostile
//! names.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pgpatterns::ops::index::{ConcurrentIndex, IndexState};
use pgpatterns::{Error, Table};

use crate::support::{client, schema};

fn index_on(table: &str, name: &str, column: &str) -> ConcurrentIndex {
    let t = Table::new(table).unwrap();
    ConcurrentIndex::new(name, &[t.column::<i64>(column).unwrap().erase()])
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> i64 {
    c.query_one(sql, &[]).await.unwrap().get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn built_concurrently_while_inserts_continue() {
    let schema = schema().await;
    let c = client(&schema).await;
    c.batch_execute(
        "CREATE TABLE items (id bigserial PRIMARY KEY, k bigint NOT NULL, v text);
         INSERT INTO items (k, v) SELECT g % 1000, md5(g::text) FROM generate_series(1, 50000) g;",
    )
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let w = client(&schema).await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                w.execute("INSERT INTO items (k, v) VALUES ($1, 'during')", &[&n])
                    .await
                    .unwrap();
                n += 1;
            }
            n
        })
    };
    // Let the writer get going, so the build overlaps with inserts.
    while count(&c, "SELECT count(*) FROM items WHERE v = 'during'").await < 20 {
        tokio::task::yield_now().await;
    }
    let idx = index_on("items", "items_k_idx", "k");
    let done = idx.ensure(&c).await.unwrap();
    let during = count(&c, "SELECT count(*) FROM items WHERE v = 'during'").await;
    stop.store(true, Ordering::Relaxed);
    let inserted = writer.await.unwrap();
    assert_eq!(
        (done.before, done.after),
        (IndexState::Missing, IndexState::Valid)
    );
    assert!(
        inserted > during,
        "inserts must continue during and after the build ({during} → {inserted})"
    );
    // The index holds every row, including those inserted during the build.
    c.batch_execute("SET enable_seqscan = off; SET enable_bitmapscan = off")
        .await
        .unwrap();
    let plan: Vec<String> = c
        .query("EXPLAIN SELECT count(*) FROM items WHERE k >= 0", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(plan.join("\n").contains("items_k_idx"), "{plan:?}");
    assert_eq!(
        count(&c, "SELECT count(*) FROM items WHERE k >= 0").await,
        50000 + inserted
    );
    // Idempotent; dropped concurrently; dropping again is fine.
    assert_eq!(idx.create(&c).await.unwrap(), IndexState::Valid);
    assert_eq!(idx.ensure(&c).await.unwrap().before, IndexState::Valid);
    idx.drop(&c).await.unwrap();
    assert_eq!(idx.state(&c).await.unwrap(), IndexState::Missing);
    idx.drop(&c).await.unwrap();
}

#[tokio::test]
async fn a_failed_unique_build_leaves_an_invalid_index_that_is_detected_and_rebuilt() {
    let schema = schema().await;
    let c = client(&schema).await;
    const SETUP: &str = "CREATE TABLE a (id bigint PRIMARY KEY, email bigint);
         INSERT INTO a SELECT g, g % 300 FROM generate_series(1, 1000) g;";
    {
        let table = "a";
        let mut c2 = client(&schema).await;
        let t = Table::new(table).unwrap();
        let c_: &tokio_postgres::Client = &c;
        c_.batch_execute(SETUP).await.unwrap();
        let idx = ConcurrentIndex::new(
            format!("{table}_email_key"),
            &[t.column::<i64>("email").unwrap().erase()],
        )
        .unique();
        // The induced failure: duplicates.
        let err = idx.create(&c).await.unwrap_err();
        assert!(err.is_unique_violation(), "{err}");
        assert_eq!(idx.state(&c).await.unwrap(), IndexState::Invalid);
        // The trap: IF NOT EXISTS now succeeds without building anything.
        assert_eq!(idx.create(&c).await.unwrap(), IndexState::Invalid);
        // ensure() tries to rebuild; the data is still bad (twice: a failed
        // rebuild must not leave a second INVALID index behind).
        for _ in 0..2 {
            let err = idx.ensure(&c).await.unwrap_err();
            assert!(err.is_unique_violation(), "{err}");
            assert_eq!(idx.state(&c).await.unwrap(), IndexState::Invalid);
        }
        // Fix the data, then rebuild.
        c_.execute("UPDATE a SET email = id", &[]).await.unwrap();
        let done = idx.ensure(&c).await.unwrap();
        assert_eq!(
            (done.before, done.after),
            (IndexState::Invalid, IndexState::Valid)
        );
        // One index of that name, and it now enforces uniqueness.
        let n: i64 = c_
            .query_one(
                "SELECT count(*) FROM pg_class WHERE relname LIKE $1 AND relkind = 'i'",
                &[&format!("{table}_email_key%")],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(n, 1, "a leftover index");
        let dup = c2
            .transaction()
            .await
            .unwrap()
            .execute("INSERT INTO a VALUES (5000, 1)", &[])
            .await
            .unwrap_err();
        assert_eq!(
            dup.code(),
            Some(&tokio_postgres::error::SqlState::UNIQUE_VIOLATION)
        );
    }
}

#[tokio::test]
async fn refused_inside_a_transaction() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute("CREATE TABLE t (id bigint)").await.unwrap();
    let idx = index_on("t", "t_id", "id");
    let tx = c.transaction().await.unwrap();
    for err in [
        idx.ensure(&tx).await.unwrap_err(),
        idx.create(&tx).await.unwrap_err(),
        idx.drop(&tx).await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::InTransaction { .. }), "{err}");
    }
    tx.rollback().await.unwrap();
    assert_eq!(idx.state(&c).await.unwrap(), IndexState::Missing);
}

#[tokio::test]
async fn hostile_names_are_only_names() {
    let schema = schema().await;
    let c = client(&schema).await;
    c.batch_execute(
        r#"CREATE TABLE victims (id int);
           CREATE TABLE "t""; DROP TABLE victims; --" ("c'ol ) ; --" bigint, "x" bigint);
           INSERT INTO "t""; DROP TABLE victims; --" VALUES (1, 2), (3, 4);"#,
    )
    .await
    .unwrap();
    let t = Table::new("t\"; DROP TABLE victims; --").unwrap();
    let name = "idx'); DROP TABLE victims; --";
    let idx = ConcurrentIndex::new(
        name,
        &[
            t.column::<i64>("c'ol ) ; --").unwrap().erase(),
            t.column::<i64>("x").unwrap().erase(),
        ],
    )
    .desc("x");
    assert_eq!(idx.ensure(&c).await.unwrap().after, IndexState::Valid);
    let def: String = c
        .query_one(
            "SELECT pg_get_indexdef(to_regclass(quote_ident($1)))",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(def.contains("DESC"), "{def}");
    idx.drop(&c).await.unwrap();
    assert_eq!(idx.state(&c).await.unwrap(), IndexState::Missing);
    assert_eq!(count(&c, "SELECT count(*) FROM victims").await, 0);
    // Names sea-query would write unescaped are refused before anything is sent.
    let err = ConcurrentIndex::new("a\"b", &[t.column::<i64>("x").unwrap().erase()])
        .check()
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    let err = ConcurrentIndex::new("ok", &[]).check().unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
}

/// `(table, valid)` of every index named `name` in the test's schema.
async fn indexes_named(c: &tokio_postgres::Client, name: &str) -> Vec<(String, bool)> {
    c.query(
        "SELECT i.indrelid::regclass::text, i.indisvalid FROM pg_index i
         JOIN pg_class x ON x.oid = i.indexrelid
         WHERE x.relname = $1 AND x.relnamespace = current_schema()::regnamespace
         ORDER BY 1",
        &[&name],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1)))
    .collect()
}

#[tokio::test]
async fn a_same_named_index_on_another_table_is_a_conflict_and_never_dropped() {
    let schema = schema().await;
    let c = client(&schema).await;
    c.batch_execute(
        "CREATE TABLE a (id bigint, email bigint);
         CREATE TABLE b (id bigint, email bigint);
         INSERT INTO b SELECT g, g % 3 FROM generate_series(1, 100) g;
         CREATE INDEX my_idx ON b (id);",
    )
    .await
    .unwrap();
    let on_a = index_on("a", "my_idx", "id");
    for err in [
        on_a.ensure(&c).await.unwrap_err(),
        on_a.state(&c).await.unwrap_err(),
        on_a.create(&c).await.unwrap_err(),
        on_a.drop(&c).await.unwrap_err(),
    ] {
        assert!(
            matches!(&err, Error::ObjectConflict { kind: "index", reason, .. } if reason.contains("b")),
            "{err}"
        );
        assert!(err.is_object_conflict());
    }
    assert_eq!(indexes_named(&c, "my_idx").await, [("b".to_owned(), true)]);

    // b's index left INVALID by a failed unique build: still b's, never dropped.
    c.batch_execute("DROP INDEX my_idx").await.unwrap();
    let b = Table::new("b").unwrap();
    let on_b =
        ConcurrentIndex::new("my_idx", &[b.column::<i64>("email").unwrap().erase()]).unique();
    assert!(on_b.create(&c).await.unwrap_err().is_unique_violation());
    assert_eq!(indexes_named(&c, "my_idx").await, [("b".to_owned(), false)]);
    let on_a = index_on("a", "my_idx", "email");
    let err = on_a.ensure(&c).await.unwrap_err();
    assert!(err.is_object_conflict(), "{err}");
    assert!(on_a.drop(&c).await.unwrap_err().is_object_conflict());
    assert_eq!(indexes_named(&c, "my_idx").await, [("b".to_owned(), false)]);
    // a still has no index at all.
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM pg_index WHERE indrelid = 'a'::regclass"
        )
        .await,
        0
    );
    // A table of that name is a conflict too.
    c.batch_execute("CREATE TABLE taken (x int)").await.unwrap();
    let err = index_on("a", "taken", "id").ensure(&c).await.unwrap_err();
    assert!(
        matches!(&err, Error::ObjectConflict { reason, .. } if reason.contains("table")),
        "{err}"
    );
}

#[tokio::test]
async fn a_same_named_index_with_another_definition_is_a_conflict_and_never_dropped() {
    let schema = schema().await;
    let c = client(&schema).await;
    c.batch_execute(
        "CREATE TABLE t (a bigint, b bigint, c bigint, s text);
         INSERT INTO t SELECT g, g % 2, g, 'x' FROM generate_series(1, 100) g;",
    )
    .await
    .unwrap();
    let t = Table::new("t").unwrap();
    let col = |n: &str| t.column::<i64>(n).unwrap().erase();
    // What ensure would build: (a, b DESC), not unique.
    let wanted = ConcurrentIndex::new("ix", &[col("a"), col("b")]).desc("b");
    for (other, why) in [
        ("(a)", "fewer columns"),
        ("(a, b DESC, c)", "more columns"),
        ("(b DESC, a)", "another order"),
        ("(a, b)", "another direction"),
        ("(a DESC, b DESC)", "another direction"),
        ("(a, b DESC NULLS LAST)", "other NULLS placement"),
        ("(a, c DESC)", "another column"),
        ("(a, b DESC) INCLUDE (c)", "INCLUDE columns"),
        ("(a, b DESC) WHERE c > 10", "a predicate"),
        ("((a + 1), b DESC)", "an expression"),
        ("USING hash (a)", "another access method"),
        (
            "(a int8_ops, b DESC)",
            "explicit default opclass (same index)",
        ),
    ] {
        c.batch_execute(&format!("CREATE INDEX ix ON t {other}"))
            .await
            .unwrap();
        let same = why.contains("same index");
        let got = wanted.ensure(&c).await;
        if same {
            assert_eq!(got.unwrap().before, IndexState::Valid, "{why}");
        } else {
            let err = got.unwrap_err();
            assert!(err.is_object_conflict(), "{why}: {err}");
            assert!(wanted.drop(&c).await.unwrap_err().is_object_conflict());
        }
        assert_eq!(
            indexes_named(&c, "ix").await,
            [("t".to_owned(), true)],
            "{why}"
        );
        c.batch_execute("DROP INDEX ix").await.unwrap();
    }
    // Uniqueness differs, both ways; and an INVALID one with another
    // definition is not dropped either.
    c.batch_execute("CREATE UNIQUE INDEX ix ON t (a, b DESC)")
        .await
        .unwrap();
    assert!(wanted.ensure(&c).await.unwrap_err().is_object_conflict());
    let unique = wanted.clone().unique();
    assert_eq!(unique.ensure(&c).await.unwrap().before, IndexState::Valid);
    c.batch_execute("DROP INDEX ix").await.unwrap();
    let bad = ConcurrentIndex::new("ix", &[col("b")]).unique();
    assert!(bad.create(&c).await.unwrap_err().is_unique_violation());
    assert_eq!(indexes_named(&c, "ix").await, [("t".to_owned(), false)]);
    let err = wanted.ensure(&c).await.unwrap_err();
    assert!(err.is_object_conflict(), "{err}");
    assert!(unique.ensure(&c).await.unwrap_err().is_object_conflict());
    assert_eq!(indexes_named(&c, "ix").await, [("t".to_owned(), false)]);
    // The same definition INVALID is rebuilt; then dropped by its owner.
    c.batch_execute("UPDATE t SET b = a").await.unwrap();
    let done = bad.ensure(&c).await.unwrap();
    assert_eq!(
        (done.before, done.after),
        (IndexState::Invalid, IndexState::Valid)
    );
    bad.drop(&c).await.unwrap();
    assert!(indexes_named(&c, "ix").await.is_empty());
}

#[tokio::test]
async fn the_index_is_looked_up_in_the_tables_schema() {
    let schema = schema().await;
    let c = client(&schema).await;
    let other = format!("{}_other", schema.name());
    c.batch_execute(&format!(
        r#"CREATE SCHEMA "{other}";
           CREATE TABLE "{other}".t (id bigint);
           CREATE TABLE t (id bigint);
           CREATE INDEX same_name ON t (id);"#
    ))
    .await
    .unwrap();
    // The same name in another schema is another index: created, and
    // dropping it leaves the test schema's alone.
    let t = Table::in_schema(&other, "t").unwrap();
    let there = ConcurrentIndex::new("same_name", &[t.column::<i64>("id").unwrap().erase()]);
    let done = there.ensure(&c).await.unwrap();
    assert_eq!(
        (done.before, done.after),
        (IndexState::Missing, IndexState::Valid)
    );
    there.drop(&c).await.unwrap();
    assert_eq!(there.state(&c).await.unwrap(), IndexState::Missing);
    let here = index_on("t", "same_name", "id");
    assert_eq!(here.state(&c).await.unwrap(), IndexState::Valid);
    // The other schema's table, found through search_path, with an index of
    // that name on another table only in the first schema of the path.
    c.batch_execute(&format!(
        r#"SET search_path = "{other}", "{}""#,
        schema.name()
    ))
    .await
    .unwrap();
    assert_eq!(here.state(&c).await.unwrap(), IndexState::Missing);
    c.batch_execute(&format!(r#"DROP SCHEMA "{other}" CASCADE"#))
        .await
        .unwrap();
}
