//! What is stored, and what `renew` would do with it: the `list` and `plan`
//! documents. Offline, except for `plan --ari`, which asks each CA for its
//! suggested renewal windows.

use std::collections::BTreeMap;
use std::time::Duration;

use time::OffsetDateTime;

use crate::acme::{Acme, StoredAccount};
use crate::certificate::CertInfo;
use crate::error::Error;
use crate::issue::CertSettings;
use crate::policy::{self, Decision, Facts};
use crate::report::{
    AriWindow, CertificateEntry, CertificateList, FORMAT, Plan, PlanEntry, RenewalVerdict,
    Unreadable,
};
use crate::store::{CertName, Lineage, Store, StoreError};

/// A stored certificate with its facts and settings.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Where it lives.
    pub lineage: Lineage,
    /// What the live certificate says.
    pub info: CertInfo,
    /// How it was issued (absent for files another tool put there).
    pub settings: Option<CertSettings>,
}

impl Stored {
    /// The live certificate's DER.
    pub fn der(&self) -> Result<Vec<u8>, Error> {
        let pem = read(&self.lineage.cert)?;
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).map_err(|e| {
            Error::Internal(format!("{} is not PEM: {e}", self.lineage.cert.display()))
        })?;
        Ok(block.contents)
    }

    /// The renewal verdict at `now`, with the CA's window when known.
    pub fn decide(
        &self,
        now: OffsetDateTime,
        renew_before: Option<Duration>,
        ari: Option<(OffsetDateTime, OffsetDateTime)>,
        force: bool,
    ) -> Decision {
        let facts = Facts {
            not_before: self.info.not_before,
            not_after: self.info.not_after,
            ari_window: ari,
            revoked: self.settings.as_ref().is_some_and(|s| s.revoked.is_some()),
            renew_before,
        };
        policy::decide(&facts, now, force)
    }
}

fn read(path: &std::path::Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| {
        Error::Store(StoreError::Io {
            op: "read",
            path: path.to_owned(),
            source,
        })
    })
}

/// Loads one certificate, or `None` when it was never issued.
pub fn load(store: &Store, name: &CertName) -> Result<Option<Stored>, Error> {
    let Some(lineage) = store.current(name)? else {
        return Ok(None);
    };
    let info = CertInfo::from_pem(&read(&lineage.cert)?)
        .map_err(|e| Error::Internal(format!("{}: {e}", lineage.cert.display())))?;
    let settings = store.load_settings::<CertSettings>(name)?;
    Ok(Some(Stored {
        lineage,
        info,
        settings,
    }))
}

/// Loads the named certificates, or all of them when `names` is empty. A name that
/// was never issued is an error; one whose files cannot be read is reported on its
/// own, beside the others.
pub fn load_many(
    store: &Store,
    names: &[CertName],
) -> Result<(Vec<Stored>, Vec<Unreadable>), Error> {
    let names = if names.is_empty() {
        store.names()?
    } else {
        names.to_vec()
    };
    let (mut stored, mut unreadable) = (Vec::new(), Vec::new());
    for name in &names {
        match load(store, name) {
            Ok(Some(s)) => stored.push(s),
            Ok(None) => {
                return Err(Error::Config(format!(
                    "no certificate named {name} in {}",
                    store.root().display()
                )));
            }
            Err(e) => {
                tracing::warn!("{name}: {e}");
                unreadable.push(Unreadable {
                    name: name.to_string(),
                    error: e.to_string(),
                });
            }
        }
    }
    Ok((stored, unreadable))
}

/// Whole days left, rounded down: a certificate that expired an hour ago has -1.
fn days_left(info: &CertInfo, now: OffsetDateTime) -> i64 {
    (info.not_after - now).whole_seconds().div_euclid(86_400)
}

fn verdict(decision: &Decision) -> RenewalVerdict {
    RenewalVerdict {
        should_renew: decision.should_renew,
        reason: decision.reason,
        reason_text: decision.reason.describe().to_owned(),
        due_at: crate::time::rfc3339(decision.due_at),
    }
}

