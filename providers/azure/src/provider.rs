//! `AzureProvider`: a scale set's members from ARM, Uniform or Flexible.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{Transport, Url};
use azure_storage_queue::QueueClient;
use meshmirror_provider::{
    BoxEventStream, GroupRef, Instance, InstanceState, Observer, Provider, ProviderError,
    TracingObserver,
};

use crate::arm::{ArmClient, ArmError};
use crate::credential::{self, CredentialConfig};
use crate::events::{self, QueueConfig};
use crate::mapping::{self, id_key};
use crate::models::{
    NetworkInterface, OrchestrationMode, PublicIpAddress, ScaleSet, VirtualMachine,
};

/// Compute api-version for scale sets and VMs.
pub const COMPUTE_API: &str = "2024-11-01";
/// The scale set NIC and public IP listings live under the Compute path but
/// are served by the Network provider, which knows them only at this version.
pub const VMSS_NETWORK_API: &str = "2018-10-01";
/// Network api-version for resource-group NIC and public IP listings.
pub const NETWORK_API: &str = "2024-05-01";

pub const PUBLIC_ENDPOINT: &str = "https://management.azure.com";

/// Everything the provider is built from.
#[derive(Clone)]
pub struct AzureConfig {
    /// ARM endpoint (`--azure-endpoint`).
    pub endpoint: Url,
    pub credential: CredentialConfig,
    /// PEM certificates trusted in addition to the system's roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// Event Grid → Storage queue (`--azure-event-queue`).
    pub event_queue: Option<Url>,
    /// How long the event poller waits when the queue was empty.
    pub event_poll_interval: Duration,
}

impl Default for AzureConfig {
    fn default() -> Self {
        AzureConfig {
            endpoint: Url::parse(PUBLIC_ENDPOINT).expect("static URL"),
            credential: CredentialConfig::default(),
            extra_ca_pem: None,
            event_queue: None,
            event_poll_interval: Duration::from_secs(5),
        }
    }
}

impl std::fmt::Debug for AzureConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureConfig")
            .field("endpoint", &self.endpoint.as_str())
            .field("credential", &self.credential.kind)
            .field("event_queue", &self.event_queue.as_ref().map(Url::as_str))
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AzureError {
    #[error("azure: {0}")]
    Config(String),
    #[error(transparent)]
    Credential(#[from] credential::CredentialError),
}

/// Scale sets the provider was asked about, for mapping events (a Flexible
/// member's event names only its VM and resource group).
#[derive(Debug, Default)]
pub struct KnownGroups(Mutex<BTreeMap<String, (GroupRef, OrchestrationMode)>>);

impl KnownGroups {
    fn remember(&self, group: &GroupRef, mode: OrchestrationMode) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id_key(&group.to_string()), (group.clone(), mode));
    }

    pub fn snapshot(&self) -> Vec<(GroupRef, OrchestrationMode)> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

/// A scale set's VMs, their NICs and the public IPs those point at.
type Members = (
    Vec<VirtualMachine>,
    Vec<NetworkInterface>,
    Vec<PublicIpAddress>,
);

pub struct AzureProvider {
    arm: ArmClient,
    known: Arc<KnownGroups>,
    /// The event queue's client, shared by the feed of each leadership term.
    queue: Option<Arc<QueueClient>>,
    poll_interval: Duration,
    observer: Arc<dyn Observer>,
}

/// A reqwest transport trusting `extra_ca_pem` beside the system roots
/// (None: `azure_core`'s default client).
pub fn transport(extra_ca_pem: Option<&[u8]>) -> Result<Option<Transport>, AzureError> {
    let Some(pem) = extra_ca_pem else {
        return Ok(None);
    };
    let certs = reqwest::Certificate::from_pem_bundle(pem)
        .map_err(|e| AzureError::Config(format!("CA bundle: {e}")))?;
    if certs.is_empty() {
        return Err(AzureError::Config("CA bundle holds no certificate".into()));
    }
    let client = reqwest::Client::builder()
        .tls_certs_merge(certs)
        .connect_timeout(Duration::from_secs(20))
        .read_timeout(Duration::from_secs(60))
        // ARM does not redirect; a redirect would carry the token elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| AzureError::Config(format!("HTTP client: {e}")))?;
    Ok(Some(Transport::new(Arc::new(client))))
}

impl AzureProvider {
    /// Builds the credential from `config.credential`.
    pub fn new(config: AzureConfig) -> Result<Self, AzureError> {
        let transport = transport(config.extra_ca_pem.as_deref())?;
        let credential = credential::build(&config.credential, transport.clone())?;
        Self::build(config, credential, transport)
    }

