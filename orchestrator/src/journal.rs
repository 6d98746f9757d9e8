//! A session's write-ahead journal: every input of the run, recorded before the run sees it, so
//! that a service that crashed can rebuild the run exactly and go on with it.
//!
//! The core's [`Run`] is a pure function of its inputs: the frames it heard (and when), the
//! timeouts it handled (and when), a cancel, and the counts of frames sent and lost. A session
//! with a journal records each of those as an [`Entry`] *before* it hands it to the run. Whatever
//! the run sent, it sent because of inputs already in the journal, so a rebuilt run is the same
//! run: it reaches the same state, has sent the same frames under the same ids and epochs, and
//! fencing on the nodes refuses nothing it should accept. What the crashed process heard but had
//! not yet recorded is lost the way a dropped packet is: the nodes resend every result until the
//! orchestrator acknowledges it.
//!
//! The rebuilt run's clock resumes where the journal ends: to the run, the time the service was
//! down did not pass (a paused orchestrator), so nobody is declared dead for the service's own
//! crash.

use std::sync::{Arc, Mutex};

use dtest_core::placement::NodeIdx;
use dtest_core::protocol::{Frame, ToOrchestrator};
use dtest_core::run::{Action, NodeOffer, Run};
use dtest_core::scenario::{GroupId, NodeRef, Resources};
use serde::{Deserialize, Serialize};

/// One input of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Entry {
    /// Frames from node `node`, heard at `at_ms`.
    Frames {
        /// When, in run milliseconds.
        at_ms: u64,
        /// The node, by its index in [`Setup::nodes`].
        node: u32,
        /// The frames.
        frames: Vec<Frame<ToOrchestrator>>,
    },
    /// This many frames to a node were lost (its exchange failed).
    Undelivered {
        /// How many.
        frames: u64,
    },
    /// The run's timeout was handled at `at_ms`.
    Timeout {
        /// When.
        at_ms: u64,
    },
    /// The run was cancelled at `at_ms`.
    Cancel {
        /// When.
        at_ms: u64,
    },
}

impl Entry {
    /// When it happened, for the entries that say.
    pub fn at_ms(&self) -> Option<u64> {
        match self {
            Entry::Frames { at_ms, .. } | Entry::Timeout { at_ms } | Entry::Cancel { at_ms } => Some(*at_ms),
            Entry::Undelivered { .. } => None,
        }
    }

    /// Hands the input to the run, as the session does live.
    pub(crate) fn apply(&self, run: &mut Run) {
        match self {
            Entry::Frames { at_ms, node, frames } => {
                run.count_sent(frames.len() as u64);
                for frame in frames {
                    run.handle(*at_ms, NodeIdx(*node), frame.clone());
                }
            }
            Entry::Undelivered { frames } => run.count_dropped(*frames),
            Entry::Timeout { at_ms } => run.handle_timeout(*at_ms),
            Entry::Cancel { at_ms } => run.cancel(*at_ms),
        }
    }
}

/// What a session started with, recorded once before any node gets the plan: with the scenario
/// and the seed, all a rebuilt run needs besides the journal.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    /// The execution id, which is also the plan's id on the nodes.
    pub id: String,
    /// The nodes, by run index.
    pub nodes: Vec<SetupNode>,
}

/// One node of a session.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetupNode {
    /// Its URL.
    pub url: String,
    /// Its name in the run (`<group>-<n>`).
    pub name: String,
    /// Its scenario group, by index (`u32::MAX`: none).
    pub group: u32,
    /// Its number in the group.
    pub index: u32,
    /// What it offered the run.
    pub resources: Resources,
    /// Whether that was a share its host gave the session (else all the node has).
    #[serde(default)]
    pub shared: bool,
    /// Its capabilities.
    pub capabilities: Vec<String>,
    /// Its region.
    pub region: Option<String>,
    /// Its zone.
    pub zone: Option<String>,
}

impl SetupNode {
    pub(crate) fn of(url: &str, offer: &NodeOffer, shared: bool) -> SetupNode {
        SetupNode {
            url: url.to_owned(),
            shared,
            name: offer.name.clone(),
            group: offer.node_ref.group.0,
            index: offer.node_ref.index,
            resources: offer.resources.clone(),
            capabilities: offer.capabilities.clone(),
            region: offer.region.clone(),
            zone: offer.zone.clone(),
        }
    }

    pub(crate) fn offer(&self) -> NodeOffer {
        NodeOffer {
            name: self.name.clone(),
            node_ref: NodeRef { group: GroupId(self.group), index: self.index },
            resources: self.resources.clone(),
            capabilities: self.capabilities.clone(),
            region: self.region.clone(),
            zone: self.zone.clone(),
        }
    }
}

/// Where a session writes its journal (a service's database). Both calls must be durable when
/// they return: the session acts on an input only after it is recorded.
pub trait Journal: Send + Sync {
    /// Records the setup, once, before the plan goes out.
    fn setup(&self, setup: &Setup) -> Result<(), String>;
    /// Records entry number `seq` (from 0).
    fn record(&self, seq: u64, entry: &Entry) -> Result<(), String>;
}

/// A shared journal, as a session's configuration holds it.
#[derive(Clone)]
pub struct JournalHandle(pub Arc<dyn Journal>);

impl std::fmt::Debug for JournalHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JournalHandle")
    }
}

/// A journal in memory, for tests and for a session that wants to look at its own inputs.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    /// The setup, once recorded.
    pub setup: Mutex<Option<Setup>>,
    /// The entries, in order.
    pub entries: Mutex<Vec<Entry>>,
}

impl Journal for MemoryJournal {
    fn setup(&self, setup: &Setup) -> Result<(), String> {
        *self.setup.lock().unwrap_or_else(|p| p.into_inner()) = Some(setup.clone());
        Ok(())
    }

    fn record(&self, seq: u64, entry: &Entry) -> Result<(), String> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if seq != entries.len() as u64 {
            return Err(format!("entry {seq} out of order: {} recorded", entries.len()));
        }
        entries.push(entry.clone());
        Ok(())
    }
}

/// A run rebuilt from its journal: where its clock stands, and each node's link as the run last
/// decided it.
pub(crate) struct Replayed {
    pub now_ms: u64,
    pub links: Vec<Option<dtest_core::faults::Link>>,
}

/// Feeds `entries` to `run` in order. What the run sends or does meanwhile was sent and done by
/// the process that recorded them; only each node's last link setting is kept, to be applied
/// again.
pub(crate) fn replay(run: &mut Run, nodes: usize, entries: &[Entry]) -> Replayed {
    let mut replayed = Replayed { now_ms: 0, links: vec![None; nodes] };
    for entry in entries {
        entry.apply(run);
        if let Some(at) = entry.at_ms() {
            replayed.now_ms = replayed.now_ms.max(at);
        }
        while run.poll_transmit().is_some() {
            run.count_sent(1);
        }
        while let Some(action) = run.poll_action() {
            if let Action::Link(node, link) = action
                && let Some(slot) = replayed.links.get_mut(node.0 as usize)
            {
                *slot = Some(link);
            }
        }
        while run.poll_event().is_some() {}
    }
    replayed
}
