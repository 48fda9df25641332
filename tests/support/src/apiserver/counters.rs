//! What a server (the test kit's, or the proxy in front of a real one) was
//! asked: counts by verb and resource, by client, across all namespaces, and
//! the log of writes it carried out.

use std::collections::HashMap;
use std::sync::Mutex;

use super::faults::{LoggedWrite, RequestCounts, Verb};
use super::lock;

/// One resource request, as it is counted.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counted<'a> {
    pub verb: Verb,
    /// `plural` or `plural/status`.
    pub resource: &'a str,
    pub namespace: Option<&'a str>,
    pub name: Option<&'a str>,
    /// A list or watch of a namespaced resource across all namespaces.
    pub cluster_wide: bool,
    /// The client's `User-Agent`.
    pub agent: Option<&'a str>,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    counts: Mutex<RequestCounts>,
    by_agent: Mutex<HashMap<String, RequestCounts>>,
    cluster_wide: Mutex<RequestCounts>,
    writes: Mutex<Vec<LoggedWrite>>,
}

impl Counters {
    pub fn record(&self, c: Counted<'_>) {
        lock(&self.counts).bump(c.verb, c.resource);
        if c.cluster_wide {
            lock(&self.cluster_wide).bump(c.verb, c.resource);
        }
        if let Some(agent) = c.agent {
            lock(&self.by_agent)
                .entry(agent.to_string())
                .or_default()
                .bump(c.verb, c.resource);
        }
    }

    /// Logs a write once answered with `status`.
    pub fn log_write(&self, c: Counted<'_>, status: u16) {
        let mut writes = lock(&self.writes);
        let seq = writes.len() as u64;
        writes.push(LoggedWrite {
            seq,
            at: std::time::Instant::now(),
            verb: c.verb,
            resource: c.resource.to_string(),
            namespace: c.namespace.map(str::to_string),
            name: c.name.map(str::to_string),
            status,
        });
    }

    pub fn requests(&self) -> RequestCounts {
        lock(&self.counts).clone()
    }

    pub fn cluster_wide(&self) -> RequestCounts {
        lock(&self.cluster_wide).clone()
    }

    pub fn by_agent(&self, agent: &str) -> RequestCounts {
        lock(&self.by_agent).get(agent).cloned().unwrap_or_default()
    }

    pub fn write_log(&self) -> Vec<LoggedWrite> {
        lock(&self.writes).clone()
    }

    pub fn reset(&self) {
        *lock(&self.counts) = RequestCounts::default();
        lock(&self.by_agent).clear();
        *lock(&self.cluster_wide) = RequestCounts::default();
        lock(&self.writes).clear();
    }
}
