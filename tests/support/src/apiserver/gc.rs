//! Deletion: finalizers and deletionTimestamp, and the garbage collector's
//! cascade to dependents (Background, Foreground, Orphan). Runs synchronously
//! under the store lock; every step is its own event with its own
//! resourceVersion, in the order the real garbage collector produces them.

use std::sync::Arc;

use serde_json::{Value, json};

use super::store::{EventType, ObjKey, Store, owner_uids};

pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
pub const ORPHAN_FINALIZER: &str = "orphan";

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

/// Deletes one object with `policy`. Foreground and Orphan deletes first
/// give the object their finalizer (`foregroundDeletion`, `orphan`) and a
/// deletionTimestamp, as the real server does, and answer with that state
/// (`Pending`) even when the garbage collector's work, done here at once,
/// then removes the object.
pub fn delete(store: &mut Store, key: &ObjKey, policy: Propagation, now: &str) -> Option<Deleted> {
    let live = store.get(key)?;
    let uid = live["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut obj = (*live).clone();
    let mut fins = finalizers(&obj);
    let gc_finalizer = match policy {
        Propagation::Foreground => Some(FOREGROUND_FINALIZER),
        Propagation::Orphan => Some(ORPHAN_FINALIZER),
        Propagation::Background => None,
    };
    if let Some(f) = gc_finalizer
        && !fins.iter().any(|have| have == f)
    {
        fins.push(f.to_string());
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
    match policy {
        Propagation::Foreground => {
            for dep in store.dependents_of(&uid) {
                // A dependent another owner still holds loses the reference
                // only, as the real collector treats "solid" owners.
                let solid = store
                    .get(&dep)
                    .is_some_and(|obj| any_solid_owner_but(store, &dep, &obj, &uid));
                if solid {
                    drop_owner_refs(store, &dep, |u| u == uid);
                } else {
                    delete(store, &dep, Propagation::Foreground, now);
                }
            }
            release_foreground(store, key, now);
        }
        Propagation::Orphan => {
            for dep in store.dependents_of(&uid) {
                drop_owner_refs(store, &dep, |u| u == uid);
            }
            release_orphan(store, key, now);
        }
        Propagation::Background => {}
    }
    Some(Deleted::Pending(pending))
}

/// The garbage collector's last step of an Orphan delete: the `orphan`
/// finalizer goes (the dependents no longer name the object); the object
/// goes with it unless other finalizers remain.
fn release_orphan(store: &mut Store, key: &ObjKey, now: &str) -> Option<Arc<Value>> {
    let live = store.get(key)?;
    let mut fins = finalizers(&live);
    if !fins.iter().any(|f| f == ORPHAN_FINALIZER) {
        return None;
    }
    fins.retain(|f| f != ORPHAN_FINALIZER);
    let mut obj = (*live).clone();
    set_finalizers(&mut obj, fins);
    store.put(key.res, obj, EventType::Modified);
    finish_if_done(store, key, now)
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
            if any_owner_alive(store, &dep, &obj) {
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

/// Whether one of `obj`'s owners exists where the real garbage collector
/// looks for it: in the dependent's namespace, or cluster-scoped. An owner
/// in another namespace is absent to it (cross-namespace references are
/// invalid), however alive it is there.
fn any_owner_alive(store: &Store, key: &ObjKey, obj: &Value) -> bool {
    owner_uids(obj).any(|u| {
        store
            .by_uid(u)
            .is_some_and(|(owner, _)| owner.ns.is_empty() || owner.ns == key.ns)
    })
}

/// Whether an owner of `obj` other than `except` is alive where the
/// collector looks (see [`any_owner_alive`]) and not itself waiting for its
/// dependents (a foreground delete in progress): the real collector's
/// "solid" owners.
fn any_solid_owner_but(store: &Store, key: &ObjKey, obj: &Value, except: &str) -> bool {
    owner_uids(obj).filter(|u| *u != except).any(|u| {
        store.by_uid(u).is_some_and(|(owner, o)| {
            let waiting = o["metadata"]["deletionTimestamp"].is_string()
                && finalizers(&o).iter().any(|f| f == FOREGROUND_FINALIZER);
            (owner.ns.is_empty() || owner.ns == key.ns) && !waiting
        })
    })
}

/// After a write: an object whose owner references are all absent is
/// deleted, as the real garbage collector does soon after it sees it.
pub fn collect_if_orphaned(store: &mut Store, key: &ObjKey, now: &str) {
    let Some(obj) = store.get(key) else { return };
    if owner_uids(&obj).next().is_some() && !any_owner_alive(store, key, &obj) {
        delete(store, key, Propagation::Background, now);
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
    let mut dropped = Vec::new();
    refs.retain(|r| match r["uid"].as_str() {
        Some(u) if drop(u) => {
            dropped.push(u.to_string());
            false
        }
        _ => true,
    });
    if dropped.is_empty() {
        return;
    }
    let none_left = refs.is_empty();
    if none_left && let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("ownerReferences");
    }
    forget_owner_refs(&mut obj, &dropped, none_left);
    store.put(key.res, obj, EventType::Modified);
}

/// The garbage collector's write records no manager of its own, but the
/// references it removed leave every manager's fields (the whole list when
/// none is left), and a manager left with no fields goes, as with the real
/// server's field manager.
fn forget_owner_refs(obj: &mut Value, uids: &[String], none_left: bool) {
    let Some(entries) = obj["metadata"]["managedFields"].as_array_mut() else {
        return;
    };
    let is_empty = |v: &Value| v.as_object().is_none_or(|m| m.keys().all(|k| k == "."));
    for entry in entries.iter_mut() {
        let Some(meta) = entry["fieldsV1"]["f:metadata"].as_object_mut() else {
            continue;
        };
        if let Some(refs) = meta
            .get_mut("f:ownerReferences")
            .and_then(Value::as_object_mut)
        {
            for uid in uids {
                refs.remove(&format!("k:{}", json!({"uid": uid})));
            }
            if none_left || refs.is_empty() {
                meta.remove("f:ownerReferences");
            }
        }
        if meta.is_empty()
            && let Some(fields) = entry["fieldsV1"].as_object_mut()
        {
            fields.remove("f:metadata");
        }
    }
    entries.retain(|e| !is_empty(&e["fieldsV1"]));
    if entries.is_empty()
        && let Some(m) = obj["metadata"].as_object_mut()
    {
        m.remove("managedFields");
    }
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
        let Some(Deleted::Pending(p)) = delete(&mut s, &a, Propagation::Orphan, NOW) else {
            panic!("the answer is the object with the orphan finalizer")
        };
        assert_eq!(p["metadata"]["finalizers"], json!([ORPHAN_FINALIZER]));
        assert_eq!(p["metadata"]["deletionTimestamp"], NOW);
        let d = s.get(&dep).unwrap();
        assert!(d["metadata"].get("ownerReferences").is_none());
        assert!(s.get(&a).is_none(), "gone once the dependents are orphaned");
    }

    #[test]
    fn dropped_references_leave_managed_fields() {
        let mut s = Store::new(1, 100);
        let a = put(&mut s, "a", &[], &[]);
        put(&mut s, "b", &[], &[]);
        let dep = put(&mut s, "dep", &[("a", true), ("b", true)], &[]);
        let mut o = (*s.get(&dep).unwrap()).clone();
        o["metadata"]["managedFields"] = json!([
            {"manager": "m", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {
                "f:metadata": {"f:ownerReferences": {".": {}, "k:{\"uid\":\"a\"}": {}, "k:{\"uid\":\"b\"}": {}}},
                "f:spec": {"f:x": {}}}},
            {"manager": "only-a", "operation": "Apply", "fieldsType": "FieldsV1", "fieldsV1": {
                "f:metadata": {"f:ownerReferences": {"k:{\"uid\":\"a\"}": {}}}}},
        ]);
        s.put(0, o, EventType::Modified);
        delete(&mut s, &a, Propagation::Orphan, NOW);
        let d = s.get(&dep).unwrap();
        assert_eq!(
            d["metadata"]["managedFields"],
            json!([{"manager": "m", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": {
                "f:metadata": {"f:ownerReferences": {".": {}, "k:{\"uid\":\"b\"}": {}}},
                "f:spec": {"f:x": {}}}}])
        );
    }

    #[test]
    fn orphan_leaves_other_finalizers_holding_the_object() {
        let mut s = Store::new(1, 100);
        let a = put(&mut s, "a", &[], &["x/y"]);
        delete(&mut s, &a, Propagation::Orphan, NOW);
        let held = s.get(&a).unwrap();
        assert_eq!(held["metadata"]["finalizers"], json!(["x/y"]));
    }

    #[test]
    fn dependents_of_every_kind_go_with_their_owner() {
        // Slots: 0 the owner's kind (a mirror), then Services,
        // ServiceEntries, Sidecars and WorkloadEntries: the collector finds
        // dependents by owner uid, whatever their kind.
        let build = || {
            let mut s = Store::new(5, 100);
            let owner = put(&mut s, "owner", &[], &[]);
            for res in 1..5 {
                let o = json!({"metadata": {"namespace": "ns", "name": "web", "uid": format!("dep{res}"),
                    "ownerReferences": [{"uid": "owner", "blockOwnerDeletion": true, "controller": true}]}});
                s.put(res, o, EventType::Added);
            }
            // One kept by a second, live owner loses only the dangling reference.
            put(&mut s, "other", &[], &[]);
            let kept = json!({"metadata": {"namespace": "ns", "name": "kept", "uid": "kept",
                "ownerReferences": [{"uid": "owner"}, {"uid": "other"}]}});
            s.put(2, kept, EventType::Added);
            (s, owner)
        };
        let deps: Vec<ObjKey> = (1..5)
            .map(|res| ObjKey {
                res,
                ns: "ns".into(),
                name: "web".into(),
            })
            .collect();
        for policy in [Propagation::Background, Propagation::Foreground] {
            let (mut s, owner) = build();
            delete(&mut s, &owner, policy, NOW);
            for dep in &deps {
                assert!(
                    s.get(dep).is_none(),
                    "{policy:?}: slot {} collected",
                    dep.res
                );
            }
            let kept = s
                .get(&ObjKey {
                    res: 2,
                    ns: "ns".into(),
                    name: "kept".into(),
                })
                .unwrap();
            assert_eq!(
                kept["metadata"]["ownerReferences"],
                json!([{"uid": "other"}]),
                "{policy:?}"
            );
        }
    }

    #[test]
    fn foreground_answers_the_terminating_owner_even_when_it_goes_at_once() {
        let mut s = Store::new(1, 100);
        let a = put(&mut s, "a", &[], &[]);
        let dep = put(&mut s, "dep", &[("a", true)], &[]);
        let Some(Deleted::Pending(p)) = delete(&mut s, &a, Propagation::Foreground, NOW) else {
            panic!("the answer is the object with the foreground finalizer")
        };
        assert_eq!(p["metadata"]["finalizers"], json!([FOREGROUND_FINALIZER]));
        assert!(s.get(&dep).is_none());
        assert!(s.get(&a).is_none());
    }
}
