//! `dtest node`: the core's [`Agent`] behind an axum server. The shell carries frames, runs the
//! commands the agent starts and stops, samples the machine for heartbeats and applies the
//! network faults it is told to; every decision is the agent's.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use dtest_core::faults::{Direction, Verdict};
use dtest_core::measure::LiveLoad;
use dtest_core::protocol::{Agent, AgentAction, AgentConfig, Attempt, Frame, Incarnation, Outcome, TaskId};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::api::{
    ApiError, BODY_MAX, Exchange, ExchangeReply, Faults, NodeInfo, PREFIX, Plan, PlanWork, Resources, WAIT_MAX_MS,
};
use crate::{exec, load, system};

/// Frames waiting for the orchestrator beyond this many are dropped, oldest first (reliable
/// ones are resent by the agent; heartbeats are replaced by newer ones).
const OUTBOUND_MAX: usize = 10_000;

/// When the daemon leaves, how long it waits for the work it aborted to be dropped (commands'
/// process groups killed); dropping takes microseconds unless a worker thread is stuck.
const ABORT_WAIT_MAX: Duration = Duration::from_secs(5);

/// How a node daemon runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The token every request must carry.
    pub token: String,
    /// The scenario group it stands for.
    pub group: Option<String>,
    /// Its region.
    pub region: Option<String>,
    /// Its zone.
    pub zone: Option<String>,
    /// Its capabilities.
    pub capabilities: Vec<String>,
    /// Declared capacity; detected when `None`.
    pub resources: Option<Resources>,
    /// Whether command tasks run.
    pub allow_commands: bool,
    /// Where commands run.
    pub workdir: PathBuf,
    /// Time between heartbeats.
    pub heartbeat_interval_ms: u64,
    /// After SIGTERM, how long to wait for the orchestrator to take the last results.
    pub drain_timeout: Duration,
}

struct Node {
    config: NodeConfig,
    info: NodeInfo,
    start: Instant,
    state: Mutex<NodeState>,
    /// Wakes the agent loop: new inputs, or shutting down.
    wake: Notify,
    /// Wakes long polls: frames to send, or shutting down.
    outbound_ready: Notify,
}

/// The work of one running attempt.
struct Work {
    handle: JoinHandle<()>,
    /// A load's stop signal: it stops and hands back its measure. Commands have none: they are
    /// aborted, which kills their process group.
    load_stop: Option<load::Stop>,
}

struct NodeState {
    /// The agent of the current plan's life; none before a plan arrives.
    agent: Option<Agent>,
    plan: Option<Arc<Plan>>,
    /// When the plan came and how long the run had been going then (loads' `start_ms` count
    /// from the run's start).
    plan_at: (Instant, u64),
    outbound: VecDeque<Frame<dtest_core::protocol::ToOrchestrator>>,
    faults: Faults,
    rng: ChaCha8Rng,
    work: BTreeMap<(TaskId, Attempt), Work>,
    /// Work told to stop or aborted that may not have ended yet; the daemon waits for it before
    /// it returns, so no command outlives it. Pruned of what has ended as more comes.
    ending: Vec<JoinHandle<()>>,
    /// Recent share of failed attempts, decayed per result.
    error_rate: f64,
    /// The machine as last sampled.
    metrics: dtest_core::health::Metrics,
    stopping: bool,
    last_incarnation: u64,
}

