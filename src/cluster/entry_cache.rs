//! The controller's cache of the WorkloadEntries meshmirror manages: one watch
//! for the life of the process, kept slim (only what a pass reads), indexed by
//! owning mirror, and aware of the controller's own writes.
//!
//! Own writes matter twice. A pass that runs before the watch delivers the
//! previous pass's writes would see a stale cache and write again, so a write
//! shows in the cache at once and stays there until the watch delivers it.
//! And the watch delivering an own write is no reason to reconcile, so only
//! changes made by somebody else trigger the owning mirror.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::Client;
use kube::api::DynamicObject;
use kube::runtime::watcher;
use serde::Deserialize;
use tokio::sync::{broadcast, watch};

use crate::cluster::Owner;
use crate::cluster::changes::Named;
use crate::cluster::scope::Scope;
use crate::cluster::slim::{Interner, Owners, SlimEntry, Str};
use crate::core::ownership::{self, managed_selector};
use crate::core::plan::ActualEntry;
use crate::workloadentry::{WorkloadEntrySpec, keys};

/// How long an own write stands in for the watch before the cache gives up
/// waiting for its echo (a write the watch never delivers, such as one
/// overtaken by another writer's change before it was recorded).
const ECHO_WAIT: Duration = Duration::from_secs(30);
/// Pending triggers a slow controller may fall behind by before it loses some
/// (its mirrors' intervals still catch up).
const TRIGGER_CAPACITY: usize = 4096;
/// Never kept: large, and a pass does not read it.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

type ObjKey = (String, String);
type BucketKey = (String, String);

/// One entry as a pass reads it, plus what the index needs.
#[derive(Clone, Debug, PartialEq)]
pub struct Cached {
    pub entry: SlimEntry,
    owners: Arc<Owners>,
    resource_version: Option<Box<str>>,
}

/// An entry as a pass reads it, if it carries meshmirror's managed-by label.
pub fn read_entry(obj: &DynamicObject) -> Option<ActualEntry> {
    let meta = &obj.metadata;
    let labels = meta.labels.as_ref()?;
    if !ownership::is_managed(labels) {
        return None;
    }
    let spec: WorkloadEntrySpec = obj
        .data
        .get("spec")
        .and_then(|s| WorkloadEntrySpec::deserialize(s).ok())
        .unwrap_or_default();
    let healthy = obj.data["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Healthy")
        .and_then(|c| c["status"].as_str())
        .map(|s| s == "True");
    let annotations = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(k, _)| k.as_str() != LAST_APPLIED)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Some(ActualEntry {
        name: meta.name.clone().unwrap_or_default(),
        labels: labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        annotations,
        spec,
        healthy,
    })
}

impl Cached {
    /// The slim form of an entry carrying meshmirror's managed-by label; None
    /// for anything else.
    pub fn from_object(obj: &DynamicObject, strings: &mut Interner) -> Option<Cached> {
        let entry = read_entry(obj)?;
        let meta = &obj.metadata;
        let mirror = entry
            .labels
            .get(keys::MIRROR)
            .map(String::as_str)
            .unwrap_or_default();
        Some(Cached {
            entry: SlimEntry::new(&entry, strings),
            owners: strings.owners(
                meta.namespace.as_deref().unwrap_or_default(),
                mirror,
                meta.owner_references
                    .iter()
                    .flatten()
                    .map(|r| (&r.uid, &r.name)),
            ),
            resource_version: meta.resource_version.as_deref().map(Box::from),
        })
    }

    /// [`Owner::owns`], on the cached form.
    pub fn owned_by(&self, owner: &Owner) -> bool {
        let o = &*self.owners;
        owner.owns(
            &o.namespace,
            Some(&o.mirror),
            o.refs.iter().map(|(uid, _)| &**uid),
        )
    }

    fn buckets(&self) -> impl Iterator<Item = BucketKey> + '_ {
        let o = &*self.owners;
        o.refs
            .iter()
            .map(|(uid, _)| (o.namespace.to_string(), uid.to_string()))
    }

    fn mirrors(&self) -> impl Iterator<Item = Named> + '_ {
        let o = &*self.owners;
        o.refs.iter().map(|(_, name)| Named {
            namespace: o.namespace.to_string(),
            name: name.to_string(),
        })
    }
}

