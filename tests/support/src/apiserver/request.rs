//! Turns a method and path into what is asked: discovery, or a verb on a
//! resource (with namespace, name and subresource).

use axum::http::Method;

use super::faults::Verb;
use super::resources::{Registry, ResId};
use super::status::ApiError;
use super::{authz, openapi};

/// A request on a resource.
#[derive(Clone, Debug)]
pub struct ResourceRequest {
    pub res: ResId,
    /// Where its objects are stored (see `Registry::slot`).
    pub slot: ResId,
    pub version: String,
    /// None: cluster-scoped resource, or a list/watch across all namespaces.
    pub namespace: Option<String>,
    pub name: Option<String>,
    /// `Some("status")` for the status subresource.
    pub subresource: Option<String>,
    pub verb: Verb,
}

impl ResourceRequest {
    /// The resource as counters and faults name it: `plural` or `plural/status`.
    pub fn counter_name(&self, registry: &Registry) -> String {
        let plural = &registry.resources[self.res].plural;
        match &self.subresource {
            Some(s) => format!("{plural}/{s}"),
            None => plural.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub enum Route {
    Version,
    /// `/api`
    CoreVersions,
    /// `/apis`
    Groups,
    /// `/apis/{group}`
    Group(String),
    /// `/api/v1` or `/apis/{group}/{version}`
    Resources {
        group: String,
        version: String,
    },
    Health,
    /// `/openapi/v3`: the index of group-version documents.
    OpenApiRoot,
    /// `/openapi/v3/api/v1`, `/openapi/v3/apis/{group}/{version}`
    OpenApi {
        group: String,
        version: String,
    },
    /// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`
    AccessReview,
    Resource(ResourceRequest),
}

/// Paths of the authorization API: its resource list and the review.
fn authz_route(method: &Method, rest: &[&str]) -> Result<Route, ApiError> {
    match rest {
        [] => Ok(Route::Resources {
            group: authz::GROUP.into(),
            version: authz::VERSION.into(),
        }),
        [p] if *p == authz::PLURAL && method == Method::POST => Ok(Route::AccessReview),
        [p] if *p == authz::PLURAL => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found_path()),
    }
}

pub fn parse(
    method: &Method,
    path: &str,
    watch_param: bool,
    registry: &Registry,
) -> Result<Route, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["version"] => return Ok(Route::Version),
        ["healthz" | "readyz" | "livez", ..] => return Ok(Route::Health),
        ["api"] => return Ok(Route::CoreVersions),
        ["openapi", "v3"] => return Ok(Route::OpenApiRoot),
        ["openapi", "v3", "api", v] if openapi::serves(registry, "", v) => {
            return Ok(Route::OpenApi {
                group: String::new(),
                version: v.to_string(),
            });
        }
        ["openapi", "v3", "apis", g, v] if openapi::serves(registry, g, v) => {
            return Ok(Route::OpenApi {
                group: g.to_string(),
                version: v.to_string(),
            });
        }
        ["apis"] => return Ok(Route::Groups),
        ["apis", g, v, rest @ ..] if authz::serves(g, v) => return authz_route(method, rest),
        ["apis", g] => return Ok(Route::Group(g.to_string())),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::not_found_path()),
    };
    if !registry.serves(group, version) {
        return Err(ApiError::not_found_path());
    }
    if rest.is_empty() {
        return Ok(Route::Resources {
            group: group.to_string(),
            version: version.to_string(),
        });
    }
    let (watch_prefix, rest) = match rest {
        ["watch", rest @ ..] => (true, rest),
        _ => (false, rest),
    };
    let namespaced_plural = |p: &str| {
        registry
            .find(group, version, p)
            .is_some_and(|r| registry.resources[r].namespaced)
    };
    let (namespace, rest): (Option<String>, Vec<String>) = match rest {
        ["namespaces", ns, plural, tail @ ..] if namespaced_plural(plural) => (
            Some(ns.to_string()),
            std::iter::once(*plural)
                .chain(tail.iter().copied())
                .map(str::to_string)
                .collect(),
        ),
        _ => (None, rest.iter().map(|s| s.to_string()).collect()),
    };
    let (plural, name, subresource) = match rest.as_slice() {
        [p] => (p.clone(), None, None),
        [p, n] => (p.clone(), Some(n.clone()), None),
        [p, n, s] => (p.clone(), Some(n.clone()), Some(s.clone())),
        _ => return Err(ApiError::not_found_path()),
    };
    let res = registry
        .find(group, version, &plural)
        .ok_or_else(ApiError::not_found_path)?;
    let def = &registry.resources[res];
    if def.namespaced && namespace.is_none() && name.is_some() {
        return Err(ApiError::not_found_path());
    }
    if let Some(s) = &subresource {
        let has_status = def.version(version).is_some_and(|v| v.status_subresource);
        if s != "status" || !has_status {
            return Err(ApiError::not_found_path());
        }
    }
    let watch = watch_prefix || watch_param;
    let verb = match (method.as_str(), name.is_some()) {
        ("GET", _) if watch => Verb::Watch,
        ("GET", true) => Verb::Get,
        ("GET", false) => Verb::List,
        ("POST", false) if subresource.is_none() => Verb::Create,
        ("PUT", true) => Verb::Update,
        ("PATCH", true) => Verb::Patch,
        ("DELETE", true) if subresource.is_none() => Verb::Delete,
        ("DELETE", false) => Verb::DeleteCollection,
        _ => return Err(ApiError::method_not_allowed()),
    };
    if def.namespaced
        && namespace.is_none()
        && matches!(verb, Verb::Create | Verb::DeleteCollection)
    {
        return Err(ApiError::not_found_path());
    }
    Ok(Route::Resource(ResourceRequest {
        res,
        slot: registry.slot(res),
        version: version.to_string(),
        namespace,
        name,
        subresource,
        verb,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::resources::parse_crds;

    fn reg() -> Registry {
        Registry::new(parse_crds(include_str!("../../fixtures/workloadentry-crd.yaml")).unwrap())
    }

    fn rr(method: Method, path: &str) -> ResourceRequest {
        match parse(&method, path, false, &reg()).unwrap() {
            Route::Resource(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn resource_paths() {
        let r = rr(
            Method::GET,
            "/apis/networking.istio.io/v1/namespaces/ns/workloadentries/a/status",
        );
        assert_eq!(
            (
                r.namespace.as_deref(),
                r.name.as_deref(),
                r.subresource.as_deref(),
                r.verb
            ),
            (Some("ns"), Some("a"), Some("status"), Verb::Get)
        );
        let r = rr(
            Method::GET,
            "/apis/networking.istio.io/v1alpha3/workloadentries",
        );
        assert_eq!((r.namespace, r.verb), (None, Verb::List));
        let r = rr(Method::GET, "/api/v1/namespaces/default");
        assert_eq!((r.name.as_deref(), r.verb), (Some("default"), Verb::Get));
        let r = rr(Method::GET, "/api/v1/namespaces/ns/events");
        assert_eq!((r.namespace.as_deref(), r.verb), (Some("ns"), Verb::List));
        let r = rr(
            Method::GET,
            "/apis/networking.istio.io/v1/watch/namespaces/ns/workloadentries",
        );
        assert_eq!(r.verb, Verb::Watch);
        let r = rr(
            Method::DELETE,
            "/apis/networking.istio.io/v1/namespaces/ns/workloadentries",
        );
        assert_eq!(r.verb, Verb::DeleteCollection);
        let r = rr(Method::PATCH, "/api/v1/namespaces/x/status");
        assert_eq!(
            (r.name.as_deref(), r.subresource.as_deref()),
            (Some("x"), Some("status"))
        );
    }

    #[test]
    fn unknown_paths_are_404() {
        let reg = reg();
        for p in [
            "/apis/networking.istio.io/v9/workloadentries",
            "/apis/networking.istio.io/v1/namespaces/ns/nothing",
            "/apis/networking.istio.io/v1/workloadentries/a",
            "/apis/networking.istio.io/v1/namespaces/ns/workloadentries/a/scale",
            "/nope",
        ] {
            assert_eq!(
                parse(&Method::GET, p, false, &reg).unwrap_err().code,
                404,
                "{p}"
            );
        }
        let e = parse(
            &Method::POST,
            "/apis/networking.istio.io/v1/namespaces/n/workloadentries/a",
            false,
            &reg,
        )
        .unwrap_err();
        assert_eq!(e.code, 405);
    }
}
