//! What every evidence verifier reports: the checks it ran, in order, and either typed
//! claims or the one check that failed. The vocabulary (`FailedCheck`, `CheckLog`, ...)
//! lives in `custody-types`, which crates that do not appraise share.

pub use custody_types::check::{Check, CheckLog, FailedCheck, Rejected, Verified};
use serde::Serialize;

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
