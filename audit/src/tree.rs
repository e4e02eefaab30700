//! RFC 9162 (section 2.1) Merkle tree hashing, proofs and their verification. Pure.
//!
//! Leaf hash `SHA-256(0x00 || data)`, node hash `SHA-256(0x01 || left || right)`, the
//! empty tree hashes to `SHA-256("")`. [`Tree`] keeps every complete aligned subtree
//! (about two hashes per leaf) so proofs cost O(log^2 n); [`CompactTree`] keeps only the
//! O(log n) right-edge peaks and is what a streaming auditor uses.

use aws_lc_rs::digest::{self, SHA256};
use thiserror::Error;

/// A SHA-256 tree hash.
pub type Hash = [u8; 32];

fn finish(ctx: digest::Context) -> Hash {
    let d = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut ctx = digest::Context::new(&SHA256);
    ctx.update(&[0x00]);
    ctx.update(data);
    finish(ctx)
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&SHA256, &buf).as_ref());
    out
}

/// The root of the empty tree, `SHA-256("")`.
pub fn empty_root() -> Hash {
    finish(digest::Context::new(&SHA256))
}

/// Why a proof could not be made or did not verify.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ProofError {
    #[error("leaf index {index} is not below tree size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    #[error("tree size {size} exceeds the {have} leaves held")]
    SizeOutOfRange { size: u64, have: u64 },
    #[error("old size {old} is greater than new size {new}")]
    SizesReversed { old: u64, new: u64 },
    #[error("proof has {got} hashes, {want} expected")]
    WrongLength { got: usize, want: usize },
    #[error("proof does not lead to the expected root")]
    RootMismatch,
    #[error("equal sizes but different roots")]
    EqualSizeRootsDiffer,
}

/// The right-edge peaks of a tree: enough to append and to compute the root.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactTree {
    size: u64,
    /// Roots of the perfect subtrees, largest (leftmost) first; one per set bit of `size`.
    peaks: Vec<Hash>,
}

impl CompactTree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Append one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        // Each trailing one bit of the old size is a peak of equal height to merge with.
        while s & 1 == 1 {
            match self.peaks.pop() {
                Some(left) => h = node_hash(&left, &h),
                None => break,
            }
            s >>= 1;
        }
        self.peaks.push(h);
        self.size += 1;
    }

    /// The tree head: peaks folded right to left.
    pub fn root(&self) -> Hash {
        let mut it = self.peaks.iter().rev();
        match it.next() {
            None => empty_root(),
            Some(last) => it.fold(*last, |acc, p| node_hash(p, &acc)),
        }
    }
}

