//! The command line: clap's raw arguments, turned once into validated requests.
//! Nothing past this module sees a clap type.

mod issue;
mod lifecycle;
mod options;
mod order;
mod renew;

use std::ffi::OsString;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};

use crate::error::Error;
use crate::protocol::SchemaDocument;
use crate::store::Store;

/// acme-bridge: get certificates from any ACME CA and hand each challenge to your
/// automation.
#[derive(Debug, Parser)]
#[command(name = "acme-bridge", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,

    /// Where accounts, certificates and settings live [default: /etc/acme-bridge
    /// for root, else $XDG_CONFIG_HOME/acme-bridge]
    #[arg(
        long,
        global = true,
        env = "ACME_BRIDGE_CONFIG_DIR",
        value_name = "DIR"
    )]
    config_dir: Option<PathBuf>,

    /// More log output on stderr (-v debug, -vv trace). ACME_BRIDGE_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Get a certificate: create the order, hand out the challenges, store the result.
    Issue(Box<issue::IssueArgs>),
    /// Renew every stored certificate that is due, unattended, the way it was issued.
    Renew(renew::RenewArgs),
    /// Every stored certificate, its expiry and renewal state, as JSON (offline).
    List,
    /// What `renew` would do and why, as JSON, without contacting the CA (unless --ari).
    Plan(lifecycle::PlanArgs),
    /// A two-step run: `order begin` prints the challenge data and exits; `order
    /// finish NAME` completes it later.
    Order(order::OrderArgs),
    /// Revoke a stored certificate at its CA.
    Revoke(lifecycle::RevokeArgs),
    /// Show or change the ACME account of a CA.
    Account(lifecycle::AccountArgs),
    /// Print a JSON Schema (draft 2020-12): the protocol, or a lifecycle document.
    Schema {
        /// Which: `output`/`input` (the protocol's two directions), `list`, `plan`, `order`.
        #[arg(value_enum, default_value_t = SchemaArg::Output)]
        document: SchemaArg,
    },
    /// Print a shell completion script.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff).
    Man,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SchemaArg {
    /// Messages on stdout.
    Output,
    /// Replies on stdin.
    Input,
    /// The `list` document.
    List,
    /// The `plan` document.
    Plan,
    /// The `order begin` document.
    Order,
}

/// Runs the program with these arguments and returns its exit code.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    init_logging(cli.verbose, cli.quiet);
    match cli.command {
        Command::Schema { document } => print(
            &match document {
                SchemaArg::Output => SchemaDocument::Output,
                SchemaArg::Input => SchemaDocument::Input,
                SchemaArg::List => SchemaDocument::List,
                SchemaArg::Plan => SchemaDocument::Plan,
                SchemaArg::Order => SchemaDocument::Order,
            }
            .render(),
        ),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "acme-bridge", &mut out);
            print(&String::from_utf8_lossy(&out))
        }
        Command::Renew(args) => renew::run(args, config_dir(cli.config_dir)),
        Command::List => lifecycle::list(config_dir(cli.config_dir)),
        Command::Plan(args) => lifecycle::plan(args, config_dir(cli.config_dir)),
        Command::Order(args) => order::run(args, config_dir(cli.config_dir)),
        Command::Revoke(args) => lifecycle::revoke(args, config_dir(cli.config_dir)),
        Command::Account(args) => lifecycle::account(args, config_dir(cli.config_dir)),
        Command::Man => {
            let mut out = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut out) {
                Ok(()) => print(&String::from_utf8_lossy(&out)),
                Err(e) => fail(&Error::Internal(e.to_string())),
            }
        }
        Command::Issue(args) => {
            issue::run(*args, cli.config_dir.unwrap_or_else(Store::default_root))
        }
    }
}

fn config_dir(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(Store::default_root)
}

/// Runs a future on a single-threaded runtime; does not wait for a blocked stdin
/// read at the end.
pub(crate) fn block_on(future: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&Error::Internal(format!("cannot start the runtime: {e}"))),
    };
    let code = runtime.block_on(future);
    runtime.shutdown_background();
    code
}

/// Prints an error before any protocol started, and returns its exit code.
pub(crate) fn fail(err: &Error) -> ExitCode {
    tracing::error!("{err}");
    err.exit_code()
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
pub(crate) fn print(text: &str) -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => fail(&Error::Internal(format!("cannot write to stdout: {e}"))),
    }
}

/// Logs go to stderr only; stdout belongs to the protocol.
fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn,acme_bridge=info",
        (false, 1) => "warn,acme_bridge=debug",
        (false, _) => "debug,acme_bridge=trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ACME_BRIDGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }
}
