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
    /// The letters waiting, by place; `None` where a place is free.
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

#[cfg(test)]
mod tests {
    use super::*;
    use madsim::runtime::{Handle, Runtime};

    fn tick(at_ms: u64) -> AgentInput {
        AgentInput::Tick(at_ms)
    }

    fn ticks(mailbox: &Mailbox<AgentInput>) -> Vec<u64> {
        let mut inner = mailbox.lock();
        inner.0.drain(..).map(|input| if let AgentInput::Tick(at) = input { at } else { u64::MAX }).collect()
    }

    #[test]
    fn letters_go_out_by_due_time_then_in_the_order_posted_and_a_dead_life_gets_none() {
        let mut post = PostOffice::new(2);
        let (first, second) = (Mailbox::new(), Mailbox::new());
        post.open_agent(0, 1, first.clone());
        post.open_agent(1, 1, second.clone());
        for (at, node, incarnation, label) in
            [(30, 0, 1, 1), (10, 0, 1, 2), (10, 0, 1, 3), (20, 1, 1, 4), (10, 0, 2, 5), (40, 1, 1, 6)]
        {
            post.post(at, Letter::Agent { node, incarnation, input: tick(label) });
        }
        assert_eq!(post.next_ms(), Some(10));
        post.deliver_due(9);
        assert_eq!(ticks(&first), Vec::<u64>::new());
        post.deliver_due(25);
        // Due at 10 in the order posted; the letter for life 2 of node 0 is lost.
        assert_eq!((ticks(&first), ticks(&second)), (vec![2, 3], vec![4]));
        post.close_agent(1);
        post.deliver_due(100);
        assert_eq!((ticks(&first), ticks(&second)), (vec![1], vec![]));
        assert_eq!((post.delivered(), post.next_ms()), (4, None));
        // Places of delivered letters are reused, not grown.
        for at in 101..110 {
            post.post(at, Letter::Agent { node: 0, incarnation: 1, input: tick(at) });
        }
        assert_eq!(post.letters.len(), 9);
    }

    #[test]
    fn the_post_office_delivers_each_letter_at_its_millisecond_even_one_posted_later_for_earlier() {
        let runtime = Runtime::with_seed_and_config(7, madsim::Config::default());
        let arrivals = runtime.block_on(async {
            let text = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/sharded-tests.json"))
                .expect("read a shipped scenario");
            let scenario = dtest_core::scenario::parse(&text).expect("valid");
            let options = crate::SimOptions { seed: 7, ..crate::SimOptions::default() };
            let shared = Arc::new(Shared::new(&scenario, &options).expect("a simulable scenario"));
            let office = Handle::current().create_node().name("network").build();
            office.spawn(run(shared.clone()));
            let inbox = Mailbox::new();
            shared.world().post.open_agent(0, 1, inbox.clone());
            let post =
                |at_ms| shared.world().post.post(at_ms, Letter::Agent { node: 0, incarnation: 1, input: tick(at_ms) });
            post(500);
            post(300);
            madsim::time::sleep(Duration::from_millis(100)).await;
            post(200); // after the timer for 300 was set, and earlier
            post(1_000);
            let mut arrivals = Vec::new();
            for _ in 0..4 {
                let AgentInput::Tick(due) = inbox.take().await else { unreachable!("only ticks were posted") };
                arrivals.push((due, shared.now_ms()));
            }
            arrivals
        });
        assert_eq!(arrivals, [(200, 200), (300, 300), (500, 500), (1_000, 1_000)]);
    }
}
