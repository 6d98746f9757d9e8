//! Alerts: rules on any metric, with a `for` duration, firing and resolved transitions,
//! acknowledgement, and a bounded history.
//!
//! A rule watches one metric of every subject (node, target, the cluster) that reports it. Per
//! rule and subject an alert is *inactive*, *pending* (the condition holds, for less than
//! `for_ms` so far), or *firing*. It fires when the condition has held for `for_ms` (at once when
//! `for_ms` is 0) and resolves the first time it does not hold; a pending alert whose condition
//! lapses goes back to inactive without a trace, as in Prometheus. A firing alert can be
//! acknowledged; the acknowledgement ends with it. Every transition is returned to the caller
//! and kept in a history of the last [`ALERT_HISTORY_MAX`] events.

use std::collections::{BTreeMap, VecDeque};

/// Events kept in the alert history.
pub const ALERT_HISTORY_MAX: usize = 1_000;
/// Rules one [`Alerts`] holds.
pub const ALERT_RULES_MAX: usize = 1_000;

/// How a value is compared with the threshold. Written as the operator: `>`, `>=`, `<`, `<=`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
pub enum Comparison {
    /// The value is above the threshold.
    #[serde(rename = ">")]
    Above,
    /// The value is at or above the threshold.
    #[serde(rename = ">=")]
    AtOrAbove,
    /// The value is below the threshold.
    #[serde(rename = "<")]
    Below,
    /// The value is at or below the threshold.
    #[serde(rename = "<=")]
    AtOrBelow,
}

impl Comparison {
    /// Every comparison, in the order the documentation lists them.
    pub const ALL: [Comparison; 4] =
        [Comparison::Above, Comparison::AtOrAbove, Comparison::Below, Comparison::AtOrBelow];

    /// The operator as scenario files write it: `>`, `>=`, `<` or `<=`.
    pub fn symbol(self) -> &'static str {
        match self {
            Comparison::Above => ">",
            Comparison::AtOrAbove => ">=",
            Comparison::Below => "<",
            Comparison::AtOrBelow => "<=",
        }
    }

    /// Whether `value` compared with `threshold` this way holds.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Above => value > threshold,
            Comparison::AtOrAbove => value >= threshold,
            Comparison::Below => value < threshold,
            Comparison::AtOrBelow => value <= threshold,
        }
    }
}

/// How bad a firing alert is.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Worth knowing.
    Info,
    /// Worth looking at.
    Warning,
    /// Worth acting on now.
    Critical,
}

impl Severity {
    /// Every severity, least severe first.
    pub const ALL: [Severity; 3] = [Severity::Info, Severity::Warning, Severity::Critical];

    /// The name scenario files and reports use: `info`, `warning` or `critical`.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

/// A rule: `metric` compared with `threshold` for `for_ms`.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertRule {
    /// Name, shown in events.
    pub name: String,
    /// The metric watched, e.g. `cpu` or `latency_p99_ms`.
    pub metric: String,
    /// The comparison.
    pub comparison: Comparison,
    /// The threshold.
    pub threshold: f64,
    /// How long the condition must hold before the alert fires.
    pub for_ms: u64,
    /// Severity when firing.
    pub severity: Severity,
}

/// What happened to an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The condition held for `for_ms`.
    Fired,
    /// The condition stopped holding.
    Resolved,
    /// Someone acknowledged it.
    Acknowledged,
}

/// One alert event.
#[derive(Clone, Debug, PartialEq)]
pub struct AlertEvent {
    /// The alert's id: the same for its firing, acknowledgement and resolution.
    pub id: u64,
    /// The rule's name.
    pub rule: String,
    /// Whose metric.
    pub subject: String,
    /// The rule's severity.
    pub severity: Severity,
    /// What happened.
    pub transition: Transition,
    /// When.
    pub at_ms: u64,
    /// The value observed at that moment (the last one, for an acknowledgement).
    pub value: f64,
}

/// Errors of the alert API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlertError {
    /// More rules than [`ALERT_RULES_MAX`].
    TooManyRules,
    /// No firing alert has this id.
    NotFiring(u64),
}

#[derive(Clone, Debug)]
enum State {
    Pending { since_ms: u64 },
    Firing { id: u64, acknowledged: bool, value: f64 },
}

/// The rules and the state of every alert.
#[derive(Clone, Debug, Default)]
pub struct Alerts {
    rules: Vec<AlertRule>,
    /// Per (rule index, subject): pending or firing; absent means inactive.
    states: BTreeMap<(usize, String), State>,
    history: VecDeque<AlertEvent>,
    next_id: u64,
}

