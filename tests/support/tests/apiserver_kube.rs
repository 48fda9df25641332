//! The fake API server through the real `kube` client: CRUD, metadata,
//! selectors, paging, watch, patches, deletion and garbage collection, faults
//! and counters. Built-in Leases need neither the schema nor the SSA module.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, ListParams, ObjectMeta, Patch, PatchParams,
    PostParams, Preconditions, WatchEvent, WatchParams,
};
use kube::runtime::watcher;
use meshmirror_testkit::{ApiServer, Injected, Match, Verb};

fn lease(name: &str, holder: &str) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: Some(holder.into()),
            ..Default::default()
        }),
    }
}

fn api_err(e: kube::Error) -> (u16, String, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone(), s.message.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn server() -> (ApiServer, Api<Lease>) {
    let server = ApiServer::start().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(server.client(), "ns1");
    (server, leases)
}

#[tokio::test]
async fn create_get_update_delete_with_real_status_errors() {
    let (server, leases) = server().await;
    let created = leases
        .create(&PostParams::default(), &lease("a", "x"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert_eq!(meta.uid.as_ref().unwrap().len(), 36);
    assert!(meta.creation_timestamp.is_some());
    assert_eq!(meta.generation, Some(1));
    assert_eq!(meta.namespace.as_deref(), Some("ns1"));
    let rv1: u64 = meta.resource_version.as_ref().unwrap().parse().unwrap();

    let (code, reason, msg) = api_err(
        leases
            .create(&PostParams::default(), &lease("a", "y"))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(msg, "leases.coordination.k8s.io \"a\" already exists");

    let mut updated = created.clone();
    updated.spec.as_mut().unwrap().holder_identity = Some("y".into());
    let after = leases
        .replace("a", &PostParams::default(), &updated)
        .await
        .unwrap();
    let rv2: u64 = after
        .metadata
        .resource_version
        .as_ref()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    assert_eq!(after.metadata.generation, Some(2), "spec changed");
    assert_eq!(after.metadata.uid, created.metadata.uid);

    // The same stale object again: 409 Conflict.
    let (code, reason, msg) = api_err(
        leases
            .replace("a", &PostParams::default(), &updated)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    assert!(msg.contains("the object has been modified"), "{msg}");

    // A label change does not bump generation.
    let mut relabel = after.clone();
    relabel.metadata.labels = Some(BTreeMap::from([("k".into(), "v".into())]));
    let relabelled = leases
        .replace("a", &PostParams::default(), &relabel)
        .await
        .unwrap();
    assert_eq!(relabelled.metadata.generation, Some(2));

    leases.delete("a", &DeleteParams::default()).await.unwrap();
    let (code, reason, msg) = api_err(leases.get("a").await.unwrap_err());
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    assert_eq!(msg, "leases.coordination.k8s.io \"a\" not found");
    drop(server);
}

#[tokio::test]
async fn resource_versions_are_one_global_counter() {
    let (server, leases) = server().await;
    let other: Api<Lease> = Api::namespaced(server.client(), "ns2");
    let a = leases
        .create(&PostParams::default(), &lease("a", "x"))
        .await
        .unwrap();
    let b = other
        .create(&PostParams::default(), &lease("b", "x"))
        .await
        .unwrap();
    let ra: u64 = a.metadata.resource_version.unwrap().parse().unwrap();
    let rb: u64 = b.metadata.resource_version.unwrap().parse().unwrap();
    assert_eq!(rb, ra + 1);
    assert_eq!(server.resource_version(), rb);
}

#[tokio::test]
async fn generate_name_and_default_namespace() {
    let (server, leases) = server().await;
    let mut l = lease("", "x");
    l.metadata.name = None;
    l.metadata.generate_name = Some("gen-".into());
    let created = leases.create(&PostParams::default(), &l).await.unwrap();
    let name = created.metadata.name.unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    let namespaces: Api<Namespace> = Api::all(server.client());
    let default = namespaces.get("default").await.unwrap();
    assert_eq!(default.status.unwrap().phase.as_deref(), Some("Active"));
}

#[tokio::test]
async fn invalid_name_is_422_invalid() {
    let (_server, leases) = server().await;
    let (code, reason, msg) = api_err(
        leases
            .create(&PostParams::default(), &lease("Bad_Name", "x"))
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert!(
        msg.starts_with(
            "Lease.coordination.k8s.io \"Bad_Name\" is invalid: metadata.name: Invalid value"
        ),
        "{msg}"
    );
}

#[tokio::test]
async fn label_and_field_selectors() {
    let (server, leases) = server().await;
    for (name, app, tier) in [
        ("a", "web", "front"),
        ("b", "web", "back"),
        ("c", "db", "back"),
    ] {
        let mut l = lease(name, "x");
        l.metadata.labels = Some(BTreeMap::from([
            ("app".into(), app.into()),
            ("tier".into(), tier.into()),
        ]));
        leases.create(&PostParams::default(), &l).await.unwrap();
    }
    let names = |list: kube::core::ObjectList<Lease>| -> Vec<String> {
        list.items
            .into_iter()
            .map(|l| l.metadata.name.unwrap())
            .collect()
    };
    let q = |s: &str| ListParams::default().labels(s);
    assert_eq!(names(leases.list(&q("app=web")).await.unwrap()), ["a", "b"]);
    assert_eq!(names(leases.list(&q("app!=web")).await.unwrap()), ["c"]);
    assert_eq!(
        names(leases.list(&q("tier in (front)")).await.unwrap()),
        ["a"]
    );
    assert_eq!(
        names(leases.list(&q("app notin (web),tier")).await.unwrap()),
        ["c"]
    );
    assert_eq!(
        names(leases.list(&q("!app")).await.unwrap()),
        Vec::<String>::new()
    );
    let by_name = ListParams::default().fields("metadata.name=b");
    assert_eq!(names(leases.list(&by_name).await.unwrap()), ["b"]);
    let all: Api<Lease> = Api::all(server.client());
    let other: Api<Lease> = Api::namespaced(server.client(), "ns2");
    other
        .create(&PostParams::default(), &lease("d", "x"))
        .await
        .unwrap();
    assert_eq!(
        all.list(&ListParams::default()).await.unwrap().items.len(),
        4
    );
    let in_ns2 = ListParams::default().fields("metadata.namespace=ns2");
    assert_eq!(names(all.list(&in_ns2).await.unwrap()), ["d"]);
    let (code, _, _) = api_err(
        leases
            .list(&ListParams::default().fields("spec.holderIdentity=x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400);
}

#[tokio::test]
async fn paging_is_a_consistent_snapshot() {
    let (_server, leases) = server().await;
    for i in 0..25 {
        leases
            .create(&PostParams::default(), &lease(&format!("l{i:02}"), "x"))
            .await
            .unwrap();
    }
    let first = leases.list(&ListParams::default().limit(10)).await.unwrap();
    assert_eq!(first.items.len(), 10);
    assert_eq!(first.metadata.remaining_item_count, Some(15));
    let token = first.metadata.continue_.clone().unwrap();
    // Written between pages: not in this list's pages.
    leases
        .create(&PostParams::default(), &lease("l99", "x"))
        .await
        .unwrap();
    let second = leases
        .list(&ListParams::default().limit(10).continue_token(&token))
        .await
        .unwrap();
    let third = leases
        .list(
            &ListParams::default()
                .limit(10)
                .continue_token(second.metadata.continue_.as_ref().unwrap()),
        )
        .await
        .unwrap();
    assert_eq!(third.items.len(), 5);
    assert!(third.metadata.continue_.as_deref().unwrap_or("").is_empty());
    assert_eq!(
        third.items.last().unwrap().metadata.name.as_deref(),
        Some("l24")
    );
    assert_eq!(
        first.metadata.resource_version,
        third.metadata.resource_version
    );
}

#[tokio::test]
async fn continue_token_after_compaction_is_410() {
    let (server, leases) = server().await;
    for i in 0..3 {
        leases
            .create(&PostParams::default(), &lease(&format!("l{i}"), "x"))
            .await
            .unwrap();
    }
    let first = leases.list(&ListParams::default().limit(1)).await.unwrap();
    server.faults().compact();
    let (code, reason, _) = api_err(
        leases
            .list(
                &ListParams::default()
                    .limit(1)
                    .continue_token(first.metadata.continue_.as_ref().unwrap()),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (410, "Expired"));
}

#[tokio::test]
async fn watch_from_resource_version_replays_then_streams() {
    let (_server, leases) = server().await;
    let a = leases
        .create(&PostParams::default(), &lease("a", "x"))
        .await
        .unwrap();
    let rv = a.metadata.resource_version.clone().unwrap();
    leases
        .create(&PostParams::default(), &lease("b", "x"))
        .await
        .unwrap();
    let mut stream = leases
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    let first = stream.try_next().await.unwrap().unwrap();
    assert!(matches!(&first, WatchEvent::Added(l) if l.metadata.name.as_deref() == Some("b")));
    leases
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"holderIdentity": "z"}})),
        )
        .await
        .unwrap();
    let second = stream.try_next().await.unwrap().unwrap();
    assert!(
        matches!(&second, WatchEvent::Modified(l) if l.spec.as_ref().unwrap().holder_identity.as_deref() == Some("z"))
    );
    leases.delete("b", &DeleteParams::default()).await.unwrap();
    let third = stream.try_next().await.unwrap().unwrap();
    assert!(matches!(&third, WatchEvent::Deleted(l) if l.metadata.name.as_deref() == Some("b")));
}

#[tokio::test]
async fn label_watch_sees_objects_leave_the_selection() {
    let (_server, leases) = server().await;
    let mut l = lease("a", "x");
    l.metadata.labels = Some(BTreeMap::from([("app".into(), "web".into())]));
    let created = leases.create(&PostParams::default(), &l).await.unwrap();
    let rv = created.metadata.resource_version.unwrap();
    let mut stream = leases
        .watch(&WatchParams::default().labels("app=web"), &rv)
        .await
        .unwrap()
        .boxed();
    leases
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {"app": "db"}}})),
        )
        .await
        .unwrap();
    let ev = stream.try_next().await.unwrap().unwrap();
    assert!(matches!(ev, WatchEvent::Deleted(_)), "{ev:?}");
}

