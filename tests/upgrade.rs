//! Upgrade safety: what the previous release (its binary, built by
//! `scripts/build-previous-release.sh` from the commit in
//! `tests/upgrade/previous-release`) wrote is adopted by this build with zero
//! writes: the entries' resourceVersions, applied-hash annotations and field
//! ownership stay as they were, and so does the mirror. Runs on the run's
//! backend (the real control plane with `MESHMIRROR_KUBE=real`).

mod common;

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use kube::api::DynamicObject;
use meshmirror::app::RunOptions;
use meshmirror_sim::SimCloud;
use meshmirror_testkit::tools::{self, Tool};

const SIM: &str = "groups:
  web:
    region: us-east-1
    instances:
      - {id: i-01, privateIPv4: 10.0.1.1, zone: us-east-1a}
      - {id: i-02, privateIPv4: 10.0.1.2, zone: us-east-1b}
      - {id: i-03, privateIPv4: 10.0.1.3, zone: us-east-1c}
";

/// What an entry looks like to someone checking that nothing rewrote it.
fn snapshot(entries: &[DynamicObject]) -> BTreeMap<String, (String, String, String)> {
    entries
        .iter()
        .map(|e| {
            (
                e.metadata.name.clone().unwrap_or_default(),
                (
                    e.metadata.resource_version.clone().unwrap_or_default(),
                    annotation(e, meshmirror::workloadentry::keys::APPLIED_HASH),
                    serde_json::to_string(&e.metadata.managed_fields).unwrap_or_default(),
                ),
            )
        })
        .collect()
}

/// The previous release's process; killed if the test ends early.
struct Previous(Child);

impl Previous {
    /// Asks it to stop (SIGTERM, as Kubernetes does) and waits up to 10 s.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(status)) = self.0.try_wait() {
                assert!(status.success(), "the previous release ended with {status}");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the previous release did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Previous {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Multi-threaded: stopping the previous release waits on this thread while
/// the test kit's server (or proxy) keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_previous_release_wrote_is_adopted_with_zero_writes() {
    tools::require(Tool::PreviousRelease);
    let binary = tools::previous_release().expect("the previous release is built");
    let dir = std::env::temp_dir().join(format!(
        "meshmirror-upgrade-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let (sim_file, kubeconfig) = (dir.join("sim.yaml"), dir.join("kubeconfig"));
    std::fs::write(&sim_file, SIM).unwrap();
    let h = Harness::without_controller(SimCloud::new()).await;
    h.server.write_kubeconfig(&kubeconfig).unwrap();

    // The previous release mirrors the group, as a process of its own.
    let previous = Previous(
        Command::new(&binary)
            .args(["run", "--sim-file"])
            .arg(&sim_file)
            .args(["--allowed-groups", "default=sim:web"])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the previous release starts"),
    );
    h.create_mirror(&mirror_yaml("default", "web", TWO_WORKLOADS))
        .await;
    h.wait_entries("default", "6 entries by the previous release", |e| {
        e.len() == 6
    })
    .await;
    h.wait_status("default", "web", "Ready by the previous release", |s| {
        is_ready(s) && s.entries == 6
    })
    .await;
    previous.stop();
    let before = snapshot(&h.entries("default").await);
    assert_eq!(before.len(), 6);
    assert!(
        before
            .values()
            .all(|(_, hash, fields)| !hash.is_empty() && fields.contains("meshmirror")),
        "the previous release's entries carry an applied-hash and meshmirror's field ownership: {before:#?}"
    );
    let mirror_version = h
        .mirrors("default")
        .get("web")
        .await
        .unwrap()
        .metadata
        .resource_version;
    let requests = h.server.requests();

    // This build takes over, on the same simulated cloud.
    let sim = SimCloud::new();
    sim.watch_file(&sim_file).expect("the sim file loads");
    let next = h.spawn_controller(
        "next",
        h.service.clone(),
        RunOptions {
            sim_cloud: Some(sim.clone()),
            allowed_groups: vec!["default=sim:web".into()],
            ..RunOptions::default()
        },
    );
    wait_sim_calls(&h, &sim, 1, "this build's first pass").await;
    // A cloud event makes a second pass; passes of one mirror never overlap,
    // so once it asks the cloud, the first pass and its writes are done.
    sim.push_event("web", meshmirror_provider::GroupEventKind::Changed);
    wait_sim_calls(&h, &sim, 2, "this build's second pass").await;

    let writes: Vec<_> = h
        .server
        .requests()
        .since(&requests)
        .entries()
        .into_iter()
        .filter(|(verb, _, _)| verb.is_write())
        .collect();
    assert!(writes.is_empty(), "this build wrote {writes:?}");
    assert_eq!(
        snapshot(&h.entries("default").await),
        before,
        "entries rewritten"
    );
    assert_eq!(
        h.mirrors("default")
            .get("web")
            .await
            .unwrap()
            .metadata
            .resource_version,
        mirror_version,
        "the mirror (its status) rewritten"
    );
    next.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}

async fn wait_sim_calls(h: &Harness, sim: &SimCloud, n: u64, what: &str) {
    let started = Instant::now();
    while sim.members_calls_for("web").unwrap_or_default() < n {
        h.check_controllers();
        assert!(started.elapsed() < CONVERGE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
