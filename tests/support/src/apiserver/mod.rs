//! An in-process fake Kubernetes API server for tests: CRDs from YAML, the
//! semantics of the real server where meshmirror depends on them, faults and
//! request counters. See the crate README for what is faithful and what is not.

mod authz;
mod clusterip;
mod convert;
mod counters;
mod discovery;
mod events;
pub mod faults;
mod gc;
mod handler;
mod jsonpath;
pub(crate) mod listener;
mod objects;
mod openapi;
pub mod protobuf;
mod request;
mod resources;
mod selector;
mod services;
pub(crate) mod status;
mod store;
mod table;
mod watch;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use axum::Router;
use tokio::sync::watch as tokio_watch;

pub use faults::{Faults, Injected, LoggedWrite, Match, RequestCounts, Verb};
pub use resources::CrdError;

pub(crate) use counters::{Counted, Counters};
pub(crate) use faults::FaultRules;
use listener::Listener;
use resources::{Registry, ResourceDef};
use store::{EventType, Store};

/// Istio's WorkloadEntry, WorkloadGroup, ServiceEntry and Sidecar CRDs,
/// served by default.
pub const ISTIO_CRDS: [&str; 4] = [
    include_str!("../../fixtures/workloadentry-crd.yaml"),
    include_str!("../../fixtures/workloadgroup-crd.yaml"),
    include_str!("../../fixtures/schema/serviceentry-crd.yaml"),
    include_str!("../../fixtures/sidecar-crd.yaml"),
];

/// The server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Crd(#[from] CrdError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// State shared by every request.
#[derive(Debug)]
pub(crate) struct Shared {
    registry: Registry,
    store: Mutex<Store>,
    counters: Counters,
    faults: Arc<Mutex<FaultRules>>,
    close_watches: tokio_watch::Sender<u64>,
    bookmark_interval: Duration,
    addr: SocketAddr,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in one request must not take the whole server down.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }
}

/// Configures and starts an [`ApiServer`].
#[derive(Debug)]
pub struct ApiServerBuilder {
    crds: Vec<ResourceDef>,
    error: Option<CrdError>,
    history: usize,
    listen: SocketAddr,
    bookmark_interval: Duration,
}

impl Default for ApiServerBuilder {
    fn default() -> Self {
        let mut b = ApiServerBuilder {
            crds: Vec::new(),
            error: None,
            history: 100_000,
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            bookmark_interval: Duration::from_secs(5),
        };
        for yaml in ISTIO_CRDS {
            b = b.crd_yaml(yaml);
        }
        b
    }
}

impl ApiServerBuilder {
    /// Serves every CustomResourceDefinition in this (multi-document) YAML; a CRD
    /// for a group and plural already known replaces the earlier one.
    pub fn crd_yaml(mut self, yaml: &str) -> Self {
        match resources::parse_crds(yaml) {
            Ok(crds) => self.crds.extend(crds),
            Err(e) => {
                self.error.get_or_insert(e);
            }
        }
        self
    }

    /// Like [`Self::crd_yaml`], from a file.
    pub fn crd_file(self, path: impl AsRef<Path>) -> Self {
        let path = path.as_ref();
        match std::fs::read_to_string(path) {
            Ok(yaml) => self.crd_yaml(&yaml),
            Err(source) => {
                let mut s = self;
                s.error.get_or_insert(CrdError::Io {
                    path: path.display().to_string(),
                    source,
                });
                s
            }
        }
    }

    /// Watch history kept (events); a watch from an older resourceVersion gets
    /// 410 Expired. Default 100,000.
    pub fn history(mut self, events: usize) -> Self {
        self.history = events.max(1);
        self
    }

    /// Address to listen on. Default 127.0.0.1 with an ephemeral port.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// How often watches with `allowWatchBookmarks` get a BOOKMARK. Default 5 s.
    pub fn bookmark_interval(mut self, every: Duration) -> Self {
        self.bookmark_interval = every;
        self
    }

    /// Starts serving on the Tokio runtime of the caller.
    pub async fn start(self) -> Result<ApiServer, StartError> {
        if let Some(e) = self.error {
            return Err(e.into());
        }
        let registry = Registry::new(self.crds);
        let mut store = Store::new(registry.resources.len(), self.history);
        if let Some(ns) = registry.find("", "v1", "namespaces") {
            store.put(ns, namespace_object("default"), EventType::Added);
        }
        let addr = self.listen;
        // Bind first: the shared state needs the real port for discovery.
        let tcp = listener::bind(addr).map_err(|source| StartError::Listen { addr, source })?;
        let actual = tcp
            .local_addr()
            .map_err(|source| StartError::Listen { addr, source })?;
        let (close_watches, _) = tokio_watch::channel(0);
        let shared = Arc::new(Shared {
            registry,
            store: Mutex::new(store),
            counters: Counters::default(),
            faults: Arc::default(),
            close_watches,
            bookmark_interval: self.bookmark_interval,
            addr: actual,
        });
        let router = Router::new()
            .fallback(handler::handle)
            .with_state(shared.clone());
        let listener = Listener::start(tcp, router).map_err(|source| StartError::Listen {
            addr: actual,
            source,
        })?;
        tracing::info!(url = %format!("http://{actual}"), "fake API server listening");
        Ok(ApiServer { shared, listener })
    }
}

