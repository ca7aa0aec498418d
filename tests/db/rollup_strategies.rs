//! Rollup strategies against a real server: `PreAggregate` and `Auto` return
//! exactly `GroupingSets`' rows — values, scale of every `numeric`, types,
//! levels and order — on random data with NULL dimensions, ties, empty
//! tables, filters matching nothing, `HAVING`, ranking and limits per level,
//! for every grouping shape and int4 / int8 / numeric metrics; and `Auto`
//! picks `GroupingSets` for `COUNT(DISTINCT)` and `PreAggregate` when the
//! detail groups are few, saying why.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use pgpatterns::sea_query::{ExprTrait, Order, Value};
use pgpatterns::seed::sales::{self, SalesSeed};
use pgpatterns::{
    Agg, BuiltQuery, Dim, Error, Executor, Metric, Rollup, RollupRow, RollupStrategy, SqlType,
    StrategyCache, Table,
};
use rust_decimal::Decimal;

use crate::rollup::{shapes, Ids};
use crate::support::{client, schema, with_sync_client, Rng};

#[derive(Debug, Clone)]
struct Fact {
    a: Option<String>,
    b: Option<i32>,
    c: Option<bool>,
    amount: Option<i64>,
    qty: Option<i32>,
    price: Option<Decimal>,
    flag: bool,
}

fn facts(seed: u64) -> Vec<Fact> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let n = if seed.is_multiple_of(5) {
        0
    } else {
        rng.below(80)
    };
    let prices = ["1.5", "2.25", "-0.125", "3", "0.0001", "100"];
    (0..n)
        .map(|_| Fact {
            a: [Some("x"), Some("y"), Some("it's"), None][rng.below(4) as usize].map(str::to_owned),
            b: [Some(1), Some(2), None][rng.below(3) as usize],
            c: [Some(true), Some(false), None][rng.below(3) as usize],
            amount: (rng.below(8) > 0).then(|| rng.below(1000) as i64 - 300),
            // Few distinct quantities: ties in the ranking metric.
            qty: (rng.below(6) > 0).then(|| rng.below(4) as i32),
            price: (rng.below(5) > 0)
                .then(|| Decimal::from_str(prices[rng.below(6) as usize]).unwrap()),
            flag: rng.below(2) == 0,
        })
        .collect()
}

const CREATE: &str = "CREATE TABLE facts (a text, b int4, c bool, amount int8, qty int4, price numeric, flag bool NOT NULL)";

async fn load(client: &tokio_postgres::Client, rows: &[Fact]) {
    client.batch_execute("TRUNCATE facts").await.unwrap();
    for f in rows {
        let q = BuiltQuery::fixed_with(
            "INSERT INTO facts (a, b, c, amount, qty, price, flag) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [
                f.a.clone()
                    .map_or_else(String::null_value, String::into_value),
                f.b.map_or_else(i32::null_value, i32::into_value),
                f.c.map_or_else(bool::null_value, bool::into_value),
                f.amount.map_or_else(i64::null_value, i64::into_value),
                f.qty.map_or_else(i32::null_value, i32::into_value),
                f.price.map_or_else(Decimal::null_value, Decimal::into_value),
                f.flag.into_value(),
            ],
        );
        q.execute(client).await.unwrap();
    }
    client.batch_execute("ANALYZE facts").await.unwrap();
}

/// Decomposable metrics over int4, int8 and numeric columns.
struct Handles {
    a: Dim<String>,
    b: Dim<i32>,
    c: Dim<bool>,
    n: Metric<i64>,
    n_amount: Metric<i64>,
    sum8: Metric<Decimal>,
    sum4: Metric<i64>,
    sumn: Metric<Decimal>,
    avg4: Metric<Decimal>,
    avg8: Metric<Decimal>,
    avgn: Metric<Decimal>,
    min8: Metric<i64>,
    max8: Metric<i64>,
    minp: Metric<Decimal>,
    maxa: Metric<String>,
    flagged: Metric<i64>,
    sum_flagged: Metric<i64>,
    none: Metric<i64>,
    none_sum: Metric<Decimal>,
}

