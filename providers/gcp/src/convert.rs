//! Joins a group's managed instances with the instances listed in their
//! zones, into the core's [`Instance`]s.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use google_cloud_compute_v1::model;
use meshmirror_provider::{Instance, InstanceState};

use crate::state;

/// `(zone, instance name)`: how a managed instance names its VM.
pub type InstanceKey = (String, String);

/// The segment after `key` in a resource URL or path, e.g. the zone in
/// `https://.../projects/p/zones/us-central1-a/instances/vm-1`.
pub fn segment_after<'a>(url: &'a str, key: &str) -> Option<&'a str> {
    let mut parts = url.split('/');
    parts.find(|p| *p == key)?;
    parts.next().filter(|s| !s.is_empty())
}

/// The last path segment of a resource URL (a zone URL names its zone last).
pub fn last_segment(url: &str) -> &str {
    url.rsplit('/').next().unwrap_or(url)
}

/// The region of a zone: `us-central1-a` → `us-central1`.
pub fn region_of(zone: &str) -> &str {
    zone.rsplit_once('-').map_or(zone, |(region, _)| region)
}

/// The key of the VM a managed instance stands for.
pub fn managed_key(managed: &model::ManagedInstance) -> Option<InstanceKey> {
    let url = managed.instance.as_deref()?;
    Some((
        segment_after(url, "zones")?.to_string(),
        segment_after(url, "instances")?.to_string(),
    ))
}

/// The key of a listed VM.
pub fn instance_key(instance: &model::Instance) -> Option<InstanceKey> {
    Some((
        last_segment(instance.zone.as_deref()?).to_string(),
        instance.name.clone()?,
    ))
}

/// A managed instance that says it runs but was not in its zone's listing:
/// the two reads raced, or the listing was partial. The pass fails rather
/// than drop its entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("instance {name} in {zone} is a running member but its zone's listing does not have it")]
pub struct Unlisted {
    pub zone: String,
    pub name: String,
}

/// The core's view of each managed instance, with addresses and labels from
/// the listed VM. Members that are not running may lack a VM (`CREATING`).
pub fn join(
    managed: &[model::ManagedInstance],
    listed: &HashMap<InstanceKey, model::Instance>,
) -> Result<Vec<Instance>, Unlisted> {
    managed
        .iter()
        .map(|m| {
            let key = managed_key(m);
            let vm = key.as_ref().and_then(|k| listed.get(k));
            let status = m
                .instance_status
                .as_ref()
                .and_then(|s| s.name())
                .or_else(|| vm.and_then(|v| v.status.as_ref()).and_then(|s| s.name()));
            let state =
                state::instance_state(m.current_action.as_ref().and_then(|a| a.name()), status);
            if vm.is_none() && state == InstanceState::Running {
                let (zone, name) = key.unwrap_or_default();
                return Err(Unlisted { zone, name });
            }
            Ok(member(m, key, vm, state))
        })
        .collect()
}

