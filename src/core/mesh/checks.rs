//! What the mesh options may ask for. Two kinds of check: those on the spec
//! alone (hosts, names, the Sidecar's selector and egress), made with the
//! rest of the spec's checks; and those on the workloads' labels and ports
//! once their WorkloadGroups are folded in (a selector that would select
//! another workload's entries, clashing inbound ports).

use std::collections::{BTreeMap, BTreeSet};

use crate::core::config::{SpecError, err};
use crate::core::names::{is_dns_label, is_dns_subdomain, is_label_key, is_label_value};
use crate::crd::{ScalingGroupMirrorSpec, ServiceKind};
use crate::workloadentry::keys;

/// Checks the mesh options on the spec alone.
pub fn check_spec(spec: &ScalingGroupMirrorSpec, namespace: &str) -> Result<(), SpecError> {
    let mut names: BTreeMap<(ServiceKind, String), &str> = BTreeMap::new();
    let mut hosts: BTreeMap<String, &str> = BTreeMap::new();
    for (i, w) in spec.workloads.iter().enumerate() {
        let Some(service) = &w.service else { continue };
        let field = format!("spec.workloads[{i}].service");
        let name = service.name.clone().unwrap_or_else(|| w.name.clone());
        if !is_dns_label(&name) || !name.starts_with(|c: char| c.is_ascii_lowercase()) {
            return Err(err(
                format!("{field}.name"),
                format!(
                    "{name:?} is not a service name; use a DNS label that starts with a letter"
                ),
            ));
        }
        if let Some(other) = names.insert((service.kind, name.clone()), &w.name) {
            return Err(err(
                format!("{field}.name"),
                format!(
                    "{name:?} is also workload {other:?}'s service; give one of them service.name"
                ),
            ));
        }
        if service.kind == ServiceKind::Service && !service.hosts.is_empty() {
            return Err(err(
                format!("{field}.hosts"),
                "applies to kind ServiceEntry only (a Service's host is <name>.<namespace>.svc); remove it",
            ));
        }
        for (j, host) in service.hosts.iter().enumerate() {
            check_host(&format!("{field}.hosts[{j}]"), host, namespace)?;
        }
        if service.kind == ServiceKind::ServiceEntry {
            for host in super::hosts_of(service, &name, namespace) {
                if let Some(other) = hosts.insert(host.clone(), &w.name) {
                    return Err(err(
                        format!("{field}.hosts"),
                        format!(
                            "host {host:?} is also workload {other:?}'s; a host names one service"
                        ),
                    ));
                }
            }
        }
    }
    if let Some(sidecar) = &spec.sidecar {
        if sidecar.workload_selector.is_empty() {
            return Err(err(
                "spec.sidecar.workloadSelector",
                "is empty, and a Sidecar without a selector would apply to every proxy in the namespace; give the labels of the VMs' proxies",
            ));
        }
        for (k, v) in &sidecar.workload_selector {
            if !is_label_key(k) || !is_label_value(v) {
                return Err(err(
                    "spec.sidecar.workloadSelector",
                    format!("{k:?}: {v:?} is not a valid label"),
                ));
            }
        }
        for (j, host) in sidecar.egress_hosts.iter().enumerate() {
            check_egress_host(&format!("spec.sidecar.egressHosts[{j}]"), host)?;
        }
    }
    Ok(())
}

/// A ServiceEntry host: `<name>.<namespace>.svc.<cluster domain>` in the
/// mirror's own namespace. A ServiceEntry's host is mesh-wide: any other
/// host (`payments.team-b.svc.cluster.local`, `login.example.com`) would let
/// whoever may create a mirror take traffic that other teams send to it.
fn check_host(field: &str, host: &str, namespace: &str) -> Result<(), SpecError> {
    let fix = format!("write it like api.{namespace}.svc.cluster.local");
    if !is_dns_subdomain(host) {
        return Err(err(
            field,
            format!("{host:?} is not a DNS name (lowercase, no wildcards); {fix}"),
        ));
    }
    let labels: Vec<&str> = host.split('.').collect();
    if labels.len() < 4 || labels[1] != namespace || labels[2] != "svc" {
        return Err(err(
            field,
            format!(
                "{host:?} is outside this namespace's services; a ServiceEntry host is seen by the whole mesh, so meshmirror writes only hosts of its mirror's namespace: {fix}"
            ),
        ));
    }
    Ok(())
}

