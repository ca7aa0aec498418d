//! `since` against a real server: every strategy equals a plain-Rust
//! reference on random relation graphs (missing children, NULL change times,
//! equal timestamps at the inclusive boundary, `timestamp` and `timestamptz`
//! columns, a non-UTC `timestamp` offset, multi-hop paths with the foreign key
//! either way, roots failing the base predicates), including counts, every
//! page of both orders and what changed; keyset walks while rows change; the
//! seed-001 seeder; index advice; hostile names and values.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, FixedOffset, NaiveDateTime, TimeZone, Utc};
use pgpatterns::sea_query::{Alias, Expr, Order, Query};
use pgpatterns::{
    AnyColumn, BuiltQuery, Change, Column, Error, Executor, PageOrder, PageRequest, Relation,
    SinceGraph, SinceQuery, SinceStrategy, SqlType, Table,
};

use crate::support::{client, create_table, exec, fetch, insert, schema, Rng};

pub(crate) fn since() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 6, 1, 12, 0, 0).unwrap()
}

/// A change time near the boundary (equal to it often), or NULL.
fn change_time(rng: &mut Rng) -> Option<DateTime<Utc>> {
    const DELTAS_MICROS: [i64; 8] = [
        -3_600_000_000,
        -1_000_000,
        -1,
        0,
        0,
        1,
        1_000_000,
        86_400_000_000,
    ];
    if rng.chance(6) {
        return None;
    }
    let d = DELTAS_MICROS[rng.below(DELTAS_MICROS.len() as u64) as usize];
    Some(since() + Duration::microseconds(d))
}

/// The test schema's handles. `timestamp` columns: moves, orders, addrs,
/// items; `timestamptz`: sms, ships, notes.
pub(crate) struct Shop {
    pub(crate) moves: Table,
    pub(crate) move_id: Column<i64>,
    pub(crate) move_orders: Column<i64>,
    pub(crate) show: Column<bool>,
    pub(crate) avail: Column<DateTime<Utc>>,
    pub(crate) move_at: Column<NaiveDateTime>,
    pub(crate) orders: Table,
    pub(crate) order_id: Column<i64>,
    pub(crate) order_sm: Column<i64>,
    pub(crate) order_at: Column<NaiveDateTime>,
    pub(crate) sms: Table,
    pub(crate) sm_id: Column<i64>,
    pub(crate) sm_at: Column<DateTime<Utc>>,
    pub(crate) ships: Table,
    pub(crate) ship_id: Column<i64>,
    pub(crate) ship_move: Column<i64>,
    pub(crate) ship_addr: Column<i64>,
    pub(crate) ship_at: Column<DateTime<Utc>>,
    pub(crate) addrs: Table,
    pub(crate) addr_id: Column<i64>,
    pub(crate) addr_at: Column<NaiveDateTime>,
    pub(crate) notes: Table,
    pub(crate) note_id: Column<i64>,
    pub(crate) note_addr: Column<i64>,
    pub(crate) note_at: Column<DateTime<Utc>>,
    pub(crate) items: Table,
    pub(crate) item_id: Column<i64>,
    pub(crate) item_ship: Column<i64>,
    pub(crate) item_at: Column<NaiveDateTime>,
}

impl Shop {
    pub(crate) fn new(prefix: &str) -> Shop {
        let t = |n: &str| Table::new(format!("{prefix}{n}")).unwrap();
        let (moves, orders, sms, ships, addrs, notes, items) = (
            t("moves"),
            t("orders"),
            t("service_members"),
            t("shipments"),
            t("addresses"),
            t("notes"),
            t("items"),
        );
        Shop {
            move_id: moves.column(format!("{prefix}id")).unwrap(),
            move_orders: moves.column("orders_id").unwrap(),
            show: moves.column("show").unwrap(),
            avail: moves.column("available_at").unwrap(),
            move_at: moves.column(format!("{prefix}updated_at")).unwrap(),
            order_id: orders.column("id").unwrap(),
            order_sm: orders.column("service_member_id").unwrap(),
            order_at: orders.column("updated_at").unwrap(),
            sm_id: sms.column("id").unwrap(),
            sm_at: sms.column("updated_at").unwrap(),
            ship_id: ships.column("id").unwrap(),
            ship_move: ships.column("move_id").unwrap(),
            ship_addr: ships.column("address_id").unwrap(),
            ship_at: ships.column("updated_at").unwrap(),
            addr_id: addrs.column("id").unwrap(),
            addr_at: addrs.column("updated_at").unwrap(),
            note_id: notes.column("id").unwrap(),
            note_addr: notes.column("address_id").unwrap(),
            note_at: notes.column("updated_at").unwrap(),
            item_id: items.column("id").unwrap(),
            item_ship: items.column("shipment_id").unwrap(),
            item_at: items.column("updated_at").unwrap(),
            moves,
            orders,
            sms,
            ships,
            addrs,
            notes,
            items,
        }
    }