impl Node {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn state(&self) -> MutexGuard<'_, NodeState> {
        // A panic while holding the lock is a bug already reported; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Serves the node API on `listener` until `shutdown` resolves, then leaves gracefully: stops
/// its attempts, hands them back to the orchestrator and waits (up to the drain timeout) until
/// every result is acknowledged.
pub async fn serve(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let detected = config.resources.is_none();
    let resources = config.resources.clone().unwrap_or_else(|| system::detect(&config.workdir));
    let info = NodeInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        incarnation: 0,
        group: config.group.clone(),
        region: config.region.clone(),
        zone: config.zone.clone(),
        capabilities: config.capabilities.clone(),
        resources,
        resources_detected: detected,
        allow_commands: config.allow_commands,
    };
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let node = Arc::new(Node {
        info,
        start: Instant::now(),
        state: Mutex::new(NodeState {
            agent: None,
            plan: None,
            plan_at: (Instant::now(), 0),
            outbound: VecDeque::new(),
            faults: Faults::default(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            work: BTreeMap::new(),
            ending: Vec::new(),
            error_rate: 0.0,
            metrics: dtest_core::health::Metrics::default(),
            stopping: false,
            last_incarnation: 0,
        }),
        wake: Notify::new(),
        outbound_ready: Notify::new(),
        config,
    });
    let app = router(node.clone());
    let drained = Arc::new(Notify::new());
    tokio::spawn(agent_loop(node.clone(), drained.clone()));
    let stopper = node.clone();
    tokio::spawn(async move {
        shutdown.await;
        leave(&stopper);
    });
    let waker = node.clone();
    let stopped = async move {
        drained.notified().await;
        // Wake every long poll so the server's own graceful shutdown does not wait for them.
        waker.outbound_ready.notify_waiters();
    };
    let served = axum::serve(listener, app).with_graceful_shutdown(stopped).await;
    end_all_work(&node).await;
    served
}

/// Aborts whatever work is left and waits (boundedly) until it is dropped: every command's
/// process group is killed before the daemon returns, and so before its process exits.
async fn end_all_work(node: &Node) {
    let handles: Vec<JoinHandle<()>> = {
        let mut state = node.state();
        let work = std::mem::take(&mut state.work).into_values().map(|w| w.handle);
        work.chain(state.ending.drain(..)).collect()
    };
    for handle in &handles {
        handle.abort();
    }
    // An aborted task's handle resolves once its future is dropped.
    let _ = tokio::time::timeout(ABORT_WAIT_MAX, futures::future::join_all(handles)).await;
}

fn router(node: Arc<Node>) -> Router {
    Router::new()
        .route(&format!("{PREFIX}/info"), get(info))
        .route(&format!("{PREFIX}/plan"), put(plan))
        .route(&format!("{PREFIX}/exchange"), post(exchange))
        .route(&format!("{PREFIX}/faults"), put(faults))
        .route_layer(middleware::from_fn_with_state(node.clone(), authorize))
        .layer(DefaultBodyLimit::max(BODY_MAX))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint; the API is under /v1") })
        .with_state(node)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(ApiError { error: message.into() })).into_response()
}

/// Malformed JSON is a 400 and an oversized body a 413, whatever axum's default would be.
fn rejected(rejection: JsonRejection) -> Response {
    let status = if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        StatusCode::PAYLOAD_TOO_LARGE
    } else {
        StatusCode::BAD_REQUEST
    };
    error(status, rejection.body_text())
}

