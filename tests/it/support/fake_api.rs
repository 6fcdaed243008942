//! An in-process stand-in for kube-apiserver, given to `kube::Client::new` as a
//! `tower::Service`, so that the real `Controller`, finalizer helper, event
//! recorder and lease manager run against it. It keeps objects in memory and
//! serves get, list, watch, create, delete, merge / strategic / JSON patches
//! and server-side apply (with field ownership and conflicts), the status
//! subresource, finalizers with deletionTimestamp, and resourceVersions. Every
//! request is recorded for assertions.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::broadcast;

type ResponseBody = UnsyncBoxBody<Bytes, Infallible>;

/// `(apiVersion, plural)`: which collection.
type Collection = (String, String);

#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub body: Value,
}

#[derive(Clone, Debug)]
struct Change {
    rv: u64,
    kind: &'static str,
    collection: Collection,
    namespace: String,
    object: Value,
}

struct Stored {
    object: Value,
    /// Field path -> field manager, for server-side apply conflicts.
    owners: HashMap<String, String>,
}

#[derive(Default)]
struct State {
    rv: u64,
    objects: BTreeMap<(Collection, String, String), Stored>,
    log: Vec<Change>,
    requests: Vec<Recorded>,
    /// Requests refused with 503 while true (an API server out of reach).
    outage: bool,
    /// While true, scaled workloads keep their running replicas (pods that
    /// take their time to stop); otherwise they follow at once.
    scaling_frozen: bool,
    /// Every n-th write to a Lease answers this late (an API server under
    /// load): renewals come late and Leases are lost by live holders.
    slow_lease_writes: Option<(u64, std::time::Duration)>,
    lease_writes: u64,
}

#[derive(Clone)]
pub struct FakeApi {
    state: Arc<Mutex<State>>,
    changes: broadcast::Sender<Change>,
}

impl Default for FakeApi {
    fn default() -> Self {
        Self { state: Arc::default(), changes: broadcast::channel(4096).0 }
    }
}

/// Resources with a status subresource: the main resource ignores status
/// changes and `/status` changes nothing else.
fn has_status_subresource(plural: &str) -> bool {
    plural == "identitymigrations" || plural == "tablemigrations" || plural == "schemamigrations"
}

struct Route {
    collection: Collection,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
    scale: bool,
}

/// Deployments and StatefulSets: `status.replicas` follows `spec.replicas`
/// as the workload controllers would make it.
fn is_workload(plural: &str) -> bool {
    plural == "deployments" || plural == "statefulsets"
}

fn route(path: &str) -> Option<Route> {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (api_version, rest) = match parts.as_slice() {
        ["api", v, rest @ ..] => (v.to_string(), rest),
        ["apis", g, v, rest @ ..] => (format!("{g}/{v}"), rest),
        _ => return None,
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        rest => (None, rest),
    };
    let (plural, name, sub) = match rest {
        [plural] => (plural.to_string(), None, None),
        [plural, name] => (plural.to_string(), Some(name.to_string()), None),
        [plural, name, sub] => (plural.to_string(), Some(name.to_string()), Some(*sub)),
        _ => return None,
    };
    Some(Route {
        collection: (api_version, plural),
        namespace,
        name,
        status: sub == Some("status"),
        scale: sub == Some("scale"),
    })
}

/// `%XX` escapes of a query value, decoded.
fn unescape(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match (
            bytes[i],
            bytes.get(i + 1..i + 3).and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok()),
        ) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Whether `object` has every `key=value` label of the query's `labelSelector`
/// (equality selectors only: what the operator sends).
fn selected(query: &str, object: &Value) -> bool {
    let Some(selector) = query_param(query, "labelSelector").map(unescape) else { return true };
    selector.split(',').filter(|s| !s.is_empty()).all(|pair| match pair.split_once('=') {
        Some((k, v)) => object["metadata"]["labels"][k.trim()] == v.trim(),
        None => !object["metadata"]["labels"][pair.trim()].is_null(),
    })
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
}

fn respond(status: StatusCode, value: &Value) -> Response<ResponseBody> {
    let body = http_body_util::Full::new(Bytes::from(serde_json::to_vec(value).unwrap()))
        .map_err(|e| match e {})
        .boxed_unsync();
    Response::builder().status(status).header("content-type", "application/json").body(body).unwrap()
}

fn failure(code: StatusCode, reason: &str, message: String) -> Response<ResponseBody> {
    respond(
        code,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": message, "reason": reason, "code": code.as_u16()}),
    )
}

