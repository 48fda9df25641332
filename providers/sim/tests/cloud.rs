//! Driving the sim from code, and what the Provider interface then reports.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use meshmirror_provider::{
    BoxEventStream, GroupEventKind, GroupRef, Health, Instance, InstanceState, LifecycleAction,
    LifecycleKind, Outcome, Provider, ProviderError,
};
use meshmirror_sim::{SimCloud, SimError, SimInstance, TERMINATION_HOOK};

fn web() -> GroupRef {
    GroupRef::Sim {
        group: "web".into(),
    }
}

fn cloud() -> SimCloud {
    let sim = SimCloud::new();
    sim.ensure_group("web", "us-east-1");
    sim
}

async fn members(sim: &SimCloud) -> Vec<Instance> {
    sim.members(&web()).await.unwrap()
}

fn ids(instances: &[Instance]) -> Vec<&str> {
    instances.iter().map(|i| i.id.as_str()).collect()
}

/// Every event already pushed, without waiting.
fn drain(events: &mut BoxEventStream) -> Vec<(String, GroupEventKind)> {
    let mut out = Vec::new();
    while let Some(Some(event)) = events.next().now_or_never() {
        let GroupRef::Sim { group } = event.group else {
            panic!("sim event for a non-sim group: {:?}", event.group)
        };
        out.push((group, event.kind));
    }
    out
}

fn launched(id: &str) -> (String, GroupEventKind) {
    (
        "web".into(),
        GroupEventKind::Launched {
            instance_id: id.into(),
        },
    )
}

fn terminating(id: &str) -> (String, GroupEventKind) {
    (
        "web".into(),
        GroupEventKind::Terminating {
            instance_id: id.into(),
        },
    )
}

fn terminated(id: &str) -> (String, GroupEventKind) {
    (
        "web".into(),
        GroupEventKind::Terminated {
            instance_id: id.into(),
        },
    )
}

fn changed() -> (String, GroupEventKind) {
    ("web".into(), GroupEventKind::Changed)
}

#[tokio::test]
async fn scale_out_launches_deterministic_instances_spread_over_zones() {
    let sim = cloud();
    assert_eq!(
        sim.scale_out("web", 4).unwrap(),
        ["i-0001", "i-0002", "i-0003", "i-0004"]
    );
    let got = members(&sim).await;
    assert_eq!(ids(&got), ["i-0001", "i-0002", "i-0003", "i-0004"]);
    let addrs: Vec<_> = got.iter().map(|i| i.private_ipv4.unwrap()).collect();
    assert_eq!(addrs, [1, 2, 3, 4].map(|n| Ipv4Addr::new(10, 0, 0, n)));
    let zones: Vec<_> = got.iter().map(|i| i.zone.clone().unwrap()).collect();
    assert_eq!(
        zones,
        ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1a"]
    );
    assert_eq!(
        got[1].ipv6,
        Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2))
    );
    for inst in &got {
        assert_eq!(inst.region.as_deref(), Some("us-east-1"));
        assert_eq!(
            (inst.state, inst.health),
            (InstanceState::Running, Health::Healthy)
        );
        assert_eq!(inst.public_ipv4, None);
        assert!(inst.tags.is_empty() && inst.lifecycle.is_none());
    }
}

#[tokio::test]
async fn generated_ids_and_addresses_skip_those_in_use_and_are_never_reused() {
    let sim = cloud();
    sim.add_instance(
        "web",
        SimInstance::running("i-0001", Ipv4Addr::new(10, 0, 0, 2)),
    )
    .unwrap();
    // i-0001 is taken by id, i-0002's address 10.0.0.2 is taken too.
    assert_eq!(sim.scale_out("web", 2).unwrap(), ["i-0003", "i-0004"]);
    sim.scale_in("web", 2).unwrap();
    assert_eq!(sim.scale_out("web", 1).unwrap(), ["i-0005"]);

    let sim = cloud();
    let ids = sim.scale_out("web", 251).unwrap();
    let last = sim.instances("web").unwrap().pop().unwrap();
    assert_eq!((ids[250].as_str(), last.id.as_str()), ("i-0251", "i-0251"));
    assert_eq!(last.private_ipv4, Some(Ipv4Addr::new(10, 0, 1, 1)));
}

