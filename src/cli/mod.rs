//! The command line: clap's raw arguments, turned once into validated requests.
//! Nothing past this module sees a clap type.

mod issue;

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
    Issue(issue::IssueArgs),
    /// Print the JSON Schema of the protocol (draft 2020-12).
    Schema {
        /// Which direction: messages acme-bridge writes, or replies it reads.
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
            }
            .render(),
        ),
        Command::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "acme-bridge", &mut out);
            print(&String::from_utf8_lossy(&out))
        }
        Command::Man => {
            let mut out = Vec::new();
            match clap_mangen::Man::new(Cli::command()).render(&mut out) {
                Ok(()) => print(&String::from_utf8_lossy(&out)),
                Err(e) => fail(&Error::Internal(e.to_string())),
            }
        }
        Command::Issue(args) => {
            issue::run(args, cli.config_dir.unwrap_or_else(Store::default_root))
        }
    }
}

/// Prints an error before any protocol started, and returns its exit code.
pub(crate) fn fail(err: &Error) -> ExitCode {
    tracing::error!("{err}");
    err.exit_code()
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn print(text: &str) -> ExitCode {
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
