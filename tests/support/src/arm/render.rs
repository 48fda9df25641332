//! The mock's JSON, field for field after the verbatim ARM examples in
//! `fixtures/azure/` (see `SOURCES.md` there); `shapes` tests hold every
//! reply against them.

use serde_json::{Value, json};

use super::cloud::{MockVm, Mode, ScaleSetSpec};

fn status(code: &str, display: &str) -> Value {
    json!({"code": code, "level": "Info", "displayStatus": display})
}

/// `virtualMachineScaleSets/get` (vmss-get.json; `orchestrationMode`,
/// `uniqueId` as in vmss-create-flexible-skuprofile.json).
pub fn scale_set(spec: &ScaleSetSpec) -> Value {
    let mut properties = json!({
        "provisioningState": "Succeeded",
        "uniqueId": format!("00000000-0000-4000-9000-{:012x}", spec.name.len()),
        "singlePlacementGroup": false,
        "platformFaultDomainCount": 1,
        "orchestrationMode": match spec.mode { Mode::Uniform => "Uniform", Mode::Flexible => "Flexible" },
    });
    if spec.mode == Mode::Uniform {
        properties["upgradePolicy"] = json!({"mode": "Manual"});
        properties["overprovision"] = json!(false);
    }
    json!({
        "name": spec.name,
        "id": spec.id(),
        "type": "Microsoft.Compute/virtualMachineScaleSets",
        "location": spec.location,
        "tags": spec.tags,
        "sku": {"name": "Standard_D2s_v3", "tier": "Standard", "capacity": spec.capacity},
        "properties": properties,
    })
}

fn instance_view(vm: &MockVm) -> Value {
    let mut view = json!({
        "statuses": [
            status(&format!("ProvisioningState/{}", vm.provisioning_state.to_ascii_lowercase()),
                &format!("Provisioning {}", vm.provisioning_state.to_ascii_lowercase())),
            status(&format!("PowerState/{}", vm.power_state), &format!("VM {}", vm.power_state)),
        ],
    });
    if let Some(health) = &vm.health {
        view["vmHealth"] = json!({"status": status(&format!("HealthState/{health}"), &format!("The VM is {health}"))});
    }
    view
}

pub fn uniform_vm_id(spec: &ScaleSetSpec, vm: &MockVm) -> String {
    format!(
        "{}/virtualMachines/{}",
        spec.id(),
        vm.instance_id.as_deref().unwrap_or_default()
    )
}

pub fn flexible_vm_id(subscription: &str, resource_group: &str, vm: &MockVm) -> String {
    format!(
        "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Compute/virtualMachines/{}",
        vm.name
    )
}

pub fn nic_id(spec: &ScaleSetSpec, vm: &MockVm) -> String {
    match spec.mode {
        Mode::Uniform => format!(
            "{}/networkInterfaces/{}-nic",
            uniform_vm_id(spec, vm),
            spec.name
        ),
        Mode::Flexible => format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/networkInterfaces/{}-nic",
            spec.subscription, spec.resource_group, vm.name
        ),
    }
}

fn ip_config_id(spec: &ScaleSetSpec, vm: &MockVm, v6: bool) -> String {
    format!(
        "{}/ipConfigurations/{}-ipconfig{}",
        nic_id(spec, vm),
        spec.name,
        if v6 { "-v6" } else { "" }
    )
}

pub fn public_ip_id(spec: &ScaleSetSpec, vm: &MockVm) -> String {
    match spec.mode {
        Mode::Uniform => format!(
            "{}/publicIPAddresses/{}-pip",
            ip_config_id(spec, vm, false),
            spec.name
        ),
        Mode::Flexible => format!(
            "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/publicIPAddresses/{}-pip",
            spec.subscription, spec.resource_group, vm.name
        ),
    }
}

fn subnet_id(spec: &ScaleSetSpec) -> String {
    format!(
        "/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Network/virtualNetworks/{}-vnet/subnets/default",
        spec.subscription, spec.resource_group, spec.resource_group
    )
}

/// A Uniform member (vmss-vms-list-uniform.json; `zones`, `tags` and
/// `instanceView` as on a VM in vms-list-maximumset.json).
pub fn uniform_vm(spec: &ScaleSetSpec, vm: &MockVm, expand: bool) -> Value {
    let mut out = json!({
        "name": vm.name,
        "id": uniform_vm_id(spec, vm),
        "type": "Microsoft.Compute/virtualMachineScaleSets/virtualMachines",
        "location": spec.location,
        "instanceId": vm.instance_id,
        "sku": {"name": "Standard_D2s_v3", "tier": "Standard"},
        "properties": {
            "latestModelApplied": true,
            "modelDefinitionApplied": "VirtualMachineScaleSet",
            "provisioningState": vm.provisioning_state,
            "vmId": vm.vm_id,
            "hardwareProfile": {"vmSize": "Standard_D2s_v3"},
            "osProfile": {"computerName": vm.name.replace('_', "")},
            "networkProfile": {"networkInterfaces": [{"id": nic_id(spec, vm)}]},
        },
        "etag": "\"1\"",
    });
    if let Some(zone) = &vm.zone {
        out["zones"] = json!([zone]);
    }
    if !vm.tags.is_empty() {
        out["tags"] = json!(vm.tags);
    }
    if expand {
        out["properties"]["instanceView"] = instance_view(vm);
    }
    out
}

