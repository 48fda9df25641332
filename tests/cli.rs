//! The command line as a person meets it: the binary, its errors, `crd`,
//! `render`, and the documented file formats.

use std::process::Command;

fn meshmirror() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshmirror"))
}

fn temp_file(name: &str, body: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("meshmirror-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

#[test]
fn the_checked_in_crd_matches_the_types() {
    let checked_in = include_str!("../deploy/crd.yaml");
    assert!(
        checked_in == meshmirror::app::crd_yaml(),
        "deploy/crd.yaml drifted from src/crd.rs: run `cargo run -- crd > deploy/crd.yaml`"
    );
    let out = meshmirror().arg("crd").output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8(out.stdout).unwrap(), checked_in);
}

#[test]
fn bad_input_gets_a_one_line_error_and_a_non_zero_exit() {
    let invalid = temp_file(
        "invalid.yaml",
        "apiVersion: meshmirror.io/v1alpha1\nkind: ScalingGroupMirror\nmetadata: {name: x}\nspec:\n  provider: {sim: {group: web}}\n  workloads: [{labels: {a: b}}]\n",
    );
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--no-such-flag"],
            "unexpected argument '--no-such-flag'",
        ),
        (
            vec!["render", "-f", "/does/not/exist.yaml"],
            "/does/not/exist.yaml: No such file",
        ),
        (
            vec!["render", "-f", invalid.to_str().unwrap()],
            "not a valid ScalingGroupMirror: spec.workloads[0]: missing field `name`",
        ),
    ];
    for (args, want) in cases {
        let out = meshmirror().args(&args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} should fail");
        let first = stderr.lines().next().unwrap_or_default();
        assert!(first.starts_with("error: "), "{args:?}: {stderr}");
        assert!(first.contains(want), "{args:?}: {first}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

#[test]
fn render_prints_the_entries_without_a_cluster() {
    let sim = temp_file(
        "sim.yaml",
        "groups:\n  web:\n    region: eu-west-1\n    instances:\n      - {id: i-1, privateIPv4: 10.0.0.1, zone: eu-west-1a, tags: {team: pay}}\n      - {id: i-2, privateIPv4: 10.0.0.2, zone: eu-west-1b, state: Terminating}\n",
    );
    let mirror = temp_file(
        "mirror.yaml",
        "apiVersion: meshmirror.io/v1alpha1\nkind: ScalingGroupMirror\nmetadata: {name: web, namespace: shop}\nspec:\n  provider: {sim: {group: web}}\n  copyTags: [team]\n  workloads: [{name: api, ports: {http: 80}}, {name: admin, ports: {http: 81}}]\n",
    );
    let out = meshmirror()
        .args([
            "render",
            "-f",
            mirror.to_str().unwrap(),
            "--sim-file",
            sim.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<serde_json::Value> = stdout
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "one running VM x two workloads:\n{stdout}");
    for doc in &docs {
        assert_eq!(doc["kind"], "WorkloadEntry");
        assert_eq!(doc["metadata"]["namespace"], "shop");
        assert_eq!(doc["spec"]["address"], "10.0.0.1");
        assert_eq!(doc["spec"]["locality"], "eu-west-1/eu-west-1a");
        assert_eq!(doc["metadata"]["labels"]["team"], "pay");
        assert!(doc["metadata"].get("ownerReferences").is_none());
    }
}

#[test]
fn the_readme_sim_file_example_is_the_contract() {
    let readme = include_str!("../README.md");
    let start = readme
        .find("```yaml\ngroups:")
        .expect("README shows the sim file format");
    let body = &readme[start + "```yaml\n".len()..];
    let body = &body[..body.find("```").unwrap()];
    let sim = meshmirror_sim::SimCloud::from_yaml(body).expect("README example parses");
    let instances = sim.instances("web").unwrap();
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].id, "i-0a1");
    assert_eq!(
        instances[0].public_ipv4,
        Some("203.0.113.5".parse().unwrap())
    );
}

#[test]
fn render_mesh_networks_offline_gathers_the_files_networks() {
    let a = temp_file(
        "net-a.yaml",
        "apiVersion: meshmirror.io/v1alpha1\nkind: ScalingGroupMirror\nmetadata: {name: web, namespace: shop}\nspec:\n  provider: {sim: {group: web}}\n  network: vm-static\n  workloads: [{name: api}]\n",
    );
    let b = temp_file(
        "net-b.yaml",
        "apiVersion: meshmirror.io/v1alpha1\nkind: ScalingGroupMirror\nmetadata: {name: batch, namespace: jobs}\nspec:\n  provider: {sim: {group: batch}}\n  networkByCidr: [{cidr: 10.1.0.0/16, network: vm-net}, {cidr: 10.9.0.0/16, network: dc}]\n  workloads: [{name: a}]\n",
    );
    let out = meshmirror()
        .args(["render", "mesh-networks", "--offline", "-f"])
        .arg(&a)
        .arg("-f")
        .arg(&b)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "networks:\n  dc:\n    endpoints:\n    - fromCidr: 10.9.0.0/16\n  vm-net:\n    endpoints:\n    - fromCidr: 10.1.0.0/16\n  vm-static:\n    endpoints: []\n"
    );
    let out = meshmirror()
        .args(["render", "mesh-networks", "--offline"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "--offline needs mirror files");
}
