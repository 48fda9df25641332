//! The checked-in files under deploy/ and docs/ against the code: every
//! ScalingGroupMirror example is accepted by an API server serving the
//! checked-in CRD (schema and CEL rules) and by the service's own validation;
//! every metric the alerts, the dashboard and the operations guide name is one
//! the binary exports. deploy/check.sh runs this too.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DynamicObject, ObjectMeta, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use meshmirror::crd::ScalingGroupMirror;
use meshmirror::metrics::{
    EntryOpLabels, EventLabels, LifecycleLabels, Metrics, PassLabels, ProviderErrorLabels,
    ProviderLabels, ProviderOpLabels, mirror_labels,
};
use meshmirror_testkit::{ApiServer, TestKube};
use serde::Deserialize;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo and nextest set CARGO_MANIFEST_DIR"),
    )
}

/// Every file under `dir` (recursively) whose name ends with one of `exts`.
fn files(dir: &Path, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if exts.iter().any(|e| path.to_string_lossy().ends_with(e)) {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// The YAML documents of a file, as JSON values (empty documents skipped).
fn documents(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: not valid YAML: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn mirror_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("meshmirror.io", "v1alpha1", "ScalingGroupMirror"),
        "scalinggroupmirrors",
    )
}

/// On the real backend, tests/kube/up.sh installed deploy/crd.yaml.
async fn server_with_checked_in_crd() -> TestKube {
    TestKube::start(async || {
        ApiServer::builder()
            .crd_file(root().join("deploy/crd.yaml"))
            .start()
            .await
            .expect("the API server accepts deploy/crd.yaml")
    })
    .await
}

/// Creates the object in the server (dry run); the error message when refused.
async fn create(server: &TestKube, obj: &Value) -> Result<(), String> {
    let client = server.client();
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(ns.clone()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    // Already there is fine.
    let _ = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await;
    let object: DynamicObject = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    // A dry run: examples of different clouds may share a name.
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    Api::<DynamicObject>::namespaced_with(client, &ns, &mirror_resource())
        .create(&dry_run, &object)
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[tokio::test]
async fn every_mirror_example_is_valid_against_the_crd() {
    let server = server_with_checked_in_crd().await;
    let mut checked = Vec::new();
    let mut problems = Vec::new();
    for path in files(&root().join("deploy/examples"), &[".yaml", ".yml"]) {
        for doc in documents(&path) {
            if doc["kind"] != "ScalingGroupMirror" {
                continue;
            }
            let name = format!(
                "{} ({})",
                path.strip_prefix(root()).unwrap().display(),
                doc["metadata"]["name"].as_str().unwrap_or("?")
            );
            if let Err(e) = create(&server, &doc).await {
                problems.push(format!("{name}: the API server refused it: {e}"));
                continue;
            }
            match serde_json::from_value::<ScalingGroupMirror>(doc.clone()) {
                Err(e) => problems.push(format!("{name}: not a ScalingGroupMirror: {e}")),
                Ok(mirror) => {
                    let namespace = mirror.metadata.namespace.as_deref().unwrap_or("default");
                    let checked = meshmirror::core::config::validate(&mirror.spec)
                        .and_then(|_| meshmirror::core::mesh::check_spec(&mirror.spec, namespace));
                    if let Err(e) = checked {
                        problems.push(format!("{name}: meshmirror refuses it: {e}"));
                    }
                }
            }
            checked.push(name);
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
    // The sim examples at least; a glob that finds nothing must not pass.
    assert!(
        checked.iter().filter(|n| n.contains("mirror-sim")).count() >= 2,
        "found only {checked:?}"
    );
}

/// kubectl sends protobuf bodies for built-in kinds: on either backend a
/// namespace it creates is there (through the proxy on the real one).
/// Multi-threaded: kubectl blocks this thread while the fake answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_creates_a_namespace_on_the_runs_backend() {
    meshmirror_testkit::tools::require(meshmirror_testkit::tools::Tool::Kubectl);
    let server = server_with_checked_in_crd().await;
    let dir = std::env::temp_dir().join(format!("meshmirror-deploy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let kubectl = |args: &[&str]| {
        let out = std::process::Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .arg("--cache-dir")
            .arg(dir.join("cache"))
            .output()
            .expect("kubectl runs");
        assert!(
            out.status.success(),
            "kubectl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    kubectl(&["create", "namespace", "team-x"]);
    assert_eq!(
        kubectl(&["get", "namespace", "team-x", "-o", "name"]).trim(),
        "namespace/team-x"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn the_crd_check_refuses_a_bad_mirror() {
    let server = server_with_checked_in_crd().await;
    let path = root().join("deploy/examples/mirror-sim.yaml");
    let mut doc = documents(&path).remove(0);
    doc["spec"]["provider"]["aws"] =
        serde_json::json!({"region": "us-east-1", "autoScalingGroupName": "web"});
    let err = create(&server, &doc)
        .await
        .expect_err("two providers are refused");
    assert!(err.contains("exactly one"), "{err}");
    let mut doc = documents(&path).remove(0);
    doc["spec"]["workloads"][0]["name"] = "Not_A_Label".into();
    create(&server, &doc)
        .await
        .expect_err("a workload name that is no DNS label is refused");
}

/// The exposition with one series in every family: a family without series
/// is not printed at all. The pattern names every field, so a metric added to
/// `Metrics` fails to compile here until it is added.
fn every_family_encoded() -> String {
    let m = Metrics::new();
    let Metrics {
        registry: _,
        passes,
        pass_duration,
        entry_writes,
        members,
        entries,
        skipped,
        deferred_deletes,
        last_success,
        degraded,
        sync_interval,
        provider_requests,
        provider_errors,
        provider_throttles,
        provider_latency,
        cloud_api_calls,
        cloud_ratelimit_remaining,
        events,
        event_age,
        lifecycle_actions,
        leader,
    } = &m;
    let mirror = mirror_labels("ns", "m");
    let op = ProviderOpLabels {
        provider: "sim".into(),
        operation: "members".into(),
    };
    passes
        .get_or_create(&PassLabels {
            namespace: "ns".into(),
            mirror: "m".into(),
            result: "success".into(),
        })
        .inc();
    pass_duration.get_or_create(&mirror).observe(0.1);
    entry_writes
        .get_or_create(&EntryOpLabels {
            namespace: "ns".into(),
            mirror: "m".into(),
            op: "create".into(),
        })
        .inc();
    sync_interval.get_or_create(&mirror).set(30.0);
    for gauge in [members, entries, skipped, deferred_deletes, degraded] {
        gauge.get_or_create(&mirror).set(1);
    }
    last_success.get_or_create(&mirror).set(1.0);
    provider_requests.get_or_create(&op).inc();
    provider_errors
        .get_or_create(&ProviderErrorLabels {
            provider: "sim".into(),
            operation: "members".into(),
            reason: "Throttled".into(),
        })
        .inc();
    provider_throttles.get_or_create(&op).inc();
    provider_latency.get_or_create(&op).observe(0.1);
    cloud_api_calls
        .get_or_create(&meshmirror::metrics::ApiCallLabels {
            provider: "azure".into(),
            operation: "list".into(),
            status: "200".into(),
        })
        .inc();
    cloud_ratelimit_remaining
        .get_or_create(&meshmirror::metrics::RateLimitLabels {
            provider: "azure".into(),
            header: "x-ms-ratelimit-remaining-subscription-reads".into(),
        })
        .set(100);
    events
        .get_or_create(&EventLabels {
            provider: "sim".into(),
            outcome: "received".into(),
        })
        .inc();
    event_age
        .get_or_create(&ProviderLabels {
            provider: "sim".into(),
        })
        .observe(1.0);
    lifecycle_actions
        .get_or_create(&LifecycleLabels {
            kind: "terminate".into(),
            result: "continue".into(),
        })
        .inc();
    leader.set(1);
    m.encode()
}

/// The families of the exposition: (name, type).
fn families() -> Vec<(String, String)> {
    every_family_encoded()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

/// Sample names the binary can export: each family's name, plus `_total` for
/// counters and `_bucket`, `_sum`, `_count` for histograms.
fn exported_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (name, kind) in families() {
        let suffixes: &[&str] = match kind.as_str() {
            "counter" => &["_total"],
            "histogram" => &["_bucket", "_sum", "_count"],
            _ => &[],
        };
        for s in suffixes {
            names.insert(format!("{name}{s}"));
        }
        names.insert(name);
    }
    names
}

/// Every `meshmirror_...` word in the text.
fn named_metrics(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("meshmirror_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        // Not a metric when part of a longer word (e.g. `x_meshmirror_y`).
        let before = rest[..i].chars().last();
        // The bare prefix (as in "every name starts with `meshmirror_`") names none.
        if end > "meshmirror_".len()
            && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            out.insert(tail[..end].trim_end_matches('_').to_string());
        }
        rest = &tail[end.max(1)..];
    }
    out
}

#[test]
fn alerts_dashboard_and_docs_name_only_exported_metrics() {
    let exported = exported_names();
    assert!(exported.contains("meshmirror_passes_total"), "{exported:?}");
    let mut sources: Vec<PathBuf> =
        files(&root().join("deploy/observability"), &[".yaml", ".json"]);
    sources.push(root().join("docs/operations.md"));
    let mut problems = Vec::new();
    let mut seen = 0;
    for path in &sources {
        let text =
            std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        for name in named_metrics(&text) {
            seen += 1;
            if !exported.contains(&name) {
                problems.push(format!("{}: {name}", path.display()));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "not exported by the binary: {problems:#?}"
    );
    assert!(seen >= 20, "only {seen} metric names found in {sources:?}");
}

#[test]
fn the_operations_guide_lists_every_metric() {
    let doc = std::fs::read_to_string(root().join("docs/operations.md")).unwrap();
    let named = named_metrics(&doc);
    let families = families();
    assert!(families.len() >= 10, "{families:?}");
    let missing: Vec<&String> = families
        .iter()
        .map(|(name, _)| name)
        .filter(|f| {
            !named.iter().any(|n| {
                n == *f
                    || n.strip_prefix(f.as_str())
                        .is_some_and(|s| ["_total", "_bucket", "_sum", "_count"].contains(&s))
            })
        })
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md does not list {missing:?}"
    );
}

#[test]
fn every_alert_has_a_severity_and_a_summary() {
    let path = root().join("deploy/observability/prometheusrule.yaml");
    let rule = documents(&path).remove(0);
    let groups = rule["spec"]["groups"].as_array().expect("spec.groups");
    let mut alerts = Vec::new();
    for rule in groups.iter().flat_map(|g| g["rules"].as_array().unwrap()) {
        let name = rule["alert"].as_str().expect("every rule is an alert");
        assert!(
            rule["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
            "{name}: expr"
        );
        assert!(
            ["critical", "warning", "info"]
                .contains(&rule["labels"]["severity"].as_str().unwrap_or("")),
            "{name}: severity"
        );
        assert!(
            rule["annotations"]["summary"].is_string(),
            "{name}: summary"
        );
        alerts.push(name.to_string());
    }
    for wanted in [
        "MeshmirrorMirrorNotSynced",
        "MeshmirrorMirrorDegraded",
        "MeshmirrorProviderThrottled",
        "MeshmirrorEventQueueLag",
    ] {
        assert!(
            alerts.iter().any(|a| a == wanted),
            "{wanted} missing: {alerts:?}"
        );
    }
}

#[test]
fn metric_names_are_found_in_text() {
    let names = named_metrics(
        "a `meshmirror_passes_total{x=\"y\"}` and meshmirror_leader; not x_meshmirror_y nor `meshmirror_`",
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        vec!["meshmirror_leader", "meshmirror_passes_total"]
    );
}
