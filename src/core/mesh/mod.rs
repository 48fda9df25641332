//! The rest of a VM's onboarding, beside its WorkloadEntries: a Service or
//! ServiceEntry per workload that asks for one, and one Sidecar for the
//! group's VM proxies. Pure: from the spec and the workloads (their
//! WorkloadGroups folded in) to each object's full body, and from the
//! objects a mirror owns to the writes that make them so.

mod checks;
mod ports;

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

pub use checks::check_spec;
use checks::{Selectable, check_inbound_ports, check_selectors};
pub use ports::{ServicePort, protocol_from_name, protocol_named, service_ports};

use crate::core::config::SpecError;
use crate::core::desired::ResolvedWorkload;
use crate::crd::{ScalingGroupMirrorSpec, ServiceKind, ServiceSpec, SidecarSpec};
use crate::workloadentry::keys;

/// The kinds of mesh object a mirror may own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MeshKind {
    Service,
    ServiceEntry,
    Sidecar,
}

impl MeshKind {
    pub const ALL: [MeshKind; 3] = [MeshKind::Service, MeshKind::ServiceEntry, MeshKind::Sidecar];

    pub fn kind(self) -> &'static str {
        match self {
            MeshKind::Service => "Service",
            MeshKind::ServiceEntry => "ServiceEntry",
            MeshKind::Sidecar => "Sidecar",
        }
    }

    /// `(group, version, plural)` as the API server serves it.
    pub fn resource(self) -> (&'static str, &'static str, &'static str) {
        match self {
            MeshKind::Service => ("", "v1", "services"),
            MeshKind::ServiceEntry => ("networking.istio.io", "v1", "serviceentries"),
            MeshKind::Sidecar => ("networking.istio.io", "v1", "sidecars"),
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            MeshKind::Service => "v1",
            MeshKind::ServiceEntry | MeshKind::Sidecar => "networking.istio.io/v1",
        }
    }
}

impl From<ServiceKind> for MeshKind {
    fn from(kind: ServiceKind) -> Self {
        match kind {
            ServiceKind::Service => MeshKind::Service,
            ServiceKind::ServiceEntry => MeshKind::ServiceEntry,
        }
    }
}

/// A set of [`MeshKind`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MeshKinds(u8);

impl MeshKinds {
    pub const ALL: MeshKinds = MeshKinds(0b111);

    pub fn with(self, kind: MeshKind) -> MeshKinds {
        MeshKinds(self.0 | Self::bit(kind))
    }

    pub fn union(self, other: MeshKinds) -> MeshKinds {
        MeshKinds(self.0 | other.0)
    }

    pub fn contains(self, kind: MeshKind) -> bool {
        self.0 & Self::bit(kind) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = MeshKind> {
        MeshKind::ALL.into_iter().filter(move |k| self.contains(*k))
    }

    fn bit(kind: MeshKind) -> u8 {
        1 << kind as u8
    }
}

impl FromIterator<MeshKind> for MeshKinds {
    fn from_iter<I: IntoIterator<Item = MeshKind>>(iter: I) -> Self {
        iter.into_iter().fold(MeshKinds::default(), MeshKinds::with)
    }
}

/// One object as meshmirror wants it.
#[derive(Clone, Debug, PartialEq)]
pub struct MeshObject {
    pub kind: MeshKind,
    pub name: String,
    /// meshmirror's labels (and the workload's, for a service).
    pub labels: BTreeMap<String, String>,
    pub spec: Value,
    /// Hash of the kind, labels and spec, kept in an annotation: equal
    /// hashes mean nothing to write.
    pub hash: String,
}

/// An object the mirror owns, as read from the API server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ActualMesh {
    pub kind: MeshKind,
    pub name: String,
    pub uid: String,
    /// Its applied-hash annotation.
    pub hash: Option<String>,
}

/// The writes that bring the owned objects in line.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeshWrites {
    pub creates: Vec<MeshObject>,
    pub updates: Vec<MeshObject>,
    /// Owned objects no longer wanted.
    pub deletes: Vec<ActualMesh>,
    /// Every object wanted, as `Kind name` (for status).
    pub wanted: Vec<String>,
}

