//! The server-side apply behaviours meshmirror relies on, end to end through
//! the public functions.

use serde_json::{Value, json};

use super::*;

const WE: &str = "networking.istio.io/v1";

fn applier<'a>(manager: &'a str, time: &'a str) -> Writer<'a> {
    Writer {
        manager,
        api_version: WE,
        subresource: None,
        time,
    }
}

fn entry<'a>(obj: &'a Value, manager: &str, operation: &str) -> Option<&'a Value> {
    obj["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|e| e["manager"] == manager && e["operation"] == operation)
}

fn fields<'a>(obj: &'a Value, manager: &str, operation: &str) -> &'a Value {
    &entry(obj, manager, operation)
        .unwrap_or_else(|| panic!("no {operation} entry for {manager} in {obj:#}"))["fieldsV1"]
}

fn workload_entry(labels: Value, spec: Value) -> Value {
    json!({
        "apiVersion": WE,
        "kind": "WorkloadEntry",
        "metadata": {"name": "vm-1", "namespace": "mesh", "labels": labels},
        "spec": spec
    })
}

/// What the HTTP server does around a create: set the server fields.
fn stored(mut obj: Value) -> Value {
    let meta = obj["metadata"].as_object_mut().unwrap();
    meta.insert("uid".into(), "uid-1".into());
    meta.insert("resourceVersion".into(), "1".into());
    meta.insert("creationTimestamp".into(), "2024-01-01T00:00:00Z".into());
    meta.insert("generation".into(), 1.into());
    obj
}

fn meshmirror_config() -> Value {
    workload_entry(
        json!({"app": "web", "tier": "a"}),
        json!({"address": "10.0.0.1", "ports": {"http": 8080}, "labels": {"app": "web"}}),
    )
}

