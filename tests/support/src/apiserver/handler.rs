//! Request dispatch and the verbs: get, list, create, update, patch (merge, JSON,
//! server-side apply), delete and deletecollection. Watch lives in `watch`.

use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use base64::Engine;
use serde_json::{Value, json};

use super::faults::Verb;
use super::gc::{self, Deleted, Propagation};
use super::objects;
use super::protobuf::{self, DecodeError};
use super::request::{self, ResourceRequest, Route};
use super::resources::{ResourceDef, VersionDef};
use super::selector::{FieldSelector, LabelSelector, Selectors};
use super::status::{ApiError, Cause};
use super::store::{EventType, ObjKey};
use super::table::{self, Include};
use super::{Counted, Shared, authz, convert, discovery, lock, services, watch};
use crate::ssa::{self, Writer};

/// The real server's request body limit.
const BODY_LIMIT: usize = 3 * 1024 * 1024;
/// Optimistic retries of a patch or apply racing with other writers.
const WRITE_RETRIES: usize = 16;

pub type Params = HashMap<String, String>;

pub async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let query: Params = Query::<Params>::try_from_uri(&parts.uri)
        .map(|q| q.0)
        .unwrap_or_default();
    let watch_param = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
    let route = match request::parse(
        &parts.method,
        parts.uri.path(),
        watch_param,
        &shared.registry,
    ) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let rr = match route {
        Route::Resource(rr) => rr,
        // Not counted: it reads and writes nothing.
        Route::AccessReview => {
            return access_review(&parts.headers, body)
                .await
                .unwrap_or_else(ApiError::into_response);
        }
        route => {
            return match discovery::answer(&shared.registry, &route, &shared.addr.to_string()) {
                Ok(doc) => json_response(StatusCode::OK, &doc),
                Err(e) => e.into_response(),
            };
        }
    };
    let counter = rr.counter_name(&shared.registry);
    let agent = parts
        .headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let counted = Counted {
        verb: rr.verb,
        resource: &counter,
        namespace: rr.namespace.as_deref(),
        name: rr.name.as_deref(),
        cluster_wide: shared.registry.resources[rr.res].namespaced && rr.namespace.is_none(),
        agent,
    };
    shared.counters.record(counted);
    let (delay, fail) = lock(&shared.faults).take(rr.verb, &counter, rr.namespace.as_deref());
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if let Some(e) = fail {
        return e.into_response();
    }
    let body = match read_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let ctx = Ctx::new(&shared, &rr, &query, &parts.headers);
    let result = match rr.verb {
        Verb::Get => ctx.get(),
        Verb::List => ctx.list(),
        Verb::Watch => watch::serve(shared.clone(), rr.clone(), query.clone(), &parts.headers),
        Verb::Create => ctx.create(&body),
        Verb::Update => ctx.update(&body),
        Verb::Patch => ctx.patch(&body),
        Verb::Delete => ctx.delete(&body),
        Verb::DeleteCollection => ctx.delete_collection(&body),
    };
    let response = result.unwrap_or_else(ApiError::into_response);
    if rr.verb.is_write() {
        shared
            .counters
            .log_write(counted, response.status().as_u16());
    }
    response
}

/// The request body as JSON (or YAML): protobuf bodies of the built-in kinds
/// are decoded; other encodings get 415, on which client-go falls back to JSON.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let body = axum::body::to_bytes(body, BODY_LIMIT)
        .await
        .map_err(|e| ApiError::new(413, "RequestEntityTooLarge", e.to_string()))?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let unsupported = |why: &str| {
        ApiError::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf{why}"
            ),
        )
    };
    if content_type.contains("cbor") && !body.is_empty() {
        return Err(unsupported(""));
    }
    if !content_type.contains("protobuf") || body.is_empty() {
        return Ok(body);
    }
    let obj = protobuf::to_json(&body).map_err(|e| match e {
        DecodeError::UnknownKind(_) => unsupported(&format!(" ({e})")),
        e => ApiError::bad_request(e.to_string()),
    })?;
    serde_json::to_vec(&obj).map(Bytes::from).map_err(internal)
}

