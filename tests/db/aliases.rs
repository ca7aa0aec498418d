//! The crate's own aliases never capture a user's table: tables and columns
//! named like the aliases generated SQL uses (`latest`, `newer`,
//! `latest_skip`, `latest_rn`, `r0`, …) give the same rows as plain names.

use chrono::{DateTime, TimeZone, Utc};
use pgpatterns::{
    BuiltQuery, Executor, LatestStatus, LatestStrategy, Relation, SinceGraph, SinceStrategy, Table,
};

use crate::support::{client, schema};

/// Every latest strategy counts the same entities when the entity table is
/// called `latest` and the history `newer`, with columns named after the
/// window and skip-scan aliases — for every predicate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_aliases_avoid_user_names() {
    let schema = schema().await;
    let c = client(&schema).await;
    c.batch_execute(
        "CREATE TABLE latest (latest_skip bigint PRIMARY KEY, latest_first text);
         CREATE TABLE newer (id bigserial PRIMARY KEY, latest_prev bigint NOT NULL,
                             latest_rn text, latest_next timestamptz NOT NULL);
         INSERT INTO latest SELECT g FROM generate_series(1, 8) g;
         INSERT INTO newer (latest_prev, latest_rn, latest_next) VALUES
           (1, 'a', '2024-01-01'), (1, 'b', '2024-01-02'), (2, 'a', '2024-01-02'),
           (2, NULL, '2024-01-03'), (3, 'b', '2024-01-01'), (3, 'a', '2024-01-01'),
           (4, 'c', '2024-01-05');",
    )
    .await
    .unwrap();
    let e = Table::new("latest").unwrap();
    let h = Table::new("newer").unwrap();
    let spec = LatestStatus::new(
        &e.column::<i64>("latest_skip").unwrap(),
        &h.column::<i64>("latest_prev").unwrap(),
        &h.column::<String>("latest_rn").unwrap(),
        &h.column::<DateTime<Utc>>("latest_next").unwrap(),
    )
    .then_by(&h.column::<i64>("id").unwrap());
    // by hand: 1 → b, 2 → NULL, 3 → a (tie on time, greater id), 4 → c
    for (s, want) in [
        (spec.clone(), 4),
        (spec.clone().status_eq("a"), 1),
        (spec.clone().status_ne("a"), 3),
        (spec.clone().status_is_null(), 1),
        (spec.clone().status_not_in(["b", "c"]), 2),
        (spec.clone().missing_as("none").status_eq("none"), 4),
    ] {
        for strategy in LatestStrategy::FROM_HISTORY {
            let q = s.clone().strategy(strategy).count_query().unwrap();
            let got: Vec<(i64,)> = c
                .rows_as(&q)
                .await
                .unwrap_or_else(|e| panic!("{strategy:?}: {e}\n{}", q.sql()));
            assert_eq!(got, vec![(want,)], "{strategy:?}\n{}", q.sql());
        }
    }
}

/// SemiJoin aliases the root `r0` inside its subqueries: a related table
/// called `r0` must not be captured.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn since_root_alias_avoids_user_names() {
    let schema = schema().await;
    let c = client(&schema).await;
    c.batch_execute(
        "CREATE TABLE moves (id bigint PRIMARY KEY, owner bigint, at timestamptz);
         CREATE TABLE r0 (id bigint PRIMARY KEY, at timestamptz);
         CREATE TABLE r01 (id bigint PRIMARY KEY, move_id bigint, at timestamptz);
         INSERT INTO r0 VALUES (1, '2024-06-02'), (2, '2024-01-01');
         INSERT INTO moves VALUES (1, 1, '2024-01-01'), (2, 2, '2024-01-01'),
                                  (3, NULL, '2024-06-03'), (4, 2, NULL), (5, NULL, NULL);
         INSERT INTO r01 VALUES (1, 4, '2024-06-05'), (2, 5, '2024-01-01');",
    )
    .await
    .unwrap();
    let moves = Table::new("moves").unwrap();
    let r0 = Table::new("r0").unwrap();
    let r01 = Table::new("r01").unwrap();
    let id = moves.column::<i64>("id").unwrap();
    let graph = SinceGraph::new(&id, moves.column::<DateTime<Utc>>("at").unwrap())
        .related(
            "owner",
            Relation::new(
                &moves.column::<i64>("owner").unwrap(),
                &r0.column::<i64>("id").unwrap(),
            ),
            r0.column::<DateTime<Utc>>("at").unwrap(),
        )
        .related(
            "child",
            Relation::new(&r01.column::<i64>("move_id").unwrap(), &id),
            r01.column::<DateTime<Utc>>("at").unwrap(),
        );
    let q = graph.since(Utc.with_ymd_and_hms(2024, 6, 1, 0, 0, 0).unwrap());
    // moves 1 (its owner changed), 3 (itself), 4 (its child)
    for strategy in [
        SinceStrategy::UnionIn,
        SinceStrategy::SemiJoin,
        SinceStrategy::Exists,
        SinceStrategy::OrJoins,
        SinceStrategy::GreatestGroupBy,
    ] {
        let count: BuiltQuery = q.clone().strategy(strategy).count_query().unwrap();
        let got: Vec<(i64,)> = c
            .rows_as(&count)
            .await
            .unwrap_or_else(|e| panic!("{strategy:?}: {e}\n{}", count.sql()));
        assert_eq!(got, vec![(3,)], "{strategy:?}\n{}", count.sql());
    }
}
