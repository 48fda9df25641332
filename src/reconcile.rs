//! One reconcile pass of one mirror: members from the provider, desired entries
//! (pure), plan against owned entries (pure), apply only the plan, answer
//! lifecycle hooks, write status only when it changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use meshmirror_provider::{LifecycleKind, Outcome, ProviderError};

use crate::claims::Claim;
use crate::cluster::{Cluster, ClusterError, EventType, Owner};
use crate::config::{self, MirrorConfig};
use crate::crd::{Condition, ScalingGroupMirror, ScalingGroupMirrorStatus};
use crate::desired::{self, Desired, DesiredEntry, Mirror};
use crate::fence::Fence;
use crate::lifecycle::{InstanceEntries, LifecycleTracker};
use crate::metrics::{EntryOpLabels, LifecycleLabels, Metrics, PassLabels, mirror_labels};
use crate::pass_memo::{Clean, PassMemo};
use crate::plan::{self, ActualEntry, DeletePolicy, Plan};
use crate::policy::AllowedGroups;
use crate::providers::Providers;
use crate::write_backoff::WriteBackoff;

/// How many entry writes one pass keeps in flight.
const WRITE_CONCURRENCY: usize = 16;
/// How long an invalid spec waits before it is looked at again (edits
/// trigger a pass at once anyway).
const INVALID_SPEC_RECHECK: Duration = Duration::from_secs(300);
/// How long a group the cloud says is gone keeps its entries
/// (`--group-gone-grace`): clouds reuse addresses, so entries of a deleted
/// group must not stay forever, but a group deleted and created again, or a
/// cloud's passing mistake, must not empty the mesh at once.
pub const DEFAULT_GROUP_GONE_GRACE: Duration = Duration::from_secs(600);

/// What a pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PassReport {
    pub created: usize,
    pub updated: usize,
    pub deleted: usize,
    pub health_written: usize,
    pub deferred_deletes: usize,
    pub failed_writes: usize,
    pub hooks_answered: usize,
    pub status_written: bool,
    /// Why the pass failed (provider error, invalid spec, ...), if it did.
    pub error: Option<String>,
    /// Writes that failed, as (operation, entry name).
    pub failed_names: Vec<(WriteKind, String)>,
    /// Entries not created because a same-named entry that is not the
    /// mirror's exists (also counted in `failed_writes`).
    pub names_taken: Vec<String>,
    /// When to run again.
    pub requeue: Duration,
}

impl PassReport {
    pub fn ok(&self) -> bool {
        self.error.is_none() && self.failed_writes == 0
    }
}

/// Everything a pass needs; shared by every mirror.
pub struct Reconciler {
    pub providers: Providers,
    pub cluster: Arc<dyn Cluster>,
    pub metrics: Arc<Metrics>,
    pub allowed: AllowedGroups,
    lifecycle: Mutex<HashMap<String, LifecycleTracker>>,
    /// Warnings last reported per mirror, so an unchanged problem does not
    /// write an Event every pass.
    reported: Mutex<HashMap<String, BTreeSet<String>>>,
    memo: PassMemo,
    /// (namespace, name) → uid of every mirror a pass has seen.
    known: Mutex<HashMap<(String, String), String>>,
    /// Since when the cloud has said each mirror's group is gone (by uid).
    gone_since: Mutex<HashMap<String, Instant>>,
    group_gone_grace: Duration,
    write_backoff: Mutex<WriteBackoff>,
    fence: Fence,
}

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A failure that stops a pass before it writes entries.
struct Failure {
    reason: &'static str,
    message: String,
    requeue: Duration,
}

impl Failure {
    /// A read from the API server failed; soon tried again.
    fn kubernetes(message: String) -> Failure {
        Failure {
            reason: "KubernetesError",
            message,
            requeue: Duration::from_secs(5),
        }
    }
}

impl Reconciler {
    pub fn new(
        providers: Providers,
        cluster: Arc<dyn Cluster>,
        metrics: Arc<Metrics>,
        allowed: AllowedGroups,
    ) -> Self {
        Reconciler {
            providers,
            cluster,
            metrics,
            allowed,
            lifecycle: Mutex::default(),
            reported: Mutex::default(),
            memo: PassMemo::default(),
            known: Mutex::default(),
            gone_since: Mutex::default(),
            group_gone_grace: DEFAULT_GROUP_GONE_GRACE,
            write_backoff: Mutex::default(),
            fence: Fence::always(),
        }
    }

    /// Failing writes make a mirror wait `first`, doubling (tests).
    pub fn with_write_backoff(mut self, first: Duration) -> Self {
        self.write_backoff = Mutex::new(WriteBackoff::starting_at(first));
        self
    }

