//! A small xDS client that talks to istiod as a proxy would, so tests can
//! assert on what istiod tells proxies about meshmirror's objects.
//!
//! One ADS stream (`StreamAggregatedResources`) over plaintext gRPC to
//! istiod's xDS port, state of the world: a [`DiscoveryRequest`] per type
//! URL, every response ACKed (version and nonce), the latest resources kept
//! per type. Clusters and listeners come whole in each response (the
//! protocol's rule for CDS and LDS); cluster load assignments (EDS) come per
//! cluster and are merged by name.
//!
//! The node is what a real sidecar sends ([`ProxyNode`]): an id
//! `sidecar~<ip>~<pod>.<ns>~<ns>.svc.cluster.local` and Istio's node
//! metadata (`pkg/model/proxy.go`, `NodeMetadata`).
//!
//! Waiting: every `wait_*` takes a description and fails the test with it
//! when its deadline passes, printing what was last received.

pub mod istiod;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::core::v3::{Locality, Metadata, Node, transport_socket};
use envoy_types::pb::envoy::config::endpoint::v3::{ClusterLoadAssignment, lb_endpoint};
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::{
    CertificateValidationContext, UpstreamTlsContext, common_tls_context,
};
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{
    DiscoveryRequest, DiscoveryResponse, Resource,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{StringMatcher, string_matcher};
use envoy_types::pb::google::protobuf::{Any, ListValue, Struct, Value, value::Kind};
use prost::Message;
use tokio::sync::{mpsc, watch};

pub use istiod::Istiod;

/// Type URLs of the resources this client asks for.
pub const CLUSTER: &str = "type.googleapis.com/envoy.config.cluster.v3.Cluster";
pub const LISTENER: &str = "type.googleapis.com/envoy.config.listener.v3.Listener";
pub const ENDPOINT: &str = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment";
const RESOURCE: &str = "type.googleapis.com/envoy.service.discovery.v3.Resource";

/// How long a `wait_*` without its own deadline waits: istiod debounces
/// changes for 100 ms (up to 10 s under load) before it pushes.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The Istio version the clients claim (istiod enables features by the
/// proxy's version): the release line of the istiod that tests run.
pub const ISTIO_VERSION: &str = "1.31.0";

/// A proxy's identity as istiod sees it: the node id and the node metadata.
#[derive(Clone, Debug)]
pub struct ProxyNode {
    pub id: String,
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub locality: Option<(String, String)>,
}

impl ProxyNode {
    /// A sidecar of pod `pod` in `namespace` at `ip`, as istio-agent
    /// describes it: the id, NAMESPACE, NAME, LABELS, INSTANCE_IPS,
    /// SERVICE_ACCOUNT, CLUSTER_ID (Kubernetes: istiod's own cluster),
    /// ISTIO_VERSION, INTERCEPTION_MODE (REDIRECT), MESH_ID, WORKLOAD_NAME.
    /// No NETWORK: the default network, as a pod of a single-network mesh.
    pub fn pod(
        ip: &str,
        pod: &str,
        namespace: &str,
        labels: &[(&str, &str)],
        service_account: &str,
    ) -> ProxyNode {
        let workload = labels
            .iter()
            .find(|(k, _)| *k == "app")
            .map(|(_, v)| v.to_string())
            .unwrap_or_else(|| pod.to_string());
        Self::sidecar(ip, pod, namespace, labels, service_account, &workload)
    }

    /// The sidecar of a VM of a mirrored group: what istio-agent on the VM
    /// sends for a WorkloadEntry (id with the VM's address and host name,
    /// the entry's namespace, labels and service account). Set its network
    /// with [`Self::network`] when the entries have one.
    ///
    /// The labels are those of `ISTIO_METAJSON_LABELS` (cluster.env), which
    /// istio-agent sends twice (`pkg/bootstrap/config.go`): as LABELS and as
    /// STATIC_LABELS. The second matters: istiod takes a proxy's labels
    /// from the WorkloadEntry at its address in its namespace
    /// (`Proxy.SetWorkloadLabels`), keeping only STATIC_LABELS of what the
    /// proxy sent, so a Sidecar selects a VM's proxy by either.
    pub fn vm(
        ip: &str,
        hostname: &str,
        namespace: &str,
        labels: &[(&str, &str)],
        service_account: &str,
        workload: &str,
    ) -> ProxyNode {
        let mut node = Self::sidecar(ip, hostname, namespace, labels, service_account, workload);
        let static_labels = node.metadata["LABELS"].clone();
        node.metadata.insert("STATIC_LABELS".into(), static_labels);
        node
    }

    fn sidecar(
        ip: &str,
        name: &str,
        namespace: &str,
        labels: &[(&str, &str)],
        service_account: &str,
        workload: &str,
    ) -> ProxyNode {
        let labels: serde_json::Map<String, serde_json::Value> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let metadata = serde_json::json!({
            "NAME": name,
            "NAMESPACE": namespace,
            "LABELS": labels,
            "INSTANCE_IPS": ip,
            "SERVICE_ACCOUNT": service_account,
            "WORKLOAD_NAME": workload,
            "CLUSTER_ID": "Kubernetes",
            "MESH_ID": "cluster.local",
            "ISTIO_VERSION": ISTIO_VERSION,
            "INTERCEPTION_MODE": "REDIRECT",
            "ENVOY_STATUS_PORT": 15021,
            "ENVOY_PROMETHEUS_PORT": 15090,
        });
        let serde_json::Value::Object(metadata) = metadata else {
            unreachable!("a JSON object")
        };
        ProxyNode {
            id: format!("sidecar~{ip}~{name}.{namespace}~{namespace}.svc.cluster.local"),
            metadata,
            locality: None,
        }
    }

    /// The proxy's network (NETWORK).
    pub fn network(mut self, network: &str) -> ProxyNode {
        self.metadata
            .insert("NETWORK".into(), serde_json::Value::from(network));
        self
    }

    /// Any other metadata field.
    pub fn meta(mut self, key: &str, value: serde_json::Value) -> ProxyNode {
        self.metadata.insert(key.into(), value);
        self
    }

    /// The proxy's locality (region, zone).
    pub fn locality(mut self, region: &str, zone: &str) -> ProxyNode {
        self.locality = Some((region.into(), zone.into()));
        self
    }

    fn to_node(&self) -> Node {
        let cluster = self
            .metadata
            .get("WORKLOAD_NAME")
            .and_then(|v| v.as_str())
            .zip(self.metadata.get("NAMESPACE").and_then(|v| v.as_str()))
            .map(|(w, ns)| format!("{w}.{ns}"))
            .unwrap_or_default();
        Node {
            id: self.id.clone(),
            cluster,
            metadata: Some(json_to_struct(&self.metadata)),
            locality: self.locality.as_ref().map(|(region, zone)| Locality {
                region: region.clone(),
                zone: zone.clone(),
                sub_zone: String::new(),
            }),
            user_agent_name: "envoy".into(),
            ..Node::default()
        }
    }
}

/// What the client holds for one type URL.
#[derive(Default)]
struct TypeState {
    /// Names asked for (empty: all, for clusters and listeners).
    subscribed: BTreeSet<String>,
    /// The last version and nonce received (and ACKed).
    version: String,
    nonce: String,
    responses: u64,
    resources: BTreeMap<String, Any>,
    /// Names received at least once.
    seen: BTreeSet<String>,
}

#[derive(Default)]
struct State {
    types: BTreeMap<String, TypeState>,
    /// Why the stream ended, when it did.
    ended: Option<String>,
    /// The last responses, one line each, for failure messages.
    log: Vec<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One proxy's ADS stream to istiod. Ends the stream when dropped.
pub struct XdsClient {
    addr: SocketAddr,
    node: ProxyNode,
    requests: mpsc::UnboundedSender<DiscoveryRequest>,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for XdsClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XdsClient")
            .field("addr", &self.addr)
            .field("node", &self.node.id)
            .finish()
    }
}

impl Drop for XdsClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl XdsClient {
    /// Opens the ADS stream to istiod's plaintext xDS port at `addr`.
    /// Panics, failing the test, when it cannot connect.
    pub async fn connect(addr: SocketAddr, node: ProxyNode) -> XdsClient {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
            .expect("an http URL")
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to istiod's xDS port {addr}: {e}"));
        // CDS and LDS for a whole mesh are larger than gRPC's default 4 MiB.
        let mut client =
            AggregatedDiscoveryServiceClient::new(channel).max_decoding_message_size(256 << 20);
        let (tx, rx) = mpsc::unbounded_channel::<DiscoveryRequest>();
        let stream = tokio_stream::wrappers::UnboundedReceiverStream::new(rx);
        let (changed, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            changed,
        });
        // Istio wants the node in the stream's first request: a CDS request
        // for every cluster, as Envoy starts.
        {
            let mut state = shared.lock();
            state.types.entry(CLUSTER.into()).or_default();
        }
        tx.send(DiscoveryRequest {
            node: Some(node.to_node()),
            type_url: CLUSTER.into(),
            ..DiscoveryRequest::default()
        })
        .expect("the request channel is open");
        let response = client
            .stream_aggregated_resources(tonic::Request::new(stream))
            .await
            .unwrap_or_else(|e| panic!("istiod at {addr} refused the ADS stream: {e}"));
        let mut inbound = response.into_inner();
        let task = {
            let (shared, tx) = (shared.clone(), tx.clone());
            tokio::spawn(async move {
                loop {
                    let ended = match inbound.message().await {
                        Ok(Some(resp)) => {
                            if let Some(ack) = receive(&shared, resp) {
                                let _ = tx.send(ack);
                            }
                            shared.changed.send_modify(|n| *n += 1);
                            continue;
                        }
                        Ok(None) => "istiod ended the stream".to_string(),
                        Err(status) => format!("the stream failed: {status}"),
                    };
                    shared.lock().ended = Some(ended);
                    shared.changed.send_modify(|n| *n += 1);
                    return;
                }
            })
        };
        XdsClient {
            addr,
            node,
            requests: tx,
            shared,
            task,
        }
    }

    pub fn node(&self) -> &ProxyNode {
        &self.node
    }

    /// Adds `names` to the subscription of `type_url` (none: everything) and
    /// sends the request, with the last version and nonce of that type.
    pub fn subscribe(&self, type_url: &str, names: &[&str]) {
        let request = {
            let mut state = self.shared.lock();
            let fresh = !state.types.contains_key(type_url);
            let t = state.types.entry(type_url.to_string()).or_default();
            let before = t.subscribed.len();
            t.subscribed.extend(names.iter().map(|n| n.to_string()));
            if !fresh && t.subscribed.len() == before {
                return;
            }
            DiscoveryRequest {
                version_info: t.version.clone(),
                response_nonce: t.nonce.clone(),
                type_url: type_url.to_string(),
                resource_names: t.subscribed.iter().cloned().collect(),
                ..DiscoveryRequest::default()
            }
        };
        self.requests
            .send(request)
            .expect("the stream's request channel is open");
    }

    /// Every cluster (CDS) istiod sends this proxy, once it has answered.
    pub async fn clusters(&self) -> Vec<Cluster> {
        self.subscribe(CLUSTER, &[]);
        self.wait_state("the first CDS response", DEADLINE, |s| {
            responded(s, CLUSTER).then(|| decode_all::<Cluster>(s, CLUSTER))
        })
        .await
    }

    /// Every listener (LDS) istiod sends this proxy, once it has answered.
    pub async fn listeners(&self) -> Vec<Listener> {
        self.subscribe(LISTENER, &[]);
        self.wait_state("the first LDS response", DEADLINE, |s| {
            responded(s, LISTENER).then(|| decode_all::<Listener>(s, LISTENER))
        })
        .await
    }

    /// The latest load assignments (EDS) of `clusters`, once istiod has sent
    /// one for each.
    pub async fn endpoints(&self, clusters: &[&str]) -> Vec<ClusterLoadAssignment> {
        self.subscribe(ENDPOINT, clusters);
        let what = format!("EDS for {clusters:?}");
        self.wait_state(&what, DEADLINE, |s| {
            let t = s.types.get(ENDPOINT)?;
            clusters
                .iter()
                .map(|c| {
                    t.resources
                        .get(*c)
                        .map(|any| decode::<ClusterLoadAssignment>(any, ENDPOINT))
                })
                .collect::<Option<Vec<_>>>()
        })
        .await
    }

    /// Waits (up to [`DEADLINE`]) until `done` holds for the latest EDS of
    /// `cluster`, and returns those endpoints; fails the test with `what`
    /// and the endpoints last received when it does not.
    pub async fn wait_endpoints(
        &self,
        cluster: &str,
        what: &str,
        done: impl Fn(&[EdsEndpoint]) -> bool,
    ) -> Vec<EdsEndpoint> {
        self.wait_endpoints_within(cluster, what, DEADLINE, done)
            .await
    }

    pub async fn wait_endpoints_within(
        &self,
        cluster: &str,
        what: &str,
        deadline: Duration,
        done: impl Fn(&[EdsEndpoint]) -> bool,
    ) -> Vec<EdsEndpoint> {
        self.subscribe(ENDPOINT, &[cluster]);
        let what = format!("{what} (EDS of {cluster})");
        self.wait_state(&what, deadline, |s| {
            let cla = s
                .types
                .get(ENDPOINT)?
                .resources
                .get(cluster)
                .map(|any| decode::<ClusterLoadAssignment>(any, ENDPOINT))?;
            let endpoints = EdsEndpoint::all(&cla);
            done(&endpoints).then_some(endpoints)
        })
        .await
    }

    /// Waits until `done` holds for the cluster named `name` in the latest
    /// CDS (`None` while it has none of that name), and returns it.
    pub async fn wait_cluster(
        &self,
        name: &str,
        what: &str,
        done: impl Fn(Option<&Cluster>) -> bool,
    ) -> Option<Cluster> {
        self.subscribe(CLUSTER, &[]);
        let what = format!("{what} (cluster {name} in CDS)");
        self.wait_state(&what, DEADLINE, |s| {
            if !responded(s, CLUSTER) {
                return None;
            }
            let cluster = s.types[CLUSTER]
                .resources
                .get(name)
                .map(|any| decode::<Cluster>(any, CLUSTER));
            done(cluster.as_ref()).then_some(cluster)
        })
        .await
    }

    /// Waits until `done` holds for the latest CDS (every cluster) and
    /// returns it; fails the test with `what` and what was received.
    pub async fn wait_clusters(
        &self,
        what: &str,
        done: impl Fn(&[Cluster]) -> bool,
    ) -> Vec<Cluster> {
        self.subscribe(CLUSTER, &[]);
        let what = format!("{what} (CDS)");
        self.wait_state(&what, DEADLINE, |s| {
            if !responded(s, CLUSTER) {
                return None;
            }
            let all = decode_all::<Cluster>(s, CLUSTER);
            done(&all).then_some(all)
        })
        .await
    }

    /// Waits until `done` holds for the latest LDS (every listener) and
    /// returns it; fails the test with `what` and what was received.
    pub async fn wait_listeners(
        &self,
        what: &str,
        done: impl Fn(&[Listener]) -> bool,
    ) -> Vec<Listener> {
        self.subscribe(LISTENER, &[]);
        let what = format!("{what} (LDS)");
        self.wait_state(&what, DEADLINE, |s| {
            if !responded(s, LISTENER) {
                return None;
            }
            let all = decode_all::<Listener>(s, LISTENER);
            done(&all).then_some(all)
        })
        .await
    }

    /// Polls `get` over the client's state at every response until it gives
    /// `Some`; fails the test after `deadline` with what was received.
    async fn wait_state<T>(
        &self,
        what: &str,
        deadline: Duration,
        get: impl Fn(&State) -> Option<T>,
    ) -> T {
        let started = Instant::now();
        let mut changes = self.shared.changed.subscribe();
        loop {
            {
                let state = self.shared.lock();
                if let Some(found) = get(&state) {
                    return found;
                }
                if let Some(ended) = &state.ended {
                    panic!(
                        "waiting for {what}: {ended} (proxy {}, istiod {})\n{}",
                        self.node.id,
                        self.addr,
                        describe(&state)
                    );
                }
            }
            let left = deadline.saturating_sub(started.elapsed());
            if left.is_zero() || tokio::time::timeout(left, changes.changed()).await.is_err() {
                let state = self.shared.lock();
                if let Some(found) = get(&state) {
                    return found;
                }
                panic!(
                    "timed out after {deadline:?} waiting for {what} (proxy {}, istiod {})\n{}",
                    self.node.id,
                    self.addr,
                    describe(&state)
                );
            }
        }
    }
}

