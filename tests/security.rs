//! Tenancy: a mirror writes only into its own namespace and reads only its
//! own namespace's WorkloadGroups; `--allowed-groups` keeps one team from
//! pulling another team's VMs into its namespace.

mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use meshmirror::app::{self, AppError, RunOptions};
use meshmirror::crd::ScalingGroupMirror;
use meshmirror::workloadentry::{EntryVersion, keys};
use meshmirror_sim::{SimCloud, SimInstance};
use meshmirror_testkit::apiserver::Verb;

/// A running controller with these options; stops when dropped. The
/// harness's waits fail at once if it ends by itself or with an error.
fn run_with(h: &Harness, opts: RunOptions) -> ControllerTask {
    let opts = RunOptions {
        sim_cloud: Some(h.sim.clone()),
        kube_qps: 0.0,
        ..opts
    };
    h.spawn_controller("main", h.service.clone(), opts)
}

async fn namespaces(h: &Harness, names: &[&str]) {
    for name in names {
        h.create_namespace(name).await;
    }
}

/// A sim cloud with these groups, `n` instances each, addresses unique across
/// the cloud.
fn sim_groups(groups: &[(&str, u8)]) -> SimCloud {
    let sim = SimCloud::new();
    for (g, (name, n)) in groups.iter().enumerate() {
        sim.ensure_group(name, "us-east-1");
        for i in 1..=*n {
            sim.add_instance(
                name,
                SimInstance::running(format!("{name}-{i}"), Ipv4Addr::new(10, 9, g as u8, i)),
            )
            .unwrap();
        }
    }
    sim
}

fn mirror_of(ns: &str, name: &str, group: &str) -> String {
    mirror_yaml(ns, name, "  workloads: [{name: app}]\n")
        .replace("group: web", &format!("group: {group}"))
}

/// Every entry in every namespace.
async fn all_entries(h: &Harness) -> Vec<DynamicObject> {
    let api: Api<DynamicObject> =
        Api::all_with(h.client.clone(), &EntryVersion::V1.workload_entries());
    api.list(&ListParams::default()).await.unwrap().items
}