    pub(crate) fn tables(&self) -> Vec<(&Table, Vec<AnyColumn>)> {
        vec![
            (
                &self.moves,
                vec![
                    self.move_id.erase(),
                    self.move_orders.erase(),
                    self.show.erase(),
                    self.avail.erase(),
                    self.move_at.erase(),
                ],
            ),
            (
                &self.orders,
                vec![
                    self.order_id.erase(),
                    self.order_sm.erase(),
                    self.order_at.erase(),
                ],
            ),
            (&self.sms, vec![self.sm_id.erase(), self.sm_at.erase()]),
            (
                &self.ships,
                vec![
                    self.ship_id.erase(),
                    self.ship_move.erase(),
                    self.ship_addr.erase(),
                    self.ship_at.erase(),
                ],
            ),
            (
                &self.addrs,
                vec![self.addr_id.erase(), self.addr_at.erase()],
            ),
            (
                &self.notes,
                vec![
                    self.note_id.erase(),
                    self.note_addr.erase(),
                    self.note_at.erase(),
                ],
            ),
            (
                &self.items,
                vec![
                    self.item_id.erase(),
                    self.item_ship.erase(),
                    self.item_at.erase(),
                ],
            ),
        ]
    }

    /// Creates the tables, each with its first column (the id) as primary
    /// key (GreatestGroupBy groups by the root's primary key).
    pub(crate) async fn create<E: Executor>(&self, e: &E) {
        for (table, cols) in self.tables() {
            let mut stmt = create_table(table, &cols);
            stmt.primary_key(pgpatterns::sea_query::Index::create().col(cols[0].iden()));
            exec(e, &BuiltQuery::schema(&stmt)).await;
        }
    }

    /// The graph: a parent, a parent of the parent, a child, a child of the
    /// child, a parent of the child, and a child of that parent (3 hops).
    pub(crate) fn graph(&self, offset: FixedOffset) -> SinceGraph<i64> {
        let to_orders = Relation::new(&self.move_orders, &self.order_id);
        let to_ships = Relation::new(&self.ship_move, &self.move_id);
        let ship_addr = Relation::new(&self.ship_addr, &self.addr_id);
        SinceGraph::new(&self.move_id, &self.move_at)
            .filter(self.show.eq(true))
            .filter(self.avail.is_not_null())
            .timestamp_offset(offset)
            .related("orders", to_orders.clone(), &self.order_at)
            .path(
                "service_members",
                [to_orders, Relation::new(&self.order_sm, &self.sm_id)],
                &self.sm_at,
            )
            .related("shipments", to_ships.clone(), &self.ship_at)
            .path(
                "items",
                [
                    to_ships.clone(),
                    Relation::new(&self.item_ship, &self.ship_id),
                ],
                // checked at run time: the type is only known dynamically here
                self.item_at.erase(),
            )
            .path(
                "addresses",
                [to_ships.clone(), ship_addr.clone()],
                &self.addr_at,
            )
            .path(
                "notes",
                [
                    to_ships,
                    ship_addr,
                    Relation::new(&self.note_addr, &self.addr_id),
                ],
                &self.note_at,
            )
    }
}

pub(crate) type At = Option<DateTime<Utc>>;

#[derive(Debug, Default, Clone)]
pub(crate) struct Data {
    pub(crate) moves: Vec<(i64, Option<i64>, bool, At, At)>, // id, orders_id, show, avail, at
    pub(crate) orders: Vec<(i64, Option<i64>, At)>,
    pub(crate) sms: Vec<(i64, At)>,
    pub(crate) ships: Vec<(i64, i64, Option<i64>, At)>,
    pub(crate) addrs: Vec<(i64, At)>,
    pub(crate) notes: Vec<(i64, i64, At)>,
    pub(crate) items: Vec<(i64, i64, At)>,
}

pub(crate) fn dataset(seed: u64) -> Data {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let n = if seed.is_multiple_of(9) {
        0
    } else {
        1 + rng.below(30) as i64
    };
    let mut d = Data::default();
    let n_sms = n / 2 + 1;
    let n_addrs = n / 3 + 2;
    for i in 1..=n_sms {
        d.sms.push((i, change_time(&mut rng)));
    }
    for i in 1..=n_addrs {
        d.addrs.push((i, change_time(&mut rng)));
        for _ in 0..rng.below(3) {
            let id = d.notes.len() as i64 + 1;
            d.notes.push((id, i, change_time(&mut rng)));
        }
    }
    for i in 1..=n {
        let order = (!rng.chance(5)).then(|| {
            let id = d.orders.len() as i64 + 1;
            let sm = (!rng.chance(4)).then(|| 1 + rng.below(n_sms as u64) as i64);
            d.orders.push((id, sm, change_time(&mut rng)));
            id
        });
        let show = !rng.chance(5);
        let avail = (!rng.chance(6)).then(since);
        // ids not in insertion order
        let id = i * 37 % 1009;
        d.moves
            .push((id, order, show, avail, change_time(&mut rng)));
        for _ in 0..rng.below(4) {
            let sid = d.ships.len() as i64 + 1;
            let addr = (!rng.chance(3)).then(|| 1 + rng.below(n_addrs as u64) as i64);
            d.ships.push((sid, id, addr, change_time(&mut rng)));
            for _ in 0..rng.below(3) {
                let iid = d.items.len() as i64 + 1;
                d.items.push((iid, sid, change_time(&mut rng)));
            }
        }
    }
    d
}

