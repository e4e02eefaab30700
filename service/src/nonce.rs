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
/// Outstanding nonces per node: one node cannot fill the table that every node shares.
/// A round needs one; a few cover retries while an old one expires.
pub const MAX_PER_NODE: u32 = 4;

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
    #[error("this node has {MAX_PER_NODE} nonces outstanding; use or let one expire first")]
    PerNode,
    #[error("no randomness: {0}")]
    Rng(String),
}

#[derive(Debug, Default)]
struct Table {
    map: HashMap<[u8; NONCE_LEN], (String, Instant)>,
    /// Outstanding nonces per node (the entries of `map` by owner).
    per_node: HashMap<String, u32>,
}

impl Table {
    fn forget(&mut self, node: &str) {
        if let Some(c) = self.per_node.get_mut(node) {
            *c = c.saturating_sub(1);
            if *c == 0 {
                self.per_node.remove(node);
            }
        }
    }

    /// Drop expired nonces and recount.
    fn purge(&mut self, now: Instant) {
        self.map.retain(|_, (_, exp)| *exp > now);
        self.per_node.clear();
        for (owner, _) in self.map.values() {
            *self.per_node.entry(owner.clone()).or_default() += 1;
        }
    }
}

#[derive(Debug)]
pub struct Nonces {
    ttl: Duration,
    table: Mutex<Table>,
}

impl Nonces {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            table: Mutex::new(Table::default()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh nonce for `node_id` (a round the verifier pulls).
    pub fn issue(&self, node_id: &str) -> Result<Nonce, NonceError> {
        let mut n = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut n).map_err(|e| NonceError::Rng(e.to_string()))?;
        let mut t = self.lock();
        let now = Instant::now();
        if t.map.len() >= MAX_OUTSTANDING || t.per_node.get(node_id).copied().unwrap_or(0) >= MAX_PER_NODE {
            t.purge(now);
            if t.map.len() >= MAX_OUTSTANDING {
                return Err(NonceError::Exhausted);
            }
            if t.per_node.get(node_id).copied().unwrap_or(0) >= MAX_PER_NODE {
                return Err(NonceError::PerNode);
            }
        }
        t.map.insert(n, (node_id.to_owned(), now + self.ttl));
        *t.per_node.entry(node_id.to_owned()).or_default() += 1;
        Ok(Nonce(n))
    }

    /// Consume `nonce` for `node_id`. It is removed whatever the outcome: a nonce shown
    /// once, even with the wrong node, is never accepted again.
    pub fn take(&self, nonce: &Nonce, node_id: &str) -> Result<(), NonceError> {
        let (owner, expires) = {
            let mut t = self.lock();
            let (owner, expires) = t.map.remove(nonce.as_bytes()).ok_or(NonceError::Unknown)?;
            t.forget(&owner);
            (owner, expires)
        };
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
        self.lock().map.len()
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

    /// Issue 20 finding 4: one node could fill the table every node shares.
    #[test]
    fn one_node_cannot_hold_more_than_its_share() {
        let n = Nonces::new(Duration::from_millis(60));
        let held: Vec<Nonce> = (0..MAX_PER_NODE).map(|_| n.issue("greedy").unwrap()).collect();
        assert_eq!(n.issue("greedy"), Err(NonceError::PerNode));
        assert!(n.issue("other").is_ok(), "other nodes are not affected");
        // Using one frees its place; so does expiry.
        n.take(&held[0], "greedy").unwrap();
        assert!(n.issue("greedy").is_ok());
        assert_eq!(n.issue("greedy"), Err(NonceError::PerNode));
        std::thread::sleep(Duration::from_millis(80));
        assert!(n.issue("greedy").is_ok());
    }
}
