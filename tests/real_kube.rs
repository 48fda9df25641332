//! meshmirror against a real control plane (kube-apiserver, etcd and
//! kube-controller-manager built from their Go modules; `tests/kube/`): the
//! CRD installs and the real server holds mirrors to its schema and CEL
//! rules; the shipped manifests apply server-side with no Pod Security
//! warning; the service does its work under the ServiceAccount and
//! ClusterRole of `deploy/`, with a token from the TokenRequest API, and is
//! refused what the docs say it cannot do; and the real garbage collector
//! deletes a mirror's entries through their ownerReferences.
//!
//! Each test starts its own control plane (about 12 s).

mod common;

use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use meshmirror::app::RunOptions;
use meshmirror::crd::ScalingGroupMirror;
use meshmirror::leader::LeaseConfig;
use meshmirror::workloadentry::{EntryVersion, keys};
use meshmirror_testkit::realkube::RealKube;

/// Longer than the fake server's: a real server and its controllers are
/// slower, and the garbage collector works on its own schedule.
const REAL_CONVERGE: Duration = Duration::from_secs(60);

/// The Deployment's leader election (deploy/base: 15 s, 10 s, 2 s) on the
/// Lease `meshmirror` in `namespace`.
fn lease_config(namespace: &str, identity: &str) -> LeaseConfig {
    LeaseConfig {
        namespace: namespace.into(),
        name: "meshmirror".into(),
        identity: identity.into(),
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    }
}

async fn create_namespace(client: &Client, name: &str) {
    let api: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap();
    api.create(&PostParams::default(), &ns).await.unwrap();
}

fn mirror(ns: &str, name: &str, group: &str) -> ScalingGroupMirror {
    serde_yaml::from_str(
        &mirror_yaml(ns, name, "  workloads: [{name: app}]\n")
            .replace("group: web", &format!("group: {group}")),
    )
    .unwrap()
}

async fn entries(client: &Client, ns: &str) -> Vec<DynamicObject> {
    let api: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), ns, &EntryVersion::V1.workload_entries());
    api.list(&ListParams::default()).await.unwrap().items
}

