use super::*;

macro_rules! fixture {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/tpm/", $name)).as_slice()
    };
}

const RSA_QUOTE: &[u8] = fixture!("rsa-quote.bin");
const RSA_SIG: &[u8] = fixture!("rsa-sig.bin");
const RSA_PCRS: &[u8] = fixture!("rsa-pcrs.bin");
const RSA_AK: &[u8] = fixture!("ak-rsa.tpm2b");
const RSA_NAME: &[u8] = fixture!("ak-rsa.name");
const ECC_QUOTE: &[u8] = fixture!("ecc-quote.bin");
const ECC_SIG: &[u8] = fixture!("ecc-sig.bin");
const ECC_AK: &[u8] = fixture!("ak-ecc.tpm2b");
const ECC_NAME: &[u8] = fixture!("ak-ecc.name");
const PSS_SIG: &[u8] = fixture!("pss-sig.bin");

fn nonce() -> Vec<u8> {
    hex::decode(fixture!("nonce.hex").trim_ascii()).unwrap()
}

fn sel(bank: HashAlg, pcrs: &[u32]) -> PcrSelection {
    PcrSelection {
        bank,
        pcrs: pcrs.to_vec(),
    }
}

#[test]
fn swtpm_quote_parses() {
    let a = parse_attest(RSA_QUOTE).unwrap();
    assert_eq!(a.extra_data, nonce());
    assert_eq!(a.pcr_select, vec![sel(HashAlg::Sha256, &[0, 1, 2, 3, 7, 16])]);
    assert_eq!(a.pcr_digest.len(), 32);
    assert_eq!(a.qualified_signer.len(), 34);
    assert!(a.clock_info.safe);
    let e = parse_attest(ECC_QUOTE).unwrap();
    assert_eq!(e.extra_data, nonce());
}

