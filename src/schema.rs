//! Typed schema handles: identifiers, tables, columns and relations.
//!
//! Nothing here talks to the database: handles are declared in Rust and checked
//! when they are made (an empty name, a name over 63 bytes or one with a NUL is
//! an [`Error`]). Every name reaches SQL through sea-query's identifier quoting,
//! so names with quotes, spaces, upper case or unicode are safe.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use sea_query::extension::postgres::PgFunc;
use sea_query::{
    ColumnName, ColumnRef, Condition, DynIden, Expr, ExprTrait, Iden, IntoIden, SchemaName,
    TableName, TableRef,
};

use crate::types::SqlType;
use crate::{Error, Result};

/// PostgreSQL's identifier limit (`NAMEDATALEN - 1`), in bytes.
pub const MAX_IDENT_BYTES: usize = 63;

/// A validated SQL identifier: non-empty, at most 63 bytes, no NUL.
///
/// It is always written quoted (`"Order Items"`), with embedded `"` doubled,
/// so it never changes the statement around it.
///
/// ```
/// use pgpatterns::Ident;
/// assert_eq!(Ident::new("Order \"Items\"")?.as_str(), "Order \"Items\"");
/// assert!(Ident::new("").is_err());
/// assert!(Ident::new("x".repeat(64)).is_err());
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ident(Arc<str>);

