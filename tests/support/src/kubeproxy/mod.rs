//! A proxy in front of a real kube-apiserver that gives a test what the test
//! kit's own server gives it: request counts (by verb and resource, by
//! client, across all namespaces), the log of writes, injected faults
//! (429/409/500/503, delays, ended watches, 410 after a "compaction", going
//! down), and namespaces of its own on a control plane shared by the whole
//! test run ([`tenancy`]).
//!
//! It serves plain HTTP/1.1 on 127.0.0.1 and forwards over TLS with the
//! admin's credentials, or with the client's own bearer token when it sends
//! one (a ServiceAccount's, so RBAC applies as it would in a cluster).
//! Everything else is the real server's: admission, validation, server-side
//! apply, watches, garbage collection.

mod forward;
pub mod identity;
mod route;
pub mod tenancy;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use tokio::sync::watch as tokio_watch;

use crate::apiserver::faults::Watches;
use crate::apiserver::listener::{self, Listener};
use crate::apiserver::{
    Counters, FaultRules, Faults, LoggedWrite, RequestCounts, client_for, kubeconfig_for,
    write_kubeconfig,
};
use crate::realkube::RealKube;
use tenancy::Tenancy;

/// Shared by every request of one proxy.
struct ProxyState {
    admin: kube::Client,
    /// The real server's admin kubeconfig, for clients of other tokens.
    kubeconfig: PathBuf,
    by_token: Mutex<HashMap<String, kube::Client>>,
    tenancy: Tenancy,
    /// The test's namespaces created on the server so far.
    ensured: tokio::sync::Mutex<HashSet<String>>,
    counters: Counters,
    faults: Arc<Mutex<FaultRules>>,
    close_watches: tokio_watch::Sender<u64>,
    versions: Arc<Mutex<Versions>>,
    /// The service's ServiceAccount token, once set up.
    service_token: tokio::sync::OnceCell<String>,
}