#[test]
fn swtpm_signatures_parse() {
    match parse_signature(RSA_SIG).unwrap() {
        Signature::Rsa { padding, hash, sig } => {
            assert_eq!(padding, RsaPadding::Pkcs1v15);
            assert_eq!(hash, HashAlg::Sha256);
            assert_eq!(sig.len(), 256);
        }
        other => panic!("{other:?}"),
    }
    let pss = parse_signature(PSS_SIG).unwrap();
    assert_eq!(pss.scheme_name(), "rsapss");
    match parse_signature(ECC_SIG).unwrap() {
        Signature::Ecdsa { hash, r, s } => {
            assert_eq!(hash, HashAlg::Sha256);
            assert_eq!((r.len(), s.len()), (32, 32));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn swtpm_public_parses_and_name_matches_tpm() {
    let rsa = parse_public_2b(RSA_AK).unwrap();
    assert_eq!(rsa.name(), RSA_NAME);
    assert_eq!(
        rsa.object_attributes & (ATTR_RESTRICTED | ATTR_SIGN),
        ATTR_RESTRICTED | ATTR_SIGN
    );
    assert!(matches!(
        rsa.verifying_key(),
        VerifyingKey::Rsa { bits: 2048, .. }
    ));
    let ecc = parse_public_2b(ECC_AK).unwrap();
    assert_eq!(ecc.name(), ECC_NAME);
    match ecc.verifying_key() {
        VerifyingKey::Ec { curve, point } => {
            assert_eq!(curve, EccCurve::P256);
            assert_eq!(point.len(), 65);
            assert_eq!(point[0], 4);
        }
        other => panic!("{other:?}"),
    }
    // The inner TPMT_PUBLIC parses alone too.
    assert_eq!(parse_public(&RSA_AK[2..]).unwrap(), rsa);
}

#[test]
fn spki_from_tpmt_public_equals_tpm2_tools_pem() {
    fn pem_der(pem: &[u8]) -> Vec<u8> {
        let s = std::str::from_utf8(pem).unwrap();
        let b64: String = s.lines().filter(|l| !l.starts_with("-----")).collect();
        // Tiny base64 decoder, to keep dev-dependencies unchanged.
        let alpha = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = Vec::new();
        let (mut acc, mut n) = (0u32, 0);
        for c in b64.bytes().filter(|&c| c != b'=') {
            acc = (acc << 6) | alpha.iter().position(|&a| a == c).unwrap() as u32;
            n += 6;
            if n >= 8 {
                n -= 8;
                out.push((acc >> n) as u8);
            }
        }
        out
    }
    let rsa = parse_public_2b(RSA_AK).unwrap();
    assert_eq!(rsa.verifying_key().spki_der(), pem_der(fixture!("ak-rsa.pem")));
    let ecc = parse_public_2b(ECC_AK).unwrap();
    assert_eq!(ecc.verifying_key().spki_der(), pem_der(fixture!("ak-ecc.pem")));
}

#[test]
fn swtpm_pcr_file_parses_and_digest_matches_quote() {
    let f = parse_pcr_file(RSA_PCRS).unwrap();
    assert_eq!(f.selection, vec![sel(HashAlg::Sha256, &[0, 1, 2, 3, 7, 16])]);
    assert_eq!(f.values.len(), 6);
    assert_eq!(f.get(HashAlg::Sha256, 0).unwrap(), &[0u8; 32]);
    let a = parse_attest(RSA_QUOTE).unwrap();
    let d = pcr_digest(HashAlg::Sha256, &a.pcr_select, |b, p| {
        f.get(b, p).map(<[u8]>::to_vec)
    })
    .unwrap();
    assert_eq!(d, a.pcr_digest);
    // Re-encoding gives tpm2-tools' bytes back.
    assert_eq!(f.to_bytes().unwrap(), RSA_PCRS);
}

#[test]
fn pcr_file_with_empty_unallocated_bank() {
    // sha1 is not allocated in swtpm: the TPM filters the quote's selection to what it
    // has, and tpm2-tools writes the same selection: the bank stays, with no PCRs.
    let f = parse_pcr_file(fixture!("unalloc-pcrs.bin")).unwrap();
    assert_eq!(
        f.selection,
        vec![sel(HashAlg::Sha256, &[0, 1, 16]), sel(HashAlg::Sha1, &[])]
    );
    let a = parse_attest(fixture!("unalloc-quote.bin")).unwrap();
    assert_eq!(
        a.pcr_select,
        vec![sel(HashAlg::Sha256, &[0, 1, 16]), sel(HashAlg::Sha1, &[])]
    );
    assert_eq!(a.pcr_select, f.selection);
}

#[test]
fn pcr_file_round_trip_many_values() {
    // 2 banks x 24 PCRs: 6 digest lists.
    let all: Vec<u32> = (0..24).collect();
    let selection = vec![sel(HashAlg::Sha256, &all), sel(HashAlg::Sha1, &all)];
    let mut values = Vec::new();
    for s in &selection {
        for &p in &s.pcrs {
            values.push((s.bank, p, vec![p as u8; s.bank.digest_len()]));
        }
    }
    let f = PcrFile { selection, values };
    let bytes = f.to_bytes().unwrap();
    assert_eq!(bytes.len(), 136 + 6 * 532);
    assert_eq!(parse_pcr_file(&bytes).unwrap(), f);
    // PCR 31 survives the round trip.
    let high = PcrFile {
        selection: vec![sel(HashAlg::Sha256, &[0, 31])],
        values: vec![
            (HashAlg::Sha256, 0, vec![1; 32]),
            (HashAlg::Sha256, 31, vec![2; 32]),
        ],
    };
    assert_eq!(parse_pcr_file(&high.to_bytes().unwrap()).unwrap(), high);
}

#[test]
fn every_truncation_is_an_error() {
    for (name, buf) in [("quote", RSA_QUOTE), ("ecc quote", ECC_QUOTE)] {
        for n in 0..buf.len() {
            assert!(parse_attest(&buf[..n]).is_err(), "{name} cut at {n}");
        }
    }
    for buf in [RSA_SIG, ECC_SIG, PSS_SIG] {
        for n in 0..buf.len() {
            assert!(parse_signature(&buf[..n]).is_err(), "sig cut at {n}");
        }
    }
    for buf in [RSA_AK, ECC_AK] {
        for n in 0..buf.len() {
            assert!(parse_public_2b(&buf[..n]).is_err(), "public cut at {n}");
            assert!(parse_public(&buf[2..n.max(2)]).is_err(), "tpmt cut at {n}");
        }
    }
    for n in 0..RSA_PCRS.len() {
        assert!(parse_pcr_file(&RSA_PCRS[..n]).is_err(), "pcrs cut at {n}");
    }
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut q = RSA_QUOTE.to_vec();
    q.push(0);
    assert_eq!(parse_attest(&q), Err(TpmError::TrailingBytes(1)));
    let mut s = ECC_SIG.to_vec();
    s.push(0);
    assert_eq!(parse_signature(&s), Err(TpmError::TrailingBytes(1)));
    let mut p = RSA_AK[2..].to_vec();
    p.push(0);
    assert_eq!(parse_public(&p), Err(TpmError::TrailingBytes(1)));
    let mut p2 = RSA_AK.to_vec();
    p2.push(0);
    assert!(matches!(
        parse_public_2b(&p2),
        Err(TpmError::PublicSizeMismatch { .. })
    ));
    let mut f = RSA_PCRS.to_vec();
    f.push(0);
    assert!(matches!(parse_pcr_file(&f), Err(TpmError::WrongLength { .. })));
}

#[test]
fn attest_field_tampering() {
    let mut q = RSA_QUOTE.to_vec();
    q[0] ^= 1;
    assert!(matches!(parse_attest(&q), Err(TpmError::BadMagic(_))));
    let mut q = RSA_QUOTE.to_vec();
    q[5] = 0x17; // TPM_ST_ATTEST_CERTIFY
    assert_eq!(parse_attest(&q), Err(TpmError::NotQuote(0x8017)));
    // qualifiedSigner size grown past the bound.
    let mut q = RSA_QUOTE.to_vec();
    q[6..8].copy_from_slice(&200u16.to_be_bytes());
    assert!(matches!(parse_attest(&q), Err(TpmError::TooLong { .. })));
    // Offsets after the 34-byte name and the 32-byte extraData.
    let clock_at = 6 + 2 + 34 + 2 + 32;
    let safe_at = clock_at + 16;
    let mut q = RSA_QUOTE.to_vec();
    q[safe_at] = 2;
    assert_eq!(parse_attest(&q), Err(TpmError::BadYesNo(2)));
    let sel_at = safe_at + 1 + 8;
    let mut q = RSA_QUOTE.to_vec();
    q[sel_at..sel_at + 4].copy_from_slice(&17u32.to_be_bytes());
    assert!(matches!(
        parse_attest(&q),
        Err(TpmError::TooManyBanks { count: 17, .. })
    ));
    let mut q = RSA_QUOTE.to_vec();
    q[sel_at + 4..sel_at + 6].copy_from_slice(&0x0012u16.to_be_bytes()); // SM3
    assert!(matches!(
        parse_attest(&q),
        Err(TpmError::UnsupportedHash { alg: 0x0012, .. })
    ));
    let mut q = RSA_QUOTE.to_vec();
    q[sel_at + 6] = 5;
    assert!(matches!(
        parse_attest(&q),
        Err(TpmError::BadSizeofSelect { size: 5, .. })
    ));
}

#[test]
fn duplicate_bank_rejected() {
    // Quote with the sha256 selection repeated.
    let a = parse_attest(RSA_QUOTE).unwrap();
    let sel_at = 6 + 2 + 34 + 2 + 32 + 17 + 8;
    let mut q = RSA_QUOTE[..sel_at].to_vec();
    q.extend(2u32.to_be_bytes());
    for _ in 0..2 {
        q.extend([0x00, 0x0b, 3, 0x8f, 0, 1]);
    }
    q.extend((a.pcr_digest.len() as u16).to_be_bytes());
    q.extend(&a.pcr_digest);
    assert!(matches!(parse_attest(&q), Err(TpmError::DuplicateBank { .. })));
}

#[test]
fn signature_field_tampering() {
    let mut s = RSA_SIG.to_vec();
    s[1] = 0x10; // TPM_ALG_NULL
    assert_eq!(
        parse_signature(&s),
        Err(TpmError::UnsupportedSignatureAlg(0x0010))
    );
    let mut s = RSA_SIG.to_vec();
    s[1] = 0x1a; // ECDAA
    assert_eq!(
        parse_signature(&s),
        Err(TpmError::UnsupportedSignatureAlg(0x001a))
    );
    let mut s = RSA_SIG.to_vec();
    s[3] = 0x12;
    assert!(matches!(
        parse_signature(&s),
        Err(TpmError::UnsupportedHash { .. })
    ));
    let mut s = ECC_SIG.to_vec();
    s[4..6].copy_from_slice(&0x0021u16.to_be_bytes());
    assert!(parse_signature(&s).is_err());
    // RSA signature size one larger than the bytes present.
    let mut s = RSA_SIG.to_vec();
    s[4..6].copy_from_slice(&257u16.to_be_bytes());
    assert!(matches!(parse_signature(&s), Err(TpmError::Truncated(_))));
}

#[test]
fn public_field_tampering() {
    let inner = &RSA_AK[2..];
    let mut p = inner.to_vec();
    p[1] = 0x08; // KEYEDHASH
    assert_eq!(parse_public(&p), Err(TpmError::UnsupportedKeyType(0x0008)));
    let mut p = inner.to_vec();
    p[3] = 0x12; // nameAlg SM3
    assert!(matches!(parse_public(&p), Err(TpmError::UnsupportedHash { .. })));
    // keyBits 2048 -> 1024 without changing the modulus.
    let kb = 2 + 2 + 4 + 2 + 2 + 4;
    assert_eq!(&inner[kb..kb + 2], &2048u16.to_be_bytes());
    let mut p = inner.to_vec();
    p[kb..kb + 2].copy_from_slice(&1024u16.to_be_bytes());
    assert!(matches!(parse_public(&p), Err(TpmError::KeyBitsMismatch { .. })));
    // TPM2B_PUBLIC size one short.
    let mut p = RSA_AK.to_vec();
    p[1] -= 1;
    assert!(matches!(
        parse_public_2b(&p),
        Err(TpmError::PublicSizeMismatch { .. })
    ));
    // ECC curve P-521 and a short x coordinate.
    let inner = &ECC_AK[2..];
    let curve_at = 2 + 2 + 4 + 2 + 2 + 4;
    assert_eq!(&inner[curve_at..curve_at + 2], &[0, 3]);
    let mut p = inner.to_vec();
    p[curve_at + 1] = 5;
    assert_eq!(parse_public(&p), Err(TpmError::UnsupportedCurve(5)));
    let x_at = curve_at + 4;
    let mut p = inner[..x_at].to_vec();
    p.extend(31u16.to_be_bytes());
    p.extend(&inner[x_at + 3..]);
    assert!(matches!(
        parse_public(&p),
        Err(TpmError::WrongLength { expected: 32, .. })
    ));
}

#[test]
fn pcr_file_inconsistencies() {
    // More values claimed than selected.
    let mut f = RSA_PCRS.to_vec();
    f[136..140].copy_from_slice(&7u32.to_le_bytes());
    assert!(matches!(parse_pcr_file(&f), Err(TpmError::PcrFile(_))));
    // A list count over 8.
    let mut f = RSA_PCRS.to_vec();
    f[136..140].copy_from_slice(&9u32.to_le_bytes());
    assert!(matches!(parse_pcr_file(&f), Err(TpmError::PcrFile(_))));
    // A value of the wrong length for the bank.
    let mut f = RSA_PCRS.to_vec();
    f[140..142].copy_from_slice(&20u16.to_le_bytes());
    assert!(matches!(parse_pcr_file(&f), Err(TpmError::PcrFile(_))));
    // A digest size over 64.
    let mut f = RSA_PCRS.to_vec();
    f[140..142].copy_from_slice(&65u16.to_le_bytes());
    assert!(matches!(parse_pcr_file(&f), Err(TpmError::TooLong { .. })));
    // Selection count over 16, unknown bank, sizeofSelect over 4.
    let mut f = RSA_PCRS.to_vec();
    f[0] = 17;
    assert!(matches!(parse_pcr_file(&f), Err(TpmError::TooManyBanks { .. })));
    let mut f = RSA_PCRS.to_vec();
    f[4] = 0x12;
    assert!(matches!(
        parse_pcr_file(&f),
        Err(TpmError::UnsupportedHash { .. })
    ));
    let mut f = RSA_PCRS.to_vec();
    f[6] = 5;
    assert!(matches!(
        parse_pcr_file(&f),
        Err(TpmError::BadSizeofSelect { .. })
    ));
    // Declared list count larger than the file.
    let mut f = RSA_PCRS.to_vec();
    f[132..136].copy_from_slice(&2u32.to_le_bytes());
    assert!(matches!(parse_pcr_file(&f), Err(TpmError::WrongLength { .. })));
    let mut f = RSA_PCRS.to_vec();
    f[132..136].copy_from_slice(&u32::MAX.to_le_bytes());
    assert!(parse_pcr_file(&f).is_err());
}

#[test]
fn der_integers_are_minimal() {
    assert_eq!(der::uint(&[0, 0, 1]), vec![2, 1, 1]);
    assert_eq!(der::uint(&[0x80]), vec![2, 2, 0, 0x80]);
    assert_eq!(der::uint(&[]), vec![2, 1, 0]);
    assert_eq!(der::tlv(4, &[0; 200])[..3], [4, 0x81, 200]);
}

#[test]
fn key_blob_round_trips_byte_exact_and_refuses_damage() {
    let blob = KeyBlob {
        public: RSA_AK[2..].to_vec(),
        private: vec![0xa5; 222],
    };
    let bytes = blob.to_bytes().unwrap();
    // Byte-exact layout: magic, u16 BE size + TPMT_PUBLIC, u16 BE size + private.
    let mut want = b"custody-tpm-key1".to_vec();
    want.extend(((RSA_AK.len() - 2) as u16).to_be_bytes());
    want.extend_from_slice(&RSA_AK[2..]);
    want.extend([0x00, 0xde]);
    want.extend([0xa5; 222]);
    assert_eq!(bytes, want);
    let back = parse_key_blob(&bytes).unwrap();
    assert_eq!(back, blob);
    assert_eq!(back.public_key().unwrap(), parse_public_2b(RSA_AK).unwrap());

    // Every truncation, trailing bytes, another magic, an empty or oversized private
    // part and a public area that is not a key are errors, never a panic.
    for n in 0..bytes.len() {
        assert!(parse_key_blob(&bytes[..n]).is_err(), "truncated to {n}");
    }
    let mut long = bytes.clone();
    long.push(0);
    assert_eq!(parse_key_blob(&long), Err(TpmError::TrailingBytes(1)));
    let mut magic = bytes.clone();
    magic[0] ^= 1;
    assert!(matches!(parse_key_blob(&magic), Err(TpmError::KeyBlob(_))));
    let empty = KeyBlob {
        public: blob.public.clone(),
        private: vec![],
    };
    assert!(matches!(
        parse_key_blob(&empty.to_bytes().unwrap()),
        Err(TpmError::KeyBlob(_))
    ));
    let big = KeyBlob {
        public: blob.public.clone(),
        private: vec![1; 2049],
    };
    assert!(matches!(big.to_bytes(), Err(TpmError::TooLong { .. })));
    let not_a_key = KeyBlob {
        public: vec![0, 1, 2, 3],
        private: vec![1],
    };
    assert!(parse_key_blob(&not_a_key.to_bytes().unwrap()).is_err());
}
