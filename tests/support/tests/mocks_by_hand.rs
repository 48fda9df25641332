//! The GCE and ARM mocks driven only over HTTP, as by hand: started the way
//! `meshmirror-testkit gce` / `arm` start them (the same library calls, and
//! the binary itself in the last test), changed through the control routes
//! under `/_mock/`, and read back through the cloud APIs they serve.
//!
//! The client is a few lines of HTTP/1.1 over TCP (and rustls for ARM,
//! trusting only the CA file the mock wrote): no Rust driving method of the
//! mocks is called here.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use meshmirror_testkit::arm::{ArmMock, ByHand};
use meshmirror_testkit::gce::GceMock;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::rustls::RootCertStore;
use tokio_rustls::rustls::crypto::aws_lc_rs;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

/// One answer: status, headers (names lowercase), body as JSON (`null` when
/// empty).
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One HTTP/1.1 exchange on a fresh connection (`Connection: close`).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: S,
    authority: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let mut stream = BufReader::new(stream);
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    stream.flush().await.unwrap();

    let mut status_line = String::new();
    stream.read_line(&mut status_line).await.unwrap();
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("status line {status_line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (k, v) = line.split_once(':').unwrap();
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut bytes = Vec::new();
    if let Some(len) = find("content-length") {
        bytes.resize(len.parse().unwrap(), 0);
        stream.read_exact(&mut bytes).await.unwrap();
    } else if find("transfer-encoding").as_deref() == Some("chunked") {
        loop {
            let mut size = String::new();
            stream.read_line(&mut size).await.unwrap();
            let size = usize::from_str_radix(size.trim(), 16).unwrap();
            let mut chunk = vec![0; size + 2];
            stream.read_exact(&mut chunk).await.unwrap();
            if size == 0 {
                break;
            }
            bytes.extend_from_slice(&chunk[..size]);
        }
    }
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}: {}", String::from_utf8_lossy(&bytes)))
    };
    Answer {
        status,
        headers,
        body,
    }
}

/// Plain HTTP to `endpoint` (`http://HOST:PORT`).
struct Http {
    authority: String,
}

impl Http {
    fn new(endpoint: &str) -> Http {
        Http {
            authority: endpoint.strip_prefix("http://").unwrap().to_string(),
        }
    }

    async fn call(&self, method: &str, path: &str, body: Value) -> Answer {
        let tcp = TcpStream::connect(&self.authority).await.unwrap();
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        exchange(tcp, &self.authority, method, path, &[], &body).await
    }
}

/// HTTPS to `endpoint`, trusting only the PEM file at `ca_file`.
struct Https {
    authority: String,
    connector: TlsConnector,
}

