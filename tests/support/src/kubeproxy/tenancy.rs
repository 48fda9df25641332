//! One test's namespaces on a control plane shared by the whole test run.
//!
//! Tests name their namespaces plainly (`default`, `team-a`); on the shared
//! server each test's proxy stores them as `<prefix><name>`, so two tests
//! running at once never see each other's objects. Requests gain the prefix
//! (paths, field selectors, every `namespace` field of a body, a Namespace's
//! own name); answers lose it, and lists and watches across all namespaces
//! keep only this test's objects.

use serde_json::Value;

/// Field selectors whose value is a namespace's name.
const NAMESPACE_FIELDS: [&str; 3] = [
    "metadata.namespace",
    "involvedObject.namespace",
    "regarding.namespace",
];

/// Where a request body names a namespace (JSON pointers); RoleBinding
/// `subjects[]` too.
const NAMESPACE_PATHS: [&str; 5] = [
    "/metadata/namespace",
    "/involvedObject/namespace",
    "/regarding/namespace",
    "/related/namespace",
    "/spec/resourceAttributes/namespace",
];

/// A test's namespace prefix: lower-case letters and digits, then `-`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tenancy {
    prefix: String,
}

impl Tenancy {
    /// `id` must be a short DNS label (letters and digits).
    pub fn new(id: &str) -> Tenancy {
        Tenancy {
            prefix: format!("{id}-"),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The server's name for the test's namespace `ns`.
    pub fn to_server(&self, ns: &str) -> String {
        if ns.is_empty() || ns.starts_with(&self.prefix) {
            ns.to_string()
        } else {
            format!("{}{ns}", self.prefix)
        }
    }

    /// Whether the server's namespace `ns` is one of this test's.
    pub fn owns(&self, ns: &str) -> bool {
        ns.starts_with(&self.prefix)
    }

    /// The path with the namespace segment (`.../namespaces/<ns>...`) prefixed.
    pub fn path(&self, path: &str) -> String {
        let segs: Vec<&str> = path.split('/').collect();
        // "", "api", "v1", "namespaces", ns  or  "", "apis", g, v, "namespaces", ns
        let at = match segs.get(1) {
            Some(&"api") => 3,
            Some(&"apis") => 4,
            _ => return path.to_string(),
        };
        if segs.get(at) != Some(&"namespaces") || segs.len() <= at + 1 {
            return path.to_string();
        }
        let mut out: Vec<String> = segs.iter().map(|s| s.to_string()).collect();
        out[at + 1] = self.to_server(segs[at + 1]);
        out.join("/")
    }

    /// A `fieldSelector` with namespace values prefixed (and, for
    /// Namespaces themselves, `metadata.name`).
    pub fn field_selector(&self, selector: &str, namespaces: bool) -> String {
        selector
            .split(',')
            .map(|term| {
                let (key, op, value) = match term.split_once("!=") {
                    Some((k, v)) => (k, "!=", v),
                    None => match term.split_once("==") {
                        Some((k, v)) => (k, "==", v),
                        None => match term.split_once('=') {
                            Some((k, v)) => (k, "=", v),
                            None => return term.to_string(),
                        },
                    },
                };
                let is_ns = NAMESPACE_FIELDS.contains(&key.trim())
                    || (namespaces && key.trim() == "metadata.name");
                if is_ns {
                    format!("{key}{op}{}", self.to_server(value))
                } else {
                    term.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Prefixes the namespace fields of a request body that name a namespace
    /// (the object's own, an Event's subjects, RBAC subjects, an access
    /// review's), and the name of a Namespace (`namespaces`: the body is
    /// one). Other fields called `namespace` (a label, data) stay as written.
    pub fn body(&self, body: &mut Value, namespaces: bool) {
        let at = |pointer: &str, v: &mut Value| {
            if let Some(field) = v.pointer_mut(pointer)
                && let Some(ns) = field.as_str()
            {
                *field = Value::String(self.to_server(ns));
            }
        };
        for pointer in NAMESPACE_PATHS {
            at(pointer, body);
        }
        if let Some(subjects) = body.get_mut("subjects").and_then(Value::as_array_mut) {
            for subject in subjects {
                at("/namespace", subject);
            }
        }
        if namespaces {
            at("/metadata/name", body);
        }
    }

    /// Whether an object of an answer (an item of a list, the object of a
    /// watch event) belongs to this test: its namespace (or, for a
    /// Namespace, its name) carries the prefix. Objects without either,
    /// cluster-scoped ones, are shared by every test.
    pub fn visible(&self, obj: &Value, namespaces: bool) -> bool {
        let meta = |f: &str| {
            obj.pointer(&format!("/metadata/{f}"))
                .and_then(Value::as_str)
        };
        let ns = if namespaces {
            meta("name")
        } else {
            meta("namespace")
        };
        ns.is_none_or(|ns| self.owns(ns))
    }

    /// An answer's text with the prefix taken out everywhere (names,
    /// messages, ServiceAccount user names).
    pub fn strip(&self, text: &[u8]) -> Vec<u8> {
        replace_all(text, self.prefix.as_bytes())
    }
}

fn replace_all(text: &[u8], needle: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        if text[i..].starts_with(needle) {
            i += needle.len();
        } else {
            out.push(text[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t() -> Tenancy {
        Tenancy::new("t7")
    }

    #[test]
    fn paths_gain_the_prefix_in_their_namespace_segment_only() {
        let cases = [
            (
                "/api/v1/namespaces/default/events",
                "/api/v1/namespaces/t7-default/events",
            ),
            ("/api/v1/namespaces/team-a", "/api/v1/namespaces/t7-team-a"),
            (
                "/api/v1/namespaces/team-a/status",
                "/api/v1/namespaces/t7-team-a/status",
            ),
            ("/api/v1/namespaces", "/api/v1/namespaces"),
            (
                "/apis/networking.istio.io/v1/namespaces/default/workloadentries/namespaces",
                "/apis/networking.istio.io/v1/namespaces/t7-default/workloadentries/namespaces",
            ),
            (
                "/apis/networking.istio.io/v1/workloadentries",
                "/apis/networking.istio.io/v1/workloadentries",
            ),
            (
                "/apis/coordination.k8s.io/v1/namespaces/t7-x/leases",
                "/apis/coordination.k8s.io/v1/namespaces/t7-x/leases",
            ),
            (
                "/api/v1/namespaces/ns/services/x",
                "/api/v1/namespaces/t7-ns/services/x",
            ),
            (
                "/api/v1/namespaces/ns/services/x/status",
                "/api/v1/namespaces/t7-ns/services/x/status",
            ),
            ("/api/v1/services", "/api/v1/services"),
            (
                "/apis/networking.istio.io/v1/namespaces/ns/serviceentries/x",
                "/apis/networking.istio.io/v1/namespaces/t7-ns/serviceentries/x",
            ),
            (
                "/apis/networking.istio.io/v1/namespaces/ns/sidecars",
                "/apis/networking.istio.io/v1/namespaces/t7-ns/sidecars",
            ),
            ("/version", "/version"),
        ];
        for (path, want) in cases {
            assert_eq!(t().path(path), want, "{path}");
        }
    }

    #[test]
    fn field_selectors_gain_the_prefix_on_namespace_values() {
        let cases = [
            ("metadata.namespace=a", false, "metadata.namespace=t7-a"),
            (
                "metadata.namespace!=a,metadata.name=x",
                false,
                "metadata.namespace!=t7-a,metadata.name=x",
            ),
            (
                "involvedObject.namespace==a",
                false,
                "involvedObject.namespace==t7-a",
            ),
            ("metadata.name=team-a", true, "metadata.name=t7-team-a"),
            ("metadata.name=team-a", false, "metadata.name=team-a"),
            ("spec.x=1", false, "spec.x=1"),
        ];
        for (sel, namespaces, want) in cases {
            assert_eq!(t().field_selector(sel, namespaces), want, "{sel}");
        }
    }

    #[test]
    fn bodies_gain_the_prefix_in_every_namespace_field() {
        let mut rb = json!({
            "metadata": {"name": "b", "namespace": "team-a"},
            "subjects": [{"kind": "ServiceAccount", "name": "sa", "namespace": "team-a"}],
            "regarding": {"namespace": ""},
        });
        t().body(&mut rb, false);
        assert_eq!(rb["metadata"]["namespace"], "t7-team-a");
        assert_eq!(rb["metadata"]["name"], "b");
        assert_eq!(rb["subjects"][0]["namespace"], "t7-team-a");
        assert_eq!(
            rb["regarding"]["namespace"], "",
            "an empty namespace stays empty"
        );
        let mut ns = json!({"metadata": {"name": "team-a"}});
        t().body(&mut ns, true);
        assert_eq!(ns["metadata"]["name"], "t7-team-a");
        // A Service: its own namespace only; a selector label or an
        // externalName naming a namespace stays as written.
        let mut svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": "team-a"},
            "spec": {"selector": {"namespace": "team-a"}, "externalName": "web.team-a.svc"},
        });
        t().body(&mut svc, false);
        assert_eq!(svc["metadata"]["namespace"], "t7-team-a");
        assert_eq!(svc["metadata"]["name"], "web");
        assert_eq!(svc["spec"]["selector"]["namespace"], "team-a");
        assert_eq!(svc["spec"]["externalName"], "web.team-a.svc");
    }

    #[test]
    fn only_the_tests_objects_are_visible_and_shared_ones_stay() {
        let cases = [
            (json!({"metadata": {"namespace": "t7-a"}}), false, true),
            (json!({"metadata": {"namespace": "t8-a"}}), false, false),
            (json!({"metadata": {"namespace": "a"}}), false, false),
            (json!({"metadata": {"name": "crd"}}), false, true),
            (json!({"metadata": {"name": "t7-a"}}), true, true),
            (json!({"metadata": {"name": "kube-system"}}), true, false),
            // The real server's own `default/kubernetes` Service.
            (
                json!({"kind": "Service", "metadata": {"namespace": "default", "name": "kubernetes"}}),
                false,
                false,
            ),
            (
                json!({"kind": "Service", "metadata": {"namespace": "t7-default", "name": "web"}}),
                false,
                true,
            ),
        ];
        for (obj, namespaces, want) in cases {
            assert_eq!(t().visible(&obj, namespaces), want, "{obj}");
        }
    }

    #[test]
    fn answers_lose_the_prefix_everywhere() {
        let text = br#"{"namespace":"t7-a","message":"namespaces \"t7-b\" not found","user":"system:serviceaccount:t7-a:sa"}"#;
        assert_eq!(
            String::from_utf8(t().strip(text)).unwrap(),
            r#"{"namespace":"a","message":"namespaces \"b\" not found","user":"system:serviceaccount:a:sa"}"#
        );
    }
}
