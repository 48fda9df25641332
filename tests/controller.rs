//! The controller end to end on the test kit's API server and the simulated cloud.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use meshmirror::workloadentry::keys;
use meshmirror_provider::{Health, ProviderError};
use meshmirror_sim::SimInstance;
use meshmirror_testkit::apiserver::{Injected, Match, Verb};

#[tokio::test]
async fn scale_out_and_in_follow_the_group_with_one_entry_per_workload() {
    let h = Harness::start(sim_with(3)).await;
    h.create_mirror(&mirror_yaml("default", "web", TWO_WORKLOADS))
        .await;

    let entries = h
        .wait_entries("default", "3 VMs x 2 workloads", |e| e.len() == 6)
        .await;
    let api: Vec<_> = entries
        .iter()
        .filter(|e| label(e, keys::WORKLOAD) == "api")
        .collect();
    assert_eq!(api.len(), 3);
    for e in &api {
        assert_eq!(e.data["spec"]["serviceAccount"], "api-sa");
        assert_eq!(e.data["spec"]["ports"]["http"], 8080);
        assert_eq!(e.data["spec"]["labels"]["app"], "api");
        assert_eq!(label(e, keys::MANAGED_BY), "meshmirror");
        assert_eq!(label(e, keys::MIRROR), "web");
        assert_eq!(label(e, keys::PROVIDER), "sim");
        assert_eq!(annotation(e, keys::GROUP), "sim:web");
        let owner = &e.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "ScalingGroupMirror");
        assert_eq!(owner.controller, Some(true));
        assert!(e.data["spec"]["locality"] == "us-east-1/us-east-1a");
    }
    let exporter = entries
        .iter()
        .find(|e| label(e, keys::WORKLOAD) == "exporter")
        .unwrap();
    assert_eq!(exporter.data["spec"]["serviceAccount"], "exporter-sa");
    assert_eq!(exporter.data["spec"]["ports"]["metrics"], 9100);

    h.sim.scale_out("web", 3).unwrap();
    h.wait_entries("default", "6 VMs", |e| e.len() == 12).await;
    let status = h
        .wait_status("default", "web", "6 members", |s| {
            s.members == 6 && s.entries == 12
        })
        .await;
    assert!(is_ready(&status), "{status:?}");

    h.sim.scale_in("web", 4).unwrap();
    h.wait_entries("default", "2 VMs", |e| e.len() == 4).await;
    h.wait_status("default", "web", "2 members", |s| {
        s.members == 2 && s.entries == 4
    })
    .await;
}

#[tokio::test]
async fn scale_in_through_the_hook_deletes_entries_before_the_hook_completes() {
    let sim = sim_with(3);
    sim.set_termination_hook("web", true).unwrap();
    let h = Harness::start(sim).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        &format!(
            "{TWO_WORKLOADS}  lifecycle:\n    drainSeconds: 1\n    terminateHook: sim-termination\n"
        ),
    ))
    .await;
    let entries = h
        .wait_entries("default", "6 entries", |e| e.len() == 6)
        .await;

    let leaving = h.sim.scale_in("web", 1).unwrap();
    let leaving_entries: std::collections::BTreeSet<String> = entries
        .iter()
        .filter(|o| annotation(o, keys::INSTANCE_ID) == leaving[0])
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    assert_eq!(leaving_entries.len(), 2, "one per workload");
    assert_eq!(h.sim.instances("web").unwrap().len(), 3, "held by the hook");

    let started = Instant::now();
    while h.sim.completed_actions().is_empty() {
        h.check_controllers();
        assert!(started.elapsed() < CONVERGE, "the hook was never completed");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let completed = h.sim.completed_actions();
    assert_eq!(completed.len(), 1);
    let (action, outcome, completed_at) = &completed[0];
    assert_eq!(action.instance_id, leaving[0]);
    assert_eq!(*outcome, meshmirror_provider::Outcome::Continue);
    // Order from the records, not from when this test looked: the server
    // logs each delete before it answers it, the controller starts the drain
    // no earlier than that answer, and the sim stamps the completion when it
    // is called. So however slow the machine, the completion comes at least
    // drainSeconds after the last of the leaving VM's entries was deleted.
    let deletes: Vec<_> = h
        .server
        .write_log()
        .into_iter()
        .filter(|w| {
            w.verb == Verb::Delete
                && w.resource == "workloadentries"
                && w.succeeded()
                && w.name.as_ref().is_some_and(|n| leaving_entries.contains(n))
        })
        .collect();
    assert_eq!(
        deletes.len(),
        2,
        "each of the leaving VM's entries deleted once: {deletes:?}"
    );
    let last_gone = deletes.iter().map(|w| w.at).max().unwrap();
    assert!(
        *completed_at >= last_gone + Duration::from_secs(1),
        "the hook completed {:?} after the entries were gone: before the 1s drain",
        completed_at.saturating_duration_since(last_gone)
    );
    assert_eq!(h.sim.instances("web").unwrap().len(), 2);
    // The remaining entries were not touched.
    let left = h.entries("default").await;
    assert_eq!(left.len(), 4);
    assert!(
        left.iter()
            .all(|o| annotation(o, keys::INSTANCE_ID) != leaving[0])
    );
}

