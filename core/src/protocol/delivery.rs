//! Delivery modes for protocol messages between one sender and one receiver.
//!
//! | mode | sender | receiver | the effect happens |
//! | --- | --- | --- | --- |
//! | `fire_and_forget` | sends once | delivers what arrives, no acknowledgement | at most once per copy the network carries: zero times if lost, twice if the network duplicates |
//! | `at_least_once` | resends until acknowledged | delivers and acknowledges every copy | at least once, possibly more |
//! | `exactly_once` | resends until acknowledged | delivers the first copy of each id, acknowledges every copy | exactly once, as long as both ends live |
//!
//! Exactly-once is at-least-once plus deduplication by message id, as Kafka's idempotent
//! producer does. Deduplication stays bounded without ever dropping an unseen message: the
//! sender stamps every packet with the lowest id it still waits for (`floor`), so the receiver
//! forgets every id below it, and never sends an id `window` or more above its floor (a sliding
//! window, as TCP's), so the receiver remembers at most `window` ids. A restarted
//! node is a new sender (a new incarnation) and gets a new [`Inbox`].
//!
//! Every packet and acknowledgement belongs to a **session** (the agent's incarnation): when a
//! node restarts, both sides start new sessions whose ids begin again at 1, and late frames of
//! the old session are ignored instead of being mistaken for new ones.
//!
//! Resends back off exponentially from `retry_ms` up to `retry_cap_ms`. Time is passed in.

use std::collections::{BTreeMap, BTreeSet};

/// How a message is delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryMode {
    /// Sent once, never acknowledged.
    FireAndForget,
    /// Resent until acknowledged; may be delivered more than once.
    AtLeastOnce,
    /// Resent until acknowledged; delivered once.
    ExactlyOnce,
}

/// A message on the wire.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Packet<T> {
    /// The conversation this packet belongs to.
    pub session: u64,
    /// The sender's sequence number of reliable messages, from 1; 0 for fire-and-forget ones,
    /// which are never acknowledged or deduplicated.
    pub id: u64,
    /// Every id below this one is acknowledged; the receiver may forget them.
    pub floor: u64,
    /// How it is delivered.
    pub mode: DeliveryMode,
    /// The message.
    pub body: T,
}

/// What travels between two ends: a message, or the acknowledgement of one.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Frame<T> {
    /// A message.
    Data(Packet<T>),
    /// The receiver got the reliable message `id` of `session`.
    Ack {
        /// The conversation.
        session: u64,
        /// The message.
        id: u64,
    },
}

/// The receiver delivers an exactly-once id only below its floor plus this many: a sender keeps
/// within its window (at most this, asserted by [`Outbox::new`]), so what lies beyond comes from
/// a peer that breaks the protocol, and is neither delivered nor acknowledged. It bounds what an
/// [`Inbox`] remembers, whatever the peer sends.
pub const RECEIVE_WINDOW_MAX: u64 = 16_384;

/// Settings of an [`Outbox`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OutboxConfig {
    /// Reliable ids may run at most this far ahead of the oldest unacknowledged one; beyond it
    /// sending is [`Full`].
    pub window: usize,
    /// First resend after this long.
    pub retry_ms: u64,
    /// Longest wait between resends.
    pub retry_cap_ms: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        OutboxConfig { window: 1_024, retry_ms: 200, retry_cap_ms: 5_000 }
    }
}

/// The outbox is at its window: wait for acknowledgements before sending more.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

#[derive(Clone, Debug)]
struct InFlight<T> {
    mode: DeliveryMode,
    body: T,
    resends: u32,
    due_ms: u64,
}

/// The sending side: numbers messages and resends the reliable ones until acknowledged.
#[derive(Clone, Debug)]
pub struct Outbox<T> {
    config: OutboxConfig,
    session: u64,
    next_id: u64,
    in_flight: BTreeMap<u64, InFlight<T>>,
}

impl<T: Clone> Outbox<T> {
    /// An empty outbox for `session`.
    pub fn new(config: OutboxConfig, session: u64) -> Outbox<T> {
        assert!(config.window as u64 <= RECEIVE_WINDOW_MAX, "a window past what receivers take");
        Outbox { config, session, next_id: 1, in_flight: BTreeMap::new() }
    }

