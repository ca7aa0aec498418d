//! The rollup family against a real server: seed 003's printed results
//! exactly, every grouping against a plain-Rust group-by on random data with
//! NULL dimensions, composition with a caller's parameterized base query,
//! HAVING, per-level limits, and hostile names and values.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use pgpatterns::sea_query::{Alias, Expr, Order, Query};
use pgpatterns::seed::sales::{self, SalesSeed};
use pgpatterns::{
    Agg, BuiltQuery, Dim, DimValue, Error, Executor, Level, Metric, Rollup, RollupRow,
    RollupStrategy, RollupTable, Split, SqlType, Table,
};
use rust_decimal::Decimal;

use crate::support::{client, schema, Rng};

/// The seed's `sale` columns as typed handles.
struct Sale {
    table: Table,
    id: pgpatterns::Column<i32>,
    merchant: pgpatterns::Column<String>,
    device: pgpatterns::Column<String>,
    user_id: pgpatterns::Column<i32>,
    amount: pgpatterns::Column<i32>,
}

fn sale(table: Table) -> Sale {
    Sale {
        id: table.column("id").unwrap(),
        merchant: table.column("merchant").unwrap(),
        device: table.column("device").unwrap(),
        user_id: table.column("user_id").unwrap(),
        amount: table.column("charged_amount").unwrap(),
        table,
    }
}

