//! `dtest`: the command-line entry point; maps every outcome to the documented exit codes.

mod certs;
mod load;
mod logs;
mod mcp;
mod node;
mod output;
mod run;
mod secure;
mod serve;
mod shrink;
mod sim;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Exit codes, as the README's command table documents them; scripts and CI rely on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything expected held.
    Ok = 0,
    /// An expectation, threshold or invariant failed.
    Failed = 1,
    /// Bad input: usage, an unreadable or invalid scenario, unreachable nodes at start.
    BadInput = 2,
    /// Stopped by SIGINT or SIGTERM; the partial report was written (128 + SIGINT, as shells
    /// report a process ended by Ctrl-C).
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// Distributed testing: deterministic simulation and real clusters from one scenario file.
#[derive(Debug, Parser)]
#[command(name = "dtest", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Parse and check scenario files; print nothing but problems.
    Validate(validate::Args),
    /// Print the JSON Schema of the scenario format.
    Schema,
    /// Simulate a scenario deterministically under madsim.
    Sim(sim::Args),
    /// Run a node daemon: registers, heartbeats, executes assignments.
    Node(node::Args),
    /// Run a scenario for real on node daemons (`--nodes`) or local ones (`--local N`).
    Run(run::Args),
    /// Load one URL from this machine, no scenario file (like wrk or oha).
    Load(load::Args),
    /// The orchestrator as a durable service: REST, WebSocket live events, OpenAPI.
    Serve(serve::Args),
    /// dtest as Model Context Protocol tools for AI assistants (stdio, or Streamable HTTP).
    Mcp(mcp::Args),
    /// Make a private CA and certificates for a test cluster's TLS and mutual TLS.
    Certs(certs::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let exit = match cli.command {
        Command::Validate(args) => validate::run(&args),
        Command::Schema => print_schema(),
        Command::Sim(args) => sim::run(&args),
        Command::Node(args) => node::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Load(args) => load::run(&args),
        Command::Serve(args) => serve::run(&args),
        Command::Mcp(args) => mcp::run(&args),
        Command::Certs(args) => certs::run(&args),
    };
    exit.into()
}

fn print_schema() -> Exit {
    // The schema is a `serde_json::Value`; printing it cannot fail but for a closed stdout.
    let text = serde_json::to_string_pretty(dtest_core::scenario::schema()).unwrap_or_default();
    validate::print_stdout(&format!("{text}\n"))
}

#[cfg(test)]
mod tests {
    /// clap's own checks of the whole command line (flattened flag groups with clashing ids,
    /// conflicting names), which otherwise fire only when that subcommand is used.
    #[test]
    fn the_command_line_is_well_formed() {
        <super::Cli as clap::CommandFactory>::command().debug_assert();
    }
}
