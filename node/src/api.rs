//! The node daemon's HTTP API: what travels between `dtest run` and `dtest node`, as JSON.
//!
//! Every request carries `Authorization: Bearer TOKEN`. The orchestrator always dials the node
//! (nodes need no route back to it): it keeps one long-polling `exchange` open per node for the
//! node's frames, and sends its own frames in exchanges that do not wait.
//!
//! | method and path | body | answer |
//! | --- | --- | --- |
//! | `GET /v1/info` | | [`NodeInfo`] |
//! | `PUT /v1/plan` | [`Plan`] | 204; 422 when [`Plan::check`] refuses it; 409 when [`PLANS_MAX`] plans all have running work |
//! | `DELETE /v1/plans/{id}` | | 204; 404 when the node does not hold that plan |
//! | `POST /v1/exchange` | [`Exchange`] | [`ExchangeReply`]; 409 when the node lacks the plan |
//! | `PUT /v1/faults` | [`Faults`] | 204; 409 when it names a plan the node lacks |
//! | `POST /v1/messages` | [`NodeMessage`] | [`MessageReceipt`]; 409 when the inbox is full |
//!
//! A node holds up to [`PLANS_MAX`] plans at once, each a life of its own (its own agent and
//! incarnation, work, frames and faults); exchanges go to the life of the plan they name. PUT of
//! a plan the node holds changes nothing (a restarted orchestrator re-adopts the node so); PUT of
//! a new one when the node is full evicts the oldest plan with no running work.
//!
//! Messages are appended, one JSON line each, to the node's inbox file
//! (`<workdir>/.dtest/inbox-<port>.jsonl`, [`inbox_file`]), whose absolute path every command
//! task gets in `DTEST_INBOX`; a test shard waits for a signal by reading it.
//!
//! With `dtest node --orchestrator URL` the node registers itself, and again every few seconds:
//! it sends `POST {URL}/v1/nodes` with a [`NodeRegistration`].
//!
//! Errors are `{"error": "..."}` with 400 (malformed JSON), 401 (token), 404 (no such plan), 409
//! (plan or inbox), 413 (body over the limit), 422 (a request the node refuses) or 500 (the inbox
//! cannot be written).

use std::collections::BTreeMap;

use dtest_core::faults::Link;
use dtest_core::limits::{CAPABILITIES_MAX, TASK_COUNT_MAX, TASK_SPECS_MAX, TASKS_MAX};
use dtest_core::protocol::{DeliveryMode, Frame, ToAgent, ToOrchestrator};
use dtest_core::scenario::Path;
pub use dtest_core::scenario::Resources;
use dtest_core::scenario::rules::{self, Problems};
use serde::{Deserialize, Serialize};

/// The API's version prefix.
pub const PREFIX: &str = "/v1";

/// Bodies over this many bytes are refused with 413.
pub const BODY_MAX: usize = 16 << 20;

/// An exchange waits at most this long for the node's frames.
pub const WAIT_MAX_MS: u64 = 30_000;

/// A node holds at most this many plans (lives) at once; a new plan beyond evicts the oldest
/// without running work, and is refused (409) when every plan has some.
pub const PLANS_MAX: usize = 8;

/// A plan's id is 1 to this many bytes of letters, digits, `_`, `-` and `.`, starting with a
/// letter or digit (an execution id is a scenario's name and 16 hex digits): it names the
/// directory of the plan's command tasks on the node.
pub const PLAN_ID_MAX: usize = 128;

/// A refused plan's answer names at most this many of its problems.
pub const PLAN_PROBLEMS_SHOWN: usize = 20;

/// The inbox file of the daemon listening on `port`, relative to its working directory: one per
/// daemon, so daemons that share a directory (`dtest run --local`) never share an inbox.
pub fn inbox_file(port: u16) -> String {
    format!(".dtest/inbox-{port}.jsonl")
}

/// A daemon life appends at most this many messages to its inbox; beyond, 409.
pub const INBOX_LINES_MAX: u32 = 10_000;

/// A message's body, serialized, is at most this many bytes; beyond, 413.
pub const MESSAGE_BODY_MAX: usize = 64 << 10;

/// A message's `id` and `from` are at most this many characters.
pub const MESSAGE_NAME_MAX: usize = 128;

/// The node remembers this many recent `exactly_once` message ids to answer duplicates.
pub const MESSAGE_IDS_MAX: usize = 10_000;

/// A registration carries at most this many labels.
pub const LABELS_MAX: usize = 32;

/// A label's key is 1 to this many characters of `[a-z0-9_.-]`.
pub const LABEL_KEY_MAX: usize = 63;

/// A label's value is at most this many characters.
pub const LABEL_VALUE_MAX: usize = 128;

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
    /// How many plans (lives) it holds, at most [`PLANS_MAX`].
    #[serde(default)]
    pub plans: u32,
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

