//! [`GcpProvider`]: the members of zonal and regional managed instance groups.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use google_cloud_auth::credentials::{Credentials, anonymous};
use google_cloud_compute_v1::client::{
    InstanceGroupManagers, Instances, RegionInstanceGroupManagers,
};
use google_cloud_compute_v1::model;
use google_cloud_gax::retry_policy::NeverRetry;
use meshmirror_provider::{
    BoxEventStream, GcpLocation, GroupRef, Instance, Observer, Provider, ProviderError,
    TracingObserver,
};
use tokio::sync::OnceCell;

use crate::convert::{self, InstanceKey};
use crate::error::{self, Call};
use crate::events::{self, Known, PubSubConfig};

/// How the clients authenticate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Auth {
    /// Application Default Credentials: GKE Workload Identity through the
    /// metadata server, `GOOGLE_APPLICATION_CREDENTIALS`, or `gcloud`'s
    /// user credentials.
    #[default]
    ApplicationDefault,
    /// No credentials at all: local mocks and emulators.
    Anonymous,
}

impl Auth {
    /// Anonymous for a plain-http endpoint (a local mock or emulator: a
    /// token is never sent in the clear), else Application Default.
    pub fn for_endpoint(endpoint: Option<&str>) -> Auth {
        match endpoint {
            Some(e) if e.starts_with("http://") => Auth::Anonymous,
            _ => Auth::ApplicationDefault,
        }
    }

    fn credentials(self) -> Option<Credentials> {
        match self {
            Auth::ApplicationDefault => None,
            Auth::Anonymous => Some(anonymous::Builder::new().build()),
        }
    }
}

/// The provider's settings.
#[derive(Clone, Debug)]
pub struct GcpConfig {
    /// The Compute API endpoint; `None` is `https://compute.googleapis.com`.
    pub endpoint: Option<String>,
    pub auth: Auth,
    /// `maxResults` of every listing (the API allows 1 to 500).
    pub page_size: u32,
    /// The optional Pub/Sub feed of audit-log events.
    pub events: Option<PubSubConfig>,
}

impl Default for GcpConfig {
    fn default() -> Self {
        GcpConfig {
            endpoint: None,
            auth: Auth::ApplicationDefault,
            page_size: 500,
            events: None,
        }
    }
}

struct Clients {
    zonal: InstanceGroupManagers,
    regional: RegionInstanceGroupManagers,
    instances: Instances,
}

/// The `gcp` provider: members of managed instance groups through the
/// official Compute Engine client. A pass costs the pages of the group's
/// `listManagedInstances` plus the pages of one filtered instance listing
/// (the zone's `list` for a zonal group, `aggregatedList` for a regional
/// one). A pass that asks about the instances events named costs one of
/// each, filtered on `id`, per [`IDS_PER_CALL`] ids, whatever the group's
/// size.
pub struct GcpProvider {
    config: GcpConfig,
    clients: OnceCell<Clients>,
    known: Arc<Known>,
    observer: Arc<dyn Observer>,
}

impl GcpProvider {
    /// Builds nothing yet: the clients are made at first use, so a service
    /// without GCP credentials starts and its GCP mirrors report the error.
    pub fn new(config: GcpConfig) -> GcpProvider {
        GcpProvider {
            config,
            clients: OnceCell::new(),
            known: Arc::default(),
            observer: Arc::new(TracingObserver),
        }
    }

    /// Reports what the event feed does with each message to `observer`
    /// (default: a [`TracingObserver`]). A building step, taken before the
    /// provider is used.
    pub fn with_observer(mut self, observer: Arc<dyn Observer>) -> GcpProvider {
        self.observer = observer;
        self
    }

