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
    /// Highest total rate of one load, requests per second over all its instances.
    pub max_rps: f64,
    /// Longest load, seconds.
    pub max_duration_s: u64,
}

impl Default for Guard {
    fn default() -> Guard {
        Guard { allow_targets: vec!["loopback".to_owned()], max_rps: 1_000.0, max_duration_s: 300 }
    }
}

impl Guard {
    /// Checks every load task of `scenario`. `field` names the argument the scenario came in,
    /// for the error.
    pub fn check_scenario(&self, scenario: &Scenario, field: &str) -> Result<(), ToolError> {
        for task in &scenario.workload.tasks {
            let Work::Load(load) = &task.work else { continue };
            let target = &scenario.targets[load.target.0 as usize];
            if let Some(url) = &target.url {
                self.check_url(url, &format!("{field}.targets.{}.url", target.name))?;
            }
            let field = format!("{field}.workload.tasks[{}].load.pattern", task.name);
            self.check_pattern(&load.pattern, u64::from(task.count), &field)?;
        }
        Ok(())
    }

    /// Checks a load's target.
    pub fn check_url(&self, url: &str, field: &str) -> Result<(), ToolError> {
        let host = host_of(url)
            .ok_or_else(|| ToolError::invalid(field, format!("{url:?} is not an http, https, ws or wss URL")))?;
        if self.allow_targets.iter().any(|pattern| allows(pattern, &host)) {
            return Ok(());
        }
        Err(ToolError::invalid(
            field,
            format!(
                "{host} is not an allowed target; this server sends load only to {} (its --allow-target)",
                self.allow_targets.join(", ")
            ),
        ))
    }

    /// Checks a pattern run by `instances` at once.
    pub fn check_pattern(&self, pattern: &Pattern, instances: u64, field: &str) -> Result<(), ToolError> {
        let total = pattern.peak_rps() * instances as f64;
        if total > self.max_rps {
            return Err(ToolError::invalid(
                field,
                format!(
                    "asks for up to {total} requests per second ({} on each of {instances}); this server allows {} (its --max-rps)",
                    pattern.peak_rps(),
                    self.max_rps
                ),
            ));
        }
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

/// The host of a load URL, lowercase, without brackets, parsed by the very parser the node's
/// load engine uses (`http::Uri`), so that the host checked is the host loaded.
fn host_of(url: &str) -> Option<String> {
    let uri: axum::http::Uri = url.parse().ok()?;
    if !matches!(uri.scheme_str(), Some("http" | "https" | "ws" | "wss")) {
        return None;
    }
    let host = uri.authority()?.host().trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
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
}
