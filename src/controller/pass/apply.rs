//! Apply: makes the writes a pass decided, and nothing else. Entry writes run
//! bounded in parallel; hooks are answered only while this replica holds the
//! fence; what each write did is recorded for `settle`.

use std::collections::BTreeSet;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use meshmirror_provider::{LifecycleKind, Outcome};

use super::decide::Ending;
use super::report::PassReport;
use super::settle::{Clock, Gauges, Note, Settled};
use super::state::MirrorState;
use super::writes::{EntryWrites, MeshResult, WriteKind, WriteOutcome, WriteResult};
use crate::cluster::{Cluster, ClusterError, EventType};
use crate::core::desired::DesiredEntry;
use crate::core::lifecycle::Completion;
use crate::core::mesh::{MeshKind, MeshWrites};
use crate::core::ownership::Owner;
use crate::fence::Fence;
use crate::metrics::{EntryOpLabels, LifecycleLabels, Metrics, mirror_labels};
use crate::providers::Providers;

/// How many entry writes one pass keeps in flight.
const WRITE_CONCURRENCY: usize = 16;

/// Where a pass writes.
#[derive(Clone, Copy)]
pub struct Sinks<'a> {
    pub cluster: &'a dyn Cluster,
    pub providers: &'a Providers,
    pub metrics: &'a Metrics,
    pub fence: &'a Fence,
}

