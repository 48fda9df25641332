//! `istioctl analyze` against the real API server over every example of
//! deploy/examples/ (issue 19): what meshmirror writes for them, and the
//! examples themselves, draw no Error and no Warning from Istio's own
//! analyzers.
//!
//! Real backend only (`MESHMIRROR_KUBE=real` with `MESHMIRROR_KUBE_SHARED`,
//! scripts/test.sh's real pass); `istioctl` comes from
//! tests/istiod/build.sh, built with istiod. istiod itself is not needed:
//! `istioctl analyze` reads the API server.
//!
//! Each example file (or each cloud's directory) goes into a namespace of
//! its own, `<example>-<the test's id>` (two examples name the mirror `web`
//! in `default`, and two sim examples mirror the sim group `web`, which one
//! namespace at a time may claim). Kubernetes objects are created as they
//! are, with only their namespace changed:
//!
//! - The simulated cloud's mirrors (`mirror-sim*.yaml`) are served by
//!   meshmirror in-process, one controller per example, each restricted to
//!   its namespace with a simulated cloud loaded from
//!   `deploy/examples/sim-cloud.yaml` (the file `meshmirror run --sim-file`
//!   takes), under the shipped RBAC; the test waits until each mirror is
//!   Ready and what its spec asks for (entries, a ServiceEntry, a Service, a
//!   Sidecar) exists. `mirror-sim-full.yaml` names a WorkloadGroup
//!   `exporter` that no example holds: the test creates one.
//! - The AWS, GCP and Azure examples are applied as objects (the mirrors
//!   and the ServiceAccounts of their identity set-ups); no controller
//!   serves them (their clouds are not here).
//! - Files that are not Kubernetes objects are named in [`NOT_OBJECTS`]; a
//!   new example that is neither fails the test until it is sorted.
//!
//! Then `istioctl analyze -n <namespace> -o json` for each namespace, with
//! the admin kubeconfig of the shared control plane.

// The analyzer's output is printed: the run's log shows what it said.
#![allow(clippy::print_stdout)]

mod common;
#[path = "common/istiod.rs"]
mod istiod_common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{Harness, is_ready};
use istiod_common::{require_real_backend, server_prefix};
use meshmirror::app::RunOptions;
use meshmirror_sim::SimCloud;
use meshmirror_testkit::realkube::{RealKube, repo_root};
use meshmirror_testkit::xds::istiod::istioctl;
use serde_json::Value;

/// Files of deploy/examples/ that are not Kubernetes objects, and what they
/// are.
const NOT_OBJECTS: [(&str, &str); 2] = [
    (
        "sim-cloud.yaml",
        "the simulated cloud of `meshmirror run --sim-file`: the test's sims are loaded from it",
    ),
    (
        "gcp/iam-role.yaml",
        "a gcloud IAM role definition (`gcloud iam roles create --file`)",
    ),
];

/// One example file: where it goes and its objects.
struct Example {
    /// Relative to deploy/examples/.
    file: String,
    /// The namespace as meshmirror (through the test's proxy) sees it.
    ns: String,
    objects: Vec<serde_yaml::Value>,
}

/// Every YAML file under `dir`, sorted, relative to `root`.
fn yaml_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            let rel = path.strip_prefix(root).expect("under the root");
            out.push(rel.to_string_lossy().into_owned());
        }
    }
}

