//! `since` page cursors against a real server: long text keys walk to the
//! end (every row exactly once), a cursor is bound to the query it was made
//! for, damaged cursors are refused, and times PostgreSQL cannot represent
//! are typed errors before any SQL is sent.

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, NaiveDate, TimeZone, Utc};
use pgpatterns::{
    Error, Executor, PageOrder, PageRequest, Relation, SinceGraph, SinceQuery, SinceStrategy, Table,
};

use crate::support::{client, schema};

fn since() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).unwrap()
}

/// `docs(id text PRIMARY KEY, tag int4, updated_at timestamptz)` and
/// `notes(id int8 PRIMARY KEY, doc_id text, updated_at timestamptz)`.
struct Docs {
    docs: Table,
    notes: Table,
}

impl Docs {
    fn new(prefix: &str) -> Docs {
        Docs {
            docs: Table::new(format!("{prefix}docs")).unwrap(),
            notes: Table::new(format!("{prefix}notes")).unwrap(),
        }
    }

    async fn create(&self, client: &tokio_postgres::Client) {
        let (d, n) = (self.docs.name().as_str(), self.notes.name().as_str());
        client
            .batch_execute(&format!(
                "CREATE TABLE {d} (id text PRIMARY KEY, tag int4 NOT NULL, updated_at timestamptz);
                 CREATE TABLE {n} (id int8 PRIMARY KEY, doc_id text NOT NULL, updated_at timestamptz);"
            ))
            .await
            .unwrap();
    }

    /// Inserts one doc and, when `note_at` is given, one note of it.
    async fn insert(
        &self,
        client: &tokio_postgres::Client,
        id: &str,
        tag: i32,
        at: Option<DateTime<Utc>>,
        note: Option<(i64, DateTime<Utc>)>,
    ) {
        let (d, n) = (self.docs.name().as_str(), self.notes.name().as_str());
        client
            .execute(
                &format!("INSERT INTO {d} (id, tag, updated_at) VALUES ($1, $2, $3)"),
                &[&id, &tag, &at],
            )
            .await
            .unwrap();
        if let Some((note_id, note_at)) = note {
            client
                .execute(
                    &format!("INSERT INTO {n} (id, doc_id, updated_at) VALUES ($1, $2, $3)"),
                    &[&note_id, &id, &note_at],
                )
                .await
                .unwrap();
        }
    }

    fn graph(&self, tag: i32) -> SinceGraph<String> {
        let id = self.docs.column::<String>("id").unwrap();
        SinceGraph::new(
            &id,
            self.docs.column::<DateTime<Utc>>("updated_at").unwrap(),
        )
        .filter(self.docs.column::<i32>("tag").unwrap().eq(tag))
        .related(
            "notes",
            Relation::new(&self.notes.column::<String>("doc_id").unwrap(), &id),
            self.notes.column::<DateTime<Utc>>("updated_at").unwrap(),
        )
    }
}

/// A long key: a shared prefix (so only the end tells keys apart, the worst
/// case for a keyset cursor), some multi-byte characters, then `i`.
fn long_key(len: usize, i: usize) -> String {
    let mut s = String::with_capacity(len + 8);
    for c in "é|x-".chars().cycle() {
        if s.len() + c.len_utf8() + 8 > len {
            break;
        }
        s.push(c);
    }
    s.push_str(&format!("{i:08}"));
    s
}

/// Walks every page of `q` in `order`, `limit` rows at a time, returning the
/// keys in the order returned and how many pages it took.
async fn walk<E: Executor>(
    e: &E,
    q: &SinceQuery<String>,
    order: PageOrder,
    limit: i64,
) -> (Vec<String>, usize) {
    let mut keys = Vec::new();
    let mut req = PageRequest::new(limit).order(order);
    for pages in 1..1000 {
        let page = q
            .fetch_page::<(String,)>(e, &req)
            .await
            .unwrap_or_else(|err| panic!("page {pages} of a {order:?} walk: {err}"));
        assert_eq!(
            page.rows.iter().map(|r| &r.0).collect::<Vec<_>>(),
            page.keys.iter().collect::<Vec<_>>()
        );
        keys.extend(page.keys);
        match page.next {
            Some(next) => {
                assert!(
                    next.len() <= pgpatterns::MAX_CURSOR_LEN,
                    "a cursor longer than the limit was handed out"
                );
                req = req.after(next);
            }
            None => return (keys, pages),
        }
    }
    panic!("the walk did not end");
}

fn cursor_error<T: std::fmt::Debug>(r: Result<T, Error>) -> String {
    match r {
        Err(Error::InvalidSpec {
            field: "cursor",
            reason,
        }) => reason,
        other => panic!("expected a cursor error, got {other:?}"),
    }
}

