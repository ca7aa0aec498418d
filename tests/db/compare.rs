//! Strategy comparison: agreeing contenders are timed interleaved, rows that
//! differ are a typed error, compare columns, bad input refused before any
//! SQL, hostile values and names stay parameters and quoted identifiers.

use std::future::Future;
use std::sync::Mutex;

use pgpatterns::compare::{Compare, Contender};
use pgpatterns::seed::orders::{OrdersSeed, OrdersTables};
use pgpatterns::{BuiltQuery, Error, Executor, LatestStrategy, SqlType, Table};

use crate::support::{client, schema};

/// An executor that records every statement it is given, then forwards it.
struct Recording<'a> {
    inner: &'a tokio_postgres::Client,
    sent: Mutex<Vec<String>>,
}

impl<'a> Recording<'a> {
    fn new(inner: &'a tokio_postgres::Client) -> Recording<'a> {
        Recording {
            inner,
            sent: Mutex::new(Vec::new()),
        }
    }

    fn sent(&self) -> Vec<String> {
        self.sent.lock().unwrap().clone()
    }

    fn record(&self, sql: &str) {
        self.sent.lock().unwrap().push(sql.to_owned());
    }
}

impl Executor for Recording<'_> {
    type Row = tokio_postgres::Row;

    fn rows(
        &self,
        q: &BuiltQuery,
    ) -> impl Future<Output = pgpatterns::Result<Vec<Self::Row>>> + Send {
        self.record(q.sql());
        self.inner.rows(q)
    }

    fn run(&self, q: &BuiltQuery) -> impl Future<Output = pgpatterns::Result<u64>> + Send {
        self.record(q.sql());
        self.inner.run(q)
    }

    fn run_script(&self, sql: &str) -> impl Future<Output = pgpatterns::Result<()>> + Send {
        self.record(sql);
        self.inner.run_script(sql)
    }
}

