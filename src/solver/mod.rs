//! Solvers: the ways a challenge leaves the program.
//!
//! Every mode implements one small interface: announce the run, present every
//! challenge, report which are ready (one at a time, as they become ready), clean
//! each up with its outcome, and announce the result. The ACME code never knows
//! which mode runs, and a mode never talks to the CA.

pub mod compat;
pub mod external_auth;
pub mod handler;
pub mod hub;
pub mod json;
pub mod manual;
pub mod standalone;
pub mod webroot;

use std::time::Duration;

use tokio::time::Instant;

use crate::certificate::CertInfo;
use crate::challenge::{Challenge, ChallengeType};
use crate::error::Error;
use crate::protocol::{Outcome, Problem};
use crate::store::Lineage;

/// What a run is for, announced before anything else.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The certificate's name.
    pub name: String,
    /// Its names, in order.
    pub domains: Vec<String>,
    /// The challenge type in use.
    pub challenge_type: ChallengeType,
    /// How long replies are awaited.
    pub timeout: Duration,
}

/// When waiting for replies ends, as a timer and as the wall-clock time consumers see.
#[derive(Debug, Clone)]
pub struct Deadline {
    /// For timers.
    pub at: Instant,
    /// RFC 3339, UTC.
    pub wall: String,
}

impl Deadline {
    /// `timeout` from now.
    pub fn after(timeout: Duration) -> Self {
        let wall = time::OffsetDateTime::now_utc()
            + time::Duration::try_from(timeout).unwrap_or(time::Duration::MAX);
        Self {
            at: Instant::now() + timeout,
            wall: crate::time::rfc3339(wall),
        }
    }
}

/// A solver's word about one challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Deployed: answer it.
    Ready(String),
    /// Could not be deployed.
    Failed {
        /// The challenge id.
        id: String,
        /// Why.
        reason: String,
    },
}

/// A challenge being cleaned up, with what became of it.
#[derive(Debug, Clone, Copy)]
pub struct Done<'a> {
    /// The challenge as presented.
    pub challenge: &'a Challenge,
    /// What the CA made of it.
    pub outcome: Outcome,
    /// The CA's problem document, for `Invalid`.
    pub problem: Option<&'a Problem>,
}

/// A stored certificate, as announced at the end of a run.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Its names.
    pub domains: Vec<String>,
    /// Where it is stored.
    pub lineage: Lineage,
    /// Facts about it.
    pub info: CertInfo,
}

/// For modes that know every verdict once `present` returns (hooks, built-in
/// responders): the next queued one.
pub(crate) fn next_queued(
    queue: &mut std::collections::VecDeque<Readiness>,
    mode: &str,
) -> Result<Readiness, Error> {
    queue.pop_front().ok_or_else(|| {
        Error::Internal(format!(
            "{mode} mode was asked for a challenge it never presented"
        ))
    })
}

/// One way of presenting challenges. See the module documentation.
// The runtime is single-threaded, so the futures need not be `Send`.
#[allow(async_fn_in_trait)]
pub trait Solver {
    /// Announces the run. Called once, first.
    async fn start(&mut self, run: &RunInfo) -> Result<(), Error>;

    /// Presents every challenge before any is awaited.
    async fn present(&mut self, challenges: &[Challenge], deadline: &Deadline)
    -> Result<(), Error>;

    /// Waits for the next challenge to become ready or fail. Only called while some
    /// presented challenge has not been reported; errors with a timeout after
    /// `deadline`.
    async fn next_ready(&mut self, deadline: &Deadline) -> Result<Readiness, Error>;

    /// Removes what was presented, for every challenge in `done` at once (modes that
    /// batch, like dehydrated's chained hooks, make one call). Called once per
    /// challenge over a run, also after a failure, a timeout or a signal; an error
    /// is logged and does not stop the cleanup of the others.
    async fn cleanup(&mut self, done: &[Done<'_>]) -> Result<(), Error>;

    /// Announces how the run ended. Called once, last.
    async fn finish(&mut self, result: Result<&Issued, &Error>) -> Result<(), Error>;
}

impl From<&Issued> for crate::protocol::CertificateMessage {
    fn from(issued: &Issued) -> Self {
        let lineage = &issued.lineage;
        let path = |p: &std::path::Path| p.display().to_string();
        Self {
            name: lineage.name.to_string(),
            domains: issued.domains.clone(),
            version: lineage.version,
            serial: issued.info.serial.clone(),
            not_before: crate::time::rfc3339(issued.info.not_before),
            not_after: crate::time::rfc3339(issued.info.not_after),
            cert_path: path(&lineage.cert),
            chain_path: path(&lineage.chain),
            fullchain_path: path(&lineage.fullchain),
            key_path: path(&lineage.privkey),
        }
    }
}
