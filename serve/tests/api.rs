//! The service's API in-process, on a real socket: access, typed errors, limits, the ledger's
//! reservations, profiles, alert rules and the OpenAPI document. What needs real node daemons
//! (executions, crash and resume, messages, events) is tested end to end in the CLI's tests.

use std::net::SocketAddr;
use std::path::PathBuf;

use dtest_node::secret::Secret;
use dtest_serve::api::Access;
use serde_json::{Value, json};

const OPERATOR: &str = "operator-token";
const READER: &str = "reader-token";

struct Server {
    base: String,
    client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
    data: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

async fn start(name: &str, rate_per_s: u32) -> Server {
    let data = std::env::temp_dir().join(format!("dtest-serve-api-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    let config = dtest_serve::Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        access: Access { operator: Secret::new(OPERATOR), read_only: Some(Secret::new(READER)), rate_per_s },
        node_token: Secret::new(OPERATOR),
        tls: None,
        node_tls: Default::default(),
        data: data.clone(),
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        dtest_serve::run(
            config,
            move |address| {
                let _ = ready_tx.send(address);
            },
            shutdown,
        )
        .await
        .expect("serves");
    });
    let address = ready_rx.await.expect("the service listens");
    Server {
        base: format!("http://{address}"),
        client: dtest_node::secure::ClientTls::default().http().build().expect("a client"),
        _stop: stop,
        data,
    }
}

impl Server {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("an answer");
        let status = response.status().as_u16();
        let text = response.text().await.expect("a body");
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn register(&self, name: &str, cpu_millis: u64) {
        let info = json!({
            "version": "test", "incarnation": 1, "group": null, "region": null, "zone": null, "capabilities": [],
            "resources": { "cpu_millis": cpu_millis, "memory_mb": 1024 }, "resources_detected": false,
            "allow_commands": false
        });
        let body = json!({ "name": name, "url": "http://127.0.0.1:9", "info": info, "labels": { "rack": "r1" } });
        let (status, answer) = self.call(reqwest::Method::POST, "/v1/nodes", Some(OPERATOR), Some(body)).await;
        assert_eq!(status, 201, "{answer}");
    }
}

/// A POST written by hand, so that a body the service refuses before reading it all still gets
/// its answer read: the status and the whole response.
fn raw_post(base: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let address = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: Bearer {OPERATOR}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).expect("the head");
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let text = String::from_utf8_lossy(&response).into_owned();
    (text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0), text)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("a runtime")
}

fn code(answer: &Value) -> &str {
    answer["error"]["code"].as_str().unwrap_or_else(|| panic!("a typed error body: {answer}"))
}

