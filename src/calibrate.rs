//! Measured `Auto` decisions: run every candidate strategy of a query on
//! the user's own database and keep the fastest.
//!
//! A family's rule decides from statistics, which is cheap and usually
//! right, but its thresholds cannot know every schema, scale and memory
//! setting. `calibrate` (on [`LatestStatus`](crate::LatestStatus),
//! [`SinceQuery`](crate::SinceQuery) and [`Rollup`](crate::Rollup)) measures
//! instead:
//!
//! 1. the rule decides first (its choice runs first, and sets the time
//!    bound for the others);
//! 2. **exploration**: each candidate runs once inside a transaction whose
//!    `statement_timeout` is a small multiple of the fastest run so far
//!    ([`Calibration::timeout_factor`], never below
//!    [`Calibration::min_timeout`]; the first candidate is bounded by
//!    [`Calibration::first_timeout`]). A candidate that hits the bound is
//!    ruled out, having cost at most that bound;
//!    A candidate the server refuses (an SQLSTATE error, such as a strategy
//!    an extension cannot run) is ruled out too; a connection failure ends
//!    the calibration;
//! 3. the survivors' answers are checked equal (row count and an
//!    order-insensitive hash of the rows, as [`Compare`](crate::Compare)
//!    does); a difference is [`Error::StrategiesDisagree`], never a silent
//!    choice;
//! 4. the survivors run [`Calibration::rounds`] timed rounds, interleaved
//!    in a shuffled order per round; the lowest median wins;
//! 5. **close calls**: when other survivors' medians are within a margin of
//!    the lowest (default 10 %), those close contenders alone run more
//!    interleaved rounds while the extra rounds fit a time budget (default
//!    1 s; [`Calibration::close_calls`]), and the lowest median over all
//!    their rounds wins. A few rounds cannot tell apart queries a few
//!    percent apart on a busy machine; on fast queries, where noise weighs
//!    most, the budget buys many rounds, and on slow ones it buys few or
//!    none, so the bound on what calibration costs stays the configured
//!    rounds plus the budget.
//!
//! The winner is kept in the cache ([`DecidedBy::Calibrated`](crate::DecidedBy))
//! under the same key as the rule's decision — spec, shape, selectivity
//! bucket and **catalog state** — so later `Auto` calls of that query use
//! it without running anything, past the cache's time to live; creating or
//! dropping an index, or installing or removing triggers, on the tables it
//! reads makes the next call decide again by rule until you calibrate
//! again. Calibration runs the candidates for real: call it from a
//! maintenance task or at start-up, never in a request path.

use std::fmt::Debug;
use std::time::{Duration, Instant};

use sea_query::{Expr, Query};

use crate::choice::{DecidedBy, Estimate, Shape, Statistic, StrategyCache, StrategyName};
use crate::compare::{round_order, time_query};
use crate::exec::{RowRead, Transactional};
use crate::spec::Problems;
use crate::types::SqlType;
use crate::{BuiltQuery, Choice, Compare, Error, Result};

/// How [`calibrate`](crate::LatestStatus::calibrate) measures: timed rounds
/// and time bounds. Steps never fail; [`check`](Self::check) (and
/// `calibrate`) refuse zero rounds, more than [`Compare::MAX_ROUNDS`], a
/// factor below 1 or a zero timeout.
///
/// ```
/// use std::time::Duration;
/// use pgpatterns::Calibration;
/// let cal = Calibration::new()
///     .rounds(7)
///     .timeout_factor(2.0)
///     .first_timeout(Duration::from_secs(5));
/// assert!(cal.check().is_ok());
/// assert!(Calibration::new().rounds(0).check().is_err());
/// ```
#[derive(Debug, Clone)]
#[must_use = "a calibration does nothing until a spec is calibrated with it"]
pub struct Calibration {
    rounds: usize,
    factor: f64,
    first: Duration,
    min: Duration,
    margin: f64,
    budget: Duration,
    problems: Problems,
}

