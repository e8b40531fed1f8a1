//! The `acme-bridge` binary: the process edge only. See the library for everything else.

fn main() -> std::process::ExitCode {
    acme_bridge::cli::run(std::env::args_os())
}
