//! `dtest run`: the core's orchestrator driving real node daemons over HTTP, with the scenario's
//! faults made real (SIGKILL, SIGSTOP, and the daemons' own message layer for the network), the
//! same independent checker as the simulator, and the contract's report and JUnit.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dtest_core::checker::Checker;
use dtest_core::faults::{Link, NetFaults};
use dtest_core::measure::Measure;
use dtest_core::placement::{Catalog, Labels, NodeIdx, NodeSpec, Observations, Placer, Pool, request_for};
use dtest_core::protocol::{
    Attempt, Event, Frame, Orchestrator, OrchestratorConfig, Outcome, TaskId, TaskInput, TaskState, Terminal, ToAgent,
    ToOrchestrator,
};
use dtest_core::report::{
    Messages, Nodes, Report, StrategyUsed, TaskOutcome, TaskResult, Utilization, Violation, expectations, load_seconds,
};
use dtest_core::scenario::{FaultKind, GroupId, NodeRef, Scenario, TaskSpecId, Work, WorkloadMode};
use dtest_node::api::{Exchange, Faults, NodeInfo, Plan, PlanEntry, PlanWork};
use dtest_node::client::{ClientError, NodeClient};
use dtest_node::load::{LoadSpec, Rate};
use dtest_node::tls::TlsOptions;
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};

use crate::Exit;
use crate::live::LiveLoads;
use crate::validate::load;

/// Local nodes at most (`--local N`).
const LOCAL_MAX: u32 = 64;
/// How long the orchestrator waits for a node's frames in one long poll.
const POLL_WAIT_MS: u64 = 1_000;
/// How often the orchestrator looks at its timers.
const TICK_MS: u64 = 50;
/// A load task may run this much longer than its pattern and request timeout.
const LOAD_MARGIN_MS: u64 = 30_000;
/// Placement waits for every node's hello, or this long, so the first pass sees the cluster
/// rather than whichever nodes answered first.
const REGISTRATION_GRACE_MS: u64 = 5_000;

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
}

/// What a node needs to run a load task: the whole task's pattern; each node takes its
/// instance's share of the arrivals.
fn load_spec(load: &dtest_core::scenario::Load, url: &str, tls: &TlsOptions, seed: u64) -> LoadSpec {
    LoadSpec {
        url: url.to_owned(),
        method: load.method,
        headers: load.headers.clone(),
        body: load.body.clone(),
        timeout_ms: load.timeout_ms,
        connections: load.connections,
        http_version: load.http_version,
        tls: tls.clone(),
        start_ms: load.start_ms,
        rate: Rate::Pattern {
            pattern: load.pattern.clone(),
            // The simulator's seed for the same pattern, so `random` draws the same rates.
            seed: seed ^ u64::from(load.target.0),
            index: 0,
            of: 1,
        },
    }
}

fn bad(message: &str) -> Exit {
    eprintln!("error: {message}");
    Exit::BadInput
}

/// Runs the scenario on real nodes.
pub fn run(args: &Args) -> Exit {
    let scenario = match load(&args.file) {
        Ok(scenario) => scenario,
        Err(problems) => {
            for p in &problems {
                eprintln!("{}", p.display_in(&args.file.display().to_string()));
            }
            return Exit::BadInput;
        }
    };
    let mut scenario = scenario;
    for assignment in &args.targets {
        let Some((name, url)) = assignment.split_once('=') else {
            return bad(&format!("--target {assignment}: expected NAME=URL"));
        };
        match scenario.targets.iter_mut().find(|t| t.name == name) {
            Some(target) => target.url = Some(url.to_owned()),
            None => return bad(&format!("--target {assignment}: the scenario has no target `{name}`")),
        }
    }
    let tls = match tls_options(&scenario, &args.file) {
        Ok(tls) => tls,
        Err(e) => return bad(&e),
    };
    if let Err(e) = runnable(&scenario, &tls, args.local.is_some()) {
        return bad(&e);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return bad(&format!("cannot start the runtime: {e}")),
    };
    runtime.block_on(orchestrate(args, scenario, tls))
}

/// Each target's TLS settings, with its `ca_file` (relative to the scenario file) read: the
/// nodes get the certificates, not a path that only exists here.
fn tls_options(scenario: &Scenario, file: &Path) -> Result<Vec<TlsOptions>, String> {
    let dir = file.parent().unwrap_or(Path::new("."));
    let options = scenario.targets.iter().map(|t| {
        let ca_pem =
            match &t.tls.ca_file {
                None => None,
                Some(ca) => Some(std::fs::read_to_string(dir.join(ca)).map_err(|e| {
                    format!("targets.{}.tls.ca_file: cannot read {}: {e}", t.name, dir.join(ca).display())
                })?),
            };
        Ok(TlsOptions { ca_pem, insecure: t.tls.insecure })
    });
    options.collect()
}

/// What `run` needs that `sim` does not, checked before anything starts.
fn runnable(scenario: &Scenario, tls: &[TlsOptions], local: bool) -> Result<(), String> {
    for task in &scenario.workload.tasks {
        match &task.work {
            Work::Command { command: None, .. } => {
                return Err(format!("task `{}` has no `command`: `dtest run` needs the real one to run", task.name));
            }
            Work::Load(load) => {
                let target = &scenario.targets[load.target.0 as usize];
                let Some(url) = &target.url else {
                    return Err(format!(
                        "target `{}` has no `url`: `dtest run` needs one to send load to (or --target {}=URL)",
                        target.name, target.name
                    ));
                };
                let spec = load_spec(load, url, &tls[load.target.0 as usize], 0);
                dtest_node::load::check(&spec).map_err(|e| format!("task `{}`: {e}", task.name))?;
            }
            Work::Command { .. } => {}
        }
    }
    if !local {
        for fault in &scenario.faults {
            if matches!(fault.kind, FaultKind::Kill { .. } | FaultKind::Pause { .. }) {
                return Err(
                    "kill and pause faults need `--local`: dtest can only signal node processes it started".to_owned()
                );
            }
        }
    }
    Ok(())
}

