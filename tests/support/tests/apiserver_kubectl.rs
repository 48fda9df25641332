//! The fake API server through the machine's real `kubectl`: get, apply
//! --server-side, get -w and delete. Fails, naming the install, when kubectl is
//! missing (meshmirror_testkit::tools).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use meshmirror_testkit::tools::{self, Tool};
use meshmirror_testkit::{ApiServer, Verb};
use serde_json::json;

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bin);
        c.env("KUBECONFIG", &self.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .args(args);
        c
    }

    async fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = self.command(args);
        let input = stdin.map(str::to_string);
        tokio::task::spawn_blocking(move || {
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped());
            let mut child = cmd.spawn().expect("kubectl starts");
            {
                use std::io::Write;
                let mut sin = child.stdin.take().unwrap();
                if let Some(input) = input {
                    sin.write_all(input.as_bytes()).unwrap();
                }
            }
            child.wait_with_output().unwrap()
        })
        .await
        .unwrap()
    }

    async fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin).await;
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }
}

fn temp_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "testkit-kubectl-{}-{}",
        std::process::id(),
        rand_suffix()
    ));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

const ENTRY: &str = "apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: vm1
  namespace: default
  labels:
    app: web
spec:
  address: 10.1.2.3
  ports:
    http: 8080
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_apply_watch_delete() {
    tools::require(Tool::Kubectl);
    let bin = PathBuf::from("kubectl");
    let server = ApiServer::start().await.unwrap();
    let dir = temp_dir();
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let k = Kubectl { bin, kubeconfig };

    // get: discovery, short names, tables.
    let ns = k.ok(&["get", "namespaces"], None).await;
    assert!(ns.contains("default") && ns.contains("Active"), "{ns}");
    let out = k.run(&["get", "we"], None).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("No resources found"));

    // apply --server-side from stdin.
    let applied = k
        .ok(&["apply", "--server-side", "-f", "-"], Some(ENTRY))
        .await;
    assert!(
        applied.contains("workloadentry.networking.istio.io/vm1 serverside-applied"),
        "{applied}"
    );
    let table = k.ok(&["get", "workloadentries", "-o", "wide"], None).await;
    let header = table.lines().next().unwrap();
    assert!(
        header.contains("NAME") && header.contains("ADDRESS"),
        "{table}"
    );
    assert!(
        table.contains("vm1") && table.contains("10.1.2.3"),
        "{table}"
    );

    let ar = ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: "networking.istio.io/v1".into(),
        kind: "WorkloadEntry".into(),
        plural: "workloadentries".into(),
    };
    let we: Api<DynamicObject> = Api::namespaced_with(server.client(), "default", &ar);
    let live = we.get("vm1").await.unwrap();
    let mf = live.metadata.managed_fields.unwrap();
    assert_eq!(mf[0].manager.as_deref(), Some("kubectl"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    // Re-applying the same file is a no-op.
    let before = server.requests();
    k.ok(&["apply", "--server-side", "-f", "-"], Some(ENTRY))
        .await;
    assert_eq!(
        we.get("vm1").await.unwrap().metadata.resource_version,
        live.metadata.resource_version
    );
    assert_eq!(
        server
            .requests()
            .since(&before)
            .get(Verb::Patch, "workloadentries"),
        1
    );

    // Invalid objects and unknown fields are refused with the server's message.
    let bad = ENTRY.replace("8080", "99999");
    let out = k
        .run(&["apply", "--server-side", "-f", "-"], Some(&bad))
        .await;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("is invalid") && err.contains("port must be between 1-65535"),
        "{err}"
    );
    let unknown = ENTRY.replace("  ports:", "  bogus: 1\n  ports:");
    let out = k
        .run(&["apply", "--server-side", "-f", "-"], Some(&unknown))
        .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown field \"spec.bogus\""));

    // get -w sees a change made by someone else.
    let (mut watch, rx) = watch_lines(k.command(&["get", "we", "-w", "--output-watch-events"]));
    let first = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(first.contains("EVENT") || first.contains("NAME"), "{first}");
    let mut seen = vec![first];
    let wait_for = |needle: &str, seen: &mut Vec<String>| {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !seen.iter().any(|l| l.contains(needle)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => seen.push(l),
                Err(_) => panic!("no {needle:?} in kubectl get -w output: {seen:?}"),
            }
        }
    };
    wait_for("ADDED", &mut seen);
    we.patch(
        "vm1",
        &PatchParams::apply("someone-else").force(),
        &Patch::Apply(json!({
            "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
            "metadata": {"name": "vm1"}, "spec": {"address": "10.9.9.9"},
        })),
    )
    .await
    .unwrap();
    wait_for("10.9.9.9", &mut seen);

    // delete (kubectl waits for the object to be gone).
    let deleted = k.ok(&["delete", "workloadentry", "vm1"], None).await;
    assert!(deleted.contains("\"vm1\" deleted"), "{deleted}");
    wait_for("DELETED", &mut seen);
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(we.get_opt("vm1").await.unwrap().is_none());

    // Namespaces and Leases from files, as kubectl apply sends them.
    let lease = "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: l\n  namespace: kube-system\nspec:\n  holderIdentity: me\n";
    k.ok(&["apply", "--server-side", "-f", "-"], Some(lease))
        .await;
    let json_out = k
        .ok(
            &["get", "lease", "l", "-n", "kube-system", "-o", "json"],
            None,
        )
        .await;
    let v: serde_json::Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(v["spec"]["holderIdentity"], "me");
    cleanup(&dir);
}

