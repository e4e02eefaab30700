//! Named checks: what every verifier and every refusal in Custody reports, the checks
//! it ran in order and either typed claims or the one check that failed.

use serde::Serialize;
use std::fmt;

/// One check and its outcome, as the CLI prints it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// An error that names the check it failed. Every verifier's error type implements this,
/// so a rejection always says which check refused the evidence.
pub trait FailedCheck: std::error::Error {
    /// Stable, machine-readable check name (`signature`, `nonce`, `cert_chain`, ...).
    fn check(&self) -> &'static str;
}

/// Evidence that passed every check.
#[derive(Debug, Clone)]
pub struct Verified<C> {
    pub checks: Vec<Check>,
    pub claims: C,
}

/// Evidence that failed: the checks that passed before, then the failure.
#[derive(Debug)]
pub struct Rejected<E> {
    pub passed: Vec<Check>,
    pub error: E,
}

impl<E: FailedCheck> Rejected<E> {
    /// All checks including the failed one, last.
    pub fn checks(&self) -> Vec<Check> {
        let mut v = self.passed.clone();
        v.push(Check {
            name: self.error.check(),
            ok: false,
            detail: self.error.to_string(),
        });
        v
    }
}

impl<E: FailedCheck> fmt::Display for Rejected<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "check `{}` failed: {}", self.error.check(), self.error)
    }
}

/// Records passed checks while a verifier runs.
#[derive(Debug, Default)]
pub struct CheckLog(Vec<Check>);

impl CheckLog {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn pass(&mut self, name: &'static str, detail: impl Into<String>) {
        self.0.push(Check {
            name,
            ok: true,
            detail: detail.into(),
        });
    }

    /// Turn an error into a rejection carrying the checks that passed so far.
    pub fn reject<E>(self, error: E) -> Rejected<E> {
        Rejected {
            passed: self.0,
            error,
        }
    }

    pub fn finish<C>(self, claims: C) -> Verified<C> {
        Verified {
            checks: self.0,
            claims,
        }
    }
}
