//! `dtest node`: the core's [`Agent`]s behind an axum server, one per plan the node holds. The
//! shell carries frames, runs the commands the agents start and stop, samples the machine for
//! heartbeats, applies the network faults it is told to and keeps the inbox of messages for
//! commands; every decision is an agent's.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use dtest_core::faults::{Direction, Link, Verdict};
use dtest_core::measure::LiveLoad;
use dtest_core::protocol::{
    Agent, AgentAction, AgentConfig, Attempt, DeliveryMode, Frame, Incarnation, Outcome, TaskId, ToOrchestrator,
};
use rand_chacha::ChaCha8Rng;
use rand_chacha::rand_core::{Rng, SeedableRng};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::api::{
    ApiError, BODY_MAX, Exchange, ExchangeReply, Faults, INBOX_LINES_MAX, MESSAGE_BODY_MAX, MESSAGE_IDS_MAX,
    MESSAGE_NAME_MAX, MessageReceipt, NodeInfo, NodeMessage, PLANS_MAX, PREFIX, Plan, PlanWork, Resources, WAIT_MAX_MS,
};
use crate::register::{Registration, register_loop};
use crate::secret::Secret;
use crate::secure::Incoming;
use crate::{exec, load, metrics, system};

/// Frames waiting for the orchestrator beyond this many are dropped, oldest first (reliable
/// ones are resent by the agent; heartbeats are replaced by newer ones). Per plan.
const OUTBOUND_MAX: usize = 10_000;
/// Frames held back by injected latency, both ways and over every plan; one past it is lost, as
/// a full queue on a slow link drops. Each held frame is a sleeping task until it is due.
const DELAYED_MAX: usize = 10_000;

/// When the daemon leaves, how long it waits for the work it aborted to be dropped (commands'
/// process groups killed); dropping takes microseconds unless a worker thread is stuck.
const ABORT_WAIT_MAX: Duration = Duration::from_secs(5);

/// Command tasks a node runs at once, across its plans, unless told (`--max-commands`).
pub const MAX_COMMANDS_DEFAULT: usize = 64;

/// The most command tasks a node can be told to run at once.
pub const MAX_COMMANDS_MAX: usize = 4096;

/// How a node daemon runs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// The token every request must carry.
    pub token: Secret,
    /// The node's name, given to its commands as `DTEST_NODE`; unset when not known.
    pub name: Option<String>,
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
    /// The node's working directory: each command attempt runs in a directory of its own
    /// under it (`.dtest/tasks/PLAN/TASK-ATTEMPT`), finds relative programs (`./run-tests`)
    /// and gets its absolute path as `DTEST_WORKDIR`; the inbox is kept there.
    pub workdir: PathBuf,
    /// Command tasks that run at once, across plans (1 to [`MAX_COMMANDS_MAX`]); more wait
    /// for a slot.
    pub max_commands: usize,
    /// Time between heartbeats.
    pub heartbeat_interval_ms: u64,
    /// After SIGTERM, how long to wait for the orchestrator to take the last results.
    pub drain_timeout: Duration,
    /// The service to register with, if any.
    pub registration: Option<Registration>,
}

struct Node {
    config: NodeConfig,
    info: NodeInfo,
    start: Instant,
    state: Mutex<NodeState>,
    /// The messages for commands; its own lock, as appending writes a file.
    inbox: Mutex<Inbox>,
    /// One append at a time on a blocking thread; other messages wait for it here, as tasks.
    inbox_writer: tokio::sync::Semaphore,
    /// Slots for command tasks, `max_commands` of them: a command waits for one to start.
    commands: tokio::sync::Semaphore,
    /// Wakes the agent loop: new inputs, or shutting down.
    wake: Notify,
    /// Wakes long polls: frames to send, or shutting down.
    outbound_ready: Notify,
    /// What the loads measured since the daemon started, for `GET /metrics`; its own lock, taken
    /// once a second per running load.
    load_totals: Mutex<metrics::LoadTotals>,
    /// Frames held back by injected latency right now, at most [`DELAYED_MAX`].
    delayed: Arc<AtomicUsize>,
}

/// A frame's place among the delayed ones, given back when dropped.
struct DelaySlot(Arc<AtomicUsize>);

impl DelaySlot {
    /// A place, if fewer than [`DELAYED_MAX`] frames are held back.
    fn take(delayed: &Arc<AtomicUsize>) -> Option<DelaySlot> {
        delayed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| (held < DELAYED_MAX).then_some(held + 1))
            .ok()
            .map(|_| DelaySlot(delayed.clone()))
    }
}

impl Drop for DelaySlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The work of one running attempt.
struct Work {
    handle: JoinHandle<()>,
    /// A load's stop signal: it stops and hands back its measure. Commands have none: they are
    /// aborted, which kills their process group.
    load_stop: Option<load::Stop>,
    /// Whether it runs a command (messages count the commands they reach).
    command: bool,
}

/// One plan's life on the node: its agent and everything of its run.
struct Life {
    agent: Agent,
    plan: Arc<Plan>,
    /// When the plan came and how long the run had been going then (loads' `start_ms` count
    /// from the run's start).
    plan_at: (Instant, u64),
    outbound: VecDeque<Frame<ToOrchestrator>>,
    /// The faults of this plan's link with its orchestrator.
    link: Link,
    work: BTreeMap<(TaskId, Attempt), Work>,
    /// Recent share of failed attempts, decayed per result.
    error_rate: f64,
    /// The highest packet id of a result counted in [`NodeState::tally`].
    counted_id: u64,
}

struct NodeState {
    /// The plans held, by id; at most [`PLANS_MAX`].
    lives: BTreeMap<String, Life>,
    rng: ChaCha8Rng,
    /// Work told to stop or aborted that may not have ended yet; the daemon waits for it before
    /// it returns, so no command outlives it. Pruned of what has ended as more comes.
    ending: Vec<JoinHandle<()>>,
    /// The machine as last sampled.
    metrics: dtest_core::health::Metrics,
    stopping: bool,
    last_incarnation: u64,
    /// Heartbeats sent and attempts ended, for `GET /metrics`.
    tally: metrics::Tally,
}

/// The inbox file of this daemon life and what it remembers of the messages appended.
struct Inbox {
    /// Its absolute path, given to commands as `DTEST_INBOX`.
    path: PathBuf,
    /// The open file, or why it could not be opened.
    file: Result<std::fs::File, String>,
    lines: u32,
    /// Recent `exactly_once` ids, oldest first, and the same as a set.
    recent: VecDeque<String>,
    seen: BTreeSet<String>,
}

/// Appends `line` at the file's end, or nothing: a write that fails halfway is cut back off, so
/// the next line does not start inside a broken one.
fn append_whole(file: &mut std::fs::File, line: &[u8]) -> std::io::Result<()> {
    use std::io::{Seek, SeekFrom};
    let end = file.seek(SeekFrom::End(0))?;
    let written = file.write_all(line).and_then(|()| file.flush());
    if written.is_err() {
        let _ = file.set_len(end);
        let _ = file.seek(SeekFrom::Start(end));
    }
    written
}

impl Inbox {
    /// A fresh inbox under `workdir`: the file is created empty (a new daemon life starts a new
    /// inbox). A failure is kept and answered to whoever posts a message.
    fn create(workdir: &std::path::Path, port: u16) -> Inbox {
        let file = crate::api::inbox_file(port);
        let path = std::path::absolute(workdir.join(&file)).unwrap_or_else(|_| workdir.join(&file));
        let file =
            path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::File::create(&path)).map_err(
                |e| format!("cannot write the inbox {}: {e}; give the node a writable --workdir", path.display()),
            );
        Inbox { path, file, lines: 0, recent: VecDeque::new(), seen: BTreeSet::new() }
    }

    /// Appends `line`, the message `id`, unless it is an `exactly_once` one seen recently;
    /// whether it was such a duplicate.
    fn take(&mut self, id: &str, mode: DeliveryMode, line: &[u8]) -> Result<bool, Refusal> {
        let dedup = mode == DeliveryMode::ExactlyOnce;
        if dedup && self.seen.contains(id) {
            return Ok(true);
        }
        if self.lines >= INBOX_LINES_MAX {
            let why =
                format!("inbox full: this node took {INBOX_LINES_MAX} messages already; restart it for a new inbox");
            return Err((StatusCode::CONFLICT, why));
        }
        let appended = match &mut self.file {
            Ok(file) => append_whole(file, line).map_err(|e| e.to_string()),
            Err(why) => Err(why.clone()),
        };
        if let Err(why) = appended {
            return Err((StatusCode::INTERNAL_SERVER_ERROR, format!("{}: {why}", self.path.display())));
        }
        self.lines += 1;
        if dedup {
            self.remember(id);
        }
        Ok(false)
    }

    fn remember(&mut self, id: &str) {
        self.recent.push_back(id.to_owned());
        self.seen.insert(id.to_owned());
        while self.recent.len() > MESSAGE_IDS_MAX {
            if let Some(old) = self.recent.pop_front() {
                self.seen.remove(&old);
            }
        }
    }
}

