//! Typed schema handles: identifiers, tables, columns and relations.
//!
//! Nothing here talks to the database: handles are declared in Rust and checked
//! when they are made (an empty name, a name over 63 bytes or one with a NUL is
//! refused). Literal names are checked at compile time (`table!`, `column!`,
//! `ident!`); names known only at run time return an [`Error`]. Every name
//! reaches SQL through sea-query's identifier quoting, so names with quotes,
//! spaces, upper case or unicode are safe.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::marker::PhantomData;
use std::sync::Arc;

use sea_query::extension::postgres::PgFunc;
use sea_query::{
    is_static_iden, ColumnName, ColumnRef, Condition, DynIden, Expr, ExprTrait, Iden, IntoIden,
    SchemaName, TableName, TableRef,
};

use crate::types::SqlType;
use crate::{Error, Result};

/// PostgreSQL's identifier limit (`NAMEDATALEN - 1`), in bytes.
pub const MAX_IDENT_BYTES: usize = 63;

/// An [`Ident`] from a literal name, checked at compile time.
///
/// `ident!("status")` is `const { Ident::from_static("status") }`: the name
/// is checked while compiling, so it needs no `?`, and an empty name, one
/// longer than 63 bytes or one containing a NUL does not compile. Names known
/// only at run time go through [`Ident::new`], which returns a [`Result`].
///
/// ```
/// use pgpatterns::{ident, table, BuiltQuery};
/// use sea_query::Query;
/// let orders = table!("orders");
/// let q = Query::select()
///     .column(orders.col::<i64>(ident!("id")).col_ref())
///     .from(orders.with_alias(ident!("o")).table_ref())
///     .to_owned();
/// assert_eq!(BuiltQuery::from(&q).sql(), r#"SELECT "orders"."id" FROM "orders" AS "o""#);
/// assert_eq!(ident!("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx").as_str().len(), 63);
/// ```
///
/// A 64-byte name does not compile:
///
/// ```compile_fail,E0080
/// let _ = pgpatterns::ident!("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
/// ```
///
/// Nor does a name that is not a constant (use [`Ident::new`] for it):
///
/// ```compile_fail
/// let name = String::from("status");
/// let _ = pgpatterns::ident!(&name);
/// ```
#[macro_export]
macro_rules! ident {
    ($name:expr $(,)?) => {
        const { $crate::Ident::from_static($name) }
    };
}

/// A [`Table`] from literal names, checked at compile time.
///
/// `table!("orders")` is a table resolved through the `search_path`,
/// `table!("sales", "orders")` is `"sales"."orders"`. Like
/// [`ident!`](crate::ident), a bad name (empty, over 63 bytes, with a NUL)
/// is a compile error, and the handle needs no `?`; names known only at run
/// time go through [`Table::new`] / [`Table::in_schema`], which return a
/// [`Result`]. Both kinds of handle are equal when their names are.
///
/// ```
/// use pgpatterns::{column, table, BuiltQuery, Table};
/// use sea_query::Query;
/// let orders = table!("sales", "orders");
/// let status = column!(orders, "status": String);
/// let q = Query::select()
///     .column(column!(orders, "id": i64).col_ref())
///     .from(orders.table_ref())
///     .and_where(status.eq("Pending"))
///     .to_owned();
/// let q = BuiltQuery::from(&q);
/// assert_eq!(
///     q.sql(),
///     r#"SELECT "sales"."orders"."id" FROM "sales"."orders" WHERE "sales"."orders"."status" = CAST($1 AS text)"#
/// );
/// assert_eq!(orders, Table::in_schema("sales", String::from("orders"))?);
/// # Ok::<(), pgpatterns::Error>(())
/// ```
///
/// An empty name does not compile:
///
/// ```compile_fail,E0080
/// let _ = pgpatterns::table!("");
/// ```
#[macro_export]
macro_rules! table {
    ($name:expr $(,)?) => {
        const { $crate::Table::from_static($name) }
    };
    ($schema:expr, $name:expr $(,)?) => {
        const { $crate::Table::in_schema_static($schema, $name) }
    };
}

/// A typed [`Column`] of a table from a literal name, checked at compile time.
///
/// `column!(orders, "id": i64)` is `orders.col::<i64>(ident!("id"))`; the
/// type may be left out where it is inferred (`column!(orders, "id")`). The
/// table is any expression giving a [`Table`] or a reference to one, whether
/// made by [`table!`](crate::table) or at run time. A bad name is a compile
/// error; names known only at run time go through [`Table::column`], which
/// returns a [`Result`].
///
/// ```
/// use pgpatterns::{column, table, BuiltQuery, Column, Relation};
/// use sea_query::{JoinType, Query};
/// let orders = table!("orders");
/// let statuses = table!("order_status");
/// let order_id: Column<i64> = column!(statuses, "order_id"); // type inferred
/// let fk = Relation::new(&order_id, &column!(orders, "id"));
/// let q = Query::select()
///     .column(column!(statuses, "status": String).col_ref())
///     .from(orders.table_ref())
///     .join(JoinType::InnerJoin, statuses.table_ref(), fk.reversed().on())
///     .to_owned();
/// assert_eq!(
///     BuiltQuery::from(&q).sql(),
///     r#"SELECT "order_status"."status" FROM "orders" INNER JOIN "order_status" ON "orders"."id" = "order_status"."order_id""#
/// );
/// ```
///
/// A name with a NUL does not compile:
///
/// ```compile_fail,E0080
/// let orders = pgpatterns::table!("orders");
/// let _ = pgpatterns::column!(orders, "a\0b": i64);
/// ```
#[macro_export]
macro_rules! column {
    ($table:expr, $name:literal : $ty:ty $(,)?) => {
        $crate::Table::col::<$ty>(&$table, $crate::ident!($name))
    };
    ($table:expr, $name:literal $(,)?) => {
        $crate::Table::col(&$table, $crate::ident!($name))
    };
}

