//! Scenario files read as every command reads them: bounded, then parsed by the core.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use dtest_core::limits::SCENARIO_BYTES_MAX;
use dtest_core::scenario::{self, Diagnostic, Scenario};

/// Reads and parses a scenario file. Files larger than the limit are refused unread.
pub fn load(path: &Path) -> Result<Scenario, Vec<Diagnostic>> {
    let bytes =
        read_bounded(path).map_err(|message| vec![Diagnostic { pos: None, path: scenario::Path::root(), message }])?;
    scenario::parse(&bytes)
}

/// Reads a scenario file's bytes, at most one past the limit so that the parser can say it is too
/// large; why not, as a message.
pub fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
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
