//! The messages between the orchestrator and node agents. Shells carry them (madsim datagrams in
//! the simulator, HTTP/JSON for real nodes) wrapped in [`super::Packet`]s; the state machines
//! decide everything.
//!
//! Every message about work names the task and its **attempt**. Attempts are fencing tokens: the
//! orchestrator counts a result only for the attempt it currently leases to that node, so a
//! result from an attempt it has since reassigned (a node partitioned away, presumed dead, then
//! back) is refused. Every message from an agent names its **incarnation**: a restarted node is
//! a new incarnation with empty memory, and nothing of the old one's is its own any more.

use crate::health::Metrics;
use crate::measure::{LiveLoad, LoadResult};

/// A task instance, as the orchestrator numbers them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct TaskId(pub u64);

/// One attempt at a task; higher is newer. The fencing token of results.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Attempt(pub u32);

/// A node process's life: a restart is a new, higher incarnation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct Incarnation(pub u64);

/// How an attempt ended, as the agent saw it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The work succeeded (a command exited 0, a load plan ran to its end).
    Passed,
    /// The work failed; a short reason.
    Failed(String),
    /// The work ran past its timeout and was stopped.
    TimedOut,
    /// The work was stopped because the orchestrator cancelled it.
    Cancelled,
}

/// From the orchestrator to an agent.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToAgent {
    /// Run `attempt` of `task`, described by `work` (opaque to the protocol: the shell's job),
    /// for at most `timeout_ms`.
    Assign {
        /// The task.
        task: TaskId,
        /// Its attempt.
        attempt: Attempt,
        /// What to run, in the shell's terms.
        work: u32,
        /// When to give up on it.
        timeout_ms: u64,
    },
    /// Stop `attempt` of `task` if it runs.
    Cancel {
        /// The task.
        task: TaskId,
        /// Its attempt.
        attempt: Attempt,
    },
    /// The orchestrator has the result of `attempt` of `task`; the agent may forget it.
    ResultAccepted {
        /// The task.
        task: TaskId,
        /// Its attempt.
        attempt: Attempt,
    },
}

/// From an agent to the orchestrator.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ToOrchestrator {
    /// The agent (re)started: this incarnation of this node is alive.
    Hello {
        /// This life of the node.
        incarnation: Incarnation,
    },
    /// Still alive, with metrics and the attempts it is running.
    Heartbeat {
        /// This life of the node.
        incarnation: Incarnation,
        /// Resource use and error rate.
        metrics: Metrics,
        /// Attempts running now.
        running: Vec<(TaskId, Attempt)>,
        /// How the running loads are doing.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        load: Vec<(TaskId, Attempt, LiveLoad)>,
    },
    /// `attempt` of `task` has started.
    Started {
        /// This life of the node.
        incarnation: Incarnation,
        /// The task.
        task: TaskId,
        /// Its attempt.
        attempt: Attempt,
    },
    /// The node is shutting down: it has stopped its attempts and takes no more; everything it
    /// leased goes elsewhere without spending a retry. Results it sent before count as usual.
    Leaving {
        /// This life of the node.
        incarnation: Incarnation,
    },
    /// `attempt` of `task` has ended.
    Finished {
        /// This life of the node.
        incarnation: Incarnation,
        /// The task.
        task: TaskId,
        /// Its attempt.
        attempt: Attempt,
        /// How.
        outcome: Outcome,
        /// What load work measured.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        load: Option<Box<LoadResult>>,
    },
}
