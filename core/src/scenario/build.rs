//! Converts the plain serde types into the validated [`Scenario`], checking everything that
//! spans fields. Every problem is collected; nothing stops at the first.

use std::collections::{BTreeMap, BTreeSet};

use super::diagnostic::{Path, suggest};
use super::file::*;
use super::rules::{self, Units};
use super::*;
use crate::limits::*;

/// Builds the scenario, or returns every problem with the path it is about.
pub(super) fn build(file: &ScenarioFile) -> Result<Scenario, Vec<(Path, String)>> {
    let mut b = Builder { problems: Vec::new(), duration_ms: 0, groups: BTreeMap::new(), group_counts: Vec::new() };
    let root = Path::root();

    b.name(&file.name, &root.key("name"));
    if file.description.trim().is_empty() {
        b.problem(root.key("description"), "expected a description a user can read, found an empty string");
    } else if file.description.len() > DESCRIPTION_BYTES_MAX {
        b.problem(
            root.key("description"),
            format!("longer than {DESCRIPTION_BYTES_MAX} bytes (DESCRIPTION_BYTES_MAX)"),
        );
    }
    b.duration_ms = b.positive_ms(file.duration_s * 1000.0, &root.key("duration_s"));

    let groups = b.groups(&file.cluster.groups, &root.key("cluster").key("groups"));
    let capabilities: BTreeSet<&str> = groups.iter().flat_map(|g| g.capabilities.iter().map(String::as_str)).collect();
    let at = root.key("cluster").key("groups");
    b.at_most(&at, capabilities.len() as u64, "distinct capabilities", CAPABILITIES_MAX as u64, "CAPABILITIES_MAX");
    let custom_kinds: BTreeSet<&str> = file
        .cluster
        .groups
        .iter()
        .filter_map(|g| g.resources.as_ref())
        .chain(file.workload.tasks.iter().map(|t| &t.requires))
        .chain(file.reservations.iter().map(|r| &r.resources))
        .flat_map(|r| r.custom.keys().map(String::as_str))
        .collect();
    b.at_most(&at, custom_kinds.len() as u64, "distinct custom resources", CUSTOM_KINDS_MAX as u64, "CUSTOM_KINDS_MAX");
    let targets = b.targets(&file.targets, &root.key("targets"));
    let tasks = b.tasks(file, &groups, &targets, &root.key("workload").key("tasks"));
    let reservations = b.reservations(file, &groups, &root.key("reservations"));
    let faults: Vec<Fault> =
        file.faults.iter().enumerate().map(|(i, f)| b.fault(f, &root.key("faults").index(i))).collect();
    let nodes_total: u64 = groups.iter().map(|g| u64::from(g.count)).sum();
    let alerts = b.alerts(&file.alerts, nodes_total, &root.key("alerts"));

    let strategy = Strategy {
        distribution: file.strategy.distribution,
        allocation: file.strategy.allocation,
        weights: match &file.strategy.weights {
            None => Weights::default(),
            Some(w) => {
                if w.free_resources + w.health + w.load + w.locality <= 0.0 {
                    b.problem(root.key("strategy").key("weights"), "at least one weight must be positive");
                }
                Weights { free_resources: w.free_resources, health: w.health, load: w.load, locality: w.locality }
            }
        },
        preemption: file.strategy.preemption,
    };

    let e = &file.expect;
    let has_load = file.workload.tasks.iter().any(|t| t.kind == TaskKind::Load);
    let load_expectations = [
        ("latency_p50_ms", e.latency_p50_ms.is_some()),
        ("latency_p90_ms", e.latency_p90_ms.is_some()),
        ("latency_p99_ms", e.latency_p99_ms.is_some()),
        ("error_rate_max", e.error_rate_max.is_some()),
        ("latency_max_ms", e.latency_max_ms.is_some()),
        ("rps_min", e.rps_min.is_some()),
        ("dropped_max", e.dropped_max.is_some()),
    ];
    for (name, set) in load_expectations {
        if set && !has_load {
            b.problem(root.key("expect").key(name), "no task is of kind `load`, so there is nothing to measure");
        }
    }
    let failure_detected_within_ms = e
        .failure_detected_within_s
        .map(|s| b.positive_ms(s * 1000.0, &root.key("expect").key("failure_detected_within_s")));
    let recovered_within_ms =
        e.recovered_within_s.map(|s| b.positive_ms(s * 1000.0, &root.key("expect").key("recovered_within_s")));
    let expect = Expect {
        all_tasks_complete: e.all_tasks_complete,
        max_failed_tasks: e.max_failed_tasks,
        max_reassignments: e.max_reassignments,
        max_false_suspicions: e.max_false_suspicions,
        failure_detected_within_ms,
        recovered_within_ms,
        latency_p50_ms: e.latency_p50_ms,
        latency_p90_ms: e.latency_p90_ms,
        latency_p99_ms: e.latency_p99_ms,
        error_rate_max: e.error_rate_max,
        latency_max_ms: e.latency_max_ms,
        rps_min: e.rps_min,
        dropped_max: e.dropped_max,
    };

    let fd = &file.failure_detector;
    if fd.phi_threshold <= 0.0 {
        b.problem(
            root.key("failure_detector").key("phi_threshold"),
            format!("expected a positive number, found {}", fd.phi_threshold),
        );
    }
    let failure_detector = FailureDetector {
        heartbeat_interval_ms: fd.heartbeat_interval_ms,
        phi_threshold: fd.phi_threshold,
        window: fd.window as u32, // Bounded by DETECTOR_WINDOW_MAX in the schema.
        min_stddev_ms: fd.min_stddev_ms,
        acceptable_pause_ms: fd.acceptable_pause_ms,
    };
    if file.retry.backoff_base_ms > file.retry.backoff_cap_ms {
        b.problem(
            root.key("retry").key("backoff_cap_ms"),
            format!(
                "expected at least `backoff_base_ms` ({}), found {}",
                file.retry.backoff_base_ms, file.retry.backoff_cap_ms
            ),
        );
    }
    let retry = Retry {
        max_attempts: file.retry.max_attempts as u32, // Bounded by ATTEMPTS_MAX in the schema.
        backoff_base_ms: file.retry.backoff_base_ms,
        backoff_cap_ms: file.retry.backoff_cap_ms,
    };

    if !b.problems.is_empty() {
        return Err(b.problems);
    }
    Ok(Scenario {
        name: file.name.clone(),
        description: file.description.clone(),
        duration_ms: b.duration_ms,
        groups,
        strategy,
        targets,
        workload: Workload { mode: file.workload.mode, tasks },
        reservations,
        faults,
        expect,
        alerts,
        failure_detector,
        retry,
    })
}

