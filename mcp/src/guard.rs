//! What load an assistant may aim, and where. An assistant holding these tools must not be able
//! to turn the cluster on an arbitrary host, nor past the budgets its operator set: every load
//! task of a scenario submitted for real, every `start_load_test` and every profile is checked
//! here before it reaches the orchestrator. Command tasks need more: the nodes' own
//! `--allow-commands`, which this server cannot grant.

use std::net::IpAddr;

use dtest_core::scenario::{Pattern, Scenario, Work};

use crate::tools::ToolError;

/// The guardrails.
#[derive(Clone, Debug)]
pub struct Guard {
    /// Hosts load may go to: `loopback` (127.0.0.0/8, ::1, localhost), an exact host name or
    /// address, `*.example.com` (any subdomain), or `*` (anywhere).
    pub allow_targets: Vec<String>,
    /// Hosts a node registered through a tool may be at, in the same patterns: the orchestrator
    /// sends every node its node token, and a node runs what it is sent.
    pub allow_nodes: Vec<String>,
    /// Highest total rate of all load at once, requests per second over every task instance.
    pub max_rps: f64,
    /// Longest load, seconds.
    pub max_duration_s: u64,
}

impl Default for Guard {
    fn default() -> Guard {
        Guard {
            allow_targets: vec!["loopback".to_owned()],
            allow_nodes: vec!["loopback".to_owned()],
            max_rps: 1_000.0,
            max_duration_s: 300,
        }
    }
}

/// Why a pattern cannot be a host pattern, if it cannot.
pub fn check_host_pattern(pattern: &str) -> Result<(), String> {
    let host = pattern.strip_prefix("*.").unwrap_or(pattern);
    let valid = pattern == "*"
        || (!host.is_empty()
            && !host.ends_with('.')
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
            && (!host.contains(':') || host.parse::<std::net::Ipv6Addr>().is_ok() || host.starts_with('[')));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{pattern:?} is not a host pattern: `loopback`, a host or address (no port), `*.example.com` or `*`"
        ))
    }
}

impl Guard {
    /// Checks every load task of `scenario` (targets, headers, each pattern's length) and the
    /// rate of all of them at once. `field` names the argument the scenario came in, for the
    /// error.
    pub fn check_scenario(&self, scenario: &Scenario, field: &str) -> Result<(), ToolError> {
        let mut total_rps = 0.0;
        for task in &scenario.workload.tasks {
            let Work::Load(load) = &task.work else { continue };
            let target = &scenario.targets[load.target.0 as usize];
            if let Some(url) = &target.url {
                self.check_url(url, &format!("{field}.targets.{}.url", target.name))?;
            }
            let at = format!("{field}.workload.tasks[{}].load", task.name);
            if load.headers.keys().any(|name| name.eq_ignore_ascii_case("host")) {
                // A loopback target with another Host goes through any local proxy to that host.
                return Err(ToolError::invalid(
                    &format!("{at}.headers"),
                    "a Host header is refused by this server's guardrails",
                ));
            }
            self.check_duration(&load.pattern, &format!("{at}.pattern"))?;
            total_rps += load.pattern.peak_rps() * f64::from(task.count);
        }
        self.check_rate(total_rps, &format!("{field}.workload.tasks"))
    }

    /// Checks a load's target.
    pub fn check_url(&self, url: &str, field: &str) -> Result<(), ToolError> {
        check_host(url, &self.allow_targets, "sends load only to", "--allow-target", field)
    }

    /// Checks where a node to register is.
    pub fn check_node_url(&self, url: &str, field: &str) -> Result<(), ToolError> {
        check_host(url, &self.allow_nodes, "registers nodes only at", "--allow-node", field)
    }

    /// Checks one pattern run by `instances` at once.
    pub fn check_pattern(&self, pattern: &Pattern, instances: u64, field: &str) -> Result<(), ToolError> {
        self.check_duration(pattern, field)?;
        self.check_rate(pattern.peak_rps() * instances as f64, field)
    }

    fn check_rate(&self, total_rps: f64, field: &str) -> Result<(), ToolError> {
        if total_rps > self.max_rps {
            return Err(ToolError::invalid(
                field,
                format!(
                    "asks for up to {total_rps} requests per second in all; this server allows {} (its --max-rps)",
                    self.max_rps
                ),
            ));
        }
        Ok(())
    }

    fn check_duration(&self, pattern: &Pattern, field: &str) -> Result<(), ToolError> {
        let seconds = pattern.duration_ms().div_ceil(1_000);
        if seconds > self.max_duration_s {
            return Err(ToolError::invalid(
                field,
                format!("lasts {seconds} s; this server allows {} s (its --max-duration)", self.max_duration_s),
            ));
        }
        Ok(())
    }
}

fn check_host(url: &str, allowed: &[String], what: &str, flag: &str, field: &str) -> Result<(), ToolError> {
    let host = host_of(url)
        .ok_or_else(|| ToolError::invalid(field, format!("{url:?} is not an http, https, ws or wss URL")))?;
    if allowed.iter().any(|pattern| allows(pattern, &host)) {
        return Ok(());
    }
    Err(ToolError::invalid(
        field,
        format!("{host} is not allowed; this server {what} {} (its {flag})", allowed.join(", ")),
    ))
}

