//! Carrying the run's frames to and from node daemons over their HTTP API: one long poll open
//! per node for its frames, batched sends of the orchestrator's, and the node's network faults
//! kept at what the run decided. A failed send loses its frames, as a network would; the
//! protocol resends what must arrive.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use dtest_core::protocol::{Frame, ToAgent, ToOrchestrator};
use dtest_node::api::{Exchange, Faults, Plan};
use dtest_node::client::{ClientError, NodeClient};
use tokio::sync::{mpsc, watch};

use crate::session::Clock;

/// How long one long poll waits for a node's frames.
const POLL_WAIT_MS: u64 = 1_000;
/// After a failed exchange, how long before the next.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Bytes of the nodes' replies queued for the run at most (each reply counts its length on the
/// wire, up to this): a node that answers faster than the run takes its frames waits.
pub const QUEUED_BYTES_MAX: usize = 32 * 1024 * 1024;

/// A reply's share of [`QUEUED_BYTES_MAX`], given back when the run has taken its frames.
pub type Held = tokio::sync::OwnedSemaphorePermit;

/// What reaches the run from the nodes.
pub enum Input {
    /// Frames from node `i`, holding their reply's share of the queue.
    Frames(usize, Vec<Frame<ToOrchestrator>>, Held),
    /// This many frames to a node could not be delivered (its exchange failed).
    Undelivered(u64),
}

/// What a node's carriers share: the plan, the run's clock, and whether the run is over.
#[derive(Clone)]
pub struct Carrier {
    /// The plan.
    pub plan: Arc<Plan>,
    /// The run's clock.
    pub clock: Clock,
    /// Set once the run is over: from then on a node that lacks the plan is not given it again.
    pub over: Arc<AtomicBool>,
    /// The queue's bytes, [`QUEUED_BYTES_MAX`] in all, shared by every node's carriers.
    pub queued: Arc<tokio::sync::Semaphore>,
}

impl Carrier {
    /// Waits for room for a reply of `bytes` in the run's queue (a reply larger than the whole
    /// queue waits for all of it); `None` if the queue is closed.
    async fn hold(&self, bytes: usize) -> Option<Held> {
        let permits = bytes.clamp(1, QUEUED_BYTES_MAX) as u32;
        self.queued.clone().acquire_many_owned(permits).await.ok()
    }

    /// The plan as sent now, saying how long the run has been going; `None` once the run is over.
    fn plan_now(&self) -> Option<Plan> {
        (!self.over.load(Ordering::Relaxed)).then(|| Plan { elapsed_ms: self.clock.now_ms(), ..(*self.plan).clone() })
    }

    /// Gives the node the plan again, unless the run is over.
    async fn give_plan(&self, client: &NodeClient) -> Result<(), ClientError> {
        match self.plan_now() {
            Some(plan) => client.put_plan(&plan).await,
            None => Err(ClientError::NeedsPlan),
        }
    }
}

/// Keeps one long poll open to node `i`, forwarding its frames; gives it the plan when it lacks
/// it (a restarted node: a new life that needs the plan again).
pub async fn poll_node(i: usize, client: NodeClient, carrier: Carrier, inputs: mpsc::Sender<Input>) {
    // The session's end closes `inputs`: from then on this node is not ours to poll, nor to give
    // the plan to again.
    while !inputs.is_closed() {
        let exchange = Exchange { plan: carrier.plan.id.clone(), frames: Vec::new(), wait_ms: POLL_WAIT_MS };
        match client.exchange_measured(&exchange).await {
            Ok((reply, _)) if reply.frames.is_empty() => {}
            Ok((reply, bytes)) => {
                let Some(held) = carrier.hold(bytes).await else { return };
                if inputs.send(Input::Frames(i, reply.frames, held)).await.is_err() {
                    return;
                }
            }
            Err(ClientError::NeedsPlan) => {
                if carrier.give_plan(&client).await.is_err() {
                    tokio::time::sleep(RETRY_PAUSE).await;
                }
            }
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}

/// Sends the orchestrator's frames to node `i`, batching whatever queued meanwhile.
pub async fn send_to_node(
    i: usize,
    client: NodeClient,
    carrier: Carrier,
    mut frames: mpsc::Receiver<Frame<ToAgent>>,
    inputs: mpsc::Sender<Input>,
) {
    while let Some(first) = frames.recv().await {
        let mut batch = vec![first];
        while let Ok(frame) = frames.try_recv() {
            batch.push(frame);
        }
        let exchange = Exchange { plan: carrier.plan.id.clone(), frames: batch, wait_ms: 0 };
        let count = exchange.frames.len() as u64;
        let reply = match client.exchange_measured(&exchange).await {
            Err(ClientError::NeedsPlan) if inputs.is_closed() => return,
            Err(ClientError::NeedsPlan) => match carrier.give_plan(&client).await {
                Ok(()) => client.exchange_measured(&exchange).await,
                Err(e) => Err(e),
            },
            other => other,
        };
        let input = match reply {
            Ok((reply, _)) if reply.frames.is_empty() => continue,
            Ok((reply, bytes)) => match carrier.hold(bytes).await {
                Some(held) => Input::Frames(i, reply.frames, held),
                None => return,
            },
            Err(_) => Input::Undelivered(count),
        };
        if inputs.send(input).await.is_err() {
            return;
        }
    }
}

/// Keeps the node's fault settings for plan `plan` (the node may hold others' too) at the latest
/// the run decided, retrying until it takes them.
pub async fn push_faults(client: NodeClient, plan: String, mut faults: watch::Receiver<Faults>) {
    while faults.changed().await.is_ok() {
        loop {
            let latest = Faults { plan: Some(plan.clone()), ..faults.borrow_and_update().clone() };
            if client.put_faults(&latest).await.is_ok() {
                break;
            }
            tokio::time::sleep(RETRY_PAUSE).await;
            if faults.has_changed().is_err() {
                return;
            }
        }
    }
}