async fn wait_event(h: &Harness, ns: &str, reason: &str) -> String {
    let events: Api<Event> = Api::namespaced(h.client.clone(), ns);
    let started = Instant::now();
    loop {
        h.check_controllers();
        let list = events.list(&Default::default()).await.unwrap();
        if let Some(note) = list
            .items
            .iter()
            .find(|e| e.reason.as_deref() == Some(reason))
            .and_then(|e| e.note.clone())
        {
            return note;
        }
        assert!(started.elapsed() < CONVERGE, "no {reason} Event in {ns}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn allowed_groups_deny_another_teams_group_before_the_cloud_is_asked() {
    let sim = sim_groups(&[("team-a-web", 2), ("team-b-db", 1), ("secret", 3)]);
    let h = Harness::without_controller(sim).await;
    namespaces(&h, &["team-a", "team-b"]).await;
    let _controller = run_with(
        &h,
        RunOptions {
            allowed_groups: vec!["team-a=sim:team-a-*".into(), "team-b=sim:team-b-*".into()],
            ..RunOptions::default()
        },
    );
    let requests = h.server.requests();
    h.create_mirror(&mirror_of("team-a", "web", "team-a-web"))
        .await;
    h.create_mirror(&mirror_of("team-b", "db", "team-b-db"))
        .await;
    // Strictly younger than db, whose group it will name later.
    next_second().await;
    // team-b tries to pull team-a's VMs, and a group nobody may mirror.
    h.create_mirror(&mirror_of("team-b", "steal", "team-a-web"))
        .await;
    h.create_mirror(&mirror_of("team-b", "secret", "secret"))
        .await;

    h.wait_entries("team-a", "team-a's own 2", |e| e.len() == 2)
        .await;
    h.wait_entries("team-b", "team-b's own 1", |e| e.len() == 1)
        .await;
    for name in ["steal", "secret"] {
        let status = h
            .wait_status("team-b", name, "GroupNotAllowed", |s| {
                condition(s, "Ready").is_some_and(|c| c.reason == "GroupNotAllowed")
            })
            .await;
        let ready = condition(&status, "Ready").unwrap();
        assert_eq!(ready.status, "False");
        assert!(
            ready.message.contains("not allowed in namespace team-b"),
            "{}",
            ready.message
        );
        let degraded = condition(&status, "Degraded").unwrap();
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "GroupNotAllowed")
        );
        assert_eq!((status.members, status.entries), (0, 0));
    }
    let note = wait_event(&h, "team-b", "GroupNotAllowed").await;
    assert!(note.contains("--allowed-groups"), "{note}");

    // No entry for a denied mirror anywhere, and the cloud was never asked
    // about a group nobody may mirror.
    let entries = all_entries(&h).await;
    assert!(
        entries
            .iter()
            .all(|e| !["steal", "secret"].contains(&label(e, keys::MIRROR).as_str())),
        "{:?}",
        entries.iter().map(|e| &e.metadata.name).collect::<Vec<_>>()
    );
    assert_eq!(entries.len(), 3);
    assert_eq!(h.sim.members_calls_for("secret").unwrap(), 0);
    let during = h.server.requests().since(&requests);
    assert_eq!(
        during.get(Verb::Patch, "workloadentries"),
        3,
        "only the allowed entries were written: {:?}",
        during.entries()
    );

    // Pointing the denied mirror at its own team's group makes it allowed,
    // but the group already has a mirror: the older one keeps it.
    let patch = serde_json::json!({"spec": {"provider": {"sim": {"group": "team-b-db"}}}});
    h.mirrors("team-b")
        .patch("steal", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let status = h
        .wait_status("team-b", "steal", "GroupClaimed", |s| {
            condition(s, "Ready").is_some_and(|c| c.reason == "GroupClaimed")
        })
        .await;
    let ready = condition(&status, "Ready").unwrap();
    assert!(ready.message.contains("team-b/db"), "{}", ready.message);
    assert!(
        h.entries("team-b")
            .await
            .iter()
            .all(|e| label(e, keys::MIRROR) == "db")
    );
}

#[tokio::test]
async fn a_wildcard_namespace_rule_allows_a_shared_group_everywhere() {
    let sim = sim_groups(&[("shared-dns", 1), ("team-a-web", 1)]);
    let h = Harness::without_controller(sim).await;
    namespaces(&h, &["team-a", "team-b"]).await;
    let _controller = run_with(
        &h,
        RunOptions {
            allowed_groups: vec!["*=sim:shared-*".into(), "team-a=sim:team-a-*".into()],
            ..RunOptions::default()
        },
    );
    h.create_mirror(&mirror_of("team-b", "dns", "shared-dns"))
        .await;
    h.create_mirror(&mirror_of("team-b", "web", "team-a-web"))
        .await;
    h.wait_entries("team-b", "shared in team-b", |e| e.len() == 1)
        .await;
    h.wait_status("team-b", "web", "denied", |s| {
        condition(s, "Ready").is_some_and(|c| c.reason == "GroupNotAllowed")
    })
    .await;
    assert!(
        h.entries("team-b")
            .await
            .iter()
            .all(|e| label(e, keys::MIRROR) == "dns")
    );
    // The rule lets every namespace ask for the group, but a VM belongs to
    // one namespace: a second mirror of it is outranked by the first.
    next_second().await;
    h.create_mirror(&mirror_of("team-a", "dns", "shared-dns"))
        .await;
    h.wait_status("team-a", "dns", "GroupClaimed", |s| {
        condition(s, "Ready").is_some_and(|c| c.reason == "GroupClaimed")
    })
    .await;
    assert!(h.entries("team-a").await.is_empty());
}

#[tokio::test]
async fn a_malformed_allow_list_refuses_to_start() {
    let h = Harness::without_controller(sim_with(1)).await;
    let err = app::run(
        h.service.clone(),
        RunOptions {
            sim_cloud: Some(h.sim.clone()),
            allowed_groups: vec!["team-a".into()],
            ..RunOptions::default()
        },
        std::future::pending(),
    )
    .await
    .unwrap_err();
    match err {
        AppError::Invalid(message) => {
            assert!(message.contains("NAMESPACE=PATTERN"), "{message}")
        }
        other => panic!("expected Invalid, got {other}"),
    }
    assert_eq!(h.server.requests().writes(), 0);
}

/// Entries land in the mirror's namespace, owned by that mirror; same-named
/// mirrors (of two groups) in two namespaces stay apart; an impostor in another namespace
/// that points at a mirror's uid is never touched.
#[tokio::test]
async fn entries_stay_in_their_mirrors_namespace_and_never_touch_another() {
    let sim = sim_groups(&[("web", 3), ("web-b", 3)]);
    let h = Harness::without_controller(sim).await;
    namespaces(&h, &["team-a", "team-b"]).await;
    let _controller = run_with(&h, all_groups());
    let a = h.create_mirror(&mirror_of("team-a", "web", "web")).await;
    let b = h.create_mirror(&mirror_of("team-b", "web", "web-b")).await;
    h.wait_entries("team-a", "3 in team-a", |e| e.len() == 3)
        .await;
    h.wait_entries("team-b", "3 in team-b", |e| e.len() == 3)
        .await;

    let uid_ns: BTreeMap<String, String> = [&a, &b]
        .iter()
        .map(|m| {
            (
                m.metadata.uid.clone().unwrap(),
                m.metadata.namespace.clone().unwrap(),
            )
        })
        .collect();
    for e in all_entries(&h).await {
        let owners = e.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1, "{:?}", e.metadata.name);
        assert_eq!(
            uid_ns.get(&owners[0].uid),
            e.metadata.namespace.as_ref(),
            "{:?} is not in its owner's namespace",
            e.metadata.name
        );
    }

    // An impostor in team-b claiming to be team-a's by labels and the
    // instance annotation; and one that also points its ownerReference at
    // team-a's mirror uid, which the garbage collector (the real one, and
    // the test kit's) deletes as a cross-namespace reference: not meshmirror.
    let claim = |name: &str, owner: Option<&str>| -> DynamicObject {
        let mut meta = serde_json::json!({
            "name": name, "namespace": "team-b",
            "labels": {keys::MANAGED_BY: keys::MANAGER, keys::MIRROR: "web"},
            "annotations": {keys::INSTANCE_ID: "web-1"},
        });
        if let Some(uid) = owner {
            meta["ownerReferences"] = serde_json::json!([{
                "apiVersion": "meshmirror.io/v1alpha1", "kind": "ScalingGroupMirror",
                "name": "web", "uid": uid, "controller": true,
            }]);
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": meta,
            "spec": {"address": "10.99.0.1"},
        }))
        .unwrap()
    };
    let team_b = h.entries_api("team-b");
    team_b
        .create(&PostParams::default(), &claim("impostor", None))
        .await
        .unwrap();
    let impostor = team_b.get("impostor").await.unwrap();
    team_b
        .create(
            &PostParams::default(),
            &claim("cross", a.metadata.uid.as_deref()),
        )
        .await
        .unwrap();
    h.wait_entries("team-b", "the cross-namespace claim collected", |e| {
        e.iter()
            .all(|o| o.metadata.name.as_deref() != Some("cross"))
    })
    .await;
    assert!(
        !h.server
            .write_log()
            .iter()
            .any(|w| w.name.as_deref() == Some("cross") && w.verb == Verb::Delete),
        "the garbage collector deletes the cross-namespace claim, no client does"
    );

    // Scaling in makes each mirror delete its own entries, never the impostor.
    h.sim.scale_in("web", 1).unwrap();
    h.sim.scale_in("web-b", 1).unwrap();
    h.wait_entries("team-a", "2 in team-a", |e| e.len() == 2)
        .await;
    h.wait_entries("team-b", "2 + the impostor in team-b", |e| e.len() == 3)
        .await;
    // Deleting team-b's mirror takes its entries only.
    h.mirrors("team-b")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    let left = h
        .wait_entries("team-b", "only the impostor", |e| e.len() == 1)
        .await;
    assert_eq!(left[0].metadata.name.as_deref(), Some("impostor"));
    assert_eq!(
        left[0].metadata.resource_version, impostor.metadata.resource_version,
        "the impostor was never written"
    );
    assert_eq!(h.entries("team-a").await.len(), 2);
}

