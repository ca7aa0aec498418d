//! The crate's one error type.

use std::fmt;

#[cfg(all(feature = "postgres", not(feature = "tokio-postgres")))]
use postgres::error::{DbError, Error as ClientError};
#[cfg(feature = "tokio-postgres")]
use tokio_postgres::error::{DbError, Error as ClientError};

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
    ///
    /// Its `Display` says everything once: the SQLSTATE, the server's message
    /// with its detail and hint (or, without a server error, what went wrong
    /// with the connection, down to its cause), and the SQL. So
    /// [`source()`](std::error::Error::source) is `None`: the client
    /// library's error would only repeat the message (the convention of
    /// tokio-postgres, whose errors show a message or return it as their
    /// source, never both). The client's error is kept for inspection:
    /// [`client_error`](Error::client_error), and
    /// [`as_db_error`](Error::as_db_error) for the server's fields
    /// (constraint, table, position, …).
    #[error("{}", DbDisplay(self))]
    Database {
        /// The SQL text that failed (values are not included: they are bound).
        sql: String,
        /// The five-character SQLSTATE, when the server sent one (e.g. `42P01`).
        code: Option<String>,
        /// The server's message with its detail and hint, or what went wrong
        /// with the connection when there was no server error.
        message: String,
        /// The client library's error (`tokio_postgres::Error`,
        /// `deadpool_postgres::PoolError`), for downcasting. Not the
        /// [`source`](std::error::Error::source): `message` already says
        /// what it says.
        client: BoxError,
    },

    /// A column of a returned row could not be decoded into the requested Rust type.
    ///
    /// `Display` ends with the innermost cause in plain words (the column's
    /// Postgres type when the types differ, a `NULL` read into a type that
    /// cannot hold it, a column the row does not have), so it reads on its
    /// own; [`source()`](std::error::Error::source) is still the client
    /// library's error, for downcasting.
    #[error(
        "cannot decode column {column} as {}: {}",
        short_type_name(expected),
        RootCause(&**source)
    )]
    Decode {
        /// The column name and position (`"amount" (#0)`), the position alone
        /// when the row has no such column (`#2`), or the name alone when it
        /// has no column of that name.
        column: String,
        /// The Rust type that was requested (as [`std::any::type_name`]
        /// spells it; `Display` drops the module paths).
        expected: &'static str,
        /// The client library's error.
        #[source]
        source: BoxError,
    },

    /// A query returned more rows than allowed (`fetch_optional`: at most one;
    /// `fetch_one`: exactly one) or none where one was required.
    #[error("expected {}, got {}", Counted(expected), CountGot(expected, *got))]
    RowCount {
        /// What was allowed: `"exactly one"` or `"at most one"` (rows), or
        /// a phrase naming what was counted (`"one EXPLAIN row"`).
        expected: &'static str,
        /// How many came back; for `"exactly one"` and `"at most one"`,
        /// `0` or `2`, meaning "more than one".
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
    #[error("strategies disagree: {other:?} returns different rows from {first:?}: {detail}")]
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

    /// A database object that an operation needs does not exist (a
    /// materialized view refreshed before it was created). Nothing was
    /// changed.
    #[error("{kind} {name} does not exist: {hint}")]
    ObjectMissing {
        /// What kind of object: `"materialized view"`.
        kind: &'static str,
        /// The object's name as pgpatterns would create it.
        name: String,
        /// What to do about it.
        hint: &'static str,
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

/// [`Error::RowCount`]'s `expected`: a bare count (`"exactly one"`) is of rows.
struct Counted(&'static str);

impl fmt::Display for Counted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)?;
        if self.0.ends_with(" one") {
            f.write_str(" row")?;
        }
        Ok(())
    }
}

/// [`Error::RowCount`]'s `got`: `none`, or `more than one` where `2` means it.
struct CountGot(&'static str, usize);

impl fmt::Display for CountGot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (_, 0) => f.write_str("none"),
            ("exactly one" | "at most one", n) if n >= 2 => f.write_str("more than one"),
            (_, n) => write!(f, "{n}"),
        }
    }
}

