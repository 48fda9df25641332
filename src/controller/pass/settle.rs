//! Settle, after the entry writes: from the plan and how each write ended,
//! the mirror's status, the Events, the lifecycle hooks to answer, the gauges
//! and when to look again; and what the mirror's memory keeps of this pass.
//! Pure: no I/O, and the time is passed in.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshmirror_provider::ProviderError;

use super::decide::{Ending, PassPlan, Synced};
use super::error::PassError;
use super::gather::{Facts, Gathered, Members, networks_used};
use super::memo::Clean;
use super::report::PassReport;
use super::state::{MirrorState, Seen};
use super::writes::{EntryWrites, MeshResult, WriteKind, WriteOutcome, WriteResult};
use crate::cluster::EventType;
use crate::core::desired::Skip;
use crate::core::lifecycle::{Completion, InstanceEntries};
use crate::core::redact;
use crate::crd::{Condition, ScalingGroupMirrorStatus, SyncPolicy};
use crate::workloadentry::{ActualEntry, GroupTemplate};

/// The time of the settling: for the lifecycle and backoff clocks, and for
/// status timestamps (RFC 3339, whole seconds).
#[derive(Clone, Debug)]
pub struct Clock {
    pub now: Instant,
    pub wall: String,
}

impl Clock {
    pub fn now() -> Clock {
        Clock {
            now: Instant::now(),
            wall: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        }
    }
}

/// A Kubernetes Event to record on the mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    pub kind: EventType,
    pub reason: &'static str,
    pub message: String,
}

impl Note {
    fn normal(reason: &'static str, message: String) -> Note {
        Note {
            kind: EventType::Normal,
            reason,
            message,
        }
    }

    fn warning(reason: &'static str, message: String) -> Note {
        Note {
            kind: EventType::Warning,
            reason,
            message,
        }
    }
}

/// The per-mirror gauges a pass sets (`None`: left as they are).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gauges {
    pub sync_interval: Option<Duration>,
    pub counts: Option<Counts>,
    pub degraded: Option<bool>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub members: usize,
    pub entries: usize,
    pub skipped: usize,
    pub deferred_deletes: usize,
}

/// What is left to do after the entry writes.
#[derive(Debug, Default)]
pub struct Settled {
    pub events: Vec<Note>,
    /// Hooks to answer, after `events` and before `events_after_hooks`.
    pub hooks: Vec<Completion>,
    pub events_after_hooks: Vec<Note>,
    /// The status to write, stamped; `None` when it would change nothing.
    pub status: Option<ScalingGroupMirrorStatus>,
    pub gauges: Gauges,
    /// Filled in but for what the rest of the apply stage does (status
    /// written, hooks answered).
    pub report: PassReport,
}

/// How the pass's writes ended.
#[derive(Clone, Copy, Debug)]
pub struct Written<'a> {
    pub entries: &'a [WriteResult],
    pub mesh: &'a [MeshResult],
}

