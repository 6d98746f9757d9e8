//! `GET /metrics` of `dtest serve`: executions, tasks, the registry's nodes and alerts for
//! Prometheus, read from the service's state at the scrape (`Service::figures`) and encoded by
//! `dtest_node::metrics`, which also picks OpenMetrics or the classic text format.
//!
//! Node names become label values: they are validated at registration, the encoder escapes
//! them, and at most [`NODE_SERIES_MAX`] nodes get series of their own (the first by name); the
//! rest are counted in `dtest_serve_node_series_omitted`.

use dtest_node::metrics::{counters, gauges};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;

/// Nodes with series of their own (phi, score, probes, round trip) in one scrape.
pub const NODE_SERIES_MAX: usize = 1_000;

/// The states an ended execution can have, always exposed (0 until one ends so).
const ENDED_STATES: [&str; 4] = ["succeeded", "failed", "cancelled", "interrupted"];

/// The states of the registry's nodes, in the core's order.
pub(crate) const NODE_STATES: [&str; 4] = ["healthy", "degraded", "unhealthy", "dead"];

/// What the service knows at one scrape.
#[derive(Clone, Debug, Default)]
pub struct ServeFigures {
    /// Executions being started (taking shares, sending plans).
    pub starting: u64,
    /// Executions running, not cancelled.
    pub running: u64,
    /// Executions cancelled and winding down.
    pub cancelling: u64,
    /// Executions ended since this service started, by state.
    pub ended: Vec<(String, u64)>,
    /// Tasks of the running executions that ended.
    pub tasks_ended: u64,
    /// Tasks of the running executions not ended yet.
    pub tasks_unfinished: u64,
    /// The registry's nodes by health state, in [`NODE_STATES`]' order.
    pub nodes_by_state: [u64; 4],
    /// The cluster's health score (0 to 100).
    pub cluster_health: u8,
    /// The first [`NODE_SERIES_MAX`] nodes by name.
    pub nodes: Vec<NodeFigures>,
    /// Nodes left out of [`ServeFigures::nodes`].
    pub nodes_omitted: u64,
    /// Each alert rule: its name, severity and how many subjects it fires for.
    pub rules: Vec<(String, String, u64)>,
}

/// One registered node.
#[derive(Clone, Debug, Default)]
pub struct NodeFigures {
    /// Its name.
    pub name: String,
    /// The phi of its failure detector (capped at `f64::MAX`, as in the API).
    pub phi: f64,
    /// Its health score (0 to 100).
    pub score: u8,
    /// Probes it answered since it registered.
    pub probes_ok: u64,
    /// Probes it failed since it registered.
    pub probes_failed: u64,
    /// The last answered probe's round trip, in seconds.
    pub round_trip_s: Option<f64>,
}

impl Collector for ServeFigures {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let e = &mut encoder;
        gauges(
            e,
            "dtest_serve_executions",
            "Executions in this service now, by state.",
            [
                (&[("state", "starting")][..], self.starting),
                (&[("state", "running")][..], self.running),
                (&[("state", "cancelling")][..], self.cancelling),
            ],
        )?;
        let ended: Vec<[(&str, &str); 1]> = self.ended.iter().map(|(state, _)| [("state", state.as_str())]).collect();
        counters(
            e,
            "dtest_serve_executions_ended",
            "Executions that ended since this service started, by final state.",
            ended.iter().zip(&self.ended).map(|(labels, (_, n))| (&labels[..], *n)),
        )?;
        gauges(
            e,
            "dtest_serve_tasks",
            "Tasks of the running executions, ended or not.",
            [(&[("state", "ended")][..], self.tasks_ended), (&[("state", "unfinished")][..], self.tasks_unfinished)],
        )?;
        let states: Vec<[(&str, &str); 1]> = NODE_STATES.iter().map(|s| [("state", *s)]).collect();
        gauges(
            e,
            "dtest_serve_nodes",
            "Registered nodes by health state.",
            states.iter().zip(self.nodes_by_state).map(|(labels, n)| (&labels[..], n)),
        )?;
        gauges(
            e,
            "dtest_serve_cluster_health",
            "The cluster's health score, 0 to 100.",
            [(&[][..], u64::from(self.cluster_health))],
        )?;
        gauges(
            e,
            "dtest_serve_node_series_omitted",
            "Registered nodes beyond the per-node series cap, left out of the node_* families.",
            [(&[][..], self.nodes_omitted)],
        )?;
        let names: Vec<[(&str, &str); 1]> = self.nodes.iter().map(|n| [("node", n.name.as_str())]).collect();
        let each = || names.iter().zip(&self.nodes).map(|(labels, node)| (&labels[..], node));
        gauges(
            e,
            "dtest_serve_node_phi",
            "Phi of each node's accrual failure detector, fed by the service's probes.",
            each().map(|(labels, n)| (labels, n.phi)),
        )?;
        gauges(
            e,
            "dtest_serve_node_score",
            "Each node's health score, 0 to 100.",
            each().map(|(labels, n)| (labels, u64::from(n.score))),
        )?;
        gauges(
            e,
            "dtest_serve_node_round_trip_seconds",
            "Round trip of the last probe each node answered.",
            each().filter_map(|(labels, n)| Some((labels, n.round_trip_s?))),
        )?;
        let results: Vec<[(&str, &str); 2]> = self
            .nodes
            .iter()
            .flat_map(|n| {
                [[("node", n.name.as_str()), ("result", "ok")], [("node", n.name.as_str()), ("result", "failed")]]
            })
            .collect();
        counters(
            e,
            "dtest_serve_node_probes",
            "Probes (GET /v1/info, once a second) of each node since it registered, by result.",
            results
                .iter()
                .zip(self.nodes.iter().flat_map(|n| [n.probes_ok, n.probes_failed]))
                .map(|(l, v)| (&l[..], v)),
        )?;
        let rules: Vec<[(&str, &str); 2]> = self
            .rules
            .iter()
            .map(|(rule, severity, _)| [("rule", rule.as_str()), ("severity", severity.as_str())])
            .collect();
        gauges(
            e,
            "dtest_serve_alerts_firing",
            "Subjects each of the service's alert rules fires for now.",
            rules.iter().zip(&self.rules).map(|(labels, (_, _, n))| (&labels[..], *n)),
        )
    }
}

