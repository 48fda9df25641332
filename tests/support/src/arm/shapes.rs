//! The mock's replies held against the verbatim ARM examples in
//! `fixtures/azure/`: every field the mock sends must exist at the same place,
//! with the same JSON type, in the example(s) for that operation. The mock may
//! send less than an example, never something an example lacks.

use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::State;
use axum::http::Request;
use serde_json::Value;

use super::cloud::ScaleSetSpec;
use super::{DEFAULT_PAGE_SIZE, Inner, Shared, handler};

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/fixtures/azure/{name}",
        std::env::var("CARGO_MANIFEST_DIR").expect("cargo and nextest set CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn body_200(name: &str) -> Value {
    fixture(name)["responses"]["200"]["body"].clone()
}

/// Objects: union of keys; arrays: all elements side by side.
fn merge(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut out = x.clone();
            for (k, v) in y {
                let merged = match out.get(k) {
                    Some(existing) => merge(existing, v),
                    None => v.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(x), Value::Array(y)) => Value::Array(x.iter().chain(y).cloned().collect()),
        (x, _) => x.clone(),
    }
}

/// Free-form maps whose keys are data, not schema.
const MAPS: &[&str] = &["tags"];

fn conforms(mock: &Value, reference: &Value, path: &str, errors: &mut Vec<String>) {
    match (mock, reference) {
        (Value::Object(m), Value::Object(r)) => {
            if MAPS.iter().any(|k| path.ends_with(&format!("/{k}"))) {
                return;
            }
            for (k, v) in m {
                match r.get(k) {
                    None => errors.push(format!("{path}/{k}: not in the example")),
                    Some(rv) => conforms(v, rv, &format!("{path}/{k}"), errors),
                }
            }
        }
        (Value::Array(m), Value::Array(r)) => {
            if r.is_empty() {
                if !m.is_empty() {
                    errors.push(format!("{path}: the example's array is empty"));
                }
                return;
            }
            let reference = r.iter().skip(1).fold(r[0].clone(), |acc, x| merge(&acc, x));
            for (i, item) in m.iter().enumerate() {
                conforms(item, &reference, &format!("{path}/{i}"), errors);
            }
        }
        (Value::String(_), Value::String(_))
        | (Value::Number(_), Value::Number(_))
        | (Value::Bool(_), Value::Bool(_))
        | (Value::Null, _) => {}
        (m, r) => errors.push(format!("{path}: mock {m} vs example {r}")),
    }
}

fn check(what: &str, mock: &Value, reference: &Value) {
    let mut errors = Vec::new();
    conforms(mock, reference, "", &mut errors);
    assert!(errors.is_empty(), "{what}: {errors:#?}\nmock: {mock:#}");
}

fn shared() -> Shared {
    let mut inner = Inner {
        page_size: DEFAULT_PAGE_SIZE,
        ratelimit_remaining: 100,
        ..Inner::default()
    };
    inner.cloud.create(
        ScaleSetSpec::uniform("sub", "rg", "web")
            .capacity(2)
            .zones(&["1", "2"])
            .tag("team", "mesh")
            .public_ip()
            .ipv6()
            .health_extension(),
    );
    inner.cloud.create(
        ScaleSetSpec::flexible("sub", "rg", "flex")
            .capacity(2)
            .public_ip()
            .zones(&["3"]),
    );
    inner.cloud.add_standalone("sub", "rg", "lonely");
    if let Some(set) = inner.cloud.sets.get_mut("flex") {
        set.vms[0].tags.insert("role".into(), "edge".into());
    }
    Shared {
        inner: Arc::new(Mutex::new(inner)),
        base: "https://127.0.0.1:1".into(),
    }
}

async fn get(s: &Shared, path_and_query: &str) -> (u16, Value) {
    let request = Request::builder()
        .uri(path_and_query)
        .header("authorization", "Bearer t")
        .body(Body::empty())
        .unwrap();
    let response = handler::handle(State(s.clone()), request).await;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 22)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

const SET: &str =
    "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachineScaleSets";

#[tokio::test]
async fn scale_set_gets_match_the_examples() {
    let s = shared();
    let reference = merge(
        &body_200("vmss-get.json"),
        &body_200("vmss-create-flexible-skuprofile.json"),
    );
    for name in ["web", "flex"] {
        let (status, body) = get(&s, &format!("{SET}/{name}?api-version=2024-11-01")).await;
        assert_eq!(status, 200);
        check(name, &body, &reference);
    }
}

