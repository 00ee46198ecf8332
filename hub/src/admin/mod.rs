//! The admin HTTP API (axum): health and readiness, the Prometheus `/metrics` endpoint,
//! the client list and disconnect, filter, bridge and store status, and the deploy and
//! removal of filter pipelines and their modules (`docs/admin-api.md`).
//!
//! This module owns the `[admin]` configuration ([`config`]), the HTTP server and its
//! bearer-token check, the text exposition ([`prometheus`]), and the persisted form of
//! API-deployed pipelines ([`pipelines`]). It keeps no counters of the hub's own: every
//! figure is read at request time from the broker, the store, the filter host and the
//! `$SYS` sources. Its only counters are its own (requests, refusals). Deploys go through
//! [`crate::reload::Deployments`], which serialises them with configuration reloads.
//!
//! Every endpoint but `/health` and `/ready` needs `Authorization: Bearer <token>`
//! (`/metrics` only when `admin.metrics_auth` is on); a missing or wrong token gets 401,
//! is counted and is logged at a rate that halves as refusals pile up (1st, 2nd, 4th, ...).
//! Without a configured token the control endpoints refuse every request.

pub mod config;
pub mod listener;
pub mod pipelines;
pub mod prometheus;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tracing::{info, warn};

use self::pipelines::{MAX_MODULE_BYTES, ModuleId, PipelineName, PipelineSpec};
use crate::broker::Broker;
use crate::metrics::Counter;
use crate::reload::{ApiError, Deployments, Origin, WasmSource};
use crate::shutdown::Shutdown;

pub use self::config::AdminConfig;

/// How long in-flight admin requests may run once the hub shuts down.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// The admin server's own counters (also exported by `/metrics`).
#[derive(Debug, Default)]
pub struct AdminCounters {
    /// Requests answered.
    pub requests: Counter,
    /// Requests refused for a missing or wrong bearer token.
    pub unauthorized: Counter,
}

/// The bearer token, kept as its SHA-256 digest: comparing digests takes the same time
/// whatever the presented token, its length included.
#[derive(Clone)]
struct Token([u8; 32]);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

impl Token {
    fn new(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    /// Constant-time comparison with a presented token.
    fn matches(&self, presented: &str) -> bool {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let diff = self
            .0
            .iter()
            .zip(digest.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        diff == 0
    }
}

/// What the handlers share.
#[derive(Debug)]
struct AdminState {
    broker: Arc<Broker>,
    deployments: Arc<Deployments>,
    token: Option<Token>,
    metrics_need_token: bool,
    ready: Arc<AtomicBool>,
    counters: AdminCounters,
}

/// Which endpoints a request may reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    /// Control and status endpoints: always the token.
    Control,
    /// `/metrics`: the token if `admin.metrics_auth`.
    Metrics,
}

/// The answer of an endpoint behind the token: `Err` is an error answer given before the
/// end (a refusal or a bad path through `?`, a failure), `Ok` the rest; both are sent as
/// they are.
type Answer = Result<Response, Response>;

impl AdminState {
    /// Counts a request to an endpoint behind `access`, then [`authorize`](Self::authorize)s
    /// it. Handlers answer a refusal with `?`.
    fn admit(&self, headers: &HeaderMap, access: Access) -> Result<(), Unauthorized> {
        self.counters.requests.inc();
        self.authorize(headers, access)
    }

    /// `Ok` when the request may proceed, else a refusal (counted, logged with a
    /// decreasing rate) to answer with.
    fn authorize(&self, headers: &HeaderMap, access: Access) -> Result<(), Unauthorized> {
        if access == Access::Metrics && !self.metrics_need_token {
            return Ok(());
        }
        let presented = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once(' '))
            // The scheme is case-insensitive (RFC 9110 §11.1).
            .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
            .map(|(_, token)| token.trim());
        let ok = match (&self.token, presented) {
            (Some(token), Some(presented)) => token.matches(presented),
            _ => false,
        };
        if ok {
            return Ok(());
        }
        self.counters.unauthorized.inc();
        let total = self.counters.unauthorized.get();
        if total.is_power_of_two() {
            warn!(
                refused_total = total,
                token_configured = self.token.is_some(),
                "admin request refused: missing or wrong bearer token"
            );
        }
        Err(Unauthorized)
    }
}