/// The name a partition side uses for the orchestrator.
const ORCHESTRATOR: &str = "orchestrator";

// Every rule of a valid scenario fits in one alert engine, so adding them cannot fail.
const _: () = assert!(ALERTS_MAX <= crate::health::alerts::ALERT_RULES_MAX);

struct Builder {
    problems: Vec<(Path, String)>,
    duration_ms: u64,
    /// Group name to id, for references.
    groups: BTreeMap<String, GroupId>,
    /// Node count of each group, by id.
    group_counts: Vec<u32>,
}

impl Builder {
    fn problem(&mut self, path: Path, message: impl Into<String>) {
        self.problems.push((path, message.into()));
    }

    /// Reports `count` above a named limit: "120003 nodes in all, above the limit of 100000 (NODES_MAX)".
    fn at_most(&mut self, path: &Path, count: u64, what: &str, limit: u64, name: &str) {
        if let Err(why) = rules::at_most(count, what, limit, name) {
            self.problem(path.clone(), why);
        }
    }

    /// Names of groups, tasks, targets and the like: letters, digits, `_`, `-` and `.`, starting
    /// with a letter or digit, at most [`NAME_BYTES_MAX`] bytes.
    fn name(&mut self, name: &str, path: &Path) -> bool {
        match rules::name(name) {
            Ok(()) => true,
            Err(why) => {
                self.problem(path.clone(), why);
                false
            }
        }
    }

    /// Checks every name of a list and that none repeats.
    fn names(&mut self, names: &[String], path: &Path, what: &str) -> Vec<String> {
        let mut seen = BTreeSet::new();
        for (i, name) in names.iter().enumerate() {
            if self.name(name, &path.index(i)) && !seen.insert(name.as_str()) {
                self.problem(path.index(i), format!("{what} {name:?} is listed twice"));
            }
        }
        seen.into_iter().map(str::to_owned).collect()
    }

    /// Milliseconds of a time that must be positive.
    fn positive_ms(&mut self, ms: f64, path: &Path) -> u64 {
        let ms = ms.round().max(0.0) as u64;
        if let Err(why) = rules::positive_ms(ms, u64::MAX) {
            self.problem(path.clone(), why);
            return 1;
        }
        ms
    }

    /// Milliseconds of a time inside the scenario's `duration_s`.
    fn time_ms(&mut self, seconds: f64, path: &Path) -> u64 {
        let ms = (seconds * 1000.0).round() as u64;
        if ms > self.duration_ms {
            self.problem(
                path.clone(),
                format!(
                    "{seconds} s is after the end of the scenario (`duration_s` is {})",
                    self.duration_ms as f64 / 1000.0
                ),
            );
        }
        ms
    }

