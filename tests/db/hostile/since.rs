//! `since` on hostile schemas: a root with a child, a grandchild (2 hops
//! through the child), a parent and a grandparent (2 hops through the
//! parent), `timestamp` and `timestamptz` change columns, a base filter,
//! `i64` or text keys (sometimes long); every strategy and `Auto` return
//! the reference's roots, counts, both page walks and what changed.

use std::collections::BTreeMap;
use std::fmt::Debug;

use chrono::{DateTime, Duration, FixedOffset, NaiveDateTime, TimeZone, Utc};
use pgpatterns::sea_query::{Alias, ColumnDef, Expr, Index, Query, Table as Ddl};
use pgpatterns::{
    AnyColumn, BuiltQuery, Column, CursorKey, Executor, PageOrder, PageRequest, Relation,
    SinceGraph, SinceStrategy, SqlType, Table,
};
use proptest::prelude::*;

use super::{check, idents, runtime, Problems};
use crate::support::{client, insert, schema};

fn since0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).unwrap()
}

const DELTAS_MICROS: [i64; 7] = [-3_600_000_000, -1, 0, 0, 1, 1_000_000, 86_400_000_000];
const SINCES_MICROS: [i64; 3] = [0, 1, -365 * 86_400_000_000];

type At = Option<i64>;

/// A table, its columns and its rows.
type Load<'a> = (&'a Table, Vec<AnyColumn>, Vec<Vec<Expr>>);

fn at() -> impl Strategy<Value = At> {
    prop::option::weighted(0.85, prop::sample::select(&DELTAS_MICROS[..]))
}

fn instant(d: i64) -> DateTime<Utc> {
    since0() + Duration::microseconds(d)
}

#[derive(Debug, Clone)]
pub(super) struct Case {
    /// root, child, grandchild, parent, grandparent
    tables: Vec<String>,
    /// root: key, parent fk, flag, change; child: id, root fk, change;
    /// grandchild: id, child fk, change; parent: id, grandparent fk,
    /// change; grandparent: id, change.
    cols: Vec<Vec<String>>,
    /// Per table: `timestamptz` (else `timestamp`).
    tz: Vec<bool>,
    qualified: bool,
    offset_west: bool,
    string_keys: bool,
    long_keys: bool,
    filter: bool,
    roots: Vec<(usize, bool, At)>,
    children: Vec<(usize, At)>,
    grandchildren: Vec<(usize, At)>,
    parents: Vec<(usize, At)>,
    grandparents: Vec<At>,
    sinces: Vec<usize>,
    limit: i64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        (
            idents(5),
            (idents(4), idents(3), idents(3), idents(3), idents(2)),
            prop::collection::vec(any::<bool>(), 5),
        ),
        (
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            prop::bool::weighted(0.5),
            any::<bool>(),
        ),
        (
            prop::collection::vec((0..8usize, prop::bool::weighted(0.8), at()), 0..10),
            prop::collection::vec((0..12usize, at()), 0..12),
            prop::collection::vec((0..14usize, at()), 0..10),
            prop::collection::vec((0..6usize, at()), 0..5),
            prop::collection::vec(at(), 0..3),
        ),
        (
            prop::sample::subsequence(vec![0usize, 1, 2], 1..=2),
            1..4i64,
        ),
    )
        .prop_map(
            |(
                (tables, (r, c, g, p, q), tz),
                (qualified, offset_west, string_keys, long_keys, filter),
                (roots, children, grandchildren, parents, grandparents),
                (sinces, limit),
            )| Case {
                tables,
                cols: vec![r, c, g, p, q],
                tz,
                qualified,
                offset_west,
                string_keys,
                long_keys: long_keys && string_keys,
                filter,
                roots,
                children,
                grandchildren,
                parents,
                grandparents,
                sinces,
                limit,
            },
        )
}

impl Case {
    fn offset(&self) -> FixedOffset {
        if self.offset_west {
            FixedOffset::west_opt(5 * 3600 + 30 * 60).unwrap()
        } else {
            FixedOffset::east_opt(0).unwrap()
        }
    }

