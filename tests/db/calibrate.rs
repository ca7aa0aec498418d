//! Calibrated `Auto`: every candidate measured on the database, the fastest
//! kept until the catalog changes, slow candidates cut off by their bound.

use std::time::Duration;

use chrono::{DateTime, Utc};
use pgpatterns::seed::moves::MovesSeed;
use pgpatterns::seed::sales::SalesSeed;
use pgpatterns::{
    column, table, Calibration, Choice, DecidedBy, Error, LatestStatus, LatestStrategy, Shape,
    StrategyCache,
};

use crate::support::{client, schema, with_sync_client};

/// 3 000 orders with 30 status rows each and no index on the history: the
/// skip scan probes the whole history once per order, far slower than any
/// other strategy.
const FIXTURE: &str = "
    CREATE TABLE orders (id int8 PRIMARY KEY);
    CREATE TABLE order_status (id int8 PRIMARY KEY, order_id int8 NOT NULL,
                               status text, created_at timestamptz NOT NULL);
    INSERT INTO orders SELECT g FROM generate_series(1, 3000) g;
    INSERT INTO order_status
    SELECT (o - 1) * 30 + k, o, 's' || ((o + k) % 7),
           timestamptz '2024-01-01' + (k || ' minutes')::interval
    FROM generate_series(1, 3000) o, generate_series(1, 30) k;
    ANALYZE orders, order_status;";

fn spec() -> LatestStatus<String> {
    let (orders, history) = (table!("orders"), table!("order_status"));
    LatestStatus::new(
        &column!(orders, "id": i64),
        &column!(history, "order_id": i64),
        &column!(history, "status": String),
        &column!(history, "created_at": DateTime<Utc>),
    )
    .then_by(&column!(history, "id": i64))
    .status_eq("s3")
    .strategy(LatestStrategy::Auto)
}

/// The calibrated choice is the candidate with the lowest measured median.
fn assert_fastest_won<S: Copy + PartialEq + std::fmt::Debug>(c: &Choice<S>) {
    let timed: Vec<(S, Duration)> = c
        .candidates
        .iter()
        .filter_map(|e| e.median.map(|m| (e.strategy, m)))
        .collect();
    assert!(!timed.is_empty(), "{c}");
    let fastest = timed.iter().min_by_key(|(_, m)| *m).map(|(s, _)| *s);
    assert_eq!(fastest, Some(c.strategy), "{c}");
}

/// The rounds a calibrated choice's winner was timed in.
fn calibrated_rounds<S: std::fmt::Debug>(c: &Choice<S>) -> usize {
    match c.decided_by {
        DecidedBy::Calibrated { rounds } => rounds,
        _ => panic!("not calibrated: {c}"),
    }
}

/// Calibrated, its winner timed in at least the configured `rounds` (more
/// when a close call added some).
fn assert_rounds<S: std::fmt::Debug>(c: &Choice<S>, rounds: usize) {
    let r = calibrated_rounds(c);
    assert!(r >= rounds, "{r} < {rounds}\n{c}");
}

#[tokio::test]
async fn close_calls_time_the_close_contenders_again_within_their_budget() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute(FIXTURE).await.unwrap();
    let spec = spec();
    let page = Shape::Page { limit: 20 };

    // No budget: the configured rounds, exactly.
    let cache = StrategyCache::new(Duration::from_secs(60));
    let off = Calibration::new()
        .rounds(3)
        .close_calls(10.0, Duration::ZERO);
    let measured = spec
        .calibrate_with(&cache, &mut c, page, &off)
        .await
        .unwrap();
    assert_eq!(calibrated_rounds(&measured), 3, "{measured}");
    assert!(!measured.reason.contains("close contenders"), "{measured}");
    let off_took = measured.decided_in;

    // Every survivor within the margin (10×): they are all timed again,
    // for as many rounds as fit 300 ms, and the fastest over all of them
    // still wins.
    let cache = StrategyCache::new(Duration::from_secs(60));
    let budget = Duration::from_millis(300);
    let on = Calibration::new().rounds(3).close_calls(10.0, budget);
    let measured = spec
        .calibrate_with(&cache, &mut c, page, &on)
        .await
        .unwrap();
    let rounds = calibrated_rounds(&measured);
    assert!(rounds > 3, "{measured}");
    assert!(
        measured
            .reason
            .contains(&format!("timed {} more rounds", rounds - 3)),
        "{measured}"
    );
    assert_fastest_won(&measured);
    // The budget bounds them: the whole calibration took no longer than
    // the one without close calls (three times over, for a busy machine)
    // plus the budget; unbounded, they would run to `Compare::MAX_ROUNDS`.
    assert!(
        measured.decided_in <= off_took * 3 + budget,
        "{:?} against {off_took:?} without close calls\n{measured}",
        measured.decided_in
    );
}