/// A plain VM, Flexible member or not (vms-list-maximumset.json).
pub fn flexible_vm(
    subscription: &str,
    resource_group: &str,
    location: &str,
    set: Option<&ScaleSetSpec>,
    vm: &MockVm,
    expand: bool,
) -> Value {
    let nic = match set {
        Some(spec) => nic_id(spec, vm),
        None => format!(
            "/subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.Network/networkInterfaces/{}-nic",
            vm.name
        ),
    };
    let mut out = json!({
        "name": vm.name,
        "id": flexible_vm_id(subscription, resource_group, vm),
        "type": "Microsoft.Compute/virtualMachines",
        "location": location,
        "tags": vm.tags,
        "properties": {
            "vmId": vm.vm_id,
            "hardwareProfile": {"vmSize": "Standard_D2s_v3"},
            "provisioningState": vm.provisioning_state,
            "networkProfile": {"networkInterfaces": [
                {"id": nic, "properties": {"primary": true, "deleteOption": "Delete"}}
            ]},
            "timeCreated": "2025-01-14T16:43:41.657Z",
        },
    });
    if let Some(spec) = set {
        out["properties"]["virtualMachineScaleSet"] = json!({"id": spec.id()});
    }
    if let Some(zone) = &vm.zone {
        out["zones"] = json!([zone]);
    }
    if expand {
        out["properties"]["instanceView"] = instance_view(vm);
    }
    out
}

/// A member's NIC (nic-list-vmss-network-interfaces.json; the second, IPv6
/// configuration is shaped like the first).
pub fn nic(spec: &ScaleSetSpec, vm: &MockVm) -> Value {
    let vm_id = match spec.mode {
        Mode::Uniform => uniform_vm_id(spec, vm),
        Mode::Flexible => flexible_vm_id(&spec.subscription, &spec.resource_group, vm),
    };
    let mut primary = json!({
        "name": format!("{}-ipconfig", spec.name),
        "id": ip_config_id(spec, vm, false),
        "properties": {
            "provisioningState": "Succeeded",
            "privateIPAddress": vm.private_ipv4.to_string(),
            "privateIPAllocationMethod": "Dynamic",
            "subnet": {"id": subnet_id(spec)},
            "primary": true,
            "privateIPAddressVersion": "IPv4",
        },
    });
    if vm.public_ipv4.is_some() {
        primary["properties"]["publicIPAddress"] = json!({"id": public_ip_id(spec, vm)});
    }
    let mut configs = vec![primary];
    if let Some(v6) = vm.ipv6 {
        configs.push(json!({
            "name": format!("{}-ipconfig-v6", spec.name),
            "id": ip_config_id(spec, vm, true),
            "properties": {
                "provisioningState": "Succeeded",
                "privateIPAddress": v6.to_string(),
                "privateIPAllocationMethod": "Dynamic",
                "subnet": {"id": subnet_id(spec)},
                "primary": false,
                "privateIPAddressVersion": "IPv6",
            },
        }));
    }
    json!({
        "name": format!("{}-nic", match spec.mode { Mode::Uniform => spec.name.as_str(), Mode::Flexible => vm.name.as_str() }),
        "id": nic_id(spec, vm),
        "properties": {
            "provisioningState": "Succeeded",
            "ipConfigurations": configs,
            "macAddress": "00-0D-3A-1B-C7-21",
            "enableAcceleratedNetworking": false,
            "enableIPForwarding": false,
            "primary": true,
            "virtualMachine": {"id": vm_id},
        },
    })
}

/// A public IP. No verbatim example of this resource is in the reference
/// set; the fields are those of the Network swagger's `PublicIPAddress`.
pub fn public_ip(spec: &ScaleSetSpec, vm: &MockVm) -> Option<Value> {
    let address = vm.public_ipv4?;
    Some(json!({
        "name": format!("{}-pip", match spec.mode { Mode::Uniform => spec.name.as_str(), Mode::Flexible => vm.name.as_str() }),
        "id": public_ip_id(spec, vm),
        "location": spec.location,
        "properties": {
            "provisioningState": "Succeeded",
            "ipAddress": address.to_string(),
            "publicIPAddressVersion": "IPv4",
            "publicIPAllocationMethod": "Static",
            "idleTimeoutInMinutes": 4,
        },
    }))
}

/// ARM's `ErrorResponse` (swagger-arm-common-types-v6-errors-subset.json).
pub fn error(code: &str, message: &str) -> Value {
    json!({"error": {"code": code, "message": message, "details": []}})
}

/// One page of a list (`value` + `nextLink`, OperationListResult).
pub fn page(items: Vec<Value>, next_link: Option<String>) -> Value {
    match next_link {
        Some(link) => json!({"value": items, "nextLink": link}),
        None => json!({"value": items}),
    }
}
