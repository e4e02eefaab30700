//! Seal + open throughput of the STREAM AEAD at 1 MiB chunks.
#![allow(clippy::unwrap_used)]
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use custody_mover::keywrap::DataKey;
use custody_mover::stream::{Opener, Sealer, StreamHeader, DEFAULT_CHUNK_SIZE};

fn bench(c: &mut Criterion) {
    let cs = DEFAULT_CHUNK_SIZE;
    let chunks = 16u64;
    let total = u64::from(cs) * chunks;
    let key = DataKey::from_bytes([7; 32]);
    let h = StreamHeader::new([1; 16], [2; 32], cs, total).unwrap();
    let plain = vec![0x5au8; cs as usize];
    let mut g = c.benchmark_group("stream");
    g.throughput(Throughput::Bytes(total));
    g.bench_function("seal_1MiB_chunks", |b| {
        let s = Sealer::new(&key, h).unwrap();
        b.iter(|| {
            for i in 0..chunks {
                std::hint::black_box(s.seal_chunk(i, &plain, i + 1 == chunks).unwrap());
            }
        })
    });
    let s = Sealer::new(&key, h).unwrap();
    let sealed: Vec<Vec<u8>> = (0..chunks)
        .map(|i| s.seal_chunk(i, &plain, i + 1 == chunks).unwrap())
        .collect();
    g.bench_function("open_1MiB_chunks", |b| {
        b.iter(|| {
            let mut o = Opener::new(&key, h).unwrap();
            for (i, c) in sealed.iter().enumerate() {
                std::hint::black_box(o.open_chunk(i as u64, c).unwrap());
            }
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
