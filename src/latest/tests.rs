//! SQL snapshots and spec checks (no server).

use super::*;
use chrono::{DateTime, TimeZone, Utc};

fn spec() -> LatestStatus<String> {
    let orders = crate::table!("orders");
    let h = crate::table!("order_status");
    LatestStatus::new(
        &crate::column!(orders, "id": i64),
        &crate::column!(h, "order_id": i64),
        &crate::column!(h, "status": String),
        &crate::column!(h, "created_at": DateTime<Utc>),
    )
    .then_by(&crate::column!(h, "id": i64))
}

fn sql(s: LatestStatus<String>, strategy: LatestStrategy) -> String {
    s.strategy(strategy).build().unwrap().sql().to_owned()
}

/// The spec's refusal, as `InvalidSpec { field, reason }`.
fn refused(s: &LatestStatus<String>) -> (&'static str, String) {
    match s.check() {
        Err(Error::InvalidSpec { field, reason }) => (field, reason),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn distinct_on_snapshot() {
    assert_eq!(
        sql(spec().status_eq("Pending"), LatestStrategy::DistinctOn),
        r#"SELECT "orders".*, "latest"."status" AS "latest_status", "latest"."created_at" AS "latest_at" FROM "orders" INNER JOIN (SELECT DISTINCT ON ("order_status"."order_id") "order_status"."order_id", "order_status"."status", "order_status"."created_at" FROM "order_status" ORDER BY "order_status"."order_id" ASC, "order_status"."created_at" DESC, "order_status"."id" DESC) AS "latest" ON "orders"."id" = "latest"."order_id" WHERE "latest"."status" = CAST($1 AS text)"#
    );
}

#[test]
fn window_snapshot() {
    assert_eq!(
        sql(spec().status_ne("Pending"), LatestStrategy::Window),
        r#"SELECT "orders".*, "latest"."status" AS "latest_status", "latest"."created_at" AS "latest_at" FROM "orders" INNER JOIN (SELECT "order_status"."order_id", "order_status"."status", "order_status"."created_at", ROW_NUMBER() OVER ( PARTITION BY "order_status"."order_id" ORDER BY "order_status"."created_at" DESC, "order_status"."id" DESC ) AS "latest_rn" FROM "order_status") AS "latest" ON "orders"."id" = "latest"."order_id" AND "latest"."latest_rn" = (1) WHERE "latest"."status" IS DISTINCT FROM CAST($1 AS text)"#
    );
}

#[test]
fn not_exists_snapshot_with_as_of_and_missing() {
    let at = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
    let s = spec()
        .as_of(at)
        .missing_as("Pending")
        .status_in(["Pending", "Complete"]);
    assert_eq!(
        sql(s, LatestStrategy::NotExists),
        r#"SELECT "orders".*, "latest"."status" AS "latest_status", "latest"."created_at" AS "latest_at" FROM "orders" LEFT JOIN "order_status" AS "latest" ON "orders"."id" = "latest"."order_id" AND "latest"."created_at" <= CAST($1 AS timestamptz) AND (NOT EXISTS(SELECT 1 FROM "order_status" AS "newer" WHERE "newer"."order_id" = "latest"."order_id" AND ("newer"."created_at", "newer"."id") > ("latest"."created_at", "latest"."id") AND "newer"."created_at" <= CAST($2 AS timestamptz))) WHERE (CASE WHEN ("latest"."created_at" IS NOT NULL) THEN "latest"."status" ELSE CAST($3 AS text) END) = ANY(CAST($4 AS text[]))"#
    );
}

#[test]
fn denormalized_snapshot_and_refusals() {
    let orders = Table::new("orders").unwrap();
    let col = orders.column::<String>("status").unwrap();
    let s = spec().denormalized(&col).status_eq("Complete");
    assert_eq!(
        sql(s.clone(), LatestStrategy::Denormalized),
        r#"SELECT "orders".*, "orders"."status" AS "latest_status" FROM "orders" WHERE "orders"."status" = CAST($1 AS text)"#
    );
    let at = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let d = s.clone().strategy(LatestStrategy::Denormalized);
    assert_eq!(refused(&d.clone().as_of(at)).0, "as_of");
    assert_eq!(refused(&d.clone().missing_as("Pending")).0, "missing_as");
    assert_eq!(
        refused(&d.clone().history_filter(|_| Expr::cust("TRUE"))).0,
        "history_filter"
    );
    assert_eq!(
        refused(&spec().strategy(LatestStrategy::Denormalized)).0,
        "strategy"
    );
    // The rule does not depend on the order of the steps: as_of first,
    // then the strategy, is refused the same way, by build and every verb.
    let late = s.as_of(at).strategy(LatestStrategy::Denormalized);
    assert_eq!(refused(&late).0, "as_of");
    assert!(late.build().is_err() && late.count_query().is_err());
    assert!(late.page_query::<i64>(&crate::PageRequest::new(5)).is_err());
    assert!(late.to_statement().is_err() && late.denormalize().is_ok());
}

#[test]
fn steps_in_any_order_build_the_same_query() {
    let orders = crate::table!("orders");
    let h = crate::table!("order_status");
    let at = Utc.with_ymd_and_hms(2024, 1, 2, 3, 4, 5).unwrap();
    let a = spec()
        .strategy(LatestStrategy::Lateral)
        .as_of(at)
        .status_ne("Done")
        .denormalized(&crate::column!(orders, "status": String));
    let b = LatestStatus::new(
        &crate::column!(orders, "id": i64),
        &crate::column!(h, "order_id": i64),
        &crate::column!(h, "status": String),
        &crate::column!(h, "created_at": DateTime<Utc>),
    )
    .denormalized(&crate::column!(orders, "status": String))
    .status_ne("Done")
    .as_of(at)
    .then_by(&crate::column!(h, "id": i64))
    .strategy(LatestStrategy::Lateral);
    let (qa, qb) = (a.build().unwrap(), b.build().unwrap());
    assert_eq!(qa.sql(), qb.sql());
    assert_eq!(format!("{:?}", qa.values()), format!("{:?}", qb.values()));
}

#[test]
fn the_first_problem_is_reported() {
    let h = crate::table!("order_status");
    let other = crate::table!("other");
    let s = spec()
        .status_in(Vec::<String>::new())
        .then_by(&crate::column!(other, "x": i64));
    let (field, reason) = refused(&s);
    assert_eq!(field, "status_in", "{reason}");
    assert!(reason.contains("at least one status"), "{reason}");
    // A refused step leaves the spec as it was: the earlier predicate stays.
    let kept = spec().status_eq("A").status_in(Vec::<String>::new());
    assert!(kept.check().is_err());
    assert!(kept
        .statement()
        .to_string(sea_query::PostgresQueryBuilder)
        .contains("CAST('A' AS text)"));
    let _ = h;
}

#[test]
fn bad_specs_are_refused() {
    let orders = Table::new("orders").unwrap();
    let h = Table::new("order_status").unwrap();
    let other = Table::new("other").unwrap();
    let key = orders.column::<i64>("id").unwrap();
    let fk = h.column::<i64>("order_id").unwrap();
    let t = h.column::<DateTime<Utc>>("created_at").unwrap();
    // status on another table
    let err = LatestStatus::new(&key, &fk, &other.column::<String>("s").unwrap(), &t)
        .check()
        .unwrap_err();
    assert!(
        err.to_string().contains("not to the history table"),
        "{err}"
    );
    // history = entity
    let self_fk = orders.column::<i64>("parent").unwrap();
    let self_st = orders.column::<String>("s").unwrap();
    let self_t = orders.column::<DateTime<Utc>>("t").unwrap();
    assert!(LatestStatus::new(&key, &self_fk, &self_st, &self_t)
        .build()
        .is_err());
    // duplicate ordering column, empty sets, wrong as_of type, limit 0
    assert_eq!(
        refused(&spec().then_by(&h.column::<i64>("id").unwrap())).0,
        "then_by"
    );
    assert_eq!(
        refused(&spec().status_in(Vec::<String>::new())).0,
        "status_in"
    );
    assert_eq!(
        refused(&spec().status_not_in(Vec::<String>::new())).0,
        "status_not_in"
    );
    assert_eq!(refused(&spec().as_of(5i64)).0, "as_of");
    assert!(spec()
        .page_query::<i64>(&crate::PageRequest::new(0))
        .is_err());
    assert!(spec()
        .page_query::<i32>(&crate::PageRequest::new(10))
        .is_err());
    assert!(spec()
        .page_query::<i64>(&crate::PageRequest::new(10).order(crate::PageOrder::ChangeTime))
        .is_err());
    assert!(spec()
        .page_query::<i64>(&crate::PageRequest::new(10).after("not a cursor"))
        .is_err());
}

#[test]
fn page_and_count() {
    let s = spec()
        .status_eq("Complete")
        .strategy(LatestStrategy::Lateral);
    let page = s.page_built(50, Some(1000i64.param()));
    assert!(page.sql().ends_with(
        r#"WHERE "latest"."status" = CAST($2 AS text) AND "orders"."id" > CAST($3 AS int8) ORDER BY "orders"."id" ASC LIMIT $4"#
    ), "{}", page.sql());
    assert!(s
        .count_query()
        .unwrap()
        .sql()
        .starts_with("SELECT COUNT(*) FROM (SELECT "));
}

#[test]
fn skip_scan_snapshot() {
    assert_eq!(
        sql(spec().status_eq("Pending"), LatestStrategy::SkipScan),
        r#"SELECT "orders".*, "latest"."status" AS "latest_status", "latest"."created_at" AS "latest_at" FROM "orders" INNER JOIN (WITH RECURSIVE "latest_skip" ("order_id", "status", "created_at", "id") AS (SELECT * FROM (SELECT "order_status"."order_id", "order_status"."status", "order_status"."created_at", "order_status"."id" FROM "order_status" WHERE "order_status"."order_id" IS NOT NULL ORDER BY "order_status"."order_id" ASC, "order_status"."created_at" DESC, "order_status"."id" DESC LIMIT $1) AS "latest_first" UNION ALL (SELECT "latest_next".* FROM "latest_skip" AS "latest_prev" INNER JOIN LATERAL (SELECT "order_status"."order_id", "order_status"."status", "order_status"."created_at", "order_status"."id" FROM "order_status" WHERE "order_status"."order_id" > "latest_prev"."order_id" ORDER BY "order_status"."order_id" ASC, "order_status"."created_at" DESC, "order_status"."id" DESC LIMIT $2) AS "latest_next" ON TRUE)) SELECT "latest_skip"."order_id", "latest_skip"."status", "latest_skip"."created_at" FROM "latest_skip") AS "latest" ON "orders"."id" = "latest"."order_id" WHERE "latest"."status" = CAST($3 AS text)"#
    );
}