/// A node of the run.
struct Member {
    /// `<group>-<n>`, as faults name it.
    name: String,
    node_ref: NodeRef,
    client: NodeClient,
    info: NodeInfo,
}

/// A node daemon started by `--local`.
struct LocalNode {
    identity: Identity,
    port: u16,
    child: Option<Child>,
    log: PathBuf,
}

/// What a local node stands for.
#[derive(Clone, Debug)]
struct Identity {
    name: String,
    node_ref: NodeRef,
    group: String,
    region: Option<String>,
    zone: Option<String>,
    capabilities: Vec<String>,
    resources: Option<dtest_core::scenario::Resources>,
}

/// A directory removed when the run ends, whatever the way.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn orchestrate(args: &Args, scenario: Scenario, tls: Vec<TlsOptions>) -> Exit {
    let dir = std::env::temp_dir().join(format!(
        "dtest-run-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    ));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return bad(&format!("cannot create {}: {e}", dir.display()));
    }
    let dir = TempDir(dir);
    let mut locals: Vec<LocalNode> = Vec::new();
    let token_file;
    let urls: Vec<String>;
    if let Some(n) = args.local {
        let token = match fresh_token() {
            Ok(token) => token,
            Err(e) => return bad(&format!("cannot draw a token: {e}")),
        };
        token_file = dir.0.join("token");
        if let Err(e) = write_private(&token_file, &token) {
            return bad(&format!("cannot write {}: {e}", token_file.display()));
        }
        let identities = local_identities(&scenario, n);
        let started = futures::future::join_all(identities.into_iter().enumerate().map(|(i, identity)| {
            let log = dir.0.join(format!("{}.log", identity.name));
            let token_file = token_file.clone();
            let heartbeat = scenario.failure_detector.heartbeat_interval_ms;
            async move {
                let mut node = LocalNode { identity, port: 0, child: None, log };
                match start_local(&mut node, &token_file, heartbeat).await {
                    Ok(()) => Ok(node),
                    Err(e) => Err(format!("local node {} ({i}): {e}", node.identity.name)),
                }
            }
        }))
        .await;
        for result in started {
            match result {
                Ok(node) => locals.push(node),
                Err(e) => return bad(&e),
            }
        }
        urls = locals.iter().map(|l| format!("http://127.0.0.1:{}", l.port)).collect();
    } else {
        token_file = match &args.token_file {
            Some(path) => path.clone(),
            None => match std::env::var("DTEST_TOKEN") {
                Ok(token) if !token.trim().is_empty() => {
                    let path = dir.0.join("token");
                    if let Err(e) = write_private(&path, token.trim()) {
                        return bad(&format!("cannot write {}: {e}", path.display()));
                    }
                    path
                }
                _ => return bad("--nodes needs the nodes' token: --token-file FILE or DTEST_TOKEN"),
            },
        };
        urls = args.nodes.iter().map(|u| u.trim().to_owned()).filter(|u| !u.is_empty()).collect();
        if urls.is_empty() {
            return bad("--nodes names no node");
        }
    }
    let token = match std::fs::read_to_string(&token_file) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_owned(),
        Ok(_) => return bad(&format!("{}: the token file is empty", token_file.display())),
        Err(e) => return bad(&format!("{}: {e}", token_file.display())),
    };

    // Every node must answer before anything starts; name all that do not.
    let clients: Vec<NodeClient> = urls.iter().map(|u| NodeClient::new(u, &token)).collect();
    let infos =
        futures::future::join_all(clients.iter().map(|c| async move { c.info(Duration::from_secs(3)).await })).await;
    let mut unreachable = Vec::new();
    let mut members = Vec::new();
    let mut per_group: BTreeMap<String, u32> = BTreeMap::new();
    for (i, (client, info)) in clients.into_iter().zip(infos).enumerate() {
        match info {
            Err(e) => unreachable.push(format!("{} ({e})", client.url())),
            Ok(info) => {
                let (name, node_ref) = match locals.get(i) {
                    Some(local) => (local.identity.name.clone(), local.identity.node_ref),
                    None => identify(&scenario, &info, i, &mut per_group),
                };
                members.push(Member { name, node_ref, client, info });
            }
        }
    }
    if !unreachable.is_empty() {
        return bad(&format!("unreachable nodes at start: {}", unreachable.join(", ")));
    }
    if scenario.workload.tasks.iter().any(|t| matches!(t.work, Work::Command { .. }))
        && let Some(m) = members.iter().find(|m| !m.info.allow_commands)
    {
        return bad(&format!("node {} ({}) runs no commands; start it with --allow-commands", m.name, m.client.url()));
    }

    let (pool, catalog, labels) = match pool_of_members(&scenario, &members) {
        Ok(built) => built,
        Err(e) => return bad(&e),
    };
    let (inputs, entries) = match task_inputs(&scenario, &catalog, &labels) {
        Ok(built) => built,
        Err(e) => return bad(&e),
    };
    let plan = Arc::new(Plan {
        id: format!("{}-{}", scenario.name, std::process::id()),
        entries: scenario
            .workload
            .tasks
            .iter()
            .map(|t| PlanEntry {
                name: t.name.clone(),
                count: t.count,
                work: match &t.work {
                    Work::Command { command: Some(c), .. } => {
                        PlanWork::Command { argv: c.argv.clone(), env: c.env.clone(), cwd: c.cwd.clone() }
                    }
                    Work::Load(load) => {
                        let url = scenario.targets[load.target.0 as usize].url.as_deref().unwrap_or_default();
                        PlanWork::Load(load_spec(load, url, &tls[load.target.0 as usize], args.seed))
                    }
                    Work::Command { command: None, .. } => unreachable!("checked by runnable()"),
                },
            })
            .collect(),
        elapsed_ms: 0,
    });
    // The run's clock starts as the nodes get the plan: loads' `start_s` count from here.
    let start = Instant::now();
    let plans = futures::future::join_all(members.iter().map(|m| m.client.put_plan(&plan))).await;
    for (m, result) in members.iter().zip(plans) {
        if let Err(e) = result {
            return bad(&format!("node {} ({}) refused the plan: {e}", m.name, m.client.url()));
        }
    }

    let mut driver = Driver::new(&scenario, members, locals, pool, inputs, entries, args.seed, plan);
    let outcome = driver.drive(&token_file, start).await;
    driver.stop_locals().await;
    drop(dir);
    let report = match outcome {
        Some(report) => report,
        None => {
            eprintln!("interrupted");
            return Exit::Failed;
        }
    };
    finish(args, &scenario, &report)
}