#[tokio::test]
async fn a_workload_group_is_only_read_from_the_mirrors_own_namespace() {
    let h = Harness::without_controller(sim_with(1)).await;
    namespaces(&h, &["team-a", "team-b"]).await;
    let groups: Api<DynamicObject> = Api::namespaced_with(
        h.client.clone(),
        "team-b",
        &EntryVersion::V1.workload_groups(),
    );
    let group: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadGroup",
        "metadata": {"name": "payments", "namespace": "team-b"},
        "spec": {"metadata": {"labels": {"app": "payments"}},
                 "template": {"serviceAccount": "team-b-sa", "ports": {"http": 8080}}},
    }))
    .unwrap();
    groups.create(&PostParams::default(), &group).await.unwrap();
    let _controller = run_with(&h, all_groups());
    h.create_mirror(&mirror_yaml(
        "team-a",
        "web",
        "  workloads: [{name: app, workloadGroup: payments}]\n",
    ))
    .await;
    let status = h
        .wait_status("team-a", "web", "WorkloadGroupNotFound", |s| {
            condition(s, "Ready").is_some_and(|c| c.reason == "WorkloadGroupNotFound")
        })
        .await;
    assert!(
        condition(&status, "Ready")
            .unwrap()
            .message
            .contains("namespace team-a"),
        "{status:?}"
    );
    assert!(all_entries(&h).await.is_empty());
}

