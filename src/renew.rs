//! `acme-bridge renew`: every stored certificate that is due, renewed unattended
//! the way it was issued.
//!
//! For each certificate: its settings from `renewal/NAME.json` → the CA's ARI
//! window when the CA offers one → the verdict of [`crate::policy`] → a run with
//! the stored mode (`replaces` names the old certificate when the CA speaks ARI),
//! then the deploy hook. Up to `parallel` certificates run at once; one that fails
//! does not stop the others. JSON-mode runs share stdin and stdout through a
//! [`Hub`]. Modes that cannot share (a person at the terminal, certbot-external-
//! auth's id-less replies, the built-in responders' ports) take turns.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use time::OffsetDateTime;
use tokio::sync::{Mutex, RwLock};
use tracing::Instrument;

use crate::error::Error;
use crate::inventory::{self, Stored};
use crate::issue::IssueRequest;
use crate::mode::{JsonProtocol, ModeSettings};
use crate::policy::Reason;
use crate::run::Interrupt;
use crate::solver::Issued;
use crate::solver::hub::{Attachment, Hub, ID_SEPARATOR};
use crate::store::{CertName, Store};

/// What `renew` was asked to do.
#[derive(Debug, Clone)]
pub struct RenewOptions {
    /// Only these certificates; all when empty.
    pub names: Vec<CertName>,
    /// Renew whether due or not.
    pub force: bool,
    /// Renew when less than this is left (instead of a third of the lifetime);
    /// the CA's ARI window takes precedence.
    pub renew_before: Option<Duration>,
    /// How many certificates renew at once (at least 1).
    pub parallel: usize,
    /// Run this deploy hook instead of the stored one.
    pub deploy_hook: Option<PathBuf>,
}

/// What became of one certificate.
#[derive(Debug)]
pub struct Renewal {
    /// The certificate.
    pub name: CertName,
    /// What happened.
    pub outcome: Outcome,
}

/// What happened to one certificate.
#[derive(Debug)]
pub enum Outcome {
    /// Left alone.
    NotDue {
        /// Why.
        reason: Reason,
        /// When it will be due.
        due_at: OffsetDateTime,
    },
    /// Renewed, and every hook after it succeeded.
    Renewed {
        /// Why it was due.
        reason: Reason,
        /// The new certificate.
        issued: Issued,
    },
    /// Not renewed, or renewed with a failure afterwards (`stored` is then set).
    Failed {
        /// What went wrong.
        error: Error,
        /// The new certificate, when the failure came after it was stored.
        stored: Option<Issued>,
    },
}

/// Resources that runs of some modes must not share.
#[derive(Default)]
struct Turns {
    /// stdin: JSON runs share it (read), an id-less protocol owns it (write).
    stdin: RwLock<()>,
    /// /dev/tty and the person in front of it.
    terminal: Mutex<()>,
    /// The built-in responders' ports.
    ports: Mutex<()>,
}

/// Renews what is due and reports on every certificate, in name order. Fails only
/// when the stored certificates cannot be listed.
pub async fn renew(
    store: &Store,
    options: &RenewOptions,
    interrupt: &Interrupt,
) -> Result<Vec<Renewal>, Error> {
    let names = if options.names.is_empty() {
        store.names()?
    } else {
        options.names.clone()
    };
    let (hub, lines) = Hub::new();
    let now = OffsetDateTime::now_utc();
    let uses_stdin = names.iter().any(|name| {
        matches!(
            store
                .load_settings::<crate::issue::CertSettings>(name)
                .ok()
                .flatten(),
            Some(settings) if settings.mode == "json"
        )
    });
    let writer = Hub::write_out(lines, tokio::io::stdout());
    let work = async move {
        let renewals = renew_all(store, &names, options, now, &hub, uses_stdin, interrupt).await;
        // The last sender: the writer ends once the runs' lines are out.
        drop(hub);
        renewals
    };
    let (mut renewals, ()) = tokio::join!(work, writer);
    renewals.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
    Ok(renewals)
}

