//! The node daemon's HTTP API: what travels between `dtest run` and `dtest node`, as JSON.
//!
//! Every request carries `Authorization: Bearer TOKEN`. The orchestrator always dials the node
//! (nodes need no route back to it): it keeps one long-polling `exchange` open per node for the
//! node's frames, and sends its own frames in exchanges that do not wait.
//!
//! | method and path | body | answer |
//! | --- | --- | --- |
//! | `GET /v1/info` | | [`NodeInfo`] |
//! | `PUT /v1/plan` | [`Plan`] | 204 |
//! | `POST /v1/exchange` | [`Exchange`] | [`ExchangeReply`]; 409 when the node lacks the plan |
//! | `PUT /v1/faults` | [`Faults`] | 204 |
//!
//! Errors are `{"error": "..."}` with 400 (malformed JSON), 401 (token), 409 (plan), 413 (body
//! over the limit) or 422 (a request the node refuses).

use std::collections::BTreeMap;

use dtest_core::faults::Link;
use dtest_core::protocol::{Frame, ToAgent, ToOrchestrator};
pub use dtest_core::scenario::Resources;
use serde::{Deserialize, Serialize};

/// The API's version prefix.
pub const PREFIX: &str = "/v1";

/// Bodies over this many bytes are refused with 413.
pub const BODY_MAX: usize = 16 << 20;

/// An exchange waits at most this long for the node's frames.
pub const WAIT_MAX_MS: u64 = 30_000;

/// What a node is and offers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    /// The daemon's version.
    pub version: String,
    /// This life of the daemon; a restart is a higher one.
    pub incarnation: u64,
    /// The scenario group it stands for, if told.
    pub group: Option<String>,
    /// Its region, if told.
    pub region: Option<String>,
    /// Its zone, if told.
    pub zone: Option<String>,
    /// Its capabilities.
    pub capabilities: Vec<String>,
    /// What it offers.
    pub resources: Resources,
    /// Whether `resources` were detected (else declared).
    pub resources_detected: bool,
    /// Whether it runs command tasks (`--allow-commands`).
    pub allow_commands: bool,
}

/// What the run's tasks are: an assignment's `work` is the index of a task instance, counted
/// across the entries in order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Names this plan; exchanges name the plan they assume.
    pub id: String,
    /// The task entries, in scenario order.
    pub entries: Vec<PlanEntry>,
    /// How long the run had been going when this copy was sent. Loads' `start_ms` count from
    /// the run's start, so a node that restarts mid-run and gets the plan again keeps the same
    /// start as the others.
    #[serde(default)]
    pub elapsed_ms: u64,
}

/// One task entry of a plan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanEntry {
    /// The entry's name.
    pub name: String,
    /// Its instances.
    pub count: u32,
    /// What an instance does.
    pub work: PlanWork,
}

/// What a task instance does.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PlanWork {
    /// Run a command; `{index}` and `{count}` in its arguments become the instance's.
    Command {
        /// The program and its arguments.
        argv: Vec<String>,
        /// Extra environment variables.
        #[serde(default)]
        env: BTreeMap<String, String>,
        /// Working directory, relative to the node's.
        #[serde(default)]
        cwd: Option<String>,
    },
    /// Generate load; an instance takes its share of the pattern's arrivals (the spec's
    /// `rate.index` is set per instance by the node).
    Load(crate::load::LoadSpec),
}

impl Plan {
    /// The entry and instance (from 1) of work item `work`.
    pub fn instance(&self, work: u32) -> Option<(&PlanEntry, u32)> {
        let mut first = 0u64;
        for entry in &self.entries {
            let end = first + u64::from(entry.count);
            if u64::from(work) < end {
                return Some((entry, (u64::from(work) - first) as u32 + 1));
            }
            first = end;
        }
        None
    }
}

/// Frames for the node, and how long to wait for frames back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Exchange {
    /// The plan the orchestrator assumes the node has.
    pub plan: String,
    /// Frames from the orchestrator.
    #[serde(default)]
    pub frames: Vec<Frame<ToAgent>>,
    /// Wait up to this long (capped at [`WAIT_MAX_MS`]) when the node has nothing to send.
    #[serde(default)]
    pub wait_ms: u64,
}

/// The node's frames for the orchestrator.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeReply {
    /// Frames from the node.
    pub frames: Vec<Frame<ToOrchestrator>>,
}

/// The network faults the node's message layer applies to its link with the orchestrator.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Cut, loss and latency per direction.
    #[serde(default)]
    pub link: Link,
}

/// An error answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}
