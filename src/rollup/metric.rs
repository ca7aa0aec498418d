//! Typed inputs of a rollup: expressions, aggregates and the handles that
//! name a spec's dimensions and metrics.

use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use rust_decimal::Decimal;
use sea_query::{Expr, ExprTrait, Func, FunctionCall};
use uuid::Uuid;

use crate::schema::{AnyColumn, Column, Ident};
use crate::spec::Problems;
use crate::types::SqlType;
use crate::{Error, Result};

/// An SQL expression whose values are the Rust type `T`: a typed column, or
/// an expression you build and vouch for (`date_trunc(…)`, a `CASE`, …).
///
/// ```
/// use pgpatterns::{Table, TypedExpr};
/// use pgpatterns::sea_query::{Expr, ExprTrait};
/// let sale = Table::new("sale")?;
/// let amount = sale.column::<i32>("charged_amount")?;
/// let from_column: TypedExpr<i32> = (&amount).into();
/// let doubled = TypedExpr::<i32>::new(amount.expr().mul(Expr::val(2)));
/// # Ok::<(), pgpatterns::Error>(())
/// ```
pub struct TypedExpr<T> {
    pub(crate) expr: Expr,
    pub(crate) column: Option<AnyColumn>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for TypedExpr<T> {
    fn clone(&self) -> Self {
        TypedExpr {
            expr: self.expr.clone(),
            column: self.column.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: SqlType> fmt::Debug for TypedExpr<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.column {
            Some(c) => write!(f, "TypedExpr({c:?})"),
            None => write!(f, "TypedExpr(<expression>: {})", T::SQL_TYPE),
        }
    }
}

impl<T: SqlType> TypedExpr<T> {
    /// An expression whose values are `T` (you vouch for the type: a wrong
    /// one fails when the rows are decoded, with [`Error::Decode`]).
    #[must_use]
    pub fn new(expr: impl Into<Expr>) -> TypedExpr<T> {
        TypedExpr {
            expr: expr.into(),
            column: None,
            _type: PhantomData,
        }
    }

    /// A type-erased column, checked against `T`.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] when the column's SQL type is not `T`'s.
    pub fn from_any(col: &AnyColumn) -> Result<TypedExpr<T>> {
        if col.sql_type() != T::SQL_TYPE {
            return Err(Error::spec(
                "column",
                format!(
                    "column {} is {}, not {}",
                    col.name(),
                    col.sql_type(),
                    T::SQL_TYPE
                ),
            ));
        }
        Ok(TypedExpr {
            expr: col.expr(),
            column: Some(col.clone()),
            _type: PhantomData,
        })
    }

    /// The SQL expression.
    #[must_use]
    pub fn expr(&self) -> Expr {
        self.expr.clone()
    }
}

impl<T: SqlType> From<&Column<T>> for TypedExpr<T> {
    fn from(c: &Column<T>) -> Self {
        TypedExpr {
            expr: c.expr(),
            column: Some(c.erase()),
            _type: PhantomData,
        }
    }
}

impl<T: SqlType> From<Column<T>> for TypedExpr<T> {
    fn from(c: Column<T>) -> Self {
        (&c).into()
    }
}

/// A numeric type that `SUM` and `AVG` accept, with the types PostgreSQL
/// returns for them (`SUM(int4)` is `int8`, `SUM(int8)` and `AVG(int4)` are
/// `numeric`, …), so a metric decodes to exactly what the server sends.
pub trait Summable: SqlType {
    /// What `SUM` of this type returns.
    type Sum: SqlType;
    /// What `AVG` of this type returns.
    type Avg: SqlType;
}

macro_rules! summable {
    ($t:ty, $sum:ty, $avg:ty) => {
        impl Summable for $t {
            type Sum = $sum;
            type Avg = $avg;
        }
    };
}
summable!(i16, i64, Decimal);
summable!(i32, i64, Decimal);
summable!(i64, Decimal, Decimal);
summable!(Decimal, Decimal, Decimal);
summable!(f32, f32, f64);
summable!(f64, f64, f64);

/// PostgreSQL's result type of `SUM` over `sql_type`, for the types
/// [`SqlType`] knows; `None` for non-numeric types.
pub(crate) fn sum_type(sql_type: &str) -> Option<&'static str> {
    Some(match sql_type {
        "int2" | "int4" => "int8",
        "int8" | "numeric" => "numeric",
        "float4" => "float4",
        "float8" => "float8",
        _ => return None,
    })
}

/// PostgreSQL's result type of `AVG` over `sql_type`.
pub(crate) fn avg_type(sql_type: &str) -> Option<&'static str> {
    Some(match sql_type {
        "int2" | "int4" | "int8" | "numeric" => "numeric",
        "float4" | "float8" => "float8",
        _ => return None,
    })
}

