//! `dtest validate FILE...`: reads scenario files and reports every problem in each.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use dtest_core::limits::SCENARIO_BYTES_MAX;
use dtest_core::scenario::{self, Diagnostic, Scenario};
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

/// Reads and parses a scenario file. Files larger than the limit are refused unread.
pub fn load(path: &Path) -> Result<Scenario, Vec<Diagnostic>> {
    let bytes =
        read_bounded(path).map_err(|message| vec![Diagnostic { pos: None, path: scenario::Path::root(), message }])?;
    scenario::parse(&bytes)
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let file = File::open(path).map_err(|e| format!("cannot open: {}", io_message(&e)))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err("is a directory, not a scenario file".to_owned());
    }
    let mut bytes = Vec::new();
    // Read one byte past the limit so that `scenario::parse` can say the file is too large.
    file.take(SCENARIO_BYTES_MAX + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read: {}", io_message(&e)))?;
    Ok(bytes)
}

fn io_message(e: &io::Error) -> String {
    let text = e.to_string();
    // "No such file or directory (os error 2)" → "no such file or directory"
    let text = text.split(" (os error").next().unwrap_or(&text);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => text.to_owned(),
    }
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
