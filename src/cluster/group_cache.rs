//! The WorkloadGroups mirrors may take defaults from: a watch cache, so that a
//! pass reads them without a request, and a change reaches the mirrors that
//! name the group at once instead of on their next interval.

use std::sync::Arc;

use futures::{Stream, StreamExt};
use kube::Client;
use kube::api::{ApiResource, DynamicObject};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{broadcast, watch};

use crate::cluster::changes::Named;
use crate::cluster::scope::Scope;

/// Changes a slow controller may fall behind by before it loses some.
const CHANGE_CAPACITY: usize = 1024;

pub struct GroupCache {
    store: Store<DynamicObject>,
    /// Set at the first full list. (The store's own `wait_until_ready` woke
    /// only one of two waiters in kube-runtime 5.)
    ready: watch::Sender<bool>,
    /// The type the store is keyed by.
    resource: ApiResource,
    changes: broadcast::Sender<Named>,
}

impl GroupCache {
    /// Starts the watch of every WorkloadGroup in `scope`; it runs until the
    /// returned task is aborted.
    pub fn start(client: &Client, scope: &Scope) -> (Arc<GroupCache>, tokio::task::JoinHandle<()>) {
        let resource = scope.version.workload_groups();
        let writer = reflector::store::Writer::new(resource.clone());
        let cache = Arc::new(GroupCache {
            store: writer.as_reader(),
            resource,
            ready: watch::Sender::new(false),
            changes: broadcast::Sender::new(CHANGE_CAPACITY),
        });
        let feed = cache.clone();
        let stream = scope
            .watch(
                |ns| Scope::dynamic_in(client, ns, &cache.resource),
                watcher::Config::default(),
                crate::cluster::scope::dynamic_skeleton,
            )
            .modify(|g| g.metadata.managed_fields = None)
            .reflect(writer);
        let task = tokio::spawn(async move {
            futures::pin_mut!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(g) | watcher::Event::Delete(g))
                    | Ok(watcher::Event::InitApply(g)) => feed.changed(&g),
                    Ok(watcher::Event::InitDone) => {
                        feed.ready.send_replace(true);
                    }
                    Ok(watcher::Event::Init) => {}
                    Err(err) => tracing::debug!(%err, "WorkloadGroup watch error"),
                }
            }
        });
        (cache, task)
    }

    fn changed(&self, group: &DynamicObject) {
        // No receiver (not leading) is fine: nothing to trigger.
        let _ = self.changes.send(Named {
            namespace: group.metadata.namespace.clone().unwrap_or_default(),
            name: group.metadata.name.clone().unwrap_or_default(),
        });
    }

    /// Resolves once the cache holds a full list.
    pub async fn ready(&self) -> bool {
        self.ready.subscribe().wait_for(|r| *r).await.is_ok()
    }

    /// The group's `spec`, or None when there is no such group.
    pub fn spec(&self, namespace: &str, name: &str) -> Option<serde_json::Value> {
        let key = ObjectRef::new_with(name, self.resource.clone()).within(namespace);
        self.store
            .get(&key)
            .map(|g| g.data.get("spec").cloned().unwrap_or_default())
    }

    /// WorkloadGroups that changed, from now on.
    pub fn changes(&self) -> impl Stream<Item = Named> + Send + 'static {
        crate::cluster::changes::subscribe(&self.changes, "WorkloadGroup changes")
    }
}
