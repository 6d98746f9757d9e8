//! `dtest node`: a node daemon. Listens on loopback unless told otherwise, requires a token,
//! runs commands only with `--allow-commands`, registers with a `dtest serve` service when given
//! `--orchestrator`, and leaves gracefully on SIGTERM or Ctrl-C.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use dtest_node::api::{Resources, validate_labels};
use dtest_node::daemon::{MAX_COMMANDS_DEFAULT, MAX_COMMANDS_MAX, NodeConfig, default_listen, serve_on};
use dtest_node::register::{Registration, default_name};
use dtest_node::secret::Secret;
use dtest_node::secure::{ClientTls, Incoming};

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
    /// Run command tasks (arbitrary programs the orchestrator names). Off by default. Of this
    /// process's environment they get only PATH, HOME, LANG, LC_ALL and TZ, besides the
    /// scenario's `env` and DTEST_INBOX, DTEST_NODE, DTEST_WORKDIR and TMPDIR.
    #[arg(long)]
    allow_commands: bool,
    /// The node's working directory [default: the current one]. Each command attempt runs in a
    /// directory of its own, `.dtest/tasks/PLAN/TASK-ATTEMPT` here (mode 0700, its TMPDIR,
    /// removed when the attempt ends), unless the scenario's `cwd` names one (relative to this
    /// directory); a program given as a relative path with a `/` (`./run-tests`) is found here,
    /// and commands get its absolute path in DTEST_WORKDIR. Messages for them are appended to
    /// `.dtest/inbox-PORT.jsonl` here, whose path they get in DTEST_INBOX.
    #[arg(long)]
    workdir: Option<PathBuf>,
    /// Command tasks that run at once, across all plans; more wait for a slot (their timeouts
    /// run meanwhile).
    #[arg(long, default_value_t = MAX_COMMANDS_DEFAULT as u64,
          value_parser = clap::value_parser!(u64).range(1..=MAX_COMMANDS_MAX as u64))]
    max_commands: u64,
    /// Register with the `dtest serve` service at this URL (`POST URL/v1/nodes`), at start and
    /// every 5 s; failures are logged and retried, never fatal.
    #[arg(long, value_name = "URL")]
    orchestrator: Option<String>,
    /// The URL the service reaches this node at [default: http://LISTEN-ADDRESS; required when
    /// listening on 0.0.0.0 or [::]].
    #[arg(long, value_name = "URL", requires = "orchestrator")]
    advertise: Option<String>,
    /// The node's name for the service, and its commands' `DTEST_NODE` [default: GROUP-PORT, or
    /// node-PORT without --group].
    #[arg(long)]
    name: Option<String>,
    /// A label for the service to choose nodes by, KEY=VALUE (key: 1-63 of a-z 0-9 _ . -); repeat
    /// for more, up to 32.
    #[arg(long = "label", value_name = "KEY=VALUE", requires = "orchestrator")]
    labels: Vec<String>,
    /// File holding the token the service expects [default: the --token-file one].
    #[arg(long, value_name = "FILE", requires = "orchestrator")]
    orchestrator_token_file: Option<PathBuf>,
    /// Milliseconds between heartbeats.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..=60_000))]
    heartbeat_ms: u64,
    /// On SIGTERM, seconds to wait for the orchestrator to take the last results.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=3600))]
    drain_timeout_s: u64,
    #[command(flatten)]
    tls: crate::secure::ServerArgs,
    #[command(flatten)]
    logs: crate::logs::LogArgs,
    /// Exit when this process is no longer the parent (set by `dtest run --local`).
    #[arg(long, hide = true)]
    parent_pid: Option<i32>,
}

