//! The load engine: requests against an HTTP/1.1, HTTP/2 or WebSocket target, open model.
//!
//! With a pattern, every arrival of the schedule (this instance's share of it) becomes a
//! request at its due time, whether or not earlier ones have returned: the engine never slows
//! down to match the target. A request waits for a free connection if all are busy; its
//! *corrected* latency counts from the due time (wrk2's correction for coordinated omission),
//! its *uncorrected* latency from when it was sent. An arrival that finds no free connection
//! within the request timeout is dropped and counted (k6's `dropped_iterations`), so memory stays
//! bounded by rate × timeout and nothing is hidden.
//!
//! Without a pattern (`dtest load` without `--rate`), each connection sends its next request as
//! soon as the last one returned, for a duration: wrk's closed model, for maximum throughput.
//!
//! A load can be stopped early ([`Stop`]): it sends nothing more, abandons the requests in
//! flight and hands back what it measured until then.
//!
//! Connections are opened before the clock starts (as wrk does), kept alive and reopened when
//! they break. HTTP/1.1 carries one request at a time per connection, HTTP/2 up to
//! [`H2_STREAMS`] per connection, a WebSocket one message and its reply. HTTP/1.1 goes through
//! [`crate::h1`], a minimal client with the request serialized once (as wrk does); HTTP/2
//! through hyper's connection API directly; no pool bookkeeping or URL parsing per request.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use dtest_core::limits::{CONNECTIONS_MAX, DURATION_MS_MAX, MILLIS_MAX};
use dtest_core::load::Schedule;
use dtest_core::measure::{Measure, Second, Status};
use dtest_core::scenario::rules::{self, Problems, Units};
use dtest_core::scenario::{HttpMethod, HttpVersion, Path, Pattern};
use futures::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http2;
use hyper::header::{HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{HeaderMap, Method, Request, Uri};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;

use crate::h1::{self, H1Conn};
use crate::tls::{Stream, Tls, TlsOptions};

/// Requests in flight per HTTP/2 connection.
pub const H2_STREAMS: usize = 100;

/// The scheduler thread sleeps at most this long at a time, so that a stopped load's thread
/// ends soon even when its next arrival is far off.
const SCHEDULER_SLEEP_MAX: Duration = Duration::from_millis(50);
/// Due times queued between the scheduler thread and the runtime at most.
const DUE_QUEUE_MAX: usize = 65_536;

/// What to load and how hard.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    /// `http://host:port/path` or `ws://host:port/path`.
    pub url: String,
    /// HTTP method.
    #[serde(default)]
    pub method: HttpMethod,
    /// Request headers.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Request body, or the WebSocket message.
    #[serde(default)]
    pub body: Option<String>,
    /// Per-request timeout, from sending.
    pub timeout_ms: u64,
    /// Connections to keep open.
    pub connections: u32,
    /// HTTP version.
    #[serde(default)]
    pub http_version: HttpVersion,
    /// How to trust an `https://` or `wss://` target.
    #[serde(default, skip_serializing_if = "is_default")]
    pub tls: TlsOptions,
    /// When to start, in milliseconds from the run's start (a scenario's `start_s`).
    #[serde(default)]
    pub start_ms: u64,
    /// How hard.
    pub rate: Rate,
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// Checks that `spec` can run (its URL, headers and TLS settings), without running it.
pub fn check(spec: &LoadSpec) -> Result<(), String> {
    Target::parse(spec).map(|_| ())
}

/// A URL's scheme and host as this engine's parser (`http::Uri`) reads them, the host lowercase
/// and without an IPv6 address's brackets; `None` for what it cannot read or names no host. So a
/// host checked by it (an allow-list, a warning) is the host a client of dtest would reach.
pub fn scheme_and_host(url: &str) -> Option<(String, String)> {
    let uri: Uri = url.parse().ok()?;
    let scheme = uri.scheme_str()?.to_owned();
    let host = uri.authority()?.host().trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (scheme, host.to_ascii_lowercase()))
}

