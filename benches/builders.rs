//! What building a statement costs: each family's builder (checks, the
//! sea-query statement, rendered SQL and values) against the same statement
//! written by hand with sea-query and rendered the same way
//! ([`BuiltQuery::new`], i.e. `build_any(&PostgresQueryBuilder)`). Both sides
//! build the statement from nothing in every iteration, and the setup checks
//! that they give the same SQL and values, so the ratio is the builders' own
//! overhead.
//!
//! `cargo bench --bench builders --features seed`

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pgpatterns::ops::TopN;
use pgpatterns::sea_query::{
    Alias, Asterisk, Expr, ExprTrait, Func, JoinType, NullOrdering, Order, Query, SelectStatement,
};
use pgpatterns::seed::moves::MovesTables;
use pgpatterns::seed::orders::OrdersTables;
use pgpatterns::seed::sales::SalesTables;
use pgpatterns::seed::shop::ShopTables;
use pgpatterns::{BuiltQuery, LatestStrategy, RollupStrategy, SinceStrategy};
use rust_decimal::Decimal;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap()
}

fn a(name: &str) -> Alias {
    Alias::new(name)
}

/// `SELECT COUNT(*) FROM (inner) AS "matching"`.
fn count_of(inner: SelectStatement) -> BuiltQuery {
    let mut q = Query::select();
    q.expr(Expr::cust("COUNT(*)"))
        .from_subquery(inner, a("matching"));
    BuiltQuery::new(&q)
}

/// Latest status by hand: a LATERAL join to the newest history row.
fn latest_by_hand(status: &str) -> BuiltQuery {
    let mut latest = Query::select();
    latest
        .column((a("order_status"), a("status")))
        .column((a("order_status"), a("created_at")))
        .from(a("order_status"))
        .and_where(Expr::col((a("order_status"), a("order_id"))).equals((a("orders"), a("id"))))
        .order_by((a("order_status"), a("created_at")), Order::Desc)
        .order_by((a("order_status"), a("id")), Order::Desc)
        .limit(1);
    let mut q = Query::select();
    q.column((a("orders"), Asterisk))
        .expr_as(Expr::col((a("latest"), a("status"))), a("latest_status"))
        .expr_as(Expr::col((a("latest"), a("created_at"))), a("latest_at"))
        .from(a("orders"))
        .join_lateral(JoinType::InnerJoin, latest, a("latest"), Expr::cust("TRUE"))
        .and_where(
            Expr::col((a("latest"), a("status"))).eq(Expr::val(status.to_owned()).cast_as("text")),
        );
    count_of(q)
}

/// Since by hand, `Exists`: the root changed or one of four related tables
/// has a changed row.
fn since_exists_by_hand(since: DateTime<Utc>) -> BuiltQuery {
    let naive: NaiveDateTime = since.naive_utc();
    let related = |i: usize, table: &str, on: Expr, tz: bool| {
        let t = format!("t{i}");
        let at = if tz {
            Expr::val(since).cast_as("timestamptz")
        } else {
            Expr::val(naive).cast_as("timestamp")
        };
        let mut sub = Query::select();
        sub.expr(Expr::cust("1"))
            .from_as(a(table), a(&t))
            .and_where(on)
            .and_where(Expr::col((a(&t), a("updated_at"))).gte(at));
        Expr::exists(sub)
    };
    let moves = |c: &str| Expr::col((a("moves"), a(c)));
    let any = moves("updated_at")
        .gte(Expr::val(naive).cast_as("timestamp"))
        .or(related(
            1,
            "move_orders",
            moves("orders_id").equals((a("t1"), a("id"))),
            false,
        ))
        .or(related(
            2,
            "mto_shipments",
            moves("id").equals((a("t2"), a("move_id"))),
            true,
        ))
        .or(related(
            3,
            "mto_service_items",
            moves("id").equals((a("t3"), a("move_id"))),
            true,
        ))
        .or(related(
            4,
            "payment_requests",
            moves("id").equals((a("t4"), a("move_id"))),
            false,
        ));
    let mut q = Query::select();
    q.column((a("moves"), Asterisk))
        .from(a("moves"))
        .and_where(moves("show").eq(Expr::val(true).cast_as("bool")))
        .and_where(moves("available_to_prime_at").is_not_null())
        .and_where(any);
    count_of(q)
}

