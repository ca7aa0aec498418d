//! SQL snapshots and input checks that need no database.

use chrono::{DateTime, NaiveDateTime, Utc};
use rust_decimal::Decimal;

use super::*;
use crate::schema::Table;
use crate::BuiltQuery;

fn orders() -> (Table, Column<i64>, Column<DateTime<Utc>>, Column<Decimal>) {
    let t = Table::new("orders").unwrap();
    (
        t.clone(),
        t.column("user_id").unwrap(),
        t.column("created_at").unwrap(),
        t.column("total").unwrap(),
    )
}

#[test]
fn bad_input_is_refused_before_sql() {
    let (t, user, at, total) = orders();
    let ok = Summary::new(&at, Bucket::Day)
        .key(&user)
        .measure(Measure::sum(&total, "total"));
    assert!(ok.check().is_ok());
    // A float sum cannot be kept exact.
    let f = Summary::new(&at, Bucket::Day)
        .measure(Measure::sum(&t.column::<f64>("price").unwrap(), "price"));
    assert!(matches!(
        f.check(),
        Err(Error::InvalidSpec {
            field: "measure",
            ..
        })
    ));
    assert!(f.install_statements().is_err());
    // A key of another table.
    let other = Table::new("users").unwrap().column::<i64>("id").unwrap();
    let e = Summary::new(&at, Bucket::Day)
        .key(&other)
        .check()
        .unwrap_err();
    assert!(matches!(e, Error::InvalidSpec { field: "key", .. }), "{e}");
    // Names used twice.
    let e = Summary::new(&at, Bucket::Day)
        .key(&user)
        .measure(Measure::count(&total, "user_id"))
        .check()
        .unwrap_err();
    assert!(e.to_string().contains("used twice"), "{e}");
    let e = Summary::new(&at, Bucket::Day)
        .measure(Measure::count(&total, "bucket"))
        .check()
        .unwrap_err();
    assert!(e.to_string().contains("used twice"), "{e}");
    // A zone that is not a name.
    let e = Summary::new(&at, Bucket::Day)
        .zone("UTC'; DROP TABLE x; --")
        .check();
    assert!(matches!(e, Err(Error::InvalidSpec { field: "zone", .. })));
    // An invalid measure name.
    let e = Summary::new(&at, Bucket::Day)
        .measure(Measure::count(&total, ""))
        .check();
    assert!(matches!(e, Err(Error::InvalidIdentifier { .. })));
    // Window problems.
    let w = ok.window().top("total", 10);
    assert!(matches!(
        w.check(),
        Err(Error::InvalidSpec {
            field: "window",
            ..
        })
    ));
    let naive = NaiveDateTime::default();
    let w = ok.window().since(naive);
    assert!(matches!(
        w.check(),
        Err(Error::InvalidSpec {
            field: "window",
            ..
        })
    ));
    let w = ok.window().since(Utc::now()).top("nope", 3);
    assert!(matches!(
        w.check(),
        Err(Error::InvalidSpec { field: "top", .. })
    ));
    let w = ok
        .window()
        .since(Utc::now())
        .by(&t.column::<String>("status").unwrap());
    assert!(matches!(
        w.check(),
        Err(Error::InvalidSpec { field: "by", .. })
    ));
    let w = ok.window().since(Utc::now()).top("total", 0);
    assert!(matches!(
        w.check(),
        Err(Error::InvalidSpec { field: "n", .. })
    ));
}

