//! The HTTP layer: routes, access (two token roles, a per-client rate limit, body limits),
//! typed JSON errors, the WebSocket of live events, and the OpenAPI 3.1 document generated from
//! the handlers' own annotations and types.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use dtest_node::secret::Secret;
use serde::Deserialize;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};

use crate::model::*;
use crate::service::{Failure, Service};

/// Request bodies over this many bytes are refused with 413.
pub const BODY_MAX: usize = 4 << 20;
/// Clients the rate limiter remembers; beyond, the longest idle is forgotten.
const CLIENTS_MAX: usize = 10_000;

/// Who may do what.
#[derive(Clone, Debug)]
pub struct Access {
    /// May do anything.
    pub operator: Secret,
    /// May only read.
    pub read_only: Option<Secret>,
    /// Requests per second each client may make (bursts up to twice that).
    pub rate_per_s: u32,
}

#[derive(Clone)]
struct AppState {
    service: Arc<Service>,
    access: Arc<Access>,
    limiter: Arc<Mutex<Limiter>>,
}

/// The router of the whole API.
pub fn router(service: Arc<Service>, access: Access) -> Router {
    let state = AppState { service, access: Arc::new(access), limiter: Arc::new(Mutex::new(Limiter::default())) };
    let api = Router::new()
        .route("/openapi.json", get(openapi))
        .route("/v1/nodes", post(register).get(nodes))
        .route("/v1/nodes/{id}", get(node))
        .route("/v1/executions", post(submit).get(executions))
        .route("/v1/executions/{id}", get(execution))
        .route("/v1/executions/{id}/cancel", post(cancel))
        .route("/v1/executions/{id}/report", get(report))
        .route("/v1/executions/{id}/metrics", get(metrics))
        .route("/v1/load", post(start_load))
        .route("/v1/load/{id}/stop", post(stop_load))
        .route("/v1/load/profiles", get(profiles))
        .route("/v1/load/profiles/{name}", put(put_profile))
        .route("/v1/cluster", get(cluster))
        .route("/v1/alerts", get(alerts))
        .route("/v1/alerts/rules", put(put_rules).get(rules))
        .route("/v1/alerts/{id}/ack", post(acknowledge))
        .route("/v1/allocations", post(allocate))
        .route("/v1/allocations/{id}", axum::routing::delete(deallocate))
        .route("/v1/utilization", get(utilization))
        .route("/v1/messages", post(send_message))
        .route("/v1/messages/broadcast", post(broadcast))
        .route("/v1/connections", get(connections))
        .route("/v1/events", get(events))
        .route("/metrics", get(prometheus))
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(api)
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such route; see /openapi.json") })
        .layer(DefaultBodyLimit::max(BODY_MAX))
        .with_state(state)
}

// ---- errors and bodies ----------------------------------------------------------------------

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody { error: ErrorDetail { code: code.to_owned(), message: message.into() } };
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        match self {
            Failure::BadRequest(m) => error(StatusCode::BAD_REQUEST, "bad_request", m),
            Failure::NotFound(m) => error(StatusCode::NOT_FOUND, "not_found", m),
            Failure::Conflict(m) => error(StatusCode::CONFLICT, "conflict", m),
            Failure::Invalid(m) => error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", m),
            Failure::Storage(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.code(), e.to_string()),
            Failure::Node(m) => error(StatusCode::BAD_GATEWAY, "node", m),
        }
    }
}

/// A JSON body whose every rejection is a typed error.
struct Body<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(request, state).await {
            Ok(axum::Json(value)) => Ok(Body(value)),
            Err(rejection) => Err(rejected(rejection)),
        }
    }
}

fn rejected(rejection: JsonRejection) -> Response {
    let status = rejection.status();
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid",
        _ => "bad_request",
    };
    // 415 is not among the contract's codes: a body that is not JSON is a bad request.
    let status = if status == StatusCode::UNSUPPORTED_MEDIA_TYPE { StatusCode::BAD_REQUEST } else { status };
    error(status, code, rejection.body_text())
}

/// Query parameters whose every rejection is a typed error.
struct Params<T>(T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> axum::extract::FromRequestParts<S> for Params<T> {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(value)) => Ok(Params(value)),
            Err(rejection) => Err(error(StatusCode::BAD_REQUEST, "bad_request", rejection.body_text())),
        }
    }
}

type Answer<T> = Result<T, Failure>;