    /// A fault's optional end time, in field `field` of the fault at `path`.
    fn end_after_start(&mut self, seconds: Option<f64>, at_ms: u64, field: &str, path: &Path) -> Option<u64> {
        seconds.map(|s| self.end_ms(s, at_ms, "at_s", &path.key(field)))
    }

    /// An end time: after `start_ms` and inside the scenario.
    fn end_ms(&mut self, seconds: f64, start_ms: u64, start_field: &str, path: &Path) -> u64 {
        let ms = self.time_ms(seconds, path);
        if ms <= start_ms {
            self.problem(
                path.clone(),
                format!("{seconds} s is not after `{start_field}` ({} s)", start_ms as f64 / 1000.0),
            );
        }
        ms
    }

    fn resources(&mut self, r: &ResourcesFile, path: &Path) -> Resources {
        let resources = Resources {
            cpu_millis: r.cpu_millis,
            memory_mb: r.memory_mb,
            disk_mb: r.disk_mb,
            net_mbps: r.net_mbps,
            gpus: r.gpus,
            custom: r.custom.iter().map(|(name, units)| (name.clone(), units.0)).collect(),
        };
        rules::resources(&resources, path, &mut self.problems);
        resources
    }

    fn groups(&mut self, files: &[GroupFile], path: &Path) -> Vec<Group> {
        let mut groups = Vec::new();
        let mut nodes_total: u64 = 0;
        for (i, g) in files.iter().enumerate() {
            let at = path.index(i);
            if self.name(&g.name, &at.key("name")) {
                if g.name == ORCHESTRATOR {
                    self.problem(at.key("name"), "`orchestrator` is reserved for the orchestrator in partition sides");
                } else if self.groups.contains_key(&g.name) {
                    self.problem(at.key("name"), format!("group {:?} is defined twice", g.name));
                }
            }
            for (field, value) in [("region", &g.region), ("zone", &g.zone)] {
                if let Some(value) = value {
                    self.name(value, &at.key(field));
                }
            }
            let id = GroupId(groups.len() as u32);
            self.groups.entry(g.name.clone()).or_insert(id);
            nodes_total = nodes_total.saturating_add(g.count);
            let count = g.count as u32; // Bounded by NODES_MAX in the schema.
            self.group_counts.push(count);
            groups.push(Group {
                name: g.name.clone(),
                count,
                region: g.region.clone(),
                zone: g.zone.clone(),
                resources: g.resources.as_ref().map(|r| self.resources(r, &at.key("resources"))),
                capabilities: self.names(&g.capabilities, &at.key("capabilities"), "capability"),
            });
        }
        self.at_most(path, nodes_total, "nodes in all", NODES_MAX, "NODES_MAX");
        groups
    }

    fn targets(&mut self, files: &BTreeMap<String, TargetFile>, path: &Path) -> Vec<Target> {
        let mut targets = Vec::new();
        for (name, t) in files {
            let at = path.key(name);
            self.name(name, &at);
            if let Some(url) = &t.url
                && let Err(why) = rules::url(url)
            {
                self.problem(at.key("url"), why);
            }
            let sim = t.sim.as_ref().map(|s| {
                if s.latency_ms.p99 < s.latency_ms.p50 {
                    self.problem(
                        at.key("sim").key("latency_ms").key("p99"),
                        format!("expected at least `p50` ({}), found {}", s.latency_ms.p50, s.latency_ms.p99),
                    );
                }
                if s.capacity_rps == Some(0.0) {
                    self.problem(at.key("sim").key("capacity_rps"), "expected a positive rate, found 0");
                }
                TargetSim {
                    latency_p50_ms: s.latency_ms.p50,
                    latency_p99_ms: s.latency_ms.p99,
                    capacity_rps: s.capacity_rps,
                    error_rate: s.error_rate,
                }
            });
            if t.url.is_none() && t.sim.is_none() {
                self.problem(at.clone(), "a target needs `url` (for dtest run) or `sim` (for dtest sim), or both");
            }
            let tls = t.tls.clone().unwrap_or_default();
            if t.tls.is_some() {
                rules::tls(t.url.as_deref(), tls.insecure, tls.ca_file.is_some(), &at.key("tls"), &mut self.problems);
            }
            let tls = TargetTls { ca_file: tls.ca_file, insecure: tls.insecure };
            targets.push(Target { name: name.clone(), url: t.url.clone(), sim, tls });
        }
        targets
    }

