//! `EXPLAIN` capture: run a [`BuiltQuery`] under `EXPLAIN (FORMAT JSON)` —
//! with its bound values — and get a typed plan tree with a readable text
//! rendering.
//!
//! - [`explain`] asks the planner only (nothing runs): estimated rows and
//!   costs, on any [`Executor`].
//! - [`explain_analyze`] runs the statement (`ANALYZE`, optionally
//!   `BUFFERS`) **inside a transaction that is rolled back**, so explaining an
//!   `UPDATE` or `DELETE` changes nothing; it needs a [`Transactional`]
//!   executor, because the rollback must happen on the same connection.
//!
//! ```no_run
//! # #[cfg(feature = "tokio-postgres")]
//! # async fn demo(mut client: tokio_postgres::Client, q: pgpatterns::BuiltQuery) -> pgpatterns::Result<()> {
//! use pgpatterns::explain::{explain, explain_analyze};
//! let estimate = explain(&client, &q).await?;
//! println!("{estimate}"); // Aggregate (cost=… rows=…)\n  -> Index Only Scan on …
//! let actual = explain_analyze(&mut client, &q, true).await?;
//! println!("{:?} ms", actual.execution_ms);
//! # Ok(()) }
//! ```

use std::fmt;

use serde_json::Value as Json;

use crate::exec::{run_blocking, run_blocking_mut, BlockingExecutor};
use crate::{BuiltQuery, Error, Executor, Result, RowRead, Transactional};

/// One node of a plan.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PlanNode {
    /// `Seq Scan`, `Index Only Scan`, `Hash Join`, …
    pub node_type: String,
    /// The table scanned, for scan nodes.
    pub relation: Option<String>,
    /// The alias of that table in the query.
    pub alias: Option<String>,
    /// The index used, for index scans.
    pub index: Option<String>,
    /// The condition rows are filtered by after the scan or join (`Filter`),
    /// e.g. `(a > $1) OR (hashed SubPlan 1)`.
    pub filter: Option<String>,
    /// Planner's startup cost.
    pub startup_cost: f64,
    /// Planner's total cost.
    pub total_cost: f64,
    /// Rows the planner expects per loop.
    pub plan_rows: f64,
    /// Rows produced per loop (`ANALYZE` only).
    pub actual_rows: Option<f64>,
    /// Times the node ran (`ANALYZE` only).
    pub actual_loops: Option<f64>,
    /// Milliseconds to the last row, per loop (`ANALYZE` only).
    pub actual_total_ms: Option<f64>,
    /// Shared buffers found in cache (`BUFFERS` only).
    pub shared_hit_blocks: Option<i64>,
    /// Shared buffers read from disk or the OS cache (`BUFFERS` only).
    pub shared_read_blocks: Option<i64>,
    /// The node's inputs.
    pub children: Vec<PlanNode>,
}

/// A whole plan: the root node and the timings PostgreSQL reports.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Plan {
    /// The top node.
    pub root: PlanNode,
    /// Planning time in milliseconds, when reported.
    pub planning_ms: Option<f64>,
    /// Execution time in milliseconds (`ANALYZE` only).
    pub execution_ms: Option<f64>,
    /// The JSON PostgreSQL returned ([`Plan::json`]).
    pub(crate) raw: Json,
}

impl Plan {
    /// Reads `EXPLAIN (FORMAT JSON)` output captured elsewhere (`psql`,
    /// `auto_explain` with `log_format = json`, your own client).
    ///
    /// ```
    /// use pgpatterns::explain::Plan;
    /// let plan = Plan::from_json(
    ///     r#"[{"Plan": {"Node Type": "Seq Scan", "Relation Name": "orders", "Alias": "orders",
    ///         "Startup Cost": 0.0, "Total Cost": 35.5, "Plan Rows": 2550}}]"#,
    /// )?;
    /// assert_eq!(plan.root.node_type, "Seq Scan");
    /// assert_eq!(plan.to_string(), "Seq Scan on orders  (cost=0.00..35.50 rows=2550)");
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    ///
    /// # Errors
    /// [`Error::Decode`] when `text` is not JSON or has no `"Plan"` object.
    pub fn from_json(text: &str) -> Result<Plan> {
        let json: Json = serde_json::from_str(text).map_err(|e| Error::Decode {
            column: "QUERY PLAN".to_owned(),
            expected: "EXPLAIN (FORMAT JSON) output",
            source: e.into(),
        })?;
        parse(json)
    }

    /// The JSON PostgreSQL returned, as text, for anything not modelled
    /// here (parse it with the JSON library of your choice).
    #[must_use]
    pub fn json(&self) -> String {
        self.raw.to_string()
    }

    /// Every node, depth first from the root.
    #[must_use]
    pub fn nodes(&self) -> Vec<&PlanNode> {
        let mut out = Vec::new();
        let mut stack = vec![&self.root];
        while let Some(node) = stack.pop() {
            out.push(node);
            stack.extend(node.children.iter().rev());
        }
        out
    }

