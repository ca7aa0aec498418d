//! The summary table's DDL, the trigger function that keeps it, install and
//! uninstall behind ownership guards, the batched backfill and the drift
//! check.

use sea_query::Expr;

use super::{Bucket, Kept, Kind, Summary};
use crate::ddl::{
    derived_name, dollar_quote, fnv1a, free_name, quote, quote_beside, quote_table, string_literal,
    FNV_OFFSET, TRIGGER_SUFFIXES,
};
use crate::exec::{run_blocking_mut, BlockingExecutor};
use crate::schema::{AnyColumn, Ident};
use crate::types::SqlType;
use crate::{BuiltQuery, Error, Executor, Result, RowRead, Transactional};

/// `EXECUTE '<statement>';`: planned on each call, for the transition
/// table at hand (a static statement would keep the plan of its first
/// call, made for whatever row count that statement had).
fn execute(statement: &str) -> String {
    format!("EXECUTE {};", string_literal(statement))
}

/// The internal names of the trigger function, each chosen to differ from
/// every identifier of the summary.
#[derive(Debug, Clone)]
struct Names {
    new_rows: Ident,
    old_rows: Ident,
    delta: Ident,
    sign: Ident,
    target: Ident,
}

impl Summary {
    /// `date_trunc(unit, t, zone)` (`timestamptz`) or `date_trunc(unit, t)`.
    pub(crate) fn bucket_of(&self, t: Expr) -> Expr {
        match (self.bucket, self.zoned) {
            (Bucket::Hour, true) => {
                Expr::cust_with_exprs("date_trunc('hour', $1, $2)", [t, self.zone_param()])
            }
            (Bucket::Day, true) => {
                Expr::cust_with_exprs("date_trunc('day', $1, $2)", [t, self.zone_param()])
            }
            (Bucket::Hour, false) => Expr::cust_with_exprs("date_trunc('hour', $1)", [t]),
            (Bucket::Day, false) => Expr::cust_with_exprs("date_trunc('day', $1)", [t]),
        }
    }

    /// The first bucket start at or after `t`: `t` when it starts a bucket,
    /// else the start of the next one.
    pub(crate) fn ceil_of(&self, t: Expr) -> Expr {
        match (self.bucket, self.zoned) {
            // Hours are 60 minutes in every zone the window queries accept;
            // days are 23 to 25 hours, so 25 hours past a day's start is
            // inside the next day.
            (Bucket::Hour, true) => Expr::cust_with_exprs(
                "CASE WHEN date_trunc('hour', $1, $2) = $1 THEN $1 \
                 ELSE date_trunc('hour', date_trunc('hour', $1, $2) + interval '1 hour', $2) END",
                [t, self.zone_param()],
            ),
            (Bucket::Day, true) => Expr::cust_with_exprs(
                "CASE WHEN date_trunc('day', $1, $2) = $1 THEN $1 \
                 ELSE date_trunc('day', date_trunc('day', $1, $2) + interval '25 hours', $2) END",
                [t, self.zone_param()],
            ),
            (Bucket::Hour, false) => Expr::cust_with_exprs(
                "CASE WHEN date_trunc('hour', $1) = $1 THEN $1 \
                 ELSE date_trunc('hour', $1) + interval '1 hour' END",
                [t],
            ),
            (Bucket::Day, false) => Expr::cust_with_exprs(
                "CASE WHEN date_trunc('day', $1) = $1 THEN $1 \
                 ELSE date_trunc('day', $1) + interval '1 day' END",
                [t],
            ),
        }
    }

    /// The bucket expression as DDL text over `col` (a quoted column
    /// reference); the zone is a checked name, written as a literal.
    fn bucket_text(&self, col: &str) -> String {
        let unit = self.bucket.unit();
        if self.zoned {
            format!(
                "date_trunc('{unit}', {col}, {})",
                string_literal(self.zone_name())
            )
        } else {
            format!("date_trunc('{unit}', {col})")
        }
    }

    /// The trigger function's name (beside the base table).
    #[must_use]
    pub fn function_name(&self) -> Ident {
        derived_name(&["pgp_summary_fn", self.table_name().as_str()])
    }

    fn trigger_name(&self, suffix: &str) -> Ident {
        derived_name(&[self.function_name().as_str(), suffix])
    }

