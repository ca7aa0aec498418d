//! [`BuiltQuery`]: SQL text plus its bound values, ready for any client.

use std::fmt;

use sea_query::{
    Alias, DynIden, Expr, ExprTrait, PostgresQueryBuilder, Query, QueryBuilder,
    QueryStatementBuilder, SchemaStatementBuilder, SelectStatement, Value, Values,
};
use sea_query_postgres::{PostgresValue, PostgresValues};

use crate::{Error, Result};

/// A statement rendered for PostgreSQL: SQL text with `$1, $2, …`
/// placeholders and the values bound to them.
///
/// Values never appear in the SQL text; they travel separately as bind
/// parameters. `Display` shows the SQL followed by the values (for logs);
/// only the SQL text is sent as SQL.
///
/// ```
/// use pgpatterns::{BuiltQuery, Table};
/// use sea_query::Query;
/// let orders = Table::new("orders")?;
/// let q = BuiltQuery::from(
///     &Query::select()
///         .column(orders.column::<i64>("id")?.col_ref())
///         .from(orders.table_ref())
///         .and_where(orders.column::<String>("status")?.eq("it's"))
///         .to_owned(),
/// );
/// assert_eq!(q.sql(), r#"SELECT "orders"."id" FROM "orders" WHERE "orders"."status" = CAST($1 AS text)"#);
/// assert_eq!(q.to_string(), format!("{}\n-- $1 = E'it\\'s'", q.sql()));
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Clone, PartialEq)]
pub struct BuiltQuery {
    sql: String,
    values: Values,
}

impl BuiltQuery {
    /// Renders any sea-query statement (`SELECT`, `INSERT`, `UPDATE`,
    /// `DELETE`, `WITH`) for PostgreSQL.
    #[must_use]
    pub fn new(statement: &impl QueryStatementBuilder) -> BuiltQuery {
        let (sql, values) = statement.build_any(&PostgresQueryBuilder);
        BuiltQuery { sql, values }
    }

    /// Renders a sea-query schema statement (`CREATE TABLE`, `CREATE INDEX`, …).
    /// Schema statements carry no bound values.
    #[must_use]
    pub fn schema(statement: &impl SchemaStatementBuilder) -> BuiltQuery {
        BuiltQuery {
            sql: statement.build(PostgresQueryBuilder),
            values: Values(Vec::new()),
        }
    }

    /// SQL text written by pgpatterns itself (DDL bodies such as trigger
    /// functions), with no values. Only `'static` text is accepted, so user
    /// data cannot be formatted into it.
    #[must_use]
    pub fn fixed(sql: &'static str) -> BuiltQuery {
        BuiltQuery {
            sql: sql.to_owned(),
            values: Values(Vec::new()),
        }
    }

    /// `prefix` + this statement's SQL, with the same values (e.g.
    /// `EXPLAIN (…) `): placeholders keep their numbers.
    pub(crate) fn prefixed(&self, prefix: &'static str) -> BuiltQuery {
        BuiltQuery {
            sql: format!("{prefix}{}", self.sql),
            values: self.values.clone(),
        }
    }

    /// The SQL without trailing whitespace and `;` terminators: what can
    /// stand inside parentheses as a subquery.
    pub(crate) fn body(&self) -> &str {
        self.sql
            .trim_end_matches(|c: char| c == ';' || c.is_whitespace())
    }

    /// This statement's [`body`](Self::body) between `prefix` and `suffix`,
    /// with the same values (a subquery: `SELECT … FROM (` + SQL + `) AS
    /// x`); placeholders keep their numbers. `prefix` and `suffix` are SQL
    /// this crate composed from fixed text and quoted identifiers, never
    /// from values. Start `suffix` with a newline, so a `--` comment ending
    /// the statement cannot swallow it.
    pub(crate) fn wrapped(&self, prefix: &str, suffix: &str) -> BuiltQuery {
        BuiltQuery {
            sql: format!("{prefix}{}{suffix}", self.body()),
            values: self.values.clone(),
        }
    }

