//! The narrow interface a pass uses to read and write the cluster, so that the
//! pass can run against the API server, a dry run, or nothing at all (`render`).

pub mod changes;
pub mod entry_cache;
pub mod group_cache;
pub mod kube;
pub mod mesh;
pub mod multi_watch;
pub mod networks;
pub mod ratelimit;
pub mod scope;
pub mod slim;

use std::collections::BTreeMap;

use async_trait::async_trait;

use crate::core::desired::DesiredEntry;
use crate::core::mesh::{ActualMesh, MeshKind, MeshObject};
use crate::core::networks::NetworkView;
pub use crate::core::ownership::Owner;
use crate::core::plan::ActualEntry;
use crate::crd::ScalingGroupMirrorStatus;
use crate::workloadentry::GroupTemplate;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// A failed cluster call.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("kubernetes API: {0}")]
    Kube(#[from] ::kube::Error),
    #[error("kubernetes API: {what} took longer than {}s", after.as_secs_f64())]
    Timeout {
        what: &'static str,
        after: std::time::Duration,
    },
    /// A create found an object of that name that this mirror does not
    /// own; it is left alone.
    #[error("{kind} {name} exists and is not this mirror's")]
    NameTaken { kind: &'static str, name: String },
    /// This replica no longer holds the lease: it writes nothing more.
    #[error("not the leader any more: the write was not sent")]
    NotLeader,
    #[error("{0}")]
    Other(String),
}

/// `call`, failed as [`ClusterError::Timeout`] when it takes longer than
/// `limit`: kube-client sets no read timeout, so a server that stops
/// answering would otherwise stall the caller forever.
pub async fn within<T>(
    limit: std::time::Duration,
    what: &'static str,
    call: impl std::future::Future<Output = Result<T, ::kube::Error>>,
) -> Result<T, ClusterError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result.map_err(ClusterError::from),
        Err(_) => Err(ClusterError::Timeout { what, after: limit }),
    }
}