fn id_at_most(n: i64) -> BuiltQuery {
    BuiltQuery::fixed_with("SELECT id FROM t WHERE id <= $1", [n.into_value()])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agreeing_strategies_are_timed_interleaved() {
    let schema = schema().await;
    let c = client(&schema).await;
    OrdersSeed::new(2000).run(&c, |_| {}).await.unwrap();
    let spec = OrdersTables::default().latest().status_eq("Complete");
    let direct: Vec<(i64,)> = c
        .rows_as(
            &spec
                .clone()
                .strategy(LatestStrategy::DistinctOn)
                .count_query()
                .unwrap(),
        )
        .await
        .unwrap();
    let complete = direct[0].0;
    assert!(complete > 0);

    // Whole rows of every history strategy, and their first pages.
    let mut rows = Vec::new();
    let mut pages = Vec::new();
    for s in LatestStrategy::FROM_HISTORY {
        let q = spec.clone().strategy(s);
        rows.push(Contender::new(format!("{s:?}"), q.build().unwrap()));
        pages.push(Contender::new(
            format!("{s:?}"),
            q.page_query::<i64>(&pgpatterns::PageRequest::new(50))
                .unwrap(),
        ));
    }
    let db = Recording::new(&c);
    let (rounds, warmup) = (3, 2);
    let cmp = Compare::new(rounds)
        .warmup(warmup)
        .run(&db, &rows)
        .await
        .unwrap();
    assert_eq!(cmp.rounds(), rounds);
    assert_eq!(cmp.warmup(), warmup);
    assert_eq!(cmp.outcomes().len(), rows.len());
    assert_eq!(cmp.rows(), complete);
    let first = &cmp.outcomes()[0];
    for (o, c) in cmp.outcomes().iter().zip(&rows) {
        assert_eq!(o.label, c.label());
        assert_eq!(o.rows, complete);
        assert_eq!(o.hash, first.hash);
        assert_eq!(o.timings.len(), rounds);
        assert!(o.min <= o.median && o.timings.contains(&o.min));
        assert!(o.ratio >= 1.0, "{cmp}");
        assert!(!o.top_node.is_empty());
    }
    assert_eq!(cmp.best().ratio, 1.0);
    assert!(cmp.outcomes().iter().all(|o| o.median >= cmp.best().median));
    assert_eq!(cmp.get("Lateral").unwrap().label, "Lateral");
    assert!(cmp.get("nope").is_none());
    let table = cmp.to_string();
    assert_eq!(table.lines().count(), rows.len() + 1, "{table}");
    assert!(table.starts_with("strategy"), "{table}");

    // What was sent: a hash per contender, a plan per contender, then
    // (warmup + rounds) rounds, each in the order of `round_order`: every
    // contender once per round, and not always in the same order.
    let sent = db.sent();
    let n = rows.len();
    assert_eq!(sent.len(), n + n + (warmup + rounds) * n);
    assert!(sent[..n].iter().all(|s| s.contains("hashtextextended")));
    assert!(sent[n..2 * n].iter().all(|s| s.starts_with("EXPLAIN")));
    let mut orders = std::collections::HashSet::new();
    for (round, chunk) in sent[2 * n..].chunks(n).enumerate() {
        let order = pgpatterns::compare::round_order(round, n);
        orders.insert(order.clone());
        for (sql, i) in chunk.iter().zip(order) {
            assert_eq!(sql, rows[i].query().sql(), "round {round}");
        }
    }
    assert!(orders.len() > 1, "every round ran in the same order");

    // Pages: 50 rows each, a count query's plan starts with its aggregate.
    let cmp = Compare::new(2).warmup(0).run(&c, &pages).await.unwrap();
    assert!(cmp.outcomes().iter().all(|o| o.rows == 50), "{cmp}");
    assert!(
        cmp.outcomes()
            .iter()
            .all(|o| o.top_node.starts_with("Limit")),
        "{cmp}"
    );
    let counts = [
        Contender::new(
            "DistinctOn",
            spec.clone()
                .strategy(LatestStrategy::DistinctOn)
                .count_query()
                .unwrap(),
        ),
        Contender::new(
            "Lateral",
            spec.clone()
                .strategy(LatestStrategy::Lateral)
                .count_query()
                .unwrap(),
        ),
    ];
    // Futures are Send: the comparison can be spawned.
    let cmp = tokio::spawn(async move { Compare::new(1).run(&c, &counts).await })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(cmp.rows(), 1, "a count is one row");
    assert!(
        cmp.outcomes()
            .iter()
            .all(|o| o.top_node.starts_with("Aggregate")),
        "{cmp}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn different_rows_are_a_typed_error() {
    let schema = schema().await;
    let c = client(&schema).await;
    c.batch_execute(
        "CREATE TABLE t (id int8 PRIMARY KEY); INSERT INTO t SELECT generate_series(1, 10)",
    )
    .await
    .unwrap();
    let compare = Compare::new(1);

    // Order does not matter; a trailing `;` or `--` comment does no harm.
    let agree = [
        Contender::new("asc", id_at_most(5)),
        Contender::new(
            "desc",
            BuiltQuery::fixed_with(
                "SELECT id FROM t WHERE id <= $1 ORDER BY id DESC ;\n",
                [5i64.into_value()],
            ),
        ),
        Contender::new(
            "commented",
            BuiltQuery::fixed_with(
                "SELECT id FROM t WHERE id <= $1 -- the first five",
                [5i64.into_value()],
            ),
        ),
    ];
    let cmp = compare.run(&c, &agree).await.unwrap();
    assert_eq!(cmp.rows(), 5);

    // Another count.
    let fewer = [
        Contender::new("five", id_at_most(5)),
        Contender::new("four", id_at_most(4)),
    ];
    let db = Recording::new(&c);
    let e = compare.run(&db, &fewer).await.unwrap_err();
    match &e {
        Error::StrategiesDisagree {
            first,
            other,
            detail,
        } => {
            assert_eq!((first.as_str(), other.as_str()), ("five", "four"));
            assert!(detail.contains("4 rows where the first returns 5"), "{e}");
        }
        other => panic!("expected StrategiesDisagree, got {other}"),
    }
    assert!(e.to_string().starts_with("strategies disagree"), "{e}");
    assert_eq!(db.sent().len(), 2, "nothing is timed after a disagreement");

    // The same count, other values.
    let shifted = [
        Contender::new("ids", id_at_most(5)),
        Contender::new(
            "ids + 1",
            BuiltQuery::fixed_with("SELECT id + 1 FROM t WHERE id <= $1", [5i64.into_value()]),
        ),
    ];
    let e = compare.run(&c, &shifted).await.unwrap_err();
    assert!(
        matches!(&e, Error::StrategiesDisagree { detail, .. } if detail.contains("5 rows each")),
        "{e}"
    );

    // The same values, other multiplicities: {1, 1, 2} vs {1, 2, 2}.
    let dupes = [
        Contender::new(
            "a",
            BuiltQuery::fixed("SELECT 1 UNION ALL SELECT 1 UNION ALL SELECT 2"),
        ),
        Contender::new(
            "b",
            BuiltQuery::fixed("SELECT 1 UNION ALL SELECT 2 UNION ALL SELECT 2"),
        ),
    ];
    let e = compare.run(&c, &dupes).await.unwrap_err();
    assert!(matches!(e, Error::StrategiesDisagree { .. }), "{e}");

    // Only the first is the reference: the third disagreeing is reported.
    let third = [
        Contender::new("x", id_at_most(3)),
        Contender::new("y", id_at_most(3)),
        Contender::new("z", id_at_most(2)),
    ];
    let e = compare.run(&c, &third).await.unwrap_err();
    assert!(
        matches!(&e, Error::StrategiesDisagree { first, other, .. } if first == "x" && other == "z"),
        "{e}"
    );

    // A compare column the query does not have is the server's error.
    let e = Compare::new(1)
        .compare_columns(["missing"])
        .run(&c, &agree)
        .await
        .unwrap_err();
    assert!(e.is_database(), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compare_columns_let_denormalized_agree() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    OrdersSeed::new(1500).run(&c, |_| {}).await.unwrap();
    let shop = OrdersTables::default();
    let status = shop.orders.column::<String>("status").unwrap();
    let spec = shop
        .latest()
        .denormalized(&status)
        .status_in(["Complete", "Cancelled"]);
    let denorm = spec.denormalize().unwrap();
    denorm.install(&mut c).await.unwrap();
    denorm
        .backfill::<i64, _>(&mut c, 500, |_| {})
        .await
        .unwrap();
    let contenders = [
        Contender::new(
            "DistinctOn",
            spec.clone()
                .strategy(LatestStrategy::DistinctOn)
                .build()
                .unwrap(),
        ),
        Contender::new(
            "Denormalized",
            spec.clone()
                .strategy(LatestStrategy::Denormalized)
                .build()
                .unwrap(),
        ),
    ];
    // Whole rows differ: only the history strategy has `latest_at`.
    let e = Compare::new(1).run(&c, &contenders).await.unwrap_err();
    assert!(
        matches!(&e, Error::StrategiesDisagree { detail, .. } if detail.contains("rows each")),
        "{e}"
    );
    // The columns both have agree.
    let cmp = Compare::new(2)
        .compare_columns(["id", pgpatterns::LATEST_STATUS])
        .run(&c, &contenders)
        .await
        .unwrap();
    assert_eq!(cmp.rows(), 1500, "every order ends Complete or Cancelled");
    assert_eq!(cmp.outcomes()[0].hash, cmp.outcomes()[1].hash);
    // The columns must still agree: the status column is checked, not just ids.
    c.batch_execute(
        "UPDATE orders SET status = CASE status WHEN 'Complete' THEN 'Cancelled' ELSE 'Complete' END \
         WHERE id = 7",
    )
        .await
        .unwrap();
    let e = Compare::new(1)
        .compare_columns(["id", pgpatterns::LATEST_STATUS])
        .run(&c, &contenders)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::StrategiesDisagree { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_before_anything_is_sent() {
    let schema = schema().await;
    let c = client(&schema).await;
    let db = Recording::new(&c);
    let ok = Contender::new("ok", BuiltQuery::fixed("SELECT 1"));
    let cases: Vec<(Compare, Vec<Contender>, &str)> = vec![
        (Compare::new(0), vec![ok.clone()], "invalid rounds"),
        // Absurd round counts: refused, not a capacity-overflow panic.
        (
            Compare::new(usize::MAX),
            vec![ok.clone()],
            "at most 100000 timed rounds",
        ),
        (
            Compare::new(Compare::MAX_ROUNDS + 1),
            vec![ok.clone()],
            "invalid rounds",
        ),
        (
            Compare::new(3).warmup(usize::MAX),
            vec![ok.clone()],
            "invalid warmup",
        ),
        (Compare::new(3), vec![], "invalid contenders"),
        (
            Compare::new(3),
            vec![
                ok.clone(),
                Contender::new("ok", BuiltQuery::fixed("SELECT 2")),
            ],
            "\"ok\" labels two contenders",
        ),
        (
            Compare::new(3),
            vec![
                ok.clone(),
                Contender::new("blank", BuiltQuery::fixed("  \n ")),
            ],
            "contender \"blank\": is empty",
        ),
        (
            Compare::new(3),
            vec![
                ok.clone(),
                Contender::new("", BuiltQuery::fixed("SELECT 1")),
            ],
            "invalid label",
        ),
        (
            Compare::new(3),
            vec![Contender::new(
                "nul",
                BuiltQuery::fixed_with("SELECT $1::text", ["a\0b".to_owned().into_value()]),
            )],
            "NUL",
        ),
        (
            Compare::new(3).compare_columns(["x".repeat(64)]),
            vec![ok.clone()],
            "longer than 63 bytes",
        ),
    ];
    for (compare, contenders, says) in cases {
        let e = compare.run(&db, &contenders).await.unwrap_err();
        assert!(e.is_invalid_input(), "{e}");
        assert!(e.to_string().contains(says), "{e} should say {says}");
    }
    assert!(db.sent().is_empty(), "sent: {:?}", db.sent());
    assert!(matches!(
        Compare::new(0).run(&db, &[ok]).await.unwrap_err(),
        Error::InvalidSpec {
            field: "rounds",
            ..
        }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_values_and_names_stay_parameters_and_quoted() {
    let schema = schema().await;
    let c = client(&schema).await;
    let odd = "we\"ird'; DROP TABLE t; --";
    let t = Table::new("t").unwrap();
    let name = t.column::<String>("name").unwrap();
    let weird = t.column::<String>(odd).unwrap();
    crate::support::create(&c, &t, &[name.erase(), weird.erase()]).await;
    let hostile = "O'Brien'; DROP TABLE t; --";
    crate::support::exec(
        &c,
        &crate::support::insert(
            &t,
            &[name.erase(), weird.erase()],
            [
                vec![hostile.to_owned().param(), "x".to_owned().param()],
                vec!["plain".to_owned().param(), "y".to_owned().param()],
            ],
        ),
    )
    .await;
    let by_hand = BuiltQuery::fixed_with(
        "SELECT * FROM t WHERE name = $1",
        [hostile.to_owned().into_value()],
    );
    let built = BuiltQuery::from(
        &pgpatterns::sea_query::Query::select()
            .column(pgpatterns::sea_query::Asterisk)
            .from(t.table_ref())
            .and_where(name.eq(hostile))
            .to_owned(),
    );
    assert!(!built.sql().contains("O'Brien"));
    let contenders = [
        Contender::new("by hand", by_hand),
        Contender::new("built", built),
    ];
    let cmp = Compare::new(2).run(&c, &contenders).await.unwrap();
    assert_eq!(cmp.rows(), 1, "the value matched as a value");
    // A hostile column name is a quoted identifier.
    let cmp = Compare::new(1)
        .compare_columns([odd])
        .run(&c, &contenders)
        .await
        .unwrap();
    assert_eq!(cmp.rows(), 1);
    assert_eq!(
        crate::support::count_rows(&c, &t).await,
        2,
        "t is still there"
    );
}
