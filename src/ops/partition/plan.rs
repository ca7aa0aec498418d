//! The partitioning plan: every statement of the migration, generated from
//! the catalog before anything runs, and the SQL text helpers the
//! migration runs (trigger functions, copy batches, cutover, rollback).

use std::fmt;

use chrono::NaiveDateTime;
use postgres_types::FromSqlOwned;

use super::catalog::Source;
use super::{PartitionTime, Partitioner};
use crate::ddl::{derived_name, dollar_quote, quote, quote_table, string_literal};
use crate::schema::{Ident, Table};
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Result};

/// The comment that marks the state table as this crate's.
pub(crate) const STATE_MARKER: &str = "pgpatterns partition state v1";
/// The state table's name, in the partitioned table's schema.
pub(crate) const STATE_TABLE: &str = "pgpatterns_partition_state";
/// At most this many partitions in a plan.
const MAX_PARTITIONS: usize = 5_000;

/// One partition of the plan: `[from, to)` in UTC wall-clock time.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlannedPartition {
    /// Its name (in the table's schema).
    pub name: Ident,
    /// Inclusive lower bound (UTC wall-clock time).
    pub from: NaiveDateTime,
    /// Exclusive upper bound (UTC wall-clock time).
    pub to: NaiveDateTime,
}

/// Every object name the migration uses, derived from the table's schema
/// and name only (so each step finds them again after a crash).
#[derive(Debug, Clone)]
pub(crate) struct Names {
    pub schema: Ident,
    pub original: Table,
    pub twin: Table,
    pub retired: Table,
    pub forward_fn: Table,
    pub forward_trigger: Ident,
    pub reverse_fn: Table,
    pub reverse_trigger: Ident,
    pub state: Table,
}

impl Names {
    pub(crate) fn new(schema: &Ident, name: &Ident) -> Names {
        let n = name.as_str();
        let beside = |id: Ident| {
            Table::in_schema(schema.as_str(), id.as_str())
                .unwrap_or_else(|_| Table::fixed("invalid_table"))
        };
        Names {
            schema: schema.clone(),
            original: beside(name.clone()),
            twin: beside(derived_name(&[n, "partitioned"])),
            retired: beside(derived_name(&[n, "unpartitioned"])),
            forward_fn: beside(derived_name(&[n, "pgp_mirror"])),
            forward_trigger: derived_name(&[n, "pgp_mirror"]),
            reverse_fn: beside(derived_name(&[n, "pgp_mirror_back"])),
            reverse_trigger: derived_name(&[n, "pgp_mirror_back"]),
            state: beside(Ident::fixed(STATE_TABLE)),
        }
    }

    /// A partition's name: `<table>_<suffix>` when it fits in 63 bytes,
    /// else a derived name.
    pub(crate) fn partition(&self, suffix: &str) -> Ident {
        let name = format!("{}_{suffix}", self.original.name().as_str());
        match Ident::new(&name) {
            Ok(id) if !name.contains('"') => id,
            _ => derived_name(&[self.original.name().as_str(), suffix]),
        }
    }

    pub(crate) fn beside(&self, name: &Ident) -> Table {
        Table::in_schema(self.schema.as_str(), name.as_str())
            .unwrap_or_else(|_| Table::fixed("invalid_table"))
    }

    pub(crate) fn twin_marker(&self) -> String {
        format!(
            "pgpatterns: partitioned twin of {}",
            self.original.name().as_str()
        )
    }
}

/// What [`Partitioner::plan`] found and will do: read it (`Display` or
/// [`to_sql`](Self::to_sql)) before running the migration.
#[derive(Debug, Clone)]
pub struct PartitionPlan {
    pub(crate) names: Names,
    pub(crate) key: Ident,
    pub(crate) time: Ident,
    pub(crate) columns: Vec<Ident>,
    pub(crate) partitions: Vec<PlannedPartition>,
    pub(crate) default_partition: Option<Ident>,
    pub(crate) notes: Vec<String>,
    pub(crate) setup: Vec<BuiltQuery>,
    pub(crate) mirror: Vec<BuiltQuery>,
    pub(crate) copy_example: BuiltQuery,
    pub(crate) cutover: Vec<BuiltQuery>,
}

impl PartitionPlan {
    /// The table being partitioned, schema-qualified.
    #[must_use]
    pub fn table(&self) -> &Table {
        &self.names.original
    }