impl LoadSpec {
    /// Checks the spec with the scenario parser's own rules and limits (URL, headers, timeout,
    /// connections, start, TLS settings, the pattern), naming fields under `at`: what a node is
    /// sent is checked as what `dtest run` parsed was.
    pub fn validate(&self, at: &Path, problems: &mut Problems) {
        let mut field = |name: &str, checked: Result<(), String>| {
            if let Err(why) = checked {
                problems.push((at.key(name), why));
            }
        };
        field("url", rules::url(&self.url));
        if let Some(body) = &self.body {
            field("body", rules::text(body));
        }
        field("timeout_ms", rules::positive_ms(self.timeout_ms, MILLIS_MAX as u64));
        field("connections", rules::within(u64::from(self.connections), 1, CONNECTIONS_MAX));
        field("start_ms", rules::within(self.start_ms, 0, DURATION_MS_MAX));
        if let Rate::Max { duration_ms } = self.rate {
            let checked = rules::positive_ms(duration_ms, DURATION_MS_MAX);
            if let Err(why) = checked {
                problems.push((at.key("rate").key("max").key("duration_ms"), why));
            }
        }
        rules::headers(&self.headers, &at.key("headers"), problems);
        if self.tls != TlsOptions::default() {
            rules::tls(Some(&self.url), self.tls.insecure, self.tls.ca_pem.is_some(), &at.key("tls"), problems);
        }
        if let Rate::Pattern { pattern, .. } = &self.rate {
            pattern.validate(Units::Millis, &at.key("rate").key("pattern").key("pattern"), problems);
        }
    }
}

/// How hard to load.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Rate {
    /// Each connection sends again as soon as it has its answer, for `duration_ms`.
    Max {
        /// How long.
        duration_ms: u64,
    },
    /// Open model: instance `index` (from 0) of `of` sends its share of the pattern's arrivals.
    Pattern {
        /// The rate over time, for all instances together.
        pattern: Pattern,
        /// Fixes a `random` pattern's rates.
        seed: u64,
        /// This instance.
        index: u32,
        /// Instances sharing the pattern.
        of: u32,
    },
}

/// Tells a running load to stop early; clones share one signal, and a stopped signal stays so.
#[derive(Clone, Debug)]
pub struct Stop(Arc<watch::Sender<bool>>);

impl Default for Stop {
    fn default() -> Stop {
        Stop::new()
    }
}

impl Stop {
    /// A signal not given yet.
    pub fn new() -> Stop {
        Stop(Arc::new(watch::Sender::new(false)))
    }

    /// Stops the loads run with this signal (now, or at once when they start).
    pub fn stop(&self) {
        self.0.send_replace(true);
    }

    /// Whether [`Stop::stop`] was called.
    pub fn is_stopped(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once [`Stop::stop`] is called.
    pub async fn stopped(&self) {
        let mut rx = self.0.subscribe();
        // `self` holds the sender, so the channel cannot close while this waits.
        let _ = rx.wait_for(|&stopped| stopped).await;
    }
}

/// Live figures, updated about once a second.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// Seconds since the load started.
    pub elapsed_s: u64,
    /// How long the load runs.
    pub duration_s: u64,
    /// Requests ended so far.
    pub requests: u64,
    /// Errors so far.
    pub errors: u64,
    /// Arrivals dropped so far.
    pub dropped: u64,
    /// Requests that ended in the last full second.
    pub last_rps: u64,
    /// The last full second's corrected p99, in milliseconds.
    pub last_p99_ms: f64,
    /// The last full second (counted from the load's start) and what it measured.
    pub last_second: Option<(u64, Second)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Http1,
    Http2,
    WebSocket,
}

/// A parsed target: what every request needs, built once.
struct Target {
    kind: Kind,
    /// `host:port` to connect to.
    addr: String,
    /// For `https://` and `wss://`.
    tls: Option<Tls>,
    /// The full URL (HTTP/2's `:authority`, the WebSocket handshake).
    uri: Uri,
    method: Method,
    headers: HeaderMap,
    body: Bytes,
    timeout: Duration,
    /// The whole HTTP/1.1 request, serialized once.
    h1_request: Vec<u8>,
    /// A `HEAD` request: its answer has no body whatever its headers say.
    head_request: bool,
}

