//! One `DescribeAutoScalingGroups` round per region serves every mirror of
//! that region: a pass that finds a round in flight for its group joins it,
//! one that finds a finished round younger than the share window reuses it,
//! and otherwise it starts a round for every group asked about recently.
//! An event for a group makes the next pass fetch afresh.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use meshmirror_provider::ProviderError;
// Tokio's clock (the system's outside paused tests), so tests can pause time
// and hit a window's edge exactly.
use tokio::time::Instant;

use crate::state::AsgMember;

/// Groups not asked about for this long leave the shared round.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// What one round found: members by group name. Groups asked for but absent
/// do not exist.
#[derive(Debug)]
pub struct Round {
    pub started: Instant,
    pub names: BTreeSet<String>,
    pub groups: HashMap<String, Vec<AsgMember>>,
}

/// What one round's fetch returns: members by group name.
pub type Fetched = Result<HashMap<String, Vec<AsgMember>>, ProviderError>;

type RoundFuture = Shared<BoxFuture<'static, Result<Arc<Round>, ProviderError>>>;

#[derive(Default)]
struct RegionRounds {
    asked: HashMap<String, Instant>,
    last: Option<Arc<Round>>,
    inflight: Option<(u64, BTreeSet<String>, RoundFuture)>,
    generation: u64,
}

pub struct Rounds {
    window: Duration,
    regions: Mutex<HashMap<String, RegionRounds>>,
}

impl Rounds {
    pub fn new(window: Duration) -> Self {
        Rounds {
            window,
            regions: Mutex::default(),
        }
    }

    /// The round that answers for `group`; `fetch` describes the given names.
    pub async fn get<F, Fut>(
        &self,
        region: &str,
        group: &str,
        fetch: F,
    ) -> Result<Arc<Round>, ProviderError>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = Fetched> + Send + 'static,
    {
        let (generation, future) = {
            let mut regions = self.regions.lock().expect("rounds lock");
            let r = regions.entry(region.to_string()).or_default();
            let now = Instant::now();
            r.asked.insert(group.to_string(), now);
            r.asked
                .retain(|_, at| now.saturating_duration_since(*at) < FORGET_AFTER);
            if let Some(last) = &r.last
                && last.names.contains(group)
                && now.saturating_duration_since(last.started) < self.window
            {
                return Ok(last.clone());
            }
            match &r.inflight {
                Some((generation, names, future)) if names.contains(group) => {
                    (*generation, future.clone())
                }
                _ => {
                    r.generation += 1;
                    let names: BTreeSet<String> = r.asked.keys().cloned().collect();
                    let started = now;
                    let round_names = names.clone();
                    let future = fetch(names.iter().cloned().collect())
                        .map(move |result| {
                            result.map(|groups| {
                                Arc::new(Round {
                                    started,
                                    names: round_names,
                                    groups,
                                })
                            })
                        })
                        .boxed()
                        .shared();
                    r.inflight = Some((r.generation, names, future.clone()));
                    (r.generation, future)
                }
            }
        };
        let result = future.await;
        let mut regions = self.regions.lock().expect("rounds lock");
        if let Some(r) = regions.get_mut(region)
            && r.inflight
                .as_ref()
                .is_some_and(|(g, _, _)| *g == generation)
        {
            r.inflight = None;
            if let Ok(round) = &result {
                r.last = Some(round.clone());
            }
        }
        result
    }

    /// Something happened in `group`: its next pass fetches afresh.
    pub fn invalidate(&self, region: &str, group: &str) {
        let mut regions = self.regions.lock().expect("rounds lock");
        if let Some(r) = regions.get_mut(region) {
            if r.last.as_ref().is_some_and(|l| l.names.contains(group)) {
                r.last = None;
            }
            if r.inflight
                .as_ref()
                .is_some_and(|(_, names, _)| names.contains(group))
            {
                // Passes that start now must not join a round that began
                // before the event.
                r.inflight = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn fetcher(
        calls: Arc<AtomicUsize>,
        delay: Duration,
    ) -> impl Fn(Vec<String>) -> BoxFuture<'static, Fetched> {
        move |names: Vec<String>| {
            let calls = calls.clone();
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(delay).await;
                Ok(names
                    .into_iter()
                    .filter(|n| n != "missing")
                    .map(|n| (n, Vec::new()))
                    .collect())
            }
            .boxed()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_passes_in_a_region_share_one_round() {
        let rounds = Arc::new(Rounds::new(Duration::from_secs(1)));
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = fetcher(calls.clone(), Duration::from_millis(50));
        // Both groups known from earlier passes.
        rounds.get("r", "a", &fetch).await.unwrap();
        rounds.get("r", "b", &fetch).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "b was not known yet");
        rounds.invalidate("r", "a");
        let (x, y) = tokio::join!(rounds.get("r", "a", &fetch), rounds.get("r", "b", &fetch));
        assert!(x.unwrap().groups.contains_key("a"));
        assert!(y.unwrap().groups.contains_key("b"));
        assert_eq!(calls.load(Ordering::SeqCst), 3, "one round served both");
        // Another region never shares.
        rounds.get("other", "a", &fetch).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
    }

    // Paused time: the clock moves only when the test says, so the window's
    // edge is exact however busy the machine.
    #[tokio::test(start_paused = true)]
    async fn a_round_older_than_the_window_is_not_reused() {
        let rounds = Rounds::new(Duration::from_millis(30));
        let calls = Arc::new(AtomicUsize::new(0));
        let fetch = fetcher(calls.clone(), Duration::ZERO);
        rounds.get("r", "a", &fetch).await.unwrap();
        tokio::time::advance(Duration::from_millis(29)).await;
        rounds.get("r", "a", &fetch).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 1, "reused within the window");
        tokio::time::advance(Duration::from_millis(1)).await;
        rounds.get("r", "a", &fetch).await.unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "not reused at its end");
        let round = rounds.get("r", "missing", &fetch).await.unwrap();
        assert!(!round.groups.contains_key("missing"));
        assert!(round.names.contains("missing"));
    }
}
