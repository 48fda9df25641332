//! `AzureProvider`: a scale set's members from ARM, Uniform or Flexible.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{Transport, Url};
use azure_storage_queue::QueueClient;
use futures::FutureExt;
use meshmirror_provider::{
    BoxEventStream, GroupRef, Instance, InstanceState, Observer, Provider, ProviderError,
    TracingObserver,
};

use crate::arm::{ArmClient, ArmError};
use crate::budget::{ReadBudget, ReadClass, reading_as};
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
    /// ARM reads a second at most (`--azure-arm-reads-per-second`).
    pub arm_reads_per_second: f64,
}

impl Default for AzureConfig {
    fn default() -> Self {
        AzureConfig {
            endpoint: Url::parse(PUBLIC_ENDPOINT).expect("static URL"),
            credential: CredentialConfig::default(),
            extra_ca_pem: None,
            event_queue: None,
            event_poll_interval: Duration::from_secs(5),
            arm_reads_per_second: ReadBudget::DEFAULT_PER_SECOND,
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

/// A scale set the provider read, as events need it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KnownGroup {
    /// The group as the mirror spells it.
    pub group: GroupRef,
    pub mode: OrchestrationMode,
    /// How ARM spells the set's member ids up to the VM's own segment
    /// (`.../virtualMachineScaleSets/S/virtualMachines/` or, Flexible,
    /// `.../resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/`).
    /// The core matches instance ids exactly, and Event Grid spells its
    /// subjects its own way (`resourcegroups`): an event's VM is named so.
    pub vm_prefix: String,
}

/// Scale sets the provider was asked about, for mapping events (a Flexible
/// member's event names only its VM and resource group).
#[derive(Debug, Default)]
pub struct KnownGroups(Mutex<BTreeMap<String, KnownGroup>>);

impl KnownGroups {
    /// Knows `group` in `mode`, keeping the member spelling learned before.
    fn note(&self, group: &GroupRef, mode: OrchestrationMode, vm_prefix: String) {
        let mut known = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = known
            .entry(id_key(&group.to_string()))
            .or_insert_with(|| KnownGroup {
                group: group.clone(),
                mode,
                vm_prefix: vm_prefix.clone(),
            });
        if entry.mode != mode {
            *entry = KnownGroup {
                group: group.clone(),
                mode,
                vm_prefix,
            };
        }
    }

    fn remember(&self, known: KnownGroup) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id_key(&known.group.to_string()), known);
    }

    pub fn snapshot(&self) -> Vec<KnownGroup> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }
}