/// Stores a response and returns its ACK.
fn receive(shared: &Shared, resp: DiscoveryResponse) -> Option<DiscoveryRequest> {
    let mut state = shared.lock();
    let type_url = resp.type_url.clone();
    let mut named = BTreeMap::new();
    for any in resp.resources {
        let any = unwrap_resource(any);
        named.insert(resource_name(&type_url, &any), any);
    }
    let line = format!(
        "{} version {} nonce {}: {} resources{}",
        short_type(&type_url),
        resp.version_info,
        resp.nonce,
        named.len(),
        if type_url == ENDPOINT {
            format!(" {:?}", named.keys().collect::<Vec<_>>())
        } else {
            String::new()
        }
    );
    state.log.push(line);
    if state.log.len() > 20 {
        state.log.remove(0);
    }
    let t = state.types.entry(type_url.clone()).or_default();
    t.responses += 1;
    t.version = resp.version_info.clone();
    t.nonce = resp.nonce.clone();
    t.seen.extend(named.keys().cloned());
    if type_url == CLUSTER || type_url == LISTENER {
        // State of the world: the response is the whole set.
        t.resources = named;
    } else {
        t.resources.extend(named);
    }
    Some(DiscoveryRequest {
        version_info: resp.version_info,
        response_nonce: resp.nonce,
        type_url,
        resource_names: t.subscribed.iter().cloned().collect(),
        ..DiscoveryRequest::default()
    })
}

