//! A compact form of [`ActualEntry`] for the entry cache. What the entries
//! of one mirror's workload have in common (labels, ports, service account,
//! locality, ...) is one shared [`Shape`]; the rest is the entry's own
//! (address, annotations, applied hash). Strings and sets are shared through
//! pools, and sorted slices stand in for maps (a map's first node alone takes
//! about 500 bytes). An entry costs a few hundred bytes instead of kilobytes.

use std::collections::{BTreeMap, HashSet};
use std::hash::Hash;
use std::sync::Arc;

use crate::core::plan::ActualEntry;
use crate::workloadentry::{WorkloadEntrySpec, keys};

pub type Str = Arc<str>;
type Pairs = Arc<[(Str, Str)]>;

/// One shared copy of each value handed out; values nobody else holds any
/// more are dropped once the pool has doubled since its last sweep.
struct Pool<T: ?Sized> {
    values: HashSet<Arc<T>>,
    swept_at: usize,
}

impl<T: ?Sized> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            values: HashSet::new(),
            swept_at: 0,
        }
    }
}

impl<T: ?Sized + Hash + Eq> Pool<T> {
    fn get(&mut self, value: &T) -> Arc<T>
    where
        for<'a> Arc<T>: From<&'a T>,
    {
        if let Some(shared) = self.values.get(value) {
            return shared.clone();
        }
        self.keep(Arc::from(value))
    }

    fn keep(&mut self, value: Arc<T>) -> Arc<T> {
        if let Some(shared) = self.values.get(&*value) {
            return shared.clone();
        }
        self.values.insert(value.clone());
        value
    }

    fn sweep_if_due(&mut self) {
        if self.values.len() > 2 * self.swept_at + 1024 {
            self.values.retain(|v| Arc::strong_count(v) > 1);
            self.swept_at = self.values.len();
        }
    }
}

/// The pools of one cache.
#[derive(Default)]
pub struct Interner {
    strings: Pool<str>,
    pairs: Pool<[(Str, Str)]>,
    shapes: Pool<Shape>,
    owners: Pool<Owners>,
}

impl Interner {
    pub fn get(&mut self, s: &str) -> Str {
        self.strings.get(s)
    }

    /// Drops what nothing else holds any more (instance ids of VMs long
    /// gone), pool by pool once each has doubled since its last sweep;
    /// shapes first, as they hold pairs, which hold strings.
    pub fn sweep_if_due(&mut self) {
        self.owners.sweep_if_due();
        self.shapes.sweep_if_due();
        self.pairs.sweep_if_due();
        self.strings.sweep_if_due();
    }

    /// Strings held by the pool.
    pub fn len(&self) -> usize {
        self.strings.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.values.is_empty()
    }

    /// One shared copy of a sorted list of pairs.
    pub fn pairs<'a>(&mut self, map: impl IntoIterator<Item = (&'a String, &'a String)>) -> Pairs {
        let pairs: Vec<(Str, Str)> = map
            .into_iter()
            .map(|(k, v)| (self.get(k), self.get(v)))
            .collect();
        self.pairs.get(&pairs[..])
    }

    /// One shared copy of an object's owners.
    pub fn owners<'a>(
        &mut self,
        namespace: &str,
        mirror: &str,
        refs: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Arc<Owners> {
        let owners = Owners {
            namespace: self.get(namespace),
            mirror: self.get(mirror),
            refs: self.pairs(refs),
        };
        self.owners.keep(Arc::new(owners))
    }

    fn opt(&mut self, s: &Option<String>) -> Option<Str> {
        s.as_deref().map(|s| self.get(s))
    }
}

/// Whom an object belongs to: the same for every entry of a mirror.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Owners {
    pub namespace: Str,
    /// The `meshmirror.io/mirror` label.
    pub mirror: Str,
    /// (uid, name) of every ownerReference.
    pub refs: Pairs,
}

/// What the entries of one mirror's workload usually share.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Shape {
    /// Sorted by key, as the maps they come from.
    labels: Pairs,
    spec_labels: Pairs,
    ports: Box<[(Str, u32)]>,
    network: Option<Str>,
    locality: Option<Str>,
    weight: Option<u32>,
    service_account: Option<Str>,
}

/// An [`ActualEntry`] without its name (the cache's key), compact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlimEntry {
    address: Str,
    /// Without the applied hash, which is each entry's own: the rest is
    /// shared by the entries of one instance.
    annotations: Pairs,
    applied_hash: Option<Box<str>>,
    healthy: Option<bool>,
    shape: Arc<Shape>,
}

