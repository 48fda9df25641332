//! The provider's own counters, read by tests and benches through
//! [`AwsProvider::stats`](crate::AwsProvider::stats). The service's metrics
//! come through the [`Observer`](meshmirror_provider::Observer) instead.

use std::sync::atomic::{AtomicU64, Ordering};

use meshmirror_provider::FeedOutcome;

#[derive(Debug, Default)]
pub(crate) struct Stats {
    events: AtomicU64,
    malformed: AtomicU64,
    ignored: AtomicU64,
    unmatched: AtomicU64,
    deleted: AtomicU64,
    rebalance: AtomicU64,
    throttled: AtomicU64,
    heartbeats: AtomicU64,
    heartbeat_errors: AtomicU64,
}

/// A copy of the provider's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    pub events: u64,
    pub malformed: u64,
    pub ignored: u64,
    /// About an instance in no Auto Scaling group.
    pub unmatched: u64,
    /// Queue messages deleted (handled, malformed, ignored or unmatched).
    pub deleted: u64,
    pub rebalance: u64,
    pub throttled: u64,
    pub heartbeats: u64,
    pub heartbeat_errors: u64,
}

impl Stats {
    pub fn message(&self, outcome: FeedOutcome) {
        let counter = match outcome {
            FeedOutcome::Event => &self.events,
            FeedOutcome::Malformed => &self.malformed,
            FeedOutcome::Ignored => &self.ignored,
            FeedOutcome::Unmatched => &self.unmatched,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    pub fn deleted(&self, n: u64) {
        self.deleted.fetch_add(n, Ordering::Relaxed);
    }
    pub fn rebalance(&self) {
        self.rebalance.fetch_add(1, Ordering::Relaxed);
    }
    pub fn throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }
    pub fn heartbeat(&self, ok: bool) {
        let counter = if ok {
            &self.heartbeats
        } else {
            &self.heartbeat_errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> StatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            events: get(&self.events),
            malformed: get(&self.malformed),
            ignored: get(&self.ignored),
            unmatched: get(&self.unmatched),
            deleted: get(&self.deleted),
            rebalance: get(&self.rebalance),
            throttled: get(&self.throttled),
            heartbeats: get(&self.heartbeats),
            heartbeat_errors: get(&self.heartbeat_errors),
        }
    }
}
