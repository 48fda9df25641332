//! The fencing token of leadership: whether this replica may write now.
//! Outside leader election it always may. With it, each won lease starts a
//! new term and losing the lease ends it *before* the term's work is told to
//! stop and awaited, so a pass still running then (a slow cloud call) writes
//! nothing more, answers no hook, and cannot overlap the next leader.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Cheap to clone; clones share the token.
#[derive(Clone, Debug)]
pub struct Fence(Arc<AtomicU64>);

/// No term: not leading.
const NONE: u64 = 0;

impl Fence {
    /// A replica that always leads (no leader election).
    pub fn always() -> Fence {
        Fence(Arc::new(AtomicU64::new(1)))
    }

    /// A replica that does not lead until [`Fence::begin`].
    pub fn standby() -> Fence {
        Fence(Arc::new(AtomicU64::new(NONE)))
    }

    /// Whether writes are allowed now.
    pub fn holds(&self) -> bool {
        self.0.load(Ordering::Acquire) != NONE
    }

    /// The current term (0: none).
    pub fn term(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    /// A lease was won: term `term` (1, 2, ...) starts.
    pub fn begin(&self, term: u64) {
        self.0.store(term.max(1), Ordering::Release);
    }

    /// The lease was lost or given up: no write from now on.
    pub fn end(&self) {
        self.0.store(NONE, Ordering::Release);
    }
}

impl Default for Fence {
    fn default() -> Self {
        Fence::always()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terms_begin_and_end_for_every_clone() {
        let fence = Fence::standby();
        let seen_by_a_pass = fence.clone();
        assert!(!seen_by_a_pass.holds());
        fence.begin(3);
        assert!(seen_by_a_pass.holds());
        assert_eq!(seen_by_a_pass.term(), 3);
        fence.end();
        assert!(!seen_by_a_pass.holds());
        assert!(Fence::always().holds());
    }
}