fn map(pairs: &[(Str, Str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl SlimEntry {
    pub fn new(entry: &ActualEntry, strings: &mut Interner) -> SlimEntry {
        let spec = &entry.spec;
        let shape = Shape {
            labels: strings.pairs(&entry.labels),
            spec_labels: strings.pairs(&spec.labels),
            ports: spec
                .ports
                .iter()
                .map(|(k, v)| (strings.get(k), *v))
                .collect(),
            network: strings.opt(&spec.network),
            locality: strings.opt(&spec.locality),
            weight: spec.weight,
            service_account: strings.opt(&spec.service_account),
        };
        SlimEntry {
            address: strings.get(&spec.address),
            annotations: strings.pairs(
                entry
                    .annotations
                    .iter()
                    .filter(|(k, _)| k.as_str() != keys::APPLIED_HASH),
            ),
            applied_hash: entry
                .annotations
                .get(keys::APPLIED_HASH)
                .map(|h| h.as_str().into()),
            healthy: entry.healthy,
            shape: strings.shapes.keep(Arc::new(shape)),
        }
    }

    pub fn to_actual(&self, name: &str) -> ActualEntry {
        let shape = &*self.shape;
        let mut annotations = map(&self.annotations);
        if let Some(hash) = &self.applied_hash {
            annotations.insert(keys::APPLIED_HASH.to_string(), hash.to_string());
        }
        ActualEntry {
            name: name.to_string(),
            labels: map(&shape.labels),
            annotations,
            spec: WorkloadEntrySpec {
                address: self.address.to_string(),
                ports: shape
                    .ports
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                labels: map(&shape.spec_labels),
                network: shape.network.as_deref().map(str::to_string),
                locality: shape.locality.as_deref().map(str::to_string),
                weight: shape.weight,
                service_account: shape.service_account.as_deref().map(str::to_string),
            },
            healthy: self.healthy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, app: &str) -> ActualEntry {
        let pairs = |v: &[(&str, &str)]| {
            v.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        ActualEntry {
            name: name.into(),
            labels: pairs(&[("app", app), ("z", "1")]),
            annotations: pairs(&[
                ("meshmirror.io/instance-id", name),
                (keys::APPLIED_HASH, &format!("hash-of-{name}")),
            ]),
            spec: WorkloadEntrySpec {
                address: "10.0.0.1".into(),
                ports: BTreeMap::from([("http".to_string(), 8080), ("grpc".to_string(), 9090)]),
                labels: pairs(&[("app", app)]),
                network: Some("n1".into()),
                locality: None,
                weight: Some(2),
                service_account: Some("sa".into()),
            },
            healthy: Some(true),
        }
    }

    #[test]
    fn round_trips_and_shares_repeated_strings() {
        let mut strings = Interner::default();
        let a = entry("a", "api");
        let b = entry("b", "api");
        let slim_a = SlimEntry::new(&a, &mut strings);
        let slim_b = SlimEntry::new(&b, &mut strings);
        assert_eq!(slim_a.to_actual("a"), a);
        assert_eq!(slim_b.to_actual("b"), b);
        // Same workload, same shape: one copy.
        assert!(Arc::ptr_eq(&slim_a.shape, &slim_b.shape));
        assert!(Arc::ptr_eq(&slim_a.address, &slim_b.address));
        // Another workload of instance "a": its annotations but the hash are a's.
        let mut a2 = entry("a", "web");
        a2.annotations
            .insert(keys::APPLIED_HASH.into(), "another-hash".into());
        let slim_a2 = SlimEntry::new(&a2, &mut strings);
        assert!(Arc::ptr_eq(&slim_a.annotations, &slim_a2.annotations));
        assert!(!Arc::ptr_eq(&slim_a.shape, &slim_a2.shape));
        assert_eq!(slim_a2.to_actual("a"), a2);
        assert_eq!(SlimEntry::new(&a, &mut strings), slim_a);
        assert_ne!(slim_a, slim_b);
    }

    #[test]
    fn a_sweep_drops_only_strings_nobody_holds() {
        let mut strings = Interner::default();
        let kept = SlimEntry::new(&entry("kept", "api"), &mut strings);
        for i in 0..2000 {
            let _gone = SlimEntry::new(&entry(&format!("gone-{i}"), "api"), &mut strings);
        }
        assert!(strings.len() > 2000);
        strings.sweep_if_due();
        assert!(strings.len() < 20, "{} strings left", strings.len());
        assert_eq!(kept.to_actual("kept"), entry("kept", "api"));
        assert!(Arc::ptr_eq(&strings.get("kept"), &kept.annotations[0].1));
    }
}