impl Target {
    fn parse(spec: &LoadSpec) -> Result<Target, String> {
        let uri: Uri = spec.url.parse().map_err(|e| format!("`{}` is not a URL: {e}", spec.url))?;
        let (kind, secure) = match (uri.scheme_str(), spec.http_version) {
            (Some("http"), HttpVersion::Http1) => (Kind::Http1, false),
            (Some("http"), HttpVersion::Http2) => (Kind::Http2, false),
            (Some("https"), HttpVersion::Http1) => (Kind::Http1, true),
            (Some("https"), HttpVersion::Http2) => (Kind::Http2, true),
            (Some("ws"), _) => (Kind::WebSocket, false),
            (Some("wss"), _) => (Kind::WebSocket, true),
            _ => return Err(format!("`{}`: expected an http://, https://, ws:// or wss:// URL", spec.url)),
        };
        let authority = uri.authority().ok_or_else(|| format!("`{}` names no host", spec.url))?;
        let port = authority.port_u16().unwrap_or(if secure { 443 } else { 80 });
        let tls = match (secure, kind) {
            (false, _) => None,
            (true, Kind::Http1) => Some(Tls::new(authority.host(), &spec.tls, &[b"http/1.1"])?),
            (true, Kind::Http2) => Some(Tls::new(authority.host(), &spec.tls, &[b"h2"])?),
            (true, Kind::WebSocket) => Some(Tls::new(authority.host(), &spec.tls, &[])?),
        };
        // `host()` keeps an IPv6 address's brackets, as `connect` wants them.
        let addr = format!("{}:{port}", authority.host());
        let path: Uri =
            uri.path_and_query().map_or("/", |p| p.as_str()).parse().map_err(|e| format!("`{}`: {e}", spec.url))?;
        let mut headers = HeaderMap::new();
        headers.insert(USER_AGENT, HeaderValue::from_static(concat!("dtest/", env!("CARGO_PKG_VERSION"))));
        for (name, value) in &spec.headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(|e| format!("header `{name}`: {e}"))?;
            let value = HeaderValue::from_str(value).map_err(|e| format!("header `{name}`: {e}"))?;
            headers.insert(name, value);
        }
        let host = match headers.remove(HOST) {
            Some(host) => String::from_utf8_lossy(host.as_bytes()).into_owned(),
            None => authority.as_str().to_owned(),
        };
        let h1_headers: Vec<(String, String)> = headers
            .iter()
            .map(|(name, value)| (name.as_str().to_owned(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
            .collect();
        let method = match spec.method {
            HttpMethod::Get => Method::GET,
            HttpMethod::Head => Method::HEAD,
            HttpMethod::Post => Method::POST,
            HttpMethod::Put => Method::PUT,
            HttpMethod::Patch => Method::PATCH,
            HttpMethod::Delete => Method::DELETE,
            HttpMethod::Options => Method::OPTIONS,
        };
        let body = Bytes::from(spec.body.clone().unwrap_or_default());
        let head_request = method == Method::HEAD;
        let h1_request =
            h1::serialize(method.as_str(), path.to_string().as_str(), &host, &h1_headers, &body, head_request);
        Ok(Target {
            kind,
            addr,
            tls,
            uri,
            method,
            headers,
            body,
            timeout: Duration::from_millis(spec.timeout_ms.max(1)),
            h1_request,
            head_request,
        })
    }

    /// An HTTP/2 request.
    fn request(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// One open connection.
enum Conn {
    Http1(Box<H1Conn<Stream>>),
    Http2(http2::SendRequest<Full<Bytes>>),
    WebSocket(Box<WebSocketStream<Stream>>),
}

/// Opens a connection (TCP, TLS, the HTTP/2 or WebSocket handshake); the error says why not.
async fn connect(target: &Target) -> Result<Conn, String> {
    let tcp = TcpStream::connect(&target.addr).await.map_err(|e| format!("connecting to {}: {e}", target.addr))?;
    let _ = tcp.set_nodelay(true);
    let stream = match &target.tls {
        None => Stream::Plain(tcp),
        Some(tls) => tls.connect(tcp).await.map_err(|e| format!("TLS with {}: {e}", target.addr))?,
    };
    match target.kind {
        Kind::Http1 => Ok(Conn::Http1(Box::new(H1Conn::new(stream)))),
        Kind::Http2 => {
            let (sender, connection) = http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .map_err(|e| format!("HTTP/2 with {}: {e}", target.addr))?;
            tokio::spawn(connection);
            Ok(Conn::Http2(sender))
        }
        Kind::WebSocket => {
            let (ws, _) = tokio_tungstenite::client_async(target.uri.to_string(), stream)
                .await
                .map_err(|e| format!("WebSocket handshake with {}: {e}", target.addr))?;
            Ok(Conn::WebSocket(Box::new(ws)))
        }
    }
}

impl Conn {
    /// One request and its whole answer. `false` in the second place: the connection is done.
    async fn exchange(&mut self, target: &Target) -> (Status, bool) {
        match self {
            Conn::Http1(conn) => match conn.exchange(&target.h1_request, target.head_request).await {
                Ok((status, keep_alive)) => (Status::Http(status), keep_alive),
                Err(_) => (Status::Io, false),
            },
            Conn::Http2(sender) => {
                if sender.ready().await.is_err() {
                    return (Status::Io, false);
                }
                http_answer(sender.send_request(target.request()).await).await
            }
            Conn::WebSocket(ws) => {
                let message = String::from_utf8_lossy(&target.body).into_owned();
                if ws.send(Message::text(message)).await.is_err() {
                    return (Status::Io, false);
                }
                loop {
                    match ws.next().await {
                        Some(Ok(Message::Text(_) | Message::Binary(_))) => return (Status::Http(200), true),
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                        Some(Ok(Message::Close(_)) | Err(_)) | None => return (Status::Io, false),
                    }
                }
            }
        }
    }
}

async fn http_answer(response: Result<hyper::Response<hyper::body::Incoming>, hyper::Error>) -> (Status, bool) {
    let Ok(response) = response else { return (Status::Io, false) };
    let status = Status::Http(response.status().as_u16());
    let mut body = response.into_body();
    while let Some(frame) = body.frame().await {
        if frame.is_err() {
            return (Status::Io, false);
        }
    }
    (status, true)
}

/// Shared by every request of one load.
struct Engine {
    target: Target,
    start: Instant,
    /// Measures, a few so that threads rarely wait for each other.
    shards: Vec<Mutex<Measure>>,
    next_shard: AtomicUsize,
    /// Idle HTTP/1.1 and WebSocket connections.
    idle: Mutex<Vec<Conn>>,
    /// HTTP/2 connections, shared by their streams.
    h2: Mutex<Vec<Option<http2::SendRequest<Full<Bytes>>>>>,
    next_h2: AtomicUsize,
    /// Requests that may be in flight.
    permits: Semaphore,
    requests: AtomicU64,
    errors: AtomicU64,
    dropped: AtomicU64,
    /// Why the first connection that failed did.
    connect_error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Engine {
    fn second(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.start).as_secs()
    }

    fn record(&self, shard: usize, due: Instant, sent: Instant, status: Status) {
        let end = Instant::now();
        let late = sent.saturating_duration_since(due).as_micros() as u64;
        let took = end.saturating_duration_since(sent).as_micros() as u64;
        self.requests.fetch_add(1, Ordering::Relaxed);
        if status.is_error() {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        lock(&self.shards[shard]).record(self.second(end), late, took, status);
    }

    fn shard(&self) -> usize {
        self.next_shard.fetch_add(1, Ordering::Relaxed) % self.shards.len()
    }

    /// Opens a connection, keeping the first reason one could not be opened.
    async fn connect(&self) -> Option<Conn> {
        match connect(&self.target).await {
            Ok(conn) => Some(conn),
            Err(e) => {
                lock(&self.connect_error).get_or_insert(e);
                None
            }
        }
    }

    /// One request on a pooled connection (opened if none is idle), within the timeout.
    async fn pooled(&self) -> Status {
        if self.target.kind == Kind::Http2 {
            let slot = self.next_h2.fetch_add(1, Ordering::Relaxed) % lock(&self.h2).len();
            let current = lock(&self.h2)[slot].clone().filter(|s| !s.is_closed());
            let sender = match current {
                Some(sender) => sender,
                None => match tokio::time::timeout(self.target.timeout, self.connect()).await {
                    Ok(Some(Conn::Http2(sender))) => {
                        lock(&self.h2)[slot] = Some(sender.clone());
                        sender
                    }
                    Ok(_) => return Status::Connect,
                    Err(_) => return Status::Timeout,
                },
            };
            // A stream that times out is reset; the connection carries on.
            let mut conn = Conn::Http2(sender);
            return match tokio::time::timeout(self.target.timeout, conn.exchange(&self.target)).await {
                Ok((status, _)) => status,
                Err(_) => Status::Timeout,
            };
        }
        let idle = lock(&self.idle).pop();
        let mut conn = match idle {
            Some(conn) => conn,
            None => match tokio::time::timeout(self.target.timeout, self.connect()).await {
                Ok(Some(conn)) => conn,
                Ok(None) => return Status::Connect,
                Err(_) => return Status::Timeout,
            },
        };
        match tokio::time::timeout(self.target.timeout, conn.exchange(&self.target)).await {
            Ok((status, reusable)) => {
                if reusable {
                    lock(&self.idle).push(conn);
                }
                status
            }
            // The answer may still come on this connection: it cannot carry another request.
            Err(_) => Status::Timeout,
        }
    }

    fn progress(&self, duration_s: u64, global: &Measure) -> Progress {
        let now_s = self.second(Instant::now());
        let last_s = now_s.checked_sub(1);
        let last = last_s.and_then(|s| global.seconds.get(&s));
        Progress {
            elapsed_s: now_s,
            duration_s,
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
            last_rps: last.map_or(0, |s| s.requests),
            last_p99_ms: last
                .filter(|s| !s.corrected().is_empty())
                .map_or(0.0, |s| s.corrected().value_at_quantile(0.99) as f64 / 1e3),
            last_second: last_s.zip(last.cloned()),
        }
    }

    /// Moves finished seconds from the shards into `global`.
    fn collect(&self, global: &mut Measure, before_s: u64) {
        for shard in &self.shards {
            let seconds = lock(shard).take_seconds_before(before_s);
            global.add_seconds(seconds);
        }
    }
}

/// What a load measured.
#[derive(Debug)]
pub struct Loaded {
    /// Every request and dropped arrival.
    pub measure: Measure,
    /// Why the first connection that could not be opened was not (refused, a TLS certificate
    /// not trusted, ...): those requests are counted as connect errors, and this says why.
    pub connect_error: Option<String>,
    /// When the load was stopped before its end, how long it had run (from its clock's start,
    /// once the connections were open): `measure` holds what happened until then.
    pub stopped_after: Option<Duration>,
}

/// Runs a load to its end, or until `stop`, and returns what it measured. `progress`, if given,
/// gets live figures about once a second. Errors are for a spec that cannot run at all (a bad
/// URL); everything that goes wrong with requests is counted in the measure instead.
///
/// Once stopped, no request is sent and those in flight are abandoned, uncounted: a stop must
/// come back at once (a Ctrl-C; the agent's `stop_grace_ms`), and waiting for them any shorter
/// than the request timeout would only count the fast ones, which makes the tail no truer.
pub async fn run(spec: &LoadSpec, progress: Option<watch::Sender<Progress>>, stop: &Stop) -> Result<Loaded, String> {
    let target = Target::parse(spec)?;
    let connections = spec.connections.max(1) as usize;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let concurrency = connections * if target.kind == Kind::Http2 { H2_STREAMS } else { 1 };
    let (schedule, duration_ms) = match &spec.rate {
        Rate::Max { duration_ms } => (None, *duration_ms),
        Rate::Pattern { pattern, seed, index, of } => {
            (Some((Schedule::new(pattern.clone(), *seed), *index, *of)), pattern.duration_ms())
        }
    };
    // Open the connections before the clock starts, as wrk does; failures are retried later.
    let opening = futures::future::join_all((0..connections).map(|_| async {
        match tokio::time::timeout(target.timeout, connect(&target)).await {
            Ok(result) => result,
            Err(_) => Err(format!("connecting to {}: no answer within the timeout", target.addr)),
        }
    }));
    let opened = tokio::select! {
        opened = opening => opened,
        () = stop.stopped() => {
            return Ok(Loaded { measure: Measure::new(), connect_error: None, stopped_after: Some(Duration::ZERO) });
        }
    };
    let connect_error = opened.iter().find_map(|c| c.as_ref().err().cloned());
    let (mut idle, mut h2) = (Vec::with_capacity(connections), vec![None; connections]);
    for (slot, conn) in h2.iter_mut().zip(opened.into_iter().flat_map(Result::ok)) {
        match conn {
            Conn::Http2(sender) => *slot = Some(sender),
            conn => idle.push(conn),
        }
    }
    let engine = Arc::new(Engine {
        shards: (0..(threads * 2).min(connections)).map(|_| Mutex::new(Measure::new())).collect(),
        next_shard: AtomicUsize::new(0),
        idle: Mutex::new(idle),
        h2: Mutex::new(h2),
        next_h2: AtomicUsize::new(0),
        permits: Semaphore::new(concurrency),
        requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        dropped: AtomicU64::new(0),
        connect_error: Mutex::new(connect_error),
        start: Instant::now(),
        target,
    });
    let duration_s = duration_ms.div_ceil(1000);

    let mut global = Measure::new();
    let mut tasks = JoinSet::new();
    let mut tick = tokio::time::interval_at(engine.start + Duration::from_secs(1), Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let report = |engine: &Engine, global: &mut Measure| {
        engine.collect(global, engine.second(Instant::now()));
        if let Some(tx) = &progress {
            let _ = tx.send(engine.progress(duration_s, global));
        }
    };
    let stopped = stop.stopped();
    tokio::pin!(stopped);
    // Set when stopped; `stopped` is not polled again once it has resolved.
    let stopped_after = 'load: {
        match schedule {
            None => {
                let end = engine.start.checked_add(Duration::from_millis(duration_ms)).unwrap_or(engine.start);
                for _ in 0..concurrency {
                    tasks.spawn(closed_loop(engine.clone(), end));
                }
            }
            Some((schedule, index, of)) => {
                // Due times come from a thread of their own that sleeps with the operating
                // system's timer (tens of microseconds late, where the runtime's timer wheel is
                // up to a millisecond late), so the generator's own timer hardly shows up as
                // latency.
                // Bounded: a runtime that falls behind holds the scheduler back rather than
                // letting due times pile up without end (they are absolute, so latency is
                // still measured from when each request was due).
                let (due_tx, mut due_rx) = tokio::sync::mpsc::channel::<Instant>(DUE_QUEUE_MAX);
                let start = engine.start.into_std();
                let scheduler = std::thread::Builder::new().name("dtest-schedule".into()).spawn(move || {
                    for due_ms in schedule.share(index, of) {
                        // A checked plan's patterns give finite times within a week; a due time
                        // that is not one ends the schedule rather than the thread by a panic.
                        let due = Duration::try_from_secs_f64(due_ms / 1000.0).ok().and_then(|d| start.checked_add(d));
                        let Some(due) = due else { return };
                        loop {
                            let now = std::time::Instant::now();
                            if due <= now {
                                break;
                            }
                            if due_tx.is_closed() {
                                return; // The load was stopped.
                            }
                            std::thread::sleep((due - now).min(SCHEDULER_SLEEP_MAX));
                        }
                        if due_tx.blocking_send(Instant::from_std(due)).is_err() {
                            return; // The load was stopped.
                        }
                    }
                });
                if let Err(e) = scheduler {
                    return Err(format!("cannot start the scheduler thread: {e}"));
                }
                loop {
                    tokio::select! {
                        due = due_rx.recv() => match due {
                            Some(due) => {
                                while tasks.try_join_next().is_some() {}
                                tasks.spawn(open_request(engine.clone(), due));
                            }
                            None => break,
                        },
                        _ = tick.tick() => report(&engine, &mut global),
                        () = &mut stopped => break 'load Some(engine.start.elapsed()),
                    }
                }
            }
        }
        loop {
            tokio::select! {
                joined = tasks.join_next() => if joined.is_none() { break 'load None },
                _ = tick.tick() => report(&engine, &mut global),
                () = &mut stopped => break 'load Some(engine.start.elapsed()),
            }
        }
    };
    if stopped_after.is_some() {
        // Waits for the aborted requests to be dropped, so none records after the sum below.
        tasks.shutdown().await;
    }
    for shard in &engine.shards {
        global.add(&lock(shard), 0);
    }
    if let Some(tx) = &progress {
        let _ = tx.send(engine.progress(duration_s, &global));
    }
    let connect_error = lock(&engine.connect_error).take();
    Ok(Loaded { measure: global, connect_error, stopped_after })
}

/// An arrival of the schedule: waits for a free connection (within the timeout) and sends.
async fn open_request(engine: Arc<Engine>, due: Instant) {
    let shard = engine.shard();
    let permit = tokio::time::timeout_at(due + engine.target.timeout, engine.permits.acquire()).await;
    let Ok(Ok(_permit)) = permit else {
        engine.dropped.fetch_add(1, Ordering::Relaxed);
        let second = engine.second(Instant::now());
        lock(&engine.shards[shard]).drop_arrival(second);
        return;
    };
    let sent = Instant::now();
    let status = engine.pooled().await;
    engine.record(shard, due, sent, status);
}

/// One connection sending back to back until `end`.
async fn closed_loop(engine: Arc<Engine>, end: Instant) {
    let shard = engine.shard();
    let mut conn: Option<Conn> = match engine.target.kind {
        Kind::Http2 => None,
        _ => lock(&engine.idle).pop(),
    };
    while Instant::now() < end {
        let sent = Instant::now();
        if engine.target.kind == Kind::Http2 {
            let status = engine.pooled().await;
            engine.record(shard, sent, sent, status);
            continue;
        }
        let status = match conn.as_mut() {
            Some(c) => match tokio::time::timeout(engine.target.timeout, c.exchange(&engine.target)).await {
                Ok((status, true)) => status,
                Ok((status, false)) => {
                    conn = None;
                    status
                }
                Err(_) => {
                    conn = None;
                    Status::Timeout
                }
            },
            None => match tokio::time::timeout(engine.target.timeout, engine.connect()).await {
                Ok(Some(c)) => {
                    conn = Some(c);
                    continue;
                }
                Ok(None) => Status::Connect,
                Err(_) => Status::Timeout,
            },
        };
        engine.record(shard, sent, sent, status);
        if status == Status::Connect {
            // Do not spin on a target that refuses connections.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// What tests of the load engine and of the daemon share: a target and a spec for it.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// An HTTP target on a free loopback port, served by the test's runtime.
    pub(crate) async fn target() -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        let addr = listener.local_addr().expect("its address");
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "hello\n" }));
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    pub(crate) fn spec(addr: std::net::SocketAddr, rate: Rate) -> LoadSpec {
        LoadSpec {
            url: format!("http://{addr}/"),
            method: HttpMethod::Get,
            headers: BTreeMap::new(),
            body: None,
            timeout_ms: 5_000,
            connections: 4,
            http_version: HttpVersion::Http1,
            tls: TlsOptions::default(),
            start_ms: 0,
            rate,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{spec, target};
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_load_hands_back_what_it_measured_until_then() {
        let addr = target().await;
        let pattern = Pattern::Constant { rps: 200.0, duration_ms: 60_000 };
        for rate in [Rate::Pattern { pattern, seed: 1, index: 0, of: 1 }, Rate::Max { duration_ms: 60_000 }] {
            let stop = Stop::new();
            let stopper = stop.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(1_200)).await;
                stopper.stop();
            });
            let began = std::time::Instant::now();
            let loaded = run(&spec(addr, rate.clone()), None, &stop).await.expect("the spec runs");
            let took = began.elapsed();
            assert!(took < Duration::from_secs(5), "{rate:?}: stopped at once, not after {took:?}");
            let ran = loaded.stopped_after.expect("it says it was stopped");
            assert!(ran >= Duration::from_secs(1) && ran <= took, "{rate:?}: ran {ran:?} of {took:?}");
            let m = &loaded.measure;
            assert!(m.requests > 0 && m.errors == 0, "{rate:?}: {} requests, {} errors", m.requests, m.errors);
            let last_s = m.seconds.keys().next_back().copied();
            let ran_s = ran.as_secs();
            assert!(last_s.is_some_and(|s| s >= 1 && s <= ran_s), "{rate:?}: last second {last_s:?} of {ran_s}");
            if let Rate::Pattern { .. } = rate {
                // 200 rps for about 1.2 s; nothing sent after the stop.
                assert!((150..=300).contains(&m.requests), "{} requests", m.requests);
            }
        }

        // Stopped before it starts: nothing is sent.
        let stop = Stop::new();
        stop.stop();
        let loaded = run(&spec(addr, Rate::Max { duration_ms: 60_000 }), None, &stop).await.expect("runs");
        assert_eq!((loaded.measure.requests, loaded.stopped_after), (0, Some(Duration::ZERO)));
    }
}
