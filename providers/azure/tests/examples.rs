//! The serde models and the mapping, held against the verbatim ARM examples
//! (tests/fixtures, sources in tests/fixtures/SOURCES.md).

use std::collections::HashMap;
use std::net::Ipv4Addr;

use meshmirror_azure::mapping::{self, id_key};
use meshmirror_azure::models::{
    NetworkInterface, OrchestrationMode, Page, ScaleSet, VirtualMachine,
};
use meshmirror_azure::provider::assemble;
use meshmirror_provider::{Health, InstanceState};
use serde::de::DeserializeOwned;

fn body<T: DeserializeOwned>(name: &str) -> T {
    let path = format!(
        "{}/tests/fixtures/{name}",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo and nextest set CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap();
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    serde_json::from_value(json["responses"]["200"]["body"].clone())
        .unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn scale_set_gets_give_the_orchestration_mode() {
    let uniform: ScaleSet = body("vmss-get.json");
    assert_eq!(
        uniform.mode(),
        OrchestrationMode::Uniform,
        "no orchestrationMode: Uniform"
    );
    assert_eq!(uniform.location.as_deref(), Some("West US"));
    assert_eq!(
        uniform.tags.get("myTag1").map(String::as_str),
        Some("tagValue1")
    );
    let flexible: ScaleSet = body("vmss-create-flexible-skuprofile.json");
    assert_eq!(flexible.mode(), OrchestrationMode::Flexible);
}

#[test]
fn uniform_members_parse_with_their_nic_references() {
    let page: Page<VirtualMachine> = body("vmss-vms-list-uniform.json");
    assert!(page.next_link.is_none());
    let vm = &page.value[0];
    assert_eq!(vm.instance_id.as_deref(), Some("1"));
    assert_eq!(
        vm.properties.provisioning_state.as_deref(),
        Some("Succeeded")
    );
    let nics = &vm
        .properties
        .network_profile
        .as_ref()
        .unwrap()
        .network_interfaces;
    assert!(nics[0].id.contains("/virtualMachines/1/networkInterfaces/"));
    // Without $expand=instanceView there is no power state: Succeeded counts as running.
    let set: ScaleSet = body("vmss-get.json");
    let instances = assemble(&set, &page.value, Vec::new(), Vec::new());
    assert_eq!(instances.len(), page.value.len());
    assert_eq!(instances[0].state, InstanceState::Running);
    assert_eq!(instances[0].private_ipv4, None, "no NIC, no address");
}

#[test]
fn minimum_set_members_parse_and_are_pending() {
    let page: Page<VirtualMachine> = body("vmss-vms-list-minimumset.json");
    let set: ScaleSet = body("vmss-get.json");
    let instances = assemble(&set, &page.value, Vec::new(), Vec::new());
    assert_eq!(instances.len(), 1);
    assert_eq!(instances[0].state, InstanceState::Pending);
    assert_eq!(instances[0].region.as_deref(), Some("westus"));
    let all: Page<VirtualMachine> = body("vms-listall-minimumset.json");
    assert_eq!(all.value.len(), 2);
}

#[test]
fn flexible_members_carry_their_scale_set_and_instance_view() {
    let page: Page<VirtualMachine> = body("vms-list-maximumset.json");
    assert_eq!(page.next_link.as_deref(), Some("a"));
    let vm = &page.value[0];
    assert!(vm.properties.virtual_machine_scale_set.is_some());
    assert_eq!(vm.zones.len(), 1);
    let with_view = page
        .value
        .iter()
        .find(|v| v.properties.instance_view.is_some())
        .expect("an instance view");
    // The generated example's status codes are filler ("aaa"): no health verdict.
    assert_eq!(
        mapping::health(with_view.properties.instance_view.as_ref()),
        Health::Unknown
    );
}

#[test]
fn addresses_from_the_nic_examples() {
    let page: Page<NetworkInterface> = body("nic-list-vmss-network-interfaces.json");
    let a = mapping::addresses(&page.value[0], &HashMap::new());
    assert_eq!(a.private_ipv4, Some(Ipv4Addr::new(10, 0, 0, 4)));
    assert_eq!(a.public_ipv4, None, "the public IP resource was not listed");
    // NICs find their VM through properties.virtualMachine.id.
    let vm: VirtualMachine = serde_json::from_value(serde_json::json!({
        "id": "/subscriptions/subid/resourceGroups/rg1/providers/Microsoft.Compute/virtualMachineScaleSets/vmss1/virtualMachines/1"
    }))
    .unwrap();
    let set: ScaleSet = body("vmss-get.json");
    let instances = assemble(&set, &[vm], page.value.clone(), Vec::new());
    assert_eq!(instances[0].private_ipv4, Some(Ipv4Addr::new(10, 0, 0, 5)));

    let nic: NetworkInterface = body("nic-get.json");
    let a = mapping::addresses(&nic, &HashMap::new());
    assert_eq!(
        a.private_ipv4,
        Some(Ipv4Addr::new(172, 20, 2, 4)),
        "the primary configuration, not the prefixed secondary one"
    );
    assert!(id_key(&nic.id).starts_with("/subscriptions/subid/"));
}
