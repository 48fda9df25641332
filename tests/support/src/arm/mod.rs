//! A stateful Azure Resource Manager mock over HTTPS, with an Azure AD token
//! endpoint: scale sets in both orchestration modes, VMs with instance views,
//! NICs, public IPs, `nextLink` paging on its own https base, ARM error bodies,
//! 429 + `Retry-After` injection, ARM's own control calls to scale and delete,
//! and request counting. Also [`azurite`], a helper that starts the Azurite
//! Storage emulator on the same test CA.
//!
//! Scale sets are keyed by name: names are unique within one mock.

pub mod azurite;
mod cloud;
mod control;
mod handler;
mod render;
#[cfg(test)]
mod shapes;
mod tls;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

pub use cloud::{Launch, MockVm, Mode, ScaleSetSpec};
pub use tls::{IssuedCert, TestCa};

/// An injected failure for the next ARM requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArmFault {
    /// 429 with `Retry-After: seconds`.
    Throttle { retry_after_secs: u64 },
    /// Any status with an ARM error body.
    Status {
        status: u16,
        code: String,
        message: String,
    },
}

/// How a token was asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Grant {
    ClientSecret,
    /// A federated (workload identity) assertion.
    Assertion,
}

/// One token the token endpoint issued.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenGrant {
    pub tenant: String,
    pub client_id: String,
    pub grant: Grant,
    pub scope: String,
    pub access_token: String,
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub cloud: cloud::Cloud,
    pub faults: VecDeque<ArmFault>,
    /// Faults for the next request of one operation (`vmss.vms.get`, ...).
    pub op_faults: Vec<(String, ArmFault)>,
    pub page_size: usize,
    /// Requests by operation (`vmss.get`, `vmss.vms.list`, ..., `token`).
    pub requests: BTreeMap<String, u64>,
    /// When each ARM request (tokens aside) came, with its operation, in
    /// order: benchmarks split an event's latency at its first call.
    pub request_times: Vec<(std::time::Instant, &'static str)>,
    /// (tenant, client) → secret.
    pub secrets: HashMap<(String, String), String>,
    /// (tenant, client) → the federated assertion expected.
    pub assertions: HashMap<(String, String), String>,
    pub grants: Vec<TokenGrant>,
    /// Only tokens this mock issued (for its own audience) are accepted.
    pub strict_tokens: bool,
    pub ratelimit_remaining: u64,
}

#[derive(Clone)]
pub(crate) struct Shared {
    pub inner: Arc<Mutex<Inner>>,
    pub base: String,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The running mock; stops when dropped. Its driving methods are those of
/// [`ArmControl`], which it derefs to.
pub struct ArmMock {
    control: ArmControl,
    ca: TestCa,
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for ArmMock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmMock").field("addr", &self.addr).finish()
    }
}

impl Drop for ArmMock {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::ops::Deref for ArmMock {
    type Target = ArmControl;

    fn deref(&self) -> &ArmControl {
        &self.control
    }
}

/// Drives the mock's cloud: scale sets, VMs, faults, credentials, counts.
/// The HTTP control routes under `/_mock/` (module `control`) call these
/// same methods.
#[derive(Clone)]
pub struct ArmControl {
    shared: Shared,
}

impl std::fmt::Debug for ArmControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArmControl")
            .field("base", &self.shared.base)
            .finish()
    }
}

/// Default page size of every list.
pub const DEFAULT_PAGE_SIZE: usize = 100;

/// How `meshmirror-testkit arm` runs the mock.
#[derive(Clone, Debug)]
pub struct ByHand {
    /// Port 0: a free one.
    pub listen: SocketAddr,
    /// Where the CA certificate (PEM) clients must trust is written.
    pub ca_file: PathBuf,
    /// The service principal the token endpoint knows.
    pub tenant_id: String,
    pub client_id: String,
    pub client_secret: String,
}

impl ArmMock {
    /// Starts on 127.0.0.1 with a new test CA.
    pub async fn start() -> io::Result<ArmMock> {
        Self::start_with_ca(TestCa::new()?).await
    }

    /// Starts with a given CA (to share it with Azurite).
    pub async fn start_with_ca(ca: TestCa) -> io::Result<ArmMock> {
        Self::start_at(SocketAddr::from(([127, 0, 0, 1], 0)), ca).await
    }

    /// Starts on `listen` (port 0: a free one). The certificate names
    /// 127.0.0.1, localhost and the listen address; the endpoint (and the
    /// links the mock writes) name 127.0.0.1 for an unspecified address.
    pub async fn start_at(listen: SocketAddr, ca: TestCa) -> io::Result<ArmMock> {
        let tcp = tokio::net::TcpListener::bind(listen).await?;
        let addr = crate::gce::advertised(tcp.local_addr()?);
        let ip = addr.ip().to_string();
        let mut names = vec!["127.0.0.1", "localhost"];
        if !names.contains(&ip.as_str()) {
            names.push(&ip);
        }
        let config = ca.server_config(&names)?;
        let shared = Shared {
            inner: Arc::new(Mutex::new(Inner {
                page_size: DEFAULT_PAGE_SIZE,
                ratelimit_remaining: 12000,
                ..Inner::default()
            })),
            base: format!("https://{addr}"),
        };
        let task = tls::serve(tcp, config, handler::router(shared.clone()));
        Ok(ArmMock {
            control: ArmControl { shared },
            ca,
            addr,
            task,
        })
    }