#[tokio::test]
async fn steady_state_passes_write_nothing() {
    let h = Harness::without_controller(sim_with(4)).await;
    h.create_mirror(&mirror_yaml("default", "web", TWO_WORKLOADS))
        .await;
    let reconciler = h.reconciler();
    let mirror = h.mirrors("default").get("web").await.unwrap();
    let first = reconciler.pass(&mirror).await;
    assert!(first.ok(), "{first:?}");
    assert_eq!(first.created, 8);
    assert!(first.status_written);

    let before = h.server.requests();
    for _ in 0..10 {
        let mirror = h.mirrors("default").get("web").await.unwrap();
        let report = reconciler.pass(&mirror).await;
        assert!(report.ok(), "{report:?}");
        assert_eq!(
            (
                report.created,
                report.updated,
                report.deleted,
                report.status_written
            ),
            (0, 0, 0, false)
        );
    }
    let during = h.server.requests().since(&before);
    assert_eq!(
        during.writes(),
        0,
        "steady state wrote: {:?}",
        during.entries()
    );
    assert!(during.total() > 0, "the passes did read");
}

/// A pass's own status write does not cause another pass: the watch of
/// mirrors lets through changes of the spec (its generation) and deletion,
/// not of status. Without that filter each pass was followed by a second
/// one, which for a pass an event made meant reading the whole group again.
#[tokio::test]
async fn a_pass_does_not_run_again_for_its_own_status_write() {
    let h = Harness::start(sim_with(2)).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n  sync: {interval: 1h}\n",
    ))
    .await;
    h.wait_status("default", "web", "the first pass's status", |s| {
        s.entries == 2
    })
    .await;
    // Each change below makes one pass that writes status. A pass its own
    // write echoed would follow within milliseconds; the quiet second after
    // each leaves room for it to show.
    let quiet = || tokio::time::sleep(Duration::from_secs(1));
    quiet().await;
    let calls = h.sim.members_calls_for("web").unwrap();
    for (i, entries) in [(1, 3), (2, 4)] {
        h.sim.scale_out("web", 1).unwrap();
        h.wait_status("default", "web", "the event's pass's status", |s| {
            s.entries == entries
        })
        .await;
        quiet().await;
        assert_eq!(
            h.sim.members_calls_for("web").unwrap(),
            calls + i,
            "passes after scale-out {i}: one per event, none for its status write"
        );
    }
    // A spec change still makes a pass at once.
    h.mirrors("default")
        .patch(
            "web",
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"spec": {"workloads": [{"name": "app"}, {"name": "two"}]}}),
            ),
        )
        .await
        .unwrap();
    h.wait_entries("default", "8 entries for two workloads", |e| e.len() == 8)
        .await;
}

