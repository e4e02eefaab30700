//! A small bounded map keyed by a SHA-256 over exact input bytes, oldest entry evicted
//! first. Shared by the chain cache (validated certificate chains) and the TPM verifier
//! (prepared attestation keys): both skip repeated work for bytes seen before, and both
//! re-check everything that depends on the evidence or the time on every hit.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Cache key: SHA-256 over the length-prefixed parts that determine the value.
pub type CacheKey = [u8; 32];

/// SHA-256 over `parts`, each prefixed by its length so different splits never collide.
pub fn cache_key<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> CacheKey {
    use aws_lc_rs::digest;
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut k = [0u8; 32];
    k.copy_from_slice(ctx.finish().as_ref());
    k
}

#[derive(Debug)]
pub struct BoundedCache<V> {
    capacity: usize,
    inner: Mutex<Inner<V>>,
}

#[derive(Debug)]
struct Inner<V> {
    map: HashMap<CacheKey, V>,
    order: VecDeque<CacheKey>,
}

impl<V: Clone> BoundedCache<V> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// A poisoned lock (a panic elsewhere while holding it) acts as an empty cache: the
    /// caller recomputes, which is always correct.
    pub fn get(&self, key: &CacheKey) -> Option<V> {
        self.inner.lock().ok().and_then(|g| g.map.get(key).cloned())
    }

    pub fn insert(&self, key: CacheKey, value: V) {
        if let Ok(mut g) = self.inner.lock() {
            if g.map.contains_key(&key) {
                return;
            }
            if g.map.len() >= self.capacity {
                if let Some(old) = g.order.pop_front() {
                    g.map.remove(&old);
                }
            }
            g.order.push_back(key);
            g.map.insert(key, value);
        }
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|g| g.map.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_oldest_and_keys_are_split_safe() {
        let c = BoundedCache::new(2);
        let (a, b, d) = (
            cache_key([&b"a"[..]]),
            cache_key([&b"b"[..]]),
            cache_key([&b"d"[..]]),
        );
        c.insert(a, 1);
        c.insert(b, 2);
        c.insert(a, 9); // present: not replaced
        assert_eq!(c.get(&a), Some(1));
        c.insert(d, 3);
        assert_eq!((c.get(&a), c.get(&b), c.get(&d)), (None, Some(2), Some(3)));
        assert_eq!(c.len(), 2);
        assert_ne!(cache_key([&b"ab"[..], b"c"]), cache_key([&b"a"[..], b"bc"]));
    }
}