/// The longest version string a node may give.
const VERSION_BYTES_MAX: usize = 64;

impl NodeInfo {
    /// Checks what a node says of itself, before an orchestrator believes it, with the scenario
    /// parser's own rules: its resources within the limits, its group, region, zone and
    /// capabilities names (at most [`CAPABILITIES_MAX`]), its plans at most [`PLANS_MAX`].
    pub fn check(&self) -> Result<(), String> {
        let root = Path::root();
        let mut problems = Problems::new();
        rules::resources(&self.resources, &root.key("resources"), &mut problems);
        for (field, value) in [("group", &self.group), ("region", &self.region), ("zone", &self.zone)] {
            if let Some(Err(why)) = value.as_deref().map(rules::name) {
                problems.push((root.key(field), why));
            }
        }
        if let Err(why) = rules::items(self.capabilities.len(), 0, CAPABILITIES_MAX) {
            problems.push((root.key("capabilities"), why));
        }
        for (i, capability) in self.capabilities.iter().enumerate().take(CAPABILITIES_MAX + 1) {
            if let Err(why) = rules::name(capability) {
                problems.push((root.key("capabilities").index(i), why));
            }
        }
        if self.version.len() > VERSION_BYTES_MAX {
            problems.push((root.key("version"), format!("at most {VERSION_BYTES_MAX} bytes")));
        }
        if self.plans as usize > PLANS_MAX {
            problems.push((root.key("plans"), format!("at most {PLANS_MAX}")));
        }
        match problems.first() {
            None => Ok(()),
            Some((path, why)) => Err(format!("{path}: {why}")),
        }
    }
}

impl Plan {
    /// Checks the plan before anything of it runs, with the scenario parser's own rules and
    /// limits ([`dtest_core::scenario::rules`]): its id, every entry's name, count and work (a
    /// command's argv and env; a load's URL, headers, timeout, connections, start and pattern)
    /// and the instances in all. Every problem (up to [`PLAN_PROBLEMS_SHOWN`]) as `FIELD: WHY`,
    /// the field as the plan's JSON spells it.
    pub fn check(&self) -> Result<(), String> {
        let root = Path::root();
        let mut problems = Problems::new();
        let mut field = |path: Path, checked: Result<(), String>| {
            if let Err(why) = checked {
                problems.push((path, why));
            }
        };
        field(root.key("id"), plan_id(&self.id));
        field(root.key("entries"), rules::items(self.entries.len(), 0, TASK_SPECS_MAX));
        let mut total: u64 = 0;
        for (i, entry) in self.entries.iter().enumerate() {
            let at = root.key("entries").index(i);
            field(at.key("name"), rules::name(&entry.name));
            field(at.key("count"), rules::within(u64::from(entry.count), 1, TASK_COUNT_MAX));
            total = total.saturating_add(u64::from(entry.count));
        }
        field(root.key("entries"), rules::at_most(total, "task instances in all", TASKS_MAX, "TASKS_MAX"));
        for (i, entry) in self.entries.iter().enumerate() {
            let at = root.key("entries").index(i).key("work");
            match &entry.work {
                PlanWork::Command { argv, env, cwd } => {
                    rules::command(argv, env, cwd.as_deref(), &at.key("command"), &mut problems)
                }
                PlanWork::Load(spec) => spec.validate(&at.key("load"), &mut problems),
            }
        }
        if problems.is_empty() {
            return Ok(());
        }
        let shown: Vec<String> =
            problems.iter().take(PLAN_PROBLEMS_SHOWN).map(|(path, why)| format!("{path}: {why}")).collect();
        let mut message = format!("the plan is refused: {}", shown.join("; "));
        if problems.len() > PLAN_PROBLEMS_SHOWN {
            message.push_str(&format!("; and {} more", problems.len() - PLAN_PROBLEMS_SHOWN));
        }
        Err(message)
    }

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
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Cut, loss and latency per direction.
    #[serde(default)]
    pub link: Link,
    /// The plan whose link this is; none applies it to every plan the node holds.
    #[serde(default)]
    pub plan: Option<String>,
}

/// A message for the commands running on a node: appended to its inbox file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeMessage {
    /// Names the message, 1 to [`MESSAGE_NAME_MAX`] characters; `exactly_once` messages with
    /// an id seen recently are not appended again.
    pub id: String,
    /// Who sends it, at most [`MESSAGE_NAME_MAX`] characters.
    pub from: String,
    /// Whether a repeated id is a duplicate (`exactly_once`) or a new delivery.
    pub mode: DeliveryMode,
    /// What it says; at most [`MESSAGE_BODY_MAX`] bytes serialized.
    pub body: serde_json::Value,
}

