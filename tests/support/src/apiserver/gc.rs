//! Deletion: finalizers and deletionTimestamp, and the garbage collector's
//! cascade to dependents (Background, Foreground, Orphan). Runs synchronously
//! under the store lock; every step is its own event with its own
//! resourceVersion, in the order the real garbage collector produces them.

use std::sync::Arc;

use serde_json::{Value, json};

use super::store::{EventType, ObjKey, Store, owner_uids};

pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "Background" => Some(Propagation::Background),
            "Foreground" => Some(Propagation::Foreground),
            "Orphan" => Some(Propagation::Orphan),
            _ => None,
        }
    }
}

/// What a delete did.
#[derive(Debug)]
pub enum Deleted {
    /// Removed from storage (last state).
    Gone(Arc<Value>),
    /// Finalizers remain: the object now carries a deletionTimestamp.
    Pending(Arc<Value>),
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj["metadata"]["finalizers"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|f| f.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn set_finalizers(obj: &mut Value, list: Vec<String>) {
    let meta = &mut obj["metadata"];
    if list.is_empty() {
        if let Some(m) = meta.as_object_mut() {
            m.remove("finalizers");
        }
    } else {
        meta["finalizers"] = json!(list);
    }
}

/// Deletes one object with `policy`.
pub fn delete(store: &mut Store, key: &ObjKey, policy: Propagation, now: &str) -> Option<Deleted> {
    let live = store.get(key)?;
    let uid = live["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if policy == Propagation::Orphan {
        for dep in store.dependents_of(&uid) {
            drop_owner_refs(store, &dep, |u| u == uid);
        }
    }
    let mut obj = (*live).clone();
    let mut fins = finalizers(&obj);
    if policy == Propagation::Foreground && !fins.iter().any(|f| f == FOREGROUND_FINALIZER) {
        fins.push(FOREGROUND_FINALIZER.to_string());
        set_finalizers(&mut obj, fins.clone());
    }
    if fins.is_empty() {
        let gone = store.remove(key)?;
        cascade(store, &gone, now);
        return Some(Deleted::Gone(gone));
    }
    let already = obj["metadata"]["deletionTimestamp"].is_string();
    if !already {
        obj["metadata"]["deletionTimestamp"] = json!(now);
        obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
        let generation = obj["metadata"]["generation"].as_i64().unwrap_or(0);
        obj["metadata"]["generation"] = json!(generation + 1);
    }
    let pending = if !already || obj != *live {
        store.put(key.res, obj, EventType::Modified)
    } else {
        live
    };
    if policy == Propagation::Foreground {
        for dep in store.dependents_of(&uid) {
            delete(store, &dep, Propagation::Foreground, now);
        }
        if let Some(gone) = release_foreground(store, key, now) {
            return Some(Deleted::Gone(gone));
        }
        return store.get(key).map(Deleted::Pending);
    }
    Some(Deleted::Pending(pending))
}

/// Removes a terminating object whose finalizers are all gone (after an update
/// removed the last one). Returns its last state when it was removed.
pub fn finish_if_done(store: &mut Store, key: &ObjKey, now: &str) -> Option<Arc<Value>> {
    let live = store.get(key)?;
    if live["metadata"]["deletionTimestamp"].is_string() && finalizers(&live).is_empty() {
        let gone = store.remove(key)?;
        cascade(store, &gone, now);
        return Some(gone);
    }
    None
}

/// After `gone` left storage: delete dependents whose owners are all gone, drop
/// dangling references from dependents that still have a live owner, and let
/// foreground-deleting owners of `gone` finish.
fn cascade(store: &mut Store, gone: &Value, now: &str) {
    if let Some(uid) = gone["metadata"]["uid"].as_str() {
        for dep in store.dependents_of(uid) {
            let Some(obj) = store.get(&dep) else { continue };
            let any_alive = owner_uids(&obj).any(|u| store.uid_exists(u));
            if any_alive {
                drop_owner_refs(store, &dep, |u| u == uid);
            } else {
                delete(store, &dep, Propagation::Background, now);
            }
        }
    }
    let owners: Vec<String> = owner_uids(gone).map(str::to_string).collect();
    for owner in owners {
        if let Some((key, _)) = store.by_uid(&owner) {
            release_foreground(store, &key, now);
        }
    }
}

/// Removes the foregroundDeletion finalizer once no dependent with
/// `blockOwnerDeletion: true` remains; removes the object if that was the last
/// finalizer.
fn release_foreground(store: &mut Store, key: &ObjKey, now: &str) -> Option<Arc<Value>> {
    let live = store.get(key)?;
    let mut fins = finalizers(&live);
    if !live["metadata"]["deletionTimestamp"].is_string()
        || !fins.iter().any(|f| f == FOREGROUND_FINALIZER)
    {
        return None;
    }
    let uid = live["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let blocked = store.dependents_of(&uid).iter().any(|dep| {
        store.get(dep).is_some_and(|o| {
            o["metadata"]["ownerReferences"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["uid"] == uid.as_str() && r["blockOwnerDeletion"] == true)
        })
    });
    if blocked {
        return None;
    }
    fins.retain(|f| f != FOREGROUND_FINALIZER);
    let mut obj = (*live).clone();
    set_finalizers(&mut obj, fins);
    store.put(key.res, obj, EventType::Modified);
    finish_if_done(store, key, now)
}

fn drop_owner_refs(store: &mut Store, key: &ObjKey, drop: impl Fn(&str) -> bool) {
    let Some(live) = store.get(key) else { return };
    let mut obj = (*live).clone();
    let Some(refs) = obj["metadata"]["ownerReferences"].as_array_mut() else {
        return;
    };
    let before = refs.len();
    refs.retain(|r| !r["uid"].as_str().is_some_and(&drop));
    if refs.len() == before {
        return;
    }
    if refs.is_empty()
        && let Some(m) = obj["metadata"].as_object_mut()
    {
        m.remove("ownerReferences");
    }
    store.put(key.res, obj, EventType::Modified);
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-01-01T00:00:00Z";

    fn put(s: &mut Store, name: &str, owners: &[(&str, bool)], fins: &[&str]) -> ObjKey {
        let refs: Vec<Value> = owners
            .iter()
            .map(|(u, block)| json!({"uid": u, "blockOwnerDeletion": block}))
            .collect();
        let mut o = json!({"metadata": {"namespace": "ns", "name": name, "uid": name}});
        if !refs.is_empty() {
            o["metadata"]["ownerReferences"] = json!(refs);
        }
        if !fins.is_empty() {
            o["metadata"]["finalizers"] = json!(fins);
        }
        s.put(0, o, EventType::Added);
        ObjKey {
            res: 0,
            ns: "ns".into(),
            name: name.into(),
        }
    }

    #[test]
    fn background_deletes_orphaned_dependents_only() {
        let mut s = Store::new(1, 100);
        let a = put(&mut s, "a", &[], &[]);
        put(&mut s, "b", &[], &[]);
        let only_a = put(&mut s, "dep1", &[("a", false)], &[]);
        let a_and_b = put(&mut s, "dep2", &[("a", false), ("b", false)], &[]);
        assert!(matches!(
            delete(&mut s, &a, Propagation::Background, NOW),
            Some(Deleted::Gone(_))
        ));
        assert!(s.get(&only_a).is_none());
        let kept = s.get(&a_and_b).unwrap();
        assert_eq!(
            kept["metadata"]["ownerReferences"],
            json!([{"uid": "b", "blockOwnerDeletion": false}])
        );
    }

    #[test]
    fn finalizers_hold_the_object_until_removed() {
        let mut s = Store::new(1, 100);
        let a = put(&mut s, "a", &[], &["x/y"]);
        let Some(Deleted::Pending(p)) = delete(&mut s, &a, Propagation::Background, NOW) else {
            panic!("expected pending")
        };
        assert_eq!(p["metadata"]["deletionTimestamp"], NOW);
        let mut o = (*p).clone();
        o["metadata"].as_object_mut().unwrap().remove("finalizers");
        s.put(0, o, EventType::Modified);
        assert!(finish_if_done(&mut s, &a, NOW).is_some());
        assert!(s.get(&a).is_none());
    }

    #[test]
    fn foreground_waits_for_blocking_dependents() {
        let mut s = Store::new(1, 100);
        let a = put(&mut s, "a", &[], &[]);
        let dep = put(&mut s, "dep", &[("a", true)], &["hold"]);
        let Some(Deleted::Pending(p)) = delete(&mut s, &a, Propagation::Foreground, NOW) else {
            panic!("expected pending")
        };
        assert_eq!(p["metadata"]["finalizers"], json!([FOREGROUND_FINALIZER]));
        let d = s.get(&dep).unwrap();
        assert!(d["metadata"]["deletionTimestamp"].is_string());
        let mut o = (*d).clone();
        o["metadata"].as_object_mut().unwrap().remove("finalizers");
        s.put(0, o, EventType::Modified);
        finish_if_done(&mut s, &dep, NOW);
        assert!(s.get(&dep).is_none());
        assert!(s.get(&a).is_none(), "owner goes once the dependent is gone");
    }

    #[test]
    fn orphan_keeps_dependents_without_the_reference() {
        let mut s = Store::new(1, 100);
        let a = put(&mut s, "a", &[], &[]);
        let dep = put(&mut s, "dep", &[("a", true)], &[]);
        delete(&mut s, &a, Propagation::Orphan, NOW);
        let d = s.get(&dep).unwrap();
        assert!(d["metadata"].get("ownerReferences").is_none());
    }
}
