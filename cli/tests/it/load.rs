//! Load generation against real targets: `dtest load` and `dtest run` with load tasks, against
//! an HTTP server (HTTP/1.1 and HTTP/2) with a WebSocket echo that the tests start themselves
//! on loopback; the HTML report in headless Chromium.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::routing::{any, get};
use dtest_core::load::Schedule;
use dtest_core::scenario::Work;
use serde_json::Value;

use crate::{dtest, root};

/// Starts the target on a free loopback port, in a thread of its own, for the test process.
fn target() -> SocketAddr {
    serve_in_thread(|listener| async move { axum::serve(listener, app()).await.unwrap() })
}

/// Runs `serve` on a free loopback port, in a runtime and thread of its own; the port.
pub fn serve_in_thread<F: Future<Output = ()> + 'static>(
    serve: impl FnOnce(tokio::net::TcpListener) -> F + Send + 'static,
) -> SocketAddr {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            serve(listener).await;
        });
    });
    rx.recv_timeout(Duration::from_secs(10)).expect("the target starts")
}

/// The target's routes: a greeting, a chunked answer, any status, a slow answer and a
/// WebSocket echo.
pub fn app() -> Router {
    Router::new()
        .route("/", any(|| async { "hello\n" }))
        .route(
            "/chunked",
            get(|| async {
                let parts = (0..5).map(|i| Ok::<_, std::io::Error>(format!("part {i}\n")));
                Body::from_stream(futures::stream::iter(parts))
            }),
        )
        .route(
            "/status/{code}",
            get(|axum::extract::Path(code): axum::extract::Path<u16>| async move {
                StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST)
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(300)).await;
                "slow\n"
            }),
        )
        .route("/ws", get(|ws: WebSocketUpgrade| async { ws.on_upgrade(echo) }))
}

async fn echo(mut socket: WebSocket) {
    while let Some(Ok(message)) = socket.recv().await {
        if let Message::Text(_) | Message::Binary(_) = message
            && socket.send(message).await.is_err()
        {
            return;
        }
    }
}

pub fn load_json(args: &[&str]) -> (i32, Value) {
    let mut all = vec!["load", "--json"];
    all.extend_from_slice(args);
    let out = dtest(&all);
    let text = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("{e}: stdout {text}\nstderr {}", String::from_utf8_lossy(&out.stderr));
    });
    (out.status.code().unwrap_or(-1), report)
}

fn n(report: &Value, field: &str) -> u64 {
    report[field].as_u64().unwrap_or_else(|| panic!("`{field}` in {report}"))
}

#[test]
fn an_open_model_load_sends_exactly_its_schedule_and_reports_every_second() {
    let addr = target();
    let (code, r) = load_json(&[&format!("http://{addr}/"), "--rate", "200", "--duration", "3s", "-c", "4"]);
    assert_eq!(code, 0, "{r}");
    assert_eq!(n(&r, "requests"), 600, "200 rps for 3 s is 600 arrivals, every one sent");
    assert_eq!((n(&r, "errors"), n(&r, "dropped")), (0, 0));
    assert_eq!(r["status"]["2xx"], 600);
    assert!((r["rps"].as_f64().unwrap() - 200.0).abs() < 1e-9);
    let series = r["series"].as_array().unwrap();
    assert!((3..=4).contains(&series.len()), "{series:?}");
    assert_eq!(series.iter().map(|p| p["requests"].as_u64().unwrap()).sum::<u64>(), 600);
    let (p99, u99) = (r["latency_ms"]["p99"].as_f64().unwrap(), r["latency_uncorrected_ms"]["p99"].as_f64().unwrap());
    assert!(p99 >= u99 && p99 > 0.0, "corrected {p99} vs uncorrected {u99}");
}

