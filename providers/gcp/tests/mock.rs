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

/// The ids of these VMs, as the core names instances.
fn ids_of(mock: &GceMock, names: &[&String]) -> Vec<String> {
    names
        .iter()
        .map(|n| mock.vm(n).unwrap().id.to_string())
        .collect()
}

/// The `filter` of each recorded call of `operation`.
fn filters(mock: &GceMock, operation: &str) -> Vec<String> {
    mock.requests()
        .into_iter()
        .filter(|r| r.operation == operation)
        .map(|r| r.query.get("filter").cloned().unwrap_or_default())
        .collect()
}

#[tokio::test]
async fn two_named_instances_cost_one_call_of_each_in_a_group_of_600() {
    let mock = GceMock::start().await.unwrap();
    let key = mock.add_zonal_group(
        "proj",
        "us-central1-a",
        "web",
        Template {
            public_ip: true,
            ..Template::default()
        },
    );
    let names = mock.resize(&key, 600);
    let p = provider(&mock);
    // The whole group takes two pages of each listing (500 a page).
    assert_eq!(p.members(&group(&key)).await.unwrap().len(), 600);
    assert_eq!(
        calls(&mock),
        BTreeMap::from([
            ("instanceGroupManagers.listManagedInstances".into(), 2),
            ("instances.list".into(), 2),
        ])
    );
    mock.reset_counts();

    let ids = ids_of(&mock, &[&names[17], &names[583]]);
    let mut got = p.instances(&group(&key), &ids).await.unwrap().unwrap();
    got.sort_by(|a, b| a.id.cmp(&b.id));
    assert_eq!(
        calls(&mock),
        BTreeMap::from([
            ("instanceGroupManagers.listManagedInstances".into(), 1),
            ("instances.list".into(), 1),
        ])
    );
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got.iter().map(|m| m.id.clone()).collect::<Vec<_>>(), want);
    for m in &got {
        let vm = mock
            .members(&key)
            .into_iter()
            .find(|v| v.id.to_string() == m.id)
            .unwrap();
        assert_eq!(m.private_ipv4, Some(vm.network_ip));
        assert_eq!(m.public_ipv4, vm.nat_ip);
        assert_eq!(m.zone.as_deref(), Some("us-central1-a"));
        assert_eq!(m.state, InstanceState::Running);
    }
    // Both calls name the two ids, in the AIP-160 form, and nothing else.
    let by_id = format!("(id = {}) OR (id = {})", want[0], want[1]);
    assert_eq!(
        filters(&mock, "instanceGroupManagers.listManagedInstances"),
        vec![by_id.clone()]
    );
    assert_eq!(filters(&mock, "instances.list"), vec![by_id]);
}

#[tokio::test]
async fn ids_the_group_does_not_hold_are_absent() {
    let mock = GceMock::start().await.unwrap();
    let key = mock.add_zonal_group("proj", "us-central1-a", "web", Template::default());
    let other = mock.add_zonal_group("proj", "us-central1-a", "api", Template::default());
    let names = mock.resize(&key, 3);
    let theirs = mock.resize(&other, 1);
    mock.add_vm("proj", "us-central1-a", "bastion", &Template::default());
    let bastion = "bastion".to_string();
    let p = provider(&mock);

    // One member, a member of another group in the zone, a VM no group
    // manages, and an id nobody has.
    let mut ids = ids_of(&mock, &[&names[1], &theirs[0], &bastion]);
    ids.push("123".into());
    let got = p.instances(&group(&key), &ids).await.unwrap().unwrap();
    assert_eq!(
        got.iter().map(|m| m.id.as_str()).collect::<Vec<_>>(),
        vec![ids[0].as_str()]
    );
    // The listing asks about the one member found only.
    assert_eq!(
        filters(&mock, "instances.list"),
        vec![format!("(id = {})", ids[0])]
    );

    // None of them in the group: no instance listing at all.
    mock.reset_counts();
    let none = p.instances(&group(&key), &ids[1..]).await.unwrap().unwrap();
    assert_eq!(none, vec![]);
    assert_eq!(
        calls(&mock),
        BTreeMap::from([("instanceGroupManagers.listManagedInstances".into(), 1)])
    );
}

#[tokio::test]
async fn a_creating_member_without_its_vm_listed_yet_is_pending() {
    let mock = GceMock::start().await.unwrap();
    let key = mock.add_zonal_group("proj", "us-central1-a", "web", Template::default());
    let names = mock.resize(&key, 4);
    // The group reports it with its id; the instance listing does not
    // have it yet.
    mock.set_action(&names[2], "CREATING");
    mock.set_status(&names[2], "PROVISIONING");
    mock.set_listed(&names[2], false);
    let p = provider(&mock);
    let ids = ids_of(&mock, &[&names[2]]);
    let got = p.instances(&group(&key), &ids).await.unwrap().unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, ids[0]);
    assert_eq!(got[0].state, InstanceState::Pending);
    assert_eq!(got[0].private_ipv4, None);

    // A member with no VM at all has no id in the group's listing: asked
    // by the id it will have, it is not there yet.
    mock.set_unprovisioned(&names[3]);
    let ids = ids_of(&mock, &[&names[3]]);
    assert_eq!(p.instances(&group(&key), &ids).await.unwrap(), Some(vec![]));
    // Known by its name only, it cannot be asked by id: the whole group is
    // read instead, and nothing is called here.
    mock.reset_counts();
    assert_eq!(
        p.instances(&group(&key), &[ids[0].clone(), names[3].clone()])
            .await
            .unwrap(),
        None
    );
    assert_eq!(mock.total_calls(), 0);
}

