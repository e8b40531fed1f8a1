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
use crate::mode::ModeSettings;
use crate::names::DomainName;
use crate::protocol::{Outcome, Problem};
use crate::solver::{Deadline, Done, Issued, Readiness, RunInfo, Solver};
use crate::store::{CertLock, CertName, CertificateFiles, Store};

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
    /// How the challenges are presented, kept for renewals.
    pub mode: ModeSettings,
    /// Hooks around the run, kept for renewals.
    pub hooks: HookOptions,
    /// Everything beyond the basics, with defaults.
    pub options: IssueOptions,
}

/// The hooks that any mode may run, and how long each call may take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookOptions {
    /// `--deploy-hook`: run once a certificate is stored.
    pub deploy_hook: Option<PathBuf>,
    /// `--hook-timeout`: the longest one hook call may take.
    pub timeout: Duration,
}

impl Default for HookOptions {
    fn default() -> Self {
        Self {
            deploy_hook: None,
            timeout: DEFAULT_HOOK_TIMEOUT,
        }
    }
}

/// How long the DNS propagation check may take unless `--dns-check-timeout` says
/// otherwise.
pub const DEFAULT_DNS_CHECK_TIMEOUT: Duration = Duration::from_secs(300);

/// How long one hook call may take unless `--hook-timeout` says otherwise.
pub const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(300);

/// Lifecycle options of an issuance; all default to off.
#[derive(Debug, Clone, Default)]
pub struct IssueOptions {
    /// Ask the CA for this certificate profile.
    pub profile: Option<String>,
    /// Prefer the chain whose topmost certificate is issued by this common name.
    pub preferred_chain: Option<String>,
    /// Keep the current private key instead of generating a new one.
    pub reuse_key: bool,
    /// External Account Binding for a new account.
    pub eab: Option<crate::acme::ExternalAccountBinding>,
    /// How to check that dns-01 records are visible before the CA is asked.
    pub dns_check: Option<crate::dns_check::DnsCheck>,
    /// How long that check may take.
    pub dns_check_timeout: Duration,
    /// Where the check's own lookups go (tests point it at their DNS server).
    pub dns_resolvers: crate::dns_check::Resolvers,
    /// The certificate this one replaces (DER), for ARI's `replaces`.
    pub replaces: Option<Vec<u8>>,
    /// Put before each challenge id (`renew` runs share one stdin: `NAME/`).
    pub id_prefix: String,
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

    /// Rebuilds the request a certificate was issued with, for `renew` and
    /// `order finish`.
    pub fn from_settings(name: &CertName, settings: &CertSettings) -> Result<Self, Error> {
        let names =
            crate::names::parse_all(&settings.domains).map_err(|e| Error::Config(e.to_string()))?;
        let dns_check = match &settings.dns_check {
            Some(text) => Some(
                text.parse()
                    .map_err(|e| Error::Config(format!("stored dns_check: {e}")))?,
            ),
            None => None,
        };
        let mode = match (&settings.mode_options, settings.mode.as_str()) {
            (Some(mode), _) => mode.clone(),
            (None, "json") => ModeSettings::Json {
                protocol: crate::mode::JsonProtocol::AcmeBridge,
            },
            (None, "two-step") => ModeSettings::TwoStep,
            (None, other) => {
                return Err(Error::Config(format!(
                    "the stored settings do not say how --mode {other} was set up; run `acme-bridge issue` for it once more"
                )));
            }
        };
        Ok(Self {
            mode,
            hooks: HookOptions {
                deploy_hook: settings.deploy_hook.clone(),
                timeout: settings
                    .hook_timeout_seconds
                    .map_or(DEFAULT_HOOK_TIMEOUT, Duration::from_secs),
            },
            server: settings.server.clone(),
            ca_bundle: settings.ca_bundle.clone(),
            names,
            cert_name: name.clone(),
            challenge_type: settings.challenge_type,
            key_type: settings.key_type,
            email: settings.email.clone(),
            agree_tos: false,
            timeout: Duration::from_secs(settings.timeout_seconds),
            options: IssueOptions {
                profile: settings.profile.clone(),
                preferred_chain: settings.preferred_chain.clone(),
                reuse_key: settings.reuse_key,
                dns_check,
                dns_check_timeout: settings
                    .dns_check_timeout_seconds
                    .map_or(DEFAULT_DNS_CHECK_TIMEOUT, Duration::from_secs),
                ..IssueOptions::default()
            },
        })
    }

