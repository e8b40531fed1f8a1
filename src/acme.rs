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
    ExternalAccountKey, Identifier, NewAccount, NewOrder, Order, OrderStatus,
};
use serde::{Deserialize, Serialize};
use tokio::time::{Instant, sleep};

pub use self::http::{Transport, TransportError};

mod jws;
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
    /// The CA's TLS certificate is not trusted (a wrong or missing `--ca-bundle`?).
    #[error("{context}: the CA's TLS certificate is not trusted ({detail}); is --ca-bundle right?")]
    Untrusted {
        /// What we asked for.
        context: String,
        /// rustls's verdict.
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
    /// The CA is rate-limiting this account or these names.
    #[error("{context}: rate limited by the CA: {problem}{}", .retry_at.as_ref().map(|t| format!(" — it asks to retry after {t}")).unwrap_or_default())]
    RateLimited {
        /// What we asked for.
        context: String,
        /// The CA's answer.
        problem: Problem,
        /// When the CA said to try again (RFC 3339), from `Retry-After`.
        retry_at: Option<Box<str>>,
    },
    /// The trust roots could not be set up.
    #[error(transparent)]
    Setup(#[from] TransportError),
}

impl AcmeError {
    /// The CA's problem document, when there is one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Problem { problem, .. } | Self::RateLimited { problem, .. } => Some(problem),
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
                let mut source = std::error::Error::source(&other);
                while let Some(cause) = source {
                    if let Some(tls) = cause.downcast_ref::<rustls::Error>()
                        && matches!(tls, rustls::Error::InvalidCertificate(_))
                    {
                        return Self::Untrusted {
                            context,
                            detail: tls.to_string(),
                        };
                    }
                    source = cause.source();
                }
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
#[serde(rename_all = "camelCase")]
struct DirectoryDoc {
    #[serde(default)]
    meta: DirectoryMeta,
    renewal_info: Option<String>,
    revoke_cert: Option<String>,
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
    renewal_info: bool,
    revoke_cert: Option<String>,
}

impl Acme {
    /// Reads the server's directory, trusting the system roots plus `ca_bundle`.
    pub async fn connect(directory_url: &str, ca_bundle: Option<&Path>) -> Result<Self, AcmeError> {
        let transport = Transport::new(directory_url, ca_bundle)?;
        let context = format!("reading the directory {directory_url}");
        let body = retry(&transport, &context, async || transport.directory().await).await?;
        let doc: DirectoryDoc =
            serde_json::from_slice(&body).map_err(|e| AcmeError::Transport {
                context: format!("reading the directory {directory_url}"),
                detail: format!("not an ACME directory: {e}"),
            })?;
        Ok(Self {
            transport,
            directory_url: directory_url.to_owned(),
            meta: doc.meta,
            renewal_info: doc.renewal_info.is_some(),
            revoke_cert: doc.revoke_cert,
        })
    }

    /// Revokes a certificate (DER) with a request signed by its own private key
    /// (PEM) rather than an account ([RFC 8555 §7.6]): works when the account that
    /// ordered it is gone, deactivated or another one.
    ///
    /// [RFC 8555 §7.6]: https://www.rfc-editor.org/rfc/rfc8555#section-7.6
    pub async fn revoke_with_certificate_key(
        &self,
        cert_der: &[u8],
        key_pem: &str,
        reason: Option<RevocationReason>,
    ) -> Result<(), AcmeError> {
        use base64::Engine;
        let url = self.revoke_cert.as_deref().ok_or(AcmeError::Transport {
            context: "revoking the certificate".into(),
            detail: "the CA's directory has no revokeCert URL".into(),
        })?;
        let signer = jws::Signer::certificate_key(key_pem)?;
        let mut payload = serde_json::json!({
            "certificate": base64::prelude::BASE64_URL_SAFE_NO_PAD.encode(cert_der),
        });
        if let Some(reason) = reason {
            payload["reason"] = serde_json::json!(reason.code());
        }
        let context = "revoking the certificate with its own key";
        jws::post(&self.transport, &signer, url, Some(&payload), context)
            .await
            .map(drop)
    }

    /// The directory's `meta` object.
    pub fn meta(&self) -> &DirectoryMeta {
        &self.meta
    }

    /// Whether the CA offers ACME Renewal Information ([RFC 9773]).
    ///
    /// [RFC 9773]: https://www.rfc-editor.org/rfc/rfc9773
    pub fn offers_renewal_info(&self) -> bool {
        self.renewal_info
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
    pub async fn load_account(
        &self,
        credentials: AccountCredentials,
    ) -> Result<Session, AcmeError> {
        let key_pkcs8 = credentials.private_key().secret_pkcs8_der().to_vec();
        let account = Account::builder_with_http(Box::new(self.transport.clone()))
            .from_credentials(credentials)
            .await
            .map_err(|e| AcmeError::from_lib("loading the stored account", e))?;
        Ok(Session {
            account,
            transport: self.transport.clone(),
            key_pkcs8,
        })
    }

    /// Registers a new account ([RFC 8555 §7.3]) and returns it with what to store.
    /// `eab` binds it to an account the CA already knows ([RFC 8555 §7.3.4]).
    ///
    /// [RFC 8555 §7.3]: https://www.rfc-editor.org/rfc/rfc8555#section-7.3
    /// [RFC 8555 §7.3.4]: https://www.rfc-editor.org/rfc/rfc8555#section-7.3.4
    pub async fn create_account(
        &self,
        contact: &[String],
        agree_to_terms: bool,
        eab: Option<&ExternalAccountBinding>,
    ) -> Result<(Session, StoredAccount), AcmeError> {
        let contact_refs: Vec<&str> = contact.iter().map(String::as_str).collect();
        let new_account = NewAccount {
            contact: &contact_refs,
            terms_of_service_agreed: agree_to_terms,
            only_return_existing: false,
        };
        let (account, credentials) = retry(&self.transport, "registering an account", async || {
            let key = eab.map(|b| ExternalAccountKey::new(b.kid.clone(), &b.hmac_key));
            Account::builder_with_http(Box::new(self.transport.clone()))
                .create(&new_account, self.directory_url.clone(), key.as_ref())
                .await
        })
        .await?;
        let key_pkcs8 = credentials.private_key().secret_pkcs8_der().to_vec();
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
                key_pkcs8,
            },
            stored,
        ))
    }
}

