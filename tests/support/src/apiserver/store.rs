//! Object storage: every object in its storage version, one global
//! resourceVersion counter, the watch history ring buffer and the fan-out of
//! events to watchers. Objects are shared (`Arc`) between the store, the
//! history and the watchers; each event is serialized at most once.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use serde_json::{Value, json};
use tokio::sync::broadcast;

use super::resources::ResId;

/// `(namespace, name)`; the namespace is empty for cluster-scoped objects.
pub type Key = (String, String);

/// One stored object's address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ObjKey {
    pub res: ResId,
    pub ns: String,
    pub name: String,
}

impl ObjKey {
    pub fn of(res: ResId, obj: &Value) -> Self {
        ObjKey {
            res,
            ns: obj["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            name: obj["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        }
    }

    fn key(&self) -> Key {
        (self.ns.clone(), self.name.clone())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Added,
    Modified,
    Deleted,
}

impl EventType {
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A change, as watchers see it.
#[derive(Debug)]
pub struct Event {
    pub rv: u64,
    pub res: ResId,
    pub kind: EventType,
    /// The object after the change (for DELETED: its last state, with the
    /// deletion's resourceVersion), in the storage version.
    pub obj: Arc<Value>,
    /// The object before the change, so selector watches can turn a MODIFIED
    /// that leaves the selection into a DELETED.
    pub old: Option<Arc<Value>>,
    encoded: OnceLock<Bytes>,
}

impl Event {
    /// The watch line `{"type":...,"object":...}\n` in the storage version,
    /// serialized once and shared by every watcher.
    pub fn encoded(&self) -> Bytes {
        self.encoded
            .get_or_init(|| encode_watch_event(self.kind.as_str(), &self.obj))
            .clone()
    }
}

pub fn encode_watch_event(kind: &str, obj: &Value) -> Bytes {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        #[serde(rename = "type")]
        kind: &'a str,
        object: &'a Value,
    }
    let mut v = serde_json::to_vec(&Line { kind, object: obj }).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// A list result kept for `continue` tokens, so that every page of a list is
/// cut from the same snapshot, as with the real server.
#[derive(Debug)]
struct Snapshot {
    id: u64,
    rv: u64,
    items: Arc<Vec<Arc<Value>>>,
}

const SNAPSHOTS_KEPT: usize = 32;

#[derive(Debug)]
pub struct Store {
    rv: u64,
    objects: Vec<BTreeMap<Key, Arc<Value>>>,
    uids: HashMap<String, ObjKey>,
    /// owner uid → objects whose ownerReferences name it.
    dependents: HashMap<String, HashSet<ObjKey>>,
    history: VecDeque<Arc<Event>>,
    history_cap: usize,
    /// Every event with a resourceVersion above this is still in `history`.
    floor: u64,
    tx: broadcast::Sender<Arc<Event>>,
    snapshots: VecDeque<Snapshot>,
    next_snapshot: u64,
}

pub type EventReceiver = broadcast::Receiver<Arc<Event>>;

/// A watch that starts before the oldest event still kept.
#[derive(Debug)]
pub struct TooOld {
    pub requested: u64,
    pub oldest: u64,
}

impl Store {
    pub fn new(resources: usize, history_cap: usize) -> Self {
        let (tx, _) = broadcast::channel(history_cap.clamp(1024, 1 << 16));
        Store {
            rv: 1,
            objects: (0..resources).map(|_| BTreeMap::new()).collect(),
            uids: HashMap::new(),
            dependents: HashMap::new(),
            history: VecDeque::with_capacity(history_cap.min(1 << 16)),
            history_cap: history_cap.max(1),
            floor: 1,
            tx,
            snapshots: VecDeque::new(),
            next_snapshot: 1,
        }
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, key: &ObjKey) -> Option<Arc<Value>> {
        self.objects[key.res].get(&key.key()).cloned()
    }

    pub fn by_uid(&self, uid: &str) -> Option<(ObjKey, Arc<Value>)> {
        let key = self.uids.get(uid)?;
        self.get(key).map(|o| (key.clone(), o))
    }

    #[cfg(test)]
    pub fn uid_exists(&self, uid: &str) -> bool {
        self.uids.contains_key(uid)
    }

    pub fn dependents_of(&self, uid: &str) -> Vec<ObjKey> {
        let mut v: Vec<ObjKey> = self
            .dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        v.sort_by(|a, b| (a.res, &a.ns, &a.name).cmp(&(b.res, &b.ns, &b.name)));
        v
    }

    /// Objects of `res` in `ns` (every namespace when None), in key order.
    pub fn iter<'a>(
        &'a self,
        res: ResId,
        ns: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = &'a Arc<Value>> + 'a> {
        let map = &self.objects[res];
        match ns {
            None => Box::new(map.values()),
            Some(ns) => Box::new(
                map.range((ns.to_string(), String::new())..)
                    .take_while(move |((n, _), _)| n == ns)
                    .map(|(_, v)| v),
            ),
        }
    }

    /// Stores `obj` (storage version) with a new resourceVersion and records the event.
    pub fn put(&mut self, res: ResId, mut obj: Value, kind: EventType) -> Arc<Value> {
        self.rv += 1;
        let rv = self.rv;
        obj["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = ObjKey::of(res, &obj);
        let obj = Arc::new(obj);
        let old = self.objects[res].insert(key.key(), obj.clone());
        if let Some(old) = &old {
            self.unindex(&key, old);
        }
        self.index(&key, &obj);
        self.record(rv, res, kind, obj.clone(), old);
        obj
    }

    /// Removes the object for good; returns its last state with the deletion's
    /// resourceVersion.
    pub fn remove(&mut self, key: &ObjKey) -> Option<Arc<Value>> {
        let old = self.objects[key.res].remove(&key.key())?;
        self.unindex(key, &old);
        self.rv += 1;
        let rv = self.rv;
        let mut last = (*old).clone();
        last["metadata"]["resourceVersion"] = json!(rv.to_string());
        let last = Arc::new(last);
        self.record(rv, key.res, EventType::Deleted, last.clone(), Some(old));
        Some(last)
    }

    fn index(&mut self, key: &ObjKey, obj: &Value) {
        if let Some(uid) = obj["metadata"]["uid"].as_str() {
            self.uids.insert(uid.to_string(), key.clone());
        }
        for owner in owner_uids(obj) {
            self.dependents
                .entry(owner.to_string())
                .or_default()
                .insert(key.clone());
        }
    }

    fn unindex(&mut self, key: &ObjKey, obj: &Value) {
        if let Some(uid) = obj["metadata"]["uid"].as_str()
            && self.uids.get(uid) == Some(key)
        {
            self.uids.remove(uid);
        }
        for owner in owner_uids(obj) {
            if let Some(set) = self.dependents.get_mut(owner) {
                set.remove(key);
                if set.is_empty() {
                    self.dependents.remove(owner);
                }
            }
        }
    }

    fn record(
        &mut self,
        rv: u64,
        res: ResId,
        kind: EventType,
        obj: Arc<Value>,
        old: Option<Arc<Value>>,
    ) {
        let ev = Arc::new(Event {
            rv,
            res,
            kind,
            obj,
            old,
            encoded: OnceLock::new(),
        });
        if self.history.len() >= self.history_cap
            && let Some(dropped) = self.history.pop_front()
        {
            self.floor = dropped.rv;
        }
        self.history.push_back(ev.clone());
        // No receiver is not an error: nobody is watching.
        let _ = self.tx.send(ev);
    }

    /// Forgets all history: a watch from any resourceVersion before now gets 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.floor = self.rv;
        self.snapshots.clear();
    }

    /// Events after `from` (for `res`) and a receiver for the ones to come,
    /// taken together so none is lost or repeated.
    pub fn watch_from(
        &self,
        res: ResId,
        from: u64,
    ) -> Result<(Vec<Arc<Event>>, EventReceiver), TooOld> {
        if from < self.floor {
            return Err(TooOld {
                requested: from,
                oldest: self.floor + 1,
            });
        }
        let start = self.history.partition_point(|e| e.rv <= from);
        let past = self
            .history
            .range(start..)
            .filter(|e| e.res == res)
            .cloned()
            .collect();
        Ok((past, self.tx.subscribe()))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }

    /// Keeps a list result for continuation; returns its id.
    pub fn keep_snapshot(&mut self, items: Arc<Vec<Arc<Value>>>, rv: u64) -> u64 {
        let id = self.next_snapshot;
        self.next_snapshot += 1;
        if self.snapshots.len() >= SNAPSHOTS_KEPT {
            self.snapshots.pop_front();
        }
        self.snapshots.push_back(Snapshot { id, rv, items });
        id
    }

    pub fn snapshot(&self, id: u64) -> Option<(Arc<Vec<Arc<Value>>>, u64)> {
        self.snapshots
            .iter()
            .find(|s| s.id == id)
            .map(|s| (s.items.clone(), s.rv))
    }
}

pub fn owner_uids(obj: &Value) -> impl Iterator<Item = &str> {
    obj["metadata"]["ownerReferences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["uid"].as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(ns: &str, name: &str, uid: &str, owner: Option<&str>) -> Value {
        let mut o = json!({"metadata": {"namespace": ns, "name": name, "uid": uid}});
        if let Some(owner) = owner {
            o["metadata"]["ownerReferences"] = json!([{"uid": owner}]);
        }
        o
    }

    #[test]
    fn resource_versions_grow_and_history_is_bounded() {
        let mut s = Store::new(1, 3);
        let start = s.current_rv();
        for i in 0..5 {
            s.put(
                0,
                obj("a", &format!("o{i}"), &format!("u{i}"), None),
                EventType::Added,
            );
        }
        assert_eq!(s.current_rv(), start + 5);
        assert!(
            s.watch_from(0, start).is_err(),
            "start is older than the buffer"
        );
        let (past, _) = s.watch_from(0, start + 2).unwrap();
        let rvs: Vec<u64> = past.iter().map(|e| e.rv).collect();
        assert_eq!(rvs, [start + 3, start + 4, start + 5]);
        s.compact();
        assert!(s.watch_from(0, start + 4).is_err());
        assert!(s.watch_from(0, s.current_rv()).unwrap().0.is_empty());
    }

    #[test]
    fn namespace_iteration_and_indexes() {
        let mut s = Store::new(1, 10);
        s.put(0, obj("a", "x", "1", None), EventType::Added);
        s.put(0, obj("b", "y", "2", Some("1")), EventType::Added);
        s.put(0, obj("ab", "z", "3", Some("1")), EventType::Added);
        let names: Vec<&str> = s
            .iter(0, Some("a"))
            .map(|o| o["metadata"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["x"]);
        assert_eq!(s.iter(0, None).count(), 3);
        assert_eq!(s.dependents_of("1").len(), 2);
        let key = ObjKey::of(0, &obj("b", "y", "", None));
        let last = s.remove(&key).unwrap();
        assert_eq!(
            last["metadata"]["resourceVersion"],
            json!(s.current_rv().to_string())
        );
        assert_eq!(s.dependents_of("1").len(), 1);
        assert!(!s.uid_exists("2"));
        assert!(s.uid_exists("3"));
    }
}
