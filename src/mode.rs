//! How a certificate's challenges leave the program, as stored in
//! `renewal/NAME.json` so that `renew` presents them the same way unattended, and
//! the one place that turns those settings into a ready [`Solver`].

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufRead, AsyncWrite};

use crate::error::Error;
use crate::keys::KeyType;
use crate::runner::Hook;
use crate::solver::compat::ExternalAuthJsonSolver;
use crate::solver::handler::{HandlerConfig, HandlerSolver, HookStyle};
use crate::solver::json::JsonSolver;
use crate::solver::manual::ManualSolver;
use crate::solver::standalone::StandaloneSolver;
use crate::solver::webroot::WebrootSolver;
use crate::solver::{Deadline, Done, Issued, Readiness, RunInfo, Solver};
use crate::store::Lineage;

/// A mode with everything it needs to run again. Paths are absolute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ModeSettings {
    /// JSON lines on stdout and stdin.
    Json {
        /// Which protocol.
        protocol: JsonProtocol,
    },
    /// A person at a terminal.
    Manual,
    /// The user's hook scripts.
    Handler {
        /// The convention and its programs.
        hooks: HookSettings,
        /// A document root for http-01 token files, besides the hooks.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        webroot: Option<PathBuf>,
    },
    /// Responders in this process.
    Standalone {
        /// Where http-01 is served.
        http_address: SocketAddr,
        /// Where tls-alpn-01 is served.
        tls_address: SocketAddr,
    },
    /// Token files in a web server's document root.
    Webroot {
        /// The document root.
        webroot: PathBuf,
    },
    /// `order begin` / `order finish`: the playbook drives each step.
    TwoStep,
}

/// The protocol of JSON mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum JsonProtocol {
    /// acme-bridge's own, version 1.
    AcmeBridge,
    /// certbot-external-auth's lines.
    CertbotExternalAuth,
}

/// A handler convention and the paths of its programs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "style", rename_all = "kebab-case")]
pub enum HookSettings {
    /// A dehydrated hook script.
    Dehydrated {
        /// The script.
        hook: PathBuf,
        /// `HOOK_CHAIN=yes`.
        #[serde(default)]
        chain: bool,
    },
    /// certbot's manual hooks.
    Certbot {
        /// `--auth-hook`.
        auth: PathBuf,
        /// `--cleanup-hook`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cleanup: Option<PathBuf>,
    },
    /// A certbot-external-auth handler.
    ExternalAuth {
        /// The handler.
        handler: PathBuf,
    },
}

impl HookSettings {
    /// The settings of a checked style.
    pub fn of(style: &HookStyle) -> Self {
        let path = |hook: &Hook| hook.program().to_path_buf();
        match style {
            HookStyle::Dehydrated { hook, chain } => Self::Dehydrated {
                hook: path(hook),
                chain: *chain,
            },
            HookStyle::Certbot { auth, cleanup } => Self::Certbot {
                auth: path(auth),
                cleanup: cleanup.as_ref().map(path),
            },
            HookStyle::ExternalAuth { handler } => Self::ExternalAuth {
                handler: path(handler),
            },
        }
    }

    /// Checks the programs again (they may have moved since) and builds the style.
    pub fn style(&self, timeout: Duration) -> Result<HookStyle, Error> {
        let hook = |path: &Path| {
            Hook::new(path, timeout).map_err(|e| Error::Config(format!("stored hook: {e}")))
        };
        Ok(match self {
            Self::Dehydrated { hook: h, chain } => HookStyle::Dehydrated {
                hook: hook(h)?,
                chain: *chain,
            },
            Self::Certbot { auth, cleanup } => HookStyle::Certbot {
                auth: hook(auth)?,
                cleanup: cleanup.as_deref().map(hook).transpose()?,
            },
            Self::ExternalAuth { handler } => HookStyle::ExternalAuth {
                handler: hook(handler)?,
            },
        })
    }
}