#[tokio::test]
async fn label_and_port_changes_update_in_place() {
    let h = Harness::start(sim_with(2)).await;
    h.create_mirror(&mirror_yaml("default", "web", TWO_WORKLOADS))
        .await;
    let before = h
        .wait_entries("default", "4 entries", |e| e.len() == 4)
        .await;
    let uids: Vec<_> = before.iter().map(|e| e.metadata.uid.clone()).collect();
    let counts = h.server.requests();

    let patch = serde_json::json!({"spec": {"workloads": [
        {"name": "api", "labels": {"app": "api", "version": "v2"}, "ports": {"http": 8081}, "serviceAccount": "api-sa"},
        {"name": "exporter", "labels": {"app": "exporter"}, "ports": {"metrics": 9100}, "serviceAccount": "exporter-sa"}
    ]}});
    h.mirrors("default")
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    let after = h
        .wait_entries("default", "api entries at v2 on 8081", |e| {
            e.iter()
                .filter(|o| label(o, keys::WORKLOAD) == "api")
                .all(|o| label(o, "version") == "v2" && o.data["spec"]["ports"]["http"] == 8081)
        })
        .await;
    assert_eq!(
        after
            .iter()
            .map(|e| e.metadata.uid.clone())
            .collect::<Vec<_>>(),
        uids,
        "same objects, updated in place"
    );
    let during = h.server.requests().since(&counts);
    assert_eq!(during.get(Verb::Delete, "workloadentries"), 0);
    assert_eq!(during.get(Verb::Create, "workloadentries"), 0);

    // Dropping the label removes it (server-side apply ownership).
    let patch = serde_json::json!({"spec": {"workloads": [
        {"name": "api", "labels": {"app": "api"}, "ports": {"http": 8081}, "serviceAccount": "api-sa"},
        {"name": "exporter", "labels": {"app": "exporter"}, "ports": {"metrics": 9100}, "serviceAccount": "exporter-sa"}
    ]}});
    h.mirrors("default")
        .patch("web", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    h.wait_entries("default", "version label gone", |e| {
        e.len() == 4 && e.iter().all(|o| label(o, "version").is_empty())
    })
    .await;
}

#[tokio::test]
async fn provider_failure_deletes_nothing_then_recovers() {
    let h = Harness::start(sim_with(3)).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n  sync: {interval: 5s}\n",
    ))
    .await;
    h.wait_entries("default", "3 entries", |e| e.len() == 3)
        .await;

    h.sim
        .fail_always(
            "web",
            Some(ProviderError::Transient("cloud API down".into())),
        )
        .unwrap();
    h.sim.scale_in("web", 2).unwrap();
    let status = h
        .wait_status("default", "web", "Degraded", |s| {
            condition(s, "Degraded").is_some_and(|c| c.status == "True")
        })
        .await;
    let degraded = condition(&status, "Degraded").unwrap();
    assert_eq!(degraded.reason, "ProviderError");
    assert!(
        degraded.message.contains("cloud API down"),
        "{}",
        degraded.message
    );
    assert_eq!(condition(&status, "Ready").unwrap().status, "False");
    assert_eq!(
        h.entries("default").await.len(),
        3,
        "fail static: nothing deleted"
    );

    h.sim.fail_always("web", None).unwrap();
    h.wait_entries("default", "recovered to 1 entry", |e| e.len() == 1)
        .await;
    h.wait_status("default", "web", "Ready again", is_ready)
        .await;
}

#[tokio::test]
async fn foreign_entries_are_never_touched() {
    let h = Harness::start(sim_with(1)).await;
    let entries = h.entries_api("default");
    let foreign = |name: &str, labels: serde_json::Value| {
        serde_json::from_value::<kube::api::DynamicObject>(serde_json::json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "WorkloadEntry",
            "metadata": {"name": name, "namespace": "default", "labels": labels,
                "annotations": {"istio.io/autoRegistrationGroup": "web"}},
            "spec": {"address": "10.9.9.9"}
        }))
        .unwrap()
    };
    // Istio's own auto-registered entry, and one that claims to be ours but
    // has no ownerReference to the mirror.
    entries
        .create(
            &PostParams::default(),
            &foreign("auto-registered", serde_json::json!({"app": "x"})),
        )
        .await
        .unwrap();
    entries
        .create(
            &PostParams::default(),
            &foreign(
                "impostor",
                serde_json::json!({keys::MANAGED_BY: "meshmirror", keys::MIRROR: "web"}),
            ),
        )
        .await
        .unwrap();
    let before: Vec<_> = h.entries("default").await;

    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n",
    ))
    .await;
    h.wait_entries("default", "ours plus the two foreign", |e| e.len() == 3)
        .await;
    h.sim.scale_in("web", 1).unwrap();
    let after = h
        .wait_entries("default", "ours gone", |e| e.len() == 2)
        .await;
    assert_eq!(
        after
            .iter()
            .map(|e| (&e.metadata.name, &e.metadata.resource_version))
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|e| (&e.metadata.name, &e.metadata.resource_version))
            .collect::<Vec<_>>(),
        "foreign entries unchanged"
    );
}

#[tokio::test]
async fn deleting_the_mirror_garbage_collects_its_entries() {
    let h = Harness::start(sim_with(2)).await;
    h.create_mirror(&mirror_yaml("default", "web", TWO_WORKLOADS))
        .await;
    h.wait_entries("default", "4 entries", |e| e.len() == 4)
        .await;
    h.mirrors("default")
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_entries("default", "all gone", |e| e.is_empty())
        .await;
}

