#![no_main]
//! The TCG event-log parser never panics; a log it accepts replays on every bank it
//! declares, to one value per touched PCR of the bank's digest length, and its Secure
//! Boot reader never panics either.
use custody_formats::eventlog::{self, PCR_COUNT};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(log) = eventlog::parse(data) {
        for bank in log.banks() {
            let pcrs = log.replay(bank).expect("replay of a parsed log");
            for (pcr, value) in pcrs {
                assert!(pcr < PCR_COUNT);
                assert_eq!(value.len(), bank.digest_len());
            }
        }
        let _ = log.secure_boot();
    }
});