impl ModeSettings {
    /// The mode's name, as `--mode` spells it (`list` shows it).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Json { .. } => "json",
            Self::Manual => "manual",
            Self::Handler { .. } => "handler",
            Self::Standalone { .. } => "standalone",
            Self::Webroot { .. } => "webroot",
            Self::TwoStep => "two-step",
        }
    }

    /// Builds the solver. `stdio` gives JSON mode its input and output; `hook_timeout`
    /// bounds each hook call.
    pub fn solver(
        &self,
        stdio: impl FnOnce() -> (BoxReader, BoxWriter),
        hook_timeout: Duration,
        config_dir: &Path,
        key_type: KeyType,
    ) -> Result<AnySolver, Error> {
        Ok(match self {
            Self::Json {
                protocol: JsonProtocol::AcmeBridge,
            } => {
                let (reader, writer) = stdio();
                AnySolver::Json(JsonSolver::new(reader, writer))
            }
            Self::Json {
                protocol: JsonProtocol::CertbotExternalAuth,
            } => {
                let (reader, writer) = stdio();
                AnySolver::ExternalAuthJson(ExternalAuthJsonSolver::new(reader, writer))
            }
            Self::Manual => AnySolver::Manual(ManualSolver::open()?),
            Self::Handler { hooks, webroot } => {
                AnySolver::Handler(HandlerSolver::new(HandlerConfig {
                    style: hooks.style(hook_timeout)?,
                    webroot: webroot.clone(),
                    config_dir: config_dir.to_path_buf(),
                    key_type,
                })?)
            }
            Self::Standalone {
                http_address,
                tls_address,
            } => AnySolver::Standalone(StandaloneSolver::new(*http_address, *tls_address)),
            Self::Webroot { webroot } => AnySolver::Webroot(WebrootSolver::new(webroot)?),
            Self::TwoStep => {
                return Err(Error::Config(
                    "it was issued with `order begin` / `order finish`: renew it the same way (your playbook runs `order begin` when `plan` says it is due)".into(),
                ));
            }
        })
    }
}

/// JSON mode's input.
pub type BoxReader = Pin<Box<dyn AsyncBufRead + Send>>;
/// JSON mode's output.
pub type BoxWriter = Pin<Box<dyn AsyncWrite + Send>>;

/// The process's own stdin and stdout.
pub fn process_stdio() -> (BoxReader, BoxWriter) {
    (
        Box::pin(tokio::io::BufReader::new(tokio::io::stdin())),
        Box::pin(tokio::io::stdout()),
    )
}

/// Any mode's solver.
pub enum AnySolver {
    /// acme-bridge's protocol.
    Json(JsonSolver<BoxReader, BoxWriter>),
    /// certbot-external-auth's protocol.
    ExternalAuthJson(ExternalAuthJsonSolver<BoxReader, BoxWriter>),
    /// A person.
    Manual(ManualSolver),
    /// Hook scripts.
    Handler(HandlerSolver),
    /// Built-in responders.
    Standalone(StandaloneSolver),
    /// Document-root files.
    Webroot(WebrootSolver),
}

impl AnySolver {
    /// For a certificate renewal found not due: dehydrated's and
    /// certbot-external-auth's `unchanged_cert`. Other modes have nothing to say.
    pub async fn unchanged(&mut self, run: &RunInfo, lineage: &Lineage) -> Result<(), Error> {
        match self {
            Self::Handler(handler) => handler.unchanged(run, lineage).await,
            _ => Ok(()),
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $body:expr) => {
        match $self {
            AnySolver::Json($s) => $body,
            AnySolver::ExternalAuthJson($s) => $body,
            AnySolver::Manual($s) => $body,
            AnySolver::Handler($s) => $body,
            AnySolver::Standalone($s) => $body,
            AnySolver::Webroot($s) => $body,
        }
    };
}

impl Solver for AnySolver {
    async fn start(&mut self, run: &RunInfo) -> Result<(), Error> {
        each!(self, s => s.start(run).await)
    }

    async fn present(
        &mut self,
        challenges: &[crate::challenge::Challenge],
        deadline: &Deadline,
    ) -> Result<(), Error> {
        each!(self, s => s.present(challenges, deadline).await)
    }

    async fn next_ready(&mut self, deadline: &Deadline) -> Result<Readiness, Error> {
        each!(self, s => s.next_ready(deadline).await)
    }

