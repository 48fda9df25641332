//! The kinds the server knows: CustomResourceDefinitions loaded from YAML and a
//! few built-in kinds, with their served versions and discovery names.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::Value;

use crate::schema::Validator;

/// Index of a resource in [`Registry::resources`].
pub type ResId = usize;

/// A CRD `additionalPrinterColumns` entry.
#[derive(Clone, Debug)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// One served version of a resource.
#[derive(Debug)]
pub struct VersionDef {
    pub name: String,
    /// None for built-in kinds, which keep every field.
    pub validator: Option<Arc<Validator>>,
    /// The merge structure server-side apply uses (None: schemaless merge).
    pub ssa_schema: Option<Arc<crate::ssa::Schema>>,
    pub status_subresource: bool,
    pub columns: Vec<PrinterColumn>,
    /// The CRD's `openAPIV3Schema`, published in `/openapi/v3` (None for
    /// built-in kinds, whose schemas are a fixture).
    pub schema: Option<Arc<Value>>,
}

#[derive(Debug)]
pub struct ResourceDef {
    /// Empty for the core group.
    pub group: String,
    pub plural: String,
    pub singular: String,
    pub kind: String,
    pub list_kind: String,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    pub namespaced: bool,
    /// Served versions, highest priority first (the preferred version first).
    pub versions: Vec<VersionDef>,
    pub storage_version: String,
    /// A custom resource: strategic merge patch is refused, as the real server does.
    pub custom: bool,
    /// PUT on a missing object creates it (true for Events and Leases).
    pub create_on_update: bool,
    pub storage: Storage,
}

/// How a resource's objects are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// In storage of its own, in `storage_version`; versions differ in
    /// `apiVersion` only (a CRD's conversion strategy `None`).
    Own,
    /// Core v1 Events, kept in the shape of the real server's Event type.
    CoreEvents,
    /// events.k8s.io Events: kept with the core v1 Events (as the real
    /// server shares one storage), converted on the way in and out.
    EventsV1,
}

impl Storage {
    /// Either Event kind.
    pub fn is_event(self) -> bool {
        matches!(self, Storage::CoreEvents | Storage::EventsV1)
    }
}