/// External Account Binding: the key id and HMAC key the CA gave out of band.
/// The key never appears in `Debug` output or logs.
#[derive(Clone)]
pub struct ExternalAccountBinding {
    /// The key identifier.
    pub kid: String,
    /// The HMAC key, decoded from base64url.
    pub hmac_key: Vec<u8>,
}

impl std::fmt::Debug for ExternalAccountBinding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExternalAccountBinding")
            .field("kid", &self.kid)
            .field("hmac_key", &"<redacted>")
            .finish()
    }
}

/// What to ask for in a new order beyond the names.
#[derive(Debug, Clone, Default)]
pub struct OrderOptions {
    /// A certificate profile the CA offers (`meta.profiles`).
    pub profile: Option<String>,
    /// The certificate this order replaces (ARI, [RFC 9773 §5]), as DER.
    ///
    /// [RFC 9773 §5]: https://www.rfc-editor.org/rfc/rfc9773#section-5
    pub replaces: Option<Vec<u8>>,
}

/// The CA's suggested renewal window for a certificate ([RFC 9773 §4.2]).
///
/// [RFC 9773 §4.2]: https://www.rfc-editor.org/rfc/rfc9773#section-4.2
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RenewalWindow {
    /// Renew no earlier than this.
    pub start: time::OffsetDateTime,
    /// Renew before this.
    pub end: time::OffsetDateTime,
    /// A page explaining the window, when the CA gives one.
    pub explanation_url: Option<String>,
    /// When to ask again.
    pub retry_after: Duration,
}