async fn authorize(State(node): State<Arc<Node>>, headers: HeaderMap, request: Request, next: Next) -> Response {
    let given =
        headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(token) if constant_time_eq(token.as_bytes(), node.config.token.as_bytes()) => next.run(request).await,
        Some(_) => error(StatusCode::UNAUTHORIZED, "wrong token"),
        None => error(StatusCode::UNAUTHORIZED, "missing `Authorization: Bearer TOKEN`"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn info(State(node): State<Arc<Node>>) -> Response {
    let mut info = node.info.clone();
    info.incarnation = node.state().agent.as_ref().map_or(0, |a| a.incarnation().0);
    axum::Json(info).into_response()
}

async fn plan(State(node): State<Arc<Node>>, body: Result<axum::Json<Plan>, JsonRejection>) -> Response {
    let plan = match body {
        Ok(axum::Json(plan)) => plan,
        Err(rejection) => return rejected(rejection),
    };
    let mut state = node.state();
    if state.stopping {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down");
    }
    if state.plan.as_ref().is_some_and(|p| p.id == plan.id) {
        return StatusCode::NO_CONTENT.into_response();
    }
    // A new plan is a new run: a new life, with nothing of the previous run's.
    for (_, work) in std::mem::take(&mut state.work) {
        work.handle.abort();
        keep_ending(&mut state, work.handle);
    }
    let now_ms = node.now_ms();
    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let incarnation = unix_ms.max(state.last_incarnation + 1);
    state.last_incarnation = incarnation;
    let config = AgentConfig { heartbeat_interval_ms: node.config.heartbeat_interval_ms, ..AgentConfig::default() };
    let mut agent = Agent::new(now_ms, Incarnation(incarnation), config);
    // Its first heartbeat carries the machine as last sampled, not zeros.
    agent.set_metrics(state.metrics);
    state.agent = Some(agent);
    state.plan_at = (Instant::now(), plan.elapsed_ms);
    state.plan = Some(Arc::new(plan));
    state.outbound.clear();
    state.error_rate = 0.0;
    // The previous run's network faults are not this one's.
    state.faults = Faults::default();
    step(&node, &mut state);
    drop(state);
    node.wake.notify_one();
    StatusCode::NO_CONTENT.into_response()
}

async fn faults(State(node): State<Arc<Node>>, body: Result<axum::Json<Faults>, JsonRejection>) -> Response {
    let faults = match body {
        Ok(axum::Json(faults)) => faults,
        Err(rejection) => return rejected(rejection),
    };
    for rule in [faults.link.to_node, faults.link.to_orchestrator] {
        if !(0.0..=1.0).contains(&rule.loss) || rule.latency_min_ms > rule.latency_max_ms {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "loss must be in [0, 1] and latency_min_ms <= latency_max_ms",
            );
        }
    }
    node.state().faults = faults;
    StatusCode::NO_CONTENT.into_response()
}

async fn exchange(State(node): State<Arc<Node>>, body: Result<axum::Json<Exchange>, JsonRejection>) -> Response {
    let request = match body {
        Ok(axum::Json(request)) => request,
        Err(rejection) => return rejected(rejection),
    };
    {
        let mut state = node.state();
        if state.plan.as_ref().is_none_or(|p| p.id != request.plan) {
            return error(StatusCode::CONFLICT, "this node does not have that plan; PUT it first");
        }
        let now_ms = node.now_ms();
        for frame in request.frames {
            let verdict = {
                let rule = *state.faults.link.rule(Direction::ToNode);
                let rng = &mut state.rng;
                rule.verdict(|| unit(rng))
            };
            match verdict {
                Verdict::Cut | Verdict::Lost => {}
                Verdict::Deliver(0) => {
                    if let Some(agent) = state.agent.as_mut() {
                        agent.handle(now_ms, frame);
                    }
                }
                Verdict::Deliver(delay_ms) => {
                    let node = node.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                        let mut state = node.state();
                        let now_ms = node.now_ms();
                        if let Some(agent) = state.agent.as_mut() {
                            agent.handle(now_ms, frame);
                        }
                        step(&node, &mut state);
                        drop(state);
                        node.wake.notify_one();
                    });
                }
            }
        }
        step(&node, &mut state);
    }
    node.wake.notify_one();
    let wait = Duration::from_millis(request.wait_ms.min(WAIT_MAX_MS));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let notified = node.outbound_ready.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut state = node.state();
            if !state.outbound.is_empty() || state.stopping && state.agent.as_ref().is_none_or(Agent::is_drained) {
                let frames = state.outbound.drain(..).collect();
                return axum::Json(ExchangeReply { frames }).into_response();
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return axum::Json(ExchangeReply::default()).into_response();
        }
    }
}

