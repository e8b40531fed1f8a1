//! `acme-bridge issue`: its arguments, their validation, and one run with signals
//! handled.

mod builtin;
mod handler;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::fail;
use crate::challenge::ChallengeType;
use crate::error::Error;
use crate::issue::{IssueRequest, Progress};
use crate::keys::KeyType;
use crate::names;
use crate::runner::Hook;
use crate::solver::Solver;
use crate::solver::compat::ExternalAuthJsonSolver;
use crate::solver::handler::{HandlerConfig, HandlerSolver};
use crate::solver::json::JsonSolver;
use crate::solver::manual::ManualSolver;
use crate::store::{CertName, Store};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// JSON lines on stdout, replies on stdin (see `acme-bridge schema`).
    Json,
    /// Instructions for a person at a terminal (/dev/tty); waits for Enter.
    Manual,
    /// Your hook scripts: dehydrated, certbot or certbot-external-auth style (--handler).
    Handler,
    /// Serve http-01 (--http-address) or tls-alpn-01 (--tls-address) from this process.
    Standalone,
    /// Write http-01 files into a web server's document root (--webroot DIR).
    Webroot,
}

/// What JSON mode speaks on stdout and stdin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ProtocolArg {
    /// acme-bridge's protocol, version 1 (`acme-bridge schema output|input`).
    AcmeBridge,
    /// certbot-external-auth's lines: `perform_challenge`, `cleanup`, `deploy_cert`,
    /// `report`; any input line means "done" for the next challenge.
    CertbotExternalAuth,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ChallengeArg {
    #[value(name = "dns-01")]
    Dns01,
    #[value(name = "http-01")]
    Http01,
    #[value(name = "tls-alpn-01")]
    TlsAlpn01,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum KeyTypeArg {
    #[value(name = "ec-p256")]
    EcP256,
    #[value(name = "ec-p384")]
    EcP384,
    #[value(name = "rsa2048")]
    Rsa2048,
    #[value(name = "rsa3072")]
    Rsa3072,
    #[value(name = "rsa4096")]
    Rsa4096,
}

#[derive(Debug, Args)]
pub(super) struct IssueArgs {
    /// A name for the certificate; repeat or separate with commas. `*.example.com`
    /// needs dns-01. Internationalised names are converted to ASCII.
    #[arg(short = 'd', long = "domain", value_name = "NAME", required = true)]
    domains: Vec<String>,

    /// How the CA validates each name.
    #[arg(long, value_enum, default_value = "http-01")]
    challenge: ChallengeArg,

    /// How challenges reach your automation.
    #[arg(long, value_enum, default_value = "json")]
    mode: ModeArg,

    /// With `--mode json`: the protocol spoken [default: acme-bridge]
    #[arg(long, value_enum, value_name = "PROTOCOL")]
    protocol: Option<ProtocolArg>,

    /// ACME directory URL, or `letsencrypt` / `letsencrypt-staging`.
    #[arg(
        long,
        env = "ACME_BRIDGE_SERVER",
        default_value = "letsencrypt",
        value_name = "URL"
    )]
    server: String,

    /// PEM file of extra roots to trust for the CA's HTTPS endpoint, added to the
    /// system's (for a private CA or Pebble).
    #[arg(long, value_name = "FILE")]
    ca_bundle: Option<PathBuf>,

    /// Contact address for a new account; repeatable.
    #[arg(long, value_name = "ADDRESS")]
    email: Vec<String>,

    /// Agree to the CA's terms of service when an account is created.
    #[arg(long)]
    agree_tos: bool,

    /// The certificate key's algorithm.
    #[arg(long, value_enum, default_value = "ec-p256")]
    key_type: KeyTypeArg,

    /// The certificate's name under live/ [default: the first domain, a wildcard's base]
    #[arg(long, value_name = "NAME")]
    cert_name: Option<String>,

    #[command(flatten)]
    options: super::options::OptionArgs,

    /// How long to wait for replies once challenges are announced (e.g. 90s, 10m).
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    timeout: humantime::Duration,

    #[command(flatten)]
    hooks: handler::HookArgs,

    #[command(flatten)]
    builtin: builtin::BuiltinArgs,
}

