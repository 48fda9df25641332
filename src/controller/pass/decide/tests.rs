//! One row per way a pass can go: what it has read so far and what the
//! mirror's memory holds, and what it does next.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshmirror_provider::{Instance, ProviderError};

use super::*;
use crate::controller::pass::fixtures::{entry, mirror, owner, vm};
use crate::controller::pass::gather::{Hooks, Members, MeshRead, Named, Read};
use crate::core::config;
use crate::core::mesh::{ActualMesh, MeshKind, MeshKinds};
use crate::core::ownership::Owner;
use crate::crd::ScalingGroupMirror;

const GRACE: Duration = Duration::from_secs(600);

struct Row {
    mirror: ScalingGroupMirror,
    owner: Owner,
    claim: Claim,
    allowed: Result<(), String>,
    gathered: Gathered,
    state: MirrorState,
    now: Instant,
    named: Option<Named>,
}

impl Row {
    fn new(extra: &str) -> Row {
        Row {
            mirror: mirror(extra),
            owner: owner(),
            claim: Claim::Claimant,
            allowed: Ok(()),
            gathered: Gathered::default(),
            state: MirrorState::new(Duration::from_secs(1)),
            now: Instant::now(),
            named: None,
        }
    }

    fn members(mut self, result: Result<Vec<Instance>, ProviderError>) -> Row {
        self.gathered.members = Some(result.map(|instances| Members {
            instances: Arc::new(instances),
            hooks: Hooks::default(),
        }));
        self
    }

    /// Every read answered: two members, no WorkloadGroups, a cache version.
    fn read_up_to_entries(self) -> Row {
        let mut row = self.members(Ok(vec![vm("i-1", 1), vm("i-2", 2)]));
        row.gathered.groups = Some(Ok(BTreeMap::new()));
        row.gathered.mesh = Some(MeshRead::default());
        row.gathered.entries_version = Some(Some(7));
        row
    }

    fn owned(mut self, names: &[(&str, &str)]) -> Row {
        self.gathered.owned = Some(Ok(names.iter().map(|(n, id)| entry(n, id)).collect()));
        self
    }

    fn step(&self) -> Step {
        let facts = Facts {
            mirror: &self.mirror,
            owner: &self.owner,
            claim: &self.claim,
            config: config::validate(&self.mirror.spec).map_err(|e| e.to_string()),
            allowed: self.allowed.clone(),
            old: Default::default(),
            now: self.now,
            named: self.named.clone(),
        };
        let settings = Settings {
            group_gone_grace: GRACE,
        };
        decide(&facts, &self.gathered, &self.state, &settings)
    }

    fn plan(&self) -> PassPlan {
        match self.step() {
            Step::Plan(plan) => *plan,
            Step::Read(read) => panic!("asked to read {read:?}"),
        }
    }
}

fn failed_with(plan: &PassPlan) -> (&'static str, Duration) {
    assert!(
        plan.writes.is_empty(),
        "a failing pass writes no entry: {plan:?}"
    );
    match &plan.ending {
        Ending::Failed { error, requeue } => (error.reason(), *requeue),
        other => panic!("not failed: {other:?}"),
    }
}

#[test]
fn an_invalid_spec_fails_before_any_read() {
    let mut row = Row::new("");
    row.mirror.spec.sync.interval = "soon".into();
    assert_eq!(
        failed_with(&row.plan()),
        ("InvalidSpec", Duration::from_secs(300))
    );
}

