#![no_main]
//! The safetensors header parser never panics; what it accepts is internally consistent
//! (contiguous offsets covering the buffer, sizes from shape x dtype).
use custody_mover::safetensors::parse_header;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for file_len in [data.len() as u64, data.len() as u64 + 4096, u64::MAX] {
        if let Ok(h) = parse_header(data, file_len) {
            let mut at = 0u64;
            for t in &h.tensors {
                assert_eq!(t.data_offsets.0, at);
                at = t.data_offsets.1;
            }
            assert_eq!(at, file_len - 8 - h.header_len);
        }
    }
});