/// Writes and prints the report; the exit code is the report's verdict.
fn finish(args: &Args, scenario: &Scenario, report: &Report) -> Exit {
    let outputs = crate::output::Outputs {
        json: args.json,
        out: args.out.as_deref(),
        html: args.html.as_deref(),
        junit: args.junit.as_deref().map(|path| (path, junit(scenario, report))),
    };
    crate::output::finish(report, outputs)
}

/// Which scenario node each of `n` local daemons stands for: the scenario's nodes in order,
/// numbering on within a group when there are more daemons than scenario nodes.
fn local_identities(scenario: &Scenario, n: u32) -> Vec<Identity> {
    let nodes: Vec<NodeRef> = scenario.nodes().collect();
    let mut next_index: BTreeMap<u32, u32> = BTreeMap::new();
    (0..n as usize)
        .map(|i| {
            let base = nodes[i % nodes.len()];
            let group = &scenario.groups[base.group.0 as usize];
            let index = next_index.entry(base.group.0).or_insert(0);
            *index += 1;
            let node_ref = NodeRef { group: base.group, index: *index };
            Identity {
                name: format!("{}-{}", group.name, index),
                node_ref,
                group: group.name.clone(),
                region: group.region.clone(),
                zone: group.zone.clone(),
                capabilities: group.capabilities.clone(),
                resources: group.resources.clone(),
            }
        })
        .collect()
}

/// The name and scenario node of a node found at `--nodes` position `i`.
fn identify(
    scenario: &Scenario,
    info: &NodeInfo,
    i: usize,
    per_group: &mut BTreeMap<String, u32>,
) -> (String, NodeRef) {
    match info.group.as_deref().and_then(|g| scenario.groups.iter().position(|s| s.name == g)) {
        Some(g) => {
            let index = per_group.entry(scenario.groups[g].name.clone()).or_insert(0);
            *index += 1;
            (format!("{}-{}", scenario.groups[g].name, index), NodeRef { group: GroupId(g as u32), index: *index })
        }
        // Not a scenario group: no fault can name it.
        None => (format!("node-{}", i + 1), NodeRef { group: GroupId(u32::MAX), index: i as u32 + 1 }),
    }
}

/// The placement pool of the real nodes: their resources, capabilities and labels.
fn pool_of_members(scenario: &Scenario, members: &[Member]) -> Result<(Pool, Catalog, Labels), String> {
    let mut catalog = Catalog::of_scenario(scenario);
    let mut labels = Labels::default();
    for group in &scenario.groups {
        group.region.as_deref().map(|r| labels.intern(r));
        group.zone.as_deref().map(|z| labels.intern(z));
    }
    let mut specs = Vec::new();
    for m in members {
        for c in &m.info.capabilities {
            catalog.add_capability(c).map_err(|e| format!("node {}: capability `{c}`: {e}", m.name))?;
        }
        for name in m.info.resources.custom.keys() {
            catalog.add_custom(name).map_err(|e| format!("node {}: resource `{name}`: {e}", m.name))?;
        }
        specs.push(NodeSpec {
            capacity: catalog.amounts(&m.info.resources).unwrap_or_default(),
            capabilities: catalog.capabilities(&m.info.capabilities).unwrap_or_default(),
            region: m.info.region.as_deref().map(|r| labels.intern(r)),
            zone: m.info.zone.as_deref().map(|z| labels.intern(z)),
        });
    }
    Ok((Pool::new(specs), catalog, labels))
}

/// Which entry and instance each task is.
#[derive(Clone, Copy, Debug)]
struct Instance {
    entry: usize,
    index: u32,
}

