//! Progress reports for long-running operations (seeders, backfills, batched
//! moves and deletes).

/// How far a long-running operation has got, passed to the caller's callback
/// after each step (for a progress bar, a log line, or a cancellation check).
///
/// `done` never decreases within one `stage`; `total` is the number of units
/// the stage expects (rows, batches), or `None` when it cannot be known
/// without an extra scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// What is being done, e.g. `"orders"` or `"backfill"`.
    pub stage: &'static str,
    /// Units finished so far in this stage.
    pub done: u64,
    /// Units this stage expects, when known.
    pub total: Option<u64>,
}

impl Progress {
    /// A report for `stage` with `done` of `total` units finished.
    #[must_use]
    pub fn new(stage: &'static str, done: u64, total: Option<u64>) -> Self {
        Self { stage, done, total }
    }

    /// `done / total` in `0.0..=1.0`, when the total is known and non-zero.
    #[must_use]
    pub fn fraction(&self) -> Option<f64> {
        match self.total {
            Some(0) | None => None,
            Some(total) => Some((self.done as f64 / total as f64).min(1.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fraction_is_clamped_and_none_without_total() {
        assert_eq!(Progress::new("x", 5, Some(10)).fraction(), Some(0.5));
        assert_eq!(Progress::new("x", 12, Some(10)).fraction(), Some(1.0));
        assert_eq!(Progress::new("x", 1, None).fraction(), None);
        assert_eq!(Progress::new("x", 0, Some(0)).fraction(), None);
    }
}