/// Settles a pass.
pub fn settle(
    facts: &Facts<'_>,
    gathered: &Gathered,
    plan: &PassPlan,
    written: Written<'_>,
    state: &mut MirrorState,
    clock: &Clock,
) -> Settled {
    let results = written.entries;
    let mut out = Settled {
        report: PassReport::counting(results),
        ..Settled::default()
    };
    out.report.mesh = written.mesh.to_vec();
    if let Some(members) = &gathered.members {
        state.gone_since = match members {
            Err(ProviderError::GroupNotFound(_)) => Some(state.gone_since.unwrap_or(facts.now)),
            _ => None,
        };
    }
    if let Some(Ok(members)) = &gathered.members {
        let full_at = match (&state.seen, gathered.full_read) {
            (Some(seen), false) => seen.full_at,
            _ => facts.now,
        };
        state.seen = Some(Seen {
            full_at,
            instances: members.instances.clone(),
        });
        out.report.named_only = !gathered.full_read;
    }
    let mut status = ScalingGroupMirrorStatus {
        observed_generation: facts.mirror.metadata.generation,
        ..facts.old.clone()
    };
    if let Ok(config) = &facts.config {
        status.provider = Some(config.group.provider().into());
        status.group = Some(config.group.to_string());
        out.gauges.sync_interval = Some(config.interval);
    }
    match &plan.ending {
        Ending::Quiet { error, requeue } => {
            out.report.error = Some(error.clone());
            out.report.requeue = *requeue;
        }
        Ending::Paused { interval } => {
            set_conditions(
                &mut status,
                &facts.old,
                (
                    false,
                    "Paused",
                    "spec.paused is true: nothing is written until it is false",
                ),
                (false, "Paused", "paused"),
                &clock.wall,
            );
            out.status(facts, state, status, clock);
            out.report.requeue = *interval;
        }
        Ending::Failed { error, requeue } => out.fail(facts, state, status, error, *requeue, clock),
        Ending::Withdrawn {
            why, then, error, ..
        } => {
            let deleted = out.report.deleted;
            if deleted > 0 {
                let note = format!("deleted {deleted} WorkloadEntries: {why}");
                out.events.push(Note::normal("EntriesWithdrawn", note));
            }
            let left = plan.writes.deferred_deletes + out.report.failed_writes;
            let requeue = if left > 0 {
                Duration::from_secs(1)
            } else {
                *then
            };
            out.fail(facts, state, status, error, requeue, clock);
        }
        Ending::Synced { interval, how } => {
            if let (Some(Ok(members)), Some(Ok(groups))) = (&gathered.members, &gathered.groups) {
                let read = Read {
                    members,
                    groups,
                    version: gathered.entries_version.flatten(),
                    actual: gathered.owned.as_ref().and_then(|o| o.as_ref().ok()),
                };
                let mesh = mesh::settle(
                    &mut status,
                    &facts.old,
                    gathered.mesh.as_ref(),
                    &plan.mesh,
                    written.mesh,
                    &plan.mesh.wanted,
                    &clock.wall,
                );
                state.mesh_owned = Some(mesh.owned);
                out.events.extend(mesh.events);
                let used = networks_used(&facts.mirror.spec, groups);
                let note = networks::settle(
                    &mut status,
                    &facts.old,
                    &used,
                    gathered.networks.as_ref(),
                    &clock.wall,
                );
                out.events.extend(note);
                out.synced(
                    facts, &read, plan, results, *interval, how, state, status, clock,
                );
            }
        }
    }
    out
}

/// What a synced pass read.
struct Read<'a> {
    members: &'a Members,
    groups: &'a BTreeMap<String, GroupTemplate>,
    version: Option<u64>,
    actual: Option<&'a Vec<ActualEntry>>,
}

/// How a synced pass's entries stand after its writes.
struct Standing {
    after: Arc<BTreeMap<String, InstanceEntries>>,
    members: usize,
    skipped: usize,
    deferred_deletes: usize,
    /// How long the write backoff holds the mirror (zero: it does not).
    backoff: Duration,
}

impl Settled {
    /// Fails the pass: Ready=False, Degraded=True with the error's reason,
    /// and a Warning when that changes the conditions.
    fn fail(
        &mut self,
        facts: &Facts<'_>,
        state: &MirrorState,
        mut status: ScalingGroupMirrorStatus,
        error: &PassError,
        requeue: Duration,
        clock: &Clock,
    ) {
        // Tenants read status and Events; the log keeps the full text.
        let message = redact::for_tenants(&error.message());
        let reason = error.reason();
        set_failed(&mut status, &facts.old, reason, &message, &clock.wall);
        if status_differs(&facts.old, &status) {
            self.events.push(Note::warning(reason, message));
        }
        self.status(facts, state, status, clock);
        self.report.error = Some(error.clone());
        self.report.requeue = requeue;
    }

    /// Keeps `status` to write when it changes anything but timestamps and
    /// this process did not just write the same (the cache lagging behind).
    fn status(
        &mut self,
        facts: &Facts<'_>,
        state: &MirrorState,
        mut status: ScalingGroupMirrorStatus,
        clock: &Clock,
    ) {
        let degraded = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True");
        self.gauges.degraded = Some(degraded);
        if !status_differs(&facts.old, &status)
            || state
                .memo
                .status_recently_written(clock.now, |written| !status_differs(written, &status))
        {
            return;
        }
        status.last_sync_time = Some(clock.wall.clone());
        self.status = Some(status);
    }

