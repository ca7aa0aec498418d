//! Reports over a summary without a database: the statement's shape, the
//! strategy, and every refusal before any SQL is sent.

use chrono::{DateTime, TimeZone, Utc};
use pretty_assertions::assert_eq;
use rust_decimal::Decimal;
use sea_query::{Expr, ExprTrait, Order};

use crate::ops::summary::{Bucket, Measure, Summary};
use crate::rollup::tests::{invalid, refused};
use crate::rollup::{Agg, Dim, Metric, Rollup, RollupStrategy};
use crate::schema::{Column, Table};

struct Orders {
    table: Table,
    user_id: Column<i64>,
    status: Column<String>,
    total: Column<Decimal>,
    qty: Column<i32>,
    created_at: Column<DateTime<Utc>>,
    summary: Summary,
}

fn orders() -> Orders {
    let table = Table::new("orders").unwrap();
    let user_id = table.column("user_id").unwrap();
    let status = table.column("status").unwrap();
    let total = table.column("total").unwrap();
    let qty = table.column("qty").unwrap();
    let created_at = table.column("created_at").unwrap();
    let summary = Summary::new(&created_at, Bucket::Day)
        .key(&user_id)
        .key(&status)
        .measure(Measure::sum(&total, "total"))
        .measure(Measure::sum(&qty, "qty"))
        .measure(Measure::count(&total, "priced"))
        .named("orders_daily");
    Orders {
        table,
        user_id,
        status,
        total,
        qty,
        created_at,
        summary,
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 10, 0, 0, 0).unwrap()
}

fn report(o: &Orders) -> Rollup {
    Rollup::from_summary(
        &o.summary
            .window()
            .since(t0())
            .where_eq(&o.status, "completed"),
    )
}

#[test]
fn the_inner_stage_is_the_window_grouped_by_every_dimension() {
    let o = orders();
    let r = report(&o)
        .dimension(&Dim::new(&o.user_id))
        .metric(&Metric::new("n", Agg::count_all()))
        .metric(&Metric::new("avg_qty", Agg::avg(&o.qty)))
        .with_total();
    let q = r.build().unwrap();
    assert_eq!(
        q.sql(),
        r#"SELECT "rollup_pre"."d0" AS "user_id", CAST(COALESCE(SUM("rollup_pre"."m0"), 0) AS int8) AS "n", CAST(SUM("rollup_pre"."m1") AS numeric) / CAST(NULLIF(SUM("rollup_pre"."m1_n"), 0) AS numeric) AS "avg_qty", GROUPING("rollup_pre"."d0") AS "rollup_grouping" FROM (SELECT "pgp_window"."d0" AS "d0", CAST(COALESCE(SUM("pgp_window"."m0"), $1) AS int8) AS "m0", CAST(SUM("pgp_window"."m1") AS int8) AS "m1", CAST(COALESCE(SUM("pgp_window"."m1_n"), $2) AS int8) AS "m1_n" FROM (SELECT "orders_daily"."user_id" AS "d0", "orders_daily"."row_count" AS "m0", "orders_daily"."qty" AS "m1", "orders_daily"."pgp_n_qty_cf9ae405d1a7" AS "m1_n" FROM "orders_daily" WHERE "orders_daily"."bucket" >= (SELECT CASE WHEN date_trunc('day', CAST($3 AS timestamptz), CAST($4 AS text)) = CAST($5 AS timestamptz) THEN CAST($6 AS timestamptz) ELSE date_trunc('day', date_trunc('day', CAST($7 AS timestamptz), CAST($8 AS text)) + interval '25 hours', CAST($9 AS text)) END) AND "orders_daily"."status" = CAST($10 AS text) UNION ALL (SELECT "orders"."user_id" AS "d0", COUNT(*) AS "m0", SUM("orders"."qty") AS "m1", COUNT("orders"."qty") AS "m1_n" FROM "orders" WHERE "orders"."created_at" >= CAST($11 AS timestamptz) AND "orders"."created_at" < (SELECT CASE WHEN date_trunc('day', CAST($12 AS timestamptz), CAST($13 AS text)) = CAST($14 AS timestamptz) THEN CAST($15 AS timestamptz) ELSE date_trunc('day', date_trunc('day', CAST($16 AS timestamptz), CAST($17 AS text)) + interval '25 hours', CAST($18 AS text)) END) AND "orders"."status" = CAST($19 AS text) GROUP BY "orders"."user_id")) AS "pgp_window" GROUP BY "pgp_window"."d0") AS "rollup_pre" GROUP BY GROUPING SETS(("rollup_pre"."d0"), ()) ORDER BY "rollup_grouping" ASC, "user_id" ASC NULLS LAST"#
    );
    assert_eq!(q.values().0.len(), 19);
}