/// A validated SQL identifier: non-empty, at most 63 bytes, no NUL.
///
/// It is always written quoted (`"Order Items"`), with embedded `"` doubled,
/// so it never changes the statement around it.
///
/// A literal name is checked at compile time with [`ident!`](crate::ident)
/// (or [`Ident::from_static`] in a `const`); a name known only at run time is
/// checked by [`Ident::new`]. Both kinds compare, hash and order by their text.
///
/// ```
/// use pgpatterns::{ident, Ident};
/// assert_eq!(Ident::new("Order \"Items\"")?.as_str(), "Order \"Items\"");
/// assert_eq!(ident!("Order \"Items\""), Ident::new("Order \"Items\"")?);
/// assert!(Ident::new("").is_err());
/// assert!(Ident::new("x".repeat(64)).is_err());
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Clone)]
pub struct Ident(Repr);

/// Where an identifier's text lives: in the program (no allocation, `const`)
/// or on the heap, shared between clones.
#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

/// Why a name is not a valid identifier.
#[derive(Clone, Copy)]
enum Invalid {
    Empty,
    TooLong,
    Nul,
}

impl Invalid {
    /// Checks `name`; `const` so that [`Ident::from_static`] applies exactly
    /// the rules of [`Ident::new`].
    const fn check(name: &str) -> Option<Invalid> {
        let bytes = name.as_bytes();
        if bytes.is_empty() {
            return Some(Invalid::Empty);
        }
        if bytes.len() > MAX_IDENT_BYTES {
            return Some(Invalid::TooLong);
        }
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == 0 {
                return Some(Invalid::Nul);
            }
            i += 1;
        }
        None
    }

    fn reason(self) -> &'static str {
        match self {
            Invalid::Empty => "must not be empty",
            Invalid::TooLong => "longer than 63 bytes (PostgreSQL would truncate it)",
            Invalid::Nul => "contains a NUL character",
        }
    }
}

impl Ident {
    /// Checks and wraps an identifier known only at run time.
    ///
    /// For a literal, prefer [`ident!`](crate::ident): it is checked at
    /// compile time and needs no `?`.
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] when `name` is empty, longer than 63 bytes
    /// (PostgreSQL would silently truncate it) or contains a NUL character.
    pub fn new(name: impl AsRef<str>) -> Result<Ident> {
        let name = name.as_ref();
        match Invalid::check(name) {
            Some(invalid) => Err(Error::InvalidIdentifier {
                ident: name.to_owned(),
                reason: invalid.reason(),
            }),
            None => Ok(Ident(Repr::Shared(Arc::from(name)))),
        }
    }

    /// An identifier from a name in the program text, without allocating.
    ///
    /// Evaluated in a `const` item or a `const { … }` block (which is what
    /// [`ident!`](crate::ident) does), an invalid name is a compile error:
    ///
    /// ```
    /// use pgpatterns::Ident;
    /// const STATUS: Ident = Ident::from_static("status");
    /// assert_eq!(STATUS.as_str(), "status");
    /// ```
    ///
    /// ```compile_fail
    /// const EMPTY: pgpatterns::Ident = pgpatterns::Ident::from_static("");
    /// ```
    ///
    /// # Panics
    /// When `name` is empty, longer than 63 bytes or contains a NUL character
    /// (the rules of [`Ident::new`]). In const evaluation the panic is a
    /// compile error; called at run time with an invalid name, it panics
    /// then, so use [`Ident::new`] for names that are not literals.
    #[must_use]
    pub const fn from_static(name: &'static str) -> Ident {
        // `panic!` in const evaluation takes a literal message only.
        match Invalid::check(name) {
            Some(Invalid::Empty) => panic!("invalid SQL identifier: must not be empty"),
            Some(Invalid::TooLong) => panic!(
                "invalid SQL identifier: longer than 63 bytes (PostgreSQL would truncate it)"
            ),
            Some(Invalid::Nul) => panic!("invalid SQL identifier: contains a NUL character"),
            None => Ident(Repr::Static(name)),
        }
    }

    /// An identifier written in this crate's own code (aliases such as
    /// `latest`): known valid, so infallible.
    pub(crate) const fn fixed(name: &'static str) -> Ident {
        Ident::from_static(name)
    }

    /// The identifier as given (unquoted).
    #[must_use]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

impl PartialEq for Ident {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Ident {}

impl Hash for Ident {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state);
    }
}