/// A `timestamp` value for an instant, as wall-clock time at `offset`.
pub(crate) fn naive(at: At, offset: FixedOffset) -> Option<NaiveDateTime> {
    at.map(|t| t.naive_utc() + Duration::seconds(offset.local_minus_utc().into()))
}

pub(crate) async fn load<E: Executor>(e: &E, shop: &Shop, d: &Data, offset: FixedOffset) {
    let tables = shop.tables();
    for (table, _) in &tables {
        exec(
            e,
            &BuiltQuery::from(&Query::delete().from_table(table.table_name()).to_owned()),
        )
        .await;
    }
    let rows: Vec<Vec<Vec<Expr>>> = vec![
        d.moves
            .iter()
            .map(|&(id, o, show, avail, at)| {
                vec![
                    id.param(),
                    i64::param_opt(o),
                    show.param(),
                    DateTime::<Utc>::param_opt(avail),
                    NaiveDateTime::param_opt(naive(at, offset)),
                ]
            })
            .collect(),
        d.orders
            .iter()
            .map(|&(id, sm, at)| {
                vec![
                    id.param(),
                    i64::param_opt(sm),
                    NaiveDateTime::param_opt(naive(at, offset)),
                ]
            })
            .collect(),
        d.sms
            .iter()
            .map(|&(id, at)| vec![id.param(), DateTime::<Utc>::param_opt(at)])
            .collect(),
        d.ships
            .iter()
            .map(|&(id, m, a, at)| {
                vec![
                    id.param(),
                    m.param(),
                    i64::param_opt(a),
                    DateTime::<Utc>::param_opt(at),
                ]
            })
            .collect(),
        d.addrs
            .iter()
            .map(|&(id, at)| vec![id.param(), NaiveDateTime::param_opt(naive(at, offset))])
            .collect(),
        d.notes
            .iter()
            .map(|&(id, a, at)| vec![id.param(), a.param(), DateTime::<Utc>::param_opt(at)])
            .collect(),
        d.items
            .iter()
            .map(|&(id, s, at)| {
                vec![
                    id.param(),
                    s.param(),
                    NaiveDateTime::param_opt(naive(at, offset)),
                ]
            })
            .collect(),
    ];
    for ((table, cols), rows) in tables.iter().zip(rows) {
        if !rows.is_empty() {
            exec(e, &insert(table, cols, rows)).await;
        }
    }
}

/// The reference: for each root passing the base predicates, the newest
/// change `>= since` of the root itself (index 0) and of each path (1..=6, in
/// the graph's order). A root matches when the map is non-empty.
pub(crate) fn reference(
    d: &Data,
    since: DateTime<Utc>,
) -> BTreeMap<i64, BTreeMap<usize, DateTime<Utc>>> {
    let hit = |at: At| at.filter(|t| *t >= since);
    let newest = |m: &mut BTreeMap<usize, DateTime<Utc>>, rel: usize, at: At| {
        if let Some(t) = hit(at) {
            let e = m.entry(rel).or_insert(t);
            if t > *e {
                *e = t;
            }
        }
    };
    let mut out = BTreeMap::new();
    for &(id, order, show, avail, at) in &d.moves {
        if !show || avail.is_none() {
            continue;
        }
        let mut m = BTreeMap::new();
        newest(&mut m, 0, at);
        if let Some(o) = d.orders.iter().find(|o| Some(o.0) == order) {
            newest(&mut m, 1, o.2);
            if let Some(sm) = d.sms.iter().find(|s| Some(s.0) == o.1) {
                newest(&mut m, 2, sm.1);
            }
        }
        for s in d.ships.iter().filter(|s| s.1 == id) {
            newest(&mut m, 3, s.3);
            for i in d.items.iter().filter(|i| i.1 == s.0) {
                newest(&mut m, 4, i.2);
            }
            if let Some(a) = d.addrs.iter().find(|a| Some(a.0) == s.2) {
                newest(&mut m, 5, a.1);
                for n in d.notes.iter().filter(|n| n.1 == a.0) {
                    newest(&mut m, 6, n.2);
                }
            }
        }
        if !m.is_empty() {
            out.insert(id, m);
        }
    }
    out
}

