//! A service's ledger of its nodes' resources: what each node has, and what is reserved on it
//! and for whom, so that allocations and executions that share nodes never over-commit one.
//!
//! `dtest serve` keeps one ledger for all its nodes. An allocation reserves a fixed amount on one
//! node ([`Ledger::reserve`]). An execution takes, on each of its `n` nodes, its *share*
//! ([`Ledger::share`] of [`share_of_need`]): its tasks' needs summed, divided by `n`, but at
//! least what its largest task needs (else that node could run none), capped by what is free.
//! Its own placement then works within those shares, so two executions never place more on a
//! node than it has, and one execution does not hold every node whole while using part of it.

use std::collections::BTreeMap;

use crate::scenario::Resources;

/// What the ledger refuses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No node by that name.
    UnknownNode(String),
    /// The id holds a reservation already.
    Taken(String),
    /// The node has not that much free.
    DoesNotFit {
        /// The node.
        node: String,
        /// What it has free.
        free: Resources,
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::UnknownNode(node) => write!(f, "no node `{node}`"),
            Refusal::Taken(id) => write!(f, "`{id}` holds a reservation already"),
            Refusal::DoesNotFit { node, free } => write!(
                f,
                "node `{node}` has only cpu_millis {}, memory_mb {}, disk_mb {}, net_mbps {}, gpus {} free",
                free.cpu_millis, free.memory_mb, free.disk_mb, free.net_mbps, free.gpus
            ),
        }
    }
}

/// Reservations by node.
#[derive(Clone, Debug, Default)]
pub struct Ledger {
    capacity: BTreeMap<String, Resources>,
    /// Reservation id → (node, amount).
    reserved: BTreeMap<String, (String, Resources)>,
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// Sets what `node` has (a node registering, or registering again with other resources).
    /// Reservations on it stay, even when it now has less than they hold.
    pub fn set_capacity(&mut self, node: &str, capacity: Resources) {
        self.capacity.insert(node.to_owned(), capacity);
    }

    /// What `node` has.
    pub fn capacity(&self, node: &str) -> Option<&Resources> {
        self.capacity.get(node)
    }

    /// What is reserved on `node`.
    pub fn reserved(&self, node: &str) -> Resources {
        self.reserved.values().filter(|(n, _)| n == node).fold(Resources::default(), |sum, (_, r)| plus(&sum, r))
    }

    /// What is free on `node`.
    pub fn free(&self, node: &str) -> Option<Resources> {
        Some(minus(self.capacity.get(node)?, &self.reserved(node)))
    }

    /// Reserves `amount` on `node` under `id`, if it fits in what is free.
    pub fn reserve(&mut self, id: &str, node: &str, amount: &Resources) -> Result<(), Refusal> {
        if self.reserved.contains_key(id) {
            return Err(Refusal::Taken(id.to_owned()));
        }
        let free = self.free(node).ok_or_else(|| Refusal::UnknownNode(node.to_owned()))?;
        if !free.covers(amount) {
            return Err(Refusal::DoesNotFit { node: node.to_owned(), free });
        }
        self.reserved.insert(id.to_owned(), (node.to_owned(), amount.clone()));
        Ok(())
    }

    /// Puts back a reservation the ledger held before a restart, whether it fits or not (what
    /// was promised stays promised).
    pub fn restore(&mut self, id: &str, node: &str, amount: &Resources) {
        self.reserved.insert(id.to_owned(), (node.to_owned(), amount.clone()));
    }

    /// Reserves on `node` under `id` the part of `need` that is free, and returns it: an
    /// execution's share of a node.
    pub fn share(&mut self, id: &str, node: &str, need: &Resources) -> Result<Resources, Refusal> {
        let free = self.free(node).ok_or_else(|| Refusal::UnknownNode(node.to_owned()))?;
        let share = min(&free, need);
        self.reserve(id, node, &share)?;
        Ok(share)
    }

    /// Releases reservation `id`; what it held, if it existed.
    pub fn release(&mut self, id: &str) -> Option<(String, Resources)> {
        self.reserved.remove(id)
    }

    /// Releases every reservation whose id starts with `prefix` (an execution's, one per node).
    pub fn release_prefix(&mut self, prefix: &str) {
        self.reserved.retain(|id, _| !id.starts_with(prefix));
    }

    /// Every reservation: id, node, amount.
    pub fn reservations(&self) -> impl Iterator<Item = (&str, &str, &Resources)> {
        self.reserved.iter().map(|(id, (node, r))| (id.as_str(), node.as_str(), r))
    }
}

/// What an execution of `scenario` on `nodes` nodes asks of each: its total need over `nodes`,
/// but no less than its largest task's need.
pub fn share_of_need(scenario: &crate::scenario::Scenario, nodes: usize) -> Resources {
    let n = nodes.max(1) as u64;
    let part = zip(&total_need(scenario), &Resources::default(), |total, _| total.div_ceil(n));
    scenario.workload.tasks.iter().fold(part, |share, task| zip(&share, &task.requires, u64::max))
}