#[tokio::test]
async fn scale_in_without_a_hook_removes_the_newest_at_once() {
    let sim = cloud();
    sim.scale_out("web", 3).unwrap();
    let mut events = sim.events().unwrap();
    assert_eq!(sim.scale_in("web", 2).unwrap(), ["i-0003", "i-0002"]);
    assert_eq!(ids(&members(&sim).await), ["i-0001"]);
    assert_eq!(
        drain(&mut events),
        [terminated("i-0003"), terminated("i-0002")]
    );
    // Asking for more than there is takes what there is.
    assert_eq!(sim.scale_in("web", 5).unwrap(), ["i-0001"]);
    assert!(members(&sim).await.is_empty());
    assert!(sim.completed_actions().is_empty());
}

#[tokio::test]
async fn the_termination_hook_holds_an_instance_until_completed() {
    let sim = cloud();
    sim.set_termination_hook("web", true).unwrap();
    sim.scale_out("web", 3).unwrap();
    let mut events = sim.events().unwrap();

    assert_eq!(sim.scale_in("web", 1).unwrap(), ["i-0003"]);
    assert_eq!(drain(&mut events), [terminating("i-0003")]);
    let got = members(&sim).await;
    assert_eq!(
        ids(&got),
        ["i-0001", "i-0002", "i-0003"],
        "still listed while held"
    );
    let held = &got[2];
    assert_eq!(held.state, InstanceState::Terminating);
    let action = held.lifecycle.clone().expect("held by a lifecycle action");
    assert_eq!(action.group, web());
    assert_eq!(action.instance_id, "i-0003");
    assert_eq!(action.kind, LifecycleKind::Terminate);
    assert_eq!(action.hook, TERMINATION_HOOK);
    assert_eq!(action.hook, "sim-termination");
    let token = action.token.clone().expect("a token");
    assert_eq!(token.len(), 36, "uuid-like: {token}");
    assert_eq!(sim.pending_actions(), std::slice::from_ref(&action));

    // A second scale-in skips the one already going.
    assert_eq!(sim.scale_in("web", 1).unwrap(), ["i-0002"]);
    let pending = sim.pending_actions();
    assert_eq!(pending.len(), 2);
    let second = pending
        .into_iter()
        .find(|a| a.instance_id == "i-0002")
        .unwrap();
    assert_ne!(second.token, action.token, "tokens are unique");
    drain(&mut events);

    let before = Instant::now();
    sim.complete_lifecycle(&action, Outcome::Continue)
        .await
        .unwrap();
    assert_eq!(ids(&members(&sim).await), ["i-0001", "i-0002"]);
    assert_eq!(drain(&mut events), [terminated("i-0003")]);
    let log = sim.completed_actions();
    assert_eq!(log.len(), 1);
    assert_eq!((&log[0].0, log[0].1), (&action, Outcome::Continue));
    assert!(log[0].2 >= before);

    // Abandon lets a terminating instance go too, as in the clouds.
    sim.complete_lifecycle(&second, Outcome::Abandon)
        .await
        .unwrap();
    assert_eq!(ids(&members(&sim).await), ["i-0001"]);
    let log = sim.completed_actions();
    assert_eq!(log.len(), 2);
    assert_eq!((&log[1].0, log[1].1), (&second, Outcome::Abandon));
    assert!(log[1].2 >= log[0].2, "the log is in completion order");
    assert!(sim.pending_actions().is_empty());
}

#[tokio::test]
async fn only_an_active_action_can_be_completed() {
    let sim = cloud();
    sim.set_termination_hook("web", true).unwrap();
    sim.scale_out("web", 2).unwrap();
    sim.scale_in("web", 2).unwrap();
    let actions = sim.pending_actions();

    let wrong_token = LifecycleAction {
        token: Some("nope".into()),
        ..actions[0].clone()
    };
    let err = sim
        .complete_lifecycle(&wrong_token, Outcome::Continue)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains("no active lifecycle action")),
        "{err}"
    );
    let wrong_kind = LifecycleAction {
        kind: LifecycleKind::Launch,
        ..actions[0].clone()
    };
    assert!(
        sim.complete_lifecycle(&wrong_kind, Outcome::Continue)
            .await
            .is_err()
    );
    assert_eq!(sim.pending_actions().len(), 2, "refusals release nothing");

    // Without a token the instance id is enough, as with AWS.
    let tokenless = LifecycleAction {
        token: None,
        ..actions[0].clone()
    };
    sim.complete_lifecycle(&tokenless, Outcome::Continue)
        .await
        .unwrap();
    assert_eq!(
        sim.completed_actions()[0].0,
        actions[0],
        "the log holds the cloud's action"
    );
    // Completing twice is refused: the action is gone.
    assert!(
        sim.complete_lifecycle(&actions[0], Outcome::Continue)
            .await
            .is_err()
    );

    let elsewhere = LifecycleAction {
        group: GroupRef::Sim {
            group: "gone".into(),
        },
        ..actions[1].clone()
    };
    assert_eq!(
        sim.complete_lifecycle(&elsewhere, Outcome::Continue).await,
        Err(ProviderError::GroupNotFound("sim:gone".into()))
    );
    assert_eq!(sim.completed_actions().len(), 1);
}

