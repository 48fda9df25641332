//! Checks a mirror's spec beyond what the CRD schema can, and turns it into the
//! parsed form the pure core works on. Every error names the field and the fix.

use std::net::IpAddr;
use std::time::Duration;

use meshmirror_provider::{GcpLocation, GroupRef};

use crate::core::group_names;
use crate::core::names::{is_dns_label, is_label_key, is_label_value};
use crate::crd::{CidrNetwork, ScalingGroupMirrorSpec};

/// The shortest polling interval a mirror may ask for.
pub const MIN_INTERVAL: Duration = Duration::from_secs(5);

/// A spec error a person can act on: `field: problem; fix`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

pub(crate) fn err(field: impl Into<String>, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.into(),
        message: message.into(),
    }
}

/// An IP network from `networkByCidr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cidr {
    base: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Cidr> {
        let (base, prefix) = s.split_once('/')?;
        let base: IpAddr = base.parse().ok()?;
        let prefix: u8 = prefix.parse().ok()?;
        let max = if base.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { base, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        fn masked(bits: u128, prefix: u8, width: u8) -> u128 {
            if prefix == 0 {
                0
            } else {
                bits >> (width - prefix)
            }
        }
        match (self.base, ip) {
            (IpAddr::V4(b), IpAddr::V4(i)) => {
                masked(u32::from(b).into(), self.prefix, 32)
                    == masked(u32::from(i).into(), self.prefix, 32)
            }
            (IpAddr::V6(b), IpAddr::V6(i)) => {
                masked(u128::from(b), self.prefix, 128) == masked(u128::from(i), self.prefix, 128)
            }
            _ => false,
        }
    }
}

/// A validated mirror spec.
#[derive(Clone, Debug)]
pub struct MirrorConfig {
    pub group: GroupRef,
    pub interval: Duration,
    pub networks_by_cidr: Vec<(Cidr, String)>,
}

/// Parses durations like `30s`, `2m`, `1h30m`, `500ms`.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = s;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.checked_mul(60)?),
            "h" => Duration::from_secs(n.checked_mul(3600)?),
            _ => return None,
        };
        total = total.checked_add(unit)?;
        rest = &rest[unit_len..];
    }
    Some(total)
}