    async fn clients(&self) -> Result<&Clients, ProviderError> {
        self.clients
            .get_or_try_init(|| async {
                let zonal = configure(InstanceGroupManagers::builder(), &self.config)
                    .build()
                    .await;
                let regional = configure(RegionInstanceGroupManagers::builder(), &self.config)
                    .build()
                    .await;
                let instances = configure(Instances::builder(), &self.config).build().await;
                match (zonal, regional, instances) {
                    (Ok(zonal), Ok(regional), Ok(instances)) => Ok(Clients {
                        zonal,
                        regional,
                        instances,
                    }),
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
                        Err(ProviderError::Permanent(format!("gcp compute client: {e}")))
                    }
                }
            })
            .await
    }

    /// The group's managed instances that pass `filter` (all without one),
    /// every page.
    async fn managed_instances(
        &self,
        clients: &Clients,
        project: &str,
        location: &GcpLocation,
        manager: &str,
        filter: Option<String>,
        group: &str,
    ) -> Result<Vec<model::ManagedInstance>, ProviderError> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (items, next) = match location {
                GcpLocation::Zone(zone) => {
                    let mut call = clients
                        .zonal
                        .list_managed_instances()
                        .set_project(project)
                        .set_zone(zone)
                        .set_instance_group_manager(manager)
                        .set_max_results(self.config.page_size)
                        .set_or_clear_filter(filter.clone());
                    if let Some(t) = token.take() {
                        call = call.set_page_token(t);
                    }
                    let page = call
                        .send()
                        .await
                        .map_err(|e| error::map(&e, Call::GroupListing, group))?;
                    (page.managed_instances, page.next_page_token)
                }
                GcpLocation::Region(region) => {
                    let mut call = clients
                        .regional
                        .list_managed_instances()
                        .set_project(project)
                        .set_region(region)
                        .set_instance_group_manager(manager)
                        .set_max_results(self.config.page_size)
                        .set_or_clear_filter(filter.clone());
                    if let Some(t) = token.take() {
                        call = call.set_page_token(t);
                    }
                    let page = call
                        .send()
                        .await
                        .map_err(|e| error::map(&e, Call::GroupListing, group))?;
                    (page.managed_instances, page.next_page_token)
                }
            };
            out.extend(items);
            match next.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// The VMs that may be members, keyed by zone and name: the zone's
    /// listing (zonal) or the project's aggregated listing (regional),
    /// narrowed by `filter` (names or ids).
    async fn listed_instances(
        &self,
        clients: &Clients,
        project: &str,
        location: &GcpLocation,
        filter: Option<String>,
        group: &str,
    ) -> Result<HashMap<InstanceKey, model::Instance>, ProviderError> {
        let mut out = HashMap::new();
        let mut token: Option<String> = None;
        let mut keep = |items: Vec<model::Instance>| {
            for vm in items {
                if let Some(key) = convert::instance_key(&vm) {
                    out.insert(key, vm);
                }
            }
        };
        loop {
            let next = match location {
                GcpLocation::Zone(zone) => {
                    let mut call = clients
                        .instances
                        .list()
                        .set_project(project)
                        .set_zone(zone)
                        .set_max_results(self.config.page_size)
                        .set_or_clear_filter(filter.clone());
                    if let Some(t) = token.take() {
                        call = call.set_page_token(t);
                    }
                    let page = call
                        .send()
                        .await
                        .map_err(|e| error::map(&e, Call::InstanceListing, group))?;
                    keep(page.items);
                    page.next_page_token
                }
                GcpLocation::Region(_) => {
                    let mut call = clients
                        .instances
                        .aggregated_list()
                        .set_project(project)
                        .set_max_results(self.config.page_size)
                        .set_or_clear_filter(filter.clone());
                    if let Some(t) = token.take() {
                        call = call.set_page_token(t);
                    }
                    let page = call
                        .send()
                        .await
                        .map_err(|e| error::map(&e, Call::InstanceListing, group))?;
                    if !page.unreachables.is_empty() {
                        tracing::debug!(%group, unreachable = ?page.unreachables, "aggregated listing is partial");
                    }
                    for (_, scoped) in page.items {
                        keep(scoped.instances);
                    }
                    page.next_page_token
                }
            };
            match next.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(out),
            }
        }
    }

    /// The members among `ids` (numeric VM ids), read by id: per
    /// [`IDS_PER_CALL`] ids, one `listManagedInstances` and one instance
    /// listing, both filtered on `id`, whatever the group's size.
    async fn named_members(
        &self,
        clients: &Clients,
        (project, location, manager): (&str, &GcpLocation, &str),
        ids: &[u64],
        group: &str,
    ) -> Result<Vec<Instance>, ProviderError> {
        let mut members = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(IDS_PER_CALL) {
            let filter = Some(id_filter(chunk));
            let mut managed = self
                .managed_instances(clients, project, location, manager, filter, group)
                .await?;
            // Only what was asked: an answer that ignored the filter must
            // not pass for the named members (nor a member without an id,
            // which no id names).
            managed.retain(|m| m.id.is_some_and(|id| chunk.contains(&id)));
            let mut found: Vec<u64> = managed.iter().filter_map(|m| m.id).collect();
            found.sort_unstable();
            let listed = if found.is_empty() {
                HashMap::new()
            } else {
                self.listed_instances(clients, project, location, Some(id_filter(&found)), group)
                    .await?
            };
            // Fail static, as for the whole group: a running member its
            // listing misses fails the pass rather than lose its entry.
            members.extend(
                convert::join(&managed, &listed)
                    .map_err(|e| ProviderError::Transient(e.to_string()))?,
            );
        }
        Ok(members)
    }
}