fn responded(state: &State, type_url: &str) -> bool {
    state.types.get(type_url).is_some_and(|t| t.responses > 0)
}

/// A resource wrapped in `envoy.service.discovery.v3.Resource` (as istiod
/// may send them), unwrapped.
fn unwrap_resource(any: Any) -> Any {
    if any.type_url != RESOURCE {
        return any;
    }
    match Resource::decode(any.value.as_slice()) {
        Ok(Resource {
            resource: Some(inner),
            ..
        }) => inner,
        _ => any,
    }
}

fn resource_name(type_url: &str, any: &Any) -> String {
    let bytes = any.value.as_slice();
    match type_url {
        CLUSTER => Cluster::decode(bytes).map(|c| c.name).unwrap_or_default(),
        LISTENER => Listener::decode(bytes).map(|l| l.name).unwrap_or_default(),
        ENDPOINT => ClusterLoadAssignment::decode(bytes)
            .map(|c| c.cluster_name)
            .unwrap_or_default(),
        _ => String::new(),
    }
}

fn decode<M: Message + Default>(any: &Any, type_url: &str) -> M {
    M::decode(any.value.as_slice())
        .unwrap_or_else(|e| panic!("istiod sent a {type_url} that does not decode: {e}"))
}

fn decode_all<M: Message + Default>(state: &State, type_url: &str) -> Vec<M> {
    state.types[type_url]
        .resources
        .values()
        .map(|any| decode(any, type_url))
        .collect()
}

