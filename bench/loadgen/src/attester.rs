//! A software attester: a TPM's EK, AK, credential activation and quotes, held in
//! process memory. The bytes it produces are what a TPM produces (TPMT_PUBLIC,
//! TPMS_ATTEST, TPMT_SIGNATURE, the `tpm2_quote -o` PCR file); only the keys are not in
//! hardware. For load tests: never a substitute for a TPM.

use anyhow::{anyhow, bail, Context, Result};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use aws_lc_rs::{cipher, hmac, rand, rsa};
use custody_formats::alg::HashAlg;
use custody_formats::binding::{Binding, Nonce, SessionKeys};
use custody_formats::bundle::{EvidenceBundle, TpmEvidence, BUNDLE_VERSION};
use custody_formats::tpm::{PcrFile, PcrSelection, TPM_GENERATED_VALUE, TPM_ST_ATTEST_QUOTE};
use custody_verifier::enroll::kdfa;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// TCG default EK template policy (PolicySecret(TPM_RH_ENDORSEMENT)), as in every RSA EK.
const EK_POLICY: [u8; 32] = [
    0x83, 0x71, 0x97, 0x67, 0x44, 0x84, 0xb3, 0xf8, 0x1a, 0x90, 0xcc, 0x8d, 0x46, 0xa5, 0xd7, 0x24, 0xfd,
    0x52, 0xd7, 0x6e, 0x06, 0x52, 0x0b, 0x64, 0xf2, 0xa1, 0xda, 0x1b, 0x33, 0x14, 0x69, 0xaa,
];
/// fixedTPM | fixedParent | sensitiveDataOrigin | adminWithPolicy | restricted | decrypt.
const EK_ATTRIBUTES: u32 = 0x0003_00b2;
/// fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | restricted | sign.
pub const AK_ATTRIBUTES: u32 = (1 << 1) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 16) | (1 << 18);

const ALG_RSA: u16 = 0x0001;
const ALG_ECC: u16 = 0x0023;
const ALG_SHA256: u16 = 0x000b;
const ALG_AES: u16 = 0x0006;
const ALG_CFB: u16 = 0x0043;
const ALG_NULL: u16 = 0x0010;
const ALG_ECDSA: u16 = 0x0018;
const ECC_NIST_P256: u16 = 0x0003;

/// The PCRs quoted: sha256:0-7,14.
pub const QUOTED_PCRS: [u32; 9] = [0, 1, 2, 3, 4, 5, 6, 7, 14];

