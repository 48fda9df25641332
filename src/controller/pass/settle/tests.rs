//! After the writes: how each ending turns into status, Events, hook answers,
//! requeues and the mirror's memory.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshmirror_provider::{
    GroupRef, Instance, LifecycleAction, LifecycleKind, Outcome, ProviderError,
};

use super::*;
use crate::controller::pass::decide::{Ending, Synced};
use crate::controller::pass::fixtures::{entry, mirror, owner, vm};
use crate::controller::pass::gather::{Hooks, Members};
use crate::controller::pass::writes::EntryWrites;
use crate::core::claims::Claim;
use crate::core::config;
use crate::core::desired::{Skip, SkipReason};
use crate::core::mesh::MeshWrites;
use crate::core::ownership::Owner;
use crate::crd::{AddressFamily, LifecycleSpec, ScalingGroupMirror};

const WALL: &str = "2026-12-04T10:00:00Z";

struct Pass {
    mirror: ScalingGroupMirror,
    owner: Owner,
    claim: Claim,
    old: ScalingGroupMirrorStatus,
    gathered: Gathered,
    state: MirrorState,
    clock: Clock,
}

impl Pass {
    fn new() -> Pass {
        Pass {
            mirror: mirror(""),
            owner: owner(),
            claim: Claim::Claimant,
            old: ScalingGroupMirrorStatus::default(),
            gathered: Gathered::default(),
            state: MirrorState::new(Duration::from_secs(1)),
            clock: Clock {
                now: Instant::now(),
                wall: WALL.into(),
            },
        }
    }

    /// Read: `members`, no WorkloadGroups, version 7, the `owned` entries.
    fn read(
        mut self,
        members: Vec<Instance>,
        hooks: LifecycleSpec,
        owned: &[(&str, &str)],
    ) -> Pass {
        self.gathered.members = Some(Ok(Members {
            instances: Arc::new(members),
            hooks: Hooks {
                spec: hooks,
                problem: None,
            },
        }));
        self.gathered.groups = Some(Ok(BTreeMap::new()));
        self.gathered.entries_version = Some(Some(7));
        self.gathered.owned = Some(Ok(owned.iter().map(|(n, id)| entry(n, id)).collect()));
        self
    }

    fn settle(&mut self, plan: &PassPlan, results: &[WriteResult]) -> Settled {
        let facts = Facts {
            mirror: &self.mirror,
            owner: &self.owner,
            claim: &self.claim,
            config: config::validate(&self.mirror.spec).map_err(|e| e.to_string()),
            allowed: Ok(()),
            old: self.old.clone(),
            now: self.clock.now,
            named: None,
        };
        settle(
            &facts,
            &self.gathered,
            plan,
            Written {
                entries: results,
                mesh: &[],
            },
            &mut self.state,
            &self.clock,
        )
    }
}

fn done(kind: WriteKind, name: &str) -> WriteResult {
    WriteResult {
        kind,
        name: name.into(),
        outcome: WriteOutcome::Done,
    }
}

fn ended(kind: WriteKind, name: &str, outcome: WriteOutcome) -> WriteResult {
    WriteResult {
        kind,
        name: name.into(),
        outcome,
    }
}

fn failed(error: PassError, requeue: Duration) -> PassPlan {
    PassPlan {
        writes: EntryWrites::default(),
        mesh: MeshWrites::default(),
        ending: Ending::Failed { error, requeue },
    }
}

fn planned(writes: EntryWrites, members: usize) -> PassPlan {
    PassPlan {
        writes,
        mesh: MeshWrites::default(),
        ending: Ending::Synced {
            interval: Duration::from_secs(45),
            how: Synced::Planned {
                members,
                skipped: Vec::new(),
                warnings: Vec::new(),
            },
        },
    }
}

