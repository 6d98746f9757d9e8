//! `dtest run` and `dtest node` for real: node daemons as real processes on 127.0.0.1, real
//! commands, real SIGKILLs and partitions, the JUnit file read by a real JUnit consumer
//! (Python's junitparser), and the node API fed bad input.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::{dtest, root};

/// A scratch directory, removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("dtest-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        Scratch(dir)
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a scratch file");
        path.to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A `dtest node` process, killed when dropped.
struct Daemon {
    child: Child,
    port: u16,
}

impl Daemon {
    fn start(token_file: &str, extra: &[&str]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dtest"))
            .args(["node", "--listen", "127.0.0.1:0", "--token-file", token_file])
            .args(extra)
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dtest node");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("the address line");
        let port = line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port on the first line");
        Daemon { child, port }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request by hand, so bad input reaches the daemon exactly as written; the status.
fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect to the daemon");
    stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("send the head");
    // The daemon may answer (413) and close before the whole body is written.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, text)
}

fn report_of(output: &std::process::Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "a JSON report on stdout ({e}):\n{}\n{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn assert_nothing_lost_or_doubled(report: &Value) {
    let tasks = &report["tasks"];
    assert_eq!(tasks["completed"], tasks["submitted"], "{report:#}");
    assert_eq!(tasks["lost"], 0, "{report:#}");
    assert_eq!(tasks["duplicated"], 0, "{report:#}");
    assert_eq!(report["violations"], Value::Array(vec![]), "{report:#}");
}

/// A scenario of `count` tasks running `sleep SECONDS` on four local nodes, with `faults`.
fn sleepy_scenario(count: u32, seconds: f64, faults: &str) -> String {
    format!(
        r#"{{
  "name": "sleepy",
  "description": "sleeping tasks on four local nodes",
  "duration_s": 90,
  "cluster": {{ "groups": [
    {{ "name": "local", "count": 4, "resources": {{ "cpu_millis": 1000, "memory_mb": 1024 }} }}
  ] }},
  "strategy": {{ "distribution": "least_loaded", "allocation": "first_fit" }},
  "workload": {{ "tasks": [
    {{ "name": "sleep", "count": {count}, "kind": "command", "requires": {{ "cpu_millis": 500, "memory_mb": 64 }},
      "command": {{ "argv": ["sleep", "{seconds}"], "timeout_s": 60 }} }}
  ] }},
  "faults": {faults},
  "expect": {{ "all_tasks_complete": true }}
}}"#
    )
}

#[test]
fn the_sharded_suite_runs_on_four_local_nodes_and_junit_reads_it() {
    let scratch = Scratch::new("sharded");
    let junit = scratch.0.join("junit.xml");
    let junit = junit.to_string_lossy();
    let output = dtest(&["run", "scenarios/sharded-tests.json", "--local", "4", "--json", "--junit", &junit]);
    let report = report_of(&output);
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    assert_eq!(report["mode"], "run");
    assert_eq!(report["tasks"]["submitted"], 12);
    assert_nothing_lost_or_doubled(&report);
    let results = report["results"].as_array().expect("per-task results");
    assert_eq!(results.len(), 12);
    assert!(results.iter().all(|r| r["outcome"] == "passed"), "{results:#?}");
    let nodes: std::collections::BTreeSet<&str> = results.iter().filter_map(|r| r["node"].as_str()).collect();
    assert!(nodes.len() > 1, "the shards spread over the nodes: {nodes:?}");

    let check = r#"
import sys
from junitparser import JUnitXml, Failure, Error
xml = JUnitXml.fromfile(sys.argv[1])
cases = [case for suite in xml for case in suite]
assert len(cases) == 12, len(cases)
assert all(not case.result for case in cases), [case.result for case in cases]
names = sorted(case.name for case in cases)
assert "suite[1/12]" in names and "suite[12/12]" in names, names
print(xml.tests, xml.failures, xml.errors)
"#;
    let parsed = Command::new("python3").args(["-c", check, &junit]).output().expect("run python3");
    assert!(parsed.status.success(), "{}", String::from_utf8_lossy(&parsed.stderr));
    assert_eq!(String::from_utf8_lossy(&parsed.stdout).trim(), "12 0 0");
}