/// A uniform draw in [0, 1).
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Carries out what the agent asked for: starts and stops work, queues its frames through the
/// fault layer.
fn step(node: &Arc<Node>, state: &mut NodeState) {
    let Some(agent) = state.agent.as_mut() else { return };
    let actions: Vec<AgentAction> = std::iter::from_fn(|| agent.poll_action()).collect();
    let mut cancelled = Vec::new();
    for action in actions {
        match action {
            AgentAction::Start { task, attempt, work } => {
                let work = start(node, state, task, attempt, work);
                state.work.insert((task, attempt), work);
            }
            AgentAction::Stop { task, attempt } => match state.work.remove(&(task, attempt)) {
                Some(Work { handle, load_stop: Some(stop) }) => {
                    // The load ends within moments and reports its partial measure itself.
                    stop.stop();
                    let abort = handle.abort_handle();
                    tokio::spawn(async move {
                        // The agent stops waiting for its measure then; so does the shell.
                        tokio::time::sleep(Duration::from_millis(AgentConfig::default().stop_grace_ms)).await;
                        abort.abort(); // Nothing happens if it has ended.
                    });
                    keep_ending(state, handle);
                }
                Some(Work { handle, load_stop: None }) => {
                    // Dropping the command's future kills its process group; a cancel is
                    // reported at once (the agent ignores it for an attempt already ended).
                    handle.abort();
                    keep_ending(state, handle);
                    cancelled.push((task, attempt));
                }
                None => {}
            },
        }
    }
    let now_ms = node.now_ms();
    let Some(agent) = state.agent.as_mut() else { return };
    for (task, attempt) in cancelled {
        agent.work_finished(now_ms, task, attempt, Outcome::Cancelled);
    }
    let frames: Vec<_> = std::iter::from_fn(|| agent.poll_transmit()).collect();
    let mut queued = false;
    for frame in frames {
        let rule = *state.faults.link.rule(Direction::ToOrchestrator);
        let rng = &mut state.rng;
        match rule.verdict(|| unit(rng)) {
            Verdict::Cut | Verdict::Lost => {}
            Verdict::Deliver(0) => {
                state.outbound.push_back(frame);
                queued = true;
            }
            Verdict::Deliver(delay_ms) => {
                let node = node.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    node.state().outbound.push_back(frame);
                    node.outbound_ready.notify_waiters();
                });
            }
        }
    }
    while state.outbound.len() > OUTBOUND_MAX {
        state.outbound.pop_front();
    }
    if queued {
        node.outbound_ready.notify_waiters();
    }
}

/// Keeps a handle of work told to stop until the daemon leaves, forgetting those that ended.
fn keep_ending(state: &mut NodeState, handle: JoinHandle<()>) {
    state.ending.retain(|h| !h.is_finished());
    state.ending.push(handle);
}

