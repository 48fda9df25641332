//! The Azure provider against the test kit's ARM mock (HTTPS, test CA, token
//! endpoint) and the fake Kubernetes API server; events against Azurite.

#![cfg(feature = "azure")]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams};
use meshmirror::app::{self, RunOptions};
use meshmirror::clouds::CloudArgs;
use meshmirror::clouds::azure::AzureArgs;
use meshmirror::cluster::Cluster;
use meshmirror::cluster::kube::KubeCluster;
use meshmirror::cluster::ratelimit::RateLimiter;
use meshmirror::controller::pass::{PassReport, Reconciler};
use meshmirror::core::policy::AllowedGroups;
use meshmirror::crd::ScalingGroupMirror;
use meshmirror::metrics::Metrics;
use meshmirror::workloadentry::EntryVersion;
use meshmirror_azure::{AzureConfig, AzureProvider, Url};
use meshmirror_provider::{GroupRef, Provider, ProviderError};
use meshmirror_testkit::TestKube;
use meshmirror_testkit::arm::azurite::Azurite;
use meshmirror_testkit::arm::{ArmMock, Grant, ScaleSetSpec};

const SUB: &str = "6e0c1b1e-0000-4000-8000-000000000001";
const RG: &str = "mesh-rg";
const TENANT: &str = "72f988bf-0000-4000-8000-000000000002";
const CLIENT: &str = "0c5e0b2a-0000-4000-8000-000000000003";
const SECRET: &str = "not-a-real-secret";
const NS: &str = "default";

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "meshmirror-azure-test-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The ARM mock, the Kubernetes fake, and the flags that point meshmirror at them.
struct Env {
    mock: ArmMock,
    dir: TempDir,
    server: TestKube,
}

impl Env {
    async fn start() -> Env {
        let mock = ArmMock::start().await.expect("ARM mock starts");
        mock.register_client_secret(TENANT, CLIENT, SECRET);
        let dir = TempDir::new();
        std::fs::write(dir.0.join("ca.pem"), mock.ca_pem()).unwrap();
        Env {
            mock,
            dir,
            server: common::server().await,
        }
    }

    /// An environment whose ARM mock shares its CA with an Azurite (the
    /// event queue), so one credential and CA reach both.
    async fn with_azurite() -> (Env, Azurite) {
        let ca = meshmirror_testkit::arm::TestCa::new().unwrap();
        let azurite = Azurite::start(&ca).await.expect("azurite starts");
        let mock = ArmMock::start_with_ca(ca).await.unwrap();
        mock.register_client_secret(TENANT, CLIENT, SECRET);
        let dir = TempDir::new();
        std::fs::write(dir.0.join("ca.pem"), mock.ca_pem()).unwrap();
        let env = Env {
            mock,
            dir,
            server: common::server().await,
        };
        (env, azurite)
    }

    /// Client-secret credentials against the mock's token endpoint.
    fn args(&self) -> AzureArgs {
        AzureArgs {
            azure_endpoint: Some(self.mock.endpoint()),
            azure_authority_host: Some(self.mock.endpoint()),
            azure_credential: Some("client-secret".into()),
            azure_tenant_id: Some(TENANT.into()),
            azure_client_id: Some(CLIENT.into()),
            azure_client_secret: Some(SECRET.into()),
            azure_ca_file: Some(self.dir.0.join("ca.pem")),
            azure_event_poll_seconds: 1.0,
            ..AzureArgs::default()
        }
    }

    fn clouds(&self, args: AzureArgs) -> CloudArgs {
        CloudArgs {
            azure: args,
            ..CloudArgs::default()
        }
    }

    async fn reconciler(&self, args: AzureArgs) -> Reconciler {
        let metrics = Arc::new(Metrics::new());
        let cluster: Arc<dyn Cluster> = Arc::new(KubeCluster::new(
            self.server.service_client(None).await,
            EntryVersion::V1,
            None,
            RateLimiter::unlimited(),
            None,
        ));
        let providers = app::all_providers(&metrics, None, &self.clouds(args))
            .await
            .expect("providers register");
        Reconciler::new(providers, cluster, metrics, AllowedGroups::allow_all())
    }

    async fn create_mirror(&self, yaml: &str) {
        let mirror: ScalingGroupMirror = serde_yaml::from_str(yaml).expect("mirror parses");
        Api::<ScalingGroupMirror>::namespaced(self.server.client(), NS)
            .create(&Default::default(), &mirror)
            .await
            .expect("mirror created");
    }

    async fn pass(&self, reconciler: &Reconciler, name: &str) -> PassReport {
        let mirror = Api::<ScalingGroupMirror>::namespaced(self.server.client(), NS)
            .get(name)
            .await
            .unwrap();
        reconciler.pass(&mirror).await
    }

    async fn entries(&self, mirror: &str) -> Vec<DynamicObject> {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.server.client(),
            NS,
            &EntryVersion::V1.workload_entries(),
        );
        let mut items: Vec<DynamicObject> = api
            .list(&ListParams::default().labels(&format!("meshmirror.io/mirror={mirror}")))
            .await
            .unwrap()
            .items;
        items.sort_by_key(|o| common::annotation(o, "meshmirror.io/instance-id"));
        items
    }

    async fn instance_ids(&self, mirror: &str) -> Vec<String> {
        self.entries(mirror)
            .await
            .iter()
            .map(|o| common::annotation(o, "meshmirror.io/instance-id"))
            .collect()
    }

    fn vm_ids(&self, set: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .mock
            .vms(set)
            .iter()
            .filter(|v| v.provisioning_state != "Deleting")
            .map(|v| self.mock.vm_id(set, &v.name))
            .collect();
        ids.sort();
        ids
    }
}

fn mirror(name: &str, set: &str, extra: &str) -> String {
    format!(
        "apiVersion: meshmirror.io/v1alpha1
kind: ScalingGroupMirror
metadata:
  name: {name}
  namespace: {NS}
spec:
  provider:
    azure:
      subscriptionId: {SUB}
      resourceGroup: {RG}
      scaleSetName: {set}
  workloads:
    - name: api
      labels: {{app: api}}
      ports: {{http: 8080}}
      serviceAccount: api-sa
{extra}"
    )
}

