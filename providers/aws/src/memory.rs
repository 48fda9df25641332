//! What the provider remembers between passes, all of it rebuildable after a
//! restart: hook tokens from events (the API never shows them; completing by
//! instance id works without), spot interruption warnings (the API shows no
//! per-instance flag), which group an instance is in (EC2 events name only
//! the instance), and which hooks meshmirror answers (for heartbeats).

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
    hooks: HashMap<(String, LifecycleKind), HookNote>,
    spot: HashMap<String, Instant>,
    index: HashMap<String, GroupRef>,
    by_group: HashMap<GroupRef, BTreeSet<String>>,
    owned: HashMap<GroupRef, BTreeSet<String>>,
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
            (instance_id.to_string(), kind),
            HookNote {
                group,
                hook,
                token,
                kind,
                at: now,
            },
        );
    }

    /// The announced action holding `instance_id`, if one is known.
    pub fn hook_for(
        &self,
        group: &GroupRef,
        instance_id: &str,
        kind: LifecycleKind,
    ) -> Option<&HookNote> {
        self.hooks
            .get(&(instance_id.to_string(), kind))
            .filter(|note| &note.group == group)
    }

    /// The action was answered: forget its token, and remember the hook as
    /// one meshmirror answers.
    pub fn answered(
        &mut self,
        group: &GroupRef,
        instance_id: &str,
        kind: LifecycleKind,
        hook: &str,
    ) {
        self.hooks.remove(&(instance_id.to_string(), kind));
        self.own(group, hook);
    }

    /// Remembers `hook` as one meshmirror answers for `group`.
    pub fn own(&mut self, group: &GroupRef, hook: &str) {
        if self.owned.get(group).is_some_and(|o| o.contains(hook)) {
            return;
        }
        self.owned
            .entry(group.clone())
            .or_default()
            .insert(hook.to_string());
    }

    pub fn owned_hooks(&self, group: &GroupRef) -> Option<&BTreeSet<String>> {
        self.owned.get(group)
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

    #[test]
    fn tokens_are_kept_per_instance_and_kind_until_answered() {
        let mut m = Memory::default();
        let now = Instant::now();
        m.hook_announced(
            g("a"),
            "i-1",
            LifecycleKind::Terminate,
            "drain".into(),
            Some("t".into()),
            now,
        );
        assert_eq!(m.hook_for(&g("a"), "i-1", LifecycleKind::Launch), None);
        assert_eq!(m.hook_for(&g("b"), "i-1", LifecycleKind::Terminate), None);
        let note = m
            .hook_for(&g("a"), "i-1", LifecycleKind::Terminate)
            .unwrap();
        assert_eq!(note.token.as_deref(), Some("t"));
        assert_eq!(m.owned_hooks(&g("a")), None);
        m.answered(&g("a"), "i-1", LifecycleKind::Terminate, "drain");
        assert_eq!(m.hook_for(&g("a"), "i-1", LifecycleKind::Terminate), None);
        assert!(m.owned_hooks(&g("a")).unwrap().contains("drain"));
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
