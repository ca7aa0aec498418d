//! The PostgreSQL type each bound value is sent as, so a statement can be
//! sent with its parameter types in one round trip (`query_typed`) instead
//! of being prepared first.
//!
//! A value's type is decided by how it is encoded, not by a guess:
//! sea-query-postgres writes every value in PostgreSQL's binary format from
//! its Rust type, so the type declared to the server must be the type whose
//! binary format those bytes are. Unsigned and one-byte integers are widened
//! to the next signed type first (`u32` is sent as `int8`), so no value is
//! ever declared with a type its bytes do not match.

use postgres_types::{ToSql, Type};
use sea_query::{ArrayType, Value};
use sea_query_postgres::PostgresValue;

use crate::{BuiltQuery, Error, Result};

/// The values of a [`BuiltQuery`] with the PostgreSQL type each is sent as:
/// what `query_typed` / `query_typed_raw` of tokio-postgres and `postgres`
/// take, so the statement needs no separate prepare round trip.
///
/// Made by [`BuiltQuery::typed_params`]. Every value pgpatterns builds has an
/// exact type. A value whose type only the server can say (an array of a
/// sea-query `Enum`, or a value kind this build of pgpatterns does not know,
/// such as JSON when another crate enables sea-query's `with-json`) makes
/// [`needs_server_types`](Self::needs_server_types) `true`: such a statement
/// is prepared first so the server reports the types (two round trips, and
/// a named statement, which transaction-mode poolers do not support).
///
/// ```
/// use pgpatterns::{BuiltQuery, SqlType};
/// use pgpatterns::postgres_types::Type;
/// let q = BuiltQuery::fixed_with(
///     "SELECT $1::int8 + $2::int4",
///     [7i64.into_value(), 7u16.into()],
/// );
/// let typed = q.typed_params()?;
/// // `u16` is sent as `int4`: its bytes are an `i32`'s.
/// assert_eq!(typed.types(), [Type::INT8, Type::INT4]);
/// assert!(!typed.needs_server_types());
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct TypedParams {
    values: Vec<PostgresValue>,
    types: Vec<Type>,
    needs_server_types: bool,
}

impl TypedParams {
    /// The type of each parameter, in placeholder order. `Type::UNKNOWN`
    /// lets the server infer a parameter's type from the statement (for
    /// text sent into an enum, say); see
    /// [`needs_server_types`](Self::needs_server_types) for values that
    /// cannot be sent that way.
    #[must_use]
    pub fn types(&self) -> &[Type] {
        &self.types
    }

    /// `true` when some value's binary encoding depends on a type only the
    /// server knows: the statement must be prepared (described) first, and
    /// [`as_params`](Self::as_params) used with the server's types.
    #[must_use]
    pub fn needs_server_types(&self) -> bool {
        self.needs_server_types
    }

    /// `(value, type)` pairs for `query_typed` / `execute_typed`.
    #[must_use]
    pub fn as_typed(&self) -> Vec<(&(dyn ToSql + Sync), Type)> {
        self.pairs().collect()
    }

    /// `(value, type)` pairs for `query_typed_raw`.
    pub fn pairs(&self) -> impl ExactSizeIterator<Item = (&(dyn ToSql + Sync), Type)> + '_ {
        self.values.iter().zip(&self.types).map(|(v, t)| {
            let v: &(dyn ToSql + Sync) = v;
            (v, t.clone())
        })
    }

    /// The values alone, for a statement prepared by the server (`query`
    /// with a `Statement`): the server's types decide the encoding.
    #[must_use]
    pub fn as_params(&self) -> Vec<&(dyn ToSql + Sync)> {
        self.values
            .iter()
            .map(|v| {
                let v: &(dyn ToSql + Sync) = v;
                v
            })
            .collect()
    }

    /// Number of parameters.
    #[must_use]
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// `true` for a statement without parameters.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// How a value is declared to the server.
#[derive(Debug, Clone, PartialEq)]
enum Declared {
    /// This exact type.
    Exact(Type),
    /// Text bytes whose type the statement decides (`unknown`, as a quoted
    /// literal would be).
    Inferred,
    /// Only the server can say: prepare (describe) the statement first.
    Described,
}

