//! `dtest load URL`: the wrk/oha one-liner. The node's load engine in this process, no scenario
//! file, the same report as `sim` and `run`. Ctrl-C or SIGTERM stops the load and still writes
//! the report of what ran, marked interrupted (exit 130).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use dtest_core::report::{Report, Tasks};
use dtest_core::scenario::{HttpMethod, HttpVersion, Pattern, Scenario, Work};
use dtest_node::load::{LoadSpec, Loaded, Progress, Rate, Stop};
use dtest_node::tls::TlsOptions;
use indicatif::ProgressBar;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::watch;

use crate::Exit;
use crate::output::Outputs;

/// Arguments of `dtest load`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The target: `http://`, `https://`, `ws://` or `wss://` `host:port/path`.
    url: String,
    /// Requests per second, open model: sent on schedule whether or not earlier ones returned.
    /// Without it (and without --pattern), every connection sends as fast as it gets answers.
    #[arg(long, conflicts_with = "pattern")]
    rate: Option<f64>,
    /// How long: `30s`, `2m`, `500ms`, `1h` (a bare number is seconds).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// A load pattern instead of a constant rate: `TYPE:field=value,...` with the scenario
    /// format's fields, e.g. `ramp:from_rps=10,to_rps=500` or
    /// `burst:base_rps=50,burst_rps=600,burst_every_s=10,burst_duration_s=2`; `duration_s`
    /// defaults to --duration.
    #[arg(long)]
    pattern: Option<String>,
    /// Connections to keep open.
    #[arg(long, short = 'c', default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    connections: u32,
    /// Per-request timeout, from sending.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    timeout: Duration,
    /// HTTP method.
    #[arg(long, default_value = "GET", value_parser = parse_method)]
    method: HttpMethod,
    /// A request header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Request body (for a ws:// target, the message sent).
    #[arg(long)]
    body: Option<String>,
    /// Speak HTTP/2 instead of HTTP/1.1: with prior knowledge on http://, by ALPN on https://.
    #[arg(long)]
    http2: bool,
    /// Trust the CA certificates in this PEM file (besides Mozilla's roots) for an https:// or
    /// wss:// target: a private CA's, or a self-signed target's own certificate.
    #[arg(long, value_name = "FILE")]
    cacert: Option<PathBuf>,
    /// Do not verify an https:// or wss:// target's certificate at all.
    #[arg(long, short = 'k', conflicts_with = "cacert")]
    insecure: bool,
    /// Worker threads (default: one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1024))]
    threads: Option<u32>,
    /// Seed of a `random` pattern's rates.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Thresholds that decide the exit code (1 when one fails), `name=value,...` with the
    /// scenario format's names: latency_p50_ms, latency_p90_ms, latency_p99_ms, latency_max_ms,
    /// error_rate_max, rps_min, dropped_max. Repeatable.
    #[arg(long, value_delimiter = ',')]
    expect: Vec<String>,
    /// Print the JSON report on stdout instead of text.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write a self-contained HTML report to this file.
    #[arg(long)]
    html: Option<PathBuf>,
}

fn bad(message: &str) -> Exit {
    eprintln!("error: {message}");
    Exit::BadInput
}

/// Parses `30s`, `2m`, `500ms`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("`{text}`: expected a duration such as 30s, 2m or 500ms"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("`{text}`: unknown unit `{unit}` (ms, s, m or h)")),
    };
    if !(seconds > 0.0 && seconds <= dtest_core::limits::DURATION_S_MAX) {
        return Err(format!("`{text}`: expected more than 0 and at most {} s", dtest_core::limits::DURATION_S_MAX));
    }
    Ok(Duration::from_secs_f64(seconds))
}

fn parse_method(text: &str) -> Result<HttpMethod, String> {
    serde_json::from_value(serde_json::Value::String(text.to_ascii_uppercase()))
        .map_err(|_| format!("`{text}`: expected GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS"))
}

/// The expectations `--expect` may set: the scenario format's load expectations.
const EXPECTATIONS: [&str; 7] = [
    "latency_p50_ms",
    "latency_p90_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "error_rate_max",
    "rps_min",
    "dropped_max",
];

