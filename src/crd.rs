//! The `ScalingGroupMirror` API that users write (group `meshmirror.io`,
//! version `v1alpha1`). The CRD YAML under `deploy/` is generated from these types.

use std::collections::BTreeMap;

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Mirrors one cloud scaling group into WorkloadEntries in this namespace.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "meshmirror.io",
    version = "v1alpha1",
    kind = "ScalingGroupMirror",
    namespaced,
    status = "ScalingGroupMirrorStatus",
    shortname = "sgm",
    category = "meshmirror",
    printcolumn = r#"{"name":"Provider","type":"string","jsonPath":".status.provider"}"#,
    printcolumn = r#"{"name":"Group","type":"string","jsonPath":".status.group","priority":1}"#,
    printcolumn = r#"{"name":"Members","type":"integer","jsonPath":".status.members"}"#,
    printcolumn = r#"{"name":"Entries","type":"integer","jsonPath":".status.entries"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ScalingGroupMirrorSpec {
    /// The scaling group to mirror: exactly one of `aws`, `azure`, `gcp`, `sim`.
    pub provider: ProviderSpec,
    /// One WorkloadEntry per member instance per workload (1 to 16).
    #[schemars(length(min = 1, max = 16))]
    pub workloads: Vec<WorkloadSpec>,
    /// Which of the instance's addresses the entries carry.
    #[serde(default)]
    pub address: AddressFamily,
    /// A static Istio network name for every entry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub network: Option<String>,
    /// Network by the chosen address's CIDR, first match wins (Istio's
    /// meshNetworks `fromCidr`); falls back to `network`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub network_by_cidr: Vec<CidrNetwork>,
    /// `Auto` sets `region/zone` from the provider; `None` leaves locality unset.
    #[serde(default)]
    pub locality: LocalityMode,
    /// Cloud tag (label) keys copied onto the entries' labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 253)))]
    pub copy_tags: Vec<String>,
    /// Who reports the entries' health.
    #[serde(default)]
    pub health: HealthMode,
    #[serde(default)]
    pub sync: SyncSpec,
    #[serde(default)]
    pub lifecycle: LifecycleSpec,
    /// One Istio `Sidecar` for the group's VM proxies (a VM runs one proxy for
    /// all its workloads): an inbound listener per workload port, and egress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<SidecarSpec>,
    /// When true, nothing is written; status says so.
    #[serde(default)]
    pub paused: bool,
}

/// Exactly one cloud.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "(has(self.aws) ? 1 : 0) + (has(self.azure) ? 1 : 0) + (has(self.gcp) ? 1 : 0) + (has(self.sim) ? 1 : 0) == 1",
    "message": "set exactly one of aws, azure, gcp, sim"
}]))]
pub struct ProviderSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<AwsGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure: Option<AzureGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp: Option<GcpGroup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sim: Option<SimGroup>,
}

/// An AWS Auto Scaling Group.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsGroup {
    #[schemars(
        length(min = 1, max = 32),
        regex(pattern = r"^[a-z0-9]+(-[a-z0-9]+)+-[0-9]+$")
    )]
    pub region: String,
    #[schemars(length(min = 1, max = 255), regex(pattern = r"^[^\x00-\x1f\x7f]+$"))]
    pub auto_scaling_group_name: String,
}

/// An Azure Virtual Machine Scale Set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AzureGroup {
    #[schemars(
        length(min = 36, max = 36),
        regex(
            pattern = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
        )
    )]
    pub subscription_id: String,
    #[schemars(
        length(min = 1, max = 90),
        regex(pattern = r"^[-A-Za-z0-9_.()]*[-A-Za-z0-9_()]$")
    )]
    pub resource_group: String,
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = r"^[A-Za-z0-9_]([-A-Za-z0-9_.]*[A-Za-z0-9_])?$")
    )]
    pub scale_set_name: String,
}

/// A GCP Managed Instance Group: zonal (`zone`) or regional (`region`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [{
    "rule": "has(self.zone) != has(self.region)",
    "message": "set exactly one of zone (zonal group) or region (regional group)"
}]))]
pub struct GcpGroup {
    #[schemars(
        length(min = 6, max = 94),
        regex(pattern = r"^([a-z0-9.-]+:)?[a-z][-a-z0-9]{4,28}[a-z0-9]$")
    )]
    pub project: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub zone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub region: Option<String>,
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub instance_group_manager: String,
}

