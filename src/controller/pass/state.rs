//! What passes remember of each mirror between them, in one place: hooks in
//! progress, the warnings last reported, since when the cloud has said the
//! group is gone, the write backoff, and the memo. Forgetting a mirror is one
//! remove.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshmirror_provider::Instance;

use super::backoff::WriteBackoff;
use super::memo::PassMemo;
use crate::core::lifecycle::LifecycleTracker;
use crate::core::mesh::MeshKinds;
use crate::core::ownership::Owner;

/// How many cloud advisories wait for a mirror's next pass; older ones are
/// dropped (each is only a note, and a burst must not grow memory).
const MAX_ADVISORIES: usize = 20;
/// How many instances events may name before a pass; past this, asking
/// about each costs more than reading the group.
pub const MAX_NAMED: usize = 500;

/// One mirror's memory.
#[derive(Debug)]
pub struct MirrorState {
    pub lifecycle: LifecycleTracker,
    /// Warnings last reported, so an unchanged problem does not write an
    /// Event every pass.
    pub reported: BTreeSet<String>,
    /// Since when the cloud has said the group is gone.
    pub gone_since: Option<Instant>,
    pub backoff: WriteBackoff,
    pub memo: PassMemo,
    /// The kinds of mesh object the mirror owned after its last pass that
    /// got that far; None until then (every kind is listed once, so that
    /// objects of an option since turned off are found and deleted).
    pub mesh_owned: Option<MeshKinds>,
    /// The members as last read, and when the whole group was last read:
    /// a pass that cloud events trigger asks about the named instances only
    /// and takes the others from here, while this is younger than the
    /// mirror's interval.
    pub seen: Option<Seen>,
}

/// The group's members as the last passes read them.
#[derive(Clone, Debug)]
pub struct Seen {
    /// When every member was last read from the cloud.
    pub full_at: Instant,
    /// Sorted by id.
    pub instances: Arc<Vec<Instance>>,
}

impl MirrorState {
    pub fn new(first_backoff: Duration) -> Self {
        MirrorState {
            lifecycle: LifecycleTracker::default(),
            reported: BTreeSet::new(),
            gone_since: None,
            backoff: WriteBackoff::starting_at(first_backoff),
            memo: PassMemo::default(),
            mesh_owned: None,
            seen: None,
        }
    }

    /// How long the cloud has said the group is gone, at `now`.
    pub fn gone_for(&self, now: Instant) -> Duration {
        self.gone_since
            .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
    }
}

/// A mirror's memory, and the cloud advisories and instance ids waiting
/// for its next pass.
#[derive(Debug)]
pub struct Slot {
    uid: String,
    /// Held for a whole pass: passes of one mirror never overlap.
    pub state: tokio::sync::Mutex<MirrorState>,
    advisories: Mutex<Vec<String>>,
    /// Instances cloud events named since the last pass; None once more
    /// than [`MAX_NAMED`] were (the next pass reads the whole group).
    named: Mutex<Option<BTreeSet<String>>>,
}

impl Slot {
    /// The advisories noted since the last call.
    pub fn take_advisories(&self) -> Vec<String> {
        self.advisories
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default()
    }

    /// The instances named since the last call; empty when none were, or
    /// too many (either way the pass reads the whole group).
    pub fn take_named(&self) -> BTreeSet<String> {
        self.named
            .lock()
            .map(|mut n| n.replace(BTreeSet::new()).unwrap_or_default())
            .unwrap_or_default()
    }
}

/// Every mirror's memory, by namespace and name. A mirror deleted and created
/// again under the same name (a new uid) starts afresh.
#[derive(Debug)]
pub struct MirrorStates {
    first_backoff: Duration,
    slots: Mutex<HashMap<(String, String), Arc<Slot>>>,
}

impl MirrorStates {
    pub fn new(first_backoff: Duration) -> Self {
        MirrorStates {
            first_backoff,
            slots: Mutex::default(),
        }
    }

    /// The slot of `owner`, new when there is none or it was another uid's.
    pub fn slot(&self, owner: &Owner) -> Arc<Slot> {
        let Ok(mut slots) = self.slots.lock() else {
            return self.fresh(owner);
        };
        let key = (owner.namespace.clone(), owner.name.clone());
        match slots.get(&key) {
            Some(slot) if slot.uid == owner.uid => slot.clone(),
            _ => {
                let slot = self.fresh(owner);
                slots.insert(key, slot.clone());
                slot
            }
        }
    }