    fn floor(&self) -> u64 {
        self.in_flight.keys().next().copied().unwrap_or(self.next_id)
    }

    /// Sends `body` at `now_ms`: the packet to put on the wire now.
    pub fn send(&mut self, now_ms: u64, mode: DeliveryMode, body: T) -> Result<Packet<T>, Full> {
        if mode == DeliveryMode::FireAndForget {
            return Ok(Packet { session: self.session, id: 0, floor: self.floor(), mode, body });
        }
        if self.next_id - self.floor() >= self.config.window as u64 {
            return Err(Full);
        }
        let id = self.next_id;
        self.next_id += 1;
        let due_ms = now_ms.saturating_add(self.config.retry_ms);
        self.in_flight.insert(id, InFlight { mode, body: body.clone(), resends: 0, due_ms });
        Ok(Packet { session: self.session, id, floor: self.floor(), mode, body })
    }

    /// The receiver acknowledged `id` of `session`. Acknowledgements of other sessions, unknown
    /// ids and repeats are ignored.
    pub fn acknowledge(&mut self, session: u64, id: u64) {
        if session == self.session {
            self.in_flight.remove(&id);
        }
    }

    /// The packets due for resending at `now_ms`, oldest first; each is scheduled again with
    /// exponential backoff.
    pub fn poll(&mut self, now_ms: u64) -> Vec<Packet<T>> {
        let (floor, session) = (self.floor(), self.session);
        let (retry_ms, cap_ms) = (self.config.retry_ms, self.config.retry_cap_ms);
        let mut due = Vec::new();
        for (&id, m) in self.in_flight.iter_mut().filter(|(_, m)| m.due_ms <= now_ms) {
            m.resends += 1;
            let wait = retry_ms.saturating_mul(1 << m.resends.min(20)).min(cap_ms).max(1);
            m.due_ms = now_ms.saturating_add(wait);
            due.push(Packet { session, id, floor, mode: m.mode, body: m.body.clone() });
        }
        due
    }

    /// When the next resend is due, for the caller's timer.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.in_flight.values().map(|m| m.due_ms).min()
    }

    /// Messages sent and not yet acknowledged.
    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }
}

/// What to do with a received packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// Whether to apply the message (false for a duplicate of an exactly-once message).
    pub deliver: bool,
    /// The id to acknowledge, for reliable modes.
    pub ack: Option<u64>,
}

/// The receiving side of one session: deduplicates exactly-once messages.
#[derive(Clone, Debug, Default)]
pub struct Inbox {
    session: u64,
    /// Every id below this was acknowledged by the sender's own account.
    floor: u64,
    /// Exactly-once ids at or above the floor already delivered.
    seen: BTreeSet<u64>,
}

impl Inbox {
    /// A receiver for `session` that has seen nothing.
    pub fn new(session: u64) -> Inbox {
        Inbox { session, ..Inbox::default() }
    }

    /// Takes in a packet: whether to deliver it and what to acknowledge. Packets of another
    /// session are neither delivered nor acknowledged.
    pub fn receive<T>(&mut self, packet: &Packet<T>) -> Receipt {
        if packet.session != self.session {
            return Receipt { deliver: false, ack: None };
        }
        if packet.floor > self.floor {
            self.floor = packet.floor;
            self.seen = self.seen.split_off(&self.floor);
        }
        match packet.mode {
            DeliveryMode::FireAndForget => Receipt { deliver: true, ack: None },
            DeliveryMode::AtLeastOnce => Receipt { deliver: true, ack: Some(packet.id) },
            // Past any sender's window: a peer that breaks the protocol would have it remembered.
            DeliveryMode::ExactlyOnce if packet.id >= self.floor.saturating_add(RECEIVE_WINDOW_MAX) => {
                Receipt { deliver: false, ack: None }
            }
            DeliveryMode::ExactlyOnce => {
                // Below the floor means the sender already had it acknowledged: a late copy.
                let first = packet.id >= self.floor && self.seen.insert(packet.id);
                Receipt { deliver: first, ack: Some(packet.id) }
            }
        }
    }

