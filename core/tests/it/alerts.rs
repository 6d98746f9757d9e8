//! The `alerts` section of scenario files: what a valid section parses into, and where each kind
//! of mistake is reported.

use dtest_core::health::alerts::{Comparison, Severity};
use dtest_core::limits::ALERTS_MAX;
use dtest_core::scenario::{self, AlertMetric, AlertSpec};

/// A valid scenario of 3 nodes and 60 s with `alerts` as its alerts section.
fn with_alerts(alerts: &str) -> String {
    format!(
        r#"{{ "name": "a", "description": "d", "duration_s": 60,
  "cluster": {{ "groups": [ {{ "name": "n", "count": 3 }} ] }},
  "workload": {{ "tasks": [ {{ "name": "t", "kind": "command", "sim": {{ "duration_ms": {{ "mean": 1 }} }} }} ] }},
  "alerts": {alerts}
}}"#
    )
}

/// The problems of a scenario with this alerts section, as `PATH: MESSAGE`.
fn problems(alerts: &str) -> Vec<String> {
    match scenario::parse(with_alerts(alerts).as_bytes()) {
        Ok(_) => panic!("accepted {alerts}"),
        Err(problems) => problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect(),
    }
}

#[test]
fn a_valid_section_parses_into_exact_specs() {
    let text = with_alerts(
        r#"[
    { "name": "node-down", "metric": "nodes_down", "op": ">=", "threshold": 1, "for_s": 0, "severity": "critical" },
    { "name": "suspect", "metric": "phi", "op": ">", "threshold": 8, "for_s": 1.5 },
    { "name": "sick", "metric": "health_score", "op": "<", "threshold": 50, "severity": "info" },
    { "name": "cpu", "metric": "cpu", "op": "<=", "threshold": 0.05, "for_s": 60 }
  ]"#,
    );
    let scenario = scenario::parse(text.as_bytes()).expect("valid");
    let spec = |name: &str, metric, comparison, threshold, for_ms, severity| AlertSpec {
        name: name.to_owned(),
        metric,
        comparison,
        threshold,
        for_ms,
        severity,
    };
    assert_eq!(
        scenario.alerts,
        [
            spec("node-down", AlertMetric::NodesDown, Comparison::AtOrAbove, 1.0, 0, Severity::Critical),
            spec("suspect", AlertMetric::Phi, Comparison::Above, 8.0, 1_500, Severity::Warning),
            spec("sick", AlertMetric::HealthScore, Comparison::Below, 50.0, 0, Severity::Info),
            spec("cpu", AlertMetric::Cpu, Comparison::AtOrBelow, 0.05, 60_000, Severity::Warning),
        ]
    );
    let rule = scenario.alerts[1].rule();
    assert_eq!((rule.name.as_str(), rule.metric.as_str(), rule.for_ms), ("suspect", "phi", 1_500));
}