/// A type `MIN`/`MAX` accept (ordered types; not `bool`, `bytea`…).
pub trait Ordered: SqlType {}
macro_rules! ordered { ($($t:ty),+) => { $(impl Ordered for $t {})+ }; }
ordered!(
    i16,
    i32,
    i64,
    f32,
    f64,
    Decimal,
    String,
    DateTime<Utc>,
    NaiveDateTime,
    NaiveDate,
    NaiveTime,
    Uuid
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AggKind {
    CountAll,
    Count,
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
}

/// An aggregate whose result decodes as `T`, optionally with a
/// `FILTER (WHERE …)`: the recipe of a metric, added to a spec with
/// [`Rollup::metric`](crate::Rollup::metric).
///
/// Compile-time typed constructors take a [`TypedExpr`] (or `&Column<T>`):
/// `Agg::sum(&int4_col)` is an `Agg<i64>`, `Agg::avg(&int4_col)` an
/// `Agg<Decimal>`, `Agg::sum(&text_col)` does not compile. For columns whose
/// type is only known at run time, [`Agg::sum_any`] and [`Agg::avg_any`]
/// check it and return an [`Error`].
///
/// ```
/// use pgpatterns::{Agg, Table};
/// use rust_decimal::Decimal;
/// let sale = Table::new("sale")?;
/// let amount = sale.column::<i32>("charged_amount")?;
/// let big: Agg<i64> = Agg::count_all().filter(amount.gt(100));
/// let avg: Agg<Decimal> = Agg::avg(&amount);
/// let erased = Agg::<Decimal>::avg_any(&amount.erase())?;
/// assert!(Agg::<i64>::sum_any(&sale.column::<String>("merchant")?.erase()).is_err());
/// # Ok::<(), pgpatterns::Error>(())
/// ```
pub struct Agg<T> {
    pub(crate) kind: AggKind,
    pub(crate) arg: Option<TypedArg>,
    pub(crate) filter: Option<Expr>,
    _type: PhantomData<fn() -> T>,
}

/// An aggregate's argument, type erased.
#[derive(Debug, Clone)]
pub(crate) struct TypedArg {
    pub(crate) expr: Expr,
    pub(crate) column: Option<AnyColumn>,
}

impl<T> Clone for Agg<T> {
    fn clone(&self) -> Self {
        Agg {
            kind: self.kind,
            arg: self.arg.clone(),
            filter: self.filter.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: SqlType> fmt::Debug for Agg<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Agg")
            .field("kind", &self.kind)
            .field("arg", &self.arg.as_ref().and_then(|a| a.column.as_ref()))
            .field("filtered", &self.filter.is_some())
            .field("output", &T::SQL_TYPE)
            .finish()
    }
}

fn arg<A>(e: TypedExpr<A>) -> Option<TypedArg> {
    Some(TypedArg {
        expr: e.expr,
        column: e.column,
    })
}

impl<T> Agg<T> {
    fn make(kind: AggKind, arg: Option<TypedArg>) -> Agg<T> {
        Agg {
            kind,
            arg,
            filter: None,
            _type: PhantomData,
        }
    }

    /// Only rows matching `condition` are aggregated:
    /// `AGG(…) FILTER (WHERE condition)`. Calling it again replaces the
    /// condition.
    #[must_use]
    pub fn filter(mut self, condition: Expr) -> Agg<T> {
        self.filter = Some(condition);
        self
    }

    /// The aggregate call as SQL.
    pub(crate) fn to_expr(&self) -> Expr {
        let a = || {
            self.arg
                .as_ref()
                .map_or_else(|| Expr::cust("*"), |a| a.expr.clone())
        };
        let call: FunctionCall = match self.kind {
            AggKind::CountAll => Func::count(Expr::cust("*")),
            AggKind::Count => Func::count(a()),
            AggKind::CountDistinct => Func::count_distinct(a()),
            AggKind::Sum => Func::sum(a()),
            AggKind::Avg => Func::avg(a()),
            AggKind::Min => Func::min(a()),
            AggKind::Max => Func::max(a()),
        };
        match &self.filter {
            Some(c) => call.filter(c.clone()).into(),
            None => call.into(),
        }
    }
}

impl Agg<i64> {
    /// `COUNT(*)`.
    #[must_use]
    pub fn count_all() -> Agg<i64> {
        Agg::make(AggKind::CountAll, None)
    }

    /// `COUNT(x)`: rows where `x` is not NULL.
    #[must_use]
    pub fn count<A: SqlType>(x: impl Into<TypedExpr<A>>) -> Agg<i64> {
        Agg::make(AggKind::Count, arg(x.into()))
    }

    /// `COUNT(DISTINCT x)`: cannot be rolled up from finer rows, which is
    /// why whole levels are computed by the server.
    #[must_use]
    pub fn count_distinct<A: SqlType>(x: impl Into<TypedExpr<A>>) -> Agg<i64> {
        Agg::make(AggKind::CountDistinct, arg(x.into()))
    }
}

impl<T: SqlType> Agg<T> {
    /// `SUM(x)`, typed as PostgreSQL returns it (`SUM(int4)` → `i64`).
    #[must_use]
    pub fn sum<A: Summable<Sum = T>>(x: impl Into<TypedExpr<A>>) -> Agg<T> {
        Agg::make(AggKind::Sum, arg(x.into()))
    }

    /// `AVG(x)`, typed as PostgreSQL returns it (`AVG(int4)` → `Decimal`).
    #[must_use]
    pub fn avg<A: Summable<Avg = T>>(x: impl Into<TypedExpr<A>>) -> Agg<T> {
        Agg::make(AggKind::Avg, arg(x.into()))
    }

    /// `SUM(col)` of a type-erased column.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] when the column is not numeric, or `T` is not
    /// the type PostgreSQL returns for its sum.
    pub fn sum_any(col: &AnyColumn) -> Result<Agg<T>> {
        Agg::checked(AggKind::Sum, col, sum_type(col.sql_type()), "sum")
    }

    /// `AVG(col)` of a type-erased column.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] when the column is not numeric, or `T` is not
    /// the type PostgreSQL returns for its average.
    pub fn avg_any(col: &AnyColumn) -> Result<Agg<T>> {
        Agg::checked(AggKind::Avg, col, avg_type(col.sql_type()), "avg")
    }

    fn checked(
        kind: AggKind,
        col: &AnyColumn,
        out: Option<&'static str>,
        what: &'static str,
    ) -> Result<Agg<T>> {
        match out {
            None => Err(Error::spec(
                "metric",
                format!(
                    "{what} needs a numeric column; {} is {}",
                    col.name(),
                    col.sql_type()
                ),
            )),
            Some(out) if out != T::SQL_TYPE => Err(Error::spec(
                "metric",
                format!(
                    "{what}({}) returns {out} in PostgreSQL, not {}",
                    col.name(),
                    T::SQL_TYPE
                ),
            )),
            Some(_) => Ok(Agg::make(
                kind,
                Some(TypedArg {
                    expr: col.expr(),
                    column: Some(col.clone()),
                }),
            )),
        }
    }
}

impl<T: Ordered> Agg<T> {
    /// `MIN(x)`.
    #[must_use]
    pub fn min(x: impl Into<TypedExpr<T>>) -> Agg<T> {
        Agg::make(AggKind::Min, arg(x.into()))
    }

    /// `MAX(x)`.
    #[must_use]
    pub fn max(x: impl Into<TypedExpr<T>>) -> Agg<T> {
        Agg::make(AggKind::Max, arg(x.into()))
    }
}

/// Every handle gets its own number; clones share it, so a handle names
/// the same column in every report it is added to.
static NEXT_HANDLE: AtomicU64 = AtomicU64::new(1);

fn next_handle() -> u64 {
    NEXT_HANDLE.fetch_add(1, AtomicOrdering::Relaxed)
}

/// An output name given at run time: checked now, its problem reported by
/// the report the handle is added to (the handle itself never fails).
fn output_name(alias: &str, problems: &mut Problems) -> Ident {
    problems
        .note(Ident::new(alias))
        .unwrap_or(Ident::fixed("invalid_name"))
}

/// A dimension's definition, shared by its typed and erased handles.
#[derive(Debug)]
pub(crate) struct DimDef {
    pub(crate) id: u64,
    pub(crate) alias: Ident,
    pub(crate) expr: Expr,
    pub(crate) column: Option<AnyColumn>,
    pub(crate) sql_type: &'static str,
    pub(crate) problems: Problems,
}

/// A dimension of a report: a column or expression grouped on, with its
/// output name. Made on its own ([`Dim::new`], [`Dim::named`]), added to a
/// [`Rollup`](crate::Rollup) as it is
/// ([`dimension`](crate::Rollup::dimension), or by naming it in
/// [`rollup`](crate::Rollup::rollup), [`cube`](crate::Rollup::cube),
/// [`grouping_sets`](crate::Rollup::grouping_sets),
/// [`group_by`](crate::Rollup::group_by)), and used to read its value from
/// the report's rows ([`RollupRow::get`](crate::RollupRow::get)). Clones
/// are the same dimension.
pub struct Dim<T> {
    pub(crate) def: Arc<DimDef>,
    _type: PhantomData<fn() -> T>,
}

impl<T: SqlType> Dim<T> {
    /// A column as a dimension, named after the column.
    ///
    /// ```
    /// use pgpatterns::{column, table, Dim};
    /// let sale = table!("sale");
    /// let merchant = Dim::new(&column!(sale, "merchant": String));
    /// assert_eq!(merchant.alias().as_str(), "merchant");
    /// ```
    pub fn new(col: &Column<T>) -> Dim<T> {
        Dim::from_parts(col.name().clone(), col.into(), Problems::default())
    }

    /// A column or an expression as a dimension under an output name. A
    /// name that is not a valid identifier, or an expression with bound
    /// values (PostgreSQL matches grouped expressions by their parameters:
    /// compute such a value in a [`from_query`](crate::Rollup::from_query)
    /// base instead), makes the report it is added to refuse to build.
    pub fn named(alias: impl AsRef<str>, x: impl Into<TypedExpr<T>>) -> Dim<T> {
        let mut problems = Problems::default();
        let alias = output_name(alias.as_ref(), &mut problems);
        let x = x.into();
        if !crate::BuiltQuery::new(&sea_query::Query::select().expr(x.expr.clone()).to_owned())
            .values()
            .0
            .is_empty()
        {
            problems.note::<()>(Err(Error::spec(
                "dimension",
                format!(
                    "the expression of {alias:?} has bound values; it is written three times \
                     (SELECT, GROUP BY, GROUPING()) and PostgreSQL only matches identical \
                     parameters, so compute it in a base query (Rollup::from_query)"
                ),
            )));
        }
        Dim::from_parts(alias, x, problems)
    }

    fn from_parts(alias: Ident, x: TypedExpr<T>, problems: Problems) -> Dim<T> {
        Dim {
            def: Arc::new(DimDef {
                id: next_handle(),
                alias,
                expr: x.expr,
                column: x.column,
                sql_type: T::SQL_TYPE,
                problems,
            }),
            _type: PhantomData,
        }
    }
}

impl<T> Dim<T> {
    /// The dimension with its type erased, for lists built at run time
    /// (`Vec<AnyDim>` is a [`Dims`]).
    #[must_use]
    pub fn erase(&self) -> AnyDim {
        AnyDim(self.def.clone())
    }

    /// The output column's name.
    #[must_use]
    pub fn alias(&self) -> &Ident {
        &self.def.alias
    }

    /// The dimension's SQL expression (as grouped).
    #[must_use]
    pub fn expr(&self) -> Expr {
        self.def.expr.clone()
    }
}

impl<T> Clone for Dim<T> {
    fn clone(&self) -> Self {
        Dim {
            def: self.def.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: SqlType> fmt::Debug for Dim<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dim({}: {})", self.def.alias, T::SQL_TYPE)
    }
}

/// A dimension with its type erased ([`Dim::erase`]).
#[derive(Clone)]
pub struct AnyDim(pub(crate) Arc<DimDef>);

impl AnyDim {
    /// The output column's name.
    #[must_use]
    pub fn alias(&self) -> &Ident {
        &self.0.alias
    }
}

impl fmt::Debug for AnyDim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AnyDim({}: {})", self.0.alias, self.0.sql_type)
    }
}

impl<T> From<&Dim<T>> for AnyDim {
    fn from(d: &Dim<T>) -> AnyDim {
        d.erase()
    }
}

/// Dimensions named together — in [`rollup`](crate::Rollup::rollup),
/// [`cube`](crate::Rollup::cube), one set of
/// [`grouping_sets`](crate::Rollup::grouping_sets): one handle
/// (`&merchant`), a tuple of handles of any types (`(&merchant, &year)`,
/// `()` for the empty set), an array of handles of one type, or a
/// `Vec<AnyDim>` built at run time.
pub trait Dims {
    /// The dimensions, in order.
    #[doc(hidden)]
    fn dims(self) -> Vec<AnyDim>;
}

impl<T> Dims for &Dim<T> {
    fn dims(self) -> Vec<AnyDim> {
        vec![self.erase()]
    }
}

impl Dims for AnyDim {
    fn dims(self) -> Vec<AnyDim> {
        vec![self]
    }
}

impl Dims for Vec<AnyDim> {
    fn dims(self) -> Vec<AnyDim> {
        self
    }
}

impl Dims for &[AnyDim] {
    fn dims(self) -> Vec<AnyDim> {
        self.to_vec()
    }
}

impl<T, const N: usize> Dims for [&Dim<T>; N] {
    fn dims(self) -> Vec<AnyDim> {
        self.iter().map(|d| d.erase()).collect()
    }
}

impl Dims for () {
    fn dims(self) -> Vec<AnyDim> {
        Vec::new()
    }
}

macro_rules! dims_tuple {
    ($($t:ident $v:ident),+) => {
        impl<$($t),+> Dims for ($(&Dim<$t>,)+) {
            fn dims(self) -> Vec<AnyDim> {
                let ($($v,)+) = self;
                vec![$($v.erase()),+]
            }
        }
    };
}

dims_tuple!(A a);
dims_tuple!(A a, B b);
dims_tuple!(A a, B b, C c);
dims_tuple!(A a, B b, C c, D d);
dims_tuple!(A a, B b, C c, D d, E e);
dims_tuple!(A a, B b, C c, D d, E e, F f);
dims_tuple!(A a, B b, C c, D d, E e, F f, G g);
dims_tuple!(A a, B b, C c, D d, E e, F f, G g, H h);

/// The sets of [`grouping_sets`](crate::Rollup::grouping_sets): a tuple of
/// [`Dims`] (`((&merchant, &device), (&merchant,), ())`), an array of
/// [`Dims`] of one kind, or a `Vec<Vec<AnyDim>>` built at run time.
pub trait GroupingSets {
    /// The sets, in order.
    #[doc(hidden)]
    fn sets(self) -> Vec<Vec<AnyDim>>;
}

impl<D: Dims, const N: usize> GroupingSets for [D; N] {
    fn sets(self) -> Vec<Vec<AnyDim>> {
        self.into_iter().map(Dims::dims).collect()
    }
}

impl<D: Dims> GroupingSets for Vec<D> {
    fn sets(self) -> Vec<Vec<AnyDim>> {
        self.into_iter().map(Dims::dims).collect()
    }
}

macro_rules! sets_tuple {
    ($($t:ident $v:ident),+) => {
        impl<$($t: Dims),+> GroupingSets for ($($t,)+) {
            fn sets(self) -> Vec<Vec<AnyDim>> {
                let ($($v,)+) = self;
                vec![$($v.dims()),+]
            }
        }
    };
}

sets_tuple!(A a);
sets_tuple!(A a, B b);
sets_tuple!(A a, B b, C c);
sets_tuple!(A a, B b, C c, D d);
sets_tuple!(A a, B b, C c, D d, E e);
sets_tuple!(A a, B b, C c, D d, E e, F f);
sets_tuple!(A a, B b, C c, D d, E e, F f, G g);
sets_tuple!(A a, B b, C c, D d, E e, F f, G g, H h);

/// A metric's definition, shared by its clones.
#[derive(Debug)]
pub(crate) struct MetricDef {
    pub(crate) id: u64,
    pub(crate) alias: Ident,
    pub(crate) expr: Expr,
    pub(crate) kind: AggKind,
    pub(crate) arg: Option<TypedArg>,
    pub(crate) filter: Option<Expr>,
    pub(crate) sql_type: &'static str,
    pub(crate) problems: Problems,
}

/// A metric of a report: an aggregate under an output name, decoded as
/// `T`. Made on its own ([`Metric::new`]), added to a
/// [`Rollup`](crate::Rollup) as it is ([`metric`](crate::Rollup::metric)),
/// and used to read its value from the report's rows
/// ([`RollupRow::get`](crate::RollupRow::get)), filter levels on it with
/// `HAVING` ([`Metric::gt`] …) and rank by it
/// ([`Rollup::rank_by`](crate::Rollup::rank_by)). Clones are the same
/// metric.
pub struct Metric<T> {
    pub(crate) def: Arc<MetricDef>,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Metric<T> {
    fn clone(&self) -> Self {
        Metric {
            def: self.def.clone(),
            _type: PhantomData,
        }
    }
}

impl<T: SqlType> fmt::Debug for Metric<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Metric({}: {})", self.def.alias, T::SQL_TYPE)
    }
}

