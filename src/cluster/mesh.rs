//! The mesh objects (Services, ServiceEntries, Sidecars) on the API server:
//! listed by meshmirror's labels and kept only when the mirror owns them,
//! created without taking over a same-named object, updated by server-side
//! apply, deleted only while still the object that was read.

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    Preconditions,
};
use serde_json::{Value, json};

use crate::cluster::kube::KubeCluster;
use crate::cluster::{ClusterError, Owner};
use crate::core::mesh::{ActualMesh, MeshKind, MeshObject};
use crate::workloadentry::{FIELD_MANAGER, keys};

/// How the API server serves `kind`.
pub fn resource(kind: MeshKind) -> ApiResource {
    let (group, version, plural) = kind.resource();
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: kind.api_version().into(),
        kind: kind.kind().into(),
        plural: plural.into(),
    }
}

/// The full body meshmirror writes: metadata it owns and the spec.
pub fn mesh_manifest(owner: &Owner, object: &MeshObject) -> Value {
    let mut manifest = json!({
        "apiVersion": object.kind.api_version(),
        "kind": object.kind.kind(),
        "metadata": {
            "name": object.name,
            "namespace": owner.namespace,
            "labels": object.labels,
            "annotations": {keys::APPLIED_HASH: object.hash},
        },
        "spec": object.spec,
    });
    // `render` without a cluster has no uid to point at.
    if let Some(reference) = owner.reference() {
        manifest["metadata"]["ownerReferences"] = json!([reference]);
    }
    manifest
}

/// An object as a plan reads it, if `owner` owns it.
pub fn read_mesh(kind: MeshKind, obj: &DynamicObject, owner: &Owner) -> Option<ActualMesh> {
    if !owner.owns_meta(&obj.metadata) {
        return None;
    }
    Some(ActualMesh {
        kind,
        name: obj.metadata.name.clone()?,
        uid: obj.metadata.uid.clone().unwrap_or_default(),
        hash: obj
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(keys::APPLIED_HASH))
            .cloned(),
    })
}

impl KubeCluster {
    fn mesh_api(&self, namespace: &str, kind: MeshKind) -> Api<DynamicObject> {
        Api::namespaced_with(self.client().clone(), namespace, &resource(kind))
    }

    pub(super) async fn list_mesh(
        &self,
        owner: &Owner,
        kind: MeshKind,
    ) -> Result<Vec<ActualMesh>, ClusterError> {
        let api = self.mesh_api(&owner.namespace, kind);
        let list = self
            .within(
                "listing owned mesh objects",
                api.list(&ListParams::default().labels(&owner.selector())),
            )
            .await?;
        Ok(list
            .items
            .iter()
            .filter_map(|obj| read_mesh(kind, obj, owner))
            .collect())
    }

    /// Looks first (as entry creates do): a same-named object that is not
    /// the mirror's is left alone. The create itself is a plain POST, so an
    /// object that appears in between is refused by the server, not taken.
    pub(super) async fn create_mesh_object(
        &self,
        owner: &Owner,
        object: &MeshObject,
    ) -> Result<(), ClusterError> {
        let api = self.mesh_api(&owner.namespace, object.kind);
        let taken = || ClusterError::NameTaken {
            kind: object.kind.kind(),
            name: object.name.clone(),
        };
        match self
            .within("reading a mesh object", api.get_opt(&object.name))
            .await?
        {
            Some(obj) if owner.owns_meta(&obj.metadata) => {
                return self.apply_mesh_object(owner, object).await;
            }
            Some(_) => return Err(taken()),
            None => {}
        }
        let body: DynamicObject = serde_json::from_value(mesh_manifest(owner, object))
            .map_err(|e| ClusterError::Other(format!("building {}: {e}", object.kind.kind())))?;
        let _permit = self.write_permit().await?;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        match self
            .within("creating a mesh object", api.create(&params, &body))
            .await
        {
            Ok(_) => Ok(()),
            Err(ClusterError::Kube(kube::Error::Api(s))) if s.code == 409 => Err(taken()),
            Err(e) => Err(e),
        }
    }

    pub(super) async fn apply_mesh_object(
        &self,
        owner: &Owner,
        object: &MeshObject,
    ) -> Result<(), ClusterError> {
        let _permit = self.write_permit().await?;
        let api = self.mesh_api(&owner.namespace, object.kind);
        self.within(
            "applying a mesh object",
            api.patch(
                &object.name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&mesh_manifest(owner, object)),
            ),
        )
        .await?;
        Ok(())
    }

    pub(super) async fn delete_mesh_object(
        &self,
        owner: &Owner,
        object: &ActualMesh,
    ) -> Result<(), ClusterError> {
        let _permit = self.write_permit().await?;
        let api = self.mesh_api(&owner.namespace, object.kind);
        let params = DeleteParams {
            preconditions: Some(Preconditions {
                uid: Some(object.uid.clone()),
                resource_version: None,
            }),
            ..DeleteParams::background()
        };
        match self
            .within("deleting a mesh object", api.delete(&object.name, &params))
            .await
        {
            Ok(_) => Ok(()),
            // Gone, or replaced by another object of that name (the uid
            // precondition fails): either way not ours to delete any more.
            Err(ClusterError::Kube(kube::Error::Api(s))) if s.code == 404 || s.code == 409 => {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}
