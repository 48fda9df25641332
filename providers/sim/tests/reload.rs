//! Reloading the sim file: what changes, what events are pushed, and the watcher.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{FutureExt, StreamExt};
use meshmirror_provider::{
    BoxEventStream, GroupEventKind, GroupRef, Instance, InstanceState, Outcome, Provider,
    ProviderError,
};
use meshmirror_sim::{SimCloud, SimError};

const TWO: &str = "
groups:
  web:
    region: us-east-1
    instances:
      - {id: i-1, privateIPv4: 10.0.0.1, zone: us-east-1a}
      - {id: i-2, privateIPv4: 10.0.0.2, zone: us-east-1b, tags: {team: a}}
";

const CHANGED: &str = "
groups:
  web:
    region: us-east-1
    instances:
      - {id: i-2, privateIPv4: 10.0.0.2, zone: us-east-1b, tags: {team: b}}
      - {id: i-3, privateIPv4: 10.0.0.3, zone: us-east-1c}
";

fn web() -> GroupRef {
    GroupRef::Sim {
        group: "web".into(),
    }
}

fn ids(instances: &[Instance]) -> Vec<&str> {
    instances.iter().map(|i| i.id.as_str()).collect()
}

fn drain(events: &mut BoxEventStream) -> Vec<(String, GroupEventKind)> {
    let mut out = Vec::new();
    while let Some(Some(event)) = events.next().now_or_never() {
        let GroupRef::Sim { group } = event.group else {
            panic!("non-sim group")
        };
        out.push((group, event.kind));
    }
    out
}

fn ev(group: &str, kind: GroupEventKind) -> (String, GroupEventKind) {
    (group.to_string(), kind)
}

fn id(s: &str) -> String {
    s.to_string()
}

#[tokio::test]
async fn a_reload_adds_changes_and_removes_with_events() {
    let sim = SimCloud::from_yaml(TWO).unwrap();
    let mut events = sim.events().unwrap();
    sim.replace_from_yaml(TWO).unwrap();
    assert!(
        drain(&mut events).is_empty(),
        "an unchanged file pushes nothing"
    );

    sim.replace_from_yaml(CHANGED).unwrap();
    assert_eq!(
        drain(&mut events),
        [
            ev("web", GroupEventKind::Changed), // i-2's tag
            ev(
                "web",
                GroupEventKind::Launched {
                    instance_id: id("i-3")
                }
            ),
            ev(
                "web",
                GroupEventKind::Terminated {
                    instance_id: id("i-1")
                }
            ),
        ]
    );
    let got = sim.members(&web()).await.unwrap();
    assert_eq!(ids(&got), ["i-2", "i-3"]);
    assert_eq!(got[0].tags["team"], "b");
}

#[tokio::test]
async fn a_reload_handles_state_region_and_group_changes() {
    let sim = SimCloud::from_yaml(TWO).unwrap();
    let mut events = sim.events().unwrap();
    let next = "
groups:
  web:
    region: us-west-2
    instances:
      - {id: i-1, privateIPv4: 10.0.0.1, zone: us-west-2a, state: Terminating}
      - {id: i-2, privateIPv4: 10.0.0.2, zone: us-east-1b, tags: {team: a}, healthy: false}
  batch:
    region: eu-west-1
";
    sim.replace_from_yaml(next).unwrap();
    assert_eq!(
        drain(&mut events),
        [
            ev("batch", GroupEventKind::Changed),
            ev("web", GroupEventKind::Changed), // region
            ev(
                "web",
                GroupEventKind::Terminating {
                    instance_id: id("i-1")
                }
            ),
            ev("web", GroupEventKind::Changed), // health
        ]
    );
    let got = sim.members(&web()).await.unwrap();
    assert_eq!(got[0].state, InstanceState::Terminating);
    assert_eq!(got[0].region.as_deref(), Some("us-west-2"));

    sim.replace_from_yaml("groups:\n  batch:\n    region: eu-west-1\n")
        .unwrap();
    assert_eq!(drain(&mut events), [ev("web", GroupEventKind::Changed)]);
    assert_eq!(
        sim.members(&web()).await,
        Err(ProviderError::GroupNotFound("sim:web".into()))
    );
}

#[tokio::test]
async fn instances_dropped_from_the_file_go_through_the_hook_and_settings_are_kept() {
    let sim = SimCloud::from_yaml(TWO).unwrap();
    sim.set_termination_hook("web", true).unwrap();
    sim.fail_next("web", 1, ProviderError::Transient("x".into()))
        .unwrap();
    let mut events = sim.events().unwrap();
    sim.replace_from_yaml(CHANGED).unwrap();
    assert!(drain(&mut events).contains(&ev(
        "web",
        GroupEventKind::Terminating {
            instance_id: id("i-1")
        }
    )));
    assert!(
        sim.members(&web()).await.is_err(),
        "injected failure survives a reload"
    );
    let got = sim.members(&web()).await.unwrap();
    assert_eq!(ids(&got), ["i-1", "i-2", "i-3"]);
    assert_eq!(got[0].state, InstanceState::Terminating);
    let action = got[0].lifecycle.clone().expect("held by the hook");

    // Putting it back does not revive it, and a further reload does not touch it.
    sim.replace_from_yaml(TWO).unwrap();
    let got = sim.members(&web()).await.unwrap();
    assert_eq!(got[0].state, InstanceState::Terminating);
    assert_eq!(got[0].lifecycle.as_ref(), Some(&action));
    let i3 = got
        .iter()
        .find(|i| i.id == "i-3")
        .expect("i-3 still listed");
    assert_eq!(
        i3.state,
        InstanceState::Terminating,
        "dropped again, so held too"
    );

    sim.complete_lifecycle(&action, Outcome::Continue)
        .await
        .unwrap();
    assert!(!ids(&sim.members(&web()).await.unwrap()).contains(&"i-1"));
}

