//! `dtest node`: a node daemon. Listens on loopback unless told otherwise, requires a token,
//! runs commands only with `--allow-commands`, and leaves gracefully on SIGTERM or Ctrl-C.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dtest_node::api::Resources;
use dtest_node::daemon::{NodeConfig, default_listen, serve};

use crate::Exit;

/// Arguments of `dtest node`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on; port 0 picks a free one (printed on start).
    #[arg(long, default_value_t = default_listen())]
    listen: SocketAddr,
    /// File holding the token every request must carry (`Authorization: Bearer TOKEN`).
    #[arg(long)]
    token_file: PathBuf,
    /// The scenario group this node stands for.
    #[arg(long)]
    group: Option<String>,
    /// Region, for locality.
    #[arg(long)]
    region: Option<String>,
    /// Zone, for locality.
    #[arg(long)]
    zone: Option<String>,
    /// Capabilities, comma-separated.
    #[arg(long, value_delimiter = ',')]
    capabilities: Vec<String>,
    /// Declared capacity instead of the detected one: `cpu_millis=4000,memory_mb=8192,gpus=1,name=3`.
    #[arg(long)]
    resources: Option<String>,
    /// Run command tasks (arbitrary programs the orchestrator names). Off by default.
    #[arg(long)]
    allow_commands: bool,
    /// Directory commands run in.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Milliseconds between heartbeats.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    heartbeat_ms: u64,
    /// On SIGTERM, seconds to wait for the orchestrator to take the last results.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    drain_timeout_s: u64,
    /// Exit when this process is no longer the parent (set by `dtest run --local`).
    #[arg(long, hide = true)]
    parent_pid: Option<i32>,
}

/// Runs the daemon until SIGTERM or Ctrl-C.
pub fn run(args: &Args) -> Exit {
    let token = match std::fs::read_to_string(&args.token_file) {
        Ok(text) if !text.trim().is_empty() => text.trim().to_owned(),
        Ok(_) => return bad(&format!("{}: the token file is empty", args.token_file.display())),
        Err(e) => return bad(&format!("{}: {e}", args.token_file.display())),
    };
    let resources = match args.resources.as_deref().map(parse_resources).transpose() {
        Ok(resources) => resources,
        Err(e) => return bad(&format!("--resources: {e}")),
    };
    let workdir = match args.workdir.clone().map_or_else(std::env::current_dir, Ok) {
        Ok(dir) if dir.is_dir() => dir,
        Ok(dir) => return bad(&format!("--workdir {}: not a directory", dir.display())),
        Err(e) => return bad(&format!("the current directory: {e}")),
    };
    let config = NodeConfig {
        token,
        group: args.group.clone(),
        region: args.region.clone(),
        zone: args.zone.clone(),
        capabilities: args.capabilities.iter().filter(|c| !c.is_empty()).cloned().collect(),
        resources,
        allow_commands: args.allow_commands,
        workdir,
        heartbeat_interval_ms: args.heartbeat_ms,
        drain_timeout: Duration::from_secs(args.drain_timeout_s),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return bad(&format!("cannot start the runtime: {e}")),
    };
    let parent_pid = args.parent_pid;
    let listen = args.listen;
    let result = runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        if !local.ip().is_loopback() {
            eprintln!("dtest node: listening on {local}, beyond this machine; only the token guards it");
        }
        // The first line of stdout is the address, for `dtest run --local` and scripts.
        println!("dtest node listening on http://{local}");
        let _ = std::io::stdout().flush();
        serve(config, listener, shutdown_signal(parent_pid)).await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => bad(&e),
    }
}

fn bad(message: &str) -> Exit {
    eprintln!("error: {message}");
    Exit::BadInput
}

/// SIGTERM, Ctrl-C, or the parent gone.
async fn shutdown_signal(parent_pid: Option<i32>) {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    let orphaned = async {
        let Some(parent) = parent_pid else { return std::future::pending().await };
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            if nix::unistd::getppid().as_raw() != parent {
                return;
            }
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
        () = orphaned => {}
    }
}

/// `cpu_millis=4000,memory_mb=8192,gpus=1,name=3`.
pub fn parse_resources(text: &str) -> Result<Resources, String> {
    let mut resources = Resources::default();
    let mut custom = BTreeMap::new();
    for pair in text.split(',').filter(|p| !p.trim().is_empty()) {
        let (name, value) = pair.split_once('=').ok_or_else(|| format!("`{pair}` is not NAME=AMOUNT"))?;
        let value: u64 = value.trim().parse().map_err(|_| format!("`{value}` is not a whole number"))?;
        match name.trim() {
            "cpu_millis" => resources.cpu_millis = value,
            "memory_mb" => resources.memory_mb = value,
            "disk_mb" => resources.disk_mb = value,
            "net_mbps" => resources.net_mbps = value,
            "gpus" => resources.gpus = value,
            other => {
                custom.insert(other.to_owned(), value);
            }
        }
    }
    resources.custom = custom;
    Ok(resources)
}