/// Since by hand, `UnionIn`: the root's own change, the `orders_id` key in
/// one subquery, and the three tables keyed by `move_id` in one UNION.
fn since_union_by_hand(since: DateTime<Utc>) -> BuiltQuery {
    let naive: NaiveDateTime = since.naive_utc();
    let keys = |i: usize, table: &str, key: &str, tz: bool| {
        let t = format!("t{i}");
        let at = if tz {
            Expr::val(since).cast_as("timestamptz")
        } else {
            Expr::val(naive).cast_as("timestamp")
        };
        let mut sub = Query::select();
        sub.column((a(&t), a(key)))
            .from_as(a(table), a(&t))
            .and_where(Expr::col((a(&t), a("updated_at"))).gte(at));
        sub
    };
    let moves = |c: &str| Expr::col((a("moves"), a(c)));
    let mut by_move = keys(2, "mto_shipments", "move_id", true);
    by_move
        .union(
            pgpatterns::sea_query::UnionType::Distinct,
            keys(3, "mto_service_items", "move_id", true),
        )
        .union(
            pgpatterns::sea_query::UnionType::Distinct,
            keys(4, "payment_requests", "move_id", false),
        );
    let any = moves("updated_at")
        .gte(Expr::val(naive).cast_as("timestamp"))
        .or(moves("orders_id").in_subquery(keys(1, "move_orders", "id", false)))
        .or(moves("id").in_subquery(by_move));
    let mut q = Query::select();
    q.column((a("moves"), Asterisk))
        .from(a("moves"))
        .and_where(moves("show").eq(Expr::val(true).cast_as("bool")))
        .and_where(moves("available_to_prime_at").is_not_null())
        .and_where(any);
    count_of(q)
}

/// The rollup by hand: two dimensions, COUNT, AVG and COUNT DISTINCT over
/// `GROUPING SETS ((merchant, device), ())`.
fn rollup_by_hand() -> BuiltQuery {
    let sale = |c: &str| Expr::col((a("sale"), a(c)));
    let mut q = Query::select();
    q.expr_as(sale("merchant"), a("merchant"))
        .expr_as(sale("device"), a("device"))
        .expr_as(sale("id").count(), a("total"))
        .expr_as(Func::avg(sale("charged_amount")), a("avg_charged_amount"))
        .expr_as(Func::count_distinct(sale("user_id")), a("unique_users"))
        .expr_as(
            Func::cust("GROUPING").args([sale("merchant"), sale("device")]),
            a("rollup_grouping"),
        )
        .from(a("sale"))
        .add_group_by([Func::cust("GROUPING SETS")
            .args([
                Expr::tuple([sale("merchant"), sale("device")]),
                Expr::tuple([]),
            ])
            .into()])
        .order_by_expr(Expr::col(a("rollup_grouping")), Order::Asc)
        .order_by_expr_with_nulls(Expr::col(a("merchant")), Order::Asc, NullOrdering::Last)
        .order_by_expr_with_nulls(Expr::col(a("device")), Order::Asc, NullOrdering::Last);
    BuiltQuery::new(&q)
}

/// Top-N by hand: the per-user aggregate, limited, joined to the users.
fn top_n_by_hand(status: &str, since: DateTime<Utc>, n: u64) -> BuiltQuery {
    let o = |c: &str| Expr::col((a("shop_orders"), a(c)));
    let mut inner = Query::select();
    inner
        .expr_as(o("user_id"), a("user_id"))
        .expr_as(Expr::cust("COUNT(*)"), a("fact_count"))
        .expr_as(o("total_amount").sum(), a("fact_sum"))
        .expr_as(
            Func::cust("GROUPING").arg(o("user_id")),
            a("rollup_grouping"),
        )
        .from(a("shop_orders"))
        .and_where(o("status").eq(Expr::val(status.to_owned()).cast_as("text")))
        .and_where(o("created_at").gte(Expr::val(since).cast_as("timestamptz")))
        .add_group_by([o("user_id")])
        .order_by_expr(Expr::col(a("rollup_grouping")), Order::Asc)
        .order_by_expr_with_nulls(Expr::col(a("fact_sum")), Order::Desc, NullOrdering::Last)
        .order_by_expr_with_nulls(Expr::col(a("user_id")), Order::Asc, NullOrdering::Last)
        .limit(n);
    let mut q = Query::select();
    q.column((a("shop_users"), a("id")))
        .expr(Expr::col((a("top"), a("fact_count"))))
        .expr(Expr::col((a("top"), a("fact_sum"))))
        .from_subquery(inner, a("top"))
        .join(
            JoinType::InnerJoin,
            a("shop_users"),
            Expr::col((a("shop_users"), a("id"))).equals((a("top"), a("user_id"))),
        )
        .order_by_expr_with_nulls(
            Expr::col((a("top"), a("fact_sum"))),
            Order::Desc,
            NullOrdering::Last,
        )
        .order_by((a("shop_users"), a("id")), Order::Asc);
    BuiltQuery::new(&q)
}