fn spec_address(o: &DynamicObject) -> String {
    o.data["spec"]["address"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn spec_label(o: &DynamicObject, key: &str) -> String {
    o.data["spec"]["labels"][key]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test]
async fn uniform_scale_out_and_in_with_zones_tags_and_health() {
    let env = Env::start().await;
    env.mock.create_scale_set(
        ScaleSetSpec::uniform(SUB, RG, "web")
            .capacity(3)
            .zones(&["1", "2", "3"])
            .tag("team", "mesh")
            .health_extension(),
    );
    env.create_mirror(&mirror(
        "web",
        "web",
        "  copyTags: [team]\n  health: Cloud\n",
    ))
    .await;
    let r = env.reconciler(env.args()).await;

    let report = env.pass(&r, "web").await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(env.instance_ids("web").await, env.vm_ids("web"));
    let entries = env.entries("web").await;
    let vms = env.mock.vms("web");
    for (entry, vm) in entries.iter().zip(&vms) {
        assert_eq!(spec_address(entry), vm.private_ipv4.to_string());
        assert_eq!(spec_label(entry, "team"), "mesh", "tags copied");
        assert_eq!(
            entry.data["spec"]["locality"],
            format!("westeurope/{}", vm.zone.clone().unwrap())
        );
    }

    // A VM the health extension calls unhealthy: its entry says so.
    env.mock
        .update_vm("web", &vms[0].name, |v| v.health = Some("unhealthy".into()));
    env.mock.scale("web", 5);
    let report = env.pass(&r, "web").await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(env.instance_ids("web").await.len(), 5);
    assert_eq!(env.instance_ids("web").await, env.vm_ids("web"));
    let sick = env.mock.vm_id("web", &vms[0].name);
    let entry = env
        .entries("web")
        .await
        .into_iter()
        .find(|o| common::annotation(o, "meshmirror.io/instance-id") == sick)
        .unwrap();
    let healthy = entry.data["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Healthy"))
        .map(|c| c["status"].clone());
    assert_eq!(
        healthy,
        Some(serde_json::json!("False")),
        "{:#}",
        entry.data
    );

    env.mock.scale("web", 2);
    let report = env.pass(&r, "web").await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.deleted, 3);
    assert_eq!(env.instance_ids("web").await, env.vm_ids("web"));
}

#[tokio::test]
async fn flexible_scale_out_and_in_takes_only_the_sets_vms() {
    let env = Env::start().await;
    env.mock.create_scale_set(
        ScaleSetSpec::flexible(SUB, RG, "flex")
            .capacity(2)
            .tag("team", "edge"),
    );
    // Neighbours in the same resource group that are not members.
    env.mock
        .create_scale_set(ScaleSetSpec::flexible(SUB, RG, "other").capacity(2));
    env.mock.add_standalone_vm(SUB, RG, "jumpbox");
    let first = env.mock.vms("flex")[0].name.clone();
    env.mock.update_vm("flex", &first, |v| {
        v.tags.insert("team".into(), "vm-override".into());
    });
    env.create_mirror(&mirror("flex", "flex", "  copyTags: [team]\n"))
        .await;
    let r = env.reconciler(env.args()).await;

    let report = env.pass(&r, "flex").await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(env.instance_ids("flex").await, env.vm_ids("flex"));
    let teams: Vec<String> = env
        .entries("flex")
        .await
        .iter()
        .map(|o| spec_label(o, "team"))
        .collect();
    assert!(teams.contains(&"vm-override".to_string()), "{teams:?}");
    assert!(teams.contains(&"edge".to_string()), "{teams:?}");
    let requests = env.mock.requests();
    assert_eq!(requests.get("vms.list"), Some(&1), "{requests:?}");
    assert_eq!(requests.get("nics.list"), Some(&1), "{requests:?}");
    assert_eq!(requests.get("vmss.vms.list"), None, "{requests:?}");

    env.mock.scale("flex", 4);
    assert!(env.pass(&r, "flex").await.ok());
    assert_eq!(env.instance_ids("flex").await, env.vm_ids("flex"));
    assert_eq!(env.instance_ids("flex").await.len(), 4);

    env.mock.scale("flex", 1);
    let report = env.pass(&r, "flex").await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(env.instance_ids("flex").await, env.vm_ids("flex"));
}

#[tokio::test]
async fn a_deleting_vm_leaves_the_mesh_at_once() {
    let env = Env::start().await;
    env.mock
        .create_scale_set(ScaleSetSpec::uniform(SUB, RG, "web").capacity(3));
    env.mock
        .create_scale_set(ScaleSetSpec::flexible(SUB, RG, "flex").capacity(3));
    env.create_mirror(&mirror("web", "web", "")).await;
    env.create_mirror(&mirror("flex", "flex", "")).await;
    let r = env.reconciler(env.args()).await;
    for name in ["web", "flex"] {
        assert!(env.pass(&r, name).await.ok());
        assert_eq!(env.instance_ids(name).await.len(), 3);
        let victim = env.mock.vms(name)[1].name.clone();
        env.mock.delete_vm(name, &victim);
        let report = env.pass(&r, name).await;
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.deleted, 1);
        // ARM still lists it (Deleting); the entry is gone already.
        assert_eq!(env.mock.vms(name).len(), 3);
        let gone = env.mock.vm_id(name, &victim);
        assert!(!env.instance_ids(name).await.contains(&gone));
        assert_eq!(env.instance_ids(name).await.len(), 2);
    }
    // A stopped (deallocated) VM leaves too.
    let vm = env.mock.vms("web")[0].name.clone();
    env.mock
        .update_vm("web", &vm, |v| v.power_state = "deallocated".into());
    assert_eq!(env.pass(&r, "web").await.deleted, 1);
}