impl Alerts {
    /// No rules yet.
    pub fn new() -> Alerts {
        Alerts::default()
    }

    /// Adds a rule.
    pub fn add_rule(&mut self, rule: AlertRule) -> Result<(), AlertError> {
        if self.rules.len() >= ALERT_RULES_MAX {
            return Err(AlertError::TooManyRules);
        }
        self.rules.push(rule);
        Ok(())
    }

    /// `subject` reported `value` for `metric` at `now_ms`; returns the transitions it caused.
    pub fn observe(&mut self, now_ms: u64, subject: &str, metric: &str, value: f64) -> Vec<AlertEvent> {
        let mut events = Vec::new();
        for r in 0..self.rules.len() {
            if self.rules[r].metric != metric {
                continue;
            }
            let rule = &self.rules[r];
            // A NaN value satisfies no comparison, so it resolves rather than fires.
            let holds = rule.comparison.holds(value, rule.threshold);
            let key = (r, subject.to_owned());
            match (self.states.get(&key).cloned(), holds) {
                (None, true) if rule.for_ms == 0 => {
                    let id = self.fire(r, subject, now_ms, value, &mut events);
                    self.states.insert(key, State::Firing { id, acknowledged: false, value });
                }
                (None, true) => {
                    self.states.insert(key, State::Pending { since_ms: now_ms });
                }
                (Some(State::Pending { since_ms }), true) if now_ms.saturating_sub(since_ms) >= rule.for_ms => {
                    let id = self.fire(r, subject, now_ms, value, &mut events);
                    self.states.insert(key, State::Firing { id, acknowledged: false, value });
                }
                (Some(State::Firing { id, acknowledged, .. }), true) => {
                    self.states.insert(key, State::Firing { id, acknowledged, value });
                }
                (Some(State::Pending { .. }), false) => {
                    self.states.remove(&key);
                }
                (Some(State::Firing { id, .. }), false) => {
                    self.states.remove(&key);
                    self.record(r, subject, id, Transition::Resolved, now_ms, value, &mut events);
                }
                (Some(State::Pending { .. }), true) | (None, false) => {}
            }
        }
        events
    }