    #[allow(clippy::too_many_arguments)]
    fn synced(
        &mut self,
        facts: &Facts<'_>,
        read: &Read<'_>,
        plan: &PassPlan,
        results: &[WriteResult],
        interval: Duration,
        how: &Synced,
        state: &mut MirrorState,
        mut status: ScalingGroupMirrorStatus,
        clock: &Clock,
    ) {
        let spec = &facts.mirror.spec;
        let standing = self.standing(facts, read, plan, results, how, state, clock);
        self.report.deferred_deletes = standing.deferred_deletes;
        let mut requeue = interval;
        let hooks = &read.members.hooks;
        if hooks.spec.terminate_hook.is_some() || hooks.spec.launch_hook.is_some() {
            let decisions = state.lifecycle.decide(
                clock.now,
                &hooks.spec,
                spec.health,
                spec.workloads.len(),
                &read.members.instances,
                &standing.after,
            );
            self.hooks = decisions.complete;
            if let Some(next) = decisions.next_check {
                requeue = requeue.min(next);
            }
        }
        let entries = standing.after.values().map(|e| e.present).sum::<usize>();
        status.members = standing.members as u32;
        status.entries = entries as u32;
        status.skipped = standing.skipped as u32;
        self.gauges.counts = Some(Counts {
            members: standing.members,
            entries,
            skipped: standing.skipped,
            deferred_deletes: standing.deferred_deletes,
        });
        let retry = requeue.min(standing.backoff.max(Duration::from_secs(1)));
        let report = &self.report;
        if !report.names_taken.is_empty() {
            let error = PassError::NamesTaken {
                namespace: facts.owner.namespace.clone(),
                names: report.names_taken.clone(),
            };
            let message = error.message();
            let reason = error.reason();
            set_failed(&mut status, &facts.old, reason, &message, &clock.wall);
            if !has_reason(&facts.old, "Ready", reason) {
                self.events_after_hooks.push(Note::warning(reason, message));
            }
            self.report.error = Some(error);
            // The other entry is not watched (it has no managed-by label), so
            // its removal is noticed by looking again (one GET per name),
            // after the write backoff.
            requeue = retry;
        } else if report.failed_writes > 0 {
            let error = PassError::WritesFailed {
                failed: report.failed_writes,
                of: plan.writes.len(),
            };
            let message = error.message();
            let reason = error.reason();
            set_failed(&mut status, &facts.old, reason, &message, &clock.wall);
            self.report.error = Some(error);
            requeue = retry;
        } else {
            let message = synced_message(entries, &standing, facts);
            let degraded = match &hooks.problem {
                Some(problem) => (true, "HookNotFound", problem.as_str()),
                None => (false, "AsExpected", "the cloud and the API server answer"),
            };
            set_conditions(
                &mut status,
                &facts.old,
                (true, "Synced", &message),
                degraded,
                &clock.wall,
            );
            if let Some(problem) = &hooks.problem
                && !has_reason(&facts.old, "Degraded", "HookNotFound")
            {
                self.events_after_hooks
                    .push(Note::warning("HookNotFound", problem.clone()));
            }
            if standing.deferred_deletes > 0 && spec.sync.policy == SyncPolicy::Sync {
                requeue = requeue.min(Duration::from_secs(1));
            }
        }
        self.status(facts, state, status, clock);
        self.report.requeue = requeue;
    }