impl MeshWrites {
    pub fn is_empty(&self) -> bool {
        self.creates.is_empty() && self.updates.is_empty() && self.deletes.is_empty()
    }

    pub fn len(&self) -> usize {
        self.creates.len() + self.updates.len() + self.deletes.len()
    }
}

/// The writes that turn `actual` (the kinds listed in `listed`) into
/// `desired`. Objects of a kind that could not be listed are left alone.
pub fn plan(desired: Vec<MeshObject>, actual: &[ActualMesh], listed: MeshKinds) -> MeshWrites {
    let mut out = MeshWrites {
        wanted: desired
            .iter()
            .map(|o| format!("{} {}", o.kind.kind(), o.name))
            .collect(),
        ..MeshWrites::default()
    };
    let wanted: BTreeSet<(MeshKind, &str)> =
        desired.iter().map(|o| (o.kind, o.name.as_str())).collect();
    out.deletes = actual
        .iter()
        .filter(|a| listed.contains(a.kind) && !wanted.contains(&(a.kind, a.name.as_str())))
        .cloned()
        .collect();
    for object in desired {
        if !listed.contains(object.kind) {
            continue;
        }
        match actual
            .iter()
            .find(|a| a.kind == object.kind && a.name == object.name)
        {
            None => out.creates.push(object),
            Some(a) if a.hash.as_deref() != Some(object.hash.as_str()) => out.updates.push(object),
            Some(_) => {}
        }
    }
    out
}

/// The kinds `spec` asks for.
pub fn wanted_kinds(spec: &ScalingGroupMirrorSpec) -> MeshKinds {
    let services = spec
        .workloads
        .iter()
        .filter_map(|w| w.service.as_ref())
        .map(|s| MeshKind::from(s.kind));
    let sidecar = spec.sidecar.as_ref().map(|_| MeshKind::Sidecar);
    services.chain(sidecar).collect()
}

/// The hosts of a ServiceEntry named `name`.
pub fn hosts_of(service: &ServiceSpec, name: &str, namespace: &str) -> Vec<String> {
    if service.hosts.is_empty() {
        vec![format!("{name}.{namespace}.svc.cluster.local")]
    } else {
        service.hosts.clone()
    }
}

/// The mirror whose mesh objects are computed.
#[derive(Clone, Copy, Debug)]
pub struct MeshMirror<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub spec: &'a ScalingGroupMirrorSpec,
}

/// The objects `mirror` wants, sorted by kind and name; `workloads` are the
/// spec's workloads resolved, in order. Fails when a selector could select
/// another workload's entries or (with a Sidecar) two workloads share a port.
pub fn desired(
    mirror: MeshMirror<'_>,
    workloads: &[ResolvedWorkload],
) -> Result<Vec<MeshObject>, SpecError> {
    let spec = mirror.spec;
    let selectable: Vec<Selectable<'_>> = workloads
        .iter()
        .enumerate()
        .map(|(index, w)| Selectable {
            index,
            name: &w.name,
            labels: &w.labels,
            workload_name: &w.workload_name_label,
            has_service: spec.workloads[index].service.is_some(),
        })
        .collect();
    let copy_tags: BTreeSet<&str> = spec.copy_tags.iter().map(String::as_str).collect();
    check_selectors(&selectable, &copy_tags)?;

    let mut out = Vec::new();
    for (index, (w, resolved)) in spec.workloads.iter().zip(workloads).enumerate() {
        let Some(service) = &w.service else { continue };
        let field = format!("spec.workloads[{index}]");
        let ports = service_ports(&field, &resolved.ports, &service.ports)?;
        out.push(service_object(mirror, resolved, service, &ports));
    }
    if let Some(sidecar) = &spec.sidecar {
        let listening: Vec<(usize, &str, &BTreeMap<String, u32>)> = workloads
            .iter()
            .enumerate()
            .map(|(i, w)| (i, w.name.as_str(), &w.ports))
            .collect();
        check_inbound_ports(&listening)?;
        out.push(sidecar_object(mirror, sidecar, workloads));
    }
    out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    Ok(out)
}

