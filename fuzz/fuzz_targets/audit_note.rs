#![no_main]
//! The signed-note, checkpoint and key parsers never panic; an accepted checkpoint body
//! re-encodes to the same bytes, and no input opens under a key that did not sign it.
use custody_audit::note::{parse_note, Checkpoint, Verifier};
use libfuzzer_sys::fuzz_target;

// golang.org/x/mod/sumdb/note's example verifier key.
const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_note(s);
    let _ = Verifier::parse(s);
    if let Ok(cp) = Checkpoint::parse(s) {
        assert_eq!(cp.to_body(), s, "checkpoint body is canonical");
    }
    if let Ok(v) = Verifier::parse(VKEY) {
        if let Ok(text) = v.open(s) {
            // Only the one genuine note verifies; its text is a prefix of the input.
            assert!(s.starts_with(text));
        }
    }
});