fn spec() -> (Rollup, Handles) {
    let t = Table::new("facts").unwrap();
    let a = t.column::<String>("a").unwrap();
    let amount = t.column::<i64>("amount").unwrap();
    let qty = t.column::<i32>("qty").unwrap();
    let price = t.column::<Decimal>("price").unwrap();
    let flag = t.column::<bool>("flag").unwrap();
    let h = Handles {
        a: Dim::new(&a),
        b: Dim::new(&t.column::<i32>("b").unwrap()),
        c: Dim::named("c flag", t.column::<bool>("c").unwrap()),
        n: Metric::new("n", Agg::count_all()),
        n_amount: Metric::new("n_amount", Agg::count(&amount)),
        sum8: Metric::new("sum8", Agg::sum(&amount)),
        sum4: Metric::new("sum4", Agg::sum(&qty)),
        sumn: Metric::new("sumn", Agg::sum(&price)),
        avg4: Metric::new("avg4", Agg::avg(&qty)),
        avg8: Metric::new("avg8", Agg::avg(&amount)),
        avgn: Metric::new("avgn", Agg::avg(&price)),
        min8: Metric::new("min8", Agg::min(&amount)),
        max8: Metric::new("max8", Agg::max(&amount)),
        minp: Metric::new("minp", Agg::min(&price)),
        maxa: Metric::new("maxa", Agg::max(&a)),
        flagged: Metric::new("flagged", Agg::count_all().filter(flag.eq(true))),
        sum_flagged: Metric::new("sum_flagged", Agg::sum(&qty).filter(flag.eq(true))),
        // Metric filters that match nothing.
        none: Metric::new("none", Agg::count(&amount).filter(amount.gt(1_000_000))),
        none_sum: Metric::new("none_sum", Agg::sum(&amount).filter(amount.gt(1_000_000))),
    };
    let r = Rollup::new(&t)
        .dimension(&h.a)
        .dimension(&h.b)
        .dimension(&h.c)
        .metric(&h.n)
        .metric(&h.n_amount)
        .metric(&h.sum8)
        .metric(&h.sum4)
        .metric(&h.sumn)
        .metric(&h.avg4)
        .metric(&h.avg8)
        .metric(&h.avgn)
        .metric(&h.min8)
        .metric(&h.max8)
        .metric(&h.minp)
        .metric(&h.maxa)
        .metric(&h.flagged)
        .metric(&h.sum_flagged)
        .metric(&h.none)
        .metric(&h.none_sum);
    (r, h)
}

type Key = (Option<String>, Option<i32>, Option<bool>);

/// One reference group.
#[derive(Debug, Clone, Default, PartialEq)]
struct Acc {
    n: i64,
    n_amount: i64,
    sum8: Option<Decimal>,
    sum4: Option<i64>,
    n_qty: i64,
    sumn: Option<Decimal>,
    n_price: i64,
    min8: Option<i64>,
    max8: Option<i64>,
    minp: Option<Decimal>,
    maxa: Option<String>,
    flagged: i64,
    sum_flagged: Option<i64>,
}

fn add<T: std::ops::Add<Output = T> + Copy>(acc: &mut Option<T>, v: T) {
    *acc = Some(acc.map_or(v, |a| a + v));
}

fn avg(sum: Option<Decimal>, n: i64) -> Option<Decimal> {
    sum.filter(|_| n > 0).map(|s| s / Decimal::from(n))
}

