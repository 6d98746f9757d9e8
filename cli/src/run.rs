//! `dtest run`: a scenario on real node daemons, as a thin adapter on
//! [`dtest_orchestrator::Session`]: arguments in, a progress bar drawn from the session's
//! events, signals turned into a cancel, the report out and the exit code.

use std::path::{Path, PathBuf};

use dtest_core::report::Report;
use dtest_core::scenario::Scenario;
use dtest_node::secret::Secret;
use dtest_orchestrator::local::LOCAL_MAX;
use dtest_orchestrator::session::tls_options;
use dtest_orchestrator::{NodeSource, Progress, Session, SessionConfig, SessionEvent};

use crate::Exit;
use dtest_orchestrator::scenario_file::load;

/// Arguments of `dtest run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file.
    file: PathBuf,
    /// Node daemons to run on: `http://host:port`, comma-separated.
    #[arg(long, value_delimiter = ',', required_unless_present = "local", conflicts_with = "local")]
    nodes: Vec<String>,
    /// Start N node daemons on this machine (loopback, free ports, a fresh token) and run on them.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=LOCAL_MAX as i64))]
    local: Option<u32>,
    /// The nodes' token, for `--nodes` (else the DTEST_TOKEN environment variable).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Seed of the orchestrator's own choices (random placement, retry jitter).
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print the JSON report on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write a JUnit XML file (one test case per task instance) for CI systems.
    #[arg(long)]
    junit: Option<PathBuf>,
    /// Also write a self-contained HTML report (charts of the load) to this file.
    #[arg(long)]
    html: Option<PathBuf>,
    /// Send a target's load elsewhere than its `url`: `NAME=URL` (repeatable).
    #[arg(long = "target", value_name = "NAME=URL")]
    targets: Vec<String>,
    /// TLS to the nodes (`https://` URLs in --nodes).
    #[command(flatten)]
    node_tls: crate::secure::ClientArgs,
    #[command(flatten)]
    logs: crate::logs::LogArgs,
}

fn bad(message: &str) -> Exit {
    eprintln!("error: {message}");
    Exit::BadInput
}

/// Runs the scenario on real nodes.
pub fn run(args: &Args) -> Exit {
    args.logs.init(crate::logs::Severity::Warn);
    let mut scenario = match load(&args.file) {
        Ok(scenario) => scenario,
        Err(problems) => {
            for p in &problems {
                eprintln!("{}", p.display_in(&args.file.display().to_string()));
            }
            return Exit::BadInput;
        }
    };
    for assignment in &args.targets {
        let Some((name, url)) = assignment.split_once('=') else {
            return bad(&format!("--target {assignment}: expected NAME=URL"));
        };
        match scenario.targets.iter_mut().find(|t| t.name == name) {
            Some(target) => target.url = Some(url.to_owned()),
            None => return bad(&format!("--target {assignment}: the scenario has no target `{name}`")),
        }
    }
    let tls = match tls_options(&scenario, args.file.parent().unwrap_or(Path::new("."))) {
        Ok(tls) => tls,
        Err(e) => return bad(&e),
    };
    let nodes = match args.local {
        Some(n) => NodeSource::Local(n),
        None => match (token(args.token_file.as_deref()), args.node_tls.client()) {
            (Ok(token), Ok(tls)) => {
                args.nodes.iter().for_each(|url| crate::secure::warn_if_in_clear("--nodes", url));
                NodeSource::Remote { urls: args.nodes.clone(), token, tls }
            }
            (Err(e), _) | (_, Err(e)) => return bad(&e),
        },
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return bad(&format!("cannot start the runtime: {e}")),
    };
    let config = SessionConfig {
        scenario: scenario.clone(),
        tls,
        nodes,
        seed: args.seed,
        node_exe: None,
        shares: Vec::new(),
        journal: None,
        id: None,
    };
    match runtime.block_on(drive(config)) {
        Ok(report) => finish(args, &scenario, &report),
        Err(NoReport::Interrupted) => {
            eprintln!("interrupted while the nodes started: no run, no report");
            Exit::Interrupted
        }
        Err(NoReport::Failed(e)) => bad(&e),
    }
}

