//! The flags of `--mode handler` and `--deploy-hook`, validated into
//! [`HookStyle`] and [`Hook`]s.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::error::Error;
use crate::runner::Hook;
use crate::solver::handler::HookStyle;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum HookStyleArg {
    /// dehydrated hook scripts: `HOOK deploy_challenge DOMAIN TOKEN_FILENAME TOKEN_VALUE`, …
    Dehydrated,
    /// certbot manual hooks: --auth-hook / --cleanup-hook with `CERTBOT_*` variables.
    Certbot,
    /// certbot-external-auth handlers: `HANDLER perform` with every field in the environment.
    ExternalAuth,
}

#[derive(Debug, Args)]
pub(super) struct HookArgs {
    /// With --mode handler: the hook program (dehydrated or external-auth style), run
    /// directly — never through a shell.
    #[arg(long, value_name = "PATH")]
    handler: Option<PathBuf>,

    /// With --mode handler: the convention the hooks speak [default: dehydrated]
    #[arg(long, value_enum, value_name = "STYLE")]
    hook_style: Option<HookStyleArg>,

    /// dehydrated's HOOK_CHAIN=yes: one deploy_challenge / clean_challenge call with
    /// every challenge's arguments.
    #[arg(long)]
    hook_chain: bool,

    /// With --hook-style certbot: deploys one challenge (CERTBOT_DOMAIN,
    /// CERTBOT_VALIDATION, … in its environment).
    #[arg(long, value_name = "PATH")]
    auth_hook: Option<PathBuf>,

    /// With --hook-style certbot: removes one challenge (also gets
    /// CERTBOT_AUTH_OUTPUT, the auth hook's stdout, at most 64 KiB).
    #[arg(long, value_name = "PATH")]
    cleanup_hook: Option<PathBuf>,

    /// Any mode: run once the certificate is stored, with RENEWED_LINEAGE (the live
    /// directory) and RENEWED_DOMAINS (space separated).
    #[arg(long, value_name = "PATH")]
    deploy_hook: Option<PathBuf>,

    /// How long one hook call may take; then it is killed with its process group and
    /// the run fails.
    #[arg(long, default_value = "5m", value_name = "DURATION")]
    hook_timeout: humantime::Duration,
}

impl HookArgs {
    /// `--hook-timeout`, checked.
    pub(super) fn timeout(&self) -> Result<std::time::Duration, Error> {
        let timeout = self.hook_timeout.into();
        if timeout == std::time::Duration::ZERO {
            return Err(Error::Config(
                "--hook-timeout must be longer than 0s".into(),
            ));
        }
        Ok(timeout)
    }

    fn hook(&self, flag: &str, path: &PathBuf) -> Result<Hook, Error> {
        Hook::new(path, self.timeout()?).map_err(|e| Error::Config(format!("{flag}: {e}")))
    }

    /// `--deploy-hook`, checked.
    pub(super) fn deploy_hook(&self) -> Result<Option<Hook>, Error> {
        self.deploy_hook
            .as_ref()
            .map(|path| self.hook("--deploy-hook", path))
            .transpose()
    }

    /// The handler's style and programs, checked; `None` outside `--mode handler`,
    /// where the handler flags are refused.
    pub(super) fn style(&self, handler_mode: bool) -> Result<Option<HookStyle>, Error> {
        if !handler_mode {
            let given = [
                ("--handler", self.handler.is_some()),
                ("--hook-style", self.hook_style.is_some()),
                ("--hook-chain", self.hook_chain),
                ("--auth-hook", self.auth_hook.is_some()),
                ("--cleanup-hook", self.cleanup_hook.is_some()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, given)| *given) {
                return Err(Error::Config(format!("{flag} needs --mode handler")));
            }
            return Ok(None);
        }
        let style = self.hook_style.unwrap_or(HookStyleArg::Dehydrated);
        let name = match style {
            HookStyleArg::Dehydrated => "dehydrated",
            HookStyleArg::Certbot => "certbot",
            HookStyleArg::ExternalAuth => "external-auth",
        };
        if self.hook_chain && style != HookStyleArg::Dehydrated {
            return Err(Error::Config(format!(
                "--hook-chain is dehydrated's HOOK_CHAIN; it does not apply to --hook-style {name}"
            )));
        }
        if style == HookStyleArg::Certbot {
            if self.handler.is_some() {
                return Err(Error::Config(
                    "--hook-style certbot takes --auth-hook PATH and --cleanup-hook PATH, not --handler".into(),
                ));
            }
            let Some(auth) = &self.auth_hook else {
                return Err(Error::Config(
                    "--hook-style certbot needs --auth-hook PATH (and usually --cleanup-hook PATH)"
                        .into(),
                ));
            };
            return Ok(Some(HookStyle::Certbot {
                auth: self.hook("--auth-hook", auth)?,
                cleanup: self
                    .cleanup_hook
                    .as_ref()
                    .map(|path| self.hook("--cleanup-hook", path))
                    .transpose()?,
            }));
        }
        if self.auth_hook.is_some() || self.cleanup_hook.is_some() {
            return Err(Error::Config(format!(
                "--auth-hook and --cleanup-hook are certbot's hooks; use them with --hook-style certbot (the {name} style takes --handler PATH)"
            )));
        }
        let Some(handler) = &self.handler else {
            return Err(Error::Config(format!(
                "--mode handler with --hook-style {name} needs --handler PATH"
            )));
        };
        let handler = self.hook("--handler", handler)?;
        Ok(Some(match style {
            HookStyleArg::ExternalAuth => HookStyle::ExternalAuth { handler },
            _ => HookStyle::Dehydrated {
                hook: handler,
                chain: self.hook_chain,
            },
        }))
    }
}
