//! Two replicas with leader election on one API server and one cloud: only
//! the leader writes, and a handover loses no change.

mod common;

use std::time::Duration;

use common::*;
use meshmirror::app::RunOptions;
use meshmirror::leader::LeaseConfig;
use meshmirror_testkit::{Injected, Match, Verb};

/// The User-Agent of a replica's client: the server counts each replica's
/// requests apart.
fn agent(identity: &str) -> String {
    format!("meshmirror-replica-{identity}")
}

/// A replica with its own client; the harness's waits fail at once if it
/// ends by itself or with an error, and `stop` asserts it ended Ok.
async fn replica(h: &Harness, identity: &str) -> ControllerTask {
    let opts = RunOptions {
        sim_cloud: Some(h.sim.clone()),
        kube_qps: 0.0,
        leader: Some(LeaseConfig {
            // Where the shipped Role grants the lease.
            namespace: "meshmirror-system".into(),
            name: "meshmirror".into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(2),
            renew_deadline: Duration::from_millis(1500),
            retry_period: Duration::from_millis(200),
        }),
        allow_all_groups: true,
        ..RunOptions::default()
    };
    let client = h.server.service_client(Some(&agent(identity))).await;
    h.spawn_controller(identity, client, opts)
}

async fn holder(h: &Harness) -> String {
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(h.client.clone(), "meshmirror-system");
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
    let a = replica(&h, "a").await;
    h.wait_entries("default", "a leads and writes", |e| e.len() == 2)
        .await;
    assert_eq!(holder(&h).await, "a");
    let b = replica(&h, "b").await;
    // The standby warms up (its caches list and watch) ...
    let started = std::time::Instant::now();
    while h.server.requests_from(&agent("b")).total() == 0 {
        h.check_controllers();
        assert!(started.elapsed() < CONVERGE, "b never asked the server");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // ... but writes nothing, though the group changes under it. The
    // leader's entry writes are slowed, so a standby that reconciled would
    // find the new entry missing too and write it as well.
    let a_before = h.server.requests_from(&agent("a"));
    h.server.faults().delay(
        Match::any().verb(Verb::Patch).resource("workloadentries"),
        Duration::from_millis(500),
    );
    h.sim.scale_out("web", 1).unwrap();
    h.wait_entries("default", "a follows the scale-out", |e| e.len() == 3)
        .await;
    h.wait_status("default", "web", "a writes status", |s| s.entries == 3)
        .await;
    h.server.faults().clear();
    assert_eq!(holder(&h).await, "a");
    let by_a = h.server.requests_from(&agent("a")).since(&a_before);
    assert!(
        by_a.get(Verb::Patch, "workloadentries") >= 1,
        "the leader wrote the entry: {:?}",
        by_a.entries()
    );
    let by_b = h.server.requests_from(&agent("b"));
    assert_eq!(by_b.writes(), 0, "the standby wrote: {:?}", by_b.entries());

    a.stop().await;
    // Changed while nobody leads: the new leader's first pass sees it.
    h.sim.scale_out("web", 2).unwrap();
    h.wait_entries("default", "b catches up", |e| e.len() == 5)
        .await;
    assert_eq!(holder(&h).await, "b");

    let before = h.server.requests();
    h.sim.scale_in("web", 1).unwrap();
    h.wait_entries("default", "b follows events", |e| e.len() == 4)
        .await;
    assert!(
        h.server
            .requests()
            .since(&before)
            .get(Verb::Delete, "workloadentries")
            >= 1
    );

    b.stop().await;
    assert_eq!(holder(&h).await, "", "released on shutdown");
}

/// A leader whose pass is stuck in a slow cloud call when it loses the
/// lease writes nothing once it has lost it: the pass is cancelled (its
/// cloud call never returns to it) and any write would be refused by the
/// fence. The scale-out it was reading is left for the next leader.
#[tokio::test]
async fn a_replica_that_loses_the_lease_mid_pass_writes_nothing_after() {
    let h = Harness::without_controller(sim_with(2)).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  workloads: [{name: app}]\n  sync: {interval: 1h}\n",
    ))
    .await;
    let a = replica(&h, "a").await;
    h.wait_entries("default", "a leads and writes", |e| e.len() == 2)
        .await;
    h.wait_status("default", "web", "a writes status", |s| s.entries == 2)
        .await;

    // The next pass blocks in the cloud for 8 s (the lease's renew deadline
    // is 1.5 s); while it waits, the API server stops answering a's lease.
    let delay = Duration::from_secs(8);
    h.sim.delay_members("web", delay).unwrap();
    let answered = h.sim.members_answered_for("web").unwrap();
    let calls = h.sim.members_calls_for("web").unwrap();
    h.sim.scale_out("web", 2).unwrap();
    wait_members_calls(&h, Some("web"), calls + 1, "the slow pass to start").await;
    let cut = std::time::Instant::now();
    h.server.faults().fail_next(
        Match::any().resource("leases"),
        u32::MAX,
        Injected::Unavailable,
    );
    let writes_before = h.server.write_log().len();

    // Past the moment the slow cloud call would have answered.
    tokio::time::sleep(delay + Duration::from_secs(1)).await;
    assert!(cut.elapsed() > delay);
    let after: Vec<_> = h.server.write_log()[writes_before..]
        .iter()
        .filter(|w| w.resource != "leases")
        .cloned()
        .collect();
    assert!(
        after.is_empty(),
        "written after the lease was lost: {after:?}"
    );
    assert_eq!(
        h.sim.members_answered_for("web").unwrap(),
        answered,
        "the slow cloud call was not cancelled"
    );
    assert_eq!(h.entries("default").await.len(), 2);

    // Once the server answers again, a (or whoever leads) catches up.
    h.server.faults().clear();
    h.sim.delay_members("web", Duration::ZERO).unwrap();
    h.wait_entries("default", "the scale-out, by the next term", |e| {
        e.len() == 4
    })
    .await;
    a.stop().await;
}
