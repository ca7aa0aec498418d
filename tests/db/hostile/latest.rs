//! `latest` on hostile schemas: every history strategy, `Auto` and
//! `Denormalized` (installed twice, backfilled, then maintained by its
//! trigger through inserts, updates and deletes) return the reference's rows
//! for every predicate, with and without `missing_as` and `as_of`; counts,
//! keyset page walks and index advice run.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, NaiveDateTime, TimeZone, Utc};
use pgpatterns::sea_query::{Alias, ColumnDef, Expr, Query, Table as Ddl};
use pgpatterns::{
    AnyColumn, BuiltQuery, Column, Executor, LatestStatus, LatestStrategy, PageRequest, Shape,
    SqlType, Table,
};
use proptest::prelude::*;

use super::{check, distinct, idents, runtime, value, Problems};
use crate::support::{client, insert, schema};

/// One history row: `status` indexes the case's statuses (None: NULL);
/// times are `base + 10 min × minute`, few distinct values, so ties are
/// common and the id decides.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub id: i64,
    pub fk: i64,
    pub status: Option<u8>,
    pub minute: i64,
}

#[derive(Debug, Clone)]
pub(super) struct Case {
    /// Entity and history table names.
    tables: Vec<String>,
    /// Entity columns: key, extra, denormalized status.
    entity_cols: Vec<String>,
    /// History columns: id, fk, status, time.
    history_cols: Vec<String>,
    qualified: bool,
    timestamptz: bool,
    extra_first: bool,
    statuses: Vec<String>,
    entities: Vec<i64>,
    /// Loaded before the trigger is installed (backfilled).
    before: Vec<Row>,
    /// Inserted afterwards (the trigger's job), like the updates and deletes
    /// (indexes into `before`).
    after: Vec<Row>,
    updates: Vec<(usize, Option<u8>)>,
    deletes: Vec<usize>,
    batch: i64,
    page_limit: i64,
    page_pred: Pred,
    /// Besides every predicate alone: these with `missing_as` / `as_of`.
    combos: Vec<(Pred, bool, bool)>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Pred {
    Any,
    Eq,
    In,
    Ne,
    NotIn,
    IsNull,
}

const PREDS: [Pred; 6] = [
    Pred::Any,
    Pred::Eq,
    Pred::In,
    Pred::Ne,
    Pred::NotIn,
    Pred::IsNull,
];

pub(super) fn base() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 3, 1, 12, 0, 0).unwrap()
}

pub(super) fn at(minute: i64) -> DateTime<Utc> {
    base() + Duration::minutes(10 * minute)
}

/// Rows from `(entity selector, status, minute)`: a selector past the
/// entities is an orphan (history of no entity). Ids are unique and not in
/// insertion order.
pub(super) fn rows(raw: Vec<(usize, Option<u8>, i64)>, entities: &[i64], first: usize) -> Vec<Row> {
    raw.into_iter()
        .enumerate()
        .map(|(i, (sel, status, minute))| Row {
            id: ((first + i) as i64 * 37) % 1009 + 1,
            fk: entities.get(sel).copied().unwrap_or(5000 + sel as i64),
            status,
            minute,
        })
        .collect()
}

pub(super) fn raw_rows(max: usize) -> impl Strategy<Value = Vec<(usize, Option<u8>, i64)>> {
    prop::collection::vec(
        (0..12usize, prop::option::weighted(0.8, 0..3u8), 0..4i64),
        0..max,
    )
}

fn case() -> impl Strategy<Value = Case> {
    (
        (idents(2), idents(3), idents(4)),
        (any::<bool>(), any::<bool>(), any::<bool>()),
        prop::collection::vec(value(), 3).prop_map(distinct),
        (0..10usize, raw_rows(20), raw_rows(8)),
        (
            prop::collection::vec(
                (
                    any::<prop::sample::Index>(),
                    prop::option::weighted(0.7, 0..3u8),
                ),
                0..3,
            ),
            prop::collection::vec(any::<prop::sample::Index>(), 0..3),
        ),
        (1..5i64, 1..4i64, prop::sample::select(&PREDS[..])),
        prop::collection::vec(
            (
                prop::sample::select(&PREDS[..]),
                any::<bool>(),
                any::<bool>(),
            ),
            3,
        ),
    )
        .prop_map(
            |(
                (tables, entity_cols, history_cols),
                (qualified, timestamptz, extra_first),
                statuses,
                (n, before, after),
                (updates, deletes),
                (batch, page_limit, page_pred),
                combos,
            )| {
                let entities: Vec<i64> = (0..n as i64).map(|i| i * 3 + 1).collect();
                let before = rows(before, &entities, 0);
                let after = rows(after, &entities, before.len());
                let pick = |i: &prop::sample::Index| i.index(before.len().max(1));
                Case {
                    updates: updates.iter().map(|(i, s)| (pick(i), *s)).collect(),
                    deletes: deletes.iter().map(pick).collect(),
                    tables,
                    entity_cols,
                    history_cols,
                    qualified,
                    timestamptz,
                    extra_first,
                    statuses,
                    entities,
                    before,
                    after,
                    batch,
                    page_limit,
                    page_pred,
                    combos,
                }
            },
        )
}

