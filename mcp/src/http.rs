//! The Streamable HTTP transport's door. rmcp serves the protocol and checks `Host` (loopback
//! names by default, against DNS rebinding); in front of it every request needs the bearer
//! token, and an `Origin`, when a browser sends one, must be one of this machine's: rmcp leaves
//! Origin unchecked unless given a list, and a web page could otherwise drive the tools.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use dtest_node::secret::Secret;
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};

use crate::McpError;
use crate::tools::Dtest;

/// Largest request body taken, bytes: a scenario at its limit with room for the JSON-RPC frame.
const REQUEST_BYTES_MAX: usize = dtest_core::limits::SCENARIO_BYTES_MAX as usize + 64 * 1024;

/// How to serve over HTTP.
#[derive(Clone, Debug)]
pub struct HttpConfig {
    /// Where to listen.
    pub listen: SocketAddr,
    /// The bearer token every request must carry.
    pub token: Secret,
    /// Browser origins allowed besides this machine's own (`http://localhost:*` and the
    /// loopback addresses, any port).
    pub allowed_origins: Vec<String>,
    /// HTTPS with this; plain HTTP without.
    pub tls: Option<dtest_node::secure::ServerTls>,
}

pub(crate) async fn serve(
    config: HttpConfig,
    server: impl Fn() -> Dtest + Send + Sync + 'static,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), McpError> {
    let mut origins: Vec<String> =
        ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*", "https://localhost:*", "https://127.0.0.1:*"]
            .into_iter()
            .map(str::to_owned)
            .collect();
    origins.extend(config.allowed_origins.iter().cloned());
    let mut hosts: Vec<String> = ["localhost", "127.0.0.1", "::1", "[::1]"].into_iter().map(str::to_owned).collect();
    if !config.listen.ip().is_loopback() && !config.listen.ip().is_unspecified() {
        hosts.push(config.listen.ip().to_string());
    }
    // Sessions for clients of the handshake era (protocol 2025-11-25 and before), whose
    // cancellation is `notifications/cancelled` on their session and whose dropped stream may be
    // resumed; rmcp serves 2026-07-28 clients statelessly whatever this says, and for them a
    // closed response stream is the cancellation. Both stop the work the call started.
    let rmcp_config = StreamableHttpServerConfig::default()
        .with_legacy_session_mode(true)
        .with_allowed_hosts(hosts)
        .with_allowed_origins(origins)
        .with_max_request_body_bytes(REQUEST_BYTES_MAX);
    let service =
        StreamableHttpService::new(move || Ok(server()), Arc::new(LocalSessionManager::default()), rmcp_config);
    let token = Arc::new(config.token);
    let app =
        axum::Router::new().nest_service("/mcp", service).layer(axum::middleware::from_fn_with_state(token, bearer));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| McpError(format!("cannot listen on {}: {e}", config.listen)))?;
    let address = listener.local_addr().map_err(|e| McpError(e.to_string()))?;
    ready(address);
    let listener = dtest_node::secure::Incoming::new(listener, config.tls);
    tokio::select! {
        served = axum::serve(listener, app) => served.map_err(|e| McpError(e.to_string())),
        () = shutdown => Ok(()),
    }
}

/// Refuses a request without the token: 401, with the challenge RFC 6750 asks for.
async fn bearer(State(expected): State<Arc<Secret>>, request: Request, next: Next) -> Response {
    let given = request.headers().get(header::AUTHORIZATION).map(HeaderValue::as_bytes).unwrap_or_default();
    // The scheme is case-insensitive (RFC 9110); the token is compared in constant time.
    let token = given.get(..7).filter(|scheme| scheme.eq_ignore_ascii_case(b"bearer ")).map(|_| &given[7..]);
    if token.is_some_and(|token| expected.matches(token)) {
        return next.run(request).await;
    }
    let body = axum::Json(serde_json::json!({
        "error": { "code": "unauthorized", "message": "this MCP server needs `Authorization: Bearer TOKEN`" }
    }));
    (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
}
