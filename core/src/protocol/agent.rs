//! The node side of the protocol: one agent per node incarnation, with no IO and no clock.
//!
//! The shell feeds it frames from the orchestrator ([`Agent::handle`]), the end of work it
//! started ([`Agent::work_finished`]) and timer ticks ([`Agent::tick`]), and drains what it must
//! do ([`Agent::poll_action`]: start or stop work) and send ([`Agent::poll_transmit`]).
//!
//! What it guarantees:
//! - An assignment is started once: copies of it, and assignments of an older attempt than one
//!   it has seen for that task, are ignored; a newer attempt replaces an older one that runs.
//! - A result is reported exactly once per attempt (exactly-once delivery) and kept until the
//!   orchestrator accepts it, across a lost orchestrator, up to [`AgentConfig::results_max`]
//!   results (beyond that the oldest is dropped and counted; the orchestrator's lease on it
//!   expires and the task is retried, so the task itself is not lost).
//! - Heartbeats go out every `heartbeat_interval_ms` with metrics and the running attempts.
//! - Work past its timeout is stopped and reported as timed out, whatever the shell does.
//! - Every queue is bounded.

use std::collections::{BTreeMap, VecDeque};

use super::delivery::{DeliveryMode, Frame, Inbox, Outbox, OutboxConfig};
use super::message::{Attempt, Incarnation, Outcome, TaskId, ToAgent, ToOrchestrator};
use crate::health::Metrics;
use crate::measure::{LiveLoad, LoadResult};

/// Settings of an [`Agent`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AgentConfig {
    /// Time between heartbeats.
    pub heartbeat_interval_ms: u64,
    /// Attempts running at once; assignments beyond are refused as failed.
    pub running_max: usize,
    /// Results kept until accepted.
    pub results_max: usize,
    /// Tasks whose accepted attempt is remembered, to ignore late copies of old assignments.
    pub accepted_memory: usize,
    /// Resends of reliable messages.
    pub outbox: OutboxConfig,
    /// How long a cancelled attempt's work has to stop and hand back what it measured before
    /// the agent reports it cancelled without it.
    pub stop_grace_ms: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            heartbeat_interval_ms: 1_000,
            running_max: 10_000,
            results_max: 10_000,
            accepted_memory: 100_000,
            outbox: OutboxConfig::default(),
            stop_grace_ms: 2_000,
        }
    }
}

/// What the shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentAction {
    /// Start `work` for `attempt` of `task`; report its end with [`Agent::work_finished`].
    Start {
        /// The task.
        task: TaskId,
        /// Its attempt.
        attempt: Attempt,
        /// What to run, in the shell's terms.
        work: u32,
    },
    /// Stop `attempt` of `task`. When it was cancelled, the shell then reports its end (with
    /// [`Agent::load_finished`], to hand back a load's partial measure), which is recorded as
    /// cancelled whatever the work says, or after [`AgentConfig::stop_grace_ms`] without it.
    /// When it was replaced or timed out, its end is already recorded and the shell's report is
    /// ignored.
    Stop {
        /// The task.
        task: TaskId,
        /// Its attempt.
        attempt: Attempt,
    },
}

#[derive(Clone, Debug)]
struct Running {
    attempt: Attempt,
    deadline_ms: u64,
    /// How its load is doing, if it is load work; goes out with heartbeats.
    live: Option<LiveLoad>,
    /// Cancelled: stopping, and its end will be recorded as cancelled.
    cancelling: bool,
}

#[derive(Clone, Debug)]
struct Finished {
    outcome: Outcome,
    load: Option<Box<LoadResult>>,
    /// Whether it is in the outbox (which may have been full).
    sent: bool,
}

/// One node incarnation's agent.
#[derive(Clone, Debug)]
pub struct Agent {
    config: AgentConfig,
    incarnation: Incarnation,
    outbox: Outbox<ToOrchestrator>,
    inbox: Inbox,
    running: BTreeMap<TaskId, Running>,
    finished: BTreeMap<(TaskId, Attempt), Finished>,
    /// Order in which results finished, for dropping the oldest when full.
    finished_order: VecDeque<(TaskId, Attempt)>,
    /// Newest attempt accepted per task, bounded, oldest forgotten first.
    accepted: BTreeMap<TaskId, Attempt>,
    accepted_order: VecDeque<TaskId>,
    metrics: Metrics,
    next_heartbeat_ms: u64,
    actions: VecDeque<AgentAction>,
    transmit: VecDeque<Frame<ToOrchestrator>>,
    results_dropped: u64,
    /// Shutting down: no more heartbeats or attempts.
    leaving: bool,
}