    /// Answers lifecycle hooks only while `fence` holds (leader election).
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = fence;
        self
    }

    /// How long entries outlive their group once the cloud says it is gone.
    pub fn with_group_gone_grace(mut self, grace: Duration) -> Self {
        self.group_gone_grace = grace;
        self
    }

    /// How long the cloud has said this mirror's group is gone (zero when it
    /// has not); `gone` records or clears the answer of this pass.
    fn gone_for(&self, uid: &str, gone: bool) -> Duration {
        let Ok(mut since) = self.gone_since.lock() else {
            return Duration::ZERO;
        };
        if gone {
            since
                .entry(uid.to_string())
                .or_insert_with(Instant::now)
                .elapsed()
        } else {
            since.remove(uid);
            Duration::ZERO
        }
    }

    /// Runs one pass of `mirror`, as the only mirror of its group (tests and
    /// tools that drive one mirror; the controller uses [`Self::pass_claimed`]).
    pub async fn pass(&self, mirror: &ScalingGroupMirror) -> PassReport {
        self.pass_claimed(mirror, &Claim::Claimant).await
    }

    /// Runs one pass of `mirror`, whose claim on its group is `claim`.
    pub async fn pass_claimed(&self, mirror: &ScalingGroupMirror, claim: &Claim) -> PassReport {
        let started = Instant::now();
        let owner = Owner::of(mirror);
        if let Ok(mut known) = self.known.lock() {
            let key = (owner.namespace.clone(), owner.name.clone());
            if let Some(old) = known.insert(key, owner.uid.clone())
                && old != owner.uid
            {
                // Deleted and created again under the same name.
                self.forget(&old);
            }
        }
        let labels = mirror_labels(&owner.namespace, &owner.name);
        let report = self.pass_inner(mirror, &owner, claim).await;
        self.metrics
            .pass_duration
            .get_or_create(&labels)
            .observe(started.elapsed().as_secs_f64());
        self.metrics
            .passes
            .get_or_create(&PassLabels {
                namespace: owner.namespace.clone(),
                mirror: owner.name.clone(),
                result: if report.ok() { "success" } else { "failure" }.into(),
            })
            .inc();
        if report.ok() {
            self.metrics
                .last_success
                .get_or_create(&labels)
                .set(chrono::Utc::now().timestamp_millis() as f64 / 1000.0);
        }
        tracing::debug!(namespace = %owner.namespace, mirror = %owner.name,
            created = report.created, updated = report.updated, deleted = report.deleted,
            failed = report.failed_writes, error = report.error.as_deref().unwrap_or(""),
            elapsed_ms = started.elapsed().as_millis() as u64, "pass done");
        report
    }

    async fn pass_inner(
        &self,
        mirror: &ScalingGroupMirror,
        owner: &Owner,
        claim: &Claim,
    ) -> PassReport {
        let spec = &mirror.spec;
        let generation = mirror.metadata.generation;
        let cached = mirror.status.clone().unwrap_or_default();
        // The mirror cache may not have caught up with this process's last
        // status write (a real API server's watch lags): build on that write,
        // or a failing pass would report the entries of an older status.
        let old = self
            .memo
            .status_base(&owner.uid, Instant::now(), &cached)
            .unwrap_or(cached);
        let mut status = ScalingGroupMirrorStatus {
            observed_generation: generation,
            ..old.clone()
        };

        let config = match config::validate(spec) {
            Ok(config) => config,
            Err(err) => {
                let failure = Failure {
                    reason: "InvalidSpec",
                    message: format!("{err}"),
                    requeue: INVALID_SPEC_RECHECK,
                };
                return self.fail(owner, &old, status, failure).await;
            }
        };
        status.provider = Some(config.group.provider().into());
        self.metrics
            .sync_interval
            .get_or_create(&mirror_labels(&owner.namespace, &owner.name))
            .set(config.interval.as_secs_f64());
        status.group = Some(config.group.to_string());

        if let Err(message) = self.allowed.check(&owner.namespace, &config.group) {
            let requeue = self
                .withdraw(
                    owner,
                    spec,
                    "the allow-list (--allowed-groups) no longer allows this group",
                    INVALID_SPEC_RECHECK,
                )
                .await;
            let failure = Failure {
                reason: "GroupNotAllowed",
                message,
                requeue,
            };
            return self.fail(owner, &old, status, failure).await;
        }

        match claim {
            Claim::Claimant => {}
            // The mirror list is still filling: decide nothing, write nothing.
            Claim::Unknown => {
                return PassReport {
                    requeue: Duration::from_secs(1),
                    error: Some("the list of mirrors is not complete yet".into()),
                    ..PassReport::default()
                };
            }
            Claim::ClaimedBy { namespace, name } => {
                let requeue = self
                    .withdraw(
                        owner,
                        spec,
                        "another mirror claims this group",
                        config.interval,
                    )
                    .await;
                let failure = Failure {
                    reason: "GroupClaimed",
                    message: format!(
                        "group {} is claimed by mirror {namespace}/{name}, the oldest mirror naming it; a VM belongs to one namespace, so this mirror writes nothing until that one is deleted",
                        config.group
                    ),
                    requeue,
                };
                return self.fail(owner, &old, status, failure).await;
            }
        }

        if spec.paused {
            set_conditions(
                &mut status,
                &old,
                (
                    false,
                    "Paused",
                    "spec.paused is true: nothing is written until it is false",
                ),
                (false, "Paused", "paused"),
            );
            let status_written = self.write_status_if_changed(owner, &old, status).await;
            return PassReport {
                status_written,
                requeue: config.interval,
                ..PassReport::default()
            };
        }

        let waiting = self
            .write_backoff
            .lock()
            .ok()
            .and_then(|mut b| b.waiting(&owner.uid, generation, Instant::now()));
        if let Some(waiting) = waiting {
            // Status and Events were written by the failing pass.
            return PassReport {
                error: Some(format!(
                    "writes failed in {} passes in a row; the next pass waits {}s",
                    waiting.failures,
                    waiting.left.as_secs()
                )),
                requeue: waiting.left,
                ..PassReport::default()
            };
        }

        let members = self.members(&config, &spec.lifecycle).await;
        let gone_for = self.gone_for(
            &owner.uid,
            matches!(members, Err(ProviderError::GroupNotFound(_))),
        );
        let (mut members, hooks) = match members {
            Ok(found) => found,
            Err(ProviderError::GroupNotFound(group)) if gone_for >= self.group_gone_grace => {
                // A definite answer, held for the whole grace: withdraw.
                let why = format!(
                    "the cloud has said group {group} does not exist for {}s, longer than the {}s grace, and clouds reuse addresses",
                    gone_for.as_secs(),
                    self.group_gone_grace.as_secs()
                );
                let requeue = self.withdraw(owner, spec, &why, config.interval).await;
                let failure = Failure {
                    reason: "GroupNotFound",
                    message: format!(
                        "scaling group not found: {group}; its entries are withdrawn (gone longer than the {}s grace)",
                        self.group_gone_grace.as_secs()
                    ),
                    requeue,
                };
                return self.fail(owner, &old, status, failure).await;
            }
            Err(err) => {
                // Fail static: nothing is deleted on a provider error.
                let requeue = match &err {
                    ProviderError::Throttled {
                        retry_after: Some(after),
                    } => (*after).max(Duration::from_secs(1)),
                    _ => Duration::from_secs(5).min(config.interval),
                };
                let kept = if matches!(err, ProviderError::GroupNotFound(_)) {
                    format!(
                        "existing entries are kept for the {}s grace, then withdrawn",
                        self.group_gone_grace.as_secs()
                    )
                } else {
                    "existing entries are kept until the cloud answers".to_string()
                };
                let failure = Failure {
                    reason: err.reason(),
                    message: format!("{err}; {kept}"),
                    requeue,
                };
                return self.fail(owner, &old, status, failure).await;
            }
        };

        // Providers need not answer in a stable order; the memo compares lists.
        members.sort_unstable_by(|a, b| a.id.cmp(&b.id));

        let mut groups = BTreeMap::new();
        for (i, workload) in spec.workloads.iter().enumerate() {
            let Some(group_name) = &workload.workload_group else {
                continue;
            };
            match self
                .cluster
                .workload_group(&owner.namespace, group_name)
                .await
            {
                Ok(Some(group)) => {
                    groups.insert(group_name.clone(), group);
                }
                Ok(None) => {
                    let failure = Failure {
                        reason: "WorkloadGroupNotFound",
                        message: format!(
                            "spec.workloads[{i}].workloadGroup: WorkloadGroup {group_name:?} does not exist in namespace {}; create it or remove the reference",
                            owner.namespace
                        ),
                        requeue: config.interval,
                    };
                    return self.fail(owner, &old, status, failure).await;
                }
                Err(err) => {
                    let failure =
                        Failure::kubernetes(format!("reading WorkloadGroup {group_name:?}: {err}"));
                    return self.fail(owner, &old, status, failure).await;
                }
            }
        }

        // Read before the entries, so a change in between is never missed.
        let entries_version = self.cluster.entries_version(owner);
        let memo_hit = self
            .memo
            .clean(&owner.uid, generation, &members, &groups, entries_version);
        let (writes, mut report, summary) = match memo_hit {
            // Nothing changed since a pass that found nothing to write.
            Some(clean) => (0, PassReport::default(), clean),
            None => {
                let actual = match self.cluster.owned_entries(owner).await {
                    Ok(actual) => actual,
                    Err(err) => {
                        let failure =
                            Failure::kubernetes(format!("listing owned WorkloadEntries: {err}"));
                        return self.fail(owner, &old, status, failure).await;
                    }
                };
                let incumbents = plan::instance_ids(&actual);
                let desired = desired::desired(
                    Mirror {
                        name: &owner.name,
                        spec,
                        config: &config,
                        incumbents: &incumbents,
                    },
                    &groups,
                    &members,
                );
                let plan = plan::plan(
                    &desired.entries,
                    &actual,
                    &desired.leaving,
                    DeletePolicy {
                        policy: spec.sync.policy,
                        max_per_pass: spec.sync.max_deletes_per_pass,
                    },
                );
                let report = self.apply(owner, &plan).await;
                let mut report = report;
                if let Ok(mut backoff) = self.write_backoff.lock() {
                    report.requeue = backoff.record(
                        &owner.uid,
                        generation,
                        report.failed_writes,
                        Instant::now(),
                    );
                }
                self.report_changes(owner, &plan, &report, &desired).await;
                let clean = Clean {
                    entries_version: entries_version.unwrap_or_default(),
                    after: Arc::new(entries_after(&actual, &plan, &report)),
                    deferred_deletes: plan.deferred_deletes,
                    members: desired.members,
                    skipped: desired.skipped.len(),
                };
                match entries_version {
                    Some(_) if plan.is_empty() => self.memo.mark_clean(
                        &owner.uid,
                        generation,
                        &members,
                        &groups,
                        clean.clone(),
                    ),
                    _ => self.memo.dirty(&owner.uid),
                }
                (plan.writes(), report, clean)
            }
        };
        let deferred_deletes = summary.deferred_deletes;
        let after = summary.after;
        report.deferred_deletes = deferred_deletes;

        let mut requeue = config.interval;
        if let Some(next) = self
            .answer_hooks(owner, mirror, &hooks.spec, &members, &after)
            .await
            .map(|(answered, next)| {
                report.hooks_answered = answered;
                next
            })
            .unwrap_or(None)
        {
            requeue = requeue.min(next);
        }

        let entry_count = after.values().map(|e| e.present).sum::<usize>();
        status.members = summary.members as u32;
        status.entries = entry_count as u32;
        status.skipped = summary.skipped as u32;
        let labels = mirror_labels(&owner.namespace, &owner.name);
        self.metrics
            .members
            .get_or_create(&labels)
            .set(summary.members as i64);
        self.metrics
            .entries
            .get_or_create(&labels)
            .set(entry_count as i64);
        self.metrics
            .skipped
            .get_or_create(&labels)
            .set(summary.skipped as i64);
        self.metrics
            .deferred_deletes
            .get_or_create(&labels)
            .set(deferred_deletes as i64);

        if !report.names_taken.is_empty() {
            let message = names_taken_message(&owner.namespace, &report.names_taken);
            set_conditions(
                &mut status,
                &old,
                (false, "EntryNameTaken", &message),
                (true, "EntryNameTaken", &message),
            );
            if !has_reason(&old, "Ready", "EntryNameTaken") {
                self.cluster
                    .event(owner, EventType::Warning, "EntryNameTaken", &message)
                    .await;
            }
            report.error = Some(message);
            // The other entry is not watched (it has no managed-by label), so
            // its removal is noticed by looking again (one GET per name),
            // after the write backoff.
            requeue = requeue.min(report.requeue.max(Duration::from_secs(1)));
        } else if report.failed_writes > 0 {
            let message = format!(
                "{} of {} WorkloadEntry writes failed; retrying",
                report.failed_writes, writes
            );
            set_conditions(
                &mut status,
                &old,
                (false, "ApplyFailed", &message),
                (true, "ApplyFailed", &message),
            );
            report.error = Some(message);
            requeue = requeue.min(report.requeue.max(Duration::from_secs(1)));
        } else {
            let mut message = format!(
                "{} entries for {} members ({} skipped)",
                entry_count, summary.members, summary.skipped
            );
            if deferred_deletes > 0 {
                message.push_str(&format!(
                    "; {} stale entries wait for the next pass ({:?} policy, maxDeletesPerPass {})",
                    deferred_deletes, spec.sync.policy, spec.sync.max_deletes_per_pass
                ));
            }
            let degraded = match &hooks.problem {
                Some(problem) => (true, "HookNotFound", problem.as_str()),
                None => (false, "AsExpected", "the cloud and the API server answer"),
            };
            set_conditions(&mut status, &old, (true, "Synced", &message), degraded);
            if let Some(problem) = &hooks.problem
                && !has_reason(&old, "Degraded", "HookNotFound")
            {
                self.cluster
                    .event(owner, EventType::Warning, "HookNotFound", problem)
                    .await;
            }
            if deferred_deletes > 0 && spec.sync.policy == crate::crd::SyncPolicy::Sync {
                requeue = requeue.min(Duration::from_secs(1));
            }
        }
        report.status_written = self.write_status_if_changed(owner, &old, status).await;
        report.requeue = requeue;
        report
    }

    /// Deletes the entries a mirror wrote before its group was denied (the
    /// allow-list was narrowed), within the mirror's delete policy. Returns
    /// how many wait for a later pass.
    /// Deletes the mirror's entries (within its delete policy) because it may
    /// no longer act on its group. Returns when to look again: soon while
    /// entries are left to delete (at the pace of a sync), else `then`.
    async fn withdraw(
        &self,
        owner: &Owner,
        spec: &crate::crd::ScalingGroupMirrorSpec,
        why: &str,
        then: Duration,
    ) -> Duration {
        let actual = match self.cluster.owned_entries(owner).await {
            Ok(actual) if !actual.is_empty() => actual,
            Ok(_) => return then,
            Err(err) => {
                tracing::warn!(namespace = %owner.namespace, mirror = %owner.name, %err,
                    "could not list the entries of a denied group");
                return then;
            }
        };
        let plan = plan::plan(
            &[],
            &actual,
            &BTreeSet::new(),
            DeletePolicy {
                policy: spec.sync.policy,
                max_per_pass: spec.sync.max_deletes_per_pass,
            },
        );
        let report = self.apply(owner, &plan).await;
        if report.deleted > 0 {
            let note = format!("deleted {} WorkloadEntries: {why}", report.deleted);
            tracing::info!(namespace = %owner.namespace, mirror = %owner.name,
                deleted = report.deleted, deferred = plan.deferred_deletes, why,
                "entries withdrawn");
            self.cluster
                .event(owner, EventType::Normal, "EntriesWithdrawn", &note)
                .await;
        }
        if plan.deferred_deletes + report.failed_writes > 0 {
            Duration::from_secs(1)
        } else {
            then
        }
    }

    /// The group's members, and the spec's lifecycle with only the hooks the
    /// cloud confirmed on this group (plus what is wrong with the others).
    /// The provider is told exactly those hooks, so a hook dropped from the
    /// spec or missing on the group gets no more heartbeats.
    async fn members(
        &self,
        config: &MirrorConfig,
        lifecycle: &crate::crd::LifecycleSpec,
    ) -> Result<(Vec<meshmirror_provider::Instance>, Hooks), ProviderError> {
        let provider = self.providers.get(&config.group)?;
        let hooks = if lifecycle.terminate_hook.is_some() || lifecycle.launch_hook.is_some() {
            let listed = provider.lifecycle_hooks(&config.group).await?;
            let (spec, problem) = crate::lifecycle::verified(
                lifecycle,
                config.group.provider(),
                &config.group.to_string(),
                listed.as_deref(),
            );
            Hooks { spec, problem }
        } else {
            Hooks {
                spec: lifecycle.clone(),
                problem: None,
            }
        };
        let answered: Vec<&str> = [&hooks.spec.terminate_hook, &hooks.spec.launch_hook]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        provider.answers_hooks(&config.group, &answered);
        Ok((provider.members(&config.group).await?, hooks))
    }

    /// Marks the mirror failed (Ready=False, Degraded=True) and writes nothing else.
    async fn fail(
        &self,
        owner: &Owner,
        old: &ScalingGroupMirrorStatus,
        mut status: ScalingGroupMirrorStatus,
        failure: Failure,
    ) -> PassReport {
        tracing::warn!(namespace = %owner.namespace, mirror = %owner.name,
            reason = failure.reason, message = %failure.message, "pass failed");
        // Tenants read status and Events; the log above keeps the full text.
        let failure = Failure {
            message: crate::redact::for_tenants(&failure.message),
            ..failure
        };
        set_conditions(
            &mut status,
            old,
            (false, failure.reason, &failure.message),
            (true, failure.reason, &failure.message),
        );
        let changed = status_differs(old, &status);
        if changed {
            self.cluster
                .event(owner, EventType::Warning, failure.reason, &failure.message)
                .await;
        }
        let status_written = self.write_status_if_changed(owner, old, status).await;
        PassReport {
            status_written,
            error: Some(format!("{}: {}", failure.reason, failure.message)),
            requeue: failure.requeue,
            ..PassReport::default()
        }
    }

    async fn apply(&self, owner: &Owner, plan: &Plan<'_>) -> PassReport {
        let cluster = self.cluster.as_ref();
        let ops: Vec<Op<'_>> = plan
            .creates
            .iter()
            .map(|e| Op::Create(e))
            .chain(plan.updates.iter().map(|e| Op::Update(e)))
            .chain(plan.deletes.iter().map(|n| Op::Delete(n)))
            .collect();
        let mut results = run_bounded(cluster, owner, ops).await;
        // Health goes through the status subresource of entries that exist,
        // so it follows the creates.
        let failed_creates: BTreeSet<String> = results
            .iter()
            .filter(|r| r.kind == WriteKind::Create && r.outcome != WriteOutcome::Done)
            .map(|r| r.name.clone())
            .collect();
        let health_ops: Vec<Op<'_>> = plan
            .health
            .iter()
            .filter(|(name, _)| !failed_creates.contains(name))
            .map(|(name, healthy)| Op::Health(name, *healthy))
            .collect();
        results.extend(run_bounded(cluster, owner, health_ops).await);

        let mut report = PassReport::default();
        for WriteResult {
            kind,
            name,
            outcome,
        } in results
        {
            if outcome != WriteOutcome::Done {
                if outcome == WriteOutcome::NameTaken {
                    report.names_taken.push(name.clone());
                }
                report.failed_writes += 1;
                report.failed_names.push((kind, name));
                continue;
            }
            match kind {
                WriteKind::Create => report.created += 1,
                WriteKind::Update => report.updated += 1,
                WriteKind::Delete => report.deleted += 1,
                WriteKind::Health => report.health_written += 1,
            }
            self.metrics
                .entry_writes
                .get_or_create(&EntryOpLabels {
                    namespace: owner.namespace.clone(),
                    mirror: owner.name.clone(),
                    op: kind.as_str().into(),
                })
                .inc();
        }
        report
    }

    /// Answers the hooks whose time has come; returns how many were answered
    /// and when to look again.
    async fn answer_hooks(
        &self,
        owner: &Owner,
        mirror: &ScalingGroupMirror,
        lifecycle: &crate::crd::LifecycleSpec,
        members: &[meshmirror_provider::Instance],
        after: &BTreeMap<String, InstanceEntries>,
    ) -> Option<(usize, Option<Duration>)> {
        let spec = &mirror.spec;
        if lifecycle.terminate_hook.is_none() && lifecycle.launch_hook.is_none() {
            return None;
        }
        let decisions = {
            let mut trackers = self.lifecycle.lock().ok()?;
            trackers.entry(owner.uid.clone()).or_default().decide(
                Instant::now(),
                lifecycle,
                spec.health,
                spec.workloads.len(),
                members,
                after,
            )
        };
        let mut answered = 0;
        for completion in decisions.complete {
            let action = &completion.action;
            if !self.fence.holds() {
                // The lease was lost during this pass: the next leader answers.
                tracing::info!(namespace = %owner.namespace, mirror = %owner.name,
                    instance = %action.instance_id, hook = %action.hook,
                    "not the leader any more; hook left for the next leader");
                break;
            }
            let result = match self.providers.get(&action.group) {
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
            match result {
                Ok(()) => {
                    answered += 1;
                    if let Ok(mut trackers) = self.lifecycle.lock()
                        && let Some(tracker) = trackers.get_mut(&owner.uid)
                    {
                        tracker.answered(action);
                    }
                    self.metrics
                        .lifecycle_actions
                        .get_or_create(&LifecycleLabels {
                            kind: kind.into(),
                            result: outcome.into(),
                        })
                        .inc();
                    tracing::info!(namespace = %owner.namespace, mirror = %owner.name,
                        instance = %action.instance_id, hook = %action.hook, kind, outcome,
                        reason = completion.reason, "lifecycle hook answered");
                    self.cluster
                        .event(
                            owner,
                            EventType::Normal,
                            "LifecycleActionCompleted",
                            &format!(
                                "{kind} hook {} of instance {} answered {} ({})",
                                action.hook,
                                action.instance_id,
                                outcome.to_uppercase(),
                                completion.reason
                            ),
                        )
                        .await;
                }
                Err(err) => {
                    self.metrics
                        .lifecycle_actions
                        .get_or_create(&LifecycleLabels {
                            kind: kind.into(),
                            result: "error".into(),
                        })
                        .inc();
                    tracing::warn!(namespace = %owner.namespace, mirror = %owner.name,
                        instance = %action.instance_id, hook = %action.hook, %err,
                        "could not answer lifecycle hook; retrying");
                }
            }
        }
        Some((answered, decisions.next_check))
    }

    /// Events for what changed: one aggregated Event per pass for the writes,
    /// and warnings only when the set of warnings changed.
    async fn report_changes(
        &self,
        owner: &Owner,
        plan: &Plan<'_>,
        report: &PassReport,
        desired: &Desired,
    ) {
        if report.created + report.deleted + report.updated > 0 {
            let note = format!(
                "created {}, updated {}, deleted {} WorkloadEntries",
                report.created, report.updated, report.deleted
            );
            tracing::info!(namespace = %owner.namespace, mirror = %owner.name,
                created = report.created, updated = report.updated, deleted = report.deleted,
                deferred = plan.deferred_deletes, "entries synced");
            self.cluster
                .event(owner, EventType::Normal, "EntriesSynced", &note)
                .await;
        }
        let mut warnings: BTreeSet<String> = desired
            .skipped
            .iter()
            .map(|s| format!("instance {} skipped: {}", s.instance_id, s.reason))
            .collect();
        warnings.extend(desired.warnings.iter().cloned());
        let changed = match self.reported.lock() {
            Ok(mut reported) => {
                let previous = reported.insert(owner.uid.clone(), warnings.clone());
                previous.as_ref() != Some(&warnings)
            }
            Err(_) => false,
        };
        if changed && !warnings.is_empty() {
            let skipped = desired.skipped.len();
            let shown: Vec<&str> = warnings.iter().take(5).map(String::as_str).collect();
            let more = warnings.len().saturating_sub(shown.len());
            let mut note = shown.join("; ");
            if more > 0 {
                note.push_str(&format!("; and {more} more"));
            }
            let reason = if skipped > 0 {
                "InstancesSkipped"
            } else {
                "TagsNotCopied"
            };
            self.cluster
                .event(owner, EventType::Warning, reason, &note)
                .await;
        }
    }

    async fn write_status_if_changed(
        &self,
        owner: &Owner,
        old: &ScalingGroupMirrorStatus,
        mut status: ScalingGroupMirrorStatus,
    ) -> bool {
        let degraded = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Degraded" && c.status == "True");
        self.metrics
            .degraded
            .get_or_create(&mirror_labels(&owner.namespace, &owner.name))
            .set(i64::from(degraded));
        if !status_differs(old, &status) {
            return false;
        }
        let now = Instant::now();
        if self
            .memo
            .status_recently_written(&owner.uid, now, |written| !status_differs(written, &status))
        {
            // The mirror cache has not caught up with the last write yet.
            return false;
        }
        status.last_sync_time = Some(now_rfc3339());
        match self.cluster.write_status(owner, &status).await {
            Ok(()) => {
                self.memo.status_written(&owner.uid, &status, now);
                true
            }
            Err(err) => {
                tracing::warn!(namespace = %owner.namespace, mirror = %owner.name, %err,
                    "could not write status");
                false
            }
        }
    }

    /// Forgets a deleted mirror: its in-memory state and its metric series.
    /// A mirror deleted without finalizers is gone before any pass sees a
    /// deletionTimestamp, so it is named by namespace and name.
    pub fn forget_mirror(&self, namespace: &str, name: &str) {
        let uid = self
            .known
            .lock()
            .ok()
            .and_then(|mut k| k.remove(&(namespace.to_string(), name.to_string())));
        if let Some(uid) = uid {
            self.forget(&uid);
        }
        self.forget_metrics(namespace, name);
    }

    fn forget(&self, uid: &str) {
        self.memo.forget(uid);
        if let Ok(mut t) = self.lifecycle.lock() {
            t.remove(uid);
        }
        if let Ok(mut r) = self.reported.lock() {
            r.remove(uid);
        }
        if let Ok(mut g) = self.gone_since.lock() {
            g.remove(uid);
        }
        if let Ok(mut b) = self.write_backoff.lock() {
            b.forget(uid);
        }
    }

    /// Drops a deleted mirror's metric series, so label sets stay bounded.
    fn forget_metrics(&self, namespace: &str, name: &str) {
        let labels = mirror_labels(namespace, name);
        let m = &self.metrics;
        m.members.remove(&labels);
        m.entries.remove(&labels);
        m.skipped.remove(&labels);
        m.deferred_deletes.remove(&labels);
        m.degraded.remove(&labels);
        m.sync_interval.remove(&labels);
        m.last_success.remove(&labels);
        m.pass_duration.remove(&labels);
        for result in ["success", "failure"] {
            m.passes.remove(&PassLabels {
                namespace: namespace.into(),
                mirror: name.into(),
                result: result.into(),
            });
        }
        for op in WriteKind::ALL {
            m.entry_writes.remove(&EntryOpLabels {
                namespace: namespace.into(),
                mirror: name.into(),
                op: op.as_str().into(),
            });
        }
    }
}

