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
