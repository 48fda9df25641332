//! The desired WorkloadEntries of one mirror: a pure function of its spec, the
//! WorkloadGroups it refers to, and the group's members. No I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv6Addr};

use meshmirror_provider::{Health, Instance, InstanceState, LifecycleKind};
use sha2::{Digest, Sha256};

use crate::core::config::MirrorConfig;
use crate::core::names::{entry_name, is_label_key, is_label_value};
use crate::crd::{AddressFamily, HealthMode, LocalityMode, ScalingGroupMirrorSpec, WorkloadSpec};
use crate::workloadentry::{GroupTemplate, WorkloadEntrySpec, keys};

/// The mirror being reconciled.
#[derive(Clone, Copy, Debug)]
pub struct Mirror<'a> {
    pub name: &'a str,
    pub spec: &'a ScalingGroupMirrorSpec,
    pub config: &'a MirrorConfig,
    /// Instances that have entries now: of two with one address, the one
    /// already in the mesh keeps it (a newcomer reusing an address must not
    /// take the endpoint over).
    pub incumbents: &'a BTreeSet<String>,
}

/// One WorkloadEntry as meshmirror wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredEntry {
    pub name: String,
    pub instance_id: String,
    pub workload: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: WorkloadEntrySpec,
    /// In `Cloud` health mode, the `Healthy` condition to write.
    pub healthy: Option<bool>,
    /// Hash of everything above that is written, kept in an annotation.
    pub hash: String,
}

/// Why a member got no entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SkipReason {
    NoAddress(AddressFamily),
    /// An address no endpoint may have (loopback, link-local, the cloud
    /// metadata service, multicast, unspecified).
    UnusableAddress {
        address: IpAddr,
        why: &'static str,
    },
    /// Istio assumes an address is unique within a network.
    DuplicateAddress {
        address: String,
        network: String,
        kept: String,
    },
}

impl std::fmt::Display for SkipReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SkipReason::NoAddress(family) => write!(f, "has no {family:?} address"),
            SkipReason::UnusableAddress { address, why } => {
                write!(f, "has address {address}, which is {why}; not written")
            }
            SkipReason::DuplicateAddress {
                address,
                network,
                kept,
            } => write!(
                f,
                "has address {address} which instance {kept} already uses in network {network:?}"
            ),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skip {
    pub instance_id: String,
    pub reason: SkipReason,
}

/// Everything a pass wants, plus what it had to leave out and why.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Sorted by name.
    pub entries: Vec<DesiredEntry>,
    pub skipped: Vec<Skip>,
    /// Tags that could not become labels, and the like: for Events.
    pub warnings: Vec<String>,
    /// Members counted in status (every instance that is not leaving).
    pub members: usize,
    /// Ids of instances that are leaving (terminating or stopped): their
    /// entries are deleted before any other.
    pub leaving: BTreeSet<String>,
}

