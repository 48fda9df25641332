//! Pure mapping from ARM resources to meshmirror's [`Instance`]: the state
//! table, health, and the choice of addresses. No I/O.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use meshmirror_provider::{Health, Instance, InstanceState};

use crate::models::{
    InstanceView, IpConfiguration, NetworkInterface, PublicIpAddress, ScaleSet, VirtualMachine,
};

/// ARM ids are case-insensitive; lookups use this key.
pub fn id_key(id: &str) -> String {
    id.trim_end_matches('/').to_ascii_lowercase()
}

/// The state table of issue 7.
///
/// | provisioningState | power state | → |
/// | --- | --- | --- |
/// | Deleting | any | Terminating |
/// | any | deallocating, deallocated, stopping, stopped | Terminating |
/// | Creating | any other | Pending |
/// | any | starting | Pending |
/// | Succeeded, Updating, Failed | running | Running |
/// | Succeeded | unknown (no instance view) | Running |
/// | anything else | | Pending |
///
/// Updating + running stays Running: a model, tag or extension update of a
/// serving VM must not take it out of the mesh. Failed + running stays
/// Running too; the health extension, when present, says whether it serves.
pub fn instance_state(provisioning: Option<&str>, power: Option<&str>) -> InstanceState {
    let provisioning = provisioning.unwrap_or_default().to_ascii_lowercase();
    let power = power.map(str::to_ascii_lowercase);
    if provisioning == "deleting" {
        return InstanceState::Terminating;
    }
    match power.as_deref() {
        Some("deallocating" | "deallocated" | "stopping" | "stopped") => InstanceState::Terminating,
        _ if provisioning == "creating" => InstanceState::Pending,
        Some("starting") => InstanceState::Pending,
        Some("running") if matches!(provisioning.as_str(), "succeeded" | "updating" | "failed") => {
            InstanceState::Running
        }
        None if provisioning == "succeeded" => InstanceState::Running,
        _ => InstanceState::Pending,
    }
}

/// The application health extension's verdict (`HealthState/healthy`, ...).
pub fn health(view: Option<&InstanceView>) -> Health {
    let code = view
        .and_then(|v| v.vm_health.as_ref())
        .and_then(|h| h.status.as_ref())
        .and_then(|s| s.code.as_deref())
        .map(str::to_ascii_lowercase);
    match code.as_deref() {
        Some("healthstate/healthy") => Health::Healthy,
        Some("healthstate/unhealthy") => Health::Unhealthy,
        _ => Health::Unknown,
    }
}

/// The addresses an instance is reachable on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addresses {
    pub private_ipv4: Option<Ipv4Addr>,
    pub public_ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

/// `10.0.0.4` or `172.20.2.16/28` → the address.
fn parse_ip(s: &str) -> Option<IpAddr> {
    s.split('/').next()?.trim().parse().ok()
}

fn is_v6(config: &IpConfiguration) -> bool {
    let p = &config.properties;
    match p.private_ip_address_version.as_deref() {
        Some(v) => v.eq_ignore_ascii_case("ipv6"),
        None => p
            .private_ip_address
            .as_deref()
            .and_then(parse_ip)
            .is_some_and(|ip| ip.is_ipv6()),
    }
}

/// The primary IP configuration: the one marked primary, else the first IPv4 one.
fn primary_config(nic: &NetworkInterface) -> Option<&IpConfiguration> {
    let configs = &nic.properties.ip_configurations;
    configs
        .iter()
        .find(|c| c.properties.primary == Some(true))
        .or_else(|| configs.iter().find(|c| !is_v6(c)))
        .or_else(|| configs.first())
}

fn public_ip(
    config: &IpConfiguration,
    public_ips: &HashMap<String, PublicIpAddress>,
) -> Option<IpAddr> {
    let id = config.properties.public_ip_address.as_ref()?;
    let pip = public_ips.get(&id_key(&id.id))?;
    parse_ip(pip.properties.ip_address.as_deref()?)
}

