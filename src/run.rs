//! One certificate's run from the solver's first word to its last, with signals
//! handled: shared by `issue` and `renew`.
//!
//! start → issue (lock, order, challenges, finalize, store) → cleanup of whatever
//! is left → deploy hook → finish. A signal cancels the issuing step; cleanup and
//! the solver's last word still run.

use std::process::ExitCode;

use tokio::sync::watch;

use crate::error::Error;
use crate::issue::{IssueRequest, Progress};
use crate::runner::Hook;
use crate::solver::{Issued, Solver};
use crate::store::Store;

/// Set once SIGINT, SIGTERM or SIGHUP arrives; every run watching it stops.
#[derive(Debug, Clone)]
pub struct Interrupt(watch::Receiver<Option<&'static str>>);

impl Interrupt {
    /// Registers the signal handlers, before any work starts. Needs a running Tokio
    /// runtime.
    pub fn install() -> Result<Self, Error> {
        use tokio::signal::unix::{SignalKind, signal};
        let cannot = |e: std::io::Error| Error::Internal(format!("cannot handle signals: {e}"));
        let mut int = signal(SignalKind::interrupt()).map_err(cannot)?;
        let mut term = signal(SignalKind::terminate()).map_err(cannot)?;
        let mut hup = signal(SignalKind::hangup()).map_err(cannot)?;
        let (tx, rx) = watch::channel(None);
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    _ = int.recv() => "SIGINT",
                    _ = term.recv() => "SIGTERM",
                    _ = hup.recv() => "SIGHUP",
                };
                tracing::warn!("{name} received: stopping");
                if tx.send(Some(name)).is_err() {
                    return;
                }
            }
        });
        Ok(Self(rx))
    }

    /// Waits for a signal; returns its name.
    pub async fn signalled(&mut self) -> &'static str {
        match self.0.wait_for(Option::is_some).await {
            Ok(name) => name.unwrap_or("a signal"),
            Err(_) => std::future::pending().await,
        }
    }

    /// Whether a signal has arrived.
    pub fn is_set(&self) -> bool {
        self.0.borrow().is_some()
    }
}

/// How a run ended.
#[derive(Debug)]
pub struct Ended {
    /// The stored certificate, or why there is none.
    pub result: Result<Issued, Error>,
    /// A failure after the certificate was stored (deploy hook, the solver's last
    /// word): the certificate stays, the run still failed.
    pub after: Option<Error>,
}

impl Ended {
    /// The first failure, if any.
    pub fn error(&self) -> Option<&Error> {
        match (&self.result, &self.after) {
            (Err(e), _) | (Ok(_), Some(e)) => Some(e),
            (Ok(_), None) => None,
        }
    }

    /// The process exit code for this run alone.
    pub fn exit_code(&self) -> ExitCode {
        self.error().map_or(ExitCode::SUCCESS, Error::exit_code)
    }
}

/// Runs one issuance with `solver`. Every error is logged here.
pub async fn run(
    request: &IssueRequest,
    store: &Store,
    solver: &mut impl Solver,
    interrupt: &mut Interrupt,
) -> Ended {
    let deploy_hook = match request
        .hooks
        .deploy_hook
        .as_ref()
        .map(|path| Hook::new(path, request.hooks.timeout))
        .transpose()
    {
        Ok(hook) => hook,
        Err(e) => return failed(Error::Config(format!("--deploy-hook: {e}"))),
    };
    let run_info = request.run_info();
    let started = tokio::select! {
        started = solver.start(&run_info) => started,
        name = interrupt.signalled() => Err(Error::Interrupted(name)),
    };
    if let Err(e) = started {
        return failed(e);
    }
    let mut progress = Progress::default();
    let result = tokio::select! {
        result = crate::issue::issue(request, store, solver, &mut progress) => result,
        name = interrupt.signalled() => Err(Error::Interrupted(name)),
    };
    // Reached on every path, including a signal that cancelled the issuing future.
    progress.cleanup_rest(solver).await;
    let mut after = None;
    if let (Ok(issued), Some(hook)) = (&result, &deploy_hook) {
        tokio::select! {
            deployed = crate::solver::handler::run_deploy_hook(hook, issued) => after = deployed.err(),
            name = interrupt.signalled() => after = Some(Error::Interrupted(name)),
        }
        if let Some(e) = &after {
            tracing::error!("{e}");
        }
    }
    if let Err(e) = &result {
        tracing::error!("{e}");
    }
    if let Err(e) = solver.finish(result.as_ref()).await {
        tracing::error!("{e}");
        if result.is_ok() {
            after.get_or_insert(e);
        }
    }
    Ended { result, after }
}

fn failed(e: Error) -> Ended {
    tracing::error!("{e}");
    Ended {
        result: Err(e),
        after: None,
    }
}