/// Runs the daemon until SIGTERM or Ctrl-C.
pub fn run(args: &Args) -> Exit {
    args.logs.init(crate::logs::Severity::Info);
    let token = match read_token(&args.token_file) {
        Ok(token) => token,
        Err(e) => return bad(&e),
    };
    let resources = match args.resources.as_deref().map(parse_resources).transpose() {
        Ok(resources) => resources,
        Err(e) => return bad(&format!("--resources: {e}")),
    };
    // What the node will say of itself, checked as orchestrators check it (a scenario's rules).
    let names = [("--group", &args.group), ("--region", &args.region), ("--zone", &args.zone)];
    let named = names.iter().filter_map(|(flag, value)| value.as_deref().map(|v| (*flag, v)));
    let capabilities = args.capabilities.iter().filter(|c| !c.is_empty()).map(|c| ("--capabilities", c.as_str()));
    for (flag, value) in named.chain(capabilities) {
        if let Err(why) = dtest_core::scenario::rules::name(value) {
            return bad(&format!("{flag} {value}: {why}"));
        }
    }
    if let Some(resources) = &resources {
        let mut problems = Vec::new();
        dtest_core::scenario::rules::resources(resources, &dtest_core::scenario::Path::root(), &mut problems);
        if let Some((field, why)) = problems.first() {
            return bad(&format!("--resources {field}: {why}"));
        }
    }
    let workdir = match args.workdir.clone().map_or_else(std::env::current_dir, Ok) {
        Ok(dir) if dir.is_dir() => dir,
        Ok(dir) => return bad(&format!("--workdir {}: not a directory", dir.display())),
        Err(e) => return bad(&format!("the current directory: {e}")),
    };
    let secure = match args.tls.daemon(args.listen) {
        Ok(secure) => secure,
        Err(e) => return bad(&e),
    };
    let announce = match Announce::of(args, &token) {
        Ok(announce) => announce,
        Err(e) => return bad(&e),
    };
    let mut config = NodeConfig {
        token,
        name: args.name.clone(),
        group: args.group.clone(),
        region: args.region.clone(),
        zone: args.zone.clone(),
        capabilities: args.capabilities.iter().filter(|c| !c.is_empty()).cloned().collect(),
        resources,
        allow_commands: args.allow_commands,
        workdir,
        max_commands: args.max_commands as usize,
        heartbeat_interval_ms: args.heartbeat_ms,
        drain_timeout: Duration::from_secs(args.drain_timeout_s),
        registration: None,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return bad(&format!("cannot start the runtime: {e}")),
    };
    let parent_pid = args.parent_pid;
    let listen = args.listen;
    let scheme = secure.scheme();
    let result = runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        if !local.ip().is_loopback() && secure.server.is_none() {
            tracing::warn!(%local, "listening in plain HTTP beyond this machine: the token crosses the network in clear");
        }
        if let Some(announce) = announce {
            let registration = announce.registration(&config, local, scheme, secure.client.clone());
            config.name = Some(registration.name.clone());
            config.registration = Some(registration);
        }
        // The first line of stdout is the address, for `dtest run --local` and scripts.
        println!("dtest node listening on {scheme}://{local}");
        let _ = std::io::stdout().flush();
        let listener = Incoming::new(listener, secure.server);
        serve_on(config, listener, shutdown_signal(parent_pid)).await.map_err(|e| e.to_string())
    });
    match result {
        Ok(()) => Exit::Ok,
        Err(e) => bad(&e),
    }
}

/// The token in `file`, trimmed; an empty file is an error.
pub fn read_token(file: &std::path::Path) -> Result<Secret, String> {
    match std::fs::read_to_string(file) {
        Ok(text) if !text.trim().is_empty() => Ok(Secret::new(text.trim())),
        Ok(_) => Err(format!("{}: the token file is empty", file.display())),
        Err(e) => Err(format!("{}: {e}", file.display())),
    }
}

/// What `--orchestrator` and its companions say, checked before the daemon starts; the parts
/// that need the bound port are filled in by [`Announce::registration`].
struct Announce {
    orchestrator: String,
    token: Secret,
    advertise: Option<String>,
    labels: BTreeMap<String, String>,
}

impl Announce {
    /// `None` without `--orchestrator`.
    fn of(args: &Args, node_token: &Secret) -> Result<Option<Announce>, String> {
        let Some(orchestrator) = args.orchestrator.clone() else { return Ok(None) };
        if !orchestrator.starts_with("http://") && !orchestrator.starts_with("https://") {
            return Err(format!("--orchestrator {orchestrator}: give a URL such as http://host:7000"));
        }
        if args.listen.ip().is_unspecified() && args.advertise.is_none() {
            return Err(format!(
                "--listen {} is every address: give --advertise http://HOST:PORT, the URL the service reaches                  this node at",
                args.listen
            ));
        }
        let token = match &args.orchestrator_token_file {
            Some(file) => read_token(file).map_err(|e| format!("--orchestrator-token-file {e}"))?,
            None => node_token.clone(),
        };
        crate::secure::warn_if_in_clear("--orchestrator", &orchestrator);
        let labels = parse_labels(&args.labels)?;
        let advertise = args.advertise.clone();
        Ok(Some(Announce { orchestrator, token, advertise, labels }))
    }

    /// The registration of the daemon bound to `local`.
    fn registration(self, config: &NodeConfig, local: SocketAddr, scheme: &str, tls: ClientTls) -> Registration {
        Registration {
            orchestrator: self.orchestrator,
            token: self.token,
            name: config.name.clone().unwrap_or_else(|| default_name(config.group.as_deref(), local.port())),
            url: self.advertise.unwrap_or_else(|| format!("{scheme}://{local}")),
            labels: self.labels,
            tls,
        }
    }
}

/// `--label KEY=VALUE`s, checked as the service will check them.
fn parse_labels(pairs: &[String]) -> Result<BTreeMap<String, String>, String> {
    let mut labels = BTreeMap::new();
    for pair in pairs {
        let (key, value) = pair.split_once('=').ok_or_else(|| format!("--label {pair}: give KEY=VALUE"))?;
        if labels.insert(key.to_owned(), value.to_owned()).is_some() {
            return Err(format!("--label {key}: given twice"));
        }
    }
    validate_labels(&labels).map_err(|e| format!("--label: {e}"))?;
    Ok(labels)
}

fn bad(message: &str) -> Exit {
    eprintln!("error: {message}");
    Exit::BadInput
}

/// SIGTERM, Ctrl-C, or the parent gone.
pub async fn shutdown_signal(parent_pid: Option<i32>) {
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
