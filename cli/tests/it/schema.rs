//! `dtest schema` prints a JSON Schema that an independent validator (Python's `jsonschema`)
//! accepts every shipped scenario against, and rejects invalid ones with.

use std::process::Command;

use crate::{dtest, root, shipped_scenarios, snapshot_settings};

/// Invalid files whose problems are structural, so the schema alone must reject them.
const REJECTED_BY_SCHEMA: &[&str] = &[
    "negative-cpu.json",
    "unknown-field.json",
    "count-as-string.json",
    "fractional-count.json",
    "missing-workload.json",
    "group-over-limit.json",
    "unknown-distribution.json",
    "unknown-pattern-type.json",
    "ramp-missing-fields.json",
    "rate-over-limit.json",
    "unknown-fault-type.json",
    "many-problems.json",
];

#[test]
fn schema_is_stable_and_reviewed() {
    let output = dtest(&["schema"]);
    assert_eq!(output.status.code(), Some(0));
    let schema: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the schema is JSON");
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    snapshot_settings().bind(|| insta::assert_json_snapshot!("schema", schema));
}

#[test]
fn python_jsonschema_agrees_with_dtest() {
    let output = dtest(&["schema"]);
    assert_eq!(output.status.code(), Some(0));
    let dir = std::env::temp_dir().join(format!("dtest-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let schema_file = dir.join("schema.json");
    std::fs::write(&schema_file, &output.stdout).expect("write schema");

    let valid: Vec<String> = shipped_scenarios().iter().map(|f| root().join(f).display().to_string()).collect();
    let invalid: Vec<String> =
        REJECTED_BY_SCHEMA.iter().map(|f| root().join("cli/tests/invalid").join(f).display().to_string()).collect();
    let script = r#"
import json, sys
try:
    import jsonschema
except ImportError:
    sys.exit("python3 lacks jsonschema: run scripts/test.sh, which installs it, or `pip install jsonschema`")
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
validator = jsonschema.Draft202012Validator(schema)
valid, invalid = json.loads(sys.argv[2]), json.loads(sys.argv[3])
bad = []
for path in valid:
    errors = list(validator.iter_errors(json.load(open(path))))
    if errors:
        bad.append(f"{path}: rejected: {errors[0].message}")
for path in invalid:
    if validator.is_valid(json.load(open(path))):
        bad.append(f"{path}: accepted, but dtest rejects it")
print("\n".join(bad))
print(f"checked {len(valid)} valid and {len(invalid)} invalid files")
sys.exit(1 if bad else 0)
"#;
    let result = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&schema_file)
        .arg(serde_json::to_string(&valid).expect("json"))
        .arg(serde_json::to_string(&invalid).expect("json"))
        .output()
        .expect("run python3");
    std::fs::remove_dir_all(&dir).expect("clean up");
    let stdout = String::from_utf8_lossy(&result.stdout);
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{stdout}{stderr}");
    assert!(stdout.contains(&format!("checked {} valid and {} invalid files", valid.len(), invalid.len())), "{stdout}");

    // And dtest itself rejects the same files.
    for file in REJECTED_BY_SCHEMA {
        let output = dtest(&["validate", &format!("cli/tests/invalid/{file}")]);
        assert_eq!(output.status.code(), Some(2), "{file}");
    }
}