/// Addresses from the NIC's primary IP configuration (private v4 and its
/// public v4); IPv6 from the NIC's IPv6 configuration (Azure requires the
/// primary configuration to be IPv4), its private address before a public one.
pub fn addresses(
    nic: &NetworkInterface,
    public_ips: &HashMap<String, PublicIpAddress>,
) -> Addresses {
    let mut out = Addresses::default();
    if let Some(primary) = primary_config(nic) {
        if let Some(IpAddr::V4(v4)) = primary
            .properties
            .private_ip_address
            .as_deref()
            .and_then(parse_ip)
        {
            out.private_ipv4 = Some(v4);
        }
        match public_ip(primary, public_ips) {
            Some(IpAddr::V4(v4)) => out.public_ipv4 = Some(v4),
            Some(IpAddr::V6(v6)) => out.ipv6 = Some(v6),
            None => {}
        }
    }
    let v6_configs = nic.properties.ip_configurations.iter().filter(|c| is_v6(c));
    let mut v6_private = None;
    let mut v6_public = None;
    for config in v6_configs {
        if v6_private.is_none()
            && let Some(IpAddr::V6(v6)) = config
                .properties
                .private_ip_address
                .as_deref()
                .and_then(parse_ip)
        {
            v6_private = Some(v6);
        }
        if v6_public.is_none()
            && let Some(IpAddr::V6(v6)) = public_ip(config, public_ips)
        {
            v6_public = Some(v6);
        }
    }
    out.ipv6 = v6_private.or(v6_public).or(out.ipv6);
    out
}

/// The VM's primary NIC: the one its network profile marks primary, else the
/// NIC marked primary, else the first one found.
pub fn primary_nic<'a>(
    vm: &VirtualMachine,
    nics_by_id: &'a HashMap<String, NetworkInterface>,
    nics_by_vm: &HashMap<String, Vec<String>>,
) -> Option<&'a NetworkInterface> {
    let refs = vm
        .properties
        .network_profile
        .as_ref()
        .map(|p| p.network_interfaces.as_slice())
        .unwrap_or_default();
    let mut candidates: Vec<&NetworkInterface> = refs
        .iter()
        .filter_map(|r| nics_by_id.get(&id_key(&r.id)))
        .collect();
    if candidates.is_empty() {
        candidates = nics_by_vm
            .get(&id_key(&vm.id))
            .into_iter()
            .flatten()
            .filter_map(|id| nics_by_id.get(id))
            .collect();
    }
    let marked_in_profile = refs
        .iter()
        .find(|r| r.properties.as_ref().and_then(|p| p.primary) == Some(true))
        .and_then(|r| nics_by_id.get(&id_key(&r.id)));
    marked_in_profile
        .or_else(|| {
            candidates
                .iter()
                .copied()
                .find(|n| n.properties.primary == Some(true))
        })
        .or_else(|| candidates.first().copied())
}