#[tokio::test]
async fn invalid_specs_are_rejected_or_reported_without_writes() {
    let h = Harness::start(sim_with(2)).await;
    // The CRD schema rejects what it can express.
    let bad: Result<meshmirror::crd::ScalingGroupMirror, _> =
        serde_yaml::from_str(&mirror_yaml("default", "empty", "  workloads: []\n"));
    let err = h
        .mirrors("default")
        .create(&PostParams::default(), &bad.unwrap())
        .await
        .unwrap_err();
    match err {
        kube::Error::Api(s) => {
            assert_eq!(s.code, 422, "{s:?}");
            assert!(s.message.contains("spec.workloads"), "{}", s.message);
        }
        other => panic!("expected 422, got {other}"),
    }

    // What only meshmirror can check: Ready=False InvalidSpec, no entries.
    let before = h.server.requests();
    h.create_mirror(&mirror_yaml(
        "default",
        "tight",
        "  workloads: [{name: app}]\n  sync: {interval: 1s}\n",
    ))
    .await;
    let status = h
        .wait_status("default", "tight", "InvalidSpec", |s| {
            condition(s, "Ready").is_some_and(|c| c.reason == "InvalidSpec")
        })
        .await;
    let ready = condition(&status, "Ready").unwrap();
    assert_eq!(ready.status, "False");
    assert!(
        ready.message.contains("spec.sync.interval") && ready.message.contains("5s"),
        "{}",
        ready.message
    );
    let during = h.server.requests().since(&before);
    assert_eq!(during.get(Verb::Patch, "workloadentries"), 0);
    assert!(h.entries("default").await.is_empty());
}

#[tokio::test]
async fn instances_without_the_chosen_address_are_skipped_and_counted() {
    let sim = sim_with(0);
    sim.add_instance(
        "web",
        SimInstance::running("i-pub", std::net::Ipv4Addr::new(10, 0, 0, 1))
            .with_public_ipv4(std::net::Ipv4Addr::new(203, 0, 113, 1)),
    )
    .unwrap();
    sim.add_instance(
        "web",
        SimInstance::running("i-priv", std::net::Ipv4Addr::new(10, 0, 0, 2)),
    )
    .unwrap();
    let h = Harness::start(sim).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  address: PublicIPv4\n  workloads: [{name: app}]\n",
    ))
    .await;
    let entries = h
        .wait_entries("default", "one entry", |e| e.len() == 1)
        .await;
    assert_eq!(entries[0].data["spec"]["address"], "203.0.113.1");
    let status = h
        .wait_status("default", "web", "skipped counted", |s| s.skipped == 1)
        .await;
    assert_eq!(status.members, 2);
    // An Event says so.
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(h.client.clone(), "default");
    let started = Instant::now();
    loop {
        let list = events.list(&Default::default()).await.unwrap();
        if list.items.iter().any(|e| {
            e.reason.as_deref() == Some("InstancesSkipped")
                && e.note.as_deref().unwrap_or("").contains("i-priv")
        }) {
            break;
        }
        assert!(
            started.elapsed() < CONVERGE,
            "no InstancesSkipped event: {:?}",
            list.items
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn cloud_health_is_written_as_the_healthy_condition() {
    let h = Harness::start(sim_with(2)).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  health: Cloud\n  workloads: [{name: app}]\n",
    ))
    .await;
    let healthy = |o: &kube::api::DynamicObject| {
        o.data["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Healthy"))
            .and_then(|c| c["status"].as_str())
            .map(str::to_string)
    };
    h.wait_entries("default", "healthy", |e| {
        e.len() == 2 && e.iter().all(|o| healthy(o).as_deref() == Some("True"))
    })
    .await;
    h.sim.set_health("web", "i-02", Health::Unhealthy).unwrap();
    let entries = h
        .wait_entries("default", "i-02 unhealthy", |e| {
            e.iter().any(|o| {
                annotation(o, keys::INSTANCE_ID) == "i-02" && healthy(o).as_deref() == Some("False")
            })
        })
        .await;
    assert_eq!(
        entries.len(),
        2,
        "an unhealthy VM keeps its entry, marked unhealthy"
    );
    assert_eq!(annotation(&entries[0], keys::HEALTH_CHECKS), "true");
}