    /// Ids remembered for deduplication (bounded by the sender's window, and by
    /// [`RECEIVE_WINDOW_MAX`] whatever the sender does).
    pub fn remembered(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::ChaCha8Rng;
    use rand_chacha::rand_core::{Rng, SeedableRng};

    use super::*;

    /// Sends `count` messages through a network that drops, duplicates and reorders for the
    /// first `faulty_ms`, then behaves; returns how often each message's effect happened.
    fn run(mode: DeliveryMode, count: u64, seed: u64, faulty_ms: u64) -> (Vec<u32>, usize) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut outbox: Outbox<u64> = Outbox::new(OutboxConfig { window: 16, retry_ms: 50, retry_cap_ms: 400 }, 1);
        let mut inbox = Inbox::new(1);
        let mut effects = vec![0u32; count as usize + 1];
        let mut wire: Vec<(u64, Packet<u64>)> = Vec::new(); // (arrival time, packet)
        let mut acks: Vec<(u64, u64)> = Vec::new(); // (arrival time, id)
        let mut next = 1u64;
        let mut remembered_max = 0;
        for now in 0..60_000u64 {
            let faulty = now < faulty_ms;
            let transmit = |p: Packet<u64>, wire: &mut Vec<(u64, Packet<u64>)>, rng: &mut ChaCha8Rng| {
                let copies = if faulty { rng.next_u64() % 3 } else { 1 }; // 0: lost, 2: duplicated
                for _ in 0..copies {
                    let delay = 1 + if faulty { rng.next_u64() % 100 } else { 5 };
                    wire.push((now + delay, p.clone()));
                }
            };
            while next <= count {
                match outbox.send(now, mode, next) {
                    Ok(p) => {
                        transmit(p, &mut wire, &mut rng);
                        next += 1;
                    }
                    Err(Full) => break,
                }
            }
            for p in outbox.poll(now) {
                transmit(p, &mut wire, &mut rng);
            }
            let (arrived, rest): (Vec<_>, Vec<_>) = wire.drain(..).partition(|(t, _)| *t <= now);
            wire = rest;
            for (_, p) in arrived {
                let receipt = inbox.receive(&p);
                if receipt.deliver {
                    effects[p.body as usize] += 1;
                }
                if let Some(id) = receipt.ack
                    && (!faulty || rng.next_u64() % 3 != 0)
                {
                    acks.push((now + 1 + if faulty { rng.next_u64() % 100 } else { 5 }, id));
                }
            }
            remembered_max = remembered_max.max(inbox.remembered());
            let (arrived, rest): (Vec<_>, Vec<_>) = acks.drain(..).partition(|(t, _)| *t <= now);
            acks = rest;
            for (_, id) in arrived {
                outbox.acknowledge(1, id);
            }
        }
        (effects[1..].to_vec(), remembered_max)
    }

    #[test]
    fn exactly_once_applies_every_message_once_through_a_bad_network() {
        for seed in 0..50 {
            let (effects, remembered) = run(DeliveryMode::ExactlyOnce, 200, seed, 20_000);
            assert!(effects.iter().all(|&e| e == 1), "seed {seed}: {effects:?}");
            assert!(remembered <= 16, "seed {seed}: dedup memory {remembered} exceeds the window");
        }
    }

    #[test]
    fn at_least_once_applies_every_message_and_some_twice() {
        let mut duplicates = 0;
        for seed in 0..20 {
            let (effects, _) = run(DeliveryMode::AtLeastOnce, 200, seed, 20_000);
            assert!(effects.iter().all(|&e| e >= 1), "seed {seed}: a message was lost");
            duplicates += effects.iter().filter(|&&e| e > 1).count();
        }
        assert!(duplicates > 0, "the bad network duplicates, so at-least-once shows it");
    }

