//! The node daemon's targets (issue 6), against real `dtest node` processes on loopback:
//! idle RSS ≤ 20 MB, a heartbeat ≤ 512 bytes on the wire, and 1,000 assignments dispatched to
//! 4 nodes with p99 ≤ 50 ms from decision to acknowledgement. Lives beside the binary it starts
//! (`CARGO_BIN_EXE_dtest` exists only for the binary's own package).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use dtest_core::protocol::{Attempt, DeliveryMode, Frame, Packet, TaskId, ToAgent};
use dtest_node::api::{Exchange, Plan, PlanEntry, PlanWork};
use dtest_node::client::NodeClient;
use dtest_node::secret::Secret;

const TOKEN: &str = "bench-token";
const NODES: usize = 4;
const ASSIGNMENTS: u64 = 1_000;

struct Daemon(Child, u16);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(token_file: &str) -> Daemon {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dtest"))
        .args(["node", "--listen", "127.0.0.1:0", "--token-file", token_file])
        .args(["--resources", "cpu_millis=1000000,memory_mb=1000000"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start dtest node");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout")).read_line(&mut line).expect("the address line");
    let port = line.trim().rsplit(':').next().and_then(|p| p.parse().ok()).expect("a port");
    Daemon(child, port)
}

fn rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The whole HTTP response carrying the node's frames, as bytes on the wire.
fn raw_exchange(port: u16, plan: &str, frames: &str) -> Vec<u8> {
    let body = format!(r#"{{"plan": "{plan}", "frames": [{frames}], "wait_ms": 3000}}"#);
    let mut stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    let head = format!(
        "POST /v1/exchange HTTP/1.1\r\nHost: n\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes())).expect("send");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).expect("read");
    response
}

fn plan(id: &str) -> Plan {
    // Work the nodes refuse at once (no --allow-commands): dispatch is measured, not execution.
    let work = PlanWork::Command { argv: vec!["true".to_owned()], env: Default::default(), cwd: None };
    Plan {
        id: id.to_owned(),
        entries: vec![PlanEntry { name: "t".to_owned(), count: ASSIGNMENTS as u32, work }],
        elapsed_ms: 0,
    }
}

fn node(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("dtest-bench-node-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let token_file = dir.join("token");
    std::fs::write(&token_file, TOKEN).expect("token");
    let daemons: Vec<Daemon> = (0..NODES).map(|_| start(&token_file.to_string_lossy())).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let clients: Vec<NodeClient> = daemons
        .iter()
        .map(|d| NodeClient::new(&format!("http://127.0.0.1:{}", d.1), &Secret::new(TOKEN), &Default::default()))
        .collect();

    std::thread::sleep(Duration::from_secs(2));
    eprintln!("node: idle RSS {} kB (target <= 20480 kB)", rss_kb(daemons[0].0.id()));

    // A heartbeat on the wire: the first long poll after the plan carries the hello (and maybe
    // a heartbeat); once the hello is acknowledged, the next poll carries one heartbeat alone.
    runtime.block_on(clients[0].put_plan(&plan("wire"))).expect("plan");
    let session = runtime.block_on(clients[0].info(Duration::from_secs(5))).expect("info").incarnation;
    let _ = raw_exchange(daemons[0].1, "wire", "");
    let ack = format!(r#"{{"ack": {{"session": {session}, "id": 1}}}}"#);
    let mut response = raw_exchange(daemons[0].1, "wire", &ack);
    while !String::from_utf8_lossy(&response).contains("\"heartbeat\"") {
        response = raw_exchange(daemons[0].1, "wire", "");
    }
    let text = String::from_utf8_lossy(&response);
    assert_eq!(text.matches("\"data\"").count(), 1, "one frame: {text}");
    eprintln!("node: a heartbeat is {} bytes on the wire with its HTTP response (target <= 512)", response.len());

    let mut round = 0u64;
    let mut latencies: Vec<Duration> = Vec::new();
    c.bench_function("dispatch 1,000 assignments to 4 nodes", |b| {
        b.iter(|| {
            round += 1;
            let id = format!("round-{round}");
            latencies.extend(runtime.block_on(dispatch(&clients, &plan(&id))));
        });
    });
    latencies.sort_unstable();
    if !latencies.is_empty() {
        let q = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
        eprintln!(
            "node: decision to acknowledgement over {} assignments: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (target p99 <= 50 ms)",
            latencies.len(),
            q(0.5),
            q(0.99),
            q(1.0)
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Gives every node a fresh plan (a new agent life), then decides 1,000 assignments in ten
/// waves of 100, 10 ms apart, as placement passes would, and sends each node's share in batches
/// of whatever is queued, as `dtest run` does; each latency runs from its wave's decision to
/// the acknowledgement coming back.
async fn dispatch(clients: &[NodeClient], plan: &Plan) -> Vec<Duration> {
    let mut sessions = Vec::new();
    for client in clients {
        client.put_plan(plan).await.expect("plan");
        sessions.push(client.info(Duration::from_secs(5)).await.expect("info").incarnation);
    }
    let mut senders = Vec::new();
    let mut handles = Vec::new();
    for (n, client) in clients.iter().enumerate() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(Instant, Frame<ToAgent>)>();
        senders.push(tx);
        let client = client.clone();
        let plan_id = plan.id.clone();
        let session = sessions[n];
        handles.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while let Some(first) = rx.recv().await {
                let mut batch = vec![first];
                while let Ok(next) = rx.try_recv() {
                    batch.push(next);
                }
                let decided: std::collections::BTreeMap<u64, Instant> = batch
                    .iter()
                    .filter_map(|(t, f)| match f {
                        Frame::Data(p) => Some((p.id, *t)),
                        Frame::Ack { .. } => None,
                    })
                    .collect();
                let frames = batch.into_iter().map(|(_, f)| f).collect();
                let reply =
                    client.exchange(&Exchange { plan: plan_id.clone(), frames, wait_ms: 0 }).await.expect("exchange");
                let now = Instant::now();
                for frame in reply.frames {
                    if let Frame::Ack { session: s, id } = frame
                        && s == session
                        && let Some(t) = decided.get(&id)
                    {
                        latencies.push(now - *t);
                    }
                }
            }
            latencies
        }));
    }
    let mut next_id = vec![0u64; clients.len()];
    for wave in 0..10 {
        let decided = Instant::now();
        for i in 0..ASSIGNMENTS / 10 {
            let task = wave * (ASSIGNMENTS / 10) + i;
            let n = task as usize % clients.len();
            next_id[n] += 1;
            let body =
                ToAgent::Assign { task: TaskId(task), attempt: Attempt(1), work: task as u32, timeout_ms: 60_000 };
            let frame = Frame::Data(Packet {
                session: sessions[n],
                id: next_id[n],
                floor: 1,
                mode: DeliveryMode::ExactlyOnce,
                body,
            });
            let _ = senders[n].send((decided, frame));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(senders);
    let mut all = Vec::new();
    for handle in handles {
        all.extend(handle.await.expect("a sender"));
    }
    assert_eq!(all.len() as u64, ASSIGNMENTS, "every assignment acknowledged");
    all
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5));
    targets = node
}
criterion_main!(benches);
