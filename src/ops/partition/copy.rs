//! Cold export of a (detached) partition through the client: `COPY … TO
//! STDOUT (FORMAT csv)` streamed into any [`std::io::Write`], and `COPY …
//! FROM STDIN (FORMAT csv)` from any [`std::io::Read`], with a server-side
//! checksum ([`checksum`]) that proves the round trip.
//!
//! The [`Executor`] trait has no COPY: these functions take a
//! [`CopyClient`], implemented for `tokio_postgres::Client`,
//! `tokio_postgres::Transaction` and (feature `deadpool-postgres`)
//! `deadpool_postgres::Client`.
//!
//! ```no_run
//! # async fn demo(client: tokio_postgres::Client) -> pgpatterns::Result<()> {
//! use pgpatterns::ops::partition::copy::{checksum, export_csv, import_csv};
//! use pgpatterns::table;
//! let old = table!("orders_p2023_01");
//! let mut file = std::io::BufWriter::new(std::fs::File::create("orders_p2023_01.csv").unwrap());
//! let out = export_csv(&client, &old, &mut file).await?;
//! drop(file);
//! // … later, into an empty table with the same columns:
//! let mut input = std::io::BufReader::new(std::fs::File::open("orders_p2023_01.csv").unwrap());
//! let back = import_csv(&client, &table!("orders_restored"), &mut input).await?;
//! assert_eq!(back.rows, out.rows);
//! assert_eq!(checksum(&client, &table!("orders_restored")).await?, (out.rows, out.checksum));
//! # Ok(()) }
//! ```
//!
//! The writes and reads are synchronous calls on the given writer and
//! reader (wrap files in `BufWriter`/`BufReader`); the network side is
//! async. Export and checksum are two statements: export a table nobody
//! writes to (a detached partition), or call them inside one
//! `REPEATABLE READ` transaction.

use std::future::Future;
use std::io::{Cursor, Read, Write};
use std::pin::pin;

use futures_util::{SinkExt, StreamExt};
use tokio_postgres::{CopyInSink, CopyOutStream};

use crate::ddl::quote_table;
use crate::schema::Table;
use crate::{BuiltQuery, Error, Executor, Result, RowRead};

/// A client that can run `COPY … TO STDOUT` and `COPY … FROM STDIN`.
pub trait CopyClient: Send + Sync {
    /// Starts `COPY … TO STDOUT`; the stream yields the data.
    ///
    /// # Errors
    /// [`Error::Database`] from the server or the connection.
    fn copy_out_stream(&self, sql: &str) -> impl Future<Output = Result<CopyOutStream>> + Send;

    /// Starts `COPY … FROM STDIN`; the sink takes the data.
    ///
    /// # Errors
    /// [`Error::Database`] from the server or the connection.
    fn copy_in_sink(
        &self,
        sql: &str,
    ) -> impl Future<Output = Result<CopyInSink<Cursor<Vec<u8>>>>> + Send;
}

fn copy_error(sql: &str, e: tokio_postgres::Error) -> Error {
    let code = e.code().map(|c| c.code().to_owned());
    let message = match e.as_db_error() {
        Some(db) => db.message().to_owned(),
        None => e.to_string(),
    };
    Error::Database {
        sql: sql.to_owned(),
        code,
        message,
        client: Box::new(e),
    }
}

macro_rules! copy_client {
    ($ty:ty) => {
        impl CopyClient for $ty {
            async fn copy_out_stream(&self, sql: &str) -> Result<CopyOutStream> {
                self.copy_out(sql).await.map_err(|e| copy_error(sql, e))
            }
            async fn copy_in_sink(&self, sql: &str) -> Result<CopyInSink<Cursor<Vec<u8>>>> {
                self.copy_in(sql).await.map_err(|e| copy_error(sql, e))
            }
        }
    };
}

