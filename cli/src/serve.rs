//! `dtest serve`: the orchestrator as a durable service (REST, WebSocket events, OpenAPI). It
//! listens on loopback unless told otherwise, needs a token on every request, and keeps its state
//! in SQLite under `--data`. SIGTERM or Ctrl-C stops it; running executions stay with their
//! nodes and resume at the next start with the same `--data`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use dtest_serve::api::Access;

use crate::Exit;

/// `dtest serve` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Where to listen (loopback by default; port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8700")]
    listen: SocketAddr,
    /// A file holding the operator token (may do anything).
    #[arg(long)]
    token_file: PathBuf,
    /// A file holding the read-only token (may only GET).
    #[arg(long)]
    read_token_file: Option<PathBuf>,
    /// A file holding the token the nodes accept (default: the operator token).
    #[arg(long)]
    node_token_file: Option<PathBuf>,
    /// The data directory: executions, their journals and reports, the registry.
    #[arg(long, default_value = "dtest-data")]
    data: PathBuf,
    #[command(flatten)]
    tls: crate::secure::ServerArgs,
    #[command(flatten)]
    logs: crate::logs::LogArgs,
    /// Requests per second each client address may make (bursts of twice that); 0: no limit.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    rate_limit: u32,
}

/// Runs the service until SIGTERM or Ctrl-C.
pub fn run(args: &Args) -> Exit {
    args.logs.init(crate::logs::Severity::Info);
    let read = |file: &PathBuf| crate::node::read_token(file);
    let operator = match read(&args.token_file) {
        Ok(token) => token,
        Err(e) => return bad(&format!("--token-file {e}")),
    };
    let read_only = match args.read_token_file.as_ref().map(read).transpose() {
        Ok(token) => token,
        Err(e) => return bad(&format!("--read-token-file {e}")),
    };
    if read_only.as_ref().is_some_and(|r| operator.matches(r.expose().as_bytes())) {
        return bad("--read-token-file holds the operator token: give the read-only role its own");
    }
    let node_token = match args.node_token_file.as_ref().map(read).transpose() {
        Ok(token) => token.unwrap_or_else(|| operator.clone()),
        Err(e) => return bad(&format!("--node-token-file {e}")),
    };
    let secure = match args.tls.daemon(args.listen) {
        Ok(secure) => secure,
        Err(e) => return bad(&e),
    };
    let scheme = secure.scheme();
    let config = dtest_serve::Config {
        listen: args.listen,
        access: Access { operator, read_only, rate_per_s: args.rate_limit },
        node_token,
        tls: secure.server,
        node_tls: secure.client,
        data: args.data.clone(),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return bad(&format!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(dtest_serve::run(
        config,
        |address| {
            if !address.ip().is_loopback() && scheme == "http" {
                tracing::warn!(%address, "listening in plain HTTP beyond this machine: tokens cross the network in clear");
            }
            // The first line of stdout is the address, for scripts and tests.
            println!("dtest serve listening on {scheme}://{address}");
            let _ = std::io::stdout().flush();
        },
        crate::node::shutdown_signal(None),
    ));
    // The runtime's drop would wait for the executions' tasks: they are journaled, so end them.
    runtime.shutdown_background();
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => bad(&e.to_string()),
    }
}

fn bad(message: &str) -> Exit {
    eprintln!("error: {message}");
    Exit::BadInput
}