/// `acme-bridge list`.
pub fn list(store: &Store, now: OffsetDateTime) -> Result<CertificateList, Error> {
    let (stored, unreadable) = load_many(store, &[])?;
    let certificates = stored
        .into_iter()
        .map(|s| {
            let decision = s.decide(now, None, None, false);
            let path = |p: &std::path::Path| p.display().to_string();
            CertificateEntry {
                name: s.lineage.name.to_string(),
                domains: s.info.dns_names.clone(),
                version: s.lineage.version,
                serial: s.info.serial.clone(),
                not_before: crate::time::rfc3339(s.info.not_before),
                not_after: crate::time::rfc3339(s.info.not_after),
                days_left: days_left(&s.info, now),
                cert_path: path(&s.lineage.cert),
                chain_path: path(&s.lineage.chain),
                fullchain_path: path(&s.lineage.fullchain),
                key_path: path(&s.lineage.privkey),
                server: s.settings.as_ref().map(|c| c.server.clone()),
                challenge_type: s.settings.as_ref().map(|c| c.challenge_type),
                mode: s.settings.as_ref().map(|c| c.mode.clone()),
                revoked: s.settings.as_ref().and_then(|c| c.revoked.clone()),
                renewal: verdict(&decision),
            }
        })
        .collect();
    Ok(CertificateList {
        format: FORMAT,
        config_dir: store.root().display().to_string(),
        certificates,
        unreadable,
    })
}

/// `acme-bridge plan`: offline, or with the CA's ARI windows when `ari` is set.
pub async fn plan(
    store: &Store,
    names: &[CertName],
    renew_before: Option<Duration>,
    ari: bool,
    now: OffsetDateTime,
) -> Result<Plan, Error> {
    let (stored, unreadable) = load_many(store, names)?;
    let windows = if ari {
        ari_windows(store, &stored).await
    } else {
        BTreeMap::new()
    };
    let certificates = stored
        .iter()
        .map(|s| {
            let name = s.lineage.name.to_string();
            let (window, ari_error) = match windows.get(&name) {
                Some(Ok(w)) => (Some(w.clone()), None),
                Some(Err(e)) => (None, Some(e.clone())),
                None => (None, None),
            };
            let decision = s.decide(
                now,
                renew_before,
                window.as_ref().map(|w| (w.start, w.end)),
                false,
            );
            PlanEntry {
                name,
                domains: s.info.dns_names.clone(),
                not_after: crate::time::rfc3339(s.info.not_after),
                days_left: days_left(&s.info, now),
                revoked: s.settings.as_ref().is_some_and(|c| c.revoked.is_some()),
                verdict: verdict(&decision),
                ari_window: window.map(|w| AriWindow {
                    start: crate::time::rfc3339(w.start),
                    end: crate::time::rfc3339(w.end),
                    explanation_url: w.explanation_url,
                }),
                ari_error,
            }
        })
        .collect();
    Ok(Plan {
        format: FORMAT,
        ari,
        certificates,
        unreadable,
    })
}

/// Asks each certificate's CA for its renewal window. A CA without ARI, or a
/// failure, is recorded per certificate, never fatal.
pub async fn ari_windows(
    store: &Store,
    stored: &[Stored],
) -> BTreeMap<String, Result<crate::acme::RenewalWindow, String>> {
    let mut out = BTreeMap::new();
    for s in stored {
        let name = s.lineage.name.to_string();
        let result = ari_window(store, s).await;
        if let Err(e) = &result {
            tracing::warn!("{name}: no renewal information from the CA: {e}");
        }
        out.insert(name, result);
    }
    out
}

/// The CA's renewal window for one stored certificate.
pub async fn ari_window(
    store: &Store,
    stored: &Stored,
) -> Result<crate::acme::RenewalWindow, String> {
    let settings = stored
        .settings
        .as_ref()
        .ok_or("no renewal settings are stored for it")?;
    let acme = Acme::connect(&settings.server, settings.ca_bundle.as_deref())
        .await
        .map_err(|e| e.to_string())?;
    if !acme.offers_renewal_info() {
        return Err("the CA does not offer renewal information (ARI)".into());
    }
    let account = store
        .load_account::<StoredAccount>(&settings.server)
        .map_err(|e| e.to_string())?
        .ok_or("no account is stored for its CA")?;
    let session = acme
        .load_account(account.credentials)
        .await
        .map_err(|e| e.to_string())?;
    let der = stored.der().map_err(|e| e.to_string())?;
    session
        .renewal_window(&der)
        .await
        .map_err(|e| e.to_string())
}