impl PartialOrd for Ident {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ident {
    fn cmp(&self, other: &Self) -> Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl Iden for Ident {
    fn quoted(&self) -> Cow<'static, str> {
        match &self.0 {
            // Borrowed text is written as is, so only plain names
            // (`[A-Za-z_][A-Za-z0-9_]*`) may go that way, as sea-query's own
            // `&'static str` identifiers do.
            Repr::Static(s) if is_static_iden(s) => Cow::Borrowed(s),
            // Owned: sea-query doubles embedded quotes of owned identifiers.
            _ => Cow::Owned(self.as_str().to_owned()),
        }
    }

    fn unquoted(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A table (or view), optionally schema-qualified and optionally aliased.
///
/// Literal names are checked at compile time with [`table!`](crate::table)
/// and [`column!`](crate::column); names known only at run time go through
/// [`Table::new`] / [`Table::column`], which return a [`Result`].
///
/// ```
/// use pgpatterns::{column, table, BuiltQuery};
/// use sea_query::Query;
/// let orders = table!("Sales", "orders");
/// let id = column!(orders, "id": i64);
/// let q = Query::select().column(id.col_ref()).from(orders.table_ref()).to_owned();
/// assert_eq!(BuiltQuery::from(&q).sql(), r#"SELECT "Sales"."orders"."id" FROM "Sales"."orders""#);
///
/// // The same handles from names read at run time:
/// let (schema, name) = (String::from("Sales"), String::from("orders"));
/// assert_eq!(pgpatterns::Table::in_schema(schema, name)?, orders);
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Table {
    schema: Option<Ident>,
    name: Ident,
    alias: Option<Ident>,
}

impl Table {
    /// A table resolved through the connection's `search_path`, from a name
    /// known only at run time (for a literal, use [`table!`](crate::table)).
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] for an invalid name (see [`Ident::new`]).
    pub fn new(name: impl AsRef<str>) -> Result<Table> {
        Ok(Table {
            schema: None,
            name: Ident::new(name)?,
            alias: None,
        })
    }

    /// A table from a name in the program text; what [`table!`](crate::table)
    /// expands to. In a `const` item an invalid name is a compile error:
    ///
    /// ```
    /// use pgpatterns::{column, BuiltQuery, Table};
    /// use sea_query::Query;
    /// const ORDERS: Table = Table::from_static("orders");
    /// let q = Query::select()
    ///     .column(column!(ORDERS, "id": i64).col_ref())
    ///     .from(ORDERS.table_ref())
    ///     .to_owned();
    /// assert_eq!(BuiltQuery::from(&q).sql(), r#"SELECT "orders"."id" FROM "orders""#);
    /// ```
    ///
    /// # Panics
    /// For an invalid name, as [`Ident::from_static`] does (at compile time
    /// in const evaluation).
    #[must_use]
    pub const fn from_static(name: &'static str) -> Table {
        Table {
            schema: None,
            name: Ident::from_static(name),
            alias: None,
        }
    }

    /// A schema-qualified table from names in the program text; what
    /// `table!(schema, name)` expands to.
    ///
    /// # Panics
    /// For an invalid name, as [`Ident::from_static`] does (at compile time
    /// in const evaluation).
    #[must_use]
    pub const fn in_schema_static(schema: &'static str, name: &'static str) -> Table {
        Table {
            schema: Some(Ident::from_static(schema)),
            name: Ident::from_static(name),
            alias: None,
        }
    }

    /// A table named in this crate's own code: known valid, so infallible.
    #[cfg_attr(not(feature = "seed"), allow(dead_code))]
    pub(crate) const fn fixed(name: &'static str) -> Table {
        Table::from_static(name)
    }

    /// A column named in this crate's own code: known valid, so infallible.
    #[cfg_attr(not(feature = "seed"), allow(dead_code))]
    pub(crate) fn fixed_column<T: SqlType>(&self, name: &'static str) -> Column<T> {
        self.col(Ident::fixed(name))
    }

    /// A schema-qualified table, `"schema"."name"`, from names known only at
    /// run time (for literals, use `table!(schema, name)`).
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] for an invalid schema or table name.
    pub fn in_schema(schema: impl AsRef<str>, name: impl AsRef<str>) -> Result<Table> {
        Ok(Table {
            schema: Some(Ident::new(schema)?),
            name: Ident::new(name)?,
            alias: None,
        })
    }

    /// The same table under an alias (`FROM "orders" AS "o"`), e.g. for a
    /// self-join; its columns are then qualified by the alias.
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] for an invalid alias.
    pub fn aliased(&self, alias: impl AsRef<str>) -> Result<Table> {
        Ok(Table {
            alias: Some(Ident::new(alias)?),
            ..self.clone()
        })
    }

    /// The same table under an already validated alias.
    #[must_use]
    pub fn with_alias(&self, alias: Ident) -> Table {
        Table {
            alias: Some(alias),
            ..self.clone()
        }
    }

    /// The table's name.
    #[must_use]
    pub fn name(&self) -> &Ident {
        &self.name
    }

    /// The schema, when qualified.
    #[must_use]
    pub fn schema(&self) -> Option<&Ident> {
        self.schema.as_ref()
    }

    /// The alias, when aliased.
    #[must_use]
    pub fn alias(&self) -> Option<&Ident> {
        self.alias.as_ref()
    }

