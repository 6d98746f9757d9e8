//! dtest's pure core: the decisions both modes share, with no IO, no clock and no async.
//!
//! The simulator (`dtest-sim`) and the real shell (`dtest-node`) feed this crate inputs and
//! carry out what it decides, so that the simulator tests exactly what production runs.
//! Nothing here reads a file, opens a socket, looks at the time or draws unseeded randomness;
//! the shells pass bytes, `now` and seeded generators in.
//!
//! - [`scenario`]: the scenario model and its parser (bytes in, a validated [`scenario::Scenario`]
//!   or every problem with its line, column and field path out).
//! - [`health`]: failure detection (phi accrual).
//! - [`protocol`]: the orchestration protocol's parts: circuit breakers and backoff so far.
//! - [`load`]: the six load patterns as exact functions of time.
//! - [`measure`]: load measurements (HdrHistograms, outcome counts, a per-second series) and
//!   their lossless merge across nodes.
//! - [`placement`]: the resource pool and the strategies that decide which node runs each task.
//! - [`limits`]: the named upper bound of every count, rate and duration.

pub mod checker;
pub mod faults;
pub mod health;
pub mod limits;
pub mod load;
pub mod measure;
pub mod placement;
pub mod protocol;
pub mod report;
pub mod run;
pub mod scenario;
