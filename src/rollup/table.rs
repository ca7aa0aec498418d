//! Rollup rows as text: one line per row ([`RollupRow`]'s `Display`) or
//! an aligned table ([`RollupTable`]).

use std::fmt;

use chrono::{NaiveDate, NaiveDateTime, NaiveTime, Timelike};
use rust_decimal::Decimal;
use sea_query::Value;

use super::row::RollupRow;

impl RollupRow {
    /// Column `i` (dimensions then metrics) as [`RollupTable`] prints it.
    fn cell(&self, i: usize) -> Cell {
        match self.dims.get(i) {
            Some(_) if self.rolled_up_at(i) => Cell::All,
            Some(v) => Cell::of(v),
            None => Cell::of(&self.metrics[i - self.dims.len()]),
        }
    }

    /// `true` when both rows have the same columns (same handles and names).
    fn same_layout(&self, other: &RollupRow) -> bool {
        self.ids == other.ids && self.dims.len() == other.dims.len() && self.names == other.names
    }
}

/// One line: `name: value` pairs, `(all)` for a rolled-up dimension and
/// `NULL` for a NULL, values as in [`RollupTable`].
impl fmt::Display for RollupRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.names.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{}: {}", escape(name.as_str()), self.cell(i).text())?;
        }
        Ok(())
    }
}

/// Rows printed as an aligned table, the way `psql` prints query results:
/// a header of the output names, one line per row, and the row count.
///
/// - A rolled-up dimension (a subtotal or total row) shows `(all)`, as
///   many BI tools do, and a real NULL shows `NULL`, so neither looks like
///   an empty string. (A text value spelled `(all)` or `NULL` looks the
///   same: use [`RollupRow::dim`] to tell them apart in code.)
/// - Numbers are right-aligned, everything else left-aligned; header names
///   are centred.
/// - Values are printed as PostgreSQL prints them: `numeric` with its scale
///   (`112.3333333333333333`, `25.0000000000000000`), floats in their
///   shortest exact form, in exponent form from `1e+15` (`float8`) or
///   `1e+06` (`float4`) and below `0.0001`, `NaN`, `Infinity`; `bool` as
///   `t`/`f`; timestamps as `2024-05-01 12:30:00.25` (`timestamptz` in UTC,
///   `+00`); `bytea` as `\x0a1b`.
/// - Control characters in names and values are escaped (`\n`, `\t`), so
///   each row stays on one line.
/// - Widths count Unicode scalar values (`chars().count()`): East Asian
///   wide characters and combining marks will misalign the columns.
/// - Rows with other columns (other handles, or the same in another
///   order) start a new table, separated by a blank line; rows of reports
///   made of the same handles in the same order print as one table.
/// - Trailing spaces are trimmed; the text does not end with a newline, so
///   `println!("{}", RollupTable::new(&rows))` prints it as is.
///
/// ```
/// use pgpatterns::{Agg, Dim, Metric, Rollup, RollupTable, Table};
/// use rust_decimal::Decimal;
/// let sale = Table::new("sale")?;
/// let merchant = Dim::new(&sale.column::<String>("merchant")?);
/// let device = Dim::new(&sale.column::<String>("device")?);
/// let total = Metric::new("total", Agg::count_all());
/// let avg = Metric::new("avg_amount", Agg::avg(&sale.column::<i32>("charged_amount")?));
/// let report = Rollup::new(&sale)
///     .rollup((&merchant, &device))
///     .metric(&total)
///     .metric(&avg);
/// // Rows as `report.fetch_all(&client).await?` returns them:
/// let rows = [
///     report.row_builder().set(&merchant, "Costco").set(&device, "D1")
///         .set(&total, 3).set(&avg, Decimal::new(1123333, 4)).build()?,
///     report.row_builder().set(&merchant, "Costco").set_null(&device)
///         .set(&total, 1).set_null(&avg).build()?,
///     report.row_builder().set(&merchant, "Costco").roll_up(&device)
///         .set(&total, 4).set(&avg, Decimal::new(1123333, 4)).build()?,
///     report.row_builder().roll_up(&merchant).roll_up(&device)
///         .set(&total, 4).set(&avg, Decimal::new(1123333, 4)).build()?,
/// ];
/// assert_eq!(
///     RollupTable::new(&rows).to_string(),
///     " merchant | device | total | avg_amount
/// ----------+--------+-------+------------
///  Costco   | D1     |     3 |   112.3333
///  Costco   | NULL   |     1 |       NULL
///  Costco   | (all)  |     4 |   112.3333
///  (all)    | (all)  |     4 |   112.3333
/// (4 rows)"
/// );
/// assert_eq!(
///     rows[2].to_string(),
///     "merchant: Costco, device: (all), total: 4, avg_amount: 112.3333"
/// );
/// # Ok::<(), pgpatterns::Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct RollupTable<'a> {
    rows: &'a [RollupRow],
}

