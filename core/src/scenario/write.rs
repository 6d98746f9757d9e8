//! The reverse of `build`: a validated [`Scenario`] back into the scenario file a user would
//! write, so that a scenario made by a program (the minimal failing case `dtest sim --shrink`
//! finds) can be saved, read, edited and replayed like any other. [`to_json`] of a scenario
//! that [`super::parse`] built parses back into an equal scenario.
//!
//! Times are whole milliseconds in the model and seconds in the file; `ms / 1000` written as the
//! shortest decimal that reads back as the same `f64`, then rounded to a millisecond by `build`,
//! is the same millisecond again.

use super::file::*;
use super::*;

/// The scenario file of `scenario`: every field the model holds; an optional section or field
/// the model holds at its default (strategy weights, a target's TLS, a task's attempts) is left
/// out, as a person would leave it out.
pub fn to_file(scenario: &Scenario) -> ScenarioFile {
    ScenarioFile {
        schema: None,
        name: scenario.name.clone(),
        description: scenario.description.clone(),
        duration_s: seconds(scenario.duration_ms),
        cluster: ClusterFile { groups: scenario.groups.iter().map(group).collect() },
        strategy: strategy(&scenario.strategy),
        targets: scenario.targets.iter().map(|t| (t.name.clone(), target(t))).collect(),
        workload: WorkloadFile {
            mode: scenario.workload.mode,
            tasks: scenario.workload.tasks.iter().map(|t| task(scenario, t)).collect(),
        },
        reservations: scenario.reservations.iter().map(|r| reservation(scenario, r)).collect(),
        faults: scenario.faults.iter().map(|f| fault(scenario, f)).collect(),
        expect: expect(&scenario.expect),
        alerts: scenario.alerts.iter().map(alert).collect(),
        failure_detector: failure_detector(&scenario.failure_detector),
        retry: RetryFile {
            max_attempts: u64::from(scenario.retry.max_attempts),
            backoff_base_ms: scenario.retry.backoff_base_ms,
            backoff_cap_ms: scenario.retry.backoff_cap_ms,
        },
    }
}

/// [`to_file`] as pretty JSON with a trailing newline: the text of a scenario file.
pub fn to_json(scenario: &Scenario) -> String {
    // Every value of a `ScenarioFile` serializes (string keys, finite numbers from a model that
    // holds no NaN), so this cannot fail; an empty document would be refused by `parse` anyway.
    let mut text = serde_json::to_string_pretty(&to_file(scenario)).unwrap_or_default();
    text.push('\n');
    text
}