/// Why a certificate is revoked ([RFC 5280 §5.3.1]).
///
/// [RFC 5280 §5.3.1]: https://www.rfc-editor.org/rfc/rfc5280#section-5.3.1
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RevocationReason {
    /// No reason given.
    Unspecified,
    /// The private key was compromised.
    KeyCompromise,
    /// The subscriber's relationship with the names changed.
    AffiliationChanged,
    /// A new certificate replaces it.
    Superseded,
    /// It is no longer needed.
    CessationOfOperation,
}

impl RevocationReason {
    /// Every reason, by its name on the command line.
    pub const ALL: [(&'static str, RevocationReason); 5] = [
        ("unspecified", Self::Unspecified),
        ("keyCompromise", Self::KeyCompromise),
        ("affiliationChanged", Self::AffiliationChanged),
        ("superseded", Self::Superseded),
        ("cessationOfOperation", Self::CessationOfOperation),
    ];

    /// The RFC 5280 CRLReason code.
    fn code(self) -> u8 {
        match self {
            Self::Unspecified => 0,
            Self::KeyCompromise => 1,
            Self::AffiliationChanged => 3,
            Self::Superseded => 4,
            Self::CessationOfOperation => 5,
        }
    }

    fn to_lib(self) -> instant_acme::RevocationReason {
        match self {
            Self::Unspecified => instant_acme::RevocationReason::Unspecified,
            Self::KeyCompromise => instant_acme::RevocationReason::KeyCompromise,
            Self::AffiliationChanged => instant_acme::RevocationReason::AffiliationChanged,
            Self::Superseded => instant_acme::RevocationReason::Superseded,
            Self::CessationOfOperation => instant_acme::RevocationReason::CessationOfOperation,
        }
    }
}

/// An account in use.
pub struct Session {
    account: Account,
    transport: Transport,
    /// The account key (PKCS#8), for the one request instant-acme cannot sign:
    /// downloading an alternate chain.
    key_pkcs8: Vec<u8>,
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
    pub async fn new_order(
        &self,
        names: &[DomainName],
        options: &OrderOptions,
    ) -> Result<PendingOrder, AcmeError> {
        let identifiers: Vec<Identifier> = names
            .iter()
            .map(|n| Identifier::Dns(n.as_str().to_owned()))
            .collect();
        let replaces = match &options.replaces {
            Some(der) => Some(certificate_id(der)?),
            None => None,
        };
        let created = self
            .place_order(&identifiers, options, replaces.as_ref())
            .await;
        let order = match created {
            // instant-acme insists that the CA echo `replaces`; a CA that ignores the
            // field (RFC 9773 makes echoing optional in practice) still gave us an order,
            // but we cannot hold it: ask again without `replaces`.
            Err(AcmeError::Transport { detail, .. })
                if replaces.is_some() && detail.contains(REPLACES_MISMATCH) =>
            {
                tracing::warn!("the CA ignored `replaces`; ordering without it");
                self.place_order(&identifiers, options, None).await?
            }
            // The old certificate was replaced already (a renewal the CA completed but
            // we could not store, say): RFC 9773 §5 — order again without `replaces`
            // rather than never renewing.
            Err(AcmeError::Problem { problem, .. })
                if replaces.is_some() && problem.kind.as_deref() == Some(ALREADY_REPLACED) =>
            {
                tracing::warn!(
                    "the CA says the certificate was already replaced ({problem}); ordering without `replaces`"
                );
                self.place_order(&identifiers, options, None).await?
            }
            other => other?,
        };
        tracing::info!(url = order.url(), "order created");
        Ok(PendingOrder {
            order,
            transport: self.transport.clone(),
            kid: self.account.id().to_owned(),
            key_pkcs8: self.key_pkcs8.clone(),
        })
    }