    /// The partitioned twin the rows are copied into (renamed to the
    /// table's name at the cutover).
    #[must_use]
    pub fn twin(&self) -> &Table {
        &self.names.twin
    }

    /// The name the old table gets at the cutover (kept until
    /// [`Partitioner::finish`]).
    #[must_use]
    pub fn retired(&self) -> &Table {
        &self.names.retired
    }

    /// The key column (the primary key, walked by the copy).
    #[must_use]
    pub fn key(&self) -> &Ident {
        &self.key
    }

    /// The partition key column.
    #[must_use]
    pub fn time(&self) -> &Ident {
        &self.time
    }

    /// The range partitions, oldest first.
    #[must_use]
    pub fn partitions(&self) -> &[PlannedPartition] {
        &self.partitions
    }

    /// The default partition's name, when one is made.
    #[must_use]
    pub fn default_partition(&self) -> Option<&Ident> {
        self.default_partition.as_ref()
    }

    /// What changes in the table's definition and why (a primary key that
    /// gains the time column, say).
    #[must_use]
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    /// The columns copied (all but generated ones), in table order.
    #[must_use]
    pub fn columns(&self) -> &[Ident] {
        &self.columns
    }

    /// Every statement, in order: the twin and its partitions (one
    /// transaction), the mirror trigger (a second one), the first copy
    /// batch (repeated with a cursor), and the cutover transaction.
    #[must_use]
    pub fn statements(&self) -> Vec<BuiltQuery> {
        let mut all = self.setup.clone();
        all.extend(self.mirror.iter().cloned());
        all.push(self.copy_example.clone());
        all.extend(self.cutover.iter().cloned());
        all
    }

    /// [`statements`](Self::statements) as one script with comments, bound
    /// values shown after each statement (they are sent as parameters).
    #[must_use]
    pub fn to_sql(&self) -> String {
        let mut out = String::new();
        for note in &self.notes {
            out.push_str("-- note: ");
            out.push_str(note);
            out.push('\n');
        }
        let mut section = |title: &str, qs: &[BuiltQuery]| {
            out.push_str("\n-- ");
            out.push_str(title);
            out.push('\n');
            for q in qs {
                out.push_str(&q.to_string());
                out.push_str(";\n");
            }
        };
        section(
            "1. create the partitioned twin (one transaction)",
            &self.setup,
        );
        section(
            "2. mirror writes into the twin (one transaction)",
            &self.mirror,
        );
        section(
            "3. copy in keyset batches (repeated with a cursor until empty)",
            std::slice::from_ref(&self.copy_example),
        );
        section(
            "4. cutover (one transaction, retried on lock timeout)",
            &self.cutover,
        );
        out
    }
}

impl fmt::Display for PartitionPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_sql())
    }
}

/// `'text'` for a partition bound made by [`PartitionTime::bound_text`]
/// (digits and punctuation only).
fn bound_literal(text: &str) -> String {
    string_literal(text)
}

pub(crate) fn partition_ddl<T: PartitionTime>(
    parent: &Table,
    part: &Table,
    from: NaiveDateTime,
    to: NaiveDateTime,
    if_not_exists: bool,
) -> BuiltQuery {
    BuiltQuery::generated(format!(
        "CREATE TABLE {}{} PARTITION OF {} FOR VALUES FROM ({}) TO ({})",
        if if_not_exists { "IF NOT EXISTS " } else { "" },
        quote_table(part),
        quote_table(parent),
        bound_literal(&T::bound_text(from)),
        bound_literal(&T::bound_text(to)),
    ))
}

