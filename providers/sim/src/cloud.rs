//! The in-memory cloud: groups of instances, their lifecycle hooks and injected
//! failures, and the API that tests and the demo drive it with.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use meshmirror_provider::{
    BoxEventStream, GroupEventKind, GroupRef, Health, HookDef, Instance, InstanceState,
    LifecycleAction, LifecycleKind, Outcome, ProviderError,
};

use crate::events::EventHub;
use crate::{SimError, SimFile, SimInstance};

/// The hook name on every termination action the sim issues.
pub const TERMINATION_HOOK: &str = "sim-termination";
/// The hook name on every launch action the sim issues.
pub const LAUNCH_HOOK: &str = "sim-launch";

/// A handle to an in-memory cloud; clones share the same cloud.
#[derive(Clone, Default)]
pub struct SimCloud {
    pub(crate) inner: Arc<Mutex<State>>,
}

impl fmt::Debug for SimCloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let groups: Vec<String> = self.lock().groups.keys().cloned().collect();
        f.debug_struct("SimCloud").field("groups", &groups).finish()
    }
}

#[derive(Default)]
pub(crate) struct State {
    pub(crate) groups: BTreeMap<String, Group>,
    /// Drives generated ids and addresses; only grows, so ids are never reused.
    serial: u64,
    tokens: u64,
    /// Whether groups created from now on get a termination hook.
    default_termination_hook: bool,
    pub(crate) completed: Vec<(LifecycleAction, Outcome, Instant)>,
    pub(crate) members_calls: u64,
    /// Sim-file edits the file watcher read and refused.
    pub(crate) file_edits_refused: u64,
    pub(crate) hub: EventHub,
}

/// Ids and private addresses taken by members.
struct InUse {
    ids: std::collections::HashSet<String>,
    addresses: std::collections::HashSet<Ipv4Addr>,
}

pub(crate) struct Group {
    pub(crate) region: String,
    /// Oldest first: scale-in takes from the back.
    pub(crate) members: Vec<Member>,
    termination_hook: bool,
    launch_hook: bool,
    pub(crate) fail_next: VecDeque<ProviderError>,
    pub(crate) fail_always: Option<ProviderError>,
    pub(crate) fail_next_completions: VecDeque<ProviderError>,
    pub(crate) members_calls: u64,
    /// How long a `members` call takes before it reads the group.
    pub(crate) members_delay: std::time::Duration,
    /// `members` calls that ran to the end (not cancelled by the caller).
    pub(crate) members_answered: u64,
}

pub(crate) struct Member {
    pub(crate) inst: SimInstance,
    pub(crate) lifecycle: Option<LifecycleAction>,
}

/// Events gathered during one change, emitted once the change is complete.
pub(crate) type Events = Vec<(String, GroupEventKind)>;

impl Group {
    /// The hooks this group has, as a cloud would list them.
    pub(crate) fn hooks(&self) -> Vec<HookDef> {
        let mut hooks = Vec::new();
        if self.termination_hook {
            hooks.push(HookDef {
                name: TERMINATION_HOOK.to_string(),
                kind: LifecycleKind::Terminate,
            });
        }
        if self.launch_hook {
            hooks.push(HookDef {
                name: LAUNCH_HOOK.to_string(),
                kind: LifecycleKind::Launch,
            });
        }
        hooks
    }

    fn new(region: String, termination_hook: bool) -> Self {
        Group {
            region,
            members: Vec::new(),
            termination_hook,
            launch_hook: false,
            fail_next: VecDeque::new(),
            fail_always: None,
            fail_next_completions: VecDeque::new(),
            members_delay: std::time::Duration::ZERO,
            members_answered: 0,
            members_calls: 0,
        }
    }

    fn member_mut(&mut self, group: &str, id: &str) -> Result<&mut Member, SimError> {
        self.members
            .iter_mut()
            .find(|m| m.inst.id == id)
            .ok_or_else(|| SimError::NoInstance {
                group: group.to_string(),
                id: id.to_string(),
            })
    }

