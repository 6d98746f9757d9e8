//! `GET /metrics` of `dtest node` and `dtest serve` read by the real Prometheus (Debian's
//! `prometheus`, which scrapes both with a bearer token from a file) and linted by its `promtool`.
//! A node registered with the service runs one execution's tasks first, so the series hold
//! something; every process the test starts is killed when it ends, passing or not.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::root;

/// How long Prometheus may take to start and scrape what the test waits for.
const PROMETHEUS_WAIT: Duration = Duration::from_secs(60);

/// The processes of a test, and its scratch directory: all killed and removed when dropped.
struct Processes {
    children: Vec<Child>,
    dir: PathBuf,
}

impl Processes {
    fn new(name: &str) -> Processes {
        let dir = std::env::temp_dir().join(format!("dtest-it-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a scratch directory");
        Processes { children: Vec::new(), dir }
    }

    fn file(&self, name: &str, text: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, text).expect("a scratch file");
        path.to_string_lossy().into_owned()
    }

    /// Starts `dtest ARGS`, whose first stdout line ends with its URL; the port. The rest of its
    /// stdout is drained so it never blocks on a full pipe.
    fn dtest(&mut self, args: &[&str]) -> u16 {
        let mut child = Command::new(env!("CARGO_BIN_EXE_dtest"))
            .args(args)
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start dtest");
        let mut stdout = BufReader::new(child.stdout.take().expect("its stdout"));
        self.children.push(child);
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the address line");
        std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
        line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("a port in {line:?}"))
    }

    /// Starts Prometheus with `config` on a free loopback port, its log in the scratch directory;
    /// the port.
    fn prometheus(&mut self, config: &str) -> u16 {
        let port = free_port();
        let log = std::fs::File::create(self.dir.join("prometheus.log")).expect("a log file");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={config}"))
            .arg(format!("--storage.tsdb.path={}", self.dir.join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(&self.dir)
            .stdout(log.try_clone().expect("the log again"))
            .stderr(log)
            .spawn()
            .expect("start prometheus (Debian's `prometheus` package; scripts/test.sh installs it)");
        self.children.push(child);
        port
    }

    fn prometheus_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback port nothing listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port").port()
}

/// An answer: status, head (lowercased) and body.
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// One HTTP/1.0 request (so no server answers in chunks) to 127.0.0.1:`port`.
fn try_http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut request =
        format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Length: {}\r\n", body.len());
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    Ok(Answer { status, head: head.to_lowercase(), body: body.to_owned() })
}

/// [`try_http`] to a server that must answer.
fn http(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    try_http(port, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path} on port {port}: {e}"))
}

/// `GET /metrics` of a daemon, in the format `accept` asks for.
fn scrape(port: u16, token: &str, accept: &str) -> Answer {
    let auth = format!("Bearer {token}");
    http(port, "GET", "/metrics", &[("Authorization", &auth), ("Accept", accept)], "")
}