#[tokio::test]
async fn terminate_goes_through_the_hook_and_remove_instance_does_not() {
    let sim = cloud();
    sim.set_termination_hook("web", true).unwrap();
    sim.scale_out("web", 3).unwrap();
    let mut events = sim.events().unwrap();
    sim.terminate("web", "i-0001").unwrap();
    sim.terminate("web", "i-0001").unwrap(); // already held: nothing new
    sim.remove_instance("web", "i-0002").unwrap();
    assert_eq!(
        drain(&mut events),
        [terminating("i-0001"), terminated("i-0002")]
    );
    let got = members(&sim).await;
    assert_eq!(ids(&got), ["i-0001", "i-0003"]);
    assert_eq!(got[0].state, InstanceState::Terminating);
    assert_eq!(sim.pending_actions().len(), 1);

    // Turning the hook off does not release instances already held.
    sim.set_termination_hook("web", false).unwrap();
    sim.terminate("web", "i-0003").unwrap();
    assert_eq!(ids(&members(&sim).await), ["i-0001"]);
    assert_eq!(sim.pending_actions().len(), 1);
}

#[tokio::test]
async fn the_launch_hook_holds_new_instances_pending() {
    let sim = cloud();
    sim.set_launch_hook("web", true).unwrap();
    sim.scale_out("web", 2).unwrap();
    let got = members(&sim).await;
    assert!(got.iter().all(|i| i.state == InstanceState::Pending));
    let actions: Vec<_> = got.iter().map(|i| i.lifecycle.clone().unwrap()).collect();
    assert!(
        actions
            .iter()
            .all(|a| a.kind == LifecycleKind::Launch && a.hook == "sim-launch")
    );

    let mut events = sim.events().unwrap();
    sim.complete_lifecycle(&actions[0], Outcome::Continue)
        .await
        .unwrap();
    sim.complete_lifecycle(&actions[1], Outcome::Abandon)
        .await
        .unwrap();
    let got = members(&sim).await;
    assert_eq!(ids(&got), ["i-0001"]);
    assert_eq!(got[0].state, InstanceState::Running);
    assert_eq!(got[0].lifecycle, None);
    assert_eq!(drain(&mut events), [changed(), terminated("i-0002")]);
}

#[tokio::test]
async fn state_health_and_tag_changes_show_and_push_events() {
    let sim = cloud();
    sim.scale_out("web", 2).unwrap();
    let mut events = sim.events().unwrap();
    sim.set_health("web", "i-0001", Health::Unhealthy).unwrap();
    sim.set_health("web", "i-0001", Health::Unhealthy).unwrap(); // no change, no event
    sim.set_tags(
        "web",
        "i-0002",
        BTreeMap::from([("team".into(), "payments".into())]),
    )
    .unwrap();
    sim.set_state("web", "i-0001", InstanceState::Stopped)
        .unwrap();
    sim.set_state("web", "i-0002", InstanceState::Terminating)
        .unwrap();
    sim.set_state("web", "i-0001", InstanceState::Running)
        .unwrap();
    assert_eq!(
        drain(&mut events),
        [
            changed(),
            changed(),
            (
                "web".into(),
                GroupEventKind::Interrupted {
                    instance_id: "i-0001".into()
                }
            ),
            terminating("i-0002"),
            changed(),
        ]
    );
    let got = members(&sim).await;
    assert_eq!(
        (got[0].state, got[0].health),
        (InstanceState::Running, Health::Unhealthy)
    );
    assert_eq!(got[1].state, InstanceState::Terminating);
    assert_eq!(got[1].lifecycle, None, "set_state starts no hook");
    assert_eq!(got[1].tags["team"], "payments");
}