#[tokio::test]
async fn api_server_faults_are_retried_until_converged() {
    let h = Harness::start(sim_with(2)).await;
    let faults = h.server.faults();
    faults.fail_next(
        Match::any().verb(Verb::Patch).resource("workloadentries"),
        3,
        Injected::Internal,
    );
    faults.fail_next(
        Match::any().verb(Verb::Patch).resource("workloadentries"),
        2,
        Injected::Conflict,
    );
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n  sync: {interval: 5s}\n",
    ))
    .await;
    h.wait_entries("default", "2 entries despite 500s and 409s", |e| {
        e.len() == 2
    })
    .await;

    // Watches dropped and history compacted (410 on the next watch).
    faults.close_watches();
    faults.compact();
    h.sim.scale_out("web", 1).unwrap();
    h.wait_entries("default", "3 entries after watch drop", |e| e.len() == 3)
        .await;

    // The API server goes down for a while; a change made meanwhile lands after.
    faults.go_down().await;
    h.sim.scale_out("web", 1).unwrap();
    // Not a sleep: a pass that starts after the change sees it while the
    // server is down (it asks the cloud, then its writes fail); the pass of a
    // second event asking the cloud as well shows that the first one has
    // ended, with the server still down (passes of one mirror never overlap).
    let calls = h.sim.members_calls();
    wait_members_calls(&h, None, calls + 1, "a pass during the outage").await;
    h.sim
        .push_event("web", meshmirror_provider::GroupEventKind::Changed);
    wait_members_calls(&h, None, calls + 2, "the next pass during the outage").await;
    faults.come_up().expect("server comes back on its port");
    h.wait_entries("default", "4 entries after the outage", |e| e.len() == 4)
        .await;
    let names: Vec<_> = h
        .entries("default")
        .await
        .iter()
        .map(|e| e.metadata.name.clone())
        .collect();
    let unique: std::collections::BTreeSet<_> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "no duplicates");
}

#[tokio::test]
async fn mirrors_write_only_into_their_own_namespace() {
    let h = Harness::start(sim_with(2)).await;
    let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(h.client.clone());
    for name in ["team-a", "team-b"] {
        let _ = ns
            .create(
                &PostParams::default(),
                &k8s_openapi::api::core::v1::Namespace {
                    metadata: ObjectMeta {
                        name: Some(name.into()),
                        ..Default::default()
                    },
                    ..Default::default()
                },
            )
            .await;
    }
    h.create_mirror(&mirror_yaml(
        "team-a",
        "web",
        "  workloads: [{name: app}]\n",
    ))
    .await;
    h.wait_entries("team-a", "2 in team-a", |e| e.len() == 2)
        .await;
    assert!(h.entries("team-b").await.is_empty());
    assert!(h.entries("default").await.is_empty());
}