/// Panics unless both give the same SQL and values: the comparison is only
/// fair between equal statements.
fn same(label: &str, ours: &BuiltQuery, hand: &BuiltQuery) {
    assert_eq!(ours.sql(), hand.sql(), "{label}: SQL differs");
    assert_eq!(ours.values(), hand.values(), "{label}: values differ");
}

fn builders(c: &mut Criterion) {
    let orders = OrdersTables::default();
    let moves = MovesTables::default();
    let sales = SalesTables::sample();
    let shop = ShopTables::default();

    // The specs are made once; what is measured is `build()` /
    // `count_query()`: checks, the statement, its SQL and values.
    let latest_spec = orders
        .latest()
        .status_eq("Complete")
        .strategy(LatestStrategy::Lateral);
    let latest = || latest_spec.count_query();
    let exists_spec = moves
        .seed_graph()
        .since(now())
        .strategy(SinceStrategy::Exists);
    let union_spec = exists_spec.clone().strategy(SinceStrategy::UnionIn);
    let since = |s: SinceStrategy| match s {
        SinceStrategy::Exists => exists_spec.count_query(),
        _ => union_spec.count_query(),
    };
    let rollup_spec = sales.dashboard(true).strategy(RollupStrategy::GroupingSets);
    let rollup = || rollup_spec.build();
    let top_spec =
        TopN::<i64, Decimal>::new(&shop.user_id, &shop.order_user_id, &shop.total_amount, 5)
            .window_since(&shop.order_created_at, now())
            .where_eq(&shop.status, "completed");
    let top = || top_spec.build();

    same("latest", &latest().unwrap(), &latest_by_hand("Complete"));
    same(
        "since exists",
        &since(SinceStrategy::Exists).unwrap(),
        &since_exists_by_hand(now()),
    );
    same(
        "since union",
        &since(SinceStrategy::UnionIn).unwrap(),
        &since_union_by_hand(now()),
    );
    same("rollup", &rollup().unwrap(), &rollup_by_hand());
    same(
        "top-n",
        &top().unwrap(),
        &top_n_by_hand("completed", now(), 5),
    );

    let mut g = c.benchmark_group("latest count (Lateral)");
    g.bench_function("pgpatterns", |b| b.iter(|| black_box(latest().unwrap())));
    g.bench_function("sea-query by hand", |b| {
        b.iter(|| black_box(latest_by_hand(black_box("Complete"))))
    });
    g.finish();

    let mut g = c.benchmark_group("since count, 4 relations (Exists)");
    g.bench_function("pgpatterns", |b| {
        b.iter(|| black_box(since(SinceStrategy::Exists).unwrap()))
    });
    g.bench_function("sea-query by hand", |b| {
        b.iter(|| black_box(since_exists_by_hand(black_box(now()))))
    });
    g.finish();

    let mut g = c.benchmark_group("since count, 4 relations (UnionIn)");
    g.bench_function("pgpatterns", |b| {
        b.iter(|| black_box(since(SinceStrategy::UnionIn).unwrap()))
    });
    g.bench_function("sea-query by hand", |b| {
        b.iter(|| black_box(since_union_by_hand(black_box(now()))))
    });
    g.finish();

    let mut g = c.benchmark_group("rollup, 2 dims + COUNT DISTINCT (GroupingSets)");
    g.bench_function("pgpatterns", |b| b.iter(|| black_box(rollup().unwrap())));
    g.bench_function("sea-query by hand", |b| {
        b.iter(|| black_box(rollup_by_hand()))
    });
    g.finish();

    let mut g = c.benchmark_group("ops TopN");
    g.bench_function("pgpatterns", |b| b.iter(|| black_box(top().unwrap())));
    g.bench_function("sea-query by hand", |b| {
        b.iter(|| black_box(top_n_by_hand(black_box("completed"), now(), 5)))
    });
    g.finish();
}

criterion_group!(benches, builders);
criterion_main!(benches);
