//! The ACME conversation ([RFC 8555]), behind one adapter over instant-acme.
//!
//! Nothing outside this module names an instant-acme type: the rest of the program
//! sees accounts, orders, authorizations and problem documents in its own terms, so
//! a new instant-acme release changes this file only.
//!
//! [RFC 8555]: https://www.rfc-editor.org/rfc/rfc8555

mod http;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, ChallengeType as AcmeChallengeType,
    Identifier, NewAccount, NewOrder, Order, OrderStatus,
};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, sleep};

pub use self::http::{Transport, TransportError};
use crate::challenge::ChallengeType;
use crate::names::DomainName;
use crate::protocol::{Problem, ProblemIdentifier, Subproblem};

/// Let's Encrypt's production directory.
pub const LETSENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory.
pub const LETSENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";

/// First wait before polling an order; doubled after every poll.
const FIRST_POLL: Duration = Duration::from_millis(60);
/// Longest wait between two polls, unless the CA asks for more with `Retry-After`.
const MAX_POLL: Duration = Duration::from_secs(10);
/// The longest `Retry-After` we honour before giving up on an order.
const POLL_LIMIT: Duration = Duration::from_secs(300);

/// What went wrong talking to the CA.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AcmeError {
    /// The CA answered with a problem document.
    #[error("{context}: {problem}")]
    Problem {
        /// What we asked for.
        context: String,
        /// The CA's answer.
        problem: Problem,
    },
    /// The CA could not be reached or answered something that is not ACME.
    #[error("{context}: {detail}")]
    Transport {
        /// What we asked for.
        context: String,
        /// The underlying error, with its causes.
        detail: String,
    },
    /// The CA did not finish in time.
    #[error("{context}: the CA did not finish within {}s", .limit.as_secs())]
    Timeout {
        /// What we were waiting for.
        context: String,
        /// How long we waited.
        limit: Duration,
    },
    /// The trust roots could not be set up.
    #[error(transparent)]
    Setup(#[from] TransportError),
}

impl AcmeError {
    /// The CA's problem document, when there is one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Problem { problem, .. } => Some(problem),
            _ => None,
        }
    }

    fn from_lib(context: impl Into<String>, err: instant_acme::Error) -> Self {
        let context = context.into();
        match err {
            instant_acme::Error::Api(problem) => Self::Problem {
                context,
                problem: convert_problem(&problem),
            },
            instant_acme::Error::Timeout(_) => Self::Timeout {
                context,
                limit: POLL_LIMIT,
            },
            other => {
                let mut detail = other.to_string();
                let mut source = std::error::Error::source(&other);
                while let Some(cause) = source {
                    detail.push_str(": ");
                    detail.push_str(&cause.to_string());
                    source = cause.source();
                }
                Self::Transport { context, detail }
            }
        }
    }
}