fn short_type(type_url: &str) -> &str {
    match type_url {
        CLUSTER => "CDS",
        LISTENER => "LDS",
        ENDPOINT => "EDS",
        other => other.rsplit('/').next().unwrap_or(other),
    }
}

/// What the client holds, for failure messages: per type the subscription
/// and resource names, the endpoints of every load assignment, and the last
/// responses.
fn describe(state: &State) -> String {
    let mut out = String::new();
    for (type_url, t) in &state.types {
        out.push_str(&format!(
            "{}: {} responses, version {:?}, subscribed {:?}\n",
            short_type(type_url),
            t.responses,
            t.version,
            t.subscribed
        ));
        if type_url == ENDPOINT {
            for (name, any) in &t.resources {
                let cla = decode::<ClusterLoadAssignment>(any, ENDPOINT);
                let endpoints = EdsEndpoint::all(&cla);
                out.push_str(&format!("  {name}: {} endpoints\n", endpoints.len()));
                for e in endpoints {
                    out.push_str(&format!("    {e}\n"));
                }
            }
        } else {
            let names: Vec<&String> = t.resources.keys().collect();
            let shown: Vec<&&String> = names.iter().take(40).collect();
            out.push_str(&format!(
                "  {} resources: {shown:?}{}\n",
                names.len(),
                if names.len() > 40 { " ..." } else { "" }
            ));
        }
    }
    out.push_str("last responses:\n");
    for line in &state.log {
        out.push_str(&format!("  {line}\n"));
    }
    out
}

