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
    let merchant = Dim::new(&table.column::<String>("merchant").unwrap());
    let device = Dim::new(&table.column::<String>("device").unwrap());
    let total = Metric::new("total", Agg::count_all());
    let spec = Rollup::new(&table)
        .dimension(&merchant)
        .dimension(&device)
        .metric(&total);
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

fn sql(r: &Rollup) -> String {
    r.build().unwrap().sql().to_owned()
}

#[test]
fn plain_group_by_without_grouping_entries() {
    let s = sale();
    assert_eq!(
        sql(&s.spec),
        format!(r#"{SELECT} GROUP BY "sale"."merchant", "sale"."device" {ORDER}"#)
    );
}

#[test]
fn rollup_cube_and_grouping_sets_snapshots() {
    let s = sale();
    let r = s.spec.rollup((&s.device, &s.merchant));
    assert_eq!(
        sql(&r),
        format!(r#"{SELECT} GROUP BY ROLLUP("sale"."device", "sale"."merchant") {ORDER}"#)
    );

    let s = sale();
    let r = s.spec.cube([&s.merchant, &s.device]).total_first();
    assert_eq!(
        sql(&r),
        format!(
            r#"{SELECT} GROUP BY CUBE("sale"."merchant", "sale"."device") ORDER BY "rollup_grouping" DESC, "merchant" ASC NULLS LAST, "device" ASC NULLS LAST"#
        )
    );

    let s = sale();
    let r = s
        .spec
        .grouping_sets(((&s.merchant,), (&s.merchant, &s.device), ()));
    assert_eq!(
        sql(&r),
        format!(
            r#"{SELECT} GROUP BY GROUPING SETS(("sale"."merchant"), ("sale"."merchant", "sale"."device"), ()) {ORDER}"#
        )
    );
    assert_eq!(
        r.grouping_sets_expanded(),
        vec![
            vec![s.merchant.alias().clone()],
            vec![s.merchant.alias().clone(), s.device.alias().clone()],
            vec![],
        ]
    );

    // Combined entries; an uncovered dimension becomes a plain entry.
    let s = sale();
    let r = s.spec.rollup(&s.device);
    assert_eq!(
        sql(&r),
        format!(r#"{SELECT} GROUP BY "sale"."merchant", ROLLUP("sale"."device") {ORDER}"#)
    );
}

#[test]
fn grouping_steps_add_their_dimensions_in_first_named_order() {
    // No .dimension(): rollup adds them, in the order named.
    let s = sale();
    let r = Rollup::new(&s.table)
        .metric(&s.total)
        .rollup((&s.merchant, &s.device));
    assert_eq!(sql(&r), sql(&s.spec.rollup((&s.merchant, &s.device))));
    let r = Rollup::new(&s.table)
        .metric(&s.total)
        .rollup((&s.device, &s.merchant));
    assert_eq!(
        sql(&r),
        r#"SELECT "sale"."device" AS "device", "sale"."merchant" AS "merchant", COUNT(*) AS "total", GROUPING("sale"."device", "sale"."merchant") AS "rollup_grouping" FROM "sale" GROUP BY ROLLUP("sale"."device", "sale"."merchant") ORDER BY "rollup_grouping" ASC, "device" ASC NULLS LAST, "merchant" ASC NULLS LAST"#
    );
    // A dimension named again (or added again) is the same column.
    let s = sale();
    let again = s
        .spec
        .clone()
        .dimension(&s.merchant)
        .metric(&s.total)
        .rollup((&s.merchant, &s.device))
        .dimension(&s.device.clone());
    assert_eq!(
        sql(&again),
        format!(r#"{SELECT} GROUP BY ROLLUP("sale"."merchant", "sale"."device") {ORDER}"#)
    );
}

/// A report over a text and an int4 dimension (mixed types), grouped as
/// the old id lists grouped it.
#[test]
fn tuples_of_mixed_types_group_like_lists_of_dimensions() {
    let t = Table::new("sale").unwrap();
    let merchant = Dim::new(&t.column::<String>("merchant").unwrap());
    let year = Dim::new(&t.column::<i32>("year").unwrap());
    let total = Metric::new("total", Agg::count_all());
    let base = Rollup::new(&t)
        .dimension(&merchant)
        .dimension(&year)
        .metric(&total);
    let select = r#"SELECT "sale"."merchant" AS "merchant", "sale"."year" AS "year", COUNT(*) AS "total", GROUPING("sale"."merchant", "sale"."year") AS "rollup_grouping" FROM "sale""#;
    let order =
        r#"ORDER BY "rollup_grouping" ASC, "merchant" ASC NULLS LAST, "year" ASC NULLS LAST"#;
    let erased = vec![year.erase(), merchant.erase()];

    let want = format!(r#"{select} GROUP BY ROLLUP("sale"."year", "sale"."merchant") {order}"#);
    assert_eq!(sql(&base.clone().rollup((&year, &merchant))), want);
    assert_eq!(sql(&base.clone().rollup(erased.clone())), want);
    // Without .dimension(), the tuple adds them in its own order, as the
    // list does.
    let by_tuple = Rollup::new(&t).metric(&total).rollup((&merchant, &year));
    assert_eq!(
        sql(&by_tuple),
        format!(r#"{select} GROUP BY ROLLUP("sale"."merchant", "sale"."year") {order}"#)
    );
    assert_eq!(
        by_tuple.build().unwrap(),
        Rollup::new(&t)
            .metric(&total)
            .rollup(vec![merchant.erase(), year.erase()])
            .build()
            .unwrap()
    );

    let want = format!(r#"{select} GROUP BY CUBE("sale"."year", "sale"."merchant") {order}"#);
    assert_eq!(sql(&base.clone().cube((&year, &merchant))), want);
    assert_eq!(sql(&base.clone().cube(erased.clone())), want);

    let want = format!(
        r#"{select} GROUP BY GROUPING SETS(("sale"."merchant"), ("sale"."merchant", "sale"."year"), ()) {order}"#
    );
    let by_tuples = base
        .clone()
        .grouping_sets(((&merchant,), (&merchant, &year), ()));
    let by_lists = base.clone().grouping_sets(vec![
        vec![merchant.erase()],
        vec![merchant.erase(), year.erase()],
        vec![],
    ]);
    let by_array = base.clone().grouping_sets([
        vec![merchant.erase()],
        vec![merchant.erase(), year.erase()],
        vec![],
    ]);
    assert_eq!(sql(&by_tuples), want);
    assert_eq!(by_tuples.build().unwrap(), by_lists.build().unwrap());
    assert_eq!(by_tuples.build().unwrap(), by_array.build().unwrap());
    assert_eq!(
        by_tuples.grouping_sets_expanded(),
        vec![
            vec![merchant.alias().clone()],
            vec![merchant.alias().clone(), year.alias().clone()],
            vec![],
        ]
    );

    // A plain entry and a rollup of the other type.
    let want = format!(r#"{select} GROUP BY "sale"."merchant", ROLLUP("sale"."year") {order}"#);
    assert_eq!(
        sql(&base.clone().group_by(&merchant).rollup((&year,))),
        want
    );
    // merchant named by no entry: the same plain entry.
    assert_eq!(sql(&base.rollup(&year)), want);
}

#[test]
fn with_total_having_filters_and_limits_snapshot() {
    let s = sale();
    let amount = s.table.column::<i32>("charged_amount").unwrap();
    let avg = Metric::new(
        "avg_big",
        Agg::<Decimal>::avg(&amount).filter(amount.gt(100)),
    );
    let r = s
        .spec
        .metric(&avg)
        .filter(amount.gte(1))
        .with_total()
        .having(s.total.gt(1i64))
        .rank_by(&avg, Order::Desc);
    let q = r.build().unwrap();
    assert_eq!(
        q.sql(),
        r#"SELECT "sale"."merchant" AS "merchant", "sale"."device" AS "device", COUNT(*) AS "total", AVG("sale"."charged_amount") FILTER (WHERE "sale"."charged_amount" > CAST($1 AS int4)) AS "avg_big", GROUPING("sale"."merchant", "sale"."device") AS "rollup_grouping" FROM "sale" WHERE "sale"."charged_amount" >= CAST($2 AS int4) GROUP BY GROUPING SETS(("sale"."merchant", "sale"."device"), ()) HAVING COUNT(*) > CAST($3 AS int8) ORDER BY "rollup_grouping" ASC, "avg_big" DESC NULLS LAST, "merchant" ASC NULLS LAST, "device" ASC NULLS LAST"#
    );
    assert_eq!(q.values().0.len(), 3);

    let q = r.limit_per_level(3).build().unwrap();
    assert!(q.sql().starts_with(
        r#"SELECT "merchant", "device", "total", "avg_big", "rollup_grouping" FROM (SELECT *, ROW_NUMBER() OVER ( PARTITION BY "rollup_grouping" ORDER BY "avg_big" DESC NULLS LAST, "merchant" ASC NULLS LAST, "device" ASC NULLS LAST ) AS "rollup_rank" FROM (SELECT "#
    ), "{q}");
    assert!(q.sql().ends_with(
        r#") AS "rollup_grouped") AS "rollup_ranked" WHERE "rollup_rank" <= CAST($4 AS int8) ORDER BY "rollup_grouping" ASC, "avg_big" DESC NULLS LAST, "merchant" ASC NULLS LAST, "device" ASC NULLS LAST"#
    ), "{q}");

    // One grouping set: a plain top-N sort.
    let one = sale();
    let r = one.spec.rank_by(&one.total, Order::Desc).limit_per_level(5);
    assert!(sql(&r).ends_with(
        r#"ORDER BY "rollup_grouping" ASC, "total" DESC NULLS LAST, "merchant" ASC NULLS LAST, "device" ASC NULLS LAST LIMIT $1"#
    ));
}

#[test]
fn steps_in_any_order_build_the_same_statement() {
    let s = sale();
    let amount = s.table.column::<i32>("charged_amount").unwrap();
    let avg = Metric::new(
        "avg_big",
        Agg::<Decimal>::avg(&amount).filter(amount.gt(100)),
    );
    for strategy in [
        RollupStrategy::GroupingSets,
        RollupStrategy::PreAggregate,
        RollupStrategy::Auto,
    ] {
        let forward = Rollup::new(&s.table)
            .dimension(&s.merchant)
            .dimension(&s.device)
            .metric(&s.total)
            .metric(&avg)
            .filter(amount.gte(1))
            .rollup((&s.merchant, &s.device))
            .having(s.total.gt(1i64))
            .rank_by(&avg, Order::Desc)
            .limit_per_level(3)
            .total_first()
            .strategy(strategy);
        // Every step that is not a dimension or a metric first, ranking by
        // a metric added later; dimensions and metrics keep their own
        // relative order (it is the order of the output columns).
        let backward = Rollup::new(&s.table)
            .strategy(strategy)
            .total_first()
            .limit_per_level(3)
            .rank_by(&avg, Order::Desc)
            .having(s.total.gt(1i64))
            .filter(amount.gte(1))
            .rollup((&s.merchant, &s.device))
            .metric(&s.total)
            .dimension(&s.device)
            .metric(&avg)
            .dimension(&s.merchant);
        backward.check().unwrap();
        let (f, b) = (forward.build().unwrap(), backward.build().unwrap());
        assert_eq!(f.sql(), b.sql(), "{strategy:?}");
        assert_eq!(f.values(), b.values(), "{strategy:?}");
        // The metric's FILTER value, WHERE, HAVING, the limit; the
        // pre-aggregated form filters the average's sum and count.
        let values = match strategy {
            RollupStrategy::GroupingSets => 4,
            _ => 5,
        };
        assert_eq!(f.values().0.len(), values, "{strategy:?}");
        assert_eq!(f, b);
        assert_eq!(
            BuiltQuery::new(&forward.to_statement().unwrap()),
            BuiltQuery::new(&backward.to_statement().unwrap()),
        );
        assert_eq!(
            forward.grouping_sets_expanded(),
            backward.grouping_sets_expanded()
        );
    }
}

#[test]
fn no_dimensions_is_one_total_row() {
    let t = Table::new("sale").unwrap();
    let r = Rollup::new(&t).metric(&Metric::new("n", Agg::count_all()));
    assert_eq!(
        sql(&r),
        r#"SELECT COUNT(*) AS "n", 0 AS "rollup_grouping" FROM "sale" ORDER BY "rollup_grouping" ASC"#
    );
}

pub(super) fn invalid(r: Result<impl std::fmt::Debug>, field: &str) -> String {
    match r {
        Err(Error::InvalidSpec { field: f, reason }) if f == field => reason,
        other => panic!("expected an invalid {field}, got {other:?}"),
    }
}

/// The report refuses to build (and to give its statement) with the same
/// error `check` returns; the reason.
pub(super) fn refused(r: &Rollup, field: &str) -> String {
    let reason = invalid(r.check(), field);
    assert_eq!(invalid(r.build(), field), reason);
    assert_eq!(invalid(r.to_statement(), field), reason);
    reason
}

#[test]
fn bad_input_is_a_typed_error() {
    let s = sale();
    let spec = || s.spec.clone();
    // rollup / cube / grouping sets without dimensions
    refused(&spec().rollup(()), "rollup");
    refused(&spec().cube(Vec::<AnyDim>::new()), "cube");
    refused(
        &spec().grouping_sets(Vec::<Vec<AnyDim>>::new()),
        "grouping_sets",
    );
    // a dimension named twice
    let reason = refused(&spec().rollup((&s.merchant, &s.merchant)), "rollup");
    assert!(reason.contains("named twice"), "{reason}");
    refused(
        &spec().grouping_sets(((&s.device, &s.device),)),
        "grouping_sets",
    );
    // duplicate aliases, also against the level column
    let merchant = s.table.column::<String>("merchant").unwrap();
    let reason = refused(&spec().dimension(&Dim::new(&merchant)), "alias");
    assert!(reason.contains("used twice"), "{reason}");
    refused(
        &spec().metric(&Metric::new("device", Agg::count_all())),
        "alias",
    );
    refused(
        &spec().metric(&Metric::new(GROUPING_ALIAS, Agg::count_all())),
        "alias",
    );
    // … while the same handle added again is no change at all.
    let again = spec().dimension(&s.merchant).metric(&s.total);
    assert_eq!(again.build().unwrap(), s.spec.build().unwrap());
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
    let reason = refused(
        &spec().dimension(&Dim::new(&other.column::<String>("x").unwrap())),
        "dimension",
    );
    assert!(reason.contains("not to the report's base"), "{reason}");
    refused(
        &spec().metric(&Metric::new(
            "m",
            Agg::count(other.column::<i64>("x").unwrap()),
        )),
        "metric",
    );
    // … also when named by a grouping step, which adds it.
    refused(
        &spec().rollup(&Dim::new(&other.column::<String>("x").unwrap())),
        "dimension",
    );
    // a handle of another report: not one of this report's columns. Named
    // by a grouping step it is added, and its name is taken here; ranked
    // by, it is not a metric of this report.
    let t = sale();
    let reason = refused(&spec().rollup(&t.merchant), "alias");
    assert!(reason.contains("used twice"), "{reason}");
    let reason = refused(&spec().rank_by(&t.total, Order::Asc), "rank_by");
    assert!(reason.contains("\"total\" is not a metric"), "{reason}");
    refused(
        &spec().rank_by(&s.total, Order::Field(sea_query::Values(vec![]))),
        "rank_by",
    );
    // limits
    refused(&spec().limit_per_level(0), "limit_per_level");
    refused(&spec().limit_per_level(-1), "limit_per_level");
    // invalid identifiers: the handle is made, the report refuses it
    for r in [
        spec().metric(&Metric::new("", Agg::count_all())),
        spec().dimension(&Dim::named("", merchant.clone())),
        spec().rollup(&Dim::named("", merchant.clone())),
    ] {
        assert!(
            matches!(r.check(), Err(Error::InvalidIdentifier { .. })),
            "{:?}",
            r.check()
        );
        assert!(matches!(r.build(), Err(Error::InvalidIdentifier { .. })));
    }
    // a combination repeating a grouping set, in either order
    let s = sale();
    refused(
        &s.spec.clone().rollup((&s.merchant, &s.device)).with_total(),
        "grouping",
    );
    refused(
        &s.spec.clone().with_total().rollup((&s.merchant, &s.device)),
        "grouping",
    );
    // the same set given twice
    refused(
        &s.spec
            .clone()
            .grouping_sets(((&s.merchant,), (&s.merchant,))),
        "grouping",
    );
    // from_query needs a bare alias
    let q = sea_query::Query::select().to_owned();
    refused(
        &Rollup::from_query(q.clone(), &Table::in_schema("s", "x").unwrap()),
        "alias",
    );
    refused(
        &Rollup::from_query(q, &Table::new("x").unwrap().aliased("y").unwrap()),
        "alias",
    );
}

#[test]
fn the_first_problem_is_reported() {
    let s = sale();
    let r = s
        .spec
        .limit_per_level(0)
        .metric(&Metric::new("device", Agg::count_all()))
        .rollup(());
    // The first step's problem, not the later ones'.
    let reason = refused(&r, "limit_per_level");
    assert_eq!(reason, "must be at least 1, got 0");
}

#[test]
fn cube_is_limited_to_twelve_dimensions_and_reports_to_31() {
    let t = Table::new("wide").unwrap();
    let dims: Vec<Dim<i64>> = (0..13)
        .map(|i| Dim::new(&t.column::<i64>(format!("d{i}")).unwrap()))
        .collect();
    let erased: Vec<AnyDim> = dims.iter().map(Dim::erase).collect();
    let r = dims.iter().fold(Rollup::new(&t), |r, d| r.dimension(d));
    let reason = refused(&r.clone().cube(erased.clone()), "cube");
    assert!(reason.contains("8192"), "{reason}");
    let twelve = r.cube(erased[..12].to_vec());
    twelve.check().unwrap();
    // 12 cube dims × a rollup of one more: 8192 sets, over PostgreSQL's limit
    refused(&twelve.rollup(&dims[12]), "grouping");

    let r = (0..MAX_DIMENSIONS).fold(Rollup::new(&t), |r, i| {
        r.dimension(&Dim::new(&t.column::<i64>(format!("d{i}")).unwrap()))
    });
    r.check().unwrap();
    refused(
        &r.dimension(&Dim::new(&t.column::<i64>("one_more").unwrap())),
        "dimension",
    );
}

#[test]
fn expression_dimensions_and_hostile_aliases_are_quoted() {
    let t = Table::new("sale").unwrap();
    let amount = t.column::<i32>("charged_amount").unwrap();
    let bucket = Dim::named(
        r#"bucket"; DROP TABLE sale; --"#,
        TypedExpr::<i32>::new(amount.expr().div(Expr::cust("100"))),
    );
    let r = Rollup::new(&t).dimension(&bucket).with_total();
    let q = r.build().unwrap();
    assert_eq!(
        q.sql(),
        r#"SELECT "sale"."charged_amount" / (100) AS "bucket""; DROP TABLE sale; --", GROUPING("sale"."charged_amount" / (100)) AS "rollup_grouping" FROM "sale" GROUP BY GROUPING SETS(("sale"."charged_amount" / (100)), ()) ORDER BY "rollup_grouping" ASC, "bucket""; DROP TABLE sale; --" ASC NULLS LAST"#
    );
    assert_eq!(bucket.alias().as_str(), r#"bucket"; DROP TABLE sale; --"#);
    // A bound value inside a dimension would be three different parameters.
    let b2 = Dim::named(
        "b2",
        TypedExpr::<i32>::new(amount.expr().div(100i32.param())),
    );
    let reason = refused(&r.clone().dimension(&b2), "dimension");
    assert!(reason.contains("from_query"), "{reason}");
    refused(&r.rollup(&b2), "dimension");
}

fn pre_aggregate(s: &mut Sale) -> (Metric<Decimal>, Metric<i64>) {
    let amount = s.table.column::<i32>("charged_amount").unwrap();
    let avg = Metric::new(
        "avg_big",
        Agg::<Decimal>::avg(&amount).filter(amount.gt(100)),
    );
    let sum = Metric::new("sum", Agg::sum(&amount));
    s.spec = s
        .spec
        .clone()
        .metric(&avg)
        .metric(&sum)
        .filter(amount.gte(1));
    (avg, sum)
}

#[test]
fn pre_aggregate_snapshot() {
    let mut s = sale();
    let (avg, sum) = pre_aggregate(&mut s);
    let r = s
        .spec
        .rollup((&s.merchant, &s.device))
        .having(s.total.gt(1i64).and(sum.lt(1000i64)))
        .rank_by(&avg, Order::Desc)
        .strategy(RollupStrategy::PreAggregate);
    assert_eq!(r.chosen_strategy(), RollupStrategy::PreAggregate);
    let q = r.build().unwrap();
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
    let q = r.limit_per_level(2).build().unwrap();
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
    let k = Dim::new(&t.column::<i64>("k").unwrap());
    let x8 = t.column::<i64>("x8").unwrap();
    let f4 = t.column::<f32>("f4").unwrap();
    let r = Rollup::new(&t)
        .dimension(&k)
        .metric(&Metric::new("s8", Agg::sum(&x8)))
        .metric(&Metric::new("lo", Agg::min(&x8)))
        .metric(&Metric::new("hi", Agg::max(&x8)))
        .metric(&Metric::new("n", Agg::count(&x8)))
        .metric(&Metric::new("favg", Agg::avg(&f4)))
        .with_total()
        .strategy(RollupStrategy::PreAggregate);
    let sql = sql(&r);
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
    let r = r.strategy(RollupStrategy::Auto);
    assert!(r
        .build()
        .unwrap()
        .sql()
        .contains("GROUPING SETS((\"t\".\"k\"), ())"));
    assert!(r.fixed_reason().unwrap().contains("favg"));
}

#[test]
fn pre_aggregate_without_dimensions_and_over_a_callers_query() {
    let t = Table::new("sale").unwrap();
    let n = Metric::new("n", Agg::count_all());
    let r = Rollup::new(&t)
        .metric(&n)
        .strategy(RollupStrategy::PreAggregate);
    assert_eq!(
        sql(&r),
        r#"SELECT CAST(COALESCE(SUM("rollup_pre"."m0"), 0) AS int8) AS "n", 0 AS "rollup_grouping" FROM (SELECT COUNT(*) AS "m0" FROM "sale") AS "rollup_pre" ORDER BY "rollup_grouping" ASC"#
    );

    let base = Query::select()
        .column(sea_query::Asterisk)
        .from(t.table_ref())
        .and_where(t.column::<i32>("charged_amount").unwrap().gt(5))
        .to_owned();
    let f = Table::new("f").unwrap();
    let m = Dim::new(&f.column::<String>("merchant").unwrap());
    // The same metric handle, in a second report.
    let r = Rollup::from_query(base, &f)
        .dimension(&m)
        .metric(&n)
        .rollup(&m)
        .strategy(RollupStrategy::PreAggregate);
    assert_eq!(
        sql(&r),
        r#"SELECT "rollup_pre"."d0" AS "merchant", CAST(COALESCE(SUM("rollup_pre"."m0"), 0) AS int8) AS "n", GROUPING("rollup_pre"."d0") AS "rollup_grouping" FROM (SELECT "f"."merchant" AS "d0", COUNT(*) AS "m0" FROM (SELECT * FROM "sale" WHERE "sale"."charged_amount" > CAST($1 AS int4)) AS "f" GROUP BY "f"."merchant") AS "rollup_pre" GROUP BY ROLLUP("rollup_pre"."d0") ORDER BY "rollup_grouping" ASC, "merchant" ASC NULLS LAST"#
    );
}

#[test]
fn pre_aggregate_refuses_what_it_cannot_decompose() {
    // COUNT(DISTINCT) before choosing the strategy …
    let s = sale();
    let users = Metric::new(
        "users",
        Agg::count_distinct(s.table.column::<i32>("user_id").unwrap()),
    );
    let before = s
        .spec
        .clone()
        .metric(&users)
        .with_total()
        .strategy(RollupStrategy::PreAggregate);
    let reason = refused(&before, "strategy");
    assert!(
        reason.contains("\"users\"") && reason.contains("COUNT(DISTINCT"),
        "{reason}"
    );
    // The report keeps the strategy it was given, and refuses to build.
    assert_eq!(before.chosen_strategy(), RollupStrategy::PreAggregate);
    // … and after: the same refusal, whichever step came first.
    let after = s
        .spec
        .clone()
        .strategy(RollupStrategy::PreAggregate)
        .with_total()
        .metric(&users);
    assert_eq!(refused(&after, "strategy"), reason);
    // Another strategy computes it.
    for other in [RollupStrategy::GroupingSets, RollupStrategy::Auto] {
        assert_eq!(
            after.clone().strategy(other).build().unwrap(),
            s.spec.clone().metric(&users).with_total().build().unwrap(),
            "{other:?}"
        );
    }

    // HAVING on something the partials do not have, before or after.
    let s = sale();
    let custom = || Expr::cust("COUNT(*) > 1");
    let before = s
        .spec
        .clone()
        .with_total()
        .having(custom())
        .strategy(RollupStrategy::PreAggregate);
    let reason = refused(&before, "strategy");
    assert!(reason.contains("HAVING condition 1"), "{reason}");
    let after = s
        .spec
        .clone()
        .with_total()
        .strategy(RollupStrategy::PreAggregate)
        .having(custom());
    // Added after choosing PreAggregate: refused too (it no longer falls
    // back to GroupingSets).
    assert_eq!(refused(&after, "strategy"), reason);
    assert_eq!(
        after
            .clone()
            .strategy(RollupStrategy::GroupingSets)
            .build()
            .unwrap(),
        s.spec
            .clone()
            .with_total()
            .having(custom())
            .build()
            .unwrap()
    );
    let amount = s.table.column::<i32>("charged_amount").unwrap();
    let max = Expr::from(sea_query::Func::max(amount.expr())).gt(3);
    refused(
        &s.spec
            .clone()
            .with_total()
            .having(max.clone())
            .strategy(RollupStrategy::PreAggregate),
        "strategy",
    );
    // The second condition is the one it cannot rewrite.
    let reason = refused(
        &s.spec
            .clone()
            .strategy(RollupStrategy::PreAggregate)
            .with_total()
            .having(s.total.gt(1i64))
            .having(max),
        "strategy",
    );
    assert!(reason.contains("HAVING condition 2"), "{reason}");

    // Conditions over metrics, dimensions, values and scalar functions are
    // rewritten.
    let s = sale();
    let r = s
        .spec
        .with_total()
        .having(
            Expr::from(sea_query::Func::coalesce([s.total.expr(), 0i64.param()]))
                .gt(1)
                .or(s.merchant.expr().is_null())
                .and(s.total.expr().cast_as("int4").ne(2)),
        )
        .strategy(RollupStrategy::PreAggregate);
    let sql = sql(&r);
    assert!(sql.contains(r#"HAVING (COALESCE(CAST(COALESCE(SUM("rollup_pre"."m0"), 0) AS int8), CAST($1 AS int8)) > $2 OR "rollup_pre"."d0" IS NULL) AND CAST(CAST(COALESCE(SUM("rollup_pre"."m0"), 0) AS int8) AS int4) <> $3"#), "{sql}");
}

#[test]
fn pre_aggregate_and_count_distinct_are_refused_in_either_order() {
    let s = sale();
    let users = Metric::new(
        "unique_users",
        Agg::count_distinct(s.table.column::<i32>("user_id").unwrap()),
    );
    let first = Rollup::new(&s.table)
        .strategy(RollupStrategy::PreAggregate)
        .rollup((&s.merchant, &s.device))
        .metric(&users);
    let last = Rollup::new(&s.table)
        .metric(&users)
        .rollup((&s.merchant, &s.device))
        .strategy(RollupStrategy::PreAggregate);
    let a = refused(&first, "strategy");
    let b = refused(&last, "strategy");
    assert_eq!(a, b);
    assert!(a.contains("\"unique_users\""), "{a}");
    assert_eq!(
        format!("{:?}", first.build().unwrap_err()),
        format!("{:?}", last.build().unwrap_err())
    );
    // A row builder refuses rows of a report that refuses to build.
    invalid(first.row_builder().roll_up(&s.merchant).build(), "strategy");
}

#[test]
fn auto_without_a_database_follows_its_static_rule() {
    // Decomposable and several grouping sets: PreAggregate.
    let s = sale();
    let r = s.spec.with_total().strategy(RollupStrategy::Auto);
    assert_eq!(r.chosen_strategy(), RollupStrategy::Auto);
    assert!(sql(&r).contains(r#"AS "rollup_pre""#));
    // One grouping set: a plain GROUP BY, already parallel.
    let s = sale();
    let r = s.spec.strategy(RollupStrategy::Auto);
    assert_eq!(r.static_choice(), RollupStrategy::GroupingSets);
    assert!(r.fixed_reason().unwrap().contains("one grouping set"));
    // COUNT(DISTINCT): GroupingSets, and the reason names the metric.
    let s = sale();
    let users = s.table.column::<i32>("user_id").unwrap();
    let r = s
        .spec
        .metric(&Metric::new("unique_users", Agg::count_distinct(&users)))
        .with_total()
        .strategy(RollupStrategy::Auto);
    r.check().unwrap();
    assert_eq!(r.static_choice(), RollupStrategy::GroupingSets);
    let choice = r.fixed_choice(r.fixed_reason().unwrap());
    assert_eq!(choice.strategy, RollupStrategy::GroupingSets);
    assert!(
        choice.reason.contains("\"unique_users\""),
        "{}",
        choice.reason
    );
    assert!(choice.candidates[1].rejected.is_some());
    let gs = r.clone().strategy(RollupStrategy::GroupingSets);
    assert_eq!(r.build().unwrap(), gs.build().unwrap());
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
        let s = sale();
        let reason = refused(
            &s.spec.clone().metric(&Metric::new(name, Agg::count_all())),
            "alias",
        );
        assert!(reason.contains("reserved"), "{reason}");
        let merchant = s.table.column::<String>("merchant").unwrap();
        refused(
            &s.spec.clone().dimension(&Dim::named(name, &merchant)),
            "alias",
        );
        // A base column of that name, as a dimension named after it.
        refused(
            &s.spec
                .clone()
                .dimension(&Dim::new(&s.table.column::<String>(name).unwrap())),
            "alias",
        );
        // Quoted identifiers are case-sensitive: other names.
        let upper = name.to_uppercase();
        let title = format!("R{}", &name[1..]);
        s.spec
            .metric(&Metric::new(&upper, Agg::count_all()))
            .dimension(&Dim::named(&title, &merchant))
            .check()
            .unwrap();
    }
}