    async fn cleanup(&mut self, done: &[Done<'_>]) -> Result<(), Error> {
        each!(self, s => s.cleanup(done).await)
    }

    async fn finish(&mut self, result: Result<&Issued, &Error>) -> Result<(), Error> {
        each!(self, s => s.finish(result).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::issue::{CertSettings, IssueRequest};
    use crate::store::CertName;

    /// A `renewal/NAME.json` as `issue` wrote it before modes kept their options.
    fn settings(mode: &str, options: Option<serde_json::Value>) -> CertSettings {
        let mut json = serde_json::json!({
            "format": 1,
            "domains": ["a.test"],
            "server": "https://ca.test/dir",
            "ca_bundle": null,
            "challenge_type": "http-01",
            "mode": mode,
            "key_type": "ec-p256",
            "email": [],
            "timeout_seconds": 600,
            "account": "https://ca.test/acct/1",
        });
        if let Some(options) = options {
            json["mode_options"] = options;
        }
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn stored_options_come_back_as_they_were_written() {
        let mode = ModeSettings::Handler {
            hooks: HookSettings::Dehydrated {
                hook: "/etc/acme-bridge/hook.sh".into(),
                chain: true,
            },
            webroot: Some("/var/www/html".into()),
        };
        let json = serde_json::to_value(&mode).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "kind": "handler",
                "hooks": {"style": "dehydrated", "hook": "/etc/acme-bridge/hook.sh", "chain": true},
                "webroot": "/var/www/html",
            })
        );
        let name = CertName::new("a.test").unwrap();
        let request = IssueRequest::from_settings(&name, &settings("handler", Some(json))).unwrap();
        assert_eq!(request.mode, mode);
        assert_eq!(request.mode.name(), "handler");
        let stored = request.settings("https://ca.test/acct/1");
        assert_eq!(stored.mode, "handler");
        assert_eq!(stored.mode_options, Some(mode));
    }

    #[test]
    fn older_settings_renew_in_json_mode_or_say_what_is_missing() {
        let name = CertName::new("a.test").unwrap();
        let json = IssueRequest::from_settings(&name, &settings("json", None)).unwrap();
        assert_eq!(
            json.mode,
            ModeSettings::Json {
                protocol: JsonProtocol::AcmeBridge
            }
        );
        let err = IssueRequest::from_settings(&name, &settings("webroot", None)).unwrap_err();
        assert!(
            err.to_string().contains("--mode webroot") && err.to_string().contains("issue"),
            "{err}"
        );
    }

    #[test]
    fn two_step_certificates_are_not_renewed_by_renew() {
        let err = match ModeSettings::TwoStep.solver(
            process_stdio,
            Duration::from_secs(1),
            Path::new("/nonexistent"),
            KeyType::EcP256,
        ) {
            Ok(_) => panic!("a two-step certificate got a solver"),
            Err(e) => e,
        };
        assert!(err.to_string().contains("order begin"), "{err}");
        assert_eq!(err.exit_code(), std::process::ExitCode::from(2));
    }
}

#[cfg(test)]
mod readme {
    use crate::issue::{CertSettings, IssueRequest};
    use crate::store::CertName;

    /// The example `renewal/NAME.json` in the README is one `renew` can read.
    #[test]
    fn the_readme_example_of_renewal_settings_is_readable() {
        let readme = include_str!("../README.md");
        let start = readme
            .find("`renewal/NAME.json` is what `renew` reads")
            .expect("the README explains renewal/NAME.json");
        let block = &readme[start..];
        let json = block
            .split("```json\n")
            .nth(1)
            .and_then(|rest| rest.split("```").next())
            .expect("a JSON example follows");
        let settings: CertSettings = serde_json::from_str(json).expect("the example parses");
        let name = CertName::new("example.com").unwrap();
        let request = IssueRequest::from_settings(&name, &settings).expect("renew can use it");
        assert_eq!(request.mode.name(), "handler");
        assert!(request.hooks.deploy_hook.is_some());
        assert!(request.options.dns_check.is_some());
    }
}
