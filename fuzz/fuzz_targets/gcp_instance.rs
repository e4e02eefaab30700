#![no_main]
//! Google's instance extension parser never panics; what it accepts has bounded names and
//! a region that is a prefix of the zone.
use custody_verifier::gcp::parse_gce_instance;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(i) = parse_gce_instance(data) {
        assert!(i.zone.len() <= 256 && i.project_id.len() <= 256 && i.instance_name.len() <= 256);
        assert!(i.zone.starts_with(&i.region));
    }
});