/// Starts the work of one attempt; its end goes back to the agent of the same life.
fn start(node: &Arc<Node>, state: &NodeState, task: TaskId, attempt: Attempt, work: u32) -> Work {
    let plan = state.plan.clone();
    let (plan_at, elapsed_ms) = state.plan_at;
    let incarnation = state.agent.as_ref().map(Agent::incarnation);
    let node = node.clone();
    let stop = load::Stop::new();
    let is_load =
        plan.as_deref().and_then(|p| p.instance(work)).is_some_and(|(e, _)| matches!(e.work, PlanWork::Load(_)));
    let load_stop = is_load.then(|| stop.clone());
    let handle = tokio::spawn(async move {
        let mut load = None;
        let outcome = match plan.as_deref().and_then(|p| p.instance(work)) {
            None => Outcome::Failed(format!("work item {work} is not in this node's plan")),
            Some((entry, index)) => match &entry.work {
                PlanWork::Load(spec) => {
                    let mut spec = spec.clone();
                    if let load::Rate::Pattern { index: share, of, .. } = &mut spec.rate {
                        (*share, *of) = (index - 1, entry.count);
                    }
                    let run_elapsed = Duration::from_millis(elapsed_ms) + plan_at.elapsed();
                    let wait = Duration::from_millis(spec.start_ms).saturating_sub(run_elapsed);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stop.stopped() => {}
                    }
                    let (live, progress) = tokio::sync::watch::channel(load::Progress::default());
                    let reporter = tokio::spawn(report_live(node.clone(), task, attempt, progress));
                    // Stopped before it started, it returns at once with nothing measured.
                    let measured = load::run(&spec, Some(live), &stop).await;
                    reporter.abort();
                    match measured {
                        Ok(loaded) => {
                            load = Some(Box::new(loaded.measure.to_wire()));
                            // The agent records a cancelled attempt as such whatever this says.
                            if loaded.stopped_after.is_some() { Outcome::Cancelled } else { Outcome::Passed }
                        }
                        Err(e) => Outcome::Failed(e),
                    }
                }
                PlanWork::Command { .. } if !node.config.allow_commands => {
                    Outcome::Failed("this node runs no commands; start it with --allow-commands to let it".to_owned())
                }
                PlanWork::Command { argv, env, cwd } => {
                    let argv = exec::substitute(argv, index, entry.count);
                    let workdir = cwd.as_ref().map_or(node.config.workdir.clone(), |c| node.config.workdir.join(c));
                    exec::run(&argv, env, &workdir).await
                }
            },
        };
        let mut state = node.state();
        if state.agent.as_ref().map(Agent::incarnation) != incarnation {
            return; // A new plan came meanwhile: the work of the old life reports to no one.
        }
        state.work.remove(&(task, attempt));
        // A stopped attempt says nothing of this node's health.
        if outcome != Outcome::Cancelled {
            let failed = !matches!(outcome, Outcome::Passed);
            state.error_rate = 0.9 * state.error_rate + if failed { 0.1 } else { 0.0 };
        }
        let now_ms = node.now_ms();
        if let Some(agent) = state.agent.as_mut() {
            agent.load_finished(now_ms, task, attempt, outcome, load);
        }
        step(&node, &mut state);
        drop(state);
        node.wake.notify_one();
    });
    Work { handle, load_stop }
}

/// Hands a running load's live figures to the agent, for its heartbeats.
async fn report_live(node: Arc<Node>, task: TaskId, attempt: Attempt, mut progress: watch::Receiver<load::Progress>) {
    while progress.changed().await.is_ok() {
        let p = progress.borrow_and_update().clone();
        let second = p.last_second.map(|(t, s)| s.to_wire(t));
        let live = LiveLoad { requests: p.requests, errors: p.errors, dropped: p.dropped, second };
        if let Some(agent) = node.state().agent.as_mut() {
            agent.set_live(task, attempt, live);
        }
    }
}

/// Ticks the agent at its times and samples the machine for its heartbeats.
async fn agent_loop(node: Arc<Node>, drained: Arc<Notify>) {
    let mut sampler = system::Sampler::new(&node.config.workdir);
    let mut next_sample_ms = 0;
    let mut leaving_since: Option<Instant> = None;
    loop {
        let next_ms = {
            let now_ms = node.now_ms();
            if now_ms >= next_sample_ms {
                let error_rate = node.state().error_rate;
                // Sampling reads /proc; do it outside the lock.
                let metrics = sampler.sample(error_rate);
                let mut state = node.state();
                state.metrics = metrics;
                if let Some(agent) = state.agent.as_mut() {
                    agent.set_metrics(metrics);
                }
                drop(state);
                next_sample_ms = now_ms + node.config.heartbeat_interval_ms.max(100);
            }
            let mut state = node.state();
            let now_ms = node.now_ms();
            if let Some(agent) = state.agent.as_mut() {
                agent.tick(now_ms);
            }
            step(&node, &mut state);
            if state.stopping {
                let since = *leaving_since.get_or_insert_with(Instant::now);
                let done = state.agent.as_ref().is_none_or(Agent::is_drained);
                if done || since.elapsed() >= node.config.drain_timeout {
                    drop(state);
                    drained.notify_one();
                    node.outbound_ready.notify_waiters();
                    return;
                }
            }
            let next = state.agent.as_ref().map_or(u64::MAX, Agent::next_tick_ms);
            next.min(next_sample_ms).min(now_ms + 1_000)
        };
        let at = tokio::time::Instant::from_std(node.start + Duration::from_millis(next_ms));
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            () = node.wake.notified() => {}
        }
    }
}