/// A group of the simulated cloud (demo and tests).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SimGroup {
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub group: String,
}

/// One application on the group's VMs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadSpec {
    /// A DNS label, unique within the mirror; part of each entry's name.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    /// Labels of the entries' `spec.labels` and metadata (Istio selects on these).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub labels: BTreeMap<String, String>,
    /// Annotations of the entries' metadata (at most 32, 16 KiB in all; keys
    /// under istio.io/ are istiod's and refused).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub annotations: BTreeMap<String, String>,
    /// Port name to port number.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub ports: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    /// An Istio WorkloadGroup in this namespace giving defaults (metadata labels and
    /// annotations, template ports, serviceAccount, network, weight); the fields
    /// above override them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub workload_group: Option<String>,
    /// A Service or ServiceEntry that selects this workload's entries (and
    /// pods with the same labels) by the workload's labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServiceSpec>,
}

/// The service meshmirror writes for one workload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    /// `Service` (a Kubernetes Service; Istio adds the entries to its
    /// endpoints) or `ServiceEntry` (`MESH_INTERNAL`, `STATIC`).
    pub kind: ServiceKind,
    /// The object's name; the workload's name when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: Option<String>,
    /// ServiceEntry hosts; `<name>.<namespace>.svc.cluster.local` when unset.
    /// Each must be `<name>.<this namespace>.svc.<domain>`: a ServiceEntry's
    /// host is seen by the whole mesh.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), inner(length(min = 1, max = 253)))]
    pub hosts: Vec<String>,
    /// Per workload port name: the port clients use (the workload's port
    /// when unset) and the protocol (from the port's name when unset,
    /// Istio's `<protocol>[-<suffix>]` convention).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[schemars(extend("maxProperties" = 32))]
    pub ports: BTreeMap<String, ServicePortSpec>,
}

#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum ServiceKind {
    Service,
    ServiceEntry,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServicePortSpec {
    /// The service port (1-65535).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
    /// One of Istio's protocols: HTTP, HTTPS, HTTP2, GRPC, GRPC-Web, MONGO,
    /// MYSQL, REDIS, TCP, TLS, UDP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 16))]
    pub protocol: Option<String>,
}