impl Case {
    /// The history after every write.
    fn final_rows(&self) -> Vec<Row> {
        let mut rows = self.before.clone();
        for &(i, s) in &self.updates {
            if let Some(r) = rows.get_mut(i) {
                r.status = s;
            }
        }
        let gone: Vec<i64> = self
            .deletes
            .iter()
            .filter_map(|&i| self.before.get(i).map(|r| r.id))
            .collect();
        rows.retain(|r| !gone.contains(&r.id));
        rows.extend(self.after.iter().cloned());
        rows
    }

    fn status(&self, s: Option<u8>) -> Option<String> {
        s.map(|i| self.statuses[usize::from(i)].clone())
    }

    fn matches(&self, p: Pred, status: &Option<String>) -> bool {
        let s = status.as_deref();
        let v = |i: usize| Some(self.statuses[i].as_str());
        match p {
            Pred::Any => true,
            Pred::Eq => s == v(0),
            Pred::In => s == v(1) || s == v(2),
            Pred::Ne => s != v(0),
            Pred::NotIn => !(s == v(0) || s == v(1)),
            Pred::IsNull => s.is_none(),
        }
    }

    /// Latest = greatest (time, id) among rows at or before `as_of`.
    fn reference(
        &self,
        rows: &[Row],
        p: Pred,
        missing: Option<&str>,
        as_of: Option<i64>,
    ) -> Vec<(i64, Option<String>)> {
        let mut latest: BTreeMap<i64, &Row> = BTreeMap::new();
        for r in rows.iter().filter(|r| as_of.is_none_or(|m| r.minute <= m)) {
            let e = latest.entry(r.fk).or_insert(r);
            if (r.minute, r.id) > (e.minute, e.id) {
                *e = r;
            }
        }
        self.entities
            .iter()
            .filter_map(|e| {
                let (status, out) = match (latest.get(e), missing) {
                    (Some(r), _) => (self.status(r.status), self.status(r.status)),
                    (None, Some(m)) => (Some(m.to_owned()), None),
                    (None, None) => return None,
                };
                self.matches(p, &status).then_some((*e, out))
            })
            .collect()
    }

    fn apply(&self, spec: LatestStatus<String>, p: Pred) -> LatestStatus<String> {
        let s = &self.statuses;
        match p {
            Pred::Any => spec,
            Pred::Eq => spec.status_eq(s[0].clone()),
            Pred::In => spec.status_in([s[1].clone(), s[2].clone()]),
            Pred::Ne => spec.status_ne(s[0].clone()),
            Pred::NotIn => spec.status_not_in([s[0].clone(), s[1].clone()]),
            Pred::IsNull => spec.status_is_null(),
        }
    }
}

/// The tables and typed columns of a case, in `schema`.
pub(super) struct Handles {
    pub entity: Table,
    pub history: Table,
    pub key: Column<i64>,
    pub extra: Column<String>,
    pub column: Column<String>,
    pub id: Column<i64>,
    pub fk: Column<i64>,
    pub status: Column<String>,
    /// The time column, `timestamptz` or `timestamp`.
    pub time: AnyColumn,
    pub timestamptz: bool,
}

