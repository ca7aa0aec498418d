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
    ConcurrentIndex::new(name, &[t.column::<i64>(column).unwrap().erase()]).unwrap()
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
        .unwrap()
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
    .unwrap()
    .desc("x")
    .unwrap();
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
    let err = ConcurrentIndex::new("a\"b", &[t.column::<i64>("x").unwrap().erase()]).unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
    let err = ConcurrentIndex::new("ok", &[]).unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
}
