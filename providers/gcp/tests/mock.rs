//! The provider against the test kit's GCE mock, through the official client.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use meshmirror_gcp::{Auth, GcpConfig, GcpProvider};
use meshmirror_provider::{GcpLocation, GroupRef, Health, InstanceState, Provider, ProviderError};
use meshmirror_testkit::gce::{Fault, GceMock, MigKey, Scope, Template};

fn provider(mock: &GceMock) -> GcpProvider {
    GcpProvider::new(GcpConfig {
        endpoint: Some(mock.endpoint()),
        auth: Auth::Anonymous,
        ..GcpConfig::default()
    })
}

fn group(key: &MigKey) -> GroupRef {
    GroupRef::Gcp {
        project: key.project.clone(),
        location: match &key.scope {
            Scope::Zone(z) => GcpLocation::Zone(z.clone()),
            Scope::Region(r) => GcpLocation::Region(r.clone()),
        },
        manager: key.name.clone(),
    }
}

fn calls(mock: &GceMock) -> BTreeMap<String, u64> {
    mock.counts()
}

#[tokio::test]
async fn zonal_members_carry_addresses_zone_labels_and_health() {
    let mock = GceMock::start().await.unwrap();
    let key = mock.add_zonal_group(
        "proj",
        "us-central1-a",
        "web",
        Template {
            labels: BTreeMap::from([("team".into(), "payments".into())]),
            public_ip: true,
            ipv6: true,
            health: Some("HEALTHY".into()),
            ..Template::default()
        },
    );
    let names = mock.resize(&key, 3);
    // A VM of the zone that no group manages, with another prefix.
    mock.add_vm("proj", "us-central1-a", "bastion", &Template::default());
    let p = provider(&mock);

    let mut members = p.members(&group(&key)).await.unwrap();
    members.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(members.len(), 3);
    for (m, name) in members.iter().zip(&names) {
        let vm = mock.vm(name).unwrap();
        assert_eq!(m.id, vm.id.to_string());
        assert_eq!(m.private_ipv4, Some(vm.network_ip));
        assert_eq!(m.public_ipv4, vm.nat_ip);
        assert!(m.public_ipv4.is_some());
        assert_eq!(m.ipv6, vm.ipv6);
        assert!(m.ipv6.is_some());
        assert_eq!(m.zone.as_deref(), Some("us-central1-a"));
        assert_eq!(m.region.as_deref(), Some("us-central1"));
        assert_eq!(m.state, InstanceState::Running);
        assert_eq!(m.health, Health::Healthy);
        assert_eq!(m.tags.get("team").map(String::as_str), Some("payments"));
    }
    // One page of the group, one filtered page of the zone.
    assert_eq!(
        calls(&mock),
        BTreeMap::from([
            ("instanceGroupManagers.listManagedInstances".into(), 1),
            ("instances.list".into(), 1),
        ])
    );
    let list = mock
        .requests()
        .into_iter()
        .find(|r| r.operation == "instances.list")
        .unwrap();
    let filter = list.query.get("filter").cloned().unwrap_or_default();
    assert!(filter.starts_with("name eq \"web-"), "{filter}");
    let lmi = &mock.requests()[0];
    assert_eq!(lmi.method, "POST");
    assert_eq!(
        lmi.path,
        "/compute/v1/projects/proj/zones/us-central1-a/instanceGroupManagers/web/listManagedInstances"
    );
}

#[tokio::test]
async fn regional_members_come_from_one_aggregated_listing() {
    let mock = GceMock::start().await.unwrap();
    let key = mock.add_regional_group(
        "proj",
        "europe-west1",
        &["europe-west1-b", "europe-west1-c", "europe-west1-d"],
        "api",
        Template::default(),
    );
    mock.add_zone("proj", "us-east1-b");
    mock.resize(&key, 5);
    let p = provider(&mock);
    let members = p.members(&group(&key)).await.unwrap();
    assert_eq!(members.len(), 5);
    let zones: std::collections::BTreeSet<_> =
        members.iter().filter_map(|m| m.zone.clone()).collect();
    assert_eq!(zones.len(), 3);
    assert!(
        members
            .iter()
            .all(|m| m.region.as_deref() == Some("europe-west1"))
    );
    assert!(members.iter().all(|m| m.private_ipv4.is_some()));
    assert_eq!(
        calls(&mock),
        BTreeMap::from([
            ("instances.aggregatedList".into(), 1),
            ("regionInstanceGroupManagers.listManagedInstances".into(), 1),
        ])
    );
}

