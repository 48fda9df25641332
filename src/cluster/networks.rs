//! The cluster's own network and its network gateways, as istiod sees them:
//! the `topology.istio.io/network` label of istiod's namespace, and the
//! Services in that namespace labelled with a network. Read at most once per
//! [`VIEW_TTL`] for all mirrors: gateways change rarely.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Service};
use kube::Client;
use kube::api::{Api, ListParams};

use crate::cluster::{ClusterError, within};
use crate::core::networks::{DEFAULT_GATEWAY_PORT, Gateway, NETWORK_LABEL, NetworkView};

pub const DEFAULT_ISTIO_NAMESPACE: &str = "istio-system";
/// How long one reading serves every mirror's passes.
pub const VIEW_TTL: Duration = Duration::from_secs(30);
/// The label of a gateway Service that gives its port.
const GATEWAY_PORT_LABEL: &str = "networking.istio.io/gatewayPort";

/// Where the view comes from, and its last reading (a failed one too: a
/// namespace-scoped install may not read istiod's namespace at all, and
/// should not ask on every pass).
#[derive(Debug)]
pub struct NetworkSource {
    namespace: String,
    last: Mutex<Option<(Instant, Result<NetworkView, String>)>>,
}

impl NetworkSource {
    pub fn new(namespace: &str) -> Self {
        NetworkSource {
            namespace: namespace.into(),
            last: Mutex::new(None),
        }
    }

    fn fresh(&self, now: Instant) -> Option<Result<NetworkView, String>> {
        let last = self.last.lock().ok()?;
        last.as_ref()
            .filter(|(at, _)| now.saturating_duration_since(*at) < VIEW_TTL)
            .map(|(_, view)| view.clone())
    }

    fn keep(&self, at: Instant, view: &Result<NetworkView, String>) {
        if let Ok(mut last) = self.last.lock() {
            *last = Some((at, view.clone()));
        }
    }
}

/// A gateway Service's network and port, if it is labelled as one.
pub fn gateway(service: &Service) -> Option<Gateway> {
    let meta = &service.metadata;
    let labels = meta.labels.as_ref()?;
    let network = labels.get(NETWORK_LABEL)?.clone();
    let port = labels
        .get(GATEWAY_PORT_LABEL)
        .and_then(|p| p.parse().ok())
        .unwrap_or(DEFAULT_GATEWAY_PORT);
    Some(Gateway {
        network,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone()?,
        port,
    })
}

impl NetworkSource {
    /// The view, read again once the last reading is older than [`VIEW_TTL`].
    pub async fn view(
        &self,
        client: &Client,
        deadline: Duration,
    ) -> Result<NetworkView, ClusterError> {
        let now = Instant::now();
        let view = match self.fresh(now) {
            Some(view) => view,
            None => {
                let view = self.read(client, deadline).await.map_err(|e| e.to_string());
                self.keep(now, &view);
                view
            }
        };
        view.map_err(ClusterError::Other)
    }

    async fn read(&self, client: &Client, deadline: Duration) -> Result<NetworkView, ClusterError> {
        let namespace = &self.namespace;
        // A namespace-scoped install may not read namespaces: the cluster's
        // network is then unknown, and only gateways count.
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let own = match within(
            deadline,
            "reading istiod's namespace",
            namespaces.get_opt(namespace),
        )
        .await
        {
            Ok(found) => found.and_then(|ns| ns.metadata.labels?.get(NETWORK_LABEL).cloned()),
            Err(err) => {
                tracing::debug!(%err, namespace, "cannot read istiod's namespace; the cluster's network is unknown");
                None
            }
        };
        let services: Api<Service> = Api::namespaced(client.clone(), namespace);
        let listed = within(
            deadline,
            "listing network gateways",
            services.list(&ListParams::default().labels(NETWORK_LABEL)),
        )
        .await?;
        let mut gateways: Vec<Gateway> = listed.items.iter().filter_map(gateway).collect();
        gateways.sort();
        Ok(NetworkView {
            own,
            gateways,
            namespace: namespace.clone(),
        })
    }
}