#[tokio::test]
async fn a_cloud_event_triggers_a_pass_at_once_and_is_acknowledged_after_it() {
    let h = Harness::start(sim_with(1)).await;
    // An interval far beyond the test's patience: only the event can do it.
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n  sync: {interval: 1h}\n",
    ))
    .await;
    h.wait_entries("default", "1 entry", |e| e.len() == 1).await;
    h.wait_status("default", "web", "the first pass's status", |s| {
        s.entries == 1
    })
    .await;
    let acked = h.sim.events_acked();
    let before = h.server.requests();
    // The server holds the pass's last write, its status, for a while: the
    // events must not be acknowledged while it is in flight.
    h.server.faults().delay(
        Match::any()
            .verb(Verb::Patch)
            .resource("scalinggroupmirrors/status"),
        Duration::from_secs(2),
    );
    // Two instances, two events.
    h.sim.scale_out("web", 2).unwrap();
    let started = Instant::now();
    while h
        .server
        .requests()
        .since(&before)
        .get(Verb::Patch, "scalinggroupmirrors/status")
        == 0
    {
        h.check_controllers();
        assert!(
            started.elapsed() < CONVERGE,
            "the event's pass never wrote its status"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(
        h.sim.events_acked(),
        acked,
        "an event was acknowledged before its pass had written its status"
    );
    // The entries came first, and are written by now.
    assert_eq!(h.entries("default").await.len(), 3);
    // Then both events are acknowledged, once the status is written.
    while h.sim.events_acked() < acked + 2 {
        h.check_controllers();
        assert!(
            started.elapsed() < CONVERGE,
            "acknowledged {} of 2 events",
            h.sim.events_acked() - acked
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(h.status("default", "web").await.entries, 3);
    assert_eq!(h.sim.events_acked(), acked + 2);
    h.server.faults().clear();
}

#[tokio::test]
async fn an_event_is_not_acknowledged_while_its_pass_fails() {
    let h = Harness::start(sim_with(1)).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n  sync: {interval: 1h}\n",
    ))
    .await;
    h.wait_entries("default", "1 entry", |e| e.len() == 1).await;
    h.sim
        .fail_always("web", Some(ProviderError::Transient("down".into())))
        .unwrap();
    let acked = h.sim.events_acked();
    h.sim.scale_out("web", 1).unwrap();
    h.wait_status("default", "web", "Degraded", |s| {
        condition(s, "Degraded").is_some_and(|c| c.status == "True")
    })
    .await;
    assert_eq!(
        h.sim.events_acked(),
        acked,
        "unhandled event stays unacknowledged"
    );
    h.sim.fail_always("web", None).unwrap();
    h.wait_entries("default", "2 entries after recovery", |e| e.len() == 2)
        .await;
    let started = Instant::now();
    while h.sim.events_acked() <= acked && started.elapsed() < CONVERGE {
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(h.sim.events_acked() > acked);
}

#[tokio::test]
async fn dry_run_once_writes_nothing_and_once_reports_failure() {
    let h = Harness::without_controller(sim_with(2)).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n",
    ))
    .await;
    let before = h.server.requests();
    let ok = meshmirror::app::run(
        h.service.clone(),
        meshmirror::app::RunOptions {
            sim_cloud: Some(h.sim.clone()),
            dry_run: true,
            once: true,
            allow_all_groups: true,
            ..Default::default()
        },
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(ok);
    assert_eq!(h.server.requests().since(&before).writes(), 0);
    assert!(h.entries("default").await.is_empty());

    h.sim
        .fail_always("web", Some(ProviderError::Permanent("no access".into())))
        .unwrap();
    let ok = meshmirror::app::run(
        h.service.clone(),
        meshmirror::app::RunOptions {
            sim_cloud: Some(h.sim.clone()),
            once: true,
            allow_all_groups: true,
            ..Default::default()
        },
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(!ok, "--once exits non-zero when a pass failed");
}

#[tokio::test]
async fn the_demo_runs_to_the_end() {
    meshmirror::demo::run(false).await.expect("demo succeeds");
}

/// The demo's steps on the run's backend (the real control plane with
/// `MESHMIRROR_KUBE=real`), not only on the server the demo starts.
#[tokio::test]
async fn the_demo_scenario_runs_on_the_runs_backend() {
    let server = server().await;
    let mut out = Vec::new();
    meshmirror::demo::scenario(server.client(), &mut out, async { Ok(()) })
        .await
        .expect("the demo's scenario succeeds");
    let out = String::from_utf8(out).unwrap();
    for step in [
        "1. mirror created",
        "2. scale out",
        "3. scale in",
        "4. label version=v2",
        "  Service       exporter  selects app=node-exporter ports 9100->9100",
        "  ServiceEntry  api       hosts api.demo.svc.cluster.local",
        "  Sidecar       web       proxies app=web-vm inbound 127.0.0.1:8080,127.0.0.1:9100",
        "condition MeshObjects=True (Applied)",
        "condition NetworksReachable=True (Reachable)",
        "demo done",
    ] {
        assert!(out.contains(step), "{step} missing from:\n{out}");
    }
    assert!(
        out.contains("hooks answered CONTINUE after the 2s drain: 2 of 2"),
        "{out}"
    );
}

#[tokio::test]
async fn workload_groups_give_defaults_and_their_changes_apply_at_once() {
    let h = Harness::start(sim_with(1)).await;
    // An interval far beyond the test's patience: only the WorkloadGroup
    // watch can bring the group's changes.
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app, workloadGroup: reviews, labels: {version: v2}}]\n  sync: {interval: 1h}\n",
    ))
    .await;
    let status = h
        .wait_status("default", "web", "WorkloadGroupNotFound", |s| {
            condition(s, "Ready").is_some_and(|c| c.reason == "WorkloadGroupNotFound")
        })
        .await;
    let message = &condition(&status, "Ready").unwrap().message;
    assert!(
        message.contains("spec.workloads[0].workloadGroup") && message.contains("reviews"),
        "{message}"
    );
    assert!(h.entries("default").await.is_empty());

    let groups: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
        h.client.clone(),
        "default",
        &meshmirror::workloadentry::EntryVersion::V1.workload_groups(),
    );
    let group: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadGroup",
        "metadata": {"name": "reviews", "namespace": "default"},
        "spec": {
            "metadata": {"labels": {"app": "reviews", "version": "v1"}},
            "template": {"ports": {"http": 9080}, "serviceAccount": "bookinfo-reviews", "network": "vm-net"}
        }
    }))
    .unwrap();
    groups.create(&PostParams::default(), &group).await.unwrap();
    let entries = h
        .wait_entries("default", "entry with the group's defaults", |e| {
            e.len() == 1
        })
        .await;
    let spec = &entries[0].data["spec"];
    assert_eq!(spec["labels"]["app"], "reviews");
    assert_eq!(spec["labels"]["version"], "v2", "inline fields override");
    assert_eq!(spec["ports"]["http"], 9080);
    assert_eq!(spec["serviceAccount"], "bookinfo-reviews");
    assert_eq!(spec["network"], "vm-net");
    assert_eq!(spec["labels"][keys::WORKLOAD_NAME], "reviews");

    let before = h.server.requests();
    groups
        .patch(
            "reviews",
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"template": {"ports": {"http": 9081}}}})),
        )
        .await
        .unwrap();
    h.wait_entries("default", "the group's new port", |e| {
        e.len() == 1 && e[0].data["spec"]["ports"]["http"] == 9081
    })
    .await;
    let during = h.server.requests().since(&before);
    assert_eq!(
        during.get(Verb::Get, "workloadgroups"),
        0,
        "passes read WorkloadGroups from the watch cache"
    );

    groups
        .delete("reviews", &DeleteParams::default())
        .await
        .unwrap();
    h.wait_status("default", "web", "WorkloadGroupNotFound again", |s| {
        condition(s, "Ready").is_some_and(|c| c.reason == "WorkloadGroupNotFound")
    })
    .await;
    assert_eq!(h.entries("default").await.len(), 1, "fail static: kept");
}

