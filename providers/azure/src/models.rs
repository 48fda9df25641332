//! Typed serde models of the few ARM resources meshmirror reads, with only the
//! fields it uses. Field names follow the REST shapes of the Azure REST API
//! specs (Compute 2024-11-01, Network 2018-10-01 and 2024-05-01); every field is
//! optional or defaulted because ARM's minimum-set examples guarantee little
//! more than `id` and `location`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// One page of an ARM list (`OperationListResult`): follow `nextLink` until absent.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Page<T> {
    #[serde(default = "Vec::new")]
    pub value: Vec<T>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_link: Option<String>,
}

/// A reference to another resource (`SubResource`).
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
pub struct SubResource {
    #[serde(default)]
    pub id: String,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct Sku {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub capacity: Option<u64>,
}

/// `Microsoft.Compute/virtualMachineScaleSets` (GET).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ScaleSet {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub sku: Option<Sku>,
    #[serde(default)]
    pub properties: ScaleSetProperties,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleSetProperties {
    /// `Uniform` or `Flexible`; absent on scale sets created before Flexible
    /// existed, which are Uniform.
    #[serde(default)]
    pub orchestration_mode: Option<String>,
    #[serde(default)]
    pub provisioning_state: Option<String>,
}

/// How a scale set manages its VMs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OrchestrationMode {
    Uniform,
    Flexible,
}

impl ScaleSet {
    pub fn mode(&self) -> OrchestrationMode {
        match self.properties.orchestration_mode.as_deref() {
            Some(m) if m.eq_ignore_ascii_case("flexible") => OrchestrationMode::Flexible,
            _ => OrchestrationMode::Uniform,
        }
    }
}

/// A VM: a Uniform scale set's `virtualMachineScaleSets/virtualMachines` item or
/// a plain `Microsoft.Compute/virtualMachines` (Flexible members). The two
/// share every field read here.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VirtualMachine {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Uniform members only: "0", "1", ...
    #[serde(default)]
    pub instance_id: Option<String>,
    #[serde(default)]
    pub location: Option<String>,
    #[serde(default)]
    pub zones: Vec<String>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub properties: VmProperties,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VmProperties {
    #[serde(default)]
    pub provisioning_state: Option<String>,
    #[serde(default)]
    pub vm_id: Option<String>,
    /// Flexible members: the scale set they belong to.
    #[serde(default)]
    pub virtual_machine_scale_set: Option<SubResource>,
    #[serde(default)]
    pub network_profile: Option<NetworkProfile>,
    /// Present with `$expand=instanceView`.
    #[serde(default)]
    pub instance_view: Option<InstanceView>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkProfile {
    #[serde(default)]
    pub network_interfaces: Vec<NicReference>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct NicReference {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub properties: Option<NicReferenceProperties>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct NicReferenceProperties {
    #[serde(default)]
    pub primary: Option<bool>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    #[serde(default)]
    pub statuses: Vec<InstanceViewStatus>,
    /// The application health extension's verdict, when installed.
    #[serde(default)]
    pub vm_health: Option<VmHealth>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceViewStatus {
    /// e.g. `ProvisioningState/succeeded`, `PowerState/running`, `HealthState/healthy`.
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_status: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct VmHealth {
    #[serde(default)]
    pub status: Option<InstanceViewStatus>,
}

impl InstanceView {
    /// The part after `prefix/` of the first status code with that prefix,
    /// lower-cased (`PowerState/running` → `running`).
    pub fn status(&self, prefix: &str) -> Option<String> {
        self.statuses.iter().find_map(|s| {
            let code = s.code.as_deref()?;
            let (p, value) = code.split_once('/')?;
            p.eq_ignore_ascii_case(prefix)
                .then(|| value.to_ascii_lowercase())
        })
    }
}

/// `Microsoft.Network/networkInterfaces` (also served under a Uniform scale set's path).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct NetworkInterface {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub properties: NicProperties,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NicProperties {
    #[serde(default)]
    pub primary: Option<bool>,
    #[serde(default)]
    pub ip_configurations: Vec<IpConfiguration>,
    #[serde(default)]
    pub virtual_machine: Option<SubResource>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct IpConfiguration {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub properties: IpConfigurationProperties,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct IpConfigurationProperties {
    #[serde(default)]
    pub primary: Option<bool>,
    /// May carry a prefix (`172.20.2.16/28`) on secondary configurations.
    #[serde(default, rename = "privateIPAddress")]
    pub private_ip_address: Option<String>,
    /// `IPv4` or `IPv6`.
    #[serde(default, rename = "privateIPAddressVersion")]
    pub private_ip_address_version: Option<String>,
    #[serde(default, rename = "publicIPAddress")]
    pub public_ip_address: Option<SubResource>,
}

/// `Microsoft.Network/publicIPAddresses` (also served under a Uniform scale set's path).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct PublicIpAddress {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub properties: PublicIpProperties,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct PublicIpProperties {
    #[serde(default, rename = "ipAddress")]
    pub ip_address: Option<String>,
    #[serde(default, rename = "publicIPAddressVersion")]
    pub public_ip_address_version: Option<String>,
}

/// ARM's error body: Compute's `CloudError` and ARM's `ErrorResponse` share
/// `{"error": {"code", "message", ...}}`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ErrorResponse {
    #[serde(default)]
    pub error: Option<ErrorDetail>,
}

#[derive(Clone, Debug, Default, Deserialize, Serialize)]
pub struct ErrorDetail {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_view_status_codes_are_split_and_lowercased() {
        let view: InstanceView = serde_json::from_value(serde_json::json!({
            "statuses": [
                {"code": "ProvisioningState/succeeded"},
                {"code": "PowerState/Running"}
            ],
            "vmHealth": {"status": {"code": "HealthState/healthy"}}
        }))
        .unwrap();
        assert_eq!(view.status("PowerState").as_deref(), Some("running"));
        assert_eq!(
            view.status("provisioningstate").as_deref(),
            Some("succeeded")
        );
        assert_eq!(view.status("HealthState"), None);
    }

    #[test]
    fn orchestration_mode_defaults_to_uniform() {
        let set: ScaleSet = serde_json::from_value(serde_json::json!({"id": "x"})).unwrap();
        assert_eq!(set.mode(), OrchestrationMode::Uniform);
        let set: ScaleSet = serde_json::from_value(
            serde_json::json!({"id": "x", "properties": {"orchestrationMode": "Flexible"}}),
        )
        .unwrap();
        assert_eq!(set.mode(), OrchestrationMode::Flexible);
    }
}
