//! Typed result rows of a rollup: values, metrics and each row's level,
//! and rows built by hand for tests.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use rust_decimal::Decimal;
use sea_query::{Value, ValueType};
use uuid::Uuid;

use super::grouping::all_dims;
use super::metric::{Dim, Metric};
use super::Rollup;
use crate::exec::{ColumnIndex, RowRead};
use crate::schema::Ident;
use crate::spec::Problems;
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

    /// `true` for [`Level::Subtotal`].
    pub fn is_subtotal(&self) -> bool {
        matches!(self, Level::Subtotal { .. })
    }

    /// `true` for [`Level::Total`].
    pub fn is_total(&self) -> bool {
        matches!(self, Level::Total)
    }

    /// The level of a row whose `GROUPING()` bitmask is `mask`, over
    /// dimensions named `dims` (spec order).
    pub(crate) fn from_mask(mask: u32, dims: &[Ident]) -> Level {
        let n = dims.len();
        if mask == all_dims(n) {
            Level::Total
        } else if mask == 0 {
            Level::Detail
        } else {
            Level::Subtotal {
                grouped_by: (0..n)
                    .filter(|i| mask & (1 << (n - 1 - i)) == 0)
                    .map(|i| dims[i].clone())
                    .collect(),
            }
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl<T> Sealed for super::Dim<T> {}
    impl<T> Sealed for super::Metric<T> {}
}

/// A column of a rollup row, named by its handle: a [`Dim`] or a
/// [`Metric`] of the report. Sealed: only those two implement it.
pub trait Field<T>: sealed::Sealed {
    /// (handle, is a metric, alias).
    #[doc(hidden)]
    fn slot(&self) -> (u64, bool, &Ident);
}

impl<T> Field<T> for Dim<T> {
    fn slot(&self) -> (u64, bool, &Ident) {
        (self.def.id, false, &self.def.alias)
    }
}

impl<T: SqlType> Field<T> for Metric<T> {
    fn slot(&self) -> (u64, bool, &Ident) {
        (self.def.id, true, &self.def.alias)
    }
}

/// A dimension's value in one row, telling a real NULL from a rolled-up
/// dimension (where the row stands for every value): see
/// [`RollupRow::dim`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DimValue<T> {
    /// The row is grouped by this dimension and its value is not NULL.
    Value(T),
    /// The row is grouped by this dimension and its value is a real NULL
    /// (a group of its own, not a subtotal).
    Null,
    /// The dimension is rolled up: the row is a subtotal or total over
    /// all of its values. Printed `(all)` by [`RollupTable`](crate::RollupTable).
    All,
}

impl<T> DimValue<T> {
    /// The value; `None` for [`Null`](Self::Null) and [`All`](Self::All).
    pub fn value(self) -> Option<T> {
        match self {
            DimValue::Value(v) => Some(v),
            DimValue::Null | DimValue::All => None,
        }
    }

    /// A `DimValue` of a reference to the value.
    pub fn as_ref(&self) -> DimValue<&T> {
        match self {
            DimValue::Value(v) => DimValue::Value(v),
            DimValue::Null => DimValue::Null,
            DimValue::All => DimValue::All,
        }
    }

    /// `true` for [`All`](Self::All): the dimension is rolled up.
    pub fn is_all(&self) -> bool {
        matches!(self, DimValue::All)
    }

    /// `true` for [`Null`](Self::Null): a real NULL value.
    pub fn is_null(&self) -> bool {
        matches!(self, DimValue::Null)
    }
}