/// One member. Tags: the scale set's, overridden by the VM's own.
pub fn instance(set: &ScaleSet, vm: &VirtualMachine, addrs: Addresses) -> Instance {
    let view = vm.properties.instance_view.as_ref();
    let power = view.and_then(|v| v.status("PowerState"));
    let mut tags: BTreeMap<String, String> = set.tags.clone();
    tags.extend(vm.tags.iter().map(|(k, v)| (k.clone(), v.clone())));
    Instance {
        id: vm.id.clone(),
        private_ipv4: addrs.private_ipv4,
        public_ipv4: addrs.public_ipv4,
        ipv6: addrs.ipv6,
        region: vm.location.clone().or_else(|| set.location.clone()),
        zone: vm.zones.first().cloned(),
        state: instance_state(
            vm.properties.provisioning_state.as_deref(),
            power.as_deref(),
        ),
        health: health(view),
        tags,
        lifecycle: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_state_table() {
        use InstanceState::*;
        let cases = [
            (Some("Creating"), Some("starting"), Pending),
            (Some("Creating"), None, Pending),
            (Some("Updating"), Some("starting"), Pending),
            (Some("Succeeded"), Some("running"), Running),
            (Some("Updating"), Some("running"), Running),
            (Some("Failed"), Some("running"), Running),
            (Some("Succeeded"), None, Running),
            (Some("Deleting"), Some("running"), Terminating),
            (Some("Succeeded"), Some("deallocating"), Terminating),
            (Some("Succeeded"), Some("deallocated"), Terminating),
            (Some("Succeeded"), Some("stopping"), Terminating),
            (Some("Updating"), Some("stopped"), Terminating),
            (Some("Failed"), None, Pending),
            (None, None, Pending),
        ];
        for (prov, power, want) in cases {
            assert_eq!(instance_state(prov, power), want, "{prov:?} {power:?}");
        }
    }

    #[test]
    fn health_from_the_extension() {
        let view = |code: &str| -> InstanceView {
            serde_json::from_value(json!({"vmHealth": {"status": {"code": code}}})).unwrap()
        };
        assert_eq!(health(Some(&view("HealthState/healthy"))), Health::Healthy);
        assert_eq!(
            health(Some(&view("HealthState/unhealthy"))),
            Health::Unhealthy
        );
        assert_eq!(
            health(Some(&view("HealthState/initializing"))),
            Health::Unknown
        );
        assert_eq!(health(None), Health::Unknown);
    }

    fn nic(configs: serde_json::Value) -> NetworkInterface {
        serde_json::from_value(json!({"id": "nic", "properties": {"ipConfigurations": configs}}))
            .unwrap()
    }

    #[test]
    fn addresses_come_from_the_primary_configuration() {
        let nic = nic(json!([
            {"properties": {"primary": false, "privateIPAddress": "172.20.2.16/28", "privateIPAddressVersion": "IPv4"}},
            {"properties": {"primary": true, "privateIPAddress": "10.0.0.4", "privateIPAddressVersion": "IPv4",
                "publicIPAddress": {"id": "/X/publicIPAddresses/PUB1"}}},
            {"properties": {"privateIPAddress": "fd00::4", "privateIPAddressVersion": "IPv6"}}
        ]));
        let pips = HashMap::from([(
            id_key("/x/publicipaddresses/pub1"),
            serde_json::from_value::<PublicIpAddress>(
                json!({"id": "/x/publicIPAddresses/pub1", "properties": {"ipAddress": "20.1.2.3"}}),
            )
            .unwrap(),
        )]);
        let a = addresses(&nic, &pips);
        assert_eq!(a.private_ipv4, Some(Ipv4Addr::new(10, 0, 0, 4)));
        assert_eq!(a.public_ipv4, Some(Ipv4Addr::new(20, 1, 2, 3)));
        assert_eq!(a.ipv6, Some("fd00::4".parse().unwrap()));
        // Without the public IP resource, no public address is made up.
        let a = addresses(&nic, &HashMap::new());
        assert_eq!(a.public_ipv4, None);
    }

    #[test]
    fn a_prefixed_secondary_address_is_never_chosen_over_the_primary() {
        let nic = nic(json!([
            {"properties": {"privateIPAddress": "172.20.2.16/28"}},
        ]));
        assert_eq!(
            addresses(&nic, &HashMap::new()).private_ipv4,
            Some(Ipv4Addr::new(172, 20, 2, 16))
        );
    }

    #[test]
    fn instance_carries_zone_region_tags_state_and_health() {
        let set: ScaleSet = serde_json::from_value(
            json!({"id": "s", "location": "westus", "tags": {"team": "a", "env": "set"}}),
        )
        .unwrap();
        let vm: VirtualMachine = serde_json::from_value(json!({
            "id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/3",
            "location": "eastus",
            "zones": ["2"],
            "tags": {"env": "vm"},
            "properties": {
                "provisioningState": "Succeeded",
                "instanceView": {
                    "statuses": [{"code": "ProvisioningState/succeeded"}, {"code": "PowerState/running"}],
                    "vmHealth": {"status": {"code": "HealthState/unhealthy"}}
                }
            }
        }))
        .unwrap();
        let i = instance(&set, &vm, Addresses::default());
        assert_eq!(i.id, vm.id);
        assert_eq!(i.zone.as_deref(), Some("2"));
        assert_eq!(i.region.as_deref(), Some("eastus"));
        assert_eq!(i.state, InstanceState::Running);
        assert_eq!(i.health, Health::Unhealthy);
        assert_eq!(i.tags.get("team").map(String::as_str), Some("a"));
        assert_eq!(i.tags.get("env").map(String::as_str), Some("vm"));
    }

    #[test]
    fn primary_nic_prefers_the_profile_then_the_nic_flag() {
        let vm: VirtualMachine = serde_json::from_value(json!({
            "id": "/vm/1",
            "properties": {"networkProfile": {"networkInterfaces": [
                {"id": "/nic/a"}, {"id": "/NIC/B", "properties": {"primary": true}}
            ]}}
        }))
        .unwrap();
        let mk = |id: &str, primary: bool| {
            serde_json::from_value::<NetworkInterface>(
                json!({"id": id, "properties": {"primary": primary}}),
            )
            .unwrap()
        };
        let nics = HashMap::from([
            (id_key("/nic/a"), mk("/nic/a", true)),
            (id_key("/nic/b"), mk("/nic/b", false)),
        ]);
        assert_eq!(
            primary_nic(&vm, &nics, &HashMap::new()).unwrap().id,
            "/nic/b"
        );
        // Without a profile, NICs found by their virtualMachine.id.
        let bare: VirtualMachine = serde_json::from_value(json!({"id": "/VM/1"})).unwrap();
        let by_vm = HashMap::from([(id_key("/vm/1"), vec![id_key("/nic/b"), id_key("/nic/a")])]);
        assert_eq!(primary_nic(&bare, &nics, &by_vm).unwrap().id, "/nic/a");
    }
}
