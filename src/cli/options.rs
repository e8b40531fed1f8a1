//! Lifecycle options of `issue` (and the commands that issue): profile, chain,
//! key reuse, External Account Binding, DNS propagation check.

use std::path::PathBuf;

use base64::Engine;
use base64::prelude::BASE64_URL_SAFE_NO_PAD;
use clap::Args;

use crate::acme::ExternalAccountBinding;
use crate::dns_check::DnsCheck;
use crate::error::Error;
use crate::issue::IssueOptions;

/// The environment variable that may hold the EAB HMAC key (base64url).
pub(crate) const EAB_HMAC_ENV: &str = "ACME_BRIDGE_EAB_HMAC_KEY";

#[derive(Debug, Args)]
pub(super) struct OptionArgs {
    /// Ask the CA for this certificate profile (see the CA's `meta.profiles`).
    #[arg(long, value_name = "NAME")]
    profile: Option<String>,

    /// Prefer the CA's alternate chain whose topmost certificate is issued by a CA
    /// with this common name; the default chain when none matches.
    #[arg(long, value_name = "ISSUER CN")]
    preferred_chain: Option<String>,

    /// Keep the certificate's private key across renewals (default: a new key).
    #[arg(long)]
    reuse_key: bool,

    /// External Account Binding key id for a new account (the CA gives it to you).
    #[arg(long, value_name = "KID")]
    eab_kid: Option<String>,

    /// File holding the EAB HMAC key (base64url). Or set ACME_BRIDGE_EAB_HMAC_KEY.
    /// Never on the command line.
    #[arg(long, value_name = "FILE")]
    eab_hmac_file: Option<PathBuf>,

    /// Check dns-01 records are visible before the CA is asked: `none`,
    /// `authoritative`, `servers=IP[:PORT],…` or `wait=DURATION`.
    #[arg(long, value_name = "CHECK", default_value = "none")]
    dns_check: String,

    /// How long the DNS check may take.
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    dns_check_timeout: humantime::Duration,
}

impl OptionArgs {
    /// Validates the options; reads the EAB key from its file or the environment.
    pub(super) fn into_options(self) -> Result<IssueOptions, Error> {
        let dns_check: DnsCheck = self
            .dns_check
            .parse()
            .map_err(|e| Error::Config(format!("--dns-check: {e}")))?;
        let eab = match self.eab_kid {
            None => {
                if self.eab_hmac_file.is_some() {
                    return Err(Error::Config("--eab-hmac-file needs --eab-kid".into()));
                }
                None
            }
            Some(kid) => {
                let encoded = match &self.eab_hmac_file {
                    Some(path) => std::fs::read_to_string(path).map_err(|e| {
                        Error::Config(format!(
                            "cannot read --eab-hmac-file {}: {e}",
                            path.display()
                        ))
                    })?,
                    None => std::env::var(EAB_HMAC_ENV).map_err(|_| {
                        Error::Config(format!(
                            "--eab-kid needs the HMAC key in --eab-hmac-file FILE or {EAB_HMAC_ENV}"
                        ))
                    })?,
                };
                let hmac_key = BASE64_URL_SAFE_NO_PAD
                    .decode(encoded.trim().trim_end_matches('='))
                    .map_err(|_| Error::Config("the EAB HMAC key is not base64url".into()))?;
                Some(ExternalAccountBinding { kid, hmac_key })
            }
        };
        Ok(IssueOptions {
            profile: self.profile,
            preferred_chain: self.preferred_chain,
            reuse_key: self.reuse_key,
            eab,
            dns_check: Some(dns_check),
            dns_check_timeout: self.dns_check_timeout.into(),
            ..IssueOptions::default()
        })
    }
}
