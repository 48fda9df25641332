//! Values users depend on across releases, pinned as literals: entry names,
//! the applied-content hash, label and annotation keys, the field manager and
//! condition reasons. A change that fails here renames, rewrites or orphans
//! every entry of every user on upgrade, or breaks their selectors and alerts.
//!
//! The expected names and hashes were computed outside this code base, by a
//! separate implementation of the documented algorithms (Python's hashlib and
//! json, in the commit that added this file):
//!   name = sanitize("{mirror}-{workload}-{last path segment of id}") cut to
//!          242 characters + "-" + first 10 hex of SHA-256 over the three
//!          parts, each prefixed by its length as a big-endian u64;
//!   hash = first 16 hex of SHA-256 over the compact JSON
//!          [labels, annotations, spec, healthy] with sorted keys, UTF-8.

mod common;

use std::collections::BTreeMap;

use common::*;
use meshmirror::core::desired::content_hash;
use meshmirror::core::names::entry_name;
use meshmirror::workloadentry::{FIELD_MANAGER, WorkloadEntrySpec, keys};
use meshmirror_provider::{Health, ProviderError};

#[test]
fn entry_names_are_pinned() {
    let azure = "/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/vmss/virtualMachines/3";
    let long = "x".repeat(300);
    let long_name = format!("m-w-{}-453945c366", "x".repeat(238));
    let table: [(&str, &str, &str, &str); 9] = [
        ("web", "api", "i-0abc123", "web-api-i-0abc123-6b8673b6dd"),
        (
            "payments",
            "exporter",
            "i-0abc123",
            "payments-exporter-i-0abc123-d8cd0abf78",
        ),
        ("web", "api", azure, "web-api-3-279cb44be0"),
        (
            "web",
            "api",
            "projects/p/zones/us-central1-a/instances/web-x1z9",
            "web-api-web-x1z9-df308c22b4",
        ),
        ("Web", "API", "I_0AB", "web-api-i-0ab-e0a7a247f2"),
        // Same readable part, different triples: the hash tells them apart.
        ("a-b", "c", "d", "a-b-c-d-7e4c46a60c"),
        ("a", "b-c", "d", "a-b-c-d-e069957e6e"),
        ("m", "w", "---", "m-w-52734cf6f7"),
        ("m", "w", &long, &long_name),
    ];
    for (mirror, workload, id, want) in table {
        assert_eq!(
            entry_name(mirror, workload, id),
            want,
            "({mirror}, {workload}, {id})"
        );
    }
    assert_eq!(long_name.len(), 253);
}

#[test]
fn the_applied_content_hash_is_pinned() {
    let labels = BTreeMap::from([("app".to_string(), "api".to_string())]);
    let annotations = BTreeMap::from([(keys::INSTANCE_ID.to_string(), "i-ü".to_string())]);
    let full = WorkloadEntrySpec {
        address: "10.0.0.1".into(),
        ports: BTreeMap::from([("http".to_string(), 8080)]),
        labels: labels.clone(),
        network: Some("n1".into()),
        locality: Some("r/z".into()),
        weight: Some(3),
        service_account: Some("sa".into()),
    };
    let bare = WorkloadEntrySpec {
        address: "10.0.1.1".into(),
        ..WorkloadEntrySpec::default()
    };
    let none = BTreeMap::new();
    let table = [
        (
            &labels,
            &annotations,
            &WorkloadEntrySpec::default(),
            None,
            "6ae1dacb33c20ba2",
        ),
        (&labels, &annotations, &full, Some(true), "0c5b50fbefef6573"),
        (&none, &none, &bare, Some(false), "ba9b560d15dcfaa2"),
    ];
    for (labels, annotations, spec, healthy, want) in table {
        assert_eq!(
            content_hash(labels, annotations, spec, healthy),
            want,
            "{spec:?}"
        );
    }
}

#[test]
fn label_and_annotation_keys_and_the_field_manager_are_pinned() {
    let table = [
        (keys::MANAGED_BY, "app.kubernetes.io/managed-by"),
        (keys::MANAGER, "meshmirror"),
        (keys::MIRROR, "meshmirror.io/mirror"),
        (keys::WORKLOAD, "meshmirror.io/workload"),
        (keys::PROVIDER, "meshmirror.io/provider"),
        (keys::WORKLOAD_NAME, "service.istio.io/workload-name"),
        (keys::INSTANCE_ID, "meshmirror.io/instance-id"),
        (keys::GROUP, "meshmirror.io/group"),
        (keys::APPLIED_HASH, "meshmirror.io/applied-hash"),
        (keys::HEALTH_CHECKS, "proxy.istio.io/health-checks-enabled"),
        (
            keys::AUTO_REGISTRATION_GROUP,
            "istio.io/autoRegistrationGroup",
        ),
        (FIELD_MANAGER, "meshmirror"),
    ];
    for (got, want) in table {
        assert_eq!(got, want);
    }
}

#[test]
fn provider_condition_reasons_are_pinned() {
    let table = [
        (ProviderError::GroupNotFound("g".into()), "GroupNotFound"),
        (ProviderError::Throttled { retry_after: None }, "Throttled"),
        (
            ProviderError::NotConfigured("aws".into()),
            "ProviderNotConfigured",
        ),
        (ProviderError::Transient("x".into()), "ProviderError"),
        (ProviderError::Permanent("x".into()), "ProviderError"),
    ];
    for (error, want) in table {
        assert_eq!(error.reason(), want, "{error:?}");
    }
}

/// Reasons that alerts, dashboards and runbooks match on, as the controller
/// writes them: the Ready and Degraded conditions of a synced mirror, the
/// Event of a pass that wrote, and the entries' Healthy condition in Cloud
/// health mode.
#[tokio::test]
async fn condition_and_event_reasons_written_by_the_controller_are_pinned() {
    use kube::api::{Api, ListParams};

    let h = Harness::start(sim_with(2)).await;
    h.create_mirror(&mirror_yaml(
        "default",
        "web",
        "  health: Cloud\n  workloads: [{name: app}]\n",
    ))
    .await;
    let reason = |o: &kube::api::DynamicObject| {
        o.data["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Healthy"))
            .and_then(|c| c["reason"].as_str())
            .map(str::to_string)
    };
    h.wait_entries("default", "CloudHealthy", |e| {
        e.len() == 2
            && e.iter()
                .all(|o| reason(o).as_deref() == Some("CloudHealthy"))
    })
    .await;
    let status = h.wait_status("default", "web", "Ready", is_ready).await;
    let pinned = |type_: &str| {
        condition(&status, type_)
            .map(|c| (c.status.clone(), c.reason.clone()))
            .unwrap()
    };
    assert_eq!(pinned("Ready"), ("True".into(), "Synced".into()));
    assert_eq!(pinned("Degraded"), ("False".into(), "AsExpected".into()));
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(h.client.clone(), "default");
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.iter().any(|r| r == "EntriesSynced"), "{reasons:?}");

    h.sim.set_health("web", "i-02", Health::Unhealthy).unwrap();
    h.wait_entries("default", "CloudUnhealthy", |e| {
        e.iter().any(|o| {
            annotation(o, keys::INSTANCE_ID) == "i-02"
                && reason(o).as_deref() == Some("CloudUnhealthy")
        })
    })
    .await;
}
