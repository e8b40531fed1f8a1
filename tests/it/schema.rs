//! The committed schemas are exactly what the binary prints.

use std::process::Command;

use crate::consumer::{BINARY, INPUT_SCHEMA, OUTPUT_SCHEMA};

fn printed_schema(which: &str) -> Vec<u8> {
    let output = Command::new(BINARY)
        .args(["schema", which])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BINARY}: {e}"));
    assert!(
        output.status.success(),
        "`acme-bridge schema {which}` exited with {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

fn committed(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Panics with the first differing line unless `printed` == `committed` byte for byte.
fn assert_same(which: &str, path: &str) {
    let printed = printed_schema(which);
    let committed = committed(path);
    if printed == committed {
        return;
    }
    let printed = String::from_utf8_lossy(&printed);
    let committed = String::from_utf8_lossy(&committed);
    let first_difference = printed
        .lines()
        .zip(committed.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| printed.lines().count().min(committed.lines().count()));
    panic!(
        "`acme-bridge schema {which}` differs from {path} (regenerate it with \
         `acme-bridge schema {which} > {path}`); first difference at line {}:\n\
         printed:   {:?}\ncommitted: {:?}",
        first_difference + 1,
        printed
            .lines()
            .nth(first_difference)
            .unwrap_or("<end of output>"),
        committed
            .lines()
            .nth(first_difference)
            .unwrap_or("<end of file>"),
    );
}

#[test]
fn schema_output_prints_the_committed_output_schema() {
    assert_same("output", OUTPUT_SCHEMA);
}

#[test]
fn schema_input_prints_the_committed_input_schema() {
    assert_same("input", INPUT_SCHEMA);
}

#[test]
fn committed_schemas_are_json_schemas() {
    for path in [OUTPUT_SCHEMA, INPUT_SCHEMA] {
        let schema: serde_json::Value = serde_json::from_slice(&committed(path))
            .unwrap_or_else(|e| panic!("{path} is not JSON: {e}"));
        jsonschema::validator_for(&schema)
            .unwrap_or_else(|e| panic!("{path} is not a valid JSON Schema: {e}"));
    }
}

#[test]
fn the_lifecycle_documents_print_their_committed_schemas() {
    for which in ["list", "plan", "order"] {
        assert_same(
            which,
            &format!("{}/schema/{which}-v1.json", env!("CARGO_MANIFEST_DIR")),
        );
    }
}
