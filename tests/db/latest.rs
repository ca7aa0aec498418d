//! Every history strategy of `LatestStatus` returns the same rows as a plain
//! Rust reference, on random histories with equal-time ties, NULL statuses,
//! entities without history and empty tables, with and without `as_of` and
//! `missing_as`.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, TimeZone, Utc};
use pgpatterns::sea_query::{Alias, Expr, ExprTrait, Order, Query};
use pgpatterns::{
    BuiltQuery, Executor, FromRow, LatestStatus, LatestStrategy, PageRequest, RowRead, SqlType,
};

use crate::support::{client, schema, Rng};
use pgpatterns::seed::orders::OrdersTables;

#[derive(Debug, Clone)]
struct Row {
    id: i64,
    order_id: i64,
    status: Option<String>,
    at: DateTime<Utc>,
}

const STATUSES: [Option<&str>; 5] = [
    Some("Pending"),
    Some("Complete"),
    Some("Cancelled"),
    Some("it's \"odd\""),
    None,
];

fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap()
}

fn dataset(seed: u64) -> (Vec<i64>, Vec<Row>) {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let n = if seed.is_multiple_of(7) {
        0
    } else {
        rng.below(30) as i64
    };
    let entities: Vec<i64> = (1..=n).collect();
    let mut rows = Vec::new();
    let mut next_id = 1;
    for &e in &entities {
        for _ in 0..rng.below(5) {
            // few distinct times: many ties, broken by id
            let at = base() + Duration::minutes(rng.below(4) as i64 * 10);
            let status = STATUSES[rng.below(STATUSES.len() as u64) as usize].map(str::to_owned);
            // ids not in time order: out-of-order inserts
            rows.push(Row {
                id: next_id * 7 % 1009,
                order_id: e,
                status,
                at,
            });
            next_id += 1;
        }
    }
    (entities, rows)
}

#[derive(Debug, Clone, Copy)]
enum Pred {
    Any,
    Eq,
    In,
    Ne,
    NotIn,
    IsNull,
}

fn matches(p: Pred, status: &Option<String>) -> bool {
    let s = status.as_deref();
    match p {
        Pred::Any => true,
        Pred::Eq => s == Some("Pending"),
        Pred::In => matches!(s, Some("Complete") | Some("it's \"odd\"")),
        Pred::Ne => s != Some("Pending"),
        Pred::NotIn => !matches!(s, Some("Pending") | Some("Cancelled")),
        Pred::IsNull => s.is_none(),
    }
}

/// The reference: latest = greatest (at, id) among rows at or before `as_of`.
fn reference(
    entities: &[i64],
    rows: &[Row],
    p: Pred,
    missing: Option<&str>,
    as_of: Option<DateTime<Utc>>,
) -> Vec<(i64, Option<String>)> {
    let mut latest: BTreeMap<i64, &Row> = BTreeMap::new();
    for r in rows.iter().filter(|r| as_of.is_none_or(|t| r.at <= t)) {
        let e = latest.entry(r.order_id).or_insert(r);
        if (r.at, r.id) > (e.at, e.id) {
            *e = r;
        }
    }
    entities
        .iter()
        .filter_map(|e| {
            let (status, out) = match (latest.get(e), missing) {
                (Some(r), _) => (r.status.clone(), r.status.clone()),
                (None, Some(m)) => (Some(m.to_owned()), None),
                (None, None) => return None,
            };
            matches(p, &status).then_some((*e, out))
        })
        .collect()
}

/// `orders` / `order_status(order_id, status, created_at, id)`: latest by
/// `(created_at, id)`.
fn order_status_spec() -> LatestStatus<String> {
    OrdersTables::default().latest()
}