/// An own write the watch has not delivered yet.
struct Pending {
    /// The resourceVersion the write produced, or None for a delete.
    expect: Option<Box<str>>,
    /// What the watch last said about the object: shown again if the echo
    /// never comes.
    base: Option<Cached>,
    since: Instant,
}

/// Writes to one object awaiting their answers, and what the watch said
/// of it meanwhile, in order (`None`: deleted).
#[derive(Default)]
struct InFlight {
    writes: u32,
    seen: Vec<Option<Cached>>,
}

#[derive(Default)]
struct Bucket {
    /// The same copies as the keys of [`Objects`].
    names: BTreeSet<Str>,
    version: u64,
}

/// The entries shown, by namespace and name; looked up by `&str`, so that
/// each name is held once (shared with the owner index).
#[derive(Default)]
struct Objects {
    by_namespace: HashMap<Str, HashMap<Str, Cached>>,
}

impl Objects {
    fn get(&self, key: &ObjKey) -> Option<&Cached> {
        self.by_namespace.get(key.0.as_str())?.get(key.1.as_str())
    }

    fn contains_key(&self, key: &ObjKey) -> bool {
        self.get(key).is_some()
    }

    /// Takes the entry out, with its name as stored.
    fn remove(&mut self, key: &ObjKey) -> Option<(Str, Cached)> {
        let names = self.by_namespace.get_mut(key.0.as_str())?;
        let removed = names.remove_entry(key.1.as_str())?;
        if names.is_empty() {
            self.by_namespace.remove(key.0.as_str());
        }
        Some(removed)
    }

    fn insert(&mut self, namespace: Str, name: Str, cached: Cached) {
        self.by_namespace
            .entry(namespace)
            .or_default()
            .insert(name, cached);
    }

    fn len(&self) -> usize {
        self.by_namespace.values().map(HashMap::len).sum()
    }

    fn iter(&self) -> impl Iterator<Item = (ObjKey, &Cached)> {
        self.by_namespace.iter().flat_map(|(ns, names)| {
            names
                .iter()
                .map(|(name, c)| ((ns.to_string(), name.to_string()), c))
        })
    }
}

#[derive(Default)]
struct State {
    objects: Objects,
    buckets: HashMap<BucketKey, Bucket>,
    pending: HashMap<ObjKey, Pending>,
    /// Own writes sent and not yet answered, with what the watch said of
    /// the object meanwhile: the watch can deliver a write before its
    /// answer, and that echo is not somebody else's change.
    in_flight: HashMap<ObjKey, InFlight>,
    /// Filled between a watch (re)start and its InitDone.
    relist: Option<HashMap<ObjKey, Cached>>,
    clock: u64,
    last_sweep: Option<Instant>,
    strings: Interner,
}

impl State {
    /// Shows `new` (or nothing) for `key`, keeping the owner index current.
    fn put(&mut self, key: &ObjKey, new: Option<Cached>) {
        self.clock += 1;
        let clock = self.clock;
        let mut stored = None;
        if let Some((name, old)) = self.objects.remove(key) {
            for b in old.buckets() {
                if let Some(bucket) = self.buckets.get_mut(&b) {
                    bucket.names.remove(&*name);
                    bucket.version = clock;
                    if bucket.names.is_empty() {
                        self.buckets.remove(&b);
                    }
                }
            }
            stored = Some(name);
        }
        if let Some(new) = new {
            let name = stored.unwrap_or_else(|| Str::from(key.1.as_str()));
            for b in new.buckets() {
                let bucket = self.buckets.entry(b).or_default();
                bucket.names.insert(name.clone());
                bucket.version = clock;
            }
            let namespace = self.strings.get(&key.0);
            self.objects.insert(namespace, name, new);
        }
    }

    fn shown_version(&self, key: &ObjKey) -> Option<&str> {
        self.objects
            .get(key)
            .and_then(|c| c.resource_version.as_deref())
    }