#[tokio::test]
async fn latest_calibration_keeps_the_measured_winner_until_the_catalog_changes() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute(FIXTURE).await.unwrap();
    // Rule decisions expire at once; a calibrated one is kept regardless.
    let cache = StrategyCache::new(Duration::ZERO);
    let spec = spec();
    let cal = Calibration::new().rounds(3);
    let measured = spec
        .calibrate_with(&cache, &mut c, Shape::Count, &cal)
        .await
        .unwrap();
    assert_rounds(&measured, 3);
    assert!(!measured.cached);
    assert_fastest_won(&measured);
    // Every history strategy was a candidate; the skip scan without its
    // index was cut off by its bound instead of running to the end.
    for s in LatestStrategy::FROM_HISTORY {
        assert!(
            measured.candidates.iter().any(|e| e.strategy == s),
            "{s:?} missing\n{measured}"
        );
    }
    let skip = measured
        .candidates
        .iter()
        .find(|e| e.strategy == LatestStrategy::SkipScan)
        .unwrap();
    assert!(
        skip.rejected
            .as_deref()
            .is_some_and(|r| r.contains("cancelled")),
        "{measured}"
    );
    assert_eq!(cache.calibrated(), 1);
    assert!(
        measured.to_string().contains("decided by: calibration"),
        "{measured}"
    );

    // Later decisions use it, past the time to live, without measuring.
    let later = spec
        .explain_choice_with(&cache, &c, Shape::Count)
        .await
        .unwrap();
    assert!(later.cached, "{later}");
    assert_eq!(later.decided_by, measured.decided_by);
    assert_eq!(later.strategy, measured.strategy);

    // The measured strategy returns the same count as every other.
    let want = spec
        .clone()
        .strategy(LatestStrategy::DistinctOn)
        .count(&c)
        .await
        .unwrap();
    assert!(want > 0);
    let got = spec
        .clone()
        .strategy(measured.strategy)
        .count(&c)
        .await
        .unwrap();
    assert_eq!(got, want);

    // An index on the history changes the catalog state it was measured
    // under: the next decision is the rule's again.
    c.batch_execute(
        "CREATE INDEX ON order_status (order_id, created_at DESC, id DESC) INCLUDE (status)",
    )
    .await
    .unwrap();
    let after = spec
        .explain_choice_with(&cache, &c, Shape::Count)
        .await
        .unwrap();
    assert_eq!(after.decided_by, DecidedBy::Rule, "{after}");
    // Calibrating again measures under the new state (the skip scan now has
    // its index, so it is not cut off).
    let again = spec
        .calibrate_with(&cache, &mut c, Shape::Count, &cal)
        .await
        .unwrap();
    assert_fastest_won(&again);
    let skip = again
        .candidates
        .iter()
        .find(|e| e.strategy == LatestStrategy::SkipScan)
        .unwrap();
    assert!(skip.median.is_some(), "{again}");

    // A trigger installed on the history (here a no-op of the test's own)
    // changes the state too: the rule decides again. Removed, the state is
    // the one the calibration measured, and its decision is used again.
    c.batch_execute(
        "CREATE FUNCTION calib_noop() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN RETURN NULL; END $$;
         CREATE TRIGGER calib_noop AFTER INSERT ON order_status
           FOR EACH STATEMENT EXECUTE FUNCTION calib_noop();",
    )
    .await
    .unwrap();
    let with_trigger = spec
        .explain_choice_with(&cache, &c, Shape::Count)
        .await
        .unwrap();
    assert_eq!(with_trigger.decided_by, DecidedBy::Rule, "{with_trigger}");
    c.batch_execute("DROP TRIGGER calib_noop ON order_status")
        .await
        .unwrap();
    let without = spec
        .explain_choice_with(&cache, &c, Shape::Count)
        .await
        .unwrap();
    assert_eq!(without.decided_by, again.decided_by, "{without}");
    assert_eq!(without.strategy, again.strategy, "{without}");
    // Dropping the index the second calibration was measured with brings
    // back the state the first one measured: its decision applies again.
    c.batch_execute(
        "DO $$ DECLARE i regclass; BEGIN
           SELECT indexrelid::regclass INTO i FROM pg_index
            WHERE indrelid = 'order_status'::regclass AND NOT indisprimary;
           EXECUTE format('DROP INDEX %s', i);
         END $$",
    )
    .await
    .unwrap();
    let dropped = spec
        .explain_choice_with(&cache, &c, Shape::Count)
        .await
        .unwrap();
    assert_eq!(dropped.decided_by, measured.decided_by, "{dropped}");
    assert_eq!(dropped.strategy, measured.strategy, "{dropped}");
    assert!(dropped.reason.contains("median"), "{dropped}");
}

