//! The Helm chart (`deploy/helm/meshmirror`) with the real helm (v4, built
//! from its Go module by `deploy/helm/build-helm.sh`) and, for what needs a
//! cluster, the real control plane (`tests/kube/`):
//!
//! - `helm lint --strict` with every values file of the chart;
//! - the default render is `deploy/install.yaml`, and each cloud's values
//!   file and the namespace-scoped one render their kustomize overlay
//!   (parsed objects, sorted; what differs on purpose is normalised away
//!   explicitly, see [`normalise_helm`] and [`normalise_kustomize`]);
//! - every render passes kubernetes-validate (deploy/validate-kinds.py) and
//!   `kubectl apply --server-side --dry-run=server`, with no warning;
//! - bad values are refused by values.schema.json (or the chart's checks)
//!   with a message naming the key;
//! - `helm install`, then `helm upgrade` to the namespace-scoped mode, and
//!   each time `meshmirror run` with the installed Deployment's arguments and
//!   a token of the chart's ServiceAccount reconciles an example mirror.
//!
//! The cluster tests use the run's shared control plane with
//! `MESHMIRROR_KUBE=real` (scripts/test.sh), else one of their own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use meshmirror::workloadentry::EntryVersion;
use meshmirror_testkit::Backend;
use meshmirror_testkit::realkube::{RealKube, repo_root};
use meshmirror_testkit::tools::{self, Tool};
use serde::Deserialize;
use serde_json::{Value, json};

const CHART: &str = "deploy/helm/meshmirror";
/// Longer than on the fake: a real server, a real process.
const CONVERGE: Duration = Duration::from_secs(60);
/// The labels Helm's conventions add to every object the chart templates;
/// the kustomize install has none of them.
const HELM_LABELS: [&str; 4] = [
    "helm.sh/chart",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/version",
];

/// helm, as `deploy/helm/build-helm.sh --check` finds it; a missing or stale
/// build fails the test, saying how to build it.
fn helm_bin() -> PathBuf {
    let out = Command::new("bash")
        .arg(repo_root().join("deploy/helm/build-helm.sh"))
        .arg("--check")
        .stdin(Stdio::null())
        .output()
        .expect("bash runs deploy/helm/build-helm.sh");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(
        out.status.success() && path.is_file(),
        "this test needs helm v4 and it is not built ({}); install it with scripts/install-test-tools.sh \
         (deploy/helm/build-helm.sh: Go 1.26 and the Go module proxy; about 5 minutes cold)",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    path
}

/// Runs helm in the repository, with its config, cache and data in a
/// directory of this process (nothing of the user's helm is read or written).
fn helm(args: &[&str]) -> Output {
    let home = scratch_dir().join("helm-home");
    Command::new(helm_bin())
        .args(args)
        .env("HELM_CONFIG_HOME", home.join("config"))
        .env("HELM_CACHE_HOME", home.join("cache"))
        .env("HELM_DATA_HOME", home.join("data"))
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .expect("helm runs")
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `helm template RELEASE CHART -n NAMESPACE --include-crds` with these
/// values files and `--set`s: the manifest, or helm's error.
fn render(
    release: &str,
    namespace: &str,
    values: &[&str],
    sets: &[&str],
) -> Result<String, String> {
    let mut args = vec![
        "template",
        release,
        CHART,
        "-n",
        namespace,
        "--include-crds",
    ];
    for file in values {
        args.extend(["-f", file]);
    }
    for set in sets {
        args.extend(["--set", set]);
    }
    let out = helm(&args);
    let (stdout, stderr) = text(&out);
    if out.status.success() {
        Ok(stdout)
    } else {
        Err(stderr)
    }
}

fn render_ok(release: &str, namespace: &str, values: &[&str], sets: &[&str]) -> String {
    render(release, namespace, values, sets)
        .unwrap_or_else(|e| panic!("helm template {values:?} {sets:?} failed:\n{e}"))
}

/// The objects of a multi-document YAML stream.
fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(yaml)
        .map(|doc| Value::deserialize(doc).expect("valid YAML"))
        .filter(|v| !v.is_null())
        .collect()
}

type Key = (String, String, String, String);

fn key(obj: &Value) -> Key {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_string();
    (
        s(&obj["apiVersion"]),
        s(&obj["kind"]),
        s(&obj["metadata"]["namespace"]),
        s(&obj["metadata"]["name"]),
    )
}

/// Objects by (apiVersion, kind, namespace, name), each once.
fn by_key(objects: Vec<Value>) -> BTreeMap<Key, Value> {
    let mut map = BTreeMap::new();
    for obj in objects {
        let k = key(&obj);
        assert!(map.insert(k.clone(), obj).is_none(), "{k:?} twice");
    }
    map
}

/// Numbers compared by value: kustomize writes the CRD's `minimum: 0.0` as
/// `0`, which parses to another JSON number.
fn numbers_as_f64(v: &mut Value) {
    match v {
        Value::Number(n) => {
            *v = json!(n.as_f64().expect("a finite number"));
        }
        Value::Array(items) => items.iter_mut().for_each(numbers_as_f64),
        Value::Object(map) => map.values_mut().for_each(numbers_as_f64),
        _ => {}
    }
}

fn labels_mut(obj: &mut Value) -> Option<&mut serde_json::Map<String, Value>> {
    obj["metadata"]
        .get_mut("labels")
        .and_then(Value::as_object_mut)
}

/// The chart's render, less Helm's own labels. Each object the chart
/// templates must carry all four with the release's values (checked here, so
/// that removing them hides nothing); the CRD of crds/ is not templated and
/// carries none.
fn normalise_helm(objects: Vec<Value>, release: &str) -> BTreeMap<Key, Value> {
    let chart = chart_yaml();
    let values = [
        format!("meshmirror-{}", chart["version"].as_str().unwrap()),
        "Helm".to_string(),
        release.to_string(),
        env!("CARGO_PKG_VERSION").to_string(),
    ];
    let want: Vec<(&str, String)> = HELM_LABELS.into_iter().zip(values).collect();
    let mut map = by_key(objects);
    for (k, obj) in map.iter_mut() {
        numbers_as_f64(obj);
        if k.1 == "CustomResourceDefinition" {
            continue;
        }
        let labels = labels_mut(obj).unwrap_or_else(|| panic!("{k:?} has no labels"));
        for (name, value) in &want {
            assert_eq!(
                labels.remove(*name),
                Some(Value::String(value.clone())),
                "{k:?}: label {name}"
            );
        }
    }
    map
}

/// A kustomize render, less what the chart leaves out on purpose: the
/// Namespace (Helm installs into a namespace that exists: a chart that
/// creates its release's namespace cannot be installed; docs/install.md says
/// how to create it) and, on the CRD only, the `app.kubernetes.io/part-of`
/// label that kustomize's `labels:` adds (crds/ holds deploy/crd.yaml as
/// generated, and Helm does not template crds/). Returns the Namespace too.
fn normalise_kustomize(objects: Vec<Value>) -> (BTreeMap<Key, Value>, Vec<Value>) {
    let mut map = by_key(objects);
    let namespaces: Vec<Key> = map.keys().filter(|k| k.1 == "Namespace").cloned().collect();
    let removed = namespaces.iter().filter_map(|k| map.remove(k)).collect();
    for (k, obj) in map.iter_mut() {
        numbers_as_f64(obj);
        if k.1 == "CustomResourceDefinition" {
            let labels = labels_mut(obj).expect("kustomize labels the CRD");
            assert_eq!(
                labels.remove("app.kubernetes.io/part-of"),
                Some(json!("meshmirror"))
            );
            if labels.is_empty() {
                obj["metadata"].as_object_mut().unwrap().remove("labels");
            }
        }
    }
    (map, removed)
}

/// Asserts that the two sets of objects are equal, naming the first that
/// differs with both versions.
fn assert_same_objects(what: &str, kustomize: &BTreeMap<Key, Value>, chart: &BTreeMap<Key, Value>) {
    let only_k: Vec<_> = kustomize
        .keys()
        .filter(|k| !chart.contains_key(*k))
        .collect();
    let only_h: Vec<_> = chart
        .keys()
        .filter(|k| !kustomize.contains_key(*k))
        .collect();
    assert!(
        only_k.is_empty() && only_h.is_empty(),
        "{what}: only in kustomize: {only_k:?}; only in the chart: {only_h:?}"
    );
    for (k, want) in kustomize {
        let have = &chart[k];
        assert!(
            want == have,
            "{what}: {k:?} differs\nkustomize:\n{}\nchart:\n{}",
            serde_yaml::to_string(want).unwrap(),
            serde_yaml::to_string(have).unwrap()
        );
    }
}

fn kustomize(dir: &str) -> Vec<Value> {
    tools::require(Tool::Kubectl);
    let out = Command::new("kubectl")
        .args(["kustomize", dir])
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .expect("kubectl runs");
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "kubectl kustomize {dir}: {stderr}");
    documents(&stdout)
}

