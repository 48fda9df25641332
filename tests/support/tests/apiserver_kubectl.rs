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
    let mut watch = k
        .command(&["get", "we", "-w", "--output-watch-events"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
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

fn cleanup(dir: &Path) {
    std::fs::remove_dir_all(dir).ok();
}
