//! [`Cluster`] on the Kubernetes API server.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType as KubeEventType, Recorder, Reporter};
use kube::{Client, Resource};
use serde_json::{Value, json};
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::cluster::entry_cache::{EntryCache, Flight, read_entry};
use crate::cluster::group_cache::GroupCache;
use crate::cluster::networks::{DEFAULT_ISTIO_NAMESPACE, NetworkSource};
use crate::cluster::ratelimit::RateLimiter;
use crate::cluster::{Cluster, ClusterError, EventType, Owner};
use crate::core::desired::DesiredEntry;
use crate::core::mesh::{ActualMesh, MeshKind, MeshObject};
use crate::core::networks::NetworkView;
use crate::core::plan::ActualEntry;
use crate::crd::{ScalingGroupMirror, ScalingGroupMirrorStatus};
use crate::fence::Fence;
use crate::workloadentry::{EntryVersion, FIELD_MANAGER, GroupTemplate, keys};

/// The API server, with owned entries read from a watch cache when one is given.
pub struct KubeCluster {
    client: Client,
    version: EntryVersion,
    entries: Option<Arc<EntryCache>>,
    recorder: Recorder,
    writes: RateLimiter,
    in_flight: Semaphore,
    groups: Option<Arc<GroupCache>>,
    call_timeout: Duration,
    fence: Fence,
    networks: NetworkSource,
}

/// Writes in flight at once, across all mirrors. Each holds a connection and
/// its buffers: unbounded, a fleet-wide converge opened ~800 connections and
/// ~100 MiB of buffers, and bought no speed (`--kube-qps` bounds the rate;
/// one write takes a few milliseconds).
const MAX_WRITES_IN_FLIGHT: usize = 32;

/// The longest one API-server call may take. kube-client sets no read
/// timeout, so without this a server that stops answering would stall the
/// pass (and the mirror's events) forever instead of failing it.
pub const API_CALL_TIMEOUT: Duration = Duration::from_secs(60);

impl KubeCluster {
    /// Tells the entry cache an own write to `name` is on its way.
    fn sending(&self, owner: &Owner, name: &str) -> Option<Flight> {
        self.entries
            .as_ref()
            .map(|cache| cache.sending(&owner.namespace, name))
    }

    pub fn new(
        client: Client,
        version: EntryVersion,
        entries: Option<Arc<EntryCache>>,
        writes: RateLimiter,
        reporter_instance: Option<String>,
    ) -> Self {
        let recorder = Recorder::new(
            client.clone(),
            Reporter {
                controller: "meshmirror".into(),
                instance: reporter_instance,
            },
        );
        KubeCluster {
            client,
            version,
            entries,
            recorder,
            writes,
            in_flight: Semaphore::new(MAX_WRITES_IN_FLIGHT),
            groups: None,
            call_timeout: API_CALL_TIMEOUT,
            fence: Fence::always(),
            networks: NetworkSource::new(DEFAULT_ISTIO_NAMESPACE),
        }
    }

    /// Writes only while `fence` holds (leader election).
    pub fn with_fence(mut self, fence: Fence) -> Self {
        self.fence = fence;
        self
    }

    /// Another deadline per API-server call than [`API_CALL_TIMEOUT`].
    pub fn with_call_timeout(mut self, limit: Duration) -> Self {
        self.call_timeout = limit;
        self
    }

    pub(super) async fn within<T>(
        &self,
        what: &'static str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, ClusterError> {
        crate::cluster::within(self.call_timeout, what, call).await
    }

    /// Looks for the cluster's network and the network gateways in this
    /// namespace (istiod's) instead of `istio-system`.
    pub fn with_istio_namespace(mut self, namespace: &str) -> Self {
        self.networks = NetworkSource::new(namespace);
        self
    }

    /// Reads WorkloadGroups from this cache instead of the API server.
    pub fn with_groups(mut self, groups: Arc<GroupCache>) -> Self {
        self.groups = Some(groups);
        self
    }

    /// Waits for a write slot and then for the write rate.
    /// Waits for the write budget, then checks the fence: the lease may have
    /// been lost while this write waited.
    pub(super) async fn write_permit(&self) -> Result<Option<SemaphorePermit<'_>>, ClusterError> {
        let permit = self.in_flight.acquire().await.ok();
        self.writes.acquire().await;
        if !self.fence.holds() {
            return Err(ClusterError::NotLeader);
        }
        Ok(permit)
    }

    pub(super) fn client(&self) -> &Client {
        &self.client
    }

    fn entries_api(&self, namespace: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            namespace,
            &self.version.workload_entries(),
        )
    }
}