    /// With a given credential (tests, embedding).
    pub fn with_credential(
        config: AzureConfig,
        credential: Arc<dyn TokenCredential>,
    ) -> Result<Self, AzureError> {
        let transport = transport(config.extra_ca_pem.as_deref())?;
        Self::build(config, credential, transport)
    }

    fn build(
        config: AzureConfig,
        credential: Arc<dyn TokenCredential>,
        transport: Option<Transport>,
    ) -> Result<Self, AzureError> {
        if config.endpoint.scheme() != "https" {
            return Err(AzureError::Config(format!(
                "the ARM endpoint must be https: {}",
                config.endpoint
            )));
        }
        let observer: Arc<dyn Observer> = Arc::new(TracingObserver);
        let arm = ArmClient::new(
            config.endpoint.clone(),
            credential.clone(),
            transport.clone(),
            observer.clone(),
        );
        let queue = match &config.event_queue {
            None => None,
            Some(url) => Some(events::client(url, credential, transport)?),
        };
        Ok(AzureProvider {
            arm,
            known: Arc::default(),
            queue: queue.map(Arc::new),
            poll_interval: config.event_poll_interval,
            observer,
        })
    }

    /// Reports ARM calls, rate limits and event queue messages to
    /// `observer` (default: a [`TracingObserver`]). A building step, taken
    /// before the provider is used.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> Self {
        self.arm.set_observer(observer.clone());
        self.observer = observer;
        self
    }

    /// ARM requests sent so far (every page counts).
    pub fn api_calls(&self) -> u64 {
        self.arm.calls()
    }

    async fn uniform(&self, set_path: &str) -> Result<Members, ArmError> {
        let vms: Vec<VirtualMachine> = self
            .arm
            .list(
                "virtualMachineScaleSetVMs.list",
                &format!("{set_path}/virtualMachines"),
                &[("api-version", COMPUTE_API), ("$expand", "instanceView")],
            )
            .await?;
        if vms.is_empty() {
            return Ok((vms, Vec::new(), Vec::new()));
        }
        let nics: Vec<NetworkInterface> = self
            .arm
            .list(
                "networkInterfaces.listVirtualMachineScaleSetNetworkInterfaces",
                &format!("{set_path}/networkInterfaces"),
                &[("api-version", VMSS_NETWORK_API)],
            )
            .await?;
        let pips = if referenced_public_ips(&nics).is_empty() {
            Vec::new()
        } else {
            self.arm
                .list(
                    "publicIPAddresses.listVirtualMachineScaleSetPublicIPAddresses",
                    &format!("{set_path}/publicIPAddresses"),
                    &[("api-version", VMSS_NETWORK_API)],
                )
                .await?
        };
        Ok((vms, nics, pips))
    }

    async fn flexible(&self, set_id: &str, rg_path: &str) -> Result<Members, ArmError> {
        let filter = format!("'virtualMachineScaleSet/id' eq '{set_id}'");
        let all: Vec<VirtualMachine> = self
            .arm
            .list(
                "virtualMachines.list",
                &format!("{rg_path}/providers/Microsoft.Compute/virtualMachines"),
                &[
                    ("api-version", COMPUTE_API),
                    ("$filter", &filter),
                    ("$expand", "instanceView"),
                ],
            )
            .await?;
        // The filter is a server-side hint; membership is decided here.
        let key = id_key(set_id);
        let vms: Vec<VirtualMachine> = all
            .into_iter()
            .filter(|vm| {
                vm.properties
                    .virtual_machine_scale_set
                    .as_ref()
                    .is_some_and(|s| id_key(&s.id) == key)
            })
            .collect();
        let nic_ids: BTreeSet<String> = vms
            .iter()
            .flat_map(|vm| vm.properties.network_profile.iter())
            .flat_map(|p| p.network_interfaces.iter())
            .map(|r| r.id.clone())
            .collect();
        let mut nics = Vec::new();
        for rg in resource_groups(nic_ids.iter()) {
            let listed: Vec<NetworkInterface> = self
                .arm
                .list(
                    "networkInterfaces.list",
                    &format!("{rg}/providers/Microsoft.Network/networkInterfaces"),
                    &[("api-version", NETWORK_API)],
                )
                .await?;
            nics.extend(listed);
        }
        let pip_ids = referenced_public_ips(&nics);
        let mut pips = Vec::new();
        for rg in resource_groups(pip_ids.iter()) {
            let listed: Vec<PublicIpAddress> = self
                .arm
                .list(
                    "publicIPAddresses.list",
                    &format!("{rg}/providers/Microsoft.Network/publicIPAddresses"),
                    &[("api-version", NETWORK_API)],
                )
                .await?;
            pips.extend(listed);
        }
        Ok((vms, nics, pips))
    }
}

