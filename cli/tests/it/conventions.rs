//! Conventions of the repository that a compiler does not check.

use std::path::{Path, PathBuf};

use crate::root;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("dir entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if path.is_dir() {
            if name != "target" && !name.starts_with('.') {
                rust_files(&path, out);
            }
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc_line() {
    let mut files = Vec::new();
    rust_files(&root(), &mut files);
    assert!(files.len() > 10, "found only {files:?}");
    let missing: Vec<String> = files
        .iter()
        .filter(|f| !std::fs::read_to_string(f).expect("read source").starts_with("//!"))
        .map(|f| f.strip_prefix(root()).unwrap_or(f).display().to_string())
        .collect();
    assert_eq!(missing, Vec::<String>::new(), "these files do not start with a `//!` line");
}

#[test]
fn the_core_does_no_io_reads_no_clock_and_draws_no_unseeded_randomness() {
    let mut files = Vec::new();
    rust_files(&root().join("core/src"), &mut files);
    let forbidden = [
        "std::net",
        "std::fs",
        "std::io",
        "Instant::now",
        "SystemTime",
        "thread_rng",
        "rand::rng",
        "tokio",
        "async fn",
    ];
    let mut found = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read source");
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                if code.contains(word) {
                    found.push(format!("{}:{}: {word}", file.strip_prefix(root()).unwrap_or(file).display(), i + 1));
                }
            }
        }
    }
    assert_eq!(found, Vec::<String>::new(), "core/ must stay pure");
    let manifest = std::fs::read_to_string(root().join("core/Cargo.toml")).expect("read core/Cargo.toml");
    let dependencies = manifest.split("[dependencies]").nth(1).and_then(|s| s.split("\n[").next()).unwrap_or("");
    for runtime in ["tokio", "madsim", "async-std", "smol", "axum", "reqwest"] {
        assert!(!dependencies.contains(runtime), "core/ depends on {runtime}");
    }
}
