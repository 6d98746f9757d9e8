//! The orchestration protocol's building blocks; the orchestrator and agent state machines
//! join them (issue 4).
//!
//! - [`breaker`]: a circuit breaker per node (closed, open, half-open).
//! - [`backoff`]: exponential backoff with full jitter, from a seeded generator.
//! - [`delivery`]: fire-and-forget, at-least-once and exactly-once delivery of messages.

pub mod backoff;
pub mod breaker;
pub mod delivery;

pub use backoff::full_jitter_ms;
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use delivery::{DeliveryMode, Full, Inbox, Outbox, OutboxConfig, Packet, Receipt};