/// The matching ids of a statement, sorted.
pub(crate) async fn ids<E: Executor>(e: &E, q: &SinceQuery<i64>, key: &str) -> Vec<i64> {
    let stmt = Query::select()
        .column(Alias::new(key))
        .from_subquery(q.to_statement().unwrap(), Alias::new("m"))
        .order_by(Alias::new(key), Order::Asc)
        .to_owned();
    fetch::<(i64,), _>(e, &BuiltQuery::from(&stmt))
        .await
        .into_iter()
        .map(|r| r.0)
        .collect()
}

/// Walks every page; returns the keys in page order and every change.
pub(crate) async fn walk<E: Executor>(
    e: &E,
    q: &SinceQuery<i64>,
    order: PageOrder,
    limit: i64,
) -> (Vec<i64>, Vec<Change<i64>>) {
    let mut keys = Vec::new();
    let mut changes = Vec::new();
    let mut req = PageRequest::new(limit).order(order);
    for _ in 0..10_000 {
        let page = q.fetch_page::<(i64,)>(e, &req).await.unwrap();
        assert_eq!(
            page.rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            page.keys,
            "rows decode from root.*, keys from since_key"
        );
        assert!(page.rows.len() as i64 <= limit);
        changes.extend(q.fetch_changes(e, &page.keys).await.unwrap());
        keys.extend(page.keys);
        match page.next {
            Some(next) => req = req.after(next),
            None => return (keys, changes),
        }
    }
    panic!("the walk did not end");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_strategy_matches_the_reference_on_random_graphs() {
    let schema = schema().await;
    let client = client(&schema).await;
    let shop = Shop::new("");
    shop.create(&client).await;
    let offsets = [
        FixedOffset::east_opt(0).unwrap(),
        FixedOffset::west_opt(5 * 3600 + 30 * 60).unwrap(),
    ];
    let sinces = [
        since(),
        since() + Duration::microseconds(1),
        since() - Duration::days(365),
        since() + Duration::days(2),
    ];
    let mut checked = 0;
    let mut matched_total = 0;
    for seed in 0..18u64 {
        let d = dataset(seed);
        let offset = offsets[(seed % 2) as usize];
        load(&client, &shop, &d, offset).await;
        let graph = shop.graph(offset);
        for &at in &sinces {
            let want = reference(&d, at);
            matched_total += want.len();
            let want_ids: Vec<i64> = want.keys().copied().collect();
            // ChangeTime order: root time (NULLs last), then id.
            let root_at: BTreeMap<i64, At> = d.moves.iter().map(|m| (m.0, m.4)).collect();
            let mut by_time = want_ids.clone();
            by_time.sort_by_key(|id| (root_at[id].is_none(), root_at[id], *id));
            let labels = graph.labels();
            let want_changes: Vec<(i64, String, DateTime<Utc>)> = want_ids
                .iter()
                .flat_map(|id| {
                    want[id]
                        .iter()
                        .map(|(rel, t)| (*id, labels[*rel].to_owned(), *t))
                        .collect::<Vec<_>>()
                })
                .collect();
            for strategy in SinceStrategy::ALL.into_iter().chain([SinceStrategy::Auto]) {
                let q = graph.since(at).strategy(strategy);
                let ctx = format!(
                    "seed {seed} since {at} offset {offset} {strategy:?}\n{}",
                    q.build().unwrap()
                );
                // Auto as a caller runs it: resolved against the database.
                let resolved = q.resolve(&client, pgpatterns::Shape::All).await.unwrap();
                assert_ne!(resolved.chosen_strategy(), SinceStrategy::Auto);
                assert_eq!(ids(&client, &resolved, "id").await, want_ids, "{ctx}");
                let counted: Vec<(i64,)> = fetch(&client, &q.count_query().unwrap()).await;
                assert_eq!(counted, vec![(want_ids.len() as i64,)], "count: {ctx}");
                assert_eq!(
                    q.count(&client).await.unwrap(),
                    want_ids.len() as i64,
                    "count(): {ctx}"
                );
                let limit = [1, 4][(seed % 2) as usize];
                let (keys, changes) = walk(&client, &q, PageOrder::Key, limit).await;
                assert_eq!(keys, want_ids, "key pages of {limit}: {ctx}");
                let got: Vec<(i64, String, DateTime<Utc>)> = changes
                    .into_iter()
                    .map(|c| (c.key, c.relation.to_string(), c.newest))
                    .collect();
                assert_eq!(got, want_changes, "what changed: {ctx}");
                let (keys, _) = walk(&client, &q, PageOrder::ChangeTime, 3).await;
                assert_eq!(keys, by_time, "time pages of 3: {ctx}");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 18 * 4 * (SinceStrategy::ALL.len() + 1));
    assert!(
        matched_total > 100,
        "the datasets must match something: {matched_total}"
    );
}

/// Keys of matching roots now (UnionIn), for the walk tests.
async fn matching_now<E: Executor>(e: &E, q: &SinceQuery<i64>) -> BTreeSet<i64> {
    ids(e, q, "id").await.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyset_walks_stay_exact_while_rows_change() {
    let schema = schema().await;
    let client = client(&schema).await;
    let shop = Shop::new("");
    shop.create(&client).await;
    let offset = FixedOffset::east_opt(0).unwrap();
    let mut rng = Rng(99);
    let mut d = Data::default();
    for seed in 1..12 {
        // several datasets side by side, ids made distinct
        let mut part = dataset(seed);
        let base = seed as i64 * 10_000;
        for m in &mut part.moves {
            m.0 += base;
            m.1 = m.1.map(|o| o + base);
        }
        for o in &mut part.orders {
            o.0 += base;
            o.1 = o.1.map(|s| s + base);
        }
        for s in &mut part.sms {
            s.0 += base;
        }
        for s in &mut part.ships {
            s.0 += base;
            s.1 += base;
            s.2 = s.2.map(|a| a + base);
        }
        for a in &mut part.addrs {
            a.0 += base;
        }
        for n in &mut part.notes {
            n.0 += base;
            n.1 += base;
        }
        for i in &mut part.items {
            i.0 += base;
            i.1 += base;
        }
        d.moves.extend(part.moves);
        d.orders.extend(part.orders);
        d.sms.extend(part.sms);
        d.ships.extend(part.ships);
        d.addrs.extend(part.addrs);
        d.notes.extend(part.notes);
        d.items.extend(part.items);
    }
    let graph = shop.graph(offset);
    for strategy in SinceStrategy::ALL {
        for (order, touch_roots) in [
            (PageOrder::Key, true),
            (PageOrder::ChangeTime, false),
            (PageOrder::ChangeTime, true),
        ] {
            load(&client, &shop, &d, offset).await;
            let q = graph.since(since()).strategy(strategy);
            let at_start = matching_now(&client, &q).await;
            assert!(at_start.len() > 20, "{}", at_start.len());
            let mut seen: Vec<i64> = Vec::new();
            let mut touched_after_seen = BTreeSet::new();
            let mut req = PageRequest::new(5).order(order);
            let mut tick = 0i64;
            loop {
                let page = q.fetch_page::<(i64,)>(&client, &req).await.unwrap();
                seen.extend(&page.keys);
                // Between pages: newer change times on random children and
                // (when asked) random roots, seen or not yet seen.
                for _ in 0..3 {
                    tick += 1;
                    let later = since() + Duration::days(3) + Duration::seconds(tick);
                    let ship = &d.ships[rng.below(d.ships.len() as u64) as usize];
                    exec(
                        &client,
                        &BuiltQuery::from(
                            &Query::update()
                                .table(shop.ships.table_name())
                                .value(shop.ship_at.iden(), later.param())
                                .and_where(shop.ship_id.eq(ship.0))
                                .to_owned(),
                        ),
                    )
                    .await;
                    if touch_roots {
                        // roots with a change time (see PageOrder: a NULL
                        // time set mid-walk may be left for the next walk)
                        let with_time: Vec<i64> = d
                            .moves
                            .iter()
                            .filter(|m| m.4.is_some())
                            .map(|m| m.0)
                            .collect();
                        let m = with_time[rng.below(with_time.len() as u64) as usize];
                        if seen.contains(&m) {
                            touched_after_seen.insert(m);
                        }
                        exec(
                            &client,
                            &BuiltQuery::from(
                                &Query::update()
                                    .table(shop.moves.table_name())
                                    .value(shop.move_at.iden(), later.naive_utc().param())
                                    .and_where(shop.move_id.eq(m))
                                    .to_owned(),
                            ),
                        )
                        .await;
                    }
                }
                match page.next {
                    Some(next) => req = req.after(next),
                    None => break,
                }
            }
            let at_end = matching_now(&client, &q).await;
            let ctx = format!("{strategy:?} {order:?} touch_roots={touch_roots}");
            let distinct: BTreeSet<i64> = seen.iter().copied().collect();
            // never skipped: everything matching at the start (and so
            // throughout: times only moved forward) was returned
            assert!(at_start.is_subset(&distinct), "missing: {ctx}");
            assert!(distinct.is_subset(&at_end), "returned a non-match: {ctx}");
            let repeats = seen.len() - distinct.len();
            if order == PageOrder::Key || !touch_roots {
                assert_eq!(repeats, 0, "exactly once: {ctx}");
                if order == PageOrder::Key {
                    assert!(seen.windows(2).all(|w| w[0] < w[1]), "key order: {ctx}");
                }
            } else {
                // only roots updated after they were returned come back
                let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
                for k in &seen {
                    *counts.entry(*k).or_default() += 1;
                }
                for (k, n) in counts {
                    assert!(
                        n == 1 || touched_after_seen.contains(&k),
                        "{k} returned {n} times without a change after it was seen: {ctx}"
                    );
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_and_values_round_trip() {
    let schema = schema().await;
    let client = client(&schema).await;
    let shop = Shop::new("Mo\"ve; DROP TABLE victims; -- ");
    shop.create(&client).await;
    client
        .batch_execute("CREATE TABLE victims (id int); INSERT INTO victims VALUES (1)")
        .await
        .unwrap();
    let offset = FixedOffset::east_opt(0).unwrap();
    let d = dataset(5);
    load(&client, &shop, &d, offset).await;
    let kind = shop.moves.column::<String>("Kind \"x\"").unwrap();
    // a hostile value in a base predicate: bound, so it matches nothing
    // rather than changing the statement
    let hostile = "x' OR '1'='1'; DROP TABLE victims; --";
    let add = pgpatterns::sea_query::Table::alter()
        .table(shop.moves.table_name())
        .add_column(pgpatterns::sea_query::ColumnDef::new(kind.iden()).text())
        .to_owned();
    exec(&client, &BuiltQuery::schema(&add)).await;
    let graph = shop.graph(offset);
    let key = shop.move_id.name().as_str().to_owned();
    let want: Vec<i64> = reference(&d, since()).keys().copied().collect();
    assert!(!want.is_empty());
    for strategy in SinceStrategy::ALL {
        let q = graph.since(since()).strategy(strategy);
        assert_eq!(ids(&client, &q, &key).await, want, "{strategy:?}");
        let filtered = graph
            .clone()
            .filter(kind.eq(hostile))
            .since(since())
            .strategy(strategy);
        assert_eq!(ids(&client, &filtered, &key).await, Vec::<i64>::new());
        let (keys, changes) = walk(&client, &q, PageOrder::ChangeTime, 3).await;
        assert_eq!(keys.len(), want.len());
        assert!(!changes.is_empty());
    }
    for ddl in graph.index_advice(SinceStrategy::Exists) {
        exec(&client, &ddl).await;
    }
    let victims: Vec<(i64,)> =
        fetch(&client, &BuiltQuery::fixed("SELECT count(*) FROM victims")).await;
    assert_eq!(victims, vec![(1,)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_sending() {
    let shop = Shop::new("");
    let graph = shop.graph(FixedOffset::east_opt(0).unwrap());
    let q = graph.since(since());
    let field = |r: Result<BuiltQuery, Error>| match r {
        Err(Error::InvalidSpec { field, .. }) => field,
        other => panic!("expected InvalidSpec, got {other:?}"),
    };
    assert_eq!(field(q.page_query(&PageRequest::new(0))), "limit");
    assert_eq!(field(q.page_query(&PageRequest::new(1001))), "limit");
    assert_eq!(
        field(q.page_query(&PageRequest::new(5).after("nonsense"))),
        "cursor"
    );
    // a cursor made for another `since` or order
    let schema = schema().await;
    let client = client(&schema).await;
    shop.create(&client).await;
    load(
        &client,
        &shop,
        &dataset(3),
        FixedOffset::east_opt(0).unwrap(),
    )
    .await;
    let page = q
        .fetch_page::<(i64,)>(&client, &PageRequest::new(1))
        .await
        .unwrap();
    let next = page.next.expect("dataset 3 has more than one match");
    let other = graph.since(since() - Duration::days(1));
    assert_eq!(
        field(other.page_query(&PageRequest::new(1).after(&next))),
        "cursor"
    );
    assert_eq!(
        field(
            q.page_query(
                &PageRequest::new(1)
                    .order(PageOrder::ChangeTime)
                    .after(&next)
            )
        ),
        "cursor"
    );
    // damaged cursors: cut short, a character that is not base64url, one
    // character changed
    let cut = &next[..next.len() - 1];
    assert_eq!(
        field(q.page_query(&PageRequest::new(1).after(cut))),
        "cursor"
    );
    let bad_digit = format!("{}!", &next[..next.len() - 1]);
    assert_eq!(
        field(q.page_query(&PageRequest::new(1).after(bad_digit))),
        "cursor"
    );
    let flipped = format!("B{}", &next[1..]);
    assert_ne!(flipped, next);
    assert_eq!(
        field(q.page_query(&PageRequest::new(1).after(flipped))),
        "cursor"
    );
    // a path that does not connect, a non-time change column
    let loose = Relation::new(&shop.note_addr, &shop.addr_id);
    assert!(matches!(
        graph
            .clone()
            .related("loose", loose, &shop.note_at)
            .since(since())
            .check(),
        Err(Error::InvalidSpec { field: "path", .. })
    ));
    let not_time = shop
        .orders
        .column::<i64>("service_member_id")
        .unwrap()
        .erase();
    assert!(matches!(
        graph
            .clone()
            .related(
                "o2",
                Relation::new(&shop.move_orders, &shop.order_id),
                &not_time
            )
            .since(since())
            .count_query(),
        Err(Error::InvalidSpec {
            field: "change column",
            ..
        })
    ));
    // too many keys for one what-changed query
    let keys: Vec<i64> = (0..1001).collect();
    assert!(q.fetch_changes(&client, &keys).await.is_err());
    assert!(q.fetch_changes(&client, &[]).await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_advice_runs_concurrently_and_is_idempotent() {
    let schema = schema().await;
    let client = client(&schema).await;
    let shop = Shop::new("");
    shop.create(&client).await;
    let graph = shop.graph(FixedOffset::east_opt(0).unwrap());
    let mut names = BTreeSet::new();
    for strategy in SinceStrategy::ALL {
        let opts = pgpatterns::IndexOptions::new(strategy).concurrently(true);
        for ddl in graph.index_advice(opts) {
            assert!(ddl
                .sql()
                .starts_with("CREATE INDEX CONCURRENTLY IF NOT EXISTS"));
            client.run_outside_transaction(&ddl).await.unwrap();
            // twice: IF NOT EXISTS
            client.run_outside_transaction(&ddl).await.unwrap();
            names.insert(ddl.sql().split('"').nth(1).unwrap().to_owned());
        }
    }
    let q = BuiltQuery::fixed("SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema() AND indexname LIKE '%\\_since\\_%'");
    let got: BTreeSet<String> = fetch::<(String,), _>(&client, &q)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(got, names);
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("shipments_move_id_since_")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("orders_service_member_id_since_")),
        "{names:?}"
    );
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("moves_updated_at_id_since_")),
        "{names:?}"
    );
}

/// Seed 001's option 4 (`IN (… UNION …)`), as the team wrote it, counted;
/// `$1` is `since` as `timestamp` (UTC), `$2` as `timestamptz`.
const SEED_OPTION_4_COUNT: &str = "
SELECT count(*) FROM moves
WHERE moves.available_to_prime_at IS NOT NULL
  AND moves.show = TRUE
  AND (moves.updated_at >= $1 OR
       (moves.id IN (
          SELECT mto_shipments.move_id FROM mto_shipments WHERE mto_shipments.updated_at >= $2
          UNION
          SELECT mto_service_items.move_id FROM mto_service_items WHERE mto_service_items.updated_at >= $2
          UNION
          SELECT payment_requests.move_id FROM payment_requests WHERE payment_requests.updated_at >= $1)) OR
       (moves.orders_id IN (SELECT orders.id FROM move_orders AS orders WHERE orders.updated_at >= $1)))";

/// Seed 001's option 1 (`MAX(GREATEST(…))`), counted; `$1` is `since`
/// (`timestamptz`).
const SEED_OPTION_1_COUNT: &str = "
SELECT count(*) FROM (
SELECT moves.* FROM moves
  LEFT JOIN move_orders AS orders ON moves.orders_id = orders.id
  LEFT JOIN mto_shipments ON moves.id = mto_shipments.move_id
  LEFT JOIN mto_service_items ON mto_service_items.move_id = moves.id
  LEFT JOIN payment_requests ON payment_requests.move_id = moves.id
WHERE moves.available_to_prime_at IS NOT NULL AND moves.show = TRUE
GROUP BY 1
HAVING MAX(GREATEST(moves.updated_at AT TIME ZONE 'UTC', orders.updated_at AT TIME ZONE 'UTC',
    mto_shipments.updated_at, mto_service_items.updated_at,
    payment_requests.updated_at AT TIME ZONE 'UTC')) >= $1) AS m";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_moves_agree_with_the_seed_queries() {
    use pgpatterns::seed::moves::MovesSeed;
    let schema = schema().await;
    let client = client(&schema).await;
    let mut reports = Vec::new();
    let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let seed = MovesSeed::new(3000).batch_size(700).now(now);
    let report = seed.run(&client, |p| reports.push(p)).await.unwrap();
    assert_eq!(report.now, now);
    assert_eq!(report.moves, 3000);
    let moves: Vec<_> = reports.iter().filter(|p| p.stage == "moves").collect();
    assert_eq!(moves.first().unwrap().done, 0);
    assert_eq!(moves.last().unwrap().done, 3000);
    assert!(moves.windows(2).all(|w| w[0].done < w[1].done));
    assert_eq!(moves.len(), 1 + 5); // 0, then batches ending 700, 1400, 2100, 2800, 3000
    assert_eq!(
        reports.last().map(|p| (p.stage, p.done)),
        Some(("finish", 2))
    );

    // fan-out per move as documented
    let per_move = |table: &'static str| {
        let client = &client;
        async move {
            let sql: &'static str = match table {
                "mto_shipments" => "SELECT count(*)::float8 / 3000 FROM mto_shipments",
                "mto_service_items" => "SELECT count(*)::float8 / 3000 FROM mto_service_items",
                "payment_requests" => "SELECT count(*)::float8 / 3000 FROM payment_requests",
                _ => "SELECT count(*)::float8 / 3000 FROM addresses",
            };
            fetch::<(f64,), _>(client, &BuiltQuery::fixed(sql)).await[0].0
        }
    };
    let ships = per_move("mto_shipments").await;
    assert!((1.8..2.2).contains(&ships), "{ships}");
    let items = per_move("mto_service_items").await;
    assert!((4.6..5.4).contains(&items), "{items}");
    let prs = per_move("payment_requests").await;
    assert!((0.85..1.15).contains(&prs), "{prs}");
    assert_eq!(per_move("addresses").await, ships);

    let s = seed.tables();
    let seed_graph = s.seed_graph();
    let full = s.full_graph();
    let mut previous = 0;
    for days in [1, 30, 365] {
        let at = now - Duration::days(days);
        let params = [at.naive_utc().into_value(), at.into_value()];
        let hand4: Vec<(i64,)> = fetch(
            &client,
            &BuiltQuery::fixed_with(SEED_OPTION_4_COUNT, params.clone()),
        )
        .await;
        let hand1: Vec<(i64,)> = fetch(
            &client,
            &BuiltQuery::fixed_with(SEED_OPTION_1_COUNT, [at.into_value()]),
        )
        .await;
        assert_eq!(hand1, hand4, "the seed's two options agree ({days} d)");
        let want = hand4[0].0;
        assert!(want > previous, "wider windows match more: {days} d");
        previous = want;
        let mut full_count = None;
        for strategy in SinceStrategy::ALL {
            let q = seed_graph.since(at).strategy(strategy);
            let n: Vec<(i64,)> = fetch(&client, &q.count_query().unwrap()).await;
            assert_eq!(n[0].0, want, "{strategy:?} {days} d");
            let f: Vec<(i64,)> = fetch(
                &client,
                &full.since(at).strategy(strategy).count_query().unwrap(),
            )
            .await;
            assert!(f[0].0 >= want);
            assert_eq!(
                *full_count.get_or_insert(f[0].0),
                f[0].0,
                "{strategy:?} full graph"
            );
        }
        // a first page and what changed on it
        let q = full.since(at).strategy(SinceStrategy::Exists);
        let page = q
            .fetch_page::<(i64,)>(&client, &PageRequest::new(20))
            .await
            .unwrap();
        assert_eq!(page.rows.len(), 20.min(full_count.unwrap() as usize));
        let changes = q.fetch_changes(&client, &page.keys).await.unwrap();
        for k in &page.keys {
            assert!(
                changes.iter().any(|c| c.key == *k),
                "{k} matched, so something changed"
            );
        }
        assert!(changes.iter().all(|c| c.newest >= at && c.newest <= now));
    }
}

/// `SemiJoin` looks up a few changed keys; it is planned without parallel
/// workers even where the planner would start them for the same lookup
/// written as the other strategies (parallel made free here, so it would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn semi_join_is_planned_without_parallel_workers() {
    use pgpatterns::explain::explain;
    use pgpatterns::seed::moves::MovesSeed;
    let schema = schema().await;
    let client = client(&schema).await;
    let now = Utc.with_ymd_and_hms(2025, 1, 1, 0, 0, 0).unwrap();
    let seed = MovesSeed::new(2000).now(now);
    seed.run(&client, |_| {}).await.unwrap();
    client
        .batch_execute(
            "SET parallel_setup_cost = 0; SET parallel_tuple_cost = 0;
             SET min_parallel_table_scan_size = 0; SET min_parallel_index_scan_size = 0;
             SET max_parallel_workers_per_gather = 2; SET enable_indexscan = off;
             SET enable_bitmapscan = off",
        )
        .await
        .unwrap();
    let graph = seed.tables().seed_graph();
    let at = now - Duration::days(30);
    let gathers = |plan: &pgpatterns::explain::Plan| {
        plan.nodes()
            .iter()
            .filter(|n| n.node_type.starts_with("Gather"))
            .count()
    };
    let union_in = graph.since(at).strategy(SinceStrategy::UnionIn);
    let plan = explain(&client, &union_in.count_query().unwrap())
        .await
        .unwrap();
    assert!(
        gathers(&plan) > 0,
        "the setup must tempt the planner: {}",
        plan.json()
    );
    let semi = graph.since(at).strategy(SinceStrategy::SemiJoin);
    for q in [
        semi.count_query().unwrap(),
        semi.page_query(&PageRequest::new(20)).unwrap(),
    ] {
        let plan = explain(&client, &q).await.unwrap();
        assert_eq!(gathers(&plan), 0, "{}", plan.json());
    }
    // and the answer is still the other strategies' answer
    let n: Vec<(i64,)> = fetch(&client, &semi.count_query().unwrap()).await;
    let m: Vec<(i64,)> = fetch(&client, &union_in.count_query().unwrap()).await;
    assert_eq!(n, m);
    assert!(n[0].0 > 0);
}