    /// One `newOrder`, with the profile asked for and `replaces` when given.
    async fn place_order(
        &self,
        identifiers: &[Identifier],
        options: &OrderOptions,
        replaces: Option<&instant_acme::CertificateIdentifier<'static>>,
    ) -> Result<instant_acme::Order, AcmeError> {
        let mut new_order = NewOrder::new(identifiers);
        if let Some(profile) = &options.profile {
            new_order = new_order.profile(profile);
        }
        if let Some(id) = replaces {
            new_order = new_order.replaces(id.clone());
        }
        retry(&self.transport, "creating the order", async || {
            self.account.new_order(&new_order).await
        })
        .await
    }

    /// Picks up an existing order by its URL (the second step of a two-step run).
    pub async fn resume_order(&self, url: &str) -> Result<PendingOrder, AcmeError> {
        let order = retry(&self.transport, "reading the order", async || {
            self.account.order(url.to_owned()).await
        })
        .await?;
        Ok(PendingOrder {
            order,
            transport: self.transport.clone(),
            kid: self.account.id().to_owned(),
            key_pkcs8: self.key_pkcs8.clone(),
        })
    }

    /// The CA's suggested renewal window for a certificate (DER), via ARI.
    pub async fn renewal_window(&self, cert_der: &[u8]) -> Result<RenewalWindow, AcmeError> {
        let id = certificate_id(cert_der)?;
        let (info, retry_after) = retry(
            &self.transport,
            "asking for renewal information",
            async || self.account.renewal_info(&id).await,
        )
        .await?;
        Ok(RenewalWindow {
            start: info.suggested_window.start,
            end: info.suggested_window.end,
            explanation_url: info.explanation_url,
            retry_after,
        })
    }

    /// Revokes a certificate (DER) issued to this account ([RFC 8555 §7.6]).
    ///
    /// [RFC 8555 §7.6]: https://www.rfc-editor.org/rfc/rfc8555#section-7.6
    pub async fn revoke(
        &self,
        cert_der: &[u8],
        reason: Option<RevocationReason>,
    ) -> Result<(), AcmeError> {
        let certificate = rustls_pki_types::CertificateDer::from(cert_der.to_vec());
        retry(&self.transport, "revoking the certificate", async || {
            self.account
                .revoke(&instant_acme::RevocationRequest {
                    certificate: &certificate,
                    reason: reason.map(RevocationReason::to_lib),
                })
                .await
        })
        .await
    }

    /// Replaces the account's contact addresses ([RFC 8555 §7.3.2]).
    ///
    /// [RFC 8555 §7.3.2]: https://www.rfc-editor.org/rfc/rfc8555#section-7.3.2
    pub async fn update_contacts(&self, contact: &[String]) -> Result<(), AcmeError> {
        let refs: Vec<&str> = contact.iter().map(String::as_str).collect();
        retry(
            &self.transport,
            "updating the account's contacts",
            async || self.account.update_contacts(&refs).await,
        )
        .await
    }

    /// Rolls the account over to a fresh key ([RFC 8555 §7.3.5]) and returns the
    /// credentials to store in place of the old ones.
    ///
    /// [RFC 8555 §7.3.5]: https://www.rfc-editor.org/rfc/rfc8555#section-7.3.5
    pub async fn rollover(&mut self) -> Result<AccountCredentials, AcmeError> {
        let credentials = retry(
            &self.transport,
            "rolling the account key over",
            async || self.account.update_key().await,
        )
        .await?;
        self.key_pkcs8 = credentials.private_key().secret_pkcs8_der().to_vec();
        Ok(credentials)
    }

    /// Deactivates the account for good ([RFC 8555 §7.3.6]).
    ///
    /// [RFC 8555 §7.3.6]: https://www.rfc-editor.org/rfc/rfc8555#section-7.3.6
    pub async fn deactivate(self) -> Result<(), AcmeError> {
        let transport = self.transport.clone();
        let account = self.account;
        retry(&transport, "deactivating the account", async || {
            account.clone().deactivate().await
        })
        .await
    }
}

/// How instant-acme reports an order whose `replaces` differs from the one sent.
const REPLACES_MISMATCH: &str = "replaces field mismatch";

/// RFC 9773's problem type for a `replaces` naming a certificate that was replaced.
const ALREADY_REPLACED: &str = "urn:ietf:params:acme:error:alreadyReplaced";

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
    kid: String,
    key_pkcs8: Vec<u8>,
}

