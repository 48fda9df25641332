//! The proxy in front of a real control plane (`kubeproxy`), held to what
//! the suites rely on: two tests' namespaces stay apart (gets, lists, Tables
//! and watches across all namespaces), requests are counted, faults are
//! injected, and a played compaction answers 410 as a real server does.
//! One control plane of its own (about 12 s).

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, DynamicObject, ListParams, PostParams, WatchEvent, WatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use meshmirror_testkit::kubeproxy::KubeProxy;
use meshmirror_testkit::realkube::RealKube;
use meshmirror_testkit::{Injected, Match, Verb};
use serde_json::json;

fn entries() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("networking.istio.io", "v1", "WorkloadEntry"),
        "workloadentries",
    )
}

fn entry(name: &str, address: &str) -> DynamicObject {
    serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "WorkloadEntry",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"address": address},
    }))
    .unwrap()
}

fn names(list: &[DynamicObject]) -> Vec<String> {
    let mut v: Vec<String> = list
        .iter()
        .filter_map(|o| o.metadata.name.clone())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tests_share_a_control_plane_apart_and_get_counts_faults_and_410s() {
    let kube = RealKube::start();
    let (a, b) = (
        KubeProxy::start(&kube).await.unwrap(),
        KubeProxy::start(&kube).await.unwrap(),
    );
    assert_ne!(a.namespace_prefix(), b.namespace_prefix());
    let in_default =
        |p: &KubeProxy| Api::<DynamicObject>::namespaced_with(p.client(), "default", &entries());
    let everywhere = |p: &KubeProxy| Api::<DynamicObject>::all_with(p.client(), &entries());
    in_default(&a)
        .create(&PostParams::default(), &entry("a-1", "10.0.0.1"))
        .await
        .unwrap();
    in_default(&b)
        .create(&PostParams::default(), &entry("b-1", "10.0.0.2"))
        .await
        .unwrap();

    // Each sees its own, in its namespace as it named it.
    let listed = everywhere(&a)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(names(&listed), ["a-1"]);
    assert_eq!(listed[0].metadata.namespace.as_deref(), Some("default"));
    assert_eq!(
        names(
            &everywhere(&b)
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
        ),
        ["b-1"]
    );
    assert!(in_default(&a).get_opt("b-1").await.unwrap().is_none());
    // The real server holds both, prefixed.
    let admin = Api::<DynamicObject>::all_with(kube.admin().await, &entries());
    let stored: Vec<String> = admin
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|o| o.metadata.namespace.clone().unwrap_or_default())
        .collect();
    assert!(
        stored.contains(&format!("{}default", a.namespace_prefix())),
        "{stored:?}"
    );

    // A watch across all namespaces hears only its own test's objects.
    let mut watch = everywhere(&a)
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    in_default(&b)
        .create(&PostParams::default(), &entry("b-2", "10.0.0.3"))
        .await
        .unwrap();
    in_default(&a)
        .create(&PostParams::default(), &entry("a-2", "10.0.0.4"))
        .await
        .unwrap();
    let mut heard = Vec::new();
    while !heard.contains(&"a-2".to_string()) {
        let event = tokio::time::timeout(Duration::from_secs(20), watch.try_next())
            .await
            .expect("the watch hears a-2")
            .unwrap()
            .expect("the watch goes on");
        if let WatchEvent::Added(o) = event {
            heard.push(o.metadata.name.unwrap_or_default());
        }
    }
    assert!(!heard.iter().any(|n| n.starts_with("b-")), "{heard:?}");

    // Counted by verb and resource; a fault answers instead of the server.
    let before = a.requests();
    a.faults()
        .fail_next(Match::any().verb(Verb::Get), 1, Injected::Internal);
    let err = in_default(&a).get("a-1").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 500),
        "{err}"
    );
    in_default(&a).get("a-1").await.unwrap();
    assert_eq!(
        a.requests()
            .since(&before)
            .get(Verb::Get, "workloadentries"),
        2
    );
    assert_eq!(b.requests().get(Verb::Get, "workloadentries"), 0);

    // A played compaction: a watch from a version older than the newest the
    // proxy passed on gets an ERROR event with 410, as from a real server.
    let old = everywhere(&a)
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    in_default(&a)
        .create(&PostParams::default(), &entry("a-3", "10.0.0.5"))
        .await
        .unwrap();
    everywhere(&a).list(&ListParams::default()).await.unwrap();
    a.faults().compact();
    let mut stale = everywhere(&a)
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match tokio::time::timeout(Duration::from_secs(10), stale.try_next()).await {
        Ok(Ok(Some(WatchEvent::Error(e)))) => assert_eq!(e.code, 410, "{e:?}"),
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // close_watches ends the watches open through the proxy.
    a.faults().close_watches();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(Ok(_)) = watch.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the watch did not end");
}