impl Default for Calibration {
    fn default() -> Self {
        Calibration::new()
    }
}

impl Calibration {
    /// 5 timed rounds, candidates bounded by 3× the fastest run so far (at
    /// least 100 ms), the first by 30 s; contenders within 10 % of the
    /// fastest timed again for up to 1 s.
    pub fn new() -> Calibration {
        Calibration {
            rounds: 5,
            factor: 3.0,
            first: Duration::from_secs(30),
            min: Duration::from_millis(100),
            margin: 0.10,
            budget: Duration::from_secs(1),
            problems: Problems::default(),
        }
    }

    /// Timed rounds per surviving candidate (default 5).
    pub fn rounds(mut self, rounds: usize) -> Calibration {
        if rounds == 0 || rounds > Compare::MAX_ROUNDS {
            self.problems.note::<()>(Err(Error::spec(
                "rounds",
                format!(
                    "must be between 1 and {}, got {rounds}",
                    Compare::MAX_ROUNDS
                ),
            )));
        } else {
            self.rounds = rounds;
        }
        self
    }

    /// A candidate's exploration run is cancelled (by the server's
    /// `statement_timeout`) after this many times the fastest run so far
    /// (default 3; at least 1).
    pub fn timeout_factor(mut self, factor: f64) -> Calibration {
        if factor.is_finite() && factor >= 1.0 {
            self.factor = factor;
        } else {
            self.problems.note::<()>(Err(Error::spec(
                "timeout_factor",
                format!("must be a finite number of at least 1, got {factor}"),
            )));
        }
        self
    }

    /// The bound of the first candidate's run, the rule's choice (default
    /// 30 s): a query slower than this is not calibrated.
    pub fn first_timeout(mut self, bound: Duration) -> Calibration {
        if let Some(d) = self.bound("first_timeout", bound) {
            self.first = d;
        }
        self
    }

    /// The smallest bound a candidate gets (default 100 ms), so that noise
    /// on a fast query does not rule out a candidate.
    pub fn min_timeout(mut self, bound: Duration) -> Calibration {
        if let Some(d) = self.bound("min_timeout", bound) {
            self.min = d;
        }
        self
    }

    /// Close calls: after the timed rounds, the survivors whose median is
    /// within `margin` of the lowest (a fraction: 0.1 is 10 %) run more
    /// interleaved rounds, as many as fit `budget` (estimated from their
    /// medians, so the extra rounds stop before the budget is spent), at
    /// most [`Compare::MAX_ROUNDS`] in all. Default: 10 % and 1 s. A zero
    /// budget turns it off; the margin must be finite and not negative.
    ///
    /// The winner's [`DecidedBy::Calibrated`] `rounds` counts every round it
    /// was timed in.
    pub fn close_calls(mut self, margin: f64, budget: Duration) -> Calibration {
        if margin.is_finite() && margin >= 0.0 {
            self.margin = margin;
            self.budget = budget;
        } else {
            self.problems.note::<()>(Err(Error::spec(
                "close_calls",
                format!("the margin must be a finite fraction of at least 0, got {margin}"),
            )));
        }
        self
    }

    /// `bound` when it is at least 1 ms (`statement_timeout`'s unit), else
    /// the problem is recorded for `field`.
    fn bound(&mut self, field: &'static str, bound: Duration) -> Option<Duration> {
        let checked = if bound.as_millis() == 0 {
            Err(Error::spec(field, "must be at least 1 ms"))
        } else {
            Ok(bound)
        };
        self.problems.note(checked)
    }

    /// The first problem a step recorded.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] naming the step.
    pub fn check(&self) -> Result<()> {
        self.problems.check()
    }

    /// The bound of a candidate's exploration run after `best`.
    fn bound_after(&self, best: Option<Duration>) -> Duration {
        match best {
            None => self.first,
            Some(b) => b.mul_f64(self.factor).max(self.min).min(self.first),
        }
    }
}