/// A request refused for a missing or wrong bearer token: 401 with a `WWW-Authenticate`
/// challenge.
#[derive(Debug, Clone, Copy)]
struct Unauthorized;

impl IntoResponse for Unauthorized {
    fn into_response(self) -> Response {
        let mut response = (
            StatusCode::UNAUTHORIZED,
            Json(json!({ "error": "missing or wrong bearer token" })),
        )
            .into_response();
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"tern\""),
        );
        response
    }
}

/// Lets handlers answer a refusal with `?`.
impl From<Unauthorized> for Response {
    fn from(refused: Unauthorized) -> Self {
        refused.into_response()
    }
}

/// A running admin server's handle: mark the hub ready once its listeners accept.
#[derive(Debug, Clone)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// The listeners are bound and accepting: `/ready` answers 200.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// The admin server, bound and with its token read, ready for [`start`].
#[derive(Debug)]
pub struct Prepared {
    listener: TcpListener,
    token: Option<String>,
    metrics_need_token: bool,
}

/// Reads the token (or its file) and binds the admin address if `[admin]` enables the
/// server (`None` otherwise). Called before anything else starts, so a token file that
/// cannot be read or an address in use stops the hub with the key or address and the
/// reason.
pub async fn prepare(
    admin: &AdminConfig,
    source: Option<&std::path::Path>,
) -> crate::Result<Option<Prepared>> {
    if !admin.is_enabled() {
        return Ok(None);
    }
    let token =
        admin
            .resolve_token()
            .map_err(|(key, reason)| crate::config::ConfigError::Invalid {
                file: source.map_or_else(|| "<config>".into(), std::path::Path::to_path_buf),
                key: key.to_owned(),
                reason,
            })?;
    let listener = TcpListener::bind(admin.bind)
        .await
        .map_err(|source| crate::Error::Bind {
            addr: admin.bind,
            source,
        })?;
    Ok(Some(Prepared {
        listener,
        token,
        metrics_need_token: admin.metrics_need_token(),
    }))
}

/// Starts the admin server as a task of `stop` (it ends at shutdown); `/ready` answers
/// 200 once [`Readiness::set_ready`] is called.
pub fn start(prepared: Prepared, deployments: Arc<Deployments>, stop: &Shutdown) -> Readiness {
    let Prepared {
        listener,
        token,
        metrics_need_token,
    } = prepared;
    if let Ok(addr) = listener.local_addr() {
        // Tests and supervisors read this line to learn the bound port.
        info!(%addr, "admin API listening");
        if !addr.ip().is_loopback() && token.is_none() {
            warn!(
                %addr,
                "admin API without a token on a non-loopback address: control endpoints refuse all"
            );
        }
    }
    let ready = Arc::new(AtomicBool::new(false));
    let state = Arc::new(AdminState {
        broker: Arc::clone(deployments.broker()),
        deployments,
        token: token.as_deref().map(Token::new),
        metrics_need_token,
        ready: Arc::clone(&ready),
        counters: AdminCounters::default(),
    });
    let router = router(state);
    let shutdown = stop.clone();
    stop.tasks().spawn(async move {
        let graceful = shutdown.clone();
        let serve = axum::serve(listener::GuardedListener::new(listener), router)
            .with_graceful_shutdown(async move { graceful.triggered().await });
        let serve = serve.into_future();
        tokio::pin!(serve);
        tokio::select! {
            result = &mut serve => {
                if let Err(err) = result {
                    warn!(cause = %err, "admin API stopped");
                }
            }
            () = async {
                shutdown.triggered().await;
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } => {
                warn!("admin API requests still running at shutdown were abandoned");
            }
        }
    });
    Readiness(ready)
}