#[tokio::test]
async fn a_namespaced_controller_ignores_mirrors_elsewhere() {
    let h = Harness::without_controller(sim_with(2)).await;
    namespaces(&h, &["team-a", "team-b"]).await;
    let _controller = run_with(
        &h,
        RunOptions {
            namespaces: vec!["team-a".into()],
            allow_all_groups: true,
            ..RunOptions::default()
        },
    );
    h.create_mirror(&mirror_of("team-b", "web", "web")).await;
    h.create_mirror(&mirror_of("team-a", "web", "web")).await;
    h.wait_entries("team-a", "2 in team-a", |e| e.len() == 2)
        .await;
    // team-a's mirror converged after team-b's was created: team-b's was seen
    // by no one. Not a sleep: a cloud event for the group both mirrors name
    // is acknowledged only once every mirror the controller knows for it has
    // had a pass, so had it seen team-b's, that one's status would be
    // written by then.
    let acked = h.sim.events_acked();
    h.sim
        .push_event("web", meshmirror_provider::GroupEventKind::Changed);
    let started = Instant::now();
    while h.sim.events_acked() == acked {
        h.check_controllers();
        assert!(
            started.elapsed() < CONVERGE,
            "the event was never acknowledged"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let other: ScalingGroupMirror = h.mirrors("team-b").get("web").await.unwrap();
    assert!(other.status.is_none(), "{:?}", other.status);
    assert!(h.entries("team-b").await.is_empty());
}

/// `--namespace team-a,team-b`: both are watched with namespaced watches
/// (what a namespace-scoped install's Roles allow), claims are decided
/// across both, and a third namespace is not seen at all.
#[tokio::test]
async fn a_controller_of_several_namespaces_claims_across_them_and_ignores_the_rest() {
    let sim = sim_groups(&[("web", 2), ("db", 1), ("other", 1)]);
    let h = Harness::without_controller(sim).await;
    namespaces(&h, &["team-a", "team-b", "team-c"]).await;
    h.create_mirror(&mirror_of("team-a", "web", "web")).await;
    next_second().await;
    h.create_mirror(&mirror_of("team-b", "web", "web")).await;
    h.create_mirror(&mirror_of("team-b", "db", "db")).await;
    h.create_mirror(&mirror_of("team-c", "other", "other"))
        .await;
    let cluster_wide = h.server.cluster_wide_requests();
    let requests = h.server.requests();
    let _controller = run_with(
        &h,
        RunOptions {
            namespaces: vec!["team-a".into(), "team-b".into()],
            allow_all_groups: true,
            ..RunOptions::default()
        },
    );
    h.wait_entries("team-a", "team-a's 2", |e| e.len() == 2)
        .await;
    h.wait_entries("team-b", "team-b's db", |e| e.len() == 1)
        .await;
    let status = h
        .wait_status("team-b", "web", "GroupClaimed", |s| claimed_by(s).is_some())
        .await;
    assert!(claimed_by(&status).unwrap().contains("team-a/web"));
    // A change in team-b after the first lists arrives through its watch.
    h.sim.scale_out("db", 1).unwrap();
    h.wait_entries("team-b", "team-b's db scaled out", |e| e.len() == 2)
        .await;
    let other: ScalingGroupMirror = h.mirrors("team-c").get("other").await.unwrap();
    assert!(other.status.is_none(), "{:?}", other.status);
    assert!(h.entries("team-c").await.is_empty());
    // Only namespaced lists and watches: nothing cluster-wide was asked.
    let mine = h.server.requests().since(&requests);
    assert!(
        mine.get(Verb::Watch, "workloadentries") >= 2,
        "{:?}",
        mine.entries()
    );
    let wide = h.server.cluster_wide_requests().since(&cluster_wide);
    assert_eq!(wide.total(), 0, "cluster-wide: {:?}", wide.entries());
}

#[tokio::test]
async fn a_bad_namespace_list_refuses_to_start() {
    let h = Harness::without_controller(sim_with(1)).await;
    for (given, says) in [
        (
            vec!["team-a".to_string(), "Team_B".into()],
            "--namespace \"Team_B\": not a namespace name",
        ),
        (
            vec!["team-a".into(), "team-a".into()],
            "--namespace \"team-a\" is given twice",
        ),
    ] {
        let err = app::run(
            h.service.clone(),
            RunOptions {
                namespaces: given,
                allow_all_groups: true,
                sim_cloud: Some(h.sim.clone()),
                ..RunOptions::default()
            },
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains(says), "{err}");
    }
}

#[tokio::test]
async fn a_narrowed_allow_list_withdraws_entries_within_the_delete_policy() {
    let sim = sim_groups(&[("team-a-web", 5), ("team-a-api", 5), ("team-b-db", 1)]);
    let h = Harness::without_controller(sim).await;
    namespaces(&h, &["team-b"]).await;
    let mirror = |name: &str, group: &str, sync: &str| {
        mirror_yaml(
            "team-b",
            name,
            &format!("  workloads: [{{name: app}}]\n  sync: {sync}\n"),
        )
        .replace("group: web", &format!("group: {group}"))
    };
    h.create_mirror(&mirror("steal", "team-a-web", "{maxDeletesPerPass: 2}"))
        .await;
    h.create_mirror(&mirror("keep", "team-a-api", "{policy: UpsertOnly}"))
        .await;
    {
        // Before the allow-list: team-b mirrors team-a's VMs.
        let _open = run_with(&h, all_groups());
        h.wait_entries("team-b", "5 + 5 entries", |e| e.len() == 10)
            .await;
    }
    let requests = h.server.requests();
    let _narrowed = run_with(
        &h,
        RunOptions {
            allowed_groups: vec!["team-b=sim:team-b-*".into()],
            ..RunOptions::default()
        },
    );
    let left = h
        .wait_entries("team-b", "steal's entries withdrawn", |e| {
            e.iter().all(|o| label(o, keys::MIRROR) == "keep")
        })
        .await;
    assert_eq!(left.len(), 5, "UpsertOnly never deletes");
    let status = h
        .wait_status("team-b", "steal", "GroupNotAllowed", |s| {
            condition(s, "Ready").is_some_and(|c| c.reason == "GroupNotAllowed")
        })
        .await;
    assert_eq!(condition(&status, "Degraded").unwrap().status, "True");
    let note = wait_event(&h, "team-b", "EntriesWithdrawn").await;
    assert!(note.contains("--allowed-groups"), "{note}");
    let during = h.server.requests().since(&requests);
    assert_eq!(during.get(Verb::Delete, "workloadentries"), 5);
    assert_eq!(
        during.get(Verb::Patch, "workloadentries"),
        0,
        "nothing written for a denied group"
    );
}

/// Waits until the wall clock is in the next second, so that an object
/// created now has a later creationTimestamp (one-second precision, as on a
/// real API server) than every object created before: claims compare them.
async fn next_second() {
    let now = chrono::Utc::now();
    let into = u64::from(now.timestamp_subsec_millis());
    tokio::time::sleep(Duration::from_millis(1_000 - into + 20)).await;
}

fn claimed_by(status: &meshmirror::crd::ScalingGroupMirrorStatus) -> Option<String> {
    condition(status, "Ready")
        .filter(|c| c.status == "False" && c.reason == "GroupClaimed")
        .map(|c| c.message.clone())
}

/// One VM, one namespace: of two mirrors naming one group, the older claims
/// it; the other writes nothing and answers no hook, and takes over when the
/// claimant is deleted.
#[tokio::test]
async fn a_group_is_claimed_by_its_oldest_mirror_and_the_next_takes_over() {
    let sim = sim_groups(&[("web", 3)]);
    sim.set_termination_hook("web", true).unwrap();
    let h = Harness::without_controller(sim).await;
    namespaces(&h, &["team-a", "team-b"]).await;
    let _controller = run_with(&h, all_groups());
    let hooked = |ns: &str, name: &str| {
        mirror_yaml(
            ns,
            name,
            "  workloads: [{name: app}]\n  sync: {interval: 5s}\n  lifecycle: {drainSeconds: 0, terminateHook: sim-termination}\n",
        )
    };
    h.create_mirror(&hooked("team-a", "web")).await;
    h.wait_entries("team-a", "3 in team-a", |e| e.len() == 3)
        .await;
    next_second().await;
    h.create_mirror(&hooked("team-b", "web")).await;
    let status = h
        .wait_status("team-b", "web", "GroupClaimed", |s| claimed_by(s).is_some())
        .await;
    let message = claimed_by(&status).unwrap();
    assert!(message.contains("team-a/web"), "{message}");
    assert!(!is_ready(&status));
    assert!(h.entries("team-b").await.is_empty());

    // Scale-in while the claimant is paused: the hook waits, and a pass of
    // the outranked mirror (its generation bumped, then observed) does not
    // answer it.
    let pause = |paused: bool| serde_json::json!({"spec": {"paused": paused}});
    h.mirrors("team-a")
        .patch("web", &PatchParams::default(), &Patch::Merge(&pause(true)))
        .await
        .unwrap();
    h.wait_status("team-a", "web", "Paused", |s| {
        condition(s, "Ready").is_some_and(|c| c.reason == "Paused")
    })
    .await;
    let leaving = h.sim.scale_in("web", 1).unwrap();
    let bumped = h
        .mirrors("team-b")
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"sync": {"interval": "6s"}}})),
        )
        .await
        .unwrap();
    let generation = bumped.metadata.generation;
    h.wait_status("team-b", "web", "a pass of the bumped spec", |s| {
        s.observed_generation == generation && claimed_by(s).is_some()
    })
    .await;
    assert_eq!(h.sim.pending_actions().len(), 1);
    assert!(h.sim.completed_actions().is_empty());
    assert!(h.entries("team-b").await.is_empty());

    // The claimant resumes, drains and answers the hook, exactly once.
    h.mirrors("team-a")
        .patch("web", &PatchParams::default(), &Patch::Merge(&pause(false)))
        .await
        .unwrap();
    h.wait_entries("team-a", "2 in team-a", |e| e.len() == 2)
        .await;
    let started = Instant::now();
    while h.sim.completed_actions().is_empty() {
        h.check_controllers();
        assert!(started.elapsed() < CONVERGE, "the hook was not answered");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let answers = h.sim.completed_actions();
    assert_eq!(answers.len(), 1, "{answers:?}");
    assert_eq!(answers[0].0.instance_id, leaving[0]);

    // The claimant goes away: the next mirror takes the group over.
    h.mirrors("team-a")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_entries("team-b", "team-b took over", |e| e.len() == 2)
        .await;
    h.wait_status("team-b", "web", "Ready", is_ready).await;
}