/// Starts a long-running kubectl (a watch) and hands its stdout over line by
/// line.
fn watch_lines(
    mut command: std::process::Command,
) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

fn cleanup(dir: &Path) {
    std::fs::remove_dir_all(dir).ok();
}

// ---------------------------------------------------------------------------
// The demo seen through kubectl (issue 20): what a newcomer types against
// `meshmirror demo --follow` works as on a real API server.
// ---------------------------------------------------------------------------

const MIRROR: &str = "apiVersion: meshmirror.io/v1alpha1
kind: ScalingGroupMirror
metadata:
  name: web
  namespace: demo
spec:
  provider:
    sim:
      group: web
  workloads:
    - name: api
      labels: {app: web-api}
      ports: {http: 8080}
  sync:
    interval: 30s
";

fn mirror_resource() -> ApiResource {
    ApiResource {
        group: "meshmirror.io".into(),
        version: "v1alpha1".into(),
        api_version: "meshmirror.io/v1alpha1".into(),
        kind: "ScalingGroupMirror".into(),
        plural: "scalinggroupmirrors".into(),
    }
}

/// A server with meshmirror's CRD and kubectl pointed at it.
async fn demo_server() -> (ApiServer, Kubectl, PathBuf) {
    tools::require(Tool::Kubectl);
    let server = ApiServer::builder()
        .crd_file(meshmirror_testkit::realkube::repo_root().join("deploy/crd.yaml"))
        .start()
        .await
        .unwrap();
    let dir = temp_dir();
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let k = Kubectl {
        bin: PathBuf::from("kubectl"),
        kubeconfig,
    };
    (server, k, dir)
}

/// The mirror `web` in `demo`, with a status as meshmirror writes it after a
/// good pass; returns its uid.
async fn ready_mirror(server: &ApiServer) -> String {
    let api: Api<DynamicObject> = Api::namespaced_with(server.client(), "demo", &mirror_resource());
    let obj: DynamicObject = serde_yaml::from_str(MIRROR).unwrap();
    let created = api.create(&Default::default(), &obj).await.unwrap();
    let status = json!({"status": {"provider": "sim", "group": "web", "members": 3, "entries": 3,
    "conditions": [
        {"type": "Degraded", "status": "False", "reason": "Synced", "message": "ok",
         "lastTransitionTime": "2026-01-01T00:00:00Z"},
        {"type": "Ready", "status": "True", "reason": "Synced", "message": "3 entries",
         "lastTransitionTime": "2026-01-01T00:00:00Z"},
    ]}});
    api.patch_status("web", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
    created.metadata.uid.unwrap()
}

/// An Event about the mirror, as kube's Recorder writes it (events.k8s.io/v1).
async fn record_event(server: &ApiServer, uid: &str, name: &str, reason: &str, note: &str) {
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(server.client(), "demo");
    let ev = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "demo"},
        "action": "Reconcile", "reason": reason, "note": note, "type": "Normal",
        "eventTime": "2026-01-01T00:00:00.000000Z",
        "regarding": {"apiVersion": "meshmirror.io/v1alpha1", "kind": "ScalingGroupMirror",
                      "name": "web", "namespace": "demo", "uid": uid},
        "reportingController": "meshmirror", "reportingInstance": "meshmirror-0",
    }))
    .unwrap();
    events.create(&Default::default(), &ev).await.unwrap();
}