impl Https {
    fn new(endpoint: &str, ca_file: &Path) -> Https {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_file_iter(ca_file).unwrap() {
            roots.add(cert.unwrap()).unwrap();
        }
        let config = ClientConfig::builder_with_provider(Arc::new(aws_lc_rs::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Https {
            authority: endpoint.strip_prefix("https://").unwrap().to_string(),
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        let tcp = TcpStream::connect(&self.authority).await.unwrap();
        let host = self.authority.rsplit_once(':').unwrap().0.to_string();
        let name = ServerName::try_from(host).unwrap();
        let tls = self.connector.connect(name, tcp).await.unwrap();
        exchange(tls, &self.authority, method, path, headers, body).await
    }

    /// A control route (no token).
    async fn control(&self, method: &str, path: &str, body: Value) -> Answer {
        let body = if body.is_null() {
            String::new()
        } else {
            body.to_string()
        };
        self.send(method, path, &[], &body).await
    }

    /// An ARM call with a bearer token.
    async fn arm(&self, token: &str, path: &str) -> Answer {
        let bearer = format!("Bearer {token}");
        self.send("GET", path, &[("Authorization", &bearer)], "")
            .await
    }

    async fn token(&self, tenant: &str, form: &str) -> Answer {
        self.send(
            "POST",
            &format!("/{tenant}/oauth2/v2.0/token"),
            &[("Content-Type", "application/x-www-form-urlencoded")],
            form,
        )
        .await
    }
}

fn names(items: &Value, key: &str) -> Vec<String> {
    items
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {items}"))
        .iter()
        .map(|i| i[key].as_str().unwrap().to_string())
        .collect()
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "meshmirror-{what}-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const MIG: &str = "/compute/v1/projects/proj-1/zones/us-central1-a/instanceGroupManagers/web";
const CONTROL_MIG: &str = "/_mock/projects/proj-1/zones/us-central1-a/groups/web";

#[tokio::test]
async fn gce_mock_is_driven_over_http_control_routes() {
    let mock = GceMock::start_at(SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let banner = mock.by_hand_banner();
    // What a user reads: the endpoint, and the flag for meshmirror.
    let endpoint = banner
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("GCE mock (Compute Engine v1) listening on "))
        .unwrap()
        .to_string();
    assert_eq!(endpoint, format!("http://127.0.0.1:{}", mock.addr().port()));
    assert_ne!(mock.addr().port(), 0);
    assert_eq!(
        banner,
        format!(
            "GCE mock (Compute Engine v1) listening on {endpoint}\n\
             control routes: {endpoint}/_mock/ (GET it for the list)\n\
             meshmirror flags: --gcp-endpoint {endpoint}\n"
        )
    );
    let http = Http::new(&endpoint);

    let routes = http.call("GET", "/_mock/", Value::Null).await;
    assert_eq!(routes.status, 200);
    assert_eq!(routes.body["routes"].as_array().unwrap().len(), 18);
    assert_eq!(routes.body["routes"][0]["route"], "GET /_mock/");

    // Create a zonal group of 2.
    let created = http
        .call(
            "POST",
            "/_mock/projects/proj-1/zones/us-central1-a/groups",
            json!({"name": "web", "size": 2, "template": {"labels": {"team": "blue"}, "health": "HEALTHY"}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(
        names(&created.body["instances"], "name"),
        ["web-agd9", "web-amh9"]
    );
    assert_eq!(created.body["zone"], "us-central1-a");
    assert_eq!(created.body["targetSize"], 2);
    assert_eq!(
        created.body["selfLink"],
        format!("{endpoint}{MIG}"),
        "links name the endpoint"
    );
    assert_eq!(created.body["instances"][0]["networkIP"], "10.128.0.1");

    let list_path = format!("{MIG}/listManagedInstances");
    let list = || http.call("POST", &list_path, Value::Null);
    let listed = list().await;
    assert_eq!(listed.status, 200);
    let managed = &listed.body["managedInstances"];
    assert_eq!(names(managed, "name"), ["web-agd9", "web-amh9"]);
    assert_eq!(managed[0]["instanceStatus"], "RUNNING");
    assert_eq!(managed[0]["currentAction"], "NONE");
    assert_eq!(
        managed[0]["instanceHealth"][0]["detailedHealthState"],
        "HEALTHY"
    );

    // Scale out by one, then in to one: the surplus is DELETING until settled.
    let out = http
        .call("POST", &format!("{CONTROL_MIG}/resize"), json!({"by": 1}))
        .await;
    assert_eq!(out.status, 200);
    assert_eq!(out.body["changed"], json!(["web-asl9"]));
    assert_eq!(
        names(&list().await.body["managedInstances"], "name"),
        ["web-agd9", "web-amh9", "web-asl9"]
    );
    let inward = http
        .call("POST", &format!("{CONTROL_MIG}/resize"), json!({"size": 1}))
        .await;
    assert_eq!(inward.body["changed"], json!(["web-amh9", "web-asl9"]));
    let actions: Vec<Value> = list().await.body["managedInstances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["currentAction"].clone())
        .collect();
    assert_eq!(
        actions,
        [json!("NONE"), json!("DELETING"), json!("DELETING")]
    );
    let manager = http.call("GET", MIG, Value::Null).await;
    assert_eq!(manager.body["targetSize"], 1);
    assert_eq!(manager.body["currentActions"]["deleting"], 2);
    assert_eq!(
        http.call("POST", "/_mock/settle", Value::Null).await.body,
        json!({})
    );
    assert_eq!(
        names(&list().await.body["managedInstances"], "name"),
        ["web-agd9"]
    );

    // An instance's state, health and labels.
    let patched = http
        .call(
            "PATCH",
            "/_mock/instances/web-agd9",
            json!({"status": "STOPPING", "health": "UNHEALTHY", "labels": {"team": "red"}}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["status"], "STOPPING");
    assert_eq!(patched.body["health"], "UNHEALTHY");
    let managed = list().await.body["managedInstances"][0].clone();
    assert_eq!(managed["instanceStatus"], "STOPPING");
    assert_eq!(
        managed["instanceHealth"][0]["detailedHealthState"],
        "UNHEALTHY"
    );
    let instance = http
        .call(
            "GET",
            "/compute/v1/projects/proj-1/zones/us-central1-a/instances/web-agd9",
            Value::Null,
        )
        .await;
    assert_eq!(instance.body["status"], "STOPPING");
    assert_eq!(instance.body["labels"], json!({"team": "red"}));
    http.call(
        "PATCH",
        "/_mock/instances/web-agd9",
        json!({"status": "RUNNING", "health": null}),
    )
    .await;
    let managed = list().await.body["managedInstances"][0].clone();
    assert_eq!(managed["instanceStatus"], "RUNNING");
    assert_eq!(managed.get("instanceHealth"), None);
    // Still being created: listed without id or status, no instance yet.
    http.call(
        "PATCH",
        "/_mock/instances/web-agd9",
        json!({"provisioned": false}),
    )
    .await;
    let managed = list().await.body["managedInstances"][0].clone();
    assert_eq!(managed["currentAction"], "CREATING");
    assert_eq!(managed.get("instanceStatus"), None);
    assert_eq!(managed.get("id"), None);
    assert_eq!(
        http.call(
            "GET",
            "/compute/v1/projects/proj-1/zones/us-central1-a/instances/web-agd9",
            Value::Null
        )
        .await
        .status,
        404
    );
    http.call("POST", "/_mock/settle", Value::Null).await;
    assert_eq!(
        list().await.body["managedInstances"][0]["currentAction"],
        "NONE"
    );

    // A regional group spreads over its zones.
    let regional = http
        .call(
            "POST",
            "/_mock/projects/proj-1/regions/us-east1/groups",
            json!({"name": "api", "zones": ["us-east1-b", "us-east1-c"], "size": 4}),
        )
        .await;
    assert_eq!(regional.status, 201, "{}", regional.body);
    assert_eq!(regional.body["region"], "us-east1");
    let zones: Vec<String> = regional.body["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["zone"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        zones,
        ["us-east1-b", "us-east1-b", "us-east1-c", "us-east1-c"]
    );
    let api = http
        .call(
            "POST",
            "/compute/v1/projects/proj-1/regions/us-east1/instanceGroupManagers/api/listManagedInstances",
            Value::Null,
        )
        .await;
    assert_eq!(api.body["managedInstances"].as_array().unwrap().len(), 4);
    let api_names = names(&api.body["managedInstances"], "name");
    let doomed = api_names[0].clone();
    let deleted = http
        .call(
            "POST",
            "/_mock/projects/proj-1/regions/us-east1/groups/api/delete-instances",
            json!({"instances": [doomed]}),
        )
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.body["targetSize"], 3);
    assert_eq!(deleted.body["instances"][0]["action"], "DELETING");

    // A VM no group manages, and a zone with none.
    let jumpbox = http
        .call(
            "POST",
            "/_mock/projects/proj-1/zones/us-west1-a/instances",
            json!({"name": "jumpbox", "template": {"publicIp": true}}),
        )
        .await;
    assert_eq!(jumpbox.status, 201);
    assert_eq!(jumpbox.body["group"], Value::Null);
    assert_eq!(jumpbox.body["natIP"], "34.1.0.8");
    assert_eq!(
        http.call(
            "PUT",
            "/_mock/projects/proj-1/zones/europe-west1-b",
            Value::Null
        )
        .await
        .status,
        200
    );
    let aggregated = http
        .call(
            "GET",
            "/compute/v1/projects/proj-1/aggregated/instances",
            Value::Null,
        )
        .await;
    let scopes: Vec<&String> = aggregated.body["items"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(
        scopes,
        [
            "zones/europe-west1-b",
            "zones/us-central1-a",
            "zones/us-east1-b",
            "zones/us-east1-c",
            "zones/us-west1-a"
        ]
    );
    assert_eq!(
        aggregated.body["items"]["zones/europe-west1-b"]["warning"]["code"],
        "NO_RESULTS_ON_PAGE"
    );
    assert_eq!(
        names(
            &aggregated.body["items"]["zones/us-west1-a"]["instances"],
            "name"
        ),
        ["jumpbox"]
    );
    let groups = http.call("GET", "/_mock/groups", Value::Null).await;
    assert_eq!(
        groups.body["groups"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| (g["name"].clone(), g["targetSize"].clone()))
            .collect::<Vec<_>>(),
        [(json!("web"), json!(1)), (json!("api"), json!(3))]
    );

    // Faults, page size, counts.
    let faults = http
        .call(
            "POST",
            "/_mock/faults",
            json!({"fault": "tooManyRequests", "count": 2}),
        )
        .await;
    assert_eq!(faults.body, json!({"pending": 2}));
    for _ in 0..2 {
        let limited = list().await;
        assert_eq!(limited.status, 429);
        assert_eq!(limited.header("retry-after"), Some("1"));
        assert_eq!(limited.body["error"]["status"], "RESOURCE_EXHAUSTED");
    }
    http.call(
        "POST",
        "/_mock/faults",
        json!({"fault": "serverError", "code": 502}),
    )
    .await;
    assert_eq!(list().await.status, 502);
    assert_eq!(list().await.status, 200);
    http.call("POST", "/_mock/faults", json!({"fault": "serverError"}))
        .await;
    assert_eq!(
        http.call("DELETE", "/_mock/faults", Value::Null).await.body,
        json!({"pending": 0})
    );
    assert_eq!(list().await.status, 200);
    assert_eq!(
        http.call("PUT", "/_mock/max-page-size", json!({"size": 1}))
            .await
            .body,
        json!({"size": 1})
    );
    let paged = http
        .call(
            "POST",
            "/compute/v1/projects/proj-1/regions/us-east1/instanceGroupManagers/api/listManagedInstances",
            Value::Null,
        )
        .await;
    assert_eq!(paged.body["managedInstances"].as_array().unwrap().len(), 1);
    assert_eq!(paged.body["nextPageToken"], "offset-1");
    http.call("DELETE", "/_mock/counts", Value::Null).await;
    list().await;
    http.call("GET", MIG, Value::Null).await;
    list().await;
    let counts = http.call("GET", "/_mock/counts", Value::Null).await;
    assert_eq!(
        counts.body,
        json!({"total": 3, "byMethod": {
            "instanceGroupManagers.get": 1,
            "instanceGroupManagers.listManagedInstances": 2,
        }})
    );
    let requests = http.call("GET", "/_mock/requests", Value::Null).await;
    assert_eq!(requests.body["requests"][1]["path"], MIG);
    assert_eq!(requests.body["requests"][1]["method"], "GET");

    // Refusals.
    let missing = http
        .call(
            "POST",
            "/_mock/projects/proj-1/zones/us-central1-a/groups/nope/resize",
            json!({"size": 3}),
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.body["error"]["message"],
        "no group projects/proj-1/zones/us-central1-a/instanceGroupManagers/nope"
    );
    let again = http
        .call(
            "POST",
            "/_mock/projects/proj-1/zones/us-central1-a/groups",
            json!({"name": "web"}),
        )
        .await;
    assert_eq!(again.status, 409);
    let no_zones = http
        .call(
            "POST",
            "/_mock/projects/proj-1/regions/us-east1/groups",
            json!({"name": "zoneless"}),
        )
        .await;
    assert_eq!(no_zones.status, 400);
    let lowercase = http
        .call(
            "PATCH",
            "/_mock/instances/web-agd9",
            json!({"status": "running"}),
        )
        .await;
    assert_eq!(lowercase.status, 400);
    assert_eq!(
        http.call(
            "PATCH",
            "/_mock/instances/nope",
            json!({"status": "RUNNING"})
        )
        .await
        .body["error"]["message"],
        "no VM named nope"
    );
    let both = http
        .call(
            "POST",
            &format!("{CONTROL_MIG}/resize"),
            json!({"size": 1, "by": 1}),
        )
        .await;
    assert_eq!(both.status, 400);
    let typo = http
        .call("POST", &format!("{CONTROL_MIG}/resize"), json!({"sise": 1}))
        .await;
    assert_eq!(typo.status, 400);
    assert_eq!(
        http.call("GET", "/_mock/nowhere", Value::Null).await.body["error"]["message"],
        "no control route GET /_mock/nowhere; GET /_mock/ lists them"
    );
    // None of the refusals or control calls was an API call.
    assert_eq!(
        http.call("GET", "/_mock/counts", Value::Null).await.body["total"],
        3
    );
}

const SUB: &str = "6e0c1b1e-0000-4000-8000-000000000001";
const RG: &str = "mesh-rg";
const TENANT: &str = "72f988bf-0000-4000-8000-000000000002";
const CLIENT: &str = "0c5e0b2a-0000-4000-8000-000000000003";
const API: &str = "api-version=2024-11-01";

fn vmss(set: &str) -> String {
    format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachineScaleSets/{set}"
    )
}

/// `PowerState/...` and `HealthState/...` of each listed VM.
fn states(value: &Value) -> Vec<(String, String, Option<String>)> {
    value["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| {
            let view = &vm["properties"]["instanceView"];
            let power = view["statuses"]
                .as_array()
                .unwrap()
                .iter()
                .find_map(|s| s["code"].as_str().filter(|c| c.starts_with("PowerState/")))
                .unwrap()
                .to_string();
            let health = view["vmHealth"]["status"]["code"]
                .as_str()
                .map(str::to_string);
            (vm["name"].as_str().unwrap().to_string(), power, health)
        })
        .collect()
}

#[tokio::test]
async fn arm_mock_is_driven_over_https_control_routes() {
    let dir = TempDir::new("arm-by-hand");
    let by_hand = ByHand {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        ca_file: dir.0.join("certs/ca.pem"),
        tenant_id: TENANT.into(),
        client_id: CLIENT.into(),
        client_secret: "by-hand-secret".into(),
    };
    let mock = ArmMock::start_by_hand(&by_hand).await.unwrap();
    let flags = mock.by_hand_flags(&by_hand);
    let endpoint = flags[1].clone();
    assert_eq!(
        endpoint,
        format!("https://127.0.0.1:{}", mock.addr().port())
    );
    let ca_file = dir.0.join("certs/ca.pem");
    assert_eq!(
        flags,
        [
            "--azure-endpoint",
            &endpoint,
            "--azure-authority-host",
            &endpoint,
            "--azure-ca-file",
            ca_file.to_str().unwrap(),
            "--azure-credential",
            "client-secret",
            "--azure-tenant-id",
            TENANT,
            "--azure-client-id",
            CLIENT,
        ]
    );
    let banner = mock.by_hand_banner(&by_hand);
    assert_eq!(
        banner.lines().last(),
        Some("and in the environment: AZURE_CLIENT_SECRET=by-hand-secret")
    );
    assert!(banner.contains(&format!("meshmirror flags: {}\n", flags.join(" "))));
    let https = Https::new(&endpoint, &ca_file);

    // The control routes need no token; ARM does.
    let routes = https.control("GET", "/_mock/", Value::Null).await;
    assert_eq!(routes.status, 200);
    assert_eq!(routes.body["routes"].as_array().unwrap().len(), 17);
    let form = format!(
        "grant_type=client_credentials&client_id={CLIENT}&client_secret=by-hand-secret&scope={}%2F.default",
        endpoint.replace(':', "%3A").replace('/', "%2F")
    );
    let token = https.token(TENANT, &form).await;
    assert_eq!(token.status, 200, "{}", token.body);
    let token = token.body["access_token"].as_str().unwrap().to_string();
    let wrong = https
        .token(TENANT, &form.replace("by-hand-secret", "guess"))
        .await;
    assert_eq!(wrong.status, 401);

    // A Uniform scale set of 2 with the health extension, over two zones.
    let created = https
        .control(
            "POST",
            "/_mock/scale-sets",
            json!({"subscription": SUB, "resourceGroup": RG, "name": "web", "capacity": 2,
                   "zones": ["1", "2"], "healthExtension": true, "tags": {"team": "blue"}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["mode"], "Uniform");
    assert_eq!(names(&created.body["vms"], "name"), ["web_0", "web_1"]);
    assert_eq!(created.body["vms"][1]["zone"], "2");
    assert_eq!(
        created.body["vms"][0]["id"],
        format!("{}/virtualMachines/0", vmss("web"))
    );
    let vms_path = format!("{}/virtualMachines?{API}&$expand=instanceView", vmss("web"));
    let listed = https.arm(&token, &vms_path).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(
        states(&listed.body),
        [
            (
                "web_0".into(),
                "PowerState/running".into(),
                Some("HealthState/healthy".into())
            ),
            (
                "web_1".into(),
                "PowerState/running".into(),
                Some("HealthState/healthy".into())
            ),
        ]
    );

    // Scale out by 2, then in to 1 (the newest go at once).
    let out = https
        .control("POST", "/_mock/scale-sets/web/scale", json!({"by": 2}))
        .await;
    assert_eq!(out.body["capacity"], 4);
    assert_eq!(
        names(&https.arm(&token, &vms_path).await.body["value"], "name"),
        ["web_0", "web_1", "web_2", "web_3"]
    );
    https
        .control(
            "POST",
            "/_mock/scale-sets/web/scale",
            json!({"capacity": 1}),
        )
        .await;
    assert_eq!(
        names(&https.arm(&token, &vms_path).await.body["value"], "name"),
        ["web_0"]
    );
    let set = https.arm(&token, &format!("{}?{API}", vmss("web"))).await;
    assert_eq!(set.body["sku"]["capacity"], 1);
    assert_eq!(set.body["tags"], json!({"team": "blue"}));

    // One VM's power state and health.
    let patched = https
        .control(
            "PATCH",
            "/_mock/scale-sets/web/vms/web_0",
            json!({"powerState": "deallocated", "health": "unhealthy"}),
        )
        .await;
    assert_eq!(patched.status, 200, "{}", patched.body);
    assert_eq!(patched.body["powerState"], "deallocated");
    assert_eq!(
        states(&https.arm(&token, &vms_path).await.body),
        [(
            "web_0".into(),
            "PowerState/deallocated".into(),
            Some("HealthState/unhealthy".into())
        )]
    );
    https
        .control(
            "PATCH",
            "/_mock/scale-sets/web/vms/web_0",
            json!({"powerState": "running", "health": null}),
        )
        .await;
    assert_eq!(
        states(&https.arm(&token, &vms_path).await.body),
        [("web_0".into(), "PowerState/running".into(), None)]
    );

    // A Flexible set still launching; one VM deleted; settled.
    let flex = https
        .control(
            "POST",
            "/_mock/scale-sets",
            json!({"subscription": SUB, "resourceGroup": RG, "name": "flex", "mode": "flexible",
                   "capacity": 2, "launch": "creating", "publicIp": true}),
        )
        .await;
    assert_eq!(flex.status, 201, "{}", flex.body);
    let flex_names = names(&flex.body["vms"], "name");
    assert_eq!(flex_names, ["flex_1715609d", "flex_b54cda56"]);
    let filter = format!(
        "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines?{API}&$expand=instanceView&$filter=%27virtualMachineScaleSet%2Fid%27%20eq%20%27{}%27",
        vmss("flex").replace('/', "%2F")
    );
    let provisioning = |v: &Value| -> Vec<String> {
        v["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|vm| {
                vm["properties"]["provisioningState"]
                    .as_str()
                    .unwrap()
                    .to_string()
            })
            .collect()
    };
    let listed = https.arm(&token, &filter).await;
    assert_eq!(listed.status, 200, "{}", listed.body);
    assert_eq!(provisioning(&listed.body), ["Creating", "Creating"]);
    let deleted = https
        .control(
            "DELETE",
            "/_mock/scale-sets/flex/vms/flex_1715609d",
            Value::Null,
        )
        .await;
    assert_eq!(deleted.body["provisioningState"], "Deleting");
    assert_eq!(
        provisioning(&https.arm(&token, &filter).await.body),
        ["Deleting", "Creating"]
    );
    https.control("POST", "/_mock/settle", Value::Null).await;
    let settled = https.arm(&token, &filter).await;
    assert_eq!(names(&settled.body["value"], "name"), ["flex_b54cda56"]);
    assert_eq!(
        states(&settled.body),
        [("flex_b54cda56".into(), "PowerState/running".into(), None)]
    );
    let pips = https
        .arm(
            &token,
            &format!(
                "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Network/publicIPAddresses?api-version=2024-05-01"
            ),
        )
        .await;
    assert_eq!(pips.body["value"][0]["properties"]["ipAddress"], "20.0.0.9");

    // A VM in no scale set shows in the resource group's unfiltered list.
    let standalone = https
        .control(
            "POST",
            "/_mock/standalone-vms",
            json!({"subscription": SUB, "resourceGroup": RG, "name": "jumpbox"}),
        )
        .await;
    assert_eq!(standalone.status, 201);
    let all = https
        .arm(
            &token,
            &format!(
                "/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.Compute/virtualMachines?{API}"
            ),
        )
        .await;
    assert_eq!(
        names(&all.body["value"], "name"),
        ["flex_b54cda56", "jumpbox"]
    );
    let sets = https.control("GET", "/_mock/scale-sets", Value::Null).await;
    assert_eq!(
        sets.body["scaleSets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["name"].clone(), s["mode"].clone(), s["capacity"].clone()))
            .collect::<Vec<_>>(),
        [
            (json!("flex"), json!("Flexible"), json!(1)),
            (json!("web"), json!("Uniform"), json!(1)),
        ]
    );

    // Faults, page size, request counts.
    let queued = https
        .control(
            "POST",
            "/_mock/faults",
            json!({"throttle": {"retryAfterSecs": 7}}),
        )
        .await;
    assert_eq!(queued.body, json!({"pending": 1}));
    https
        .control(
            "POST",
            "/_mock/faults",
            json!({"status": 403, "code": "AuthorizationFailed", "message": "no read"}),
        )
        .await;
    let throttled = https.arm(&token, &vms_path).await;
    assert_eq!(throttled.status, 429);
    assert_eq!(throttled.header("retry-after"), Some("7"));
    let denied = https.arm(&token, &vms_path).await;
    assert_eq!(denied.status, 403);
    assert_eq!(
        denied.body,
        json!({"error": {"code": "AuthorizationFailed", "message": "no read", "details": []}})
    );
    assert_eq!(https.arm(&token, &vms_path).await.status, 200);
    https
        .control(
            "POST",
            "/_mock/faults",
            json!({"throttle": {"retryAfterSecs": 1}, "count": 3}),
        )
        .await;
    assert_eq!(
        https
            .control("DELETE", "/_mock/faults", Value::Null)
            .await
            .body,
        json!({"pending": 0})
    );
    https
        .control(
            "POST",
            "/_mock/scale-sets/web/scale",
            json!({"capacity": 3}),
        )
        .await;
    assert_eq!(
        https
            .control("PUT", "/_mock/page-size", json!({"size": 2}))
            .await
            .body,
        json!({"size": 2})
    );
    let page = https.arm(&token, &vms_path).await;
    assert_eq!(names(&page.body["value"], "name"), ["web_0", "web_4"]);
    assert!(
        page.body["nextLink"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{endpoint}{}/virtualMachines?", vmss("web"))),
        "{}",
        page.body["nextLink"]
    );
    https
        .control("DELETE", "/_mock/requests", Value::Null)
        .await;
    https.arm(&token, &vms_path).await;
    https.arm(&token, &format!("{}?{API}", vmss("web"))).await;
    assert_eq!(
        https
            .control("GET", "/_mock/requests", Value::Null)
            .await
            .body,
        json!({"arm": 2, "byOperation": {"vmss.get": 1, "vmss.vms.list": 1}})
    );

    // Workload identity, and only issued tokens accepted.
    let registered = https
        .control(
            "POST",
            "/_mock/clients",
            json!({"tenantId": TENANT, "clientId": "fed-client", "federatedToken": "projected-sa-token"}),
        )
        .await;
    assert_eq!(registered.status, 201);
    let federated = https
        .token(
            TENANT,
            &format!(
                "grant_type=client_credentials&client_id=fed-client&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion=projected-sa-token&scope={}%2F.default",
                endpoint.replace(':', "%3A").replace('/', "%2F")
            ),
        )
        .await;
    assert_eq!(federated.status, 200, "{}", federated.body);
    let grants = https
        .control("GET", "/_mock/token-grants", Value::Null)
        .await;
    assert_eq!(
        grants.body["grants"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| (g["clientId"].clone(), g["grant"].clone()))
            .collect::<Vec<_>>(),
        [
            (json!(CLIENT), json!("clientSecret")),
            (json!("fed-client"), json!("federated")),
        ]
    );
    assert_eq!(
        grants.body["grants"][0]["scope"],
        format!("{endpoint}/.default")
    );
    https
        .control("PUT", "/_mock/require-issued-tokens", json!({"on": true}))
        .await;
    assert_eq!(https.arm("made-up", &vms_path).await.status, 401);
    assert_eq!(https.arm(&token, &vms_path).await.status, 200);

    // Refusals.
    let missing = https
        .control(
            "POST",
            "/_mock/scale-sets/nope/scale",
            json!({"capacity": 1}),
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.body["error"]["message"], "no scale set nope");
    let no_vm = https
        .control(
            "PATCH",
            "/_mock/scale-sets/web/vms/web_9",
            json!({"powerState": "stopped"}),
        )
        .await;
    assert_eq!(no_vm.status, 404);
    assert_eq!(no_vm.body["error"]["message"], "no VM web_9 in web");
    let again = https
        .control(
            "POST",
            "/_mock/scale-sets",
            json!({"subscription": SUB, "resourceGroup": RG, "name": "web"}),
        )
        .await;
    assert_eq!(again.status, 409);
    let bad_state = https
        .control(
            "PATCH",
            "/_mock/scale-sets/web/vms/web_0",
            json!({"powerState": "Running"}),
        )
        .await;
    assert_eq!(bad_state.status, 400);
    let bad_json = https.send("POST", "/_mock/scale-sets", &[], "{").await;
    assert_eq!(bad_json.status, 400);
}

/// The binary, its stdout read line by line on a thread.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(args: &[&str]) -> Running {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_meshmirror-testkit"))
            .args(args)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    /// The first `n` lines of stdout: the banner.
    fn banner(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.lines
                    .recv_timeout(Duration::from_secs(30))
                    .unwrap_or_else(|e| panic!("banner line {i}: {e}"))
            })
            .collect()
    }

    /// SIGTERM (to this child, by its pid), then its exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let started = std::time::Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "still running 30 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

#[tokio::test]
async fn the_binary_serves_each_mock_until_sigterm() {
    let mut gce = Running::start(&["gce", "--listen", "127.0.0.1:0"]);
    let lines = gce.banner(3);
    let endpoint = lines[0]
        .strip_prefix("GCE mock (Compute Engine v1) listening on ")
        .unwrap()
        .to_string();
    assert_eq!(
        lines[2],
        format!("meshmirror flags: --gcp-endpoint {endpoint}")
    );
    let http = Http::new(&endpoint);
    let created = http
        .call(
            "POST",
            "/_mock/projects/p/zones/europe-west4-a/groups",
            json!({"name": "web", "size": 1}),
        )
        .await;
    assert_eq!(created.status, 201);
    let listed = http
        .call(
            "POST",
            "/compute/v1/projects/p/zones/europe-west4-a/instanceGroupManagers/web/listManagedInstances",
            Value::Null,
        )
        .await;
    assert_eq!(
        names(&listed.body["managedInstances"], "name"),
        ["web-agd9"]
    );
    assert!(gce.terminate().success());

    // Default CA file: in the temporary directory, removed at exit.
    let mut arm = Running::start(&["arm", "--tenant-id", TENANT]);
    let lines = arm.banner(5);
    let endpoint = lines[0]
        .strip_prefix("ARM mock (and Entra ID token endpoint) listening on ")
        .unwrap()
        .to_string();
    let ca_file = PathBuf::from(lines[1].strip_prefix("CA certificate: ").unwrap());
    assert_eq!(
        ca_file,
        std::env::temp_dir()
            .join(format!("meshmirror-testkit-arm-{}", arm.child.id()))
            .join("ca.pem")
    );
    assert_eq!(
        lines[3],
        format!(
            "meshmirror flags: --azure-endpoint {endpoint} --azure-authority-host {endpoint} --azure-ca-file {} --azure-credential client-secret --azure-tenant-id {TENANT} --azure-client-id 22222222-2222-4222-8222-222222222222",
            ca_file.display()
        )
    );
    assert_eq!(
        lines[4],
        "and in the environment: AZURE_CLIENT_SECRET=mock-client-secret"
    );
    let https = Https::new(&endpoint, &ca_file);
    let token = https
        .token(
            TENANT,
            &format!(
                "grant_type=client_credentials&client_id=22222222-2222-4222-8222-222222222222&client_secret=mock-client-secret&scope={}%2F.default",
                endpoint.replace(':', "%3A").replace('/', "%2F")
            ),
        )
        .await;
    assert_eq!(token.status, 200, "{}", token.body);
    let token = token.body["access_token"].as_str().unwrap().to_string();
    let created = https
        .control(
            "POST",
            "/_mock/scale-sets",
            json!({"subscription": SUB, "resourceGroup": RG, "name": "web", "capacity": 1}),
        )
        .await;
    assert_eq!(created.status, 201);
    let listed = https
        .arm(
            &token,
            &format!("{}/virtualMachines?{API}&$expand=instanceView", vmss("web")),
        )
        .await;
    assert_eq!(
        states(&listed.body),
        [("web_0".into(), "PowerState/running".into(), None)]
    );
    assert!(arm.terminate().success());
    assert!(!ca_file.exists(), "{} left behind", ca_file.display());
    assert!(!ca_file.parent().unwrap().exists());
}