/// One endpoint of a cluster load assignment, flattened: what a test
/// asserts on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EdsEndpoint {
    /// The socket address's IP and port.
    pub address: String,
    pub port: u32,
    /// The locality of the endpoint's group (`LocalityLbEndpoints`).
    pub region: String,
    pub zone: String,
    pub sub_zone: String,
    /// `LbEndpoint.load_balancing_weight` (unset: 0).
    pub weight: u32,
    /// Envoy's `HealthStatus` name (`HEALTHY`, `UNHEALTHY`, `UNKNOWN`, ...).
    pub health: String,
    /// The endpoint's metadata (`filter_metadata`) as JSON.
    pub metadata: serde_json::Value,
    /// The locality group's priority.
    pub priority: u32,
}

impl EdsEndpoint {
    /// Every endpoint of `cla`, sorted by address and port.
    pub fn all(cla: &ClusterLoadAssignment) -> Vec<EdsEndpoint> {
        let mut out = Vec::new();
        for group in &cla.endpoints {
            let locality = group.locality.clone().unwrap_or_default();
            for lb in &group.lb_endpoints {
                let (address, port) = match &lb.host_identifier {
                    Some(lb_endpoint::HostIdentifier::Endpoint(e)) => {
                        socket_address(e.address.as_ref())
                    }
                    _ => (String::new(), 0),
                };
                out.push(EdsEndpoint {
                    address,
                    port,
                    region: locality.region.clone(),
                    zone: locality.zone.clone(),
                    sub_zone: locality.sub_zone.clone(),
                    weight: lb.load_balancing_weight.as_ref().map_or(0, |w| w.value),
                    health: health_name(lb.health_status).to_string(),
                    metadata: metadata_json(lb.metadata.as_ref()),
                    priority: group.priority,
                });
            }
        }
        out.sort_by(|a, b| (&a.address, a.port).cmp(&(&b.address, b.port)));
        out
    }