#[tokio::test]
async fn states_follow_actions_and_statuses() {
    let mock = GceMock::start().await.unwrap();
    let key = mock.add_zonal_group("proj", "us-central1-a", "web", Template::default());
    let names = mock.resize(&key, 4);
    mock.delete_instances(&[&names[0]]);
    mock.set_status(&names[1], "PROVISIONING");
    mock.set_unprovisioned(&names[2]);
    mock.set_health(&names[3], Some("UNHEALTHY"));
    let p = provider(&mock);
    let members = p.members(&group(&key)).await.unwrap();
    let by_name = |name: &str| {
        let vm = mock.vm(name).unwrap();
        members
            .iter()
            .find(|m| m.id == vm.id.to_string() || m.id == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(by_name(&names[0]).state, InstanceState::Terminating);
    assert_eq!(by_name(&names[1]).state, InstanceState::Pending);
    let creating = by_name(&names[2]);
    assert_eq!(creating.state, InstanceState::Pending);
    assert_eq!(creating.id, names[2], "no VM yet: the name stands in");
    assert_eq!(creating.private_ipv4, None);
    let unhealthy = by_name(&names[3]);
    assert_eq!(unhealthy.state, InstanceState::Running);
    assert_eq!(unhealthy.health, Health::Unhealthy);
}

#[tokio::test]
async fn calls_grow_with_pages_not_instances() {
    let mock = GceMock::start().await.unwrap();
    let key = mock.add_zonal_group("proj", "us-central1-a", "web", Template::default());
    mock.resize(&key, 23);
    mock.set_max_page_size(5);
    let p = provider(&mock);
    let members = p.members(&group(&key)).await.unwrap();
    assert_eq!(members.len(), 23);
    let mut ids: Vec<_> = members.iter().map(|m| m.id.clone()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 23, "every member once across pages");
    assert_eq!(
        calls(&mock),
        BTreeMap::from([
            ("instanceGroupManagers.listManagedInstances".into(), 5),
            ("instances.list".into(), 5),
        ])
    );
    // The first page carries no token; later ones carry the previous answer's.
    let tokens: Vec<Option<String>> = mock
        .requests()
        .iter()
        .filter(|r| r.operation == "instances.list")
        .map(|r| r.query.get("pageToken").cloned())
        .collect();
    assert_eq!(tokens[0], None);
    assert_eq!(tokens[1].as_deref(), Some("offset-5"));
}

#[tokio::test]
async fn errors_map_to_the_core_reasons() {
    let mock = GceMock::start().await.unwrap();
    let key = mock.add_zonal_group("proj", "us-central1-a", "web", Template::default());
    mock.resize(&key, 1);
    let p = provider(&mock);

    let missing = GroupRef::Gcp {
        project: "proj".into(),
        location: GcpLocation::Zone("us-central1-a".into()),
        manager: "nope".into(),
    };
    assert_eq!(
        p.members(&missing).await,
        Err(ProviderError::GroupNotFound(missing.to_string()))
    );

    mock.fail_next(1, Fault::TooManyRequests);
    assert_eq!(
        p.members(&group(&key)).await,
        Err(ProviderError::Throttled {
            retry_after: Some(std::time::Duration::from_secs(1))
        })
    );
    mock.fail_next(1, Fault::RateLimitExceeded);
    assert!(matches!(
        p.members(&group(&key)).await,
        Err(ProviderError::Throttled { .. })
    ));
    // A failure of the second call (the instance listing) fails the pass too.
    mock.reset_counts();
    let first = p.members(&group(&key)).await.unwrap();
    assert_eq!(first.len(), 1);
    mock.fail_next(1, Fault::ServerError(503));
    assert!(matches!(
        p.members(&group(&key)).await,
        Err(ProviderError::Transient(_))
    ));
    // No retries inside the client: each failure was one call.
    assert_eq!(mock.total_calls(), 2 + 1);
    mock.fail_next(1, Fault::ServerError(500));
    assert!(matches!(
        p.members(&group(&key)).await,
        Err(ProviderError::Transient(_))
    ));
    assert_eq!(p.members(&group(&key)).await.unwrap().len(), 1);
}

#[tokio::test]
async fn an_empty_group_costs_one_call_and_a_dead_endpoint_is_transient() {
    let mock = GceMock::start().await.unwrap();
    let key = mock.add_zonal_group("proj", "us-central1-a", "web", Template::default());
    let p = provider(&mock);
    assert_eq!(p.members(&group(&key)).await.unwrap(), vec![]);
    assert_eq!(mock.total_calls(), 1);

    let endpoint = mock.endpoint();
    drop(mock);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let p = GcpProvider::new(GcpConfig {
        endpoint: Some(endpoint),
        auth: Auth::Anonymous,
        ..GcpConfig::default()
    });
    assert!(matches!(
        p.members(&group(&key)).await,
        Err(ProviderError::Transient(_))
    ));
}

#[tokio::test]
async fn the_external_ipv6_is_used_when_there_is_no_internal_one() {
    let mock = GceMock::start().await.unwrap();
    let key = mock.add_zonal_group(
        "proj",
        "us-central1-a",
        "web",
        Template {
            external_ipv6: true,
            ..Template::default()
        },
    );
    let names = mock.resize(&key, 1);
    let vm = mock.vm(&names[0]).unwrap();
    let members = provider(&mock).members(&group(&key)).await.unwrap();
    assert_eq!(members[0].ipv6, vm.external_ipv6);
    assert!(members[0].ipv6.is_some());
    assert_eq!(members[0].public_ipv4, None);
    assert_ne!(members[0].private_ipv4, Some(Ipv4Addr::UNSPECIFIED));
}
