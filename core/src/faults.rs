//! The scenario's network faults, applied to each message on its way.
//!
//! Every message in dtest goes between the orchestrator and one node, so a fault is a question
//! about one node's link: is it cut (partition, clog), lossy, slow? The active faults are kept
//! in a list and asked per node, O(active faults): no all-pairs link tables, whatever the
//! cluster's size. The simulator asks per message; the real shell asks once per fault change
//! and sends each node its [`Link`], which the node's message layer applies to every frame.
//! Kills, restarts and pauses are the shells' own (madsim's `Handle::kill`, SIGKILL).

use serde::{Deserialize, Serialize};

use crate::scenario::{ClogDirection, FaultKind, NodeRef, NodeSet, Scenario, Side};

/// Which way a message travels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// From the orchestrator to the node.
    ToNode,
    /// From the node to the orchestrator.
    ToOrchestrator,
}

/// What the faults in force do to one direction of a node's link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Every frame is dropped (partition, clog).
    #[serde(default)]
    pub cut: bool,
    /// The probability that a frame is lost, in [0, 1].
    #[serde(default)]
    pub loss: f64,
    /// Extra delay drawn uniformly from `latency_min_ms..=latency_max_ms`.
    #[serde(default)]
    pub latency_min_ms: u64,
    /// See `latency_min_ms`.
    #[serde(default)]
    pub latency_max_ms: u64,
}

impl Rule {
    /// The fate of one frame; `draw` gives uniform numbers in [0, 1).
    pub fn verdict(&self, mut draw: impl FnMut() -> f64) -> Verdict {
        if self.cut {
            return Verdict::Cut;
        }
        if self.loss > 0.0 && draw() < self.loss {
            return Verdict::Lost;
        }
        if self.latency_max_ms == 0 {
            return Verdict::Deliver(0);
        }
        let (min, max) = (self.latency_min_ms, self.latency_max_ms.max(self.latency_min_ms));
        Verdict::Deliver((min + ((max - min + 1) as f64 * draw()) as u64).min(max))
    }
}

/// Both directions of one node's link to the orchestrator, and whether the node is paused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    /// Frames from the orchestrator to the node.
    #[serde(default)]
    pub to_node: Rule,
    /// Frames from the node to the orchestrator.
    #[serde(default)]
    pub to_orchestrator: Rule,
}

impl Link {
    /// The rule for `direction`.
    pub fn rule(&self, direction: Direction) -> &Rule {
        match direction {
            Direction::ToNode => &self.to_node,
            Direction::ToOrchestrator => &self.to_orchestrator,
        }
    }
}

/// What happens to one message.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    /// Dropped by a partition or clog.
    Cut,
    /// Dropped by packet loss.
    Lost,
    /// Delivered after this much extra delay, in milliseconds.
    Deliver(u64),
}

#[derive(Clone, Debug)]
enum Active {
    Partition { sides: Vec<Side>, oneway: bool },
    Clog { nodes: NodeSet, direction: ClogDirection },
    Loss { nodes: NodeSet, rate: f64 },
    Latency { nodes: NodeSet, min_ms: u64, max_ms: u64 },
}

/// The network faults in force, by the index of the scenario fault that started them.
#[derive(Clone, Debug, Default)]
pub struct NetFaults {
    active: Vec<(usize, Active)>,
}

impl NetFaults {
    /// Puts scenario fault `index` in force, if it is a network fault.
    pub fn start(&mut self, scenario: &Scenario, index: usize) {
        let active = match &scenario.faults[index].kind {
            FaultKind::Partition { sides, oneway, .. } => Active::Partition { sides: sides.clone(), oneway: *oneway },
            FaultKind::Clog { nodes, direction, .. } => Active::Clog { nodes: nodes.clone(), direction: *direction },
            FaultKind::PacketLoss { rate, nodes, .. } => Active::Loss { nodes: nodes.clone(), rate: *rate },
            FaultKind::Latency { min_ms, max_ms, nodes, .. } => {
                Active::Latency { nodes: nodes.clone(), min_ms: *min_ms, max_ms: *max_ms }
            }
            FaultKind::Kill { .. } | FaultKind::Pause { .. } => return,
        };
        self.active.push((index, active));
    }

    /// Ends scenario fault `index` (heals the partition, clears the clog, ...).
    pub fn end(&mut self, index: usize) {
        self.active.retain(|(i, _)| *i != index);
    }

    /// Whether any fault in force cuts `node` off from the orchestrator in some direction.
    pub fn cuts(&self, node: NodeRef) -> bool {
        [Direction::ToNode, Direction::ToOrchestrator].into_iter().any(|d| self.cut(node, d))
    }

