//! Every `SqlType` bound through each client and read back unchanged.
//!
//! One plan of statements and expected results ([`plan`]) is run by the
//! tokio-postgres client, the deadpool pool, both through `Prepared`, the
//! sync postgres client, and sqlx (a pool, and a connection in `SqlxConn`).

use std::fmt::Debug;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use pgpatterns::sea_query::{Expr, ExprTrait, Order, Query};
use pgpatterns::{
    AnyColumn, BlockingExecutor, BuiltQuery, Column, Executor, FromRow, Prepared, Result, RowRead,
    SqlType, SqlxConn, Table,
};
use rust_decimal::Decimal;
use tokio_postgres::types::FromSqlOwned;
use uuid::Uuid;

use crate::support::{
    client, create_table, insert, pool, schema, sqlx_conn, sqlx_pool, with_sync_client,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_through_tokio_postgres() {
    let schema = schema().await;
    run(&client(&schema).await, &plan()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_through_deadpool() {
    let schema = schema().await;
    run(&pool(&schema), &plan()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_through_prepared_statements() {
    let schema = schema().await;
    run(&Prepared::new(client(&schema).await), &plan()).await;
    let schema = crate::support::schema().await;
    run(&Prepared::new(pool(&schema)), &plan()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_through_sqlx() {
    let schema = schema().await;
    run(&sqlx_pool(&schema), &plan()).await;
    let schema = crate::support::schema().await;
    let mut conn = sqlx_conn(&schema).await;
    run(&SqlxConn::new(&mut conn), &plan()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_type_round_trips_through_sync_postgres() {
    let schema = schema().await;
    with_sync_client(&schema, |client| run_blocking(client, &plan())).await;
}

/// A table with one nullable column of every `SqlType`.
struct Cols {
    table: Table,
    id: Column<i32>,
    flag: Column<bool>,
    small: Column<i16>,
    int: Column<i32>,
    big: Column<i64>,
    real: Column<f32>,
    double: Column<f64>,
    text: Column<String>,
    num: Column<Decimal>,
    at: Column<DateTime<Utc>>,
    local: Column<NaiveDateTime>,
    day: Column<NaiveDate>,
    time: Column<NaiveTime>,
    uid: Column<Uuid>,
    bytes: Column<Vec<u8>>,
}

impl Cols {
    fn new() -> Result<Cols> {
        let table = Table::new("every_type")?;
        Ok(Cols {
            id: table.column("id")?,
            flag: table.column("flag")?,
            small: table.column("small")?,
            int: table.column("int")?,
            big: table.column("big")?,
            real: table.column("real")?,
            double: table.column("double")?,
            text: table.column("text")?,
            num: table.column("num")?,
            at: table.column("at")?,
            local: table.column("local")?,
            day: table.column("day")?,
            time: table.column("time")?,
            uid: table.column("uid")?,
            bytes: table.column("bytes")?,
            table,
        })
    }

    fn all(&self) -> Vec<AnyColumn> {
        vec![
            self.id.erase(),
            self.flag.erase(),
            self.small.erase(),
            self.int.erase(),
            self.big.erase(),
            self.real.erase(),
            self.double.erase(),
            self.text.erase(),
            self.num.erase(),
            self.at.erase(),
            self.local.erase(),
            self.day.erase(),
            self.time.erase(),
            self.uid.erase(),
            self.bytes.erase(),
        ]
    }

    /// `SELECT id FROM every_type WHERE <cond> ORDER BY id`.
    fn ids_where(&self, cond: Expr) -> BuiltQuery {
        BuiltQuery::from(
            &Query::select()
                .column(self.id.col_ref())
                .from(self.table.table_ref())
                .and_where(cond)
                .order_by(self.id.col_ref(), Order::Asc)
                .to_owned(),
        )
    }
}

/// One row of `every_type`; `None` is SQL NULL.
#[derive(Debug, Clone, PartialEq, Default)]
struct Sample {
    id: i32,
    flag: Option<bool>,
    small: Option<i16>,
    int: Option<i32>,
    big: Option<i64>,
    real: Option<f32>,
    double: Option<f64>,
    text: Option<String>,
    num: Option<Decimal>,
    at: Option<DateTime<Utc>>,
    local: Option<NaiveDateTime>,
    day: Option<NaiveDate>,
    time: Option<NaiveTime>,
    uid: Option<Uuid>,
    bytes: Option<Vec<u8>>,
}

impl Sample {
    /// The row's values as bound parameters, in [`Cols::all`] order: each
    /// through [`SqlType::param`], NULLs through [`SqlType::param_opt`].
    fn params(&self) -> Vec<Expr> {
        fn bind<T: SqlType>(v: &Option<T>) -> Expr {
            match v.clone() {
                Some(v) => v.param(),
                None => T::param_opt(None),
            }
        }
        vec![
            self.id.param(),
            bind(&self.flag),
            bind(&self.small),
            bind(&self.int),
            bind(&self.big),
            bind(&self.real),
            bind(&self.double),
            bind(&self.text),
            bind(&self.num),
            bind(&self.at),
            bind(&self.local),
            bind(&self.day),
            bind(&self.time),
            bind(&self.uid),
            bind(&self.bytes),
        ]
    }
}

/// Read by column name, through [`RowRead::try_get`].
impl FromRow for Sample {
    fn from_row<R: RowRead>(row: &R) -> Result<Self> {
        Ok(Sample {
            id: row.try_get("id".into())?,
            flag: row.try_get("flag".into())?,
            small: row.try_get("small".into())?,
            int: row.try_get("int".into())?,
            big: row.try_get("big".into())?,
            real: row.try_get("real".into())?,
            double: row.try_get("double".into())?,
            text: row.try_get("text".into())?,
            num: row.try_get("num".into())?,
            at: row.try_get("at".into())?,
            local: row.try_get("local".into())?,
            day: row.try_get("day".into())?,
            time: row.try_get("time".into())?,
            uid: row.try_get("uid".into())?,
            bytes: row.try_get("bytes".into())?,
        })
    }
}

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

fn time(h: u32, m: u32, s: u32, micro: u32) -> NaiveTime {
    NaiveTime::from_hms_micro_opt(h, m, s, micro).expect("valid time")
}

/// Row 1: ordinary values; row 2: extremes; row 3: all NULL.
fn samples() -> [Sample; 3] {
    [
        Sample {
            id: 1,
            flag: Some(true),
            small: Some(12_345),
            int: Some(-7),
            // 2^53 + 1: not representable as f64, so a lossy path would show.
            big: Some(9_007_199_254_740_993),
            real: Some(-1_234.567_9),
            double: Some(0.1 + 0.2),
            text: Some("héllo wörld 👋 — 日本語 'single' \"double\" \\ ;".into()),
            num: Some(Decimal::from_str("112.3333333333333333").expect("decimal")),
            at: Some(
                Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap()
                    + chrono::Duration::microseconds(123_456),
            ),
            local: Some(date(1999, 12, 31).and_time(time(23, 59, 59, 999_999))),
            day: Some(date(2024, 2, 29)),
            time: Some(time(13, 37, 0, 1)),
            uid: Some(Uuid::from_str("67e55044-10b1-426f-9247-bb680e5fe0c8").expect("uuid")),
            bytes: Some(vec![0, 1, 2, 0x7f, 0x80, 0xff, b'\'', b'\\', 0]),
        },
        Sample {
            id: 2,
            flag: Some(false),
            small: Some(i16::MIN),
            int: Some(i32::MAX),
            big: Some(i64::MIN),
            real: Some(f32::MAX),
            double: Some(-f64::MIN_POSITIVE),
            text: Some(String::new()),
            num: Some(Decimal::MIN),
            at: Some(Utc.with_ymd_and_hms(1066, 10, 14, 9, 0, 0).unwrap()),
            local: Some(date(9999, 12, 31).and_time(time(23, 59, 59, 999_999))),
            day: Some(date(1, 1, 1)),
            time: Some(time(0, 0, 0, 0)),
            uid: Some(Uuid::from_u128(u128::MAX)),
            bytes: Some((0..=255).collect()),
        },
        Sample {
            id: 3,
            ..Sample::default()
        },
    ]
}

/// Checks a statement's rows (of a client's row type `R`); `Err` describes
/// the mismatch.
type Check<R> = Box<dyn Fn(&[R]) -> Result<(), String> + Send + Sync>;

/// What one statement must return.
enum Expect<R> {
    /// `execute` reports this many affected rows.
    Affected(u64),
    /// `query`'s rows pass this check.
    Rows(Check<R>),
}

/// A statement and its expected outcome, runnable by any client.
struct Step<R> {
    query: BuiltQuery,
    expect: Expect<R>,
}

impl<R: RowRead + 'static> Step<R> {
    fn affected(query: BuiltQuery, n: u64) -> Step<R> {
        Step {
            query,
            expect: Expect::Affected(n),
        }
    }

    /// `query` returns exactly `expected`, each row decoded as `T`.
    fn rows<T>(query: BuiltQuery, expected: Vec<T>) -> Step<R>
    where
        T: FromRow + PartialEq + Debug + Send + Sync + 'static,
    {
        let check = move |rows: &[R]| {
            let got = rows
                .iter()
                .map(T::from_row)
                .collect::<Result<Vec<T>>>()
                .map_err(|e| format!("decoding failed: {e}"))?;
            if got == expected {
                Ok(())
            } else {
                Err(format!("got      {got:?}\nexpected {expected:?}"))
            }
        };
        Step {
            query,
            expect: Expect::Rows(Box::new(check)),
        }
    }

    /// Panics with the statement (SQL and values) unless `got` matches.
    fn judge(&self, got: Result<Got<R>>) {
        let mismatch = match (&self.expect, got) {
            (_, Err(e)) => format!("failed: {e}"),
            (Expect::Affected(n), Ok(Got::Affected(got))) if got == *n => return,
            (Expect::Affected(n), Ok(Got::Affected(got))) => {
                format!("affected {got} rows, expected {n}")
            }
            (Expect::Rows(check), Ok(Got::Rows(rows))) => match check(&rows) {
                Ok(()) => return,
                Err(e) => e,
            },
            _ => unreachable!("the runners execute Affected steps and query Rows steps"),
        };
        panic!("{}\n{mismatch}", self.query);
    }
}

/// What a client returned for a [`Step`].
enum Got<R> {
    Affected(u64),
    Rows(Vec<R>),
}

async fn run<E: Executor>(e: &E, plan: &[Step<E::Row>])
where
    E::Row: 'static,
{
    for step in plan {
        let got = match step.expect {
            Expect::Affected(_) => e.run(&step.query).await.map(Got::Affected),
            Expect::Rows(_) => e.rows(&step.query).await.map(Got::Rows),
        };
        step.judge(got);
    }
}

fn run_blocking<E: BlockingExecutor>(e: &mut E, plan: &[Step<E::Row>])
where
    E::Row: 'static,
{
    for step in plan {
        let got = match step.expect {
            Expect::Affected(_) => e.run(&step.query).map(Got::Affected),
            Expect::Rows(_) => e.rows(&step.query).map(Got::Rows),
        };
        step.judge(got);
    }
}

/// Everything each client must get right, in order.
fn plan<R: RowRead + 'static>() -> Vec<Step<R>> {
    let c = Cols::new().expect("valid names");
    let rows = samples();
    let mut plan = vec![
        Step::affected(BuiltQuery::schema(&create_table(&c.table, &c.all())), 0),
        Step::affected(
            insert(&c.table, &c.all(), rows.iter().map(Sample::params)),
            3,
        ),
        // Every column of every row, NULLs included, read back by name.
        Step::rows(
            BuiltQuery::from(
                &Query::select()
                    .column(c.table.all_columns())
                    .from(c.table.table_ref())
                    .order_by(c.id.col_ref(), Order::Asc)
                    .to_owned(),
            ),
            rows.to_vec(),
        ),
        // The server stored the decimal digit for digit (scale kept).
        Step::rows(
            BuiltQuery::from(
                &Query::select()
                    .expr(c.num.expr().cast_as("text"))
                    .from(c.table.table_ref())
                    .and_where(c.id.eq(1))
                    .to_owned(),
            ),
            vec![("112.3333333333333333".to_owned(),)],
        ),
        // Decimals at the edges of rust_decimal's range, as one numeric[] parameter.
        array_round_trip(vec![
            Decimal::from_str("112.3333333333333333").expect("decimal"),
            Decimal::from_str("-0.0000000000000000000000000001").expect("decimal"),
            Decimal::from_str("-12345678901234567890.123456789").expect("decimal"),
            Decimal::MAX,
            Decimal::MIN,
            Decimal::ZERO,
        ]),
    ];
    plan.extend(typed(&c, &c.flag, |s| s.flag));
    plan.extend(typed(&c, &c.small, |s| s.small));
    plan.extend(typed(&c, &c.int, |s| s.int));
    plan.extend(typed(&c, &c.big, |s| s.big));
    plan.extend(typed(&c, &c.real, |s| s.real));
    plan.extend(typed(&c, &c.double, |s| s.double));
    plan.extend(typed(&c, &c.text, |s| s.text.clone()));
    plan.extend(typed(&c, &c.num, |s| s.num));
    plan.extend(typed(&c, &c.at, |s| s.at));
    plan.extend(typed(&c, &c.local, |s| s.local));
    plan.extend(typed(&c, &c.day, |s| s.day));
    plan.extend(typed(&c, &c.time, |s| s.time));
    plan.extend(typed(&c, &c.uid, |s| s.uid));
    plan.extend(typed(&c, &c.bytes, |s| s.bytes.clone()));
    plan.extend(coerced());
    plan
}

/// `SELECT $1::T[]` gives back the same list.
fn array_round_trip<R: RowRead + 'static, T>(values: Vec<T>) -> Step<R>
where
    T: SqlType + FromSqlOwned + PartialEq,
{
    Step::rows(
        BuiltQuery::from(
            &Query::select()
                .expr(T::array_param(values.clone()))
                .to_owned(),
        ),
        vec![(values,)],
    )
}

/// Filters on one column with values of its type: `=`, `= ANY(array)`,
/// `IS NULL`, a typed NULL parameter and an array parameter round trip.
fn typed<R: RowRead + 'static, T>(
    c: &Cols,
    col: &Column<T>,
    field: impl Fn(&Sample) -> Option<T>,
) -> Vec<Step<R>>
where
    T: SqlType + FromSqlOwned + PartialEq,
{
    let [one, two, null] = samples();
    let (v1, v2) = (
        field(&one).expect("row 1 has a value"),
        field(&two).expect("row 2 has a value"),
    );
    assert_eq!(field(&null), None, "row 3 is NULL");
    vec![
        Step::rows(c.ids_where(col.eq(v1.clone())), vec![(1,)]),
        Step::rows(c.ids_where(col.eq(v2.clone())), vec![(2,)]),
        Step::rows(
            c.ids_where(col.is_in([v2.clone(), v1.clone()])),
            vec![(1,), (2,)],
        ),
        Step::rows(
            c.ids_where(col.is_in(Vec::<T>::new())),
            Vec::<(i32,)>::new(),
        ),
        Step::rows(c.ids_where(col.is_null()), vec![(3,)]),
        Step::rows(
            BuiltQuery::from(&Query::select().expr(T::param_opt(None)).to_owned()),
            vec![(None::<T>,)],
        ),
        array_round_trip(vec![v1, v2]),
    ]
}

/// Columns declared narrower than the handle's type: `Column<i64>` on `int2`
/// and `int4` columns, `Column<f64>` on `float4`. Parameters are cast to the
/// handle's type and the server compares across types, as it does for literals.
fn coerced<R: RowRead + 'static>() -> Vec<Step<R>> {
    let table = Table::new("narrow").expect("valid name");
    let col = |name| table.column::<i64>(name).expect("valid name");
    let (id, small, int) = (col("id"), col("small"), col("int"));
    let real = table.column::<f64>("real").expect("valid name");
    // The columns as they are declared.
    let declared = [
        table.column::<i32>("id").expect("valid name").erase(),
        table.column::<i16>("small").expect("valid name").erase(),
        table.column::<i32>("int").expect("valid name").erase(),
        table.column::<f32>("real").expect("valid name").erase(),
    ];
    let ids_where = |cond: Expr| {
        BuiltQuery::from(
            &Query::select()
                .column(id.col_ref())
                .from(table.table_ref())
                .and_where(cond)
                .order_by(id.col_ref(), Order::Asc)
                .to_owned(),
        )
    };
    vec![
        Step::affected(BuiltQuery::schema(&create_table(&table, &declared)), 0),
        Step::affected(
            insert(
                &table,
                &declared,
                [
                    vec![1i32.param(), 5i16.param(), 5i32.param(), 0.5f32.param()],
                    vec![2i32.param(), 6i16.param(), 7i32.param(), 1.5f32.param()],
                    vec![
                        3i32.param(),
                        i16::param_opt(None),
                        i32::param_opt(None),
                        f32::param_opt(None),
                    ],
                ],
            ),
            3,
        ),
        Step::rows(ids_where(int.eq(5i64)), vec![(1i32,)]),
        Step::rows(ids_where(small.eq(6i64)), vec![(2i32,)]),
        Step::rows(ids_where(int.is_in([7i64, 99])), vec![(2i32,)]),
        Step::rows(ids_where(small.gt(5i64)), vec![(2i32,)]),
        Step::rows(ids_where(real.eq(1.5f64)), vec![(2i32,)]),
        Step::rows(ids_where(id.is_in([1i64, 2])), vec![(1i32,), (2i32,)]),
        // Every comparison operator; NULL rows match none but IS DISTINCT FROM.
        Step::rows(ids_where(int.ne(5i64)), vec![(2i32,)]),
        Step::rows(ids_where(int.lt(7i64)), vec![(1i32,)]),
        Step::rows(ids_where(int.lte(7i64)), vec![(1i32,), (2i32,)]),
        Step::rows(ids_where(int.gt(5i64)), vec![(2i32,)]),
        Step::rows(ids_where(int.gte(5i64)), vec![(1i32,), (2i32,)]),
        Step::rows(
            ids_where(int.is_distinct_from(5i64)),
            vec![(2i32,), (3i32,)],
        ),
        Step::rows(ids_where(int.is_not_null()), vec![(1i32,), (2i32,)]),
        // Placeholders stay numbered in order around IS DISTINCT FROM.
        Step::rows(
            ids_where(
                id.gt(1i64)
                    .and(real.is_distinct_from(1.5f64))
                    .and(id.lt(9i64)),
            ),
            vec![(3i32,)],
        ),
    ]
}