impl Handles {
    pub fn new(
        schema: &str,
        qualified: bool,
        tables: &[String],
        entity_cols: &[String],
        history_cols: &[String],
        timestamptz: bool,
    ) -> Handles {
        let table = |n: &str| {
            if qualified {
                Table::in_schema(schema, n).unwrap()
            } else {
                Table::new(n).unwrap()
            }
        };
        let (entity, history) = (table(&tables[0]), table(&tables[1]));
        let time = if timestamptz {
            history
                .column::<DateTime<Utc>>(&history_cols[3])
                .unwrap()
                .erase()
        } else {
            history
                .column::<NaiveDateTime>(&history_cols[3])
                .unwrap()
                .erase()
        };
        Handles {
            key: entity.column(&entity_cols[0]).unwrap(),
            extra: entity.column(&entity_cols[1]).unwrap(),
            column: entity.column(&entity_cols[2]).unwrap(),
            id: history.column(&history_cols[0]).unwrap(),
            fk: history.column(&history_cols[1]).unwrap(),
            status: history.column(&history_cols[2]).unwrap(),
            time,
            timestamptz,
            entity,
            history,
        }
    }

    /// The spec, latest by `(time, id)`, with the denormalized column.
    pub fn spec(&self) -> pgpatterns::Result<LatestStatus<String>> {
        let spec = if self.timestamptz {
            let t = self
                .history
                .column::<DateTime<Utc>>(self.time.name().as_str())?;
            LatestStatus::new(&self.key, &self.fk, &self.status, &t)
        } else {
            let t = self
                .history
                .column::<NaiveDateTime>(self.time.name().as_str())?;
            LatestStatus::new(&self.key, &self.fk, &self.status, &t)
        };
        Ok(spec.then_by(&self.id).denormalized(&self.column))
    }

    pub fn as_of(
        &self,
        spec: LatestStatus<String>,
        minute: i64,
    ) -> pgpatterns::Result<LatestStatus<String>> {
        let spec = if self.timestamptz {
            spec.as_of::<DateTime<Utc>>(at(minute))
        } else {
            spec.as_of::<NaiveDateTime>(at(minute).naive_utc())
        };
        spec.check()?;
        Ok(spec)
    }

    fn time_param(&self, minute: i64) -> Expr {
        if self.timestamptz {
            at(minute).param()
        } else {
            at(minute).naive_utc().param()
        }
    }

    /// `CREATE TABLE` of both tables: the entity's key (primary key) and
    /// extra column in the given order, the history's id (primary key), fk,
    /// status and time (`NOT NULL`).
    pub fn create(&self, extra_first: bool) -> Vec<BuiltQuery> {
        let col = |c: &AnyColumn| {
            ColumnDef::new(c.iden())
                .custom(Alias::new(c.sql_type()))
                .to_owned()
        };
        let mut key = col(&self.key.erase());
        key.not_null().primary_key();
        let extra = col(&self.extra.erase());
        let mut e = Ddl::create();
        e.table(self.entity.table_name());
        if extra_first {
            e.col(extra).col(key);
        } else {
            e.col(key).col(extra);
        }
        let mut id = col(&self.id.erase());
        id.not_null().primary_key();
        let mut fk = col(&self.fk.erase());
        fk.not_null();
        let mut time = col(&self.time);
        time.not_null();
        let h = Ddl::create()
            .table(self.history.table_name())
            .col(id)
            .col(fk)
            .col(col(&self.status.erase()))
            .col(time)
            .to_owned();
        vec![BuiltQuery::schema(&e), BuiltQuery::schema(&h)]
    }

    pub fn insert_entities(&self, ids: &[i64]) -> Option<BuiltQuery> {
        (!ids.is_empty()).then(|| {
            insert(
                &self.entity,
                &[self.key.erase(), self.extra.erase()],
                ids.iter()
                    .map(|&i| vec![i.param(), format!("e{i}").param()]),
            )
        })
    }

    pub fn insert_rows(
        &self,
        rows: &[Row],
        status: impl Fn(Option<u8>) -> Option<String>,
    ) -> Option<BuiltQuery> {
        (!rows.is_empty()).then(|| {
            insert(
                &self.history,
                &[
                    self.id.erase(),
                    self.fk.erase(),
                    self.status.erase(),
                    self.time.clone(),
                ],
                rows.iter().map(|r| {
                    vec![
                        r.id.param(),
                        r.fk.param(),
                        String::param_opt(status(r.status)),
                        self.time_param(r.minute),
                    ]
                }),
            )
        })
    }

    pub fn update_status(&self, id: i64, status: Option<String>) -> BuiltQuery {
        BuiltQuery::from(
            &Query::update()
                .table(self.history.table_name())
                .value(self.status.iden(), String::param_opt(status))
                .and_where(self.id.eq(id))
                .to_owned(),
        )
    }