impl<T: SqlType> Metric<T> {
    /// An aggregate under an output name. A name that is not a valid
    /// identifier makes the report it is added to refuse to build.
    ///
    /// ```
    /// use pgpatterns::{column, table, Agg, Metric};
    /// let sale = table!("sale");
    /// let sales = Metric::new("sales", Agg::count_all());
    /// let users = Metric::new("users", Agg::count_distinct(&column!(sale, "user_id": i32)));
    /// assert_eq!(users.alias().as_str(), "users");
    /// ```
    pub fn new(alias: impl AsRef<str>, agg: Agg<T>) -> Metric<T> {
        let mut problems = Problems::default();
        let alias = output_name(alias.as_ref(), &mut problems);
        let expr = agg.to_expr();
        Metric {
            def: Arc::new(MetricDef {
                id: next_handle(),
                alias,
                expr,
                kind: agg.kind,
                arg: agg.arg,
                filter: agg.filter,
                sql_type: T::SQL_TYPE,
                problems,
            }),
            _type: PhantomData,
        }
    }

    /// The output column's name.
    #[must_use]
    pub fn alias(&self) -> &Ident {
        &self.def.alias
    }

    /// The aggregate expression (usable in `HAVING` and `ORDER BY`).
    #[must_use]
    pub fn expr(&self) -> Expr {
        self.def.expr.clone()
    }