impl Ident {
    /// Checks and wraps an identifier.
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] when `name` is empty, longer than 63 bytes
    /// (PostgreSQL would silently truncate it) or contains a NUL character.
    pub fn new(name: impl AsRef<str>) -> Result<Ident> {
        let name = name.as_ref();
        let reason = if name.is_empty() {
            Some("must not be empty")
        } else if name.len() > MAX_IDENT_BYTES {
            Some("longer than 63 bytes (PostgreSQL would truncate it)")
        } else if name.contains('\0') {
            Some("contains a NUL character")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidIdentifier {
                ident: name.to_owned(),
                reason,
            }),
            None => Ok(Ident(Arc::from(name))),
        }
    }

    /// An identifier written in this crate's own code (aliases such as
    /// `latest`): known valid, so infallible.
    pub(crate) fn fixed(name: &'static str) -> Ident {
        debug_assert!(!name.is_empty() && name.len() <= MAX_IDENT_BYTES && !name.contains('\0'));
        Ident(Arc::from(name))
    }

    /// The identifier as given (unquoted).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Iden for Ident {
    fn quoted(&self) -> Cow<'static, str> {
        // Owned: sea-query escapes embedded quotes of owned identifiers.
        Cow::Owned(self.0.to_string())
    }

    fn unquoted(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for Ident {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A table (or view), optionally schema-qualified and optionally aliased.
///
/// ```
/// use pgpatterns::{BuiltQuery, Table};
/// use sea_query::Query;
/// let orders = Table::in_schema("Sales", "orders")?;
/// let id = orders.column::<i64>("id")?;
/// let q = Query::select().column(id.col_ref()).from(orders.table_ref()).to_owned();
/// assert_eq!(BuiltQuery::from(&q).sql(), r#"SELECT "Sales"."orders"."id" FROM "Sales"."orders""#);
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Table {
    schema: Option<Ident>,
    name: Ident,
    alias: Option<Ident>,
}

impl Table {
    /// A table resolved through the connection's `search_path`.
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

    /// A table named in this crate's own code: known valid, so infallible.
    #[cfg_attr(not(feature = "seed"), allow(dead_code))]
    pub(crate) fn fixed(name: &'static str) -> Table {
        Table {
            schema: None,
            name: Ident::fixed(name),
            alias: None,
        }
    }

    /// A column named in this crate's own code: known valid, so infallible.
    #[cfg_attr(not(feature = "seed"), allow(dead_code))]
    pub(crate) fn fixed_column<T: SqlType>(&self, name: &'static str) -> Column<T> {
        Column {
            table: self.clone(),
            name: Ident::fixed(name),
            _type: PhantomData,
        }
    }

    /// A schema-qualified table, `"schema"."name"`.
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
    pub fn with_alias(&self, alias: Ident) -> Table {
        Table {
            alias: Some(alias),
            ..self.clone()
        }
    }

    /// The table's name.
    pub fn name(&self) -> &Ident {
        &self.name
    }

    /// The schema, when qualified.
    pub fn schema(&self) -> Option<&Ident> {
        self.schema.as_ref()
    }

    /// The alias, when aliased.
    pub fn alias(&self) -> Option<&Ident> {
        self.alias.as_ref()
    }

    /// A typed column of this table.
    ///
    /// # Errors
    /// [`Error::InvalidIdentifier`] for an invalid column name.
    pub fn column<T: SqlType>(&self, name: impl AsRef<str>) -> Result<Column<T>> {
        Ok(Column {
            table: self.clone(),
            name: Ident::new(name)?,
            _type: PhantomData,
        })
    }

    /// The qualified name, without alias: `"schema"."name"` (for `INSERT`,
    /// `UPDATE`, `DELETE` targets and DDL).
    pub fn table_name(&self) -> TableName {
        TableName(
            self.schema
                .as_ref()
                .map(|s| SchemaName(None, s.clone().into_iden())),
            self.name.clone().into_iden(),
        )
    }

    /// The reference for a `FROM`/`JOIN` clause, with the alias if any.
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
    pub fn all_columns(&self) -> ColumnRef {
        ColumnRef::Asterisk(Some(self.qualifier()))
    }

    /// `schema.name` as plain text for messages (unquoted).
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
/// use pgpatterns::{BuiltQuery, Table};
/// use sea_query::Query;
/// let orders = Table::new("orders")?;
/// let status = orders.column::<String>("status")?;
/// let q = Query::select()
///     .column(orders.column::<i64>("id")?.col_ref())
///     .from(orders.table_ref())
///     .and_where(status.is_in(["Pending", "Complete"]))
///     .to_owned();
/// let q = BuiltQuery::from(&q);
/// assert_eq!(
///     q.sql(),
///     r#"SELECT "orders"."id" FROM "orders" WHERE "orders"."status" = ANY(CAST($1 AS text[]))"#
/// );
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
    /// The column's name.
    pub fn name(&self) -> &Ident {
        &self.name
    }

    /// The table the column belongs to.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The PostgreSQL type values are bound as (`T::SQL_TYPE`).
    pub fn sql_type(&self) -> &'static str {
        T::SQL_TYPE
    }

    /// The same column on another handle of its table, e.g. an aliased one.
    pub fn of(&self, table: &Table) -> Column<T> {
        Column {
            table: table.clone(),
            name: self.name.clone(),
            _type: PhantomData,
        }
    }

    /// The qualified column reference (`"orders"."id"`).
    pub fn col_ref(&self) -> ColumnRef {
        qualified(&self.table, &self.name)
    }

    /// The bare column name as an identifier (for `INSERT` column lists,
    /// `SET` targets and DDL).
    pub fn iden(&self) -> DynIden {
        self.name.clone().into_iden()
    }

    /// The column as an expression.
    pub fn expr(&self) -> Expr {
        Expr::col(self.col_ref())
    }

    /// `col = $n`.
    pub fn eq(&self, value: impl Into<T>) -> Expr {
        self.expr().eq(value.into().param())
    }

    /// `col <> $n`. Like SQL, this is not true for a NULL column.
    pub fn ne(&self, value: impl Into<T>) -> Expr {
        self.expr().ne(value.into().param())
    }

    /// `col IS DISTINCT FROM $n`: true for NULL columns too.
    pub fn is_distinct_from(&self, value: impl Into<T>) -> Expr {
        crate::query::is_distinct_from(self.expr(), value.into().param())
    }

    /// `col < $n`.
    pub fn lt(&self, value: impl Into<T>) -> Expr {
        self.expr().lt(value.into().param())
    }

    /// `col <= $n`.
    pub fn lte(&self, value: impl Into<T>) -> Expr {
        self.expr().lte(value.into().param())
    }

    /// `col > $n`.
    pub fn gt(&self, value: impl Into<T>) -> Expr {
        self.expr().gt(value.into().param())
    }

    /// `col >= $n`.
    pub fn gte(&self, value: impl Into<T>) -> Expr {
        self.expr().gte(value.into().param())
    }

    /// `col = ANY($n::type[])`: one array parameter for the whole set. An
    /// empty set matches nothing.
    pub fn is_in<I, V>(&self, values: I) -> Expr
    where
        I: IntoIterator<Item = V>,
        V: Into<T>,
    {
        self.expr().eq(PgFunc::any(T::array_param(
            values.into_iter().map(Into::into),
        )))
    }

    /// `col IS NULL`.
    pub fn is_null(&self) -> Expr {
        self.expr().is_null()
    }

    /// `col IS NOT NULL`.
    pub fn is_not_null(&self) -> Expr {
        self.expr().is_not_null()
    }

    /// `col = other` for two columns of the same type.
    pub fn equals(&self, other: &Column<T>) -> Expr {
        self.expr().eq(other.expr())
    }

    /// The column with its type erased (for lists of mixed columns).
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
    pub fn name(&self) -> &Ident {
        &self.name
    }

    /// The table the column belongs to.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// The PostgreSQL type of its values.
    pub fn sql_type(&self) -> &'static str {
        self.sql_type
    }

    /// The same column on another handle of its table.
    pub fn of(&self, table: &Table) -> AnyColumn {
        AnyColumn {
            table: table.clone(),
            ..self.clone()
        }
    }

    /// The qualified column reference.
    pub fn col_ref(&self) -> ColumnRef {
        qualified(&self.table, &self.name)
    }

    /// The bare column name as an identifier.
    pub fn iden(&self) -> DynIden {
        self.name.clone().into_iden()
    }

    /// The column as an expression.
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
/// use pgpatterns::{BuiltQuery, Relation, Table};
/// use sea_query::{JoinType, Query};
/// let orders = Table::new("orders")?;
/// let statuses = Table::new("order_status")?;
/// let fk = Relation::new(
///     &statuses.column::<i64>("order_id")?,
///     &orders.column::<i64>("id")?,
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
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Relation {
    from_table: Table,
    to_table: Table,
    pairs: Vec<(AnyColumn, AnyColumn)>,
}

impl Relation {
    /// A single-column foreign key `from → to`. The types must agree.
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
    pub fn from_table(&self) -> &Table {
        &self.from_table
    }

    /// The table the relation points at.
    pub fn to_table(&self) -> &Table {
        &self.to_table
    }

    /// The `(from, to)` column pairs.
    pub fn pairs(&self) -> &[(AnyColumn, AnyColumn)] {
        &self.pairs
    }

    /// The same relation between other handles of the two tables (e.g. aliases).
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