    /// The watch says `key` is now `seen`. Returns the mirrors to trigger.
    fn observe(&mut self, key: ObjKey, seen: Option<Cached>) -> Vec<Named> {
        if let Some(flight) = self.in_flight.get_mut(&key) {
            // Judged when the write's answer says what it produced.
            flight.seen.push(seen);
            return Vec::new();
        }
        if let Some(pending) = self.pending.get_mut(&key) {
            let echo = match (&pending.expect, &seen) {
                (Some(rv), Some(c)) => c.resource_version.as_ref() == Some(rv),
                (None, None) => true,
                _ => false,
            };
            if echo {
                self.pending.remove(&key);
                if seen.is_some() {
                    self.put(&key, seen);
                }
                return Vec::new();
            }
            // Older news than the own write, or a change right after it:
            // either way the owner looks again.
            let triggers = seen.iter().flat_map(Cached::mirrors).collect();
            pending.base = seen;
            return triggers;
        }
        let unchanged = match (self.objects.get(&key), &seen) {
            (Some(old), Some(new)) => old == new,
            (None, None) => true,
            _ => false,
        };
        if unchanged {
            return Vec::new();
        }
        let mut triggers: Vec<Named> = self
            .objects
            .get(&key)
            .map(|c| c.mirrors().collect())
            .unwrap_or_default();
        triggers.extend(seen.iter().flat_map(Cached::mirrors));
        self.put(&key, seen);
        triggers
    }

    /// A relist finished: it replaces everything, own writes included (the
    /// list is at least as new as any write that finished before it began).
    fn replace(&mut self, listed: HashMap<ObjKey, Cached>) -> Vec<Named> {
        let mut triggers = Vec::new();
        let mut gone = Vec::new();
        for (key, old) in self.objects.iter() {
            match listed.get(&key) {
                Some(new) if new == old => {}
                Some(_) => triggers.extend(old.mirrors()),
                None => {
                    triggers.extend(old.mirrors());
                    gone.push(key);
                }
            }
        }
        for (key, new) in &listed {
            if self.objects.get(key) != Some(new) {
                triggers.extend(new.mirrors());
            }
        }
        self.pending.clear();
        // News held for writes in flight is older than the list.
        for flight in self.in_flight.values_mut() {
            flight.seen.clear();
        }
        for key in gone {
            self.put(&key, None);
        }
        for (key, new) in listed {
            if self.objects.get(&key) != Some(&new) {
                self.put(&key, Some(new));
            }
        }
        triggers
    }

    /// Gives up on echoes that did not come: shows the watch's view again.
    fn sweep(&mut self, now: Instant) -> Vec<Named> {
        if self
            .last_sweep
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return Vec::new();
        }
        self.last_sweep = Some(now);
        self.strings.sweep_if_due();
        let expired: Vec<ObjKey> = self
            .pending
            .iter()
            .filter(|(_, p)| now.duration_since(p.since) >= ECHO_WAIT)
            .map(|(k, _)| k.clone())
            .collect();
        let mut triggers = Vec::new();
        for key in expired {
            if let Some(p) = self.pending.remove(&key) {
                triggers.extend(p.base.iter().flat_map(Cached::mirrors));
                if let Some(shown) = self.objects.get(&key) {
                    triggers.extend(shown.mirrors());
                }
                self.put(&key, p.base);
            }
        }
        triggers
    }

    /// An own write to `key` is about to be sent.
    fn sending(&mut self, key: ObjKey) {
        self.in_flight.entry(key).or_default().writes += 1;
    }

    /// An own write to `key` was answered (`written`: what it produced;
    /// `None` for a delete) or failed (`answer` None). What the watch said
    /// meanwhile is judged now, against the write. Returns the mirrors to
    /// trigger.
    fn answered(
        &mut self,
        key: ObjKey,
        answer: Option<Option<Cached>>,
        now: Instant,
    ) -> Vec<Named> {
        let seen = match self.in_flight.get_mut(&key) {
            Some(flight) if flight.writes > 1 => {
                flight.writes -= 1;
                Vec::new()
            }
            Some(_) => self
                .in_flight
                .remove(&key)
                .map(|f| f.seen)
                .unwrap_or_default(),
            None => Vec::new(),
        };
        if let Some(written) = answer {
            self.wrote(key.clone(), written, now);
        }
        seen.into_iter()
            .flat_map(|seen| self.observe(key.clone(), seen))
            .collect()
    }

    /// Shows an own write at once, until the watch delivers it.
    fn wrote(&mut self, key: ObjKey, written: Option<Cached>, now: Instant) {
        let expect = written.as_ref().map(|c| c.resource_version.clone());
        let already = match &expect {
            // A write that changed nothing keeps its resourceVersion and
            // never comes back through the watch.
            Some(rv) => rv.is_some() && self.shown_version(&key) == rv.as_deref(),
            None => !self.objects.contains_key(&key),
        };
        if already && !self.pending.contains_key(&key) {
            return;
        }
        let base = self.objects.get(&key).cloned();
        let pending = self.pending.entry(key.clone()).or_insert(Pending {
            expect: None,
            base,
            since: now,
        });
        pending.expect = expect.flatten();
        pending.since = now;
        self.put(&key, written);
    }
}