/// `SELECT set_config('statement_timeout', $1, true)`: the bound, for the
/// rest of the transaction only.
fn statement_timeout(bound: Duration) -> BuiltQuery {
    let ms = bound.as_millis().max(1).to_string();
    BuiltQuery::new(
        &Query::select()
            .expr(Expr::cust_with_exprs(
                "set_config('statement_timeout', $1, true)",
                [ms.param()],
            ))
            .to_owned(),
    )
}

/// One candidate's exploration: its time, or why it was ruled out.
enum Explored {
    Ran,
    TimedOut(Duration),
    /// The server refused the statement (a strategy this server cannot
    /// run, e.g. an extension's restriction): ruled out, not fatal.
    Refused(String),
}

/// A query and the cache key its decisions are kept under.
pub(crate) struct Target<'a> {
    pub(crate) cache: &'a StrategyCache,
    pub(crate) family: &'static str,
    pub(crate) shape: Shape,
    /// The reference query the family recalls its decisions by.
    pub(crate) reference: &'a BuiltQuery,
}

/// Measures `candidates` (the rule's `rule.strategy` among them), builds
/// the calibrated choice and keeps it in the cache in place of the rule's.
pub(crate) async fn calibrate<S, E>(
    cal: &Calibration,
    target: Target<'_>,
    db: &mut E,
    rule: Choice<S>,
    mut candidates: Vec<(S, BuiltQuery)>,
) -> Result<Choice<S>>
where
    S: StrategyName,
    E: Transactional,
{
    cal.check()?;
    let started = Instant::now();
    // The rule's choice first: it sets the bound for the others.
    if let Some(i) = candidates.iter().position(|(s, _)| *s == rule.strategy) {
        let first = candidates.remove(i);
        candidates.insert(0, first);
    }
    let hasher = Compare::new(1);
    let mut best: Option<Duration> = None;
    let mut explored = Vec::with_capacity(candidates.len());
    for (_, q) in &candidates {
        let bound = cal.bound_after(best);
        let t = Instant::now();
        let outcome = db
            .run_in_transaction(&[statement_timeout(bound), q.clone()])
            .await;
        let took = t.elapsed();
        match outcome {
            Ok(_) => {
                best = Some(best.map_or(took, |b| b.min(took)));
                explored.push(Explored::Ran);
            }
            Err(e) if e.code() == Some("57014") => explored.push(Explored::TimedOut(bound)),
            // The server's own refusal of this statement; a connection
            // failure (no SQLSTATE) ends the calibration.
            Err(e) if e.code().is_some() => explored.push(Explored::Refused(
                e.message().unwrap_or("refused").to_owned(),
            )),
            Err(e) => return Err(e),
        }
    }
    let survivors: Vec<usize> = explored
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Explored::Ran))
        .map(|(i, _)| i)
        .collect();
    if survivors.is_empty() {
        return Err(Error::spec(
            "calibration",
            format!(
                "no candidate finished within its bound (the first, {:?}, within {:?}): raise \
                 first_timeout",
                candidates.first().map(|(s, _)| *s),
                cal.first
            ),
        ));
    }
    // Same answers: each survivor ran within a bound already, so these do too.
    let mut first_answer: Option<(i64, String, S)> = None;
    for &i in &survivors {
        let (s, q) = &candidates[i];
        let row = db.one_row(&hasher.check_query(q)?).await?;
        let rows: i64 = row.try_get(0usize.into())?;
        let hash: String = row.try_get(1usize.into())?;
        match &first_answer {
            None => first_answer = Some((rows, hash, *s)),
            Some((r0, h0, s0)) if (*r0, h0) != (rows, &hash) => {
                return Err(Error::StrategiesDisagree {
                    first: format!("{s0:?}"),
                    other: format!("{s:?}"),
                    detail: format!("{r0} rows (hash {h0}) against {rows} rows (hash {hash})"),
                });
            }
            Some(_) => {}
        }
    }
    // Timed rounds, interleaved.
    let mut timings: Vec<Vec<Duration>> = vec![Vec::with_capacity(cal.rounds); survivors.len()];
    for round in 0..cal.rounds {
        for j in round_order(round, survivors.len()) {
            timings[j].push(time_query(&*db, &candidates[survivors[j]].1).await?);
        }
    }
    let mut medians: Vec<Duration> = timings.iter_mut().map(|t| median(t)).collect();
    // Close calls: the contenders near the lowest median, timed again.
    let close = close_contenders(&medians, cal.margin);
    let mut extra = 0;
    if close.len() > 1 {
        let per_round: Duration = close.iter().map(|&j| medians[j]).sum();
        let spent = Instant::now();
        while cal.rounds + extra < Compare::MAX_ROUNDS && spent.elapsed() + per_round <= cal.budget
        {
            for k in round_order(cal.rounds + extra, close.len()) {
                let j = close[k];
                timings[j].push(time_query(&*db, &candidates[survivors[j]].1).await?);
            }
            extra += 1;
        }
        for &j in &close {
            medians[j] = median(&mut timings[j]);
        }
    }
    let Some((win, _)) = medians.iter().enumerate().min_by_key(|(_, m)| **m) else {
        return Err(Error::spec("calibration", "no candidate was timed"));
    };
    let winner = candidates[survivors[win]].0;
    let best_median = medians[win];

    let mut estimates = Vec::with_capacity(candidates.len() + rule.candidates.len());
    for (i, (s, _)) in candidates.iter().enumerate() {
        let mut e = rule
            .candidates
            .iter()
            .find(|c| c.strategy == *s && c.rejected.is_none())
            .cloned()
            .unwrap_or_else(|| Estimate::chosen(*s));
        match &explored[i] {
            Explored::TimedOut(bound) => {
                e.rejected = Some(format!(
                    "cancelled by its time bound ({} ms) when explored",
                    bound.as_millis()
                ));
            }
            Explored::Refused(why) => {
                e.rejected = Some(format!("the server refused it: {why}"));
            }
            Explored::Ran => {
                let j = survivors.iter().position(|&k| k == i).unwrap_or(0);
                e.median = Some(medians[j]);
            }
        }
        estimates.push(e);
    }
    // Candidates the rule ruled out (a column that is not maintained, a
    // strategy that cannot compute the report) stay ruled out.
    estimates.extend(
        rule.candidates
            .iter()
            .filter(|c| c.rejected.is_some() && !candidates.iter().any(|(s, _)| *s == c.strategy))
            .cloned(),
    );
    let runner_up = medians
        .iter()
        .enumerate()
        .filter(|(j, _)| *j != win)
        .map(|(j, m)| (candidates[survivors[j]].0, *m))
        .min_by_key(|(_, m)| *m);
    let mut reason = format!(
        "measured fastest here: median {:.3} ms",
        best_median.as_secs_f64() * 1e3
    );
    if let Some((s, m)) = runner_up {
        reason.push_str(&format!(
            ", next {s:?} {:.3} ms ({:.2}×)",
            m.as_secs_f64() * 1e3,
            m.as_secs_f64() / best_median.as_secs_f64().max(1e-9)
        ));
    }
    if extra > 0 {
        reason.push_str(&format!(
            "; {} close contenders timed {extra} more rounds",
            close.len()
        ));
    }
    if winner == rule.strategy {
        reason.push_str("; the rule chose it too");
    } else {
        reason.push_str(&format!("; the rule chose {:?}", rule.strategy));
    }
    let mut statistics = rule.statistics.clone();
    statistics.push(Statistic::count(
        "candidates_cancelled",
        explored
            .iter()
            .filter(|e| matches!(e, Explored::TimedOut(_)))
            .count() as f64,
    ));
    let choice = Choice {
        strategy: winner,
        shape: rule.shape,
        bucket: rule.bucket,
        reason,
        candidates: estimates,
        statistics,
        decided_by: DecidedBy::Calibrated {
            rounds: timings[win].len(),
        },
        cached: false,
        decided_in: started.elapsed(),
        looked_up_in: Duration::ZERO,
        age: Duration::ZERO,
    };
    let recall = target
        .cache
        .recall(target.family, target.shape, target.reference);
    target.cache.pin(&recall, &choice);
    Ok(choice)
}

