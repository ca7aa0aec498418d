//! Bounded recent history on a real server: N + k records keep the newest
//! N; many concurrent writers on one owner never exceed N nor drop a newer
//! row (checked after every round and continuously by a watcher); the
//! batched trim job; hostile names; bad input.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use pgpatterns::ops::recent::RecentHistory;
use pgpatterns::sea_query::{Expr, Index, Query};
use pgpatterns::{BuiltQuery, Column, Error, Executor, Progress, SqlType, Table};

use crate::support::{client, create_table, exec, fetch, insert, schema};

type Spec = RecentHistory<i64, i64, DateTime<Utc>>;

struct Views {
    table: Table,
    owner: Column<i64>,
    item: Column<i64>,
    at: Column<DateTime<Utc>>,
}

impl Views {
    fn new(table: &str, owner: &str, item: &str, at: &str) -> Views {
        let table = Table::new(table).unwrap();
        Views {
            owner: table.column(owner).unwrap(),
            item: table.column(item).unwrap(),
            at: table.column(at).unwrap(),
            table,
        }
    }

    fn spec(&self, keep: i64) -> Spec {
        RecentHistory::new(&self.owner, &self.item, &self.at, keep)
    }

    async fn create<E: Executor>(&self, e: &E, keep: i64) -> Spec {
        let mut stmt = create_table(
            &self.table,
            &[self.owner.erase(), self.item.erase(), self.at.erase()],
        );
        stmt.primary_key(Index::create().col(self.owner.iden()).col(self.item.iden()));
        exec(e, &BuiltQuery::schema(&stmt)).await;
        let spec = self.spec(keep);
        e.run_outside_transaction(&spec.index_advice(true).unwrap())
            .await
            .unwrap();
        spec
    }

    /// Every `(item, at)` of `owner`, newest first, read directly.
    async fn rows<E: Executor>(&self, e: &E, owner: i64) -> Vec<(i64, DateTime<Utc>)> {
        let q = Query::select()
            .column(self.item.col_ref())
            .column(self.at.col_ref())
            .from(self.table.table_ref())
            .and_where(self.owner.eq(owner))
            .order_by(self.at.col_ref(), pgpatterns::sea_query::Order::Desc)
            .order_by(self.item.col_ref(), pgpatterns::sea_query::Order::Desc)
            .to_owned();
        fetch(e, &BuiltQuery::from(&q)).await
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 2, 19, 12, 0, 0).unwrap()
}

/// The reference: every item's newest time, keep the `keep` greatest
/// `(at, item)`, newest first.
fn newest(seen: &BTreeMap<i64, DateTime<Utc>>, keep: usize) -> Vec<(i64, DateTime<Utc>)> {
    let mut all: Vec<(i64, DateTime<Utc>)> = seen.iter().map(|(&i, &t)| (i, t)).collect();
    all.sort_by_key(|&(item, at)| std::cmp::Reverse((at, item)));
    all.truncate(keep);
    all
}

#[tokio::test]
async fn n_plus_k_records_keep_the_newest_n() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    let v = Views::new("user_product_views", "user_id", "product_id", "viewed_at");
    let spec = v.create(&c, 5).await;
    let mut seen = BTreeMap::new();
    // 8 distinct items (N + 3), one out of time order, one tie on time.
    let times = [3, 1, 4, 15, 9, 2, 6, 6];
    for (item, m) in times.iter().enumerate() {
        let at = t0() + Duration::minutes(*m);
        spec.record(&mut c, 1, item as i64, at).await.unwrap();
        let e = seen.entry(item as i64).or_insert(at);
        *e = (*e).max(at);
        assert_eq!(v.rows(&c, 1).await, newest(&seen, 5), "after item {item}");
    }
    // Re-viewing a trimmed item brings it back; re-viewing a kept one moves
    // it to the front; a late, older view never moves a row back in time.
    for (item, m) in [(1, 20), (4, 21), (4, 0), (3, 1)] {
        let at = t0() + Duration::minutes(m);
        spec.record(&mut c, 1, item, at).await.unwrap();
        let e = seen.entry(item).or_insert(at);
        *e = (*e).max(at);
        assert_eq!(
            v.rows(&c, 1).await,
            newest(&seen, 5),
            "after re-view of {item}"
        );
    }
    // Another owner is untouched by owner 1's trims, and vice versa.
    spec.record(&mut c, 2, 1, t0()).await.unwrap();
    assert_eq!(v.rows(&c, 2).await, vec![(1, t0())]);
    assert_eq!(v.rows(&c, 1).await.len(), 5);
    // `recent` agrees with the table, newest first, and honours its limit.
    let recent = spec.recent(&c, 1, 3).await.unwrap();
    assert_eq!(recent, newest(&seen, 3));
}

