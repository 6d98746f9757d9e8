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
    work: BTreeMap<(TaskId, Attempt), JoinHandle<()>>,
    /// Recent share of failed attempts, decayed per result.
    error_rate: f64,
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
            error_rate: 0.0,
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
    let stopped = async move {
        drained.notified().await;
        // Wake every long poll so the server's own graceful shutdown does not wait for them.
        node.outbound_ready.notify_waiters();
    };
    axum::serve(listener, app).with_graceful_shutdown(stopped).await
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
    for (_, handle) in std::mem::take(&mut state.work) {
        handle.abort();
    }
    let now_ms = node.now_ms();
    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let incarnation = unix_ms.max(state.last_incarnation + 1);
    state.last_incarnation = incarnation;
    let config = AgentConfig { heartbeat_interval_ms: node.config.heartbeat_interval_ms, ..AgentConfig::default() };
    state.agent = Some(Agent::new(now_ms, Incarnation(incarnation), config));
    state.plan_at = (Instant::now(), plan.elapsed_ms);
    state.plan = Some(Arc::new(plan));
    state.outbound.clear();
    state.error_rate = 0.0;
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
    let frames: Vec<_> = std::iter::from_fn(|| agent.poll_transmit()).collect();
    for action in actions {
        match action {
            AgentAction::Start { task, attempt, work } => {
                let handle = start(node, state, task, attempt, work);
                state.work.insert((task, attempt), handle);
            }
            AgentAction::Stop { task, attempt } => {
                if let Some(handle) = state.work.remove(&(task, attempt)) {
                    handle.abort();
                }
            }
        }
    }
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

/// Starts the work of one attempt; its end goes back to the agent.
fn start(node: &Arc<Node>, state: &NodeState, task: TaskId, attempt: Attempt, work: u32) -> JoinHandle<()> {
    let plan = state.plan.clone();
    let (plan_at, elapsed_ms) = state.plan_at;
    let node = node.clone();
    tokio::spawn(async move {
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
                    tokio::time::sleep(wait).await;
                    let (live, progress) = tokio::sync::watch::channel(load::Progress::default());
                    let reporter = tokio::spawn(report_live(node.clone(), task, attempt, progress));
                    let measured = load::run(&spec, Some(live), &load::Stop::new()).await;
                    reporter.abort();
                    match measured {
                        Ok(loaded) => {
                            load = Some(Box::new(loaded.measure.to_wire()));
                            Outcome::Passed
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
        state.work.remove(&(task, attempt));
        let failed = !matches!(outcome, Outcome::Passed);
        state.error_rate = 0.9 * state.error_rate + if failed { 0.1 } else { 0.0 };
        let now_ms = node.now_ms();
        if let Some(agent) = state.agent.as_mut() {
            agent.load_finished(now_ms, task, attempt, outcome, load);
        }
        step(&node, &mut state);
        drop(state);
        node.wake.notify_one();
    })
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
                if let Some(agent) = node.state().agent.as_mut() {
                    agent.set_metrics(metrics);
                }
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
