//! Shared by the client implementations: `Row` decoding and error mapping.
//! `postgres::Row`/`postgres::Error` are re-exports of the tokio-postgres types.

use postgres_types::FromSqlOwned;

#[cfg(not(feature = "tokio-postgres"))]
use postgres::{Error as PgError, Row as PgRow};
#[cfg(feature = "tokio-postgres")]
use tokio_postgres::{Error as PgError, Row as PgRow};

use super::common::{chain_text, decode_error, locate, server_message};
use super::{ColumnIndex, RowRead};
use crate::{Error, Result};

impl RowRead for PgRow {
    fn try_get<T: FromSqlOwned>(&self, idx: ColumnIndex<'_>) -> Result<T> {
        let columns = self.columns();
        let (i, column) = locate(idx, columns.len(), |i| columns[i].name())
            .map_err(|(column, why)| decode_error::<T>(column, why))?;
        PgRow::try_get::<_, T>(self, i).map_err(|e| decode_error::<T>(column, Box::new(e)))
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
        Some(db) => (
            Some(db.code().code().to_owned()),
            server_message(db.message(), db.detail(), db.hint()),
        ),
        None => (e.code().map(|c| c.code().to_owned()), chain_text(&e)),
    };
    Error::Database {
        sql: sql.to_owned(),
        code,
        message,
        client: Box::new(e),
    }
}
