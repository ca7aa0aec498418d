//! Small helpers for DDL that sea-query cannot express (trigger functions,
//! triggers): identifiers quoted by sea-query's own quoting, derived object
//! names that fit PostgreSQL's 63-byte limit, and dollar quoting that cannot
//! be broken out of.
//!
//! Nothing here ever sees a *value*: DDL text is made of quoted identifiers
//! and SQL rendered by sea-query from statements without bound values.

use sea_query::{IntoIden, PostgresQueryBuilder, QuotedBuilder};

use crate::schema::{Ident, Table, MAX_IDENT_BYTES};
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Executor, Result, RowRead, Transactional};

/// `"name"`, with embedded `"` doubled (sea-query's quoting).
pub(crate) fn quote(ident: &Ident) -> String {
    let mut out = String::with_capacity(ident.as_str().len() + 2);
    PostgresQueryBuilder.prepare_iden(&ident.clone().into_iden(), &mut out);
    out
}

/// An index name for sea-query's `Index::create().name(..)`, which writes
/// the name between quotes *without* escaping it: the embedded `"` are
/// doubled here, so the name cannot end the quoted identifier early.
pub(crate) fn index_name(ident: &Ident) -> String {
    ident.as_str().replace('"', "\"\"")
}

/// `"schema"."name"` or `"name"` (never the alias).
pub(crate) fn quote_table(table: &Table) -> String {
    match table.schema() {
        Some(schema) => format!("{}.{}", quote(schema), quote(table.name())),
        None => quote(table.name()),
    }
}

/// `"schema"."object"` for an object living next to `table` (a function).
pub(crate) fn quote_beside(table: &Table, object: &Ident) -> String {
    match table.schema() {
        Some(schema) => format!("{}.{}", quote(schema), quote(object)),
        None => quote(object),
    }
}

/// An object name derived from all of its parts (schema, table, columns, a
/// purpose): the parts joined by `_` for readability, cut so that the name
/// fits PostgreSQL's 63 bytes, then `_` and a 48-bit hash of an
/// **unambiguous** encoding of the parts (each part length-prefixed). Joining
/// alone is ambiguous — `orders_shipment` + `status` and `orders` +
/// `shipment_status` both read `orders_shipment_status` — but their hashes
/// differ, so two different objects never get one name by construction, and
/// PostgreSQL's silent truncation never merges two long names. (A hash
/// collision is astronomically unlikely; installers still refuse to replace
/// an object they did not create, so even one would be an error, never a
/// clobbered object.)
///
/// `"` becomes `_` in the readable part: sea-query writes index names
/// between quotes *without* escaping them, so a derived name must never
/// contain one. NUL bytes are dropped.
pub(crate) fn derived_name(parts: &[&str]) -> Ident {
    const SUFFIX_LEN: usize = 1 + 12;
    let mut encoded = Vec::with_capacity(parts.iter().map(|p| p.len() + 4).sum());
    for p in parts {
        // Identifiers are at most 63 bytes; u32 cannot overflow in practice,
        // and saturating keeps the encoding total anyway.
        encoded.extend_from_slice(&u32::try_from(p.len()).unwrap_or(u32::MAX).to_le_bytes());
        encoded.extend_from_slice(p.as_bytes());
    }
    let suffix = format!("_{:012x}", fnv1a(FNV_OFFSET, &encoded) & 0xffff_ffff_ffff);
    let readable: String = parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("_")
        .chars()
        .filter(|&c| c != '\0')
        .map(|c| if c == '"' { '_' } else { c })
        .collect();
    let mut cut = readable.len().min(MAX_IDENT_BYTES - SUFFIX_LEN);
    while !readable.is_char_boundary(cut) {
        cut -= 1;
    }
    let name = format!("{}{suffix}", &readable[..cut]);
    // Non-empty, at most 63 bytes, NUL-free by construction.
    Ident::new(&name).unwrap_or_else(|_| Ident::fixed("pgpatterns_object"))
}