    /// The settings to store beside the certificate.
    pub fn settings(&self, account: &str) -> CertSettings {
        CertSettings {
            format: 1,
            domains: self.domains(),
            server: self.server.clone(),
            ca_bundle: self.ca_bundle.clone(),
            challenge_type: self.challenge_type,
            mode: self.mode.name().to_owned(),
            mode_options: Some(self.mode.clone()),
            deploy_hook: self.hooks.deploy_hook.clone(),
            hook_timeout_seconds: Some(self.hooks.timeout.as_secs()),
            key_type: self.key_type,
            email: self.email.clone(),
            timeout_seconds: self.timeout.as_secs(),
            account: account.to_owned(),
            revoked: None,
            profile: self.options.profile.clone(),
            preferred_chain: self.options.preferred_chain.clone(),
            reuse_key: self.options.reuse_key,
            dns_check: self.options.dns_check.as_ref().map(ToString::to_string),
            dns_check_timeout_seconds: self
                .options
                .dns_check
                .as_ref()
                .map(|_| self.options.dns_check_timeout.as_secs()),
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
    /// Everything that mode needs to present them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode_options: Option<ModeSettings>,
    /// Run once a certificate is stored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploy_hook: Option<PathBuf>,
    /// The longest one hook call may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hook_timeout_seconds: Option<u64>,
    /// The key algorithm.
    pub key_type: KeyType,
    /// Account contacts.
    pub email: Vec<String>,
    /// The reply timeout.
    pub timeout_seconds: u64,
    /// The account URL that issued it.
    pub account: String,
    /// The CA profile asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// The preferred chain's issuer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_chain: Option<String>,
    /// Whether renewals keep the key.
    #[serde(default)]
    pub reuse_key: bool,
    /// The DNS propagation check (`--dns-check` syntax).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_check: Option<String>,
    /// How long that check may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns_check_timeout_seconds: Option<u64>,
    /// Set by `acme-bridge revoke`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<crate::report::Revocation>,
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
) -> Result<Issued, Error> {
    let lock = store.lock(&req.cert_name)?;
    let acme = Acme::connect(&req.server, req.ca_bundle.as_deref()).await?;
    check_profile(req, &acme)?;
    let session = account(req, store, &acme).await?;
    let mut order = create_order(req, &acme, &session).await?;

    let result = validate(req, &session, &mut order, solver, progress).await;
    if let Err(err) = result {
        progress.cleanup_rest(solver).await;
        return Err(err);
    }

    complete(req, store, &lock, &acme, &session, &mut order).await
}

/// A profile the CA does not offer is a usage error, found before anything is
/// registered or ordered.
fn check_profile(req: &IssueRequest, acme: &Acme) -> Result<(), Error> {
    if let Some(profile) = &req.options.profile
        && !acme.meta().profiles.contains_key(profile)
    {
        let offered: Vec<&str> = acme.meta().profiles.keys().map(String::as_str).collect();
        return Err(Error::Config(if offered.is_empty() {
            format!("--profile {profile}: the CA offers no certificate profiles")
        } else {
            format!(
                "--profile {profile}: the CA offers only {}",
                offered.join(", ")
            )
        }));
    }
    Ok(())
}

/// Creates the order.
async fn create_order(
    req: &IssueRequest,
    acme: &Acme,
    session: &Session,
) -> Result<PendingOrder, Error> {
    Ok(session
        .new_order(
            &req.names,
            &crate::acme::OrderOptions {
                profile: req.options.profile.clone(),
                replaces: req
                    .options
                    .replaces
                    .clone()
                    .filter(|_| acme.offers_renewal_info()),
            },
        )
        .await?)
}

/// Finalizes a validated order with our key and stores the certificate.
async fn complete(
    req: &IssueRequest,
    store: &Store,
    lock: &CertLock,
    acme: &Acme,
    session: &Session,
    order: &mut PendingOrder,
) -> Result<Issued, Error> {
    let key = certificate_key(req, store)?;
    let csr = keys::csr_der(&key, &req.names)
        .map_err(|e| Error::Internal(format!("cannot build the CSR: {e}")))?;
    let pem = order
        .finalize(&csr, req.options.preferred_chain.as_deref())
        .await?;
    let chain = IssuedChain::parse(&pem, &key.subject_public_key_info())
        .map_err(|e| Error::Internal(e.to_string()))?;
    let key_pem = key.serialize_pem();
    let lineage = store.save_certificate(
        lock,
        &CertificateFiles {
            cert_pem: &chain.cert_pem,
            chain_pem: &chain.chain_pem,
            fullchain_pem: &chain.fullchain_pem,
            key_pem: &key_pem,
        },
    )?;
    store.save_settings(lock, &req.settings(session.account_url()))?;
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

/// The certificate key: the current one with `--reuse-key` when it exists and is
/// of the asked type, else a fresh one.
fn certificate_key(req: &IssueRequest, store: &Store) -> Result<rcgen::KeyPair, Error> {
    if req.options.reuse_key
        && let Some(lineage) = store.current(&req.cert_name)?
    {
        match std::fs::read_to_string(&lineage.privkey)
            .ok()
            .and_then(|pem| rcgen::KeyPair::from_pem(&pem).ok())
        {
            Some(key) if req.key_type.matches(&key) => {
                tracing::info!("reusing the key of version {}", lineage.version);
                return Ok(key);
            }
            Some(_) => tracing::warn!(
                "the stored key is not {}; generating a new one",
                req.key_type
            ),
            None => tracing::warn!("cannot read the stored key; generating a new one"),
        }
    }
    req.key_type
        .generate()
        .map_err(|e| Error::Internal(format!("cannot generate a {} key: {e}", req.key_type)))
}

/// Loads the stored account for this server, or registers one.
async fn account(req: &IssueRequest, store: &Store, acme: &Acme) -> Result<Session, Error> {
    if let Some(stored) = store.load_account::<StoredAccount>(&req.server)? {
        let session = acme.load_account(stored.credentials).await?;
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
    if acme.meta().external_account_required && req.options.eab.is_none() {
        return Err(Error::Config(
            "the CA requires External Account Binding for new accounts: pass --eab-kid and the HMAC key in --eab-hmac-file or ACME_BRIDGE_EAB_HMAC_KEY".into(),
        ));
    }
    let (session, stored) = acme
        .create_account(&contact, req.agree_tos, req.options.eab.as_ref())
        .await?;
    let path = store.save_account(&req.server, &stored)?;
    tracing::info!(account = session.account_url(), path = %path.display(), "account registered");
    Ok(session)
}

/// The challenges of every authorization that is not yet valid, computed once.
async fn challenges_of(
    req: &IssueRequest,
    session: &Session,
    order: &mut PendingOrder,
) -> Result<Vec<Tracked>, Error> {
    let kind = req.challenge_type;
    let mut out: Vec<Tracked> = Vec::new();
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
                id: format!("{}c{}", req.options.id_prefix, out.len() + 1),
                domain: &domain,
                identifier: &authz.identifier,
                wildcard: authz.wildcard,
                token,
                challenge_type: kind,
            },
            session.thumbprint(),
        )
        .map_err(|e| Error::Internal(e.to_string()))?;
        out.push(Tracked {
            challenge,
            authz_url: authz.url.clone(),
            answered: false,
            cleaned: false,
        });
    }
    Ok(out)
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
    progress.challenges = challenges_of(req, session, order).await?;
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

    // With a DNS check, every record must be visible before the CA is asked: answers
    // wait until all are ready and seen. Without one, each is answered at once.
    let check = req
        .options
        .dns_check
        .as_ref()
        .filter(|c| kind == ChallengeType::Dns01 && **c != crate::dns_check::DnsCheck::None);
    let mut held: Vec<String> = Vec::new();
    let mut waiting = presented.len();
    while waiting > 0 {
        match solver.next_ready(&deadline).await? {
            Readiness::Ready(id) if check.is_some() => {
                held.push(id);
                waiting -= 1;
                if waiting == 0 {
                    let expected: Vec<crate::dns_check::Expectation> = presented
                        .iter()
                        .filter_map(|c| match &c.kind {
                            crate::challenge::ChallengeKind::Dns01 { dns } => {
                                Some(crate::dns_check::Expectation {
                                    name: dns.name.clone(),
                                    values: vec![dns.value.clone()],
                                })
                            }
                            _ => None,
                        })
                        .collect();
                    let report = crate::dns_check::wait_until_visible(
                        check.expect("checked above"),
                        &expected,
                        req.options.dns_check_timeout,
                        &req.options.dns_resolvers,
                    )
                    .await
                    .map_err(|e| Error::ChallengeFailed {
                        id: held.first().cloned().unwrap_or_default(),
                        domain: req.names[0].to_string(),
                        reason: format!("DNS propagation check failed: {e}"),
                    })?;
                    for name in &report.names {
                        if !name.cname_chain.is_empty() {
                            tracing::info!(
                                "{} is a CNAME to {}; the values were found there",
                                name.name,
                                name.checked_name
                            );
                        }
                    }
                    for id in held.drain(..) {
                        let tracked = progress.find(&id).ok_or_else(|| {
                            Error::Internal(format!("solver reported unknown id {id}"))
                        })?;
                        let url = tracked.authz_url.clone();
                        tracked.answered = true;
                        order.answer(&url, kind).await?;
                    }
                }
            }
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

/// The state of a two-step run, kept in `orders/NAME.json` between `begin` and
/// `finish`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingState {
    /// Version of this file's format.
    pub format: u32,
    /// The ACME directory.
    pub server: String,
    /// The order URL.
    pub order_url: String,
    /// The account that created it.
    pub account_url: String,
    /// The names ordered.
    pub domains: Vec<String>,
    /// The challenge type.
    pub challenge_type: ChallengeType,
    /// The challenges handed out, with their authorization URLs.
    pub challenges: Vec<(Challenge, String)>,
    /// The request, to finish it unattended.
    pub settings: CertSettings,
    /// When `begin` created it (RFC 3339).
    pub created: String,
}

/// `order begin`: creates the order (or picks up the still-pending one from an
/// earlier `begin` for the same names) and returns the challenge data. Nothing is
/// answered to the CA.
pub async fn begin(
    req: &IssueRequest,
    store: &Store,
) -> Result<crate::report::OrderDocument, Error> {
    let lock = store.lock(&req.cert_name)?;
    let acme = Acme::connect(&req.server, req.ca_bundle.as_deref()).await?;
    check_profile(req, &acme)?;
    let session = account(req, store, &acme).await?;
    let domains = req.domains();
    if let Some(state) = store.load_order::<PendingState>(&req.cert_name)? {
        if state.server == req.server
            && state.domains == domains
            && state.challenge_type == req.challenge_type
        {
            match session
                .resume_order(&state.order_url)
                .await
                .map(|mut order| order.status())
            {
                Ok(status @ ("pending" | "ready")) => {
                    tracing::info!(url = state.order_url, "the earlier order is still {status}");
                    return Ok(order_document(&req.cert_name, &state, status, true));
                }
                Ok(status) => tracing::info!("the earlier order is {status}; creating a new one"),
                Err(e) => tracing::info!("the earlier order is gone ({e}); creating a new one"),
            }
        } else {
            tracing::info!("the names or the CA changed; replacing the earlier order");
        }
        store.remove_order(&lock)?;
    }
    let mut order = create_order(req, &acme, &session).await?;
    let tracked = challenges_of(req, &session, &mut order).await?;
    let state = PendingState {
        format: 1,
        server: req.server.clone(),
        order_url: order.url().to_owned(),
        account_url: session.account_url().to_owned(),
        domains,
        challenge_type: req.challenge_type,
        challenges: tracked
            .into_iter()
            .map(|t| (t.challenge, t.authz_url))
            .collect(),
        created: crate::time::now_rfc3339(),
        settings: IssueRequest {
            mode: ModeSettings::TwoStep,
            ..req.clone()
        }
        .settings(session.account_url()),
    };
    store.save_order(&lock, &state)?;
    Ok(order_document(
        &req.cert_name,
        &state,
        order.status(),
        false,
    ))
}

fn order_document(
    name: &CertName,
    state: &PendingState,
    status: &str,
    resumed: bool,
) -> crate::report::OrderDocument {
    let challenges: Vec<Challenge> = state.challenges.iter().map(|(c, _)| c.clone()).collect();
    let (challenge_data, challenge_data_dns) =
        crate::report::OrderDocument::ansible_views(&challenges);
    crate::report::OrderDocument {
        format: crate::report::FORMAT,
        name: name.to_string(),
        domains: state.domains.clone(),
        order_url: state.order_url.clone(),
        account_url: state.account_url.clone(),
        status: status.to_owned(),
        resumed,
        challenge_type: state.challenge_type,
        challenges,
        challenge_data,
        challenge_data_dns,
    }
}

/// `order finish`: answers the challenges `begin` handed out (the consumer has
/// deployed them), waits for validation, finalizes and stores the certificate.
pub async fn finish(name: &CertName, store: &Store) -> Result<Issued, Error> {
    let lock = store.lock(name)?;
    let state = store.load_order::<PendingState>(name)?.ok_or_else(|| {
        Error::Config(format!(
            "no pending order for {name}: run `acme-bridge order begin` first"
        ))
    })?;
    let req = &IssueRequest::from_settings(name, &state.settings)?;
    let acme = Acme::connect(&state.server, req.ca_bundle.as_deref()).await?;
    let session = account(req, store, &acme).await?;
    let mut order = session.resume_order(&state.order_url).await?;
    if order.status() == "pending" {
        for (challenge, authz_url) in &state.challenges {
            tracing::info!("asking the CA to validate {}", challenge.domain);
            order.answer(authz_url, state.challenge_type).await?;
        }
    }
    match order.wait_validated().await? {
        OrderOutcome::Ready => {}
        OrderOutcome::Invalid(order_problem) => {
            let problems = order.challenge_problems().await?;
            store.remove_order(&lock)?;
            let failed = state
                .challenges
                .iter()
                .find_map(|(c, url)| problems.iter().find(|(u, _)| u == url).map(|(_, p)| (c, p)));
            return Err(match failed {
                Some((c, problem)) => Error::ChallengeInvalid {
                    id: c.id.clone(),
                    domain: c.domain.clone(),
                    problem: Box::new(problem.clone()),
                },
                None => Error::ChallengeInvalid {
                    id: String::new(),
                    domain: state.domains.first().cloned().unwrap_or_default(),
                    problem: Box::new(order_problem.unwrap_or_default()),
                },
            });
        }
    }
    let issued = complete(req, store, &lock, &acme, &session, &mut order).await?;
    store.remove_order(&lock)?;
    Ok(issued)
}
