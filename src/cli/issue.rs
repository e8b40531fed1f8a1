//! `acme-bridge issue`: its arguments, their validation, and one run with signals
//! handled.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::fail;
use crate::challenge::ChallengeType;
use crate::error::Error;
use crate::issue::{IssueRequest, Progress};
use crate::keys::KeyType;
use crate::names;
use crate::solver::Solver;
use crate::solver::json::JsonSolver;
use crate::store::{CertName, Store};

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// JSON lines on stdout, replies on stdin (see `acme-bridge schema`).
    Json,
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

    /// How long to wait for replies once challenges are announced (e.g. 90s, 10m).
    #[arg(long, default_value = "10m", value_name = "DURATION")]
    timeout: humantime::Duration,
}

impl IssueArgs {
    /// Validates everything that can be checked without the network.
    fn into_request(self) -> Result<IssueRequest, Error> {
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
        let server = match self.server.as_str() {
            "letsencrypt" => crate::acme::LETSENCRYPT.to_owned(),
            "letsencrypt-staging" => crate::acme::LETSENCRYPT_STAGING.to_owned(),
            url if url.starts_with("https://") => url.to_owned(),
            other => {
                return Err(Error::Config(format!(
                    "--server {other:?} is not an https:// URL (ACME requires HTTPS), nor letsencrypt or letsencrypt-staging"
                )));
            }
        };
        if let Some(bundle) = &self.ca_bundle
            && !bundle.is_file()
        {
            return Err(Error::Config(format!(
                "--ca-bundle {} is not a readable file",
                bundle.display()
            )));
        }
        for email in &self.email {
            if !email.contains('@') || email.contains(char::is_whitespace) || email.contains(',') {
                return Err(Error::Config(format!(
                    "--email {email:?} is not an address"
                )));
            }
        }
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
        })
    }
}

/// Runs `acme-bridge issue`.
pub(super) fn run(args: IssueArgs, store_root: PathBuf) -> ExitCode {
    let mode = args.mode;
    let request = match args.into_request() {
        Ok(request) => request,
        Err(e) => return fail(&e),
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&Error::Internal(format!("cannot start the runtime: {e}"))),
    };
    let code = runtime.block_on(async {
        match mode {
            ModeArg::Json => issue_with(&request, store_root, JsonSolver::stdio(), "json").await,
        }
    });
    // A read of stdin may still be blocked in a worker thread: do not wait for it.
    runtime.shutdown_background();
    code
}

/// Runs one issuance with `solver`, handling signals, and maps the result to an
/// exit code.
async fn issue_with(
    request: &IssueRequest,
    store_root: PathBuf,
    mut solver: impl Solver,
    mode: &str,
) -> ExitCode {
    let mut signals = match Signals::new() {
        Ok(s) => s,
        Err(e) => return fail(&Error::Internal(format!("cannot handle signals: {e}"))),
    };
    if let Err(e) = solver.start(&request.run_info()).await {
        return fail(&e);
    }
    let mut progress = Progress::default();
    let result = match Store::open(&store_root) {
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
    if let Err(e) = &result {
        tracing::error!("{e}");
    }
    if let Err(e) = solver.finish(result.as_ref()).await {
        tracing::error!("{e}");
    }
    match result {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => e.exit_code(),
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
