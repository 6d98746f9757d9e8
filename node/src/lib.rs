//! dtest's real shell: the `dtest node` daemon and the orchestrator's HTTP/JSON transport.
//!
//! Node daemons (axum, sysinfo) will execute the core's assignments on real machines and the
//! orchestrator will drive them with the same state machines the simulator tests (the
//! `dtest node` and `dtest run` issue). Like `dtest-sim`, it carries messages and makes no
//! decision of its own. It holds no code yet; it exists so the workspace has its final shape.