fn apply(spec: LatestStatus<String>, p: Pred) -> LatestStatus<String> {
    match p {
        Pred::Any => spec,
        Pred::Eq => spec.status_eq("Pending"),
        Pred::In => spec.status_in(["Complete", "it's \"odd\""]),
        Pred::Ne => spec.status_ne("Pending"),
        Pred::NotIn => spec.status_not_in(["Pending", "Cancelled"]),
        Pred::IsNull => spec.status_is_null(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_strategy_matches_the_reference() {
    let schema = schema().await;
    let client = client(&schema).await;
    client
        .batch_execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY);
             CREATE TABLE order_status (
                 id bigint PRIMARY KEY,
                 order_id bigint NOT NULL REFERENCES orders(id),
                 status text,
                 created_at timestamptz NOT NULL);",
        )
        .await
        .unwrap();

    let spec = order_status_spec();

    let preds = [
        Pred::Any,
        Pred::Eq,
        Pred::In,
        Pred::Ne,
        Pred::NotIn,
        Pred::IsNull,
    ];
    let mut checked = 0;
    for seed in 0..24u64 {
        let (entities, rows) = dataset(seed);
        client
            .batch_execute("TRUNCATE order_status, orders")
            .await
            .unwrap();
        for e in &entities {
            let q = BuiltQuery::fixed_with("INSERT INTO orders (id) VALUES ($1)", [e.into_value()]);
            q.execute(&client).await.unwrap();
        }
        for r in &rows {
            let q = BuiltQuery::fixed_with(
                "INSERT INTO order_status (id, order_id, status, created_at) VALUES ($1, $2, $3, $4)",
                [
                    r.id.into_value(),
                    r.order_id.into_value(),
                    r.status.clone().map_or_else(String::null_value, String::into_value),
                    r.at.into_value(),
                ],
            );
            q.execute(&client).await.unwrap();
        }
        for p in preds {
            for missing in [None, Some("Pending")] {
                for as_of in [
                    None,
                    Some(base() - Duration::minutes(1)), // before any history
                    Some(base() + Duration::minutes(10)), // on a tie
                    Some(base() + Duration::minutes(25)),
                ] {
                    let want = reference(&entities, &rows, p, missing, as_of);
                    let mut s = apply(spec.clone(), p);
                    if let Some(m) = missing {
                        s = s.missing_as(m);
                    }
                    if let Some(t) = as_of {
                        s = s.as_of::<DateTime<Utc>>(t);
                    }
                    for strategy in LatestStrategy::FROM_HISTORY
                        .into_iter()
                        .chain([LatestStrategy::Auto])
                    {
                        let s = s.clone().strategy(strategy);
                        // Auto as a caller runs it: resolved against the database.
                        let s = s.resolve(&client, pgpatterns::Shape::All).await.unwrap();
                        assert_ne!(s.chosen_strategy(), LatestStrategy::Auto);
                        let q = Query::select()
                            .column(Alias::new("id"))
                            .column(Alias::new(pgpatterns::LATEST_STATUS))
                            .from_subquery(s.to_statement().unwrap(), Alias::new("m"))
                            .order_by(Alias::new("id"), Order::Asc)
                            .to_owned();
                        let got: Vec<(i64, Option<String>)> =
                            client.rows_as(&BuiltQuery::from(&q)).await.unwrap();
                        let ctx = format!(
                            "seed {seed} {p:?} missing={missing:?} as_of={as_of:?} {strategy:?}\n{}",
                            s.build().unwrap()
                        );
                        assert_eq!(got, want, "{ctx}");
                        let counted: Vec<(i64,)> =
                            client.rows_as(&s.count_query().unwrap()).await.unwrap();
                        assert_eq!(counted, vec![(want.len() as i64,)], "count: {ctx}");
                        if strategy == LatestStrategy::Auto {
                            let auto = s.clone().strategy(LatestStrategy::Auto);
                            assert_eq!(
                                auto.count(&client).await.unwrap(),
                                want.len() as i64,
                                "{ctx}"
                            );
                        }
                        checked += 1;
                        if missing.is_none() && as_of.is_none() {
                            composed_filters_apply_outside(&client, &s, &entities, &rows, p).await;
                        }
                    }
                }
            }
        }
    }
    assert_eq!(
        checked,
        24 * preds.len() * 2 * 4 * (LatestStrategy::FROM_HISTORY.len() + 1)
    );
}

/// A caller's filters added to the returned statement narrow the entities
/// *after* the latest row is chosen: "latest status, and that row is older
/// than T" is not "the latest row among those older than T" (`as_of`), and
/// an entity filter never changes which history row is latest.
async fn composed_filters_apply_outside(
    client: &tokio_postgres::Client,
    s: &LatestStatus<String>,
    entities: &[i64],
    rows: &[Row],
    p: Pred,
) {
    let t = base() + Duration::minutes(15);
    let mut stmt = s.to_statement().unwrap();
    stmt.and_where(
        Expr::col((Alias::new("orders"), Alias::new("id")))
            .modulo(2i64.param())
            .eq(0i64.param()),
    )
    .and_where(
        Expr::col((
            Alias::new(pgpatterns::LATEST_ALIAS),
            Alias::new("created_at"),
        ))
        .lte(t.param()),
    );
    let q = Query::select()
        .column(Alias::new("id"))
        .column(Alias::new(pgpatterns::LATEST_STATUS))
        .from_subquery(stmt, Alias::new("m"))
        .order_by(Alias::new("id"), Order::Asc)
        .to_owned();
    let got: Vec<(i64, Option<String>)> = client.rows_as(&BuiltQuery::from(&q)).await.unwrap();
    let latest_at = |e: i64| {
        rows.iter()
            .filter(|r| r.order_id == e)
            .max_by_key(|r| (r.at, r.id))
            .map(|r| r.at)
    };
    let want: Vec<(i64, Option<String>)> = reference(entities, rows, p, None, None)
        .into_iter()
        .filter(|(e, _)| e % 2 == 0 && latest_at(*e).is_some_and(|at| at <= t))
        .collect();
    assert_eq!(got, want, "{:?} {p:?}", s.chosen_strategy());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_pages_walk_every_match_once() {
    let schema = schema().await;
    let client = client(&schema).await;
    client
        .batch_execute(
            "CREATE TABLE orders (id bigint PRIMARY KEY);
             CREATE TABLE order_status (id bigserial PRIMARY KEY, order_id bigint NOT NULL,
                 status text, created_at timestamptz NOT NULL);
             INSERT INTO orders SELECT g FROM generate_series(1, 500) g;
             INSERT INTO order_status (order_id, status, created_at)
               SELECT g, CASE WHEN g % 3 = 0 THEN 'Complete' ELSE 'Pending' END, now()
               FROM generate_series(1, 500) g;
             INSERT INTO order_status (order_id, status, created_at)
               SELECT g, 'Cancelled', now() + interval '1 hour'
               FROM generate_series(1, 500, 5) g;",
        )
        .await
        .unwrap();
    let spec = order_status_spec().status_eq("Complete");
    // g % 3 == 0 and not g % 5 == 1
    let want: Vec<i64> = (1..=500).filter(|g| g % 3 == 0 && g % 5 != 1).collect();
    for strategy in LatestStrategy::FROM_HISTORY {
        let s = spec.clone().strategy(strategy);
        // The statement alone (the first page of 37), as a caller composing
        // it would run it.
        let first = s.page_query::<i64>(&PageRequest::new(37)).unwrap();
        let rows = first.fetch_rows(&client).await.unwrap();
        let firsts: Vec<i64> = rows.iter().map(|r| r.get::<_, i64>("id")).collect();
        assert_eq!(firsts, want[..Ord::min(37, want.len())], "{strategy:?}");

        // count() and fetch_page(), whose `next` is None exactly on the
        // last page; rows decoded by column name.
        assert_eq!(s.count(&client).await.unwrap(), want.len() as i64);
        let mut walked = Vec::new();
        let mut req = PageRequest::new(40);
        let mut pages = 0;
        loop {
            let page = s
                .fetch_page::<LatestOnly, i64>(&client, &req)
                .await
                .unwrap();
            pages += 1;
            walked.extend(page.keys.iter().copied());
            assert!(page.rows.iter().all(|r| r.0 == "Complete"));
            match page.next {
                Some(next) => {
                    assert_eq!(page.rows.len(), 40);
                    req = req.after(next);
                }
                None => break,
            }
        }
        assert_eq!(walked, want, "{strategy:?}");
        assert_eq!(pages, want.len().div_ceil(40), "{strategy:?}");
    }
    // Wrong cursor type and limit 0: refused before anything is sent.
    assert!(spec
        .fetch_page::<(), i32>(&client, &PageRequest::new(10))
        .await
        .unwrap_err()
        .is_invalid_input());
    assert!(spec
        .fetch_page::<(), i64>(&client, &PageRequest::new(0))
        .await
        .unwrap_err()
        .is_invalid_input());
    // A cursor of another spec (another status value) is refused.
    let other = spec
        .clone()
        .status_eq("Cancelled")
        .fetch_page::<(), i64>(&client, &PageRequest::new(1))
        .await
        .unwrap()
        .next
        .expect("more than one cancelled order");
    let err = spec
        .fetch_page::<(), i64>(&client, &PageRequest::new(1).after(other))
        .await
        .unwrap_err();
    assert!(err.is_invalid_input(), "{err}");
}

/// The latest status of a page row, read by column name.
struct LatestOnly(String);

impl FromRow for LatestOnly {
    fn from_row<R: RowRead>(row: &R) -> pgpatterns::Result<Self> {
        Ok(LatestOnly(row.try_get(pgpatterns::LATEST_STATUS.into())?))
    }
}