/// One row of a rollup, decoded: dimension values (`None` when NULL — a
/// real NULL or a rolled-up dimension, which [`RollupRow::dim`] and
/// [`RollupRow::level`] tell apart), metric values, and the level.
///
/// Values are read with the report's handles ([`get`](Self::get),
/// [`dim`](Self::dim)). The handle fixes the Rust type and the row was
/// decoded with the same handle's type, so decoding cannot fail. The one
/// mistake left — a handle that is not a column of the report the row
/// comes from — panics in `get`/`dim`/[`is_rolled_up`](Self::is_rolled_up)
/// (like `tokio_postgres::Row::get` with a wrong column) and is an
/// [`Error::InvalidSpec`] (field `"handle"`) from
/// [`try_get`](Self::try_get)/[`try_dim`](Self::try_dim): never another
/// column's value. A handle used in several reports reads its column in
/// the rows of each. Rows compare equal (`PartialEq`) when they have the
/// same columns — the same handles, in the same order — and values, so
/// equal-looking rows of reports made of different handles differ.
///
/// `Display` prints the row on one line for logs
/// (`merchant: Costco, device: (all), total: 6`); [`RollupTable`](crate::RollupTable) prints
/// many as a table.
#[derive(Debug, Clone, PartialEq)]
pub struct RollupRow {
    /// The handles of the columns: dimensions, then metrics.
    pub(crate) ids: Arc<[u64]>,
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

    /// `true` for a detail row (grouped by every dimension).
    pub fn is_detail(&self) -> bool {
        self.level.is_detail()
    }

    /// `true` for a subtotal row (some dimensions rolled up, not all).
    pub fn is_subtotal(&self) -> bool {
        self.level.is_subtotal()
    }

    /// `true` for the grand total row (every dimension rolled up).
    pub fn is_total(&self) -> bool {
        self.level.is_total()
    }

    /// The raw `GROUPING(dims…)` bitmask: bit `n-1-i` is set when dimension
    /// `i` (in spec order) is rolled up.
    pub fn grouping_mask(&self) -> u32 {
        self.mask
    }

    pub(crate) fn rolled_up_at(&self, index: usize) -> bool {
        let n = self.dims.len();
        index < n && self.mask & (1 << (n - 1 - index)) != 0
    }

    /// `true` when `dim` is rolled up in this row (its NULL means "all").
    ///
    /// # Panics
    /// When `dim` is not a dimension of the report this row comes from
    /// ([`try_dim`](Self::try_dim)
    /// returns an error instead).
    pub fn is_rolled_up<T>(&self, dim: &Dim<T>) -> bool {
        match self.locate(dim) {
            Ok((i, _)) => self.rolled_up_at(i),
            Err(e) => panic!("{e}"),
        }
    }

    /// The column `field` names: its index among the dimensions or the
    /// metrics, and its value.
    fn locate<T>(&self, field: &impl Field<T>) -> Result<(usize, &Value)> {
        let (id, metric, alias) = field.slot();
        let n = self.dims.len();
        let (range, values) = if metric {
            (n..self.ids.len(), &self.metrics)
        } else {
            (0..n, &self.dims)
        };
        self.ids[range.clone()]
            .iter()
            .position(|&h| h == id)
            .and_then(|i| values.get(i).map(|v| (i, v)))
            .ok_or_else(|| {
                Error::spec(
                    "handle",
                    format!(
                        "{alias:?} is not a {} of the report this row comes from",
                        if metric { "metric" } else { "dimension" }
                    ),
                )
            })
    }

    /// The column `field` names, checked: same spec, name and type.
    fn slot_of<T: SqlType>(&self, field: &impl Field<T>) -> Result<(usize, &Value)> {
        let (i, v) = self.locate(field)?;
        if std::mem::discriminant(v) != std::mem::discriminant(&T::null_value()) {
            return Err(Error::spec(
                "handle",
                format!(
                    "column {:?} of this row is not {}",
                    field.slot().2,
                    T::SQL_TYPE
                ),
            ));
        }
        Ok((i, v))
    }

    /// A dimension's or metric's value; `None` for NULL.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] (field `"handle"`) when the handle is not a
    /// column of the report this row comes from.
    pub fn try_get<T: SqlType + ValueType>(&self, field: &impl Field<T>) -> Result<Option<T>> {
        let (_, v) = self.slot_of(field)?;
        if *v == T::null_value() {
            return Ok(None);
        }
        // The variant was checked: the conversion cannot fail.
        T::try_from(v.clone()).map(Some).map_err(|_| {
            Error::spec(
                "handle",
                format!("the value is not a {}", std::any::type_name::<T>()),
            )
        })
    }