#[tokio::test]
async fn entries_can_be_written_as_v1beta1_for_older_meshes() {
    let h = Harness::without_controller(sim_with(1)).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n",
    ))
    .await;
    let ok = meshmirror::app::run(
        h.service.clone(),
        meshmirror::app::RunOptions {
            sim_cloud: Some(h.sim.clone()),
            once: true,
            version: meshmirror::workloadentry::EntryVersion::V1beta1,
            allow_all_groups: true,
            ..Default::default()
        },
        std::future::pending(),
    )
    .await
    .unwrap();
    assert!(ok);
    let entries = h.entries("default").await;
    assert_eq!(entries.len(), 1);
    let managed = entries[0].metadata.managed_fields.as_ref().unwrap();
    assert!(
        managed
            .iter()
            .any(|m| m.manager.as_deref() == Some("meshmirror")
                && m.api_version.as_deref() == Some("networking.istio.io/v1beta1")),
        "{managed:?}"
    );
}

#[tokio::test]
async fn an_advisory_event_is_recorded_on_the_mirror_and_changes_nothing() {
    let h = Harness::start(sim_with(2)).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n",
    ))
    .await;
    let before = h
        .wait_entries("default", "2 entries", |e| e.len() == 2)
        .await;
    h.sim.push_event(
        "web",
        meshmirror_provider::GroupEventKind::Advisory {
            instance_id: "i-01".into(),
            what: "rebalance recommendation".into(),
        },
    );
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(h.client.clone(), "default");
    let started = Instant::now();
    loop {
        let list = events.list(&Default::default()).await.unwrap();
        if list.items.iter().any(|e| {
            e.reason.as_deref() == Some("CloudAdvisory")
                && e.note.as_deref().unwrap_or("").contains("i-01")
        }) {
            break;
        }
        assert!(started.elapsed() < CONVERGE, "no CloudAdvisory event");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after = h.entries("default").await;
    assert_eq!(
        after
            .iter()
            .map(|e| &e.metadata.resource_version)
            .collect::<Vec<_>>(),
        before
            .iter()
            .map(|e| &e.metadata.resource_version)
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn an_entry_changed_or_deleted_by_hand_is_restored_at_once_and_own_writes_cause_no_loop() {
    let h = Harness::start(sim_with(3)).await;
    // An interval far beyond the test's patience: only the entry watch can do it.
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        &format!("{TWO_WORKLOADS}  sync: {{interval: 1h}}\n"),
    ))
    .await;
    let entries = h
        .wait_entries("default", "6 entries", |e| e.len() == 6)
        .await;
    h.wait_status("default", "web", "the first pass's status", |s| {
        is_ready(s) && s.entries == 6
    })
    .await;
    // Quiet: own writes coming back through the watch start no further pass
    // that writes. Not a window of time: a hand edit reaches the controller
    // through the same watch after their echoes, so once it is undone every
    // pass they could have started has ended. Only the edit and its undoing
    // were written by then.
    let quiet = h.server.requests();
    edit_and_wait_restored(&h, &entries[0]).await;
    let during = h.server.requests().since(&quiet);
    assert_eq!(
        during.get(Verb::Patch, "workloadentries"),
        2,
        "the edit and its undoing: {:?}",
        during.entries()
    );
    assert_eq!(writes_but_events(&during), 2, "{:?}", during.entries());

    let gone = entries[1].metadata.name.clone().unwrap();
    let before = h.server.requests();
    h.entries_api("default")
        .delete(&gone, &DeleteParams::default())
        .await
        .unwrap();
    h.wait_entries("default", "the deleted entry back", |e| {
        e.len() == 6
            && e.iter()
                .any(|o| o.metadata.name.as_deref() == Some(gone.as_str()))
    })
    .await;
    // Again no window: once another hand edit is undone, the pass that
    // re-created the entry, and any its own write started, have ended.
    edit_and_wait_restored(&h, &entries[2]).await;
    let during = h.server.requests().since(&before);
    // Our delete plus one re-create (and the second edit and its undoing):
    // nothing else was rewritten.
    assert_eq!(
        during.get(Verb::Patch, "workloadentries"),
        1 + 2,
        "{:?}",
        during.entries()
    );
    assert_eq!(during.get(Verb::Delete, "workloadentries"), 1);
    assert_eq!(
        writes_but_events(&during),
        1 + 1 + 2,
        "{:?}",
        during.entries()
    );
}