#[tokio::test]
async fn recent_joins_the_item_table() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    let v = Views::new("views", "user_id", "product_id", "viewed_at");
    let spec = v.create(&c, 3).await;
    let products = Table::new("products").unwrap();
    let id = products.column::<i64>("id").unwrap();
    let name = products.column::<String>("name").unwrap();
    exec(
        &c,
        &BuiltQuery::schema(&create_table(&products, &[id.erase(), name.erase()])),
    )
    .await;
    exec(
        &c,
        &insert(
            &products,
            &[id.erase(), name.erase()],
            (1..=4i64).map(|i| vec![i.param(), format!("product {i}").param()]),
        ),
    )
    .await;
    for i in 1..=4i64 {
        spec.record(&mut c, 7, i, t0() + Duration::minutes(i))
            .await
            .unwrap();
    }
    let joined = spec.with_items(&id);
    let q = BuiltQuery::from(&joined.recent_query(7, 50).unwrap());
    let rows: Vec<(i64, DateTime<Utc>, i64, String)> = fetch(&c, &q).await;
    let names: Vec<(i64, String)> = rows.into_iter().map(|r| (r.0, r.3)).collect();
    assert_eq!(
        names,
        vec![
            (4, "product 4".to_owned()),
            (3, "product 3".to_owned()),
            (2, "product 2".to_owned())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_on_one_owner_never_exceed_n_nor_drop_a_newer_row() {
    concurrent_writers("read committed").await;
}

/// Sessions whose default isolation is REPEATABLE READ or SERIALIZABLE: the
/// record still trims with a snapshot taken after the owner's lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_with_a_repeatable_read_default_never_exceed_n() {
    concurrent_writers("repeatable read").await;
    concurrent_writers("serializable").await;
}

async fn concurrent_writers(default_isolation: &'static str) {
    let schema = schema().await;
    let c = client(&schema).await;
    let keep = 5;
    let v = Arc::new(Views::new("views", "user_id", "product_id", "viewed_at"));
    let spec = Arc::new(v.create(&c, keep).await);
    let writers = 8u64;
    let per_round = 4u64;
    let rounds = 12u64;
    // A watcher reads the owner's row count without pause while writers run.
    let stop = Arc::new(AtomicBool::new(false));
    let max_seen = Arc::new(AtomicU64::new(0));
    let watcher = {
        let (stop, max_seen) = (stop.clone(), max_seen.clone());
        let w = client(&schema).await;
        let v = v.clone();
        tokio::spawn(async move {
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let n = v.rows(&w, 1).await.len() as u64;
                max_seen.fetch_max(n, Ordering::Relaxed);
                reads += 1;
            }
            reads
        })
    };
    let mut conns = Vec::new();
    for _ in 0..writers {
        let conn = client(&schema).await;
        conn.batch_execute(&format!(
            "SET default_transaction_isolation = '{default_isolation}'"
        ))
        .await
        .unwrap();
        conns.push(conn);
    }
    let mut seen: BTreeMap<i64, DateTime<Utc>> = BTreeMap::new();
    for round in 0..rounds {
        let mut tasks = Vec::new();
        for (w, mut conn) in conns.drain(..).enumerate() {
            let spec = spec.clone();
            let w = w as u64;
            tasks.push(tokio::spawn(async move {
                let mut done = Vec::new();
                for k in 0..per_round {
                    // 12 items shared by all writers (upserts collide) and
                    // times that interleave across writers and rounds.
                    let item = ((round * 7 + w * 3 + k * 5) % 12) as i64;
                    let at = t0() + Duration::seconds((round * 100 + k * 10 + w) as i64);
                    spec.record(&mut conn, 1, item, at).await.unwrap();
                    done.push((item, at));
                }
                (conn, done)
            }));
        }
        for t in tasks {
            let (conn, done) = t.await.unwrap();
            conns.push(conn);
            for (item, at) in done {
                let e = seen.entry(item).or_insert(at);
                *e = (*e).max(at);
            }
        }
        assert_eq!(
            v.rows(&c, 1).await,
            newest(&seen, keep as usize),
            "{default_isolation}, round {round}: the owner must hold exactly the newest {keep} views"
        );
    }
    stop.store(true, Ordering::Relaxed);
    let reads = watcher.await.unwrap();
    assert!(reads > 0, "the watcher never read");
    assert!(
        max_seen.load(Ordering::Relaxed) <= keep as u64,
        "a reader saw {} rows for one owner (bound {keep})",
        max_seen.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn trim_all_trims_every_owner_in_batches() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    let v = Views::new("views", "user_id", "product_id", "viewed_at");
    let spec = v.create(&c, 4).await;
    // Rows written around the spec (an older application, a bulk import).
    let mut seen: BTreeMap<i64, BTreeMap<i64, DateTime<Utc>>> = BTreeMap::new();
    let mut rows = Vec::new();
    for owner in 1..=7i64 {
        for item in 0..(owner + 1) {
            let at = t0() + Duration::minutes((item * 37 + owner * 11) % 23);
            seen.entry(owner).or_default().insert(item, at);
            rows.push(vec![owner.param(), item.param(), at.param()]);
        }
    }
    exec(
        &c,
        &insert(
            &v.table,
            &[v.owner.erase(), v.item.erase(), v.at.erase()],
            rows,
        ),
    )
    .await;
    let mut reports: Vec<Progress> = Vec::new();
    let report = spec.trim_all(&mut c, 3, |p| reports.push(p)).await.unwrap();
    let expected_deleted: usize = seen.values().map(|m| m.len().saturating_sub(4)).sum();
    assert_eq!(report.rows, expected_deleted as u64);
    assert_eq!(report.batches, 3); // owners 1-3, 4-6, 7
    let done: Vec<u64> = reports.iter().map(|p| p.done).collect();
    assert_eq!(done, vec![0, 3, 6, 7]);
    for (owner, items) in &seen {
        assert_eq!(v.rows(&c, *owner).await, newest(items, 4), "owner {owner}");
    }
    // A rerun finds nothing left to trim.
    let again = spec.trim_all(&mut c, 100, |_| {}).await.unwrap();
    assert_eq!((again.rows, again.batches), (0, 1));
}

#[tokio::test]
async fn hostile_names_are_only_names() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    let v = Views::new(
        "views\"; DROP TABLE victims; --",
        "us'er",
        "it\"em $1",
        "at ) OR (1=1",
    );
    let victims = Table::new("victims").unwrap();
    exec(
        &c,
        &BuiltQuery::schema(&create_table(&victims, &[v.owner.of(&victims).erase()])),
    )
    .await;
    let spec = v.create(&c, 2).await;
    for i in 0..4i64 {
        spec.record(&mut c, 1, i, t0() + Duration::minutes(i))
            .await
            .unwrap();
    }
    assert_eq!(
        spec.recent(&c, 1, 10).await.unwrap(),
        vec![
            (3, t0() + Duration::minutes(3)),
            (2, t0() + Duration::minutes(2))
        ]
    );
    assert_eq!(spec.trim_all(&mut c, 10, |_| {}).await.unwrap().rows, 0);
    // The victim table is still there.
    let q = BuiltQuery::from(
        &Query::select()
            .expr(Expr::cust("count(*)"))
            .from(victims.table_ref())
            .to_owned(),
    );
    assert_eq!(fetch::<(i64,), _>(&c, &q).await, vec![(0,)]);
}