#[tokio::test]
async fn a_running_member_its_listing_misses_fails_the_read() {
    let mock = GceMock::start().await.unwrap();
    let key = mock.add_zonal_group("proj", "us-central1-a", "web", Template::default());
    let names = mock.resize(&key, 3);
    mock.set_listed(&names[0], false);
    let p = provider(&mock);
    let ids = ids_of(&mock, &[&names[0], &names[1]]);
    match p.instances(&group(&key), &ids).await {
        Err(ProviderError::Transient(why)) => assert!(why.contains(&names[0]), "{why}"),
        other => panic!("a running member without its VM must fail, got {other:?}"),
    }
    mock.set_listed(&names[0], true);
    assert_eq!(
        p.instances(&group(&key), &ids)
            .await
            .unwrap()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn a_regional_group_is_asked_by_id_in_one_aggregated_listing() {
    let mock = GceMock::start().await.unwrap();
    let key = mock.add_regional_group(
        "proj",
        "europe-west1",
        &["europe-west1-b", "europe-west1-c", "europe-west1-d"],
        "api",
        Template::default(),
    );
    let names = mock.resize(&key, 30);
    let p = provider(&mock);
    let asked: Vec<&String> = names.iter().take(3).collect();
    let ids = ids_of(&mock, &asked);
    let got = p.instances(&group(&key), &ids).await.unwrap().unwrap();
    assert_eq!(got.len(), 3);
    let zones: std::collections::BTreeSet<_> = got.iter().filter_map(|m| m.zone.clone()).collect();
    assert_eq!(zones.len(), 3, "one member in each zone: {zones:?}");
    assert!(got.iter().all(|m| m.private_ipv4.is_some()));
    assert_eq!(
        calls(&mock),
        BTreeMap::from([
            ("instances.aggregatedList".into(), 1),
            ("regionInstanceGroupManagers.listManagedInstances".into(), 1),
        ])
    );
}

#[tokio::test]
async fn many_ids_are_asked_fifty_at_a_time() {
    let mock = GceMock::start().await.unwrap();
    let key = mock.add_zonal_group("proj", "us-central1-a", "web", Template::default());
    let names = mock.resize(&key, 200);
    let p = provider(&mock);
    let asked: Vec<&String> = names.iter().take(120).collect();
    let ids = ids_of(&mock, &asked);
    let got = p.instances(&group(&key), &ids).await.unwrap().unwrap();
    assert_eq!(got.len(), 120);
    // ceil(120 / 50) calls of each: 50, 50 and 20 ids.
    assert_eq!(
        calls(&mock),
        BTreeMap::from([
            ("instanceGroupManagers.listManagedInstances".into(), 3),
            ("instances.list".into(), 3),
        ])
    );
    for operation in [
        "instanceGroupManagers.listManagedInstances",
        "instances.list",
    ] {
        let named: Vec<usize> = filters(&mock, operation)
            .iter()
            .map(|f| f.matches("(id = ").count())
            .collect();
        assert_eq!(named, vec![50, 50, 20], "{operation}");
    }
}

#[tokio::test]
async fn the_mock_refuses_a_group_listing_filter_it_cannot_read() {
    use google_cloud_compute_v1::client::InstanceGroupManagers;

    let mock = GceMock::start().await.unwrap();
    let key = mock.add_zonal_group("proj", "us-central1-a", "web", Template::default());
    mock.resize(&key, 2);
    let client = InstanceGroupManagers::builder()
        .with_endpoint(mock.endpoint())
        .with_credentials(google_cloud_auth::credentials::anonymous::Builder::new().build())
        .build()
        .await
        .unwrap();
    let list = |filter: &str| {
        client
            .list_managed_instances()
            .set_project("proj")
            .set_zone("us-central1-a")
            .set_instance_group_manager("web")
            .set_filter(filter)
            .send()
    };
    // A field managed instances do not have, and a broken expression.
    for bad in ["zone = us-central1-a", "(id = 1", "id ="] {
        let err = list(bad).await.unwrap_err();
        assert_eq!(err.http_status_code(), Some(400), "{bad}: {err}");
    }
    let one = mock.members(&key)[1].id;
    let page = list(&format!("id = {one}")).await.unwrap();
    assert_eq!(page.managed_instances.len(), 1);
    assert_eq!(page.managed_instances[0].id, Some(one));
}
