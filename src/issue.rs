//! Issuing a certificate: the one straight path from a validated request to a
//! stored certificate.
//!
//! request → lock → account → order → challenge data (computed once) → solver
//! presents → ready ones answered → poll → cleanup → finalize with our key → store.

use std::path::PathBuf;
use std::time::Duration;

use rcgen::PublicKeyData;
use serde::{Deserialize, Serialize};

use crate::acme::{Acme, OrderOutcome, PendingOrder, Session, StoredAccount};
use crate::certificate::IssuedChain;
use crate::challenge::{Challenge, ChallengeSource, ChallengeType};
use crate::error::Error;
use crate::keys::{self, KeyType};
use crate::names::DomainName;
use crate::protocol::{Outcome, Problem};
use crate::solver::{Deadline, Done, Issued, Readiness, RunInfo, Solver};
use crate::store::{CertName, CertificateFiles, Store};

/// A validated request for a certificate.
#[derive(Debug, Clone)]
pub struct IssueRequest {
    /// The ACME directory URL.
    pub server: String,
    /// Extra trust roots for the CA's HTTPS endpoint.
    pub ca_bundle: Option<PathBuf>,
    /// The names, normalised, first one first.
    pub names: Vec<DomainName>,
    /// Where it is stored.
    pub cert_name: CertName,
    /// How the CA validates the names.
    pub challenge_type: ChallengeType,
    /// The certificate key's algorithm.
    pub key_type: KeyType,
    /// Contact addresses for a new account (`mailto:` added).
    pub email: Vec<String>,
    /// Agreement to the CA's terms when an account is created.
    pub agree_tos: bool,
    /// How long to wait for the consumer's replies.
    pub timeout: Duration,
}

impl IssueRequest {
    /// What the solver announces first.
    pub fn run_info(&self) -> RunInfo {
        RunInfo {
            name: self.cert_name.to_string(),
            domains: self.domains(),
            challenge_type: self.challenge_type,
            timeout: self.timeout,
        }
    }

    fn domains(&self) -> Vec<String> {
        self.names.iter().map(|n| n.as_str().to_owned()).collect()
    }

    fn settings(&self, mode: &str, account: &str) -> CertSettings {
        CertSettings {
            format: 1,
            domains: self.domains(),
            server: self.server.clone(),
            ca_bundle: self.ca_bundle.clone(),
            challenge_type: self.challenge_type,
            mode: mode.to_owned(),
            key_type: self.key_type,
            email: self.email.clone(),
            timeout_seconds: self.timeout.as_secs(),
            account: account.to_owned(),
        }
    }
}

/// What is kept in `renewal/NAME.json` so a later run can renew unattended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertSettings {
    /// Version of this file's format.
    pub format: u32,
    /// The names.
    pub domains: Vec<String>,
    /// The ACME directory URL.
    pub server: String,
    /// Extra trust roots.
    pub ca_bundle: Option<PathBuf>,
    /// The challenge type.
    pub challenge_type: ChallengeType,
    /// The mode that presented the challenges.
    pub mode: String,
    /// The key algorithm.
    pub key_type: KeyType,
    /// Account contacts.
    pub email: Vec<String>,
    /// The reply timeout.
    pub timeout_seconds: u64,
    /// The account URL that issued it.
    pub account: String,
}

/// What has been presented so far. Lives outside the issuing future so that
/// cleanup can still run when that future is cancelled by a signal.
#[derive(Debug, Default)]
pub struct Progress {
    challenges: Vec<Tracked>,
}

#[derive(Debug)]
struct Tracked {
    challenge: Challenge,
    authz_url: String,
    answered: bool,
    cleaned: bool,
}

impl Progress {
    /// Cleans up every challenge not cleaned up yet: those answered to the CA with
    /// an unknown outcome, the others as never validated. Errors are logged: cleanup
    /// must reach every challenge.
    pub async fn cleanup_rest(&mut self, solver: &mut impl Solver) {
        self.cleanup_with(solver, |t| {
            let outcome = if t.answered {
                Outcome::Unknown
            } else {
                Outcome::NotValidated
            };
            (outcome, None)
        })
        .await;
    }