/// `--rate` or `--pattern` and `--expect` as a one-task scenario, checked by the scenario parser
/// (same fields, same bounds, same messages). The pattern is `None` for a closed-loop load.
fn plan(args: &Args) -> Result<(Option<Pattern>, Scenario), String> {
    let duration_s = args.duration.as_secs_f64();
    let mut fields = serde_json::Map::new();
    match (&args.pattern, args.rate) {
        // Closed loop: the one-task scenario still needs a pattern, which is not used.
        (None, None) => {
            fields.insert("type".into(), "constant".into());
            fields.insert("rps".into(), 1.into());
        }
        (None, Some(rate)) => {
            fields.insert("type".into(), "constant".into());
            fields.insert("rps".into(), rate.into());
        }
        (Some(text), _) => {
            let (kind, rest) = text.split_once(':').unwrap_or((text, ""));
            fields.insert("type".into(), kind.trim().into());
            for (key, value) in pairs("--pattern", rest)? {
                fields.insert(key.into(), value.into());
            }
        }
    }
    fields.entry("duration_s").or_insert(duration_s.into());
    let mut expect = serde_json::Map::new();
    for text in &args.expect {
        for (key, value) in pairs("--expect", text)? {
            if !EXPECTATIONS.contains(&key) {
                return Err(format!("--expect `{key}`: expected one of {}", EXPECTATIONS.join(", ")));
            }
            expect.insert(key.into(), value.into());
        }
    }
    let scenario = serde_json::json!({
        "name": "load",
        "description": "dtest load",
        "duration_s": dtest_core::limits::DURATION_S_MAX,
        "cluster": { "groups": [ { "name": "local", "count": 1,
                                   "resources": { "cpu_millis": 1000, "memory_mb": 1 } } ] },
        "targets": { "target": { "url": "http://127.0.0.1/" } },
        "workload": { "tasks": [ { "name": "load", "kind": "load", "load": { "target": "target", "pattern": fields } } ] },
        "expect": expect
    });
    let scenario = dtest_core::scenario::parse(scenario.to_string().as_bytes()).map_err(|problems| {
        let lines = problems.iter().map(|p| {
            let path = p.path.to_string();
            let (option, field) =
                match (path.strip_prefix("expect."), path.strip_prefix("workload.tasks[0].load.pattern")) {
                    (Some(field), _) => ("--expect", field),
                    (None, Some(field)) if args.pattern.is_some() => ("--pattern", field.trim_start_matches('.')),
                    (None, Some(field)) => ("--rate", field.trim_start_matches('.')),
                    (None, None) => ("dtest load", path.as_str()),
                };
            let space = if field.is_empty() { "" } else { " " };
            format!("{option}{space}{field}: {}", p.message)
        });
        lines.collect::<Vec<_>>().join("\n")
    })?;
    let pattern = match &scenario.workload.tasks[0].work {
        Work::Load(load) if args.pattern.is_some() || args.rate.is_some() => Some(load.pattern.clone()),
        _ => None,
    };
    Ok((pattern, scenario))
}

/// `field=value,...` with numeric values.
fn pairs<'a>(option: &str, text: &'a str) -> Result<Vec<(&'a str, serde_json::Number)>, String> {
    let pairs = text.split(',').filter(|p| !p.trim().is_empty());
    pairs
        .map(|pair| {
            let (key, value) =
                pair.split_once('=').ok_or_else(|| format!("{option}: `{pair}`: expected field=value"))?;
            let value = value.trim().parse().map_err(|_| format!("{option}: `{pair}`: expected a number"))?;
            Ok((key.trim(), value))
        })
        .collect()
}