/// A younger mirror that already wrote entries withdraws them when an older
/// mirror comes to name the same group (within its delete policy).
#[tokio::test]
async fn an_outranked_mirror_withdraws_the_entries_it_wrote() {
    let sim = sim_groups(&[("web", 3), ("other", 1)]);
    let h = Harness::without_controller(sim).await;
    namespaces(&h, &["team-a", "team-b"]).await;
    let _controller = run_with(&h, all_groups());
    h.create_mirror(&mirror_of("team-a", "web", "other")).await;
    h.wait_entries("team-a", "1 in team-a", |e| e.len() == 1)
        .await;
    next_second().await;
    h.create_mirror(&mirror_of("team-b", "web", "web")).await;
    h.wait_entries("team-b", "3 in team-b", |e| e.len() == 3)
        .await;

    let patch = serde_json::json!({"spec": {"provider": {"sim": {"group": "web"}}}});
    h.mirrors("team-a")
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    h.wait_entries("team-a", "3 in team-a", |e| e.len() == 3)
        .await;
    h.wait_entries("team-b", "team-b's withdrawn", |e| e.is_empty())
        .await;
    let status = h
        .wait_status("team-b", "web", "GroupClaimed", |s| claimed_by(s).is_some())
        .await;
    assert!(claimed_by(&status).unwrap().contains("team-a/web"));
    let note = wait_event(&h, "team-b", "EntriesWithdrawn").await;
    assert!(note.contains("another mirror claims this group"), "{note}");
}

