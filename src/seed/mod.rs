//! Realistic demo data shaped like the problems this crate answers, generated
//! server-side (`generate_series`, no row-by-row round trips) for examples,
//! benchmarks and tests.
//!
//! Four datasets, one builder each, all used the same way:
//!
//! | builder | tables (default names) | for |
//! |---|---|---|
//! | [`OrdersSeed`](orders::OrdersSeed) | `orders`, `order_status` | latest-status filters |
//! | [`MovesSeed`](moves::MovesSeed) | `moves`, `move_orders`, `service_members`, `mto_shipments`, `addresses`, `mto_service_items`, `payment_requests` | `since` filters |
//! | [`SalesSeed`](sales::SalesSeed) | `sale` (the 13-row sample), `sale_large` (generated) | `GROUPING SETS` reports |
//! | [`ShopSeed`](shop::ShopSeed) | `shop_users`, `shop_orders` | top-N reports |
//!
//! - `XSeed::new(size)` and options (`batch_size`, `now`, `logged`,
//!   `replace`, …) in any order;
//! - `.run(&db, progress).await` (or `.run_blocking(&mut db, progress)` on a
//!   blocking client) creates and fills the tables and returns a report;
//! - `.tables()` returns typed handles on the very tables that `run` creates,
//!   for building specs.
//!
//! The default names of the four datasets differ, so all four can live in
//! one schema. `.prefix("demo_")` prepends a prefix to every name and
//! `.in_schema("demo")` creates the tables in that schema (created if
//! missing) instead of the connection's current one (the first schema on
//! `search_path`); the handles from `.tables()` follow both. Names are
//! checked when set ([`Error::InvalidIdentifier`], e.g. a prefix that makes a
//! name longer than PostgreSQL's 63 bytes); sizes when run
//! ([`Error::InvalidSpec`]); both before any SQL is sent.
//!
//! Tables are `UNLOGGED` unless `.logged(true)` (faster to fill; demo data
//! need not survive a crash). A run fails if a table exists already, unless
//! `.replace(true)` drops the dataset's tables first. Progress is reported
//! through a callback taking a [`Progress`](crate::Progress): one stage per
//! kind of row loaded (counting those rows), then `"finish"` (counting the
//! steps: keys, indexes, `VACUUM ANALYZE`).
//!
//! ```no_run
//! # #[cfg(feature = "tokio-postgres")]
//! # async fn demo(client: tokio_postgres::Client) -> pgpatterns::Result<()> {
//! use pgpatterns::seed::{moves::MovesSeed, orders::OrdersSeed, sales::SalesSeed, shop::ShopSeed};
//! let orders = OrdersSeed::new(100_000);
//! orders.run(&client, |_| {}).await?;
//! MovesSeed::new(10_000).run(&client, |_| {}).await?;
//! SalesSeed::sample().run(&client, |_| {}).await?;
//! ShopSeed::new(50_000).run(&client, |_| {}).await?;
//! // A second orders dataset beside the first.
//! let other = OrdersSeed::new(1_000).prefix("small_")?;
//! other.run(&client, |_| {}).await?;
//! let complete = other.tables().latest().status_eq("Complete").count(&client).await?;
//! # Ok(()) }
//! ```

pub mod moves;
pub mod orders;
pub mod sales;
pub mod shop;

use crate::ddl::{quote, quote_table};
use crate::schema::{Ident, Table};
use crate::{Error, Result};

/// The most rows one seeder run generates: orders (times their drafts),
/// moves, sales, users or shop orders. Larger sizes are refused with
/// [`Error::InvalidSpec`] before anything is sent.
pub const MAX_SEED_ROWS: i64 = 1_000_000_000;

/// Where a seeder's tables (and other named objects) go: an optional schema
/// and a name prefix, checked when set. `objects[i]` is the default name
/// `bases[i]` with the prefix, qualified by the schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Names {
    bases: &'static [&'static str],
    schema: Option<Ident>,
    prefix: String,
    objects: Vec<Table>,
}

