//! Request counters and injected faults, for tests.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use std::sync::{Arc, Mutex};

use super::listener::Listener;
use super::lock;
use super::status::ApiError;

/// The Kubernetes verb of a resource request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

impl Verb {
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Verb::Create | Verb::Update | Verb::Patch | Verb::Delete | Verb::DeleteCollection
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Watch => "watch",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
            Verb::DeleteCollection => "deletecollection",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A snapshot of request counts by verb and resource (`plural`, or
/// `plural/status` for the status subresource). Discovery is not counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts {
    counts: HashMap<(Verb, String), u64>,
}

impl RequestCounts {
    pub(crate) fn bump(&mut self, verb: Verb, resource: &str) {
        *self.counts.entry((verb, resource.to_string())).or_default() += 1;
    }

    /// Requests with this verb on this resource.
    pub fn get(&self, verb: Verb, resource: &str) -> u64 {
        self.counts
            .get(&(verb, resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests with this verb, any resource.
    pub fn verb(&self, verb: Verb) -> u64 {
        self.sum(|v, _| v == verb)
    }

    /// Requests on this resource, any verb.
    pub fn resource(&self, resource: &str) -> u64 {
        self.sum(|_, r| r == resource)
    }

    /// create + update + patch + delete + deletecollection, any resource.
    pub fn writes(&self) -> u64 {
        self.sum(|v, _| v.is_write())
    }

    pub fn total(&self) -> u64 {
        self.sum(|_, _| true)
    }

    /// What happened after `earlier` was taken.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        let mut counts = HashMap::new();
        for (k, n) in &self.counts {
            let d = n.saturating_sub(earlier.counts.get(k).copied().unwrap_or(0));
            if d > 0 {
                counts.insert(k.clone(), d);
            }
        }
        RequestCounts { counts }
    }

    /// Every (verb, resource, count), sorted.
    pub fn entries(&self) -> Vec<(Verb, String, u64)> {
        let mut v: Vec<_> = self
            .counts
            .iter()
            .map(|((verb, r), n)| (*verb, r.clone(), *n))
            .collect();
        v.sort();
        v
    }

    fn sum(&self, f: impl Fn(Verb, &str) -> bool) -> u64 {
        self.counts
            .iter()
            .filter(|((v, r), _)| f(*v, r))
            .map(|(_, n)| n)
            .sum()
    }
}

/// A write the server carried out (injected failures are not), in the order
/// it answered them: tests compare *when* writes happened with what else was
/// recorded (a hook's completion, another write) instead of sleeping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoggedWrite {
    /// 0, 1, 2, ... in the order of `at`.
    pub seq: u64,
    /// When the server had carried it out, just before it answered: the
    /// client sees the answer no earlier.
    pub at: std::time::Instant,
    pub verb: Verb,
    /// `plural`, or `plural/status`, as [`RequestCounts`] names it.
    pub resource: String,
    pub namespace: Option<String>,
    /// None for a create (the name is in the body) and a deletecollection.
    pub name: Option<String>,
    /// The HTTP status of the answer.
    pub status: u16,
}

impl LoggedWrite {
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Which requests a fault applies to. `Match::any()` matches every resource
/// request; narrow it with [`Match::verb`] and [`Match::resource`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Match {
    verb: Option<Verb>,
    resource: Option<String>,
    namespace: Option<String>,
}

impl Match {
    pub fn any() -> Self {
        Match::default()
    }

    pub fn verb(mut self, verb: Verb) -> Self {
        self.verb = Some(verb);
        self
    }

    /// `plural` or `plural/status`.
    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = Some(resource.to_string());
        self
    }

    /// Requests in this namespace only.
    pub fn namespace(mut self, namespace: &str) -> Self {
        self.namespace = Some(namespace.to_string());
        self
    }

    pub(crate) fn matches(&self, verb: Verb, resource: &str, namespace: Option<&str>) -> bool {
        self.verb.is_none_or(|v| v == verb)
            && self.resource.as_deref().is_none_or(|r| r == resource)
            && self
                .namespace
                .as_deref()
                .is_none_or(|n| Some(n) == namespace)
    }
}

/// The error an injected fault answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Injected {
    /// 409 Conflict.
    Conflict,
    /// 429 TooManyRequests with `Retry-After`.
    TooManyRequests { retry_after_secs: u64 },
    /// 500 InternalError.
    Internal,
    /// 503 ServiceUnavailable.
    Unavailable,
}

impl Injected {
    pub(crate) fn error(self) -> ApiError {
        match self {
            Injected::Conflict => ApiError::new(
                409,
                "Conflict",
                "Operation cannot be fulfilled: injected conflict (meshmirror-testkit fault)",
            ),
            Injected::TooManyRequests { retry_after_secs } => {
                let mut e = ApiError::new(
                    429,
                    "TooManyRequests",
                    "The server has received too many requests and has asked us to try again later (meshmirror-testkit fault)",
                );
                e.retry_after = Some(retry_after_secs);
                e
            }
            Injected::Internal => ApiError::internal(
                "Internal error occurred: injected fault (meshmirror-testkit fault)",
            ),
            Injected::Unavailable => ApiError::new(
                503,
                "ServiceUnavailable",
                "The server is currently unable to handle the request (meshmirror-testkit fault)",
            ),
        }
    }
}

/// Pending failures and delays.
#[derive(Debug, Default)]
pub(crate) struct FaultRules {
    fails: Vec<(Match, u32, Injected)>,
    delays: Vec<(Match, Duration)>,
}