fn member(
    managed: &model::ManagedInstance,
    key: Option<InstanceKey>,
    vm: Option<&model::Instance>,
    state: InstanceState,
) -> Instance {
    let zone = key.as_ref().map(|(zone, _)| zone.clone());
    // The numeric id is never reused; names are (RECREATING keeps the name).
    // A VM that does not exist yet has neither id: its name stands in.
    let id = vm
        .and_then(|v| v.id)
        .or(managed.id)
        .map(|id| id.to_string())
        .or_else(|| managed.name.clone())
        .or_else(|| key.as_ref().map(|(_, name)| name.clone()))
        .unwrap_or_default();
    let nics: &[model::NetworkInterface] = vm.map_or(&[], |v| &v.network_interfaces);
    Instance {
        id,
        private_ipv4: nics
            .iter()
            .find_map(|n| n.network_ip.as_deref().and_then(|ip| ip.parse().ok())),
        public_ipv4: nics.iter().find_map(public_ipv4),
        ipv6: nics.iter().find_map(ipv6),
        region: zone.as_deref().map(|z| region_of(z).to_string()),
        zone,
        state,
        health: state::health(
            managed
                .instance_health
                .iter()
                .map(|h| h.detailed_health_state.as_ref().and_then(|s| s.name())),
        ),
        tags: vm
            .map(|v| {
                v.labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        lifecycle: None,
    }
}

/// The external IPv4 of a NIC's one-to-one NAT, if it has one.
fn public_ipv4(nic: &model::NetworkInterface) -> Option<Ipv4Addr> {
    nic.access_configs
        .iter()
        .find_map(|c| c.nat_ip.as_deref().and_then(|ip| ip.parse().ok()))
}

/// The NIC's internal IPv6 (`ipv6Address`), else its external one
/// (`ipv6AccessConfigs[].externalIpv6`): a NIC with external IPv6 access
/// has only the latter.
fn ipv6(nic: &model::NetworkInterface) -> Option<Ipv6Addr> {
    nic.ipv_6_address
        .as_deref()
        .and_then(|ip| ip.parse().ok())
        .or_else(|| {
            nic.ipv_6_access_configs
                .iter()
                .find_map(|c| c.external_ipv_6.as_deref().and_then(|ip| ip.parse().ok()))
        })
}

#[cfg(test)]
mod tests {
    use meshmirror_provider::Health;
    use serde_json::json;

    use super::*;

    fn managed(v: serde_json::Value) -> model::ManagedInstance {
        serde_json::from_value(v).unwrap()
    }

    fn listed(items: &[serde_json::Value]) -> HashMap<InstanceKey, model::Instance> {
        items
            .iter()
            .map(|v| {
                let i: model::Instance = serde_json::from_value(v.clone()).unwrap();
                (instance_key(&i).unwrap(), i)
            })
            .collect()
    }

    const URL: &str = "https://www.googleapis.com/compute/v1/projects/p/zones/us-central1-a";

    #[test]
    fn urls_split_into_zone_region_and_name() {
        let url = format!("{URL}/instances/base-foo-2vld");
        assert_eq!(segment_after(&url, "zones"), Some("us-central1-a"));
        assert_eq!(segment_after(&url, "instances"), Some("base-foo-2vld"));
        assert_eq!(segment_after(&url, "regions"), None);
        assert_eq!(last_segment(URL), "us-central1-a");
        assert_eq!(region_of("us-central1-a"), "us-central1");
        assert_eq!(region_of("europe-west4-b"), "europe-west4");
    }

    #[test]
    fn a_running_member_takes_addresses_labels_and_health_from_its_vm() {
        let m = managed(json!({
            "currentAction": "NONE",
            "id": "4006034190819017667",
            "instance": format!("{URL}/instances/web-1"),
            "instanceStatus": "RUNNING",
            "instanceHealth": [{"detailedHealthState": "HEALTHY", "healthCheck": "hc"}],
        }));
        let vms = listed(&[json!({
            "id": "4006034190819017667",
            "name": "web-1",
            "zone": URL,
            "status": "RUNNING",
            "labels": {"team": "payments", "env": "prod"},
            "networkInterfaces": [{
                "networkIP": "10.240.72.75",
                "accessConfigs": [{"name": "External NAT", "natIP": "23.236.58.15"}],
                "ipv6Address": "fd20:1:2:3::4",
            }],
        })]);
        let got = join(&[m], &vms).unwrap();
        assert_eq!(got.len(), 1);
        let i = &got[0];
        assert_eq!(i.id, "4006034190819017667");
        assert_eq!(i.private_ipv4, Some(Ipv4Addr::new(10, 240, 72, 75)));
        assert_eq!(i.public_ipv4, Some(Ipv4Addr::new(23, 236, 58, 15)));
        assert_eq!(i.ipv6, Some("fd20:1:2:3::4".parse().unwrap()));
        assert_eq!(i.zone.as_deref(), Some("us-central1-a"));
        assert_eq!(i.region.as_deref(), Some("us-central1"));
        assert_eq!(i.state, InstanceState::Running);
        assert_eq!(i.health, Health::Healthy);
        assert_eq!(i.tags.get("team").map(String::as_str), Some("payments"));
        assert_eq!(i.tags.len(), 2);
    }

    #[test]
    fn external_ipv6_stands_in_when_there_is_no_internal_one() {
        let m = managed(json!({
            "currentAction": "NONE",
            "instance": format!("{URL}/instances/web-1"),
            "instanceStatus": "RUNNING",
        }));
        let vms = listed(&[json!({
            "id": "7",
            "name": "web-1",
            "zone": URL,
            "networkInterfaces": [{
                "networkIP": "10.0.0.2",
                "ipv6AccessConfigs": [{"externalIpv6": "2600:1900:4000::1"}],
            }],
        })]);
        let got = join(&[m], &vms).unwrap();
        assert_eq!(got[0].ipv6, Some("2600:1900:4000::1".parse().unwrap()));
        assert_eq!(got[0].public_ipv4, None);
        assert_eq!(got[0].health, Health::Unknown);
    }

    #[test]
    fn a_creating_member_without_a_vm_is_pending_under_its_name() {
        let m = managed(json!({
            "currentAction": "CREATING",
            "instance": format!("{URL}/instances/web-9"),
        }));
        let got = join(&[m], &HashMap::new()).unwrap();
        assert_eq!(got[0].id, "web-9");
        assert_eq!(got[0].state, InstanceState::Pending);
        assert_eq!(got[0].private_ipv4, None);
    }

    #[test]
    fn a_running_member_missing_from_the_listing_fails_the_join() {
        let m = managed(json!({
            "currentAction": "NONE",
            "id": "5",
            "instance": format!("{URL}/instances/web-5"),
            "instanceStatus": "RUNNING",
        }));
        assert_eq!(
            join(&[m], &HashMap::new()),
            Err(Unlisted {
                zone: "us-central1-a".into(),
                name: "web-5".into()
            })
        );
    }

    /// The Libcloud capture of a real listManagedInstances answer parses and
    /// joins with the capture of one of its zone's instances.
    #[test]
    fn the_reference_captures_join() {
        let lmi: model::InstanceGroupManagersListManagedInstancesResponse = serde_json::from_str(
            include_str!("../tests/fixtures/libcloud-igm-list-managed-instances.json")
                .split_once('\n')
                .unwrap()
                .1,
        )
        .unwrap();
        assert_eq!(lmi.managed_instances.len(), 4);
        let mut vm: model::Instance = serde_json::from_str(
            include_str!("../tests/fixtures/libcloud-instance-get.json")
                .split_once('\n')
                .unwrap()
                .1,
        )
        .unwrap();
        // The capture's VM is named node-name; give it a member's name.
        vm.name = Some("base-foo-2vld".into());
        let listed = HashMap::from([(instance_key(&vm).unwrap(), vm)]);
        let err = join(&lmi.managed_instances, &listed).unwrap_err();
        assert_eq!(err.name, "base-foo-il30");
        let got = join(&lmi.managed_instances[..1], &listed).unwrap();
        assert_eq!(got[0].id, "4006034190819017667");
        assert_eq!(got[0].private_ipv4, Some(Ipv4Addr::new(10, 240, 72, 75)));
        assert_eq!(got[0].public_ipv4, Some(Ipv4Addr::new(23, 236, 58, 15)));
    }
}