    /// Cleans up every challenge not cleaned up yet, in one call to the solver.
    async fn cleanup_with(
        &mut self,
        solver: &mut impl Solver,
        verdict: impl Fn(&Tracked) -> (Outcome, Option<Problem>),
    ) {
        let verdicts: Vec<(usize, Outcome, Option<Problem>)> = self
            .challenges
            .iter()
            .enumerate()
            .filter(|(_, t)| !t.cleaned)
            .map(|(i, t)| {
                let (outcome, problem) = verdict(t);
                (i, outcome, problem)
            })
            .collect();
        if verdicts.is_empty() {
            return;
        }
        let done: Vec<Done<'_>> = verdicts
            .iter()
            .map(|(i, outcome, problem)| Done {
                challenge: &self.challenges[*i].challenge,
                outcome: *outcome,
                problem: problem.as_ref(),
            })
            .collect();
        if let Err(e) = solver.cleanup(&done).await {
            tracing::error!("cleanup failed: {e}");
        }
        for (i, _, _) in verdicts {
            self.challenges[i].cleaned = true;
        }
    }

    fn find(&mut self, id: &str) -> Option<&mut Tracked> {
        self.challenges.iter_mut().find(|t| t.challenge.id == id)
    }
}

/// Issues and stores a certificate. Cleanup of everything presented runs before
/// this returns, except when the future is cancelled: then call
/// [`Progress::cleanup_rest`].
pub async fn issue(
    req: &IssueRequest,
    store: &Store,
    solver: &mut impl Solver,
    progress: &mut Progress,
    mode: &str,
) -> Result<Issued, Error> {
    let lock = store.lock(&req.cert_name)?;
    let acme = Acme::connect(&req.server, req.ca_bundle.as_deref()).await?;
    let session = account(req, store, &acme).await?;
    let mut order = session
        .new_order(&req.names, &crate::acme::OrderOptions::default())
        .await?;

    let result = validate(req, &session, &mut order, solver, progress).await;
    if let Err(err) = result {
        progress.cleanup_rest(solver).await;
        return Err(err);
    }

    let key = req
        .key_type
        .generate()
        .map_err(|e| Error::Internal(format!("cannot generate a {} key: {e}", req.key_type)))?;
    let csr = keys::csr_der(&key, &req.names)
        .map_err(|e| Error::Internal(format!("cannot build the CSR: {e}")))?;
    let pem = order.finalize(&csr, None).await?;
    let chain = IssuedChain::parse(&pem, &key.subject_public_key_info())
        .map_err(|e| Error::Internal(e.to_string()))?;
    let key_pem = key.serialize_pem();
    let lineage = store.save_certificate(
        &lock,
        &CertificateFiles {
            cert_pem: &chain.cert_pem,
            chain_pem: &chain.chain_pem,
            fullchain_pem: &chain.fullchain_pem,
            key_pem: &key_pem,
        },
    )?;
    store.save_settings(&lock, &req.settings(mode, session.account_url()))?;
    tracing::info!(
        "certificate {} stored as version {} (serial {}, expires {})",
        lineage.name,
        lineage.version,
        chain.info.serial,
        crate::time::rfc3339(chain.info.not_after)
    );
    tracing::debug!(
        requests = acme.requests(),
        connections = acme.connections(),
        "ACME traffic"
    );
    Ok(Issued {
        domains: req.domains(),
        lineage,
        info: chain.info,
    })
}

/// Loads the stored account for this server, or registers one.
async fn account(req: &IssueRequest, store: &Store, acme: &Acme) -> Result<Session, Error> {
    if let Some(stored) = store.load_account::<StoredAccount>(&req.server)? {
        let session = acme.load_account(stored).await?;
        tracing::debug!(account = session.account_url(), "using the stored account");
        return Ok(session);
    }
    if let Some(terms) = &acme.meta().terms_of_service
        && !req.agree_tos
    {
        return Err(Error::Config(format!(
            "the CA requires agreeing to its terms of service before an account is created: {terms} — read them and pass --agree-tos"
        )));
    }
    let contact: Vec<String> = req.email.iter().map(|e| format!("mailto:{e}")).collect();
    let (session, stored) = acme.create_account(&contact, req.agree_tos, None).await?;
    let path = store.save_account(&req.server, &stored)?;
    tracing::info!(account = session.account_url(), path = %path.display(), "account registered");
    Ok(session)
}