impl<'a> RollupTable<'a> {
    /// The table of `rows` (in their order).
    pub fn new(rows: &'a [RollupRow]) -> RollupTable<'a> {
        RollupTable { rows }
    }
}

impl fmt::Display for RollupTable<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rows.is_empty() {
            return f.write_str("(0 rows)");
        }
        for (k, block) in self.rows.chunk_by(|a, b| a.same_layout(b)).enumerate() {
            if k > 0 {
                f.write_str("\n\n")?;
            }
            table(f, block)?;
        }
        Ok(())
    }
}

/// One table of rows sharing their columns (`rows` is not empty).
fn table(f: &mut fmt::Formatter<'_>, rows: &[RollupRow]) -> fmt::Result {
    let first = &rows[0];
    let header: Vec<String> = first.names.iter().map(|n| escape(n.as_str())).collect();
    let right: Vec<bool> = first
        .dims
        .iter()
        .chain(&first.metrics)
        .map(is_number)
        .collect();
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| (0..header.len()).map(|i| r.cell(i).text()).collect())
        .collect();
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            body.iter()
                .map(|r| width(&r[i]))
                .chain([width(&header[i])])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |f: &mut fmt::Formatter<'_>, sep: &str, cells: &mut dyn Iterator<Item = String>| {
        let text = cells.collect::<Vec<_>>().join(sep);
        f.write_str(text.trim_end())
    };
    line(
        f,
        "|",
        &mut header.iter().zip(&widths).map(|(h, &w)| {
            let pad = w - width(h);
            format!(" {}{h}{} ", " ".repeat(pad / 2), " ".repeat(pad - pad / 2))
        }),
    )?;
    f.write_str("\n")?;
    line(f, "+", &mut widths.iter().map(|w| "-".repeat(w + 2)))?;
    for r in &body {
        f.write_str("\n")?;
        line(
            f,
            "|",
            &mut r.iter().zip(&widths).zip(&right).map(|((c, &w), &right)| {
                let pad = " ".repeat(w - width(c));
                if right {
                    format!(" {pad}{c} ")
                } else {
                    format!(" {c}{pad} ")
                }
            }),
        )?;
    }
    match rows.len() {
        1 => f.write_str("\n(1 row)"),
        n => write!(f, "\n({n} rows)"),
    }
}

/// The width a cell takes: its Unicode scalar values.
fn width(s: &str) -> usize {
    s.chars().count()
}