/// A same-named entry that meshmirror does not own (someone wrote it by
/// hand, or another tool) is never taken over by server-side apply: it is
/// left as it is, and the mirror says so in its status and an Event.
#[tokio::test]
async fn a_same_named_entry_meshmirror_does_not_own_is_left_alone_and_reported() {
    let sim = sim_groups(&[("web", 2)]);
    let h = Harness::without_controller(sim).await;
    namespaces(&h, &["team-a"]).await;
    let name = meshmirror::core::names::entry_name("web", "app", "web-1");
    let theirs: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadEntry",
        "metadata": {"name": name, "namespace": "team-a", "labels": {"owner": "someone-else"}},
        "spec": {"address": "10.77.0.1", "labels": {"app": "theirs"}},
    }))
    .unwrap();
    let theirs = h
        .entries_api("team-a")
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let _controller = run_with(&h, all_groups());
    h.create_mirror(&mirror_of("team-a", "web", "web")).await;
    h.wait_status("team-a", "web", "EntryNameTaken", |s| {
        condition(s, "Ready").is_some_and(|c| c.reason == "EntryNameTaken")
    })
    .await;
    let note = wait_event(&h, "team-a", "EntryNameTaken").await;
    assert!(note.contains(&name), "{note}");
    // The other VM's entry is written; the taken name is not touched.
    let entries = h
        .wait_entries("team-a", "the other VM's entry and theirs", |e| {
            e.len() == 2
        })
        .await;
    let now = entries
        .iter()
        .find(|e| e.metadata.name.as_deref() == Some(name.as_str()))
        .unwrap();
    assert_eq!(
        now.metadata.resource_version,
        theirs.metadata.resource_version
    );
    assert_eq!(now.metadata.owner_references, None);
    assert_eq!(now.data["spec"]["address"], "10.77.0.1");
    // Once they delete theirs, meshmirror writes its own.
    h.entries_api("team-a")
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    h.wait_status("team-a", "web", "Synced", |s| {
        condition(s, "Ready").is_some_and(|c| c.reason == "Synced")
    })
    .await;
    let mine = h.entries_api("team-a").get(&name).await.unwrap();
    assert_eq!(mine.data["spec"]["address"], "10.9.0.1");
}

