//! The difference between desired and actual entries: a pure function.

use std::collections::{BTreeMap, BTreeSet};

use crate::core::desired::DesiredEntry;
use crate::crd::SyncPolicy;
pub use crate::workloadentry::ActualEntry;
use crate::workloadentry::keys;

/// The instances that have entries among `actual`.
pub fn instance_ids(actual: &[ActualEntry]) -> BTreeSet<String> {
    actual
        .iter()
        .filter_map(|e| e.instance_id().map(str::to_string))
        .collect()
}

/// Whether writing `want` over `have` would change nothing meshmirror owns.
fn matches(have: &ActualEntry, want: &DesiredEntry) -> bool {
    have.annotations.get(keys::APPLIED_HASH) == Some(&want.hash)
        && have.spec == want.spec
        && subset(&want.labels, &have.labels)
        && subset(&want.annotations, &have.annotations)
}

fn subset(want: &BTreeMap<String, String>, have: &BTreeMap<String, String>) -> bool {
    want.iter().all(|(k, v)| have.get(k) == Some(v))
}

/// What one pass writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan<'a> {
    /// Borrowed from the desired state: a fleet-wide converge holds every
    /// mirror's plan at once, and copies would double it.
    pub creates: Vec<&'a DesiredEntry>,
    pub updates: Vec<&'a DesiredEntry>,
    /// Entries whose `Healthy` condition must be written (Cloud health mode).
    pub health: Vec<(String, bool)>,
    /// Names to delete, leaving instances first.
    pub deletes: Vec<String>,
    /// Deletes held back by `maxDeletesPerPass` or the `UpsertOnly` policy.
    pub deferred_deletes: usize,
}

impl Plan<'_> {
    pub fn is_empty(&self) -> bool {
        self.creates.is_empty()
            && self.updates.is_empty()
            && self.health.is_empty()
            && self.deletes.is_empty()
    }

    pub fn writes(&self) -> usize {
        self.creates.len() + self.updates.len() + self.health.len() + self.deletes.len()
    }
}

/// Limits on what a plan may delete.
#[derive(Clone, Copy, Debug)]
pub struct DeletePolicy {
    pub policy: SyncPolicy,
    pub max_per_pass: u32,
}