    fn fire(&mut self, rule: usize, subject: &str, now_ms: u64, value: f64, events: &mut Vec<AlertEvent>) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        self.record(rule, subject, id, Transition::Fired, now_ms, value, events);
        id
    }

    #[allow(clippy::too_many_arguments)] // Every field of the event.
    fn record(
        &mut self,
        rule: usize,
        subject: &str,
        id: u64,
        transition: Transition,
        at_ms: u64,
        value: f64,
        events: &mut Vec<AlertEvent>,
    ) {
        let event = AlertEvent {
            id,
            rule: self.rules[rule].name.clone(),
            subject: subject.to_owned(),
            severity: self.rules[rule].severity,
            transition,
            at_ms,
            value,
        };
        if self.history.len() == ALERT_HISTORY_MAX {
            self.history.pop_front();
        }
        self.history.push_back(event.clone());
        events.push(event);
    }

    /// Acknowledges the firing alert `id` at `now_ms`. Acknowledging twice is harmless.
    pub fn acknowledge(&mut self, id: u64, now_ms: u64) -> Result<(), AlertError> {
        let found = self.states.iter_mut().find_map(|((rule, subject), state)| match state {
            State::Firing { id: fid, acknowledged, value } if *fid == id => {
                let first = !*acknowledged;
                *acknowledged = true;
                Some((*rule, subject.clone(), first, *value))
            }
            _ => None,
        });
        let Some((rule, subject, first, value)) = found else {
            return Err(AlertError::NotFiring(id));
        };
        if first {
            self.record(rule, &subject, id, Transition::Acknowledged, now_ms, value, &mut Vec::new());
        }
        Ok(())
    }

    /// Whether any alert is firing.
    pub fn is_firing(&self) -> bool {
        self.states.values().any(|state| matches!(state, State::Firing { .. }))
    }

    /// Firing alerts, most severe first, then by rule order and subject: (id, rule, subject,
    /// severity, acknowledged).
    pub fn firing(&self) -> Vec<(u64, &str, &str, Severity, bool)> {
        let mut out: Vec<_> = self
            .states
            .iter()
            .filter_map(|((rule, subject), state)| match state {
                State::Firing { id, acknowledged, .. } => {
                    let r = &self.rules[*rule];
                    Some((*id, r.name.as_str(), subject.as_str(), r.severity, *acknowledged))
                }
                State::Pending { .. } => None,
            })
            .collect();
        out.sort_by_key(|a| std::cmp::Reverse(a.3));
        out
    }

    /// The last [`ALERT_HISTORY_MAX`] events, oldest first.
    pub fn history(&self) -> impl Iterator<Item = &AlertEvent> {
        self.history.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu_rule(for_ms: u64) -> AlertRule {
        AlertRule {
            name: "cpu-hot".to_owned(),
            metric: "cpu".to_owned(),
            comparison: Comparison::Above,
            threshold: 0.9,
            for_ms,
            severity: Severity::Warning,
        }
    }

    fn transitions(events: &[AlertEvent]) -> Vec<(Transition, &str)> {
        events.iter().map(|e| (e.transition, e.subject.as_str())).collect()
    }

    #[test]
    fn an_alert_fires_after_for_and_resolves_when_the_condition_lapses() {
        let mut alerts = Alerts::new();
        alerts.add_rule(cpu_rule(10_000)).expect("room for a rule");
        assert!(alerts.observe(0, "n-1", "cpu", 0.95).is_empty(), "pending, not firing");
        assert!(alerts.observe(5_000, "n-1", "cpu", 0.97).is_empty());
        assert!(alerts.observe(5_000, "n-1", "memory", 0.99).is_empty(), "other metrics are not watched");
        let fired = alerts.observe(10_000, "n-1", "cpu", 0.96);
        assert_eq!(transitions(&fired), [(Transition::Fired, "n-1")]);
        assert!(alerts.observe(11_000, "n-1", "cpu", 0.99).is_empty(), "fires once");
        let resolved = alerts.observe(12_000, "n-1", "cpu", 0.5);
        assert_eq!(transitions(&resolved), [(Transition::Resolved, "n-1")]);
        assert_eq!(resolved[0].id, fired[0].id);
    }

    #[test]
    fn a_pending_alert_that_lapses_leaves_no_trace() {
        let mut alerts = Alerts::new();
        alerts.add_rule(cpu_rule(10_000)).expect("room for a rule");
        alerts.observe(0, "n-1", "cpu", 0.95);
        assert!(alerts.observe(9_000, "n-1", "cpu", 0.2).is_empty());
        assert!(alerts.observe(12_000, "n-1", "cpu", 0.95).is_empty(), "the clock starts again");
        assert_eq!(alerts.history().count(), 0);
    }

    #[test]
    fn subjects_are_tracked_apart_and_acknowledgement_ends_with_the_alert() {
        let mut alerts = Alerts::new();
        alerts.add_rule(AlertRule { severity: Severity::Critical, ..cpu_rule(0) }).expect("room for a rule");
        let a = alerts.observe(0, "n-1", "cpu", 1.0);
        let b = alerts.observe(0, "n-2", "cpu", 1.0);
        assert_ne!(a[0].id, b[0].id);
        alerts.acknowledge(a[0].id, 1).expect("firing");
        alerts.acknowledge(a[0].id, 2).expect("acknowledging twice is harmless");
        assert_eq!(alerts.firing().iter().filter(|f| f.4).count(), 1);
        alerts.observe(3, "n-1", "cpu", 0.1);
        assert_eq!(alerts.acknowledge(a[0].id, 4), Err(AlertError::NotFiring(a[0].id)));
        let kinds: Vec<Transition> = alerts.history().map(|e| e.transition).collect();
        assert_eq!(kinds, [Transition::Fired, Transition::Fired, Transition::Acknowledged, Transition::Resolved]);
    }

    #[test]
    fn names_and_symbols_are_what_serde_writes() {
        for severity in Severity::ALL {
            assert_eq!(serde_json::to_value(severity).expect("serialize"), severity.name());
        }
        for comparison in Comparison::ALL {
            assert_eq!(serde_json::to_value(comparison).expect("serialize"), comparison.symbol());
        }
    }

    #[test]
    fn the_history_is_bounded() {
        let mut alerts = Alerts::new();
        alerts.add_rule(cpu_rule(0)).expect("room for a rule");
        for i in 0..2_000u64 {
            alerts.observe(i, "n-1", "cpu", if i % 2 == 0 { 1.0 } else { 0.0 });
        }
        assert_eq!(alerts.history().count(), ALERT_HISTORY_MAX);
        assert_eq!(alerts.history().last().map(|e| e.transition), Some(Transition::Resolved));
        assert!(alerts.observe(5_000, "n-1", "cpu", f64::NAN).is_empty(), "NaN neither fires nor panics");
    }
}