#[test]
fn a_failing_shard_fails_the_run_and_junit_carries_its_output() {
    let scratch = Scratch::new("failing");
    let scenario = scratch.file(
        "failing.json",
        r#"{
  "name": "failing",
  "description": "one of three checks fails",
  "duration_s": 60,
  "cluster": { "groups": [ { "name": "local", "count": 2, "resources": { "cpu_millis": 1000, "memory_mb": 1024 } } ] },
  "workload": { "tasks": [
    { "name": "check", "count": 3, "kind": "command", "max_attempts": 1, "requires": { "cpu_millis": 100 },
      "command": { "argv": ["sh", "-c", "echo checking {index}; test {index} -ne 2 || { echo 'assertion <failed>' >&2; exit 3; }"], "timeout_s": 30 } }
  ] },
  "expect": { "max_failed_tasks": 0 }
}"#,
    );
    let junit = scratch.0.join("junit.xml");
    let junit = junit.to_string_lossy();
    let output = dtest(&["run", &scenario, "--local", "2", "--json", "--junit", &junit]);
    let report = report_of(&output);
    assert_eq!(output.status.code(), Some(1), "an expectation failed: {report:#}");
    assert_eq!(report["tasks"]["failed"], 1);
    let failed: Vec<&Value> =
        report["results"].as_array().expect("results").iter().filter(|r| r["outcome"] == "failed").collect();
    assert_eq!(failed.len(), 1);
    let message = failed[0]["message"].as_str().expect("a message");
    assert!(message.starts_with("exit code 3") && message.contains("assertion <failed>"), "{message}");
    let check = r#"
import sys
from junitparser import JUnitXml, Failure
xml = JUnitXml.fromfile(sys.argv[1])
failures = [(case.name, r) for suite in xml for case in suite for r in case.result if isinstance(r, Failure)]
assert len(failures) == 1, failures
name, failure = failures[0]
assert name == "check[2/3]", name
assert "assertion <failed>" in failure.text, failure.text
"#;
    let parsed = Command::new("python3").args(["-c", check, &junit]).output().expect("run python3");
    assert!(parsed.status.success(), "{}", String::from_utf8_lossy(&parsed.stderr));
}

