//! dtest's real shell: the `dtest node` daemon ([`daemon`]), its HTTP/JSON API ([`api`]) and
//! the orchestrator's side of it ([`client`]). The core's agent and orchestrator decide
//! everything; this crate carries their frames over HTTP, runs commands and load ([`load`], the
//! engine `dtest load` uses too) and samples the machine; [`register`] announces the node to a
//! `dtest serve` service; [`secure`] is TLS for all of these connections; [`secret`] holds their
//! tokens out of `Debug` and compares them in constant time.
//! [`metrics`] is `GET /metrics` for Prometheus, the daemon's and `dtest serve`'s.

pub mod api;
pub mod client;
pub mod daemon;
mod exec;
pub mod h1;
pub mod load;
pub mod metrics;
pub mod register;
pub mod secret;
pub mod secure;
mod system;
pub mod tls;