impl IssueArgs {
    /// Validates everything that can be checked without the network.
    pub(super) fn into_request(self) -> Result<IssueRequest, Error> {
        let names = names::parse_all(&self.domains).map_err(|e| Error::Config(e.to_string()))?;
        let first = names
            .first()
            .ok_or_else(|| Error::Config("no domain given (-d NAME)".into()))?;
        let challenge_type = match self.challenge {
            ChallengeArg::Dns01 => ChallengeType::Dns01,
            ChallengeArg::Http01 => ChallengeType::Http01,
            ChallengeArg::TlsAlpn01 => ChallengeType::TlsAlpn01,
        };
        if challenge_type != ChallengeType::Dns01
            && let Some(wild) = names.iter().find(|n| n.is_wildcard())
        {
            return Err(Error::Config(format!(
                "{wild} is a wildcard: CAs validate wildcards only with dns-01 (use --challenge dns-01)"
            )));
        }
        let cert_name = CertName::new(self.cert_name.as_deref().unwrap_or(first.base()))?;
        let server = super::lifecycle::server_url(&self.server)?;
        if let Some(bundle) = &self.ca_bundle
            && !bundle.is_file()
        {
            return Err(Error::Config(format!(
                "--ca-bundle {} is not a readable file",
                bundle.display()
            )));
        }
        super::lifecycle::check_emails(&self.email)?;
        let key_type = match self.key_type {
            KeyTypeArg::EcP256 => KeyType::EcP256,
            KeyTypeArg::EcP384 => KeyType::EcP384,
            KeyTypeArg::Rsa2048 => KeyType::Rsa2048,
            KeyTypeArg::Rsa3072 => KeyType::Rsa3072,
            KeyTypeArg::Rsa4096 => KeyType::Rsa4096,
        };
        Ok(IssueRequest {
            server,
            ca_bundle: self.ca_bundle.map(|p| std::path::absolute(&p).unwrap_or(p)),
            names,
            cert_name,
            challenge_type,
            key_type,
            email: self.email,
            agree_tos: self.agree_tos,
            timeout: self.timeout.into(),
            options: self.options.into_options()?,
        })
    }
}

/// Runs `acme-bridge issue`.
pub(super) fn run(args: IssueArgs, store_root: PathBuf) -> ExitCode {
    let mode = args.mode;
    let protocol = match (args.protocol, mode) {
        (None, _) => ProtocolArg::AcmeBridge,
        (Some(protocol), ModeArg::Json) => protocol,
        (Some(_), _) => {
            return fail(&Error::Config(
                "--protocol applies to --mode json only".into(),
            ));
        }
    };
    let (handler_style, deploy_hook) = match (
        args.hooks.style(matches!(mode, ModeArg::Handler)),
        args.hooks.deploy_hook(),
    ) {
        (Ok(style), Ok(deploy_hook)) => (style, deploy_hook),
        (Err(e), _) | (_, Err(e)) => return fail(&e),
    };
    let builtin_args = args.builtin.clone();
    let request = match args.into_request() {
        Ok(request) => request,
        Err(e) => return fail(&e),
    };
    // Standalone and webroot: flags checked before anything reaches the CA.
    let builtin_mode = match mode {
        ModeArg::Standalone => builtin::BuiltinMode::Standalone,
        ModeArg::Webroot => builtin::BuiltinMode::Webroot,
        _ => builtin::BuiltinMode::Other {
            takes_webroot: matches!(mode, ModeArg::Handler),
        },
    };
    let builtin = match builtin_args.solver(builtin_mode, request.challenge_type) {
        Ok(solver) => solver,
        Err(e) => return fail(&e),
    };
    let target = Target {
        store_root,
        deploy_hook,
    };
    let mut handler = None;
    if let Some(style) = handler_style {
        match HandlerSolver::new(HandlerConfig {
            style,
            webroot: builtin_args.webroot().map(std::path::Path::to_path_buf),
            config_dir: target.store_root.clone(),
            key_type: request.key_type,
        }) {
            Ok(solver) => handler = Some(solver),
            Err(e) => return fail(&e),
        }
    }
    // Manual mode needs a terminal: checked before anything reaches the CA.
    let mut manual = None;
    if let ModeArg::Manual = mode {
        match ManualSolver::open() {
            Ok(solver) => manual = Some(solver),
            Err(e) => return fail(&e),
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&Error::Internal(format!("cannot start the runtime: {e}"))),
    };
    let code = runtime.block_on(async {
        match mode {
            ModeArg::Json => match protocol {
                ProtocolArg::AcmeBridge => {
                    issue_with(&request, &target, JsonSolver::stdio(), "json").await
                }
                ProtocolArg::CertbotExternalAuth => {
                    let solver = ExternalAuthJsonSolver::stdio();
                    issue_with(&request, &target, solver, "json").await
                }
            },
            ModeArg::Manual => match manual {
                Some(solver) => issue_with(&request, &target, solver, "manual").await,
                None => fail(&Error::Internal("the terminal was not opened".into())),
            },
            ModeArg::Handler => match handler {
                Some(solver) => issue_with(&request, &target, solver, "handler").await,
                None => fail(&Error::Internal("the handler was not set up".into())),
            },
            ModeArg::Standalone => match builtin {
                Some(builtin::BuiltinSolver::Standalone(solver)) => {
                    issue_with(&request, &target, solver, "standalone").await
                }
                _ => fail(&Error::Internal("standalone mode was not set up".into())),
            },
            ModeArg::Webroot => match builtin {
                Some(builtin::BuiltinSolver::Webroot(solver)) => {
                    issue_with(&request, &target, solver, "webroot").await
                }
                _ => fail(&Error::Internal("webroot mode was not set up".into())),
            },
        }
    });
    // A read of stdin may still be blocked in a worker thread: do not wait for it.
    runtime.shutdown_background();
    code
}

