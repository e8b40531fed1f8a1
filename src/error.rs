//! The program's errors and the few exit codes they map to.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | local failure: files, I/O, another run holds the certificate's lock |
//! | 2 | usage or configuration error (nothing was sent to the CA) |
//! | 3 | the CA refused a request or could not be reached |
//! | 4 | a challenge was not completed: the consumer failed or did not answer, or the CA found it invalid; or a hook failed |
//! | 5 | interrupted by a signal (cleanup ran) |

use std::process::ExitCode;

use crate::acme::AcmeError;
use crate::protocol::{ErrorKind, Problem};
use crate::store::StoreError;

/// Everything that can end a run early.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The command line or the settings are wrong.
    #[error("{0}")]
    Config(String),
    /// Files or locks.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The CA refused, or could not be reached.
    #[error(transparent)]
    Acme(Box<AcmeError>),
    /// The consumer reported a challenge as failed.
    #[error("challenge {id} for {domain} failed: {reason}")]
    ChallengeFailed {
        /// The challenge id.
        id: String,
        /// Its name.
        domain: String,
        /// The consumer's reason.
        reason: String,
    },
    /// The CA tried a challenge and found it invalid.
    #[error("the CA could not validate {domain}: {problem}")]
    ChallengeInvalid {
        /// The challenge id.
        id: String,
        /// Its name.
        domain: String,
        /// The CA's problem document.
        problem: Box<Problem>,
    },
    /// No reply came in time.
    #[error("no reply for {ids} within {seconds}s (--timeout); the challenges were not answered")]
    Timeout {
        /// The ids still waiting, comma-separated.
        ids: String,
        /// The timeout.
        seconds: u64,
    },
    /// stdin closed while replies were still awaited.
    #[error("stdin closed while {ids} still awaited a reply")]
    Eof {
        /// The ids still waiting, comma-separated.
        ids: String,
    },
    /// A signal stopped the run.
    #[error("interrupted by {0}; cleanup was sent")]
    Interrupted(&'static str),
    /// A hook failed, timed out or could not be run (outside a challenge's own
    /// deployment, which is reported as [`Error::ChallengeFailed`]).
    #[error("{0}")]
    Hook(String),
    /// Writing protocol messages failed (the consumer went away).
    #[error("cannot write to the consumer: {0}")]
    Output(std::io::Error),
    /// Anything else that should not happen.
    #[error("{0}")]
    Internal(String),
}

impl From<AcmeError> for Error {
    fn from(err: AcmeError) -> Self {
        Self::Acme(Box::new(err))
    }
}

impl Error {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Self::Store(_) | Self::Internal(_) => 1,
            Self::Config(_) => 2,
            Self::Acme(e) if matches!(**e, AcmeError::Setup(_)) => 2,
            Self::Acme(_) => 3,
            Self::ChallengeFailed { .. }
            | Self::ChallengeInvalid { .. }
            | Self::Timeout { .. }
            | Self::Eof { .. }
            | Self::Hook(_)
            | Self::Output(_) => 4,
            Self::Interrupted(_) => 5,
        })
    }

    /// The protocol's name for this kind of failure.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::Config(_) => ErrorKind::Config,
            Self::Acme(e) if matches!(**e, AcmeError::Setup(_)) => ErrorKind::Config,
            Self::Store(_) => ErrorKind::Storage,
            Self::Acme(_) => ErrorKind::Ca,
            Self::ChallengeFailed { .. } | Self::ChallengeInvalid { .. } | Self::Hook(_) => {
                ErrorKind::Challenge
            }
            Self::Timeout { .. } => ErrorKind::Timeout,
            Self::Eof { .. } | Self::Output(_) => ErrorKind::Eof,
            Self::Interrupted(_) => ErrorKind::Interrupted,
            Self::Internal(_) => ErrorKind::Internal,
        }
    }

    /// The CA's problem document, when the CA sent one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Acme(e) => e.problem(),
            Self::ChallengeInvalid { problem, .. } => Some(problem.as_ref()),
            _ => None,
        }
    }

    /// The challenge this error is about, when there is one.
    pub fn challenge_id(&self) -> Option<&str> {
        match self {
            Self::ChallengeFailed { id, .. } | Self::ChallengeInvalid { id, .. } => Some(id),
            _ => None,
        }
    }
}