#[tokio::test]
async fn uniform_members_and_their_nics_match_the_examples() {
    let s = shared();
    let (status, page) = get(
        &s,
        &format!("{SET}/web/virtualMachines?api-version=2024-11-01&%24expand=instanceView"),
    )
    .await;
    assert_eq!(status, 200);
    let maximum = body_200("vms-list-maximumset.json");
    let vm_ref = merge(&body_200("vmss-vms-list-uniform.json"), &maximum);
    check("uniform VMs page", &page, &vm_ref);
    assert_eq!(page["value"].as_array().unwrap().len(), 2);
    assert!(page["value"][0]["properties"]["instanceView"]["vmHealth"].is_object());

    let (status, nics) = get(
        &s,
        &format!("{SET}/web/networkInterfaces?api-version=2018-10-01"),
    )
    .await;
    assert_eq!(status, 200);
    let nic_ref = merge(
        &body_200("nic-list-vmss-network-interfaces.json"),
        &serde_json::json!({"value": [body_200("nic-get.json")]}),
    );
    check("uniform NICs page", &nics, &nic_ref);
    // The NIC listing is served at the Network provider's old api-version only.
    let (status, err) = get(
        &s,
        &format!("{SET}/web/networkInterfaces?api-version=2024-11-01"),
    )
    .await;
    assert_eq!(status, 400);
    check_error(&err);
}

#[tokio::test]
async fn flexible_members_and_their_nics_match_the_examples() {
    let s = shared();
    let filter = "%27virtualMachineScaleSet%2Fid%27+eq+%27%2Fsubscriptions%2Fsub%2FresourceGroups%2Frg%2Fproviders%2FMicrosoft.Compute%2FvirtualMachineScaleSets%2Fflex%27";
    let (status, page) = get(
        &s,
        &format!("/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines?api-version=2024-11-01&%24filter={filter}&%24expand=instanceView"),
    )
    .await;
    assert_eq!(status, 200);
    check(
        "flexible VMs page",
        &page,
        &body_200("vms-list-maximumset.json"),
    );
    let items = page["value"].as_array().unwrap();
    assert_eq!(items.len(), 2, "the filter keeps the set's VMs only");
    // Without the filter, the resource group's other VMs come too.
    let (_, all) = get(
        &s,
        "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines?api-version=2024-11-01",
    )
    .await;
    assert_eq!(all["value"].as_array().unwrap().len(), 3);

    let (status, nics) = get(
        &s,
        "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.Network/networkInterfaces?api-version=2024-05-01",
    )
    .await;
    assert_eq!(status, 200);
    check(
        "flexible NICs page",
        &nics,
        &body_200("nic-list-vmss-network-interfaces.json"),
    );
}