/// RFC 7386 merge patch (strategic merge patches are treated the same: the
/// resources the operator patches have no lists merged by key).
fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

/// Leaf paths of an apply patch, `spec.holderIdentity` style.
fn leaves(value: &Value, prefix: &str, out: &mut Vec<(String, Value)>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (k, v) in map {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                leaves(v, &path, out);
            }
        }
        _ => out.push((prefix.to_string(), value.clone())),
    }
}

fn at<'a>(value: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(value, |v, k| v.get(k))
}

impl FakeApi {
    pub fn new() -> Self {
        Self::default()
    }

    /// A kube client whose every request this fake answers.
    pub fn client(&self) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let api = api.clone();
            async move { Ok::<_, Infallible>(api.handle(req).await) }
        });
        kube::Client::new(service, "default")
    }

    /// A client whose requests fail with 503 once `severed` is set: a process
    /// that died, whose tasks can no longer reach the API server.
    pub fn severable_client(&self, severed: std::sync::Arc<std::sync::atomic::AtomicBool>) -> kube::Client {
        let api = self.clone();
        let service = tower::service_fn(move |req: Request<Body>| {
            let (api, severed) = (api.clone(), severed.clone());
            async move {
                if severed.load(std::sync::atomic::Ordering::SeqCst) {
                    return Ok::<_, Infallible>(failure(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "ServiceUnavailable",
                        "this process is gone".into(),
                    ));
                }
                Ok(api.handle(req).await)
            }
        });
        kube::Client::new(service, "default")
    }

    /// Serves this fake over HTTP on a local port, for controller processes
    /// (`identity-migrator controller` with a kubeconfig pointing here).
    pub async fn serve(&self) -> std::net::SocketAddr {
        let api = self.clone();
        let app = axum::Router::new().fallback(move |req: Request<axum::body::Body>| {
            let api = api.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = body.collect().await.map(|c| c.to_bytes()).unwrap_or_default();
                api.handle(Request::from_parts(parts, Body::from(bytes))).await.map(axum::body::Body::new)
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        addr
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    /// Requests whose method is `method` and path ends with `suffix`.
    pub fn count(&self, method: &str, suffix: &str) -> usize {
        self.requests().iter().filter(|r| r.method == method && r.path.ends_with(suffix)).count()
    }

    /// While true every request fails with 503, as an API server out of reach.
    pub fn set_outage(&self, outage: bool) {
        self.state.lock().unwrap().outage = outage;
    }

    /// Makes every `nth` write (PUT or PATCH) of a Lease answer `late`.
    pub fn slow_lease_writes(&self, nth: u64, late: std::time::Duration) {
        self.state.lock().unwrap().slow_lease_writes = Some((nth.max(1), late));
    }

    /// Freezes or releases the running replicas of workloads; releasing
    /// brings every workload's running count to its desired count.
    pub fn set_scaling_frozen(&self, frozen: bool) {
        let mut state = self.state.lock().unwrap();
        state.scaling_frozen = frozen;
        if !frozen {
            for ((c, _, _), stored) in state.objects.iter_mut() {
                if is_workload(&c.1) {
                    let replicas = stored.object["spec"]["replicas"].clone();
                    stored.object["status"]["replicas"] = replicas;
                }
            }
        }
    }

    pub fn get(&self, api_version: &str, plural: &str, namespace: &str, name: &str) -> Option<Value> {
        let key = ((api_version.to_string(), plural.to_string()), namespace.to_string(), name.to_string());
        self.state.lock().unwrap().objects.get(&key).map(|s| s.object.clone())
    }

    /// Events about an object: `(type, reason, note)` in the order they were created.
    pub fn events_for(&self, namespace: &str, name: &str) -> Vec<(String, String, String)> {
        self.events_of(namespace, None, name)
    }

    /// The events about the object of `kind` (any kind when None) named `name`, oldest first.
    pub fn events_of(&self, namespace: &str, kind: Option<&str>, name: &str) -> Vec<(String, String, String)> {
        let state = self.state.lock().unwrap();
        let mut events: Vec<(u64, (String, String, String))> = state
            .objects
            .iter()
            .filter(|((c, ns, _), _)| c.1 == "events" && ns == namespace)
            .filter(|(_, s)| s.object["regarding"]["name"] == name)
            .filter(|(_, s)| kind.is_none_or(|k| s.object["regarding"]["kind"] == k))
            .map(|(_, s)| {
                let o = &s.object;
                let rv = o["metadata"]["resourceVersion"].as_str().unwrap_or("0").parse().unwrap_or(0);
                let text = |k: &str| o[k].as_str().unwrap_or_default().to_string();
                (rv, (text("type"), text("reason"), text("note")))
            })
            .collect();
        events.sort_by_key(|(rv, _)| *rv);
        events.into_iter().map(|(_, e)| e).collect()
    }

    fn record(&self, state: &mut State, kind: &'static str, collection: &Collection, namespace: &str, object: &Value) {
        let change = Change {
            rv: state.rv,
            kind,
            collection: collection.clone(),
            namespace: namespace.to_string(),
            object: object.clone(),
        };
        state.log.push(change.clone());
        let _ = self.changes.send(change);
    }

    async fn handle(&self, req: Request<Body>) -> Response<ResponseBody> {
        let method = req.method().as_str().to_string();
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or_default().to_string();
        let content_type =
            req.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap_or_default();
        let body: Value =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        let late = {
            let mut state = self.state.lock().unwrap();
            state.requests.push(Recorded { method: method.clone(), path: path.clone(), body: body.clone() });
            let lease_write = path.contains("/leases/") && (method == "PUT" || method == "PATCH");
            if lease_write {
                state.lease_writes += 1;
            }
            match state.slow_lease_writes {
                Some((nth, late)) if lease_write && state.lease_writes.is_multiple_of(nth) => Some(late),
                _ => None,
            }
        };
        if let Some(late) = late {
            tokio::time::sleep(late).await;
        }
        if self.state.lock().unwrap().outage {
            return failure(
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailable",
                "the API server is out of reach".into(),
            );
        }
        let Some(route) = route(&path) else {
            return failure(StatusCode::NOT_FOUND, "NotFound", format!("no route for {path}"));
        };
        match (method.as_str(), route.name.clone()) {
            ("GET", None) if query_param(&query, "watch") == Some("true") => self.watch(route, &query),
            ("GET", None) => self.list(route, &query),
            ("GET", Some(name)) if route.scale => self.read_scale(route, &name),
            ("PATCH", Some(name)) if route.scale => self.patch_scale(route, &name, body),
            ("GET", Some(name)) => self.read(route, &name),
            ("POST", None) => self.create(route, body),
            ("PATCH", Some(name)) => self.patch(route, name, &content_type, &query, body),
            ("DELETE", Some(name)) => self.delete(route, name),
            _ => failure(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", format!("{method} {path}")),
        }
    }

    fn list(&self, route: Route, query: &str) -> Response<ResponseBody> {
        let state = self.state.lock().unwrap();
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|((c, ns, _), _)| *c == route.collection && route.namespace.as_ref().is_none_or(|n| n == ns))
            .filter(|(_, s)| selected(query, &s.object))
            .map(|(_, s)| s.object.clone())
            .collect();
        respond(
            StatusCode::OK,
            &json!({"apiVersion": route.collection.0, "kind": "List",
                    "metadata": {"resourceVersion": state.rv.to_string()}, "items": items}),
        )
    }

    fn read(&self, route: Route, name: &str) -> Response<ResponseBody> {
        let key = (route.collection, route.namespace.unwrap_or_default(), name.to_string());
        match self.state.lock().unwrap().objects.get(&key) {
            Some(s) => respond(StatusCode::OK, &s.object),
            None => failure(StatusCode::NOT_FOUND, "NotFound", format!("{} {name} not found", key.0.1)),
        }
    }

    fn scale_of(object: &Value) -> Value {
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
               "metadata": {"name": object["metadata"]["name"], "namespace": object["metadata"]["namespace"]},
               "spec": {"replicas": object["spec"]["replicas"]},
               "status": {"replicas": object["status"]["replicas"].as_i64().unwrap_or(0)}})
    }

    fn read_scale(&self, route: Route, name: &str) -> Response<ResponseBody> {
        let key = (route.collection, route.namespace.unwrap_or_default(), name.to_string());
        match self.state.lock().unwrap().objects.get(&key) {
            Some(s) => respond(StatusCode::OK, &Self::scale_of(&s.object)),
            None => failure(StatusCode::NOT_FOUND, "NotFound", format!("{name} not found")),
        }
    }

    fn patch_scale(&self, route: Route, name: &str, patch: Value) -> Response<ResponseBody> {
        let mut state = self.state.lock().unwrap();
        let key = (route.collection.clone(), route.namespace.clone().unwrap_or_default(), name.to_string());
        let frozen = state.scaling_frozen;
        let Some(stored) = state.objects.get(&key) else {
            return failure(StatusCode::NOT_FOUND, "NotFound", format!("{name} not found"));
        };
        let mut object = stored.object.clone();
        let owners = stored.owners.clone();
        if let Some(replicas) = patch["spec"]["replicas"].as_i64() {
            object["spec"]["replicas"] = json!(replicas);
            if !frozen {
                object["status"]["replicas"] = json!(replicas);
            }
        }
        state.rv += 1;
        object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        let scale = Self::scale_of(&object);
        self.store(&mut state, key, object, owners);
        respond(StatusCode::OK, &scale)
    }

    fn create(&self, route: Route, mut object: Value) -> Response<ResponseBody> {
        let mut state = self.state.lock().unwrap();
        let namespace = route.namespace.clone().unwrap_or_default();
        state.rv += 1;
        let rv = state.rv;
        let name = match object["metadata"]["name"].as_str() {
            Some(name) => name.to_string(),
            None => format!("{}{rv}", object["metadata"]["generateName"].as_str().unwrap_or("object-")),
        };
        let key = (route.collection.clone(), namespace.clone(), name.clone());
        if state.objects.contains_key(&key) {
            return failure(StatusCode::CONFLICT, "AlreadyExists", format!("{name} already exists"));
        }
        let meta = object["metadata"].as_object_mut().expect("metadata");
        meta.insert("name".into(), json!(name));
        meta.insert("namespace".into(), json!(namespace));
        meta.insert("resourceVersion".into(), json!(rv.to_string()));
        meta.insert("uid".into(), json!(format!("uid-{rv}")));
        meta.insert("generation".into(), json!(1));
        meta.insert("creationTimestamp".into(), json!(jiff::Timestamp::now().to_string()));
        if has_status_subresource(&route.collection.1) {
            object.as_object_mut().unwrap().remove("status");
        }
        if is_workload(&route.collection.1) {
            object["status"]["replicas"] = object["spec"]["replicas"].clone();
        }
        self.record(&mut state, "ADDED", &route.collection, &namespace, &object);
        state.objects.insert(key, Stored { object: object.clone(), owners: HashMap::new() });
        respond(StatusCode::CREATED, &object)
    }

    fn patch(
        &self,
        route: Route,
        name: String,
        content_type: &str,
        query: &str,
        patch: Value,
    ) -> Response<ResponseBody> {
        let mut state = self.state.lock().unwrap();
        let namespace = route.namespace.clone().unwrap_or_default();
        let key = (route.collection.clone(), namespace.clone(), name.clone());
        let manager = query_param(query, "fieldManager").unwrap_or("unknown").to_string();
        let apply = content_type.starts_with("application/apply-patch");
        let Some(stored) = state.objects.get(&key) else {
            return failure(StatusCode::NOT_FOUND, "NotFound", format!("{name} not found"));
        };
        let mut object = stored.object.clone();
        let mut owners = stored.owners.clone();
        if content_type.starts_with("application/json-patch") {
            let ops: json_patch::Patch = match serde_json::from_value(patch.clone()) {
                Ok(ops) => ops,
                Err(e) => return failure(StatusCode::BAD_REQUEST, "BadRequest", e.to_string()),
            };
            // kube-apiserver's JSON Patch treats a missing path as null in a
            // `test` (the finalizer helper relies on it); json-patch does not.
            for op in &ops.0 {
                if let json_patch::PatchOperation::Test(t) = op
                    && t.value.is_null()
                    && object.pointer(t.path.as_str()).is_none()
                    && let Some((parent, leaf)) = t.path.as_str().rsplit_once('/')
                    && let Some(Value::Object(map)) = object.pointer_mut(parent)
                {
                    map.insert(leaf.to_string(), Value::Null);
                }
            }
            if let Err(e) = json_patch::patch(&mut object, &ops) {
                // A failed `test` operation: someone changed the object first.
                return failure(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", e.to_string());
            }
        } else {
            let mut fields = Vec::new();
            leaves(&patch, "", &mut fields);
            if apply && query_param(query, "force") != Some("true") {
                let conflicts: Vec<&String> = fields
                    .iter()
                    .filter(|(path, value)| {
                        owners.get(path).is_some_and(|o| *o != manager) && at(&object, path) != Some(value)
                    })
                    .map(|(path, _)| path)
                    .collect();
                if !conflicts.is_empty() {
                    return failure(
                        StatusCode::CONFLICT,
                        "Conflict",
                        format!("apply conflicts with other managers on {conflicts:?}"),
                    );
                }
            }
            if let Some(expected) = patch["metadata"]["resourceVersion"].as_str()
                && object["metadata"]["resourceVersion"].as_str() != Some(expected)
            {
                return failure(StatusCode::CONFLICT, "Conflict", "the object has been modified".into());
            }
            merge(&mut object, &patch);
            for (path, value) in fields {
                if value.is_null() {
                    owners.retain(|p, _| p != &path && !p.starts_with(&format!("{path}.")));
                } else {
                    owners.insert(path, manager.clone());
                }
            }
        }
        let before = &state.objects[&key].object;
        if has_status_subresource(&route.collection.1) {
            if route.status {
                let status = object.get("status").cloned().unwrap_or(Value::Null);
                object = before.clone();
                object.as_object_mut().unwrap().insert("status".into(), status);
            } else if let Some(status) = before.get("status") {
                object.as_object_mut().unwrap().insert("status".into(), status.clone());
            }
        }
        if object.get("spec") != before.get("spec") {
            let generation = before["metadata"]["generation"].as_i64().unwrap_or(1);
            object["metadata"]["generation"] = json!(generation + 1);
        }
        state.rv += 1;
        object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        self.store(&mut state, key, object.clone(), owners);
        respond(StatusCode::OK, &object)
    }

    /// Stores an updated object; a deleted object whose last finalizer went away is removed.
    fn store(
        &self,
        state: &mut State,
        key: (Collection, String, String),
        object: Value,
        owners: HashMap<String, String>,
    ) {
        let finalizers = object["metadata"]["finalizers"].as_array().is_some_and(|f| !f.is_empty());
        let deleting = object["metadata"].get("deletionTimestamp").is_some_and(|t| !t.is_null());
        if deleting && !finalizers {
            state.objects.remove(&key);
            self.record(state, "DELETED", &key.0, &key.1, &object);
        } else {
            self.record(state, "MODIFIED", &key.0, &key.1, &object);
            state.objects.insert(key, Stored { object, owners });
        }
    }

    fn delete(&self, route: Route, name: String) -> Response<ResponseBody> {
        let mut state = self.state.lock().unwrap();
        let key = (route.collection.clone(), route.namespace.clone().unwrap_or_default(), name.clone());
        let Some(stored) = state.objects.get(&key) else {
            return failure(StatusCode::NOT_FOUND, "NotFound", format!("{name} not found"));
        };
        let mut object = stored.object.clone();
        let owners = stored.owners.clone();
        if object["metadata"].get("deletionTimestamp").is_none_or(|t| t.is_null()) {
            object["metadata"]["deletionTimestamp"] = json!(jiff::Timestamp::now().to_string());
        }
        state.rv += 1;
        object["metadata"]["resourceVersion"] = json!(state.rv.to_string());
        self.store(&mut state, key, object.clone(), owners);
        respond(StatusCode::OK, &object)
    }

    /// Changes after `resourceVersion`, then live ones, as JSON lines.
    fn watch(&self, route: Route, query: &str) -> Response<ResponseBody> {
        let since: u64 = query_param(query, "resourceVersion").and_then(|v| v.parse().ok()).unwrap_or(0);
        let live = self.changes.subscribe();
        let state = self.state.lock().unwrap();
        let query = query.to_string();
        let wanted = move |c: &Change| {
            c.collection == route.collection
                && route.namespace.as_ref().is_none_or(|n| *n == c.namespace)
                && selected(&query, &c.object)
        };
        let backlog: VecDeque<Change> = state.log.iter().filter(|c| c.rv > since && wanted(c)).cloned().collect();
        drop(state);
        let stream = futures::stream::unfold((backlog, live, since), move |(mut backlog, mut live, mut seen)| {
            let wanted = wanted.clone();
            async move {
                let change = match backlog.pop_front() {
                    Some(c) => c,
                    None => loop {
                        match live.recv().await {
                            Ok(c) if c.rv > seen && wanted(&c) => break c,
                            Ok(_) => continue,
                            // As a real API server does with a watcher that
                            // falls behind: the watch ends, and the client
                            // watches again from the last version it saw.
                            Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => {
                                return None;
                            }
                        }
                    },
                };
                seen = change.rv;
                let mut line = serde_json::to_vec(&json!({"type": change.kind, "object": change.object})).unwrap();
                line.push(b'\n');
                Some((Ok(http_body::Frame::data(Bytes::from(line))), (backlog, live, seen)))
            }
        });
        let body = http_body_util::StreamBody::new(stream.boxed()).boxed_unsync();
        Response::builder().status(StatusCode::OK).header("content-type", "application/json").body(body).unwrap()
    }
}