    /// A string field of the metadata: `filter` then `key`
    /// (`("istio", "workload")`, `("envoy.transport_socket_match", "tlsMode")`).
    pub fn meta(&self, filter: &str, key: &str) -> Option<&str> {
        self.metadata.get(filter)?.get(key)?.as_str()
    }
}

impl fmt::Display for EdsEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{} locality {}/{}{} weight {} {} priority {} metadata {}",
            self.address,
            self.port,
            self.region,
            self.zone,
            if self.sub_zone.is_empty() {
                String::new()
            } else {
                format!("/{}", self.sub_zone)
            },
            self.weight,
            self.health,
            self.priority,
            self.metadata
        )
    }
}

fn socket_address(
    address: Option<&envoy_types::pb::envoy::config::core::v3::Address>,
) -> (String, u32) {
    use envoy_types::pb::envoy::config::core::v3::{address, socket_address};
    match address.and_then(|a| a.address.as_ref()) {
        Some(address::Address::SocketAddress(s)) => {
            let port = match s.port_specifier {
                Some(socket_address::PortSpecifier::PortValue(p)) => p,
                _ => 0,
            };
            (s.address.clone(), port)
        }
        Some(other) => (format!("{other:?}"), 0),
        None => (String::new(), 0),
    }
}

/// Envoy's `config.core.v3.HealthStatus` names.
pub fn health_name(status: i32) -> &'static str {
    match status {
        0 => "UNKNOWN",
        1 => "HEALTHY",
        2 => "UNHEALTHY",
        3 => "DRAINING",
        4 => "TIMEOUT",
        5 => "DEGRADED",
        _ => "?",
    }
}