    /// What `meshmirror-testkit arm` runs: the mock on `by_hand.listen`
    /// with a new CA written to `by_hand.ca_file`, and the service
    /// principal registered with the token endpoint.
    pub async fn start_by_hand(by_hand: &ByHand) -> io::Result<ArmMock> {
        let mock = Self::start_at(by_hand.listen, TestCa::new()?).await?;
        if let Some(dir) = by_hand
            .ca_file
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&by_hand.ca_file, mock.ca_pem())?;
        mock.register_client_secret(
            &by_hand.tenant_id,
            &by_hand.client_id,
            &by_hand.client_secret,
        );
        Ok(mock)
    }

    /// The flags that point `meshmirror run` (or `render`) at a mock
    /// started by [`ArmMock::start_by_hand`], secret aside (it goes in
    /// `AZURE_CLIENT_SECRET`: a flag shows in the process list).
    pub fn by_hand_flags(&self, by_hand: &ByHand) -> Vec<String> {
        let endpoint = self.endpoint();
        [
            ("--azure-endpoint", endpoint.clone()),
            ("--azure-authority-host", endpoint),
            ("--azure-ca-file", by_hand.ca_file.display().to_string()),
            ("--azure-credential", "client-secret".to_string()),
            ("--azure-tenant-id", by_hand.tenant_id.clone()),
            ("--azure-client-id", by_hand.client_id.clone()),
        ]
        .into_iter()
        .flat_map(|(flag, value)| [flag.to_string(), value])
        .collect()
    }

    /// What `meshmirror-testkit arm` prints.
    pub fn by_hand_banner(&self, by_hand: &ByHand) -> String {
        let endpoint = self.endpoint();
        format!(
            "ARM mock (and Entra ID token endpoint) listening on {endpoint}\n\
             CA certificate: {ca}\n\
             control routes: {endpoint}/_mock/ (GET it for the list; curl --cacert {ca})\n\
             meshmirror flags: {flags}\n\
             and in the environment: AZURE_CLIENT_SECRET={secret}\n",
            ca = by_hand.ca_file.display(),
            flags = self.by_hand_flags(by_hand).join(" "),
            secret = by_hand.client_secret,
        )
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn ca(&self) -> &TestCa {
        &self.ca
    }

    /// The CA certificate (PEM) clients must trust.
    pub fn ca_pem(&self) -> String {
        self.ca.ca_pem()
    }

    /// A cloneable handle on the mock's cloud (it drives the mock while the
    /// mock runs).
    pub fn control(&self) -> ArmControl {
        self.control.clone()
    }
}

impl ArmControl {
    /// `https://127.0.0.1:PORT`: the ARM endpoint and the authority host.
    pub fn endpoint(&self) -> String {
        self.shared.base.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.shared.lock()
    }

    /// Creates a scale set with `spec.capacity` VMs.
    pub fn create_scale_set(&self, spec: ScaleSetSpec) {
        self.lock().cloud.create(spec);
    }

    /// Whether the mock has a scale set of that name.
    pub fn has_scale_set(&self, set: &str) -> bool {
        self.lock().cloud.sets.contains_key(set)
    }

    /// The set as created (capacity kept current), if the mock has it.
    pub fn scale_set(&self, set: &str) -> Option<ScaleSetSpec> {
        self.lock().cloud.sets.get(set).map(|s| s.spec.clone())
    }

    /// Every scale set, by name.
    pub fn scale_sets(&self) -> Vec<ScaleSetSpec> {
        self.lock()
            .cloud
            .sets
            .values()
            .map(|s| s.spec.clone())
            .collect()
    }

    /// Sets the capacity: adds VMs, or removes the newest at once.
    pub fn scale(&self, set: &str, capacity: u32) {
        assert!(self.try_scale(set, capacity), "no scale set {set}");
    }

    /// [`ArmControl::scale`]; false for a set the mock does not have.
    pub fn try_scale(&self, set: &str, capacity: u32) -> bool {
        self.lock().cloud.scale(set, capacity)
    }

    /// Marks one VM `Deleting`: still listed until [`ArmControl::settle`].
    pub fn delete_vm(&self, set: &str, vm_name: &str) {
        assert!(self.try_delete_vm(set, vm_name), "no VM {vm_name} in {set}");
    }

    /// [`ArmControl::delete_vm`]; false when the set has no such VM.
    pub fn try_delete_vm(&self, set: &str, vm_name: &str) -> bool {
        self.lock().cloud.mark_deleting(set, |v| v.name == vm_name) == 1
    }

