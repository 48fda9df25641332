//! One watch over several namespaces (`--namespace a,b`), for installs whose
//! RBAC grants namespaced list and watch only. There is one watcher per
//! namespace; their events are merged so that a consumer (a reflector store,
//! a cache) sees what a single watch would give: one initial list of every
//! namespace (`Init`, `InitApply`..., `InitDone`, once all have listed), then
//! `Apply` and `Delete`. A later re-list of one namespace (after a dropped
//! watch or a 410) must not replace the others' objects, so it becomes
//! `Apply` for what it lists and `Delete` for what it no longer holds.
//!
//! [`Merger`] is the pure rule; [`merge`] drives it over the watch streams.

use std::collections::{BTreeMap, BTreeSet};

use futures::{Stream, StreamExt, stream};
use kube::Resource;
use kube::runtime::watcher::{self, Event};

type Item<K> = Result<Event<K>, watcher::Error>;

/// The merge of `n` namespaces' watch events.
pub struct Merger<K> {
    n: usize,
    /// Objects of the first list, by (namespace index, name), until all
    /// namespaces have listed.
    first: Option<BTreeMap<(usize, String), K>>,
    listed: BTreeSet<usize>,
    /// Per namespace, what it holds now, in the form a `Delete` carries.
    known: Vec<BTreeMap<String, K>>,
    /// Per namespace re-listing: the names listed so far.
    relisting: BTreeMap<usize, BTreeSet<String>>,
    /// What a `Delete` needs of an object (metadata; the rest may go).
    skeleton: fn(&K) -> K,
}

impl<K: Resource + Clone> Merger<K> {
    pub fn new(n: usize, skeleton: fn(&K) -> K) -> Self {
        Merger {
            n,
            first: Some(BTreeMap::new()),
            listed: BTreeSet::new(),
            known: vec![BTreeMap::new(); n],
            relisting: BTreeMap::new(),
            skeleton,
        }
    }

    /// The merged events for one event of namespace `i`.
    pub fn push(&mut self, i: usize, item: Item<K>) -> Vec<Item<K>> {
        let event = match item {
            Ok(event) => event,
            Err(err) => return vec![Err(err)],
        };
        match self.first.as_mut() {
            Some(first) => {
                match event {
                    Event::Init => {}
                    Event::InitApply(o) | Event::Apply(o) => {
                        let name = o.meta().name.clone().unwrap_or_default();
                        self.known[i].insert(name.clone(), (self.skeleton)(&o));
                        first.insert((i, name), o);
                    }
                    Event::Delete(o) => {
                        let name = o.meta().name.clone().unwrap_or_default();
                        self.known[i].remove(&name);
                        first.remove(&(i, name));
                    }
                    Event::InitDone => {
                        self.listed.insert(i);
                    }
                }
                if self.listed.len() < self.n {
                    return Vec::new();
                }
                let first = self.first.take().unwrap_or_default();
                let mut out = Vec::with_capacity(first.len() + 2);
                out.push(Ok(Event::Init));
                out.extend(first.into_values().map(|o| Ok(Event::InitApply(o))));
                out.push(Ok(Event::InitDone));
                out
            }
            None => self.after_first(i, event),
        }
    }

    fn after_first(&mut self, i: usize, event: Event<K>) -> Vec<Item<K>> {
        match event {
            Event::Init => {
                self.relisting.insert(i, BTreeSet::new());
                Vec::new()
            }
            Event::InitApply(o) | Event::Apply(o) => {
                let name = o.meta().name.clone().unwrap_or_default();
                if let Some(seen) = self.relisting.get_mut(&i) {
                    seen.insert(name.clone());
                }
                self.known[i].insert(name, (self.skeleton)(&o));
                vec![Ok(Event::Apply(o))]
            }
            Event::Delete(o) => {
                let name = o.meta().name.clone().unwrap_or_default();
                self.known[i].remove(&name);
                vec![Ok(Event::Delete(o))]
            }
            Event::InitDone => {
                let seen = self.relisting.remove(&i).unwrap_or_default();
                let gone: Vec<String> = self.known[i]
                    .keys()
                    .filter(|name| !seen.contains(*name))
                    .cloned()
                    .collect();
                gone.into_iter()
                    .filter_map(|name| self.known[i].remove(&name))
                    .map(|o| Ok(Event::Delete(o)))
                    .collect()
            }
        }
    }
}