    /// Whether any node scans with the index `name`.
    #[must_use]
    pub fn uses_index(&self, name: &str) -> bool {
        self.nodes()
            .iter()
            .any(|n| n.index.as_deref() == Some(name))
    }
}

/// `EXPLAIN (FORMAT JSON [, ANALYZE] [, BUFFERS]) <q>` with `q`'s values.
///
/// # Errors
/// [`Error::InvalidSpec`] for an empty statement, or `buffers` without
/// `analyze`.
pub fn explain_statement(q: &BuiltQuery, analyze: bool, buffers: bool) -> Result<BuiltQuery> {
    if q.sql().trim().is_empty() {
        return Err(Error::spec(
            "statement",
            "is empty: there is nothing to explain",
        ));
    }
    if buffers && !analyze {
        return Err(Error::spec("buffers", "BUFFERS needs ANALYZE"));
    }
    let options = match (analyze, buffers) {
        (false, _) => "EXPLAIN (FORMAT JSON) ",
        (true, false) => "EXPLAIN (FORMAT JSON, ANALYZE) ",
        (true, true) => "EXPLAIN (FORMAT JSON, ANALYZE, BUFFERS) ",
    };
    Ok(q.prefixed(options))
}

/// The planner's plan for `q` (nothing is executed).
///
/// # Errors
/// [`Error::InvalidSpec`] for an empty statement; the database's error (a
/// statement PostgreSQL cannot explain); [`Error::Decode`] if the output is
/// not the JSON PostgreSQL documents.
pub async fn explain<E: Executor>(db: &E, q: &BuiltQuery) -> Result<Plan> {
    let rows = db.rows(&explain_statement(q, false, false)?).await?;
    parse_rows(&rows)
}

/// [`explain`] on a blocking client (`postgres::Client`,
/// `postgres::Transaction`), from the same code.
///
/// # Errors
/// As [`explain`].
pub fn explain_blocking<C>(db: &mut C, q: &BuiltQuery) -> Result<Plan>
where
    C: BlockingExecutor + Send,
    C::Row: Send,
{
    run_blocking(db, async |db| explain(db, q).await)
}

/// Runs `q` under `EXPLAIN ANALYZE` (and `BUFFERS` if asked) inside a
/// transaction — a savepoint when `db` is one — that is rolled back, and
/// returns the plan with actual rows, loops and times.
///
/// # Errors
/// As [`explain`].
pub async fn explain_analyze<E: Transactional>(
    db: &mut E,
    q: &BuiltQuery,
    buffers: bool,
) -> Result<Plan> {
    let rows = db
        .rows_rolled_back(&explain_statement(q, true, buffers)?)
        .await?;
    parse_rows(&rows)
}

/// [`explain_analyze`] on a blocking client (`postgres::Client`,
/// `postgres::Transaction`), from the same code.
///
/// # Errors
/// As [`explain_analyze`].
pub fn explain_analyze_blocking<C>(db: &mut C, q: &BuiltQuery, buffers: bool) -> Result<Plan>
where
    C: BlockingExecutor + Send,
    C::Row: Send,
{
    run_blocking_mut(db, async |db| explain_analyze(db, q, buffers).await)
}

/// The plan in the first row of an `EXPLAIN (FORMAT JSON)` result.
pub(crate) fn parse_rows<R: RowRead>(rows: &[R]) -> Result<Plan> {
    let first = rows.first().ok_or(Error::RowCount {
        expected: "one EXPLAIN row",
        got: 0,
    })?;
    let json: Json = first.try_get(0usize.into())?;
    parse(json)
}

/// Reads PostgreSQL's `EXPLAIN (FORMAT JSON)` output.
///
/// # Errors
/// [`Error::Decode`] when the JSON lacks the `Plan` object.
pub(crate) fn parse(json: Json) -> Result<Plan> {
    let top = json.get(0).unwrap_or(&json);
    let root = top
        .get("Plan")
        .ok_or_else(|| decode_error("the EXPLAIN output has no \"Plan\""))?;
    Ok(Plan {
        root: node(root),
        planning_ms: top.get("Planning Time").and_then(Json::as_f64),
        execution_ms: top.get("Execution Time").and_then(Json::as_f64),
        raw: json.clone(),
    })
}

fn decode_error(message: &'static str) -> Error {
    Error::Decode {
        column: "QUERY PLAN".to_owned(),
        expected: "EXPLAIN (FORMAT JSON) output",
        source: message.into(),
    }
}