/// Validates `spec` and returns its parsed form, or the first problem found.
pub fn validate(spec: &ScalingGroupMirrorSpec) -> Result<MirrorConfig, SpecError> {
    let group = group_ref(spec)?;

    let interval = parse_duration(&spec.sync.interval).ok_or_else(|| {
        err(
            "spec.sync.interval",
            format!(
                "{:?} is not a duration; write it like 30s, 2m or 1h",
                spec.sync.interval
            ),
        )
    })?;
    if interval < MIN_INTERVAL {
        return Err(err(
            "spec.sync.interval",
            format!(
                "{} is shorter than the minimum of 5s; cloud APIs throttle tight polling (events give fast reaction)",
                spec.sync.interval
            ),
        ));
    }
    if spec.sync.max_deletes_per_pass == 0 {
        return Err(err(
            "spec.sync.maxDeletesPerPass",
            "must be at least 1; use policy UpsertOnly to never delete",
        ));
    }

    if spec.workloads.is_empty() || spec.workloads.len() > 16 {
        return Err(err(
            "spec.workloads",
            format!("has {} workloads; give 1 to 16", spec.workloads.len()),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, w) in spec.workloads.iter().enumerate() {
        let field = format!("spec.workloads[{i}]");
        if !is_dns_label(&w.name) {
            return Err(err(
                format!("{field}.name"),
                format!(
                    "{:?} is not a DNS label; use 1-63 lowercase letters, digits and '-'",
                    w.name
                ),
            ));
        }
        if !seen.insert(&w.name) {
            return Err(err(
                format!("{field}.name"),
                format!("{:?} is used twice; workload names must be unique", w.name),
            ));
        }
        for (k, v) in &w.labels {
            if !is_label_key(k) {
                return Err(err(
                    format!("{field}.labels"),
                    format!("{k:?} is not a valid label key"),
                ));
            }
            if !is_label_value(v) {
                return Err(err(
                    format!("{field}.labels.{k}"),
                    format!(
                        "{v:?} is not a valid label value (at most 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends)"
                    ),
                ));
            }
        }
        workload_metadata(&field, w)?;
        for (port_name, port) in &w.ports {
            if *port == 0 || *port > 65535 {
                return Err(err(
                    format!("{field}.ports.{port_name}"),
                    format!("{port} is not a port; use 1-65535"),
                ));
            }
        }
    }

    if let Some(network) = &spec.network {
        network_name("spec.network", network)?;
    }
    for (i, by_cidr) in spec.network_by_cidr.iter().enumerate() {
        network_name(
            &format!("spec.networkByCidr[{i}].network"),
            &by_cidr.network,
        )?;
    }
    let networks_by_cidr = spec
        .network_by_cidr
        .iter()
        .enumerate()
        .map(|(i, CidrNetwork { cidr, network })| {
            Cidr::parse(cidr)
                .map(|c| (c, network.clone()))
                .ok_or_else(|| {
                    err(
                        format!("spec.networkByCidr[{i}].cidr"),
                        format!(
                            "{cidr:?} is not a CIDR; write it like 10.0.0.0/16 or 2001:db8::/32"
                        ),
                    )
                })
        })
        .collect::<Result<_, _>>()?;

    for (i, key) in spec.copy_tags.iter().enumerate() {
        if key.is_empty() {
            return Err(err(
                format!("spec.copyTags[{i}]"),
                "is empty; name a tag key",
            ));
        }
    }

    Ok(MirrorConfig {
        group,
        interval,
        networks_by_cidr,
    })
}

/// Most annotation bytes one workload may ask for: its entries repeat them,
/// up to 16 workloads times the group's size.
pub const MAX_ANNOTATION_BYTES: usize = 16 * 1024;

/// Prefixes of metadata keys meshmirror or istiod own on an entry: a spec
/// may not set them (an `istio.io/connectedAt` would fake a connected proxy,
/// a `meshmirror.io/instance-id` would move an entry to another VM).
const RESERVED_PREFIXES: [&str; 3] = [
    "istio.io/",
    "meshmirror.io/",
    "app.kubernetes.io/managed-by",
];

fn reserved(key: &str) -> bool {
    RESERVED_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// A workload's labels (keys), annotations and service account.
fn workload_metadata(field: &str, w: &crate::crd::WorkloadSpec) -> Result<(), SpecError> {
    for key in w.labels.keys().chain(w.annotations.keys()) {
        if reserved(key) {
            return Err(err(
                format!(
                    "{field}.{}",
                    if w.labels.contains_key(key) {
                        "labels"
                    } else {
                        "annotations"
                    }
                ),
                format!(
                    "{key:?} is a key that meshmirror or istiod writes ({}); remove it",
                    RESERVED_PREFIXES.join(", ")
                ),
            ));
        }
    }
    for key in w.annotations.keys() {
        if !is_label_key(key) {
            return Err(err(
                format!("{field}.annotations"),
                format!(
                    "{key:?} is not a valid annotation key (an optional DNS prefix and '/', then at most 63 of A-Z a-z 0-9 - _ .)"
                ),
            ));
        }
    }
    let bytes: usize = w.annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if bytes > MAX_ANNOTATION_BYTES {
        return Err(err(
            format!("{field}.annotations"),
            format!(
                "hold {bytes} bytes; keep them under {MAX_ANNOTATION_BYTES} (every entry of the workload repeats them)"
            ),
        ));
    }
    if let Some(sa) = &w.service_account
        && !crate::core::names::is_dns_subdomain(sa)
    {
        return Err(err(
            format!("{field}.serviceAccount"),
            format!(
                "{sa:?} is not a Kubernetes service account name (a DNS subdomain: lowercase letters, digits, '-' and '.')"
            ),
        ));
    }
    Ok(())
}

/// An Istio network name: it ends up in label values, so it follows their rule.
fn network_name(field: &str, network: &str) -> Result<(), SpecError> {
    if is_label_value(network) && !network.is_empty() {
        Ok(())
    } else {
        Err(err(
            field,
            format!(
                "{network:?} is not a valid network name (1 to 63 of A-Z a-z 0-9 - _ ., alphanumeric at both ends)"
            ),
        ))
    }
}

/// A field that names a group, held to the cloud's naming rule.
fn named(field: &str, value: &str, rule: group_names::Rule) -> Result<(), SpecError> {
    rule(value).map_err(|allowed| {
        err(
            field,
            format!("{value:?} is not a valid name; the cloud allows {allowed}"),
        )
    })
}

fn group_ref(spec: &ScalingGroupMirrorSpec) -> Result<GroupRef, SpecError> {
    let p = &spec.provider;
    let set = [
        p.aws.is_some(),
        p.azure.is_some(),
        p.gcp.is_some(),
        p.sim.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    if set != 1 {
        return Err(err(
            "spec.provider",
            format!("names {set} clouds; set exactly one of aws, azure, gcp, sim"),
        ));
    }
    if let Some(aws) = &p.aws {
        named(
            "spec.provider.aws.region",
            &aws.region,
            group_names::aws_region,
        )?;
        named(
            "spec.provider.aws.autoScalingGroupName",
            &aws.auto_scaling_group_name,
            group_names::aws_group,
        )?;
        return Ok(GroupRef::Aws {
            region: aws.region.clone(),
            name: aws.auto_scaling_group_name.clone(),
        });
    }
    if let Some(azure) = &p.azure {
        named(
            "spec.provider.azure.subscriptionId",
            &azure.subscription_id,
            group_names::azure_subscription,
        )?;
        named(
            "spec.provider.azure.resourceGroup",
            &azure.resource_group,
            group_names::azure_resource_group,
        )?;
        named(
            "spec.provider.azure.scaleSetName",
            &azure.scale_set_name,
            group_names::azure_scale_set,
        )?;
        return Ok(GroupRef::Azure {
            subscription_id: azure.subscription_id.clone(),
            resource_group: azure.resource_group.clone(),
            scale_set: azure.scale_set_name.clone(),
        });
    }
    if let Some(gcp) = &p.gcp {
        named(
            "spec.provider.gcp.project",
            &gcp.project,
            group_names::gcp_project,
        )?;
        named(
            "spec.provider.gcp.instanceGroupManager",
            &gcp.instance_group_manager,
            group_names::gcp_name,
        )?;
        let location = match (&gcp.zone, &gcp.region) {
            (Some(zone), None) => {
                named("spec.provider.gcp.zone", zone, group_names::gcp_name)?;
                GcpLocation::Zone(zone.clone())
            }
            (None, Some(region)) => {
                named("spec.provider.gcp.region", region, group_names::gcp_name)?;
                GcpLocation::Region(region.clone())
            }
            _ => {
                return Err(err(
                    "spec.provider.gcp",
                    "set exactly one of zone (zonal group) or region (regional group)",
                ));
            }
        };
        return Ok(GroupRef::Gcp {
            project: gcp.project.clone(),
            location,
            manager: gcp.instance_group_manager.clone(),
        });
    }
    let sim = p
        .sim
        .as_ref()
        .ok_or_else(|| err("spec.provider", "no cloud set"))?;
    named(
        "spec.provider.sim.group",
        &sim.group,
        group_names::sim_group,
    )?;
    Ok(GroupRef::Sim {
        group: sim.group.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ScalingGroupMirrorSpec {
        serde_yaml::from_str(yaml).unwrap()
    }

    #[test]
    fn durations() {
        for (s, want) in [
            ("30s", Some(30_000)),
            ("2m", Some(120_000)),
            ("1h30m", Some(5_400_000)),
            ("500ms", Some(500)),
            ("", None),
            ("30", None),
            ("s", None),
            ("3d", None),
        ] {
            assert_eq!(
                parse_duration(s).map(|d| d.as_millis() as u64),
                want,
                "{s:?}"
            );
        }
    }

    #[test]
    fn cidrs() {
        let net = Cidr::parse("10.0.0.0/16").unwrap();
        assert!(net.contains("10.0.255.1".parse().unwrap()));
        assert!(!net.contains("10.1.0.1".parse().unwrap()));
        assert!(!net.contains("2001:db8::1".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:1::5".parse().unwrap()));
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("10.0.0.0"), None);
    }

    #[test]
    fn errors_name_the_field_and_the_fix() {
        let base = "provider: {sim: {group: web}}\n";
        let cases = [
            (
                "provider: {}\nworkloads: [{name: a}]",
                "spec.provider: names 0 clouds",
            ),
            (
                "provider: {sim: {group: a}, aws: {region: r, autoScalingGroupName: n}}\nworkloads: [{name: a}]",
                "spec.provider: names 2 clouds",
            ),
            (
                "provider: {gcp: {project: proj-1, instanceGroupManager: m}}\nworkloads: [{name: a}]",
                "spec.provider.gcp: set exactly one of zone",
            ),
            (
                "provider: {azure: {subscriptionId: 00000000-0000-0000-0000-000000000000, resourceGroup: team-a, scaleSetName: 'x/../../../../other-rg/providers/Microsoft.Compute/virtualMachineScaleSets/v'}}\nworkloads: [{name: a}]",
                "spec.provider.azure.scaleSetName: \"x/../../../../other-rg/providers/Microsoft.Compute/virtualMachineScaleSets/v\" is not a valid name; the cloud allows 1 to 64 of letters",
            ),
            (
                "provider: {azure: {subscriptionId: sub, resourceGroup: rg, scaleSetName: web}}\nworkloads: [{name: a}]",
                "spec.provider.azure.subscriptionId: \"sub\" is not a valid name; the cloud allows a subscription GUID",
            ),
            (
                "provider: {gcp: {project: proj-1, zone: us-central1-a, instanceGroupManager: '../m'}}\nworkloads: [{name: a}]",
                "spec.provider.gcp.instanceGroupManager: \"../m\" is not a valid name",
            ),
            (
                "provider: {aws: {region: 'us-east-1/x', autoScalingGroupName: web}}\nworkloads: [{name: a}]",
                "spec.provider.aws.region: \"us-east-1/x\" is not a valid name; the cloud allows an AWS region",
            ),
            (
                "provider: {sim: {group: 'a/b'}}\nworkloads: [{name: a}]",
                "spec.provider.sim.group: \"a/b\" is not a valid name",
            ),
            ("workloads: []", "spec.workloads: has 0 workloads"),
            (
                "workloads: [{name: Web}]",
                "spec.workloads[0].name: \"Web\" is not a DNS label",
            ),
            (
                "workloads: [{name: a}, {name: a}]",
                "spec.workloads[1].name: \"a\" is used twice",
            ),
            (
                "workloads: [{name: a, ports: {http: 70000}}]",
                "spec.workloads[0].ports.http: 70000 is not a port",
            ),
            (
                "workloads: [{name: a, labels: {app: 'a b'}}]",
                "spec.workloads[0].labels.app: \"a b\" is not a valid label value",
            ),
            (
                "workloads: [{name: a}]\nsync: {interval: 1s}",
                "spec.sync.interval: 1s is shorter than the minimum of 5s",
            ),
            (
                "workloads: [{name: a}]\nsync: {interval: soon}",
                "spec.sync.interval: \"soon\" is not a duration",
            ),
            (
                "workloads: [{name: a}]\nnetworkByCidr: [{cidr: 10.0.0.0, network: n}]",
                "spec.networkByCidr[0].cidr: \"10.0.0.0\" is not a CIDR",
            ),
            (
                "workloads: [{name: a, annotations: {istio.io/connectedAt: '2026-01-01T00:00:00Z'}}]",
                "spec.workloads[0].annotations: \"istio.io/connectedAt\" is a key that meshmirror or istiod writes",
            ),
            (
                "workloads: [{name: a, labels: {meshmirror.io/mirror: other}}]",
                "spec.workloads[0].labels: \"meshmirror.io/mirror\" is a key that meshmirror or istiod writes",
            ),
            (
                "workloads: [{name: a, annotations: {'bad key': x}}]",
                "spec.workloads[0].annotations: \"bad key\" is not a valid annotation key",
            ),
            (
                "workloads: [{name: a, serviceAccount: 'Api SA'}]",
                "spec.workloads[0].serviceAccount: \"Api SA\" is not a Kubernetes service account name",
            ),
            (
                "workloads: [{name: a}]\nnetwork: 'vm net'",
                "spec.network: \"vm net\" is not a valid network name",
            ),
            (
                "workloads: [{name: a}]\nnetworkByCidr: [{cidr: 10.0.0.0/8, network: ''}]",
                "spec.networkByCidr[0].network: \"\" is not a valid network name",
            ),
        ];
        for (yaml, want) in cases {
            let yaml = if yaml.starts_with("provider") {
                yaml.to_string()
            } else {
                format!("{base}{yaml}")
            };
            let got = validate(&spec(&yaml)).unwrap_err().to_string();
            assert!(got.starts_with(want), "{yaml}\n got: {got}\nwant: {want}");
        }
    }

    #[test]
    fn a_valid_spec_parses() {
        let config = validate(&spec(
            "provider: {gcp: {project: proj-1, region: europe-west1, instanceGroupManager: m}}\nworkloads: [{name: a}]\nnetworkByCidr: [{cidr: 10.0.0.0/8, network: n1}]\nsync: {interval: 1m}",
        ))
        .unwrap();
        assert_eq!(config.interval, Duration::from_secs(60));
        assert_eq!(config.networks_by_cidr.len(), 1);
        assert_eq!(
            config.group,
            GroupRef::Gcp {
                project: "proj-1".into(),
                location: GcpLocation::Region("europe-west1".into()),
                manager: "m".into()
            }
        );
    }
}