/// Computes the desired entries. `groups` holds the WorkloadGroups the
/// workloads name, by name; a missing one is an error the caller reports.
pub fn desired(
    mirror: Mirror<'_>,
    groups: &BTreeMap<String, GroupTemplate>,
    members: &[Instance],
) -> Desired {
    let spec = mirror.spec;
    let mut out = Desired::default();
    let mut sorted: Vec<&Instance> = members.iter().collect();
    // Incumbents first, so they keep their addresses; then by id.
    sorted.sort_by(|a, b| {
        let newcomer = |i: &Instance| !mirror.incumbents.contains(&i.id);
        (newcomer(a), &a.id).cmp(&(newcomer(b), &b.id))
    });

    // (network, address) -> instance id that holds it.
    let mut taken: BTreeMap<(String, IpAddr), String> = BTreeMap::new();
    let workloads = resolve_workloads(spec, groups);

    for instance in sorted {
        if !is_member(spec, instance) {
            if matches!(
                instance.state,
                InstanceState::Terminating | InstanceState::Stopped
            ) {
                out.leaving.insert(instance.id.clone());
            }
            continue;
        }
        out.members += 1;
        let Some(address) = pick_address(spec.address, instance) else {
            out.skipped.push(Skip {
                instance_id: instance.id.clone(),
                reason: SkipReason::NoAddress(spec.address),
            });
            continue;
        };
        if let Some(why) = unusable(address) {
            out.skipped.push(Skip {
                instance_id: instance.id.clone(),
                reason: SkipReason::UnusableAddress { address, why },
            });
            continue;
        }
        let network = network_for(mirror.config, spec, address);
        let key = (network.clone().unwrap_or_default(), address);
        if let Some(kept) = taken.get(&key) {
            out.skipped.push(Skip {
                instance_id: instance.id.clone(),
                reason: SkipReason::DuplicateAddress {
                    address: address.to_string(),
                    network: key.0.clone(),
                    kept: kept.clone(),
                },
            });
            continue;
        }
        taken.insert(key, instance.id.clone());

        let tags = copied_tags(spec, instance, &mut out.warnings);
        for workload in &workloads {
            out.entries.push(entry(
                mirror,
                workload,
                instance,
                address,
                network.clone(),
                &tags,
            ));
        }
    }
    out.entries.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Whether an instance belongs in the mesh now: running, or held by our
/// launch hook (entries are written while it waits, so it can become healthy).
fn is_member(spec: &ScalingGroupMirrorSpec, instance: &Instance) -> bool {
    match instance.state {
        InstanceState::Running => true,
        InstanceState::Pending => instance.lifecycle.as_ref().is_some_and(|action| {
            action.kind == LifecycleKind::Launch
                && spec.lifecycle.launch_hook.as_deref() == Some(action.hook.as_str())
        }),
        InstanceState::Terminating | InstanceState::Stopped => false,
    }
}

fn pick_address(family: AddressFamily, instance: &Instance) -> Option<IpAddr> {
    match family {
        AddressFamily::PrivateIpv4 => instance.private_ipv4.map(IpAddr::V4),
        AddressFamily::PublicIpv4 => instance.public_ipv4.map(IpAddr::V4),
        AddressFamily::Ipv6 => instance.ipv6.map(IpAddr::V6),
    }
}

/// Why no endpoint may carry `ip` (None: it may). Follows Kubernetes'
/// endpoint validation (ValidateEndpointIP) and adds what a cloud makes
/// dangerous: the instance metadata service and all multicast. IPv4-mapped
/// IPv6 forms are judged as the IPv4 address they carry.
pub fn unusable(ip: IpAddr) -> Option<&'static str> {
    const AWS_IMDS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    match ip {
        IpAddr::V4(v4) => {
            if v4.is_unspecified() {
                Some("unspecified")
            } else if v4.is_loopback() {
                Some("a loopback address")
            } else if v4.octets()[..2] == [169, 254] {
                Some("link-local (169.254.0.0/16, where the cloud metadata service listens)")
            } else if v4.is_multicast() {
                Some("multicast")
            } else if v4.is_broadcast() {
                Some("the broadcast address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return unusable(IpAddr::V4(v4));
            }
            if v6.is_unspecified() {
                Some("unspecified")
            } else if v6.is_loopback() {
                Some("a loopback address")
            } else if v6.segments()[0] & 0xffc0 == 0xfe80 {
                Some("link-local (fe80::/10)")
            } else if v6.is_multicast() {
                Some("multicast")
            } else if v6 == AWS_IMDS_V6 {
                Some("the cloud metadata service (fd00:ec2::254)")
            } else {
                None
            }
        }
    }
}

fn network_for(config: &MirrorConfig, spec: &ScalingGroupMirrorSpec, ip: IpAddr) -> Option<String> {
    config
        .networks_by_cidr
        .iter()
        .find(|(cidr, _)| cidr.contains(ip))
        .map(|(_, network)| network.clone())
        .or_else(|| spec.network.clone())
}

fn copied_tags(
    spec: &ScalingGroupMirrorSpec,
    instance: &Instance,
    warnings: &mut Vec<String>,
) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for key in &spec.copy_tags {
        let Some(value) = instance.tags.get(key) else {
            continue;
        };
        if !is_label_key(key) {
            warnings.push(format!(
                "tag {key:?} of instance {} is not a valid label key; not copied",
                instance.id
            ));
        } else if !is_label_value(value) {
            warnings.push(format!(
                "tag {key:?} of instance {} has a value that is not a valid label value ({} bytes); not copied",
                instance.id,
                value.len()
            ));
        } else {
            out.insert(key.clone(), value.clone());
        }
    }
    out
}