/// The cache. Cheap to share: every method takes `&self`.
pub struct EntryCache {
    state: Mutex<State>,
    ready: watch::Sender<bool>,
    triggers: broadcast::Sender<Named>,
}

impl Default for EntryCache {
    fn default() -> Self {
        EntryCache {
            state: Mutex::default(),
            ready: watch::Sender::new(false),
            triggers: broadcast::Sender::new(TRIGGER_CAPACITY),
        }
    }
}

impl EntryCache {
    /// Starts the watch of every managed entry in `scope`; it runs until the
    /// returned task is aborted.
    pub fn start(
        client: &Client,
        scope: &Scope,
    ) -> (std::sync::Arc<EntryCache>, tokio::task::JoinHandle<()>) {
        let cache = std::sync::Arc::new(EntryCache::default());
        let resource = scope.version.workload_entries();
        let stream = scope.watch(
            |ns| Scope::dynamic_in(client, ns, &resource),
            watcher::Config::default().labels(&managed_selector()),
            crate::cluster::scope::dynamic_skeleton,
        );
        let feed = cache.clone();
        let task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(event) => feed.handle(event),
                    // The watcher backs off and re-lists (410 Expired included).
                    Err(err) => tracing::debug!(%err, "WorkloadEntry watch error"),
                }
            }
        });
        (cache, task)
    }

    /// Applies one watch event.
    pub fn handle(&self, event: watcher::Event<DynamicObject>) {
        let triggers = {
            let Ok(mut state) = self.state.lock() else {
                return;
            };
            let mut triggers = state.sweep(Instant::now());
            match event {
                watcher::Event::Apply(obj) => {
                    let seen = Cached::from_object(&obj, &mut state.strings);
                    triggers.extend(state.observe(object_key(&obj), seen));
                }
                watcher::Event::Delete(obj) => {
                    triggers.extend(state.observe(object_key(&obj), None));
                }
                watcher::Event::Init => state.relist = Some(HashMap::new()),
                watcher::Event::InitApply(obj) => {
                    let state = &mut *state;
                    if let (Some(relist), Some(c)) = (
                        &mut state.relist,
                        Cached::from_object(&obj, &mut state.strings),
                    ) {
                        relist.insert(object_key(&obj), c);
                    }
                }
                watcher::Event::InitDone => {
                    let listed = state.relist.take().unwrap_or_default();
                    triggers.extend(state.replace(listed));
                    self.ready.send_replace(true);
                }
            }
            triggers
        };
        self.send(triggers);
    }

    fn send(&self, triggers: Vec<Named>) {
        let mut seen = HashSet::new();
        for t in triggers {
            if seen.insert(t.clone()) {
                // No receiver (not leading) is fine: nothing to trigger.
                let _ = self.triggers.send(t);
            }
        }
    }

    /// Resolves once the cache holds a full list.
    pub async fn ready(&self) -> bool {
        self.ready.subscribe().wait_for(|r| *r).await.is_ok()
    }

    /// The entries `owner` owns.
    pub fn owned(&self, owner: &Owner) -> Vec<ActualEntry> {
        let Ok(state) = self.state.lock() else {
            return Vec::new();
        };
        let Some(bucket) = state
            .buckets
            .get(&(owner.namespace.clone(), owner.uid.clone()))
        else {
            return Vec::new();
        };
        let Some(names) = state.objects.by_namespace.get(owner.namespace.as_str()) else {
            return Vec::new();
        };
        bucket
            .names
            .iter()
            .filter_map(|name| Some((name, names.get(name)?)))
            .filter(|(_, c)| c.owned_by(owner))
            .map(|(name, c)| c.entry.to_actual(name))
            .collect()
    }

    /// Changes whenever an entry `owner` may own changes; equal values mean
    /// [`EntryCache::owned`] would answer the same.
    pub fn version(&self, owner: &Owner) -> u64 {
        self.state
            .lock()
            .ok()
            .and_then(|s| {
                s.buckets
                    .get(&(owner.namespace.clone(), owner.uid.clone()))
                    .map(|b| b.version)
            })
            .unwrap_or(0)
    }

    /// Marks an own write to `namespace/name` as sent: until the returned
    /// flight is answered or dropped, the watch's news of the object waits,
    /// so an echo that outruns the answer triggers nobody.
    pub fn sending(self: &Arc<Self>, namespace: &str, name: &str) -> Flight {
        let key: ObjKey = (namespace.into(), name.into());
        if let Ok(mut state) = self.state.lock() {
            state.sending(key.clone());
        }
        Flight {
            cache: self.clone(),
            key: Some(key),
        }
    }

    fn answered(&self, key: ObjKey, answer: Option<&DynamicObject>, deleted: bool) {
        let triggers = match self.state.lock() {
            Ok(mut state) => {
                let answer = match (answer, deleted) {
                    (Some(obj), _) => Some(Cached::from_object(obj, &mut state.strings)),
                    (None, true) => Some(None),
                    (None, false) => None,
                };
                state.answered(key, answer, Instant::now())
            }
            Err(_) => return,
        };
        self.send(triggers);
    }

    /// How many entries the cache shows.
    pub fn len(&self) -> usize {
        self.state.lock().map(|s| s.objects.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Mirrors whose entries somebody else changed, from now on.
    pub fn changes(&self) -> impl Stream<Item = Named> + Send + 'static {
        crate::cluster::changes::subscribe(&self.triggers, "WorkloadEntry changes")
    }
}

