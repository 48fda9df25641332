//! Wires the pass to the API server: watches mirrors and the entries they
//! own, runs a mirror's pass on change, on its interval, and at once when a
//! provider's event feed names its group.

mod cloud_events;
pub mod pass;

use std::collections::HashMap;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, StreamExt, stream};
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};

use self::cloud_events::{PendingAcks, keep_pending};
use self::pass::{PassError, Reconciler};
use crate::cluster::entry_cache::EntryCache;
use crate::cluster::group_cache::GroupCache;
pub use crate::cluster::scope::{DEFAULT_CONCURRENT_PASSES, Scope, WatchStream, dynamic_skeleton};
use crate::core::claims;
use crate::crd::ScalingGroupMirror;

/// The watch caches passes read. They run for the life of the process,
/// leader or not, so a standby that takes over starts warm.
#[derive(Clone)]
pub struct Caches {
    pub entries: Arc<EntryCache>,
    pub groups: Arc<GroupCache>,
}

/// The caches' watch tasks; dropping this stops them.
pub struct CacheTasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for CacheTasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

impl Caches {
    pub fn start(client: &Client, scope: &Scope) -> (Caches, CacheTasks) {
        let (entries, entry_task) = EntryCache::start(client, scope);
        let (groups, group_task) = GroupCache::start(client, scope);
        (
            Caches { entries, groups },
            CacheTasks(vec![entry_task, group_task]),
        )
    }

    /// Resolves once every cache holds a full list; false if one stopped.
    pub async fn ready(&self) -> bool {
        self.entries.ready().await && self.groups.ready().await
    }
}

struct Ctx {
    reconciler: Arc<Reconciler>,
    pending: PendingAcks,
    /// Every mirror in scope, for the claim rule.
    mirrors: Store<ScalingGroupMirror>,
    /// The claimant last seen per canonical group id: when it changes, the
    /// group's other mirrors get a pass at once (to withdraw, or to learn
    /// who claims) instead of at their next interval.
    claimants: Mutex<HashMap<String, String>>,
    outranked: tokio::sync::mpsc::UnboundedSender<ObjectRef<ScalingGroupMirror>>,
}

impl Ctx {
    /// The claim of `mirror`; a new claimant wakes the group's other mirrors.
    /// Every mirror's spec is checked once per call (the contenders).
    fn claim(&self, mirror: &ScalingGroupMirror) -> claims::Claim {
        let Ok(config) = crate::core::config::validate(&mirror.spec) else {
            // The pass reports the invalid spec before it looks at claims.
            return claims::Claim::Claimant;
        };
        let all = self.mirrors.state();
        let contenders =
            claims::contenders(all.iter().map(AsRef::as_ref), self.reconciler.allowed());
        let uid = mirror.metadata.uid.as_deref().unwrap_or_default();
        let claim = claims::claim(uid, &config.group, &contenders);
        if claim != claims::Claim::Claimant {
            return claim;
        }
        let group = config.group.canonical();
        let new = self
            .claimants
            .lock()
            .is_ok_and(|mut c| c.insert(group.clone(), uid.to_string()).as_deref() != Some(uid));
        if new {
            for other in contenders
                .iter()
                .filter(|c| c.group == group && c.uid != uid)
            {
                let _ = self
                    .outranked
                    .send(ObjectRef::new(&other.name).within(&other.namespace));
            }
        }
        claim
    }
}

/// A failed pass, and when to run it again. The pass has already written
/// the mirror's status and Events; the controller only requeues.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct PassFailed {
    pub error: PassError,
    pub requeue: Duration,
}

async fn reconcile(mirror: Arc<ScalingGroupMirror>, ctx: Arc<Ctx>) -> Result<Action, PassFailed> {
    if mirror.metadata.deletion_timestamp.is_some() {
        // Kubernetes garbage-collects the entries through their ownerReferences.
        ctx.reconciler
            .forget_mirror(&mirror.namespace().unwrap_or_default(), &mirror.name_any());
        return Ok(Action::await_change());
    }
    let key = ObjectRef::from_obj(mirror.as_ref());
    // Acks taken before the pass cover the events that caused it.
    let acks = ctx
        .pending
        .lock()
        .map(|mut p| p.remove(&key).unwrap_or_default())
        .unwrap_or_default();
    let claim = ctx.claim(&mirror);
    let report = ctx.reconciler.pass_claimed(&mirror, &claim).await;
    if report.ok() {
        for ack in acks {
            ack.ack();
        }
    } else if !acks.is_empty()
        && let Ok(mut pending) = ctx.pending.lock()
    {
        // Not handled: kept for the next pass.
        keep_pending(pending.entry(key).or_default(), acks);
    }
    match report.error {
        None => Ok(Action::requeue(report.requeue)),
        Some(error) => Err(PassFailed {
            error,
            requeue: report.requeue,
        }),
    }
}

/// Requeues a failed pass when the pass said (a throttled cloud's
/// Retry-After, the write backoff, an invalid spec's recheck). The pass
/// counted it in `meshmirror_passes_total{result="failure"}` and logged why.
fn error_policy(mirror: Arc<ScalingGroupMirror>, failed: &PassFailed, _: Arc<Ctx>) -> Action {
    tracing::debug!(namespace = %mirror.namespace().unwrap_or_default(), mirror = %mirror.name_any(),
        reason = failed.error.reason(), requeue_s = failed.requeue.as_secs_f64(), "pass failed; requeued");
    Action::requeue(failed.requeue)
}