    /// Where the entries stand after the writes; for a planned pass, also the
    /// write backoff, the Events about the writes and the memo.
    #[allow(clippy::too_many_arguments)]
    fn standing(
        &mut self,
        facts: &Facts<'_>,
        read: &Read<'_>,
        plan: &PassPlan,
        results: &[WriteResult],
        how: &Synced,
        state: &mut MirrorState,
        clock: &Clock,
    ) -> Standing {
        let (members, skipped, warnings) = match how {
            Synced::Unchanged(clean) => {
                return Standing {
                    after: clean.after.clone(),
                    members: clean.members,
                    skipped: clean.skipped,
                    deferred_deletes: clean.deferred_deletes,
                    backoff: Duration::ZERO,
                };
            }
            Synced::Planned {
                members,
                skipped,
                warnings,
            } => (*members, skipped, warnings),
        };
        let generation = facts.mirror.metadata.generation;
        let backoff = state
            .backoff
            .record(generation, self.report.failed_writes, clock.now);
        let r = &self.report;
        if r.created + r.deleted + r.updated > 0 {
            let note = format!(
                "created {}, updated {}, deleted {} WorkloadEntries",
                r.created, r.updated, r.deleted
            );
            self.events.push(Note::normal("EntriesSynced", note));
        }
        if let Some(note) = warnings_note(state, skipped, warnings) {
            self.events.push(note);
        }
        let actual = read.actual.map_or(&[][..], Vec::as_slice);
        let after = Arc::new(entries_after(actual, &plan.writes, results));
        let clean = Clean {
            entries_version: read.version.unwrap_or_default(),
            after: after.clone(),
            deferred_deletes: plan.writes.deferred_deletes,
            members,
            skipped: skipped.len(),
        };
        match read.version {
            Some(_) if plan.writes.is_empty() => {
                state
                    .memo
                    .mark_clean(generation, &read.members.instances, read.groups, clean)
            }
            _ => state.memo.dirty(),
        }
        Standing {
            after,
            members,
            skipped: skipped.len(),
            deferred_deletes: plan.writes.deferred_deletes,
            backoff,
        }
    }
}

fn synced_message(entries: usize, standing: &Standing, facts: &Facts<'_>) -> String {
    let mut message = format!(
        "{} entries for {} members ({} skipped)",
        entries, standing.members, standing.skipped
    );
    if standing.deferred_deletes > 0 {
        let sync = &facts.mirror.spec.sync;
        message.push_str(&format!(
            "; {} stale entries wait for the next pass ({:?} policy, maxDeletesPerPass {})",
            standing.deferred_deletes, sync.policy, sync.max_deletes_per_pass
        ));
    }
    message
}

/// A Warning for skipped instances and uncopied tags, only when their set
/// changed since the last one reported.
fn warnings_note(state: &mut MirrorState, skipped: &[Skip], warnings: &[String]) -> Option<Note> {
    let mut all: BTreeSet<String> = skipped
        .iter()
        .map(|s| format!("instance {} skipped: {}", s.instance_id, s.reason))
        .collect();
    all.extend(warnings.iter().cloned());
    if state.reported == all {
        return None;
    }
    state.reported = all.clone();
    if all.is_empty() {
        return None;
    }
    let shown: Vec<&str> = all.iter().take(5).map(String::as_str).collect();
    let more = all.len().saturating_sub(shown.len());
    let mut note = shown.join("; ");
    if more > 0 {
        note.push_str(&format!("; and {more} more"));
    }
    let reason = if skipped.is_empty() {
        "TagsNotCopied"
    } else {
        "InstancesSkipped"
    };
    Some(Note::warning(reason, note))
}

/// The entries of each instance once the successful writes landed.
fn entries_after(
    actual: &[ActualEntry],
    writes: &EntryWrites,
    results: &[WriteResult],
) -> BTreeMap<String, InstanceEntries> {
    let failed: BTreeSet<(WriteKind, &str)> = results
        .iter()
        .filter(|r| r.outcome != WriteOutcome::Done)
        .map(|r| (r.kind, r.name.as_str()))
        .collect();
    let deleted: BTreeSet<&str> = writes
        .deletes
        .iter()
        .map(String::as_str)
        .filter(|n| !failed.contains(&(WriteKind::Delete, n)))
        .collect();
    let health: BTreeMap<&str, bool> = writes
        .health
        .iter()
        .filter(|(n, _)| !failed.contains(&(WriteKind::Health, n.as_str())))
        .map(|(n, h)| (n.as_str(), *h))
        .collect();
    let mut out: BTreeMap<String, InstanceEntries> = BTreeMap::new();
    let mut count = |id: &str, healthy: bool| {
        let e = out.entry(id.to_string()).or_default();
        e.present += 1;
        if healthy {
            e.healthy += 1;
        }
    };
    for a in actual {
        if deleted.contains(a.name.as_str()) {
            continue;
        }
        if let Some(id) = a.instance_id() {
            let healthy = health
                .get(a.name.as_str())
                .copied()
                .or(a.healthy)
                .unwrap_or(false);
            count(id, healthy);
        }
    }
    for c in &writes.creates {
        if !failed.contains(&(WriteKind::Create, c.name.as_str())) {
            let healthy = health.get(c.name.as_str()).copied().unwrap_or(false);
            count(&c.instance_id, healthy);
        }
    }
    out
}

