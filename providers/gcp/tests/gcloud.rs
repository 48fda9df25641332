//! The GCE mock held against a client no one here wrote: the machine's
//! `gcloud` (Cloud SDK 528), pointed at the mock by its endpoint override.

use std::path::PathBuf;
use std::process::Command;

use meshmirror_testkit::gce::{GceMock, Template};
use meshmirror_testkit::tools::{self, Tool};

/// Runs `gcloud ARGS` against the mock; None when gcloud is not installed.
fn gcloud(mock: &GceMock, config: &PathBuf, args: &[&str]) -> Option<(bool, String, String)> {
    let out = Command::new("gcloud")
        .args(args)
        .env("CLOUDSDK_API_ENDPOINT_OVERRIDES_COMPUTE", mock.base_url())
        .env("CLOUDSDK_AUTH_ACCESS_TOKEN", "fake")
        .env("CLOUDSDK_CORE_PROJECT", "proj")
        .env("CLOUDSDK_CONFIG", config)
        .env("CLOUDSDK_CORE_DISABLE_PROMPTS", "1")
        .env("CLOUDSDK_CORE_DISABLE_USAGE_REPORTING", "1")
        .env("CLOUDSDK_COMPONENT_MANAGER_DISABLE_UPDATE_CHECK", "1")
        .env("CLOUDSDK_CORE_CHECK_GCE_METADATA", "0")
        .env("NO_PROXY", "127.0.0.1")
        .output()
        .ok()?;
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gcloud_reads_groups_and_instances_from_the_mock() {
    tools::require(Tool::Gcloud);
    let mock = GceMock::start().await.unwrap();
    let key = mock.add_zonal_group(
        "proj",
        "us-central1-a",
        "web",
        Template {
            public_ip: true,
            labels: [("team".to_string(), "payments".to_string())].into(),
            health: Some("HEALTHY".into()),
            ..Template::default()
        },
    );
    let names = mock.resize(&key, 3);
    mock.delete_instances(&[&names[2]]);
    let regional = mock.add_regional_group(
        "proj",
        "europe-west1",
        &["europe-west1-b", "europe-west1-c"],
        "api",
        Template::default(),
    );
    let api_names = mock.resize(&regional, 2);
    mock.add_zone("proj", "us-east1-b");
    let config = std::env::temp_dir().join(format!("meshmirror-gcloud-{}", std::process::id()));
    std::fs::create_dir_all(&config).unwrap();

    let run = |args: Vec<&'static str>| {
        let mock = &mock;
        let config = config.clone();
        tokio::task::block_in_place(move || gcloud(mock, &config, &args).unwrap())
    };

    // The group's members, as gcloud tabulates them.
    let (ok, out, err) = run(vec![
        "compute",
        "instance-groups",
        "managed",
        "list-instances",
        "web",
        "--zone",
        "us-central1-a",
    ]);
    assert!(
        ok,
        "list-instances failed: {err}\nrequests: {:#?}",
        mock.requests()
    );
    eprintln!("{out}");
    let header = out.lines().next().unwrap_or_default();
    for column in ["NAME", "ZONE", "STATUS", "HEALTH_STATE", "ACTION"] {
        assert!(header.contains(column), "{header}");
    }
    for (i, name) in names.iter().enumerate() {
        let line = out
            .lines()
            .find(|l| l.starts_with(name.as_str()))
            .unwrap_or_else(|| panic!("{name} missing from:\n{out}"));
        assert!(line.contains("us-central1-a"), "{line}");
        assert!(line.contains("RUNNING"), "{line}");
        assert!(line.contains("HEALTHY"), "{line}");
        let action = if i == 2 { "DELETING" } else { "NONE" };
        assert!(line.contains(action), "{line}");
    }

    // A regional group's members, across its zones.
    let (ok, out, err) = run(vec![
        "compute",
        "instance-groups",
        "managed",
        "list-instances",
        "api",
        "--region",
        "europe-west1",
    ]);
    assert!(
        ok,
        "regional list-instances failed: {err}\nrequests: {:#?}",
        mock.requests()
    );
    eprintln!("{out}");
    for name in &api_names {
        assert!(out.contains(name.as_str()), "{name} missing from:\n{out}");
    }
    assert!(
        out.contains("europe-west1-b") && out.contains("europe-west1-c"),
        "{out}"
    );

    // One instance, described.
    let vm = mock.vm(&names[0]).unwrap();
    let name: &'static str = Box::leak(names[0].clone().into_boxed_str());
    let (ok, out, err) = run(vec![
        "compute",
        "instances",
        "describe",
        name,
        "--zone",
        "us-central1-a",
    ]);
    assert!(
        ok,
        "describe failed: {err}\nrequests: {:#?}",
        mock.requests()
    );
    eprintln!("{out}");
    assert!(out.contains(&format!("name: {name}")), "{out}");
    assert!(
        out.contains(&format!("networkIP: {}", vm.network_ip)),
        "{out}"
    );
    assert!(
        out.contains(&format!("natIP: {}", vm.nat_ip.unwrap())),
        "{out}"
    );
    assert!(out.contains("status: RUNNING"), "{out}");
    assert!(out.contains("team: payments"), "{out}");
    assert!(out.contains(&format!("id: '{}'", vm.id)), "{out}");

    // Every instance of the project (an aggregated listing), as a table.
    let (ok, out, err) = run(vec!["compute", "instances", "list"]);
    assert!(
        ok,
        "instances list failed: {err}\nrequests: {:#?}",
        mock.requests()
    );
    eprintln!("{out}");
    let header = out.lines().next().unwrap_or_default();
    for column in [
        "NAME",
        "ZONE",
        "MACHINE_TYPE",
        "INTERNAL_IP",
        "EXTERNAL_IP",
        "STATUS",
    ] {
        assert!(header.contains(column), "{header}");
    }
    for name in names.iter().chain(&api_names) {
        let vm = mock.vm(name).unwrap();
        let line = out
            .lines()
            .find(|l| l.starts_with(name.as_str()))
            .unwrap_or_else(|| panic!("{name} missing from:\n{out}"));
        assert!(line.contains(&vm.zone), "{line}");
        assert!(line.contains("e2-medium"), "{line}");
        assert!(line.contains(&vm.network_ip.to_string()), "{line}");
        if let Some(nat) = vm.nat_ip {
            assert!(line.contains(&nat.to_string()), "{line}");
        }
    }
    assert_eq!(
        out.lines().count(),
        1 + names.len() + api_names.len(),
        "{out}"
    );
    let ops: Vec<String> = mock.requests().into_iter().map(|r| r.operation).collect();
    assert!(
        ops.iter().any(|o| o == "instances.aggregatedList"),
        "{ops:?}"
    );
    let _ = std::fs::remove_dir_all(&config);
}