/// Runs the controller until `shutdown` resolves; called once per leadership
/// term. Its watch lists every mirror at the start, so each gets a pass.
/// Entries and WorkloadGroups are not watched again here: the caches passes
/// read name the mirrors whose entries somebody else changed, and the
/// WorkloadGroups that changed.
pub async fn run(
    client: Client,
    scope: Scope,
    reconciler: Arc<Reconciler>,
    caches: Caches,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // A pass before the caches hold their full lists would take existing
    // entries for missing and write them all again.
    let shutdown = shutdown.shared();
    tokio::select! {
        ready = caches.ready() => if !ready { return },
        () = shutdown.clone() => return,
    }
    let changed = caches
        .entries
        .changes()
        .map(|m| ObjectRef::new(&m.name).within(&m.namespace));
    let (reader, writer) = reflector::store();
    let watched = scope
        .watch(
            |ns| Scope::mirrors_in(&client, ns),
            watcher::Config::default(),
            ScalingGroupMirror::clone,
        )
        .reflect(writer)
        .applied_objects()
        .predicate_filter(spec_changed, Default::default());
    let controller = Controller::for_stream(watched, reader)
        .with_config(controller::Config::default().concurrency(scope.max_concurrent_passes.max(1)))
        .reconcile_on(changed);
    let mirrors = controller.store();
    let store = controller.store();
    let (outranked, outranked_rx) = tokio::sync::mpsc::unbounded_channel();
    let controller = controller.reconcile_on(tokio_stream::wrappers::UnboundedReceiverStream::new(
        outranked_rx,
    ));
    let controller = controller.reconcile_on(caches.groups.changes().flat_map(move |group| {
        // The mirrors in the group's namespace whose workloads name it.
        let naming: Vec<ObjectRef<ScalingGroupMirror>> = mirrors
            .state()
            .iter()
            .filter(|m| {
                m.namespace().as_deref() == Some(group.namespace.as_str())
                    && m.spec
                        .workloads
                        .iter()
                        .any(|w| w.workload_group.as_deref() == Some(group.name.as_str()))
            })
            .map(|m| ObjectRef::from_obj(m.as_ref()))
            .collect();
        stream::iter(naming)
    }));
    let pending: PendingAcks = Arc::default();
    let feeds: Vec<_> = reconciler
        .providers()
        .iter()
        .filter_map(|p| p.events())
        .collect();
    let controller = if feeds.is_empty() {
        controller
    } else {
        let triggers = cloud_events::triggers(
            stream::select_all(feeds),
            controller.store(),
            pending.clone(),
            reconciler.clone(),
        );
        controller.reconcile_on(triggers)
    };
    let ctx = Arc::new(Ctx {
        reconciler: reconciler.clone(),
        pending,
        mirrors: store,
        claimants: Mutex::default(),
        outranked,
    });
    let work = controller
        .run(reconcile, error_policy, ctx)
        .for_each(|result| {
            match result {
                // Triggered for a mirror no longer there: deleted.
                Err(controller::Error::ObjectNotFound(gone)) => {
                    reconciler
                        .forget_mirror(gone.namespace.as_deref().unwrap_or_default(), &gone.name);
                }
                Err(err) => tracing::debug!(%err, "controller"),
                Ok(_) => {}
            }
            futures::future::ready(())
        });
    // The term ends: passes still in flight are dropped, cancelling their
    // cloud and API calls (the next term or leader redoes them; the fence
    // already refuses their writes), and the providers end the term's
    // background work (AWS heartbeats).
    tokio::select! {
        () = work => {}
        () = shutdown => tracing::info!("term ended; passes in flight cancelled"),
    }
    for provider in reconciler.providers().iter() {
        provider.stand_down();
    }
}

/// What of a mirror's own change calls for a pass: its spec (the
/// generation) or its deletion marking, not its status. Each pass writes
/// status; without this, every pass caused a second, and a pass an event
/// made (asking the cloud about one instance) was echoed by a full read.
/// The interval's requeue covers what a relist skipped.
fn spec_changed(mirror: &ScalingGroupMirror) -> Option<u64> {
    let meta = &mirror.metadata;
    let mut hasher = std::hash::DefaultHasher::new();
    (meta.generation, meta.deletion_timestamp.is_some()).hash(&mut hasher);
    Some(hasher.finish())
}

/// One pass of every mirror in scope (`run --once`); true when all succeeded.
pub async fn run_once(
    client: &Client,
    scope: &Scope,
    reconciler: &Reconciler,
) -> Result<bool, kube::Error> {
    let mirrors = scope.list_mirrors(client).await?;
    let mut all_ok = true;
    for mirror in &mirrors {
        let claim = claims::claim_of(mirror, &mirrors, reconciler.allowed());
        let report = reconciler.pass_claimed(mirror, &claim).await;
        if let Some(err) = &report.error {
            tracing::error!(namespace = %mirror.namespace().unwrap_or_default(),
                mirror = %mirror.name_any(), error = %err, "pass failed");
        }
        all_ok &= report.ok();
    }
    Ok(all_ok)
}
