//! `list`, `plan`, `revoke` and `account`: the lifecycle commands that need no
//! solver. Each prints one JSON document on stdout.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use super::{block_on, fail, print};
use crate::acme::{Acme, AcmeError, RevocationReason, StoredAccount};
use crate::error::Error;
use crate::inventory;
use crate::issue::CertSettings;
use crate::report::Revocation;
use crate::store::{CertName, Store};

/// `acme-bridge plan`.
#[derive(Debug, Args)]
pub(super) struct PlanArgs {
    /// Certificates to plan for [default: all]
    names: Vec<String>,
    /// Ask each CA for its suggested renewal window (ARI); otherwise offline.
    #[arg(long)]
    ari: bool,
    /// Renew when less than this is left, instead of a third of the lifetime.
    #[arg(long, value_name = "DURATION")]
    renew_before: Option<humantime::Duration>,
}

/// `acme-bridge revoke`.
#[derive(Debug, Args)]
pub(super) struct RevokeArgs {
    /// The certificate's name.
    name: String,
    /// Why (RFC 5280 reason).
    #[arg(long, value_enum)]
    reason: Option<ReasonArg>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ReasonArg {
    #[value(name = "unspecified")]
    Unspecified,
    #[value(name = "keyCompromise")]
    KeyCompromise,
    #[value(name = "affiliationChanged")]
    AffiliationChanged,
    #[value(name = "superseded")]
    Superseded,
    #[value(name = "cessationOfOperation")]
    CessationOfOperation,
}

/// `acme-bridge account …`.
#[derive(Debug, Args)]
pub(super) struct AccountArgs {
    #[command(subcommand)]
    action: AccountAction,
    /// ACME directory URL, or `letsencrypt` / `letsencrypt-staging`.
    #[arg(
        long,
        global = true,
        env = "ACME_BRIDGE_SERVER",
        default_value = "letsencrypt",
        value_name = "URL"
    )]
    server: String,
    /// PEM file of extra roots to trust for the CA's HTTPS endpoint.
    #[arg(long, global = true, value_name = "FILE")]
    ca_bundle: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum AccountAction {
    /// Print the stored account (offline).
    Show,
    /// Replace the account's contact addresses.
    Update {
        /// New contact address; repeat for several, none to remove all.
        #[arg(long, value_name = "ADDRESS")]
        email: Vec<String>,
    },
    /// Roll the account over to a fresh key.
    Rollover,
    /// Deactivate the account at the CA, for good.
    Deactivate,
}

/// Turns `letsencrypt`, `letsencrypt-staging` or an https URL into a directory URL.
pub(super) fn server_url(server: &str) -> Result<String, Error> {
    match server {
        "letsencrypt" => Ok(crate::acme::LETSENCRYPT.to_owned()),
        "letsencrypt-staging" => Ok(crate::acme::LETSENCRYPT_STAGING.to_owned()),
        url if url.starts_with("https://") => Ok(url.to_owned()),
        other => Err(Error::Config(format!(
            "--server {other:?} is not an https:// URL (ACME requires HTTPS), nor letsencrypt or letsencrypt-staging"
        ))),
    }
}

/// Refuses contact addresses that cannot be one (`--email`).
pub(super) fn check_emails(emails: &[String]) -> Result<(), Error> {
    match emails
        .iter()
        .find(|e| !e.contains('@') || e.contains(char::is_whitespace) || e.contains(','))
    {
        Some(bad) => Err(Error::Config(format!("--email {bad:?} is not an address"))),
        None => Ok(()),
    }
}

fn names(raw: &[String]) -> Result<Vec<CertName>, Error> {
    raw.iter()
        .map(|n| CertName::new(n).map_err(Error::from))
        .collect()
}

fn json<T: Serialize>(value: &T) -> ExitCode {
    match serde_json::to_string_pretty(value) {
        Ok(text) => print(&format!("{text}\n")),
        Err(e) => fail(&Error::Internal(e.to_string())),
    }
}

fn now() -> time::OffsetDateTime {
    time::OffsetDateTime::now_utc()
}

/// `acme-bridge list`.
pub(super) fn list(store_root: PathBuf) -> ExitCode {
    match Store::open(store_root)
        .map_err(Error::from)
        .and_then(|store| inventory::list(&store, now()))
    {
        Ok(doc) => json(&doc),
        Err(e) => fail(&e),
    }
}

/// `acme-bridge plan`.
pub(super) fn plan(args: PlanArgs, store_root: PathBuf) -> ExitCode {
    block_on(async move {
        let result = async {
            let store = Store::open(store_root)?;
            let names = names(&args.names)?;
            let before = args.renew_before.map(Duration::from);
            inventory::plan(&store, &names, before, args.ari, now()).await
        }
        .await;
        match result {
            Ok(doc) => json(&doc),
            Err(e) => fail(&e),
        }
    })
}

/// RFC 8555's problem type for a request the account may not make.
const UNAUTHORIZED: &str = "urn:ietf:params:acme:error:unauthorized";

