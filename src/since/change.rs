//! Change columns: `timestamp` or `timestamptz`, compared against one
//! `DateTime<Utc>`.

use chrono::{DateTime, Duration, FixedOffset, NaiveDateTime, Utc};
use sea_query::{Expr, ExprTrait};

use crate::schema::{AnyColumn, Column, Table};
use crate::types::SqlType;
use crate::{Error, Result};

/// The column that records when a row last changed: `timestamptz`
/// (`Column<DateTime<Utc>>`) or `timestamp` (`Column<NaiveDateTime>`).
///
/// A `timestamp` column holds wall-clock times without a zone; the graph reads
/// them in one fixed offset, UTC unless
/// [`SinceGraph::timestamp_offset`](crate::SinceGraph::timestamp_offset) says
/// otherwise. Comparisons bind the `since` instant in the column's own type
/// (converted to that offset for `timestamp`), so they are exact and can use
/// an index on the column.
///
/// ```
/// use chrono::{DateTime, NaiveDateTime, Utc};
/// use pgpatterns::{ChangeColumn, IntoChangeColumn, Table};
/// let moves = Table::new("moves")?;
/// let tz: ChangeColumn = moves.column::<DateTime<Utc>>("updated_at")?.into();
/// assert_eq!(tz.sql_type(), "timestamptz");
/// let naive: ChangeColumn = moves.column::<NaiveDateTime>("updated_at")?.into();
/// assert_eq!(naive.sql_type(), "timestamp");
/// // A column whose type is only known at run time is checked:
/// let text = moves.column::<String>("name")?.erase();
/// assert!(text.into_change_column().is_err());
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChangeColumn {
    /// A `timestamptz` column.
    Timestamptz(Column<DateTime<Utc>>),
    /// A `timestamp` (without time zone) column, read in the graph's offset.
    Timestamp(Column<NaiveDateTime>),
}

impl std::fmt::Debug for ChangeColumn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChangeColumn::Timestamptz(c) => std::fmt::Debug::fmt(c, f),
            ChangeColumn::Timestamp(c) => std::fmt::Debug::fmt(c, f),
        }
    }
}

impl ChangeColumn {
    /// The table the column belongs to.
    #[must_use]
    pub fn table(&self) -> &Table {
        match self {
            ChangeColumn::Timestamptz(c) => c.table(),
            ChangeColumn::Timestamp(c) => c.table(),
        }
    }

    /// `"timestamptz"` or `"timestamp"`.
    #[must_use]
    pub fn sql_type(&self) -> &'static str {
        match self {
            ChangeColumn::Timestamptz(c) => c.sql_type(),
            ChangeColumn::Timestamp(c) => c.sql_type(),
        }
    }

    /// The column with its type erased.
    #[must_use]
    pub fn erase(&self) -> AnyColumn {
        match self {
            ChangeColumn::Timestamptz(c) => c.erase(),
            ChangeColumn::Timestamp(c) => c.erase(),
        }
    }

    /// The same column on another handle of its table (an alias).
    pub(crate) fn of(&self, table: &Table) -> ChangeColumn {
        match self {
            ChangeColumn::Timestamptz(c) => ChangeColumn::Timestamptz(c.of(table)),
            ChangeColumn::Timestamp(c) => ChangeColumn::Timestamp(c.of(table)),
        }
    }

    /// The column as an expression.
    pub(crate) fn expr(&self) -> Expr {
        match self {
            ChangeColumn::Timestamptz(c) => c.expr(),
            ChangeColumn::Timestamp(c) => c.expr(),
        }
    }

    /// `col >= $since`, the value bound in the column's own type.
    pub(crate) fn changed_since(&self, since: &Since) -> Expr {
        match self {
            ChangeColumn::Timestamptz(c) => c.expr().gte(since.utc.param()),
            ChangeColumn::Timestamp(c) => c.expr().gte(since.naive.param()),
        }
    }

    /// `expr` (a value of this column's type) as a `timestamptz` instant.
    pub(crate) fn instant_of(&self, e: Expr, offset: &FixedOffset) -> Expr {
        match self {
            ChangeColumn::Timestamptz(_) => e,
            ChangeColumn::Timestamp(_) => naive_to_instant(e, offset),
        }
    }
}

/// A `timestamp` expression read in `offset`, as `timestamptz`. Independent
/// of the session's `TimeZone` (an implicit cast would use it).
pub(crate) fn naive_to_instant(e: Expr, offset: &FixedOffset) -> Expr {
    let secs = offset.local_minus_utc();
    if secs == 0 {
        Expr::cust_with_exprs("($1 AT TIME ZONE 'UTC')", [e])
    } else {
        Expr::cust_with_exprs(
            "(($1 - $2 * INTERVAL '1 second') AT TIME ZONE 'UTC')",
            [e, i64::from(secs).param()],
        )
    }
}