/// A SelfSubjectAccessReview: answered, nothing stored.
async fn access_review(headers: &HeaderMap, body: Body) -> Result<Response, ApiError> {
    let body = read_body(headers, body).await?;
    let obj: Value =
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(json_response(StatusCode::CREATED, &authz::review(obj)?))
}

pub fn json_response(code: StatusCode, v: &Value) -> Response {
    bytes_response(code, serde_json::to_vec(v).unwrap_or_default())
}

fn bytes_response(code: StatusCode, body: Vec<u8>) -> Response {
    let mut resp = Response::new(Body::from(body));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

pub fn selectors(query: &Params, res: &ResourceDef) -> Result<Selectors, ApiError> {
    let labels = LabelSelector::parse(query.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(
        query.get("fieldSelector").map_or("", String::as_str),
        res.storage,
    )
    .map_err(ApiError::bad_request)?;
    Ok(Selectors { labels, fields })
}

/// Runs a pure module's function; a panic becomes a 500, as the real server's
/// panic recovery answers.
fn guarded<T>(what: &str, f: impl FnOnce() -> T) -> Result<T, ApiError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|p| {
        let msg = p
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        tracing::error!(what, panic = %msg, "panic while serving a request");
        ApiError::internal(format!("Internal error occurred: {what}: {msg}"))
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Create,
    Update,
    Patch,
    Apply,
}

/// What a write produced.
struct Written {
    obj: Arc<Value>,
    created: bool,
}

pub struct Ctx<'a> {
    shared: &'a Shared,
    rr: &'a ResourceRequest,
    res: &'a ResourceDef,
    ver: &'a VersionDef,
    api_version: String,
    query: &'a Params,
    headers: &'a HeaderMap,
}

impl<'a> Ctx<'a> {
    fn new(
        shared: &'a Shared,
        rr: &'a ResourceRequest,
        query: &'a Params,
        headers: &'a HeaderMap,
    ) -> Self {
        let res = &shared.registry.resources[rr.res];
        let ver = res
            .version(&rr.version)
            .expect("request parsing only accepts served versions");
        Ctx {
            shared,
            rr,
            res,
            ver,
            api_version: res.api_version(&rr.version),
            query,
            headers,
        }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query.get(name).map(String::as_str)
    }

    fn key(&self, name: &str) -> ObjKey {
        ObjKey {
            res: self.rr.slot,
            ns: if self.res.namespaced {
                self.rr.namespace.clone().unwrap_or_default()
            } else {
                String::new()
            },
            name: name.to_string(),
        }
    }

    fn url_name(&self) -> &str {
        self.rr.name.as_deref().unwrap_or_default()
    }

    /// The stored object as the client asked for it (in the request's version).
    fn convert(&self, obj: &Value) -> Value {
        convert::for_client(self.res, obj, &self.api_version).into_owned()
    }

    fn respond(&self, code: StatusCode, obj: &Value) -> Response {
        if table::wants_table(self.headers) {
            let include = Include::parse(self.param("includeObject"));
            let o = self.convert(obj);
            let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
            return json_response(
                code,
                &table::table(self.res, self.ver, [&o], meta, include, true),
            );
        }
        json_response(code, &convert::for_client(self.res, obj, &self.api_version))
    }

    fn ssa_schema(&self) -> &ssa::Schema {
        self.ver
            .ssa_schema
            .as_deref()
            .unwrap_or_else(|| ssa::Schema::default_object())
    }

    fn dry_run(&self) -> bool {
        self.param("dryRun") == Some("All")
    }

    fn get(&self) -> Result<Response, ApiError> {
        let name = self.url_name();
        let obj = self
            .shared
            .store()
            .get(&self.key(name))
            .ok_or_else(|| ApiError::not_found(self.res, name))?;
        Ok(self.respond(StatusCode::OK, &obj))
    }

    fn list(&self) -> Result<Response, ApiError> {
        let sel = selectors(self.query, self.res)?;
        let limit: usize = self
            .param("limit")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0);
        let (items, rv, offset, snap) = match self.param("continue").filter(|c| !c.is_empty()) {
            Some(token) => {
                let (id, offset) = decode_continue(token)?;
                let (items, rv) = self
                    .shared
                    .store()
                    .snapshot(id)
                    .ok_or_else(expired_continue)?;
                (items, rv, offset, Some(id))
            }
            None => {
                let store = self.shared.store();
                let ns = self.rr.namespace.as_deref();
                let items: Vec<Arc<Value>> = store
                    .iter(self.rr.slot, ns)
                    .filter(|o| sel.matches(o))
                    .cloned()
                    .collect();
                (Arc::new(items), store.current_rv(), 0, None)
            }
        };
        let end = if limit == 0 {
            items.len()
        } else {
            (offset + limit).min(items.len())
        };
        let offset = offset.min(end);
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if end < items.len() {
            let id = match snap {
                Some(id) => id,
                None => self.shared.store().keep_snapshot(items.clone(), rv),
            };
            meta["continue"] = json!(encode_continue(id, end, rv));
            meta["remainingItemCount"] = json!(items.len() - end);
        }
        let page = &items[offset..end];
        if table::wants_table(self.headers) {
            let include = Include::parse(self.param("includeObject"));
            let converted: Vec<Value> = page.iter().map(|o| self.convert(o)).collect();
            return Ok(json_response(
                StatusCode::OK,
                &table::table(self.res, self.ver, &converted, meta, include, true),
            ));
        }
        if self.res.custom && meta.get("continue").is_none() {
            // Custom resource lists (unstructured) carry an empty `continue`
            // on the last page; built-in and Table lists omit it.
            meta["continue"] = json!("");
        }
        // Written by hand so 20,000 items are not deep-copied into one Value.
        let mut out = Vec::with_capacity(256 + page.len() * 512);
        out.extend_from_slice(b"{\"apiVersion\":");
        serde_json::to_writer(&mut out, &self.api_version).map_err(internal)?;
        out.extend_from_slice(b",\"kind\":");
        serde_json::to_writer(&mut out, &self.res.list_kind).map_err(internal)?;
        out.extend_from_slice(b",\"metadata\":");
        serde_json::to_writer(&mut out, &meta).map_err(internal)?;
        out.extend_from_slice(b",\"items\":[");
        self.write_items(&mut out, page)?;
        out.extend_from_slice(b"]}");
        Ok(bytes_response(StatusCode::OK, out))
    }

    /// A list's items, each in the request's version.
    fn write_items(&self, out: &mut Vec<u8>, page: &[Arc<Value>]) -> Result<(), ApiError> {
        for (i, o) in page.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let mut o = convert::for_client(self.res, o, &self.api_version);
            if !self.res.custom {
                // Items of a built-in (typed) list carry no apiVersion and kind.
                if let Some(m) = o.to_mut().as_object_mut() {
                    m.remove("apiVersion");
                    m.remove("kind");
                }
            }
            serde_json::to_writer(&mut *out, &*o).map_err(internal)?;
        }
        Ok(())
    }

    fn parse_body(&self, body: &Bytes) -> Result<Value, ApiError> {
        let v: Value = match serde_json::from_slice(body) {
            Ok(v) => v,
            Err(json_err) => {
                let text = std::str::from_utf8(body)
                    .map_err(|_| ApiError::bad_request(json_err.to_string()))?;
                serde_yaml::from_str(text).map_err(|e| ApiError::bad_request(e.to_string()))?
            }
        };
        if !v.is_object() {
            return Err(ApiError::bad_request(
                "the body of the request must be a JSON object",
            ));
        }
        Ok(v)
    }

    fn manager(&self) -> String {
        if let Some(m) = self.param("fieldManager").filter(|m| !m.is_empty()) {
            return m.to_string();
        }
        let ua = self
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("unknown");
        ua.split('/').next().unwrap_or("unknown").to_string()
    }

    /// Checks and completes `new` (in the request's version) as the real server
    /// does before storing it; returns it in the storage version.
    fn finish(&self, live: Option<&Value>, mut new: Value, mode: Mode) -> Result<Value, ApiError> {
        let is_status = self.rr.subresource.as_deref() == Some("status");
        let name_for_errors = new["metadata"]["name"]
            .as_str()
            .unwrap_or(self.url_name())
            .to_string();
        // Type.
        match new["apiVersion"].as_str() {
            None | Some("") => {
                return Err(ApiError::bad_request(format!(
                    "Object 'apiVersion' is missing in '{}'",
                    compact(&new)
                )));
            }
            Some(av) if av != self.api_version => {
                return Err(ApiError::bad_request(format!(
                    "the API version in the data ({av}) does not match the expected API version ({})",
                    self.api_version
                )));
            }
            _ => {}
        }
        match new["kind"].as_str() {
            None | Some("") => {
                return Err(ApiError::bad_request(format!(
                    "Object 'Kind' is missing in '{}'",
                    compact(&new)
                )));
            }
            Some(k) if k != self.res.kind => {
                return Err(ApiError::bad_request(format!(
                    "the kind in the data ({k}) does not match the expected kind ({})",
                    self.res.kind
                )));
            }
            _ => {}
        }
        // Name and namespace.
        let m = objects::meta(&mut new);
        if let Some(url_name) = &self.rr.name {
            match m.get("name").and_then(Value::as_str) {
                Some(n) if n != url_name => {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({n}) does not match the name on the URL ({url_name})"
                    )));
                }
                Some(_) => {}
                None => {
                    m.insert("name".into(), json!(url_name));
                }
            }
        } else if m
            .get("name")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            match m.get("generateName").and_then(Value::as_str) {
                Some(prefix) if !prefix.is_empty() => {
                    let n = objects::generate_name(prefix);
                    m.insert("name".into(), json!(n));
                }
                _ => {
                    return Err(ApiError::invalid(
                        self.res,
                        "",
                        vec![Cause {
                            reason: "FieldValueRequired".into(),
                            message: "Required value: name or generateName is required".into(),
                            field: "metadata.name".into(),
                        }],
                    ));
                }
            }
        }
        if self.res.namespaced {
            let ns = self.rr.namespace.clone().unwrap_or_default();
            match m.get("namespace").and_then(Value::as_str) {
                Some(n) if !n.is_empty() && n != ns => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                _ => {
                    m.insert("namespace".into(), json!(ns));
                }
            }
        } else {
            m.remove("namespace");
        }
        objects::drop_empty_metadata(&mut new);
        if let Some(v) = &self.ver.validator {
            let before = (self.param("fieldValidation") == Some("Strict")).then(|| new.clone());
            guarded("pruning", || {
                v.prune(&mut new);
                v.apply_defaults(&mut new);
            })?;
            if let Some(before) = before {
                let mut unknown = Vec::new();
                dropped_fields(&before, &new, "", &mut unknown);
                if !unknown.is_empty() {
                    let list: Vec<String> = unknown
                        .iter()
                        .map(|f| format!("unknown field \"{f}\""))
                        .collect();
                    return Err(ApiError::bad_request(format!(
                        "{kind} in version {version:?} cannot be handled as a {kind}: strict decoding error: {}",
                        list.join(", "),
                        kind = self.res.kind,
                        version = self.rr.version,
                    )));
                }
            }
        }
        let mut new = match live {
            None => {
                objects::prepare_create(&mut new, self.ver.status_subresource, &objects::now());
                new
            }
            Some(live) if is_status => objects::prepare_status_update(live, &new),
            Some(live) => {
                objects::prepare_update(live, &mut new, self.ver.status_subresource);
                new
            }
        };
        let namespace =
            !self.res.custom && self.res.group.is_empty() && self.res.plural == "namespaces";
        if namespace {
            objects::namespace_label(&mut new);
        }
        let service = services::is_service(self.res) && !is_status;
        if service {
            services::prepare(live, &mut new);
        }
        let name = new["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut causes = objects::validate_name(self.res, &name);
        if let Some(live) = live {
            causes.extend(objects::validate_finalizers(live, &new));
        }
        if service {
            causes.extend(services::validate(live, &new));
        }
        if let Some(v) = &self.ver.validator {
            let found = guarded("validation", || match live {
                Some(live) => v.validate_update(live, &new),
                None => v.validate(&new),
            })?;
            causes.extend(found.into_iter().map(|c| Cause {
                reason: c.reason.to_string(),
                message: c.message,
                field: c.field,
            }));
        }
        if !causes.is_empty() {
            let n = if name.is_empty() {
                name_for_errors
            } else {
                name
            };
            return Err(ApiError::invalid(self.res, &n, causes));
        }
        if mode != Mode::Apply {
            let manager = self.manager();
            let time = objects::now();
            let writer = Writer {
                manager: &manager,
                api_version: &self.api_version,
                subresource: self.rr.subresource.as_deref(),
                time: &time,
            };
            // The real server logs a managedFields failure and goes on with the write.
            let schema = self.ssa_schema();
            if guarded("managedFields", || {
                ssa::record_update_with_schema(schema, live, &mut new, &writer)
            })
            .is_err()
            {
                tracing::warn!("managedFields not updated for this write");
            }
        }
        if namespace && live.is_none() {
            objects::namespace_create_defaults(&mut new);
        }
        if service {
            services::complete(live, &mut new, self.dry_run());
        }
        Ok(convert::for_storage(self.res, new))
    }

    /// The optimistic write loop: `compute` sees the live object (in the
    /// request's version) and returns the object to store; it is stored only if
    /// nobody wrote in between, else computed again.
    fn write(
        &self,
        name: &str,
        compute: impl Fn(Option<&Value>) -> Result<(Value, Mode), ApiError>,
    ) -> Result<Written, ApiError> {
        let key = self.key(name);
        for _ in 0..WRITE_RETRIES {
            let live = self.shared.store().get(&key);
            let live_conv = live.as_ref().map(|l| self.convert(l));
            let (candidate, mode) = compute(live_conv.as_ref())?;
            let mut new = self.finish(live_conv.as_ref(), candidate, mode)?;
            let key = ObjKey::of(self.rr.slot, &new);
            if self.dry_run() {
                let mut out = new;
                if let Some(l) = &live {
                    out["metadata"]["resourceVersion"] = l["metadata"]["resourceVersion"].clone();
                }
                return Ok(Written {
                    obj: Arc::new(out),
                    created: live.is_none(),
                });
            }
            let mut store = self.shared.store();
            let current = store.get(&key);
            let unchanged = match (&live, &current) {
                (None, None) => true,
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                _ => false,
            };
            if !unchanged {
                if live.is_none() && mode == Mode::Create {
                    return Err(ApiError::already_exists(self.res, &key.name));
                }
                continue;
            }
            if let Some(l) = &live {
                // A write that changes nothing is not stored (no new
                // resourceVersion, no event), as with the real storage layer.
                let mut same = new;
                same["metadata"]["resourceVersion"] = l["metadata"]["resourceVersion"].clone();
                if same == **l {
                    return Ok(Written {
                        obj: l.clone(),
                        created: false,
                    });
                }
                new = same;
            }
            if services::is_service(self.res) {
                // Under the lock: no other write can take the same address.
                services::allocate(&store, self.res, &key, &mut new)?;
            }
            let kind = if live.is_none() {
                EventType::Added
            } else {
                EventType::Modified
            };
            let stored = store.put(self.rr.slot, new, kind);
            let obj = gc::finish_if_done(&mut store, &key, &objects::now()).unwrap_or(stored);
            gc::collect_if_orphaned(&mut store, &key, &objects::now());
            return Ok(Written {
                obj,
                created: live.is_none(),
            });
        }
        Err(ApiError::stale(self.res, name))
    }

    fn create(&self, body: &Bytes) -> Result<Response, ApiError> {
        let obj = self.parse_body(body)?;
        let mut name = obj["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if name.is_empty() {
            // Pick the generated name up front so the existence check uses it.
            let prefix = obj["metadata"]["generateName"].as_str().unwrap_or_default();
            if !prefix.is_empty() {
                name = objects::generate_name(prefix);
            }
        }
        let mut obj = obj;
        if !name.is_empty() {
            objects::meta(&mut obj).insert("name".into(), json!(name));
        }
        let written = self.write(&name, |live| {
            if live.is_some() {
                return Err(ApiError::already_exists(self.res, &name));
            }
            Ok((obj.clone(), Mode::Create))
        })?;
        Ok(self.respond(StatusCode::CREATED, &written.obj))
    }

    fn update(&self, body: &Bytes) -> Result<Response, ApiError> {
        let obj = self.parse_body(body)?;
        let name = self.url_name().to_string();
        let wanted_rv = obj["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let written = self.write(&name, |live| match live {
            None if self.res.create_on_update && self.rr.subresource.is_none() => {
                Ok((obj.clone(), Mode::Create))
            }
            None => Err(ApiError::not_found(self.res, &name)),
            Some(live) => {
                if !wanted_rv.is_empty()
                    && live["metadata"]["resourceVersion"] != wanted_rv.as_str()
                {
                    return Err(ApiError::stale(self.res, &name));
                }
                Ok((obj.clone(), Mode::Update))
            }
        })?;
        let code = if written.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(self.respond(code, &written.obj))
    }

    fn patch(&self, body: &Bytes) -> Result<Response, ApiError> {
        let content_type = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        let name = self.url_name().to_string();
        let force = self.param("force") == Some("true");
        if force && content_type != "application/apply-patch+yaml" {
            return Err(ApiError::bad_request(
                "force flag is not allowed for non-apply patch",
            ));
        }
        let written = match content_type.as_str() {
            "application/merge-patch+json" => {
                let patch: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                self.write(&name, |live| {
                    let live = live.ok_or_else(|| ApiError::not_found(self.res, &name))?;
                    let mut new = live.clone();
                    json_patch::merge(&mut new, &patch);
                    self.check_patched_rv(live, &new, &name)?;
                    Ok((new, Mode::Patch))
                })?
            }
            "application/strategic-merge-patch+json" if !self.res.custom => {
                let patch: Value = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                self.write(&name, |live| {
                    let live = live.ok_or_else(|| ApiError::not_found(self.res, &name))?;
                    let mut new = live.clone();
                    json_patch::merge(&mut new, &patch);
                    self.check_patched_rv(live, &new, &name)?;
                    Ok((new, Mode::Patch))
                })?
            }
            "application/json-patch+json" => {
                let patch: json_patch::Patch = serde_json::from_slice(body)
                    .map_err(|e| ApiError::bad_request(e.to_string()))?;
                self.write(&name, |live| {
                    let live = live.ok_or_else(|| ApiError::not_found(self.res, &name))?;
                    let mut new = live.clone();
                    json_patch::patch(&mut new, &patch)
                        .map_err(|e| ApiError::new(422, "Invalid", e.to_string()))?;
                    self.check_patched_rv(live, &new, &name)?;
                    Ok((new, Mode::Patch))
                })?
            }
            "application/apply-patch+yaml" => self.apply(body, &name, force)?,
            _ => {
                return Err(ApiError::new(
                    415,
                    "UnsupportedMediaType",
                    format!(
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml{}",
                        if self.res.custom {
                            ""
                        } else {
                            ", application/strategic-merge-patch+json"
                        }
                    ),
                ));
            }
        };
        let code = if written.created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        };
        Ok(self.respond(code, &written.obj))
    }

    fn check_patched_rv(&self, live: &Value, new: &Value, name: &str) -> Result<(), ApiError> {
        match new["metadata"]["resourceVersion"].as_str() {
            Some(rv) if live["metadata"]["resourceVersion"] != rv => {
                Err(ApiError::stale(self.res, name))
            }
            _ => Ok(()),
        }
    }

    fn apply(&self, body: &Bytes, name: &str, force: bool) -> Result<Written, ApiError> {
        let manager = self
            .param("fieldManager")
            .filter(|m| !m.is_empty())
            .ok_or_else(|| ApiError::bad_request("fieldManager is required for apply patch"))?
            .to_string();
        let applied = self.parse_body(body)?;
        if applied["apiVersion"].as_str().is_none_or(str::is_empty)
            || applied["kind"].as_str().is_none_or(str::is_empty)
        {
            return Err(ApiError::bad_request(
                "apiVersion and kind must be set in the applied configuration",
            ));
        }
        if !applied["metadata"]["managedFields"].is_null() {
            return Err(ApiError::bad_request("metadata.managedFields must be nil"));
        }
        let wanted_rv = applied["metadata"]["resourceVersion"]
            .as_str()
            .map(str::to_string);
        let time = objects::now();
        self.write(name, |live| {
            if let (Some(rv), Some(live)) = (&wanted_rv, live)
                && live["metadata"]["resourceVersion"] != rv.as_str()
            {
                return Err(ApiError::stale(self.res, name));
            }
            if live.is_none() && self.rr.subresource.is_some() {
                return Err(ApiError::not_found(self.res, name));
            }
            let mut applied = applied.clone();
            if let Some(m) = applied["metadata"].as_object_mut() {
                m.remove("resourceVersion");
            }
            let writer = Writer {
                manager: &manager,
                api_version: &self.api_version,
                subresource: self.rr.subresource.as_deref(),
                time: &time,
            };
            let schema = self.ssa_schema();
            let merged = guarded("server-side apply", || {
                ssa::apply_with_schema(schema, live, &applied, &writer, force)
            })?
            .map_err(|conflict| {
                // Unlike other conflicts, the real server's apply conflict
                // names no object in details: causes only.
                let mut e = ApiError::new(409, "Conflict", conflict.to_string());
                e.causes = conflict
                    .causes()
                    .into_iter()
                    .map(|c| Cause {
                        reason: c.reason.to_string(),
                        message: c.message,
                        field: c.field,
                    })
                    .collect();
                e
            })?;
            Ok((merged, Mode::Apply))
        })
    }

    /// The propagation policy, the preconditions, and whether a delete
    /// that leaves the object in place answers 202 (only when the client set
    /// the deprecated `orphanDependents: false`; 200 otherwise, as the real
    /// server keeps for old clients).
    fn delete_options(&self, body: &Bytes) -> Result<(Propagation, Value, bool), ApiError> {
        let opts: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?
        };
        let policy = opts["propagationPolicy"]
            .as_str()
            .or(self.param("propagationPolicy"))
            .map(|p| {
                Propagation::parse(p).ok_or_else(|| {
                    ApiError::bad_request(format!("unsupported propagationPolicy {p:?}"))
                })
            })
            .transpose()?;
        let orphan =
            opts["orphanDependents"] == true || self.param("orphanDependents") == Some("true");
        let accepted =
            opts["orphanDependents"] == false || self.param("orphanDependents") == Some("false");
        let policy = policy.unwrap_or(if orphan {
            Propagation::Orphan
        } else {
            Propagation::Background
        });
        Ok((policy, opts["preconditions"].clone(), accepted))
    }

    /// The answer to a delete that removed the object: a `Status` with
    /// `Success` naming it (`details.kind` is the resource, as the real server
    /// sets it), except for namespaces and services, whose storage returns
    /// the object.
    fn deleted(&self, obj: &Value) -> Response {
        if !self.res.custom
            && self.res.group.is_empty()
            && matches!(self.res.plural.as_str(), "namespaces" | "services")
        {
            return self.respond(StatusCode::OK, obj);
        }
        let mut details = serde_json::Map::new();
        details.insert("name".into(), obj["metadata"]["name"].clone());
        if !self.res.group.is_empty() {
            details.insert("group".into(), json!(self.res.group));
        }
        details.insert("kind".into(), json!(self.res.plural));
        details.insert("uid".into(), obj["metadata"]["uid"].clone());
        json_response(
            StatusCode::OK,
            &json!({
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Success",
                "details": details,
            }),
        )
    }

    fn delete(&self, body: &Bytes) -> Result<Response, ApiError> {
        let (policy, pre, accepted) = self.delete_options(body)?;
        let name = self.url_name();
        let key = self.key(name);
        let mut store = self.shared.store();
        let live = store
            .get(&key)
            .ok_or_else(|| ApiError::not_found(self.res, name))?;
        for (field, label) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
            if let Some(want) = pre[field].as_str() {
                let have = live["metadata"][field].as_str().unwrap_or_default();
                if want != have {
                    return Err(ApiError::conflict(
                        self.res,
                        name,
                        &format!(
                            "Precondition failed: {label} in precondition: {want}, {label} in object meta: {have}"
                        ),
                    ));
                }
            }
        }
        if self.dry_run() {
            let immediate = policy == Propagation::Background
                && live["metadata"]["finalizers"]
                    .as_array()
                    .is_none_or(Vec::is_empty);
            return Ok(if immediate {
                self.deleted(&live)
            } else {
                self.respond(StatusCode::OK, &live)
            });
        }
        match gc::delete(&mut store, &key, policy, &objects::now()) {
            Some(Deleted::Gone(obj)) => Ok(self.deleted(&obj)),
            Some(Deleted::Pending(obj)) => {
                let code = if accepted {
                    StatusCode::ACCEPTED
                } else {
                    StatusCode::OK
                };
                Ok(self.respond(code, &obj))
            }
            None => Err(ApiError::not_found(self.res, name)),
        }
    }

    fn delete_collection(&self, body: &Bytes) -> Result<Response, ApiError> {
        let (policy, _, _) = self.delete_options(body)?;
        let sel = selectors(self.query, self.res)?;
        let mut store = self.shared.store();
        let keys: Vec<ObjKey> = store
            .iter(self.rr.slot, self.rr.namespace.as_deref())
            .filter(|o| sel.matches(o))
            .map(|o| ObjKey::of(self.rr.slot, o))
            .collect();
        let mut items = Vec::new();
        for key in keys {
            if self.dry_run() {
                if let Some(o) = store.get(&key) {
                    items.push(self.convert(&o));
                }
                continue;
            }
            match gc::delete(&mut store, &key, policy, &objects::now()) {
                Some(Deleted::Gone(o) | Deleted::Pending(o)) => items.push(self.convert(&o)),
                None => {}
            }
        }
        let rv = store.current_rv();
        drop(store);
        Ok(json_response(
            StatusCode::OK,
            &json!({
                "apiVersion": self.api_version,
                "kind": self.res.list_kind,
                "metadata": {"resourceVersion": rv.to_string()},
                "items": items,
            }),
        ))
    }
}

