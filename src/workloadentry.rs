//! The Istio objects meshmirror writes (WorkloadEntry) and reads (WorkloadGroup),
//! as plain serde types over the fields it uses.

use std::collections::BTreeMap;

use kube::api::{ApiResource, GroupVersionKind};
use serde::{Deserialize, Serialize};

/// Labels and annotations that mark and describe meshmirror's entries.
pub mod keys {
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGER: &str = "meshmirror";
    pub const MIRROR: &str = "meshmirror.io/mirror";
    pub const WORKLOAD: &str = "meshmirror.io/workload";
    pub const PROVIDER: &str = "meshmirror.io/provider";
    pub const WORKLOAD_NAME: &str = "service.istio.io/workload-name";
    pub const INSTANCE_ID: &str = "meshmirror.io/instance-id";
    pub const GROUP: &str = "meshmirror.io/group";
    /// Hash of the applied config, so a pass can tell "nothing to do" without
    /// comparing every field istiod may have added.
    pub const APPLIED_HASH: &str = "meshmirror.io/applied-hash";
    pub const HEALTH_CHECKS: &str = "proxy.istio.io/health-checks-enabled";
    /// Written by istiod's auto-registration; meshmirror never sets it.
    pub const AUTO_REGISTRATION_GROUP: &str = "istio.io/autoRegistrationGroup";
}

/// The server-side-apply field manager: one for every write meshmirror makes.
pub const FIELD_MANAGER: &str = "meshmirror";

/// Which served version of `networking.istio.io` WorkloadEntries are written as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EntryVersion {
    /// Istio 1.22 and later.
    #[default]
    V1,
    /// Older meshes.
    V1beta1,
}

impl EntryVersion {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryVersion::V1 => "v1",
            EntryVersion::V1beta1 => "v1beta1",
        }
    }

    pub fn workload_entries(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("networking.istio.io", self.as_str(), "WorkloadEntry"),
            "workloadentries",
        )
    }

    pub fn workload_groups(self) -> ApiResource {
        ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("networking.istio.io", self.as_str(), "WorkloadGroup"),
            "workloadgroups",
        )
    }
}

/// `spec` of a WorkloadEntry, as Istio defines it (the fields meshmirror sets).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadEntrySpec {
    #[serde(default)]
    pub address: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ports: BTreeMap<String, u32>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locality: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account: Option<String>,
}

/// The defaults a WorkloadGroup gives its entries: `metadata` labels and
/// annotations, and `template`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupTemplate {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub template: WorkloadEntrySpec,
}

impl GroupTemplate {
    /// Reads a WorkloadGroup's `spec` (`metadata` and `template`).
    pub fn from_spec(spec: &serde_json::Value) -> Result<Self, serde_json::Error> {
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Meta {
            labels: BTreeMap<String, String>,
            annotations: BTreeMap<String, String>,
        }
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Spec {
            metadata: Meta,
            template: WorkloadEntrySpec,
        }
        let spec: Spec = serde_json::from_value(spec.clone())?;
        Ok(GroupTemplate {
            labels: spec.metadata.labels,
            annotations: spec.metadata.annotations,
            template: spec.template,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_workload_group() {
        let spec = serde_json::json!({
            "metadata": {"labels": {"app": "reviews"}, "annotations": {"a": "b"}},
            "template": {"ports": {"http": 8080}, "serviceAccount": "reviews", "network": "vm-net", "weight": 3},
            "probe": {"httpGet": {"port": 8080}}
        });
        let group = GroupTemplate::from_spec(&spec).unwrap();
        assert_eq!(group.labels["app"], "reviews");
        assert_eq!(group.annotations["a"], "b");
        assert_eq!(group.template.ports["http"], 8080);
        assert_eq!(group.template.service_account.as_deref(), Some("reviews"));
        assert_eq!(group.template.network.as_deref(), Some("vm-net"));
        assert_eq!(group.template.weight, Some(3));
    }
}

/// An entry this mirror owns, as read from the API server.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ActualEntry {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: WorkloadEntrySpec,
    /// The `Healthy` condition's status, when there is one.
    pub healthy: Option<bool>,
}

impl ActualEntry {
    /// The instance the entry was written for.
    pub fn instance_id(&self) -> Option<&str> {
        self.annotations.get(keys::INSTANCE_ID).map(String::as_str)
    }
}