/// Runs `work` on its own task: a client that goes away mid-request does not stop it halfway
/// (an execution half started, its shares taken and never given back).
async fn detached<T: Send + 'static>(work: impl Future<Output = Answer<T>> + Send + 'static) -> Answer<T> {
    tokio::spawn(work).await.unwrap_or_else(|e| Err(Failure::Node(format!("the request's task ended: {e}"))))
}

// ---- access ---------------------------------------------------------------------------------

/// Every route but `/healthz`: a token (constant-time compared), its role, the rate limit.
async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map_or(IpAddr::from([0, 0, 0, 0]), |c| c.0.ip());
    if !state.limiter.lock().unwrap_or_else(|p| p.into_inner()).admit(client, state.access.rate_per_s) {
        return error(StatusCode::TOO_MANY_REQUESTS, "rate_limited", "too many requests from this client; slow down");
    }
    let token = bearer(request.headers());
    let role = match token {
        Some(t) if state.access.operator.matches(t.as_bytes()) => Role::Operator,
        Some(t) if state.access.read_only.as_ref().is_some_and(|r| r.matches(t.as_bytes())) => Role::ReadOnly,
        Some(_) => return error(StatusCode::UNAUTHORIZED, "unauthorized", "wrong token"),
        None => return error(StatusCode::UNAUTHORIZED, "unauthorized", "send Authorization: Bearer TOKEN"),
    };
    let reads = matches!(*request.method(), Method::GET | Method::HEAD);
    if role == Role::ReadOnly && !reads {
        return error(StatusCode::FORBIDDEN, "forbidden", "the read-only token cannot change anything");
    }
    next.run(request).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Operator,
    ReadOnly,
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION)?.to_str().ok()?.strip_prefix("Bearer ")
}

/// A token bucket per client address.
#[derive(Default)]
struct Limiter {
    buckets: HashMap<IpAddr, (f64, Instant)>,
}

impl Limiter {
    fn admit(&mut self, client: IpAddr, rate_per_s: u32) -> bool {
        if rate_per_s == 0 {
            return true;
        }
        let now = Instant::now();
        let burst = f64::from(rate_per_s) * 2.0;
        // An IPv6 client is its /64: one host holds all of it, and must not get a bucket per address.
        let client = match client {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into())
            }
            other => other,
        };
        if self.buckets.len() >= CLIENTS_MAX && !self.buckets.contains_key(&client) {
            // A bucket refills whole in two seconds: a client idle longer is the same as a new
            // one, so forget them all.
            self.buckets.retain(|_, (_, at)| now.duration_since(*at).as_secs_f64() < 2.0);
            if self.buckets.len() >= CLIENTS_MAX {
                // Every one of them is busy: this client waits for room.
                return false;
            }
        }
        let (tokens, at) = self.buckets.entry(client).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * f64::from(rate_per_s)).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

// ---- routes ---------------------------------------------------------------------------------

/// The error answers every route may give.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum Errors {
    /// Malformed request.
    #[response(status = 400)]
    BadRequest(#[to_schema] ErrorBody),
    /// No or wrong token.
    #[response(status = 401)]
    Unauthorized(ErrorBody),
    /// The read-only token cannot write.
    #[response(status = 403)]
    Forbidden(ErrorBody),
    /// No such thing.
    #[response(status = 404)]
    NotFound(ErrorBody),
    /// It conflicts with the state.
    #[response(status = 409)]
    Conflict(ErrorBody),
    /// Body too large.
    #[response(status = 413)]
    TooLarge(ErrorBody),
    /// Invalid content.
    #[response(status = 422)]
    Invalid(ErrorBody),
    /// Too many requests.
    #[response(status = 429)]
    RateLimited(ErrorBody),
    /// A node failed.
    #[response(status = 502)]
    Node(ErrorBody),
    /// The store failed (disk full, database locked).
    #[response(status = 503)]
    Storage(ErrorBody),
}

/// A node announces itself; `dtest node --orchestrator URL` does it every few seconds.
#[utoipa::path(post, path = "/v1/nodes", tag = "orchestration", request_body = RegisterNode,
    responses((status = 200, description = "Known already: updated", body = NodeView),
              (status = 201, description = "Registered", body = NodeView), Errors))]
async fn register(State(s): State<AppState>, Body(body): Body<RegisterNode>) -> Answer<Response> {
    let (view, new) = s.service.register(body).await?;
    Ok((if new { StatusCode::CREATED } else { StatusCode::OK }, axum::Json(view)).into_response())
}

