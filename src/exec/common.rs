//! Shared by the client implementations: where a column is, how a decode
//! error names it, and an error's text with its causes.

use super::ColumnIndex;
use crate::error::BoxError;
use crate::Error;

/// The position of column `idx` in a row of `len` columns named by `name`,
/// with its label for errors (`"amount" (#0)`); or, when the row has no such
/// column, the label (`#2`, `"amont"`) and why, in plain words (a client's
/// own error would say "invalid column `2`").
pub(crate) fn locate<'r>(
    idx: ColumnIndex<'_>,
    len: usize,
    name: impl Fn(usize) -> &'r str,
) -> std::result::Result<(usize, String), (String, BoxError)> {
    let position = match idx {
        ColumnIndex::Position(i) => Some(i).filter(|&i| i < len),
        ColumnIndex::Name(n) => (0..len).position(|i| name(i) == n),
    };
    if let Some(i) = position {
        return Ok((i, format!("{:?} (#{i})", name(i))));
    }
    let column = match idx {
        ColumnIndex::Position(i) => format!("#{i}"),
        ColumnIndex::Name(n) => format!("{n:?}"),
    };
    let names: Vec<String> = (0..len).map(|i| format!("{:?}", name(i))).collect();
    let has = match names.len() {
        0 => "no columns".to_owned(),
        1 => format!("one column, {}", names[0]),
        n => format!("{n} columns: {}", names.join(", ")),
    };
    let why = match idx {
        ColumnIndex::Position(_) => format!("the row has {has}"),
        ColumnIndex::Name(_) => format!("the row has no column of that name; it has {has}"),
    };
    Err((column, why.into()))
}

/// [`Error::Decode`] for reading `column` as `T`.
pub(crate) fn decode_error<T>(column: String, source: BoxError) -> Error {
    Error::Decode {
        column,
        expected: std::any::type_name::<T>(),
        source,
    }
}

/// The server's message followed by its detail and hint, as
/// [`Error::Database`] shows them.
pub(crate) fn server_message(message: &str, detail: Option<&str>, hint: Option<&str>) -> String {
    let mut text = message.to_owned();
    if let Some(detail) = detail {
        text.push_str("; detail: ");
        text.push_str(detail);
    }
    if let Some(hint) = hint {
        text.push_str("; hint: ");
        text.push_str(hint);
    }
    text
}

/// An error's message and its causes', `: `-separated, each cause once
/// (skipped when the text so far already includes it).
pub(crate) fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut next = e.source();
    while let Some(cause) = next {
        let more = cause.to_string();
        if !more.is_empty() && !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        next = cause.source();
    }
    text
}