    /// Changes one VM (power state, health, tags, ...).
    pub fn update_vm(&self, set: &str, vm_name: &str, change: impl FnOnce(&mut MockVm)) {
        assert!(
            self.try_update_vm(set, vm_name, change),
            "no VM {vm_name} in {set}"
        );
    }

    /// [`ArmControl::update_vm`]; false when the set has no such VM.
    pub fn try_update_vm(
        &self,
        set: &str,
        vm_name: &str,
        change: impl FnOnce(&mut MockVm),
    ) -> bool {
        let mut inner = self.lock();
        match inner
            .cloud
            .sets
            .get_mut(set)
            .and_then(|s| s.vms.iter_mut().find(|v| v.name == vm_name))
        {
            Some(vm) => {
                change(vm);
                true
            }
            None => false,
        }
    }

    /// Finishes transitions: `Deleting` VMs go, `Creating` ones run.
    pub fn settle(&self) {
        self.lock().cloud.settle();
    }

    /// The set's VMs, in creation order.
    pub fn vms(&self, set: &str) -> Vec<MockVm> {
        self.lock()
            .cloud
            .sets
            .get(set)
            .map(|s| s.vms.clone())
            .unwrap_or_default()
    }

    /// The ARM id of a VM of the set (what the provider reports as instance id).
    pub fn vm_id(&self, set: &str, vm_name: &str) -> String {
        self.try_vm_id(set, vm_name)
            .unwrap_or_else(|| panic!("no VM {vm_name} in {set}"))
    }

    /// [`ArmControl::vm_id`]; `None` when the set has no such VM.
    pub fn try_vm_id(&self, set: &str, vm_name: &str) -> Option<String> {
        let inner = self.lock();
        let state = inner.cloud.sets.get(set)?;
        let vm = state.vms.iter().find(|v| v.name == vm_name)?;
        Some(match state.spec.mode {
            Mode::Uniform => render::uniform_vm_id(&state.spec, vm),
            Mode::Flexible => {
                render::flexible_vm_id(&state.spec.subscription, &state.spec.resource_group, vm)
            }
        })
    }

    /// A VM of the resource group that belongs to no scale set.
    pub fn add_standalone_vm(&self, subscription: &str, resource_group: &str, name: &str) {
        self.lock()
            .cloud
            .add_standalone(subscription, resource_group, name);
    }

    /// Items per page of every list.
    pub fn set_page_size(&self, n: usize) {
        self.lock().page_size = n.max(1);
    }

    /// The next `n` ARM requests answer 429 with `Retry-After`.
    pub fn throttle_next(&self, n: usize, retry_after_secs: u64) {
        let mut inner = self.lock();
        for _ in 0..n {
            inner
                .faults
                .push_back(ArmFault::Throttle { retry_after_secs });
        }
    }

    /// The next ARM request answers `status` with an ARM error body.
    pub fn fail_next(&self, status: u16, code: &str, message: &str) {
        self.lock().faults.push_back(ArmFault::Status {
            status,
            code: code.into(),
            message: message.into(),
        });
    }

    /// The next request of `operation` (as [`ArmControl::requests`] names
    /// it) answers `status` with an ARM error body; other requests pass.
    pub fn fail_next_of(&self, operation: &str, status: u16, code: &str, message: &str) {
        self.lock().op_faults.push((
            operation.into(),
            ArmFault::Status {
                status,
                code: code.into(),
                message: message.into(),
            },
        ));
    }

    pub fn clear_faults(&self) {
        let mut inner = self.lock();
        inner.faults.clear();
        inner.op_faults.clear();
    }

    /// Requests by operation since start or the last reset.
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.lock().requests.clone()
    }

    /// ARM requests (token requests excluded).
    pub fn arm_requests(&self) -> u64 {
        self.lock()
            .requests
            .iter()
            .filter(|(op, _)| op.as_str() != "token")
            .map(|(_, n)| n)
            .sum()
    }

    /// When each ARM request (token requests excluded) came since start or
    /// the last reset, with its operation, in arrival order.
    pub fn request_times(&self) -> Vec<(std::time::Instant, &'static str)> {
        self.lock().request_times.clone()
    }

    pub fn reset_requests(&self) {
        let mut inner = self.lock();
        inner.requests.clear();
        inner.request_times.clear();
    }

    /// A service principal with a client secret.
    pub fn register_client_secret(&self, tenant: &str, client_id: &str, secret: &str) {
        self.lock()
            .secrets
            .insert((tenant.into(), client_id.into()), secret.into());
    }

    /// A workload identity: the federated token (the pod's projected service
    /// account token) the client must present as its assertion.
    pub fn register_federated(&self, tenant: &str, client_id: &str, assertion: &str) {
        self.lock()
            .assertions
            .insert((tenant.into(), client_id.into()), assertion.into());
    }

    /// When on, ARM accepts only tokens this mock issued for its audience.
    pub fn require_issued_tokens(&self, on: bool) {
        self.lock().strict_tokens = on;
    }

    pub fn token_grants(&self) -> Vec<TokenGrant> {
        self.lock().grants.clone()
    }
}
