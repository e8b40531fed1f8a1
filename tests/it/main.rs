//! Integration tests for `acme-bridge`, run against a real ACME server (Pebble).
//!
//! One test binary, several modules:
//! - `harness`: starts Pebble and pebble-challtestsrv per test and kills them on drop;
//! - `consumer`: drives the `acme-bridge` binary over its JSON-lines protocol and checks
//!   every line against the published JSON Schemas;
//! - `certs`: reads what was issued (PEM, X.509, keys, path verification);
//! - `pebble_harness`: proves the harness itself works;
//! - `json_mode`: the JSON-lines mode, end to end;
//! - `compat_output`: `--protocol certbot-external-auth`, end to end;
//! - `handler_mode`: dehydrated, certbot and external-auth hook scripts, and
//!   `--deploy-hook`, end to end;
//! - `manual_mode`: manual mode inside a pseudo-terminal, end to end;
//! - `builtin_solvers`: `--mode standalone` and `--mode webroot`, validated by Pebble
//!   against acme-bridge's own listeners and a test file server;
//! - `dns_check`: the DNS propagation check against challtestsrv's DNS server;
//! - `lifecycle`: `revoke`, `list`, `plan`, `account`, and the `issue` options EAB,
//!   `--preferred-chain`, `--reuse-key`, `--dns-check` and `--profile`;
//! - `renew`: `acme-bridge renew` in handler and JSON mode, side by side;
//! - `schema`: the committed schemas are the ones the binary prints;
//! - `fake_ca`: ARI edge cases (`alreadyReplaced`, an unechoed `replaces`,
//!   `explanationURL`) against an in-process fake ACME server.

mod a2c_harness;
mod acme2certifier;
mod builtin_solvers;
mod certs;
mod compat_output;
mod consumer;
mod dns_check;
mod fake_ca;
mod handler_mode;
mod harness;
mod json_mode;
mod lifecycle;
mod manual_mode;
mod pebble_harness;
mod renew;
mod schema;