    /// `aggregate > $n`, for [`Rollup::having`](crate::Rollup::having).
    #[must_use]
    pub fn gt(&self, v: impl Into<T>) -> Expr {
        self.expr().gt(v.into().param())
    }

    /// `aggregate >= $n`.
    #[must_use]
    pub fn gte(&self, v: impl Into<T>) -> Expr {
        self.expr().gte(v.into().param())
    }

    /// `aggregate < $n`.
    #[must_use]
    pub fn lt(&self, v: impl Into<T>) -> Expr {
        self.expr().lt(v.into().param())
    }

    /// `aggregate <= $n`.
    #[must_use]
    pub fn lte(&self, v: impl Into<T>) -> Expr {
        self.expr().lte(v.into().param())
    }

    /// `aggregate = $n`.
    #[must_use]
    pub fn eq(&self, v: impl Into<T>) -> Expr {
        self.expr().eq(v.into().param())
    }

    /// `aggregate <> $n`.
    #[must_use]
    pub fn ne(&self, v: impl Into<T>) -> Expr {
        self.expr().ne(v.into().param())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn same<A: Summable>() {
        assert_eq!(sum_type(A::SQL_TYPE), Some(A::Sum::SQL_TYPE));
        assert_eq!(avg_type(A::SQL_TYPE), Some(A::Avg::SQL_TYPE));
    }

    #[test]
    fn summable_types_agree_with_the_runtime_table() {
        same::<i16>();
        same::<i32>();
        same::<i64>();
        same::<Decimal>();
        same::<f32>();
        same::<f64>();
        assert_eq!(sum_type("text"), None);
        assert_eq!(avg_type("timestamptz"), None);
    }
}