    /// A typed column of this table, from a name known only at run time (for
    /// a literal, use [`column!`](crate::column)).
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] for an invalid column name.
    pub fn column<T: SqlType>(&self, name: impl AsRef<str>) -> Result<Column<T>> {
        Ok(self.col(Ident::new(name)?))
    }

    /// A typed column of this table from an already checked name: what
    /// [`column!`](crate::column) expands to, with [`ident!`](crate::ident).
    ///
    /// ```
    /// use pgpatterns::{ident, table, Ident};
    /// let orders = table!("orders");
    /// let id = orders.col::<i64>(ident!("id"));
    /// // A checked runtime name can be reused on several tables.
    /// let name = Ident::new(String::from("id"))?;
    /// assert_eq!(orders.col::<i64>(name), id);
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    #[must_use]
    pub fn col<T: SqlType>(&self, name: Ident) -> Column<T> {
        Column {
            table: self.clone(),
            name,
            _type: PhantomData,
        }
    }

    /// The qualified name, without alias: `"schema"."name"` (for `INSERT`,
    /// `UPDATE`, `DELETE` targets and DDL).
    #[must_use]
    pub fn table_name(&self) -> TableName {
        TableName(
            self.schema
                .as_ref()
                .map(|s| SchemaName(None, s.clone().into_iden())),
            self.name.clone().into_iden(),
        )
    }

    /// The reference for a `FROM`/`JOIN` clause, with the alias if any.
    #[must_use]
    pub fn table_ref(&self) -> TableRef {
        TableRef::Table(
            self.table_name(),
            self.alias.as_ref().map(|a| a.clone().into_iden()),
        )
    }

    /// What columns are qualified by: the alias, or the (schema-qualified) name.
    pub(crate) fn qualifier(&self) -> TableName {
        match &self.alias {
            Some(alias) => TableName(None, alias.clone().into_iden()),
            None => self.table_name(),
        }
    }

    /// `"table".*`.
    #[must_use]
    pub fn all_columns(&self) -> ColumnRef {
        ColumnRef::Asterisk(Some(self.qualifier()))
    }

    /// `schema.name` as plain text for messages (unquoted).
    #[must_use]
    pub fn display_name(&self) -> String {
        match &self.schema {
            Some(s) => format!("{s}.{}", self.name),
            None => self.name.as_str().to_owned(),
        }
    }
}

impl fmt::Debug for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Table({}", self.display_name())?;
        if let Some(a) = &self.alias {
            write!(f, " AS {a}")?;
        }
        f.write_str(")")
    }
}

/// `"table"."column"`, qualified by the table's alias when it has one.
pub(crate) fn qualified(table: &Table, name: &Ident) -> ColumnRef {
    ColumnRef::Column(ColumnName(
        Some(table.qualifier()),
        name.clone().into_iden(),
    ))
}

/// A column of a [`Table`] whose values are the Rust type `T`.
///
/// `T` fixes the PostgreSQL type values are bound as (see [`SqlType`]), and
/// two columns can only be related ([`Relation::new`]) when their `T` agrees.
///
/// ```
/// use pgpatterns::{column, table, BuiltQuery};
/// use sea_query::Query;
/// let orders = table!("orders");
/// let status = column!(orders, "status": String);
/// let q = Query::select()
///     .column(column!(orders, "id": i64).col_ref())
///     .from(orders.table_ref())
///     .and_where(status.is_in(["Pending", "Complete"]))
///     .to_owned();
/// let q = BuiltQuery::from(&q);
/// assert_eq!(
///     q.sql(),
///     r#"SELECT "orders"."id" FROM "orders" WHERE "orders"."status" = ANY(CAST($1 AS text[]))"#
/// );
/// ```
///
/// # `==` compares handles, `.eq(..)` builds SQL
///
/// As in sea-query, the comparison methods ([`eq`](Column::eq),
/// [`ne`](Column::ne), [`lt`](Column::lt), …) are inherent methods that build
/// an SQL expression with a bound value; they take precedence over
/// [`PartialEq::eq`] in method-call syntax. The `==` operator
/// ([`PartialEq`]) compares the handles themselves: two columns are equal
/// when they name the same column of the same table handle (schema, name and
/// alias), whether made at compile time ([`column!`](crate::column)) or at run
/// time. To compare two columns *in SQL*, use [`equals`](Column::equals).
///
/// ```
/// use pgpatterns::{column, table, BuiltQuery};
/// use sea_query::Query;
/// let orders = table!("orders");
/// let status = column!(orders, "status": String);
/// assert!(status == orders.column::<String>("status")?); // the same handle
/// let q = BuiltQuery::from(&Query::select().expr(status.eq("Pending")).to_owned());
/// assert_eq!(q.sql(), r#"SELECT "orders"."status" = CAST($1 AS text)"#); // SQL
/// # Ok::<(), pgpatterns::Error>(())
/// ```
pub struct Column<T> {
    table: Table,
    name: Ident,
    _type: PhantomData<fn() -> T>,
}

impl<T> Clone for Column<T> {
    fn clone(&self) -> Self {
        Column {
            table: self.table.clone(),
            name: self.name.clone(),
            _type: PhantomData,
        }
    }
}

impl<T> PartialEq for Column<T> {
    fn eq(&self, other: &Self) -> bool {
        self.table == other.table && self.name == other.name
    }
}

impl<T> Eq for Column<T> {}

impl<T: SqlType> fmt::Debug for Column<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Column({}.{}: {})",
            self.table.display_name(),
            self.name,
            T::SQL_TYPE
        )
    }
}