/// The examples that are Kubernetes objects, each with its namespace:
/// `<directory>-<id>` for a cloud's directory, `<file without mirror->-<id>`
/// for a top-level file.
fn examples(id: &str) -> Vec<Example> {
    let root = repo_root().join("deploy/examples");
    let mut files = Vec::new();
    yaml_files(&root, &root, &mut files);
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(root.join(&file)).expect("the example reads");
        let docs: Vec<serde_yaml::Value> = serde_yaml::Deserializer::from_str(&text)
            .map(|d| {
                serde::Deserialize::deserialize(d)
                    .unwrap_or_else(|e| panic!("deploy/examples/{file}: {e}"))
            })
            .filter(|d: &serde_yaml::Value| !d.is_null())
            .collect();
        let objects = docs
            .iter()
            .all(|d| d.get("kind").is_some() && d.get("apiVersion").is_some());
        if NOT_OBJECTS.iter().any(|(f, _)| *f == file) {
            assert!(
                !objects,
                "deploy/examples/{file} holds Kubernetes objects now: take it out of NOT_OBJECTS"
            );
            continue;
        }
        assert!(
            objects && !docs.is_empty(),
            "deploy/examples/{file} is a new example that is not a list of Kubernetes objects: \
             apply it in this test or name it in NOT_OBJECTS with the reason"
        );
        let base = match file.split_once('/') {
            Some((dir, _)) => dir.to_string(),
            None => file
                .trim_end_matches(".yaml")
                .trim_start_matches("mirror-")
                .to_string(),
        };
        out.push(Example {
            file,
            ns: format!("{base}-{id}"),
            objects: docs,
        });
    }
    out
}

fn str_at<'a>(v: &'a serde_yaml::Value, path: &[&str]) -> Option<&'a str> {
    let mut v = v;
    for key in path {
        v = v.get(*key)?;
    }
    v.as_str()
}

/// One message of `istioctl analyze -o json`.
#[derive(Debug, Clone)]
struct Message {
    code: String,
    level: String,
    origin: String,
    message: String,
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} [{}] ({}) {}",
            self.level, self.code, self.origin, self.message
        )
    }
}

/// `istioctl analyze -n <ns> -o json` against the shared control plane.
fn analyze(istioctl: &Path, kubeconfig: &Path, ns: &str) -> Vec<Message> {
    let out = Command::new(istioctl)
        .arg("analyze")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["-n", ns, "-o", "json", "--color=false"])
        .stdin(Stdio::null())
        .output()
        .expect("istioctl runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "istioctl analyze -n {ns} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let json: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("istioctl analyze -n {ns} -o json is not JSON ({e}):\n{stdout}\n{stderr}")
    });
    let field = |m: &Value, k: &str| m[k].as_str().unwrap_or_default().to_string();
    json.as_array()
        .unwrap_or_else(|| panic!("istioctl analyze -n {ns}: not a list: {json}"))
        .iter()
        .map(|m| Message {
            code: field(m, "code"),
            level: field(m, "level"),
            origin: field(m, "origin"),
            message: field(m, "message"),
        })
        .collect()
}

/// A message the test lets through although it is an Error or Warning,
/// because the analyzer is wrong about VMs; each with why.
struct Allowed {
    code: &'static str,
    origin: String,
    message_has: String,
    why: &'static str,
}

/// The Errors and Warnings among `messages`, less the `allowed` ones.
fn problems(messages: &[Message], allowed: &[Allowed]) -> Vec<Message> {
    messages
        .iter()
        .filter(|m| m.level == "Error" || m.level == "Warning")
        .filter(|m| {
            !allowed.iter().any(|a| {
                a.code == m.code && a.origin == m.origin && m.message.contains(&a.message_has)
            })
        })
        .cloned()
        .collect()
}