/// The subject alt names a cluster's proxy accepts from the servers it
/// connects to over Istio mutual TLS: those of every `UpstreamTlsContext`
/// in the cluster's transport socket and transport socket matches, in
/// order, exact values and prefixes (`prefix:` before the latter).
pub fn cluster_sans(cluster: &Cluster) -> Vec<String> {
    let mut sockets: Vec<&envoy_types::pb::envoy::config::core::v3::TransportSocket> = cluster
        .transport_socket_matches
        .iter()
        .filter_map(|m| m.transport_socket.as_ref())
        .collect();
    sockets.extend(cluster.transport_socket.as_ref());
    let mut out = Vec::new();
    for socket in sockets {
        let Some(transport_socket::ConfigType::TypedConfig(any)) = &socket.config_type else {
            continue;
        };
        if !any.type_url.ends_with("UpstreamTlsContext") {
            continue;
        }
        let Ok(tls) = UpstreamTlsContext::decode(any.value.as_slice()) else {
            continue;
        };
        let contexts: Vec<CertificateValidationContext> = match tls
            .common_tls_context
            .and_then(|c| c.validation_context_type)
        {
            Some(common_tls_context::ValidationContextType::ValidationContext(v)) => vec![v],
            Some(common_tls_context::ValidationContextType::CombinedValidationContext(c)) => {
                c.default_validation_context.into_iter().collect()
            }
            _ => vec![],
        };
        for v in contexts {
            #[allow(deprecated)]
            let plain = v.match_subject_alt_names.iter();
            let typed = v
                .match_typed_subject_alt_names
                .iter()
                .filter_map(|m| m.matcher.as_ref());
            for m in typed.chain(plain) {
                if let Some(s) = matcher_string(m)
                    && !out.contains(&s)
                {
                    out.push(s);
                }
            }
        }
    }
    out
}

fn matcher_string(m: &StringMatcher) -> Option<String> {
    match m.match_pattern.as_ref()? {
        string_matcher::MatchPattern::Exact(s) => Some(s.clone()),
        string_matcher::MatchPattern::Prefix(s) => Some(format!("prefix:{s}")),
        other => Some(format!("{other:?}")),
    }
}

/// One filter chain of a listener, flattened: what a test asserts on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FilterChain {
    /// The chain's name (`virtualInbound`, `<ip>_<port>`, ...).
    pub name: String,
    /// `filter_chain_match.destination_port` (unset: `None`).
    pub destination_port: Option<u32>,
    /// `filter_chain_match.transport_protocol` (`tls`, `raw_buffer`, empty).
    pub transport_protocol: String,
    /// `filter_chain_match.application_protocols`.
    pub application_protocols: Vec<String>,
    /// The names of the chain's network filters, in order.
    pub filters: Vec<String>,
    /// The cluster of the chain's TCP proxy filter, if it has one with a
    /// single cluster.
    pub tcp_proxy_cluster: Option<String>,
}

/// Every filter chain of `listener`, in the listener's order.
pub fn filter_chains(listener: &Listener) -> Vec<FilterChain> {
    listener
        .filter_chains
        .iter()
        .map(|fc| {
            let m = fc.filter_chain_match.clone().unwrap_or_default();
            FilterChain {
                name: fc.name.clone(),
                destination_port: m.destination_port.map(|p| p.value),
                transport_protocol: m.transport_protocol,
                application_protocols: m.application_protocols,
                filters: fc.filters.iter().map(|f| f.name.clone()).collect(),
                tcp_proxy_cluster: fc.filters.iter().find_map(tcp_proxy_cluster),
            }
        })
        .collect()
}

fn tcp_proxy_cluster(
    filter: &envoy_types::pb::envoy::config::listener::v3::Filter,
) -> Option<String> {
    use envoy_types::pb::envoy::config::listener::v3::filter::ConfigType;
    use envoy_types::pb::envoy::extensions::filters::network::tcp_proxy::v3::{
        TcpProxy, tcp_proxy::ClusterSpecifier,
    };
    let Some(ConfigType::TypedConfig(any)) = &filter.config_type else {
        return None;
    };
    if !any.type_url.ends_with("tcp_proxy.v3.TcpProxy") {
        return None;
    }
    match TcpProxy::decode(any.value.as_slice())
        .ok()?
        .cluster_specifier?
    {
        ClusterSpecifier::Cluster(name) => Some(name),
        _ => None,
    }
}

/// The port a listener binds (its socket address's port).
pub fn listener_port(listener: &Listener) -> u32 {
    socket_address(listener.address.as_ref()).1
}