#[test]
fn a_node_killed_mid_run_has_its_work_reassigned_and_nothing_is_lost_or_counted_twice() {
    let scratch = Scratch::new("kill");
    let scenario = scratch
        .file("kill.json", &sleepy_scenario(8, 3.0, r#"[ { "at_s": 1, "type": "kill", "nodes": ["local-2"] } ]"#));
    let output = dtest(&["run", &scenario, "--local", "4", "--json"]);
    let report = report_of(&output);
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    assert_nothing_lost_or_doubled(&report);
    assert!(report["reassignments"].as_u64() >= Some(1), "the killed node's work moved: {report:#}");
    assert!(report["nodes"]["declared_dead"].as_u64() >= Some(1), "{report:#}");
    let detection = report["failure_detection_ms"]["max"].as_u64().expect("the kill was noticed");
    assert!(detection < 15_000, "noticed in {detection} ms: {report:#}");
    let results = report["results"].as_array().expect("results");
    assert!(results.iter().all(|r| r["node"] != "local-2"), "no result counted from the dead node: {results:#?}");
}

#[test]
fn a_partitioned_node_is_declared_dead_its_work_moves_and_its_stale_results_are_refused() {
    let scratch = Scratch::new("partition");
    // Eight tasks fill the four nodes. local-3 is cut off from 1 s to 10 s: declared dead about
    // 6 s later (phi accrual with one second of heartbeat history), its tasks run again elsewhere
    // once room frees at 8 s; its own attempts end at 8 s inside the partition, and the results
    // it resends after the heal (by 11 s) must be refused, while the new attempts run to 16 s.
    let faults = r#"[ { "at_s": 1, "type": "partition", "nodes": [["local-3"]], "heal_at_s": 10 } ]"#;
    let scenario = scratch.file("partition.json", &sleepy_scenario(8, 8.0, faults));
    let output = dtest(&["run", &scenario, "--local", "4", "--json"]);
    let report = report_of(&output);
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    assert_nothing_lost_or_doubled(&report);
    assert!(report["nodes"]["declared_dead"].as_u64() >= Some(1), "{report:#}");
    assert!(report["reassignments"].as_u64() >= Some(1), "{report:#}");
    assert!(report["stale_results_refused"].as_u64() >= Some(1), "the healed node's old result: {report:#}");
    let results = report["results"].as_array().expect("results");
    assert!(results.iter().all(|r| r["node"] != "local-3"), "{results:#?}");
}

#[test]
fn a_node_stopped_with_sigterm_hands_its_work_back() {
    let scratch = Scratch::new("sigterm");
    let token = scratch.file("token", "sigterm-test-token\n");
    let a = Daemon::start(
        &token,
        &["--allow-commands", "--group", "local", "--resources", "cpu_millis=1000,memory_mb=1024"],
    );
    let mut b = Daemon::start(
        &token,
        &["--allow-commands", "--group", "local", "--resources", "cpu_millis=1000,memory_mb=1024"],
    );
    let scenario = scratch.file("sleepy.json", &sleepy_scenario(4, 3.0, "[]"));
    let nodes = format!("{},{}", a.url(), b.url());
    let run = Command::new(env!("CARGO_BIN_EXE_dtest"))
        .args(["run", &scenario, "--nodes", &nodes, "--token-file", &token, "--json"])
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dtest run");
    std::thread::sleep(Duration::from_millis(1500));
    let pid = nix::unistd::Pid::from_raw(b.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal the node");
    let status = b.child.wait().expect("the node exits");
    assert!(status.success(), "a graceful exit: {status:?}");
    let output = run.wait_with_output().expect("the run ends");
    let report = report_of(&output);
    assert_eq!(output.status.code(), Some(0), "{report:#}");
    assert_nothing_lost_or_doubled(&report);
    assert!(report["reassignments"].as_u64() >= Some(1), "{report:#}");
    assert_eq!(report["nodes"]["false_suspicions"], 0, "{report:#}");
    let results = report["results"].as_array().expect("results");
    assert!(results.iter().all(|r| r["attempts"].as_u64() <= Some(2)), "{results:#?}");
}

#[test]
fn unreachable_nodes_at_start_exit_2_naming_them() {
    let scratch = Scratch::new("unreachable");
    let token = scratch.file("token", "t");
    let output = dtest(&[
        "run",
        "scenarios/sharded-tests.json",
        "--nodes",
        "http://127.0.0.1:9,http://127.0.0.1:1",
        "--token-file",
        &token,
    ]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("http://127.0.0.1:9") && stderr.contains("http://127.0.0.1:1"), "{stderr}");
    assert!(output.stdout.is_empty());
}

#[test]
fn a_node_without_allow_commands_is_refused_before_the_run_starts() {
    let scratch = Scratch::new("no-commands");
    let token = scratch.file("token", "secret");
    let daemon = Daemon::start(&token, &[]);
    let output = dtest(&["run", "scenarios/sharded-tests.json", "--nodes", &daemon.url(), "--token-file", &token]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--allow-commands"), "{stderr}");
}

#[test]
fn the_node_api_answers_bad_input_with_4xx_and_keeps_serving() {
    let scratch = Scratch::new("api");
    let token = scratch.file("token", "right-token");
    let mut daemon = Daemon::start(&token, &[]);
    let port = daemon.port;
    assert_eq!(http(port, "GET", "/v1/info", None, b"").0, 401);
    assert_eq!(http(port, "GET", "/v1/info", Some("wrong-token"), b"").0, 401);
    let (status, text) = http(port, "GET", "/v1/info", Some("right-token"), b"");
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"allow_commands\":false"), "commands are off by default: {text}");
    assert_eq!(http(port, "POST", "/v1/exchange", Some("right-token"), b"{\"plan\": ").0, 400);
    assert_eq!(http(port, "POST", "/v1/exchange", Some("right-token"), b"[1, 2]").0, 400);
    assert_eq!(http(port, "PUT", "/v1/plan", Some("right-token"), b"{\"id\": 7}").0, 400);
    let big = format!("{{\"id\": \"{}\", \"entries\": []}}", "x".repeat(17 << 20));
    assert_eq!(http(port, "PUT", "/v1/plan", Some("right-token"), big.as_bytes()).0, 413);
    let exchange = br#"{"plan": "none", "frames": [], "wait_ms": 0}"#;
    assert_eq!(http(port, "POST", "/v1/exchange", Some("right-token"), exchange).0, 409);
    let lossy = br#"{"link": {"to_node": {"loss": 2.0}}}"#;
    assert_eq!(http(port, "PUT", "/v1/faults", Some("right-token"), lossy).0, 422);
    assert_eq!(http(port, "GET", "/nowhere", Some("right-token"), b"").0, 404);
    assert_eq!(http(port, "GET", "/v1/info", Some("right-token"), b"").0, 200, "still serving");
    assert!(daemon.child.try_wait().expect("query the daemon").is_none(), "the daemon did not exit");
}

#[test]
fn a_node_listens_on_loopback_and_needs_a_token_file() {
    let output = dtest(&["node", "--token-file", "/nonexistent/token"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/token"));
    let help = dtest(&["node", "--help"]);
    assert!(String::from_utf8_lossy(&help.stdout).contains("127.0.0.1:7070"));
}

#[test]
fn a_node_given_the_plan_late_in_a_run_starts_loads_on_the_run_clock() {
    use dtest_core::protocol::{Attempt, DeliveryMode, Frame, Packet, TaskId, ToAgent, ToOrchestrator};
    use dtest_core::scenario::{HttpMethod, HttpVersion, Pattern};
    use dtest_node::api::{Exchange, ExchangeReply, Plan, PlanEntry, PlanWork};
    use dtest_node::load::{LoadSpec, Rate};

    let scratch = Scratch::new("clock");
    let token = scratch.file("token", "right-token");
    let daemon = Daemon::start(&token, &[]);
    // A load due an hour into the run, on a plan sent (as to a node restarted) an hour in: it
    // starts at once. Nothing listens on port 1, so every request is a counted connect error.
    let spec = LoadSpec {
        url: "http://127.0.0.1:1/".to_owned(),
        method: HttpMethod::Get,
        headers: Default::default(),
        body: None,
        timeout_ms: 1_000,
        connections: 1,
        http_version: HttpVersion::Http1,
        tls: Default::default(),
        start_ms: 3_600_000,
        rate: Rate::Pattern { pattern: Pattern::Constant { rps: 10.0, duration_ms: 1_000 }, seed: 0, index: 0, of: 1 },
    };
    let entry = PlanEntry { name: "late".to_owned(), count: 1, work: PlanWork::Load(spec) };
    let plan = Plan { id: "clock".to_owned(), entries: vec![entry], elapsed_ms: 3_600_000 };
    let put = http(daemon.port, "PUT", "/v1/plan", Some("right-token"), &serde_json::to_vec(&plan).unwrap());
    assert_eq!(put.0, 204, "{}", put.1);
    // Messages to an agent name its incarnation, which its hello tells.
    let exchange = |frames: Vec<Frame<ToAgent>>| -> Vec<Frame<ToOrchestrator>> {
        let exchange = Exchange { plan: "clock".to_owned(), frames, wait_ms: 1_000 };
        let (status, text) =
            http(daemon.port, "POST", "/v1/exchange", Some("right-token"), &serde_json::to_vec(&exchange).unwrap());
        assert_eq!(status, 200, "{text}");
        let body = text.split_once("\r\n\r\n").map_or("", |(_, body)| body);
        let reply: ExchangeReply = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text}"));
        reply.frames
    };
    let hello = exchange(Vec::new()).into_iter().find_map(|f| match f {
        Frame::Data(Packet { body: ToOrchestrator::Hello { incarnation }, .. }) => Some(incarnation),
        _ => None,
    });
    let session = hello.expect("the agent says hello first").0;
    let assign = ToAgent::Assign { task: TaskId(0), attempt: Attempt(1), work: 0, timeout_ms: 60_000 };
    let mut frames =
        vec![Frame::Data(Packet { session, id: 1, floor: 1, mode: DeliveryMode::ExactlyOnce, body: assign })];
    let started = std::time::Instant::now();
    let finished = loop {
        assert!(started.elapsed() < Duration::from_secs(20), "the load waited for its start_s again");
        let finished = exchange(std::mem::take(&mut frames)).into_iter().find_map(|f| match f {
            Frame::Data(Packet { body: ToOrchestrator::Finished { load, .. }, .. }) => Some(load),
            _ => None,
        });
        if let Some(load) = finished {
            break load.expect("a load result");
        }
    };
    assert_eq!((finished.requests, finished.status.connect), (10, 10), "{finished:?}");
}

/// Whether process `pid` still exists (a zombie counts as gone: it runs nothing).
fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name in parentheses: `pid (comm) S ...`.
    stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
}

/// Runs `dtest run SCENARIO --local 2 --json` whose commands write their pids to `pids`, sends it
/// SIGINT once `started` commands have, and returns what it printed and every command's pid.
fn interrupt_once_started(scenario: &str, pids: &std::path::Path, started: usize) -> (std::process::Output, Vec<i32>) {
    let child = Command::new(env!("CARGO_BIN_EXE_dtest"))
        .args(["run", scenario, "--local", "2", "--json"])
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start dtest run");
    let since = std::time::Instant::now();
    while std::fs::read_to_string(pids).unwrap_or_default().lines().count() < started {
        assert!(since.elapsed() < Duration::from_secs(60), "{started} commands never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("send SIGINT");
    let output = child.wait_with_output().expect("dtest run ends");
    let commands =
        std::fs::read_to_string(pids).expect("pids").lines().map(|l| l.trim().parse().expect("a pid")).collect();
    (output, commands)
}

#[test]
fn sigint_cancels_the_work_on_every_node_and_still_writes_the_partial_report() {
    let scratch = Scratch::new("sigint");
    let pids = scratch.0.join("pids");
    let scenario = scratch.file(
        "long.json",
        &format!(
            r#"{{
  "name": "long",
  "description": "commands far longer than anyone waits",
  "duration_s": 600,
  "cluster": {{ "groups": [ {{ "name": "local", "count": 2, "resources": {{ "cpu_millis": 4000, "memory_mb": 1024 }} }} ] }},
  "workload": {{ "tasks": [
    {{ "name": "long", "count": 4, "kind": "command", "requires": {{ "cpu_millis": 1000, "memory_mb": 64 }},
      "command": {{ "argv": ["sh", "-c", "echo $$ >> {}; exec sleep 300"], "timeout_s": 600 }} }}
  ] }}
}}"#,
            pids.display()
        ),
    );
    let (output, commands) = interrupt_once_started(&scenario, &pids, 4);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "{stderr}");
    let report = report_of(&output);
    assert_eq!(report["interrupted"], true, "{report:#}");
    assert_eq!(report["tasks"]["cancelled"], 4, "{report:#}");
    assert!(report["results"].as_array().is_some_and(|r| r.iter().all(|r| r["outcome"] == "cancelled")));
    // The nodes killed the commands' process groups before dtest run exited.
    let left: Vec<i32> = commands.into_iter().filter(|&pid| alive(pid)).collect();
    assert!(left.is_empty(), "task processes outlived the run: {left:?}");
}

#[test]
fn a_killed_node_takes_its_work_down_with_it_and_no_task_process_outlives_the_run() {
    let scratch = Scratch::new("kill-orphans");
    let pids = scratch.0.join("pids");
    let scenario = scratch.file(
        "crash.json",
        &format!(
            r#"{{
  "name": "crash",
  "description": "a node crashes under long commands, which move to the other node",
  "duration_s": 600,
  "cluster": {{ "groups": [ {{ "name": "local", "count": 2, "resources": {{ "cpu_millis": 4000, "memory_mb": 1024 }} }} ] }},
  "strategy": {{ "distribution": "least_loaded", "allocation": "first_fit" }},
  "workload": {{ "tasks": [
    {{ "name": "long", "count": 2, "kind": "command", "requires": {{ "cpu_millis": 1000, "memory_mb": 64 }},
      "command": {{ "argv": ["sh", "-c", "echo $$ >> {}; exec sleep 300"], "timeout_s": 600 }} }}
  ] }},
  "faults": [ {{ "at_s": 2, "type": "kill", "nodes": ["local-1"] }} ]
}}"#,
            pids.display()
        ),
    );
    // One command per node, then the crashed node's again on the survivor.
    let (output, commands) = interrupt_once_started(&scenario, &pids, 3);
    assert_eq!(output.status.code(), Some(130), "{}", String::from_utf8_lossy(&output.stderr));
    let report = report_of(&output);
    assert_eq!(report["reassignments"], 1, "{report:#}");
    let left: Vec<i32> = commands.into_iter().filter(|&pid| alive(pid)).collect();
    assert!(left.is_empty(), "task processes outlived the run: {left:?}");
}

