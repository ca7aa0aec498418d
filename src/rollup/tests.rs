//! SQL snapshots and spec validation (no database).

use super::*;
use crate::Table;
use pretty_assertions::assert_eq;
use rust_decimal::Decimal;
use sea_query::{Expr, ExprTrait};

struct Sale {
    table: Table,
    spec: Rollup,
    merchant: Dim<String>,
    device: Dim<String>,
    total: Metric<i64>,
}

fn sale() -> Sale {
    let table = Table::new("sale").unwrap();
    let mut spec = Rollup::new(&table);
    let merchant = spec
        .dimension(&table.column::<String>("merchant").unwrap())
        .unwrap();
    let device = spec
        .dimension(&table.column::<String>("device").unwrap())
        .unwrap();
    let total = spec.metric("total", Agg::count_all()).unwrap();
    Sale {
        table,
        spec,
        merchant,
        device,
        total,
    }
}

const SELECT: &str = r#"SELECT "sale"."merchant" AS "merchant", "sale"."device" AS "device", COUNT(*) AS "total", GROUPING("sale"."merchant", "sale"."device") AS "rollup_grouping" FROM "sale""#;
const ORDER: &str =
    r#"ORDER BY "rollup_grouping" ASC, "merchant" ASC NULLS LAST, "device" ASC NULLS LAST"#;

