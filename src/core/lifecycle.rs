//! When to answer the lifecycle hooks that hold instances: a terminating
//! instance's hook continues `drainSeconds` after its last entry is gone; a
//! launching instance's hook continues once its entries are written (and, with
//! Agent health, healthy), or gets the timeout answer. Times are passed in, so
//! the decisions are pure and tested without sleeping.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use meshmirror_provider::{HookDef, Instance, LifecycleAction, LifecycleKind, Outcome};

use crate::crd::{HealthMode, LaunchTimeoutOutcome, LifecycleSpec};

/// The state of one instance's entries after a pass's writes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceEntries {
    /// Entries that exist now.
    pub present: usize,
    /// How many of those have `Healthy=True`.
    pub healthy: usize,
}

/// A hook to answer now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Completion {
    pub action: LifecycleAction,
    pub outcome: Outcome,
    pub reason: &'static str,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    instance_id: String,
    hook: String,
    kind: LifecycleKind,
}

impl Key {
    fn of(action: &LifecycleAction) -> Key {
        Key {
            instance_id: action.instance_id.clone(),
            hook: action.hook.clone(),
            kind: action.kind,
        }
    }
}

/// Per-mirror memory of hooks in progress. After a restart it starts empty:
/// hooks still held are rediscovered from the provider and the drain starts
/// over, which errs on the side of draining longer.
#[derive(Debug, Default)]
pub struct LifecycleTracker {
    /// When each terminating instance was first seen with no entries left.
    drained_since: HashMap<Key, Instant>,
    /// When each launching instance was first seen.
    launching_since: HashMap<Key, Instant>,
    /// Answered hooks the provider may still report for a moment.
    answered: HashSet<Key>,
}

/// What to do now, and when to look again.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    pub complete: Vec<Completion>,
    pub next_check: Option<Duration>,
}

impl LifecycleTracker {
    /// Decides which hooks to answer. `entries` maps instance id to the state
    /// of its entries after this pass; `workloads` is how many entries a
    /// member should have.
    pub fn decide(
        &mut self,
        now: Instant,
        spec: &LifecycleSpec,
        health: HealthMode,
        workloads: usize,
        members: &[Instance],
        entries: &BTreeMap<String, InstanceEntries>,
    ) -> Decisions {
        let mut out = Decisions::default();
        let mut seen = HashSet::new();
        let wake = |d: Duration, out: &mut Decisions| {
            out.next_check = Some(out.next_check.map_or(d, |n| n.min(d)));
        };
        for instance in members {
            let Some(action) = &instance.lifecycle else {
                continue;
            };
            let ours = match action.kind {
                LifecycleKind::Terminate => spec.terminate_hook.as_deref(),
                LifecycleKind::Launch => spec.launch_hook.as_deref(),
            } == Some(action.hook.as_str());
            if !ours {
                continue;
            }
            let key = Key::of(action);
            seen.insert(key.clone());
            if self.answered.contains(&key) {
                continue;
            }
            let state = entries.get(&instance.id).cloned().unwrap_or_default();
            match action.kind {
                LifecycleKind::Terminate => {
                    if state.present > 0 {
                        // Not out of the mesh yet (deletes deferred or failed).
                        self.drained_since.remove(&key);
                        continue;
                    }
                    let since = *self.drained_since.entry(key).or_insert(now);
                    let drain = Duration::from_secs(spec.drain_seconds.into());
                    let waited = now.saturating_duration_since(since);
                    if waited >= drain {
                        out.complete.push(Completion {
                            action: action.clone(),
                            outcome: Outcome::Continue,
                            reason: "Drained",
                        });
                    } else {
                        wake(drain - waited, &mut out);
                    }
                }
                LifecycleKind::Launch => {
                    let since = *self.launching_since.entry(key).or_insert(now);
                    let written = workloads > 0 && state.present >= workloads;
                    let ready = match health {
                        HealthMode::Agent => written && state.healthy >= workloads,
                        HealthMode::None | HealthMode::Cloud => written,
                    };
                    let timeout = Duration::from_secs(spec.launch_timeout_seconds.into());
                    let waited = now.saturating_duration_since(since);
                    if ready {
                        out.complete.push(Completion {
                            action: action.clone(),
                            outcome: Outcome::Continue,
                            reason: if health == HealthMode::Agent {
                                "Healthy"
                            } else {
                                "EntriesWritten"
                            },
                        });
                    } else if waited >= timeout {
                        out.complete.push(Completion {
                            action: action.clone(),
                            outcome: match spec.on_launch_timeout {
                                LaunchTimeoutOutcome::Abandon => Outcome::Abandon,
                                LaunchTimeoutOutcome::Continue => Outcome::Continue,
                            },
                            reason: "LaunchTimeout",
                        });
                    } else {
                        // Health arrives by watch; the timeout is the backstop.
                        wake((timeout - waited).min(Duration::from_secs(5)), &mut out);
                    }
                }
            }
        }
        // Forget hooks the provider no longer reports.
        self.drained_since.retain(|k, _| seen.contains(k));
        self.launching_since.retain(|k, _| seen.contains(k));
        self.answered.retain(|k| seen.contains(k));
        out
    }

