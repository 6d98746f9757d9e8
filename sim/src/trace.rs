//! A run's trace, for `--check-determinism`: every event the simulation handles, in order, so that
//! two runs of one seed can be compared event by event and the first that differs shown.
//!
//! The shell records ([`Traced`]), only when asked ([`crate::check_determinism`]; otherwise it
//! costs one branch per event), each frame sent with the network's verdict on it, each input an
//! agent or the orchestrator takes (frames, finished work, alarms), the orchestrator's timeouts and
//! its actions on nodes, and each agent's start and actions. An event is its simulated time and a
//! 64-bit fingerprint of all of it ([`Keep::Fingerprints`]: the values themselves are hashed,
//! through serde, not formatted), or also its text ([`Keep::Text`]: `Debug` of what was handled,
//! cut at [`EVENT_TEXT_MAX`] bytes, with a hash of the whole). A check runs on fingerprints, which
//! is cheap; only once two runs part does it run again keeping text, to show the event.
//!
//! Memory is bounded: events travel in blocks of [`BLOCK_EVENTS`] through a channel of
//! [`BLOCKS_IN_FLIGHT`] blocks to a comparison that reads both runs side by side and keeps nothing
//! it has compared; a run that gets ahead of the other waits for it.

use std::fmt::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use dtest_core::faults::Verdict;
use dtest_core::protocol::{AgentAction, Frame, ToAgent, ToOrchestrator};
use dtest_core::run::Action;
use serde::Serialize;

use crate::world::AgentInput;

/// Events per block sent to the comparison.
pub(crate) const BLOCK_EVENTS: usize = 1_024;
/// Blocks a run may get ahead of the comparison before it waits.
pub(crate) const BLOCKS_IN_FLIGHT: usize = 8;
/// The text of an event is kept up to this many bytes (its hash covers all of it).
pub const EVENT_TEXT_MAX: usize = 600;

/// Consecutive events of a run.
#[derive(Debug, Default)]
pub(crate) struct Block {
    times_ms: Vec<u64>,
    hashes: Vec<u64>,
    /// Where each event's text ends in `text`.
    ends: Vec<u32>,
    text: String,
}

impl Block {
    fn len(&self) -> usize {
        self.times_ms.len()
    }

    fn event(&self, i: usize) -> TracedEvent {
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        TracedEvent { at_ms: self.times_ms[i], text: self.text[start..self.ends[i] as usize].to_owned() }
    }
}

/// The two ends of a trace: a [`Recorder`]'s sink and the comparison's source.
pub(crate) fn channel() -> (SyncSender<Block>, Receiver<Block>) {
    sync_channel(BLOCKS_IN_FLIGHT)
}

/// What a trace keeps of each event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Keep {
    /// Its time and fingerprint: enough to compare.
    Fingerprints,
    /// Also its text, to show it.
    Text,
}

