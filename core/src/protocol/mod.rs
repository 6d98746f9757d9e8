//! The orchestration protocol: its building blocks and the agent's and orchestrator's state
//! machines.
//!
//! - [`breaker`]: a circuit breaker per node (closed, open, half-open).
//! - [`backoff`]: exponential backoff with full jitter, from a seeded generator.
//! - [`delivery`]: fire-and-forget, at-least-once and exactly-once delivery of messages.
//! - [`message`]: what the orchestrator and agents say to each other.
//! - [`agent`]: the node side's state machine.
//! - [`orchestrator`]: the orchestrator's state machine.

pub mod agent;
pub mod backoff;
pub mod breaker;
pub mod delivery;
pub mod message;
pub mod orchestrator;

pub use agent::{Agent, AgentAction, AgentConfig};
pub use backoff::full_jitter_ms;
pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
pub use delivery::{DeliveryMode, Frame, Full, Inbox, Outbox, OutboxConfig, Packet, Receipt};
pub use message::{Attempt, Incarnation, Outcome, TaskId, ToAgent, ToOrchestrator};
pub use orchestrator::{Event, Orchestrator, OrchestratorConfig, Stats, TaskInput, TaskState, Terminal};