/// One entry write.
enum Op<'a> {
    Create(&'a DesiredEntry),
    Update(&'a DesiredEntry),
    Health(&'a str, bool),
    Delete(&'a str),
}

/// What a write was, as its metric label and the pass report name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WriteKind {
    Create,
    Update,
    Health,
    Delete,
}

impl WriteKind {
    pub const ALL: [WriteKind; 4] = [
        WriteKind::Create,
        WriteKind::Update,
        WriteKind::Delete,
        WriteKind::Health,
    ];

    /// The `op` label of `meshmirror_entry_writes_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteKind::Create => "create",
            WriteKind::Update => "update",
            WriteKind::Health => "health",
            WriteKind::Delete => "delete",
        }
    }
}

/// How a write ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WriteOutcome {
    Done,
    Failed,
    /// The name is held by an entry that is not the mirror's.
    NameTaken,
}

/// One write's result.
struct WriteResult {
    kind: WriteKind,
    name: String,
    outcome: WriteOutcome,
}

async fn run_op(cluster: &dyn Cluster, owner: &Owner, op: Op<'_>) -> WriteResult {
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
        tracing::warn!(namespace = %owner.namespace, mirror = %owner.name,
            entry = %name, op = kind.as_str(), %err, "write failed");
    }
    WriteResult {
        kind,
        name,
        outcome,
    }
}

