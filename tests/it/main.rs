//! Integration tests for `acme-bridge`, run against a real ACME server (Pebble).
//!
//! One test binary, several modules:
//! - `harness`: starts Pebble and pebble-challtestsrv per test and kills them on drop;
//! - `consumer`: drives the `acme-bridge` binary over its JSON-lines protocol and checks
//!   every line against the published JSON Schemas;
//! - `certs`: reads what was issued (PEM, X.509, keys, path verification);
//! - `pebble_harness`: proves the harness itself works;
//! - `json_mode`: the JSON-lines mode, end to end;
//! - `schema`: the committed schemas are the ones the binary prints.

mod certs;
mod consumer;
mod harness;
mod json_mode;
mod pebble_harness;
mod schema;