/// `text` with every byte but unreserved ones percent-encoded, for a query string.
fn percent(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The value of the first series PromQL `query` answers on the Prometheus at `port`, if any.
fn query(port: u16, query: &str) -> Option<f64> {
    let answer = try_http(port, "GET", &format!("/api/v1/query?query={}", percent(query)), &[], "").ok()?;
    let json: Value = serde_json::from_str(&answer.body).ok()?;
    json["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

/// Waits (up to [`PROMETHEUS_WAIT`]) until `query` answers a value `ok` accepts; the last value.
fn wait_for(processes: &Processes, port: u16, promql: &str, ok: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + PROMETHEUS_WAIT;
    loop {
        let value = query(port, promql);
        if let Some(value) = value.filter(|v| ok(*v)) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never answered `{promql}` as hoped (last: {value:?}); its log:\n{}",
            processes.prometheus_log()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `promtool check metrics` on `text`: its exit status and what it printed.
fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start promtool");
    child.stdin.take().expect("its stdin").write_all(text.as_bytes()).expect("feed promtool");
    let output = child.wait_with_output().expect("promtool ends");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (output.status.success(), said)
}

/// Three `true` commands on the one node of group `local`.
fn scenario() -> Value {
    json!({
        "name": "metrics",
        "description": "three quick commands on one local node",
        "duration_s": 60,
        "cluster": { "groups": [ { "name": "local", "count": 1, "resources": { "cpu_millis": 1000, "memory_mb": 1024 } } ] },
        "strategy": { "distribution": "least_loaded", "allocation": "first_fit" },
        "workload": { "tasks": [ {
            "name": "quick", "count": 3, "kind": "command", "requires": { "cpu_millis": 100, "memory_mb": 16 },
            "command": { "argv": ["true"], "timeout_s": 30 }
        } ] },
        "faults": [],
        "expect": { "all_tasks_complete": true }
    })
}

#[test]
fn prometheus_scrapes_a_node_and_a_service_and_promtool_passes_their_metrics() {
    let mut processes = Processes::new("metrics");
    let token = "metrics-test-token";
    let token_file = processes.file("token", token);
    let auth = format!("Bearer {token}");
    let data = processes.dir.join("data").to_string_lossy().into_owned();
    let serve = processes.dtest(&["serve", "--listen", "127.0.0.1:0", "--token-file", &token_file, "--data", &data]);
    let workdir = processes.dir.join("work");
    std::fs::create_dir_all(&workdir).expect("a workdir");
    let service = format!("http://127.0.0.1:{serve}");
    let node = processes.dtest(&[
        "node",
        "--listen",
        "127.0.0.1:0",
        "--token-file",
        &token_file,
        "--allow-commands",
        "--group",
        "local",
        "--name",
        "n1",
        "--workdir",
        &workdir.to_string_lossy(),
        "--orchestrator",
        &service,
    ]);

    // One execution on the node, so that its tasks have ended and the service has counted it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(serve, "GET", "/v1/nodes/n1", &[("Authorization", &auth)], "").status != 200 {
        assert!(Instant::now() < deadline, "the node never registered with the service");
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = json!({ "scenario": scenario() }).to_string();
    let headers = [("Authorization", auth.as_str()), ("Content-Type", "application/json")];
    let submitted = http(serve, "POST", "/v1/executions", &headers, &body);
    assert_eq!(submitted.status, 201, "{}", submitted.body);
    let id = serde_json::from_str::<Value>(&submitted.body).expect("JSON")["id"].as_str().expect("an id").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view: Value = serde_json::from_str(
            &http(serve, "GET", &format!("/v1/executions/{id}"), &[("Authorization", &auth)], "").body,
        )
        .expect("an execution view");
        if view["state"] == "succeeded" {
            break;
        }
        assert!(!["failed", "cancelled", "interrupted"].contains(&view["state"].as_str().unwrap_or("")), "{view:#}");
        assert!(Instant::now() < deadline, "the execution never ended: {view:#}");
        std::thread::sleep(Duration::from_millis(200));
    }

    // Both answer OpenMetrics by default, and only to the token.
    for port in [node, serve] {
        let answer = scrape(port, token, "*/*");
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(answer.head.contains("content-type: application/openmetrics-text; version=1.0.0; charset=utf-8"));
        assert!(answer.body.ends_with("# EOF\n"), "{}", answer.body);
        assert_eq!(scrape(port, "not-the-token", "*/*").status, 401);
    }

    // promtool lints the classic text format (its parser reads OpenMetrics' `foo_total` samples
    // of a family `# TYPE foo counter` as another family, without help): both answer in that
    // format to a client that asks for `text/plain` only, and it must pass without a remark.
    for (port, family) in [(node, "dtest_node_tasks_ended_total"), (serve, "dtest_serve_node_probes_total")] {
        let answer = scrape(port, token, "text/plain; version=0.0.4");
        assert!(answer.head.contains("content-type: text/plain; version=0.0.4"), "{}", answer.head);
        assert!(answer.body.contains(&format!("# TYPE {family} counter")), "{}", answer.body);
        let (passed, said) = promtool(&answer.body);
        assert!(passed && said.trim().is_empty(), "promtool check metrics: {said}\n{}", answer.body);
    }

    let config = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n\
         scrape_configs:\n\
         \x20 - job_name: node\n    authorization: {{ type: Bearer, credentials_file: {token_file} }}\n    \
         static_configs: [{{ targets: ['127.0.0.1:{node}'] }}]\n\
         \x20 - job_name: serve\n    authorization: {{ type: Bearer, credentials_file: {token_file} }}\n    \
         static_configs: [{{ targets: ['127.0.0.1:{serve}'] }}]\n"
    );
    let config = processes.file("prometheus.yml", &config);
    let prometheus = processes.prometheus(&config);

    // Prometheus asks for OpenMetrics first: these values went through its OpenMetrics parser.
    let passed =
        wait_for(&processes, prometheus, r#"dtest_node_tasks_ended_total{job="node",outcome="passed"}"#, |v| v >= 3.0);
    assert_eq!(passed, 3.0, "the node ran the execution's three tasks");
    wait_for(&processes, prometheus, r#"dtest_node_heartbeats_sent_total{job="node"}"#, |v| v >= 1.0);
    // The service ended the execution's plan on the node when the execution ended.
    wait_for(&processes, prometheus, r#"dtest_node_plans{job="node"}"#, |v| v == 0.0);
    let ended = r#"dtest_serve_executions_ended_total{job="serve",state="succeeded"}"#;
    assert_eq!(wait_for(&processes, prometheus, ended, |v| v >= 1.0), 1.0);
    wait_for(&processes, prometheus, r#"dtest_serve_node_probes_total{job="serve",node="n1",result="ok"}"#, |v| {
        v >= 1.0
    });
    wait_for(&processes, prometheus, r#"dtest_serve_nodes{job="serve",state="healthy"}"#, |v| v == 1.0);
    for job in ["node", "serve"] {
        wait_for(&processes, prometheus, &format!(r#"up{{job="{job}"}}"#), |v| v == 1.0);
    }
    // And neither scrape failed: Prometheus reports no error for either target.
    let targets: Value =
        serde_json::from_str(&http(prometheus, "GET", "/api/v1/targets", &[], "").body).expect("the targets as JSON");
    let active = targets["data"]["activeTargets"].as_array().expect("active targets");
    assert_eq!(active.len(), 2, "{targets:#}");
    for target in active {
        assert_eq!((target["health"].as_str(), target["lastError"].as_str()), (Some("up"), Some("")), "{target:#}");
    }
    drop(processes);
    assert!(!Path::new(&token_file).exists(), "the scratch directory is removed");
}