/// An in-memory tree holding every complete aligned subtree hash, for proofs.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    /// `levels[k][i]` = hash of leaves `[i * 2^k, (i + 1) * 2^k)`.
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// Append one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut k = 0;
        loop {
            if self.levels.len() == k {
                self.levels.push(Vec::new());
            }
            let Some(level) = self.levels.get_mut(k) else {
                return;
            };
            level.push(h);
            let n = level.len();
            if n % 2 == 1 {
                return;
            }
            match (level.get(n - 2), level.get(n - 1)) {
                (Some(l), Some(r)) => h = node_hash(l, r),
                _ => return,
            }
            k += 1;
        }
    }

    /// Hash of leaf `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels.first()?.get(usize::try_from(index).ok()?).copied()
    }

    /// MTH(D[start:end]) for `start` aligned to a power of two at least `end - start`
    /// (always so inside the RFC 9162 recursions, which start from 0).
    fn subtree(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        if n == 0 {
            return empty_root();
        }
        if n.is_power_of_two() && start & (n - 1) == 0 {
            let k = n.trailing_zeros() as usize;
            let i = (start >> k) as usize;
            if let Some(h) = self.levels.get(k).and_then(|l| l.get(i)) {
                return *h;
            }
        }
        let k = split(n);
        node_hash(&self.subtree(start, start + k), &self.subtree(start + k, end))
    }

    /// Root of the tree of the first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        self.check_size(size)?;
        Ok(self.subtree(0, size))
    }

    pub fn root(&self) -> Hash {
        self.subtree(0, self.size())
    }

    fn check_size(&self, size: u64) -> Result<(), ProofError> {
        if size > self.size() {
            return Err(ProofError::SizeOutOfRange {
                size,
                have: self.size(),
            });
        }
        Ok(())
    }

    /// RFC 9162 2.1.3.1 PATH(index, D[0:size]), leaf-side first.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(size)?;
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut out = Vec::new();
        self.path(index, 0, size, &mut out);
        Ok(out)
    }

    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.subtree(start, start + k));
        }
    }

    /// RFC 9162 2.1.4.1 PROOF(old, D[0:new]).
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        self.check_size(new)?;
        if old > new {
            return Err(ProofError::SizesReversed { old, new });
        }
        let mut out = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut out);
        }
        Ok(out)
    }

    fn subproof(&self, m: u64, start: u64, end: u64, whole: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !whole {
                out.push(self.subtree(start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, whole, out);
            out.push(self.subtree(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.subtree(start, start + k));
        }
    }
}

/// The largest power of two strictly below `n` (n >= 2).
fn split(n: u64) -> u64 {
    let p = n.next_power_of_two();
    if p == n {
        n / 2
    } else {
        p / 2
    }
}

/// RFC 9162 2.1.3.2: verify that `leaf` is at `index` in the tree of `size` with `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let mut f_n = index;
    let mut s_n = size - 1;
    let mut r = *leaf;
    for p in proof {
        if s_n == 0 {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want: inclusion_len(index, size),
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            r = node_hash(p, &r);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want: inclusion_len(index, size),
        });
    }
    if &r != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Length of an inclusion proof (for error messages).
fn inclusion_len(index: u64, size: u64) -> usize {
    let mut len = 0;
    let (mut f, mut s) = (index, size - 1);
    while s != 0 {
        if f & 1 == 0 && f == s {
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        }
        len += 1;
        f >>= 1;
        s >>= 1;
    }
    len
}