/// Sets Ready and Degraded, keeping each one's transition time when its
/// status did not change.
fn set_conditions(
    status: &mut ScalingGroupMirrorStatus,
    old: &ScalingGroupMirrorStatus,
    ready: (bool, &str, &str),
    degraded: (bool, &str, &str),
    now: &str,
) {
    // Other conditions (MeshObjects) keep what their own step set.
    let others: Vec<Condition> = std::mem::take(&mut status.conditions)
        .into_iter()
        .filter(|c| c.type_ != "Ready" && c.type_ != "Degraded")
        .collect();
    status.conditions = vec![
        condition(status, old, "Ready", ready, now),
        condition(status, old, "Degraded", degraded, now),
    ];
    status.conditions.extend(others);
}

/// A condition of `status`, keeping the transition time of the same one in
/// `old` when its status did not change.
fn condition(
    status: &ScalingGroupMirrorStatus,
    old: &ScalingGroupMirrorStatus,
    type_: &str,
    (ok, reason, message): (bool, &str, &str),
    now: &str,
) -> Condition {
    let status_str = if ok { "True" } else { "False" };
    let previous = old.conditions.iter().find(|c| c.type_ == type_);
    Condition {
        type_: type_.into(),
        status: status_str.into(),
        reason: reason.into(),
        message: message.into(),
        last_transition_time: previous
            .filter(|p| p.status == status_str)
            .map_or_else(|| now.to_string(), |p| p.last_transition_time.clone()),
        observed_generation: status.observed_generation,
    }
}

/// The status and reason of condition `type_`, for the tests.
#[cfg(test)]
fn shown<'a>(status: &'a ScalingGroupMirrorStatus, type_: &str) -> Option<(&'a str, &'a str)> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// Sets one condition other than Ready and Degraded, keeping its
/// transition time when its status did not change.
fn set_condition(
    status: &mut ScalingGroupMirrorStatus,
    old: &ScalingGroupMirrorStatus,
    type_: &str,
    shown: (bool, &str, &str),
    now: &str,
) {
    let condition = condition(status, old, type_, shown, now);
    status.conditions.retain(|c| c.type_ != type_);
    status.conditions.push(condition);
}

/// Ready=False and Degraded=True, both for `reason`.
fn set_failed(
    status: &mut ScalingGroupMirrorStatus,
    old: &ScalingGroupMirrorStatus,
    reason: &str,
    message: &str,
    now: &str,
) {
    set_conditions(
        status,
        old,
        (false, reason, message),
        (true, reason, message),
        now,
    );
}

/// Whether the status has condition `type_` with `reason`.
fn has_reason(status: &ScalingGroupMirrorStatus, type_: &str, reason: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.reason == reason)
}

/// Whether a status write would change anything but its timestamps.
fn status_differs(old: &ScalingGroupMirrorStatus, new: &ScalingGroupMirrorStatus) -> bool {
    let strip = |s: &ScalingGroupMirrorStatus| {
        let mut s = s.clone();
        s.last_sync_time = None;
        for c in &mut s.conditions {
            c.last_transition_time.clear();
        }
        s
    };
    strip(old) != strip(new)
}

mod mesh;
mod networks;
#[cfg(test)]
mod tests;