    fn tasks(&mut self, file: &ScenarioFile, groups: &[Group], targets: &[Target], path: &Path) -> Vec<TaskSpec> {
        let mut seen = BTreeSet::new();
        let mut total: u64 = 0;
        let mut tasks = Vec::new();
        for (i, t) in file.workload.tasks.iter().enumerate() {
            let at = path.index(i);
            if self.name(&t.name, &at.key("name")) && !seen.insert(t.name.as_str()) {
                self.problem(at.key("name"), format!("task {:?} is defined twice", t.name));
            }
            total = total.saturating_add(t.count);
            let requires = self.resources(&t.requires, &at.key("requires"));
            let capabilities = self.names(&t.capabilities, &at.key("capabilities"), "capability");
            let locality = t.locality.as_ref().map(|l| self.locality(l, groups, &at.key("locality")));
            self.placeable(groups, &requires, &capabilities, locality.as_ref(), &at);
            let work = match t.kind {
                TaskKind::Command => {
                    if t.load.is_some() {
                        self.problem(at.key("load"), "a `command` task has no `load`; use `\"kind\": \"load\"`");
                    }
                    if t.command.is_none() && t.sim.is_none() {
                        self.problem(
                            at.clone(),
                            "a `command` task needs `command` (for dtest run) or `sim` (for dtest sim), or both",
                        );
                    }
                    Work::Command {
                        command: t.command.as_ref().map(|c| self.command(c, &at.key("command"))),
                        sim: t.sim.as_ref().map(|s| TaskSim {
                            duration_mean_ms: s.duration_ms.mean,
                            duration_stddev_ms: s.duration_ms.stddev,
                            fail_rate: s.fail_rate,
                        }),
                    }
                }
                TaskKind::Load => {
                    for (field, present) in [("command", t.command.is_some()), ("sim", t.sim.is_some())] {
                        if present {
                            self.problem(
                                at.key(field),
                                format!(
                                    "a `load` task has no `{field}`; its simulated behaviour is its target's `sim`"
                                ),
                            );
                        }
                    }
                    match &t.load {
                        Some(load) => Work::Load(self.load(load, targets, &at.key("load"))),
                        None => {
                            self.problem(at.clone(), "a `load` task needs `load`");
                            continue;
                        }
                    }
                }
            };
            tasks.push(TaskSpec {
                name: t.name.clone(),
                count: t.count as u32,       // Bounded by TASK_COUNT_MAX in the schema.
                priority: t.priority as u32, // Bounded by PRIORITY_MAX in the schema.
                requires,
                capabilities,
                locality,
                work,
                max_attempts: t.max_attempts.unwrap_or(file.retry.max_attempts) as u32,
            });
        }
        if file.workload.mode == WorkloadMode::Sequential {
            // Entries run one after another, so their loads take at least the sum of their lengths.
            let load_ms: u64 = tasks
                .iter()
                .filter_map(|t| match &t.work {
                    Work::Load(load) => Some(load.start_ms.saturating_add(load.pattern.duration_ms())),
                    Work::Command { .. } => None,
                })
                .fold(0, u64::saturating_add);
            if load_ms > self.duration_ms {
                self.problem(
                    path.clone(),
                    format!(
                        "in `sequential` mode the load entries alone take {} s, longer than `duration_s` ({})",
                        load_ms as f64 / 1000.0,
                        self.duration_ms as f64 / 1000.0
                    ),
                );
            }
        }
        self.at_most(path, total, "task instances in all", TASKS_MAX, "TASKS_MAX");
        tasks
    }

    fn locality(&mut self, l: &LocalityFile, groups: &[Group], path: &Path) -> Locality {
        let regions: BTreeSet<&str> = groups.iter().filter_map(|g| g.region.as_deref()).collect();
        if let Some(region) = &l.region
            && !regions.contains(region.as_str())
        {
            let message = unknown("region", region, regions.iter().copied());
            self.problem(path.key("region"), message);
        }
        if let Some(zone) = &l.zone {
            let zones: BTreeSet<&str> = groups
                .iter()
                .filter(|g| l.region.is_none() || g.region == l.region)
                .filter_map(|g| g.zone.as_deref())
                .collect();
            if !zones.contains(zone.as_str()) {
                let mut message = unknown("zone", zone, zones.iter().copied());
                if let Some(region) = &l.region {
                    message.push_str(&format!(" in region {region:?}"));
                }
                self.problem(path.key("zone"), message);
            }
        }
        if l.region.is_none() && l.zone.is_none() {
            self.problem(path.clone(), "a locality names a `region`, a `zone` or both");
        }
        Locality { region: l.region.clone(), zone: l.zone.clone(), strict: l.strict }
    }

