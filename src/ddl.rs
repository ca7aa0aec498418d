//! Small helpers for DDL that sea-query cannot express (trigger functions,
//! triggers): identifiers quoted by sea-query's own quoting, derived object
//! names that fit PostgreSQL's 63-byte limit, and dollar quoting that cannot
//! be broken out of.
//!
//! Nothing here ever sees a *value*: DDL text is made of quoted identifiers
//! and SQL rendered by sea-query from statements without bound values.

use sea_query::{IntoIden, PostgresQueryBuilder, QuotedBuilder};

use crate::schema::{Ident, Table, MAX_IDENT_BYTES};

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

/// An object name built from parts joined by `_`, cut to 63 bytes with a
/// stable hash suffix when longer, so two long names never collide through
/// PostgreSQL's silent truncation. `"` becomes `_`: sea-query writes index
/// names between quotes *without* escaping them, so a derived name must
/// never contain one.
pub(crate) fn derived_name(parts: &[&str]) -> Ident {
    let full = parts.join("_").replace('"', "_");
    let name = if full.len() <= MAX_IDENT_BYTES && !full.contains('\0') {
        full
    } else {
        let hash = format!("_{:08x}", fnv1a(full.as_bytes()) as u32);
        let mut cut = MAX_IDENT_BYTES - hash.len();
        while !full.is_char_boundary(cut) {
            cut -= 1;
        }
        let head: String = full[..cut].chars().filter(|&c| c != '\0').collect();
        head + &hash
    };
    // Non-empty, at most 63 bytes, NUL-free by construction.
    Ident::new(&name).unwrap_or_else(|_| Ident::fixed("pgpatterns_object"))
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

/// 64-bit FNV-1a: a tiny, stable hash for name suffixes.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            derived_name(&["orders", "status"]).as_str(),
            "orders_status"
        );
        // multi-byte characters are never split
        let c = derived_name(&["é".repeat(40).as_str(), "idx"]);
        assert!(c.as_str().len() <= MAX_IDENT_BYTES);
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
