//! The first stage: what arrived is a bundle that decodes (`bundle_format`) and carries
//! the nonce issued for this round (`nonce`); or nothing arrived, and the caller named why.

use crate::context::{Arrived, Context, Received};
use crate::findings::Findings;
use custody_formats::bundle::EvidenceBundle;

/// The bundle the later stages appraise, if any.
pub fn open<'a>(
    cx: &Context<'_>,
    arrived: &'a Arrived,
    f: &mut Findings,
) -> (Option<&'a Received>, Option<&'a EvidenceBundle>) {
    match arrived {
        Arrived::Nothing { check, detail } => {
            f.fail(check, detail.clone());
            (None, None)
        }
        Arrived::Bundle(r) => match &r.bundle {
            Ok(b) if b.nonce != *cx.nonce => {
                f.fail(
                    "nonce",
                    "the bundle carries another nonce than the one issued".into(),
                );
                (Some(r), None)
            }
            Ok(b) => (Some(r), Some(b)),
            Err(e) => {
                f.fail("bundle_format", e.clone());
                (Some(r), None)
            }
        },
    }
}