/// Every node with its health.
#[utoipa::path(get, path = "/v1/nodes", tag = "monitoring", responses((status = 200, body = [NodeView]), Errors))]
async fn nodes(State(s): State<AppState>) -> axum::Json<Vec<NodeView>> {
    axum::Json(s.service.nodes())
}

/// One node's health.
#[utoipa::path(get, path = "/v1/nodes/{id}", tag = "monitoring", params(("id" = String, Path, description = "The node's name")),
    responses((status = 200, body = NodeView), Errors))]
async fn node(State(s): State<AppState>, Path(id): Path<String>) -> Answer<axum::Json<NodeView>> {
    Ok(axum::Json(s.service.node(&id)?))
}

/// Submits a test execution; answers once its nodes have the plan.
#[utoipa::path(post, path = "/v1/executions", tag = "orchestration", request_body = SubmitExecution,
    responses((status = 201, body = Created), Errors))]
async fn submit(State(s): State<AppState>, Body(body): Body<SubmitExecution>) -> Answer<Response> {
    let service = s.service.clone();
    let id = detached(async move { service.submit(body).await }).await?;
    Ok((StatusCode::CREATED, axum::Json(Created { id })).into_response())
}

/// Paging of the history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Page {
    /// At most this many (default 100, at most 1000).
    #[param(minimum = 0)]
    limit: Option<u64>,
    /// Skip this many.
    #[param(minimum = 0)]
    offset: Option<u64>,
}

/// Executions, newest first, across restarts.
#[utoipa::path(get, path = "/v1/executions", tag = "orchestration", params(Page),
    responses((status = 200, body = [ExecutionView]), Errors))]
async fn executions(State(s): State<AppState>, Params(page): Params<Page>) -> Answer<axum::Json<Vec<ExecutionView>>> {
    let limit = page.limit.unwrap_or(100).min(1000) as usize;
    let offset = usize::try_from(page.offset.unwrap_or(0)).unwrap_or(usize::MAX);
    Ok(axum::Json(s.service.executions(limit, offset)?))
}

/// An execution's state, task counts and live load figures.
#[utoipa::path(get, path = "/v1/executions/{id}", tag = "orchestration", params(("id" = String, Path, description = "The execution")),
    responses((status = 200, body = ExecutionView), Errors))]
async fn execution(State(s): State<AppState>, Path(id): Path<String>) -> Answer<axum::Json<ExecutionView>> {
    Ok(axum::Json(s.service.execution(&id)?))
}

/// Cancels an execution: its work stops on every node and the partial report is kept.
#[utoipa::path(post, path = "/v1/executions/{id}/cancel", tag = "orchestration", params(("id" = String, Path, description = "The execution")),
    responses((status = 202, body = ExecutionView), Errors))]
async fn cancel(State(s): State<AppState>, Path(id): Path<String>) -> Answer<Response> {
    Ok((StatusCode::ACCEPTED, axum::Json(s.service.cancel(&id)?)).into_response())
}

/// The report's format.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct Format {
    /// The report's format (default `json`).
    format: Option<ReportFormat>,
}

/// A report's format.
#[derive(Clone, Copy, Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
enum ReportFormat {
    /// The JSON report.
    Json,
    /// The self-contained HTML page.
    Html,
    /// JUnit XML.
    Junit,
}

/// An execution's report: JSON, HTML or JUnit XML.
#[utoipa::path(get, path = "/v1/executions/{id}/report", tag = "orchestration",
    params(("id" = String, Path, description = "The execution"), Format),
    responses((status = 200, description = "The report", content(
        (Object = "application/json"), (String = "text/html"), (String = "application/xml"))), Errors))]
async fn report(State(s): State<AppState>, Path(id): Path<String>, Params(format): Params<Format>) -> Answer<Response> {
    let (format, content_type) = match format.format.unwrap_or(ReportFormat::Json) {
        ReportFormat::Json => ("json", "application/json"),
        ReportFormat::Html => ("html", "text/html; charset=utf-8"),
        ReportFormat::Junit => ("junit", "application/xml"),
    };
    let body = s.service.report(&id, format)?;
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// An execution's load figures: live while it runs, per second and totals once it ended.
#[utoipa::path(get, path = "/v1/executions/{id}/metrics", tag = "load", params(("id" = String, Path, description = "The execution")),
    responses((status = 200, body = Metrics), Errors))]
async fn metrics(State(s): State<AppState>, Path(id): Path<String>) -> Answer<axum::Json<Metrics>> {
    Ok(axum::Json(s.service.metrics(&id)?))
}