    pub fn delete_row(&self, id: i64) -> BuiltQuery {
        BuiltQuery::from(
            &Query::delete()
                .from_table(self.history.table_name())
                .and_where(self.id.eq(id))
                .to_owned(),
        )
    }
}

/// Runs `q` and reads `(key, latest_status)` at the given positions,
/// sorted by key.
async fn read(
    client: &tokio_postgres::Client,
    q: &BuiltQuery,
    key_at: usize,
    status_at: usize,
) -> Result<Vec<(i64, Option<String>)>, String> {
    let rows = client.rows(q).await.map_err(|e| e.to_string())?;
    let mut out = Vec::with_capacity(rows.len());
    for r in &rows {
        let k: i64 = r.try_get(key_at).map_err(|e| e.to_string())?;
        let s: Option<String> = r.try_get(status_at).map_err(|e| e.to_string())?;
        out.push((k, s));
    }
    out.sort();
    Ok(out)
}

fn run_case(c: &Case) -> Problems {
    runtime().block_on(async {
        let mut p = Problems::default();
        let schema = schema().await;
        let mut client = client(&schema).await;
        let h = Handles::new(
            schema.name(),
            c.qualified,
            &c.tables,
            &c.entity_cols,
            &c.history_cols,
            c.timestamptz,
        );
        for q in h.create(c.extra_first) {
            if p.ok(|| format!("create table\n{q}"), q.execute(&client).await)
                .is_none()
            {
                return p;
            }
        }
        let status = |s| c.status(s);
        for q in [
            h.insert_entities(&c.entities),
            h.insert_rows(&c.before, status),
        ]
        .into_iter()
        .flatten()
        {
            if p.ok(|| format!("load\n{q}"), q.execute(&client).await)
                .is_none()
            {
                return p;
            }
        }
        let Some(spec) = p.ok(|| "spec".into(), h.spec()) else {
            return p;
        };
        let Some(d) = p.ok(|| "denormalize()".into(), spec.denormalize()) else {
            return p;
        };
        for i in 0..2 {
            let r = d.install(&mut client).await;
            if p.ok(
                || {
                    format!(
                        "install #{}: {:?}",
                        i + 1,
                        d.install_statements()
                            .iter()
                            .map(|q| q.sql().to_owned())
                            .collect::<Vec<_>>()
                    )
                },
                r,
            )
            .is_none()
            {
                return p;
            }
        }
        let backfill = d.backfill::<i64, _>(&mut client, c.batch, |_| {}).await;
        p.ok(|| format!("backfill (batch {})", c.batch), backfill);
        let drift = d.drift_count(&client).await;
        if let Some(n) = p.ok(|| format!("drift_count\n{}", d.drift_query()), drift) {
            p.same(|| "drift after backfill".into(), &n, &0);
        }
        // The trigger's share: updates, deletes, then more inserts.
        let mut writes: Vec<BuiltQuery> = Vec::new();
        for &(i, s) in &c.updates {
            if let Some(r) = c.before.get(i) {
                writes.push(h.update_status(r.id, c.status(s)));
            }
        }
        for &i in &c.deletes {
            if let Some(r) = c.before.get(i) {
                writes.push(h.delete_row(r.id));
            }
        }
        writes.extend(h.insert_rows(&c.after, status));
        let mut trigger_ok = true;
        for q in &writes {
            let r = q.execute(&client).await;
            if p.ok(|| format!("write with the trigger installed\n{q}"), r)
                .is_none()
            {
                // The trigger broke the write: drop it, so the data still
                // follows the model and the strategies stay comparable.
                trigger_ok = false;
                let r = d.uninstall(&mut client).await;
                p.ok(|| "uninstall after a failed write".into(), r);
                let r = q.execute(&client).await;
                p.ok(|| format!("write without the trigger\n{q}"), r);
            }
        }
        if !trigger_ok {
            let r = d.backfill::<i64, _>(&mut client, c.batch, |_| {}).await;
            p.ok(|| "backfill after dropping the trigger".into(), r);
        }
        if let Some(drift) = p.ok(
            || format!("drift query\n{}", d.drift_query()),
            client
                .rows_as::<(i64, Option<String>, Option<String>)>(&d.drift_query())
                .await,
        ) {
            p.same(
                || "drift after writes (key, stored, latest)".into(),
                &drift,
                &vec![],
            );
        }

        let rows = c.final_rows();
        // entity.*: key and extra in their order, then the added column.
        let key_at = usize::from(c.extra_first);
        let status_at = 3;
        let missing_value = c.statuses[1].clone();
        let combos = PREDS
            .iter()
            .map(|&p| (p, false, false))
            .chain(c.combos.iter().copied().filter(|&(_, m, a)| m || a));
        for (pred, missing, as_of) in combos {
            let missing = missing.then_some(missing_value.as_str());
            let as_of = as_of.then_some(1);
            {
                {
                    let want = c.reference(&rows, pred, missing, as_of);
                    let mut s = c.apply(spec.clone(), pred);
                    if let Some(m) = missing {
                        s = s.missing_as(m.to_owned());
                    }
                    if let Some(m) = as_of {
                        s = h.as_of(s, m).unwrap();
                    }
                    let mut strategies: Vec<LatestStrategy> = LatestStrategy::FROM_HISTORY.to_vec();
                    strategies.push(LatestStrategy::Auto);
                    if missing.is_none() && as_of.is_none() {
                        strategies.push(LatestStrategy::Denormalized);
                    }
                    for strategy in strategies {
                        let ctx = || {
                            format!("{strategy:?} {pred:?} missing_as={missing:?} as_of={as_of:?}")
                        };
                        let s = s.clone().strategy(strategy);
                        let Some(()) = p.ok(ctx, s.check()) else {
                            continue;
                        };
                        let resolved = s.resolve(&client, Shape::All).await;
                        let Some(s) = p.ok(|| format!("{} resolve", ctx()), resolved) else {
                            continue;
                        };
                        let q = s.build().unwrap();
                        let got = read(&client, &q, key_at, status_at).await;
                        if let Some(got) = p.ok(
                            || format!("{} chose {:?}\n{q}", ctx(), s.chosen_strategy()),
                            got,
                        ) {
                            p.same(
                                || format!("{} chose {:?}: rows\n{q}", ctx(), s.chosen_strategy()),
                                &got,
                                &want,
                            );
                        }
                        let n = s.count(&client).await;
                        if let Some(n) = p.ok(
                            || format!("{} count\n{}", ctx(), s.count_query().unwrap()),
                            n,
                        ) {
                            p.same(|| format!("{} count", ctx()), &n, &(want.len() as i64));
                        }
                    }
                }
            }
        }

        // Keyset page walks through the executor API.
        let want: Vec<i64> = c
            .reference(&rows, c.page_pred, None, None)
            .iter()
            .map(|r| r.0)
            .collect();
        let mut strategies = LatestStrategy::FROM_HISTORY.to_vec();
        strategies.extend([LatestStrategy::Auto, LatestStrategy::Denormalized]);
        for strategy in strategies {
            let s = c.apply(spec.clone(), c.page_pred).strategy(strategy);
            let mut seen: Vec<i64> = Vec::new();
            let mut req = PageRequest::new(c.page_limit);
            for _ in 0..100 {
                let page = s.fetch_page::<(), i64>(&client, &req).await;
                let ctx = || {
                    format!(
                        "{strategy:?} {:?} page after {:?} (limit {})\n{:?}",
                        c.page_pred,
                        req.clone(),
                        c.page_limit,
                        s.page_query::<i64>(&req).map(|q| q.to_string())
                    )
                };
                let Some(page) = p.ok(ctx, page) else { break };
                seen.extend(page.keys.iter().copied());
                match page.next {
                    Some(n) => req = req.after(n),
                    None => break,
                }
            }
            p.same(
                || {
                    format!(
                        "{strategy:?} {:?} page walk of {}",
                        c.page_pred, c.page_limit
                    )
                },
                &seen,
                &want,
            );
        }

        // Index advice of a history strategy and of Denormalized: twice each.
        for strategy in [LatestStrategy::DistinctOn, LatestStrategy::Denormalized] {
            let s = spec.clone().strategy(strategy);
            for q in s.index_advice(false).iter().chain(&s.index_advice(false)) {
                let r = q.execute(&client).await;
                p.ok(|| format!("index advice {strategy:?}\n{q}"), r);
            }
        }
        p
    })
}

#[test]
fn latest_every_strategy_matches_the_reference_on_hostile_schemas() {
    check("latest", 10, case(), run_case);
}
