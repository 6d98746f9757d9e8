//! `dtest validate FILE...`: reads scenario files and reports every problem in each.

use std::io::{self, Write};
use std::path::PathBuf;

use dtest_core::scenario::Diagnostic;
use dtest_orchestrator::scenario_file::load;
use serde::Serialize;

use crate::Exit;

/// Problems shown per file; the rest are counted.
const PROBLEMS_SHOWN_MAX: usize = 100;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Scenario files to check.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// Print the problems as a JSON array on stdout instead of text on stderr.
    #[arg(long)]
    json: bool,
}

pub fn run(args: &Args) -> Exit {
    let mut all: Vec<JsonProblem> = Vec::new();
    let mut failed = false;
    for path in &args.files {
        let label = path.display().to_string();
        let Err(problems) = load(path) else { continue };
        failed = true;
        if args.json {
            all.extend(problems.iter().map(|d| JsonProblem::new(&label, d)));
            continue;
        }
        let mut text = String::new();
        for d in problems.iter().take(PROBLEMS_SHOWN_MAX) {
            text.push_str(&format!("{}\n", d.display_in(&label)));
        }
        if problems.len() > PROBLEMS_SHOWN_MAX {
            text.push_str(&format!("{label}: {} more problems not shown\n", problems.len() - PROBLEMS_SHOWN_MAX));
        }
        // A closed stderr leaves nothing to tell; the exit code still says it.
        let _ = io::stderr().write_all(text.as_bytes());
    }
    if args.json {
        let text = serde_json::to_string_pretty(&all).unwrap_or_default();
        if print_stdout(&format!("{text}\n")) != Exit::Ok {
            return Exit::BadInput;
        }
    }
    if failed { Exit::BadInput } else { Exit::Ok }
}

/// Writes to stdout; a closed pipe (`dtest schema | head`) is not an error worth a panic.
pub fn print_stdout(text: &str) -> Exit {
    match io::stdout().write_all(text.as_bytes()) {
        Ok(()) => Exit::Ok,
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Exit::Ok,
        Err(_) => Exit::BadInput,
    }
}

#[derive(Serialize)]
struct JsonProblem {
    file: String,
    line: Option<u32>,
    column: Option<u32>,
    path: String,
    message: String,
}

impl JsonProblem {
    fn new(file: &str, d: &Diagnostic) -> JsonProblem {
        JsonProblem {
            file: file.to_owned(),
            line: d.pos.map(|p| p.line),
            column: d.pos.map(|p| p.column),
            path: d.path.to_string(),
            message: d.message.clone(),
        }
    }
}