/// The orchestrator's tasks: every instance of every entry, in order; `work` is its number.
fn task_inputs(
    scenario: &Scenario,
    catalog: &Catalog,
    labels: &Labels,
) -> Result<(Vec<TaskInput>, Vec<Instance>), String> {
    let sequential = scenario.workload.mode == WorkloadMode::Sequential;
    let mut inputs = Vec::new();
    let mut instances = Vec::new();
    for (s, spec) in scenario.workload.tasks.iter().enumerate() {
        let timeout_ms = match &spec.work {
            Work::Command { command: Some(c), .. } => c.timeout_ms,
            // The load's end, its last requests' timeout and a margin for opening connections.
            Work::Load(load) => load.start_ms + load.pattern.duration_ms() + load.timeout_ms + LOAD_MARGIN_MS,
            Work::Command { command: None, .. } => unreachable!("checked by runnable()"),
        };
        for index in 1..=spec.count {
            let request = request_for(scenario, catalog, labels, TaskSpecId(s as u32), index, 0).ok_or_else(|| {
                format!("task `{}` needs a capability or resource that none of the nodes has", spec.name)
            })?;
            inputs.push(TaskInput {
                request,
                work: instances.len() as u32,
                timeout_ms,
                max_attempts: spec.max_attempts,
                stage: if sequential { s as u32 } else { 0 },
            });
            instances.push(Instance { entry: s, index });
        }
    }
    Ok((inputs, instances))
}

/// What reaches the orchestrator's loop.
enum Input {
    /// Frames from node `i`.
    Frames(usize, Vec<Frame<ToOrchestrator>>),
    /// This many frames to a node could not be delivered (its exchange failed).
    Undelivered(u64),
}

/// What the run knows of each task, for the report and JUnit.
#[derive(Clone, Debug, Default)]
struct TaskRecord {
    attempts: u32,
    assigned_ms: BTreeMap<u32, u64>,
    counted: Option<(Outcome, usize, u64)>,
}

struct Driver<'a> {
    scenario: &'a Scenario,
    members: Vec<Member>,
    locals: Vec<LocalNode>,
    orchestrator: Orchestrator,
    checker: Checker,
    instances: Vec<Instance>,
    records: Vec<TaskRecord>,
    plan: Arc<Plan>,
    net: NetFaults,
    links: Vec<watch::Sender<Faults>>,
    kills: Vec<(usize, u64)>,
    last_kill: Vec<Option<u64>>,
    paused: Vec<bool>,
    false_suspicions: u64,
    sent: u64,
    undelivered: u64,
    util: (u64, f64, f64),
    done_at_ms: Option<u64>,
    strategy: StrategyUsed,
    /// Load results sent with results not yet counted.
    pending_load: BTreeMap<(TaskId, Attempt), Measure>,
    /// The counted load results, merged.
    load: Measure,
    /// Load results that could not be read.
    unreadable: Vec<(u64, String)>,
    /// How the running loads are doing, for the progress bar.
    live: LiveLoads,
}