/// Presents every challenge, answers the ready ones, waits for the CA's verdict
/// and cleans up.
async fn validate(
    req: &IssueRequest,
    session: &Session,
    order: &mut PendingOrder,
    solver: &mut impl Solver,
    progress: &mut Progress,
) -> Result<(), Error> {
    let kind = req.challenge_type;
    for authz in order.authorizations().await? {
        if authz.valid {
            tracing::info!("{} is already authorized", authz.identifier);
            continue;
        }
        let Some((_, token)) = authz.challenges.iter().find(|(t, _)| *t == kind) else {
            let offered: Vec<_> = authz.challenges.iter().map(|(t, _)| t.as_str()).collect();
            return Err(Error::Config(format!(
                "the CA offers no {kind} challenge for {} (it offers: {})",
                authz.identifier,
                if offered.is_empty() {
                    "none this program supports".into()
                } else {
                    offered.join(", ")
                }
            )));
        };
        let domain = if authz.wildcard {
            format!("*.{}", authz.identifier)
        } else {
            authz.identifier.clone()
        };
        if !req.names.iter().any(|n| n.as_str() == domain) {
            return Err(Error::Internal(format!(
                "the CA returned an authorization for {domain}, which was not requested"
            )));
        }
        let challenge = Challenge::compute(
            ChallengeSource {
                id: format!("c{}", progress.challenges.len() + 1),
                domain: &domain,
                identifier: &authz.identifier,
                wildcard: authz.wildcard,
                token,
                challenge_type: kind,
            },
            session.thumbprint(),
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        progress.challenges.push(Tracked {
            challenge,
            authz_url: authz.url.clone(),
            answered: false,
            cleaned: false,
        });
    }
    if progress.challenges.is_empty() {
        return Ok(());
    }

    let deadline = Deadline::after(req.timeout);
    let presented: Vec<Challenge> = progress
        .challenges
        .iter()
        .map(|t| t.challenge.clone())
        .collect();
    solver.present(&presented, &deadline).await?;

    let mut waiting = presented.len();
    while waiting > 0 {
        match solver.next_ready(&deadline).await? {
            Readiness::Ready(id) => {
                let tracked = progress
                    .find(&id)
                    .ok_or_else(|| Error::Internal(format!("solver reported unknown id {id}")))?;
                tracing::info!(
                    "{} ({id}) is ready; asking the CA to validate",
                    tracked.challenge.domain
                );
                let url = tracked.authz_url.clone();
                tracked.answered = true;
                order.answer(&url, kind).await?;
                waiting -= 1;
            }
            Readiness::Failed { id, reason } => {
                let domain = progress
                    .find(&id)
                    .map(|t| t.challenge.domain.clone())
                    .unwrap_or_default();
                return Err(Error::ChallengeFailed { id, domain, reason });
            }
        }
    }

    match order.wait_validated().await? {
        OrderOutcome::Ready => {
            progress
                .cleanup_with(solver, |_| (Outcome::Valid, None))
                .await;
            Ok(())
        }
        OrderOutcome::Invalid(order_problem) => {
            let verdicts = order.challenge_problems().await?;
            progress
                .cleanup_with(solver, |t| {
                    match verdicts.iter().find(|(url, _)| *url == t.authz_url) {
                        Some((_, problem)) => (Outcome::Invalid, Some(problem.clone())),
                        None => (Outcome::Valid, None),
                    }
                })
                .await;
            let failed = progress.challenges.iter().find_map(|t| {
                verdicts
                    .iter()
                    .find(|(url, _)| *url == t.authz_url)
                    .map(|(_, p)| (t, p))
            });
            Err(match failed {
                Some((t, problem)) => Error::ChallengeInvalid {
                    id: t.challenge.id.clone(),
                    domain: t.challenge.domain.clone(),
                    problem: Box::new(problem.clone()),
                },
                None => Error::ChallengeInvalid {
                    id: String::new(),
                    domain: req.names[0].to_string(),
                    problem: Box::new(order_problem.unwrap_or_default()),
                },
            })
        }
    }
}
