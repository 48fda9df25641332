//! The service's own identity on the shared control plane: the
//! ServiceAccount, ClusterRole and leader-election Role of `deploy/base`,
//! bound in the test's namespaces, and a token from the TokenRequest API,
//! so the controller a test runs is held to the shipped RBAC.

use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, PostParams};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::realkube::repo_root;

/// Where the shipped Deployment runs, and so where its Role lives.
pub const SERVICE_NAMESPACE: &str = "meshmirror-system";
pub const SERVICE_ACCOUNT: &str = "meshmirror";

/// Sets up the identity through `admin` (a client of the test's proxy, so
/// namespaces are the test's) and returns a token for it. The ClusterRole is
/// shared by the run; the ClusterRoleBinding is the test's own
/// (`<prefix>meshmirror`).
pub async fn service_token(admin: &kube::Client, prefix: &str) -> Result<String, String> {
    let docs = shipped_rbac()?;
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default().to_string();
        let result = match kind.as_str() {
            "ClusterRole" => create(Api::<ClusterRole>::all(admin.clone()), doc).await,
            "ClusterRoleBinding" => {
                let mut doc = doc;
                let name = doc["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                doc["metadata"]["name"] = Value::String(format!("{prefix}{name}"));
                create(Api::<ClusterRoleBinding>::all(admin.clone()), doc).await
            }
            "Role" => {
                create(
                    Api::<Role>::namespaced(admin.clone(), SERVICE_NAMESPACE),
                    doc,
                )
                .await
            }
            "RoleBinding" => {
                create(
                    Api::<RoleBinding>::namespaced(admin.clone(), SERVICE_NAMESPACE),
                    doc,
                )
                .await
            }
            other => Err(format!("deploy/base/rbac.yaml: unexpected kind {other}")),
        };
        result.map_err(|e| format!("{kind}: {e}"))?;
    }
    let sa: Value = serde_json::json!({"metadata": {"name": SERVICE_ACCOUNT}});
    create(
        Api::<ServiceAccount>::namespaced(admin.clone(), SERVICE_NAMESPACE),
        sa,
    )
    .await?;
    let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), SERVICE_NAMESPACE);
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "spec": {"audiences": [], "expirationSeconds": 3600}
    }))
    .map_err(|e| e.to_string())?;
    let token = accounts
        .create_token_request(SERVICE_ACCOUNT, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("TokenRequest for {SERVICE_ACCOUNT}: {e}"))?;
    token
        .status
        .map(|s| s.token)
        .ok_or_else(|| "TokenRequest answered without a token".into())
}

/// Waits (up to 10 s) until the server grants `service` what the shipped
/// RBAC says: the API server's authorizer may lag the bindings just
/// created, and a test must not see its first requests refused.
pub async fn wait_until_granted(service: &kube::Client) -> Result<(), String> {
    let checks = [
        json!({"verb": "list", "group": "networking.istio.io", "resource": "workloadentries"}),
        json!({"verb": "watch", "group": "meshmirror.io", "resource": "scalinggroupmirrors"}),
        json!({"verb": "get", "group": "coordination.k8s.io", "resource": "leases",
               "namespace": SERVICE_NAMESPACE, "name": SERVICE_ACCOUNT}),
    ];
    let api: Api<SelfSubjectAccessReview> = Api::all(service.clone());
    let started = std::time::Instant::now();
    for attributes in checks {
        let review: SelfSubjectAccessReview = serde_json::from_value(json!({
            "spec": {"resourceAttributes": attributes}
        }))
        .map_err(|e| e.to_string())?;
        loop {
            let answer = api
                .create(&PostParams::default(), &review)
                .await
                .map_err(|e| format!("SelfSubjectAccessReview: {e}"))?;
            if answer.status.is_some_and(|s| s.allowed) {
                break;
            }
            if started.elapsed() > std::time::Duration::from_secs(10) {
                return Err(format!(
                    "the shipped RBAC does not grant {attributes} within 10 s"
                ));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

fn shipped_rbac() -> Result<Vec<Value>, String> {
    let path = repo_root().join("deploy/base/rbac.yaml");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut docs = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(&text) {
        let v: Value =
            serde::Deserialize::deserialize(doc).map_err(|e| format!("{}: {e}", path.display()))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    Ok(docs)
}

/// Creates `doc`; one that exists already is fine.
async fn create<K>(api: Api<K>, doc: Value) -> Result<(), String>
where
    K: kube::Resource + Clone + DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let object: K = serde_json::from_value(doc).map_err(|e| e.to_string())?;
    match api.create(&PostParams::default(), &object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}
