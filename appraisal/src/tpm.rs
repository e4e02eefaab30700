//! The TPM stage: `tpm_present` -> `ak_enrolled` -> the quote's own checks against the
//! round's binding -> `clock_monotonic` -> `pcr_selection` -> the group's reference values
//! (`reference_values`, or `reference_pending` while a learnt baseline awaits approval).

use crate::context::{Context, Reference, ReferenceMode, ReferenceSource, TpmClock};
use crate::findings::{failed_submod, mark_failed, Findings, REFERENCE_PENDING};
use crate::AppraisalError;
use custody_formats::binding::Binding;
use custody_formats::bundle::EvidenceBundle;
use custody_verifier::check::{EvidenceVerifier, FailedCheck, UnixTime};
use custody_verifier::ear::{ClaimValue, Corroboration, Submod};
use custody_verifier::tpm::{TpmEvidence, TpmVerifier};
use std::collections::{BTreeMap, BTreeSet};

/// PCR values per bank name, as quoted.
pub type Pcrs = BTreeMap<String, BTreeMap<u32, String>>;

/// What the TPM stage decided besides its findings.
#[derive(Debug, Default)]
pub struct TpmStage {
    /// The quote's clock, kept when the round passes.
    pub clock: Option<TpmClock>,
    /// Reference values learnt from this round (trust on first use).
    pub learned: Option<Reference>,
    /// What the PCRs were compared with, when they were.
    pub reference_source: Option<ReferenceSource>,
}

/// Appraise the bundle's TPM evidence.
pub fn appraise(
    verifier: &TpmVerifier,
    min_pcrs: &BTreeMap<String, BTreeSet<u32>>,
    cx: &Context<'_>,
    bundle: &EvidenceBundle,
    binding: &Binding,
    f: &mut Findings,
) -> Result<TpmStage, AppraisalError> {
    let mut stage = TpmStage::default();
    let t = match &bundle.tpm {
        None => {
            f.fail("tpm_present", "the bundle has no TPM evidence".into());
            return Ok(stage);
        }
        Some(t) if t.ak_public != cx.node.ak_public => {
            f.fail(
                "ak_enrolled",
                "the quote's AK is not the one enrolled for this node".into(),
            );
            return Ok(stage);
        }
        Some(t) => t,
    };
    let outcome = verifier.verify(
        TpmEvidence {
            quote: &t.quote,
            signature: &t.signature,
            ak: &t.ak_public,
            pcrs: &t.pcrs,
            nonce: binding.as_bytes(),
            event_log: t.event_log.as_deref(),
        },
        UnixTime(cx.at),
    );
    let mut extra_failure: Option<(String, String)> = None;
    let mut matched = false;
    match &outcome {
        Err(r) => f.fail(r.error.check(), r.error.to_string()),
        Ok(v) => {
            let c = &v.claims;
            let clock = TpmClock {
                reset_count: c.reset_count,
                restart_count: c.restart_count,
                clock: c.clock,
            };
            stage.clock = Some(clock);
            extra_failure = clock_went_back(cx.node.tpm_clock, clock).map(|m| ("clock_monotonic".into(), m));
            let quoted: Pcrs = c
                .pcrs
                .iter()
                .map(|(alg, p)| (alg.name().to_owned(), p.clone()))
                .collect();
            if extra_failure.is_none() {
                extra_failure = missing_pcrs(min_pcrs, &quoted).map(|m| ("pcr_selection".into(), m));
            }
            if extra_failure.is_none() {
                let r = compare(cx, quoted);
                stage.reference_source = r.source;
                stage.learned = r.learned;
                matched = r.matched;
                extra_failure = r.failure;
            }
        }
    }
    let corroboration = Corroboration {
        identity_key_endorsed: true,
        executables_matched: matched,
        configuration_matched: matched,
    };
    let mut sub = Submod::from_outcome(&outcome, corroboration)?;
    if let Some(src) = &stage.reference_source {
        sub.annotations
            .insert("reference".into(), ClaimValue::Text(src.as_str().into()));
    }
    let mut device = serde_json::json!({
        "kind": "tpm",
        "verified": outcome.is_ok() && extra_failure.is_none(),
        "claims": outcome.as_ref().ok().map(|v| serde_json::to_value(&v.claims).unwrap_or_default()),
    });
    if let (Err(r), Some(o)) = (&outcome, device.as_object_mut()) {
        o.insert("failed_check".into(), r.error.check().into());
    }
    if let Some((check, reason)) = extra_failure {
        sub = failed_submod(&check, &reason);
        mark_failed(&mut device, &check);
        f.fail(&check, reason);
    }
    f.device("tpm", device, sub);
    Ok(stage)
}

