//! Integration tests of the `dtest` binary: each test runs the real executable.

mod conventions;
mod fuzz;
mod load;
mod mcp;
mod metrics;
mod parity;
mod run;
mod schema;
mod serve;
mod shrink;
mod sim;
mod strategies;
mod sweeps;
mod tls;
mod trace;
mod validate;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("cli/ has a parent").to_path_buf()
}

/// A fresh, empty temporary directory for one test, `name` telling whose.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dtest-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Bytes a process printed, as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `dtest ARGS...` from the repository root.
pub fn dtest(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dtest")).args(args).current_dir(root()).output().expect("run dtest")
}

/// Runs one case of a Python end-to-end suite (`cli/tests/SCRIPT`, given the binary and the
/// case's name) and fails with its output unless it passed.
pub fn python_case(script: &str, name: &str) {
    let output = Command::new("python3")
        .arg(root().join("cli/tests").join(script))
        .args([env!("CARGO_BIN_EXE_dtest"), name])
        .current_dir(root())
        .output()
        .expect("run python3");
    assert!(
        output.status.success(),
        "{script} {name} failed ({}):\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The shipped scenarios, as paths relative to the root.
pub fn shipped_scenarios() -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(root().join("scenarios"))
        .expect("read scenarios/")
        .map(|entry| entry.expect("dir entry").file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .map(|name| format!("scenarios/{name}"))
        .collect();
    files.sort();
    files
}

/// insta settings that keep snapshots in the repository's `snapshots/` folder.
pub fn snapshot_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root().join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings
}