#[tokio::test]
async fn old_resource_version_watch_gets_410_expired() {
    let server = ApiServer::builder().history(3).start().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(server.client(), "ns1");
    let a = leases
        .create(&PostParams::default(), &lease("a", "x"))
        .await
        .unwrap();
    let old = a.metadata.resource_version.unwrap();
    for i in 0..5 {
        leases
            .create(&PostParams::default(), &lease(&format!("b{i}"), "x"))
            .await
            .unwrap();
    }
    let mut stream = leases
        .watch(&WatchParams::default(), &old)
        .await
        .unwrap()
        .boxed();
    match stream.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(status) => {
            assert_eq!(status.code, 410);
            assert_eq!(status.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    // Compaction does the same for a recent resourceVersion.
    let now = leases
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    leases
        .create(&PostParams::default(), &lease("c", "x"))
        .await
        .unwrap();
    server.faults().compact();
    let mut stream = leases
        .watch(&WatchParams::default(), &now)
        .await
        .unwrap()
        .boxed();
    assert!(
        matches!(stream.try_next().await.unwrap().unwrap(), WatchEvent::Error(s) if s.code == 410)
    );
}

#[tokio::test]
async fn bookmarks_periodically_and_at_timeout() {
    let server = ApiServer::builder()
        .bookmark_interval(Duration::from_millis(200))
        .start()
        .await
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(server.client(), "ns1");
    let created = leases
        .create(&PostParams::default(), &lease("a", "x"))
        .await
        .unwrap();
    let rv = created.metadata.resource_version.unwrap();
    leases
        .create(&PostParams::default(), &lease("b", "x"))
        .await
        .unwrap();
    let wp = WatchParams::default().timeout(1);
    let events: Vec<_> = leases
        .watch(&wp, &rv)
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    let bookmarks: Vec<String> = events
        .iter()
        .filter_map(|e| match e {
            WatchEvent::Bookmark(b) => Some(b.metadata.resource_version.clone()),
            _ => None,
        })
        .collect();
    assert!(
        bookmarks.len() >= 3,
        "periodic and final bookmarks: {events:?}"
    );
    assert_eq!(
        bookmarks.last().unwrap(),
        &server.resource_version().to_string()
    );
    assert!(matches!(&events[0], WatchEvent::Added(l) if l.metadata.name.as_deref() == Some("b")));
}

#[tokio::test]
async fn watcher_relists_after_410() {
    let server = ApiServer::builder().history(2).start().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(server.client(), "ns1");
    leases
        .create(&PostParams::default(), &lease("a", "x"))
        .await
        .unwrap();
    let stream = watcher(leases.clone(), watcher::Config::default());
    let mut stream = stream.boxed();
    // Initial list.
    loop {
        if let Ok(watcher::Event::InitDone) = stream.next().await.unwrap() {
            break;
        }
    }
    let lists_before = server.requests().verb(Verb::List);
    // The watcher starts its watch only when polled next: history moves on
    // and is compacted before it asks, whatever the machine's speed.
    assert_eq!(
        server.requests().verb(Verb::Watch),
        0,
        "no watch before the stream is polled again"
    );
    server.faults().close_watches();
    for i in 0..5 {
        leases
            .create(&PostParams::default(), &lease(&format!("n{i}"), "x"))
            .await
            .unwrap();
    }
    server.faults().compact();
    let mut saw_error = false;
    let mut names = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while names.len() < 6 {
        let next = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap()
            .unwrap();
        match next {
            Err(_) => saw_error = true,
            Ok(watcher::Event::InitApply(l)) | Ok(watcher::Event::Apply(l)) => {
                let n = l.metadata.name.unwrap();
                if !names.contains(&n) {
                    names.push(n);
                }
            }
            Ok(_) => {}
        }
    }
    server.faults().clear();
    assert!(
        saw_error || server.requests().verb(Verb::List) > lists_before,
        "the watcher saw the 410 and re-listed"
    );
    assert!(server.requests().verb(Verb::List) > lists_before);
}

#[tokio::test]
async fn merge_json_and_strategic_patches() {
    let (_server, leases) = server().await;
    leases
        .create(&PostParams::default(), &lease("a", "x"))
        .await
        .unwrap();
    let merged = leases
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"leaseDurationSeconds": 5}})),
        )
        .await
        .unwrap();
    let spec = merged.spec.unwrap();
    assert_eq!(
        (spec.holder_identity.as_deref(), spec.lease_duration_seconds),
        (Some("x"), Some(5))
    );
    let ops = serde_json::from_value(serde_json::json!([
        {"op": "replace", "path": "/spec/holderIdentity", "value": "j"}
    ]))
    .unwrap();
    let patched = leases
        .patch("a", &PatchParams::default(), &Patch::<()>::Json(ops))
        .await
        .unwrap();
    assert_eq!(patched.spec.unwrap().holder_identity.as_deref(), Some("j"));
    let failing = serde_json::from_value(serde_json::json!([
        {"op": "test", "path": "/spec/holderIdentity", "value": "nope"}
    ]))
    .unwrap();
    let (code, _, _) = api_err(
        leases
            .patch("a", &PatchParams::default(), &Patch::<()>::Json(failing))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    // A stale resourceVersion in a merge patch is a precondition.
    let (code, _, _) = api_err(
        leases
            .patch(
                "a",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"metadata": {"resourceVersion": "1"}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 409);
    let (code, _, _) = api_err(
        leases
            .patch(
                "missing",
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 404);
}

#[tokio::test]
async fn strategic_merge_on_a_custom_resource_is_415() {
    let server = ApiServer::start().await.unwrap();
    let we = workload_entries(&server, "ns1", "v1");
    let (code, reason, _) = api_err(
        we.patch(
            "a",
            &PatchParams::default(),
            &Patch::Strategic(serde_json::json!({"spec": {}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (415, "UnsupportedMediaType"));
}

pub fn workload_entries(
    server: &ApiServer,
    ns: &str,
    version: &str,
) -> Api<kube::api::DynamicObject> {
    let ar = kube::api::ApiResource {
        group: "networking.istio.io".into(),
        version: version.into(),
        api_version: format!("networking.istio.io/{version}"),
        kind: "WorkloadEntry".into(),
        plural: "workloadentries".into(),
    };
    Api::namespaced_with(server.client(), ns, &ar)
}

#[tokio::test]
async fn server_side_apply_ownership_conflicts_and_force() {
    let (_server, leases) = server().await;
    let cfg = |holder: &str, extra: Option<i32>| {
        let mut v = serde_json::json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "a"},
            "spec": {"holderIdentity": holder},
        });
        if let Some(d) = extra {
            v["spec"]["leaseDurationSeconds"] = serde_json::json!(d);
        }
        v
    };
    let created = leases
        .patch(
            "a",
            &PatchParams::apply("alice"),
            &Patch::Apply(cfg("alice", Some(10))),
        )
        .await
        .unwrap();
    let mf = created.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("alice"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));

    // Bob wants another holder: conflict.
    let err = leases
        .patch(
            "a",
            &PatchParams::apply("bob"),
            &Patch::Apply(cfg("bob", None)),
        )
        .await
        .unwrap_err();
    let kube::Error::Api(status) = err else {
        panic!("{err:?}")
    };
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(status.message.contains("alice"), "{}", status.message);
    assert!(
        status.message.contains(".spec.holderIdentity"),
        "{}",
        status.message
    );

    // Forced, ownership moves to bob.
    let forced = leases
        .patch(
            "a",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(cfg("bob", None)),
        )
        .await
        .unwrap();
    assert_eq!(
        forced.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some("bob")
    );

    // Alice stops applying leaseDurationSeconds (and the holder she lost): it goes.
    let alice_again = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "a"}, "spec": {},
    });
    let after = leases
        .patch(
            "a",
            &PatchParams::apply("alice"),
            &Patch::Apply(alice_again),
        )
        .await
        .unwrap();
    let spec = after.spec.unwrap();
    assert_eq!(spec.lease_duration_seconds, None);
    assert_eq!(spec.holder_identity.as_deref(), Some("bob"));

    // fieldManager is required for apply.
    let (code, _, _) = api_err(
        leases
            .patch("a", &PatchParams::default(), &Patch::Apply(cfg("x", None)))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 400);
}

