//! `dtest mcp` end to end: the MCP server driven by the official MCP Python SDK over stdio and
//! Streamable HTTP, the way an assistant's client would, by `cli/tests/mcp_e2e.py`, one case per
//! test so that a failure names its case. Each case starts its own server (and its local nodes)
//! in a temporary directory and kills every process it started before it returns.

/// Runs one case of `mcp_e2e.py`.
fn case(name: &str) {
    crate::python_case("mcp_e2e.py", name);
}

#[test]
fn stdio_tools_and_schemas() {
    case("stdio_tools_and_schemas");
}

#[test]
fn stdio_bad_scenario_is_a_tool_error() {
    case("stdio_bad_scenario_is_a_tool_error");
}

#[test]
fn http_bad_scenario_is_a_tool_error() {
    case("http_bad_scenario_is_a_tool_error");
}

#[test]
fn stdio_simulation_and_sweep_with_progress() {
    case("stdio_simulation_and_sweep_with_progress");
}

#[test]
fn http_simulation_and_sweep_with_progress() {
    case("http_simulation_and_sweep_with_progress");
}

#[test]
fn stdio_execution_on_local_nodes() {
    case("stdio_execution_on_local_nodes");
}

#[test]
fn http_execution_on_local_nodes() {
    case("http_execution_on_local_nodes");
}

#[test]
fn stdio_drives_a_running_serve() {
    case("stdio_drives_a_running_serve");
}

#[test]
fn stdio_drives_a_serve_over_mutual_tls() {
    case("stdio_drives_a_serve_over_mutual_tls");
}

#[test]
fn stdio_cancel_stops_a_simulation() {
    case("stdio_cancel_stops_a_simulation");
}

#[test]
fn http_cancel_stops_a_simulation() {
    case("http_cancel_stops_a_simulation");
}

#[test]
fn http_legacy_cancel_stops_a_simulation() {
    case("http_legacy_cancel_stops_a_simulation");
}

#[test]
fn http_over_mutual_tls_refuses_strangers() {
    case("http_over_mutual_tls_refuses_strangers");
}

#[test]
fn http_refuses_without_token_and_foreign_origin() {
    case("http_refuses_without_token_and_foreign_origin");
}

#[test]
fn guardrails_refuse_foreign_targets_and_budgets() {
    case("guardrails_refuse_foreign_targets_and_budgets");
}
