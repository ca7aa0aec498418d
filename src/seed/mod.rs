//! Realistic demo data shaped like the problems this crate answers, generated
//! server-side (`generate_series`, no row-by-row round trips) for examples,
//! benchmarks and tests.
//!
//! Each seeder creates its tables in the connection's current schema (the
//! first schema on `search_path`) and reports progress through a callback
//! taking a [`Progress`](crate::Progress).

pub mod moves;
pub mod orders;
pub mod sales;
pub mod shop;

use crate::{Error, Result};

/// The most rows one seeder run generates: orders (times their drafts),
/// moves, sales, users or shop orders. Larger sizes are refused with
/// [`Error::InvalidSpec`] before anything is sent.
pub const MAX_SEED_ROWS: i64 = 1_000_000_000;

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
}