    /// A dimension's or metric's value; `None` for NULL: a real NULL or a
    /// rolled-up dimension ([`dim`](Self::dim) tells them apart), or a
    /// `SUM`, `AVG`, `MIN`, `MAX` over no rows (with a `FILTER`). `COUNT`
    /// metrics are never NULL (`0` over no rows).
    ///
    /// # Panics
    /// When the handle is not a column of the report this row comes from
    /// (like `tokio_postgres::Row::get` with a wrong column);
    /// [`try_get`](Self::try_get) returns an error instead.
    pub fn get<T: SqlType + ValueType>(&self, field: &impl Field<T>) -> Option<T> {
        match self.try_get(field) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    /// A dimension's value, or whether it is a real NULL or rolled up.
    ///
    /// # Errors
    /// As [`try_get`](Self::try_get).
    pub fn try_dim<T: SqlType + ValueType>(&self, dim: &Dim<T>) -> Result<DimValue<T>> {
        let (i, _) = self.slot_of(dim)?;
        if self.rolled_up_at(i) {
            return Ok(DimValue::All);
        }
        Ok(match self.try_get(dim)? {
            Some(v) => DimValue::Value(v),
            None => DimValue::Null,
        })
    }

    /// A dimension's value, or whether it is a real NULL or rolled up:
    ///
    /// ```
    /// use pgpatterns::{Dim, DimValue, Rollup, Table};
    /// let sale = Table::new("sale")?;
    /// let device = Dim::new(&sale.column::<String>("device")?);
    /// let report = Rollup::new(&sale).dimension(&device).with_total();
    /// // Rows as `report.fetch_all(&client).await?` returns them:
    /// let null_device = report.row_builder().set_null(&device).build()?;
    /// let total = report.row_builder().roll_up(&device).build()?;
    /// assert_eq!(null_device.dim(&device), DimValue::Null);
    /// assert_eq!(total.dim(&device), DimValue::All);
    /// assert_eq!(null_device.get(&device), total.get(&device)); // both None
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    ///
    /// # Panics
    /// When the handle is not a dimension of the report this row comes
    /// from; [`try_dim`](Self::try_dim)
    /// returns an error instead.
    pub fn dim<T: SqlType + ValueType>(&self, dim: &Dim<T>) -> DimValue<T> {
        match self.try_dim(dim) {
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

/// Builds a [`RollupRow`] of a report by hand, without a database: to test
/// code that reads or prints reports. Made by [`Rollup::row_builder`];
/// columns not set are NULL. Like the specs, its steps never fail and
/// [`build`](Self::build) reports the first problem.
#[derive(Debug, Clone)]
#[must_use = "a row builder does nothing until it is built"]
pub struct RollupRowBuilder<'a> {
    spec: &'a Rollup,
    dims: Vec<Value>,
    metrics: Vec<Value>,
    /// Bit `i`: dimension `i` is rolled up.
    rolled_up: u32,
    problems: Problems,
}

impl Rollup {
    /// A row of this report built by hand (for tests, see
    /// [`RollupRowBuilder`]); [`fetch_all`](Self::fetch_all) returns the
    /// real ones.
    ///
    /// ```
    /// use pgpatterns::{column, table, Agg, Dim, Level, Metric, Rollup};
    /// let sale = table!("sale");
    /// let merchant = Dim::new(&column!(sale, "merchant": String));
    /// let total = Metric::new("total", Agg::count_all());
    /// let report = Rollup::new(&sale).dimension(&merchant).metric(&total).with_total();
    /// let row = report.row_builder().roll_up(&merchant).set(&total, 13).build()?;
    /// assert_eq!(row.level(), &Level::Total);
    /// assert_eq!(row.get(&total), Some(13));
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    pub fn row_builder(&self) -> RollupRowBuilder<'_> {
        RollupRowBuilder {
            spec: self,
            dims: self.dims.iter().map(|d| null_of(d.sql_type)).collect(),
            metrics: self.metrics.iter().map(|m| null_of(m.sql_type)).collect(),
            rolled_up: 0,
            problems: Problems::default(),
        }
    }
}

impl RollupRowBuilder<'_> {
    fn put<T: SqlType>(mut self, field: &impl Field<T>, v: Value) -> Self {
        let (id, metric, alias) = field.slot();
        let found = if metric {
            self.spec.metrics.iter().position(|m| m.id == id)
        } else {
            self.spec.dims.iter().position(|d| d.id == id)
        };
        match found {
            Some(i) => {
                if metric {
                    self.metrics[i] = v;
                } else {
                    self.dims[i] = v;
                    self.rolled_up &= !(1 << i);
                }
            }
            None => {
                self.problems.note::<()>(Err(Error::spec(
                    "handle",
                    format!(
                        "{alias:?} is not a {} of this report",
                        if metric { "metric" } else { "dimension" }
                    ),
                )));
            }
        }
        self
    }

    /// Sets a dimension's or metric's value (a dimension is then grouped).
    /// A handle of another report makes [`build`](Self::build) fail.
    pub fn set<T: SqlType>(self, field: &impl Field<T>, value: impl Into<T>) -> Self {
        self.put(field, value.into().into_value())
    }

    /// Sets a dimension's or metric's value to NULL (a dimension is then
    /// grouped: a real NULL value).
    pub fn set_null<T: SqlType>(self, field: &impl Field<T>) -> Self {
        self.put(field, T::null_value())
    }

    /// Rolls a dimension up (its value is NULL, meaning "all").
    pub fn roll_up<T: SqlType>(self, dim: &Dim<T>) -> Self {
        let mut b = self.put(dim, T::null_value());
        if let Some(i) = b.spec.dims.iter().position(|d| d.id == dim.def.id) {
            b.rolled_up |= 1 << i;
        }
        b
    }

    /// The row.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`]: the report's own problem
    /// ([`Rollup::check`]), a handle of another report (field
    /// `"handle"`), or (field `"row_builder"`) when the report computes no
    /// grouping set with exactly these dimensions rolled up.
    pub fn build(&self) -> Result<RollupRow> {
        self.spec.check()?;
        self.problems.check()?;
        let n = self.dims.len();
        let grouped = all_dims(n) & !self.rolled_up;
        if n > 0 && !self.spec.sets().contains(&grouped) {
            let names: Vec<&str> = (0..n)
                .filter(|i| grouped & (1 << i) != 0)
                .map(|i| self.spec.dims[i].alias.as_str())
                .collect();
            return Err(Error::spec(
                "row_builder",
                format!("the report computes no grouping set ({})", names.join(", ")),
            ));
        }
        let mask = (0..n)
            .filter(|i| self.rolled_up & (1 << i) != 0)
            .fold(0, |acc, i| acc | (1 << (n - 1 - i)));
        let aliases: Vec<Ident> = self.spec.dims.iter().map(|d| d.alias.clone()).collect();
        Ok(RollupRow {
            ids: self.spec.ids(),
            names: self.spec.names(),
            dims: self.dims.clone(),
            metrics: self.metrics.clone(),
            mask,
            level: Level::from_mask(mask, &aliases),
        })
    }
}

/// A NULL of the Rust type of `sql_type` (one of [`SqlType`]'s types).
fn null_of(sql_type: &str) -> Value {
    match sql_type {
        "bool" => bool::null_value(),
        "int2" => i16::null_value(),
        "int4" => i32::null_value(),
        "int8" => i64::null_value(),
        "float4" => f32::null_value(),
        "float8" => f64::null_value(),
        "numeric" => Decimal::null_value(),
        "timestamptz" => DateTime::<Utc>::null_value(),
        "timestamp" => NaiveDateTime::null_value(),
        "date" => NaiveDate::null_value(),
        "time" => NaiveTime::null_value(),
        "uuid" => Uuid::null_value(),
        "bytea" => Vec::<u8>::null_value(),
        _ => String::null_value(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Agg, Table};

    struct Spec {
        r: Rollup,
        k: Dim<String>,
        n: Metric<i64>,
    }

    fn spec() -> Spec {
        let t = Table::new("t").unwrap();
        let k = Dim::new(&t.column::<String>("k").unwrap());
        let n = Metric::new("n", Agg::count_all());
        let r = Rollup::new(&t).dimension(&k).metric(&n).with_total();
        Spec { r, k, n }
    }

    fn handle_error(e: Error) -> String {
        match e {
            Error::InvalidSpec { field, reason } => {
                assert_eq!(field, "handle");
                reason
            }
            other => panic!("{other:?}"),
        }
    }

    /// Every read panics (never another column's value).
    fn reads_panic(reads: [&dyn Fn(); 4]) {
        for read in reads {
            let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read));
            assert!(panic.is_err());
        }
    }

