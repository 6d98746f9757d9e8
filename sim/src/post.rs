//! The simulated network and the nodes' alarms: one queue of letters, each due at a whole
//! simulated millisecond, and one task (the post office) that puts them into their recipients'
//! inboxes when they are due.
//!
//! madsim's `Endpoint` costs, per message, a spawned task, four timers (its own random delays on
//! both ends and the link's latency besides ours) and about five polls, and a node's alarm costs a
//! spawned task each time it is set. Here a letter is an entry in a binary heap; the post office
//! holds one madsim timer, for the earliest letter, and wakes once per millisecond that has
//! letters due, however many. Frames, alarms and the faults' delays all come in whole
//! milliseconds, as the core counts time, so nothing is rounded that the core could see.
//!
//! Letters to an agent carry the incarnation they were sent to: one still in flight when its
//! node dies, or is killed and restarted, is lost, as a request on a broken connection is.

use std::collections::BinaryHeap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures::channel::mpsc::UnboundedSender;
use madsim::time::sleep_until;

use crate::world::{AgentInput, OrchestratorInput, Shared};

/// Where a letter goes.
pub(crate) enum Letter {
    /// To the agent of `node`, in its life `incarnation`.
    Agent { node: usize, incarnation: u64, input: AgentInput },
    /// To the orchestrator.
    Orchestrator(OrchestratorInput),
}

/// A letter in the queue, ordered by when it is due, then by when it was posted.
struct Entry {
    at_ms: u64,
    seq: u64,
    letter: Letter,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Entry) -> bool {
        (self.at_ms, self.seq) == (other.at_ms, other.seq)
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Entry) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed, so that `BinaryHeap` (a max-heap) pops the earliest first.
    fn cmp(&self, other: &Entry) -> std::cmp::Ordering {
        (other.at_ms, other.seq).cmp(&(self.at_ms, self.seq))
    }
}

/// An agent's inbox, for one of its lives.
struct Inbox {
    incarnation: u64,
    tx: UnboundedSender<AgentInput>,
}

/// The letters not yet due and the inboxes they go to.
#[derive(Default)]
pub(crate) struct PostOffice {
    queue: BinaryHeap<Entry>,
    /// Letters posted so far; orders letters due in the same millisecond.
    posted: u64,
    /// The millisecond the post office's timer is set for.
    armed_ms: Option<u64>,
    /// Wakes the post office when a letter is due before its timer.
    waker: Option<Waker>,
    agents: Vec<Option<Inbox>>,
    orchestrator: Option<UnboundedSender<OrchestratorInput>>,
    /// Letters put into an open inbox.
    delivered: u64,
}

impl PostOffice {
    /// A post office for `nodes` agents, none of them up yet.
    pub fn new(nodes: usize) -> PostOffice {
        PostOffice { agents: (0..nodes).map(|_| None).collect(), ..PostOffice::default() }
    }

    /// Queues `letter` for delivery at `at_ms` (at once if that has passed).
    pub fn post(&mut self, at_ms: u64, letter: Letter) {
        self.posted += 1;
        self.queue.push(Entry { at_ms, seq: self.posted, letter });
        if self.armed_ms.is_none_or(|armed| at_ms < armed)
            && let Some(waker) = self.waker.take()
        {
            waker.wake();
        }
    }

    /// `node`'s agent is up in life `incarnation` and reads `tx`.
    pub fn open_agent(&mut self, node: usize, incarnation: u64, tx: UnboundedSender<AgentInput>) {
        self.agents[node] = Some(Inbox { incarnation, tx });
    }

    /// `node` died: what is on its way to it is lost.
    pub fn close_agent(&mut self, node: usize) {
        self.agents[node] = None;
    }

    /// The orchestrator is up and reads `tx`.
    pub fn open_orchestrator(&mut self, tx: UnboundedSender<OrchestratorInput>) {
        self.orchestrator = Some(tx);
    }

    /// Letters delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Puts every letter due by `now_ms` into its inbox, in order.
    fn deliver_due(&mut self, now_ms: u64) {
        while self.queue.peek().is_some_and(|e| e.at_ms <= now_ms) {
            let Some(entry) = self.queue.pop() else { break };
            // A closed inbox (its node died since) loses the letter, as the network would.
            match entry.letter {
                Letter::Agent { node, incarnation, input } => {
                    if let Some(inbox) = self.agents[node].as_ref().filter(|i| i.incarnation == incarnation) {
                        self.delivered += u64::from(inbox.tx.unbounded_send(input).is_ok());
                    }
                }
                Letter::Orchestrator(input) => {
                    if let Some(tx) = &self.orchestrator {
                        self.delivered += u64::from(tx.unbounded_send(input).is_ok());
                    }
                }
            }
        }
    }
}

/// The post office's task: delivers letters as they fall due, forever.
pub(crate) async fn run(shared: Arc<Shared>) {
    std::future::poll_fn(|cx| {
        let mut world = shared.world();
        let post = &mut world.post;
        let now_ms = shared.now_ms();
        post.deliver_due(now_ms);
        if post.armed_ms.is_some_and(|armed| armed <= now_ms) {
            post.armed_ms = None;
        }
        if post.waker.as_ref().is_none_or(|w| !w.will_wake(cx.waker())) {
            post.waker = Some(cx.waker().clone());
        }
        if let Some(next_ms) = post.queue.peek().map(|e| e.at_ms)
            && post.armed_ms != Some(next_ms)
        {
            // A madsim timer rings the task that polled its `Sleep`, once, even after the
            // `Sleep` is dropped; an earlier letter arms another, and the old one rings harmlessly.
            post.armed_ms = Some(next_ms);
            let timer = pin!(sleep_until(shared.start + Duration::from_millis(next_ms)));
            if timer.poll(cx).is_ready() {
                cx.waker().wake_by_ref();
            }
        }
        Poll::<()>::Pending
    })
    .await
}