/// ARM's spelling of the set's member ids up to the VM's own segment: a
/// member's own, else built from the set's id.
fn vm_prefix(mode: OrchestrationMode, set_id: &str, vms: &[VirtualMachine]) -> String {
    let built = match mode {
        OrchestrationMode::Uniform => format!("{set_id}/virtualMachines/"),
        OrchestrationMode::Flexible => {
            // `/subscriptions/S/resourceGroups/RG` as the set's id spells it.
            let rg: Vec<&str> = set_id.split('/').take(5).collect();
            format!(
                "{}/providers/Microsoft.Compute/virtualMachines/",
                rg.join("/")
            )
        }
    };
    vms.iter()
        .find_map(|vm| {
            let head = vm.id.get(..built.len())?;
            let tail = &vm.id[built.len()..];
            (head.eq_ignore_ascii_case(&built) && !tail.is_empty() && !tail.contains('/'))
                .then(|| head.to_string())
        })
        .unwrap_or(built)
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
        )
        .with_read_budget(config.arm_reads_per_second);
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

    /// [`Provider::instances`], under the named-read budget.
    async fn named_instances(
        &self,
        group: &GroupRef,
        ids: &[String],
    ) -> Result<Option<Vec<Instance>>, ProviderError> {
        let Some(named) = ids
            .iter()
            .map(String::as_str)
            .map(named_vm)
            .collect::<Option<Vec<NamedVm<'_>>>>()
        else {
            tracing::debug!(%group, "an instance id ARM cannot be asked about alone; full read");
            return Ok(None);
        };
        let read = self.read_set(group).await?;
        let mode = read.set.mode();
        let capacity = read.set.sku.as_ref().and_then(|s| s.capacity).unwrap_or(0);
        // Ids of another set or resource group are not members: not asked.
        let mut paths = Vec::new();
        for vm in named.iter().filter_map(|n| n.member_of(group, mode)) {
            paths.push(match mode {
                OrchestrationMode::Uniform => {
                    format!("{}/virtualMachines/{}", read.set_path, path_segment(vm)?)
                }
                OrchestrationMode::Flexible => format!(
                    "{}/providers/Microsoft.Compute/virtualMachines/{}",
                    read.rg_path,
                    path_segment(vm)?
                ),
            });
        }
        if paths.len() as u64 > capacity.div_ceil(LIST_PAGE).max(1) {
            return Ok(None);
        }
        let (vms, nics, pips) = self
            .named(mode, &read.set_id, &paths)
            .await
            .map_err(|e| e.into_provider(&read.name))?;
        let members = assemble(&read.set, &vms, nics, pips);
        complete(group, &members)?;
        if let Some(other) = members.iter().find(|m| !ids.contains(&m.id)) {
            // The core matches ids exactly: an answer under another
            // spelling would neither replace nor remove the member.
            tracing::debug!(%group, id = %other.id, "ARM spells the VM's id otherwise; full read");
            return Ok(None);
        }
        tracing::debug!(group = %read.name, ?mode, asked = ids.len(), found = members.len(), calls = self.arm.calls(), "azure named members");
        Ok(Some(members))
    }

    /// The scale set's paths and ARM's answer for it.
    async fn read_set(&self, group: &GroupRef) -> Result<SetRead, ProviderError> {
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
        let set_id = if set.id.is_empty() {
            set_path.clone()
        } else {
            set.id.clone()
        };
        Ok(SetRead {
            name,
            rg_path,
            set_path,
            set_id,
            set,
        })
    }

    /// The VMs at `paths` that are members (a 404 or another set: not one),
    /// their NICs and the public IPs those point at, a few at a time.
    async fn named(
        &self,
        mode: OrchestrationMode,
        set_id: &str,
        paths: &[String],
    ) -> Result<Members, ArmError> {
        let set_key = id_key(set_id);
        let mut found = Vec::with_capacity(paths.len());
        for chunk in paths.chunks(CONCURRENT_GETS) {
            let mut gets = Vec::with_capacity(chunk.len());
            for path in chunk {
                gets.push(match mode {
                    OrchestrationMode::Uniform => self.uniform_vm(path).boxed(),
                    OrchestrationMode::Flexible => self.flexible_vm(path, &set_key).boxed(),
                });
            }
            found.extend(futures::future::try_join_all(gets).await?);
        }
        let (vms, nics): (Vec<VirtualMachine>, Vec<Vec<NetworkInterface>>) =
            found.into_iter().flatten().unzip();
        let nics: Vec<NetworkInterface> = nics.into_iter().flatten().collect();
        let mut pips = Vec::new();
        for id in referenced_public_ips(&nics) {
            // An odd or missing public IP gives no public address, as a
            // listing without it does. Each call names its operation, so
            // tests/cloud_permissions.rs can derive the role's actions.
            let pip = if id_key(&id).contains("/virtualmachinescalesets/") {
                // Under a Uniform set's path: the Network provider's old version.
                let Some(vmss_pip_path) = resource_path(&id) else {
                    continue;
                };
                self.arm
                    .get_opt(
                        "publicIPAddresses.getVirtualMachineScaleSetPublicIPAddress",
                        &vmss_pip_path,
                        &[("api-version", VMSS_NETWORK_API)],
                    )
                    .await?
            } else {
                let Some(pip_path) = resource_path(&id) else {
                    continue;
                };
                self.arm
                    .get_opt(
                        "publicIPAddresses.get",
                        &pip_path,
                        &[("api-version", NETWORK_API)],
                    )
                    .await?
            };
            pips.extend(pip);
        }
        Ok((vms, nics, pips))
    }

    /// A Uniform member and its NICs; `None` when ARM has no such VM.
    async fn uniform_vm(
        &self,
        uniform_vm_path: &str,
    ) -> Result<Option<(VirtualMachine, Vec<NetworkInterface>)>, ArmError> {
        let Some(vm) = self
            .arm
            .get_opt::<VirtualMachine>(
                "virtualMachineScaleSetVMs.get",
                uniform_vm_path,
                &[("api-version", COMPUTE_API), ("$expand", "instanceView")],
            )
            .await?
        else {
            return Ok(None);
        };
        let nics = self
            .arm
            .list(
                "networkInterfaces.listVirtualMachineScaleSetVMNetworkInterfaces",
                &format!("{uniform_vm_path}/networkInterfaces"),
                &[("api-version", VMSS_NETWORK_API)],
            )
            .await;
        let nics = match nics {
            // Gone between the two calls: without an address, a running VM
            // fails the pass (`complete`) instead of leaving.
            Err(ArmError::Status { status: 404, .. }) => Vec::new(),
            other => other?,
        };
        Ok(Some((vm, nics)))
    }

    /// A VM that is a member of the Flexible set `set_key`, and its NICs;
    /// `None` when ARM has no such VM or it belongs to no set or another.
    async fn flexible_vm(
        &self,
        flexible_vm_path: &str,
        set_key: &str,
    ) -> Result<Option<(VirtualMachine, Vec<NetworkInterface>)>, ArmError> {
        let vm = self
            .arm
            .get_opt::<VirtualMachine>(
                "virtualMachines.get",
                flexible_vm_path,
                &[("api-version", COMPUTE_API), ("$expand", "instanceView")],
            )
            .await?;
        let Some(vm) = vm.filter(|vm| {
            vm.properties
                .virtual_machine_scale_set
                .as_ref()
                .is_some_and(|s| id_key(&s.id) == set_key)
        }) else {
            return Ok(None);
        };
        let mut nics = Vec::new();
        let refs = vm.properties.network_profile.iter();
        for id in refs
            .flat_map(|p| p.network_interfaces.iter())
            .map(|r| &r.id)
        {
            // A NIC that cannot be read leaves the VM without its address.
            let Some(nic_path) = resource_path(id) else {
                continue;
            };
            let nic = self
                .arm
                .get_opt(
                    "networkInterfaces.get",
                    &nic_path,
                    &[("api-version", NETWORK_API)],
                )
                .await?;
            nics.extend(nic);
        }
        Ok(Some((vm, nics)))
    }
}