    #[test]
    fn handles_not_in_the_report_are_errors_never_values() {
        let a = spec();
        let b = spec();
        let row = a.r.row_builder().set(&a.k, "x").build().unwrap();
        assert_eq!(row.get(&a.k).as_deref(), Some("x"));
        assert_eq!(row.try_dim(&a.k).unwrap(), DimValue::Value("x".into()));
        // Same names, types and positions, but handles not added to `a`.
        let reason = handle_error(row.try_get(&b.k).unwrap_err());
        assert_eq!(
            reason,
            "\"k\" is not a dimension of the report this row comes from"
        );
        let reason = handle_error(row.try_get(&b.n).unwrap_err());
        assert_eq!(
            reason,
            "\"n\" is not a metric of the report this row comes from"
        );
        handle_error(row.try_dim(&b.k).unwrap_err());
        let reason = handle_error(b.r.row_builder().set(&a.k, "x").build().unwrap_err());
        assert!(
            reason.contains("is not a dimension of this report"),
            "{reason}"
        );
        handle_error(b.r.row_builder().roll_up(&a.k).build().unwrap_err());
        handle_error(b.r.row_builder().set_null(&a.n).build().unwrap_err());
        reads_panic([
            &|| {
                let _ = row.get(&b.k);
            },
            &|| {
                let _ = row.get(&b.n);
            },
            &|| {
                let _ = row.dim(&b.k);
            },
            &|| {
                let _ = row.is_rolled_up(&b.k);
            },
        ]);
    }