impl<'a> Driver<'a> {
    #[allow(clippy::too_many_arguments)]
    fn new(
        scenario: &'a Scenario,
        members: Vec<Member>,
        locals: Vec<LocalNode>,
        pool: Pool,
        inputs: Vec<TaskInput>,
        instances: Vec<Instance>,
        seed: u64,
        plan: Arc<Plan>,
    ) -> Driver<'a> {
        let placer = Placer::new(
            &pool,
            scenario.strategy.distribution,
            scenario.strategy.allocation,
            scenario.strategy.weights.clone(),
            scenario.strategy.preemption,
            seed,
        );
        let config = OrchestratorConfig {
            phi: (&scenario.failure_detector).into(),
            backoff_base_ms: scenario.retry.backoff_base_ms,
            backoff_cap_ms: scenario.retry.backoff_cap_ms,
            ..OrchestratorConfig::default()
        };
        let nodes = members.len();
        let checker = Checker::new(
            (0..nodes).map(|i| pool.spec(NodeIdx(i as u32)).capacity).collect(),
            inputs.iter().map(|t| t.request.amounts).collect(),
        );
        let records = vec![TaskRecord::default(); inputs.len()];
        let orchestrator = Orchestrator::new(pool, placer, inputs, config, seed);
        Driver {
            strategy: StrategyUsed {
                distribution: dtest_core::report::name(&scenario.strategy.distribution),
                allocation: dtest_core::report::name(&scenario.strategy.allocation),
            },
            scenario,
            members,
            locals,
            orchestrator,
            checker,
            instances,
            records,
            plan,
            net: NetFaults::default(),
            links: Vec::new(),
            kills: Vec::new(),
            last_kill: vec![None; nodes],
            paused: vec![false; nodes],
            false_suspicions: 0,
            sent: 0,
            undelivered: 0,
            util: (0, 0.0, 0.0),
            done_at_ms: None,
            pending_load: BTreeMap::new(),
            load: Measure::new(),
            unreadable: Vec::new(),
            live: LiveLoads::default(),
        }
    }

    /// Runs to the end: every task ended, or the scenario's duration over. `None` on Ctrl-C.
    async fn drive(&mut self, token_file: &Path, start: Instant) -> Option<Report> {
        let now_ms = || start.elapsed().as_millis() as u64;
        let (inputs_tx, mut inputs) = mpsc::unbounded_channel::<Input>();
        let mut outgoing = Vec::new();
        for m in &self.members {
            let (tx, rx) = mpsc::unbounded_channel::<Frame<ToAgent>>();
            outgoing.push(tx);
            let i = outgoing.len() - 1;
            tokio::spawn(poll_node(i, m.client.clone(), self.plan.clone(), start, inputs_tx.clone()));
            tokio::spawn(send_to_node(i, m.client.clone(), self.plan.clone(), start, rx, inputs_tx.clone()));
            let (link_tx, link_rx) = watch::channel(Faults::default());
            tokio::spawn(push_faults(m.client.clone(), link_rx));
            self.links.push(link_tx);
        }
        let mut timeline: Vec<(u64, usize, bool)> = Vec::new();
        for (i, fault) in self.scenario.faults.iter().enumerate() {
            timeline.push((fault.at_ms, i, true));
            if let Some(end) = fault.end_ms() {
                timeline.push((end, i, false));
            }
        }
        timeline.sort();
        let mut next_fault = 0;
        let deadline_ms = self.scenario.duration_ms;
        let total = self.orchestrator.task_count() as u64;
        let bar = progress_bar(total);
        let has_load = self.scenario.workload.tasks.iter().any(|t| matches!(t.work, Work::Load(_)));
        let mut ticker = tokio::time::interval(Duration::from_millis(TICK_MS));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let ctrl_c = tokio::signal::ctrl_c();
        tokio::pin!(ctrl_c);
        let mut next_sample = 0;
        let mut ended = 0u64;
        loop {
            tokio::select! {
                input = inputs.recv() => match input {
                    Some(Input::Frames(i, frames)) => {
                        let now = now_ms();
                        self.sent += frames.len() as u64;
                        for frame in frames {
                            self.keep_load(now, i, &frame);
                            self.keep_live(now, i, &frame);
                            self.orchestrator.handle(now, NodeIdx(i as u32), frame);
                        }
                    }
                    Some(Input::Undelivered(n)) => self.undelivered += n,
                    None => {}
                },
                _ = ticker.tick() => {}
                _ = &mut ctrl_c => {
                    bar.finish_and_clear();
                    return None;
                }
            }
            let now = now_ms();
            while next_fault < timeline.len() && timeline[next_fault].0 <= now {
                let (_, index, starting) = timeline[next_fault];
                next_fault += 1;
                self.apply_fault(index, starting, now, token_file).await;
            }
            let registered = self.checker.history.iter().all(|h| !h.is_empty());
            if registered || now >= REGISTRATION_GRACE_MS {
                self.orchestrator.tick(now, &Observations::default());
            }
            while let Some((node, frame)) = self.orchestrator.poll_transmit() {
                self.sent += 1;
                let _ = outgoing[node.0 as usize].send(frame);
            }
            while let Some(event) = self.orchestrator.poll_event() {
                ended += u64::from(matches!(event, Event::Ended { .. }));
                self.observe(now, &event);
            }
            if now >= next_sample {
                let (mean, max) = self.orchestrator.pool().load_mean_and_max();
                self.util.0 += 1;
                self.util.1 += f64::from(mean) / 1e6;
                self.util.2 = self.util.2.max(f64::from(max) / 1e6);
                next_sample = now + 1_000;
                let up = (0..self.members.len())
                    .filter(|&i| {
                        self.orchestrator.node_health(NodeIdx(i as u32)) != dtest_core::health::HealthState::Dead
                    })
                    .count();
                let mut message = format!("{up}/{} nodes up", self.members.len());
                if has_load {
                    let orchestrator = &self.orchestrator;
                    self.live.retain(|task, node, attempt| {
                        matches!(orchestrator.task_state(task),
                            TaskState::Leased { node: n, attempt: a, .. } if n.0 as usize == node && a == attempt)
                    });
                    message = format!("{message}, {}", self.live.summary(now, &self.load));
                }
                bar.set_message(message);
            }
            bar.set_position(ended);
            if self.orchestrator.is_done() {
                self.done_at_ms = Some(now);
                break;
            }
            if now >= deadline_ms {
                break;
            }
        }
        bar.finish_and_clear();
        let report = self.report(now_ms());
        // Local daemons leave gracefully: keep carrying frames so their goodbyes are heard.
        self.signal_locals(nix::sys::signal::Signal::SIGTERM);
        let grace = Instant::now();
        while grace.elapsed() < Duration::from_secs(5) && self.locals.iter_mut().any(LocalNode::running) {
            tokio::select! {
                input = inputs.recv() => if let Some(Input::Frames(i, frames)) = input {
                    for frame in frames {
                        self.orchestrator.handle(now_ms(), NodeIdx(i as u32), frame);
                    }
                },
                _ = ticker.tick() => {}
            }
            self.orchestrator.tick(now_ms(), &Observations::default());
            while let Some((node, frame)) = self.orchestrator.poll_transmit() {
                let _ = outgoing[node.0 as usize].send(frame);
            }
            while self.orchestrator.poll_event().is_some() {}
        }
        Some(report)
    }

    /// Keeps what a load result measured until the orchestrator counts (or refuses) it.
    fn keep_load(&mut self, now: u64, node: usize, frame: &Frame<ToOrchestrator>) {
        let Frame::Data(packet) = frame else { return };
        let ToOrchestrator::Finished { task, attempt, load: Some(load), .. } = &packet.body else { return };
        if self.pending_load.contains_key(&(*task, *attempt)) {
            return; // A resend.
        }
        match Measure::from_wire(load) {
            Ok(measure) => {
                self.pending_load.insert((*task, *attempt), measure);
            }
            Err(e) => self
                .unreadable
                .push((now, format!("node {} sent a load result dtest cannot read: {e}", self.members[node].name))),
        }
    }

    /// Keeps what heartbeats say about running loads, for the progress bar.
    fn keep_live(&mut self, now: u64, node: usize, frame: &Frame<ToOrchestrator>) {
        let Frame::Data(packet) = frame else { return };
        let ToOrchestrator::Heartbeat { load, .. } = &packet.body else { return };
        let tasks = self.orchestrator.task_count() as u64;
        for (task, attempt, live) in load.iter().filter(|(task, ..)| task.0 < tasks) {
            self.live.heard(now, node, *task, *attempt, live);
        }
    }

    fn observe(&mut self, now: u64, event: &Event) {
        match event {
            Event::Assigned { task, attempt, .. } => {
                let record = &mut self.records[task.0 as usize];
                record.attempts += 1;
                record.assigned_ms.insert(attempt.0, now);
            }
            Event::Counted { task, attempt, node, outcome } => {
                let record = &mut self.records[task.0 as usize];
                let started = record.assigned_ms.get(&attempt.0).copied().unwrap_or(now);
                record.counted = Some((outcome.clone(), node.0 as usize, now - started));
                self.live.forget(*task);
                if let Some(measure) = self.pending_load.remove(&(*task, *attempt)) {
                    // The node counts seconds from its load's start: the assignment, or the
                    // load's `start_s` if later.
                    let entry = &self.scenario.workload.tasks[self.instances[task.0 as usize].entry];
                    let start_ms = match &entry.work {
                        Work::Load(load) => load.start_ms,
                        Work::Command { .. } => 0,
                    };
                    self.load.add(&measure, started.max(start_ms) / 1000);
                }
            }
            Event::NodeDead { node } => {
                let n = node.0 as usize;
                let killed = self.checker.down_since_kill(n, self.last_kill[n]);
                let justified = killed || self.paused[n] || self.net.cuts(self.members[n].node_ref);
                if !justified {
                    self.false_suspicions += 1;
                }
            }
            _ => {}
        }
        self.checker.observe(now, event);
    }

    async fn apply_fault(&mut self, index: usize, starting: bool, now: u64, token_file: &Path) {
        let fault = &self.scenario.faults[index];
        let targets = |set: &dtest_core::scenario::NodeSet, members: &[Member]| -> Vec<usize> {
            (0..members.len()).filter(|&i| set.contains(members[i].node_ref)).collect()
        };
        match &fault.kind {
            FaultKind::Kill { nodes, .. } => {
                for i in targets(nodes, &self.members) {
                    let Some(local) = self.locals.get_mut(i) else { continue };
                    if starting {
                        if let Some(mut child) = local.child.take() {
                            let _ = child.start_kill();
                            let _ = child.wait().await;
                            self.kills.push((i, now));
                            self.last_kill[i] = Some(now);
                        }
                    } else if local.child.is_none() {
                        let heartbeat = self.scenario.failure_detector.heartbeat_interval_ms;
                        if let Err(e) = start_local(local, token_file, heartbeat).await {
                            eprintln!("warning: could not restart {}: {e}", local.identity.name);
                        }
                    }
                }
            }
            FaultKind::Pause { nodes, .. } => {
                let signal =
                    if starting { nix::sys::signal::Signal::SIGSTOP } else { nix::sys::signal::Signal::SIGCONT };
                for i in targets(nodes, &self.members) {
                    if let Some(pid) = self.locals.get(i).and_then(|l| l.child.as_ref()).and_then(Child::id) {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal);
                        self.paused[i] = starting;
                    }
                }
            }
            _ => {
                if starting {
                    self.net.start(self.scenario, index);
                } else {
                    self.net.end(index);
                }
                for (i, m) in self.members.iter().enumerate() {
                    let link: Link = self.net.link(m.node_ref);
                    self.links[i].send_if_modified(|faults| {
                        let changed = faults.link != link;
                        faults.link = link;
                        changed
                    });
                }
            }
        }
    }

    fn report(&self, end_ms: u64) -> Report {
        let checker = &self.checker;
        let tasks = checker.tasks(self.instances.len() as u64);
        let mut violations: Vec<Violation> =
            checker.violations.iter().map(|(at_ms, what)| Violation { at_ms: *at_ms, what: what.clone() }).collect();
        if tasks.lost > 0 {
            violations.push(Violation {
                at_ms: end_ms,
                what: format!(
                    "{} tasks had not ended when the scenario's {} s were over",
                    tasks.lost,
                    self.scenario.duration_ms / 1000
                ),
            });
        }
        violations.extend(self.unreadable.iter().map(|(at_ms, what)| Violation { at_ms: *at_ms, what: what.clone() }));
        let results = self
            .instances
            .iter()
            .zip(&self.records)
            .enumerate()
            .map(|(t, (instance, record))| {
                let entry = &self.scenario.workload.tasks[instance.entry];
                let terminal = checker.ended.get(&dtest_core::protocol::TaskId(t as u64)).map(|e| e.0);
                let (outcome, message) = match (terminal, &record.counted) {
                    (Some(Terminal::Completed), _) => (TaskOutcome::Passed, String::new()),
                    (Some(Terminal::Cancelled), _) => (TaskOutcome::Cancelled, String::new()),
                    (Some(Terminal::Failed), Some((Outcome::TimedOut, _, _))) => {
                        (TaskOutcome::TimedOut, format!("timed out after {} s", entry_timeout_s(entry)))
                    }
                    (Some(Terminal::Failed), Some((Outcome::Failed(why), _, _))) => (TaskOutcome::Failed, why.clone()),
                    (Some(Terminal::Failed), _) => {
                        (TaskOutcome::Failed, "the task could not be placed or ran out of attempts".to_owned())
                    }
                    (None, _) => (TaskOutcome::Lost, "the task had not ended when the run stopped".to_owned()),
                };
                TaskResult {
                    task: entry.name.clone(),
                    index: instance.index,
                    count: entry.count,
                    outcome,
                    node: record.counted.as_ref().map(|(_, n, _)| self.members[*n].name.clone()),
                    attempts: record.attempts,
                    duration_s: record.counted.as_ref().map_or(0.0, |(_, _, ms)| *ms as f64 / 1e3),
                    message,
                }
            })
            .collect();
        let stats = self.orchestrator.stats();
        let mut report = Report {
            scenario: self.scenario.name.clone(),
            mode: dtest_core::report::Mode::Run,
            seed: None,
            swarm: false,
            strategy: self.strategy.clone(),
            simulated_s: None,
            elapsed_s: Some(end_ms as f64 / 1e3),
            makespan_s: self.done_at_ms.map(|ms| ms as f64 / 1e3),
            tasks,
            reassignments: stats.reassignments,
            stale_results_refused: stats.stale_results,
            nodes: Nodes {
                total: self.members.len() as u64,
                declared_dead: checker.declared_dead,
                false_suspicions: self.false_suspicions,
            },
            failure_detection_ms: checker.detection(&self.kills, end_ms),
            messages: Messages { sent: self.sent, dropped: self.undelivered },
            utilization: Utilization {
                mean: if self.util.0 == 0 { 0.0 } else { self.util.1 / self.util.0 as f64 },
                max: self.util.2,
            },
            expectations: Vec::new(),
            violations,
            results,
            ..Report::default()
        };
        if self.scenario.workload.tasks.iter().any(|t| matches!(t.work, Work::Load(_))) {
            report.set_load(&self.load, load_seconds(self.scenario));
        }
        report.expectations = expectations(self.scenario, &report);
        report
    }

    fn signal_locals(&mut self, signal: nix::sys::signal::Signal) {
        for local in &mut self.locals {
            if let Some(pid) = local.child.as_ref().and_then(Child::id) {
                let pid = nix::unistd::Pid::from_raw(pid as i32);
                // A paused node must run to leave.
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGCONT);
                let _ = nix::sys::signal::kill(pid, signal);
            }
        }
    }

    /// Kills whatever local daemon is still running.
    async fn stop_locals(&mut self) {
        for local in &mut self.locals {
            if let Some(mut child) = local.child.take() {
                let _ = child.start_kill();
                let _ = child.wait().await;
            }
        }
    }
}

