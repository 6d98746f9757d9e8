//! `dtest serve`: the orchestrator as a durable service.

pub mod store;
