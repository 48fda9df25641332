//! Keeps terminate hooks alive while meshmirror drains: a hold by a hook
//! meshmirror answers, whose heartbeat timeout is known, gets a
//! `RecordLifecycleActionHeartbeat` every third of that timeout until it is
//! answered or no longer reported. The first one comes a sixth of the timeout
//! after the provider first saw the hold: that may be long after the hold
//! began (a restarted process, whose predecessor beat up to a third ago), so
//! waiting a full third could let the hold lapse. With the default timeout
//! (3600 s) and drain (20 s) no heartbeat is ever sent. Decisions are pure;
//! the provider's task sends them.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use meshmirror_provider::{GroupRef, LifecycleAction};

/// A hold no pass has reported for this long is dropped (its mirror is gone
/// or it was answered elsewhere).
const UNSEEN: Duration = Duration::from_secs(600);

#[derive(Clone, Debug)]
struct Hold {
    action: LifecycleAction,
    timeout: Duration,
    /// When the next heartbeat is due.
    next_beat: Instant,
    last_seen: Instant,
}

#[derive(Debug, Default)]
pub struct Holds {
    holds: HashMap<(String, String), Hold>,
}

impl Holds {
    /// A pass reported `action` holding an instance, by a hook with this
    /// heartbeat timeout.
    pub fn seen(&mut self, action: &LifecycleAction, timeout: Duration, now: Instant) {
        let key = (action.instance_id.clone(), action.hook.clone());
        let hold = self.holds.entry(key).or_insert_with(|| Hold {
            action: action.clone(),
            timeout,
            next_beat: now + timeout / 6,
            last_seen: now,
        });
        hold.last_seen = now;
        hold.timeout = timeout;
        if action.token.is_some() {
            hold.action.token = action.token.clone();
        }
    }

    pub fn forget(&mut self, instance_id: &str, hook: &str) {
        self.holds
            .remove(&(instance_id.to_string(), hook.to_string()));
    }

    /// Keeps only the holds of `group` by hooks in `owned` (those of other
    /// groups are untouched); returns how many were forgotten.
    pub fn retain_owned(&mut self, group: &GroupRef, owned: &BTreeSet<String>) -> usize {
        let before = self.holds.len();
        self.holds
            .retain(|_, h| &h.action.group != group || owned.contains(&h.action.hook));
        before - self.holds.len()
    }

    /// AWS refused the hold's token: heartbeats go by instance id alone.
    pub fn token_refused(&mut self, instance_id: &str, hook: &str) {
        if let Some(hold) = self
            .holds
            .get_mut(&(instance_id.to_string(), hook.to_string()))
        {
            hold.action.token = None;
        }
    }

    pub fn clear(&mut self) {
        self.holds.clear();
    }

    /// The holds due a heartbeat now; each is marked as beaten.
    pub fn due(&mut self, now: Instant) -> Vec<LifecycleAction> {
        self.holds
            .retain(|_, h| now.saturating_duration_since(h.last_seen) < UNSEEN);
        let mut out = Vec::new();
        for hold in self.holds.values_mut() {
            if now >= hold.next_beat {
                hold.next_beat = now + hold.timeout / 3;
                out.push(hold.action.clone());
            }
        }
        out.sort_by(|a, b| a.instance_id.cmp(&b.instance_id));
        out
    }

    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.holds.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use meshmirror_provider::{GroupRef, LifecycleKind};

    use super::*;

    fn group(name: &str) -> GroupRef {
        GroupRef::Aws {
            region: "r".into(),
            name: name.into(),
        }
    }

    fn action(id: &str) -> LifecycleAction {
        hold_by("g", id, "drain")
    }

    fn hold_by(group_name: &str, id: &str, hook: &str) -> LifecycleAction {
        LifecycleAction {
            group: group(group_name),
            instance_id: id.into(),
            kind: LifecycleKind::Terminate,
            hook: hook.into(),
            token: None,
        }
    }

    #[test]
    fn holds_by_hooks_no_longer_owned_get_no_more_heartbeats() {
        let mut holds = Holds::default();
        let t0 = Instant::now();
        let timeout = Duration::from_secs(30);
        holds.seen(&hold_by("g", "i-1", "drain"), timeout, t0);
        holds.seen(&hold_by("g", "i-2", "ready"), timeout, t0);
        holds.seen(&hold_by("other", "i-3", "drain"), timeout, t0);
        let owned: BTreeSet<String> = ["ready".to_string()].into();
        assert_eq!(holds.retain_owned(&group("g"), &owned), 1);
        let due: Vec<_> = holds
            .due(t0 + timeout)
            .into_iter()
            .map(|a| a.instance_id)
            .collect();
        assert_eq!(due, vec!["i-2".to_string(), "i-3".to_string()]);
        assert_eq!(holds.retain_owned(&group("g"), &BTreeSet::new()), 1);
        holds.clear();
        assert!(holds.is_empty());
    }

    #[test]
    fn a_refused_token_is_not_sent_again() {
        let mut holds = Holds::default();
        let t0 = Instant::now();
        let timeout = Duration::from_secs(30);
        let with_token = LifecycleAction {
            token: Some("t".into()),
            ..action("i-1")
        };
        holds.seen(&with_token, timeout, t0);
        assert_eq!(holds.due(t0 + timeout)[0].token.as_deref(), Some("t"));
        holds.token_refused("i-1", "drain");
        // A pass that no longer knows the token does not bring it back.
        holds.seen(&action("i-1"), timeout, t0 + timeout);
        assert_eq!(holds.due(t0 + timeout * 2)[0].token, None);
    }

    #[test]
    fn beats_every_third_of_the_timeout_until_forgotten() {
        let mut holds = Holds::default();
        let t0 = Instant::now();
        let timeout = Duration::from_secs(30);
        holds.seen(&action("i-1"), timeout, t0);
        // The first a sixth of the timeout after the hold was first seen.
        assert!(holds.due(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(holds.due(t0 + Duration::from_secs(5)), vec![action("i-1")]);
        // Then every third.
        assert!(holds.due(t0 + Duration::from_secs(14)).is_empty());
        assert_eq!(holds.due(t0 + Duration::from_secs(15)).len(), 1);
        assert!(holds.due(t0 + Duration::from_secs(24)).is_empty());
        assert_eq!(holds.due(t0 + Duration::from_secs(25)).len(), 1);
        holds.forget("i-1", "drain");
        assert!(holds.due(t0 + Duration::from_secs(100)).is_empty());
        assert!(holds.is_empty());
    }

    #[test]
    fn holds_no_pass_reports_are_dropped() {
        let mut holds = Holds::default();
        let t0 = Instant::now();
        holds.seen(&action("i-1"), Duration::from_secs(30), t0);
        assert!(holds.due(t0 + UNSEEN).is_empty());
        assert!(holds.is_empty());
    }
}