impl<T: SqlType> Column<T> {
    /// A column from a table handle and a name in the program text, for
    /// `const` items (in code, [`column!`](crate::column) reads better):
    ///
    /// ```
    /// use pgpatterns::{table, Column, Table};
    /// const ORDERS: Table = Table::from_static("orders");
    /// const ORDER_ID: Column<i64> = Column::from_static(ORDERS, "id");
    /// assert_eq!(ORDER_ID, ORDERS.column::<i64>("id")?);
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    ///
    /// ```compile_fail
    /// use pgpatterns::{Column, Table};
    /// const BAD: Column<i64> = Column::from_static(Table::from_static("t"), "a\0b");
    /// ```
    ///
    /// # Panics
    /// For an invalid name, as [`Ident::from_static`] does (at compile time
    /// in const evaluation).
    #[must_use]
    pub const fn from_static(table: Table, name: &'static str) -> Column<T> {
        Column {
            table,
            name: Ident::from_static(name),
            _type: PhantomData,
        }
    }

    /// The column's name.
    #[must_use]
    pub fn name(&self) -> &Ident {
        &self.name
    }

    /// The table the column belongs to.
    #[must_use]
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The PostgreSQL type values are bound as (`T::SQL_TYPE`).
    #[must_use]
    pub fn sql_type(&self) -> &'static str {
        T::SQL_TYPE
    }

    /// The same column on another handle of its table, e.g. an aliased one.
    #[must_use]
    pub fn of(&self, table: &Table) -> Column<T> {
        Column {
            table: table.clone(),
            name: self.name.clone(),
            _type: PhantomData,
        }
    }

    /// The qualified column reference (`"orders"."id"`).
    #[must_use]
    pub fn col_ref(&self) -> ColumnRef {
        qualified(&self.table, &self.name)
    }

    /// The bare column name as an identifier (for `INSERT` column lists,
    /// `SET` targets and DDL).
    #[must_use]
    pub fn iden(&self) -> DynIden {
        self.name.clone().into_iden()
    }

    /// The column as an expression.
    #[must_use]
    pub fn expr(&self) -> Expr {
        Expr::col(self.col_ref())
    }

    /// `col = $n`.
    #[must_use]
    pub fn eq(&self, value: impl Into<T>) -> Expr {
        self.expr().eq(value.into().param())
    }

    /// `col <> $n`. Like SQL, this is not true for a NULL column.
    #[must_use]
    pub fn ne(&self, value: impl Into<T>) -> Expr {
        self.expr().ne(value.into().param())
    }

    /// `col IS DISTINCT FROM $n`: true for NULL columns too.
    #[must_use]
    pub fn is_distinct_from(&self, value: impl Into<T>) -> Expr {
        crate::query::is_distinct_from(self.expr(), value.into().param())
    }

    /// `col < $n`.
    #[must_use]
    pub fn lt(&self, value: impl Into<T>) -> Expr {
        self.expr().lt(value.into().param())
    }

    /// `col <= $n`.
    #[must_use]
    pub fn lte(&self, value: impl Into<T>) -> Expr {
        self.expr().lte(value.into().param())
    }

    /// `col > $n`.
    #[must_use]
    pub fn gt(&self, value: impl Into<T>) -> Expr {
        self.expr().gt(value.into().param())
    }

    /// `col >= $n`.
    #[must_use]
    pub fn gte(&self, value: impl Into<T>) -> Expr {
        self.expr().gte(value.into().param())
    }

    /// `col = ANY($n::type[])`: one array parameter for the whole set. An
    /// empty set matches nothing.
    #[must_use]
    pub fn is_in<I, V>(&self, values: I) -> Expr
    where
        I: IntoIterator<Item = V>,
        V: Into<T>,
    {
        self.expr().eq(PgFunc::any(T::array_param(
            values.into_iter().map(Into::into),
        )))
    }

    /// `col >= now() - period`: the rows of the last `period` before the
    /// statement's transaction started. The period is a bound parameter
    /// (`$n * interval '1 microsecond'`); `now()` is evaluated by the server
    /// each time the statement runs, so a materialized view defined with
    /// it covers the `period` before each refresh. For `timestamptz`,
    /// `timestamp` (compared in the session's time zone) and `date`
    /// columns.
    ///
    /// ```
    /// use pgpatterns::{column, table, BuiltQuery};
    /// use pgpatterns::sea_query::Query;
    /// let orders = table!("orders");
    /// let created_at = column!(orders, "created_at": chrono::DateTime<chrono::Utc>);
    /// let q = BuiltQuery::new(
    ///     &Query::select()
    ///         .column(created_at.col_ref())
    ///         .from(orders.table_ref())
    ///         .and_where(created_at.within_last(chrono::Duration::days(30)))
    ///         .to_owned(),
    /// );
    /// assert_eq!(
    ///     q.sql(),
    ///     r#"SELECT "orders"."created_at" FROM "orders" WHERE "orders"."created_at" >= now() - CAST($1 AS int8) * interval '1 microsecond'"#
    /// );
    /// # Ok::<(), pgpatterns::Error>(())
    /// ```
    #[must_use]
    pub fn within_last(&self, period: chrono::Duration) -> Expr {
        let micros = period.num_microseconds().unwrap_or(i64::MAX);
        Expr::cust_with_exprs(
            "$1 >= now() - $2 * interval '1 microsecond'",
            [self.expr(), micros.param()],
        )
    }

    /// `col IS NULL`.
    #[must_use]
    pub fn is_null(&self) -> Expr {
        self.expr().is_null()
    }

    /// `col IS NOT NULL`.
    #[must_use]
    pub fn is_not_null(&self) -> Expr {
        self.expr().is_not_null()
    }

    /// `col = other` for two columns of the same type.
    #[must_use]
    pub fn equals(&self, other: &Column<T>) -> Expr {
        self.expr().eq(other.expr())
    }

    /// The column with its type erased (for lists of mixed columns).
    #[must_use]
    pub fn erase(&self) -> AnyColumn {
        AnyColumn {
            table: self.table.clone(),
            name: self.name.clone(),
            sql_type: T::SQL_TYPE,
        }
    }
}