/// Paths present in `before` but not in `after` (what pruning dropped).
fn dropped_fields(before: &Value, after: &Value, path: &str, out: &mut Vec<String>) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            for (k, bv) in b {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match a.get(k) {
                    None if !bv.is_null() => out.push(p),
                    None => {}
                    Some(av) => dropped_fields(bv, av, &p, out),
                }
            }
        }
        (Value::Array(b), Value::Array(a)) => {
            for (i, (bv, av)) in b.iter().zip(a).enumerate() {
                dropped_fields(bv, av, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

fn internal(e: serde_json::Error) -> ApiError {
    ApiError::internal(e.to_string())
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 200 {
        format!("{}...", &s[..s.floor_char_boundary(200)])
    } else {
        s
    }
}

fn encode_continue(snapshot: u64, offset: usize, rv: u64) -> String {
    let raw = json!({"v": "meta.k8s.io/v1", "rv": rv, "snapshot": snapshot, "offset": offset});
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.to_string())
}

fn decode_continue(token: &str) -> Result<(u64, usize), ApiError> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let id = v["snapshot"].as_u64().ok_or_else(bad)?;
    let offset = v["offset"].as_u64().ok_or_else(bad)? as usize;
    Ok((id, offset))
}

fn expired_continue() -> ApiError {
    ApiError::new(
        410,
        "Expired",
        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pruned_fields_are_named() {
        let before = json!({"spec": {"a": 1, "b": {"c": 2, "d": 3}, "l": [{"x": 1, "y": 2}]}});
        let after = json!({"spec": {"a": 1, "b": {"c": 2}, "l": [{"x": 1}]}});
        let mut out = Vec::new();
        dropped_fields(&before, &after, "", &mut out);
        assert_eq!(out, ["spec.b.d", "spec.l[0].y"]);
    }

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(7, 500, 42);
        assert_eq!(decode_continue(&t).unwrap(), (7, 500));
        assert_eq!(decode_continue("!!").unwrap_err().code, 400);
    }
}