impl Agent {
    /// A new incarnation starting at `now_ms`; it says hello (reliably) at once, and its first
    /// heartbeat goes out at its first [`Agent::tick`], with the metrics set by then.
    pub fn new(now_ms: u64, incarnation: Incarnation, config: AgentConfig) -> Agent {
        let mut agent = Agent {
            config,
            incarnation,
            outbox: Outbox::new(config.outbox, incarnation.0),
            inbox: Inbox::new(incarnation.0),
            running: BTreeMap::new(),
            finished: BTreeMap::new(),
            finished_order: VecDeque::new(),
            accepted: BTreeMap::new(),
            accepted_order: VecDeque::new(),
            metrics: Metrics::default(),
            next_heartbeat_ms: now_ms,
            actions: VecDeque::new(),
            transmit: VecDeque::new(),
            results_dropped: 0,
            leaving: false,
        };
        agent.send(now_ms, DeliveryMode::AtLeastOnce, ToOrchestrator::Hello { incarnation });
        agent
    }

    /// This agent's incarnation.
    pub fn incarnation(&self) -> Incarnation {
        self.incarnation
    }

    /// Results dropped because more than `results_max` waited to be accepted.
    pub fn results_dropped(&self) -> u64 {
        self.results_dropped
    }

    /// Attempts running now.
    pub fn running(&self) -> impl Iterator<Item = (TaskId, Attempt)> + '_ {
        self.running.iter().map(|(&t, r)| (t, r.attempt))
    }

    /// Sets the metrics the next heartbeats carry.
    pub fn set_metrics(&mut self, metrics: Metrics) {
        self.metrics = metrics;
    }

    fn send(&mut self, now_ms: u64, mode: DeliveryMode, body: ToOrchestrator) -> bool {
        match self.outbox.send(now_ms, mode, body) {
            Ok(packet) => {
                self.transmit.push_back(Frame::Data(packet));
                true
            }
            Err(_) => false,
        }
    }

    /// A frame from the orchestrator arrived at `now_ms`.
    pub fn handle(&mut self, now_ms: u64, frame: Frame<ToAgent>) {
        let packet = match frame {
            Frame::Ack { session, id } => return self.outbox.acknowledge(session, id),
            Frame::Data(packet) => packet,
        };
        let receipt = self.inbox.receive(&packet);
        if let Some(id) = receipt.ack {
            self.transmit.push_back(Frame::Ack { session: packet.session, id });
        }
        if !receipt.deliver {
            return;
        }
        match packet.body {
            ToAgent::Assign { task, attempt, work, timeout_ms } => self.assign(now_ms, task, attempt, work, timeout_ms),
            ToAgent::Cancel { task, attempt } => {
                if let Some(r) = self.running.get_mut(&task).filter(|r| r.attempt == attempt && !r.cancelling) {
                    // The work stops and hands back what it did; the grace bounds the wait.
                    r.cancelling = true;
                    r.deadline_ms = now_ms.saturating_add(self.config.stop_grace_ms);
                    self.actions.push_back(AgentAction::Stop { task, attempt });
                }
            }
            ToAgent::ResultAccepted { task, attempt } => {
                if self.finished.remove(&(task, attempt)).is_some() {
                    self.finished_order.retain(|k| *k != (task, attempt));
                }
                self.remember_accepted(task, attempt);
            }
        }
    }

    fn assign(&mut self, now_ms: u64, task: TaskId, attempt: Attempt, work: u32, timeout_ms: u64) {
        if self.leaving {
            return; // The orchestrator takes it back when it hears we are leaving.
        }
        let stale = self.accepted.get(&task).is_some_and(|&a| a >= attempt)
            || self.finished.keys().any(|&(t, a)| t == task && a >= attempt);
        if stale {
            return;
        }
        match self.running.get(&task).map(|r| r.attempt) {
            Some(current) if current >= attempt => return, // a copy, or an older attempt
            Some(older) => {
                // A newer attempt supersedes the old one, whose result would be refused anyway.
                self.running.remove(&task);
                self.actions.push_back(AgentAction::Stop { task, attempt: older });
            }
            None => {}
        }
        if self.running.len() >= self.config.running_max {
            self.record(
                now_ms,
                task,
                attempt,
                Outcome::Failed("the agent runs its maximum of attempts".to_owned()),
                None,
            );
            return;
        }
        self.running.insert(
            task,
            Running { attempt, deadline_ms: now_ms.saturating_add(timeout_ms), live: None, cancelling: false },
        );
        self.actions.push_back(AgentAction::Start { task, attempt, work });
        let started = ToOrchestrator::Started { incarnation: self.incarnation, task, attempt };
        self.send(now_ms, DeliveryMode::FireAndForget, started);
    }

    /// The shell reports how the load of a running attempt is doing; the next heartbeat carries
    /// it. A second not yet sent is kept until a heartbeat carries it, unless a newer one
    /// replaces it.
    pub fn set_live(&mut self, task: TaskId, attempt: Attempt, live: LiveLoad) {
        let Some(running) = self.running.get_mut(&task).filter(|r| r.attempt == attempt) else { return };
        let unsent = running.live.take().and_then(|l| l.second);
        running.live = Some(LiveLoad { second: live.second.or(unsent), ..live });
    }

    /// The shell reports that work it started has ended. Reports for attempts no longer running
    /// (stopped, replaced, timed out) are ignored.
    pub fn work_finished(&mut self, now_ms: u64, task: TaskId, attempt: Attempt, outcome: Outcome) {
        self.load_finished(now_ms, task, attempt, outcome, None);
    }

    /// As [`Agent::work_finished`], for load work: `load` is what it measured, sent with the
    /// result (and with every resend of it).
    pub fn load_finished(
        &mut self,
        now_ms: u64,
        task: TaskId,
        attempt: Attempt,
        outcome: Outcome,
        load: Option<Box<LoadResult>>,
    ) {
        if let Some(r) = self.running.get(&task).filter(|r| r.attempt == attempt) {
            let outcome = if r.cancelling { Outcome::Cancelled } else { outcome };
            self.running.remove(&task);
            self.record(now_ms, task, attempt, outcome, load);
        }
    }

    fn end(&mut self, now_ms: u64, task: TaskId, attempt: Attempt, outcome: Outcome) {
        self.running.remove(&task);
        self.record(now_ms, task, attempt, outcome, None);
    }

    fn record(&mut self, now_ms: u64, task: TaskId, attempt: Attempt, outcome: Outcome, load: Option<Box<LoadResult>>) {
        if self.finished.len() >= self.config.results_max.max(1)
            && let Some(oldest) = self.finished_order.pop_front()
        {
            self.finished.remove(&oldest);
            self.results_dropped += 1;
        }
        let message = ToOrchestrator::Finished {
            incarnation: self.incarnation,
            task,
            attempt,
            outcome: outcome.clone(),
            load: load.clone(),
        };
        let sent = self.send(now_ms, DeliveryMode::ExactlyOnce, message);
        self.finished.insert((task, attempt), Finished { outcome, load, sent });
        self.finished_order.push_back((task, attempt));
    }

    fn remember_accepted(&mut self, task: TaskId, attempt: Attempt) {
        let newer = self.accepted.get(&task).is_none_or(|&a| attempt > a);
        if !newer {
            return;
        }
        if self.accepted.insert(task, attempt).is_none() {
            self.accepted_order.push_back(task);
            if self.accepted_order.len() > self.config.accepted_memory
                && let Some(oldest) = self.accepted_order.pop_front()
            {
                self.accepted.remove(&oldest);
            }
        }
    }

    /// Time has passed to `now_ms`: heartbeats, resends, timeouts, results waiting for room.
    pub fn tick(&mut self, now_ms: u64) {
        let expired: Vec<(TaskId, Attempt, bool)> = self
            .running
            .iter()
            .filter(|(_, r)| r.deadline_ms <= now_ms)
            .map(|(&t, r)| (t, r.attempt, r.cancelling))
            .collect();
        for (task, attempt, cancelling) in expired {
            if cancelling {
                // Told to stop already; it did not hand anything back in time.
                self.end(now_ms, task, attempt, Outcome::Cancelled);
            } else {
                self.end(now_ms, task, attempt, Outcome::TimedOut);
                self.actions.push_back(AgentAction::Stop { task, attempt });
            }
        }
        let unsent: Vec<(TaskId, Attempt)> = self.finished.iter().filter(|(_, f)| !f.sent).map(|(&k, _)| k).collect();
        for (task, attempt) in unsent {
            let Finished { outcome, load, .. } = self.finished[&(task, attempt)].clone();
            let message = ToOrchestrator::Finished { incarnation: self.incarnation, task, attempt, outcome, load };
            if !self.send(now_ms, DeliveryMode::ExactlyOnce, message) {
                break; // Still full; try again next tick.
            }
            if let Some(f) = self.finished.get_mut(&(task, attempt)) {
                f.sent = true;
            }
        }
        for packet in self.outbox.poll(now_ms) {
            self.transmit.push_back(Frame::Data(packet));
        }
        if now_ms >= self.next_heartbeat_ms && !self.leaving {
            let running = self.running().collect();
            let load = self
                .running
                .iter_mut()
                .filter_map(|(&task, r)| {
                    let live = r.live.as_mut()?;
                    let sent = live.clone();
                    live.second = None; // Each second goes out once.
                    Some((task, r.attempt, sent))
                })
                .collect();
            let heartbeat =
                ToOrchestrator::Heartbeat { incarnation: self.incarnation, metrics: self.metrics, running, load };
            self.send(now_ms, DeliveryMode::FireAndForget, heartbeat);
            self.next_heartbeat_ms = now_ms.saturating_add(self.config.heartbeat_interval_ms.max(1));
        }
    }

    /// Shut down gracefully: stop every attempt (the orchestrator reassigns them without
    /// spending a retry), take no more, and tell the orchestrator, after the results already
    /// finished. The shell exits once [`Agent::is_drained`].
    pub fn leave(&mut self, now_ms: u64) {
        if self.leaving {
            return;
        }
        self.leaving = true;
        for (task, running) in std::mem::take(&mut self.running) {
            self.actions.push_back(AgentAction::Stop { task, attempt: running.attempt });
        }
        self.send(now_ms, DeliveryMode::AtLeastOnce, ToOrchestrator::Leaving { incarnation: self.incarnation });
    }

    /// Whether a leaving agent has nothing left to deliver: every result and the goodbye are
    /// acknowledged.
    pub fn is_drained(&self) -> bool {
        self.leaving && self.outbox.in_flight() == 0 && self.finished.values().all(|f| f.sent)
    }

    /// Whether the agent holds nothing its orchestrator still needs: no attempt running and no
    /// result waiting for the orchestrator to accept it. Only such an agent may be forgotten (a
    /// node holding several plans evicts only idle ones, so a restarted orchestrator finds its
    /// results where it left them).
    pub fn is_idle(&self) -> bool {
        self.running.is_empty() && self.finished.is_empty()
    }

    /// When [`Agent::tick`] next has something to do.
    pub fn next_tick_ms(&self) -> u64 {
        let deadline = self.running.values().map(|r| r.deadline_ms).min();
        let heartbeat = (!self.leaving).then_some(self.next_heartbeat_ms);
        [heartbeat, deadline, self.outbox.next_due_ms()].into_iter().flatten().min().unwrap_or(u64::MAX)
    }

    /// The next thing the shell must do.
    pub fn poll_action(&mut self) -> Option<AgentAction> {
        self.actions.pop_front()
    }

    /// The next frame to send to the orchestrator.
    pub fn poll_transmit(&mut self) -> Option<Frame<ToOrchestrator>> {
        self.transmit.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::delivery::Packet;

    fn agent() -> Agent {
        Agent::new(0, Incarnation(1), AgentConfig { results_max: 2, ..AgentConfig::default() })
    }

    fn assign(id: u64, task: u64, attempt: u32) -> Frame<ToAgent> {
        let body = ToAgent::Assign { task: TaskId(task), attempt: Attempt(attempt), work: 0, timeout_ms: 10_000 };
        Frame::Data(Packet { session: 1, id, floor: 1, mode: DeliveryMode::ExactlyOnce, body })
    }

    fn drain(agent: &mut Agent) -> (Vec<AgentAction>, Vec<Frame<ToOrchestrator>>) {
        let actions = std::iter::from_fn(|| agent.poll_action()).collect();
        let frames = std::iter::from_fn(|| agent.poll_transmit()).collect();
        (actions, frames)
    }

    fn finished(frames: &[Frame<ToOrchestrator>]) -> Vec<(u64, u64, u32)> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::Data(Packet { id, body: ToOrchestrator::Finished { task, attempt, .. }, .. }) => {
                    Some((*id, task.0, attempt.0))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_new_agent_says_hello_and_heartbeats() {
        let mut a = agent();
        a.tick(0);
        let (_, frames) = drain(&mut a);
        assert!(matches!(&frames[0], Frame::Data(Packet { body: ToOrchestrator::Hello { .. }, .. })));
        assert!(matches!(&frames[1], Frame::Data(Packet { body: ToOrchestrator::Heartbeat { .. }, .. })));
    }

    fn heartbeat_load(frames: &[Frame<ToOrchestrator>]) -> Vec<(TaskId, Attempt, LiveLoad)> {
        frames
            .iter()
            .find_map(|f| match f {
                Frame::Data(Packet { body: ToOrchestrator::Heartbeat { load, .. }, .. }) => Some(load.clone()),
                _ => None,
            })
            .expect("a heartbeat")
    }

    #[test]
    fn heartbeats_carry_live_load_figures_and_each_second_once() {
        let mut a = agent();
        drain(&mut a);
        a.handle(1, assign(1, 7, 1));
        a.handle(2, assign(2, 8, 1));
        let second = crate::measure::Second::new().to_wire(3);
        let live = |requests, second| LiveLoad { requests, errors: 1, dropped: 0, second };
        a.set_live(TaskId(7), Attempt(1), live(10, Some(second.clone())));
        a.set_live(TaskId(7), Attempt(1), live(12, None)); // the unsent second stays
        a.set_live(TaskId(7), Attempt(0), live(99, None)); // not the running attempt
        a.set_live(TaskId(9), Attempt(1), live(99, None)); // not running at all
        a.tick(1_000);
        let (_, frames) = drain(&mut a);
        assert_eq!(heartbeat_load(&frames), [(TaskId(7), Attempt(1), live(12, Some(second)))]);
        a.tick(2_000);
        let (_, frames) = drain(&mut a);
        assert_eq!(heartbeat_load(&frames), [(TaskId(7), Attempt(1), live(12, None))], "the second went out once");
        a.work_finished(2_001, TaskId(7), Attempt(1), Outcome::Passed);
        a.tick(3_000);
        let (_, frames) = drain(&mut a);
        assert!(heartbeat_load(&frames).is_empty(), "an ended attempt is not reported live");
    }

    #[test]
    fn assignments_start_once_and_stale_attempts_are_ignored() {
        let mut a = agent();
        drain(&mut a);
        a.handle(1, assign(1, 7, 2));
        a.handle(2, assign(1, 7, 2)); // the same packet again
        a.handle(3, assign(2, 7, 2)); // the same assignment in a new packet
        a.handle(4, assign(3, 7, 1)); // an older attempt
        let (actions, frames) = drain(&mut a);
        assert_eq!(actions, [AgentAction::Start { task: TaskId(7), attempt: Attempt(2), work: 0 }]);
        assert_eq!(frames.iter().filter(|f| matches!(f, Frame::Ack { .. })).count(), 4, "every copy is acknowledged");
        a.handle(5, assign(4, 7, 3)); // a newer attempt replaces the running one
        let (actions, _) = drain(&mut a);
        assert_eq!(
            actions,
            [
                AgentAction::Stop { task: TaskId(7), attempt: Attempt(2) },
                AgentAction::Start { task: TaskId(7), attempt: Attempt(3), work: 0 }
            ]
        );
    }

    #[test]
    fn a_leaving_agent_stops_its_work_says_goodbye_after_its_results_and_drains() {
        let mut a = agent();
        drain(&mut a);
        a.handle(1, assign(1, 7, 1));
        a.handle(2, assign(2, 8, 1));
        a.work_finished(3, TaskId(7), Attempt(1), Outcome::Passed);
        drain(&mut a);
        a.leave(4);
        let (actions, frames) = drain(&mut a);
        assert_eq!(actions, [AgentAction::Stop { task: TaskId(8), attempt: Attempt(1) }]);
        let goodbye = frames.iter().find_map(|f| match f {
            Frame::Data(Packet { id, body: ToOrchestrator::Leaving { .. }, .. }) => Some(*id),
            _ => None,
        });
        let goodbye = goodbye.expect("the goodbye is sent");
        assert!(!a.is_drained(), "the result and the goodbye wait for acknowledgements");
        a.handle(5, assign(3, 9, 1));
        a.tick(10_000);
        let (actions, frames) = drain(&mut a);
        assert!(actions.is_empty(), "a leaving agent starts nothing");
        assert!(
            !frames.iter().any(|f| matches!(f, Frame::Data(Packet { body: ToOrchestrator::Heartbeat { .. }, .. })))
        );
        for id in 1..=goodbye {
            a.handle(10_001, Frame::Ack { session: 1, id });
        }
        assert!(a.is_drained());
    }

    #[test]
    fn results_are_resent_until_accepted_and_then_forgotten() {
        let mut a = agent();
        drain(&mut a);
        assert!(a.is_idle(), "a fresh agent holds nothing");
        a.handle(1, assign(1, 7, 1));
        assert!(!a.is_idle(), "an attempt runs");
        a.work_finished(100, TaskId(7), Attempt(1), Outcome::Passed);
        assert!(!a.is_idle(), "its result waits to be accepted");
        let (_, frames) = drain(&mut a);
        let sent = finished(&frames);
        assert_eq!(sent.len(), 1);
        a.tick(100 + 200);
        let (_, frames) = drain(&mut a);
        assert_eq!(finished(&frames), sent, "resent with the same id while unacknowledged");
        a.handle(400, Frame::Ack { session: 1, id: sent[0].0 });
        let accepted = ToAgent::ResultAccepted { task: TaskId(7), attempt: Attempt(1) };
        a.handle(
            400,
            Frame::Data(Packet { session: 1, id: 2, floor: 1, mode: DeliveryMode::ExactlyOnce, body: accepted }),
        );
        a.tick(10_000);
        let (_, frames) = drain(&mut a);
        assert!(finished(&frames).is_empty());
        assert!(a.is_idle(), "accepted: nothing is owed any more");
        a.handle(10_001, assign(3, 7, 1)); // a late copy of the old assignment
        assert_eq!(drain(&mut a).0, [], "an accepted attempt is not run again");
    }

    #[test]
    fn timeouts_and_cancellation_stop_work_and_report_it() {
        let mut a = agent();
        drain(&mut a);
        a.handle(0, assign(1, 1, 1));
        a.handle(0, assign(2, 2, 1));
        let cancel = ToAgent::Cancel { task: TaskId(2), attempt: Attempt(1) };
        a.handle(5, Frame::Data(Packet { session: 1, id: 3, floor: 1, mode: DeliveryMode::ExactlyOnce, body: cancel }));
        let (actions, frames) = drain(&mut a);
        assert_eq!(actions.last(), Some(&AgentAction::Stop { task: TaskId(2), attempt: Attempt(1) }));
        assert!(finished(&frames).is_empty(), "a cancelled attempt waits for its work to hand back");
        a.load_finished(6, TaskId(2), Attempt(1), Outcome::Passed, None);
        let (_, frames) = drain(&mut a);
        let outcome = frames.iter().find_map(|f| match f {
            Frame::Data(Packet { body: ToOrchestrator::Finished { outcome, .. }, .. }) => Some(outcome.clone()),
            _ => None,
        });
        assert_eq!(outcome, Some(Outcome::Cancelled), "whatever the work said, it was cancelled");
        a.tick(10_000);
        let (actions, frames) = drain(&mut a);
        assert!(actions.contains(&AgentAction::Stop { task: TaskId(1), attempt: Attempt(1) }));
        let results: std::collections::BTreeSet<(u64, u32)> =
            finished(&frames).iter().map(|&(_, t, a)| (t, a)).collect();
        assert_eq!(results.len(), 2, "one result each (the cancelled one resent by now)");
        a.work_finished(10_001, TaskId(1), Attempt(1), Outcome::Passed);
        assert!(finished(&drain(&mut a).1).is_empty(), "the shell's late report of a stopped attempt is ignored");
    }

    #[test]
    fn a_cancelled_attempt_whose_work_never_answers_ends_after_the_grace() {
        let mut a = agent();
        drain(&mut a);
        a.handle(0, assign(1, 1, 1));
        let cancel = ToAgent::Cancel { task: TaskId(1), attempt: Attempt(1) };
        a.handle(5, Frame::Data(Packet { session: 1, id: 2, floor: 1, mode: DeliveryMode::ExactlyOnce, body: cancel }));
        drain(&mut a);
        a.tick(5 + AgentConfig::default().stop_grace_ms);
        let (actions, frames) = drain(&mut a);
        assert!(actions.is_empty(), "told to stop once");
        assert_eq!(finished(&frames).len(), 1);
    }

    #[test]
    fn the_results_kept_are_bounded() {
        let mut a = agent();
        for task in 1..=3 {
            a.handle(0, assign(task, task, 1));
            a.work_finished(1, TaskId(task), Attempt(1), Outcome::Passed);
        }
        assert_eq!(a.results_dropped(), 1);
        assert_eq!(a.finished.len(), 2);
    }
}