#[tokio::test]
async fn reapplying_the_same_config_writes_nothing_new() {
    let (_server, leases) = server().await;
    let cfg = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "a", "labels": {"x": "1"}}, "spec": {"holderIdentity": "me"},
    });
    let pp = PatchParams::apply("me");
    let first = leases.patch("a", &pp, &Patch::Apply(&cfg)).await.unwrap();
    let second = leases.patch("a", &pp, &Patch::Apply(&cfg)).await.unwrap();
    assert_eq!(
        first.metadata.resource_version,
        second.metadata.resource_version
    );
}

fn owned_by(name: &str, owner: &Lease, block: bool) -> Lease {
    let mut l = lease(name, "x");
    l.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "coordination.k8s.io/v1".into(),
        kind: "Lease".into(),
        name: owner.metadata.name.clone().unwrap(),
        uid: owner.metadata.uid.clone().unwrap(),
        block_owner_deletion: Some(block),
        controller: Some(true),
    }]);
    l
}

#[tokio::test]
async fn garbage_collection_background_foreground_orphan() {
    let (_server, leases) = server().await;
    let pp = PostParams::default();
    // Background (default).
    let owner = leases.create(&pp, &lease("owner", "x")).await.unwrap();
    leases
        .create(&pp, &owned_by("dep", &owner, false))
        .await
        .unwrap();
    leases
        .delete("owner", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(api_err(leases.get("dep").await.unwrap_err()).0, 404);

    // Foreground: the owner waits for a blocking dependent with a finalizer.
    let owner = leases.create(&pp, &lease("owner2", "x")).await.unwrap();
    let mut dep = owned_by("dep2", &owner, true);
    dep.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    leases.create(&pp, &dep).await.unwrap();
    leases
        .delete("owner2", &DeleteParams::foreground())
        .await
        .unwrap();
    let waiting = leases.get("owner2").await.unwrap();
    assert!(waiting.metadata.deletion_timestamp.is_some());
    assert_eq!(waiting.metadata.finalizers.unwrap(), ["foregroundDeletion"]);
    let dep = leases.get("dep2").await.unwrap();
    assert!(dep.metadata.deletion_timestamp.is_some());
    leases
        .patch(
            "dep2",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    assert_eq!(api_err(leases.get("dep2").await.unwrap_err()).0, 404);
    assert_eq!(api_err(leases.get("owner2").await.unwrap_err()).0, 404);

    // Orphan: the dependent stays, without the reference.
    let owner = leases.create(&pp, &lease("owner3", "x")).await.unwrap();
    leases
        .create(&pp, &owned_by("dep3", &owner, true))
        .await
        .unwrap();
    leases
        .delete("owner3", &DeleteParams::orphan())
        .await
        .unwrap();
    let dep = leases.get("dep3").await.unwrap();
    assert!(dep.metadata.owner_references.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn finalizers_and_delete_preconditions() {
    let (_server, leases) = server().await;
    let mut l = lease("a", "x");
    l.metadata.finalizers = Some(vec!["example.com/f".into()]);
    let created = leases.create(&PostParams::default(), &l).await.unwrap();
    let wrong = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some("not-the-uid".into()),
            resource_version: None,
        }),
        ..Default::default()
    };
    let (code, _, msg) = api_err(leases.delete("a", &wrong).await.unwrap_err());
    assert_eq!(code, 409);
    assert!(msg.contains("Precondition failed: UID"), "{msg}");
    let right = DeleteParams {
        preconditions: Some(Preconditions {
            uid: created.metadata.uid.clone(),
            resource_version: created.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    let pending = leases.delete("a", &right).await.unwrap();
    let obj = pending.left().expect("the object, still there");
    assert!(obj.metadata.deletion_timestamp.is_some());
    assert_eq!(obj.metadata.generation, Some(2));
    // No new finalizer on a terminating object.
    let (code, _, _) = api_err(
        leases
            .patch("a", &PatchParams::default(), &Patch::Merge(serde_json::json!({"metadata": {"finalizers": ["example.com/f", "example.com/g"]}})))
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    leases
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"finalizers": []}})),
        )
        .await
        .unwrap();
    assert_eq!(api_err(leases.get("a").await.unwrap_err()).0, 404);
}