#[tokio::test]
async fn istioctl_analyze_finds_no_error_or_warning_in_any_example_or_what_meshmirror_writes_for_it()
 {
    require_real_backend("istioctl");
    let istioctl = istioctl();
    let kube = RealKube::shared();
    let h = Harness::without_controller(SimCloud::new()).await;
    let prefix = server_prefix(&h);
    let id = prefix.trim_end_matches('-');
    let server = |ns: &str| format!("{prefix}{ns}");
    let sim_yaml = std::fs::read_to_string(repo_root().join("deploy/examples/sim-cloud.yaml"))
        .expect("sim-cloud.yaml reads");

    let examples = examples(id);
    let mut allowed = Vec::new();
    // (namespace, mirror, objects its spec asks for as (kind, name))
    let mut served = Vec::new();
    for example in &examples {
        h.create_namespace(&example.ns).await;
        let mut objects = example.objects.clone();
        for o in &mut objects {
            o["metadata"]["namespace"] = server(&example.ns).into();
            if o["kind"] != "ScalingGroupMirror" || o["spec"]["provider"].get("sim").is_none() {
                continue;
            }
            let name = str_at(o, &["metadata", "name"])
                .expect("a name")
                .to_string();
            let mut wants = Vec::new();
            for w in o["spec"]["workloads"].as_sequence().into_iter().flatten() {
                let workload = str_at(w, &["name"]).expect("a workload name").to_string();
                if let Some(kind) = str_at(w, &["service", "kind"]) {
                    wants.push((kind.to_string(), workload.clone()));
                }
                // A WorkloadGroup the example names and none holds: the
                // defaults of an exporter, as mirror-sim-mesh.yaml's.
                if let Some(group) = str_at(w, &["workloadGroup"]) {
                    let wg = format!(
                        "apiVersion: networking.istio.io/v1\nkind: WorkloadGroup\nmetadata: {{name: {group}, namespace: {}}}\nspec:\n  metadata: {{labels: {{app: {group}}}}}\n  template: {{ports: {{http-metrics: 9100}}, serviceAccount: {group}}}\n",
                        server(&example.ns)
                    );
                    create(&kube, &format!("{id}-{group}"), &wg);
                }
            }
            if let Some(selector) = o["spec"]["sidecar"]["workloadSelector"].as_mapping() {
                wants.push(("Sidecar".to_string(), name.clone()));
                // istioctl's sidecar.SelectorAnalyzer wants a Sidecar's
                // workloadSelector to match a Pod of its namespace and looks
                // at Pods only (istio/istio#51273 asks the same for
                // workloads that are not running pods). A Sidecar for VMs
                // selects the VMs' proxies by the labels their istio-agent
                // sends (README: `app: web-vm`), which no Pod and no
                // WorkloadEntry carries, so the analyzer always reports it:
                // Error IST0101 `Referenced selector not found`.
                let labels: Vec<String> = selector
                    .iter()
                    .map(|(k, v)| {
                        format!("{}={}", k.as_str().unwrap_or(""), v.as_str().unwrap_or(""))
                    })
                    .collect();
                allowed.push(Allowed {
                    code: "IST0101",
                    origin: format!("Sidecar {}/{name}", server(&example.ns)),
                    message_has: format!("Referenced selector not found: \"{}\"", labels.join(",")),
                    why: "the analyzer matches a Sidecar's workloadSelector against Pods only; this one selects VMs",
                });
            }
            served.push((example.ns.clone(), name, wants));
        }
        let yaml: Vec<String> = objects
            .iter()
            .map(|o| serde_yaml::to_string(o).expect("YAML"))
            .collect();
        create(&kube, &format!("{id}-{}", example.ns), &yaml.join("---\n"));
    }

    // One controller per simulated-cloud example's namespace, each with a
    // simulated cloud of its own.
    let mut controllers = Vec::new();
    let namespaces: std::collections::BTreeSet<&String> =
        served.iter().map(|(ns, _, _)| ns).collect();
    for ns in namespaces {
        let opts = RunOptions {
            namespaces: vec![ns.clone()],
            sim_cloud: Some(SimCloud::from_yaml(&sim_yaml).expect("sim-cloud.yaml loads")),
            kube_qps: 0.0,
            allow_all_groups: true,
            ..RunOptions::default()
        };
        controllers.push(h.spawn_controller(ns, h.service.clone(), opts));
    }
    let mut written = String::new();
    for (ns, name, wants) in &served {
        h.wait_status(ns, name, "Ready", is_ready).await;
        let (listed, _) = kube.kubectl_ok(&[
            "get",
            "workloadentries,serviceentries,services,sidecars,workloadgroups",
            "-n",
            &server(ns),
            "-o",
            "name",
        ]);
        assert!(
            listed.contains("workloadentry.networking.istio.io/"),
            "{ns}/{name} is Ready without WorkloadEntries: {listed}"
        );
        for (kind, object) in wants {
            // `service/exporter`, `serviceentry.networking.istio.io/api`
            let kind = kind.to_lowercase();
            assert!(
                listed.lines().any(|l| l == format!("{kind}/{object}")
                    || (l.starts_with(&format!("{kind}.")) && l.ends_with(&format!("/{object}")))),
                "{ns}/{name} is Ready without its {kind} {object}: {listed}"
            );
        }
        written.push_str(&format!("{ns}:\n{listed}"));
    }

    // Info is allowed. What appears: IST0102 (the namespace is not enabled
    // for injection) for every namespace, and nothing else.
    let mut infos = BTreeMap::<String, usize>::new();
    let mut report = String::new();
    let mut found = Vec::new();
    let mut analysed = std::collections::BTreeSet::new();
    for example in &examples {
        let ns = server(&example.ns);
        if !analysed.insert(ns.clone()) {
            continue;
        }
        let messages = analyze(&istioctl, kube.kubeconfig(), &ns);
        let files: Vec<&str> = examples
            .iter()
            .filter(|e| e.ns == example.ns)
            .map(|e| e.file.as_str())
            .collect();
        report.push_str(&format!("== {ns} ({})\n", files.join(", ")));
        for m in &messages {
            report.push_str(&format!("{m}\n"));
            if m.level == "Info" {
                *infos.entry(m.code.clone()).or_default() += 1;
            }
        }
        // The namespace was analysed: istioctl says it is not injected.
        assert!(
            messages
                .iter()
                .any(|m| m.code == "IST0102" && m.origin == format!("Namespace {ns}")),
            "istioctl analyze -n {ns} did not look at the namespace:\n{report}"
        );
        found.extend(problems(&messages, &allowed));
    }
    println!("what meshmirror wrote:\n{written}");
    println!("istioctl analyze:\n{report}");
    println!("Info codes: {infos:?}");
    for a in &allowed {
        println!("allowed: {} on {} ({})", a.code, a.origin, a.why);
    }
    assert!(
        found.is_empty(),
        "istioctl analyze reports Errors or Warnings:\n{}\n\nall of its output:\n{report}",
        found
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
    for c in controllers {
        c.stop().await;
    }
}

/// `kubectl create -f` of `yaml` as the admin, from a file named after
/// `tag`.
fn create(kube: &RealKube, tag: &str, yaml: &str) {
    let path = std::env::temp_dir().join(format!("meshmirror-istioctl-{tag}.yaml"));
    std::fs::write(&path, yaml).expect("the temp file writes");
    kube.kubectl_ok(&["create", "-f", &path.to_string_lossy()]);
    let _ = std::fs::remove_file(&path);
}

/// The check is not vacuous: a VirtualService routing to a host that does
/// not exist is an Error istioctl reports, and [`problems`] keeps it.
#[tokio::test]
async fn istioctl_analyze_reports_an_error_and_the_check_keeps_it() {
    require_real_backend("istioctl");
    let istioctl = istioctl();
    let kube = RealKube::shared();
    let h = Harness::without_controller(SimCloud::new()).await;
    let prefix = server_prefix(&h);
    h.create_namespace("broken").await;
    let ns = format!("{prefix}broken");
    create(
        &kube,
        &format!("{}-broken", prefix.trim_end_matches('-')),
        &format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: to-nowhere, namespace: {ns}}}\nspec:\n  hosts: [api.{ns}.svc.cluster.local]\n  http:\n    - route:\n        - destination: {{host: nowhere.{ns}.svc.cluster.local}}\n"
        ),
    );
    let messages = analyze(&istioctl, kube.kubeconfig(), &ns);
    let found = problems(&messages, &[]);
    assert!(
        found.iter().any(|m| m.level == "Error"
            && m.code == "IST0101"
            && m.origin == format!("VirtualService {ns}/to-nowhere")),
        "{messages:#?}"
    );
}
