//! `dtest mcp`: dtest as Model Context Protocol tools for AI assistants, on stdio or, with
//! `--http`, as Streamable HTTP at `/mcp` (loopback by default, bearer token, Origin checked).
//! It embeds an orchestrator (with `--local N` node daemons) unless `--orchestrator URL` names a
//! running `dtest serve`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use dtest_mcp::{Config, Guard, HttpConfig, Upstream};

use crate::Exit;
use crate::node::read_token;

/// `dtest mcp` flags.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Serve Streamable HTTP at ADDR/mcp instead of stdio (port 0 picks a free one).
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// With --http: a file holding the bearer token every request must carry.
    #[arg(long, value_name = "FILE", requires = "http")]
    token_file: Option<PathBuf>,
    /// With --http: serve HTTPS with this certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires_all = ["http", "tls_key"])]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// With --tls-cert: mutual TLS, every client must present a certificate this CA (PEM) signed.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    /// With --http beyond loopback and no --tls-cert: listen anyway, the token in clear.
    #[arg(long, requires = "http", conflicts_with = "tls_cert")]
    insecure_plaintext: bool,
    /// With --http: a browser origin allowed besides this machine's own (repeatable), like
    /// `https://app.example.com:443`.
    #[arg(long = "allow-origin", value_name = "ORIGIN", requires = "http")]
    allow_origins: Vec<String>,
    /// Drive this running `dtest serve` instead of an embedded orchestrator.
    #[arg(long, value_name = "URL", conflicts_with_all = ["local", "data"])]
    orchestrator: Option<String>,
    /// With --orchestrator: a file holding its operator token.
    #[arg(long, value_name = "FILE", requires = "orchestrator")]
    orchestrator_token_file: Option<PathBuf>,
    /// TLS to the orchestrator (an `https://` --orchestrator).
    #[command(flatten)]
    orchestrator_tls: crate::secure::ClientArgs,
    /// Start N local node daemons (group `local`) for the embedded orchestrator.
    #[arg(long, value_name = "N", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(dtest_mcp::LOCAL_MAX)))]
    local: u32,
    /// Let the local nodes run command tasks (nodes elsewhere decide by their own flag).
    #[arg(long)]
    allow_commands: bool,
    /// The embedded orchestrator's data directory (a temporary one, removed at exit, by default).
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
    /// Hosts load may be sent to (repeatable): `loopback`, a host name or address,
    /// `*.example.com`, or `*`. Default: loopback only.
    #[arg(long = "allow-target", value_name = "PATTERN", value_parser = host_pattern)]
    allow_targets: Vec<String>,
    /// Hosts a node registered through `register_node` may be at (repeatable), in the same
    /// patterns: the orchestrator sends each node its token and work. Default: loopback only.
    #[arg(long = "allow-node", value_name = "PATTERN", value_parser = host_pattern)]
    allow_nodes: Vec<String>,
    /// The highest total rate one load may ask for, requests per second.
    #[arg(long, default_value_t = 1_000.0, value_parser = rate)]
    max_rps: f64,
    /// The longest one load may last, seconds.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    max_duration: u64,
}

fn host_pattern(text: &str) -> Result<String, String> {
    dtest_mcp::check_host_pattern(text).map(|()| text.to_owned())
}

fn rate(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(rate) if rate.is_finite() && rate > 0.0 && rate <= 10_000_000.0 => Ok(rate),
        _ => Err(format!("expects a rate above 0 and at most 10000000, found {text:?}")),
    }
}

pub fn run(args: &Args) -> Exit {
    let upstream = match &args.orchestrator {
        Some(url) => {
            let Some(file) = &args.orchestrator_token_file else {
                return bad("--orchestrator needs --orchestrator-token-file (its operator token)");
            };
            let tls = match args.orchestrator_tls.client() {
                Ok(tls) => tls,
                Err(e) => return bad(&e),
            };
            match read_token(file) {
                Ok(token) => {
                    crate::secure::warn_if_in_clear("--orchestrator", url);
                    Upstream::Remote { url: url.clone(), token, tls }
                }
                Err(e) => return bad(&format!("--orchestrator-token-file {e}")),
            }
        }
        None if args.orchestrator_tls.given() => {
            return bad("--cacert and --client-cert are for an https:// --orchestrator");
        }
        None => Upstream::Embedded { local: args.local, allow_commands: args.allow_commands, data: args.data.clone() },
    };
    let node_exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => return bad(&format!("cannot find this executable: {e}")),
    };
    let mut guard = Guard { max_rps: args.max_rps, max_duration_s: args.max_duration, ..Guard::default() };
    if !args.allow_targets.is_empty() {
        guard.allow_targets = args.allow_targets.clone();
    }
    if !args.allow_nodes.is_empty() {
        guard.allow_nodes = args.allow_nodes.clone();
    }
    let config = Config { upstream, guard, node_exe };
    let http = match (args.http, &args.token_file) {
        (None, _) => None,
        (Some(_), None) => return bad("--http needs --token-file: every request must carry its token"),
        (Some(listen), Some(file)) => {
            let token = match read_token(file) {
                Ok(token) => token,
                Err(e) => return bad(&format!("--token-file {e}")),
            };
            let identity = match crate::secure::identity(args.tls_cert.as_deref(), args.tls_key.as_deref()) {
                Ok(identity) => identity,
                Err(e) => return bad(&e),
            };
            let client_ca = args.tls_client_ca.as_deref();
            let tls =
                match crate::secure::listening("--http", listen, identity.as_ref(), client_ca, args.insecure_plaintext)
                {
                    Ok(tls) => tls,
                    Err(e) => return bad(&e),
                };
            Some(HttpConfig { listen, token, allowed_origins: args.allow_origins.clone(), tls })
        }
    };
    let scheme = if http.as_ref().is_some_and(|h| h.tls.is_some()) { "https" } else { "http" };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return bad(&format!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(async {
        let shutdown = async {
            tokio::select! {
                () = crate::node::shutdown_signal(None) => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        };
        match http {
            None => dtest_mcp::serve_stdio(config, shutdown).await,
            Some(http) => {
                let ready = |address: SocketAddr| {
                    if !address.ip().is_loopback() && scheme == "http" {
                        eprintln!(
                            "dtest mcp: listening on {address} in plain HTTP: the token crosses the network in clear"
                        );
                    }
                    // The first line of stdout is the address, for scripts and tests.
                    println!("dtest mcp listening on {scheme}://{address}/mcp");
                    let _ = std::io::stdout().flush();
                };
                dtest_mcp::serve_http(config, http, ready, shutdown).await
            }
        }
    });
    // Simulations run on threads of their own, and the embedded orchestrator's executions are
    // journaled: nothing to wait for.
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