/// Why `now` is older than `last` (same reset and restart, clock behind; or fewer
/// resets): an old quote replayed. `None` when it is not.
pub fn clock_went_back(last: Option<TpmClock>, now: TpmClock) -> Option<String> {
    let last = last?;
    let (n, l) = (
        (now.reset_count, now.restart_count),
        (last.reset_count, last.restart_count),
    );
    (n < l || (n == l && now.clock < last.clock)).then(|| {
        format!(
            "TPM clock went back: reset {} restart {} clock {} after reset {} restart {} clock {} (an old quote?)",
            now.reset_count, now.restart_count, now.clock, last.reset_count, last.restart_count, last.clock
        )
    })
}

/// The PCRs of `min` the quote does not cover, as one sentence; None when it covers them.
pub fn missing_pcrs(min: &BTreeMap<String, BTreeSet<u32>>, quoted: &Pcrs) -> Option<String> {
    let missing: Vec<String> = min
        .iter()
        .filter_map(|(bank, want)| {
            let have = quoted.get(bank);
            let lacking: Vec<String> = want
                .iter()
                .filter(|p| !have.is_some_and(|h| h.contains_key(p)))
                .map(u32::to_string)
                .collect();
            (!lacking.is_empty()).then(|| format!("{bank} PCRs {}", lacking.join(",")))
        })
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "the quote does not cover the verifier's minimum selection: {} missing",
            missing.join("; ")
        )
    })
}

/// The reference comparison's outcome.
#[derive(Debug, Default)]
pub struct Compared {
    pub source: Option<ReferenceSource>,
    pub matched: bool,
    pub learned: Option<Reference>,
    pub failure: Option<(String, String)>,
}

/// Compare the quoted PCRs with the group's values, or learn them (by the mode).
pub fn compare(cx: &Context<'_>, quoted: Pcrs) -> Compared {
    let group = cx.node.group;
    let learn = |pending| Reference {
        pcrs: quoted.clone(),
        source: ReferenceSource::Tofu,
        at: cx.at,
        learned_from: Some(cx.node.id.to_owned()),
        pending,
    };
    match (cx.reference, cx.mode) {
        (Some(r), _) => {
            let diffs = differences(r, &quoted);
            if !diffs.is_empty() {
                Compared {
                    source: Some(r.source),
                    failure: Some(("reference_values".into(), diffs.join("; "))),
                    ..Default::default()
                }
            } else if r.pending {
                Compared {
                    source: Some(ReferenceSource::TofuPending),
                    failure: Some((
                        REFERENCE_PENDING.into(),
                        format!(
                            "the baseline of group `{group}` learnt on first use awaits an operator's approval (custody reference approve {group})"
                        ),
                    )),
                    ..Default::default()
                }
            } else {
                Compared {
                    source: Some(r.source),
                    matched: true,
                    ..Default::default()
                }
            }
        }
        (None, ReferenceMode::Tofu) => Compared {
            source: Some(ReferenceSource::Tofu),
            matched: true,
            learned: Some(learn(false)),
            failure: None,
        },
        (None, ReferenceMode::TofuApprove) => Compared {
            source: Some(ReferenceSource::TofuPending),
            matched: false,
            learned: Some(learn(true)),
            failure: Some((
                REFERENCE_PENDING.into(),
                format!(
                    "this round's PCRs were proposed as the baseline of group `{group}`; they decide nothing until an operator approves them (custody reference approve {group})"
                ),
            )),
        },
        (None, ReferenceMode::Operator) => Compared {
            failure: Some((
                "reference_values".into(),
                format!("no reference values are provisioned for group `{group}`"),
            )),
            ..Default::default()
        },
    }
}

/// Quoted PCRs that differ from the reference, one line each.
pub fn differences(reference: &Reference, quoted: &Pcrs) -> Vec<String> {
    let mut diffs = Vec::new();
    for (bank, pcrs) in &reference.pcrs {
        for (idx, want) in pcrs {
            match quoted.get(bank).and_then(|b| b.get(idx)) {
                None => diffs.push(format!("{bank} PCR {idx} is not quoted")),
                Some(got) if !got.eq_ignore_ascii_case(want) => {
                    diffs.push(format!("{bank} PCR {idx} is {got}, reference {want}"))
                }
                Some(_) => {}
            }
        }
    }
    diffs
}
