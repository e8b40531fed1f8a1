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

#[test]
fn schema_output_prints_the_committed_output_schema() {
    assert!(
        printed_schema("output") == committed(OUTPUT_SCHEMA),
        "`acme-bridge schema output` differs from {OUTPUT_SCHEMA}; regenerate it with \
         `acme-bridge schema output > schema/output-v1.json`"
    );
}

#[test]
fn schema_input_prints_the_committed_input_schema() {
    assert!(
        printed_schema("input") == committed(INPUT_SCHEMA),
        "`acme-bridge schema input` differs from {INPUT_SCHEMA}; regenerate it with \
         `acme-bridge schema input > schema/input-v1.json`"
    );
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