/// The parts of the directory's `meta` object we use ([RFC 8555 §7.1.1]).
///
/// [RFC 8555 §7.1.1]: https://www.rfc-editor.org/rfc/rfc8555#section-7.1.1
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DirectoryMeta {
    /// The terms of service a new account must agree to.
    pub terms_of_service: Option<String>,
    /// The CA's website.
    pub website: Option<String>,
    /// Whether new accounts need External Account Binding.
    #[serde(default)]
    pub external_account_required: bool,
    /// Certificate profiles the CA offers, name → description.
    #[serde(default)]
    pub profiles: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct DirectoryDoc {
    #[serde(default)]
    meta: DirectoryMeta,
}

/// An account as stored on disk: the instant-acme credentials plus what we know.
#[derive(Serialize, Deserialize)]
pub struct StoredAccount {
    /// The account URL (its `kid`).
    pub url: String,
    /// The directory it belongs to.
    pub directory: String,
    /// Contact URLs given at registration.
    #[serde(default)]
    pub contact: Vec<String>,
    /// When it was created (RFC 3339).
    pub created: String,
    /// Key and URLs, in instant-acme's format.
    pub credentials: AccountCredentials,
}

/// A connection to one ACME server.
pub struct Acme {
    transport: Transport,
    directory_url: String,
    meta: DirectoryMeta,
}

impl Acme {
    /// Reads the server's directory, trusting the system roots plus `ca_bundle`.
    pub async fn connect(directory_url: &str, ca_bundle: Option<&Path>) -> Result<Self, AcmeError> {
        let transport = Transport::new(directory_url, ca_bundle)?;
        let body = transport.directory().await.map_err(|e| {
            AcmeError::from_lib(format!("reading the directory {directory_url}"), e)
        })?;
        let doc: DirectoryDoc =
            serde_json::from_slice(&body).map_err(|e| AcmeError::Transport {
                context: format!("reading the directory {directory_url}"),
                detail: format!("not an ACME directory: {e}"),
            })?;
        Ok(Self {
            transport,
            directory_url: directory_url.to_owned(),
            meta: doc.meta,
        })
    }

    /// The directory's `meta` object.
    pub fn meta(&self) -> &DirectoryMeta {
        &self.meta
    }

    /// Requests sent over the network so far.
    pub fn requests(&self) -> u32 {
        self.transport.requests()
    }

    /// Connections opened so far.
    pub fn connections(&self) -> u32 {
        self.transport.connections()
    }

    /// Uses a stored account.
    pub async fn load_account(&self, stored: StoredAccount) -> Result<Session, AcmeError> {
        let account = Account::builder_with_http(Box::new(self.transport.clone()))
            .from_credentials(stored.credentials)
            .await
            .map_err(|e| AcmeError::from_lib("loading the stored account", e))?;
        Ok(Session {
            account,
            transport: self.transport.clone(),
        })
    }

    /// Registers a new account ([RFC 8555 §7.3]) and returns it with what to store.
    ///
    /// [RFC 8555 §7.3]: https://www.rfc-editor.org/rfc/rfc8555#section-7.3
    pub async fn create_account(
        &self,
        contact: &[String],
        agree_to_terms: bool,
    ) -> Result<(Session, StoredAccount), AcmeError> {
        let contact_refs: Vec<&str> = contact.iter().map(String::as_str).collect();
        let (account, credentials) = Account::builder_with_http(Box::new(self.transport.clone()))
            .create(
                &NewAccount {
                    contact: &contact_refs,
                    terms_of_service_agreed: agree_to_terms,
                    only_return_existing: false,
                },
                self.directory_url.clone(),
                None,
            )
            .await
            .map_err(|e| AcmeError::from_lib("registering an account", e))?;
        let stored = StoredAccount {
            url: account.id().to_owned(),
            directory: self.directory_url.clone(),
            contact: contact.to_vec(),
            created: crate::time::now_rfc3339(),
            credentials,
        };
        Ok((
            Session {
                account,
                transport: self.transport.clone(),
            },
            stored,
        ))
    }
}

/// An account in use.
pub struct Session {
    account: Account,
    transport: Transport,
}

impl Session {
    /// The account URL.
    pub fn account_url(&self) -> &str {
        self.account.id()
    }

    /// The account key's JWK thumbprint ([RFC 7638]), used in key authorizations.
    ///
    /// [RFC 7638]: https://www.rfc-editor.org/rfc/rfc7638
    pub fn thumbprint(&self) -> &str {
        self.account.key_thumbprint()
    }

    /// Creates an order for `names` ([RFC 8555 §7.4]).
    ///
    /// [RFC 8555 §7.4]: https://www.rfc-editor.org/rfc/rfc8555#section-7.4
    pub async fn new_order(&self, names: &[DomainName]) -> Result<PendingOrder, AcmeError> {
        let identifiers: Vec<Identifier> = names
            .iter()
            .map(|n| Identifier::Dns(n.as_str().to_owned()))
            .collect();
        let order = self
            .account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| AcmeError::from_lib("creating the order", e))?;
        tracing::info!(url = order.url(), "order created");
        Ok(PendingOrder {
            order,
            transport: self.transport.clone(),
        })
    }
}

/// An authorization as the rest of the program sees it ([RFC 8555 §7.1.4]).
///
/// [RFC 8555 §7.1.4]: https://www.rfc-editor.org/rfc/rfc8555#section-7.1.4
#[derive(Debug, Clone)]
pub struct Authz {
    /// Its URL.
    pub url: String,
    /// The validated name (a wildcard's base).
    pub identifier: String,
    /// Whether it is for a wildcard.
    pub wildcard: bool,
    /// Already valid (reused from an earlier order): nothing to do.
    pub valid: bool,
    /// Offered challenges we know, with their tokens.
    pub challenges: Vec<(ChallengeType, String)>,
}

