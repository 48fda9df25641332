//! What the provider remembers between passes, all of it rebuildable after a
//! restart: hook tokens from events (the API never shows them; completing by
//! instance id works without), spot interruption warnings (the API shows no
//! per-instance flag), which group an instance is in (EC2 events name only
//! the instance), which hooks meshmirror answers (for heartbeats), and the
//! regions of the groups it mirrors (for checking where events come from).

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use meshmirror_provider::{GroupRef, LifecycleKind};

/// Tokens older than this are dropped (AWS's longest hook timeout is 48 h;
/// an action that old was answered or expired).
const TOKEN_MEMORY: Duration = Duration::from_secs(48 * 3600);

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookNote {
    pub group: GroupRef,
    pub hook: String,
    pub token: Option<String>,
    pub kind: LifecycleKind,
    at: Instant,
}

#[derive(Debug, Default)]
pub struct Memory {
    /// By (instance id, hook name): one note per hook, so another team's
    /// hook announced on the same instance cannot hide ours.
    hooks: HashMap<(String, String), HookNote>,
    spot: HashMap<String, Instant>,
    index: HashMap<String, GroupRef>,
    by_group: HashMap<GroupRef, BTreeSet<String>>,
    owned: HashMap<GroupRef, BTreeSet<String>>,
    regions: BTreeSet<String>,
}

impl Memory {
    /// A hook announced this action (event or notification).
    pub fn hook_announced(
        &mut self,
        group: GroupRef,
        instance_id: &str,
        kind: LifecycleKind,
        hook: String,
        token: Option<String>,
        now: Instant,
    ) {
        self.hooks
            .retain(|_, note| now.saturating_duration_since(note.at) < TOKEN_MEMORY);
        self.hooks.insert(
            (instance_id.to_string(), hook.clone()),
            HookNote {
                group,
                hook,
                token,
                kind,
                at: now,
            },
        );
    }

    /// The announced action holding `instance_id` in `group` by one of
    /// `candidates` (the group's hooks for that transition, as
    /// `DescribeLifecycleHooks` lists them): a hook meshmirror answers
    /// first, else the latest. A note naming any other hook, group or
    /// transition is never used: an event does not override what the API
    /// says.
    pub fn hook_for(
        &self,
        group: &GroupRef,
        instance_id: &str,
        kind: LifecycleKind,
        candidates: &[&str],
    ) -> Option<&HookNote> {
        let owned = self.owned.get(group);
        candidates
            .iter()
            .filter_map(|hook| self.hooks.get(&(instance_id.to_string(), hook.to_string())))
            .filter(|note| &note.group == group && note.kind == kind)
            .max_by_key(|note| (owned.is_some_and(|o| o.contains(&note.hook)), note.at))
    }

    /// The action was answered: forget its token. (It does not make the
    /// hook one meshmirror answers: only `set_owned` does.)
    pub fn answered(&mut self, instance_id: &str, hook: &str) {
        self.hooks
            .remove(&(instance_id.to_string(), hook.to_string()));
    }

    /// AWS refused the token noted for this action: later calls go by
    /// instance id alone.
    pub fn token_refused(&mut self, instance_id: &str, hook: &str) {
        if let Some(note) = self
            .hooks
            .get_mut(&(instance_id.to_string(), hook.to_string()))
        {
            note.token = None;
        }
    }

    /// Exactly the hooks meshmirror answers for `group` now; none forgets
    /// the group.
    pub fn set_owned(&mut self, group: &GroupRef, hooks: BTreeSet<String>) {
        if hooks.is_empty() {
            self.owned.remove(group);
        } else if self.owned.get(group) != Some(&hooks) {
            self.owned.insert(group.clone(), hooks);
        }
    }

    /// The leadership term ended: no hook is answered until told again.
    pub fn clear_owned(&mut self) {
        self.owned.clear();
    }

    pub fn owned_hooks(&self, group: &GroupRef) -> Option<&BTreeSet<String>> {
        self.owned.get(group)
    }

    /// A mirror asked about a group in `region`.
    pub fn mirrored_region(&mut self, region: &str) {
        if !self.regions.contains(region) {
            self.regions.insert(region.to_string());
        }
    }

    /// The regions of every group a mirror has asked about in this process.
    pub fn mirrored_regions(&self) -> &BTreeSet<String> {
        &self.regions
    }

    pub fn spot_warned(&mut self, instance_id: &str, now: Instant) {
        self.spot.insert(instance_id.to_string(), now);
    }

    pub fn is_spot_warned(&self, instance_id: &str, now: Instant, memory: Duration) -> bool {
        self.spot
            .get(instance_id)
            .is_some_and(|at| now.saturating_duration_since(*at) < memory)
    }