/// One entry write.
enum Op<'a> {
    Create(&'a DesiredEntry),
    Update(&'a DesiredEntry),
    Health(&'a str, bool),
    Delete(&'a str),
}

/// Makes the entry writes: creates, updates and deletes, then the health of
/// entries that exist (it goes through their status subresource).
pub async fn writes(to: Sinks<'_>, owner: &Owner, writes: &EntryWrites) -> Vec<WriteResult> {
    let ops: Vec<Op<'_>> = (writes.creates.iter().map(Op::Create))
        .chain(writes.updates.iter().map(Op::Update))
        .chain(writes.deletes.iter().map(|n| Op::Delete(n)))
        .collect();
    let mut results = bounded(to.cluster, owner, ops).await;
    let failed_creates: BTreeSet<&str> = results
        .iter()
        .filter(|r| r.kind == WriteKind::Create && r.outcome != WriteOutcome::Done)
        .map(|r| r.name.as_str())
        .collect();
    let health: Vec<Op<'_>> = writes
        .health
        .iter()
        .filter(|(name, _)| !failed_creates.contains(name.as_str()))
        .map(|(name, healthy)| Op::Health(name, *healthy))
        .collect();
    results.extend(bounded(to.cluster, owner, health).await);
    for done in results.iter().filter(|r| r.outcome == WriteOutcome::Done) {
        to.metrics
            .entry_writes
            .get_or_create(&EntryOpLabels {
                namespace: owner.namespace.clone(),
                mirror: owner.name.clone(),
                op: done.kind.as_str().into(),
            })
            .inc();
    }
    results
}

/// Makes the mesh object writes, one at a time (a mirror has a few):
/// creates and updates, then deletes.
pub async fn mesh_writes(
    cluster: &dyn Cluster,
    owner: &Owner,
    writes: &MeshWrites,
) -> Vec<MeshResult> {
    let mut results = Vec::with_capacity(writes.len());
    let upserts = (writes.creates.iter().map(|o| (WriteKind::Create, o)))
        .chain(writes.updates.iter().map(|o| (WriteKind::Update, o)));
    for (op, object) in upserts {
        let result = match op {
            WriteKind::Create => cluster.create_mesh(owner, object).await,
            _ => cluster.apply_mesh(owner, object).await,
        };
        results.push(mesh_result(owner, op, object.kind, &object.name, result));
    }
    for object in &writes.deletes {
        let result = cluster.delete_mesh(owner, object).await;
        results.push(mesh_result(
            owner,
            WriteKind::Delete,
            object.kind,
            &object.name,
            result,
        ));
    }
    results
}

fn mesh_result(
    owner: &Owner,
    op: WriteKind,
    kind: MeshKind,
    name: &str,
    result: Result<(), ClusterError>,
) -> MeshResult {
    let outcome = match &result {
        Ok(()) => WriteOutcome::Done,
        Err(ClusterError::NameTaken { .. }) => WriteOutcome::NameTaken,
        Err(_) => WriteOutcome::Failed,
    };
    if let Err(err) = &result {
        tracing::warn!(namespace = %owner.namespace, mirror = %owner.name, kind = kind.kind(), name, op = op.as_str(), %err, "mesh object write failed");
    }
    MeshResult {
        op,
        kind,
        name: name.to_string(),
        outcome,
    }
}

/// Runs the writes with at most [`WRITE_CONCURRENCY`] in flight.
async fn bounded(cluster: &dyn Cluster, owner: &Owner, ops: Vec<Op<'_>>) -> Vec<WriteResult> {
    let mut in_flight = FuturesUnordered::new();
    let mut ops = ops.into_iter();
    let mut results = Vec::new();
    loop {
        while in_flight.len() < WRITE_CONCURRENCY {
            match ops.next() {
                Some(op) => in_flight.push(write(cluster, owner, op)),
                None => break,
            }
        }
        match in_flight.next().await {
            Some(result) => results.push(result),
            None => return results,
        }
    }
}

async fn write(cluster: &dyn Cluster, owner: &Owner, op: Op<'_>) -> WriteResult {
    let (kind, name, result) = match op {
        Op::Create(entry) => (
            WriteKind::Create,
            entry.name.clone(),
            cluster.create_entry(owner, entry).await,
        ),
        Op::Update(entry) => (
            WriteKind::Update,
            entry.name.clone(),
            cluster.apply_entry(owner, entry).await,
        ),
        Op::Health(name, healthy) => (
            WriteKind::Health,
            name.to_string(),
            cluster.set_entry_health(owner, name, healthy).await,
        ),
        Op::Delete(name) => (
            WriteKind::Delete,
            name.to_string(),
            cluster.delete_entry(owner, name).await,
        ),
    };
    let outcome = match &result {
        Ok(()) => WriteOutcome::Done,
        Err(ClusterError::NameTaken { .. }) => WriteOutcome::NameTaken,
        Err(_) => WriteOutcome::Failed,
    };
    if let Err(err) = &result {
        tracing::warn!(namespace = %owner.namespace, mirror = %owner.name, entry = %name, op = kind.as_str(), %err, "write failed");
    }
    WriteResult {
        kind,
        name,
        outcome,
    }
}

/// Records the pass's Events, answers its hooks, sets its gauges and writes
/// its status; returns the pass's report.
pub async fn finish(
    to: Sinks<'_>,
    owner: &Owner,
    settled: Settled,
    advisories: Vec<String>,
    state: &mut MirrorState,
) -> PassReport {
    let Settled {
        events,
        hooks,
        events_after_hooks,
        status,
        gauges,
        mut report,
    } = settled;
    for note in advisories {
        let note = Note {
            kind: EventType::Normal,
            reason: "CloudAdvisory",
            message: note,
        };
        record(to, owner, &note).await;
    }
    for note in &events {
        record(to, owner, note).await;
    }
    report.hooks_answered = answer_hooks(to, owner, hooks, state).await;
    for note in &events_after_hooks {
        record(to, owner, note).await;
    }
    set_gauges(to.metrics, owner, &gauges);
    if let Some(status) = status {
        let clock = Clock::now();
        match to.cluster.write_status(owner, &status).await {
            Ok(()) => {
                state.memo.status_written(&status, clock.now);
                report.status_written = true;
            }
            Err(err) => {
                tracing::warn!(namespace = %owner.namespace, mirror = %owner.name, %err, "could not write status")
            }
        }
    }
    report
}

async fn record(to: Sinks<'_>, owner: &Owner, note: &Note) {
    to.cluster
        .event(owner, note.kind, note.reason, &note.message)
        .await;
}

/// Answers the hooks; returns how many were answered.
async fn answer_hooks(
    to: Sinks<'_>,
    owner: &Owner,
    hooks: Vec<Completion>,
    state: &mut MirrorState,
) -> usize {
    let mut answered = 0;
    for completion in hooks {
        let action = &completion.action;
        if !to.fence.holds() {
            // The lease was lost during this pass: the next leader answers.
            tracing::info!(namespace = %owner.namespace, mirror = %owner.name, instance = %action.instance_id, hook = %action.hook,
                "not the leader any more; hook left for the next leader");
            break;
        }
        let result = match to.providers.get(&action.group) {
            Ok(provider) => {
                provider
                    .complete_lifecycle(action, completion.outcome)
                    .await
            }
            Err(err) => Err(err),
        };
        let kind = match action.kind {
            LifecycleKind::Launch => "launch",
            LifecycleKind::Terminate => "terminate",
        };
        let outcome = match completion.outcome {
            Outcome::Continue => "continue",
            Outcome::Abandon => "abandon",
        };
        let labels = |result: &str| LifecycleLabels {
            kind: kind.into(),
            result: result.into(),
        };
        match result {
            Ok(()) => {
                answered += 1;
                state.lifecycle.answered(action);
                to.metrics
                    .lifecycle_actions
                    .get_or_create(&labels(outcome))
                    .inc();
                tracing::info!(namespace = %owner.namespace, mirror = %owner.name, instance = %action.instance_id, hook = %action.hook, kind, outcome,
                    reason = completion.reason, "lifecycle hook answered");
                let message = format!(
                    "{kind} hook {} of instance {} answered {} ({})",
                    action.hook,
                    action.instance_id,
                    outcome.to_uppercase(),
                    completion.reason
                );
                let note = Note {
                    kind: EventType::Normal,
                    reason: "LifecycleActionCompleted",
                    message,
                };
                record(to, owner, &note).await;
            }
            Err(err) => {
                to.metrics
                    .lifecycle_actions
                    .get_or_create(&labels("error"))
                    .inc();
                tracing::warn!(namespace = %owner.namespace, mirror = %owner.name, instance = %action.instance_id, hook = %action.hook, %err,
                    "could not answer lifecycle hook; retrying");
            }
        }
    }
    answered
}

fn set_gauges(metrics: &Metrics, owner: &Owner, gauges: &Gauges) {
    let labels = mirror_labels(&owner.namespace, &owner.name);
    if let Some(interval) = gauges.sync_interval {
        metrics
            .sync_interval
            .get_or_create(&labels)
            .set(interval.as_secs_f64());
    }
    if let Some(c) = &gauges.counts {
        metrics.members.get_or_create(&labels).set(c.members as i64);
        metrics.entries.get_or_create(&labels).set(c.entries as i64);
        metrics.skipped.get_or_create(&labels).set(c.skipped as i64);
        metrics
            .deferred_deletes
            .get_or_create(&labels)
            .set(c.deferred_deletes as i64);
    }
    if let Some(degraded) = gauges.degraded {
        metrics
            .degraded
            .get_or_create(&labels)
            .set(i64::from(degraded));
    }
}

/// Logs what the pass did to the entries and why it failed, in full (status
/// and Events carry the text redacted for tenants). Each line names the
/// mirror in its own fields, for log queries that do not read spans.
pub fn log(owner: &Owner, ending: &Ending, writes: &EntryWrites, report: &PassReport) {
    let (namespace, mirror) = (owner.namespace.as_str(), owner.name.as_str());
    match ending {
        Ending::Withdrawn {
            why, list_error, ..
        } => {
            if let Some(err) = list_error {
                tracing::warn!(namespace, mirror, %err, "could not list the entries of a denied group");
            }
            if report.deleted > 0 {
                tracing::info!(
                    namespace,
                    mirror,
                    deleted = report.deleted,
                    deferred = writes.deferred_deletes,
                    why = why.as_str(),
                    "entries withdrawn"
                );
            }
        }
        Ending::Synced { .. } if report.created + report.updated + report.deleted > 0 => {
            tracing::info!(
                namespace,
                mirror,
                created = report.created,
                updated = report.updated,
                deleted = report.deleted,
                deferred = writes.deferred_deletes,
                "entries synced"
            );
        }
        _ => {}
    }
    if let Ending::Failed { error, .. } | Ending::Withdrawn { error, .. } = ending {
        tracing::warn!(namespace, mirror, reason = error.reason(), message = %error.message(),
            "pass failed");
    }
}