/// A workload with its WorkloadGroup's defaults folded in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedWorkload {
    pub name: String,
    /// The `service.istio.io/workload-name` its entries carry.
    pub workload_name_label: String,
    /// The labels its entries carry (besides copied tags).
    pub labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    pub ports: BTreeMap<String, u32>,
    service_account: Option<String>,
    weight: Option<u32>,
    network: Option<String>,
}

/// The spec's workloads, in order, each with the WorkloadGroup it names
/// (from `groups`, by name) folded in.
pub fn resolve_workloads(
    spec: &ScalingGroupMirrorSpec,
    groups: &BTreeMap<String, GroupTemplate>,
) -> Vec<ResolvedWorkload> {
    spec.workloads
        .iter()
        .map(|w| resolve_workload(w, w.workload_group.as_ref().and_then(|g| groups.get(g))))
        .collect()
}

fn resolve_workload(w: &WorkloadSpec, group: Option<&GroupTemplate>) -> ResolvedWorkload {
    let empty = GroupTemplate::default();
    let group = group.unwrap_or(&empty);
    let merge = |base: &BTreeMap<String, String>, over: &BTreeMap<String, String>| {
        let mut m = base.clone();
        m.extend(over.iter().map(|(k, v)| (k.clone(), v.clone())));
        m
    };
    // Istio's auto-registration takes the group's template labels too.
    let labels = merge(&merge(&group.labels, &group.template.labels), &w.labels);
    let mut ports = group.template.ports.clone();
    ports.extend(w.ports.iter().map(|(k, v)| (k.clone(), *v)));
    ResolvedWorkload {
        name: w.name.clone(),
        workload_name_label: w.workload_group.clone().unwrap_or_else(|| w.name.clone()),
        labels,
        annotations: merge(&group.annotations, &w.annotations),
        ports,
        service_account: w
            .service_account
            .clone()
            .or_else(|| group.template.service_account.clone()),
        weight: w.weight.or(group.template.weight),
        network: group.template.network.clone(),
    }
}

fn entry(
    mirror: Mirror<'_>,
    workload: &ResolvedWorkload,
    instance: &Instance,
    address: IpAddr,
    network: Option<String>,
    tags: &BTreeMap<String, String>,
) -> DesiredEntry {
    let spec = mirror.spec;
    let mut spec_labels = tags.clone();
    spec_labels.extend(workload.labels.clone());
    spec_labels
        .entry(keys::WORKLOAD_NAME.into())
        .or_insert_with(|| workload.workload_name_label.clone());

    let mut labels = spec_labels.clone();
    labels.extend(crate::core::ownership::labels(mirror.name));
    labels.insert(keys::WORKLOAD.into(), workload.name.clone());
    labels.insert(keys::PROVIDER.into(), mirror.config.group.provider().into());

    let mut annotations = workload.annotations.clone();
    annotations.insert(keys::INSTANCE_ID.into(), instance.id.clone());
    annotations.insert(keys::GROUP.into(), mirror.config.group.to_string());
    if spec.health != HealthMode::None {
        annotations.insert(keys::HEALTH_CHECKS.into(), "true".into());
    }
    annotations.remove(keys::AUTO_REGISTRATION_GROUP);

    let locality = match spec.locality {
        LocalityMode::None => None,
        LocalityMode::Auto => match (&instance.region, &instance.zone) {
            (Some(region), Some(zone)) => Some(format!("{region}/{zone}")),
            (Some(region), None) => Some(region.clone()),
            _ => None,
        },
    };
    let entry_spec = WorkloadEntrySpec {
        address: address.to_string(),
        ports: workload.ports.clone(),
        labels: spec_labels,
        network: network.or_else(|| workload.network.clone()),
        locality,
        weight: workload.weight,
        service_account: workload.service_account.clone(),
    };
    let healthy = (spec.health == HealthMode::Cloud).then(|| instance.health != Health::Unhealthy);
    let hash = content_hash(&labels, &annotations, &entry_spec, healthy);
    DesiredEntry {
        name: entry_name(mirror.name, &workload.name, &instance.id),
        instance_id: instance.id.clone(),
        workload: workload.name.clone(),
        labels,
        annotations,
        spec: entry_spec,
        healthy,
        hash,
    }
}