/// Plans the writes that turn `actual` into `desired`. `leaving` holds the ids
/// of instances on their way out; their entries are deleted first, so the
/// delete budget goes where traffic would otherwise be lost.
pub fn plan<'a>(
    desired: &'a [DesiredEntry],
    actual: &[ActualEntry],
    leaving: &BTreeSet<String>,
    deletes: DeletePolicy,
) -> Plan<'a> {
    let actual_by_name: BTreeMap<&str, &ActualEntry> =
        actual.iter().map(|a| (a.name.as_str(), a)).collect();
    let wanted: BTreeSet<&str> = desired.iter().map(|d| d.name.as_str()).collect();

    let mut out = Plan::default();
    for want in desired {
        match actual_by_name.get(want.name.as_str()) {
            None => {
                out.creates.push(want);
                if let Some(h) = want.healthy {
                    out.health.push((want.name.clone(), h));
                }
            }
            Some(have) => {
                if !matches(have, want) {
                    out.updates.push(want);
                }
                if let Some(h) = want.healthy
                    && have.healthy != Some(h)
                {
                    out.health.push((want.name.clone(), h));
                }
            }
        }
    }

    let mut stale: Vec<&ActualEntry> = actual
        .iter()
        .filter(|a| !wanted.contains(a.name.as_str()))
        .collect();
    // Leaving instances first, then by name for a stable order.
    stale.sort_by_key(|a| {
        (
            !a.instance_id().is_some_and(|id| leaving.contains(id)),
            a.name.clone(),
        )
    });
    let budget = match deletes.policy {
        SyncPolicy::UpsertOnly => 0,
        SyncPolicy::Sync => deletes.max_per_pass as usize,
    };
    out.deferred_deletes = stale.len().saturating_sub(budget);
    out.deletes = stale
        .into_iter()
        .take(budget)
        .map(|a| a.name.clone())
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workloadentry::WorkloadEntrySpec;

    fn want(name: &str, instance: &str, address: &str) -> DesiredEntry {
        let labels = BTreeMap::from([("app".to_string(), "a".to_string())]);
        let annotations = BTreeMap::from([(keys::INSTANCE_ID.to_string(), instance.to_string())]);
        DesiredEntry {
            name: name.into(),
            instance_id: instance.into(),
            workload: "w".into(),
            labels: labels.clone(),
            annotations,
            spec: WorkloadEntrySpec {
                address: address.into(),
                labels,
                ..Default::default()
            },
            healthy: None,
            hash: format!("h-{address}"),
        }
    }

    /// What the API server holds after `want` was applied, plus what istiod adds.
    fn applied(want: &DesiredEntry) -> ActualEntry {
        let mut annotations = want.annotations.clone();
        annotations.insert(keys::APPLIED_HASH.into(), want.hash.clone());
        annotations.insert("istio.io/connectedAt".into(), "2026-01-01T00:00:00Z".into());
        ActualEntry {
            name: want.name.clone(),
            labels: want.labels.clone(),
            annotations,
            spec: want.spec.clone(),
            healthy: None,
        }
    }

    fn sync(max: u32) -> DeletePolicy {
        DeletePolicy {
            policy: SyncPolicy::Sync,
            max_per_pass: max,
        }
    }

    fn names<'a>(entries: &[&'a DesiredEntry]) -> Vec<&'a str> {
        entries.iter().map(|e| e.name.as_str()).collect()
    }

    #[test]
    fn table() {
        let a = want("a", "i-a", "10.0.0.1");
        let b = want("b", "i-b", "10.0.0.2");
        let c = want("c", "i-c", "10.0.0.3");
        let mut b_moved = b.clone();
        b_moved.spec.address = "10.0.0.9".into();
        b_moved.hash = "h-moved".into();
        let mut a_tampered = applied(&a);
        a_tampered.spec.address = "10.9.9.9".into();
        let mut a_label_gone = applied(&a);
        a_label_gone.labels.clear();

        struct Case {
            name: &'static str,
            desired: Vec<DesiredEntry>,
            actual: Vec<ActualEntry>,
            creates: Vec<&'static str>,
            updates: Vec<&'static str>,
            deletes: Vec<&'static str>,
        }
        let cases = [
            Case {
                name: "empty to two",
                desired: vec![a.clone(), b.clone()],
                actual: vec![],
                creates: vec!["a", "b"],
                updates: vec![],
                deletes: vec![],
            },
            Case {
                name: "steady state writes nothing (istiod's annotations ignored)",
                desired: vec![a.clone(), b.clone()],
                actual: vec![applied(&a), applied(&b)],
                creates: vec![],
                updates: vec![],
                deletes: vec![],
            },
            Case {
                name: "scale in",
                desired: vec![a.clone()],
                actual: vec![applied(&a), applied(&b), applied(&c)],
                creates: vec![],
                updates: vec![],
                deletes: vec!["b", "c"],
            },
            Case {
                name: "changed content is updated in place",
                desired: vec![a.clone(), b_moved.clone()],
                actual: vec![applied(&a), applied(&b)],
                creates: vec![],
                updates: vec!["b"],
                deletes: vec![],
            },
            Case {
                name: "someone edited our spec",
                desired: vec![a.clone()],
                actual: vec![a_tampered],
                creates: vec![],
                updates: vec!["a"],
                deletes: vec![],
            },
            Case {
                name: "someone removed our label",
                desired: vec![a.clone()],
                actual: vec![a_label_gone],
                creates: vec![],
                updates: vec!["a"],
                deletes: vec![],
            },
            Case {
                name: "all gone",
                desired: vec![],
                actual: vec![applied(&a)],
                creates: vec![],
                updates: vec![],
                deletes: vec!["a"],
            },
        ];
        for case in cases {
            let p = plan(&case.desired, &case.actual, &BTreeSet::new(), sync(100));
            assert_eq!(names(&p.creates), case.creates, "{}", case.name);
            assert_eq!(names(&p.updates), case.updates, "{}", case.name);
            assert_eq!(p.deletes, case.deletes, "{}", case.name);
            assert_eq!(p.deferred_deletes, 0, "{}", case.name);
        }
    }

    #[test]
    fn deletes_are_bounded_and_leaving_instances_go_first() {
        let all: Vec<DesiredEntry> = (0..5)
            .map(|i| want(&format!("e{i}"), &format!("i-{i}"), &format!("10.0.0.{i}")))
            .collect();
        let actual: Vec<ActualEntry> = all.iter().map(applied).collect();
        let leaving = BTreeSet::from(["i-3".to_string()]);
        let p = plan(&[], &actual, &leaving, sync(2));
        assert_eq!(p.deletes, ["e3", "e0"]);
        assert_eq!(p.deferred_deletes, 3);
    }

    #[test]
    fn upsert_only_never_deletes() {
        let a = want("a", "i-a", "10.0.0.1");
        let b = want("b", "i-b", "10.0.0.2");
        let p = plan(
            std::slice::from_ref(&b),
            &[applied(&a)],
            &BTreeSet::new(),
            DeletePolicy {
                policy: SyncPolicy::UpsertOnly,
                max_per_pass: 100,
            },
        );
        assert_eq!(names(&p.creates), ["b"]);
        assert!(p.deletes.is_empty());
        assert_eq!(p.deferred_deletes, 1);
    }

    #[test]
    fn health_conditions_follow_the_cloud() {
        let mut a = want("a", "i-a", "10.0.0.1");
        a.healthy = Some(false);
        let mut have = applied(&a);
        have.healthy = Some(true);
        let p = plan(
            std::slice::from_ref(&a),
            &[have.clone()],
            &BTreeSet::new(),
            sync(1),
        );
        assert!(p.updates.is_empty());
        assert_eq!(p.health, [("a".to_string(), false)]);
        have.healthy = Some(false);
        assert!(plan(&[a], &[have], &BTreeSet::new(), sync(1)).is_empty());
    }

    #[test]
    fn a_plan_against_its_own_result_is_empty() {
        let desired: Vec<DesiredEntry> = (0..20)
            .map(|i| {
                want(
                    &format!("e{i:02}"),
                    &format!("i-{i}"),
                    &format!("10.0.1.{i}"),
                )
            })
            .collect();
        let p = plan(&desired, &[], &BTreeSet::new(), sync(100));
        let actual: Vec<ActualEntry> = p.creates.iter().map(|e| applied(e)).collect();
        assert!(plan(&desired, &actual, &BTreeSet::new(), sync(100)).is_empty());
    }
}