    /// A task that no group could ever run is a mistake in the file, not a scheduling outcome.
    fn placeable(
        &mut self,
        groups: &[Group],
        requires: &Resources,
        capabilities: &[String],
        locality: Option<&Locality>,
        path: &Path,
    ) {
        let allowed = |g: &&Group| match locality {
            Some(l) if l.strict => {
                (l.region.is_none() || g.region == l.region) && (l.zone.is_none() || g.zone == l.zone)
            }
            _ => true,
        };
        let capable: Vec<&Group> = groups
            .iter()
            .filter(allowed)
            .filter(|g| capabilities.iter().all(|c| g.capabilities.binary_search(c).is_ok()))
            .collect();
        if capable.is_empty() {
            let place = if locality.is_some_and(|l| l.strict) { " in its strict locality" } else { "" };
            self.problem(path.key("capabilities"), format!("no group{place} offers all of {}", quoted(capabilities)));
            return;
        }
        // Groups without declared resources are sized when `dtest run` detects them.
        let fits = capable.iter().any(|g| g.resources.as_ref().is_none_or(|r| r.covers(requires)));
        if !fits {
            self.problem(path.key("requires"), "no node that could take this task has that much of every resource");
        }
    }

    fn command(&mut self, c: &CommandFile, path: &Path) -> Command {
        rules::command(&c.argv, &c.env, c.cwd.as_deref(), path, &mut self.problems);
        Command {
            argv: c.argv.clone(),
            timeout_ms: self.positive_ms(c.timeout_s * 1000.0, &path.key("timeout_s")),
            env: c.env.clone(),
            cwd: c.cwd.clone(),
        }
    }

    fn load(&mut self, l: &LoadFile, targets: &[Target], path: &Path) -> Load {
        let target = match targets.iter().position(|t| t.name == l.target) {
            Some(i) => TargetId(i as u32),
            None => {
                let message = unknown("target", &l.target, targets.iter().map(|t| t.name.as_str()));
                self.problem(path.key("target"), message);
                TargetId(0)
            }
        };
        let start_ms = self.time_ms(l.start_s, &path.key("start_s"));
        let pattern = self.pattern(&l.pattern, &path.key("pattern"));
        let end_ms = start_ms.saturating_add(pattern.duration_ms());
        if end_ms > self.duration_ms {
            self.problem(
                path.key("pattern").key("duration_s"),
                format!(
                    "the load runs until {} s, after the end of the scenario (`duration_s` is {})",
                    end_ms as f64 / 1000.0,
                    self.duration_ms as f64 / 1000.0
                ),
            );
        }
        rules::headers(&l.headers, &path.key("headers"), &mut self.problems);
        Load {
            target,
            pattern,
            start_ms,
            timeout_ms: self.positive_ms(l.timeout_ms, &path.key("timeout_ms")),
            connections: l.connections as u32, // Bounded by CONNECTIONS_MAX in the schema.
            method: l.method,
            headers: l.headers.clone(),
            body: l.body.clone(),
            http_version: l.http_version,
        }
    }

    fn pattern(&mut self, p: &PatternFile, path: &Path) -> Pattern {
        // Whole milliseconds; `Pattern::validate` checks them as the node checks a plan's.
        let ms = |seconds: f64| (seconds * 1000.0).round().max(0.0) as u64;
        let pattern = match *p {
            PatternFile::Constant { rps, duration_s } => Pattern::Constant { rps, duration_ms: ms(duration_s) },
            PatternFile::Ramp { from_rps, to_rps, duration_s } => {
                Pattern::Ramp { from_rps, to_rps, duration_ms: ms(duration_s) }
            }
            PatternFile::Spike { base_rps, spike_rps, spike_at_s, spike_duration_s, duration_s } => Pattern::Spike {
                base_rps,
                spike_rps,
                spike_at_ms: ms(spike_at_s),
                spike_duration_ms: ms(spike_duration_s),
                duration_ms: ms(duration_s),
            },
            PatternFile::Wave { base_rps, amplitude_rps, period_s, duration_s } => {
                Pattern::Wave { base_rps, amplitude_rps, period_ms: ms(period_s), duration_ms: ms(duration_s) }
            }
            PatternFile::Random { min_rps, max_rps, change_every_s, duration_s } => {
                Pattern::Random { min_rps, max_rps, change_every_ms: ms(change_every_s), duration_ms: ms(duration_s) }
            }
            PatternFile::Burst { base_rps, burst_rps, burst_every_s, burst_duration_s, duration_s } => Pattern::Burst {
                base_rps,
                burst_rps,
                burst_every_ms: ms(burst_every_s),
                burst_duration_ms: ms(burst_duration_s),
                duration_ms: ms(duration_s),
            },
        };
        pattern.validate(Units::Seconds, path, &mut self.problems);
        pattern
    }