impl PendingOrder {
    /// The order URL.
    pub fn url(&self) -> &str {
        self.order.url()
    }

    /// The order's last known status, as RFC 8555 names it.
    pub fn status(&mut self) -> &'static str {
        match self.order.state().status {
            OrderStatus::Pending => "pending",
            OrderStatus::Ready => "ready",
            OrderStatus::Processing => "processing",
            OrderStatus::Valid => "valid",
            OrderStatus::Invalid => "invalid",
        }
    }

    /// Fetches every authorization of the order.
    pub async fn authorizations(&mut self) -> Result<Vec<Authz>, AcmeError> {
        retry(&self.transport, "fetching the authorizations", async || {
            let mut out = Vec::new();
            let mut authzs = self.order.authorizations();
            while let Some(handle) = authzs.next().await {
                let handle = handle?;
                let Identifier::Dns(name) = &handle.identifier().identifier else {
                    return Err(instant_acme::Error::Str(
                        "the CA returned a non-DNS identifier",
                    ));
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
        })
        .await
    }

    /// Tells the CA the challenge of `kind` in authorization `authz_url` is ready
    /// ([RFC 8555 §7.5.1]).
    ///
    /// [RFC 8555 §7.5.1]: https://www.rfc-editor.org/rfc/rfc8555#section-7.5.1
    pub async fn answer(&mut self, authz_url: &str, kind: ChallengeType) -> Result<(), AcmeError> {
        let context = format!("answering the {kind} challenge of {authz_url}");
        retry(&self.transport, &context, async || {
            let mut authzs = self.order.authorizations();
            while let Some(handle) = authzs.next().await {
                let mut handle = handle?;
                if handle.url() != authz_url {
                    continue;
                }
                let Some(mut challenge) = handle.challenge(to_lib_type(kind)) else {
                    break;
                };
                return challenge.set_ready().await;
            }
            Err(instant_acme::Error::Str(
                "the order no longer has this challenge",
            ))
        })
        .await
    }

    /// Polls the order until it is ready or invalid, politely: backing off and
    /// honouring `Retry-After`.
    pub async fn wait_validated(&mut self) -> Result<OrderOutcome, AcmeError> {
        let context = "waiting for the CA to validate";
        let mut poll = Poll::new(self.transport.clone());
        loop {
            poll.wait(context).await?;
            let (status, error) = retry(&self.transport, context, async || {
                let state = self.order.refresh().await?;
                Ok((state.status, state.error.as_ref().map(convert_problem)))
            })
            .await?;
            match status {
                OrderStatus::Ready | OrderStatus::Processing | OrderStatus::Valid => {
                    return Ok(OrderOutcome::Ready);
                }
                OrderStatus::Invalid => return Ok(OrderOutcome::Invalid(error)),
                OrderStatus::Pending => {}
            }
        }
    }

    /// After an invalid order: the problem of each failed challenge, by
    /// authorization URL.
    pub async fn challenge_problems(&mut self) -> Result<Vec<(String, Problem)>, AcmeError> {
        retry(&self.transport, "reading the authorizations", async || {
            let mut out = Vec::new();
            let mut authzs = self.order.authorizations();
            while let Some(handle) = authzs.next().await {
                let mut handle = handle?;
                let url = handle.url().to_owned();
                let state = handle.refresh().await?;
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
                            detail: Some("the CA marked the authorization invalid".into()),
                            ..Problem::default()
                        },
                    )),
                    _ => {}
                }
            }
            Ok(out)
        })
        .await
    }

    /// Sends the CSR ([RFC 8555 §7.4]), waits for issuance and downloads the chain
    /// (PEM, leaf first). With `preferred_chain`, the first of the CA's chains
    /// ([RFC 8555 §7.4.2]) whose topmost certificate is issued by a CA with that
    /// common name is taken instead, as certbot's `--preferred-chain` does; when none
    /// matches, the default chain is kept.
    ///
    /// [RFC 8555 §7.4.2]: https://www.rfc-editor.org/rfc/rfc8555#section-7.4.2
    ///
    /// [RFC 8555 §7.4]: https://www.rfc-editor.org/rfc/rfc8555#section-7.4
    pub async fn finalize(
        &mut self,
        csr_der: &[u8],
        preferred_chain: Option<&str>,
    ) -> Result<String, AcmeError> {
        retry_nonce_only(&self.transport, "finalizing the order", async || {
            self.order.finalize_csr(csr_der).await
        })
        .await?;
        let context = "waiting for the certificate";
        let mut poll = Poll::new(self.transport.clone());
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
            retry(&self.transport, context, async || {
                self.order.refresh().await.map(|_| ())
            })
            .await?;
        }
        let default = retry(&self.transport, "downloading the certificate", async || {
            self.order.certificate().await
        })
        .await?
        .ok_or_else(|| AcmeError::Transport {
            context: "downloading the certificate".into(),
            detail: "the CA returned no certificate".into(),
        })?;
        let Some(preferred) = preferred_chain else {
            return Ok(default);
        };
        if top_issuer_cn(&default).as_deref() == Some(preferred) {
            return Ok(default);
        }
        let alternates = self.transport.alternates();
        for url in &alternates {
            let pem = self.post_as_get(url).await?;
            let issuer = top_issuer_cn(&pem);
            tracing::debug!(url, issuer = issuer.as_deref(), "alternate chain");
            if issuer.as_deref() == Some(preferred) {
                tracing::info!("using the alternate chain issued by {preferred:?}");
                return Ok(pem);
            }
        }
        tracing::warn!(
            "no chain of the {} offered ends at an issuer named {preferred:?}; keeping the default chain",
            alternates.len() + 1
        );
        Ok(default)
    }

    /// A POST-as-GET ([RFC 8555 §6.3]) signed here: instant-acme has no call for
    /// fetching an arbitrary URL such as an alternate chain.
    ///
    /// [RFC 8555 §6.3]: https://www.rfc-editor.org/rfc/rfc8555#section-6.3
    async fn post_as_get(&self, url: &str) -> Result<String, AcmeError> {
        let signer = jws::Signer::account(&self.key_pkcs8, &self.kid)?;
        let context = format!("downloading the alternate chain {url}");
        let body = jws::post(&self.transport, &signer, url, None, &context).await?;
        String::from_utf8(body.to_vec()).map_err(|_| AcmeError::Transport {
            context,
            detail: "the chain is not UTF-8 PEM".into(),
        })
    }
}