/// An own write in flight (see [`EntryCache::sending`]). Dropped without an
/// answer (the write failed or was cancelled), the watch's news held for it
/// is judged as anybody's.
pub struct Flight {
    cache: Arc<EntryCache>,
    key: Option<ObjKey>,
}

impl Flight {
    /// The API server's answer to the write.
    pub fn wrote(mut self, obj: &DynamicObject) {
        if let Some(key) = self.key.take() {
            self.cache.answered(key, Some(obj), false);
        }
    }

    /// The object is gone (deleted, or not found).
    pub fn deleted(mut self) {
        if let Some(key) = self.key.take() {
            self.cache.answered(key, None, true);
        }
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.cache.answered(key, None, false);
        }
    }
}

fn object_key(obj: &DynamicObject) -> ObjKey {
    (
        obj.metadata.namespace.clone().unwrap_or_default(),
        obj.metadata.name.clone().unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn label_map<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> std::collections::BTreeMap<String, String> {
        pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn owner() -> Owner {
        Owner {
            namespace: "ns".into(),
            name: "m".into(),
            uid: "u1".into(),
        }
    }

    fn obj(name: &str, rv: &str, address: &str) -> DynamicObject {
        serde_json::from_value(json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {
                "name": name, "namespace": "ns", "resourceVersion": rv,
                "labels": {keys::MANAGED_BY: keys::MANAGER, keys::MIRROR: "m"},
                "ownerReferences": [{"apiVersion": "meshmirror.io/v1alpha1",
                    "kind": "ScalingGroupMirror", "name": "m", "uid": "u1"}],
                "managedFields": [{"manager": "meshmirror", "operation": "Apply"}],
            },
            "spec": {"address": address},
        }))
        .unwrap()
    }

    /// An own write sent and answered at once.
    fn wrote(cache: &Arc<EntryCache>, written: &DynamicObject) {
        cache
            .sending("ns", written.metadata.name.as_deref().unwrap())
            .wrote(written);
    }

    fn listed(cache: &EntryCache, objs: &[DynamicObject]) {
        cache.handle(watcher::Event::Init);
        for o in objs {
            cache.handle(watcher::Event::InitApply(o.clone()));
        }
        cache.handle(watcher::Event::InitDone);
    }

    fn addresses(cache: &EntryCache) -> Vec<(String, String)> {
        cache
            .owned(&owner())
            .into_iter()
            .map(|e| (e.name, e.spec.address))
            .collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn owned_reads_only_the_owners_bucket_and_checks_ownership() {
        let cache = Arc::new(EntryCache::default());
        let mut impostor = obj("x", "5", "10.0.0.9");
        impostor
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert(keys::MIRROR.into(), "other".into());
        let mut foreign = obj("f", "6", "10.0.0.8");
        foreign
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove(keys::MANAGED_BY);
        listed(&cache, &[obj("a", "1", "10.0.0.1"), impostor, foreign]);
        assert_eq!(addresses(&cache), pairs(&[("a", "10.0.0.1")]));
        let elsewhere = Owner {
            namespace: "other-ns".into(),
            ..owner()
        };
        assert!(cache.owned(&elsewhere).is_empty());
        assert_eq!(cache.len(), 2, "the foreign entry is not cached");
    }

    #[test]
    fn an_own_write_shows_at_once_and_its_echo_triggers_nothing() {
        let cache = Arc::new(EntryCache::default());
        listed(&cache, &[obj("a", "1", "10.0.0.1")]);
        let mut changes = Box::pin(cache.changes());
        let v0 = cache.version(&owner());
        wrote(&cache, &obj("b", "2", "10.0.0.2"));
        assert_eq!(
            addresses(&cache),
            pairs(&[("a", "10.0.0.1"), ("b", "10.0.0.2")])
        );
        let v1 = cache.version(&owner());
        assert_ne!(v0, v1);
        // The echo changes nothing and triggers nothing.
        cache.handle(watcher::Event::Apply(obj("b", "2", "10.0.0.2")));
        // Somebody else's change triggers the owner.
        cache.handle(watcher::Event::Apply(obj("a", "3", "10.9.9.9")));
        let first = futures::executor::block_on(changes.next()).unwrap();
        assert_eq!(
            first,
            Named {
                namespace: "ns".into(),
                name: "m".into()
            }
        );
        assert_eq!(
            addresses(&cache),
            pairs(&[("a", "10.9.9.9"), ("b", "10.0.0.2")])
        );
        assert!(
            futures::FutureExt::now_or_never(changes.next()).is_none(),
            "one trigger only"
        );
    }

    #[test]
    fn a_lagging_watch_does_not_undo_an_own_write() {
        let cache = Arc::new(EntryCache::default());
        listed(&cache, &[obj("a", "1", "10.0.0.1")]);
        wrote(&cache, &obj("a", "4", "10.0.0.4"));
        // An older event still in flight arrives after the write.
        cache.handle(watcher::Event::Apply(obj("a", "2", "10.0.0.2")));
        assert_eq!(addresses(&cache), pairs(&[("a", "10.0.0.4")]));
        cache.handle(watcher::Event::Apply(obj("a", "4", "10.0.0.4")));
        cache.handle(watcher::Event::Apply(obj("a", "5", "10.0.0.5")));
        assert_eq!(addresses(&cache), pairs(&[("a", "10.0.0.5")]));
    }

    /// The watch may deliver an own write before the API server's answer
    /// reaches the writer: that echo triggers nobody. News of somebody
    /// else's change meanwhile, or held for a write that failed, does.
    #[test]
    fn an_echo_that_outruns_the_answer_triggers_nobody() {
        let cache = Arc::new(EntryCache::default());
        listed(&cache, &[]);
        let mut changes = Box::pin(cache.changes());
        let none_yet = |changes: &mut std::pin::Pin<Box<_>>| {
            futures::FutureExt::now_or_never(futures::StreamExt::next(changes)).is_none()
        };

        let flight = cache.sending("ns", "a");
        cache.handle(watcher::Event::Apply(obj("a", "1", "10.0.0.1")));
        flight.wrote(&obj("a", "1", "10.0.0.1"));
        assert!(none_yet(&mut changes), "an own create's early echo");
        assert_eq!(addresses(&cache), pairs(&[("a", "10.0.0.1")]));

        let flight = cache.sending("ns", "a");
        cache.handle(watcher::Event::Delete(obj("a", "1", "10.0.0.1")));
        flight.deleted();
        assert!(none_yet(&mut changes), "an own delete's early echo");
        assert!(addresses(&cache).is_empty());

        // Somebody else's change lands while our create is in flight.
        let flight = cache.sending("ns", "b");
        cache.handle(watcher::Event::Apply(obj("b", "2", "10.0.0.2")));
        cache.handle(watcher::Event::Apply(obj("b", "3", "10.9.9.9")));
        flight.wrote(&obj("b", "2", "10.0.0.2"));
        assert!(!none_yet(&mut changes), "a change after the own write");
        assert_eq!(addresses(&cache), pairs(&[("b", "10.9.9.9")]));

        // A write that failed: what the watch said meanwhile is anybody's.
        let flight = cache.sending("ns", "c");
        cache.handle(watcher::Event::Apply(obj("c", "4", "10.0.0.4")));
        assert!(none_yet(&mut changes), "held while in flight");
        drop(flight);
        assert!(!none_yet(&mut changes), "judged when the write failed");
        assert_eq!(
            addresses(&cache),
            pairs(&[("b", "10.9.9.9"), ("c", "10.0.0.4")])
        );
    }

    #[test]
    fn an_own_delete_hides_the_entry_until_the_watch_confirms_it() {
        let cache = Arc::new(EntryCache::default());
        listed(
            &cache,
            &[obj("a", "1", "10.0.0.1"), obj("b", "2", "10.0.0.2")],
        );
        let mut changes = Box::pin(cache.changes());
        cache.sending("ns", "a").deleted();
        assert_eq!(addresses(&cache), pairs(&[("b", "10.0.0.2")]));
        cache.handle(watcher::Event::Apply(obj("a", "1", "10.0.0.1")));
        assert_eq!(addresses(&cache), pairs(&[("b", "10.0.0.2")]));
        cache.handle(watcher::Event::Delete(obj("a", "1", "10.0.0.1")));
        assert_eq!(addresses(&cache), pairs(&[("b", "10.0.0.2")]));
        // Only the stale event triggered; the confirmed delete did not.
        assert!(futures::executor::block_on(changes.next()).is_some());
        assert!(futures::FutureExt::now_or_never(changes.next()).is_none());
        // Somebody else deleting an entry triggers its owner.
        cache.handle(watcher::Event::Delete(obj("b", "2", "10.0.0.2")));
        assert!(futures::executor::block_on(changes.next()).is_some());
        assert!(cache.owned(&owner()).is_empty());
        assert_eq!(cache.version(&owner()), 0);
    }

    #[test]
    fn a_write_that_changed_nothing_waits_for_no_echo() {
        let cache = Arc::new(EntryCache::default());
        listed(&cache, &[obj("a", "1", "10.0.0.1")]);
        let v = cache.version(&owner());
        wrote(&cache, &obj("a", "1", "10.0.0.1"));
        assert_eq!(cache.version(&owner()), v);
        assert!(cache.state.lock().unwrap().pending.is_empty());
    }

    #[test]
    fn an_echo_that_never_comes_gives_way_to_the_watch() {
        let cache = Arc::new(EntryCache::default());
        listed(&cache, &[obj("a", "1", "10.0.0.1")]);
        let start = Instant::now();
        {
            let mut s = cache.state.lock().unwrap();
            s.wrote(
                ("ns".into(), "a".into()),
                Cached::from_object(&obj("a", "2", "10.0.0.2"), &mut Interner::default()),
                start,
            );
            // Overtaken: somebody's newer change arrived, ours never will.
            s.observe(
                ("ns".into(), "a".into()),
                Cached::from_object(&obj("a", "3", "10.0.0.3"), &mut Interner::default()),
            );
            assert!(s.sweep(start + Duration::from_secs(5)).is_empty());
            assert!(
                !s.sweep(start + ECHO_WAIT + Duration::from_secs(2))
                    .is_empty()
            );
        }
        assert_eq!(addresses(&cache), pairs(&[("a", "10.0.0.3")]));
    }

    #[test]
    fn a_relist_replaces_own_writes_and_triggers_only_changed_owners() {
        let cache = Arc::new(EntryCache::default());
        listed(&cache, &[obj("a", "1", "10.0.0.1")]);
        wrote(&cache, &obj("b", "2", "10.0.0.2"));
        let mut changes = Box::pin(cache.changes());
        listed(
            &cache,
            &[obj("a", "1", "10.0.0.1"), obj("b", "2", "10.0.0.2")],
        );
        assert!(futures::FutureExt::now_or_never(changes.next()).is_none());
        assert!(cache.state.lock().unwrap().pending.is_empty());
        listed(&cache, &[obj("b", "2", "10.0.0.2")]);
        assert!(futures::executor::block_on(changes.next()).is_some());
        assert_eq!(addresses(&cache), pairs(&[("b", "10.0.0.2")]));
    }

    #[test]
    fn managed_fields_and_last_applied_are_not_kept() {
        let mut o = obj("a", "1", "10.0.0.1");
        o.metadata.annotations = Some(label_map([(LAST_APPLIED, "{...}"), ("x", "y")]));
        let c = Cached::from_object(&o, &mut Interner::default()).unwrap();
        assert_eq!(c.entry.to_actual("a").annotations, label_map([("x", "y")]));
    }
}
