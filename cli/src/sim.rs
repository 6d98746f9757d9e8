//! `dtest sim FILE`: a deterministic simulation of a scenario under madsim.

use std::path::PathBuf;

use dtest_core::scenario::Distribution;
use dtest_sim::{SimOptions, simulate};

use crate::Exit;
use crate::validate::{load, print_stdout};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The scenario file.
    #[arg(value_name = "FILE")]
    file: PathBuf,
    /// The seed; the same seed gives the same run and the same report.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Override the scenario's distribution strategy (round_robin, least_loaded, random,
    /// capability, locality, weighted, adaptive).
    #[arg(long, value_name = "NAME")]
    strategy: Option<String>,
    /// Run the seed twice and fail unless the two reports are identical, byte for byte.
    #[arg(long)]
    check_determinism: bool,
    /// Print the report as JSON on stdout.
    #[arg(long)]
    json: bool,
    /// Also write the JSON report to FILE.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

pub fn run(args: &Args) -> Exit {
    let label = args.file.display().to_string();
    let scenario = match load(&args.file) {
        Ok(scenario) => scenario,
        Err(problems) => {
            for p in &problems {
                eprintln!("{}", p.display_in(&label));
            }
            return Exit::BadInput;
        }
    };
    let distribution = match args.strategy.as_deref().map(parse_distribution).transpose() {
        Ok(d) => d,
        Err(message) => {
            eprintln!("error: {message}");
            return Exit::BadInput;
        }
    };
    let options = SimOptions { seed: args.seed, distribution, break_fencing: false };
    let report = match simulate(&scenario, &options) {
        Ok(report) => report,
        Err(e) => {
            eprintln!("{label}: {e}");
            return Exit::BadInput;
        }
    };
    let json = report.to_json();
    if args.check_determinism {
        let again = match simulate(&scenario, &options) {
            Ok(report) => report.to_json(),
            Err(e) => {
                eprintln!("{label}: {e}");
                return Exit::BadInput;
            }
        };
        if again != json {
            eprintln!("error: seed {} gave two different reports; the simulation is not deterministic", args.seed);
            return Exit::Failed;
        }
        eprintln!("determinism: seed {} ran twice with identical reports ({} bytes)", args.seed, json.len());
    }
    if let Some(path) = &args.out
        && let Err(e) = std::fs::write(path, &json)
    {
        eprintln!("error: cannot write {}: {e}", path.display());
        return Exit::BadInput;
    }
    let printed = if args.json { print_stdout(&json) } else { print_stdout(&report.to_text()) };
    if printed != Exit::Ok {
        return printed;
    }
    if report.passed() { Exit::Ok } else { Exit::Failed }
}

fn parse_distribution(name: &str) -> Result<Distribution, String> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).map_err(|_| {
        format!(
            "unknown strategy {name:?}; expected one of round_robin, least_loaded, random, capability, locality, weighted, adaptive"
        )
    })
}