/// Runs the load and prints the report.
pub fn run(args: &Args) -> Exit {
    let (pattern, scenario) = match plan(args) {
        Ok(plan) => plan,
        Err(e) => return bad(&e),
    };
    let mut headers = std::collections::BTreeMap::new();
    for header in &args.headers {
        let Some((name, value)) = header.split_once(':') else {
            return bad(&format!("--header `{header}`: expected `Name: value`"));
        };
        headers.insert(name.trim().to_owned(), value.trim().to_owned());
    }
    let ca_pem = match &args.cacert {
        None => None,
        Some(path) => match std::fs::read_to_string(path) {
            Ok(pem) => Some(pem),
            Err(e) => return bad(&format!("--cacert {}: {e}", path.display())),
        },
    };
    let duration_ms = args.duration.as_millis() as u64;
    let spec = LoadSpec {
        url: args.url.clone(),
        method: args.method,
        headers,
        body: args.body.clone(),
        timeout_ms: args.timeout.as_millis() as u64,
        connections: args.connections,
        http_version: if args.http2 { HttpVersion::Http2 } else { HttpVersion::Http1 },
        tls: TlsOptions { ca_pem, insecure: args.insecure },
        start_ms: 0,
        rate: match pattern {
            Some(pattern) => Rate::Pattern { pattern, seed: args.seed, index: 0, of: 1 },
            None => Rate::Max { duration_ms },
        },
    };
    if let Err(e) = dtest_node::load::check(&spec) {
        return bad(&e);
    }
    // The limits a scenario's load has (connections, timeout, duration, the pattern's rates).
    let mut problems = Vec::new();
    spec.validate(&dtest_core::scenario::Path::root(), &mut problems);
    if let Some((field, why)) = problems.first() {
        return bad(&format!("{field}: {why}"));
    }
    let mut builder = match args.threads {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    if let Some(n) = args.threads.filter(|&n| n > 1) {
        builder.worker_threads(n as usize);
    }
    let runtime = match builder.enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => return bad(&format!("cannot start the runtime: {e}")),
    };
    let stop = Stop::new();
    let bar = progress_bar();
    let started = Instant::now();
    let loaded = runtime.block_on(async {
        // Watched before the load starts: from here on a signal stops the load, not the process.
        let signals = [SignalKind::interrupt(), SignalKind::terminate()].map(signal);
        let [Ok(interrupt), Ok(terminate)] = signals else {
            return Err("cannot watch for SIGINT and SIGTERM".to_owned());
        };
        tokio::spawn(stop_on_signals(interrupt, terminate, stop.clone(), bar.clone()));
        let (tx, rx) = watch::channel(Progress::default());
        let shown = tokio::spawn(show_progress(bar, rx));
        let loaded = dtest_node::load::run(&spec, Some(tx), &stop).await;
        // The bar is cleared before the report is printed.
        let _ = shown.await;
        loaded
    });
    let elapsed_s = started.elapsed().as_secs_f64();
    let loaded = match loaded {
        Ok(loaded) => loaded,
        Err(e) => return bad(&e),
    };
    if let Some(e) = &loaded.connect_error {
        eprintln!("warning: {e}");
    }
    let mut report = report(args, &loaded, elapsed_s, &spec);
    report.expectations = dtest_core::report::expectations(&scenario, &report);
    let outputs = Outputs { json: args.json, out: args.out.as_deref(), html: args.html.as_deref(), junit: None };
    crate::output::finish(&report, outputs)
}

/// The first SIGINT or SIGTERM stops the load, whose partial report is still written; a second
/// one exits at once, without a report.
async fn stop_on_signals(mut interrupt: Signal, mut terminate: Signal, stop: Stop, bar: ProgressBar) {
    signalled(&mut interrupt, &mut terminate).await;
    stop.stop();
    signalled(&mut interrupt, &mut terminate).await;
    bar.finish_and_clear();
    eprintln!("interrupted twice: exiting without a report");
    std::process::exit(Exit::Interrupted as i32);
}

async fn signalled(interrupt: &mut Signal, terminate: &mut Signal) {
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}

/// The report of `loaded`. A load stopped early reports the time it ran, marked interrupted,
/// its one task cancelled.
fn report(args: &Args, loaded: &Loaded, elapsed_s: f64, spec: &LoadSpec) -> Report {
    let planned_s = match &spec.rate {
        Rate::Max { duration_ms } => *duration_ms as f64 / 1000.0,
        Rate::Pattern { pattern, .. } => pattern.duration_ms() as f64 / 1000.0,
    };
    // Stopped while its last requests were in flight, it had still run all of its time.
    let duration_s = loaded.stopped_after.map_or(planned_s, |ran| ran.as_secs_f64().min(planned_s));
    let interrupted = loaded.stopped_after.is_some();
    let tasks = if interrupted {
        Tasks { submitted: 1, cancelled: 1, ..Tasks::default() }
    } else {
        Tasks { submitted: 1, completed: 1, ..Tasks::default() }
    };
    let mut report = Report {
        scenario: args.url.clone(),
        mode: dtest_core::report::Mode::Load,
        interrupted,
        elapsed_s: Some(elapsed_s),
        makespan_s: Some(elapsed_s),
        tasks,
        nodes: dtest_core::report::Nodes { total: 1, ..Default::default() },
        ..Report::default()
    };
    report.set_load(&loaded.measure, duration_s);
    report
}

/// The progress bar: drawn on a terminal's stderr, nowhere else.
fn progress_bar() -> ProgressBar {
    let bar = ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} s  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Shows the load's progress on `bar` until it ends, then clears it: elapsed time, the last
/// second's rate and p99, errors so far.
async fn show_progress(bar: ProgressBar, mut rx: watch::Receiver<Progress>) {
    while rx.changed().await.is_ok() {
        let p = rx.borrow_and_update().clone();
        bar.set_length(p.duration_s);
        bar.set_position(p.elapsed_s.min(p.duration_s));
        bar.set_message(format!(
            "{} rps, p99 {:.1} ms, {} requests, {} errors, {} dropped",
            p.last_rps, p.last_p99_ms, p.requests, p.errors, p.dropped
        ));
    }
    bar.finish_and_clear();
}