    /// The trigger names, one per event (`INSERT`, `UPDATE`, `DELETE`,
    /// `TRUNCATE`), derived from the function's.
    #[must_use]
    pub fn trigger_names(&self) -> Vec<Ident> {
        TRIGGER_SUFFIXES
            .iter()
            .map(|s| self.trigger_name(s))
            .collect()
    }

    fn key_constraint(&self) -> Ident {
        derived_name(&[self.table_name().as_str(), "key"])
    }

    fn zero_index(&self) -> Ident {
        derived_name(&[self.table_name().as_str(), "zero"])
    }

    pub(super) fn qtable(&self) -> String {
        quote_table(&self.table())
    }

    fn signature(&self) -> String {
        format!("{}()", quote_beside(&self.base, &self.function_name()))
    }

    fn names(&self, kept: &[Kept]) -> Names {
        let mut taken: Vec<String> = vec![
            self.base.name().as_str().to_owned(),
            self.table_name().as_str().to_owned(),
            self.bucket_name().as_str().to_owned(),
            self.count_name().as_str().to_owned(),
            self.time.name().as_str().to_owned(),
        ];
        if let Some(s) = self.base.schema() {
            taken.push(s.as_str().to_owned());
        }
        taken.extend(self.keys.iter().map(|k| k.name().as_str().to_owned()));
        for k in kept {
            taken.push(k.name.as_str().to_owned());
            taken.push(k.column.name().as_str().to_owned());
            if let Some(n) = &k.nonnull {
                taken.push(n.as_str().to_owned());
            }
        }
        let pick = |base: &str| {
            let name = free_name(base, taken.iter().map(String::as_str));
            Ident::new(&name).unwrap_or_else(|_| Ident::fixed("pgp_internal"))
        };
        Names {
            new_rows: pick("pgp_new_rows"),
            old_rows: pick("pgp_old_rows"),
            delta: pick("pgp_delta"),
            sign: pick("pgp_sign"),
            target: pick("pgp_target"),
        }
    }

    /// The stored columns after the keys and the bucket: the count, then
    /// each measure (and a sum's count of non-NULL values).
    pub(super) fn stored_columns(&self, kept: &[Kept]) -> Vec<Ident> {
        let mut out = vec![self.count_name().clone()];
        for k in kept {
            out.push(k.name.clone());
            if let Some(n) = &k.nonnull {
                out.push(n.clone());
            }
        }
        out
    }

    /// Every column of the summary table, in order.
    pub(super) fn all_columns(&self, kept: &[Kept]) -> Vec<Ident> {
        let mut out: Vec<Ident> = self.keys.iter().map(|k| k.name().clone()).collect();
        out.push(self.bucket_name().clone());
        out.extend(self.stored_columns(kept));
        out
    }

    /// `CREATE TABLE IF NOT EXISTS` of the summary table.
    fn create_table(&self, kept: &[Kept]) -> String {
        let mut cols: Vec<String> = self
            .keys
            .iter()
            .map(|k| format!("{} {}", quote(k.name()), k.sql_type()))
            .collect();
        cols.push(format!(
            "{} {} NOT NULL",
            quote(self.bucket_name()),
            self.time.sql_type()
        ));
        cols.push(format!("{} int8 NOT NULL", quote(self.count_name())));
        for k in kept {
            match k.kind {
                Kind::Count => cols.push(format!("{} int8 NOT NULL", quote(&k.name))),
                Kind::Sum(t) => cols.push(format!("{} {t}", quote(&k.name))),
            }
            if let Some(n) = &k.nonnull {
                cols.push(format!("{} int8 NOT NULL", quote(n)));
            }
        }
        cols.push(format!(
            "CONSTRAINT {} UNIQUE NULLS NOT DISTINCT ({})",
            quote(&self.key_constraint()),
            self.key_list()
        ));
        format!(
            "CREATE TABLE IF NOT EXISTS {} ({})",
            self.qtable(),
            cols.join(", ")
        )
    }

    /// The summary's key, bucket first (window queries read bucket
    /// ranges; the trigger upserts in this order, so concurrent writers
    /// lock summary rows in one order).
    fn key_list(&self) -> String {
        let mut key = vec![quote(self.bucket_name())];
        key.extend(self.keys.iter().map(|k| quote(k.name())));
        key.join(", ")
    }

    /// The partial index the trigger finds emptied groups with.
    fn create_zero_index(&self) -> String {
        format!(
            "CREATE INDEX IF NOT EXISTS {} ON {} ({}) WHERE {} = 0",
            quote(&self.zero_index()),
            self.qtable(),
            quote(self.bucket_name()),
            quote(self.count_name())
        )
    }

