//! What makes an object meshmirror's, and whose. One rule for the caches,
//! the writes and the plan: an object is a mirror's when it sits in the
//! mirror's namespace, carries meshmirror's managed-by label and the mirror's
//! name label, and has an ownerReference to the mirror's uid. Anything else
//! (Istio's auto-registered entries, another mirror's, a look-alike that
//! names the uid from another namespace) is never touched.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde_json::{Value, json};

use crate::crd::ScalingGroupMirror;
use crate::workloadentry::keys;

/// The mirror whose objects a pass writes, as their ownerReference names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl Owner {
    /// The owner `mirror` is (an empty uid for one not yet stored, as
    /// `render` reads it from a file).
    pub fn of(mirror: &ScalingGroupMirror) -> Owner {
        let meta = &mirror.metadata;
        Owner {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
            uid: meta.uid.clone().unwrap_or_default(),
        }
    }

    /// The ownerReference its objects carry; None without a uid.
    pub fn reference(&self) -> Option<Value> {
        (!self.uid.is_empty()).then(|| {
            json!({
                "apiVersion": ScalingGroupMirror::api_version(&()),
                "kind": ScalingGroupMirror::kind(&()),
                "name": self.name,
                "uid": self.uid,
                "controller": true,
                "blockOwnerDeletion": true,
            })
        })
    }

    /// Whether this owner owns an object with these parts: the one rule.
    pub fn owns<'a>(
        &self,
        namespace: &str,
        mirror_label: Option<&str>,
        mut owner_uids: impl Iterator<Item = &'a str>,
    ) -> bool {
        namespace == self.namespace
            && mirror_label == Some(self.name.as_str())
            && owner_uids.any(|uid| uid == self.uid)
    }

    /// [`Self::owns`], on an object's metadata.
    pub fn owns_meta(&self, meta: &ObjectMeta) -> bool {
        self.owns(
            meta.namespace.as_deref().unwrap_or_default(),
            meta.labels
                .as_ref()
                .and_then(|l| l.get(keys::MIRROR))
                .map(String::as_str),
            meta.owner_references
                .iter()
                .flatten()
                .map(|r| r.uid.as_str()),
        )
    }

    /// The label selector of this owner's objects.
    pub fn selector(&self) -> String {
        format!("{},{}={}", managed_selector(), keys::MIRROR, self.name)
    }
}

/// The labels that mark an object as `mirror`'s (with its ownerReference).
pub fn labels(mirror: &str) -> [(String, String); 2] {
    [
        (keys::MANAGED_BY.into(), keys::MANAGER.into()),
        (keys::MIRROR.into(), mirror.into()),
    ]
}

/// Whether the labels carry meshmirror's managed-by label.
pub fn is_managed(labels: &BTreeMap<String, String>) -> bool {
    labels.get(keys::MANAGED_BY).map(String::as_str) == Some(keys::MANAGER)
}

/// The label selector of every object meshmirror manages.
pub fn managed_selector() -> String {
    format!("{}={}", keys::MANAGED_BY, keys::MANAGER)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            namespace: "team-a".into(),
            name: "web".into(),
            uid: "u-1".into(),
        }
    }

    #[test]
    fn ownership_needs_the_namespace_the_label_and_the_uid() {
        let o = owner();
        let cases: [(&str, Option<&str>, &[&str], bool); 6] = [
            ("team-a", Some("web"), &["u-1"], true),
            ("team-a", Some("web"), &["u-2", "u-1"], true),
            ("team-b", Some("web"), &["u-1"], false),
            ("team-a", Some("api"), &["u-1"], false),
            ("team-a", None, &["u-1"], false),
            ("team-a", Some("web"), &[], false),
        ];
        for (ns, label, uids, want) in cases {
            assert_eq!(
                o.owns(ns, label, uids.iter().copied()),
                want,
                "{ns} {label:?} {uids:?}"
            );
        }
    }

    #[test]
    fn the_reference_and_the_labels_name_the_mirror() {
        let r = owner().reference().unwrap();
        assert_eq!(r["kind"], "ScalingGroupMirror");
        assert_eq!(r["apiVersion"], "meshmirror.io/v1alpha1");
        assert_eq!(
            (r["name"].as_str(), r["uid"].as_str()),
            (Some("web"), Some("u-1"))
        );
        assert_eq!(r["controller"], true);
        let no_uid = Owner {
            uid: String::new(),
            ..owner()
        };
        assert!(no_uid.reference().is_none());
        let labels: BTreeMap<String, String> = labels("web").into_iter().collect();
        assert!(is_managed(&labels));
        assert_eq!(labels[keys::MIRROR], "web");
        assert_eq!(
            owner().selector(),
            "app.kubernetes.io/managed-by=meshmirror,meshmirror.io/mirror=web"
        );
    }
}
