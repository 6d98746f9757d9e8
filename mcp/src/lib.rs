//! `dtest mcp`: the whole of dtest as Model Context Protocol tools, for AI assistants.
//!
//! An assistant writes a scenario and checks it (`validate_scenario`), simulates it on one seed,
//! across seeds or across strategies (`run_simulation`, `sweep_seeds`, `compare_strategies`),
//! runs it on real nodes and watches it (`submit_test_execution`, `get_execution_status`,
//! `get_report`), aims load (`start_load_test`, within the guardrails), and reads the cluster's
//! health, resources and connections: the seed system's five groups of methods, by their names.
//!
//! Simulations run in this process, on threads of their own. Everything about real nodes goes
//! to a `dtest serve` over its REST API: the one given by `--orchestrator URL`, or one embedded
//! in this process on a loopback port with a token of its own, with `--local N` node daemons
//! registered to it. So a tool behaves the same against either, and the service's rules (its
//! validation, its limits, its journal) are the rules here.
//!
//! Modules:
//! - `tools`: the tools and what each does.
//! - `wire`: their arguments and answers, whose JSON Schemas are the tools' schemas.
//! - `jobs`: simulations running in the background, their progress and their stop.
//! - `upstream`: the `dtest serve` the tools drive, embedded or remote, and local nodes.
//! - `guard`: what load an assistant may aim, and where.
//! - `resources`: reports, shipped scenarios and the scenario schema as resources; the prompt.
//! - `http`: the Streamable HTTP transport's door: token, Host and Origin.

mod guard;
mod http;
mod jobs;
mod resources;
mod tools;
mod upstream;
mod wire;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

pub use guard::{Guard, check_host_pattern};
pub use http::HttpConfig;
use rmcp::ServiceExt;
pub use upstream::{LOCAL_MAX, Upstream};

/// How to run `dtest mcp`.
#[derive(Clone, Debug)]
pub struct Config {
    /// The orchestrator the execution tools drive.
    pub upstream: Upstream,
    /// What load may be aimed where.
    pub guard: Guard,
    /// The `dtest` executable, for local node daemons.
    pub node_exe: PathBuf,
}

/// Why `dtest mcp` could not start or went on no longer.
#[derive(Debug)]
pub struct McpError(pub String);

impl std::fmt::Display for McpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for McpError {}

/// Serves MCP on stdin and stdout until the client closes them or `shutdown` completes.
pub async fn serve_stdio(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), McpError> {
    let host = Arc::new(upstream::Host::start(&config).await?);
    let server = tools::Dtest::new(host.clone(), Arc::default(), Arc::new(config.guard), tools::Files::Any);
    let running = server
        .serve(rmcp::transport::stdio())
        .await
        .map_err(|e| McpError(format!("the MCP session did not start: {e}")))?;
    let cancel = running.cancellation_token();
    let done = tokio::select! {
        done = running.waiting() => done.map(|_| ()).map_err(|e| McpError(e.to_string())),
        () = shutdown => {
            cancel.cancel();
            Ok(())
        }
    };
    host.stop().await;
    done
}

/// Serves MCP as Streamable HTTP at `/mcp` until `shutdown` completes; `ready` is called with
/// the address once it listens.
pub async fn serve_http(
    config: Config,
    http: HttpConfig,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), McpError> {
    let root = std::env::current_dir()
        .and_then(|dir| dir.canonicalize())
        .map_err(|e| McpError(format!("cannot read the working directory: {e}")))?;
    let host = Arc::new(upstream::Host::start(&config).await?);
    let server = tools::Dtest::new(host.clone(), Arc::default(), Arc::new(config.guard), tools::Files::Under(root));
    let served = http::serve(http, move || server.clone(), ready, shutdown).await;
    host.stop().await;
    served
}

#[cfg(test)]
mod tests {
    use dtest_node::secret::Secret;

    use super::*;

    #[test]
    fn debug_of_a_config_shows_no_token() {
        let config = Config {
            upstream: Upstream::Remote {
                url: "http://127.0.0.1:8700".to_owned(),
                token: Secret::new("operator-secret"),
                tls: Default::default(),
            },
            guard: Guard::default(),
            node_exe: PathBuf::from("dtest"),
        };
        let http = HttpConfig {
            listen: "127.0.0.1:0".parse().expect("an address"),
            token: Secret::new("mcp-secret"),
            allowed_origins: Vec::new(),
            tls: None,
        };
        for shown in [format!("{config:?}"), format!("{config:#?}"), format!("{http:?}")] {
            for token in ["operator-secret", "mcp-secret"] {
                assert!(!shown.contains(token), "{token} in {shown}");
            }
        }
    }
}