impl Node {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn state(&self) -> MutexGuard<'_, NodeState> {
        // A panic while holding the lock is a bug already reported; keep serving.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn inbox(&self) -> MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What the node is now: its newest plan's incarnation (0 with none) and how many it holds.
    fn current_info(&self) -> NodeInfo {
        let state = self.state();
        let incarnation = state.lives.values().map(|l| l.agent.incarnation().0).max().unwrap_or(0);
        NodeInfo { incarnation, plans: state.lives.len() as u32, ..self.info.clone() }
    }
}

impl NodeState {
    /// The life of `plan` if it is still the one of `incarnation` (not ended, not replaced).
    fn life(&mut self, plan: &str, incarnation: Incarnation) -> Option<&mut Life> {
        self.lives.get_mut(plan).filter(|l| l.agent.incarnation() == incarnation)
    }
}

/// Serves the node API on `listener` until `shutdown` resolves, then leaves gracefully: stops
/// the attempts of every plan, hands them back to their orchestrators and waits (up to the drain
/// timeout) until every result is acknowledged.
pub async fn serve(
    config: NodeConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_on(config, Incoming::plain(listener), shutdown).await
}

/// [`serve`] on a listener that may speak TLS.
pub async fn serve_on(
    config: NodeConfig,
    listener: Incoming,
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
        plans: 0,
    };
    let seed = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
    let node = Arc::new(Node {
        info,
        start: Instant::now(),
        state: Mutex::new(NodeState {
            lives: BTreeMap::new(),
            rng: ChaCha8Rng::seed_from_u64(seed),
            ending: Vec::new(),
            metrics: dtest_core::health::Metrics::default(),
            stopping: false,
            last_incarnation: 0,
            tally: metrics::Tally::default(),
        }),
        inbox: Mutex::new(Inbox::create(&config.workdir, listener.local_addr().map_or(0, |a| a.port()))),
        inbox_writer: tokio::sync::Semaphore::new(1),
        commands: tokio::sync::Semaphore::new(config.max_commands.clamp(1, MAX_COMMANDS_MAX)),
        wake: Notify::new(),
        outbound_ready: Notify::new(),
        load_totals: Mutex::new(metrics::LoadTotals::default()),
        delayed: Arc::default(),
        config,
    });
    let app = router(node.clone());
    let drained = Arc::new(Notify::new());
    tokio::spawn(agent_loop(node.clone(), drained.clone()));
    let (leaving_tx, leaving) = watch::channel(false);
    if let Some(registration) = node.config.registration.clone() {
        let informed = node.clone();
        let mut leaving = leaving.clone();
        let stop = async move {
            let _ = leaving.wait_for(|l| *l).await;
        };
        tokio::spawn(register_loop(registration, move || informed.current_info(), stop));
    }
    let stopper = node.clone();
    tokio::spawn(async move {
        shutdown.await;
        let _ = leaving_tx.send(true);
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
        let state = &mut *state;
        let work = state.lives.values_mut().flat_map(|l| std::mem::take(&mut l.work).into_values().map(|w| w.handle));
        work.collect::<Vec<_>>().into_iter().chain(state.ending.drain(..)).collect()
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
        .route(&format!("{PREFIX}/plans/{{id}}"), delete(end_plan))
        .route(&format!("{PREFIX}/exchange"), post(exchange))
        .route(&format!("{PREFIX}/faults"), put(faults))
        .route(&format!("{PREFIX}/messages"), post(message))
        .route("/metrics", get(scrape))
        .route_layer(middleware::from_fn_with_state(node.clone(), authorize))
        .layer(DefaultBodyLimit::max(BODY_MAX))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint; the API is under /v1") })
        .with_state(node)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(ApiError { error: message.into() })).into_response()
}

/// Why a request is refused: its status and message.
type Refusal = (StatusCode, String);

/// The answer to a request naming a plan the node does not hold.
fn needs_plan() -> Response {
    error(StatusCode::CONFLICT, "this node does not have that plan; PUT it first")
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
        Some(token) if node.config.token.matches(token.as_bytes()) => next.run(request).await,
        Some(_) => error(StatusCode::UNAUTHORIZED, "wrong token"),
        None => error(StatusCode::UNAUTHORIZED, "missing `Authorization: Bearer TOKEN`"),
    }
}

async fn info(State(node): State<Arc<Node>>) -> Response {
    axum::Json(node.current_info()).into_response()
}

/// `GET /metrics`: the node's figures for Prometheus, read from its state at the scrape.
async fn scrape(State(node): State<Arc<Node>>, headers: HeaderMap) -> Response {
    let figures = {
        let state = node.state();
        let running: Vec<&Work> =
            state.lives.values().flat_map(|l| l.work.values()).filter(|w| !w.handle.is_finished()).collect();
        metrics::NodeFigures {
            plans: state.lives.len() as u64,
            commands: running.iter().filter(|w| w.command).count() as u64,
            loads: running.iter().filter(|w| w.load_stop.is_some()).count() as u64,
            tally: state.tally,
            load: metrics::LoadTotals::default(),
        }
    };
    let load = node.load_totals.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    metrics::respond(metrics::NodeFigures { load, ..figures }, accept)
}

async fn plan(State(node): State<Arc<Node>>, body: Result<axum::Json<Plan>, JsonRejection>) -> Response {
    let plan = match body {
        Ok(axum::Json(plan)) => plan,
        Err(rejection) => return rejected(rejection),
    };
    // Checked as the scenario parser checks what it builds, before anything of it runs.
    if let Err(why) = plan.check() {
        tracing::warn!(execution = %plan.id, "plan refused: {why}");
        return error(StatusCode::UNPROCESSABLE_ENTITY, why);
    }
    let mut state = node.state();
    if state.stopping {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down");
    }
    // A plan held already keeps its life: its agent, running work and unacknowledged results.
    if state.lives.contains_key(&plan.id) {
        return StatusCode::NO_CONTENT.into_response();
    }
    if state.lives.len() >= PLANS_MAX && !evict_idle(&mut state) {
        return error(
            StatusCode::CONFLICT,
            format!(
                "this node holds {PLANS_MAX} plans, all with running work; end one (DELETE /v1/plans/ID) or retry \
                 when one has finished"
            ),
        );
    }
    // A new plan is a new run: a new life, with its own agent and nothing of the other runs'.
    let now_ms = node.now_ms();
    let unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let incarnation = unix_ms.max(state.last_incarnation + 1);
    state.last_incarnation = incarnation;
    let config = AgentConfig { heartbeat_interval_ms: node.config.heartbeat_interval_ms, ..AgentConfig::default() };
    let mut agent = Agent::new(now_ms, Incarnation(incarnation), config);
    // Its first heartbeat carries the machine as last sampled, not zeros.
    agent.set_metrics(state.metrics);
    let id = plan.id.clone();
    let life = Life {
        agent,
        plan_at: (Instant::now(), plan.elapsed_ms),
        plan: Arc::new(plan),
        outbound: VecDeque::new(),
        link: Link::default(),
        work: BTreeMap::new(),
        error_rate: 0.0,
        counted_id: 0,
    };
    tracing::info!(execution = %id, entries = life.plan.entries.len(), "plan received: a new run");
    state.lives.insert(id.clone(), life);
    step(&node, &mut state, &id);
    drop(state);
    node.wake.notify_one();
    StatusCode::NO_CONTENT.into_response()
}