/// The host of a load URL, as the node's load engine reads it, so that the host checked is the
/// host loaded.
fn host_of(url: &str) -> Option<String> {
    let (scheme, host) = dtest_node::load::scheme_and_host(url)?;
    matches!(scheme.as_str(), "http" | "https" | "ws" | "wss").then_some(host)
}

fn allows(pattern: &str, host: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    match pattern.as_str() {
        "*" => true,
        "loopback" => host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback()),
        _ => match pattern.strip_prefix("*.") {
            Some(domain) => host.strip_suffix(domain).is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
            None => pattern.trim_start_matches('[').trim_end_matches(']') == host,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_by_default() {
        let guard = Guard::default();
        for url in [
            "http://127.0.0.1:8080/",
            "http://localhost/x",
            "https://[::1]:443/",
            "http://127.1.2.3",
            "ws://127.0.0.1/",
        ] {
            assert!(guard.check_url(url, "url").is_ok(), "{url}");
        }
        for url in [
            "http://example.com/",
            "http://10.0.0.1/",
            "http://127.0.0.1.evil.com/",
            "http://user@example.com/",
            "http://localhost@example.com/",
            "ftp://127.0.0.1/",
            "127.0.0.1",
            "http://evil.com\\@127.0.0.1/",
            "http://2130706433/",
            "http://LOCALHOST.evil.com/",
        ] {
            let error = guard.check_url(url, "url").expect_err(url);
            assert!(error.message().starts_with("url:"), "{}", error.message());
        }
    }

    #[test]
    fn patterns_name_hosts_and_domains() {
        let guard = Guard { allow_targets: vec!["*.test.internal".into(), "10.0.0.7".into()], ..Guard::default() };
        assert!(guard.check_url("http://api.test.internal:80/", "url").is_ok());
        assert!(guard.check_url("http://10.0.0.7/", "url").is_ok());
        assert!(guard.check_url("http://test.internal/", "url").is_err());
        assert!(guard.check_url("http://eviltest.internal/", "url").is_err());
        assert!(guard.check_url("http://127.0.0.1/", "url").is_err(), "loopback only when listed");
    }

    #[test]
    fn budgets_count_every_instance() {
        let guard = Guard { max_rps: 100.0, max_duration_s: 60, ..Guard::default() };
        let constant = |rps, duration_ms| Pattern::Constant { rps, duration_ms };
        assert!(guard.check_pattern(&constant(50.0, 60_000), 2, "pattern").is_ok());
        assert!(guard.check_pattern(&constant(50.0, 60_000), 3, "pattern").is_err());
        assert!(guard.check_pattern(&constant(1.0, 60_001), 1, "pattern").is_err());
        let spike = Pattern::Spike {
            base_rps: 10.0,
            spike_rps: 500.0,
            spike_at_ms: 1_000,
            spike_duration_ms: 1_000,
            duration_ms: 10_000,
        };
        let error = guard.check_pattern(&spike, 1, "pattern").expect_err("a spike past the budget");
        assert!(error.message().contains("500"), "{}", error.message());
    }

    fn scenario(loads: &str) -> Scenario {
        let text = format!(
            r#"{{"name": "g", "description": "guard", "duration_s": 60,
                "cluster": {{"groups": [{{"name": "a", "count": 2}}]}},
                "targets": {{"t": {{"url": "http://127.0.0.1:9/"}}}},
                "workload": {{"tasks": [{loads}]}}}}"#
        );
        dtest_core::scenario::parse(text.as_bytes()).expect("a valid scenario")
    }

    #[test]
    fn a_scenario_s_loads_count_together() {
        let guard = Guard { max_rps: 100.0, ..Guard::default() };
        let load = |name: &str, rps: u32| {
            format!(
                r#"{{"name": "{name}", "kind": "load", "load": {{"target": "t",
                    "pattern": {{"type": "constant", "rps": {rps}, "duration_s": 10}}}}}}"#
            )
        };
        assert!(guard.check_scenario(&scenario(&load("one", 90)), "scenario").is_ok());
        let two = format!("{}, {}", load("one", 60), load("two", 60));
        let error = guard.check_scenario(&scenario(&two), "scenario").expect_err("120 rps in all");
        assert!(error.message().starts_with("scenario.workload.tasks: asks for up to 120"), "{}", error.message());
    }

    #[test]
    fn a_host_header_is_refused() {
        let loads = r#"{"name": "one", "kind": "load", "load": {"target": "t", "headers": {"HOST": "internal.corp"},
                        "pattern": {"type": "constant", "rps": 1, "duration_s": 10}}}"#;
        let error = Guard::default().check_scenario(&scenario(loads), "scenario").expect_err("a Host header");
        assert!(error.message().starts_with("scenario.workload.tasks[one].load.headers:"), "{}", error.message());
    }

    #[test]
    fn nodes_register_at_loopback_only_by_default() {
        let guard = Guard::default();
        assert!(guard.check_node_url("http://127.0.0.1:7071", "url").is_ok());
        assert!(guard.check_node_url("http://10.1.2.3:7071", "url").is_err());
    }

    #[test]
    fn host_patterns_are_checked() {
        for good in ["loopback", "*", "*.test.internal", "10.0.0.7", "::1", "[::1]", "api.example.com"] {
            assert!(check_host_pattern(good).is_ok(), "{good}");
        }
        for bad in ["", "*.", "host:8080", "http://x", "a/b", "example.com."] {
            assert!(check_host_pattern(bad).is_err(), "{bad}");
        }
    }
}