/// A client without kube's default retry of 429/503/504, to see the codes.
fn no_retry_client(server: &ApiServer) -> kube::Client {
    let mut config = kube::Config::new(server.url().parse().unwrap());
    config.default_retry = false;
    kube::Client::try_from(config).unwrap()
}

#[tokio::test]
async fn kube_default_client_retries_429_and_503() {
    let (server, leases) = server().await;
    leases
        .create(&PostParams::default(), &lease("a", "x"))
        .await
        .unwrap();
    server
        .faults()
        .fail_next(Match::any().verb(Verb::Get), 2, Injected::Unavailable);
    leases.get("a").await.unwrap();
    assert_eq!(server.requests().get(Verb::Get, "leases"), 3);
}

#[tokio::test]
async fn injected_failures_and_request_counters() {
    let server = ApiServer::start().await.unwrap();
    let leases: Api<Lease> = Api::namespaced(no_retry_client(&server), "ns1");
    leases
        .create(&PostParams::default(), &lease("a", "x"))
        .await
        .unwrap();
    let faults = server.faults();
    faults.fail_next(
        Match::any().verb(Verb::Get).resource("leases"),
        2,
        Injected::TooManyRequests {
            retry_after_secs: 7,
        },
    );
    faults.fail_next(Match::any().verb(Verb::Patch), 1, Injected::Unavailable);
    faults.fail_next(Match::any().verb(Verb::Delete), 1, Injected::Internal);
    faults.fail_next(Match::any().verb(Verb::Update), 1, Injected::Conflict);
    let e1 = api_err(leases.get("a").await.unwrap_err());
    assert_eq!((e1.0, e1.1.as_str()), (429, "TooManyRequests"));
    assert_eq!(api_err(leases.get("a").await.unwrap_err()).0, 429);
    leases.get("a").await.unwrap();
    let patch = Patch::Merge(serde_json::json!({}));
    assert_eq!(
        api_err(
            leases
                .patch("a", &PatchParams::default(), &patch)
                .await
                .unwrap_err()
        )
        .0,
        503
    );
    assert_eq!(
        api_err(
            leases
                .delete("a", &DeleteParams::default())
                .await
                .unwrap_err()
        )
        .0,
        500
    );
    let live = leases.get("a").await.unwrap();
    assert_eq!(
        api_err(
            leases
                .replace("a", &PostParams::default(), &live)
                .await
                .unwrap_err()
        )
        .0,
        409
    );

    // Retry-After is a real header.
    faults.fail_next(
        Match::any(),
        1,
        Injected::TooManyRequests {
            retry_after_secs: 7,
        },
    );
    let resp = raw_get(
        &server.url(),
        "/apis/coordination.k8s.io/v1/namespaces/ns1/leases/a",
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 429"), "{resp}");
    assert!(resp.to_lowercase().contains("retry-after: 7"), "{resp}");

    let counts = server.requests();
    assert_eq!(counts.get(Verb::Get, "leases"), 5);
    assert_eq!(counts.get(Verb::Create, "leases"), 1);
    assert_eq!(counts.writes(), 4);

    // Steady state: reads only.
    let before = server.requests();
    leases.list(&ListParams::default()).await.unwrap();
    leases.get("a").await.unwrap();
    let delta = server.requests().since(&before);
    assert_eq!(delta.writes(), 0);
    assert_eq!(delta.total(), 2);
    server.reset_requests();
    assert_eq!(server.requests().total(), 0);
}

#[tokio::test]
async fn delays_slow_matching_requests() {
    let (server, leases) = server().await;
    server
        .faults()
        .delay(Match::any().verb(Verb::List), Duration::from_millis(300));
    // A lower bound: a busy machine only adds to it.
    let t = std::time::Instant::now();
    leases.list(&ListParams::default()).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(300));
    // Not matching: a get is not held back even by an hour's delay on lists,
    // nor is a list once the delays are cleared. (Upper bounds of a minute
    // for what takes milliseconds: a busy machine keeps them.)
    server
        .faults()
        .delay(Match::any().verb(Verb::List), Duration::from_secs(3600));
    leases
        .create(&PostParams::default(), &lease("a", "x"))
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(60), leases.get("a"))
        .await
        .expect("a get is not delayed")
        .unwrap();
    server.faults().clear();
    tokio::time::timeout(Duration::from_secs(60), leases.list(&ListParams::default()))
        .await
        .expect("cleared: the list is not delayed")
        .unwrap();
}

