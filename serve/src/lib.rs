//! `dtest serve`: the orchestrator as a durable service. Nodes register with it, programs submit
//! executions to it over REST, watch them on a WebSocket, and ask it about the cluster's health,
//! resources and connections. Every execution is a [`dtest_orchestrator::Session`] with a
//! journal in the store, so a service killed mid-run resumes its executions when it restarts.
//!
//! Modules:
//! - `store`: the durable state (executions, their input journals, the live-event log, the node
//!   registry and settings) in one SQLite database in the `--data` directory.
//! - `service`: what each route does.
//! - `api`: routes, access, errors, the OpenAPI document.
//! - `events`: the event log and its WebSocket listeners.
//! - `metrics`: `GET /metrics` for Prometheus.
//! - `model`: the API's bodies.

pub mod api;
pub mod events;
pub mod metrics;
pub mod model;
pub mod service;
pub mod store;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::serve::ListenerExt;
use dtest_node::secret::Secret;
use dtest_node::secure::{ClientTls, Incoming, ServerTls};

use crate::service::{PROBE_INTERVAL, Service, ServiceConfig};
use crate::store::{Store, StoreError};

/// How to run the service.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Who may do what.
    pub access: api::Access,
    /// The token the nodes accept.
    pub node_token: Secret,
    /// TLS to serve with (mutual when it has a client CA); plain HTTP without.
    pub tls: Option<ServerTls>,
    /// Whom to trust as the nodes, and the certificate to present to them.
    pub node_tls: ClientTls,
    /// The data directory.
    pub data: PathBuf,
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The store.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// The listening socket.
    #[error("cannot listen on {0}: {1}")]
    Listen(SocketAddr, std::io::Error),
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Opens the store, resumes what was running, and serves until `shutdown` completes. `ready` is
/// called with the address once it listens (over TLS when `config.tls` is given).
pub async fn run(
    config: Config,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let store = Arc::new(Store::open(&config.data)?);
    let service = Service::open(
        store,
        ServiceConfig { node_token: config.node_token.clone(), node_tls: config.node_tls.clone() },
    )?;
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.map_err(|e| ServeError::Listen(config.listen, e))?;
    let address = listener.local_addr().map_err(|e| ServeError::Listen(config.listen, e))?;
    let listener = Incoming::new(listener, config.tls.clone());
    let prober = service.clone();
    let probing = tokio::spawn(async move {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            prober.probe().await;
            prober.store_waiting_reports();
        }
    });
    service.resume_all().await?;
    ready(address);
    let app = api::router(service, config.access).into_make_service_with_connect_info::<SocketAddr>();
    // Stopping leaves the running executions to their nodes, journaled: the next start with the
    // same `--data` resumes them, as after a crash. So there is nothing to wait for (open
    // WebSockets would hold a graceful shutdown forever).
    let served = tokio::select! {
        // `tap_io` only to give connections their peer address as `ConnectInfo`.
        served = axum::serve(listener.tap_io(|_| ()), app) => served,
        () = shutdown => Ok(()),
    };
    probing.abort();
    served.map_err(|e| ServeError::Listen(address, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_of_a_config_shows_no_token() {
        let config = Config {
            listen: "127.0.0.1:0".parse().expect("an address"),
            access: api::Access {
                operator: Secret::new("operator-secret"),
                read_only: Some(Secret::new("reader-secret")),
                rate_per_s: 0,
            },
            node_token: Secret::new("node-secret"),
            tls: None,
            node_tls: ClientTls::default(),
            data: PathBuf::from("data"),
        };
        let service = ServiceConfig { node_token: config.node_token.clone(), node_tls: config.node_tls.clone() };
        for shown in [format!("{config:?}"), format!("{config:#?}"), format!("{service:?}")] {
            for token in ["operator-secret", "reader-secret", "node-secret"] {
                assert!(!shown.contains(token), "{token} in {shown}");
            }
        }
    }
}
