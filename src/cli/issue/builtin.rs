//! The flags of the built-in solvers, `--mode standalone` and `--mode webroot`,
//! validated into ready solvers before anything reaches the CA.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::challenge::ChallengeType;
use crate::error::Error;
use crate::mode::ModeSettings;
use crate::solver::standalone::{DEFAULT_HTTP_ADDRESS, DEFAULT_TLS_ADDRESS};

#[derive(Debug, Clone, Args)]
pub(super) struct BuiltinArgs {
    /// With --mode webroot (or handler): the web server's document root; http-01
    /// files are written to DIR/.well-known/acme-challenge/ and removed afterwards.
    #[arg(long, value_name = "DIR")]
    webroot: Option<PathBuf>,

    /// With --mode standalone: where to serve http-01 [default: [::]:80]
    #[arg(long, value_name = "ADDRESS")]
    http_address: Option<SocketAddr>,

    /// With --mode standalone: where to serve tls-alpn-01 [default: [::]:443]
    #[arg(long, value_name = "ADDRESS")]
    tls_address: Option<SocketAddr>,
}

/// Which built-in mode was chosen, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BuiltinMode {
    /// `--mode standalone`.
    Standalone,
    /// `--mode webroot`.
    Webroot,
    /// Another mode; `takes_webroot` when it uses `--webroot` too (handler).
    Other {
        /// Whether that mode reads `--webroot`.
        takes_webroot: bool,
    },
}

impl BuiltinArgs {
    /// `--webroot` as an absolute path, for other modes that write token files too
    /// (handler).
    pub(super) fn webroot_absolute(&self) -> Option<PathBuf> {
        self.webroot.as_deref().map(absolute)
    }

    /// Checks the flags against the mode and challenge type; the settings of a
    /// built-in mode, `None` for the others.
    pub(super) fn mode_settings(
        &self,
        mode: BuiltinMode,
        challenge: ChallengeType,
    ) -> Result<Option<ModeSettings>, Error> {
        let address_flag = [
            ("--http-address", self.http_address.is_some()),
            ("--tls-address", self.tls_address.is_some()),
        ]
        .into_iter()
        .find_map(|(flag, given)| given.then_some(flag));
        if mode != BuiltinMode::Standalone
            && let Some(flag) = address_flag
        {
            return Err(Error::Config(format!("{flag} needs --mode standalone")));
        }
        match mode {
            BuiltinMode::Standalone => {
                if self.webroot.is_some() {
                    return Err(Error::Config(
                        "--webroot does not apply to --mode standalone, which serves the challenges itself".into(),
                    ));
                }
                if challenge == ChallengeType::Dns01 {
                    return Err(Error::Config(
                        "--mode standalone serves http-01 and tls-alpn-01, not dns-01: DNS records need your DNS provider (use --mode json, handler or manual)".into(),
                    ));
                }
                let default = |s: &str| s.parse().expect("the default address parses");
                Ok(Some(ModeSettings::Standalone {
                    http_address: self
                        .http_address
                        .unwrap_or_else(|| default(DEFAULT_HTTP_ADDRESS)),
                    tls_address: self
                        .tls_address
                        .unwrap_or_else(|| default(DEFAULT_TLS_ADDRESS)),
                }))
            }
            BuiltinMode::Webroot => {
                let Some(dir) = &self.webroot else {
                    return Err(Error::Config(
                        "--mode webroot needs --webroot DIR, the web server's document root".into(),
                    ));
                };
                if challenge != ChallengeType::Http01 {
                    return Err(Error::Config(format!(
                        "--mode webroot serves http-01 only, not {challenge} (use --challenge http-01)"
                    )));
                }
                Ok(Some(ModeSettings::Webroot {
                    webroot: absolute(dir),
                }))
            }
            BuiltinMode::Other { takes_webroot } => {
                if !takes_webroot && self.webroot.is_some() {
                    return Err(Error::Config(
                        "--webroot needs --mode webroot (or --mode handler)".into(),
                    ));
                }
                Ok(None)
            }
        }
    }
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}