/// `drainSeconds: 0` and `launchTimeoutSeconds: 0` with `onLaunchTimeout:
/// Abandon` would let a mirror release or kill another team's VMs at once if
/// it could answer their hooks. It cannot: a group it may not mirror is
/// refused before the cloud is asked, and on its own group a hook the group
/// does not have is reported (Degraded, HookNotFound) and never answered.
#[tokio::test]
async fn hooks_of_a_group_the_mirror_does_not_own_are_never_answered() {
    let sim = sim_groups(&[("team-a-web", 2), ("team-b-db", 1)]);
    sim.set_termination_hook("team-a-web", true).unwrap();
    sim.set_launch_hook("team-a-web", true).unwrap();
    let h = Harness::without_controller(sim).await;
    namespaces(&h, &["team-a", "team-b"]).await;
    let _controller = run_with(
        &h,
        RunOptions {
            allowed_groups: vec!["team-a=sim:team-a-*".into(), "team-b=sim:team-b-*".into()],
            ..RunOptions::default()
        },
    );
    let greedy = "  workloads: [{name: app}]\n  sync: {interval: 5s}\n  lifecycle: {drainSeconds: 0, terminateHook: sim-termination, launchTimeoutSeconds: 0, onLaunchTimeout: Abandon, launchHook: sim-launch}\n";
    let mirror = |ns: &str, name: &str, group: &str| {
        mirror_yaml(ns, name, greedy).replace("group: web", &format!("group: {group}"))
    };
    // team-b names team-a's group, and its own group that has no hooks.
    h.create_mirror(&mirror("team-b", "steal", "team-a-web"))
        .await;
    h.create_mirror(&mirror("team-b", "db", "team-b-db")).await;
    h.wait_status("team-b", "steal", "GroupNotAllowed", |s| {
        condition(s, "Ready").is_some_and(|c| c.reason == "GroupNotAllowed")
    })
    .await;
    let status = h
        .wait_status("team-b", "db", "HookNotFound", |s| {
            condition(s, "Degraded").is_some_and(|c| c.reason == "HookNotFound")
        })
        .await;
    assert!(is_ready(&status), "the entries are still written");
    let message = &condition(&status, "Degraded").unwrap().message;
    assert!(
        message.contains("spec.lifecycle.terminateHook \"sim-termination\" is not a terminate hook of group sim:team-b-db (its terminate hooks: none)"),
        "{message}"
    );
    let note = wait_event(&h, "team-b", "HookNotFound").await;
    assert_eq!(&note, message);

    // team-a's VMs come and go, held by their hooks; with no mirror of
    // team-a's own, nobody answers them.
    let leaving = h.sim.scale_in("team-a-web", 1).unwrap();
    let launched = h.sim.scale_out("team-a-web", 1).unwrap();
    assert_ne!(launched, leaving);
    let calls = h.sim.members_calls_for("team-b-db").unwrap();
    wait_members_calls(
        &h,
        Some("team-b-db"),
        calls + 2,
        "two more passes of team-b's mirror",
    )
    .await;
    assert_eq!(h.sim.pending_actions().len(), 2);
    assert!(h.sim.completed_actions().is_empty());
}

