//! One reconcile pass of one mirror, in three stages:
//! - **gather** ([`gather`]): the reads, asked for one at a time by decide;
//! - **decide** ([`decide`], then [`settle`] once the entry writes are
//!   made): pure functions from what was read and what the mirror's memory
//!   ([`state`]) holds to the writes, status, Events, hook answers and gauges;
//! - **apply** ([`apply`]): makes exactly those writes.
//!
//! Deciding is split in two because a terminating VM's hook is answered
//! only once its entries are really gone: which writes landed is an input.

pub mod apply;
pub mod backoff;
pub mod decide;
mod error;
#[cfg(test)]
mod fixtures;
pub mod gather;
pub mod memo;
mod report;
pub mod settle;
pub mod state;
pub mod writes;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

use self::apply::Sinks;
use self::decide::{Settings, Step};
pub use self::error::PassError;
use self::gather::{Facts, Gathered, Sources};
pub use self::report::PassReport;
use self::settle::{Clock, Written};
use self::state::MirrorStates;
pub use self::writes::{MeshResult, WriteKind, WriteOutcome, WriteResult};
use crate::cluster::Cluster;
use crate::core::claims::Claim;
use crate::core::ownership::Owner;
use crate::core::policy::AllowedGroups;
use crate::crd::ScalingGroupMirror;
use crate::fence::Fence;
use crate::metrics::{EntryOpLabels, Metrics, PassLabels, mirror_labels};
use crate::providers::Providers;

/// How long a group the cloud says is gone keeps its entries
/// (`--group-gone-grace`): clouds reuse addresses, so entries of a deleted
/// group must not stay forever, but a group deleted and created again, or a
/// cloud's passing mistake, must not empty the mesh at once.
pub const DEFAULT_GROUP_GONE_GRACE: Duration = Duration::from_secs(600);

/// Everything a pass needs; shared by every mirror.
pub struct Reconciler {
    providers: Providers,
    cluster: Arc<dyn Cluster>,
    metrics: Arc<Metrics>,
    allowed: AllowedGroups,
    states: MirrorStates,
    settings: Settings,
    fence: Fence,
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
            states: MirrorStates::new(backoff::FIRST),
            settings: Settings {
                group_gone_grace: DEFAULT_GROUP_GONE_GRACE,
            },
            fence: Fence::always(),
        }
    }

    /// Failing writes make a mirror wait `first`, doubling (tests).
    pub fn with_write_backoff(mut self, first: Duration) -> Self {
        self.states = MirrorStates::new(first);
        self
    }

    /// Answers lifecycle hooks only while `fence` holds (leader election).
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = fence;
        self
    }

    /// How long entries outlive their group once the cloud says it is gone.
    pub fn with_group_gone_grace(mut self, grace: Duration) -> Self {
        self.settings.group_gone_grace = grace;
        self
    }

    pub fn providers(&self) -> &Providers {
        &self.providers
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn allowed(&self) -> &AllowedGroups {
        &self.allowed
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
        let span = tracing::info_span!("pass", namespace = %owner.namespace, mirror = %owner.name);
        let report = self.stages(mirror, &owner, claim).instrument(span).await;
        self.count(&owner, &report, started);
        report
    }

    /// Gather and decide, apply the entry writes, settle, apply the rest.
    async fn stages(
        &self,
        mirror: &ScalingGroupMirror,
        owner: &Owner,
        claim: &Claim,
    ) -> PassReport {
        let slot = self.states.slot(owner);
        let mut state = slot.state.lock().await;
        let named = slot.take_named();
        let facts = Facts::of(
            mirror,
            owner,
            claim,
            &self.allowed,
            &state,
            named,
            Instant::now(),
        );
        let from = Sources {
            providers: &self.providers,
            cluster: self.cluster.as_ref(),
        };
        let mut gathered = Gathered::default();
        let plan = loop {
            match decide::decide(&facts, &gathered, &state, &self.settings) {
                Step::Read(read) => gathered.read(read, &facts, from).await,
                Step::Plan(plan) => break *plan,
            }
        };
        let to = Sinks {
            cluster: self.cluster.as_ref(),
            providers: &self.providers,
            metrics: &self.metrics,
            fence: &self.fence,
        };
        let mesh = apply::mesh_writes(to.cluster, owner, &plan.mesh).await;
        let results = apply::writes(to, owner, &plan.writes).await;
        let settled = settle::settle(
            &facts,
            &gathered,
            &plan,
            Written {
                entries: &results,
                mesh: &mesh,
            },
            &mut state,
            &Clock::now(),
        );
        apply::log(owner, &plan.ending, &plan.writes, &settled.report);
        apply::finish(to, owner, settled, slot.take_advisories(), &mut state).await
    }

    /// The pass's own metrics.
    fn count(&self, owner: &Owner, report: &PassReport, started: Instant) {
        let labels = mirror_labels(&owner.namespace, &owner.name);
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
        let error = report.error.as_ref().map(ToString::to_string);
        tracing::debug!(namespace = %owner.namespace, mirror = %owner.name,
            created = report.created, updated = report.updated, deleted = report.deleted,
            failed = report.failed_writes, error = error.as_deref().unwrap_or(""),
            elapsed_ms = started.elapsed().as_millis() as u64, "pass done");
    }

    /// Keeps an instance a cloud event named for the mirror's next pass,
    /// which asks the cloud about the named instances only.
    pub fn note_instance(&self, mirror: &ScalingGroupMirror, instance_id: &str) {
        self.states.note_instance(&Owner::of(mirror), instance_id);
    }

    /// Keeps a cloud advisory for the mirror's next pass to record as an
    /// Event (a cloud event only triggers passes; passes write).
    pub fn note_advisory(&self, mirror: &ScalingGroupMirror, note: String) {
        self.states.note_advisory(&Owner::of(mirror), note);
    }

    /// Forgets a deleted mirror: its memory and its metric series. A mirror
    /// deleted without finalizers is gone before any pass sees a
    /// deletionTimestamp, so it is named by namespace and name.
    pub fn forget_mirror(&self, namespace: &str, name: &str) {
        self.states.forget(namespace, name);
        self.forget_metrics(namespace, name);
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