    pub(crate) fn instances(&self) -> Vec<Instance> {
        self.members
            .iter()
            .map(|m| m.to_instance(&self.region))
            .collect()
    }
}

impl Member {
    pub(crate) fn held_for_termination(&self) -> bool {
        matches!(&self.lifecycle, Some(a) if a.kind == LifecycleKind::Terminate)
    }

    fn to_instance(&self, region: &str) -> Instance {
        let inst = &self.inst;
        Instance {
            id: inst.id.clone(),
            private_ipv4: inst.private_ipv4,
            public_ipv4: inst.public_ipv4,
            ipv6: inst.ipv6,
            region: Some(region.to_string()),
            zone: inst.zone.clone(),
            state: inst.state,
            health: inst.health,
            tags: inst.tags.clone(),
            lifecycle: self.lifecycle.clone(),
        }
    }
}

/// The event a state change deserves.
fn state_event(id: &str, state: InstanceState) -> GroupEventKind {
    let instance_id = id.to_string();
    match state {
        InstanceState::Terminating => GroupEventKind::Terminating { instance_id },
        InstanceState::Stopped => GroupEventKind::Interrupted { instance_id },
        InstanceState::Pending | InstanceState::Running => GroupEventKind::Changed,
    }
}

impl State {
    pub(crate) fn group(&self, name: &str) -> Result<&Group, SimError> {
        self.groups
            .get(name)
            .ok_or_else(|| SimError::NoGroup(name.to_string()))
    }

    pub(crate) fn group_mut(&mut self, name: &str) -> Result<&mut Group, SimError> {
        self.groups
            .get_mut(name)
            .ok_or_else(|| SimError::NoGroup(name.to_string()))
    }

    fn next_token(&mut self) -> String {
        self.tokens += 1;
        format!("00000000-0000-4000-8000-{:012x}", self.tokens)
    }

    fn id_taken(&self, id: &str) -> bool {
        self.groups
            .values()
            .any(|g| g.members.iter().any(|m| m.inst.id == id))
    }

    /// The ids and private addresses of every member, for [`State::generate`].
    fn in_use(&self) -> InUse {
        let members = self.groups.values().flat_map(|g| &g.members);
        InUse {
            ids: members.clone().map(|m| m.inst.id.clone()).collect(),
            addresses: members.filter_map(|m| m.inst.private_ipv4).collect(),
        }
    }