    /// Per root, relation index → newest change `>= since` (0 root, 1
    /// child, 2 grandchild, 3 parent, 4 grandparent); only matching roots.
    fn reference(&self, since: i64) -> BTreeMap<usize, BTreeMap<usize, i64>> {
        let mut out = BTreeMap::new();
        let newest = |m: &mut BTreeMap<usize, i64>, rel: usize, at: At| {
            if let Some(t) = at.filter(|t| *t >= since) {
                let e = m.entry(rel).or_insert(t);
                *e = (*e).max(t);
            }
        };
        for (i, &(parent, flag, at)) in self.roots.iter().enumerate() {
            if self.filter && !flag {
                continue;
            }
            let mut m = BTreeMap::new();
            newest(&mut m, 0, at);
            for (ci, &(root, at)) in self.children.iter().enumerate() {
                if root == i {
                    newest(&mut m, 1, at);
                    for &(child, at) in &self.grandchildren {
                        if child == ci {
                            newest(&mut m, 2, at);
                        }
                    }
                }
            }
            if let Some(&(gp, at)) = self.parents.get(parent) {
                newest(&mut m, 3, at);
                if let Some(&at) = self.grandparents.get(gp) {
                    newest(&mut m, 4, at);
                }
            }
            if !m.is_empty() {
                out.insert(i, m);
            }
        }
        out
    }
}

/// A root key type of the property.
trait Key: CursorKey + Clone + Ord + Debug + Send + Sync + 'static {
    fn make(i: usize, long: bool) -> Self;
}

impl Key for i64 {
    fn make(i: usize, _: bool) -> i64 {
        (i as i64 * 37) % 1009 + 1
    }
}

impl Key for String {
    fn make(i: usize, long: bool) -> String {
        let v = super::VALUES[i % super::VALUES.len()];
        if long {
            // past the 4096-character (hex) cursor limit
            format!("{v}{}{i}", "x".repeat(2100))
        } else {
            format!("{v}{i}")
        }
    }
}

fn change_col(t: &Table, name: &str, tz: bool) -> AnyColumn {
    if tz {
        t.column::<DateTime<Utc>>(name).unwrap().erase()
    } else {
        t.column::<NaiveDateTime>(name).unwrap().erase()
    }
}

fn change_param(at: At, tz: bool, offset: FixedOffset) -> Expr {
    let t = at.map(instant);
    if tz {
        DateTime::<Utc>::param_opt(t)
    } else {
        let wall = t.map(|t| t.naive_utc() + Duration::seconds(offset.local_minus_utc().into()));
        NaiveDateTime::param_opt(wall)
    }
}

/// `CREATE TABLE` with the first column as primary key.
fn create(table: &Table, cols: &[AnyColumn]) -> BuiltQuery {
    let mut stmt = Ddl::create();
    stmt.table(table.table_name());
    for c in cols {
        stmt.col(ColumnDef::new(c.iden()).custom(Alias::new(c.sql_type())));
    }
    stmt.primary_key(Index::create().col(cols[0].iden()));
    BuiltQuery::schema(&stmt)
}