#[tokio::test]
async fn calibrations_survive_a_restart_through_their_export() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute(FIXTURE).await.unwrap();
    let before = StrategyCache::new(Duration::from_secs(60));
    let spec = spec();
    let measured = spec
        .calibrate_with(
            &before,
            &mut c,
            Shape::Page { limit: 20 },
            &Calibration::new().rounds(2),
        )
        .await
        .unwrap();
    let text = before.export_calibrations();
    assert_eq!(text.lines().count(), 2, "{text}");
    // No bound value is written: the status the spec filters on is not there.
    assert!(!text.contains("s3"), "{text}");

    // Another process: a fresh cache, the same database.
    let after = StrategyCache::new(Duration::from_secs(60));
    assert_eq!(after.import_calibrations(&text).unwrap(), 1);
    assert_eq!(after.calibrated(), 1);
    let used = spec
        .explain_choice_with(&after, &c, Shape::Page { limit: 20 })
        .await
        .unwrap();
    assert_rounds(&measured, 2);
    assert_eq!(used.decided_by, measured.decided_by, "{used}");
    assert!(used.cached, "{used}");
    assert_eq!(used.strategy, measured.strategy);
    // Pages of any size in the same power of two share it.
    let near = spec
        .explain_choice_with(&after, &c, Shape::Page { limit: 30 })
        .await
        .unwrap();
    assert_eq!(near.decided_by, measured.decided_by, "{near}");
    // Another query is not covered by it.
    let other = spec
        .clone()
        .status_eq("s4")
        .explain_choice_with(&after, &c, Shape::Count)
        .await
        .unwrap();
    assert_eq!(other.decided_by, DecidedBy::Rule, "{other}");
    // Once the catalog changes, the imported decision no longer applies.
    c.batch_execute("CREATE INDEX ON order_status (order_id)")
        .await
        .unwrap();
    let changed = spec
        .explain_choice_with(&after, &c, Shape::Page { limit: 20 })
        .await
        .unwrap();
    assert_eq!(changed.decided_by, DecidedBy::Rule, "{changed}");
    // Text that is not an export is refused, and nothing is loaded.
    let fresh = StrategyCache::new(Duration::from_secs(60));
    for bad in [
        "",
        "something else\n",
        "pgpatterns calibrations 1\nnot\ta\tline\n",
    ] {
        let err = fresh.import_calibrations(bad).unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidSpec {
                    field: "calibrations",
                    ..
                }
            ),
            "{err}"
        );
    }
    assert_eq!(fresh.calibrated(), 0);
}

