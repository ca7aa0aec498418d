//! SQL snapshots and spec checks (no server).

use super::*;
use chrono::{DateTime, TimeZone, Utc};

fn spec() -> LatestStatus<String> {
    let orders = Table::new("orders").unwrap();
    let h = Table::new("order_status").unwrap();
    LatestStatus::new(
        &orders.column::<i64>("id").unwrap(),
        &h.column::<i64>("order_id").unwrap(),
        &h.column::<String>("status").unwrap(),
        &h.column::<DateTime<Utc>>("created_at").unwrap(),
    )
    .unwrap()
    .then_by(&h.column::<i64>("id").unwrap())
    .unwrap()
}

fn sql(s: LatestStatus<String>, strategy: LatestStrategy) -> String {
    s.strategy(strategy).unwrap().build().sql().to_owned()
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
        .unwrap()
        .missing_as("Pending")
        .unwrap()
        .status_in(["Pending", "Complete"])
        .unwrap();
    assert_eq!(
        sql(s, LatestStrategy::NotExists),
        r#"SELECT "orders".*, "latest"."status" AS "latest_status", "latest"."created_at" AS "latest_at" FROM "orders" LEFT JOIN "order_status" AS "latest" ON "orders"."id" = "latest"."order_id" AND "latest"."created_at" <= CAST($1 AS timestamptz) AND (NOT EXISTS(SELECT 1 FROM "order_status" AS "newer" WHERE "newer"."order_id" = "latest"."order_id" AND ("newer"."created_at", "newer"."id") > ("latest"."created_at", "latest"."id") AND "newer"."created_at" <= CAST($2 AS timestamptz))) WHERE (CASE WHEN ("latest"."created_at" IS NOT NULL) THEN "latest"."status" ELSE CAST($3 AS text) END) = ANY(CAST($4 AS text[]))"#
    );
}

#[test]
fn denormalized_snapshot_and_refusals() {
    let orders = Table::new("orders").unwrap();
    let col = orders.column::<String>("status").unwrap();
    let s = spec().denormalized(&col).unwrap().status_eq("Complete");
    assert_eq!(
        sql(s.clone(), LatestStrategy::Denormalized),
        r#"SELECT "orders".*, "orders"."status" AS "latest_status" FROM "orders" WHERE "orders"."status" = CAST($1 AS text)"#
    );
    let at = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    let d = s.strategy(LatestStrategy::Denormalized).unwrap();
    assert!(d.clone().as_of::<DateTime<Utc>>(at).is_err());
    assert!(d.missing_as("Pending").is_err());
    assert!(spec().strategy(LatestStrategy::Denormalized).is_err());
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
    let err = LatestStatus::new(&key, &fk, &other.column::<String>("s").unwrap(), &t).unwrap_err();
    assert!(
        err.to_string().contains("not to the history table"),
        "{err}"
    );
    // history = entity
    let self_fk = orders.column::<i64>("parent").unwrap();
    let self_st = orders.column::<String>("s").unwrap();
    let self_t = orders.column::<DateTime<Utc>>("t").unwrap();
    assert!(LatestStatus::new(&key, &self_fk, &self_st, &self_t).is_err());
    // duplicate ordering column, empty sets, wrong as_of type, limit 0
    assert!(spec().then_by(&h.column::<i64>("id").unwrap()).is_err());
    assert!(spec().status_in(Vec::<String>::new()).is_err());
    assert!(spec().as_of::<i64>(5).is_err());
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
        .strategy(LatestStrategy::Lateral)
        .unwrap();
    let page = s.page_built(50, Some(1000i64.param()));
    assert!(page.sql().ends_with(
        r#"WHERE "latest"."status" = CAST($2 AS text) AND "orders"."id" > CAST($3 AS int8) ORDER BY "orders"."id" ASC LIMIT $4"#
    ), "{}", page.sql());
    assert!(s
        .count_query()
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