    /// DDL text this crate composed from sea-query-quoted identifiers and
    /// statements without values (trigger functions, triggers).
    pub(crate) fn generated(sql: String) -> BuiltQuery {
        BuiltQuery {
            sql,
            values: Values(Vec::new()),
        }
    }

    /// [`generated`](Self::generated) text with `$1, $2, …` placeholders for
    /// `values` (the seeders' `INSERT … SELECT` into tables named at run
    /// time): identifiers are quoted into the text, values are bound.
    #[cfg_attr(not(feature = "seed"), allow(dead_code))]
    pub(crate) fn generated_with(
        sql: String,
        values: impl IntoIterator<Item = Value>,
    ) -> BuiltQuery {
        BuiltQuery {
            sql,
            values: Values(values.into_iter().collect()),
        }
    }

    /// Fixed SQL text written by pgpatterns or the caller's own code (a
    /// seeder's `INSERT … SELECT generate_series(…)`, say) with `$1, $2, …`
    /// placeholders for `values`. Only `'static` text is accepted, so user data
    /// cannot be formatted into the SQL; it travels in `values`.
    ///
    /// ```
    /// use pgpatterns::{BuiltQuery, SqlType};
    /// let q = BuiltQuery::fixed_with(
    ///     "SELECT g FROM generate_series($1::int8, $2::int8) AS g",
    ///     [1i64.into_value(), 10i64.into_value()],
    /// );
    /// assert_eq!(q.values().0.len(), 2);
    /// ```
    #[must_use]
    pub fn fixed_with(sql: &'static str, values: impl IntoIterator<Item = Value>) -> BuiltQuery {
        BuiltQuery {
            sql: sql.to_owned(),
            values: Values(values.into_iter().collect()),
        }
    }

    /// The SQL text, with `$n` placeholders.
    #[must_use]
    pub fn sql(&self) -> &str {
        &self.sql
    }

    /// The bound values, in placeholder order.
    #[must_use]
    pub fn values(&self) -> &Values {
        &self.values
    }

    /// Splits into SQL text and values.
    #[must_use]
    pub fn into_parts(self) -> (String, Values) {
        (self.sql, self.values)
    }

    /// The values as parameters for `tokio-postgres`/`postgres`
    /// (`client.query(q.sql(), &q.params().as_params())`).
    #[must_use]
    pub fn params(&self) -> PostgresValues {
        PostgresValues(self.values.0.iter().cloned().map(PostgresValue).collect())
    }

