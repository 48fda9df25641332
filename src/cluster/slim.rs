//! A compact form of [`ActualEntry`] for the entry cache: strings shared
//! through an interner (label keys, mirror names and the like repeat in every
//! entry) and sorted slices instead of maps (a map's first node alone takes
//! about 500 bytes). A cache of 10,000 entries is several times smaller.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use crate::core::plan::ActualEntry;
use crate::workloadentry::WorkloadEntrySpec;

pub type Str = Arc<str>;

/// Hands out one shared copy of each string.
#[derive(Default)]
pub struct Interner {
    strings: HashSet<Str>,
    /// Size after the last sweep, to sweep only when it has doubled.
    swept_at: usize,
}

impl Interner {
    pub fn get(&mut self, s: &str) -> Str {
        if let Some(shared) = self.strings.get(s) {
            return shared.clone();
        }
        let shared: Str = Arc::from(s);
        self.strings.insert(shared.clone());
        shared
    }

    /// Drops strings nothing else holds any more (instance ids of VMs long
    /// gone), once the set has doubled since the last sweep.
    pub fn sweep_if_due(&mut self) {
        if self.strings.len() > 2 * self.swept_at + 1024 {
            self.strings.retain(|s| Arc::strong_count(s) > 1);
            self.swept_at = self.strings.len();
        }
    }

    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }

    fn pairs<'a>(
        &mut self,
        map: impl IntoIterator<Item = (&'a String, &'a String)>,
    ) -> Box<[(Str, Str)]> {
        map.into_iter()
            .map(|(k, v)| (self.get(k), self.get(v)))
            .collect()
    }

    fn opt(&mut self, s: &Option<String>) -> Option<Str> {
        s.as_deref().map(|s| self.get(s))
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct SlimSpec {
    address: Str,
    ports: Box<[(Str, u32)]>,
    labels: Box<[(Str, Str)]>,
    network: Option<Str>,
    locality: Option<Str>,
    weight: Option<u32>,
    service_account: Option<Str>,
}

/// An [`ActualEntry`], compact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlimEntry {
    name: Str,
    /// Sorted by key, as the maps they come from.
    labels: Box<[(Str, Str)]>,
    annotations: Box<[(Str, Str)]>,
    spec: SlimSpec,
    healthy: Option<bool>,
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
        SlimEntry {
            name: strings.get(&entry.name),
            labels: strings.pairs(&entry.labels),
            annotations: strings.pairs(&entry.annotations),
            spec: SlimSpec {
                address: strings.get(&spec.address),
                ports: spec
                    .ports
                    .iter()
                    .map(|(k, v)| (strings.get(k), *v))
                    .collect(),
                labels: strings.pairs(&spec.labels),
                network: strings.opt(&spec.network),
                locality: strings.opt(&spec.locality),
                weight: spec.weight,
                service_account: strings.opt(&spec.service_account),
            },
            healthy: entry.healthy,
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn to_actual(&self) -> ActualEntry {
        let spec = &self.spec;
        ActualEntry {
            name: self.name.to_string(),
            labels: map(&self.labels),
            annotations: map(&self.annotations),
            spec: WorkloadEntrySpec {
                address: spec.address.to_string(),
                ports: spec
                    .ports
                    .iter()
                    .map(|(k, v)| (k.to_string(), *v))
                    .collect(),
                labels: map(&spec.labels),
                network: spec.network.as_deref().map(str::to_string),
                locality: spec.locality.as_deref().map(str::to_string),
                weight: spec.weight,
                service_account: spec.service_account.as_deref().map(str::to_string),
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
            annotations: pairs(&[("meshmirror.io/instance-id", name)]),
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
        assert_eq!(slim_a.to_actual(), a);
        assert_eq!(slim_b.to_actual(), b);
        assert_eq!(slim_a.name(), "a");
        assert!(Arc::ptr_eq(&slim_a.labels[0].0, &slim_b.labels[0].0));
        assert!(Arc::ptr_eq(&slim_a.spec.address, &slim_b.spec.address));
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
        assert_eq!(kept.to_actual(), entry("kept", "api"));
        assert!(Arc::ptr_eq(&strings.get("kept"), &kept.name));
    }
}