#[tokio::test]
async fn injected_failures_come_back_from_members_then_clear() {
    let sim = cloud();
    sim.ensure_group("batch", "eu-west-1");
    sim.scale_out("web", 1).unwrap();
    sim.fail_next("web", 2, ProviderError::Transient("boom".into()))
        .unwrap();
    sim.fail_always("web", Some(ProviderError::Throttled { retry_after: None }))
        .unwrap();

    // Queued failures first, then the standing one.
    assert_eq!(
        sim.members(&web()).await,
        Err(ProviderError::Transient("boom".into()))
    );
    assert_eq!(
        sim.members(&web()).await,
        Err(ProviderError::Transient("boom".into()))
    );
    for _ in 0..3 {
        assert_eq!(
            sim.members(&web()).await,
            Err(ProviderError::Throttled { retry_after: None })
        );
    }
    let batch = GroupRef::Sim {
        group: "batch".into(),
    };
    assert_eq!(
        sim.members(&batch).await,
        Ok(vec![]),
        "other groups are unaffected"
    );
    sim.fail_always("web", None).unwrap();
    assert_eq!(ids(&members(&sim).await), ["i-0001"]);

    assert_eq!(sim.members_calls(), 7);
    assert_eq!(sim.members_calls_for("web").unwrap(), 6);
    sim.instances("web").unwrap();
    assert_eq!(sim.members_calls(), 7, "instances() is not an API call");
}

#[tokio::test]
async fn injected_completion_failures_leave_the_instance_held() {
    let sim = cloud();
    sim.set_termination_hook("web", true).unwrap();
    sim.scale_out("web", 1).unwrap();
    sim.scale_in("web", 1).unwrap();
    let action = sim.pending_actions().pop().unwrap();
    sim.fail_next_completions("web", 1, ProviderError::Transient("flaky".into()))
        .unwrap();
    assert_eq!(
        sim.complete_lifecycle(&action, Outcome::Continue).await,
        Err(ProviderError::Transient("flaky".into()))
    );
    assert_eq!(sim.pending_actions(), std::slice::from_ref(&action));
    assert!(sim.completed_actions().is_empty());
    sim.complete_lifecycle(&action, Outcome::Continue)
        .await
        .unwrap();
    assert!(members(&sim).await.is_empty());
}

#[tokio::test]
async fn only_sim_groups_that_exist_are_served() {
    let sim = cloud();
    assert_eq!(sim.name(), "sim");
    let aws = GroupRef::Aws {
        region: "us-east-1".into(),
        name: "web".into(),
    };
    let err = sim.members(&aws).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains("serves only sim groups") && m.contains("aws:us-east-1:web")),
        "{err}"
    );
    let missing = GroupRef::Sim {
        group: "nope".into(),
    };
    assert_eq!(
        sim.members(&missing).await,
        Err(ProviderError::GroupNotFound("sim:nope".into()))
    );
    sim.remove_group("web").unwrap();
    assert_eq!(
        sim.members(&web()).await,
        Err(ProviderError::GroupNotFound("sim:web".into()))
    );
    assert_eq!(sim.members_calls(), 3);
}

#[test]
fn driving_an_unknown_group_or_instance_is_an_error() {
    let sim = cloud();
    sim.scale_out("web", 1).unwrap();
    assert!(matches!(sim.scale_out("nope", 1), Err(SimError::NoGroup(g)) if g == "nope"));
    assert!(matches!(sim.scale_in("nope", 1), Err(SimError::NoGroup(_))));
    assert!(matches!(
        sim.fail_always("nope", None),
        Err(SimError::NoGroup(_))
    ));
    assert!(matches!(
        sim.set_state("web", "i-9999", InstanceState::Running),
        Err(SimError::NoInstance { group, id }) if group == "web" && id == "i-9999"
    ));
    assert!(matches!(
        sim.terminate("web", "i-9999"),
        Err(SimError::NoInstance { .. })
    ));
    sim.ensure_group("batch", "eu-west-1");
    assert!(matches!(
        sim.add_instance(
            "batch",
            SimInstance::running("i-0001", Ipv4Addr::new(10, 9, 9, 9))
        ),
        Err(SimError::InstanceExists { .. })
    ));
}

