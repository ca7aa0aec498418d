//! Shared by the client implementations: `Row` decoding and error mapping.
//! `postgres::Row`/`postgres::Error` are re-exports of the tokio-postgres types.

use postgres_types::FromSqlOwned;

#[cfg(not(feature = "tokio-postgres"))]
use postgres::{Error as PgError, Row as PgRow};
#[cfg(feature = "tokio-postgres")]
use tokio_postgres::{Error as PgError, Row as PgRow};

use super::{ColumnIndex, RowRead};
use crate::error::BoxError;
use crate::{Error, Result};

impl RowRead for PgRow {
    fn try_get<T: FromSqlOwned>(&self, idx: ColumnIndex<'_>) -> Result<T> {
        let columns = self.columns();
        let position = match idx {
            ColumnIndex::Position(i) => Some(i).filter(|&i| i < columns.len()),
            ColumnIndex::Name(n) => columns.iter().position(|c| c.name() == n),
        };
        let column = match (idx, position) {
            (_, Some(i)) => format!("{:?} (#{i})", columns[i].name()),
            (ColumnIndex::Position(i), None) => format!("#{i}"),
            (ColumnIndex::Name(n), None) => format!("{n:?}"),
        };
        let decode = |source: BoxError| Error::Decode {
            column: column.clone(),
            expected: std::any::type_name::<T>(),
            source,
        };
        let Some(i) = position else {
            // Said in plain words here: the client's error would be
            // "invalid column `2`".
            let names: Vec<String> = columns.iter().map(|c| format!("{:?}", c.name())).collect();
            let has = match names.len() {
                0 => "no columns".to_owned(),
                1 => format!("one column, {}", names[0]),
                n => format!("{n} columns: {}", names.join(", ")),
            };
            let why = match idx {
                ColumnIndex::Position(_) => format!("the row has {has}"),
                ColumnIndex::Name(_) => format!("the row has no column of that name; it has {has}"),
            };
            return Err(decode(why.into()));
        };
        PgRow::try_get::<_, T>(self, i).map_err(|e| decode(Box::new(e)))
    }

    fn len(&self) -> usize {
        PgRow::len(self)
    }

    fn column_name(&self, idx: usize) -> Option<&str> {
        self.columns().get(idx).map(|c| c.name())
    }
}

/// Maps a client error for `sql` to [`Error::Database`]: the SQLSTATE, and
/// the server's message, detail and hint, or (without a server error) the
/// client's message followed by its causes, so the message says everything
/// once and the client's error is kept only for downcasting.
pub(crate) fn db_error(sql: &str, e: PgError) -> Error {
    let (code, message) = match e.as_db_error() {
        Some(db) => {
            let mut message = db.message().to_owned();
            if let Some(detail) = db.detail() {
                message.push_str("; detail: ");
                message.push_str(detail);
            }
            if let Some(hint) = db.hint() {
                message.push_str("; hint: ");
                message.push_str(hint);
            }
            (Some(db.code().code().to_owned()), message)
        }
        None => (e.code().map(|c| c.code().to_owned()), chain_text(&e)),
    };
    Error::Database {
        sql: sql.to_owned(),
        code,
        message,
        client: Box::new(e),
    }
}

/// An error's message and its causes', `: `-separated, each cause once
/// (skipped when the text so far already includes it).
pub(crate) fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    text
}