/// A scale set as [`AzureProvider::read_set`] read it.
struct SetRead {
    /// The group, for errors.
    name: String,
    rg_path: String,
    set_path: String,
    /// ARM's id of the set (its path if ARM gave none).
    set_id: String,
    set: ScaleSet,
}

/// Items per page of ARM's Compute lists with instance views. Each named
/// VM costs two calls or more and a listing two per page: with more named
/// VMs than the set has pages, reading every member is cheaper.
const LIST_PAGE: u64 = 100;

/// Named VMs read at once.
const CONCURRENT_GETS: usize = 8;

/// A VM an instance id names, in one of the two forms members' ids take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NamedVm<'a> {
    /// `.../virtualMachineScaleSets/S/virtualMachines/N` (Uniform).
    SetVm {
        subscription: &'a str,
        resource_group: &'a str,
        scale_set: &'a str,
        instance: &'a str,
    },
    /// `.../providers/Microsoft.Compute/virtualMachines/NAME` (Flexible).
    Vm {
        subscription: &'a str,
        resource_group: &'a str,
        name: &'a str,
    },
}

/// The VM `id` names, if it is an ARM VM id of plain segments.
fn named_vm(id: &str) -> Option<NamedVm<'_>> {
    let parts: Vec<&str> = id.strip_prefix('/')?.split('/').collect();
    if parts
        .iter()
        .any(|p| p.is_empty() || p.chars().all(|c| c == '.'))
    {
        return None;
    }
    let is = |i: usize, word: &str| parts[i].eq_ignore_ascii_case(word);
    let compute = parts.len() >= 8
        && is(0, "subscriptions")
        && is(2, "resourceGroups")
        && is(4, "providers")
        && is(5, "Microsoft.Compute");
    match parts.len() {
        10 if compute && is(6, "virtualMachineScaleSets") && is(8, "virtualMachines") => {
            Some(NamedVm::SetVm {
                subscription: parts[1],
                resource_group: parts[3],
                scale_set: parts[7],
                instance: parts[9],
            })
        }
        8 if compute && is(6, "virtualMachines") => Some(NamedVm::Vm {
            subscription: parts[1],
            resource_group: parts[3],
            name: parts[7],
        }),
        _ => None,
    }
}