/// How many ids one filtered call names: 50 ids of up to 20 digits keep
/// the filter (a query parameter) near 1.5 KB.
pub const IDS_PER_CALL: usize = 50;

/// The AIP-160 filter that passes exactly the resources with these ids:
/// `(id = 1) OR (id = 2)`. The discovery document's `filter` (the same text
/// for `listManagedInstances`, `instances.list` and `aggregatedList`): an
/// AIP-160 expression is "field name, an operator, and the value", the value
/// "a string, a number, or a boolean", each of several expressions "within
/// parentheses", joined by explicit `AND` or `OR`. The regex form (`eq`)
/// cannot be mixed into the same request, so this filter stands alone.
/// `id` is the VM's numeric id on both resources (`ManagedInstance.id`,
/// uint64, "empty when instance does not exist", and `Instance.id`).
pub fn id_filter(ids: &[u64]) -> String {
    ids.iter()
        .map(|id| format!("(id = {id})"))
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// The ids as VM ids, sorted and once each; `None` when one is not a
/// number (a member without a VM yet is known by its name, which no id
/// filter can match).
fn numeric_ids(ids: &[String]) -> Option<Vec<u64>> {
    let mut out = ids
        .iter()
        .map(|id| id.parse::<u64>().ok())
        .collect::<Option<Vec<u64>>>()?;
    out.sort_unstable();
    out.dedup();
    Some(out)
}

/// Endpoint, credentials, and no retries inside the client: the core's
/// retry wrapper retries whole passes, with jitter, and counts them.
fn configure<F, C>(
    builder: google_cloud_gax::client_builder::ClientBuilder<F, C>,
    config: &GcpConfig,
) -> google_cloud_gax::client_builder::ClientBuilder<F, C>
where
    C: From<Credentials>,
{
    let mut builder = builder.with_retry_policy(NeverRetry);
    if let Some(endpoint) = &config.endpoint {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/'));
    }
    if let Some(credentials) = config.auth.credentials() {
        builder = builder.with_credentials(credentials);
    }
    builder
}

/// A filter that every member's name matches: `name eq "PREFIX.*"` with the
/// names' longest common prefix (a group's VMs share its base instance
/// name). Other VMs of the zone may match too; the join drops them.
pub fn name_filter(managed: &[model::ManagedInstance]) -> Option<String> {
    let mut names = managed
        .iter()
        .filter_map(convert::managed_key)
        .map(|(_, name)| name);
    let first = names.next()?;
    let prefix_len = names.fold(first.len(), |len, name| {
        first
            .bytes()
            .zip(name.bytes())
            .take(len)
            .take_while(|(a, b)| a == b)
            .count()
    });
    let prefix = &first[..prefix_len];
    if prefix.is_empty() {
        return None;
    }
    let escaped: String = prefix
        .chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$\"".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect();
    Some(format!("name eq \"{escaped}.*\""))
}

/// The project, location and manager of a GCP group; any other group is
/// not this provider's.
fn gcp_group(group: &GroupRef) -> Result<(&str, &GcpLocation, &str), ProviderError> {
    match group {
        GroupRef::Gcp {
            project,
            location,
            manager,
        } => Ok((project, location, manager)),
        _ => Err(ProviderError::Permanent(format!(
            "the gcp provider cannot serve {group}"
        ))),
    }
}

#[async_trait]
impl Provider for GcpProvider {
    fn name(&self) -> &'static str {
        "gcp"
    }

    async fn members(&self, group: &GroupRef) -> Result<Vec<Instance>, ProviderError> {
        let (project, location, manager) = gcp_group(group)?;
        let name = group.to_string();
        let clients = self.clients().await?;
        let managed = self
            .managed_instances(clients, project, location, manager, None, &name)
            .await?;
        let listed = if managed.is_empty() {
            HashMap::new()
        } else {
            self.listed_instances(clients, project, location, name_filter(&managed), &name)
                .await?
        };
        let members = convert::join(&managed, &listed)
            .map_err(|e| ProviderError::Transient(e.to_string()))?;
        self.known.record(group, &members);
        tracing::debug!(group = %name, members = members.len(), "gcp members");
        Ok(members)
    }

    async fn instances(
        &self,
        group: &GroupRef,
        ids: &[String],
    ) -> Result<Option<Vec<Instance>>, ProviderError> {
        let (project, location, manager) = gcp_group(group)?;
        let Some(ids) = numeric_ids(ids) else {
            tracing::debug!(%group, "an id that is not a VM id: the whole group is read");
            return Ok(None);
        };
        let name = group.to_string();
        let clients = self.clients().await?;
        let members = self
            .named_members(clients, (project, location, manager), &ids, &name)
            .await?;
        // Named members join what is known of the group; the rest stay
        // known until the next whole read.
        self.known.record_some(group, &members);
        tracing::debug!(group = %name, asked = ids.len(), members = members.len(), "gcp named members");
        Ok(Some(members))
    }

    fn events(&self) -> Option<BoxEventStream> {
        // A fresh streaming pull per call: the controller takes the feed once
        // per leadership term and drops it when the term ends.
        let config = self.config.events.clone()?;
        Some(events::feed(
            config,
            self.known.clone(),
            self.observer.clone(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn managed(names: &[&str]) -> Vec<model::ManagedInstance> {
        names
            .iter()
            .map(|n| {
                serde_json::from_value(json!({
                    "instance": format!("https://x/compute/v1/projects/p/zones/z-a/instances/{n}")
                }))
                .unwrap()
            })
            .collect()
    }

    #[test]
    fn the_name_filter_is_the_common_prefix() {
        assert_eq!(
            name_filter(&managed(&["web-abcd", "web-abxy", "web-zzzz"])).as_deref(),
            Some("name eq \"web-.*\"")
        );
        assert_eq!(
            name_filter(&managed(&["web-abcd"])).as_deref(),
            Some("name eq \"web-abcd.*\"")
        );
        assert_eq!(name_filter(&managed(&["a-1", "b-1"])), None);
        assert_eq!(name_filter(&[]), None);
    }

    #[test]
    fn the_id_filter_ors_parenthesized_comparisons() {
        assert_eq!(id_filter(&[7]), "(id = 7)");
        assert_eq!(
            id_filter(&[4006034190819017667, 12]),
            "(id = 4006034190819017667) OR (id = 12)"
        );
    }

    #[test]
    fn only_numeric_ids_are_asked_by_id() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(numeric_ids(&ids(&["30", "4", "30"])), Some(vec![4, 30]));
        assert_eq!(numeric_ids(&ids(&["4", "web-9"])), None);
        assert_eq!(numeric_ids(&ids(&["-4"])), None);
        assert_eq!(numeric_ids(&[]), Some(vec![]));
    }

    #[test]
    fn plain_http_endpoints_get_no_credentials() {
        assert_eq!(
            Auth::for_endpoint(Some("http://127.0.0.1:1")),
            Auth::Anonymous
        );
        assert_eq!(
            Auth::for_endpoint(Some("https://compute.example")),
            Auth::ApplicationDefault
        );
        assert_eq!(Auth::for_endpoint(None), Auth::ApplicationDefault);
    }
}
