//! Certificate byte plumbing the collectors and the probe need, pure and panic-free:
//! tell a PEM chain from concatenated DER, split DER certificates by their outer
//! SEQUENCE length, and write DER as PEM.
//!
//! This is framing only: nothing here parses or trusts a certificate (the verifier does,
//! with x509-parser). A DER input that is not an exact concatenation of definite-length
//! SEQUENCEs is refused whole, never cut to the part that parsed.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
const END: &str = "-----END CERTIFICATE-----";

/// How a certificate chain is encoded, and how many certificates it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainEncoding {
    /// `n` PEM CERTIFICATE blocks.
    Pem(usize),
    /// `n` concatenated DER certificates (each an outer SEQUENCE).
    Der(usize),
    /// Neither: empty, truncated DER, or something else.
    Unknown,
}

/// Classify `bytes` as PEM, concatenated DER or neither.
pub fn classify(bytes: &[u8]) -> ChainEncoding {
    let pem = count_pem(bytes);
    if pem > 0 {
        return ChainEncoding::Pem(pem);
    }
    match split_der(bytes) {
        Some(certs) => ChainEncoding::Der(certs.len()),
        None => ChainEncoding::Unknown,
    }
}

/// Number of complete `BEGIN CERTIFICATE` ... `END CERTIFICATE` blocks.
pub fn count_pem(bytes: &[u8]) -> usize {
    let mut n = 0;
    let mut rest = bytes;
    while let Some(b) = find(rest, BEGIN.as_bytes()) {
        let after = rest.get(b + BEGIN.len()..).unwrap_or_default();
        match find(after, END.as_bytes()) {
            Some(e) => {
                n += 1;
                rest = after.get(e + END.len()..).unwrap_or_default();
            }
            None => break,
        }
    }
    n
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Split concatenated DER certificates. `None` unless the whole input is one or more
/// SEQUENCEs with definite lengths that end exactly at the end of the input.
pub fn split_der(mut input: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (&tag, rest) = input.split_first()?;
        if tag != 0x30 {
            return None;
        }
        let (&first, mut rest) = rest.split_first()?;
        let len = if first < 0x80 {
            usize::from(first)
        } else {
            // Long form: 1-4 length bytes; 0x80 (indefinite) is not DER.
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 {
                return None;
            }
            let (bytes, r) = rest.split_at_checked(n)?;
            rest = r;
            bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
        };
        let header = input.len() - rest.len();
        let (cert, r) = input.split_at_checked(header.checked_add(len)?)?;
        out.push(cert);
        input = r;
    }
    if out.is_empty() {
        None
    } else {
        Some(out)
    }
}

/// One DER certificate as a PEM block (64-column base64, trailing newline).
pub fn der_to_pem(der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut s = String::with_capacity(b64.len() + b64.len() / 64 + 64);
    s.push_str(BEGIN);
    s.push('\n');
    // base64 output is ASCII, so byte chunks are valid str boundaries.
    for line in b64.as_bytes().chunks(64) {
        s.push_str(std::str::from_utf8(line).unwrap_or_default());
        s.push('\n');
    }
    s.push_str(END);
    s.push('\n');
    s
}

/// The chain as PEM: PEM input unchanged, concatenated DER converted, anything else `None`.
pub fn chain_to_pem(bytes: &[u8]) -> Option<Vec<u8>> {
    match classify(bytes) {
        ChainEncoding::Pem(_) => Some(bytes.to_vec()),
        ChainEncoding::Der(_) => {
            let certs = split_der(bytes)?;
            Some(certs.into_iter().map(der_to_pem).collect::<String>().into_bytes())
        }
        ChainEncoding::Unknown => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seq(body_len: usize) -> Vec<u8> {
        let mut v = vec![0x30];
        if body_len < 0x80 {
            v.push(body_len as u8);
        } else {
            v.extend_from_slice(&[0x82, (body_len >> 8) as u8, body_len as u8]);
        }
        v.extend(std::iter::repeat_n(0xab, body_len));
        v
    }

    #[test]
    fn splits_exact_der_concatenations_only() {
        let (a, b) = (seq(3), seq(300));
        let both = [a.clone(), b.clone()].concat();
        assert_eq!(split_der(&both).unwrap(), vec![&a[..], &b[..]]);
        assert_eq!(classify(&both), ChainEncoding::Der(2));
        // Truncated, trailing byte, wrong tag, indefinite length, empty: all refused.
        assert!(split_der(&both[..both.len() - 1]).is_none());
        assert!(split_der(&[both.clone(), vec![0]].concat()).is_none());
        assert!(split_der(&[0x31, 0x00]).is_none());
        assert!(split_der(&[0x30, 0x80, 0, 0]).is_none());
        assert!(split_der(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
        assert!(split_der(&[]).is_none());
        assert_eq!(classify(b"hello"), ChainEncoding::Unknown);
    }

    #[test]
    fn der_becomes_pem_that_counts_and_decodes_back() {
        let (a, b) = (seq(10), seq(200));
        let pem = chain_to_pem(&[a.clone(), b.clone()].concat()).unwrap();
        assert_eq!(classify(&pem), ChainEncoding::Pem(2));
        let text = String::from_utf8(pem.clone()).unwrap();
        assert!(text.lines().all(|l| l.len() <= 64));
        // Decode the first block back to the same DER.
        let body: String = text
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with("-----END"))
            .collect();
        assert_eq!(STANDARD.decode(body).unwrap(), a);
        // PEM is passed through unchanged; an unterminated block does not count.
        assert_eq!(chain_to_pem(&pem).unwrap(), pem);
        assert_eq!(count_pem(format!("{BEGIN}\nAAAA\n").as_bytes()), 0);
        assert!(chain_to_pem(b"junk").is_none());
    }
}
