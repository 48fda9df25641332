//! Gather: everything a pass reads. `decide` says what to read next (a pass
//! whose spec is invalid asks the cloud nothing; one whose memo holds lists
//! no entries); this module only reads and records the answers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use meshmirror_provider::{Instance, ProviderError};

use super::error::PassError;
use super::state::MirrorState;
use crate::cluster::Cluster;
use crate::core::claims::Claim;
use crate::core::config::{self, MirrorConfig};
use crate::core::mesh::{self as mesh_objects, ActualMesh, MeshKind, MeshKinds};
use crate::core::networks::{self, NetworkView};
use crate::core::ownership::Owner;
use crate::core::policy::AllowedGroups;
use crate::crd::{LifecycleSpec, ScalingGroupMirror, ScalingGroupMirrorStatus};
use crate::providers::Providers;
use crate::workloadentry::{ActualEntry, GroupTemplate};

/// What a pass knows before it reads anything: the mirror, its claim, its
/// checked spec, and the status it builds on.
pub struct Facts<'a> {
    pub mirror: &'a ScalingGroupMirror,
    pub owner: &'a Owner,
    pub claim: &'a Claim,
    /// The spec, checked; the error names the field.
    pub config: Result<MirrorConfig, String>,
    /// Whether the allow-list lets this namespace use the group.
    pub allowed: Result<(), String>,
    /// The status the pass's own status is built on.
    pub old: ScalingGroupMirrorStatus,
    /// When the pass started.
    pub now: Instant,
    /// The instances cloud events named since the last pass, with the
    /// members last read when those are recent enough to stand in for the
    /// rest of the group (younger than the interval); None otherwise.
    pub named: Option<Named>,
}

/// Instances cloud events named, and the rest of the group as last read.
#[derive(Clone, Debug)]
pub struct Named {
    pub ids: BTreeSet<String>,
    pub known: Arc<Vec<Instance>>,
}

impl<'a> Facts<'a> {
    /// Checks the spec and the allow-list. The mirror cache may not have
    /// caught up with this process's last status write (a real API server's
    /// watch lags): the pass builds on that write, or a failing pass would
    /// report the entries of an older status.
    pub fn of(
        mirror: &'a ScalingGroupMirror,
        owner: &'a Owner,
        claim: &'a Claim,
        allowed: &AllowedGroups,
        state: &MirrorState,
        named: BTreeSet<String>,
        now: Instant,
    ) -> Facts<'a> {
        let config = config::validate(&mirror.spec)
            .and_then(|config| {
                mesh_objects::check_spec(&mirror.spec, &owner.namespace).map(|()| config)
            })
            .map_err(|err| err.to_string());
        let allowed = match &config {
            Ok(config) => allowed.check(&owner.namespace, &config.group),
            Err(_) => Ok(()),
        };
        let cached = mirror.status.clone().unwrap_or_default();
        let old = state.memo.status_base(now, &cached).unwrap_or(cached);
        let named = match (&config, &state.seen) {
            (Ok(config), Some(seen))
                if !named.is_empty()
                    && now.saturating_duration_since(seen.full_at) < config.interval =>
            {
                Some(Named {
                    ids: named,
                    known: seen.instances.clone(),
                })
            }
            _ => None,
        };
        Facts {
            mirror,
            owner,
            claim,
            config,
            allowed,
            old,
            now,
            named,
        }
    }
}

/// A read the pass needs before it can decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Read {
    /// The group's members and confirmed lifecycle hooks (the cloud).
    Members,
    /// The instances cloud events named (the cloud), the rest of the group
    /// as last read, and the confirmed lifecycle hooks.
    NamedMembers,
    /// The WorkloadGroups the workloads name.
    WorkloadGroups,
    /// The entry cache's version for the mirror (no request).
    EntriesVersion,
    /// The WorkloadEntries the mirror owns.
    OwnedEntries,
    /// The mesh objects of these kinds the mirror owns.
    Mesh(MeshKinds),
    /// The cluster's own network and the network gateways.
    Networks,
}

/// The mesh objects a mirror owns, of the kinds that could be listed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MeshRead {
    pub objects: Vec<ActualMesh>,
    pub listed: MeshKinds,
    /// The kinds that could not be listed, and why.
    pub failed: Vec<(MeshKind, String)>,
}