    /// The base columns the trigger reads from the transition tables.
    pub(super) fn read_columns(&self, kept: &[Kept]) -> Vec<AnyColumn> {
        let mut out: Vec<AnyColumn> = Vec::new();
        let all = self
            .keys
            .iter()
            .chain(std::iter::once(&self.time))
            .chain(kept.iter().map(|k| &k.column));
        for c in all {
            if !out.iter().any(|o| o.name() == c.name()) {
                out.push(c.clone());
            }
        }
        out
    }

    /// The upsert of the deltas of `tables` (`(transition table, sign)`).
    ///
    /// One statement, so the summary rows are locked and inserted in the
    /// key's order (concurrent writers cannot deadlock on them). With one
    /// transition table (`INSERT`, `DELETE`) every group has at least one
    /// row, so the deltas are plain `COUNT`s and `SUM`s of the table, read
    /// once, with no per-row sign arithmetic and no `HAVING`; an `UPDATE`
    /// sums signed rows of both tables and skips the groups whose deltas
    /// are all zero.
    fn upsert(&self, kept: &[Kept], n: &Names, tables: &[(&Ident, i32)]) -> String {
        let d = quote(&n.delta);
        let col = |c: &AnyColumn| format!("{d}.{}", quote(c.name()));
        let mut select: Vec<String> = self.keys.iter().map(&col).collect();
        select.push(self.bucket_text(&col(&self.time)));
        let (source, having) = if let [(table, sign)] = tables {
            let neg = if *sign < 0 { "-" } else { "" };
            select.push(format!("{neg}COUNT(*)"));
            for k in kept {
                let c = col(&k.column);
                if let Kind::Sum(t) = k.kind {
                    select.push(format!("CAST({neg}SUM(CAST({c} AS {t})) AS {t})"));
                }
                select.push(format!("{neg}COUNT({c})"));
            }
            (quote(table), String::new())
        } else {
            let sign = format!("{d}.{}", quote(&n.sign));
            let read: Vec<String> = self
                .read_columns(kept)
                .iter()
                .map(|c| quote(c.name()))
                .collect();
            let source: Vec<String> = tables
                .iter()
                .map(|(t, s)| {
                    format!(
                        "SELECT {}, {s} AS {} FROM {}",
                        read.join(", "),
                        quote(&n.sign),
                        quote(t)
                    )
                })
                .collect();
            select.push(format!("CAST(SUM({sign}) AS int8)"));
            let mut changed = vec![format!("SUM({sign}) <> 0")];
            for k in kept {
                let c = col(&k.column);
                let nonnull = format!("SUM(CASE WHEN {c} IS NULL THEN 0 ELSE {sign} END)");
                match k.kind {
                    Kind::Count => select.push(format!("CAST({nonnull} AS int8)")),
                    Kind::Sum(t) => {
                        let sum = format!("SUM(CAST({c} AS {t}) * {sign})");
                        changed.push(format!("COALESCE({sum}, 0) <> 0"));
                        select.push(format!("CAST({sum} AS {t})"));
                        select.push(format!("CAST({nonnull} AS int8)"));
                    }
                }
                changed.push(format!("{nonnull} <> 0"));
            }
            (
                format!("({})", source.join(" UNION ALL ")),
                format!(" HAVING {}", changed.join(" OR ")),
            )
        };
        let positions: Vec<String> = (1..=self.keys.len() + 1).map(|i| i.to_string()).collect();
        let positions = positions.join(", ");
        // The key's order: the bucket, then the keys.
        let mut order = vec![(self.keys.len() + 1).to_string()];
        order.extend((1..=self.keys.len()).map(|i| i.to_string()));
        let order = order.join(", ");
        let target = quote(&n.target);
        let mut set = Vec::new();
        let add = |c: &Ident| format!("{q} = {target}.{q} + EXCLUDED.{q}", q = quote(c));
        set.push(add(self.count_name()));
        for k in kept {
            match (&k.kind, &k.nonnull) {
                (Kind::Sum(_), Some(nn)) => {
                    let (m, nn) = (quote(&k.name), quote(nn));
                    set.push(format!(
                        "{m} = CASE WHEN {target}.{nn} + EXCLUDED.{nn} = 0 THEN NULL \
                         ELSE COALESCE({target}.{m}, 0) + COALESCE(EXCLUDED.{m}, 0) END"
                    ));
                    set.push(format!("{nn} = {target}.{nn} + EXCLUDED.{nn}"));
                }
                _ => set.push(add(&k.name)),
            }
        }
        let columns: Vec<String> = self.all_columns(kept).iter().map(quote).collect();
        format!(
            "INSERT INTO {table} AS {target} ({columns}) \
             SELECT {select} FROM {source} AS {d} WHERE {time} IS NOT NULL \
             GROUP BY {positions}{having} ORDER BY {order} \
             ON CONFLICT ({key}) DO UPDATE SET {set}",
            table = self.qtable(),
            columns = columns.join(", "),
            select = select.join(", "),
            time = col(&self.time),
            key = self.key_list(),
            set = set.join(", "),
        )
    }