impl ResourceDef {
    /// `plural.group` (just `plural` in the core group), as error messages name it.
    pub fn group_resource(&self) -> String {
        if self.group.is_empty() {
            self.plural.clone()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// `Kind.group` (just `Kind` in the core group).
    pub fn group_kind(&self) -> String {
        if self.group.is_empty() {
            self.kind.clone()
        } else {
            format!("{}.{}", self.kind, self.group)
        }
    }

    pub fn api_version(&self, version: &str) -> String {
        if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        }
    }

    pub fn storage_api_version(&self) -> String {
        self.api_version(&self.storage_version)
    }

    pub fn version(&self, name: &str) -> Option<&VersionDef> {
        self.versions.iter().find(|v| v.name == name)
    }

    #[cfg(test)]
    pub fn test_def() -> Self {
        ResourceDef {
            group: "example.com".into(),
            plural: "widgets".into(),
            singular: "widget".into(),
            kind: "Widget".into(),
            list_kind: "WidgetList".into(),
            short_names: vec![],
            categories: vec![],
            namespaced: true,
            versions: vec![VersionDef {
                name: "v1".into(),
                validator: None,
                ssa_schema: None,
                status_subresource: true,
                columns: vec![],
                schema: None,
            }],
            storage_version: "v1".into(),
            custom: true,
            create_on_update: false,
            storage: Storage::Own,
        }
    }
}

/// A CRD that cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("cannot parse CRD YAML: {0}")]
    Yaml(#[from] serde_yaml::Error),
    #[error("cannot read CRD file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("CRD {name}: {message}")]
    Invalid { name: String, message: String },
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CrdDoc {
    kind: Option<String>,
    #[serde(default)]
    metadata: Value,
    spec: Option<CrdSpec>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CrdSpec {
    group: String,
    names: CrdNames,
    scope: String,
    versions: Vec<CrdVersion>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CrdNames {
    plural: String,
    #[serde(default)]
    singular: Option<String>,
    kind: String,
    #[serde(default)]
    list_kind: Option<String>,
    #[serde(default)]
    short_names: Vec<String>,
    #[serde(default)]
    categories: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CrdVersion {
    name: String,
    served: bool,
    storage: bool,
    #[serde(default)]
    schema: Option<Value>,
    #[serde(default)]
    subresources: Option<Value>,
    #[serde(default)]
    additional_printer_columns: Vec<Value>,
}

/// Every `CustomResourceDefinition` document of a (multi-document) YAML text;
/// other documents are skipped.
pub fn parse_crds(yaml: &str) -> Result<Vec<ResourceDef>, CrdError> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc)?;
        if value.is_null() {
            continue;
        }
        let crd: CrdDoc = serde_json::from_value(value).map_err(|e| CrdError::Invalid {
            name: "?".into(),
            message: e.to_string(),
        })?;
        if crd.kind.as_deref() != Some("CustomResourceDefinition") {
            continue;
        }
        let name = crd.metadata["name"].as_str().unwrap_or("?").to_string();
        let invalid = |message: String| CrdError::Invalid {
            name: name.clone(),
            message,
        };
        let spec = crd.spec.ok_or_else(|| invalid("no spec".into()))?;
        let storage: Vec<&CrdVersion> = spec.versions.iter().filter(|v| v.storage).collect();
        if storage.len() != 1 {
            return Err(invalid(format!(
                "exactly one storage version is required, found {}",
                storage.len()
            )));
        }
        let storage_version = storage[0].name.clone();
        let mut versions = Vec::new();
        for v in spec.versions.iter().filter(|v| v.served) {
            let schema = v
                .schema
                .as_ref()
                .and_then(|s| s.get("openAPIV3Schema"))
                .ok_or_else(|| invalid(format!("version {} has no openAPIV3Schema", v.name)))?;
            let validator = Validator::new(schema).map_err(|e| invalid(e.to_string()))?;
            let columns = v
                .additional_printer_columns
                .iter()
                .map(|c| PrinterColumn {
                    name: c["name"].as_str().unwrap_or_default().to_string(),
                    type_: c["type"].as_str().unwrap_or("string").to_string(),
                    format: c["format"].as_str().unwrap_or_default().to_string(),
                    description: c["description"].as_str().unwrap_or_default().to_string(),
                    priority: c["priority"].as_i64().unwrap_or(0),
                    json_path: c["jsonPath"].as_str().unwrap_or_default().to_string(),
                })
                .collect();
            let status_subresource = v
                .subresources
                .as_ref()
                .is_some_and(|s| s.get("status").is_some());
            versions.push(VersionDef {
                name: v.name.clone(),
                validator: Some(Arc::new(validator)),
                // With a status subresource, server-side apply ignores (neither
                // owns nor conflicts on) status in main-resource writes and
                // spec in status writes, as the real strategy's reset fields.
                ssa_schema: Some(Arc::new(
                    crate::ssa::Schema::from_openapi_v3(schema)
                        .with_status_subresource(status_subresource),
                )),
                status_subresource,
                columns,
                schema: Some(Arc::new(schema.clone())),
            });
        }
        versions.sort_by(|a, b| version_priority(&a.name, &b.name));
        let names = spec.names;
        out.push(ResourceDef {
            group: spec.group,
            singular: names.singular.unwrap_or_else(|| names.kind.to_lowercase()),
            list_kind: names
                .list_kind
                .unwrap_or_else(|| format!("{}List", names.kind)),
            plural: names.plural,
            kind: names.kind,
            short_names: names.short_names,
            categories: names.categories,
            namespaced: spec.scope == "Namespaced",
            versions,
            storage_version,
            custom: true,
            create_on_update: false,
            storage: Storage::Own,
        });
    }
    Ok(out)
}

/// Kubernetes version ordering: GA before beta before alpha, higher numbers
/// first; names that are not Kubernetes versions last, alphabetically.
pub fn version_priority(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(v: &str) -> (u8, i64, i64, String) {
        let parse = || -> Option<(u8, i64, i64)> {
            let rest = v.strip_prefix('v')?;
            let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
            let major: i64 = digits.parse().ok()?;
            let rest = &rest[digits.len()..];
            if rest.is_empty() {
                return Some((0, -major, 0));
            }
            let (class, minor) = if let Some(m) = rest.strip_prefix("beta") {
                (1, m)
            } else if let Some(m) = rest.strip_prefix("alpha") {
                (2, m)
            } else {
                return None;
            };
            let minor: i64 = minor.parse().ok()?;
            Some((class, -major, -minor))
        };
        match parse() {
            Some((c, m, n)) => (c, m, n, String::new()),
            None => (3, 0, 0, v.to_string()),
        }
    }
    key(a).cmp(&key(b))
}

fn builtin(
    group: &str,
    plural: &str,
    kind: &str,
    namespaced: bool,
    short_names: &[&str],
) -> ResourceDef {
    ResourceDef {
        group: group.into(),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        short_names: short_names.iter().map(|s| s.to_string()).collect(),
        categories: vec![],
        namespaced,
        versions: vec![VersionDef {
            name: "v1".into(),
            validator: None,
            ssa_schema: None,
            status_subresource: false,
            columns: vec![],
            schema: None,
        }],
        storage_version: "v1".into(),
        custom: false,
        create_on_update: true,
        storage: Storage::Own,
    }
}

/// v1 Namespace, v1 Event, v1 Service, events.k8s.io/v1 Event,
/// coordination.k8s.io/v1 Lease.
pub fn builtins() -> Vec<ResourceDef> {
    let mut namespaces = builtin("", "namespaces", "Namespace", false, &["ns"]);
    namespaces.versions[0].status_subresource = true;
    namespaces.create_on_update = false;
    // What the Service strategy and storage do is module `services`'.
    let mut services = builtin("", "services", "Service", true, &["svc"]);
    services.versions[0].status_subresource = true;
    services.versions[0].ssa_schema = Some(super::services::ssa_schema());
    services.categories = vec!["all".into()];
    services.create_on_update = false;
    let mut core_events = builtin("", "events", "Event", true, &["ev"]);
    core_events.storage = Storage::CoreEvents;
    let mut events = builtin("events.k8s.io", "events", "Event", true, &["ev"]);
    events.storage = Storage::EventsV1;
    vec![
        namespaces,
        core_events,
        services,
        events,
        builtin("coordination.k8s.io", "leases", "Lease", true, &[]),
    ]
}

/// All resources served, looked up by group, version and plural.
#[derive(Debug)]
pub struct Registry {
    pub resources: Vec<ResourceDef>,
    /// Where each resource's objects are stored (its own index, but the core
    /// Events' for events.k8s.io Events).
    slots: Vec<ResId>,
}

impl Registry {
    /// Built-ins plus `crds`; a later CRD for the same group and plural replaces
    /// an earlier one.
    pub fn new(crds: Vec<ResourceDef>) -> Self {
        let mut resources = builtins();
        for crd in crds {
            resources.retain(|r| !(r.group == crd.group && r.plural == crd.plural));
            resources.push(crd);
        }
        let core_events = resources
            .iter()
            .position(|r| r.storage == Storage::CoreEvents);
        let slots = resources
            .iter()
            .enumerate()
            .map(|(i, r)| match (r.storage, core_events) {
                (Storage::EventsV1, Some(core)) => core,
                _ => i,
            })
            .collect();
        Registry { resources, slots }
    }

    /// The storage slot of `res`'s objects.
    pub fn slot(&self, res: ResId) -> ResId {
        self.slots[res]
    }

    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<ResId> {
        self.resources
            .iter()
            .position(|r| r.group == group && r.plural == plural && r.version(version).is_some())
    }

    /// Whether any resource serves `group`/`version`.
    pub fn serves(&self, group: &str, version: &str) -> bool {
        self.resources
            .iter()
            .any(|r| r.group == group && r.version(version).is_some())
    }

    /// Groups other than core with their versions, highest priority first.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut groups: Vec<(String, Vec<String>)> = Vec::new();
        for r in self.resources.iter().filter(|r| !r.group.is_empty()) {
            let idx = match groups.iter().position(|(g, _)| *g == r.group) {
                Some(i) => i,
                None => {
                    groups.push((r.group.clone(), Vec::new()));
                    groups.len() - 1
                }
            };
            for v in &r.versions {
                if !groups[idx].1.contains(&v.name) {
                    groups[idx].1.push(v.name.clone());
                }
            }
        }
        for (_, versions) in &mut groups {
            versions.sort_by(|a, b| version_priority(a, b));
        }
        groups
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_kubernetes() {
        let mut v = vec!["v1alpha3", "v1beta1", "v2", "v1", "foo", "v10beta2", "v10"];
        v.sort_by(|a, b| version_priority(a, b));
        assert_eq!(
            v,
            ["v10", "v2", "v1", "v10beta2", "v1beta1", "v1alpha3", "foo"]
        );
    }

    #[test]
    fn istio_crd_parses_with_all_versions() {
        let crds = parse_crds(include_str!("../../fixtures/workloadentry-crd.yaml")).unwrap();
        assert_eq!(crds.len(), 1);
        let we = &crds[0];
        assert_eq!(we.kind, "WorkloadEntry");
        assert_eq!(we.storage_version, "v1");
        let names: Vec<&str> = we.versions.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["v1", "v1beta1", "v1alpha3"]);
        assert!(we.versions.iter().all(|v| v.status_subresource));
        assert_eq!(we.short_names, ["we"]);
        assert!(we.namespaced);
        assert_eq!(we.versions[0].columns[1].json_path, ".spec.address");
    }

    #[test]
    fn services_are_built_in_with_their_status_and_apply_schema() {
        let reg = Registry::new(Vec::new());
        let svc = &reg.resources[reg.find("", "v1", "services").unwrap()];
        assert_eq!(
            (
                svc.kind.as_str(),
                svc.list_kind.as_str(),
                svc.singular.as_str()
            ),
            ("Service", "ServiceList", "service")
        );
        assert!(svc.namespaced && !svc.custom && !svc.create_on_update);
        assert_eq!(svc.short_names, ["svc"]);
        assert_eq!(svc.categories, ["all"]);
        assert_eq!(svc.storage, Storage::Own);
        let v1 = &svc.versions[0];
        assert!(v1.status_subresource && v1.validator.is_none());
        assert!(v1.ssa_schema.is_some(), "ports keyed by port and protocol");
    }

    #[test]
    fn the_default_istio_crds_are_served_in_every_version() {
        let crds: Vec<ResourceDef> = crate::apiserver::ISTIO_CRDS
            .iter()
            .flat_map(|y| parse_crds(y).unwrap())
            .collect();
        // (kind, plural, shortNames, storage version): as the fixtures say.
        let want = [
            ("WorkloadEntry", "workloadentries", vec!["we"], "v1"),
            ("WorkloadGroup", "workloadgroups", vec!["wg"], "v1"),
            ("ServiceEntry", "serviceentries", vec!["se"], "v1"),
            ("Sidecar", "sidecars", vec![], "v1"),
        ];
        assert_eq!(crds.len(), want.len());
        for (crd, (kind, plural, short, storage)) in crds.iter().zip(want) {
            assert_eq!(
                (
                    crd.kind.as_str(),
                    crd.plural.as_str(),
                    crd.storage_version.as_str()
                ),
                (kind, plural, storage)
            );
            assert_eq!(crd.short_names, short, "{kind}");
            let versions: Vec<&str> = crd.versions.iter().map(|v| v.name.as_str()).collect();
            assert_eq!(versions, ["v1", "v1beta1", "v1alpha3"], "{kind}");
            assert!(crd.namespaced && crd.versions.iter().all(|v| v.status_subresource));
            assert!(crd.versions.iter().all(|v| v.validator.is_some()), "{kind}");
        }
    }

    #[test]
    fn later_crd_replaces_earlier_and_non_crd_docs_are_skipped() {
        let yaml = "kind: ConfigMap\n---\n".to_string()
            + include_str!("../../fixtures/workloadgroup-crd.yaml");
        let crds = parse_crds(&yaml).unwrap();
        assert_eq!(crds.len(), 1);
        let mut twice = parse_crds(&yaml).unwrap();
        twice.extend(crds);
        let reg = Registry::new(twice);
        let n = reg
            .resources
            .iter()
            .filter(|r| r.plural == "workloadgroups")
            .count();
        assert_eq!(n, 1);
        assert!(
            reg.find("networking.istio.io", "v1alpha3", "workloadgroups")
                .is_some()
        );
        assert!(reg.find("", "v1", "namespaces").is_some());
        assert!(
            reg.find("networking.istio.io", "v9", "workloadgroups")
                .is_none()
        );
    }
}
