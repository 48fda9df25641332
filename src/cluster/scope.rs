//! Where the controller looks (`--namespace`: all namespaces, or a list) and
//! how it lists and watches there; shared by the controller and the caches.

use futures::StreamExt;
use futures::stream::BoxStream;
use kube::Client;
use kube::api::{Api, DynamicObject};
use kube::runtime::{WatchStreamExt, watcher};

use crate::crd::ScalingGroupMirror;
use crate::workloadentry::EntryVersion;

/// Passes run at once, across all mirrors, unless `--max-concurrent-passes`
/// says otherwise. Each holds its mirror's desired and actual entries (about
/// 3 KiB each as maps) while it waits for the write rate: at 100 mirrors of
/// 2,000 entries, 16 passes at once peaked 130 MiB above the steady state,
/// 8 about 110 MiB less, converging and scaling no slower on 2 cores
/// (`--kube-qps` and the writes in flight bound the pace, not passes). A
/// pass stuck on a cloud call holds its slot for at most the 60 s deadline.
pub const DEFAULT_CONCURRENT_PASSES: u16 = 8;

/// Where the controller looks.
#[derive(Clone, Debug)]
pub struct Scope {
    /// The namespaces watched (`--namespace`); empty: all.
    pub namespaces: Vec<String>,
    pub version: EntryVersion,
    /// Passes run at once, across all mirrors (`--max-concurrent-passes`).
    pub max_concurrent_passes: u16,
}

impl Default for Scope {
    fn default() -> Self {
        Scope {
            namespaces: Vec::new(),
            version: EntryVersion::default(),
            max_concurrent_passes: DEFAULT_CONCURRENT_PASSES,
        }
    }
}

/// A watch stream, as the caches and the controller consume it.
pub type WatchStream<K> = BoxStream<'static, Result<watcher::Event<K>, watcher::Error>>;

impl Scope {
    /// The watch of `K` in this scope (`api` gives the Api of one namespace,
    /// or of all for None): one watcher, or one per namespace merged into
    /// one watch ([`crate::cluster::multi_watch`]); each backs off and re-lists on
    /// errors. `skeleton` keeps what a `Delete` needs of an object.
    pub fn watch<K>(
        &self,
        api: impl Fn(Option<&str>) -> Api<K>,
        config: watcher::Config,
        skeleton: fn(&K) -> K,
    ) -> WatchStream<K>
    where
        K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    {
        match self.namespaces.as_slice() {
            [] => watcher(api(None), config).default_backoff().boxed(),
            [one] => watcher(api(Some(one)), config).default_backoff().boxed(),
            many => crate::cluster::multi_watch::merge(
                many.iter()
                    .map(|ns| watcher(api(Some(ns)), config.clone()).default_backoff())
                    .collect(),
                skeleton,
            )
            .boxed(),
        }
    }

    /// The mirrors' Api in one namespace, or in all.
    pub fn mirrors_in(client: &Client, namespace: Option<&str>) -> Api<ScalingGroupMirror> {
        match namespace {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }

    /// A dynamic resource's Api in one namespace, or in all.
    pub fn dynamic_in(
        client: &Client,
        namespace: Option<&str>,
        resource: &kube::core::ApiResource,
    ) -> Api<DynamicObject> {
        match namespace {
            Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
            None => Api::all_with(client.clone(), resource),
        }
    }

    /// Every mirror in scope, listed once.
    pub async fn list_mirrors(
        &self,
        client: &Client,
    ) -> Result<Vec<ScalingGroupMirror>, kube::Error> {
        if self.namespaces.is_empty() {
            return Ok(Self::mirrors_in(client, None)
                .list(&Default::default())
                .await?
                .items);
        }
        let mut all = Vec::new();
        for ns in &self.namespaces {
            all.extend(
                Self::mirrors_in(client, Some(ns))
                    .list(&Default::default())
                    .await?
                    .items,
            );
        }
        Ok(all)
    }
}

/// What a `Delete` of a dynamic object needs: its metadata.
pub fn dynamic_skeleton(o: &DynamicObject) -> DynamicObject {
    DynamicObject {
        types: o.types.clone(),
        metadata: o.metadata.clone(),
        data: serde_json::Value::Null,
    }
}
