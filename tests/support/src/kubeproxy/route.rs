//! What a request to the API server is, read from its method and path, so
//! the proxy counts and matches faults as the test kit's server does
//! (`plural` or `plural/subresource`, the verb, the namespace).

use http::Method;

use crate::apiserver::Verb;

/// Resources without a namespace among those the tests touch; every other
/// resource is taken as namespaced.
const CLUSTER_SCOPED: [&str; 16] = [
    "namespaces",
    "nodes",
    "persistentvolumes",
    "customresourcedefinitions",
    "apiservices",
    "clusterroles",
    "clusterrolebindings",
    "priorityclasses",
    "storageclasses",
    "validatingwebhookconfigurations",
    "mutatingwebhookconfigurations",
    "validatingadmissionpolicies",
    "selfsubjectaccessreviews",
    "selfsubjectrulesreviews",
    "subjectaccessreviews",
    "tokenreviews",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    pub verb: Verb,
    /// `plural`, or `plural/subresource`.
    pub resource: String,
    pub plural: String,
    /// The test's name for it (no prefix).
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Route {
    /// A list or watch of a namespaced resource across all namespaces.
    pub fn cluster_wide(&self) -> bool {
        self.namespace.is_none()
            && !CLUSTER_SCOPED.contains(&self.plural.as_str())
            && matches!(self.verb, Verb::List | Verb::Watch | Verb::DeleteCollection)
    }

    /// The request is about Namespaces themselves.
    pub fn namespaces(&self) -> bool {
        self.plural == "namespaces"
    }
}

/// None for discovery and anything else that is not a resource request.
pub fn parse(method: &Method, path: &str, watch: bool) -> Option<Route> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let rest = match segs.as_slice() {
        ["api", _v, rest @ ..] => rest,
        ["apis", _g, _v, rest @ ..] => rest,
        _ => return None,
    };
    let (namespace, rest) = match rest {
        // A Namespace itself, and its status/finalize subresources.
        ["namespaces", name, sub @ ..]
            if sub.len() <= 1 && sub.iter().all(|s| matches!(*s, "status" | "finalize")) =>
        {
            (
                None,
                vec!["namespaces", name]
                    .into_iter()
                    .chain(sub.iter().copied())
                    .collect::<Vec<_>>(),
            )
        }
        ["namespaces", ns, rest @ ..] => (Some(ns.to_string()), rest.to_vec()),
        rest => (None, rest.to_vec()),
    };
    let (plural, name, sub) = match rest.as_slice() {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(name.to_string()), None),
        [plural, name, sub] => (*plural, Some(name.to_string()), Some(*sub)),
        _ => return None,
    };
    let verb = match (method.as_str(), name.is_some()) {
        ("GET", true) => Verb::Get,
        ("GET", false) if watch => Verb::Watch,
        ("GET", false) => Verb::List,
        ("POST", _) => Verb::Create,
        ("PUT", _) => Verb::Update,
        ("PATCH", _) => Verb::Patch,
        ("DELETE", true) => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => return None,
    };
    let resource = match sub {
        Some(sub) => format!("{plural}/{sub}"),
        None => plural.to_string(),
    };
    Some(Route {
        verb,
        resource,
        plural: plural.to_string(),
        namespace,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (verb, resource, namespace, name, across all namespaces)
    type Read = (
        Verb,
        &'static str,
        Option<&'static str>,
        Option<&'static str>,
        bool,
    );

    fn read(method: Method, path: &str, watch: bool) -> Option<Read> {
        parse(&method, path, watch).map(|r| {
            let wide = r.cluster_wide();
            let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
            (
                r.verb,
                leak(r.resource),
                r.namespace.map(leak),
                r.name.map(leak),
                wide,
            )
        })
    }

    #[test]
    fn requests_are_read_as_the_test_kit_server_counts_them() {
        let we = "/apis/networking.istio.io/v1";
        let cases: Vec<(Method, String, bool, Option<Read>)> = vec![
            (
                Method::GET,
                format!("{we}/namespaces/d/workloadentries"),
                false,
                Some((Verb::List, "workloadentries", Some("d"), None, false)),
            ),
            (
                Method::GET,
                format!("{we}/workloadentries"),
                true,
                Some((Verb::Watch, "workloadentries", None, None, true)),
            ),
            (
                Method::PATCH,
                format!("{we}/namespaces/d/workloadentries/x/status"),
                false,
                Some((
                    Verb::Patch,
                    "workloadentries/status",
                    Some("d"),
                    Some("x"),
                    false,
                )),
            ),
            (
                Method::DELETE,
                format!("{we}/namespaces/d/workloadentries"),
                false,
                Some((
                    Verb::DeleteCollection,
                    "workloadentries",
                    Some("d"),
                    None,
                    false,
                )),
            ),
            (
                Method::POST,
                "/api/v1/namespaces".into(),
                false,
                Some((Verb::Create, "namespaces", None, None, false)),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/team-a".into(),
                false,
                Some((Verb::Get, "namespaces", None, Some("team-a"), false)),
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/team-a/finalize".into(),
                false,
                Some((
                    Verb::Update,
                    "namespaces/finalize",
                    None,
                    Some("team-a"),
                    false,
                )),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/a/serviceaccounts/sa/token".into(),
                false,
                Some((
                    Verb::Create,
                    "serviceaccounts/token",
                    Some("a"),
                    Some("sa"),
                    false,
                )),
            ),
            (
                Method::GET,
                "/api/v1/namespaces".into(),
                false,
                Some((Verb::List, "namespaces", None, None, false)),
            ),
            // Core-group resources in a namespace read as group ones do.
            (
                Method::GET,
                "/api/v1/namespaces/ns/services/x".into(),
                false,
                Some((Verb::Get, "services", Some("ns"), Some("x"), false)),
            ),
            (
                Method::PATCH,
                "/api/v1/namespaces/ns/services/x".into(),
                false,
                Some((Verb::Patch, "services", Some("ns"), Some("x"), false)),
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/ns/services/x/status".into(),
                false,
                Some((
                    Verb::Update,
                    "services/status",
                    Some("ns"),
                    Some("x"),
                    false,
                )),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/ns/services".into(),
                false,
                Some((Verb::Create, "services", Some("ns"), None, false)),
            ),
            (
                Method::DELETE,
                "/api/v1/namespaces/ns/services".into(),
                false,
                Some((Verb::DeleteCollection, "services", Some("ns"), None, false)),
            ),
            (
                Method::GET,
                "/api/v1/services".into(),
                true,
                Some((Verb::Watch, "services", None, None, true)),
            ),
            (
                Method::GET,
                "/api/v1/services".into(),
                false,
                Some((Verb::List, "services", None, None, true)),
            ),
            // A namespace named like a subresource is still a namespace.
            (
                Method::GET,
                "/api/v1/namespaces/status/services/x".into(),
                false,
                Some((Verb::Get, "services", Some("status"), Some("x"), false)),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/finalize/services".into(),
                false,
                Some((Verb::List, "services", Some("finalize"), None, false)),
            ),
            (
                Method::PATCH,
                format!("{we}/namespaces/ns/serviceentries/x"),
                false,
                Some((Verb::Patch, "serviceentries", Some("ns"), Some("x"), false)),
            ),
            (
                Method::DELETE,
                format!("{we}/namespaces/ns/sidecars/x"),
                false,
                Some((Verb::Delete, "sidecars", Some("ns"), Some("x"), false)),
            ),
            (
                Method::GET,
                "/apis/networking.istio.io/v1".into(),
                false,
                None,
            ),
            (Method::GET, "/apis".into(), false, None),
            (Method::GET, "/version".into(), false, None),
        ];
        for (method, path, watch, want) in cases {
            assert_eq!(read(method, &path, watch), want, "{path}");
        }
    }
}