#[test]
fn each_metric_reads_what_the_summary_keeps() {
    let o = orders();
    let sql = |m: Metric<i64>| {
        report(&o)
            .dimension(&Dim::new(&o.status))
            .metric(&m)
            .build()
            .unwrap()
            .sql()
            .to_owned()
    };
    // COUNT(total): the summary's count of it.
    let s = sql(Metric::new("n", Agg::count(&o.total)));
    assert!(s.contains(r#""orders_daily"."priced" AS "m0""#), "{s}");
    assert!(s.contains(r#"COUNT("orders"."total") AS "m0""#), "{s}");
    // COUNT(qty): no count of it, the sum's non-NULL count.
    let s = sql(Metric::new("n", Agg::count(&o.qty)));
    assert!(
        s.contains(r#""orders_daily"."pgp_n_qty_cf9ae405d1a7" AS "m0""#),
        "{s}"
    );
    // SUM(int4): int8, as SUM(int4) is.
    let s = sql(Metric::new("n", Agg::sum(&o.qty)));
    assert!(
        s.contains(r#"CAST(SUM("rollup_pre"."m0") AS int8) AS "n""#),
        "{s}"
    );
    // AVG(total): its sum and its count.
    let avg = report(&o)
        .metric(&Metric::new("avg", Agg::avg(&o.total)))
        .build()
        .unwrap();
    assert!(
        avg.sql()
            .contains(r#""orders_daily"."total" AS "m0", "orders_daily"."priced" AS "m0_n""#),
        "{avg}"
    );
    // Without dimensions: one row, the total, over the whole window.
    assert!(
        avg.sql().contains(r#"0 AS "rollup_grouping" FROM"#),
        "{avg}"
    );
    assert!(!avg.sql().contains("GROUP BY \"rollup_pre\""), "{avg}");
}

#[test]
fn one_form_whatever_the_strategy() {
    let o = orders();
    let user = Dim::new(&o.user_id);
    let n = Metric::new("n", Agg::count_all());
    let r = report(&o)
        .rollup((&user, &Dim::new(&o.status)))
        .metric(&n)
        .having(n.gt(2i64))
        .rank_by(&n, Order::Desc)
        .limit_per_level(3);
    assert_eq!(r.chosen_strategy(), RollupStrategy::PreAggregate);
    let q = r.build().unwrap();
    for s in [
        RollupStrategy::GroupingSets,
        RollupStrategy::Auto,
        RollupStrategy::PreAggregate,
    ] {
        assert_eq!(r.clone().strategy(s).build().unwrap(), q, "{s:?}");
    }
    assert!(q.sql().contains(r#"FROM "orders_daily""#), "{q}");
    // Auto decides without statistics, and says why.
    let auto = r.clone().strategy(RollupStrategy::Auto);
    assert_eq!(auto.static_choice(), RollupStrategy::PreAggregate);
    let why = auto.fixed_reason().unwrap();
    assert!(why.contains("maintained summary orders_daily"), "{why}");
    let choice = auto.fixed_choice(why);
    assert_eq!(choice.strategy, RollupStrategy::PreAggregate);
    assert_eq!(choice.candidates[0].strategy, RollupStrategy::PreAggregate);
    assert_eq!(choice.candidates[1].strategy, RollupStrategy::GroupingSets);
    assert!(choice.candidates[1].rejected.is_some());
}

#[test]
fn what_the_summary_cannot_answer_is_refused_before_sql() {
    let o = orders();
    let user = Dim::new(&o.user_id);
    let n = Metric::new("n", Agg::count_all());
    let ok = report(&o).dimension(&user).metric(&n).with_total();
    ok.check().unwrap();

    // A dimension that is not a key: another column, an expression, the
    // time column.
    let id = Dim::new(&o.table.column::<i64>("id").unwrap());
    let reason = refused(&ok.clone().dimension(&id), "dimension");
    assert!(
        reason.contains("not a group key of the summary orders_daily"),
        "{reason}"
    );
    let day = Dim::<i64>::named(
        "day",
        crate::TypedExpr::new(o.user_id.expr().add(Expr::cust("1"))),
    );
    let reason = refused(&ok.clone().dimension(&day), "dimension");
    assert!(
        reason.contains("\"day\" is an expression") && reason.contains("user_id, status"),
        "{reason}"
    );
    refused(&ok.clone().dimension(&Dim::new(&o.created_at)), "dimension");
    // Named like a key, still the key: accepted.
    ok.clone()
        .dimension(&Dim::named("who", &o.status))
        .check()
        .unwrap();

    // Metrics the summary does not keep.
    let min = Metric::new("smallest", Agg::min(&o.total));
    assert!(refused(&ok.clone().metric(&min), "metric").contains("MIN or MAX"));
    let max = Metric::new("largest", Agg::max(&o.qty));
    refused(&ok.clone().metric(&max), "metric");
    let users = Metric::new("users", Agg::count_distinct(&o.user_id));
    assert!(refused(&ok.clone().metric(&users), "metric").contains("COUNT(DISTINCT"));
    let filtered = Metric::new("done", Agg::count_all().filter(o.status.eq("completed")));
    assert!(refused(&ok.clone().metric(&filtered), "metric").contains("FILTER"));
    let status_n = Metric::new("with_status", Agg::count(&o.status));
    let reason = refused(&ok.clone().metric(&status_n), "metric");
    assert!(
        reason.contains("a count or a sum of status (text)"),
        "{reason}"
    );
    let price = o.table.column::<i64>("price").unwrap();
    refused(
        &ok.clone().metric(&Metric::new("p", Agg::sum(&price))),
        "metric",
    );
    refused(
        &ok.clone().metric(&Metric::new("p", Agg::avg(&price))),
        "metric",
    );
    // A sum of the kept column under another type is another sum.
    let qty8 = o.table.column::<i64>("qty").unwrap();
    refused(
        &ok.clone().metric(&Metric::new("q", Agg::sum(&qty8))),
        "metric",
    );
    let doubled = Metric::new(
        "d",
        Agg::sum(crate::TypedExpr::<i32>::new(o.qty.expr().mul(2))),
    );
    assert!(refused(&ok.clone().metric(&doubled), "metric").contains("an expression"));

    // A free condition.
    let reason = refused(&ok.clone().filter(o.qty.gt(1)), "filter");
    assert!(reason.contains("where_eq"), "{reason}");

    // HAVING that the partials cannot answer.
    let reason = refused(&ok.clone().having(Expr::cust("COUNT(*) > 1")), "having");
    assert!(reason.contains("HAVING condition 1"), "{reason}");
    ok.clone().having(n.gt(1i64)).check().unwrap();

    // The window's own problems, its own groups or ranking.
    let w = o.summary.window();
    invalid(Rollup::from_summary(&w).dimension(&user).check(), "window");
    let w = o.summary.window().since(t0()).by(&o.user_id);
    let reason = refused(&Rollup::from_summary(&w).dimension(&user), "window");
    assert!(reason.contains("by(..)"), "{reason}");
    let w = o.summary.window().since(t0()).top("total", 3);
    let reason = refused(&Rollup::from_summary(&w).dimension(&user), "window");
    assert!(reason.contains("top(..)"), "{reason}");
    let w = o.summary.window().until(t0()).where_eq(&o.qty, 3);
    invalid(Rollup::from_summary(&w).check(), "where_eq");

    // Columns of another table than the summary's base.
    let users_t = Table::new("users").unwrap();
    let other = Dim::new(&users_t.column::<i64>("user_id").unwrap());
    refused(&ok.clone().dimension(&other), "dimension");
}