/// One event the simulation handles, as the shell hands it to the trace.
pub(crate) enum Traced<'a> {
    /// A node's agent started (a first start or a restart).
    Starts { node: usize, incarnation: u64 },
    /// A node's agent asked for work to start or stop.
    AgentDoes { node: usize, incarnation: u64, action: &'a AgentAction },
    /// A node's agent took an input.
    AgentTakes { node: usize, incarnation: u64, input: &'a AgentInput },
    /// The orchestrator sent a frame to a node, which the network delivers at `due_ms` or drops.
    ToAgent { node: usize, frame: &'a Frame<ToAgent>, verdict: Verdict, due_ms: Option<u64> },
    /// A node sent a frame to the orchestrator.
    ToOrchestrator { node: usize, frame: &'a Frame<ToOrchestrator>, verdict: Verdict, due_ms: Option<u64> },
    /// The orchestrator took a frame from a node.
    OrchestratorTakes { node: usize, frame: &'a Frame<ToOrchestrator> },
    /// The orchestrator's alarm rang.
    Alarm { at_ms: u64 },
    /// The run's timers were due.
    TimersDue,
    /// The run asked for something done to a node.
    RunDoes(&'a Action),
    /// The test-only perturbation.
    Perturbation { drawn: u64 },
}

impl Traced<'_> {
    /// The event in a line, with the nodes' `names`.
    fn write(&self, w: &mut dyn Write, names: &[String]) -> fmt::Result {
        let name = |node: usize| names.get(node).map_or("?", String::as_str);
        let fate = |w: &mut dyn Write, verdict: Verdict, due_ms: Option<u64>| match (due_ms, verdict) {
            (Some(at_ms), _) => write!(w, "; due at {at_ms} ms"),
            (None, Verdict::Lost) => write!(w, "; lost to packet loss"),
            (None, _) => write!(w, "; cut by a partition or clog"),
        };
        match self {
            Traced::Starts { node, incarnation } => write!(w, "{} starts, life {incarnation}", name(*node)),
            Traced::AgentDoes { node, incarnation, action } => {
                write!(w, "{} (life {incarnation}) does {action:?}", name(*node))
            }
            Traced::AgentTakes { node, incarnation, input } => {
                write!(w, "{} (life {incarnation}) takes {input:?}", name(*node))
            }
            Traced::ToAgent { node, frame, verdict, due_ms } => {
                write!(w, "orchestrator sends to {}: {frame:?}", name(*node))?;
                fate(w, *verdict, *due_ms)
            }
            Traced::ToOrchestrator { node, frame, verdict, due_ms } => {
                write!(w, "{} sends to orchestrator: {frame:?}", name(*node))?;
                fate(w, *verdict, *due_ms)
            }
            Traced::OrchestratorTakes { node, frame } => {
                write!(w, "orchestrator takes from {}: {frame:?}", name(*node))
            }
            Traced::Alarm { at_ms } => write!(w, "orchestrator's alarm for {at_ms} ms rings"),
            Traced::TimersDue => write!(w, "orchestrator: timers due"),
            Traced::RunDoes(action) => write!(w, "orchestrator does {action:?}"),
            Traced::Perturbation { drawn } => {
                write!(w, "test-only perturbation: the shell drew {drawn:#018x} from the seeded generator out of turn")
            }
        }
    }

    /// Feeds everything the event is into `f`.
    fn fingerprint(&self, f: &mut Fingerprint) {
        let verdict = |f: &mut Fingerprint, verdict: Verdict, due_ms: Option<u64>| {
            f.word(match verdict {
                Verdict::Cut => 0,
                Verdict::Lost => 1,
                Verdict::Deliver(_) => 2,
            });
            f.word(due_ms.map_or(u64::MAX, |at| at));
        };
        match self {
            Traced::Starts { node, incarnation } => f.words(&[0, *node as u64, *incarnation]),
            Traced::AgentDoes { node, incarnation, action } => {
                f.words(&[1, *node as u64, *incarnation]);
                match action {
                    AgentAction::Start { task, attempt, work } => {
                        f.words(&[0, task.0, u64::from(attempt.0), u64::from(*work)])
                    }
                    AgentAction::Stop { task, attempt } => f.words(&[1, task.0, u64::from(attempt.0)]),
                }
            }
            Traced::AgentTakes { node, incarnation, input } => {
                f.words(&[2, *node as u64, *incarnation]);
                match input {
                    AgentInput::Frame(frame) => {
                        f.word(0);
                        f.value(frame);
                    }
                    AgentInput::Finished(task, attempt, outcome, load) => {
                        f.words(&[1, task.0, u64::from(attempt.0)]);
                        f.value(outcome);
                        f.value(load);
                    }
                    AgentInput::Tick(at_ms) => f.words(&[2, *at_ms]),
                }
            }
            Traced::ToAgent { node, frame, verdict: v, due_ms } => {
                f.words(&[3, *node as u64]);
                f.value(frame);
                verdict(f, *v, *due_ms);
            }
            Traced::ToOrchestrator { node, frame, verdict: v, due_ms } => {
                f.words(&[4, *node as u64]);
                f.value(frame);
                verdict(f, *v, *due_ms);
            }
            Traced::OrchestratorTakes { node, frame } => {
                f.words(&[5, *node as u64]);
                f.value(frame);
            }
            Traced::Alarm { at_ms } => f.words(&[6, *at_ms]),
            Traced::TimersDue => f.word(7),
            Traced::RunDoes(action) => match action {
                Action::Kill(node) => f.words(&[8, 0, u64::from(node.0)]),
                Action::Restart(node) => f.words(&[8, 1, u64::from(node.0)]),
                Action::Pause(node) => f.words(&[8, 2, u64::from(node.0)]),
                Action::Resume(node) => f.words(&[8, 3, u64::from(node.0)]),
                Action::Link(node, link) => {
                    f.words(&[8, 4, u64::from(node.0)]);
                    f.value(link);
                }
            },
            Traced::Perturbation { drawn } => f.words(&[9, *drawn]),
        }
    }
}

/// Records the events of one run and sends them on in blocks.
pub(crate) struct Recorder {
    /// The scenario's node names, by node index.
    names: Vec<String>,
    keep: Keep,
    block: Block,
    /// The index of the next event.
    next: u64,
    /// `None` once the comparison has stopped reading.
    sink: Option<SyncSender<Block>>,
    /// Test-only: at this event, draw a number from the seeded generator out of turn.
    perturb_at: Option<u64>,
}

impl Recorder {
    /// A recorder keeping `keep` of each event and sending to `sink`; `names` are the nodes'.
    pub fn new(names: Vec<String>, keep: Keep, sink: SyncSender<Block>, perturb_at: Option<u64>) -> Recorder {
        Recorder { names, keep, block: Block::default(), next: 0, sink: Some(sink), perturb_at }
    }

    /// Records `event`, which happened at `at_ms`.
    pub fn record(&mut self, at_ms: u64, event: Traced<'_>) {
        if self.sink.is_none() {
            return;
        }
        if self.perturb_at == Some(self.next) {
            self.perturb_at = None;
            self.perturb(at_ms);
        }
        let mut fingerprint = Fingerprint::default();
        fingerprint.word(at_ms);
        match self.keep {
            Keep::Fingerprints => event.fingerprint(&mut fingerprint),
            Keep::Text => {
                let text = &mut self.block.text;
                let mut out = EventText { fingerprint: &mut fingerprint, text, room: EVENT_TEXT_MAX, cut: false };
                // Writing into a `String` and a hash cannot fail; a `Debug` that fails leaves its
                // text cut.
                let _ = event.write(&mut out, &self.names);
                if out.cut {
                    text.push('…');
                }
            }
        }
        self.block.times_ms.push(at_ms);
        self.block.hashes.push(fingerprint.0);
        self.block.ends.push(u32::try_from(self.block.text.len()).expect("a block's text is under 4 GiB"));
        self.next += 1;
        if self.block.len() >= BLOCK_EVENTS {
            self.flush();
        }
    }

    /// The test-only perturbation: the shell takes a number from madsim's seeded generator that
    /// the run would not, so every draw after it differs, as a shell's stray use of randomness
    /// would make it. It is an event of its own, so the trace names where it happened.
    fn perturb(&mut self, at_ms: u64) {
        use madsim::rand::Rng;
        let drawn: u64 = madsim::rand::thread_rng().r#gen();
        self.record(at_ms, Traced::Perturbation { drawn });
    }

    /// Sends the events recorded so far.
    fn flush(&mut self) {
        let text_bytes = self.block.text.capacity();
        let block = std::mem::replace(
            &mut self.block,
            Block {
                times_ms: Vec::with_capacity(BLOCK_EVENTS),
                hashes: Vec::with_capacity(BLOCK_EVENTS),
                ends: Vec::with_capacity(BLOCK_EVENTS),
                text: String::with_capacity(text_bytes),
            },
        );
        if block.len() > 0 && self.sink.as_ref().is_some_and(|sink| sink.send(block).is_err()) {
            // The comparison found its answer and stopped reading.
            self.sink = None;
        }
    }

    /// The run is over: sends what is left and closes the trace.
    pub fn finish(&mut self) {
        self.flush();
        self.sink = None;
    }
}

/// Writes an event's text into its block, up to [`EVENT_TEXT_MAX`] bytes, and all of it into
/// its fingerprint.
struct EventText<'a> {
    fingerprint: &'a mut Fingerprint,
    text: &'a mut String,
    room: usize,
    cut: bool,
}

impl Write for EventText<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.fingerprint.bytes(s.as_bytes());
        if s.len() <= self.room {
            self.text.push_str(s);
            self.room -= s.len();
        } else if !self.cut {
            let mut end = self.room;
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            self.text.push_str(&s[..end]);
            self.room = 0;
            self.cut = true;
        }
        Ok(())
    }
}

/// A 64-bit hash of an event, fed a word at a time with FxHash's mixing: cheap, and all two runs
/// compare. Not proof against adversaries; a difference it missed would show at a later event.
pub(crate) struct Fingerprint(u64);

impl Default for Fingerprint {
    fn default() -> Fingerprint {
        Fingerprint(0x243f_6a88_85a3_08d3)
    }
}

impl Fingerprint {
    fn word(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn words(&mut self, words: &[u64]) {
        for &word in words {
            self.word(word);
        }
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.word(bytes.len() as u64);
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0; 8];
            word.copy_from_slice(chunk);
            self.word(u64::from_le_bytes(word));
        }
        let mut last = [0; 8];
        last[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        self.word(u64::from_le_bytes(last));
    }

    /// Feeds in a value through its `Serialize`: every field, no text made.
    fn value(&mut self, value: &impl Serialize) {
        // Only a `Serialize` that fails by itself returns an error; what it fed in so far stays.
        let _ = value.serialize(self);
    }
}

/// The error of a value that would not serialize.
#[derive(Debug)]
pub(crate) struct Unserializable(String);

impl fmt::Display for Unserializable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Unserializable {}

impl serde::ser::Error for Unserializable {
    fn custom<T: fmt::Display>(msg: T) -> Unserializable {
        Unserializable(msg.to_string())
    }
}

/// Serializing into a fingerprint: every value a word (floats by their bits), strings and bytes
/// with their length, variants by their index, sequences and maps with their length.
impl serde::Serializer for &mut Fingerprint {
    type Ok = ();
    type Error = Unserializable;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, v: bool) -> Result<(), Unserializable> {
        self.word(u64::from(v));
        Ok(())
    }
    fn serialize_i8(self, v: i8) -> Result<(), Unserializable> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i16(self, v: i16) -> Result<(), Unserializable> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i32(self, v: i32) -> Result<(), Unserializable> {
        self.serialize_i64(i64::from(v))
    }
    fn serialize_i64(self, v: i64) -> Result<(), Unserializable> {
        self.word(v as u64);
        Ok(())
    }
    fn serialize_u8(self, v: u8) -> Result<(), Unserializable> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u16(self, v: u16) -> Result<(), Unserializable> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u32(self, v: u32) -> Result<(), Unserializable> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_u64(self, v: u64) -> Result<(), Unserializable> {
        self.word(v);
        Ok(())
    }
    fn serialize_f32(self, v: f32) -> Result<(), Unserializable> {
        self.serialize_u64(u64::from(v.to_bits()))
    }
    fn serialize_f64(self, v: f64) -> Result<(), Unserializable> {
        self.serialize_u64(v.to_bits())
    }
    fn serialize_char(self, v: char) -> Result<(), Unserializable> {
        self.serialize_u64(u64::from(v))
    }
    fn serialize_str(self, v: &str) -> Result<(), Unserializable> {
        self.bytes(v.as_bytes());
        Ok(())
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<(), Unserializable> {
        self.bytes(v);
        Ok(())
    }
    fn serialize_none(self) -> Result<(), Unserializable> {
        self.serialize_u64(0)
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> Result<(), Unserializable> {
        self.word(1);
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<(), Unserializable> {
        self.serialize_u64(0)
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<(), Unserializable> {
        self.serialize_u64(0)
    }
    fn serialize_unit_variant(self, _: &'static str, index: u32, _: &'static str) -> Result<(), Unserializable> {
        self.serialize_u64(u64::from(index))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, value: &T) -> Result<(), Unserializable> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        value: &T,
    ) -> Result<(), Unserializable> {
        self.word(u64::from(index));
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, Unserializable> {
        self.word(len.map_or(u64::MAX, |n| n as u64));
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Unserializable> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Unserializable> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Unserializable> {
        self.word(u64::from(index));
        Ok(self)
    }
    fn serialize_map(self, len: Option<usize>) -> Result<Self, Unserializable> {
        self.serialize_seq(len)
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<Self, Unserializable> {
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        index: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Unserializable> {
        self.word(u64::from(index));
        Ok(self)
    }
}

impl serde::ser::SerializeSeq for &mut Fingerprint {
    type Ok = ();
    type Error = Unserializable;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Unserializable> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Unserializable> {
        Ok(())
    }
}

impl serde::ser::SerializeTuple for &mut Fingerprint {
    type Ok = ();
    type Error = Unserializable;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Unserializable> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Unserializable> {
        Ok(())
    }
}

impl serde::ser::SerializeTupleStruct for &mut Fingerprint {
    type Ok = ();
    type Error = Unserializable;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Unserializable> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Unserializable> {
        Ok(())
    }
}

impl serde::ser::SerializeTupleVariant for &mut Fingerprint {
    type Ok = ();
    type Error = Unserializable;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Unserializable> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Unserializable> {
        Ok(())
    }
}

impl serde::ser::SerializeMap for &mut Fingerprint {
    type Ok = ();
    type Error = Unserializable;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, key: &T) -> Result<(), Unserializable> {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, value: &T) -> Result<(), Unserializable> {
        value.serialize(&mut **self)
    }
    fn end(self) -> Result<(), Unserializable> {
        Ok(())
    }
}

impl serde::ser::SerializeStruct for &mut Fingerprint {
    type Ok = ();
    type Error = Unserializable;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, _: &'static str, value: &T) -> Result<(), Unserializable> {
        value.serialize(&mut **self)
    }
    fn skip_field(&mut self, _: &'static str) -> Result<(), Unserializable> {
        self.word(u64::MAX);
        Ok(())
    }
    fn end(self) -> Result<(), Unserializable> {
        Ok(())
    }
}

impl serde::ser::SerializeStructVariant for &mut Fingerprint {
    type Ok = ();
    type Error = Unserializable;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, _: &'static str, value: &T) -> Result<(), Unserializable> {
        value.serialize(&mut **self)
    }
    fn skip_field(&mut self, _: &'static str) -> Result<(), Unserializable> {
        self.word(u64::MAX);
        Ok(())
    }
    fn end(self) -> Result<(), Unserializable> {
        Ok(())
    }
}

/// One event of a trace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TracedEvent {
    /// When, in simulated ms from the run's start.
    pub at_ms: u64,
    /// What, as text (cut at [`EVENT_TEXT_MAX`] bytes, with `…`).
    pub text: String,
}

/// Where two runs of one seed part: the first event that differs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Its index, counted from 0: how many events the runs had in common before it.
    pub index: u64,
    /// The simulated time of the divergence, in ms: the earlier of the two events' times.
    pub at_ms: u64,
    /// The first run's event there; `None` if the first run ended before it.
    pub first: Option<TracedEvent>,
    /// The second run's.
    pub second: Option<TracedEvent>,
}

/// What comparing two traces found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Compared {
    /// Every event was the same; this many.
    Same(u64),
    /// They part here.
    Diverged(Divergence),
}

/// One side of a comparison: the block being read and the place in it.
struct Cursor {
    source: Receiver<Block>,
    block: Block,
    place: usize,
}

impl Cursor {
    /// The time and hash of the current event, `None` once the run's trace is closed.
    fn current(&mut self) -> Option<(u64, u64)> {
        while self.place >= self.block.len() {
            self.block = self.source.recv().ok()?;
            self.place = 0;
        }
        Some((self.block.times_ms[self.place], self.block.hashes[self.place]))
    }

    fn event(&mut self) -> Option<TracedEvent> {
        self.current()?;
        Some(self.block.event(self.place))
    }
}

/// Reads two traces side by side to their first difference, or to their ends.
pub(crate) fn compare(first: Receiver<Block>, second: Receiver<Block>) -> Compared {
    let mut a = Cursor { source: first, block: Block::default(), place: 0 };
    let mut b = Cursor { source: second, block: Block::default(), place: 0 };
    let mut index = 0;
    loop {
        match (a.current(), b.current()) {
            (None, None) => return Compared::Same(index),
            (Some(x), Some(y)) if x == y => {
                index += 1;
                a.place += 1;
                b.place += 1;
            }
            (x, y) => {
                let at_ms = x.into_iter().chain(y).map(|(at, _)| at).min().unwrap_or(0);
                return Compared::Diverged(Divergence { index, at_ms, first: a.event(), second: b.event() });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records `events` (alarms at a time, for a time) into a trace keeping `keep`, and compares
    /// two of them, each recorded on its own thread as the runs are.
    fn compare_events(keep: Keep, first: Vec<(u64, u64)>, second: Vec<(u64, u64)>) -> Compared {
        let record = |events: Vec<(u64, u64)>| {
            let (sink, source) = channel();
            let recording = std::thread::spawn(move || {
                let mut recorder = Recorder::new(vec!["eu-1".to_owned()], keep, sink, None);
                for (at_ms, alarm_ms) in events {
                    recorder.record(at_ms, Traced::Alarm { at_ms: alarm_ms });
                }
                recorder.finish();
            });
            (source, recording)
        };
        let ((a, ra), (b, rb)) = (record(first), record(second));
        let compared = compare(a, b);
        ra.join().expect("recorded");
        rb.join().expect("recorded");
        compared
    }

    fn events(n: u64) -> Vec<(u64, u64)> {
        (0..n).map(|i| (i * 3, i * 3 + 1)).collect()
    }

    fn alarm(at_ms: u64, alarm_ms: u64) -> Option<TracedEvent> {
        Some(TracedEvent { at_ms, text: format!("orchestrator's alarm for {alarm_ms} ms rings") })
    }

    #[test]
    fn the_comparison_names_the_first_event_that_differs_with_its_time_and_both_versions() {
        for keep in [Keep::Fingerprints, Keep::Text] {
            // Past a block's end, so that the difference is found in a later block.
            let k = BLOCK_EVENTS as u64 + 500;
            let mut second = events(3_000);
            second[k as usize].1 = 7;
            second[k as usize + 7].1 = 8;
            let Compared::Diverged(d) = compare_events(keep, events(3_000), second) else { panic!("they differ") };
            assert_eq!((d.index, d.at_ms), (k, k * 3));
            if keep == Keep::Text {
                assert_eq!((d.first, d.second), (alarm(k * 3, k * 3 + 1), alarm(k * 3, 7)));
            }
        }
    }

    #[test]
    fn the_same_event_at_another_time_differs_and_so_does_a_run_that_ends_early() {
        let mut later = events(10);
        later[4].0 += 1;
        let Compared::Diverged(d) = compare_events(Keep::Text, events(10), later) else { panic!("they differ") };
        assert_eq!((d.index, d.at_ms), (4, 12));
        assert_eq!(d.second.map(|e| e.at_ms), Some(13));
        let Compared::Diverged(d) = compare_events(Keep::Text, events(2_000), events(1_500)) else {
            panic!("they differ")
        };
        assert_eq!((d.index, d.second), (1_500, None));
        assert_eq!(d.first, alarm(4_500, 4_501));
        for keep in [Keep::Fingerprints, Keep::Text] {
            assert_eq!(compare_events(keep, events(2_048), events(2_048)), Compared::Same(2_048));
            assert_eq!(compare_events(keep, Vec::new(), Vec::new()), Compared::Same(0));
        }
    }

    #[test]
    fn a_long_event_is_kept_cut_but_fingerprinted_whole() {
        let text_of = |s: &str| {
            let (mut fingerprint, mut text) = (Fingerprint::default(), String::new());
            let mut out =
                EventText { fingerprint: &mut fingerprint, text: &mut text, room: EVENT_TEXT_MAX, cut: false };
            out.write_str(s).expect("writes");
            let cut = out.cut;
            (text, cut, fingerprint.0)
        };
        let long = "é".repeat(EVENT_TEXT_MAX);
        let (text, cut, whole) = text_of(&long);
        assert!(cut && text.len() <= EVENT_TEXT_MAX && long.starts_with(&text), "{}", text.len());
        assert_ne!(text_of(&format!("{long}x")).2, whole, "what is cut off still counts");
        assert_eq!(text_of(&long).2, whole);
    }

    #[test]
    fn fingerprints_tell_values_apart_field_by_field() {
        use dtest_core::protocol::{Attempt, DeliveryMode, Packet, TaskId};
        let frame = |work: u32, mode: DeliveryMode| {
            let body = ToAgent::Assign { task: TaskId(3), attempt: Attempt(1), work, timeout_ms: 60_000 };
            Frame::Data(Packet { session: 1, id: 2, floor: 1, mode, body })
        };
        let print = |frame: &Frame<ToAgent>| {
            let mut f = Fingerprint::default();
            Traced::ToAgent { node: 0, frame, verdict: Verdict::Deliver(0), due_ms: Some(5) }.fingerprint(&mut f);
            f.0
        };
        let base = print(&frame(3, DeliveryMode::ExactlyOnce));
        assert_eq!(base, print(&frame(3, DeliveryMode::ExactlyOnce)));
        assert_ne!(base, print(&frame(4, DeliveryMode::ExactlyOnce)));
        assert_ne!(base, print(&frame(3, DeliveryMode::AtLeastOnce)));
    }
}
