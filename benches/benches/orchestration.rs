//! One orchestration step per event: a result arrives, its capacity is freed, the task is
//! requeued and placed again, with acknowledgements flowing both ways. Target (issue 4): for
//! 1,000 nodes with 10,000 tasks in flight, O(log n) per event; the 10,000-node case (100,000
//! in flight) shows how the cost grows.

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use dtest_core::placement::{Amounts, CapSet, Locality, NodeIdx, NodeSpec, Placer, Pool, Request, TaskKey};
use dtest_core::protocol::{
    Attempt, DeliveryMode, Event, Frame, Incarnation, Orchestrator, OrchestratorConfig, Outcome, Packet, TaskId,
    TaskInput, ToOrchestrator,
};
use dtest_core::scenario::{Allocation, Distribution, Weights};

struct Cluster {
    orchestrator: Orchestrator,
    /// Leases in flight: (node, task, attempt).
    leases: Vec<(NodeIdx, TaskId, Attempt)>,
    next_id: Vec<u64>,
    turn: usize,
}

fn amounts(cpu: u32) -> Amounts {
    let mut a = Amounts::ZERO;
    a.0[0] = cpu;
    a
}

impl Cluster {
    fn new(nodes: usize) -> Cluster {
        let pool = Pool::new(
            (0..nodes)
                .map(|_| NodeSpec { capacity: amounts(10_000), capabilities: CapSet(0), region: None, zone: None })
                .collect(),
        );
        let placer = Placer::new(&pool, Distribution::LeastLoaded, Allocation::BestFit, Weights::default(), false, 1);
        let tasks = (0..nodes * 10)
            .map(|i| TaskInput {
                request: Request {
                    task: TaskKey(0),
                    spec: None,
                    amounts: amounts(1_000),
                    capabilities: CapSet(0),
                    priority: 0,
                    locality: Locality::default(),
                    now_ms: 0,
                    until_ms: None,
                },
                work: i as u32,
                timeout_ms: 3_600_000,
                max_attempts: 3,
                stage: 0,
            })
            .collect();
        let orchestrator = Orchestrator::new(pool, placer, tasks, OrchestratorConfig::default(), 1);
        let mut cluster = Cluster { orchestrator, leases: Vec::new(), next_id: vec![1; nodes], turn: 0 };
        for node in 0..nodes {
            let hello = ToOrchestrator::Hello { incarnation: Incarnation(1) };
            cluster.deliver(node, DeliveryMode::AtLeastOnce, hello);
        }
        // Place everything: tick until the whole cluster is leased.
        while cluster.leases.len() < nodes * 10 {
            cluster.orchestrator.tick(0);
            cluster.drain();
        }
        cluster
    }

    fn deliver(&mut self, node: usize, mode: DeliveryMode, body: ToOrchestrator) {
        let id = self.next_id[node];
        self.next_id[node] += 1;
        let packet = Packet { session: 1, id, floor: id, mode, body };
        self.orchestrator.handle(0, NodeIdx(node as u32), Frame::Data(packet));
    }

    /// Acknowledges everything the orchestrator sent and records new leases.
    fn drain(&mut self) {
        while let Some((node, frame)) = self.orchestrator.poll_transmit() {
            if let Frame::Data(packet) = frame {
                self.orchestrator.handle(0, node, Frame::Ack { session: packet.session, id: packet.id });
            }
        }
        while let Some(event) = self.orchestrator.poll_event() {
            if let Event::Assigned { task, attempt, node, .. } = event {
                self.leases.push((node, task, attempt));
            }
        }
    }

    /// One event: a lease's result arrives (cancelled without a request, so the task is
    /// requeued at once), then a tick places it again.
    fn step(&mut self) {
        let (node, task, attempt) = self.leases.swap_remove(self.turn % self.leases.len());
        self.turn += 1;
        let finished = ToOrchestrator::Finished {
            incarnation: Incarnation(1),
            task,
            attempt,
            outcome: Outcome::Cancelled,
            load: None,
        };
        self.deliver(node.0 as usize, DeliveryMode::ExactlyOnce, finished);
        self.orchestrator.tick(0);
        self.drain();
    }
}

fn orchestration(c: &mut Criterion) {
    let mut group = c.benchmark_group("orchestration");
    group.throughput(Throughput::Elements(1_000));
    for nodes in [1_000, 10_000] {
        let cluster = Cluster::new(nodes);
        group.bench_function(format!("result-and-replace/{nodes}-nodes-{}-in-flight", nodes * 10), |b| {
            b.iter_batched_ref(
                || Cluster {
                    orchestrator: cluster.orchestrator.clone(),
                    leases: cluster.leases.clone(),
                    next_id: cluster.next_id.clone(),
                    turn: 0,
                },
                |cluster| {
                    for _ in 0..1_000 {
                        cluster.step();
                    }
                },
                BatchSize::LargeInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, orchestration);
criterion_main!(benches);
