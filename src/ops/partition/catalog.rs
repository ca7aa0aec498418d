//! What the catalog says about the table to partition. Every query binds
//! the table as a value (`to_regclass($1)` or its oid); nothing read here
//! is user text spliced into SQL except server-rendered definitions
//! (`pg_get_constraintdef`, `pg_get_indexdef`), which the plan reuses as
//! `pg_dump` does.

use crate::ddl::quote_table;
use crate::schema::{Ident, Table};
use crate::{BuiltQuery, ColumnIndex, Error, Executor, Result, RowRead, SqlType};

/// One column.
#[derive(Debug, Clone)]
pub(crate) struct ColumnInfo {
    pub name: Ident,
    pub type_name: String,
    pub not_null: bool,
    /// `a` (always) / `d` (by default) / empty.
    pub identity: String,
    /// `s` for a stored generated column, else empty.
    pub generated: String,
    /// A sequence this column owns that is not an identity's: `(schema, name)`.
    pub owned_sequence: Option<(Ident, Ident)>,
}

/// One constraint.
#[derive(Debug, Clone)]
pub(crate) struct ConstraintInfo {
    pub name: Ident,
    /// `p`, `u`, `f`, `c`, `x`, `t`.
    pub kind: String,
    pub definition: String,
    pub columns: Vec<Ident>,
    pub deferrable: bool,
}

/// One index not backing a constraint.
#[derive(Debug, Clone)]
pub(crate) struct IndexInfo {
    pub name: Ident,
    pub unique: bool,
    pub valid: bool,
    /// `pg_get_indexdef` after `CREATE [UNIQUE] INDEX name ON table USING
    /// am `, when it starts that way: `(keys…) [INCLUDE (…)] [WHERE …]`.
    pub tail: Option<String>,
    pub method: String,
    pub plain_keys: Option<Vec<Ident>>,
    pub has_predicate: bool,
    pub definition: String,
}

/// The table as the catalog has it.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    pub schema: Ident,
    pub name: Ident,
    pub relkind: String,
    pub columns: Vec<ColumnInfo>,
    pub constraints: Vec<ConstraintInfo>,
    pub indexes: Vec<IndexInfo>,
    /// `(constraint, referencing table)` of foreign keys pointing here.
    pub inbound: Vec<(String, String)>,
    pub views: Vec<String>,
    pub triggers: Vec<String>,
    /// `format_type` of the key's and the time's Rust types.
    pub key_type: String,
    pub time_type: String,
    /// The table is `UNLOGGED`, or references one with a foreign key.
    pub unlogged: bool,
}

impl Source {
    /// The table, schema-qualified.
    pub fn table(&self) -> Table {
        Table::in_schema(self.schema.as_str(), self.name.as_str())
            .unwrap_or_else(|_| Table::fixed("invalid_table"))
    }

    pub fn column(&self, name: &Ident) -> Option<&ColumnInfo> {
        self.columns.iter().find(|c| &c.name == name)
    }

    /// Columns an INSERT may write (not generated).
    pub fn insertable(&self) -> Vec<Ident> {
        self.columns
            .iter()
            .filter(|c| c.generated.is_empty())
            .map(|c| c.name.clone())
            .collect()
    }
}

const TABLE_SQL: &str = "\
SELECT c.oid::int8, n.nspname::text, c.relname::text, c.relkind::text, \
       coalesce(format_type(to_regtype($2::text), NULL), ''), \
       coalesce(format_type(to_regtype($3::text), NULL), ''), \
       (c.relpersistence = 'u' OR EXISTS (SELECT 1 FROM pg_catalog.pg_constraint f \
            JOIN pg_catalog.pg_class r ON r.oid = f.confrelid \
            WHERE f.conrelid = c.oid AND f.contype = 'f' AND r.relpersistence = 'u')) \
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
WHERE c.oid = to_regclass($1::text)";