    /// Checks the values before they are sent: PostgreSQL text cannot hold a
    /// NUL character, and the server's error for it does not say which value.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] naming the parameter.
    pub fn check(&self) -> Result<()> {
        for (i, v) in self.values.0.iter().enumerate() {
            if contains_nul(v) {
                return Err(Error::spec(
                    "value",
                    format!(
                        "parameter ${} contains a NUL character, which PostgreSQL text cannot store",
                        i + 1
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// `SET TRANSACTION ISOLATION LEVEL READ COMMITTED`, the first statement of
/// transactions whose correctness needs each statement's fresh snapshot (a
/// statement that runs after waiting for a lock must see what the lock's
/// holder committed). In a transaction that already ran queries at another
/// level PostgreSQL refuses it: a loud error instead of a stale answer.
pub(crate) fn read_committed() -> BuiltQuery {
    BuiltQuery::fixed("SET TRANSACTION ISOLATION LEVEL READ COMMITTED")
}

/// `SELECT COUNT(*) FROM (statement) AS "matching"`.
pub(crate) fn count_of(statement: SelectStatement) -> BuiltQuery {
    // Rendered in place: `.to_owned()` would clone the whole statement.
    let mut count = Query::select();
    count
        .expr(Expr::cust("COUNT(*)"))
        .from_subquery(statement, Alias::new("matching"));
    BuiltQuery::new(&count)
}

/// One batch's size and last key: `SELECT COUNT(*), MAX(pgp_batch.key)
/// FROM (batch) AS pgp_batch`, for keyset-batched operations.
pub(crate) fn batch_bounds(batch: SelectStatement, key: DynIden) -> BuiltQuery {
    let alias = Alias::new("pgp_batch");
    BuiltQuery::new(
        &Query::select()
            .expr(Expr::cust("COUNT(*)"))
            .expr(Expr::col((alias.clone(), key)).max())
            .from_subquery(batch, alias)
            .to_owned(),
    )
}

/// `a IS DISTINCT FROM b` (sea-query has no operator for it; its `is_not`
/// prints `IS NOT`, which PostgreSQL only accepts before NULL/TRUE/FALSE).
pub(crate) fn is_distinct_from(a: Expr, b: Expr) -> Expr {
    Expr::cust_with_exprs("$1 IS DISTINCT FROM $2", [a, b])
}

/// A condition that is always true and keeps PostgreSQL from planning the
/// statement with parallel workers: `pg_current_xact_id_if_assigned()` is
/// parallel-unsafe, and the planner decides whether a statement may run in
/// parallel from every function it mentions, before it simplifies
/// `… OR TRUE` away (so nothing is evaluated per row). For statements that
/// look up a few thousand rows by key, where starting workers costs more
/// than they save.
pub(crate) fn serial_only() -> Expr {
    Expr::cust("(pg_current_xact_id_if_assigned() IS NULL OR TRUE)")
}

fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(Some(s)) => s.contains('\0'),
        Value::Array(_, Some(items)) => items.iter().any(contains_nul),
        _ => false,
    }
}

impl<S: QueryStatementBuilder> From<&S> for BuiltQuery {
    fn from(statement: &S) -> Self {
        BuiltQuery::new(statement)
    }
}

impl fmt::Display for BuiltQuery {
    /// The SQL, then one `-- $n = value` line per bound value (values shown
    /// as SQL literals for reading only; they are never sent that way).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.sql)?;
        for (i, v) in self.values.0.iter().enumerate() {
            write!(
                f,
                "\n-- ${} = {}",
                i + 1,
                PostgresQueryBuilder.value_to_string(v)
            )?;
        }
        Ok(())
    }
}

impl fmt::Debug for BuiltQuery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BuiltQuery")
            .field("sql", &self.sql)
            .field("values", &self.values.0)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqlType;
    use sea_query::Query;

    #[test]
    fn distinct_from_keeps_values_bound() {
        let q = BuiltQuery::new(
            &Query::select()
                .expr(1i64.param())
                .expr(is_distinct_from(Expr::cust("x"), 2i64.param()))
                .to_owned(),
        );
        assert_eq!(
            q.sql(),
            "SELECT CAST($1 AS int8), x IS DISTINCT FROM CAST($2 AS int8)"
        );
        assert_eq!(q.values().0.len(), 2);
    }

    #[test]
    fn nul_in_a_value_is_rejected_before_sending() {
        let q = BuiltQuery::new(
            &Query::select()
                .expr(String::from("ok").param())
                .expr(String::array_param([String::from("a\0b")]))
                .to_owned(),
        );
        let err = q.check().unwrap_err();
        assert!(err.to_string().contains("parameter $2"), "{err}");
        let fine = BuiltQuery::new(&Query::select().expr(Expr::cust("1")).to_owned());
        assert!(fine.check().is_ok());
    }

    #[test]
    fn params_match_values() {
        let q = BuiltQuery::new(
            &Query::select()
                .expr(1i64.param())
                .expr(true.param())
                .to_owned(),
        );
        assert_eq!(q.params().as_params().len(), 2);
        assert!(format!("{q:?}").contains("BigInt(Some(1))"));
    }
}