async fn raw_get(url: &str, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn server_goes_down_and_comes_back_on_the_same_port() {
    let (server, leases) = server().await;
    leases
        .create(&PostParams::default(), &lease("a", "x"))
        .await
        .unwrap();
    let mut stream = leases
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    assert!(matches!(
        stream.try_next().await.unwrap(),
        Some(WatchEvent::Added(_))
    ));
    let addr = server.addr();
    server.faults().go_down().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "connection refused"
    );
    // The open watch was cut.
    let ended = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(!matches!(ended, Some(Ok(_))), "{ended:?}");
    assert!(leases.get("a").await.is_err());
    server.faults().come_up().unwrap();
    assert_eq!(server.addr(), addr);
    let a = leases.get("a").await.unwrap();
    assert_eq!(a.metadata.name.as_deref(), Some("a"));
    // down_for comes back by itself. Not a sleep into its window: watch for
    // the refusal (the window is long against the 10 ms polls, so a busy
    // machine still sees it), then for the return.
    let f = server.faults();
    let down = tokio::spawn(async move { f.down_for(Duration::from_secs(2)).await });
    let mut refused = false;
    while !down.is_finished() {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "down for a while");
    down.await.unwrap().unwrap();
    leases.get("a").await.unwrap();
}

#[tokio::test]
async fn close_watches_ends_streams() {
    let (server, leases) = server().await;
    let mut stream = leases
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    server.faults().close_watches();
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(end.is_none(), "{end:?}");
}