/// The hash kept in the applied-hash annotation: SHA-256 of the JSON array
/// `[labels, annotations, spec, healthy]` (maps with sorted keys), first 8
/// bytes in hex. Serialized straight into the hasher; the bytes must never
/// change, or every entry would be rewritten on upgrade.
pub fn content_hash(
    labels: &BTreeMap<String, String>,
    annotations: &BTreeMap<String, String>,
    spec: &WorkloadEntrySpec,
    healthy: Option<bool>,
) -> String {
    // Through a Value, the spec's keys come out sorted (a struct would
    // serialize in field order); it is small.
    let spec = serde_json::to_value(spec).unwrap_or_default();
    short_hash(&(labels, annotations, &spec, healthy))
}

/// SHA-256 of `value`'s JSON, first 8 bytes in hex: the applied-hash of
/// every object meshmirror writes. Serialized straight into the hasher.
pub fn short_hash(value: &impl serde::Serialize) -> String {
    struct Sink(Sha256);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut sink = Sink(Sha256::new());
    // Maps of strings and Values cannot fail to serialize.
    let _ = serde_json::to_writer(&mut sink, value);
    let digest = sink.0.finalize();
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(16);
    for b in digest.iter().take(8) {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use meshmirror_provider::{GroupRef, LifecycleAction};

    use super::*;
    use crate::core::config::validate;

    fn spec(yaml: &str) -> ScalingGroupMirrorSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    fn vm(id: &str, last: u8) -> Instance {
        let mut i = Instance::running(id, Ipv4Addr::new(10, 0, 0, last));
        i.public_ipv4 = Some(Ipv4Addr::new(203, 0, 113, last));
        i.ipv6 = Some(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, last.into()));
        i.region = Some("us-east-1".into());
        i.zone = Some("us-east-1a".into());
        i
    }

    fn run(spec_yaml: &str, members: &[Instance]) -> Desired {
        run_with_groups(spec_yaml, &BTreeMap::new(), members)
    }

    fn run_with_groups(
        spec_yaml: &str,
        groups: &BTreeMap<String, GroupTemplate>,
        members: &[Instance],
    ) -> Desired {
        let s = spec(&format!("provider: {{sim: {{group: web}}}}\n{spec_yaml}"));
        let config = validate(&s).unwrap();
        desired(
            Mirror {
                name: "web",
                spec: &s,
                config: &config,
                incumbents: &BTreeSet::new(),
            },
            groups,
            members,
        )
    }

    #[test]
    fn one_entry_per_instance_per_workload() {
        let d = run(
            "workloads:\n- {name: api, labels: {app: api}, ports: {http: 8080}, serviceAccount: api-sa}\n- {name: metrics, labels: {app: exporter}, ports: {metrics: 9100}, serviceAccount: exporter}",
            &[vm("i-1", 1), vm("i-2", 2)],
        );
        assert_eq!(d.entries.len(), 4);
        assert_eq!(d.members, 2);
        let api: Vec<_> = d.entries.iter().filter(|e| e.workload == "api").collect();
        assert_eq!(api.len(), 2);
        assert_eq!(api[0].spec.service_account.as_deref(), Some("api-sa"));
        assert_eq!(api[0].spec.ports["http"], 8080);
        assert_eq!(api[0].spec.labels["app"], "api");
        let exporter = d.entries.iter().find(|e| e.workload == "metrics").unwrap();
        assert_eq!(exporter.spec.service_account.as_deref(), Some("exporter"));
        assert_eq!(exporter.labels["app"], "exporter");
        assert_eq!(exporter.labels[keys::MANAGED_BY], "meshmirror");
        assert_eq!(exporter.labels[keys::MIRROR], "web");
        assert_eq!(exporter.labels[keys::WORKLOAD], "metrics");
        assert_eq!(exporter.labels[keys::PROVIDER], "sim");
        assert_eq!(exporter.spec.labels[keys::WORKLOAD_NAME], "metrics");
        assert_eq!(exporter.annotations[keys::GROUP], "sim:web");
        assert_eq!(
            exporter.spec.locality.as_deref(),
            Some("us-east-1/us-east-1a")
        );
        assert!(d.entries.windows(2).all(|w| w[0].name < w[1].name));
    }

    #[test]
    fn address_family_choice_and_skips() {
        let mut no_public = vm("i-2", 2);
        no_public.public_ipv4 = None;
        let members = [vm("i-1", 1), no_public];
        let table = [
            ("PrivateIPv4", vec!["10.0.0.1", "10.0.0.2"], 0),
            ("PublicIPv4", vec!["203.0.113.1"], 1),
            ("IPv6", vec!["2001:db8::1", "2001:db8::2"], 0),
        ];
        for (family, addresses, skipped) in table {
            let d = run(
                &format!("address: {family}\nworkloads: [{{name: a}}]"),
                &members,
            );
            let got: Vec<_> = d.entries.iter().map(|e| e.spec.address.as_str()).collect();
            let mut got = got;
            got.sort();
            assert_eq!(got, addresses, "{family}");
            assert_eq!(d.skipped.len(), skipped, "{family}");
        }
        let d = run("address: PublicIPv4\nworkloads: [{name: a}]", &members);
        assert_eq!(
            d.skipped[0],
            Skip {
                instance_id: "i-2".into(),
                reason: SkipReason::NoAddress(AddressFamily::PublicIpv4)
            }
        );
    }

    #[test]
    fn states_decide_membership() {
        let mut pending = vm("i-p", 3);
        pending.state = InstanceState::Pending;
        let mut hooked = vm("i-h", 4);
        hooked.state = InstanceState::Pending;
        hooked.lifecycle = Some(LifecycleAction {
            group: GroupRef::Sim {
                group: "web".into(),
            },
            instance_id: "i-h".into(),
            kind: LifecycleKind::Launch,
            hook: "launch".into(),
            token: None,
        });
        let mut leaving = vm("i-t", 5);
        leaving.state = InstanceState::Terminating;
        let mut stopped = vm("i-s", 6);
        stopped.state = InstanceState::Stopped;
        let d = run(
            "lifecycle: {launchHook: launch}\nworkloads: [{name: a}]",
            &[vm("i-r", 1), pending, hooked.clone(), leaving, stopped],
        );
        let ids: Vec<_> = d.entries.iter().map(|e| e.instance_id.as_str()).collect();
        assert_eq!(ids.len(), 2);
        assert!(ids.contains(&"i-r") && ids.contains(&"i-h"));
        assert_eq!(
            d.leaving.iter().map(String::as_str).collect::<Vec<_>>(),
            ["i-s", "i-t"]
        );
        // A launch hook not named in the spec belongs to someone else.
        let d = run("workloads: [{name: a}]", &[hooked]);
        assert!(d.entries.is_empty());
    }

    #[test]
    fn networks_by_cidr_then_static_then_group() {
        let mut other = vm("i-2", 2);
        other.private_ipv4 = Some(Ipv4Addr::new(192, 168, 1, 2));
        let d = run(
            "network: fallback\nnetworkByCidr: [{cidr: 10.0.0.0/8, network: east}]\nworkloads: [{name: a}]",
            &[vm("i-1", 1), other.clone()],
        );
        let net = |id: &str| {
            d.entries
                .iter()
                .find(|e| e.instance_id == id)
                .unwrap()
                .spec
                .network
                .clone()
        };
        assert_eq!(net("i-1").as_deref(), Some("east"));
        assert_eq!(net("i-2").as_deref(), Some("fallback"));

        let groups = BTreeMap::from([(
            "g".to_string(),
            GroupTemplate::from_spec(&serde_json::json!({"template": {"network": "from-group"}}))
                .unwrap(),
        )]);
        let d = run_with_groups(
            "workloads: [{name: a, workloadGroup: g}]",
            &groups,
            &[other],
        );
        assert_eq!(d.entries[0].spec.network.as_deref(), Some("from-group"));
    }

    #[test]
    fn duplicate_address_in_one_network_keeps_the_first() {
        let mut twin = vm("i-2", 1);
        twin.private_ipv4 = Some(Ipv4Addr::new(10, 0, 0, 1));
        let d = run("workloads: [{name: a}, {name: b}]", &[twin, vm("i-1", 1)]);
        assert_eq!(d.entries.len(), 2);
        assert!(d.entries.iter().all(|e| e.instance_id == "i-1"));
        assert_eq!(d.skipped.len(), 1);
        assert!(matches!(
            &d.skipped[0].reason,
            SkipReason::DuplicateAddress { kept, .. } if kept == "i-1"
        ));
        // In different networks both are fine.
        let mut twin = vm("i-2", 1);
        twin.private_ipv4 = Some(Ipv4Addr::new(10, 0, 0, 1));
        let d = run(
            "networkByCidr: [{cidr: 10.0.0.1/32, network: n1}]\naddress: PrivateIPv4\nworkloads: [{name: a}]",
            &[twin, vm("i-1", 1)],
        );
        assert_eq!(d.skipped.len(), 1, "same CIDR, same network");
    }

    #[test]
    fn of_two_members_with_one_address_the_one_with_an_entry_keeps_it() {
        let mut newcomer = vm("i-0", 1);
        newcomer.private_ipv4 = Some(Ipv4Addr::new(10, 0, 0, 1));
        let s = spec("provider: {sim: {group: web}}\nworkloads: [{name: a}]");
        let config = validate(&s).unwrap();
        for (incumbent, kept, skipped) in [("i-1", "i-1", "i-0"), ("i-0", "i-0", "i-1")] {
            let incumbents = BTreeSet::from([incumbent.to_string()]);
            let d = desired(
                Mirror {
                    name: "web",
                    spec: &s,
                    config: &config,
                    incumbents: &incumbents,
                },
                &BTreeMap::new(),
                &[newcomer.clone(), vm("i-1", 1)],
            );
            assert_eq!(d.entries.len(), 1);
            assert_eq!(d.entries[0].instance_id, kept);
            assert_eq!(d.skipped[0].instance_id, skipped);
        }
    }

    #[test]
    fn workload_group_defaults_are_overridden_inline() {
        let groups = BTreeMap::from([(
            "reviews".to_string(),
            GroupTemplate::from_spec(&serde_json::json!({
                "metadata": {"labels": {"app": "reviews", "version": "v1"}, "annotations": {"note": "x"}},
                "template": {"ports": {"http": 9080, "grpc": 9090}, "serviceAccount": "reviews", "weight": 5}
            }))
            .unwrap(),
        )]);
        let d = run_with_groups(
            "workloads: [{name: a, workloadGroup: reviews, labels: {version: v2}, ports: {http: 8080}, weight: 7}]",
            &groups,
            &[vm("i-1", 1)],
        );
        let e = &d.entries[0];
        assert_eq!(e.spec.labels["app"], "reviews");
        assert_eq!(e.spec.labels["version"], "v2");
        assert_eq!(e.spec.labels[keys::WORKLOAD_NAME], "reviews");
        assert_eq!(e.spec.ports["http"], 8080);
        assert_eq!(e.spec.ports["grpc"], 9090);
        assert_eq!(e.spec.service_account.as_deref(), Some("reviews"));
        assert_eq!(e.spec.weight, Some(7));
        assert_eq!(e.annotations["note"], "x");
    }

    #[test]
    fn tags_are_copied_when_they_are_valid_labels() {
        let mut i = vm("i-1", 1);
        i.tags = BTreeMap::from([
            ("team".into(), "payments".into()),
            ("Name".into(), "web server".into()),
            ("aws:autoscaling:groupName".into(), "web".into()),
            ("ignored".into(), "x".into()),
        ]);
        let d = run(
            "copyTags: [team, Name, 'aws:autoscaling:groupName', absent]\nworkloads: [{name: a}]",
            &[i],
        );
        let e = &d.entries[0];
        assert_eq!(e.labels["team"], "payments");
        assert_eq!(e.spec.labels["team"], "payments");
        assert!(!e.labels.contains_key("Name"));
        assert!(!e.labels.contains_key("ignored"));
        assert_eq!(d.warnings.len(), 2, "{:?}", d.warnings);
    }

    #[test]
    fn health_modes() {
        let mut sick = vm("i-2", 2);
        sick.health = Health::Unhealthy;
        let members = [vm("i-1", 1), sick];
        let d = run("workloads: [{name: a}]", &members);
        assert!(
            d.entries
                .iter()
                .all(|e| e.healthy.is_none() && !e.annotations.contains_key(keys::HEALTH_CHECKS))
        );
        let d = run("health: Agent\nworkloads: [{name: a}]", &members);
        assert!(
            d.entries
                .iter()
                .all(|e| e.healthy.is_none() && e.annotations[keys::HEALTH_CHECKS] == "true")
        );
        let d = run("health: Cloud\nworkloads: [{name: a}]", &members);
        let health: Vec<_> = d.entries.iter().map(|e| e.healthy).collect();
        assert_eq!(health, [Some(true), Some(false)]);
    }

    #[test]
    fn addresses_no_endpoint_may_have_are_refused() {
        for (ip, usable) in [
            ("10.0.1.5", true),
            ("203.0.113.9", true),
            ("100.64.0.1", true),
            ("2001:db8::5", true),
            ("fd00:ec2::253", true),
            ("0.0.0.0", false),
            ("127.0.0.1", false),
            ("127.9.9.9", false),
            ("169.254.169.254", false),
            ("169.254.0.1", false),
            ("224.0.0.1", false),
            ("239.1.2.3", false),
            ("255.255.255.255", false),
            ("::", false),
            ("::1", false),
            ("fe80::1", false),
            ("febf::1", false),
            ("ff02::1", false),
            ("fd00:ec2::254", false),
            ("::ffff:127.0.0.1", false),
            ("::ffff:169.254.169.254", false),
            ("::ffff:10.0.0.1", true),
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(unusable(ip).is_none(), usable, "{ip}: {:?}", unusable(ip));
        }
    }

    #[test]
    fn a_member_with_the_metadata_address_is_skipped_not_written() {
        let mut imds = vm("i-2", 2);
        imds.private_ipv4 = Some(std::net::Ipv4Addr::new(169, 254, 169, 254));
        let d = run("workloads: [{name: a}]", &[vm("i-1", 1), imds]);
        assert_eq!(d.entries.len(), 1);
        assert_eq!(d.entries[0].instance_id, "i-1");
        assert_eq!(d.members, 2);
        assert!(
            matches!(
                &d.skipped[..],
                [Skip { instance_id, reason: SkipReason::UnusableAddress { .. } }] if instance_id == "i-2"
            ),
            "{:?}",
            d.skipped
        );
    }

    #[test]
    fn the_content_hash_keeps_the_bytes_of_the_first_release() {
        // As 0.1 computed it: a json! Value rendered to a String. A change
        // here rewrites every entry of every user on upgrade.
        let labels = BTreeMap::from([("app".to_string(), "api".to_string())]);
        let annotations = BTreeMap::from([(keys::INSTANCE_ID.to_string(), "i-ü".to_string())]);
        for (spec, healthy) in [
            (WorkloadEntrySpec::default(), None),
            (
                WorkloadEntrySpec {
                    address: "10.0.0.1".into(),
                    ports: BTreeMap::from([("http".to_string(), 8080)]),
                    labels: labels.clone(),
                    network: Some("n1".into()),
                    locality: Some("r/z".into()),
                    weight: Some(3),
                    service_account: Some("sa".into()),
                },
                Some(true),
            ),
        ] {
            let body = serde_json::json!([labels, annotations, spec, healthy]);
            let digest = Sha256::digest(body.to_string().as_bytes());
            let old: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            assert_eq!(content_hash(&labels, &annotations, &spec, healthy), old);
        }
    }

    #[test]
    fn locality_none_and_hash_changes_with_content() {
        let d = run("locality: None\nworkloads: [{name: a}]", &[vm("i-1", 1)]);
        assert_eq!(d.entries[0].spec.locality, None);
        let a = run("workloads: [{name: a, labels: {v: '1'}}]", &[vm("i-1", 1)]);
        let b = run("workloads: [{name: a, labels: {v: '2'}}]", &[vm("i-1", 1)]);
        let a2 = run("workloads: [{name: a, labels: {v: '1'}}]", &[vm("i-1", 1)]);
        assert_ne!(a.entries[0].hash, b.entries[0].hash);
        assert_eq!(a.entries[0].hash, a2.entries[0].hash);
        assert_eq!(a.entries[0].name, b.entries[0].name);
    }
}