async fn wait_entries(
    client: &Client,
    ns: &str,
    what: &str,
    done: impl Fn(&[DynamicObject]) -> bool,
    check: impl Fn(),
) -> Vec<DynamicObject> {
    let started = Instant::now();
    loop {
        check();
        let now = entries(client, ns).await;
        if done(&now) {
            return now;
        }
        assert!(
            started.elapsed() < REAL_CONVERGE,
            "timed out waiting for {what}; have {} entries",
            now.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The real server validates mirrors with the checked-in CRD's schema and
/// CEL rules: a good mirror is stored, the Azure path trick and an
/// oversized spec are refused with the field named.
#[tokio::test]
async fn the_crd_installs_and_the_real_server_holds_mirrors_to_it() {
    let kube = RealKube::start();
    let admin = kube.admin().await;
    create_namespace(&admin, "team-a").await;
    let api: Api<ScalingGroupMirror> = Api::namespaced(admin.clone(), "team-a");
    api.create(&PostParams::default(), &mirror("team-a", "web", "web"))
        .await
        .unwrap();

    let mut trick: serde_json::Value =
        serde_json::to_value(mirror("team-a", "trick", "x")).unwrap();
    trick["spec"]["provider"] = serde_json::json!({"azure": {
        "subscriptionId": "00000000-0000-0000-0000-000000000000",
        "resourceGroup": "team-a-rg",
        "scaleSetName": "x/../../../../other-rg/providers/Microsoft.Compute/virtualMachineScaleSets/v",
    }});
    let trick: ScalingGroupMirror = serde_json::from_value(trick).unwrap();
    let err = api
        .create(&PostParams::default(), &trick)
        .await
        .expect_err("the real server refuses a path in scaleSetName");
    let message = err.to_string();
    assert!(message.contains("scaleSetName"), "{message}");

    let mut big = serde_json::to_value(mirror("team-a", "big", "web")).unwrap();
    big["spec"]["workloads"] = (0..17)
        .map(|i| serde_json::json!({"name": format!("w{i}")}))
        .collect();
    let big: ScalingGroupMirror = serde_json::from_value(big).unwrap();
    let err = api
        .create(&PostParams::default(), &big)
        .await
        .expect_err("the real server refuses 17 workloads");
    let message = err.to_string();
    assert!(message.contains("spec.workloads"), "{message}");
}

/// `deploy/install.yaml`, every overlay and every example apply server-side
/// to a real server, with no warning (Pod Security admission on the
/// namespace labelled `restricted` included).
#[tokio::test]
async fn the_shipped_manifests_apply_server_side_without_warnings() {
    let kube = RealKube::start();
    let (_, stderr) = kube.kubectl_ok(&["apply", "--server-side", "-f", "deploy/install.yaml"]);
    assert!(!stderr.contains("Warning"), "{stderr}");
    let (labels, _) = kube.kubectl_ok(&[
        "get",
        "namespace",
        "meshmirror-system",
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(
        labels.contains("pod-security.kubernetes.io/enforce\":\"restricted"),
        "{labels}"
    );
    kube.kubectl_ok(&["create", "namespace", "team-a"]);
    kube.kubectl_ok(&["create", "namespace", "team-b"]);
    let (_, stderr) =
        kube.kubectl_ok(&["apply", "--server-side", "-k", "deploy/overlays/namespaced"]);
    assert!(!stderr.contains("Warning"), "{stderr}");
    // Both Deployments were admitted under `restricted` (no kubelet runs
    // them), and each listed namespace has its Role.
    kube.kubectl_ok(&["get", "deployment", "meshmirror", "-n", "meshmirror-system"]);
    kube.kubectl_ok(&[
        "get",
        "deployment",
        "meshmirror",
        "-n",
        "meshmirror-tenants",
    ]);
    for ns in ["team-a", "team-b"] {
        kube.kubectl_ok(&["get", "role", "meshmirror", "-n", ns]);
    }
    // The cloud overlays, checked by the server without replacing what is
    // installed (each patches the same Deployment).
    for overlay in ["aws", "azure", "gcp"] {
        let dir = format!("deploy/overlays/{overlay}");
        let (_, stderr) =
            kube.kubectl_ok(&["apply", "--server-side", "--dry-run=server", "-k", &dir]);
        assert!(!stderr.contains("Warning"), "{dir}: {stderr}");
    }
    // Every example that is a Kubernetes object: the mirrors, and the
    // ServiceAccounts with their cloud identity annotations.
    let examples = example_manifests();
    assert!(examples.len() >= 9, "{examples:?}");
    for ns in ["api", "shop"] {
        kube.kubectl_ok(&["create", "namespace", ns]);
    }
    for path in &examples {
        let (_, stderr) = kube.kubectl_ok(&["apply", "--server-side", "-f", path]);
        assert!(!stderr.contains("Warning"), "{path}: {stderr}");
    }
}

/// The files under deploy/examples that hold Kubernetes objects (the others
/// are the clouds' policies and the simulated cloud's file), repository-relative.
fn example_manifests() -> Vec<String> {
    let root = meshmirror_testkit::realkube::repo_root();
    let mut found = Vec::new();
    let mut dirs = vec![root.join("deploy/examples")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml")
                && std::fs::read_to_string(&path)
                    .unwrap()
                    .lines()
                    .any(|l| l.starts_with("apiVersion:"))
            {
                let relative = path
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                found.push(relative);
            }
        }
    }
    found.sort();
    found
}

/// The service as installed: the ServiceAccount, ClusterRole and Role of
/// `deploy/install.yaml`, a token from the TokenRequest API, leader election
/// on the Lease its Role allows. It writes entries, status and Events with
/// those rights, is refused what the docs say it cannot do, and the real
/// garbage collector deletes the entries once their mirror is deleted.
#[tokio::test]
async fn the_service_works_under_its_own_rbac_and_the_gc_follows_owner_references() {
    let kube = RealKube::start();
    kube.kubectl_ok(&["apply", "--server-side", "-f", "deploy/install.yaml"]);
    let (token, _) = kube.kubectl_ok(&[
        "create",
        "token",
        "meshmirror",
        "-n",
        "meshmirror-system",
        "--duration=1h",
    ]);
    let service = kube.client_with_token(token.trim()).await;
    let admin = kube.admin().await;
    create_namespace(&admin, "team-a").await;

    // What the docs say it cannot do: read Secrets, write outside its kinds.
    let secrets: Api<Secret> = Api::namespaced(service.clone(), "team-a");
    let denied = secrets.list(&ListParams::default()).await.unwrap_err();
    assert!(denied.to_string().contains("forbidden"), "{denied}");
    let namespaces: Api<Namespace> = Api::all(service.clone());
    let denied = namespaces
        .delete("team-a", &DeleteParams::default())
        .await
        .unwrap_err();
    assert!(denied.to_string().contains("forbidden"), "{denied}");

    let sim = sim_with(2);
    let failures = Failures::default();
    let controller = ControllerTask::spawn(
        "service",
        service.clone(),
        RunOptions {
            sim_cloud: Some(sim.clone()),
            allowed_groups: vec!["team-a=sim:web".into()],
            leader: Some(lease_config("meshmirror-system", "meshmirror-0")),
            ..RunOptions::default()
        },
        &failures,
    );
    let check = || check_failures(&failures);
    let mirrors: Api<ScalingGroupMirror> = Api::namespaced(admin.clone(), "team-a");
    mirrors
        .create(&PostParams::default(), &mirror("team-a", "web", "web"))
        .await
        .unwrap();
    let written = wait_entries(&admin, "team-a", "2 entries", |e| e.len() == 2, check).await;
    for entry in &written {
        let owners = entry.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1);
        assert_eq!(owners[0].kind, "ScalingGroupMirror");
        let managers: Vec<String> = entry
            .metadata
            .managed_fields
            .iter()
            .flatten()
            .filter_map(|m| m.manager.clone())
            .collect();
        assert_eq!(
            managers,
            vec![keys::MANAGER.to_string()],
            "{:?}",
            entry.metadata.name
        );
    }
    // Status (through the status subresource) and the lease, by the service.
    let started = Instant::now();
    loop {
        check();
        let status = mirrors.get("web").await.unwrap().status.unwrap_or_default();
        if is_ready(&status) && status.entries == 2 {
            break;
        }
        assert!(
            started.elapsed() < REAL_CONVERGE,
            "no Ready status: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lease: Api<Lease> = Api::namespaced(admin.clone(), "meshmirror-system");
    let holder = lease
        .get("meshmirror")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.holder_identity);
    assert_eq!(holder.as_deref(), Some("meshmirror-0"));

    // Scale-in: the service deletes the entry of the VM that left.
    sim.scale_in("web", 1).unwrap();
    wait_entries(
        &admin,
        "team-a",
        "1 entry after scale-in",
        |e| e.len() == 1,
        check,
    )
    .await;

    // A new process (nothing in memory; what an upgrade starts) adopts the
    // entries with zero writes: the same field manager, the same applied
    // hash, so every resourceVersion stays.
    controller.stop().await;
    let versions = |entries: &[DynamicObject]| -> Vec<(Option<String>, Option<String>)> {
        let mut v: Vec<_> = entries
            .iter()
            .map(|e| (e.metadata.name.clone(), e.metadata.resource_version.clone()))
            .collect();
        v.sort();
        v
    };
    let before = versions(&entries(&admin, "team-a").await);
    let calls = sim.members_calls_for("web").unwrap();
    let failures = Failures::default();
    let next = ControllerTask::spawn(
        "next",
        service.clone(),
        RunOptions {
            sim_cloud: Some(sim.clone()),
            allowed_groups: vec!["team-a=sim:web".into()],
            leader: Some(lease_config("meshmirror-system", "meshmirror-1")),
            ..RunOptions::default()
        },
        &failures,
    );
    let started = Instant::now();
    while sim.members_calls_for("web").unwrap() < calls + 1 {
        check_failures(&failures);
        assert!(
            started.elapsed() < REAL_CONVERGE,
            "the new process made no pass"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Not a sleep: a cloud event makes a second pass, and passes of one
    // mirror never overlap, so once the second asks the cloud the first has
    // ended, its writes (if any) made.
    sim.push_event("web", meshmirror_provider::GroupEventKind::Changed);
    while sim.members_calls_for("web").unwrap() < calls + 2 {
        check_failures(&failures);
        assert!(
            started.elapsed() < REAL_CONVERGE,
            "the event made no second pass"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        versions(&entries(&admin, "team-a").await),
        before,
        "the new process rewrote entries"
    );
    next.stop().await;

    // The mirror goes: the real garbage collector deletes its entries.
    mirrors
        .delete("web", &DeleteParams::background())
        .await
        .unwrap();
    wait_entries(
        &admin,
        "team-a",
        "the GC to delete the entries",
        |e| e.is_empty(),
        || {},
    )
    .await;
}

/// The namespace-scoped install (`deploy/overlays/namespaced`): no
/// cluster-wide grant, a Role per listed namespace. The service, with that
/// ServiceAccount's token and `--namespace team-a,team-b`, mirrors into both
/// (namespaced watches only, which the Roles allow; a cluster-wide list
/// would be refused) and ignores a third namespace.
#[tokio::test]
async fn the_namespaced_install_works_under_roles_only() {
    let kube = RealKube::start();
    let admin = kube.admin().await;
    for ns in ["team-a", "team-b", "team-c"] {
        create_namespace(&admin, ns).await;
    }
    kube.kubectl_ok(&["apply", "--server-side", "-k", "deploy/overlays/namespaced"]);
    let (token, _) = kube.kubectl_ok(&[
        "create",
        "token",
        "meshmirror",
        "-n",
        "meshmirror-tenants",
        "--duration=1h",
    ]);
    let service = kube.client_with_token(token.trim()).await;
    // The Roles grant nothing cluster-wide.
    let everywhere: Api<ScalingGroupMirror> = Api::all(service.clone());
    let denied = everywhere.list(&ListParams::default()).await.unwrap_err();
    assert!(denied.to_string().contains("forbidden"), "{denied}");

    let sim = meshmirror_sim::SimCloud::new();
    for (g, group) in ["team-a-web", "team-b-web", "team-c-web"]
        .into_iter()
        .enumerate()
    {
        sim.ensure_group(group, "us-east-1");
        sim.add_instance(
            group,
            meshmirror_sim::SimInstance::running(
                format!("{group}-1"),
                std::net::Ipv4Addr::new(10, 7, g as u8, 1),
            ),
        )
        .unwrap();
    }
    let failures = Failures::default();
    let controller = ControllerTask::spawn(
        "tenants",
        service.clone(),
        RunOptions {
            sim_cloud: Some(sim.clone()),
            namespaces: vec!["team-a".into(), "team-b".into()],
            allowed_groups: vec!["team-a=sim:team-a-*".into(), "team-b=sim:team-b-*".into()],
            leader: Some(lease_config("meshmirror-tenants", "meshmirror-0")),
            ..RunOptions::default()
        },
        &failures,
    );
    let check = || check_failures(&failures);
    for ns in ["team-a", "team-b", "team-c"] {
        Api::<ScalingGroupMirror>::namespaced(admin.clone(), ns)
            .create(
                &PostParams::default(),
                &mirror(ns, "web", &format!("{ns}-web")),
            )
            .await
            .unwrap();
    }
    wait_entries(&admin, "team-a", "team-a's entry", |e| e.len() == 1, check).await;
    wait_entries(&admin, "team-b", "team-b's entry", |e| e.len() == 1, check).await;
    sim.scale_out("team-b-web", 1).unwrap();
    wait_entries(
        &admin,
        "team-b",
        "team-b's scale-out",
        |e| e.len() == 2,
        check,
    )
    .await;
    assert!(entries(&admin, "team-c").await.is_empty());
    let unseen = Api::<ScalingGroupMirror>::namespaced(admin.clone(), "team-c")
        .get("web")
        .await
        .unwrap();
    assert!(unseen.status.is_none(), "{:?}", unseen.status);
    controller.stop().await;
}