fn tpm2b(out: &mut Vec<u8>, body: &[u8]) -> Result<()> {
    let n = u16::try_from(body.len()).context("TPM2B over 64 KiB")?;
    out.extend(n.to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// Splits a TPM2B off the front of `b`: (body, rest).
fn split_tpm2b(b: &[u8]) -> Result<(&[u8], &[u8])> {
    let (len, rest) = b
        .split_first_chunk::<2>()
        .ok_or_else(|| anyhow!("TPM2B truncated"))?;
    let n = usize::from(u16::from_be_bytes(*len));
    if rest.len() < n {
        bail!("TPM2B says {n} bytes, {} present", rest.len());
    }
    Ok(rest.split_at(n))
}

/// Marshalled TPMT_PUBLIC of an RSA-2048 EK made from the TCG default template.
pub fn ek_public(modulus: &[u8]) -> Result<Vec<u8>> {
    if modulus.len() != 256 {
        bail!("EK modulus is {} bytes, 256 expected", modulus.len());
    }
    let mut p = Vec::with_capacity(320);
    p.extend(ALG_RSA.to_be_bytes());
    p.extend(ALG_SHA256.to_be_bytes());
    p.extend(EK_ATTRIBUTES.to_be_bytes());
    tpm2b(&mut p, &EK_POLICY)?;
    p.extend(ALG_AES.to_be_bytes());
    p.extend(128u16.to_be_bytes());
    p.extend(ALG_CFB.to_be_bytes());
    p.extend(ALG_NULL.to_be_bytes()); // scheme
    p.extend(2048u16.to_be_bytes());
    p.extend(0u32.to_be_bytes()); // exponent: default 65537
    tpm2b(&mut p, modulus)?;
    Ok(p)
}

/// Marshalled TPMT_PUBLIC of an ECDSA P-256 AK (restricted signing, SHA-256 scheme).
pub fn ak_public(point: &[u8]) -> Result<Vec<u8>> {
    let (x, y) = match point {
        [4, rest @ ..] if rest.len() == 64 => rest.split_at(32),
        _ => bail!("AK point is not an uncompressed P-256 point"),
    };
    let mut p = Vec::with_capacity(90);
    p.extend(ALG_ECC.to_be_bytes());
    p.extend(ALG_SHA256.to_be_bytes());
    p.extend(AK_ATTRIBUTES.to_be_bytes());
    tpm2b(&mut p, &[])?; // authPolicy
    p.extend(ALG_NULL.to_be_bytes()); // symmetric
    p.extend(ALG_ECDSA.to_be_bytes());
    p.extend(ALG_SHA256.to_be_bytes());
    p.extend(ECC_NIST_P256.to_be_bytes());
    p.extend(ALG_NULL.to_be_bytes()); // kdf
    tpm2b(&mut p, x)?;
    tpm2b(&mut p, y)?;
    Ok(p)
}

/// TPM Name of a SHA-256 nameAlg object: 0x000b || SHA-256(TPMT_PUBLIC).
pub fn name_of(public: &[u8]) -> Vec<u8> {
    let mut n = ALG_SHA256.to_be_bytes().to_vec();
    n.extend(HashAlg::Sha256.hash(&[public]));
    n
}

/// The PCR values every simulated node reports (one platform, one group).
pub fn pcr_values() -> Vec<(u32, Vec<u8>)> {
    QUOTED_PCRS
        .iter()
        .map(|&i| {
            (
                i,
                HashAlg::Sha256.hash(&[b"custody-loadgen pcr ", &i.to_be_bytes()]),
            )
        })
        .collect()
}

/// An RSA-2048 EK: private key (for ActivateCredential) and its TPMT_PUBLIC.
#[derive(Debug)]
pub struct Ek {
    key: rsa::OaepPrivateDecryptingKey,
    pub public: Vec<u8>,
    /// SubjectPublicKeyInfo DER, for the EK certificate.
    pub spki: Vec<u8>,
}

impl Ek {
    pub fn generate() -> Result<Self> {
        let sk =
            rsa::PrivateDecryptingKey::generate(rsa::KeySize::Rsa2048).map_err(|e| anyhow!("EK: {e}"))?;
        let spki = sk
            .public_key()
            .as_der()
            .map_err(|e| anyhow!("EK SPKI: {e}"))?
            .as_ref()
            .to_vec();
        let modulus = rsa_modulus(&spki)?;
        let public = ek_public(&modulus)?;
        let key = rsa::OaepPrivateDecryptingKey::new(sk).map_err(|e| anyhow!("EK OAEP: {e}"))?;
        Ok(Self { key, public, spki })
    }
}

/// The RSA modulus of a SubjectPublicKeyInfo, without leading zeros.
fn rsa_modulus(spki: &[u8]) -> Result<Vec<u8>> {
    use x509_parser::prelude::FromDer;
    let (_, info) =
        x509_parser::x509::SubjectPublicKeyInfo::from_der(spki).map_err(|e| anyhow!("SPKI: {e}"))?;
    match info.parsed().map_err(|e| anyhow!("SPKI: {e}"))? {
        x509_parser::public_key::PublicKey::RSA(k) => {
            let skip = k.modulus.iter().take_while(|&&b| b == 0).count();
            Ok(k.modulus.get(skip..).unwrap_or_default().to_vec())
        }
        _ => bail!("EK SPKI is not RSA"),
    }
}

/// One simulated TPM: EK, AK, PCRs and a clock.
#[derive(Debug)]
pub struct SoftTpm {
    pub ek: Ek,
    ak: EcdsaKeyPair,
    pub ak_public: Vec<u8>,
    pub ak_name: Vec<u8>,
    pub session_keys: SessionKeys,
    pcr_file: Vec<u8>,
    pcr_digest: Vec<u8>,
    /// TPMS_CLOCK_INFO.clock: milliseconds, strictly increasing per quote.
    clock: AtomicU64,
    reset_count: u32,
    firmware_version: u64,
    rng: rand::SystemRandom,
}

impl SoftTpm {
    pub fn new(ek: Ek) -> Result<Self> {
        let rng = rand::SystemRandom::new();
        let ak = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).map_err(|e| anyhow!("AK: {e}"))?;
        let ak_public = ak_public(ak.public_key().as_ref())?;
        let ak_name = name_of(&ak_public);
        let mut sk = [0u8; 64];
        rand::fill(&mut sk).map_err(|e| anyhow!("rng: {e}"))?;
        let (x, e) = sk.split_at(32);
        let session_keys = SessionKeys::from_slices(x, e)?;
        let values = pcr_values();
        let file = PcrFile {
            selection: vec![PcrSelection {
                bank: HashAlg::Sha256,
                pcrs: QUOTED_PCRS.to_vec(),
            }],
            values: values
                .iter()
                .map(|(i, v)| (HashAlg::Sha256, *i, v.clone()))
                .collect(),
        };
        let refs: Vec<&[u8]> = values.iter().map(|(_, v)| v.as_slice()).collect();
        let mut boot = [0u8; 8];
        rand::fill(&mut boot).map_err(|e| anyhow!("rng: {e}"))?;
        Ok(Self {
            ek,
            ak,
            ak_public,
            ak_name,
            session_keys,
            pcr_file: file.to_bytes()?,
            pcr_digest: HashAlg::Sha256.hash(&refs),
            // Some uptime already, as a booted machine has.
            clock: AtomicU64::new(1_000_000 + u64::from_be_bytes(boot) % 1_000_000),
            reset_count: 3,
            firmware_version: 0x0002_0000_0000_0000,
            rng,
        })
    }

    pub fn generate() -> Result<Self> {
        Self::new(Ek::generate()?)
    }

    /// TPM2_ActivateCredential: the secret of a MakeCredential blob made for this EK and
    /// an object named `ak_name` (TPM 2.0 Part 1 §24).
    pub fn activate_credential(
        &self,
        id_object: &[u8],
        encrypted_secret: &[u8],
        ak_name: &[u8],
    ) -> Result<Vec<u8>> {
        let (enc_seed, rest) = split_tpm2b(encrypted_secret)?;
        if !rest.is_empty() {
            bail!("trailing bytes after the encrypted secret");
        }
        let mut buf = vec![0u8; 256];
        let seed = self
            .ek
            .key
            .decrypt(
                &rsa::OAEP_SHA256_MGF1SHA256,
                enc_seed,
                &mut buf,
                Some(b"IDENTITY\0"),
            )
            .map_err(|_| anyhow!("the seed does not decrypt with this EK"))?
            .to_vec();
        let (body, rest) = split_tpm2b(id_object)?;
        if !rest.is_empty() {
            bail!("trailing bytes after the ID object");
        }
        let (mac, enc_identity) = split_tpm2b(body)?;
        let hmac_key = kdfa(HashAlg::Sha256, &seed, b"INTEGRITY", &[], &[], 256);
        let mut msg = enc_identity.to_vec();
        msg.extend_from_slice(ak_name);
        hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, &hmac_key), &msg, mac)
            .map_err(|_| anyhow!("outer HMAC does not match (another AK Name or EK)"))?;
        let sym = kdfa(HashAlg::Sha256, &seed, b"STORAGE", ak_name, &[], 128);
        let key = cipher::DecryptingKey::cfb128(
            cipher::UnboundCipherKey::new(&cipher::AES_128, &sym).map_err(|e| anyhow!("AES key: {e}"))?,
        )
        .map_err(|e| anyhow!("AES-CFB: {e}"))?;
        let mut plain = enc_identity.to_vec();
        let plain = key
            .decrypt(
                &mut plain,
                cipher::DecryptionContext::Iv128(aws_lc_rs::iv::FixedLength::from([0u8; 16])),
            )
            .map_err(|e| anyhow!("AES-CFB decrypt: {e}"))?;
        let (secret, rest) = split_tpm2b(plain)?;
        if !rest.is_empty() {
            bail!("trailing bytes after the credential");
        }
        Ok(secret.to_vec())
    }

    /// TPM2_Quote over sha256:0-7,14 with `extra_data`: (TPMS_ATTEST, TPMT_SIGNATURE).
    pub fn quote(&self, extra_data: &[u8]) -> Result<(Vec<u8>, Vec<u8>)> {
        // Time moves on between quotes (at least one tick), as a TPM clock does.
        let clock = self.clock.fetch_add(7, Ordering::Relaxed) + 7;
        let mut a = Vec::with_capacity(160);
        a.extend(TPM_GENERATED_VALUE.to_be_bytes());
        a.extend(TPM_ST_ATTEST_QUOTE.to_be_bytes());
        tpm2b(&mut a, &self.ak_name)?;
        tpm2b(&mut a, extra_data)?;
        a.extend(clock.to_be_bytes());
        a.extend(self.reset_count.to_be_bytes());
        a.extend(0u32.to_be_bytes()); // restartCount
        a.push(1); // safe
        a.extend(self.firmware_version.to_be_bytes());
        a.extend(1u32.to_be_bytes()); // one bank
        a.extend(ALG_SHA256.to_be_bytes());
        let mut bits = [0u8; 3];
        for p in QUOTED_PCRS {
            if let Some(b) = bits.get_mut((p / 8) as usize) {
                *b |= 1 << (p % 8);
            }
        }
        a.push(3);
        a.extend(bits);
        tpm2b(&mut a, &self.pcr_digest)?;
        let sig = self.ak.sign(&self.rng, &a).map_err(|e| anyhow!("AK sign: {e}"))?;
        let (r, s) = sig.as_ref().split_at(32);
        let mut t = Vec::with_capacity(72);
        t.extend(ALG_ECDSA.to_be_bytes());
        t.extend(ALG_SHA256.to_be_bytes());
        tpm2b(&mut t, r)?;
        tpm2b(&mut t, s)?;
        Ok((a, t))
    }

    /// The evidence bundle for one round: a quote over the round's binding.
    pub fn bundle(&self, nonce: Nonce) -> Result<EvidenceBundle> {
        let binding = Binding::compute(&nonce, &self.session_keys);
        let (quote, signature) = self.quote(binding.as_bytes())?;
        Ok(EvidenceBundle {
            version: BUNDLE_VERSION,
            nonce,
            session_keys: self.session_keys,
            tpm: Some(TpmEvidence {
                quote,
                signature,
                pcrs: self.pcr_file.clone(),
                ak_public: self.ak_public.clone(),
                event_log: None,
            }),
            snp: None,
            tdx: None,
            azure: None,
            gpus: Vec::new(),
            gpu_identities: Vec::new(),
            platform: BTreeMap::from([("agent".to_owned(), "custody-loadgen".to_owned())]),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use custody_verifier::check::{EvidenceVerifier, FailedCheck, UnixTime};
    use custody_verifier::tpm::{TpmEvidence as Ev, TpmVerifier};

    #[test]
    fn verifier_accepts_a_generated_quote_and_refuses_tampering() {
        let tpm = SoftTpm::generate().unwrap();
        assert_eq!(tpm.ak_public, ak_public(tpm.ak.public_key().as_ref()).unwrap());
        let ak = custody_verifier::check_ak(&tpm.ak_public).unwrap();
        assert_eq!(ak.name, tpm.ak_name);
        let nonce = Nonce([9; 32]);
        let b = tpm.bundle(nonce).unwrap();
        let t = b.tpm.as_ref().unwrap();
        let binding = Binding::compute(&nonce, &tpm.session_keys);
        let v = TpmVerifier::new();
        let ev = |quote: &[u8], signature: &[u8], nonce: &[u8]| {
            v.verify(
                Ev {
                    quote,
                    signature,
                    ak: &t.ak_public,
                    pcrs: &t.pcrs,
                    nonce,
                    event_log: None,
                },
                UnixTime(1_800_000_000),
            )
        };
        let ok = ev(&t.quote, &t.signature, binding.as_bytes()).unwrap();
        assert_eq!(ok.claims.reset_count, 3);
        assert_eq!(ok.claims.pcrs[&HashAlg::Sha256].len(), QUOTED_PCRS.len());
        // The clock moves forward quote by quote.
        let (q2, s2) = tpm.quote(binding.as_bytes()).unwrap();
        let c2 = ev(&q2, &s2, binding.as_bytes()).unwrap().claims.clock;
        assert!(c2 > ok.claims.clock);
        // Another binding, a flipped byte of the quote, another AK's signature.
        let e = ev(&t.quote, &t.signature, &[0; 32]).unwrap_err();
        assert_eq!(e.error.check(), "nonce");
        let mut bad = t.quote.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert_eq!(
            ev(&bad, &t.signature, binding.as_bytes())
                .unwrap_err()
                .error
                .check(),
            "signature"
        );
        let other = SoftTpm::generate().unwrap();
        let (_, s3) = other.quote(binding.as_bytes()).unwrap();
        assert_eq!(
            ev(&t.quote, &s3, binding.as_bytes()).unwrap_err().error.check(),
            "signature"
        );
    }

    #[test]
    fn make_credential_opens_with_this_ek_only() {
        let tpm = SoftTpm::generate().unwrap();
        let secret = [0x5a; 32];
        let cred = custody_verifier::make_credential(&tpm.ek.public, &tpm.ak_name, &secret).unwrap();
        assert_eq!(
            tpm.activate_credential(&cred.id_object, &cred.encrypted_secret, &tpm.ak_name)
                .unwrap(),
            secret
        );
        // Another EK cannot decrypt the seed; another AK Name fails the HMAC.
        let other = SoftTpm::generate().unwrap();
        assert!(other
            .activate_credential(&cred.id_object, &cred.encrypted_secret, &tpm.ak_name)
            .is_err());
        assert!(tpm
            .activate_credential(&cred.id_object, &cred.encrypted_secret, &other.ak_name)
            .is_err());
        let mut cut = cred.id_object.clone();
        cut.pop();
        assert!(tpm
            .activate_credential(&cut, &cred.encrypted_secret, &tpm.ak_name)
            .is_err());
    }

    #[test]
    fn ek_public_has_the_swtpm_layout() {
        let swtpm = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../verifier/testdata/enroll/swtpm-ek-public.bin"
        ))
        .unwrap();
        // Same template bytes up to the modulus; the modulus is the key's.
        let ours = ek_public(&swtpm[swtpm.len() - 256..]).unwrap();
        assert_eq!(ours, swtpm);
    }
}