/// Milliseconds as the seconds a file holds.
fn seconds(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

fn group(g: &Group) -> GroupFile {
    GroupFile {
        name: g.name.clone(),
        count: u64::from(g.count),
        region: g.region.clone(),
        zone: g.zone.clone(),
        resources: g.resources.as_ref().map(resources),
        capabilities: g.capabilities.clone(),
    }
}

fn resources(r: &Resources) -> ResourcesFile {
    ResourcesFile {
        cpu_millis: r.cpu_millis,
        memory_mb: r.memory_mb,
        disk_mb: r.disk_mb,
        net_mbps: r.net_mbps,
        gpus: r.gpus,
        custom: r.custom.iter().map(|(name, &units)| (name.clone(), CustomUnits(units))).collect(),
    }
}

/// The strategy; weights only when they are not the defaults the file leaves out.
fn strategy(s: &Strategy) -> StrategyFile {
    let w = &s.weights;
    StrategyFile {
        distribution: s.distribution,
        allocation: s.allocation,
        weights: (*w != Weights::default()).then_some(WeightsFile {
            free_resources: w.free_resources,
            health: w.health,
            load: w.load,
            locality: w.locality,
        }),
        preemption: s.preemption,
    }
}

fn target(t: &Target) -> TargetFile {
    TargetFile {
        url: t.url.clone(),
        sim: t.sim.as_ref().map(|s| TargetSimFile {
            latency_ms: LatencyFile { p50: s.latency_p50_ms, p99: s.latency_p99_ms },
            capacity_rps: s.capacity_rps,
            error_rate: s.error_rate,
        }),
        // No `tls` section is the same as the default one, and checked less.
        tls: (t.tls != TargetTls::default())
            .then(|| TlsFile { ca_file: t.tls.ca_file.clone(), insecure: t.tls.insecure }),
    }
}

fn task(scenario: &Scenario, t: &TaskSpec) -> TaskFile {
    let mut file = TaskFile {
        name: t.name.clone(),
        count: u64::from(t.count),
        kind: TaskKind::Command,
        priority: u64::from(t.priority),
        requires: resources(&t.requires),
        capabilities: t.capabilities.clone(),
        locality: t.locality.as_ref().map(|l| LocalityFile {
            region: l.region.clone(),
            zone: l.zone.clone(),
            strict: l.strict,
        }),
        command: None,
        load: None,
        sim: None,
        // The retry policy's attempts are the default of every task; only a task's own is written.
        max_attempts: (t.max_attempts != scenario.retry.max_attempts).then_some(u64::from(t.max_attempts)),
    };
    match &t.work {
        Work::Command { command, sim } => {
            file.command = command.as_ref().map(|c| CommandFile {
                argv: c.argv.clone(),
                timeout_s: seconds(c.timeout_ms),
                env: c.env.clone(),
                cwd: c.cwd.clone(),
            });
            file.sim = sim.as_ref().map(|s| TaskSimFile {
                duration_ms: DurationDistFile { mean: s.duration_mean_ms, stddev: s.duration_stddev_ms },
                fail_rate: s.fail_rate,
            });
        }
        Work::Load(l) => {
            file.kind = TaskKind::Load;
            file.load = Some(load(scenario, l));
        }
    }
    file
}

fn load(scenario: &Scenario, l: &Load) -> LoadFile {
    LoadFile {
        target: scenario.targets.get(l.target.0 as usize).map(|t| t.name.clone()).unwrap_or_default(),
        pattern: pattern(&l.pattern),
        start_s: seconds(l.start_ms),
        timeout_ms: l.timeout_ms as f64,
        connections: u64::from(l.connections),
        method: l.method,
        headers: l.headers.clone(),
        body: l.body.clone(),
        http_version: l.http_version,
    }
}

fn pattern(p: &Pattern) -> PatternFile {
    let s = |ms: u64| seconds(ms);
    match *p {
        Pattern::Constant { rps, duration_ms } => PatternFile::Constant { rps, duration_s: s(duration_ms) },
        Pattern::Ramp { from_rps, to_rps, duration_ms } => {
            PatternFile::Ramp { from_rps, to_rps, duration_s: s(duration_ms) }
        }
        Pattern::Spike { base_rps, spike_rps, spike_at_ms, spike_duration_ms, duration_ms } => PatternFile::Spike {
            base_rps,
            spike_rps,
            spike_at_s: s(spike_at_ms),
            spike_duration_s: s(spike_duration_ms),
            duration_s: s(duration_ms),
        },
        Pattern::Wave { base_rps, amplitude_rps, period_ms, duration_ms } => {
            PatternFile::Wave { base_rps, amplitude_rps, period_s: s(period_ms), duration_s: s(duration_ms) }
        }
        Pattern::Random { min_rps, max_rps, change_every_ms, duration_ms } => {
            PatternFile::Random { min_rps, max_rps, change_every_s: s(change_every_ms), duration_s: s(duration_ms) }
        }
        Pattern::Burst { base_rps, burst_rps, burst_every_ms, burst_duration_ms, duration_ms } => PatternFile::Burst {
            base_rps,
            burst_rps,
            burst_every_s: s(burst_every_ms),
            burst_duration_s: s(burst_duration_ms),
            duration_s: s(duration_ms),
        },
    }
}

fn reservation(scenario: &Scenario, r: &Reservation) -> ReservationFile {
    let (nodes, groups) = names(scenario, &r.nodes);
    ReservationFile {
        name: r.name.clone(),
        task: scenario.workload.tasks.get(r.task.0 as usize).map(|t| t.name.clone()).unwrap_or_default(),
        nodes,
        groups,
        resources: resources(&r.resources),
        from_s: seconds(r.from_ms),
        until_s: seconds(r.until_ms),
    }
}

/// A node set as the file's `nodes` (node ids) and `groups` (group names) lists.
fn names(scenario: &Scenario, set: &NodeSet) -> (Vec<String>, Vec<String>) {
    let nodes = set.nodes.iter().map(|&n| scenario.node_id(n)).collect();
    let groups = set.groups.iter().map(|&g| scenario.group(g).name.clone()).collect();
    (nodes, groups)
}

fn fault(scenario: &Scenario, f: &Fault) -> FaultFile {
    let at_s = seconds(f.at_ms);
    let end = |ms: Option<u64>| ms.map(seconds);
    match &f.kind {
        FaultKind::Partition { sides, oneway, heal_at_ms } => {
            let (groups, nodes) = partition_sides(scenario, sides);
            FaultFile::Partition { at_s, groups, nodes, oneway: *oneway, heal_at_s: end(*heal_at_ms) }
        }
        FaultKind::Kill { nodes, restart_at_ms } => {
            let (nodes, groups) = names(scenario, nodes);
            FaultFile::Kill { at_s, nodes, groups, restart_at_s: end(*restart_at_ms) }
        }
        FaultKind::PacketLoss { rate, nodes, until_ms } => {
            let (nodes, groups) = names(scenario, nodes);
            FaultFile::PacketLoss { at_s, rate: *rate, nodes, groups, until_s: end(*until_ms) }
        }
        FaultKind::Latency { min_ms, max_ms, nodes, until_ms } => {
            let (nodes, groups) = names(scenario, nodes);
            FaultFile::Latency {
                at_s,
                min_ms: *min_ms as f64,
                max_ms: *max_ms as f64,
                nodes,
                groups,
                until_s: end(*until_ms),
            }
        }
        FaultKind::Clog { nodes, direction, until_ms } => {
            let (nodes, groups) = names(scenario, nodes);
            FaultFile::Clog { at_s, nodes, groups, direction: *direction, until_s: end(*until_ms) }
        }
        FaultKind::Pause { nodes, until_ms } => {
            let (nodes, groups) = names(scenario, nodes);
            FaultFile::Pause { at_s, nodes, groups, until_s: end(*until_ms) }
        }
    }
}

/// The sides of a partition in a file: by group names, or by node ids, each side a list.
type SideLists = Option<Vec<Vec<String>>>;

/// Partition sides as `(groups, nodes)`, exactly one of them present, as the file has them:
/// by group names when every side names whole groups only, else by node ids (a side's groups
/// spelled out node by node, the same nodes). The orchestrator is named on its side, so that
/// where it stands never rests on the format's default.
fn partition_sides(scenario: &Scenario, sides: &[Side]) -> (SideLists, SideLists) {
    let orchestrator = |side: &Side| side.orchestrator.then(|| "orchestrator".to_owned());
    if sides.iter().all(|s| s.nodes.nodes.is_empty()) {
        let groups = sides
            .iter()
            .map(|s| s.nodes.groups.iter().map(|&g| scenario.group(g).name.clone()).chain(orchestrator(s)).collect())
            .collect();
        return (Some(groups), None);
    }
    let nodes = sides
        .iter()
        .map(|s| {
            scenario
                .nodes()
                .filter(|&n| s.nodes.contains(n))
                .map(|n| scenario.node_id(n))
                .chain(orchestrator(s))
                .collect()
        })
        .collect();
    (None, Some(nodes))
}

fn expect(e: &Expect) -> ExpectFile {
    ExpectFile {
        all_tasks_complete: e.all_tasks_complete,
        max_failed_tasks: e.max_failed_tasks,
        max_reassignments: e.max_reassignments,
        max_false_suspicions: e.max_false_suspicions,
        failure_detected_within_s: e.failure_detected_within_ms.map(seconds),
        recovered_within_s: e.recovered_within_ms.map(seconds),
        latency_p50_ms: e.latency_p50_ms,
        latency_p90_ms: e.latency_p90_ms,
        latency_p99_ms: e.latency_p99_ms,
        error_rate_max: e.error_rate_max,
        latency_max_ms: e.latency_max_ms,
        rps_min: e.rps_min,
        dropped_max: e.dropped_max,
    }
}

fn alert(a: &AlertSpec) -> AlertFile {
    AlertFile {
        name: a.name.clone(),
        metric: a.metric,
        op: a.comparison,
        threshold: a.threshold,
        for_s: seconds(a.for_ms),
        severity: a.severity,
    }
}

fn failure_detector(d: &FailureDetector) -> FailureDetectorFile {
    FailureDetectorFile {
        heartbeat_interval_ms: d.heartbeat_interval_ms,
        phi_threshold: d.phi_threshold,
        window: u64::from(d.window),
        min_stddev_ms: d.min_stddev_ms,
        acceptable_pause_ms: d.acceptable_pause_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shipped scenario, read at compile time (the core reads no files); the CLI's tests
    /// check the same round trip on whatever `scenarios/` holds.
    const SHIPPED: [(&str, &[u8]); 8] = [
        ("contention", include_bytes!("../../../scenarios/contention.json")),
        ("flapping-network", include_bytes!("../../../scenarios/flapping-network.json")),
        ("geo", include_bytes!("../../../scenarios/geo.json")),
        ("load-patterns", include_bytes!("../../../scenarios/load-patterns.json")),
        ("node-failure", include_bytes!("../../../scenarios/node-failure.json")),
        ("partition", include_bytes!("../../../scenarios/partition.json")),
        ("scale-1000", include_bytes!("../../../scenarios/scale-1000.json")),
        ("sharded-tests", include_bytes!("../../../scenarios/sharded-tests.json")),
    ];

    fn round_trip(scenario: &Scenario) -> Scenario {
        let text = to_json(scenario);
        parse(text.as_bytes()).unwrap_or_else(|problems| panic!("{problems:?}\n{text}"))
    }

    #[test]
    fn every_shipped_scenario_reads_back_as_itself() {
        for (name, bytes) in SHIPPED {
            let scenario = parse(bytes).unwrap_or_else(|p| panic!("{name}: {p:?}"));
            assert_eq!(round_trip(&scenario), scenario, "{name}");
        }
    }

    #[test]
    fn odd_times_rates_and_sides_read_back_as_themselves() {
        let text = r#"{ "name": "odd", "description": "every field that is not a default", "duration_s": 123.457,
          "cluster": { "groups": [
            { "name": "a", "count": 3, "region": "r", "zone": "z", "resources": { "cpu_millis": 1000, "memory_mb": 64,
              "custom": { "licence": 2 } }, "capabilities": ["x", "linux"] },
            { "name": "b", "count": 2, "region": "r", "resources": { "cpu_millis": 1000, "memory_mb": 64, "gpus": 1 } } ] },
          "strategy": { "distribution": "weighted", "allocation": "balanced",
                        "weights": { "free_resources": 0.5, "health": 0, "load": 2, "locality": 1 }, "preemption": true },
          "targets": { "api": { "url": "https://example.test", "tls": { "insecure": true },
                                "sim": { "latency_ms": { "p50": 1.5, "p99": 9 }, "capacity_rps": 300, "error_rate": 0.001 } } },
          "workload": { "mode": "sequential", "tasks": [
            { "name": "c", "count": 4, "kind": "command", "priority": 3, "max_attempts": 5,
              "requires": { "cpu_millis": 250, "custom": { "licence": 1 } }, "capabilities": ["linux"],
              "locality": { "region": "r", "zone": "z", "strict": true },
              "command": { "argv": ["t", "{index}"], "timeout_s": 0.25, "env": { "K": "v" }, "cwd": "w" },
              "sim": { "duration_ms": { "mean": 12.5, "stddev": 0.1 }, "fail_rate": 0.123 } },
            { "name": "l", "kind": "load", "load": { "target": "api", "start_s": 1.001, "timeout_ms": 250, "connections": 3,
              "method": "POST", "headers": { "x-a": "b" }, "body": "{}", "http_version": "2",
              "pattern": { "type": "burst", "base_rps": 1, "burst_rps": 7.7, "burst_every_s": 10, "burst_duration_s": 0.5,
                           "duration_s": 60 } } } ] },
          "reservations": [ { "name": "hold", "task": "c", "nodes": ["a-2"], "groups": ["b"],
                              "resources": { "cpu_millis": 250 }, "from_s": 0.5, "until_s": 99.999 } ],
          "faults": [
            { "at_s": 1.234, "type": "partition", "nodes": [["a-1", "b-2"], ["a-3", "orchestrator"]], "oneway": true,
              "heal_at_s": 2.345 },
            { "at_s": 3, "type": "partition", "groups": [["b"]] },
            { "at_s": 3, "type": "partition", "groups": [["b", "orchestrator"]], "heal_at_s": 4 },
            { "at_s": 0, "type": "kill", "nodes": ["a-1", "b-1"], "groups": ["b"], "restart_at_s": 0.001 },
            { "at_s": 5, "type": "packet_loss", "rate": 0.0625 },
            { "at_s": 6, "type": "latency", "min_ms": 3, "max_ms": 70, "groups": ["a"], "until_s": 7 },
            { "at_s": 8, "type": "clog", "nodes": ["a-2"], "direction": "out", "until_s": 9 },
            { "at_s": 10, "type": "pause", "groups": ["a"] } ],
          "expect": { "all_tasks_complete": false, "max_failed_tasks": 1, "max_reassignments": 2,
                      "max_false_suspicions": 3, "failure_detected_within_s": 4.5, "recovered_within_s": 30.5,
                      "latency_p50_ms": 5,
                      "latency_p90_ms": 6, "latency_p99_ms": 7, "error_rate_max": 0.01, "latency_max_ms": 8,
                      "rps_min": 0.5, "dropped_max": 9 },
          "alerts": [ { "name": "down", "metric": "nodes_down", "op": ">=", "threshold": 2, "for_s": 1.5,
                        "severity": "critical" } ],
          "failure_detector": { "heartbeat_interval_ms": 250, "phi_threshold": 6.5, "window": 50, "min_stddev_ms": 20,
                                "acceptable_pause_ms": 100 },
          "retry": { "max_attempts": 2, "backoff_base_ms": 10, "backoff_cap_ms": 20 } }"#;
        let scenario = parse(text.as_bytes()).unwrap_or_else(|p| panic!("{p:?}"));
        assert_eq!(round_trip(&scenario), scenario);
    }

    #[test]
    fn a_side_of_groups_and_nodes_is_written_node_by_node() {
        let (_, bytes) = SHIPPED[4];
        let mut scenario = parse(bytes).expect("valid");
        let mixed = NodeSet { groups: vec![GroupId(1)], nodes: vec![NodeRef { group: GroupId(0), index: 2 }] };
        scenario.faults = vec![Fault {
            at_ms: 1_000,
            kind: FaultKind::Partition {
                sides: vec![Side { nodes: mixed.clone(), orchestrator: false }],
                oneway: false,
                heal_at_ms: Some(2_000),
            },
        }];
        let back = round_trip(&scenario);
        let FaultKind::Partition { sides, .. } = &back.faults[0].kind else { panic!("{back:?}") };
        let same = |set: &NodeSet| scenario.nodes().filter(|&n| set.contains(n)).collect::<Vec<_>>();
        assert_eq!(same(&sides[0].nodes), same(&mixed));
        assert!(!sides[0].orchestrator);
    }
}