#[tokio::test]
async fn bad_input_is_a_typed_error() {
    let v = Views::new("views", "user_id", "product_id", "viewed_at");
    let other = Table::new("other").unwrap();
    let is_spec = |e: Error, field: &str| {
        assert!(
            matches!(&e, Error::InvalidSpec { field: f, .. } if *f == field),
            "{e}"
        )
    };
    is_spec(
        RecentHistory::new(&v.owner, &v.item, &v.at, 0)
            .check()
            .unwrap_err(),
        "keep",
    );
    is_spec(
        RecentHistory::new(&v.owner, &v.item, &v.at.of(&other), 5)
            .check()
            .unwrap_err(),
        "columns",
    );
    is_spec(
        RecentHistory::new(&v.owner, &v.owner, &v.at, 5)
            .check()
            .unwrap_err(),
        "columns",
    );
    let spec = v.spec(5);
    is_spec(spec.recent_query(1, 0).unwrap_err(), "limit");
    is_spec(
        spec.clone().with_items(&v.item).check().unwrap_err(),
        "items",
    );
    // Refused before anything is sent: no table exists in this schema.
    let schema = schema().await;
    let mut c = client(&schema).await;
    is_spec(
        spec.trim_all(&mut c, 0, |_| {}).await.unwrap_err(),
        "owners_per_batch",
    );
    is_spec(spec.recent(&c, 1, -1).await.unwrap_err(), "limit");
}
