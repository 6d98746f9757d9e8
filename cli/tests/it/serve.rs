//! `dtest serve` end to end: a real service and real nodes driven from Python the way a client
//! would (requests, websockets, schemathesis), by `cli/tests/serve_e2e.py`, one case per test so
//! that a failure names its case. Each case starts its own processes on free ports and kills them
//! all, the nodes' commands included, before it returns.

/// Runs one case of `serve_e2e.py`.
fn case(name: &str) {
    crate::python_case("serve_e2e.py", name);
}

#[test]
fn submit_and_poll() {
    case("submit_and_poll");
}

#[test]
fn websocket_events_in_order_and_resume() {
    case("websocket_events_in_order_and_resume");
}

#[test]
fn node_sigkill_mid_execution() {
    case("node_sigkill_mid_execution");
}

#[test]
fn serve_sigkill_and_restart() {
    case("serve_sigkill_and_restart");
}

#[test]
fn read_only_token_cannot_write() {
    case("read_only_token_cannot_write");
}

#[test]
fn broadcast_reaches_running_commands() {
    case("broadcast_reaches_running_commands");
}

#[test]
fn schemathesis_against_live_openapi() {
    case("schemathesis_against_live_openapi");
}

#[test]
fn two_executions_share_nodes_without_over_commit() {
    case("two_executions_share_nodes_without_over_commit");
}

#[test]
fn load_with_a_profile_stops_early_and_keeps_its_measure() {
    case("load_with_a_profile_stops_early_and_keeps_its_measure");
}

#[test]
fn readme_service_commands_work_as_printed() {
    case("readme_service_commands_work_as_printed");
}

#[test]
fn readme_mutual_tls_commands_work_as_printed() {
    case("readme_mutual_tls_commands_work_as_printed");
}

#[test]
fn mutual_tls_cluster() {
    case("mutual_tls_cluster");
}

#[test]
fn json_logs_carry_ids_and_never_tokens() {
    case("json_logs_carry_ids_and_never_tokens");
}