/// Merges one watch stream per namespace (see the module's doc).
pub fn merge<K, S>(streams: Vec<S>, skeleton: fn(&K) -> K) -> impl Stream<Item = Item<K>> + Send
where
    K: Resource + Clone + Send + 'static,
    S: Stream<Item = Item<K>> + Send + 'static,
{
    let mut merger = Merger::new(streams.len(), skeleton);
    let tagged = streams
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.map(move |item| (i, item)).boxed());
    stream::select_all(tagged).flat_map(move |(i, item)| stream::iter(merger.push(i, item)))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    use super::*;

    fn cm(ns: &str, name: &str, v: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            data: Some([("v".to_string(), v.to_string())].into()),
            ..Default::default()
        }
    }

    fn bare(o: &ConfigMap) -> ConfigMap {
        ConfigMap {
            metadata: o.metadata.clone(),
            ..Default::default()
        }
    }

    /// The events as short strings: "Init", "InitApply a/x=1", "Delete b/y".
    fn show(items: Vec<Item<ConfigMap>>) -> Vec<String> {
        let id = |o: &ConfigMap| {
            let v = o
                .data
                .as_ref()
                .and_then(|d| d.get("v"))
                .map(|v| format!("={v}"))
                .unwrap_or_default();
            format!(
                "{}/{}{v}",
                o.metadata.namespace.as_deref().unwrap_or_default(),
                o.metadata.name.as_deref().unwrap_or_default()
            )
        };
        items
            .into_iter()
            .map(|i| match i.expect("no error here") {
                Event::Init => "Init".to_string(),
                Event::InitDone => "InitDone".to_string(),
                Event::InitApply(o) => format!("InitApply {}", id(&o)),
                Event::Apply(o) => format!("Apply {}", id(&o)),
                Event::Delete(o) => format!("Delete {}", id(&o)),
            })
            .collect()
    }

    #[test]
    fn one_initial_list_once_every_namespace_has_listed() {
        let mut m = Merger::new(2, bare);
        assert!(m.push(0, Ok(Event::Init)).is_empty());
        assert!(
            m.push(0, Ok(Event::InitApply(cm("a", "x", "1"))))
                .is_empty()
        );
        assert!(m.push(0, Ok(Event::InitDone)).is_empty());
        // a changes while b still lists: the list holds the latest.
        assert!(m.push(0, Ok(Event::Apply(cm("a", "x", "2")))).is_empty());
        assert!(m.push(0, Ok(Event::Apply(cm("a", "z", "1")))).is_empty());
        assert!(m.push(0, Ok(Event::Delete(cm("a", "z", "1")))).is_empty());
        assert!(m.push(1, Ok(Event::Init)).is_empty());
        assert!(
            m.push(1, Ok(Event::InitApply(cm("b", "y", "1"))))
                .is_empty()
        );
        assert_eq!(
            show(m.push(1, Ok(Event::InitDone))),
            ["Init", "InitApply a/x=2", "InitApply b/y=1", "InitDone"]
        );
        assert_eq!(
            show(m.push(1, Ok(Event::Apply(cm("b", "y", "2"))))),
            ["Apply b/y=2"]
        );
    }

    #[test]
    fn a_relist_of_one_namespace_leaves_the_others_alone() {
        let mut m = Merger::new(2, bare);
        for (i, ns) in [(0, "a"), (1, "b")] {
            m.push(i, Ok(Event::Init));
            m.push(i, Ok(Event::InitApply(cm(ns, "x", "1"))));
            m.push(i, Ok(Event::InitApply(cm(ns, "y", "1"))));
            m.push(i, Ok(Event::InitDone));
        }
        // a's watch drops; while it was away, a/y went and a/x changed.
        assert!(m.push(0, Ok(Event::Init)).is_empty());
        assert_eq!(
            show(m.push(0, Ok(Event::InitApply(cm("a", "x", "2"))))),
            ["Apply a/x=2"]
        );
        assert_eq!(show(m.push(0, Ok(Event::InitDone))), ["Delete a/y"]);
        // b is untouched, and a later relist of b with everything still there
        // deletes nothing.
        m.push(1, Ok(Event::Init));
        m.push(1, Ok(Event::InitApply(cm("b", "x", "1"))));
        m.push(1, Ok(Event::InitApply(cm("b", "y", "1"))));
        assert!(m.push(1, Ok(Event::InitDone)).is_empty());
    }

    #[test]
    fn errors_pass_through_at_any_time() {
        let mut m: Merger<ConfigMap> = Merger::new(1, bare);
        let out = m.push(0, Err(watcher::Error::NoResourceVersion));
        assert!(matches!(
            out.as_slice(),
            [Err(watcher::Error::NoResourceVersion)]
        ));
    }

    #[tokio::test]
    async fn the_streams_are_merged_into_one_watch() {
        let a = stream::iter(vec![
            Ok(Event::Init),
            Ok(Event::InitApply(cm("a", "x", "1"))),
            Ok(Event::InitDone),
        ]);
        let b = stream::iter(vec![Ok(Event::Init), Ok(Event::InitDone)]);
        let out: Vec<_> = merge(vec![a.boxed(), b.boxed()], bare).collect().await;
        assert_eq!(show(out), ["Init", "InitApply a/x=1", "InitDone"]);
    }
}
