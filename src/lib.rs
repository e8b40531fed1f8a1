//! acme-bridge: an ACME ([RFC 8555]) client for people who automate.
//!
//! It gets certificates from any ACME CA and hands each domain-validation challenge
//! to the user's automation. The program is one straight path — command line →
//! validated request ([`issue::IssueRequest`]) → ACME order ([`acme`]) → challenge
//! data computed once ([`challenge`]) → a [`solver`] that presents the challenges
//! and reports which are ready → answer, poll, finalize → [`store`].
//!
//! The JSON-lines protocol that automation speaks is specified in [`protocol`];
//! its JSON Schema is generated from those types.
//!
//! [RFC 8555]: https://www.rfc-editor.org/rfc/rfc8555
#![warn(missing_docs)]

pub mod acme;
pub mod certificate;
pub mod challenge;
pub mod cli;
pub mod dns_check;
pub mod error;
pub mod inventory;
pub mod issue;
pub mod keys;
pub mod mode;
pub mod names;
pub mod policy;
pub mod protocol;
pub mod renew;
pub mod report;
pub mod run;
pub mod runner;
pub mod solver;
pub mod store;
pub mod time;