/// The first instant PostgreSQL's `timestamp` and `timestamptz` hold,
/// 4714-11-24 00:00:00 BC (year -4713, Julian day 0), in microseconds since
/// the Unix epoch. Their last one (294276 AD) is past chrono's last year, so
/// every later `DateTime` fits.
pub(crate) const PG_MIN_MICROS: i64 = -210_866_803_200_000_000;

/// Whether PostgreSQL can hold this instant (microseconds since the Unix
/// epoch) as a `timestamp` or `timestamptz`, and chrono as a `DateTime`.
pub(crate) fn in_pg_range(micros: i64) -> bool {
    micros >= PG_MIN_MICROS && DateTime::<Utc>::from_timestamp_micros(micros).is_some()
}

/// The `since` instant in both forms a comparison may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Since {
    pub(crate) utc: DateTime<Utc>,
    /// `utc` as wall-clock time in the graph's `timestamp` offset.
    pub(crate) naive: NaiveDateTime,
}

impl Since {
    pub(crate) fn new(utc: DateTime<Utc>, offset: &FixedOffset) -> Result<Since> {
        let naive = utc
            .naive_utc()
            .checked_add_signed(Duration::seconds(i64::from(offset.local_minus_utc())))
            .ok_or_else(|| {
                Error::spec(
                    "since",
                    format!("{utc} is out of range in the offset {offset}"),
                )
            })?;
        let out_of_range = |what: String| {
            Error::spec(
                "since",
                format!(
                    "{what} is out of PostgreSQL's range for timestamps \
                     (4714-11-24 BC to 294276 AD)"
                ),
            )
        };
        if !in_pg_range(utc.timestamp_micros()) {
            return Err(out_of_range(utc.to_string()));
        }
        if !in_pg_range(naive.and_utc().timestamp_micros()) {
            return Err(out_of_range(format!(
                "{utc} (as {naive} in the `timestamp` offset {offset})"
            )));
        }
        Ok(Since { utc, naive })
    }
}

/// Anything that names a change column: typed columns of `DateTime<Utc>` or
/// `NaiveDateTime`, a [`ChangeColumn`], or an [`AnyColumn`] whose SQL type is
/// checked at run time.
pub trait IntoChangeColumn {
    /// The change column.
    ///
    /// # Errors
    /// [`Error::InvalidSpec`] when the column is neither `timestamp` nor
    /// `timestamptz`.
    fn into_change_column(self) -> Result<ChangeColumn>;
}

impl IntoChangeColumn for ChangeColumn {
    fn into_change_column(self) -> Result<ChangeColumn> {
        Ok(self)
    }
}

impl IntoChangeColumn for &ChangeColumn {
    fn into_change_column(self) -> Result<ChangeColumn> {
        Ok(self.clone())
    }
}

impl From<Column<DateTime<Utc>>> for ChangeColumn {
    fn from(c: Column<DateTime<Utc>>) -> Self {
        ChangeColumn::Timestamptz(c)
    }
}

impl From<&Column<DateTime<Utc>>> for ChangeColumn {
    fn from(c: &Column<DateTime<Utc>>) -> Self {
        ChangeColumn::Timestamptz(c.clone())
    }
}

impl From<Column<NaiveDateTime>> for ChangeColumn {
    fn from(c: Column<NaiveDateTime>) -> Self {
        ChangeColumn::Timestamp(c)
    }
}

impl From<&Column<NaiveDateTime>> for ChangeColumn {
    fn from(c: &Column<NaiveDateTime>) -> Self {
        ChangeColumn::Timestamp(c.clone())
    }
}

macro_rules! into_change {
    ($($t:ty),*) => {$(
        impl IntoChangeColumn for $t {
            fn into_change_column(self) -> Result<ChangeColumn> {
                Ok(self.into())
            }
        }
    )*};
}

into_change!(
    Column<DateTime<Utc>>,
    &Column<DateTime<Utc>>,
    Column<NaiveDateTime>,
    &Column<NaiveDateTime>
);

impl IntoChangeColumn for &AnyColumn {
    fn into_change_column(self) -> Result<ChangeColumn> {
        let name = self.name().as_str();
        match self.sql_type() {
            t if t == <DateTime<Utc> as SqlType>::SQL_TYPE => Ok(ChangeColumn::Timestamptz(
                self.table().column::<DateTime<Utc>>(name)?,
            )),
            t if t == <NaiveDateTime as SqlType>::SQL_TYPE => Ok(ChangeColumn::Timestamp(
                self.table().column::<NaiveDateTime>(name)?,
            )),
            other => Err(Error::spec(
                "change column",
                format!(
                    "{}.{} is {other}; a change column must be timestamp or timestamptz",
                    self.table().display_name(),
                    name
                ),
            )),
        }
    }
}

impl IntoChangeColumn for AnyColumn {
    fn into_change_column(self) -> Result<ChangeColumn> {
        (&self).into_change_column()
    }
}