impl Names {
    /// The default names, unqualified.
    pub(crate) fn new(bases: &'static [&'static str]) -> Names {
        Names {
            bases,
            schema: None,
            prefix: String::new(),
            objects: bases.iter().map(|b| Table::fixed(b)).collect(),
        }
    }

    fn build(&self, schema: Option<Ident>, prefix: String) -> Result<Names> {
        let objects = self
            .bases
            .iter()
            .map(|base| {
                let name = format!("{prefix}{base}");
                match &schema {
                    Some(s) => Table::in_schema(s.as_str(), name),
                    None => Table::new(name),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Names {
            bases: self.bases,
            schema,
            prefix,
            objects,
        })
    }

    /// The same names with `prefix` prepended to every default name
    /// (replacing any earlier prefix).
    pub(crate) fn with_prefix(&self, prefix: &str) -> Result<Names> {
        self.build(self.schema.clone(), prefix.to_owned())
    }

    /// The same names, qualified by `schema`.
    pub(crate) fn with_schema(&self, schema: &str) -> Result<Names> {
        self.build(Some(Ident::new(schema)?), self.prefix.clone())
    }

    /// The handle of object `i` (a table).
    pub(crate) fn table(&self, i: usize) -> Table {
        self.objects[i].clone()
    }

    /// `CREATE SCHEMA IF NOT EXISTS`, when a schema is set.
    pub(crate) fn create_schema(&self) -> Option<String> {
        self.schema
            .as_ref()
            .map(|s| format!("CREATE SCHEMA IF NOT EXISTS {}", quote(s)))
    }

    /// `DROP TABLE IF EXISTS` the objects `tables` (in that order).
    pub(crate) fn drop_tables(&self, tables: &[usize]) -> String {
        let list: Vec<String> = tables
            .iter()
            .map(|&i| quote_table(&self.objects[i]))
            .collect();
        format!("DROP TABLE IF EXISTS {}", list.join(", "))
    }

    /// [`render`](Self::render) for `CREATE TABLE` templates: `CREATE
    /// UNLOGGED TABLE` unless `logged`.
    pub(crate) fn create(&self, template: &'static str, logged: bool) -> String {
        if logged {
            self.render(template)
        } else {
            self.render(&template.replace("CREATE TABLE", "CREATE UNLOGGED TABLE"))
        }
    }

    /// `template` (this crate's own SQL text) with each `{base}` replaced by
    /// that object's quoted, qualified name and each `{@base}` by its quoted
    /// name alone (an index name in `CREATE INDEX`), in one pass: a replaced
    /// name is never scanned again, whatever it contains.
    pub(crate) fn render(&self, template: &str) -> String {
        let mut out = String::with_capacity(template.len() + 64);
        let mut rest: &str = template;
        while let Some(open) = rest.find('{') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                rest = &rest[open..];
                break;
            };
            let key = &after[..close];
            let (bare, base) = match key.strip_prefix('@') {
                Some(base) => (true, base),
                None => (false, key),
            };
            match self.bases.iter().position(|b| *b == base) {
                Some(i) if bare => out.push_str(&quote(self.objects[i].name())),
                Some(i) => out.push_str(&quote_table(&self.objects[i])),
                None => {
                    debug_assert!(false, "unknown name {key:?} in a seeder template");
                    out.push_str(&rest[open..open + close + 2]);
                }
            }
            rest = &after[close + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// `Ok` when `min <= value <= MAX_SEED_ROWS`.
pub(crate) fn check_rows(field: &'static str, value: i64, min: i64) -> Result<()> {
    Error::at_least(field, value, min)?;
    if value > MAX_SEED_ROWS {
        return Err(Error::spec(
            field,
            format!("at most {MAX_SEED_ROWS} rows per seeder run, got {value}"),
        ));
    }
    Ok(())
}

/// The inclusive ranges `(first, last)` covering `1..=total`, `batch` at a
/// time (`batch >= 1`), without overflow whatever the sizes.
pub(crate) fn ranges(total: i64, batch: i64) -> impl Iterator<Item = (i64, i64)> {
    let step = batch.max(1) - 1;
    let mut first = 1i64;
    let mut done = total < 1;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let last = first.saturating_add(step).min(total);
        let out = (first, last);
        if last >= total {
            done = true;
        } else {
            first = last + 1;
        }
        Some(out)
    })
}

/// The options every seeder shares, with one body and one doc each.
macro_rules! common_options {
    ($seed:ident) => {
        impl $seed {
            /// Logged (crash-safe) tables instead of unlogged ones (default
            /// `false`); slower to load.
            #[must_use]
            pub fn logged(mut self, logged: bool) -> $seed {
                self.logged = logged;
                self
            }

            /// Whether to drop this dataset's tables first if they exist
            /// (default `false`: the run then fails with the database's
            /// "already exists").
            #[must_use]
            pub fn replace(mut self, replace: bool) -> $seed {
                self.replace = replace;
                self
            }

            /// Creates the tables in `schema` (created if missing) instead of
            /// the connection's current schema; the
            /// [`tables`](Self::tables) are then schema-qualified.
            ///
            /// # Errors
            /// [`Error::InvalidIdentifier`](crate::Error::InvalidIdentifier)
            /// for an invalid schema name.
            pub fn in_schema(mut self, schema: impl AsRef<str>) -> crate::Result<$seed> {
                self.names = self.names.with_schema(schema.as_ref())?;
                Ok(self)
            }
        }
    };
}
pub(crate) use common_options;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_every_row_once_without_overflow() {
        assert_eq!(ranges(5, 2).collect::<Vec<_>>(), [(1, 2), (3, 4), (5, 5)]);
        assert_eq!(ranges(0, 2).count(), 0);
        assert_eq!(ranges(3, i64::MAX).collect::<Vec<_>>(), [(1, 3)]);
        assert_eq!(
            ranges(i64::MAX, i64::MAX).collect::<Vec<_>>(),
            [(1, i64::MAX)]
        );
        let mut tail = ranges(i64::MAX, i64::MAX / 2 + 1);
        assert_eq!(tail.next(), Some((1, i64::MAX / 2 + 1)));
        assert_eq!(tail.next(), Some((i64::MAX / 2 + 2, i64::MAX)));
        assert_eq!(tail.next(), None);
        assert!(check_rows("rows", MAX_SEED_ROWS, 1).is_ok());
        assert!(check_rows("rows", MAX_SEED_ROWS + 1, 1).is_err());
        assert!(check_rows("rows", 0, 1).is_err());
    }

    const BASES: &[&str] = &["orders", "order_status", "order_status_latest"];

    #[test]
    fn names_are_prefixed_qualified_and_quoted_in_one_pass() {
        let n = Names::new(BASES);
        assert_eq!(
            n.create(
                "CREATE TABLE {orders}; CREATE INDEX {@order_status_latest} ON {order_status}",
                true
            ),
            r#"CREATE TABLE "orders"; CREATE INDEX "order_status_latest" ON "order_status""#
        );
        let n = n
            .with_prefix("{orders}\"x")
            .unwrap()
            .with_schema("demo")
            .unwrap();
        assert_eq!(
            n.create(
                "CREATE TABLE {orders} (); CREATE INDEX {@order_status_latest} ON {order_status}",
                false
            ),
            r#"CREATE UNLOGGED TABLE "demo"."{orders}""xorders" (); CREATE INDEX "{orders}""xorder_status_latest" ON "demo"."{orders}""xorder_status""#
        );
        assert_eq!(n.table(0).display_name(), "demo.{orders}\"xorders");
        assert_eq!(
            n.drop_tables(&[1, 0]),
            r#"DROP TABLE IF EXISTS "demo"."{orders}""xorder_status", "demo"."{orders}""xorders""#
        );
        assert_eq!(
            n.create_schema().as_deref(),
            Some(r#"CREATE SCHEMA IF NOT EXISTS "demo""#)
        );
        // The prefix replaces the earlier one; the schema stays.
        let m = n.with_prefix("a_").unwrap();
        assert_eq!(m.table(1).display_name(), "demo.a_order_status");
    }

    #[test]
    fn names_too_long_or_with_nul_are_refused() {
        let n = Names::new(BASES);
        // 63 bytes is the limit: "order_status_latest" is 19 bytes.
        assert!(n.with_prefix(&"p".repeat(63 - 19)).is_ok());
        let e = n.with_prefix(&"p".repeat(63 - 18)).unwrap_err();
        assert!(matches!(e, Error::InvalidIdentifier { .. }), "{e}");
        assert!(n.with_prefix("a\0").is_err());
        assert!(n.with_schema("").is_err());
        assert!(n.with_schema(&"s".repeat(64)).is_err());
    }
}