/// In-memory GROUPING SETS over the facts; `having` keeps groups.
fn reference(
    facts: &[Fact],
    sets: &[Vec<usize>],
    having: impl Fn(&Acc) -> bool,
) -> BTreeMap<(u32, Key), Acc> {
    let mut out = BTreeMap::new();
    for set in sets {
        let mask = (0..3)
            .filter(|i| !set.contains(i))
            .fold(0, |m, i| m | 1 << (2 - i));
        let mut groups: BTreeMap<Key, Acc> = BTreeMap::new();
        for f in facts {
            let key = (
                f.a.clone().filter(|_| set.contains(&0)),
                f.b.filter(|_| set.contains(&1)),
                f.c.filter(|_| set.contains(&2)),
            );
            let g = groups.entry(key).or_default();
            g.n += 1;
            if let Some(x) = f.amount {
                g.n_amount += 1;
                add(&mut g.sum8, Decimal::from(x));
                g.min8 = Some(g.min8.map_or(x, |m| Ord::min(m, x)));
                g.max8 = Some(g.max8.map_or(x, |m| Ord::max(m, x)));
            }
            if let Some(q) = f.qty {
                g.n_qty += 1;
                add(&mut g.sum4, i64::from(q));
                if f.flag {
                    add(&mut g.sum_flagged, i64::from(q));
                }
            }
            if let Some(p) = f.price {
                g.n_price += 1;
                add(&mut g.sumn, p);
                g.minp = Some(g.minp.map_or(p, |m| Ord::min(m, p)));
            }
            if let Some(a) = &f.a {
                g.maxa = Some(g.maxa.take().map_or(a.clone(), |m| Ord::max(m, a.clone())));
            }
            g.flagged += i64::from(f.flag);
        }
        if set.is_empty() && facts.is_empty() {
            groups.insert((None, None, None), Acc::default());
        }
        for (k, g) in groups {
            if having(&g) {
                out.insert((mask, k), g);
            }
        }
    }
    out
}

/// A row as text: every value (a `numeric` with its scale), level and mask.
fn render(row: &RollupRow) -> String {
    let cell = |v: &Value| match v {
        Value::Decimal(Some(d)) => format!("{d}"),
        other => format!("{other:?}"),
    };
    let values: Vec<String> = row
        .dimension_values()
        .iter()
        .chain(row.metric_values())
        .map(cell)
        .collect();
    format!(
        "{} | {:?} {}",
        values.join(", "),
        row.level(),
        row.grouping_mask()
    )
}

/// Checks GroupingSets' rows against the reference (values; averages to
/// 1e-12 since the reference divides with Rust's 28 digits).
fn check_reference(rows: &[RollupRow], h: &Handles, want: &BTreeMap<(u32, Key), Acc>, ctx: &str) {
    assert_eq!(rows.len(), want.len(), "{ctx}");
    for r in rows {
        let key = (r.get(&h.a), r.get(&h.b), r.get(&h.c));
        let g = want
            .get(&(r.grouping_mask(), key.clone()))
            .unwrap_or_else(|| panic!("unexpected row {key:?}: {ctx}"));
        let got = Acc {
            n: r.get(&h.n).unwrap(),
            n_amount: r.get(&h.n_amount).unwrap(),
            sum8: r.get(&h.sum8),
            sum4: r.get(&h.sum4),
            n_qty: g.n_qty,
            sumn: r.get(&h.sumn),
            n_price: g.n_price,
            min8: r.get(&h.min8),
            max8: r.get(&h.max8),
            minp: r.get(&h.minp),
            maxa: r.get(&h.maxa),
            flagged: r.get(&h.flagged).unwrap(),
            sum_flagged: r.get(&h.sum_flagged),
        };
        assert_eq!(&got, g, "{key:?}: {ctx}");
        for (m, want) in [
            (&h.avg4, avg(g.sum4.map(Decimal::from), g.n_qty)),
            (&h.avg8, avg(g.sum8, g.n_amount)),
            (&h.avgn, avg(g.sumn, g.n_price)),
        ] {
            match (r.get(m), want) {
                (Some(x), Some(y)) => assert!(
                    (x - y).abs() < Decimal::new(1, 12),
                    "{}: {x} vs {y}: {ctx}",
                    m.alias()
                ),
                (x, y) => assert_eq!(x, y, "{}: {ctx}", m.alias()),
            }
        }
        assert_eq!(r.get(&h.none), Some(0), "{ctx}");
        assert_eq!(r.get(&h.none_sum), None, "{ctx}");
    }
}