/// The single-resource GETs an event's pass makes answer what the lists
/// hold for the same resource, and 404 with ARM's error body when there is
/// none.
#[tokio::test]
async fn single_vm_nic_and_public_ip_gets_answer_as_the_lists_do() {
    let s = shared();
    let rg = "/subscriptions/sub/resourceGroups/rg/providers";
    let (_, vms) = get(
        &s,
        &format!("{SET}/web/virtualMachines?api-version=2024-11-01&%24expand=instanceView"),
    )
    .await;
    let (_, nics) = get(
        &s,
        &format!("{SET}/web/networkInterfaces?api-version=2018-10-01"),
    )
    .await;
    let (_, pips) = get(
        &s,
        &format!("{SET}/web/publicIPAddresses?api-version=2018-10-01"),
    )
    .await;
    let (status, vm) = get(
        &s,
        &format!("{SET}/web/virtualMachines/1?api-version=2024-11-01&%24expand=instanceView"),
    )
    .await;
    assert_eq!((status, &vm), (200, &vms["value"][1]));
    let (status, vm_nics) = get(
        &s,
        &format!("{SET}/web/virtualMachines/1/networkInterfaces?api-version=2018-10-01"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(vm_nics["value"], serde_json::json!([nics["value"][1]]));
    let pip_id = nics["value"][1]["properties"]["ipConfigurations"][0]["properties"]
        ["publicIPAddress"]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, pip) = get(&s, &format!("{pip_id}?api-version=2018-10-01")).await;
    assert_eq!((status, &pip), (200, &pips["value"][1]));

    let (_, flex_vms) = get(
        &s,
        &format!("{rg}/Microsoft.Compute/virtualMachines?api-version=2024-11-01"),
    )
    .await;
    let (_, flex_nics) = get(
        &s,
        &format!("{rg}/Microsoft.Network/networkInterfaces?api-version=2024-05-01"),
    )
    .await;
    let name = flex_vms["value"][0]["name"].as_str().unwrap().to_string();
    let (status, vm) = get(
        &s,
        &format!("{rg}/Microsoft.Compute/virtualMachines/{name}?api-version=2024-11-01"),
    )
    .await;
    assert_eq!((status, &vm), (200, &flex_vms["value"][0]));
    let nic_id = vm["properties"]["networkProfile"]["networkInterfaces"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, nic) = get(&s, &format!("{nic_id}?api-version=2024-05-01")).await;
    assert_eq!((status, &nic), (200, &flex_nics["value"][0]));

    for missing in [
        format!("{SET}/web/virtualMachines/77?api-version=2024-11-01"),
        format!("{SET}/web/virtualMachines/77/networkInterfaces?api-version=2018-10-01"),
        format!("{rg}/Microsoft.Compute/virtualMachines/nobody?api-version=2024-11-01"),
        format!("{rg}/Microsoft.Network/networkInterfaces/nobody-nic?api-version=2024-05-01"),
    ] {
        let (status, body) = get(&s, &missing).await;
        assert_eq!(status, 404, "{missing}");
        check_error(&body);
        assert_eq!(body["error"]["code"], "ResourceNotFound", "{missing}");
    }
}

fn check_error(body: &Value) {
    let subset = fixture("swagger-arm-common-types-v6-errors-subset.json");
    let allowed: Vec<&String> = subset["ErrorDetail"]["properties"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    let error = body["error"]
        .as_object()
        .expect("an ARM error body has `error`");
    assert_eq!(body.as_object().unwrap().len(), 1, "{body}");
    for key in error.keys() {
        assert!(allowed.contains(&key), "{key} is not in ErrorDetail");
    }
    assert!(
        error["code"].is_string() && error["message"].is_string(),
        "{body}"
    );
}

#[tokio::test]
async fn errors_and_throttling_use_arm_error_bodies() {
    let s = shared();
    let (status, body) = get(&s, &format!("{SET}/missing?api-version=2024-11-01")).await;
    assert_eq!(status, 404);
    check_error(&body);
    assert_eq!(body["error"]["code"], "ResourceNotFound");
    let (status, body) = get(&s, &format!("{SET}/web")).await;
    assert_eq!(status, 400);
    check_error(&body);
    s.inner
        .lock()
        .unwrap()
        .faults
        .push_back(super::ArmFault::Throttle {
            retry_after_secs: 7,
        });
    let (status, body) = get(&s, &format!("{SET}/web?api-version=2024-11-01")).await;
    assert_eq!(status, 429);
    check_error(&body);
}

#[tokio::test]
async fn lists_page_through_next_links_on_the_mock_base() {
    let s = shared();
    s.inner.lock().unwrap().page_size = 1;
    let (_, first) = get(
        &s,
        &format!("{SET}/web/virtualMachines?api-version=2024-11-01"),
    )
    .await;
    let next = first["nextLink"].as_str().expect("a nextLink");
    assert!(next.starts_with("https://127.0.0.1:1/"), "{next}");
    let (_, second) = get(&s, next.trim_start_matches("https://127.0.0.1:1")).await;
    assert!(second.get("nextLink").is_none());
    assert_ne!(first["value"][0]["id"], second["value"][0]["id"]);
}

#[test]
fn the_check_catches_invented_fields_and_wrong_types() {
    let reference = serde_json::json!({"a": {"b": "x"}, "l": [{"c": 1}], "tags": {}});
    let mut errors = Vec::new();
    conforms(
        &serde_json::json!({"a": {"b": 1, "z": "?"}, "l": [{"c": 2, "d": true}], "tags": {"free": "form"}}),
        &reference,
        "",
        &mut errors,
    );
    assert_eq!(errors.len(), 3, "{errors:?}");
}