    fn body(&self, kept: &[Kept]) -> String {
        let n = self.names(kept);
        let zero = execute(&format!(
            "DELETE FROM {} WHERE {} = 0",
            self.qtable(),
            quote(self.count_name())
        ));
        format!(
            "\n#variable_conflict use_column
BEGIN
  IF TG_OP = 'TRUNCATE' THEN
    {truncate}
  ELSIF TG_OP = 'INSERT' THEN
    {insert}
  ELSIF TG_OP = 'DELETE' THEN
    {delete}
    {zero}
  ELSE
    {update}
    {zero}
  END IF;
  RETURN NULL;
END\n",
            truncate = execute(&format!("DELETE FROM {}", self.qtable())),
            insert = execute(&self.upsert(kept, &n, &[(&n.new_rows, 1)])),
            delete = execute(&self.upsert(kept, &n, &[(&n.old_rows, -1)])),
            update = execute(&self.upsert(kept, &n, &[(&n.new_rows, 1), (&n.old_rows, -1)])),
        )
    }

    /// The comment pgpatterns puts on the trigger function: which summary
    /// it keeps, with a digest of the whole definition. An existing
    /// function (or, with `table`, summary table) of the same name is
    /// replaced or dropped only when it carries exactly this comment.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn marker(&self) -> Result<String> {
        let kept = self.kept()?;
        Ok(self.marker_of(&kept, "function"))
    }

    fn marker_of(&self, kept: &[Kept], what: &str) -> String {
        let digest = fnv1a(
            fnv1a(FNV_OFFSET, self.create_table(kept).as_bytes()),
            self.body(kept).as_bytes(),
        );
        format!(
            "pgpatterns: {what} of the summary {} of {} (digest {digest:016x})",
            self.qtable(),
            quote_table(&self.base),
        )
    }

    fn guard(&self, kept: &[Kept]) -> BuiltQuery {
        self.owned(kept).guard()
    }

    /// The function, its triggers on the base table, the summary table and
    /// its index, and their markers.
    fn owned(&self, kept: &[Kept]) -> crate::ddl::Owned {
        crate::ddl::Owned {
            purpose: "this summary",
            function: self.signature(),
            function_marker: self.marker_of(kept, "function"),
            rename: "Summary::named",
            trigger_tables: vec![quote_table(&self.base)],
            triggers: self.trigger_names(),
            relations: vec![(self.qtable(), self.marker_of(kept, "table"))],
            index_on: Some((quote_beside(&self.base, &self.zero_index()), self.qtable())),
        }
    }

    fn triggers(&self, kept: &[Kept]) -> Vec<BuiltQuery> {
        let n = self.names(kept);
        crate::ddl::statement_triggers(
            &quote_table(&self.base),
            &n.new_rows,
            &n.old_rows,
            |suffix| self.trigger_name(suffix),
            &self.signature(),
        )
        .into()
    }

    /// The guard, the summary table, its index, the trigger function (with
    /// their comments) and the four triggers, in order: run them in one
    /// transaction (see [`install`](Self::install)), then
    /// [`backfill`](Self::backfill). The guard (a `DO` block) stops the
    /// transaction with SQLSTATE `42710` when a table, index, function or
    /// trigger of these names exists that pgpatterns did not create for
    /// this summary, so nothing else is ever replaced.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn install_statements(&self) -> Result<Vec<BuiltQuery>> {
        let kept = self.kept()?;
        let mut all = vec![
            self.guard(&kept),
            BuiltQuery::generated(self.create_table(&kept)),
            BuiltQuery::generated(format!(
                "COMMENT ON TABLE {} IS {}",
                self.qtable(),
                string_literal(&self.marker_of(&kept, "table"))
            )),
            BuiltQuery::generated(self.create_zero_index()),
            BuiltQuery::generated(format!(
                "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql \
                 SET search_path FROM CURRENT SET jit = off AS {}",
                quote_beside(&self.base, &self.function_name()),
                dollar_quote(&self.body(&kept))
            )),
            BuiltQuery::generated(format!(
                "COMMENT ON FUNCTION {} IS {}",
                self.signature(),
                string_literal(&self.marker_of(&kept, "function"))
            )),
        ];
        all.extend(self.triggers(&kept));
        Ok(all)
    }

    /// The guard, then drops the triggers, the function and the summary
    /// table (`IF EXISTS`). The base table is left as it is.
    ///
    /// # Errors
    /// As [`check`](Self::check).
    pub fn uninstall_statements(&self) -> Result<Vec<BuiltQuery>> {
        let kept = self.kept()?;
        let mut all = vec![self.guard(&kept)];
        all.extend(self.trigger_names().iter().map(|t| {
            BuiltQuery::generated(format!(
                "DROP TRIGGER IF EXISTS {} ON {}",
                quote(t),
                quote_table(&self.base)
            ))
        }));
        all.push(BuiltQuery::generated(format!(
            "DROP FUNCTION IF EXISTS {}",
            self.signature()
        )));
        all.push(BuiltQuery::generated(format!(
            "DROP TABLE IF EXISTS {}",
            self.qtable()
        )));
        Ok(all)
    }

    /// Refuses a zone the server does not know, before any DDL is sent.
    async fn check_zone<E: Executor>(&self, db: &E) -> Result<()> {
        if !self.zoned {
            return Ok(());
        }
        let q = BuiltQuery::fixed_with(
            "SELECT count(*) FROM pg_catalog.pg_timezone_names WHERE name = $1::text",
            [self.zone_name().to_owned().into_value()],
        );
        let zones: i64 = db.one_row(&q).await?.try_get(0usize.into())?;
        if zones == 0 {
            return Err(Error::spec(
                "zone",
                format!("the server knows no time zone {:?}", self.zone_name()),
            ));
        }
        Ok(())
    }

    /// Checks the summary and the names (see [`Error::ObjectConflict`]),
    /// then runs [`install_statements`](Self::install_statements) in one
    /// transaction. Idempotent: installing again keeps the summary's rows
    /// and replaces its own function and triggers with the same
    /// definitions. Run [`backfill`](Self::backfill) next.
    ///
    /// # Errors
    /// As [`check`](Self::check), and [`Error::InvalidSpec`] for a zone the
    /// server does not know, before any DDL is sent;
    /// [`Error::ObjectConflict`] when an object of these names exists and
    /// is not this summary's; the database's error otherwise. Nothing is
    /// installed then.
    pub async fn install<E: Transactional>(&self, db: &mut E) -> Result<()> {
        let kept = self.kept()?;
        self.check_zone(&*db).await?;
        self.owned(&kept).run(db, &self.install_statements()?).await
    }

    /// [`install`](Self::install) on a blocking client, from the same code.
    ///
    /// # Errors
    /// As [`install`](Self::install).
    pub fn install_blocking<C>(&self, db: &mut C) -> Result<()>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.install(db).await)
    }

    /// Checks the names like [`install`](Self::install), then drops the
    /// triggers, the function and the summary table in one transaction.
    ///
    /// # Errors
    /// As [`check`](Self::check), and [`Error::InvalidSpec`] for a zone the
    /// server does not know, before any DDL is sent;
    /// [`Error::ObjectConflict`] when the objects of these names are not
    /// this summary's (nothing is dropped then); the database's error.
    pub async fn uninstall<E: Transactional>(&self, db: &mut E) -> Result<()> {
        let kept = self.kept()?;
        self.check_zone(&*db).await?;
        self.owned(&kept)
            .run(db, &self.uninstall_statements()?)
            .await
    }

    /// [`uninstall`](Self::uninstall) on a blocking client, from the same
    /// code.
    ///
    /// # Errors
    /// As [`uninstall`](Self::uninstall).
    pub fn uninstall_blocking<C>(&self, db: &mut C) -> Result<()>
    where
        C: BlockingExecutor + Send,
        C::Row: Send,
    {
        run_blocking_mut(db, async |db| self.uninstall(db).await)
    }
}