fn router(state: Arc<AdminState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/clients", get(clients))
        .route("/clients/{id}", axum::routing::delete(disconnect_client))
        .route("/filters", get(filters))
        .route(
            "/filters/{name}",
            axum::routing::put(deploy_pipeline).delete(remove_pipeline),
        )
        .route("/modules", get(modules))
        .route(
            "/modules/{sha256}",
            axum::routing::put(upload_module)
                .delete(delete_module)
                .layer(DefaultBodyLimit::max(MAX_MODULE_BYTES)),
        )
        .route("/bridges", get(bridges))
        .route("/store", get(store))
        .fallback(not_found)
        .with_state(state)
}

async fn not_found(State(state): State<Arc<AdminState>>) -> Response {
    state.counters.requests.inc();
    (
        StatusCode::NOT_FOUND,
        Json(json!({ "error": "no such endpoint" })),
    )
        .into_response()
}

async fn health(State(state): State<Arc<AdminState>>) -> Response {
    state.counters.requests.inc();
    Json(json!({
        "status": "ok",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.broker.metrics().uptime().as_secs(),
    }))
    .into_response()
}

async fn ready(State(state): State<Arc<AdminState>>) -> Response {
    state.counters.requests.inc();
    let listeners = state.ready.load(Ordering::Acquire);
    let store = state.broker.store().is_some();
    let shutting_down = state.broker.shutdown().is_triggered();
    let is_ready = listeners && store && !shutting_down;
    let status = if is_ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({
            "ready": is_ready,
            "store_open": store,
            "listeners_bound": listeners,
            "shutting_down": shutting_down,
        })),
    )
        .into_response()
}

async fn metrics(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Answer {
    state.admit(&headers, Access::Metrics)?;
    let body = prometheus::render(&state.broker, &state.counters);
    Ok((
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static(prometheus::CONTENT_TYPE),
        )],
        body,
    )
        .into_response())
}

