//! Where a spec's errors surface: once, when it is built or run.
//!
//! Every family's builder steps take `self` and return `Self` without
//! failing; a step given something wrong records the problem here, and the
//! spec reports the first one from `check`, `build`, `to_statement` and
//! every run verb — before any SQL is sent. Steps can therefore come in any
//! order with the same result (`http::request::Builder` and `reqwest`'s
//! builders work the same way).

use crate::error::{Error, Result};

/// The first problem recorded while a spec was built.
#[derive(Debug, Clone, Default)]
pub(crate) struct Problems(Option<Problem>);

/// A recorded input error; cloneable, unlike [`Error`], so specs stay `Clone`.
#[derive(Debug, Clone)]
enum Problem {
    Spec { field: &'static str, reason: String },
    Ident { ident: String, reason: &'static str },
}

impl Problems {
    /// Records `result`'s error unless an earlier one is recorded.
    pub(crate) fn note<T>(&mut self, result: Result<T>) -> Option<T> {
        match result {
            Ok(v) => Some(v),
            Err(e) => {
                if self.0.is_none() {
                    self.0 = Some(match e {
                        Error::InvalidSpec { field, reason } => Problem::Spec { field, reason },
                        Error::InvalidIdentifier { ident, reason } => {
                            Problem::Ident { ident, reason }
                        }
                        other => Problem::Spec {
                            field: "spec",
                            reason: other.to_string(),
                        },
                    });
                }
                None
            }
        }
    }

    /// The first recorded problem as an error.
    pub(crate) fn check(&self) -> Result<()> {
        match &self.0 {
            None => Ok(()),
            Some(Problem::Spec { field, reason }) => Err(Error::InvalidSpec {
                field,
                reason: reason.clone(),
            }),
            Some(Problem::Ident { ident, reason }) => Err(Error::InvalidIdentifier {
                ident: ident.clone(),
                reason,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_problem_is_kept() {
        let mut p = Problems::default();
        assert!(p.check().is_ok());
        assert_eq!(p.note(Ok::<_, Error>(3)), Some(3));
        assert!(p.check().is_ok());
        assert!(p.note::<()>(Err(Error::spec("a", "first"))).is_none());
        p.note::<()>(Err(Error::spec("b", "second")));
        let e = p.check().unwrap_err();
        assert_eq!(e.to_string(), "invalid a: first");
        // Checking does not consume the problem.
        assert!(p.clone().check().is_err());
        let mut q = Problems::default();
        q.note::<()>(Err(crate::Ident::new("").unwrap_err()));
        assert!(matches!(q.check(), Err(Error::InvalidIdentifier { .. })));
    }
}
