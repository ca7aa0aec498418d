//! Two denormalized columns in one schema whose names only *look* alike —
//! `a`.`b_c` and `a_b`.`c`, history `h_x`.`y` and `h`.`x_y`, `a"b` and
//! `a_b`, 63-byte names sharing a long prefix, `Orders` and `orders` —
//! installed, backfilled and written to: both columns stay correct (drift
//! 0), their index advice makes distinct indexes, and install / uninstall /
//! re-install of one leaves the other maintained.

use std::collections::BTreeMap;

use pgpatterns::{BuiltQuery, Denormalize, Executor, LatestStrategy};
use proptest::prelude::*;

use super::latest::{raw_rows, rows, Handles, Row};
use super::{check, distinct, ident, runtime, Problems};
use crate::support::{client, schema};

const STATUSES: [&str; 3] = ["it's", "$$ new $$", "Ünï"];

/// How the two specs' names are made to look alike.
#[derive(Debug, Clone, Copy)]
enum Family {
    /// `a`.`b_c` / `a_b`.`c`; histories `h_x` (fk `y`) / `h` (fk `x_y`).
    Underscore,
    /// `a"b` / `a_b`, columns `c"d` / `c_d`.
    Quote,
    /// 63-byte names sharing their first 60 bytes.
    Long,
    /// `A` / `a` (quoted names keep their case).
    Case,
}

#[derive(Debug, Clone)]
struct Spec {
    tables: Vec<String>,
    entity_cols: Vec<String>,
    history_cols: Vec<String>,
}

#[derive(Debug, Clone)]
pub(super) struct Case {
    #[allow(dead_code)] // printed with a failing case
    family: Family,
    specs: [Spec; 2],
    qualified: bool,
    timestamptz: bool,
    entities: Vec<i64>,
    /// Per spec: rows before install, then three rounds of writes.
    before: [Vec<Row>; 2],
    rounds: [[Vec<Row>; 3]; 2],
}

fn specs(family: Family, w: &[String]) -> [Spec; 2] {
    let [a, b, c, h, x, y, k, s] = [0, 1, 2, 3, 4, 5, 6, 7].map(|i| w[i].clone());
    let long = |base: &str, tail: &str| {
        let mut s = base.to_owned();
        while s.len() + base.len() <= 60 {
            s.push_str(base);
        }
        super::fit(s + tail)
    };
    let (ea, eb, da, db, ha, hb, fa, fb) = match family {
        Family::Underscore => (
            a.clone(),
            format!("{a}_{b}"),
            format!("{b}_{c}"),
            c.clone(),
            format!("{h}_{x}"),
            h.clone(),
            y.clone(),
            format!("{x}_{y}"),
        ),
        Family::Quote => (
            format!("{a}\"{b}"),
            format!("{a}_{b}"),
            format!("{c}\"{x}"),
            format!("{c}_{x}"),
            format!("{h}\"{y}"),
            format!("{h}_{y}"),
            y.clone(),
            y.clone(),
        ),
        Family::Long => (
            long(&a, "1"),
            long(&a, "2"),
            long(&c, "1"),
            long(&c, "2"),
            long(&h, "1"),
            long(&h, "2"),
            long(&y, "1"),
            long(&y, "2"),
        ),
        Family::Case => (
            a.to_uppercase(),
            a.to_lowercase(),
            c.to_uppercase(),
            c.to_lowercase(),
            h.to_uppercase(),
            h.to_lowercase(),
            y.to_uppercase(),
            y.to_lowercase(),
        ),
    };
    let tables = distinct(vec![ea, ha, eb, hb].into_iter().map(super::fit).collect());
    let spec = |i: usize, d: String, f: String| Spec {
        tables: vec![tables[2 * i].clone(), tables[2 * i + 1].clone()],
        entity_cols: distinct(vec![k.clone(), format!("{s}_extra"), super::fit(d)]),
        history_cols: distinct(vec![k.clone(), super::fit(f), s.clone(), format!("{x}_at")]),
    };
    [spec(0, da, fa), spec(1, db, fb)]
}

fn case() -> impl Strategy<Value = Case> {
    let family = prop_oneof![
        Just(Family::Underscore),
        Just(Family::Quote),
        Just(Family::Long),
        Just(Family::Case),
    ];
    // short words: the derived names are built from several of them
    let word = prop_oneof![
        1 => "[a-z]{1,4}",
        2 => prop::sample::select(&["new", "old", "found", "tg_op", "latest", "pgp", "x", "Ab", "é", "中", "$$", "'", "\""][..])
            .prop_map(str::to_owned),
        1 => ident().prop_map(|s| s.chars().take(6).collect::<String>()),
    ];
    (
        family,
        prop::collection::vec(word, 8).prop_map(distinct),
        (any::<bool>(), any::<bool>(), 0..8usize),
        (raw_rows(10), raw_rows(10)),
        prop::collection::vec(raw_rows(5), 6),
    )
        .prop_map(
            |(family, words, (qualified, timestamptz, n), before, rounds)| {
                let entities: Vec<i64> = (0..n as i64).map(|i| i * 3 + 1).collect();
                let mut first = 0;
                let mut next = |raw| {
                    let r = rows(raw, &entities, first);
                    first += r.len();
                    r
                };
                let before = [next(before.0), next(before.1)];
                let mut rounds = rounds.into_iter().map(&mut next);
                let mut three = || [(); 3].map(|_| rounds.next().unwrap());
                let rounds = [three(), three()];
                Case {
                    specs: specs(family, &words),
                    family,
                    qualified,
                    timestamptz,
                    entities,
                    before,
                    rounds,
                }
            },
        )
}

