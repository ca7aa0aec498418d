//! Shared by the client implementations: `Row` decoding and error mapping.
//! `postgres::Row`/`postgres::Error` are re-exports of the tokio-postgres types.

use postgres_types::FromSqlOwned;

#[cfg(not(feature = "tokio-postgres"))]
use postgres::{Error as PgError, Row as PgRow};
#[cfg(feature = "tokio-postgres")]
use tokio_postgres::{Error as PgError, Row as PgRow};

use super::{ColumnIndex, RowRead};
use crate::{Error, Result};

impl RowRead for PgRow {
    fn try_get<T: FromSqlOwned>(&self, idx: ColumnIndex<'_>) -> Result<T> {
        let got = match idx {
            ColumnIndex::Position(i) => PgRow::try_get::<_, T>(self, i),
            ColumnIndex::Name(n) => PgRow::try_get::<_, T>(self, n),
        };
        got.map_err(|e| Error::Decode {
            column: match idx {
                ColumnIndex::Position(i) => self
                    .columns()
                    .get(i)
                    .map_or_else(|| format!("#{i}"), |c| format!("{:?} (#{i})", c.name())),
                ColumnIndex::Name(n) => format!("{n:?}"),
            },
            expected: std::any::type_name::<T>(),
            source: Box::new(e),
        })
    }

    fn len(&self) -> usize {
        PgRow::len(self)
    }

    fn column_name(&self, idx: usize) -> Option<&str> {
        self.columns().get(idx).map(|c| c.name())
    }
}

/// Maps a client error for `sql` to [`Error::Database`], keeping the SQLSTATE
/// and the server's message, detail and hint.
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
        None => (e.code().map(|c| c.code().to_owned()), e.to_string()),
    };
    Error::Database {
        sql: sql.to_owned(),
        code,
        message,
        source: Box::new(e),
    }
}