#[tokio::test]
async fn watch_fans_out_to_ten_watchers() {
    let (_server, leases) = server().await;
    let mut streams = Vec::new();
    for _ in 0..10 {
        streams.push(
            leases
                .watch(&WatchParams::default(), "0")
                .await
                .unwrap()
                .boxed(),
        );
    }
    for i in 0..20 {
        leases
            .create(&PostParams::default(), &lease(&format!("l{i}"), "x"))
            .await
            .unwrap();
    }
    for s in &mut streams {
        for i in 0..20 {
            match s.try_next().await.unwrap().unwrap() {
                WatchEvent::Added(l) => assert_eq!(l.metadata.name.unwrap(), format!("l{i}")),
                other => panic!("{other:?}"),
            }
        }
    }
}

#[tokio::test]
async fn delete_collection_with_selector() {
    let (_server, leases) = server().await;
    for (n, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let mut l = lease(n, "h");
        l.metadata.labels = Some(BTreeMap::from([("app".into(), app.into())]));
        leases.create(&PostParams::default(), &l).await.unwrap();
    }
    leases
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("app=x"),
        )
        .await
        .unwrap();
    let left: Vec<String> = leases
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|l| l.metadata.name.unwrap())
        .collect();
    assert_eq!(left, ["c"]);
}