/// Starts a load test on nodes; an execution like any other.
#[utoipa::path(post, path = "/v1/load", tag = "load", request_body = StartLoad, responses((status = 201, body = Created), Errors))]
async fn start_load(State(s): State<AppState>, Body(body): Body<StartLoad>) -> Answer<Response> {
    let service = s.service.clone();
    let id = detached(async move { service.start_load(body).await }).await?;
    Ok((StatusCode::CREATED, axum::Json(Created { id })).into_response())
}

/// Ends a load test early; what it measured is kept.
#[utoipa::path(post, path = "/v1/load/{id}/stop", tag = "load", params(("id" = String, Path, description = "The execution")),
    responses((status = 202, body = ExecutionView), Errors))]
async fn stop_load(State(s): State<AppState>, Path(id): Path<String>) -> Answer<Response> {
    Ok((StatusCode::ACCEPTED, axum::Json(s.service.cancel(&id)?)).into_response())
}

/// The load profiles.
#[utoipa::path(get, path = "/v1/load/profiles", tag = "load", responses((status = 200, body = [NamedProfile]), Errors))]
async fn profiles(State(s): State<AppState>) -> Answer<axum::Json<Vec<NamedProfile>>> {
    Ok(axum::Json(s.service.profiles()?))
}

/// Creates or replaces a load profile: a named pattern `POST /v1/load` can use.
#[utoipa::path(put, path = "/v1/load/profiles/{name}", tag = "load", params(("name" = String, Path, description = "The profile")),
    request_body = Profile, responses((status = 204, description = "Stored"), Errors))]
async fn put_profile(
    State(s): State<AppState>,
    Path(name): Path<String>,
    Body(body): Body<Profile>,
) -> Answer<StatusCode> {
    s.service.put_profile(&name, body)?;
    Ok(StatusCode::NO_CONTENT)
}

/// The cluster's health, nodes by state and alerts firing.
#[utoipa::path(get, path = "/v1/cluster", tag = "monitoring", responses((status = 200, body = ClusterView), Errors))]
async fn cluster(State(s): State<AppState>) -> axum::Json<ClusterView> {
    axum::Json(s.service.cluster())
}

/// Alerts firing, and the history.
#[utoipa::path(get, path = "/v1/alerts", tag = "monitoring", responses((status = 200, body = AlertsView), Errors))]
async fn alerts(State(s): State<AppState>) -> axum::Json<AlertsView> {
    axum::Json(s.service.alerts())
}

/// The alert rules.
#[utoipa::path(get, path = "/v1/alerts/rules", tag = "monitoring", responses((status = 200, body = AlertRules), Errors))]
async fn rules(State(s): State<AppState>) -> axum::Json<AlertRules> {
    axum::Json(s.service.rules())
}

/// Replaces the alert rules.
#[utoipa::path(put, path = "/v1/alerts/rules", tag = "monitoring", request_body = AlertRules,
    responses((status = 204, description = "Stored"), Errors))]
async fn put_rules(State(s): State<AppState>, Body(body): Body<AlertRules>) -> Answer<StatusCode> {
    s.service.put_rules(body)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Acknowledges a firing alert.
#[utoipa::path(post, path = "/v1/alerts/{id}/ack", tag = "monitoring", params(("id" = u64, Path, description = "The alert")),
    responses((status = 204, description = "Acknowledged"), Errors))]
async fn acknowledge(State(s): State<AppState>, Path(id): Path<String>) -> Answer<StatusCode> {
    let id = id.parse().map_err(|_| Failure::NotFound(format!("no alert `{id}`")))?;
    s.service.acknowledge(id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Reserves resources on a node; later executions cannot take them.
#[utoipa::path(post, path = "/v1/allocations", tag = "resources", request_body = Allocate,
    responses((status = 201, body = Allocation), Errors))]
async fn allocate(State(s): State<AppState>, Body(body): Body<Allocate>) -> Answer<Response> {
    Ok((StatusCode::CREATED, axum::Json(s.service.allocate(body)?)).into_response())
}

/// Releases a reservation.
#[utoipa::path(delete, path = "/v1/allocations/{id}", tag = "resources", params(("id" = String, Path, description = "The allocation")),
    responses((status = 204, description = "Released"), Errors))]
async fn deallocate(State(s): State<AppState>, Path(id): Path<String>) -> Answer<StatusCode> {
    s.service.deallocate(&id)?;
    Ok(StatusCode::NO_CONTENT)
}