fn condition<'a>(status: &'a ScalingGroupMirrorStatus, type_: &str) -> (&'a str, &'a str) {
    let c = status.conditions.iter().find(|c| c.type_ == type_).unwrap();
    (c.status.as_str(), c.reason.as_str())
}

fn reasons(notes: &[Note]) -> Vec<&'static str> {
    notes.iter().map(|n| n.reason).collect()
}

#[test]
fn a_failure_sets_the_conditions_and_warns_once() {
    let mut pass = Pass::new();
    let error = PassError::Kubernetes("listing owned WorkloadEntries: 503".into());
    let out = pass.settle(&failed(error.clone(), Duration::from_secs(5)), &[]);
    let status = out.status.clone().expect("status changed");
    assert_eq!(condition(&status, "Ready"), ("False", "KubernetesError"));
    assert_eq!(condition(&status, "Degraded"), ("True", "KubernetesError"));
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!(status.group.as_deref(), Some("sim:web"));
    assert_eq!(status.last_sync_time.as_deref(), Some(WALL));
    assert_eq!(reasons(&out.events), ["KubernetesError"]);
    assert_eq!(out.gauges.degraded, Some(true));
    assert_eq!(out.report.error, Some(error.clone()));
    assert_eq!(out.report.requeue, Duration::from_secs(5));

    // The same failure again: the conditions stand, so no status and no Event.
    pass.old = status;
    let again = pass.settle(&failed(error, Duration::from_secs(5)), &[]);
    assert!(again.status.is_none());
    assert!(again.events.is_empty());
}

#[test]
fn tenants_see_the_cloud_error_without_the_platforms_identity() {
    let mut pass = Pass::new();
    let error = PassError::Provider {
        error: ProviderError::Permanent(
            "AccessDenied: arn:aws:iam::123456789012:role/meshmirror is not authorized".into(),
        ),
        grace: Duration::from_secs(600),
    };
    let out = pass.settle(&failed(error, Duration::from_secs(5)), &[]);
    let status = out.status.unwrap();
    let shown = &status.conditions[0].message;
    assert!(!shown.contains("123456789012"), "{shown}");
    assert!(!out.events[0].message.contains("123456789012"));
    assert!(
        out.report
            .error
            .unwrap()
            .to_string()
            .contains("123456789012"),
        "the log keeps it"
    );
}

#[test]
fn a_withdrawal_notes_what_it_deleted_and_hurries_while_deletes_are_left() {
    let mut pass = Pass::new().read(
        vec![],
        LifecycleSpec::default(),
        &[("a", "i-1"), ("b", "i-2")],
    );
    let plan = PassPlan {
        writes: EntryWrites {
            deletes: vec!["a".into()],
            deferred_deletes: 1,
            ..EntryWrites::default()
        },
        mesh: MeshWrites::default(),
        ending: Ending::Withdrawn {
            why: "another mirror claims this group".into(),
            then: Duration::from_secs(45),
            error: PassError::MirrorsNotListed,
            list_error: None,
        },
    };
    let out = pass.settle(&plan, &[done(WriteKind::Delete, "a")]);
    assert_eq!(
        reasons(&out.events),
        ["EntriesWithdrawn", "MirrorsNotListed"]
    );
    assert_eq!(
        out.events[0].message,
        "deleted 1 WorkloadEntries: another mirror claims this group"
    );
    assert_eq!(out.report.deleted, 1);
    assert_eq!(
        out.report.requeue,
        Duration::from_secs(1),
        "one delete is left"
    );

    let nothing_left = PassPlan {
        writes: EntryWrites::default(),
        mesh: MeshWrites::default(),
        ..plan
    };
    let out = pass.settle(&nothing_left, &[]);
    assert_eq!(out.report.requeue, Duration::from_secs(45));
}

