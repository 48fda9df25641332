//! What each mirror's previous passes found, so that a round in which nothing
//! changed computes no desired state, plans nothing and writes nothing, and so
//! that a watch cache lagging behind an own status write does not cause the
//! same status to be written again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshmirror_provider::Instance;

use crate::crd::ScalingGroupMirrorStatus;
use crate::desired::Desired;
use crate::lifecycle::InstanceEntries;
use crate::workloadentry::GroupTemplate;

/// How long an own status write is trusted over the mirror cache's copy.
const STATUS_ECHO_WAIT: Duration = Duration::from_secs(30);

/// Entries per instance after a pass, as lifecycle decisions read them.
pub type EntriesAfter = BTreeMap<String, InstanceEntries>;

/// A pass that found nothing to write.
#[derive(Clone)]
pub struct Clean {
    /// The entry cache's version for the mirror when the pass read it.
    pub entries_version: u64,
    pub after: Arc<EntriesAfter>,
    pub deferred_deletes: usize,
}

/// Everything `desired` is computed from (the mirror's name and uid are
/// fixed for the memo's key).
struct Inputs {
    generation: Option<i64>,
    members: Vec<Instance>,
    groups: BTreeMap<String, GroupTemplate>,
}

#[derive(Default)]
struct Memo {
    desired: Option<(Inputs, Arc<Desired>)>,
    clean: Option<Clean>,
    status: Option<(ScalingGroupMirrorStatus, Instant)>,
}

/// Per mirror (by uid).
#[derive(Default)]
pub struct PassMemo {
    mirrors: Mutex<HashMap<String, Memo>>,
}

impl PassMemo {
    /// The desired state for these inputs: the previous one when they did
    /// not change, else `compute()`'s (which forgets the clean mark).
    pub fn desired(
        &self,
        uid: &str,
        generation: Option<i64>,
        members: &[Instance],
        groups: &BTreeMap<String, GroupTemplate>,
        compute: impl FnOnce() -> Desired,
    ) -> Arc<Desired> {
        if let Ok(mirrors) = self.mirrors.lock()
            && let Some((inputs, desired)) = mirrors.get(uid).and_then(|m| m.desired.as_ref())
            && inputs.generation == generation
            && inputs.members == members
            && inputs.groups == *groups
        {
            return desired.clone();
        }
        let desired = Arc::new(compute());
        if let Ok(mut mirrors) = self.mirrors.lock() {
            let memo = mirrors.entry(uid.to_string()).or_default();
            memo.desired = Some((
                Inputs {
                    generation,
                    members: members.to_vec(),
                    groups: groups.clone(),
                },
                desired.clone(),
            ));
            memo.clean = None;
        }
        desired
    }

    /// The clean pass to repeat, when neither the desired state (`desired`
    /// must be the memo's own) nor the entries changed since it.
    pub fn clean(
        &self,
        uid: &str,
        desired: &Arc<Desired>,
        entries_version: Option<u64>,
    ) -> Option<Clean> {
        let version = entries_version?;
        let mirrors = self.mirrors.lock().ok()?;
        let memo = mirrors.get(uid)?;
        let (_, current) = memo.desired.as_ref()?;
        memo.clean
            .as_ref()
            .filter(|c| c.entries_version == version && Arc::ptr_eq(current, desired))
            .cloned()
    }

    /// Marks a pass against `desired` that found nothing to write.
    pub fn mark_clean(&self, uid: &str, desired: &Arc<Desired>, clean: Clean) {
        if let Ok(mut mirrors) = self.mirrors.lock()
            && let Some(memo) = mirrors.get_mut(uid)
            && memo
                .desired
                .as_ref()
                .is_some_and(|(_, d)| Arc::ptr_eq(d, desired))
        {
            memo.clean = Some(clean);
        }
    }

    /// Records a status written.
    pub fn status_written(&self, uid: &str, status: &ScalingGroupMirrorStatus, now: Instant) {
        if let Ok(mut mirrors) = self.mirrors.lock() {
            mirrors.entry(uid.to_string()).or_default().status = Some((status.clone(), now));
        }
    }