/// Control characters escaped (`\n`, `\t`, `\u{1b}`), so a cell stays on
/// one line.
fn escape(s: &str) -> String {
    if !s.chars().any(char::is_control) {
        return s.to_owned();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A printed cell.
enum Cell {
    /// A rolled-up dimension.
    All,
    /// A NULL value.
    Null,
    /// A value, as PostgreSQL prints it.
    Text(String),
}

impl Cell {
    fn of(v: &Value) -> Cell {
        if *v == v.as_null() {
            Cell::Null
        } else {
            Cell::Text(escape(&value_text(v)))
        }
    }

    fn text(self) -> String {
        match self {
            Cell::All => "(all)".into(),
            Cell::Null => "NULL".into(),
            Cell::Text(s) => s,
        }
    }
}

/// Numbers are right-aligned, like psql does.
fn is_number(v: &Value) -> bool {
    matches!(
        v,
        Value::TinyInt(_)
            | Value::SmallInt(_)
            | Value::Int(_)
            | Value::BigInt(_)
            | Value::TinyUnsigned(_)
            | Value::SmallUnsigned(_)
            | Value::Unsigned(_)
            | Value::BigUnsigned(_)
            | Value::Float(_)
            | Value::Double(_)
            | Value::Decimal(_)
    )
}

/// A non-NULL value as PostgreSQL's output function writes it.
fn value_text(v: &Value) -> String {
    match v {
        Value::Bool(Some(b)) => if *b { "t" } else { "f" }.into(),
        Value::TinyInt(Some(i)) => i.to_string(),
        Value::SmallInt(Some(i)) => i.to_string(),
        Value::Int(Some(i)) => i.to_string(),
        Value::BigInt(Some(i)) => i.to_string(),
        Value::TinyUnsigned(Some(i)) => i.to_string(),
        Value::SmallUnsigned(Some(i)) => i.to_string(),
        Value::Unsigned(Some(i)) => i.to_string(),
        Value::BigUnsigned(Some(i)) => i.to_string(),
        Value::Float(Some(x)) => float_text(f64::from(*x), x.to_string(), format!("{x:e}"), 6),
        Value::Double(Some(x)) => float_text(*x, x.to_string(), format!("{x:e}"), 15),
        Value::String(Some(s)) => s.clone(),
        Value::Char(Some(c)) => c.to_string(),
        Value::Decimal(Some(d)) => decimal_text(d),
        Value::Bytes(Some(b)) => {
            let mut s = String::with_capacity(2 + 2 * b.len());
            s.push_str("\\x");
            for byte in b {
                s.push_str(&format!("{byte:02x}"));
            }
            s
        }
        Value::ChronoDate(Some(d)) => date_text(d),
        Value::ChronoTime(Some(t)) => time_text(t),
        Value::ChronoDateTime(Some(t)) => datetime_text(t),
        Value::ChronoDateTimeUtc(Some(t)) => format!("{}+00", datetime_text(&t.naive_utc())),
        Value::Uuid(Some(u)) => u.to_string(),
        other => format!("{other:?}"),
    }
}

/// `numeric` keeps its scale (`25.0000`), as PostgreSQL prints it.
fn decimal_text(d: &Decimal) -> String {
    d.to_string()
}

/// PostgreSQL's float output (`extra_float_digits` ≥ 1, the default since
/// PostgreSQL 12): the shortest exact digits, in exponent form (`1e+15`,
/// `1.5e-05`) when the decimal exponent is below -4 or at least
/// `max_fixed` (15 for `float8`, 6 for `float4`).
fn float_text(x: f64, fixed: String, exp: String, max_fixed: i32) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
    }
    let Some((mantissa, e)) = exp.split_once('e') else {
        return fixed;
    };
    let Ok(e) = e.parse::<i32>() else {
        return fixed;
    };
    if (-4..max_fixed).contains(&e) {
        fixed
    } else {
        let sign = if e < 0 { '-' } else { '+' };
        format!("{mantissa}e{sign}{:02}", e.unsigned_abs())
    }
}

/// `.123` (microseconds, trailing zeros dropped) or nothing.
fn fraction(nanos: u32) -> String {
    let micros = (nanos % 1_000_000_000) / 1_000;
    if micros == 0 {
        return String::new();
    }
    let s = format!(".{micros:06}");
    s.trim_end_matches('0').to_owned()
}