/// The group's members, and the spec's lifecycle with only the hooks the
/// cloud confirmed on this group (plus what is wrong with the others).
#[derive(Clone, Debug, PartialEq)]
pub struct Members {
    /// Sorted by id: providers need not answer in a stable order, and the
    /// memo compares lists. Shared with the mirror's memory (the last read
    /// and the memo) rather than copied: a thousand instances a mirror.
    pub instances: Arc<Vec<Instance>>,
    pub hooks: Hooks,
}

/// The lifecycle hooks a pass may answer, and why any named one is left out.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Hooks {
    pub spec: LifecycleSpec,
    pub problem: Option<String>,
}

/// The answers of the reads made so far (`None`: not read).
#[derive(Debug, Default)]
pub struct Gathered {
    pub members: Option<Result<Members, ProviderError>>,
    /// Whether `members` asked the cloud about every member (false: about
    /// the instances events named only).
    pub full_read: bool,
    /// The WorkloadGroups the workloads name, by name.
    pub groups: Option<Result<BTreeMap<String, GroupTemplate>, PassError>>,
    /// The entry cache's version for the mirror, read before the entries so
    /// that a change in between is never missed.
    pub entries_version: Option<Option<u64>>,
    pub owned: Option<Result<Vec<ActualEntry>, String>>,
    pub mesh: Option<MeshRead>,
    pub networks: Option<Result<NetworkView, String>>,
}

/// Where a pass reads from.
#[derive(Clone, Copy)]
pub struct Sources<'a> {
    pub providers: &'a Providers,
    pub cluster: &'a dyn Cluster,
}

impl Gathered {
    /// Makes one read and records its answer.
    pub async fn read(&mut self, read: Read, facts: &Facts<'_>, from: Sources<'_>) {
        match read {
            Read::Members | Read::NamedMembers => {
                // Every read fills its answer, so the gather loop always ends
                // (decide asks only for answers it does not have).
                let named = facts.named.as_ref().filter(|_| read == Read::NamedMembers);
                let (answer, full) = match &facts.config {
                    Ok(config) => {
                        let lifecycle = &facts.mirror.spec.lifecycle;
                        members(from.providers, config, lifecycle, named).await
                    }
                    Err(err) => (
                        Err(ProviderError::Permanent(format!(
                            "the spec is invalid: {err}"
                        ))),
                        true,
                    ),
                };
                self.members = Some(answer);
                self.full_read = full;
            }
            Read::WorkloadGroups => {
                self.groups = Some(workload_groups(from.cluster, facts).await);
            }
            Read::EntriesVersion => {
                self.entries_version = Some(from.cluster.entries_version(facts.owner));
            }
            Read::OwnedEntries => {
                self.owned = Some(
                    from.cluster
                        .owned_entries(facts.owner)
                        .await
                        .map_err(|err| format!("listing owned WorkloadEntries: {err}")),
                );
            }
            Read::Mesh(kinds) => self.mesh = Some(mesh(from.cluster, facts.owner, kinds).await),
            Read::Networks => {
                self.networks = Some(
                    from.cluster
                        .network_view()
                        .await
                        .map_err(|err| format!("reading the network gateways: {err}")),
                );
            }
        }
    }
}

/// Reads the members and the hooks the cloud confirms on the group, and
/// whether every member was read. With `named`, the cloud is asked about the
/// named instances only when it can be (the rest as last read). The
/// provider is told exactly the confirmed hooks, so a hook dropped from the
/// spec or missing on the group gets no more heartbeats.
async fn members(
    providers: &Providers,
    config: &MirrorConfig,
    lifecycle: &LifecycleSpec,
    named: Option<&Named>,
) -> (Result<Members, ProviderError>, bool) {
    match members_of(providers, config, lifecycle, named).await {
        Ok((members, full)) => (Ok(members), full),
        Err(err) => (Err(err), named.is_none()),
    }
}

