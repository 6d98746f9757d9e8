//! Checkers that trust nothing the orchestrator says about itself: they rebuild the books from
//! its events (leases, allocations, ends) and report any task ended twice, stale result
//! counted or node over-committed. The simulator and the real shell both feed them.

use std::collections::BTreeMap;

use crate::placement::{Amounts, NodeIdx};
use crate::protocol::{Attempt, Event, TaskId, Terminal};
use crate::report::{Invariant, Spread, Tasks};

/// What the orchestrator said of a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeEvent {
    /// Declared dead.
    Dead,
    /// A new incarnation said hello.
    Up,
    /// Heard from again in the same incarnation.
    Back,
}

/// Checkers that trust nothing the orchestrator says about itself: they rebuild the books
/// from its events and compare.
#[derive(Default)]
pub struct Checker {
    /// Per node, its capacity.
    pub capacity: Vec<Amounts>,
    /// Per task, what it needs.
    pub task_amounts: Vec<Amounts>,
    /// Per node, what the checker believes is allocated.
    pub allocated: Vec<Amounts>,
    /// Per task, its current lease as the events tell it.
    pub lease: BTreeMap<TaskId, (Attempt, NodeIdx)>,
    /// Per task that ended, how, and how many times (more than once is a violation).
    pub ended: BTreeMap<TaskId, (Terminal, u32)>,
    /// Per node, in time order: declared dead, a new incarnation, back from the dead.
    pub history: Vec<Vec<(u64, NodeEvent)>>,
    /// Nodes declared dead, counting every time.
    pub declared_dead: u64,
    /// What went wrong, with the time (ms) and the invariant broken.
    pub violations: Vec<(u64, Invariant, String)>,
}

impl Checker {
    /// A checker for nodes of `capacity` and tasks needing `task_amounts`, numbered in order.
    pub fn new(capacity: Vec<Amounts>, task_amounts: Vec<Amounts>) -> Checker {
        let nodes = capacity.len();
        Checker {
            capacity,
            task_amounts,
            allocated: vec![Amounts::default(); nodes],
            history: vec![Vec::new(); nodes],
            ..Checker::default()
        }
    }

    fn end_lease(&mut self, task: TaskId) {
        if let Some((_, node)) = self.lease.remove(&task) {
            let n = node.0 as usize;
            self.allocated[n] = self.allocated[n].saturating_minus(&self.task_amounts[task.0 as usize]);
        }
    }

    /// Whether the orchestrator held `node` dead at `at`: declared dead, and not heard from
    /// since (no new incarnation, no return).
    pub fn dead_at(&self, node: usize, at: u64) -> bool {
        let last = self.history[node].iter().rev().find(|&&(t, _)| t <= at);
        matches!(last, Some((_, NodeEvent::Dead)))
    }

    /// Whether `node`, last killed at `last_kill`, is still down: no new incarnation said hello
    /// after the kill.
    pub fn down_since_kill(&self, node: usize, last_kill: Option<u64>) -> bool {
        let last_up = self.history[node].iter().rev().find(|&&(_, e)| e == NodeEvent::Up).map(|&(t, _)| t);
        last_kill.is_some_and(|k| last_up.is_none_or(|up| up <= k))
    }

    /// When the orchestrator first knew of a kill at `at`: declared dead or saw the restart.
    pub fn noticed(&self, node: usize, at: u64) -> Option<u64> {
        self.history[node].iter().find(|&&(t, e)| t >= at && e != NodeEvent::Back).map(|&(t, _)| t)
    }

    /// What became of `submitted` tasks, as the events tell it.
    pub fn tasks(&self, submitted: u64) -> Tasks {
        let mut tasks = Tasks { submitted, ..Tasks::default() };
        for &(terminal, count) in self.ended.values() {
            match terminal {
                Terminal::Completed => tasks.completed += 1,
                Terminal::Failed => tasks.failed += 1,
                Terminal::Cancelled => tasks.cancelled += 1,
            }
            tasks.duplicated += u64::from(count > 1);
        }
        tasks.lost = submitted.saturating_sub(self.ended.len() as u64);
        tasks
    }

