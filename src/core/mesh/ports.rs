//! Ports of the mesh objects: the protocol of a workload port (explicit, or
//! from Istio's `<protocol>[-<suffix>]` naming convention) and the service
//! port clients use.

use std::collections::BTreeMap;

use crate::core::config::{SpecError, err};
use crate::crd::ServicePortSpec;

/// Istio's protocols, as its APIs spell them.
const PROTOCOLS: [&str; 11] = [
    "HTTP", "HTTPS", "HTTP2", "GRPC", "GRPC-Web", "MONGO", "MYSQL", "REDIS", "TCP", "TLS", "UDP",
];

/// A protocol by any case of its name, spelled as Istio's APIs do.
pub fn protocol_named(name: &str) -> Option<&'static str> {
    PROTOCOLS.into_iter().find(|p| p.eq_ignore_ascii_case(name))
}

/// The protocol Istio reads from a port's name: the part before the first
/// `-` (so `grpc-web` reads as GRPC, as istiod reads it). None when the name
/// names no protocol (istiod then sniffs or treats the port as TCP).
pub fn protocol_from_name(port_name: &str) -> Option<&'static str> {
    let prefix = port_name.split('-').next().unwrap_or(port_name);
    protocol_named(prefix)
}

/// One port of a Service or ServiceEntry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePort {
    /// The workload's port name (the WorkloadEntries' `ports` key).
    pub name: String,
    /// The port clients use.
    pub number: u32,
    /// The workload's port on the VM.
    pub target: u32,
    /// Explicit or from the name; None when neither says.
    pub protocol: Option<&'static str>,
}

/// The service ports of one workload: one per workload port, with the
/// overrides of `service.ports`. `field` is the workload's path in the spec.
pub fn service_ports(
    field: &str,
    workload_ports: &BTreeMap<String, u32>,
    overrides: &BTreeMap<String, ServicePortSpec>,
) -> Result<Vec<ServicePort>, SpecError> {
    if workload_ports.is_empty() {
        return Err(err(
            format!("{field}.ports"),
            "is empty, and a service needs at least one port; add e.g. `http: 8080`",
        ));
    }
    if let Some(unknown) = overrides.keys().find(|k| !workload_ports.contains_key(*k)) {
        let known: Vec<&str> = workload_ports.keys().map(String::as_str).collect();
        return Err(err(
            format!("{field}.service.ports.{unknown}"),
            format!(
                "names no port of the workload; use one of {}",
                known.join(", ")
            ),
        ));
    }
    let mut out: Vec<ServicePort> = Vec::new();
    for (name, target) in workload_ports {
        let over = overrides.get(name).cloned().unwrap_or_default();
        let port_field = format!("{field}.service.ports.{name}");
        let number = over.number.unwrap_or(*target);
        if number == 0 || number > 65535 {
            return Err(err(
                format!("{port_field}.number"),
                format!("{number} is not a port; use 1-65535"),
            ));
        }
        let protocol = match &over.protocol {
            Some(p) => Some(protocol_named(p).ok_or_else(|| {
                err(
                    format!("{port_field}.protocol"),
                    format!(
                        "{p:?} is not an Istio protocol; use one of {}",
                        PROTOCOLS.join(", ")
                    ),
                )
            })?),
            None => protocol_from_name(name),
        };
        if let Some(other) = out.iter().find(|p| p.number == number) {
            return Err(err(
                port_field,
                format!(
                    "service port {number} is also port {:?}'s; give each port its own number under service.ports",
                    other.name
                ),
            ));
        }
        out.push(ServicePort {
            name: name.clone(),
            number,
            target: *target,
            protocol,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (workload ports, overrides, the error's field, words in its message)
    type BadPorts<'a> = (
        &'a [(&'a str, u32)],
        Vec<(&'a str, ServicePortSpec)>,
        &'a str,
        &'a str,
    );

    #[test]
    fn protocols_from_names_follow_istio() {
        let cases = [
            ("http", Some("HTTP")),
            ("http-web", Some("HTTP")),
            ("HTTP2", Some("HTTP2")),
            ("grpc-web", Some("GRPC")),
            ("grpc", Some("GRPC")),
            ("tcp-db", Some("TCP")),
            ("tls", Some("TLS")),
            ("https-admin", Some("HTTPS")),
            ("mongo", Some("MONGO")),
            ("web", None),
            ("metrics", None),
            ("httpx", None),
        ];
        for (name, want) in cases {
            assert_eq!(protocol_from_name(name), want, "{name}");
        }
        assert_eq!(protocol_named("grpc-web"), Some("GRPC-Web"));
        assert_eq!(protocol_named("gopher"), None);
    }

    fn ports(pairs: &[(&str, u32)]) -> BTreeMap<String, u32> {
        pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
    }

    fn over(number: Option<u32>, protocol: Option<&str>) -> ServicePortSpec {
        ServicePortSpec {
            number,
            protocol: protocol.map(str::to_string),
        }
    }

    #[test]
    fn service_ports_take_overrides_and_default_to_the_workload_port() {
        let got = service_ports(
            "w",
            &ports(&[("http", 8080), ("admin", 9000)]),
            &BTreeMap::from([
                ("http".to_string(), over(Some(80), None)),
                ("admin".to_string(), over(None, Some("grpc"))),
            ]),
        )
        .unwrap();
        assert_eq!(
            got,
            [
                ServicePort {
                    name: "admin".into(),
                    number: 9000,
                    target: 9000,
                    protocol: Some("GRPC")
                },
                ServicePort {
                    name: "http".into(),
                    number: 80,
                    target: 8080,
                    protocol: Some("HTTP")
                },
            ]
        );
    }

    #[test]
    fn bad_service_ports_name_the_field() {
        let cases: [BadPorts<'_>; 5] = [
            (&[], vec![], "w.ports", "at least one port"),
            (
                &[("http", 80)],
                vec![("htp", over(Some(80), None))],
                "w.service.ports.htp",
                "use one of http",
            ),
            (
                &[("http", 80)],
                vec![("http", over(Some(70000), None))],
                "w.service.ports.http.number",
                "1-65535",
            ),
            (
                &[("http", 80)],
                vec![("http", over(None, Some("SMTP")))],
                "w.service.ports.http.protocol",
                "not an Istio protocol",
            ),
            (
                &[("a", 80), ("b", 81)],
                vec![("b", over(Some(80), None))],
                "w.service.ports.b",
                "also port \"a\"'s",
            ),
        ];
        for (workload, overrides, field, words) in cases {
            let overrides = overrides
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
            let e = service_ports("w", &ports(workload), &overrides).unwrap_err();
            assert_eq!(e.field, field);
            assert!(e.message.contains(words), "{e}");
        }
    }
}