/// Status and Events are read by every team with access to the namespace;
/// a cloud's error text naming the platform's identity (the role's ARN, a
/// managed identity's object id) shows the error but not the identity.
#[tokio::test]
async fn status_and_events_do_not_show_the_platforms_cloud_identity() {
    let sim = sim_groups(&[("web", 1)]);
    sim.fail_always(
        "web",
        Some(meshmirror_provider::ProviderError::Permanent(
            "AccessDenied: User: arn:aws:sts::123456789012:assumed-role/platform-meshmirror/i-0abc is not authorized to perform: autoscaling:DescribeAutoScalingGroups; client 'f3b2a1c4-0d5e-4f6a-8b7c-9d0e1f2a3b4c'".into(),
        )),
    )
    .unwrap();
    let h = Harness::without_controller(sim).await;
    namespaces(&h, &["team-a"]).await;
    let _controller = run_with(&h, all_groups());
    h.create_mirror(&mirror_of("team-a", "web", "web")).await;
    let status = h
        .wait_status("team-a", "web", "ProviderError", |s| {
            condition(s, "Ready").is_some_and(|c| c.reason == "ProviderError")
        })
        .await;
    let message = &condition(&status, "Ready").unwrap().message;
    assert!(
        message.starts_with("AccessDenied: User: arn:(redacted) is not authorized to perform: autoscaling:DescribeAutoScalingGroups; client '(id redacted)'"),
        "{message}"
    );
    let note = wait_event(&h, "team-a", "ProviderError").await;
    assert_eq!(&note, message);
    assert!(!note.contains("123456789012") && !note.contains("platform-meshmirror"));
}