#[test]
fn a_synced_pass_counts_what_stands_after_its_writes() {
    let mut pass = Pass::new().read(
        vec![vm("i-1", 1), vm("i-2", 2)],
        LifecycleSpec::default(),
        &[("old", "i-1"), ("gone", "i-9")],
    );
    let writes = EntryWrites {
        deletes: vec!["gone".into()],
        ..EntryWrites::default()
    };
    let out = pass.settle(&planned(writes, 2), &[done(WriteKind::Delete, "gone")]);
    let status = out.status.unwrap();
    assert_eq!((status.members, status.entries), (2, 1));
    assert_eq!(condition(&status, "Ready"), ("True", "Synced"));
    assert_eq!(condition(&status, "Degraded"), ("False", "AsExpected"));
    assert_eq!(reasons(&out.events), ["EntriesSynced"]);
    assert_eq!(
        out.events[0].message,
        "created 0, updated 0, deleted 1 WorkloadEntries"
    );
    assert_eq!(out.report.requeue, Duration::from_secs(45));
    assert!(out.report.ok());
    assert!(
        pass.state
            .memo
            .clean(
                Some(3),
                &[vm("i-1", 1), vm("i-2", 2)],
                &BTreeMap::new(),
                Some(7)
            )
            .is_none(),
        "a pass that wrote is not clean"
    );

    // Nothing left to write: the memo remembers it.
    pass.gathered.owned = Some(Ok(vec![entry("old", "i-1")]));
    let out = pass.settle(&planned(EntryWrites::default(), 2), &[]);
    assert!(out.events.is_empty());
    let clean = pass
        .state
        .memo
        .clean(
            Some(3),
            &[vm("i-1", 1), vm("i-2", 2)],
            &BTreeMap::new(),
            Some(7),
        )
        .expect("clean");
    assert_eq!(clean.after.get("i-1").map(|e| e.present), Some(1));
}

#[test]
fn failed_writes_back_off_and_taken_names_say_whose() {
    let mut pass = Pass::new().read(vec![vm("i-1", 1)], LifecycleSpec::default(), &[]);
    let writes = EntryWrites {
        deletes: vec!["x".into(), "y".into()],
        ..EntryWrites::default()
    };
    let results = [
        ended(WriteKind::Delete, "x", WriteOutcome::Failed),
        done(WriteKind::Delete, "y"),
    ];
    let out = pass.settle(&planned(writes.clone(), 1), &results);
    assert_eq!(
        out.report.error,
        Some(PassError::WritesFailed { failed: 1, of: 2 })
    );
    assert_eq!(
        condition(out.status.as_ref().unwrap(), "Ready"),
        ("False", "ApplyFailed")
    );
    assert_eq!(
        out.report.requeue,
        Duration::from_secs(1),
        "the first backoff"
    );
    assert!(
        pass.state
            .backoff
            .waiting(Some(3), pass.clock.now)
            .is_some()
    );

    let taken = [ended(
        WriteKind::Create,
        "web-api-1",
        WriteOutcome::NameTaken,
    )];
    let out = pass.settle(&planned(EntryWrites::default(), 1), &taken);
    assert_eq!(reasons(&out.events_after_hooks), ["EntryNameTaken"]);
    assert_eq!(
        out.report.requeue,
        Duration::from_secs(2),
        "the second backoff"
    );
    pass.old = out.status.unwrap();
    let out = pass.settle(&planned(EntryWrites::default(), 1), &taken);
    assert!(out.events_after_hooks.is_empty(), "already said");
}

