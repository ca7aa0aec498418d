//! Typed result rows of a rollup: values, metrics and each row's level.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use rust_decimal::Decimal;
use sea_query::{Value, ValueType};
use uuid::Uuid;

use super::metric::{Dim, Metric};
use crate::exec::{ColumnIndex, RowRead};
use crate::schema::Ident;
use crate::types::SqlType;
use crate::{Error, Result};

/// Where a row sits in the report, from `GROUPING(dims…)` — never guessed
/// from NULLs, so a real NULL dimension value stays a detail row.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Level {
    /// Grouped by every dimension.
    Detail,
    /// Grouped by some dimensions (named, in spec order); the others are
    /// rolled up (their value is NULL in this row).
    Subtotal {
        /// The dimensions this row is grouped by.
        grouped_by: Vec<Ident>,
    },
    /// Every dimension rolled up: the grand total.
    Total,
}

impl Level {
    /// `true` for [`Level::Detail`].
    pub fn is_detail(&self) -> bool {
        matches!(self, Level::Detail)
    }

    /// `true` for [`Level::Total`].
    pub fn is_total(&self) -> bool {
        matches!(self, Level::Total)
    }
}

/// A column of a rollup row: a [`Dim`] or a [`Metric`].
pub trait Field<T> {
    /// `true` for a metric, `false` for a dimension.
    #[doc(hidden)]
    fn slot(&self) -> (u64, bool, usize);
}

impl<T> Field<T> for Dim<T> {
    fn slot(&self) -> (u64, bool, usize) {
        (self.id.spec, false, self.id.index)
    }
}

impl<T: SqlType> Field<T> for Metric<T> {
    fn slot(&self) -> (u64, bool, usize) {
        (self.spec, true, self.index)
    }
}

/// One row of a rollup, decoded: dimension values (`None` when NULL — a
/// real NULL or a rolled-up dimension, which [`RollupRow::level`] tells
/// apart), metric values, and the level.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupRow {
    pub(crate) spec: u64,
    pub(crate) names: Arc<[Ident]>,
    pub(crate) dims: Vec<Value>,
    pub(crate) metrics: Vec<Value>,
    pub(crate) mask: u32,
    pub(crate) level: Level,
}

impl RollupRow {
    /// The row's level.
    pub fn level(&self) -> &Level {
        &self.level
    }

    /// The raw `GROUPING(dims…)` bitmask: bit `n-1-i` is set when dimension
    /// `i` (in spec order) is rolled up.
    pub fn grouping_mask(&self) -> u32 {
        self.mask
    }

    /// `true` when `dim` is rolled up in this row (its NULL means "all").
    pub fn is_rolled_up<T>(&self, dim: &Dim<T>) -> bool {
        let n = self.dims.len();
        dim.id.index < n && self.mask & (1 << (n - 1 - dim.id.index)) != 0
    }

    /// A dimension's or metric's value; `None` for NULL.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] when the handle belongs to another spec.
    pub fn try_get<T: SqlType + ValueType>(&self, field: &impl Field<T>) -> Result<Option<T>> {
        let (spec, metric, i) = field.slot();
        let values = if metric { &self.metrics } else { &self.dims };
        let v = match values.get(i) {
            Some(v) if spec == self.spec => v,
            _ => {
                return Err(Error::spec(
                    "field",
                    "this handle belongs to another rollup spec",
                ))
            }
        };
        if *v == T::null_value() {
            return Ok(None);
        }
        T::try_from(v.clone()).map(Some).map_err(|_| {
            Error::spec(
                "field",
                format!("the value is not a {}", std::any::type_name::<T>()),
            )
        })
    }

    /// A dimension's or metric's value; `None` for NULL (`COUNT` metrics
    /// are never NULL; `SUM`, `AVG`, `MIN`, `MAX` are over no rows).
    ///
    /// # Panics
    /// When the handle belongs to another spec (like `tokio_postgres::Row::get`);
    /// [`try_get`](Self::try_get) returns an error instead.
    pub fn get<T: SqlType + ValueType>(&self, field: &impl Field<T>) -> Option<T> {
        match self.try_get(field) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    /// The dimension values, in spec order (for generic display).
    pub fn dimension_values(&self) -> &[Value] {
        &self.dims
    }

    /// The metric values, in spec order.
    pub fn metric_values(&self) -> &[Value] {
        &self.metrics
    }

    /// The output column names: dimensions then metrics.
    pub fn names(&self) -> &[Ident] {
        &self.names
    }
}

/// A report split by level: detail rows, subtotal rows and the total, each
/// in the order the query returned them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Split {
    /// [`Level::Detail`] rows.
    pub detail: Vec<RollupRow>,
    /// [`Level::Subtotal`] rows.
    pub subtotals: Vec<RollupRow>,
    /// The [`Level::Total`] row, when the grouping has one. A spec never
    /// yields two (duplicate grouping sets are refused).
    pub total: Option<RollupRow>,
}

impl Split {
    /// Splits rows by level.
    pub fn new(rows: impl IntoIterator<Item = RollupRow>) -> Split {
        let mut s = Split::default();
        for r in rows {
            match r.level {
                Level::Detail => s.detail.push(r),
                Level::Subtotal { .. } => s.subtotals.push(r),
                Level::Total => s.total = Some(r),
            }
        }
        s
    }
}

/// Reads column `i` as the Rust type of `sql_type` (one of [`SqlType`]'s
/// types), into a [`Value`].
pub(crate) fn decode_value<R: RowRead>(row: &R, i: usize, sql_type: &str) -> Result<Value> {
    macro_rules! get {
        ($t:ty) => {
            row.try_get::<Option<$t>>(ColumnIndex::Position(i))?
                .map_or_else(<$t as SqlType>::null_value, SqlType::into_value)
        };
    }
    Ok(match sql_type {
        "bool" => get!(bool),
        "int2" => get!(i16),
        "int4" => get!(i32),
        "int8" => get!(i64),
        "float4" => get!(f32),
        "float8" => get!(f64),
        "text" => get!(String),
        "numeric" => get!(Decimal),
        "timestamptz" => get!(DateTime<Utc>),
        "timestamp" => get!(NaiveDateTime),
        "date" => get!(NaiveDate),
        "time" => get!(NaiveTime),
        "uuid" => get!(Uuid),
        "bytea" => get!(Vec<u8>),
        other => {
            return Err(Error::spec(
                "column",
                format!("rollup rows cannot decode the SQL type {other}"),
            ))
        }
    })
}
