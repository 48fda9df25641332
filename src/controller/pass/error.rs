//! Why a pass did not reach its goal. The reason is the condition reason
//! tenants see on the mirror; the message names the field and the fix.

use std::time::Duration;

use meshmirror_provider::ProviderError;

/// A pass that did not reach its goal. Most failures also set the mirror's
/// conditions (the pass's plan says which); all requeue the mirror.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {}", self.reason(), self.message())]
pub enum PassError {
    /// `config::validate` refused the spec.
    InvalidSpec(String),
    /// `--allowed-groups` does not allow the group in this namespace.
    GroupNotAllowed(String),
    /// An older mirror names the same group.
    GroupClaimed {
        group: String,
        namespace: String,
        name: String,
    },
    /// The controller has not listed every mirror yet, so claims are unknown.
    MirrorsNotListed,
    /// The cloud did not answer (fail static: nothing is deleted).
    Provider {
        error: ProviderError,
        grace: Duration,
    },
    /// The cloud has said the group is gone for longer than the grace.
    GroupGone { group: String, grace: Duration },
    /// `spec.workloads[index].workloadGroup` names a WorkloadGroup that does
    /// not exist.
    WorkloadGroupNotFound {
        index: usize,
        name: String,
        namespace: String,
    },
    /// A read from the API server failed.
    Kubernetes(String),
    /// Earlier passes' writes failed; this one waits.
    WritesBackingOff { failures: u32, left: Duration },
    /// Same-named entries that are not the mirror's hold these names.
    NamesTaken {
        namespace: String,
        names: Vec<String>,
    },
    /// Some entry writes failed.
    WritesFailed { failed: usize, of: usize },
}

impl PassError {
    /// The condition reason (and Event reason) for this failure.
    pub fn reason(&self) -> &'static str {
        match self {
            PassError::InvalidSpec(_) => "InvalidSpec",
            PassError::GroupNotAllowed(_) => "GroupNotAllowed",
            PassError::GroupClaimed { .. } => "GroupClaimed",
            PassError::MirrorsNotListed => "MirrorsNotListed",
            PassError::Provider { error, .. } => error.reason(),
            PassError::GroupGone { .. } => "GroupNotFound",
            PassError::WorkloadGroupNotFound { .. } => "WorkloadGroupNotFound",
            PassError::Kubernetes(_) => "KubernetesError",
            PassError::WritesBackingOff { .. } => "WriteBackoff",
            PassError::NamesTaken { .. } => "EntryNameTaken",
            PassError::WritesFailed { .. } => "ApplyFailed",
        }
    }

    /// The text for status, Events and logs (before redaction for tenants).
    pub fn message(&self) -> String {
        match self {
            PassError::InvalidSpec(m)
            | PassError::GroupNotAllowed(m)
            | PassError::Kubernetes(m) => m.clone(),
            PassError::GroupClaimed {
                group,
                namespace,
                name,
            } => format!(
                "group {group} is claimed by mirror {namespace}/{name}, the oldest mirror naming it; a VM belongs to one namespace, so this mirror writes nothing until that one is deleted"
            ),
            PassError::MirrorsNotListed => "the list of mirrors is not complete yet".into(),
            PassError::Provider { error, grace } => {
                let kept = if matches!(error, ProviderError::GroupNotFound(_)) {
                    format!(
                        "existing entries are kept for the {}s grace, then withdrawn",
                        grace.as_secs()
                    )
                } else {
                    "existing entries are kept until the cloud answers".to_string()
                };
                format!("{error}; {kept}")
            }
            PassError::GroupGone { group, grace } => format!(
                "scaling group not found: {group}; its entries are withdrawn (gone longer than the {}s grace)",
                grace.as_secs()
            ),
            PassError::WorkloadGroupNotFound {
                index,
                name,
                namespace,
            } => format!(
                "spec.workloads[{index}].workloadGroup: WorkloadGroup {name:?} does not exist in namespace {namespace}; create it or remove the reference"
            ),
            PassError::WritesBackingOff { failures, left } => format!(
                "writes failed in {failures} passes in a row; the next pass waits {}s",
                left.as_secs()
            ),
            PassError::NamesTaken { namespace, names } => names_taken(namespace, names),
            PassError::WritesFailed { failed, of } => {
                format!("{failed} of {of} WorkloadEntry writes failed; retrying")
            }
        }
    }
}

fn names_taken(namespace: &str, names: &[String]) -> String {
    let mut names: Vec<&str> = names.iter().map(String::as_str).collect();
    names.sort_unstable();
    let more = names.len().saturating_sub(5);
    let mut shown = names[..names.len().min(5)].join(", ");
    if more > 0 {
        shown.push_str(&format!(" and {more} more"));
    }
    format!(
        "WorkloadEntries {shown} in namespace {namespace} exist and are not this mirror's (no ownerReference to it); they are left alone and their instances are not in the mesh: delete or rename them"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_text_is_reason_then_message() {
        let err = PassError::Provider {
            error: ProviderError::Throttled {
                retry_after: Some(Duration::from_secs(7)),
            },
            grace: Duration::from_secs(600),
        };
        assert_eq!(
            err.to_string(),
            "Throttled: throttled by the cloud API (retry after 7s); existing entries are kept until the cloud answers"
        );
        let gone = PassError::Provider {
            error: ProviderError::GroupNotFound("aws/us-east-1/web".into()),
            grace: Duration::from_secs(600),
        };
        assert!(
            gone.message()
                .ends_with("kept for the 600s grace, then withdrawn")
        );
    }

    #[test]
    fn taken_names_are_sorted_and_cut_after_five() {
        let names: Vec<String> = ["f", "e", "d", "c", "b", "a", "g"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let err = PassError::NamesTaken {
            namespace: "team-a".into(),
            names,
        };
        assert!(
            err.message()
                .starts_with("WorkloadEntries a, b, c, d, e and 2 more in namespace team-a exist"),
            "{}",
            err.message()
        );
    }
}
