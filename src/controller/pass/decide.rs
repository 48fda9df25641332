//! Decide, before any write: from what a pass knows, what it has read so far
//! and what it remembers of the mirror, either the next read or the pass's
//! plan. Pure: no I/O and no clock (the time is a fact), so every branch is a
//! table row below.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use meshmirror_provider::ProviderError;

use super::error::PassError;
use super::gather::{Facts, Gathered, Read, networks_used};
use super::memo::Clean;
use super::state::MirrorState;
use super::writes::EntryWrites;
use crate::core::claims::Claim;
use crate::core::desired::{self, Mirror, Skip};
use crate::core::mesh::{self, MeshKinds, MeshMirror, MeshWrites};
use crate::core::plan::{self, DeletePolicy};
use crate::crd::ScalingGroupMirrorSpec;
use crate::workloadentry::GroupTemplate;

/// How long an invalid spec waits before it is looked at again (edits
/// trigger a pass at once anyway).
pub const INVALID_SPEC_RECHECK: Duration = Duration::from_secs(300);
/// How soon a failed read from the API server is tried again.
const KUBERNETES_RETRY: Duration = Duration::from_secs(5);

/// Settings every pass shares.
#[derive(Clone, Copy, Debug)]
pub struct Settings {
    /// How long entries outlive their group once the cloud says it is gone.
    pub group_gone_grace: Duration,
}

/// What to do next.
#[derive(Debug, PartialEq)]
pub enum Step {
    Read(Read),
    /// Boxed: a plan holds the pass's writes, a read is one word.
    Plan(Box<PassPlan>),
}

/// The pass's writes and how it ends once they are made.
#[derive(Debug, PartialEq)]
pub struct PassPlan {
    pub writes: EntryWrites,
    /// Writes to the Services, ServiceEntries and Sidecar (synced passes only).
    pub mesh: MeshWrites,
    pub ending: Ending,
}

/// How a pass ends.
#[derive(Debug, PartialEq)]
pub enum Ending {
    /// Writes nothing, not even status: the claim is not known yet, or the
    /// mirror's writes back off (the failing pass wrote status and Events).
    Quiet { error: PassError, requeue: Duration },
    /// `spec.paused`: status says so; nothing else is written.
    Paused { interval: Duration },
    /// Status and a Warning say why; no entry is written or deleted.
    Failed { error: PassError, requeue: Duration },
    /// The mirror may no longer act on its group: its entries are deleted
    /// (the writes, within its delete policy), then it fails with `error`.
    Withdrawn {
        why: String,
        /// When to look again once nothing is left to delete.
        then: Duration,
        error: PassError,
        /// Why the entries could not be listed (nothing is deleted then).
        list_error: Option<String>,
    },
    /// The entries were brought in line (or already were).
    Synced { interval: Duration, how: Synced },
}

/// How a synced pass got there.
#[derive(Debug, PartialEq)]
pub enum Synced {
    /// Nothing changed since a pass that found nothing to write: no desired
    /// state was computed and no entry listed.
    Unchanged(Clean),
    /// The desired state was computed and the writes planned.
    Planned {
        /// Members counted in status.
        members: usize,
        skipped: Vec<Skip>,
        /// Tags that could not become labels, and the like.
        warnings: Vec<String>,
    },
}