/// A cursor error saying the cursor was made for another query.
fn foreign<T: std::fmt::Debug>(r: Result<T, Error>) {
    let reason = cursor_error(r);
    assert!(reason.contains("another"), "{reason}");
}

async fn long_keys_walk(key_len: usize) {
    let schema = schema().await;
    let client = client(&schema).await;
    let docs = Docs::new("");
    docs.create(&client).await;
    let mut want = BTreeSet::new();
    for i in 0..7 {
        let key = long_key(key_len, i);
        assert!(key.len() <= key_len && key.len() + 4 >= key_len);
        // odd rows match through their note; even rows through themselves;
        // one row per kind fails the filter; every change time equal
        let matching = i != 5;
        let tag = if matching { 1 } else { 2 };
        let (at, note) = if i % 2 == 0 {
            (Some(since()), None)
        } else {
            (
                Some(since() - Duration::days(1)),
                Some((i as i64, since() + Duration::hours(1))),
            )
        };
        docs.insert(&client, &key, tag, at, note).await;
        if matching {
            want.insert(key);
        }
    }
    // one root that never matches
    docs.insert(
        &client,
        &long_key(key_len, 99),
        1,
        Some(since() - Duration::days(1)),
        None,
    )
    .await;
    let graph = docs.graph(1);
    for strategy in [SinceStrategy::Exists, SinceStrategy::Auto] {
        let q = graph.since(since()).strategy(strategy);
        for order in [PageOrder::Key, PageOrder::ChangeTime] {
            for limit in [1, 2, 4] {
                let (keys, pages) = walk(&client, &q, order, limit).await;
                let unique: BTreeSet<String> = keys.iter().cloned().collect();
                assert_eq!(unique.len(), keys.len(), "a row came back twice");
                assert_eq!(unique, want, "{strategy:?} {order:?} limit {limit}");
                assert!(pages >= 2, "{pages} pages");
                if order == PageOrder::Key {
                    let mut sorted = keys.clone();
                    sorted.sort();
                    assert_eq!(keys, sorted, "key order");
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3000_byte_text_key_walks_to_the_end() {
    long_keys_walk(3000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_20_kb_text_key_walks_to_the_end() {
    long_keys_walk(20_000).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_too_long_for_any_cursor_fails_when_the_page_is_built() {
    let schema = schema().await;
    let client = client(&schema).await;
    let docs = Docs::new("");
    docs.create(&client).await;
    let huge = long_key(pgpatterns::MAX_CURSOR_LEN, 1);
    docs.insert(&client, &huge, 1, Some(since()), None).await;
    docs.insert(
        &client,
        &long_key(pgpatterns::MAX_CURSOR_LEN, 2),
        1,
        Some(since()),
        None,
    )
    .await;
    let q = docs.graph(1).since(since());
    // the last row of a full page: no cursor could hold its key
    let reason = cursor_error(
        q.fetch_page::<(String,)>(&client, &PageRequest::new(1))
            .await,
    );
    assert!(reason.contains("too long"), "{reason}");
    // a page that is not full needs no cursor
    let page = q
        .fetch_page::<(String,)>(&client, &PageRequest::new(5))
        .await
        .unwrap();
    assert_eq!(page.keys.len(), 2);
    assert_eq!(page.next, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_or_foreign_cursors_are_refused() {
    let schema = schema().await;
    let client = client(&schema).await;
    let docs = Docs::new("");
    docs.create(&client).await;
    for i in 0..6 {
        docs.insert(&client, &format!("doc {i:02}"), 1, Some(since()), None)
            .await;
    }
    // the last key of the first page ends in "10": cut to "1", the old hex
    // cursors continued after "doc 1" and returned "doc 10" again
    docs.insert(&client, "doc 10", 1, Some(since()), None).await;
    docs.insert(&client, "doc 2", 1, Some(since()), None).await;
    let graph = docs.graph(1);
    let q = graph.since(since());
    let req = PageRequest::new(7);
    let page = q.fetch_page::<(String,)>(&client, &req).await.unwrap();
    assert_eq!(page.keys.last().map(String::as_str), Some("doc 10"));
    let next = page.next.expect("a full page");
    let rest = |cursor: &str| PageRequest::new(7).after(cursor);
    // the cursor continues, in every strategy (Auto may switch between pages)
    for strategy in SinceStrategy::ALL {
        let s = q.clone().strategy(strategy);
        let p = s
            .fetch_page::<(String,)>(&client, &rest(&next))
            .await
            .unwrap();
        assert_eq!(p.keys, vec!["doc 2".to_owned()], "{strategy:?}");
    }

    // cut short by any number of characters, or extended
    for n in 1..next.len() {
        cursor_error(q.page_query(&rest(&next[..n])));
        cursor_error(q.fetch_page::<(String,)>(&client, &rest(&next[..n])).await);
    }
    for tail in ["A", "0", "AA", "AAAA", "=", "==", " ", "\n", "é"] {
        cursor_error(q.page_query(&rest(&format!("{next}{tail}"))));
        cursor_error(q.page_query(&rest(&format!("{tail}{next}"))));
    }
    // any one character replaced by any other (those a cursor is made of,
    // and some it is not)
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/=.é";
    for (i, original) in next.char_indices() {
        for c in alphabet.chars().filter(|&c| c != original) {
            let mut bad = next.clone();
            bad.replace_range(i..i + original.len_utf8(), &c.to_string());
            cursor_error(q.page_query(&rest(&bad)));
        }
    }
    for bad in ["", "A", "nonsense", "doc 10"] {
        cursor_error(q.page_query(&rest(bad)));
    }

    // made for another query: another graph (another root table, or another
    // path), another filter value, another `since`, another order
    let other = Docs::new("other_");
    other.create(&client).await;
    foreign(other.graph(1).since(since()).page_query(&rest(&next)));
    foreign(
        other
            .graph(1)
            .since(since())
            .fetch_page::<(String,)>(&client, &rest(&next))
            .await,
    );
    let fewer_paths = SinceGraph::new(
        &docs.docs.column::<String>("id").unwrap(),
        docs.docs.column::<DateTime<Utc>>("updated_at").unwrap(),
    )
    .filter(docs.docs.column::<i32>("tag").unwrap().eq(1));
    foreign(fewer_paths.since(since()).page_query(&rest(&next)));
    foreign(docs.graph(2).since(since()).page_query(&rest(&next)));
    foreign(
        docs.graph(2)
            .since(since())
            .fetch_page::<(String,)>(&client, &rest(&next))
            .await,
    );
    foreign(
        graph
            .since(since() + Duration::microseconds(1))
            .page_query(&rest(&next)),
    );
    foreign(q.page_query(&rest(&next).order(PageOrder::ChangeTime)));
    let by_time = q
        .fetch_page::<(String,)>(&client, &PageRequest::new(2).order(PageOrder::ChangeTime))
        .await
        .unwrap()
        .next
        .expect("a full page");
    foreign(q.page_query(&PageRequest::new(2).after(&by_time)));
    // another limit is the same query: fine
    assert!(q.page_query(&PageRequest::new(3).after(&next)).is_ok());
}

/// The PostgreSQL range of `timestamp`/`timestamptz`: 4714-11-24 00:00 BC
/// (year -4713) to 294276-12-31, past chrono's last year (262143).
fn pg_min() -> DateTime<Utc> {
    NaiveDate::from_ymd_opt(-4713, 11, 24)
        .unwrap()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn times_postgres_cannot_hold_are_typed_errors() {
    let schema = schema().await;
    let client = client(&schema).await;
    let docs = Docs::new("");
    docs.create(&client).await;
    let graph = docs.graph(1);
    // `since` out of PostgreSQL's range: refused when the query is made
    for bad in [
        Utc.with_ymd_and_hms(-4800, 1, 1, 0, 0, 0).unwrap(),
        pg_min() - Duration::microseconds(1),
        DateTime::<Utc>::MIN_UTC,
    ] {
        match graph.since(bad).check() {
            Err(Error::InvalidSpec { field: "since", .. }) => {}
            other => panic!("{bad}: expected a `since` error, got {other:?}"),
        }
    }
    // the edges PostgreSQL does hold work, as `since` and in cursors
    let last = DateTime::<Utc>::MAX_UTC;
    docs.insert(&client, "a", 1, Some(pg_min()), None).await;
    docs.insert(&client, "b", 1, Some(pg_min()), None).await;
    docs.insert(&client, "c", 1, Some(last), None).await;
    docs.insert(&client, "d", 1, None, Some((1, last))).await;
    let q = graph.since(pg_min());
    assert_eq!(q.count(&client).await.unwrap(), 4);
    let mut keys = Vec::new();
    let mut req = PageRequest::new(1).order(PageOrder::ChangeTime);
    loop {
        let page = q.fetch_page::<(String,)>(&client, &req).await.unwrap();
        keys.extend(page.keys);
        match page.next {
            Some(next) => req = req.after(next),
            None => break,
        }
    }
    assert_eq!(keys, ["a", "b", "c", "d"]);
    let late = graph.since(last);
    assert_eq!(late.count(&client).await.unwrap(), 2);
}