    /// Whether `same` says of `status` that it was written recently, so that
    /// a different copy in the mirror cache is only lagging behind.
    pub fn status_recently_written(
        &self,
        uid: &str,
        now: Instant,
        same: impl Fn(&ScalingGroupMirrorStatus) -> bool,
    ) -> bool {
        self.mirrors.lock().is_ok_and(|mirrors| {
            mirrors
                .get(uid)
                .and_then(|m| m.status.as_ref())
                .is_some_and(|(s, at)| now.duration_since(*at) < STATUS_ECHO_WAIT && same(s))
        })
    }

    pub fn forget(&self, uid: &str) {
        if let Ok(mut mirrors) = self.mirrors.lock() {
            mirrors.remove(uid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::net::Ipv4Addr;

    fn members(n: u8) -> Vec<Instance> {
        (0..n)
            .map(|i| Instance::running(format!("i-{i}"), Ipv4Addr::new(10, 0, 0, i)))
            .collect()
    }

    fn computed(
        memo: &PassMemo,
        generation: i64,
        m: &[Instance],
        calls: &Cell<u32>,
    ) -> Arc<Desired> {
        memo.desired("u", Some(generation), m, &BTreeMap::new(), || {
            calls.set(calls.get() + 1);
            Desired {
                members: m.len(),
                ..Desired::default()
            }
        })
    }

    fn clean(version: u64) -> Clean {
        Clean {
            entries_version: version,
            after: Arc::default(),
            deferred_deletes: 0,
        }
    }

    #[test]
    fn desired_is_computed_again_only_when_an_input_changed() {
        let memo = PassMemo::default();
        let calls = Cell::new(0);
        let a = computed(&memo, 1, &members(3), &calls);
        let b = computed(&memo, 1, &members(3), &calls);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(calls.get(), 1);
        computed(&memo, 2, &members(3), &calls);
        assert_eq!(calls.get(), 2, "a new generation");
        computed(&memo, 2, &members(4), &calls);
        assert_eq!(calls.get(), 3, "a new member");
        let mut moved = members(4);
        moved[0].private_ipv4 = Some(Ipv4Addr::new(10, 9, 9, 9));
        computed(&memo, 2, &moved, &calls);
        assert_eq!(calls.get(), 4, "a member's address changed");
        let groups = BTreeMap::from([("g".to_string(), GroupTemplate::default())]);
        memo.desired("u", Some(2), &moved, &groups, Desired::default);
        let c = Cell::new(0);
        memo.desired("u", Some(2), &moved, &groups, || {
            c.set(1);
            Desired::default()
        });
        assert_eq!(c.get(), 0, "same WorkloadGroups");
    }

    #[test]
    fn a_clean_mark_holds_only_for_its_desired_state_and_entries_version() {
        let memo = PassMemo::default();
        let calls = Cell::new(0);
        let d = computed(&memo, 1, &members(2), &calls);
        assert!(memo.clean("u", &d, Some(7)).is_none());
        memo.mark_clean("u", &d, clean(7));
        assert!(memo.clean("u", &d, Some(7)).is_some());
        assert!(memo.clean("u", &d, Some(8)).is_none(), "entries changed");
        assert!(memo.clean("u", &d, None).is_none(), "no watch cache");
        let d2 = computed(&memo, 1, &members(3), &calls);
        assert!(memo.clean("u", &d2, Some(7)).is_none(), "desired changed");
        memo.mark_clean("u", &d, clean(9));
        assert!(
            memo.clean("u", &d2, Some(9)).is_none(),
            "a stale desired state cannot mark clean"
        );
    }

    #[test]
    fn an_own_status_write_is_trusted_for_a_while() {
        let memo = PassMemo::default();
        let t = Instant::now();
        let status = ScalingGroupMirrorStatus {
            entries: 3,
            ..Default::default()
        };
        assert!(!memo.status_recently_written("u", t, |_| true));
        memo.status_written("u", &status, t);
        assert!(memo.status_recently_written("u", t, |s| s.entries == 3));
        assert!(!memo.status_recently_written("u", t, |s| s.entries == 4));
        assert!(!memo.status_recently_written("u", t + STATUS_ECHO_WAIT, |s| s.entries == 3));
        memo.forget("u");
        assert!(!memo.status_recently_written("u", t, |_| true));
    }
}