/// Drops the oldest life with no running work; whether there was one.
fn evict_idle(state: &mut NodeState) -> bool {
    let oldest = state
        .lives
        .iter()
        .filter(|(_, life)| life.work.is_empty() && life.agent.is_idle())
        .min_by_key(|(_, life)| life.agent.incarnation())
        .map(|(id, _)| id.clone());
    oldest.is_some_and(|id| state.lives.remove(&id).is_some())
}

async fn end_plan(State(node): State<Arc<Node>>, Path(id): Path<String>) -> Response {
    let mut state = node.state();
    let Some(life) = state.lives.remove(&id) else {
        return error(StatusCode::NOT_FOUND, format!("this node does not hold plan `{id}`"));
    };
    tracing::info!(execution = %id, "plan ended: its work stops");
    // Its work reports to no one any more: stop it all now, as the daemon's end would.
    for (_, work) in life.work {
        work.handle.abort();
        keep_ending(&mut state.ending, work.handle);
    }
    drop(state);
    node.wake.notify_one();
    node.outbound_ready.notify_waiters();
    StatusCode::NO_CONTENT.into_response()
}

async fn faults(State(node): State<Arc<Node>>, body: Result<axum::Json<Faults>, JsonRejection>) -> Response {
    let faults = match body {
        Ok(axum::Json(faults)) => faults,
        Err(rejection) => return rejected(rejection),
    };
    // The scenario format's own bound on a latency fault: a delay past it would hold frames
    // (and their memory) for as long as a peer likes.
    let latency_max = dtest_core::limits::MILLIS_MAX as u64;
    for rule in [faults.link.to_node, faults.link.to_orchestrator] {
        if !(0.0..=1.0).contains(&rule.loss)
            || rule.latency_min_ms > rule.latency_max_ms
            || rule.latency_max_ms > latency_max
        {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("loss must be in [0, 1] and latency_min_ms <= latency_max_ms <= {latency_max}"),
            );
        }
    }
    let mut state = node.state();
    match &faults.plan {
        None => state.lives.values_mut().for_each(|life| life.link = faults.link),
        Some(id) => match state.lives.get_mut(id) {
            Some(life) => life.link = faults.link,
            None => return needs_plan(),
        },
    }
    StatusCode::NO_CONTENT.into_response()
}

async fn exchange(State(node): State<Arc<Node>>, body: Result<axum::Json<Exchange>, JsonRejection>) -> Response {
    let request = match body {
        Ok(axum::Json(request)) => request,
        Err(rejection) => return rejected(rejection),
    };
    let plan = request.plan;
    let incarnation = {
        let mut state = node.state();
        let Some(incarnation) = state.lives.get(&plan).map(|l| l.agent.incarnation()) else {
            return needs_plan();
        };
        for frame in request.frames {
            deliver(&node, &mut state, &plan, incarnation, frame);
        }
        step(&node, &mut state, &plan);
        incarnation
    };
    node.wake.notify_one();
    let wait = Duration::from_millis(request.wait_ms.min(WAIT_MAX_MS));
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let notified = node.outbound_ready.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut state = node.state();
            let stopping = state.stopping;
            // The plan ended (or was replaced) meanwhile: nothing more for this exchange.
            let Some(life) = state.life(&plan, incarnation) else {
                return axum::Json(ExchangeReply::default()).into_response();
            };
            if !life.outbound.is_empty() || stopping && life.agent.is_drained() {
                let frames = life.outbound.drain(..).collect();
                return axum::Json(ExchangeReply { frames }).into_response();
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return axum::Json(ExchangeReply::default()).into_response();
        }
    }
}

/// Hands one frame from the orchestrator to the agent of `plan`, through its link's faults.
fn deliver(
    node: &Arc<Node>,
    state: &mut NodeState,
    plan: &str,
    incarnation: Incarnation,
    frame: Frame<dtest_core::protocol::ToAgent>,
) {
    let NodeState { lives, rng, .. } = state;
    let Some(life) = lives.get_mut(plan) else { return };
    match life.link.to_node.verdict(|| unit(rng)) {
        Verdict::Cut | Verdict::Lost => {}
        Verdict::Deliver(0) => life.agent.handle(node.now_ms(), frame),
        Verdict::Deliver(delay_ms) => {
            let Some(slot) = DelaySlot::take(&node.delayed) else { return };
            let node = node.clone();
            let plan = plan.to_owned();
            tokio::spawn(async move {
                let _slot = slot;
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                let mut state = node.state();
                let now_ms = node.now_ms();
                if let Some(life) = state.life(&plan, incarnation) {
                    life.agent.handle(now_ms, frame);
                }
                step(&node, &mut state, &plan);
                drop(state);
                node.wake.notify_one();
            });
        }
    }
}

async fn message(State(node): State<Arc<Node>>, body: Result<axum::Json<NodeMessage>, JsonRejection>) -> Response {
    let message = match body {
        Ok(axum::Json(message)) => message,
        Err(rejection) => return rejected(rejection),
    };
    let line = match inbox_line(&message) {
        Ok(line) => line,
        Err((status, why)) => return error(status, why),
    };
    let delivered_to = running_commands(&node);
    // Appending writes and flushes a file, which may be on a slow disk: on a blocking thread, one
    // at a time. (A client that leaves meanwhile has its message taken, as if its answer were
    // lost.)
    let Ok(_writer) = node.inbox_writer.acquire().await else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "the node is shutting down".to_owned());
    };
    let inbox = node.clone();
    let take = move || inbox.inbox().take(&message.id, message.mode, &line);
    match tokio::task::spawn_blocking(take).await {
        Ok(Ok(duplicate)) => axum::Json(MessageReceipt { duplicate, delivered_to }).into_response(),
        Ok(Err((status, why))) => error(status, why),
        Err(_) => error(StatusCode::INTERNAL_SERVER_ERROR, "the inbox write did not finish".to_owned()),
    }
}

/// The inbox line of a message, once its names and size are checked.
fn inbox_line(message: &NodeMessage) -> Result<Vec<u8>, Refusal> {
    if message.id.is_empty() || message.id.chars().count() > MESSAGE_NAME_MAX {
        let why = format!("`id` must be 1 to {MESSAGE_NAME_MAX} characters");
        return Err((StatusCode::UNPROCESSABLE_ENTITY, why));
    }
    if message.from.chars().count() > MESSAGE_NAME_MAX {
        let why = format!("`from` must be at most {MESSAGE_NAME_MAX} characters");
        return Err((StatusCode::UNPROCESSABLE_ENTITY, why));
    }
    if serde_json::to_vec(&message.body).map_or(usize::MAX, |b| b.len()) > MESSAGE_BODY_MAX {
        let why = format!("the message body is over {MESSAGE_BODY_MAX} bytes; send a reference to bigger data instead");
        return Err((StatusCode::PAYLOAD_TOO_LARGE, why));
    }
    let at_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let line = serde_json::json!({ "id": message.id, "from": message.from, "body": message.body, "at_ms": at_ms });
    let mut line =
        serde_json::to_vec(&line).map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, format!("the body: {e}")))?;
    line.push(b'\n');
    Ok(line)
}

/// How many command tasks run now, in every plan.
fn running_commands(node: &Node) -> u32 {
    let state = node.state();
    state.lives.values().flat_map(|l| l.work.values()).filter(|w| w.command && !w.handle.is_finished()).count() as u32
}