copy_client!(tokio_postgres::Client);
copy_client!(tokio_postgres::Transaction<'_>);

#[cfg(feature = "deadpool-postgres")]
impl CopyClient for deadpool_postgres::Client {
    async fn copy_out_stream(&self, sql: &str) -> Result<CopyOutStream> {
        let client: &tokio_postgres::Client = self;
        client.copy_out_stream(sql).await
    }
    async fn copy_in_sink(&self, sql: &str) -> Result<CopyInSink<Cursor<Vec<u8>>>> {
        let client: &tokio_postgres::Client = self;
        client.copy_in_sink(sql).await
    }
}

/// What an export or import did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CopyReport {
    /// Rows exported or imported.
    pub rows: u64,
    /// CSV bytes written or read.
    pub bytes: u64,
    /// The table's [`checksum`] (after the import, for an import).
    pub checksum: String,
}

/// `SELECT count(*), <checksum> FROM table AS t`: the row count and an
/// order-independent checksum of the rows — the sum of the first 64 bits of
/// `md5(t::text)` of every row, as text — computed on the server in one
/// pass, no sort.
#[must_use]
pub fn checksum_statement(table: &Table) -> BuiltQuery {
    BuiltQuery::generated(format!(
        "SELECT count(*)::int8, coalesce(sum(('x' || left(md5(pgp_row::text), 16))::bit(64)::int8::numeric), 0)::text \
         FROM {} AS pgp_row",
        quote_table(table)
    ))
}

/// Runs [`checksum_statement`]: `(rows, checksum)`.
///
/// # Errors
/// The database's error.
pub async fn checksum<E: Executor>(db: &E, table: &Table) -> Result<(u64, String)> {
    let row = db.one_row(&checksum_statement(table)).await?;
    let n: i64 = row.try_get(0usize.into())?;
    Ok((u64::try_from(n).unwrap_or(0), row.try_get(1usize.into())?))
}

/// Streams `table` as CSV (no header) into `out`, and returns the row
/// count and the table's [`checksum`].
///
/// # Errors
/// The database's error; an I/O failure of `out` as
/// [`Error::InvalidSpec`] with field `"writer"`.
pub async fn export_csv<C, W>(client: &C, table: &Table, out: &mut W) -> Result<CopyReport>
where
    C: CopyClient + Executor,
    W: Write + Send,
{
    let sql = format!("COPY {} TO STDOUT (FORMAT csv)", quote_table(table));
    let stream = client.copy_out_stream(&sql).await?;
    let mut stream = pin!(stream);
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| copy_error(&sql, e))?;
        out.write_all(&chunk).map_err(io_error("writer"))?;
        bytes += chunk.len() as u64;
    }
    out.flush().map_err(io_error("writer"))?;
    let (rows, sum) = checksum(client, table).await?;
    Ok(CopyReport {
        rows,
        bytes,
        checksum: sum,
    })
}

/// Loads CSV (no header, the table's column order) from `input` into
/// `table` with `COPY … FROM STDIN`, in 64 KiB chunks, and returns the rows
/// loaded and the table's [`checksum`] afterwards (equal to the export's
/// when `table` was empty).
///
/// # Errors
/// The database's error (a malformed row fails the whole `COPY`: nothing
/// is loaded); I/O failures of `input` as [`Error::InvalidSpec`] with field
/// `"reader"`.
pub async fn import_csv<C, R>(client: &C, table: &Table, input: &mut R) -> Result<CopyReport>
where
    C: CopyClient + Executor,
    R: Read + Send,
{
    let sql = format!("COPY {} FROM STDIN (FORMAT csv)", quote_table(table));
    let sink = client.copy_in_sink(&sql).await?;
    let mut sink = pin!(sink);
    let mut bytes = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = input.read(&mut buf).map_err(io_error("reader"))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        sink.send(Cursor::new(buf[..n].to_vec()))
            .await
            .map_err(|e| copy_error(&sql, e))?;
    }
    let rows = sink
        .as_mut()
        .finish()
        .await
        .map_err(|e| copy_error(&sql, e))?;
    let (_, sum) = checksum(client, table).await?;
    Ok(CopyReport {
        rows,
        bytes,
        checksum: sum,
    })
}

fn io_error(field: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| Error::spec(field, format!("I/O error: {e}"))
}