    #[test]
    fn a_dimension_handle_is_not_a_metric_handle() {
        // A dimension and a metric of one report under different names:
        // each is found only among its own kind.
        let t = Table::new("t").unwrap();
        let k = Dim::new(&t.column::<i64>("k").unwrap());
        let n = Metric::new("n", Agg::count_all());
        let only_dim = Rollup::new(&t).dimension(&k);
        let row = only_dim.row_builder().set(&k, 3).build().unwrap();
        assert_eq!(row.get(&k), Some(3));
        let reason = handle_error(row.try_get(&n).unwrap_err());
        assert!(reason.contains("not a metric"), "{reason}");
    }

    #[test]
    fn a_handle_reads_its_column_in_every_report_it_is_added_to() {
        let t = Table::new("t").unwrap();
        let k = Dim::new(&t.column::<String>("k").unwrap());
        let y = Dim::new(&t.column::<i32>("y").unwrap());
        let n = Metric::new("n", Agg::count_all());
        let s = Metric::new("s", Agg::sum(&t.column::<i32>("v").unwrap()));
        // The same handles at other positions in two reports.
        let one = Rollup::new(&t)
            .dimension(&k)
            .dimension(&y)
            .metric(&n)
            .metric(&s)
            .rollup((&k, &y));
        let two = Rollup::new(&t).metric(&s).metric(&n).rollup((&y, &k));
        let r1 = one
            .row_builder()
            .set(&k, "a")
            .roll_up(&y)
            .set(&n, 3)
            .set(&s, 30)
            .build()
            .unwrap();
        let r2 = two
            .row_builder()
            .set(&y, 2024)
            .set(&k, "b")
            .set(&n, 4)
            .set(&s, 40)
            .build()
            .unwrap();
        assert_eq!(r1.names()[0].as_str(), "k");
        assert_eq!(r2.names()[0].as_str(), "y");
        assert_eq!(r1.get(&k).as_deref(), Some("a"));
        assert_eq!(r2.get(&k).as_deref(), Some("b"));
        assert_eq!(r1.dim(&y), DimValue::All);
        assert_eq!(r2.dim(&y), DimValue::Value(2024));
        assert_eq!((r1.get(&n), r1.get(&s)), (Some(3), Some(30)));
        assert_eq!((r2.get(&n), r2.get(&s)), (Some(4), Some(40)));
        assert!(r1.is_subtotal() && r2.is_detail());
        // Another handle under the same name is still another column.
        let k2 = Dim::new(&t.column::<String>("k").unwrap());
        handle_error(r1.try_get(&k2).unwrap_err());
        handle_error(r2.try_dim(&k2).unwrap_err());
    }

