//! `acme-bridge renew`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::{block_on, fail};
use crate::error::Error;
use crate::renew::{Outcome, RenewOptions};
use crate::runner::Hook;
use crate::store::{CertName, Store};

/// `acme-bridge renew`.
#[derive(Debug, Args)]
pub(super) struct RenewArgs {
    /// Certificates to renew [default: every stored one that is due]
    names: Vec<String>,

    /// Renew even when not due.
    #[arg(long)]
    force: bool,

    /// Renew when less than this is left, instead of a third of the lifetime (a
    /// CA's ARI window still comes first).
    #[arg(long, value_name = "DURATION")]
    renew_before: Option<humantime::Duration>,

    /// How many certificates renew at once.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
    parallel: u16,

    /// Run this after each renewal instead of the deploy hook stored with the
    /// certificate (RENEWED_LINEAGE, RENEWED_DOMAINS in its environment).
    #[arg(long, value_name = "PATH")]
    deploy_hook: Option<PathBuf>,
}

/// Runs `acme-bridge renew`.
pub(super) fn run(args: RenewArgs, store_root: PathBuf) -> ExitCode {
    let options = match options(args) {
        Ok(options) => options,
        Err(e) => return fail(&e),
    };
    block_on(async move {
        let interrupt = match crate::run::Interrupt::install() {
            Ok(interrupt) => interrupt,
            Err(e) => return fail(&e),
        };
        let store = match Store::open(&store_root) {
            Ok(store) => store,
            Err(e) => return fail(&Error::from(e)),
        };
        let renewals = match crate::renew::renew(&store, &options, &interrupt).await {
            Ok(renewals) => renewals,
            Err(e) => return fail(&e),
        };
        let (mut renewed, mut kept, mut failed) = (0, 0, Vec::new());
        for r in &renewals {
            match &r.outcome {
                Outcome::Renewed { .. } => renewed += 1,
                Outcome::NotDue { .. } => kept += 1,
                Outcome::Failed { error, stored } => failed.push(format!(
                    "{}{} ({error})",
                    r.name,
                    if stored.is_some() {
                        ": renewed, then"
                    } else {
                        ""
                    }
                )),
            }
        }
        let summary = format!(
            "renew: {renewed} renewed, {kept} not due, {} failed",
            failed.len()
        );
        if failed.is_empty() {
            tracing::info!("{summary}");
        } else {
            tracing::error!("{summary}: {}", failed.join("; "));
        }
        crate::renew::exit_code(&renewals)
    })
}

fn options(args: RenewArgs) -> Result<RenewOptions, Error> {
    let names = args
        .names
        .iter()
        .map(|n| CertName::new(n).map_err(Error::from))
        .collect::<Result<_, _>>()?;
    // Checked now, so that a typo fails before any certificate is touched.
    let deploy_hook = args
        .deploy_hook
        .map(|path| {
            Hook::new(&path, Duration::from_secs(1))
                .map(|hook| hook.program().to_path_buf())
                .map_err(|e| Error::Config(format!("--deploy-hook: {e}")))
        })
        .transpose()?;
    Ok(RenewOptions {
        names,
        force: args.force,
        renew_before: args.renew_before.map(Duration::from),
        parallel: usize::from(args.parallel),
        deploy_hook,
    })
}
