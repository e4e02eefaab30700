//! A bounded DER walk for the few extensions read by hand (Intel's SGX extension, Google's
//! instance extension), where x509-parser has no type.

/// `(tag, content)` of each TLV directly in `b`; lengths up to 3 bytes, never past `b`.
pub(crate) fn tlvs(mut b: &[u8]) -> Result<Vec<(u8, &[u8])>, String> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (&tag, rest) = b.split_first().ok_or("empty")?;
        let (&l0, mut rest) = rest.split_first().ok_or("no length")?;
        let len = if l0 & 0x80 == 0 {
            usize::from(l0)
        } else {
            let n = usize::from(l0 & 0x7f);
            if n == 0 || n > 3 || rest.len() < n {
                return Err("bad length".into());
            }
            let (lb, r) = rest.split_at(n);
            rest = r;
            lb.iter().fold(0usize, |a, x| (a << 8) | usize::from(*x))
        };
        if rest.len() < len {
            return Err("truncated".into());
        }
        let (content, r) = rest.split_at(len);
        out.push((tag, content));
        b = r;
    }
    Ok(out)
}

/// A DER INTEGER's content as a non-negative value of up to 64 bits.
pub(crate) fn uint(b: &[u8]) -> Option<u64> {
    if b.first().is_none_or(|x| x & 0x80 != 0) {
        return None; // empty or negative
    }
    let b = match b {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => b,
    };
    (b.len() <= 8).then(|| b.iter().fold(0u64, |a, x| (a << 8) | u64::from(*x)))
}