    /// Records that a hook was answered, so it is not answered twice.
    pub fn answered(&mut self, action: &LifecycleAction) {
        let key = Key::of(action);
        self.drained_since.remove(&key);
        self.launching_since.remove(&key);
        self.answered.insert(key);
    }
}

/// The hooks of a spec that meshmirror may answer: those the cloud lists on
/// the mirror's own group for the same transition. `listed` is `None` when
/// the provider has no lifecycle hooks. Returns the spec with every other
/// hook removed, and a message naming each removed one.
pub fn verified(
    spec: &LifecycleSpec,
    provider: &str,
    group: &str,
    listed: Option<&[HookDef]>,
) -> (LifecycleSpec, Option<String>) {
    let mut out = spec.clone();
    let mut problems = Vec::new();
    let named = [
        (
            &mut out.terminate_hook,
            LifecycleKind::Terminate,
            "terminateHook",
        ),
        (&mut out.launch_hook, LifecycleKind::Launch, "launchHook"),
    ];
    for (slot, kind, field) in named {
        let Some(name) = slot.as_deref() else {
            continue;
        };
        let problem = match listed {
            None => format!(
                "spec.lifecycle.{field} {name:?}: the {provider} provider has no lifecycle hooks; remove the field"
            ),
            Some(hooks) if hooks.iter().any(|h| h.name == name && h.kind == kind) => continue,
            Some(hooks) => {
                let mut have: Vec<&str> = hooks
                    .iter()
                    .filter(|h| h.kind == kind)
                    .map(|h| h.name.as_str())
                    .collect();
                have.sort_unstable();
                let have = if have.is_empty() {
                    "none".to_string()
                } else {
                    have.join(", ")
                };
                format!(
                    "spec.lifecycle.{field} {name:?} is not a {} hook of group {group} (its {} hooks: {have}); it is not answered until the group has it",
                    kind_word(kind),
                    kind_word(kind)
                )
            }
        };
        problems.push(problem);
        *slot = None;
    }
    let problem = (!problems.is_empty()).then(|| problems.join("; "));
    (out, problem)
}