async fn run(client: &tokio_postgres::Client, spec: &Rollup, q: &BuiltQuery) -> Vec<RollupRow> {
    let rows = client.rows(q).await.unwrap();
    rows.iter().map(|r| spec.decode(r).unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_strategy_returns_grouping_sets_rows_exactly() {
    let schema = schema().await;
    let client = client(&schema).await;
    client.batch_execute(CREATE).await.unwrap();
    let cache = StrategyCache::new(Duration::from_secs(60));
    let mut checked = 0;
    let mut types_checked = false;
    for seed in 0..12u64 {
        let data = facts(seed);
        load(&client, &data).await;
        // The planner's estimates change with the data: decide again.
        cache.clear();
        for (name, apply, sets) in shapes() {
            for variant in 0..4 {
                let (r, h) = spec();
                let ids = Ids {
                    a: h.a.clone(),
                    b: h.b.clone(),
                    c: h.c.clone(),
                };
                let r = apply(r, &ids);
                let mut want_data = data.as_slice();
                let mut having: Box<dyn Fn(&Acc) -> bool> = Box::new(|_| true);
                let mut limited = false;
                let r = match variant {
                    0 => r,
                    1 => {
                        having = Box::new(|g| g.n >= 2);
                        r.total_first().having(h.n.gte(2))
                    }
                    2 => {
                        // HAVING over a metric or a dimension; ranking with ties.
                        limited = true;
                        r.having(h.sum4.gt(0).or(h.a.expr().is_null()))
                            .rank_by(&h.sum4, Order::Desc)
                            .limit_per_level(2)
                    }
                    _ => {
                        // A filter matching nothing: only the total remains.
                        let amount = Table::new("facts")
                            .unwrap()
                            .column::<i64>("amount")
                            .unwrap();
                        want_data = &[];
                        r.filter(amount.gt(1_000_000_000))
                    }
                };
                let ctx = format!("seed {seed} {name} variant {variant}");
                let gs = r.fetch_all(&client).await.unwrap();
                if !limited {
                    check_reference(&gs, &h, &reference(want_data, &sets, &having), &ctx);
                }
                let want: Vec<String> = gs.iter().map(render).collect();

                let pre = r.clone().strategy(RollupStrategy::PreAggregate);
                let auto = r.clone().strategy(RollupStrategy::Auto);
                let choice = auto.explain_choice_with(&cache, &client).await.unwrap();
                let chosen = r.clone().strategy(choice.strategy);
                for (label, q) in [
                    ("PreAggregate", pre.build().unwrap()),
                    ("Auto without a database", auto.build().unwrap()),
                    ("Auto as chosen", chosen.build().unwrap()),
                ] {
                    let got: Vec<String> = run(&client, &r, &q).await.iter().map(render).collect();
                    assert_eq!(got, want, "{label}: {ctx}\n{q}");
                }
                let fetched: Vec<String> = auto
                    .fetch_all(&client)
                    .await
                    .unwrap()
                    .iter()
                    .map(render)
                    .collect();
                assert_eq!(fetched, want, "Auto fetch: {ctx}");

                // The same column types, too.
                if !types_checked && !gs.is_empty() {
                    let types = |rows: Vec<tokio_postgres::Row>| -> Vec<String> {
                        rows[0]
                            .columns()
                            .iter()
                            .map(|c| format!("{} {}", c.name(), c.type_()))
                            .collect()
                    };
                    let a = types(client.rows(&r.build().unwrap()).await.unwrap());
                    let b = types(client.rows(&pre.build().unwrap()).await.unwrap());
                    assert_eq!(a, b, "{ctx}");
                    assert!(a.contains(&"sum4 int8".to_owned()), "{a:?}");
                    assert!(a.contains(&"sum8 numeric".to_owned()), "{a:?}");
                    assert!(a.contains(&"avg4 numeric".to_owned()), "{a:?}");
                    types_checked = true;
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 12 * shapes().len() * 4);
    assert!(types_checked);
}

/// The seed's dashboard over `table`, grouped by `dims` with a total.
fn dashboard(table: &str, distinct: bool, dims: [&str; 2]) -> Rollup {
    let t = Table::new(table).unwrap();
    let mut r = Rollup::new(&t);
    for d in dims {
        r = r.dimension(&Dim::named(d, t.column::<String>(d).unwrap()));
    }
    r = r
        .metric(&Metric::new(
            "total",
            Agg::count(t.column::<i32>("id").unwrap()),
        ))
        .metric(&Metric::new(
            "avg_charged_amount",
            Agg::avg(&t.column::<i32>("charged_amount").unwrap()),
        ));
    if distinct {
        r = r.metric(&Metric::new(
            "unique_users",
            Agg::count_distinct(t.column::<i32>("user_id").unwrap()),
        ));
    }
    r.with_total()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_uses_grouping_sets_for_count_distinct_and_says_why() {
    let schema = schema().await;
    let client = client(&schema).await;
    SalesSeed::sample().run(&client, |_| {}).await.unwrap();
    let r = dashboard(sales::SAMPLE_TABLE, true, ["merchant", "device"]);

    // PreAggregate cannot: the report refuses to build or run, with a
    // typed error naming the metric, before anything is sent.
    let pre = r.clone().strategy(RollupStrategy::PreAggregate);
    assert_eq!(pre.chosen_strategy(), RollupStrategy::PreAggregate);
    for e in [
        pre.check().unwrap_err(),
        pre.build().unwrap_err(),
        pre.fetch_all(&client).await.unwrap_err(),
        pre.resolve(&client).await.unwrap_err(),
        pre.explain_choice(&client).await.unwrap_err(),
    ] {
        match e {
            Error::InvalidSpec { field, reason } => {
                assert_eq!(field, "strategy");
                assert!(reason.contains("\"unique_users\""), "{reason}");
                assert!(reason.contains("COUNT(DISTINCT"), "{reason}");
            }
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }
    assert_eq!(r.chosen_strategy(), RollupStrategy::GroupingSets);

    let r = r.strategy(RollupStrategy::Auto);
    let cache = StrategyCache::new(Duration::from_secs(60));
    let choice = r.explain_choice_with(&cache, &client).await.unwrap();
    assert_eq!(choice.strategy, RollupStrategy::GroupingSets);
    assert!(choice.reason.contains("\"unique_users\""), "{choice}");
    assert!(choice.reason.contains("COUNT(DISTINCT"), "{choice}");
    let pre = choice
        .candidates
        .iter()
        .find(|c| c.strategy == RollupStrategy::PreAggregate)
        .unwrap();
    assert!(pre.rejected.is_some(), "{choice}");
    // Decided without reading the database: nothing to cache.
    assert!(cache.is_empty());
    assert!(
        choice.to_string().contains("Auto chose GroupingSets"),
        "{choice}"
    );

    let gs = r.clone().strategy(RollupStrategy::GroupingSets);
    assert_eq!(r.build().unwrap(), gs.build().unwrap());
    assert_eq!(
        r.fetch_all(&client).await.unwrap(),
        gs.fetch_all(&client).await.unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_pre_aggregates_when_the_detail_groups_are_few() {
    let schema = schema().await;
    let client = client(&schema).await;
    // 200 000 sales in 50 merchants × 20 devices (1 000 detail groups), and
    // 100 000 users: (user_id, device) has about as many groups as rows.
    SalesSeed::new(200_000)
        .batch_size(100_000)
        .run(&client, |_| {})
        .await
        .unwrap();
    let cache = StrategyCache::new(Duration::from_secs(60));

    let few =
        dashboard(sales::LARGE_TABLE, false, ["merchant", "device"]).strategy(RollupStrategy::Auto);
    let choice = few.explain_choice_with(&cache, &client).await.unwrap();
    assert_eq!(choice.strategy, RollupStrategy::PreAggregate, "{choice}");
    assert!(!choice.cached);
    let stat = |name: &str| {
        choice
            .statistics
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("{name} in {choice}"))
            .value
    };
    assert!(
        (150_000.0..250_000.0).contains(&stat("input_rows")),
        "{choice}"
    );
    assert!(
        (500.0..2_000.0).contains(&stat("detail_groups")),
        "{choice}"
    );
    assert!(stat("groups_per_row") < 0.01, "{choice}");
    assert_eq!(stat("grouping_sets"), 2.0);
    // Both candidates explained, as evidence.
    assert_eq!(choice.candidates.len(), 2, "{choice}");
    assert!(
        choice.candidates.iter().all(|c| c.cost.is_some()),
        "{choice}"
    );
    assert!(choice.reason.contains("shrinks the input"), "{choice}");
    let text = choice.to_string();
    assert!(text.contains("Auto chose PreAggregate"), "{text}");
    assert!(text.contains("detail_groups = "), "{text}");

    // Cached: the same query again, and the same spec with other values.
    let again = few.explain_choice_with(&cache, &client).await.unwrap();
    assert!(again.cached);
    assert_eq!(again.strategy, RollupStrategy::PreAggregate);
    let amount = Table::new(sales::LARGE_TABLE)
        .unwrap()
        .column::<i32>("charged_amount")
        .unwrap();
    let filtered = few.clone().filter(amount.gt(1));
    let first = filtered.explain_choice_with(&cache, &client).await.unwrap();
    let other_value = few.clone().filter(amount.gt(2));
    let second = other_value
        .explain_choice_with(&cache, &client)
        .await
        .unwrap();
    assert!(!first.cached && second.cached);

    // Rows: identical to GroupingSets.
    let gs = few.clone().strategy(RollupStrategy::GroupingSets);
    let want: Vec<String> = gs
        .fetch_all(&client)
        .await
        .unwrap()
        .iter()
        .map(render)
        .collect();
    let got: Vec<String> = few
        .fetch_all(&client)
        .await
        .unwrap()
        .iter()
        .map(render)
        .collect();
    assert_eq!(got, want);
    assert_eq!(want.len(), 1_001);

    // About one group per row: GroupingSets.
    let many = dashboard(sales::LARGE_TABLE, false, ["device", "merchant"]);
    let t = Table::new(sales::LARGE_TABLE).unwrap();
    let wide = Rollup::new(&t)
        .dimension(&Dim::new(&t.column::<i32>("user_id").unwrap()))
        .dimension(&Dim::new(&t.column::<String>("device").unwrap()))
        .metric(&Metric::new("total", Agg::count_all()))
        .with_total()
        .strategy(RollupStrategy::Auto);
    let choice = wide.explain_choice_with(&cache, &client).await.unwrap();
    assert_eq!(choice.strategy, RollupStrategy::GroupingSets, "{choice}");
    assert!(choice.reason.contains("barely shrink"), "{choice}");
    let per_row = choice
        .statistics
        .iter()
        .find(|s| s.name == "groups_per_row")
        .unwrap()
        .value;
    assert!(per_row > 0.5, "{choice}");

    // A blocking client decides the same way and gets the same rows.
    let many = many.strategy(RollupStrategy::Auto);
    let (blocking_choice, rows) = with_sync_client(&schema, move |c| {
        let cache = StrategyCache::new(Duration::from_secs(60));
        let choice = many.explain_choice_with_blocking(&cache, c).unwrap();
        let again = many.explain_choice_with_blocking(&cache, c).unwrap();
        assert!(again.cached);
        let rows: Vec<String> = many
            .fetch_all_blocking(c)
            .unwrap()
            .iter()
            .map(render)
            .collect();
        (choice, rows)
    })
    .await;
    assert_eq!(blocking_choice.strategy, RollupStrategy::PreAggregate);
    assert_eq!(rows.len(), 1_001);
}

/// `Auto`'s futures can be spawned (compiles or fails the build).
#[allow(dead_code)]
fn auto_futures_are_send(r: &Rollup, c: &tokio_postgres::Client, p: &deadpool_postgres::Pool) {
    fn send<T: Send>(_: T) {}
    send(r.fetch_all(c));
    send(r.explain_choice(c));
    send(r.resolve(c));
    send(r.fetch_all(p));
}