#[tokio::test]
async fn groups_a_file_creates_get_the_default_hook() {
    let sim = SimCloud::new();
    sim.set_default_termination_hook(true);
    sim.replace_from_yaml(TWO).unwrap();
    sim.scale_in("web", 1).unwrap();
    assert_eq!(sim.pending_actions().len(), 1);
}

/// A path in the system temp dir no other test or run uses.
fn temp_file(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!(
        "meshmirror-sim-{}-{nanos}-{name}.yaml",
        std::process::id()
    ))
}

struct Removed(PathBuf);
impl Drop for Removed {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn next_event(events: &mut BoxEventStream) -> (String, GroupEventKind) {
    let event = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .expect("an event within 10s")
        .expect("the feed is open");
    let GroupRef::Sim { group } = event.group else {
        panic!("non-sim group")
    };
    (group, event.kind)
}

#[tokio::test]
async fn the_watcher_applies_edits_and_keeps_the_state_on_a_bad_one() {
    let path = temp_file("watch");
    let _cleanup = Removed(path.clone());
    std::fs::write(&path, TWO).unwrap();
    let sim = SimCloud::new();
    let mut events = sim.events().unwrap();
    let task = sim
        .watch_file_every(&path, Duration::from_millis(20))
        .unwrap();
    assert_eq!(
        ids(&sim.members(&web()).await.unwrap()),
        ["i-1", "i-2"],
        "loaded at once"
    );
    drain(&mut events);

    std::fs::write(&path, CHANGED).unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        seen.push(next_event(&mut events).await);
    }
    assert!(seen.contains(&ev(
        "web",
        GroupEventKind::Launched {
            instance_id: id("i-3")
        }
    )));
    assert!(seen.contains(&ev(
        "web",
        GroupEventKind::Terminated {
            instance_id: id("i-1")
        }
    )));
    assert_eq!(ids(&sim.members(&web()).await.unwrap()), ["i-2", "i-3"]);

    // A bad edit is refused: nothing changes, no event. Not a sleep: the
    // watcher counts the edits it read and refused.
    let refused = sim.file_edits_refused();
    std::fs::write(
        &path,
        CHANGED.replace("us-east-1c}", "us-east-1c, state: Runing}"),
    )
    .unwrap();
    tokio::time::timeout(Duration::from_secs(10), async {
        while sim.file_edits_refused() == refused {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the bad edit read within 10s");
    assert_eq!(sim.file_edits_refused(), refused + 1);
    assert!(drain(&mut events).is_empty());
    assert_eq!(ids(&sim.members(&web()).await.unwrap()), ["i-2", "i-3"]);

    // Fixing it applies it.
    std::fs::write(
        &path,
        CHANGED.replace("us-east-1c}", "us-east-1c, state: Pending}"),
    )
    .unwrap();
    assert_eq!(
        next_event(&mut events).await,
        ev("web", GroupEventKind::Changed)
    );
    assert_eq!(
        sim.members(&web()).await.unwrap()[1].state,
        InstanceState::Pending
    );
    assert!(!task.is_finished());
    task.abort();
}

#[tokio::test]
async fn the_watcher_stops_when_the_cloud_is_dropped() {
    let path = temp_file("drop");
    let _cleanup = Removed(path.clone());
    std::fs::write(&path, TWO).unwrap();
    let sim = SimCloud::new();
    let task = sim
        .watch_file_every(&path, Duration::from_millis(10))
        .unwrap();
    drop(sim);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("the task ends")
        .unwrap();
}

#[tokio::test]
async fn watching_refuses_a_missing_or_bad_file() {
    let missing = temp_file("missing");
    let sim = SimCloud::new();
    let err = sim.watch_file(&missing).unwrap_err();
    assert!(
        matches!(&err, SimError::Io { path, .. } if *path == missing),
        "{err}"
    );
    assert!(err.to_string().contains("meshmirror-sim-"), "{err}");

    let bad = temp_file("bad");
    let _cleanup = Removed(bad.clone());
    std::fs::write(&bad, "groups: {web: {region: r, zones: []}}\n").unwrap();
    let err = sim.watch_file(&bad).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid sim file: groups.web: unknown field `zones`"),
        "{err}"
    );
    assert!(sim.group_names().is_empty());
}

#[test]
fn watching_needs_a_runtime() {
    let sim = SimCloud::new();
    assert!(matches!(
        sim.watch_file("/nonexistent"),
        Err(SimError::NoRuntime)
    ));
}