#[tokio::test]
async fn pages_are_followed_and_calls_grow_with_pages_not_instances() {
    let env = Env::start().await;
    env.mock.set_page_size(2);
    env.mock.create_scale_set(
        ScaleSetSpec::uniform(SUB, RG, "web")
            .capacity(5)
            .public_ip(),
    );
    env.create_mirror(&mirror("web", "web", "")).await;
    let r = env.reconciler(env.args()).await;
    env.mock.reset_requests();
    let report = env.pass(&r, "web").await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(env.instance_ids("web").await, env.vm_ids("web"));
    let requests = env.mock.requests();
    assert_eq!(requests.get("vmss.get"), Some(&1), "{requests:?}");
    assert_eq!(requests.get("vmss.vms.list"), Some(&3), "{requests:?}");
    assert_eq!(requests.get("vmss.nics.list"), Some(&3), "{requests:?}");
    assert_eq!(
        requests.get("vmss.publicIPs.list"),
        Some(&3),
        "public IPs are read when NICs point at some: {requests:?}"
    );
}

#[tokio::test]
async fn throttling_deletes_nothing_reports_throttled_and_recovers() {
    let env = Env::start().await;
    env.mock
        .create_scale_set(ScaleSetSpec::uniform(SUB, RG, "web").capacity(3));
    env.create_mirror(&mirror("web", "web", "")).await;
    let r = env.reconciler(env.args()).await;
    assert!(env.pass(&r, "web").await.ok());
    let before = env.instance_ids("web").await;

    env.mock.scale("web", 1);
    // More 429s than the retry wrapper's attempts.
    env.mock.throttle_next(5, 1);
    let report = env.pass(&r, "web").await;
    assert!(!report.ok());
    assert_eq!(report.deleted, 0);
    assert_eq!(env.instance_ids("web").await, before, "nothing deleted");
    let status = env.server_status("web").await;
    let degraded = common::condition(&status, "Degraded").expect("Degraded");
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("True", "Throttled")
    );

    env.mock.clear_faults();
    let report = env.pass(&r, "web").await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(env.instance_ids("web").await, env.vm_ids("web"));
    assert!(common::is_ready(&env.server_status("web").await));
}

impl Env {
    async fn server_status(&self, name: &str) -> meshmirror::crd::ScalingGroupMirrorStatus {
        Api::<ScalingGroupMirror>::namespaced(self.server.client(), NS)
            .get(name)
            .await
            .unwrap()
            .status
            .unwrap_or_default()
    }
}

#[tokio::test]
async fn the_provider_maps_429_and_missing_sets_to_the_contract() {
    let env = Env::start().await;
    env.mock
        .create_scale_set(ScaleSetSpec::uniform(SUB, RG, "web").capacity(1));
    let config = env.args().config().unwrap();
    let provider = AzureProvider::new(config).unwrap();
    let group = |set: &str| GroupRef::Azure {
        subscription_id: SUB.into(),
        resource_group: RG.into(),
        scale_set: set.into(),
    };
    env.mock.throttle_next(1, 17);
    assert_eq!(
        provider.members(&group("web")).await,
        Err(ProviderError::Throttled {
            retry_after: Some(Duration::from_secs(17))
        })
    );
    assert!(matches!(
        provider.members(&group("nope")).await,
        Err(ProviderError::GroupNotFound(_))
    ));
    env.mock
        .fail_next(403, "AuthorizationFailed", "no read on scale sets");
    let err = provider.members(&group("web")).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent(m) if m.contains("AuthorizationFailed")),
        "{err}"
    );
    assert_eq!(provider.members(&group("web")).await.unwrap().len(), 1);
}

#[tokio::test]
async fn workload_identity_exchanges_the_federated_token() {
    let env = Env::start().await;
    env.mock
        .create_scale_set(ScaleSetSpec::flexible(SUB, RG, "flex").capacity(2));
    env.mock
        .register_federated(TENANT, CLIENT, "projected-sa-token");
    env.mock.require_issued_tokens(true);
    let token_file = env.dir.0.join("azure-identity-token");
    std::fs::write(&token_file, "projected-sa-token").unwrap();
    let args = AzureArgs {
        azure_credential: None, // auto: the token file selects workload identity
        azure_client_secret: None,
        azure_federated_token_file: Some(token_file.clone()),
        ..env.args()
    };
    env.create_mirror(&mirror("flex", "flex", "")).await;
    let r = env.reconciler(args.clone()).await;
    let report = env.pass(&r, "flex").await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(env.instance_ids("flex").await, env.vm_ids("flex"));
    let grants = env.mock.token_grants();
    assert_eq!(grants.len(), 1, "the token is cached: {grants:?}");
    assert_eq!(grants[0].grant, Grant::Assertion);
    assert_eq!(grants[0].client_id, CLIENT);
    assert_eq!(grants[0].scope, format!("{}/.default", env.mock.endpoint()));

    // A token the identity provider does not accept fails the pass, and
    // deletes nothing.
    std::fs::write(&token_file, "stolen-token").unwrap();
    let r = env.reconciler(args).await;
    env.mock.scale("flex", 0);
    let report = env.pass(&r, "flex").await;
    assert!(!report.ok());
    assert!(
        report
            .error
            .as_ref()
            .is_some_and(|e| e.to_string().contains("WorkloadIdentityCredential")),
        "{report:?}"
    );
    assert_eq!(env.instance_ids("flex").await.len(), 2);
}

