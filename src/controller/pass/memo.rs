//! What each mirror's previous passes found, so that a round in which nothing
//! changed computes no desired state, plans nothing and writes nothing, and so
//! that a watch cache lagging behind an own status write does not cause the
//! same status to be written again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshmirror_provider::Instance;

use crate::core::lifecycle::InstanceEntries;
use crate::crd::ScalingGroupMirrorStatus;
use crate::workloadentry::GroupTemplate;

/// How long an own status write is trusted over the mirror cache's copy.
const STATUS_ECHO_WAIT: Duration = Duration::from_secs(30);

/// A pass that found nothing to write, and what its status was made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clean {
    /// The entry cache's version for the mirror when the pass read it.
    pub entries_version: u64,
    pub after: Arc<BTreeMap<String, InstanceEntries>>,
    pub deferred_deletes: usize,
    /// Members counted in status.
    pub members: usize,
    /// Members skipped (no address, duplicate address).
    pub skipped: usize,
}

/// Everything the desired state is computed from (the mirror's name and uid
/// are fixed for the memo's key). The members are kept, not the desired
/// entries: they are a fraction of the size.
#[derive(Debug)]
struct Inputs {
    generation: Option<i64>,
    members: Arc<Vec<Instance>>,
    groups: BTreeMap<String, GroupTemplate>,
}

/// One mirror's memo.
#[derive(Debug, Default)]
pub struct PassMemo {
    clean: Option<(Inputs, Clean)>,
    status: Option<(ScalingGroupMirrorStatus, Instant)>,
}

impl PassMemo {
    /// The clean pass to repeat, when neither the inputs of the desired
    /// state nor the entries (by the cache's version) changed since it.
    pub fn clean(
        &self,
        generation: Option<i64>,
        members: &[Instance],
        groups: &BTreeMap<String, GroupTemplate>,
        entries_version: Option<u64>,
    ) -> Option<Clean> {
        let version = entries_version?;
        let (inputs, clean) = self.clean.as_ref()?;
        (clean.entries_version == version
            && inputs.generation == generation
            && *inputs.members == members
            && inputs.groups == *groups)
            .then(|| clean.clone())
    }

    /// Marks a pass that found nothing to write.
    pub fn mark_clean(
        &mut self,
        generation: Option<i64>,
        members: &Arc<Vec<Instance>>,
        groups: &BTreeMap<String, GroupTemplate>,
        clean: Clean,
    ) {
        let inputs = Inputs {
            generation,
            members: members.clone(),
            groups: groups.clone(),
        };
        self.clean = Some((inputs, clean));
    }

    /// Forgets the clean mark (a pass that wrote).
    pub fn dirty(&mut self) {
        self.clean = None;
    }

    /// Records a status written.
    pub fn status_written(&mut self, status: &ScalingGroupMirrorStatus, now: Instant) {
        self.status = Some((status.clone(), now));
    }

    /// Whether `same` says of `status` that it was written recently, so that
    /// a different copy in the mirror cache is only lagging behind.
    pub fn status_recently_written(
        &self,
        now: Instant,
        same: impl Fn(&ScalingGroupMirrorStatus) -> bool,
    ) -> bool {
        self.status
            .as_ref()
            .is_some_and(|(s, at)| now.duration_since(*at) < STATUS_ECHO_WAIT && same(s))
    }

    /// The status this process wrote for the mirror within the echo wait,
    /// unless `cached` (the mirror cache's copy) was written later: the base
    /// a pass builds its status on while the cache lags behind its own write.
    pub fn status_base(
        &self,
        now: Instant,
        cached: &ScalingGroupMirrorStatus,
    ) -> Option<ScalingGroupMirrorStatus> {
        let (written, at) = self.status.as_ref()?;
        // RFC 3339 in UTC with whole seconds: the strings order as the times.
        let newer_in_cache = cached.last_sync_time > written.last_sync_time;
        (now.duration_since(*at) < STATUS_ECHO_WAIT && !newer_in_cache).then(|| written.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn members(n: u8) -> Vec<Instance> {
        (0..n)
            .map(|i| Instance::running(format!("i-{i}"), Ipv4Addr::new(10, 0, 0, i)))
            .collect()
    }

    fn clean(version: u64) -> Clean {
        Clean {
            entries_version: version,
            after: Arc::default(),
            deferred_deletes: 0,
            members: 3,
            skipped: 0,
        }
    }

    #[test]
    fn a_clean_mark_holds_only_while_inputs_and_entries_are_unchanged() {
        let mut memo = PassMemo::default();
        let none = BTreeMap::new();
        let m = Arc::new(members(3));
        assert!(memo.clean(Some(1), &m, &none, Some(7)).is_none());
        memo.mark_clean(Some(1), &m, &none, clean(7));
        assert_eq!(
            memo.clean(Some(1), &m, &none, Some(7)).map(|c| c.members),
            Some(3)
        );
        let missed = |generation, m: &[Instance], groups, version, why: &str| {
            assert!(
                memo.clean(Some(generation), m, groups, version).is_none(),
                "{why}"
            );
        };
        missed(1, &m, &none, Some(8), "entries changed");
        missed(1, &m, &none, None, "no watch cache");
        missed(2, &m, &none, Some(7), "a new generation");
        missed(1, &members(4), &none, Some(7), "a new member");
        let mut moved = members(3);
        moved[0].private_ipv4 = Some(Ipv4Addr::new(10, 9, 9, 9));
        missed(1, &moved, &none, Some(7), "an address changed");
        let groups = BTreeMap::from([("g".to_string(), GroupTemplate::default())]);
        missed(1, &m, &groups, Some(7), "a WorkloadGroup appeared");
        memo.dirty();
        assert!(memo.clean(Some(1), &m, &none, Some(7)).is_none(), "dirtied");
    }

    #[test]
    fn a_pass_builds_on_its_own_recent_status_unless_the_cache_has_a_later_one() {
        let mut memo = PassMemo::default();
        let t = Instant::now();
        let stamped = |entries: u32, at: &str| ScalingGroupMirrorStatus {
            entries,
            last_sync_time: Some(at.into()),
            ..Default::default()
        };
        let lagging = ScalingGroupMirrorStatus::default();
        assert!(
            memo.status_base(t, &lagging).is_none(),
            "nothing written yet"
        );
        memo.status_written(&stamped(2, "2026-12-04T10:00:05Z"), t);
        let base = memo.status_base(t, &lagging).unwrap();
        assert_eq!(
            base.entries, 2,
            "the cache has not caught up: the own write"
        );
        let later = stamped(5, "2026-12-04T10:00:09Z");
        assert!(memo.status_base(t, &later).is_none(), "a later copy wins");
        assert!(
            memo.status_base(t + STATUS_ECHO_WAIT, &lagging).is_none(),
            "trusted for a while only"
        );
    }

    #[test]
    fn an_own_status_write_is_trusted_for_a_while() {
        let mut memo = PassMemo::default();
        let t = Instant::now();
        let status = ScalingGroupMirrorStatus {
            entries: 3,
            ..Default::default()
        };
        assert!(!memo.status_recently_written(t, |_| true));
        memo.status_written(&status, t);
        assert!(memo.status_recently_written(t, |s| s.entries == 3));
        assert!(!memo.status_recently_written(t, |s| s.entries == 4));
        assert!(!memo.status_recently_written(t + STATUS_ECHO_WAIT, |s| s.entries == 3));
    }
}