/// A Rust type name without module paths:
/// `core::option::Option<alloc::string::String>` → `Option<String>`.
pub(crate) fn short_type_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut word = String::new();
    let mut chars = name.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else if c == ':' && chars.peek() == Some(&':') {
            // `path::` — drop the path segment and the separator.
            chars.next();
            word.clear();
        } else {
            out.push_str(&word);
            word.clear();
            out.push(c);
        }
    }
    out.push_str(&word);
    out
}

/// The innermost cause of a decode error, in plain words: the error at the
/// end of the source chain, with the common ones of `postgres-types`
/// reworded.
struct RootCause<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for RootCause<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut root = self.0;
        while let Some(next) = root.source() {
            root = next;
        }
        if root.is::<postgres_types::WasNull>() {
            return f.write_str("the value is NULL; decode into an `Option` to accept NULL");
        }
        let text = root.to_string();
        if root.is::<postgres_types::WrongType>() {
            // "cannot convert between the Rust type `R` and the Postgres type `P`"
            let mut ticks = text.rsplit('`');
            if let (Some(_), Some(pg)) = (ticks.next(), ticks.next()) {
                return write!(f, "the column's Postgres type is `{pg}`");
            }
        }
        f.write_str(&text)
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
    #[must_use]
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Database { code, .. } => code.as_deref(),
            _ => None,
        }
    }

    /// The message of a [`Error::Database`] error: the server's message
    /// with its detail and hint, or what went wrong with the connection.
    ///
    /// ```
    /// # use pgpatterns::Error;
    /// let e = Error::InvalidSpec { field: "limit", reason: "must be positive".into() };
    /// assert_eq!(e.message(), None);
    /// ```
    #[must_use]
    pub fn message(&self) -> Option<&str> {
        match self {
            Error::Database { message, .. } => Some(message),
            _ => None,
        }
    }

    /// The client library's error behind a [`Error::Database`] error
    /// (`tokio_postgres::Error`, `deadpool_postgres::PoolError`), to
    /// downcast. It is not the [`source`](std::error::Error::source), whose
    /// text the message already includes.
    #[must_use]
    pub fn client_error(&self) -> Option<&(dyn std::error::Error + Send + Sync + 'static)> {
        match self {
            Error::Database { client, .. } => Some(&**client),
            _ => None,
        }
    }

    /// The server's error behind a [`Error::Database`] error, with all its
    /// fields (severity, detail, hint, constraint, table, column, position,
    /// …); `None` for other errors and for connection failures.
    #[cfg(any(feature = "tokio-postgres", feature = "postgres"))]
    #[cfg_attr(
        docsrs,
        doc(cfg(any(feature = "tokio-postgres", feature = "postgres")))
    )]
    #[must_use]
    pub fn as_db_error(&self) -> Option<&DbError> {
        let client = self.client_error()?;
        if let Some(e) = client.downcast_ref::<ClientError>() {
            return e.as_db_error();
        }
        client.downcast_ref::<DbError>()
    }

    /// The SQL text of a [`Error::Database`] error.
    #[must_use]
    pub fn sql(&self) -> Option<&str> {
        match self {
            Error::Database { sql, .. } => Some(sql),
            Error::InTransaction { sql } => Some(sql),
            _ => None,
        }
    }

    /// `true` for errors raised before anything was sent to the server
    /// ([`Error::InvalidSpec`], [`Error::InvalidIdentifier`]).
    #[must_use]
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidSpec { .. } | Error::InvalidIdentifier { .. }
        )
    }

    /// `true` for errors reported by the server or the connection.
    #[must_use]
    pub fn is_database(&self) -> bool {
        matches!(self, Error::Database { .. })
    }

    /// `true` for [`Error::ObjectConflict`]: an existing object of the name
    /// is not the one described, and was left alone.
    #[must_use]
    pub fn is_object_conflict(&self) -> bool {
        matches!(self, Error::ObjectConflict { .. })
    }

    /// `true` for [`Error::ObjectMissing`]: an object the operation needs
    /// does not exist.
    #[must_use]
    pub fn is_object_missing(&self) -> bool {
        matches!(self, Error::ObjectMissing { .. })
    }

    /// `true` when the server rejected a statement for a unique-constraint
    /// violation (SQLSTATE `23505`).
    #[must_use]
    pub fn is_unique_violation(&self) -> bool {
        self.code() == Some("23505")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `{e}` and every `source()` below it, as `anyhow`'s `{:#}` prints them.
    fn chain(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
        let mut out = vec![e.to_string()];
        let mut next = e.source();
        while let Some(cause) = next {
            out.push(cause.to_string());
            next = cause.source();
        }
        out
    }

    #[test]
    fn database_error_displays_code_and_sql() {
        let e = Error::Database {
            sql: "SELECT 1/0".into(),
            code: Some("22012".into()),
            message: "division by zero".into(),
            client: "db error: division by zero".into(),
        };
        assert_eq!(
            e.to_string(),
            "database error 22012: division by zero (in SQL: SELECT 1/0)"
        );
        assert_eq!(e.code(), Some("22012"));
        assert_eq!(e.sql(), Some("SELECT 1/0"));
        assert_eq!(e.message(), Some("division by zero"));
        assert!(e.client_error().is_some());
        assert!(e.is_database());
        assert!(!e.is_invalid_input());
    }

    #[test]
    fn database_error_chain_says_the_message_once() {
        let e = Error::Database {
            sql: "SELECT 1/0".into(),
            code: Some("22012".into()),
            message: "division by zero".into(),
            client: "division by zero".into(),
        };
        let all = chain(&e).join("\n");
        assert_eq!(all.matches("division by zero").count(), 1, "{all}");
        assert!(std::error::Error::source(&e).is_none());
    }

    #[test]
    fn decode_error_ends_with_the_root_cause() {
        #[derive(Debug)]
        struct Outer(BoxError);
        impl fmt::Display for Outer {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("error deserializing column 0")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&*self.0)
            }
        }
        let decode = |root: BoxError| Error::Decode {
            column: "\"id\" (#0)".into(),
            expected: std::any::type_name::<Option<String>>(),
            source: Box::new(Outer(root)),
        };
        let wrong = decode(Box::new(postgres_types::WrongType::new::<String>(
            postgres_types::Type::INT8,
        )));
        assert_eq!(
            wrong.to_string(),
            "cannot decode column \"id\" (#0) as Option<String>: the column's Postgres type is `int8`"
        );
        // source() is still the client's error.
        let source = std::error::Error::source(&wrong).expect("a source");
        assert_eq!(source.to_string(), "error deserializing column 0");
        assert!(source.downcast_ref::<Outer>().is_some());

        let null = decode(Box::new(postgres_types::WasNull));
        assert_eq!(
            null.to_string(),
            "cannot decode column \"id\" (#0) as Option<String>: the value is NULL; decode into \
             an `Option` to accept NULL"
        );
        let other = decode("invalid UTF-8 in the value".into());
        assert!(
            other.to_string().ends_with(": invalid UTF-8 in the value"),
            "{other}"
        );
    }

    #[test]
    fn type_names_lose_their_paths() {
        for (full, short) in [
            ("i32", "i32"),
            ("alloc::string::String", "String"),
            (
                "core::option::Option<alloc::string::String>",
                "Option<String>",
            ),
            (
                "(i64, core::option::Option<chrono::DateTime<chrono::offset::utc::Utc>>)",
                "(i64, Option<DateTime<Utc>>)",
            ),
            ("alloc::vec::Vec<u8>", "Vec<u8>"),
            (
                "EXPLAIN (FORMAT JSON) output",
                "EXPLAIN (FORMAT JSON) output",
            ),
        ] {
            assert_eq!(short_type_name(full), short, "{full}");
        }
    }

    #[test]
    fn row_counts_read_as_sentences() {
        let e = |expected, got| Error::RowCount { expected, got }.to_string();
        assert_eq!(e("exactly one", 0), "expected exactly one row, got none");
        assert_eq!(
            e("exactly one", 2),
            "expected exactly one row, got more than one"
        );
        assert_eq!(
            e("at most one", 2),
            "expected at most one row, got more than one"
        );
        assert_eq!(
            e("one EXPLAIN row", 0),
            "expected one EXPLAIN row, got none"
        );
        assert_eq!(
            e("one plan per probe", 5),
            "expected one plan per probe, got 5"
        );
    }

    #[test]
    fn spec_error_names_the_field() {
        let e = Error::spec("limit", "must be at least 1, got 0");
        assert_eq!(e.to_string(), "invalid limit: must be at least 1, got 0");
        assert!(e.is_invalid_input());
    }
}
