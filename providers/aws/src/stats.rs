//! What the provider counts, and the hook through which the service turns
//! it into metrics.

use std::sync::atomic::{AtomicU64, Ordering};

/// What became of one queue message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MessageOutcome {
    /// Turned into a group event (deleted once the controller acks it).
    Event,
    /// Not understood: logged and deleted.
    Malformed,
    /// A test notification or an event kind meshmirror does not act on.
    Ignored,
    /// Names an instance in no Auto Scaling group: deleted.
    Foreign,
}

/// Receives the provider's counts as they happen (the service maps them to
/// Prometheus metrics).
pub trait Observer: Send + Sync + 'static {
    fn message(&self, _outcome: MessageOutcome) {}
    fn rebalance(&self) {}
    fn throttled(&self, _operation: &'static str) {}
    fn heartbeat(&self, _ok: bool) {}
}

#[derive(Debug, Default)]
pub(crate) struct Stats {
    events: AtomicU64,
    malformed: AtomicU64,
    ignored: AtomicU64,
    foreign: AtomicU64,
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
    pub foreign: u64,
    /// Queue messages deleted (handled, malformed, ignored or foreign).
    pub deleted: u64,
    pub rebalance: u64,
    pub throttled: u64,
    pub heartbeats: u64,
    pub heartbeat_errors: u64,
}

impl Stats {
    pub fn message(&self, outcome: MessageOutcome) {
        let counter = match outcome {
            MessageOutcome::Event => &self.events,
            MessageOutcome::Malformed => &self.malformed,
            MessageOutcome::Ignored => &self.ignored,
            MessageOutcome::Foreign => &self.foreign,
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
            foreign: get(&self.foreign),
            deleted: get(&self.deleted),
            rebalance: get(&self.rebalance),
            throttled: get(&self.throttled),
            heartbeats: get(&self.heartbeats),
            heartbeat_errors: get(&self.heartbeat_errors),
        }
    }
}