#[tokio::test]
async fn calibration_bounds_are_honoured_and_bad_options_refused_before_sql() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    c.batch_execute(FIXTURE).await.unwrap();
    let cache = StrategyCache::new(Duration::from_secs(60));
    // Every candidate needs more than 1 ms on 90 000 history rows: each is
    // cancelled at its bound and nothing is kept.
    let tight = Calibration::new()
        .first_timeout(Duration::from_millis(1))
        .min_timeout(Duration::from_millis(1));
    match spec()
        .calibrate_with(&cache, &mut c, Shape::Count, &tight)
        .await
    {
        Err(Error::InvalidSpec { field, reason }) => {
            assert_eq!(field, "calibration", "{reason}");
            assert!(reason.contains("first_timeout"), "{reason}");
        }
        other => panic!("expected every candidate to be cancelled, got {other:?}"),
    }
    assert_eq!(cache.calibrated(), 0);
    // The session's own statement_timeout is untouched (the bound was
    // local to each transaction).
    let row = c.query_one("SHOW statement_timeout", &[]).await.unwrap();
    assert_eq!(row.get::<_, String>(0), "0");
    // Options are checked before anything is sent (the tables need not exist).
    let empty = crate::support::schema().await;
    let mut e = client(&empty).await;
    let err = spec()
        .calibrate_with(&cache, &mut e, Shape::Count, &Calibration::new().rounds(0))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidSpec {
                field: "rounds",
                ..
            }
        ),
        "{err}"
    );
}

#[tokio::test]
async fn since_and_rollup_calibrate_too() {
    let schema = schema().await;
    let mut c = client(&schema).await;
    // Tracked: the maintained last-changed column is a candidate too.
    let moves = MovesSeed::new(2000).tracked(true);
    let report = moves.run(&c, |_| {}).await.unwrap();
    SalesSeed::sample().run(&c, |_| {}).await.unwrap();
    let cache = StrategyCache::new(Duration::from_secs(60));
    let cal = Calibration::new().rounds(3);

    let q = moves
        .tables()
        .full_graph()
        .since(report.now - chrono::Duration::days(30));
    let measured = q
        .calibrate_with(&cache, &mut c, Shape::Count, &cal)
        .await
        .unwrap();
    assert_rounds(&measured, 3);
    assert_fastest_won(&measured);
    assert!(
        measured
            .candidates
            .iter()
            .any(|e| e.strategy == pgpatterns::SinceStrategy::Tracked && e.median.is_some()),
        "{measured}"
    );
    let later = q
        .explain_choice_with(&cache, &c, Shape::Count)
        .await
        .unwrap();
    assert!(
        later.cached && later.strategy == measured.strategy,
        "{later}"
    );

    // A report PreAggregate cannot compute keeps it ruled out.
    let tables = SalesSeed::sample().tables();
    let with_distinct = tables.dashboard(true);
    let measured = with_distinct
        .calibrate_with(&cache, &mut c, &cal)
        .await
        .unwrap();
    assert_eq!(measured.strategy, pgpatterns::RollupStrategy::GroupingSets);
    assert!(
        measured
            .candidates
            .iter()
            .any(|e| e.strategy == pgpatterns::RollupStrategy::PreAggregate
                && e.rejected.is_some()),
        "{measured}"
    );
    let plain = tables.dashboard(false);
    let measured = plain.calibrate_with(&cache, &mut c, &cal).await.unwrap();
    assert_fastest_won(&measured);
    assert_eq!(
        measured
            .candidates
            .iter()
            .filter(|e| e.median.is_some())
            .count(),
        2,
        "{measured}"
    );
    let later = plain.explain_choice_with(&cache, &c).await.unwrap();
    assert!(
        later.cached && later.strategy == measured.strategy,
        "{later}"
    );
}

#[tokio::test]
async fn calibration_runs_on_the_blocking_client() {
    let schema = schema().await;
    let c = client(&schema).await;
    c.batch_execute(FIXTURE).await.unwrap();
    let measured = with_sync_client(&schema, |sc| {
        spec().calibrate_blocking(sc, Shape::Page { limit: 20 }, &Calibration::new().rounds(2))
    })
    .await
    .unwrap();
    assert_rounds(&measured, 2);
    assert_fastest_won(&measured);
}