/// Runs the writes with at most [`WRITE_CONCURRENCY`] in flight.
async fn run_bounded(cluster: &dyn Cluster, owner: &Owner, ops: Vec<Op<'_>>) -> Vec<WriteResult> {
    let mut in_flight = FuturesUnordered::new();
    let mut ops = ops.into_iter();
    let mut results = Vec::new();
    loop {
        while in_flight.len() < WRITE_CONCURRENCY {
            match ops.next() {
                Some(op) => in_flight.push(run_op(cluster, owner, op)),
                None => break,
            }
        }
        match in_flight.next().await {
            Some(result) => results.push(result),
            None => return results,
        }
    }
}

/// The entries of each instance once the plan's successful writes landed.
fn entries_after(
    actual: &[ActualEntry],
    plan: &Plan,
    report: &PassReport,
) -> BTreeMap<String, InstanceEntries> {
    let failed: BTreeSet<(WriteKind, &str)> = report
        .failed_names
        .iter()
        .map(|(k, n)| (*k, n.as_str()))
        .collect();
    let deleted: BTreeSet<&str> = plan
        .deletes
        .iter()
        .map(String::as_str)
        .filter(|n| !failed.contains(&(WriteKind::Delete, n)))
        .collect();
    let health: BTreeMap<&str, bool> = plan
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
        if let Some(id) = crate::ownership::instance_id(&a.annotations) {
            let healthy = health
                .get(a.name.as_str())
                .copied()
                .or(a.healthy)
                .unwrap_or(false);
            count(id, healthy);
        }
    }
    for c in &plan.creates {
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
) {
    let now = now_rfc3339();
    let make = |type_: &str, (ok, reason, message): (bool, &str, &str)| {
        let status_str = if ok { "True" } else { "False" };
        let previous = old.conditions.iter().find(|c| c.type_ == type_);
        Condition {
            type_: type_.into(),
            status: status_str.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: previous
                .filter(|p| p.status == status_str)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| now.clone()),
            observed_generation: status.observed_generation,
        }
    };
    status.conditions = vec![make("Ready", ready), make("Degraded", degraded)];
}

fn names_taken_message(namespace: &str, names: &[String]) -> String {
    let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
    names.sort_unstable();
    let more = names.len().saturating_sub(5);
    let mut shown = names[..names.len().min(5)].join(", ");
    if more > 0 {
        shown.push_str(&format!(" and {more} more"));
    }
    format!(
        "WorkloadEntries {shown} in namespace {namespace} exist and are not this mirror's (no ownerReference to it); they are left alone and their instances are not in the mesh: delete or rename them"
    )
}

/// Whether the status has condition `type_` with `reason`.
fn has_reason(status: &ScalingGroupMirrorStatus, type_: &str, reason: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.reason == reason)
}

/// The lifecycle hooks a pass may answer, and why any named one is left out.
struct Hooks {
    spec: crate::crd::LifecycleSpec,
    problem: Option<String>,
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
