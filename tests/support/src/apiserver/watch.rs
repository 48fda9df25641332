//! Watch: replay from the history ring buffer (or synthetic ADDED events for
//! the current state), then live events; BOOKMARKs, timeouts, 410 Expired, and
//! selector watches that turn objects leaving the selection into DELETED.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::handler::selectors;
use super::request::ResourceRequest;
use super::resources::ResourceDef;
use super::selector::Selectors;
use super::status::{ApiError, Cause};
use super::store::{Event, EventType, encode_watch_event};
use super::table::{self, Include};
use super::{Shared, convert};

/// When the client sets no `timeoutSeconds` (the real server picks 30-60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// What this watcher sends and how.
struct Watcher {
    shared: Arc<Shared>,
    rr: ResourceRequest,
    api_version: String,
    sel: Selectors,
    bookmarks: bool,
    table: Option<Include>,
    /// Table column definitions go with the first event only.
    first_table: bool,
    out: mpsc::Sender<Result<Bytes, Infallible>>,
}

pub fn serve(
    shared: Arc<Shared>,
    rr: ResourceRequest,
    query: HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let sel = selectors(&query, &shared.registry.resources[rr.res])?;
    let param = |k: &str| query.get(k).map(String::as_str);
    check_options(param("sendInitialEvents"), param("resourceVersionMatch"))?;
    let bookmarks = param("allowWatchBookmarks") == Some("true");
    let initial_events = param("sendInitialEvents") == Some("true");
    // `sendInitialEvents=false`: from now on, without the current objects.
    let no_initial_events = param("sendInitialEvents") == Some("false");
    let timeout = param("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(DEFAULT_TIMEOUT);
    let rv = param("resourceVersion").unwrap_or("");
    let from = match rv {
        "" | "0" => None,
        s => Some(
            s.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}")))?,
        ),
    };
    let res = &shared.registry.resources[rr.res];
    let api_version = res.api_version(&rr.version);
    let wants_table = table::wants_table(headers);

    let (tx, rx) = mpsc::channel(256);
    let mut w = Watcher {
        shared: shared.clone(),
        rr: rr.clone(),
        api_version,
        sel,
        bookmarks,
        table: wants_table.then(|| Include::parse(param("includeObject"))),
        first_table: true,
        out: tx,
    };
    let mut close = shared.close_watches.subscribe();
    // Taken under the store lock, so that nothing falls between the replay and the live feed.
    let start = {
        let store = shared.store();
        if (from.is_none() && !no_initial_events) || initial_events {
            let objs: Vec<Arc<Value>> = store
                .iter(rr.slot, rr.namespace.as_deref())
                .cloned()
                .collect();
            Ok((Replay::Current(objs), store.subscribe(), store.current_rv()))
        } else {
            let from = from.unwrap_or_else(|| store.current_rv());
            store
                .watch_from(rr.slot, from)
                .map(|(past, rx)| (Replay::History(past), rx, from.max(1)))
        }
    };
    tokio::spawn(async move {
        let (replay, live, progress) = match start {
            Ok(s) => s,
            Err(too_old) => {
                let status = ApiError::new(
                    410,
                    "Expired",
                    format!(
                        "too old resource version: {} ({})",
                        too_old.requested, too_old.oldest
                    ),
                )
                .to_status();
                let _ = w.out.send(Ok(encode_watch_event("ERROR", &status))).await;
                return;
            }
        };
        w.run(replay, live, progress, initial_events, timeout, &mut close)
            .await;
    });
    let mut resp = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// The real server's checks of a watch's `ListOptions`.
fn check_options(initial_events: Option<&str>, rv_match: Option<&str>) -> Result<(), ApiError> {
    let rv_match = rv_match.unwrap_or_default();
    let cause = |reason: &str, message: String| Cause {
        reason: reason.into(),
        message,
        field: "resourceVersionMatch".into(),
    };
    let mut causes = Vec::new();
    if initial_events.is_some() && rv_match != "NotOlderThan" {
        causes.push(cause(
            "FieldValueForbidden",
            "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan"
                .into(),
        ));
    }
    if initial_events.is_none() && !rv_match.is_empty() {
        causes.push(cause(
            "FieldValueForbidden",
            "Forbidden: resourceVersionMatch is forbidden for watch unless sendInitialEvents is provided".into(),
        ));
    }
    if !rv_match.is_empty() && rv_match != "NotOlderThan" {
        causes.push(cause(
            "FieldValueNotSupported",
            format!("Unsupported value: {rv_match:?}: supported values: \"NotOlderThan\""),
        ));
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid_options("ListOptions", causes))
    }
}

enum Replay {
    Current(Vec<Arc<Value>>),
    History(Vec<Arc<Event>>),
}

impl Watcher {
    fn res(&self) -> &ResourceDef {
        &self.shared.registry.resources[self.rr.res]
    }