/// How often a request the CA rejected with `badNonce` is sent again. A rejected
/// request was not processed, so repeating it is always safe ([RFC 8555 §6.5]).
///
/// [RFC 8555 §6.5]: https://www.rfc-editor.org/rfc/rfc8555#section-6.5
const BAD_NONCE_RETRIES: u32 = 10;
/// How often a request is repeated after a 5xx or 408 answer or a network failure.
const SERVER_RETRIES: u32 = 4;
/// First wait after a server error; doubled each time unless the CA names one.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// The longest `Retry-After` honoured for a retry; longer means: give up now.
const MAX_RETRY_WAIT: Duration = Duration::from_secs(60);

/// Runs one ACME operation, repeating it after `badNonce` (at once), after server
/// errors and network failures (backing off, honouring `Retry-After`). A rate limit
/// is not retried: it is reported with the time the CA names.
async fn retry<T>(
    transport: &Transport,
    context: &str,
    op: impl AsyncFnMut() -> Result<T, instant_acme::Error>,
) -> Result<T, AcmeError> {
    retry_with(transport, context, true, op).await
}

/// [`retry`], but for a request that must not be repeated after the CA may have
/// acted on it (finalize): only `badNonce` rejections are sent again.
async fn retry_nonce_only<T>(
    transport: &Transport,
    context: &str,
    op: impl AsyncFnMut() -> Result<T, instant_acme::Error>,
) -> Result<T, AcmeError> {
    retry_with(transport, context, false, op).await
}