/// Every entity's status by the model: the latest row's, or NULL.
fn expected(entities: &[i64], rows: &[Row]) -> Vec<(i64, Option<String>)> {
    let mut latest: BTreeMap<i64, &Row> = BTreeMap::new();
    for r in rows {
        let e = latest.entry(r.fk).or_insert(r);
        if (r.minute, r.id) > (e.minute, e.id) {
            *e = r;
        }
    }
    entities
        .iter()
        .map(|e| {
            let s = latest
                .get(e)
                .and_then(|r| r.status)
                .map(|i| STATUSES[usize::from(i)].to_owned());
            (*e, s)
        })
        .collect()
}

fn status(s: Option<u8>) -> Option<String> {
    s.map(|i| STATUSES[usize::from(i)].to_owned())
}

/// Non-primary-key indexes and user triggers on the schema's tables.
async fn catalog(
    client: &tokio_postgres::Client,
) -> Result<(Vec<String>, Vec<(String, String)>), String> {
    let idx: Vec<(String,)> = client
        .rows_as(&BuiltQuery::fixed(
            "SELECT ic.relname::text FROM pg_index i JOIN pg_class ic ON ic.oid = i.indexrelid
             JOIN pg_namespace n ON n.oid = ic.relnamespace
             WHERE n.nspname = current_schema() AND NOT i.indisprimary ORDER BY 1",
        ))
        .await
        .map_err(|e| e.to_string())?;
    let trg: Vec<(String, String)> = client
        .rows_as(&BuiltQuery::fixed(
            "SELECT c.relname::text, t.tgname::text FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = current_schema() AND NOT t.tgisinternal ORDER BY 1, 2",
        ))
        .await
        .map_err(|e| e.to_string())?;
    Ok((idx.into_iter().map(|r| r.0).collect(), trg))
}

fn triggers_on(trg: &[(String, String)], table: &str) -> usize {
    trg.iter().filter(|(t, _)| t == table).count()
}

/// Both specs: drift 0 and every entity's stored status as the model says.
async fn verify(
    client: &tokio_postgres::Client,
    h: &[Handles],
    d: &[Denormalize],
    entities: &[i64],
    model: &[Vec<Row>; 2],
    stage: &str,
) -> Problems {
    let mut p = Problems::default();
    for i in 0..2 {
        if let Some(n) = p.ok(
            || format!("spec {i} {stage}: drift_count"),
            d[i].drift_count(client).await,
        ) {
            p.same(|| format!("spec {i} {stage}: drift"), &n, &0);
        }
        let q = BuiltQuery::from(
            &pgpatterns::sea_query::Query::select()
                .column(h[i].key.col_ref())
                .column(h[i].column.col_ref())
                .from(h[i].entity.table_ref())
                .order_by(h[i].key.col_ref(), pgpatterns::sea_query::Order::Asc)
                .to_owned(),
        );
        let got: Result<Vec<(i64, Option<String>)>, _> = client.rows_as(&q).await;
        if let Some(got) = p.ok(|| format!("spec {i} {stage}: read column\n{q}"), got) {
            p.same(
                || format!("spec {i} {stage}: stored statuses"),
                &got,
                &expected(entities, &model[i]),
            );
        }
    }
    p
}