    async fn run(
        &mut self,
        replay: Replay,
        mut live: broadcast::Receiver<Arc<Event>>,
        mut progress: u64,
        initial_events: bool,
        timeout: Duration,
        close: &mut tokio::sync::watch::Receiver<u64>,
    ) {
        match replay {
            Replay::Current(objs) => {
                for o in objs {
                    if self.in_scope(&o)
                        && self.sel.matches(&o)
                        && !self.send_obj(EventType::Added.as_str(), &o).await
                    {
                        return;
                    }
                }
                if initial_events && self.bookmarks {
                    let b = self.bookmark(progress, true);
                    if !self.send_line(b).await {
                        return;
                    }
                }
            }
            Replay::History(events) => {
                for ev in events {
                    progress = ev.rv;
                    if !self.send_event(&ev).await {
                        return;
                    }
                }
            }
        }
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval(self.shared.bookmark_interval);
        ticker.tick().await;
        loop {
            tokio::select! {
                _ = &mut deadline => {
                    if self.bookmarks {
                        let rv = self.safe_progress(&live, progress);
                        let b = self.bookmark(rv, false);
                        self.send_line(b).await;
                    }
                    return;
                }
                _ = close.changed() => return,
                _ = self.out.closed() => return,
                _ = ticker.tick(), if self.bookmarks => {
                    progress = self.safe_progress(&live, progress);
                    let b = self.bookmark(progress, false);
                    if !self.send_line(b).await {
                        return;
                    }
                }
                ev = live.recv() => match ev {
                    Ok(ev) => {
                        progress = ev.rv;
                        if ev.res == self.rr.slot && !self.send_event(&ev).await {
                            return;
                        }
                    }
                    // Too slow a watcher is cut off, as the real server does; the
                    // client re-watches from its last resourceVersion.
                    Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        }
    }

    /// The latest resourceVersion this watcher has provably seen everything up to.
    fn safe_progress(&self, live: &broadcast::Receiver<Arc<Event>>, progress: u64) -> u64 {
        let store = self.shared.store();
        // Events are sent under the store lock: an empty queue now means every
        // event up to the current resourceVersion has been received.
        if live.is_empty() {
            store.current_rv()
        } else {
            progress
        }
    }

    fn in_scope(&self, obj: &Value) -> bool {
        match &self.rr.namespace {
            Some(ns) => obj["metadata"]["namespace"].as_str() == Some(ns.as_str()),
            None => true,
        }
    }

    fn bookmark(&self, rv: u64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if !self.res().custom {
            // Typed (built-in) objects carry their zero creationTimestamp.
            meta["creationTimestamp"] = Value::Null;
        }
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let obj =
            json!({"kind": self.res().kind, "apiVersion": self.api_version, "metadata": meta});
        encode_watch_event("BOOKMARK", &obj)
    }

    async fn send_event(&mut self, ev: &Event) -> bool {
        if !self.in_scope(&ev.obj) {
            return true;
        }
        let now = self.sel.matches(&ev.obj);
        let before = ev.old.as_ref().map(|o| self.sel.matches(o));
        let kind = match (ev.kind, before, now) {
            (EventType::Added, _, true) => EventType::Added,
            (EventType::Modified, Some(true), true) => EventType::Modified,
            (EventType::Modified, Some(false) | None, true) => EventType::Added,
            (EventType::Modified, Some(true), false) => {
                // Leaving the selection: as the real server's watch cache, a
                // DELETED with the object's last state that matched, at the
                // change's resourceVersion.
                if let Some(old) = &ev.old {
                    let mut last = (**old).clone();
                    last["metadata"]["resourceVersion"] = json!(ev.rv.to_string());
                    return self.send_obj(EventType::Deleted.as_str(), &last).await;
                }
                EventType::Deleted
            }
            (EventType::Deleted, Some(true), _) => EventType::Deleted,
            _ => return true,
        };
        let shareable = kind == ev.kind
            && self.table.is_none()
            && ev.obj["apiVersion"] == self.api_version.as_str();
        if shareable {
            return self.send_line(ev.encoded()).await;
        }
        self.send_obj(kind.as_str(), &ev.obj).await
    }

    async fn send_obj(&mut self, kind: &str, obj: &Value) -> bool {
        let obj = convert::for_client(self.res(), obj, &self.api_version);
        let obj = &*obj;
        let line = match self.table {
            Some(include) => {
                let meta = json!({"resourceVersion": obj["metadata"]["resourceVersion"]});
                let res = self.res();
                let ver = res
                    .version(&self.rr.version)
                    .expect("watch requests name a served version");
                let t = table::table(res, ver, [obj], meta, include, self.first_table);
                self.first_table = false;
                encode_watch_event(kind, &t)
            }
            None => encode_watch_event(kind, obj),
        };
        self.send_line(line).await
    }

    async fn send_line(&self, line: Bytes) -> bool {
        self.out.send(Ok(line)).await.is_ok()
    }
}
