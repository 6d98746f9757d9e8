//! `dtest serve`: the orchestrator as a durable service.
//!
//! Modules:
//! - `store`: the durable state (executions, their input journals, the live-event log, the node
//!   registry and settings) in one SQLite database in the `--data` directory.

pub mod store;