/// The indexes of `medians` within `margin` (a fraction) of the lowest,
/// the lowest among them.
fn close_contenders(medians: &[Duration], margin: f64) -> Vec<usize> {
    let Some(lowest) = medians.iter().min() else {
        return Vec::new();
    };
    let limit = lowest.as_secs_f64() * (1.0 + margin);
    medians
        .iter()
        .enumerate()
        .filter(|(_, m)| m.as_secs_f64() <= limit)
        .map(|(j, _)| j)
        .collect()
}

fn median(t: &mut [Duration]) -> Duration {
    t.sort_unstable();
    match t.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => t[n / 2],
        n => (t[n / 2 - 1] + t[n / 2]) / 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_grow_from_the_best_run_within_the_limits() {
        let cal = Calibration::new();
        assert_eq!(cal.bound_after(None), Duration::from_secs(30));
        assert_eq!(
            cal.bound_after(Some(Duration::from_millis(1))),
            Duration::from_millis(100),
            "never below the floor"
        );
        assert_eq!(
            cal.bound_after(Some(Duration::from_secs(1))),
            Duration::from_secs(3)
        );
        assert_eq!(
            cal.bound_after(Some(Duration::from_secs(20))),
            Duration::from_secs(30),
            "never above the first bound"
        );
    }

    #[test]
    fn bad_options_are_refused_when_checked() {
        for (cal, field) in [
            (Calibration::new().rounds(0), "rounds"),
            (Calibration::new().rounds(Compare::MAX_ROUNDS + 1), "rounds"),
            (Calibration::new().timeout_factor(0.5), "timeout_factor"),
            (
                Calibration::new().timeout_factor(f64::NAN),
                "timeout_factor",
            ),
            (
                Calibration::new().first_timeout(Duration::ZERO),
                "first_timeout",
            ),
            (
                Calibration::new().min_timeout(Duration::from_micros(10)),
                "min_timeout",
            ),
            (
                Calibration::new().close_calls(-0.1, Duration::from_secs(1)),
                "close_calls",
            ),
            (
                Calibration::new().close_calls(f64::INFINITY, Duration::ZERO),
                "close_calls",
            ),
        ] {
            match cal.check() {
                Err(Error::InvalidSpec { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn close_contenders_are_those_within_the_margin() {
        let ms = Duration::from_millis;
        let m = [ms(100), ms(109), ms(111), ms(95)];
        assert_eq!(close_contenders(&m, 0.10), vec![0, 3]);
        assert_eq!(close_contenders(&m, 0.20), vec![0, 1, 2, 3]);
        assert_eq!(close_contenders(&m, 0.0), vec![3]);
        assert!(close_contenders(&[], 0.1).is_empty());
    }

    #[test]
    fn medians() {
        let ms = Duration::from_millis;
        assert_eq!(median(&mut [ms(3), ms(1), ms(2)]), ms(2));
        assert_eq!(
            median(&mut [ms(4), ms(1), ms(2), ms(3)]),
            Duration::from_micros(2500)
        );
        assert_eq!(median(&mut []), Duration::ZERO);
    }

    #[test]
    fn the_bound_is_bound() {
        let q = statement_timeout(Duration::from_millis(1500));
        assert_eq!(
            q.sql(),
            "SELECT set_config('statement_timeout', CAST($1 AS text), true)"
        );
        assert_eq!(q.values().0.len(), 1);
    }
}
