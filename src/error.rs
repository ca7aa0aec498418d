//! The crate's one error type.

use std::fmt;

/// A `Result` whose error defaults to [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A boxed error from a client library, kept as the [`source`](std::error::Error::source).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in pgpatterns.
///
/// Invalid input is reported as [`Error::InvalidSpec`] or
/// [`Error::InvalidIdentifier`] **before** any SQL reaches the server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A spec, option or value was rejected before any SQL was built or sent.
    #[error("invalid {field}: {reason}")]
    InvalidSpec {
        /// The field, argument or option that was rejected (e.g. `"limit"`).
        field: &'static str,
        /// Why it was rejected.
        reason: String,
    },

    /// An SQL identifier (schema, table, column, alias) was rejected.
    #[error("invalid identifier {ident:?}: {reason}")]
    InvalidIdentifier {
        /// The identifier as given.
        ident: String,
        /// Why it was rejected (empty, longer than 63 bytes, contains NUL).
        reason: &'static str,
    },

    /// The server (or the connection to it) reported an error for a statement.
    #[error("{}", DbDisplay(self))]
    Database {
        /// The SQL text that failed (values are not included: they are bound).
        sql: String,
        /// The five-character SQLSTATE, when the server sent one (e.g. `42P01`).
        code: Option<String>,
        /// The server's message, or the client's when there was no server error.
        message: String,
        /// The client library's error.
        #[source]
        source: BoxError,
    },

    /// A column of a returned row could not be decoded into the requested Rust type.
    #[error("cannot decode column {column} as {expected}: {source}")]
    Decode {
        /// The column name or index.
        column: String,
        /// The Rust type that was requested.
        expected: &'static str,
        /// The client library's error.
        #[source]
        source: BoxError,
    },

    /// A query returned more rows than allowed (`fetch_optional`: at most one;
    /// `fetch_one`: exactly one) or none where one was required.
    #[error("expected {expected} row, got {got}")]
    RowCount {
        /// What was allowed: `"exactly one"` or `"at most one"`.
        expected: &'static str,
        /// How many rows came back (`0` or `2`, meaning "more than one").
        got: usize,
    },

    /// A statement that cannot run inside a transaction block (such as
    /// `CREATE INDEX CONCURRENTLY`) was given an executor that is a transaction.
    #[error("this statement cannot run inside a transaction: {sql}")]
    InTransaction {
        /// The statement.
        sql: String,
    },

    /// Two queries compared as equivalent ([`compare`](crate::compare))
    /// returned different rows: another count, or the same count with other
    /// values (an order-insensitive hash of the rows differs).
    #[error("strategies disagree: {other:?} returns other rows than {first:?}: {detail}")]
    StrategiesDisagree {
        /// The label of the first query, the reference.
        first: String,
        /// The label of the query that disagrees with it.
        other: String,
        /// What differs: the row counts, or the hashes of equally many rows.
        detail: String,
    },

    /// A database object that pgpatterns was asked to create, replace or
    /// drop already exists and is not the one pgpatterns would make: it sits
    /// on another table, has another definition, or was not created by
    /// pgpatterns (an index of that name on another table or with another
    /// definition, a function or trigger without pgpatterns' mark). Nothing
    /// was changed — never dropped or replaced; rename one of them (e.g.
    /// [`Denormalize::named`](crate::Denormalize::named)) or remove the
    /// other object yourself.
    #[error("{kind} {name} already exists and is not the one pgpatterns would create: {reason}")]
    ObjectConflict {
        /// What kind of object: `"function"`, `"trigger"`, `"index"`, `"table"`.
        kind: &'static str,
        /// The object's name as PostgreSQL shows it.
        name: String,
        /// What differs.
        reason: String,
    },

    /// The throwaway PostgreSQL cluster could not be found, started or reached.
    #[error("throwaway database: `{command}` failed: {stderr}")]
    TestDb {
        /// The command (or step) that failed.
        command: String,
        /// What it printed on stderr, or why it failed.
        stderr: String,
    },
}

struct DbDisplay<'a>(&'a Error);

impl fmt::Display for DbDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Error::Database {
            sql, code, message, ..
        } = self.0
        {
            match code {
                Some(code) => write!(f, "database error {code}: {message}")?,
                None => write!(f, "database error: {message}")?,
            }
            write!(f, " (in SQL: {sql})")?;
        }
        Ok(())
    }
}

impl Error {
    /// Shorthand for [`Error::InvalidSpec`].
    pub(crate) fn spec(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidSpec {
            field,
            reason: reason.into(),
        }
    }

    /// `Ok` when `value >= min`, else an [`Error::InvalidSpec`] for `field`
    /// saying so (limits, batch sizes).
    pub(crate) fn at_least(field: &'static str, value: i64, min: i64) -> Result<()> {
        if value >= min {
            Ok(())
        } else {
            Err(Error::spec(
                field,
                format!("must be at least {min}, got {value}"),
            ))
        }
    }

    /// The SQLSTATE of a [`Error::Database`] error, if the server sent one.
    ///
    /// ```
    /// # use pgpatterns::Error;
    /// let e = Error::InvalidSpec { field: "limit", reason: "must be positive".into() };
    /// assert_eq!(e.code(), None);
    /// ```
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Database { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The SQL text of a [`Error::Database`] error.
    pub fn sql(&self) -> Option<&str> {
        match self {
            Error::Database { sql, .. } => Some(sql),
            Error::InTransaction { sql } => Some(sql),
            _ => None,
        }
    }

    /// `true` for errors raised before anything was sent to the server
    /// ([`Error::InvalidSpec`], [`Error::InvalidIdentifier`]).
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidSpec { .. } | Error::InvalidIdentifier { .. }
        )
    }

    /// `true` for errors reported by the server or the connection.
    pub fn is_database(&self) -> bool {
        matches!(self, Error::Database { .. })
    }

    /// `true` for [`Error::ObjectConflict`]: an existing object of the name
    /// is not the one described, and was left alone.
    pub fn is_object_conflict(&self) -> bool {
        matches!(self, Error::ObjectConflict { .. })
    }

    /// `true` when the server rejected a statement for a unique-constraint
    /// violation (SQLSTATE `23505`).
    pub fn is_unique_violation(&self) -> bool {
        self.code() == Some("23505")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_error_displays_code_and_sql() {
        let e = Error::Database {
            sql: "SELECT 1/0".into(),
            code: Some("22012".into()),
            message: "division by zero".into(),
            source: "division by zero".into(),
        };
        assert_eq!(
            e.to_string(),
            "database error 22012: division by zero (in SQL: SELECT 1/0)"
        );
        assert_eq!(e.code(), Some("22012"));
        assert_eq!(e.sql(), Some("SELECT 1/0"));
        assert!(e.is_database());
        assert!(!e.is_invalid_input());
    }

    #[test]
    fn spec_error_names_the_field() {
        let e = Error::spec("limit", "must be at least 1, got 0");
        assert_eq!(e.to_string(), "invalid limit: must be at least 1, got 0");
        assert!(e.is_invalid_input());
    }
}