/// How waiting for an order ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderOutcome {
    /// Every authorization is valid: ready to finalize.
    Ready,
    /// The order became invalid, with the order's problem if it had one.
    Invalid(Option<Problem>),
}

/// An order being worked on.
pub struct PendingOrder {
    order: Order,
    transport: Transport,
}

impl PendingOrder {
    /// The order URL.
    pub fn url(&self) -> &str {
        self.order.url()
    }

    /// Fetches every authorization of the order.
    pub async fn authorizations(&mut self) -> Result<Vec<Authz>, AcmeError> {
        let mut out = Vec::new();
        let mut authzs = self.order.authorizations();
        while let Some(handle) = authzs.next().await {
            let handle = handle.map_err(|e| AcmeError::from_lib("fetching an authorization", e))?;
            let Identifier::Dns(name) = &handle.identifier().identifier else {
                return Err(AcmeError::Transport {
                    context: "fetching an authorization".into(),
                    detail: "the CA returned a non-DNS identifier".into(),
                });
            };
            out.push(Authz {
                url: handle.url().to_owned(),
                identifier: name.clone(),
                wildcard: handle.wildcard,
                valid: handle.status == AuthorizationStatus::Valid,
                challenges: handle
                    .challenges
                    .iter()
                    .filter_map(|c| Some((from_lib_type(&c.r#type)?, c.token.clone())))
                    .collect(),
            });
        }
        Ok(out)
    }

    /// Tells the CA the challenge of `kind` in authorization `authz_url` is ready
    /// ([RFC 8555 §7.5.1]).
    ///
    /// [RFC 8555 §7.5.1]: https://www.rfc-editor.org/rfc/rfc8555#section-7.5.1
    pub async fn answer(&mut self, authz_url: &str, kind: ChallengeType) -> Result<(), AcmeError> {
        let context = || format!("answering the {kind} challenge of {authz_url}");
        let mut authzs = self.order.authorizations();
        while let Some(handle) = authzs.next().await {
            let mut handle = handle.map_err(|e| AcmeError::from_lib(context(), e))?;
            if handle.url() != authz_url {
                continue;
            }
            let Some(mut challenge) = handle.challenge(to_lib_type(kind)) else {
                break;
            };
            return challenge
                .set_ready()
                .await
                .map_err(|e| AcmeError::from_lib(context(), e));
        }
        Err(AcmeError::Transport {
            context: context(),
            detail: "the order no longer has this challenge".into(),
        })
    }

    /// Polls the order until it is ready or invalid, politely: backing off and
    /// honouring `Retry-After`.
    pub async fn wait_validated(&mut self) -> Result<OrderOutcome, AcmeError> {
        let context = "waiting for the CA to validate";
        let mut poll = Poll::new(&self.transport);
        loop {
            poll.wait(context).await?;
            let state = self
                .order
                .refresh()
                .await
                .map_err(|e| AcmeError::from_lib(context, e))?;
            match state.status {
                OrderStatus::Ready | OrderStatus::Processing | OrderStatus::Valid => {
                    return Ok(OrderOutcome::Ready);
                }
                OrderStatus::Invalid => {
                    return Ok(OrderOutcome::Invalid(
                        state.error.as_ref().map(convert_problem),
                    ));
                }
                OrderStatus::Pending => {}
            }
        }
    }

    /// After an invalid order: the problem of each failed challenge, by
    /// authorization URL.
    pub async fn challenge_problems(&mut self) -> Result<Vec<(String, Problem)>, AcmeError> {
        let mut out = Vec::new();
        let mut authzs = self.order.authorizations();
        while let Some(handle) = authzs.next().await {
            let mut handle =
                handle.map_err(|e| AcmeError::from_lib("reading an authorization", e))?;
            let url = handle.url().to_owned();
            let state = handle
                .refresh()
                .await
                .map_err(|e| AcmeError::from_lib("reading an authorization", e))?;
            let problem = state
                .challenges
                .iter()
                .find_map(|c| c.error.as_ref())
                .map(convert_problem);
            match (state.status, problem) {
                (_, Some(problem)) => out.push((url, problem)),
                (AuthorizationStatus::Invalid, None) => out.push((
                    url,
                    Problem {
                        kind: None,
                        detail: Some("the CA marked the authorization invalid".into()),
                        ..Problem::default()
                    },
                )),
                _ => {}
            }
        }
        Ok(out)
    }

    /// Sends the CSR ([RFC 8555 §7.4]), waits for issuance and downloads the chain
    /// (PEM, leaf first).
    ///
    /// [RFC 8555 §7.4]: https://www.rfc-editor.org/rfc/rfc8555#section-7.4
    pub async fn finalize(&mut self, csr_der: &[u8]) -> Result<String, AcmeError> {
        self.order
            .finalize_csr(csr_der)
            .await
            .map_err(|e| AcmeError::from_lib("finalizing the order", e))?;
        let context = "waiting for the certificate";
        let mut poll = Poll::new(&self.transport);
        loop {
            let state = self.order.state();
            match state.status {
                OrderStatus::Valid => break,
                OrderStatus::Invalid => {
                    let problem = state
                        .error
                        .as_ref()
                        .map(convert_problem)
                        .unwrap_or(Problem {
                            detail: Some("the order became invalid during finalization".into()),
                            ..Problem::default()
                        });
                    return Err(AcmeError::Problem {
                        context: context.into(),
                        problem,
                    });
                }
                _ => {}
            }
            poll.wait(context).await?;
            self.order
                .refresh()
                .await
                .map_err(|e| AcmeError::from_lib(context, e))?;
        }
        self.order
            .certificate()
            .await
            .map_err(|e| AcmeError::from_lib("downloading the certificate", e))?
            .ok_or_else(|| AcmeError::Transport {
                context: "downloading the certificate".into(),
                detail: "the CA returned no certificate".into(),
            })
    }
}

/// Backoff between polls: doubling from [`FIRST_POLL`] to [`MAX_POLL`], or the
/// CA's `Retry-After`, within [`POLL_LIMIT`] overall.
struct Poll<'a> {
    transport: &'a Transport,
    next: Duration,
    deadline: Instant,
}

impl<'a> Poll<'a> {
    fn new(transport: &'a Transport) -> Self {
        Self {
            transport,
            next: FIRST_POLL,
            deadline: Instant::now() + POLL_LIMIT,
        }
    }

    async fn wait(&mut self, context: &str) -> Result<(), AcmeError> {
        let wait = match self.transport.retry_after() {
            Some(asked) if asked > self.next => asked,
            _ => self.next,
        };
        if Instant::now() + wait > self.deadline {
            return Err(AcmeError::Timeout {
                context: context.into(),
                limit: POLL_LIMIT,
            });
        }
        sleep(wait).await;
        self.next = (self.next * 2).min(MAX_POLL);
        Ok(())
    }
}

fn to_lib_type(kind: ChallengeType) -> AcmeChallengeType {
    match kind {
        ChallengeType::Dns01 => AcmeChallengeType::Dns01,
        ChallengeType::Http01 => AcmeChallengeType::Http01,
        ChallengeType::TlsAlpn01 => AcmeChallengeType::TlsAlpn01,
    }
}

fn from_lib_type(kind: &AcmeChallengeType) -> Option<ChallengeType> {
    match kind {
        AcmeChallengeType::Dns01 => Some(ChallengeType::Dns01),
        AcmeChallengeType::Http01 => Some(ChallengeType::Http01),
        AcmeChallengeType::TlsAlpn01 => Some(ChallengeType::TlsAlpn01),
        _ => None,
    }
}

fn convert_problem(p: &instant_acme::Problem) -> Problem {
    Problem {
        kind: p.r#type.clone(),
        detail: p.detail.clone(),
        status: p.status,
        subproblems: p
            .subproblems
            .iter()
            .map(|s| Subproblem {
                kind: s.r#type.clone(),
                detail: s.detail.clone(),
                identifier: s.identifier.as_ref().and_then(|id| match id {
                    Identifier::Dns(value) => Some(ProblemIdentifier {
                        kind: "dns".into(),
                        value: value.clone(),
                    }),
                    Identifier::Ip(addr) => Some(ProblemIdentifier {
                        kind: "ip".into(),
                        value: addr.to_string(),
                    }),
                    _ => None,
                }),
            })
            .collect(),
    }
}