#[test]
fn a_scenario_without_alerts_has_none() {
    let text = with_alerts("[]");
    assert_eq!(scenario::parse(text.as_bytes()).expect("valid").alerts, []);
    let without = text.replace(r#""alerts": []"#, r#""retry": {}"#);
    assert_eq!(scenario::parse(without.as_bytes()).expect("valid").alerts, []);
}

#[test]
fn metric_names_are_what_the_format_accepts() {
    for metric in AlertMetric::ALL {
        assert_eq!(serde_json::to_value(metric).expect("serialize"), metric.name());
        let text =
            with_alerts(&format!(r#"[{{ "name": "x", "metric": "{}", "op": ">", "threshold": 0 }}]"#, metric.name()));
        assert_eq!(scenario::parse(text.as_bytes()).expect("valid").alerts[0].metric, metric);
    }
    let cluster: Vec<&str> = AlertMetric::ALL.iter().filter(|m| m.is_cluster()).map(|m| m.name()).collect();
    assert_eq!(cluster, ["nodes_down", "cluster_health"]);
}

#[test]
fn a_bad_op_is_reported_at_its_path() {
    assert_eq!(
        problems(
            r#"[ { "name": "a", "metric": "cpu", "op": ">", "threshold": 0.9 },
                 { "name": "b", "metric": "cpu", "op": "=>", "threshold": 0.9 } ]"#
        ),
        [r#"alerts[1].op: expected one of `>`, `>=`, `<`, `<=`, found "=>" (did you mean `>`?)"#]
    );
}

#[test]
fn an_unknown_metric_or_severity_is_reported_with_a_suggestion() {
    assert_eq!(
        problems(r#"[ { "name": "a", "metric": "nodes_dwn", "op": ">", "threshold": 1, "severity": "fatal" } ]"#),
        [
            "alerts[0].metric: expected one of `health_score`, `phi`, `cpu`, `memory`, `disk`, `task_error_rate`, \
             `nodes_down`, `cluster_health`, found \"nodes_dwn\" (did you mean `nodes_down`?)",
            "alerts[0].severity: expected one of `info`, `warning`, `critical`, found \"fatal\"",
        ]
    );
}

#[test]
fn thresholds_out_of_their_metric_range_are_reported() {
    let rule = |metric: &str, threshold: &str| {
        format!(r#"{{ "name": "{metric}", "metric": "{metric}", "op": ">", "threshold": {threshold} }}"#)
    };
    let section = format!(
        "[{}]",
        [
            rule("cpu", "80"),
            rule("task_error_rate", "1.01"),
            rule("health_score", "101"),
            rule("cluster_health", "100"),
            rule("phi", "1000"),
            rule("nodes_down", "4"),
            rule("disk", "-0.5"),
            rule("memory", "\"high\""),
        ]
        .join(",")
    );
    let mut found = problems(&section);
    // The schema's problems come first and stop the cross-field checks: fix them and look again.
    assert_eq!(
        found,
        [
            "alerts[6].threshold: expected a non-negative number, found -0.5",
            "alerts[7].threshold: expected a non-negative number, found \"high\""
        ]
    );
    found = problems(&section.replace("-0.5", "0.5").replace("\"high\"", "1"));
    assert_eq!(
        found,
        [
            "alerts[0].threshold: `cpu` is a fraction from 0 to 1, not a percentage; expected a threshold from 0 to 1, found 80",
            "alerts[1].threshold: `task_error_rate` is a fraction from 0 to 1, not a percentage; expected a threshold from 0 to 1, found 1.01",
            "alerts[2].threshold: `health_score` is a score from 0 to 100; expected a threshold from 0 to 100, found 101",
            "alerts[4].threshold: `phi` thresholds go up to 100 (PHI_THRESHOLD_MAX); expected a threshold from 0 to 100, found 1000",
            "alerts[5].threshold: the scenario has 3 nodes; expected a threshold from 0 to 3, found 4",
        ]
    );
}

#[test]
fn names_are_checked_and_unique() {
    assert_eq!(
        problems(
            r#"[ { "name": "hot", "metric": "cpu", "op": ">", "threshold": 0.9 },
                 { "name": "", "metric": "cpu", "op": ">", "threshold": 0.9 },
                 { "name": "hot", "metric": "memory", "op": ">", "threshold": 0.9 } ]"#
        ),
        ["alerts[1].name: expected a name, found an empty string", r#"alerts[2].name: alert "hot" is defined twice"#]
    );
}

#[test]
fn for_s_is_bounded_by_the_scenario() {
    assert_eq!(
        problems(r#"[ { "name": "a", "metric": "cpu", "op": ">", "threshold": 0.9, "for_s": 61 } ]"#),
        ["alerts[0].for_s: 61 s is longer than the scenario (`duration_s` is 60), so the alert could never fire"]
    );
    assert_eq!(
        problems(r#"[ { "name": "a", "metric": "cpu", "op": ">", "threshold": 0.9, "for_s": 1e9 } ]"#),
        ["alerts[0].for_s: expected at most 604800, found 1000000000"]
    );
}

#[test]
fn too_many_rules_are_reported_against_the_limit() {
    let rules: Vec<String> = (0..=ALERTS_MAX)
        .map(|i| format!(r#"{{ "name": "a{i}", "metric": "cpu", "op": ">", "threshold": 0.9 }}"#))
        .collect();
    assert_eq!(
        problems(&format!("[{}]", rules.join(","))),
        [format!("alerts: expected at most {ALERTS_MAX} items, found {}", ALERTS_MAX + 1)]
    );
    let most = with_alerts(&format!("[{}]", rules[..ALERTS_MAX].join(",")));
    assert_eq!(scenario::parse(most.as_bytes()).expect("valid").alerts.len(), ALERTS_MAX);
}

#[test]
fn unknown_and_missing_fields_are_reported() {
    assert_eq!(
        problems(r#"[ { "name": "a", "metric": "cpu", "op": ">", "treshold": 0.9, "for": 3 } ]"#),
        [
            "alerts[0]: missing field `threshold`",
            "alerts[0].treshold: unknown field `treshold`, did you mean `threshold`?",
            "alerts[0].for: unknown field `for`; expected one of `for_s`, `metric`, `name`, `op`, `severity`, `threshold`",
        ]
    );
}