/// A Sidecar egress host: `namespace/dnsName`, as Istio writes it.
fn check_egress_host(field: &str, host: &str) -> Result<(), SpecError> {
    let bad = || {
        err(
            field,
            format!(
                "{host:?} is not namespace/host; write it like ./*, istio-system/* or payments/api.payments.svc.cluster.local"
            ),
        )
    };
    let (ns, dns) = host.split_once('/').ok_or_else(bad)?;
    let ns_ok = matches!(ns, "." | "*" | "~") || is_dns_label(ns);
    let dns_body = dns.strip_prefix("*.").unwrap_or(dns);
    let dns_ok = dns == "*" || is_dns_subdomain(dns_body);
    if ns_ok && dns_ok { Ok(()) } else { Err(bad()) }
}

/// A workload as the mesh objects see it: its labels and ports with its
/// WorkloadGroup's folded in.
#[derive(Clone, Debug)]
pub struct Selectable<'a> {
    pub index: usize,
    pub name: &'a str,
    /// The labels its entries carry (the Service's selector).
    pub labels: &'a BTreeMap<String, String>,
    /// The `service.istio.io/workload-name` its entries carry.
    pub workload_name: &'a str,
    pub has_service: bool,
}

/// Refuses a service selector that could select another workload's entries
/// of the same VMs: every label of the selector is one the other workload's
/// entries carry, or could carry (a tag copied by `copyTags`, with any
/// value). `copy_tags` are the keys copied from the cloud.
pub fn check_selectors(
    workloads: &[Selectable<'_>],
    copy_tags: &BTreeSet<&str>,
) -> Result<(), SpecError> {
    for w in workloads.iter().filter(|w| w.has_service) {
        let field = format!("spec.workloads[{}]", w.index);
        if w.labels.is_empty() {
            return Err(err(
                format!("{field}.labels"),
                format!(
                    "are empty, and a service selects its entries by them; add one, e.g. app: {}",
                    w.name
                ),
            ));
        }
        for other in workloads.iter().filter(|o| o.index != w.index) {
            let could_carry = |(k, v): (&String, &String)| match other.labels.get(k) {
                Some(theirs) => theirs == v,
                None if k == keys::WORKLOAD_NAME => other.workload_name == v,
                None => copy_tags.contains(k.as_str()),
            };
            if w.labels.iter().all(could_carry) {
                return Err(err(
                    format!("{field}.labels"),
                    format!(
                        "workload {:?}'s service would select workload {:?}'s entries too (its selector {} matches them); give each workload a label value the other lacks, e.g. app: {} and app: {}",
                        w.name,
                        other.name,
                        show(w.labels),
                        w.name,
                        other.name
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn show(labels: &BTreeMap<String, String>) -> String {
    let pairs: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", pairs.join(","))
}

/// Refuses two workloads listening on one port: a VM runs one proxy, with
/// one inbound listener per port.
pub fn check_inbound_ports(
    workloads: &[(usize, &str, &BTreeMap<String, u32>)],
) -> Result<(), SpecError> {
    let mut seen: BTreeMap<u32, (&str, &str)> = BTreeMap::new();
    for (index, name, ports) in workloads {
        for (port_name, port) in *ports {
            if let Some((other, other_port)) = seen.insert(*port, (name, port_name)) {
                return Err(err(
                    format!("spec.workloads[{index}].ports.{port_name}"),
                    format!(
                        "port {port} is also workload {other:?}'s port {other_port:?}; the VMs' one proxy has one inbound listener per port (spec.sidecar), so give each workload its own ports"
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ScalingGroupMirrorSpec {
        serde_yaml::from_str(&format!("provider: {{sim: {{group: g}}}}\n{yaml}")).unwrap()
    }

    #[test]
    fn spec_checks_name_the_field() {
        let cases = [
            (
                "workloads: [{name: a, service: {kind: ServiceEntry, hosts: ['*.team-a.svc.cluster.local']}}]",
                "spec.workloads[0].service.hosts[0]",
                "no wildcards",
            ),
            (
                "workloads: [{name: a, service: {kind: ServiceEntry, hosts: [payments.team-b.svc.cluster.local]}}]",
                "spec.workloads[0].service.hosts[0]",
                "outside this namespace",
            ),
            (
                "workloads: [{name: a, service: {kind: ServiceEntry, hosts: [login.example.com]}}]",
                "spec.workloads[0].service.hosts[0]",
                "seen by the whole mesh",
            ),
            (
                "workloads: [{name: a, service: {kind: ServiceEntry, hosts: [Api.team-a.svc.cluster.local]}}]",
                "spec.workloads[0].service.hosts[0]",
                "not a DNS name",
            ),
            (
                "workloads: [{name: a, service: {kind: Service, hosts: [a.example.com]}}]",
                "spec.workloads[0].service.hosts",
                "ServiceEntry only",
            ),
            (
                "workloads: [{name: a, service: {kind: Service}}, {name: b, service: {kind: Service, name: a}}]",
                "spec.workloads[1].service.name",
                "also workload \"a\"'s service",
            ),
            (
                "workloads: [{name: a, service: {kind: ServiceEntry, hosts: [x.team-a.svc.cluster.local]}}, {name: b, service: {kind: ServiceEntry, hosts: [x.team-a.svc.cluster.local]}}]",
                "spec.workloads[1].service.hosts",
                "also workload \"a\"'s",
            ),
            (
                "workloads: [{name: a}]\nsidecar: {workloadSelector: {}}",
                "spec.sidecar.workloadSelector",
                "every proxy",
            ),
            (
                "workloads: [{name: a}]\nsidecar: {workloadSelector: {app: vm}, egressHosts: [api.example.com]}",
                "spec.sidecar.egressHosts[0]",
                "namespace/host",
            ),
            (
                "workloads: [{name: a}]\nsidecar: {workloadSelector: {'bad key!': x}}",
                "spec.sidecar.workloadSelector",
                "not a valid label",
            ),
        ];
        for (yaml, field, words) in cases {
            let e = check_spec(&spec(yaml), "team-a").unwrap_err();
            assert_eq!(e.field, field, "{yaml}");
            assert!(e.message.contains(words), "{yaml}: {e}");
        }
    }

    #[test]
    fn good_mesh_options_pass() {
        let good = spec(
            "workloads:\n- {name: a, service: {kind: ServiceEntry, hosts: [a.team-a.svc.cluster.local, a-v2.team-a.svc.corp.internal]}}\n- {name: b, service: {kind: Service}}\nsidecar: {workloadSelector: {app: vm}, egressHosts: ['./*', 'istio-system/*', '*/api.example.com', '~/*', 'shared/*.example.com']}",
        );
        check_spec(&good, "team-a").unwrap();
    }

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_selector_that_could_select_another_workloads_entries_is_refused() {
        let api = labels(&[("app", "api")]);
        let api_v2 = labels(&[("app", "api"), ("version", "v2")]);
        let exporter = labels(&[("app", "exporter")]);
        let team = labels(&[("team", "pay")]);
        let by_name = labels(&[(keys::WORKLOAD_NAME, "b")]);
        let none = BTreeMap::new();
        let w = |index, name, labels, has_service| Selectable {
            index,
            name,
            labels,
            workload_name: name,
            has_service,
        };
        // (workloads, copied tags, the error's field or None)
        let cases: Vec<(Vec<Selectable<'_>>, Vec<&str>, Option<&str>)> = vec![
            (
                vec![w(0, "a", &api, true), w(1, "b", &exporter, true)],
                vec![],
                None,
            ),
            // a's selector {app=api} matches b's entries {app=api,version=v2}.
            (
                vec![w(0, "a", &api, true), w(1, "b", &api_v2, false)],
                vec![],
                Some("spec.workloads[0].labels"),
            ),
            // The other way round is fine: b's selector needs version=v2.
            (
                vec![w(0, "a", &api, false), w(1, "b", &api_v2, true)],
                vec![],
                None,
            ),
            // team could come from a copied tag on b's entries.
            (
                vec![w(0, "a", &team, true), w(1, "b", &exporter, false)],
                vec!["team"],
                Some("spec.workloads[0].labels"),
            ),
            (
                vec![w(0, "a", &team, true), w(1, "b", &exporter, false)],
                vec![],
                None,
            ),
            // Every entry carries its workload-name label.
            (
                vec![w(0, "a", &by_name, true), w(1, "b", &exporter, false)],
                vec![],
                Some("spec.workloads[0].labels"),
            ),
            (
                vec![w(0, "a", &none, true)],
                vec![],
                Some("spec.workloads[0].labels"),
            ),
        ];
        for (i, (workloads, tags, want)) in cases.into_iter().enumerate() {
            let tags: BTreeSet<&str> = tags.into_iter().collect();
            let got = check_selectors(&workloads, &tags);
            assert_eq!(
                got.as_ref().err().map(|e| e.field.as_str()),
                want,
                "case {i}: {got:?}"
            );
            if let Err(e) = got
                && workloads.len() > 1
            {
                assert!(
                    e.message.contains("\"a\"") && e.message.contains("\"b\""),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn two_workloads_on_one_port_are_refused() {
        let a = BTreeMap::from([("http".to_string(), 8080)]);
        let b = BTreeMap::from([("web".to_string(), 8080)]);
        let c = BTreeMap::from([("metrics".to_string(), 9100)]);
        check_inbound_ports(&[(0, "a", &a), (1, "c", &c)]).unwrap();
        let e = check_inbound_ports(&[(0, "a", &a), (1, "b", &b)]).unwrap_err();
        assert_eq!(e.field, "spec.workloads[1].ports.web");
        assert!(e.message.contains("workload \"a\"'s port \"http\""), "{e}");
    }
}