/// What became of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageReceipt {
    /// The message was an `exactly_once` one already appended; it was not appended again.
    pub duplicate: bool,
    /// How many command tasks ran on the node when it was appended.
    pub delivered_to: u32,
}

/// A node telling a service it exists: `POST {orchestrator}/v1/nodes`, with the node's token
/// for the service as `Authorization: Bearer TOKEN`. Sent at start and every few seconds; the
/// service upserts it by name.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeRegistration {
    /// The node's name, unique among the service's nodes.
    pub name: String,
    /// The base URL the service reaches the node's API at (`http://host:port`).
    pub url: String,
    /// What the node is and offers, as `GET /v1/info` would answer.
    pub info: NodeInfo,
    /// Free-form labels for choosing nodes; see [`validate_labels`].
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Checks labels: at most [`LABELS_MAX`], keys of 1 to [`LABEL_KEY_MAX`] characters of
/// `[a-z0-9_.-]`, values of at most [`LABEL_VALUE_MAX`] characters.
pub fn validate_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > LABELS_MAX {
        return Err(format!("{} labels; at most {LABELS_MAX} are allowed", labels.len()));
    }
    for (key, value) in labels {
        let key_chars = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-');
        if key.is_empty() || key.chars().count() > LABEL_KEY_MAX || !key.chars().all(key_chars) {
            return Err(format!("label key `{key}`: use 1 to {LABEL_KEY_MAX} characters of a-z, 0-9, `_`, `.`, `-`"));
        }
        if value.chars().count() > LABEL_VALUE_MAX {
            return Err(format!("label `{key}`: the value is over {LABEL_VALUE_MAX} characters"));
        }
    }
    Ok(())
}

/// Checks a plan's id: 1 to [`PLAN_ID_MAX`] bytes of letters, digits, `_`, `-` and `.`,
/// starting with a letter or digit, so that it is a plain directory name.
pub fn plan_id(id: &str) -> Result<(), String> {
    let plain = |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.');
    if id.len() > PLAN_ID_MAX {
        return Err(format!("expected at most {PLAN_ID_MAX} bytes, found {}", id.len()));
    }
    if !id.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric()) || !id.bytes().all(plain) {
        return Err(format!(
            "expected letters, digits, `_`, `-` and `.`, starting with a letter or digit; found {id:?}"
        ));
    }
    Ok(())
}

/// An error answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    /// What went wrong.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn labels_are_checked_for_key_characters_lengths_and_count() {
        assert_eq!(validate_labels(&labels(&[("zone", "eu-1"), ("gpu.kind_2", "a100")])), Ok(()));
        assert!(validate_labels(&labels(&[("Zone", "x")])).is_err_and(|e| e.contains("`Zone`")));
        assert!(validate_labels(&labels(&[("", "x")])).is_err());
        assert!(validate_labels(&labels(&[(&"k".repeat(64), "x")])).is_err());
        assert!(validate_labels(&labels(&[("k", &"v".repeat(129))])).is_err());
        let many: BTreeMap<String, String> = (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(validate_labels(&many).is_err_and(|e| e.contains("at most 32")));
    }

    #[test]
    fn a_node_s_account_of_itself_is_checked_as_a_scenario_s_groups_are() {
        let good = NodeInfo {
            version: "0.1.0".to_owned(),
            incarnation: 1,
            group: Some("eu".to_owned()),
            region: Some("eu-west".to_owned()),
            zone: None,
            capabilities: vec!["linux".to_owned()],
            resources: Resources { cpu_millis: 4000, memory_mb: 8192, ..Resources::default() },
            resources_detected: true,
            allow_commands: true,
            plans: 0,
        };
        assert_eq!(good.check(), Ok(()));
        let huge = NodeInfo { resources: Resources { cpu_millis: u64::MAX, ..Resources::default() }, ..good.clone() };
        assert!(huge.check().expect_err("past the limit").starts_with("resources.cpu_millis"));
        let odd = NodeInfo { capabilities: vec!["a b".to_owned()], ..good.clone() };
        assert!(odd.check().expect_err("not a name").starts_with("capabilities[0]"));
        let many = NodeInfo { capabilities: (0..100).map(|i| format!("c{i}")).collect(), ..good.clone() };
        assert!(many.check().is_err());
        let group = NodeInfo { group: Some("x".repeat(1000)), ..good };
        assert!(group.check().expect_err("too long").starts_with("group"));
    }

    #[test]
    fn faults_without_a_plan_still_parse_and_unknown_fields_are_refused() {
        let faults: Faults = serde_json::from_str(r#"{"link": {}}"#).expect("faults of every plan");
        assert_eq!(faults.plan, None);
        assert!(serde_json::from_str::<Faults>(r#"{"plans": "x"}"#).is_err());
    }
}