/// What each node has, holds and has free.
#[utoipa::path(get, path = "/v1/utilization", tag = "resources", responses((status = 200, body = UtilizationView), Errors))]
async fn utilization(State(s): State<AppState>) -> axum::Json<UtilizationView> {
    axum::Json(s.service.utilization())
}

/// Sends a message to one node and the commands running there.
#[utoipa::path(post, path = "/v1/messages", tag = "communication", request_body = SendMessage,
    responses((status = 200, body = Delivery), Errors))]
async fn send_message(State(s): State<AppState>, Body(body): Body<SendMessage>) -> Answer<axum::Json<Delivery>> {
    Ok(axum::Json(s.service.send_message(body).await?))
}

/// Sends a message to every node.
#[utoipa::path(post, path = "/v1/messages/broadcast", tag = "communication", request_body = Broadcast,
    responses((status = 200, body = BroadcastResult), Errors))]
async fn broadcast(State(s): State<AppState>, Body(body): Body<Broadcast>) -> Answer<axum::Json<BroadcastResult>> {
    Ok(axum::Json(s.service.broadcast(body).await?))
}

/// The service's link to each node.
#[utoipa::path(get, path = "/v1/connections", tag = "communication", responses((status = 200, body = [Connection]), Errors))]
async fn connections(State(s): State<AppState>) -> axum::Json<Vec<Connection>> {
    axum::Json(s.service.connections())
}

/// Where to resume the event stream.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct After {
    /// Send the kept events after this sequence number first (default: only new ones).
    after: Option<u64>,
}

/// Live events over a WebSocket, one JSON `EventView` per text message.
#[utoipa::path(get, path = "/v1/events", tag = "monitoring", params(After),
    responses((status = 101, description = "Switching to the WebSocket", body = EventView), Errors))]
async fn events(
    State(s): State<AppState>,
    Params(after): Params<After>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else {
        return error(StatusCode::BAD_REQUEST, "bad_request", "GET /v1/events is a WebSocket: send an Upgrade request");
    };
    let bus = s.service.bus.clone();
    let after = after.after.unwrap_or_else(|| bus.last_seq());
    ws.on_upgrade(move |socket| bus.stream(socket, after))
}

/// Figures for Prometheus: executions and their tasks, the registry's nodes (health, phi,
/// probes), alerts firing. OpenMetrics text, or the classic Prometheus text format (0.0.4) for a
/// client whose `Accept` names `text/plain` and not OpenMetrics.
#[utoipa::path(get, path = "/metrics", tag = "monitoring",
    responses((status = 200, description = "The exposition: `application/openmetrics-text; version=1.0.0; charset=utf-8`, \
        or `text/plain; version=0.0.4; charset=utf-8`", content((String = "application/openmetrics-text"), (String = "text/plain"))),
        Errors))]
async fn prometheus(State(s): State<AppState>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    dtest_node::metrics::respond(s.service.figures(), accept)
}

/// This document.
async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], document()).into_response()
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "dtest serve", description = "The dtest orchestrator as a service. Every route but /healthz needs `Authorization: Bearer TOKEN`; the read-only token may only GET."),
    paths(register, nodes, node, submit, executions, execution, cancel, report, metrics, start_load, stop_load,
          profiles, put_profile, cluster, alerts, rules, put_rules, acknowledge, allocate, deallocate, utilization,
          send_message, broadcast, connections, events, prometheus),
    components(schemas(ErrorBody, ErrorDetail, ReportFormat, Mode)),
    modifiers(&Bearer),
    security(("bearer" = [])),
)]
struct ApiDoc;

/// The OpenAPI 3.1 document of the API, as JSON.
pub fn document() -> String {
    ApiDoc::openapi().to_json().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_ipv6_client_is_its_64_and_a_bucket_holds_twice_the_rate() {
        let mut limiter = Limiter::default();
        let a: IpAddr = "2001:db8:1:2::1".parse().expect("address");
        let same_64: IpAddr = "2001:db8:1:2:ffff::9".parse().expect("address");
        let other_64: IpAddr = "2001:db8:1:3::1".parse().expect("address");
        assert!(limiter.admit(a, 1) && limiter.admit(same_64, 1), "a burst of two");
        assert!(!limiter.admit(same_64, 1) && !limiter.admit(a, 1), "the /64's bucket is empty");
        assert!(limiter.admit(other_64, 1), "another /64 has its own");
        assert!(limiter.admit(IpAddr::from([127, 0, 0, 1]), 0), "0 is no limit");
    }
}