#[test]
fn errors_timeouts_and_dropped_arrivals_are_counted_not_hidden() {
    let addr = target();
    let (code, r) = load_json(&[&format!("http://{addr}/status/503"), "--rate", "100", "--duration", "1s"]);
    assert_eq!(code, 0, "no thresholds: errors are reported, not judged");
    assert_eq!((n(&r, "requests"), n(&r, "errors"), r["status"]["5xx"].as_u64().unwrap()), (100, 100, 100));

    // One connection, a 300 ms answer, a 100 ms timeout: requests time out, and arrivals that
    // wait longer than the timeout for the connection are dropped.
    let (_, r) = load_json(&[
        &format!("http://{addr}/slow"),
        "--rate",
        "50",
        "--duration",
        "1s",
        "-c",
        "1",
        "--timeout",
        "100ms",
    ]);
    let timeouts = r["status"]["timeout"].as_u64().unwrap();
    assert!(timeouts >= 5, "{r}");
    assert_eq!(n(&r, "errors"), n(&r, "requests"));
    assert!(n(&r, "dropped") >= 20, "{r}");
    assert_eq!(n(&r, "requests") + n(&r, "dropped"), 50, "every arrival is a request or a drop");
    // Nothing was answered within the timeout: the corrected latency holds the wait.
    assert!(r["latency_ms"]["p50"].as_f64().unwrap() >= r["latency_uncorrected_ms"]["p50"].as_f64().unwrap());

    let (code, _) = load_json(&["http://127.0.0.1:1/", "--rate", "10", "--duration", "1s"]);
    assert_eq!(code, 0);
    let refused = dtest(&["load", "--json", "http://127.0.0.1:1/", "--duration", "1s", "-c", "1"]);
    let r: Value = serde_json::from_slice(&refused.stdout).unwrap();
    assert!(r["status"]["connect"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn http2_websocket_and_chunked_answers_work_back_to_back() {
    let addr = target();
    for (url, extra) in [
        (format!("http://{addr}/chunked"), vec![]),
        (format!("http://{addr}/"), vec!["--http2"]),
        (format!("ws://{addr}/ws"), vec!["--body", "ping"]),
    ] {
        let mut args = vec![url.as_str(), "--duration", "1s", "-c", "4"];
        args.extend(extra);
        let (code, r) = load_json(&args);
        assert_eq!(code, 0, "{url}: {r}");
        assert!(n(&r, "requests") > 100, "{url}: {r}");
        assert_eq!(n(&r, "errors"), 0, "{url}: {r}");
        assert_eq!(r["status"]["2xx"], r["requests"], "{url}");
    }
}

/// Starts `dtest ARGS...`, sends it `signal` after `after`, and waits (up to 10 s) for it to
/// end: its exit code, stdout and stderr.
fn interrupted(args: &[&str], after: Duration, signal: nix::sys::signal::Signal) -> (Option<i32>, String, String) {
    let child = Command::new(env!("CARGO_BIN_EXE_dtest"))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start dtest");
    std::thread::sleep(after);
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, signal).expect("signal dtest");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let Ok(out) = rx.recv_timeout(Duration::from_secs(10)) else {
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        panic!("dtest {args:?} did not end within 10 s of {signal}");
    };
    let out = out.expect("dtest's output");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.code(), text(&out.stdout), text(&out.stderr))
}

#[test]
fn an_interrupted_load_still_reports_what_ran_and_exits_130() {
    let addr = target();
    let url = format!("http://{addr}/");
    let args = ["load", url.as_str(), "--duration", "60s", "--rate", "200", "--json"];
    let (code, stdout, stderr) = interrupted(&args, Duration::from_millis(1_500), nix::sys::signal::Signal::SIGINT);
    assert_eq!(code, Some(130), "{stdout}\n{stderr}");
    let r: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_eq!(r["interrupted"], true, "{r}");
    assert!(n(&r, "requests") > 0 && n(&r, "errors") == 0, "{r}");
    let duration_s = r["duration_s"].as_f64().unwrap();
    assert!((0.5..10.0).contains(&duration_s), "the time it ran, not the 60 s asked: {r}");
    assert!(duration_s <= r["elapsed_s"].as_f64().unwrap(), "{r}");
    let rate = r["rps"].as_f64().unwrap();
    assert!((100.0..=300.0).contains(&rate), "200 rps over the time it ran: {r}");
    let series = r["series"].as_array().unwrap();
    assert!(series.len() as f64 <= duration_s.ceil(), "no second that never ran: {series:?}");
    assert_eq!((&r["tasks"]["completed"], &r["tasks"]["cancelled"]), (&Value::from(0), &Value::from(1)));

    // SIGTERM likewise, with the text report.
    let (code, stdout, stderr) =
        interrupted(&args[..6], Duration::from_millis(1_500), nix::sys::signal::Signal::SIGTERM);
    assert_eq!(code, Some(130), "{stdout}\n{stderr}");
    assert!(stdout.starts_with(&format!("dtest load {url}: PASSED (interrupted)")), "{stdout}");
}

#[test]
fn bad_load_input_is_exit_2_with_a_reason() {
    for (args, says) in [
        (vec!["ftp://127.0.0.1/"], "expected an http://, https://, ws:// or wss:// URL"),
        (vec!["not a url"], "not a URL"),
        (vec!["http://127.0.0.1:1/", "--pattern", "ramp:from_rps=1"], "to_rps"),
        (vec!["http://127.0.0.1:1/", "--pattern", "wave:base_rps=1,amplitude_rps=5,period_s=1"], "amplitude_rps"),
        (vec!["http://127.0.0.1:1/", "--duration", "0s"], "duration"),
        (vec!["http://127.0.0.1:1/", "-H", "no colon"], "Name: value"),
        (vec!["http://127.0.0.1:1/", "--expect", "all_tasks_complete=1"], "expected one of latency_p50_ms"),
        (vec!["http://127.0.0.1:1/", "--expect", "dropped_max=0.5"], "--expect dropped_max"),
        (vec!["http://127.0.0.1:1/", "--expect", "latency_p99_ms"], "expected field=value"),
    ] {
        let mut all = vec!["load"];
        all.extend(args);
        let out = dtest(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{all:?}: {stderr}");
        assert!(stderr.contains(says), "{all:?}: {stderr}");
    }
}

/// Where a test keeps files worth looking at afterwards (screenshots).
fn artifacts() -> PathBuf {
    let dir = root().join("target").join("test-artifacts");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Opens `page` in headless Chromium: the rendered DOM, and a screenshot kept in `png`.
fn chromium(page: &Path, png: &Path) -> (String, String) {
    let profile = std::env::temp_dir().join(format!("dtest-chromium-{}", std::process::id()));
    let flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1200,1800",
    ];
    let url = format!("file://{}", page.display());
    let run = |extra: &str| {
        let out = Command::new("chromium")
            .args(flags)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(extra)
            .arg(&url)
            .output()
            .expect("chromium is installed (scripts/test.sh installs it)");
        (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (dom, log) = run("--dump-dom");
    let (_, shot_log) = run(&format!("--screenshot={}", png.display()));
    let _ = std::fs::remove_dir_all(&profile);
    (dom, log + &shot_log)
}

/// Console messages of the page in Chromium's log (not Chromium's own complaints).
fn console_errors(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("CONSOLE") || l.contains("Uncaught")).collect()
}

#[test]
fn load_patterns_run_on_two_local_nodes_merged_exactly_with_an_html_report() {
    let addr = target();
    let dir = artifacts();
    let (json, html, png) =
        (dir.join("load-patterns.json"), dir.join("load-patterns.html"), dir.join("load-patterns.png"));
    let out = Command::new(env!("CARGO_BIN_EXE_dtest"))
        .args(["run", "scenarios/load-patterns.json", "--local", "2", "--target"])
        .arg(format!("web=http://{addr}/"))
        .arg("--out")
        .arg(&json)
        .arg("--html")
        .arg(&html)
        .current_dir(root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let r: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();

    // Each pattern split over two nodes makes exactly the pattern's arrivals.
    let scenario = dtest_core::scenario::parse(&std::fs::read(root().join("scenarios/load-patterns.json")).unwrap())
        .expect("the shipped scenario parses");
    let expected: u64 = scenario
        .workload
        .tasks
        .iter()
        .map(|t| match &t.work {
            Work::Load(load) => Schedule::new(load.pattern.clone(), 42 ^ u64::from(load.target.0)).total_arrivals(),
            Work::Command { .. } => 0,
        })
        .sum();
    assert_eq!(n(&r, "requests") + n(&r, "dropped"), expected, "{text}");
    assert_eq!(n(&r, "dropped"), 0, "{text}");
    assert_eq!(n(&r, "errors"), 0, "{text}");
    assert_eq!(r["tasks"]["completed"], 12);
    let nodes: std::collections::BTreeSet<&str> =
        r["results"].as_array().unwrap().iter().map(|t| t["node"].as_str().unwrap()).collect();
    assert_eq!(nodes.len(), 2, "both nodes generated load: {nodes:?}");
    let series = r["series"].as_array().unwrap();
    assert!(series.len() >= 180, "one point per second of six 30 s patterns: {}", series.len());
    assert_eq!(series.iter().map(|p| p["requests"].as_u64().unwrap()).sum::<u64>(), n(&r, "requests"));
    let spike_peak = series.iter().map(|p| p["requests"].as_u64().unwrap()).max().unwrap();
    assert!((700..=900).contains(&spike_peak), "the 800 rps spike shows in the series: {spike_peak}");
    assert!(r["expectations"].as_array().unwrap().iter().all(|e| e["ok"] == true));

    // The merged histogram is standard HdrHistogram: another implementation reads it.
    let python = r#"
import json, sys
from hdrh.histogram import HdrHistogram
r = json.load(open(sys.argv[1]))
h = HdrHistogram.decode(r["histogram"])
print(h.get_total_count(), h.get_value_at_percentile(99.0))
"#;
    let read = Command::new("python3").args(["-c", python]).arg(&json).output().expect("python3");
    assert!(read.status.success(), "{}", String::from_utf8_lossy(&read.stderr));
    let printed = String::from_utf8_lossy(&read.stdout);
    let mut fields = printed.split_whitespace();
    let count: u64 = fields.next().unwrap().parse().unwrap();
    let p99_us: f64 = fields.next().unwrap().parse().unwrap();
    assert_eq!(count, n(&r, "requests"));
    let p99_ms = r["latency_ms"]["p99"].as_f64().unwrap();
    assert!((p99_us / 1e3 - p99_ms).abs() <= p99_ms * 0.002 + 0.002, "python p99 {p99_us} µs vs {p99_ms} ms");

    // The page renders its five charts with no console message.
    let (dom, log) = chromium(&html, &png);
    assert!(dom.contains(r#"data-rendered="5""#), "{log}");
    assert_eq!(
        dom.matches(r#"class="line""#).count(),
        13,
        "three node and three task lines, three throughput, three latency, one distribution line"
    );
    assert!(console_errors(&log).is_empty(), "{:?}", console_errors(&log));
    assert!(std::fs::metadata(&png).unwrap().len() > 10_000, "a screenshot in {}", png.display());
}

#[test]
fn thresholds_over_the_merged_load_decide_the_exit_code() {
    let addr = target();
    let dir = tempdir();
    let scenario = |expect: &str| {
        format!(
            r#"{{ "name": "slow", "description": "a slow target", "duration_s": 60,
              "cluster": {{ "groups": [ {{ "name": "gen", "count": 2,
                 "resources": {{ "cpu_millis": 1000, "memory_mb": 256 }} }} ] }},
              "targets": {{ "api": {{ "url": "http://{addr}/slow",
                 "sim": {{ "latency_ms": {{ "p50": 300, "p99": 310 }}, "error_rate": 0 }} }} }},
              "workload": {{ "tasks": [ {{ "name": "slow", "count": 2, "kind": "load",
                 "load": {{ "target": "api", "connections": 8,
                            "pattern": {{ "type": "constant", "rps": 20, "duration_s": 2 }} }} }} ] }},
              "expect": {expect} }}"#
        )
    };
    for (expect, code) in
        [(r#"{ "latency_p99_ms": 50 }"#, 1), (r#"{ "latency_p99_ms": 2000, "error_rate_max": 0 }"#, 0)]
    {
        let file = dir.join(format!("slow-{code}.json"));
        std::fs::write(&file, scenario(expect)).unwrap();
        let file = file.to_string_lossy().into_owned();
        for args in [vec!["run", file.as_str(), "--local", "2"], vec!["sim", file.as_str(), "--seed", "1"]] {
            let out = dtest(&args);
            let text = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(code), "{args:?} with {expect}:\n{text}");
            assert!(text.contains("latency_p99_ms"), "{text}");
        }
    }
    // The one-liner takes the same thresholds as flags.
    let url = format!("http://{addr}/slow");
    for (expect, code) in [("latency_p99_ms=50", 1), ("latency_p99_ms=2000,error_rate_max=0", 0)] {
        let (exit, r) = load_json(&[&url, "--rate", "20", "--duration", "1s", "-c", "8", "--expect", expect]);
        assert_eq!(exit, code, "{expect}: {r}");
        let failed = r["expectations"].as_array().unwrap().iter().filter(|e| e["ok"] == false).count();
        assert_eq!(failed, code as usize, "{r}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs dtest on a pseudo-terminal (util-linux `script`), as a user at a terminal would, and
/// returns its exit code and everything the terminal showed.
fn on_terminal(args: &[&str]) -> (i32, String) {
    let quote = |a: &str| format!("'{}'", a.replace('\'', r"'\''"));
    let command = std::iter::once(env!("CARGO_BIN_EXE_dtest")).chain(args.iter().copied()).map(quote);
    let out = Command::new("script")
        .args(["--quiet", "--return", "--command"])
        .arg(command.collect::<Vec<_>>().join(" "))
        .arg("/dev/null")
        .env("TERM", "xterm-256color")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("util-linux `script` is installed (scripts/test.sh installs it)");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The live figures a progress bar showed: each "N rps, p99 X ms" with N > 0.
fn live_rates(terminal: &str) -> Vec<(u64, f64)> {
    terminal
        .split(" rps, p99 ")
        .zip(terminal.split(" rps, p99 ").skip(1))
        .filter_map(|(before, after)| {
            let rps = before.rsplit(|c: char| !c.is_ascii_digit()).next()?.parse().ok()?;
            let p99 = after.split(" ms").next()?.parse().ok()?;
            Some((rps, p99)).filter(|&(rps, _)| rps > 0)
        })
        .collect()
}

#[test]
fn a_terminal_shows_the_live_rate_and_p99_of_a_load_and_of_a_run() {
    let addr = target();
    let url = format!("http://{addr}/");
    let (code, shown) = on_terminal(&["load", &url, "--rate", "100", "--duration", "4s"]);
    assert_eq!(code, 0, "{shown}");
    let rates = live_rates(&shown);
    assert!(rates.iter().any(|&(rps, p99)| (90..=110).contains(&rps) && p99 > 0.0), "{rates:?} in {shown}");

    // Two nodes at 100 rps each: the run's bar shows the cluster's rate, from the heartbeats.
    let dir = tempdir();
    let file = dir.join("live.json");
    let scenario = format!(
        r#"{{ "name": "live", "description": "a load long enough to watch", "duration_s": 60,
          "cluster": {{ "groups": [ {{ "name": "gen", "count": 2,
             "resources": {{ "cpu_millis": 1000, "memory_mb": 256 }} }} ] }},
          "strategy": {{ "distribution": "round_robin" }},
          "targets": {{ "api": {{ "url": "{url}", "sim": {{ "latency_ms": {{ "p50": 1, "p99": 2 }} }} }} }},
          "workload": {{ "tasks": [ {{ "name": "steady", "count": 2, "kind": "load",
             "load": {{ "target": "api", "connections": 4,
                        "pattern": {{ "type": "constant", "rps": 200, "duration_s": 6 }} }} }} ] }} }}"#
    );
    std::fs::write(&file, scenario).unwrap();
    let (code, shown) = on_terminal(&["run", &file.to_string_lossy(), "--local", "2"]);
    assert_eq!(code, 0, "{shown}");
    let rates = live_rates(&shown);
    assert!(rates.iter().any(|&(rps, p99)| (180..=220).contains(&rps) && p99 > 0.0), "{rates:?} in {shown}");
    assert!(shown.contains("requests, 0 errors, 0 dropped"), "{shown}");
    let _ = std::fs::remove_dir_all(&dir);
}

pub fn tempdir() -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("dtest-load-test-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A simulation's HTML report draws the cluster's timeline: the faults shaded, nodes up and dead
/// over time, tasks running and ended, reassignments; checked in Chromium.
#[test]
fn a_simulation_s_html_report_draws_the_timeline_with_its_faults_shaded() {
    let dir = artifacts();
    let (html, png) = (dir.join("node-failure-sim.html"), dir.join("node-failure-sim.png"));
    let out = Command::new(env!("CARGO_BIN_EXE_dtest"))
        .args(["sim", "scenarios/node-failure.json", "--seed", "42", "--html"])
        .arg(&html)
        .current_dir(root())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let page = std::fs::read_to_string(&html).unwrap();
    let data = page.split(r#"<script id="data" type="application/json">"#).nth(1).unwrap();
    let data: Value = serde_json::from_str(data.split("</script>").next().unwrap()).unwrap();
    let timeline = &data["timeline"];
    let column =
        |name: &str| -> Vec<f64> { timeline[name].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect() };
    let (t, dead, up, ended) = (column("t_s"), column("nodes_dead"), column("nodes_up"), column("tasks_ended"));
    // worker-1 dies at 15 s for good, the rack of five at 40 s until 100 s: six dead at once.
    let dead_at = |s: f64| dead[t.iter().position(|&x| x >= s).unwrap()];
    assert_eq!((dead_at(10.0), dead_at(30.0), dead_at(70.0)), (0.0, 1.0, 6.0), "{timeline}");
    assert_eq!(up.last(), Some(&39.0), "all but worker-1 are back at the end");
    assert_eq!(ended.last(), Some(&300.0));
    assert!(ended.windows(2).all(|w| w[0] <= w[1]), "tasks ended never falls");
    assert_eq!(timeline["faults"].as_array().unwrap().len(), 2);

    let (dom, log) = chromium(&html, &png);
    assert!(dom.contains(r#"data-rendered="2""#), "{log}");
    assert_eq!(dom.matches(r#"class="line""#).count(), 6, "three node lines, three task lines");
    assert_eq!(dom.matches(r#"class="fault""#).count(), 4, "two faults shaded on each of two charts");
    assert!(dom.contains(r#"data-kind="kill""#));
    assert!(console_errors(&log).is_empty(), "{:?}", console_errors(&log));
}