fn date_text(d: &NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn time_text(t: &NaiveTime) -> String {
    format!("{}{}", t.format("%H:%M:%S"), fraction(t.nanosecond()))
}

fn datetime_text(t: &NaiveDateTime) -> String {
    format!("{} {}", date_text(&t.date()), time_text(&t.time()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Agg, Dim, Metric, Rollup, Table};
    use chrono::{DateTime, Utc};
    use pretty_assertions::assert_eq;
    use uuid::Uuid;

    fn dec(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn null_and_rolled_up_read_differently_and_numbers_align_right() {
        let t = Table::new("t").unwrap();
        let city = Dim::new(&t.column::<String>("city").unwrap());
        let year = Dim::new(&t.column::<i32>("year").unwrap());
        let n = Metric::new("n", Agg::count_all());
        let sum = Metric::new("amount", Agg::sum(&t.column::<i64>("amount").unwrap()));
        let r = Rollup::new(&t).metric(&n).metric(&sum).cube((&city, &year));
        let row = |city_v: Option<Option<&str>>, year_v: Option<Option<i32>>, n_v: i64, s: &str| {
            let b = r.row_builder();
            let b = match city_v {
                None => b.roll_up(&city),
                Some(None) => b.set_null(&city),
                Some(Some(c)) => b.set(&city, c),
            };
            let b = match year_v {
                None => b.roll_up(&year),
                Some(None) => b.set_null(&year),
                Some(Some(y)) => b.set(&year, y),
            };
            let b = b.set(&n, n_v);
            let b = if s == "NULL" {
                b.set_null(&sum)
            } else {
                b.set(&sum, dec(s))
            };
            b.build().unwrap()
        };
        let rows = [
            row(Some(Some("Zürich")), Some(Some(2024)), 12, "1234.50"),
            row(Some(Some("")), Some(Some(-7)), 1, "-0.5"),
            row(Some(None), Some(None), 3, "NULL"),
            row(Some(Some("Zürich")), None, 12, "1234.50"),
            row(None, Some(None), 3, "NULL"),
            row(None, None, 16, "1234.00"),
        ];
        assert_eq!(
            RollupTable::new(&rows).to_string(),
            [
                "  city  | year  | n  | amount",
                "--------+-------+----+---------",
                " Zürich |  2024 | 12 | 1234.50",
                "        |    -7 |  1 |    -0.5",
                " NULL   |  NULL |  3 |    NULL",
                " Zürich | (all) | 12 | 1234.50",
                " (all)  |  NULL |  3 |    NULL",
                " (all)  | (all) | 16 | 1234.00",
                "(6 rows)",
            ]
            .join("\n")
        );
        assert_eq!(
            rows[4].to_string(),
            "city: (all), year: NULL, n: 3, amount: NULL"
        );
        assert!(rows[2].is_detail() && rows[4].is_subtotal() && rows[5].is_total());
    }

    #[test]
    fn empty_one_row_and_rows_of_two_specs() {
        assert_eq!(RollupTable::new(&[]).to_string(), "(0 rows)");
        let t = Table::new("t").unwrap();
        let long = Dim::named("a long name", t.column::<String>("k").unwrap());
        let a = Rollup::new(&t).dimension(&long);
        let one = a.row_builder().set(&long, "x").build().unwrap();
        let n = Metric::new("n", Agg::count_all());
        let b = Rollup::new(&t).metric(&n);
        let total = b.row_builder().set(&n, 5).build().unwrap();
        assert!(total.is_total());
        assert_eq!(
            RollupTable::new(std::slice::from_ref(&one)).to_string(),
            " a long name\n-------------\n x\n(1 row)"
        );
        let rows = [one.clone(), one, total];
        assert_eq!(
            RollupTable::new(&rows).to_string(),
            " a long name\n-------------\n x\n x\n(2 rows)\n\n n\n---\n 5\n(1 row)"
        );
    }

    #[test]
    fn rows_of_reports_made_of_the_same_handles_are_one_table() {
        let t = Table::new("t").unwrap();
        let k = Dim::new(&t.column::<String>("k").unwrap());
        let n = Metric::new("n", Agg::count_all());
        // Two reports of the same handles (other filters, say).
        let a = Rollup::new(&t).dimension(&k).metric(&n);
        let b = Rollup::new(&t).metric(&n).dimension(&k).with_total();
        let rows = [
            a.row_builder().set(&k, "x").set(&n, 1).build().unwrap(),
            b.row_builder().set(&k, "y").set(&n, 2).build().unwrap(),
            b.row_builder().roll_up(&k).set(&n, 3).build().unwrap(),
        ];
        assert_eq!(
            RollupTable::new(&rows).to_string(),
            [
                "   k   | n",
                "-------+---",
                " x     | 1",
                " y     | 2",
                " (all) | 3",
                "(3 rows)",
            ]
            .join("\n")
        );
        // Other handles under the same names: another table.
        let k2 = Dim::new(&t.column::<String>("k").unwrap());
        let c = Rollup::new(&t).dimension(&k2).metric(&n);
        let other = [
            rows[0].clone(),
            c.row_builder().set(&k2, "z").set(&n, 4).build().unwrap(),
        ];
        assert_eq!(
            RollupTable::new(&other).to_string(),
            " k | n\n---+---\n x | 1\n(1 row)\n\n k | n\n---+---\n z | 4\n(1 row)"
        );
    }

    #[test]
    fn control_characters_are_escaped_and_widths_count_chars() {
        let t = Table::new("t").unwrap();
        let k = Dim::named("k\tey", t.column::<String>("k").unwrap());
        let r = Rollup::new(&t).dimension(&k);
        let rows = [
            r.row_builder().set(&k, "a\nb").build().unwrap(),
            r.row_builder().set(&k, "ééé").build().unwrap(),
        ];
        assert_eq!(
            RollupTable::new(&rows).to_string(),
            " k\\tey\n-------\n a\\nb\n ééé\n(2 rows)"
        );
    }

    fn text(v: Value) -> String {
        value_text(&v)
    }

    #[test]
    fn floats_print_as_postgresql_prints_them() {
        let f8 = |x: f64| text(Value::Double(Some(x)));
        let f4 = |x: f32| text(Value::Float(Some(x)));
        assert_eq!(f8(0.1), "0.1");
        assert_eq!(f8(100.0), "100");
        assert_eq!(f8(-0.0), "-0");
        assert_eq!(f8(0.0001), "0.0001");
        assert_eq!(f8(0.00001), "1e-05");
        assert_eq!(f8(1.5e-7), "1.5e-07");
        assert_eq!(f8(1e14), "100000000000000");
        assert_eq!(f8(1e15), "1e+15");
        assert_eq!(f8(123456789012345678.0), "1.2345678901234568e+17");
        assert_eq!(f8(1.2345e100), "1.2345e+100");
        assert_eq!(f8(f64::NAN), "NaN");
        assert_eq!(f8(f64::INFINITY), "Infinity");
        assert_eq!(f8(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(f4(123456.0), "123456");
        assert_eq!(f4(1234567.0), "1.234567e+06");
        assert_eq!(f4(0.1), "0.1");
        assert_eq!(f4(3.4028235e38), "3.4028235e+38");
    }

    #[test]
    fn other_types_print_as_postgresql_prints_them() {
        assert_eq!(text(Value::Bool(Some(true))), "t");
        assert_eq!(text(Value::Bool(Some(false))), "f");
        assert_eq!(text(Value::Decimal(Some(dec("25.0000")))), "25.0000");
        assert_eq!(text(Value::Decimal(Some(dec("-0.10")))), "-0.10");
        let d = NaiveDate::from_ymd_opt(2024, 5, 1).unwrap();
        assert_eq!(text(Value::ChronoDate(Some(d))), "2024-05-01");
        let t = NaiveTime::from_hms_micro_opt(12, 30, 0, 250_000).unwrap();
        assert_eq!(text(Value::ChronoTime(Some(t))), "12:30:00.25");
        let t0 = NaiveTime::from_hms_opt(7, 0, 9).unwrap();
        assert_eq!(text(Value::ChronoTime(Some(t0))), "07:00:09");
        let ts = d.and_time(NaiveTime::from_hms_micro_opt(1, 2, 3, 4).unwrap());
        assert_eq!(
            text(Value::ChronoDateTime(Some(ts))),
            "2024-05-01 01:02:03.000004"
        );
        let utc = DateTime::<Utc>::from_naive_utc_and_offset(d.and_time(t), Utc);
        assert_eq!(
            text(Value::ChronoDateTimeUtc(Some(utc))),
            "2024-05-01 12:30:00.25+00"
        );
        assert_eq!(
            text(Value::Bytes(Some(vec![0x0a, 0x1b, 0xff]))),
            "\\x0a1bff"
        );
        assert_eq!(text(Value::Bytes(Some(vec![]))), "\\x");
        assert_eq!(
            text(Value::Uuid(Some(Uuid::from_u128(0xa1)))),
            "00000000-0000-0000-0000-0000000000a1"
        );
        assert!(is_number(&Value::Double(None)) && !is_number(&Value::String(None)));
    }
}