/// The endpoints (address, port) of a cluster's inline load assignment
/// (a STATIC cluster's, such as an inbound cluster of a Sidecar's ingress
/// listener with a `defaultEndpoint`), sorted.
pub fn cluster_static_endpoints(cluster: &Cluster) -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = cluster
        .load_assignment
        .as_ref()
        .map(|cla| {
            EdsEndpoint::all(cla)
                .into_iter()
                .map(|e| (e.address, e.port))
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// The names of the transport socket matches of a cluster (Istio's
/// `tlsMode-istio` and `tlsMode-disabled` when auto mTLS applies).
pub fn transport_socket_match_names(cluster: &Cluster) -> Vec<String> {
    cluster
        .transport_socket_matches
        .iter()
        .map(|m| m.name.clone())
        .collect()
}

fn metadata_json(metadata: Option<&Metadata>) -> serde_json::Value {
    let mut out = serde_json::Map::new();
    if let Some(m) = metadata {
        let mut keys: Vec<&String> = m.filter_metadata.keys().collect();
        keys.sort();
        for k in keys {
            out.insert(k.clone(), struct_to_json(&m.filter_metadata[k]));
        }
    }
    serde_json::Value::Object(out)
}

/// A protobuf `Struct` as JSON.
pub fn struct_to_json(s: &Struct) -> serde_json::Value {
    let mut keys: Vec<&String> = s.fields.keys().collect();
    keys.sort();
    serde_json::Value::Object(
        keys.into_iter()
            .map(|k| (k.clone(), value_to_json(&s.fields[k])))
            .collect(),
    )
}

fn value_to_json(v: &Value) -> serde_json::Value {
    match &v.kind {
        None | Some(Kind::NullValue(_)) => serde_json::Value::Null,
        Some(Kind::NumberValue(n)) => serde_json::json!(n),
        Some(Kind::StringValue(s)) => serde_json::Value::from(s.clone()),
        Some(Kind::BoolValue(b)) => serde_json::Value::from(*b),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => l.values.iter().map(value_to_json).collect(),
    }
}

/// JSON as a protobuf `Struct` (the node metadata).
pub fn json_to_struct(map: &serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct {
        fields: map
            .iter()
            .map(|(k, v)| (k.clone(), json_to_value(v)))
            .collect(),
    }
}

fn json_to_value(v: &serde_json::Value) -> Value {
    let kind = match v {
        serde_json::Value::Null => Kind::NullValue(0),
        serde_json::Value::Bool(b) => Kind::BoolValue(*b),
        serde_json::Value::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        serde_json::Value::String(s) => Kind::StringValue(s.clone()),
        serde_json::Value::Array(a) => Kind::ListValue(ListValue {
            values: a.iter().map(json_to_value).collect(),
        }),
        serde_json::Value::Object(o) => Kind::StructValue(json_to_struct(o)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pod_node_has_the_sidecar_id_and_istios_metadata_names() {
        let node = ProxyNode::pod(
            "10.244.0.7",
            "sleep-1",
            "client",
            &[("app", "sleep")],
            "sleep",
        )
        .network("net-a");
        assert_eq!(
            node.id,
            "sidecar~10.244.0.7~sleep-1.client~client.svc.cluster.local"
        );
        let pb = node.to_node();
        let meta = struct_to_json(pb.metadata.as_ref().unwrap());
        assert_eq!(meta["NAMESPACE"], "client");
        assert_eq!(meta["CLUSTER_ID"], "Kubernetes");
        assert_eq!(meta["LABELS"]["app"], "sleep");
        assert_eq!(meta["NETWORK"], "net-a");
        assert_eq!(meta["INTERCEPTION_MODE"], "REDIRECT");
        assert_eq!(pb.cluster, "sleep.client");
    }

    #[test]
    fn a_vm_node_sends_its_labels_as_static_labels_too() {
        let node = ProxyNode::vm(
            "10.0.0.5",
            "i-05",
            "shop",
            &[("app", "api"), ("class", "web-vm")],
            "api-sa",
            "api",
        );
        assert_eq!(node.id, "sidecar~10.0.0.5~i-05.shop~shop.svc.cluster.local");
        let meta = struct_to_json(node.to_node().metadata.as_ref().unwrap());
        let labels = serde_json::json!({"app": "api", "class": "web-vm"});
        assert_eq!(meta["LABELS"], labels);
        assert_eq!(meta["STATIC_LABELS"], labels);
    }

    #[test]
    fn json_and_struct_round_trip() {
        let v = serde_json::json!({"a": "x", "b": true, "c": [1.0, "y"], "d": {"e": null}});
        let serde_json::Value::Object(map) = v.clone() else {
            unreachable!()
        };
        assert_eq!(struct_to_json(&json_to_struct(&map)), v);
    }
}