/// Milliseconds since the Unix epoch.
fn unix_millis(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

async fn clients(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Answer {
    state.admit(&headers, Access::Control)?;
    let clients: Vec<Value> = state
        .broker
        .clients()
        .into_iter()
        .map(|c| {
            json!({
                "client_id": c.client_id,
                "protocol": match c.protocol_level {
                    5 => "mqtt5",
                    4 => "mqtt3.1.1",
                    3 => "mqtt3.1",
                    _ => "unknown",
                },
                "connected": c.connected,
                "address": c.peer.map(|p| p.to_string()),
                "connected_since_ms": c.connected_since.map(unix_millis),
                "subscriptions": c.subscriptions,
                "queued": c.queued,
            })
        })
        .collect();
    Ok(Json(json!({ "clients": clients })).into_response())
}

async fn disconnect_client(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    state.admit(&headers, Access::Control)?;
    Ok(if state.broker.evict(&id) {
        Json(json!({ "client_id": id, "disconnected": true })).into_response()
    } else {
        (
            StatusCode::NOT_FOUND,
            Json(json!({ "client_id": id, "error": "no connected client with this id" })),
        )
            .into_response()
    })
}

async fn filters(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Answer {
    state.admit(&headers, Access::Control)?;
    let layout = state.deployments.layout();
    let mut pipelines: Vec<Value> = Vec::new();
    if let Some(deployed) = state.broker.pipelines() {
        let set = deployed.current();
        for (index, filter) in set.filters() {
            let s = filter.stats();
            let mut entry = json!({
                "name": filter.name(),
                "batches": s.batches.get(),
                "messages": {
                    "in": s.messages_in.get(),
                    "kept": s.kept.get(),
                    "dropped": s.dropped.get(),
                    "replaced": s.replaced.get(),
                    "routed": s.routed.get(),
                },
                "failures": {
                    "trap": s.failed_trap.get(),
                    "timeout": s.failed_timeout.get(),
                    "error": s.failed_error.get(),
                    "invalid_verdicts": s.failed_invalid_verdicts.get(),
                    "memory": s.failed_memory.get(),
                },
                "policy_applied": s.policy_applied.get(),
                "log_suppressed": s.log_suppressed.get(),
                "instances_created": s.instances_created.get(),
            });
            let described = layout
                .get(index)
                .and_then(|p| p.filters.iter().find(|f| f.name == filter.name()));
            if let (Some(described), Value::Object(fields)) = (described, &mut entry) {
                match &described.wasm {
                    WasmSource::File(path) => {
                        fields.insert("wasm".into(), json!(path));
                    }
                    WasmSource::Module(id) => {
                        fields.insert("module".into(), json!(id));
                    }
                }
                fields.insert("config".into(), json!(described.config));
            }
            while pipelines.len() <= index {
                let at = pipelines.len();
                pipelines.push(pipeline_header(at, layout.get(at)));
            }
            if let Some(list) = pipelines
                .get_mut(index)
                .and_then(|p| p.get_mut("filters"))
                .and_then(Value::as_array_mut)
            {
                list.push(entry);
            }
        }
    }
    let f = &state.broker.metrics().filters;
    Ok(Json(json!({
        "pipelines": pipelines,
        "deploys": { "ok": f.deploys_ok.get(), "refused": f.deploys_refused.get() },
    }))
    .into_response())
}

/// The fields of pipeline `index` before its filters: who owns it, its topics and policy.
fn pipeline_header(index: usize, described: Option<&crate::reload::DeployedPipeline>) -> Value {
    let mut header = json!({ "index": index, "filters": [] });
    if let (Some(p), Value::Object(fields)) = (described, &mut header) {
        match &p.origin {
            Origin::File(position) => {
                fields.insert("source".into(), json!("config"));
                fields.insert("config_index".into(), json!(position));
            }
            Origin::Api(name) => {
                fields.insert("source".into(), json!("api"));
                fields.insert("name".into(), json!(name));
            }
        }
        fields.insert("topics".into(), json!(p.topics));
        fields.insert("on_failure".into(), json!(p.on_failure.to_string()));
    }
    header
}

/// An error answer: `{"error": message}` plus `extra` fields.
fn error_response(status: StatusCode, message: impl std::fmt::Display, extra: Value) -> Response {
    let mut body = json!({ "error": message.to_string() });
    if let (Value::Object(fields), Value::Object(more)) = (&mut body, extra) {
        fields.extend(more);
    }
    (status, Json(body)).into_response()
}

/// A path segment that names no pipeline or module: answered 400 with the reason.
#[derive(Debug)]
struct BadPath(String);

impl From<BadPath> for Response {
    fn from(bad: BadPath) -> Self {
        error_response(
            StatusCode::BAD_REQUEST,
            bad.0,
            json!({ "reason": "invalid" }),
        )
    }
}

fn parse_name(name: String) -> Result<PipelineName, BadPath> {
    PipelineName::try_from(name).map_err(BadPath)
}

/// The answer to a refused API deploy or removal; logged, since the running set stays.
fn api_error_response(name: &str, err: ApiError) -> Response {
    warn!(pipeline = name, cause = %err, "admin API pipeline change refused");
    let (status, extra) = match &err {
        ApiError::Invalid(_) => (StatusCode::BAD_REQUEST, json!({ "reason": "invalid" })),
        ApiError::MissingModule { filter, module } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "reason": "missing_module", "filter": filter, "module": module }),
        ),
        ApiError::Refused {
            filter, refusal, ..
        } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({ "reason": refusal.as_str(), "filter": filter }),
        ),
        ApiError::Conflict(_) => (StatusCode::CONFLICT, json!({ "reason": "conflict" })),
        ApiError::NotFound(_) => (StatusCode::NOT_FOUND, json!({ "reason": "not_found" })),
        ApiError::Persist(_) | ApiError::Internal(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!({ "reason": "internal" }),
        ),
    };
    let mut extra = extra;
    if let Value::Object(fields) = &mut extra {
        fields.insert("pipeline".into(), json!(name));
        fields.insert("kept".into(), json!("the pipelines in force are unchanged"));
    }
    error_response(status, err, extra)
}