/// The sum of what every task instance of a scenario needs: what a run could use on one node at
/// most.
pub fn total_need(scenario: &crate::scenario::Scenario) -> Resources {
    scenario.workload.tasks.iter().fold(Resources::default(), |sum, task| {
        let one = &task.requires;
        let mut all = Resources {
            cpu_millis: one.cpu_millis.saturating_mul(u64::from(task.count)),
            memory_mb: one.memory_mb.saturating_mul(u64::from(task.count)),
            disk_mb: one.disk_mb.saturating_mul(u64::from(task.count)),
            net_mbps: one.net_mbps.saturating_mul(u64::from(task.count)),
            gpus: one.gpus.saturating_mul(u64::from(task.count)),
            custom: BTreeMap::new(),
        };
        for (name, units) in &one.custom {
            all.custom.insert(name.clone(), units.saturating_mul(u64::from(task.count)));
        }
        plus(&sum, &all)
    })
}

fn zip(a: &Resources, b: &Resources, f: impl Fn(u64, u64) -> u64) -> Resources {
    let mut custom = BTreeMap::new();
    for name in a.custom.keys().chain(b.custom.keys()) {
        let value = f(a.custom.get(name).copied().unwrap_or(0), b.custom.get(name).copied().unwrap_or(0));
        custom.insert(name.clone(), value);
    }
    Resources {
        cpu_millis: f(a.cpu_millis, b.cpu_millis),
        memory_mb: f(a.memory_mb, b.memory_mb),
        disk_mb: f(a.disk_mb, b.disk_mb),
        net_mbps: f(a.net_mbps, b.net_mbps),
        gpus: f(a.gpus, b.gpus),
        custom,
    }
}

fn plus(a: &Resources, b: &Resources) -> Resources {
    zip(a, b, u64::saturating_add)
}

fn minus(a: &Resources, b: &Resources) -> Resources {
    zip(a, b, u64::saturating_sub)
}

fn min(a: &Resources, b: &Resources) -> Resources {
    zip(a, b, u64::min)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(cpu_millis: u64) -> Resources {
        Resources { cpu_millis, memory_mb: cpu_millis, ..Resources::default() }
    }

    #[test]
    fn reservations_never_over_commit_a_node() {
        let mut ledger = Ledger::new();
        ledger.set_capacity("a", cpu(1000));
        ledger.reserve("alloc-1", "a", &cpu(600)).expect("fits");
        let refused = ledger.reserve("alloc-2", "a", &cpu(600)).expect_err("does not fit");
        assert_eq!(refused, Refusal::DoesNotFit { node: "a".to_owned(), free: cpu(400) });
        assert_eq!(ledger.reserve("alloc-1", "a", &cpu(1)), Err(Refusal::Taken("alloc-1".to_owned())));
        assert_eq!(ledger.reserve("x", "b", &cpu(1)), Err(Refusal::UnknownNode("b".to_owned())));
        assert_eq!(ledger.share("exec/a", "a", &cpu(5000)), Ok(cpu(400)), "a share is what is free");
        assert_eq!(ledger.free("a"), Some(cpu(0)));
        ledger.release_prefix("exec/");
        assert_eq!(ledger.release("alloc-1").map(|(n, _)| n), Some("a".to_owned()));
        assert_eq!(ledger.free("a"), Some(cpu(1000)));
    }

    #[test]
    fn an_execution_asks_each_node_its_part_but_room_for_its_largest_task() {
        let text = r#"{ "name": "s", "description": "d", "duration_s": 60,
            "cluster": { "groups": [ { "name": "g", "count": 3 } ] },
            "workload": { "tasks": [
                { "name": "small", "count": 6, "kind": "command", "requires": { "cpu_millis": 100, "memory_mb": 10 }, "command": { "argv": ["true"] } },
                { "name": "big", "count": 1, "kind": "command", "requires": { "cpu_millis": 900, "memory_mb": 10 }, "command": { "argv": ["true"] } } ] } }"#;
        let scenario = crate::scenario::parse(text.as_bytes()).expect("a scenario");
        assert_eq!(total_need(&scenario).cpu_millis, 1500);
        let share = share_of_need(&scenario, 3);
        assert_eq!((share.cpu_millis, share.memory_mb), (900, 24), "the largest task's cpu; 70 MB over 3");
        assert_eq!(share_of_need(&scenario, 1).cpu_millis, 1500);
    }

    #[test]
    fn a_share_is_no_more_than_the_need() {
        let mut ledger = Ledger::new();
        ledger.set_capacity("a", cpu(1000));
        assert_eq!(ledger.share("e1/a", "a", &cpu(300)), Ok(cpu(300)));
        assert_eq!(ledger.share("e2/a", "a", &cpu(300)), Ok(cpu(300)));
        assert_eq!(ledger.free("a"), Some(cpu(400)));
    }
}