/// Every certificate, `parallel` at a time, while the hub routes stdin.
async fn renew_all(
    store: &Store,
    names: &[CertName],
    options: &RenewOptions,
    now: OffsetDateTime,
    hub: &Rc<Hub>,
    uses_stdin: bool,
    interrupt: &Interrupt,
) -> Vec<Renewal> {
    let turns = Turns::default();
    let renewals = stream::iter(names)
        .map(|name| {
            let span = tracing::info_span!("renew", cert = %name);
            one(store, name, options, now, hub, &turns, interrupt.clone()).instrument(span)
        })
        .buffer_unordered(options.parallel.max(1))
        .collect::<Vec<_>>();
    tokio::pin!(renewals);
    if uses_stdin {
        // Until the end of input; the runs then see it too, and go on to their end.
        tokio::select! {
            renewals = &mut renewals => return renewals,
            () = hub.pump(tokio::io::BufReader::new(tokio::io::stdin())) => {}
        }
    }
    renewals.await
}

/// One certificate, start to end.
async fn one(
    store: &Store,
    name: &CertName,
    options: &RenewOptions,
    now: OffsetDateTime,
    hub: &Rc<Hub>,
    turns: &Turns,
    mut interrupt: Interrupt,
) -> Renewal {
    // After a signal, what has not started does not start.
    let prepared = if interrupt.is_set() {
        Err(Error::Interrupted(interrupt.signalled().await))
    } else {
        prepare(store, name, options, now).await
    };
    let outcome = match prepared {
        Err(error) => {
            tracing::error!("{error}");
            Outcome::Failed {
                error,
                stored: None,
            }
        }
        Ok(Prepared::NotDue {
            reason,
            due_at,
            request,
            stored,
        }) => {
            let by = match reason {
                Reason::AriNotYet => "the CA's suggested window (ARI) begins",
                _ => "due",
            };
            tracing::info!("not due: {by} {}", crate::time::rfc3339(due_at));
            match unchanged(store, &request, &stored).await {
                Ok(()) => Outcome::NotDue { reason, due_at },
                Err(error) => {
                    tracing::error!("{error}");
                    Outcome::Failed {
                        error,
                        stored: None,
                    }
                }
            }
        }
        Ok(Prepared::Due { reason, request }) => {
            tracing::info!("renewing: {}", reason.describe());
            run(store, &request, hub, turns, &mut interrupt)
                .await
                .map_or_else(
                    |(error, stored)| Outcome::Failed { error, stored },
                    |issued| Outcome::Renewed { reason, issued },
                )
        }
    };
    Renewal {
        name: name.clone(),
        outcome,
    }
}

enum Prepared {
    NotDue {
        reason: Reason,
        due_at: OffsetDateTime,
        request: Box<IssueRequest>,
        stored: Box<Stored>,
    },
    Due {
        reason: Reason,
        request: Box<IssueRequest>,
    },
}

/// Loads the certificate and decides.
async fn prepare(
    store: &Store,
    name: &CertName,
    options: &RenewOptions,
    now: OffsetDateTime,
) -> Result<Prepared, Error> {
    let stored = inventory::load(store, name)?.ok_or_else(|| {
        Error::Config(format!(
            "no certificate named {name} in {}",
            store.root().display()
        ))
    })?;
    let settings = stored.settings.as_ref().ok_or_else(|| {
        Error::Config(format!(
            "{} has no renewal settings: it was not issued by acme-bridge",
            store.renewal_path(name).display()
        ))
    })?;
    let mut request = IssueRequest::from_settings(name, settings)?;
    if let Some(hook) = &options.deploy_hook {
        request.hooks.deploy_hook = Some(hook.clone());
    }
    // The CA's window, when it has one; without it the lifetime rule decides.
    let window = if options.force {
        None
    } else {
        match inventory::ari_window(store, &stored).await {
            Ok(window) => {
                tracing::debug!(
                    "the CA suggests renewing between {} and {}",
                    crate::time::rfc3339(window.start),
                    crate::time::rfc3339(window.end)
                );
                // Why the CA moved the window (a mass revocation, say), for people.
                if let Some(url) = &window.explanation_url {
                    tracing::info!("the CA explains its renewal window: {url}");
                }
                Some((window.start, window.end))
            }
            Err(e) => {
                tracing::debug!("no renewal window from the CA: {e}");
                None
            }
        }
    };
    let decision = stored.decide(now, options.renew_before, window, options.force);
    if !decision.should_renew {
        return Ok(Prepared::NotDue {
            reason: decision.reason,
            due_at: decision.due_at,
            request: Box::new(request),
            stored: Box::new(stored),
        });
    }
    // Sent only to a CA that offers ARI (see `issue::create_order`).
    request.options.replaces = Some(stored.der()?);
    if matches!(
        request.mode,
        ModeSettings::Json {
            protocol: JsonProtocol::AcmeBridge
        }
    ) {
        request.options.id_prefix = format!("{name}{ID_SEPARATOR}");
    }
    Ok(Prepared::Due {
        reason: decision.reason,
        request: Box::new(request),
    })
}

