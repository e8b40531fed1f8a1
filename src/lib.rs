//! acme-bridge: an ACME (RFC 8555) client for people who automate.
#![warn(missing_docs)]

pub mod challenge;
pub mod names;
pub mod protocol;