    #[test]
    fn fire_and_forget_loses_and_duplicates_on_a_bad_network_and_is_exact_on_a_good_one() {
        let (effects, _) = run(DeliveryMode::FireAndForget, 200, 1, 60_000);
        assert!(effects.contains(&0) && effects.iter().any(|&e| e > 1));
        let (effects, _) = run(DeliveryMode::FireAndForget, 200, 1, 0);
        assert!(effects.iter().all(|&e| e == 1));
    }

    #[test]
    fn the_window_bounds_what_is_in_flight() {
        let mut outbox: Outbox<()> = Outbox::new(OutboxConfig { window: 2, ..OutboxConfig::default() }, 1);
        assert!(outbox.send(0, DeliveryMode::ExactlyOnce, ()).is_ok());
        assert!(outbox.send(0, DeliveryMode::AtLeastOnce, ()).is_ok());
        assert_eq!(outbox.send(0, DeliveryMode::ExactlyOnce, ()), Err(Full));
        assert!(outbox.send(0, DeliveryMode::FireAndForget, ()).is_ok(), "unreliable messages are not held");
        outbox.acknowledge(2, 1); // another session's acknowledgement changes nothing
        assert_eq!(outbox.in_flight(), 2);
        outbox.acknowledge(1, 1);
        let p = outbox.send(0, DeliveryMode::ExactlyOnce, ()).expect("room again");
        assert_eq!((p.id, p.floor), (3, 2), "2 is the oldest unacknowledged");
        assert_eq!(outbox.send(0, DeliveryMode::ExactlyOnce, ()), Err(Full), "3 is as far as 2 allows");
        assert_eq!(outbox.next_due_ms(), Some(200));
        assert_eq!(outbox.poll(199).len(), 0);
        assert_eq!(outbox.poll(200).len(), 2);
        assert_eq!(outbox.next_due_ms(), Some(600), "backed off to 400 ms");
    }
}

#[cfg(test)]
mod session_tests {
    use super::*;

    #[test]
    fn frames_of_another_session_are_ignored() {
        let mut old: Outbox<&str> = Outbox::new(OutboxConfig::default(), 1);
        let mut new: Outbox<&str> = Outbox::new(OutboxConfig::default(), 2);
        let late = old.send(0, DeliveryMode::ExactlyOnce, "for the old life").expect("room");
        let fresh = new.send(0, DeliveryMode::ExactlyOnce, "for the new life").expect("room");
        assert_eq!((late.id, fresh.id), (1, 1), "both sessions number from 1");
        let mut inbox = Inbox::new(2);
        assert_eq!(inbox.receive(&late), Receipt { deliver: false, ack: None });
        assert_eq!(inbox.receive(&fresh), Receipt { deliver: true, ack: Some(1) });
    }

    #[test]
    fn a_sender_past_its_window_cannot_grow_what_the_receiver_remembers() {
        let mut inbox = Inbox::new(1);
        let packet = |id: u64, floor: u64| Packet { session: 1, id, floor, mode: DeliveryMode::ExactlyOnce, body: () };
        // A peer that never raises its floor and never stops: the fuzz test's hostile exchange.
        for id in 1..RECEIVE_WINDOW_MAX + 1_000 {
            inbox.receive(&packet(id, 0));
        }
        assert_eq!(inbox.remembered() as u64, RECEIVE_WINDOW_MAX - 1, "ids 1 to RECEIVE_WINDOW_MAX - 1");
        assert_eq!(inbox.receive(&packet(RECEIVE_WINDOW_MAX + 5, 0)), Receipt { deliver: false, ack: None });
        assert_eq!(inbox.receive(&packet(7, 0)), Receipt { deliver: false, ack: Some(7) }, "a duplicate still");
        // A sender within its window is unaffected: its floor moves, and the ids with it.
        let within = inbox.receive(&packet(RECEIVE_WINDOW_MAX + 5, 10));
        assert_eq!(within, Receipt { deliver: true, ack: Some(RECEIVE_WINDOW_MAX + 5) });
        assert_eq!(inbox.remembered() as u64, RECEIVE_WINDOW_MAX - 10 + 1, "ids 10 to RECEIVE_WINDOW_MAX - 1, and it");
    }
}