impl LocalNode {
    /// Whether the daemon process still runs.
    fn running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }
}

fn entry_timeout_s(entry: &dtest_core::scenario::TaskSpec) -> f64 {
    match &entry.work {
        Work::Command { command: Some(c), .. } => c.timeout_ms as f64 / 1e3,
        _ => 0.0,
    }
}

/// The plan as sent now, saying how long the run (started at `start`) has been going.
fn plan_now(plan: &Plan, start: Instant) -> Plan {
    Plan { elapsed_ms: start.elapsed().as_millis() as u64, ..plan.clone() }
}

/// Keeps one long poll open to node `i`, forwarding its frames; gives it the plan when it lacks it.
async fn poll_node(
    i: usize,
    client: NodeClient,
    plan: Arc<Plan>,
    start: Instant,
    inputs: mpsc::UnboundedSender<Input>,
) {
    loop {
        let exchange = Exchange { plan: plan.id.clone(), frames: Vec::new(), wait_ms: POLL_WAIT_MS };
        match client.exchange(&exchange).await {
            Ok(reply) => {
                if !reply.frames.is_empty() && inputs.send(Input::Frames(i, reply.frames)).is_err() {
                    return;
                }
            }
            Err(ClientError::NeedsPlan) => {
                // A restarted node: a new life that needs the plan again.
                if client.put_plan(&plan_now(&plan, start)).await.is_err() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Err(_) => {
                if inputs.is_closed() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Sends the orchestrator's frames to node `i`, batching whatever queued meanwhile. A failed
/// send loses its frames, as a network would; the protocol resends what must arrive.
async fn send_to_node(
    i: usize,
    client: NodeClient,
    plan: Arc<Plan>,
    start: Instant,
    mut frames: mpsc::UnboundedReceiver<Frame<ToAgent>>,
    inputs: mpsc::UnboundedSender<Input>,
) {
    while let Some(first) = frames.recv().await {
        let mut batch = vec![first];
        while let Ok(frame) = frames.try_recv() {
            batch.push(frame);
        }
        let exchange = Exchange { plan: plan.id.clone(), frames: batch, wait_ms: 0 };
        let count = exchange.frames.len() as u64;
        let reply = match client.exchange(&exchange).await {
            Err(ClientError::NeedsPlan) => match client.put_plan(&plan_now(&plan, start)).await {
                Ok(()) => client.exchange(&exchange).await,
                Err(e) => Err(e),
            },
            other => other,
        };
        let input = match reply {
            Ok(reply) if reply.frames.is_empty() => continue,
            Ok(reply) => Input::Frames(i, reply.frames),
            Err(_) => Input::Undelivered(count),
        };
        if inputs.send(input).is_err() {
            return;
        }
    }
}

/// Keeps node's fault settings at the latest the run decided, retrying until it takes them.
async fn push_faults(client: NodeClient, mut faults: watch::Receiver<Faults>) {
    while faults.changed().await.is_ok() {
        loop {
            let latest = *faults.borrow_and_update();
            if client.put_faults(&latest).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            if faults.has_changed().is_err() {
                return;
            }
        }
    }
}

/// Starts (or restarts, on the same port) a local node daemon and waits for its address.
async fn start_local(node: &mut LocalNode, token_file: &Path, heartbeat_ms: u64) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find the dtest binary: {e}"))?;
    let workdir = std::env::current_dir().map_err(|e| format!("the current directory: {e}"))?;
    let id = &node.identity;
    let mut command = Command::new(exe);
    command
        .arg("node")
        .arg("--listen")
        .arg(format!("127.0.0.1:{}", node.port))
        .arg("--token-file")
        .arg(token_file)
        .arg("--allow-commands")
        .arg("--group")
        .arg(&id.group)
        .arg("--workdir")
        .arg(&workdir)
        .arg("--heartbeat-ms")
        .arg(heartbeat_ms.to_string())
        .arg("--parent-pid")
        .arg(std::process::id().to_string());
    if let Some(region) = &id.region {
        command.arg("--region").arg(region);
    }
    if let Some(zone) = &id.zone {
        command.arg("--zone").arg(zone);
    }
    if !id.capabilities.is_empty() {
        command.arg("--capabilities").arg(id.capabilities.join(","));
    }
    if let Some(r) = &id.resources {
        let mut declared = format!(
            "cpu_millis={},memory_mb={},disk_mb={},net_mbps={},gpus={}",
            r.cpu_millis, r.memory_mb, r.disk_mb, r.net_mbps, r.gpus
        );
        for (name, amount) in &r.custom {
            declared.push_str(&format!(",{name}={amount}"));
        }
        command.arg("--resources").arg(declared);
    }
    let log = std::fs::File::create(&node.log).map_err(|e| format!("{}: {e}", node.log.display()))?;
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log).kill_on_drop(true);
    let mut child = command.spawn().map_err(|e| format!("cannot start: {e}"))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let first = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
    let line = match first {
        Ok(Ok(Some(line))) => line,
        _ => {
            let _ = child.start_kill();
            let mut text = String::new();
            let _ = std::fs::File::open(&node.log).and_then(|mut f| f.read_to_string(&mut text));
            return Err(format!("did not start: {}", text.trim()));
        }
    };
    let port = line
        .rsplit(':')
        .next()
        .and_then(|p| p.trim().parse::<u16>().ok())
        .ok_or_else(|| format!("unexpected first line: {line}"))?;
    node.port = port;
    node.child = Some(child);
    Ok(())
}

/// 128 bits from the operating system, as hex.
fn fresh_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes a file only its owner can read.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(text.as_bytes())
}

fn progress_bar(total: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::with_draw_target(Some(total), indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} tasks ended, {msg} [{elapsed}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// The report as JUnit XML: a test suite per task entry, a test case per instance.
pub fn junit(scenario: &Scenario, report: &Report) -> String {
    let mut by_entry: BTreeMap<&str, Vec<&TaskResult>> = BTreeMap::new();
    for r in &report.results {
        by_entry.entry(r.task.as_str()).or_default().push(r);
    }
    let count = |rs: &[&TaskResult], outcomes: &[&str]| rs.iter().filter(|r| outcomes.contains(&r.outcome.name())).count();
    let all: Vec<&TaskResult> = report.results.iter().collect();
    let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    xml.push_str(&format!(
        "<testsuites name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" time=\"{:.3}\">\n",
        escape(&scenario.name),
        all.len(),
        count(&all, &["failed", "timed_out"]),
        count(&all, &["lost"]),
        report.elapsed_s.unwrap_or(0.0)
    ));
    for task in &scenario.workload.tasks {
        let results = by_entry.get(task.name.as_str()).cloned().unwrap_or_default();
        let time: f64 = results.iter().map(|r| r.duration_s).sum();
        xml.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\" time=\"{time:.3}\">\n",
            escape(&task.name),
            results.len(),
            count(&results, &["failed", "timed_out"]),
            count(&results, &["lost"]),
            count(&results, &["cancelled"]),
        ));
        for r in results {
            xml.push_str(&format!(
                "    <testcase classname=\"{}.{}\" name=\"{}[{}/{}]\" time=\"{:.3}\"",
                escape(&scenario.name),
                escape(&r.task),
                escape(&r.task),
                r.index,
                r.count,
                r.duration_s
            ));
            let first = r.message.lines().next().unwrap_or(r.outcome.name());
            let node = r.node.as_deref().unwrap_or("no node");
            match r.outcome.name() {
                "passed" => xml.push_str(&format!(">\n      <system-out>ran on {}</system-out>\n    </testcase>\n", escape(node))),
                "cancelled" => xml.push_str(">\n      <skipped message=\"cancelled\"/>\n    </testcase>\n"),
                "lost" => xml.push_str(&format!(
                    ">\n      <error message=\"{}\" type=\"lost\"/>\n    </testcase>\n",
                    escape(first)
                )),
                kind => xml.push_str(&format!(
                    ">\n      <failure message=\"{}\" type=\"{kind}\">{}</failure>\n      <system-out>ran on {} ({} attempts)</system-out>\n    </testcase>\n",
                    escape(first),
                    escape(&r.message),
                    escape(node),
                    r.attempts
                )),
            }
        }
        xml.push_str("  </testsuite>\n");
    }
    xml.push_str("</testsuites>\n");
    xml
}

/// Escapes text for XML attributes and content, dropping characters XML 1.0 cannot hold.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' => out.push_str("&#10;"),
            '\t' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xml_escaping_keeps_text_and_drops_what_xml_cannot_hold() {
        assert_eq!(escape("a<b & \"c\"\n\u{1}"), "a&lt;b &amp; &quot;c&quot;&#10;\u{FFFD}");
    }

    #[test]
    fn resources_are_named_amounts() {
        let r = crate::node::parse_resources("cpu_millis=4000,memory_mb=8192,gpu=2").expect("valid");
        assert_eq!((r.cpu_millis, r.memory_mb, r.custom.get("gpu").copied()), (4000, 8192, Some(2)));
        assert!(crate::node::parse_resources("cpu_millis").is_err());
        assert!(crate::node::parse_resources("cpu_millis=lots").is_err());
    }
}
