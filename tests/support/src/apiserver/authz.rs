//! SelfSubjectAccessReview (authorization.k8s.io/v1), which `kubectl auth
//! can-i` creates: the test kit authorizes everything, so every review is
//! answered `allowed: true`, as a real server answers its admins.

use serde_json::{Value, json};

use super::status::{ApiError, Cause};

pub const GROUP: &str = "authorization.k8s.io";
pub const VERSION: &str = "v1";
pub const PLURAL: &str = "selfsubjectaccessreviews";
const KIND: &str = "SelfSubjectAccessReview";

/// Whether `group`/`version` is this API's.
pub fn serves(group: &str, version: &str) -> bool {
    group == GROUP && version == VERSION
}

/// Discovery's `APIResource` of the review.
pub fn discovery_resources() -> Value {
    json!([{
        "name": PLURAL,
        "singularName": "selfsubjectaccessreview",
        "namespaced": false,
        "kind": KIND,
        "verbs": ["create"],
    }])
}

/// The answer to a created review (the real server answers 201 Created).
pub fn review(mut obj: Value) -> Result<Value, ApiError> {
    let api_version = format!("{GROUP}/{VERSION}");
    if obj["apiVersion"] != api_version.as_str() || obj["kind"] != KIND {
        return Err(ApiError::bad_request(format!(
            "the body must be a {KIND} of {api_version}, not {} {}",
            obj["apiVersion"], obj["kind"]
        )));
    }
    let spec = &obj["spec"];
    let attrs = [
        spec["resourceAttributes"].is_object(),
        spec["nonResourceAttributes"].is_object(),
    ];
    if attrs.iter().filter(|set| **set).count() != 1 {
        // The real server's wording, with its empty kind and name.
        let message = "Invalid value: null: exactly one of nonResourceAttributes or resourceAttributes must be specified";
        let mut e = ApiError::new(
            422,
            "Invalid",
            format!(".{GROUP} \"\" is invalid: spec: {message}"),
        );
        e.group = Some(GROUP.into());
        e.causes = vec![Cause {
            reason: "FieldValueInvalid".into(),
            message: message.into(),
            field: "spec".into(),
        }];
        return Err(e);
    }
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    obj["status"] = json!({"allowed": true});
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_is_allowed() {
        let asked = json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": "demo", "verb": "create",
                "group": "networking.istio.io", "resource": "workloadentries"}}});
        let answer = review(asked.clone()).unwrap();
        assert_eq!(answer["status"], json!({"allowed": true}));
        assert_eq!(answer["spec"], asked["spec"]);
    }

    #[test]
    fn a_review_needs_exactly_one_kind_of_attributes() {
        let e = review(json!({"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {}}))
            .unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(e.causes[0].field, "spec");
        assert_eq!(review(json!({"kind": "Pod"})).unwrap_err().code, 400);
    }
}