    #[test]
    fn clones_share_handles_and_what_is_added_later_stays_its_own() {
        let a = spec();
        let b = a.r.clone();
        let row_b = b.row_builder().roll_up(&a.k).build().unwrap();
        assert!(row_b.is_rolled_up(&a.k));
        assert_eq!(row_b.dim(&a.k), DimValue::All);
        // Grown apart: a handle added to one is not read from the other's
        // rows, even under the same name at the same position.
        let t = Table::new("t").unwrap();
        let x = Dim::new(&t.column::<String>("x").unwrap());
        let y = Dim::new(&t.column::<i32>("x").unwrap());
        let m = Metric::new("m", Agg::count_all());
        let ra = a.r.dimension(&x);
        let rb = b.dimension(&y).metric(&m);
        let row_a = ra.row_builder().set(&x, "v").build().unwrap();
        assert_eq!(row_a.get(&x).as_deref(), Some("v"));
        let reason = handle_error(row_a.try_get(&y).unwrap_err());
        assert_eq!(
            reason,
            "\"x\" is not a dimension of the report this row comes from"
        );
        handle_error(row_a.try_get(&m).unwrap_err());
        let row_rb = rb.row_builder().set(&y, 7).set(&m, 1).build().unwrap();
        assert_eq!((row_rb.get(&y), row_rb.get(&m)), (Some(7), Some(1)));
        handle_error(row_rb.try_dim(&x).unwrap_err());
        // A row built before the handles were added: they are not its
        // columns.
        handle_error(row_b.try_get(&y).unwrap_err());
        let reason = handle_error(row_b.try_dim(&x).unwrap_err());
        assert!(reason.contains("is not a dimension"), "{reason}");
        reads_panic([
            &|| {
                let _ = row_b.get(&y);
            },
            &|| {
                let _ = row_b.get(&m);
            },
            &|| {
                let _ = row_a.dim(&y);
            },
            &|| {
                let _ = row_a.is_rolled_up(&y);
            },
        ]);
    }

    #[test]
    fn dim_values_and_levels() {
        let s = spec();
        let null = s.r.row_builder().set_null(&s.k).build().unwrap();
        let total = s.r.row_builder().roll_up(&s.k).build().unwrap();
        assert_eq!(null.dim(&s.k), DimValue::Null);
        assert!(null.dim(&s.k).is_null() && !null.is_rolled_up(&s.k));
        assert_eq!(total.dim(&s.k), DimValue::All);
        assert!(total.is_total() && !total.is_subtotal() && !total.is_detail());
        assert_eq!(total.get(&s.k), None);
        assert_eq!(total.get(&s.n), None); // not set: NULL
        assert_eq!(DimValue::Value(3).as_ref().value(), Some(&3));
        assert_eq!(DimValue::<i32>::All.value(), None);
        // Set after rolling up: grouped again.
        let b = s.r.row_builder().roll_up(&s.k).set(&s.k, "y");
        assert!(b.build().unwrap().is_detail());
    }

    #[test]
    fn built_rows_must_belong_to_a_computed_grouping_set() {
        let t = Table::new("t").unwrap();
        let a = Dim::new(&t.column::<String>("a").unwrap());
        let b = Dim::new(&t.column::<String>("b").unwrap());
        let r = Rollup::new(&t).rollup((&a, &b));
        let sub = r.row_builder().roll_up(&b).build().unwrap();
        assert_eq!(
            sub.level(),
            &Level::Subtotal {
                grouped_by: vec![a.alias().clone()]
            }
        );
        assert_eq!(sub.grouping_mask(), 0b01);
        let e = r.row_builder().roll_up(&a).build().unwrap_err();
        assert!(e.to_string().contains("no grouping set (b)"), "{e}");
    }

    #[test]
    fn a_report_that_refuses_to_build_builds_no_rows() {
        let s = spec();
        let r = s.r.limit_per_level(0);
        let e = r.row_builder().set(&s.k, "x").build().unwrap_err();
        assert!(
            matches!(
                &e,
                Error::InvalidSpec {
                    field: "limit_per_level",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