    fn alerts(&mut self, files: &[AlertFile], nodes_total: u64, path: &Path) -> Vec<AlertSpec> {
        let mut seen = BTreeSet::new();
        let mut alerts = Vec::new();
        for (i, a) in files.iter().enumerate() {
            let at = path.index(i);
            if self.name(&a.name, &at.key("name")) && !seen.insert(a.name.as_str()) {
                self.problem(at.key("name"), format!("alert {:?} is defined twice", a.name));
            }
            let metric = a.metric.name();
            let max = match a.metric {
                AlertMetric::HealthScore | AlertMetric::ClusterHealth => 100.0,
                AlertMetric::Cpu | AlertMetric::Memory | AlertMetric::Disk | AlertMetric::TaskErrorRate => 1.0,
                AlertMetric::Phi => PHI_THRESHOLD_MAX,
                AlertMetric::NodesDown => nodes_total as f64,
            };
            // A NaN threshold is in no range; the JSON parser never makes one, but check anyway.
            if !(0.0..=max).contains(&a.threshold) {
                let range = match a.metric {
                    AlertMetric::HealthScore | AlertMetric::ClusterHealth => {
                        format!("`{metric}` is a score from 0 to 100")
                    }
                    AlertMetric::Cpu | AlertMetric::Memory | AlertMetric::Disk | AlertMetric::TaskErrorRate => {
                        format!("`{metric}` is a fraction from 0 to 1, not a percentage")
                    }
                    AlertMetric::Phi => format!("`phi` thresholds go up to {PHI_THRESHOLD_MAX} (PHI_THRESHOLD_MAX)"),
                    AlertMetric::NodesDown => format!("the scenario has {nodes_total} nodes"),
                };
                self.problem(
                    at.key("threshold"),
                    format!("{range}; expected a threshold from 0 to {max}, found {}", a.threshold),
                );
            }
            let for_ms = (a.for_s * 1000.0).round() as u64; // Bounded by DURATION_S_MAX in the schema.
            if for_ms > self.duration_ms {
                self.problem(
                    at.key("for_s"),
                    format!(
                        "{} s is longer than the scenario (`duration_s` is {}), so the alert could never fire",
                        a.for_s,
                        self.duration_ms as f64 / 1000.0
                    ),
                );
            }
            alerts.push(AlertSpec {
                name: a.name.clone(),
                metric: a.metric,
                comparison: a.op,
                threshold: a.threshold,
                for_ms,
                severity: a.severity,
            });
        }
        alerts
    }

    /// A node id `<group>-<n>`, resolved.
    fn node(&mut self, id: &str, path: &Path) -> Option<NodeRef> {
        let parsed = id.rsplit_once('-').and_then(|(group, n)| {
            let index: u32 = n.parse().ok().filter(|_| !n.starts_with(['0', '+']))?;
            Some((group, index))
        });
        let Some((group, index)) = parsed else {
            let message = match self.groups.contains_key(id) {
                true => format!(
                    "expected a node id like `{id}-1`, found the group name {id:?}; use `groups` for a whole group"
                ),
                false => format!("expected a node id `<group>-<n>`, found {id:?}"),
            };
            self.problem(path.clone(), message);
            return None;
        };
        let Some(&group_id) = self.groups.get(group) else {
            let message = unknown("group", group, self.groups.keys().map(String::as_str));
            self.problem(path.clone(), format!("node {id:?}: {message}"));
            return None;
        };
        let count = self.group_counts[group_id.0 as usize];
        if index == 0 || index > count {
            self.problem(path.clone(), format!("node {id:?} does not exist: group {group:?} has nodes 1 to {count}"));
            return None;
        }
        Some(NodeRef { group: group_id, index })
    }

    fn group_ref(&mut self, name: &str, path: &Path) -> Option<GroupId> {
        let found = self.groups.get(name).copied();
        if found.is_none() {
            let message = unknown("group", name, self.groups.keys().map(String::as_str));
            self.problem(path.clone(), message);
        }
        found
    }

    /// A node set from `nodes` and `groups` lists.
    fn node_set(&mut self, nodes: &[String], groups: &[String], path: &Path) -> NodeSet {
        let mut set = NodeSet::default();
        for (i, name) in groups.iter().enumerate() {
            set.groups.extend(self.group_ref(name, &path.key("groups").index(i)));
        }
        set.groups.sort_unstable();
        set.groups.dedup();
        for (i, id) in nodes.iter().enumerate() {
            if let Some(node) = self.node(id, &path.key("nodes").index(i))
                && !set.contains(node)
            {
                set.nodes.push(node);
            }
        }
        set.nodes.sort_unstable();
        set.nodes.dedup();
        set
    }