    /// From each kill `(node, at)` to the first sign the orchestrator knew (declared dead, or
    /// the restart seen); a kill never noticed counts until `end_ms`. A node the orchestrator
    /// already held dead (cut off by a partition, say) needs no noticing, and a node killed
    /// before it ever said hello cannot be noticed dead: it is left out.
    pub fn detection(&self, kills: &[(usize, u64)], end_ms: u64) -> Option<Spread> {
        let mut times: Vec<u64> = kills
            .iter()
            .filter(|&&(node, at)| self.history[node].iter().any(|&(t, e)| t <= at && e == NodeEvent::Up))
            .map(|&(node, at)| {
                if self.dead_at(node, at) {
                    0
                } else {
                    self.noticed(node, at).map_or(end_ms.saturating_sub(at), |t| t - at)
                }
            })
            .collect();
        times.sort_unstable();
        (!times.is_empty()).then(|| Spread { p50: times[times.len() / 2], max: times[times.len() - 1] })
    }

    /// Takes in one event of the orchestrator, at `now` (ms).
    pub fn observe(&mut self, now: u64, event: &Event) {
        match event {
            Event::Assigned { task, attempt, node, .. } => {
                self.end_lease(*task);
                self.lease.insert(*task, (*attempt, *node));
                let n = node.0 as usize;
                self.allocated[n] = self.allocated[n].plus(&self.task_amounts[task.0 as usize]);
                if !self.capacity[n].covers(&self.allocated[n]) {
                    self.violations.push((now, Invariant::OverCommit, format!("node {n} over-committed by {task:?}")));
                }
            }
            Event::Counted { task, attempt, node, .. } => {
                if self.lease.get(task) == Some(&(*attempt, *node)) {
                    self.end_lease(*task);
                } else {
                    self.violations.push((
                        now,
                        Invariant::StaleResult,
                        format!("a stale result of {task:?} ({attempt:?}) was counted"),
                    ));
                }
            }
            Event::Reassigned { task, .. } | Event::LeaseExpired { task, .. } => self.end_lease(*task),
            Event::Ended { task, terminal } => {
                let entry = self.ended.entry(*task).or_insert((*terminal, 0));
                entry.1 += 1;
                if entry.1 > 1 {
                    self.violations.push((
                        now,
                        Invariant::EndedTwice,
                        format!("{task:?} ended a second time ({terminal:?})"),
                    ));
                }
            }
            Event::NodeDead { node } => {
                self.declared_dead += 1;
                self.history[node.0 as usize].push((now, NodeEvent::Dead));
            }
            Event::NodeUp { node, .. } => self.history[node.0 as usize].push((now, NodeEvent::Up)),
            Event::NodeBack { node } => self.history[node.0 as usize].push((now, NodeEvent::Back)),
            Event::NodeLeft { node } => self.history[node.0 as usize].push((now, NodeEvent::Dead)),
            Event::Stale { .. } => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Incarnation;

    #[test]
    fn detection_counts_from_the_kill_to_the_first_sign_and_skips_nodes_never_heard_of() {
        let mut checker = Checker::new(vec![Amounts::default(); 3], Vec::new());
        let up = |node| Event::NodeUp { node: NodeIdx(node), incarnation: Incarnation(1) };
        checker.observe(100, &up(0));
        checker.observe(100, &up(1));
        checker.observe(5_000, &Event::NodeDead { node: NodeIdx(0) });
        // Node 0 killed at 1 s, declared dead at 5 s; node 1 killed at 2 s and never noticed by
        // the end at 9 s; node 2 killed at 50 ms, before it ever said hello, up again at 7 s.
        checker.observe(7_000, &up(2));
        let spread = checker.detection(&[(0, 1_000), (1, 2_000), (2, 50)], 9_000).expect("kills were noticed");
        assert_eq!((spread.p50, spread.max), (7_000, 7_000));
        let spread = checker.detection(&[(0, 1_000), (2, 50)], 9_000).expect("one kill counts");
        assert_eq!((spread.p50, spread.max), (4_000, 4_000));
        assert_eq!(checker.detection(&[(2, 50)], 9_000), None, "a node never heard of is left out");
    }
}
