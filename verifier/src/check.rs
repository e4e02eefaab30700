//! What every evidence verifier reports: the checks it ran, in order, and either typed
//! claims or the one check that failed.

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

/// Shorthand used inside verifiers: `step(&mut log, result)?` style without losing the log.
pub type Outcome<C, E> = Result<Verified<C>, Rejected<E>>;

/// The common seam: one implementation per evidence kind. Endorsements (pinned roots,
/// reference values) live in the implementing value; the evidence and the appraisal time
/// are arguments, so verification is pure and repeatable.
pub trait EvidenceVerifier {
    /// Borrowed evidence of this kind.
    type Evidence<'a>;
    /// Typed claims produced on success.
    type Claims: Serialize;
    /// Typed failure naming the check.
    type Error: FailedCheck;

    /// Short kind name used in reports and submods (`tpm`, `snp`, `nvgpu`).
    const KIND: &'static str;

    fn verify(&self, evidence: Self::Evidence<'_>, at: UnixTime) -> Outcome<Self::Claims, Self::Error>;
}

/// Seconds since the Unix epoch; the appraisal time is always passed in, never read here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct UnixTime(pub i64);

/// The JSON object the CLI prints: `{"kind","verified","checks","claims"}`.
#[derive(Debug, Serialize)]
pub struct Report<'a, C: Serialize> {
    pub kind: &'a str,
    pub verified: bool,
    pub checks: Vec<Check>,
    pub claims: Option<C>,
}

impl<'a, C: Serialize> Report<'a, C> {
    pub fn from_outcome<E: FailedCheck>(kind: &'a str, o: Outcome<C, E>) -> (Self, Option<Rejected<E>>) {
        match o {
            Ok(v) => (
                Self {
                    kind,
                    verified: true,
                    checks: v.checks,
                    claims: Some(v.claims),
                },
                None,
            ),
            Err(r) => (
                Self {
                    kind,
                    verified: false,
                    checks: r.checks(),
                    claims: None,
                },
                Some(r),
            ),
        }
    }
}