fn file(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn chart_yaml() -> Value {
    documents(&file(&format!("{CHART}/Chart.yaml"))).remove(0)
}

/// The values files shipped beside values.yaml: one per cloud overlay and
/// the namespace-scoped one, with the kustomize install each renders and
/// the release namespace it goes in.
const VALUES_FILES: [(&str, &str, &str); 4] = [
    (
        "values-aws.yaml",
        "deploy/overlays/aws",
        "meshmirror-system",
    ),
    (
        "values-gcp.yaml",
        "deploy/overlays/gcp",
        "meshmirror-system",
    ),
    (
        "values-azure.yaml",
        "deploy/overlays/azure",
        "meshmirror-system",
    ),
    (
        "values-namespaced.yaml",
        "deploy/overlays/namespaced",
        "meshmirror-tenants",
    ),
];

fn values_path(name: &str) -> String {
    format!("{CHART}/{name}")
}

/// Every key set to something other than its default, to render every
/// branch of the templates.
const FULL_VALUES: &str = r#"
fullnameOverride: mirror
image:
  repository: registry.example.com/platform/meshmirror
  digest: sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
  pullPolicy: Always
imagePullSecrets: [{name: regcred}]
replicaCount: 3
revisionHistoryLimit: 2
leaderElection: {leaseName: mirror-lease, leaseDuration: 30s, renewDeadline: 20s, retryPeriod: 4s}
allowedGroups:
  - "*=aws:*:{namespace}-*"
  - web=/subscriptions/*/resourcegroups/web-rg/providers/microsoft.compute/virtualmachinescalesets/*
logFormat: text
istioNamespace: istio-mesh
workloadEntryVersion: v1beta1
groupGoneGrace: 1h30m
kubeClient: {qps: 20, burst: 40}
maxConcurrentPasses: 32
cloud: aws
aws:
  roleArn: arn:aws:iam::111122223333:role/meshmirror
  region: eu-west-1
  eventQueueUrl: https://sqs.eu-west-1.amazonaws.com/111122223333/meshmirror-events
  accounts: ["111122223333", "444455556666"]
gcp: {pubsubSubscription: projects/my-project/subscriptions/meshmirror}
azure: {eventQueue: "https://acct.queue.core.windows.net/events", eventPollSeconds: 10, armReadsPerSecond: 12.5, credential: workload-identity}
serviceAccount: {annotations: {example.com/owner: platform}}
podAnnotations: {example.com/scrape: "false"}
podLabels: {team: platform}
priorityClassName: system-cluster-critical
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: mesh, effect: NoSchedule}]
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms: [{matchExpressions: [{key: kubernetes.io/arch, operator: In, values: [amd64]}]}]
topologySpreadConstraints:
  - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: DoNotSchedule}
extraArgs: [--dry-run]
extraEnv: [{name: RUST_LOG, value: info}]
metrics: {port: 9191, service: {annotations: {example.com/note: metrics}}}
networkPolicy:
  metricsFrom: [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: observability}}}]
  httpsPorts: [443]
  extraEgress: [{to: [{ipBlock: {cidr: 10.0.0.0/8}}], ports: [{port: 3128, protocol: TCP}]}]
podDisruptionBudget: {minAvailable: 2}
"#;

/// The directory of this process's files (nextest runs each test in a
/// process of its own).
fn scratch_dir() -> PathBuf {
    std::env::temp_dir().join(format!("meshmirror-helm-test-{}", std::process::id()))
}

/// Removes the scratch directory when the test passes; a failed test's is
/// kept, with the renders and the process logs its message names.
struct Scratch;

impl Drop for Scratch {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(scratch_dir());
        }
    }
}

/// A file of this process's own.
fn scratch_file(name: &str, content: &str) -> PathBuf {
    let dir = scratch_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

fn full_values() -> String {
    scratch_file("values-full.yaml", FULL_VALUES)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn helm_lint_strict_passes_with_every_values_file() {
    let _scratch = Scratch;
    let full = full_values();
    let mut sets: Vec<Vec<String>> = vec![vec![]];
    sets.extend(VALUES_FILES.iter().map(|(f, _, _)| vec![values_path(f)]));
    sets.push(vec![full]);
    for files in sets {
        let mut args = vec!["lint", "--strict", CHART];
        for f in &files {
            args.extend(["-f", f.as_str()]);
        }
        let out = helm(&args);
        let (stdout, stderr) = text(&out);
        assert!(
            out.status.success(),
            "helm lint {files:?}:\n{stdout}\n{stderr}"
        );
        assert!(
            stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{stdout}"
        );
        assert!(!stdout.contains("[WARNING]"), "{stdout}");
    }
}

/// Chart.yaml: apiVersion v2, and appVersion the crate's version (the
/// image's default tag, compared with deploy/install.yaml's below).
#[test]
fn the_charts_app_version_is_the_crates() {
    let _scratch = Scratch;
    let chart = chart_yaml();
    assert_eq!(chart["apiVersion"], "v2");
    assert_eq!(chart["name"], "meshmirror");
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    // The CRD in crds/ is deploy/crd.yaml, byte for byte (deploy/check.sh
    // keeps it so; this fails first when it was not run).
    assert_eq!(
        file(&format!(
            "{CHART}/crds/scalinggroupmirrors.meshmirror.io.yaml"
        )),
        file("deploy/crd.yaml"),
        "run deploy/check.sh PATH/TO/meshmirror --update"
    );
}

#[test]
fn the_default_render_is_deploy_install_yaml() {
    let _scratch = Scratch;
    let chart = normalise_helm(
        documents(&render_ok("meshmirror", "meshmirror-system", &[], &[])),
        "meshmirror",
    );
    let (install, namespaces) = normalise_kustomize(documents(&file("deploy/install.yaml")));
    assert_eq!(namespaces.len(), 1, "{namespaces:?}");
    assert_eq!(namespaces[0]["metadata"]["name"], "meshmirror-system");
    assert_same_objects("deploy/install.yaml", &install, &chart);
    // What is compared: the CRD and every object of the install.
    let kinds: Vec<&str> = chart.keys().map(|k| k.1.as_str()).collect();
    assert_eq!(
        kinds.len(),
        10,
        "CRD, ServiceAccount, ClusterRole(Binding), Role(Binding), Service, Deployment, PDB, NetworkPolicy: {kinds:?}"
    );
}

#[test]
fn each_values_file_renders_its_kustomize_overlay() {
    let _scratch = Scratch;
    for (values, overlay, namespace) in VALUES_FILES {
        let chart = normalise_helm(
            documents(&render_ok(
                "meshmirror",
                namespace,
                &[&values_path(values)],
                &[],
            )),
            "meshmirror",
        );
        let (want, namespaces) = normalise_kustomize(kustomize(overlay));
        assert_eq!(namespaces.len(), 1, "{overlay}: {namespaces:?}");
        assert_eq!(namespaces[0]["metadata"]["name"], namespace, "{overlay}");
        assert_same_objects(&format!("{values} against {overlay}"), &want, &chart);
    }
}

/// With serviceMonitor and prometheusRule on, their specs are those of
/// deploy/observability/ (the alerts come from files/prometheusrule.yaml, a
/// copy deploy/check.sh keeps).
#[test]
fn the_monitoring_objects_are_deploy_observabilitys() {
    let _scratch = Scratch;
    let rendered = by_key(documents(&render_ok(
        "meshmirror",
        "meshmirror-system",
        &[],
        &["serviceMonitor.enabled=true", "prometheusRule.enabled=true"],
    )));
    for (kind, path) in [
        ("ServiceMonitor", "deploy/observability/servicemonitor.yaml"),
        ("PrometheusRule", "deploy/observability/prometheusrule.yaml"),
    ] {
        let want = documents(&file(path)).remove(0);
        let have = rendered
            .values()
            .find(|o| o["kind"] == kind)
            .unwrap_or_else(|| panic!("no {kind} rendered"));
        assert_eq!(have["spec"], want["spec"], "{kind}");
        assert_eq!(have["metadata"]["namespace"], "meshmirror-system");
    }
    // Off by default: the install does not need the Prometheus Operator.
    let default = render_ok("meshmirror", "meshmirror-system", &[], &[]);
    assert!(!default.contains("kind: ServiceMonitor"));
    assert!(!default.contains("kind: PrometheusRule"));
}

fn deployment(objects: &BTreeMap<Key, Value>) -> &Value {
    objects
        .values()
        .find(|o| o["kind"] == "Deployment")
        .expect("a Deployment")
}

fn args_of(deployment: &Value) -> Vec<String> {
    deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("a string").to_string())
        .collect()
}

/// The binary's own parser takes the rendered arguments: `--help` last
/// makes it stop after parsing them (an unknown flag or a bad value fails
/// before it), without connecting anywhere.
fn assert_the_binary_parses(what: &str, args: &[String]) {
    let out = Command::new(env!("CARGO_BIN_EXE_meshmirror"))
        .args(args)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .expect("meshmirror runs");
    assert!(
        out.status.success(),
        "{what}: meshmirror {args:?} is refused: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn full_render() -> BTreeMap<Key, Value> {
    by_key(documents(&render_ok(
        "meshmirror",
        "meshmirror-system",
        &[&full_values()],
        &[],
    )))
}

/// Every key changed: the arguments, in order, written out by hand here,
/// and the binary takes them.
#[test]
fn every_value_reaches_the_arguments() {
    let _scratch = Scratch;
    let args = args_of(deployment(&full_render()));
    let want = [
        "run",
        "--metrics-addr=0.0.0.0:9191",
        "--log-format=text",
        "--leader-elect",
        "--lease-duration=30s",
        "--renew-deadline=20s",
        "--retry-period=4s",
        "--lease-name=mirror-lease",
        "--allowed-groups=*=aws:*:{namespace}-*;web=/subscriptions/*/resourcegroups/web-rg/providers/microsoft.compute/virtualmachinescalesets/*",
        "--istio-namespace=istio-mesh",
        "--workloadentry-version=v1beta1",
        "--group-gone-grace=1h30m",
        "--kube-qps=20",
        "--kube-burst=40",
        "--max-concurrent-passes=32",
        "--aws-region=eu-west-1",
        "--aws-event-queue-url=https://sqs.eu-west-1.amazonaws.com/111122223333/meshmirror-events",
        "--aws-accounts=111122223333,444455556666",
        "--gcp-pubsub-subscription=projects/my-project/subscriptions/meshmirror",
        "--azure-event-queue=https://acct.queue.core.windows.net/events",
        "--azure-event-poll-seconds=10",
        "--azure-arm-reads-per-second=12.5",
        "--azure-credential=workload-identity",
        "--dry-run",
    ];
    assert_eq!(args, want);
    assert_the_binary_parses("the full values", &args);
}

/// Every key changed: the pod's spec.
#[test]
fn every_value_reaches_the_pod() {
    let _scratch = Scratch;
    let objects = full_render();
    let deploy = deployment(&objects);
    let pod = &deploy["spec"]["template"]["spec"];
    assert_eq!(deploy["metadata"]["name"], "mirror");
    assert_eq!(deploy["spec"]["replicas"], 3);
    assert_eq!(
        pod["containers"][0]["image"],
        "registry.example.com/platform/meshmirror@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
    );
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(pod["containers"][0]["ports"][0]["containerPort"], 9191);
    assert_eq!(
        pod["containers"][0]["env"][2],
        json!({"name": "RUST_LOG", "value": "info"})
    );
    assert_eq!(pod["serviceAccountName"], "mirror");
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    assert_eq!(pod["nodeSelector"], json!({"kubernetes.io/os": "linux"}));
    assert_eq!(pod["tolerations"][0]["key"], "dedicated");
    assert!(pod["affinity"]["nodeAffinity"].is_object());
    // A constraint without a selector gets the pods'.
    assert_eq!(
        pod["topologySpreadConstraints"],
        json!([{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/name": "meshmirror", "app.kubernetes.io/component": "controller"}}}])
    );
    let template = &deploy["spec"]["template"]["metadata"];
    assert_eq!(template["labels"]["team"], "platform");
    assert_eq!(template["annotations"]["example.com/scrape"], "false");
}

/// Every key changed: the other objects.
#[test]
fn every_value_reaches_the_other_objects() {
    let _scratch = Scratch;
    let objects = full_render();
    let find = |kind: &str, name: &str| -> &Value {
        objects
            .values()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}"))
    };
    let sa = find("ServiceAccount", "mirror");
    assert_eq!(
        sa["metadata"]["annotations"],
        json!({"example.com/owner": "platform", "eks.amazonaws.com/role-arn": "arn:aws:iam::111122223333:role/meshmirror"})
    );
    let cluster_role = find("ClusterRole", "mirror");
    let namespaces_rule = cluster_role["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resources"] == json!(["namespaces"]))
        .expect("the namespaces rule");
    assert_eq!(namespaces_rule["resourceNames"], json!(["istio-mesh"]));
    let lease_role = find("Role", "mirror-leader-election");
    assert_eq!(
        lease_role["rules"][1]["resourceNames"],
        json!(["mirror-lease"])
    );
    let service = find("Service", "mirror-metrics");
    assert_eq!(service["spec"]["ports"][0]["port"], 9191);
    assert_eq!(
        service["metadata"]["annotations"]["example.com/note"],
        "metrics"
    );
    assert_eq!(
        find("PodDisruptionBudget", "mirror")["spec"]["minAvailable"],
        2
    );
    let policy = &find("NetworkPolicy", "mirror")["spec"];
    assert_eq!(
        policy["ingress"][0]["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "observability"
    );
    assert_eq!(
        policy["egress"],
        json!([
            {"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
            {"ports": [{"port": 443, "protocol": "TCP"}]},
            {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"port": 3128, "protocol": "TCP"}]},
        ])
    );
}

/// The arguments of the default render and of each values file are taken
/// by the binary, and one replica gets no PodDisruptionBudget.
#[test]
fn the_binary_takes_every_renders_arguments() {
    let _scratch = Scratch;
    let mut renders = vec![(
        "values.yaml".to_string(),
        render_ok("meshmirror", "meshmirror-system", &[], &[]),
    )];
    for (values, _, namespace) in VALUES_FILES {
        renders.push((
            values.into(),
            render_ok("meshmirror", namespace, &[&values_path(values)], &[]),
        ));
    }
    for (what, yaml) in &renders {
        assert_the_binary_parses(what, &args_of(deployment(&by_key(documents(yaml)))));
    }
    let single = render_ok(
        "meshmirror",
        "meshmirror-system",
        &[],
        &["replicaCount=1", "leaderElection.enabled=false"],
    );
    assert!(!single.contains("kind: PodDisruptionBudget"), "{single}");
    assert!(!single.contains("--leader-elect"), "{single}");
    assert!(!single.contains("meshmirror-leader-election"), "{single}");
}

/// python3 with kubernetes-validate and promtool, which
/// deploy/validate-kinds.py needs: a missing one fails the test, saying how
/// to install it.
fn require_validators() {
    for (what, program, args, install) in [
        (
            "python3 with kubernetes-validate",
            "python3",
            &["-c", "import kubernetes_validate"][..],
            "scripts/install-test-tools.sh (pip install kubernetes-validate==1.37.0)",
        ),
        (
            "promtool",
            "promtool",
            &["--version"][..],
            "scripts/install-test-tools.sh (the Debian package prometheus)",
        ),
    ] {
        let ran = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output();
        let ok = ran.as_ref().is_ok_and(|o| o.status.success());
        assert!(
            ok,
            "this test needs {what} and it does not run ({:?}); install it with {install}",
            ran.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
        );
    }
}

/// The renders the cluster-free checks and the dry run take: LABEL, the
/// release's namespace, the values files.
fn every_render() -> Vec<(String, &'static str, Vec<String>)> {
    let mut renders = vec![("default".to_string(), "meshmirror-system", vec![])];
    for (values, _, namespace) in VALUES_FILES {
        renders.push((values.to_string(), namespace, vec![values_path(values)]));
    }
    renders.push(("full".to_string(), "meshmirror-system", vec![full_values()]));
    renders
}

fn render_to_file(label: &str, namespace: &str, values: &[String], sets: &[&str]) -> PathBuf {
    let values: Vec<&str> = values.iter().map(String::as_str).collect();
    let yaml = render_ok("meshmirror", namespace, &values, sets);
    scratch_file(&format!("render-{label}.yaml"), &yaml)
}

/// Each render, with the monitoring objects on, through the validators of
/// deploy/check.sh: kubernetes-validate --strict against the oldest and
/// newest Kubernetes supported, the CRD's schema, promtool for the alerts.
#[test]
fn every_render_passes_kubernetes_validate() {
    let _scratch = Scratch;
    require_validators();
    let monitoring = ["serviceMonitor.enabled=true", "prometheusRule.enabled=true"];
    let mut args: Vec<String> = [
        "deploy/validate-kinds.py",
        "--crd",
        "deploy/crd.yaml",
        "-k",
        "1.33.0",
        "-k",
        "1.37.0",
    ]
    .map(String::from)
    .into();
    for (label, namespace, values) in every_render() {
        let path = render_to_file(&label, namespace, &values, &monitoring);
        args.push(format!("{label}={}", path.display()));
    }
    let out = Command::new("python3")
        .args(&args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs");
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "validate-kinds.py:\n{stdout}\n{stderr}"
    );
    // Every kind the chart makes was validated by something.
    for kind in [
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Service",
        "Deployment",
        "PodDisruptionBudget",
        "NetworkPolicy",
        "ServiceMonitor",
        "PrometheusRule",
    ] {
        assert!(
            stdout.contains(&format!("\n  {kind} (")),
            "{kind} not validated:\n{stdout}"
        );
    }
}

/// Values the schema refuses: the `--set`s, where (the key) and why.
const SCHEMA_CASES: &[(&[&str], &str, &str)] = &[
    (
        &["cloud=digitalocean"],
        "at '/cloud'",
        "value must be one of 'none', 'aws', 'gcp', 'azure'",
    ),
    (
        &["replicaCount=-1"],
        "at '/replicaCount'",
        "minimum: got -1, want 0",
    ),
    (&["replicaCount=two"], "at '/replicaCount'", "want integer"),
    (
        &["allowedGroups[0]=payments"],
        "at '/allowedGroups/0'",
        "'payments' does not match pattern",
    ),
    // No cloud prefix on the group id.
    (
        &["allowedGroups[0]=payments=eu-west-1:payments-*"],
        "at '/allowedGroups/0'",
        "does not match pattern",
    ),
    // Not a namespace's name.
    (
        &["allowedGroups[0]=Payments_Team=aws:eu-west-1:*"],
        "at '/allowedGroups/0'",
        "does not match pattern",
    ),
    (
        &["allowedGroups[0]=payments="],
        "at '/allowedGroups/0'",
        "does not match pattern",
    ),
    (
        &["bogus=1"],
        "at ''",
        "additional properties 'bogus' not allowed",
    ),
    (
        &["leaderElection.leaseDuration=15sec"],
        "at '/leaderElection/leaseDuration'",
        "does not match pattern",
    ),
    (
        &["leaderElection.enabled=false"],
        "at '/replicaCount'",
        "maximum: got 2, want 1",
    ),
    (
        &["allowAllGroups=true"],
        "at '/allowedGroups'",
        "maxItems: got 1, want 0",
    ),
    (
        &["cloud=gcp"],
        "at '/gcp/serviceAccount'",
        "minLength: got 0, want 1",
    ),
    (
        &["cloud=azure", "azure.clientId=me"],
        "at '/azure/clientId'",
        "does not match pattern",
    ),
    (
        &["azure.armReadsPerSecond=0"],
        "at '/azure/armReadsPerSecond'",
        "minimum: got 0, want 1",
    ),
];

/// Values that pass the schema but not the chart's checks across keys
/// (`meshmirror.validate`): the `--set`s and the message.
const CHART_CHECK_CASES: &[(&[&str], &str)] = &[
    (
        &[
            "watchNamespaces[0]=meshmirror-system",
            "allowedGroups[0]=meshmirror-system=sim:web",
        ],
        "watchNamespaces: the release's own namespace meshmirror-system may not be listed",
    ),
    (
        &["watchNamespaces[0]=team-a"],
        "allowedGroups: the rule \"payments=aws:eu-west-1:payments-*\" names namespace payments, which watchNamespaces does not list",
    ),
    (
        &[
            "watchNamespaces[0]=team-a",
            "allowedGroups=null",
            "allowAllGroups=true",
        ],
        "allowAllGroups: not with watchNamespaces",
    ),
];

/// Bad values fail `helm template` (and so `helm install`, tried on the
/// control plane below) with a message naming the key.
#[test]
fn bad_values_are_refused_by_the_schema_naming_the_key() {
    let _scratch = Scratch;
    let schema = "values don't meet the specifications of the schema";
    for (sets, at, why) in SCHEMA_CASES {
        let err = render("meshmirror", "meshmirror-system", &[], sets)
            .expect_err(&format!("{sets:?} must be refused"));
        assert!(err.contains(schema), "{sets:?}: {err}");
        assert!(
            err.contains(at) && err.contains(why),
            "{sets:?}: want {at}: {why}; got {err}"
        );
    }
}

/// What spans keys (the namespace-scoped mode's rules, as
/// deploy/check-namespaced.py checks the overlay) fails with the key named.
#[test]
fn values_that_disagree_are_refused_by_the_charts_checks() {
    let _scratch = Scratch;
    for (sets, want) in CHART_CHECK_CASES {
        let err = render("meshmirror", "meshmirror-system", &[], sets)
            .expect_err(&format!("{sets:?} must be refused"));
        assert!(err.contains(want), "{sets:?}: want {want}; got {err}");
    }
}

/// The run's shared control plane on the real backend (scripts/test.sh
/// starts it), else one of this test's own: a chart is installed with helm
/// and kubectl, which the fake server does not serve.
fn control_plane() -> RealKube {
    match Backend::of_run() {
        Backend::Real => RealKube::shared(),
        Backend::Fake => RealKube::start(),
    }
}

/// Applies Namespace objects (server-side, so applying again changes
/// nothing): the chart installs into namespaces that exist.
fn apply_namespaces(kube: &RealKube, label: &str, namespaces: &[Value]) {
    let yaml: String = namespaces
        .iter()
        .map(|ns| format!("---\n{}", serde_yaml::to_string(ns).unwrap()))
        .collect();
    let path = scratch_file(&format!("namespaces-{label}.yaml"), &yaml);
    kube.kubectl_ok(&[
        "apply",
        "--server-side",
        "--field-manager=meshmirror-helm-test",
        "-f",
        &path.to_string_lossy(),
    ]);
}

fn plain_namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
}

/// Every render (the monitoring objects off: the control plane has no
/// Prometheus Operator CRDs) applied server-side as a dry run: the real
/// server's validation and admission (Pod Security `restricted` on the
/// install's namespace, as deploy/install.yaml labels it) with no warning.
#[test]
fn every_render_applies_server_side_on_the_real_control_plane() {
    let _scratch = Scratch;
    let kube = control_plane();
    let mut namespaces: Vec<Value> = documents(&file("deploy/install.yaml"))
        .into_iter()
        .chain(kustomize("deploy/overlays/namespaced"))
        .filter(|o| o["kind"] == "Namespace")
        .collect();
    assert_eq!(
        namespaces.len(),
        2,
        "meshmirror-system and meshmirror-tenants"
    );
    namespaces.extend(["team-a", "team-b"].map(plain_namespace));
    apply_namespaces(&kube, "dry-run", &namespaces);
    for (label, namespace, values) in every_render() {
        let path = render_to_file(&format!("dry-run-{label}"), namespace, &values, &[]);
        let (stdout, stderr) = kube.kubectl_ok(&[
            "apply",
            "--server-side",
            "--dry-run=server",
            "--field-manager=meshmirror-helm-test",
            "-f",
            &path.to_string_lossy(),
        ]);
        assert!(!stderr.contains("Warning"), "{label}: {stderr}");
        let objects = documents(&file_at(&path)).len();
        let applied = stdout
            .lines()
            .filter(|l| l.ends_with("(server dry run)"))
            .count();
        assert_eq!(applied, objects, "{label}: {stdout}");
    }
}

fn file_at(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

/// `meshmirror run` as a process, as the Deployment would start it.
struct Meshmirror {
    child: Child,
    log: PathBuf,
}

impl Meshmirror {
    /// The Deployment's arguments with the metrics port on 127.0.0.1, the
    /// simulated cloud's file, and `extra`; the ServiceAccount's token
    /// (`kubeconfig`) and the pod's name and namespace in the environment.
    fn start(
        args: &[String],
        extra: &[String],
        kubeconfig: &Path,
        pod: (&str, &str),
        sim: &Path,
    ) -> Meshmirror {
        let args: Vec<String> = args
            .iter()
            .map(|a| {
                if a.starts_with("--metrics-addr=") {
                    "--metrics-addr=127.0.0.1:0".to_string()
                } else {
                    a.clone()
                }
            })
            .chain(extra.iter().cloned())
            .chain([format!("--sim-file={}", sim.display())])
            .collect();
        let log = sim.with_file_name(format!("{}.log", pod.0));
        let child = Command::new(env!("CARGO_BIN_EXE_meshmirror"))
            .args(&args)
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", pod.0)
            .env("POD_NAMESPACE", pod.1)
            .env_remove("MESHMIRROR_NAMESPACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("meshmirror starts");
        Meshmirror { child, log }
    }

    /// Panics, with its log, when the process has ended.
    fn check(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("meshmirror run ended ({status}):\n{}", self.log_tail());
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// SIGTERM, as Kubernetes stops a pod: the leader releases the Lease.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(15) {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "meshmirror run ended with {status}:\n{}",
                    self.log_tail()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "meshmirror run did not stop within 15 s of SIGTERM:\n{}",
            self.log_tail()
        );
    }
}

impl Drop for Meshmirror {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The admin kubeconfig with its user's credentials replaced by `token`.
fn token_kubeconfig(kube: &RealKube, token: &str, name: &str) -> PathBuf {
    let admin: Value = serde_yaml::from_str(&file_at(kube.kubeconfig())).unwrap();
    let mut config = admin.clone();
    for user in config["users"].as_array_mut().expect("users") {
        user["user"] = json!({"token": token});
    }
    scratch_file(name, &serde_yaml::to_string(&config).unwrap())
}

/// helm against the control plane, as its admin; (stdout, stderr).
fn helm_on(kube: &RealKube, args: &[&str]) -> Result<(String, String), String> {
    let kubeconfig = kube.kubeconfig().to_string_lossy().into_owned();
    let mut all = args.to_vec();
    all.extend(["--kubeconfig", &kubeconfig]);
    let out = helm(&all);
    let (stdout, stderr) = text(&out);
    if out.status.success() {
        Ok((stdout, stderr))
    } else {
        Err(format!("helm {}: {stdout}\n{stderr}", args.join(" ")))
    }
}

/// The installed Deployment's container arguments.
fn installed_args(kube: &RealKube, namespace: &str, name: &str) -> Vec<String> {
    let (json, _) = kube.kubectl_ok(&["get", "deployment", name, "-n", namespace, "-o", "json"]);
    args_of(&serde_json::from_str(&json).unwrap())
}

/// Waits until the API server's authorizer answers `want` for the
/// ServiceAccount in `namespace` (`*`: all of them); bindings take effect
/// shortly after they are written or deleted.
fn wait_can_i(kube: &RealKube, sa: &str, verb: &str, resource: &str, namespace: &str, want: &str) {
    let started = Instant::now();
    loop {
        let scope = if namespace == "*" {
            vec!["--all-namespaces"]
        } else {
            vec!["-n", namespace]
        };
        let out =
            kube.kubectl(&[&["auth", "can-i", verb, resource, "--as", sa][..], &scope].concat());
        let answer = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if answer == want {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{sa} may {verb} {resource} in {namespace}: {answer}, want {want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

async fn entry_count(admin: &Client, namespace: &str) -> usize {
    let api: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        namespace,
        &EntryVersion::V1.workload_entries(),
    );
    api.list(&ListParams::default()).await.unwrap().items.len()
}

/// Waits until `namespace` holds `n` WorkloadEntries and the mirror `web`
/// is Ready with `n` entries, checking the process meanwhile.
async fn wait_mirrored(admin: &Client, namespace: &str, n: usize, run: &mut Meshmirror) {
    let mirrors: Api<DynamicObject> = Api::namespaced_with(
        admin.clone(),
        namespace,
        &kube::core::ApiResource::erase::<meshmirror::crd::ScalingGroupMirror>(&()),
    );
    let started = Instant::now();
    loop {
        run.check();
        let status = mirrors.get("web").await.unwrap().data["status"].clone();
        let ready = status["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        let entries = entry_count(admin, namespace).await;
        if ready && status["entries"] == n && entries == n {
            return;
        }
        assert!(
            started.elapsed() < CONVERGE,
            "want {n} entries and Ready in {namespace}; have {entries}, status {status}\n{}",
            run.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The simulated cloud's file: deploy/examples/sim-cloud.yaml, with `extra`
/// more instances in the group `web`.
fn sim_file(extra: usize) -> String {
    let mut cloud: Value = serde_yaml::from_str(&file("deploy/examples/sim-cloud.yaml")).unwrap();
    let instances = cloud["groups"]["web"]["instances"].as_array_mut().unwrap();
    for i in 0..extra {
        instances.push(json!({"id": format!("i-helm{i}"), "privateIPv4": format!("10.0.9.{}", i + 1), "zone": "us-east-1a"}));
    }
    serde_yaml::to_string(&cloud).unwrap()
}

/// The names one install test uses on a control plane that other tests
/// share: its own release, namespace and tenant namespace.
struct Names {
    release: String,
    fullname: String,
    system: String,
    tenant: String,
    sa: String,
}

impl Names {
    fn new() -> Names {
        let id = format!("{:08x}", rand::random::<u32>());
        let (release, system) = (format!("mm{id}"), format!("mmhelm-{id}"));
        Names {
            fullname: format!("{release}-meshmirror"),
            sa: format!("system:serviceaccount:{system}:{release}-meshmirror"),
            tenant: format!("{system}-apps"),
            release,
            system,
        }
    }
}

/// The Deployment's `--allowed-groups`: the tenant may mirror the
/// simulated cloud's group `web`.
fn rule(n: &Names) -> String {
    format!("allowedGroups[0]={}=sim:web", n.tenant)
}

/// A malformed rule is refused at install, naming the key, and nothing is
/// installed; then the cluster-wide install (revision 1).
fn install_cluster_wide(kube: &RealKube, n: &Names) {
    let install = ["install", &n.release, CHART, "-n", &n.system, "--set"];
    let err = helm_on(kube, &[&install[..], &["allowedGroups[0]=web"]].concat())
        .expect_err("a malformed rule is refused");
    assert!(err.contains("at '/allowedGroups/0'"), "{err}");
    assert!(helm_on(kube, &["status", &n.release, "-n", &n.system]).is_err());

    let (stdout, stderr) =
        helm_on(kube, &[&install[..], &[&rule(n)]].concat()).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        stdout.contains("STATUS: deployed") && stdout.contains("REVISION: 1"),
        "{stdout}"
    );
    assert!(!stderr.contains("Warning"), "{stderr}");
    kube.kubectl_ok(&["get", "clusterrole,clusterrolebinding", &n.fullname]);
    wait_can_i(
        kube,
        &n.sa,
        "list",
        "scalinggroupmirrors.meshmirror.io",
        "*",
        "yes",
    );
}

/// `helm upgrade` to the namespace-scoped mode (revision 2): Helm deletes
/// the ClusterRole and its binding, and makes a Role in the tenant's
/// namespace; a cluster-wide list is no longer allowed.
fn upgrade_to_namespace_scoped(kube: &RealKube, n: &Names) {
    let watch = format!("watchNamespaces[0]={}", n.tenant);
    let upgrade = ["upgrade", &n.release, CHART, "-n", &n.system];
    let (stdout, _) = helm_on(
        kube,
        &[&upgrade[..], &["--set", &rule(n), "--set", &watch]].concat(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        stdout.contains("STATUS: deployed") && stdout.contains("REVISION: 2"),
        "{stdout}"
    );
    for kind in ["clusterrole", "clusterrolebinding"] {
        let gone = kube.kubectl(&["get", kind, &n.fullname]);
        assert!(
            String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
            "{kind}: {gone:?}"
        );
    }
    kube.kubectl_ok(&["get", "role,rolebinding", &n.fullname, "-n", &n.tenant]);
    wait_can_i(
        kube,
        &n.sa,
        "list",
        "scalinggroupmirrors.meshmirror.io",
        "*",
        "no",
    );
}

/// `meshmirror run` with the installed Deployment's arguments (and `extra`)
/// as the chart's ServiceAccount until the example mirror is Ready with
/// `entries` entries; it leads through the Lease the chart's Role allows,
/// then stops on SIGTERM.
async fn run_until_mirrored(
    kube: &RealKube,
    n: &Names,
    extra: &[String],
    pod: &str,
    entries: usize,
) {
    let (token, _) = kube.kubectl_ok(&[
        "create",
        "token",
        &n.fullname,
        "-n",
        &n.system,
        "--duration=1h",
    ]);
    let kubeconfig = token_kubeconfig(kube, token.trim(), &format!("{pod}.kubeconfig"));
    wait_can_i(
        kube,
        &n.sa,
        "create",
        "workloadentries.networking.istio.io",
        &n.tenant,
        "yes",
    );
    let args = installed_args(kube, &n.system, &n.fullname);
    assert!(
        args.contains(&format!("--allowed-groups={}=sim:web", n.tenant)),
        "{args:?}"
    );
    let sim = scratch_file(&format!("sim-{pod}.yaml"), &sim_file(entries - 2));
    let mut run = Meshmirror::start(&args, extra, &kubeconfig, (pod, &n.system), &sim);
    wait_mirrored(&kube.admin().await, &n.tenant, entries, &mut run).await;
    let (holder, _) = kube.kubectl_ok(&[
        "get",
        "lease",
        "meshmirror",
        "-n",
        &n.system,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(holder, pod);
    run.stop();
}

/// `helm install` (cluster-wide), then `helm upgrade` to the
/// namespace-scoped mode, on the real control plane. After each,
/// `meshmirror run` with the installed Deployment's arguments and a
/// TokenRequest token of the chart's ServiceAccount reconciles the example
/// mirror (deploy/examples/mirror-sim.yaml on deploy/examples/sim-cloud.yaml,
/// one more instance the second time) under the chart's RBAC only.
#[tokio::test]
async fn helm_install_and_upgrade_then_meshmirror_runs_under_the_charts_rbac() {
    let _scratch = Scratch;
    let kube = control_plane();
    let n = Names::new();
    let restricted = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": n.system,
        "labels": {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}}});
    apply_namespaces(&kube, &n.system, &[restricted, plain_namespace(&n.tenant)]);
    let mirror = file("deploy/examples/mirror-sim.yaml")
        .replace("namespace: default", &format!("namespace: {}", n.tenant));
    let mirror = scratch_file("mirror-sim.yaml", &mirror);
    kube.kubectl_ok(&["apply", "-f", &mirror.to_string_lossy()]);

    install_cluster_wide(&kube, &n);
    // `--namespace`, the test's own flag, keeps the cluster-wide process out
    // of the other tests' namespaces on a shared control plane.
    run_until_mirrored(
        &kube,
        &n,
        &[format!("--namespace={}", n.tenant)],
        "helm-0",
        2,
    )
    .await;

    upgrade_to_namespace_scoped(&kube, &n);
    let args = installed_args(&kube, &n.system, &n.fullname);
    assert!(
        args.contains(&format!("--namespace={}", n.tenant)),
        "{args:?}"
    );
    run_until_mirrored(&kube, &n, &[], "helm-1", 3).await;

    helm_on(&kube, &["uninstall", &n.release, "-n", &n.system]).unwrap_or_else(|e| panic!("{e}"));
    kube.kubectl_ok(&["delete", "namespace", &n.system, &n.tenant, "--wait=false"]);
}