/// Shuts down gracefully: the agent stops its attempts and tells the orchestrator.
fn leave(node: &Arc<Node>) {
    let mut state = node.state();
    state.stopping = true;
    let now_ms = node.now_ms();
    if let Some(agent) = state.agent.as_mut() {
        agent.leave(now_ms);
    }
    step(node, &mut state);
    drop(state);
    node.wake.notify_one();
}

/// The address a daemon listens on by default: loopback only.
pub fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7070))
}

#[cfg(test)]
mod tests {
    use dtest_core::measure::LoadResult;
    use dtest_core::protocol::{DeliveryMode, Packet, ToAgent, ToOrchestrator};
    use dtest_core::scenario::Pattern;

    use super::*;
    use crate::api::{Exchange, PlanEntry};
    use crate::client::NodeClient;

    const TOKEN: &str = "daemon-test-token";
    const PLAN: &str = "plan";

    /// A daemon served by the test's runtime, talked to as the orchestrator would.
    struct Daemon {
        client: NodeClient,
        session: u64,
        next_id: u64,
        shutdown: Option<tokio::sync::oneshot::Sender<()>>,
        served: JoinHandle<std::io::Result<()>>,
    }

    impl Daemon {
        async fn start(workdir: &std::path::Path, entries: Vec<PlanEntry>) -> Daemon {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
            let url = format!("http://{}", listener.local_addr().expect("its address"));
            let config = NodeConfig {
                token: TOKEN.to_owned(),
                group: None,
                region: None,
                zone: None,
                capabilities: Vec::new(),
                resources: Some(Resources { cpu_millis: 1_000, memory_mb: 1_000, ..Resources::default() }),
                allow_commands: true,
                workdir: workdir.to_path_buf(),
                heartbeat_interval_ms: 1_000,
                // No orchestrator acknowledges the goodbye; do not wait for one.
                drain_timeout: Duration::from_millis(100),
            };
            let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
            let served = tokio::spawn(serve(config, listener, async move {
                let _ = signal.await;
            }));
            let client = NodeClient::new(&url, TOKEN);
            client.put_plan(&Plan { id: PLAN.to_owned(), entries, elapsed_ms: 0 }).await.expect("the plan");
            let session = client.info(Duration::from_secs(5)).await.expect("info").incarnation;
            Daemon { client, session, next_id: 1, shutdown: Some(shutdown), served }
        }

        /// Sends `bodies` reliably; the frames the node had for us right away.
        async fn send(&mut self, bodies: Vec<ToAgent>) -> Vec<Frame<ToOrchestrator>> {
            let frames = bodies
                .into_iter()
                .map(|body| {
                    self.next_id += 1;
                    let (session, id) = (self.session, self.next_id - 1);
                    Frame::Data(Packet { session, id, floor: 1, mode: DeliveryMode::ExactlyOnce, body })
                })
                .collect();
            self.exchange(frames, 0).await
        }

        async fn exchange(&self, frames: Vec<Frame<ToAgent>>, wait_ms: u64) -> Vec<Frame<ToOrchestrator>> {
            let exchange = Exchange { plan: PLAN.to_owned(), frames, wait_ms };
            self.client.exchange(&exchange).await.expect("an exchange").frames
        }