/// The next read, or the plan.
pub fn decide(
    facts: &Facts<'_>,
    gathered: &Gathered,
    state: &MirrorState,
    settings: &Settings,
) -> Step {
    let spec = &facts.mirror.spec;
    let generation = facts.mirror.metadata.generation;
    let config = match &facts.config {
        Ok(config) => config,
        Err(message) => {
            return failed(
                PassError::InvalidSpec(message.clone()),
                INVALID_SPEC_RECHECK,
            );
        }
    };
    if let Err(message) = &facts.allowed {
        return withdraw(
            spec,
            gathered,
            "the allow-list (--allowed-groups) no longer allows this group".into(),
            INVALID_SPEC_RECHECK,
            PassError::GroupNotAllowed(message.clone()),
        );
    }
    match facts.claim {
        Claim::Claimant => {}
        // The mirror list is still filling: decide nothing, write nothing.
        Claim::Unknown => return quiet(PassError::MirrorsNotListed, Duration::from_secs(1)),
        Claim::ClaimedBy { namespace, name } => {
            let error = PassError::GroupClaimed {
                group: config.group.to_string(),
                namespace: namespace.clone(),
                name: name.clone(),
            };
            return withdraw(
                spec,
                gathered,
                "another mirror claims this group".into(),
                config.interval,
                error,
            );
        }
    }
    if spec.paused {
        return plan(
            EntryWrites::default(),
            Ending::Paused {
                interval: config.interval,
            },
        );
    }
    if let Some(waiting) = state.backoff.waiting(generation, facts.now) {
        let error = PassError::WritesBackingOff {
            failures: waiting.failures,
            left: waiting.left,
        };
        return quiet(error, waiting.left);
    }

    let Some(members) = &gathered.members else {
        // Cloud events named some instances: ask about those only.
        return Step::Read(match facts.named {
            Some(_) => Read::NamedMembers,
            None => Read::Members,
        });
    };
    let grace = settings.group_gone_grace;
    let members = match members {
        Ok(members) => members,
        Err(ProviderError::GroupNotFound(group)) if state.gone_for(facts.now) >= grace => {
            // A definite answer, held for the whole grace: withdraw.
            let why = format!(
                "the cloud has said group {group} does not exist for {}s, longer than the {}s grace, and clouds reuse addresses",
                state.gone_for(facts.now).as_secs(),
                grace.as_secs()
            );
            let error = PassError::GroupGone {
                group: group.clone(),
                grace,
            };
            return withdraw(spec, gathered, why, config.interval, error);
        }
        Err(error) => {
            // Fail static: nothing is deleted on a provider error.
            let requeue = match error {
                ProviderError::Throttled {
                    retry_after: Some(after),
                } => (*after).max(Duration::from_secs(1)),
                _ => KUBERNETES_RETRY.min(config.interval),
            };
            let error = PassError::Provider {
                error: error.clone(),
                grace,
            };
            return failed(error, requeue);
        }
    };

    let Some(groups) = &gathered.groups else {
        return Step::Read(Read::WorkloadGroups);
    };
    let groups = match groups {
        Ok(groups) => groups,
        Err(error @ PassError::WorkloadGroupNotFound { .. }) => {
            return failed(error.clone(), config.interval);
        }
        Err(error) => return failed(error.clone(), KUBERNETES_RETRY),
    };

    let mesh = match mesh_writes(facts, groups, gathered, state) {
        Ok(Ok(writes)) => writes,
        Ok(Err(kinds)) => return Step::Read(Read::Mesh(kinds)),
        Err(error) => return failed(error, INVALID_SPEC_RECHECK),
    };
    if gathered.networks.is_none() && !networks_used(spec, groups).is_empty() {
        return Step::Read(Read::Networks);
    }

    let Some(version) = gathered.entries_version else {
        return Step::Read(Read::EntriesVersion);
    };
    if let Some(clean) = state
        .memo
        .clean(generation, &members.instances, groups, version)
    {
        let how = Synced::Unchanged(clean);
        return Step::Plan(Box::new(PassPlan {
            writes: EntryWrites::default(),
            mesh,
            ending: Ending::Synced {
                interval: config.interval,
                how,
            },
        }));
    }
    let Some(owned) = &gathered.owned else {
        return Step::Read(Read::OwnedEntries);
    };
    let actual = match owned {
        Ok(actual) => actual,
        Err(message) => return failed(PassError::Kubernetes(message.clone()), KUBERNETES_RETRY),
    };
    let incumbents = plan::instance_ids(actual);
    let desired = desired::desired(
        Mirror {
            name: &facts.owner.name,
            spec,
            config,
            incumbents: &incumbents,
        },
        groups,
        &members.instances,
    );
    let writes = EntryWrites::plan(
        desired.entries,
        actual,
        &desired.leaving,
        delete_policy(spec),
    );
    let how = Synced::Planned {
        members: desired.members,
        skipped: desired.skipped,
        warnings: desired.warnings,
    };
    Step::Plan(Box::new(PassPlan {
        writes,
        mesh,
        ending: Ending::Synced {
            interval: config.interval,
            how,
        },
    }))
}

/// The mesh writes, once the owned objects of every kind that may need a
/// write are read (`Err`: the kinds to read first). Listing only the kinds the spec
/// wants or the mirror owned keeps a mirror without mesh options at no
/// requests.
fn mesh_writes(
    facts: &Facts<'_>,
    groups: &BTreeMap<String, GroupTemplate>,
    gathered: &Gathered,
    state: &MirrorState,
) -> Result<Result<MeshWrites, MeshKinds>, PassError> {
    let spec = &facts.mirror.spec;
    let asked = mesh::wanted_kinds(spec);
    // A mirror without mesh options (most) resolves no workloads for them.
    let wanted = if asked.is_empty() {
        Vec::new()
    } else {
        let workloads = desired::resolve_workloads(spec, groups);
        let mirror = MeshMirror {
            name: &facts.owner.name,
            namespace: &facts.owner.namespace,
            spec,
        };
        mesh::desired(mirror, &workloads).map_err(|err| PassError::InvalidSpec(err.to_string()))?
    };
    let kinds = asked.union(state.mesh_owned.unwrap_or(MeshKinds::ALL));
    if kinds.is_empty() {
        return Ok(Ok(MeshWrites::default()));
    }
    Ok(match &gathered.mesh {
        Some(read) => Ok(mesh::plan(wanted, &read.objects, read.listed)),
        None => Err(kinds),
    })
}

fn delete_policy(spec: &ScalingGroupMirrorSpec) -> DeletePolicy {
    DeletePolicy {
        policy: spec.sync.policy,
        max_per_pass: spec.sync.max_deletes_per_pass,
    }
}

fn plan(writes: EntryWrites, ending: Ending) -> Step {
    Step::Plan(Box::new(PassPlan {
        writes,
        mesh: MeshWrites::default(),
        ending,
    }))
}

fn quiet(error: PassError, requeue: Duration) -> Step {
    plan(EntryWrites::default(), Ending::Quiet { error, requeue })
}

fn failed(error: PassError, requeue: Duration) -> Step {
    plan(EntryWrites::default(), Ending::Failed { error, requeue })
}

/// Deletes the mirror's entries (within its delete policy) because it may no
/// longer act on its group, then fails with `error`.
fn withdraw(
    spec: &ScalingGroupMirrorSpec,
    gathered: &Gathered,
    why: String,
    then: Duration,
    error: PassError,
) -> Step {
    let Some(owned) = &gathered.owned else {
        return Step::Read(Read::OwnedEntries);
    };
    let (writes, list_error) = match owned {
        Ok(actual) => (
            EntryWrites::plan(Vec::new(), actual, &BTreeSet::new(), delete_policy(spec)),
            None,
        ),
        Err(message) => (EntryWrites::default(), Some(message.clone())),
    };
    let ending = Ending::Withdrawn {
        why,
        then,
        error,
        list_error,
    };
    plan(writes, ending)
}

#[cfg(test)]
mod tests;