    fn fresh(&self, owner: &Owner) -> Arc<Slot> {
        Arc::new(Slot {
            uid: owner.uid.clone(),
            state: tokio::sync::Mutex::new(MirrorState::new(self.first_backoff)),
            advisories: Mutex::default(),
            named: Mutex::new(Some(BTreeSet::new())),
        })
    }

    /// Keeps a cloud advisory for the mirror's next pass to record.
    pub fn note_advisory(&self, owner: &Owner, note: String) {
        let Some(slot) = self.slot_for_note(owner) else {
            return;
        };
        if let Ok(mut advisories) = slot.advisories.lock() {
            if advisories.len() >= MAX_ADVISORIES {
                advisories.remove(0);
            }
            advisories.push(note);
        }
    }

    /// Keeps an instance a cloud event named for the mirror's next pass.
    pub fn note_instance(&self, owner: &Owner, instance_id: &str) {
        let Some(slot) = self.slot_for_note(owner) else {
            return;
        };
        if let Ok(mut named) = slot.named.lock()
            && let Some(ids) = named.as_mut()
        {
            ids.insert(instance_id.to_string());
            if ids.len() > MAX_NAMED {
                *named = None;
            }
        }
    }

    /// The slot a note for `owner` goes to. A note for a uid other than the
    /// remembered one (a mirror cache that still holds a deleted mirror's
    /// copy) has none: it must not replace the live mirror's memory.
    fn slot_for_note(&self, owner: &Owner) -> Option<Arc<Slot>> {
        let mut slots = self.slots.lock().ok()?;
        let key = (owner.namespace.clone(), owner.name.clone());
        match slots.get(&key) {
            Some(slot) if slot.uid != owner.uid => None,
            Some(slot) => Some(slot.clone()),
            None => {
                let slot = self.fresh(owner);
                slots.insert(key, slot.clone());
                Some(slot)
            }
        }
    }

    /// Forgets a mirror.
    pub fn forget(&self, namespace: &str, name: &str) {
        if let Ok(mut slots) = self.slots.lock() {
            slots.remove(&(namespace.to_string(), name.to_string()));
        }
    }

    /// How many mirrors are remembered (tests).
    pub fn len(&self) -> usize {
        self.slots.lock().map_or(0, |s| s.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str) -> Owner {
        Owner {
            namespace: "team-a".into(),
            name: "web".into(),
            uid: uid.into(),
        }
    }

    #[tokio::test]
    async fn a_mirror_created_again_starts_afresh_and_forgetting_is_one_remove() {
        let states = MirrorStates::new(Duration::from_secs(1));
        let t = Instant::now();
        states.slot(&owner("u1")).state.lock().await.gone_since = Some(t);
        assert_eq!(
            states.slot(&owner("u1")).state.lock().await.gone_since,
            Some(t)
        );
        assert_eq!(
            states.slot(&owner("u2")).state.lock().await.gone_since,
            None,
            "a new uid under the same name"
        );
        assert_eq!(states.len(), 1);
        states.forget("team-a", "web");
        assert!(states.is_empty());
    }

    #[test]
    fn advisories_wait_for_the_pass_and_stay_bounded() {
        let states = MirrorStates::new(Duration::from_secs(1));
        for i in 0..(MAX_ADVISORIES + 5) {
            states.note_advisory(&owner("u1"), format!("note {i}"));
        }
        let notes = states.slot(&owner("u1")).take_advisories();
        assert_eq!(notes.len(), MAX_ADVISORIES);
        assert_eq!(notes[0], "note 5", "the oldest are dropped");
        assert!(states.slot(&owner("u1")).take_advisories().is_empty());
    }

    #[tokio::test]
    async fn a_stale_copys_advisory_leaves_the_live_mirrors_memory_alone() {
        let states = MirrorStates::new(Duration::from_secs(1));
        let t = Instant::now();
        states.slot(&owner("u2")).state.lock().await.gone_since = Some(t);
        states.note_advisory(&owner("u1"), "for the deleted mirror".into());
        let live = states.slot(&owner("u2"));
        assert_eq!(live.state.lock().await.gone_since, Some(t));
        assert!(live.take_advisories().is_empty());
    }
}
