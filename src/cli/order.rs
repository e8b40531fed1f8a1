//! `acme-bridge order begin|finish`: the two-step run for playbooks.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::issue::IssueArgs;
use super::{block_on, fail, print};
use crate::error::Error;
use crate::protocol::CertificateMessage;
use crate::store::{CertName, Store};

/// `acme-bridge order …`.
#[derive(Debug, Args)]
pub(super) struct OrderArgs {
    #[command(subcommand)]
    action: OrderAction,
}

#[derive(Debug, Subcommand)]
enum OrderAction {
    /// Create the order (or return the still-pending one) and print its challenge
    /// data as JSON; answer nothing. Takes the options of `issue`; `--mode` and
    /// its hooks are not used.
    Begin(Box<IssueArgs>),
    /// Answer the challenges of the pending order, finalize, store, and print the
    /// certificate as JSON.
    Finish {
        /// The certificate's name (as printed by `order begin`).
        name: String,
    },
}

/// Runs `acme-bridge order …`.
pub(super) fn run(args: OrderArgs, store_root: PathBuf) -> ExitCode {
    match args.action {
        OrderAction::Begin(issue) => {
            let request = match issue.into_request() {
                Ok(r) => r,
                Err(e) => return fail(&e),
            };
            block_on(async move {
                let result = async {
                    let store = Store::open(store_root)?;
                    crate::issue::begin(&request, &store).await
                }
                .await;
                match result.and_then(|doc| {
                    serde_json::to_string_pretty(&doc).map_err(|e| Error::Internal(e.to_string()))
                }) {
                    Ok(text) => print(&format!("{text}\n")),
                    Err(e) => fail(&e),
                }
            })
        }
        OrderAction::Finish { name } => block_on(async move {
            let result = async {
                let name = CertName::new(&name)?;
                let store = Store::open(store_root)?;
                crate::issue::finish(&name, &store).await
            }
            .await;
            match result.and_then(|issued| {
                serde_json::to_string_pretty(&CertificateMessage::from(&issued))
                    .map_err(|e| Error::Internal(e.to_string()))
            }) {
                Ok(text) => print(&format!("{text}\n")),
                Err(e) => fail(&e),
            }
        }),
    }
}
