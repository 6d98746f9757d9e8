//! Resources and the prompt: reports as `dtest://executions/{id}/report`, the scenarios dtest
//! ships as `dtest://scenarios/{name}`, the scenario format's JSON Schema as
//! `dtest://schema/scenario`, and `write_scenario`, a prompt that sets an assistant to write one.

use rmcp::ErrorData;
use rmcp::model::{
    GetPromptRequestParams, GetPromptResult, Prompt, PromptArgument, PromptMessage, ReadResourceResult, Resource,
    ResourceContents, ResourceTemplate, Role,
};

use crate::tools::Dtest;

/// The scenarios in `scenarios/`, built in: the binary answers for them wherever it runs.
const SHIPPED: [(&str, &str); 8] = [
    ("contention", include_str!("../../scenarios/contention.json")),
    ("flapping-network", include_str!("../../scenarios/flapping-network.json")),
    ("geo", include_str!("../../scenarios/geo.json")),
    ("load-patterns", include_str!("../../scenarios/load-patterns.json")),
    ("node-failure", include_str!("../../scenarios/node-failure.json")),
    ("partition", include_str!("../../scenarios/partition.json")),
    ("scale-1000", include_str!("../../scenarios/scale-1000.json")),
    ("sharded-tests", include_str!("../../scenarios/sharded-tests.json")),
];

const SCHEMA_URI: &str = "dtest://schema/scenario";
const JSON: &str = "application/json";

/// The resource URI of `id`'s report.
pub fn report_uri(id: &str) -> String {
    format!("dtest://executions/{id}/report")
}

/// A link to a report, for a tool's answer.
pub fn report_link(uri: &str) -> Resource {
    let id = uri.trim_start_matches("dtest://executions/").trim_end_matches("/report");
    Resource::new(uri, format!("report of {id}"))
        .with_mime_type(JSON)
        .with_description("The JSON report, once it ended")
}

pub fn list() -> Vec<Resource> {
    let mut resources = vec![
        Resource::new(SCHEMA_URI, "scenario schema")
            .with_mime_type(JSON)
            .with_description("The JSON Schema of dtest's scenario format, every limit included"),
    ];
    resources.extend(SHIPPED.iter().map(|(name, text)| {
        let description = serde_json::from_str::<serde_json::Value>(text)
            .ok()
            .and_then(|v| v["description"].as_str().map(str::to_owned))
            .unwrap_or_default();
        Resource::new(format!("dtest://scenarios/{name}"), format!("scenario {name}"))
            .with_mime_type(JSON)
            .with_description(description)
    }));
    resources
}

pub fn templates() -> Vec<ResourceTemplate> {
    vec![
        ResourceTemplate::new("dtest://executions/{id}/report", "execution report")
            .with_mime_type(JSON)
            .with_description("The JSON report of an ended execution or simulation (ids from the tools)"),
    ]
}

pub async fn read(server: &Dtest, uri: &str) -> Result<ReadResourceResult, ErrorData> {
    let text = if uri == SCHEMA_URI {
        serde_json::to_string_pretty(dtest_core::scenario::schema()).unwrap_or_default()
    } else if let Some(name) = uri.strip_prefix("dtest://scenarios/") {
        let found = SHIPPED.iter().find(|(shipped, _)| *shipped == name);
        let (_, text) = found.ok_or_else(|| not_found(uri))?;
        (*text).to_owned()
    } else if let Some(id) = uri.strip_prefix("dtest://executions/").and_then(|rest| rest.strip_suffix("/report")) {
        server.report_json(id).await.map_err(|e| ErrorData::resource_not_found(e.message().to_owned(), None))?
    } else {
        return Err(not_found(uri));
    };
    Ok(ReadResourceResult::new(vec![ResourceContents::TextResourceContents {
        uri: uri.to_owned(),
        mime_type: Some(JSON.to_owned()),
        text,
        meta: None,
    }]))
}

fn not_found(uri: &str) -> ErrorData {
    ErrorData::resource_not_found(format!("no resource {uri}"), None)
}

pub fn prompts() -> Vec<Prompt> {
    let mut goal = PromptArgument::new("goal");
    goal.description = Some("What the scenario should test, in a sentence or two".to_owned());
    goal.required = Some(true);
    vec![Prompt::new(
        "write_scenario",
        Some("Write a dtest scenario for a testing goal, check it and simulate it"),
        Some(vec![goal]),
    )]
}

pub fn prompt(request: &GetPromptRequestParams) -> Result<GetPromptResult, ErrorData> {
    if request.name != "write_scenario" {
        return Err(ErrorData::invalid_params(format!("no prompt `{}`", request.name), None));
    }
    let goal = request
        .arguments
        .as_ref()
        .and_then(|a| a.get("goal"))
        .and_then(|g| g.as_str())
        .ok_or_else(|| ErrorData::invalid_params("goal: missing; say what the scenario should test", None))?;
    let text = format!(
        "Write a dtest scenario (JSON) that tests this: {goal}\n\n\
         The format's JSON Schema is the resource {SCHEMA_URI}; complete examples are the resources \
         dtest://scenarios/partition (a partition and its healing), dtest://scenarios/node-failure (kills and \
         restarts), dtest://scenarios/load-patterns (load on a target) and dtest://scenarios/sharded-tests (a \
         test suite split across nodes). A scenario has a name, a duration_s, a cluster of groups (each with a \
         count and resources), a workload of tasks (commands with a `sim` section, or load on a named target), \
         faults at times (partition, kill, packet_loss, latency, clog, pause), and expectations.\n\n\
         Then: 1. call validate_scenario with it, and fix every field it names until it passes; \
         2. call run_simulation on seed 42 and read the report's expectations and violations; \
         3. call sweep_seeds over 0..100 with swarm true to look for seeds that break an invariant; \
         4. say what the scenario tests, what the simulation showed, and the replay command of any failing seed."
    );
    Ok(GetPromptResult::new(vec![PromptMessage::new_text(Role::User, text)])
        .with_description("Write, check and simulate a dtest scenario"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_scenario_is_served_and_valid() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .expect("scenarios/")
            .filter_map(|e| e.ok()?.file_name().into_string().ok()?.strip_suffix(".json").map(str::to_owned))
            .collect();
        on_disk.sort();
        let served: Vec<&str> = SHIPPED.iter().map(|(name, _)| *name).collect();
        assert_eq!(served, on_disk, "SHIPPED lists every scenario in scenarios/, in order");
        for (name, text) in SHIPPED {
            assert!(dtest_core::scenario::parse(text.as_bytes()).is_ok(), "{name} parses");
        }
    }
}
