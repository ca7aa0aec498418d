//! The Rust ↔ PostgreSQL type mapping behind typed columns and bound values.
//!
//! sea-query-postgres sends every parameter in PostgreSQL's *binary* format and
//! lets the server infer each parameter's type from the statement. An `i32`
//! bound where the server infers `bigint` is then rejected ("insufficient data
//! left in message"), and a `&str` bound into `timestamptz` fails the same way.
//! pgpatterns therefore binds every value through [`SqlType::param`], which
//! casts the placeholder to the exact type the Rust value encodes to
//! (`$1::int8`): the server always agrees with the bytes it receives, and
//! cross-type comparisons (`int4_col = $1::int8`) still use the column's index.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
use rust_decimal::Decimal;
use sea_query::{ArrayType, Expr, ExprTrait, Value};
use uuid::Uuid;

/// A Rust type with one exact PostgreSQL counterpart.
///
/// Implemented for `bool`, `i16`, `i32`, `i64`, `f32`, `f64`, `String`,
/// [`Decimal`] (`numeric`), `DateTime<Utc>` (`timestamptz`), `NaiveDateTime`
/// (`timestamp`), `NaiveDate` (`date`), `NaiveTime` (`time`), [`Uuid`] and
/// `Vec<u8>` (`bytea`).
pub trait SqlType: Clone + Send + Sync + std::fmt::Debug + 'static {
    /// The PostgreSQL type name, e.g. `"int8"`.
    const SQL_TYPE: &'static str;
    /// The PostgreSQL array type name, e.g. `"int8[]"`.
    const SQL_ARRAY_TYPE: &'static str;
    /// The sea-query array element type, for array parameters.
    const ARRAY_TYPE: ArrayType;

    /// This value as a sea-query [`Value`] (not yet cast; see [`SqlType::param`]).
    fn into_value(self) -> Value;

    /// A NULL of this type.
    fn null_value() -> Value;

    /// This value as a bound parameter cast to its exact type: `$n::int8`.
    ///
    /// ```
    /// use pgpatterns::{BuiltQuery, SqlType};
    /// use sea_query::Query;
    /// let q = BuiltQuery::from(&Query::select().expr(42i64.param()).to_owned());
    /// assert_eq!(q.sql(), r#"SELECT CAST($1 AS int8)"#);
    /// ```
    fn param(self) -> Expr {
        Expr::val(self.into_value()).cast_as(Self::SQL_TYPE)
    }

    /// `value` or a typed NULL, as a bound parameter cast to its exact type.
    fn param_opt(value: Option<Self>) -> Expr {
        let v = value.map_or_else(Self::null_value, Self::into_value);
        Expr::val(v).cast_as(Self::SQL_TYPE)
    }

    /// A list of values as *one* bound array parameter, `$n::int8[]`, for
    /// `col = ANY($n)`: one placeholder whatever the list length, so the
    /// server can reuse one plan.
    fn array_param<I: IntoIterator<Item = Self>>(values: I) -> Expr {
        Expr::val(Self::array_value(values)).cast_as(Self::SQL_ARRAY_TYPE)
    }

    /// A list of values as one array value (uncast: for SQL text that casts
    /// its placeholder itself, `$1::text[]`).
    fn array_value<I: IntoIterator<Item = Self>>(values: I) -> Value {
        let items: Vec<Value> = values.into_iter().map(Self::into_value).collect();
        Value::Array(Self::ARRAY_TYPE, Some(Box::new(items)))
    }
}

macro_rules! sql_type {
    ($rust:ty, $sql:literal, $variant:ident, $arr:ident) => {
        impl SqlType for $rust {
            const SQL_TYPE: &'static str = $sql;
            const SQL_ARRAY_TYPE: &'static str = concat!($sql, "[]");
            const ARRAY_TYPE: ArrayType = ArrayType::$arr;
            fn into_value(self) -> Value {
                Value::$variant(Some(self.into()))
            }
            fn null_value() -> Value {
                Value::$variant(None)
            }
        }
    };
}

sql_type!(bool, "bool", Bool, Bool);
sql_type!(i16, "int2", SmallInt, SmallInt);
sql_type!(i32, "int4", Int, Int);
sql_type!(i64, "int8", BigInt, BigInt);
sql_type!(f32, "float4", Float, Float);
sql_type!(f64, "float8", Double, Double);
sql_type!(String, "text", String, String);
sql_type!(Decimal, "numeric", Decimal, Decimal);
sql_type!(
    DateTime<Utc>,
    "timestamptz",
    ChronoDateTimeUtc,
    ChronoDateTimeUtc
);
sql_type!(NaiveDateTime, "timestamp", ChronoDateTime, ChronoDateTime);
sql_type!(NaiveDate, "date", ChronoDate, ChronoDate);
sql_type!(NaiveTime, "time", ChronoTime, ChronoTime);
sql_type!(Uuid, "uuid", Uuid, Uuid);
sql_type!(Vec<u8>, "bytea", Bytes, Bytes);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BuiltQuery;
    use sea_query::Query;

    #[test]
    fn params_are_cast_to_their_exact_type() {
        let q = BuiltQuery::from(
            &Query::select()
                .expr(1i32.param())
                .expr(String::from("x").param())
                .expr(<i64 as SqlType>::param_opt(None))
                .expr(i64::array_param([1, 2]))
                .to_owned(),
        );
        assert_eq!(
            q.sql(),
            "SELECT CAST($1 AS int4), CAST($2 AS text), CAST($3 AS int8), CAST($4 AS int8[])"
        );
        assert_eq!(q.values().0.len(), 4);
    }
}