#[test]
fn apply_on_create_records_exactly_the_applied_fields() {
    let out = apply(
        None,
        &meshmirror_config(),
        &applier("meshmirror", "2024-01-01T00:00:00Z"),
        false,
    )
    .unwrap();
    let entries = out["metadata"]["managedFields"].as_array().unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(
        entries[0],
        json!({
            "manager": "meshmirror",
            "operation": "Apply",
            "apiVersion": WE,
            "time": "2024-01-01T00:00:00Z",
            "fieldsType": "FieldsV1",
            "fieldsV1": {
                "f:metadata": {"f:labels": {"f:app": {}, "f:tier": {}}},
                "f:spec": {"f:address": {}, "f:ports": {"f:http": {}}, "f:labels": {"f:app": {}}}
            }
        })
    );
    let mut without = out.clone();
    without["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("managedFields");
    assert_eq!(without, meshmirror_config());
}

/// Scenario 1: istiod's annotation and status survive a re-apply without them.
#[test]
fn fields_written_by_istiod_survive_a_reapply() {
    let live = stored(
        apply(
            None,
            &meshmirror_config(),
            &applier("meshmirror", "2024-01-01T00:00:00Z"),
            false,
        )
        .unwrap(),
    );

    let mut annotated = live.clone();
    annotated["metadata"]["annotations"] = json!({"istio.io/connectedAt": "2024-01-01T00:00:01Z"});
    record_update(
        Some(&live),
        &mut annotated,
        &applier("pilot-discovery", "2024-01-01T00:00:01Z"),
    );
    assert_eq!(
        fields(&annotated, "pilot-discovery", "Update"),
        &json!({"f:metadata": {"f:annotations": {".": {}, "f:istio.io/connectedAt": {}}}})
    );

    let mut with_status = annotated.clone();
    with_status["status"] = json!({"conditions": [{"type": "Healthy", "status": "True"}]});
    let status_writer = Writer {
        subresource: Some("status"),
        ..applier("pilot-discovery", "2024-01-01T00:00:02Z")
    };
    record_update(Some(&annotated), &mut with_status, &status_writer);
    let status_entry = with_status["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["subresource"] == "status")
        .expect("status entry");
    assert_eq!(
        status_entry["fieldsV1"],
        json!({"f:status": {".": {}, "f:conditions": {".": {},
            "k:{\"type\":\"Healthy\"}": {".": {}, "f:status": {}, "f:type": {}}}}})
    );
    assert_eq!(
        with_status["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let reapplied = apply(
        Some(&with_status),
        &meshmirror_config(),
        &applier("meshmirror", "2024-01-01T00:00:03Z"),
        false,
    )
    .unwrap();
    assert_eq!(
        reapplied["metadata"]["annotations"]["istio.io/connectedAt"],
        "2024-01-01T00:00:01Z"
    );
    assert_eq!(reapplied["status"]["conditions"][0]["type"], "Healthy");
    assert_eq!(reapplied, with_status, "nothing changed, nothing to write");
}

/// Scenario 2: a label dropped from the configuration goes.
#[test]
fn dropping_an_applied_label_removes_it() {
    let live = stored(
        apply(
            None,
            &meshmirror_config(),
            &applier("meshmirror", "2024-01-01T00:00:00Z"),
            false,
        )
        .unwrap(),
    );
    let mut config = meshmirror_config();
    config["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("tier");
    let out = apply(
        Some(&live),
        &config,
        &applier("meshmirror", "2024-01-01T00:00:05Z"),
        false,
    )
    .unwrap();
    assert_eq!(out["metadata"]["labels"], json!({"app": "web"}));
    assert_eq!(
        fields(&out, "meshmirror", "Apply")["f:metadata"],
        json!({"f:labels": {"f:app": {}}})
    );
    assert_eq!(
        entry(&out, "meshmirror", "Apply").unwrap()["time"],
        "2024-01-01T00:00:05Z"
    );
    assert_eq!(out["metadata"]["uid"], "uid-1", "server fields stay");
}

#[test]
fn dropping_every_label_removes_the_label_map() {
    let live = stored(
        apply(
            None,
            &meshmirror_config(),
            &applier("meshmirror", "t0"),
            false,
        )
        .unwrap(),
    );
    let mut config = meshmirror_config();
    config["metadata"].as_object_mut().unwrap().remove("labels");
    let out = apply(Some(&live), &config, &applier("meshmirror", "t1"), false).unwrap();
    assert!(out["metadata"].get("labels").is_none(), "{out:#}");
}

/// Scenario 3: spec.address set by someone else's update conflicts; force
/// takes it over.
#[test]
fn changing_a_field_another_manager_updated_conflicts_unless_forced() {
    let live = stored(
        apply(
            None,
            &meshmirror_config(),
            &applier("meshmirror", "2024-01-01T00:00:00Z"),
            false,
        )
        .unwrap(),
    );
    let mut edited = live.clone();
    edited["spec"]["address"] = json!("10.0.0.99");
    record_update(
        Some(&live),
        &mut edited,
        &applier("admin", "2024-01-01T00:00:01Z"),
    );
    assert_eq!(
        fields(&edited, "admin", "Update"),
        &json!({"f:spec": {"f:address": {}}})
    );
    assert!(
        fields(&edited, "meshmirror", "Apply")["f:spec"]
            .get("f:address")
            .is_none(),
        "the update took the field from the applier"
    );

    let err = apply(
        Some(&edited),
        &meshmirror_config(),
        &applier("meshmirror", "t2"),
        false,
    )
    .unwrap_err();
    assert_eq!(
        err.conflicts,
        [("admin".to_owned(), ".spec.address".to_owned())]
    );
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"admin\" using networking.istio.io/v1: .spec.address"
    );
    assert_eq!(
        err.causes(),
        [ConflictCause {
            reason: "FieldManagerConflict",
            message: "conflict with \"admin\" using networking.istio.io/v1".into(),
            field: ".spec.address".into(),
        }]
    );

    let forced = apply(
        Some(&edited),
        &meshmirror_config(),
        &applier("meshmirror", "t2"),
        true,
    )
    .unwrap();
    assert_eq!(forced["spec"]["address"], "10.0.0.1");
    assert!(
        entry(&forced, "admin", "Update").is_none(),
        "admin owned nothing else"
    );
    assert!(
        fields(&forced, "meshmirror", "Apply")["f:spec"]
            .get("f:address")
            .is_some()
    );
}

#[test]
fn several_conflicts_are_listed_per_manager() {
    let live = stored(
        apply(
            None,
            &meshmirror_config(),
            &applier("meshmirror", "t0"),
            false,
        )
        .unwrap(),
    );
    let mut edited = live.clone();
    edited["spec"]["weight"] = json!(5);
    record_update(Some(&live), &mut edited, &applier("admin", "t1"));
    let other_config = workload_entry(
        json!({}),
        json!({"address": "10.0.0.50", "ports": {"http": 9999}}),
    );
    let other = apply(Some(&edited), &other_config, &applier("other", "t2"), true).unwrap();

    let mut config = meshmirror_config();
    config["spec"]["weight"] = json!(1);
    let err = apply(Some(&other), &config, &applier("meshmirror", "t3"), false).unwrap_err();
    assert_eq!(
        err.conflicts,
        [
            ("admin".to_owned(), ".spec.weight".to_owned()),
            ("other".to_owned(), ".spec.address".to_owned()),
            ("other".to_owned(), ".spec.ports.http".to_owned()),
        ]
    );
    assert_eq!(
        err.to_string(),
        "Apply failed with 3 conflicts: conflicts with \"admin\" using networking.istio.io/v1:\n- .spec.weight\n\
         conflicts with \"other\":\n- .spec.address\n- .spec.ports.http"
    );
}

/// Scenario 4: two appliers of the same value share it; one dropping it
/// leaves it.
#[test]
fn equal_values_are_shared_and_survive_one_owner_dropping_them() {
    let live = stored(
        apply(
            None,
            &meshmirror_config(),
            &applier("meshmirror", "t0"),
            false,
        )
        .unwrap(),
    );
    let other_config = workload_entry(json!({"app": "web"}), json!({"address": "10.0.0.1"}));
    let shared = apply(Some(&live), &other_config, &applier("other", "t1"), false).unwrap();
    assert!(
        fields(&shared, "other", "Apply")["f:spec"]
            .get("f:address")
            .is_some()
    );
    assert!(
        fields(&shared, "meshmirror", "Apply")["f:spec"]
            .get("f:address")
            .is_some()
    );

    let mut config = meshmirror_config();
    config["spec"].as_object_mut().unwrap().remove("address");
    config["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("app");
    let out = apply(Some(&shared), &config, &applier("meshmirror", "t2"), false).unwrap();
    assert_eq!(out["spec"]["address"], "10.0.0.1");
    assert_eq!(out["metadata"]["labels"]["app"], "web");
    assert!(
        fields(&out, "meshmirror", "Apply")["f:spec"]
            .get("f:address")
            .is_none()
    );

    // ...and once the last owner drops it, it goes.
    let mut other_config = other_config;
    other_config["spec"] = json!({});
    let gone = apply(Some(&out), &other_config, &applier("other", "t3"), false).unwrap();
    assert!(gone["spec"].get("address").is_none(), "{gone:#}");
    assert_eq!(
        gone["spec"]["ports"]["http"], 8080,
        "still owned by meshmirror"
    );
}

/// Scenario 5: the same configuration twice changes nothing, not even time.
#[test]
fn identical_apply_is_a_no_op() {
    let live = stored(
        apply(
            None,
            &meshmirror_config(),
            &applier("meshmirror", "t0"),
            false,
        )
        .unwrap(),
    );
    let again = apply(
        Some(&live),
        &meshmirror_config(),
        &applier("meshmirror", "t9"),
        false,
    )
    .unwrap();
    assert_eq!(again, live);
    assert!(same_object_ignoring_time(&again, &live));

    let mut changed = meshmirror_config();
    changed["spec"]["address"] = json!("10.0.0.2");
    let moved = apply(Some(&live), &changed, &applier("meshmirror", "t9"), false).unwrap();
    assert!(!same_object_ignoring_time(&moved, &live));
    assert_eq!(entry(&moved, "meshmirror", "Apply").unwrap()["time"], "t9");
}

#[test]
fn same_object_ignoring_time_ignores_only_time() {
    let live = stored(
        apply(
            None,
            &meshmirror_config(),
            &applier("meshmirror", "t0"),
            false,
        )
        .unwrap(),
    );
    let mut later = live.clone();
    later["metadata"]["managedFields"][0]["time"] = json!("t5");
    assert_ne!(later, live);
    assert!(same_object_ignoring_time(&later, &live));
    later["metadata"]["managedFields"][0]["manager"] = json!("x");
    assert!(!same_object_ignoring_time(&later, &live));
}

/// Scenario 6: owner references merge by uid.
#[test]
fn owner_references_merge_by_uid() {
    let owner = |uid: &str| json!({"apiVersion": "v1", "kind": "K", "name": uid, "uid": uid});
    let mut config = meshmirror_config();
    config["metadata"]["ownerReferences"] = json!([owner("u1")]);
    let live = stored(apply(None, &config, &applier("meshmirror", "t0"), false).unwrap());

    let mut other = workload_entry(json!({}), json!({}));
    other["metadata"]["ownerReferences"] = json!([owner("u2")]);
    let both = apply(Some(&live), &other, &applier("other", "t1"), false).unwrap();
    assert_eq!(
        both["metadata"]["ownerReferences"],
        json!([owner("u1"), owner("u2")])
    );
    assert_eq!(
        fields(&both, "other", "Apply"),
        &json!({"f:metadata": {"f:ownerReferences": {"k:{\"uid\":\"u2\"}": {}}}})
    );

    // meshmirror drops u1: only its own reference goes.
    let mut dropped = meshmirror_config();
    dropped["metadata"]["ownerReferences"] = json!([]);
    let out = apply(Some(&both), &dropped, &applier("meshmirror", "t2"), false).unwrap();
    assert_eq!(out["metadata"]["ownerReferences"], json!([owner("u2")]));
}

#[test]
fn finalizers_merge_as_a_set() {
    let mut config = meshmirror_config();
    config["metadata"]["finalizers"] = json!(["a/x"]);
    let live = stored(apply(None, &config, &applier("meshmirror", "t0"), false).unwrap());
    let mut other = workload_entry(json!({}), json!({}));
    other["metadata"]["finalizers"] = json!(["b/y"]);
    let out = apply(Some(&live), &other, &applier("other", "t1"), false).unwrap();
    assert_eq!(out["metadata"]["finalizers"], json!(["a/x", "b/y"]));
    assert_eq!(
        fields(&out, "other", "Apply")["f:metadata"],
        json!({"f:finalizers": {"v:\"b/y\"": {}}})
    );
}

#[test]
fn status_conditions_merge_by_type() {
    let live = stored(
        apply(
            None,
            &meshmirror_config(),
            &applier("meshmirror", "t0"),
            false,
        )
        .unwrap(),
    );
    fn status_applier(m: &str) -> Writer<'_> {
        Writer {
            subresource: Some("status"),
            ..applier(m, "t1")
        }
    }
    let mut a = workload_entry(json!({}), json!({}));
    a["status"] = json!({"conditions": [{"type": "A", "status": "True"}]});
    let with_a = apply(Some(&live), &a, &status_applier("ctrl-a"), false).unwrap();
    let mut b = workload_entry(json!({}), json!({}));
    b["status"] = json!({"conditions": [{"type": "B", "status": "False"}]});
    let with_b = apply(Some(&with_a), &b, &status_applier("ctrl-b"), false).unwrap();
    assert_eq!(with_b["status"]["conditions"].as_array().unwrap().len(), 2);
    let entry = with_b["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["manager"] == "ctrl-b")
        .unwrap();
    assert_eq!(entry["subresource"], "status");

    b["status"]["conditions"][0]["type"] = json!("A");
    let err = apply(Some(&with_b), &b, &status_applier("ctrl-b"), false).unwrap_err();
    assert_eq!(
        err.to_string(),
        "Apply failed with 1 conflict: conflict with \"ctrl-a\" with subresource \"status\": .status.conditions[type=\"A\"].status"
    );
}

/// Scenario 7: an update takes over what it changes, and what it removes
/// leaves every set.
#[test]
fn record_update_moves_ownership_of_changed_and_removed_fields() {
    let live = stored(
        apply(
            None,
            &meshmirror_config(),
            &applier("meshmirror", "t0"),
            false,
        )
        .unwrap(),
    );
    let mut new = live.clone();
    new["spec"]["ports"]["http"] = json!(9090);
    new["spec"]["weight"] = json!(2);
    new["metadata"]["labels"]
        .as_object_mut()
        .unwrap()
        .remove("tier");
    record_update(Some(&live), &mut new, &applier("kubectl-edit", "t1"));
    assert_eq!(
        fields(&new, "kubectl-edit", "Update"),
        &json!({"f:spec": {"f:ports": {"f:http": {}}, "f:weight": {}}})
    );
    assert_eq!(
        fields(&new, "meshmirror", "Apply"),
        &json!({"f:metadata": {"f:labels": {"f:app": {}}},
            "f:spec": {"f:address": {}, "f:labels": {"f:app": {}}}})
    );
    assert_eq!(entry(&new, "kubectl-edit", "Update").unwrap()["time"], "t1");

    // An update that changes nothing leaves the entries, times included.
    let before = new.clone();
    record_update(Some(&before), &mut new, &applier("kubectl-edit", "t2"));
    assert_eq!(new, before);

    // A later update by the same manager adds to its entry.
    let mut more = new.clone();
    more["spec"]["address"] = json!("10.0.0.7");
    record_update(Some(&new), &mut more, &applier("kubectl-edit", "t3"));
    assert_eq!(
        fields(&more, "kubectl-edit", "Update"),
        &json!({"f:spec": {"f:address": {}, "f:ports": {"f:http": {}}, "f:weight": {}}})
    );
    assert_eq!(
        more["metadata"]["managedFields"].as_array().unwrap().len(),
        2
    );
}

#[test]
fn record_update_on_create_owns_everything_but_server_metadata() {
    let mut new = stored(json!({
        "apiVersion": WE, "kind": "WorkloadEntry",
        "metadata": {"name": "a", "namespace": "n", "labels": {"x": "y"}},
        "spec": {"address": "1.1.1.1"}
    }));
    record_update(None, &mut new, &applier("creator", "t0"));
    assert_eq!(
        fields(&new, "creator", "Update"),
        &json!({"f:metadata": {"f:labels": {".": {}, "f:x": {}}}, "f:spec": {".": {}, "f:address": {}}})
    );
}

#[test]
fn an_applier_conflicts_with_its_own_update_entry() {
    let live = stored(
        apply(
            None,
            &meshmirror_config(),
            &applier("meshmirror", "t0"),
            false,
        )
        .unwrap(),
    );
    let mut edited = live.clone();
    edited["spec"]["address"] = json!("10.0.0.5");
    record_update(Some(&live), &mut edited, &applier("meshmirror", "t1"));
    let err = apply(
        Some(&edited),
        &meshmirror_config(),
        &applier("meshmirror", "t2"),
        false,
    )
    .unwrap_err();
    assert_eq!(
        err.printed_managers,
        ["\"meshmirror\" using networking.istio.io/v1"]
    );
}

#[test]
fn apply_ignores_server_metadata_in_the_configuration() {
    let live = stored(
        apply(
            None,
            &meshmirror_config(),
            &applier("meshmirror", "t0"),
            false,
        )
        .unwrap(),
    );
    let mut config = meshmirror_config();
    config["metadata"]["uid"] = json!("forged");
    config["metadata"]["resourceVersion"] = json!("999");
    config["metadata"]["managedFields"] = json!([{"manager": "forged"}]);
    let out = apply(Some(&live), &config, &applier("meshmirror", "t1"), false).unwrap();
    assert_eq!(out, live);
}

#[test]
fn schema_from_a_crd_makes_conditions_atomic_as_the_real_server_does() {
    let schema = Schema::from_openapi_v3(&json!({
        "type": "object",
        "properties": {
            "spec": {"type": "object", "properties": {"address": {"type": "string"}}},
            "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                "properties": {"conditions": {"type": "array", "items": {"type": "object"}}}}
        }
    }));
    let mut config = workload_entry(json!({}), json!({"address": "a"}));
    config["status"] = json!({"conditions": [{"type": "A"}]});
    let out = apply_with_schema(&schema, None, &config, &applier("m", "t0"), false).unwrap();
    assert_eq!(
        fields(&out, "m", "Apply"),
        &json!({"f:spec": {"f:address": {}}, "f:status": {"f:conditions": {}}})
    );
}

#[test]
fn with_a_status_subresource_each_endpoint_ignores_the_other_part() {
    let schema = Schema::default_object()
        .clone()
        .with_status_subresource(true);
    let mut config = meshmirror_config();
    config["status"] = json!({"observedGeneration": 1});
    let out =
        apply_with_schema(&schema, None, &config, &applier("meshmirror", "t0"), false).unwrap();
    assert!(
        fields(&out, "meshmirror", "Apply")
            .get("f:status")
            .is_none()
    );

    let mut new = out.clone();
    new["status"] = json!({"observedGeneration": 2});
    new["spec"]["address"] = json!("10.9.9.9");
    let writer = Writer {
        subresource: Some("status"),
        ..applier("ctrl", "t1")
    };
    record_update_with_schema(&schema, Some(&out), &mut new, &writer);
    let status_entry = entry(&new, "ctrl", "Update").unwrap();
    assert_eq!(status_entry["subresource"], "status");
    assert_eq!(
        status_entry["fieldsV1"],
        json!({"f:status": {"f:observedGeneration": {}}})
    );
    assert!(
        fields(&new, "meshmirror", "Apply")["f:spec"]
            .get("f:address")
            .is_some()
    );

    // Without the subresource, status is an ordinary field.
    let plain = apply(None, &config, &applier("meshmirror", "t0"), false).unwrap();
    assert!(
        fields(&plain, "meshmirror", "Apply")
            .get("f:status")
            .is_some()
    );
}

#[test]
fn a_client_may_reset_managed_fields() {
    let live = stored(
        apply(
            None,
            &meshmirror_config(),
            &applier("meshmirror", "t0"),
            false,
        )
        .unwrap(),
    );
    let mut new = live.clone();
    new["metadata"]["managedFields"] = json!([{}]);
    record_update(Some(&live), &mut new, &applier("resetter", "t1"));
    assert!(new["metadata"].get("managedFields").is_none(), "{new:#}");
}

#[test]
fn two_thousand_applies_onto_one_object_each_take_the_new_address() {
    // The scale tests apply one object over and over. What they need is a
    // right answer every time; how fast that is is the benchmark's business
    // (`cargo bench -p meshmirror-testkit` prints in-process applies per
    // second), not an assertion on a machine that may be busy.
    let live = stored(
        apply(
            None,
            &meshmirror_config(),
            &applier("meshmirror", "t0"),
            false,
        )
        .unwrap(),
    );
    let mut config = meshmirror_config();
    let mut applied = 0;
    for i in 0..2000 {
        let address = format!("10.0.{}.{}", i / 250, i % 250);
        config["spec"]["address"] = json!(address);
        let out = apply(Some(&live), &config, &applier("meshmirror", "t1"), false).unwrap();
        assert_eq!(out["spec"]["address"], json!(address));
        assert_eq!(
            out["metadata"]["managedFields"].as_array().map(Vec::len),
            Some(1),
            "{out:#}"
        );
        applied += 1;
    }
    assert_eq!(applied, 2000);
}