/// `acme-bridge revoke`.
pub(super) fn revoke(args: RevokeArgs, store_root: PathBuf) -> ExitCode {
    let reason = args.reason.map(|r| match r {
        ReasonArg::Unspecified => RevocationReason::Unspecified,
        ReasonArg::KeyCompromise => RevocationReason::KeyCompromise,
        ReasonArg::AffiliationChanged => RevocationReason::AffiliationChanged,
        ReasonArg::Superseded => RevocationReason::Superseded,
        ReasonArg::CessationOfOperation => RevocationReason::CessationOfOperation,
    });
    block_on(async move {
        let result = async {
            let store = Store::open(store_root)?;
            let name = CertName::new(&args.name)?;
            let lock = store.lock(&name)?;
            let stored = inventory::load(&store, &name)?
                .ok_or_else(|| Error::Config(format!("no certificate named {name}")))?;
            let mut settings: CertSettings = stored.settings.clone().ok_or_else(|| {
                Error::Config(format!(
                    "no settings are stored for {name}; cannot tell its CA"
                ))
            })?;
            let acme = Acme::connect(&settings.server, settings.ca_bundle.as_deref()).await?;
            let der = stored.der()?;
            let signed_by_account = match store.load_account::<StoredAccount>(&settings.server)? {
                Some(account) => {
                    let session = acme.load_account(account.credentials).await?;
                    match session.revoke(&der, reason).await {
                        Ok(()) => true,
                        // Deactivated, or not the account that ordered it.
                        Err(AcmeError::Problem { problem, .. })
                            if problem.kind.as_deref() == Some(UNAUTHORIZED) =>
                        {
                            tracing::warn!(
                                "the stored account may not revoke it ({problem}); signing with the certificate's own key"
                            );
                            false
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                None => {
                    tracing::info!(
                        "no account is stored for {}; signing with the certificate's own key",
                        settings.server
                    );
                    false
                }
            };
            if !signed_by_account {
                let key = std::fs::read_to_string(&stored.lineage.privkey).map_err(|source| {
                    crate::store::StoreError::Io {
                        op: "read",
                        path: stored.lineage.privkey.clone(),
                        source,
                    }
                })?;
                acme.revoke_with_certificate_key(&der, &key, reason).await?;
            }
            let revocation = Revocation {
                at: crate::time::now_rfc3339(),
                reason: reason.and_then(|r| {
                    RevocationReason::ALL
                        .iter()
                        .find(|(_, v)| *v == r)
                        .map(|(k, _)| (*k).to_owned())
                }),
            };
            settings.revoked = Some(revocation.clone());
            store.save_settings(&lock, &settings)?;
            tracing::info!("certificate {name} (serial {}) revoked", stored.info.serial);
            Ok::<_, Error>(serde_json::json!({
                "format": 1,
                "name": name.as_str(),
                "serial": stored.info.serial,
                "revoked": revocation,
            }))
        }
        .await;
        match result {
            Ok(doc) => json(&doc),
            Err(e) => fail(&e),
        }
    })
}

/// The account document `account` subcommands print.
#[derive(Serialize)]
struct AccountDoc<'a> {
    format: u32,
    url: &'a str,
    directory: &'a str,
    contact: &'a [String],
    created: &'a str,
    status: &'a str,
    path: String,
}

/// `acme-bridge account …`.
pub(super) fn account(args: AccountArgs, store_root: PathBuf) -> ExitCode {
    block_on(async move {
        let result = account_action(args, store_root).await;
        match result {
            Ok(code) => code,
            Err(e) => fail(&e),
        }
    })
}

async fn account_action(args: AccountArgs, store_root: PathBuf) -> Result<ExitCode, Error> {
    let server = server_url(&args.server)?;
    let store = Store::open(store_root)?;
    let StoredAccount {
        url,
        directory,
        contact,
        created,
        credentials,
    } = store
        .load_account::<StoredAccount>(&server)?
        .ok_or_else(|| Error::Config(format!("no account is stored for {server}")))?;
    let path = store.account_dir(&server).join("account.json");
    let doc = |contact: &[String], status: &str, path: &std::path::Path| {
        let text = serde_json::to_string_pretty(&AccountDoc {
            format: 1,
            url: &url,
            directory: &directory,
            contact,
            created: &created,
            status,
            path: path.display().to_string(),
        })
        .unwrap_or_default();
        print(&format!("{text}\n"))
    };
    if matches!(args.action, AccountAction::Show) {
        return Ok(doc(&contact, "stored", &path));
    }
    let acme = Acme::connect(&server, args.ca_bundle.as_deref()).await?;
    let save = |contact: Vec<String>, credentials| {
        store.save_account(
            &server,
            &StoredAccount {
                url: url.clone(),
                directory: directory.clone(),
                contact,
                created: created.clone(),
                credentials,
            },
        )
    };
    match args.action {
        AccountAction::Show => unreachable!("handled offline above"),
        AccountAction::Update { email } => {
            check_emails(&email)?;
            let contact: Vec<String> = email.iter().map(|e| format!("mailto:{e}")).collect();
            // instant-acme takes the credentials; the key itself does not change, so
            // the stored one is written back with the new contacts.
            let session = acme.load_account(credentials).await?;
            session.update_contacts(&contact).await?;
            let unchanged = store
                .load_account::<StoredAccount>(&server)?
                .ok_or_else(|| Error::Internal("the stored account vanished".into()))?;
            save(contact.clone(), unchanged.credentials)?;
            tracing::info!("contacts updated");
            Ok(doc(&contact, "valid", &path))
        }
        AccountAction::Rollover => {
            let mut session = acme.load_account(credentials).await?;
            save(contact.clone(), session.rollover().await?)?;
            tracing::info!("account key rolled over");
            Ok(doc(&contact, "valid", &path))
        }
        AccountAction::Deactivate => {
            acme.load_account(credentials).await?.deactivate().await?;
            // Keep the key for the record, out of the way of the next registration.
            let kept = path.with_file_name(format!(
                "account.deactivated-{}.json",
                now().unix_timestamp()
            ));
            std::fs::rename(&path, &kept).map_err(|source| {
                Error::Store(crate::store::StoreError::Io {
                    op: "rename",
                    path: path.clone(),
                    source,
                })
            })?;
            tracing::info!("account deactivated; its key is kept in {}", kept.display());
            Ok(doc(&contact, "deactivated", &kept))
        }
    }
}
