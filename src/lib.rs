//! acme-bridge: an ACME (RFC 8555) client for people who automate.
#![warn(missing_docs)]

pub mod acme;
pub mod certificate;
pub mod challenge;
pub mod keys;
pub mod names;
pub mod protocol;
pub mod time;
pub mod error;
pub mod store;
