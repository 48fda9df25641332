use std::fmt;

use serde::{Deserialize, Serialize};

/// Where a GCP managed instance group lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GcpLocation {
    Zone(String),
    Region(String),
}

/// One scaling group in one cloud, as named by a mirror's `spec.provider`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum GroupRef {
    Aws {
        region: String,
        name: String,
    },
    Azure {
        subscription_id: String,
        resource_group: String,
        scale_set: String,
    },
    Gcp {
        project: String,
        location: GcpLocation,
        manager: String,
    },
    Sim {
        group: String,
    },
}

impl GroupRef {
    /// The provider that serves this group: "aws" | "azure" | "gcp" | "sim".
    pub fn provider(&self) -> &'static str {
        match self {
            GroupRef::Aws { .. } => "aws",
            GroupRef::Azure { .. } => "azure",
            GroupRef::Gcp { .. } => "gcp",
            GroupRef::Sim { .. } => "sim",
        }
    }

    /// The id two spellings of one group share: Azure's names are
    /// case-insensitive, so its ids are lowercased; AWS names are
    /// case-sensitive and GCP names are lowercase by rule, so theirs are the
    /// full id as written. Claims and the allow-list compare this.
    pub fn canonical(&self) -> String {
        match self {
            GroupRef::Azure { .. } => self.to_string().to_ascii_lowercase(),
            _ => self.to_string(),
        }
    }
}

/// The group's full id, as written to the `meshmirror.io/group` annotation.
impl fmt::Display for GroupRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GroupRef::Aws { region, name } => write!(f, "aws:{region}:{name}"),
            GroupRef::Azure {
                subscription_id,
                resource_group,
                scale_set,
            } => write!(
                f,
                "/subscriptions/{subscription_id}/resourceGroups/{resource_group}/providers/Microsoft.Compute/virtualMachineScaleSets/{scale_set}"
            ),
            GroupRef::Gcp {
                project,
                location: GcpLocation::Zone(zone),
                manager,
            } => write!(
                f,
                "projects/{project}/zones/{zone}/instanceGroupManagers/{manager}"
            ),
            GroupRef::Gcp {
                project,
                location: GcpLocation::Region(region),
                manager,
            } => write!(
                f,
                "projects/{project}/regions/{region}/instanceGroupManagers/{manager}"
            ),
            GroupRef::Sim { group } => write!(f, "sim:{group}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_ids_fold_case_only_where_the_cloud_does() {
        let azure = GroupRef::Azure {
            subscription_id: "AB".into(),
            resource_group: "RG".into(),
            scale_set: "Web".into(),
        };
        assert_eq!(
            azure.canonical(),
            "/subscriptions/ab/resourcegroups/rg/providers/microsoft.compute/virtualmachinescalesets/web"
        );
        let aws = GroupRef::Aws {
            region: "us-east-1".into(),
            name: "Web".into(),
        };
        assert_eq!(aws.canonical(), "aws:us-east-1:Web");
    }

    #[test]
    fn display_is_the_full_cloud_id() {
        let cases = [
            (
                GroupRef::Aws {
                    region: "us-east-1".into(),
                    name: "web".into(),
                },
                "aws:us-east-1:web",
            ),
            (
                GroupRef::Gcp {
                    project: "p".into(),
                    location: GcpLocation::Region("europe-west1".into()),
                    manager: "m".into(),
                },
                "projects/p/regions/europe-west1/instanceGroupManagers/m",
            ),
            (
                GroupRef::Sim {
                    group: "web".into(),
                },
                "sim:web",
            ),
        ];
        for (group, want) in cases {
            assert_eq!(group.to_string(), want);
        }
    }
}