fn kind_word(kind: LifecycleKind) -> &'static str {
    match kind {
        LifecycleKind::Launch => "launch",
        LifecycleKind::Terminate => "terminate",
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use meshmirror_provider::{GroupRef, InstanceState};

    use super::*;

    fn held(id: &str, kind: LifecycleKind, hook: &str) -> Instance {
        let mut i = Instance::running(id, Ipv4Addr::new(10, 0, 0, 1));
        i.state = match kind {
            LifecycleKind::Launch => InstanceState::Pending,
            LifecycleKind::Terminate => InstanceState::Terminating,
        };
        i.lifecycle = Some(LifecycleAction {
            group: GroupRef::Sim { group: "g".into() },
            instance_id: id.into(),
            kind,
            hook: hook.into(),
            token: Some("t".into()),
        });
        i
    }

    fn spec() -> LifecycleSpec {
        LifecycleSpec {
            drain_seconds: 20,
            launch_timeout_seconds: 300,
            terminate_hook: Some("term".into()),
            launch_hook: Some("launch".into()),
            ..Default::default()
        }
    }

    fn entries(id: &str, present: usize, healthy: usize) -> BTreeMap<String, InstanceEntries> {
        BTreeMap::from([(id.to_string(), InstanceEntries { present, healthy })])
    }

    #[test]
    fn terminate_waits_for_entries_then_drains() {
        let mut t = LifecycleTracker::default();
        let t0 = Instant::now();
        let members = [held("i-1", LifecycleKind::Terminate, "term")];
        let d = t.decide(
            t0,
            &spec(),
            HealthMode::None,
            1,
            &members,
            &entries("i-1", 1, 0),
        );
        assert!(d.complete.is_empty(), "entry still present");
        assert_eq!(d.next_check, None);

        let d = t.decide(t0, &spec(), HealthMode::None, 1, &members, &BTreeMap::new());
        assert!(d.complete.is_empty());
        assert_eq!(d.next_check, Some(Duration::from_secs(20)));

        let d = t.decide(
            t0 + Duration::from_secs(15),
            &spec(),
            HealthMode::None,
            1,
            &members,
            &BTreeMap::new(),
        );
        assert_eq!(d.next_check, Some(Duration::from_secs(5)));

        let d = t.decide(
            t0 + Duration::from_secs(20),
            &spec(),
            HealthMode::None,
            1,
            &members,
            &BTreeMap::new(),
        );
        assert_eq!(d.complete.len(), 1);
        assert_eq!(d.complete[0].outcome, Outcome::Continue);
        t.answered(&d.complete[0].action);
        let d = t.decide(
            t0 + Duration::from_secs(21),
            &spec(),
            HealthMode::None,
            1,
            &members,
            &BTreeMap::new(),
        );
        assert!(d.complete.is_empty(), "answered once only");
    }

    #[test]
    fn hooks_not_named_in_the_spec_are_left_alone() {
        let mut t = LifecycleTracker::default();
        let members = [
            held("i-1", LifecycleKind::Terminate, "someone-elses"),
            held("i-2", LifecycleKind::Launch, "other"),
        ];
        let d = t.decide(
            Instant::now() + Duration::from_secs(10_000),
            &spec(),
            HealthMode::None,
            1,
            &members,
            &BTreeMap::new(),
        );
        assert_eq!(d, Decisions::default());
    }

    #[test]
    fn launch_continues_once_written_or_healthy() {
        let t0 = Instant::now();
        let members = [held("i-1", LifecycleKind::Launch, "launch")];
        let mut t = LifecycleTracker::default();
        let d = t.decide(
            t0,
            &spec(),
            HealthMode::None,
            2,
            &members,
            &entries("i-1", 1, 0),
        );
        assert!(d.complete.is_empty(), "one of two entries written");
        let d = t.decide(
            t0,
            &spec(),
            HealthMode::None,
            2,
            &members,
            &entries("i-1", 2, 0),
        );
        assert_eq!(d.complete[0].reason, "EntriesWritten");

        let mut t = LifecycleTracker::default();
        let d = t.decide(
            t0,
            &spec(),
            HealthMode::Agent,
            2,
            &members,
            &entries("i-1", 2, 1),
        );
        assert!(d.complete.is_empty(), "not all healthy");
        assert_eq!(d.next_check, Some(Duration::from_secs(5)));
        let d = t.decide(
            t0,
            &spec(),
            HealthMode::Agent,
            2,
            &members,
            &entries("i-1", 2, 2),
        );
        assert_eq!(d.complete[0].outcome, Outcome::Continue);
        assert_eq!(d.complete[0].reason, "Healthy");
    }

    #[test]
    fn launch_timeout_answers_as_the_spec_says() {
        let t0 = Instant::now();
        let members = [held("i-1", LifecycleKind::Launch, "launch")];
        for (on_timeout, want) in [
            (LaunchTimeoutOutcome::Abandon, Outcome::Abandon),
            (LaunchTimeoutOutcome::Continue, Outcome::Continue),
        ] {
            let spec = LifecycleSpec {
                on_launch_timeout: on_timeout,
                ..spec()
            };
            let mut t = LifecycleTracker::default();
            let none = entries("i-1", 1, 0);
            assert!(
                t.decide(t0, &spec, HealthMode::Agent, 1, &members, &none)
                    .complete
                    .is_empty()
            );
            let d = t.decide(
                t0 + Duration::from_secs(300),
                &spec,
                HealthMode::Agent,
                1,
                &members,
                &none,
            );
            assert_eq!(d.complete[0].outcome, want);
            assert_eq!(d.complete[0].reason, "LaunchTimeout");
        }
    }

    #[test]
    fn only_hooks_the_group_has_for_that_transition_are_answered() {
        let hook = |name: &str, kind| HookDef {
            name: name.into(),
            kind,
        };
        let both = [
            hook("term", LifecycleKind::Terminate),
            hook("launch", LifecycleKind::Launch),
        ];
        let swapped = [
            hook("term", LifecycleKind::Launch),
            hook("other", LifecycleKind::Terminate),
        ];
        type Case<'a> = (
            Option<&'a [HookDef]>,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
        );
        let cases: [Case; 4] = [
            (Some(&both), Some("term"), Some("launch"), None),
            (
                Some(&swapped),
                None,
                None,
                Some(
                    "spec.lifecycle.terminateHook \"term\" is not a terminate hook of group g (its terminate hooks: other); it is not answered until the group has it; spec.lifecycle.launchHook \"launch\" is not a launch hook of group g (its launch hooks: term); it is not answered until the group has it",
                ),
            ),
            (
                Some(&[]),
                None,
                None,
                Some(
                    "spec.lifecycle.terminateHook \"term\" is not a terminate hook of group g (its terminate hooks: none); it is not answered until the group has it; spec.lifecycle.launchHook \"launch\" is not a launch hook of group g (its launch hooks: none); it is not answered until the group has it",
                ),
            ),
            (
                None,
                None,
                None,
                Some(
                    "spec.lifecycle.terminateHook \"term\": the gcp provider has no lifecycle hooks; remove the field; spec.lifecycle.launchHook \"launch\": the gcp provider has no lifecycle hooks; remove the field",
                ),
            ),
        ];
        for (listed, term, launch, problem) in cases {
            let (out, got) = verified(&spec(), "gcp", "g", listed);
            assert_eq!(out.terminate_hook.as_deref(), term, "{listed:?}");
            assert_eq!(out.launch_hook.as_deref(), launch, "{listed:?}");
            assert_eq!(got.as_deref(), problem, "{listed:?}");
            assert_eq!(out.drain_seconds, 20);
        }
        let none = LifecycleSpec::default();
        assert_eq!(verified(&none, "gcp", "g", None), (none, None));
    }
}