/// `keys` in the server's order (its collation for text).
async fn db_order<K: Key>(client: &tokio_postgres::Client, keys: &[K]) -> Result<Vec<K>, String> {
    let q = BuiltQuery::new(
        &Query::select()
            .expr(Expr::cust_with_exprs(
                "u.k FROM unnest($1) AS u(k) ORDER BY u.k",
                [K::array_param(keys.to_vec())],
            ))
            .to_owned(),
    );
    let rows: Vec<(K,)> = client.rows_as(&q).await.map_err(|e| e.to_string())?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

async fn run<K: Key>(c: &Case, client: &tokio_postgres::Client, schema: &str, p: &mut Problems) {
    let t = |i: usize| {
        let n = &c.tables[i];
        if c.qualified {
            Table::in_schema(schema, n).unwrap()
        } else {
            Table::new(n).unwrap()
        }
    };
    let (root, child, grand, parent, gp) = (t(0), t(1), t(2), t(3), t(4));
    let col = |_: &Table, i: usize, j: usize| c.cols[i][j].clone();
    let key: Column<K> = root.column(col(&root, 0, 0)).unwrap();
    let pfk: Column<i64> = root.column(col(&root, 0, 1)).unwrap();
    let flag: Column<bool> = root.column(col(&root, 0, 2)).unwrap();
    let root_at = change_col(&root, &c.cols[0][3], c.tz[0]);
    let child_id: Column<i64> = child.column(col(&child, 1, 0)).unwrap();
    let child_fk: Column<K> = child.column(col(&child, 1, 1)).unwrap();
    let child_at = change_col(&child, &c.cols[1][2], c.tz[1]);
    let grand_id: Column<i64> = grand.column(col(&grand, 2, 0)).unwrap();
    let grand_fk: Column<i64> = grand.column(col(&grand, 2, 1)).unwrap();
    let grand_at = change_col(&grand, &c.cols[2][2], c.tz[2]);
    let parent_id: Column<i64> = parent.column(col(&parent, 3, 0)).unwrap();
    let parent_fk: Column<i64> = parent.column(col(&parent, 3, 1)).unwrap();
    let parent_at = change_col(&parent, &c.cols[3][2], c.tz[3]);
    let gp_id: Column<i64> = gp.column(col(&gp, 4, 0)).unwrap();
    let gp_at = change_col(&gp, &c.cols[4][1], c.tz[4]);

    let offset = c.offset();
    let keys: Vec<K> = (0..c.roots.len())
        .map(|i| K::make(i, c.long_keys))
        .collect();
    let orphan = |i: usize| K::make(100 + i, false);
    let tables: Vec<Load> = vec![
        (
            &root,
            vec![key.erase(), pfk.erase(), flag.erase(), root_at.clone()],
            c.roots
                .iter()
                .enumerate()
                .map(|(i, &(par, f, at))| {
                    vec![
                        keys[i].clone().param(),
                        (par as i64).param(),
                        f.param(),
                        change_param(at, c.tz[0], offset),
                    ]
                })
                .collect(),
        ),
        (
            &child,
            vec![child_id.erase(), child_fk.erase(), child_at.clone()],
            c.children
                .iter()
                .enumerate()
                .map(|(i, &(r, at))| {
                    let k = keys.get(r).cloned().unwrap_or_else(|| orphan(r));
                    vec![
                        (i as i64).param(),
                        k.param(),
                        change_param(at, c.tz[1], offset),
                    ]
                })
                .collect(),
        ),
        (
            &grand,
            vec![grand_id.erase(), grand_fk.erase(), grand_at.clone()],
            c.grandchildren
                .iter()
                .enumerate()
                .map(|(i, &(ch, at))| {
                    vec![
                        (i as i64).param(),
                        (ch as i64).param(),
                        change_param(at, c.tz[2], offset),
                    ]
                })
                .collect(),
        ),
        (
            &parent,
            vec![parent_id.erase(), parent_fk.erase(), parent_at.clone()],
            c.parents
                .iter()
                .enumerate()
                .map(|(i, &(g, at))| {
                    vec![
                        (i as i64).param(),
                        (g as i64).param(),
                        change_param(at, c.tz[3], offset),
                    ]
                })
                .collect(),
        ),
        (
            &gp,
            vec![gp_id.erase(), gp_at.clone()],
            c.grandparents
                .iter()
                .enumerate()
                .map(|(i, &at)| vec![(i as i64).param(), change_param(at, c.tz[4], offset)])
                .collect(),
        ),
    ];
    for (table, cols, rows) in tables {
        let q = create(table, &cols);
        if p.ok(|| format!("create\n{q}"), q.execute(client).await)
            .is_none()
        {
            return;
        }
        if !rows.is_empty() {
            let q = insert(table, &cols, rows);
            if p.ok(|| format!("load\n{q}"), q.execute(client).await)
                .is_none()
            {
                return;
            }
        }
    }

    let to_child = Relation::new(&child_fk, &key);
    let to_parent = Relation::new(&pfk, &parent_id);
    let labels: Vec<String> = c.tables.clone();
    let mut graph = SinceGraph::new(&key, &root_at).timestamp_offset(offset);
    if c.filter {
        graph = graph.filter(flag.eq(true));
    }
    let graph = graph
        .related(&labels[1], to_child.clone(), &child_at)
        .path(
            &labels[2],
            [to_child, Relation::new(&grand_fk, &child_id)],
            &grand_at,
        )
        .related(&labels[3], to_parent.clone(), &parent_at)
        .path(
            &labels[4],
            [to_parent, Relation::new(&parent_fk, &gp_id)],
            &gp_at,
        );
    let Some(()) = p.ok(|| "graph".into(), graph.since(Utc::now()).check()) else {
        return;
    };
    let Some(key_order) = p.ok(|| "key order".into(), db_order(client, &keys).await) else {
        return;
    };
    let rank: BTreeMap<K, usize> = key_order
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, k)| (k, i))
        .collect();

    for &s in &c.sinces {
        let since = instant(SINCES_MICROS[s]);
        let want = c.reference(SINCES_MICROS[s]);
        let mut by_key: Vec<K> = want.keys().map(|&i| keys[i].clone()).collect();
        by_key.sort_by_key(|k| rank[k]);
        let mut by_time: Vec<(bool, Option<i64>, usize, K)> = want
            .keys()
            .map(|&i| {
                let at = c.roots[i].2;
                (at.is_none(), at, rank[&keys[i]], keys[i].clone())
            })
            .collect();
        by_time.sort();
        let by_time: Vec<K> = by_time.into_iter().map(|t| t.3).collect();
        let mut want_changes: Vec<(K, String, DateTime<Utc>)> = Vec::new();
        for (&i, m) in &want {
            for (&r, &t) in m {
                want_changes.push((keys[i].clone(), labels[r].clone(), instant(t)));
            }
        }
        want_changes.sort();
        let mut want_set = by_key.clone();
        want_set.sort();

        for strategy in SinceStrategy::ALL.into_iter().chain([SinceStrategy::Auto]) {
            let ctx = || format!("{strategy:?} since {since}");
            let q = graph.since(since).strategy(strategy);
            let Some(()) = p.ok(ctx, q.check()) else {
                continue;
            };
            let resolved = q.resolve(client, pgpatterns::Shape::All).await;
            let Some(resolved) = p.ok(|| format!("{} resolve", ctx()), resolved) else {
                continue;
            };
            let built = resolved.build().unwrap();
            let rows: Result<Vec<(K,)>, _> = client.rows_as(&built).await;
            if let Some(rows) = p.ok(|| format!("{} rows\n{built}", ctx()), rows) {
                let mut got: Vec<K> = rows.into_iter().map(|r| r.0).collect();
                got.sort();
                p.same(
                    || {
                        format!(
                            "{} chose {:?}: roots\n{built}",
                            ctx(),
                            resolved.chosen_strategy()
                        )
                    },
                    &got,
                    &want_set,
                );
            }
            let n = q.count(client).await;
            if let Some(n) = p.ok(
                || format!("{} count\n{}", ctx(), q.count_query().unwrap()),
                n,
            ) {
                p.same(|| format!("{} count", ctx()), &n, &(want.len() as i64));
            }
            for (order, want_keys) in [(PageOrder::Key, &by_key), (PageOrder::ChangeTime, &by_time)]
            {
                let mut req = PageRequest::new(c.limit).order(order);
                let mut seen: Vec<K> = Vec::new();
                let mut changes: Vec<(K, String, DateTime<Utc>)> = Vec::new();
                for _ in 0..100 {
                    let page = q.fetch_page::<(K,)>(client, &req).await;
                    let pctx = || {
                        format!(
                            "{} {order:?} page of {}\n{:?}",
                            ctx(),
                            c.limit,
                            q.page_query(&req).map(|q| q.to_string())
                        )
                    };
                    let Some(page) = p.ok(pctx, page) else { break };
                    let decoded: Vec<K> = page.rows.iter().map(|r| r.0.clone()).collect();
                    p.same(
                        || format!("{} {order:?}: keys (since_key) vs root.* key", ctx()),
                        &page.keys,
                        &decoded,
                    );
                    if order == PageOrder::Key && !page.keys.is_empty() {
                        let ch = q.fetch_changes(client, &page.keys).await;
                        let cctx = || {
                            format!(
                                "{} what changed\n{:?}",
                                ctx(),
                                q.changes_query(&page.keys).map(|q| q.to_string())
                            )
                        };
                        if let Some(ch) = p.ok(cctx, ch) {
                            changes.extend(
                                ch.into_iter()
                                    .map(|ch| (ch.key, ch.relation.to_string(), ch.newest)),
                            );
                        }
                    }
                    seen.extend(decoded);
                    match page.next {
                        Some(next) => req = req.after(next),
                        None => break,
                    }
                }
                p.same(
                    || format!("{} {order:?} page walk of {}", ctx(), c.limit),
                    &seen,
                    want_keys,
                );
                if order == PageOrder::Key {
                    changes.sort();
                    p.same(
                        || format!("{} what changed", ctx()),
                        &changes,
                        &want_changes,
                    );
                }
            }
        }
    }
    // Index advice of every strategy runs (twice: IF NOT EXISTS).
    for strategy in SinceStrategy::ALL {
        for q in graph.index_advice(strategy) {
            for _ in 0..2 {
                let r = q.execute(client).await;
                p.ok(|| format!("index advice {strategy:?}\n{q}"), r);
            }
        }
    }
}

fn run_case(c: &Case) -> Problems {
    runtime().block_on(async {
        let mut p = Problems::default();
        let schema = schema().await;
        let client = client(&schema).await;
        if c.string_keys {
            run::<String>(c, &client, schema.name(), &mut p).await;
        } else {
            run::<i64>(c, &client, schema.name(), &mut p).await;
        }
        p
    })
}

#[test]
fn since_every_strategy_matches_the_reference_on_hostile_schemas() {
    check("since", 10, case(), run_case);
}