/// Every state in [`ENDED_STATES`] (0 if none ended so), then any other in `counts`.
pub(crate) fn ended_states(counts: &std::collections::BTreeMap<String, u64>) -> Vec<(String, u64)> {
    let known = ENDED_STATES.iter().map(|s| (s.to_string(), counts.get(*s).copied().unwrap_or(0)));
    let others = counts.iter().filter(|(s, _)| !ENDED_STATES.contains(&s.as_str())).map(|(s, n)| (s.clone(), *n));
    known.chain(others).collect()
}

#[cfg(test)]
mod tests {
    use dtest_node::metrics::{Format, encode};

    use super::*;

    fn figures() -> ServeFigures {
        let node = |name: &str, phi: f64, round_trip_s| NodeFigures {
            name: name.to_owned(),
            phi,
            score: 90,
            probes_ok: 5,
            probes_failed: 1,
            round_trip_s,
        };
        ServeFigures {
            starting: 0,
            running: 2,
            cancelling: 1,
            ended: ended_states(&[("succeeded".to_owned(), 3), ("odd".to_owned(), 1)].into_iter().collect()),
            tasks_ended: 4,
            tasks_unfinished: 6,
            nodes_by_state: [1, 0, 0, 1],
            cluster_health: 50,
            nodes: vec![node("a", 0.5, Some(0.002)), node("b", f64::MAX, None)],
            nodes_omitted: 0,
            rules: vec![("slow".to_owned(), "critical".to_owned(), 1)],
        }
    }

    #[test]
    fn the_openmetrics_answer_has_every_family_and_ends_with_eof() {
        let text = encode(figures(), Format::OpenMetrics);
        for line in [
            r#"dtest_serve_executions{state="running"} 2"#,
            r#"dtest_serve_executions{state="cancelling"} 1"#,
            r#"dtest_serve_executions_ended_total{state="succeeded"} 3"#,
            r#"dtest_serve_executions_ended_total{state="interrupted"} 0"#,
            r#"dtest_serve_executions_ended_total{state="odd"} 1"#,
            r#"dtest_serve_tasks{state="unfinished"} 6"#,
            r#"dtest_serve_nodes{state="dead"} 1"#,
            "dtest_serve_cluster_health 50",
            "dtest_serve_node_series_omitted 0",
            r#"dtest_serve_node_phi{node="a"} 0.5"#,
            r#"dtest_serve_node_score{node="b"} 90"#,
            r#"dtest_serve_node_round_trip_seconds{node="a"} 0.002"#,
            r#"dtest_serve_node_probes_total{node="a",result="ok"} 5"#,
            r#"dtest_serve_node_probes_total{node="b",result="failed"} 1"#,
            r#"dtest_serve_alerts_firing{rule="slow",severity="critical"} 1"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no line `{line}` in:\n{text}");
        }
        assert!(!text.contains(r#"dtest_serve_node_round_trip_seconds{node="b"}"#), "b never answered:\n{text}");
        assert!(text.contains(r#"dtest_serve_node_phi{node="b"} 1.7976931348623157e308"#), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
        let classic = encode(figures(), Format::PrometheusText);
        assert!(classic.contains("# TYPE dtest_serve_node_probes_total counter\n"), "{classic}");
        assert!(!classic.contains("# EOF"), "{classic}");
    }
}