/// A column whose Rust type has been erased; it remembers the SQL type.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AnyColumn {
    table: Table,
    name: Ident,
    sql_type: &'static str,
}

impl AnyColumn {
    /// `Ok` when the column belongs to `table`; else an
    /// [`Error::InvalidSpec`] for `field` naming both (`what` says which
    /// role the table plays: "history", "entity", …).
    pub(crate) fn check_on(&self, table: &Table, field: &'static str, what: &str) -> Result<()> {
        if self.table() == table {
            return Ok(());
        }
        Err(Error::spec(
            field,
            format!(
                "column {} belongs to {}, not to the {what} table {}",
                self.name(),
                self.table().display_name(),
                table.display_name()
            ),
        ))
    }

    /// `Ok` when the column's SQL type is `T`'s; else an
    /// [`Error::InvalidSpec`] for `field` (`value` names what was given).
    pub(crate) fn check_type<T: SqlType>(&self, field: &'static str, value: &str) -> Result<()> {
        if self.sql_type() == T::SQL_TYPE {
            return Ok(());
        }
        Err(Error::spec(
            field,
            format!(
                "the column {} is {}, the {value} is {}",
                self.name(),
                self.sql_type(),
                T::SQL_TYPE
            ),
        ))
    }

    /// The column's name.
    #[must_use]
    pub fn name(&self) -> &Ident {
        &self.name
    }

    /// The table the column belongs to.
    #[must_use]
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The PostgreSQL type of its values.
    #[must_use]
    pub fn sql_type(&self) -> &'static str {
        self.sql_type
    }

    /// The same column on another handle of its table.
    #[must_use]
    pub fn of(&self, table: &Table) -> AnyColumn {
        AnyColumn {
            table: table.clone(),
            ..self.clone()
        }
    }

    /// The qualified column reference.
    #[must_use]
    pub fn col_ref(&self) -> ColumnRef {
        qualified(&self.table, &self.name)
    }

    /// The bare column name as an identifier.
    #[must_use]
    pub fn iden(&self) -> DynIden {
        self.name.clone().into_iden()
    }

    /// The column as an expression.
    #[must_use]
    pub fn expr(&self) -> Expr {
        Expr::col(self.col_ref())
    }
}

impl fmt::Debug for AnyColumn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Column({}.{}: {})",
            self.table.display_name(),
            self.name,
            self.sql_type
        )
    }
}

impl<T: SqlType> From<&Column<T>> for AnyColumn {
    fn from(c: &Column<T>) -> Self {
        c.erase()
    }
}

/// A foreign key: columns of one table (`from`) that point at columns of
/// another (`to`). Read it in either direction with [`Relation::reversed`].
///
/// ```
/// use pgpatterns::{column, table, BuiltQuery, Relation};
/// use sea_query::{JoinType, Query};
/// let orders = table!("orders");
/// let statuses = table!("order_status");
/// let fk = Relation::new(
///     &column!(statuses, "order_id": i64),
///     &column!(orders, "id": i64),
/// );
/// assert_eq!(fk.from_table(), &statuses);
/// assert_eq!(fk.reversed().from_table(), &orders);
/// let q = Query::select()
///     .column(orders.all_columns())
///     .from(orders.table_ref())
///     .join(JoinType::InnerJoin, statuses.table_ref(), fk.on())
///     .to_owned();
/// assert_eq!(
///     BuiltQuery::from(&q).sql(),
///     r#"SELECT "orders".* FROM "orders" INNER JOIN "order_status" ON "order_status"."order_id" = "orders"."id""#
/// );
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Relation {
    from_table: Table,
    to_table: Table,
    pairs: Vec<(AnyColumn, AnyColumn)>,
}

impl Relation {
    /// A single-column foreign key `from → to`. The types must agree.
    #[must_use]
    pub fn new<T: SqlType>(from: &Column<T>, to: &Column<T>) -> Relation {
        Relation {
            from_table: from.table().clone(),
            to_table: to.table().clone(),
            pairs: vec![(from.erase(), to.erase())],
        }
    }

    /// Adds a column pair, for a composite key.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] when the columns do not belong to the relation's
    /// two tables.
    pub fn and<T: SqlType>(mut self, from: &Column<T>, to: &Column<T>) -> Result<Relation> {
        if from.table() != &self.from_table || to.table() != &self.to_table {
            return Err(Error::spec(
                "relation",
                format!(
                    "composite key columns must belong to {} and {}",
                    self.from_table.display_name(),
                    self.to_table.display_name()
                ),
            ));
        }
        self.pairs.push((from.erase(), to.erase()));
        Ok(self)
    }