#[test]
fn a_denied_group_lists_its_entries_then_withdraws_them_within_the_delete_budget() {
    let mut row = Row::new("");
    row.allowed = Err("namespace team-a may not use sim/web".into());
    assert_eq!(row.step(), Step::Read(Read::OwnedEntries), "no cloud call");
    let row = row.owned(&[("web-api-a", "i-1"), ("web-api-b", "i-2")]);
    let plan = row.plan();
    assert_eq!(plan.writes.deletes, ["web-api-a"], "maxDeletesPerPass 1");
    assert_eq!(plan.writes.deferred_deletes, 1);
    match plan.ending {
        Ending::Withdrawn { error, then, .. } => {
            assert_eq!(error.reason(), "GroupNotAllowed");
            assert_eq!(then, Duration::from_secs(300));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_unknown_claim_writes_nothing_at_all() {
    let mut row = Row::new("");
    row.claim = Claim::Unknown;
    let plan = row.plan();
    assert!(plan.writes.is_empty());
    assert_eq!(
        plan.ending,
        Ending::Quiet {
            error: PassError::MirrorsNotListed,
            requeue: Duration::from_secs(1)
        }
    );
}

#[test]
fn an_outranked_mirror_withdraws_and_looks_again_at_its_interval() {
    let mut row = Row::new("");
    row.claim = Claim::ClaimedBy {
        namespace: "team-b".into(),
        name: "older".into(),
    };
    assert_eq!(row.step(), Step::Read(Read::OwnedEntries));
    let plan = row.owned(&[]).plan();
    assert!(plan.writes.is_empty());
    match plan.ending {
        Ending::Withdrawn { error, then, .. } => {
            assert!(
                error.message().contains("claimed by mirror team-b/older"),
                "{error}"
            );
            assert_eq!(then, Duration::from_secs(45));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_paused_mirror_reads_nothing() {
    let row = Row::new("paused: true");
    assert_eq!(
        row.plan().ending,
        Ending::Paused {
            interval: Duration::from_secs(45)
        }
    );
}

#[test]
fn a_mirror_in_write_backoff_waits_quietly_until_its_spec_changes() {
    let mut row = Row::new("");
    row.state.backoff.record(Some(3), 2, row.now);
    row.state.backoff.record(Some(3), 2, row.now);
    match row.plan().ending {
        Ending::Quiet { error, requeue } => {
            assert_eq!(
                error,
                PassError::WritesBackingOff {
                    failures: 2,
                    left: Duration::from_secs(2)
                }
            );
            assert_eq!(requeue, Duration::from_secs(2));
        }
        other => panic!("{other:?}"),
    }
    row.mirror.metadata.generation = Some(4);
    assert_eq!(
        row.step(),
        Step::Read(Read::Members),
        "a new generation tries at once"
    );
}

#[test]
fn the_reads_come_in_order_and_only_when_needed() {
    let row = Row::new("");
    assert_eq!(row.step(), Step::Read(Read::Members));
    let mut row = row.members(Ok(vec![vm("i-1", 1)]));
    assert_eq!(row.step(), Step::Read(Read::WorkloadGroups));
    row.gathered.groups = Some(Ok(BTreeMap::new()));
    assert_eq!(row.step(), Step::Read(Read::Mesh(MeshKinds::ALL)));
    row.gathered.mesh = Some(MeshRead::default());
    assert_eq!(row.step(), Step::Read(Read::EntriesVersion));
    row.gathered.entries_version = Some(None);
    assert_eq!(row.step(), Step::Read(Read::OwnedEntries));
}

#[test]
fn cloud_errors_fail_static_with_their_own_requeue() {
    let cases = [
        (
            ProviderError::Throttled {
                retry_after: Some(Duration::from_secs(7)),
            },
            ("Throttled", Duration::from_secs(7)),
        ),
        (
            ProviderError::Throttled {
                retry_after: Some(Duration::from_millis(10)),
            },
            ("Throttled", Duration::from_secs(1)),
        ),
        (
            ProviderError::Transient("reset".into()),
            ("ProviderError", Duration::from_secs(5)),
        ),
        (
            ProviderError::GroupNotFound("sim/web".into()),
            ("GroupNotFound", Duration::from_secs(5)),
        ),
    ];
    for (error, want) in cases {
        let row = Row::new("").members(Err(error.clone()));
        assert_eq!(failed_with(&row.plan()), want, "{error}");
    }
}

#[test]
fn a_group_gone_for_the_whole_grace_is_withdrawn() {
    let mut row = Row::new("").members(Err(ProviderError::GroupNotFound("sim/web".into())));
    // Later than the first answer, not earlier: a machine up for less than
    // the grace has no Instant that far back.
    let first = row.now;
    row.state.gone_since = Some(first);
    row.now = first + GRACE - Duration::from_secs(1);
    assert_eq!(
        failed_with(&row.plan()).0,
        "GroupNotFound",
        "within the grace: kept"
    );
    row.now = first + GRACE;
    assert_eq!(row.step(), Step::Read(Read::OwnedEntries));
    let plan = row.owned(&[("web-api-a", "i-1")]).plan();
    assert_eq!(plan.writes.deletes, ["web-api-a"]);
    match plan.ending {
        Ending::Withdrawn { error, why, .. } => {
            assert_eq!(error.reason(), "GroupNotFound");
            assert!(why.contains("does not exist for 600s"), "{why}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_workload_group_names_the_field_and_waits_an_interval() {
    let mut row = Row::new("").members(Ok(vec![]));
    row.gathered.groups = Some(Err(PassError::WorkloadGroupNotFound {
        index: 0,
        name: "api".into(),
        namespace: "team-a".into(),
    }));
    assert_eq!(
        failed_with(&row.plan()),
        ("WorkloadGroupNotFound", Duration::from_secs(45))
    );
    row.gathered.groups = Some(Err(PassError::Kubernetes("timeout".into())));
    assert_eq!(
        failed_with(&row.plan()),
        ("KubernetesError", Duration::from_secs(5))
    );
}

#[test]
fn an_unchanged_mirror_lists_no_entries() {
    let mut row = Row::new("").read_up_to_entries();
    let Some(Ok(members)) = &row.gathered.members else {
        unreachable!()
    };
    let clean = Clean {
        entries_version: 7,
        after: Arc::default(),
        deferred_deletes: 0,
        members: 2,
        skipped: 0,
    };
    let instances = members.instances.clone();
    row.state
        .memo
        .mark_clean(Some(3), &instances, &BTreeMap::new(), clean.clone());
    let plan = row.plan();
    assert!(plan.writes.is_empty());
    assert_eq!(
        plan.ending,
        Ending::Synced {
            interval: Duration::from_secs(45),
            how: Synced::Unchanged(clean)
        }
    );
    row.gathered.entries_version = Some(Some(8));
    assert_eq!(
        row.step(),
        Step::Read(Read::OwnedEntries),
        "the entries changed"
    );
}

#[test]
fn a_failed_entry_list_fails_the_pass() {
    let mut row = Row::new("").read_up_to_entries();
    row.gathered.owned = Some(Err("listing owned WorkloadEntries: 503".into()));
    assert_eq!(
        failed_with(&row.plan()),
        ("KubernetesError", Duration::from_secs(5))
    );
}

#[test]
fn a_planned_pass_creates_the_missing_and_deletes_the_stale() {
    let row = Row::new("")
        .read_up_to_entries()
        .owned(&[("stale-1", "i-9"), ("stale-2", "i-8")]);
    let plan = row.plan();
    let created: Vec<&str> = plan
        .writes
        .creates
        .iter()
        .map(|e| e.instance_id.as_str())
        .collect();
    assert_eq!(created, ["i-1", "i-2"]);
    assert!(plan.writes.updates.is_empty());
    assert_eq!(plan.writes.deletes.len(), 1, "maxDeletesPerPass 1");
    assert_eq!(plan.writes.deferred_deletes, 1);
    match plan.ending {
        Ending::Synced {
            how: Synced::Planned {
                members, skipped, ..
            },
            ..
        } => {
            assert_eq!(members, 2);
            assert!(skipped.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

/// The sidecar and a ServiceEntry for workload api.
const MESH: &str = "sidecar: {workloadSelector: {vm: web}}";

fn with_service(row: &mut Row) {
    row.mirror.spec.workloads[0].service = Some(crate::crd::ServiceSpec {
        kind: crate::crd::ServiceKind::ServiceEntry,
        name: None,
        hosts: vec![],
        ports: BTreeMap::new(),
    });
}

#[test]
fn mesh_objects_are_listed_once_per_kind_that_may_need_a_write() {
    // First pass since start: every kind, to find objects of options since turned off.
    let mut row = Row::new("").members(Ok(vec![vm("i-1", 1)]));
    row.gathered.groups = Some(Ok(BTreeMap::new()));
    assert_eq!(row.step(), Step::Read(Read::Mesh(MeshKinds::ALL)));
    // Known to own nothing and wanting nothing: no read at all.
    row.state.mesh_owned = Some(MeshKinds::default());
    assert_eq!(row.step(), Step::Read(Read::EntriesVersion));
    // Wanting a Sidecar and a ServiceEntry: those two kinds.
    let mut row = Row::new(MESH).members(Ok(vec![vm("i-1", 1)]));
    with_service(&mut row);
    row.gathered.groups = Some(Ok(BTreeMap::new()));
    row.state.mesh_owned = Some(MeshKinds::default());
    let want = MeshKinds::default()
        .with(MeshKind::ServiceEntry)
        .with(MeshKind::Sidecar);
    assert_eq!(row.step(), Step::Read(Read::Mesh(want)));
}

#[test]
fn mesh_writes_ride_on_a_synced_pass_even_an_unchanged_one() {
    let mut row = Row::new(MESH).read_up_to_entries().owned(&[]);
    with_service(&mut row);
    row.gathered.mesh = Some(MeshRead {
        objects: vec![ActualMesh {
            kind: MeshKind::Service,
            name: "old".into(),
            uid: "u-old".into(),
            hash: None,
        }],
        listed: MeshKinds::ALL,
        failed: vec![],
    });
    let plan = row.plan();
    let created: Vec<(MeshKind, &str)> = plan
        .mesh
        .creates
        .iter()
        .map(|o| (o.kind, o.name.as_str()))
        .collect();
    assert_eq!(
        created,
        [(MeshKind::ServiceEntry, "api"), (MeshKind::Sidecar, "web")]
    );
    assert_eq!(
        plan.mesh.deletes.len(),
        1,
        "the Service of an option turned off"
    );
    assert!(matches!(plan.ending, Ending::Synced { .. }));
}

#[test]
fn a_selector_clash_fails_the_pass_as_an_invalid_spec_and_writes_nothing() {
    let mut row = Row::new("").read_up_to_entries();
    with_service(&mut row);
    row.mirror.spec.workloads.push(crate::crd::WorkloadSpec {
        name: "api-v2".into(),
        labels: BTreeMap::from([
            ("app".into(), "api".into()),
            ("version".into(), "v2".into()),
        ]),
        ..Default::default()
    });
    let plan = row.plan();
    assert!(plan.mesh.is_empty());
    let (reason, _) = failed_with(&plan);
    assert_eq!(reason, "InvalidSpec");
}

#[test]
fn instances_events_named_are_asked_about_alone() {
    let mut row = Row::new("");
    row.named = Some(Named {
        ids: ["i-2".to_string()].into(),
        known: Arc::new(vec![vm("i-1", 1)]),
    });
    assert_eq!(row.step(), Step::Read(Read::NamedMembers));
    row.named = None;
    assert_eq!(row.step(), Step::Read(Read::Members));
}