    /// Records a pass's members of `group`, for mapping EC2 events to it.
    pub fn members_seen<'a>(
        &mut self,
        group: &GroupRef,
        ids: impl Iterator<Item = &'a str>,
        now: Instant,
        spot_memory: Duration,
    ) {
        let ids: BTreeSet<String> = ids.map(str::to_string).collect();
        if let Some(old) = self.by_group.get(group) {
            for gone in old.difference(&ids) {
                if self.index.get(gone) == Some(group) {
                    self.index.remove(gone);
                }
            }
        }
        for id in &ids {
            self.index.insert(id.clone(), group.clone());
        }
        self.by_group.insert(group.clone(), ids);
        self.spot
            .retain(|_, at| now.saturating_duration_since(*at) < spot_memory);
    }

    /// Some of a group's members, seen by a pass that asked about them only:
    /// they are indexed, and no other member is forgotten.
    pub fn some_members_seen<'a>(&mut self, group: &GroupRef, ids: impl Iterator<Item = &'a str>) {
        let known = self.by_group.entry(group.clone()).or_default();
        for id in ids {
            known.insert(id.to_string());
            self.index.insert(id.to_string(), group.clone());
        }
    }

    pub fn group_of(&self, instance_id: &str) -> Option<&GroupRef> {
        self.index.get(instance_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(name: &str) -> GroupRef {
        GroupRef::Aws {
            region: "r".into(),
            name: name.into(),
        }
    }

    const TERM: LifecycleKind = LifecycleKind::Terminate;

    fn owned(hooks: &[&str]) -> BTreeSet<String> {
        hooks.iter().map(|h| h.to_string()).collect()
    }

    #[test]
    fn tokens_are_kept_per_instance_and_hook_until_answered() {
        let mut m = Memory::default();
        let now = Instant::now();
        m.hook_announced(g("a"), "i-1", TERM, "drain".into(), Some("t".into()), now);
        let drain = ["drain"];
        assert_eq!(
            m.hook_for(&g("a"), "i-1", LifecycleKind::Launch, &drain),
            None
        );
        assert_eq!(m.hook_for(&g("b"), "i-1", TERM, &drain), None);
        assert_eq!(m.hook_for(&g("a"), "i-2", TERM, &drain), None);
        assert_eq!(m.hook_for(&g("a"), "i-1", TERM, &["other"]), None);
        let note = m.hook_for(&g("a"), "i-1", TERM, &drain).unwrap();
        assert_eq!(note.token.as_deref(), Some("t"));
        m.token_refused("i-1", "drain");
        let note = m.hook_for(&g("a"), "i-1", TERM, &drain).unwrap();
        assert_eq!(note.token, None);
        m.answered("i-1", "drain");
        assert_eq!(m.hook_for(&g("a"), "i-1", TERM, &drain), None);
    }

    #[test]
    fn another_hook_announced_on_the_same_instance_does_not_hide_ours() {
        let mut m = Memory::default();
        let t0 = Instant::now();
        m.set_owned(&g("a"), owned(&["drain"]));
        m.hook_announced(g("a"), "i-1", TERM, "drain".into(), Some("ours".into()), t0);
        // Later, another team's hook on the same transition.
        let later = t0 + Duration::from_secs(1);
        m.hook_announced(
            g("a"),
            "i-1",
            TERM,
            "theirs".into(),
            Some("t2".into()),
            later,
        );
        let both = ["drain", "theirs"];
        let note = m.hook_for(&g("a"), "i-1", TERM, &both).unwrap();
        assert_eq!(
            (note.hook.as_str(), note.token.as_deref()),
            ("drain", Some("ours"))
        );
        // Theirs is still there for whoever asks by it, and is the latest
        // when meshmirror owns neither.
        assert_eq!(
            m.hook_for(&g("a"), "i-1", TERM, &["theirs"]).unwrap().hook,
            "theirs"
        );
        m.set_owned(&g("a"), BTreeSet::new());
        assert_eq!(
            m.hook_for(&g("a"), "i-1", TERM, &both).unwrap().hook,
            "theirs"
        );
    }

    #[test]
    fn owned_hooks_are_exactly_the_last_told_and_answering_adds_none() {
        let mut m = Memory::default();
        m.answered("i-1", "drain");
        assert_eq!(m.owned_hooks(&g("a")), None, "an answer is no licence");
        m.set_owned(&g("a"), owned(&["drain", "ready"]));
        m.set_owned(&g("b"), owned(&["drain"]));
        m.set_owned(&g("a"), owned(&["ready"]));
        assert_eq!(m.owned_hooks(&g("a")), Some(&owned(&["ready"])));
        m.set_owned(&g("a"), BTreeSet::new());
        assert_eq!(m.owned_hooks(&g("a")), None);
        assert_eq!(m.owned_hooks(&g("b")), Some(&owned(&["drain"])));
        m.clear_owned();
        assert_eq!(m.owned_hooks(&g("b")), None);
    }

    #[test]
    fn the_index_follows_the_latest_pass() {
        let mut m = Memory::default();
        let now = Instant::now();
        let memory = Duration::from_secs(60);
        m.members_seen(&g("a"), ["i-1", "i-2"].into_iter(), now, memory);
        assert_eq!(m.group_of("i-2"), Some(&g("a")));
        m.members_seen(&g("a"), ["i-1"].into_iter(), now, memory);
        assert_eq!(m.group_of("i-2"), None);
        assert_eq!(m.group_of("i-1"), Some(&g("a")));
    }

    #[test]
    fn spot_warnings_are_forgotten_after_a_while() {
        let mut m = Memory::default();
        let now = Instant::now();
        let memory = Duration::from_secs(60);
        m.spot_warned("i-1", now);
        assert!(m.is_spot_warned("i-1", now, memory));
        assert!(!m.is_spot_warned("i-1", now + memory, memory));
        assert!(!m.is_spot_warned("i-2", now, memory));
    }
}