/// Reads an entry if `owner` owns it: our labels and an ownerReference to the
/// mirror's uid. Anything else (Istio's auto-registered entries included) is
/// not ours and is never touched.
pub fn owned_entry(obj: &DynamicObject, owner: &Owner) -> Option<ActualEntry> {
    if !owner.owns_meta(&obj.metadata) {
        return None;
    }
    read_entry(obj)
}

/// The server-side-apply body of an entry: everything meshmirror owns, nothing else.
pub fn entry_manifest(version: EntryVersion, owner: &Owner, entry: &DesiredEntry) -> Value {
    let mut annotations: BTreeMap<&str, &str> = entry
        .annotations
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    annotations.insert(keys::APPLIED_HASH, &entry.hash);
    let mut manifest = json!({
        "apiVersion": format!("networking.istio.io/{}", version.as_str()),
        "kind": "WorkloadEntry",
        "metadata": {
            "name": entry.name,
            "namespace": owner.namespace,
            "labels": entry.labels,
            "annotations": annotations,
        },
        "spec": entry.spec,
    });
    // `render` without a cluster has no uid to point at.
    if let Some(reference) = owner.reference() {
        manifest["metadata"]["ownerReferences"] = json!([reference]);
    }
    manifest
}

#[async_trait]
impl Cluster for KubeCluster {
    async fn owned_entries(&self, owner: &Owner) -> Result<Vec<ActualEntry>, ClusterError> {
        if let Some(cache) = &self.entries {
            return Ok(cache.owned(owner));
        }
        let selector = owner.selector();
        let api = self.entries_api(&owner.namespace);
        let list = self
            .within(
                "listing WorkloadEntries",
                api.list(&kube::api::ListParams::default().labels(&selector)),
            )
            .await?;
        Ok(list
            .items
            .iter()
            .filter_map(|obj| owned_entry(obj, owner))
            .collect())
    }

    fn entries_version(&self, owner: &Owner) -> Option<u64> {
        self.entries.as_ref().map(|cache| cache.version(owner))
    }

