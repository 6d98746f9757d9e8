//! dtest's run host: a [`Session`] runs one scenario on real node daemons (local child
//! processes or remote `dtest node`s) by driving the core's [`dtest_core::run::Run`]: it
//! carries frames over the nodes' HTTP API, keeps the clock, starts, kills, pauses and restarts
//! local daemons, and hands out live events, a cancel, and the final report. `dtest run` is a
//! thin adapter on it; `dtest serve` and `dtest mcp` host many sessions in one process.
//!
//! Every decision of the run (timeouts, waits, ticks, fault times, the report) is the core's, as
//! in the simulator; what is here is transport, clock, processes and signals.
//!
//! - [`session`]: [`Session`], its configuration, events and errors.
//! - [`journal`]: the write-ahead journal that lets a run survive its host's crash.
//! - [`local`]: local node daemons.
//! - [`transport`]: frames over the node API.
//! - [`junit`]: the report as JUnit XML.
//! - [`html`]: the report as one self-contained HTML page.
//! - [`scenario_file`]: scenario files, read bounded and parsed.

pub mod html;
pub mod journal;
pub mod junit;
pub mod local;
pub mod scenario_file;
pub mod session;
pub mod transport;

pub use session::{Canceller, NodeSource, Progress, Session, SessionConfig, SessionError, SessionEvent};