/// A uniform draw in [0, 1).
fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// Carries out what the agent of `plan` asked for: starts and stops work, queues its frames
/// through the fault layer.
fn step(node: &Arc<Node>, state: &mut NodeState, plan: &str) {
    let NodeState { lives, rng, ending, tally, .. } = state;
    let Some(life) = lives.get_mut(plan) else { return };
    let actions: Vec<AgentAction> = std::iter::from_fn(|| life.agent.poll_action()).collect();
    let mut cancelled = Vec::new();
    for action in actions {
        match action {
            AgentAction::Start { task, attempt, work } => {
                let work = start(node, plan, life, task, attempt, work);
                life.work.insert((task, attempt), work);
            }
            AgentAction::Stop { task, attempt } => match life.work.remove(&(task, attempt)) {
                Some(Work { handle, load_stop: Some(stop), .. }) => {
                    // The load ends within moments and reports its partial measure itself.
                    stop.stop();
                    let abort = handle.abort_handle();
                    tokio::spawn(async move {
                        // The agent stops waiting for its measure then; so does the shell.
                        tokio::time::sleep(Duration::from_millis(AgentConfig::default().stop_grace_ms)).await;
                        abort.abort(); // Nothing happens if it has ended.
                    });
                    keep_ending(ending, handle);
                }
                Some(Work { handle, load_stop: None, .. }) => {
                    // Dropping the command's future kills its process group; a cancel is
                    // reported at once (the agent ignores it for an attempt already ended).
                    handle.abort();
                    keep_ending(ending, handle);
                    cancelled.push((task, attempt));
                }
                None => {}
            },
        }
    }
    let now_ms = node.now_ms();
    for (task, attempt) in cancelled {
        life.agent.work_finished(now_ms, task, attempt, Outcome::Cancelled);
    }
    let frames: Vec<_> = std::iter::from_fn(|| life.agent.poll_transmit()).collect();
    tally.count(&mut life.counted_id, &frames);
    let incarnation = life.agent.incarnation();
    let mut queued = false;
    for frame in frames {
        match life.link.rule(Direction::ToOrchestrator).verdict(|| unit(rng)) {
            Verdict::Cut | Verdict::Lost => {}
            Verdict::Deliver(0) => {
                life.outbound.push_back(frame);
                queued = true;
            }
            Verdict::Deliver(delay_ms) => {
                let Some(slot) = DelaySlot::take(&node.delayed) else { continue };
                let node = node.clone();
                let plan = plan.to_owned();
                tokio::spawn(async move {
                    let _slot = slot;
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    if let Some(life) = node.state().life(&plan, incarnation) {
                        life.outbound.push_back(frame);
                    }
                    node.outbound_ready.notify_waiters();
                });
            }
        }
    }
    while life.outbound.len() > OUTBOUND_MAX {
        life.outbound.pop_front();
    }
    if queued {
        node.outbound_ready.notify_waiters();
    }
}

/// [`step`] for every plan held.
fn step_all(node: &Arc<Node>, state: &mut NodeState) {
    let plans: Vec<String> = state.lives.keys().cloned().collect();
    for plan in plans {
        step(node, state, &plan);
    }
}

/// Keeps a handle of work told to stop until the daemon leaves, forgetting those that ended.
fn keep_ending(ending: &mut Vec<JoinHandle<()>>, handle: JoinHandle<()>) {
    ending.retain(|h| !h.is_finished());
    ending.push(handle);
}

/// Starts the work of one attempt of `plan`; its end goes back to the agent of the same life.
fn start(node: &Arc<Node>, plan_id: &str, life: &Life, task: TaskId, attempt: Attempt, work: u32) -> Work {
    let plan = life.plan.clone();
    let (plan_at, elapsed_ms) = life.plan_at;
    let incarnation = life.agent.incarnation();
    let plan_id = plan_id.to_owned();
    let node = node.clone();
    let stop = load::Stop::new();
    let kind = plan.instance(work).map(|(e, _)| matches!(e.work, PlanWork::Load(_)));
    let load_stop = (kind == Some(true)).then(|| stop.clone());
    let command = kind == Some(false);
    // Every line logged about the attempt carries its execution (the plan's id), task and attempt.
    let span = tracing::info_span!("attempt", execution = %plan_id, task = task.0, attempt = attempt.0);
    let work_item = async move {
        tracing::info!(work, "task attempt started");
        let mut load = None;
        let outcome = match plan.instance(work) {
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
                    let feed = Arc::new(Mutex::new(metrics::LoadFeed::default()));
                    let reporter = tokio::spawn(report_live(
                        node.clone(),
                        plan_id.clone(),
                        incarnation,
                        task,
                        attempt,
                        progress,
                        feed.clone(),
                    ));
                    // Stopped before it started, it returns at once with nothing measured.
                    let measured = load::run(&spec, Some(live), &stop).await;
                    reporter.abort();
                    match measured {
                        Ok(loaded) => {
                            let mut feed = feed.lock().unwrap_or_else(|e| e.into_inner());
                            feed.settle(&node.load_totals, &loaded.measure);
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
                    // Against the daemon's own current directory, which never changes.
                    let workdir = std::path::absolute(&node.config.workdir).unwrap_or(node.config.workdir.clone());
                    let dir = task_dir(&workdir, &plan_id, task, attempt);
                    let env = command_env(&node, &workdir, &dir, env);
                    let cwd = cwd.as_ref().map(|c| workdir.join(c));
                    // A slot first: the attempt's timeout runs meanwhile, and a cancel drops the wait.
                    match node.commands.acquire().await {
                        Ok(_slot) => exec::run(&argv, exec::Setting { dir, cwd, workdir, env }).await,
                        Err(_) => Outcome::Failed("the node is shutting down".to_owned()),
                    }
                }
            },
        };
        match &outcome {
            Outcome::Failed(why) => {
                let why: String = why.chars().take(200).collect();
                tracing::info!(outcome = "failed", why, "task attempt ended");
            }
            Outcome::Passed => tracing::info!(outcome = "passed", "task attempt ended"),
            Outcome::TimedOut => tracing::info!(outcome = "timed_out", "task attempt ended"),
            Outcome::Cancelled => tracing::info!(outcome = "cancelled", "task attempt ended"),
        }
        let mut state = node.state();
        // The plan ended or was replaced meanwhile: the work of the old life reports to no one.
        let Some(life) = state.life(&plan_id, incarnation) else { return };
        life.work.remove(&(task, attempt));
        // A stopped attempt says nothing of this node's health.
        if outcome != Outcome::Cancelled {
            let failed = !matches!(outcome, Outcome::Passed);
            life.error_rate = 0.9 * life.error_rate + if failed { 0.1 } else { 0.0 };
        }
        life.agent.load_finished(node.now_ms(), task, attempt, outcome, load);
        step(&node, &mut state, &plan_id);
        drop(state);
        node.wake.notify_one();
    };
    let handle = tokio::spawn(tracing::Instrument::instrument(work_item, span));
    Work { handle, load_stop, command }
}

/// A command's whole environment ([`exec::environment`]): of the daemon's own variables only
/// `PATH`, `HOME`, `LANG`, `LC_ALL` and `TZ`; `TMPDIR` its own directory `dir`; the plan's
/// variables over those; the node's own (`DTEST_INBOX`, `DTEST_WORKDIR`, and `DTEST_NODE` when
/// the node has a name) over everything.
fn command_env(
    node: &Node,
    workdir: &std::path::Path,
    dir: &std::path::Path,
    env: &BTreeMap<String, String>,
) -> BTreeMap<std::ffi::OsString, std::ffi::OsString> {
    let mut own = vec![("DTEST_INBOX", node.inbox().path.clone().into()), ("DTEST_WORKDIR", workdir.into())];
    if let Some(name) = &node.config.name {
        own.push(("DTEST_NODE", name.into()));
    }
    exec::environment(std::env::vars_os(), dir, env, &own)
}

/// The directory of one attempt of a command: `WORKDIR/.dtest/tasks/PLAN/TASK-ATTEMPT`. Plan
/// ids are checked plain names ([`crate::api::plan_id`]); any other byte would become `_`, and
/// a leading one too, so that no id reaches outside the plan's directory.
fn task_dir(workdir: &std::path::Path, plan: &str, task: TaskId, attempt: Attempt) -> PathBuf {
    let mut name: String =
        plan.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '_' }).collect();
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        name.insert(0, '_');
    }
    workdir.join(".dtest").join("tasks").join(name).join(format!("{}-{}", task.0, attempt.0))
}

/// Hands a running load's live figures to the agent, for its heartbeats, and adds them to the
/// node's load totals through `feed`.
async fn report_live(
    node: Arc<Node>,
    plan: String,
    incarnation: Incarnation,
    task: TaskId,
    attempt: Attempt,
    mut progress: watch::Receiver<load::Progress>,
    feed: Arc<Mutex<metrics::LoadFeed>>,
) {
    while progress.changed().await.is_ok() {
        let p = progress.borrow_and_update().clone();
        feed.lock().unwrap_or_else(|e| e.into_inner()).live(&node.load_totals, &p);
        let second = p.last_second.map(|(t, s)| s.to_wire(t));
        let live = LiveLoad { requests: p.requests, errors: p.errors, dropped: p.dropped, second };
        if let Some(life) = node.state().life(&plan, incarnation) {
            life.agent.set_live(task, attempt, live);
        }
    }
}