impl BuiltQuery {
    /// The values with the PostgreSQL type each is sent as, for one-round-trip
    /// execution (`query_typed`). See [`TypedParams`].
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] naming the parameter when a value cannot be
    /// sent as any PostgreSQL type without changing it: a `u64` above
    /// `i64::MAX` (PostgreSQL has no unsigned integers; sea-query-postgres
    /// would wrap it to a negative number), or an array whose elements are
    /// not of its element type.
    pub fn typed_params(&self) -> Result<TypedParams> {
        let n = self.values().0.len();
        let mut typed = TypedParams {
            values: Vec::with_capacity(n),
            types: Vec::with_capacity(n),
            needs_server_types: false,
        };
        for (i, v) in self.values().0.iter().enumerate() {
            let (value, declared) = declare(v).map_err(|reason| {
                Error::spec("value", format!("parameter ${}: {reason}", i + 1))
            })?;
            let ty = match declared {
                Declared::Exact(ty) => ty,
                Declared::Inferred => Type::UNKNOWN,
                Declared::Described => {
                    typed.needs_server_types = true;
                    Type::UNKNOWN
                }
            };
            typed.values.push(PostgresValue(value));
            typed.types.push(ty);
        }
        Ok(typed)
    }
}

/// The value as it is sent (integers widened to a signed type) and its
/// declared type; `Err` with the reason when it cannot be sent unchanged.
fn declare(v: &Value) -> std::result::Result<(Value, Declared), String> {
    use Declared::{Described, Exact, Inferred};
    let exact = |v: Value, ty: Type| Ok((v, Exact(ty)));
    match v {
        Value::Bool(_) => exact(v.clone(), Type::BOOL),
        Value::TinyInt(x) => exact(Value::SmallInt(x.map(i16::from)), Type::INT2),
        Value::SmallInt(_) => exact(v.clone(), Type::INT2),
        Value::Int(_) => exact(v.clone(), Type::INT4),
        Value::BigInt(_) => exact(v.clone(), Type::INT8),
        Value::TinyUnsigned(x) => exact(Value::SmallInt(x.map(i16::from)), Type::INT2),
        Value::SmallUnsigned(x) => exact(Value::Int(x.map(i32::from)), Type::INT4),
        Value::Unsigned(x) => exact(Value::BigInt(x.map(i64::from)), Type::INT8),
        Value::BigUnsigned(x) => {
            let x = x.map(i64::try_from).transpose().map_err(|_| {
                format!(
                    "{} is above the largest int8 ({})",
                    x.unwrap_or(0),
                    i64::MAX
                )
            })?;
            exact(Value::BigInt(x), Type::INT8)
        }
        Value::Float(_) => exact(v.clone(), Type::FLOAT4),
        Value::Double(_) => exact(v.clone(), Type::FLOAT8),
        Value::String(_) => exact(v.clone(), Type::TEXT),
        // sea-query sends a `char` as a one-character string.
        Value::Char(c) => exact(Value::String(c.map(String::from)), Type::TEXT),
        // sea-query's own builders turn enum values into text with a cast
        // (`$1::mood`); a bare one is text that the statement types.
        Value::Enum(_) => Ok((v.clone(), Inferred)),
        Value::Bytes(_) => exact(v.clone(), Type::BYTEA),
        Value::ChronoDate(_) => exact(v.clone(), Type::DATE),
        Value::ChronoTime(_) => exact(v.clone(), Type::TIME),
        Value::ChronoDateTime(_) => exact(v.clone(), Type::TIMESTAMP),
        Value::ChronoDateTimeUtc(_)
        | Value::ChronoDateTimeLocal(_)
        | Value::ChronoDateTimeWithTimeZone(_) => exact(v.clone(), Type::TIMESTAMPTZ),
        Value::Uuid(_) => exact(v.clone(), Type::UUID),
        Value::Decimal(_) => exact(v.clone(), Type::NUMERIC),
        Value::Array(element, items) => declare_array(element, items.as_deref()),
        // Value kinds behind sea-query features pgpatterns does not enable
        // (another crate in the build may): ask the server.
        #[allow(unreachable_patterns)]
        _ => Ok((v.clone(), Described)),
    }
}