/// The crash of the process hosting a journaled session, then its resume from the journal: the
/// nodes kept the plan and their work, the rebuilt run takes them back, and every task runs
/// exactly once (each instance's command appends one line to its own file).
#[test]
fn a_journaled_session_abandoned_mid_run_resumes_from_its_journal_and_runs_each_task_once() {
    use std::sync::Arc;

    use dtest_node::secret::Secret;
    use dtest_orchestrator::journal::{JournalHandle, MemoryJournal};
    use dtest_orchestrator::{NodeSource, Session, SessionConfig};

    let scratch = Scratch::new("resume");
    let token = scratch.file("token", "resume-token");
    let daemons: Vec<Daemon> = (0..3).map(|_| Daemon::start(&token, &["--allow-commands"])).collect();
    let marks = scratch.0.join("marks");
    std::fs::create_dir_all(&marks).expect("marks dir");
    let text = sleepy_scenario(9, 1.0, "[]").replace(
        r#""argv": ["sleep", "1"]"#,
        &format!(r#""argv": ["sh", "-c", "echo ran >> {}/{{index}}; sleep 1"]"#, marks.display()),
    );
    let scenario = dtest_core::scenario::parse(text.as_bytes()).expect("a valid scenario");
    let journal = Arc::new(MemoryJournal::default());
    let mut config = SessionConfig::new(
        scenario,
        NodeSource::Remote {
            urls: daemons.iter().map(Daemon::url).collect(),
            token: Secret::new("resume-token"),
            tls: Default::default(),
        },
        7,
    );
    config.journal = Some(JournalHandle(journal.clone()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let report = runtime.block_on(async {
        let session = Session::start(config.clone()).await.expect("the session starts");
        // Mid-run: some tasks done, some running, some queued.
        tokio::time::sleep(Duration::from_millis(1_800)).await;
        session.abandon();
        tokio::time::sleep(Duration::from_millis(1_500)).await;
        let setup = journal.setup.lock().expect("setup").clone().expect("the setup was recorded");
        let entries = journal.entries.lock().expect("entries").clone();
        assert!(entries.len() > 3, "the journal recorded the run's inputs: {entries:?}");
        let resumed = Session::resume(config, setup, entries).await.expect("the session resumes");
        resumed.finish().await.expect("a report")
    });
    let report = serde_json::to_value(&report).expect("json");
    assert_nothing_lost_or_doubled(&report);
    assert_eq!(report["reassignments"], 0, "nobody was declared dead for the orchestrator's crash: {report:#}");
    for index in 1..=9 {
        let runs = std::fs::read_to_string(marks.join(index.to_string())).unwrap_or_default();
        assert_eq!(runs.lines().count(), 1, "task instance {index} ran exactly once");
    }
}

/// A stand-in for `dtest serve`'s registry: records every `POST /v1/nodes` (its bearer token and
/// body) until the test ends; its base URL.
async fn registry() -> (String, tokio::sync::mpsc::Receiver<(String, Value)>) {
    use axum::http::{HeaderMap, StatusCode, header};
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let record = move |headers: HeaderMap, axum::Json(body): axum::Json<Value>| {
        let tx = tx.clone();
        async move {
            let auth = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
            let _ = tx.send((auth, body)).await;
            StatusCode::NO_CONTENT
        }
    };
    let app = axum::Router::new().route("/v1/nodes", axum::routing::post(record));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
    let url = format!("http://{}", listener.local_addr().expect("its address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

/// The next registration of the node named `name`, within `seconds`.
async fn registration_of(
    registrations: &mut tokio::sync::mpsc::Receiver<(String, Value)>,
    name: &str,
    seconds: u64,
) -> (String, Value) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let next = tokio::time::timeout_at(deadline, registrations.recv()).await;
        let (auth, body) = next.ok().flatten().unwrap_or_else(|| panic!("{name} did not register"));
        if body["name"] == name {
            return (auth, body);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_given_an_orchestrator_registers_with_its_name_url_labels_and_token_and_again_later() {
    use dtest_node::api::NodeRegistration;
    let (service, mut registrations) = registry().await;
    let scratch = Scratch::new("register");
    let token = scratch.file("token", "node-token");
    let service_token = scratch.file("service-token", "service-token");
    let args = [
        "--group",
        "eu",
        "--orchestrator",
        &service,
        "--label",
        "zone=eu-1",
        "--label",
        "gpu.kind=a100",
        "--orchestrator-token-file",
        &service_token,
    ]
    .map(str::to_owned);
    let start = move |token: String, args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            Daemon::start(&token, &args)
        })
    };
    let grouped = start(token.clone(), args.to_vec()).await.expect("the daemon starts");
    let named = ["--name", "custom", "--orchestrator", &service].map(str::to_owned).to_vec();
    let named = start(token.clone(), named).await.expect("the daemon starts");

    let name = format!("eu-{}", grouped.port);
    let (auth, body) = registration_of(&mut registrations, &name, 10).await;
    assert_eq!(auth, "Bearer service-token");
    let registration: NodeRegistration = serde_json::from_value(body).expect("a NodeRegistration");
    assert_eq!(registration.url, grouped.url());
    let labels: Vec<(&str, &str)> = registration.labels.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(labels, [("gpu.kind", "a100"), ("zone", "eu-1")]);
    assert_eq!(registration.info.group.as_deref(), Some("eu"));
    assert_eq!(registration.info.plans, 0);

    // Without --orchestrator-token-file the node's own token goes; without --group, --name names.
    let (auth, body) = registration_of(&mut registrations, "custom", 10).await;
    assert_eq!((auth.as_str(), body["url"].as_str()), ("Bearer node-token", Some(named.url().as_str())));

    // And again within the interval (5 s), as a restarted service would need.
    registration_of(&mut registrations, &name, 8).await;
}

#[test]
fn a_node_registering_while_listening_everywhere_needs_advertise_and_labels_are_checked() {
    let scratch = Scratch::new("register-bad");
    let token = scratch.file("token", "node-token");
    let everywhere = [
        "node",
        "--token-file",
        &token,
        "--listen",
        "0.0.0.0:0",
        "--insecure-plaintext",
        "--orchestrator",
        "http://127.0.0.1:9",
    ];
    let output = dtest(&everywhere);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--advertise"), "{stderr}");
    let output = dtest(&["node", "--token-file", &token, "--orchestrator", "http://127.0.0.1:9", "--label", "Zone=x"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("`Zone`"));
    let help = String::from_utf8_lossy(&dtest(&["node", "--help"]).stdout).into_owned();
    for flag in ["--orchestrator", "--advertise", "--name", "--label", "--orchestrator-token-file"] {
        assert!(help.contains(flag), "{flag} in {help}");
    }
}

/// A journal that refuses every third input (a store that is busy now and then): the session
/// hands the run only what the journal took, warns, and the run still ends with every task run
/// once, as over a lossy network.
#[test]
fn a_session_whose_journal_fails_now_and_then_holds_inputs_back_and_still_finishes() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    use dtest_node::secret::Secret;
    use dtest_orchestrator::journal::{Entry, Journal, JournalHandle, MemoryJournal, Setup};
    use dtest_orchestrator::{NodeSource, Session, SessionConfig, SessionEvent};

    struct Flaky {
        inner: MemoryJournal,
        calls: AtomicU64,
    }

    impl Journal for Flaky {
        fn setup(&self, setup: &Setup) -> Result<(), String> {
            self.inner.setup(setup)
        }

        fn record(&self, seq: u64, entry: &Entry) -> Result<(), String> {
            if self.calls.fetch_add(1, Ordering::Relaxed) % 3 == 2 {
                return Err("database is locked".to_owned());
            }
            self.inner.record(seq, entry)
        }
    }

    let scratch = Scratch::new("flaky-journal");
    let token = scratch.file("token", "flaky-token");
    let daemons: Vec<Daemon> = (0..3).map(|_| Daemon::start(&token, &["--allow-commands"])).collect();
    let scenario = dtest_core::scenario::parse(sleepy_scenario(6, 0.5, "[]").as_bytes()).expect("a valid scenario");
    let journal = Arc::new(Flaky { inner: MemoryJournal::default(), calls: AtomicU64::new(0) });
    let mut config = SessionConfig::new(
        scenario,
        NodeSource::Remote {
            urls: daemons.iter().map(Daemon::url).collect(),
            token: Secret::new("flaky-token"),
            tls: Default::default(),
        },
        3,
    );
    config.journal = Some(JournalHandle(journal.clone()));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("rt");
    let (report, warnings) = runtime.block_on(async {
        let mut session = Session::start(config).await.expect("the session starts");
        let mut warnings = Vec::new();
        while let Some(event) = session.next_event().await {
            if let SessionEvent::Warning(warning) = event {
                warnings.push(warning);
            }
        }
        (session.finish().await.expect("a report"), warnings)
    });
    let report = serde_json::to_value(&report).expect("json");
    assert_nothing_lost_or_doubled(&report);
    assert!(warnings.iter().any(|w| w.contains("cannot record")), "the refusals were said: {warnings:?}");
    // The memory journal refuses an entry out of order, so a session that moved on past a refused
    // entry would have stalled its run: the entries are the run's inputs, whole and in order.
    assert!(journal.inner.entries.lock().expect("entries").len() > 10);
}

/// One node's scenario: `count` tasks that exit at once.
fn one_node_scenario(count: u32) -> String {
    format!(
        r#"{{ "name": "one-node", "description": "quick tasks on one node", "duration_s": 60,
  "cluster": {{ "groups": [{{ "name": "local", "count": 1, "resources": {{ "cpu_millis": 1000, "memory_mb": 1024 }} }}] }},
  "workload": {{ "tasks": [{{ "name": "quick", "count": {count}, "kind": "command",
    "requires": {{ "cpu_millis": 100, "memory_mb": 64 }}, "command": {{ "argv": ["true"], "timeout_s": 30 }} }}] }},
  "faults": [], "expect": {{ "all_tasks_complete": true }} }}"#
    )
}

/// A node on mutual TLS with `dtest certs`' files completes a run for a client showing the
/// cluster's certificate; a client without one, with another CA's, not trusting the node's CA,
/// or speaking plain HTTP to the TLS port is refused, and says why.
#[test]
fn a_run_over_mutual_tls_completes_and_every_stranger_is_refused() {
    let scratch = Scratch::new("mtls");
    let token = scratch.file("token", "tls-token");
    let (certs, other) = (scratch.0.join("certs"), scratch.0.join("other"));
    for dir in [&certs, &other] {
        let made = dtest(&["certs", &dir.to_string_lossy()]);
        assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    }
    let again = dtest(&["certs", &certs.to_string_lossy()]);
    assert_eq!(again.status.code(), Some(2), "certs are never overwritten without --force");
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let pem = |dir: &PathBuf, name: &str| dir.join(name).to_string_lossy().into_owned();
    let (ca, server, server_key) = (pem(&certs, "ca.pem"), pem(&certs, "server.pem"), pem(&certs, "server-key.pem"));
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&server_key).expect("the key").permissions());
    assert_eq!(mode & 0o077, 0, "a private key is its owner's alone: {mode:o}");
    let tls = ["--tls-cert", &server, "--tls-key", &server_key, "--tls-client-ca", &ca];
    let daemon = Daemon::start(&token, &[&["--allow-commands"][..], &tls[..]].concat());
    let url = format!("https://127.0.0.1:{}", daemon.port);
    let scenario = scratch.file("quick.json", &one_node_scenario(4));
    let run = |nodes: &str, tls: &[&str]| {
        dtest(&[&["run", &scenario, "--nodes", nodes, "--token-file", &token, "--json"][..], tls].concat())
    };
    let (client, client_key) = (pem(&certs, "client.pem"), pem(&certs, "client-key.pem"));
    let done = run(&url, &["--cacert", &ca, "--client-cert", &client, "--client-key", &client_key]);
    assert_eq!(done.status.code(), Some(0), "{}", String::from_utf8_lossy(&done.stderr));
    assert_nothing_lost_or_doubled(&report_of(&done));

    let refused = |tls: &[&str], nodes: &str, why: &str| {
        let output = run(nodes, tls);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(nodes) && stderr.contains(why), "expected `{why}`: {stderr}");
    };
    refused(&["--cacert", &ca], &url, "CertificateRequired");
    let (stranger, stranger_key) = (pem(&other, "client.pem"), pem(&other, "client-key.pem"));
    refused(&["--cacert", &ca, "--client-cert", &stranger, "--client-key", &stranger_key], &url, "UnknownCA");
    refused(&[], &url, "UnknownIssuer");
    refused(&[], &url.replace("https://", "http://"), "use https://");
}

/// A daemon does not send its token in clear beyond this machine unless told to.
#[test]
fn daemons_refuse_plain_http_beyond_loopback_without_insecure_plaintext() {
    let scratch = Scratch::new("plaintext");
    let token = scratch.file("token", "t");
    let data = scratch.0.join("data").to_string_lossy().into_owned();
    for command in [
        &["node", "--token-file", &token, "--listen", "0.0.0.0:0"][..],
        &["serve", "--token-file", &token, "--listen", "0.0.0.0:0", "--data", &data][..],
        &["mcp", "--token-file", &token, "--http", "0.0.0.0:0"][..],
    ] {
        let output = dtest(command);
        assert_eq!(output.status.code(), Some(2), "{command:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("--tls-cert") && stderr.contains("--insecure-plaintext"), "{stderr}");
    }
    // TLS to a port that speaks plain HTTP fails at once, naming the node.
    let daemon = Daemon::start(&token, &["--allow-commands"]);
    let scenario = scratch.file("quick.json", &one_node_scenario(1));
    let url = format!("https://127.0.0.1:{}", daemon.port);
    let output = dtest(&["run", &scenario, "--nodes", &url, "--token-file", &token]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains(&url));
}
