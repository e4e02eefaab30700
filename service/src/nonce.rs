//! Round nonces: 32 random bytes, bound to the node they were issued for, single use,
//! expiring after the configured TTL. Kept in memory: a restart invalidates outstanding
//! nonces, which only costs the agents one retry and can never accept a replay.

use custody_formats::binding::{Nonce, NONCE_LEN};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};
use thiserror::Error;

/// Outstanding nonces held at most; issuing beyond it first drops expired ones, then
/// refuses (a flood of nonce requests cannot grow memory without bound).
const MAX_OUTSTANDING: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NonceError {
    #[error("nonce was not issued by this verifier, or was already used")]
    Unknown,
    #[error("nonce expired {0} ms ago")]
    Expired(u128),
    #[error("nonce was issued for another node")]
    WrongNode,
    #[error("too many outstanding nonces")]
    Exhausted,
    #[error("no randomness: {0}")]
    Rng(String),
}

#[derive(Debug)]
pub struct Nonces {
    ttl: Duration,
    map: Mutex<HashMap<[u8; NONCE_LEN], (String, Instant)>>,
}

impl Nonces {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<[u8; NONCE_LEN], (String, Instant)>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh nonce for `node_id`.
    pub fn issue(&self, node_id: &str) -> Result<Nonce, NonceError> {
        let mut n = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut n).map_err(|e| NonceError::Rng(e.to_string()))?;
        let mut map = self.lock();
        if map.len() >= MAX_OUTSTANDING {
            let now = Instant::now();
            map.retain(|_, (_, exp)| *exp > now);
            if map.len() >= MAX_OUTSTANDING {
                return Err(NonceError::Exhausted);
            }
        }
        map.insert(n, (node_id.to_owned(), Instant::now() + self.ttl));
        Ok(Nonce(n))
    }

    /// Consume `nonce` for `node_id`. It is removed whatever the outcome: a nonce shown
    /// once, even with the wrong node, is never accepted again.
    pub fn take(&self, nonce: &Nonce, node_id: &str) -> Result<(), NonceError> {
        let (owner, expires) = self.lock().remove(nonce.as_bytes()).ok_or(NonceError::Unknown)?;
        let now = Instant::now();
        if now > expires {
            return Err(NonceError::Expired(now.duration_since(expires).as_millis()));
        }
        if owner != node_id {
            return Err(NonceError::WrongNode);
        }
        Ok(())
    }

    pub fn outstanding(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_use_bound_and_expiring() {
        let n = Nonces::new(Duration::from_millis(50));
        let a = n.issue("a").unwrap();
        assert_ne!(a, n.issue("a").unwrap(), "nonces are random");
        assert_eq!(n.take(&a, "a"), Ok(()));
        assert_eq!(n.take(&a, "a"), Err(NonceError::Unknown), "replay");
        let b = n.issue("a").unwrap();
        assert_eq!(n.take(&b, "b"), Err(NonceError::WrongNode));
        assert_eq!(
            n.take(&b, "a"),
            Err(NonceError::Unknown),
            "burnt by the wrong node"
        );
        let c = n.issue("a").unwrap();
        std::thread::sleep(Duration::from_millis(80));
        assert!(matches!(n.take(&c, "a"), Err(NonceError::Expired(_))));
        assert_eq!(n.take(&Nonce([0; 32]), "a"), Err(NonceError::Unknown));
    }
}