/// Writes other than Events (a pass that writes entries records one).
fn writes_but_events(counts: &meshmirror_testkit::RequestCounts) -> u64 {
    counts
        .entries()
        .iter()
        .filter(|(verb, resource, _)| verb.is_write() && resource != "events")
        .map(|(_, _, n)| n)
        .sum()
}

/// Changes an entry's address by hand and waits until the controller has put
/// it back.
async fn edit_and_wait_restored(h: &Harness, entry: &kube::api::DynamicObject) {
    let name = entry.metadata.name.clone().unwrap();
    let address = entry.data["spec"]["address"].clone();
    h.entries_api("default")
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(&serde_json::json!({"spec": {"address": "10.9.9.9"}})),
        )
        .await
        .unwrap();
    h.wait_entries("default", "the edited address restored", |e| {
        e.iter().any(|o| {
            o.metadata.name.as_deref() == Some(name.as_str())
                && o.data["spec"]["address"] == address
        })
    })
    .await;
}

#[tokio::test]
async fn a_restarted_controller_waits_for_its_entry_cache_and_rewrites_nothing() {
    let mut h = Harness::start(sim_with(3)).await;
    h.create_mirror(&mirror_yaml("default", "web", TWO_WORKLOADS))
        .await;
    h.wait_entries("default", "6 entries", |e| e.len() == 6)
        .await;
    h.wait_status("default", "web", "Ready", is_ready).await;
    h.stop_controller().await;

    // The entry list answers slowly: a pass that did not wait for it would
    // take the entries for missing and write all six again.
    h.server.faults().delay(
        Match::any().verb(Verb::List).resource("workloadentries"),
        Duration::from_millis(1500),
    );
    let before = h.server.requests();
    h.start_controller();
    h.sim.scale_out("web", 1).unwrap();
    h.wait_entries("default", "the new member's 2 entries", |e| e.len() == 8)
        .await;
    // The pass that wrote them has ended once it has written its status; a
    // pass that did not wait for the entry list came before it.
    h.wait_status("default", "web", "4 members in status", |s| {
        s.members == 4 && s.entries == 8
    })
    .await;
    let during = h.server.requests().since(&before);
    assert_eq!(
        during.get(Verb::Patch, "workloadentries"),
        2,
        "only the new member's entries are written: {:?}",
        during.entries()
    );
}

#[tokio::test]
async fn a_cloud_event_before_the_mirror_list_arrives_does_not_stall_the_controller() {
    let mut h = Harness::without_controller(sim_with(2)).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n  sync: {interval: 1h}\n",
    ))
    .await;
    // The mirror list answers slowly, and a cloud event arrives meanwhile, so
    // the event's mapping and the controller's runner both wait for the
    // mirror cache (kube-runtime 5 wakes only the last waiter of another
    // task; both must stay in the controller's task).
    h.server.faults().delay(
        Match::any()
            .verb(Verb::List)
            .resource("scalinggroupmirrors"),
        Duration::from_millis(1000),
    );
    h.start_controller();
    // Not a sleep: the controller subscribes to the cloud's events before it
    // lists the mirrors, so once the (held) list has arrived at the server
    // the event below reaches the controller while the list is outstanding.
    let started = Instant::now();
    while h.server.requests().get(Verb::List, "scalinggroupmirrors") == 0 {
        h.check_controllers();
        assert!(
            started.elapsed() < CONVERGE,
            "the mirrors were never listed"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    h.sim.scale_out("web", 1).unwrap();
    h.wait_entries("default", "all 3 members", |e| e.len() == 3)
        .await;
}