async fn retry_with<T>(
    transport: &Transport,
    context: &str,
    repeatable: bool,
    mut op: impl AsyncFnMut() -> Result<T, instant_acme::Error>,
) -> Result<T, AcmeError> {
    let mut bad_nonces = 0;
    let mut failures = 0;
    let mut backoff = FIRST_RETRY;
    loop {
        let err = match op().await {
            Ok(value) => return Ok(value),
            Err(err) => AcmeError::from_lib(context, err),
        };
        let (kind, status) = match &err {
            AcmeError::Problem { problem, .. } => (
                problem
                    .kind
                    .as_deref()
                    .and_then(|k| k.strip_prefix("urn:ietf:params:acme:error:")),
                problem.status,
            ),
            _ => (None, None),
        };
        if kind == Some("badNonce") && bad_nonces < BAD_NONCE_RETRIES {
            bad_nonces += 1;
            tracing::debug!("{context}: the CA rejected the nonce; sending again");
            continue;
        }
        if let AcmeError::Problem { context, problem } = &err
            && (kind == Some("rateLimited") || status == Some(429))
        {
            let retry_at = transport.retry_after().map(|wait| {
                crate::time::rfc3339(
                    time::OffsetDateTime::now_utc()
                        + time::Duration::try_from(wait).unwrap_or(time::Duration::ZERO),
                )
            });
            return Err(AcmeError::RateLimited {
                context: context.clone(),
                problem: problem.clone(),
                retry_at: retry_at.map(String::into_boxed_str),
            });
        }
        let transient = match &err {
            // The CA answered, just not with the `replaces` we sent: asking again
            // gives the same answer (and another abandoned order).
            AcmeError::Transport { detail, .. } => !detail.contains(REPLACES_MISMATCH),
            AcmeError::Problem { .. } => {
                status.is_some_and(|s| s >= 500 || s == 408) || kind == Some("serverInternal")
            }
            _ => false,
        };
        if !repeatable || !transient || failures >= SERVER_RETRIES {
            return Err(err);
        }
        failures += 1;
        let wait = match transport.retry_after() {
            Some(asked) if asked > MAX_RETRY_WAIT => return Err(err),
            Some(asked) => asked.max(backoff),
            None => backoff,
        };
        tracing::warn!("{err}; trying again in {:.1}s", wait.as_secs_f32());
        sleep(wait).await;
        backoff *= 2;
    }
}

/// Backoff between polls: doubling from [`FIRST_POLL`] to [`MAX_POLL`], or the
/// CA's `Retry-After`, within [`POLL_LIMIT`] overall.
struct Poll {
    transport: Transport,
    next: Duration,
    deadline: Instant,
}

impl Poll {
    fn new(transport: Transport) -> Self {
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

/// The ARI certificate identifier ([RFC 9773 §4.1]) of a DER certificate.
///
/// [RFC 9773 §4.1]: https://www.rfc-editor.org/rfc/rfc9773#section-4.1
fn certificate_id(der: &[u8]) -> Result<instant_acme::CertificateIdentifier<'static>, AcmeError> {
    let cert = rustls_pki_types::CertificateDer::from(der);
    instant_acme::CertificateIdentifier::try_from(&cert)
        .map(instant_acme::CertificateIdentifier::into_owned)
        .map_err(|detail| AcmeError::Transport {
            context: "identifying the certificate for ARI".into(),
            detail,
        })
}

/// The common name of the issuer of the last certificate in a PEM chain: the root
/// the chain leads to.
fn top_issuer_cn(pem: &str) -> Option<String> {
    let der = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .filter_map(Result::ok)
        .last()?
        .contents;
    let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
    cert.issuer()
        .iter_common_name()
        .next()?
        .as_str()
        .ok()
        .map(str::to_owned)
}