/// The nodes' token: `--token-file`, else `DTEST_TOKEN`.
fn token(file: Option<&Path>) -> Result<Secret, String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?,
        None => std::env::var("DTEST_TOKEN")
            .map_err(|_| "--nodes needs the nodes' token: --token-file FILE or DTEST_TOKEN".to_owned())?,
    };
    let token = token.trim();
    if token.is_empty() {
        return Err("the nodes' token is empty".to_owned());
    }
    Ok(Secret::new(token))
}

/// Runs the session to its end: SIGINT or SIGTERM cancels it (a second one exits at once), and
/// the progress bar follows its events. Interrupted while the nodes start, it stops there.
async fn drive(config: SessionConfig) -> Result<Report, NoReport> {
    let (signalled_tx, mut signalled) = tokio::sync::watch::channel(0u32);
    // Listening before anything starts, so no signal falls between two listeners.
    let mut signals = Signals::new();
    tokio::spawn(async move {
        signals.next().await;
        signalled_tx.send_replace(1);
        signals.next().await;
        std::process::exit(Exit::Interrupted as i32);
    });
    let mut session = tokio::select! {
        started = Session::start(config) => started.map_err(|e| NoReport::Failed(e.to_string()))?,
        // Dropping the start stops the daemons it started.
        _ = signalled.changed() => return Err(NoReport::Interrupted),
    };
    let bar = indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tasks ended, {msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    crate::logs::around(Some(&bar));
    let mut cancelled = false;
    loop {
        tokio::select! {
            event = session.next_event() => match event {
                Some(SessionEvent::Progress(p)) => draw(&bar, &p),
                Some(SessionEvent::Warning(w)) => tracing::warn!(execution = session.id(), "{w}"),
                Some(SessionEvent::Run { .. }) => {}
                None => break,
            },
            _ = signalled.changed(), if !cancelled => {
                cancelled = true;
                bar.suspend(|| eprintln!("interrupted: cancelling the run's work on every node (again to quit at once)"));
                session.cancel();
            }
        }
    }
    crate::logs::around(None);
    bar.finish_and_clear();
    session.finish().await.map_err(|e| NoReport::Failed(e.to_string()))
}

/// Why a run ended without a report.
enum NoReport {
    /// SIGINT or SIGTERM before the run started.
    Interrupted,
    /// The session could not start or finish.
    Failed(String),
}

/// SIGINT and SIGTERM, listened to for the whole run.
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals { interrupt: signal(SignalKind::interrupt()).ok(), terminate: signal(SignalKind::terminate()).ok() }
    }

    /// Resolves on the next SIGINT or SIGTERM (never, if neither could be listened to).
    async fn next(&mut self) {
        async fn recv(signal: &mut Option<tokio::signal::unix::Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            () = recv(&mut self.interrupt) => {}
            () = recv(&mut self.terminate) => {}
        }
    }
}

fn draw(bar: &indicatif::ProgressBar, p: &Progress) {
    bar.set_length(p.tasks);
    bar.set_position(p.tasks_ended);
    let mut message = format!("{}/{} nodes up", p.nodes_up, p.nodes);
    if let Some(load) = p.load {
        message = format!("{message}, {load}");
    }
    if p.cancelling {
        message = format!("cancelling, {message}");
    }
    bar.set_message(message);
}

/// Writes and prints the report; the exit code is the report's verdict.
fn finish(args: &Args, scenario: &Scenario, report: &Report) -> Exit {
    let outputs = crate::output::Outputs {
        json: args.json,
        out: args.out.as_deref(),
        html: args.html.as_deref(),
        junit: args.junit.as_deref().map(|path| (path, dtest_orchestrator::junit::junit(scenario, report))),
    };
    crate::output::finish(report, outputs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn resources_are_named_amounts() {
        let r = crate::node::parse_resources("cpu_millis=4000,memory_mb=8192,gpu=2").expect("valid");
        assert_eq!((r.cpu_millis, r.memory_mb, r.custom.get("gpu").copied()), (4000, 8192, Some(2)));
        assert!(crate::node::parse_resources("cpu_millis").is_err());
        assert!(crate::node::parse_resources("cpu_millis=lots").is_err());
    }
}