/// RFC 9162 2.1.4.2: verify that the tree `(new, new_root)` extends `(old, old_root)`.
pub fn verify_consistency(
    old: u64,
    new: u64,
    proof: &[Hash],
    old_root: &Hash,
    new_root: &Hash,
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::SizesReversed { old, new });
    }
    if old == new {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want: 0,
            });
        }
        if old_root != new_root {
            return Err(ProofError::EqualSizeRootsDiffer);
        }
        return Ok(());
    }
    if old == 0 {
        // The empty tree is a prefix of every tree; the proof is empty.
        if !proof.is_empty() {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want: 0,
            });
        }
        return Ok(());
    }
    // Prepend old_root when old is a power of two (step 1).
    let mut path: Vec<&Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(old_root);
    }
    path.extend(proof.iter());
    let mut it = path.into_iter();
    let Some(first) = it.next() else {
        return Err(ProofError::WrongLength { got: 0, want: 1 });
    };
    let mut f_n = old - 1;
    let mut s_n = new - 1;
    // Step 3: strip the common right-aligned part.
    while f_n & 1 == 1 {
        f_n >>= 1;
        s_n >>= 1;
    }
    let mut fr = *first;
    let mut sr = *first;
    for c in it {
        if s_n == 0 {
            return Err(ProofError::WrongLength {
                got: proof.len(),
                want: proof.len() - 1,
            });
        }
        if f_n & 1 == 1 || f_n == s_n {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if f_n & 1 == 0 {
                while f_n & 1 == 0 && f_n != 0 {
                    f_n >>= 1;
                    s_n >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f_n >>= 1;
        s_n >>= 1;
    }
    if s_n != 0 {
        return Err(ProofError::WrongLength {
            got: proof.len(),
            want: proof.len() + 1,
        });
    }
    if &fr != old_root || &sr != new_root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! Known answers from transparency-dev/merkle (the Go implementation behind
    //! certificate-transparency-go and Trillian): `testonly/constants.go` (leaf inputs,
    //! node and root hashes) and `proof/verify_test.go` (inclusion and consistency
    //! proofs; its leaf numbers are 1-based, converted to 0-based indices here).
    use super::*;

    fn h(s: &str) -> Hash {
        hex::decode(s).unwrap().try_into().unwrap()
    }

    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];

    const ROOTS: [&str; 9] = [
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    /// Level-0 node hashes (the leaf hashes) from `NodeHashes()`.
    const LEAF_HASHES: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
        "0298d122906dcfc10892cb53a73992fc5b9f493ea4c9badb27b791b4127a7fe7",
        "07506a85fd9dd2f120eb694f86011e5bb4662e5c415a62917033d4a9624487e7",
        "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        "4271a26be0d8a84f0bd54c8c302e7cb3a3b5d1fa6780a40bcce2873477dab658",
        "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
        "46f6ffadd3d06a09ff3c5860d2755c8b9819db7df44251788c7d8e3180de8eb1",
    ];

    /// (0-based index, size, proof) from `inclusionProofs`.
    fn inclusion_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
        vec![
            (
                0,
                8,
                vec![
                    h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
                ],
            ),
            (
                5,
                8,
                vec![
                    h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                    h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
                ],
            ),
            (
                2,
                3,
                vec![h(
                    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
                )],
            ),
            (
                1,
                5,
                vec![
                    h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                ],
            ),
        ]
    }

    /// (old, new, proof) from `consistencyProofs`.
    fn consistency_vectors() -> Vec<(u64, u64, Vec<Hash>)> {
        vec![
            (1, 1, vec![]),
            (
                1,
                8,
                vec![
                    h("96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"),
                ],
            ),
            (
                6,
                8,
                vec![
                    h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                    h("ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0"),
                    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
                ],
            ),
            (
                2,
                5,
                vec![
                    h("5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e"),
                    h("bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"),
                ],
            ),
            (
                6,
                7,
                vec![
                    h("0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a"),
                    h("b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f"),
                    h("d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"),
                ],
            ),
        ]
    }

    fn tree() -> Tree {
        let mut t = Tree::new();
        for l in LEAVES {
            t.push(leaf_hash(&hex::decode(l).unwrap()));
        }
        t
    }

    #[test]
    fn leaf_hashes_match() {
        for (l, want) in LEAVES.iter().zip(LEAF_HASHES) {
            assert_eq!(leaf_hash(&hex::decode(l).unwrap()), h(want));
        }
    }

    #[test]
    fn roots_match_for_every_size() {
        assert_eq!(empty_root(), h(ROOTS[0]));
        let t = tree();
        let mut c = CompactTree::new();
        assert_eq!(c.root(), h(ROOTS[0]));
        for (i, l) in LEAVES.iter().enumerate() {
            c.push(leaf_hash(&hex::decode(l).unwrap()));
            assert_eq!(c.root(), h(ROOTS[i + 1]), "compact size {}", i + 1);
            assert_eq!(t.root_at(i as u64 + 1).unwrap(), h(ROOTS[i + 1]));
        }
        assert_eq!(t.root_at(0).unwrap(), h(ROOTS[0]));
        assert!(t.root_at(9).is_err());
    }

    #[test]
    fn inclusion_proofs_match_and_verify() {
        let t = tree();
        for (idx, size, proof) in inclusion_vectors() {
            assert_eq!(t.inclusion_proof(idx, size).unwrap(), proof, "{idx}/{size}");
            let leaf = h(LEAF_HASHES[idx as usize]);
            let root = h(ROOTS[size as usize]);
            verify_inclusion(idx, size, &leaf, &proof, &root).unwrap();
            // Corruptions in the style of verify_test.go's corruptInclusionProof.
            assert!(verify_inclusion(idx + 1, size, &leaf, &proof, &root).is_err());
            if idx > 0 {
                assert!(verify_inclusion(idx - 1, size, &leaf, &proof, &root).is_err());
            }
            assert!(verify_inclusion(idx, size * 2, &leaf, &proof, &root).is_err());
            assert!(verify_inclusion(idx, size, &h(ROOTS[0]), &proof, &root).is_err());
            assert!(verify_inclusion(idx, size, &leaf, &proof, &h(ROOTS[0])).is_err());
            let mut longer = proof.clone();
            longer.push(root);
            assert!(verify_inclusion(idx, size, &leaf, &longer, &root).is_err());
            assert!(verify_inclusion(idx, size, &leaf, &proof[1..], &root).is_err());
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i][0] ^= 8;
                assert!(verify_inclusion(idx, size, &leaf, &bad, &root).is_err());
            }
        }
        // Single-leaf tree: empty proof, leaf == root.
        let l = leaf_hash(b"data");
        verify_inclusion(0, 1, &l, &[], &l).unwrap();
        assert!(verify_inclusion(0, 0, &l, &[], &l).is_err());
        assert!(verify_inclusion(1, 1, &l, &[], &l).is_err());
    }

    #[test]
    fn consistency_proofs_match_and_verify() {
        let t = tree();
        for (old, new, proof) in consistency_vectors() {
            assert_eq!(t.consistency_proof(old, new).unwrap(), proof, "{old}->{new}");
            let (r1, r2) = (h(ROOTS[old as usize]), h(ROOTS[new as usize]));
            verify_consistency(old, new, &proof, &r1, &r2).unwrap();
            if proof.is_empty() {
                continue;
            }
            assert!(verify_consistency(old, new, &proof, &r2, &r1).is_err());
            assert!(verify_consistency(old + 1, new, &proof, &r1, &r2).is_err());
            assert!(verify_consistency(old - 1, new, &proof, &r1, &r2).is_err());
            assert!(verify_consistency(old, new * 2, &proof, &r1, &r2).is_err());
            assert!(verify_consistency(old, new, &[], &r1, &r2).is_err());
            assert!(verify_consistency(old, new, &proof[..proof.len() - 1], &r1, &r2).is_err());
            let mut longer = proof.clone();
            longer.push(r1);
            assert!(verify_consistency(old, new, &longer, &r1, &r2).is_err());
            for i in 0..proof.len() {
                let mut bad = proof.clone();
                bad[i][0] ^= 16;
                assert!(verify_consistency(old, new, &bad, &r1, &r2).is_err());
            }
        }
        let (a, b) = (h(ROOTS[1]), h(ROOTS[2]));
        verify_consistency(0, 1, &[], &a, &b).unwrap();
        assert!(verify_consistency(1, 1, &[], &a, &b).is_err());
        assert!(verify_consistency(2, 1, &[], &a, &b).is_err());
    }

    /// Every proof the tree makes, for every pair of sizes up to 33, verifies.
    #[test]
    fn all_small_proofs_roundtrip() {
        let mut t = Tree::new();
        let mut roots = vec![empty_root()];
        for i in 0..33u32 {
            t.push(leaf_hash(&i.to_be_bytes()));
            roots.push(t.root());
        }
        for n in 1..=33u64 {
            for m in 0..n {
                let p = t.inclusion_proof(m, n).unwrap();
                verify_inclusion(m, n, &t.leaf(m).unwrap(), &p, &roots[n as usize]).unwrap();
            }
            for m in 0..=n {
                let p = t.consistency_proof(m, n).unwrap();
                verify_consistency(m, n, &p, &roots[m as usize], &roots[n as usize]).unwrap();
            }
        }
    }
}
