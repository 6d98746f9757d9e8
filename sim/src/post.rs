//! The simulated network and the nodes' alarms: one queue of letters, each due at a whole
//! simulated millisecond, and one task (the post office) that puts them into their recipients'
//! inboxes when they are due.
//!
//! madsim's `Endpoint` costs, per message, a spawned task, four timers (its own random delays on
//! both ends and the link's latency besides ours) and about five polls, and a node's alarm costs a
//! spawned task each time it is set. Here a letter waits in a binary heap; the post office holds
//! one madsim timer, for the earliest letter, and wakes once per millisecond that has letters
//! due, however many. Frames, alarms and the faults' delays all come in whole
//! milliseconds, as the core counts time, so nothing is rounded that the core could see.
//!
//! Letters to an agent carry the incarnation they were sent to: one still in flight when its
//! node dies, or is killed and restarted, is lost, as a request on a broken connection is.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};
use std::time::Duration;

use madsim::time::sleep_until;

use crate::world::{AgentInput, OrchestratorInput, Shared};

/// Where a letter goes.
pub(crate) enum Letter {
    /// To the agent of `node`, in its life `incarnation`.
    Agent { node: usize, incarnation: u64, input: AgentInput },
    /// To the orchestrator.
    Orchestrator(OrchestratorInput),
}

/// The inbox of one reader: what was put in, in order, and a way to wait for more. A
/// `futures` channel allocates a node per message and costs more atomics; one reader on one
/// thread needs neither.
pub(crate) struct Mailbox<T> {
    inner: Arc<Mutex<(VecDeque<T>, Option<Waker>)>>,
}

impl<T> Clone for Mailbox<T> {
    fn clone(&self) -> Mailbox<T> {
        Mailbox { inner: self.inner.clone() }
    }
}

impl<T> Mailbox<T> {
    /// An empty mailbox.
    pub fn new() -> Mailbox<T> {
        Mailbox { inner: Arc::new(Mutex::new((VecDeque::new(), None))) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<T>, Option<Waker>)> {
        // The simulation runs on one thread; a poisoned lock means a task panicked already.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `item` in and wakes the reader.
    pub fn put(&self, item: T) {
        let mut inner = self.lock();
        inner.0.push_back(item);
        if let Some(waker) = inner.1.take() {
            waker.wake();
        }
    }

    /// The next item, once there is one.
    pub async fn take(&self) -> T {
        std::future::poll_fn(|cx| {
            let mut inner = self.lock();
            match inner.0.pop_front() {
                Some(item) => Poll::Ready(item),
                None => {
                    inner.1 = Some(cx.waker().clone());
                    Poll::Pending
                }
            }
        })
        .await
    }
}

/// An agent's inbox, for one of its lives.
struct Inbox {
    incarnation: u64,
    mailbox: Mailbox<AgentInput>,
}

/// The letters not yet due and the inboxes they go to.
#[derive(Default)]
pub(crate) struct PostOffice {
    /// When each letter waiting is due, then when it was posted, and where it waits in
    /// `letters`: the heap moves these 24 bytes, not the letters (136).
    queue: BinaryHeap<Reverse<(u64, u64, u32)>>,
    /// The letters waiting, and free places.
    letters: Vec<Option<Letter>>,
    /// Free places in `letters`.
    free: Vec<u32>,
    /// Letters posted so far; orders letters due in the same millisecond.
    posted: u64,
    /// The millisecond the post office's timer is set for.
    armed_ms: Option<u64>,
    /// Wakes the post office when a letter is due before its timer.
    waker: Option<Waker>,
    agents: Vec<Option<Inbox>>,
    orchestrator: Option<Mailbox<OrchestratorInput>>,
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
        let place = match self.free.pop() {
            Some(place) => {
                self.letters[place as usize] = Some(letter);
                place
            }
            None => {
                self.letters.push(Some(letter));
                u32::try_from(self.letters.len() - 1).expect("fewer than 2^32 letters in flight")
            }
        };
        self.posted += 1;
        self.queue.push(Reverse((at_ms, self.posted, place)));
        if self.armed_ms.is_none_or(|armed| at_ms < armed)
            && let Some(waker) = self.waker.take()
        {
            waker.wake();
        }
    }

    /// `node`'s agent is up in life `incarnation` and reads `mailbox`.
    pub fn open_agent(&mut self, node: usize, incarnation: u64, mailbox: Mailbox<AgentInput>) {
        self.agents[node] = Some(Inbox { incarnation, mailbox });
    }

    /// `node` died: what is on its way to it is lost.
    pub fn close_agent(&mut self, node: usize) {
        self.agents[node] = None;
    }

    /// The orchestrator is up and reads `mailbox`.
    pub fn open_orchestrator(&mut self, mailbox: Mailbox<OrchestratorInput>) {
        self.orchestrator = Some(mailbox);
    }

    /// Letters delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// The millisecond the next letter is due, if any is waiting.
    fn next_ms(&self) -> Option<u64> {
        self.queue.peek().map(|Reverse((at_ms, _, _))| *at_ms)
    }

    /// Puts every letter due by `now_ms` into its inbox, in order.
    fn deliver_due(&mut self, now_ms: u64) {
        while let Some(&Reverse((at_ms, _, place))) = self.queue.peek()
            && at_ms <= now_ms
        {
            self.queue.pop();
            self.free.push(place);
            let letter = self.letters[place as usize].take().expect("a queued place holds its letter");
            // A closed inbox (its node died since) loses the letter, as the network would.
            match letter {
                Letter::Agent { node, incarnation, input } => {
                    if let Some(inbox) = self.agents[node].as_ref().filter(|i| i.incarnation == incarnation) {
                        inbox.mailbox.put(input);
                        self.delivered += 1;
                    }
                }
                Letter::Orchestrator(input) => {
                    if let Some(mailbox) = &self.orchestrator {
                        mailbox.put(input);
                        self.delivered += 1;
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
        if let Some(next_ms) = post.next_ms()
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