fn run_case(c: &Case) -> Problems {
    runtime().block_on(async {
        let mut p = Problems::default();
        let schema = schema().await;
        let mut client = client(&schema).await;
        let h: Vec<Handles> = c
            .specs
            .iter()
            .map(|s| {
                Handles::new(
                    schema.name(),
                    c.qualified,
                    &s.tables,
                    &s.entity_cols,
                    &s.history_cols,
                    c.timestamptz,
                )
            })
            .collect();
        let mut model: [Vec<Row>; 2] = c.before.clone();
        for (i, h) in h.iter().enumerate() {
            let mut qs = h.create(false);
            qs.extend(h.insert_entities(&c.entities));
            qs.extend(h.insert_rows(&c.before[i], status));
            for q in qs {
                if p.ok(
                    || format!("spec {i}: create/load\n{q}"),
                    q.execute(&client).await,
                )
                .is_none()
                {
                    return p;
                }
            }
        }
        let mut d: Vec<Denormalize> = Vec::new();
        for (i, h) in h.iter().enumerate() {
            let made = h.spec().and_then(|s| s.denormalize());
            let Some(made) = p.ok(|| format!("spec {i}: denormalize()"), made) else {
                return p;
            };
            d.push(made);
        }
        let names = || {
            format!(
                "functions {:?} / {:?}",
                d[0].function_name(),
                d[1].function_name()
            )
        };

        // Install both (the first twice: idempotent), backfill both.
        for i in [0, 0, 1] {
            let r = d[i].install(&mut client).await;
            p.ok(|| format!("spec {i}: install ({})", names()), r);
        }
        for (i, d) in d.iter().enumerate() {
            let r = d.backfill::<i64, _>(&mut client, 3, |_| {}).await;
            p.ok(|| format!("spec {i}: backfill"), r);
        }

        // Writes to both histories, then both columns are checked.
        async fn round(
            client: &tokio_postgres::Client,
            h: &Handles,
            rows: &[Row],
            model: &mut Vec<Row>,
            p: &mut Problems,
            what: &str,
        ) {
            // insert new rows, update the oldest row's status, delete another
            let mut qs: Vec<BuiltQuery> = h.insert_rows(rows, status).into_iter().collect();
            if let Some(first) = model.first_mut() {
                first.status = first.status.map_or(Some(0), |s| (s < 2).then_some(s + 1));
                qs.push(h.update_status(first.id, status(first.status)));
            }
            if model.len() > 2 {
                let gone = model.remove(1);
                qs.push(h.delete_row(gone.id));
            }
            model.extend(rows.iter().cloned());
            for q in qs {
                let r = q.execute(client).await;
                p.ok(|| format!("{what}: write\n{q}"), r);
            }
        }
        for i in 0..2 {
            round(
                &client,
                &h[i],
                &c.rounds[i][0],
                &mut model[i],
                &mut p,
                "both installed",
            )
            .await;
        }
        p.0.extend(
            verify(&client, &h, &d, &c.entities, &model, "both installed")
                .await
                .0,
        );

        // Index advice of both specs: history index and Denormalized index
        // each (the Denormalized advice repeats the history index).
        let mut advised = std::collections::BTreeSet::new();
        for (i, h) in h.iter().enumerate() {
            let spec = h.spec().unwrap();
            for s in [spec.clone(), spec.strategy(LatestStrategy::Denormalized)] {
                for q in s.index_advice(false) {
                    advised.insert(q.sql().to_owned());
                    let r = q.execute(&client).await;
                    p.ok(|| format!("spec {i}: index advice\n{q}"), r);
                }
            }
        }
        if let Some((idx, trg)) = p.ok(|| "catalog".into(), catalog(&client).await) {
            p.same(
                || format!("distinct indexes from the advice of both specs ({idx:?})"),
                &idx.len(),
                &advised.len(),
            );
            for (i, s) in c.specs.iter().enumerate() {
                p.same(
                    || format!("spec {i}: triggers on its history, both installed ({trg:?})"),
                    &triggers_on(&trg, &s.tables[1]),
                    &4,
                );
            }
        }

        // Uninstall the first: the second is still maintained.
        let r = d[0].uninstall(&mut client).await;
        p.ok(|| format!("spec 0: uninstall ({})", names()), r);
        if let Some((_, trg)) = p.ok(|| "catalog".into(), catalog(&client).await) {
            p.same(
                || format!("spec 0: triggers left after its uninstall ({trg:?})"),
                &triggers_on(&trg, &c.specs[0].tables[1]),
                &0,
            );
            p.same(
                || format!("spec 1: triggers after the other's uninstall ({trg:?})"),
                &triggers_on(&trg, &c.specs[1].tables[1]),
                &4,
            );
        }
        for i in 0..2 {
            round(
                &client,
                &h[i],
                &c.rounds[i][1],
                &mut model[i],
                &mut p,
                "spec 0 uninstalled",
            )
            .await;
        }
        let after = verify(&client, &h, &d, &c.entities, &model, "spec 0 uninstalled").await;
        // The first's column is no longer maintained: only the second counts.
        p.0.extend(after.0.into_iter().filter(|m| m.starts_with("spec 1")));

        // Re-install the first, backfill it: both maintained again.
        let r = d[0].install(&mut client).await;
        p.ok(|| format!("spec 0: re-install ({})", names()), r);
        let r = d[0].backfill::<i64, _>(&mut client, 2, |_| {}).await;
        p.ok(|| "spec 0: backfill after re-install".into(), r);
        for i in 0..2 {
            round(
                &client,
                &h[i],
                &c.rounds[i][2],
                &mut model[i],
                &mut p,
                "re-installed",
            )
            .await;
        }
        p.0.extend(
            verify(&client, &h, &d, &c.entities, &model, "spec 0 re-installed")
                .await
                .0,
        );
        p
    })
}

#[test]
fn look_alike_denormalized_columns_coexist() {
    check("collide", 8, case(), run_case);
}