    fn cut(&self, node: NodeRef, direction: Direction) -> bool {
        self.active.iter().any(|(_, fault)| match fault {
            Active::Partition { sides, oneway } => partition_cuts(sides, *oneway, node, direction),
            Active::Clog { nodes, direction: d } => {
                nodes.contains(node)
                    && match d {
                        ClogDirection::Both => true,
                        ClogDirection::In => direction == Direction::ToNode,
                        ClogDirection::Out => direction == Direction::ToOrchestrator,
                    }
            }
            _ => false,
        })
    }

    /// What the faults in force do to `node`'s link.
    pub fn link(&self, node: NodeRef) -> Link {
        let covers = |nodes: &NodeSet| nodes.is_empty() || nodes.contains(node);
        let mut rule = Rule::default();
        for (_, fault) in &self.active {
            match fault {
                Active::Loss { nodes, rate } if covers(nodes) => rule.loss = rule.loss.max(*rate),
                // The slowest latency fault in force decides.
                Active::Latency { nodes, min_ms, max_ms } if covers(nodes) && *max_ms > rule.latency_max_ms => {
                    (rule.latency_min_ms, rule.latency_max_ms) = (*min_ms, *max_ms);
                }
                _ => {}
            }
        }
        Link {
            to_node: Rule { cut: self.cut(node, Direction::ToNode), ..rule },
            to_orchestrator: Rule { cut: self.cut(node, Direction::ToOrchestrator), ..rule },
        }
    }

    /// The fate of a message between the orchestrator and `node`; `draw` gives uniform numbers
    /// in [0, 1) from the caller's seeded generator.
    pub fn verdict(&self, node: NodeRef, direction: Direction, draw: impl FnMut() -> f64) -> Verdict {
        self.link(node).rule(direction).verdict(draw)
    }

    /// Whether no fault is in force.
    pub fn is_empty(&self) -> bool {
        self.active.is_empty()
    }
}

/// Whether a partition cuts the link between `node` and the orchestrator in `direction`.
fn partition_cuts(sides: &[Side], oneway: bool, node: NodeRef, direction: Direction) -> bool {
    // Side indices; `None` is the rest of the cluster, on no side.
    let node_side = sides.iter().position(|s| s.nodes.contains(node));
    let orchestrator_side = sides.iter().position(|s| s.orchestrator);
    if node_side == orchestrator_side {
        return false;
    }
    if !oneway {
        return true;
    }
    // One way: only traffic leaving the first side is dropped.
    match direction {
        Direction::ToOrchestrator => node_side == Some(0),
        Direction::ToNode => orchestrator_side == Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::GroupId;

    fn node(group: u32, index: u32) -> NodeRef {
        NodeRef { group: GroupId(group), index }
    }

    fn side(groups: &[u32], orchestrator: bool) -> Side {
        Side { nodes: NodeSet { groups: groups.iter().map(|&g| GroupId(g)).collect(), nodes: vec![] }, orchestrator }
    }

    #[test]
    fn partitions_cut_the_sides_away_from_the_orchestrator() {
        let two = [side(&[0], true), side(&[1], false)];
        assert!(!partition_cuts(&two, false, node(0, 1), Direction::ToNode));
        assert!(partition_cuts(&two, false, node(1, 1), Direction::ToNode));
        assert!(partition_cuts(&two, false, node(2, 1), Direction::ToOrchestrator), "the rest is another side");
        let alone = [side(&[1], false)];
        assert!(partition_cuts(&alone, false, node(1, 1), Direction::ToOrchestrator));
        assert!(
            !partition_cuts(&alone, false, node(0, 1), Direction::ToOrchestrator),
            "the orchestrator is with the rest"
        );
        // One way, first side (with the orchestrator) to the others: only orchestrator → node drops.
        assert!(partition_cuts(&two, true, node(1, 1), Direction::ToNode));
        assert!(!partition_cuts(&two, true, node(1, 1), Direction::ToOrchestrator));
    }

    #[test]
    fn loss_and_latency_apply_to_their_nodes_or_everyone() {
        let mut faults = NetFaults::default();
        faults.active.push((0, Active::Loss { nodes: NodeSet::default(), rate: 0.5 }));
        faults.active.push((
            1,
            Active::Latency { nodes: NodeSet { groups: vec![GroupId(1)], nodes: vec![] }, min_ms: 10, max_ms: 20 },
        ));
        assert_eq!(faults.verdict(node(0, 1), Direction::ToNode, || 0.4), Verdict::Lost);
        assert_eq!(faults.verdict(node(0, 1), Direction::ToNode, || 0.6), Verdict::Deliver(0));
        assert_eq!(faults.verdict(node(1, 1), Direction::ToNode, || 0.99), Verdict::Deliver(20));
        faults.end(0);
        faults.end(1);
        assert_eq!(faults.verdict(node(1, 1), Direction::ToNode, || 0.0), Verdict::Deliver(0));
    }
}