#[tokio::test]
async fn public_address_and_ipv6_choice() {
    let env = Env::start().await;
    env.mock.create_scale_set(
        ScaleSetSpec::uniform(SUB, RG, "web")
            .capacity(2)
            .public_ip()
            .ipv6(),
    );
    env.mock.create_scale_set(
        ScaleSetSpec::flexible(SUB, RG, "flex")
            .capacity(2)
            .public_ip(),
    );
    env.mock
        .create_scale_set(ScaleSetSpec::uniform(SUB, RG, "private").capacity(1));
    env.create_mirror(&mirror("web-public", "web", "  address: PublicIPv4\n"))
        .await;
    env.create_mirror(&mirror("web-v6", "web", "  address: IPv6\n"))
        .await;
    env.create_mirror(&mirror("flex-public", "flex", "  address: PublicIPv4\n"))
        .await;
    env.create_mirror(&mirror("private", "private", "")).await;
    let r = env.reconciler(env.args()).await;
    for name in ["web-public", "web-v6", "flex-public", "private"] {
        let report = env.pass(&r, name).await;
        assert!(report.ok(), "{name}: {report:?}");
    }
    let want = |set: &str, pick: &dyn Fn(&meshmirror_testkit::arm::MockVm) -> String| {
        let mut v: Vec<(String, String)> = env
            .mock
            .vms(set)
            .iter()
            .map(|vm| (env.mock.vm_id(set, &vm.name), pick(vm)))
            .collect();
        v.sort();
        v
    };
    let got = |entries: Vec<DynamicObject>| -> Vec<(String, String)> {
        entries
            .iter()
            .map(|o| {
                (
                    common::annotation(o, "meshmirror.io/instance-id"),
                    spec_address(o),
                )
            })
            .collect()
    };
    assert_eq!(
        got(env.entries("web-public").await),
        want("web", &|vm| vm.public_ipv4.unwrap().to_string())
    );
    assert_eq!(
        got(env.entries("web-v6").await),
        want("web", &|vm| vm.ipv6.unwrap().to_string())
    );
    assert_eq!(
        got(env.entries("flex-public").await),
        want("flex", &|vm| vm.public_ipv4.unwrap().to_string())
    );
    let requests = env.mock.requests();
    assert_eq!(requests.get("publicIPs.list"), Some(&1), "{requests:?}");
    // Only the two passes of `web` listed its public IPs; `private` needed none.
    assert_eq!(
        requests.get("vmss.publicIPs.list"),
        Some(&2),
        "{requests:?}"
    );
}