/// Public IP ids the NICs' IP configurations point at.
fn referenced_public_ips(nics: &[NetworkInterface]) -> BTreeSet<String> {
    nics.iter()
        .flat_map(|n| n.properties.ip_configurations.iter())
        .filter_map(|c| c.properties.public_ip_address.as_ref())
        .map(|p| p.id.clone())
        .filter(|id| !id.is_empty())
        .collect()
}

/// One segment of an ARM path, percent-encoded, so that no name can add a
/// segment or climb out of its own (`..`, `/`): the request reaches exactly
/// the resource the group id names. The spec check refuses such names first;
/// this holds for any caller.
fn path_segment(value: &str) -> Result<String, ProviderError> {
    if value.is_empty() || value.chars().all(|c| c == '.') {
        return Err(ProviderError::Permanent(format!(
            "{value:?} cannot be a segment of an ARM resource path"
        )));
    }
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~' | b'(' | b')') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// `/subscriptions/S/resourceGroups/RG` of each id, once (case-insensitively).
fn resource_groups<'a>(ids: impl Iterator<Item = &'a String>) -> Vec<String> {
    let mut seen = BTreeMap::new();
    for id in ids {
        let parts: Vec<&str> = id.split('/').collect();
        // ["", "subscriptions", S, "resourceGroups", RG, ...]
        if parts.len() > 4
            && parts[1].eq_ignore_ascii_case("subscriptions")
            && parts[3].eq_ignore_ascii_case("resourcegroups")
        {
            let rg = format!("/subscriptions/{}/resourceGroups/{}", parts[2], parts[4]);
            seen.entry(rg.to_ascii_lowercase()).or_insert(rg);
        }
    }
    seen.into_values().collect()
}

/// Joins VMs with their primary NIC and public IPs.
pub fn assemble(
    set: &ScaleSet,
    vms: &[VirtualMachine],
    nics: Vec<NetworkInterface>,
    pips: Vec<PublicIpAddress>,
) -> Vec<Instance> {
    let mut nics_by_vm: HashMap<String, Vec<String>> = HashMap::new();
    for nic in &nics {
        if let Some(vm) = &nic.properties.virtual_machine {
            nics_by_vm
                .entry(id_key(&vm.id))
                .or_default()
                .push(id_key(&nic.id));
        }
    }
    let nics_by_id: HashMap<String, NetworkInterface> =
        nics.into_iter().map(|n| (id_key(&n.id), n)).collect();
    let pips: HashMap<String, PublicIpAddress> =
        pips.into_iter().map(|p| (id_key(&p.id), p)).collect();
    vms.iter()
        .filter(|vm| !vm.id.is_empty())
        .map(|vm| {
            let addrs = mapping::primary_nic(vm, &nics_by_id, &nics_by_vm)
                .map(|nic| mapping::addresses(nic, &pips))
                .unwrap_or_default();
            mapping::instance(set, vm, addrs)
        })
        .collect()
}

/// Fail static: a running VM whose NIC the listing missed has no address,
/// and a pass without it would delete its entries. (Every VM of a scale set
/// has a NIC with a private address, so a running one without any address
/// means an incomplete listing.) The pass fails and is retried instead.
fn complete(group: &GroupRef, members: &[Instance]) -> Result<(), ProviderError> {
    let missing: Vec<&str> = members
        .iter()
        .filter(|m| {
            m.state == InstanceState::Running && m.private_ipv4.is_none() && m.ipv6.is_none()
        })
        .map(|m| m.id.as_str())
        .collect();
    match missing.as_slice() {
        [] => Ok(()),
        [first, ..] => Err(ProviderError::Transient(format!(
            "the NIC listing of {group} missed {} running VMs (first: {first})",
            missing.len()
        ))),
    }
}