#[tokio::test]
async fn kube_discovery_sees_every_kind() {
    let server = ApiServer::start().await.unwrap();
    let discovery = kube::Discovery::new(server.client()).run().await.unwrap();
    let (ar, caps) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(ar, _)| ar.kind == "WorkloadEntry")
        .expect("WorkloadEntry discovered");
    assert_eq!(ar.version, "v1");
    assert_eq!(ar.plural, "workloadentries");
    assert!(caps.subresources.iter().any(|(s, _)| s.plural == "status"));
    for kind in [
        "WorkloadGroup",
        "ServiceEntry",
        "Sidecar",
        "Service",
        "Lease",
        "Namespace",
        "Event",
    ] {
        assert!(
            discovery
                .groups()
                .flat_map(|g| g.recommended_resources())
                .any(|(ar, _)| ar.kind == kind),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn kubeconfig_builds_a_working_client() {
    let server = ApiServer::start().await.unwrap();
    let dir = std::env::temp_dir().join(format!("testkit-kc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let namespaces: Api<Namespace> = Api::all(client);
    namespaces.get("default").await.unwrap();
    assert_eq!(
        server.kubeconfig().current_context.as_deref(),
        Some("meshmirror-testkit")
    );
    std::fs::remove_dir_all(dir).ok();
}

#[tokio::test]
async fn bad_crd_yaml_is_a_start_error() {
    let err = ApiServer::builder()
        .crd_yaml("apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: x}\nspec: {group: g, names: {plural: xs, kind: X}, scope: Namespaced, versions: []}\n")
        .start()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("storage version"), "{err}");
    assert!(
        ApiServer::builder()
            .crd_file("/nonexistent.yaml")
            .start()
            .await
            .is_err()
    );
}

use meshmirror_testkit::apiserver::protobuf::envelope as protobuf_body;

async fn post_raw(
    server: &ApiServer,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, serde_json::Value) {
    let req = http::Request::post(path)
        .header("content-type", content_type)
        .header(
            "accept",
            "application/vnd.kubernetes.protobuf,application/json",
        )
        .body(kube::client::Body::from(body))
        .unwrap();
    let resp = server.client().send(req).await.unwrap();
    let code = resp.status().as_u16();
    let bytes = resp.into_body().collect_bytes().await.unwrap();
    (code, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn protobuf_bodies_of_built_in_kinds_are_decoded_others_refused_by_kind() {
    use k8s_pb::api::coordination::v1 as pb;
    use k8s_pb::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
    use prost::Message;
    let server = ApiServer::start().await.unwrap();
    let lease = pb::Lease {
        metadata: Some(ObjectMeta {
            name: Some("pb".into()),
            ..Default::default()
        }),
        spec: Some(pb::LeaseSpec {
            holder_identity: Some("me".into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime {
                seconds: Some(1_767_225_600),
                nanos: Some(5_000),
            }),
            ..Default::default()
        }),
    };
    let pb_type = "application/vnd.kubernetes.protobuf";
    let (code, obj) = post_raw(
        &server,
        "/apis/coordination.k8s.io/v1/namespaces/default/leases",
        pb_type,
        protobuf_body("coordination.k8s.io/v1", "Lease", lease.encode_to_vec()),
    )
    .await;
    assert_eq!(code, 201, "{obj}");
    assert_eq!(obj["spec"]["holderIdentity"], "me");
    assert_eq!(obj["spec"]["leaseDurationSeconds"], 15);
    assert_eq!(obj["spec"]["renewTime"], "2026-01-01T00:00:00.000005Z");
    assert_eq!(obj["metadata"]["namespace"], "default");

    let (code, status) = post_raw(
        &server,
        "/api/v1/namespaces/default/events",
        pb_type,
        protobuf_body("v1", "Pod", vec![]),
    )
    .await;
    assert_eq!(code, 415, "{status}");
    assert_eq!(status["reason"], "UnsupportedMediaType");
    assert!(
        status["message"].as_str().unwrap().contains("kind v1 Pod"),
        "{status}"
    );
    let (code, _) = post_raw(
        &server,
        "/api/v1/namespaces/default/events",
        "application/cbor",
        vec![0xa0],
    )
    .await;
    assert_eq!(code, 415);
    let (code, status) = post_raw(
        &server,
        "/api/v1/namespaces/default/events",
        pb_type,
        b"nope".to_vec(),
    )
    .await;
    assert_eq!(code, 400, "{status}");
}

/// The address is one of tests/kube's service range, 10.96.0.0/12.
fn in_service_range(ip: &str) -> bool {
    let ip: std::net::Ipv4Addr = ip.parse().unwrap_or_else(|_| panic!("{ip:?}"));
    u32::from(ip) >> 20 == u32::from(std::net::Ipv4Addr::new(10, 96, 0, 0)) >> 20
}

fn applied_service(name: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"selector": {"app": "web"},
            "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}})
}

#[tokio::test]
async fn services_get_a_cluster_ip_and_the_real_servers_defaults() {
    let server = ApiServer::start().await.unwrap();
    let services: Api<Service> = Api::namespaced(server.client(), "default");
    let pp = PatchParams::apply("meshmirror");
    let before = server.requests();

    // Server-side apply of selector and one port: created with what the
    // real server fills in.
    let applied = Patch::Apply(applied_service("web"));
    let web = services.patch("web", &pp, &applied).await.unwrap();
    let spec = web.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    assert_eq!(spec.session_affinity.as_deref(), Some("None"));
    assert_eq!(spec.internal_traffic_policy.as_deref(), Some("Cluster"));
    assert_eq!(spec.ip_families, Some(vec!["IPv4".to_string()]));
    assert_eq!(spec.ip_family_policy.as_deref(), Some("SingleStack"));
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(port.target_port, Some(IntOrString::Int(8080)));
    let ip = spec.cluster_ip.clone().unwrap();
    assert!(in_service_range(&ip), "{ip}");
    assert_eq!(spec.cluster_ips, Some(vec![ip.clone()]));
    assert!(web.status.unwrap().load_balancer.is_some());

    // Applied again: nothing written.
    let again = services.patch("web", &pp, &applied).await.unwrap();
    assert_eq!(
        again.metadata.resource_version,
        web.metadata.resource_version
    );

    // POST of an existing name: 409 AlreadyExists.
    let mut copy: Service = serde_json::from_value(applied_service("web")).unwrap();
    let (code, reason, _) = api_err(
        services
            .create(&PostParams::default(), &copy)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"));

    // A PUT without the allocated fields keeps them; one that moves the
    // address is refused.
    copy.metadata = services.get("web").await.unwrap().metadata;
    let replaced = services
        .replace("web", &PostParams::default(), &copy)
        .await
        .unwrap();
    assert_eq!(replaced.spec.unwrap().cluster_ip.as_deref(), Some(&*ip));
    let moved = Patch::Merge(serde_json::json!({"spec": {"clusterIP": "10.96.5.5"}}));
    let (code, reason, message) = api_err(
        services
            .patch("web", &PatchParams::default(), &moved)
            .await
            .unwrap_err(),
    );
    assert_eq!((code, reason.as_str()), (422, "Invalid"));
    assert_eq!(
        message,
        r#"Service "web" is invalid: spec.clusterIPs[0]: Invalid value: ["10.96.5.5"]: may not change once set"#
    );

    // Every Service its own address; an address asked for that another
    // holds is refused.
    let mut seen = std::collections::HashSet::from([ip.clone()]);
    for i in 0..20 {
        let s: Service = serde_json::from_value(applied_service(&format!("s{i}"))).unwrap();
        let created = services.create(&PostParams::default(), &s).await.unwrap();
        let got = created.spec.unwrap().cluster_ip.unwrap();
        assert!(in_service_range(&got) && seen.insert(got.clone()), "{got}");
    }
    let mut thief: Service = serde_json::from_value(applied_service("thief")).unwrap();
    thief.spec.as_mut().unwrap().cluster_ip = Some(ip.clone());
    let (code, _, message) = api_err(
        services
            .create(&PostParams::default(), &thief)
            .await
            .unwrap_err(),
    );
    assert_eq!(code, 422);
    assert!(
        message.ends_with("provided IP is already allocated"),
        "{message}"
    );

    // A delete answers the Service itself, as the real server's does.
    let gone = services
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(
        gone.left().and_then(|s| s.metadata.name).as_deref(),
        Some("web")
    );

    // Counted and faulted under `services`, like any other resource.
    let counts = server.requests().since(&before);
    assert_eq!(counts.get(Verb::Patch, "services"), 3);
    assert_eq!(counts.get(Verb::Create, "services"), 22);
    assert_eq!(counts.get(Verb::Delete, "services"), 1);
    server.faults().fail_next(
        Match::any()
            .verb(Verb::Get)
            .resource("services")
            .namespace("default"),
        1,
        Injected::Internal,
    );
    assert_eq!(api_err(services.get("s1").await.unwrap_err()).0, 500);
    services.get("s1").await.unwrap();
}

fn istio(kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: "networking.istio.io/v1".into(),
        kind: kind.into(),
        plural: plural.into(),
    }
}

#[tokio::test]
async fn garbage_collection_reaches_services_service_entries_and_sidecars() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let groups = Api::<DynamicObject>::namespaced_with(
        client.clone(),
        "gc",
        &istio("WorkloadGroup", "workloadgroups"),
    );
    let pp = PostParams::default();
    let owner: DynamicObject = serde_json::from_value(serde_json::json!({
        "apiVersion": "networking.istio.io/v1", "kind": "WorkloadGroup",
        "metadata": {"name": "web"}, "spec": {"template": {"labels": {"app": "web"}}}}))
    .unwrap();
    let owner = groups.create(&pp, &owner).await.unwrap();
    let owner_ref = serde_json::json!([{"apiVersion": "networking.istio.io/v1",
        "kind": "WorkloadGroup", "name": "web", "uid": owner.metadata.uid.unwrap(),
        "controller": true, "blockOwnerDeletion": true}]);
    let core = ApiResource {
        group: String::new(),
        version: "v1".into(),
        api_version: "v1".into(),
        kind: "Service".into(),
        plural: "services".into(),
    };
    // (resource, spec) of each kind meshmirror writes for a group.
    let dependents = [
        (
            core,
            serde_json::json!({"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80}]}),
        ),
        (
            istio("ServiceEntry", "serviceentries"),
            serde_json::json!({"hosts": ["web.example.com"], "location": "MESH_INTERNAL",
                "resolution": "STATIC", "ports": [{"name": "http", "number": 80, "protocol": "HTTP"}],
                "workloadSelector": {"labels": {"app": "web"}}}),
        ),
        (
            istio("Sidecar", "sidecars"),
            serde_json::json!({"workloadSelector": {"labels": {"app": "web"}},
                "egress": [{"hosts": ["./*"]}]}),
        ),
        (
            istio("WorkloadEntry", "workloadentries"),
            serde_json::json!({"address": "10.0.0.1", "labels": {"app": "web"}}),
        ),
    ];
    let mut apis = Vec::new();
    for (ar, spec) in dependents {
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), "gc", &ar);
        let obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": ar.api_version, "kind": ar.kind,
            "metadata": {"name": "web", "ownerReferences": owner_ref}, "spec": spec}))
        .unwrap();
        api.create(&pp, &obj)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", ar.kind));
        apis.push((ar.kind, api));
    }
    groups
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    for (kind, api) in apis {
        assert_eq!(
            api_err(api.get("web").await.unwrap_err()).0,
            404,
            "{kind} collected with its owner"
        );
    }
}

#[tokio::test]
async fn discovery_lists_services_service_entries_and_sidecars() {
    let server = ApiServer::start().await.unwrap();
    let client = server.client();
    let get = |path: &str| {
        let req = http::Request::get(path).body(Vec::new()).unwrap();
        client.request::<serde_json::Value>(req)
    };
    let core = get("/api/v1").await.unwrap();
    let istio = get("/apis/networking.istio.io/v1").await.unwrap();
    let find = |doc: &serde_json::Value, name: &str| {
        doc["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} not in {doc}"))
    };
    // As the real server (v1.37, Istio 86c9f01f) lists them.
    let svc = find(&core, "services");
    assert_eq!(
        (
            &svc["kind"],
            &svc["namespaced"],
            &svc["shortNames"],
            &svc["categories"]
        ),
        (
            &serde_json::json!("Service"),
            &serde_json::json!(true),
            &serde_json::json!(["svc"]),
            &serde_json::json!(["all"])
        )
    );
    assert_eq!(find(&core, "services/status")["kind"], "Service");
    for (name, kind, short) in [
        ("serviceentries", "ServiceEntry", serde_json::json!(["se"])),
        ("sidecars", "Sidecar", serde_json::Value::Null),
    ] {
        let r = find(&istio, name);
        assert_eq!(r["kind"], kind);
        assert_eq!(r["shortNames"], short, "{name}");
        assert_eq!(
            r["categories"],
            serde_json::json!(["istio-io", "networking-istio-io"])
        );
        find(&istio, &format!("{name}/status"));
    }
}