#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    use super::*;
    use crate::workloadentry::WorkloadEntrySpec;

    fn entry(i: u16, address: u8, label: u8) -> DesiredEntry {
        let labels = BTreeMap::from([("v".to_string(), label.to_string())]);
        let annotations = BTreeMap::from([(keys::INSTANCE_ID.to_string(), format!("i-{i}"))]);
        let spec = WorkloadEntrySpec {
            address: format!("10.0.0.{address}"),
            labels: labels.clone(),
            ..Default::default()
        };
        DesiredEntry {
            name: format!("e-{i}"),
            instance_id: format!("i-{i}"),
            workload: "w".into(),
            hash: format!("{address}-{label}"),
            labels,
            annotations,
            spec,
            healthy: None,
        }
    }

    /// What the API server holds after `want` was applied.
    fn stored(want: &DesiredEntry) -> ActualEntry {
        let mut annotations = want.annotations.clone();
        annotations.insert(keys::APPLIED_HASH.into(), want.hash.clone());
        ActualEntry {
            name: want.name.clone(),
            labels: want.labels.clone(),
            annotations,
            spec: want.spec.clone(),
            healthy: want.healthy,
        }
    }

    fn arb_entries() -> impl Strategy<Value = Vec<DesiredEntry>> {
        prop::collection::btree_map(0u16..200, (0u8..4, 0u8..3), 0..40)
            .prop_map(|m| m.into_iter().map(|(i, (a, l))| entry(i, a, l)).collect())
    }

    proptest! {
        /// Applying the plan to the actual state yields the desired state.
        #[test]
        fn applying_a_plan_reaches_the_desired_state(
            desired in arb_entries(),
            actual in arb_entries(),
        ) {
            let actual: Vec<ActualEntry> = actual.iter().map(stored).collect();
            let p = plan(&desired, &actual, &BTreeSet::new(), DeletePolicy {
                policy: SyncPolicy::Sync,
                max_per_pass: u32::MAX,
            });
            let mut world: BTreeMap<String, ActualEntry> =
                actual.into_iter().map(|a| (a.name.clone(), a)).collect();
            for name in &p.deletes {
                world.remove(name);
            }
            for e in p.creates.iter().chain(&p.updates) {
                world.insert(e.name.clone(), stored(e));
            }
            let want: BTreeMap<String, ActualEntry> =
                desired.iter().map(|d| (d.name.clone(), stored(d))).collect();
            prop_assert_eq!(&world, &want);
            let after: Vec<ActualEntry> = world.into_values().collect();
            let again = plan(&desired, &after, &BTreeSet::new(), DeletePolicy {
                policy: SyncPolicy::Sync,
                max_per_pass: u32::MAX,
            });
            prop_assert!(again.is_empty(), "a plan against its own result: {:?}", again);
        }
    }
}