#[tokio::test]
async fn the_mock_controls_scale_and_delete_through_arm_calls() {
    // ARM's own control calls, as `az vmss scale` / `az vmss delete-instances` send them.
    let env = Env::start().await;
    env.mock
        .create_scale_set(ScaleSetSpec::uniform(SUB, RG, "web").capacity(1));
    env.mock
        .create_scale_set(ScaleSetSpec::flexible(SUB, RG, "flex").capacity(2));
    let config = env.args().config().unwrap();
    let provider = AzureProvider::new(config.clone()).unwrap();
    let group = |set: &str| GroupRef::Azure {
        subscription_id: SUB.into(),
        resource_group: RG.into(),
        scale_set: set.into(),
    };
    let token = arm_token(&config).await;
    let http = arm_http(&config);
    let set_url = format!(
        "{}/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/web?api-version=2024-11-01",
        env.mock.endpoint()
    );
    let status = http
        .patch(&set_url)
        .bearer_auth(&token)
        .json(&serde_json::json!({"sku": {"capacity": 3}}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 200);
    assert_eq!(provider.members(&group("web")).await.unwrap().len(), 3);

    let delete_url = set_url.replace("/web?", "/web/delete?");
    let status = http
        .post(&delete_url)
        .bearer_auth(&token)
        .json(&serde_json::json!({"instanceIds": ["0"]}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 202);
    let members = provider.members(&group("web")).await.unwrap();
    let leaving: Vec<_> = members
        .iter()
        .filter(|m| m.state == meshmirror_provider::InstanceState::Terminating)
        .collect();
    assert_eq!(leaving.len(), 1);
    assert!(leaving[0].id.ends_with("/virtualMachines/0"));

    let flex_vm = env.mock.vms("flex")[0].name.clone();
    let vm_url = format!(
        "{}/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines/{flex_vm}?api-version=2024-11-01",
        env.mock.endpoint()
    );
    let status = http
        .delete(&vm_url)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 202);
    env.mock.settle();
    assert_eq!(provider.members(&group("flex")).await.unwrap().len(), 1);
    assert_eq!(provider.members(&group("web")).await.unwrap().len(), 2);
}

async fn arm_token(config: &AzureConfig) -> String {
    let transport = meshmirror_azure::provider::transport(config.extra_ca_pem.as_deref()).unwrap();
    let credential = meshmirror_azure::credential::build(&config.credential, transport).unwrap();
    let scope = format!(
        "{}/.default",
        config.endpoint.origin().ascii_serialization()
    );
    credential
        .get_token(&[&scope], None)
        .await
        .unwrap()
        .token
        .secret()
        .to_string()
}

fn arm_http(config: &AzureConfig) -> meshmirror_azure::reqwest::Client {
    let certs = meshmirror_azure::reqwest::Certificate::from_pem_bundle(
        config.extra_ca_pem.as_deref().unwrap(),
    )
    .unwrap();
    meshmirror_azure::reqwest::Client::builder()
        .tls_certs_merge(certs)
        .build()
        .unwrap()
}

/// Prints ARM calls per pass for 10, 100 and 1,000 instances of each mode
/// (the mock pages lists by 100, as ARM's Compute lists do with instance views).
#[tokio::test]
async fn benchmark_api_calls_per_pass() {
    let env = Env::start().await;
    let provider = AzureProvider::new(env.args().config().unwrap()).unwrap();
    let mut rows = Vec::new();
    for n in [10u32, 100, 1000] {
        for (mode, spec) in [
            ("Uniform", ScaleSetSpec::uniform(SUB, RG, &format!("u{n}"))),
            (
                "Flexible",
                ScaleSetSpec::flexible(SUB, &format!("rg{n}"), &format!("f{n}")),
            ),
        ] {
            let (set, rg) = (spec.name.clone(), spec.resource_group.clone());
            env.mock.create_scale_set(spec.capacity(n));
            let group = GroupRef::Azure {
                subscription_id: SUB.into(),
                resource_group: rg,
                scale_set: set,
            };
            let before = provider.api_calls();
            let mock_before = env.mock.arm_requests();
            let started = Instant::now();
            let members = provider.members(&group).await.unwrap();
            let took = started.elapsed();
            let calls = provider.api_calls() - before;
            assert_eq!(members.len(), n as usize);
            assert_eq!(env.mock.arm_requests() - mock_before, calls);
            let pages = (n as u64).div_ceil(100);
            // One get, then the VM and NIC lists, page by page.
            assert_eq!(calls, 1 + 2 * pages, "{mode} {n}");
            rows.push(format!(
                "{mode:>8} {n:>5} instances: {calls:>3} ARM calls per pass ({took:?})"
            ));
        }
    }
    eprintln!(
        "azure API calls per pass (page size 100):\n{}",
        rows.join("\n")
    );
}

async fn send(queue: &meshmirror_azure::azure_storage_queue::QueueClient, text: &str) {
    use meshmirror_azure::azure_storage_queue::models::QueueMessage;
    queue
        .send_message(
            QueueMessage {
                message_text: Some(text.to_string()),
            }
            .try_into()
            .unwrap(),
            None,
        )
        .await
        .expect("message sent");
}

async fn queue_length(queue: &meshmirror_azure::azure_storage_queue::QueueClient) -> i64 {
    use meshmirror_azure::azure_storage_queue::models::QueueClientGetPropertiesResultHeaders;
    queue
        .get_properties(None)
        .await
        .unwrap()
        .approximate_messages_count()
        .unwrap()
        .unwrap_or(0)
}

/// Event Grid's base64 envelope for a resource event.
fn event_grid(event_type: &str, resource_uri: &str, operation: &str) -> String {
    let event = serde_json::json!({
        "subject": resource_uri,
        "eventType": event_type,
        "eventTime": "2026-01-01T00:00:00.0000000Z",
        "id": format!("{}", rand::random::<u64>()),
        "data": {
            "resourceProvider": "Microsoft.Compute",
            "resourceUri": resource_uri,
            "operationName": operation,
            "status": "Succeeded",
            "subscriptionId": SUB,
            "tenantId": TENANT,
        },
        "dataVersion": "2",
        "metadataVersion": "1",
        "topic": format!("/subscriptions/{SUB}/resourceGroups/{RG}"),
    });
    base64(event.to_string().as_bytes())
}

/// Standard base64 with padding, as Event Grid writes queue messages.
fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[tokio::test]
async fn events_from_the_storage_queue_trigger_a_pass_and_are_deleted() {
    let (env, azurite) = Env::with_azurite().await;
    let queue_url = azurite.queue_url("vmss-events");
    let args = AzureArgs {
        azure_event_queue: Some(queue_url.clone()),
        ..env.args()
    };

    let queue = test_queue(&args, &queue_url).await;

    env.mock
        .create_scale_set(ScaleSetSpec::uniform(SUB, RG, "web").capacity(1));
    env.mock
        .create_scale_set(ScaleSetSpec::flexible(SUB, RG, "flex").capacity(1));
    // Polling every hour: only events can make the next passes happen.
    env.create_mirror(&mirror("web", "web", "  sync: {interval: 1h}\n"))
        .await;
    env.create_mirror(&mirror("flex", "flex", "  sync: {interval: 1h}\n"))
        .await;

    let opts = RunOptions {
        kube_qps: 0.0,
        clouds: env.clouds(args),
        allow_all_groups: true,
        ..RunOptions::default()
    };
    let failures = common::Failures::default();
    let controller = common::ControllerTask::spawn(
        "azure",
        env.server.service_client(None).await,
        opts,
        &failures,
    );
    wait(&env, "first passes", || async {
        env.instance_ids("web").await.len() == 1 && env.instance_ids("flex").await.len() == 1
    })
    .await;

    // Noise first: malformed and foreign messages are deleted.
    send(&queue, "not base64 and not json").await;
    let foreign = std::fs::read_to_string(format!(
        "{}/providers/azure/tests/fixtures/eventgrid-resource-write-success.json",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo and nextest set CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    send(&queue, &base64(foreign.as_bytes())).await;

    // Uniform: a VM written under the scale set's path. Without its event
    // nothing notices (the noise above triggered no pass either).
    env.mock.scale("web", 3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        env.instance_ids("web").await.len(),
        1,
        "no pass without an event"
    );
    // Event Grid sends one event per VM written.
    for new_vm in &env.mock.vms("web")[1..] {
        send(
            &queue,
            &event_grid(
                "Microsoft.Resources.ResourceWriteSuccess",
                &env.mock.vm_id("web", &new_vm.name),
                "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/write",
            ),
        )
        .await;
    }
    wait(&env, "uniform event handled", || async {
        env.instance_ids("web").await == env.vm_ids("web")
    })
    .await;

    // Flexible: a plain VM deleted in the resource group of a Flexible set.
    let doomed = env.mock.vms("flex")[0].name.clone();
    let doomed_id = env.mock.vm_id("flex", &doomed);
    env.mock.delete_vm("flex", &doomed);
    send(
        &queue,
        &event_grid(
            "Microsoft.Resources.ResourceDeleteSuccess",
            &doomed_id.to_lowercase(),
            "Microsoft.Compute/virtualMachines/delete",
        ),
    )
    .await;
    wait(&env, "flexible event handled", || async {
        env.instance_ids("flex").await.is_empty()
    })
    .await;
    wait(&env, "every message deleted", || async {
        queue_length(&queue).await == 0
    })
    .await;

    controller.stop().await;
    drop(azurite);
}

/// The test's own client of the event queue (created in Azurite), on the
/// same credential and CA as the provider's.
async fn test_queue(
    args: &AzureArgs,
    queue_url: &str,
) -> meshmirror_azure::azure_storage_queue::QueueClient {
    let config = args.config().unwrap();
    let transport = meshmirror_azure::provider::transport(config.extra_ca_pem.as_deref()).unwrap();
    let credential =
        meshmirror_azure::credential::build(&config.credential, transport.clone()).unwrap();
    let queue = meshmirror_azure::azure_storage_queue::QueueClient::new(
        Url::parse(queue_url).unwrap(),
        Some(credential),
        Some(meshmirror_azure::azure_storage_queue::QueueClientOptions {
            client_options: meshmirror_azure::azure_core::http::ClientOptions {
                transport,
                ..Default::default()
            },
            ..Default::default()
        }),
    )
    .unwrap();
    queue.create(None).await.expect("queue created in Azurite");
    queue
}

/// The controller asks for the event feed once per leadership term. A
/// replica that loses the lease and wins it again must get a working feed
/// the second time too (it used to get none: events then waited for polls).
#[tokio::test]
async fn each_leadership_term_gets_its_own_event_feed() {
    let (env, azurite) = Env::with_azurite().await;
    let queue_url = azurite.queue_url("term-events");
    let args = AzureArgs {
        azure_event_queue: Some(queue_url.clone()),
        azure_event_poll_seconds: 1.0,
        ..env.args()
    };
    let queue = test_queue(&args, &queue_url).await;
    let provider = AzureProvider::new(args.config().unwrap()).unwrap();
    env.mock
        .create_scale_set(ScaleSetSpec::uniform(SUB, RG, "web").capacity(1));
    let group = GroupRef::Azure {
        subscription_id: SUB.into(),
        resource_group: RG.into(),
        scale_set: "web".into(),
    };
    // A pass reads the group first, so its events are recognised.
    provider.members(&group).await.unwrap();

    let first_term = provider.events().expect("the first term's feed");
    drop(first_term);
    let mut second_term = provider.events().expect("the second term's feed");

    env.mock.scale("web", 2);
    let new_vm = env.mock.vms("web")[1].name.clone();
    send(
        &queue,
        &event_grid(
            "Microsoft.Resources.ResourceWriteSuccess",
            &env.mock.vm_id("web", &new_vm),
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/write",
        ),
    )
    .await;
    let event = tokio::time::timeout(common::CONVERGE, second_term.next())
        .await
        .expect("the second term's feed delivers the event")
        .expect("the feed does not end");
    assert_eq!(event.group, group);
    drop(azurite);
}

async fn wait<F, Fut>(env: &Env, what: &str, done: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let _ = env;
    let started = Instant::now();
    while !done().await {
        assert!(
            started.elapsed() < common::CONVERGE,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A controller on the ARM mock whose events come through an Azurite queue,
/// mirroring the Uniform set `web` of `size` VMs every 10 minutes: after the
/// first pass, only events make passes.
struct EventRig {
    env: Env,
    azurite: Azurite,
    queue: meshmirror_azure::azure_storage_queue::QueueClient,
    controller: common::ControllerTask,
    _failures: common::Failures,
}

impl EventRig {
    async fn start(size: u32) -> EventRig {
        let (env, azurite) = Env::with_azurite().await;
        let queue_url = azurite.queue_url("launch-events");
        let args = AzureArgs {
            azure_event_queue: Some(queue_url.clone()),
            azure_event_poll_seconds: 0.5,
            ..env.args()
        };
        let queue = test_queue(&args, &queue_url).await;
        env.mock
            .create_scale_set(ScaleSetSpec::uniform(SUB, RG, "web").capacity(size));
        env.create_mirror(&mirror("web", "web", "  sync: {interval: 10m}\n"))
            .await;
        let opts = RunOptions {
            kube_qps: 0.0,
            clouds: env.clouds(args),
            allow_all_groups: true,
            ..RunOptions::default()
        };
        let failures = common::Failures::default();
        let controller = common::ControllerTask::spawn(
            "azure",
            env.server.service_client(None).await,
            opts,
            &failures,
        );
        // Thousands of entries take longer than CONVERGE to write at first.
        let started = Instant::now();
        while env.entries("web").await.len() != size as usize {
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "timed out waiting for {size} entries"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        EventRig {
            env,
            azurite,
            queue,
            controller,
            _failures: failures,
        }
    }

    /// Waits until a second passes without an ARM call (the first passes
    /// done), then counts calls from zero.
    async fn idle(&self) {
        let started = Instant::now();
        loop {
            self.env.mock.reset_requests();
            tokio::time::sleep(Duration::from_secs(1)).await;
            if self.env.mock.arm_requests() == 0 {
                return;
            }
            assert!(started.elapsed() < common::CONVERGE, "ARM calls never stop");
        }
    }

    /// Adds one VM to the set; its ARM id.
    fn launch(&self) -> String {
        let vms = self.env.mock.vms("web");
        self.env.mock.scale("web", vms.len() as u32 + 1);
        let new = self.env.mock.vms("web").last().unwrap().name.clone();
        self.env.mock.vm_id("web", &new)
    }

    /// Event Grid's message for a write of the VM, with the subject spelled
    /// as Event Grid's samples spell it (`resourcegroups`).
    async fn send_write(&self, vm_id: &str) {
        let subject = vm_id.replace("/resourceGroups/", "/resourcegroups/");
        send(
            &self.queue,
            &event_grid(
                "Microsoft.Resources.ResourceWriteSuccess",
                &subject,
                "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/write",
            ),
        )
        .await;
    }

    /// Whether the entry of workload `api` for the VM is at the API server
    /// (one GET by its name, not a list of thousands).
    async fn has_entry(&self, vm_id: &str) -> bool {
        let api: Api<DynamicObject> = Api::namespaced_with(
            self.env.server.client(),
            NS,
            &EntryVersion::V1.workload_entries(),
        );
        let name = meshmirror::core::names::entry_name("web", "api", vm_id);
        api.get_opt(&name)
            .await
            .unwrap()
            .is_some_and(|o| common::annotation(&o, "meshmirror.io/instance-id") == vm_id)
    }

    async fn stop(self) {
        self.controller.stop().await;
        drop(self.azurite);
    }
}

/// Not a test: prints the latency from an Event Grid message in the queue to
/// the new VM's WorkloadEntry over 30 launch events per set size, and the
/// ARM calls per event
/// (`cargo nextest run --test azure --run-ignored only -E 'test(bench_)' --no-capture`).
/// The queue is polled every second (the flag's floor; Storage queues have
/// no long poll) and events come at a random point of that cycle, so "after
/// the first call" also prints the latency from the event pass's first ARM
/// call, without the wait for the next poll.
#[tokio::test]
#[ignore = "benchmark: prints numbers, asserts none"]
#[allow(clippy::print_stdout)]
async fn bench_event_to_entry_latency() {
    let sizes: Vec<u32> = common::bench_sizes(&[10, 100, 1000, 5000]);
    for size in sizes {
        let rig = EventRig::start(size).await;
        let events = 30;
        let mut total = Vec::new();
        let mut after_call = Vec::new();
        rig.idle().await;
        for _ in 0..events {
            // At a random point of the queue's poll cycle, as events come.
            tokio::time::sleep(Duration::from_millis(rand::random::<u64>() % 1000)).await;
            let new = rig.launch();
            let sent = Instant::now();
            rig.send_write(&new).await;
            let started = Instant::now();
            while !rig.has_entry(&new).await {
                assert!(started.elapsed() < common::CONVERGE, "no entry for {new}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let seen = Instant::now();
            total.push(seen - sent);
            let first = rig
                .env
                .mock
                .request_times()
                .into_iter()
                .find(|(at, _)| *at >= sent)
                .map(|(at, _)| at)
                .unwrap_or(sent);
            after_call.push(seen - first);
        }
        let requests = rig.env.mock.requests();
        let calls = rig.env.mock.arm_requests() as f64 / events as f64;
        let pct = |samples: &mut Vec<Duration>| {
            samples.sort();
            let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
            format!("p50 {:?}, p99 {:?}, max {:?}", at(0.5), at(0.99), at(1.0))
        };
        println!(
            "Azure event -> WorkloadEntry at {size} VMs (Uniform), {events} launches: {}; after the first ARM call: {}; ARM calls per event {calls:.1} ({requests:?})",
            pct(&mut total),
            pct(&mut after_call),
        );
        rig.stop().await;
    }
}

/// The ARM requests by operation since the last reset, as literal pairs.
fn counts(env: &Env) -> Vec<(String, u64)> {
    env.mock.requests().into_iter().collect()
}

fn pairs(list: &[(&str, u64)]) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = list.iter().map(|(k, n)| (k.to_string(), *n)).collect();
    out.sort();
    out
}

/// `instances()` of two VMs costs the same calls in a set of 250 (three
/// pages) as in one of 1,000, in both orchestration modes, and gives what
/// `members()` gives for them; a VM not in the set is absent.
#[tokio::test]
async fn named_instances_cost_the_same_at_any_set_size() {
    let env = Env::start().await;
    let provider = AzureProvider::new(env.args().config().unwrap()).unwrap();
    for (mode, size) in [
        ("Uniform", 250u32),
        ("Uniform", 1000),
        ("Flexible", 250),
        ("Flexible", 1000),
    ] {
        let (rg, set) = (format!("rg-{mode}-{size}"), format!("set-{mode}-{size}"));
        let spec = match mode {
            "Uniform" => ScaleSetSpec::uniform(SUB, &rg, &set),
            _ => ScaleSetSpec::flexible(SUB, &rg, &set),
        };
        env.mock
            .create_scale_set(spec.capacity(size).public_ip().zones(&["1", "2"]));
        let group = GroupRef::Azure {
            subscription_id: SUB.into(),
            resource_group: rg.clone(),
            scale_set: set.clone(),
        };
        let members = provider.members(&group).await.unwrap();
        assert_eq!(members.len(), size as usize);
        let vms = env.mock.vms(&set);
        let ids = vec![
            env.mock.vm_id(&set, &vms[7].name),
            env.mock.vm_id(&set, &vms[size as usize - 1].name),
        ];
        env.mock.reset_requests();
        let mut got = provider
            .instances(&group, &ids)
            .await
            .unwrap()
            .expect("asked alone");
        got.sort_by(|a, b| a.id.cmp(&b.id));
        let mut want: Vec<_> = members
            .iter()
            .filter(|m| ids.contains(&m.id))
            .cloned()
            .collect();
        want.sort_by(|a, b| a.id.cmp(&b.id));
        assert_eq!(want.len(), 2);
        assert_eq!(got, want, "{mode} {size}");
        let expected = match mode {
            "Uniform" => pairs(&[
                ("vmss.get", 1),
                ("vmss.vms.get", 2),
                ("vmss.vm.nics.list", 2),
                ("vmss.publicIPs.get", 2),
            ]),
            _ => pairs(&[
                ("vmss.get", 1),
                ("vms.get", 2),
                ("nics.get", 2),
                ("publicIPs.get", 2),
            ]),
        };
        assert_eq!(counts(&env), expected, "{mode} {size}");
    }
}

/// What is not in the set is absent (one GET tells), what cannot be asked
/// about alone gives `None` (a full read) at no cost, and a failure other
/// than 404 fails the pass.
#[tokio::test]
async fn named_instances_absent_unaskable_and_failing() {
    let env = Env::start().await;
    let provider = AzureProvider::new(env.args().config().unwrap()).unwrap();
    env.mock
        .create_scale_set(ScaleSetSpec::uniform(SUB, RG, "web").capacity(250));
    env.mock
        .create_scale_set(ScaleSetSpec::flexible(SUB, "flex-rg", "flex").capacity(250));
    env.mock
        .create_scale_set(ScaleSetSpec::flexible(SUB, "flex-rg", "other").capacity(1));
    env.mock.add_standalone_vm(SUB, "flex-rg", "loner");
    let group = |rg: &str, set: &str| GroupRef::Azure {
        subscription_id: SUB.into(),
        resource_group: rg.into(),
        scale_set: set.into(),
    };
    let (web, flex) = (group(RG, "web"), group("flex-rg", "flex"));
    provider.members(&web).await.unwrap();
    provider.members(&flex).await.unwrap();
    let web_vm = |n: &str| {
        format!(
            "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/web/virtualMachines/{n}"
        )
    };
    let rg_vm = |name: &str| {
        format!(
            "/subscriptions/{SUB}/resourceGroups/flex-rg/providers/Microsoft.Compute/virtualMachines/{name}"
        )
    };

    // Absent: a Uniform instance ARM does not have (404), a VM of another
    // Flexible set and one of no set (each read once), ids of other sets
    // and resource groups (not asked).
    let other_vm = env.mock.vms("other")[0].name.clone();
    env.mock.reset_requests();
    let absent = [
        web_vm("99999"),
        format!(
            "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/api/virtualMachines/1"
        ),
    ];
    assert_eq!(provider.instances(&web, &absent).await, Ok(Some(vec![])));
    assert_eq!(counts(&env), pairs(&[("vmss.get", 1), ("vmss.vms.get", 1)]));
    env.mock.reset_requests();
    let absent = [
        rg_vm(&other_vm),
        rg_vm("loner"),
        format!(
            "/subscriptions/{SUB}/resourceGroups/elsewhere/providers/Microsoft.Compute/virtualMachines/x"
        ),
    ];
    assert_eq!(provider.instances(&flex, &absent).await, Ok(Some(vec![])));
    assert_eq!(counts(&env), pairs(&[("vmss.get", 1), ("vms.get", 2)]));

    // A VM deleted since the listing: absent once ARM forgets it.
    let gone = env.mock.vms("web")[3].clone();
    env.mock.delete_vm("web", &gone.name);
    env.mock.settle();
    let gone_id = web_vm(gone.instance_id.as_deref().unwrap());
    assert_eq!(provider.instances(&web, &[gone_id]).await, Ok(Some(vec![])));

    // Not askable alone: no call, the core reads every member.
    env.mock.reset_requests();
    for ids in [
        vec!["i-0abc".to_string()],
        vec![format!("{}/extensions/health", web_vm("1"))],
        vec![web_vm("1"), web_vm("..")],
    ] {
        assert_eq!(provider.instances(&web, &ids).await, Ok(None), "{ids:?}");
    }
    assert_eq!(counts(&env), vec![]);
    // More VMs than the listing has pages (3): the listing is cheaper.
    let four: Vec<String> = ["1", "2", "4", "5"].iter().map(|n| web_vm(n)).collect();
    assert_eq!(provider.instances(&web, &four).await, Ok(None));
    // ARM spells the id otherwise than asked: the core could not match it.
    let respelled = web_vm("1").replace("/resourceGroups/", "/resourcegroups/");
    assert_eq!(provider.instances(&web, &[respelled]).await, Ok(None));

    // Fail static: only a 404 means gone.
    env.mock
        .fail_next_of("vmss.vms.get", 500, "InternalServerError", "boom");
    let err = provider.instances(&web, &[web_vm("1")]).await.unwrap_err();
    assert!(matches!(err, ProviderError::Transient(_)), "{err:?}");
    env.mock
        .fail_next_of("nics.get", 403, "AuthorizationFailed", "no read on NICs");
    let member = rg_vm(&env.mock.vms("flex")[0].name);
    let err = provider.instances(&flex, &[member]).await.unwrap_err();
    assert!(matches!(err, ProviderError::Permanent(_)), "{err:?}");
    // A running VM whose NIC cannot be found has no address: the pass
    // fails rather than take it out.
    env.mock
        .fail_next_of("vmss.vm.nics.list", 404, "NotFound", "gone");
    let err = provider.instances(&web, &[web_vm("1")]).await.unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    assert_eq!(
        provider.instances(&group(RG, "nope"), &[web_vm("1")]).await,
        Err(ProviderError::GroupNotFound(format!(
            "{}",
            group(RG, "nope")
        )))
    );
}

/// A cloud event makes the pass ask ARM about the VM it names only: at 120
/// members a new VM's write event gets its entry written after GETs of that
/// VM and its NICs, with no listing of the set (the rest as read within the
/// 10 minute interval); a delete event the same way.
#[tokio::test]
async fn an_event_asks_the_cloud_about_its_instance_only() {
    let rig = EventRig::start(120).await;
    rig.idle().await;
    let listings = |env: &Env| {
        let r = env.mock.requests();
        ["vmss.vms.list", "vmss.nics.list", "vmss.publicIPs.list"]
            .iter()
            .map(|op| r.get(*op).copied().unwrap_or(0))
            .sum::<u64>()
    };
    let new = rig.launch();
    rig.send_write(&new).await;
    wait(&rig.env, "the new VM's entry", || rig.has_entry(&new)).await;
    wait(&rig.env, "the event deleted from the queue", || async {
        queue_length(&rig.queue).await == 0
    })
    .await;
    assert_eq!(rig.env.entries("web").await.len(), 121);
    let requests = rig.env.mock.requests();
    assert!(
        requests.get("vmss.vms.get").copied().unwrap_or(0) >= 1,
        "{requests:?}"
    );
    assert_eq!(
        listings(&rig.env),
        0,
        "no listing after the event: {requests:?}"
    );

    // Scale-in: a VM goes; its delete event takes its entry out.
    let gone = rig.env.mock.vms("web")[5].name.clone();
    let gone_id = rig.env.mock.vm_id("web", &gone);
    rig.env.mock.delete_vm("web", &gone);
    rig.env.mock.settle();
    rig.idle().await;
    send(
        &rig.queue,
        &event_grid(
            "Microsoft.Resources.ResourceDeleteSuccess",
            &gone_id.replace("/resourceGroups/", "/resourcegroups/"),
            "Microsoft.Compute/virtualMachineScaleSets/virtualMachines/delete",
        ),
    )
    .await;
    wait(&rig.env, "the deleted VM's entry gone", || async {
        !rig.has_entry(&gone_id).await
    })
    .await;
    assert_eq!(rig.env.entries("web").await.len(), 120);
    let requests = rig.env.mock.requests();
    assert!(
        requests.get("vmss.vms.get").copied().unwrap_or(0) >= 1,
        "{requests:?}"
    );
    assert_eq!(
        listings(&rig.env),
        0,
        "no listing after the event: {requests:?}"
    );
    rig.stop().await;
}
