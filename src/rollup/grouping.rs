//! The grouping syntax sea-query has no API for: `GROUPING SETS`, `ROLLUP`,
//! `CUBE` and `GROUPING()`.
//!
//! All four are printed through [`Func::cust`] with `&'static str` names
//! written here (never a caller's text); their arguments are ordinary
//! sea-query expressions, so quoting and `$n` numbering stay sea-query's.
//! This module also expands a `GROUP BY` list into the grouping sets
//! PostgreSQL will compute, to validate specs before any SQL is sent and to
//! name each row's level.

use sea_query::{Expr, Func};

use crate::{Error, Result};

/// At most this many dimensions: `GROUPING(…)` returns an `int4` bitmask.
pub const MAX_DIMENSIONS: usize = 31;
/// PostgreSQL refuses `CUBE` over more than 12 elements (4096 sets).
pub const MAX_CUBE_DIMENSIONS: usize = 12;
/// PostgreSQL refuses more than 4096 grouping sets in one `GROUP BY`.
pub const MAX_GROUPING_SETS: usize = 4096;

/// One entry of the `GROUP BY` list, over dimension positions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Element {
    /// A dimension grouped at every level.
    Plain(usize),
    /// `ROLLUP(a, b, …)`: `(a, b, …)`, …, `(a)`, `()`.
    Rollup(Vec<usize>),
    /// `CUBE(a, b, …)`: every subset.
    Cube(Vec<usize>),
    /// `GROUPING SETS ((…), (…), …)`.
    Sets(Vec<Vec<usize>>),
    /// `GROUPING SETS ((every dimension), ())`: detail rows plus one total.
    WithTotal,
}

fn bits(dims: &[usize]) -> u32 {
    dims.iter().fold(0, |acc, &d| acc | (1 << d))
}

impl Element {
    /// The grouping sets of this element, each a bitset of the dimensions
    /// it groups by (bit `i` = dimension `i`).
    fn sets(&self, n_dims: usize) -> Vec<u32> {
        match self {
            Element::Plain(d) => vec![1 << d],
            Element::Rollup(dims) => (0..=dims.len()).rev().map(|k| bits(&dims[..k])).collect(),
            Element::Cube(dims) => {
                let n = dims.len();
                // Largest sets first, like PostgreSQL's own expansion.
                let mut subsets: Vec<u32> = (0..1u32 << n)
                    .rev()
                    .map(|pick| {
                        (0..n)
                            .filter(|i| pick & (1 << i) != 0)
                            .fold(0, |acc, i| acc | (1 << dims[i]))
                    })
                    .collect();
                subsets.dedup();
                subsets
            }
            Element::Sets(sets) => sets.iter().map(|s| bits(s)).collect(),
            Element::WithTotal => vec![all_dims(n_dims), 0],
        }
    }

    /// The element as SQL, given each dimension's expression.
    pub(crate) fn to_expr(&self, dims: &[Expr]) -> Expr {
        let pick = |ds: &[usize]| -> Vec<Expr> { ds.iter().map(|&d| dims[d].clone()).collect() };
        match self {
            Element::Plain(d) => dims[*d].clone(),
            Element::Rollup(ds) => Func::cust("ROLLUP").args(pick(ds)).into(),
            Element::Cube(ds) => Func::cust("CUBE").args(pick(ds)).into(),
            Element::Sets(sets) => grouping_sets(sets.iter().map(|s| pick(s))),
            Element::WithTotal => grouping_sets([dims.to_vec(), Vec::new()]),
        }
    }
}

/// `GROUPING SETS ((a, b), (a), ())`.
fn grouping_sets(sets: impl IntoIterator<Item = Vec<Expr>>) -> Expr {
    Func::cust("GROUPING SETS")
        .args(sets.into_iter().map(Expr::tuple))
        .into()
}

/// `GROUPING(a, b, …)`: bit `n-1-i` is set when dimension `i` is rolled up
/// (aggregated away) in a row.
pub(crate) fn grouping(dims: &[Expr]) -> Expr {
    Func::cust("GROUPING").args(dims.iter().cloned()).into()
}

/// The bitset with every one of `n` dimensions.
pub(crate) fn all_dims(n: usize) -> u32 {
    if n >= 32 {
        u32::MAX
    } else {
        (1u32 << n) - 1
    }
}

/// The `GROUPING(…)` bitmask PostgreSQL reports for a row of grouping set
/// `set` (a bitset of grouped dimensions) over `n` dimensions.
#[cfg(test)]
pub(crate) fn mask_of(set: u32, n: usize) -> u32 {
    (0..n)
        .filter(|i| set & (1 << i) == 0)
        .fold(0, |acc, i| acc | (1 << (n - 1 - i)))
}

/// The grouping sets a `GROUP BY` list computes: the cross product of its
/// elements' sets (PostgreSQL's semantics), each a bitset of dimensions.
/// Dimensions named by no element are grouped at every level.
///
/// # Errors
/// [`Error::InvalidSpec`] for more than [`MAX_GROUPING_SETS`] sets, or a set
/// that appears twice (PostgreSQL would return its rows twice).
pub(crate) fn expand(elements: &[Element], n_dims: usize) -> Result<Vec<u32>> {
    let mut named = 0u32;
    let mut sets = vec![0u32];
    for e in elements {
        let mine = e.sets(n_dims);
        named |= mine.iter().fold(0, |a, s| a | s);
        if let Element::Plain(d) = e {
            named |= 1 << d;
        }
        if sets.len().saturating_mul(mine.len()) > MAX_GROUPING_SETS {
            return Err(Error::spec(
                "grouping",
                format!("more than {MAX_GROUPING_SETS} grouping sets (PostgreSQL's limit)"),
            ));
        }
        sets = sets
            .iter()
            .flat_map(|a| mine.iter().map(move |b| a | b))
            .collect();
    }
    let always = all_dims(n_dims) & !named;
    for s in &mut sets {
        *s |= always;
    }
    let mut seen = std::collections::HashSet::new();
    for s in &sets {
        if !seen.insert(*s) {
            return Err(Error::spec(
                "grouping",
                "a grouping set appears twice in the expanded GROUP BY (PostgreSQL would return \
                 its rows twice); combine the elements differently",
            ));
        }
    }
    Ok(sets)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollup_and_cube_expand_like_postgresql() {
        assert_eq!(
            expand(&[Element::Rollup(vec![0, 1])], 2).unwrap(),
            vec![0b11, 0b01, 0]
        );
        assert_eq!(
            expand(&[Element::Cube(vec![0, 1])], 2).unwrap(),
            vec![0b11, 0b10, 0b01, 0]
        );
        // GROUP BY d0, ROLLUP(d1): d0 at every level.
        assert_eq!(
            expand(&[Element::Rollup(vec![1])], 2).unwrap(),
            vec![0b11, 0b01]
        );
        assert_eq!(expand(&[Element::WithTotal], 3).unwrap(), vec![0b111, 0]);
        assert!(expand(&[Element::Rollup(vec![0]), Element::WithTotal], 1).is_err());
        assert_eq!(mask_of(0b01, 2), 0b01); // d1 rolled up: low bit
        assert_eq!(mask_of(0b10, 2), 0b10); // d0 rolled up: high bit
        assert_eq!(mask_of(0, 3), 0b111);
    }
}