#[async_trait]
impl Provider for AzureProvider {
    fn name(&self) -> &'static str {
        "azure"
    }

    async fn members(&self, group: &GroupRef) -> Result<Vec<Instance>, ProviderError> {
        let GroupRef::Azure {
            subscription_id,
            resource_group,
            scale_set,
        } = group
        else {
            return Err(ProviderError::Permanent(format!(
                "not an Azure scale set: {group}"
            )));
        };
        let name = group.to_string();
        let rg_path = format!(
            "/subscriptions/{}/resourceGroups/{}",
            path_segment(subscription_id)?,
            path_segment(resource_group)?
        );
        let set_path = format!(
            "{rg_path}/providers/Microsoft.Compute/virtualMachineScaleSets/{}",
            path_segment(scale_set)?
        );
        let set: ScaleSet = self
            .arm
            .get(
                "virtualMachineScaleSets.get",
                &set_path,
                &[("api-version", COMPUTE_API)],
            )
            .await
            .map_err(|e| e.into_provider(&name))?;
        let mode = set.mode();
        self.known.remember(group, mode);
        let set_id = if set.id.is_empty() {
            set_path.clone()
        } else {
            set.id.clone()
        };
        let (vms, nics, pips) = match mode {
            OrchestrationMode::Uniform => self.uniform(&set_path).await,
            OrchestrationMode::Flexible => self.flexible(&set_id, &rg_path).await,
        }
        .map_err(|e| e.into_provider(&name))?;
        let members = assemble(&set, &vms, nics, pips);
        complete(group, &members)?;
        tracing::debug!(group = %name, ?mode, members = members.len(), calls = self.arm.calls(), "azure members");
        Ok(members)
    }

    fn events(&self) -> Option<BoxEventStream> {
        // A fresh feed per call: the controller asks once per leadership term,
        // and a replica that loses and wins the lease again needs it again.
        let client = self.queue.clone()?;
        Some(events::stream(
            client,
            QueueConfig {
                poll_interval: self.poll_interval,
                known: self.known.clone(),
                observer: self.observer.clone(),
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_vm_the_nic_listing_missed_fails_the_pass() {
        let group = GroupRef::Azure {
            subscription_id: "s".into(),
            resource_group: "rg".into(),
            scale_set: "web".into(),
        };
        let vm = |id: &str, state: InstanceState, ip: Option<[u8; 4]>| Instance {
            id: id.into(),
            private_ipv4: ip.map(std::net::Ipv4Addr::from),
            public_ipv4: None,
            ipv6: None,
            region: None,
            zone: None,
            state,
            health: Default::default(),
            tags: Default::default(),
            lifecycle: None,
        };
        let ok = [
            vm("a", InstanceState::Running, Some([10, 0, 0, 1])),
            vm("b", InstanceState::Pending, None),
            vm("c", InstanceState::Stopped, None),
        ];
        assert_eq!(complete(&group, &ok), Ok(()));
        let missed = [
            vm("a", InstanceState::Running, Some([10, 0, 0, 1])),
            vm("d", InstanceState::Running, None),
        ];
        let err = complete(&group, &missed).unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert!(err.to_string().contains("(first: d)"), "{err}");
    }

    #[test]
    fn path_segments_cannot_add_or_climb_segments() {
        for (value, want) in [
            ("web", Some("web")),
            ("rg-(prod).1", Some("rg-(prod).1")),
            ("a/../b", Some("a%2F..%2Fb")),
            ("%2e%2e", Some("%252e%252e")),
            ("a b?c#d", Some("a%20b%3Fc%23d")),
            ("..", None),
            (".", None),
            ("", None),
        ] {
            assert_eq!(path_segment(value).ok().as_deref(), want, "{value:?}");
        }
        // The encoded path keeps its segments when joined onto the endpoint.
        let base = Url::parse("https://management.azure.com/").unwrap();
        let path = format!(
            "/subscriptions/s/resourceGroups/{}/providers/Microsoft.Compute/virtualMachineScaleSets/v",
            path_segment("x/../../../../other-rg").unwrap()
        );
        let url = base.join(&path).unwrap();
        assert_eq!(
            url.path_segments().unwrap().nth(3),
            Some("x%2F..%2F..%2F..%2F..%2Fother-rg")
        );
    }

    #[test]
    fn resource_groups_are_deduplicated_case_insensitively() {
        let ids = [
            "/subscriptions/s/resourceGroups/RG/providers/Microsoft.Network/networkInterfaces/a"
                .to_string(),
            "/subscriptions/s/resourcegroups/rg/providers/Microsoft.Network/networkInterfaces/b"
                .to_string(),
            "/subscriptions/s/resourceGroups/other/providers/Microsoft.Network/networkInterfaces/c"
                .to_string(),
            "garbage".to_string(),
        ];
        assert_eq!(
            resource_groups(ids.iter()),
            vec![
                "/subscriptions/s/resourceGroups/other".to_string(),
                "/subscriptions/s/resourceGroups/RG".to_string(),
            ]
        );
    }

    #[test]
    fn an_http_endpoint_is_refused() {
        #[derive(Debug)]
        struct Never;
        #[async_trait]
        impl TokenCredential for Never {
            async fn get_token(
                &self,
                _: &[&str],
                _: Option<azure_core::credentials::TokenRequestOptions<'_>>,
            ) -> azure_core::Result<azure_core::credentials::AccessToken> {
                unreachable!()
            }
        }
        let config = AzureConfig {
            endpoint: Url::parse("http://127.0.0.1:1").unwrap(),
            ..AzureConfig::default()
        };
        assert!(AzureProvider::with_credential(config, Arc::new(Never)).is_err());
    }
}