/// The Sidecar of the group's VM proxies.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SidecarSpec {
    /// Labels the VMs' proxies carry: istio-agent reports the labels of its
    /// `ISTIO_METAJSON_LABELS` (in `cluster.env`, which `istioctl x workload
    /// entry configure` fills from the WorkloadGroup's `metadata.labels`).
    #[schemars(extend("minProperties" = 1, "maxProperties" = 32))]
    pub workload_selector: BTreeMap<String, String>,
    /// Egress hosts (`namespace/dnsName`); `./*` and `istio-system/*` when unset.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 3, max = 320)))]
    pub egress_hosts: Vec<String>,
    /// `REGISTRY_ONLY` or `ALLOW_ANY`; the mesh's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum OutboundTrafficPolicy {
    #[serde(rename = "REGISTRY_ONLY")]
    RegistryOnly,
    #[serde(rename = "ALLOW_ANY")]
    AllowAny,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum AddressFamily {
    #[default]
    #[serde(rename = "PrivateIPv4")]
    PrivateIpv4,
    #[serde(rename = "PublicIPv4")]
    PublicIpv4,
    #[serde(rename = "IPv6")]
    Ipv6,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CidrNetwork {
    /// e.g. `10.0.0.0/16` or `2001:db8::/32`.
    #[schemars(length(min = 1, max = 43))]
    pub cidr: String,
    #[schemars(length(min = 1, max = 63))]
    pub network: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LocalityMode {
    #[default]
    Auto,
    None,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum HealthMode {
    /// No health checks: Istio treats every entry as healthy.
    #[default]
    None,
    /// The VM's istio-agent reports health to istiod
    /// (`proxy.istio.io/health-checks-enabled: "true"`).
    Agent,
    /// meshmirror writes the `Healthy` condition from the cloud's health view.
    Cloud,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncSpec {
    /// How often to poll the cloud, e.g. `30s`, `2m` (at least 5s).
    #[serde(default = "default_interval")]
    #[schemars(length(max = 32), regex(pattern = r"^([0-9]+(ms|s|m|h))+$"))]
    pub interval: String,
    #[serde(default)]
    pub policy: SyncPolicy,
    /// The most entries one pass may delete; the rest wait for the next pass.
    #[serde(default = "default_max_deletes")]
    #[schemars(range(min = 1))]
    pub max_deletes_per_pass: u32,
}

impl Default for SyncSpec {
    fn default() -> Self {
        SyncSpec {
            interval: default_interval(),
            policy: SyncPolicy::default(),
            max_deletes_per_pass: default_max_deletes(),
        }
    }
}

fn default_interval() -> String {
    "30s".into()
}

fn default_max_deletes() -> u32 {
    100
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum SyncPolicy {
    /// Create, update and delete.
    #[default]
    Sync,
    /// Never delete.
    UpsertOnly,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleSpec {
    /// Seconds between removing a terminating instance's entries and letting
    /// its pre-termination hook continue, so that in-flight requests drain.
    #[serde(default = "default_drain")]
    #[schemars(range(max = 86400))]
    pub drain_seconds: u32,
    /// Seconds a launching instance may take to become healthy.
    #[serde(default = "default_launch_timeout")]
    #[schemars(range(max = 86400))]
    pub launch_timeout_seconds: u32,
    /// What to answer a launch hook when the timeout passes.
    #[serde(default)]
    pub on_launch_timeout: LaunchTimeoutOutcome,
    /// The pre-termination hook meshmirror answers (AWS lifecycle hook name);
    /// hooks not named here belong to someone else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub terminate_hook: Option<String>,
    /// The launch hook meshmirror answers (AWS lifecycle hook name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 255))]
    pub launch_hook: Option<String>,
}

impl Default for LifecycleSpec {
    fn default() -> Self {
        LifecycleSpec {
            drain_seconds: default_drain(),
            launch_timeout_seconds: default_launch_timeout(),
            on_launch_timeout: LaunchTimeoutOutcome::default(),
            terminate_hook: None,
            launch_hook: None,
        }
    }
}

fn default_drain() -> u32 {
    20
}

fn default_launch_timeout() -> u32 {
    300
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LaunchTimeoutOutcome {
    #[default]
    Abandon,
    Continue,
}

/// What the last pass found and did.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScalingGroupMirrorStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The provider's name (for `kubectl get`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<String>,
    /// The group's full cloud id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Members the cloud reported in the last successful pass.
    #[serde(default)]
    pub members: u32,
    /// WorkloadEntries this mirror owns.
    #[serde(default)]
    pub entries: u32,
    /// Members that got no entry (no address of the chosen family, duplicate address).
    #[serde(default)]
    pub skipped: u32,
    /// The last pass that changed entries or status. Unchanged passes write
    /// nothing, so this is not a heartbeat: the metric
    /// `meshmirror_last_success_timestamp_seconds` is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_time: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}

/// A status condition in the Kubernetes convention.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

#[cfg(test)]
mod tests {
    use kube::CustomResourceExt;

    use super::*;

    #[test]
    fn defaults_fill_a_minimal_spec() {
        let spec: ScalingGroupMirrorSpec =
            serde_yaml::from_str("provider: {sim: {group: web}}\nworkloads: [{name: app}]\n")
                .unwrap();
        assert_eq!(spec.address, AddressFamily::PrivateIpv4);
        assert_eq!(spec.sync.interval, "30s");
        assert_eq!(spec.sync.max_deletes_per_pass, 100);
        assert_eq!(spec.sync.policy, SyncPolicy::Sync);
        assert_eq!(spec.lifecycle.drain_seconds, 20);
        assert_eq!(spec.lifecycle.launch_timeout_seconds, 300);
        assert_eq!(spec.health, HealthMode::None);
        assert_eq!(spec.locality, LocalityMode::Auto);
        assert!(!spec.paused);
    }

    #[test]
    fn crd_has_status_shortname_and_columns() {
        let crd = serde_json::to_value(ScalingGroupMirror::crd()).unwrap();
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1alpha1");
        assert!(version["subresources"]["status"].is_object());
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "sgm");
        let columns: Vec<&str> = version["additionalPrinterColumns"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            columns,
            ["Provider", "Group", "Members", "Entries", "Ready", "Age"]
        );
    }
}
