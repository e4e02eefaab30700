#![no_main]
//! An export file's header and records, opened with a fixed key: parsing, the manifest
//! decoder and the STREAM opener never panic, and nothing opens under the wrong key.
use custody_mover::export::read_header;
use custody_mover::keywrap::DataKey;
use custody_mover::manifest::Manifest;
use custody_mover::send::read_record;
use custody_mover::stream::{Opener, StreamHeader, TAG_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut r = data;
    let Ok(h) = read_header(&mut r) else { return };
    let (digest, total) = match Manifest::from_cbor(&h.manifest) {
        Ok(m) => (m.digest().expect("digest"), m.total_bytes()),
        Err(_) => ([0u8; 32], u64::from(h.chunk_size) * 3),
    };
    let Ok(sh) = StreamHeader::new([0; 16], digest, h.chunk_size, total) else { return };
    let Ok(mut o) = Opener::new(&DataKey::from_bytes([0x42; 32]), sh) else { return };
    let max = h.chunk_size as usize + TAG_LEN;
    while let Ok(Some(ct)) = read_record(&mut r, max) {
        let next = o.next_index();
        if o.open_chunk(next, &ct).is_err() {
            break;
        }
    }
    let _ = o.finish();
});