fn node(j: &Json) -> PlanNode {
    let text = |k: &str| j.get(k).and_then(Json::as_str).map(str::to_owned);
    let num = |k: &str| j.get(k).and_then(Json::as_f64);
    PlanNode {
        node_type: text("Node Type").unwrap_or_default(),
        relation: text("Relation Name"),
        alias: text("Alias"),
        index: text("Index Name"),
        filter: text("Filter"),
        startup_cost: num("Startup Cost").unwrap_or_default(),
        total_cost: num("Total Cost").unwrap_or_default(),
        plan_rows: num("Plan Rows").unwrap_or_default(),
        actual_rows: num("Actual Rows"),
        actual_loops: num("Actual Loops"),
        actual_total_ms: num("Actual Total Time"),
        shared_hit_blocks: j.get("Shared Hit Blocks").and_then(Json::as_i64),
        shared_read_blocks: j.get("Shared Read Blocks").and_then(Json::as_i64),
        children: j
            .get("Plans")
            .and_then(Json::as_array)
            .map(|plans| plans.iter().map(node).collect())
            .unwrap_or_default(),
    }
}

impl fmt::Display for PlanNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, 0)
    }
}

impl PlanNode {
    fn write(&self, f: &mut fmt::Formatter<'_>, depth: usize) -> fmt::Result {
        if depth > 0 {
            write!(f, "{:width$}-> ", "", width = depth * 2 - 2)?;
        }
        f.write_str(&self.node_type)?;
        if let Some(index) = &self.index {
            write!(f, " using {index}")?;
        }
        if let Some(rel) = &self.relation {
            write!(f, " on {rel}")?;
            if let Some(alias) = self.alias.as_ref().filter(|a| *a != rel) {
                write!(f, " {alias}")?;
            }
        }
        write!(
            f,
            "  (cost={:.2}..{:.2} rows={:.0})",
            self.startup_cost, self.total_cost, self.plan_rows
        )?;
        if let (Some(ms), Some(rows), Some(loops)) =
            (self.actual_total_ms, self.actual_rows, self.actual_loops)
        {
            write!(
                f,
                " (actual time={ms:.3} ms rows={rows:.0} loops={loops:.0})"
            )?;
        }
        if let (Some(hit), Some(read)) = (self.shared_hit_blocks, self.shared_read_blocks) {
            write!(f, " buffers hit={hit} read={read}")?;
        }
        for child in &self.children {
            writeln!(f)?;
            child.write(f, depth + 1)?;
        }
        Ok(())
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.root)?;
        if let Some(ms) = self.planning_ms {
            write!(f, "\nPlanning Time: {ms:.3} ms")?;
        }
        if let Some(ms) = self.execution_ms {
            write!(f, "\nExecution Time: {ms:.3} ms")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_prefixes_and_keeps_values() {
        let q = BuiltQuery::fixed_with("SELECT $1::int8", [crate::SqlType::into_value(5i64)]);
        let e = explain_statement(&q, true, true).unwrap();
        assert_eq!(
            e.sql(),
            "EXPLAIN (FORMAT JSON, ANALYZE, BUFFERS) SELECT $1::int8"
        );
        assert_eq!(e.values(), q.values());
        assert!(explain_statement(&BuiltQuery::fixed("  "), false, false)
            .unwrap_err()
            .is_invalid_input());
        assert!(explain_statement(&q, false, true)
            .unwrap_err()
            .is_invalid_input());
    }

    #[test]
    fn parses_and_renders_a_plan() {
        let json: Json = serde_json::from_str(
            r#"[{"Plan": {"Node Type": "Aggregate", "Startup Cost": 1.5, "Total Cost": 2.5,
                "Plan Rows": 1, "Actual Rows": 1, "Actual Loops": 1, "Actual Total Time": 0.2,
                "Plans": [{"Node Type": "Index Only Scan", "Relation Name": "orders",
                  "Alias": "o", "Index Name": "orders_pkey", "Startup Cost": 0.1,
                  "Total Cost": 2.0, "Plan Rows": 10, "Actual Rows": 9, "Actual Loops": 1,
                  "Actual Total Time": 0.1}]},
              "Planning Time": 0.05, "Execution Time": 0.3}]"#,
        )
        .unwrap();
        let plan = parse(json).unwrap();
        assert_eq!(plan.nodes().len(), 2);
        assert!(plan.uses_index("orders_pkey"));
        assert_eq!(plan.execution_ms, Some(0.3));
        assert_eq!(
            plan.to_string(),
            "Aggregate  (cost=1.50..2.50 rows=1) (actual time=0.200 ms rows=1 loops=1)\n\
             -> Index Only Scan using orders_pkey on orders o  (cost=0.10..2.00 rows=10) (actual time=0.100 ms rows=9 loops=1)\n\
             Planning Time: 0.050 ms\nExecution Time: 0.300 ms"
        );
        assert!(parse(serde_json::json!({"nope": 1})).is_err());
        assert_eq!(Plan::from_json(&plan.json()).unwrap(), plan);
        assert!(matches!(
            Plan::from_json("not json"),
            Err(Error::Decode { .. })
        ));
    }
}