impl FaultRules {
    pub fn fail_next(&mut self, m: Match, n: u32, err: Injected) {
        if n > 0 {
            self.fails.push((m, n, err));
        }
    }

    pub fn delay(&mut self, m: Match, d: Duration) {
        self.delays.push((m, d));
    }

    pub fn clear(&mut self) {
        self.fails.clear();
        self.delays.clear();
    }

    /// The delay and the failure (consuming one) for this request.
    pub fn take(
        &mut self,
        verb: Verb,
        resource: &str,
        namespace: Option<&str>,
    ) -> (Duration, Option<ApiError>) {
        let delay = self
            .delays
            .iter()
            .filter(|(m, _)| m.matches(verb, resource, namespace))
            .map(|(_, d)| *d)
            .max()
            .unwrap_or_default();
        let mut err = None;
        if let Some(i) = self
            .fails
            .iter()
            .position(|(m, _, _)| m.matches(verb, resource, namespace))
        {
            let (_, left, e) = &mut self.fails[i];
            err = Some(e.error());
            *left -= 1;
            if *left == 0 {
                self.fails.remove(i);
            }
        }
        (delay, err)
    }
}

/// What a server does to its watches when a test asks: the test kit's own
/// server and the proxy in front of a real one each in their own way.
pub(crate) trait Watches: Send + Sync {
    /// Ends every open watch.
    fn close_all(&self);
    /// The next watch from an older resourceVersion (and an older list
    /// `continue` token) gets 410 Expired.
    fn compact(&self);
}

/// Faults to inject into a running server: the test kit's [`super::ApiServer`]
/// or the proxy in front of a real one (`crate::kubeproxy`).
#[derive(Clone)]
pub struct Faults {
    rules: Arc<Mutex<FaultRules>>,
    listener: Arc<Listener>,
    watches: Arc<dyn Watches>,
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Faults")
            .field("rules", &self.rules)
            .finish_non_exhaustive()
    }
}

impl Faults {
    pub(crate) fn new(
        rules: Arc<Mutex<FaultRules>>,
        listener: Arc<Listener>,
        watches: Arc<dyn Watches>,
    ) -> Faults {
        Faults {
            rules,
            listener,
            watches,
        }
    }

    /// The next `n` requests matching `m` fail with `error`.
    pub fn fail_next(&self, m: Match, n: u32, error: Injected) {
        lock(&self.rules).fail_next(m, n, error);
    }

    /// Every request matching `m` waits `by` before it is served (until [`Self::clear`]).
    pub fn delay(&self, m: Match, by: Duration) {
        lock(&self.rules).delay(m, by);
    }

    /// Removes pending failures and delays.
    pub fn clear(&self) {
        lock(&self.rules).clear();
    }

    /// Ends every open watch (clients see the stream end and re-watch).
    pub fn close_watches(&self) {
        self.watches.close_all();
    }

    /// Drops the watch history: the next watch from an older resourceVersion
    /// (and any older list `continue` token) gets 410 Expired.
    pub fn compact(&self) {
        self.watches.compact();
    }

    /// The server goes down: the port refuses connections and open connections
    /// (watches included) are cut. State is kept.
    pub async fn go_down(&self) {
        self.listener.stop().await;
    }

    /// The server comes back on the same port.
    pub fn come_up(&self) -> std::io::Result<()> {
        self.listener.resume()
    }

    /// Down for `d`, then up again.
    pub async fn down_for(&self, d: Duration) -> std::io::Result<()> {
        self.go_down().await;
        tokio::time::sleep(d).await;
        self.come_up()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_diff_and_sum() {
        let mut a = RequestCounts::default();
        a.bump(Verb::List, "leases");
        let mut b = a.clone();
        b.bump(Verb::Patch, "leases");
        b.bump(Verb::Patch, "workloadentries/status");
        b.bump(Verb::Watch, "leases");
        let d = b.since(&a);
        assert_eq!(d.writes(), 2);
        assert_eq!(d.verb(Verb::List), 0);
        assert_eq!(d.get(Verb::Patch, "workloadentries/status"), 1);
        assert_eq!(b.resource("leases"), 3);
        assert_eq!(b.total(), 4);
    }

    #[test]
    fn a_namespaced_fault_matches_that_namespace_only() {
        let mut r = FaultRules::default();
        r.fail_next(Match::any().namespace("bad"), 1, Injected::Internal);
        assert!(r.take(Verb::Patch, "x", Some("good")).1.is_none());
        assert!(r.take(Verb::Patch, "x", None).1.is_none());
        assert!(r.take(Verb::Patch, "x", Some("bad")).1.is_some());
        assert!(r.take(Verb::Patch, "x", Some("bad")).1.is_none());
    }

    #[test]
    fn failures_are_consumed_in_order() {
        let mut r = FaultRules::default();
        r.fail_next(
            Match::any().verb(Verb::Patch).resource("x"),
            2,
            Injected::TooManyRequests {
                retry_after_secs: 3,
            },
        );
        assert!(r.take(Verb::Get, "x", None).1.is_none());
        assert!(r.take(Verb::Patch, "y", None).1.is_none());
        let e = r.take(Verb::Patch, "x", None).1.unwrap();
        assert_eq!((e.code, e.retry_after), (429, Some(3)));
        assert!(r.take(Verb::Patch, "x", None).1.is_some());
        assert!(r.take(Verb::Patch, "x", None).1.is_none());
        r.delay(Match::any(), Duration::from_millis(5));
        assert_eq!(r.take(Verb::Get, "z", None).0, Duration::from_millis(5));
    }
}