/// Hands the machine's metrics to every agent, each with its own plan's error rate.
fn set_metrics(state: &mut NodeState, metrics: dtest_core::health::Metrics) {
    state.metrics = metrics;
    for life in state.lives.values_mut() {
        let task_error_rate = (life.error_rate.clamp(0.0, 1.0) * 1000.0).round() / 1000.0;
        life.agent.set_metrics(dtest_core::health::Metrics { task_error_rate, ..metrics });
    }
}

/// Ticks the agents at their times and samples the machine for their heartbeats.
async fn agent_loop(node: Arc<Node>, drained: Arc<Notify>) {
    // Sampling reads /proc and the disk holding the work directory (statvfs, which a hung
    // network mount can block): on a blocking thread, never on the runtime's, and outside the
    // lock. Error rates are per plan.
    let workdir = node.config.workdir.clone();
    let sampler =
        Arc::new(std::sync::Mutex::new(tokio::task::spawn_blocking(move || system::Sampler::new(&workdir)).await.ok()));
    let mut next_sample_ms = 0;
    let mut leaving_since: Option<Instant> = None;
    loop {
        let now_ms = node.now_ms();
        if now_ms >= next_sample_ms {
            let sampling = sampler.clone();
            let metrics = tokio::task::spawn_blocking(move || {
                let mut sampler = sampling.lock().unwrap_or_else(|e| e.into_inner());
                sampler.as_mut().map(|s| s.sample(0.0)).unwrap_or_default()
            })
            .await
            .unwrap_or_default();
            set_metrics(&mut node.state(), metrics);
            next_sample_ms = now_ms + node.config.heartbeat_interval_ms.max(100);
        }
        let next_ms = {
            let mut state = node.state();
            let now_ms = node.now_ms();
            for life in state.lives.values_mut() {
                life.agent.tick(now_ms);
            }
            step_all(&node, &mut state);
            if state.stopping {
                let since = *leaving_since.get_or_insert_with(Instant::now);
                let done = state.lives.values().all(|l| l.agent.is_drained());
                if done || since.elapsed() >= node.config.drain_timeout {
                    drop(state);
                    drained.notify_one();
                    node.outbound_ready.notify_waiters();
                    return;
                }
            }
            let next = state.lives.values().map(|l| l.agent.next_tick_ms()).min().unwrap_or(u64::MAX);
            next.min(next_sample_ms).min(now_ms + 1_000)
        };
        let at = tokio::time::Instant::from_std(node.start + Duration::from_millis(next_ms));
        tokio::select! {
            () = tokio::time::sleep_until(at) => {}
            () = node.wake.notified() => {}
        }
    }
}