const COLUMNS_SQL: &str = "\
SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, \
       a.attidentity::text, a.attgenerated::text, \
       (SELECT sn.nspname::text FROM pg_catalog.pg_depend d \
          JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
          JOIN pg_catalog.pg_namespace sn ON sn.oid = s.relnamespace \
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass \
          AND d.refobjid = a.attrelid AND d.refobjsubid = a.attnum AND d.deptype = 'a' LIMIT 1), \
       (SELECT s.relname::text FROM pg_catalog.pg_depend d \
          JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S' \
        WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass \
          AND d.refobjid = a.attrelid AND d.refobjsubid = a.attnum AND d.deptype = 'a' LIMIT 1) \
FROM pg_catalog.pg_attribute a \
WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum";

const CONSTRAINTS_SQL: &str = "\
SELECT con.conname::text, con.contype::text, pg_catalog.pg_get_constraintdef(con.oid), \
       coalesce(ARRAY(SELECT a.attname::text FROM unnest(con.conkey) WITH ORDINALITY AS k(n, i) \
                      JOIN pg_catalog.pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.n \
                      ORDER BY k.i), '{}'::text[]), \
       con.condeferrable \
FROM pg_catalog.pg_constraint con WHERE con.conrelid = $1::int8::oid ORDER BY con.conname";

const INDEXES_SQL: &str = "\
SELECT ic.relname::text, i.indisunique, i.indisvalid, am.amname::text, \
       pg_catalog.pg_get_indexdef(i.indexrelid), \
       format('CREATE %sINDEX %s ON %s.%s USING %s ', \
              CASE WHEN i.indisunique THEN 'UNIQUE ' ELSE '' END, quote_ident(ic.relname), \
              quote_ident(n.nspname), quote_ident(tc.relname), quote_ident(am.amname)), \
       i.indexprs IS NOT NULL OR 0 = ANY (i.indkey::int2[]), i.indpred IS NOT NULL, \
       coalesce(ARRAY(SELECT a.attname::text FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(n, o) \
                      JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.n \
                      WHERE k.o <= i.indnkeyatts ORDER BY k.o), '{}'::text[]), \
       i.indoption::int2[] \
FROM pg_catalog.pg_index i \
JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid \
JOIN pg_catalog.pg_class tc ON tc.oid = i.indrelid \
JOIN pg_catalog.pg_namespace n ON n.oid = tc.relnamespace \
JOIN pg_catalog.pg_am am ON am.oid = ic.relam \
WHERE i.indrelid = $1::int8::oid \
  AND NOT EXISTS (SELECT FROM pg_catalog.pg_constraint c WHERE c.conindid = i.indexrelid AND c.conrelid = i.indrelid) \
ORDER BY ic.relname";

const INBOUND_SQL: &str = "\
SELECT con.conname::text, con.conrelid::regclass::text FROM pg_catalog.pg_constraint con \
WHERE con.contype = 'f' AND con.confrelid = $1::int8::oid ORDER BY 2, 1";

const VIEWS_SQL: &str = "\
SELECT DISTINCT r.ev_class::regclass::text FROM pg_catalog.pg_depend d \
JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid \
WHERE d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.refclassid = 'pg_catalog.pg_class'::regclass \
  AND d.refobjid = $1::int8::oid AND r.ev_class <> $1::int8::oid ORDER BY 1";

const TRIGGERS_SQL: &str = "\
SELECT t.tgname::text FROM pg_catalog.pg_trigger t \
WHERE t.tgrelid = $1::int8::oid AND NOT t.tgisinternal ORDER BY 1";

fn ident(text: String) -> Result<Ident> {
    Ident::new(text)
}

/// Reads `table` (any relation), or `None` when it does not exist.
pub(crate) async fn read<E: Executor>(
    db: &E,
    table: &Table,
    key_type: &'static str,
    time_type: &'static str,
) -> Result<Option<Source>> {
    let q = BuiltQuery::fixed_with(
        TABLE_SQL,
        [
            quote_table(table).into_value(),
            key_type.to_owned().into_value(),
            time_type.to_owned().into_value(),
        ],
    );
    let Some(row) = db.optional_row(&q).await? else {
        return Ok(None);
    };
    let at = |i: usize| -> ColumnIndex<'static> { i.into() };
    let oid: i64 = row.try_get(at(0))?;
    let mut source = Source {
        schema: ident(row.try_get(at(1))?)?,
        name: ident(row.try_get(at(2))?)?,
        relkind: row.try_get(at(3))?,
        key_type: row.try_get(at(4))?,
        time_type: row.try_get(at(5))?,
        unlogged: row.try_get(at(6))?,
        columns: Vec::new(),
        constraints: Vec::new(),
        indexes: Vec::new(),
        inbound: Vec::new(),
        views: Vec::new(),
        triggers: Vec::new(),
    };
    let by_oid = |sql: &'static str| BuiltQuery::fixed_with(sql, [oid.into_value()]);
    for row in db.rows(&by_oid(COLUMNS_SQL)).await? {
        let seq_schema: Option<String> = row.try_get(at(5))?;
        let seq_name: Option<String> = row.try_get(at(6))?;
        let identity: String = row.try_get(at(3))?;
        let owned_sequence = match (seq_schema, seq_name) {
            (Some(s), Some(n)) if identity.is_empty() => Some((ident(s)?, ident(n)?)),
            _ => None,
        };
        source.columns.push(ColumnInfo {
            name: ident(row.try_get(at(0))?)?,
            type_name: row.try_get(at(1))?,
            not_null: row.try_get(at(2))?,
            identity,
            generated: row.try_get(at(4))?,
            owned_sequence,
        });
    }
    for row in db.rows(&by_oid(CONSTRAINTS_SQL)).await? {
        let columns: Vec<String> = row.try_get(at(3))?;
        source.constraints.push(ConstraintInfo {
            name: ident(row.try_get(at(0))?)?,
            kind: row.try_get(at(1))?,
            definition: row.try_get(at(2))?,
            columns: columns.into_iter().map(ident).collect::<Result<_>>()?,
            deferrable: row.try_get(at(4))?,
        });
    }
    for row in db.rows(&by_oid(INDEXES_SQL)).await? {
        let definition: String = row.try_get(at(4))?;
        let prefix: String = row.try_get(at(5))?;
        let expressions: bool = row.try_get(at(6))?;
        let keys: Vec<String> = row.try_get(at(8))?;
        let options: Vec<i16> = row.try_get(at(9))?;
        let tail = definition
            .strip_prefix(prefix.as_str())
            .map(str::to_owned)
            .filter(|t| t.starts_with('('));
        let plain = !expressions && options.iter().all(|&o| o == 0);
        source.indexes.push(IndexInfo {
            name: ident(row.try_get(at(0))?)?,
            unique: row.try_get(at(1))?,
            valid: row.try_get(at(2))?,
            method: row.try_get(at(3))?,
            tail,
            plain_keys: if plain {
                Some(keys.into_iter().map(ident).collect::<Result<_>>()?)
            } else {
                None
            },
            has_predicate: row.try_get(at(7))?,
            definition,
        });
    }
    for row in db.rows(&by_oid(INBOUND_SQL)).await? {
        source
            .inbound
            .push((row.try_get(at(0))?, row.try_get(at(1))?));
    }
    for row in db.rows(&by_oid(VIEWS_SQL)).await? {
        source.views.push(row.try_get(at(0))?);
    }
    for row in db.rows(&by_oid(TRIGGERS_SQL)).await? {
        source.triggers.push(row.try_get(at(0))?);
    }
    Ok(Some(source))
}

/// [`read`], with a missing table an error.
pub(crate) async fn read_existing<E: Executor>(
    db: &E,
    table: &Table,
    key_type: &'static str,
    time_type: &'static str,
) -> Result<Source> {
    read(db, table, key_type, time_type).await?.ok_or_else(|| {
        Error::spec(
            "table",
            format!("table {} does not exist", table.display_name()),
        )
    })
}