    /// The same relation read the other way (`to → from`).
    #[must_use]
    pub fn reversed(&self) -> Relation {
        Relation {
            from_table: self.to_table.clone(),
            to_table: self.from_table.clone(),
            pairs: self
                .pairs
                .iter()
                .map(|(a, b)| (b.clone(), a.clone()))
                .collect(),
        }
    }

    /// The table the relation starts from.
    #[must_use]
    pub fn from_table(&self) -> &Table {
        &self.from_table
    }

    /// The table the relation points at.
    #[must_use]
    pub fn to_table(&self) -> &Table {
        &self.to_table
    }

    /// The `(from, to)` column pairs.
    #[must_use]
    pub fn pairs(&self) -> &[(AnyColumn, AnyColumn)] {
        &self.pairs
    }

    /// The same relation between other handles of the two tables (e.g. aliases).
    #[must_use]
    pub fn between(&self, from: &Table, to: &Table) -> Relation {
        Relation {
            from_table: from.clone(),
            to_table: to.clone(),
            pairs: self
                .pairs
                .iter()
                .map(|(a, b)| (a.of(from), b.of(to)))
                .collect(),
        }
    }

    /// The join condition: `from.a = to.a AND …`.
    #[must_use]
    pub fn on(&self) -> Condition {
        self.pairs
            .iter()
            .fold(Condition::all(), |c, (a, b)| c.add(a.expr().eq(b.expr())))
    }
}