#[test]
fn plain_group_by_without_grouping_entries() {
    let s = sale();
    assert_eq!(
        s.spec.build().sql(),
        format!(r#"{SELECT} GROUP BY "sale"."merchant", "sale"."device" {ORDER}"#)
    );
}

#[test]
fn rollup_cube_and_grouping_sets_snapshots() {
    let mut s = sale();
    s.spec.rollup([s.device.id(), s.merchant.id()]).unwrap();
    assert_eq!(
        s.spec.build().sql(),
        format!(r#"{SELECT} GROUP BY ROLLUP("sale"."device", "sale"."merchant") {ORDER}"#)
    );

    let mut s = sale();
    s.spec.cube([s.merchant.id(), s.device.id()]).unwrap();
    s.spec.total_first();
    assert_eq!(
        s.spec.build().sql(),
        format!(
            r#"{SELECT} GROUP BY CUBE("sale"."merchant", "sale"."device") ORDER BY "rollup_grouping" DESC, "merchant" ASC NULLS LAST, "device" ASC NULLS LAST"#
        )
    );

    let mut s = sale();
    s.spec
        .grouping_sets([
            vec![s.merchant.id()],
            vec![s.merchant.id(), s.device.id()],
            vec![],
        ])
        .unwrap();
    assert_eq!(
        s.spec.build().sql(),
        format!(
            r#"{SELECT} GROUP BY GROUPING SETS(("sale"."merchant"), ("sale"."merchant", "sale"."device"), ()) {ORDER}"#
        )
    );
    assert_eq!(
        s.spec.grouping_sets_expanded(),
        vec![
            vec![s.merchant.alias().clone()],
            vec![s.merchant.alias().clone(), s.device.alias().clone()],
            vec![],
        ]
    );

    // Combined entries; an uncovered dimension becomes a plain entry.
    let mut s = sale();
    s.spec.rollup([s.device.id()]).unwrap();
    assert_eq!(
        s.spec.build().sql(),
        format!(r#"{SELECT} GROUP BY "sale"."merchant", ROLLUP("sale"."device") {ORDER}"#)
    );
}

#[test]
fn with_total_having_filters_and_limits_snapshot() {
    let mut s = sale();
    let amount = s.table.column::<i32>("charged_amount").unwrap();
    let avg = s
        .spec
        .metric(
            "avg_big",
            Agg::<Decimal>::avg(&amount).filter(amount.gt(100)),
        )
        .unwrap();
    s.spec.filter(amount.gte(1));
    s.spec.with_total().unwrap();
    s.spec.having(s.total.gt(1i64));
    s.spec.rank_by(&avg, Order::Desc).unwrap();
    let q = s.spec.build();
    assert_eq!(
        q.sql(),
        r#"SELECT "sale"."merchant" AS "merchant", "sale"."device" AS "device", COUNT(*) AS "total", AVG("sale"."charged_amount") FILTER (WHERE "sale"."charged_amount" > CAST($1 AS int4)) AS "avg_big", GROUPING("sale"."merchant", "sale"."device") AS "rollup_grouping" FROM "sale" WHERE "sale"."charged_amount" >= CAST($2 AS int4) GROUP BY GROUPING SETS(("sale"."merchant", "sale"."device"), ()) HAVING COUNT(*) > CAST($3 AS int8) ORDER BY "rollup_grouping" ASC, "avg_big" DESC NULLS LAST, "merchant" ASC NULLS LAST, "device" ASC NULLS LAST"#
    );
    assert_eq!(q.values().0.len(), 3);

    s.spec.limit_per_level(3).unwrap();
    let q = s.spec.build();
    assert!(q.sql().starts_with(
        r#"SELECT "merchant", "device", "total", "avg_big", "rollup_grouping" FROM (SELECT *, ROW_NUMBER() OVER ( PARTITION BY "rollup_grouping" ORDER BY "avg_big" DESC NULLS LAST, "merchant" ASC NULLS LAST, "device" ASC NULLS LAST ) AS "rollup_rank" FROM (SELECT "#
    ), "{q}");
    assert!(q.sql().ends_with(
        r#") AS "rollup_grouped") AS "rollup_ranked" WHERE "rollup_rank" <= CAST($4 AS int8) ORDER BY "rollup_grouping" ASC, "avg_big" DESC NULLS LAST, "merchant" ASC NULLS LAST, "device" ASC NULLS LAST"#
    ), "{q}");

    // One grouping set: a plain top-N sort.
    let mut one = sale();
    one.spec.rank_by(&one.total, Order::Desc).unwrap();
    one.spec.limit_per_level(5).unwrap();
    assert!(one.spec.build().sql().ends_with(
        r#"ORDER BY "rollup_grouping" ASC, "total" DESC NULLS LAST, "merchant" ASC NULLS LAST, "device" ASC NULLS LAST LIMIT $1"#
    ));
}

#[test]
fn no_dimensions_is_one_total_row() {
    let t = Table::new("sale").unwrap();
    let mut r = Rollup::new(&t);
    r.metric("n", Agg::count_all()).unwrap();
    assert_eq!(
        r.build().sql(),
        r#"SELECT COUNT(*) AS "n", 0 AS "rollup_grouping" FROM "sale" ORDER BY "rollup_grouping" ASC"#
    );
}

fn invalid(r: Result<impl std::fmt::Debug>, field: &str) -> String {
    match r {
        Err(Error::InvalidSpec { field: f, reason }) if f == field => reason,
        other => panic!("expected an invalid {field}, got {other:?}"),
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let mut s = sale();
    // rollup / cube / grouping sets without dimensions
    invalid(s.spec.rollup([]).map(|_| ()), "rollup");
    invalid(s.spec.cube([]).map(|_| ()), "cube");
    invalid(
        s.spec.grouping_sets(Vec::<Vec<DimId>>::new()).map(|_| ()),
        "grouping_sets",
    );
    // a dimension named twice
    invalid(
        s.spec
            .rollup([s.merchant.id(), s.merchant.id()])
            .map(|_| ()),
        "rollup",
    );
    // duplicate aliases, also against the level column
    let merchant = s.table.column::<String>("merchant").unwrap();
    let reason = invalid(s.spec.dimension(&merchant), "alias");
    assert!(reason.contains("used twice"), "{reason}");
    invalid(s.spec.metric("device", Agg::count_all()), "alias");
    invalid(s.spec.metric(GROUPING_ALIAS, Agg::count_all()), "alias");
    // sum / avg of a non-numeric column, and the wrong output type
    let reason = invalid(Agg::<i64>::sum_any(&merchant.erase()), "metric");
    assert!(reason.contains("numeric"), "{reason}");
    invalid(Agg::<Decimal>::avg_any(&merchant.erase()), "metric");
    let amount = s.table.column::<i32>("charged_amount").unwrap();
    let reason = invalid(Agg::<Decimal>::sum_any(&amount.erase()), "metric");
    assert!(reason.contains("int8"), "{reason}");
    assert!(Agg::<i64>::sum_any(&amount.erase()).is_ok());
    // a column of another table
    let other = Table::new("other").unwrap();
    invalid(
        s.spec.dimension(&other.column::<String>("x").unwrap()),
        "dimension",
    );
    invalid(
        s.spec
            .metric("m", Agg::count(other.column::<i64>("x").unwrap())),
        "metric",
    );
    // a handle of another spec
    let t = sale();
    invalid(s.spec.rollup([t.merchant.id()]).map(|_| ()), "rollup");
    invalid(s.spec.rank_by(&t.total, Order::Asc).map(|_| ()), "rank_by");
    // limits
    invalid(s.spec.limit_per_level(0).map(|_| ()), "limit_per_level");
    // invalid identifiers
    assert!(matches!(
        s.spec.metric("", Agg::count_all()),
        Err(Error::InvalidIdentifier { .. })
    ));
    // a combination repeating a grouping set
    let mut s = sale();
    s.spec.rollup([s.merchant.id(), s.device.id()]).unwrap();
    invalid(s.spec.with_total().map(|_| ()), "grouping");
    // from_query needs a bare alias
    let q = sea_query::Query::select().to_owned();
    invalid(
        Rollup::from_query(q, &Table::in_schema("s", "x").unwrap()),
        "alias",
    );
}

#[test]
fn cube_is_limited_to_twelve_dimensions_and_reports_to_31() {
    let t = Table::new("wide").unwrap();
    let mut r = Rollup::new(&t);
    let dims: Vec<DimId> = (0..13)
        .map(|i| {
            r.dimension(&t.column::<i64>(format!("d{i}")).unwrap())
                .unwrap()
                .id()
        })
        .collect();
    let reason = invalid(r.cube(dims.clone()).map(|_| ()), "cube");
    assert!(reason.contains("8192"), "{reason}");
    assert!(r.cube(dims[..12].to_vec()).is_ok());
    // 12 cube dims × a rollup of one more: 8192 sets, over PostgreSQL's limit
    invalid(r.rollup([dims[12]]).map(|_| ()), "grouping");

    let mut r = Rollup::new(&t);
    for i in 0..MAX_DIMENSIONS {
        r.dimension(&t.column::<i64>(format!("d{i}")).unwrap())
            .unwrap();
    }
    invalid(
        r.dimension(&t.column::<i64>("one_more").unwrap()),
        "dimension",
    );
}

#[test]
fn expression_dimensions_and_hostile_aliases_are_quoted() {
    let t = Table::new("sale").unwrap();
    let amount = t.column::<i32>("charged_amount").unwrap();
    let mut r = Rollup::new(&t);
    let bucket = r
        .dimension_as(
            r#"bucket"; DROP TABLE sale; --"#,
            TypedExpr::<i32>::new(amount.expr().div(Expr::cust("100"))),
        )
        .unwrap();
    r.with_total().unwrap();
    let q = r.build();
    assert_eq!(
        q.sql(),
        r#"SELECT "sale"."charged_amount" / (100) AS "bucket""; DROP TABLE sale; --", GROUPING("sale"."charged_amount" / (100)) AS "rollup_grouping" FROM "sale" GROUP BY GROUPING SETS(("sale"."charged_amount" / (100)), ()) ORDER BY "rollup_grouping" ASC, "bucket""; DROP TABLE sale; --" ASC NULLS LAST"#
    );
    assert_eq!(bucket.alias().as_str(), r#"bucket"; DROP TABLE sale; --"#);
    // A bound value inside a dimension would be three different parameters.
    let reason = invalid(
        r.dimension_as(
            "b2",
            TypedExpr::<i32>::new(amount.expr().div(100i32.param())),
        ),
        "dimension",
    );
    assert!(reason.contains("from_query"), "{reason}");
}

fn pre_aggregate(s: &mut Sale) -> (Metric<Decimal>, Metric<i64>) {
    let amount = s.table.column::<i32>("charged_amount").unwrap();
    let avg = s
        .spec
        .metric(
            "avg_big",
            Agg::<Decimal>::avg(&amount).filter(amount.gt(100)),
        )
        .unwrap();
    let sum = s.spec.metric("sum", Agg::sum(&amount)).unwrap();
    s.spec.filter(amount.gte(1));
    (avg, sum)
}

#[test]
fn pre_aggregate_snapshot() {
    let mut s = sale();
    let (avg, sum) = pre_aggregate(&mut s);
    s.spec.rollup([s.merchant.id(), s.device.id()]).unwrap();
    s.spec.having(s.total.gt(1i64).and(sum.lt(1000i64)));
    s.spec.rank_by(&avg, Order::Desc).unwrap();
    s.spec.strategy(RollupStrategy::PreAggregate).unwrap();
    assert_eq!(s.spec.chosen_strategy(), RollupStrategy::PreAggregate);
    let q = s.spec.build();
    assert_eq!(
        q.sql(),
        concat!(
            r#"SELECT "rollup_pre"."d0" AS "merchant", "rollup_pre"."d1" AS "device", "#,
            r#"CAST(COALESCE(SUM("rollup_pre"."m0"), 0) AS int8) AS "total", "#,
            r#"CAST(SUM("rollup_pre"."m1") AS numeric) / CAST(NULLIF(SUM("rollup_pre"."m1_n"), 0) AS numeric) AS "avg_big", "#,
            r#"CAST(SUM("rollup_pre"."m2") AS int8) AS "sum", "#,
            r#"GROUPING("rollup_pre"."d0", "rollup_pre"."d1") AS "rollup_grouping" "#,
            r#"FROM (SELECT "sale"."merchant" AS "d0", "sale"."device" AS "d1", COUNT(*) AS "m0", "#,
            r#"SUM("sale"."charged_amount") FILTER (WHERE "sale"."charged_amount" > CAST($1 AS int4)) AS "m1", "#,
            r#"COUNT("sale"."charged_amount") FILTER (WHERE "sale"."charged_amount" > CAST($2 AS int4)) AS "m1_n", "#,
            r#"SUM("sale"."charged_amount") AS "m2" "#,
            r#"FROM "sale" WHERE "sale"."charged_amount" >= CAST($3 AS int4) "#,
            r#"GROUP BY "sale"."merchant", "sale"."device") AS "rollup_pre" "#,
            r#"GROUP BY ROLLUP("rollup_pre"."d0", "rollup_pre"."d1") "#,
            r#"HAVING CAST(COALESCE(SUM("rollup_pre"."m0"), 0) AS int8) > CAST($4 AS int8) "#,
            r#"AND CAST(SUM("rollup_pre"."m2") AS int8) < CAST($5 AS int8) "#,
            r#"ORDER BY "rollup_grouping" ASC, "avg_big" DESC NULLS LAST, "merchant" ASC NULLS LAST, "device" ASC NULLS LAST"#
        )
    );
    assert_eq!(q.values().0.len(), 5);

    // Ranking with a limit wraps the pre-aggregated query like the other.
    s.spec.limit_per_level(2).unwrap();
    let q = s.spec.build();
    assert!(
        q.sql().starts_with(
            r#"SELECT "merchant", "device", "total", "avg_big", "sum", "rollup_grouping" FROM (SELECT *, ROW_NUMBER() OVER ( PARTITION BY "rollup_grouping" ORDER BY "avg_big" DESC NULLS LAST, "merchant" ASC NULLS LAST, "device" ASC NULLS LAST ) AS "rollup_rank" FROM (SELECT "rollup_pre"."d0" AS "merchant""#
        ),
        "{q}"
    );
    assert!(
        q.sql()
            .contains(r#"WHERE "rollup_rank" <= CAST($6 AS int8)"#),
        "{q}"
    );
}

#[test]
fn pre_aggregate_types_min_max_and_float_averages() {
    let t = Table::new("t").unwrap();
    let mut r = Rollup::new(&t);
    let k = r.dimension(&t.column::<i64>("k").unwrap()).unwrap();
    let x8 = t.column::<i64>("x8").unwrap();
    let f4 = t.column::<f32>("f4").unwrap();
    r.metric("s8", Agg::sum(&x8)).unwrap();
    r.metric("lo", Agg::min(&x8)).unwrap();
    r.metric("hi", Agg::max(&x8)).unwrap();
    r.metric("n", Agg::count(&x8)).unwrap();
    r.metric("favg", Agg::avg(&f4)).unwrap();
    r.with_total().unwrap();
    r.strategy(RollupStrategy::PreAggregate).unwrap();
    let sql = r.build().sql().to_owned();
    for part in [
        r#"CAST(SUM("rollup_pre"."m0") AS numeric) AS "s8""#,
        r#"MIN("rollup_pre"."m1") AS "lo""#,
        r#"MAX("rollup_pre"."m2") AS "hi""#,
        r#"CAST(COALESCE(SUM("rollup_pre"."m3"), 0) AS int8) AS "n""#,
        r#"CAST(SUM("rollup_pre"."m4") AS float8) / CAST(NULLIF(SUM("rollup_pre"."m4_n"), 0) AS float8) AS "favg""#,
        // avg(float4) adds in float8
        r#"SUM(CAST("t"."f4" AS float8)) AS "m4""#,
        r#"COUNT("t"."f4") AS "m4_n""#,
        r#"GROUP BY "t"."k") AS "rollup_pre" GROUP BY GROUPING SETS(("rollup_pre"."d0"), ())"#,
    ] {
        assert!(sql.contains(part), "{part}\n{sql}");
    }
    // A float average is allowed explicitly, but Auto keeps GroupingSets.
    r.strategy(RollupStrategy::Auto).unwrap();
    assert!(r.build().sql().contains("GROUPING SETS((\"t\".\"k\"), ())"));
    assert!(r.fixed_reason().unwrap().contains("favg"));
    let _ = k;
}

#[test]
fn pre_aggregate_without_dimensions_and_over_a_callers_query() {
    let t = Table::new("sale").unwrap();
    let mut r = Rollup::new(&t);
    r.metric("n", Agg::count_all()).unwrap();
    r.strategy(RollupStrategy::PreAggregate).unwrap();
    assert_eq!(
        r.build().sql(),
        r#"SELECT CAST(COALESCE(SUM("rollup_pre"."m0"), 0) AS int8) AS "n", 0 AS "rollup_grouping" FROM (SELECT COUNT(*) AS "m0" FROM "sale") AS "rollup_pre" ORDER BY "rollup_grouping" ASC"#
    );

    let base = Query::select()
        .column(sea_query::Asterisk)
        .from(t.table_ref())
        .and_where(t.column::<i32>("charged_amount").unwrap().gt(5))
        .to_owned();
    let f = Table::new("f").unwrap();
    let mut r = Rollup::from_query(base, &f).unwrap();
    let m = r
        .dimension(&f.column::<String>("merchant").unwrap())
        .unwrap();
    r.metric("n", Agg::count_all()).unwrap();
    r.rollup([m.id()])
        .unwrap()
        .strategy(RollupStrategy::PreAggregate)
        .unwrap();
    assert_eq!(
        r.build().sql(),
        r#"SELECT "rollup_pre"."d0" AS "merchant", CAST(COALESCE(SUM("rollup_pre"."m0"), 0) AS int8) AS "n", GROUPING("rollup_pre"."d0") AS "rollup_grouping" FROM (SELECT "f"."merchant" AS "d0", COUNT(*) AS "m0" FROM (SELECT * FROM "sale" WHERE "sale"."charged_amount" > CAST($1 AS int4)) AS "f" GROUP BY "f"."merchant") AS "rollup_pre" GROUP BY ROLLUP("rollup_pre"."d0") ORDER BY "rollup_grouping" ASC, "merchant" ASC NULLS LAST"#
    );
}

#[test]
fn pre_aggregate_refuses_what_it_cannot_decompose() {
    // COUNT(DISTINCT) before choosing the strategy …
    let mut s = sale();
    let users = s.table.column::<i32>("user_id").unwrap();
    s.spec.metric("users", Agg::count_distinct(&users)).unwrap();
    s.spec.with_total().unwrap();
    let reason = invalid(
        s.spec.strategy(RollupStrategy::PreAggregate).map(|_| ()),
        "strategy",
    );
    assert!(
        reason.contains("\"users\"") && reason.contains("COUNT(DISTINCT"),
        "{reason}"
    );
    assert_eq!(s.spec.chosen_strategy(), RollupStrategy::GroupingSets);
    // … and after.
    let mut s = sale();
    s.spec.strategy(RollupStrategy::PreAggregate).unwrap();
    let reason = invalid(
        s.spec.metric("users", Agg::count_distinct(&users)),
        "metric",
    );
    assert!(reason.contains("Auto"), "{reason}");

    // HAVING on something the partials do not have.
    let mut s = sale();
    s.spec.with_total().unwrap();
    s.spec.having(Expr::cust("COUNT(*) > 1"));
    let reason = invalid(
        s.spec.strategy(RollupStrategy::PreAggregate).map(|_| ()),
        "strategy",
    );
    assert!(reason.contains("HAVING condition 1"), "{reason}");
    let mut s = sale();
    s.spec.with_total().unwrap();
    let amount = s.table.column::<i32>("charged_amount").unwrap();
    s.spec
        .having(Expr::from(sea_query::Func::max(amount.expr())).gt(3));
    invalid(
        s.spec.strategy(RollupStrategy::PreAggregate).map(|_| ()),
        "strategy",
    );
    // Added after choosing PreAggregate: the report runs as GroupingSets.
    let mut s = sale();
    s.spec.with_total().unwrap();
    s.spec.strategy(RollupStrategy::PreAggregate).unwrap();
    s.spec.having(Expr::cust("COUNT(*) > 1"));
    let mut gs = s.spec.clone();
    gs.strategy(RollupStrategy::GroupingSets).unwrap();
    assert_eq!(s.spec.build(), gs.build());

    // Conditions over metrics, dimensions, values and scalar functions are
    // rewritten.
    let mut s = sale();
    s.spec.with_total().unwrap();
    s.spec.having(
        Expr::from(sea_query::Func::coalesce([s.total.expr(), 0i64.param()]))
            .gt(1)
            .or(s.merchant.expr().is_null())
            .and(s.total.expr().cast_as("int4").ne(2)),
    );
    s.spec.strategy(RollupStrategy::PreAggregate).unwrap();
    let sql = s.spec.build().sql().to_owned();
    assert!(sql.contains(r#"HAVING (COALESCE(CAST(COALESCE(SUM("rollup_pre"."m0"), 0) AS int8), CAST($1 AS int8)) > $2 OR "rollup_pre"."d0" IS NULL) AND CAST(CAST(COALESCE(SUM("rollup_pre"."m0"), 0) AS int8) AS int4) <> $3"#), "{sql}");
}

#[test]
fn auto_without_a_database_follows_its_static_rule() {
    // Decomposable and several grouping sets: PreAggregate.
    let mut s = sale();
    s.spec.with_total().unwrap();
    s.spec.strategy(RollupStrategy::Auto).unwrap();
    assert_eq!(s.spec.chosen_strategy(), RollupStrategy::Auto);
    assert!(s.spec.build().sql().contains(r#"AS "rollup_pre""#));
    // One grouping set: a plain GROUP BY, already parallel.
    let mut s = sale();
    s.spec.strategy(RollupStrategy::Auto).unwrap();
    assert_eq!(s.spec.static_choice(), RollupStrategy::GroupingSets);
    assert!(s.spec.fixed_reason().unwrap().contains("one grouping set"));
    // COUNT(DISTINCT): GroupingSets, and the reason names the metric.
    let mut s = sale();
    let users = s.table.column::<i32>("user_id").unwrap();
    s.spec
        .metric("unique_users", Agg::count_distinct(&users))
        .unwrap();
    s.spec
        .with_total()
        .unwrap()
        .strategy(RollupStrategy::Auto)
        .unwrap();
    assert_eq!(s.spec.static_choice(), RollupStrategy::GroupingSets);
    let choice = s.spec.fixed_choice(s.spec.fixed_reason().unwrap());
    assert_eq!(choice.strategy, RollupStrategy::GroupingSets);
    assert!(
        choice.reason.contains("\"unique_users\""),
        "{}",
        choice.reason
    );
    assert!(choice.candidates[1].rejected.is_some());
    let mut gs = s.spec.clone();
    gs.strategy(RollupStrategy::GroupingSets).unwrap();
    assert_eq!(s.spec.build(), gs.build());
}

#[test]
fn every_internal_name_is_reserved_exactly() {
    assert_eq!(
        ROLLUP_RESERVED_ALIASES,
        [
            "rollup_grouping",
            "rollup_rank",
            "rollup_grouped",
            "rollup_ranked",
            "rollup_pre"
        ]
    );
    for name in ROLLUP_RESERVED_ALIASES {
        let mut s = sale();
        let reason = invalid(s.spec.metric(name, Agg::count_all()), "alias");
        assert!(reason.contains("reserved"), "{reason}");
        let merchant = s.table.column::<String>("merchant").unwrap();
        invalid(s.spec.dimension_as(name, &merchant), "alias");
        // A base column of that name, as a dimension named after it.
        invalid(
            s.spec.dimension(&s.table.column::<String>(name).unwrap()),
            "alias",
        );
        // Quoted identifiers are case-sensitive: other names.
        let upper = name.to_uppercase();
        let title = format!("R{}", &name[1..]);
        s.spec.metric(&upper, Agg::count_all()).unwrap();
        s.spec.dimension_as(&title, &merchant).unwrap();
    }
}