/// The cell of `column` in the row of `name` of a `kubectl get` table.
fn cell<'a>(table: &'a str, name: &str, column: &str) -> &'a str {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let start = header
        .find(column)
        .unwrap_or_else(|| panic!("no {column} column in {table}"));
    let row = lines
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("no {name} row in {table}"));
    row[start..].split_whitespace().next().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_sgm_shows_the_ready_column() {
    let (server, k, dir) = demo_server().await;
    ready_mirror(&server).await;
    let table = k.ok(&["get", "sgm", "-n", "demo"], None).await;
    let header = table.lines().next().unwrap();
    for col in ["NAME", "PROVIDER", "MEMBERS", "ENTRIES", "READY", "AGE"] {
        assert!(header.contains(col), "{table}");
    }
    assert_eq!(cell(&table, "web", "READY"), "True", "{table}");
    assert_eq!(cell(&table, "web", "MEMBERS"), "3", "{table}");
    assert_eq!(cell(&table, "web", "PROVIDER"), "sim", "{table}");
    // The priority-1 column shows with -o wide.
    let wide = k
        .ok(&["get", "sgm", "-n", "demo", "-o", "wide"], None)
        .await;
    assert_eq!(cell(&wide, "web", "GROUP"), "web", "{wide}");
    cleanup(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_describe_and_get_events_see_events_written_as_events_k8s_io() {
    let (server, k, dir) = demo_server().await;
    let uid = ready_mirror(&server).await;
    record_event(&server, &uid, "web.1", "Synced", "created 3 entries").await;
    // An event about another object with the same name must not show.
    record_event(&server, "other-uid", "web.2", "Stale", "not this mirror").await;

    let described = k.ok(&["describe", "sgm", "web", "-n", "demo"], None).await;
    let events = described
        .split("\nEvents:")
        .nth(1)
        .unwrap_or_else(|| panic!("no Events section: {described}"));
    let row = events
        .lines()
        .find(|l| l.contains("Synced"))
        .unwrap_or_else(|| panic!("no Synced event: {described}"));
    for part in ["Normal", "meshmirror", "created 3 entries"] {
        assert!(row.contains(part), "{row}");
    }
    assert!(!events.contains("Stale"), "{events}");

    let listed = k.ok(&["get", "events", "-n", "demo"], None).await;
    let header = listed.lines().next().unwrap();
    for col in ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"] {
        assert!(header.contains(col), "{listed}");
    }
    assert!(
        listed.contains("scalinggroupmirror/web") && listed.contains("created 3 entries"),
        "{listed}"
    );
    // The core v1 view, field by field (the real server's mapping).
    let core = k
        .ok(
            &["get", "events.v1.", "web.1", "-n", "demo", "-o", "json"],
            None,
        )
        .await;
    let core: serde_json::Value = serde_json::from_str(&core).unwrap();
    assert_eq!(core["apiVersion"], "v1");
    assert_eq!(core["involvedObject"]["uid"], uid.as_str());
    assert_eq!(core["message"], "created 3 entries");
    assert_eq!(core["reportingComponent"], "meshmirror");
    assert_eq!(core["reportingInstance"], "meshmirror-0");
    assert_eq!(core["eventTime"], "2026-01-01T00:00:00.000000Z");
    assert_eq!(core["source"], json!({}));
    // Selected by involvedObject, as describe asks.
    let selected = k
        .ok(
            &[
                "get",
                "events",
                "-n",
                "demo",
                "--field-selector",
                &format!("involvedObject.uid={uid},involvedObject.kind=ScalingGroupMirror"),
                "-o",
                "name",
            ],
            None,
        )
        .await;
    assert_eq!(selected.trim(), "event/web.1");
    // A watch on core v1 sees an event written through events.k8s.io.
    let (mut watch, rx) =
        watch_lines(k.command(&["get", "events", "-n", "demo", "-w", "-o", "name"]));
    let first = rx.recv_timeout(Duration::from_secs(20)).unwrap();
    assert!(first.starts_with("event/web."), "{first}");
    record_event(&server, &uid, "web.3", "Scaled", "4 entries").await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = vec![first];
    while !seen.iter().any(|l| l.contains("web.3")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        seen.push(rx.recv_timeout(left).unwrap_or_else(|_| panic!("{seen:?}")));
    }
    let _ = watch.kill();
    let _ = watch.wait();
    cleanup(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_sends_protobuf_for_built_in_kinds() {
    let (server, k, dir) = demo_server().await;
    let created = k.ok(&["create", "namespace", "team-a"], None).await;
    assert!(created.contains("namespace/team-a created"), "{created}");
    let ns = k
        .ok(&["get", "namespace", "team-a", "-o", "json"], None)
        .await;
    let ns: serde_json::Value = serde_json::from_str(&ns).unwrap();
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "team-a"
    );
    // Writes went through the counted, logged path.
    assert!(
        server
            .write_log()
            .iter()
            .any(|w| w.verb == Verb::Create && w.resource == "namespaces" && w.succeeded())
    );
    cleanup(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_explain_reads_the_crd_schema_from_openapi_v3() {
    let (_server, k, dir) = demo_server().await;
    let out = k.ok(&["explain", "sgm.spec.sync"], None).await;
    assert!(out.contains("KIND:       ScalingGroupMirror"), "{out}");
    assert!(out.contains("FIELD: sync <Object>"), "{out}");
    assert!(out.contains("interval\t<string>"), "{out}");
    assert!(out.contains("How often to poll the cloud"), "{out}");
    // The object's own fields, with metadata from the built-in schemas.
    let top = k.ok(&["explain", "sgm"], None).await;
    assert!(top.contains("metadata\t<ObjectMeta>"), "{top}");
    let meta = k.ok(&["explain", "sgm.metadata.labels"], None).await;
    assert!(meta.contains("map[string]string"), "{meta}");
    // Built-in kinds too.
    let ns = k.ok(&["explain", "namespace.spec"], None).await;
    assert!(ns.contains("finalizers"), "{ns}");
    cleanup(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_auth_can_i_answers_yes() {
    let (_server, k, dir) = demo_server().await;
    let out = k
        .run(
            &["auth", "can-i", "create", "workloadentries", "-n", "demo"],
            None,
        )
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "yes");
    assert!(
        out.stderr.is_empty(),
        "no warning about the resource: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sgm = k.ok(&["auth", "can-i", "delete", "sgm"], None).await;
    assert_eq!(sgm.trim(), "yes");
    cleanup(&dir);
}