async fn deploy_pipeline(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
    body: Bytes,
) -> Answer {
    state.admit(&headers, Access::Control)?;
    let name = parse_name(name)?;
    let spec: PipelineSpec = match serde_json::from_slice(&body) {
        Ok(spec) => spec,
        Err(err) => {
            return Err(api_error_response(
                name.as_str(),
                ApiError::Invalid(format!("request body: {err}")),
            ));
        }
    };
    let existed = state.deployments.api_pipelines().await.contains_key(&name);
    // Its own task: a client that goes away mid-deploy does not cut the change in half.
    let deployments = Arc::clone(&state.deployments);
    let (task_name, task_spec) = (name.clone(), spec.clone());
    let deployed =
        tokio::spawn(async move { deployments.deploy_api(task_name, task_spec).await }).await;
    Ok(
        match deployed.unwrap_or_else(|err| Err(ApiError::Internal(err.to_string()))) {
            Ok(index) => {
                let status = if existed {
                    StatusCode::OK
                } else {
                    StatusCode::CREATED
                };
                let mut body = serde_json::to_value(&spec).unwrap_or_else(|_| json!({}));
                if let Value::Object(fields) = &mut body {
                    fields.insert("name".into(), json!(name));
                    fields.insert("source".into(), json!("api"));
                    fields.insert("index".into(), json!(index));
                }
                (status, Json(body)).into_response()
            }
            Err(err) => api_error_response(name.as_str(), err),
        },
    )
}

async fn remove_pipeline(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Answer {
    state.admit(&headers, Access::Control)?;
    let name = parse_name(name)?;
    let deployments = Arc::clone(&state.deployments);
    let task_name = name.clone();
    let removed = tokio::spawn(async move { deployments.remove_api(&task_name).await }).await;
    Ok(
        match removed.unwrap_or_else(|err| Err(ApiError::Internal(err.to_string()))) {
            Ok(()) => Json(json!({ "name": name, "removed": true })).into_response(),
            Err(err) => api_error_response(name.as_str(), err),
        },
    )
}

fn parse_module(sha256: String) -> Result<ModuleId, BadPath> {
    ModuleId::try_from(sha256).map_err(BadPath)
}

async fn modules(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Answer {
    state.admit(&headers, Access::Control)?;
    let store = state.deployments.api_store().clone();
    let listed = tokio::task::spawn_blocking(move || store.modules()).await;
    let modules = match listed {
        Ok(Ok(modules)) => modules,
        Ok(Err(err)) => {
            return Err(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                err,
                json!({}),
            ));
        }
        Err(err) => {
            return Err(error_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                err,
                json!({}),
            ));
        }
    };
    let api = state.deployments.api_pipelines().await;
    let list: Vec<Value> = modules
        .into_iter()
        .map(|(id, bytes)| {
            let used_by: Vec<Value> = api
                .iter()
                .flat_map(|(name, spec)| {
                    spec.filters
                        .iter()
                        .filter(|f| f.module == id)
                        .map(move |f| json!({ "pipeline": name, "filter": f.name }))
                })
                .collect();
            json!({ "sha256": id, "bytes": bytes, "used_by": used_by })
        })
        .collect();
    Ok(Json(json!({ "modules": list })).into_response())
}

async fn upload_module(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(sha256): Path<String>,
    body: Bytes,
) -> Answer {
    state.admit(&headers, Access::Control)?;
    let id = parse_module(sha256)?;
    let store = state.deployments.api_store().clone();
    let len = body.len();
    let task_id = id.clone();
    let stored = tokio::task::spawn_blocking(move || store.put_module(&task_id, &body)).await;
    Ok(match stored {
        Ok(Ok(created)) => {
            if created {
                info!(module = %id, bytes = len, "filter module uploaded");
            }
            let status = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            (status, Json(json!({ "sha256": id, "bytes": len }))).into_response()
        }
        Ok(Err(err @ pipelines::PipelineStoreError::DigestMismatch { .. })) => {
            warn!(module = %id, cause = %err, "filter module upload refused");
            error_response(
                StatusCode::BAD_REQUEST,
                err,
                json!({ "reason": "digest_mismatch" }),
            )
        }
        Ok(Err(err)) => error_response(StatusCode::INTERNAL_SERVER_ERROR, err, json!({})),
        Err(err) => error_response(StatusCode::INTERNAL_SERVER_ERROR, err, json!({})),
    })
}