fn dec(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn level_name(r: &RollupRow) -> String {
    match r.level() {
        Level::Detail => "detail".into(),
        Level::Total => "total".into(),
        Level::Subtotal { grouped_by } => format!(
            "by {}",
            grouped_by
                .iter()
                .map(|i| i.as_str())
                .collect::<Vec<_>>()
                .join(",")
        ),
        other => format!("{other:?}"),
    }
}

/// merchant, device, total, avg_charged_amount, unique_users.
type Line = (
    Option<&'static str>,
    Option<&'static str>,
    i64,
    &'static str,
    i64,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_003_dashboard_gives_the_articles_table_and_summary_line() {
    let schema = schema().await;
    let client = client(&schema).await;
    SalesSeed::sample().run(&client, |_| {}).await.unwrap();
    let s = sale(Table::new(sales::SAMPLE_TABLE).unwrap());

    let merchant = Dim::new(&s.merchant);
    let device = Dim::new(&s.device);
    let total = Metric::new("total", Agg::count(&s.id));
    let avg = Metric::new("avg_charged_amount", Agg::avg(&s.amount));
    let users = Metric::new("unique_users", Agg::count_distinct(&s.user_id));
    let r = Rollup::new(&s.table)
        .dimension(&merchant)
        .dimension(&device)
        .metric(&total)
        .metric(&avg)
        .metric(&users)
        .with_total();
    let rows = r.fetch_all(&client).await.unwrap();

    // The article's GROUPING SETS ((merchant, device), ()) output, verbatim.
    let want: [Line; 7] = [
        (Some("Costco"), Some("D1"), 3, "112.3333333333333333", 3),
        (Some("Costco"), Some("D4"), 1, "25.0000000000000000", 1),
        (Some("Costco"), Some("D5"), 2, "137.5000000000000000", 2),
        (Some("Walmart"), Some("D1"), 2, "77.0000000000000000", 1),
        (Some("Walmart"), Some("D2"), 3, "17.0000000000000000", 3),
        (Some("Walmart"), Some("D3"), 2, "37.0000000000000000", 1),
        (None, None, 13, "70.4615384615384615", 5),
    ];
    assert_eq!(rows.len(), want.len());
    for (row, (m, d, t, a, u)) in rows.iter().zip(want) {
        assert_eq!(row.get(&merchant).as_deref(), m);
        assert_eq!(row.get(&device).as_deref(), d);
        assert_eq!(row.get(&total), Some(t));
        let got_avg = row.get(&avg).unwrap();
        // The same digits psql printed, scale included.
        assert_eq!(got_avg.to_string(), a);
        assert_eq!(got_avg, dec(a));
        assert_eq!(row.get(&users), Some(u));
    }
    assert!(rows[..6].iter().all(|r| r.level() == &Level::Detail));
    assert_eq!(rows[6].level(), &Level::Total);
    // Printed as psql prints the article's output, the summary line marked.
    assert_eq!(
        RollupTable::new(&rows).to_string(),
        [
            " merchant | device | total |  avg_charged_amount  | unique_users",
            "----------+--------+-------+----------------------+--------------",
            " Costco   | D1     |     3 | 112.3333333333333333 |            3",
            " Costco   | D4     |     1 |  25.0000000000000000 |            1",
            " Costco   | D5     |     2 | 137.5000000000000000 |            2",
            " Walmart  | D1     |     2 |  77.0000000000000000 |            1",
            " Walmart  | D2     |     3 |  17.0000000000000000 |            3",
            " Walmart  | D3     |     2 |  37.0000000000000000 |            1",
            " (all)    | (all)  |    13 |  70.4615384615384615 |            5",
            "(7 rows)",
        ]
        .join("\n")
    );

    // The two queries the dashboard used to run give the same numbers.
    let split = Split::new(rows.clone());
    assert_eq!(split.detail.len(), 6);
    assert!(split.subtotals.is_empty());
    let summary = split.total.unwrap();
    assert_eq!(summary.get(&total), Some(13));
    assert_eq!(summary.get(&users), Some(5));

    // Summary first, as the article's last advice asks.
    let first = r.clone().total_first().fetch_all(&client).await.unwrap();
    assert_eq!(first[0], rows[6]);
    assert_eq!(&first[1..], &rows[..6]);

    // The seed's own dashboard is the same report, read with its handles.
    let tables = SalesSeed::sample().tables();
    let seeded = tables.dashboard(true).fetch_all(&client).await.unwrap();
    assert_eq!(
        RollupTable::new(&seeded).to_string(),
        RollupTable::new(&rows).to_string()
    );
    for (mine, theirs) in rows.iter().zip(&seeded) {
        assert_eq!(mine.get(&merchant), theirs.get(&tables.by_merchant));
        assert_eq!(mine.get(&device), theirs.get(&tables.by_device));
        assert_eq!(mine.get(&total), theirs.get(&tables.total));
        assert_eq!(mine.get(&avg), theirs.get(&tables.avg_charged_amount));
        assert_eq!(mine.get(&users), theirs.get(&tables.unique_users));
        assert_eq!(mine.level(), theirs.level());
        // Each report's handles are its own: same names, other columns.
        assert!(theirs.try_get(&merchant).is_err());
        assert!(mine.try_get(&tables.total).is_err());
    }
}

/// `(device, merchant, count)` rows as the article prints them.
type Printed = [(Option<&'static str>, Option<&'static str>, i64)];

const ROLLUP_DEVICE_MERCHANT: &Printed = &[
    (None, None, 13),
    (Some("D3"), Some("Walmart"), 2),
    (Some("D5"), Some("Costco"), 2),
    (Some("D1"), Some("Walmart"), 2),
    (Some("D4"), Some("Costco"), 1),
    (Some("D1"), Some("Costco"), 3),
    (Some("D2"), Some("Walmart"), 3),
    (Some("D2"), None, 3),
    (Some("D4"), None, 1),
    (Some("D1"), None, 5),
    (Some("D5"), None, 2),
    (Some("D3"), None, 2),
];

const ROLLUP_MERCHANT_DEVICE: &Printed = &[
    (None, None, 13),
    (Some("D4"), Some("Costco"), 1),
    (Some("D3"), Some("Walmart"), 2),
    (Some("D1"), Some("Walmart"), 2),
    (Some("D1"), Some("Costco"), 3),
    (Some("D5"), Some("Costco"), 2),
    (Some("D2"), Some("Walmart"), 3),
    (None, Some("Costco"), 6),
    (None, Some("Walmart"), 7),
];

const CUBE: &Printed = &[
    (None, None, 13),
    (Some("D4"), Some("Costco"), 1),
    (Some("D3"), Some("Walmart"), 2),
    (Some("D1"), Some("Walmart"), 2),
    (Some("D1"), Some("Costco"), 3),
    (Some("D5"), Some("Costco"), 2),
    (Some("D2"), Some("Walmart"), 3),
    (None, Some("Costco"), 6),
    (None, Some("Walmart"), 7),
    (Some("D2"), None, 3),
    (Some("D4"), None, 1),
    (Some("D1"), None, 5),
    (Some("D5"), None, 2),
    (Some("D3"), None, 2),
];

#[derive(Debug, Clone, Copy)]
enum Shape {
    RollupDeviceMerchant,
    RollupMerchantDevice,
    Cube,
    Sets,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_003_rollup_cube_and_grouping_sets_give_the_articles_rows() {
    let schema = schema().await;
    let client = client(&schema).await;
    SalesSeed::sample().run(&client, |_| {}).await.unwrap();
    let s = sale(Table::new(sales::SAMPLE_TABLE).unwrap());

    for (shape, printed) in [
        (Shape::RollupDeviceMerchant, ROLLUP_DEVICE_MERCHANT),
        (Shape::RollupMerchantDevice, ROLLUP_MERCHANT_DEVICE),
        (Shape::Cube, CUBE),
        // GROUPING SETS ((merchant), (merchant, device), ()) = the second ROLLUP.
        (Shape::Sets, ROLLUP_MERCHANT_DEVICE),
    ] {
        // SELECT device, merchant, count(*) as in the article.
        let device = Dim::new(&s.device);
        let merchant = Dim::new(&s.merchant);
        let count = Metric::new("count", Agg::count_all());
        let r = Rollup::new(&s.table)
            .dimension(&device)
            .dimension(&merchant)
            .metric(&count);
        let r = match shape {
            Shape::RollupDeviceMerchant => r.rollup((&device, &merchant)),
            Shape::RollupMerchantDevice => r.rollup([&merchant, &device]),
            Shape::Cube => r.cube((&merchant, &device)),
            Shape::Sets => r.grouping_sets(((&merchant,), (&merchant, &device), ())),
        }
        .total_first();
        let rows = r.fetch_all(&client).await.unwrap();
        let got: Vec<(Option<String>, Option<String>, i64)> = rows
            .iter()
            .map(|row| {
                (
                    row.get(&device),
                    row.get(&merchant),
                    row.get(&count).unwrap(),
                )
            })
            .collect();
        // psql printed these in hash order; the rows are the same, and ours
        // come in a deterministic order: total first, then by level, then
        // by dimension.
        let mut want: Vec<(Option<String>, Option<String>, i64)> = printed
            .iter()
            .map(|(d, m, n)| (d.map(str::to_owned), m.map(str::to_owned), *n))
            .collect();
        assert_eq!(
            got.iter().cloned().collect::<BTreeSet<_>>(),
            want.iter().cloned().collect::<BTreeSet<_>>(),
            "{shape:?}"
        );
        assert_eq!(got.len(), want.len(), "{shape:?}");
        want.sort_by_key(|(d, m, _)| {
            // GROUPING(device, merchant): device is the high bit.
            let mask = (d.is_none() as u8) << 1 | m.is_none() as u8;
            (
                std::cmp::Reverse(mask),
                d.clone().is_none(),
                d.clone(),
                m.clone(),
            )
        });
        assert_eq!(got, want, "{shape:?} order");
        assert_eq!(rows[0].level(), &Level::Total, "{shape:?}");
        for row in &rows {
            let expect = match (row.get(&device).is_some(), row.get(&merchant).is_some()) {
                (true, true) => "detail",
                (true, false) => "by device",
                (false, true) => "by merchant",
                (false, false) => "total",
            };
            assert_eq!(level_name(row), expect, "{shape:?}");
        }
    }
}

#[derive(Debug, Clone)]
struct Fact {
    a: Option<String>,
    b: Option<i32>,
    c: Option<bool>,
    user: Option<i64>,
    amount: Option<i64>,
    flag: bool,
}

fn facts(seed: u64) -> Vec<Fact> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let n = if seed.is_multiple_of(5) {
        0
    } else {
        rng.below(60)
    };
    (0..n)
        .map(|_| Fact {
            // NULL is a real value of each dimension.
            a: [Some("x"), Some("y"), Some("it's"), None][rng.below(4) as usize].map(str::to_owned),
            b: [Some(1), Some(2), None][rng.below(3) as usize],
            c: [Some(true), Some(false), None][rng.below(3) as usize],
            user: (rng.below(6) > 0).then(|| rng.below(5) as i64),
            amount: (rng.below(8) > 0).then(|| rng.below(1000) as i64 - 300),
            flag: rng.below(2) == 0,
        })
        .collect()
}

/// One output row of the reference: key (a, b, c with rolled-up dims as
/// None), mask, and metrics.
type Key = (Option<String>, Option<i32>, Option<bool>);

#[derive(Debug, Clone, PartialEq, Default)]
struct Agg5 {
    count_all: i64,
    count_amount: i64,
    users: BTreeSet<i64>,
    sum: Option<Decimal>,
    min: Option<i64>,
    max: Option<i64>,
    flagged: i64,
}

/// In-memory GROUPING SETS: each set is the dimensions it groups by.
fn reference(facts: &[Fact], sets: &[Vec<usize>]) -> BTreeMap<(u32, Key), Agg5> {
    let mut out = BTreeMap::new();
    for set in sets {
        let mask = (0..3)
            .filter(|i| !set.contains(i))
            .fold(0, |m, i| m | 1 << (2 - i));
        let mut groups: BTreeMap<Key, Agg5> = BTreeMap::new();
        for f in facts {
            let key = (
                f.a.clone().filter(|_| set.contains(&0)),
                f.b.filter(|_| set.contains(&1)),
                f.c.filter(|_| set.contains(&2)),
            );
            let g = groups.entry(key).or_default();
            g.count_all += 1;
            if let Some(a) = f.amount {
                g.count_amount += 1;
                g.sum = Some(g.sum.unwrap_or_default() + Decimal::from(a));
                g.min = Some(g.min.map_or(a, |m| Ord::min(m, a)));
                g.max = Some(g.max.map_or(a, |m| Ord::max(m, a)));
            }
            if let Some(u) = f.user {
                g.users.insert(u);
            }
            g.flagged += f.flag as i64;
        }
        // The empty set over no rows still yields one row (an ungrouped
        // aggregate over nothing); other sets yield none.
        if set.is_empty() && facts.is_empty() {
            groups.insert((None, None, None), Agg5::default());
        }
        for (k, g) in groups {
            out.insert((mask, k), g);
        }
    }
    out
}

struct Facts {
    table: Table,
    a: pgpatterns::Column<String>,
    b: pgpatterns::Column<i32>,
    c: pgpatterns::Column<bool>,
    user: pgpatterns::Column<i64>,
    amount: pgpatterns::Column<i64>,
    flag: pgpatterns::Column<bool>,
}

fn facts_table() -> Facts {
    let table = Table::new("facts").unwrap();
    Facts {
        a: table.column("a").unwrap(),
        b: table.column("b").unwrap(),
        c: table.column("c").unwrap(),
        user: table.column("user_id").unwrap(),
        amount: table.column("amount").unwrap(),
        flag: table.column("flag").unwrap(),
        table,
    }
}

async fn load(client: &tokio_postgres::Client, rows: &[Fact]) {
    client.batch_execute("TRUNCATE facts").await.unwrap();
    for f in rows {
        let q = BuiltQuery::fixed_with(
            "INSERT INTO facts (a, b, c, user_id, amount, flag) VALUES ($1, $2, $3, $4, $5, $6)",
            [
                f.a.clone()
                    .map_or_else(String::null_value, String::into_value),
                f.b.map_or_else(i32::null_value, i32::into_value),
                f.c.map_or_else(bool::null_value, bool::into_value),
                f.user.map_or_else(i64::null_value, i64::into_value),
                f.amount.map_or_else(i64::null_value, i64::into_value),
                f.flag.into_value(),
            ],
        );
        q.execute(client).await.unwrap();
    }
}

struct Handles {
    a: Dim<String>,
    b: Dim<i32>,
    c: Dim<bool>,
    count_all: Metric<i64>,
    count_amount: Metric<i64>,
    users: Metric<i64>,
    sum: Metric<Decimal>,
    min: Metric<i64>,
    max: Metric<i64>,
    flagged: Metric<i64>,
}

fn spec(t: &Facts) -> (Rollup, Handles) {
    let h = Handles {
        a: Dim::new(&t.a),
        b: Dim::new(&t.b),
        c: Dim::named("c flag", &t.c),
        count_all: Metric::new("n", Agg::count_all()),
        count_amount: Metric::new("n_amount", Agg::count(&t.amount)),
        users: Metric::new("users", Agg::count_distinct(&t.user)),
        sum: Metric::new("sum", Agg::sum(&t.amount)),
        min: Metric::new("min", Agg::min(&t.amount)),
        max: Metric::new("max", Agg::max(&t.amount)),
        flagged: Metric::new("flagged", Agg::count_all().filter(t.flag.eq(true))),
    };
    let r = Rollup::new(&t.table)
        .dimension(&h.a)
        .dimension(&h.b)
        .dimension(&h.c)
        .metric(&h.count_all)
        .metric(&h.count_amount)
        .metric(&h.users)
        .metric(&h.sum)
        .metric(&h.min)
        .metric(&h.max)
        .metric(&h.flagged);
    (r, h)
}

fn decoded(rows: &[RollupRow], h: &Handles) -> Vec<((u32, Key), Agg5)> {
    rows.iter()
        .map(|r| {
            let key = (r.get(&h.a), r.get(&h.b), r.get(&h.c));
            let g = Agg5 {
                count_all: r.get(&h.count_all).unwrap(),
                count_amount: r.get(&h.count_amount).unwrap(),
                users: BTreeSet::new(),
                sum: r.get(&h.sum),
                min: r.get(&h.min),
                max: r.get(&h.max),
                flagged: r.get(&h.flagged).unwrap(),
            };
            ((r.grouping_mask(), key), g)
        })
        .collect()
}

/// The three dimensions of a facts spec (text, int4, bool).
pub(crate) struct Ids {
    pub(crate) a: Dim<String>,
    pub(crate) b: Dim<i32>,
    pub(crate) c: Dim<bool>,
}

impl Handles {
    fn ids(&self) -> Ids {
        Ids {
            a: self.a.clone(),
            b: self.b.clone(),
            c: self.c.clone(),
        }
    }
}

/// Every shape, as (apply to spec, the sets it means). Dimensions are
/// named as tuples of mixed types, arrays, single handles or erased lists.
#[allow(clippy::type_complexity)]
pub(crate) fn shapes() -> Vec<(&'static str, fn(Rollup, &Ids) -> Rollup, Vec<Vec<usize>>)> {
    vec![
        ("plain", |r, _| r, vec![vec![0, 1, 2]]),
        (
            "with_total",
            |r, _| r.with_total(),
            vec![vec![0, 1, 2], vec![]],
        ),
        (
            "rollup(a,b,c)",
            |r, h| r.rollup((&h.a, &h.b, &h.c)),
            vec![vec![0, 1, 2], vec![0, 1], vec![0], vec![]],
        ),
        (
            "rollup(c,a,b)",
            |r, h| r.rollup(vec![h.c.erase(), h.a.erase(), h.b.erase()]),
            vec![vec![0, 1, 2], vec![0, 2], vec![2], vec![]],
        ),
        (
            "cube(a,b,c)",
            |r, h| r.cube((&h.a, &h.b, &h.c)),
            vec![
                vec![0, 1, 2],
                vec![0, 1],
                vec![0, 2],
                vec![1, 2],
                vec![0],
                vec![1],
                vec![2],
                vec![],
            ],
        ),
        (
            "grouping sets ((a), (b, c), ())",
            |r, h| r.grouping_sets(((&h.a,), (&h.b, &h.c), ())),
            vec![vec![0], vec![1, 2], vec![]],
        ),
        (
            "a, rollup(b, c)",
            |r, h| r.group_by(&h.a).rollup((&h.b, &h.c)),
            vec![vec![0, 1, 2], vec![0, 1], vec![0]],
        ),
        (
            "rollup(a), cube(b)",
            |r, h| r.rollup(&h.a).cube([&h.b]),
            // c is named by no entry: grouped at every level.
            vec![vec![0, 1, 2], vec![0, 2], vec![1, 2], vec![2]],
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_grouping_matches_an_in_memory_group_by() {
    let schema = schema().await;
    let client = client(&schema).await;
    client
        .batch_execute(
            "CREATE TABLE facts (a text, b int4, c bool, user_id int8, amount int8, flag bool NOT NULL)",
        )
        .await
        .unwrap();
    let t = facts_table();
    let mut checked = 0;
    for seed in 0..16u64 {
        let data = facts(seed);
        load(&client, &data).await;
        for (name, apply, sets) in shapes() {
            let want = reference(&data, &sets);
            for total_first in [false, true] {
                let (r, h) = spec(&t);
                let mut r = apply(r, &h.ids());
                if total_first {
                    r = r.total_first();
                }
                let rows = r.fetch_all(&client).await.unwrap();
                let ctx = format!(
                    "seed {seed} {name} total_first={total_first}\n{}",
                    r.build().unwrap()
                );
                let got = decoded(&rows, &h);
                // Same rows (COUNT DISTINCT checked below) …
                let mut want_rows: Vec<((u32, Key), Agg5)> = want
                    .iter()
                    .map(|(k, g)| {
                        let mut g = g.clone();
                        g.users.clear();
                        (k.clone(), g)
                    })
                    .collect();
                let mut got_sorted = got.clone();
                got_sorted.sort_by(|x, y| x.0.cmp(&y.0));
                assert_eq!(got_sorted, want_rows, "{ctx}");
                for (row, ((mask, key), _)) in rows.iter().zip(&got) {
                    assert_eq!(
                        row.get(&h.users),
                        Some(want[&(*mask, key.clone())].users.len() as i64),
                        "count distinct per level: {ctx}"
                    );
                    // The level comes from GROUPING(), not from NULLs.
                    let expect = match mask {
                        0 => Level::Detail,
                        7 => Level::Total,
                        m => Level::Subtotal {
                            grouped_by: [&h.a.alias(), &h.b.alias(), &h.c.alias()]
                                .iter()
                                .enumerate()
                                .filter(|(i, _)| m & (1 << (2 - i)) == 0)
                                .map(|(_, a)| (**a).clone())
                                .collect(),
                        },
                    };
                    assert_eq!(row.level(), &expect, "{ctx}");
                }
                // … in the documented order: level (total last or first),
                // then the dimensions ascending, NULLs last.
                want_rows.sort_by(|x, y| {
                    let lvl = if total_first {
                        y.0 .0.cmp(&x.0 .0)
                    } else {
                        x.0 .0.cmp(&y.0 .0)
                    };
                    let k = |r: &((u32, Key), Agg5)| {
                        let (a, b, c) = r.0 .1.clone();
                        ((a.is_none(), a), (b.is_none(), b), (c.is_none(), c))
                    };
                    lvl.then(k(x).cmp(&k(y)))
                });
                assert_eq!(got, want_rows, "order: {ctx}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 16 * shapes().len() * 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_null_dimension_values_are_detail_rows() {
    let schema = schema().await;
    let client = client(&schema).await;
    client
        .batch_execute(
            "CREATE TABLE facts (a text, b int4, c bool, user_id int8, amount int8, flag bool NOT NULL);
             INSERT INTO facts VALUES (NULL, NULL, NULL, 1, 5, true), ('x', 1, true, 2, 7, false);",
        )
        .await
        .unwrap();
    let t = facts_table();
    let (r, h) = spec(&t);
    let rows = r.with_total().fetch_all(&client).await.unwrap();
    assert_eq!(rows.len(), 3);
    // ('x', 1, true) then the all-NULL detail row (NULLs last), then the total.
    assert_eq!(rows[0].get(&h.a).as_deref(), Some("x"));
    assert_eq!(rows[1].get(&h.a), None);
    assert_eq!(rows[1].get(&h.b), None);
    assert_eq!(rows[1].level(), &Level::Detail);
    assert!(!rows[1].is_rolled_up(&h.a));
    assert_eq!(rows[1].get(&h.sum), Some(Decimal::from(5)));
    assert_eq!(rows[2].level(), &Level::Total);
    assert!(rows[2].is_rolled_up(&h.a));
    assert_eq!(rows[2].get(&h.sum), Some(Decimal::from(12)));
    let split = Split::new(rows);
    assert_eq!(split.detail.len(), 2);
    assert_eq!(split.total.unwrap().get(&h.count_all), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn having_and_limit_per_level_match_the_reference() {
    let schema = schema().await;
    let client = client(&schema).await;
    client
        .batch_execute(
            "CREATE TABLE facts (a text, b int4, c bool, user_id int8, amount int8, flag bool NOT NULL)",
        )
        .await
        .unwrap();
    let t = facts_table();
    for seed in [1u64, 2, 3, 4, 6, 7] {
        let data = facts(seed);
        load(&client, &data).await;
        // c is named by no grouping entry: grouped at every level.
        let sets = vec![vec![0, 1, 2], vec![0, 2], vec![2]];
        let want = reference(&data, &sets);
        for limit in [1i64, 2, 5] {
            let (r, h) = spec(&t);
            let r = r
                .rollup((&h.a, &h.b))
                .having(h.count_all.gte(2))
                .rank_by(&h.count_all, Order::Desc)
                .limit_per_level(limit);
            let rows = r.fetch_all(&client).await.unwrap();
            let ctx = format!("seed {seed} limit {limit}\n{}", r.build().unwrap());
            // Reference: HAVING count >= 2, then per level the `limit`
            // largest counts, ties by dimensions ascending (NULLs last).
            let mut expected: Vec<(u32, Key, i64)> = Vec::new();
            for mask in [0b000u32, 0b010, 0b110] {
                let mut level: Vec<(u32, Key, i64)> = want
                    .iter()
                    .filter(|((m, _), g)| *m == mask && g.count_all >= 2)
                    .map(|((m, k), g)| (*m, k.clone(), g.count_all))
                    .collect();
                level.sort_by(|x, y| {
                    let k = |r: &(u32, Key, i64)| {
                        let (a, b, c) = r.1.clone();
                        ((a.is_none(), a), (b.is_none(), b), (c.is_none(), c))
                    };
                    y.2.cmp(&x.2).then(k(x).cmp(&k(y)))
                });
                expected.extend(level.into_iter().take(limit as usize));
            }
            let got: Vec<(u32, Key, i64)> = rows
                .iter()
                .map(|r| {
                    (
                        r.grouping_mask(),
                        (r.get(&h.a), r.get(&h.b), r.get(&h.c)),
                        r.get(&h.count_all).unwrap(),
                    )
                })
                .collect();
            assert_eq!(got, expected, "{ctx}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callers_parameterized_base_query_keeps_its_parameters() {
    let schema = schema().await;
    let client = client(&schema).await;
    SalesSeed::sample().run(&client, |_| {}).await.unwrap();
    let s = sale(Table::new(sales::SAMPLE_TABLE).unwrap());

    // The admin's filters: their own query with their own bound values.
    let base = Query::select()
        .column(s.merchant.col_ref())
        .column(s.device.col_ref())
        .column(s.user_id.col_ref())
        .column(s.amount.col_ref())
        .from(s.table.table_ref())
        .and_where(s.amount.gte(20))
        .and_where(s.merchant.is_in(["Costco", "Walmart", "Target"]))
        .to_owned();
    let filtered = Table::new("filtered").unwrap();
    let merchant = Dim::new(&filtered.column::<String>("merchant").unwrap());
    let device = Dim::new(&filtered.column::<String>("device").unwrap());
    let amount = filtered.column::<i32>("charged_amount").unwrap();
    let n = Metric::new("n", Agg::count_all());
    let big = Metric::new("big", Agg::count_all().filter(amount.gt(100)));
    let users = Metric::new(
        "users",
        Agg::count_distinct(filtered.column::<i32>("user_id").unwrap()),
    );
    // The dimensions are added by the rollup, in the order it names them.
    let r = Rollup::from_query(base, &filtered)
        .metric(&n)
        .metric(&big)
        .metric(&users)
        .rollup((&merchant, &device))
        .having(n.gte(2));
    let q = r.build().unwrap();
    // sea-query numbers placeholders in text order: the metric's FILTER
    // value in the select list comes first, then the caller's two values
    // inside the derived table, then HAVING. Each placeholder keeps its
    // own value and type.
    assert!(
        q.sql()
            .contains(r#"FILTER (WHERE "filtered"."charged_amount" > CAST($1 AS int4))"#),
        "{q}"
    );
    assert!(
        q.sql()
            .contains(r#""sale"."charged_amount" >= CAST($2 AS int4)"#),
        "{q}"
    );
    assert!(q.sql().contains("= ANY(CAST($3 AS text[]))"), "{q}");
    assert!(
        q.sql().contains("HAVING COUNT(*) >= CAST($4 AS int8)"),
        "{q}"
    );
    assert_eq!(
        q.values().0,
        vec![
            100i32.into_value(),
            20i32.into_value(),
            pgpatterns::sea_query::Value::Array(
                pgpatterns::sea_query::ArrayType::String,
                Some(Box::new(vec![
                    "Costco".to_owned().into_value(),
                    "Walmart".to_owned().into_value(),
                    "Target".to_owned().into_value(),
                ])),
            ),
            2i64.into_value(),
        ]
    );

    let rows = r.fetch_all(&client).await.unwrap();
    // amount >= 20 drops rows 4 (14) and 5 (15): Walmart D2 keeps 1 row,
    // then HAVING n >= 2 drops it.
    type Got = (Option<String>, Option<String>, i64, i64, i64, String);
    let got: Vec<Got> = rows
        .iter()
        .map(|row| {
            (
                row.get(&merchant),
                row.get(&device),
                row.get(&n).unwrap(),
                row.get(&big).unwrap(),
                row.get(&users).unwrap(),
                level_name(row),
            )
        })
        .collect();
    let o = |s: &str| Some(s.to_owned());
    assert_eq!(
        got,
        vec![
            (o("Costco"), o("D1"), 3, 1, 3, "detail".into()),
            (o("Costco"), o("D5"), 2, 2, 2, "detail".into()),
            (o("Walmart"), o("D1"), 2, 0, 1, "detail".into()),
            (o("Walmart"), o("D3"), 2, 0, 1, "detail".into()),
            (o("Costco"), None, 6, 3, 4, "by merchant".into()),
            (o("Walmart"), None, 5, 0, 2, "by merchant".into()),
            (None, None, 11, 3, 5, "total".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_values_stay_names_and_values() {
    let schema = schema().await;
    let client = client(&schema).await;
    client
        .batch_execute(
            r#"CREATE TABLE "Sale""; DROP TABLE x; --" ("Mer""chant" text, "amt" int4);
               INSERT INTO "Sale""; DROP TABLE x; --" VALUES ('a''; DROP', 1), ('a''; DROP', 2), (NULL, 3);"#,
        )
        .await
        .unwrap();
    let t = Table::new(r#"Sale"; DROP TABLE x; --"#).unwrap();
    let m = t.column::<String>(r#"Mer"chant"#).unwrap();
    let amt = t.column::<i32>("amt").unwrap();
    let dim = Dim::named(r#"m"); DROP TABLE "Sale"; --"#, &m);
    let sum = Metric::new(
        r#"s" FROM x; --"#,
        Agg::sum(&amt).filter(m.is_distinct_from("') OR 1=1 --")),
    );
    let r = Rollup::new(&t)
        .dimension(&dim)
        .metric(&sum)
        .with_total()
        .having(sum.gte(0));
    let q = r.build().unwrap();
    assert!(!q.sql().contains("'a"), "{q}");
    assert!(!q.sql().contains("OR 1=1"), "{q}");
    let rows = r.fetch_all(&client).await.unwrap();
    let got: Vec<(Option<String>, Option<i64>, bool)> = rows
        .iter()
        .map(|row| (row.get(&dim), row.get(&sum), row.level().is_total()))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("a'; DROP".to_owned()), Some(3), false),
            (None, Some(3), false),
            (None, Some(6), true),
        ]
    );
    // The hostile names came back as column names, exactly.
    let raw = client.rows(&q).await.unwrap();
    assert_eq!(raw[0].columns()[0].name(), r#"m"); DROP TABLE "Sale"; --"#);
    assert_eq!(raw[0].columns()[1].name(), r#"s" FROM x; --"#);
    // A wrapped query with a hostile alias too.
    let base = Query::select()
        .expr_as(Expr::col(m.col_ref()), Alias::new("k"))
        .from(t.table_ref())
        .to_owned();
    let alias = Table::new(r#"f"; --"#).unwrap();
    let k = Dim::new(&alias.column::<String>("k").unwrap());
    let n = Metric::new("n", Agg::count_all());
    let w = Rollup::from_query(base, &alias).dimension(&k).metric(&n);
    let rows = w.fetch_all(&client).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].get(&k).as_deref(), Some("a'; DROP"));
    assert_eq!(rows[0].get(&n), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn names_next_to_the_internal_ones_are_only_names() {
    let schema = schema().await;
    let client = client(&schema).await;
    client
        .batch_execute(
            r#"CREATE TABLE "rollup_pre" ("d0" text, "m0" text, v int8);
               INSERT INTO "rollup_pre" SELECT 'd' || (g % 3), 'm' || (g % 2), g
               FROM generate_series(1, 30) g;"#,
        )
        .await
        .unwrap();
    // The same report under names that look like the internal ones: the
    // partial columns (d0, m0, m0_n), other cases of the reserved names,
    // and a base table called like the pre-aggregated subquery.
    let t = Table::new("rollup_pre").unwrap();
    let d0 = t.column::<String>("d0").unwrap();
    let m0 = t.column::<String>("m0").unwrap();
    let v = t.column::<i64>("v").unwrap();
    let mut results = Vec::new();
    let a = Dim::named("m0", &d0);
    let b = Dim::named("Rollup_Rank", &m0);
    let n = Metric::new("d0", Agg::count_all());
    let s = Metric::new("m0_n", Agg::sum(&v));
    let g = Metric::new("ROLLUP_GROUPING", Agg::sum(&v));
    for strategy in pgpatterns::RollupStrategy::ALL {
        // The same handles in each strategy's report.
        let r = Rollup::new(&t)
            .strategy(strategy)
            .rollup((&a, &b))
            .metric(&n)
            .metric(&s)
            .metric(&g)
            .having(n.gte(1))
            .rank_by(&s, Order::Desc)
            .limit_per_level(2);
        let rows = r.fetch_all(&client).await.unwrap();
        let got: Vec<_> = rows
            .iter()
            .map(|row| {
                (
                    row.grouping_mask(),
                    row.get(&a),
                    row.get(&b),
                    row.get(&n),
                    row.get(&s),
                    row.get(&g),
                )
            })
            .collect();
        results.push((strategy, got));
    }
    // Sums per (d0, m0): d = g % 3, m = g % 2 over 1..=30.
    let sum = |d: i64, m: Option<i64>| -> Option<Decimal> {
        Some(Decimal::from(
            (1..=30)
                .filter(|g| g % 3 == d && m.is_none_or(|m| g % 2 == m))
                .sum::<i64>(),
        ))
    };
    let o = |s: &str| Some(s.to_owned());
    let expected = vec![
        (
            0u32,
            o("d0"),
            o("m0"),
            Some(5),
            sum(0, Some(0)),
            sum(0, Some(0)),
        ),
        (
            0,
            o("d2"),
            o("m1"),
            Some(5),
            sum(2, Some(1)),
            sum(2, Some(1)),
        ),
        (1, o("d0"), None, Some(10), sum(0, None), sum(0, None)),
        (1, o("d2"), None, Some(10), sum(2, None), sum(2, None)),
        (
            3,
            None,
            None,
            Some(30),
            Some(Decimal::from(465)),
            Some(Decimal::from(465)),
        ),
    ];
    for (strategy, got) in results {
        assert_eq!(got, expected, "{strategy:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_query_bases_with_hostile_aliases_return_the_right_rows() {
    let schema = schema().await;
    let client = client(&schema).await;
    client
        .batch_execute(
            "CREATE TABLE src (k text, v int8);
             INSERT INTO src VALUES ('a', 1), ('a', 2), ('b', 3), (NULL, 4);",
        )
        .await
        .unwrap();
    let src = Table::new("src").unwrap();
    let long = format!(
        "{}xé",
        "x\"$$\\ ".repeat(10).chars().take(60).collect::<String>()
    );
    assert_eq!(long.len(), 63);
    for alias in [
        r#"b"; DROP TABLE src; --"#,
        "$$ dollar $$",
        "back\\slash",
        "Ünïcødé ☃",
        "  spaced  ",
        "select",
        "rollup_pre",
        "rollup_grouped",
        long.as_str(),
    ] {
        let base = Query::select()
            .expr_as(
                Expr::col(src.column::<String>("k").unwrap().col_ref()),
                Alias::new(alias),
            )
            .expr_as(
                Expr::col(src.column::<i64>("v").unwrap().col_ref()),
                Alias::new("v"),
            )
            .from(src.table_ref())
            .and_where(pgpatterns::sea_query::ExprTrait::lt(
                Expr::col(Alias::new("v")),
                4i64.param(),
            ))
            .to_owned();
        let t = Table::new(alias).unwrap();
        for strategy in pgpatterns::RollupStrategy::ALL {
            let k = Dim::named("k", t.column::<String>(alias).unwrap());
            let n = Metric::new("n", Agg::count_all());
            let s = Metric::new("s", Agg::sum(&t.column::<i64>("v").unwrap()));
            let r = Rollup::from_query(base.clone(), &t)
                .strategy(strategy)
                .dimension(&k)
                .metric(&n)
                .metric(&s)
                .with_total()
                .rank_by(&n, Order::Desc)
                .limit_per_level(5);
            let rows = r.fetch_all(&client).await.unwrap();
            let got: Vec<_> = rows
                .iter()
                .map(|row| {
                    (
                        row.get(&k),
                        row.get(&n),
                        row.get(&s),
                        row.level().is_total(),
                    )
                })
                .collect();
            assert_eq!(
                got,
                vec![
                    (Some("a".to_owned()), Some(2), Some(dec("3")), false),
                    (Some("b".to_owned()), Some(1), Some(dec("3")), false),
                    (None, Some(3), Some(dec("6")), true),
                ],
                "{alias:?} {strategy:?}\n{}",
                r.build().unwrap()
            );
        }
    }
}

/// A report over real rows with a real NULL dimension value and NULL
/// metrics, read back through the handles at every level, and printed.
struct Shops {
    rollup: Rollup,
    region: Dim<String>,
    shop: Dim<String>,
    n: Metric<i64>,
    flagged: Metric<i64>,
    top: Metric<i32>,
    price: Metric<f64>,
}

fn shops() -> Shops {
    let t = Table::new("shops").unwrap();
    let region = Dim::new(&t.column::<String>("region").unwrap());
    let shop = Dim::new(&t.column::<String>("shop").unwrap());
    let amount = t.column::<i32>("amount").unwrap();
    let flag = t.column::<bool>("flag").unwrap();
    let n = Metric::new("n", Agg::count_all());
    let flagged = Metric::new("flagged", Agg::sum(&amount).filter(flag.eq(true)));
    let top = Metric::new("top", Agg::max(&amount).filter(flag.eq(true)));
    let price = Metric::new("price", Agg::avg(&t.column::<f64>("price").unwrap()));
    let rollup = Rollup::new(&t)
        .rollup((&region, &shop))
        .metric(&n)
        .metric(&flagged)
        .metric(&top)
        .metric(&price);
    Shops {
        rollup,
        region,
        shop,
        n,
        flagged,
        top,
        price,
    }
}

async fn load_shops(client: &tokio_postgres::Client) {
    client
        .batch_execute(
            "CREATE TABLE shops (region text, shop text, amount int4, price float8, flag bool);
             INSERT INTO shops VALUES
               ('north', 'a', 10, 0.1, true), ('north', 'a', 20, 0.2, false),
               ('north', NULL, 5, 2.5, false), ('south', 'b', 7, 1e20, true);",
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handles_read_every_level_and_the_table_prints_it_like_psql() {
    let schema = schema().await;
    let client = client(&schema).await;
    load_shops(&client).await;
    let s = shops();
    let rows = s.rollup.fetch_all(&client).await.unwrap();
    let all = DimValue::All;
    let v = |x: &str| DimValue::Value(x.to_owned());
    type Want = (
        DimValue<String>,
        DimValue<String>,
        i64,
        Option<i64>,
        Option<i32>,
    );
    let want: [Want; 6] = [
        (v("north"), v("a"), 2, Some(10), Some(10)),
        (v("north"), DimValue::Null, 1, None, None),
        (v("south"), v("b"), 1, Some(7), Some(7)),
        (v("north"), all.clone(), 3, Some(10), Some(10)),
        (v("south"), all.clone(), 1, Some(7), Some(7)),
        (all.clone(), all.clone(), 4, Some(17), Some(10)),
    ];
    assert_eq!(rows.len(), want.len());
    for (row, (region, shop, n, flagged, top)) in rows.iter().zip(want) {
        assert_eq!(row.dim(&s.region), region, "{row}");
        assert_eq!(row.dim(&s.shop), shop, "{row}");
        assert_eq!(row.get(&s.region), region.clone().value(), "{row}");
        assert_eq!(row.is_rolled_up(&s.shop), shop.is_all(), "{row}");
        assert_eq!(row.get(&s.n), Some(n), "{row}");
        assert_eq!(row.get(&s.flagged), flagged, "{row}");
        assert_eq!(row.try_get(&s.top).unwrap(), top, "{row}");
        assert!(row.get(&s.price).is_some(), "{row}");
    }
    assert!(rows[..3].iter().all(RollupRow::is_detail));
    assert!(rows[3..5].iter().all(RollupRow::is_subtotal));
    assert!(rows[5].is_total());
    assert_eq!(
        rows[3].level(),
        &Level::Subtotal {
            grouped_by: vec![s.region.alias().clone()]
        }
    );

    // The NULL shop is NULL, the rolled-up one (all); numbers as psql
    // prints them (float8 in its shortest exact form).
    assert_eq!(
        RollupTable::new(&rows).to_string(),
        [
            " region | shop  | n | flagged | top  |        price",
            "--------+-------+---+---------+------+---------------------",
            " north  | a     | 2 |      10 |   10 | 0.15000000000000002",
            " north  | NULL  | 1 |    NULL | NULL |                 2.5",
            " south  | b     | 1 |       7 |    7 |               1e+20",
            " north  | (all) | 3 |      10 |   10 |  0.9333333333333332",
            " south  | (all) | 1 |       7 |    7 |               1e+20",
            " (all)  | (all) | 4 |      17 |   10 |             2.5e+19",
            "(6 rows)",
        ]
        .join("\n")
    );
    assert_eq!(
        rows[1].to_string(),
        "region: north, shop: NULL, n: 1, flagged: NULL, top: NULL, price: 2.5"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_not_in_the_report_is_an_error_not_a_value() {
    let schema = schema().await;
    let client = client(&schema).await;
    load_shops(&client).await;
    let mine = shops();
    // The same report built again: same names, types and positions, but
    // other handles, not added to `mine`.
    let other = shops();
    let rows = mine.rollup.fetch_all(&client).await.unwrap();
    let row = &rows[0];
    assert_eq!(row.get(&mine.region).as_deref(), Some("north"));
    for (e, what) in [
        (row.try_get(&other.region).unwrap_err(), "dimension"),
        (row.try_get(&other.n).unwrap_err(), "metric"),
        (row.try_dim(&other.shop).unwrap_err(), "dimension"),
    ] {
        let want = format!("is not a {what} of the report this row comes from");
        assert!(
            matches!(&e, Error::InvalidSpec { field: "handle", reason } if reason.contains(&want)),
            "{e:?}"
        );
        assert!(e.is_invalid_input());
    }
    let panic = std::panic::catch_unwind(|| row.get(&other.n));
    assert!(panic.is_err());

    // A handle used in two reports reads its column in both, wherever it
    // sits; handles of the first report not added here are not columns.
    let t = Table::new("shops").unwrap();
    let by_region = Rollup::new(&t)
        .group_by(&mine.region)
        .metric(&other.n)
        .metric(&mine.flagged);
    let regions = by_region.fetch_all(&client).await.unwrap();
    let got: Vec<_> = regions
        .iter()
        .map(|r| (r.get(&mine.region), r.get(&other.n), r.get(&mine.flagged)))
        .collect();
    assert_eq!(
        got,
        vec![
            (Some("north".to_owned()), Some(3), Some(10)),
            (Some("south".to_owned()), Some(1), Some(7)),
        ]
    );
    assert_eq!(rows[3].get(&mine.region), regions[0].get(&mine.region));
    assert_eq!(rows[3].get(&mine.flagged), regions[0].get(&mine.flagged));
    let e = regions[0].try_get(&mine.n).unwrap_err();
    assert!(
        matches!(
            &e,
            Error::InvalidSpec {
                field: "handle",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(regions[0].try_dim(&mine.shop).is_err());
    assert!(rows[0].try_get(&other.n).is_err());

    // A clone shares the handles: the same report run another way.
    let pre = mine.rollup.clone().strategy(RollupStrategy::PreAggregate);
    let again = pre.fetch_all(&client).await.unwrap();
    assert_eq!(again, rows);
    assert_eq!(again[5].get(&mine.n), Some(4));
}