    /// `in_use` (from [`State::in_use`]) learns each instance generated, so
    /// a scale-out of many costs one pass over the members, not one each.
    fn generate(&mut self, region: &str, in_use: &mut InUse) -> SimInstance {
        loop {
            self.serial += 1;
            let n = self.serial;
            let id = format!("i-{n:04}");
            // 10.0.0.1 to 10.0.255.250, then 10.1.0.1: 16 million addresses.
            let private = Ipv4Addr::new(
                10,
                ((n - 1) / (250 * 256) % 256) as u8,
                ((n - 1) / 250 % 256) as u8,
                ((n - 1) % 250 + 1) as u8,
            );
            if in_use.ids.contains(&id) || in_use.addresses.contains(&private) {
                continue;
            }
            in_use.ids.insert(id.clone());
            in_use.addresses.insert(private);
            let ipv6 = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, (n >> 16) as u16, n as u16);
            let zone = format!("{region}{}", ['a', 'b', 'c'][((n - 1) % 3) as usize]);
            return SimInstance::running(id, private)
                .with_ipv6(ipv6)
                .with_zone(zone);
        }
    }

    fn create_group(&mut self, name: &str, region: &str, events: &mut Events) {
        let group = Group::new(region.to_string(), self.default_termination_hook);
        self.groups.insert(name.to_string(), group);
        events.push((name.to_string(), GroupEventKind::Changed));
    }

    /// Terminates a member: through the termination hook when the group has one
    /// (Terminating, held until completed), else at once.
    pub(crate) fn terminate_member(
        &mut self,
        group: &str,
        id: &str,
        events: &mut Events,
    ) -> Result<(), SimError> {
        let g = self.group_mut(group)?;
        let hook = g.termination_hook;
        if g.member_mut(group, id)?.held_for_termination() {
            return Ok(());
        }
        let instance_id = id.to_string();
        if hook {
            let token = self.next_token();
            let member = self.group_mut(group)?.member_mut(group, id)?;
            member.inst.state = InstanceState::Terminating;
            member.lifecycle = Some(LifecycleAction {
                group: GroupRef::Sim {
                    group: group.to_string(),
                },
                instance_id: instance_id.clone(),
                kind: LifecycleKind::Terminate,
                hook: TERMINATION_HOOK.to_string(),
                token: Some(token),
            });
            events.push((
                group.to_string(),
                GroupEventKind::Terminating { instance_id },
            ));
        } else {
            self.group_mut(group)?.members.retain(|m| m.inst.id != id);
            events.push((
                group.to_string(),
                GroupEventKind::Terminated { instance_id },
            ));
        }
        Ok(())
    }

    /// Makes the cloud what the file says: groups and instances added, changed and
    /// removed; removed instances go through the termination hook like a scale-in.
    /// Hooks and injected failures of groups that stay are kept.
    pub(crate) fn apply_file(
        &mut self,
        file: SimFile,
        events: &mut Events,
    ) -> Result<(), SimError> {
        let gone: Vec<String> = self
            .groups
            .keys()
            .filter(|name| !file.groups.contains_key(*name))
            .cloned()
            .collect();
        for name in gone {
            self.groups.remove(&name);
            events.push((name, GroupEventKind::Changed));
        }
        for (name, wanted) in file.groups {
            match self.groups.get_mut(&name) {
                None => self.create_group(&name, &wanted.region, events),
                Some(g) if g.region != wanted.region => {
                    g.region = wanted.region.clone();
                    events.push((name.clone(), GroupEventKind::Changed));
                }
                Some(_) => {}
            }
            let keep: HashSet<String> = wanted.instances.iter().map(|i| i.id.clone()).collect();
            let g = self.group_mut(&name)?;
            for inst in wanted.instances {
                let Some(member) = g.members.iter_mut().find(|m| m.inst.id == inst.id) else {
                    let instance_id = inst.id.clone();
                    g.members.push(Member {
                        inst,
                        lifecycle: None,
                    });
                    events.push((name.clone(), GroupEventKind::Launched { instance_id }));
                    continue;
                };
                // A cloud cannot revive an instance it is terminating.
                if member.held_for_termination() || member.inst == inst {
                    continue;
                }
                let kind = if member.inst.state == inst.state {
                    GroupEventKind::Changed
                } else {
                    state_event(&inst.id, inst.state)
                };
                if inst.state != InstanceState::Pending {
                    member.lifecycle = None;
                }
                member.inst = inst;
                events.push((name.clone(), kind));
            }
            let dropped: Vec<String> = g
                .members
                .iter()
                .filter(|m| !keep.contains(&m.inst.id) && !m.held_for_termination())
                .map(|m| m.inst.id.clone())
                .collect();
            for id in dropped {
                self.terminate_member(&name, &id, events)?;
            }
        }
        Ok(())
    }
}

impl SimCloud {
    /// An empty cloud.
    pub fn new() -> Self {
        SimCloud::default()
    }

    /// A cloud holding what the sim file says (format: the crate's README).
    pub fn from_yaml(text: &str) -> Result<SimCloud, SimError> {
        let cloud = SimCloud::new();
        cloud.replace_from_yaml(text)?;
        Ok(cloud)
    }