async fn delete_module(
    State(state): State<Arc<AdminState>>,
    headers: HeaderMap,
    Path(sha256): Path<String>,
) -> Answer {
    state.admit(&headers, Access::Control)?;
    let id = parse_module(sha256)?;
    // Held so no deploy starts using the module while it is deleted.
    let api = state.deployments.lock_api().await;
    let users: Vec<&str> = api
        .iter()
        .filter(|(_, spec)| spec.modules().any(|m| *m == id))
        .map(|(name, _)| name.as_str())
        .collect();
    if !users.is_empty() {
        return Err(error_response(
            StatusCode::CONFLICT,
            format!("module {id} is used by pipelines {users:?}"),
            json!({ "reason": "in_use", "used_by": users }),
        ));
    }
    Ok(match state.deployments.api_store().delete_module(&id) {
        Ok(true) => {
            info!(module = %id, "filter module deleted");
            Json(json!({ "sha256": id, "deleted": true })).into_response()
        }
        Ok(false) => error_response(
            StatusCode::NOT_FOUND,
            format!("no module {id}"),
            json!({ "reason": "not_found" }),
        ),
        Err(err) => error_response(StatusCode::INTERNAL_SERVER_ERROR, err, json!({})),
    })
}

/// A `$SYS` payload as JSON: a number when it is one, else the text.
fn sys_value(value: String) -> Value {
    if let Ok(n) = value.parse::<u64>() {
        return Value::from(n);
    }
    if let Ok(n) = value.parse::<i64>() {
        return Value::from(n);
    }
    Value::String(value)
}

async fn bridges(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Answer {
    state.admit(&headers, Access::Control)?;
    let mut bridges: Map<String, Value> = Map::new();
    for (topic, value) in state.broker.sys_source_topics() {
        let Some((name, key)) = topic
            .strip_prefix("$SYS/broker/bridges/")
            .and_then(|rest| rest.split_once('/'))
        else {
            continue;
        };
        let entry = bridges
            .entry(name.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(fields) = entry {
            fields.insert(key.to_owned(), sys_value(value));
        }
    }
    let list: Vec<Value> = bridges
        .into_iter()
        .map(|(name, mut fields)| {
            if let Value::Object(map) = &mut fields {
                map.insert("name".into(), Value::String(name));
            }
            fields
        })
        .collect();
    Ok(Json(json!({ "bridges": list })).into_response())
}

async fn store(State(state): State<Arc<AdminState>>, headers: HeaderMap) -> Answer {
    state.admit(&headers, Access::Control)?;
    let Some(store) = state.broker.store() else {
        return Err((
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "error": "no store" })),
        )
            .into_response());
    };
    let s = store.stats();
    let (_, wait_sum_micros) = state.broker.metrics().commit_wait.snapshot();
    let config = &state.broker.config().store;
    Ok(Json(json!({
        "data_dir": state.broker.config().data_dir,
        "appends": s.appends,
        "commits": s.commits,
        "last_commit_batch": s.last_commit_batch,
        "avg_commit_batch": s.avg_commit_batch(),
        "bytes": s.bytes,
        "records": s.records,
        "head_seq": s.head,
        "next_seq": s.next_seq,
        "trimmed": s.trimmed,
        "refused": s.refused,
        "dropped_unconsumed": s.dropped_unconsumed,
        "errors": s.errors,
        "publishes_refused": state.broker.metrics().store_refused.get(),
        "commit_wait_sum_micros": wait_sum_micros,
        "max_bytes": config.max_bytes.0,
        "max_age_secs": config.max_age.0.as_secs(),
    }))
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        let token = Token::new("s3cret");
        assert!(token.matches("s3cret"));
        assert!(!token.matches("s3cre"));
        assert!(!token.matches("s3cret!"));
        assert!(!token.matches(""));
    }
}