fn declare_array(
    element: &ArrayType,
    items: Option<&Vec<Value>>,
) -> std::result::Result<(Value, Declared), String> {
    let (element_type, array_type) = match element {
        ArrayType::Bool => (Type::BOOL, Type::BOOL_ARRAY),
        ArrayType::TinyInt | ArrayType::SmallInt | ArrayType::TinyUnsigned => {
            (Type::INT2, Type::INT2_ARRAY)
        }
        ArrayType::Int | ArrayType::SmallUnsigned => (Type::INT4, Type::INT4_ARRAY),
        ArrayType::BigInt | ArrayType::Unsigned | ArrayType::BigUnsigned => {
            (Type::INT8, Type::INT8_ARRAY)
        }
        ArrayType::Float => (Type::FLOAT4, Type::FLOAT4_ARRAY),
        ArrayType::Double => (Type::FLOAT8, Type::FLOAT8_ARRAY),
        ArrayType::String | ArrayType::Char => (Type::TEXT, Type::TEXT_ARRAY),
        ArrayType::Bytes => (Type::BYTEA, Type::BYTEA_ARRAY),
        ArrayType::ChronoDate => (Type::DATE, Type::DATE_ARRAY),
        ArrayType::ChronoTime => (Type::TIME, Type::TIME_ARRAY),
        ArrayType::ChronoDateTime => (Type::TIMESTAMP, Type::TIMESTAMP_ARRAY),
        ArrayType::ChronoDateTimeUtc
        | ArrayType::ChronoDateTimeLocal
        | ArrayType::ChronoDateTimeWithTimeZone => (Type::TIMESTAMPTZ, Type::TIMESTAMPTZ_ARRAY),
        ArrayType::Uuid => (Type::UUID, Type::UUID_ARRAY),
        ArrayType::Decimal => (Type::NUMERIC, Type::NUMERIC_ARRAY),
        // An enum's array type (or a kind this build does not know) has an
        // OID only the server can say.
        #[allow(unreachable_patterns)]
        _ => {
            let items = items.map(|items| Box::new(items.clone()));
            return Ok((Value::Array(element.clone(), items), Declared::Described));
        }
    };
    let Some(items) = items else {
        return Ok((
            Value::Array(element.clone(), None),
            Declared::Exact(array_type),
        ));
    };
    let mut sent = Vec::with_capacity(items.len());
    for (j, item) in items.iter().enumerate() {
        let (value, declared) =
            declare(item).map_err(|reason| format!("element {}: {reason}", j + 1))?;
        if declared != Declared::Exact(element_type.clone()) {
            return Err(format!(
                "element {} is not a {element_type} (the array is declared {array_type})",
                j + 1
            ));
        }
        sent.push(value);
    }
    Ok((
        Value::Array(element.clone(), Some(Box::new(sent))),
        Declared::Exact(array_type),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqlType;
    use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};
    use rust_decimal::Decimal;
    use uuid::Uuid;

    fn types_of(values: Vec<Value>) -> Vec<Type> {
        let q = BuiltQuery::generated_with(String::new(), values);
        q.typed_params().expect("typed").types().to_vec()
    }

    #[test]
    fn every_sql_type_is_declared_as_its_own_type() {
        let values = vec![
            true.into_value(),
            1i16.into_value(),
            1i32.into_value(),
            1i64.into_value(),
            1f32.into_value(),
            1f64.into_value(),
            String::from("x").into_value(),
            Decimal::ONE.into_value(),
            DateTime::<Utc>::UNIX_EPOCH.into_value(),
            NaiveDateTime::default().into_value(),
            NaiveDate::default().into_value(),
            NaiveTime::default().into_value(),
            Uuid::nil().into_value(),
            vec![1u8].into_value(),
            i64::null_value(),
            i64::array_value([1, 2]),
            String::array_value(Vec::<String>::new()),
        ];
        assert_eq!(
            types_of(values),
            [
                Type::BOOL,
                Type::INT2,
                Type::INT4,
                Type::INT8,
                Type::FLOAT4,
                Type::FLOAT8,
                Type::TEXT,
                Type::NUMERIC,
                Type::TIMESTAMPTZ,
                Type::TIMESTAMP,
                Type::DATE,
                Type::TIME,
                Type::UUID,
                Type::BYTEA,
                Type::INT8,
                Type::INT8_ARRAY,
                Type::TEXT_ARRAY,
            ]
        );
    }

    #[test]
    fn the_same_type_names_as_sql_type() {
        // `SqlType::SQL_TYPE` casts the placeholder; the declared type must agree.
        fn check<T: SqlType>(v: T) {
            let ty = types_of(vec![v.into_value()]).remove(0);
            assert_eq!(ty.name(), T::SQL_TYPE);
        }
        check(true);
        check(1i16);
        check(1i32);
        check(1i64);
        check(1f32);
        check(1f64);
        check(String::new());
        check(Decimal::ONE);
        check(DateTime::<Utc>::UNIX_EPOCH);
        check(NaiveDateTime::default());
        check(NaiveDate::default());
        check(NaiveTime::default());
        check(Uuid::nil());
        check(vec![0u8]);
    }

    #[test]
    fn small_and_unsigned_integers_are_widened_to_signed_types() {
        let q = BuiltQuery::generated_with(
            String::new(),
            [
                Value::TinyInt(Some(-3)),
                Value::TinyUnsigned(Some(200)),
                Value::SmallUnsigned(Some(60_000)),
                Value::Unsigned(Some(4_000_000_000)),
                Value::BigUnsigned(Some(5)),
                Value::BigUnsigned(None),
                Value::Char(Some('é')),
            ],
        );
        let typed = q.typed_params().expect("typed");
        assert_eq!(
            typed.types(),
            [
                Type::INT2,
                Type::INT2,
                Type::INT4,
                Type::INT8,
                Type::INT8,
                Type::INT8,
                Type::TEXT
            ]
        );
        let sent: Vec<&Value> = typed.values.iter().map(|v| &v.0).collect();
        assert_eq!(
            sent,
            [
                &Value::SmallInt(Some(-3)),
                &Value::SmallInt(Some(200)),
                &Value::Int(Some(60_000)),
                &Value::BigInt(Some(4_000_000_000)),
                &Value::BigInt(Some(5)),
                &Value::BigInt(None),
                &Value::String(Some("é".into())),
            ]
        );
    }

    #[test]
    fn a_u64_above_int8_is_refused_not_wrapped() {
        let q = BuiltQuery::generated_with(
            String::new(),
            [Value::BigInt(Some(1)), Value::BigUnsigned(Some(u64::MAX))],
        );
        let err = q.typed_params().unwrap_err();
        assert!(
            matches!(&err, Error::InvalidSpec { reason, .. } if reason.starts_with("parameter $2:")),
            "{err}"
        );
        let q = BuiltQuery::generated_with(
            String::new(),
            [Value::Array(
                ArrayType::BigUnsigned,
                Some(Box::new(vec![Value::BigUnsigned(Some(u64::MAX))])),
            )],
        );
        assert!(q
            .typed_params()
            .unwrap_err()
            .to_string()
            .contains("element 1"));
    }

    #[test]
    fn arrays_whose_elements_disagree_are_refused() {
        let q = BuiltQuery::generated_with(
            String::new(),
            [Value::Array(
                ArrayType::Int,
                Some(Box::new(vec![Value::Int(Some(1)), Value::BigInt(Some(2))])),
            )],
        );
        let err = q.typed_params().unwrap_err();
        assert!(err.to_string().contains("element 2 is not a int4"), "{err}");
    }

    #[test]
    fn enums_are_inferred_and_enum_arrays_described() {
        let e = || {
            Value::Enum(sea_query::OptionEnum::Some(Box::new(sea_query::Enum {
                type_name: "mood".into(),
                value: "happy".into(),
            })))
        };
        let q = BuiltQuery::generated_with(String::new(), [e()]);
        let typed = q.typed_params().expect("typed");
        assert_eq!(typed.types(), [Type::UNKNOWN]);
        assert!(!typed.needs_server_types());

        let q = BuiltQuery::generated_with(
            String::new(),
            [Value::Array(
                ArrayType::Enum(Box::new("mood".into())),
                Some(Box::new(vec![e()])),
            )],
        );
        assert!(q.typed_params().expect("typed").needs_server_types());
    }
}