fn service_object(
    mirror: MeshMirror<'_>,
    workload: &ResolvedWorkload,
    service: &ServiceSpec,
    ports: &[ServicePort],
) -> MeshObject {
    let name = service
        .name
        .clone()
        .unwrap_or_else(|| workload.name.clone());
    let kind = MeshKind::from(service.kind);
    let spec = match service.kind {
        ServiceKind::Service => json!({
            "selector": workload.labels,
            "ports": ports.iter().map(|p| {
                let mut port = json!({
                    "name": p.name,
                    "port": p.number,
                    "targetPort": p.target,
                    "protocol": if p.protocol == Some("UDP") { "UDP" } else { "TCP" },
                });
                // Istio reads the protocol from the name; an explicit one
                // that the name does not say goes in appProtocol.
                if let Some(protocol) = p.protocol.filter(|proto| Some(*proto) != protocol_from_name(&p.name)) {
                    port["appProtocol"] = json!(protocol.to_ascii_lowercase());
                }
                port
            }).collect::<Vec<_>>(),
        }),
        ServiceKind::ServiceEntry => json!({
            "hosts": hosts_of(service, &name, mirror.namespace),
            "location": "MESH_INTERNAL",
            "resolution": "STATIC",
            "ports": ports.iter().map(|p| json!({
                "name": p.name,
                "number": p.number,
                "targetPort": p.target,
                "protocol": p.protocol.unwrap_or("TCP"),
            })).collect::<Vec<_>>(),
            "workloadSelector": {"labels": workload.labels},
        }),
    };
    let mut labels = owned_labels(mirror.name);
    labels.insert(keys::WORKLOAD.into(), workload.name.clone());
    object(kind, name, labels, spec)
}

fn sidecar_object(
    mirror: MeshMirror<'_>,
    sidecar: &SidecarSpec,
    workloads: &[ResolvedWorkload],
) -> MeshObject {
    let mut ingress: Vec<(u32, Value)> = workloads
        .iter()
        .zip(&mirror.spec.workloads)
        .flat_map(|(w, spec)| w.ports.iter().map(move |port| (spec, port)))
        .map(|(spec, (name, port))| {
            let explicit = spec
                .service
                .as_ref()
                .and_then(|s| s.ports.get(name))
                .and_then(|p| p.protocol.as_deref())
                .and_then(protocol_named);
            let protocol = explicit
                .or_else(|| protocol_from_name(name))
                .unwrap_or("TCP");
            let listener = json!({
                "port": {"number": port, "name": name, "protocol": protocol},
                "defaultEndpoint": format!("127.0.0.1:{port}"),
            });
            (*port, listener)
        })
        .collect();
    ingress.sort_by_key(|(port, _)| *port);
    let egress_hosts: Vec<String> = if sidecar.egress_hosts.is_empty() {
        vec!["./*".into(), "istio-system/*".into()]
    } else {
        sidecar.egress_hosts.clone()
    };
    let mut spec = json!({
        "workloadSelector": {"labels": sidecar.workload_selector},
        "ingress": ingress.into_iter().map(|(_, l)| l).collect::<Vec<_>>(),
        "egress": [{"hosts": egress_hosts}],
    });
    if let Some(policy) = sidecar.outbound_traffic_policy {
        spec["outboundTrafficPolicy"] = json!({"mode": policy});
    }
    object(
        MeshKind::Sidecar,
        mirror.name.to_string(),
        owned_labels(mirror.name),
        spec,
    )
}

fn owned_labels(mirror: &str) -> BTreeMap<String, String> {
    crate::core::ownership::labels(mirror).into_iter().collect()
}

fn object(
    kind: MeshKind,
    name: String,
    labels: BTreeMap<String, String>,
    spec: Value,
) -> MeshObject {
    let hash = crate::core::desired::short_hash(&(kind.kind(), &labels, &spec));
    MeshObject {
        kind,
        name,
        labels,
        spec,
        hash,
    }
}

#[cfg(test)]
mod tests;