impl fmt::Debug for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cols = |side: fn(&(AnyColumn, AnyColumn)) -> &AnyColumn| {
            self.pairs
                .iter()
                .map(|p| side(p).name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        write!(
            f,
            "Relation({}({}) -> {}({}))",
            self.from_table.display_name(),
            cols(|p| &p.0),
            self.to_table.display_name(),
            cols(|p| &p.1)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::BuiltQuery;
    use sea_query::Query;

    #[test]
    fn identifier_limits() {
        assert!(Ident::new("a".repeat(63)).is_ok());
        // 63 bytes but 21 characters: the limit is in bytes.
        assert!(Ident::new("é".repeat(32)).is_err());
        assert!(Ident::new("a\0b").is_err());
        assert!(matches!(
            Table::new(""),
            Err(Error::InvalidIdentifier { .. })
        ));
        let t = Table::new("t").unwrap();
        assert!(t.column::<i64>("").is_err());
    }

    fn hash_of<T: Hash>(value: &T) -> u64 {
        use std::collections::hash_map::DefaultHasher;
        let mut h = DefaultHasher::new();
        value.hash(&mut h);
        h.finish()
    }

    #[test]
    fn static_and_runtime_idents_are_the_same_name() {
        let runtime = Ident::new(String::from("status")).unwrap();
        let literal = crate::ident!("status");
        assert_eq!(literal, runtime);
        assert_eq!(hash_of(&literal), hash_of(&runtime));
        assert_eq!(hash_of(&literal), hash_of(&"status"));
        assert_eq!(
            format!("{literal:?} {literal}"),
            format!("{runtime:?} {runtime}")
        );
        // Ordered by text, whatever the representation.
        let mut names = [
            Ident::new("b").unwrap(),
            crate::ident!("c"),
            crate::ident!("a"),
            Ident::new("B").unwrap(),
        ];
        names.sort();
        let names: Vec<&str> = names.iter().map(Ident::as_str).collect();
        assert_eq!(names, ["B", "a", "b", "c"]);
        assert_ne!(crate::ident!("a"), Ident::new("A").unwrap());
        let set: std::collections::HashSet<Ident> =
            [literal.clone(), runtime.clone(), crate::ident!("other")].into();
        assert_eq!(set.len(), 2);
        assert!(set.contains(&runtime));
    }

    #[test]
    fn static_and_runtime_handles_are_equal() {
        const ORDERS: Table = Table::from_static("orders");
        const SALES_ORDERS: Table = Table::in_schema_static("sales", "orders");
        const ORDER_ID: Column<i64> = Column::from_static(ORDERS, "id");
        let runtime = Table::new(String::from("orders")).unwrap();
        assert_eq!(ORDERS, runtime);
        assert_eq!(crate::table!("orders"), runtime);
        assert_eq!(hash_of(&ORDERS), hash_of(&runtime));
        assert_eq!(
            crate::table!("sales", "orders"),
            Table::in_schema("sales", "orders").unwrap()
        );
        assert_eq!(SALES_ORDERS, crate::table!("sales", "orders"));
        assert_ne!(SALES_ORDERS, ORDERS);
        let id = runtime.column::<i64>("id").unwrap();
        assert_eq!(ORDER_ID, id);
        assert_eq!(crate::column!(ORDERS, "id": i64), id);
        assert_eq!(crate::column!(&runtime, "id": i64), id);
        assert_eq!(ORDERS.col::<i64>(Ident::new("id").unwrap()), id);
        assert_eq!(hash_of(&ORDER_ID.erase()), hash_of(&id.erase()));
        assert_eq!(format!("{ORDER_ID:?}"), format!("{id:?}"));
        // Same relation whichever way its handles were made.
        let statuses = Table::new("order_status").unwrap();
        let a = Relation::new(&statuses.column::<i64>("order_id").unwrap(), &id);
        let b = Relation::new(
            &crate::column!(crate::table!("order_status"), "order_id": i64),
            &ORDER_ID,
        );
        assert_eq!(a, b);
        assert_eq!(hash_of(&a), hash_of(&b));
    }

    #[test]
    fn limits_are_the_same_at_compile_time() {
        // Longest valid names, in bytes.
        const LONG: Ident =
            Ident::from_static("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
        const LONG_UTF8: Ident = Ident::from_static("ééééééééééééééééééééééééééééééé_");
        assert_eq!(LONG.as_str().len(), MAX_IDENT_BYTES);
        assert_eq!(LONG_UTF8.as_str().len(), MAX_IDENT_BYTES);
        assert!(Ident::new(LONG.as_str()).is_ok());
        // Called at run time, an invalid name panics rather than pass.
        for bad in ["", "a\0b", "ééééééééééééééééééééééééééééééé__"]
        {
            let name = std::hint::black_box(bad);
            assert!(Ident::new(name).is_err());
            assert!(std::panic::catch_unwind(|| Ident::from_static(name)).is_err());
            assert!(std::panic::catch_unwind(|| Table::from_static(name)).is_err());
            assert!(std::panic::catch_unwind(|| Table::in_schema_static(name, "t")).is_err());
        }
    }

    #[test]
    fn static_names_take_the_borrowed_path_only_when_plain() {
        assert!(matches!(
            crate::ident!("order_status").quoted(),
            Cow::Borrowed(_)
        ));
        assert!(matches!(crate::ident!("_x9").quoted(), Cow::Borrowed(_)));
        for awkward in [
            crate::ident!("Order \"Items\""),
            crate::ident!("a\"; DROP TABLE t; --"),
            crate::ident!("9lives"),
            crate::ident!("Tä"),
        ] {
            assert!(matches!(awkward.quoted(), Cow::Owned(_)), "{awkward:?}");
        }
        assert!(matches!(
            Ident::new("order_status").unwrap().quoted(),
            Cow::Owned(_)
        ));
    }

    #[test]
    fn awkward_static_names_are_quoted_like_runtime_ones() {
        let t = crate::table!("My Schema", "Tä\"ble; DROP");
        let c = crate::column!(t, "Col\"umn": String);
        let q = Query::select()
            .column(c.col_ref())
            .from(t.table_ref())
            .and_where(c.eq("x'; --"))
            .to_owned();
        assert_eq!(
            BuiltQuery::from(&q).sql(),
            r#"SELECT "My Schema"."Tä""ble; DROP"."Col""umn" FROM "My Schema"."Tä""ble; DROP" WHERE "My Schema"."Tä""ble; DROP"."Col""umn" = CAST($1 AS text)"#
        );
        let alias = t.with_alias(crate::ident!("o\"o"));
        let q = Query::select()
            .column(c.of(&alias).col_ref())
            .from(alias.table_ref())
            .to_owned();
        assert_eq!(
            BuiltQuery::from(&q).sql(),
            r#"SELECT "o""o"."Col""umn" FROM "My Schema"."Tä""ble; DROP" AS "o""o""#
        );
    }

    #[test]
    fn awkward_names_are_quoted() {
        let t = Table::in_schema("My Schema", "Tä\"ble; DROP").unwrap();
        let c = t.column::<String>("Col\"umn").unwrap();
        let q = Query::select()
            .column(c.col_ref())
            .from(t.table_ref())
            .and_where(c.eq("x'; --"))
            .to_owned();
        assert_eq!(
            BuiltQuery::from(&q).sql(),
            r#"SELECT "My Schema"."Tä""ble; DROP"."Col""umn" FROM "My Schema"."Tä""ble; DROP" WHERE "My Schema"."Tä""ble; DROP"."Col""umn" = CAST($1 AS text)"#
        );
    }

    #[test]
    fn aliased_tables_qualify_by_alias() {
        let t = Table::in_schema("s", "orders")
            .unwrap()
            .aliased("o")
            .unwrap();
        let id = t.column::<i64>("id").unwrap();
        let q = Query::select()
            .column(id.col_ref())
            .from(t.table_ref())
            .to_owned();
        assert_eq!(
            BuiltQuery::from(&q).sql(),
            r#"SELECT "o"."id" FROM "s"."orders" AS "o""#
        );
    }

    #[test]
    fn composite_relation_checks_tables() {
        let a = Table::new("a").unwrap();
        let b = Table::new("b").unwrap();
        let c = Table::new("c").unwrap();
        let rel = Relation::new(
            &a.column::<i64>("b_id").unwrap(),
            &b.column::<i64>("id").unwrap(),
        );
        let rel2 = rel
            .clone()
            .and(
                &a.column::<String>("b_kind").unwrap(),
                &b.column::<String>("kind").unwrap(),
            )
            .unwrap();
        assert_eq!(rel2.pairs().len(), 2);
        assert!(rel
            .and(
                &c.column::<i64>("x").unwrap(),
                &b.column::<i64>("y").unwrap()
            )
            .is_err());
        assert_eq!(
            format!("{:?}", rel2.reversed()),
            "Relation(b(id, kind) -> a(b_id, b_kind))"
        );
    }
}