fn namespace_object(name: &str) -> serde_json::Value {
    let mut ns = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    });
    objects::prepare_create(&mut ns, false, &objects::now());
    ns
}

/// A running fake API server. Dropping it stops it.
#[derive(Debug)]
pub struct ApiServer {
    shared: Arc<Shared>,
    listener: Arc<Listener>,
}

impl ApiServer {
    pub fn builder() -> ApiServerBuilder {
        ApiServerBuilder::default()
    }

    /// A server with the Istio CRDs only.
    pub async fn start() -> Result<ApiServer, StartError> {
        Self::builder().start().await
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// A kube client for this server (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        client_for(&self.url(), None)
    }

    /// A kube client that sends `User-Agent: agent` (kube sends none), so
    /// [`Self::requests_from`] counts its requests apart from other clients'.
    pub fn client_as(&self, agent: &str) -> kube::Client {
        client_for(&self.url(), Some(agent))
    }

    /// A kubeconfig (context `meshmirror-testkit`) that kubectl and kube accept.
    pub fn kubeconfig(&self) -> kube::config::Kubeconfig {
        kubeconfig_for(&self.url())
    }

    /// Writes [`Self::kubeconfig`] as YAML.
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        write_kubeconfig(&self.url(), path.as_ref())
    }

    /// Fault injection.
    pub fn faults(&self) -> Faults {
        Faults::new(
            self.shared.faults.clone(),
            self.listener.clone(),
            self.shared.clone(),
        )
    }

    /// Requests counted so far, by verb and resource.
    pub fn requests(&self) -> RequestCounts {
        self.shared.counters.requests()
    }

    /// Requests for a namespaced resource across all namespaces (a list or
    /// watch without a namespace), which a namespace-scoped install's Roles
    /// would refuse.
    pub fn cluster_wide_requests(&self) -> RequestCounts {
        self.shared.counters.cluster_wide()
    }

    /// Requests counted so far from clients whose `User-Agent` is `agent`
    /// (see [`Self::client_as`]).
    pub fn requests_from(&self, agent: &str) -> RequestCounts {
        self.shared.counters.by_agent(agent)
    }

    /// Every write the server carried out so far, in order, with when.
    pub fn write_log(&self) -> Vec<LoggedWrite> {
        self.shared.counters.write_log()
    }

    pub fn reset_requests(&self) {
        self.shared.counters.reset();
    }

    /// The current (latest) resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store().current_rv()
    }

    /// Stops listening and cuts every connection.
    pub async fn shutdown(self) {
        self.listener.stop().await;
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.listener.stop_now();
    }
}

/// A plain-HTTP kube client for `url`, sending `User-Agent: agent` if given.
pub(crate) fn client_for(url: &str, agent: Option<&str>) -> kube::Client {
    let uri: http::Uri = url.parse().expect("server URL is a valid URI");
    let mut config = kube::Config::new(uri);
    if let Some(agent) = agent {
        config.headers.push((
            http::header::USER_AGENT,
            http::HeaderValue::from_str(agent).expect("a User-Agent is header-safe text"),
        ));
    }
    kube::Client::try_from(config).expect("a plain-http kube client always builds")
}

pub(crate) fn kubeconfig_for(url: &str) -> kube::config::Kubeconfig {
    let v = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "meshmirror-testkit", "cluster": {"server": url}}],
        "users": [{"name": "meshmirror-testkit", "user": {}}],
        "contexts": [{"name": "meshmirror-testkit", "context": {
            "cluster": "meshmirror-testkit", "user": "meshmirror-testkit", "namespace": "default"}}],
        "current-context": "meshmirror-testkit",
    });
    serde_json::from_value(v).expect("static kubeconfig shape")
}

pub(crate) fn write_kubeconfig(url: &str, path: &Path) -> std::io::Result<()> {
    let yaml = serde_yaml::to_string(&kubeconfig_for(url)).map_err(std::io::Error::other)?;
    std::fs::write(path, yaml)
}

/// The test kit's own watches: ended through their shared signal, history
/// dropped from the store.
impl faults::Watches for Shared {
    fn close_all(&self) {
        self.close_watches.send_modify(|n| *n += 1);
    }

    fn compact(&self) {
        self.store().compact();
    }
}