#[test]
fn tokens_roles_and_typed_errors() {
    runtime().block_on(async {
        let server = start("access", 0).await;
        let health = server.client.get(format!("{}/healthz", server.base)).send().await.expect("healthz");
        assert_eq!(health.text().await.expect("text"), "ok");
        let (status, answer) = server.call(reqwest::Method::GET, "/v1/nodes", None, None).await;
        assert_eq!((status, code(&answer)), (401, "unauthorized"));
        let (status, answer) = server.call(reqwest::Method::GET, "/v1/nodes", Some("wrong"), None).await;
        assert_eq!((status, code(&answer)), (401, "unauthorized"));
        let (status, _) = server.call(reqwest::Method::GET, "/v1/cluster", Some(READER), None).await;
        assert_eq!(status, 200);
        let (status, answer) =
            server.call(reqwest::Method::POST, "/v1/allocations", Some(READER), Some(json!({}))).await;
        assert_eq!((status, code(&answer)), (403, "forbidden"));
        let (status, answer) = server.call(reqwest::Method::GET, "/v1/executions/nope", Some(OPERATOR), None).await;
        assert_eq!((status, code(&answer)), (404, "not_found"));
        // Malformed JSON, an unknown field, a body over the limit.
        let response = server
            .client
            .post(format!("{}/v1/executions", server.base))
            .bearer_auth(OPERATOR)
            .header("content-type", "application/json")
            .body("{not json")
            .send()
            .await
            .expect("an answer");
        assert_eq!(response.status().as_u16(), 400);
        let (status, answer) = server
            .call(reqwest::Method::POST, "/v1/executions", Some(OPERATOR), Some(json!({ "scenario": {}, "x": 1 })))
            .await;
        assert_eq!(status, 422, "{answer}");
        let (status, answer) = raw_post(&server.base, "/v1/executions", &vec![b' '; 5 << 20]);
        assert_eq!(status, 413, "{answer}");
        assert!(answer.contains(r#""code":"too_large""#), "{answer}");
        // A scenario the parser refuses names the field.
        let (status, answer) = server
            .call(reqwest::Method::POST, "/v1/executions", Some(OPERATOR), Some(json!({ "scenario": { "name": 3 } })))
            .await;
        assert_eq!(status, 422, "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap_or("").contains("name"), "{answer}");
        // No node yet: nothing to run on.
        let scenario: Value =
            serde_json::from_str(&std::fs::read_to_string("../scenarios/sharded-tests.json").expect("scenario"))
                .expect("json");
        let (status, answer) = server
            .call(reqwest::Method::POST, "/v1/executions", Some(OPERATOR), Some(json!({ "scenario": scenario })))
            .await;
        assert_eq!((status, code(&answer)), (409, "conflict"), "{answer}");
    });
}

#[test]
fn allocations_are_reservations_a_later_one_cannot_take() {
    runtime().block_on(async {
        let server = start("allocations", 0).await;
        server.register("a", 1000).await;
        let ask = |cpu: u64| json!({ "resources": { "cpu_millis": cpu, "memory_mb": 100 }, "holder": "test" });
        let (status, first) =
            server.call(reqwest::Method::POST, "/v1/allocations", Some(OPERATOR), Some(ask(600))).await;
        assert_eq!(status, 201, "{first}");
        assert_eq!(first["node"], "a");
        let (status, refused) =
            server.call(reqwest::Method::POST, "/v1/allocations", Some(OPERATOR), Some(ask(600))).await;
        assert_eq!((status, code(&refused)), (409, "conflict"), "{refused}");
        let (_, utilization) = server.call(reqwest::Method::GET, "/v1/utilization", Some(OPERATOR), None).await;
        assert_eq!(utilization["nodes"][0]["reserved"]["cpu_millis"], 600, "{utilization}");
        assert_eq!(utilization["nodes"][0]["free"]["cpu_millis"], 400, "{utilization}");
        let (_, node) = server.call(reqwest::Method::GET, "/v1/nodes/a", Some(OPERATOR), None).await;
        assert_eq!(node["reserved"]["cpu_millis"], 600, "{node}");
        assert_eq!(node["labels"]["rack"], "r1", "{node}");
        let path = format!("/v1/allocations/{}", first["id"].as_str().expect("an id"));
        let (status, _) = server.call(reqwest::Method::DELETE, &path, Some(OPERATOR), None).await;
        assert_eq!(status, 204);
        let (status, _) = server.call(reqwest::Method::DELETE, &path, Some(OPERATOR), None).await;
        assert_eq!(status, 404);
        let (status, again) =
            server.call(reqwest::Method::POST, "/v1/allocations", Some(OPERATOR), Some(ask(600))).await;
        assert_eq!(status, 201, "released resources can be taken again: {again}");
    });
}

#[test]
fn profiles_and_alert_rules_are_checked_by_the_core_s_rules() {
    runtime().block_on(async {
        let server = start("profiles", 0).await;
        let good = json!({ "pattern": { "type": "constant", "rps": 50, "duration_s": 10 }, "description": "steady" });
        let (status, answer) =
            server.call(reqwest::Method::PUT, "/v1/load/profiles/steady", Some(OPERATOR), Some(good)).await;
        assert_eq!(status, 204, "{answer}");
        let bad = json!({ "pattern": { "type": "sawtooth" } });
        let (status, answer) =
            server.call(reqwest::Method::PUT, "/v1/load/profiles/bad", Some(OPERATOR), Some(bad)).await;
        assert_eq!(status, 422, "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap_or("").contains("pattern"), "{answer}");
        let (_, profiles) = server.call(reqwest::Method::GET, "/v1/load/profiles", Some(READER), None).await;
        assert_eq!(profiles[0]["name"], "steady", "{profiles}");
        let (status, answer) = server
            .call(
                reqwest::Method::POST,
                "/v1/load",
                Some(OPERATOR),
                Some(json!({ "url": "http://127.0.0.1:9/", "profile": "nope" })),
            )
            .await;
        assert_eq!((status, code(&answer)), (404, "not_found"), "{answer}");
        let rules = json!({ "rules": [ { "name": "r", "metric": "temperature", "comparison": ">", "threshold": 1 } ] });
        let (status, answer) = server.call(reqwest::Method::PUT, "/v1/alerts/rules", Some(OPERATOR), Some(rules)).await;
        assert_eq!(status, 422);
        assert!(answer["error"]["message"].as_str().unwrap_or("").contains("rules[0].metric"), "{answer}");
        let rules =
            json!({ "rules": [ { "name": "down", "metric": "nodes_dead", "comparison": ">", "threshold": 0 } ] });
        let (status, _) = server.call(reqwest::Method::PUT, "/v1/alerts/rules", Some(OPERATOR), Some(rules)).await;
        assert_eq!(status, 204);
        let (status, _) = server.call(reqwest::Method::POST, "/v1/alerts/77/ack", Some(OPERATOR), None).await;
        assert_eq!(status, 404);
    });
}

/// `GET /metrics` with `token` and `accept`: the status, the content type and the body.
async fn scrape(server: &Server, token: &str, accept: &str) -> (u16, String, String) {
    let request = server.client.get(format!("{}/metrics", server.base)).bearer_auth(token).header("accept", accept);
    let answer = request.send().await.expect("an answer");
    let content_type = answer.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    (answer.status().as_u16(), content_type, answer.text().await.expect("a body"))
}

/// The value of the sample `series` (name and labels) in an exposition.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_show_each_node_s_probes_and_health_and_the_alerts_firing() {
    runtime().block_on(async {
        let server = start("metrics", 0).await;
        // Nothing listens on port 9: every probe fails.
        server.register("a", 1000).await;
        server.register("b", 1000).await;
        let rules = json!({ "rules": [
            { "name": "any \"score\"", "metric": "score", "comparison": "<=", "threshold": 100, "severity": "critical" },
            { "name": "never", "metric": "nodes_dead", "comparison": ">", "threshold": 1000 },
        ] });
        let (status, _) = server.call(reqwest::Method::PUT, "/v1/alerts/rules", Some(OPERATOR), Some(rules)).await;
        assert_eq!(status, 204);
        let openmetrics = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5";
        let mut text = String::new();
        for _ in 0..100 {
            let (status, content_type, body) = scrape(&server, READER, openmetrics).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(content_type, "application/openmetrics-text; version=1.0.0; charset=utf-8");
            text = body;
            let failed = sample(&text, r#"dtest_serve_node_probes_total{node="a",result="failed"}"#);
            if failed.is_some_and(|n| n >= 2.0) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(sample(&text, r#"dtest_serve_node_probes_total{node="a",result="failed"}"#) >= Some(2.0), "{text}");
        assert_eq!(sample(&text, r#"dtest_serve_node_probes_total{node="a",result="ok"}"#), Some(0.0), "{text}");
        assert!(sample(&text, r#"dtest_serve_node_score{node="b"}"#).is_some(), "{text}");
        assert!(sample(&text, r#"dtest_serve_node_phi{node="a"}"#).is_some_and(|phi| phi >= 0.0), "{text}");
        // A rule name with quotes in it is escaped, not a broken line.
        let any = r#"dtest_serve_alerts_firing{rule="any \"score\"",severity="critical"}"#;
        assert_eq!(sample(&text, any), Some(2.0), "{text}");
        assert_eq!(sample(&text, r#"dtest_serve_alerts_firing{rule="never",severity="warning"}"#), Some(0.0), "{text}");
        assert_eq!(sample(&text, r#"dtest_serve_executions{state="running"}"#), Some(0.0), "{text}");
        assert_eq!(sample(&text, r#"dtest_serve_executions_ended_total{state="succeeded"}"#), Some(0.0), "{text}");
        assert_eq!(sample(&text, "dtest_serve_node_series_omitted"), Some(0.0), "{text}");

        let (status, content_type, classic) = scrape(&server, OPERATOR, "text/plain").await;
        assert_eq!((status, content_type.as_str()), (200, "text/plain; version=0.0.4; charset=utf-8"));
        assert!(classic.contains("# TYPE dtest_serve_node_probes_total counter\n") && !classic.contains("# EOF"));
        let (status, _, body) = scrape(&server, "wrong", openmetrics).await;
        assert_eq!(status, 401, "{body}");
    });
}

#[test]
fn a_client_over_its_rate_gets_429() {
    runtime().block_on(async {
        let server = start("rate", 5).await;
        let mut statuses = Vec::new();
        for _ in 0..30 {
            statuses.push(server.call(reqwest::Method::GET, "/v1/cluster", Some(OPERATOR), None).await.0);
        }
        assert_eq!(statuses[0], 200);
        assert!(statuses.contains(&429), "{statuses:?}");
    });
}

#[test]
fn the_openapi_document_is_3_1_and_has_every_contract_route() {
    let document: Value = serde_json::from_str(&dtest_serve::api::document()).expect("JSON");
    assert_eq!(document["openapi"], "3.1.0");
    let routes = [
        ("post", "/v1/nodes"),
        ("get", "/v1/nodes"),
        ("get", "/v1/nodes/{id}"),
        ("post", "/v1/executions"),
        ("get", "/v1/executions"),
        ("get", "/v1/executions/{id}"),
        ("post", "/v1/executions/{id}/cancel"),
        ("get", "/v1/executions/{id}/report"),
        ("post", "/v1/load"),
        ("post", "/v1/load/{id}/stop"),
        ("get", "/v1/executions/{id}/metrics"),
        ("put", "/v1/load/profiles/{name}"),
        ("get", "/v1/load/profiles"),
        ("get", "/v1/cluster"),
        ("put", "/v1/alerts/rules"),
        ("get", "/v1/alerts"),
        ("post", "/v1/alerts/{id}/ack"),
        ("post", "/v1/allocations"),
        ("delete", "/v1/allocations/{id}"),
        ("get", "/v1/utilization"),
        ("post", "/v1/messages"),
        ("post", "/v1/messages/broadcast"),
        ("get", "/v1/connections"),
        ("get", "/v1/events"),
        ("get", "/metrics"),
    ];
    for (method, path) in routes {
        assert!(document["paths"][path][method].is_object(), "{method} {path} is in the document");
    }
}

#[test]
fn a_second_service_on_the_same_data_directory_is_refused_clearly() {
    runtime().block_on(async {
        let server = start("locked", 0).await;
        let config = dtest_serve::Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            access: Access { operator: Secret::new(OPERATOR), read_only: None, rate_per_s: 0 },
            node_token: Secret::new(OPERATOR),
            tls: None,
            node_tls: Default::default(),
            data: server.data.clone(),
        };
        let error = dtest_serve::run(config, |_| {}, std::future::pending()).await.expect_err("refused");
        assert!(error.to_string().contains("another"), "{error}");
    });
}

#[test]
fn an_execution_that_cannot_be_resumed_is_marked_interrupted_never_left_running() {
    use dtest_serve::store::{ExecutionKind, ExecutionRow, Store};

    let data = std::env::temp_dir().join(format!("dtest-serve-api-unresumable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&data);
    {
        // What a service that died mid-run left: a running execution whose scenario no longer
        // parses (say, a newer dtest wrote it).
        let store = Store::open(&data).expect("a store");
        let row = ExecutionRow {
            id: "gone-1".to_owned(),
            name: "gone".to_owned(),
            kind: ExecutionKind::Scenario,
            state: "running".to_owned(),
            created_ms: 1,
            started_ms: Some(2),
            finished_ms: None,
            seed: 1,
            request: r#"{"kind":"scenario","scenario":{"name":"gone","unknown_field":true},"seed":1}"#.to_owned(),
            setup: Some(r#"{"id":"gone-1","nodes":[]}"#.to_owned()),
            report: None,
            summary: None,
        };
        store.insert_execution(&row).expect("insert");
    }
    runtime().block_on(async {
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<SocketAddr>();
        let config = dtest_serve::Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            access: Access { operator: Secret::new(OPERATOR), read_only: None, rate_per_s: 0 },
            node_token: Secret::new(OPERATOR),
            tls: None,
            node_tls: Default::default(),
            data: data.clone(),
        };
        tokio::spawn(dtest_serve::run(
            config,
            move |address| {
                let _ = ready_tx.send(address);
            },
            std::future::pending(),
        ));
        let address = ready_rx.await.expect("the service listens");
        let execution: Value = dtest_node::secure::ClientTls::default()
            .http()
            .build()
            .expect("a client")
            .get(format!("http://{address}/v1/executions/gone-1"))
            .bearer_auth(OPERATOR)
            .send()
            .await
            .expect("an answer")
            .json()
            .await
            .expect("JSON");
        assert_eq!(execution["state"], "interrupted", "{execution}");
        let why = execution["summary"]["error"].as_str().unwrap_or("");
        assert!(why.contains("could not resume") && why.contains("unknown_field"), "{execution}");
    });
    let _ = std::fs::remove_dir_all(&data);
}

#[test]
fn a_locked_database_is_a_clear_503_and_the_service_recovers_when_it_is_released() {
    runtime().block_on(async {
        let server = start("busy", 0).await;
        let profile = json!({ "pattern": { "type": "constant", "rps": 5, "duration_s": 5 } });
        // Another process holds the database's write lock.
        let other = rusqlite::Connection::open(server.data.join("dtest.sqlite3")).expect("open the database");
        other.execute_batch("BEGIN EXCLUSIVE").expect("take the write lock");
        let (status, answer) =
            server.call(reqwest::Method::PUT, "/v1/load/profiles/p", Some(OPERATOR), Some(profile.clone())).await;
        assert_eq!((status, code(&answer)), (503, "storage_busy"), "{answer}");
        assert!(answer["error"]["message"].as_str().unwrap_or("").contains("locked"), "{answer}");
        // Reads go on meanwhile.
        let (status, _) = server.call(reqwest::Method::GET, "/v1/load/profiles", Some(OPERATOR), None).await;
        assert_eq!(status, 200);
        other.execute_batch("COMMIT").expect("release it");
        let (status, answer) =
            server.call(reqwest::Method::PUT, "/v1/load/profiles/p", Some(OPERATOR), Some(profile)).await;
        assert_eq!(status, 204, "{answer}");
    });
}

/// Health checks, one after another, until `busy` ends; how many were answered.
async fn health_checks_until<T>(server: &Server, busy: &tokio::task::JoinHandle<T>, then: impl FnOnce()) -> usize {
    let mut answered = 0;
    let mut then = Some(then);
    while !busy.is_finished() {
        let (status, _) = server.call(reqwest::Method::GET, "/healthz", None, None).await;
        assert_eq!(status, 200);
        answered += 1;
        if let Some(then) = then.take_if(|_| answered == 5) {
            then();
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    answered
}

#[test]
fn a_request_waiting_on_a_locked_database_stalls_no_other_request() {
    // One worker: were a store call, or a request for the service's state while an allocation
    // holds it waiting for the store, to block it, nothing else could be served until the store
    // gave up (the 2 s busy timeout), the health checks included.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("runtime");
    runtime.block_on(async {
        let server = std::sync::Arc::new(start("stall", 0).await);
        server.register("n1", 4000).await;
        let other = rusqlite::Connection::open(server.data.join("dtest.sqlite3")).expect("open the database");
        other.execute_batch("BEGIN EXCLUSIVE").expect("take the write lock");
        let call = |method: reqwest::Method, path: &'static str, body: Option<Value>| {
            let server = server.clone();
            tokio::spawn(async move { server.call(method, path, Some(OPERATOR), body).await })
        };
        // A write that waits for the database.
        let profile = json!({ "pattern": { "type": "constant", "rps": 5, "duration_s": 5 } });
        let write = call(reqwest::Method::PUT, "/v1/load/profiles/p", Some(profile));
        let answered = health_checks_until(&server, &write, || {}).await;
        assert!(answered >= 10, "only {answered} health checks were answered while a write waited");
        let (status, answer) = write.await.expect("the write");
        assert_eq!((status, code(&answer)), (503, "storage_busy"), "{answer}");
        // An allocation that waits for it holding the service's state, which a read then needs.
        let allocation = json!({ "resources": { "cpu_millis": 500, "memory_mb": 64 } });
        let allocate = call(reqwest::Method::POST, "/v1/allocations", Some(allocation));
        let mut nodes = None;
        let answered =
            health_checks_until(&server, &allocate, || nodes = Some(call(reqwest::Method::GET, "/v1/nodes", None)))
                .await;
        assert!(answered >= 10, "only {answered} health checks were answered while an allocation waited");
        let (status, answer) = allocate.await.expect("the allocation");
        assert_eq!((status, code(&answer)), (503, "storage_busy"), "{answer}");
        let (status, answer) = nodes.expect("the read was sent").await.expect("the read");
        assert_eq!(status, 200, "{answer}");
        other.execute_batch("COMMIT").expect("release it");
    });
}