        /// Waits (up to 10 s) for the node to report an attempt's end: its outcome and load.
        async fn finished(&self, task: TaskId) -> (Outcome, Option<Box<LoadResult>>) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(end) = finished(&self.exchange(Vec::new(), 500).await, task) {
                    return end;
                }
            }
            panic!("no result for {task:?}");
        }

        /// Leaves as on SIGTERM and waits until `serve` returns.
        async fn stop(mut self) {
            let _ = self.shutdown.take().expect("running").send(());
            let served = tokio::time::timeout(Duration::from_secs(10), self.served).await;
            served.expect("serve returns").expect("serve does not panic").expect("serve ends well");
        }
    }

    fn finished(frames: &[Frame<ToOrchestrator>], of: TaskId) -> Option<(Outcome, Option<Box<LoadResult>>)> {
        frames.iter().find_map(|f| match f {
            Frame::Data(Packet { body: ToOrchestrator::Finished { task, outcome, load, .. }, .. }) if *task == of => {
                Some((outcome.clone(), load.clone()))
            }
            _ => None,
        })
    }

    fn assign(task: u64, work: u32) -> ToAgent {
        ToAgent::Assign { task: TaskId(task), attempt: Attempt(1), work, timeout_ms: 600_000 }
    }

    fn cancel(task: u64) -> ToAgent {
        ToAgent::Cancel { task: TaskId(task), attempt: Attempt(1) }
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("dtest-daemon-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        dir
    }

    /// The pid a command wrote to `file`, once it has.
    async fn pid_in(file: &std::path::Path) -> i32 {
        for _ in 0..200 {
            if let Some(pid) = std::fs::read_to_string(file).ok().and_then(|t| t.trim().parse().ok()) {
                return pid;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("{} was never written", file.display());
    }

    /// Whether `pid` runs; a zombie (killed, not yet reaped by the runtime) does not.
    fn runs(pid: i32) -> bool {
        let exists = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let zombie = stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        exists && !zombie
    }

    /// Whether `pid` is gone within a few seconds (the kill is sent; the kernel takes moments).
    async fn gone(pid: i32) -> bool {
        for _ in 0..100 {
            if !runs(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_commands_end_at_once_and_none_outlives_the_daemon() {
        let dir = scratch("commands");
        let script = "echo $$ > pid-{index}; exec sleep 300";
        let argv = ["sh", "-c", script].map(str::to_owned).to_vec();
        let work = PlanWork::Command { argv, env: BTreeMap::new(), cwd: None };
        let mut daemon = Daemon::start(&dir, vec![PlanEntry { name: "sleep".to_owned(), count: 2, work }]).await;
        daemon.send(vec![assign(1, 0), assign(2, 1)]).await;
        let (first, second) = (pid_in(&dir.join("pid-1")).await, pid_in(&dir.join("pid-2")).await);
        assert!(runs(first) && runs(second));

        // The cancel is reported in the answer to the cancel itself, not after the stop grace.
        let reply = daemon.send(vec![cancel(1)]).await;
        assert_eq!(finished(&reply, TaskId(1)), Some((Outcome::Cancelled, None)), "{reply:?}");
        assert!(gone(first).await, "the cancelled command {first} was killed");
        assert!(runs(second), "the other command runs on");

        daemon.stop().await;
        assert!(gone(second).await, "the daemon returned and left its command {second} running");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_load_hands_back_what_it_measured() {
        let addr = load::testing::target().await;
        let rate = load::Rate::Pattern {
            pattern: Pattern::Constant { rps: 200.0, duration_ms: 60_000 },
            seed: 1,
            index: 0,
            of: 1,
        };
        let spec = load::testing::spec(addr, rate);
        let dir = scratch("load");
        let entry = PlanEntry { name: "load".to_owned(), count: 1, work: PlanWork::Load(spec) };
        let mut daemon = Daemon::start(&dir, vec![entry]).await;
        daemon.send(vec![assign(1, 0)]).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        daemon.send(vec![cancel(1)]).await;
        let (outcome, load) = daemon.finished(TaskId(1)).await;
        assert_eq!(outcome, Outcome::Cancelled);
        let load = load.expect("the partial measure comes with the result");
        assert!(load.requests > 0 && load.errors == 0, "{load:?}");
        assert!(load.requests < 200 * 10, "it stopped: {} requests", load.requests);
        daemon.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