    async fn workload_group(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<GroupTemplate>, ClusterError> {
        let spec = match &self.groups {
            Some(groups) => groups.spec(namespace, name),
            None => {
                let api: Api<DynamicObject> = Api::namespaced_with(
                    self.client.clone(),
                    namespace,
                    &self.version.workload_groups(),
                );
                self.within("reading a WorkloadGroup", api.get_opt(name))
                    .await?
                    .map(|group| group.data.get("spec").cloned().unwrap_or_default())
            }
        };
        spec.map(|spec| {
            GroupTemplate::from_spec(&spec)
                .map_err(|e| ClusterError::Other(format!("WorkloadGroup {namespace}/{name}: {e}")))
        })
        .transpose()
    }

    async fn create_entry(&self, owner: &Owner, entry: &DesiredEntry) -> Result<(), ClusterError> {
        // Server-side apply with force would take over a same-named entry
        // that someone else wrote; a create is rare (a new VM), so it looks
        // first. An entry of ours missing from the cache is applied as usual.
        let api = self.entries_api(&owner.namespace);
        let existing = self
            .within("reading a WorkloadEntry", api.get_opt(&entry.name))
            .await?;
        if let Some(obj) = existing
            && !owner.owns_meta(&obj.metadata)
        {
            return Err(ClusterError::NameTaken {
                kind: "WorkloadEntry",
                name: entry.name.clone(),
            });
        }
        self.apply_entry(owner, entry).await
    }

    async fn apply_entry(&self, owner: &Owner, entry: &DesiredEntry) -> Result<(), ClusterError> {
        let _permit = self.write_permit().await?;
        let body = entry_manifest(self.version, owner, entry);
        let api = self.entries_api(&owner.namespace);
        let flight = self.sending(owner, &entry.name);
        let written = self
            .within(
                "applying a WorkloadEntry",
                api.patch(
                    &entry.name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                ),
            )
            .await?;
        if let Some(flight) = flight {
            flight.wrote(&written);
        }
        Ok(())
    }

    async fn set_entry_health(
        &self,
        owner: &Owner,
        name: &str,
        healthy: bool,
    ) -> Result<(), ClusterError> {
        let _permit = self.write_permit().await?;
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let body = json!({
            "apiVersion": format!("networking.istio.io/{}", self.version.as_str()),
            "kind": "WorkloadEntry",
            "metadata": {"name": name, "namespace": owner.namespace},
            "status": {"conditions": [{
                "type": "Healthy",
                "status": if healthy { "True" } else { "False" },
                "reason": if healthy { "CloudHealthy" } else { "CloudUnhealthy" },
                "message": "health as reported by the cloud provider",
                "lastProbeTime": now,
                "lastTransitionTime": now,
            }]},
        });
        let api = self.entries_api(&owner.namespace);
        let flight = self.sending(owner, name);
        let written = self
            .within(
                "writing a WorkloadEntry's health",
                api.patch_status(
                    name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(&body),
                ),
            )
            .await?;
        if let Some(flight) = flight {
            flight.wrote(&written);
        }
        Ok(())
    }

    async fn delete_entry(&self, owner: &Owner, name: &str) -> Result<(), ClusterError> {
        let _permit = self.write_permit().await?;
        let api = self.entries_api(&owner.namespace);
        let flight = self.sending(owner, name);
        match self
            .within(
                "deleting a WorkloadEntry",
                api.delete(name, &DeleteParams::background()),
            )
            .await
        {
            Ok(_) => {}
            Err(ClusterError::Kube(kube::Error::Api(s))) if s.code == 404 => {}
            Err(e) => return Err(e),
        }
        if let Some(flight) = flight {
            flight.deleted();
        }
        Ok(())
    }

    async fn write_status(
        &self,
        owner: &Owner,
        status: &ScalingGroupMirrorStatus,
    ) -> Result<(), ClusterError> {
        let _permit = self.write_permit().await?;
        let api: Api<ScalingGroupMirror> = Api::namespaced(self.client.clone(), &owner.namespace);
        let body = json!({
            "apiVersion": ScalingGroupMirror::api_version(&()),
            "kind": ScalingGroupMirror::kind(&()),
            "metadata": {"name": owner.name, "namespace": owner.namespace},
            "status": status,
        });
        self.within(
            "writing the mirror's status",
            api.patch_status(
                &owner.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&body),
            ),
        )
        .await?;
        Ok(())
    }

    async fn owned_mesh(
        &self,
        owner: &Owner,
        kind: MeshKind,
    ) -> Result<Vec<ActualMesh>, ClusterError> {
        self.list_mesh(owner, kind).await
    }

    async fn create_mesh(&self, owner: &Owner, object: &MeshObject) -> Result<(), ClusterError> {
        self.create_mesh_object(owner, object).await
    }

    async fn apply_mesh(&self, owner: &Owner, object: &MeshObject) -> Result<(), ClusterError> {
        self.apply_mesh_object(owner, object).await
    }

    async fn delete_mesh(&self, owner: &Owner, object: &ActualMesh) -> Result<(), ClusterError> {
        self.delete_mesh_object(owner, object).await
    }

    async fn network_view(&self) -> Result<NetworkView, ClusterError> {
        self.networks.view(&self.client, self.call_timeout).await
    }

    async fn event(&self, owner: &Owner, kind: EventType, reason: &str, note: &str) {
        if !self.fence.holds() {
            return;
        }
        let reference = ObjectReference {
            api_version: Some(ScalingGroupMirror::api_version(&()).into()),
            kind: Some(ScalingGroupMirror::kind(&()).into()),
            name: Some(owner.name.clone()),
            namespace: Some(owner.namespace.clone()),
            uid: Some(owner.uid.clone()),
            ..Default::default()
        };
        let event = Event {
            type_: match kind {
                EventType::Normal => KubeEventType::Normal,
                EventType::Warning => KubeEventType::Warning,
            },
            reason: reason.into(),
            // The Events API caps notes at 1 kB.
            note: Some(note.chars().take(1000).collect()),
            action: "Reconcile".into(),
            secondary: None,
        };
        if let Err(err) = self
            .within(
                "recording an Event",
                self.recorder.publish(&event, &reference),
            )
            .await
        {
            tracing::warn!(namespace = %owner.namespace, mirror = %owner.name, reason, %err,
                "could not record Event");
        }
    }
}