impl<'a> NamedVm<'a> {
    /// The VM's own segment, if a VM of this form and place can be a
    /// member of `group` in `mode` (a Flexible set's members are the VMs of
    /// its resource group that name it).
    fn member_of(&self, group: &GroupRef, mode: OrchestrationMode) -> Option<&'a str> {
        let GroupRef::Azure {
            subscription_id,
            resource_group: rg,
            scale_set: set,
        } = group
        else {
            return None;
        };
        let same = |a: &str, b: &str| a.eq_ignore_ascii_case(b);
        match (*self, mode) {
            (
                NamedVm::SetVm {
                    subscription,
                    resource_group,
                    scale_set,
                    instance,
                },
                OrchestrationMode::Uniform,
            ) => (same(subscription, subscription_id)
                && same(resource_group, rg)
                && same(scale_set, set))
            .then_some(instance),
            (
                NamedVm::Vm {
                    subscription,
                    resource_group,
                    name,
                },
                OrchestrationMode::Flexible,
            ) => (same(subscription, subscription_id) && same(resource_group, rg)).then_some(name),
            _ => None,
        }
    }
}

/// The request path of a resource id from an ARM answer, each segment
/// encoded ([`path_segment`]); `None` for an id that is not a plain one.
fn resource_path(id: &str) -> Option<String> {
    let rest = id.strip_prefix('/')?;
    if !rest
        .split('/')
        .next()
        .is_some_and(|s| s.eq_ignore_ascii_case("subscriptions"))
    {
        return None;
    }
    let mut path = String::with_capacity(id.len());
    for segment in rest.split('/') {
        path.push('/');
        path.push_str(&path_segment(segment).ok()?);
    }
    Some(path)
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
        let read = self.read_set(group).await?;
        let mode = read.set.mode();
        // Known before the listing, so events for the set are recognised
        // even while its listing fails.
        self.known
            .note(group, mode, vm_prefix(mode, &read.set_id, &[]));
        let (vms, nics, pips) = match mode {
            OrchestrationMode::Uniform => self.uniform(&read.set_path).await,
            OrchestrationMode::Flexible => self.flexible(&read.set_id, &read.rg_path).await,
        }
        .map_err(|e| e.into_provider(&read.name))?;
        self.known.remember(KnownGroup {
            group: group.clone(),
            mode,
            vm_prefix: vm_prefix(mode, &read.set_id, &vms),
        });
        let members = assemble(&read.set, &vms, nics, pips);
        complete(group, &members)?;
        tracing::debug!(group = %read.name, ?mode, members = members.len(), calls = self.arm.calls(), "azure members");
        Ok(members)
    }

    /// The named VMs by GETs of each (and of its NICs and public IPs), not
    /// listings: the cost grows with the ids, not the set. `None` for an id
    /// not in the form of a member id, for more ids than a listing has
    /// pages, or when ARM spells a VM's id other than the caller did.
    async fn instances(
        &self,
        group: &GroupRef,
        ids: &[String],
    ) -> Result<Option<Vec<Instance>>, ProviderError> {
        // An event's reads draw on the budget's reserve, ahead of resyncs.
        reading_as(ReadClass::Named, self.named_instances(group, ids)).await
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
    fn named_ids_in_the_two_member_forms_and_no_other() {
        let uniform = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/3";
        let plain =
            "/subscriptions/s/resourcegroups/RG/providers/microsoft.compute/virtualMachines/flex_1";
        assert_eq!(
            named_vm(uniform),
            Some(NamedVm::SetVm {
                subscription: "s",
                resource_group: "rg",
                scale_set: "web",
                instance: "3"
            })
        );
        assert_eq!(
            named_vm(plain),
            Some(NamedVm::Vm {
                subscription: "s",
                resource_group: "RG",
                name: "flex_1"
            })
        );
        for id in [
            "i-0123456789abcdef0",
            "subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/a",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/a/extensions/b",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/a",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/..",
            "/subscriptions/s/resourceGroups//providers/Microsoft.Compute/virtualMachines/a",
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/",
        ] {
            assert_eq!(named_vm(id), None, "{id}");
        }
    }

    #[test]
    fn a_named_vm_is_asked_about_only_where_it_can_be_a_member() {
        let group = GroupRef::Azure {
            subscription_id: "S".into(),
            resource_group: "RG".into(),
            scale_set: "Web".into(),
        };
        let id = |tail: &str| {
            format!("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/{tail}")
        };
        let rows = [
            (id("virtualMachineScaleSets/web/virtualMachines/3"), OrchestrationMode::Uniform, Some("3")),
            (id("virtualMachineScaleSets/api/virtualMachines/3"), OrchestrationMode::Uniform, None),
            (id("virtualMachines/flex_1"), OrchestrationMode::Uniform, None),
            (id("virtualMachines/flex_1"), OrchestrationMode::Flexible, Some("flex_1")),
            (id("virtualMachineScaleSets/web/virtualMachines/3"), OrchestrationMode::Flexible, None),
            (
                "/subscriptions/s/resourceGroups/other/providers/Microsoft.Compute/virtualMachines/flex_1".into(),
                OrchestrationMode::Flexible,
                None,
            ),
        ];
        for (id, mode, want) in rows {
            let named = named_vm(&id).unwrap();
            assert_eq!(named.member_of(&group, mode), want, "{id} {mode:?}");
        }
    }

    #[test]
    fn resource_paths_keep_to_their_segments() {
        assert_eq!(
            resource_path("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/web nic").as_deref(),
            Some("/subscriptions/s/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces/web%20nic")
        );
        for id in [
            "//evil.example/subscriptions/s",
            "/subscriptions/s/../../x",
            "https://evil.example/subscriptions/s",
            "/tenants/t/x",
            "",
        ] {
            assert_eq!(resource_path(id), None, "{id}");
        }
    }

    #[test]
    fn the_member_id_spelling_is_learned_from_the_members() {
        let vm = |id: &str| VirtualMachine {
            id: id.into(),
            ..VirtualMachine::default()
        };
        let set_id = "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets/web";
        // ARM spells the resource group of member ids its own way.
        let members = [vm(
            "/subscriptions/s/resourceGroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/0",
        )];
        assert_eq!(
            vm_prefix(OrchestrationMode::Uniform, set_id, &members),
            "/subscriptions/s/resourceGroups/RG/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/"
        );
        assert_eq!(
            vm_prefix(OrchestrationMode::Uniform, set_id, &[]),
            format!("{set_id}/virtualMachines/")
        );
        let flexible = [
            vm(
                "/subscriptions/s/resourceGroups/other/providers/Microsoft.Compute/virtualMachines/x",
            ),
            vm(
                "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/flex_1",
            ),
        ];
        assert_eq!(
            vm_prefix(OrchestrationMode::Flexible, set_id, &flexible),
            "/subscriptions/S/resourceGroups/RG/providers/Microsoft.Compute/virtualMachines/"
        );
        assert_eq!(
            vm_prefix(OrchestrationMode::Flexible, set_id, &[]),
            "/subscriptions/s/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/"
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