/// Shuts down gracefully: every plan's agent stops its attempts and tells its orchestrator.
fn leave(node: &Arc<Node>) {
    tracing::info!("leaving: running work is cancelled and its results handed over");
    let mut state = node.state();
    state.stopping = true;
    let now_ms = node.now_ms();
    for life in state.lives.values_mut() {
        life.agent.leave(now_ms);
    }
    step_all(node, &mut state);
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
    use crate::client::{ClientError, NodeClient};

    const TOKEN: &str = "daemon-test-token";
    const PLAN: &str = "plan";

    #[test]
    fn frames_held_back_by_latency_are_bounded_and_their_places_come_back() {
        let delayed = Arc::new(AtomicUsize::new(0));
        let held: Vec<DelaySlot> = (0..DELAYED_MAX).map(|_| DelaySlot::take(&delayed).expect("a place")).collect();
        assert!(DelaySlot::take(&delayed).is_none(), "one past the bound is lost");
        drop(held);
        assert_eq!(delayed.load(Ordering::Acquire), 0);
        assert!(DelaySlot::take(&delayed).is_some());
    }

    /// A daemon served by the test's runtime.
    struct Daemon {
        client: NodeClient,
        shutdown: Option<tokio::sync::oneshot::Sender<()>>,
        served: JoinHandle<std::io::Result<()>>,
    }

    impl Daemon {
        /// A daemon with commands allowed, running them in `workdir`, holding no plan yet.
        async fn serve(workdir: &std::path::Path) -> Daemon {
            Daemon::serve_with(workdir, MAX_COMMANDS_DEFAULT).await
        }

        /// [`Daemon::serve`] running at most `max_commands` commands at once.
        async fn serve_with(workdir: &std::path::Path, max_commands: usize) -> Daemon {
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
            let url = format!("http://{}", listener.local_addr().expect("its address"));
            let config = NodeConfig {
                token: Secret::new(TOKEN),
                name: Some("test-node".to_owned()),
                group: None,
                region: None,
                zone: None,
                capabilities: Vec::new(),
                resources: Some(Resources { cpu_millis: 1_000, memory_mb: 1_000, ..Resources::default() }),
                allow_commands: true,
                workdir: workdir.to_path_buf(),
                max_commands,
                heartbeat_interval_ms: 1_000,
                // No orchestrator acknowledges the goodbye; do not wait for one.
                drain_timeout: Duration::from_millis(100),
                registration: None,
            };
            let (shutdown, signal) = tokio::sync::oneshot::channel::<()>();
            let served = tokio::spawn(serve(config, listener, async move {
                let _ = signal.await;
            }));
            Daemon {
                client: NodeClient::new(&url, &Secret::new(TOKEN), &Default::default()),
                shutdown: Some(shutdown),
                served,
            }
        }

        /// A daemon holding plan [`PLAN`] of `entries`, and the orchestrator's side of it.
        async fn start(workdir: &std::path::Path, entries: Vec<PlanEntry>) -> (Daemon, Orchestrator) {
            let daemon = Daemon::serve(workdir).await;
            let run = daemon.plan(PLAN, entries).await;
            (daemon, run)
        }

        /// Gives the daemon plan `id` of `entries`; the orchestrator of that run.
        async fn plan(&self, id: &str, entries: Vec<PlanEntry>) -> Orchestrator {
            let plan = Plan { id: id.to_owned(), entries, elapsed_ms: 0 };
            self.client.put_plan(&plan).await.expect("the plan");
            // The newest plan's life is the one the node names.
            let session = self.client.info(Duration::from_secs(5)).await.expect("info").incarnation;
            Orchestrator { client: self.client.clone(), plan: id.to_owned(), session, next_id: 1 }
        }

        /// Leaves as on SIGTERM and waits until `serve` returns.
        async fn stop(mut self) {
            let _ = self.shutdown.take().expect("running").send(());
            let served = tokio::time::timeout(Duration::from_secs(10), self.served).await;
            served.expect("serve returns").expect("serve does not panic").expect("serve ends well");
        }
    }

    /// One run's orchestrator, as it talks to the node about its plan.
    struct Orchestrator {
        client: NodeClient,
        plan: String,
        session: u64,
        next_id: u64,
    }

    impl Orchestrator {
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
            self.try_exchange(frames, wait_ms).await.expect("an exchange").frames
        }

        async fn try_exchange(&self, frames: Vec<Frame<ToAgent>>, wait_ms: u64) -> Result<ExchangeReply, ClientError> {
            let exchange = Exchange { plan: self.plan.clone(), frames, wait_ms };
            self.client.exchange(&exchange).await
        }

        /// Waits (up to 10 s) for the node to report an attempt's end: its outcome and load.
        async fn finished(&self, task: TaskId) -> (Outcome, Option<Box<LoadResult>>) {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Some(end) = finished(&self.exchange(Vec::new(), 500).await, task) {
                    return end;
                }
            }
            panic!("no result for {task:?} of plan {}", self.plan);
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
        let script = r#"echo $$ > "$DTEST_WORKDIR/pid-{index}"; exec sleep 300"#;
        let argv = ["sh", "-c", script].map(str::to_owned).to_vec();
        let work = PlanWork::Command { argv, env: BTreeMap::new(), cwd: None };
        let (daemon, mut run) = Daemon::start(&dir, vec![PlanEntry { name: "sleep".to_owned(), count: 2, work }]).await;
        run.send(vec![assign(1, 0), assign(2, 1)]).await;
        let (first, second) = (pid_in(&dir.join("pid-1")).await, pid_in(&dir.join("pid-2")).await);
        assert!(runs(first) && runs(second));

        // The cancel is reported in the answer to the cancel itself, not after the stop grace.
        let reply = run.send(vec![cancel(1)]).await;
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
        let (daemon, mut run) = Daemon::start(&dir, vec![entry]).await;
        run.send(vec![assign(1, 0)]).await;
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        run.send(vec![cancel(1)]).await;
        let (outcome, load) = run.finished(TaskId(1)).await;
        assert_eq!(outcome, Outcome::Cancelled);
        let load = load.expect("the partial measure comes with the result");
        assert!(load.requests > 0 && load.errors == 0, "{load:?}");
        assert!(load.requests < 200 * 10, "it stopped: {} requests", load.requests);
        daemon.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Waits (up to 20 s) for the node to report the end of every task of `tasks`.
    async fn all_finished(run: &Orchestrator, tasks: &[u64]) -> BTreeMap<u64, Outcome> {
        let mut ends = BTreeMap::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while ends.len() < tasks.len() && Instant::now() < deadline {
            for frame in run.exchange(Vec::new(), 500).await {
                if let Frame::Data(Packet { body: ToOrchestrator::Finished { task, outcome, .. }, .. }) = frame
                    && tasks.contains(&task.0)
                {
                    ends.insert(task.0, outcome);
                }
            }
        }
        ends
    }

    /// Whether `dir` is gone within a few seconds (an attempt's is removed in the background).
    async fn removed(dir: &std::path::Path) -> bool {
        for _ in 0..100 {
            if !dir.exists() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_command_gets_a_scrubbed_environment_its_own_directory_and_relative_programs() {
        let dir = scratch("least-privilege");
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        let probe = r#"#!/bin/sh
env | cut -d= -f1 | sort > "$DTEST_WORKDIR/names-$1"
pwd > "$DTEST_WORKDIR/cwd-$1"
stat -c %a . > "$DTEST_WORKDIR/mode-$1"
test "$TMPDIR" = "$(pwd)" || exit 4
test "$PLAN_VAR" = planned || exit 5
"#;
        std::fs::write(bin.join("probe"), probe).expect("the probe");
        std::fs::set_permissions(bin.join("probe"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let env = BTreeMap::from([("PLAN_VAR".to_owned(), "planned".to_owned())]);
        let argv = vec!["./bin/probe".to_owned(), "{index}".to_owned()];
        let entry = PlanEntry { name: "probe".to_owned(), count: 1, work: PlanWork::Command { argv, env, cwd: None } };
        let (daemon, mut run) = Daemon::start(&dir, vec![entry]).await;
        run.send(vec![assign(1, 0)]).await;
        assert_eq!(run.finished(TaskId(1)).await, (Outcome::Passed, None));

        let required = ["DTEST_INBOX", "DTEST_NODE", "DTEST_WORKDIR", "PATH", "PLAN_VAR", "TMPDIR"];
        // Of the daemon's own: the kept few; and what `sh` itself sets.
        let allowed: BTreeSet<&str> =
            required.into_iter().chain(exec::KEPT_VARIABLES).chain(["PWD", "OLDPWD", "SHLVL", "_"]).collect();
        let ours: Vec<String> = std::env::vars_os().map(|(n, _)| n.to_string_lossy().into_owned()).collect();
        assert!(ours.iter().any(|n| !allowed.contains(n.as_str())), "the test process has variables to leak: {ours:?}");
        let names = std::fs::read_to_string(dir.join("names-1")).expect("the names");
        let names: BTreeSet<&str> = names.lines().collect();
        assert!(required.iter().all(|n| names.contains(n)), "{names:?}");
        assert!(names.is_subset(&allowed), "only the expected variables: {names:?}");

        let own = std::fs::canonicalize(&dir).expect("the scratch directory").join(".dtest/tasks/plan/1-1");
        let cwd = std::fs::read_to_string(dir.join("cwd-1")).expect("the cwd");
        assert_eq!(std::path::Path::new(cwd.trim()), own, "its own directory");
        assert_eq!(std::fs::read_to_string(dir.join("mode-1")).expect("the mode").trim(), "700");
        assert!(removed(&own).await, "{} was removed once the attempt ended", own.display());
        daemon.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn at_most_max_commands_run_at_once_and_the_others_wait_their_turn() {
        let dir = scratch("max-commands");
        let daemon = Daemon::serve_with(&dir, 2).await;
        // Each counts the commands running while it runs, halfway through.
        let script = "touch running-{index}; sleep 0.4; ls running-* | wc -l >> counts; sleep 0.4; rm running-{index}";
        let mut run = daemon.plan(PLAN, shell("capped", 4, script)).await;
        run.send((1..=4).map(|t| assign(t, t as u32 - 1)).collect()).await;
        let ends = all_finished(&run, &[1, 2, 3, 4]).await;
        assert_eq!(ends.values().filter(|o| **o == Outcome::Passed).count(), 4, "{ends:?}");
        let counts = std::fs::read_to_string(dir.join("counts")).expect("the counts");
        let counts: Vec<u32> = counts.lines().map(|l| l.trim().parse().expect("a count")).collect();
        assert_eq!((counts.len(), counts.iter().max()), (4, Some(&2)), "two at a time: {counts:?}");
        daemon.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_command_waiting_for_a_slot_still_times_out_and_can_be_cancelled() {
        let dir = scratch("slot-wait");
        let daemon = Daemon::serve_with(&dir, 1).await;
        let mut run = daemon.plan(PLAN, shell("hold", 3, "echo $$ > started-{index}; exec sleep 300")).await;
        run.send(vec![assign(1, 0)]).await;
        let holder = pid_in(&dir.join("started-1")).await;
        let short = ToAgent::Assign { task: TaskId(2), attempt: Attempt(1), work: 1, timeout_ms: 300 };
        run.send(vec![short, assign(3, 2)]).await;
        let reply = run.send(vec![cancel(3)]).await;
        assert_eq!(finished(&reply, TaskId(3)), Some((Outcome::Cancelled, None)), "{reply:?}");
        assert_eq!(run.finished(TaskId(2)).await, (Outcome::TimedOut, None));
        assert!(runs(holder), "the command holding the slot runs on");
        assert!(!dir.join("started-2").exists() && !dir.join("started-3").exists(), "neither got a slot");
        daemon.stop().await;
        assert!(gone(holder).await);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_plan_the_scenario_rules_refuse_is_422_naming_the_field_and_the_daemon_serves_on() {
        let dir = scratch("bad-plan");
        let daemon = Daemon::serve(&dir).await;
        // Bodies the client could not send: plain HTTP/1.1 over TCP.
        let addr = daemon.client.url().trim_start_matches("http://").to_owned();
        let put = |body: String| {
            let addr = addr.clone();
            async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("the daemon listens");
                let head = format!(
                    "PUT /v1/plan HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: \
                     application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                stream.write_all(format!("{head}{body}").as_bytes()).await.expect("the request is sent");
                let mut answer = String::new();
                stream.read_to_string(&mut answer).await.expect("an answer");
                let status: u16 = answer.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
                (status, answer)
            }
        };
        let load = |id: &str, connections: &str, rps: &str, duration_ms: &str| {
            format!(
                r#"{{"id": "{id}", "entries": [{{"name": "load", "count": 2, "work": {{"load": {{
                    "url": "http://127.0.0.1:1/", "timeout_ms": 1000, "connections": {connections},
                    "rate": {{"pattern": {{"pattern": {{"type": "constant", "rps": {rps},
                    "duration_ms": {duration_ms}}}, "seed": 0, "index": 0, "of": 1}}}}}}}}}}]}}"#
            )
        };
        let pattern = "entries[0].work.load.rate.pattern.pattern";
        let refused = [
            (load("p", "4", "-5", "1000"), format!("{pattern}.rps: expected at least 0, found -5")),
            (
                load("p", "1000000000", "10", "1000"),
                "entries[0].work.load.connections: expected at most 100000, found 1000000000".to_owned(),
            ),
            (
                load("p", "4", "10", "18446744073709551615"),
                format!("{pattern}.duration_ms: expected at most 604800000, found 18446744073709551615"),
            ),
            (load("../../escape", "4", "10", "1000"), "id: expected letters, digits".to_owned()),
        ];
        for (body, why) in refused {
            let (status, text) = put(body).await;
            assert_eq!(status, 422, "{text}");
            assert!(text.contains(&why), "{why:?} in {text}");
        }
        // JSON has no NaN or infinity, and serde refuses a number past f64's range.
        let (status, text) = put(load("p", "4", "1e309", "1000")).await;
        assert!(status == 400 && text.contains("number out of range"), "{text}");
        let argv = vec!["sh".to_owned(), "{idx}".to_owned()];
        let env = BTreeMap::from([("A=B".to_owned(), String::new())]);
        let work = PlanWork::Command { argv, env, cwd: Some("../../etc".to_owned()) };
        let plan = Plan {
            id: "p".to_owned(),
            entries: vec![PlanEntry { name: "t".to_owned(), count: 0, work }],
            elapsed_ms: 0,
        };
        let refused = daemon.client.put_plan(&plan).await;
        let Err(ClientError::Refused(422, why)) = refused else { panic!("{refused:?}") };
        for part in [
            "entries[0].count: expected at least 1, found 0",
            "entries[0].work.command.argv[1]: unknown placeholder `{idx}`",
            r#"entries[0].work.command.env["A=B"]: an environment variable name"#,
            r#"entries[0].work.command.cwd: expected a directory under the node's --workdir, without `..`; found "../../etc""#,
        ] {
            assert!(why.contains(part), "{part:?} in {why}");
        }
        assert_eq!(daemon.client.info(Duration::from_secs(5)).await.expect("info").plans, 0, "nothing was taken");
        let (status, text) = put(load("p", "4", "10", "1000")).await;
        assert_eq!(status, 204, "a plan within the rules is taken: {text}");
        daemon.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// One entry of `count` instances of `sh -c SCRIPT`, run from the node's working directory
    /// (where the test looks for what it writes) rather than the attempt's own.
    fn shell(name: &str, count: u32, script: &str) -> Vec<PlanEntry> {
        let script = format!(r#"cd "$DTEST_WORKDIR" || exit 9; {script}"#);
        let argv = vec!["sh".to_owned(), "-c".to_owned(), script];
        let work = PlanWork::Command { argv, env: BTreeMap::new(), cwd: None };
        vec![PlanEntry { name: name.to_owned(), count, work }]
    }

    fn message(id: &str, mode: DeliveryMode, body: serde_json::Value) -> NodeMessage {
        NodeMessage { id: id.to_owned(), from: "test".to_owned(), mode, body }
    }

    /// The lines of the daemon's inbox, parsed.
    fn inbox_of(dir: &std::path::Path) -> Vec<serde_json::Value> {
        let inboxes = std::fs::read_dir(dir.join(".dtest")).expect("the inbox directory");
        let path = inboxes.flatten().map(|e| e.path()).find(|p| p.to_string_lossy().ends_with(".jsonl"));
        let text = std::fs::read_to_string(path.expect("an inbox")).expect("the inbox exists");
        text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn two_plans_run_at_once_each_with_its_own_agent() {
        let dir = scratch("two-plans");
        let daemon = Daemon::serve(&dir).await;
        let mut first = daemon.plan("first", shell("one", 1, "echo first > first-{index}")).await;
        let mut second = daemon.plan("second", shell("two", 1, "echo second > second-{index}")).await;
        assert_ne!(first.session, second.session, "each plan is a life of its own");
        assert_eq!(daemon.client.info(Duration::from_secs(5)).await.expect("info").plans, 2);
        first.send(vec![assign(1, 0)]).await;
        second.send(vec![assign(1, 0)]).await;
        assert_eq!(first.finished(TaskId(1)).await, (Outcome::Passed, None));
        assert_eq!(second.finished(TaskId(1)).await, (Outcome::Passed, None));
        assert!(dir.join("first-1").exists() && dir.join("second-1").exists());
        daemon.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn putting_a_held_plan_again_keeps_its_running_command_and_result() {
        let dir = scratch("re-put");
        let script = "echo $$ > pid-{index}; while [ ! -e release ]; do sleep 0.05; done";
        let entries = shell("wait", 1, script);
        let (daemon, mut run) = Daemon::start(&dir, entries.clone()).await;
        run.send(vec![assign(1, 0)]).await;
        let pid = pid_in(&dir.join("pid-1")).await;

        // As a restarted orchestrator re-adopting the node would.
        daemon.client.put_plan(&Plan { id: PLAN.to_owned(), entries, elapsed_ms: 5_000 }).await.expect("put again");
        let info = daemon.client.info(Duration::from_secs(5)).await.expect("info");
        assert_eq!((info.incarnation, info.plans), (run.session, 1), "the same life");
        assert!(runs(pid), "the command was not stopped");
        std::fs::write(dir.join("release"), "").expect("release the command");
        assert_eq!(run.finished(TaskId(1)).await, (Outcome::Passed, None));
        assert_eq!(pid_in(&dir.join("pid-1")).await, pid, "the command was not started again");
        daemon.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn ending_a_plan_stops_its_work_and_forgets_it_while_others_run_on() {
        let dir = scratch("end-plan");
        let daemon = Daemon::serve(&dir).await;
        let mut ended = daemon.plan("ended", shell("a", 1, "echo $$ > pid-a; exec sleep 300")).await;
        let mut kept = daemon.plan("kept", shell("b", 1, "echo $$ > pid-b; exec sleep 300")).await;
        ended.send(vec![assign(1, 0)]).await;
        kept.send(vec![assign(1, 0)]).await;
        let (a, b) = (pid_in(&dir.join("pid-a")).await, pid_in(&dir.join("pid-b")).await);

        daemon.client.end_plan("ended").await.expect("the plan ends");
        assert!(gone(a).await, "the ended plan's command {a} was killed");
        assert!(runs(b), "the other plan's command runs on");
        assert!(matches!(ended.try_exchange(Vec::new(), 0).await, Err(ClientError::NeedsPlan)));
        let again = daemon.client.end_plan("ended").await;
        assert!(matches!(again, Err(ClientError::Refused(404, _))), "{again:?}");
        assert_eq!(daemon.client.info(Duration::from_secs(5)).await.expect("info").plans, 1);
        daemon.stop().await;
        assert!(gone(b).await);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_node_evicts_its_oldest_idle_plan_and_refuses_when_all_are_busy() {
        let dir = scratch("evict");
        let daemon = Daemon::serve(&dir).await;
        let mut runs = Vec::new();
        for i in 0..PLANS_MAX {
            runs.push(daemon.plan(&format!("p{i}"), shell("sleep", 1, "exec sleep 300")).await);
        }
        let newest = daemon.plan("newest", shell("sleep", 1, "exec sleep 300")).await;
        assert!(matches!(runs[0].try_exchange(Vec::new(), 0).await, Err(ClientError::NeedsPlan)), "p0 evicted");
        runs[0] = newest;
        for run in &mut runs {
            run.send(vec![assign(1, 0)]).await;
        }
        let plan = Plan { id: "one-too-many".to_owned(), entries: Vec::new(), elapsed_ms: 0 };
        let refused = daemon.client.put_plan(&plan).await;
        assert!(matches!(&refused, Err(ClientError::Refused(409, why)) if why.contains("running work")), "{refused:?}");
        assert_eq!(daemon.client.info(Duration::from_secs(5)).await.expect("info").plans, PLANS_MAX as u32);
        daemon.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn faults_naming_a_plan_cut_that_plan_only() {
        let dir = scratch("faults");
        let daemon = Daemon::serve(&dir).await;
        let mut cut = daemon.plan("cut", shell("true", 1, "true")).await;
        let mut open = daemon.plan("open", shell("true", 1, "true")).await;
        let mut link = Link::default();
        link.to_orchestrator.cut = true;
        let unknown = Faults { link, plan: Some("nowhere".to_owned()) };
        assert!(matches!(daemon.client.put_faults(&unknown).await, Err(ClientError::Refused(409, _))));
        let mut slow = Link::default();
        slow.to_node.latency_max_ms = dtest_core::limits::MILLIS_MAX as u64 + 1;
        let refused = daemon.client.put_faults(&Faults { link: slow, plan: None }).await;
        assert!(matches!(refused, Err(ClientError::Refused(422, _))), "a latency past the format's bound: {refused:?}");
        daemon.client.put_faults(&Faults { link, plan: Some("cut".to_owned()) }).await.expect("faults");
        cut.send(vec![assign(1, 0)]).await;
        open.send(vec![assign(1, 0)]).await;
        assert_eq!(open.finished(TaskId(1)).await, (Outcome::Passed, None));
        assert_eq!(cut.exchange(Vec::new(), 300).await, Vec::new(), "nothing crosses the cut link");
        daemon.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_message_reaches_a_running_command_through_its_inbox() {
        let dir = scratch("message");
        let script = r#"test "$DTEST_NODE" = test-node || exit 3; touch started; while ! grep -q go "$DTEST_INBOX"; do sleep 0.05; done"#;
        let (daemon, mut run) = Daemon::start(&dir, shell("wait", 1, script)).await;
        run.send(vec![assign(1, 0)]).await;
        for _ in 0..200 {
            if dir.join("started").exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(dir.join("started").exists(), "the command started");
        assert_eq!(finished(&run.exchange(Vec::new(), 300).await, TaskId(1)), None, "it waits for the message");

        let go = message("phase-2", DeliveryMode::ExactlyOnce, serde_json::json!({"signal": "go"}));
        let receipt = daemon.client.send_message(&go).await.expect("the message is taken");
        assert_eq!(receipt, MessageReceipt { duplicate: false, delivered_to: 1 });
        assert_eq!(run.finished(TaskId(1)).await, (Outcome::Passed, None));
        let lines = inbox_of(&dir);
        assert_eq!(lines.len(), 1);
        assert_eq!((lines[0]["id"].as_str(), lines[0]["from"].as_str()), (Some("phase-2"), Some("test")));
        assert_eq!(lines[0]["body"], serde_json::json!({"signal": "go"}));
        assert!(lines[0]["at_ms"].as_u64().is_some_and(|t| t > 0));
        daemon.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exactly_once_messages_are_appended_once_and_at_least_once_ones_each_time() {
        let dir = scratch("dedup");
        let daemon = Daemon::serve(&dir).await;
        let once = message("once", DeliveryMode::ExactlyOnce, serde_json::json!(1));
        let first = daemon.client.send_message(&once).await.expect("taken");
        let again = daemon.client.send_message(&once).await.expect("taken");
        assert_eq!((first.duplicate, again.duplicate, first.delivered_to), (false, true, 0));
        let repeated = message("repeated", DeliveryMode::AtLeastOnce, serde_json::json!(2));
        for _ in 0..2 {
            assert!(!daemon.client.send_message(&repeated).await.expect("taken").duplicate);
        }
        let ids: Vec<_> = inbox_of(&dir).iter().map(|l| l["id"].as_str().unwrap_or("").to_owned()).collect();
        assert_eq!(ids, ["once", "repeated", "repeated"]);
        daemon.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn oversized_and_misnamed_messages_are_refused() {
        let dir = scratch("big-message");
        let daemon = Daemon::serve(&dir).await;
        let big = message("big", DeliveryMode::AtLeastOnce, serde_json::json!("x".repeat(MESSAGE_BODY_MAX)));
        let refused = daemon.client.send_message(&big).await;
        assert!(matches!(&refused, Err(ClientError::Refused(413, _))), "{refused:?}");
        let unnamed = message("", DeliveryMode::AtLeastOnce, serde_json::json!(null));
        assert!(matches!(daemon.client.send_message(&unnamed).await, Err(ClientError::Refused(422, _))));
        assert!(inbox_of(&dir).is_empty(), "nothing was appended");
        daemon.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_full_inbox_refuses_and_only_the_latest_exactly_once_ids_are_remembered() {
        let dir = scratch("inbox-bounds");
        let mut inbox = Inbox::create(&dir, 1);
        assert_eq!(inbox.take("first", DeliveryMode::ExactlyOnce, b"{}\n"), Ok(false));
        for i in 0..MESSAGE_IDS_MAX {
            inbox.remember(&format!("id-{i}"));
        }
        assert_eq!((inbox.recent.len(), inbox.seen.len()), (MESSAGE_IDS_MAX, MESSAGE_IDS_MAX));
        assert_eq!(inbox.take("first", DeliveryMode::ExactlyOnce, b"{}\n"), Ok(false), "forgotten, so new");
        inbox.lines = INBOX_LINES_MAX;
        let full = inbox.take("one-more", DeliveryMode::AtLeastOnce, b"{}\n");
        assert!(matches!(&full, Err((StatusCode::CONFLICT, why)) if why.starts_with("inbox full")), "{full:?}");
        assert_eq!(inbox.take("id-1", DeliveryMode::ExactlyOnce, b"{}\n"), Ok(true), "a duplicate is no new line");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// `GET /metrics` of `daemon` with `token` (plain HTTP/1.1 over TCP): the status and the body.
    async fn scrape(daemon: &Daemon, token: &str) -> (u16, String) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = daemon.client.url().trim_start_matches("http://").to_owned();
        let mut stream = tokio::net::TcpStream::connect(&addr).await.expect("the daemon listens");
        let request = format!(
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("the request is sent");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("an answer");
        let (head, body) = answer.split_once("\r\n\r\n").expect("a head and a body");
        let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("a status");
        (status, body.to_owned())
    }

    /// The value of the sample `series` (name and labels) in an exposition.
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn metrics_count_what_ended_the_heartbeats_and_every_load_request_once() {
        let addr = load::testing::target().await;
        let rate = load::Rate::Pattern {
            pattern: Pattern::Constant { rps: 200.0, duration_ms: 2_500 },
            seed: 1,
            index: 0,
            of: 1,
        };
        let dir = scratch("metrics");
        let mut entries = shell("sleep", 1, "exec sleep 300");
        entries.extend(shell("fail", 1, "exit 3"));
        let work = PlanWork::Load(load::testing::spec(addr, rate));
        entries.push(PlanEntry { name: "load".to_owned(), count: 1, work });
        let (daemon, mut run) = Daemon::start(&dir, entries).await;
        run.send(vec![assign(1, 0), assign(2, 1), assign(3, 2)]).await;
        assert!(matches!(run.finished(TaskId(2)).await.0, Outcome::Failed(_)));

        let (status, text) = scrape(&daemon, TOKEN).await;
        assert_eq!(status, 200, "{text}");
        assert_eq!(sample(&text, "dtest_node_plans"), Some(1.0), "{text}");
        assert_eq!(sample(&text, r#"dtest_node_tasks_running{kind="command"}"#), Some(1.0), "{text}");
        assert_eq!(sample(&text, r#"dtest_node_tasks_running{kind="load"}"#), Some(1.0), "{text}");
        assert_eq!(sample(&text, r#"dtest_node_tasks_ended_total{outcome="failed"}"#), Some(1.0), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");

        let (outcome, load) = run.finished(TaskId(3)).await;
        assert_eq!(outcome, Outcome::Passed);
        let load = load.expect("the load's measure");
        assert!(load.requests > 400, "{load:?}");
        run.send(vec![cancel(1)]).await;
        let (_, text) = scrape(&daemon, TOKEN).await;
        let ended = |outcome: &str| sample(&text, &format!(r#"dtest_node_tasks_ended_total{{outcome="{outcome}"}}"#));
        assert_eq!((ended("passed"), ended("failed"), ended("cancelled")), (Some(1.0), Some(1.0), Some(1.0)), "{text}");
        assert_eq!(sample(&text, r#"dtest_node_tasks_running{kind="load"}"#), Some(0.0), "{text}");
        assert!(sample(&text, "dtest_node_heartbeats_sent_total").is_some_and(|n| n >= 2.0), "{text}");
        // Live figures, then the rest at the load's end: every request exactly once.
        let requests = load.requests as f64;
        assert_eq!(sample(&text, "dtest_node_load_requests_total"), Some(requests), "{text}");
        assert_eq!(sample(&text, "dtest_node_load_errors_total"), Some(load.errors as f64), "{text}");
        assert_eq!(sample(&text, "dtest_node_load_latency_seconds_count"), Some(requests), "{text}");
        assert_eq!(sample(&text, r#"dtest_node_load_latency_seconds_bucket{le="+Inf"}"#), Some(requests), "{text}");

        let (status, text) = scrape(&daemon, "not-the-token").await;
        assert_eq!(status, 401, "{text}");
        daemon.stop().await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