async fn members_of(
    providers: &Providers,
    config: &MirrorConfig,
    lifecycle: &LifecycleSpec,
    named: Option<&Named>,
) -> Result<(Members, bool), ProviderError> {
    let provider = providers.get(&config.group)?;
    let hooks = if lifecycle.terminate_hook.is_some() || lifecycle.launch_hook.is_some() {
        let listed = provider.lifecycle_hooks(&config.group).await?;
        let (spec, problem) = crate::core::lifecycle::verified(
            lifecycle,
            config.group.provider(),
            &config.group.to_string(),
            listed.as_deref(),
        );
        Hooks { spec, problem }
    } else {
        Hooks {
            spec: lifecycle.clone(),
            problem: None,
        }
    };
    let answered: Vec<&str> = [&hooks.spec.terminate_hook, &hooks.spec.launch_hook]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    provider.answers_hooks(&config.group, &answered);
    if let Some(named) = named {
        let ids: Vec<String> = named.ids.iter().cloned().collect();
        if let Some(fresh) = provider.instances(&config.group, &ids).await? {
            let instances = merged(&named.known, &named.ids, fresh);
            return Ok((
                Members {
                    instances: Arc::new(instances),
                    hooks,
                },
                false,
            ));
        }
    }
    let mut instances = provider.members(&config.group).await?;
    instances.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    Ok((
        Members {
            instances: Arc::new(instances),
            hooks,
        },
        true,
    ))
}

/// The members as last read, with what the cloud says now of the `named`
/// ones: each in `fresh` replaces or joins, each named one not in it is no
/// longer a member. Sorted by id.
pub fn merged(known: &[Instance], named: &BTreeSet<String>, fresh: Vec<Instance>) -> Vec<Instance> {
    let mut out: Vec<Instance> = known
        .iter()
        .filter(|i| !named.contains(&i.id))
        .cloned()
        .chain(fresh.into_iter().filter(|i| named.contains(&i.id)))
        .collect();
    out.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    out
}

/// Lists the mesh objects of `kinds` the mirror owns; a kind that cannot be
/// listed is left out (its objects are then neither written nor deleted).
async fn mesh(cluster: &dyn Cluster, owner: &Owner, kinds: MeshKinds) -> MeshRead {
    let mut read = MeshRead::default();
    for kind in kinds.iter() {
        match cluster.owned_mesh(owner, kind).await {
            Ok(objects) => {
                read.objects.extend(objects);
                read.listed = read.listed.with(kind);
            }
            Err(err) => read
                .failed
                .push((kind, format!("listing owned {}s: {err}", kind.kind()))),
        }
    }
    read
}

/// Reads the WorkloadGroups the workloads name; the first missing one is the
/// answer.
async fn workload_groups(
    cluster: &dyn Cluster,
    facts: &Facts<'_>,
) -> Result<BTreeMap<String, GroupTemplate>, PassError> {
    let namespace = &facts.owner.namespace;
    let mut groups = BTreeMap::new();
    for (index, workload) in facts.mirror.spec.workloads.iter().enumerate() {
        let Some(name) = &workload.workload_group else {
            continue;
        };
        match cluster.workload_group(namespace, name).await {
            Ok(Some(group)) => {
                groups.insert(name.clone(), group);
            }
            Ok(None) => {
                return Err(PassError::WorkloadGroupNotFound {
                    index,
                    name: name.clone(),
                    namespace: namespace.clone(),
                });
            }
            Err(err) => {
                return Err(PassError::Kubernetes(format!(
                    "reading WorkloadGroup {name:?}: {err}"
                )));
            }
        }
    }
    Ok(groups)
}

/// The networks the mirror's entries may be on (its spec's and its
/// WorkloadGroups').
pub fn networks_used(
    spec: &crate::crd::ScalingGroupMirrorSpec,
    groups: &BTreeMap<String, GroupTemplate>,
) -> std::collections::BTreeSet<String> {
    let of_groups: Vec<String> = spec
        .workloads
        .iter()
        .filter_map(|w| groups.get(w.workload_group.as_ref()?))
        .filter_map(|g| g.template.network.clone())
        .collect();
    networks::used(spec, &of_groups)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use meshmirror_provider::InstanceState;

    use super::*;

    fn vm(id: &str, last: u8) -> Instance {
        Instance::running(id, Ipv4Addr::new(10, 0, 0, last))
    }

    #[test]
    fn named_instances_replace_join_or_leave_the_members_as_last_read() {
        let known = vec![vm("i-1", 1), vm("i-2", 2), vm("i-3", 3)];
        let named: BTreeSet<String> = ["i-2", "i-3", "i-4"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut leaving = vm("i-2", 2);
        leaving.state = InstanceState::Terminating;
        // i-2 now terminating, i-3 no longer in the group, i-4 joined; i-9
        // was not named and is not taken in.
        let fresh = vec![vm("i-4", 4), leaving.clone(), vm("i-9", 9)];
        let got = merged(&known, &named, fresh);
        assert_eq!(got, vec![vm("i-1", 1), leaving, vm("i-4", 4)]);
    }
}
