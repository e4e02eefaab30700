//! Per-node request rates: what one node may ask of the verifier per minute, so that a
//! node with a valid certificate cannot make the verifier store and log without bound.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// At most `limit` requests per node in each `window` (a fixed window that starts with
/// the node's first request in it).
#[derive(Debug)]
pub struct PerNode {
    limit: u32,
    window: Duration,
    /// Node -> (window start, requests in it). One entry per node that ever asked:
    /// bounded by the number of enrolled nodes (callers pass authenticated ids only).
    seen: Mutex<HashMap<String, (Instant, u32)>>,
}

impl PerNode {
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, (Instant, u32)>> {
        // Counters only: a panic cannot leave them half changed.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Count one request of `node`; `Err(limit)` when it is over its share.
    pub fn admit(&self, node: &str) -> Result<(), u32> {
        let now = Instant::now();
        let mut seen = self.lock();
        let e = seen.entry(node.to_owned()).or_insert((now, 0));
        if now.duration_since(e.0) >= self.window {
            *e = (now, 0);
        }
        if e.1 >= self.limit {
            return Err(self.limit);
        }
        e.1 += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_node_has_its_own_share_per_window() {
        let r = PerNode::new(3, Duration::from_millis(100));
        for _ in 0..3 {
            r.admit("a").unwrap();
        }
        assert_eq!(r.admit("a"), Err(3));
        assert!(r.admit("b").is_ok(), "other nodes are not affected");
        std::thread::sleep(Duration::from_millis(120));
        assert!(r.admit("a").is_ok(), "a new window");
    }
}
