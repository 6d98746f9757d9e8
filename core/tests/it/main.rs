//! Integration tests of dtest-core through its public API.

mod adaptive;
mod alerts;
mod parse_fuzz;
mod placement;
mod placement_snapshots;
mod protocol;
