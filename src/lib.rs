//! pgpatterns (crate docs are written in a later step)
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]
#![cfg_attr(docsrs, feature(doc_cfg))]

mod error;
mod exec;
mod query;
mod schema;
#[cfg(feature = "testdb")]
#[cfg_attr(docsrs, doc(cfg(feature = "testdb")))]
pub mod testdb;
mod types;

pub use error::{BoxError, Error, Result};
pub use exec::{BlockingExecutor, ColumnIndex, Executor, FromRow, RowRead, Transactional};
pub use query::BuiltQuery;
pub use schema::{AnyColumn, Column, Ident, Relation, Table, MAX_IDENT_BYTES};
pub use types::SqlType;

/// Re-export of the sea-query version pgpatterns builds on, so callers can
/// compose statements without a version mismatch.
pub use sea_query;