fn list(columns: &[Ident], prefix: &str) -> String {
    columns
        .iter()
        .map(|c| format!("{prefix}{}", quote(c)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A trigger function copying every write on its table into `target`: an
/// UPDATE deletes the old version by `(key, time)` and inserts the new one
/// (which may land in another partition); a TRUNCATE (its statement-level
/// trigger) empties `target` too. Columns are qualified by an
/// alias, so columns named `new`, `old` or `found` are never read as
/// PL/pgSQL variables.
pub(crate) fn mirror_function(
    function: &Table,
    target: &Table,
    columns: &[Ident],
    key: &Ident,
    time: &Ident,
) -> BuiltQuery {
    let body = format!(
        "\nBEGIN\n\
         \x20 IF TG_OP = 'TRUNCATE' THEN\n\
         \x20   DELETE FROM {target};\n\
         \x20   RETURN NULL;\n\
         \x20 END IF;\n\
         \x20 IF TG_OP = 'UPDATE' OR TG_OP = 'DELETE' THEN\n\
         \x20   DELETE FROM {target} AS pgp_t WHERE pgp_t.{k} = OLD.{k} AND pgp_t.{t} = OLD.{t};\n\
         \x20 END IF;\n\
         \x20 IF TG_OP = 'UPDATE' OR TG_OP = 'INSERT' THEN\n\
         \x20   INSERT INTO {target} ({cols}) OVERRIDING SYSTEM VALUE VALUES ({news});\n\
         \x20 END IF;\n\
         \x20 RETURN NULL;\n\
         END\n",
        target = quote_table(target),
        k = quote(key),
        t = quote(time),
        cols = list(columns, ""),
        news = list(columns, "NEW."),
    );
    BuiltQuery::generated(format!(
        "CREATE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql \
         SET search_path = pg_catalog, pg_temp AS {}",
        quote_table(function),
        dollar_quote(&body)
    ))
}

/// The name of the statement-level `TRUNCATE` trigger beside the row
/// trigger `trigger`.
pub(crate) fn truncate_trigger(trigger: &Ident) -> Ident {
    derived_name(&[trigger.as_str(), "truncate"])
}

/// The mirror's two triggers: every row written, and `TRUNCATE`.
pub(crate) fn create_trigger(trigger: &Ident, table: &Table, function: &Table) -> [BuiltQuery; 2] {
    [
        BuiltQuery::generated(format!(
            "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW EXECUTE FUNCTION {}()",
            quote(trigger),
            quote_table(table),
            quote_table(function)
        )),
        BuiltQuery::generated(format!(
            "CREATE TRIGGER {} AFTER TRUNCATE ON {} FOR EACH STATEMENT EXECUTE FUNCTION {}()",
            quote(&truncate_trigger(trigger)),
            quote_table(table),
            quote_table(function)
        )),
    ]
}

/// Drops both triggers of [`create_trigger`].
pub(crate) fn drop_trigger(trigger: &Ident, table: &Table, if_exists: bool) -> [BuiltQuery; 2] {
    let drop = |t: &Ident| {
        BuiltQuery::generated(format!(
            "DROP TRIGGER {}{} ON {}",
            if if_exists { "IF EXISTS " } else { "" },
            quote(t),
            quote_table(table)
        ))
    };
    [drop(trigger), drop(&truncate_trigger(trigger))]
}

pub(crate) fn drop_function(function: &Table, if_exists: bool) -> BuiltQuery {
    BuiltQuery::generated(format!(
        "DROP FUNCTION {}{}()",
        if if_exists { "IF EXISTS " } else { "" },
        quote_table(function)
    ))
}

pub(crate) fn set_lock_timeout(text: String) -> BuiltQuery {
    BuiltQuery::fixed_with(
        "SELECT set_config('lock_timeout', $1::text, true)",
        [text.into_value()],
    )
}

pub(crate) fn rename(table: &Table, to: &Ident) -> BuiltQuery {
    BuiltQuery::generated(format!(
        "ALTER TABLE {} RENAME TO {}",
        quote_table(table),
        quote(to)
    ))
}

pub(crate) fn lock_exclusive(tables: &[&Table]) -> BuiltQuery {
    BuiltQuery::generated(format!(
        "LOCK TABLE {} IN ACCESS EXCLUSIVE MODE",
        tables
            .iter()
            .map(|t| quote_table(t))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

pub(crate) fn set_phase(names: &Names, phase: &str) -> BuiltQuery {
    BuiltQuery::generated_with(
        format!(
            "UPDATE {} SET phase = $1::text, updated_at = clock_timestamp() WHERE relation = $2::text",
            quote_table(&names.state)
        ),
        [
            phase.to_owned().into_value(),
            names.original.name().as_str().to_owned().into_value(),
        ],
    )
}

/// Moves the ownership of `serial` sequences and continues identity
/// sequences from `from` (the table that had the writes) to `to`.
pub(crate) fn sequence_handover(source: &Source, from: &Table, to: &Table) -> Vec<BuiltQuery> {
    let mut out = Vec::new();
    for c in &source.columns {
        if let Some((schema, seq)) = &c.owned_sequence {
            out.push(BuiltQuery::generated(format!(
                "ALTER SEQUENCE {}.{} OWNED BY {}.{}",
                quote(schema),
                quote(seq),
                quote_table(to),
                quote(&c.name)
            )));
        }
        if !c.identity.is_empty() {
            out.push(BuiltQuery::fixed_with(
                "SELECT setval(pg_get_serial_sequence($1::text, $2::text), s.v) \
                 FROM (SELECT pg_sequence_last_value(pg_get_serial_sequence($3::text, $2::text)::regclass) AS v) AS s \
                 WHERE s.v IS NOT NULL",
                [
                    quote_table(to).into_value(),
                    c.name.as_str().to_owned().into_value(),
                    quote_table(from).into_value(),
                ],
            ));
        }
    }
    out
}

/// The copy batch: the next rows by key after `after` (none: from the
/// start), locked `FOR SHARE`, inserted into the twin unless there, with
/// the cursor saved in the state table in the same statement. Returns one
/// row: rows read, the last key (NULL when none).
pub(crate) fn copy_batch<K: SqlType>(
    names: &Names,
    columns: &[Ident],
    key: &Ident,
    after: Option<K>,
    batch: i64,
) -> BuiltQuery {
    let k = quote(key);
    let cols = list(columns, "");
    let (filter, mut values) = match after {
        Some(v) => (
            format!("WHERE {k} > $1::{}", K::SQL_TYPE),
            vec![v.into_value()],
        ),
        None => (
            "WHERE $1::int8 IS NOT NULL".to_owned(),
            vec![0i64.into_value()],
        ),
    };
    values.push(batch.into_value());
    values.push(names.original.name().as_str().to_owned().into_value());
    BuiltQuery::generated_with(
        format!(
            "WITH pgp_batch AS (SELECT {cols} FROM {old} {filter} ORDER BY {k} LIMIT $2::int8 FOR SHARE), \
             pgp_copied AS (INSERT INTO {twin} ({cols}) OVERRIDING SYSTEM VALUE SELECT {cols} FROM pgp_batch ON CONFLICT DO NOTHING), \
             pgp_last AS (SELECT {k} FROM pgp_batch ORDER BY {k} DESC LIMIT 1), \
             pgp_saved AS (UPDATE {state} SET cursor = (SELECT CAST({k} AS text) FROM pgp_last), \
                 copied = copied + (SELECT count(*) FROM pgp_batch), updated_at = clock_timestamp() \
                 WHERE relation = $3::text AND EXISTS (SELECT FROM pgp_batch)) \
             SELECT (SELECT count(*) FROM pgp_batch)::int8, (SELECT {k} FROM pgp_last)",
            old = quote_table(&names.original),
            twin = quote_table(&names.twin),
            state = quote_table(&names.state),
        ),
        values,
    )
}

/// One side of a swap: the table that is `original` now and where it goes,
/// the table that takes its name, and the mirror to drop and the one to
/// install.
struct Swap<'a> {
    incoming: &'a Table,
    outgoing_to: &'a Table,
    drop: (&'a Ident, &'a Table),
    install: (&'a Ident, &'a Table),
    phase: &'static str,
}

/// The swap transaction: lock both tables, drop the current mirror, rename
/// both ways, hand the sequences over, mirror the new name's writes back
/// into the table that left, and record the phase.
fn swap_statements(
    names: &Names,
    source: &Source,
    columns: &[Ident],
    key: &Ident,
    time: &Ident,
    lock_timeout: String,
    swap: Swap<'_>,
) -> Vec<BuiltQuery> {
    let mut out = vec![
        set_lock_timeout(lock_timeout),
        lock_exclusive(&[&names.original, swap.incoming]),
    ];
    out.extend(drop_trigger(swap.drop.0, &names.original, false));
    out.extend([
        drop_function(swap.drop.1, false),
        rename(&names.original, swap.outgoing_to.name()),
        rename(swap.incoming, names.original.name()),
    ]);
    out.extend(sequence_handover(source, swap.outgoing_to, &names.original));
    out.push(mirror_function(
        swap.install.1,
        swap.outgoing_to,
        columns,
        key,
        time,
    ));
    out.extend(create_trigger(
        swap.install.0,
        &names.original,
        swap.install.1,
    ));
    out.push(set_phase(names, swap.phase));
    out
}

/// The cutover transaction's statements (after `set_config`).
pub(crate) fn cutover_statements(
    names: &Names,
    source: &Source,
    columns: &[Ident],
    key: &Ident,
    time: &Ident,
    lock_timeout: String,
) -> Vec<BuiltQuery> {
    let swap = Swap {
        incoming: &names.twin,
        outgoing_to: &names.retired,
        drop: (&names.forward_trigger, &names.forward_fn),
        install: (&names.reverse_trigger, &names.reverse_fn),
        phase: "cut_over",
    };
    swap_statements(names, source, columns, key, time, lock_timeout, swap)
}

/// The rollback (after a cutover) transaction's statements. `source` is
/// the partitioned table's catalog (it owns the sequences now).
pub(crate) fn swap_back_statements(
    names: &Names,
    source: &Source,
    columns: &[Ident],
    key: &Ident,
    time: &Ident,
    lock_timeout: String,
) -> Vec<BuiltQuery> {
    let swap = Swap {
        incoming: &names.retired,
        outgoing_to: &names.twin,
        drop: (&names.reverse_trigger, &names.reverse_fn),
        install: (&names.forward_trigger, &names.forward_fn),
        phase: "copied",
    };
    swap_statements(names, source, columns, key, time, lock_timeout, swap)
}

pub(crate) fn state_table_ddl(names: &Names) -> Vec<BuiltQuery> {
    vec![
        BuiltQuery::generated(format!(
            "CREATE TABLE IF NOT EXISTS {} (relation text PRIMARY KEY, phase text NOT NULL, \
             twin text NOT NULL, retired text NOT NULL, cursor text, copied int8 NOT NULL DEFAULT 0, \
             updated_at timestamptz NOT NULL DEFAULT clock_timestamp())",
            quote_table(&names.state)
        )),
        BuiltQuery::generated(format!(
            "COMMENT ON TABLE {} IS {}",
            quote_table(&names.state),
            string_literal(STATE_MARKER)
        )),
    ]
}

impl<K: SqlType + FromSqlOwned, T: PartitionTime> Partitioner<K, T> {
    /// Checks the source table and builds the plan. `range` is the data's
    /// `(min, max)` time, `now` the server's UTC time.
    pub(crate) fn build_plan(
        &self,
        source: &Source,
        range: Option<(NaiveDateTime, NaiveDateTime)>,
        now: NaiveDateTime,
    ) -> Result<PartitionPlan> {
        let display = source.table().display_name();
        match source.relkind.as_str() {
            "r" => {}
            "p" => {
                return Err(Error::spec(
                    "table",
                    format!("{display} is already partitioned"),
                ))
            }
            _ => {
                return Err(Error::spec(
                    "table",
                    format!("{display} is not an ordinary table"),
                ))
            }
        }
        if source.unlogged {
            return Err(Error::spec(
                "table",
                format!(
                    "{display} is UNLOGGED or references an UNLOGGED table with a foreign key: \
                     PostgreSQL cannot make a partitioned table UNLOGGED, nor a logged one \
                     reference an unlogged table (ALTER TABLE … SET LOGGED first)"
                ),
            ));
        }
        let names = Names::new(&source.schema, &source.name);
        let key = self.key.name().clone();
        let time = self.time.name().clone();
        let time_col = source
            .column(&time)
            .ok_or_else(|| Error::spec("time", format!("{display} has no column {time}")))?;
        if time_col.type_name != source.time_type {
            return Err(Error::spec(
                "time",
                format!(
                    "{time} is {}, not {} (a time column of the type the handle says)",
                    time_col.type_name, source.time_type
                ),
            ));
        }
        if !time_col.not_null {
            return Err(Error::spec(
                "time",
                format!(
                    "{time} allows NULL, but the partition key must be part of the primary key: \
                     make it NOT NULL first (ADD CONSTRAINT … CHECK ({time} IS NOT NULL) NOT VALID, \
                     VALIDATE, then SET NOT NULL)"
                ),
            ));
        }
        let key_col = source
            .column(&key)
            .ok_or_else(|| Error::spec("key", format!("{display} has no column {key}")))?;
        if key_col.type_name != source.key_type {
            return Err(Error::spec(
                "key",
                format!("{key} is {}, not {}", key_col.type_name, source.key_type),
            ));
        }
        let pk = source.constraints.iter().find(|c| c.kind == "p");
        match pk {
            None => {
                return Err(Error::spec(
                    "table",
                    format!(
                        "{display} has no primary key: the copy walks it and the mirror finds rows by it; add one first"
                    ),
                ))
            }
            Some(pk) if pk.columns != [key.clone()] => {
                return Err(Error::spec(
                    "key",
                    format!(
                        "the primary key of {display} is ({}), not ({key})",
                        pk.columns.iter().map(Ident::as_str).collect::<Vec<_>>().join(", ")
                    ),
                ))
            }
            Some(_) => {}
        }
        if let Some((con, from)) = source.inbound.first() {
            return Err(Error::spec(
                "table",
                format!(
                    "foreign key {con} on {from} references {display}: a foreign key to a partitioned \
                     table must reference a unique key that includes the partition key ({time}); \
                     drop it (and re-create it against a key including {time}) first"
                ),
            ));
        }
        if !source.views.is_empty() {
            return Err(Error::spec(
                "table",
                format!(
                    "views depend on {display} and would keep reading the old table after the cutover: {}; \
                     drop them and re-create them afterwards",
                    source.views.join(", ")
                ),
            ));
        }
        let foreign_triggers: Vec<&String> = source
            .triggers
            .iter()
            .filter(|t| {
                ![&names.forward_trigger, &names.reverse_trigger]
                    .into_iter()
                    .any(|m| t.as_str() == m.as_str() || t.as_str() == truncate_trigger(m).as_str())
            })
            .collect();
        if !foreign_triggers.is_empty() {
            return Err(Error::spec(
                "table",
                format!(
                    "{display} has triggers the partitioned table would not have: {}; \
                     drop them and re-create them after the cutover",
                    foreign_triggers
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        let mut notes = Vec::new();
        let twin = quote_table(&names.twin);
        let mut setup = state_table_ddl(&names);
        setup.push(BuiltQuery::generated_with(
            format!(
                "INSERT INTO {} (relation, phase, twin, retired) VALUES ($1::text, 'created', $2::text, $3::text)",
                quote_table(&names.state)
            ),
            [
                names.original.name().as_str().to_owned().into_value(),
                names.twin.name().as_str().to_owned().into_value(),
                names.retired.name().as_str().to_owned().into_value(),
            ],
        ));
        setup.push(BuiltQuery::generated(format!(
            "CREATE TABLE {twin} (LIKE {} INCLUDING ALL EXCLUDING INDEXES) PARTITION BY RANGE ({})",
            quote_table(&names.original),
            quote(&time)
        )));
        setup.push(BuiltQuery::generated(format!(
            "COMMENT ON TABLE {twin} IS {}",
            string_literal(&names.twin_marker())
        )));
        for con in &source.constraints {
            match con.kind.as_str() {
                "p" | "u" => {
                    let mut cols = con.columns.clone();
                    if !cols.contains(&time) {
                        cols.push(time.clone());
                        notes.push(format!(
                            "{} {} ({}) becomes ({}) on the partitioned table: a unique key of a \
                             partitioned table must include the partition key, so uniqueness is \
                             only enforced per {time}",
                            if con.kind == "p" { "primary key" } else { "unique constraint" },
                            con.name,
                            con.columns.iter().map(Ident::as_str).collect::<Vec<_>>().join(", "),
                            cols.iter().map(Ident::as_str).collect::<Vec<_>>().join(", ")
                        ));
                    }
                    let name = derived_name(&[names.original.name().as_str(), con.name.as_str(), "part"]);
                    setup.push(BuiltQuery::generated(format!(
                        "ALTER TABLE {twin} ADD CONSTRAINT {} {} ({}){}",
                        quote(&name),
                        if con.kind == "p" { "PRIMARY KEY" } else { "UNIQUE" },
                        list(&cols, ""),
                        if con.deferrable { " DEFERRABLE" } else { "" }
                    )));
                }
                "f" => setup.push(BuiltQuery::generated(format!(
                    "ALTER TABLE {twin} ADD CONSTRAINT {} {}",
                    quote(&con.name),
                    con.definition
                ))),
                // CHECK and NOT NULL come with LIKE … INCLUDING ALL.
                "c" | "n" => {}
                other => {
                    return Err(Error::spec(
                        "table",
                        format!(
                            "constraint {} of {display} (kind {other}: {}) cannot be carried over to a \
                             partitioned table; drop it first",
                            con.name, con.definition
                        ),
                    ))
                }
            }
        }
        for idx in &source.indexes {
            if !idx.valid {
                return Err(Error::spec(
                    "table",
                    format!(
                        "index {} of {display} is INVALID (a failed concurrent build): rebuild or drop it first",
                        idx.name
                    ),
                ));
            }
            let name = derived_name(&[names.original.name().as_str(), idx.name.as_str(), "part"]);
            let tail = match (&idx.tail, idx.unique) {
                (Some(tail), false) => tail.clone(),
                (_, true) => match &idx.plain_keys {
                    Some(keys) if !idx.has_predicate && idx.method == "btree" => {
                        let mut keys = keys.clone();
                        if !keys.contains(&time) {
                            keys.push(time.clone());
                            notes.push(format!(
                                "unique index {} gains {time}: a unique index of a partitioned table must include the partition key",
                                idx.name
                            ));
                        }
                        format!("({})", list(&keys, ""))
                    }
                    _ => {
                        return Err(Error::spec(
                            "table",
                            format!(
                                "unique index {} of {display} ({}) has expressions, options or a predicate \
                                 and cannot be rebuilt with the partition key; drop it first",
                                idx.name, idx.definition
                            ),
                        ))
                    }
                },
                (None, false) => {
                    return Err(Error::spec(
                        "table",
                        format!("cannot read the definition of index {}: {}", idx.name, idx.definition),
                    ))
                }
            };
            setup.push(BuiltQuery::generated(format!(
                "CREATE {}INDEX {} ON {twin} USING {} {tail}",
                if idx.unique { "UNIQUE " } else { "" },
                quote(&name),
                quote(&Ident::new(&idx.method)?),
            )));
        }
        // Partitions: the data's range (or now), plus the ones made ahead.
        let (lo, hi) = match range {
            Some((lo, hi)) => (lo.min(now), hi.max(now)),
            None => (now, now),
        };
        let mut from = self.interval.floor(lo);
        let mut last = self.interval.floor(hi);
        for _ in 0..self.premake {
            last = self.interval.next(last).ok_or_else(|| {
                Error::spec(
                    "premake",
                    "partitions would end after the last representable time",
                )
            })?;
        }
        let mut partitions = Vec::new();
        while from <= last {
            let to = self.interval.next(from).ok_or_else(|| {
                Error::spec("interval", "partition bound out of the representable range")
            })?;
            partitions.push(PlannedPartition {
                name: names.partition(&self.interval.suffix(from)),
                from,
                to,
            });
            if partitions.len() > MAX_PARTITIONS {
                return Err(Error::spec(
                    "interval",
                    format!(
                        "the data of {display} spans more than {MAX_PARTITIONS} partitions of {:?}; use a longer interval",
                        self.interval
                    ),
                ));
            }
            from = to;
        }
        for p in &partitions {
            setup.push(partition_ddl::<T>(
                &names.twin,
                &names.beside(&p.name),
                p.from,
                p.to,
                false,
            ));
        }
        let default_partition = self.default_partition.then(|| names.partition("default"));
        if let Some(d) = &default_partition {
            setup.push(BuiltQuery::generated(format!(
                "CREATE TABLE {} PARTITION OF {twin} DEFAULT",
                quote_table(&names.beside(d))
            )));
        }
        let columns = source.insertable();
        let mut mirror = vec![
            set_lock_timeout(self.lock_timeout_text()),
            mirror_function(&names.forward_fn, &names.twin, &columns, &key, &time),
        ];
        mirror.extend(create_trigger(
            &names.forward_trigger,
            &names.original,
            &names.forward_fn,
        ));
        mirror.push(set_phase(&names, "copying"));
        let copy_example = copy_batch::<K>(&names, &columns, &key, None, self.batch_size);
        let cutover = cutover_statements(
            &names,
            source,
            &columns,
            &key,
            &time,
            self.lock_timeout_text(),
        );
        Ok(PartitionPlan {
            names,
            key,
            time,
            columns,
            partitions,
            default_partition,
            notes,
            setup,
            mirror,
            copy_example,
            cutover,
        })
    }
}
