//! `acme-bridge issue`: its arguments, their validation, and one run with signals
//! handled.

mod builtin;
mod handler;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, ValueEnum};

use super::{block_on, fail};
use crate::challenge::ChallengeType;
use crate::error::Error;
use crate::issue::{HookOptions, IssueRequest};
use crate::keys::KeyType;
use crate::mode::{HookSettings, JsonProtocol, ModeSettings};
use crate::names;
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
        let mode = self.mode_settings(challenge_type)?;
        let hooks = HookOptions {
            deploy_hook: self
                .hooks
                .deploy_hook()?
                .map(|hook| hook.program().to_path_buf()),
            timeout: self.hooks.timeout()?,
        };
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
            mode,
            hooks,
            options: self.options.into_options()?,
        })
    }

    /// The mode and its flags, checked against each other and the challenge type.
    fn mode_settings(&self, challenge: ChallengeType) -> Result<ModeSettings, Error> {
        let mode = self.mode;
        if self.protocol.is_some() && !matches!(mode, ModeArg::Json) {
            return Err(Error::Config(
                "--protocol applies to --mode json only".into(),
            ));
        }
        let protocol = match self.protocol {
            Some(ProtocolArg::CertbotExternalAuth) => JsonProtocol::CertbotExternalAuth,
            Some(ProtocolArg::AcmeBridge) | None => JsonProtocol::AcmeBridge,
        };
        let style = self.hooks.style(matches!(mode, ModeArg::Handler))?;
        let builtin_mode = match mode {
            ModeArg::Standalone => builtin::BuiltinMode::Standalone,
            ModeArg::Webroot => builtin::BuiltinMode::Webroot,
            _ => builtin::BuiltinMode::Other {
                takes_webroot: matches!(mode, ModeArg::Handler),
            },
        };
        if let Some(builtin) = self.builtin.mode_settings(builtin_mode, challenge)? {
            return Ok(builtin);
        }
        Ok(match (mode, style) {
            (ModeArg::Handler, Some(style)) => ModeSettings::Handler {
                hooks: HookSettings::of(&style),
                webroot: self.builtin.webroot_absolute(),
            },
            (ModeArg::Manual, _) => ModeSettings::Manual,
            _ => ModeSettings::Json { protocol },
        })
    }
}

/// Runs `acme-bridge issue`.
pub(super) fn run(args: IssueArgs, store_root: PathBuf) -> ExitCode {
    let request = match args.into_request() {
        Ok(request) => request,
        Err(e) => return fail(&e),
    };
    block_on(async move {
        let mut interrupt = match crate::run::Interrupt::install() {
            Ok(interrupt) => interrupt,
            Err(e) => return fail(&e),
        };
        let store = match Store::open(&store_root) {
            Ok(store) => store,
            Err(e) => return fail(&Error::from(e)),
        };
        // Everything the mode needs (a terminal, a document root, the hooks) is
        // checked before anything reaches the CA.
        let solver = request.mode.solver(
            crate::mode::process_stdio,
            request.hooks.timeout,
            store.root(),
            request.key_type,
        );
        let mut solver = match solver {
            Ok(solver) => solver,
            Err(e) => return fail(&e),
        };
        crate::run::run(&request, &store, &mut solver, &mut interrupt)
            .await
            .exit_code()
    })
}