/// A PostgreSQL string constant for identifier text embedded in generated
/// DDL (comments, catalog guards): `E'…'` with `\` and `'` escaped, so it
/// reads the same whatever `standard_conforming_strings` says. Only for
/// names (which cannot hold NUL), never for values: values are bound.
pub(crate) fn string_literal(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 3);
    out.push_str("E'");
    for c in text.chars().filter(|&c| c != '\0') {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("''"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// An internal alias or object name that equals none of `taken`: `base`,
/// or `base` with the smallest numeric suffix that is free. Generated SQL
/// uses it for its own aliases (transition tables, subqueries), so a user
/// table or column that happens to carry the same name cannot be shadowed
/// or captured.
pub(crate) fn free_name<'a>(
    base: &str,
    taken: impl IntoIterator<Item = &'a str> + Clone,
) -> String {
    let mut n = 0u32;
    loop {
        let candidate = if n == 0 {
            base.to_owned()
        } else {
            format!("{base}{n}")
        };
        if !taken.clone().into_iter().any(|t| t == candidate) {
            return candidate;
        }
        n += 1;
    }
}

/// A dollar-quoted string constant (`$pgp$ … $pgp$`) whose tag does not
/// occur in `body`, so no identifier inside can end it early.
pub(crate) fn dollar_quote(body: &str) -> String {
    let mut n = 0u32;
    loop {
        let tag = if n == 0 {
            "$pgp$".to_owned()
        } else {
            format!("$pgp{n}$")
        };
        if !body.contains(&tag) {
            return format!("{tag}{body}{tag}");
        }
        n += 1;
    }
}

/// FNV-1a's 64-bit offset basis: the state before any byte.
pub(crate) const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

/// 64-bit FNV-1a of `bytes`, continuing from `state` ([`FNV_OFFSET`] for a
/// fresh hash): a tiny hash, fixed across platforms and releases, for name
/// suffixes and cursor checksums.
pub(crate) fn fnv1a(state: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(state, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The suffixes of the four statement-level triggers a maintained object
/// puts on a table: `INSERT`, `UPDATE`, `DELETE`, `TRUNCATE`.
pub(crate) const TRIGGER_SUFFIXES: [&str; 4] = ["ins", "upd", "del", "trunc"];

/// The four `CREATE OR REPLACE TRIGGER … FOR EACH STATEMENT` statements on
/// `table` (already quoted), one per event, with transition tables named
/// `new_rows` / `old_rows` where the event has them; `name` gives each
/// trigger's name from its suffix ([`TRIGGER_SUFFIXES`]), `call` is what
/// `EXECUTE FUNCTION` runs (the function and its arguments).
pub(crate) fn statement_triggers(
    table: &str,
    new_rows: &Ident,
    old_rows: &Ident,
    name: impl Fn(&str) -> Ident,
    call: &str,
) -> [BuiltQuery; 4] {
    let (new_rows, old_rows) = (quote(new_rows), quote(old_rows));
    let events: [(&str, String); 4] = [
        ("INSERT", format!(" REFERENCING NEW TABLE AS {new_rows}")),
        (
            "UPDATE",
            format!(" REFERENCING OLD TABLE AS {old_rows} NEW TABLE AS {new_rows}"),
        ),
        ("DELETE", format!(" REFERENCING OLD TABLE AS {old_rows}")),
        ("TRUNCATE", String::new()),
    ];
    let mut i = 0;
    events.map(|(event, referencing)| {
        let suffix = TRIGGER_SUFFIXES[i];
        i += 1;
        BuiltQuery::generated(format!(
            "CREATE OR REPLACE TRIGGER {} AFTER {event} ON {table}{referencing} \
             FOR EACH STATEMENT EXECUTE FUNCTION {call}",
            quote(&name(suffix)),
        ))
    })
}

/// The objects a trigger-maintained feature (a denormalized column, a
/// tracked column, a summary) creates under derived names, and the comments
/// ("markers") by which pgpatterns knows its own. One description gives
/// both halves of the rule that nothing is replaced or dropped that
/// pgpatterns did not create for this very feature:
/// [`guard`](Self::guard), a `DO` block run first in the DDL's transaction,
/// and [`check`](Self::check), the same test as one catalog query before
/// anything is sent, refusing with [`Error::ObjectConflict`].
pub(crate) struct Owned {
    /// What the objects are kept for, in messages: "this column", …
    pub purpose: &'static str,
    /// The trigger function's signature (`"schema"."name"(args)`) and its
    /// marker.
    pub function: String,
    pub function_marker: String,
    /// How to pick another name (in the function conflict's reason).
    pub rename: &'static str,
    /// The tables (quoted) the triggers are on, and the trigger names (the
    /// same on every table).
    pub trigger_tables: Vec<String>,
    pub triggers: Vec<Ident>,
    /// Other relations (quoted), each with its marker: a stamp table, a
    /// summary table.
    pub relations: Vec<(String, String)>,
    /// An index (quoted) that may only exist on the relation (quoted) next
    /// to it.
    pub index_on: Option<(String, String)>,
}

impl Owned {
    /// The `DO` block that stops the transaction (SQLSTATE `42710`,
    /// `duplicate_object`) when a name is taken by an object pgpatterns did
    /// not create for this purpose.
    pub(crate) fn guard(&self) -> BuiltQuery {
        let list = |items: Vec<String>| items.join(", ");
        let triggers = list(
            self.triggers
                .iter()
                .map(|t| string_literal(t.as_str()))
                .collect(),
        );
        let tables = list(
            self.trigger_tables
                .iter()
                .map(|t| format!("to_regclass({})", string_literal(t)))
                .collect(),
        );
        let purpose = self.purpose.replace('\'', "''");
        let mut checks = vec![format!(
            "  IF pgp_fn IS NOT NULL
     AND obj_description(pgp_fn, 'pg_proc') IS DISTINCT FROM {marker} THEN
    RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
      MESSAGE = format('function %s already exists and was not created by pgpatterns for {purpose}', pgp_fn::regprocedure);
  END IF;",
            marker = string_literal(&self.function_marker),
        )];
        for (name, marker) in &self.relations {
            checks.push(format!(
                "  IF to_regclass({name}) IS NOT NULL
     AND obj_description(to_regclass({name}), 'pg_class') IS DISTINCT FROM {marker} THEN
    RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
      MESSAGE = format('relation %s already exists and was not created by pgpatterns for {purpose}', to_regclass({name}));
  END IF;",
                name = string_literal(name),
                marker = string_literal(marker),
            ));
        }
        if let Some((index, on)) = &self.index_on {
            checks.push(format!(
                "  IF to_regclass({index}) IS NOT NULL AND NOT EXISTS (
       SELECT 1 FROM pg_catalog.pg_index i
       WHERE i.indexrelid = to_regclass({index}) AND i.indrelid = to_regclass({on})) THEN
    RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
      MESSAGE = format('relation %s already exists and is not the index pgpatterns makes for {purpose}', to_regclass({index}));
  END IF;",
                index = string_literal(index),
                on = string_literal(on),
            ));
        }
        checks.push(format!(
            "  IF EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t
             WHERE t.tgrelid = ANY (ARRAY[{tables}]::oid[])
               AND t.tgname = ANY (ARRAY[{triggers}]::text[])
               AND t.tgfoid IS DISTINCT FROM pgp_fn) THEN
    RAISE EXCEPTION USING ERRCODE = 'duplicate_object',
      MESSAGE = 'a trigger named like pgpatterns'' triggers for {purpose} already exists and runs another function';
  END IF;"
        ));
        let body = format!(
            "\nDECLARE\n  pgp_fn oid := to_regprocedure({sig});\nBEGIN\n{}\nEND\n",
            checks.join("\n"),
            sig = string_literal(&self.function),
        );
        BuiltQuery::generated(format!("DO {}", dollar_quote(&body)))
    }

    /// The guard's test as one catalog query, every name bound: the first
    /// object in the way as [`Error::ObjectConflict`].
    pub(crate) async fn check<E: Executor>(&self, db: &E) -> Result<()> {
        let (relations, markers): (Vec<String>, Vec<String>) =
            self.relations.iter().cloned().unzip();
        let (index, on) = match &self.index_on {
            Some((i, o)) => (Some(i.clone()), Some(o.clone())),
            None => (None, None),
        };
        let q = BuiltQuery::fixed_with(
            "SELECT to_regprocedure($1::text)::text, \
                    obj_description(to_regprocedure($1::text), 'pg_proc'), \
                    ARRAY(SELECT format('%s on %s', t.tgname, t.tgrelid::regclass) \
                          FROM pg_catalog.pg_trigger t \
                          WHERE t.tgrelid IN (SELECT to_regclass(x) FROM unnest($2::text[]) AS x) \
                            AND t.tgname = ANY ($3::text[]) \
                            AND t.tgfoid IS DISTINCT FROM to_regprocedure($1::text) \
                          ORDER BY 1), \
                    taken.name, taken.comment, \
                    CASE WHEN to_regclass($6::text) IS NOT NULL AND NOT EXISTS ( \
                           SELECT 1 FROM pg_catalog.pg_index i \
                           WHERE i.indexrelid = to_regclass($6::text) AND i.indrelid = to_regclass($7::text)) \
                         THEN to_regclass($6::text)::text END \
             FROM (SELECT) AS one \
             LEFT JOIN LATERAL ( \
                    SELECT c.rel::text AS name, obj_description(c.rel, 'pg_class') AS comment \
                    FROM unnest($4::text[], $5::text[]) WITH ORDINALITY AS r(name, marker, ord) \
                    CROSS JOIN LATERAL (SELECT to_regclass(r.name) AS rel) AS c \
                    WHERE c.rel IS NOT NULL \
                      AND obj_description(c.rel, 'pg_class') IS DISTINCT FROM r.marker \
                    ORDER BY r.ord LIMIT 1) AS taken ON true",
            [
                self.function.clone().into_value(),
                String::array_value(self.trigger_tables.clone()),
                String::array_value(self.triggers.iter().map(|t| t.as_str().to_owned())),
                String::array_value(relations),
                String::array_value(markers),
                sea_query::Value::String(index),
                sea_query::Value::String(on),
            ],
        );
        let row = db.one_row(&q).await?;
        let function: Option<String> = row.try_get(0usize.into())?;
        let comment: Option<String> = row.try_get(1usize.into())?;
        let foreign: Vec<String> = row.try_get(2usize.into())?;
        // The first relation of the names that is not ours, and its comment.
        let taken: Option<String> = row.try_get(3usize.into())?;
        let taken_comment: Option<String> = row.try_get(4usize.into())?;
        let index: Option<String> = row.try_get(5usize.into())?;
        let purpose = self.purpose;
        if let Some(function) = function {
            if comment.as_deref() != Some(self.function_marker.as_str()) {
                return Err(Error::ObjectConflict {
                    kind: "function",
                    name: function,
                    reason: format!(
                        "it was not created by pgpatterns for {purpose} (its comment is \
                         {comment:?}); uninstall with the definition it was made for, or \
                         choose another name with {}",
                        self.rename
                    ),
                });
            }
        }
        if let Some(name) = taken {
            return Err(Error::ObjectConflict {
                kind: "table",
                name,
                reason: format!(
                    "it was not created by pgpatterns for {purpose} (its comment is \
                     {taken_comment:?}); choose another name with {}",
                    self.rename
                ),
            });
        }
        if let Some(name) = index {
            return Err(Error::ObjectConflict {
                kind: "index",
                name,
                reason: format!("it is not the index pgpatterns makes for {purpose}"),
            });
        }
        if let Some(name) = foreign.into_iter().next() {
            return Err(Error::ObjectConflict {
                kind: "trigger",
                name,
                reason: format!("it runs another function than {}", self.function),
            });
        }
        Ok(())
    }

    /// Checks the names, then runs `statements` (which start with the
    /// guard) in one transaction.
    pub(crate) async fn run<E: Transactional>(
        &self,
        db: &mut E,
        statements: &[BuiltQuery],
    ) -> Result<()> {
        self.check(&*db).await?;
        db.run_in_transaction(statements).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_owned_guard_checks_every_object_it_names() {
        let owned = Owned {
            purpose: "this summary",
            function: r#""s"."f"()"#.to_owned(),
            function_marker: "pgpatterns: f's marker".to_owned(),
            rename: "Summary::named",
            trigger_tables: vec![r#""s"."base""#.to_owned()],
            triggers: vec![Ident::new("t_ins").unwrap()],
            relations: vec![(r#""s"."sum""#.to_owned(), "pgpatterns: table".to_owned())],
            index_on: Some((r#""s"."ix""#.to_owned(), r#""s"."sum""#.to_owned())),
        };
        let sql = owned.guard().sql().to_owned();
        assert!(sql.starts_with("DO $"), "{sql}");
        // every name and marker as a string literal, quotes doubled
        for part in [
            r#"to_regprocedure(E'"s"."f"()')"#,
            "E'pgpatterns: f''s marker'",
            r#"to_regclass(E'"s"."sum"')"#,
            "E'pgpatterns: table'",
            r#"i.indexrelid = to_regclass(E'"s"."ix"') AND i.indrelid = to_regclass(E'"s"."sum"')"#,
            r#"ARRAY[to_regclass(E'"s"."base"')]::oid[]"#,
            "ARRAY[E't_ins']::text[]",
        ] {
            assert!(sql.contains(part), "{part} in {sql}");
        }
        assert_eq!(sql.matches("ERRCODE = 'duplicate_object'").count(), 4);
    }

    #[test]
    fn quoting_doubles_quotes() {
        let t = Table::in_schema("my \"schema\"", "Orders").unwrap();
        assert_eq!(quote_table(&t), r#""my ""schema"""."Orders""#);
    }

    #[test]
    fn long_names_are_cut_with_a_hash() {
        let a = derived_name(&["x".repeat(60).as_str(), "one"]);
        let b = derived_name(&["x".repeat(60).as_str(), "two"]);
        assert!(a.as_str().len() <= MAX_IDENT_BYTES);
        assert_ne!(a, b);
        assert!(derived_name(&["orders", "status"])
            .as_str()
            .starts_with("orders_status_"));
        // multi-byte characters are never split
        let c = derived_name(&["é".repeat(40).as_str(), "idx"]);
        assert!(c.as_str().len() <= MAX_IDENT_BYTES);
        assert_eq!(derived_name(&["a", "b"]), derived_name(&["a", "b"]));
    }

    #[test]
    fn names_that_join_alike_differ() {
        let a = derived_name(&["pgp_latest", "", "orders", "shipment_status"]);
        let b = derived_name(&["pgp_latest", "", "orders_shipment", "status"]);
        assert_ne!(a, b);
        let a = derived_name(&["h_x", "y", "t", "latest"]);
        let b = derived_name(&["h", "x_y", "t", "latest"]);
        assert_ne!(a, b);
        // an empty part is a part: ("", "a") is not ("a", "")
        assert_ne!(derived_name(&["", "a"]), derived_name(&["a", ""]));
        // quotes never reach the name, but still tell names apart
        let q = derived_name(&["a\"b"]);
        assert!(!q.as_str().contains('"'));
        assert_ne!(q, derived_name(&["a_b"]));
    }

    #[test]
    fn string_literals_escape_quotes_and_backslashes() {
        assert_eq!(string_literal(r"it's a \ x"), r"E'it''s a \\ x'");
    }

    #[test]
    fn free_names_avoid_taken_ones() {
        assert_eq!(free_name("pgp_new_rows", ["orders"]), "pgp_new_rows");
        assert_eq!(
            free_name("pgp_new_rows", ["pgp_new_rows", "pgp_new_rows1"]),
            "pgp_new_rows2"
        );
    }

    #[test]
    fn index_names_are_escaped() {
        let name = Ident::new("x\" ON t; DROP TABLE users; --").unwrap();
        let q = crate::BuiltQuery::schema(
            sea_query::Index::create()
                .name(index_name(&name))
                .table(Table::new("t").unwrap().table_name())
                .col(sea_query::Alias::new("c")),
        );
        assert_eq!(
            q.sql(),
            r#"CREATE INDEX "x"" ON t; DROP TABLE users; --" ON "t" ("c")"#
        );
    }

    #[test]
    fn dollar_tag_avoids_the_body() {
        assert_eq!(dollar_quote("x"), "$pgp$x$pgp$");
        assert_eq!(dollar_quote("a$pgp$b"), "$pgp1$a$pgp$b$pgp1$");
    }
}
