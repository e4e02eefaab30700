#![no_main]
//! The destination's side of the agent-to-agent move protocol fed arbitrary bytes: frame
//! reading, OFFER decoding, ticket checks and refusals never panic, and nothing arbitrary
//! input can produce gets past the ticket's signature (no checkpoint is ever placed).
use custody_mover::keywrap::generate_x25519;
use custody_mover::wire::Destination;
use libfuzzer_sys::fuzz_target;
use std::io::{Read, Write};
use std::sync::OnceLock;

struct Conn<'a>(&'a [u8]);

impl Read for Conn<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Conn<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn dest() -> &'static Destination {
    static D: OnceLock<Destination> = OnceLock::new();
    D.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("custody-fuzz-wire-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("fuzz dir");
        let (public, secret) = generate_x25519().expect("x25519");
        // A fixed P-256 point (the generator): no fuzz input is signed by its private key.
        let g = hex_literal();
        Destination::new("node-b".into(), public, secret, g, dir, Box::new(|_| [0u8; 64])).expect("destination")
    })
}

fn hex_literal() -> Vec<u8> {
    let x = "6b17d1f2e12c4247f8bce6e563a440f277037d812deb33a0f4a13945d898c296";
    let y = "4fe342e2fe1a7f9b8ee7eb4a7c0f9e162bce33576b315ececbb6406837bf51f5";
    let mut v = vec![4u8];
    for h in [x, y] {
        for i in (0..h.len()).step_by(2) {
            v.push(u8::from_str_radix(&h[i..i + 2], 16).expect("hex"));
        }
    }
    v
}

fuzz_target!(|data: &[u8]| {
    let r = dest().serve(&mut Conn(data), "node-a", 1_800_000_000);
    assert!(r.is_err(), "a fuzzed stream placed a checkpoint");

    // The same bytes read as chunk frames are: each body within the limit and starting on
    // a block boundary in memory, whatever the lengths before it.
    let mut r = data;
    let mut buf = Vec::new();
    while let Ok(Some((_, at))) = custody_mover::wire::read_frame_aligned(&mut r, 1 << 16, &mut buf) {
        let body = buf.get(at..).expect("offset within the buffer");
        assert!(body.len() <= 1 << 16);
        assert_eq!(body.as_ptr().align_offset(custody_mover::direct::ALIGN), 0);
    }
});