/// The resourceVersions and continue tokens seen, for playing compaction.
#[derive(Debug, Default)]
struct Versions {
    /// The highest resourceVersion an answer carried.
    highest: u64,
    /// A watch from below this one gets 410 Expired.
    compacted_below: u64,
    issued_tokens: HashSet<String>,
    expired_tokens: HashSet<String>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A running proxy; stops listening when dropped. The test's namespaces
/// stay on the shared server until the run ends (its control plane is
/// thrown away then).
pub struct KubeProxy {
    state: Arc<ProxyState>,
    listener: Arc<Listener>,
}

impl KubeProxy {
    /// A proxy with namespaces of its own in front of `kube`.
    pub async fn start(kube: &RealKube) -> std::io::Result<KubeProxy> {
        let id: String = {
            use rand::Rng;
            let mut rng = rand::rng();
            (0..6)
                .map(|_| {
                    char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)])
                })
                .collect()
        };
        let (close_watches, _) = tokio_watch::channel(0);
        let state = Arc::new(ProxyState {
            admin: kube.admin().await,
            kubeconfig: kube.kubeconfig().to_path_buf(),
            by_token: Mutex::default(),
            tenancy: Tenancy::new(&format!("mm{id}")),
            ensured: tokio::sync::Mutex::default(),
            counters: Counters::default(),
            faults: Arc::default(),
            close_watches,
            versions: Arc::default(),
            service_token: tokio::sync::OnceCell::new(),
        });
        let tcp = listener::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let router = Router::new()
            .fallback(forward::handle)
            .with_state(state.clone());
        let listener = Listener::start(tcp, router)?;
        Ok(KubeProxy { state, listener })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener.addr()
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// The prefix this test's namespaces carry on the real server.
    pub fn namespace_prefix(&self) -> &str {
        self.state.tenancy.prefix()
    }

    /// A client with the admin's rights, in the test's namespaces.
    pub fn client(&self) -> kube::Client {
        client_for(&self.url(), None)
    }

    /// The same, sending `User-Agent: agent` (see [`Self::requests_from`]).
    pub fn client_as(&self, agent: &str) -> kube::Client {
        client_for(&self.url(), Some(agent))
    }

    pub fn kubeconfig(&self) -> kube::config::Kubeconfig {
        kubeconfig_for(&self.url())
    }

    /// An admin client whose requests the proxy neither counts nor faults.
    fn setup_client(&self) -> kube::Client {
        let uri: http::Uri = self.url().parse().expect("the proxy's URL is a URI");
        let mut config = kube::Config::new(uri);
        config.headers.push((
            http::HeaderName::from_static(forward::SETUP_HEADER),
            http::HeaderValue::from_static("1"),
        ));
        kube::Client::try_from(config).expect("a plain-http kube client always builds")
    }

    /// A client as the service itself: the shipped ServiceAccount with the
    /// shipped ClusterRole and leader-election Role (in the test's
    /// `meshmirror-system`), through this proxy, sending `User-Agent: agent`
    /// if given. Panics, failing the test, if the identity cannot be set up.
    pub async fn service_client(&self, agent: Option<&str>) -> kube::Client {
        let token = self
            .state
            .service_token
            .get_or_init(|| async {
                let token =
                    identity::service_token(&self.setup_client(), self.state.tenancy.prefix())
                        .await
                        .unwrap_or_else(|e| {
                            panic!("the service's identity on the real server: {e}")
                        });
                let mut probe = self.token_config(&token);
                probe.headers.push((
                    http::HeaderName::from_static(forward::SETUP_HEADER),
                    http::HeaderValue::from_static("1"),
                ));
                let probe =
                    kube::Client::try_from(probe).expect("a plain-http kube client always builds");
                identity::wait_until_granted(&probe)
                    .await
                    .unwrap_or_else(|e| panic!("the service's identity on the real server: {e}"));
                token
            })
            .await;
        let mut config = self.token_config(token);
        if let Some(agent) = agent {
            config.headers.push((
                http::header::USER_AGENT,
                http::HeaderValue::from_str(agent).expect("a User-Agent is header-safe text"),
            ));
        }
        kube::Client::try_from(config).expect("a plain-http kube client always builds")
    }

    /// A client config for this proxy that sends `token`.
    fn token_config(&self, token: &str) -> kube::Config {
        let uri: http::Uri = self.url().parse().expect("the proxy's URL is a URI");
        let mut config = kube::Config::new(uri);
        config.auth_info.token = Some(token.to_string().into());
        config
    }

    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<()> {
        write_kubeconfig(&self.url(), path.as_ref())
    }

    pub fn requests(&self) -> RequestCounts {
        self.state.counters.requests()
    }

    pub fn cluster_wide_requests(&self) -> RequestCounts {
        self.state.counters.cluster_wide()
    }

    pub fn requests_from(&self, agent: &str) -> RequestCounts {
        self.state.counters.by_agent(agent)
    }

    pub fn write_log(&self) -> Vec<LoggedWrite> {
        self.state.counters.write_log()
    }

    pub fn reset_requests(&self) {
        self.state.counters.reset();
    }

    pub fn faults(&self) -> Faults {
        Faults::new(
            self.state.faults.clone(),
            self.listener.clone(),
            self.state.clone(),
        )
    }
}

impl Drop for KubeProxy {
    fn drop(&mut self) {
        self.listener.stop_now();
    }
}

/// The watches open through the proxy: ended through their shared signal;
/// a compaction is played (a real one would not reach the API server's
/// watch cache at a moment a test can choose): a watch from a
/// resourceVersion older than the newest the proxy has passed on, and a list
/// `continue` token handed out so far, get 410 Expired.
impl Watches for ProxyState {
    fn close_all(&self) {
        self.close_watches.send_modify(|n| *n += 1);
    }

    fn compact(&self) {
        let mut v = lock(&self.versions);
        v.compacted_below = v.highest;
        let issued = std::mem::take(&mut v.issued_tokens);
        v.expired_tokens.extend(issued);
    }
}