    fn non_empty(&mut self, set: &NodeSet, nodes: &[String], groups: &[String], path: &Path) {
        if set.is_empty() && nodes.is_empty() && groups.is_empty() {
            self.problem(path.clone(), "expected at least one node in `nodes` or `groups`");
        }
    }

    fn reservations(&mut self, file: &ScenarioFile, groups: &[Group], path: &Path) -> Vec<Reservation> {
        let mut seen = BTreeSet::new();
        let mut reservations = Vec::new();
        for (i, r) in file.reservations.iter().enumerate() {
            let at = path.index(i);
            if self.name(&r.name, &at.key("name")) && !seen.insert(r.name.as_str()) {
                self.problem(at.key("name"), format!("reservation {:?} is defined twice", r.name));
            }
            let task = file.workload.tasks.iter().position(|t| t.name == r.task);
            if task.is_none() {
                let message = unknown("task", &r.task, file.workload.tasks.iter().map(|t| t.name.as_str()));
                self.problem(at.key("task"), message);
            }
            let nodes = self.node_set(&r.nodes, &r.groups, &at);
            self.non_empty(&nodes, &r.nodes, &r.groups, &at);
            let resources = self.resources(&r.resources, &at.key("resources"));
            let too_big = nodes
                .groups
                .iter()
                .copied()
                .chain(nodes.nodes.iter().map(|n| n.group))
                .filter_map(|g| groups[g.0 as usize].resources.as_ref().map(|cap| (g, cap)))
                .find(|(_, cap)| !cap.covers(&resources));
            if let Some((g, _)) = too_big {
                self.problem(
                    at.key("resources"),
                    format!("asks for more than a node of group {:?} has", groups[g.0 as usize].name),
                );
            }
            let from_ms = self.time_ms(r.from_s, &at.key("from_s"));
            let until_ms = self.end_ms(r.until_s, from_ms, "from_s", &at.key("until_s"));
            reservations.push(Reservation {
                name: r.name.clone(),
                task: TaskSpecId(task.unwrap_or(0) as u32),
                nodes,
                resources,
                from_ms,
                until_ms,
            });
        }
        reservations
    }

    fn fault(&mut self, f: &FaultFile, path: &Path) -> Fault {
        let (at_s, kind) = match f {
            FaultFile::Partition { at_s, groups, nodes, oneway, heal_at_s } => {
                let at_ms = self.time_ms(*at_s, &path.key("at_s"));
                let heal_at_ms = self.end_after_start(*heal_at_s, at_ms, "heal_at_s", path);
                let sides = match (groups, nodes) {
                    (Some(groups), None) => self.sides(groups, SideNames::Groups, &path.key("groups")),
                    (None, Some(nodes)) => self.sides(nodes, SideNames::Nodes, &path.key("nodes")),
                    _ => {
                        self.problem(path.clone(), "a partition has its sides in exactly one of `groups` and `nodes`");
                        Vec::new()
                    }
                };
                (*at_s, FaultKind::Partition { sides, oneway: *oneway, heal_at_ms })
            }
            FaultFile::Kill { at_s, nodes, groups, restart_at_s } => {
                let at_ms = self.time_ms(*at_s, &path.key("at_s"));
                let set = self.node_set(nodes, groups, path);
                self.non_empty(&set, nodes, groups, path);
                let restart_at_ms = self.end_after_start(*restart_at_s, at_ms, "restart_at_s", path);
                (*at_s, FaultKind::Kill { nodes: set, restart_at_ms })
            }
            FaultFile::PacketLoss { at_s, rate, nodes, groups, until_s } => {
                let at_ms = self.time_ms(*at_s, &path.key("at_s"));
                let set = self.node_set(nodes, groups, path);
                let until_ms = self.end_after_start(*until_s, at_ms, "until_s", path);
                (*at_s, FaultKind::PacketLoss { rate: *rate, nodes: set, until_ms })
            }
            FaultFile::Latency { at_s, min_ms, max_ms, nodes, groups, until_s } => {
                let at_ms = self.time_ms(*at_s, &path.key("at_s"));
                if max_ms < min_ms {
                    self.problem(path.key("max_ms"), format!("expected at least `min_ms` ({min_ms}), found {max_ms}"));
                }
                let set = self.node_set(nodes, groups, path);
                let until_ms = self.end_after_start(*until_s, at_ms, "until_s", path);
                let (min_ms, max_ms) = (min_ms.round() as u64, max_ms.round() as u64);
                (*at_s, FaultKind::Latency { min_ms, max_ms, nodes: set, until_ms })
            }
            FaultFile::Clog { at_s, nodes, groups, direction, until_s } => {
                let at_ms = self.time_ms(*at_s, &path.key("at_s"));
                let set = self.node_set(nodes, groups, path);
                self.non_empty(&set, nodes, groups, path);
                let until_ms = self.end_after_start(*until_s, at_ms, "until_s", path);
                (*at_s, FaultKind::Clog { nodes: set, direction: *direction, until_ms })
            }
            FaultFile::Pause { at_s, nodes, groups, until_s } => {
                let at_ms = self.time_ms(*at_s, &path.key("at_s"));
                let set = self.node_set(nodes, groups, path);
                self.non_empty(&set, nodes, groups, path);
                let until_ms = self.end_after_start(*until_s, at_ms, "until_s", path);
                (*at_s, FaultKind::Pause { nodes: set, until_ms })
            }
        };
        Fault { at_ms: (at_s * 1000.0).round() as u64, kind }
    }