    /// Makes the cloud what the sim file says, emitting an event for each change.
    /// On error nothing changes.
    pub fn replace_from_yaml(&self, text: &str) -> Result<(), SimError> {
        let file = SimFile::parse(text)?;
        self.change(|st, events| st.apply_file(file, events))
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock must not take the others down.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one change under the lock, then emits the events it gathered; a
    /// subscriber that reacts can only see the state after the change.
    pub(crate) fn change<T>(
        &self,
        f: impl FnOnce(&mut State, &mut Events) -> Result<T, SimError>,
    ) -> Result<T, SimError> {
        let mut st = self.lock();
        let mut events = Events::new();
        let result = f(&mut st, &mut events);
        for (group, kind) in events {
            st.hub.emit(&group, kind);
        }
        result
    }

    /// Creates the group if it is missing, or moves it to `region`.
    pub fn ensure_group(&self, name: &str, region: &str) {
        let _ = self.change(|st, events| {
            match st.groups.get_mut(name) {
                None => st.create_group(name, region, events),
                Some(g) if g.region != region => {
                    g.region = region.to_string();
                    events.push((name.to_string(), GroupEventKind::Changed));
                }
                Some(_) => {}
            }
            Ok(())
        });
    }

    /// Deletes the group and everything in it, hooks or not.
    pub fn remove_group(&self, name: &str) -> Result<(), SimError> {
        self.change(|st, events| {
            st.groups
                .remove(name)
                .ok_or_else(|| SimError::NoGroup(name.to_string()))?;
            events.push((name.to_string(), GroupEventKind::Changed));
            Ok(())
        })
    }

    /// Names of every group, sorted.
    pub fn group_names(&self) -> Vec<String> {
        self.lock().groups.keys().cloned().collect()
    }

    /// Adds an instance as given (no launch hook). Ids are unique across the cloud.
    pub fn add_instance(&self, group: &str, instance: SimInstance) -> Result<(), SimError> {
        self.change(|st, events| {
            st.group(group)?;
            if st.id_taken(&instance.id) {
                return Err(SimError::InstanceExists {
                    group: group.to_string(),
                    id: instance.id,
                });
            }
            let instance_id = instance.id.clone();
            st.group_mut(group)?.members.push(Member {
                inst: instance,
                lifecycle: None,
            });
            events.push((group.to_string(), GroupEventKind::Launched { instance_id }));
            Ok(())
        })
    }

    /// Launches `n` instances with generated ids and addresses (see
    /// the README); with a launch hook they stay Pending until it is completed.
    /// Returns the new ids.
    pub fn scale_out(&self, group: &str, n: usize) -> Result<Vec<String>, SimError> {
        self.change(|st, events| {
            let region = st.group(group)?.region.clone();
            let launch_hook = st.group(group)?.launch_hook;
            let mut ids = Vec::with_capacity(n);
            let mut in_use = st.in_use();
            for _ in 0..n {
                let mut inst = st.generate(&region, &mut in_use);
                let lifecycle = if launch_hook {
                    inst.state = InstanceState::Pending;
                    Some(LifecycleAction {
                        group: GroupRef::Sim {
                            group: group.to_string(),
                        },
                        instance_id: inst.id.clone(),
                        kind: LifecycleKind::Launch,
                        hook: LAUNCH_HOOK.to_string(),
                        token: Some(st.next_token()),
                    })
                } else {
                    None
                };
                ids.push(inst.id.clone());
                events.push((
                    group.to_string(),
                    GroupEventKind::Launched {
                        instance_id: inst.id.clone(),
                    },
                ));
                st.group_mut(group)?
                    .members
                    .push(Member { inst, lifecycle });
            }
            Ok(ids)
        })
    }

    /// Terminates up to `n` instances, newest first, skipping those already
    /// terminating. With the termination hook they stay Terminating (holding a
    /// [`LifecycleAction`]) until it is completed; without, they vanish at once.
    /// Returns the ids chosen.
    pub fn scale_in(&self, group: &str, n: usize) -> Result<Vec<String>, SimError> {
        self.change(|st, events| {
            let ids: Vec<String> = st
                .group(group)?
                .members
                .iter()
                .rev()
                .filter(|m| m.inst.state != InstanceState::Terminating)
                .take(n)
                .map(|m| m.inst.id.clone())
                .collect();
            for id in &ids {
                st.terminate_member(group, id, events)?;
            }
            Ok(ids)
        })
    }

    /// Terminates one instance as a scale-in would (through the hook if any).
    pub fn terminate(&self, group: &str, id: &str) -> Result<(), SimError> {
        self.change(|st, events| st.terminate_member(group, id, events))
    }

    /// Makes an instance vanish at once, bypassing any hook.
    pub fn remove_instance(&self, group: &str, id: &str) -> Result<(), SimError> {
        self.change(|st, events| {
            let g = st.group_mut(group)?;
            g.member_mut(group, id)?;
            g.members.retain(|m| m.inst.id != id);
            events.push((
                group.to_string(),
                GroupEventKind::Terminated {
                    instance_id: id.to_string(),
                },
            ));
            Ok(())
        })
    }

    /// Sets the state as is (no hook is started). A lifecycle action that no longer
    /// fits the state is dropped. Events: Terminating → `Terminating`, Stopped →
    /// `Interrupted`, otherwise `Changed`; none when nothing changes.
    pub fn set_state(&self, group: &str, id: &str, state: InstanceState) -> Result<(), SimError> {
        self.change(|st, events| {
            let member = st.group_mut(group)?.member_mut(group, id)?;
            if member.inst.state == state {
                return Ok(());
            }
            member.inst.state = state;
            let still_fits = match member.lifecycle.as_ref().map(|a| a.kind) {
                Some(LifecycleKind::Launch) => state == InstanceState::Pending,
                Some(LifecycleKind::Terminate) => state == InstanceState::Terminating,
                None => true,
            };
            if !still_fits {
                member.lifecycle = None;
            }
            events.push((group.to_string(), state_event(id, state)));
            Ok(())
        })
    }

    /// Sets the cloud's view of an instance's health (event `Changed`).
    pub fn set_health(&self, group: &str, id: &str, health: Health) -> Result<(), SimError> {
        self.change(|st, events| {
            let member = st.group_mut(group)?.member_mut(group, id)?;
            if member.inst.health != health {
                member.inst.health = health;
                events.push((group.to_string(), GroupEventKind::Changed));
            }
            Ok(())
        })
    }

    /// Replaces an instance's tags (event `Changed`).
    pub fn set_tags(
        &self,
        group: &str,
        id: &str,
        tags: BTreeMap<String, String>,
    ) -> Result<(), SimError> {
        self.change(|st, events| {
            let member = st.group_mut(group)?.member_mut(group, id)?;
            if member.inst.tags != tags {
                member.inst.tags = tags;
                events.push((group.to_string(), GroupEventKind::Changed));
            }
            Ok(())
        })
    }

    /// Turns the group's pre-termination hook on or off. Instances already held
    /// stay held until completed.
    pub fn set_termination_hook(&self, group: &str, on: bool) -> Result<(), SimError> {
        self.change(|st, _| {
            st.group_mut(group)?.termination_hook = on;
            Ok(())
        })
    }

    /// Whether groups created from now on (by `ensure_group` or a sim file) get a
    /// termination hook; off by default. Lets a file-driven cloud show the hook.
    pub fn set_default_termination_hook(&self, on: bool) {
        self.lock().default_termination_hook = on;
    }

    /// Turns the group's launch hook on or off: while on, `scale_out` launches
    /// instances Pending, held by a `sim-launch` action until completed
    /// (Continue → Running, Abandon → terminated).
    pub fn set_launch_hook(&self, group: &str, on: bool) -> Result<(), SimError> {
        self.change(|st, _| {
            st.group_mut(group)?.launch_hook = on;
            Ok(())
        })
    }

    /// The next `n` `members()` calls for the group return `error` (added to any
    /// already queued). Queued failures come before `fail_always`.
    pub fn fail_next(&self, group: &str, n: usize, error: ProviderError) -> Result<(), SimError> {
        self.change(|st, _| {
            let g = st.group_mut(group)?;
            g.fail_next.extend(std::iter::repeat_n(error, n));
            Ok(())
        })
    }

    /// Every `members()` call for the group returns `error` until set to `None`.
    pub fn fail_always(&self, group: &str, error: Option<ProviderError>) -> Result<(), SimError> {
        self.change(|st, _| {
            st.group_mut(group)?.fail_always = error;
            Ok(())
        })
    }

    /// The next `n` `complete_lifecycle` calls for the group return `error`, and
    /// leave the instance held.
    pub fn fail_next_completions(
        &self,
        group: &str,
        n: usize,
        error: ProviderError,
    ) -> Result<(), SimError> {
        self.change(|st, _| {
            let g = st.group_mut(group)?;
            g.fail_next_completions
                .extend(std::iter::repeat_n(error, n));
            Ok(())
        })
    }

    /// Pushes an arbitrary event (e.g. `Interrupted`, `Advisory`), changing nothing.
    pub fn push_event(&self, group: &str, kind: GroupEventKind) {
        self.lock().hub.emit(group, kind);
    }

    /// Every lifecycle action completed so far, with its outcome and when.
    pub fn completed_actions(&self) -> Vec<(LifecycleAction, Outcome, Instant)> {
        self.lock().completed.clone()
    }

    /// Lifecycle actions waiting to be completed, in every group.
    pub fn pending_actions(&self) -> Vec<LifecycleAction> {
        self.lock()
            .groups
            .values()
            .flat_map(|g| g.members.iter().filter_map(|m| m.lifecycle.clone()))
            .collect()
    }

    /// How many times `members()` was called, for any group (failures included).
    pub fn members_calls(&self) -> u64 {
        self.lock().members_calls
    }

    /// How many edits of a watched sim file were read and refused (the state
    /// kept), so a test knows a bad edit was seen without waiting a while.
    pub fn file_edits_refused(&self) -> u64 {
        self.lock().file_edits_refused
    }

    /// How many times `members()` was called for this group.
    /// Makes every `members` call for the group take `delay` (a slow cloud);
    /// the call reads the group once the delay is over.
    pub fn delay_members(&self, group: &str, delay: std::time::Duration) -> Result<(), SimError> {
        self.lock().group_mut(group)?.members_delay = delay;
        Ok(())
    }

    /// How many `members` calls for the group ran to the end; a call whose
    /// caller dropped it during the delay is counted in `members_calls_for`
    /// only.
    pub fn members_answered_for(&self, group: &str) -> Result<u64, SimError> {
        Ok(self.lock().group(group)?.members_answered)
    }

    pub fn members_calls_for(&self, group: &str) -> Result<u64, SimError> {
        Ok(self.lock().group(group)?.members_calls)
    }

    /// The group's members as `members()` would report them, without counting as a
    /// call and without injected failures.
    pub fn instances(&self, group: &str) -> Result<Vec<Instance>, SimError> {
        Ok(self.lock().group(group)?.instances())
    }

    /// Events pushed so far (each counted once, whatever the number of subscribers).
    pub fn events_emitted(&self) -> u64 {
        self.lock().hub.emitted()
    }

    /// Events whose [`meshmirror_provider::Ack`] the consumer has acknowledged.
    pub fn events_acked(&self) -> u64 {
        self.lock().hub.acked()
    }

    /// A new subscription to the event feed, from now on.
    pub fn subscribe(&self) -> BoxEventStream {
        self.lock().hub.subscribe()
    }
}
