//! Where a report goes: the files asked for (`--out`, `--junit`, `--html`), then stdout (text,
//! or JSON with `--json`); the exit code is the report's verdict. `sim`, `run` and `load` share it.

use std::path::Path;

use dtest_core::report::Report;

use crate::Exit;
use crate::validate::print_stdout;

/// The outputs a command was asked for.
pub struct Outputs<'a> {
    /// JSON on stdout instead of text.
    pub json: bool,
    /// The JSON report's file.
    pub out: Option<&'a Path>,
    /// The HTML report's file.
    pub html: Option<&'a Path>,
    /// The JUnit file and its contents.
    pub junit: Option<(&'a Path, String)>,
}

/// Writes the files, prints the report and returns its verdict: 0 when everything expected
/// held, 1 when not, 130 when the run was interrupted, 2 when a file cannot be written.
pub fn finish(report: &Report, outputs: Outputs<'_>) -> Exit {
    let json = report.to_json();
    let files = [
        outputs.out.map(|p| (p, json.clone())),
        outputs.junit,
        outputs.html.map(|p| (p, dtest_orchestrator::html::page(report))),
    ];
    for (path, contents) in files.into_iter().flatten() {
        if let Err(e) = std::fs::write(path, contents) {
            eprintln!("error: cannot write {}: {e}", path.display());
            return Exit::BadInput;
        }
    }
    let printed = print_stdout(&if outputs.json { json } else { report.to_text() });
    if printed != Exit::Ok {
        return printed;
    }
    if report.interrupted {
        Exit::Interrupted
    } else if report.passed() {
        Exit::Ok
    } else {
        Exit::Failed
    }
}
