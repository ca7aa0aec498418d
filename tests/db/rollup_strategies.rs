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
    let mut r = Rollup::new(&t);
    let h = Handles {
        a: r.dimension(&a).unwrap(),
        b: r.dimension(&t.column::<i32>("b").unwrap()).unwrap(),
        c: r.dimension_as("c flag", t.column::<bool>("c").unwrap())
            .unwrap(),
        n: r.metric("n", Agg::count_all()).unwrap(),
        n_amount: r.metric("n_amount", Agg::count(&amount)).unwrap(),
        sum8: r.metric("sum8", Agg::sum(&amount)).unwrap(),
        sum4: r.metric("sum4", Agg::sum(&qty)).unwrap(),
        sumn: r.metric("sumn", Agg::sum(&price)).unwrap(),
        avg4: r.metric("avg4", Agg::avg(&qty)).unwrap(),
        avg8: r.metric("avg8", Agg::avg(&amount)).unwrap(),
        avgn: r.metric("avgn", Agg::avg(&price)).unwrap(),
        min8: r.metric("min8", Agg::min(&amount)).unwrap(),
        max8: r.metric("max8", Agg::max(&amount)).unwrap(),
        minp: r.metric("minp", Agg::min(&price)).unwrap(),
        maxa: r.metric("maxa", Agg::max(&a)).unwrap(),
        flagged: r
            .metric("flagged", Agg::count_all().filter(flag.eq(true)))
            .unwrap(),
        sum_flagged: r
            .metric("sum_flagged", Agg::sum(&qty).filter(flag.eq(true)))
            .unwrap(),
        // Metric filters that match nothing.
        none: r
            .metric("none", Agg::count(&amount).filter(amount.gt(1_000_000)))
            .unwrap(),
        none_sum: r
            .metric("none_sum", Agg::sum(&amount).filter(amount.gt(1_000_000)))
            .unwrap(),
    };
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
                let (mut r, h) = spec();
                let ids = Ids {
                    a: h.a.id(),
                    b: h.b.id(),
                    c: h.c.id(),
                };
                apply(&mut r, &ids);
                let mut want_data = data.as_slice();
                let mut having: Box<dyn Fn(&Acc) -> bool> = Box::new(|_| true);
                let mut limited = false;
                match variant {
                    0 => {}
                    1 => {
                        r.total_first().having(h.n.gte(2));
                        having = Box::new(|g| g.n >= 2);
                    }
                    2 => {
                        // HAVING over a metric or a dimension; ranking with ties.
                        r.having(h.sum4.gt(0).or(h.a.expr().is_null()));
                        r.rank_by(&h.sum4, Order::Desc)
                            .unwrap()
                            .limit_per_level(2)
                            .unwrap();
                        limited = true;
                    }
                    _ => {
                        // A filter matching nothing: only the total remains.
                        let amount = Table::new("facts")
                            .unwrap()
                            .column::<i64>("amount")
                            .unwrap();
                        r.filter(amount.gt(1_000_000_000));
                        want_data = &[];
                    }
                }
                let ctx = format!("seed {seed} {name} variant {variant}");
                let gs = r.fetch(&client).await.unwrap();
                if !limited {
                    check_reference(&gs, &h, &reference(want_data, &sets, &having), &ctx);
                }
                let want: Vec<String> = gs.iter().map(render).collect();

                let mut pre = r.clone();
                pre.strategy(RollupStrategy::PreAggregate).unwrap();
                let mut auto = r.clone();
                auto.strategy(RollupStrategy::Auto).unwrap();
                let choice = auto.explain_choice_with(&cache, &client).await.unwrap();
                let mut chosen = r.clone();
                chosen.strategy(choice.strategy).unwrap();
                for (label, q) in [
                    ("PreAggregate", pre.build()),
                    ("Auto without a database", auto.build()),
                    ("Auto as chosen", chosen.build()),
                ] {
                    let got: Vec<String> = run(&client, &r, &q).await.iter().map(render).collect();
                    assert_eq!(got, want, "{label}: {ctx}\n{q}");
                }
                let fetched: Vec<String> = auto
                    .fetch(&client)
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
                    let a = types(client.rows(&r.build()).await.unwrap());
                    let b = types(client.rows(&pre.build()).await.unwrap());
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
        r.dimension_as(d, t.column::<String>(d).unwrap()).unwrap();
    }
    r.metric("total", Agg::count(t.column::<i32>("id").unwrap()))
        .unwrap();
    r.metric(
        "avg_charged_amount",
        Agg::avg(&t.column::<i32>("charged_amount").unwrap()),
    )
    .unwrap();
    if distinct {
        r.metric(
            "unique_users",
            Agg::count_distinct(t.column::<i32>("user_id").unwrap()),
        )
        .unwrap();
    }
    r.with_total().unwrap();
    r
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_uses_grouping_sets_for_count_distinct_and_says_why() {
    let schema = schema().await;
    let client = client(&schema).await;
    SalesSeed::sample().run(&client, |_| {}).await.unwrap();
    let mut r = dashboard(sales::SAMPLE_TABLE, true, ["merchant", "device"]);

    // PreAggregate cannot: a typed error naming the metric.
    match r.strategy(RollupStrategy::PreAggregate) {
        Err(Error::InvalidSpec { field, reason }) => {
            assert_eq!(field, "strategy");
            assert!(reason.contains("\"unique_users\""), "{reason}");
            assert!(reason.contains("COUNT(DISTINCT"), "{reason}");
        }
        other => panic!("expected InvalidSpec, got {other:?}"),
    }
    assert_eq!(r.chosen_strategy(), RollupStrategy::GroupingSets);

    r.strategy(RollupStrategy::Auto).unwrap();
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

    let mut gs = r.clone();
    gs.strategy(RollupStrategy::GroupingSets).unwrap();
    assert_eq!(r.build(), gs.build());
    assert_eq!(
        r.fetch(&client).await.unwrap(),
        gs.fetch(&client).await.unwrap()
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

    let mut few = dashboard(sales::LARGE_TABLE, false, ["merchant", "device"]);
    few.strategy(RollupStrategy::Auto).unwrap();
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
    let mut filtered = few.clone();
    let amount = Table::new(sales::LARGE_TABLE)
        .unwrap()
        .column::<i32>("charged_amount")
        .unwrap();
    filtered.filter(amount.gt(1));
    let first = filtered.explain_choice_with(&cache, &client).await.unwrap();
    let mut other_value = few.clone();
    other_value.filter(amount.gt(2));
    let second = other_value
        .explain_choice_with(&cache, &client)
        .await
        .unwrap();
    assert!(!first.cached && second.cached);

    // Rows: identical to GroupingSets.
    let mut gs = few.clone();
    gs.strategy(RollupStrategy::GroupingSets).unwrap();
    let want: Vec<String> = gs
        .fetch(&client)
        .await
        .unwrap()
        .iter()
        .map(render)
        .collect();
    let got: Vec<String> = few
        .fetch(&client)
        .await
        .unwrap()
        .iter()
        .map(render)
        .collect();
    assert_eq!(got, want);
    assert_eq!(want.len(), 1_001);

    // About one group per row: GroupingSets.
    let mut many = dashboard(sales::LARGE_TABLE, false, ["device", "merchant"]);
    let t = Table::new(sales::LARGE_TABLE).unwrap();
    let mut wide = Rollup::new(&t);
    wide.dimension(&t.column::<i32>("user_id").unwrap())
        .unwrap();
    wide.dimension(&t.column::<String>("device").unwrap())
        .unwrap();
    wide.metric("total", Agg::count_all()).unwrap();
    wide.with_total()
        .unwrap()
        .strategy(RollupStrategy::Auto)
        .unwrap();
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
    many.strategy(RollupStrategy::Auto).unwrap();
    let (blocking_choice, rows) = with_sync_client(&schema, move |c| {
        let cache = StrategyCache::new(Duration::from_secs(60));
        let choice = many.explain_choice_with_blocking(&cache, c).unwrap();
        let again = many.explain_choice_with_blocking(&cache, c).unwrap();
        assert!(again.cached);
        let rows: Vec<String> = many.fetch_blocking(c).unwrap().iter().map(render).collect();
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
    send(r.fetch(c));
    send(r.explain_choice(c));
    send(r.resolve(c));
    send(r.fetch(p));
}