    /// Partition sides: non-empty, disjoint, the orchestrator on at most one.
    fn sides(&mut self, lists: &[Vec<String>], names: SideNames, path: &Path) -> Vec<Side> {
        let mut sides: Vec<Side> = Vec::new();
        let mut orchestrator_side: Option<usize> = None;
        // Where each group and node first appeared, to report overlaps by name.
        let mut group_side: BTreeMap<GroupId, usize> = BTreeMap::new();
        let mut node_side: BTreeMap<NodeRef, usize> = BTreeMap::new();
        for (s, list) in lists.iter().enumerate() {
            let at = path.index(s);
            if list.is_empty() {
                self.problem(at.clone(), "expected at least one name on each side, found none");
            }
            let mut side = Side::default();
            for (i, name) in list.iter().enumerate() {
                if name == ORCHESTRATOR {
                    match orchestrator_side {
                        Some(first) => {
                            self.problem(at.index(i), format!("the orchestrator is already on side {first}"))
                        }
                        None => orchestrator_side = Some(s),
                    }
                    side.orchestrator = true;
                    continue;
                }
                match names {
                    SideNames::Groups => {
                        if let Some(g) = self.group_ref(name, &at.index(i)) {
                            if let Some(&other) = group_side.get(&g).filter(|&&other| other != s) {
                                self.problem(
                                    at.index(i),
                                    format!("group {name:?} is on side {other} too; sides must be disjoint"),
                                );
                            }
                            group_side.entry(g).or_insert(s);
                            side.nodes.groups.push(g);
                        }
                    }
                    SideNames::Nodes => {
                        if let Some(node) = self.node(name, &at.index(i)) {
                            if let Some(&other) = node_side.get(&node).filter(|&&other| other != s) {
                                self.problem(
                                    at.index(i),
                                    format!("node {name:?} is on side {other} too; sides must be disjoint"),
                                );
                            }
                            node_side.entry(node).or_insert(s);
                            side.nodes.nodes.push(node);
                        }
                    }
                }
            }
            side.nodes.groups.sort_unstable();
            side.nodes.groups.dedup();
            side.nodes.nodes.sort_unstable();
            side.nodes.nodes.dedup();
            sides.push(side);
        }
        // Documented in the format: without `orchestrator` on a side, it is on the first side
        // when there are several, and with the rest of the cluster when one side is cut off.
        if orchestrator_side.is_none()
            && sides.len() > 1
            && let Some(first) = sides.first_mut()
        {
            first.orchestrator = true;
        }
        sides
    }
}

#[derive(Clone, Copy)]
enum SideNames {
    Groups,
    Nodes,
}

/// "unknown group "x"" with a suggestion or the list of known names.
fn unknown<'a>(what: &str, name: &str, known: impl Iterator<Item = &'a str> + Clone) -> String {
    match suggest(name, known.clone()) {
        Some(near) => format!("unknown {what} {name:?}, did you mean {near:?}?"),
        None => {
            let known: Vec<&str> = known.take(10).collect();
            match known.is_empty() {
                true => format!("unknown {what} {name:?}; none is defined"),
                false => format!("unknown {what} {name:?}; known: {}", quoted(&known)),
            }
        }
    }
}

fn quoted<S: AsRef<str>>(names: &[S]) -> String {
    names.iter().map(|n| format!("{:?}", n.as_ref())).collect::<Vec<_>>().join(", ")
}