#[tokio::test]
async fn every_subscription_gets_every_event_from_then_on() {
    let sim = cloud();
    sim.scale_out("web", 1).unwrap(); // before anyone listens: not delivered
    let mut first = sim.events().unwrap();
    sim.add_instance(
        "web",
        SimInstance::running("i-x", Ipv4Addr::new(10, 1, 0, 1)).with_zone("us-east-1a"),
    )
    .unwrap();
    let mut second = sim.events().unwrap();
    sim.scale_out("web", 1).unwrap();
    sim.ensure_group("web", "us-east-1"); // no change
    sim.ensure_group("web", "us-west-2");
    sim.ensure_group("batch", "eu-west-1");
    sim.push_event(
        "web",
        GroupEventKind::Advisory {
            instance_id: "i-x".into(),
            what: "rebalance".into(),
        },
    );
    let advisory = (
        "web".to_string(),
        GroupEventKind::Advisory {
            instance_id: "i-x".into(),
            what: "rebalance".into(),
        },
    );
    let batch_created = ("batch".to_string(), GroupEventKind::Changed);
    assert_eq!(
        drain(&mut first),
        [
            launched("i-x"),
            launched("i-0002"),
            changed(),
            batch_created.clone(),
            advisory.clone()
        ]
    );
    assert_eq!(
        drain(&mut second),
        [launched("i-0002"), changed(), batch_created, advisory]
    );
    assert_eq!(
        sim.events_emitted(),
        7,
        "group created, scaled out, then six more"
    );
    assert_eq!(members(&sim).await[0].region.as_deref(), Some("us-west-2"));
}

#[tokio::test]
async fn acks_are_counted_and_dropped_subscriptions_are_forgotten() {
    let sim = cloud();
    let mut events = sim.events().unwrap();
    let dropped = sim.events().unwrap();
    drop(dropped);
    sim.scale_out("web", 3).unwrap();
    let mut received = Vec::new();
    while let Some(Some(event)) = events.next().now_or_never() {
        received.push(event);
    }
    assert_eq!(received.len(), 3);
    assert_eq!(sim.events_acked(), 0);
    let mut received = received.into_iter();
    received.next().unwrap().ack.ack();
    received.next().unwrap().ack.ack();
    drop(received); // the third is dropped unacknowledged
    assert_eq!(sim.events_acked(), 2);
    assert_eq!(
        sim.events_emitted(),
        4,
        "the group's creation, then three launches"
    );
}

#[tokio::test]
async fn the_event_feed_wakes_a_waiting_consumer() {
    let sim = cloud();
    let mut events = sim.events().unwrap();
    let driver = sim.clone();
    let waiter = tokio::spawn(async move { events.next().await.map(|e| e.kind) });
    tokio::task::yield_now().await;
    driver.scale_out("web", 1).unwrap();
    let kind = tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .unwrap();
    assert_eq!(
        kind,
        Some(GroupEventKind::Launched {
            instance_id: "i-0001".into()
        })
    );
}

/// Past 64,000 instances (10.0.255.250) addresses go on in 10.1.0.0/16,
/// every id and address once (they used to wrap and the launch never
/// ended), and a big scale-out reads the members once, not once each.
#[tokio::test]
async fn a_fleet_past_64000_instances_gets_distinct_ids_and_addresses() {
    let sim = SimCloud::new();
    sim.ensure_group("a", "us-east-1");
    sim.ensure_group("b", "us-east-1");
    sim.scale_out("a", 40_000).unwrap();
    sim.scale_out("b", 30_000).unwrap();
    let mut ids = std::collections::HashSet::new();
    let mut addresses = std::collections::HashSet::new();
    for group in ["a", "b"] {
        for i in sim.instances(group).unwrap() {
            assert!(ids.insert(i.id.clone()), "{} twice", i.id);
            assert!(
                addresses.insert(i.private_ipv4.unwrap()),
                "{:?} twice",
                i.private_ipv4
            );
        }
    }
    assert_eq!((ids.len(), addresses.len()), (70_000, 70_000));
    assert!(addresses.contains(&Ipv4Addr::new(10, 0, 255, 250)));
    assert!(addresses.contains(&Ipv4Addr::new(10, 1, 0, 1)));
    assert!(!addresses.contains(&Ipv4Addr::new(10, 0, 0, 0)));
}
