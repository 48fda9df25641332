//! Whether the mesh can reach the networks a mirror puts its entries on, and
//! Istio's `meshNetworks` block for meshes that configure networks by hand.
//! A pod reaches an endpoint on another network only through that network's
//! gateway. Without one, istiod (sidecar mode) still sends the endpoint with
//! the VM's own address, as if it were directly reachable (tests/istiod_networks.rs
//! shows it), so traffic to it fails where the networks do not route: the
//! condition is the only warning.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::crd::ScalingGroupMirrorSpec;

/// The label that names a network, on istiod's namespace (the cluster's own
/// network) and on gateway Services.
pub const NETWORK_LABEL: &str = "topology.istio.io/network";
/// The port of a network gateway when its Service does not say
/// (`networking.istio.io/gatewayPort`).
pub const DEFAULT_GATEWAY_PORT: u16 = 15443;

/// A network gateway: a Service labelled with the network it serves.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Gateway {
    pub network: String,
    pub namespace: String,
    pub name: String,
    pub port: u16,
}

/// What the mesh's networks look like from the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetworkView {
    /// The cluster's own network, if its istiod namespace names one.
    pub own: Option<String>,
    pub gateways: Vec<Gateway>,
    /// The namespace searched (istiod's).
    pub namespace: String,
}

impl NetworkView {
    /// Whether pods of the mesh can reach endpoints on `network`.
    pub fn reaches(&self, network: &str) -> bool {
        self.own.as_deref() == Some(network) || self.gateways.iter().any(|g| g.network == network)
    }
}

/// The networks a mirror's entries may be on: `network`, `networkByCidr`
/// and the networks of the WorkloadGroups it uses.
pub fn used(spec: &ScalingGroupMirrorSpec, group_networks: &[String]) -> BTreeSet<String> {
    let by_cidr = spec.network_by_cidr.iter().map(|c| c.network.clone());
    spec.network
        .iter()
        .cloned()
        .chain(by_cidr)
        .chain(group_networks.iter().cloned())
        .filter(|n| !n.is_empty())
        .collect()
}

/// The networks of `used` the mesh cannot reach, sorted.
pub fn unreachable(used: &BTreeSet<String>, view: &NetworkView) -> Vec<String> {
    used.iter().filter(|n| !view.reaches(n)).cloned().collect()
}

/// A mirror as the `meshNetworks` block needs it.
#[derive(Clone, Copy, Debug)]
pub struct NetworkedMirror<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    pub spec: &'a ScalingGroupMirrorSpec,
}

/// Istio's `meshNetworks` (the `networks` map): per network, the CIDRs of
/// every mirror's `networkByCidr` as `fromCidr` endpoints, the cluster's own
/// network as `fromRegistry: <cluster>`, and the gateways found.
pub fn mesh_networks(mirrors: &[NetworkedMirror<'_>], view: &NetworkView, cluster: &str) -> Value {
    let mut endpoints: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for mirror in mirrors {
        for by_cidr in &mirror.spec.network_by_cidr {
            endpoints
                .entry(by_cidr.network.clone())
                .or_default()
                .insert(by_cidr.cidr.clone());
        }
        if let Some(network) = &mirror.spec.network {
            endpoints.entry(network.clone()).or_default();
        }
    }
    if let Some(own) = &view.own {
        endpoints.entry(own.clone()).or_default();
    }
    let mut networks = serde_json::Map::new();
    for (network, cidrs) in endpoints {
        let mut listed: Vec<Value> = cidrs.iter().map(|c| json!({"fromCidr": c})).collect();
        if view.own.as_deref() == Some(network.as_str()) {
            listed.push(json!({"fromRegistry": cluster}));
        }
        let gateways: Vec<Value> = view
            .gateways
            .iter()
            .filter(|g| g.network == network)
            .map(|g| {
                json!({
                    "registryServiceName": format!("{}.{}.svc.cluster.local", g.name, g.namespace),
                    "port": g.port,
                })
            })
            .collect();
        let mut entry = json!({"endpoints": listed});
        if !gateways.is_empty() {
            entry["gateways"] = json!(gateways);
        }
        networks.insert(network, entry);
    }
    json!({"networks": networks})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(yaml: &str) -> ScalingGroupMirrorSpec {
        serde_yaml::from_str(&format!(
            "provider: {{sim: {{group: g}}}}\nworkloads: [{{name: a}}]\n{yaml}"
        ))
        .unwrap()
    }

    fn gateway(network: &str) -> Gateway {
        Gateway {
            network: network.into(),
            namespace: "istio-system".into(),
            name: "istio-eastwestgateway".into(),
            port: DEFAULT_GATEWAY_PORT,
        }
    }

    #[test]
    fn a_network_is_reachable_when_it_is_the_clusters_or_has_a_gateway() {
        let spec = spec(
            "network: vm-a\nnetworkByCidr: [{cidr: 10.1.0.0/16, network: vm-b}, {cidr: 10.2.0.0/16, network: net1}]",
        );
        let used = used(&spec, &["vm-c".to_string()]);
        assert_eq!(
            used.iter().map(String::as_str).collect::<Vec<_>>(),
            ["net1", "vm-a", "vm-b", "vm-c"]
        );
        let cases = [
            (None, vec![], vec!["net1", "vm-a", "vm-b", "vm-c"]),
            (Some("net1"), vec![], vec!["vm-a", "vm-b", "vm-c"]),
            (
                Some("net1"),
                vec![gateway("vm-a"), gateway("vm-c")],
                vec!["vm-b"],
            ),
            (
                None,
                vec![
                    gateway("net1"),
                    gateway("vm-a"),
                    gateway("vm-b"),
                    gateway("vm-c"),
                ],
                vec![],
            ),
        ];
        for (own, gateways, want) in cases {
            let view = NetworkView {
                own: own.map(str::to_string),
                gateways,
                namespace: "istio-system".into(),
            };
            assert_eq!(unreachable(&used, &view), want, "{view:?}");
        }
        assert!(super::used(&self::spec(""), &[]).is_empty());
    }

    #[test]
    fn the_mesh_networks_block_gathers_every_mirrors_cidrs() {
        let a = spec("networkByCidr: [{cidr: 10.1.0.0/16, network: vm-net}]");
        let b = spec(
            "networkByCidr: [{cidr: 10.2.0.0/16, network: vm-net}, {cidr: 10.3.0.0/16, network: dc}]",
        );
        let mirrors = [
            NetworkedMirror {
                namespace: "team-a",
                name: "web",
                spec: &a,
            },
            NetworkedMirror {
                namespace: "team-b",
                name: "batch",
                spec: &b,
            },
        ];
        let view = NetworkView {
            own: Some("net1".into()),
            gateways: vec![gateway("vm-net")],
            namespace: "istio-system".into(),
        };
        assert_eq!(
            mesh_networks(&mirrors, &view, "Kubernetes"),
            json!({"networks": {
                "dc": {"endpoints": [{"fromCidr": "10.3.0.0/16"}]},
                "net1": {"endpoints": [{"fromRegistry": "Kubernetes"}]},
                "vm-net": {
                    "endpoints": [{"fromCidr": "10.1.0.0/16"}, {"fromCidr": "10.2.0.0/16"}],
                    "gateways": [{
                        "registryServiceName": "istio-eastwestgateway.istio-system.svc.cluster.local",
                        "port": 15443,
                    }],
                },
            }})
        );
    }
}
