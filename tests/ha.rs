//! Two replicas with leader election on one API server and one cloud: only
//! the leader writes, and a handover loses no change.

mod common;

use std::time::Duration;

use common::*;
use meshmirror::app::{self, RunOptions};
use meshmirror::leader::LeaseConfig;
use meshmirror_testkit::Verb;

fn replica(
    h: &Harness,
    identity: &str,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let opts = RunOptions {
        sim_cloud: Some(h.sim.clone()),
        kube_qps: 0.0,
        leader: Some(LeaseConfig {
            namespace: "default".into(),
            name: "meshmirror".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(2),
            renew_deadline: Duration::from_millis(1500),
            retry_period: Duration::from_millis(200),
        }),
        ..RunOptions::default()
    };
    let client = h.client.clone();
    let task = tokio::spawn(async move {
        let _ = app::run(client, opts, async {
            let _ = rx.await;
        })
        .await;
    });
    (tx, task)
}

async fn holder(h: &Harness) -> String {
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(h.client.clone(), "default");
    leases
        .get_opt("meshmirror")
        .await
        .unwrap()
        .and_then(|l| l.spec.and_then(|s| s.holder_identity))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_standby_takes_over_and_catches_up_with_changes_made_during_the_handover() {
    let h = Harness::without_controller(sim_with(2)).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n  sync: {interval: 1h}\n",
    ))
    .await;
    let (stop_a, task_a) = replica(&h, "a");
    h.wait_entries("default", "a leads and writes", |e| e.len() == 2)
        .await;
    assert_eq!(holder(&h).await, "a");
    let (stop_b, task_b) = replica(&h, "b");
    // The standby warms up but writes nothing.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(holder(&h).await, "a");

    let _ = stop_a.send(());
    task_a.await.unwrap();
    // Changed while nobody leads: the new leader's first pass sees it.
    h.sim.scale_out("web", 2).unwrap();
    h.wait_entries("default", "b catches up", |e| e.len() == 4)
        .await;
    assert_eq!(holder(&h).await, "b");

    let before = h.server.requests();
    h.sim.scale_in("web", 1).unwrap();
    h.wait_entries("default", "b follows events", |e| e.len() == 3)
        .await;
    assert!(
        h.server
            .requests()
            .since(&before)
            .get(Verb::Delete, "workloadentries")
            >= 1
    );

    let _ = stop_b.send(());
    task_b.await.unwrap();
    assert_eq!(holder(&h).await, "", "released on shutdown");
}