/// Tells the hooks of a certificate that is kept (dehydrated's `unchanged_cert`).
async fn unchanged(store: &Store, request: &IssueRequest, stored: &Stored) -> Result<(), Error> {
    if !matches!(request.mode, ModeSettings::Handler { .. }) {
        return Ok(());
    }
    // Handler mode has no use for stdio.
    let mut solver = request.mode.solver(
        crate::mode::process_stdio,
        request.hooks.timeout,
        store.root(),
        request.key_type,
    )?;
    solver.unchanged(&request.run_info(), &stored.lineage).await
}

/// Renews with the stored mode, taking turns where the mode cannot share.
async fn run(
    store: &Store,
    request: &IssueRequest,
    hub: &Rc<Hub>,
    turns: &Turns,
    interrupt: &mut Interrupt,
) -> Result<Issued, (Error, Option<Issued>)> {
    let (_shared, _owned, _terminal, _ports);
    match &request.mode {
        ModeSettings::Json {
            protocol: JsonProtocol::AcmeBridge,
        } => _shared = Some(turns.stdin.read().await),
        ModeSettings::Json {
            protocol: JsonProtocol::CertbotExternalAuth,
        } => _owned = Some(turns.stdin.write().await),
        ModeSettings::Manual => _terminal = Some(turns.terminal.lock().await),
        ModeSettings::Standalone { .. } => _ports = Some(turns.ports.lock().await),
        _ => {}
    }
    let attachment: RefCell<Option<Attachment>> = RefCell::new(None);
    let exclusive = matches!(
        request.mode,
        ModeSettings::Json {
            protocol: JsonProtocol::CertbotExternalAuth
        }
    );
    let solver = request.mode.solver(
        || {
            let (reader, writer, attached) = hub.attach(request.cert_name.as_str(), exclusive);
            *attachment.borrow_mut() = Some(attached);
            (reader, writer)
        },
        request.hooks.timeout,
        store.root(),
        request.key_type,
    );
    let mut solver = match solver {
        Ok(solver) => solver,
        Err(e) => {
            tracing::error!("{e}");
            return Err((e, None));
        }
    };
    let ended = crate::run::run(request, store, &mut solver, interrupt).await;
    drop(solver);
    drop(attachment);
    match (ended.result, ended.after) {
        (Ok(issued), None) => Ok(issued),
        (Ok(issued), Some(error)) => Err((error, Some(issued))),
        (Err(error), _) => Err((error, None)),
    }
}

/// The exit code of a whole `renew`: 0 when nothing failed, else the code of the
/// first failed certificate (in name order).
pub fn exit_code(renewals: &[Renewal]) -> std::process::ExitCode {
    renewals
        .iter()
        .find_map(|r| match &r.outcome {
            Outcome::Failed { error, .. } => Some(error.exit_code()),
            _ => None,
        })
        .unwrap_or(std::process::ExitCode::SUCCESS)
}
