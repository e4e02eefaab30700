#![no_main]
//! Azure HCL report splitting and runtime-data key extraction never panic; what they
//! accept stays inside the input and has the hardware report's fixed size.
use custody_verifier::azure::{runtime_data_ak, split_hcl, HclHardware};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((hardware, runtime)) = split_hcl(data) {
        match hardware {
            HclHardware::Snp(r) => assert_eq!(r.len(), 0x4A0),
            HclHardware::TdReport(r) => assert_eq!(r.len(), 1024),
        }
        assert!(runtime.len() < data.len());
        let _ = runtime_data_ak(runtime);
    }
    // The runtime data alone (the JSON part of the input).
    if let Ok(spki) = runtime_data_ak(data) {
        assert!(spki.len() > 256);
    }
});
