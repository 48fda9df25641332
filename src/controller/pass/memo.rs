//! What each mirror's previous passes found, so that a round in which nothing
//! changed computes no desired state, plans nothing and writes nothing, and so
//! that a watch cache lagging behind an own status write does not cause the
//! same status to be written again.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshmirror_provider::Instance;

use crate::crd::ScalingGroupMirrorStatus;
use crate::lifecycle::InstanceEntries;
use crate::workloadentry::GroupTemplate;

/// How long an own status write is trusted over the mirror cache's copy.
const STATUS_ECHO_WAIT: Duration = Duration::from_secs(30);

/// A pass that found nothing to write, and what its status was made of.
#[derive(Clone, Debug)]
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
struct Inputs {
    generation: Option<i64>,
    members: Vec<Instance>,
    groups: BTreeMap<String, GroupTemplate>,
}

#[derive(Default)]
struct Memo {
    clean: Option<(Inputs, Clean)>,
    status: Option<(ScalingGroupMirrorStatus, Instant)>,
}

/// Per mirror (by uid).
#[derive(Default)]
pub struct PassMemo {
    mirrors: Mutex<HashMap<String, Memo>>,
}

impl PassMemo {
    /// The clean pass to repeat, when neither the inputs of the desired
    /// state nor the entries (by the cache's version) changed since it.
    pub fn clean(
        &self,
        uid: &str,
        generation: Option<i64>,
        members: &[Instance],
        groups: &BTreeMap<String, GroupTemplate>,
        entries_version: Option<u64>,
    ) -> Option<Clean> {
        let version = entries_version?;
        let mirrors = self.mirrors.lock().ok()?;
        let (inputs, clean) = mirrors.get(uid)?.clean.as_ref()?;
        (clean.entries_version == version
            && inputs.generation == generation
            && inputs.members == members
            && inputs.groups == *groups)
            .then(|| clean.clone())
    }

    /// Marks a pass that found nothing to write.
    pub fn mark_clean(
        &self,
        uid: &str,
        generation: Option<i64>,
        members: &[Instance],
        groups: &BTreeMap<String, GroupTemplate>,
        clean: Clean,
    ) {
        if let Ok(mut mirrors) = self.mirrors.lock() {
            let inputs = Inputs {
                generation,
                members: members.to_vec(),
                groups: groups.clone(),
            };
            mirrors.entry(uid.to_string()).or_default().clean = Some((inputs, clean));
        }
    }

    /// Forgets the clean mark (a pass that wrote, or failed).
    pub fn dirty(&self, uid: &str) {
        if let Ok(mut mirrors) = self.mirrors.lock()
            && let Some(memo) = mirrors.get_mut(uid)
        {
            memo.clean = None;
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

    /// The status this process wrote for the mirror within the echo wait,
    /// unless `cached` (the mirror cache's copy) was written later: the base
    /// a pass builds its status on while the cache lags behind its own write.
    pub fn status_base(
        &self,
        uid: &str,
        now: Instant,
        cached: &ScalingGroupMirrorStatus,
    ) -> Option<ScalingGroupMirrorStatus> {
        let mirrors = self.mirrors.lock().ok()?;
        let (written, at) = mirrors.get(uid)?.status.as_ref()?;
        // RFC 3339 in UTC with whole seconds: the strings order as the times.
        let newer_in_cache = cached.last_sync_time > written.last_sync_time;
        (now.duration_since(*at) < STATUS_ECHO_WAIT && !newer_in_cache).then(|| written.clone())
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
        let memo = PassMemo::default();
        let none = BTreeMap::new();
        let m = members(3);
        assert!(memo.clean("u", Some(1), &m, &none, Some(7)).is_none());
        memo.mark_clean("u", Some(1), &m, &none, clean(7));
        assert_eq!(
            memo.clean("u", Some(1), &m, &none, Some(7))
                .map(|c| c.members),
            Some(3)
        );
        let missed = |generation, m: &[Instance], groups, version, why: &str| {
            assert!(
                memo.clean("u", Some(generation), m, groups, version)
                    .is_none(),
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
        assert!(memo.clean("other", Some(1), &m, &none, Some(7)).is_none());
        memo.dirty("u");
        missed(1, &m, &none, Some(7), "dirtied");
    }

    #[test]
    fn a_pass_builds_on_its_own_recent_status_unless_the_cache_has_a_later_one() {
        let memo = PassMemo::default();
        let t = Instant::now();
        let stamped = |entries: u32, at: &str| ScalingGroupMirrorStatus {
            entries,
            last_sync_time: Some(at.into()),
            ..Default::default()
        };
        let lagging = ScalingGroupMirrorStatus::default();
        assert!(
            memo.status_base("u", t, &lagging).is_none(),
            "nothing written yet"
        );
        memo.status_written("u", &stamped(2, "2026-12-04T10:00:05Z"), t);
        let base = memo.status_base("u", t, &lagging).unwrap();
        assert_eq!(
            base.entries, 2,
            "the cache has not caught up: the own write"
        );
        let later = stamped(5, "2026-12-04T10:00:09Z");
        assert!(
            memo.status_base("u", t, &later).is_none(),
            "a later copy wins"
        );
        assert!(
            memo.status_base("u", t + STATUS_ECHO_WAIT, &lagging)
                .is_none(),
            "trusted for a while only"
        );
        assert!(memo.status_base("other", t, &lagging).is_none());
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