#[test]
fn a_terminating_vm_is_let_go_only_once_its_entries_are_deleted() {
    let mut leaving = vm("i-1", 1);
    leaving.lifecycle = Some(LifecycleAction {
        group: GroupRef::Sim {
            group: "web".into(),
        },
        instance_id: "i-1".into(),
        kind: LifecycleKind::Terminate,
        hook: "drain".into(),
        token: None,
    });
    let hooks = LifecycleSpec {
        terminate_hook: Some("drain".into()),
        drain_seconds: 0,
        ..LifecycleSpec::default()
    };
    let mut pass = Pass::new().read(vec![leaving], hooks, &[("web-api-1", "i-1")]);
    let writes = EntryWrites {
        deletes: vec!["web-api-1".into()],
        ..EntryWrites::default()
    };
    let failed_delete = [ended(WriteKind::Delete, "web-api-1", WriteOutcome::Failed)];
    let out = pass.settle(&planned(writes.clone(), 0), &failed_delete);
    assert!(out.hooks.is_empty(), "its entry is still there");

    let out = pass.settle(&planned(writes, 0), &[done(WriteKind::Delete, "web-api-1")]);
    assert_eq!(out.hooks.len(), 1);
    assert_eq!(out.hooks[0].outcome, Outcome::Continue);
    assert_eq!(out.hooks[0].reason, "Drained");
}

#[test]
fn the_cloud_saying_gone_is_remembered_until_it_answers_again() {
    let mut pass = Pass::new();
    pass.gathered.members = Some(Err(ProviderError::GroupNotFound("sim/web".into())));
    let plan = || failed(PassError::MirrorsNotListed, Duration::from_secs(5));
    pass.settle(&plan(), &[]);
    let first = pass.state.gone_since.expect("recorded");
    pass.clock.now += Duration::from_secs(30);
    pass.settle(&plan(), &[]);
    assert_eq!(pass.state.gone_since, Some(first), "since the first answer");
    pass.gathered.members = Some(Ok(Members {
        instances: Arc::default(),
        hooks: Hooks::default(),
    }));
    pass.settle(&plan(), &[]);
    assert_eq!(pass.state.gone_since, None);
}

#[test]
fn skipped_instances_warn_when_the_set_changes() {
    let mut pass = Pass::new().read(vec![vm("i-1", 1)], LifecycleSpec::default(), &[]);
    let with_skips = |ids: &[&str]| PassPlan {
        writes: EntryWrites::default(),
        mesh: MeshWrites::default(),
        ending: Ending::Synced {
            interval: Duration::from_secs(45),
            how: Synced::Planned {
                members: 1,
                skipped: ids
                    .iter()
                    .map(|id| Skip {
                        instance_id: id.to_string(),
                        reason: SkipReason::NoAddress(AddressFamily::default()),
                    })
                    .collect(),
                warnings: Vec::new(),
            },
        },
    };
    let first = pass.settle(&with_skips(&["i-7"]), &[]);
    assert_eq!(reasons(&first.events), ["InstancesSkipped"]);
    assert!(
        pass.settle(&with_skips(&["i-7"]), &[]).events.is_empty(),
        "unchanged"
    );
    assert_eq!(
        reasons(&pass.settle(&with_skips(&["i-7", "i-8"]), &[]).events),
        ["InstancesSkipped"]
    );
}

#[test]
fn a_status_this_process_just_wrote_is_not_written_again() {
    let mut pass = Pass::new();
    let error = PassError::Kubernetes("503".into());
    let written = pass
        .settle(&failed(error.clone(), Duration::from_secs(5)), &[])
        .status
        .unwrap();
    pass.state.memo.status_written(&written, pass.clock.now);
    // The mirror cache still shows the old status.
    assert!(
        pass.settle(&failed(error, Duration::from_secs(5)), &[])
            .status
            .is_none()
    );
}

#[test]
fn a_paused_mirror_says_so() {
    let mut pass = Pass::new();
    let plan = PassPlan {
        writes: EntryWrites::default(),
        mesh: MeshWrites::default(),
        ending: Ending::Paused {
            interval: Duration::from_secs(45),
        },
    };
    let out = pass.settle(&plan, &[]);
    let status = out.status.unwrap();
    assert_eq!(condition(&status, "Ready"), ("False", "Paused"));
    assert_eq!(condition(&status, "Degraded"), ("False", "Paused"));
    assert!(out.report.ok());
    assert!(out.events.is_empty());
}