/// Where a run stores its certificate, and what runs once it is stored.
struct Target {
    /// The configuration directory.
    store_root: PathBuf,
    /// `--deploy-hook`, any mode.
    deploy_hook: Option<Hook>,
}

/// Runs one issuance with `solver`, handling signals, and maps the result to an
/// exit code.
async fn issue_with(
    request: &IssueRequest,
    target: &Target,
    mut solver: impl Solver,
    mode: &str,
) -> ExitCode {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => return fail(&Error::Internal(format!("cannot handle signals: {e}"))),
    };
    let run_info = request.run_info();
    let started = tokio::select! {
        started = solver.start(&run_info) => started,
        name = signals.recv() => Err(Error::Interrupted(name)),
    };
    if let Err(e) = started {
        return fail(&e);
    }
    let mut progress = Progress::default();
    let result = match Store::open(&target.store_root) {
        Err(e) => Err(Error::from(e)),
        Ok(store) => {
            tokio::select! {
                result = crate::issue::issue(request, &store, &mut solver, &mut progress, mode) => result,
                name = signals.recv() => Err(Error::Interrupted(name)),
            }
        }
    };
    // Reached on every path, including a signal that cancelled the issuing future.
    progress.cleanup_rest(&mut solver).await;
    // A failure once the certificate is stored: it stays stored, the exit is not 0.
    let mut after = None;
    if let (Ok(issued), Some(hook)) = (&result, &target.deploy_hook) {
        tokio::select! {
            deployed = crate::solver::handler::run_deploy_hook(hook, issued) => after = deployed.err(),
            name = signals.recv() => after = Some(Error::Interrupted(name)),
        }
        if let Some(e) = &after {
            tracing::error!("{e}");
        }
    }
    if let Err(e) = &result {
        tracing::error!("{e}");
    }
    if let Err(e) = solver.finish(result.as_ref()).await {
        tracing::error!("{e}");
        if result.is_ok() {
            after.get_or_insert(e);
        }
    }
    match (result, after) {
        (Err(e), _) | (Ok(_), Some(e)) => e.exit_code(),
        (Ok(_), None) => ExitCode::SUCCESS,
    }
}

/// SIGINT, SIGTERM and SIGHUP, registered before any work starts.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt())?,
            term: signal(SignalKind::terminate())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.int.recv() => "SIGINT",
            _ = self.term.recv() => "SIGTERM",
            _ = self.hup.recv() => "SIGHUP",
        }
    }
}