#[test]
fn ddl_quotes_hostile_names_and_binds_nothing() {
    let t = Table::new("my \"orders\"").unwrap();
    let at = t.column::<NaiveDateTime>("new").unwrap();
    let s = Summary::new(&at, Bucket::Hour)
        .key(&t.column::<String>("old").unwrap())
        .measure(Measure::sum(&t.column::<i32>("$1").unwrap(), "found"))
        .named("sum'mary\"$x");
    let all = s.install_statements().unwrap();
    assert!(all.iter().all(|q| q.values().0.is_empty()));
    let create = all[1].sql();
    assert_eq!(
        create,
        r#"CREATE TABLE IF NOT EXISTS "sum'mary""$x" ("old" text, "bucket" timestamp NOT NULL, "row_count" int8 NOT NULL, "found" int8, "pgp_n_found_2c05e7ecf361" int8 NOT NULL, CONSTRAINT "sum'mary_$x_key_b427cc9f76d5" UNIQUE NULLS NOT DISTINCT ("bucket", "old"))"#
    );
    assert!(
        all[4]
            .sql()
            .contains(r#"date_trunc(''hour'', "pgp_delta"."new")"#),
        "{}",
        all[4].sql()
    );
    assert_eq!(s.uninstall_statements().unwrap().len(), 7);
    // The drift check binds nothing for a timestamp column.
    let drift = BuiltQuery::new(&s.drift_statement().unwrap());
    assert!(drift.values().0.is_empty(), "{drift}");
}

#[test]
fn zoned_buckets_bind_the_zone() {
    let (_, user, at, total) = orders();
    let s = Summary::new(&at, Bucket::Day)
        .key(&user)
        .measure(Measure::sum(&total, "total"))
        .zone("Europe/Paris")
        .named("daily");
    let drift = BuiltQuery::new(&s.drift_statement().unwrap());
    assert!(
        drift
            .sql()
            .contains("date_trunc('day', \"orders\".\"created_at\", CAST($1 AS text))"),
        "{drift}"
    );
    let fn_sql = s.install_statements().unwrap()[4].sql().to_owned();
    assert!(fn_sql.contains("''Europe/Paris''"), "{fn_sql}");
}

#[test]
fn single_table_events_aggregate_without_signs() {
    let (_, user, at, total) = orders();
    let s = Summary::new(&at, Bucket::Day)
        .key(&user)
        .measure(Measure::sum(&total, "total"))
        .named("daily");
    let fn_sql = s.install_statements().unwrap()[4].sql().to_owned();
    // INSERT: plain counts and sums of the new rows, no HAVING.
    assert!(
        fn_sql.contains(r#"COUNT(*), CAST(SUM(CAST("pgp_delta"."total" AS numeric)) AS numeric), COUNT("pgp_delta"."total") FROM "pgp_new_rows" AS "pgp_delta""#),
        "{fn_sql}"
    );
    // DELETE: the same, negated.
    assert!(
        fn_sql.contains(r#"-COUNT(*), CAST(-SUM(CAST("pgp_delta"."total" AS numeric)) AS numeric), -COUNT("pgp_delta"."total") FROM "pgp_old_rows" AS "pgp_delta""#),
        "{fn_sql}"
    );
    // UPDATE: signed rows of both tables; groups whose deltas are all zero
    // are skipped.
    assert_eq!(fn_sql.matches("HAVING").count(), 1, "{fn_sql}");
    assert_eq!(fn_sql.matches("UNION ALL").count(), 1, "{fn_sql}");
    // Every upsert runs in the key's order.
    assert_eq!(
        fn_sql.matches("ORDER BY 2, 1 ON CONFLICT").count(),
        3,
        "{fn_sql}"
    );
}

#[test]
fn a_window_reads_whole_buckets_and_the_edges() {
    let (t, user, at, total) = orders();
    let status = t.column::<String>("status").unwrap();
    let s = Summary::new(&at, Bucket::Day)
        .key(&user)
        .key(&status)
        .measure(Measure::sum(&total, "total"))
        .measure(Measure::count(&total, "priced"))
        .named("daily");
    let w = s.window().since(Utc::now());
    assert_eq!(
        w.build().unwrap().sql(),
        r#"SELECT "pgp_window"."user_id" AS "user_id", "pgp_window"."status" AS "status", CAST(COALESCE(SUM("pgp_window"."row_count"), $1) AS int8) AS "row_count", CAST(SUM("pgp_window"."total") AS numeric) AS "total", CAST(COALESCE(SUM("pgp_window"."priced"), $2) AS int8) AS "priced" FROM (SELECT "daily"."user_id" AS "user_id", "daily"."status" AS "status", "daily"."row_count" AS "row_count", "daily"."total" AS "total", "daily"."priced" AS "priced" FROM "daily" WHERE "daily"."bucket" >= (SELECT CASE WHEN date_trunc('day', CAST($3 AS timestamptz), CAST($4 AS text)) = CAST($5 AS timestamptz) THEN CAST($6 AS timestamptz) ELSE date_trunc('day', date_trunc('day', CAST($7 AS timestamptz), CAST($8 AS text)) + interval '25 hours', CAST($9 AS text)) END) UNION ALL (SELECT "orders"."user_id" AS "user_id", "orders"."status" AS "status", COUNT(*) AS "row_count", SUM("orders"."total") AS "total", COUNT("orders"."total") AS "priced" FROM "orders" WHERE "orders"."created_at" >= CAST($10 AS timestamptz) AND "orders"."created_at" < (SELECT CASE WHEN date_trunc('day', CAST($11 AS timestamptz), CAST($12 AS text)) = CAST($13 AS timestamptz) THEN CAST($14 AS timestamptz) ELSE date_trunc('day', date_trunc('day', CAST($15 AS timestamptz), CAST($16 AS text)) + interval '25 hours', CAST($17 AS text)) END) GROUP BY "orders"."user_id", "orders"."status")) AS "pgp_window" GROUP BY "pgp_window"."user_id", "pgp_window"."status" ORDER BY "user_id" ASC NULLS LAST, "status" ASC NULLS LAST"#
    );
}