/// Reads and writes a pass needs. Implementations: `kube::KubeCluster`
/// (the API server), [`DryRun`] (logs writes), and [`Offline`] (`render`).
#[async_trait]
pub trait Cluster: Send + Sync {
    /// The WorkloadEntries `owner` owns (its labels and ownerReference).
    async fn owned_entries(&self, owner: &Owner) -> Result<Vec<ActualEntry>, ClusterError>;
    /// A number that changes whenever `owner`'s entries may have changed, when
    /// the implementation can tell (a watch cache); equal numbers mean
    /// [`Cluster::owned_entries`] would answer the same.
    fn entries_version(&self, _owner: &Owner) -> Option<u64> {
        None
    }
    /// A WorkloadGroup's defaults, or None when it does not exist.
    async fn workload_group(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<GroupTemplate>, ClusterError>;
    /// Creates an entry the mirror does not have yet: never takes over a
    /// same-named entry that is not the mirror's ([`ClusterError::NameTaken`]).
    async fn create_entry(&self, owner: &Owner, entry: &DesiredEntry) -> Result<(), ClusterError>;
    /// Creates or updates an entry (server-side apply, one field manager).
    async fn apply_entry(&self, owner: &Owner, entry: &DesiredEntry) -> Result<(), ClusterError>;
    /// Writes the entry's `Healthy` condition through the status subresource.
    async fn set_entry_health(
        &self,
        owner: &Owner,
        name: &str,
        healthy: bool,
    ) -> Result<(), ClusterError>;
    /// Deletes an entry; one already gone is not an error.
    async fn delete_entry(&self, owner: &Owner, name: &str) -> Result<(), ClusterError>;
    /// Writes the mirror's status.
    async fn write_status(
        &self,
        owner: &Owner,
        status: &ScalingGroupMirrorStatus,
    ) -> Result<(), ClusterError>;
    /// Records a Kubernetes Event on the mirror.
    async fn event(&self, owner: &Owner, kind: EventType, reason: &str, note: &str);
    /// The mesh objects of `kind` that `owner` owns.
    async fn owned_mesh(
        &self,
        owner: &Owner,
        kind: MeshKind,
    ) -> Result<Vec<ActualMesh>, ClusterError>;
    /// Creates a mesh object; never takes over a same-named object that is
    /// not the mirror's ([`ClusterError::NameTaken`]).
    async fn create_mesh(&self, owner: &Owner, object: &MeshObject) -> Result<(), ClusterError>;
    /// Updates a mesh object the mirror owns (server-side apply).
    async fn apply_mesh(&self, owner: &Owner, object: &MeshObject) -> Result<(), ClusterError>;
    /// Deletes a mesh object the mirror owns, only if it is still the one
    /// that was read (same uid); one already gone is not an error.
    async fn delete_mesh(&self, owner: &Owner, object: &ActualMesh) -> Result<(), ClusterError>;
    /// The cluster's own network and the network gateways (may be cached
    /// for a while: they change rarely).
    async fn network_view(&self) -> Result<NetworkView, ClusterError> {
        Ok(NetworkView::default())
    }
}

/// Logs every write instead of making it (`--dry-run`); reads go through.
pub struct DryRun<C>(pub C);

#[async_trait]
impl<C: Cluster> Cluster for DryRun<C> {
    async fn owned_entries(&self, owner: &Owner) -> Result<Vec<ActualEntry>, ClusterError> {
        self.0.owned_entries(owner).await
    }
    fn entries_version(&self, owner: &Owner) -> Option<u64> {
        self.0.entries_version(owner)
    }
    async fn workload_group(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<GroupTemplate>, ClusterError> {
        self.0.workload_group(namespace, name).await
    }
    async fn create_entry(&self, owner: &Owner, entry: &DesiredEntry) -> Result<(), ClusterError> {
        self.apply_entry(owner, entry).await
    }
    async fn apply_entry(&self, owner: &Owner, entry: &DesiredEntry) -> Result<(), ClusterError> {
        tracing::info!(namespace = %owner.namespace, mirror = %owner.name, entry = %entry.name,
            address = %entry.spec.address, "dry run: would apply WorkloadEntry");
        Ok(())
    }
    async fn set_entry_health(
        &self,
        owner: &Owner,
        name: &str,
        healthy: bool,
    ) -> Result<(), ClusterError> {
        tracing::info!(namespace = %owner.namespace, mirror = %owner.name, entry = %name, healthy,
            "dry run: would write Healthy condition");
        Ok(())
    }
    async fn delete_entry(&self, owner: &Owner, name: &str) -> Result<(), ClusterError> {
        tracing::info!(namespace = %owner.namespace, mirror = %owner.name, entry = %name,
            "dry run: would delete WorkloadEntry");
        Ok(())
    }
    async fn write_status(
        &self,
        owner: &Owner,
        status: &ScalingGroupMirrorStatus,
    ) -> Result<(), ClusterError> {
        tracing::info!(namespace = %owner.namespace, mirror = %owner.name,
            entries = status.entries, members = status.members, "dry run: would write status");
        Ok(())
    }
    async fn event(&self, owner: &Owner, kind: EventType, reason: &str, note: &str) {
        tracing::info!(namespace = %owner.namespace, mirror = %owner.name, ?kind, reason, note,
            "dry run: would record Event");
    }
    async fn owned_mesh(
        &self,
        owner: &Owner,
        kind: MeshKind,
    ) -> Result<Vec<ActualMesh>, ClusterError> {
        self.0.owned_mesh(owner, kind).await
    }
    async fn create_mesh(&self, owner: &Owner, object: &MeshObject) -> Result<(), ClusterError> {
        self.apply_mesh(owner, object).await
    }
    async fn apply_mesh(&self, owner: &Owner, object: &MeshObject) -> Result<(), ClusterError> {
        tracing::info!(namespace = %owner.namespace, mirror = %owner.name, kind = object.kind.kind(),
            name = %object.name, "dry run: would apply");
        Ok(())
    }
    async fn delete_mesh(&self, owner: &Owner, object: &ActualMesh) -> Result<(), ClusterError> {
        tracing::info!(namespace = %owner.namespace, mirror = %owner.name, kind = object.kind.kind(),
            name = %object.name, "dry run: would delete");
        Ok(())
    }
    async fn network_view(&self) -> Result<NetworkView, ClusterError> {
        self.0.network_view().await
    }
}

/// No cluster at all: no entries exist, WorkloadGroups come from a map, writes
/// are collected. `meshmirror render` uses it.
#[derive(Default)]
pub struct Offline {
    pub groups: BTreeMap<String, GroupTemplate>,
    pub applied: std::sync::Mutex<Vec<DesiredEntry>>,
    pub mesh: std::sync::Mutex<Vec<MeshObject>>,
}

#[async_trait]
impl Cluster for Offline {
    async fn owned_entries(&self, _owner: &Owner) -> Result<Vec<ActualEntry>, ClusterError> {
        Ok(Vec::new())
    }
    async fn workload_group(
        &self,
        _namespace: &str,
        name: &str,
    ) -> Result<Option<GroupTemplate>, ClusterError> {
        Ok(self.groups.get(name).cloned())
    }
    async fn create_entry(&self, owner: &Owner, entry: &DesiredEntry) -> Result<(), ClusterError> {
        self.apply_entry(owner, entry).await
    }
    async fn apply_entry(&self, _owner: &Owner, entry: &DesiredEntry) -> Result<(), ClusterError> {
        self.applied
            .lock()
            .map_err(|_| ClusterError::Other("poisoned".into()))?
            .push(entry.clone());
        Ok(())
    }
    async fn set_entry_health(&self, _: &Owner, _: &str, _: bool) -> Result<(), ClusterError> {
        Ok(())
    }
    async fn delete_entry(&self, _: &Owner, _: &str) -> Result<(), ClusterError> {
        Ok(())
    }
    async fn write_status(
        &self,
        _: &Owner,
        _: &ScalingGroupMirrorStatus,
    ) -> Result<(), ClusterError> {
        Ok(())
    }
    async fn event(&self, _: &Owner, _: EventType, _: &str, _: &str) {}
    async fn owned_mesh(&self, _: &Owner, _: MeshKind) -> Result<Vec<ActualMesh>, ClusterError> {
        Ok(Vec::new())
    }
    async fn create_mesh(&self, owner: &Owner, object: &MeshObject) -> Result<(), ClusterError> {
        self.apply_mesh(owner, object).await
    }
    async fn apply_mesh(&self, _: &Owner, object: &MeshObject) -> Result<(), ClusterError> {
        self.mesh
            .lock()
            .map_err(|_| ClusterError::Other("poisoned".into()))?
            .push(object.clone());
        Ok(())
    }
    async fn delete_mesh(&self, _: &Owner, _: &ActualMesh) -> Result<(), ClusterError> {
        Ok(())
    }
}
