//! Errors as the real API server reports them: `Status` objects with a reason,
//! a code and details.

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};

use super::resources::ResourceDef;

/// One entry of `details.causes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

/// A failed request, rendered as a `Status` object. Boxed: it travels in
/// every `Result` of the request path.
#[derive(Clone, Debug)]
pub struct ApiError(Box<ErrorBody>);

impl std::ops::Deref for ApiError {
    type Target = ErrorBody;
    fn deref(&self) -> &ErrorBody {
        &self.0
    }
}

impl std::ops::DerefMut for ApiError {
    fn deref_mut(&mut self) -> &mut ErrorBody {
        &mut self.0
    }
}

/// The fields of an [`ApiError`].
#[derive(Clone, Debug)]
pub struct ErrorBody {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub name: Option<String>,
    pub group: Option<String>,
    /// `details.kind`: the resource plural for most errors, the Kind for `Invalid`.
    pub kind: Option<String>,
    pub causes: Vec<Cause>,
    /// Seconds, for 429 and 503 (`Retry-After` header and `details.retryAfterSeconds`).
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError(Box::new(ErrorBody {
            code,
            reason,
            message: message.into(),
            name: None,
            group: None,
            kind: None,
            causes: Vec::new(),
            retry_after: None,
        }))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message)
    }

    pub fn not_found_path() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
        )
    }

    fn with_details(mut self, res: &ResourceDef, name: &str) -> Self {
        self.name = Some(name.to_string());
        self.group = Some(res.group.clone());
        self.kind = Some(res.plural.clone());
        self
    }

    pub fn not_found(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{}\" not found", res.group_resource(), name),
        )
        .with_details(res, name)
    }

    pub fn already_exists(res: &ResourceDef, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{}\" already exists", res.group_resource(), name),
        )
        .with_details(res, name)
    }

    /// 409 Conflict with the real server's wording for a failed precondition.
    pub fn conflict(res: &ResourceDef, name: &str, why: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{}\": {}",
                res.group_resource(),
                name,
                why
            ),
        )
        .with_details(res, name)
    }

    pub fn stale(res: &ResourceDef, name: &str) -> Self {
        Self::conflict(
            res,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid: `<Kind>.<group> "<name>" is invalid: <field>: <message>`,
    /// several causes joined inside brackets; a cause repeated word for word
    /// shows once in the message (all of them stay in `details.causes`).
    pub fn invalid(res: &ResourceDef, name: &str, causes: Vec<Cause>) -> Self {
        let mut e = Self::new(
            422,
            "Invalid",
            format!(
                "{} \"{}\" is invalid: {}",
                res.group_kind(),
                name,
                joined(&causes)
            ),
        );
        e.name = Some(name.to_string());
        e.group = Some(res.group.clone());
        e.kind = Some(res.kind.clone());
        e.causes = causes;
        e
    }

    /// 422 Invalid about the request's options (`ListOptions`,
    /// `PatchOptions`, ...): `<Kind>.meta.k8s.io "" is invalid: ...`.
    pub fn invalid_options(kind: &str, causes: Vec<Cause>) -> Self {
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{kind}.meta.k8s.io \"\" is invalid: {}", joined(&causes)),
        );
        e.group = Some("meta.k8s.io".into());
        e.kind = Some(kind.to_string());
        e.causes = causes;
        e
    }

    pub fn to_status(&self) -> Value {
        let mut details = serde_json::Map::new();
        // Empty fields are left out, as Go's `omitempty` does.
        if let Some(n) = self.name.as_ref().filter(|n| !n.is_empty()) {
            details.insert("name".into(), json!(n));
        }
        if let Some(g) = self.group.as_ref().filter(|g| !g.is_empty()) {
            details.insert("group".into(), json!(g));
        }
        if let Some(k) = &self.kind {
            details.insert("kind".into(), json!(k));
        }
        if !self.causes.is_empty() {
            let causes: Vec<Value> = self
                .causes
                .iter()
                .map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field}))
                .collect();
            details.insert("causes".into(), Value::Array(causes));
        }
        if let Some(s) = self.retry_after {
            details.insert("retryAfterSeconds".into(), json!(s));
        }
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if !details.is_empty() {
            status["details"] = Value::Object(details);
        }
        status
    }

    pub fn into_response(self) -> Response {
        let body = serde_json::to_vec(&self.to_status()).unwrap_or_default();
        let mut resp = Response::new(Body::from(body));
        *resp.status_mut() =
            StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        resp
    }
}

/// The causes as the real server's aggregate prints them: one alone, several
/// in brackets; a cause repeated word for word shows once.
fn joined(causes: &[Cause]) -> String {
    let mut parts: Vec<String> = Vec::new();
    for c in causes {
        let part = if c.field.is_empty() {
            c.message.clone()
        } else {
            format!("{}: {}", c.field, c.message)
        };
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    if parts.len() == 1 {
        parts.remove(0)
    } else {
        format!("[{}]", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_joins_several_causes_in_brackets() {
        let res = ResourceDef::test_def();
        let c = |f: &str, m: &str| Cause {
            reason: "FieldValueInvalid".into(),
            message: m.into(),
            field: f.into(),
        };
        let one = ApiError::invalid(&res, "x", vec![c("spec", "Required value")]);
        assert_eq!(
            one.message,
            "Widget.example.com \"x\" is invalid: spec: Required value"
        );
        let two = ApiError::invalid(&res, "x", vec![c("spec.a", "bad"), c("spec.b", "worse")]);
        assert_eq!(
            two.message,
            "Widget.example.com \"x\" is invalid: [spec.a: bad, spec.b: worse]"
        );
        let st = two.to_status();
        assert_eq!(st["code"], 422);
        assert_eq!(st["details"]["kind"], "Widget");
        assert_eq!(st["details"]["causes"][1]["field"], "spec.b");
    }

    #[test]
    fn not_found_names_group_resource() {
        let res = ResourceDef::test_def();
        let st = ApiError::not_found(&res, "w").to_status();
        assert_eq!(st["message"], "widgets.example.com \"w\" not found");
        assert_eq!(st["details"]["kind"], "widgets");
        assert_eq!(st["status"], "Failure");
    }
}
